//! Raw deflate streams (RFC 1951) compressed again bit for bit through
//! zlib, as gzip files, zlib streams and zip entries hold them.
//!
//! zlib's `deflate` is deterministic for given input and parameters
//! ([`DeflateParams`]: level, window bits, memLevel, strategy) when it is
//! always called the same way: [`compress_into`] and [`reproduces`] give it
//! all the input at once with `Z_FINISH` and take the output in pieces of
//! [`OUT_PIECE`] bytes, so the generator's check and the applier's rebuild
//! run the very same calls. The zlib version is recorded
//! ([`library_version`]). [`candidates`] orders the parameters worth trying
//! from a container's level hint; the caller keeps the first that
//! reproduces a stream. [`inflate_len`] and [`decompress_into`] are bounded
//! exact decoders.

use libz_sys as z;
use std::fmt;

/// Bytes of output each `deflate` call is given (part of what decides
/// stored blocks' sizes at level 0, so fixed).
pub const OUT_PIECE: usize = 4096;

/// zlib's `Z_DEFLATED` method.
const Z_DEFLATED: i32 = 8;

/// Why deflate bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeflateError(pub String);

impl fmt::Display for DeflateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DeflateError {}

fn err(what: impl Into<String>) -> DeflateError {
    DeflateError(what.into())
}

/// The zlib version this build compresses with, from `zlibVersion`:
/// major × 1000000 + minor × 10000 + revision × 100 + subrevision
/// (1030100 for 1.3.1).
pub fn library_version() -> u32 {
    // SAFETY: zlibVersion returns a static NUL-terminated string.
    let s = unsafe { std::ffi::CStr::from_ptr(z::zlibVersion()) };
    parse_version(&s.to_string_lossy())
}

fn parse_version(s: &str) -> u32 {
    let mut v = 0u32;
    let mut parts = s.split('.');
    for scale in [1_000_000, 10_000, 100, 1] {
        let n: u32 = parts
            .next()
            .map(|p| {
                p.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        v += n.min(99) * scale;
    }
    v
}

/// `major.minor.revision` (and `.subrevision` when not 0) of a
/// [`library_version`] number.
pub fn version_name(v: u32) -> String {
    let (a, b, c, d) = (v / 1_000_000, v / 10_000 % 100, v / 100 % 100, v % 100);
    if d == 0 {
        format!("{a}.{b}.{c}")
    } else {
        format!("{a}.{b}.{c}.{d}")
    }
}

/// zlib's compression strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// `Z_DEFAULT_STRATEGY`.
    Default,
    /// `Z_FILTERED`.
    Filtered,
    /// `Z_HUFFMAN_ONLY`.
    HuffmanOnly,
    /// `Z_RLE`.
    Rle,
    /// `Z_FIXED`.
    Fixed,
}

impl Strategy {
    const ALL: [Strategy; 5] = [
        Strategy::Default,
        Strategy::Filtered,
        Strategy::HuffmanOnly,
        Strategy::Rle,
        Strategy::Fixed,
    ];
    /// zlib's number for it (and the wire code).
    pub fn code(self) -> u8 {
        match self {
            Strategy::Default => 0,
            Strategy::Filtered => 1,
            Strategy::HuffmanOnly => 2,
            Strategy::Rle => 3,
            Strategy::Fixed => 4,
        }
    }
    /// The strategy of a code.
    pub fn from_code(c: u8) -> Option<Self> {
        Strategy::ALL.into_iter().find(|s| s.code() == c)
    }
}

/// Everything that decides the bytes zlib's raw deflate writes for given
/// input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeflateParams {
    /// Compression level, 0 to 9.
    pub level: u8,
    /// Window bits, 9 to 15 (zlib turns 8 into 9 for raw streams).
    pub window_bits: u8,
    /// memLevel, 1 to 9.
    pub mem_level: u8,
    /// Strategy.
    pub strategy: Strategy,
}

impl fmt::Display for DeflateParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "deflate level {} window {} memLevel {} {:?}",
            self.level, self.window_bits, self.mem_level, self.strategy
        )
    }
}

