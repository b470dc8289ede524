//! SOURCE_ZSTD_REBUILD operation data: one zstd frame in the destination
//! (a `.zst` file, or a frame at a block start of an image) rebuilt from
//! its decompressed bytes.
//!
//! Like [`crate::xz_rebuild`], this operation
//! 1. decompresses the zstd frame it names in its source bytes, giving the
//!    *source expanded* form: the source bytes before the frame, its
//!    content, the source bytes after it;
//! 2. decodes an inner patch (REPLACE, SOURCE_ZSTD or SOURCE_BSDIFF_SPARSE
//!    data) against that into the *target expanded* form: `prefix_len`
//!    destination bytes, the `decompressed_len` bytes of the new frame's
//!    content, the destination bytes after the frame;
//! 3. compresses the new frame again with the recorded parameters
//!    ([`ZstdParams`]) and libzstd version, into exactly `stream_len`
//!    bytes.
//!
//! Wire form: `varint header_len · header · inner`; the header (specified
//! in docs/FORMAT.md) is checked against the source and destination sizes
//! and [`MAX_EXPANDED_LEN`] before anything is allocated. The memory an
//! applier needs for it is [`apply_memory`].

use crate::placement::{Labels, Placement};
use crate::{FormatError, Reader, Writer};
use romdelta_codecs::zstd_frame::{self as zstd, ZstdParams};

/// Most bytes of the source or the target expanded form.
pub const MAX_EXPANDED_LEN: u64 = 256 << 20;
/// Longest header.
pub const MAX_HEADER_LEN: u64 = 128;
const HEADER_VERSION: u8 = 1;

/// The names errors give the frame's placement fields.
const LABELS: Labels = Labels {
    src_offset: "zstd source offset",
    src_stream_len: "zstd source frame length",
    src_decompressed_len: "zstd source decompressed length",
    prefix_len: "zstd prefix length",
    decompressed_len: "zstd decompressed length",
    stream_len: "zstd frame length",
    inner: "zstd rebuild inner kind",
    src_stream: "zstd source frame",
    stream: "zstd frame",
    source_expanded: "zstd source expanded form",
    target_expanded: "zstd target expanded form",
    rebuild: "zstd rebuild",
};

/// The header of a SOURCE_ZSTD_REBUILD operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// libzstd version (`ZSTD_versionNumber`) that reproduced the frame
    /// when the package was made.
    pub library: u32,
    /// The parameters the new frame is compressed with.
    pub params: ZstdParams,
    /// Where the frames lie and the inner patch kind.
    pub at: Placement,
}

impl Header {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(HEADER_VERSION);
        w.u32_le(self.library);
        w.u8(self.params.level as u8);
        w.u8(self.params.flags());
        self.at.write(&mut w);
        w.into_bytes()
    }

    fn decode(b: &[u8], src_len: u64, dst_len: u64) -> Result<Header, FormatError> {
        let bad = |what: &'static str, d: String| FormatError::invalid(what, d);
        let mut r = Reader::new(b);
        let v = r.u8("zstd rebuild header version")?;
        if v != HEADER_VERSION {
            return Err(bad(
                "zstd rebuild header version",
                format!("unknown version {v}"),
            ));
        }
        let library = r.u32_le("zstd rebuild library version")?;
        let level = r.u8("zstd level")? as i8;
        let flags = r.u8("zstd flags")?;
        let params = ZstdParams::from_wire(level, flags).ok_or_else(|| {
            bad(
                "zstd parameters",
                format!("level {level} with flags {flags:#04x}"),
            )
        })?;
        let at = Placement::read(&mut r, &LABELS, MAX_EXPANDED_LEN)?;
        r.finish("zstd rebuild header")?;
        at.check(src_len, dst_len, &LABELS, MAX_EXPANDED_LEN)?;
        Ok(Header {
            library,
            params,
            at,
        })
    }
}

/// Encodes SOURCE_ZSTD_REBUILD data from its header and inner patch data.
pub fn encode(header: &Header, inner: &[u8]) -> Vec<u8> {
    crate::codec::headed(&header.encode(), inner)
}

/// Splits SOURCE_ZSTD_REBUILD data into its header (checked against
/// `src_len` source and `dst_len` destination bytes) and inner patch.
pub fn parse(data: &[u8], src_len: u64, dst_len: u64) -> Result<(Header, &[u8]), FormatError> {
    let (head, inner) = crate::codec::split_rebuild(
        data,
        [
            "zstd rebuild header length",
            "zstd rebuild header",
            "zstd rebuild inner patch",
        ],
        MAX_HEADER_LEN,
    )?;
    Ok((Header::decode(head, src_len, dst_len)?, inner))
}

/// Memory, in bytes, an applier needs to run an operation with `header`
/// reading `src_len` and writing `dst_len` bytes: the source bytes, the
/// destination bytes twice over (decoded, written), both expanded forms,
/// then the larger of libzstd's decoder (its window, at most the source
/// content, and 1 MiB) and its encoder ([`zstd::encoder_memory`]), and
/// 16 MiB for the rest.
pub fn apply_memory(header: &Header, src_len: u64, dst_len: u64) -> u64 {
    let at = &header.at;
    let (s, t) = (
        at.source_expanded_len(src_len),
        at.target_expanded_len(dst_len),
    );
    let decoder = at.src_decompressed_len.min(zstd::MAX_WINDOW) + (1 << 20);
    let encoder = zstd::encoder_memory(&header.params, at.decompressed_len);
    src_len + 2 * dst_len + s + t + decoder.max(encoder) + (16 << 20)
}

