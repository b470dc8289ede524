//! SOURCE_LZ4_REBUILD operations for lz4 streams: the legacy `lz4 -l`
//! kernels and ramdisks of Android boot images (and Linux kernels built
//! with lz4), and lz4 frames.
//!
//! A small change to a kernel or ramdisk changes most of its lz4 stream
//! after it. The generator:
//! 1. finds lz4 streams in the changed target blocks: the kernel and
//!    ramdisk sections of an Android boot image (header versions 0–4,
//!    `ANDROID!` at a block start, whose header says exactly where they
//!    are), else a legacy or frame magic at a block start; pairs each
//!    with the source stream of the same role (boot image section) and
//!    format, failing that the nearest size;
//! 2. finds the parameters that compress the target's decompressed stream
//!    into exactly its bytes ([`lz4_stream::candidates`], the first that
//!    reproduces, each trial stopping at its first differing block);
//! 3. diffs the expanded forms with SOURCE_ZSTD and bsdiff, keeps the
//!    smaller;
//! 4. keeps the operation only when its data is smaller than what the
//!    byte-level encoders would write for the same blocks, its apply
//!    memory fits, and the applier's [`lz4_rebuild::expand`] gives the
//!    expanded target.

use crate::blocks::BlockClass;
use crate::encode::EncodeParams;
use romdelta_codecs::{lz4, lz4_stream};
use romdelta_format::{lz4_rebuild, Digest, Extent, OpKind, BLOCK_SIZE};
use romdelta_rom::Partition;

/// Largest expanded source bsdiff is tried on.
const MAX_BSDIFF_EXPANDED: usize = 96 << 20;
/// Largest stream decompressed length considered.
const MAX_PLAIN: usize = lz4_rebuild::MAX_EXPANDED_LEN as usize / 2;

/// A planned SOURCE_LZ4_REBUILD operation.
pub struct Planned {
    /// Source blocks it reads.
    pub src_extents: Vec<Extent>,
    /// SHA-256 of those blocks.
    pub src_sha256: Digest,
    /// Destination blocks it writes.
    pub dst_extents: Vec<Extent>,
    /// Its data.
    pub data: Vec<u8>,
    /// Memory it needs at apply, in MiB.
    pub apply_memory_mib: u64,
}

/// What a stream is in its image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A boot image's kernel section.
    Kernel,
    /// A boot image's ramdisk section.
    Ramdisk,
    /// Found by its magic at a block start.
    Bare,
}

/// An lz4 stream found in an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stream {
    /// Byte offset of its first byte in the image.
    offset: u64,
    /// What its bytes say of it.
    info: lz4_stream::StreamInfo,
    role: Role,
}

impl Stream {
    /// The blocks holding it.
    fn extent(&self) -> Extent {
        let first = self.offset / BLOCK_SIZE;
        let end = (self.offset + self.info.len as u64).div_ceil(BLOCK_SIZE);
        Extent::new(first, end - first)
    }
}

fn le32(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from(u32::from_le_bytes(
        b.get(at..at + 4)?.try_into().ok()?,
    )))
}

/// Offsets (from the header's first byte) and roles of the kernel and
/// ramdisk sections of the Android boot image header `h` (versions 0–4;
/// vendor_boot images have another magic and are found by signature).
fn boot_sections(h: &[u8]) -> Vec<(u64, u64, Role)> {
    if h.get(..8) != Some(b"ANDROID!") {
        return Vec::new();
    }
    let Some(version) = le32(h, 40) else {
        return Vec::new();
    };
    let (kernel, ramdisk, page) = match version {
        0..=2 => match (le32(h, 8), le32(h, 16), le32(h, 36)) {
            (Some(k), Some(r), Some(p)) => (k, r, p),
            _ => return Vec::new(),
        },
        3 | 4 => match (le32(h, 8), le32(h, 12)) {
            (Some(k), Some(r)) => (k, r, 4096),
            _ => return Vec::new(),
        },
        _ => return Vec::new(),
    };
    if !(2048..=65536).contains(&page) || !page.is_power_of_two() {
        return Vec::new();
    }
    let mut out = Vec::new();
    if kernel > 0 {
        out.push((page, kernel, Role::Kernel));
    }
    if ramdisk > 0 {
        out.push((page + kernel.div_ceil(page) * page, ramdisk, Role::Ramdisk));
    }
    out
}

