//! Content-aware generation for compressed EROFS images: SOURCE_RECOMPRESS
//! operations.
//!
//! When both images of a partition are EROFS, every regular file whose
//! clusters are lz4 (or plain) and changed is diffed in its decompressed
//! form against the same file of the source (same path, or the same path
//! but for its numbers: `lib/modules/6.1.0-50/...` → `.../6.1.0-57/...`).
//! Each new cluster is compressed again here by the very code the applier
//! runs ([`romdelta_format::recompress::rebuild_cluster`]) and compared
//! with the image; a cluster that does not reproduce travels as it is
//! (literal), and a run most of whose clusters do not reproduce is left
//! to the byte-level encoders.
//!
//! Each file's changed clusters form segments (runs of at most 2 MiB of
//! blocks); consecutive segments, of one file or of several, are packed
//! into one operation, so small files share one inner patch and one
//! operation's overhead. An operation is kept only if it is smaller than
//! carrying its blocks whole. The blocks these operations write are
//! claimed: the block planner leaves them alone.

use crate::blocks::BlockClass;
use crate::encode::EncodeParams;
use crate::files::PathIndex;
use rayon::prelude::*;
use romdelta_codecs::lz4;
use romdelta_erofs::{DataMap, Encoding, ErofsMap, FileKind, Pcluster, Placement, Stored};
use romdelta_format::recompress::{
    self, ClusterHow, Header, Padding, PieceEncoding, SourcePiece, TargetCluster,
};
use romdelta_format::{ops, sha256, Digest, Extent, OpKind, BLOCK_SIZE};
use romdelta_rom::Partition;
use std::collections::HashMap;

/// Most target stream bytes (decompressed) one operation rebuilds.
const MAX_TARGET_STREAM: u64 = 4 << 20;
/// Most destination blocks one operation writes.
const MAX_TARGET_BLOCKS: u64 = 512;
/// Most source stream bytes one operation decompresses.
const MAX_SOURCE_STREAM: u64 = 8 << 20;
/// Target file bytes whose segments are found and packed together (bounds
/// the decompressed bytes held at a time).
const BATCH_BYTES: u64 = 64 << 20;
/// Stream bytes past a cluster's end given to its compressor: enough for
/// every cluster of the corpus images (64 KiB reproduced all 102,637
/// lz4hc clusters; 4 KiB all but one).
const LOOKAHEAD: u64 = 64 << 10;
/// A chunk more than this share of whose clusters would be literal is left
/// to the byte-level encoders.
const MAX_LITERAL_PERCENT: usize = 25;
/// Compressors tried, in order, on a file's first compressed cluster:
/// lz4hc at mkfs.erofs's default level, the other lz4hc levels, lz4.
const MODES: [lz4::Mode; 13] = [
    lz4::Mode::Hc(9),
    lz4::Mode::Hc(12),
    lz4::Mode::Fast,
    lz4::Mode::Hc(10),
    lz4::Mode::Hc(11),
    lz4::Mode::Hc(8),
    lz4::Mode::Hc(7),
    lz4::Mode::Hc(6),
    lz4::Mode::Hc(5),
    lz4::Mode::Hc(4),
    lz4::Mode::Hc(3),
    lz4::Mode::Hc(2),
    lz4::Mode::Hc(1),
];

/// One planned SOURCE_RECOMPRESS operation.
pub struct Planned {
    /// Source blocks it reads.
    pub src_extents: Vec<Extent>,
    /// SHA-256 of those blocks.
    pub src_sha256: Digest,
    /// Destination blocks it writes.
    pub dst_extents: Vec<Extent>,
    /// Its data.
    pub data: Vec<u8>,
    /// Memory it needs at apply, in MiB, when its inner patch is an xz
    /// rebuild (0: the default bound).
    pub apply_memory_mib: u64,
}

