//! Operation data: how each kind's bytes become destination blocks.
//!
//! Decoders write into a caller-provided buffer whose length is the exact
//! number of destination bytes, so no input can make them allocate beyond a
//! bounded decoder state; every mismatch between what the data produces and
//! what the operation declares is an error.

use crate::{FormatError, Reader, Writer};
use std::io::Read;
use zstd::zstd_safe;

/// Largest zstd window the decoders accept (2^27 = 128 MiB): enough for a
/// 64 MiB reference prefix plus a 64 MiB destination.
pub const MAX_WINDOW_LOG: u32 = 27;

fn zstd_err(what: &'static str, code: usize) -> FormatError {
    FormatError::invalid(what, zstd_safe::get_error_name(code).to_string())
}

/// Decodes the data of an operation of `kind` against `src` (the source
/// bytes it reads, empty for REPLACE) into exactly `out.len()` bytes. Kinds
/// that carry no data (ZERO, SOURCE_COPY) are refused.
pub fn decode(
    kind: crate::OpKind,
    data: &[u8],
    src: &[u8],
    out: &mut [u8],
) -> Result<(), FormatError> {
    use crate::OpKind as K;
    match kind {
        K::Replace => decode_replace(data, out),
        K::SourceZstd => decode_source_zstd(data, src, out),
        K::SourceBsdiff => decode_bsdiff(data, src, out),
        K::SourceBsdiffSparse => decode_bsdiff_sparse(data, src, out),
        K::SourceRecompress => crate::recompress::decode(data, src, out),
        K::SourceXzRebuild => crate::xz_rebuild::decode(data, src, out),
        K::SourceFieldDelta => crate::fielddelta::decode(data, src, out),
        K::SourceDeflateRebuild => crate::deflate_rebuild::decode(data, src, out),
        K::SourceBranchDelta => crate::branchdelta::decode(data, src, out),
        K::SourceLz4Rebuild => crate::lz4_rebuild::decode(data, src, out),
        K::SourceZstdRebuild => crate::zstd_rebuild::decode(data, src, out),
        K::Zero | K::SourceCopy => Err(FormatError::invalid(
            "operation data",
            format!("{kind} carries no data"),
        )),
    }
}

/// Decodes REPLACE data: one zstd frame that must expand to exactly `out.len()` bytes.
pub fn decode_replace(data: &[u8], out: &mut [u8]) -> Result<(), FormatError> {
    decode_zstd_with_prefix(data, &[], out)
}

/// Decodes SOURCE_ZSTD data: one zstd frame compressed with `src` as its
/// reference prefix, which must expand to exactly `out.len()` bytes.
pub fn decode_source_zstd(data: &[u8], src: &[u8], out: &mut [u8]) -> Result<(), FormatError> {
    decode_zstd_with_prefix(data, src, out)
}

fn decode_zstd_with_prefix(data: &[u8], src: &[u8], out: &mut [u8]) -> Result<(), FormatError> {
    // Exactly one frame: its compressed size must be the whole data.
    let frame_len =
        zstd_safe::find_frame_compressed_size(data).map_err(|c| zstd_err("zstd frame", c))?;
    if frame_len != data.len() {
        return Err(FormatError::Trailing {
            what: "zstd frame",
            extra: (data.len() - frame_len.min(data.len())) as u64,
        });
    }
    let mut dctx = zstd_safe::DCtx::create();
    dctx.set_parameter(zstd_safe::DParameter::WindowLogMax(MAX_WINDOW_LOG))
        .map_err(|c| zstd_err("zstd parameters", c))?;
    if !src.is_empty() {
        dctx.ref_prefix(src)
            .map_err(|c| zstd_err("zstd prefix", c))?;
    }
    // One extra byte of room tells "too long" apart from "exactly right".
    let want = out.len();
    let mut tmp;
    let n = if want == 0 {
        tmp = [0u8; 1];
        dctx.decompress(&mut tmp[..], data)
    } else {
        dctx.decompress(out, data)
    }
    .map_err(|c| zstd_err("zstd data", c))?;
    if n != want {
        return Err(FormatError::invalid(
            "zstd data",
            format!("expands to {n} bytes, operation writes {want}"),
        ));
    }
    Ok(())
}

/// Encodes REPLACE data at zstd `level`.
pub fn encode_replace(dst: &[u8], level: i32) -> Vec<u8> {
    encode_zstd_with_prefix(dst, &[], level)
}

