//! Whole lz4 streams, compressed exactly as the `lz4` command line does it.
//!
//! Two stream formats are read and written:
//! - the *legacy* format of Linux kernels and Android ramdisks (`lz4 -l`):
//!   the magic 0x184C2102 (little-endian), then blocks, each a `u32le`
//!   compressed size and an independently compressed LZ4 block of
//!   [`LEGACY_BLOCK`] bytes (the last one shorter). lz4's CLI compresses each
//!   block with `LZ4_compress_fast(…, 1)` below level 3 and with
//!   `LZ4_compress_HC(…, level)` from level 3 on;
//! - *frames* (magic 0x184D2204): a descriptor (block size, block
//!   independence, block and content checksums, content size), blocks and
//!   an end mark, written by liblz4's own lz4frame functions with the
//!   preferences the CLI passes: [`LZ4F_compressFrame`] for an input shorter
//!   than one block, else `LZ4F_compressBegin`, one `LZ4F_compressUpdate`
//!   per block-sized chunk and `LZ4F_compressEnd`, always with autoFlush.
//!
//! The decoders are bounded and exact: a stream must fill its buffer to
//! the byte, every input byte must belong to the stream, and a frame's
//! checksums are verified (by liblz4's frame decoder).

use lz4_sys::{
    LZ4FCompressionContext, LZ4FDecompressionContext, LZ4FErrorCode, LZ4FPreferences, LZ4F_VERSION,
};
use std::os::raw::{c_char, c_int, c_uint, c_ulonglong};

/// First four bytes of a legacy stream.
pub const LEGACY_MAGIC: [u8; 4] = 0x184C_2102u32.to_le_bytes();
/// First four bytes of an lz4 frame.
pub const FRAME_MAGIC: [u8; 4] = 0x184D_2204u32.to_le_bytes();
/// Bytes every legacy block decompresses to, but the last.
pub const LEGACY_BLOCK: usize = 8 << 20;

/// liblz4's `LZ4F_preferences_t` of 1.9.4 (lz4-sys declares an older
/// layout of the same size and passes it by pointer only).
#[repr(C)]
#[derive(Clone, Copy)]
struct Preferences {
    block_size_id: c_uint,
    block_mode: c_uint,
    content_checksum: c_uint,
    frame_type: c_uint,
    content_size: c_ulonglong,
    dict_id: c_uint,
    block_checksum: c_uint,
    compression_level: c_int,
    auto_flush: c_uint,
    favor_dec_speed: c_uint,
    reserved: [c_uint; 3],
}

const _: () = assert!(std::mem::size_of::<Preferences>() == 56);

extern "C" {
    fn LZ4F_compressFrame(
        dst: *mut u8,
        dst_capacity: usize,
        src: *const u8,
        src_size: usize,
        prefs: *const Preferences,
    ) -> usize;
    fn LZ4F_compressFrameBound(src_size: usize, prefs: *const Preferences) -> usize;
}

/// Which stream format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamFormat {
    /// `lz4 -l`: magic, then `u32le size · block`, 8 MiB blocks.
    Legacy,
    /// An lz4 frame.
    Frame,
}

impl StreamFormat {
    /// The wire code: 0 legacy, 1 frame.
    pub fn code(self) -> u8 {
        match self {
            StreamFormat::Legacy => 0,
            StreamFormat::Frame => 1,
        }
    }

    /// The format of a wire code.
    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(StreamFormat::Legacy),
            1 => Some(StreamFormat::Frame),
            _ => None,
        }
    }
}

/// The lz4frame preferences a frame is written with (unused for legacy
/// streams, where they are all zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FramePrefs {
    /// Block size id, 4 (64 KiB) to 7 (4 MiB).
    pub block_size_id: u8,
    /// Blocks linked (each may refer to the one before) rather than independent.
    pub block_linked: bool,
    /// Each block followed by its xxhash32.
    pub block_checksum: bool,
    /// The frame ends with the xxhash32 of its content.
    pub content_checksum: bool,
    /// The descriptor holds the content size.
    pub content_size: bool,
    /// liblz4's `favorDecSpeed` (matters from level 10 on).
    pub favor_dec_speed: bool,
    /// `autoFlush`.
    pub auto_flush: bool,
    /// Written by one `LZ4F_compressFrame` call (what the CLI does for an
    /// input shorter than one block), not block by block.
    pub single_pass: bool,
}

