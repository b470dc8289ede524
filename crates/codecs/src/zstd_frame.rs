//! zstd frames compressed again bit for bit.
//!
//! libzstd's compressor is deterministic for a given library version,
//! level, frame flags and way of feeding it, so a frame comes out again
//! byte for byte from its decompressed bytes and those parameters
//! ([`ZstdParams`]), with the same library ([`library_version`]; releases
//! differ: 1.5.7, built in, reproduces no frame Debian's 1.5.4 `zstd`
//! writes, measured at levels 1 to 19). [`read_header`] reads what a frame
//! says of itself (checksum, content size), [`candidates`] proposes the
//! rest to try; the caller keeps the first that reproduces the frame.
//!
//! Two ways of compressing are told apart, as their frames differ: a
//! stream fed by 128 KiB reads (`ZSTD_compressStream2`, as the `zstd`
//! tool and streaming bindings compress a file) and one call over the
//! whole buffer (`ZSTD_compress2`, as bindings compress bytes in memory).
//! Both tell the compressor the input's size up front when the frame
//! records it, as those tools do.

use std::fmt;
use zstd_safe::zstd_sys::ZSTD_EndDirective;
use zstd_safe::{CCtx, CParameter, DCtx, InBuffer, OutBuffer};

/// The libzstd version this build compresses with (`ZSTD_versionNumber`:
/// major × 10000 + minor × 100 + patch; 10507 for 1.5.7).
pub fn library_version() -> u32 {
    zstd_safe::version_number()
}

/// `major.minor.patch` of a `ZSTD_versionNumber`.
pub fn version_name(v: u32) -> String {
    format!("{}.{}.{}", v / 10000, v / 100 % 100, v % 100)
}

/// The magic number a zstd frame starts with, as it is stored.
pub const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Lowest level [`ZstdParams`] may name.
pub const MIN_LEVEL: i8 = -7;
/// Highest level (`zstd --ultra -22`).
pub const MAX_LEVEL: i8 = 22;
/// Largest window a frame to be decompressed may ask for (`--long=27`).
pub const MAX_WINDOW: u64 = 128 << 20;
/// Bytes read at a time when streaming (`ZSTD_CStreamInSize`).
pub const READ_SIZE: usize = 128 << 10;
/// Largest content [`candidates`] proposes one-call compression for.
pub const MAX_ONE_SHOT: u64 = 16 << 20;

/// How a frame is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ZstdParams {
    /// Compression level, [`MIN_LEVEL`] to [`MAX_LEVEL`] (0 is not one: it
    /// means 3).
    pub level: i8,
    /// The frame ends with a checksum of its content.
    pub checksum: bool,
    /// The frame records its content size (and the compressor was told it).
    pub content_size: bool,
    /// Compressed in one `ZSTD_compress2` call rather than as a stream fed
    /// by [`READ_SIZE`] reads.
    pub one_shot: bool,
}

impl ZstdParams {
    /// The flags byte of the wire form: bit 0 checksum, 1 content size,
    /// 2 one shot.
    pub fn flags(&self) -> u8 {
        u8::from(self.checksum) | u8::from(self.content_size) << 1 | u8::from(self.one_shot) << 2
    }

    /// Parameters from a level and a flags byte; `None` when the level is
    /// out of range or a flag bit is unknown.
    pub fn from_wire(level: i8, flags: u8) -> Option<Self> {
        ((MIN_LEVEL..=MAX_LEVEL).contains(&level) && level != 0 && flags < 8).then_some(
            ZstdParams {
                level,
                checksum: flags & 1 != 0,
                content_size: flags & 2 != 0,
                one_shot: flags & 4 != 0,
            },
        )
    }
}

impl fmt::Display for ZstdParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = if self.level < 0 {
            format!("--fast={}", -self.level)
        } else {
            format!("-{}", self.level)
        };
        write!(
            f,
            "zstd {level}{}{}{}",
            if self.checksum { "" } else { " --no-check" },
            if self.content_size {
                ""
            } else {
                " --no-content-size"
            },
            if self.one_shot {
                ", in one call"
            } else {
                ", streamed"
            }
        )
    }
}