/// Encodes SOURCE_ZSTD data: `dst` compressed at `level` with `src` as reference prefix.
pub fn encode_source_zstd(src: &[u8], dst: &[u8], level: i32) -> Vec<u8> {
    encode_zstd_with_prefix(dst, src, level)
}

fn encode_zstd_with_prefix(dst: &[u8], src: &[u8], level: i32) -> Vec<u8> {
    use zstd_safe::CParameter as P;
    let mut cctx = zstd_safe::CCtx::create();
    let set = |cctx: &mut zstd_safe::CCtx, p| {
        cctx.set_parameter(p).expect("valid zstd parameter");
    };
    set(&mut cctx, P::CompressionLevel(level));
    set(&mut cctx, P::ContentSizeFlag(true));
    set(&mut cctx, P::ChecksumFlag(false));
    // The window must reach from the end of the output back over the whole prefix.
    let span = (src.len() + dst.len()).max(1) as u64;
    let log = (64 - (span - 1).leading_zeros()).clamp(10, MAX_WINDOW_LOG);
    set(&mut cctx, P::WindowLog(log));
    if src.len() >= (8 << 20) {
        set(&mut cctx, P::EnableLongDistanceMatching(true));
    }
    let mut out = vec![0u8; zstd_safe::compress_bound(dst.len())];
    if !src.is_empty() {
        cctx.ref_prefix(src).expect("zstd prefix");
    }
    let n = cctx
        .compress2(&mut out[..], dst)
        .expect("zstd compression into a bound-sized buffer");
    out.truncate(n);
    out
}

/// One bsdiff control entry: add `add` bytes (diff + source), copy `copy`
/// bytes from the extra stream, then move the source cursor by `seek`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    /// Bytes produced by adding diff bytes to source bytes.
    pub add: u64,
    /// Bytes copied from the extra stream.
    pub copy: u64,
    /// Signed move of the source cursor after the copy.
    pub seek: i64,
}

/// A bsdiff patch before compression: control entries and the diff and extra streams.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BsdiffPatch {
    /// Control entries, in order.
    pub controls: Vec<Control>,
    /// Bytes added (wrapping) to source bytes; as long as the sum of `add`.
    pub diff: Vec<u8>,
    /// Bytes copied literally; as long as the sum of `copy`.
    pub extra: Vec<u8>,
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}
fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn encode_controls(patch: &BsdiffPatch) -> Vec<u8> {
    let mut ctrl = Writer::new();
    for c in &patch.controls {
        ctrl.varint(c.add);
        ctrl.varint(c.copy);
        ctrl.varint(zigzag(c.seek));
    }
    ctrl.into_bytes()
}

/// Lays out compressed streams as the bsdiff kinds store them: the length
/// of every stream but the last as a varint, then the streams.
fn join_streams(streams: &[&[u8]]) -> Vec<u8> {
    let mut w = Writer::new();
    if let Some((_, lengths)) = streams.split_last() {
        lengths.iter().for_each(|s| w.varint(s.len() as u64));
    }
    streams.iter().for_each(|s| w.bytes(s));
    w.into_bytes()
}

/// Encodes SOURCE_BSDIFF data: `varint ctrl_len · varint diff_len ·
/// zstd(control varints) · zstd(diff) · zstd(extra)`.
pub fn encode_bsdiff(patch: &BsdiffPatch, level: i32) -> Vec<u8> {
    let ctrl = encode_replace(&encode_controls(patch), level);
    let diff = encode_replace(&patch.diff, level);
    let extra = encode_replace(&patch.extra, level);
    join_streams(&[&ctrl, &diff, &extra])
}

/// The diff stream of a bsdiff patch split into its zero runs and the bytes
/// between them: `runs` holds varint pairs (zero bytes, then literal
/// bytes), the last pair's literal count possibly 0; `literals` holds the
/// literal bytes. Diff streams are mostly zeros (bytes the source already
/// has right), and this form is both smaller once compressed and far
/// faster to compress than the zeros themselves.
pub fn split_zero_runs(diff: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut runs = Writer::new();
    let mut literals = Vec::new();
    let mut i = 0;
    while i < diff.len() {
        let zeros = diff[i..].iter().take_while(|&&b| b == 0).count();
        i += zeros;
        let lits = diff[i..].iter().take_while(|&&b| b != 0).count();
        literals.extend_from_slice(&diff[i..i + lits]);
        i += lits;
        runs.varint(zeros as u64);
        runs.varint(lits as u64);
    }
    (runs.into_bytes(), literals)
}