impl FramePrefs {
    /// The flag bits of the wire form.
    pub fn flags(&self) -> u8 {
        [
            self.block_linked,
            self.block_checksum,
            self.content_checksum,
            self.content_size,
            self.favor_dec_speed,
            self.auto_flush,
            self.single_pass,
        ]
        .iter()
        .enumerate()
        .map(|(i, &b)| u8::from(b) << i)
        .sum()
    }

    /// Preferences from a block size id and flag bits; `None` for unknown bits.
    pub fn from_flags(block_size_id: u8, flags: u8) -> Option<Self> {
        if flags & 0x80 != 0 {
            return None;
        }
        let bit = |i: u8| flags & (1 << i) != 0;
        Some(FramePrefs {
            block_size_id,
            block_linked: bit(0),
            block_checksum: bit(1),
            content_checksum: bit(2),
            content_size: bit(3),
            favor_dec_speed: bit(4),
            auto_flush: bit(5),
            single_pass: bit(6),
        })
    }

    /// Bytes of one block (at most).
    pub fn block_size(&self) -> usize {
        (64 << 10) << (2 * (self.block_size_id.clamp(4, 7) - 4))
    }
}

/// How a stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lz4Params {
    /// Legacy stream or frame.
    pub format: StreamFormat,
    /// Compression level, 1–12 (below 3 the fast compressor).
    pub level: u8,
    /// Frame preferences (all default for a legacy stream).
    pub frame: FramePrefs,
}

impl Lz4Params {
    /// Refuses values liblz4 would not take as recorded.
    pub fn check_ranges(&self) -> Result<(), String> {
        if !(1..=12).contains(&self.level) {
            return Err(format!("lz4 level {} is not 1–12", self.level));
        }
        match self.format {
            StreamFormat::Legacy if self.frame != FramePrefs::default() => {
                Err("a legacy stream has no frame preferences".into())
            }
            StreamFormat::Frame if !(4..=7).contains(&self.frame.block_size_id) => Err(format!(
                "lz4 frame block size id {} is not 4–7",
                self.frame.block_size_id
            )),
            _ => Ok(()),
        }
    }

    /// Largest block this stream holds, decompressed.
    pub fn block_size(&self) -> usize {
        match self.format {
            StreamFormat::Legacy => LEGACY_BLOCK,
            StreamFormat::Frame => self.frame.block_size(),
        }
    }

    fn preferences(&self, content_len: usize) -> Preferences {
        let f = &self.frame;
        Preferences {
            block_size_id: c_uint::from(f.block_size_id),
            block_mode: c_uint::from(!f.block_linked),
            content_checksum: c_uint::from(f.content_checksum),
            frame_type: 0,
            content_size: if f.content_size {
                content_len as c_ulonglong
            } else {
                0
            },
            dict_id: 0,
            block_checksum: c_uint::from(f.block_checksum),
            compression_level: c_int::from(self.level),
            auto_flush: c_uint::from(f.auto_flush),
            favor_dec_speed: c_uint::from(f.favor_dec_speed),
            reserved: [0; 3],
        }
    }
}