/// Every lz4 stream whose first block satisfies `want`: boot image
/// sections, and magics at block starts; released as it scans.
fn find_streams(p: &Partition, want: impl Fn(u64) -> bool) -> Vec<Stream> {
    let img = p.bytes();
    let mut found: Vec<Stream> = Vec::new();
    let piece = 64u64 << 20;
    let mut start = 0u64;
    // The stream at `off`, within `len` bytes when a boot header says so.
    let at = |off: u64, len: Option<u64>, role: Role| {
        let end = len.map_or(img.len(), |n| (off + n).min(img.len() as u64) as usize);
        let b = img.get(off as usize..end)?;
        let info = lz4_stream::stream_info(b, MAX_PLAIN)?;
        Some(Stream {
            offset: off,
            info,
            role,
        })
    };
    while start < img.len() as u64 {
        let end = (start + piece).min(img.len() as u64);
        let mut off = start;
        while off < end {
            let o = off as usize;
            let head = img.get(o..o + 8);
            if head == Some(b"ANDROID!") {
                for (rel, len, role) in boot_sections(&img[o..(o + 4096).min(img.len())]) {
                    let s = off + rel;
                    if want(s / BLOCK_SIZE) {
                        found.extend(at(s, Some(len), role));
                    }
                }
            } else if let Some(h) = head {
                let magic = (h.starts_with(&lz4_stream::LEGACY_MAGIC)
                    || h.starts_with(&lz4_stream::FRAME_MAGIC))
                    && want(off / BLOCK_SIZE)
                    && !found.iter().any(|s| s.offset == off);
                if magic {
                    found.extend(at(off, None, Role::Bare));
                }
            }
            off += BLOCK_SIZE;
        }
        p.release(start, end - start);
        start = end;
    }
    found.sort_by_key(|s| s.offset);
    found
}

/// A changed target stream and the source stream it is diffed against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    source: Stream,
    target: Stream,
}

impl Pair {
    /// The target blocks a SOURCE_LZ4_REBUILD of this pair writes.
    pub fn dst_extent(&self) -> Extent {
        self.target.extent()
    }
}

/// The streams worth a SOURCE_LZ4_REBUILD of `dst` against `src`: each
/// changed target stream none of whose blocks is claimed, that may fit
/// `memory_mib` at apply, with its source stream. Cheap: a scan of block
/// starts and one decompression per stream found.
pub fn pairs(
    src: &Partition,
    dst: &Partition,
    classes: &[BlockClass],
    memory_mib: u64,
) -> Vec<Pair> {
    let free = |e: Extent| {
        let (a, b) = (e.start_block as usize, e.end_block() as usize);
        let span = &classes[a.min(classes.len())..b.min(classes.len())];
        span.contains(&BlockClass::Changed) && !span.contains(&BlockClass::Claimed)
    };
    // A lower bound of its apply memory (see `lz4_rebuild::apply_memory`):
    // the stream's blocks twice and its decompressed bytes twice.
    let may_fit = |s: &Stream| {
        let n = s.extent().num_blocks * BLOCK_SIZE;
        3 * n + 2 * s.info.decompressed_len as u64 + (16 << 20)
            <= memory_mib.saturating_mul(1 << 20)
    };
    let targets: Vec<Stream> = find_streams(dst, |b| {
        classes
            .get(b as usize)
            .is_some_and(|c| *c != BlockClass::Claimed)
    })
    .into_iter()
    .filter(|s| free(s.extent()) && may_fit(s))
    .collect();
    if targets.is_empty() {
        return Vec::new();
    }
    let sources = find_streams(src, |_| true);
    let mut out: Vec<Pair> = Vec::new();
    for t in targets {
        let e = t.extent();
        if out.iter().any(|p| {
            p.dst_extent().start_block < e.end_block() && e.start_block < p.dst_extent().end_block()
        }) {
            continue;
        }
        let same_role = |s: &&Stream| s.role == t.role && s.role != Role::Bare;
        let pick = sources
            .iter()
            .filter(same_role)
            .filter(|s| s.info.format == t.info.format)
            .min_by_key(|s| (s.info.len.abs_diff(t.info.len), s.offset))
            .or_else(|| {
                sources
                    .iter()
                    .min_by_key(|s| (s.info.len.abs_diff(t.info.len), s.offset))
            });
        if let Some(s) = pick {
            out.push(Pair {
                source: *s,
                target: t,
            });
        }
    }
    out
}

