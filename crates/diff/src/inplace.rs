//! Ordering a partition's operations for in-place installation
//! (`install = 1`, see `docs/FORMAT.md` and [`romdelta_format::inplace`]).
//!
//! The A/B operations of a partition are turned into stages in five steps:
//! 1. what is already in place is left out: the pieces of SOURCE_COPY
//!    operations that copy a block onto itself, and ZERO blocks whose block
//!    already reads as zero;
//! 2. a dependency graph: operation `a` must run before operation `b` when
//!    `a` reads a block `b` writes (one sweep over sorted extents);
//! 3. its strongly connected components (iteratively, whatever their size),
//!    each of which has to run in one stage;
//! 4. a component whose stash (the blocks it reads and also writes) is over
//!    the limit is broken by turning operations into REPLACE until every
//!    component fits: each time, of a few candidates (its
//!    largest contributors, i.e. the operations that read most of its
//!    writes; the contributors that read most per byte of cost; and the
//!    cheapest cut into a piece that fits and the rest), the one that
//!    removes the most excess stash per byte its REPLACEs would add (known
//!    from the region's encoder trial, or a quick zstd pass) is taken;
//! 5. the components, in a topological order that follows the image, are
//!    packed into as few stages as the stash limit allows.

use crate::blocks::is_zero;
use crate::DiffOptions;
use rayon::prelude::*;
use romdelta_format::inplace::{intersect_extents, merge_extents, BlockSet};
use romdelta_format::{blocks_in, limits, Extent, OpKind, Operation, BLOCK_SIZE};
use romdelta_rom::Partition;
use sha2::Digest as _;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::Write;

/// What the in-place ordering did to one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct InPlaceStats {
    /// Stages of the partition.
    pub stages: u64,
    /// Blocks in the largest stash of a stage.
    pub largest_stash_blocks: u64,
    /// Operations turned into REPLACE to break dependency cycles whose
    /// stash would not fit.
    pub converted_to_replace: u64,
    /// Blocks that SOURCE_COPY operations would have copied onto
    /// themselves, left out.
    pub identity_copy_blocks_dropped: u64,
    /// Blocks that ZERO operations would have zeroed although they already
    /// read as zero, left out.
    pub zero_blocks_dropped: u64,
}

/// The partition's operations in stage order, the stage sizes, and what was done.
pub(crate) struct Ordered {
    /// Operations, in manifest order. Data offsets refer to the data file
    /// the operations were generated into (not yet in manifest order).
    pub operations: Vec<Operation>,
    /// Operations per stage.
    pub stages: Vec<u64>,
    /// Statistics.
    pub stats: InPlaceStats,
}

/// zstd level of the estimates of what a REPLACE would cost.
const ESTIMATE_LEVEL: i32 = 1;

/// Most blocks of one SOURCE_COPY piece while operations are ordered; the
/// pieces of a stage are joined again at the end.
const COPY_PIECE: u64 = 256;

/// Most extents in one rebuilt ZERO or SOURCE_COPY operation, as in A/B generation.
const MAX_OP_EXTENTS: usize = 1024;

/// The sizes that decide which blocks already hold the right bytes.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    old: u64,
    new: u64,
}

impl Sizes {
    /// Whether every byte of the new image within block `b` is, before the
    /// first stage, the old image's byte at that place for certain: blocks
    /// wholly inside the old image, and the old image's last partial block
    /// when the new image ends inside the old one. (A block that straddles
    /// the old end of a growing image would rely on the bytes past the old
    /// end reading as zero; nothing is left out there.)
    fn holds_source(self, b: u64) -> bool {
        let start = b * BLOCK_SIZE;
        start + BLOCK_SIZE <= self.old || (start < self.old && self.new <= self.old)
    }

    /// Whether block `b` lies wholly past the old image's end, where an
    /// in-place image reads as zero before the first stage.
    fn past_source(self, b: u64) -> bool {
        b * BLOCK_SIZE >= self.old
    }
}

