//! SOURCE_LZ4_REBUILD operation data: one lz4 stream in the destination
//! (a legacy `lz4 -l` stream of a kernel or ramdisk, or an lz4 frame)
//! rebuilt from its decompressed bytes.
//!
//! Like [`crate::xz_rebuild`], this operation
//! 1. decompresses the lz4 stream it names in its source bytes, giving the
//!    *source expanded* form: the source bytes before the stream, the
//!    decompressed stream, the source bytes after it;
//! 2. decodes an inner patch (REPLACE, SOURCE_ZSTD or SOURCE_BSDIFF_SPARSE
//!    data) against that into the *target expanded* form: `prefix_len`
//!    destination bytes, the `decompressed_len` bytes of the new stream,
//!    the destination bytes after the stream;
//! 3. compresses the new stream again with the recorded parameters
//!    ([`Lz4Params`]) and liblz4 version, into exactly `stream_len` bytes.
//!
//! Wire form: `varint header_len · header · inner`; the header (specified
//! in docs/FORMAT.md) is checked against the source and destination sizes
//! and [`MAX_EXPANDED_LEN`] before anything is allocated. The memory an
//! applier needs for it is [`apply_memory`].

use crate::placement::{Labels, Placement};
use crate::{FormatError, Reader, Writer};
use romdelta_codecs::lz4::{self, LIBRARY_VERSION};
use romdelta_codecs::lz4_stream::{self, FramePrefs, Lz4Params, StreamFormat};

/// Most bytes of the source or the target expanded form.
pub const MAX_EXPANDED_LEN: u64 = 256 << 20;
/// Longest header.
pub const MAX_HEADER_LEN: u64 = 128;
const HEADER_VERSION: u8 = 1;

/// The names errors give the stream's placement fields.
const LABELS: Labels = Labels {
    src_offset: "lz4 source offset",
    src_stream_len: "lz4 source stream length",
    src_decompressed_len: "lz4 source decompressed length",
    prefix_len: "lz4 prefix length",
    decompressed_len: "lz4 decompressed length",
    stream_len: "lz4 stream length",
    inner: "lz4 rebuild inner kind",
    src_stream: "lz4 source stream",
    stream: "lz4 stream",
    source_expanded: "lz4 source expanded form",
    target_expanded: "lz4 target expanded form",
    rebuild: "lz4 rebuild",
};

/// The header of a SOURCE_LZ4_REBUILD operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// liblz4 version (`LZ4_versionNumber`) that reproduced the stream
    /// when the package was made.
    pub library: u32,
    /// The parameters the new stream is compressed with.
    pub params: Lz4Params,
    /// Where the streams lie and the inner patch kind.
    pub at: Placement,
}

impl Header {
    /// Bytes of the source expanded form, for `src_len` source bytes.
    pub fn source_expanded_len(&self, src_len: u64) -> u64 {
        self.at.source_expanded_len(src_len)
    }

    /// Bytes of the target expanded form, for `dst_len` destination bytes.
    pub fn target_expanded_len(&self, dst_len: u64) -> u64 {
        self.at.target_expanded_len(dst_len)
    }

    fn encode(&self) -> Vec<u8> {
        let p = &self.params;
        let mut w = Writer::new();
        w.u8(HEADER_VERSION);
        w.u32_le(self.library);
        w.u8(p.format.code());
        w.u8(p.level);
        w.u8(p.frame.block_size_id);
        w.u8(p.frame.flags());
        self.at.write(&mut w);
        w.into_bytes()
    }

    fn decode(b: &[u8], src_len: u64, dst_len: u64) -> Result<Header, FormatError> {
        let bad = |what: &'static str, d: String| FormatError::invalid(what, d);
        let mut r = Reader::new(b);
        let v = r.u8("lz4 rebuild header version")?;
        if v != HEADER_VERSION {
            return Err(bad(
                "lz4 rebuild header version",
                format!("unknown version {v}"),
            ));
        }
        let library = r.u32_le("lz4 rebuild library version")?;
        let c = r.u8("lz4 stream format")?;
        let format = StreamFormat::from_code(c)
            .ok_or_else(|| bad("lz4 stream format", format!("unknown format {c}")))?;
        let level = r.u8("lz4 level")?;
        let id = r.u8("lz4 block size id")?;
        let flags = r.u8("lz4 frame flags")?;
        let frame = FramePrefs::from_flags(id, flags)
            .ok_or_else(|| bad("lz4 parameters", format!("unknown frame flags {flags:#x}")))?;
        let params = Lz4Params {
            format,
            level,
            frame,
        };
        params
            .check_ranges()
            .map_err(|e| bad("lz4 parameters", e))?;
        let at = Placement::read(&mut r, &LABELS, MAX_EXPANDED_LEN)?;
        r.finish("lz4 rebuild header")?;
        at.check(src_len, dst_len, &LABELS, MAX_EXPANDED_LEN)?;
        Ok(Header {
            library,
            params,
            at,
        })
    }
}

