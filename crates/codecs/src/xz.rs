//! xz streams compressed again bit for bit, as Linux kernel images hold them.
//!
//! A bzImage's payload is one xz stream (`xz --check=crc32 --x86
//! --lzma2=preset,dict=32MiB`, one block). liblzma's encoder is
//! deterministic for given filters, preset and dictionary size, so the
//! stream comes out again byte for byte from its decompressed bytes and
//! those parameters ([`XzParams`]), with the same library version
//! ([`library_version`]; releases 5.2.5, 5.4.1 and 5.8.4 were measured to
//! agree on a kernel, but a package still records the one it was checked
//! with). [`candidates`] reads a stream's headers to propose the
//! parameters to try; the caller keeps the first that reproduces it.

use liblzma::stream::{Action, Check, Filters, LzmaOptions, Status, Stream};
use std::fmt;

/// The liblzma version this build compresses with, as
/// `lzma_version_number` gives it (major × 10000000 + minor × 10000 +
/// patch × 10 + stability; 50080042 for 5.8.4).
pub fn library_version() -> u32 {
    // SAFETY: a pure function of the library.
    unsafe { liblzma_sys::lzma_version_number() }
}

/// `major.minor.patch` of a `lzma_version_number`.
pub fn version_name(v: u32) -> String {
    format!("{}.{}.{}", v / 10_000_000, v / 10_000 % 1000, v / 10 % 1000)
}

/// Most memory the decoder may use: a 64 MiB dictionary (`xz -9`) and its
/// buffers.
pub const MAX_DECODER_MEMORY: u64 = 80 << 20;
/// Largest dictionary [`XzParams`] may name (that of `xz -9`).
pub const MAX_DICT_SIZE: u32 = 64 << 20;
/// Smallest dictionary liblzma accepts.
pub const MIN_DICT_SIZE: u32 = 4096;

/// The integrity check of an xz stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XzCheck {
    /// No check.
    None,
    /// CRC32 (what the kernel's build uses).
    Crc32,
    /// CRC64 (xz's default).
    Crc64,
    /// SHA-256.
    Sha256,
}

impl XzCheck {
    /// The check id of the xz format.
    pub fn code(self) -> u8 {
        match self {
            XzCheck::None => 0,
            XzCheck::Crc32 => 1,
            XzCheck::Crc64 => 4,
            XzCheck::Sha256 => 10,
        }
    }
    /// The check of an xz check id.
    pub fn from_code(c: u8) -> Option<Self> {
        [
            XzCheck::None,
            XzCheck::Crc32,
            XzCheck::Crc64,
            XzCheck::Sha256,
        ]
        .into_iter()
        .find(|k| k.code() == c)
    }
    fn liblzma(self) -> Check {
        match self {
            XzCheck::None => Check::None,
            XzCheck::Crc32 => Check::Crc32,
            XzCheck::Crc64 => Check::Crc64,
            XzCheck::Sha256 => Check::Sha256,
        }
    }
}

/// A branch/call/jump filter before LZMA2 (BCJ), start offset 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bcj {
    /// None.
    None,
    /// x86 (and x86-64).
    X86,
    /// PowerPC, big endian.
    PowerPc,
    /// IA-64.
    Ia64,
    /// ARM.
    Arm,
    /// ARM Thumb.
    ArmThumb,
    /// SPARC.
    Sparc,
    /// ARM64.
    Arm64,
    /// RISC-V.
    RiscV,
}

