//! SOURCE_RECOMPRESS operation data: compressed clusters rebuilt from
//! their decompressed bytes.
//!
//! A compressed filesystem (EROFS with lz4 or lz4hc) stores a file as
//! physical clusters, each the compression of a run of the file's bytes.
//! A small change early in a file shifts every later cluster, so the
//! stored bytes of the old and new file share almost nothing, while their
//! decompressed bytes share almost everything. This operation
//! 1. decompresses the source clusters it names (from the source bytes it
//!    reads) into one *source stream*;
//! 2. decodes an inner patch (REPLACE, SOURCE_ZSTD or SOURCE_BSDIFF_SPARSE
//!    data) against that stream into the *target stream*: the new
//!    clusters' decompressed bytes, in *segments* (runs of clusters of one
//!    file), each followed by the bytes that follow its last cluster in the
//!    file (its tail: the compressor saw them when it filled that cluster);
//! 3. compresses each new cluster again, with the recorded compressor
//!    (liblz4's destSize functions at the recorded level and library
//!    version) from its first byte in the target stream, `lookahead` bytes
//!    past its end at most and never past its segment, into exactly its
//!    block count, or copies it as stored (plain), or takes it from the
//!    literal stream where generation found it does not reproduce.
//!
//! Wire form: `varint header_len · zstd(header) · varint inner_len · inner ·
//! literals` (literals: one zstd frame of the literal clusters' blocks, or
//! nothing when there are none). The header is specified in
//! docs/FORMAT.md; every count and length in it is checked against the
//! source bytes, the destination size and [`MAX_STREAM_LEN`] before
//! anything is allocated.

use crate::{FormatError, OpKind, Reader, Writer, BLOCK_SIZE};
use romdelta_codecs::lz4;

/// Most bytes of a source or target stream (bounds what one operation
/// decompresses into memory).
pub const MAX_STREAM_LEN: u64 = 32 << 20;
/// Most decompressed header bytes.
pub const MAX_HEADER_LEN: u64 = 4 << 20;
/// Most lookahead bytes the compressor may be given past a cluster.
pub const MAX_LOOKAHEAD: u64 = 1 << 20;
/// Header layout version written (version 1 is still read: it carries
/// every cluster's length).
const HEADER_VERSION: u8 = 2;
/// Bit of a cluster's kind byte: the cluster ends a segment.
const SEGMENT_END: u8 = 0x80;
/// Bit of a cluster's kind byte (header version 2, rebuilt clusters): its
/// length is not stored; it is what the compressor takes.
const IMPLICIT: u8 = 0x40;
/// Codec id of LZ4 (fast or HC).
const CODEC_LZ4: u8 = 1;

/// Where a compressed cluster's stream sits in its blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Zeros first, the stream ends at the last byte (EROFS `lz4_0padding`).
    Front,
    /// The stream first, zeros after it.
    Back,
}

/// How a source piece's stored bytes hold its stream bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceEncoding {
    /// Stored as they are: the first `logical_len` stored bytes.
    Plain,
    /// One LZ4 block (zeros before it allowed, as `lz4_0padding` writes them).
    Lz4,
}

/// A run of source bytes that adds to the source stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourcePiece {
    /// How the stored bytes encode the stream bytes.
    pub encoding: PieceEncoding,
    /// First stored byte, as an offset into the operation's source bytes.
    pub offset: u64,
    /// Stored bytes.
    pub stored_len: u64,
    /// Stream bytes they add.
    pub logical_len: u64,
}

/// How a target cluster is produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterHow {
    /// Its stream bytes as they are, zeros after them.
    Plain,
    /// Compressed again with the recorded compressor.
    Rebuild,
    /// Its blocks from the literal stream.
    Literal,
}

/// One destination cluster, in destination order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetCluster {
    /// How it is produced.
    pub how: ClusterHow,
    /// Destination blocks it fills.
    pub blocks: u64,
    /// Target stream bytes it holds (decompressed); 0 in a parsed header
    /// for an implicit cluster, whose length is known once it is rebuilt.
    pub logical_len: u64,
    /// `Some(n)` when it ends a segment: `n` tail bytes follow it in the
    /// target stream.
    pub tail_len: Option<u64>,
    /// A rebuilt cluster whose length is not stored: the compressor, given
    /// the stream from the cluster's first byte to its segment's end
    /// (tail included), takes exactly the cluster's bytes. The new image's
    /// own metadata says it too; the package need not.
    pub implicit: bool,
    /// At a segment's last cluster whose segment holds an implicit cluster:
    /// the stream bytes of the segment's clusters (its tail not counted).
    /// Ignored elsewhere (the sum of the clusters' lengths).
    pub segment_len: u64,
}

/// The header of a SOURCE_RECOMPRESS operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The compressor of rebuilt clusters.
    pub mode: lz4::Mode,
    /// liblz4 version (`LZ4_versionNumber`) that reproduced every rebuilt
    /// cluster when the package was made.
    pub library: u32,
    /// Where compressed streams sit in their blocks.
    pub padding: Padding,
    /// Most stream bytes past a cluster's end given to its compressor.
    pub lookahead: u64,
    /// Kind of the inner patch.
    pub inner: OpKind,
    /// The source pieces, in stream order.
    pub sources: Vec<SourcePiece>,
    /// The target clusters, in destination order.
    pub clusters: Vec<TargetCluster>,
}