/// The SOURCE_RECOMPRESS operations for `dst` against `src`, in target
/// file order; empty unless both are EROFS images of 4 KiB blocks.
/// `classes` tells which target blocks changed.
pub fn plan(
    src: &Partition,
    dst: &Partition,
    classes: &[BlockClass],
    p: &EncodeParams,
    memory_mib: u64,
) -> Vec<Planned> {
    let (Ok(sm), Ok(tm)) = (
        romdelta_erofs::map_image(src.bytes()),
        romdelta_erofs::map_image(dst.bytes()),
    ) else {
        return Vec::new();
    };
    if sm.superblock.block_size() != BLOCK_SIZE || tm.superblock.block_size() != BLOCK_SIZE {
        return Vec::new();
    }
    let sources = source_files(&sm);
    let mut seen = std::collections::HashSet::new();
    let files: Vec<(usize, u64)> = (0..tm.entries.len())
        .filter(|&i| {
            let m = tm.inode(i);
            m.inode.kind == FileKind::Regular
                && matches!(m.data, DataMap::Compressed { .. })
                && seen.insert(tm.entries[i].nid)
        })
        .map(|i| (i, tm.entries[i].nid))
        .collect();
    let ctx = Ctx {
        src,
        dst,
        sm: &sm,
        tm: &tm,
        classes,
        p,
        memory_mib,
        padding: if tm.superblock.feature_incompat & romdelta_erofs::INCOMPAT_ZERO_PADDING != 0 {
            Padding::Front
        } else {
            Padding::Back
        },
    };
    // Files in batches of bounded stream bytes: each batch's segments are
    // found in parallel, packed in file order, then encoded in parallel.
    let mut out = Vec::new();
    let mut i = 0;
    while i < files.len() {
        let mut j = i;
        let mut bytes = 0u64;
        while j < files.len() && (j == i || bytes < BATCH_BYTES) {
            bytes += tm.inodes[&files[j].1].inode.size;
            j += 1;
        }
        let segments: Vec<Segment> = files[i..j]
            .par_iter()
            .map(|&(e, nid)| {
                let Some(snid) = sources.find(&tm.path(e)) else {
                    return Vec::new();
                };
                let segs = ctx.file(nid, snid);
                // What the file read is mapped again on access.
                release_file(dst, &tm, nid);
                segs
            })
            .collect::<Vec<_>>()
            .into_iter()
            .flatten()
            .collect();
        let groups = pack(segments);
        out.extend(
            groups
                .par_iter()
                .filter_map(|g| ctx.operation(g))
                .collect::<Vec<_>>(),
        );
        src.release_all();
        dst.release_all();
        i = j;
    }
    out
}

/// Lets the kernel drop this process's mapping of the bytes of file `nid`
/// (from its first stored byte to its last), so the pass holds the files
/// it is working on resident, not the images.
fn release_file(p: &Partition, m: &ErofsMap, nid: u64) {
    if let Some(s) = stretches(m, nid) {
        let lo = s.iter().map(|s| s.offset).min().unwrap_or(0);
        let hi = s.iter().map(|s| s.offset + s.stored_len).max().unwrap_or(0);
        p.release(lo, hi.saturating_sub(lo));
    }
}

/// The regular files of an EROFS image by path, as nids.
fn source_files(m: &ErofsMap) -> PathIndex<u64> {
    PathIndex::new(
        (0..m.entries.len())
            .filter(|&i| m.inode(i).inode.kind == FileKind::Regular)
            .map(|i| (m.path(i), m.entries[i].nid)),
    )
}

struct Ctx<'a> {
    src: &'a Partition,
    dst: &'a Partition,
    sm: &'a ErofsMap,
    tm: &'a ErofsMap,
    classes: &'a [BlockClass],
    p: &'a EncodeParams,
    padding: Padding,
    /// The memory the applier may use, in MiB (`--apply-memory`).
    memory_mib: u64,
}

/// A run of a file's bytes and where they are stored, as a source piece
/// reads them.
#[derive(Clone, Copy)]
struct Stretch {
    logical: u64,
    logical_len: u64,
    /// Image byte offset and length of the stored bytes.
    offset: u64,
    stored_len: u64,
    encoding: PieceEncoding,
}

