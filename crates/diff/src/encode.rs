//! Stage 3–4: for a changed region, choose the source bytes it most likely
//! came from, run every candidate encoder, and keep the smallest result.

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
    /// How far to look for the nearest copied block that gives an alignment.
    pub anchor_search_blocks: u64,
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

/// Source extents worth reading for `region`: windows around the same
/// offset and around the alignments of the nearest copied blocks before and
/// after it (where a file moved, its neighbours moved with it).
pub fn source_windows(
    region: Region,
    classes: &[BlockClass],
    src_blocks: u64,
    p: &EncodeParams,
) -> Vec<Extent> {
    if src_blocks == 0 {
        return Vec::new();
    }
    let (a, b) = (region.start, region.start + region.len);
    let mut shifts: Vec<i64> = Vec::new();
    let lo = a.saturating_sub(p.anchor_search_blocks);
    if let Some((i, j)) = (lo..a).rev().find_map(|i| match classes[i as usize] {
        BlockClass::Copy(j) => Some((i, j)),
        _ => None,
    }) {
        shifts.push(j as i64 - i as i64);
    }
    let hi = (b + p.anchor_search_blocks).min(classes.len() as u64);
    if let Some((i, j)) = (b..hi).find_map(|i| match classes[i as usize] {
        BlockClass::Copy(j) => Some((i, j)),
        _ => None,
    }) {
        shifts.push(j as i64 - i as i64);
    }
    shifts.push(0);
    let mut windows: Vec<Extent> = Vec::new();
    let mut total = 0u64;
    let mut seen = Vec::new();
    for s in shifts {
        if seen.contains(&s) {
            continue;
        }
        seen.push(s);
        let start = (a as i64 + s - p.margin_blocks as i64).max(0) as u64;
        let end = ((b as i64 + s + p.margin_blocks as i64).max(0) as u64).min(src_blocks);
        if start >= end {
            continue;
        }
        let want = (end - start).min(p.max_src_blocks - total);
        if want == 0 {
            break;
        }
        total += want;
        windows.push(Extent::new(start, want));
    }
    merge(windows)
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
    dst.read_extents(&[Extent::new(region.start, region.len)], &mut v);
    v
}

/// Encodes one region with every candidate encoder and keeps the smallest;
/// ties go to the cheaper one to apply (REPLACE, then SOURCE_ZSTD, then SOURCE_BSDIFF).
pub fn encode_region(
    src: Option<&Partition>,
    dst: &Partition,
    classes: &[BlockClass],
    region: Region,
    p: &EncodeParams,
) -> Encoded {
    let target = target_bytes(dst, region);
    let mut best = Encoded {
        kind: OpKind::Replace,
        src_extents: Vec::new(),
        src_sha256: [0; 32],
        data: ops::encode_replace(&target, p.level),
    };
    let Some(src) = src else { return best };
    let windows = source_windows(region, classes, src.blocks(), p);
    if windows.is_empty() {
        return best;
    }
    let mut source = Vec::new();
    src.read_extents(&windows, &mut source);
    let src_sha256 = sha256(&source);
    let (zstd, bsdiff) = rayon::join(
        || ops::encode_source_zstd(&source, &target, p.level),
        || ops::encode_bsdiff(&crate::bsdiff::diff(&source, &target), p.level),
    );
    for (kind, data) in [(OpKind::SourceZstd, zstd), (OpKind::SourceBsdiff, bsdiff)] {
        if data.len() < best.data.len() {
            best = Encoded {
                kind,
                src_extents: windows.clone(),
                src_sha256,
                data,
            };
        }
    }
    best
}
