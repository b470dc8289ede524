//! Checks the tests of every operation-data decoder share: each cut of the
//! data and each wrong destination size refused, damaged bytes never a
//! panic, and the committed fuzz seed a valid operation.

use crate::placement::Placement;
use crate::{FormatError, OpKind};

/// An operation-data decoder: data, source bytes, destination.
pub(crate) type Decode = fn(&[u8], &[u8], &mut [u8]) -> Result<(), FormatError>;

/// Every truncation of `data` and destinations a block shorter, a block
/// longer and a byte longer than `dst_len` are refused; so is a source of
/// only `src_cut` bytes, for bytes that lie past it.
pub(crate) fn refuses_cuts_and_sizes(
    decode: Decode,
    src: &[u8],
    dst_len: usize,
    data: &[u8],
    src_cut: usize,
) {
    for cut in 0..data.len() {
        let mut out = vec![0; dst_len];
        assert!(decode(&data[..cut], src, &mut out).is_err(), "cut {cut}");
    }
    for len in [dst_len - 4096, dst_len + 4096, dst_len + 1] {
        assert!(decode(data, src, &mut vec![0; len]).is_err(), "{len}");
    }
    let e = decode(data, &src[..src_cut], &mut vec![0; dst_len]).unwrap_err();
    assert!(e.to_string().contains("past the"), "{e}");
}

/// Each of the data bytes `at` flipped never panics; with source byte
/// `src_byte` flipped the decode fails.
pub(crate) fn damage_never_panics(
    decode: Decode,
    src: &[u8],
    dst_len: usize,
    data: &[u8],
    at: impl Iterator<Item = usize>,
    src_byte: usize,
) {
    let mut out = vec![0; dst_len];
    for i in at {
        let mut d = data.to_vec();
        d[i] ^= 0x5a;
        let _ = decode(&d, src, &mut out);
    }
    let mut s = src.to_vec();
    s[src_byte] ^= 0xff;
    assert!(decode(data, &s, &mut out).is_err());
}

/// `data` decodes against `src` into `dst`, and is the committed seed of
/// fuzz target `target` in its layout (u8 destination blocks − 1 · u16le
/// source length · source · data), written anew with
/// `ROMDELTA_WRITE_FUZZ_SEEDS=1`.
pub(crate) fn check_decode_seed(decode: Decode, target: &str, src: &[u8], dst: &[u8], data: &[u8]) {
    let mut out = vec![0; dst.len()];
    decode(data, src, &mut out).unwrap();
    assert!(out == dst, "the seed decodes to its destination");
    let mut seed = vec![(dst.len() / 4096 - 1) as u8];
    seed.extend_from_slice(&(src.len() as u16).to_le_bytes());
    seed.extend_from_slice(src);
    seed.extend_from_slice(data);
    crate::check_fuzz_seed(target, "seed-1", &seed);
}

/// Source and destination bytes of a one-stream rebuild, a few blocks
/// each: `old`, and `old` with `word` written at a third and a byte flipped
/// at half, each compressed by `compress` and placed after 700 (source)
/// and 300 (destination) other bytes, the destination's stream followed by
/// a tail. Returns them, the streams' placement with `inner`, and the inner
/// patch of that kind (SOURCE_ZSTD, else REPLACE) between the expanded
/// forms.
pub(crate) fn stream_case(
    old: Vec<u8>,
    word: &[u8],
    compress: impl Fn(&[u8]) -> Vec<u8>,
    inner: OpKind,
) -> (Vec<u8>, Vec<u8>, Placement, Vec<u8>) {
    let n = old.len();
    let mut new = old.clone();
    new[n / 3..n / 3 + word.len()].copy_from_slice(word);
    new[n / 2] ^= 0x11;
    let (so, ss) = (700, compress(&old));
    let (to, ts) = (300, compress(&new));
    let mut src = vec![0x5a; so];
    src.extend_from_slice(&ss);
    src.resize(src.len().div_ceil(4096) * 4096, 0x33);
    let mut dst = vec![0xa7; to];
    dst.extend_from_slice(&ts);
    dst.extend_from_slice(b"tail");
    dst.resize(dst.len().div_ceil(4096) * 4096, 0);
    let at = Placement {
        src_offset: so as u64,
        src_stream_len: ss.len() as u64,
        src_decompressed_len: n as u64,
        prefix_len: to as u64,
        decompressed_len: n as u64,
        stream_len: ts.len() as u64,
        inner,
    };
    let expand =
        |b: &[u8], at: usize, len: usize, mid: &[u8]| [&b[..at], mid, &b[at + len..]].concat();
    let se = expand(&src, so, ss.len(), &old);
    let te = expand(&dst, to, ts.len(), &new);
    let patch = match inner {
        OpKind::SourceZstd => crate::ops::encode_source_zstd(&se, &te, 3),
        _ => crate::ops::encode_replace(&te, 3),
    };
    (src, dst, at, patch)
}
