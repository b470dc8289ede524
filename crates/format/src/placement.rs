//! Where one compressed stream sits in an operation's source and
//! destination bytes, and the inner patch kind: the fields the
//! SOURCE_XZ_REBUILD and SOURCE_LZ4_REBUILD headers share, read and
//! checked once for both.

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
}

/// The shared fields, in their wire order.
pub(crate) struct Placement {
    pub src_offset: u64,
    pub src_stream_len: u64,
    pub src_decompressed_len: u64,
    pub prefix_len: u64,
    pub decompressed_len: u64,
    pub stream_len: u64,
    pub inner: OpKind,
}

impl Placement {
    /// Reads the fields, each decompressed length at most `max_expanded`,
    /// the inner kind one that can be an inner patch.
    pub fn read(r: &mut Reader<'_>, l: &Labels, max_expanded: u64) -> Result<Self, FormatError> {
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
    pub fn check(
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
