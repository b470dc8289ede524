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
    /// Source blocks kept around those a bsdiff patch reads.
    pub trim_slack_blocks: u64,
    /// Candidates whose trial is within this many percent of the best
    /// trial are encoded at the final level.
    pub band_percent: u64,
}

impl EncodeParams {
    /// The encoder tuning of `opts`.
    pub fn from_options(opts: &crate::DiffOptions) -> Self {
        EncodeParams {
            level: opts.level,
            margin_blocks: opts.margin_blocks,
            max_src_blocks: opts.max_src_blocks,
            min_src_blocks: opts.min_src_blocks,
            src_per_dst_block: opts.src_per_dst_block,
            anchor_search_blocks: 4096,
            max_alignments: 16,
            trial_level: opts.trial_level,
            trim_slack_blocks: opts.trim_slack_blocks,
            band_percent: opts.band_percent,
        }
    }
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
    /// Length of a REPLACE of the region (at the trial level, or the data
    /// itself when REPLACE won): what carrying the region whole would cost.
    pub replace_len: u64,
}

/// Source extents worth reading for `region`, most promising first, within
/// a budget that grows with the region. `src` must be mapped
/// ([`Partition::bytes`]).
pub fn source_windows(
    region: Region,
    classes: &[BlockClass],
    src: &Partition,
    anchored: &[Alignment],
    p: &EncodeParams,
) -> Vec<Extent> {
    let src_blocks = src.blocks();
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
    let copy_shift = |i: u64| match classes[i as usize] {
        BlockClass::Copy(j) => Some(j as i64 - i as i64),
        _ => None,
    };
    let lo = a.saturating_sub(p.anchor_search_blocks);
    let hi = (b + p.anchor_search_blocks).min(classes.len() as u64);
    let before = (lo..a).rev().find_map(copy_shift);
    let after = (b..hi).find_map(copy_shift);
    // Unchanged blocks absorbed into the region give alignments too.
    let inside = (a..b).find_map(copy_shift);
    let mut spans: Vec<(i64, u64, u64)> = [before, after, inside, Some(0)]
        .into_iter()
        .flatten()
        .map(|shift| (shift, a, b - 1))
        .collect();
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
    // The spans taken, whole: a span whose bytes equal one of them (the
    // same data stored twice in the source, which the anchors vote for
    // equally) would only double what is sorted and searched.
    let mut taken: Vec<(u64, u64)> = Vec::new();
    let bytes = src.bytes();
    let span_bytes = |start: u64, end: u64| {
        let bs = BLOCK_SIZE as usize;
        let len = bytes.len();
        &bytes[(start as usize * bs).min(len)..(end as usize * bs).min(len)]
    };
    for (shift, first, last) in spans {
        let start = (first as i64 + shift - p.margin_blocks as i64).max(0) as u64;
        let end =
            ((last as i64 + 1 + shift + p.margin_blocks as i64).max(0) as u64).min(src_blocks);
        if start >= end {
            continue;
        }
        if taken
            .iter()
            .any(|&(s, e)| e - s == end - start && span_bytes(s, e) == span_bytes(start, end))
        {
            continue;
        }
        taken.push((start, end));
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
    romdelta_format::inplace::merge_extents(windows)
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

/// Reads the region's target bytes, zero-padded to whole blocks.
pub fn target_bytes(dst: &Partition, region: Region) -> Vec<u8> {
    let mut v = Vec::with_capacity((region.len * BLOCK_SIZE) as usize);
    dst.read_extents(&[Extent::new(region.start, region.len)], &mut v)
        .expect("reads of a mapped image do not fail");
    v
}

/// Encodes one region and keeps the smallest result. Every encoder first
/// runs at a cheap trial level; the candidates close to the best trial
/// (within 10%) are then encoded at the final level and the smallest wins (ties go to the
/// cheaper one to apply: REPLACE, SOURCE_ZSTD, SOURCE_BSDIFF_SPARSE). bsdiff is
/// tried only where the source evidently helps: its matcher is slow on
/// unrelated data and would lose there anyway.
#[allow(clippy::too_many_arguments)]
pub fn encode_region(
    src: Option<&Partition>,
    dst: &Partition,
    classes: &[BlockClass],
    anchors: Option<&AnchorIndex>,
    tables: Option<&crate::elf::FieldTables>,
    code: Option<&crate::elf::Code>,
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
        replace_len: data.len() as u64,
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
    let windows = source_windows(region, classes, src, anchored.as_deref().unwrap_or(&[]), p);
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
    // Where the source helps, run the bsdiff matcher, then keep only the
    // source blocks it reads (and a little around them): the final encoders
    // and the applier then read, hash and index far less.
    let mut trimmed = None;
    if zstd_trial.len() * 10 < replace_trial.len() * 9 {
        let pt = crate::bsdiff::diff(&source, &target);
        trials.push((
            OpKind::SourceBsdiffSparse,
            ops::encode_bsdiff_sparse(&pt, trial_level).len(),
        ));
        trimmed = Some(trim_source(&windows, &source, pt, p.trim_slack_blocks));
    }
    let (final_windows, final_source) = match &trimmed {
        Some(t) => (&t.extents, &t.source),
        None => (&windows, &source),
    };
    let best_trial = trials.iter().map(|t| t.1).min().expect("non-empty");
    let mut best: Option<(OpKind, Vec<u8>)> = None;
    for (kind, size) in trials {
        if size as u64 * 100 > best_trial as u64 * (100 + p.band_percent) {
            continue;
        }
        let data = match (kind, trial_level == final_level) {
            (OpKind::Replace, true) => replace_trial.clone(),
            (OpKind::Replace, false) => ops::encode_replace(&target, final_level),
            (OpKind::SourceZstd, true) if trimmed.is_none() => zstd_trial.clone(),
            (OpKind::SourceZstd, _) => ops::encode_source_zstd(final_source, &target, final_level),
            _ => ops::encode_bsdiff_sparse(&trimmed.as_ref().expect("tried").patch, final_level),
        };
        if best.as_ref().is_none_or(|(_, b)| data.len() < b.len()) {
            best = Some((kind, data));
        }
    }
    let (mut kind, mut data) = best.expect("at least one candidate");
    if kind == OpKind::Replace {
        return replace(data);
    }
    if let Some(t) = tables {
        let trial = best_trial as u64;
        if let Some(better) = field_delta(
            t,
            region,
            final_windows,
            final_source,
            &target,
            trimmed.as_ref().map(|t| &t.patch),
            trial,
            p,
        ) {
            if better.len() < data.len() {
                (kind, data) = (OpKind::SourceFieldDelta, better);
            }
        }
    }
    // Machine code: branch displacements predicted through the alignment
    // of the plain bsdiff match.
    if let (Some((arch, ranges)), Some(t)) =
        (code.and_then(|c| c.ranges_in(final_windows)), &trimmed)
    {
        let trial = best_trial as u64;
        let (tl, fl) = (trial_level, final_level);
        if let Some(better) = crate::branch::branch_delta(
            arch,
            ranges,
            final_source,
            &target,
            &t.patch,
            trial,
            tl,
            fl,
        ) {
            if better.len() < data.len() {
                (kind, data) = (OpKind::SourceBranchDelta, better);
            }
        }
    }
    Encoded {
        kind,
        src_extents: final_windows.clone(),
        src_sha256: sha256(final_source),
        data,
        replace_len: replace_trial.len() as u64,
    }
}

/// SOURCE_FIELD_DELTA data for `region` against `source` (the bytes of
/// `windows`), when relocation tables lie in both and a trial of their
/// transformed bytes beats `best_trial`: the better of a SOURCE_ZSTD and a
/// SOURCE_BSDIFF_SPARSE patch, by trial, at the final level. `plain`, the
/// region's bsdiff patch when it has one, gives the alignment outside the
/// tables.
#[allow(clippy::too_many_arguments)]
fn field_delta(
    t: &crate::elf::FieldTables,
    region: Region,
    windows: &[Extent],
    source: &[u8],
    target: &[u8],
    plain: Option<&ops::BsdiffPatch>,
    best_trial: u64,
    p: &EncodeParams,
) -> Option<Vec<u8>> {
    use romdelta_format::fielddelta;
    let dst = t.dst.ranges_in(&[Extent::new(region.start, region.len)]);
    let src = t.src.ranges_in(windows);
    if dst.is_empty() || src.is_empty() {
        return None;
    }
    let (stride, field) = (crate::elf::STRIDE, 0);
    let (mut s, mut d) = (source.to_vec(), target.to_vec());
    fielddelta::forward(&mut s, &src, stride, field);
    fielddelta::forward(&mut d, &dst, stride, field);
    let trial = p.trial_level.min(p.level);
    let zstd = ops::encode_source_zstd(&s, &d, trial).len() as u64;
    // Only the tables changed shape: the plain alignment stands elsewhere,
    // and the target's tables are matched afresh against the source's.
    let span = |r: &[fielddelta::Range]| -> Vec<(u64, u64)> {
        r.iter()
            .map(|r| (r.offset, r.entries * u64::from(stride)))
            .collect()
    };
    let patch = match plain {
        Some(pl) => crate::bsdiff::rematch(&pl.controls, &s, &d, &span(&src), &span(&dst))?,
        None => crate::bsdiff::diff(&s, &d),
    };
    let bsdiff = ops::encode_bsdiff_sparse(&patch, trial).len() as u64;
    if zstd.min(bsdiff) >= best_trial {
        return None;
    }
    let (inner, data) = if bsdiff < zstd {
        (
            OpKind::SourceBsdiffSparse,
            ops::encode_bsdiff_sparse(&patch, p.level),
        )
    } else {
        (OpKind::SourceZstd, ops::encode_source_zstd(&s, &d, p.level))
    };
    let header = fielddelta::Header {
        inner,
        stride,
        field,
        src,
        dst,
    };
    Some(fielddelta::encode(&header, &data))
}

/// A source window cut down to the blocks a bsdiff patch reads.
pub struct Trimmed {
    /// The source extents kept, in order.
    pub extents: Vec<Extent>,
    /// Their bytes, concatenated.
    pub source: Vec<u8>,
    /// The patch, rewritten to read the kept bytes.
    pub patch: ops::BsdiffPatch,
}

/// Keeps the blocks of `source` (the bytes of `windows`) that `patch`
/// reads, plus `slack` blocks around each, and rewrites the patch's cursor
/// moves for the shorter source. The diff and extra streams do not change.
pub fn trim_source(
    windows: &[Extent],
    source: &[u8],
    patch: ops::BsdiffPatch,
    slack: u64,
) -> Trimmed {
    let bs = BLOCK_SIZE as usize;
    let n = source.len() / bs;
    // Absolute start of each entry's add segment in `source`.
    let mut starts = Vec::with_capacity(patch.controls.len());
    let mut keep = vec![false; n];
    let mut pos = 0i64;
    for c in &patch.controls {
        starts.push(pos);
        if c.add > 0 {
            let (first, last) = (pos as usize / bs, (pos as usize + c.add as usize - 1) / bs);
            let lo = first.saturating_sub(slack as usize);
            let hi = (last + slack as usize).min(n - 1);
            keep[lo..=hi].iter_mut().for_each(|k| *k = true);
        }
        pos += c.add as i64 + c.seek;
    }
    if !keep.contains(&true) {
        return Trimmed {
            extents: windows.to_vec(),
            source: source.to_vec(),
            patch,
        };
    }
    // dropped[b]: blocks dropped before block b.
    let mut dropped = Vec::with_capacity(n);
    let mut d = 0usize;
    for &k in &keep {
        dropped.push(d);
        if !k {
            d += 1;
        }
    }
    let remap = |p: i64| p - (dropped[p as usize / bs] * bs) as i64;
    let mut controls: Vec<ops::Control> = Vec::with_capacity(patch.controls.len() + 1);
    let mut cursor = 0i64; // where the new cursor is before each entry
    let mut new_starts = Vec::with_capacity(starts.len());
    for (c, &s) in patch.controls.iter().zip(&starts) {
        let q = if c.add > 0 { remap(s) } else { cursor };
        new_starts.push(q);
        cursor = q + c.add as i64;
    }
    if new_starts.first().is_some_and(|&q| q != 0) {
        controls.push(ops::Control {
            add: 0,
            copy: 0,
            seek: new_starts[0],
        });
    }
    for (i, c) in patch.controls.iter().enumerate() {
        let next = new_starts
            .get(i + 1)
            .copied()
            .unwrap_or(new_starts[i] + c.add as i64);
        controls.push(ops::Control {
            add: c.add,
            copy: c.copy,
            seek: next - (new_starts[i] + c.add as i64),
        });
    }
    // The kept blocks, as source extents and bytes.
    let mut extents: Vec<Extent> = Vec::new();
    let mut bytes = Vec::with_capacity(source.len() - d * bs);
    let mut rel = 0usize;
    for w in windows {
        for b in 0..w.num_blocks as usize {
            if keep[rel + b] {
                let abs = w.start_block + b as u64;
                match extents.last_mut() {
                    Some(e) if e.end_block() == abs => e.num_blocks += 1,
                    _ => extents.push(Extent::new(abs, 1)),
                }
                bytes.extend_from_slice(&source[(rel + b) * bs..(rel + b + 1) * bs]);
            }
        }
        rel += w.num_blocks as usize;
    }
    Trimmed {
        extents,
        source: bytes,
        patch: ops::BsdiffPatch {
            controls,
            diff: patch.diff,
            extra: patch.extra,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed pseudo-random byte sequence (xorshift32 from `seed`).
    fn xorshift(mut x: u32) -> impl FnMut() -> u8 {
        move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        }
    }

    #[test]
    fn a_second_copy_of_the_same_source_bytes_is_not_read_twice() {
        let bs = BLOCK_SIZE as usize;
        let mut rnd = xorshift(7);
        // Source: 16 random blocks, 16 other random blocks, the first 16 again.
        let data: Vec<u8> = (0..16 * bs).map(|_| rnd()).collect();
        let other: Vec<u8> = (0..16 * bs).map(|_| rnd()).collect();
        let source = [&data[..], &other[..], &data[..]].concat();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("src.img");
        std::fs::write(&path, &source).unwrap();
        let src = Partition::open("src", &path, romdelta_rom::Access::Mapped).unwrap();
        // Target: the data with edits, at block 100 of a changed image.
        let mut target = data.clone();
        for i in (0..target.len()).step_by(1000) {
            target[i] ^= 1;
        }
        let region = Region {
            start: 100,
            len: 16,
        };
        let classes = vec![BlockClass::Changed; 200];
        let index = AnchorIndex::build(src.bytes(), &|_, _| {});
        let anchored = anchors::alignments(&index, &target, region.start);
        // Both copies are voted for, equally.
        assert!(anchored.len() >= 2 && anchored[0].votes == anchored[1].votes);
        let p = EncodeParams::from_options(&crate::DiffOptions {
            margin_blocks: 0,
            ..Default::default()
        });
        let windows = source_windows(region, &classes, &src, &anchored, &p);
        let read: u64 = romdelta_format::blocks_in(&windows);
        assert!(
            windows
                .iter()
                .any(|w| w.start_block == 0 && w.num_blocks >= 16),
            "{windows:?}"
        );
        assert!(
            !windows.iter().any(|w| w.end_block() > 32),
            "the repeat is read too: {windows:?} ({read} blocks)"
        );
    }

    #[test]
    fn trimmed_patches_decode_to_the_same_target() {
        let bs = BLOCK_SIZE as usize;
        // A 40-block source made of three windows; the target reuses pieces
        // of blocks 3-5 and 30-31 (out of order) with edits and new bytes.
        let windows = [
            Extent::new(100, 10),
            Extent::new(500, 20),
            Extent::new(7, 10),
        ];
        let mut rnd = xorshift(99);
        let source: Vec<u8> = (0..40 * bs).map(|_| rnd()).collect();
        let mut target = source[30 * bs..32 * bs].to_vec();
        target.extend((0..3000).map(|_| rnd()));
        target.extend_from_slice(&source[3 * bs + 100..6 * bs]);
        target[5000] ^= 0xff;
        let patch = crate::bsdiff::diff(&source, &target);
        for slack in [0, 1, 2, 50] {
            let t = trim_source(&windows, &source, patch.clone(), slack);
            assert!(t.source.len() < source.len() || slack == 50);
            assert_eq!(
                t.source.len() as u64,
                romdelta_format::blocks_in(&t.extents) * BLOCK_SIZE
            );
            let data = ops::encode_bsdiff(&t.patch, 3);
            let mut out = vec![0; target.len()];
            ops::decode_bsdiff(&data, &t.source, &mut out).unwrap();
            assert_eq!(out, target, "slack {slack}");
            // The extents name the kept blocks of the original source.
            let mut rebuilt = Vec::new();
            for e in &t.extents {
                let mut rel = 0u64;
                for w in &windows {
                    if e.start_block >= w.start_block && e.end_block() <= w.end_block() {
                        let off = (rel + e.start_block - w.start_block) as usize * bs;
                        rebuilt.extend_from_slice(&source[off..off + e.byte_len() as usize]);
                    }
                    rel += w.num_blocks;
                }
            }
            assert_eq!(rebuilt, t.source);
        }
    }
}
