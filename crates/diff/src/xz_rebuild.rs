//! SOURCE_XZ_REBUILD operations for Linux kernel images (bzImage) whose
//! payload is an xz stream.
//!
//! A kernel update changes a few bytes of code, and the xz stream that
//! holds the code then differs almost everywhere. When the package may
//! ask the applier for the memory liblzma's encoder needs
//! (`--apply-memory`), the generator:
//! 1. finds bzImages by their header at block-aligned offsets of the target
//!    image (`MZ` at 0, `HdrS` at 0x202, boot protocol ≥ 2.08, an xz stream
//!    at the payload), each whose payload decodes from the image bytes
//!    contiguously (a fragmented file is simply not found), and pairs each
//!    one with the source bzImage of the nearest payload size;
//! 2. finds the parameters that compress the target's decompressed payload
//!    into exactly its stream ([`xz::candidates`], first that reproduces);
//! 3. diffs the expanded forms (bytes before the stream, decompressed
//!    stream, bytes after) with SOURCE_ZSTD and, when they are small enough
//!    for its suffix array, bsdiff; keeps the smaller;
//! 4. keeps the operation only when its data is smaller than what the
//!    byte-level encoders would write for the same blocks, and the
//!    applier's [`xz_rebuild::expand`] of it gives the expanded target.
//!
//! Steps 2 to 4 are about a minute of single-threaded work for a 66 MB
//! kernel; [`pairs`] is cheap, so the caller claims the kernels' blocks
//! first and runs [`plan_pair`] beside the rest of the plan.

use crate::blocks::BlockClass;
use crate::encode::EncodeParams;
use romdelta_codecs::xz;
use romdelta_format::{xz_rebuild, Digest, Extent, OpKind, BLOCK_SIZE};
use romdelta_rom::Partition;

/// Largest expanded source bsdiff is tried on (its suffix array takes 4
/// bytes per byte).
const MAX_BSDIFF_EXPANDED: usize = 96 << 20;

/// A planned SOURCE_XZ_REBUILD operation.
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

/// A bzImage found in an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Kernel {
    /// Its first block.
    block: u64,
    /// Bytes of its blocks (from its first byte to its last block's end).
    len: u64,
    /// Offset of the xz stream from its first byte.
    stream_at: u64,
    /// Exact stream length.
    stream_len: u64,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// The bzImage whose header starts at `off` of `img`, if its payload is a
/// whole xz stream there.
fn kernel_at(img: &[u8], off: usize) -> Option<Kernel> {
    let h = img.get(off..off + 0x250)?;
    if &h[..2] != b"MZ" || &h[0x202..0x206] != b"HdrS" {
        return None;
    }
    let version = u16::from_le_bytes([h[0x206], h[0x207]]);
    if version < 0x0208 {
        return None;
    }
    let setup = match h[0x1f1] {
        0 => 4,
        n => u64::from(n),
    };
    let pm = (setup + 1) * 512;
    let syssize = u64::from(le32(h, 0x1f4)) * 16;
    let (po, pl) = (u64::from(le32(h, 0x248)), u64::from(le32(h, 0x24c)));
    let at = pm + po;
    let end = (pm + syssize).max(at + pl);
    if pl < 32 || end > img.len() as u64 - off as u64 {
        return None;
    }
    let payload = &img[off + at as usize..off + (at + pl) as usize];
    if payload[..6] != [0xfd, b'7', b'z', b'X', b'Z', 0] {
        return None;
    }
    let stream_len = xz::stream_len(payload, xz_rebuild::MAX_EXPANDED_LEN as usize / 2)? as u64;
    let len = end.div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
    if len / BLOCK_SIZE > romdelta_format::limits::MAX_OP_DST_BLOCKS
        || len > img.len() as u64 - off as u64
    {
        return None;
    }
    Some(Kernel {
        block: off as u64 / BLOCK_SIZE,
        len,
        stream_at: at,
        stream_len,
    })
}

