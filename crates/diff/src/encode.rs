//! Stage 3–4: for a changed region, choose the source bytes it most likely
//! came from, run every candidate encoder, and keep the smallest result.

use crate::anchors::{self, Alignment, AnchorIndex};
use crate::blocks::BlockClass;
use romdelta_format::{ops, sha256, Digest, Extent, OpKind, BLOCK_SIZE};
use romdelta_rom::Partition;

/// A run of changed target blocks that becomes one operation.
#[derive(Debug, Clone, Copy)]
pub struct Region {
    /// First target block.
    pub start: u64,
    /// Number of blocks.
    pub len: u64,
}

/// Tuning of the region encoder.
#[derive(Debug, Clone, Copy)]
pub struct EncodeParams {
    /// zstd level for every encoder.
    pub level: i32,
    /// Source blocks read around each candidate alignment on each side.
    pub margin_blocks: u64,
    /// Most source blocks one region may read.
    pub max_src_blocks: u64,
    /// Fewest source blocks a region may read (when the source has them).
    pub min_src_blocks: u64,
    /// Source blocks a region may read per block it writes.
    pub src_per_dst_block: u64,
    /// How far to look for the nearest copied block that gives an alignment.
    pub anchor_search_blocks: u64,
    /// Most anchor alignments turned into source windows.
    pub max_alignments: usize,
    /// zstd level of the trial encodings that pick the encoder.
    pub trial_level: i32,
}

/// The chosen encoding of one region.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The kind that won.
    pub kind: OpKind,
    /// Source extents read (empty for REPLACE).
    pub src_extents: Vec<Extent>,
    /// SHA-256 of the source bytes read.
    pub src_sha256: Digest,
    /// The operation data.
    pub data: Vec<u8>,
}

/// Source extents worth reading for `region`, most promising first, within
/// a budget that grows with the region.
pub fn source_windows(
    region: Region,
    classes: &[BlockClass],
    src_blocks: u64,
    anchored: &[Alignment],
    p: &EncodeParams,
) -> Vec<Extent> {
    if src_blocks == 0 {
        return Vec::new();
    }
    let (a, b) = (region.start, region.start + region.len);
    // The budget grows with the region: a small changed file needs a small
    // window, and a large prefix only costs time and longer match offsets.
    let budget = (region.len * p.src_per_dst_block)
        .max(p.min_src_blocks)
        .min(p.max_src_blocks);
    // (shift, first target block, last target block) in priority order:
    // the nearest copied neighbours' alignments (a rewritten file usually sits
    // where its old version sat, relative to its unchanged neighbours), the
    // same offset, then alignments its content anchors vote for, for data
    // that moved farther. Anchor alignments need two votes, or be the best.
    let mut spans: Vec<(i64, u64, u64)> = Vec::new();
    let lo = a.saturating_sub(p.anchor_search_blocks);
    if let Some((i, j)) = (lo..a).rev().find_map(|i| match classes[i as usize] {
        BlockClass::Copy(j) => Some((i, j)),
        _ => None,
    }) {
        spans.push((j as i64 - i as i64, a, b - 1));
    }
    let hi = (b + p.anchor_search_blocks).min(classes.len() as u64);
    if let Some((i, j)) = (b..hi).find_map(|i| match classes[i as usize] {
        BlockClass::Copy(j) => Some((i, j)),
        _ => None,
    }) {
        spans.push((j as i64 - i as i64, a, b - 1));
    }
    spans.push((0, a, b - 1));
    let top_votes = anchored.first().map_or(0, |a| a.votes);
    spans.extend(
        anchored
            .iter()
            .take(p.max_alignments)
            .filter(|al| al.votes >= 2 || al.votes == top_votes)
            .map(|al| (al.shift, al.tgt_first, al.tgt_last)),
    );
    let mut windows: Vec<Extent> = Vec::new();
    let mut total = 0u64;
    for (shift, first, last) in spans {
        let start = (first as i64 + shift - p.margin_blocks as i64).max(0) as u64;
        let end =
            ((last as i64 + 1 + shift + p.margin_blocks as i64).max(0) as u64).min(src_blocks);
        if start >= end {
            continue;
        }
        // Only what the windows taken so far do not cover counts against the budget.
        let mut fresh = vec![Extent::new(start, end - start)];
        for w in &windows {
            fresh = fresh.into_iter().flat_map(|f| subtract(f, *w)).collect();
        }
        for f in fresh {
            let take = f.num_blocks.min(budget - total);
            if take > 0 {
                windows.push(Extent::new(f.start_block, take));
                total += take;
            }
        }
        if total >= budget {
            break;
        }
    }
    merge(windows)
}