impl std::fmt::Display for Lz4Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.format {
            StreamFormat::Legacy => write!(f, "lz4 legacy level {}", self.level),
            StreamFormat::Frame => {
                let p = &self.frame;
                write!(
                    f,
                    "lz4 frame level {} block id {}{}{}{}{}{}{}{}",
                    self.level,
                    p.block_size_id,
                    if p.block_linked { " linked" } else { "" },
                    if p.block_checksum {
                        " block-checksum"
                    } else {
                        ""
                    },
                    if p.content_checksum {
                        " content-checksum"
                    } else {
                        ""
                    },
                    if p.content_size { " content-size" } else { "" },
                    if p.favor_dec_speed {
                        " favor-dec-speed"
                    } else {
                        ""
                    },
                    if p.auto_flush { " auto-flush" } else { "" },
                    if p.single_pass { " single-pass" } else { "" },
                )
            }
        }
    }
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Bytes one legacy block may take, compressed (`LZ4_compressBound` of 8 MiB).
fn legacy_bound() -> usize {
    LEGACY_BLOCK + LEGACY_BLOCK / 255 + 16
}

/// What a stream's own bytes say of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamInfo {
    /// Its format.
    pub format: StreamFormat,
    /// Its exact length in bytes.
    pub len: usize,
    /// Bytes it decompresses to.
    pub decompressed_len: usize,
    /// For a frame, what its descriptor records (level, favorDecSpeed and
    /// single pass unknown: false).
    pub frame: FramePrefs,
}

/// The lz4 stream at the start of `b`, if one is there and decompresses to
/// at most `cap` bytes. A legacy stream ends after a block shorter than
/// 8 MiB, or before the first bytes that are no valid block; a frame at its
/// end mark (and checksum). Decompresses the stream, 8 MiB at a time.
pub fn stream_info(b: &[u8], cap: usize) -> Option<StreamInfo> {
    if b.starts_with(&LEGACY_MAGIC) {
        legacy_info(b, cap)
    } else if b.starts_with(&FRAME_MAGIC) {
        frame_info(b, cap)
    } else {
        None
    }
}

fn legacy_info(b: &[u8], cap: usize) -> Option<StreamInfo> {
    let mut at = 4;
    let mut total = 0usize;
    let mut scratch = vec![0u8; LEGACY_BLOCK];
    while let Some(n) = le32(b, at).map(|n| n as usize) {
        if n == 0 || n > legacy_bound() || b.len() - at - 4 < n {
            break;
        }
        let Some(got) = decode_legacy_block(&b[at + 4..at + 4 + n], &mut scratch) else {
            break;
        };
        if total + got > cap {
            return None;
        }
        total += got;
        at += 4 + n;
        if got < LEGACY_BLOCK {
            break;
        }
    }
    (at > 4).then_some(StreamInfo {
        format: StreamFormat::Legacy,
        len: at,
        decompressed_len: total,
        frame: FramePrefs::default(),
    })
}

/// Decompresses one legacy block into `out`, returning the bytes it gave.
fn decode_legacy_block(src: &[u8], out: &mut [u8]) -> Option<usize> {
    // SAFETY: LZ4_decompress_safe reads at most src.len() and writes at
    // most out.len() bytes, whatever the input.
    let n = unsafe {
        lz4_sys::LZ4_decompress_safe(
            src.as_ptr() as *const c_char,
            out.as_mut_ptr() as *mut c_char,
            src.len().min(i32::MAX as usize) as c_int,
            out.len().min(i32::MAX as usize) as c_int,
        )
    };
    (n > 0).then_some(n as usize)
}

/// Parses a frame's descriptor: its preferences, or `None` for an invalid
/// or dictionary frame.
fn frame_descriptor(b: &[u8]) -> Option<FramePrefs> {
    let (flg, bd) = (*b.get(4)?, *b.get(5)?);
    if flg >> 6 != 1 || flg & 0x03 != 0 || bd & 0x8f != 0 {
        return None;
    }
    let id = (bd >> 4) & 7;
    if id < 4 {
        return None;
    }
    Some(FramePrefs {
        block_size_id: id,
        block_linked: flg & 0x20 == 0,
        block_checksum: flg & 0x10 != 0,
        content_size: flg & 0x08 != 0,
        content_checksum: flg & 0x04 != 0,
        favor_dec_speed: false,
        auto_flush: true,
        single_pass: false,
    })
}

/// A liblz4 frame decompression context, freed on drop.
struct Dctx(LZ4FDecompressionContext);

