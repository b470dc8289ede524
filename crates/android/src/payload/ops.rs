//! Decoders (and, for export, encoders) of `payload.bin` operation data.
//!
//! Every decoder writes into a caller-sized buffer, the operation's whole
//! destination (its blocks, `block_size` bytes each), and never beyond:
//! a stream that would produce more is an error. REPLACE kinds whose data
//! ends early leave the rest zero, as update_engine's writer does; the
//! bsdiff kinds must announce and produce exactly the destination size.

use super::PayloadOpKind;
use romdelta_format::FormatError;
use std::io::Read;

/// Most memory an xz stream may ask of the decoder (its dictionary): 256 MiB.
pub const XZ_MEMLIMIT: u64 = 256 << 20;

/// Largest zstd window accepted (2^27 = 128 MiB).
pub const ZSTD_WINDOW_LOG_MAX: u32 = 27;

fn io_invalid(what: &'static str) -> impl Fn(std::io::Error) -> FormatError {
    move |e| FormatError::invalid(what, e.to_string())
}

/// Reads `r` into `out` until `out` is full or `r` ends; returns the bytes
/// read. If `out` fills, `r` must end there: one more byte is an error.
fn fill_exactly(
    mut r: impl Read,
    out: &mut [u8],
    what: &'static str,
) -> Result<usize, FormatError> {
    let mut n = 0;
    while n < out.len() {
        match r.read(&mut out[n..]) {
            Ok(0) => return Ok(n),
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_invalid(what)(e)),
        }
    }
    let mut one = [0u8; 1];
    loop {
        match r.read(&mut one) {
            Ok(0) => return Ok(n),
            Ok(_) => {
                return Err(FormatError::invalid(
                    what,
                    format!(
                        "expands to more than the {} bytes the operation writes",
                        out.len()
                    ),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_invalid(what)(e)),
        }
    }
}

/// A decoder of a stream held in a byte slice that gives back the input it
/// did not consume.
trait SliceDecoder<'a>: Read {
    /// The input after the stream.
    fn rest(self) -> &'a [u8];
}

impl<'a> SliceDecoder<'a> for bzip2::bufread::BzDecoder<&'a [u8]> {
    fn rest(self) -> &'a [u8] {
        self.into_inner()
    }
}

impl<'a> SliceDecoder<'a> for liblzma::bufread::XzDecoder<&'a [u8]> {
    fn rest(self) -> &'a [u8] {
        self.into_inner()
    }
}

/// A compressed stream that must be complete and end exactly at the end of
/// its input: the decoder's own checks catch a damaged or cut stream, this
/// one bytes after it.
struct ExactStream<D> {
    inner: Option<D>,
    /// Names the stream in the error: "{what}: N bytes after the {format} stream".
    what: &'static str,
    format: &'static str,
}

impl<D> ExactStream<D> {
    fn new(decoder: D, what: &'static str, format: &'static str) -> Self {
        ExactStream {
            inner: Some(decoder),
            what,
            format,
        }
    }
}

impl<'a, D: SliceDecoder<'a>> Read for ExactStream<D> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(d) = self.inner.as_mut() else {
            return Ok(0);
        };
        if buf.is_empty() {
            return Ok(0);
        }
        let n = d.read(buf)?;
        if n == 0 {
            // The stream ended: nothing may follow it.
            let rest = self.inner.take().expect("present").rest();
            if !rest.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{}: {} bytes after the {} stream",
                        self.what,
                        rest.len(),
                        self.format
                    ),
                ));
            }
        }
        Ok(n)
    }
}

/// A bzip2 stream (one, complete, nothing after it).
fn bzip2_reader<'a>(data: &'a [u8], what: &'static str) -> impl Read + 'a {
    ExactStream::new(bzip2::bufread::BzDecoder::new(data), what, "bzip2")
}

/// A brotli stream that must be complete and end exactly at the end of its input.
struct BrotliExact<'a> {
    input: &'a [u8],
    offset: usize,
    state: brotli_decompressor::BrotliState<
        brotli_decompressor::StandardAlloc,
        brotli_decompressor::StandardAlloc,
        brotli_decompressor::StandardAlloc,
    >,
    done: bool,
}

