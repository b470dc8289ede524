//! In-place installation: stages, stashes and the rules that make them safe.
//!
//! A package with `install = 1` ([`Manifest::in_place`](crate::Manifest))
//! writes each new image over its old one. The operations of a partition, in
//! manifest order, form consecutive *stages*
//! ([`PartitionUpdate::stages`]). An applier runs the stages in order;
//! before a stage writes anything it saves the stage's *stash*: the blocks
//! that some operation of the stage reads and some operation of the same
//! stage writes ([`stage_stash`]). Reads of stash blocks are served from the
//! saved copy. So the operations of one stage may run in any order or in
//! parallel, and re-running any of them after a power cut reads the same
//! bytes as the first run did.
//!
//! [`Manifest::check`](crate::Manifest::check) proves, before anything is
//! written:
//! 1. for stages `s < t` of a partition, no block written by an operation of
//!    stage `s` is read by an operation of stage `t`;
//! 2. the stash of every stage holds at most
//!    [`limits::MAX_STAGE_STASH_BLOCKS`](crate::limits::MAX_STAGE_STASH_BLOCKS) blocks;
//! 3. every stage has at least one operation and the stages hold exactly the
//!    partition's operations; an A/B package has no stages.
//!
//! Stages are numbered from 0, like operations (by their index within the
//! partition). Every check here sorts and merges extents: its cost is
//! O(E log E) in the number of extents, whatever the manifest says.

use crate::limits::MAX_STAGE_STASH_BLOCKS;
use crate::{blocks_in, Extent, FormatError, PartitionUpdate};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;

/// The operation index ranges of the stages of `p`, in order.
///
/// For an A/B partition update (no stages) this is one range holding every
/// operation, or none when there are no operations: A/B operations run in
/// any order, as one stage whose stash is never needed. For an in-place
/// update that [`Manifest::check`](crate::Manifest::check) accepted, the
/// ranges are exactly its stages; for one it did not, ranges are cut at the
/// last operation and empty stages are left out, so the result is always
/// within `0..p.operations.len()`.
pub fn stage_ranges(p: &PartitionUpdate) -> Vec<Range<usize>> {
    let n = p.operations.len();
    if p.stages.is_empty() {
        return if n == 0 {
            Vec::new()
        } else {
            std::iter::once(0..n).collect()
        };
    }
    let mut out = Vec::with_capacity(p.stages.len().min(n));
    let mut start = 0usize;
    for &len in &p.stages {
        if start >= n {
            break;
        }
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| start.checked_add(l))
            .map_or(n, |e| e.min(n));
        if end > start {
            out.push(start..end);
        }
        start = end;
    }
    out
}

/// The stash of stage `stage` of `p`: the blocks that some operation of the
/// stage reads and some operation of the same stage writes, as sorted,
/// merged (neither overlapping nor adjacent), non-empty extents. Empty for a
/// stage that does not exist. An applier saves these blocks before the
/// stage's first write and serves the stage's reads of them from the copy.
pub fn stage_stash(p: &PartitionUpdate, stage: usize) -> Vec<Extent> {
    match stage_ranges(p).get(stage) {
        Some(r) => stash_of(p, r.clone()),
        None => Vec::new(),
    }
}

/// `extents` sorted by start, with overlapping and adjacent extents joined:
/// the same set of blocks as disjoint, non-adjacent extents. Extents of zero
/// blocks are dropped.
pub fn merge_extents(extents: impl IntoIterator<Item = Extent>) -> Vec<Extent> {
    let mut v: Vec<Extent> = extents.into_iter().filter(|e| e.num_blocks > 0).collect();
    v.sort_unstable();
    let mut out: Vec<Extent> = Vec::with_capacity(v.len());
    for e in v {
        match out.last_mut() {
            Some(last) if e.start_block <= last.end_block() => {
                let end = last.end_block().max(e.end_block());
                last.num_blocks = end - last.start_block;
            }
            _ => out.push(e),
        }
    }
    out
}