impl Bcj {
    const ALL: [Bcj; 9] = [
        Bcj::None,
        Bcj::X86,
        Bcj::PowerPc,
        Bcj::Ia64,
        Bcj::Arm,
        Bcj::ArmThumb,
        Bcj::Sparc,
        Bcj::Arm64,
        Bcj::RiscV,
    ];
    /// The xz filter id (0 for none).
    pub fn code(self) -> u8 {
        match self {
            Bcj::None => 0,
            Bcj::X86 => 0x04,
            Bcj::PowerPc => 0x05,
            Bcj::Ia64 => 0x06,
            Bcj::Arm => 0x07,
            Bcj::ArmThumb => 0x08,
            Bcj::Sparc => 0x09,
            Bcj::Arm64 => 0x0a,
            Bcj::RiscV => 0x0b,
        }
    }
    /// The filter of an xz filter id (0 for none).
    pub fn from_code(c: u8) -> Option<Self> {
        Bcj::ALL.into_iter().find(|b| b.code() == c)
    }
    fn push(self, f: &mut Filters) {
        match self {
            Bcj::None => {}
            Bcj::X86 => {
                f.x86();
            }
            Bcj::PowerPc => {
                f.powerpc();
            }
            Bcj::Ia64 => {
                f.ia64();
            }
            Bcj::Arm => {
                f.arm();
            }
            Bcj::ArmThumb => {
                f.arm_thumb();
            }
            Bcj::Sparc => {
                f.sparc();
            }
            Bcj::Arm64 => {
                f.arm64();
            }
            Bcj::RiscV => {
                f.riscv();
            }
        }
    }
}

/// Everything that decides the bytes liblzma's stream encoder writes for
/// given input: one block, no sizes in its header (what
/// `lzma_stream_encoder` does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct XzParams {
    /// The stream's integrity check.
    pub check: XzCheck,
    /// The BCJ filter before LZMA2.
    pub bcj: Bcj,
    /// LZMA2 preset level, 0 to 9.
    pub preset: u8,
    /// The preset's extreme variant (`-e`).
    pub extreme: bool,
    /// Dictionary size in bytes ([`MIN_DICT_SIZE`] to [`MAX_DICT_SIZE`]).
    pub dict_size: u32,
    /// Literal context bits (lc + lp ≤ 4).
    pub lc: u8,
    /// Literal position bits.
    pub lp: u8,
    /// Position bits (≤ 4).
    pub pb: u8,
}

impl fmt::Display for XzParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "xz {:?} {:?} preset {}{} dict {} KiB lc{} lp{} pb{}",
            self.check,
            self.bcj,
            self.preset,
            if self.extreme { "e" } else { "" },
            self.dict_size / 1024,
            self.lc,
            self.lp,
            self.pb
        )
    }
}

/// Why xz bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XzError(pub String);

impl fmt::Display for XzError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for XzError {}

fn err(what: impl Into<String>) -> XzError {
    XzError(what.into())
}

impl XzParams {
    /// Checks the ranges liblzma accepts.
    pub fn check_ranges(&self) -> Result<(), XzError> {
        if self.preset > 9 {
            return Err(err(format!("preset {} (0 to 9)", self.preset)));
        }
        if !(MIN_DICT_SIZE..=MAX_DICT_SIZE).contains(&self.dict_size) {
            return Err(err(format!(
                "dictionary of {} bytes ({MIN_DICT_SIZE} to {MAX_DICT_SIZE})",
                self.dict_size
            )));
        }
        if self.lc + self.lp > 4 || self.pb > 4 {
            return Err(err(format!(
                "lc{} lp{} pb{} (lc + lp ≤ 4, pb ≤ 4)",
                self.lc, self.lp, self.pb
            )));
        }
        Ok(())
    }

    fn preset_word(&self) -> u32 {
        u32::from(self.preset) | if self.extreme { 0x8000_0000 } else { 0 }
    }

    fn filters(&self) -> Result<Filters, XzError> {
        self.check_ranges()?;
        let mut o =
            LzmaOptions::new_preset(self.preset_word()).map_err(|e| err(format!("preset: {e}")))?;
        o.dict_size(self.dict_size)
            .literal_context_bits(u32::from(self.lc))
            .literal_position_bits(u32::from(self.lp))
            .position_bits(u32::from(self.pb));
        let mut f = Filters::new();
        self.bcj.push(&mut f);
        f.lzma2(&o);
        Ok(f)
    }