/// Encodes SOURCE_BSDIFF_SPARSE data: `varint ctrl_len · varint runs_len ·
/// varint literals_len · zstd(control varints) · zstd(runs) ·
/// zstd(literals) · zstd(extra)`, the diff stream split by
/// [`split_zero_runs`].
pub fn encode_bsdiff_sparse(patch: &BsdiffPatch, level: i32) -> Vec<u8> {
    let (runs, literals) = split_zero_runs(&patch.diff);
    let ctrl = encode_replace(&encode_controls(patch), level);
    let runs = encode_replace(&runs, level);
    let literals = encode_replace(&literals, level);
    let extra = encode_replace(&patch.extra, level);
    join_streams(&[&ctrl, &runs, &literals, &extra])
}

/// A zstd stream over a byte slice that refuses oversized windows and
/// reports running past its end as an error.
struct ZstdStream<'a> {
    inner: zstd::stream::read::Decoder<'static, std::io::BufReader<&'a [u8]>>,
    what: &'static str,
}

impl<'a> ZstdStream<'a> {
    fn new(data: &'a [u8], what: &'static str) -> Result<Self, FormatError> {
        let mut inner = zstd::stream::read::Decoder::new(data)
            .map_err(|e| FormatError::invalid(what, e.to_string()))?
            .single_frame();
        inner
            .window_log_max(MAX_WINDOW_LOG)
            .map_err(|e| FormatError::invalid(what, e.to_string()))?;
        Ok(ZstdStream { inner, what })
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), FormatError> {
        self.inner.read_exact(buf).map_err(|e| {
            FormatError::invalid(
                self.what,
                match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => "ends early".to_string(),
                    _ => e.to_string(),
                },
            )
        })
    }

    fn read_byte(&mut self) -> Result<Option<u8>, FormatError> {
        let mut b = [0u8; 1];
        loop {
            match self.inner.read(&mut b) {
                Ok(0) => return Ok(None),
                Ok(_) => return Ok(Some(b[0])),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(FormatError::invalid(self.what, e.to_string())),
            }
        }
    }

    fn read_varint(&mut self) -> Result<Option<u64>, FormatError> {
        let mut bytes = [0u8; 10];
        for i in 0..10 {
            match self.read_byte()? {
                None if i == 0 => return Ok(None),
                None => return Err(FormatError::invalid(self.what, "ends inside a varint")),
                Some(b) => {
                    bytes[i] = b;
                    if b & 0x80 == 0 {
                        return Reader::new(&bytes[..=i]).varint(self.what).map(Some);
                    }
                }
            }
        }
        Err(FormatError::invalid(
            self.what,
            "varint longer than 10 bytes",
        ))
    }

    fn expect_end(&mut self) -> Result<(), FormatError> {
        match self.read_byte()? {
            None => Ok(()),
            Some(_) => Err(FormatError::Trailing {
                what: self.what,
                extra: 1,
            }),
        }
    }
}

/// Where the bytes a bsdiff entry adds to the source come from.
trait DiffBytes {
    /// Adds the next `piece.len()` diff bytes to `piece`, which holds the
    /// source bytes they apply to.
    fn add_to(&mut self, piece: &mut [u8]) -> Result<(), FormatError>;
    /// Fails unless every diff byte was used.
    fn expect_end(&mut self) -> Result<(), FormatError>;
}

/// A plain diff stream: one byte per byte added.
struct PlainDiff<'a>(ZstdStream<'a>);

impl DiffBytes for PlainDiff<'_> {
    fn add_to(&mut self, piece: &mut [u8]) -> Result<(), FormatError> {
        let mut buf = [0u8; 4096];
        for chunk in piece.chunks_mut(buf.len()) {
            let d = &mut buf[..chunk.len()];
            self.0.read_exact(d)?;
            chunk
                .iter_mut()
                .zip(d.iter())
                .for_each(|(o, d)| *o = o.wrapping_add(*d));
        }
        Ok(())
    }
    fn expect_end(&mut self) -> Result<(), FormatError> {
        self.0.expect_end()
    }
}

/// A diff stream split into zero runs and literal bytes ([`split_zero_runs`]).
struct SparseDiff<'a> {
    runs: ZstdStream<'a>,
    literals: ZstdStream<'a>,
    /// Zero bytes, then literal bytes, left of the current pair.
    zeros: u64,
    lits: u64,
}

