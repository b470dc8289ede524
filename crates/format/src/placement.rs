//! Where one compressed stream sits in an operation's source and
//! destination bytes, and the inner patch kind: the fields the
//! SOURCE_XZ_REBUILD, SOURCE_LZ4_REBUILD and SOURCE_ZSTD_REBUILD headers
//! share, read and checked once for all, and the two halves of their
//! decoding ([`Placement::expand`], [`Placement::rebuild`]), which differ
//! only in the codec.

use crate::{FormatError, OpKind, Reader};

/// The names a codec's errors give the shared fields.
pub(crate) struct Labels {
    pub src_offset: &'static str,
    pub src_stream_len: &'static str,
    pub src_decompressed_len: &'static str,
    pub prefix_len: &'static str,
    pub decompressed_len: &'static str,
    pub stream_len: &'static str,
    pub inner: &'static str,
    pub src_stream: &'static str,
    pub stream: &'static str,
    pub source_expanded: &'static str,
    pub target_expanded: &'static str,
    /// The rebuild as a whole ("xz rebuild").
    pub rebuild: &'static str,
}

/// The shared fields, in their wire order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Offset of the source stream in the operation's source bytes.
    pub src_offset: u64,
    /// Its exact length.
    pub src_stream_len: u64,
    /// Bytes it decompresses to.
    pub src_decompressed_len: u64,
    /// Destination bytes before the new stream.
    pub prefix_len: u64,
    /// Bytes the new stream decompresses to.
    pub decompressed_len: u64,
    /// The new stream's exact length.
    pub stream_len: u64,
    /// Kind of the inner patch.
    pub inner: OpKind,
}

impl Placement {
    /// Writes the fields in their wire order.
    pub(crate) fn write(&self, w: &mut crate::Writer) {
        for v in [
            self.src_offset,
            self.src_stream_len,
            self.src_decompressed_len,
            self.prefix_len,
            self.decompressed_len,
            self.stream_len,
        ] {
            w.varint(v);
        }
        w.u8(self.inner.code());
    }

    /// Reads the fields, each decompressed length at most `max_expanded`,
    /// the inner kind one that can be an inner patch.
    pub(crate) fn read(
        r: &mut Reader<'_>,
        l: &Labels,
        max_expanded: u64,
    ) -> Result<Self, FormatError> {
        let p = Placement {
            src_offset: r.varint(l.src_offset)?,
            src_stream_len: r.varint(l.src_stream_len)?,
            src_decompressed_len: r.varint_max(l.src_decompressed_len, max_expanded)?,
            prefix_len: r.varint(l.prefix_len)?,
            decompressed_len: r.varint_max(l.decompressed_len, max_expanded)?,
            stream_len: r.varint(l.stream_len)?,
            inner: OpKind::from_code(r.u8(l.inner)?)?,
        };
        if !matches!(
            p.inner,
            OpKind::Replace | OpKind::SourceZstd | OpKind::SourceBsdiffSparse
        ) {
            return Err(FormatError::invalid(
                l.inner,
                format!("{} cannot be an inner patch", p.inner),
            ));
        }
        Ok(p)
    }

    /// Checks that both streams lie within the `src_len` source and
    /// `dst_len` destination bytes and both expanded forms within
    /// `max_expanded`.
    pub(crate) fn check(
        &self,
        src_len: u64,
        dst_len: u64,
        l: &Labels,
        max_expanded: u64,
    ) -> Result<(), FormatError> {
        let (o, n) = (self.src_offset, self.src_stream_len);
        if n == 0 || o.checked_add(n).is_none_or(|e| e > src_len) {
            return Err(FormatError::invalid(
                l.src_stream,
                format!("bytes {o}+{n} lie past the {src_len} source bytes"),
            ));
        }
        let (o, n) = (self.prefix_len, self.stream_len);
        if n == 0 || o.checked_add(n).is_none_or(|e| e > dst_len) {
            return Err(FormatError::invalid(
                l.stream,
                format!("bytes {o}+{n} lie past the {dst_len} destination bytes"),
            ));
        }
        for (what, n) in [
            (
                l.source_expanded,
                src_len - self.src_stream_len + self.src_decompressed_len,
            ),
            (
                l.target_expanded,
                dst_len - self.stream_len + self.decompressed_len,
            ),
        ] {
            if n > max_expanded {
                return Err(FormatError::TooLarge {
                    what,
                    value: n,
                    limit: max_expanded,
                });
            }
        }
        Ok(())
    }
}