/// Refuses a header this build cannot reproduce: one recorded with a
/// libzstd version other than the one built in.
pub fn check_library(header: &Header) -> Result<(), FormatError> {
    let have = zstd::library_version();
    if header.library != have {
        return Err(FormatError::invalid(
            "zstd rebuild library",
            format!(
                "the package was made with libzstd {}, this romdelta has libzstd {}: its zstd frame would not be rebuilt exactly",
                zstd::version_name(header.library),
                zstd::version_name(have)
            ),
        ));
    }
    Ok(())
}

/// Decodes SOURCE_ZSTD_REBUILD data against `src` into exactly
/// `out.len()` bytes: [`expand`], then [`rebuild`].
pub fn decode(data: &[u8], src: &[u8], out: &mut [u8]) -> Result<(), FormatError> {
    let (h, target) = expand(data, src, out.len() as u64)?;
    rebuild(&h, &target, out)
}

/// The first half of [`decode`]: the operation's header and the expanded
/// target (the bytes before the new frame, its content, the bytes after
/// it), made by decompressing the source's frame and running the inner
/// patch, for a destination of `dst_len` bytes.
pub fn expand(data: &[u8], src: &[u8], dst_len: u64) -> Result<(Header, Vec<u8>), FormatError> {
    let (h, inner) = parse(data, src.len() as u64, dst_len)?;
    check_library(&h)?;
    let target = h.at.expand(inner, src, dst_len, &LABELS, |s, out| {
        zstd::decompress_into(s, out).map_err(|e| e.to_string())
    })?;
    Ok((h, target))
}

/// The second half of [`decode`]: `out` (the destination) from the
/// expanded target, its frame compressed again with the header's
/// parameters into exactly the recorded length.
pub fn rebuild(h: &Header, target: &[u8], out: &mut [u8]) -> Result<(), FormatError> {
    h.at.rebuild(target, out, &LABELS, &h.params, |plain, frame| {
        zstd::compress_into(&h.params, plain, frame).map_err(|e| e.to_string())
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::OpKind;

    fn text(seed: u32, n: usize) -> Vec<u8> {
        let mut x = seed | 1;
        let words = [
            &b"update "[..],
            b"engine ",
            b"payload ",
            b"partition ",
            b"\n",
        ];
        let mut v = Vec::with_capacity(n + 16);
        while v.len() < n {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            v.extend_from_slice(words[(x % 5) as usize]);
            if x.is_multiple_of(3) {
                v.extend_from_slice(&x.to_le_bytes()[..2]);
            }
        }
        v.truncate(n);
        v
    }

    pub(crate) fn params() -> ZstdParams {
        ZstdParams::from_wire(19, 0b011).expect("valid")
    }

    /// Source and destination bytes (a few blocks each, a zstd frame of
    /// `text` inside with bytes before and after), and the operation data
    /// between them, with `n` bytes of content.
    pub(crate) fn fixture_of(n: usize, inner: OpKind) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let (src, dst, at, patch) = crate::testkit::stream_case(
            text(5, n),
            b"frame",
            |b| zstd::compress(&params(), b).unwrap(),
            inner,
        );
        let header = Header {
            library: zstd::library_version(),
            params: params(),
            at,
        };
        (src, dst, encode(&header, &patch))
    }

    fn fixture() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        fixture_of(60_000, OpKind::SourceZstd)
    }

    #[test]
    fn a_changed_frame_is_rebuilt_exactly() {
        for kind in [OpKind::SourceZstd, OpKind::Replace] {
            let (src, dst, data) = fixture_of(60_000, kind);
            let mut out = vec![0xee; dst.len()];
            crate::ops::decode(OpKind::SourceZstdRebuild, &data, &src, &mut out).unwrap();
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
        crate::testkit::refuses_cuts_and_sizes(decode, &src, dst.len(), &data, 700);
    }

    #[test]
    fn damaged_bytes_never_panic() {
        let (src, dst, data) = fixture();
        let at = 0..data.len().min(200);
        crate::testkit::damage_never_panics(decode, &src, dst.len(), &data, at, 2000);
    }

    #[test]
    fn hostile_headers_are_refused_with_their_reason() {
        type Change = Box<dyn Fn(&mut Header)>;
        let cases: [(&str, Change); 8] = [
            (
                "libzstd 1.5.4, this romdelta has",
                Box::new(|h| h.library = 10504),
            ),
            ("do not compress", Box::new(|h| h.params.level = 3)),
            ("do not compress", Box::new(|h| h.params.checksum = false)),
            (
                "cannot be an inner patch",
                Box::new(|h| h.at.inner = OpKind::SourceCopy),
            ),
            ("past the", Box::new(|h| h.at.src_offset = u64::MAX - 1)),
            ("past the", Box::new(|h| h.at.stream_len = 1 << 40)),
            (
                "zstd target expanded form",
                Box::new(|h| h.at.decompressed_len = MAX_EXPANDED_LEN),
            ),
            ("zstd parameters", Box::new(|h| h.params.level = 0)),
        ];
        let (src, dst, data) = fixture();
        let (h, inner) = parse(&data, src.len() as u64, dst.len() as u64).unwrap();
        for (want, f) in cases {
            let mut h = h;
            f(&mut h);
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
        assert!(e.contains("zstd source frame"), "{e}");
    }

    /// The committed seed of the `zstd_rebuild_decode` fuzz target (input
    /// layout: u8 destination blocks − 1 · u16le source length · source ·
    /// data), checked here and written anew with
    /// `ROMDELTA_WRITE_FUZZ_SEEDS=1`.
    #[test]
    fn fuzz_seed_is_a_valid_operation() {
        let (src, dst, data) = fixture_of(6000, OpKind::SourceZstd);
        crate::testkit::check_decode_seed(decode, "zstd_rebuild_decode", &src, &dst, &data);
    }
}
