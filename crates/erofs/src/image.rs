//! The one bounded reader: every byte of the image is read through
//! [`Image::bytes`], which checks the range against the image first.

use crate::ErofsError;

/// Untrusted image bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Image<'a> {
    buf: &'a [u8],
}

impl<'a> Image<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Image { buf }
    }

    /// All of the bytes.
    pub(crate) fn whole(&self) -> &'a [u8] {
        self.buf
    }

    /// The image length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.buf.len() as u64
    }

    /// The `len` bytes at `offset`, or [`ErofsError::Truncated`].
    pub(crate) fn bytes(
        &self,
        offset: u64,
        len: u64,
        what: &'static str,
    ) -> Result<&'a [u8], ErofsError> {
        let truncated = ErofsError::Truncated {
            what,
            offset,
            need: len,
            have: self.len(),
        };
        let end = offset.checked_add(len).ok_or(truncated.clone())?;
        if end > self.len() {
            return Err(truncated);
        }
        Ok(&self.buf[offset as usize..end as usize])
    }
}

/// What the image's tables may cost together: directory data, compression
/// indexes and chunk tables never share bytes in an image mkfs writes, so
/// together they are at most the image. Spending past that is refused,
/// which bounds the entries and extents a map holds by the image's bytes
/// even when hostile inodes point at the same tables.
#[derive(Debug)]
pub(crate) struct Budget {
    left: u64,
}

impl Budget {
    pub(crate) fn new(img: &Image) -> Self {
        Budget { left: img.len() }
    }

    /// Spends `n` bytes on `what`.
    pub(crate) fn spend(&mut self, n: u64, what: &'static str, nid: u64) -> Result<(), ErofsError> {
        self.left = self.left.checked_sub(n).ok_or_else(|| {
            ErofsError::invalid(
                what,
                format!("nid {nid}: the tables read so far hold more bytes than the image"),
            )
        })?;
        Ok(())
    }
}

/// Little-endian fields of a slice whose length the caller has checked
/// (through [`Image::bytes`]); out-of-range offsets read as zero rather
/// than panic, so a slip here cannot crash the reader.
pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(s) => u16::from_le_bytes([s[0], s[1]]),
        None => 0,
    }
}

/// See [`le16`].
pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(s) => u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

/// See [`le16`].
pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    match b.get(at..at + 8) {
        Some(s) => u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]),
        None => 0,
    }
}
