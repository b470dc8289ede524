//! Deflate streams inside container formats.
//!
//! A content-aware operation that rebuilds deflate streams needs to know
//! where each raw deflate stream of a file starts and ends and what its
//! container says of the level it was made with. This crate reads the
//! three containers that hold them:
//! - gzip (RFC 1952): one or more members, each a header (with the
//!   optional FEXTRA, FNAME, FCOMMENT and FHCRC fields), a raw deflate
//!   stream and a CRC32/ISIZE trailer ([`gzip`]);
//! - zip, jar and apk archives: the method-8 entries found by walking the
//!   local file headers from the archive's start, with or without data
//!   descriptors ([`zip`]); ZIP64 entries end the walk;
//! - zlib (RFC 1950): a two-byte header, a raw deflate stream and an
//!   Adler-32 trailer ([`zlib`]).
//!
//! Every parser is bounded: it reads only the bytes it is given, finds
//! each stream's end by inflating it (at most a caller-given number of
//! decompressed bytes in all), checks what the container records of it
//! (sizes, CRC32, Adler-32), and gives up quietly on anything else. The
//! trailers and headers stay bytes of the file: only the raw streams are
//! named.

#![warn(missing_docs)]

use romdelta_codecs::deflate::{self, LevelHint};

/// Most streams one container may name.
pub const MAX_STREAMS: usize = 1 << 16;

/// The kind of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A gzip file.
    Gzip,
    /// A zip archive (jar, apk).
    Zip,
    /// A zlib stream.
    Zlib,
}

/// One raw deflate stream of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// Offset of its first byte from the container's start.
    pub offset: usize,
    /// Its compressed length.
    pub len: usize,
    /// Bytes it decompresses to.
    pub expanded_len: usize,
    /// What the container says of its level.
    pub hint: LevelHint,
    /// Its name: a zip entry's path, a gzip member's FNAME (empty if none).
    pub name: Vec<u8>,
    /// CRC-32 of its decompressed bytes.
    pub crc: u32,
    /// CRC-32 of its first [`HEAD_LEN`] decompressed bytes (what tells
    /// versions of one file from other files when names do not).
    pub head_crc: u32,
}

/// Decompressed bytes [`Stream::head_crc`] covers.
pub const HEAD_LEN: usize = 4096;

fn head_crc(plain: &[u8]) -> u32 {
    crc32(&plain[..plain.len().min(HEAD_LEN)])
}

/// The deflate streams found at the start of some bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Which container.
    pub kind: Kind,
    /// Its streams, in ascending order.
    pub streams: Vec<Stream>,
    /// Offset just past the last byte known to belong to it (the last
    /// trailer, or the end of the central directory of a zip when it was
    /// found).
    pub end: usize,
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// zlib's CRC-32 of `b`.
pub fn crc32(b: &[u8]) -> u32 {
    let mut c: libz_sys::uLong = 0;
    for piece in b.chunks(1 << 30) {
        // SAFETY: the pointer covers `piece`.
        c = unsafe { libz_sys::crc32(c, piece.as_ptr(), piece.len() as libz_sys::uInt) };
    }
    c as u32
}

/// zlib's Adler-32 of `b`.
pub fn adler32(b: &[u8]) -> u32 {
    let mut c: libz_sys::uLong = 1;
    for piece in b.chunks(1 << 30) {
        // SAFETY: the pointer covers `piece`.
        c = unsafe { libz_sys::adler32(c, piece.as_ptr(), piece.len() as libz_sys::uInt) };
    }
    c as u32
}

/// A budget of decompressed bytes shared by one container's streams.
struct Budget(usize);

impl Budget {
    /// Inflates the stream at the start of `b` within the budget.
    fn inflate(&mut self, b: &[u8]) -> Option<(usize, Vec<u8>)> {
        let (n, plain) = deflate::inflate_len(b, self.0).ok()?;
        self.0 -= plain.len();
        Some((n, plain))
    }
}

/// The gzip members at the start of `b` (at least one), decompressing at
/// most `max_expanded` bytes in all. Each member's ISIZE and CRC32 must
/// match what its stream holds.
pub fn gzip(b: &[u8], max_expanded: usize) -> Option<Container> {
    let mut budget = Budget(max_expanded);
    let mut streams = Vec::new();
    let mut at = 0usize;
    while streams.len() < MAX_STREAMS && b.get(at..at + 3) == Some(&[0x1f, 0x8b, 8][..]) {
        let Some((stream, end)) = gzip_member(b, at, &mut budget) else {
            break;
        };
        streams.push(stream);
        at = end;
    }
    (!streams.is_empty()).then_some(Container {
        kind: Kind::Gzip,
        streams,
        end: at,
    })
}

