//! SOURCE_DEFLATE_REBUILD operation data: a file holding deflate streams
//! (a `.gz` file's gzip members, the entries of a zip, jar or apk, a zlib
//! stream) rebuilt from its decompressed form.
//!
//! A small change to what a deflate stream holds changes almost every
//! compressed byte after it. This operation
//! 1. replaces each source stream it names (offset, compressed and
//!    decompressed length) in its source bytes by the stream's decompressed
//!    bytes, giving the *source expanded* form;
//! 2. decodes an inner patch (REPLACE, SOURCE_ZSTD or SOURCE_BSDIFF_SPARSE
//!    data) against that into the *target expanded* form: the destination
//!    bytes with each destination stream it names replaced by the stream's
//!    decompressed bytes;
//! 3. compresses each destination stream again with zlib's raw deflate
//!    and the stream's recorded [`DeflateParams`], into exactly its
//!    recorded length, with the zlib version recorded in the header.
//!
//! Everything around the streams (gzip headers and CRC32/ISIZE trailers,
//! zip headers and central directory, streams that do not reproduce) is
//! bytes of the expanded forms, patched like any other.
//!
//! Wire form: `varint header_len · header · inner`; the header (specified
//! in docs/FORMAT.md) is checked against the source and destination sizes
//! and [`MAX_EXPANDED_LEN`] before anything is allocated. The memory an
//! applier needs for it is [`apply_memory`].

use crate::{FormatError, OpKind, Reader, Writer};
use romdelta_codecs::deflate::{self, DeflateParams, Strategy};

/// Most bytes of the source or the target expanded form.
pub const MAX_EXPANDED_LEN: u64 = 256 << 20;
/// Most streams on either side.
pub const MAX_STREAMS: u64 = 1 << 16;
/// Longest header.
pub const MAX_HEADER_LEN: u64 = 4 << 20;
const HEADER_VERSION: u8 = 1;

/// One deflate stream inside an operation's source or destination bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream {
    /// Its first byte's offset in the operation's source (or destination)
    /// bytes.
    pub offset: u64,
    /// Its exact compressed length.
    pub len: u64,
    /// Bytes it decompresses to.
    pub expanded_len: u64,
}

/// The header of a SOURCE_DEFLATE_REBUILD operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// zlib version ([`deflate::library_version`]) that reproduced the
    /// destination streams when the package was made.
    pub library: u32,
    /// Source streams, in ascending, disjoint order.
    pub src_streams: Vec<Stream>,
    /// Destination streams, in ascending, disjoint order, each with the
    /// parameters it is compressed with.
    pub dst_streams: Vec<(Stream, DeflateParams)>,
    /// Kind of the inner patch.
    pub inner: OpKind,
}

fn expanded_len<'a>(len: u64, streams: impl Iterator<Item = &'a Stream>) -> u64 {
    streams.fold(len, |n, s| n - s.len + s.expanded_len)
}

impl Header {
    /// Bytes of the source expanded form, for `src_len` source bytes.
    pub fn source_expanded_len(&self, src_len: u64) -> u64 {
        expanded_len(src_len, self.src_streams.iter())
    }