/// The SOURCE_LZ4_REBUILD operation of `pair`, if its stream reproduces,
/// it needs at most `memory_mib` MiB at apply and beats the byte-level
/// encoders.
pub fn plan_pair(
    src: &Partition,
    dst: &Partition,
    pair: &Pair,
    p: &EncodeParams,
    memory_mib: u64,
) -> Option<Planned> {
    let planned = plan_one(src, dst, &pair.source, &pair.target, p, memory_mib);
    src.release_all();
    dst.release_all();
    planned
}

fn plan_one(
    src: &Partition,
    dst: &Partition,
    s: &Stream,
    t: &Stream,
    p: &EncodeParams,
    memory_mib: u64,
) -> Option<Planned> {
    let (se_, te_) = (s.extent(), t.extent());
    fn bytes(part: &Partition, e: Extent) -> &[u8] {
        let b = part.bytes();
        let a = (e.start_block * BLOCK_SIZE) as usize;
        let z = ((e.end_block() * BLOCK_SIZE) as usize).min(b.len());
        &b[a..z]
    }
    let (sb, tb) = (bytes(src, se_), bytes(dst, te_));
    // A partition's last extent may end past its bytes when its size is no
    // whole number of blocks: not a case for this operation.
    if sb.len() as u64 != se_.num_blocks * BLOCK_SIZE
        || tb.len() as u64 != te_.num_blocks * BLOCK_SIZE
    {
        return None;
    }
    let so = (s.offset - se_.start_block * BLOCK_SIZE) as usize;
    let to = (t.offset - te_.start_block * BLOCK_SIZE) as usize;
    let (sr, tr) = (so..so + s.info.len, to..to + t.info.len);
    let target_plain = lz4_stream::decompress(&tb[tr.clone()], MAX_PLAIN).ok()?;
    let mut header = lz4_rebuild::Header {
        library: lz4::library_version(),
        params: *lz4_stream::candidates(&t.info).first()?,
        at: romdelta_format::placement::Placement {
            src_offset: sr.start as u64,
            src_stream_len: sr.len() as u64,
            src_decompressed_len: s.info.decompressed_len as u64,
            prefix_len: tr.start as u64,
            decompressed_len: target_plain.len() as u64,
            stream_len: tr.len() as u64,
            inner: OpKind::SourceZstd,
        },
    };
    let need = |h: &lz4_rebuild::Header| {
        lz4_rebuild::apply_memory(h, sb.len() as u64, tb.len() as u64).div_ceil(1 << 20)
    };
    let params = lz4_stream::candidates(&t.info).into_iter().find(|c| {
        header.params = *c;
        need(&header) <= memory_mib
            && lz4_stream::reproduces(c, &target_plain, &tb[tr.clone()]).unwrap_or(false)
    })?;
    header.params = params;
    let source_plain = lz4_stream::decompress(&sb[sr.clone()], MAX_PLAIN).ok()?;
    if header.source_expanded_len(sb.len() as u64) > lz4_rebuild::MAX_EXPANDED_LEN
        || header.target_expanded_len(tb.len() as u64) > lz4_rebuild::MAX_EXPANDED_LEN
    {
        return None;
    }
    let se = [&sb[..sr.start], &source_plain, &sb[sr.end..]].concat();
    drop(source_plain);
    let te = [&tb[..tr.start], &target_plain, &tb[tr.end..]].concat();
    drop(target_plain);
    use romdelta_format::ops::{encode_bsdiff_sparse, encode_source_zstd};
    let trial = p.trial_level.min(p.level);
    // The inner patch of the expanded forms and what the byte-level
    // encoders would write for these blocks (at most: the stored bytes
    // against the stored bytes, the smaller of SOURCE_ZSTD and bsdiff; lz4
    // has no entropy stage, so a small change stays local in its stream
    // and the byte-level patch can be small too) are two single-threaded
    // bsdiff matches of a kernel's size: made side by side.
    let (inner, (zstd, stored_bsdiff)) = rayon::join(
        || {
            let zstd_trial = encode_source_zstd(&se, &te, trial).len();
            let patch = (se.len() <= MAX_BSDIFF_EXPANDED).then(|| crate::bsdiff::diff(&se, &te));
            match patch {
                Some(pt) if encode_bsdiff_sparse(&pt, trial).len() < zstd_trial => (
                    OpKind::SourceBsdiffSparse,
                    encode_bsdiff_sparse(&pt, p.level),
                ),
                _ => (OpKind::SourceZstd, encode_source_zstd(&se, &te, p.level)),
            }
        },
        || {
            let zstd = encode_source_zstd(sb, tb, trial).len();
            let bsdiff = (sb.len() <= MAX_BSDIFF_EXPANDED)
                .then(|| encode_bsdiff_sparse(&crate::bsdiff::diff(sb, tb), trial).len());
            (zstd, bsdiff)
        },
    );
    drop(se);
    header.at.inner = inner.0;
    let data = lz4_rebuild::encode(&header, &inner.1);
    let byte_level = stored_bsdiff.map_or(zstd, |b| b.min(zstd));
    if data.len() >= byte_level {
        return None;
    }
    // Checked with the applier's code: its first half must give exactly
    // the expanded target, from which its second half compresses the
    // stream with the parameters that reproduced it above.
    let (_, expanded) = lz4_rebuild::expand(&data, sb, tb.len() as u64).ok()?;
    if expanded != te {
        return None;
    }
    Some(Planned {
        src_extents: vec![se_],
        src_sha256: romdelta_format::sha256(sb),
        dst_extents: vec![te_],
        apply_memory_mib: need(&header),
        data,
    })
}