/// The stored stretches of a file, or `None` if it has bytes this
/// operation cannot read (holes, other compressors).
fn stretches(m: &ErofsMap, nid: u64) -> Option<Vec<Stretch>> {
    let bs = m.superblock.block_size();
    match &m.inodes[&nid].data {
        DataMap::Flat(x) => x
            .iter()
            .map(|e| match e.placement {
                Placement::Hole => None,
                _ => Some(Stretch {
                    logical: e.logical,
                    logical_len: e.len,
                    offset: e.physical,
                    stored_len: e.len,
                    encoding: PieceEncoding::Plain,
                }),
            })
            .collect(),
        DataMap::Compressed { pclusters, .. } => pclusters
            .iter()
            .map(|c| {
                let r = c.stored.byte_range(bs);
                Some(Stretch {
                    logical: c.logical,
                    logical_len: c.logical_len,
                    offset: r.start,
                    stored_len: r.end - r.start,
                    encoding: match c.encoding {
                        Encoding::Plain => PieceEncoding::Plain,
                        Encoding::Compressed(romdelta_erofs::Algorithm::Lz4) => PieceEncoding::Lz4,
                        Encoding::Compressed(_) => return None,
                    },
                })
            })
            .collect(),
        DataMap::None => None,
    }
}

/// The stream bytes of `s`, read from `image`; `None` if they do not decode.
fn decode_stretch(image: &[u8], s: &Stretch, out: &mut Vec<u8>) -> Option<()> {
    let stored = image.get(s.offset as usize..(s.offset + s.stored_len) as usize)?;
    let at = out.len();
    match s.encoding {
        PieceEncoding::Plain => out.extend_from_slice(stored.get(..s.logical_len as usize)?),
        PieceEncoding::Lz4 => {
            out.resize(at + s.logical_len as usize, 0);
            let z = stored.iter().take_while(|&&b| b == 0).count();
            lz4::decompress_exact(&stored[z..], &mut out[at..]).ok()?;
        }
    }
    Some(())
}

/// One file's run of changed clusters, each checked against the image,
/// with the source stretches its operation reads.
struct Segment {
    mode: lz4::Mode,
    /// The clusters; the last ends the segment.
    clusters: Vec<TargetCluster>,
    /// Their stream bytes, then the tail.
    target: Vec<u8>,
    /// The stored blocks of the literal clusters.
    literals: Vec<u8>,
    dst_extents: Vec<Extent>,
    dst_blocks: u64,
    /// Source stretches (image offsets) and their stream bytes in all.
    sources: Vec<Stretch>,
    source_len: u64,
}