/// A zstd error, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZstdError(pub String);

impl fmt::Display for ZstdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ZstdError {}

fn err(s: impl Into<String>) -> ZstdError {
    ZstdError(s.into())
}

fn lib_err(what: &str, code: usize) -> ZstdError {
    err(format!("{what}: {}", zstd_safe::get_error_name(code)))
}

/// What a frame's header says of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// It ends with a content checksum.
    pub checksum: bool,
    /// Its content size, when it records one.
    pub content_size: Option<u64>,
    /// It names a dictionary (such frames are not rebuilt).
    pub dictionary: bool,
    /// The window it needs to be decompressed.
    pub window: u64,
}

/// Reads the frame header at the start of `b` (RFC 8878, 3.1.1.1).
pub fn read_header(b: &[u8]) -> Result<FrameHeader, ZstdError> {
    if b.get(..4) != Some(&MAGIC[..]) {
        return Err(err("not a zstd frame"));
    }
    let d = *b.get(4).ok_or_else(|| err("frame header cut short"))?;
    let (fcs_flag, single, reserved, checksum, dict_flag) =
        (d >> 6, d & 0x20 != 0, d & 0x08 != 0, d & 0x04 != 0, d & 3);
    if reserved {
        return Err(err("reserved frame header bit set"));
    }
    let mut at = 5;
    let mut window = 0u64;
    if !single {
        let w = *b.get(at).ok_or_else(|| err("frame header cut short"))?;
        let log = 10 + u64::from(w >> 3);
        let base = 1u64 << log;
        window = base + (base / 8) * u64::from(w & 7);
        at += 1;
    }
    at += [0, 1, 2, 4][dict_flag as usize];
    let fcs_len = match (fcs_flag, single) {
        (0, false) => 0,
        (0, true) => 1,
        (1, _) => 2,
        (2, _) => 4,
        _ => 8,
    };
    let fcs = b
        .get(at..at + fcs_len)
        .ok_or_else(|| err("frame header cut short"))?;
    let content_size = (fcs_len > 0).then(|| {
        let mut v = [0u8; 8];
        v[..fcs_len].copy_from_slice(fcs);
        u64::from_le_bytes(v) + if fcs_len == 2 { 256 } else { 0 }
    });
    if single {
        window = content_size.unwrap_or(0);
    }
    Ok(FrameHeader {
        checksum,
        content_size,
        dictionary: dict_flag != 0,
        window,
    })
}

/// The length of the zstd frame at the start of `b`, when one is whole
/// there, names no dictionary and records a content size of at most
/// `max_out` bytes (or none, with a window of at most [`MAX_WINDOW`]).
pub fn frame_len(b: &[u8], max_out: u64) -> Option<usize> {
    let h = read_header(b).ok()?;
    if h.dictionary || h.window > MAX_WINDOW || h.content_size.is_some_and(|n| n > max_out) {
        return None;
    }
    zstd_safe::find_frame_compressed_size(b).ok()
}

/// Decompresses `frame`, which must be exactly one zstd frame without a
/// dictionary that expands to at most `max_out` bytes. The checksum, when
/// it has one, is verified. Output grows as it is produced, never past
/// `max_out`.
pub fn decompress_exact(frame: &[u8], max_out: usize) -> Result<Vec<u8>, ZstdError> {
    let h = read_header(frame)?;
    check_decodable(&h, frame, max_out as u64)?;
    let mut out = Vec::new();
    decode(frame, |piece| {
        if out.len() + piece.len() > max_out {
            return Err(err(format!("frame expands past {max_out} bytes")));
        }
        out.extend_from_slice(piece);
        Ok(())
    })?;
    Ok(out)
}