    /// Bytes of the target expanded form, for `dst_len` destination bytes.
    pub fn target_expanded_len(&self, dst_len: u64) -> u64 {
        expanded_len(dst_len, self.dst_streams.iter().map(|(s, _)| s))
    }

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(HEADER_VERSION);
        w.u32_le(self.library);
        let put = |w: &mut Writer, s: &Stream, end: &mut u64| {
            w.varint(s.offset - *end);
            w.varint(s.len);
            w.varint(s.expanded_len);
            *end = s.offset + s.len;
        };
        w.varint(self.src_streams.len() as u64);
        let mut end = 0;
        for s in &self.src_streams {
            put(&mut w, s, &mut end);
        }
        w.varint(self.dst_streams.len() as u64);
        let mut end = 0;
        for (s, p) in &self.dst_streams {
            put(&mut w, s, &mut end);
            w.u8(p.level);
            w.u8(p.window_bits);
            w.u8(p.mem_level);
            w.u8(p.strategy.code());
        }
        w.u8(self.inner.code());
        w.into_bytes()
    }

    fn decode(b: &[u8], src_len: u64, dst_len: u64) -> Result<Header, FormatError> {
        let bad = |what: &'static str, d: String| FormatError::invalid(what, d);
        let mut r = Reader::new(b);
        let v = r.u8("deflate rebuild header version")?;
        if v != HEADER_VERSION {
            return Err(bad(
                "deflate rebuild header version",
                format!("unknown version {v}"),
            ));
        }
        let library = r.u32_le("deflate rebuild library version")?;
        fn get(r: &mut Reader, end: &mut u64, within: u64) -> Result<Stream, FormatError> {
            let gap = r.varint("deflate stream offset")?;
            let len = r.varint("deflate stream length")?;
            let expanded_len = r.varint_max("deflate expanded length", MAX_EXPANDED_LEN)?;
            let offset = end.checked_add(gap);
            match offset.and_then(|o| o.checked_add(len).map(|e| (o, e))) {
                Some((offset, e)) if len > 0 && e <= within => {
                    *end = e;
                    Ok(Stream {
                        offset,
                        len,
                        expanded_len,
                    })
                }
                _ => Err(FormatError::invalid(
                    "deflate stream",
                    format!("a stream of {len} bytes {gap} bytes after the last lies past the {within} bytes"),
                )),
            }
        }
        // Each stream takes at least 3 bytes of the header.
        let n = r.count("deflate source stream count", 3, MAX_STREAMS)?;
        let mut src_streams = Vec::with_capacity(n);
        let mut end = 0;
        for _ in 0..n {
            src_streams.push(get(&mut r, &mut end, src_len)?);
        }
        let n = r.count("deflate stream count", 7, MAX_STREAMS)?;
        if n == 0 {
            return Err(bad("deflate stream count", "no stream to rebuild".into()));
        }
        let mut dst_streams = Vec::with_capacity(n);
        let mut end = 0;
        for _ in 0..n {
            let s = get(&mut r, &mut end, dst_len)?;
            let level = r.u8("deflate level")?;
            let window_bits = r.u8("deflate window bits")?;
            let mem_level = r.u8("deflate memLevel")?;
            let c = r.u8("deflate strategy")?;
            let strategy = Strategy::from_code(c)
                .ok_or_else(|| bad("deflate strategy", format!("unknown strategy {c}")))?;
            let p = DeflateParams {
                level,
                window_bits,
                mem_level,
                strategy,
            };
            p.check_ranges()
                .map_err(|e| bad("deflate parameters", e.to_string()))?;
            dst_streams.push((s, p));
        }
        let inner = OpKind::from_code(r.u8("deflate rebuild inner kind")?)?;
        if !matches!(
            inner,
            OpKind::Replace | OpKind::SourceZstd | OpKind::SourceBsdiffSparse
        ) {
            return Err(bad(
                "deflate rebuild inner kind",
                format!("{inner} cannot be an inner patch"),
            ));
        }
        r.finish("deflate rebuild header")?;
        let h = Header {
            library,
            src_streams,
            dst_streams,
            inner,
        };
        for (what, n) in [
            (
                "deflate source expanded form",
                h.source_expanded_len(src_len),
            ),
            (
                "deflate target expanded form",
                h.target_expanded_len(dst_len),
            ),
        ] {
            if n > MAX_EXPANDED_LEN {
                return Err(FormatError::TooLarge {
                    what,
                    value: n,
                    limit: MAX_EXPANDED_LEN,
                });
            }
        }
        Ok(h)
    }
}

/// Encodes SOURCE_DEFLATE_REBUILD data from its header and inner patch.
pub fn encode(header: &Header, inner: &[u8]) -> Vec<u8> {
    crate::codec::headed(&header.encode(), inner)
}

/// Splits SOURCE_DEFLATE_REBUILD data into its header (checked against
/// `src_len` source and `dst_len` destination bytes) and inner patch.
pub fn parse(data: &[u8], src_len: u64, dst_len: u64) -> Result<(Header, &[u8]), FormatError> {
    let (head, inner) = crate::codec::split_rebuild(
        data,
        [
            "deflate rebuild header length",
            "deflate rebuild header",
            "deflate rebuild inner patch",
        ],
        MAX_HEADER_LEN,
    )?;
    Ok((Header::decode(head, src_len, dst_len)?, inner))
}