/// Encodes SOURCE_LZ4_REBUILD data from its header and inner patch data.
pub fn encode(header: &Header, inner: &[u8]) -> Vec<u8> {
    crate::codec::headed(&header.encode(), inner)
}

/// Splits SOURCE_LZ4_REBUILD data into its header (checked against
/// `src_len` source and `dst_len` destination bytes) and inner patch.
pub fn parse(data: &[u8], src_len: u64, dst_len: u64) -> Result<(Header, &[u8]), FormatError> {
    let (head, inner) = crate::codec::split_rebuild(
        data,
        [
            "lz4 rebuild header length",
            "lz4 rebuild header",
            "lz4 rebuild inner patch",
        ],
        MAX_HEADER_LEN,
    )?;
    Ok((Header::decode(head, src_len, dst_len)?, inner))
}

/// Memory, in bytes, an applier needs to run an operation with `header`
/// reading `src_len` and writing `dst_len` bytes: the source bytes, the
/// destination bytes twice over (decoded, written), both expanded forms,
/// and liblz4's buffers: one compressed block and the HC state for a
/// legacy stream; for a frame the decoder's and encoder's block buffers
/// too (three blocks in all); 1 MiB for the rest of liblz4 and 16 MiB for
/// the rest.
pub fn apply_memory(header: &Header, src_len: u64, dst_len: u64) -> u64 {
    let (s, t) = (
        header.source_expanded_len(src_len),
        header.target_expanded_len(dst_len),
    );
    let block = header.params.block_size() as u64;
    let buffers = match header.params.format {
        StreamFormat::Legacy => block,
        StreamFormat::Frame => 3 * block,
    };
    src_len + 2 * dst_len + s + t + buffers + (1 << 20) + (16 << 20)
}

/// Refuses a header this build cannot reproduce: one recorded with a
/// liblz4 version other than the one built in.
pub fn check_library(header: &Header) -> Result<(), FormatError> {
    let have = lz4::library_version();
    if header.library != have || have != LIBRARY_VERSION {
        return Err(FormatError::invalid(
            "lz4 rebuild library",
            format!(
                "the package was made with liblz4 {}, this romdelta has liblz4 {}: its lz4 stream would not be rebuilt exactly",
                version_name(header.library),
                version_name(have)
            ),
        ));
    }
    Ok(())
}

fn version_name(v: u32) -> String {
    format!("{}.{}.{}", v / 10000, v / 100 % 100, v % 100)
}

/// Decodes SOURCE_LZ4_REBUILD data against `src` into exactly `out.len()`
/// bytes: [`expand`], then [`rebuild`].
pub fn decode(data: &[u8], src: &[u8], out: &mut [u8]) -> Result<(), FormatError> {
    let (h, target) = expand(data, src, out.len() as u64)?;
    rebuild(&h, &target, out)
}

/// The first half of [`decode`]: the operation's header and the expanded
/// target (the bytes before the new stream, its decompressed bytes, the
/// bytes after it), made by decompressing the source's stream and running
/// the inner patch, for a destination of `dst_len` bytes.
pub fn expand(data: &[u8], src: &[u8], dst_len: u64) -> Result<(Header, Vec<u8>), FormatError> {
    let (h, inner) = parse(data, src.len() as u64, dst_len)?;
    check_library(&h)?;
    let target = h.at.expand(inner, src, dst_len, &LABELS, |s, out| {
        lz4_stream::decompress_exact(s, out)
    })?;
    Ok((h, target))
}