impl<'a> BrotliExact<'a> {
    fn new(input: &'a [u8]) -> Self {
        use brotli_decompressor::StandardAlloc;
        BrotliExact {
            input,
            offset: 0,
            state: brotli_decompressor::BrotliState::new(
                StandardAlloc::default(),
                StandardAlloc::default(),
                StandardAlloc::default(),
            ),
            done: false,
        }
    }
}

impl Read for BrotliExact<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use brotli_decompressor::BrotliResult;
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
        let mut avail_in = self.input.len() - self.offset;
        let mut avail_out = buf.len();
        let mut out_off = 0usize;
        let mut total = 0usize;
        let r = brotli_decompressor::BrotliDecompressStream(
            &mut avail_in,
            &mut self.offset,
            self.input,
            &mut avail_out,
            &mut out_off,
            buf,
            &mut total,
            &mut self.state,
        );
        match r {
            BrotliResult::ResultSuccess => {
                self.done = true;
                if self.offset != self.input.len() {
                    return Err(bad(&format!(
                        "{} bytes after the brotli stream",
                        self.input.len() - self.offset
                    )));
                }
                Ok(out_off)
            }
            BrotliResult::NeedsMoreOutput => Ok(out_off),
            // All the input was given: the stream is cut short.
            BrotliResult::NeedsMoreInput if out_off > 0 => Ok(out_off),
            BrotliResult::NeedsMoreInput => Err(bad("the brotli stream ends early")),
            BrotliResult::ResultFailure => Err(bad("damaged brotli stream")),
        }
    }
}

/// An xz stream (one, complete, nothing after it), its memory bounded by [`XZ_MEMLIMIT`].
fn xz_reader(data: &[u8]) -> Result<impl Read + '_, FormatError> {
    let stream = liblzma::stream::Stream::new_stream_decoder(XZ_MEMLIMIT, 0)
        .map_err(|e| FormatError::invalid("xz data", e.to_string()))?;
    Ok(ExactStream::new(
        liblzma::bufread::XzDecoder::new_stream(data, stream),
        "xz data",
        "xz",
    ))
}

/// Decodes the data of a REPLACE, REPLACE_BZ, REPLACE_XZ or REPLACE_ZSTD
/// operation into `out` (the operation's destination). Data that expands
/// to fewer bytes leaves the rest of `out` zero; more is an error. Returns
/// the bytes the data expanded to.
pub fn decode_replace(
    kind: PayloadOpKind,
    data: &[u8],
    out: &mut [u8],
) -> Result<usize, FormatError> {
    let n = match kind {
        PayloadOpKind::Replace => {
            if data.len() > out.len() {
                return Err(FormatError::invalid(
                    "REPLACE data",
                    format!(
                        "{} bytes, more than the {} bytes the operation writes",
                        data.len(),
                        out.len()
                    ),
                ));
            }
            out[..data.len()].copy_from_slice(data);
            data.len()
        }
        PayloadOpKind::ReplaceBz => {
            fill_exactly(bzip2_reader(data, "bzip2 data"), out, "REPLACE_BZ data")?
        }
        PayloadOpKind::ReplaceXz => fill_exactly(xz_reader(data)?, out, "REPLACE_XZ data")?,
        PayloadOpKind::ReplaceZstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(data)
                .map_err(io_invalid("REPLACE_ZSTD data"))?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(io_invalid("REPLACE_ZSTD data"))?;
            fill_exactly(d, out, "REPLACE_ZSTD data")?
        }
        other => {
            return Err(FormatError::invalid(
                "operation",
                format!("{} is not a REPLACE kind", other.name()),
            ))
        }
    };
    out[n..].fill(0);
    Ok(n)
}

/// How one stream of a bsdiff patch is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamCompression {
    /// Stored as is.
    None,
    /// bzip2.
    Bzip2,
    /// brotli.
    Brotli,
}

/// The header of a bsdiff patch: `BSDIFF40` (three bzip2 streams) or
/// `BSDF2` (three bytes naming each stream's compression).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BsdiffHeader {
    /// Whether the patch is BSDF2 (else BSDIFF40).
    pub bsdf2: bool,
    /// Compression of the control, diff and extra streams.
    pub compression: [StreamCompression; 3],
    /// Bytes of the control stream.
    pub ctrl_len: u64,
    /// Bytes of the diff stream.
    pub diff_len: u64,
    /// Size of the output.
    pub new_size: u64,
}

