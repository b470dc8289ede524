//! SOURCE_XZ_REBUILD operation data: one xz stream in the destination
//! (a Linux kernel's payload) rebuilt from its decompressed bytes.
//!
//! A kernel image is mostly one xz stream, and a small change to the code
//! changes almost every compressed byte after it. This operation
//! 1. decompresses the xz stream it names in its source bytes, giving the
//!    *source expanded* form: the source bytes before the stream, the
//!    decompressed stream, the source bytes after it;
//! 2. decodes an inner patch (REPLACE, SOURCE_ZSTD or SOURCE_BSDIFF_SPARSE
//!    data) against that into the *target expanded* form: `prefix_len`
//!    destination bytes, the `decompressed_len` bytes of the new stream,
//!    the destination bytes after the stream;
//! 3. compresses the new stream again with the recorded parameters
//!    ([`XzParams`]) and liblzma version, into exactly `stream_len` bytes.
//!
//! Wire form: `varint header_len · header · inner`; the header (plain
//! bytes, specified in docs/FORMAT.md) is checked against the source and
//! destination sizes and [`MAX_EXPANDED_LEN`] before anything is allocated.
//! The memory an applier needs for it is [`apply_memory`].

use crate::placement::{Labels, Placement};
use crate::{FormatError, Reader, Writer};
use romdelta_codecs::xz::{self, Bcj, XzCheck, XzParams};

/// Most bytes of the source or the target expanded form.
pub const MAX_EXPANDED_LEN: u64 = 256 << 20;
/// Longest header.
pub const MAX_HEADER_LEN: u64 = 256;
const HEADER_VERSION: u8 = 1;

/// The names errors give the stream's placement fields.
const LABELS: Labels = Labels {
    src_offset: "xz source offset",
    src_stream_len: "xz source stream length",
    src_decompressed_len: "xz source decompressed length",
    prefix_len: "xz prefix length",
    decompressed_len: "xz decompressed length",
    stream_len: "xz stream length",
    inner: "xz rebuild inner kind",
    src_stream: "xz source stream",
    stream: "xz stream",
    source_expanded: "xz source expanded form",
    target_expanded: "xz target expanded form",
    rebuild: "xz rebuild",
};

/// The header of a SOURCE_XZ_REBUILD operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// liblzma version (`lzma_version_number`) that reproduced the stream
    /// when the package was made.
    pub library: u32,
    /// The parameters the new stream is compressed with.
    pub params: XzParams,
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
        w.u8(p.check.code());
        w.u8(p.bcj.code());
        w.u8(p.preset | if p.extreme { 0x80 } else { 0 });
        w.u32_le(p.dict_size);
        w.u8(p.lc);
        w.u8(p.lp);
        w.u8(p.pb);
        self.at.write(&mut w);
        w.into_bytes()
    }

    fn decode(b: &[u8], src_len: u64, dst_len: u64) -> Result<Header, FormatError> {
        let bad = |what: &'static str, d: String| FormatError::invalid(what, d);
        let mut r = Reader::new(b);
        let v = r.u8("xz rebuild header version")?;
        if v != HEADER_VERSION {
            return Err(bad(
                "xz rebuild header version",
                format!("unknown version {v}"),
            ));
        }
        let library = r.u32_le("xz rebuild library version")?;
        let c = r.u8("xz check")?;
        let check = XzCheck::from_code(c)
            .ok_or_else(|| bad("xz check", format!("unknown check id {c}")))?;
        let c = r.u8("xz filter")?;
        let bcj =
            Bcj::from_code(c).ok_or_else(|| bad("xz filter", format!("unknown filter id {c}")))?;
        let preset = r.u8("xz preset")?;
        let params = XzParams {
            check,
            bcj,
            preset: preset & 0x7f,
            extreme: preset & 0x80 != 0,
            dict_size: r.u32_le("xz dictionary size")?,
            lc: r.u8("xz lc")?,
            lp: r.u8("xz lp")?,
            pb: r.u8("xz pb")?,
        };
        params
            .check_ranges()
            .map_err(|e| bad("xz parameters", e.to_string()))?;
        let at = Placement::read(&mut r, &LABELS, MAX_EXPANDED_LEN)?;
        r.finish("xz rebuild header")?;
        at.check(src_len, dst_len, &LABELS, MAX_EXPANDED_LEN)?;
        Ok(Header {
            library,
            params,
            at,
        })
    }
}

/// Encodes SOURCE_XZ_REBUILD data from its header and inner patch data.
pub fn encode(header: &Header, inner: &[u8]) -> Vec<u8> {
    crate::codec::headed(&header.encode(), inner)
}

/// Splits SOURCE_XZ_REBUILD data into its header (checked against
/// `src_len` source and `dst_len` destination bytes) and inner patch.
pub fn parse(data: &[u8], src_len: u64, dst_len: u64) -> Result<(Header, &[u8]), FormatError> {
    let (head, inner) = crate::codec::split_rebuild(
        data,
        [
            "xz rebuild header length",
            "xz rebuild header",
            "xz rebuild inner patch",
        ],
        MAX_HEADER_LEN,
    )?;
    Ok((Header::decode(head, src_len, dst_len)?, inner))
}

