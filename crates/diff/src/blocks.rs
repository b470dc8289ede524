//! Stage 1–2 of generation: classify every target block as zero, a copy of
//! some source block, or changed.

use rayon::prelude::*;
use romdelta_rom::Partition;
use std::collections::HashMap;
use xxhash_rust::xxh3::xxh3_64;

/// What a target block is, relative to the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockClass {
    /// All zero bytes.
    Zero,
    /// Equal to this source block.
    Copy(u64),
    /// Needs data.
    Changed,
    /// Written by a content-aware operation ([`crate::recompress`]): the
    /// block planner leaves it alone.
    Claimed,
}

/// Blocks per piece of a whole-image pass: each piece is released after use,
/// so a pass over a mapped image keeps one piece resident, not the image.
const PIECE_BLOCKS: u64 = (crate::PASS_PIECE as u64) / romdelta_format::BLOCK_SIZE;

/// `f` of every block index of `p`, computed in parallel one piece at a
/// time; `after` runs after each piece (to release what `f` read elsewhere).
fn by_pieces<T: Send>(p: &Partition, f: impl Fn(u64) -> T + Sync, after: impl Fn()) -> Vec<T> {
    let n = p.blocks();
    let mut out = Vec::with_capacity(n as usize);
    let mut start = 0;
    while start < n {
        let end = (start + PIECE_BLOCKS).min(n);
        out.par_extend((start..end).into_par_iter().map(&f));
        p.release(
            start * romdelta_format::BLOCK_SIZE,
            (end - start) * romdelta_format::BLOCK_SIZE,
        );
        after();
        start = end;
    }
    out
}

/// Whether every byte of `b` is zero.
pub(crate) fn is_zero(b: &[u8]) -> bool {
    // Compare in 8-byte words; the compiler vectorises this.
    b.chunks_exact(8)
        .all(|w| u64::from_ne_bytes(w.try_into().expect("8 bytes")) == 0)
        && b.chunks_exact(8).remainder().iter().all(|&x| x == 0)
}

/// An index from block content to the first source block holding it.
pub struct SourceIndex<'a> {
    src: &'a Partition,
    first: HashMap<u64, u64>,
}

impl<'a> SourceIndex<'a> {
    /// Hashes every non-zero block of `src` (in parallel) and keeps, for
    /// each hash, the lowest block index, so the result is deterministic.
    pub fn build(src: &'a Partition) -> Self {
        let hashes: Vec<Option<u64>> = by_pieces(
            src,
            |i| {
                let b = src.block(i).expect("in range");
                (!is_zero(&b)).then(|| xxh3_64(&b))
            },
            || {},
        );
        let mut first = HashMap::with_capacity(hashes.len());
        for (i, h) in hashes.into_iter().enumerate() {
            if let Some(h) = h {
                first.entry(h).or_insert(i as u64);
            }
        }
        SourceIndex { src, first }
    }

    pub(crate) fn equal(&self, src_block: u64, target: &[u8]) -> bool {
        self.src.block(src_block).is_some_and(|b| *b == *target)
    }

    /// The source block equal to `target`, if any.
    pub(crate) fn lookup(&self, target: &[u8]) -> Option<u64> {
        let j = *self.first.get(&xxh3_64(target))?;
        self.equal(j, target).then_some(j)
    }
}

/// Classifies every block of `dst`. Copies prefer, in order: the block after
/// the previous block's source (so runs stay contiguous), the same block
/// index, then the first source block with equal content.
pub fn classify(dst: &Partition, index: Option<&SourceIndex<'_>>) -> Vec<BlockClass> {
    classify_with(dst, index, false)
}

/// [`classify`], except that with `same_block_first` a copy prefers the
/// same block index above all: in place, a block equal to the source block
/// it replaces needs no operation at all.
pub fn classify_with(
    dst: &Partition,
    index: Option<&SourceIndex<'_>>,
    same_block_first: bool,
) -> Vec<BlockClass> {
    let n = dst.blocks();
    // Content lookups in parallel ...
    let class_of = |i: u64| {
        let b = dst.block(i).expect("in range");
        if is_zero(&b) {
            BlockClass::Zero
        } else if let Some(j) = index.and_then(|ix| ix.lookup(&b)) {
            BlockClass::Copy(j)
        } else {
            BlockClass::Changed
        }
    };
    let release_src = || {
        if let Some(ix) = index {
            ix.src.release_all();
        }
    };
    let mut classes: Vec<BlockClass> = by_pieces(dst, class_of, release_src);
    // ... then a sequential pass that keeps runs contiguous.
    if let Some(index) = index {
        let mut prev: Option<u64> = None;
        for i in 0..n {
            if let BlockClass::Copy(j) = classes[i as usize] {
                let b = dst.block(i).expect("in range");
                let pick = match prev {
                    _ if same_block_first && (j == i || index.equal(i, &b)) => i,
                    Some(p) if p + 1 != j && index.equal(p + 1, &b) => p + 1,
                    _ if j != i && index.equal(i, &b) && prev.is_none_or(|p| p + 1 != j) => i,
                    _ => j,
                };
                classes[i as usize] = BlockClass::Copy(pick);
                prev = Some(pick);
            } else {
                prev = None;
            }
            if (i + 1) % PIECE_BLOCKS == 0 {
                dst.release_all();
                index.src.release_all();
            }
        }
        dst.release_all();
        index.src.release_all();
    }
    classes
}