    /// Memory liblzma's encoder of these filters uses
    /// (`lzma_raw_encoder_memusage`), in bytes.
    pub fn encoder_memory(&self) -> Result<u64, XzError> {
        self.check_ranges()?;
        // SAFETY: zeroed is a valid lzma_options_lzma (integers, null
        // pointers); lzma_lzma_preset fills it; the filter array is
        // terminated and outlives the call.
        unsafe {
            let mut o: liblzma_sys::lzma_options_lzma = std::mem::zeroed();
            if liblzma_sys::lzma_lzma_preset(&mut o, self.preset_word()) != 0 {
                return Err(err("unsupported preset"));
            }
            o.dict_size = self.dict_size;
            o.lc = u32::from(self.lc);
            o.lp = u32::from(self.lp);
            o.pb = u32::from(self.pb);
            let mut filters = Vec::new();
            if self.bcj != Bcj::None {
                filters.push(liblzma_sys::lzma_filter {
                    id: u64::from(self.bcj.code()),
                    options: std::ptr::null_mut(),
                });
            }
            filters.push(liblzma_sys::lzma_filter {
                id: liblzma_sys::LZMA_FILTER_LZMA2,
                options: &mut o as *mut _ as *mut std::ffi::c_void,
            });
            filters.push(liblzma_sys::lzma_filter {
                id: liblzma_sys::LZMA_VLI_UNKNOWN,
                options: std::ptr::null_mut(),
            });
            match liblzma_sys::lzma_raw_encoder_memusage(filters.as_ptr()) {
                u64::MAX => Err(err("liblzma cannot tell the encoder's memory")),
                n => Ok(n),
            }
        }
    }
}

/// The one encoder every compressing function here runs: [`compress`],
/// [`compress_into`] (what an applier runs) and [`reproduces`] (what a
/// generator checks with) give the same bytes for the same parameters.
fn encoder(params: &XzParams) -> Result<Stream, XzError> {
    Stream::new_stream_encoder(&params.filters()?, params.check.liblzma())
        .map_err(|e| err(format!("encoder: {e}")))
}

/// Compresses `data` into one xz stream with `params`.
pub fn compress(params: &XzParams, data: &[u8]) -> Result<Vec<u8>, XzError> {
    let mut s = encoder(params)?;
    let mut out = Vec::with_capacity(data.len() / 4 + 4096);
    loop {
        if out.capacity() - out.len() < 1 << 16 {
            out.reserve(out.capacity().max(1 << 16));
        }
        let pos = s.total_in() as usize;
        match s.process_vec(&data[pos..], &mut out, Action::Finish) {
            Ok(Status::StreamEnd) => return Ok(out),
            Ok(_) => {}
            Err(e) => return Err(err(format!("encoder: {e}"))),
        }
    }
}

/// Compresses `data` into `out`, which the stream must fill exactly;
/// `Ok(false)` when it comes out longer or shorter (so not the stream the
/// caller wants). Needs no memory beyond the encoder's.
pub fn compress_into(params: &XzParams, data: &[u8], out: &mut [u8]) -> Result<bool, XzError> {
    let mut s = encoder(params)?;
    let mut spare = [0u8; 64];
    loop {
        let (i, o) = (s.total_in() as usize, s.total_out() as usize);
        let st = if o < out.len() {
            s.process(&data[i..], &mut out[o..], Action::Finish)
        } else {
            // Full: anything more means the stream is longer.
            let r = s.process(&data[i..], &mut spare, Action::Finish);
            if s.total_out() as usize > out.len() {
                return Ok(false);
            }
            r
        };
        match st {
            Ok(Status::StreamEnd) => return Ok(s.total_out() as usize == out.len()),
            Ok(_) => {}
            Err(e) => return Err(err(format!("encoder: {e}"))),
        }
    }
}

/// Whether compressing `data` with `params` gives exactly `expected`;
/// compares as it compresses and stops at the first byte that differs, so
/// a wrong guess costs little.
pub fn reproduces(params: &XzParams, data: &[u8], expected: &[u8]) -> Result<bool, XzError> {
    let mut s = encoder(params)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let (i, o) = (s.total_in() as usize, s.total_out() as usize);
        let st = s
            .process(&data[i..], &mut buf, Action::Finish)
            .map_err(|e| err(format!("encoder: {e}")))?;
        let n = s.total_out() as usize - o;
        if expected.get(o..o + n) != Some(&buf[..n]) {
            return Ok(false);
        }
        if st == Status::StreamEnd {
            return Ok(s.total_out() as usize == expected.len());
        }
    }
}

