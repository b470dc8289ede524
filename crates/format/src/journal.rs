//! The resume journal: which operations of an apply are on disk for sure.
//!
//! `apply` keeps one beside its staged output and rewrites it (a new file,
//! synced, renamed over the old one) at checkpoints, after syncing the
//! staged images. After a crash or power cut, the same command reads it
//! back and skips the operations it lists. A journal is trusted only when
//! its checksum holds and it names the same package (the SHA-256 of the
//! manifest) and the same source (a fingerprint the applier computes) as
//! the run that reads it.
//!
//! Layout (little-endian): magic `RDJOURN1` · version u32 · manifest SHA-256
//! (32) · source fingerprint (32) · operation count u64 · done bitmap
//! (`ceil(count / 8)` bytes, bit `i % 8` of byte `i / 8` for operation `i`
//! in manifest order, unused high bits zero) · SHA-256 of everything before (32).

use crate::{Digest, FormatError, Reader, Writer};

/// Magic at the start of a journal.
pub const JOURNAL_MAGIC: &[u8; 8] = b"RDJOURN1";
/// The journal version this crate reads and writes.
pub const JOURNAL_VERSION: u32 = 1;

/// A decoded journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journal {
    /// SHA-256 of the manifest of the package being applied.
    pub manifest_sha256: Digest,
    /// Fingerprint of the source build being read.
    pub source_id: Digest,
    /// Operations in the package (all partitions, manifest order).
    pub ops: u64,
    /// Done bitmap, `ceil(ops / 8)` bytes.
    pub done: Vec<u8>,
}

impl Journal {
    /// A journal with no operation done.
    pub fn new(manifest_sha256: Digest, source_id: Digest, ops: u64) -> Self {
        Journal {
            manifest_sha256,
            source_id,
            ops,
            done: vec![0; ops.div_ceil(8) as usize],
        }
    }

    /// Whether operation `i` is recorded as done.
    pub fn is_done(&self, i: u64) -> bool {
        i < self.ops && self.done[(i / 8) as usize] & (1 << (i % 8)) != 0
    }

    /// Records operation `i` as done.
    pub fn set_done(&mut self, i: u64) {
        if i < self.ops {
            self.done[(i / 8) as usize] |= 1 << (i % 8);
        }
    }

    /// Operations recorded as done.
    pub fn done_count(&self) -> u64 {
        self.done.iter().map(|b| b.count_ones() as u64).sum()
    }

    /// Encodes the journal with its checksum.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(JOURNAL_MAGIC);
        w.u32_le(JOURNAL_VERSION);
        w.bytes(&self.manifest_sha256);
        w.bytes(&self.source_id);
        w.u64_le(self.ops);
        w.bytes(&self.done);
        let mut v = w.into_bytes();
        let sum = crate::sha256(&v);
        v.extend_from_slice(&sum);
        v
    }

    /// Decodes a journal for a package of `expected_ops` operations. The
    /// checksum must hold, the count must match and no bit past the last
    /// operation may be set. (Whether it belongs to this package and source
    /// is the caller's comparison.)
    pub fn decode(bytes: &[u8], expected_ops: u64) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes);
        if r.take(8, "journal magic")? != JOURNAL_MAGIC {
            return Err(FormatError::invalid("journal", "bad magic"));
        }
        let version = r.u32_le("journal version")?;
        if version != JOURNAL_VERSION {
            return Err(FormatError::invalid(
                "journal",
                format!("version {version}, this romdelta writes {JOURNAL_VERSION}"),
            ));
        }
        let manifest_sha256 = r.digest("journal manifest hash")?;
        let source_id = r.digest("journal source fingerprint")?;
        let ops = r.u64_le("journal operation count")?;
        if ops != expected_ops {
            return Err(FormatError::invalid(
                "journal",
                format!("counts {ops} operations, the package has {expected_ops}"),
            ));
        }
        let done = r.take(ops.div_ceil(8), "journal bitmap")?.to_vec();
        let body_len = r.position();
        let sum = r.digest("journal checksum")?;
        r.finish("journal")?;
        if crate::sha256(&bytes[..body_len]) != sum {
            return Err(FormatError::invalid("journal", "checksum mismatch"));
        }
        if ops % 8 != 0 && done.last().is_some_and(|b| b >> (ops % 8) != 0) {
            return Err(FormatError::invalid(
                "journal",
                "marks operations past the last",
            ));
        }
        Ok(Journal {
            manifest_sha256,
            source_id,
            ops,
            done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ops: u64) -> Journal {
        let mut j = Journal::new([1; 32], [2; 32], ops);
        for i in (0..ops).step_by(3) {
            j.set_done(i);
        }
        j
    }

    #[test]
    fn round_trips_and_counts() {
        for ops in [0, 1, 7, 8, 9, 100] {
            let j = sample(ops);
            let d = Journal::decode(&j.encode(), ops).unwrap();
            assert_eq!(d, j);
            assert_eq!(d.done_count(), ops.div_ceil(3));
            assert!(!d.is_done(ops));
        }
    }

    #[test]
    fn every_truncation_and_bit_flip_is_refused() {
        let bytes = sample(21).encode();
        for n in 0..bytes.len() {
            assert!(
                Journal::decode(&bytes[..n], 21).is_err(),
                "truncated to {n}"
            );
        }
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(Journal::decode(&b, 21).is_err(), "bit {i} flipped");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Journal::decode(&longer, 21).is_err());
        assert!(Journal::decode(&bytes, 22).is_err());
    }

    #[test]
    fn bits_past_the_last_operation_are_refused() {
        let mut j = sample(9);
        j.done[1] |= 0x80;
        assert!(Journal::decode(&j.encode(), 9).is_err());
    }
}