/// The second half of [`decode`]: `out` (the destination) from the
/// expanded target, its stream compressed again with the header's
/// parameters into exactly the recorded length.
pub fn rebuild(h: &Header, target: &[u8], out: &mut [u8]) -> Result<(), FormatError> {
    h.at.rebuild(target, out, &LABELS, &h.params, |plain, stream| {
        lz4_stream::compress_into(&h.params, plain, stream)
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::OpKind;

    fn text(seed: u32, n: usize) -> Vec<u8> {
        let words = [&b"init "[..], b"ramdisk ", b"cpio ", b"070701\n", b"boot "];
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

    pub(crate) fn legacy() -> Lz4Params {
        Lz4Params {
            format: StreamFormat::Legacy,
            level: 12,
            frame: FramePrefs::default(),
        }
    }

    fn frame() -> Lz4Params {
        Lz4Params {
            format: StreamFormat::Frame,
            level: 9,
            frame: FramePrefs {
                block_size_id: 4,
                block_linked: true,
                block_checksum: true,
                content_checksum: true,
                content_size: false,
                favor_dec_speed: false,
                auto_flush: true,
                single_pass: false,
            },
        }
    }

    /// Source and destination bytes (a few blocks each, an lz4 stream
    /// inside with bytes before and after), and the operation data.
    pub(crate) fn fixture_of(
        n: usize,
        params: Lz4Params,
        inner: OpKind,
    ) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let (src, dst, at, patch) = crate::testkit::stream_case(
            text(11, n),
            b"kernel",
            |b| lz4_stream::compress(&params, b).unwrap(),
            inner,
        );
        let header = Header {
            library: lz4::library_version(),
            params,
            at,
        };
        (src, dst, encode(&header, &patch))
    }

    fn fixture() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        fixture_of(40_000, legacy(), OpKind::SourceZstd)
    }

    #[test]
    fn a_changed_stream_is_rebuilt_exactly() {
        for (params, kind) in [
            (legacy(), OpKind::SourceZstd),
            (legacy(), OpKind::Replace),
            (frame(), OpKind::SourceZstd),
        ] {
            let (src, dst, data) = fixture_of(40_000, params, kind);
            let mut out = vec![0xee; dst.len()];
            crate::ops::decode(OpKind::SourceLz4Rebuild, &data, &src, &mut out).unwrap();
            assert_eq!(out, dst);
        }
        let (src, dst, data) = fixture();
        assert!(data.len() * 10 < dst.len(), "{} bytes", data.len());
        let (h, _) = parse(&data, src.len() as u64, dst.len() as u64).unwrap();
        let m = apply_memory(&h, src.len() as u64, dst.len() as u64);
        assert!(m > 8 << 20 && m < 64 << 20, "{m}");
    }

    #[test]
    fn every_truncation_and_wrong_size_is_refused() {
        for params in [legacy(), frame()] {
            let (src, dst, data) = fixture_of(40_000, params, OpKind::SourceZstd);
            crate::testkit::refuses_cuts_and_sizes(decode, &src, dst.len(), &data, 700);
        }
    }

    #[test]
    fn damaged_bytes_never_panic() {
        let (src, dst, data) = fixture_of(40_000, frame(), OpKind::SourceZstd);
        let at = 0..data.len().min(200);
        crate::testkit::damage_never_panics(decode, &src, dst.len(), &data, at, 2000);
    }

    #[test]
    fn hostile_headers_are_refused_with_their_reason() {
        type Change = Box<dyn Fn(&mut Header)>;
        let cases: [(&str, Change); 10] = [
            (
                "liblz4 1.9.3, this romdelta has",
                Box::new(|h| h.library = 10903),
            ),
            ("do not compress", Box::new(|h| h.params.level = 3)),
            (
                "do not compress",
                Box::new(|h| h.params.format = StreamFormat::Frame),
            ),
            (
                "cannot be an inner patch",
                Box::new(|h| h.at.inner = OpKind::SourceCopy),
            ),
            ("past the", Box::new(|h| h.at.src_offset = u64::MAX - 1)),
            ("past the", Box::new(|h| h.at.stream_len = 1 << 40)),
            (
                "lz4 target expanded form",
                Box::new(|h| h.at.decompressed_len = MAX_EXPANDED_LEN),
            ),
            (
                "lz4 source expanded form",
                Box::new(|h| h.at.src_decompressed_len = MAX_EXPANDED_LEN),
            ),
            ("lz4 parameters", Box::new(|h| h.params.level = 13)),
            (
                "lz4 parameters",
                Box::new(|h| h.params.frame.block_checksum = true),
            ),
        ];
        let (src, dst, data) = fixture();
        let (h, inner) = parse(&data, src.len() as u64, dst.len() as u64).unwrap();
        for (want, f) in cases {
            let mut h = h;
            f(&mut h);
            if h.params.format == StreamFormat::Frame {
                h.params.frame.block_size_id = 7;
            }
            let d = encode(&h, inner);
            let mut out = vec![0; dst.len()];
            let e = decode(&d, &src, &mut out).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
        let mut bad = h;
        bad.at.src_decompressed_len += 1;
        let e = decode(&encode(&bad, inner), &src, &mut vec![0; dst.len()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("lz4 source stream"), "{e}");
    }

    /// The committed seed of the `lz4_rebuild_decode` fuzz target (input
    /// layout: u8 destination blocks − 1 · u16le source length · source ·
    /// data), checked here and written anew with
    /// `ROMDELTA_WRITE_FUZZ_SEEDS=1`.
    #[test]
    fn fuzz_seed_is_a_valid_operation() {
        let (src, dst, data) = fixture_of(6000, frame(), OpKind::SourceZstd);
        crate::testkit::check_decode_seed(decode, "lz4_rebuild_decode", &src, &dst, &data);
    }
}