/// Orders the operations of one partition for in-place installation.
/// `src` is the partition's old image (none for a partition new in the
/// target, or a full package); `replace_lens` holds, by first block, what
/// each encoded region would cost as a REPLACE; REPLACE data of converted
/// operations is appended to `data`, whose length so far is `data_len`.
pub(crate) fn order(
    operations: Vec<Operation>,
    src: Option<&Partition>,
    dst: &Partition,
    opts: &DiffOptions,
    replace_lens: &HashMap<u64, u64>,
    data: &mut dyn Write,
    data_len: &mut u64,
) -> std::io::Result<Ordered> {
    let max_stash = opts.max_stash_blocks.min(limits::MAX_STAGE_STASH_BLOCKS);
    let mut stats = InPlaceStats::default();
    let mut ops = match src {
        Some(s) => drop_in_place(operations, s, dst.size(), &mut stats),
        None => operations,
    };
    let mut graph = Graph::new(&ops);
    // What re-encoding an operation as REPLACE would add: known for encoded
    // regions, estimated with a quick zstd pass for the others.
    let estimate = |op: &Operation| {
        let known = op
            .dst_extents
            .first()
            .and_then(|e| replace_lens.get(&e.start_block));
        if let (Some(&len), true) = (known, op.kind.has_data()) {
            return len.saturating_sub(op.data_length);
        }
        let mut target = Vec::with_capacity((op.dst_blocks() * BLOCK_SIZE) as usize);
        dst.read_extents(&op.dst_extents, &mut target)
            .expect("reads of a mapped image do not fail");
        let replace = romdelta_format::ops::encode_replace(&target, ESTIMATE_LEVEL).len() as u64;
        replace.saturating_sub(op.data_length)
    };
    let converted = break_cycles(&mut ops, &mut graph, max_stash, &estimate);
    stats.converted_to_replace = converted.len() as u64;
    if !converted.is_empty() {
        ops = convert_to_replace(ops, &converted, dst, opts.level, data, data_len)?;
        graph = Graph::new(&ops);
    }
    let comps = graph.components(&(0..ops.len()).collect::<Vec<_>>());
    let (operations, stages) = pack_stages(&ops, &graph, comps, max_stash);
    let (operations, stages) = finish_copies(
        operations,
        &stages,
        src,
        opts.copy_op_blocks.clamp(1, limits::MAX_COPY_BLOCKS),
    );
    stats.stages = stages.len() as u64;
    let mut start = 0usize;
    for &n in &stages {
        let stage: Vec<usize> = (start..start + n as usize).collect();
        let stash = intersect_extents(
            &reads_of(&operations, &stage),
            &writes_of(&operations, &stage),
        );
        stats.largest_stash_blocks = stats.largest_stash_blocks.max(blocks_in(&stash));
        start += n as usize;
    }
    Ok(Ordered {
        operations,
        stages,
        stats,
    })
}

/// Step 1: leaves out the SOURCE_COPY pieces that copy a block onto itself
/// and the ZERO blocks that already read as zero, rebuilding the operations
/// from what is left. Copies are cut into pieces of at most [`COPY_PIECE`]
/// blocks, so that the graph sees which blocks depend on which rather than
/// a few large copies that each tie many places together.
fn drop_in_place(
    operations: Vec<Operation>,
    src: &Partition,
    new_size: u64,
    stats: &mut InPlaceStats,
) -> Vec<Operation> {
    let sizes = Sizes {
        old: src.size(),
        new: new_size,
    };
    let rebuilt: Vec<(Vec<Operation>, u64, u64)> = operations
        .into_par_iter()
        .map(|op| match op.kind {
            OpKind::SourceCopy => {
                let (ops, dropped) = split_copy(op, sizes);
                (ops, dropped, 0)
            }
            OpKind::Zero => {
                let (ops, dropped) = drop_zeros(op, src, sizes);
                (ops, 0, dropped)
            }
            _ => (vec![op], 0, 0),
        })
        .collect();
    src.release_all();
    let mut out = Vec::with_capacity(rebuilt.len());
    for (ops, copies, zeros) in rebuilt {
        out.extend(ops);
        stats.identity_copy_blocks_dropped += copies;
        stats.zero_blocks_dropped += zeros;
    }
    out
}

/// The pieces of a SOURCE_COPY as `(src_block, dst_block, blocks)`, each
/// contiguous on both sides.
fn copy_pieces(op: &Operation) -> Vec<(u64, u64, u64)> {
    let mut out = Vec::new();
    let mut srcs = op.src_extents.iter().copied();
    let mut cur = srcs.next();
    for d in &op.dst_extents {
        let (mut at, mut left) = (d.start_block, d.num_blocks);
        while left > 0 {
            let Some(s) = cur.as_mut() else { break };
            let n = left.min(s.num_blocks);
            out.push((s.start_block, at, n));
            s.start_block += n;
            s.num_blocks -= n;
            at += n;
            left -= n;
            if s.num_blocks == 0 {
                cur = srcs.next();
            }
        }
    }
    out
}

/// Appends `e` to `v`, joining it to the last extent when they touch.
fn push_joined(v: &mut Vec<Extent>, e: Extent) {
    match v.last_mut() {
        Some(last) if last.end_block() == e.start_block => last.num_blocks += e.num_blocks,
        _ => v.push(e),
    }
}

/// A SOURCE_COPY as copies of contiguous pieces of at most [`COPY_PIECE`]
/// blocks, without the blocks it would copy onto themselves (and the number
/// of those). The pieces' source hashes are left to [`finish_copies`].
fn split_copy(op: Operation, sizes: Sizes) -> (Vec<Operation>, u64) {
    let mut out = Vec::new();
    let mut dropped = 0;
    let piece = |s: u64, d: u64, n: u64, out: &mut Vec<Operation>| {
        let mut k = 0;
        while k < n {
            let len = (n - k).min(COPY_PIECE);
            out.push(Operation {
                kind: OpKind::SourceCopy,
                src_extents: vec![Extent::new(s + k, len)],
                dst_extents: vec![Extent::new(d + k, len)],
                data_offset: 0,
                data_length: 0,
                data_sha256: [0; 32],
                src_sha256: [0; 32],
            });
            k += len;
        }
    };
    for (s, d, n) in copy_pieces(&op) {
        if s != d {
            piece(s, d, n, &mut out);
            continue;
        }
        for b in d..d + n {
            if sizes.holds_source(b) {
                dropped += 1;
            } else {
                piece(b, b, 1, &mut out);
            }
        }
    }
    (out, dropped)
}

