//! Reads across partitions: target blocks and changed regions encoded
//! against a partition of the source build other than their own (format
//! version 5, [`romdelta_format::crosspart`]).
//!
//! Data that moved from one partition to another (a file from system to
//! product), or a partition new in the target built from old files, would
//! otherwise be sent again. Here:
//! 1. every source partition is indexed by block content and by content
//!    anchors, once per package, when a target partition first needs it;
//! 2. a changed target block equal to a block of another source partition
//!    becomes a SOURCE_COPY from there ([`Others::claim_copies`]); the own
//!    partition was asked first, so packages that need nothing from other
//!    partitions stay as they were;
//! 3. a changed region whose content anchors are found more often in
//!    another source partition than in its own is encoded against that one
//!    too, and the smaller encoding is kept ([`Others::encode_region`]).
//!
//! Every choice depends on the inputs alone (partitions in source-build
//! order, ties to the own partition, then to the earlier one), so the
//! package does not depend on the thread count. In-place packages never
//! read across partitions.

use crate::anchors::{self, AnchorIndex};
use crate::blocks::{is_zero, BlockClass, SourceIndex};
use crate::encode::{self, EncodeParams, Encoded, Region};
use romdelta_format::crosspart::SourceRead;
use romdelta_format::{Extent, OpKind, Operation};
use romdelta_rom::Partition;
use sha2::Digest as _;
use std::sync::OnceLock;

/// One partition of the source build and its indexes, built on first use.
struct Other<'a> {
    part: &'a Partition,
    blocks: OnceLock<SourceIndex<'a>>,
    anchors: OnceLock<AnchorIndex>,
}

impl<'a> Other<'a> {
    fn blocks(&self) -> &SourceIndex<'a> {
        self.blocks.get_or_init(|| {
            let ix = SourceIndex::build(self.part);
            self.part.release_all();
            ix
        })
    }
    /// Built by [`Others::claim_copies`] before any region is encoded.
    fn anchors(&self) -> &AnchorIndex {
        self.anchors.get_or_init(|| {
            let p = self.part;
            let ix = AnchorIndex::build(p.bytes(), &|off, len| p.release(off, len));
            p.release_all();
            ix
        })
    }
}

/// Every partition of the source build, for reads across partitions.
pub struct Others<'a> {
    parts: Vec<Other<'a>>,
}

/// Blocks of a target partition copied from other source partitions.
pub struct ForeignCopies {
    /// Per target block: the other partition (index into [`Others`]) and
    /// block it equals, for the blocks claimed.
    from: Vec<Option<(u32, u64)>>,
}

/// Most blocks one cross-partition SOURCE_COPY covers.
const COPY_OP_BLOCKS: u64 = 4096;

impl<'a> Others<'a> {
    /// The partitions of `source`, in its order.
    pub fn new(source: &'a [Partition]) -> Self {
        Others {
            parts: source
                .iter()
                .map(|part| Other {
                    part,
                    blocks: OnceLock::new(),
                    anchors: OnceLock::new(),
                })
                .collect(),
        }
    }