impl Header {
    /// Bytes of the source stream.
    pub fn source_len(&self) -> u64 {
        self.sources.iter().map(|p| p.logical_len).sum()
    }

    /// Bytes of the target stream (the clusters' and the tail's).
    pub fn target_len(&self) -> u64 {
        self.segments().iter().map(|s| s.len + s.tail).sum()
    }

    /// The segments, in order: the last may end without a tail (header
    /// version 1).
    pub fn segments(&self) -> Vec<SegmentSpan> {
        let mut out = Vec::new();
        let (mut first, mut sum, mut implicit) = (0, 0u64, false);
        for (i, c) in self.clusters.iter().enumerate() {
            sum += c.logical_len;
            implicit |= c.implicit;
            let last = i + 1 == self.clusters.len();
            if c.tail_len.is_some() || last {
                out.push(SegmentSpan {
                    clusters: first..i + 1,
                    len: if implicit { c.segment_len } else { sum },
                    tail: c.tail_len.unwrap_or(0),
                });
                (first, sum, implicit) = (i + 1, 0, false);
            }
        }
        out
    }
}

/// One segment of a header's clusters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSpan {
    /// Its clusters, as indexes.
    pub clusters: std::ops::Range<usize>,
    /// The stream bytes of its clusters.
    pub len: u64,
    /// The tail bytes after them.
    pub tail: u64,
}