impl Ctx<'_> {
    fn claimed(&self, c: &Pcluster) -> bool {
        match c.stored {
            Stored::Blocks { block, blocks } => (block..block + blocks)
                .any(|b| self.classes.get(b as usize) == Some(&BlockClass::Claimed)),
            Stored::Inline { .. } => false,
        }
    }

    fn changed(&self, c: &Pcluster) -> bool {
        match c.stored {
            Stored::Blocks { block, blocks } => (block..block + blocks)
                .any(|b| self.classes.get(b as usize) == Some(&BlockClass::Changed)),
            Stored::Inline { .. } => false,
        }
    }

    /// The segments of target file `nid` against source file `snid`.
    fn file(&self, nid: u64, snid: u64) -> Vec<Segment> {
        let DataMap::Compressed { pclusters, .. } = &self.tm.inodes[&nid].data else {
            return Vec::new();
        };
        // Whole blocks only: an inline tail lives in a metadata block.
        let n_blocks = pclusters
            .iter()
            .take_while(|c| matches!(c.stored, Stored::Blocks { .. }))
            .count();
        let pcs = &pclusters[..n_blocks];
        let (Some(first), Some(last)) = (
            pcs.iter().position(|c| self.changed(c)),
            pcs.iter().rposition(|c| self.changed(c)),
        ) else {
            return Vec::new();
        };
        // Blocks another operation writes (a kernel rebuilt whole) are
        // not written twice: such a file is left to it and the planner.
        if pcs[first..=last].iter().any(|c| self.claimed(c)) {
            return Vec::new();
        }
        let Some(tstretches) = stretches(self.tm, nid) else {
            return Vec::new();
        };
        let Some(sstretches) = stretches(self.sm, snid) else {
            return Vec::new();
        };
        let size = self.tm.inodes[&nid].inode.size;
        let ssize = self.sm.inodes[&snid].inode.size;
        // The target file's stream bytes from the first changed cluster to
        // the lookahead past the last one.
        let from = pcs[first].logical;
        let until = (pcs[last].logical + pcs[last].logical_len + LOOKAHEAD).min(size);
        let mut stream = Vec::new();
        for s in tstretches
            .iter()
            .filter(|s| s.logical + s.logical_len > from && s.logical < until)
        {
            let mut piece = Vec::new();
            if decode_stretch(self.dst.bytes(), s, &mut piece).is_none() {
                return Vec::new();
            }
            let lo = from.saturating_sub(s.logical) as usize;
            let hi = ((until - s.logical) as usize).min(piece.len());
            stream.extend_from_slice(&piece[lo..hi]);
        }
        let Some(mode) = self.find_mode(pcs, first..=last, &stream, from) else {
            return Vec::new();
        };
        // Chunks of consecutive clusters; one for a file whose changed
        // bytes hold an xz stream (a kernel image) where the applier may
        // rebuild that, so that one operation holds the stream whole.
        let (max_len, max_blocks) =
            if self.memory_mib > 64 && crate::stream_rebuild::holds_xz(&stream) {
                (
                    recompress::MAX_STREAM_LEN - LOOKAHEAD,
                    romdelta_format::limits::MAX_OP_DST_BLOCKS,
                )
            } else {
                (MAX_TARGET_STREAM, MAX_TARGET_BLOCKS)
            };
        let mut out = Vec::new();
        let mut i = first;
        while i <= last {
            let (mut j, mut len, mut blocks) = (i, 0u64, 0u64);
            while j <= last {
                let b = cluster_blocks(&pcs[j]);
                if j > i && (len + pcs[j].logical_len > max_len || blocks + b > max_blocks) {
                    break;
                }
                len += pcs[j].logical_len;
                blocks += b;
                j += 1;
            }
            let window = Window {
                from,
                until,
                size,
                ssize,
            };
            if let Some(seg) = self.segment(&pcs[i..j], mode, &stream, &window, &sstretches) {
                out.push(seg);
            }
            i = j;
        }
        out
    }

    /// The first compressor of [`MODES`] that rebuilds the first compressed
    /// cluster of `range` exactly.
    fn find_mode(
        &self,
        pcs: &[Pcluster],
        range: std::ops::RangeInclusive<usize>,
        stream: &[u8],
        from: u64,
    ) -> Option<lz4::Mode> {
        let c = pcs[range]
            .iter()
            .find(|c| matches!(c.encoding, Encoding::Compressed(_)))?;
        let mut compressor = lz4::Compressor::new();
        MODES.into_iter().find(|&mode| {
            self.reproduces(
                &mut compressor,
                mode,
                c,
                stream,
                (c.logical - from) as usize,
            )
            .is_some_and(|(how, _)| how == ClusterHow::Rebuild)
        })
    }

    /// How cluster `c` (whose stream bytes start at `stream[at..]`, the
    /// stream ending where its file's bytes known here end) can be
    /// produced: rebuilt or plain if that gives its stored blocks exactly;
    /// with `true` when it is rebuilt with its length implicit (what the
    /// compressor takes of the stream to its end is exactly the cluster).
    fn reproduces(
        &self,
        compressor: &mut lz4::Compressor,
        mode: lz4::Mode,
        c: &Pcluster,
        stream: &[u8],
        at: usize,
    ) -> Option<(ClusterHow, bool)> {
        let range = c.stored.byte_range(BLOCK_SIZE);
        let stored = &self.dst.bytes()[range.start as usize..range.end as usize];
        let how = match c.encoding {
            Encoding::Plain => ClusterHow::Plain,
            Encoding::Compressed(_) => ClusterHow::Rebuild,
        };
        let header = Header {
            mode,
            library: lz4::library_version(),
            padding: self.padding,
            lookahead: LOOKAHEAD,
            inner: OpKind::Replace,
            sources: Vec::new(),
            clusters: Vec::new(),
        };
        let mut t = TargetCluster {
            how,
            blocks: cluster_blocks(c),
            logical_len: c.logical_len,
            tail_len: None,
            implicit: how == ClusterHow::Rebuild,
            segment_len: 0,
        };
        let mut out = vec![0u8; stored.len()];
        let mut exact = |t: &TargetCluster| {
            recompress::rebuild_cluster(&header, compressor, stream, at, stream.len(), t, &mut out)
                == Some(c.logical_len as usize)
                && out == stored
        };
        if t.implicit && exact(&t) {
            return Some((how, true));
        }
        t.implicit = false;
        exact(&t).then_some((how, false))
    }

    /// The segment of the target clusters `chunk`, or `None` when too many
    /// of them do not reproduce.
    fn segment(
        &self,
        chunk: &[Pcluster],
        mode: lz4::Mode,
        stream: &[u8],
        w: &Window,
        sstretches: &[Stretch],
    ) -> Option<Segment> {
        let a = chunk[0].logical;
        let end = chunk.last().map(|c| c.logical + c.logical_len)?;
        let tail_end = (end + LOOKAHEAD).min(w.until);
        let mut compressor = lz4::Compressor::new();
        let mut clusters = Vec::with_capacity(chunk.len());
        let mut literals = Vec::new();
        let mut dst_extents: Vec<Extent> = Vec::new();
        // Each cluster is checked as the applier will compress it: with
        // the stream cut where this segment's tail ends.
        let seg = &stream[..(tail_end - w.from) as usize];
        for c in chunk {
            let at = (c.logical - w.from) as usize;
            let (how, implicit) = self
                .reproduces(&mut compressor, mode, c, seg, at)
                .unwrap_or((ClusterHow::Literal, false));
            let Stored::Blocks { block, blocks } = c.stored else {
                return None;
            };
            if how == ClusterHow::Literal {
                let r = c.stored.byte_range(BLOCK_SIZE);
                literals.extend_from_slice(&self.dst.bytes()[r.start as usize..r.end as usize]);
            }
            match dst_extents.last_mut() {
                Some(e) if e.end_block() == block => e.num_blocks += blocks,
                _ => dst_extents.push(Extent::new(block, blocks)),
            }
            clusters.push(TargetCluster {
                how,
                blocks,
                logical_len: c.logical_len,
                tail_len: None,
                implicit,
                segment_len: 0,
            });
        }
        let n_literal = clusters
            .iter()
            .filter(|c| c.how == ClusterHow::Literal)
            .count();
        if n_literal * 100 > clusters.len() * MAX_LITERAL_PERCENT {
            return None;
        }
        let last = clusters.last_mut()?;
        last.tail_len = Some(tail_end - end);
        last.segment_len = end - a;
        // The source window: the whole source file when it is small enough,
        // else the part where this chunk's bytes sit proportionally.
        let (lo, hi) = if w.ssize <= MAX_SOURCE_STREAM {
            (0, w.ssize)
        } else {
            let centre = (a as u128 * w.ssize as u128 / w.size.max(1) as u128) as u64;
            let half = (MAX_SOURCE_STREAM - (end - a).min(MAX_SOURCE_STREAM / 2)) / 2;
            let lo = centre.saturating_sub(half).min(w.ssize - MAX_SOURCE_STREAM);
            (lo, lo + MAX_SOURCE_STREAM)
        };
        let mut sources = Vec::new();
        let mut source_len = 0u64;
        for s in sstretches
            .iter()
            .filter(|s| s.logical + s.logical_len > lo && s.logical < hi && s.logical_len > 0)
        {
            if source_len + s.logical_len > MAX_SOURCE_STREAM {
                break;
            }
            sources.push(*s);
            source_len += s.logical_len;
        }
        Some(Segment {
            mode,
            clusters,
            target: seg[(a - w.from) as usize..].to_vec(),
            literals,
            dst_blocks: romdelta_format::blocks_in(&dst_extents),
            dst_extents,
            sources,
            source_len,
        })
    }

    /// One operation for the segments `group` (one compressor), or `None`
    /// when it would not be smaller than carrying their blocks whole.
    fn operation(&self, group: &[Segment]) -> Option<Planned> {
        let mut src_extents: Vec<Extent> = Vec::new();
        let mut block_at: HashMap<u64, u64> = HashMap::new();
        let mut src_blocks = 0u64;
        let mut pieces = Vec::new();
        let mut source = Vec::new();
        for s in group.iter().flat_map(|g| &g.sources) {
            let at = source.len();
            if decode_stretch(self.src.bytes(), s, &mut source).is_none() {
                source.truncate(at);
                continue;
            }
            // The blocks holding the stored bytes, each read once.
            let first_block = s.offset / BLOCK_SIZE;
            let last_block = (s.offset + s.stored_len).div_ceil(BLOCK_SIZE);
            for b in first_block..last_block {
                if let std::collections::hash_map::Entry::Vacant(v) = block_at.entry(b) {
                    v.insert(src_blocks);
                    src_blocks += 1;
                    match src_extents.last_mut() {
                        Some(e) if e.end_block() == b => e.num_blocks += 1,
                        _ => src_extents.push(Extent::new(b, 1)),
                    }
                }
            }
            // A piece's blocks are consecutive in the image; they are
            // consecutive in the operation's source bytes unless some were
            // read earlier, and then the piece is left out.
            let start = block_at[&first_block];
            let contiguous =
                (first_block..last_block).all(|b| block_at[&b] == start + (b - first_block));
            if !contiguous {
                source.truncate(at);
                continue;
            }
            pieces.push(SourcePiece {
                encoding: s.encoding,
                offset: start * BLOCK_SIZE + s.offset % BLOCK_SIZE,
                stored_len: s.stored_len,
                logical_len: s.logical_len,
            });
        }
        if src_extents.is_empty() || src_blocks > romdelta_format::limits::MAX_OP_SRC_BLOCKS {
            return None;
        }
        let mut src_bytes = Vec::with_capacity((src_blocks * BLOCK_SIZE) as usize);
        self.src
            .read_extents(&src_extents, &mut src_bytes)
            .expect("reads of a mapped image do not fail");
        let target: Vec<u8> = group
            .iter()
            .flat_map(|g| g.target.iter().copied())
            .collect();
        let literals: Vec<u8> = group
            .iter()
            .flat_map(|g| g.literals.iter().copied())
            .collect();
        let mut dst_extents: Vec<Extent> = Vec::new();
        for e in group.iter().flat_map(|g| &g.dst_extents) {
            match dst_extents.last_mut() {
                Some(l) if l.end_block() == e.start_block => l.num_blocks += e.num_blocks,
                _ => dst_extents.push(*e),
            }
        }
        let plain = encode_stream(&source, &target, self.p);
        // An xz stream inside the clusters (a kernel image stored
        // compressed) rebuilt from its decompressed bytes, where that is
        // smaller and fits the applier's memory; else the plain patch.
        let mut inners = Vec::new();
        if let Some((d, _)) =
            crate::stream_rebuild::within(&source, &target, self.p, self.memory_mib)
        {
            if d.len() < plain.1.len() {
                inners.push((OpKind::SourceXzRebuild, d));
            }
        }
        inners.push(plain);
        drop(source);
        let mut stored = Vec::new();
        self.dst
            .read_extents(&dst_extents, &mut stored)
            .expect("reads of a mapped image do not fail");
        let (src_len, dst_len) = (src_bytes.len() as u64, stored.len() as u64);
        let clusters: Vec<TargetCluster> = group
            .iter()
            .flat_map(|g| g.clusters.iter().copied())
            .collect();
        let (data, apply_memory_mib) = inners.into_iter().find_map(|(inner, inner_data)| {
            let header = Header {
                mode: group[0].mode,
                library: lz4::library_version(),
                padding: self.padding,
                lookahead: LOOKAHEAD,
                inner,
                sources: pieces.clone(),
                clusters: clusters.clone(),
            };
            let data = recompress::encode(&header, &inner_data, &literals, self.p.level);
            if inner != OpKind::SourceXzRebuild {
                return Some((data, 0));
            }
            let p = recompress::parse(&data, src_len, dst_len).ok()?;
            let need = recompress::apply_memory(&p, src_len, dst_len)
                .ok()?
                .div_ceil(1 << 20);
            (need <= self.memory_mib).then_some((data, need))
        })?;
        // Worth it only if smaller than carrying the stored blocks whole.
        if data.len() >= ops::encode_replace(&stored, self.p.trial_level).len() {
            return None;
        }
        if cfg!(debug_assertions) {
            let mut check = vec![0u8; stored.len()];
            recompress::decode(&data, &src_bytes, &mut check).expect("a planned operation decodes");
            assert!(check == stored, "a planned operation rebuilds its blocks");
        }
        Some(Planned {
            src_sha256: sha256(&src_bytes),
            src_extents,
            dst_extents,
            data,
            apply_memory_mib,
        })
    }
}