    /// The other partitions for a target partition whose own source is
    /// `own` (by name).
    fn candidates<'s>(
        &'s self,
        own: Option<&'s Partition>,
    ) -> impl Iterator<Item = (u32, &'s Other<'a>)> {
        self.parts
            .iter()
            .enumerate()
            .filter(move |(_, o)| own.is_none_or(|s| s.name != o.part.name))
            .map(|(k, o)| (k as u32, o))
    }

    /// Marks as [`BlockClass::Claimed`] every changed block of `dst` equal
    /// to a block of another source partition than `own`, except runs of
    /// at most `gap` such blocks between changed blocks (the region that
    /// absorbs them encodes them for less than an operation costs). Runs
    /// stay contiguous where the next source block also matches; otherwise
    /// the earliest partition, then the lowest block, wins.
    pub fn claim_copies(
        &self,
        own: Option<&Partition>,
        dst: &Partition,
        classes: &mut [BlockClass],
        gap: u64,
    ) -> ForeignCopies {
        let n = classes.len();
        let mut from: Vec<Option<(u32, u64)>> = vec![None; n];
        if !classes.contains(&BlockClass::Changed) {
            return ForeignCopies { from };
        }
        let cands: Vec<(u32, &Other<'a>)> = self.candidates(own).collect();
        if cands.is_empty() {
            return ForeignCopies { from };
        }
        let mut prev: Option<(u32, u64)> = None;
        for i in 0..n {
            if classes[i] != BlockClass::Changed {
                prev = None;
                continue;
            }
            let b = dst.block(i as u64).expect("in range");
            if is_zero(&b) {
                prev = None;
                continue;
            }
            let next = prev.and_then(|(k, j)| {
                let o = self.parts[k as usize].blocks();
                o.equal(j + 1, &b).then_some((k, j + 1))
            });
            let hit = next.or_else(|| {
                cands
                    .iter()
                    .find_map(|&(k, o)| o.blocks().lookup(&b).map(|j| (k, j)))
            });
            from[i] = hit;
            prev = hit;
            if (i as u64 + 1).is_multiple_of(16384) {
                dst.release_all();
                cands.iter().for_each(|(_, o)| o.part.release_all());
            }
        }
        dst.release_all();
        cands.iter().for_each(|(_, o)| o.part.release_all());
        // Short runs between changed blocks stay in their region.
        let mut i = 0;
        while i < n {
            if from[i].is_none() {
                i += 1;
                continue;
            }
            let start = i;
            while i < n && from[i].is_some() {
                i += 1;
            }
            let inside = start > 0
                && classes[start - 1] == BlockClass::Changed
                && i < n
                && classes[i] == BlockClass::Changed;
            if inside && (i - start) as u64 <= gap {
                from[start..i].fill(None);
            } else {
                classes[start..i].fill(BlockClass::Claimed);
            }
        }
        // What is left changed becomes regions, encoded in parallel: the
        // anchor indexes they look up are built here, before that (an index
        // built from inside a parallel job could be asked for again by a
        // job the same thread picks up while it waits).
        if classes.contains(&BlockClass::Changed) {
            cands.iter().for_each(|(_, o)| {
                o.anchors();
            });
        }
        ForeignCopies { from }
    }

    /// The SOURCE_COPY operations of `copies`, each with the partition it
    /// reads, in target block order: (operation, source partition name).
    pub fn copy_operations(&self, copies: &ForeignCopies) -> Vec<(Operation, String)> {
        let mut out = Vec::new();
        let from = &copies.from;
        let mut i = 0usize;
        while i < from.len() {
            let Some((k, j)) = from[i] else {
                i += 1;
                continue;
            };
            // One operation per partition run: contiguous or not, until
            // another partition or a gap.
            let mut src: Vec<Extent> = Vec::new();
            let mut dst: Vec<Extent> = Vec::new();
            let (mut next_dst, mut next_src, mut blocks) = (i as u64, j, 0u64);
            while i < from.len() && blocks < COPY_OP_BLOCKS {
                match from[i] {
                    Some((k2, j2)) if k2 == k => {
                        if i as u64 == next_dst && j2 == next_src && !dst.is_empty() {
                            dst.last_mut().expect("non-empty").num_blocks += 1;
                            src.last_mut().expect("non-empty").num_blocks += 1;
                        } else {
                            if dst.len() >= 1024 {
                                break;
                            }
                            dst.push(Extent::new(i as u64, 1));
                            src.push(Extent::new(j2, 1));
                        }
                        next_dst = i as u64 + 1;
                        next_src = j2 + 1;
                        blocks += 1;
                        i += 1;
                    }
                    _ => break,
                }
            }
            let part = self.parts[k as usize].part;
            let mut h = sha2::Sha256::new();
            part.for_each_piece(&src, |b| h.update(b))
                .expect("reads of a mapped image do not fail");
            out.push((
                Operation {
                    kind: OpKind::SourceCopy,
                    src_extents: src,
                    dst_extents: dst,
                    data_offset: 0,
                    data_length: 0,
                    data_sha256: [0; 32],
                    src_sha256: h.finalize().into(),
                },
                part.name.clone(),
            ));
        }
        for o in &self.parts {
            o.part.release_all();
        }
        out
    }

    /// Encodes `region` of `dst` as [`encode::encode_region`] does against
    /// `own`; when the region's content anchors are found more often in
    /// another source partition, it is encoded against that one too and
    /// the smaller result kept (ties: the own partition). Returns the
    /// encoding and, when it reads another partition, that partition's name.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_region(
        &self,
        own: Option<&Partition>,
        own_anchors: Option<&AnchorIndex>,
        dst: &Partition,
        classes: &[BlockClass],
        copies: &ForeignCopies,
        tables: Option<&crate::elf::FieldTables>,
        code: Option<&crate::elf::Code>,
        region: Region,
        p: &EncodeParams,
    ) -> (Encoded, Option<String>) {
        let own_enc =
            || encode::encode_region(own, dst, classes, own_anchors, tables, code, region, p);
        let mut fps: Vec<u64> = Vec::new();
        anchors::for_each_anchor(&encode::target_bytes(dst, region), |_, fp| fps.push(fp));
        let hits = |ix: &AnchorIndex| fps.iter().filter(|&&fp| !ix.lookup(fp).is_empty()).count();
        let own_hits = own_anchors.map_or(0, hits);
        let mut best: Option<(usize, u32)> = None;
        for (k, o) in self.candidates(own) {
            let Some(ix) = o.anchors.get() else {
                continue;
            };
            let h = hits(ix);
            if h > own_hits && best.is_none_or(|(bh, _)| h > bh) {
                best = Some((h, k));
            }
        }
        let Some((_, k)) = best else {
            return (own_enc(), None);
        };
        let other = &self.parts[k as usize];
        // The region's neighbours copied from that partition give its
        // alignments there, as copies from the own partition do.
        let view: Vec<BlockClass> = copies
            .from
            .iter()
            .map(|f| match *f {
                Some((k2, j)) if k2 == k => BlockClass::Copy(j),
                _ => BlockClass::Changed,
            })
            .collect();
        let theirs = encode::encode_region(
            Some(other.part),
            dst,
            &view,
            other.anchors.get(),
            None,
            None,
            region,
            p,
        );
        let theirs_reads = theirs.kind.reads_source();
        let mine = own.map(|_| own_enc());
        match mine {
            Some(m) if m.data.len() <= theirs.data.len() => (m, None),
            _ if theirs_reads => (theirs, Some(other.part.name.clone())),
            _ => (theirs, None),
        }
    }
}