impl Dctx {
    fn new() -> Option<Self> {
        let mut ctx = LZ4FDecompressionContext(std::ptr::null_mut());
        // SAFETY: creates a context; checked for an error code.
        let e = unsafe { lz4_sys::LZ4F_createDecompressionContext(&mut ctx, LZ4F_VERSION) };
        // SAFETY: a pure function of the code.
        (unsafe { lz4_sys::LZ4F_isError(e) } == 0 && !ctx.0.is_null()).then_some(Dctx(ctx))
    }

    /// One `LZ4F_decompress` call: `(input taken, output given, hint)`,
    /// the hint 0 when the frame is complete.
    fn step(&mut self, src: &[u8], dst: &mut [u8]) -> Result<(usize, usize, usize), String> {
        let (mut sn, mut dn) = (src.len(), dst.len());
        // SAFETY: the context is live; src and dst are valid for the sizes
        // passed, which the call lowers to what it read and wrote.
        let r = unsafe {
            lz4_sys::LZ4F_decompress(
                self.0,
                dst.as_mut_ptr(),
                &mut dn,
                src.as_ptr(),
                &mut sn,
                std::ptr::null(),
            )
        };
        check(r)?;
        Ok((sn, dn, r))
    }
}

impl Drop for Dctx {
    fn drop(&mut self) {
        // SAFETY: the context was created by LZ4F_createDecompressionContext.
        unsafe {
            lz4_sys::LZ4F_freeDecompressionContext(self.0);
        }
    }
}

fn check(code: LZ4FErrorCode) -> Result<usize, String> {
    // SAFETY: pure functions of the code; the name is a static string.
    unsafe {
        if lz4_sys::LZ4F_isError(code) != 0 {
            let name = std::ffi::CStr::from_ptr(lz4_sys::LZ4F_getErrorName(code));
            return Err(format!("lz4 frame: {}", name.to_string_lossy()));
        }
    }
    Ok(code)
}

/// Walks the frame at the start of `b`, giving its decompressed bytes to
/// `sink` piece by piece; returns its length and decompressed length.
fn walk_frame(
    b: &[u8],
    cap: usize,
    scratch: &mut [u8],
    sink: &mut dyn FnMut(&[u8]) -> Result<(), String>,
) -> Result<(usize, usize), String> {
    frame_descriptor(b).ok_or("not an lz4 frame descriptor this decoder takes")?;
    let mut ctx = Dctx::new().ok_or("no lz4 frame context")?;
    let (mut at, mut total) = (0usize, 0usize);
    loop {
        let (took, gave, hint) = ctx.step(&b[at..], scratch)?;
        at += took;
        total += gave;
        if total > cap {
            return Err(format!("lz4 frame decompresses to more than {cap} bytes"));
        }
        sink(&scratch[..gave])?;
        if hint == 0 {
            return Ok((at, total));
        }
        if took == 0 && gave == 0 {
            return Err("lz4 frame truncated".into());
        }
    }
}

fn frame_info(b: &[u8], cap: usize) -> Option<StreamInfo> {
    let frame = frame_descriptor(b)?;
    let mut scratch = vec![0u8; 4 << 20];
    let (len, decompressed_len) = walk_frame(b, cap, &mut scratch, &mut |_| Ok(())).ok()?;
    Some(StreamInfo {
        format: StreamFormat::Frame,
        len,
        decompressed_len,
        frame,
    })
}