/// Memory, in bytes, an applier needs to run an operation with `header`
/// reading `src_len` and writing `dst_len` bytes: the source and
/// destination bytes (and the destination's copy the applier writes
/// from), both expanded forms, zlib's largest compressor, and 16 MiB for
/// the rest.
pub fn apply_memory(header: &Header, src_len: u64, dst_len: u64) -> u64 {
    let zlib = header
        .dst_streams
        .iter()
        .map(|(_, p)| p.encoder_memory())
        .max()
        .unwrap_or(0)
        .max(deflate::DECODER_MEMORY);
    src_len
        + 2 * dst_len
        + header.source_expanded_len(src_len)
        + header.target_expanded_len(dst_len)
        + zlib
        + (16 << 20)
}

/// Refuses a header this build cannot reproduce: one recorded with a zlib
/// version other than the one built in.
pub fn check_library(header: &Header) -> Result<(), FormatError> {
    let have = deflate::library_version();
    if header.library != have {
        return Err(FormatError::invalid(
            "deflate rebuild library",
            format!(
                "the package was made with zlib {}, this romdelta has zlib {}: its deflate streams would not be rebuilt exactly",
                deflate::version_name(header.library),
                deflate::version_name(have)
            ),
        ));
    }
    Ok(())
}

/// `bytes` with each of `streams` replaced by `expand(i, stream, out)`,
/// which fills the stream's expanded bytes.
fn expand_into(
    bytes: &[u8],
    streams: &[Stream],
    out: &mut [u8],
    mut expand: impl FnMut(usize, &[u8], &mut [u8]) -> Result<(), FormatError>,
) -> Result<(), FormatError> {
    let (mut at, mut o) = (0usize, 0usize);
    for (i, s) in streams.iter().enumerate() {
        let (off, len, n) = (s.offset as usize, s.len as usize, s.expanded_len as usize);
        out[o..o + off - at].copy_from_slice(&bytes[at..off]);
        o += off - at;
        expand(i, &bytes[off..off + len], &mut out[o..o + n])?;
        o += n;
        at = off + len;
    }
    out[o..].copy_from_slice(&bytes[at..]);
    Ok(())
}

/// The expanded form of `bytes` whose deflate `streams` (in ascending,
/// disjoint order, within `bytes`) decompress to their recorded lengths.
pub fn expand(bytes: &[u8], streams: &[Stream]) -> Result<Vec<u8>, FormatError> {
    let n = expanded_len(bytes.len() as u64, streams.iter());
    let mut out = vec![0u8; n as usize];
    expand_into(bytes, streams, &mut out, |i, s, o| {
        deflate::decompress_into(s, o)
            .map_err(|e| FormatError::invalid("deflate source stream", format!("stream {i}: {e}")))
    })?;
    Ok(out)
}