/// Decompresses `frame` into exactly `out`: the frame must expand to
/// `out.len()` bytes, neither more nor fewer.
pub fn decompress_into(frame: &[u8], out: &mut [u8]) -> Result<(), ZstdError> {
    let h = read_header(frame)?;
    check_decodable(&h, frame, out.len() as u64)?;
    let mut at = 0;
    decode(frame, |piece| {
        let dst = out
            .get_mut(at..at + piece.len())
            .ok_or_else(|| err(format!("frame expands past {} bytes", at + piece.len() - 1)))?;
        dst.copy_from_slice(piece);
        at += piece.len();
        Ok(())
    })?;
    if at != out.len() {
        return Err(err(format!(
            "frame expands to {at} bytes, not {}",
            out.len()
        )));
    }
    Ok(())
}

fn check_decodable(h: &FrameHeader, frame: &[u8], max_out: u64) -> Result<(), ZstdError> {
    if h.dictionary {
        return Err(err("the frame names a dictionary"));
    }
    if h.window > MAX_WINDOW {
        return Err(err(format!(
            "the frame asks for a {}-byte window, more than {MAX_WINDOW}",
            h.window
        )));
    }
    if let Some(n) = h.content_size.filter(|&n| n > max_out) {
        return Err(err(format!(
            "frame content of {n} bytes, more than {max_out}"
        )));
    }
    match zstd_safe::find_frame_compressed_size(frame) {
        Ok(n) if n == frame.len() => Ok(()),
        Ok(n) => Err(err(format!(
            "{} bytes after the {n}-byte frame",
            frame.len() - n
        ))),
        Err(c) => Err(lib_err("frame", c)),
    }
}

/// Streams `frame`'s content through `sink` in pieces, its window bounded
/// by [`MAX_WINDOW`].
fn decode(
    frame: &[u8],
    mut sink: impl FnMut(&[u8]) -> Result<(), ZstdError>,
) -> Result<(), ZstdError> {
    let mut d = DCtx::create();
    d.set_parameter(zstd_safe::DParameter::WindowLogMax(27))
        .map_err(|c| lib_err("decoder", c))?;
    let mut buf = vec![0u8; 1 << 17];
    let mut input = InBuffer::around(frame);
    loop {
        let mut out = OutBuffer::around(&mut buf[..]);
        let left = d
            .decompress_stream(&mut out, &mut input)
            .map_err(|c| lib_err("frame", c))?;
        let n = out.pos();
        sink(&buf[..n])?;
        if left == 0 {
            return Ok(());
        }
        if n == 0 && input.pos() == frame.len() {
            return Err(err("frame cut short"));
        }
    }
}

/// A compressor set up for `params` and `data_len` bytes.
fn encoder(params: &ZstdParams, data_len: usize) -> Result<CCtx<'static>, ZstdError> {
    let mut c = CCtx::create();
    let set = |c: &mut CCtx, p| c.set_parameter(p).map_err(|e| lib_err("encoder", e));
    set(
        &mut c,
        CParameter::CompressionLevel(i32::from(params.level)),
    )?;
    set(&mut c, CParameter::ChecksumFlag(params.checksum))?;
    set(&mut c, CParameter::ContentSizeFlag(params.content_size))?;
    if params.content_size && !params.one_shot {
        c.set_pledged_src_size(Some(data_len as u64))
            .map_err(|e| lib_err("encoder", e))?;
    }
    Ok(c)
}

