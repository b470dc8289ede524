//! SOURCE_BRANCH_DELTA generation: machine code diffed with its branch and
//! call displacements predicted from the source through an alignment.
//!
//! The alignment is the copy ranges of a bsdiff match of the plain bytes:
//! each run the matcher adds from the source, joined with its neighbours
//! while the shift stays the same, long runs first where two would read
//! the same source bytes. The package carries it in the operation's
//! header; [`romdelta_format::branchdelta`] does the rest, and the result
//! is kept only where it is smaller than every other candidate.

use romdelta_format::branchdelta::{self, Arch, Header, Segment};
use romdelta_format::{ops, OpKind};

/// Shortest segment worth its header bytes.
const MIN_SEGMENT: u64 = 32;

/// The alignment a bsdiff patch from `src_len` source bytes implies: its
/// add runs, joined while their shift stays the same, no two reading the
/// same source bytes, in destination order.
pub fn alignment(patch: &ops::BsdiffPatch, src_len: u64) -> Vec<Segment> {
    let mut runs: Vec<Segment> = Vec::new();
    let (mut old, mut new) = (0i64, 0u64);
    for c in &patch.controls {
        if c.add > 0 && old >= 0 && old as u64 + c.add <= src_len {
            let s = Segment {
                src: old as u64,
                dst: new,
                len: c.add,
            };
            match runs.last_mut() {
                Some(l) if l.dst as i64 - l.src as i64 == s.dst as i64 - s.src as i64 => {
                    l.len = s.dst + s.len - l.dst;
                }
                _ => runs.push(s),
            }
        }
        new += c.add + c.copy;
        old += c.add as i64 + c.seek;
    }
    runs.retain(|s| s.len >= MIN_SEGMENT);
    // Longest first (then by position), each kept when its source bytes
    // are free.
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_unstable_by_key(|&i| (std::cmp::Reverse(runs[i].len), runs[i].dst));
    let mut taken: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
    let mut kept = Vec::new();
    for i in order {
        let s = runs[i];
        let before = taken.range(..s.src + s.len).next_back();
        if before.is_some_and(|(&a, &l)| a + l > s.src) {
            continue;
        }
        taken.insert(s.src, s.len);
        kept.push(s);
    }
    kept.sort_unstable_by_key(|s| s.dst);
    kept
}

/// SOURCE_BRANCH_DELTA data turning `source` into `target` when the code
/// ranges of `source` (of `arch`) make a trial of the transformed target
/// smaller than `best_trial`: the better of a SOURCE_ZSTD and a
/// SOURCE_BSDIFF_SPARSE inner patch, by trial, at `level`. `plain` is the
/// bsdiff patch of the untransformed bytes, whose alignment both the
/// operation's header and its bsdiff patch follow.
#[allow(clippy::too_many_arguments)]
pub fn branch_delta(
    arch: Arch,
    code: Vec<(u64, u64)>,
    source: &[u8],
    target: &[u8],
    plain: &ops::BsdiffPatch,
    best_trial: u64,
    trial_level: i32,
    level: i32,
) -> Option<Vec<u8>> {
    let mut header = Header {
        arch,
        inner: OpKind::SourceZstd,
        code,
        segments: alignment(plain, source.len() as u64),
    };
    branchdelta::check(&header, source.len() as u64, target.len() as u64).ok()?;
    if branchdelta::corrected(&header, source) == 0 {
        return None;
    }
    let mut t = target.to_vec();
    branchdelta::forward(&header, source, &mut t);
    let zstd = ops::encode_source_zstd(source, &t, trial_level).len() as u64;
    // The transform leaves the plain alignment standing (it rewrites
    // displacements in place), so the patch follows it: one pass, not a
    // second match (which measured 112 bytes smaller on the corpus pair's
    // kernel modules and libraries, for 9 s of its 86 s diff).
    let patch = crate::bsdiff::from_runs(&crate::bsdiff::runs(&plain.controls)?, source, &t)?;
    let bsdiff = ops::encode_bsdiff_sparse(&patch, trial_level).len() as u64;
    if zstd.min(bsdiff) >= best_trial {
        return None;
    }
    let inner = if bsdiff < zstd {
        header.inner = OpKind::SourceBsdiffSparse;
        ops::encode_bsdiff_sparse(&patch, level)
    } else {
        ops::encode_source_zstd(source, &t, level)
    };
    let data = branchdelta::encode(&header, &inner);
    // Exactness: the applier's decoder must give the target back.
    let mut out = vec![0u8; target.len()];
    (branchdelta::decode(&data, source, &mut out).is_ok() && out == target).then_some(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_joins_equal_shifts_and_reads_each_source_byte_once() {
        let c = |add, copy, seek| ops::Control { add, copy, seek };
        let patch = ops::BsdiffPatch {
            controls: vec![
                // 0..100 from 0, 10 new bytes, 110..210 from 110: one
                // shift, one segment.
                c(100, 10, 10),
                c(100, 0, -170),
                // 210..260 from 40: reads the first segment's bytes again
                // and is shorter.
                c(50, 5, 245),
                // 265..365 from 335; then a 20-byte run of another shift.
                c(100, 0, 7),
                c(20, 0, 0),
            ],
            ..Default::default()
        };
        let a = alignment(&patch, 1000);
        assert_eq!(
            a,
            [
                Segment {
                    src: 0,
                    dst: 0,
                    len: 210
                },
                Segment {
                    src: 335,
                    dst: 265,
                    len: 100
                },
            ]
        );
        // Runs past the source are left out.
        assert_eq!(
            alignment(&patch, 300),
            [Segment {
                src: 0,
                dst: 0,
                len: 210
            }]
        );
    }
}