/// One gzip member at `at`: its stream and the offset past its trailer.
fn gzip_member(b: &[u8], at: usize, budget: &mut Budget) -> Option<(Stream, usize)> {
    let flg = *b.get(at + 3)?;
    if flg & 0xe0 != 0 {
        return None;
    }
    let xfl = *b.get(at + 8)?;
    let mut p = at + 10;
    if flg & 4 != 0 {
        let xlen = le16(b, p)? as usize;
        p += 2 + xlen;
    }
    let mut name = Vec::new();
    for (bit, keep) in [(8u8, true), (16, false)] {
        if flg & bit != 0 {
            let s = b.get(p..)?;
            let z = s.iter().position(|&c| c == 0)?;
            if keep {
                name = s[..z].to_vec();
            }
            p += z + 1;
        }
    }
    if flg & 2 != 0 {
        p += 2;
    }
    let (len, plain) = budget.inflate(b.get(p..)?)?;
    let (crc, isize) = (le32(b, p + len)?, le32(b, p + len + 4)?);
    if isize != plain.len() as u32 || crc != crc32(&plain) {
        return None;
    }
    Some((
        Stream {
            offset: p,
            len,
            expanded_len: plain.len(),
            hint: LevelHint::GzipXfl(xfl),
            name,
            crc,
            head_crc: head_crc(&plain),
        },
        p + len + 8,
    ))
}

/// The zlib stream at the start of `b` (header, raw deflate stream,
/// Adler-32 trailer that must match), decompressing at most
/// `max_expanded` bytes.
pub fn zlib(b: &[u8], max_expanded: usize) -> Option<Container> {
    let (cmf, flg) = (*b.first()?, *b.get(1)?);
    if cmf & 0x0f != 8
        || cmf >> 4 > 7
        || flg & 0x20 != 0
        || !(u16::from(cmf) << 8 | u16::from(flg)).is_multiple_of(31)
    {
        return None;
    }
    let (len, plain) = Budget(max_expanded).inflate(&b[2..])?;
    let adler = u32::from_be_bytes(b.get(2 + len..6 + len)?.try_into().ok()?);
    if adler != adler32(&plain) {
        return None;
    }
    Some(Container {
        kind: Kind::Zlib,
        streams: vec![Stream {
            offset: 2,
            len,
            expanded_len: plain.len(),
            hint: LevelHint::ZlibFlevel(flg >> 6),
            name: Vec::new(),
            crc: crc32(&plain),
            head_crc: head_crc(&plain),
        }],
        end: 6 + len,
    })
}

const LOCAL: u32 = 0x0403_4b50;
const CENTRAL: u32 = 0x0201_4b50;
const END: u32 = 0x0605_4b50;
const DESCRIPTOR: u32 = 0x0807_4b50;

/// The method-8 entries of the zip archive at the start of `b`, found by
/// walking its local file headers, decompressing at most `max_expanded`
/// bytes in all. An entry's sizes and CRC-32 (from its local header or
/// its data descriptor) must match its stream. The walk ends at the
/// central directory (whose end, when it follows directly, ends the
/// container), at a ZIP64 or encrypted entry, or at anything it does not
/// understand; the entries before stay found.
pub fn zip(b: &[u8], max_expanded: usize) -> Option<Container> {
    let mut budget = Budget(max_expanded);
    let mut streams = Vec::new();
    let mut at = 0usize;
    let mut end = 0usize;
    while streams.len() < MAX_STREAMS && le32(b, at) == Some(LOCAL) {
        let Some(next) = zip_entry(b, at, &mut budget, &mut streams) else {
            break;
        };
        at = next;
        end = at;
    }
    if le32(b, at) == Some(CENTRAL) {
        if let Some(e) = central_end(b, at) {
            end = e;
        }
    }
    (!streams.is_empty()).then_some(Container {
        kind: Kind::Zip,
        streams,
        end,
    })
}

