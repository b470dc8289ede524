//! BSDIFF40 patches, the format of Colin Percival's `bsdiff`/`bspatch` 4.3
//! (Debian's `bsdiff` package): a 32-byte header (`BSDIFF40`, then the
//! lengths of the bzip2-compressed control and diff streams and the new
//! file's size, each 8 bytes, sign and magnitude), the control, diff and
//! extra streams. Matching and the streams are `qbsdiff`'s; this module
//! checks the header and bounds what a patch may make a reader do.

use crate::FormatError;
use std::io::Write;

/// Length of the header.
pub const HEADER_LEN: usize = 32;

/// The header of a BSDIFF40 patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bsdiff40Header {
    /// Bytes of the compressed control stream.
    pub ctrl_len: u64,
    /// Bytes of the compressed diff stream.
    pub diff_len: u64,
    /// Size of the file the patch produces.
    pub new_size: u64,
}

fn offtin(b: &[u8]) -> Result<u64, FormatError> {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[..8]);
    let raw = u64::from_le_bytes(v);
    if raw >> 63 != 0 {
        return Err(FormatError::invalid("BSDIFF40 header", "negative length"));
    }
    Ok(raw)
}

impl Bsdiff40Header {
    /// Decodes and checks the header of `patch`: the two stream lengths
    /// must fit in the patch.
    pub fn decode(patch: &[u8]) -> Result<Self, FormatError> {
        if patch.len() < HEADER_LEN {
            return Err(FormatError::Truncated {
                what: "BSDIFF40 header",
                need: (HEADER_LEN - patch.len()) as u64,
                have: patch.len() as u64,
            });
        }
        if &patch[..8] != b"BSDIFF40" {
            return Err(FormatError::invalid(
                "BSDIFF40 header",
                "not a BSDIFF40 patch (bad magic)",
            ));
        }
        let h = Bsdiff40Header {
            ctrl_len: offtin(&patch[8..16])?,
            diff_len: offtin(&patch[16..24])?,
            new_size: offtin(&patch[24..32])?,
        };
        let body = (patch.len() - HEADER_LEN) as u64;
        if h.ctrl_len.checked_add(h.diff_len).is_none_or(|n| n > body) {
            return Err(FormatError::Truncated {
                what: "BSDIFF40 streams",
                need: (h.ctrl_len.saturating_add(h.diff_len)).saturating_sub(body),
                have: body,
            });
        }
        Ok(h)
    }
}

/// Writes the BSDIFF40 patch from `old` to `new` into `out`.
pub fn diff(old: &[u8], new: &[u8], out: impl Write) -> std::io::Result<u64> {
    qbsdiff::Bsdiff::new(old, new)
        .parallel_scheme(qbsdiff::ParallelScheme::Auto)
        .compare(out)
}

/// Passes writes through until `left` bytes, then fails: a patch cannot
/// produce more than its header announced.
struct Bounded<W> {
    inner: W,
    left: u64,
}

impl<W: Write> Write for Bounded<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() as u64 > self.left {
            return Err(std::io::Error::other(
                "the patch produces more bytes than its header announces",
            ));
        }
        let n = self.inner.write(buf)?;
        self.left -= n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Checks that `stream` is exactly one complete bzip2 stream (its CRCs
/// included), so a patch cut short or with bytes appended is refused even
/// when the bytes it would have needed happen to be there.
fn check_bzip2(stream: &[u8], what: &'static str) -> Result<(), FormatError> {
    let mut d = bzip2::bufread::BzDecoder::new(stream);
    std::io::copy(&mut d, &mut std::io::sink())
        .map_err(|e| FormatError::invalid(what, e.to_string()))?;
    let rest = d.into_inner();
    if !rest.is_empty() {
        return Err(FormatError::Trailing {
            what,
            extra: rest.len() as u64,
        });
    }
    Ok(())
}

/// Applies the BSDIFF40 `patch` to `old`, writing exactly the header's new
/// size into `out`; anything else (a damaged or incomplete stream, a read
/// outside `old`, too many or too few bytes) is an error.
pub fn apply(patch: &[u8], old: &[u8], out: impl Write) -> Result<u64, FormatError> {
    let h = Bsdiff40Header::decode(patch)?;
    let (ctrl_end, diff_end) = (
        HEADER_LEN + h.ctrl_len as usize,
        HEADER_LEN + (h.ctrl_len + h.diff_len) as usize,
    );
    check_bzip2(&patch[HEADER_LEN..ctrl_end], "BSDIFF40 control stream")?;
    check_bzip2(&patch[ctrl_end..diff_end], "BSDIFF40 diff stream")?;
    check_bzip2(&patch[diff_end..], "BSDIFF40 extra stream")?;
    let p = qbsdiff::Bspatch::new(patch)
        .map_err(|e| FormatError::invalid("BSDIFF40 patch", e.to_string()))?;
    let written = p
        .apply(
            old,
            Bounded {
                inner: out,
                left: h.new_size,
            },
        )
        .map_err(|e| FormatError::invalid("BSDIFF40 patch", e.to_string()))?;
    if written != h.new_size {
        return Err(FormatError::invalid(
            "BSDIFF40 patch",
            format!(
                "produces {written} bytes, its header announces {}",
                h.new_size
            ),
        ));
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Vec<u8>, Vec<u8>) {
        let old: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut new = old.clone();
        new[100..140].fill(9);
        new.splice(5000..5000, b"inserted bytes".iter().copied());
        (old, new)
    }

    #[test]
    fn round_trips() {
        let (old, new) = pair();
        let mut patch = Vec::new();
        diff(&old, &new, &mut patch).unwrap();
        assert_eq!(&patch[..8], b"BSDIFF40");
        let mut out = Vec::new();
        assert_eq!(apply(&patch, &old, &mut out).unwrap(), new.len() as u64);
        assert_eq!(out, new);
    }

    #[test]
    fn every_truncation_is_refused() {
        let (old, new) = pair();
        let mut patch = Vec::new();
        diff(&old, &new, &mut patch).unwrap();
        for n in 0..patch.len() {
            assert!(
                apply(&patch[..n], &old, Vec::new()).is_err(),
                "truncated to {n}"
            );
        }
    }

    #[test]
    fn a_patch_cannot_write_past_its_announced_size() {
        let (old, new) = pair();
        let mut patch = Vec::new();
        diff(&old, &new, &mut patch).unwrap();
        // Announce one byte less than the streams produce.
        let size = new.len() as u64 - 1;
        patch[24..32].copy_from_slice(&size.to_le_bytes());
        assert!(apply(&patch, &old, Vec::new()).is_err());
        // Or more.
        patch[24..32].copy_from_slice(&(size + 2).to_le_bytes());
        assert!(apply(&patch, &old, Vec::new()).is_err());
        // Negative lengths.
        patch[15] = 0x80;
        assert!(Bsdiff40Header::decode(&patch).is_err());
    }
}