/// Every SOURCE_LZ4_REBUILD operation of `dst` against `src` worth making
/// (see [`pairs`], [`plan_pair`]), in target order.
pub fn plan(
    src: &Partition,
    dst: &Partition,
    classes: &[BlockClass],
    p: &EncodeParams,
    memory_mib: u64,
) -> Vec<Planned> {
    pairs(src, dst, classes, memory_mib)
        .iter()
        .filter_map(|pair| plan_pair(src, dst, pair, p, memory_mib))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_headers_name_their_sections() {
        let mut h = vec![0u8; 4096];
        h[..8].copy_from_slice(b"ANDROID!");
        h[8..12].copy_from_slice(&5000u32.to_le_bytes());
        h[16..20].copy_from_slice(&300u32.to_le_bytes());
        h[36..40].copy_from_slice(&2048u32.to_le_bytes());
        h[40..44].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(
            boot_sections(&h),
            vec![
                (2048, 5000, Role::Kernel),
                (2048 + 6144, 300, Role::Ramdisk)
            ]
        );
        h[40..44].copy_from_slice(&4u32.to_le_bytes());
        h[12..16].copy_from_slice(&700u32.to_le_bytes());
        assert_eq!(
            boot_sections(&h),
            vec![
                (4096, 5000, Role::Kernel),
                (4096 + 8192, 700, Role::Ramdisk)
            ]
        );
        h[40..44].copy_from_slice(&9u32.to_le_bytes());
        assert!(boot_sections(&h).is_empty());
        for cut in 0..44 {
            let _ = boot_sections(&h[..cut]);
        }
        h[40..44].copy_from_slice(&0u32.to_le_bytes());
        h[36..40].copy_from_slice(&3000u32.to_le_bytes());
        assert!(boot_sections(&h).is_empty());
    }
}