/// Decompresses `stream`, which must be exactly one xz stream (no padding,
/// nothing after it) that expands to at most `max_out` bytes, with the
/// decoder's memory bounded by [`MAX_DECODER_MEMORY`]. Its check is
/// verified. Output grows as it is produced, never past `max_out`.
pub fn decompress_exact(stream: &[u8], max_out: usize) -> Result<Vec<u8>, XzError> {
    let mut s = Stream::new_stream_decoder(MAX_DECODER_MEMORY, 0)
        .map_err(|e| err(format!("decoder: {e}")))?;
    let mut out: Vec<u8> = Vec::new();
    loop {
        let room = out.capacity() - out.len();
        if room == 0 {
            if out.len() >= max_out {
                // One more byte would tell whether the stream goes on.
                let mut probe = [0u8; 1];
                let i = s.total_in() as usize;
                match s.process(&stream[i..], &mut probe, Action::Finish) {
                    Ok(Status::StreamEnd) if s.total_out() as usize == out.len() => {
                        return finish(&s, stream, out)
                    }
                    Err(e) => return Err(err(format!("xz stream: {e}"))),
                    _ => {
                        return Err(err(format!(
                            "xz stream expands past the limit of {max_out} bytes"
                        )))
                    }
                }
            }
            let grow = out.capacity().clamp(1 << 16, 16 << 20);
            out.reserve_exact(grow.min(max_out - out.len()));
        }
        let i = s.total_in() as usize;
        let before = s.total_out();
        match s.process_vec(&stream[i..], &mut out, Action::Finish) {
            Ok(Status::StreamEnd) => return finish(&s, stream, out),
            Ok(_) => {
                if s.total_in() as usize == stream.len() && s.total_out() == before {
                    return Err(err("xz stream is truncated"));
                }
            }
            Err(liblzma::stream::Error::MemLimit) => {
                return Err(err(format!(
                    "xz stream needs more than {} MiB to decode",
                    MAX_DECODER_MEMORY >> 20
                )))
            }
            Err(e) => return Err(err(format!("xz stream: {e}"))),
        }
    }
}

/// Decompresses `stream`, which must be exactly one xz stream, into `out`,
/// which it must fill exactly; the check is verified and the decoder's
/// memory bounded by [`MAX_DECODER_MEMORY`].
pub fn decompress_into(stream: &[u8], out: &mut [u8]) -> Result<(), XzError> {
    let mut s = Stream::new_stream_decoder(MAX_DECODER_MEMORY, 0)
        .map_err(|e| err(format!("decoder: {e}")))?;
    let mut probe = [0u8; 1];
    loop {
        let (i, o) = (s.total_in() as usize, s.total_out() as usize);
        let before = (s.total_in(), s.total_out());
        let r = if o < out.len() {
            s.process(&stream[i..], &mut out[o..], Action::Finish)
        } else {
            s.process(&stream[i..], &mut probe, Action::Finish)
        };
        if s.total_out() as usize > out.len() {
            return Err(err(format!(
                "xz stream expands to more than {} bytes",
                out.len()
            )));
        }
        match r {
            Ok(Status::StreamEnd) if s.total_out() as usize == out.len() => {
                return finish(&s, stream, Vec::new()).map(drop)
            }
            Ok(Status::StreamEnd) => {
                return Err(err(format!(
                    "xz stream expands to {} bytes, not {}",
                    s.total_out(),
                    out.len()
                )))
            }
            Ok(_) if (s.total_in(), s.total_out()) == before => {
                return Err(err("xz stream is truncated"))
            }
            Ok(_) => {}
            Err(liblzma::stream::Error::MemLimit) => {
                return Err(err(format!(
                    "xz stream needs more than {} MiB to decode",
                    MAX_DECODER_MEMORY >> 20
                )))
            }
            Err(e) => return Err(err(format!("xz stream: {e}"))),
        }
    }
}