/// The blocks in both `a` and `b`, which must each be sorted and disjoint
/// (as [`merge_extents`] returns them); the result is sorted and disjoint.
pub fn intersect_extents(a: &[Extent], b: &[Extent]) -> Vec<Extent> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let start = a[i].start_block.max(b[j].start_block);
        let end = a[i].end_block().min(b[j].end_block());
        if start < end {
            out.push(Extent::new(start, end - start));
        }
        if a[i].end_block() <= b[j].end_block() {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// The stash of the operations `ops` of `p` taken as one stage (for a
/// range of [`stage_ranges`], that stage's stash): walk the ranges once
/// with this rather than asking [`stage_stash`] stage by stage, which
/// recomputes the ranges each time.
pub fn stash_of(p: &PartitionUpdate, ops: Range<usize>) -> Vec<Extent> {
    let ops = &p.operations[ops];
    let reads = merge_extents(ops.iter().flat_map(|o| o.src_extents.iter().copied()));
    let writes = merge_extents(ops.iter().flat_map(|o| o.dst_extents.iter().copied()));
    intersect_extents(&reads, &writes)
}

/// A set of blocks, kept as sorted, disjoint, non-adjacent runs: adding an
/// extent and asking which blocks of an extent are in the set cost
/// O(log n) plus the runs involved.
#[derive(Debug, Clone, Default)]
pub struct BlockSet {
    runs: BTreeMap<u64, u64>,
}

impl BlockSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the set holds no block.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Adds the blocks of `e`, joining the runs it overlaps or touches.
    /// Each run is removed at most once after it was added, so a sequence
    /// of inserts costs O(n log n) overall.
    pub fn insert(&mut self, e: Extent) {
        if e.num_blocks == 0 {
            return;
        }
        let (mut start, mut end) = (e.start_block, e.end_block());
        while let Some((&s, &t)) = self.runs.range(..=end).next_back() {
            if t < start {
                break;
            }
            start = start.min(s);
            end = end.max(t);
            self.runs.remove(&s);
        }
        self.runs.insert(start, end);
    }

    /// The lowest block of `e` in the set, if any.
    pub fn first_in(&self, e: Extent) -> Option<u64> {
        self.overlapping(e).next().map(|x| x.start_block)
    }

    /// The blocks of `e` in the set, as sorted extents.
    pub fn overlapping(&self, e: Extent) -> impl Iterator<Item = Extent> + '_ {
        let (start, end) = (e.start_block, e.end_block());
        // The run that starts at or before `start` may reach into `e`.
        let first = self
            .runs
            .range(..=start)
            .next_back()
            .filter(|(_, &t)| t > start)
            .map(|(_, &t)| Extent::new(start, t.min(end) - start));
        let after = start.saturating_add(1);
        let rest = self
            .runs
            .range(after..end.max(after))
            .map(move |(&s, &t)| Extent::new(s, t.min(end) - s));
        first.into_iter().chain(rest).filter(|x| x.num_blocks > 0)
    }
}

fn invalid(detail: String) -> FormatError {
    FormatError::invalid("in-place stages", detail)
}

/// Rules 1–3 for one partition update of a manifest whose install mode is
/// `in_place`. Assumes the checks of [`PartitionUpdate`] itself passed.
pub(crate) fn check_partition(p: &PartitionUpdate, in_place: bool) -> Result<(), FormatError> {
    let name = &p.name;
    if !in_place {
        if !p.stages.is_empty() {
            return Err(invalid(format!(
                "partition {name}: an A/B package has no stages, found {}",
                p.stages.len()
            )));
        }
        return Ok(());
    }
    // Rule 3: the shape of the stage list.
    let mut total = 0u64;
    for (s, &n) in p.stages.iter().enumerate() {
        if n == 0 {
            return Err(invalid(format!(
                "partition {name}, stage {s} has no operations"
            )));
        }
        total = total.saturating_add(n);
    }
    let n_ops = p.operations.len() as u64;
    if total != n_ops {
        return Err(invalid(format!(
            "partition {name}: its {} stages hold {total} operations, it has {n_ops}",
            p.stages.len()
        )));
    }
    let ranges = stage_ranges(p);
    // Rule 2: every stash fits.
    for (s, r) in ranges.iter().enumerate() {
        let blocks = blocks_in(&stash_of(p, r.clone()));
        if blocks > MAX_STAGE_STASH_BLOCKS {
            return Err(invalid(format!(
                "partition {name}, stage {s} (operations {}..{}) stashes {blocks} blocks, more than the limit of {MAX_STAGE_STASH_BLOCKS}",
                r.start, r.end
            )));
        }
    }
    // Rule 1: a reverse sweep, keeping the blocks that later stages read.
    let mut later_reads = BlockSet::new();
    for (s, r) in ranges.iter().enumerate().rev() {
        for i in r.clone() {
            for e in &p.operations[i].dst_extents {
                if let Some(block) = later_reads.first_in(*e) {
                    let reader = match reader_after(p, &ranges, s, block) {
                        Some((j, t)) => format!("operation {j} of stage {t}"),
                        None => "a later stage".to_string(),
                    };
                    return Err(invalid(format!(
                        "partition {name}, stage {s} (operation {i}) writes block {block}, which {reader} reads"
                    )));
                }
            }
        }
        for i in r.clone() {
            for e in &p.operations[i].src_extents {
                later_reads.insert(*e);
            }
        }
    }
    Ok(())
}