impl DeflateParams {
    /// zlib's defaults at `level`: window 15, memLevel 8, default strategy.
    pub fn level(level: u8) -> Self {
        DeflateParams {
            level,
            window_bits: 15,
            mem_level: 8,
            strategy: Strategy::Default,
        }
    }

    /// Checks the ranges zlib accepts.
    pub fn check_ranges(&self) -> Result<(), DeflateError> {
        if self.level > 9
            || !(9..=15).contains(&self.window_bits)
            || !(1..=9).contains(&self.mem_level)
        {
            return Err(err(format!(
                "{self} (level 0-9, window 9-15, memLevel 1-9)"
            )));
        }
        Ok(())
    }

    /// Memory zlib's compressor of these parameters uses, in bytes (zlib's
    /// own formula in zconf.h, plus its state).
    pub fn encoder_memory(&self) -> u64 {
        (1u64 << (self.window_bits + 2)) + (1u64 << (self.mem_level + 9)) + (64 << 10)
    }
}

/// Memory zlib's raw inflate uses at most, in bytes (a 32 KiB window and
/// its state).
pub const DECODER_MEMORY: u64 = 64 << 10;

extern "C" fn zalloc(_: z::voidpf, items: z::uInt, size: z::uInt) -> z::voidpf {
    // SAFETY: calloc with the sizes zlib asks for.
    unsafe { libc::calloc(items as usize, size as usize) }
}

extern "C" fn zfree(_: z::voidpf, p: z::voidpf) {
    // SAFETY: p came from zalloc (or is null).
    unsafe { libc::free(p) }
}

fn new_stream() -> Box<z::z_stream> {
    Box::new(z::z_stream {
        next_in: std::ptr::null_mut(),
        avail_in: 0,
        total_in: 0,
        next_out: std::ptr::null_mut(),
        avail_out: 0,
        total_out: 0,
        msg: std::ptr::null_mut(),
        state: std::ptr::null_mut(),
        zalloc,
        zfree,
        opaque: std::ptr::null_mut(),
        data_type: 0,
        adler: 0,
        reserved: 0,
    })
}

/// A zlib raw deflate compressor, ended when dropped.
struct Deflater(Box<z::z_stream>);

impl Deflater {
    fn new(p: &DeflateParams) -> Result<Self, DeflateError> {
        p.check_ranges()?;
        let mut s = new_stream();
        // SAFETY: a fresh stream with allocators; the version string and
        // struct size are the ones libz-sys was built against.
        let rc = unsafe {
            z::deflateInit2_(
                &mut *s,
                i32::from(p.level),
                Z_DEFLATED,
                -i32::from(p.window_bits),
                i32::from(p.mem_level),
                i32::from(p.strategy.code()),
                z::zlibVersion(),
                std::mem::size_of::<z::z_stream>() as i32,
            )
        };
        if rc != z::Z_OK {
            return Err(err(format!("deflateInit2 failed ({rc}) for {p}")));
        }
        Ok(Deflater(s))
    }

    /// Runs deflate with all of `input` and `Z_FINISH` into `out` (at most
    /// [`OUT_PIECE`] bytes); returns (bytes written, stream ended).
    fn step(
        &mut self,
        input: &[u8],
        consumed: usize,
        out: &mut [u8],
    ) -> Result<(usize, bool), DeflateError> {
        debug_assert!(out.len() <= OUT_PIECE);
        let rest = &input[consumed..];
        let s = &mut *self.0;
        s.next_in = rest.as_ptr() as *mut u8;
        s.avail_in = rest.len().min(u32::MAX as usize) as u32;
        s.next_out = out.as_mut_ptr();
        s.avail_out = out.len() as u32;
        // SAFETY: the pointers cover live buffers of the lengths given.
        let rc = unsafe { z::deflate(s, z::Z_FINISH) };
        let written = out.len() - s.avail_out as usize;
        s.next_in = std::ptr::null_mut();
        s.next_out = std::ptr::null_mut();
        match rc {
            z::Z_STREAM_END => Ok((written, true)),
            z::Z_OK | z::Z_BUF_ERROR => Ok((written, false)),
            rc => Err(err(format!("deflate failed ({rc})"))),
        }
    }

    fn consumed(&self) -> usize {
        self.0.total_in as usize
    }
}