/// Where a file's known stream bytes lie: `from..until` of its `size`
/// bytes; its source file has `ssize`.
struct Window {
    from: u64,
    until: u64,
    size: u64,
    ssize: u64,
}

/// Packs consecutive segments into groups of one compressor within the
/// limits of one operation.
fn pack(segments: Vec<Segment>) -> Vec<Vec<Segment>> {
    let mut groups: Vec<Vec<Segment>> = Vec::new();
    let (mut len, mut blocks, mut src) = (0u64, 0u64, 0u64);
    for s in segments {
        let fits = groups.last().is_some_and(|g| {
            g[0].mode == s.mode
                && len + s.target.len() as u64 <= MAX_TARGET_STREAM
                && blocks + s.dst_blocks <= MAX_TARGET_BLOCKS
                && src + s.source_len <= MAX_SOURCE_STREAM
        });
        if !fits {
            groups.push(Vec::new());
            (len, blocks, src) = (0, 0, 0);
        }
        len += s.target.len() as u64;
        blocks += s.dst_blocks;
        src += s.source_len;
        groups.last_mut().expect("pushed").push(s);
    }
    groups
}

fn cluster_blocks(c: &Pcluster) -> u64 {
    match c.stored {
        Stored::Blocks { blocks, .. } => blocks,
        Stored::Inline { .. } => 0,
    }
}