/// Most decoded bytes a bsdiff stream may hold past what the output needs.
pub const MAX_BSDIFF_LEFTOVER: u64 = 1 << 16;

/// Length of either header.
pub const BSDIFF_HEADER_LEN: usize = 32;

/// An 8-byte sign-and-magnitude little-endian integer, as bsdiff writes them.
fn offtin(b: &[u8]) -> i64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[..8]);
    let raw = u64::from_le_bytes(v);
    let mag = (raw & (u64::MAX >> 1)) as i64;
    if raw >> 63 != 0 {
        -mag
    } else {
        mag
    }
}

fn non_negative(v: i64, what: &'static str) -> Result<u64, FormatError> {
    u64::try_from(v).map_err(|_| FormatError::invalid(what, format!("negative ({v})")))
}

impl BsdiffHeader {
    /// Decodes and checks the header of `patch`: both stream lengths must
    /// fit in the patch.
    pub fn decode(patch: &[u8]) -> Result<Self, FormatError> {
        if patch.len() < BSDIFF_HEADER_LEN {
            return Err(FormatError::Truncated {
                what: "bsdiff header",
                need: (BSDIFF_HEADER_LEN - patch.len()) as u64,
                have: patch.len() as u64,
            });
        }
        let (bsdf2, compression) = if &patch[..8] == b"BSDIFF40" {
            (false, [StreamCompression::Bzip2; 3])
        } else if &patch[..5] == b"BSDF2" {
            let mut c = [StreamCompression::None; 3];
            for (i, &b) in patch[5..8].iter().enumerate() {
                c[i] = match b {
                    0 => StreamCompression::None,
                    1 => StreamCompression::Bzip2,
                    2 => StreamCompression::Brotli,
                    other => {
                        return Err(FormatError::invalid(
                            "BSDF2 header",
                            format!("unknown stream compression {other}"),
                        ))
                    }
                };
            }
            (true, c)
        } else {
            return Err(FormatError::invalid(
                "bsdiff header",
                "neither a BSDIFF40 nor a BSDF2 patch (bad magic)",
            ));
        };
        let h = BsdiffHeader {
            bsdf2,
            compression,
            ctrl_len: non_negative(offtin(&patch[8..16]), "bsdiff control length")?,
            diff_len: non_negative(offtin(&patch[16..24]), "bsdiff diff length")?,
            new_size: non_negative(offtin(&patch[24..32]), "bsdiff new size")?,
        };
        let body = (patch.len() - BSDIFF_HEADER_LEN) as u64;
        if h.ctrl_len.checked_add(h.diff_len).is_none_or(|n| n > body) {
            return Err(FormatError::Truncated {
                what: "bsdiff streams",
                need: h.ctrl_len.saturating_add(h.diff_len).saturating_sub(body),
                have: body,
            });
        }
        Ok(h)
    }
}

fn stream_reader<'a>(
    c: StreamCompression,
    data: &'a [u8],
    what: &'static str,
) -> Box<dyn Read + 'a> {
    match c {
        StreamCompression::None => Box::new(data),
        StreamCompression::Bzip2 => Box::new(bzip2_reader(data, what)),
        StreamCompression::Brotli => Box::new(BrotliExact::new(data)),
    }
}

fn read_all(r: &mut dyn Read, out: &mut [u8], what: &'static str) -> Result<(), FormatError> {
    r.read_exact(out).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FormatError::invalid(what, "the stream ends early")
        } else {
            FormatError::invalid(what, e.to_string())
        }
    })
}

/// Most bytes a ZUCCHINI operation's brotli stream may expand to.
pub const MAX_ZUCCHINI_PATCH: u64 = 512 << 20;