/// The offset past the end of central directory record, when the
/// central directory at `at` runs straight into it.
fn central_end(b: &[u8], mut at: usize) -> Option<usize> {
    for _ in 0..MAX_STREAMS * 2 {
        match le32(b, at)? {
            CENTRAL => {
                let n = le16(b, at + 28)? as usize
                    + le16(b, at + 30)? as usize
                    + le16(b, at + 32)? as usize;
                at += 46 + n;
            }
            END => {
                let end = at + 22 + le16(b, at + 20)? as usize;
                return (end <= b.len()).then_some(end);
            }
            _ => return None,
        }
    }
    None
}

/// The local entry at `at`: pushes its stream (method 8) and returns the
/// offset past its data (and descriptor).
fn zip_entry(b: &[u8], at: usize, budget: &mut Budget, streams: &mut Vec<Stream>) -> Option<usize> {
    let flags = le16(b, at + 6)?;
    let method = le16(b, at + 8)?;
    let (crc, csize, usize_) = (le32(b, at + 14)?, le32(b, at + 18)?, le32(b, at + 22)?);
    let (nlen, xlen) = (le16(b, at + 26)? as usize, le16(b, at + 28)? as usize);
    let name = b.get(at + 30..at + 30 + nlen)?.to_vec();
    let data = at + 30 + nlen + xlen;
    let descriptor = flags & 8 != 0;
    if flags & 1 != 0 || csize == u32::MAX || usize_ == u32::MAX {
        return None;
    }
    if method != 8 {
        // Stored or another method: skipped when its size is known.
        if descriptor {
            return None;
        }
        let next = data.checked_add(csize as usize)?;
        return (next <= b.len()).then_some(next);
    }
    let (len, plain) = budget.inflate(b.get(data..)?)?;
    let mut next = data + len;
    let (crc, csize, usize_) = if descriptor {
        if le32(b, next) == Some(DESCRIPTOR) {
            next += 4;
        }
        let d = (le32(b, next)?, le32(b, next + 4)?, le32(b, next + 8)?);
        next += 12;
        d
    } else {
        (crc, csize, usize_)
    };
    if csize as usize != len || usize_ as usize != plain.len() || crc != crc32(&plain) {
        return None;
    }
    streams.push(Stream {
        offset: data,
        len,
        expanded_len: plain.len(),
        hint: LevelHint::ZipFlags((flags >> 1 & 3) as u8),
        name,
        crc,
        head_crc: head_crc(&plain),
    });
    Some(next)
}

/// The container at the start of `b`, by its signature: gzip, zip or zlib.
pub fn at(b: &[u8], max_expanded: usize) -> Option<Container> {
    match b.get(..4)? {
        [0x1f, 0x8b, 8, _] => gzip(b, max_expanded),
        [b'P', b'K', 3, 4] => zip(b, max_expanded),
        [0x78, _, _, _] => zlib(b, max_expanded),
        _ => None,
    }
}