/// Joins the SOURCE_COPY operations of each stage into operations of at
/// most `max_blocks` blocks and [`MAX_OP_EXTENTS`] extents (the stage reads
/// and writes the same blocks, so its stash is unchanged) and gives every
/// SOURCE_COPY its source hash. Returns the operations and stage sizes.
fn finish_copies(
    ops: Vec<Operation>,
    stages: &[u64],
    src: Option<&Partition>,
    max_blocks: u64,
) -> (Vec<Operation>, Vec<u64>) {
    let mut out = Vec::with_capacity(ops.len());
    let mut sizes = Vec::with_capacity(stages.len());
    let mut ops = ops.into_iter();
    for &n in stages {
        let stage: Vec<Operation> = ops.by_ref().take(n as usize).collect();
        let (mut copies, others): (Vec<Operation>, Vec<Operation>) = stage
            .into_iter()
            .partition(|o| o.kind == OpKind::SourceCopy);
        copies.sort_by_key(|o| o.dst_extents.first().map(|e| e.start_block));
        let before = out.len();
        let mut cur: Option<Operation> = None;
        for c in copies {
            if let Some(op) = cur.as_mut() {
                let fits = op.dst_blocks() + c.dst_blocks() <= max_blocks
                    && op.src_extents.len() + c.src_extents.len() <= MAX_OP_EXTENTS
                    && op.dst_extents.len() + c.dst_extents.len() <= MAX_OP_EXTENTS;
                if fits {
                    c.src_extents
                        .iter()
                        .for_each(|e| push_joined(&mut op.src_extents, *e));
                    c.dst_extents
                        .iter()
                        .for_each(|e| push_joined(&mut op.dst_extents, *e));
                    continue;
                }
            }
            out.extend(cur.replace(c));
        }
        out.extend(cur);
        out.extend(others);
        sizes.push((out.len() - before) as u64);
    }
    if let Some(src) = src {
        out.par_iter_mut()
            .filter(|o| o.kind == OpKind::SourceCopy)
            .for_each(|o| {
                let mut h = sha2::Sha256::new();
                src.for_each_piece(&o.src_extents, |b| h.update(b))
                    .expect("reads of a mapped image do not fail");
                o.src_sha256 = h.finalize().into();
            });
        src.release_all();
    }
    (out, sizes)
}

/// A ZERO without the blocks that already read as zero: source blocks of
/// zeros, and blocks wholly past the old image's end (and the number of
/// those). What is left is split into operations of at most
/// [`MAX_OP_EXTENTS`] extents.
fn drop_zeros(op: Operation, src: &Partition, sizes: Sizes) -> (Vec<Operation>, u64) {
    let already_zero = |b: u64| {
        sizes.past_source(b) || (sizes.holds_source(b) && src.block(b).is_some_and(|x| is_zero(&x)))
    };
    let mut kept: Vec<Extent> = Vec::new();
    let mut dropped = 0;
    for e in &op.dst_extents {
        for b in e.start_block..e.end_block() {
            if already_zero(b) {
                dropped += 1;
            } else {
                push_joined(&mut kept, Extent::new(b, 1));
            }
        }
    }
    if dropped == 0 {
        return (vec![op], 0);
    }
    let ops = kept
        .chunks(MAX_OP_EXTENTS)
        .map(|c| Operation {
            dst_extents: c.to_vec(),
            ..op.clone()
        })
        .collect();
    (ops, dropped)
}

/// Step 2: who must run before whom.
struct Graph {
    /// `succ[a]`: the operations that write a block `a` reads (`a` must run
    /// before them), sorted, without `a` itself.
    succ: Vec<Vec<u32>>,
}

impl Graph {
    /// Edges from one sweep: destinations are disjoint, so after sorting
    /// them each source extent finds the writers it overlaps by binary search.
    fn new(ops: &[Operation]) -> Self {
        let mut writes: Vec<(u64, u64, u32)> = ops
            .iter()
            .enumerate()
            .flat_map(|(i, o)| {
                o.dst_extents
                    .iter()
                    .map(move |e| (e.start_block, e.end_block(), i as u32))
            })
            .collect();
        writes.sort_unstable();
        let succ = ops
            .par_iter()
            .enumerate()
            .map(|(a, o)| {
                let mut out: Vec<u32> = Vec::new();
                for e in &o.src_extents {
                    let first = writes.partition_point(|w| w.1 <= e.start_block);
                    for w in writes[first..].iter().take_while(|w| w.0 < e.end_block()) {
                        if w.2 as usize != a {
                            out.push(w.2);
                        }
                    }
                }
                out.sort_unstable();
                out.dedup();
                out
            })
            .collect();
        Graph { succ }
    }