/// Decompresses the whole of `stream` (a legacy stream or one frame, no
/// byte more) into exactly `out.len()` bytes; fails on anything else.
pub fn decompress_exact(stream: &[u8], out: &mut [u8]) -> Result<(), String> {
    if stream.starts_with(&LEGACY_MAGIC) {
        let (mut at, mut pos) = (4usize, 0usize);
        while at < stream.len() {
            let n = le32(stream, at).ok_or("lz4 legacy stream truncated")? as usize;
            if n == 0 || n > legacy_bound() || stream.len() - at - 4 < n {
                return Err(format!("lz4 legacy block of {n} bytes at {at} is invalid"));
            }
            let room = (out.len() - pos).min(LEGACY_BLOCK);
            let got = decode_legacy_block(&stream[at + 4..at + 4 + n], &mut out[pos..pos + room])
                .ok_or_else(|| format!("malformed lz4 legacy block at {at}"))?;
            pos += got;
            at += 4 + n;
        }
        if at == 4 || pos != out.len() {
            return Err(format!(
                "lz4 legacy stream decodes to {pos} bytes, not {}",
                out.len()
            ));
        }
        Ok(())
    } else if stream.starts_with(&FRAME_MAGIC) {
        let mut ctx = Dctx::new().ok_or("no lz4 frame context")?;
        frame_descriptor(stream).ok_or("not an lz4 frame descriptor this decoder takes")?;
        let (mut at, mut pos) = (0usize, 0usize);
        loop {
            let (took, gave, hint) = ctx.step(&stream[at..], &mut out[pos..])?;
            at += took;
            pos += gave;
            if hint == 0 {
                break;
            }
            if took == 0 && gave == 0 {
                return Err(if pos == out.len() {
                    format!("lz4 frame decodes to more than {} bytes", out.len())
                } else {
                    "lz4 frame truncated".into()
                });
            }
        }
        if at != stream.len() {
            return Err(format!("{} bytes after the lz4 frame", stream.len() - at));
        }
        if pos != out.len() {
            return Err(format!(
                "lz4 frame decodes to {pos} bytes, not {}",
                out.len()
            ));
        }
        Ok(())
    } else {
        Err("no lz4 magic".into())
    }
}

/// Decompresses `stream` (exactly one stream) to at most `cap` bytes.
pub fn decompress(stream: &[u8], cap: usize) -> Result<Vec<u8>, String> {
    let info = stream_info(stream, cap).ok_or("no valid lz4 stream")?;
    if info.len != stream.len() {
        return Err(format!(
            "{} bytes after the lz4 stream",
            stream.len() - info.len
        ));
    }
    let mut out = vec![0u8; info.decompressed_len];
    decompress_exact(stream, &mut out)?;
    Ok(out)
}

/// A liblz4 frame compression context, freed on drop.
struct Cctx(LZ4FCompressionContext);

impl Drop for Cctx {
    fn drop(&mut self) {
        // SAFETY: the context was created by LZ4F_createCompressionContext.
        unsafe {
            lz4_sys::LZ4F_freeCompressionContext(self.0);
        }
    }
}

