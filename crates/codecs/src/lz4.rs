//! LZ4 block compression into a fixed output size, as EROFS uses it.
//!
//! `mkfs.erofs` fills each physical cluster with `LZ4_compress_destSize`
//! (lz4) or `LZ4_compress_HC_destSize` (lz4hc): the compressor takes as
//! many input bytes as fit into the cluster, and the number it took is the
//! cluster's logical length. [`compress_dest_size`] calls the same
//! functions of the same library (liblz4 1.9.4, statically built) and so
//! rebuilds such a cluster bit for bit from its decompressed bytes and the
//! bytes that followed them.

use std::os::raw::{c_char, c_int, c_void};

// lz4-sys builds liblz4 from its bundled sources; the destSize functions
// are in that library but not declared by the crate.
use lz4_sys as _;

extern "C" {
    fn LZ4_versionNumber() -> c_int;
    fn LZ4_sizeofState() -> c_int;
    fn LZ4_sizeofStateHC() -> c_int;
    fn LZ4_compress_destSize(
        src: *const c_char,
        dst: *mut c_char,
        src_size: *mut c_int,
        target_dst_size: c_int,
    ) -> c_int;
    fn LZ4_compress_HC_destSize(
        state: *mut c_void,
        src: *const c_char,
        dst: *mut c_char,
        src_size: *mut c_int,
        target_dst_size: c_int,
        level: c_int,
    ) -> c_int;
    fn LZ4_decompress_safe(
        src: *const c_char,
        dst: *mut c_char,
        compressed_size: c_int,
        dst_capacity: c_int,
    ) -> c_int;
    fn LZ4_decompress_safe_partial(
        src: *const c_char,
        dst: *mut c_char,
        compressed_size: c_int,
        target_output_size: c_int,
        dst_capacity: c_int,
    ) -> c_int;
}

/// The liblz4 version this build compresses with, as `LZ4_versionNumber`
/// gives it (major × 10000 + minor × 100 + release): 10904 for 1.9.4.
pub fn library_version() -> u32 {
    // SAFETY: a pure function of the library.
    unsafe { LZ4_versionNumber() as u32 }
}

/// The liblz4 version romdelta is built with and records in packages.
pub const LIBRARY_VERSION: u32 = 10904;

/// Largest input one call takes (liblz4's `LZ4_MAX_INPUT_SIZE`).
pub const MAX_INPUT: usize = 0x7E00_0000;

/// Which compressor filled a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// `LZ4_compress_destSize` (the fast compressor, acceleration 1).
    Fast,
    /// `LZ4_compress_HC_destSize` at this level (1–12).
    Hc(u8),
}

impl Mode {
    /// The wire code: 0 for [`Mode::Fast`], the level for [`Mode::Hc`].
    pub fn code(self) -> u8 {
        match self {
            Mode::Fast => 0,
            Mode::Hc(l) => l,
        }
    }

    /// The mode of a wire code, if it names one (0–12).
    pub fn from_code(code: u8) -> Option<Mode> {
        match code {
            0 => Some(Mode::Fast),
            1..=12 => Some(Mode::Hc(code)),
            _ => None,
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Fast => f.write_str("lz4"),
            Mode::Hc(l) => write!(f, "lz4hc level {l}"),
        }
    }
}

/// A reusable compressor state (the HC state is about 256 KiB).
pub struct Compressor {
    state: Vec<u64>,
}

impl Default for Compressor {
    fn default() -> Self {
        Self::new()
    }
}

impl Compressor {
    /// A compressor with room for either state.
    pub fn new() -> Self {
        // SAFETY: pure functions of the library.
        let len = unsafe { LZ4_sizeofStateHC().max(LZ4_sizeofState()) } as usize;
        Compressor {
            state: vec![0u64; len.div_ceil(8)],
        }
    }

    /// Compresses as much of `src` as fits into `dst` (whose length is the
    /// target size) in `mode`, and returns `(compressed length, input bytes
    /// taken)`; `(0, 0)` if nothing fits. `src` longer than [`MAX_INPUT`] is
    /// cut to it.
    pub fn compress_dest_size(&mut self, mode: Mode, src: &[u8], dst: &mut [u8]) -> (usize, usize) {
        let src = &src[..src.len().min(MAX_INPUT)];
        let cap = dst.len().min(i32::MAX as usize) as c_int;
        let mut taken = src.len() as c_int;
        // SAFETY: src and dst are valid for the lengths passed; the state
        // buffer is at least LZ4_sizeofStateHC bytes and 8-aligned, which
        // LZ4_compress_HC_destSize initialises itself.
        let n = unsafe {
            match mode {
                Mode::Fast => LZ4_compress_destSize(
                    src.as_ptr() as *const c_char,
                    dst.as_mut_ptr() as *mut c_char,
                    &mut taken,
                    cap,
                ),
                Mode::Hc(level) => LZ4_compress_HC_destSize(
                    self.state.as_mut_ptr() as *mut c_void,
                    src.as_ptr() as *const c_char,
                    dst.as_mut_ptr() as *mut c_char,
                    &mut taken,
                    cap,
                    level as c_int,
                ),
            }
        };
        if n <= 0 {
            return (0, 0);
        }
        (n as usize, taken.max(0) as usize)
    }
}