/// The first operation of a stage after `stage` that reads `block`, and its
/// stage (a linear scan, run once, to name the culprit in an error).
fn reader_after(
    p: &PartitionUpdate,
    ranges: &[Range<usize>],
    stage: usize,
    block: u64,
) -> Option<(usize, usize)> {
    for (t, r) in ranges.iter().enumerate().skip(stage + 1) {
        for i in r.clone() {
            let reads = p.operations[i]
                .src_extents
                .iter()
                .any(|e| e.start_block <= block && block < e.end_block());
            if reads {
                return Some((i, t));
            }
        }
    }
    None
}

/// Runs an in-place partition update on a model of its image and reports
/// the first read that did not see the source's content.
///
/// This is the reference model of the rules above, written block by block
/// and independently of the checks in [`Manifest::check`](crate::Manifest::check),
/// for tests and fuzzing: every block carries the number of the operation
/// that last wrote it (none: the source). The stages run in order; at the
/// start of each, the model saves the blocks that an operation of the stage
/// reads and an operation of the stage writes; then it runs the operations
/// that `schedule` returns for the stage's operation range, in that order.
/// A schedule may repeat operations (a re-run after a power cut) but must
/// run each operation of the range at least once and no other.
///
/// Its cost is proportional to the blocks the operations name: bound them
/// before calling it on untrusted manifests.
pub fn simulate(
    p: &PartitionUpdate,
    schedule: &mut dyn FnMut(Range<usize>) -> Vec<usize>,
) -> Result<(), String> {
    let blocks_of = |extents: &[Extent]| -> Vec<u64> {
        extents
            .iter()
            .flat_map(|e| e.start_block..e.end_block())
            .collect()
    };
    // Version of each block: 0 is the source, i + 1 what operation i wrote.
    let mut image: HashMap<u64, usize> = HashMap::new();
    for (s, r) in stage_ranges(p).into_iter().enumerate() {
        let mut read = HashSet::new();
        let mut written = HashSet::new();
        for op in &p.operations[r.clone()] {
            read.extend(blocks_of(&op.src_extents));
            written.extend(blocks_of(&op.dst_extents));
        }
        let stash: HashMap<u64, usize> = read
            .intersection(&written)
            .map(|b| (*b, image.get(b).copied().unwrap_or(0)))
            .collect();
        let order = schedule(r.clone());
        if let Some(i) = order.iter().find(|i| !r.contains(i)) {
            return Err(format!(
                "stage {s}: schedule runs operation {i} outside {r:?}"
            ));
        }
        let ran: HashSet<usize> = order.iter().copied().collect();
        if let Some(i) = r.clone().find(|i| !ran.contains(i)) {
            return Err(format!("stage {s}: schedule never runs operation {i}"));
        }
        for i in order {
            let op = &p.operations[i];
            for b in blocks_of(&op.src_extents) {
                let v = match stash.get(&b) {
                    Some(v) => *v,
                    None => image.get(&b).copied().unwrap_or(0),
                };
                if v != 0 {
                    return Err(format!(
                        "partition {}, stage {s}: operation {i} reads block {b} after operation {} wrote it",
                        p.name,
                        v - 1
                    ));
                }
            }
            for b in blocks_of(&op.dst_extents) {
                image.insert(b, i + 1);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        BuildInfo, Manifest, OpKind, Operation, Package, PackageKind, PartitionInfo, BLOCK_SIZE,
    };
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn op(kind: OpKind, src: &[(u64, u64)], dst: &[(u64, u64)]) -> Operation {
        let ext = |v: &[(u64, u64)]| v.iter().map(|&(s, n)| Extent::new(s, n)).collect();
        Operation {
            kind,
            src_extents: ext(src),
            dst_extents: ext(dst),
            data_offset: 0,
            data_length: if kind.has_data() { 7 } else { 0 },
            data_sha256: if kind.has_data() { [4; 32] } else { [0; 32] },
            src_sha256: if kind.reads_source() {
                [5; 32]
            } else {
                [0; 32]
            },
        }
    }

    /// A delta manifest of one partition of `blocks` blocks (old and new)
    /// holding `ops` in `stages`, with data offsets laid out in order.
    fn manifest(blocks: u64, ops: Vec<Operation>, stages: Vec<u64>) -> Manifest {
        let mut m = Manifest {
            kind: PackageKind::Delta,
            in_place: true,
            target_build: BuildInfo::default(),
            source_build: Some(BuildInfo::default()),
            data_len: 0,
            partitions: vec![PartitionUpdate {
                name: "system".into(),
                old: Some(PartitionInfo {
                    size: blocks * BLOCK_SIZE,
                    sha256: [1; 32],
                }),
                new: PartitionInfo {
                    size: blocks * BLOCK_SIZE,
                    sha256: [2; 32],
                },
                operations: ops,
                stages,
                source_reads: vec![],
            }],
            removed: vec![],
            codecs: vec![],
            apply_memory_mib: 0,
        };
        lay_out_data(&mut m);
        // Content-aware kinds name their codec library.
        for (kind, codec) in [
            (OpKind::SourceRecompress, crate::Codec::liblz4()),
            (OpKind::SourceXzRebuild, crate::Codec::liblzma()),
            (OpKind::SourceDeflateRebuild, crate::Codec::zlib()),
            (OpKind::SourceLz4Rebuild, crate::Codec::liblz4()),
            (OpKind::SourceZstdRebuild, crate::Codec::libzstd()),
        ] {
            if m.partitions[0].operations.iter().any(|o| o.kind == kind)
                && !m.codecs.contains(&codec)
            {
                m.codecs.push(codec);
            }
        }
        m
    }

    fn lay_out_data(m: &mut Manifest) {
        let mut next = 0;
        for p in &mut m.partitions {
            for o in p.operations.iter_mut().filter(|o| o.kind.has_data()) {
                o.data_offset = next;
                next += o.data_length;
            }
        }
        m.data_len = next;
    }

    /// A small valid in-place manifest with three stages: block 0 is
    /// rebuilt from blocks 0, 1 and 5 (stage 0, before anything overwrites
    /// them); blocks 1 and 2 swap places (stage 1, a cycle that its stash
    /// breaks); then blocks 3..5 get new data and 5..8 zeros (stage 2).
    fn sample() -> Manifest {
        manifest(
            8,
            vec![
                op(OpKind::SourceZstd, &[(0, 2), (5, 1)], &[(0, 1)]),
                op(OpKind::SourceCopy, &[(1, 1)], &[(2, 1)]),
                op(OpKind::SourceCopy, &[(2, 1)], &[(1, 1)]),
                op(OpKind::Replace, &[], &[(3, 2)]),
                op(OpKind::Zero, &[], &[(5, 3)]),
            ],
            vec![1, 2, 2],
        )
    }

    fn in_order(r: Range<usize>) -> Vec<usize> {
        r.collect()
    }

    #[test]
    fn in_place_manifest_round_trips() {
        let m = sample();
        let bytes = m.encode();
        let back = Manifest::decode(&bytes).expect("valid");
        assert_eq!(back, m);
        assert_eq!(back.encode(), bytes);
        let p = &back.partitions[0];
        assert_eq!(stage_ranges(p), vec![0..1, 1..3, 3..5]);
        assert_eq!(stage_stash(p, 0), vec![Extent::new(0, 1)]);
        assert_eq!(stage_stash(p, 1), vec![Extent::new(1, 2)]);
        assert_eq!(stage_stash(p, 2), vec![]);
        assert_eq!(stage_stash(p, 3), vec![]);
        simulate(p, &mut in_order).expect("valid order");
        // The same operations as an A/B manifest: no stages on the wire.
        let mut ab = m.clone();
        ab.in_place = false;
        ab.partitions[0].stages.clear();
        let ab_bytes = ab.encode();
        assert_eq!(
            ab_bytes.len() + 4,
            bytes.len(),
            "install byte is always there"
        );
        let back = Manifest::decode(&ab_bytes).expect("valid");
        assert_eq!(back, ab);
        assert_eq!(stage_ranges(&back.partitions[0]), vec![0..5]);
        // A partition without operations has no stages.
        let empty = manifest(4, vec![], vec![]);
        assert_eq!(Manifest::decode(&empty.encode()).unwrap(), empty);
        assert!(stage_ranges(&empty.partitions[0]).is_empty());
    }

    #[test]
    fn every_truncation_of_an_in_place_manifest_and_package_is_refused() {
        let m = sample();
        let bytes = m.encode();
        for n in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..n]).is_err(), "truncated to {n}");
        }
        let mut pkg = Package::encode_prefix(&m, &[]);
        pkg.extend(std::iter::repeat_n(0u8, m.data_len as usize));
        Package::parse(&pkg).expect("valid package");
        for n in 0..pkg.len() {
            assert!(Package::parse(&pkg[..n]).is_err(), "truncated to {n}");
        }
        // Trailing bytes after the stage list are refused too.
        let mut long = bytes.clone();
        long.push(0);
        assert!(Manifest::decode(&long).is_err());
    }

    #[test]
    fn install_mode_and_stage_counts_are_checked_on_the_wire() {
        let m = sample();
        let bytes = m.encode();
        let mut b = bytes.clone();
        b[1] = 2;
        let err = Manifest::decode(&b).unwrap_err().to_string();
        assert!(
            err.contains("install mode") && err.contains("unknown code 2"),
            "{err}"
        );
        // The stage list is the last thing before the removed count (0):
        // [stage count 3, 1, 2, 2, removed 0]. A huge stage count with
        // three bytes behind it is refused before anything is allocated.
        let at = bytes.len() - 5;
        assert_eq!(&bytes[at..], &[3, 1, 2, 2, 0], "offset arithmetic");
        let mut b = bytes[..at].to_vec();
        b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f, 1, 1, 0]);
        let err = Manifest::decode(&b).unwrap_err().to_string();
        assert!(err.contains("stage count too large"), "{err}");
    }

    /// Decodes `m` and returns the error message it must be refused with.
    fn refusal(m: &Manifest) -> String {
        match Manifest::decode(&m.encode()) {
            Ok(_) => panic!("accepted: {m:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_stage_that_writes_what_a_later_stage_reads_is_refused() {
        // The two halves of the cycle in different stages.
        let mut m = sample();
        m.partitions[0].stages = vec![1, 1, 1, 2];
        let err = refusal(&m);
        assert_eq!(
            err,
            "invalid in-place stages: partition system, stage 1 (operation 1) writes block 2, which operation 2 of stage 2 reads"
        );
        // Rebuilding block 0 after block 1 was overwritten.
        let mut m = sample();
        let ops = &mut m.partitions[0].operations;
        ops.swap(0, 1);
        ops.swap(1, 2);
        m.partitions[0].stages = vec![2, 1, 2];
        lay_out_data(&mut m);
        let err = refusal(&m);
        assert!(
            err.contains(
                "stage 0 (operation 1) writes block 1, which operation 2 of stage 1 reads"
            ),
            "{err}"
        );
        // Rebuilding block 0 from block 5 after the ZERO wrote it.
        let mut m = sample();
        m.partitions[0].operations.rotate_left(1);
        m.partitions[0].stages = vec![2, 2, 1];
        lay_out_data(&mut m);
        let err = refusal(&m);
        assert!(
            err.contains(
                "stage 1 (operation 3) writes block 5, which operation 4 of stage 2 reads"
            ),
            "{err}"
        );
        // In one stage, all of them are fine: the stash covers it.
        let mut m = sample();
        m.partitions[0].stages = vec![5];
        Manifest::decode(&m.encode()).expect("one stage");
        assert_eq!(
            stage_stash(&m.partitions[0], 0),
            vec![Extent::new(0, 3), Extent::new(5, 1)]
        );
    }

    #[test]
    fn stage_shapes_are_checked() {
        let mut m = sample();
        m.partitions[0].stages = vec![1, 0, 2, 2];
        assert_eq!(
            refusal(&m),
            "invalid in-place stages: partition system, stage 1 has no operations"
        );
        m.partitions[0].stages = vec![1, 2];
        assert_eq!(
            refusal(&m),
            "invalid in-place stages: partition system: its 2 stages hold 3 operations, it has 5"
        );
        m.partitions[0].stages = vec![1, 2, 3];
        assert!(refusal(&m).contains("hold 6 operations, it has 5"));
        m.partitions[0].stages = vec![];
        assert!(refusal(&m).contains("its 0 stages hold 0 operations, it has 5"));
        m.partitions[0].stages = vec![u64::MAX, u64::MAX, 2];
        assert!(refusal(&m).contains("it has 5"));
        // An A/B manifest may not carry stages (check() sees them even
        // though encode() would not write them).
        let mut ab = sample();
        ab.in_place = false;
        let err = ab.check().unwrap_err().to_string();
        assert!(
            err.contains("an A/B package has no stages, found 3"),
            "{err}"
        );
        ab.partitions[0].stages.clear();
        ab.check().expect("A/B without stages");
    }

    #[test]
    fn a_stash_over_the_limit_is_refused() {
        let n = MAX_STAGE_STASH_BLOCKS;
        // Shifting `len` blocks up by one block and zeroing the first, in one
        // stage: every block the copy reads is written by the stage.
        let shift = |len: u64| {
            manifest(
                len + 1,
                vec![
                    op(OpKind::SourceCopy, &[(0, len)], &[(1, len)]),
                    op(OpKind::Zero, &[], &[(0, 1)]),
                ],
                vec![2],
            )
        };
        let ok = shift(n);
        Manifest::decode(&ok.encode()).expect("a stash of exactly the limit");
        assert_eq!(blocks_in(&stage_stash(&ok.partitions[0], 0)), n);
        assert_eq!(
            refusal(&shift(n + 1)),
            format!(
                "invalid in-place stages: partition system, stage 0 (operations 0..2) stashes {} blocks, more than the limit of {n}",
                n + 1
            )
        );
    }

    /// A random in-place manifest over `blocks` blocks: up to 8 operations
    /// of every kind, each writing 1 to 3 blocks (disjoint across
    /// operations) and, when it reads, reading random blocks; random stages.
    fn random_manifest(rng: &mut ChaCha8Rng, blocks: u64) -> Manifest {
        let mut free: Vec<u64> = (0..blocks).collect();
        for i in (1..free.len()).rev() {
            free.swap(i, rng.random_range(0..=i));
        }
        let n_ops = rng.random_range(1..=8usize);
        let mut ops = Vec::new();
        for _ in 0..n_ops {
            let n_dst = rng.random_range(1..=3usize).min(free.len());
            if n_dst == 0 {
                break;
            }
            let dst: Vec<(u64, u64)> = free
                .split_off(free.len() - n_dst)
                .iter()
                .map(|&b| (b, 1))
                .collect();
            let kind = OpKind::ALL[rng.random_range(0..OpKind::ALL.len())];
            let n_src = match kind {
                OpKind::Zero | OpKind::Replace => 0,
                OpKind::SourceCopy => n_dst,
                _ => rng.random_range(1..=4),
            };
            let src: Vec<(u64, u64)> = (0..n_src)
                .map(|_| (rng.random_range(0..blocks), 1))
                .collect();
            ops.push(op(kind, &src, &dst));
        }
        let mut stages = Vec::new();
        let mut left = ops.len() as u64;
        while left > 0 {
            let n = rng.random_range(1..=left.min(4));
            stages.push(n);
            left -= n;
        }
        manifest(blocks, ops, stages)
    }

    /// A schedule of the operations in `r`: a random order, sometimes with
    /// a random operation run again later (a re-run after a power cut).
    fn random_schedule(rng: &mut ChaCha8Rng, r: Range<usize>) -> Vec<usize> {
        let mut v: Vec<usize> = r.collect();
        for i in (1..v.len()).rev() {
            v.swap(i, rng.random_range(0..=i));
        }
        while !v.is_empty() && rng.random_ratio(1, 3) {
            let again = v[rng.random_range(0..v.len())];
            let at = rng.random_range(0..=v.len());
            v.insert(at, again);
        }
        v
    }

    /// The validator and the block-by-block model agree on random
    /// manifests: every accepted manifest runs correctly in every order the
    /// model tries, and every manifest refused for rule 1 makes the model
    /// read an overwritten block. Both outcomes must occur often, so the
    /// test can fail either way.
    #[test]
    fn accepted_manifests_run_correctly_in_any_order_within_stages() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (mut accepted, mut refused) = (0, 0);
        for round in 0..4000 {
            let m = random_manifest(&mut rng, 12 + round % 20);
            let p = &m.partitions[0];
            match Manifest::decode(&m.encode()) {
                Ok(back) => {
                    assert_eq!(back, m);
                    accepted += 1;
                    // The stash as extents is the stash block by block.
                    for (st, r) in stage_ranges(p).into_iter().enumerate() {
                        let set = |f: fn(&Operation) -> &Vec<Extent>| -> HashSet<u64> {
                            p.operations[r.clone()]
                                .iter()
                                .flat_map(|o| {
                                    f(o).iter().flat_map(|e| e.start_block..e.end_block())
                                })
                                .collect()
                        };
                        let mut want: Vec<u64> = set(|o| &o.src_extents)
                            .intersection(&set(|o| &o.dst_extents))
                            .copied()
                            .collect();
                        want.sort_unstable();
                        let got = stage_stash(p, st);
                        assert!(got.windows(2).all(|w| w[0].end_block() < w[1].start_block));
                        let got: Vec<u64> = got
                            .iter()
                            .flat_map(|e| e.start_block..e.end_block())
                            .collect();
                        assert_eq!(got, want, "round {round}, stage {st}");
                    }
                    for _ in 0..8 {
                        let mut sched = |r: Range<usize>| random_schedule(&mut rng, r);
                        if let Err(e) = simulate(p, &mut sched) {
                            panic!("round {round}: accepted but {e}: {m:?}");
                        }
                    }
                }
                Err(e) => {
                    let e = e.to_string();
                    assert!(e.contains("which operation"), "round {round}: {e}");
                    refused += 1;
                    assert!(
                        simulate(p, &mut in_order).is_err(),
                        "round {round}: refused ({e}) but the model ran it: {m:?}"
                    );
                }
            }
        }
        assert!(
            accepted > 500 && refused > 500,
            "accepted {accepted}, refused {refused}"
        );
    }

    #[test]
    fn block_sets_join_runs_and_answer_overlaps() {
        let mut s = BlockSet::new();
        assert!(s.is_empty());
        for (a, n) in [(10, 2), (20, 5), (12, 3), (30, 1), (0, 1), (1, 0)] {
            s.insert(Extent::new(a, n));
        }
        let all: Vec<Extent> = s.overlapping(Extent::new(0, 100)).collect();
        let want = [(0, 1), (10, 5), (20, 5), (30, 1)].map(|(a, n)| Extent::new(a, n));
        assert_eq!(all, want);
        assert_eq!(s.first_in(Extent::new(13, 10)), Some(13));
        assert_eq!(s.first_in(Extent::new(15, 5)), None);
        assert_eq!(s.first_in(Extent::new(15, 6)), Some(20));
        let some: Vec<Extent> = s.overlapping(Extent::new(11, 12)).collect();
        assert_eq!(some, vec![Extent::new(11, 4), Extent::new(20, 3)]);
        assert_eq!(s.overlapping(Extent::new(12, 0)).count(), 0);
        // One extent over everything joins every run.
        s.insert(Extent::new(1, 29));
        let all: Vec<Extent> = s.overlapping(Extent::new(0, u64::MAX)).collect();
        assert_eq!(all, vec![Extent::new(0, 31)]);
    }

    /// Many stages and many extents: the checks stay near-linear (a
    /// pairwise check of stages would take minutes here).
    #[test]
    fn large_manifests_are_checked_quickly() {
        let n = 200_000u64;
        // Operation i copies block i + 1 to block i, each in its own stage;
        // a last stage reads 16384 scattered blocks that nobody writes.
        let mut ops: Vec<Operation> = (0..n)
            .map(|i| op(OpKind::SourceCopy, &[(i + 1, 1)], &[(i, 1)]))
            .collect();
        let spread: Vec<(u64, u64)> = (0..16_384).map(|i| (n + 1 + 2 * i, 1)).collect();
        ops.push(op(OpKind::SourceZstd, &spread, &[(n, 1)]));
        let stages = vec![1; ops.len()];
        let m = manifest(n + 1 + 2 * 16_384, ops, stages);
        let started = std::time::Instant::now();
        Manifest::decode(&m.encode()).expect("valid");
        // Reversed, every stage overwrites what the previous one read.
        let mut bad = m.clone();
        bad.partitions[0].operations[..n as usize].reverse();
        assert_eq!(
            refusal(&bad),
            "invalid in-place stages: partition system, stage 199998 (operation 199998) writes block 1, which operation 199999 of stage 199999 reads"
        );
        assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
    }
}