/// Applies a ZUCCHINI operation's data to `src`, writing exactly
/// `out.len()` bytes: the data is a brotli stream holding a Zucchini
/// ensemble patch (`Zucc`, format 2.0, as Chromium's Zucchini writes it),
/// which must produce that size; Zucchini checks the CRC-32 of the source
/// and of its result.
pub fn decode_zucchini(data: &[u8], src: &[u8], out: &mut [u8]) -> Result<(), FormatError> {
    let mut patch = Vec::new();
    BrotliExact::new(data)
        .take(MAX_ZUCCHINI_PATCH + 1)
        .read_to_end(&mut patch)
        .map_err(|e| FormatError::invalid("ZUCCHINI data", e.to_string()))?;
    if patch.len() as u64 > MAX_ZUCCHINI_PATCH {
        return Err(FormatError::invalid(
            "ZUCCHINI data",
            format!("a patch of more than {MAX_ZUCCHINI_PATCH} bytes"),
        ));
    }
    let h = zucchini::read_header(&patch)
        .map_err(|e| FormatError::invalid("Zucchini patch", e.to_string()))?;
    if h.version.0 != 2 {
        return Err(FormatError::invalid(
            "Zucchini patch",
            format!(
                "format {}.{}; this reader applies Zucchini's format 2",
                h.version.0, h.version.1
            ),
        ));
    }
    if u64::from(h.new_size) != out.len() as u64 {
        return Err(FormatError::invalid(
            "Zucchini patch",
            format!(
                "produces {} bytes, the operation writes {}",
                h.new_size,
                out.len()
            ),
        ));
    }
    zucchini::apply_into(src, &patch, out)
        .map_err(|e| FormatError::invalid("Zucchini patch", e.to_string()))
}

/// The output size a BSDIFF40 or BSDF2 patch announces.
pub fn bsdiff_new_size(patch: &[u8]) -> Result<u64, FormatError> {
    Ok(BsdiffHeader::decode(patch)?.new_size)
}

/// Applies a BSDIFF40 or BSDF2 `patch` to `src`, writing exactly `out.len()`
/// bytes: the patch must announce that size and produce it. Source bytes
/// outside `src` read as zero, as `bspatch` reads them.
pub fn decode_bsdiff(patch: &[u8], src: &[u8], out: &mut [u8]) -> Result<(), FormatError> {
    let h = BsdiffHeader::decode(patch)?;
    if h.new_size != out.len() as u64 {
        return Err(FormatError::invalid(
            "bsdiff patch",
            format!(
                "produces {} bytes, the operation writes {}",
                h.new_size,
                out.len()
            ),
        ));
    }
    let ctrl_end = BSDIFF_HEADER_LEN + h.ctrl_len as usize;
    let diff_end = ctrl_end + h.diff_len as usize;
    let mut ctrl = stream_reader(
        h.compression[0],
        &patch[BSDIFF_HEADER_LEN..ctrl_end],
        "bsdiff control stream",
    );
    let mut diff = stream_reader(
        h.compression[1],
        &patch[ctrl_end..diff_end],
        "bsdiff diff stream",
    );
    let mut extra = stream_reader(h.compression[2], &patch[diff_end..], "bsdiff extra stream");
    let new_size = out.len() as u64;
    let (mut new_pos, mut old_pos) = (0u64, 0i64);
    // Every useful entry writes a byte: more entries than that is a patch
    // that loops without making progress.
    let mut entries_left = new_size + 16;
    while new_pos < new_size {
        if entries_left == 0 {
            return Err(FormatError::invalid(
                "bsdiff control stream",
                "too many entries that write nothing",
            ));
        }
        entries_left -= 1;
        let mut c = [0u8; 24];
        read_all(&mut *ctrl, &mut c, "bsdiff control stream")?;
        let add = non_negative(offtin(&c[0..8]), "bsdiff diff size")?;
        let copy = non_negative(offtin(&c[8..16]), "bsdiff extra size")?;
        let seek = offtin(&c[16..24]);
        if add > new_size - new_pos {
            return Err(FormatError::invalid(
                "bsdiff control stream",
                "a diff run writes past the end of the output",
            ));
        }
        let span = &mut out[new_pos as usize..(new_pos + add) as usize];
        read_all(&mut *diff, span, "bsdiff diff stream")?;
        // Add the source bytes that exist under the run.
        let run_start = old_pos;
        let run_end = old_pos.saturating_add(add as i64);
        let lo = run_start.clamp(0, src.len() as i64);
        let hi = run_end.clamp(0, src.len() as i64);
        if lo < hi {
            let off = (lo - run_start) as usize;
            for (o, s) in span[off..off + (hi - lo) as usize]
                .iter_mut()
                .zip(&src[lo as usize..hi as usize])
            {
                *o = o.wrapping_add(*s);
            }
        }
        new_pos += add;
        old_pos = run_end;
        if copy > new_size - new_pos {
            return Err(FormatError::invalid(
                "bsdiff control stream",
                "an extra run writes past the end of the output",
            ));
        }
        read_all(
            &mut *extra,
            &mut out[new_pos as usize..(new_pos + copy) as usize],
            "bsdiff extra stream",
        )?;
        new_pos += copy;
        old_pos = old_pos.checked_add(seek).ok_or_else(|| {
            FormatError::invalid("bsdiff control stream", "the source cursor overflows")
        })?;
    }
    // Each compressed stream must be complete (its end, with its checksums,
    // is read). Writers may leave a little past what the output needs (a
    // last empty control entry): up to [`MAX_BSDIFF_LEFTOVER`] bytes are
    // read past, more is refused.
    for (r, what) in [
        (&mut ctrl, "bsdiff control stream"),
        (&mut diff, "bsdiff diff stream"),
        (&mut extra, "bsdiff extra stream"),
    ] {
        let mut limited = r.take(MAX_BSDIFF_LEFTOVER + 1);
        let n = std::io::copy(&mut limited, &mut std::io::sink())
            .map_err(|e| FormatError::invalid(what, e.to_string()))?;
        if n > MAX_BSDIFF_LEFTOVER {
            return Err(FormatError::invalid(
                what,
                format!("more than {MAX_BSDIFF_LEFTOVER} bytes after the output's end"),
            ));
        }
    }
    Ok(())
}

