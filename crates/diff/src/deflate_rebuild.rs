//! SOURCE_DEFLATE_REBUILD operations for files that hold deflate streams:
//! gzip files, zip archives (jar, apk) and zlib streams.
//!
//! A changed entry of an archive changes almost every compressed byte
//! after the change. The generator:
//! 1. finds containers ([`romdelta_streams::at`]) among the files of an
//!    ext4 or EROFS image (through its file map, [`crate::files`]: a file's
//!    blocks may be several extents) or else by their signature at the block
//!    starts of the image (a contiguously stored file of any filesystem
//!    starts at a block), each whose blocks changed and are not claimed by
//!    another operation, and pairs each with the source file of the same
//!    path, or else the source container of the same kind whose streams hold
//!    the most of what the target's hold (equal CRC-32s of whole streams,
//!    then of their first 4 KiB), then shares the most stream names (zip
//!    entry paths, gzip FNAMEs), then is nearest in expanded size;
//! 2. finds, for each target stream, the zlib parameters that compress its
//!    decompressed bytes into exactly the stream
//!    ([`deflate::candidates`] from the container's level hint, the
//!    parameters of the container's last reproduced stream first); a
//!    stream that reproduces under none stays bytes of the expanded form;
//! 3. diffs the expanded forms (every source stream and every reproduced
//!    target stream replaced by its decompressed bytes) with SOURCE_ZSTD
//!    and, when small enough for its suffix array, bsdiff; keeps the
//!    smaller;
//! 4. keeps the operation only when the applier's own decode rebuilds the
//!    target bytes exactly, it fits the apply memory allowed, and its data
//!    is smaller than what the byte-level encoders would write for the
//!    same blocks.

use crate::blocks::BlockClass;
use crate::encode::EncodeParams;
use rayon::prelude::*;
use romdelta_codecs::deflate::{self, DeflateParams};
use romdelta_format::deflate_rebuild::{self as op, Header, Stream};
use romdelta_format::{Digest, Extent, OpKind, BLOCK_SIZE};
use romdelta_rom::Partition;
use romdelta_streams::Container;
use std::collections::HashSet;

/// Largest expanded source bsdiff is tried on (its suffix array takes 4
/// bytes per byte).
const MAX_BSDIFF_EXPANDED: usize = 96 << 20;
/// Most decompressed bytes one container's parse may produce.
const PARSE_BUDGET: usize = (op::MAX_EXPANDED_LEN / 2) as usize;
/// Target streams that fail to reproduce, with none reproduced before,
/// after which a container's other streams are not tried.
const GIVE_UP_AFTER: usize = 8;

/// A planned SOURCE_DEFLATE_REBUILD operation.
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
    /// Target streams it rebuilds, and those it found.
    pub streams: (usize, usize),
}

/// A container found in an image: at a block start, or as a file of the
/// image's file map.
struct Found {
    /// The image blocks that hold it, in its byte order.
    extents: Vec<Extent>,
    /// Its path in the file map.
    path: Option<String>,
    c: Container,
}

/// What a container's streams hold: their CRC-32s, those of their first
/// bytes, their names.
struct Fingerprint<'a> {
    crcs: HashSet<u32>,
    heads: HashSet<u32>,
    names: HashSet<&'a [u8]>,
}

impl Found {
    fn fingerprint(&self) -> Fingerprint<'_> {
        let s = &self.c.streams;
        Fingerprint {
            crcs: s.iter().map(|s| s.crc).collect(),
            heads: s.iter().map(|s| s.head_crc).collect(),
            names: s
                .iter()
                .filter(|s| !s.name.is_empty())
                .map(|s| s.name.as_slice())
                .collect(),
        }
    }
    fn expanded(&self) -> u64 {
        self.c.streams.iter().map(|s| s.expanded_len as u64).sum()
    }
    fn blocks(&self) -> u64 {
        romdelta_format::blocks_in(&self.extents)
    }
    fn first_block(&self) -> u64 {
        self.extents.first().map_or(0, |e| e.start_block)
    }
    /// Its bytes, read from `p`.
    fn bytes(&self, p: &Partition) -> Vec<u8> {
        let mut v = Vec::with_capacity((self.blocks() * BLOCK_SIZE) as usize);
        p.for_each_piece(&self.extents, |b| v.extend_from_slice(b))
            .expect("reads of a mapped image do not fail");
        v
    }
}

