//! Content anchors: find where in the source a changed target region came
//! from, wherever it moved.
//!
//! A gear rolling hash runs over the bytes; positions where it hits a fixed
//! bit pattern (about one in 256 bytes) are *anchors*, and the hash value
//! there, which depends only on the 64 bytes before it, is the anchor's
//! fingerprint. Anchors depend on content, not offsets, so the same data in
//! the source and the target yields the same anchors even after inserts and
//! moves. Each target anchor found in the source votes for an alignment
//! (source block minus target block); the best-supported alignments become
//! the source windows a region is encoded against.

use rayon::prelude::*;

/// 256 random 64-bit constants (splitmix64 of 0..256), fixed for determinism.
const GEAR: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut z = (i as u64)
            .wrapping_add(1)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        t[i] = z ^ (z >> 31);
        i += 1;
    }
    t
};

/// Anchor when the top 8 bits of the hash are zero: one position in 256.
const MASK: u64 = 0xff00_0000_0000_0000;

/// Calls `f(position, fingerprint)` for every anchor of `bytes`; positions
/// are those of the byte after the 64-byte window the fingerprint covers.
/// Anchors inside runs of one repeated byte are skipped: they say nothing
/// about where data came from.
pub fn for_each_anchor(bytes: &[u8], mut f: impl FnMut(usize, u64)) {
    let mut h = 0u64;
    for (i, &b) in bytes.iter().enumerate() {
        h = (h << 1).wrapping_add(GEAR[b as usize]);
        if i >= 64 && h & MASK == 0 && bytes[i - 63..=i].iter().any(|&x| x != b) {
            f(i + 1, h);
        }
    }
}

/// Every anchor of the source, sorted by fingerprint for lookup.
pub struct AnchorIndex {
    /// (fingerprint, source byte offset), sorted.
    entries: Vec<(u64, u64)>,
}

/// Fingerprints seen more often than this in the source are ignored (they
/// are boilerplate, and would only add noise votes).
const MAX_OCCURRENCES: usize = 4;

impl AnchorIndex {
    /// Indexes `src` in parallel pieces (anchors spanning a piece boundary
    /// are missed: a negligible loss). Deterministic. `done(offset, len)` is
    /// called after each piece is read (to release a mapping behind the pass).
    pub fn build(src: &[u8], done: &(dyn Fn(u64, u64) + Sync)) -> Self {
        const PIECE: usize = 16 << 20;
        let mut entries: Vec<(u64, u64)> = src
            .par_chunks(PIECE)
            .enumerate()
            .flat_map_iter(|(k, piece)| {
                let mut v = Vec::with_capacity(piece.len() / 200);
                for_each_anchor(piece, |pos, fp| v.push((fp, (k * PIECE + pos) as u64)));
                done((k * PIECE) as u64, piece.len() as u64);
                v
            })
            .collect();
        entries.par_sort_unstable();
        // Drop over-common fingerprints entirely.
        let mut kept = Vec::with_capacity(entries.len());
        let mut i = 0;
        while i < entries.len() {
            let mut j = i + 1;
            while j < entries.len() && entries[j].0 == entries[i].0 {
                j += 1;
            }
            if j - i <= MAX_OCCURRENCES {
                kept.extend_from_slice(&entries[i..j]);
            }
            i = j;
        }
        kept.shrink_to_fit();
        AnchorIndex { entries: kept }
    }

    /// Number of anchors indexed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no anchors are indexed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Source offsets with fingerprint `fp`.
    pub fn lookup(&self, fp: u64) -> &[(u64, u64)] {
        let start = self.entries.partition_point(|e| e.0 < fp);
        let end = start + self.entries[start..].partition_point(|e| e.0 == fp);
        &self.entries[start..end]
    }
}

/// An alignment supported by anchors: target blocks `[tgt_first, tgt_last]`
/// of a region line up with source blocks shifted by `shift`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alignment {
    /// Source block minus target block.
    pub shift: i64,
    /// Anchors that voted for it.
    pub votes: u32,
    /// First target block (absolute) with a vote.
    pub tgt_first: u64,
    /// Last target block (absolute) with a vote.
    pub tgt_last: u64,
}

/// Alignments for the target bytes of a region starting at block
/// `region_start`, best supported first (ties: smaller shift first).
pub fn alignments(index: &AnchorIndex, target: &[u8], region_start: u64) -> Vec<Alignment> {
    let mut votes: Vec<(i64, u64)> = Vec::new();
    for_each_anchor(target, |pos, fp| {
        let hits = index.lookup(fp);
        for &(_, src_pos) in hits {
            let t_block = region_start + (pos as u64 - 1) / 4096;
            let s_block = (src_pos - 1) / 4096;
            votes.push((s_block as i64 - t_block as i64, t_block));
        }
    });
    votes.sort_unstable();
    let mut out: Vec<Alignment> = Vec::new();
    for (shift, t) in votes {
        match out.last_mut() {
            Some(a) if a.shift == shift => {
                a.votes += 1;
                a.tgt_first = a.tgt_first.min(t);
                a.tgt_last = a.tgt_last.max(t);
            }
            _ => out.push(Alignment {
                shift,
                votes: 1,
                tgt_first: t,
                tgt_last: t,
            }),
        }
    }
    out.sort_by(|a, b| b.votes.cmp(&a.votes).then(a.shift.cmp(&b.shift)));
    out
}