impl Header {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(HEADER_VERSION);
        w.u8(CODEC_LZ4);
        w.u32_le(self.library);
        w.u8(self.mode.code());
        w.u8(match self.padding {
            Padding::Front => 0,
            Padding::Back => 1,
        });
        w.varint(self.lookahead);
        w.u8(self.inner.code());
        w.varint(self.source_len());
        w.varint(self.sources.len() as u64);
        let mut end = 0u64;
        for p in &self.sources {
            w.u8(match p.encoding {
                PieceEncoding::Plain => 0,
                PieceEncoding::Lz4 => 1,
            });
            // The offset as a gap from the previous piece's end, which may
            // be negative (pieces may overlap or go back: two tails in one
            // block), zigzag-coded.
            let gap = p.offset as i64 - end as i64;
            w.varint(((gap << 1) ^ (gap >> 63)) as u64);
            w.varint(p.stored_len);
            // An lz4 piece's stream length is what its block decodes to.
            if p.encoding == PieceEncoding::Plain {
                w.varint(p.logical_len);
            }
            end = p.offset + p.stored_len;
        }
        w.varint(self.clusters.len() as u64);
        let lens: Vec<u64> = self.segments().iter().map(|s| s.len).collect();
        let mut segment = 0;
        for (i, c) in self.clusters.iter().enumerate() {
            // The last segment always ends, with no tail when none is named.
            let tail = c.tail_len.or((i + 1 == self.clusters.len()).then_some(0));
            let how = match c.how {
                ClusterHow::Plain => 0,
                ClusterHow::Rebuild => 1,
                ClusterHow::Literal => 2,
            };
            let implicit = c.implicit && c.how == ClusterHow::Rebuild;
            w.u8(how
                | if tail.is_some() { SEGMENT_END } else { 0 }
                | if implicit { IMPLICIT } else { 0 });
            w.varint(c.blocks);
            if !implicit {
                w.varint(c.logical_len);
            }
            if let Some(t) = tail {
                w.varint(t);
                w.varint(lens[segment]);
                segment += 1;
            }
        }
        w.into_bytes()
    }

    /// Parses a decompressed header and checks it against `src_len` source
    /// bytes and `dst_len` destination bytes.
    /// The header and the source stream's length (stored in version 2,
    /// the pieces' sum in version 1).
    fn decode(b: &[u8], src_len: u64, dst_len: u64) -> Result<(Header, u64), FormatError> {
        let bad = |what: &'static str, d: String| FormatError::invalid(what, d);
        let mut r = Reader::new(b);
        let v = r.u8("recompress header version")?;
        if v != 1 && v != HEADER_VERSION {
            return Err(bad(
                "recompress header version",
                format!("unknown version {v}"),
            ));
        }
        let codec = r.u8("recompress codec")?;
        if codec != CODEC_LZ4 {
            return Err(bad("recompress codec", format!("unknown codec {codec}")));
        }
        let library = r.u32_le("recompress library version")?;
        let code = r.u8("recompress mode")?;
        let mode = lz4::Mode::from_code(code)
            .ok_or_else(|| bad("recompress mode", format!("unknown lz4 mode {code}")))?;
        let padding = match r.u8("recompress padding")? {
            0 => Padding::Front,
            1 => Padding::Back,
            p => return Err(bad("recompress padding", format!("unknown code {p}"))),
        };
        let lookahead = r.varint_max("recompress lookahead", MAX_LOOKAHEAD)?;
        let inner = OpKind::from_code(r.u8("recompress inner kind")?)?;
        // Version 2: an xz stream inside the clusters (a kernel image stored
        // compressed) may be rebuilt too.
        let allowed = match inner {
            OpKind::Replace | OpKind::SourceZstd | OpKind::SourceBsdiffSparse => true,
            OpKind::SourceXzRebuild => v >= 2,
            _ => false,
        };
        if !allowed {
            return Err(bad(
                "recompress inner kind",
                format!("{inner} cannot be an inner patch"),
            ));
        }
        let declared = if v >= 2 {
            Some(r.varint_max("recompress source stream length", MAX_STREAM_LEN)?)
        } else {
            None
        };
        let n = r.count("recompress source pieces", 4, u32::MAX as u64)?;
        let mut sources = r.vec_for::<SourcePiece>(n);
        let (mut source_len, mut end) = (0u64, 0u64);
        for _ in 0..n {
            let encoding = match r.u8("source piece encoding")? {
                0 => PieceEncoding::Plain,
                1 => PieceEncoding::Lz4,
                e => return Err(bad("source piece encoding", format!("unknown code {e}"))),
            };
            let offset = if v >= 2 {
                let z = r.varint("source piece offset")?;
                let gap = (z >> 1) as i64 ^ -((z & 1) as i64);
                u64::try_from(end as i64 + gap)
                    .ok()
                    .filter(|_| gap.unsigned_abs() <= src_len)
                    .ok_or_else(|| {
                        bad(
                            "source piece",
                            format!("a gap of {gap} bytes from byte {end} lies past the {src_len} source bytes"),
                        )
                    })?
            } else {
                r.varint("source piece offset")?
            };
            let stored_len = r.varint("source piece length")?;
            // Version 2: an lz4 piece's length is what it decodes to (0
            // here until then).
            let logical_len = if v >= 2 && encoding == PieceEncoding::Lz4 {
                0
            } else {
                r.varint("source piece stream length")?
            };
            if offset.checked_add(stored_len).is_none_or(|e| e > src_len) {
                return Err(bad(
                    "source piece",
                    format!("bytes {offset}+{stored_len} lie past the {src_len} source bytes"),
                ));
            }
            if encoding == PieceEncoding::Plain && logical_len > stored_len {
                return Err(bad(
                    "source piece",
                    format!("a plain piece of {stored_len} bytes cannot hold {logical_len}"),
                ));
            }
            source_len = source_len.saturating_add(logical_len);
            if source_len > MAX_STREAM_LEN {
                return Err(FormatError::TooLarge {
                    what: "recompress source stream",
                    value: source_len,
                    limit: MAX_STREAM_LEN,
                });
            }
            sources.push(SourcePiece {
                encoding,
                offset,
                stored_len,
                logical_len,
            });
            end = offset + stored_len;
        }
        let n = r.count("recompress target clusters", 2, dst_len / BLOCK_SIZE)?;
        let mut clusters = r.vec_for::<TargetCluster>(n);
        let (mut blocks, mut target_len) = (0u64, 0u64);
        // The current segment's stored lengths and implicit clusters.
        let (mut explicit, mut implicits) = (0u64, 0u64);
        for i in 0..n {
            let code = r.u8("target cluster kind")?;
            let implicit = v >= 2 && code & IMPLICIT != 0;
            let how = match code & !(SEGMENT_END | if v >= 2 { IMPLICIT } else { 0 }) {
                0 => ClusterHow::Plain,
                1 => ClusterHow::Rebuild,
                2 => ClusterHow::Literal,
                h => return Err(bad("target cluster kind", format!("unknown code {h}"))),
            };
            if implicit && how != ClusterHow::Rebuild {
                return Err(bad(
                    "target cluster kind",
                    "only a rebuilt cluster's length can be implicit".to_string(),
                ));
            }
            let b = r.varint_max("target cluster blocks", dst_len / BLOCK_SIZE)?;
            let logical_len = if implicit {
                0
            } else {
                r.varint_max("target cluster stream length", MAX_STREAM_LEN)?
            };
            let ends = code & SEGMENT_END != 0;
            let tail_len = if ends {
                Some(r.varint_max("target segment tail length", MAX_STREAM_LEN)?)
            } else {
                None
            };
            let segment_len = if ends && v >= 2 {
                r.varint_max("target segment length", MAX_STREAM_LEN)?
            } else {
                0
            };
            if b == 0 || (logical_len == 0 && !implicit) {
                return Err(bad("target cluster", "an empty cluster".to_string()));
            }
            explicit += logical_len;
            implicits += u64::from(implicit);
            if ends && v >= 2 {
                // Each implicit cluster takes one byte at least.
                let fits = if implicits == 0 {
                    explicit == segment_len
                } else {
                    explicit + implicits <= segment_len
                };
                if !fits {
                    return Err(bad(
                        "target segment",
                        format!(
                            "{segment_len} bytes cannot hold clusters of {explicit} stored bytes and {implicits} implicit ones"
                        ),
                    ));
                }
                target_len += segment_len - explicit;
                (explicit, implicits) = (0, 0);
            } else if v >= 2 && i + 1 == n {
                return Err(bad(
                    "target clusters",
                    "the last cluster does not end a segment".to_string(),
                ));
            } else if ends {
                (explicit, implicits) = (0, 0);
            }
            if how == ClusterHow::Plain && logical_len > b * BLOCK_SIZE {
                return Err(bad(
                    "target cluster",
                    format!("a plain cluster of {b} blocks cannot hold {logical_len} bytes"),
                ));
            }
            blocks += b;
            target_len += logical_len + tail_len.unwrap_or(0);
            if blocks * BLOCK_SIZE > dst_len || target_len > MAX_STREAM_LEN {
                return Err(bad(
                    "target clusters",
                    format!("more than the operation's {dst_len} bytes or the stream limit"),
                ));
            }
            clusters.push(TargetCluster {
                how,
                blocks: b,
                logical_len,
                tail_len,
                implicit,
                segment_len,
            });
        }
        if blocks * BLOCK_SIZE != dst_len {
            return Err(bad(
                "target clusters",
                format!(
                    "fill {} bytes, the operation writes {dst_len}",
                    blocks * BLOCK_SIZE
                ),
            ));
        }
        r.finish("recompress header")?;
        let implicit = sources.iter().any(|p| p.logical_len == 0);
        let source_stream_len = match declared {
            Some(d) if d == source_len || (implicit && d > source_len) => d,
            Some(d) => {
                return Err(bad(
                    "recompress source stream",
                    format!("{d} bytes cannot be pieces of {source_len} stored bytes"),
                ))
            }
            None => source_len,
        };
        let header = Header {
            mode,
            library,
            padding,
            lookahead,
            inner,
            sources,
            clusters,
        };
        Ok((header, source_stream_len))
    }
}