/// Every bzImage at a block-aligned offset of `p` for which `want` holds
/// (given its first block), releasing the pages it scanned.
fn find_kernels(p: &Partition, want: impl Fn(u64) -> bool) -> Vec<Kernel> {
    let img = p.bytes();
    let mut found = Vec::new();
    let piece = 64u64 << 20;
    let mut start = 0u64;
    while start < img.len() as u64 {
        let end = (start + piece).min(img.len() as u64);
        let mut off = start;
        while off < end {
            let o = off as usize;
            if img.get(o..o + 2) == Some(b"MZ")
                && img.get(o + 0x202..o + 0x206) == Some(b"HdrS")
                && want(off / BLOCK_SIZE)
            {
                if let Some(k) = kernel_at(img, o) {
                    found.push(k);
                }
            }
            off += BLOCK_SIZE;
        }
        p.release(start, end - start);
        start = end;
    }
    found
}

/// A changed target bzImage and the source bzImage it is diffed against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    source: Kernel,
    target: Kernel,
}

impl Pair {
    /// The target blocks a SOURCE_XZ_REBUILD of this pair writes.
    pub fn dst_extent(&self) -> Extent {
        Extent::new(self.target.block, self.target.len / BLOCK_SIZE)
    }
}

/// The kernels worth a SOURCE_XZ_REBUILD of `dst` against `src`: each
/// changed target bzImage (none of whose blocks is claimed), with the
/// source bzImage of the nearest payload size. Cheap: a header scan of
/// block starts, one stream walk per kernel.
pub fn pairs(
    src: &Partition,
    dst: &Partition,
    classes: &[BlockClass],
    memory_mib: u64,
) -> Vec<Pair> {
    // A lower bound of what a rebuild needs at apply: its encoder and the
    // fixed reserve (see `xz_rebuild::apply_memory`).
    let img = dst.bytes();
    let may_fit = |k: &Kernel| {
        let at = (k.block * BLOCK_SIZE + k.stream_at) as usize;
        let Ok(info) = xz::read_headers(&img[at..at + k.stream_len as usize]) else {
            return false;
        };
        xz::candidates(&info).iter().any(|c| {
            c.encoder_memory()
                .is_ok_and(|m| m + (16 << 20) <= memory_mib.saturating_mul(1 << 20))
        })
    };
    let changed = |k: &Kernel| {
        let (a, b) = (k.block as usize, (k.block + k.len / BLOCK_SIZE) as usize);
        let span = &classes[a.min(classes.len())..b.min(classes.len())];
        span.contains(&BlockClass::Changed) && !span.contains(&BlockClass::Claimed)
    };
    let targets: Vec<Kernel> = find_kernels(dst, |b| {
        classes.get(b as usize) == Some(&BlockClass::Changed)
    })
    .into_iter()
    .filter(|k| changed(k) && may_fit(k))
    .collect();
    if targets.is_empty() {
        return Vec::new();
    }
    let sources = find_kernels(src, |_| true);
    let mut out: Vec<Pair> = Vec::new();
    for t in targets {
        // Two bzImages sharing blocks cannot both be written by one each.
        let end = t.block + t.len / BLOCK_SIZE;
        if out
            .iter()
            .any(|p| p.target.block < end && t.block < p.dst_extent().end_block())
        {
            continue;
        }
        if let Some(s) = sources
            .iter()
            .min_by_key(|s| (s.stream_len.abs_diff(t.stream_len), s.block))
        {
            out.push(Pair {
                source: *s,
                target: t,
            });
        }
    }
    out
}