    /// Step 3: the strongly connected components of the subgraph on
    /// `nodes` (Tarjan's algorithm with an explicit stack), each sorted.
    /// Its memory and time are proportional to the subgraph, not the graph.
    fn components(&self, nodes: &[usize]) -> Vec<Vec<usize>> {
        const NONE: u32 = u32::MAX;
        let mut nodes = nodes.to_vec();
        nodes.sort_unstable();
        nodes.dedup();
        let local = |v: usize| nodes.binary_search(&v).ok();
        let m = nodes.len();
        let mut index = vec![NONE; m];
        let mut low = vec![0u32; m];
        let mut on_stack = vec![false; m];
        let mut stack: Vec<usize> = Vec::new();
        let mut calls: Vec<(usize, usize)> = Vec::new();
        let mut next = 0u32;
        let mut out = Vec::new();
        for root in 0..m {
            if index[root] != NONE {
                continue;
            }
            index[root] = next;
            low[root] = next;
            next += 1;
            stack.push(root);
            on_stack[root] = true;
            calls.push((root, 0));
            while let Some(&mut (v, ref mut pos)) = calls.last_mut() {
                if let Some(&w) = self.succ[nodes[v]].get(*pos) {
                    *pos += 1;
                    let Some(w) = local(w as usize) else {
                        continue;
                    };
                    if index[w] == NONE {
                        index[w] = next;
                        low[w] = next;
                        next += 1;
                        stack.push(w);
                        on_stack[w] = true;
                        calls.push((w, 0));
                    } else if on_stack[w] {
                        low[v] = low[v].min(index[w]);
                    }
                    continue;
                }
                calls.pop();
                if let Some(&(u, _)) = calls.last() {
                    low[u] = low[u].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut comp = Vec::new();
                    loop {
                        let w = stack.pop().expect("v is on the stack");
                        on_stack[w] = false;
                        comp.push(nodes[w]);
                        if w == v {
                            break;
                        }
                    }
                    comp.sort_unstable();
                    out.push(comp);
                }
            }
        }
        out
    }
}

/// Blocks the operations `comp` read, merged.
fn reads_of(ops: &[Operation], comp: &[usize]) -> Vec<Extent> {
    merge_extents(
        comp.iter()
            .flat_map(|&i| ops[i].src_extents.iter().copied()),
    )
}

/// Blocks the operations `comp` write, merged.
fn writes_of(ops: &[Operation], comp: &[usize]) -> Vec<Extent> {
    merge_extents(
        comp.iter()
            .flat_map(|&i| ops[i].dst_extents.iter().copied()),
    )
}

/// Blocks the operations `comp` would stash as one stage.
fn stash_blocks(ops: &[Operation], comp: &[usize]) -> u64 {
    blocks_in(&intersect_extents(
        &reads_of(ops, comp),
        &writes_of(ops, comp),
    ))
}

/// Blocks of `comps` stashed beyond `max_stash`, over all of them.
fn excess(ops: &[Operation], comps: &[Vec<usize>], max_stash: u64) -> u64 {
    comps
        .iter()
        .map(|c| stash_blocks(ops, c).saturating_sub(max_stash))
        .sum()
}

/// How many single operations of each kind step 4 tries per cut.
const SINGLE_CANDIDATES: usize = 8;