/// Every container of `p`: its files' when it is an ext4 or EROFS image (located
/// through its file map; those for which `want_file` holds, given their
/// extents), else those at its block starts (for which `want_start` holds,
/// given the first block). Releases the pages it read.
fn find(
    p: &Partition,
    want_file: impl Fn(&[Extent]) -> bool,
    want_start: impl Fn(u64) -> bool,
) -> Vec<Found> {
    let Some(files) = crate::files::image_files(p) else {
        return find_at_block_starts(p, want_start);
    };
    let mut found = Vec::new();
    let img = p.bytes();
    for (path, extents) in files {
        let first = (extents[0].start_block * BLOCK_SIZE) as usize;
        if !romdelta_streams::has_signature(&img[first..]) || !want_file(&extents) {
            continue;
        }
        let mut bytes = Vec::new();
        p.for_each_piece(&extents, |b| bytes.extend_from_slice(b))
            .expect("reads of a mapped image do not fail");
        if let Some(c) = romdelta_streams::at(&bytes, PARSE_BUDGET) {
            found.push(Found {
                extents,
                path: Some(path),
                c,
            });
        }
        p.release_all();
    }
    found
}

/// Every container at a block start of `p` for which `want` holds (given
/// its first block), releasing the pages it scanned.
fn find_at_block_starts(p: &Partition, want: impl Fn(u64) -> bool) -> Vec<Found> {
    let img = p.bytes();
    let nblocks = img.len() as u64 / BLOCK_SIZE;
    let mut found = Vec::new();
    let mut b = 0u64;
    let mut released = 0u64;
    while b < nblocks {
        let at = (b * BLOCK_SIZE) as usize;
        let mut next = b + 1;
        if romdelta_streams::has_signature(&img[at..]) && want(b) {
            let end = (at + (romdelta_format::limits::MAX_OP_DST_BLOCKS * BLOCK_SIZE) as usize)
                .min(img.len());
            if let Some(c) = romdelta_streams::at(&img[at..end], PARSE_BUDGET) {
                let blocks = (c.end as u64).div_ceil(BLOCK_SIZE).max(1);
                next = b + blocks;
                found.push(Found {
                    extents: vec![Extent::new(b, blocks)],
                    path: None,
                    c,
                });
            }
        }
        if (next - released) * BLOCK_SIZE >= 64 << 20 {
            p.release(released * BLOCK_SIZE, (next - released) * BLOCK_SIZE);
            released = next;
        }
        b = next;
    }
    p.release_all();
    found
}

/// The SOURCE_DEFLATE_REBUILD operations for `dst` against `src`: one per
/// changed target container that has streams that reproduce, fits in
/// `memory_mib` MiB at apply and beats the byte-level encoders. `classes`
/// tells which target blocks changed (claimed blocks are left alone).
pub fn plan(
    src: &Partition,
    dst: &Partition,
    classes: &[BlockClass],
    p: &EncodeParams,
    memory_mib: u64,
) -> Vec<Planned> {
    let span = |e: &Extent| {
        let (a, b) = (e.start_block as usize, e.end_block() as usize);
        &classes[a.min(classes.len())..b.min(classes.len())]
    };
    let changed_blocks = |ex: &[Extent]| ex.iter().any(|e| span(e).contains(&BlockClass::Changed));
    let changed = |f: &Found| {
        changed_blocks(&f.extents)
            && !f
                .extents
                .iter()
                .any(|e| span(e).contains(&BlockClass::Claimed))
    };
    // A file of the map is parsed only when some of its blocks changed; a
    // container found at a block start, whose end is not known before, is
    // parsed when its first block is not claimed.
    let free = |b: u64| !matches!(classes.get(b as usize), Some(BlockClass::Claimed) | None);
    let targets: Vec<Found> = find(
        dst,
        |ex| changed_blocks(ex) && ex.first().is_some_and(|e| free(e.start_block)),
        free,
    )
    .into_iter()
    .filter(changed)
    .collect();
    if targets.is_empty() {
        return Vec::new();
    }
    let sources = find(src, |_| true, |_| true);
    let by_path: std::collections::HashMap<&str, usize> = sources
        .iter()
        .enumerate()
        .filter_map(|(i, s)| Some((s.path.as_deref()?, i)))
        .collect();
    let prints: Vec<Fingerprint> = sources.iter().map(Found::fingerprint).collect();
    // Each target is planned on its own (in parallel, in order).
    let plan_target = |t: &Found| -> Option<Planned> {
        // The source whose streams hold the most of what the target's do
        // (whole streams, then their first bytes), then shares the most
        // names, then is nearest in size.
        let tp = t.fingerprint();
        let same_path = t
            .path
            .as_deref()
            .and_then(|p| by_path.get(p))
            .map(|&i| &sources[i])
            .filter(|s| s.c.kind == t.c.kind);
        let best = same_path.or_else(|| {
            sources
                .iter()
                .zip(&prints)
                .filter(|(s, _)| s.c.kind == t.c.kind)
                .min_by_key(|(s, sp)| {
                    (
                        std::cmp::Reverse((
                            sp.crcs.intersection(&tp.crcs).count(),
                            sp.heads.intersection(&tp.heads).count(),
                            sp.names.intersection(&tp.names).count(),
                        )),
                        s.expanded().abs_diff(t.expanded()),
                        s.first_block(),
                    )
                })
                .map(|(s, _)| s)
        });
        plan_one(src, dst, best?, t, p, memory_mib)
    };
    let out = targets.par_iter().filter_map(plan_target).collect();
    src.release_all();
    dst.release_all();
    out
}