/// Decodes SOURCE_DEFLATE_REBUILD data against `src` into exactly
/// `out.len()` bytes.
pub fn decode(data: &[u8], src: &[u8], out: &mut [u8]) -> Result<(), FormatError> {
    let (h, inner) = parse(data, src.len() as u64, out.len() as u64)?;
    check_library(&h)?;
    let mut target = vec![0u8; h.target_expanded_len(out.len() as u64) as usize];
    {
        let source = if h.inner == OpKind::Replace {
            Vec::new()
        } else {
            expand(src, &h.src_streams)?
        };
        crate::ops::decode(h.inner, inner, &source, &mut target)?;
    }
    // The destination from the target expanded form: the bytes between
    // streams copied, each stream compressed again into its place.
    let (mut at, mut t) = (0usize, 0usize);
    for (i, (s, p)) in h.dst_streams.iter().enumerate() {
        let (off, len, n) = (s.offset as usize, s.len as usize, s.expanded_len as usize);
        out[at..off].copy_from_slice(&target[t..t + off - at]);
        t += off - at;
        let exact = deflate::compress_into(p, &target[t..t + n], &mut out[off..off + len])
            .map_err(|e| FormatError::invalid("deflate rebuild", e.to_string()))?;
        if !exact {
            return Err(FormatError::invalid(
                "deflate rebuild",
                format!("stream {i}: {n} bytes do not compress into the package's {len}-byte stream with {p}"),
            ));
        }
        t += n;
        at = off + len;
    }
    out[at..].copy_from_slice(&target[t..]);
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn text(seed: u32, n: usize) -> Vec<u8> {
        let words = [
            "class ",
            "void ",
            "int ",
            "return;\n",
            "{ ",
            "} ",
            "public ",
        ];
        let mut x = seed | 1;
        let mut v = Vec::new();
        while v.len() < n {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            v.extend_from_slice(words[x as usize % words.len()].as_bytes());
            if x.is_multiple_of(5) {
                v.push((x >> 8) as u8);
            }
        }
        v.truncate(n);
        v
    }

    /// Source and destination bytes (two deflate streams each, between
    /// headers and trailers, whole blocks) and the operation data between
    /// them; the streams hold `n` bytes each.
    pub(crate) fn fixture_of(n: usize, inner: OpKind) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let (a, b) = (text(3, n), text(5, n));
        let (mut a2, mut b2) = (a.clone(), b.clone());
        a2[n / 3..n / 3 + 7].copy_from_slice(b"changed");
        b2[n / 2] ^= 0x21;
        let p = [DeflateParams::level(6), DeflateParams::level(9)];
        let layout = |parts: [&[u8]; 2], gap: usize| {
            let mut bytes = vec![0x1f; gap];
            let mut streams = Vec::new();
            for (i, plain) in parts.iter().enumerate() {
                let c = deflate::compress(&p[i], plain).unwrap();
                streams.push(Stream {
                    offset: bytes.len() as u64,
                    len: c.len() as u64,
                    expanded_len: plain.len() as u64,
                });
                bytes.extend_from_slice(&c);
                bytes.extend_from_slice(b"crc-isize");
            }
            bytes.resize(bytes.len().div_ceil(4096) * 4096, 0);
            (bytes, streams)
        };
        let (src, ss) = layout([&a, &b], 30);
        let (dst, ds) = layout([&a2, &b2], 57);
        let header = Header {
            library: deflate::library_version(),
            src_streams: ss.clone(),
            dst_streams: ds.iter().copied().zip(p).collect(),
            inner,
        };
        let se = expand(&src, &ss).unwrap();
        let te = expand(&dst, &ds).unwrap();
        let inner = match inner {
            OpKind::SourceZstd => crate::ops::encode_source_zstd(&se, &te, 3),
            _ => crate::ops::encode_replace(&te, 3),
        };
        (src, dst, encode(&header, &inner))
    }

    fn fixture() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        fixture_of(30_000, OpKind::SourceZstd)
    }

    #[test]
    fn changed_streams_are_rebuilt_exactly() {
        for kind in [OpKind::SourceZstd, OpKind::Replace] {
            let (src, dst, data) = fixture_of(30_000, kind);
            let mut out = vec![0xee; dst.len()];
            crate::ops::decode(OpKind::SourceDeflateRebuild, &data, &src, &mut out).unwrap();
            assert_eq!(out, dst);
        }
        let (src, dst, data) = fixture();
        assert!(data.len() * 10 < dst.len(), "{} bytes", data.len());
        let (h, _) = parse(&data, src.len() as u64, dst.len() as u64).unwrap();
        let m = apply_memory(&h, src.len() as u64, dst.len() as u64);
        assert!(m > 16 << 20 && m < 64 << 20, "{m}");
    }

    #[test]
    fn every_truncation_and_wrong_size_is_refused() {
        let (src, dst, data) = fixture();
        crate::testkit::refuses_cuts_and_sizes(decode, &src, dst.len(), &data, 100);
    }

    #[test]
    fn damaged_bytes_never_panic() {
        let (src, dst, data) = fixture();
        let at = 0..data.len().min(300);
        crate::testkit::damage_never_panics(decode, &src, dst.len(), &data, at, 200);
    }

    #[test]
    fn hostile_headers_are_refused_with_their_reason() {
        type Change = Box<dyn Fn(&mut Header)>;
        let cases: [(&str, Change); 10] = [
            (
                "zlib 1.2.13, this romdelta has",
                Box::new(|h| h.library = 1_021_300),
            ),
            (
                "do not compress",
                Box::new(|h| h.dst_streams[0].1.level = 1),
            ),
            (
                "do not compress",
                Box::new(|h| h.dst_streams[1].1.strategy = Strategy::Fixed),
            ),
            (
                "cannot be an inner patch",
                Box::new(|h| h.inner = OpKind::SourceCopy),
            ),
            (
                "past the",
                Box::new(|h| h.src_streams[1].offset = u64::MAX - 1),
            ),
            ("past the", Box::new(|h| h.dst_streams[0].0.len = 1 << 40)),
            (
                "deflate target expanded form",
                Box::new(|h| h.dst_streams[0].0.expanded_len = MAX_EXPANDED_LEN),
            ),
            (
                "deflate source expanded form",
                Box::new(|h| h.src_streams[0].expanded_len = MAX_EXPANDED_LEN),
            ),
            (
                "deflate parameters",
                Box::new(|h| h.dst_streams[0].1.window_bits = 8),
            ),
            ("no stream to rebuild", Box::new(|h| h.dst_streams.clear())),
        ];
        let (src, dst, data) = fixture();
        let (h, inner) = parse(&data, src.len() as u64, dst.len() as u64).unwrap();
        for (want, f) in cases {
            let mut h = h.clone();
            f(&mut h);
            let d = encode(&h, inner);
            let mut out = vec![0; dst.len()];
            let e = decode(&d, &src, &mut out).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
        // Source streams decompress to exactly their recorded lengths.
        let mut bad = h.clone();
        bad.src_streams[1].expanded_len += 1;
        let e = decode(&encode(&bad, inner), &src, &mut vec![0; dst.len()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("deflate source stream"), "{e}");
    }

    #[test]
    fn a_manifest_with_the_operation_is_version_5_and_names_zlib() {
        use crate::{BuildInfo, Codec, Extent, Manifest, Operation, PackageKind};
        use crate::{PartitionInfo, PartitionUpdate, BLOCK_SIZE};
        let info = PartitionInfo {
            size: 8 * BLOCK_SIZE,
            sha256: [3; 32],
        };
        let mut m = Manifest {
            kind: PackageKind::Delta,
            in_place: false,
            target_build: BuildInfo::default(),
            source_build: Some(BuildInfo::default()),
            data_len: 100,
            partitions: vec![PartitionUpdate {
                name: "system".into(),
                old: Some(info),
                new: info,
                operations: vec![Operation {
                    kind: OpKind::SourceDeflateRebuild,
                    src_extents: vec![Extent::new(0, 2), Extent::new(5, 1)],
                    dst_extents: vec![Extent::new(1, 1), Extent::new(4, 2)],
                    data_offset: 0,
                    data_length: 100,
                    data_sha256: [1; 32],
                    src_sha256: [2; 32],
                }],
                stages: vec![],
                source_reads: vec![],
            }],
            removed: vec![],
            codecs: vec![Codec::zlib()],
            apply_memory_mib: 0,
        };
        assert_eq!(m.format_version(), 5);
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
        assert_eq!(
            Codec::zlib().version_name(),
            deflate::version_name(deflate::library_version())
        );
        assert_eq!(Codec::zlib().built_in(), Codec::zlib());
        m.codecs.clear();
        let e = m.check().unwrap_err().to_string();
        assert!(e.contains("no zlib version"), "{e}");
    }

    /// The committed seed of the `deflate_rebuild_decode` fuzz target
    /// (input layout: u8 destination blocks − 1 · u16le source length ·
    /// source · data), checked here and written anew with
    /// `ROMDELTA_WRITE_FUZZ_SEEDS=1`.
    #[test]
    fn fuzz_seed_is_a_valid_operation() {
        let (src, dst, data) = fixture_of(5000, OpKind::SourceZstd);
        crate::testkit::check_decode_seed(decode, "deflate_rebuild_decode", &src, &dst, &data);
    }
}