/// The smallest inner patch from `source` to `target`: every encoder at
/// the trial level, those within the band of the best at the final level.
fn encode_stream(source: &[u8], target: &[u8], p: &EncodeParams) -> (OpKind, Vec<u8>) {
    let trial = p.trial_level.min(p.level);
    let replace_trial = ops::encode_replace(target, trial);
    if source.is_empty() {
        return (OpKind::Replace, ops::encode_replace(target, p.level));
    }
    let zstd_trial = ops::encode_source_zstd(source, target, trial);
    let mut trials = vec![
        (OpKind::Replace, replace_trial.len()),
        (OpKind::SourceZstd, zstd_trial.len()),
    ];
    let mut patch = None;
    if zstd_trial.len() * 10 < replace_trial.len() * 9 {
        let pt = crate::bsdiff::diff(source, target);
        trials.push((
            OpKind::SourceBsdiffSparse,
            ops::encode_bsdiff_sparse(&pt, trial).len(),
        ));
        patch = Some(pt);
    }
    let best = trials.iter().map(|t| t.1).min().expect("non-empty") as u64;
    trials
        .into_iter()
        .filter(|t| t.1 as u64 * 100 <= best * (100 + p.band_percent))
        .map(|(kind, _)| {
            let data = match kind {
                OpKind::Replace => ops::encode_replace(target, p.level),
                OpKind::SourceZstd => ops::encode_source_zstd(source, target, p.level),
                _ => ops::encode_bsdiff_sparse(patch.as_ref().expect("tried"), p.level),
            };
            (kind, data)
        })
        .min_by_key(|(_, d)| d.len())
        .expect("the best trial is in the band")
}