/// The SOURCE_XZ_REBUILD operation of `pair`, if its stream reproduces,
/// it needs at most `memory_mib` MiB at apply and beats the byte-level
/// encoders. Single-threaded work of about a minute for a 66 MB kernel:
/// the caller runs it beside the rest of the plan.
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
    s: &Kernel,
    t: &Kernel,
    p: &EncodeParams,
    memory_mib: u64,
) -> Option<Planned> {
    let sb = &src.bytes()[(s.block * BLOCK_SIZE) as usize..][..s.len as usize];
    let tb = &dst.bytes()[(t.block * BLOCK_SIZE) as usize..][..t.len as usize];
    let stream = |k: &Kernel| k.stream_at as usize..(k.stream_at + k.stream_len) as usize;
    let (sr, tr) = (stream(s), stream(t));
    let limit = xz_rebuild::MAX_EXPANDED_LEN as usize;
    let target_plain = xz::decompress_exact(&tb[tr.clone()], limit).ok()?;
    let info = xz::read_headers(&tb[tr.clone()]).ok()?;
    let mut header = xz_rebuild::Header {
        library: xz::library_version(),
        params: *xz::candidates(&info).first()?,
        src_offset: sr.start as u64,
        src_stream_len: sr.len() as u64,
        src_decompressed_len: 0,
        prefix_len: tr.start as u64,
        decompressed_len: target_plain.len() as u64,
        stream_len: tr.len() as u64,
        inner: OpKind::SourceZstd,
    };
    let need = |h: &xz_rebuild::Header| {
        xz_rebuild::apply_memory(h, sb.len() as u64, tb.len() as u64).div_ceil(1 << 20)
    };
    let params = xz::candidates(&info).into_iter().find(|c| {
        header.params = *c;
        need(&header) <= memory_mib
            && xz::reproduces(c, &target_plain, &tb[tr.clone()]).unwrap_or(false)
    })?;
    header.params = params;
    let source_plain = xz::decompress_exact(&sb[sr.clone()], limit).ok()?;
    header.src_decompressed_len = source_plain.len() as u64;
    let expanded_len = header.source_expanded_len(sb.len() as u64);
    if expanded_len > xz_rebuild::MAX_EXPANDED_LEN
        || header.target_expanded_len(tb.len() as u64) > xz_rebuild::MAX_EXPANDED_LEN
    {
        return None;
    }
    let se = [&sb[..sr.start], &source_plain, &sb[sr.end..]].concat();
    drop(source_plain);
    let te = [&tb[..tr.start], &target_plain, &tb[tr.end..]].concat();
    drop(target_plain);
    // Patches of the expanded forms: SOURCE_ZSTD, and bsdiff when its
    // suffix array stays reasonable, tried at the trial level; the smaller
    // is encoded at the final level (a final-level zstd pass over 66 MB
    // against a 66 MB prefix alone takes longer than all the rest).
    use romdelta_format::ops::{encode_bsdiff_sparse, encode_source_zstd};
    let trial = p.trial_level.min(p.level);
    let zstd_trial = encode_source_zstd(&se, &te, trial).len();
    let patch = (se.len() <= MAX_BSDIFF_EXPANDED).then(|| crate::bsdiff::diff(&se, &te));
    let inner = match patch {
        Some(pt) if encode_bsdiff_sparse(&pt, trial).len() < zstd_trial => (
            OpKind::SourceBsdiffSparse,
            encode_bsdiff_sparse(&pt, p.level),
        ),
        _ => (OpKind::SourceZstd, encode_source_zstd(&se, &te, p.level)),
    };
    drop(se);
    header.inner = inner.0;
    let data = xz_rebuild::encode(&header, &inner.1);
    // What the byte-level encoders would write for these blocks (at most):
    // the stored bytes against the stored bytes.
    let byte_level = romdelta_format::ops::encode_source_zstd(sb, tb, p.trial_level).len();
    if data.len() >= byte_level {
        return None;
    }
    // Checked with the applier's code: its first half must give exactly
    // the expanded target; its second half compresses the new stream with
    // the encoder that reproduced it above (`xz::reproduces`), so the
    // stream is not compressed a third time here.
    let (_, expanded) = xz_rebuild::expand(&data, sb, tb.len() as u64).ok()?;
    if expanded != te {
        return None;
    }
    drop((expanded, te));
    Some(Planned {
        src_extents: vec![Extent::new(s.block, s.len / BLOCK_SIZE)],
        src_sha256: romdelta_format::sha256(sb),
        dst_extents: vec![Extent::new(t.block, t.len / BLOCK_SIZE)],
        apply_memory_mib: need(&header),
        data,
    })
}