/// Checks that `kind` is one of the patch kinds and decodes its data
/// (see [`decode_bsdiff`], [`crate::puffin::apply`]). SOURCE_BSDIFF and
/// BROTLI_BSDIFF take either bsdiff format, as update_engine's `bspatch`
/// does.
pub fn decode_patch(
    kind: PayloadOpKind,
    data: &[u8],
    src: &[u8],
    out: &mut [u8],
) -> Result<(), FormatError> {
    match kind {
        PayloadOpKind::SourceBsdiff | PayloadOpKind::BrotliBsdiff => decode_bsdiff(data, src, out),
        PayloadOpKind::Puffdiff => crate::puffin::apply(data, src, out),
        PayloadOpKind::Zucchini => decode_zucchini(data, src, out),
        PayloadOpKind::Lz4diffBsdiff | PayloadOpKind::Lz4diffPuffdiff => {
            crate::lz4diff::apply(data, src, out)
        }
        other => Err(FormatError::invalid(
            "operation",
            format!("{} is not a bsdiff kind this reader applies", other.name()),
        )),
    }
}

/// Compresses `data` as one xz stream (preset 6, CRC-64 check), as
/// REPLACE_XZ data.
pub fn encode_xz(data: &[u8]) -> Vec<u8> {
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
    std::io::Write::write_all(&mut e, data).expect("writing to memory");
    e.finish().expect("writing to memory")
}