/// Compresses `src` with `params`, handing the stream to `sink` piece by
/// piece in order; stops as soon as `sink` returns false. Returns whether
/// the whole stream was handed over.
pub fn encode_with(
    params: &Lz4Params,
    src: &[u8],
    sink: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<bool, String> {
    params.check_ranges()?;
    match params.format {
        StreamFormat::Legacy => {
            if !sink(&LEGACY_MAGIC) {
                return Ok(false);
            }
            let mut buf = vec![0u8; 4 + legacy_bound()];
            for chunk in src.chunks(LEGACY_BLOCK) {
                let (s, d) = (
                    chunk.as_ptr() as *const c_char,
                    buf[4..].as_mut_ptr() as *mut c_char,
                );
                let (sn, cap) = (chunk.len() as c_int, (buf.len() - 4) as c_int);
                // SAFETY: src and dst are valid for the sizes passed; both
                // functions write at most `cap` bytes.
                let n = unsafe {
                    if params.level < 3 {
                        lz4_sys::LZ4_compress_fast(s, d, sn, cap, 1)
                    } else {
                        lz4_sys::LZ4_compress_HC(s, d, sn, cap, c_int::from(params.level))
                    }
                };
                if n <= 0 {
                    return Err("lz4 block compression failed".into());
                }
                buf[..4].copy_from_slice(&(n as u32).to_le_bytes());
                if !sink(&buf[..4 + n as usize]) {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        StreamFormat::Frame => {
            let prefs = params.preferences(src.len());
            if params.frame.single_pass {
                // SAFETY: pure function of its arguments.
                let bound = unsafe { LZ4F_compressFrameBound(src.len(), &prefs) };
                let mut buf = vec![0u8; check(bound)?];
                // SAFETY: buffers valid for the sizes passed.
                let n = check(unsafe {
                    LZ4F_compressFrame(buf.as_mut_ptr(), buf.len(), src.as_ptr(), src.len(), &prefs)
                })?;
                return Ok(sink(&buf[..n]));
            }
            let mut ctx = Cctx(LZ4FCompressionContext(std::ptr::null_mut()));
            // SAFETY: creates a context, checked below.
            check(unsafe { lz4_sys::LZ4F_createCompressionContext(&mut ctx.0, LZ4F_VERSION) })?;
            if ctx.0 .0.is_null() {
                return Err("no lz4 frame context".into());
            }
            let block = params.block_size();
            let p = &prefs as *const Preferences as *const LZ4FPreferences;
            // SAFETY: p points to a live 1.9.4 preferences struct.
            let bound = check(unsafe { lz4_sys::LZ4F_compressBound(block, p) })?;
            let mut buf = vec![0u8; bound.max(64)];
            // SAFETY: live context, buffer valid for its length.
            let n = check(unsafe {
                lz4_sys::LZ4F_compressBegin(ctx.0, buf.as_mut_ptr(), buf.len(), p)
            })?;
            if !sink(&buf[..n]) {
                return Ok(false);
            }
            for chunk in src.chunks(block) {
                // SAFETY: live context, buffers valid for their lengths; the
                // buffer holds the bound of one block.
                let n = check(unsafe {
                    lz4_sys::LZ4F_compressUpdate(
                        ctx.0,
                        buf.as_mut_ptr(),
                        buf.len(),
                        chunk.as_ptr(),
                        chunk.len(),
                        std::ptr::null(),
                    )
                })?;
                if !sink(&buf[..n]) {
                    return Ok(false);
                }
            }
            // SAFETY: as above.
            let n = check(unsafe {
                lz4_sys::LZ4F_compressEnd(ctx.0, buf.as_mut_ptr(), buf.len(), std::ptr::null())
            })?;
            Ok(sink(&buf[..n]))
        }
    }
}

/// Compresses `src` with `params` into a new stream.
pub fn compress(params: &Lz4Params, src: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    encode_with(params, src, &mut |b| {
        out.extend_from_slice(b);
        true
    })?;
    Ok(out)
}

/// Compresses `src` with `params` into `out`; `Ok(false)` unless the
/// stream fills `out` exactly.
pub fn compress_into(params: &Lz4Params, src: &[u8], out: &mut [u8]) -> Result<bool, String> {
    let mut at = 0usize;
    let whole = encode_with(params, src, &mut |b| {
        if b.len() > out.len() - at {
            return false;
        }
        out[at..at + b.len()].copy_from_slice(b);
        at += b.len();
        true
    })?;
    Ok(whole && at == out.len())
}

/// Whether `params` compress `plain` into exactly `stream`; stops at the
/// first piece that differs.
pub fn reproduces(params: &Lz4Params, plain: &[u8], stream: &[u8]) -> Result<bool, String> {
    let mut at = 0usize;
    let whole = encode_with(params, plain, &mut |b| {
        let same = stream.get(at..at + b.len()) == Some(b);
        at += b.len();
        same
    })?;
    Ok(whole && at == stream.len())
}

/// The parameters worth trying for a stream of `info`, most likely first:
/// levels 12 and 9, then the others; for a frame the descriptor fixes the
/// rest but favorDecSpeed (tried at levels 10–12) and whether it was
/// written in one pass (tried first when the content fits one block).
pub fn candidates(info: &StreamInfo) -> Vec<Lz4Params> {
    let levels = [12u8, 9, 1, 3, 4, 5, 6, 7, 8, 10, 11];
    let mut out = Vec::new();
    for level in levels {
        match info.format {
            StreamFormat::Legacy => out.push(Lz4Params {
                format: StreamFormat::Legacy,
                level,
                frame: FramePrefs::default(),
            }),
            StreamFormat::Frame => {
                let fits = info.decompressed_len < info.frame.block_size();
                let passes: &[bool] = if fits && !info.frame.block_linked {
                    &[true, false]
                } else {
                    &[false]
                };
                let favor: &[bool] = if level >= 10 {
                    &[false, true]
                } else {
                    &[false]
                };
                for &single_pass in passes {
                    for &favor_dec_speed in favor {
                        out.push(Lz4Params {
                            format: StreamFormat::Frame,
                            level,
                            frame: FramePrefs {
                                favor_dec_speed,
                                single_pass,
                                ..info.frame
                            },
                        });
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(seed: u32, n: usize) -> Vec<u8> {
        let words = [&b"kernel "[..], b"ramdisk ", b"init ", b"cpio\n", b"boot "];
        let mut x = seed | 1;
        let mut v = Vec::with_capacity(n + 16);
        while v.len() < n {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            v.extend_from_slice(words[(x % 5) as usize]);
            if x.is_multiple_of(3) {
                v.push((x >> 8) as u8);
            }
        }
        v.truncate(n);
        v
    }

    fn frame(level: u8, id: u8, linked: bool, sums: bool, single: bool) -> Lz4Params {
        Lz4Params {
            format: StreamFormat::Frame,
            level,
            frame: FramePrefs {
                block_size_id: id,
                block_linked: linked,
                block_checksum: sums,
                content_checksum: sums,
                content_size: sums,
                favor_dec_speed: false,
                auto_flush: true,
                single_pass: single,
            },
        }
    }

    #[test]
    fn streams_round_trip_and_are_found_exactly() {
        let plain = text(5, 300_000);
        let legacy = |level| Lz4Params {
            format: StreamFormat::Legacy,
            level,
            frame: FramePrefs::default(),
        };
        for p in [
            legacy(12),
            legacy(1),
            frame(9, 4, true, true, false),
            frame(12, 5, false, false, false),
            frame(1, 6, false, true, true),
        ] {
            let s = compress(&p, &plain).unwrap();
            assert!(reproduces(&p, &plain, &s).unwrap(), "{p}");
            let mut padded = s.clone();
            padded.extend_from_slice(&[0; 100]);
            let info = stream_info(&padded, 1 << 20).unwrap();
            assert_eq!(
                (info.len, info.decompressed_len),
                (s.len(), plain.len()),
                "{p}"
            );
            assert!(candidates(&info).contains(&p), "{p} {info:?}");
            assert_eq!(decompress(&s, 1 << 20).unwrap(), plain);
            assert!(decompress(&padded, 1 << 20).is_err());
            assert!(stream_info(&padded, 1000).is_none());
            let mut out = vec![0; s.len()];
            assert!(compress_into(&p, &plain, &mut out).unwrap());
            assert_eq!(out, s);
            assert!(!compress_into(&p, &plain, &mut vec![0; s.len() + 1]).unwrap());
            assert!(!reproduces(&p, &plain[1..], &s).unwrap());
            // Every truncation and a wrong size are refused.
            let mut o = vec![0; plain.len()];
            for cut in (0..s.len()).step_by(97).chain([s.len() - 1]) {
                assert!(decompress_exact(&s[..cut], &mut o).is_err(), "{p} {cut}");
            }
            assert!(decompress_exact(&s, &mut vec![0; plain.len() + 1]).is_err());
            assert!(decompress_exact(&s, &mut vec![0; plain.len() - 1]).is_err());
        }
    }

    #[test]
    fn frame_checksums_are_verified() {
        let plain = text(9, 100_000);
        let s = compress(&frame(9, 4, true, true, false), &plain).unwrap();
        let mut out = vec![0; plain.len()];
        let mut bad = s.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(decompress_exact(&bad, &mut out).is_err());
    }
}