fn finish(s: &Stream, stream: &[u8], out: Vec<u8>) -> Result<Vec<u8>, XzError> {
    if s.total_in() as usize != stream.len() {
        return Err(err(format!(
            "{} bytes follow the xz stream",
            stream.len() - s.total_in() as usize
        )));
    }
    Ok(out)
}

const MAGIC: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0];
const FOOTER_MAGIC: [u8; 2] = [b'Y', b'Z'];

/// What [`read_headers`] learns from a stream's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamInfo {
    /// The check.
    pub check: XzCheck,
    /// The BCJ filter of the first block.
    pub bcj: Bcj,
    /// The first block's LZMA2 dictionary size.
    pub dict_size: u32,
    /// `(lc, lp, pb)` of the first LZMA2 chunk, when it is compressed.
    pub props: Option<(u8, u8, u8)>,
    /// Whether the block header records its sizes (liblzma's single-call
    /// stream encoder never does).
    pub sizes_in_header: bool,
}

/// Reads the stream header and the first block header of the xz stream at
/// the start of `b` (bytes may follow).
pub fn read_headers(b: &[u8]) -> Result<StreamInfo, XzError> {
    let short = || err("xz headers are truncated");
    if b.len() < 12 || b[..6] != MAGIC {
        return Err(err("no xz stream header"));
    }
    if b[6] != 0 || crc32(&b[6..8]) != u32::from_le_bytes(b[8..12].try_into().unwrap()) {
        return Err(err("xz stream flags are damaged"));
    }
    let check = XzCheck::from_code(b[7]).ok_or_else(|| err("unsupported xz check"))?;
    let h = &b[12..];
    let size = (usize::from(*h.first().ok_or_else(short)?) + 1) * 4;
    if h[0] == 0 {
        return Err(err("xz stream has no block"));
    }
    let hb = h.get(..size).ok_or_else(short)?;
    if crc32(&hb[..size - 4]) != u32::from_le_bytes(hb[size - 4..].try_into().unwrap()) {
        return Err(err("xz block header is damaged"));
    }
    let flags = hb[1];
    let nfilters = usize::from(flags & 3) + 1;
    let mut at = 2;
    let vli = |at: &mut usize| -> Result<u64, XzError> {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let byte = *hb.get(*at).ok_or_else(short)?;
            *at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
            if shift > 56 {
                return Err(err("xz varint too long"));
            }
        }
    };
    let sizes_in_header = flags & 0xc0 != 0;
    if flags & 0x40 != 0 {
        vli(&mut at)?;
    }
    if flags & 0x80 != 0 {
        vli(&mut at)?;
    }
    let mut filters = Vec::new();
    for _ in 0..nfilters {
        let id = vli(&mut at)?;
        let n = vli(&mut at)? as usize;
        filters.push((id, n, at));
        at += n;
    }
    let props = |k: usize| {
        hb.get(filters[k].2..filters[k].2 + filters[k].1)
            .ok_or_else(short)
    };
    let (bcj, lz) = match filters.len() {
        1 => (Bcj::None, 0),
        2 => {
            let bcj = u8::try_from(filters[0].0)
                .ok()
                .and_then(Bcj::from_code)
                .filter(|&b| b != Bcj::None)
                .ok_or_else(|| err("first filter is no BCJ filter"))?;
            let p = props(0)?;
            if !(p.is_empty() || p == [0, 0, 0, 0]) {
                return Err(err("BCJ filter with a start offset"));
            }
            (bcj, 1)
        }
        _ => return Err(err("more than two filters")),
    };
    if filters[lz].0 != 0x21 {
        return Err(err("last filter is not LZMA2"));
    }
    let p = props(lz)?;
    if p.len() != 1 || p[0] > 40 {
        return Err(err("LZMA2 properties are damaged"));
    }
    let dict_size = if p[0] == 40 {
        u32::MAX
    } else {
        (2 | u32::from(p[0] & 1)) << (p[0] / 2 + 11)
    };
    // The first LZMA2 chunk: control (0xe0..: dictionary reset, new
    // properties, compressed), 2 + 2 size bytes, the properties byte.
    let chunk = h.get(size..size + 6);
    let props = chunk.and_then(|c| {
        if c[0] < 0xe0 || c[5] >= 9 * 5 * 5 {
            return None;
        }
        let (lc, rest) = (c[5] % 9, c[5] / 9);
        Some((lc, rest % 5, rest / 5))
    });
    Ok(StreamInfo {
        check,
        bcj,
        dict_size,
        props,
        sizes_in_header,
    })
}