/// Step 4: breaks every component whose stash is over `max_stash` by
/// marking operations for REPLACE (their reads and edges are cleared),
/// until every component fits. Returns the marked operations, sorted.
///
/// An operation that alone stashes too much is marked. Otherwise several
/// candidate sets are tried, and the one that removes the most excess stash
/// (over the pieces the component then falls into) per byte its REPLACEs
/// are estimated to add (`cost`) is marked:
/// - each of the operations that read most of the component's writes (its
///   largest contributors),
/// - each of those that read most per byte of cost,
/// - the cheapest cut ([`cheapest_cut`]), which always leaves a piece that
///   fits.
fn break_cycles(
    ops: &mut [Operation],
    graph: &mut Graph,
    max_stash: u64,
    cost: &(dyn Fn(&Operation) -> u64 + Sync),
) -> Vec<usize> {
    let mut converted = Vec::new();
    let mut costs: HashMap<usize, u64> = HashMap::new();
    let mut work = graph.components(&(0..ops.len()).collect::<Vec<_>>());
    while let Some(comp) = work.pop() {
        let before = stash_blocks(ops, &comp).saturating_sub(max_stash);
        if before == 0 {
            continue;
        }
        let alone: Vec<usize> = comp
            .iter()
            .copied()
            .filter(|&i| stash_blocks(ops, &[i]) > max_stash)
            .collect();
        let chosen = if !alone.is_empty() {
            alone
        } else {
            let missing: Vec<usize> = comp
                .iter()
                .copied()
                .filter(|i| !costs.contains_key(i))
                .collect();
            let found: Vec<u64> = missing.par_iter().map(|&i| cost(&ops[i]).max(1)).collect();
            costs.extend(missing.into_iter().zip(found));
            let writes = writes_of(ops, &comp);
            let mut readers: Vec<(u64, usize)> = comp
                .iter()
                .map(|&i| {
                    let own = merge_extents(ops[i].src_extents.iter().copied());
                    (blocks_in(&intersect_extents(&own, &writes)), i)
                })
                .filter(|&(c, _)| c > 0)
                .collect();
            let mut candidates: Vec<Vec<usize>> = Vec::new();
            readers.sort_unstable_by_key(|&(c, i)| (Reverse(c), i));
            candidates.extend(
                readers
                    .iter()
                    .take(SINGLE_CANDIDATES)
                    .map(|&(_, i)| vec![i]),
            );
            readers.sort_by(|&(c1, i1), &(c2, i2)| {
                let (r1, r2) = (c1 as f64 / costs[&i1] as f64, c2 as f64 / costs[&i2] as f64);
                r2.total_cmp(&r1).then(i1.cmp(&i2))
            });
            candidates.extend(
                readers
                    .iter()
                    .take(SINGLE_CANDIDATES)
                    .map(|&(_, i)| vec![i]),
            );
            let cut = cheapest_cut(ops, graph, &comp, max_stash, &costs);
            candidates.push(cut.clone());
            candidates.sort();
            candidates.dedup();
            let mut best: Option<(f64, Vec<usize>)> = None;
            for set in candidates {
                let saved: Vec<(Vec<Extent>, Vec<u32>)> = set
                    .iter()
                    .map(|&x| {
                        (
                            std::mem::take(&mut ops[x].src_extents),
                            std::mem::take(&mut graph.succ[x]),
                        )
                    })
                    .collect();
                let after = excess(ops, &graph.components(&comp), max_stash);
                for (&x, (src, succ)) in set.iter().zip(saved) {
                    ops[x].src_extents = src;
                    graph.succ[x] = succ;
                }
                let spent: u64 = set.iter().map(|x| costs[x]).sum();
                let score = before.saturating_sub(after) as f64 / spent as f64;
                if best.as_ref().is_none_or(|(b, _)| score > *b) {
                    best = Some((score, set));
                }
            }
            match best {
                Some((score, set)) if score > 0.0 => set,
                _ => cut,
            }
        };
        for x in chosen {
            ops[x].src_extents.clear();
            ops[x].kind = OpKind::Replace;
            graph.succ[x].clear();
            converted.push(x);
        }
        work.extend(graph.components(&comp));
    }
    converted.sort_unstable();
    converted
}

/// The operations to mark to cut component `comp` (whose every operation
/// fits alone, and which does not fit as a whole), as [`break_cycles`] says.
fn cheapest_cut(
    ops: &[Operation],
    graph: &Graph,
    comp: &[usize],
    max_stash: u64,
    costs: &HashMap<usize, u64>,
) -> Vec<usize> {
    let n = comp.len();
    let mut order: Vec<usize> = comp.to_vec();
    order.sort_by_key(|&i| (ops[i].dst_extents.iter().map(|e| e.start_block).min(), i));
    let mut pos: HashMap<usize, usize> = HashMap::with_capacity(n);
    for (k, &i) in order.iter().enumerate() {
        pos.insert(i, k);
    }
    // The stash of each prefix order[..t], grown one operation at a time.
    let (mut reads, mut writes, mut stash) = (BlockSet::new(), BlockSet::new(), BlockSet::new());
    let mut stashed = 0u64;
    let mut longest = 0usize;
    for (k, &i) in order.iter().enumerate() {
        let own_reads = merge_extents(ops[i].src_extents.iter().copied());
        let own_writes = merge_extents(ops[i].dst_extents.iter().copied());
        // What it writes that the prefix or itself reads (none of it is
        // stashed yet: writes are disjoint) ...
        let mut seen = own_reads.clone();
        for w in &own_writes {
            seen.extend(reads.overlapping(*w));
        }
        for e in intersect_extents(&merge_extents(seen), &own_writes) {
            stashed += e.num_blocks;
            stash.insert(e);
        }
        // ... and what it reads that the prefix writes, if not stashed yet.
        for r in &own_reads {
            let hits: Vec<Extent> = writes.overlapping(*r).collect();
            for q in hits {
                let already: u64 = stash.overlapping(q).map(|x| x.num_blocks).sum();
                stashed += q.num_blocks - already;
                stash.insert(q);
            }
        }
        own_reads.iter().for_each(|e| reads.insert(*e));
        own_writes.iter().for_each(|e| writes.insert(*e));
        if stashed > max_stash {
            break;
        }
        longest = k + 1;
    }
    // Cut t separates order[..t] from order[t..]. An operation at position
    // p with successors at positions below p reads the prefix for cuts
    // t in (lowest, p]; with successors above p, the rest for t in (p, highest].
    let longest = longest.clamp(1, n - 1);
    let mut from_rest = vec![0i128; n + 1];
    let mut from_prefix = vec![0i128; n + 1];
    let span = |i: usize| {
        let p = pos[&i];
        let mut lo = p;
        let mut hi = p;
        for &w in &graph.succ[i] {
            if let Some(&q) = pos.get(&(w as usize)) {
                lo = lo.min(q);
                hi = hi.max(q);
            }
        }
        (p, lo, hi)
    };
    for &i in comp {
        let (p, lo, hi) = span(i);
        let c = i128::from(costs[&i]);
        if lo < p {
            from_rest[lo + 1] += c;
            from_rest[p + 1] -= c;
        }
        if hi > p {
            from_prefix[p + 1] += c;
            from_prefix[hi + 1] -= c;
        }
    }
    let (mut rest_cost, mut prefix_cost) = (0i128, 0i128);
    let mut best: Option<(i128, usize, bool)> = None;
    for t in 1..=longest {
        rest_cost += from_rest[t];
        prefix_cost += from_prefix[t];
        if t < longest.div_ceil(2) {
            continue;
        }
        for (c, rest) in [(rest_cost, true), (prefix_cost, false)] {
            if best.is_none_or(|(b, _, _)| c <= b) {
                best = Some((c, t, rest));
            }
        }
    }
    let (_, t, rest) = best.expect("at least one cut point");
    comp.iter()
        .copied()
        .filter(|&i| {
            let (p, lo, hi) = span(i);
            if rest {
                lo < p && lo < t && t <= p
            } else {
                hi > p && p < t && t <= hi
            }
        })
        .collect()
}