impl Drop for Deflater {
    fn drop(&mut self) {
        // SAFETY: initialised by deflateInit2_.
        unsafe { z::deflateEnd(&mut *self.0) };
    }
}

/// Feeds the compressed bytes of `data` under `p`, piece by piece, to
/// `sink` until it returns false or the stream ends; true when the stream
/// ended with every piece accepted.
fn run(
    p: &DeflateParams,
    data: &[u8],
    mut sink: impl FnMut(&[u8]) -> bool,
) -> Result<bool, DeflateError> {
    if data.len() > u32::MAX as usize {
        return Err(err("input longer than 4 GiB"));
    }
    let mut d = Deflater::new(p)?;
    let mut piece = vec![0u8; OUT_PIECE];
    loop {
        let consumed = d.consumed();
        let (n, end) = d.step(data, consumed, &mut piece)?;
        if !sink(&piece[..n]) {
            return Ok(false);
        }
        if end {
            return Ok(true);
        }
        if n == 0 && d.consumed() == consumed {
            return Err(err("deflate made no progress"));
        }
    }
}

/// Compresses `data` into one raw deflate stream.
pub fn compress(p: &DeflateParams, data: &[u8]) -> Result<Vec<u8>, DeflateError> {
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    run(p, data, |b| {
        out.extend_from_slice(b);
        true
    })?;
    Ok(out)
}

/// Compresses `data` into `out`, which the stream must fill exactly;
/// `Ok(false)` when it comes out longer or shorter.
pub fn compress_into(p: &DeflateParams, data: &[u8], out: &mut [u8]) -> Result<bool, DeflateError> {
    let mut at = 0usize;
    let ended = run(p, data, |b| {
        if b.len() > out.len() - at {
            return false;
        }
        out[at..at + b.len()].copy_from_slice(b);
        at += b.len();
        true
    })?;
    Ok(ended && at == out.len())
}

/// Whether `data` compresses under `p` into exactly `expected`; stops at
/// the first piece that differs.
pub fn reproduces(p: &DeflateParams, data: &[u8], expected: &[u8]) -> Result<bool, DeflateError> {
    let mut at = 0usize;
    let ended = run(p, data, |b| {
        let same = expected.get(at..at + b.len()) == Some(b);
        at += b.len();
        same
    })?;
    Ok(ended && at == expected.len())
}

/// A zlib raw inflater, ended when dropped.
struct Inflater(Box<z::z_stream>);

impl Inflater {
    fn new() -> Result<Self, DeflateError> {
        let mut s = new_stream();
        // SAFETY: as for deflateInit2_.
        let rc = unsafe {
            z::inflateInit2_(
                &mut *s,
                -15,
                z::zlibVersion(),
                std::mem::size_of::<z::z_stream>() as i32,
            )
        };
        if rc != z::Z_OK {
            return Err(err(format!("inflateInit2 failed ({rc})")));
        }
        Ok(Inflater(s))
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // SAFETY: initialised by inflateInit2_.
        unsafe { z::inflateEnd(&mut *self.0) };
    }
}

/// Inflates the raw deflate stream at the start of `data`, giving its
/// output piece by piece to `sink` (which refuses what it cannot take).
/// Returns the stream's compressed length; refuses bad data and a stream
/// that does not end within `data`.
fn inflate(
    data: &[u8],
    mut sink: impl FnMut(&[u8]) -> Result<(), DeflateError>,
) -> Result<usize, DeflateError> {
    let mut inf = Inflater::new()?;
    let data = &data[..data.len().min(u32::MAX as usize)];
    let mut piece = vec![0u8; OUT_PIECE];
    loop {
        let s = &mut *inf.0;
        let done = s.total_in as usize;
        s.next_in = data[done..].as_ptr() as *mut u8;
        s.avail_in = (data.len() - done) as u32;
        s.next_out = piece.as_mut_ptr();
        s.avail_out = piece.len() as u32;
        // SAFETY: the pointers cover live buffers of the lengths given.
        let rc = unsafe { z::inflate(s, z::Z_NO_FLUSH) };
        let n = piece.len() - s.avail_out as usize;
        s.next_in = std::ptr::null_mut();
        s.next_out = std::ptr::null_mut();
        let total_in = s.total_in as usize;
        sink(&piece[..n])?;
        match rc {
            z::Z_STREAM_END => return Ok(total_in),
            z::Z_OK => {}
            z::Z_BUF_ERROR if n == 0 => {
                return Err(err("truncated deflate stream"));
            }
            z::Z_BUF_ERROR => {}
            z::Z_DATA_ERROR => return Err(err("invalid deflate data")),
            rc => return Err(err(format!("inflate failed ({rc})"))),
        }
    }
}