/// Compresses `data` as one bzip2 stream (level 9), as REPLACE_BZ data.
pub fn encode_bz2(data: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
    std::io::Write::write_all(&mut e, data).expect("writing to memory");
    e.finish().expect("writing to memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..3 * 4096u32).map(|i| (i * 7 % 13) as u8).collect()
    }

    #[test]
    fn replace_kinds_round_trip_and_zero_pad() {
        let data = sample();
        let encoded = [
            (PayloadOpKind::Replace, data.clone()),
            (PayloadOpKind::ReplaceBz, encode_bz2(&data)),
            (PayloadOpKind::ReplaceXz, encode_xz(&data)),
            (
                PayloadOpKind::ReplaceZstd,
                zstd::bulk::compress(&data, 3).unwrap(),
            ),
        ];
        for (kind, enc) in &encoded {
            let mut out = vec![0xaa; data.len()];
            assert_eq!(decode_replace(*kind, enc, &mut out).unwrap(), data.len());
            assert_eq!(out, data, "{kind:?}");
            // A longer destination is zero-padded.
            let mut out = vec![0xaa; data.len() + 4096];
            decode_replace(*kind, enc, &mut out).unwrap();
            assert_eq!(&out[..data.len()], &data[..]);
            assert!(out[data.len()..].iter().all(|&b| b == 0));
            // A shorter one is an error.
            let mut out = vec![0; data.len() - 1];
            assert!(decode_replace(*kind, enc, &mut out).is_err(), "{kind:?}");
            // So is any truncation of the compressed kinds, or a byte after them.
            if *kind != PayloadOpKind::Replace {
                for cut in 0..enc.len() {
                    let mut out = vec![0; data.len()];
                    assert!(
                        decode_replace(*kind, &enc[..cut], &mut out).is_err(),
                        "{kind:?} cut to {cut}"
                    );
                }
                let mut longer = enc.clone();
                longer.push(0);
                let mut out = vec![0; data.len()];
                assert!(
                    decode_replace(*kind, &longer, &mut out).is_err(),
                    "{kind:?}"
                );
            }
        }
    }

    /// A BSDF2 patch with the given stream compressions, built by hand.
    fn bsdf2(c: [u8; 3], ctrl: &[u8], diff: &[u8], extra: &[u8], new_size: u64) -> Vec<u8> {
        let enc = |k: u8, d: &[u8]| match k {
            0 => d.to_vec(),
            1 => encode_bz2(d),
            _ => {
                let mut out = Vec::new();
                brotli_stored(d, &mut out);
                out
            }
        };
        let (c0, c1, c2) = (enc(c[0], ctrl), enc(c[1], diff), enc(c[2], extra));
        let mut p = b"BSDF2".to_vec();
        p.extend_from_slice(&c);
        p.extend_from_slice(&(c0.len() as u64).to_le_bytes());
        p.extend_from_slice(&(c1.len() as u64).to_le_bytes());
        p.extend_from_slice(&new_size.to_le_bytes());
        p.extend(c0);
        p.extend(c1);
        p.extend(c2);
        p
    }

    /// A brotli stream of uncompressed meta-blocks (RFC 7932, section 9.2).
    fn brotli_stored(data: &[u8], out: &mut Vec<u8>) {
        fn put(bits: &mut Vec<bool>, v: u64, n: usize) {
            bits.extend((0..n).map(|i| (v >> i) & 1 == 1));
        }
        fn flush(bits: &mut Vec<bool>, out: &mut Vec<u8>) {
            while !bits.len().is_multiple_of(8) {
                bits.push(false);
            }
            for chunk in bits.chunks(8) {
                out.push(chunk.iter().rev().fold(0, |a, &b| (a << 1) | b as u8));
            }
            bits.clear();
        }
        let mut bits = Vec::new();
        put(&mut bits, 0, 1); // WBITS = 16
        for block in data.chunks(65536) {
            put(&mut bits, 0, 1); // ISLAST = 0
            put(&mut bits, 0, 2); // MNIBBLES = 4
            put(&mut bits, (block.len() - 1) as u64, 16);
            put(&mut bits, 1, 1); // ISUNCOMPRESSED
            flush(&mut bits, out);
            out.extend_from_slice(block);
        }
        put(&mut bits, 1, 1); // ISLAST
        put(&mut bits, 1, 1); // ISLASTEMPTY
        flush(&mut bits, out);
    }

    fn ctrl(entries: &[(i64, i64, i64)]) -> Vec<u8> {
        let enc = |v: i64| {
            let m = v.unsigned_abs();
            (if v < 0 { m | 1 << 63 } else { m }).to_le_bytes()
        };
        entries
            .iter()
            .flat_map(|&(a, b, c)| [enc(a), enc(b), enc(c)].concat())
            .collect()
    }

    #[test]
    fn bsdf2_patches_of_every_stream_compression_apply() {
        let src: Vec<u8> = (0..100u8).collect();
        // out = (src[10..30] + 1) ++ "xyz" ++ (src[0..5] + 0) ++ (past the end: zeros + 2)
        let c = ctrl(&[(20, 3, -30), (5, 0, 93), (4, 0, 0)]);
        let mut diff = vec![1u8; 20];
        diff.extend([0u8; 5]);
        diff.extend([2u8; 4]);
        let mut want: Vec<u8> = src[10..30].iter().map(|b| b + 1).collect();
        want.extend(b"xyz");
        want.extend(&src[0..5]);
        want.extend([src[98] + 2, src[99] + 2, 2, 2]);
        for comp in [[0, 0, 0], [1, 1, 1], [2, 2, 2], [2, 0, 1]] {
            // The cursor starts at 10: a first entry only seeks.
            let mut c2 = ctrl(&[(0, 0, 10)]);
            c2.extend_from_slice(&c);
            let patch = bsdf2(comp, &c2, &diff, b"xyz", want.len() as u64);
            let mut out = vec![0; want.len()];
            decode_bsdiff(&patch, &src, &mut out).unwrap();
            assert_eq!(out, want, "{comp:?}");
            // Wrong sizes and truncations are refused.
            let mut short = vec![0; want.len() - 1];
            assert!(decode_bsdiff(&patch, &src, &mut short).is_err());
            for cut in 0..patch.len() {
                let mut out = vec![0; want.len()];
                assert!(
                    decode_bsdiff(&patch[..cut], &src, &mut out).is_err(),
                    "{comp:?} cut to {cut}"
                );
            }
        }
    }

    #[test]
    fn bsdiff40_patches_from_the_project_writer_apply() {
        let old: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut new = old.clone();
        new[100..140].fill(9);
        new.splice(5000..5000, b"inserted".iter().copied());
        let mut patch = Vec::new();
        romdelta_format::bsdiff40::diff(&old, &new, &mut patch).unwrap();
        let mut out = vec![0; new.len()];
        decode_bsdiff(&patch, &old, &mut out).unwrap();
        assert_eq!(out, new);
        assert!(decode_patch(PayloadOpKind::Replace, &patch, &old, &mut out).is_err());
    }

    #[test]
    fn hostile_control_entries_are_refused() {
        let src = [0u8; 16];
        for entries in [
            vec![(9, 0, 0)],                          // diff past the end
            vec![(0, 9, 0)],                          // extra past the end
            vec![(-1, 0, 0)],                         // negative size
            vec![(0, 0, i64::MAX), (0, 0, i64::MAX)], // cursor overflow
            vec![(0, 0, 0); 40],                      // no progress
        ] {
            let patch = bsdf2([0, 0, 0], &ctrl(&entries), &[0; 8], &[0; 8], 8);
            let mut out = [0u8; 8];
            assert!(
                decode_bsdiff(&patch, &src, &mut out).is_err(),
                "{entries:?}"
            );
        }
    }

    fn brotli(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            use std::io::Write as _;
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 9, 22);
            w.write_all(data).unwrap();
        }
        out
    }

    #[test]
    fn zucchini_patches_apply_and_damage_is_refused() {
        let old: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect();
        let mut new = old.clone();
        new[1000..1100].fill(7);
        new.extend_from_slice(b"appended");
        let data = brotli(&zucchini::generate(&old, &new).unwrap());
        let mut out = vec![0u8; new.len()];
        decode_zucchini(&data, &old, &mut out).unwrap();
        assert!(out == new);
        // The wrong size, the wrong source, a cut or damaged stream: refused.
        let mut short = vec![0u8; new.len() - 1];
        assert!(decode_zucchini(&data, &old, &mut short)
            .unwrap_err()
            .to_string()
            .contains("produces"));
        let mut other = old.clone();
        other[5] ^= 1;
        assert!(decode_zucchini(&data, &other, &mut out).is_err());
        for cut in [0, 1, data.len() / 2, data.len() - 1] {
            assert!(
                decode_zucchini(&data[..cut], &old, &mut out).is_err(),
                "cut at {cut}"
            );
        }
        for at in (0..data.len()).step_by(data.len() / 40 + 1) {
            let mut d = data.clone();
            d[at] ^= 0x20;
            let _ = decode_zucchini(&d, &old, &mut out);
        }
    }
}