/// Encodes the marked operations as REPLACE (the target blocks they write,
/// compressed at `level`, split where they write more than one REPLACE may),
/// appending their data to `data`.
fn convert_to_replace(
    ops: Vec<Operation>,
    converted: &[usize],
    dst: &Partition,
    level: i32,
    data: &mut dyn Write,
    data_len: &mut u64,
) -> std::io::Result<Vec<Operation>> {
    // Each converted operation as pieces of at most MAX_OP_DST_BLOCKS blocks.
    let pieces: Vec<(usize, Vec<Extent>)> = converted
        .iter()
        .flat_map(|&i| {
            let mut out = Vec::new();
            let mut cur: Vec<Extent> = Vec::new();
            for e in &ops[i].dst_extents {
                let mut e = *e;
                while e.num_blocks > 0 {
                    let room = limits::MAX_OP_DST_BLOCKS - blocks_in(&cur);
                    let n = e.num_blocks.min(room);
                    cur.push(Extent::new(e.start_block, n));
                    e = Extent::new(e.start_block + n, e.num_blocks - n);
                    if blocks_in(&cur) == limits::MAX_OP_DST_BLOCKS {
                        out.push((i, std::mem::take(&mut cur)));
                    }
                }
            }
            if !cur.is_empty() {
                out.push((i, cur));
            }
            out
        })
        .collect();
    let encoded: Vec<Vec<u8>> = pieces
        .par_iter()
        .map(|(_, extents)| {
            let mut target = Vec::with_capacity((blocks_in(extents) * BLOCK_SIZE) as usize);
            dst.read_extents(extents, &mut target)
                .expect("reads of a mapped image do not fail");
            romdelta_format::ops::encode_replace(&target, level)
        })
        .collect();
    dst.release_all();
    let mut replaced: Vec<Vec<Operation>> = vec![Vec::new(); ops.len()];
    for ((i, extents), bytes) in pieces.into_iter().zip(encoded) {
        data.write_all(&bytes)?;
        replaced[i].push(Operation {
            kind: OpKind::Replace,
            src_extents: Vec::new(),
            dst_extents: extents,
            data_offset: *data_len,
            data_length: bytes.len() as u64,
            data_sha256: romdelta_format::sha256(&bytes),
            src_sha256: [0; 32],
        });
        *data_len += bytes.len() as u64;
    }
    let mut out = Vec::with_capacity(ops.len() + replaced.iter().map(Vec::len).sum::<usize>());
    for (i, op) in ops.into_iter().enumerate() {
        if converted.binary_search(&i).is_ok() {
            out.append(&mut replaced[i]);
        } else {
            out.push(op);
        }
    }
    Ok(out)
}