/// The length of the xz stream at the start of `b`, from its index and
/// footer, when `b` holds the whole stream followed by anything: found by
/// decoding. `None` unless it decodes to at most `max_out` bytes.
pub fn stream_len(b: &[u8], max_out: usize) -> Option<usize> {
    let mut s = Stream::new_stream_decoder(MAX_DECODER_MEMORY, 0).ok()?;
    let mut sink = vec![0u8; 1 << 20];
    loop {
        let i = s.total_in() as usize;
        let before = (s.total_in(), s.total_out());
        match s.process(&b[i..], &mut sink, Action::Run) {
            Ok(Status::StreamEnd) => {
                let n = s.total_in() as usize;
                let fits = s.total_out() <= max_out as u64;
                return (fits && n >= 12 && b[n - 2..n] == FOOTER_MAGIC).then_some(n);
            }
            Ok(_) if (s.total_in(), s.total_out()) == before => return None,
            Ok(_) if s.total_out() > max_out as u64 => return None,
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// Parameters to try, in order, for a stream whose headers are `info`:
/// its check, filter, dictionary and properties with presets 6, 9, 6e,
/// 9e, then 0 to 5, 7, 8 (the usual ones first).
pub fn candidates(info: &StreamInfo) -> Vec<XzParams> {
    if info.sizes_in_header || !(MIN_DICT_SIZE..=MAX_DICT_SIZE).contains(&info.dict_size) {
        return Vec::new();
    }
    let (lc, lp, pb) = info.props.unwrap_or((3, 0, 2));
    let mut order: Vec<(u8, bool)> = vec![(6, false), (9, false), (6, true), (9, true)];
    order.extend((0..=5).map(|p| (p, false)));
    order.extend([(7, false), (8, false)]);
    order
        .into_iter()
        .map(|(preset, extreme)| XzParams {
            check: info.check,
            bcj: info.bcj,
            preset,
            extreme,
            dict_size: info.dict_size,
            lc,
            lp,
            pb,
        })
        .filter(|p| p.check_ranges().is_ok())
        .collect()
}

/// CRC32 (IEEE), as xz's headers use it.
fn crc32(b: &[u8]) -> u32 {
    let mut c = !0u32;
    for &x in b {
        c ^= u32::from(x);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Machine-code-like bytes: call/jump opcodes with nearby targets,
    /// repeated instruction runs, some noise.
    fn code(seed: u32, n: usize) -> Vec<u8> {
        let mut x = seed | 1;
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            match x % 5 {
                0 => {
                    v.push(0xe8);
                    v.extend_from_slice(&((x >> 8) as i32 % 4096 - v.len() as i32).to_le_bytes());
                }
                1 => v.extend_from_slice(&[0x48, 0x89, 0xe5, 0x55]),
                2 => v.extend_from_slice(&[0x48, 0x8b, 0x45, (x >> 24) as u8]),
                3 => v.extend_from_slice(&[0xc3, 0x90, 0x90]),
                _ => v.push((x >> 16) as u8),
            }
        }
        v.truncate(n);
        v
    }

    fn kernel_like() -> XzParams {
        XzParams {
            check: XzCheck::Crc32,
            bcj: Bcj::X86,
            preset: 6,
            extreme: false,
            dict_size: 1 << 20,
            lc: 3,
            lp: 0,
            pb: 2,
        }
    }

    #[test]
    fn streams_are_found_again_from_their_headers() {
        let data = code(7, 200_000);
        for (preset, extreme, bcj) in [
            (6, false, Bcj::X86),
            (9, true, Bcj::None),
            (2, false, Bcj::Arm64),
        ] {
            let p = XzParams {
                preset,
                extreme,
                bcj,
                ..kernel_like()
            };
            let s = compress(&p, &data).unwrap();
            let info = read_headers(&s).unwrap();
            assert_eq!(
                (info.check, info.bcj, info.dict_size),
                (p.check, bcj, p.dict_size)
            );
            assert_eq!(info.props, Some((3, 0, 2)));
            let found = candidates(&info)
                .into_iter()
                .find(|c| reproduces(c, &data, &s).unwrap())
                .unwrap();
            assert_eq!(compress(&found, &data).unwrap(), s);
            assert!(!reproduces(&found, &data, &s[..s.len() - 1]).unwrap());
            assert!(!reproduces(&found, &data[1..], &s).unwrap());
            // Presets 6 to 9 differ only in their dictionary, which the
            // stream names: 9e with a given dictionary is 6e.
            assert_eq!(found.extreme, extreme);
            assert_eq!(decompress_exact(&s, data.len()).unwrap(), data);
            let mut out = vec![0u8; s.len()];
            assert!(compress_into(&p, &data, &mut out).unwrap());
            assert_eq!(out, s);
            assert!(!compress_into(&p, &data, &mut vec![0; s.len() - 1]).unwrap());
            assert!(!compress_into(&p, &data, &mut vec![0; s.len() + 1]).unwrap());
            let mut padded = s.clone();
            padded.extend_from_slice(b"after");
            assert_eq!(stream_len(&padded, data.len()), Some(s.len()));
            assert_eq!(stream_len(&padded, data.len() - 1), None);
        }
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        let data = code(3, 20_000);
        let s = compress(&kernel_like(), &data).unwrap();
        for cut in 0..s.len() {
            assert!(decompress_exact(&s[..cut], 1 << 20).is_err(), "cut {cut}");
            assert_eq!(stream_len(&s[..cut], 1 << 20), None, "cut {cut}");
        }
        for cut in (0..s.len()).step_by(3) {
            let mut out = vec![0; data.len()];
            assert!(decompress_into(&s[..cut], &mut out).is_err(), "cut {cut}");
        }
        let mut out = vec![0; data.len()];
        decompress_into(&s, &mut out).unwrap();
        assert_eq!(out, data);
        for n in [data.len() - 1, data.len() + 1] {
            assert!(decompress_into(&s, &mut vec![0; n]).is_err(), "{n}");
        }
        let mut more = s.clone();
        more.push(0);
        assert!(decompress_into(&more, &mut out).is_err());
        assert!(decompress_exact(&more, 1 << 20).is_err());
        // One byte short of the output limit, and exactly at it.
        assert!(decompress_exact(&s, data.len() - 1).is_err());
        assert_eq!(decompress_exact(&s, data.len()).unwrap(), data);
        // Damage anywhere fails (the check or the structure).
        for i in (0..s.len()).step_by(11) {
            let mut d = s.clone();
            d[i] ^= 0x21;
            assert!(decompress_exact(&d, 1 << 20).is_err(), "byte {i}");
        }
    }

    #[test]
    fn encoder_memory_is_what_liblzma_says() {
        let p = XzParams {
            dict_size: 32 << 20,
            ..kernel_like()
        };
        let m = p.encoder_memory().unwrap();
        assert!((300 << 20..450 << 20).contains(&m), "{m}");
        assert!(XzParams { dict_size: 1, ..p }.encoder_memory().is_err());
        assert!(XzParams { preset: 10, ..p }.check_ranges().is_err());
        assert!(XzParams { lc: 4, lp: 1, ..p }.check_ranges().is_err());
        assert_eq!(version_name(50080042), "5.8.4");
        assert!(library_version() >= 50020000);
    }
}