/// The raw deflate stream at the start of `data`: its compressed length
/// and decompressed bytes (at most `max_out` of them).
pub fn inflate_len(data: &[u8], max_out: usize) -> Result<(usize, Vec<u8>), DeflateError> {
    let mut out = Vec::new();
    let n = inflate(data, |b| {
        if b.len() > max_out - out.len() {
            return Err(err(format!("decompresses to more than {max_out} bytes")));
        }
        out.extend_from_slice(b);
        Ok(())
    })?;
    Ok((n, out))
}

/// Decompresses `stream`, which must be exactly one raw deflate stream
/// (no bytes after its end), into exactly `out.len()` bytes.
pub fn decompress_into(stream: &[u8], out: &mut [u8]) -> Result<(), DeflateError> {
    let mut at = 0usize;
    let cap = out.len();
    let n = inflate(stream, |b| {
        if b.len() > cap - at {
            return Err(err(format!("decompresses to more than {cap} bytes")));
        }
        out[at..at + b.len()].copy_from_slice(b);
        at += b.len();
        Ok(())
    })?;
    if n != stream.len() {
        return Err(err(format!(
            "the deflate stream ends after {n} of its {} bytes",
            stream.len()
        )));
    }
    if at != cap {
        return Err(err(format!("decompresses to {at} bytes, not {cap}")));
    }
    Ok(())
}

/// What a container says of the level its stream was made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelHint {
    /// Nothing.
    None,
    /// gzip's XFL byte (2: slowest, 4: fastest).
    GzipXfl(u8),
    /// zlib's FLEVEL (0 fastest … 3 slowest).
    ZlibFlevel(u8),
    /// A zip entry's general purpose flag bits 1-2 (method 8: 0 normal,
    /// 1 maximum, 2 fast, 3 super fast).
    ZipFlags(u8),
}

/// Parameters worth trying for a stream, likeliest first: the hinted
/// levels, then 6, 9, 1 and the rest, each with memLevel 8 then 9 and
/// window 15; then the other strategies at those levels, then smaller
/// windows and memLevels at level 6 and 9.
pub fn candidates(hint: LevelHint) -> Vec<DeflateParams> {
    let first: &[u8] = match hint {
        LevelHint::GzipXfl(2) | LevelHint::ZlibFlevel(3) | LevelHint::ZipFlags(1) => &[9, 8, 7],
        LevelHint::GzipXfl(4) | LevelHint::ZlibFlevel(0) | LevelHint::ZipFlags(2 | 3) => &[1, 0],
        LevelHint::ZlibFlevel(1) => &[2, 3, 4, 5],
        _ => &[6],
    };
    let mut levels: Vec<u8> = first.to_vec();
    for l in [6, 9, 1, 2, 3, 4, 5, 7, 8, 0] {
        if !levels.contains(&l) {
            levels.push(l);
        }
    }
    let mut out = Vec::new();
    let mut push = |p: DeflateParams| {
        if !out.contains(&p) {
            out.push(p);
        }
    };
    for &l in &levels {
        for m in [8, 9] {
            push(DeflateParams {
                mem_level: m,
                ..DeflateParams::level(l)
            });
        }
    }
    for s in [
        Strategy::Filtered,
        Strategy::HuffmanOnly,
        Strategy::Rle,
        Strategy::Fixed,
    ] {
        for &l in &levels[..3] {
            push(DeflateParams {
                strategy: s,
                ..DeflateParams::level(l)
            });
        }
    }
    for l in [levels[0], 6, 9] {
        for w in (9..15).rev() {
            push(DeflateParams {
                window_bits: w,
                ..DeflateParams::level(l)
            });
        }
        for m in (1..8).rev() {
            push(DeflateParams {
                mem_level: m,
                ..DeflateParams::level(l)
            });
        }
    }
    out
}