impl Placement {
    /// Bytes of the source expanded form, for `src_len` source bytes.
    pub fn source_expanded_len(&self, src_len: u64) -> u64 {
        src_len - self.src_stream_len + self.src_decompressed_len
    }

    /// Bytes of the target expanded form, for `dst_len` destination bytes.
    pub fn target_expanded_len(&self, dst_len: u64) -> u64 {
        dst_len - self.stream_len + self.decompressed_len
    }

    /// The expanded target (the bytes before the new stream, its
    /// decompressed bytes, the bytes after it) for a destination of
    /// `dst_len` bytes: the source's stream decompressed with
    /// `decompress` (which must fill its output exactly), then the
    /// `inner` patch run against that. Fields already [`Placement::check`]ed.
    pub(crate) fn expand(
        &self,
        inner: &[u8],
        src: &[u8],
        dst_len: u64,
        l: &Labels,
        decompress: impl FnOnce(&[u8], &mut [u8]) -> Result<(), String>,
    ) -> Result<Vec<u8>, FormatError> {
        let (off, len) = (self.src_offset as usize, self.src_stream_len as usize);
        let mut source = vec![0u8; self.source_expanded_len(src.len() as u64) as usize];
        let mid = self.src_decompressed_len as usize;
        source[..off].copy_from_slice(&src[..off]);
        source[off + mid..].copy_from_slice(&src[off + len..]);
        decompress(&src[off..off + len], &mut source[off..off + mid])
            .map_err(|e| FormatError::invalid(l.src_stream, e))?;
        let mut target = vec![0u8; self.target_expanded_len(dst_len) as usize];
        let inner_src: &[u8] = if self.inner == OpKind::Replace {
            &[]
        } else {
            &source
        };
        crate::ops::decode(self.inner, inner, inner_src, &mut target)?;
        Ok(target)
    }

    /// `out` (the destination) from the expanded `target`, its stream
    /// compressed again with `compress` (`Ok(false)` when the stream does
    /// not come out exactly `stream_len` bytes), whose parameters `params`
    /// names for the error.
    pub(crate) fn rebuild(
        &self,
        target: &[u8],
        out: &mut [u8],
        l: &Labels,
        params: &dyn std::fmt::Display,
        compress: impl FnOnce(&[u8], &mut [u8]) -> Result<bool, String>,
    ) -> Result<(), FormatError> {
        let (p, n, d) = (
            self.prefix_len as usize,
            self.stream_len as usize,
            self.decompressed_len as usize,
        );
        if target.len() != self.target_expanded_len(out.len() as u64) as usize {
            return Err(FormatError::invalid(
                l.rebuild,
                format!(
                    "{} expanded bytes for a {}-byte destination",
                    target.len(),
                    out.len()
                ),
            ));
        }
        out[..p].copy_from_slice(&target[..p]);
        out[p + n..].copy_from_slice(&target[p + d..]);
        let exact = compress(&target[p..p + d], &mut out[p..p + n])
            .map_err(|e| FormatError::invalid(l.rebuild, e))?;
        if !exact {
            return Err(FormatError::invalid(
                l.rebuild,
                format!(
                    "{d} bytes do not compress into the package's {n}-byte stream with {params}"
                ),
            ));
        }
        Ok(())
    }
}