impl SparseDiff<'_> {
    /// Reads the next pair; a pair that covers no byte is refused (it would
    /// let the data make the decoder spin without output).
    fn next_pair(&mut self) -> Result<(), FormatError> {
        let what = "bsdiff diff runs";
        let zeros = self
            .runs
            .read_varint()?
            .ok_or_else(|| FormatError::invalid(what, "end before the diff bytes do"))?;
        let lits = self
            .runs
            .read_varint()?
            .ok_or_else(|| FormatError::invalid(what, "ends inside a pair"))?;
        if zeros == 0 && lits == 0 {
            return Err(FormatError::invalid(what, "a pair covers no byte"));
        }
        (self.zeros, self.lits) = (zeros, lits);
        Ok(())
    }
}

impl DiffBytes for SparseDiff<'_> {
    fn add_to(&mut self, mut piece: &mut [u8]) -> Result<(), FormatError> {
        let mut buf = [0u8; 4096];
        while !piece.is_empty() {
            if self.zeros == 0 && self.lits == 0 {
                self.next_pair()?;
            }
            let skip = self.zeros.min(piece.len() as u64) as usize;
            self.zeros -= skip as u64;
            piece = &mut piece[skip..];
            let n = self.lits.min(piece.len() as u64).min(buf.len() as u64) as usize;
            if n > 0 {
                let d = &mut buf[..n];
                self.literals.read_exact(d)?;
                piece[..n]
                    .iter_mut()
                    .zip(d.iter())
                    .for_each(|(o, d)| *o = o.wrapping_add(*d));
                self.lits -= n as u64;
                piece = &mut piece[n..];
            }
        }
        Ok(())
    }
    fn expect_end(&mut self) -> Result<(), FormatError> {
        if self.zeros != 0 || self.lits != 0 {
            return Err(FormatError::invalid(
                "bsdiff diff runs",
                "cover more bytes than the entries add",
            ));
        }
        self.runs.expect_end()?;
        self.literals.expect_end()
    }
}

/// Decodes SOURCE_BSDIFF data against `src` into exactly `out.len()` bytes.
/// Every source read must lie within `src`; every stream must be used up exactly.
pub fn decode_bsdiff(data: &[u8], src: &[u8], out: &mut [u8]) -> Result<(), FormatError> {
    let mut r = Reader::new(data);
    let ctrl_len = r.varint("bsdiff control length")?;
    let diff_len = r.varint("bsdiff diff length")?;
    let ctrl = r.take(ctrl_len, "bsdiff control stream")?;
    let diff = r.take(diff_len, "bsdiff diff stream")?;
    let extra = r.take(r.remaining() as u64, "bsdiff extra stream")?;
    let diff = PlainDiff(ZstdStream::new(diff, "bsdiff diff stream")?);
    decode_entries(ctrl, diff, extra, src, out)
}

/// Decodes SOURCE_BSDIFF_SPARSE data against `src` into exactly
/// `out.len()` bytes, with the checks of [`decode_bsdiff`].
pub fn decode_bsdiff_sparse(data: &[u8], src: &[u8], out: &mut [u8]) -> Result<(), FormatError> {
    let mut r = Reader::new(data);
    let ctrl_len = r.varint("bsdiff control length")?;
    let runs_len = r.varint("bsdiff diff runs length")?;
    let literals_len = r.varint("bsdiff diff literals length")?;
    let ctrl = r.take(ctrl_len, "bsdiff control stream")?;
    let runs = r.take(runs_len, "bsdiff diff runs")?;
    let literals = r.take(literals_len, "bsdiff diff literals")?;
    let extra = r.take(r.remaining() as u64, "bsdiff extra stream")?;
    let diff = SparseDiff {
        runs: ZstdStream::new(runs, "bsdiff diff runs")?,
        literals: ZstdStream::new(literals, "bsdiff diff literals")?,
        zeros: 0,
        lits: 0,
    };
    decode_entries(ctrl, diff, extra, src, out)
}