/// Whether `b` starts with the signature of a container [`at`] reads.
pub fn has_signature(b: &[u8]) -> bool {
    matches!(b.get(..4), Some([0x1f, 0x8b, 8, _] | [b'P', b'K', 3, 4]))
        || matches!(b.get(..2), Some([0x78, f]) if (0x7800u16 | u16::from(*f)).is_multiple_of(31) && f & 0x20 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use romdelta_codecs::deflate::DeflateParams;

    fn text(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| b"abcdefgh ij\n"[(i * 7 + i / 13) % 12])
            .collect()
    }

    fn gz(plain: &[u8], name: Option<&[u8]>, extra: bool) -> Vec<u8> {
        let mut flg = 0u8;
        if name.is_some() {
            flg |= 8;
        }
        if extra {
            flg |= 4 | 16 | 2;
        }
        let mut v = vec![0x1f, 0x8b, 8, flg, 1, 2, 3, 4, 0, 3];
        if extra {
            v.extend_from_slice(&[3, 0, 9, 9, 9]);
        }
        if let Some(n) = name {
            v.extend_from_slice(n);
            v.push(0);
        }
        if extra {
            v.extend_from_slice(b"a comment\0");
            v.extend_from_slice(&[0xaa, 0xbb]);
        }
        v.extend_from_slice(&deflate::compress(&DeflateParams::level(6), plain).unwrap());
        v.extend_from_slice(&crc32(plain).to_le_bytes());
        v.extend_from_slice(&(plain.len() as u32).to_le_bytes());
        v
    }

    fn zip_of(entries: &[(&str, &[u8], bool)]) -> Vec<u8> {
        let mut v = Vec::new();
        for (name, plain, descriptor) in entries {
            let c = deflate::compress(&DeflateParams::level(9), plain).unwrap();
            let crc = crc32(plain);
            let flags: u16 = if *descriptor { 8 | 2 } else { 2 };
            v.extend_from_slice(&LOCAL.to_le_bytes());
            v.extend_from_slice(&20u16.to_le_bytes());
            v.extend_from_slice(&flags.to_le_bytes());
            v.extend_from_slice(&8u16.to_le_bytes());
            v.extend_from_slice(&[0; 4]);
            for x in if *descriptor {
                [0, 0, 0]
            } else {
                [crc, c.len() as u32, plain.len() as u32]
            } {
                v.extend_from_slice(&x.to_le_bytes());
            }
            v.extend_from_slice(&(name.len() as u16).to_le_bytes());
            v.extend_from_slice(&0u16.to_le_bytes());
            v.extend_from_slice(name.as_bytes());
            v.extend_from_slice(&c);
            if *descriptor {
                v.extend_from_slice(&DESCRIPTOR.to_le_bytes());
                for x in [crc, c.len() as u32, plain.len() as u32] {
                    v.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
        v.extend_from_slice(&END.to_le_bytes());
        v.extend_from_slice(&[0; 18]);
        v
    }

    #[test]
    fn gzip_members_with_every_header_field_are_found() {
        let (a, b) = (text(5000), text(70_000));
        let file = [gz(&a, Some(b"a.txt"), true), gz(&b, None, false)].concat();
        let c = at(&[&file[..], &[0; 100]].concat(), 1 << 20).unwrap();
        assert_eq!(c.kind, Kind::Gzip);
        assert_eq!(c.end, file.len());
        assert_eq!(c.streams.len(), 2);
        assert_eq!(c.streams[0].name, b"a.txt");
        assert_eq!(c.streams[1].expanded_len, b.len());
        assert_eq!(c.streams[1].hint, LevelHint::GzipXfl(0));
        // A wrong CRC ends the member list before it.
        let mut bad = file.clone();
        let n = bad.len();
        bad[n - 5] ^= 1;
        assert_eq!(gzip(&bad, 1 << 20).unwrap().streams.len(), 1);
        // The budget is shared.
        assert_eq!(gzip(&file, 60_000).unwrap().streams.len(), 1);
    }

    #[test]
    fn zip_entries_with_and_without_descriptors_are_found() {
        let (a, b) = (text(3000), text(40_000));
        let file = zip_of(&[("a", &a, false), ("dir/b.class", &b, true)]);
        let c = at(&file, 1 << 20).unwrap();
        assert_eq!(c.kind, Kind::Zip);
        assert_eq!(c.streams.len(), 2);
        assert_eq!(c.streams[1].name, b"dir/b.class");
        assert_eq!(c.streams[1].hint, LevelHint::ZipFlags(1));
        assert_eq!(c.end, file.len() - 22);
    }

    #[test]
    fn zlib_streams_are_found_and_checked() {
        let plain = text(9000);
        let mut v = vec![0x78, 0xda];
        v.extend_from_slice(&deflate::compress(&DeflateParams::level(9), &plain).unwrap());
        v.extend_from_slice(&adler32(&plain).to_be_bytes());
        assert!(has_signature(&v));
        let c = at(&v, 1 << 20).unwrap();
        assert_eq!(
            (c.end, c.streams[0].hint),
            (v.len(), LevelHint::ZlibFlevel(3))
        );
        let n = v.len();
        v[n - 1] ^= 1;
        assert!(at(&v, 1 << 20).is_none());
    }

    #[test]
    fn every_truncation_is_handled() {
        let file = [
            zip_of(&[("x", &text(2000), true), ("y", &text(3000), false)]),
            gz(&text(4000), Some(b"n"), true),
        ];
        for f in &file {
            let whole = at(f, 1 << 20).unwrap().streams.len();
            for cut in 0..f.len() {
                let n = at(&f[..cut], 1 << 20).map_or(0, |c| c.streams.len());
                assert!(n <= whole, "cut {cut}");
                if let Some(c) = at(&f[..cut], 1 << 20) {
                    assert!(c.end <= cut && c.streams.iter().all(|s| s.offset + s.len <= cut));
                }
            }
        }
    }
}