/// Compresses `data` with `params`, handing the frame to `sink` in pieces
/// until it returns `false`. [`compress_into`] (what an applier runs) and
/// [`reproduces`] (what a generator checks with) run this one encoder.
fn encode(
    params: &ZstdParams,
    data: &[u8],
    mut sink: impl FnMut(&[u8]) -> bool,
) -> Result<bool, ZstdError> {
    let mut c = encoder(params, data.len())?;
    if params.one_shot {
        let mut out = vec![0u8; zstd_safe::compress_bound(data.len())];
        let n = c
            .compress2(&mut out[..], data)
            .map_err(|e| lib_err("encoder", e))?;
        return Ok(sink(&out[..n]));
    }
    let mut buf = vec![0u8; 1 << 17];
    let mut fed = 0;
    loop {
        let end = (fed + READ_SIZE).min(data.len());
        let last = end == data.len();
        let mut input = InBuffer::around(&data[fed..end]);
        let directive = if last {
            ZSTD_EndDirective::ZSTD_e_end
        } else {
            ZSTD_EndDirective::ZSTD_e_continue
        };
        loop {
            let mut out = OutBuffer::around(&mut buf[..]);
            let left = c
                .compress_stream2(&mut out, &mut input, directive)
                .map_err(|e| lib_err("encoder", e))?;
            let n = out.pos();
            if n > 0 && !sink(&buf[..n]) {
                return Ok(false);
            }
            let done = if last {
                left == 0
            } else {
                input.pos() == end - fed
            };
            if done {
                break;
            }
        }
        fed = end;
        if last {
            return Ok(true);
        }
    }
}

/// Compresses `data` into one zstd frame with `params`.
pub fn compress(params: &ZstdParams, data: &[u8]) -> Result<Vec<u8>, ZstdError> {
    let mut out = Vec::new();
    encode(params, data, |b| {
        out.extend_from_slice(b);
        true
    })?;
    Ok(out)
}

/// Compresses `data` into `out`, which the frame must fill exactly;
/// `Ok(false)` when it comes out longer or shorter.
pub fn compress_into(params: &ZstdParams, data: &[u8], out: &mut [u8]) -> Result<bool, ZstdError> {
    let mut at = 0;
    let whole = encode(params, data, |b| match out.get_mut(at..at + b.len()) {
        Some(dst) => {
            dst.copy_from_slice(b);
            at += b.len();
            true
        }
        None => false,
    })?;
    Ok(whole && at == out.len())
}

/// Whether compressing `data` with `params` gives exactly `expected`;
/// compares as it compresses and stops at the first piece that differs, so
/// a wrong guess costs little.
pub fn reproduces(params: &ZstdParams, data: &[u8], expected: &[u8]) -> Result<bool, ZstdError> {
    let mut at = 0;
    let whole = encode(params, data, |b| {
        let same = expected.get(at..at + b.len()) == Some(b);
        at += b.len();
        same
    })?;
    Ok(whole && at == expected.len())
}

/// The memory, in bytes, [`compress_into`] takes with `params` for
/// `data_len` bytes: libzstd's own estimate of a streaming compressor
/// with the parameters its level gives for that size, plus 1 MiB of
/// buffers.
pub fn encoder_memory(params: &ZstdParams, data_len: u64) -> u64 {
    use zstd_safe::zstd_sys as sys;
    let size = if params.content_size {
        data_len
    } else {
        sys::ZSTD_CONTENTSIZE_UNKNOWN as u64
    };
    // SAFETY: pure functions of their arguments.
    let n = unsafe {
        let cp = sys::ZSTD_getCParams(i32::from(params.level), size, 0);
        sys::ZSTD_estimateCStreamSize_usingCParams(cp)
    };
    n as u64 + (1 << 20)
}