fn decode_entries(
    ctrl: &[u8],
    mut diff: impl DiffBytes,
    extra: &[u8],
    src: &[u8],
    out: &mut [u8],
) -> Result<(), FormatError> {
    let mut ctrl = ZstdStream::new(ctrl, "bsdiff control stream")?;
    let mut extra = ZstdStream::new(extra, "bsdiff extra stream")?;

    let bad = |d: String| Err(FormatError::invalid("bsdiff control", d));
    let (mut new_pos, mut old_pos) = (0usize, 0i64);
    let mut first = true;
    while let Some(add) = ctrl.read_varint()? {
        let copy = ctrl
            .read_varint()?
            .ok_or_else(|| FormatError::invalid("bsdiff control", "ends inside an entry"))?;
        let seek = unzigzag(
            ctrl.read_varint()?
                .ok_or_else(|| FormatError::invalid("bsdiff control", "ends inside an entry"))?,
        );
        if add == 0 && copy == 0 && !first {
            // Only a leading entry may write nothing (it moves the cursor);
            // refusing others bounds the work to the output size.
            return bad("an entry after the first writes nothing".to_string());
        }
        first = false;
        let left = (out.len() - new_pos) as u64;
        if add > left || copy > left - add {
            return bad(format!("entry writes past the output ({left} bytes left)"));
        }
        let (add, copy) = (add as usize, copy as usize);
        if add > 0 {
            if old_pos < 0 || (old_pos as u64).saturating_add(add as u64) > src.len() as u64 {
                return bad(format!(
                    "reads source bytes {old_pos}+{add} past its {} bytes",
                    src.len()
                ));
            }
            let piece = &mut out[new_pos..new_pos + add];
            piece.copy_from_slice(&src[old_pos as usize..old_pos as usize + add]);
            diff.add_to(piece)?;
            new_pos += add;
            old_pos += add as i64;
        }
        if copy > 0 {
            extra.read_exact(&mut out[new_pos..new_pos + copy])?;
            new_pos += copy;
        }
        old_pos = old_pos
            .checked_add(seek)
            .ok_or_else(|| FormatError::invalid("bsdiff control", "seek overflows"))?;
    }
    if new_pos != out.len() {
        return bad(format!(
            "produces {new_pos} bytes, operation writes {}",
            out.len()
        ));
    }
    diff.expect_end()?;
    extra.expect_end()?;
    ctrl.expect_end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zstd_round_trips_and_rejects_wrong_sizes() {
        let dst: Vec<u8> = (0..20000u32).map(|i| (i * 7 % 251) as u8).collect();
        let src: Vec<u8> = dst.iter().rev().copied().collect();
        let data = encode_source_zstd(&src, &dst, 3);
        let mut out = vec![0; dst.len()];
        decode_source_zstd(&data, &src, &mut out).unwrap();
        assert_eq!(out, dst);
        let mut short = vec![0; dst.len() - 1];
        assert!(decode_source_zstd(&data, &src, &mut short).is_err());
        let mut long = vec![0; dst.len() + 1];
        assert!(decode_source_zstd(&data, &src, &mut long).is_err());
        let mut trailing = data.clone();
        trailing.push(0);
        assert!(decode_source_zstd(&trailing, &src, &mut out).is_err());
        for cut in 0..data.len() {
            assert!(decode_source_zstd(&data[..cut], &src, &mut out).is_err());
        }
    }

    #[test]
    fn bsdiff_round_trip_and_every_truncation_fails() {
        let src = b"hello world, this is the old text".to_vec();
        let dst = b"hello there world, this is the new text!".to_vec();
        let patch = BsdiffPatch {
            controls: vec![
                Control {
                    add: 6,
                    copy: 6,
                    seek: 0,
                },
                Control {
                    add: 22,
                    copy: 3,
                    seek: 3,
                },
                Control {
                    add: 2,
                    copy: 1,
                    seek: 0,
                },
            ],
            diff: {
                let mut d = vec![0u8; 30];
                // positions 12..34 of dst align with 6..28 of src, etc.
                for i in 0..6 {
                    d[i] = dst[i].wrapping_sub(src[i]);
                }
                for i in 0..22 {
                    d[6 + i] = dst[12 + i].wrapping_sub(src[6 + i]);
                }
                for i in 0..2 {
                    d[28 + i] = dst[37 + i].wrapping_sub(src[31 + i]);
                }
                d
            },
            extra: [&dst[6..12], &dst[34..37], &dst[39..40]].concat(),
        };
        type Enc = fn(&BsdiffPatch, i32) -> Vec<u8>;
        type Dec = fn(&[u8], &[u8], &mut [u8]) -> Result<(), FormatError>;
        let codecs: [(Enc, Dec); 2] = [
            (encode_bsdiff, decode_bsdiff),
            (encode_bsdiff_sparse, decode_bsdiff_sparse),
        ];
        for (encode, decode) in codecs {
            let data = encode(&patch, 3);
            let mut out = vec![0; dst.len()];
            decode(&data, &src, &mut out).unwrap();
            assert_eq!(out, dst);
            for cut in 0..data.len() {
                let mut out = vec![0; dst.len()];
                assert!(decode(&data[..cut], &src, &mut out).is_err(), "cut {cut}");
            }
            // A source shorter than the patch reads must be refused, not read past.
            assert!(decode(&data, &src[..20], &mut out).is_err());
            // One byte more or less of output than the patch makes.
            assert!(decode(&data, &src, &mut vec![0; dst.len() + 1]).is_err());
            assert!(decode(&data, &src, &mut vec![0; dst.len() - 1]).is_err());
        }
    }

    /// A patch whose diff stream has leading and trailing zeros, literal
    /// runs longer than the decoder's buffer and zero runs that span entries.
    fn sparse_fixture() -> (Vec<u8>, Vec<u8>, BsdiffPatch) {
        let src: Vec<u8> = (0..30_000u32).map(|i| (i * 31 % 253) as u8).collect();
        let mut dst = src.clone();
        for b in &mut dst[5000..14000] {
            *b = b.wrapping_add(3);
        }
        dst[20_000] ^= 0x55;
        dst[29_999] ^= 1;
        let diff: Vec<u8> = dst
            .iter()
            .zip(&src)
            .map(|(d, s)| d.wrapping_sub(*s))
            .collect();
        let patch = BsdiffPatch {
            controls: vec![
                Control {
                    add: 12_000,
                    copy: 0,
                    seek: 0,
                },
                Control {
                    add: 18_000,
                    copy: 0,
                    seek: 0,
                },
            ],
            diff,
            extra: Vec::new(),
        };
        (src, dst, patch)
    }

    #[test]
    fn sparse_diff_streams_round_trip() {
        let (src, dst, patch) = sparse_fixture();
        let (runs, literals) = split_zero_runs(&patch.diff);
        assert_eq!(literals.len(), 9002);
        assert!(runs.len() < 20, "{} bytes of runs", runs.len());
        let data = encode_bsdiff_sparse(&patch, 3);
        assert!(data.len() < encode_bsdiff(&patch, 3).len() + 32);
        let mut out = vec![0; dst.len()];
        decode_bsdiff_sparse(&data, &src, &mut out).unwrap();
        assert_eq!(out, dst);
        // An all-zero and an empty diff stream.
        for diff in [vec![0u8; 100], Vec::new()] {
            let (runs, literals) = split_zero_runs(&diff);
            assert!(literals.is_empty());
            assert_eq!(runs.is_empty(), diff.is_empty());
        }
    }

    #[test]
    fn sparse_diff_runs_that_disagree_with_the_entries_are_refused() {
        let (src, dst, patch) = sparse_fixture();
        let with_runs = |runs: &[u64], literals: &[u8]| {
            let mut w = Writer::new();
            runs.iter().for_each(|&v| w.varint(v));
            let ctrl = encode_replace(&encode_controls(&patch), 3);
            let runs = encode_replace(&w.into_bytes(), 3);
            let literals = encode_replace(literals, 3);
            let extra = encode_replace(&[], 3);
            let data = join_streams(&[&ctrl, &runs, &literals, &extra]);
            let mut out = vec![0; dst.len()];
            decode_bsdiff_sparse(&data, &src, &mut out).map(|()| out)
        };
        // Exactly the bytes: all zeros (every diff byte 0) decodes to the source.
        assert_eq!(with_runs(&[30_000, 0], &[]).unwrap(), src);
        for (runs, literals, why) in [
            (&[0u64, 0, 30_000, 0][..], &[][..], "covers no byte"),
            (&[29_999, 0], &[], "end before"),
            (&[30_001, 0], &[], "more bytes than"),
            (&[29_999, 1], &[], "bsdiff diff literals"),
            (&[29_999, 1], &[1, 1], "bsdiff diff literals"),
            (&[30_000], &[], "inside a pair"),
            (&[30_000, 0, 0], &[], "trailing"),
        ] {
            let e = with_runs(runs, literals).unwrap_err().to_string();
            assert!(e.contains(why), "{runs:?}: {e}");
        }
    }
}
