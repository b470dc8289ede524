//! One bounded reader and one writer for every encoding in the format.

use crate::{Digest, FormatError};

/// A cursor over untrusted bytes. Every read checks what remains first.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8], FormatError> {
        let have = self.remaining() as u64;
        if n > have {
            return Err(FormatError::Truncated {
                what,
                need: n - have,
                have,
            });
        }
        let n = n as usize;
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Reads one byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, FormatError> {
        Ok(self.take(1, what)?[0])
    }

    /// Reads a little-endian u32.
    pub fn u32_le(&mut self, what: &'static str) -> Result<u32, FormatError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    /// Reads a little-endian u64.
    pub fn u64_le(&mut self, what: &'static str) -> Result<u64, FormatError> {
        let b = self.take(8, what)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    /// Reads an unsigned LEB128 varint of at most 10 bytes, rejecting
    /// non-canonical (over-long) encodings so that every value has one encoding.
    pub fn varint(&mut self, what: &'static str) -> Result<u64, FormatError> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let byte = self.u8(what)?;
            let low = u64::from(byte & 0x7f);
            if i == 9 && byte > 1 {
                return Err(FormatError::invalid(what, "varint overflows 64 bits"));
            }
            value |= low << (7 * i);
            if byte & 0x80 == 0 {
                if i > 0 && byte == 0 {
                    return Err(FormatError::invalid(what, "non-canonical varint"));
                }
                return Ok(value);
            }
        }
        Err(FormatError::invalid(what, "varint longer than 10 bytes"))
    }

    /// Reads a varint that must not exceed `limit`.
    pub fn varint_max(&mut self, what: &'static str, limit: u64) -> Result<u64, FormatError> {
        let v = self.varint(what)?;
        if v > limit {
            return Err(FormatError::TooLarge {
                what,
                value: v,
                limit,
            });
        }
        Ok(v)
    }

    /// Reads an element count and checks that `count` elements of at least
    /// `min_elem_len` bytes each can still follow, and that it is at most `limit`.
    pub fn count(
        &mut self,
        what: &'static str,
        min_elem_len: u64,
        limit: u64,
    ) -> Result<usize, FormatError> {
        let n = self.varint_max(what, limit)?;
        let fits = (self.remaining() as u64) / min_elem_len.max(1);
        if n > fits {
            return Err(FormatError::TooLarge {
                what,
                value: n,
                limit: fits,
            });
        }
        Ok(n as usize)
    }

    /// An empty vector for `n` elements of `T` read from here on, with room
    /// reserved for no more of them than the bytes left could hold at
    /// `size_of::<T>()` bytes each: a count read from the input never makes
    /// the reader reserve more memory than the input holds. Past that the
    /// vector grows as elements are really decoded.
    pub fn vec_for<T>(&self, n: usize) -> Vec<T> {
        Vec::with_capacity(n.min(self.remaining() / std::mem::size_of::<T>().max(1)))
    }

    /// Reads a 32-byte digest.
    pub fn digest(&mut self, what: &'static str) -> Result<Digest, FormatError> {
        Ok(self.take(32, what)?.try_into().expect("32 bytes"))
    }

    /// Reads a length-prefixed UTF-8 string of at most `limit` bytes.
    pub fn string(&mut self, what: &'static str, limit: u64) -> Result<String, FormatError> {
        let n = self.varint_max(what, limit)?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| FormatError::invalid(what, "not UTF-8"))
    }

    /// Fails if any bytes are left.
    pub fn finish(&self, what: &'static str) -> Result<(), FormatError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(FormatError::Trailing {
                what,
                extra: extra as u64,
            }),
        }
    }
}

/// Appends encodings to a byte vector; the inverse of [`Reader`].
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }
    /// The bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
    /// Appends raw bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    /// Appends one byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    /// Appends a little-endian u32.
    pub fn u32_le(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    /// Appends a little-endian u64.
    pub fn u64_le(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    /// Appends an unsigned LEB128 varint.
    pub fn varint(&mut self, mut v: u64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.buf.push(byte);
                return;
            }
            self.buf.push(byte | 0x80);
        }
    }
    /// Appends a length-prefixed string.
    pub fn string(&mut self, s: &str) {
        self.varint(s.len() as u64);
        self.bytes(s.as_bytes());
    }
}

/// The data of an operation that transforms its bytes around an inner
/// patch: the transform's header, length-prefixed, then the inner patch.
pub(crate) fn headed(head: &[u8], inner: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.varint(head.len() as u64);
    w.bytes(head);
    w.bytes(inner);
    w.into_bytes()
}

/// Splits data written by [`headed`] into its header (at most `max_head`
/// bytes) and inner patch; `what` names the header's length, the header
/// and the inner patch in errors.
pub(crate) fn split_headed<'a>(
    data: &'a [u8],
    what: [&'static str; 3],
    max_head: u64,
) -> Result<(&'a [u8], &'a [u8]), FormatError> {
    let mut r = Reader::new(data);
    let head_len = r.varint_max(what[0], max_head)?;
    let head = r.take(head_len, what[1])?;
    let inner = r.take(r.remaining() as u64, what[2])?;
    Ok((head, inner))
}

/// [`split_headed`] for the rebuild operations, whose inner patch is never
/// empty: an empty one is refused as missing.
pub(crate) fn split_rebuild<'a>(
    data: &'a [u8],
    what: [&'static str; 3],
    max_head: u64,
) -> Result<(&'a [u8], &'a [u8]), FormatError> {
    let (head, inner) = split_headed(data, what, max_head)?;
    if inner.is_empty() {
        return Err(FormatError::invalid(what[2], "missing"));
    }
    Ok((head, inner))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip_and_canonical() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut w = Writer::new();
            w.varint(v);
            let bytes = w.into_bytes();
            let mut r = Reader::new(&bytes);
            assert_eq!(r.varint("v").unwrap(), v);
            r.finish("v").unwrap();
            for cut in 0..bytes.len() {
                assert!(Reader::new(&bytes[..cut]).varint("v").is_err());
            }
        }
        assert!(Reader::new(&[0x80, 0x00]).varint("v").is_err());
        assert!(Reader::new(&[0xff; 10]).varint("v").is_err());
        assert!(
            Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02])
                .varint("v")
                .is_err()
        );
    }

    #[test]
    fn count_is_bounded_by_remaining_bytes() {
        let mut w = Writer::new();
        w.varint(1_000_000);
        w.bytes(&[0; 10]);
        let bytes = w.into_bytes();
        let err = Reader::new(&bytes).count("n", 16, u64::MAX).unwrap_err();
        assert!(matches!(err, FormatError::TooLarge { limit: 0, .. }));
    }

    #[test]
    fn vec_for_reserves_no_more_than_the_bytes_left() {
        let bytes = [0u8; 1000];
        let r = Reader::new(&bytes);
        assert_eq!(r.vec_for::<[u8; 100]>(usize::MAX).capacity(), 10);
        assert_eq!(r.vec_for::<u8>(3).capacity(), 3);
        assert_eq!(Reader::new(&[]).vec_for::<u64>(1 << 40).capacity(), 0);
    }
}