/// The [`SourceRead`] of operation `index` reading `partition`.
pub fn source_read(index: usize, partition: String) -> SourceRead {
    SourceRead {
        operation: index as u64,
        partition,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use romdelta_format::BLOCK_SIZE;
    use romdelta_rom::Access;

    /// `n` distinct pseudo-random blocks from `seed`.
    fn blocks(seed: u64, n: usize) -> Vec<Vec<u8>> {
        let mut x = seed * 2 + 1;
        (0..n)
            .map(|_| {
                (0..BLOCK_SIZE)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect()
            })
            .collect()
    }

    fn part(dir: &Path, name: &str, blocks: &[&Vec<u8>]) -> Partition {
        let path = dir.join(format!("{name}.img"));
        let bytes: Vec<u8> = blocks.iter().flat_map(|b| b.iter().copied()).collect();
        std::fs::write(&path, bytes).unwrap();
        Partition::open(name, &path, Access::Mapped).unwrap()
    }

    use std::path::Path;

    #[test]
    fn copies_follow_runs_prefer_earlier_partitions_and_leave_short_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let a = blocks(1, 8);
        let b = blocks(2, 8);
        let new = blocks(3, 8);
        // "system" holds a0..a7; "vendor" holds a2 too (a copy of it), and b0..b7.
        let system = part(dir.path(), "system", &a.iter().collect::<Vec<_>>());
        let vendor = part(
            dir.path(),
            "vendor",
            &[
                &a[2], &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &b[6], &b[7],
            ],
        );
        // The target "product": a run a1 a2 a3 (a2 is in both: the run
        // stays in system), new data, one block of vendor between new data
        // (a short gap: left to the region), new data, then b4 b5.
        let target = part(
            dir.path(),
            "product",
            &[&a[1], &a[2], &a[3], &new[0], &b[0], &new[1], &b[4], &b[5]],
        );
        let sources = [system, vendor];
        let others = Others::new(&sources);
        let mut classes = vec![BlockClass::Changed; 8];
        let copies = others.claim_copies(None, &target, &mut classes, 1);
        use BlockClass::{Changed as C, Claimed as K};
        assert_eq!(classes, [K, K, K, C, C, C, K, K]);
        let ops = others.copy_operations(&copies);
        let got: Vec<(&str, Vec<Extent>, Vec<Extent>)> = ops
            .iter()
            .map(|(op, from)| {
                (
                    from.as_str(),
                    op.src_extents.clone(),
                    op.dst_extents.clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("system", vec![Extent::new(1, 3)], vec![Extent::new(0, 3)]),
                ("vendor", vec![Extent::new(5, 2)], vec![Extent::new(6, 2)]),
            ]
        );
        // The hash covers the bytes read there.
        let mut want = Vec::new();
        sources[1]
            .read_extents(&[Extent::new(5, 2)], &mut want)
            .unwrap();
        assert_eq!(ops[1].0.src_sha256, romdelta_format::sha256(&want));
        // The own partition is never a candidate: as "system"'s target,
        // only vendor's blocks are claimed.
        let mut classes = vec![BlockClass::Changed; 8];
        others.claim_copies(Some(&sources[0]), &target, &mut classes, 0);
        assert_eq!(classes, [C, K, C, C, K, C, K, K]);
    }
}
