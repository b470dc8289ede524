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
}

fn is_zero(b: &[u8]) -> bool {
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
        let hashes: Vec<Option<u64>> = (0..src.blocks())
            .into_par_iter()
            .map(|i| {
                let b = src.block(i).expect("in range");
                (!is_zero(&b)).then(|| xxh3_64(&b))
            })
            .collect();
        let mut first = HashMap::with_capacity(hashes.len());
        for (i, h) in hashes.into_iter().enumerate() {
            if let Some(h) = h {
                first.entry(h).or_insert(i as u64);
            }
        }
        SourceIndex { src, first }
    }

    fn equal(&self, src_block: u64, target: &[u8]) -> bool {
        self.src.block(src_block).is_some_and(|b| *b == *target)
    }

    /// The source block equal to `target`, if any.
    fn lookup(&self, target: &[u8]) -> Option<u64> {
        let j = *self.first.get(&xxh3_64(target))?;
        self.equal(j, target).then_some(j)
    }
}

/// Classifies every block of `dst`. Copies prefer, in order: the block after
/// the previous block's source (so runs stay contiguous), the same block
/// index, then the first source block with equal content.
pub fn classify(dst: &Partition, index: Option<&SourceIndex<'_>>) -> Vec<BlockClass> {
    let n = dst.blocks();
    // Content lookups in parallel ...
    let mut classes: Vec<BlockClass> = (0..n)
        .into_par_iter()
        .map(|i| {
            let b = dst.block(i).expect("in range");
            if is_zero(&b) {
                BlockClass::Zero
            } else if let Some(j) = index.and_then(|ix| ix.lookup(&b)) {
                BlockClass::Copy(j)
            } else {
                BlockClass::Changed
            }
        })
        .collect();
    // ... then a sequential pass that keeps runs contiguous.
    if let Some(index) = index {
        let mut prev: Option<u64> = None;
        for i in 0..n {
            if let BlockClass::Copy(j) = classes[i as usize] {
                let b = dst.block(i).expect("in range");
                let pick = match prev {
                    Some(p) if p + 1 != j && index.equal(p + 1, &b) => p + 1,
                    _ if j != i && index.equal(i, &b) && prev.is_none_or(|p| p + 1 != j) => i,
                    _ => j,
                };
                classes[i as usize] = BlockClass::Copy(pick);
                prev = Some(pick);
            } else {
                prev = None;
            }
        }
    }
    classes
}