/// `e` without the blocks of `w`: zero, one or two extents.
fn subtract(e: Extent, w: Extent) -> Vec<Extent> {
    if w.end_block() <= e.start_block || w.start_block >= e.end_block() {
        return vec![e];
    }
    let mut out = Vec::new();
    if w.start_block > e.start_block {
        out.push(Extent::new(e.start_block, w.start_block - e.start_block));
    }
    if w.end_block() < e.end_block() {
        out.push(Extent::new(w.end_block(), e.end_block() - w.end_block()));
    }
    out
}

/// Sorts extents and merges overlapping or touching ones.
fn merge(mut v: Vec<Extent>) -> Vec<Extent> {
    v.sort();
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

/// Reads the region's target bytes, zero-padded to whole blocks.
pub fn target_bytes(dst: &Partition, region: Region) -> Vec<u8> {
    let mut v = Vec::with_capacity((region.len * BLOCK_SIZE) as usize);
    dst.read_extents(&[Extent::new(region.start, region.len)], &mut v)
        .expect("reads of a mapped image do not fail");
    v
}

/// Encodes one region and keeps the smallest result. Every encoder first
/// runs at a cheap trial level; the candidates close to the best trial
/// (within 25%) are then encoded at the final level and the smallest wins (ties go to the
/// cheaper one to apply: REPLACE, SOURCE_ZSTD, SOURCE_BSDIFF). bsdiff is
/// tried only where the source evidently helps: its matcher is slow on
/// unrelated data and would lose there anyway.
pub fn encode_region(
    src: Option<&Partition>,
    dst: &Partition,
    classes: &[BlockClass],
    anchors: Option<&AnchorIndex>,
    region: Region,
    p: &EncodeParams,
) -> Encoded {
    let target = target_bytes(dst, region);
    let final_level = p.level;
    let trial_level = p.trial_level.min(final_level);
    let replace_trial = ops::encode_replace(&target, trial_level);
    let replace = |data: Vec<u8>| Encoded {
        kind: OpKind::Replace,
        src_extents: Vec::new(),
        src_sha256: [0; 32],
        data,
    };
    let Some(src) = src else {
        return replace(if trial_level == final_level {
            replace_trial
        } else {
            ops::encode_replace(&target, final_level)
        });
    };
    let anchored = anchors.map(|ix| anchors::alignments(ix, &target, region.start));
    let windows = source_windows(
        region,
        classes,
        src.blocks(),
        anchored.as_deref().unwrap_or(&[]),
        p,
    );
    if windows.is_empty() {
        return replace(ops::encode_replace(&target, final_level));
    }
    let mut source = Vec::new();
    src.read_extents(&windows, &mut source)
        .expect("reads of a mapped image do not fail");
    let zstd_trial = ops::encode_source_zstd(&source, &target, trial_level);
    let mut trials: Vec<(OpKind, usize)> = vec![
        (OpKind::Replace, replace_trial.len()),
        (OpKind::SourceZstd, zstd_trial.len()),
    ];
    let mut patch = None;
    if zstd_trial.len() * 10 < replace_trial.len() * 9 {
        let pt = crate::bsdiff::diff(&source, &target);
        trials.push((
            OpKind::SourceBsdiff,
            ops::encode_bsdiff(&pt, trial_level).len(),
        ));
        patch = Some(pt);
    }
    let best_trial = trials.iter().map(|t| t.1).min().expect("non-empty");
    let mut best: Option<(OpKind, Vec<u8>)> = None;
    for (kind, size) in trials {
        if size * 4 > best_trial * 5 {
            continue;
        }
        let data = match (kind, trial_level == final_level) {
            (OpKind::Replace, true) => replace_trial.clone(),
            (OpKind::Replace, false) => ops::encode_replace(&target, final_level),
            (OpKind::SourceZstd, true) => zstd_trial.clone(),
            (OpKind::SourceZstd, false) => ops::encode_source_zstd(&source, &target, final_level),
            _ => ops::encode_bsdiff(patch.as_ref().expect("tried"), final_level),
        };
        if best.as_ref().is_none_or(|(_, b)| data.len() < b.len()) {
            best = Some((kind, data));
        }
    }
    let (kind, data) = best.expect("at least one candidate");
    if kind == OpKind::Replace {
        return replace(data);
    }
    Encoded {
        kind,
        src_extents: windows,
        src_sha256: sha256(&source),
        data,
    }
}