/// Memory, in bytes, an applier needs to run an operation with `header`
/// reading `src_len` and writing `dst_len` bytes: the source and
/// destination bytes, both expanded forms and liblzma's decoder while the
/// inner patch is decoded, then the target expanded form and liblzma's
/// encoder while the stream is compressed, and 16 MiB for the rest.
pub fn apply_memory(header: &Header, src_len: u64, dst_len: u64) -> u64 {
    let (s, t) = (
        header.source_expanded_len(src_len),
        header.target_expanded_len(dst_len),
    );
    let decode = s + t + u64::from(header.params.dict_size) + (1 << 20);
    let encode = t + header.params.encoder_memory().unwrap_or(u64::MAX / 4);
    src_len + 2 * dst_len + decode.max(encode) + (16 << 20)
}

/// Refuses a header this build cannot reproduce: one recorded with a
/// liblzma version other than the one built in.
pub fn check_library(header: &Header) -> Result<(), FormatError> {
    let have = xz::library_version();
    if header.library != have {
        return Err(FormatError::invalid(
            "xz rebuild library",
            format!(
                "the package was made with liblzma {}, this romdelta has liblzma {}: its xz stream would not be rebuilt exactly",
                xz::version_name(header.library),
                xz::version_name(have)
            ),
        ));
    }
    Ok(())
}

/// Decodes SOURCE_XZ_REBUILD data against `src` into exactly `out.len()`
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
        xz::decompress_into(s, out).map_err(|e| e.to_string())
    })?;
    Ok((h, target))
}

/// The second half of [`decode`]: `out` (the destination) from the
/// expanded target, its stream compressed again with the header's
/// parameters into exactly the recorded length.
pub fn rebuild(h: &Header, target: &[u8], out: &mut [u8]) -> Result<(), FormatError> {
    h.at.rebuild(target, out, &LABELS, &h.params, |plain, stream| {
        xz::compress_into(&h.params, plain, stream).map_err(|e| e.to_string())
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::OpKind;

    /// Machine-code-like bytes (calls with nearby targets, common
    /// instruction runs, noise).
    pub(crate) fn code(seed: u32, n: usize) -> Vec<u8> {
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

    pub(crate) fn params() -> XzParams {
        XzParams {
            check: XzCheck::Crc32,
            bcj: Bcj::X86,
            preset: 6,
            extreme: false,
            dict_size: 64 << 10,
            lc: 3,
            lp: 0,
            pb: 2,
        }
    }

    /// Source and destination bytes (a few blocks each, an xz stream of
    /// `code` inside with bytes before and after), and the operation data
    /// between them, with `n` bytes of code.
    pub(crate) fn fixture_of(n: usize, inner: OpKind) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let (src, dst, at, patch) = crate::testkit::stream_case(
            code(11, n),
            b"kernel",
            |b| xz::compress(&params(), b).unwrap(),
            inner,
        );
        let header = Header {
            library: xz::library_version(),
            params: params(),
            at,
        };
        (src, dst, encode(&header, &patch))
    }

    fn fixture() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        fixture_of(40_000, OpKind::SourceZstd)
    }

    #[test]
    fn a_changed_stream_is_rebuilt_exactly() {
        for kind in [OpKind::SourceZstd, OpKind::Replace] {
            let (src, dst, data) = fixture_of(40_000, kind);
            let mut out = vec![0xee; dst.len()];
            crate::ops::decode(OpKind::SourceXzRebuild, &data, &src, &mut out).unwrap();
            assert_eq!(out, dst);
        }
        let (src, dst, data) = fixture();
        // Far smaller than the stream it rebuilds.
        assert!(data.len() * 10 < dst.len(), "{} bytes", data.len());
        let (h, _) = parse(&data, src.len() as u64, dst.len() as u64).unwrap();
        let m = apply_memory(&h, src.len() as u64, dst.len() as u64);
        assert!(
            m > h.params.encoder_memory().unwrap() && m < 64 << 20,
            "{m}"
        );
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
        let cases: [(&str, Change); 9] = [
            (
                "liblzma 5.2.5, this romdelta has",
                Box::new(|h| h.library = 50020052),
            ),
            ("do not compress", Box::new(|h| h.params.preset = 1)),
            ("do not compress", Box::new(|h| h.params.bcj = Bcj::None)),
            (
                "cannot be an inner patch",
                Box::new(|h| h.at.inner = OpKind::SourceCopy),
            ),
            ("past the", Box::new(|h| h.at.src_offset = u64::MAX - 1)),
            ("past the", Box::new(|h| h.at.stream_len = 1 << 40)),
            (
                "xz target expanded form",
                Box::new(|h| h.at.decompressed_len = MAX_EXPANDED_LEN),
            ),
            (
                "xz source expanded form",
                Box::new(|h| h.at.src_decompressed_len = MAX_EXPANDED_LEN),
            ),
            ("xz parameters", Box::new(|h| h.params.dict_size = 1)),
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
        // The source stream's decompressed length is checked exactly.
        let mut bad = h;
        bad.at.src_decompressed_len += 1;
        let e = decode(&encode(&bad, inner), &src, &mut vec![0; dst.len()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("xz source stream"), "{e}");
    }

    /// The committed seed of the `xz_rebuild_decode` fuzz target (input
    /// layout: u8 destination blocks − 1 · u16le source length · source ·
    /// data), checked here and written anew with
    /// `ROMDELTA_WRITE_FUZZ_SEEDS=1`.
    #[test]
    fn fuzz_seed_is_a_valid_operation() {
        let (src, dst, data) = fixture_of(6000, OpKind::SourceZstd);
        crate::testkit::check_decode_seed(decode, "xz_rebuild_decode", &src, &dst, &data);
    }
}