/// The parameters worth trying for a frame whose header is `h`, most
/// likely first: the frame's own checksum and content-size flags, levels
/// 3 (the default), 19, 1 to 22 and the fast levels, streamed (a wrong
/// guess costs one block), then in one call (a wrong guess costs a whole
/// compression) for contents up to [`MAX_ONE_SHOT`] bytes.
pub fn candidates(h: &FrameHeader) -> Vec<ZstdParams> {
    if h.dictionary {
        return Vec::new();
    }
    let mut levels: Vec<i8> = vec![3, 19];
    levels.extend((1..=MAX_LEVEL).filter(|l| *l != 3 && *l != 19));
    levels.extend((MIN_LEVEL..0).rev());
    let small = h.content_size.is_some_and(|n| n <= MAX_ONE_SHOT);
    let mut out = Vec::new();
    for one_shot in [false, true] {
        if one_shot && !small {
            break;
        }
        for &level in &levels {
            out.push(ZstdParams {
                level,
                checksum: h.checksum,
                content_size: h.content_size.is_some(),
                one_shot,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Vec<u8> {
        let mut x = 7u32;
        let words = [&b"frame "[..], b"block ", b"literal ", b"sequence ", b"\n"];
        let mut v = Vec::with_capacity(n + 16);
        while v.len() < n {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            v.extend_from_slice(words[(x % 5) as usize]);
            if x.is_multiple_of(7) {
                v.push((x >> 8) as u8);
            }
        }
        v.truncate(n);
        v
    }

    #[test]
    fn frames_rebuild_from_their_parameters() {
        let data = text(700_000);
        for (level, one_shot) in [(3, true), (19, false), (-3, true), (1, false)] {
            let p = ZstdParams {
                level,
                checksum: true,
                content_size: true,
                one_shot,
            };
            let frame = compress(&p, &data).unwrap();
            let h = read_header(&frame).unwrap();
            assert!(h.checksum);
            assert_eq!(h.content_size, Some(data.len() as u64));
            assert_eq!(
                frame_len(&[&frame[..], b"tail"].concat(), 1 << 30),
                Some(frame.len())
            );
            assert_eq!(decompress_exact(&frame, data.len()).unwrap(), data);
            assert!(decompress_exact(&frame, data.len() - 1).is_err());
            let mut out = vec![0u8; frame.len()];
            assert!(compress_into(&p, &data, &mut out).unwrap());
            assert_eq!(out, frame);
            assert!(!compress_into(&p, &data, &mut out[1..]).unwrap());
            let found = candidates(&h)
                .into_iter()
                .find(|c| reproduces(c, &data, &frame).unwrap())
                .unwrap();
            assert_eq!(compress(&found, &data).unwrap(), frame);
        }
    }

    #[test]
    fn flags_and_header_fields_round_trip() {
        for flags in 0..8 {
            let p = ZstdParams::from_wire(5, flags).unwrap();
            assert_eq!(p.flags(), flags);
        }
        assert!(ZstdParams::from_wire(0, 0).is_none());
        assert!(ZstdParams::from_wire(23, 0).is_none());
        assert!(ZstdParams::from_wire(5, 8).is_none());
        let data = text(5000);
        let p = ZstdParams::from_wire(3, 0).unwrap();
        let frame = compress(&p, &data).unwrap();
        let h = read_header(&frame).unwrap();
        assert!(!h.checksum && h.content_size.is_none() && !h.dictionary);
        assert_eq!(decompress_exact(&frame, 1 << 20).unwrap(), data);
    }

    #[test]
    fn damaged_and_cut_frames_are_errors() {
        let data = text(300_000);
        let p = ZstdParams::from_wire(3, 3).unwrap();
        let frame = compress(&p, &data).unwrap();
        for cut in [0, 3, 4, 5, 6, 12, frame.len() / 2, frame.len() - 1] {
            assert!(
                decompress_exact(&frame[..cut], 1 << 20).is_err(),
                "cut {cut}"
            );
            let mut out = vec![0u8; data.len()];
            assert!(
                decompress_into(&frame[..cut], &mut out).is_err(),
                "cut {cut}"
            );
        }
        let mut bad = frame.clone();
        let n = bad.len();
        bad[n - 2] ^= 1; // the checksum
        assert!(decompress_exact(&bad, 1 << 20).is_err());
        let mut out = vec![0u8; data.len() + 1];
        assert!(decompress_into(&frame, &mut out).is_err());
        assert!(decompress_into(&frame, &mut out[..data.len() - 1]).is_err());
    }
}