/// Step 5: the components in a topological order (among those ready, the
/// one whose first written block is lowest), packed greedily into stages
/// while the stage's stash stays within `max_stash`.
///
/// Because a component never reads what an earlier component writes (that
/// would be an edge to the earlier one), adding component `C` to a stage
/// `S` adds to the stash exactly the blocks `C` writes that `S` or `C`
/// reads.
fn pack_stages(
    ops: &[Operation],
    graph: &Graph,
    comps: Vec<Vec<usize>>,
    max_stash: u64,
) -> (Vec<Operation>, Vec<u64>) {
    let mut comp_of = vec![0usize; ops.len()];
    for (c, members) in comps.iter().enumerate() {
        members.iter().for_each(|&i| comp_of[i] = c);
    }
    let mut indegree = vec![0usize; comps.len()];
    let mut next: Vec<Vec<usize>> = vec![Vec::new(); comps.len()];
    for (a, succ) in graph.succ.iter().enumerate() {
        for &b in succ {
            let (ca, cb) = (comp_of[a], comp_of[b as usize]);
            if ca != cb {
                next[ca].push(cb);
                indegree[cb] += 1;
            }
        }
    }
    let key = |c: usize| {
        comps[c]
            .iter()
            .flat_map(|&i| ops[i].dst_extents.iter().map(|e| e.start_block))
            .min()
            .unwrap_or(0)
    };
    let mut ready: BinaryHeap<Reverse<(u64, usize)>> = (0..comps.len())
        .filter(|&c| indegree[c] == 0)
        .map(|c| Reverse((key(c), c)))
        .collect();
    let mut out_ops = Vec::with_capacity(ops.len());
    let mut stages: Vec<u64> = Vec::new();
    let mut stage_reads = BlockSet::new();
    let mut stage_stash = 0u64;
    let mut in_stage = 0u64;
    while let Some(Reverse((_, c))) = ready.pop() {
        for &d in &next[c] {
            indegree[d] -= 1;
            if indegree[d] == 0 {
                ready.push(Reverse((key(d), d)));
            }
        }
        let members = &comps[c];
        let reads = reads_of(ops, members);
        let writes = writes_of(ops, members);
        let own = blocks_in(&intersect_extents(&reads, &writes));
        let mut seen: Vec<Extent> = reads.clone();
        for w in &writes {
            seen.extend(stage_reads.overlapping(*w));
        }
        let added = blocks_in(&intersect_extents(&merge_extents(seen), &writes));
        if in_stage > 0 && stage_stash + added > max_stash {
            stages.push(in_stage);
            in_stage = 0;
            stage_reads = BlockSet::new();
            stage_stash = own;
        } else {
            stage_stash += added;
        }
        reads.iter().for_each(|e| stage_reads.insert(*e));
        let mut members = members.clone();
        members.sort_by_key(|&i| ops[i].dst_extents.first().map(|e| e.start_block));
        out_ops.extend(members.iter().map(|&i| ops[i].clone()));
        in_stage += members.len() as u64;
    }
    if in_stage > 0 {
        stages.push(in_stage);
    }
    (out_ops, stages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: OpKind, src: &[(u64, u64)], dst: &[(u64, u64)]) -> Operation {
        let ext = |v: &[(u64, u64)]| v.iter().map(|&(s, n)| Extent::new(s, n)).collect();
        Operation {
            kind,
            src_extents: ext(src),
            dst_extents: ext(dst),
            data_offset: 0,
            data_length: 0,
            data_sha256: [0; 32],
            src_sha256: [0; 32],
        }
    }

    fn copy(src: u64, dst: u64, n: u64) -> Operation {
        op(OpKind::SourceCopy, &[(src, n)], &[(dst, n)])
    }

    #[test]
    fn components_are_the_cycles_of_the_read_write_graph() {
        // 0 and 1 swap blocks 0..4 and 10..14; 2 reads what 3 writes; 4
        // reads its own blocks only.
        let ops = vec![
            copy(10, 0, 4),
            copy(0, 10, 4),
            copy(20, 30, 2),
            op(OpKind::Replace, &[], &[(20, 2)]),
            copy(40, 41, 3),
        ];
        let g = Graph::new(&ops);
        assert_eq!(g.succ, vec![vec![1], vec![0], vec![3], vec![], vec![]]);
        let mut comps = g.components(&[0, 1, 2, 3, 4]);
        comps.sort();
        assert_eq!(comps, vec![vec![0, 1], vec![2], vec![3], vec![4]]);
        // Restricted to a subset, edges leaving it do not count.
        assert_eq!(g.components(&[0]), vec![vec![0]]);
    }

    #[test]
    fn a_long_cycle_needs_no_deep_recursion() {
        // Operation i reads what operation i + 1 writes, the last reads what
        // the first writes: one component of 300000 operations.
        let n = 300_000u64;
        let ops: Vec<Operation> = (0..n).map(|i| copy((i + 1) % n, i, 1)).collect();
        let g = Graph::new(&ops);
        let comps = g.components(&(0..n as usize).collect::<Vec<_>>());
        assert_eq!(comps.len(), 1);
        assert_eq!(comps[0].len(), n as usize);
    }

    #[test]
    fn cycles_too_large_to_stash_lose_the_cheapest_of_their_largest_readers() {
        // Op 0 reads 8 blocks op 1 writes, op 1 reads 2 blocks op 0 writes
        // (and 4 of its own): together they stash 10 blocks.
        let mut ops = vec![copy(4, 0, 8), op(OpKind::SourceZstd, &[(0, 8)], &[(4, 8)])];
        ops[0].dst_extents = vec![Extent::new(0, 2), Extent::new(20, 6)];
        let flat = |_: &Operation| 100;
        let mut fits = ops.clone();
        let mut g = Graph::new(&ops);
        assert!(break_cycles(&mut fits, &mut g, 10, &flat).is_empty());
        // Either conversion brings it within 9; at equal cost the larger
        // reader goes, otherwise the cheaper one.
        let mut first = ops.clone();
        let mut g = Graph::new(&ops);
        assert_eq!(break_cycles(&mut first, &mut g, 9, &flat), vec![0]);
        assert!(first[0].src_extents.is_empty() && first[0].kind == OpKind::Replace);
        assert!(g.succ[0].is_empty());
        let dear_copy = |o: &Operation| {
            if o.kind == OpKind::SourceCopy {
                1000
            } else {
                10
            }
        };
        let mut g = Graph::new(&ops);
        assert_eq!(break_cycles(&mut ops, &mut g, 9, &dear_copy), vec![1]);
        // No stash at all: both must stop reading what the other writes.
        let mut none = vec![copy(4, 0, 4), copy(0, 4, 4)];
        let mut g = Graph::new(&none);
        assert_eq!(break_cycles(&mut none, &mut g, 0, &flat), vec![0]);
        assert_eq!(g.components(&[0, 1]).len(), 2);
    }

    /// Operations in `stages`, checked by the format's validator and its
    /// block-by-block model.
    fn check_stages(ops: &[Operation], stages: &[u64]) {
        let mut p = romdelta_format::PartitionUpdate {
            name: "p".into(),
            old: Some(romdelta_format::PartitionInfo {
                size: 1 << 20,
                sha256: [0; 32],
            }),
            new: romdelta_format::PartitionInfo {
                size: 1 << 20,
                sha256: [0; 32],
            },
            operations: ops.to_vec(),
            stages: stages.to_vec(),
            source_reads: vec![],
        };
        let mut next = 0;
        for o in p.operations.iter_mut() {
            o.kind = if o.src_extents.is_empty() {
                OpKind::Zero
            } else {
                OpKind::SourceZstd
            };
            if o.kind.has_data() {
                o.data_offset = next;
                o.data_length = 1;
                next += 1;
            }
        }
        let m = romdelta_format::Manifest {
            kind: romdelta_format::PackageKind::Delta,
            in_place: true,
            target_build: Default::default(),
            source_build: Some(Default::default()),
            data_len: next,
            partitions: vec![p],
            removed: vec![],
            codecs: vec![],
            apply_memory_mib: 0,
        };
        m.check().expect("valid stages");
        romdelta_format::inplace::simulate(&m.partitions[0], &mut |r| r.rev().collect())
            .expect("runs in place");
    }

    #[test]
    fn components_pack_into_few_stages_within_the_stash_limit() {
        // A chain: op i reads block i + 1, which op i + 1 writes, and its
        // own block i; and some operations that read nothing.
        let mut ops: Vec<Operation> = (0..10).map(|i| copy(i, i, 2)).collect();
        for (i, o) in ops.iter_mut().enumerate() {
            o.dst_extents = vec![Extent::new(i as u64, 1)];
            o.src_extents = vec![Extent::new(i as u64, 2)];
        }
        ops.extend((0..5).map(|i| op(OpKind::Zero, &[], &[(100 + i, 1)])));
        let g = Graph::new(&ops);
        let comps = g.components(&(0..ops.len()).collect::<Vec<_>>());
        assert_eq!(comps.len(), 15, "a chain, no cycle");
        // Everything fits in one stage when the stash may hold 10 blocks.
        let (packed, stages) = pack_stages(&ops, &g, comps.clone(), 10);
        assert_eq!(stages, vec![15]);
        check_stages(&packed, &stages);
        // Op i reads block i + 1 before op i + 1 overwrites it, so the
        // chain runs forwards; each operation adds one block to its stage's
        // stash (its own block), and the ZEROs add none.
        let (packed, stages) = pack_stages(&ops, &g, comps.clone(), 4);
        assert_eq!(stages, vec![4, 4, 7]);
        check_stages(&packed, &stages);
        let (packed, stages) = pack_stages(&ops, &g, comps, 1);
        assert_eq!(stages, vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 6]);
        check_stages(&packed, &stages);
    }

    #[test]
    fn a_long_chain_is_cut_into_pieces_that_fit() {
        // Op i writes blocks 10i..10i+10 and reads two blocks more on each
        // side: every neighbour reads the other, one component of 20
        // operations that would stash all 200 blocks.
        let ops: Vec<Operation> = (0..20u64)
            .map(|i| {
                let start = (10 * i).saturating_sub(2);
                op(
                    OpKind::SourceZstd,
                    &[(start, 10 * i + 12 - start)],
                    &[(10 * i, 10)],
                )
            })
            .collect();
        let mut g = Graph::new(&ops);
        assert_eq!(g.components(&(0..20).collect::<Vec<_>>()).len(), 1);
        let mut cut = ops.clone();
        let marked = break_cycles(&mut cut, &mut g, 64, &|_: &Operation| 100);
        // Each cut needs one operation to stop reading its neighbour; a
        // piece may hold 5 or 6 operations (10 blocks of stash each).
        assert!((3..=5).contains(&marked.len()), "{marked:?}");
        let comps = g.components(&(0..20).collect::<Vec<_>>());
        assert!(comps.iter().all(|c| stash_blocks(&cut, c) <= 64));
        let (packed, stages) = pack_stages(&cut, &g, comps, 64);
        check_stages(&packed, &stages);
        assert!(stages.len() <= 5, "{stages:?}");
    }

    #[test]
    fn copy_pieces_follow_both_extent_lists() {
        let mut o = copy(0, 0, 1);
        o.src_extents = vec![Extent::new(10, 3), Extent::new(2, 2)];
        o.dst_extents = vec![Extent::new(0, 1), Extent::new(5, 4)];
        assert_eq!(copy_pieces(&o), vec![(10, 0, 1), (11, 5, 2), (2, 7, 2)]);
    }
}