/// The first of `candidates` under which `plain` compresses into exactly
/// `stream`.
pub fn find_params(
    candidates: &[DeflateParams],
    plain: &[u8],
    stream: &[u8],
) -> Option<DeflateParams> {
    candidates
        .iter()
        .copied()
        .find(|p| reproduces(p, plain, stream).unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Vec<u8> {
        let words = ["alpha ", "beta ", "gamma ", "delta\n", "epsilon ", "zeta "];
        let mut x = 7u32;
        let mut v = Vec::new();
        while v.len() < n {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            v.extend_from_slice(words[(x >> 16) as usize % words.len()].as_bytes());
            if x.is_multiple_of(7) {
                v.extend_from_slice(&x.to_le_bytes());
            }
        }
        v.truncate(n);
        v
    }

    #[test]
    fn version_is_named() {
        let v = library_version();
        assert!(v >= 1_020_000, "{v}");
        assert_eq!(version_name(1_030_100), "1.3.1");
        assert_eq!(parse_version("1.2.11.1-motley"), 1_021_101);
    }

    #[test]
    fn every_level_round_trips_and_is_found() {
        let data = text(300_000);
        for level in 0..=9 {
            let p = DeflateParams::level(level);
            let c = compress(&p, &data).unwrap();
            let (n, plain) = inflate_len(&[&c[..], b"trailing"].concat(), 1 << 20).unwrap();
            assert_eq!((n, &plain), (c.len(), &data));
            let mut out = vec![0; c.len()];
            assert!(compress_into(&p, &data, &mut out).unwrap());
            assert_eq!(out, c);
            assert!(!compress_into(&p, &data, &mut vec![0; c.len() - 1]).unwrap());
            assert!(!compress_into(&p, &data, &mut vec![0; c.len() + 1]).unwrap());
            let found = find_params(&candidates(LevelHint::None), &data, &c).unwrap();
            // Another parameter set may write the same bytes; it must.
            assert_eq!(compress(&found, &data).unwrap(), c, "level {level}");
        }
    }

    #[test]
    fn other_parameters_are_found() {
        let data = text(100_000);
        for p in [
            DeflateParams {
                mem_level: 9,
                ..DeflateParams::level(9)
            },
            DeflateParams {
                window_bits: 12,
                ..DeflateParams::level(6)
            },
            DeflateParams {
                strategy: Strategy::Rle,
                ..DeflateParams::level(6)
            },
            DeflateParams {
                strategy: Strategy::HuffmanOnly,
                ..DeflateParams::level(1)
            },
        ] {
            let c = compress(&p, &data).unwrap();
            let found = find_params(&candidates(LevelHint::None), &data, &c).unwrap();
            assert_eq!(compress(&found, &data).unwrap(), c, "{p}");
        }
    }

    #[test]
    fn decoder_is_bounded_and_exact() {
        let data = text(50_000);
        let c = compress(&DeflateParams::level(6), &data).unwrap();
        let mut out = vec![0; data.len()];
        decompress_into(&c, &mut out).unwrap();
        assert_eq!(out, data);
        assert!(decompress_into(&c, &mut vec![0; data.len() - 1]).is_err());
        assert!(decompress_into(&c, &mut vec![0; data.len() + 1]).is_err());
        assert!(decompress_into(&[&c[..], b"x"].concat(), &mut out).is_err());
        for cut in [0, 1, c.len() / 2, c.len() - 1] {
            assert!(decompress_into(&c[..cut], &mut out).is_err(), "cut {cut}");
            assert!(inflate_len(&c[..cut], 1 << 20).is_err(), "cut {cut}");
        }
        assert!(inflate_len(&c, 1000).is_err());
        let mut bad = c.clone();
        bad[0] = 0xff;
        assert!(inflate_len(&bad, 1 << 20).is_err());
        assert!(DeflateParams {
            window_bits: 8,
            ..DeflateParams::level(6)
        }
        .check_ranges()
        .is_err());
        assert!(compress(&DeflateParams::level(10), &data).is_err());
    }
}