/// Encodes SOURCE_RECOMPRESS data from its header, inner patch data and the
/// literal clusters' blocks (in destination order), at zstd `level`.
pub fn encode(header: &Header, inner: &[u8], literals: &[u8], level: i32) -> Vec<u8> {
    let head = crate::ops::encode_replace(&header.encode(), level);
    let mut w = Writer::new();
    w.varint(head.len() as u64);
    w.bytes(&head);
    w.varint(inner.len() as u64);
    w.bytes(inner);
    if !literals.is_empty() {
        w.bytes(&crate::ops::encode_replace(literals, level));
    }
    w.into_bytes()
}

/// The parts of SOURCE_RECOMPRESS data.
pub struct Parsed<'a> {
    /// The header.
    pub header: Header,
    /// Bytes of the source stream (its lz4 pieces' lengths may be implicit
    /// in the header).
    pub source_len: u64,
    /// The inner patch data.
    pub inner: &'a [u8],
    /// The literal stream (empty when no cluster is literal).
    pub literals: &'a [u8],
}

/// Splits SOURCE_RECOMPRESS data and checks its header against `src_len`
/// source and `dst_len` destination bytes.
pub fn parse(data: &[u8], src_len: u64, dst_len: u64) -> Result<Parsed<'_>, FormatError> {
    let mut r = Reader::new(data);
    let head_len = r.varint("recompress header length")?;
    let head = r.take(head_len, "recompress header")?;
    let inner_len = r.varint("recompress inner length")?;
    let inner = r.take(inner_len, "recompress inner patch")?;
    let literals = r.take(r.remaining() as u64, "recompress literals")?;
    let size = zstd::zstd_safe::get_frame_content_size(head)
        .ok()
        .flatten()
        .ok_or_else(|| FormatError::invalid("recompress header", "no content size"))?;
    if size > MAX_HEADER_LEN {
        return Err(FormatError::TooLarge {
            what: "recompress header",
            value: size,
            limit: MAX_HEADER_LEN,
        });
    }
    let mut bytes = vec![0u8; size as usize];
    crate::ops::decode_replace(head, &mut bytes)?;
    let (header, source_len) = Header::decode(&bytes, src_len, dst_len)?;
    let literal_clusters = header.clusters.iter().any(|c| c.how == ClusterHow::Literal);
    if literal_clusters == literals.is_empty() {
        return Err(FormatError::invalid(
            "recompress literals",
            if literal_clusters {
                "missing"
            } else {
                "present, but no cluster is literal"
            },
        ));
    }
    Ok(Parsed {
        header,
        source_len,
        inner,
        literals,
    })
}

/// The inner kind of SOURCE_RECOMPRESS `data`, if its header parses (for
/// `dst_len` destination bytes, source bytes unchecked).
pub fn inner_kind(data: &[u8], dst_len: u64) -> Option<OpKind> {
    parse(data, u64::MAX / 4, dst_len)
        .ok()
        .map(|p| p.header.inner)
}

/// Memory, in bytes, an applier needs to run `p` reading `src_len` and
/// writing `dst_len` bytes: the source and destination bytes, the source
/// stream, the target stream, the literals,
/// 16 MiB for the rest, and an inner xz rebuild's own need
/// ([`crate::xz_rebuild::apply_memory`]) over the streams.
pub fn apply_memory(p: &Parsed<'_>, src_len: u64, dst_len: u64) -> Result<u64, FormatError> {
    let h = &p.header;
    let (s, t) = (p.source_len, h.target_len());
    let literals: u64 = h
        .clusters
        .iter()
        .filter(|c| c.how == ClusterHow::Literal)
        .map(|c| c.blocks * BLOCK_SIZE)
        .sum();
    if h.inner == OpKind::SourceXzRebuild {
        // Its own need counts both streams.
        let (x, _) = crate::xz_rebuild::parse(p.inner, s, t)?;
        return Ok(src_len + 2 * dst_len + literals + crate::xz_rebuild::apply_memory(&x, s, t));
    }
    Ok(src_len + 2 * dst_len + s + t + literals + (16 << 20))
}