/// The first of the container's candidates under which `plain`
/// compresses into `stream`, the parameters that reproduced the last
/// stream first.
fn reproduce(
    hint: deflate::LevelHint,
    last: Option<DeflateParams>,
    plain: &[u8],
    stream: &[u8],
) -> Option<DeflateParams> {
    let mut c = deflate::candidates(hint);
    if let Some(l) = last {
        c.retain(|p| *p != l);
        c.insert(0, l);
    }
    deflate::find_params(&c, plain, stream)
}

fn plan_one(
    src: &Partition,
    dst: &Partition,
    s: &Found,
    t: &Found,
    p: &EncodeParams,
    memory_mib: u64,
) -> Option<Planned> {
    if s.blocks() > romdelta_format::limits::MAX_OP_SRC_BLOCKS
        || t.blocks() > romdelta_format::limits::MAX_OP_DST_BLOCKS
    {
        return None;
    }
    let (sb, tb) = (s.bytes(src), t.bytes(dst));
    let (sb, tb) = (sb.as_slice(), tb.as_slice());
    // The target streams that reproduce.
    let mut dst_streams = Vec::new();
    let mut last = None;
    let mut failed = 0;
    for st in &t.c.streams {
        if last.is_none() && failed >= GIVE_UP_AFTER {
            break;
        }
        let range = st.offset..st.offset + st.len;
        let mut plain = vec![0u8; st.expanded_len];
        deflate::decompress_into(&tb[range.clone()], &mut plain).ok()?;
        match reproduce(st.hint, last, &plain, &tb[range]) {
            Some(params) => {
                last = Some(params);
                dst_streams.push((
                    Stream {
                        offset: st.offset as u64,
                        len: st.len as u64,
                        expanded_len: st.expanded_len as u64,
                    },
                    params,
                ));
            }
            None => failed += 1,
        }
    }
    if dst_streams.is_empty() {
        return None;
    }
    let src_streams: Vec<Stream> =
        s.c.streams
            .iter()
            .map(|st| Stream {
                offset: st.offset as u64,
                len: st.len as u64,
                expanded_len: st.expanded_len as u64,
            })
            .collect();
    let mut header = Header {
        library: deflate::library_version(),
        src_streams,
        dst_streams,
        inner: OpKind::SourceZstd,
    };
    let (sl, tl) = (sb.len() as u64, tb.len() as u64);
    let need = |h: &Header| op::apply_memory(h, sl, tl).div_ceil(1 << 20);
    if header.source_expanded_len(sl) > op::MAX_EXPANDED_LEN
        || header.target_expanded_len(tl) > op::MAX_EXPANDED_LEN
        || need(&header) > memory_mib
    {
        return None;
    }
    let se = op::expand(sb, &header.src_streams).ok()?;
    let target_streams: Vec<Stream> = header.dst_streams.iter().map(|(s, _)| *s).collect();
    let te = op::expand(tb, &target_streams).ok()?;
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
    drop((se, te));
    header.inner = inner.0;
    let data = op::encode(&header, &inner.1);
    // What the byte-level encoders would write for these blocks (at most):
    // the stored bytes against the stored bytes.
    // Both plain candidates, bsdiff only when zstd alone is beaten: a
    // changed container's stored bytes often patch well where only a few
    // of its streams changed.
    let byte_level = encode_source_zstd(sb, tb, p.trial_level).len();
    if data.len() >= byte_level
        || data.len() >= encode_bsdiff_sparse(&crate::bsdiff::diff(sb, tb), p.trial_level).len()
    {
        return None;
    }
    // Checked with the very decoder an applier runs.
    let mut check = vec![0u8; tb.len()];
    romdelta_format::ops::decode(OpKind::SourceDeflateRebuild, &data, sb, &mut check).ok()?;
    if check != tb {
        return None;
    }
    Some(Planned {
        src_extents: s.extents.clone(),
        src_sha256: romdelta_format::sha256(sb),
        dst_extents: t.extents.clone(),
        apply_memory_mib: need(&header),
        streams: (header.dst_streams.len(), t.c.streams.len()),
        data,
    })
}