/// Decompresses one LZ4 block `src` into exactly `out.len()` bytes; fails
/// unless the block is valid and decodes to exactly that many.
pub fn decompress_exact(src: &[u8], out: &mut [u8]) -> Result<(), String> {
    let n = decompress_block(src, out)?;
    if n != out.len() {
        return Err(format!("lz4 block decodes to {n} bytes, not {}", out.len()));
    }
    Ok(())
}

/// Decompresses one LZ4 block `src` into the start of `out`; returns the
/// bytes it decodes to. Fails unless the block is valid and fits `out`.
pub fn decompress_block(src: &[u8], out: &mut [u8]) -> Result<usize, String> {
    if src.len() > i32::MAX as usize || out.len() > i32::MAX as usize {
        return Err("block too large".into());
    }
    // SAFETY: LZ4_decompress_safe never reads past src.len() nor writes
    // past out.len(), whatever the bytes.
    let n = unsafe {
        LZ4_decompress_safe(
            src.as_ptr() as *const c_char,
            out.as_mut_ptr() as *mut c_char,
            src.len() as c_int,
            out.len() as c_int,
        )
    };
    if n < 0 {
        return Err("malformed lz4 block".into());
    }
    Ok(n as usize)
}

/// Decompresses the start of one LZ4 block `src` into `out`, stopping
/// once `out` is full (`LZ4_decompress_safe_partial`: the block may go on,
/// or be followed by padding); returns the bytes written.
pub fn decompress_partial(src: &[u8], out: &mut [u8]) -> Result<usize, String> {
    if src.len() > i32::MAX as usize || out.len() > i32::MAX as usize {
        return Err("block too large".into());
    }
    // SAFETY: LZ4_decompress_safe_partial reads at most src.len() bytes
    // and writes at most out.len() (its capacity), whatever the bytes.
    let n = unsafe {
        LZ4_decompress_safe_partial(
            src.as_ptr() as *const c_char,
            out.as_mut_ptr() as *mut c_char,
            src.len() as c_int,
            out.len() as c_int,
            out.len() as c_int,
        )
    };
    if n < 0 {
        return Err("malformed lz4 block".into());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Vec<u8> {
        let words = [
            &b"update "[..],
            b"engine ",
            b"block ",
            b"cluster ",
            b"erofs\n",
        ];
        let mut x = 7u32;
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
    fn the_bundled_library_is_the_recorded_one() {
        assert_eq!(library_version(), LIBRARY_VERSION);
    }

    #[test]
    fn dest_size_fills_a_block_and_round_trips() {
        let src = text(64 << 10);
        let mut c = Compressor::new();
        for mode in [Mode::Fast, Mode::Hc(9), Mode::Hc(12)] {
            let mut dst = vec![0u8; 4096];
            let (n, taken) = c.compress_dest_size(mode, &src, &mut dst);
            assert!(n > 4000 && n <= 4096, "{mode}: {n}");
            assert!(taken > 4096 && taken < src.len(), "{mode}: {taken}");
            let mut out = vec![0u8; taken];
            decompress_exact(&dst[..n], &mut out).unwrap();
            assert_eq!(out, src[..taken]);
            // Deterministic: the same call writes the same bytes.
            let mut again = vec![0u8; 4096];
            assert_eq!(c.compress_dest_size(mode, &src, &mut again), (n, taken));
            assert_eq!(again, dst);
            // Wrong sizes and every truncation are refused.
            assert!(decompress_exact(&dst[..n], &mut vec![0; taken + 1]).is_err());
            assert!(decompress_exact(&dst[..n], &mut vec![0; taken - 1]).is_err());
            for cut in 0..n {
                assert!(decompress_exact(&dst[..cut], &mut out).is_err());
            }
        }
        assert_eq!(Mode::from_code(Mode::Hc(12).code()), Some(Mode::Hc(12)));
        assert_eq!(Mode::from_code(13), None);
    }
}