/// Refuses a header this build cannot reproduce: one recorded with a
/// liblz4 version other than the one built in.
pub fn check_library(header: &Header) -> Result<(), FormatError> {
    let have = lz4::library_version();
    if header.library != have {
        return Err(FormatError::invalid(
            "recompress library",
            format!(
                "the package was made with liblz4 {}, this romdelta has liblz4 {}: its clusters would not be rebuilt exactly",
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

/// Decompresses the source pieces of `header` from `src` into the source
/// stream of exactly `len` bytes. An lz4 piece whose length the header
/// leaves implicit (0) adds what its block decodes to.
pub fn source_stream(header: &Header, len: u64, src: &[u8]) -> Result<Vec<u8>, FormatError> {
    let mut out = Vec::with_capacity(len as usize);
    // Where a piece of implicit length is decoded first, reused.
    let mut scratch = Vec::new();
    for (i, p) in header.sources.iter().enumerate() {
        let stored = &src[p.offset as usize..(p.offset + p.stored_len) as usize];
        let at = out.len();
        let bad =
            |e: String| FormatError::invalid("recompress source piece", format!("piece {i}: {e}"));
        match p.encoding {
            PieceEncoding::Plain => out.extend_from_slice(&stored[..p.logical_len as usize]),
            PieceEncoding::Lz4 => {
                let z = stored.iter().take_while(|&&b| b == 0).count();
                if p.logical_len > 0 {
                    out.resize(at + p.logical_len as usize, 0);
                    lz4::decompress_exact(&stored[z..], &mut out[at..]).map_err(bad)?;
                } else {
                    // An lz4 block expands 255-fold at most.
                    let room = (len as usize)
                        .saturating_sub(at)
                        .min(stored.len() * 256 + 64);
                    if scratch.len() < room {
                        scratch.resize(room, 0);
                    }
                    let n =
                        lz4::decompress_block(&stored[z..], &mut scratch[..room]).map_err(bad)?;
                    out.extend_from_slice(&scratch[..n]);
                }
            }
        }
        if out.len() as u64 > len {
            return Err(FormatError::invalid(
                "recompress source stream",
                format!("its pieces decode to more than its {len} bytes"),
            ));
        }
    }
    if out.len() as u64 != len {
        return Err(FormatError::invalid(
            "recompress source stream",
            format!("its pieces decode to {} bytes, not {len}", out.len()),
        ));
    }
    Ok(out)
}

/// Writes cluster `c`, whose stream bytes start at `stream[at..]` and whose
/// segment ends at `stream[..segment_end]`, into `out` (its blocks);
/// returns the stream bytes it holds, or `None` if the compressor did not
/// take exactly the cluster's bytes (an implicit cluster: took nothing) or
/// the stream did not fit.
pub fn rebuild_cluster(
    header: &Header,
    compressor: &mut lz4::Compressor,
    stream: &[u8],
    at: usize,
    segment_end: usize,
    c: &TargetCluster,
    out: &mut [u8],
) -> Option<usize> {
    let len = c.logical_len as usize;
    match c.how {
        ClusterHow::Plain => {
            out[..len].copy_from_slice(stream.get(at..at + len)?);
            out[len..].fill(0);
            Some(len)
        }
        ClusterHow::Rebuild => {
            let end = if c.implicit {
                segment_end
            } else {
                (at + len + header.lookahead as usize).min(segment_end)
            };
            let (n, taken) = compressor.compress_dest_size(header.mode, stream.get(at..end)?, out);
            if n == 0 || taken == 0 || (!c.implicit && taken != len) {
                return None;
            }
            if header.padding == Padding::Front {
                let pad = out.len() - n;
                out.copy_within(..n, pad);
                out[..pad].fill(0);
            } else {
                out[n..].fill(0);
            }
            Some(taken)
        }
        ClusterHow::Literal => None,
    }
}

/// Decodes SOURCE_RECOMPRESS data against `src` into exactly `out.len()`
/// bytes.
pub fn decode(data: &[u8], src: &[u8], out: &mut [u8]) -> Result<(), FormatError> {
    let p = parse(data, src.len() as u64, out.len() as u64)?;
    let h = &p.header;
    if h.clusters.iter().any(|c| c.how == ClusterHow::Rebuild) {
        check_library(h)?;
    }
    let source = source_stream(h, p.source_len, src)?;
    let mut stream = vec![0u8; h.target_len() as usize];
    let inner_src: &[u8] = if h.inner == OpKind::Replace {
        &[]
    } else {
        &source
    };
    crate::ops::decode(h.inner, p.inner, inner_src, &mut stream)?;
    drop(source);
    let literal_len: u64 = h
        .clusters
        .iter()
        .filter(|c| c.how == ClusterHow::Literal)
        .map(|c| c.blocks * BLOCK_SIZE)
        .sum();
    let mut literals = vec![
        0u8;
        if p.literals.is_empty() {
            0
        } else {
            literal_len as usize
        }
    ];
    if !p.literals.is_empty() {
        crate::ops::decode_replace(p.literals, &mut literals)?;
    }
    let mut compressor = lz4::Compressor::new();
    let (mut at, mut lit, mut dst) = (0usize, 0usize, 0usize);
    for s in h.segments() {
        let (start, end) = (at, at + s.len as usize);
        let segment_end = end + s.tail as usize;
        for i in s.clusters {
            let c = &h.clusters[i];
            let n = (c.blocks * BLOCK_SIZE) as usize;
            let o = &mut out[dst..dst + n];
            let taken = if c.how == ClusterHow::Literal {
                o.copy_from_slice(&literals[lit..lit + n]);
                lit += n;
                Some(c.logical_len as usize)
            } else {
                rebuild_cluster(h, &mut compressor, &stream, at, segment_end, c, o)
                    .filter(|&t| at + t <= end)
            };
            let Some(taken) = taken else {
                return Err(FormatError::invalid(
                    "recompress cluster",
                    format!(
                        "cluster {i} ({} into {} blocks) does not compress as the package says with {}",
                        if c.implicit {
                            "its implicit bytes".to_string()
                        } else {
                            format!("{} bytes", c.logical_len)
                        },
                        c.blocks,
                        h.mode
                    ),
                ));
            };
            at += taken;
            dst += n;
        }
        if at != end {
            return Err(FormatError::invalid(
                "recompress segment",
                format!(
                    "its clusters hold {} bytes, the package says {}",
                    at - start,
                    s.len
                ),
            ));
        }
        at = segment_end;
    }
    Ok(())
}

/// For each cluster of `h`, where its segment ends in the target stream
/// (after its tail), for clusters whose lengths are all known.
pub fn segment_ends(h: &Header) -> Vec<usize> {
    let mut ends = vec![0usize; h.clusters.len()];
    let mut at = 0usize;
    for s in h.segments() {
        at += (s.len + s.tail) as usize;
        for i in s.clusters {
            ends[i] = at;
        }
    }
    ends
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Text-like bytes: words of a small vocabulary, some noise.
    fn text(seed: u32, n: usize) -> Vec<u8> {
        let words: [&[u8]; 6] = [
            b"system ",
            b"vendor ",
            b"cluster ",
            b"lz4hc ",
            b"block\n",
            b"0x7f ",
        ];
        let mut x = seed | 1;
        let mut v = Vec::with_capacity(n + 16);
        while v.len() < n {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            v.extend_from_slice(words[(x % 6) as usize]);
            if x.is_multiple_of(11) {
                v.push((x >> 9) as u8);
            }
        }
        v.truncate(n);
        v
    }

    /// Compresses `file` into 4 KiB clusters as mkfs.erofs does (each
    /// cluster takes what fits; front zero padding); returns the stored
    /// blocks and the clusters' logical lengths.
    fn clusters_of(file: &[u8], mode: lz4::Mode) -> (Vec<u8>, Vec<u64>) {
        let mut c = lz4::Compressor::new();
        let (mut at, mut blocks, mut lens) = (0, Vec::new(), Vec::new());
        while at < file.len() {
            let mut out = vec![0u8; BLOCK_SIZE as usize];
            let (n, taken) = c.compress_dest_size(mode, &file[at..], &mut out);
            let pad = out.len() - n;
            out.copy_within(..n, pad);
            out[..pad].fill(0);
            blocks.extend_from_slice(&out);
            lens.push(taken as u64);
            at += taken;
        }
        (blocks, lens)
    }

    /// A source file in lz4hc clusters, a target file (the source with an
    /// insertion near its start, so every later cluster shifts) in lz4hc
    /// clusters, one of which is damaged after compression (so it must be
    /// literal), and the operation data between them.
    fn fixture() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let (src, dst, header, inner) = fixture_parts();
        let data = encode(&header, &inner, &dst[2 * 4096..3 * 4096], 3);
        (src, dst, data)
    }

    /// [`fixture`]'s source and destination bytes, its header with every
    /// length (as the generator holds it) and its inner patch.
    fn fixture_parts() -> (Vec<u8>, Vec<u8>, Header, Vec<u8>) {
        let mode = lz4::Mode::Hc(9);
        let old = text(3, 60_000);
        let mut new = old.clone();
        new.splice(500..500, text(9, 300));
        new[30_000..30_010].copy_from_slice(b"0123456789");
        let (src, src_lens) = clusters_of(&old, mode);
        let (mut dst, dst_lens) = clusters_of(&new, mode);
        // The third cluster's last byte damaged after compression.
        dst[3 * 4096 - 1] ^= 0x40;
        let mut off = 0;
        let sources = src_lens
            .iter()
            .map(|&l| {
                off += BLOCK_SIZE;
                SourcePiece {
                    encoding: PieceEncoding::Lz4,
                    offset: off - BLOCK_SIZE,
                    stored_len: BLOCK_SIZE,
                    logical_len: l,
                }
            })
            .collect();
        let clusters = dst_lens
            .iter()
            .enumerate()
            .map(|(i, &l)| TargetCluster {
                how: if i == 2 {
                    ClusterHow::Literal
                } else {
                    ClusterHow::Rebuild
                },
                blocks: 1,
                logical_len: l,
                tail_len: None,
                implicit: false,
                segment_len: 0,
            })
            .collect();
        let header = Header {
            mode,
            library: lz4::library_version(),
            padding: Padding::Front,
            lookahead: 65536,
            inner: OpKind::SourceZstd,
            sources,
            clusters,
        };
        let inner = crate::ops::encode_source_zstd(&old, &new, 3);
        (src, dst, header, inner)
    }

    #[test]
    fn shifted_clusters_are_rebuilt_exactly() {
        let (src, dst, data) = fixture();
        let mut out = vec![0xa5; dst.len()];
        decode(&data, &src, &mut out).unwrap();
        assert_eq!(out, dst);
        // Far smaller than the stored bytes it rebuilds.
        assert!(
            data.len() * 4 < dst.len(),
            "{} of {} bytes",
            data.len(),
            dst.len()
        );
        // Through the operation kind too.
        let mut again = vec![0; dst.len()];
        crate::ops::decode(OpKind::SourceRecompress, &data, &src, &mut again).unwrap();
        assert_eq!(again, dst);
    }

    /// The committed seed of the `recompress_decode` fuzz target (its input
    /// layout: u8 blocks − 1 · u16le source length · source · data), a
    /// small version of [`fixture`] checked here and written anew with
    /// `ROMDELTA_WRITE_FUZZ_SEEDS=1`.
    #[test]
    fn fuzz_seed_is_a_valid_operation() {
        let mode = lz4::Mode::Hc(9);
        let old = text(5, 9000);
        let mut new = old.clone();
        new.splice(100..100, *b"inserted");
        let (src, src_lens) = clusters_of(&old, mode);
        let (dst, dst_lens) = clusters_of(&new, mode);
        let mut header = Header {
            mode,
            library: lz4::library_version(),
            padding: Padding::Front,
            lookahead: 4096,
            inner: OpKind::SourceBsdiffSparse,
            sources: (0..src_lens.len())
                .map(|i| SourcePiece {
                    encoding: PieceEncoding::Lz4,
                    offset: i as u64 * BLOCK_SIZE,
                    stored_len: BLOCK_SIZE,
                    logical_len: src_lens[i],
                })
                .collect(),
            clusters: dst_lens
                .iter()
                .map(|&l| TargetCluster {
                    how: ClusterHow::Rebuild,
                    blocks: 1,
                    logical_len: l,
                    tail_len: None,
                    implicit: false,
                    segment_len: 0,
                })
                .collect(),
        };
        // Its rebuilt clusters' lengths implicit, as the generator writes them.
        implicit(&mut header);
        let patch = crate::ops::BsdiffPatch {
            controls: vec![
                crate::ops::Control {
                    add: 100,
                    copy: 8,
                    seek: 0,
                },
                crate::ops::Control {
                    add: old.len() as u64 - 100,
                    copy: 0,
                    seek: 0,
                },
            ],
            diff: vec![0; old.len()],
            extra: b"inserted".to_vec(),
        };
        let inner = crate::ops::encode_bsdiff_sparse(&patch, 3);
        let data = encode(&header, &inner, &[], 3);
        crate::testkit::check_decode_seed(decode, "recompress_decode", &src, &dst, &data);
    }

    /// Two files in one operation: each file's clusters are one segment, so
    /// the compressor of a file's last cluster never sees the next file.
    #[test]
    fn segments_keep_files_apart() {
        let mode = lz4::Mode::Hc(9);
        let files = [text(21, 20_000), text(22, 9_000)];
        let (mut dst, mut clusters) = (Vec::new(), Vec::new());
        for f in &files {
            let (blocks, lens) = clusters_of(f, mode);
            dst.extend_from_slice(&blocks);
            let last = lens.len() - 1;
            clusters.extend(lens.iter().enumerate().map(|(i, &l)| TargetCluster {
                how: ClusterHow::Rebuild,
                blocks: 1,
                logical_len: l,
                tail_len: (i == last).then_some(0),
                implicit: false,
                segment_len: 0,
            }));
        }
        let stream = files.concat();
        let src = vec![0u8; 4096];
        let mut header = Header {
            mode,
            library: lz4::library_version(),
            padding: Padding::Front,
            lookahead: 65536,
            inner: OpKind::Replace,
            sources: vec![SourcePiece {
                encoding: PieceEncoding::Plain,
                offset: 0,
                stored_len: 4096,
                logical_len: 16,
            }],
            clusters,
        };
        let inner = crate::ops::encode_replace(&stream, 3);
        let mut out = vec![0; dst.len()];
        decode(&encode(&header, &inner, &[], 3), &src, &mut out).unwrap();
        assert_eq!(out, dst);
        // Without the segment end, the first file's last cluster would be
        // compressed with the second file's bytes after it.
        let first_last = header
            .clusters
            .iter()
            .position(|c| c.tail_len.is_some())
            .unwrap();
        header.clusters[first_last].tail_len = None;
        let e = decode(&encode(&header, &inner, &[], 3), &src, &mut out).unwrap_err();
        assert!(
            e.to_string().contains(&format!("cluster {first_last} ")),
            "{e}"
        );
    }

    #[test]
    fn every_truncation_and_wrong_size_is_refused() {
        let (src, dst, data) = fixture();
        // The cut source is shorter than the pieces it names.
        let cut = src.len() - 4096;
        crate::testkit::refuses_cuts_and_sizes(decode, &src, dst.len(), &data, cut);
    }

    #[test]
    fn damaged_bytes_never_panic() {
        let (src, dst, data) = fixture();
        let mut out = vec![0; dst.len()];
        for i in (0..data.len()).step_by(7) {
            let mut d = data.clone();
            d[i] ^= 0x5a;
            let _ = decode(&d, &src, &mut out);
        }
        // A damaged source cluster fails in its decompression.
        let mut s = src.clone();
        s[4096 + 2000] ^= 0xff;
        let _ = decode(&data, &s, &mut out);
    }

    /// The header with one change, encoded into operation data.
    fn with_header(f: impl FnOnce(&mut Header)) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let (src, dst, mut h, inner) = fixture_parts();
        f(&mut h);
        let lit = if h.clusters.iter().any(|c| c.how == ClusterHow::Literal) {
            dst[2 * 4096..3 * 4096].to_vec()
        } else {
            Vec::new()
        };
        (src, dst.clone(), encode(&h, &inner, &lit, 3))
    }

    #[test]
    fn hostile_headers_are_refused_with_their_reason() {
        type Change = Box<dyn Fn(&mut Header)>;
        let cases: [(&str, Change); 7] = [
            (
                "liblz4 1.9.3, this romdelta has liblz4 1.9.4",
                Box::new(|h| h.library = 10903),
            ),
            (
                "does not compress as the package says",
                Box::new(|h| h.mode = lz4::Mode::Hc(1)),
            ),
            (
                "stream limit",
                Box::new(|h| h.clusters[0].logical_len = MAX_STREAM_LEN),
            ),
            (
                "an empty cluster",
                Box::new(|h| h.clusters[1].logical_len = 0),
            ),
            (
                "cannot be an inner patch",
                Box::new(|h| h.inner = OpKind::SourceCopy),
            ),
            ("past the", Box::new(|h| h.sources[0].offset = u64::MAX - 1)),
            (
                "recompress source stream",
                Box::new(|h| {
                    h.sources[1].encoding = PieceEncoding::Plain;
                    h.sources[1].logical_len = MAX_STREAM_LEN;
                }),
            ),
        ];
        for (want, f) in cases {
            let (src, dst, data) = with_header(f);
            let mut out = vec![0; dst.len()];
            let e = decode(&data, &src, &mut out).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
        // Literals present although no cluster is literal, and missing.
        let (src, dst, mut h, inner) = fixture_parts();
        h.clusters[2].how = ClusterHow::Rebuild;
        let data = encode(&h, &inner, &dst[2 * 4096..3 * 4096], 3);
        let e = decode(&data, &src, &mut vec![0; dst.len()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no cluster is literal"), "{e}");
        let (src, dst, data) = with_header(|h| h.clusters[2].how = ClusterHow::Rebuild);
        let mut out = vec![0; dst.len()];
        // Rebuilt, the damaged cluster comes out undamaged: not the target.
        assert!(decode(&data, &src, &mut out).is_err() || out != dst);
    }

    /// Marks every rebuilt cluster of `h` implicit, its one segment's
    /// length recorded at its last cluster.
    fn implicit(h: &mut Header) {
        let len: u64 = h.clusters.iter().map(|c| c.logical_len).sum();
        for c in &mut h.clusters {
            c.implicit = c.how == ClusterHow::Rebuild;
        }
        h.clusters.last_mut().unwrap().segment_len = len;
    }

    /// Lengths the compressor takes anyway are not stored, and decode as
    /// the stored ones do; a segment whose recorded length disagrees with
    /// what its clusters take is refused, naming what was found.
    #[test]
    fn implicit_lengths_cost_nothing_and_are_checked() {
        let (src, dst, explicit) = fixture();
        let (_, _, data) = with_header(implicit);
        assert!(
            data.len() < explicit.len(),
            "{} vs {}",
            data.len(),
            explicit.len()
        );
        let p = parse(&data, src.len() as u64, dst.len() as u64).unwrap();
        assert!(p
            .header
            .clusters
            .iter()
            .any(|c| c.implicit && c.logical_len == 0));
        let mut out = vec![0; dst.len()];
        decode(&data, &src, &mut out).unwrap();
        assert_eq!(out, dst);
        for cut in 0..data.len() {
            assert!(
                decode(&data[..cut], &src, &mut vec![0; dst.len()]).is_err(),
                "cut {cut}"
            );
        }
        // One byte more or fewer than the clusters take.
        for delta in [1i64, -1] {
            let (_, _, d) = with_header(|h| {
                implicit(h);
                let last = h.clusters.last_mut().unwrap();
                last.segment_len = last.segment_len.saturating_add_signed(delta);
            });
            let e = decode(&d, &src, &mut vec![0; dst.len()])
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("recompress segment")
                    || e.contains("does not compress")
                    || e.contains("expands to")
                    || e.contains("too small"),
                "{delta}: {e}"
            );
        }
        // A segment too short for its stored lengths.
        let (_, _, d) = with_header(|h| {
            implicit(h);
            h.clusters.last_mut().unwrap().segment_len = 1;
        });
        let e = decode(&d, &src, &mut vec![0; dst.len()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot hold"), "{e}");
        // Another compressor takes other lengths.
        let (_, _, d) = with_header(|h| {
            implicit(h);
            h.mode = lz4::Mode::Hc(3);
        });
        assert!(decode(&d, &src, &mut vec![0; dst.len()]).is_err());
    }

    /// Header version 1 (every length stored, the last segment open) is
    /// still read.
    #[test]
    fn version_1_headers_are_read() {
        let (src, dst, data) = fixture();
        let p = parse(&data, src.len() as u64, dst.len() as u64).unwrap();
        let (_, _, explicit, _) = fixture_parts();
        let h = &explicit;
        let mut w = Writer::new();
        w.u8(1);
        w.u8(CODEC_LZ4);
        w.u32_le(h.library);
        w.u8(h.mode.code());
        w.u8(0);
        w.varint(h.lookahead);
        w.u8(h.inner.code());
        w.varint(h.sources.len() as u64);
        for s in &h.sources {
            w.u8(1);
            w.varint(s.offset);
            w.varint(s.stored_len);
            w.varint(s.logical_len);
        }
        w.varint(h.clusters.len() as u64);
        for c in &h.clusters {
            w.u8(match c.how {
                ClusterHow::Plain => 0,
                ClusterHow::Rebuild => 1,
                ClusterHow::Literal => 2,
            });
            w.varint(c.blocks);
            w.varint(c.logical_len);
        }
        let head = crate::ops::encode_replace(&w.into_bytes(), 3);
        let mut v1 = Writer::new();
        v1.varint(head.len() as u64);
        v1.bytes(&head);
        v1.varint(p.inner.len() as u64);
        v1.bytes(p.inner);
        v1.bytes(p.literals);
        let mut out = vec![0; dst.len()];
        decode(&v1.into_bytes(), &src, &mut out).unwrap();
        assert_eq!(out, dst);
    }
}
