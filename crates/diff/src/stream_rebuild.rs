//! SOURCE_XZ_REBUILD and SOURCE_ZSTD_REBUILD operations for whole
//! compressed streams: the xz payload of a Linux kernel image (bzImage),
//! and files that start with one xz stream (`.xz` files, kernel modules
//! compressed with xz) or one zstd frame (`.zst` files, modules compressed
//! with zstd).
//!
//! A kernel update changes a few bytes of code, and the xz stream that
//! holds the code then differs almost everywhere; so does a zstd frame.
//! The generator:
//! 1. finds bzImages by their header at block-aligned offsets of the target
//!    image (`MZ` at 0, `HdrS` at 0x202, boot protocol ≥ 2.08, an xz stream
//!    at the payload), each whose payload decodes from the image bytes
//!    contiguously (a fragmented file is simply not found), and pairs each
//!    one with the source bzImage of the nearest payload size;
//! 2. finds files that start with an xz stream or a zstd frame (each paired
//!    only with a source of the same codec): through the file map of an
//!    ext4 or EROFS image ([`crate::files::image_files`]; a file may be
//!    several extents), paired with the source
//!    file of the same path or shape ([`crate::files::PathIndex`]), or
//!    else at block starts, paired with the source stream of the nearest
//!    length;
//! 3. finds the parameters that compress the target's decompressed bytes
//!    into exactly its stream ([`xz::candidates`], [`zstd::candidates`],
//!    first that reproduces), among those whose encoder fits the memory the
//!    applier may use (`--apply-memory`; the default 64 MiB fits xz
//!    dictionaries up to about 4 MiB, a kernel's 32 MiB needs about
//!    470 MiB);
//! 4. diffs the expanded forms (bytes before the stream, decompressed
//!    stream, bytes after) with SOURCE_ZSTD and, when they are small enough
//!    for its suffix array, bsdiff; keeps the smaller;
//! 5. keeps the operation only when its data is smaller than what the
//!    byte-level encoders would write for the same blocks, and the
//!    applier's `expand` of it ([`xz_rebuild::expand`],
//!    [`zstd_rebuild::expand`]) gives the expanded target.
//!
//! Steps 3 to 5 are about a minute of single-threaded work for a 66 MB
//! kernel; [`pairs`] is cheap, so the caller claims the streams' blocks
//! first and runs [`plan`] beside the rest of the plan.

use crate::blocks::BlockClass;
use crate::encode::EncodeParams;
use rayon::prelude::*;
use romdelta_codecs::{xz, zstd_frame as zstd};
use romdelta_format::placement::Placement;
use romdelta_format::{xz_rebuild, zstd_rebuild, Digest, Extent, OpKind, BLOCK_SIZE};
use romdelta_rom::Partition;

/// Largest expanded source bsdiff is tried on (its suffix array takes 4
/// bytes per byte).
const MAX_BSDIFF_EXPANDED: usize = 96 << 20;
/// Most stream files (not kernels) one partition's plan takes on.
const MAX_FILES: usize = 1 << 14;
/// Most bytes a stream may expand to (both operations' limit).
const MAX_EXPANDED: u64 = xz_rebuild::MAX_EXPANDED_LEN;
/// The magic bytes an xz stream starts with.
const XZ_MAGIC: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0];

/// A planned SOURCE_XZ_REBUILD or SOURCE_ZSTD_REBUILD operation.
pub struct Planned {
    /// Its kind.
    pub kind: OpKind,
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

/// The codec of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Xz,
    Zstd,
}

/// A stream found in an image: a bzImage's payload, an xz or a zstd file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    /// Its codec (streams pair only with their own codec's).
    codec: Codec,
    /// The image blocks that hold it, in byte order.
    extents: Vec<Extent>,
    /// Offset of the xz stream from the first byte.
    stream_at: u64,
    /// Exact stream length.
    stream_len: u64,
    /// A bzImage (paired with bzImages only).
    kernel: bool,
    /// Its path, when found through a file map.
    path: Option<String>,
}

impl Found {
    fn blocks(&self) -> u64 {
        romdelta_format::blocks_in(&self.extents)
    }

    /// Its bytes, read from `p`.
    fn bytes(&self, p: &Partition) -> Vec<u8> {
        let mut v = Vec::with_capacity((self.blocks() * BLOCK_SIZE) as usize);
        p.for_each_piece(&self.extents, |b| v.extend_from_slice(b))
            .expect("reads of a mapped image do not fail");
        v
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// The bzImage whose header starts at `off` of `img`, if its payload is a
/// whole xz stream there.
fn kernel_at(img: &[u8], off: usize) -> Option<Found> {
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
    if payload[..6] != XZ_MAGIC {
        return None;
    }
    let stream_len = xz::stream_len(payload, MAX_EXPANDED as usize / 2)? as u64;
    let len = end.div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
    if len / BLOCK_SIZE > romdelta_format::limits::MAX_OP_DST_BLOCKS
        || len > img.len() as u64 - off as u64
    {
        return None;
    }
    Some(Found {
        codec: Codec::Xz,
        extents: vec![Extent::new(off as u64 / BLOCK_SIZE, len / BLOCK_SIZE)],
        stream_at: at,
        stream_len,
        kernel: true,
        path: None,
    })
}

/// Whether `head` starts as an xz stream or a zstd frame does.
fn stream_magic(head: &[u8]) -> bool {
    head.starts_with(&XZ_MAGIC) || head.starts_with(&zstd::MAGIC)
}

/// The xz stream or zstd frame that starts at `bytes`' first byte, as a
/// file of the blocks `extents` (which hold `bytes`).
fn stream_file(bytes: &[u8], extents: Vec<Extent>, path: Option<String>) -> Option<Found> {
    let (codec, stream_len) = if bytes.starts_with(&XZ_MAGIC) {
        (Codec::Xz, xz::stream_len(bytes, MAX_EXPANDED as usize / 2)?)
    } else if bytes.starts_with(&zstd::MAGIC) {
        (Codec::Zstd, zstd::frame_len(bytes, MAX_EXPANDED / 2)?)
    } else {
        return None;
    };
    Some(Found {
        codec,
        stream_len: stream_len as u64,
        extents,
        stream_at: 0,
        kernel: false,
        path,
    })
}

/// Every bzImage at a block-aligned offset of `p`, and (with `files`) every
/// xz stream and zstd frame at one, for which `want` holds (given its first block),
/// releasing the pages it scanned.
fn find_at_block_starts(p: &Partition, files: bool, want: impl Fn(u64) -> bool) -> Vec<Found> {
    let img = p.bytes();
    let mut found = Vec::new();
    let piece = 64u64 << 20;
    let mut start = 0u64;
    // First block not inside a stream found already.
    let mut free = 0u64;
    while start < img.len() as u64 {
        let end = (start + piece).min(img.len() as u64);
        let mut off = start;
        while off < end {
            let (o, b) = (off as usize, off / BLOCK_SIZE);
            let head = img.get(o..o + 6);
            let f = if b < free {
                None
            } else if head.is_some_and(|h| h[..2] == *b"MZ")
                && img.get(o + 0x202..o + 0x206) == Some(b"HdrS")
                && want(b)
            {
                kernel_at(img, o)
            } else if files && head.is_some_and(stream_magic) && want(b) {
                stream_file(&img[o..], Vec::new(), None).and_then(|mut f| {
                    let n = f.stream_len.div_ceil(BLOCK_SIZE);
                    (n <= romdelta_format::limits::MAX_OP_DST_BLOCKS).then(|| {
                        f.extents = vec![Extent::new(b, n)];
                        f
                    })
                })
            } else {
                None
            };
            if let Some(f) = f {
                free = f.extents[0].end_block();
                found.push(f);
            }
            off += BLOCK_SIZE;
        }
        p.release(start, end - start);
        start = end;
    }
    found
}

/// Every stream of `p` worth a look: bzImages at block starts (those
/// for which `want_start` holds, given the first block), and stream files
/// through the file map of an ext4 or EROFS image (those for which `want_file`
/// holds, given their extents), else at block starts.
fn find(
    p: &Partition,
    want_start: impl Fn(u64) -> bool,
    want_file: impl Fn(&[Extent]) -> bool,
) -> Vec<Found> {
    let Some(files) = crate::files::image_files(p) else {
        return find_at_block_starts(p, true, want_start);
    };
    let mut found = find_at_block_starts(p, false, want_start);
    let img = p.bytes();
    for (path, extents) in files {
        let first = (extents[0].start_block * BLOCK_SIZE) as usize;
        if !img.get(first..first + 6).is_some_and(stream_magic) || !want_file(&extents) {
            continue;
        }
        let mut bytes = Vec::new();
        p.for_each_piece(&extents, |b| bytes.extend_from_slice(b))
            .expect("reads of a mapped image do not fail");
        found.extend(stream_file(&bytes, extents, Some(path)));
        p.release_all();
        if found.len() > MAX_FILES {
            break;
        }
    }
    found
}

/// A changed target xz stream and the source stream it is diffed against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    source: Found,
    target: Found,
}

impl Pair {
    /// The target blocks a SOURCE_XZ_REBUILD of this pair writes.
    pub fn dst_extents(&self) -> &[Extent] {
        &self.target.extents
    }
}

/// The xz streams worth a SOURCE_XZ_REBUILD of `dst` against `src`: each
/// changed target stream (none of whose blocks is claimed) for which some
/// candidate's encoder fits `memory_mib`, with its source stream. Cheap:
/// a header scan of block starts and of the image's file map, one stream
/// walk per stream.
pub fn pairs(
    src: &Partition,
    dst: &Partition,
    classes: &[BlockClass],
    memory_mib: u64,
) -> Vec<Pair> {
    let img = dst.bytes();
    // A lower bound of what a rebuild needs at apply: its encoder and the
    // fixed reserve (see `xz_rebuild::apply_memory`).
    let may_fit = |f: &Found| {
        // The headers lie in the stream's first 2 KiB, which are in its
        // first block when it starts one (a file's) and contiguous in a
        // kernel.
        let at = (f.extents[0].start_block * BLOCK_SIZE + f.stream_at) as usize;
        let stream = &img[at..at + f.stream_len.min(2048) as usize];
        let limit = memory_mib.saturating_mul(1 << 20);
        if f.codec == Codec::Zstd {
            let Ok(h) = zstd::read_header(stream) else {
                return false;
            };
            let len = h.content_size.unwrap_or(f.stream_len);
            return zstd::candidates(&h)
                .iter()
                .any(|c| zstd::encoder_memory(c, len) + (16 << 20) <= limit);
        }
        let Ok(info) = xz::read_headers(stream) else {
            return false;
        };
        xz::candidates(&info)
            .iter()
            .any(|c| c.encoder_memory().is_ok_and(|m| m + (16 << 20) <= limit))
    };
    let changed = |extents: &[Extent]| {
        let mut span = extents.iter().flat_map(|e| {
            let (a, b) = (e.start_block as usize, e.end_block() as usize);
            &classes[a.min(classes.len())..b.min(classes.len())]
        });
        let (mut any, mut claimed) = (false, false);
        for c in &mut span {
            any |= *c == BlockClass::Changed;
            claimed |= *c == BlockClass::Claimed;
        }
        any && !claimed
    };
    let first_changed = |b: u64| classes.get(b as usize) == Some(&BlockClass::Changed);
    let targets: Vec<Found> = find(dst, first_changed, changed)
        .into_iter()
        .filter(|f| changed(&f.extents) && may_fit(f))
        .collect();
    if targets.is_empty() {
        return Vec::new();
    }
    let sources = find(src, |_| true, |_| true);
    let by_path = crate::files::PathIndex::new(
        sources
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((s.path.clone()?.into_bytes(), i))),
    );
    let mut out: Vec<Pair> = Vec::new();
    let mut taken = std::collections::BTreeMap::new();
    for t in targets {
        // Two streams sharing blocks cannot both be written by one each.
        if t.extents.iter().any(|e| {
            taken
                .range(..e.end_block())
                .next_back()
                .is_some_and(|(_, &end)| end > e.start_block)
        }) {
            continue;
        }
        let source = match &t.path {
            Some(p) => by_path
                .find(p.as_bytes())
                .map(|i| &sources[i])
                .filter(|s| s.codec == t.codec),
            None => sources
                .iter()
                .filter(|s| s.kernel == t.kernel && s.codec == t.codec)
                .min_by_key(|s| {
                    (
                        s.stream_len.abs_diff(t.stream_len),
                        s.extents[0].start_block,
                    )
                }),
        };
        if let Some(s) = source {
            for e in &t.extents {
                taken.insert(e.start_block, e.end_block());
            }
            out.push(Pair {
                source: s.clone(),
                target: t,
            });
        }
    }
    out
}

/// The SOURCE_XZ_REBUILD operation of each of `pairs` (`None` where its
/// stream does not reproduce, it needs more than `memory_mib` MiB at
/// apply or does not beat the byte-level encoders), planned in parallel.
/// About a minute of single-threaded work for a 66 MB kernel: the caller
/// runs it beside the rest of the plan.
pub fn plan(
    src: &Partition,
    dst: &Partition,
    pairs: &[Pair],
    p: &EncodeParams,
    memory_mib: u64,
) -> Vec<Option<Planned>> {
    let one = |pair: &Pair| {
        let (sb, tb) = (pair.source.bytes(src), pair.target.bytes(dst));
        plan_one(&sb, &tb, pair, p, memory_mib)
    };
    // One stream (a kernel, as a rule) stays on the caller's thread.
    let planned = match pairs {
        [pair] => vec![one(pair)],
        _ => pairs.par_iter().map(one).collect(),
    };
    src.release_all();
    dst.release_all();
    planned
}

/// The target stream decompressed, the source stream decompressed, the
/// operation's header (inner kind to be set) and the memory it needs at
/// apply, for the first parameters that reproduce the target stream
/// within `memory_mib`.
struct Rebuild {
    target_plain: Vec<u8>,
    source_plain: Vec<u8>,
    header: Header,
}

/// A header of either kind.
#[derive(Clone, Copy)]
enum Header {
    Xz(xz_rebuild::Header),
    Zstd(zstd_rebuild::Header),
}

impl Header {
    fn kind(&self) -> OpKind {
        match self {
            Header::Xz(_) => OpKind::SourceXzRebuild,
            Header::Zstd(_) => OpKind::SourceZstdRebuild,
        }
    }

    fn set_inner(&mut self, inner: OpKind) {
        match self {
            Header::Xz(h) => h.at.inner = inner,
            Header::Zstd(h) => h.at.inner = inner,
        }
    }

    /// MiB the operation needs at apply.
    fn need(&self, src_len: u64, dst_len: u64) -> u64 {
        match self {
            Header::Xz(h) => xz_rebuild::apply_memory(h, src_len, dst_len),
            Header::Zstd(h) => zstd_rebuild::apply_memory(h, src_len, dst_len),
        }
        .div_ceil(1 << 20)
    }

    fn encode(&self, inner: &[u8]) -> Vec<u8> {
        match self {
            Header::Xz(h) => xz_rebuild::encode(h, inner),
            Header::Zstd(h) => zstd_rebuild::encode(h, inner),
        }
    }

    /// The applier's first half of decoding `data`.
    fn expand(&self, data: &[u8], src: &[u8], dst_len: u64) -> Option<Vec<u8>> {
        match self {
            Header::Xz(_) => xz_rebuild::expand(data, src, dst_len).ok().map(|r| r.1),
            Header::Zstd(_) => zstd_rebuild::expand(data, src, dst_len).ok().map(|r| r.1),
        }
    }
}

/// The xz streams whose magic is in `b`: where each starts and its length.
fn xz_streams_in(b: &[u8]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = b[at..].windows(XZ_MAGIC.len()).position(|w| w == XZ_MAGIC) {
        let o = at + i;
        match xz::stream_len(&b[o..], MAX_EXPANDED as usize / 2) {
            Some(n) => {
                out.push((o as u64, n as u64));
                at = o + n;
            }
            None => at = o + 1,
        }
        if out.len() > 16 {
            break;
        }
    }
    out
}

/// Whether `b` holds a whole xz stream.
pub fn holds_xz(b: &[u8]) -> bool {
    !xz_streams_in(b).is_empty()
}

/// SOURCE_XZ_REBUILD data from `source` to `target` (the decompressed
/// streams of a SOURCE_RECOMPRESS operation: a kernel image stored as
/// compressed EROFS clusters holds its xz payload there), when the longest
/// xz stream of `target` reproduces within `memory_mib` and beats the
/// byte-level encoders; with the MiB it needs.
pub fn within(
    source: &[u8],
    target: &[u8],
    p: &EncodeParams,
    memory_mib: u64,
) -> Option<(Vec<u8>, u64)> {
    let t = *xz_streams_in(target).iter().max_by_key(|s| s.1)?;
    let s = *xz_streams_in(source)
        .iter()
        .min_by_key(|s| s.1.abs_diff(t.1))?;
    let found = |(at, len): (u64, u64)| Found {
        codec: Codec::Xz,
        extents: Vec::new(),
        stream_at: at,
        stream_len: len,
        kernel: false,
        path: None,
    };
    let pair = Pair {
        source: found(s),
        target: found(t),
    };
    let planned = plan_one(source, target, &pair, p, memory_mib)?;
    Some((planned.data, planned.apply_memory_mib))
}

/// What the rebuild of an xz stream needs, when one of its candidates
/// reproduces it within `memory_mib`.
fn prepare_xz(sb: &[u8], tb: &[u8], at: Placement, memory_mib: u64) -> Option<Rebuild> {
    let limit = MAX_EXPANDED as usize;
    let (sr, tr) = ranges(&at);
    let target_plain = xz::decompress_exact(&tb[tr.clone()], limit).ok()?;
    let info = xz::read_headers(&tb[tr.clone()]).ok()?;
    let mut header = xz_rebuild::Header {
        library: xz::library_version(),
        params: *xz::candidates(&info).first()?,
        at: Placement {
            decompressed_len: target_plain.len() as u64,
            ..at
        },
    };
    let (sl, tl) = (sb.len() as u64, tb.len() as u64);
    let params = xz::candidates(&info).into_iter().find(|c| {
        header.params = *c;
        Header::Xz(header).need(sl, tl) <= memory_mib
            && xz::reproduces(c, &target_plain, &tb[tr.clone()]).unwrap_or(false)
    })?;
    header.params = params;
    let source_plain = xz::decompress_exact(&sb[sr], limit).ok()?;
    header.at.src_decompressed_len = source_plain.len() as u64;
    Some(Rebuild {
        target_plain,
        source_plain,
        header: Header::Xz(header),
    })
}

/// What the rebuild of a zstd frame needs, when one of its candidates
/// reproduces it within `memory_mib`.
fn prepare_zstd(sb: &[u8], tb: &[u8], at: Placement, memory_mib: u64) -> Option<Rebuild> {
    let limit = MAX_EXPANDED as usize;
    let (sr, tr) = ranges(&at);
    let frame = &tb[tr];
    let target_plain = zstd::decompress_exact(frame, limit).ok()?;
    let info = zstd::read_header(frame).ok()?;
    let source_plain = zstd::decompress_exact(&sb[sr], limit).ok()?;
    let mut header = zstd_rebuild::Header {
        library: zstd::library_version(),
        params: *zstd::candidates(&info).first()?,
        at: Placement {
            decompressed_len: target_plain.len() as u64,
            src_decompressed_len: source_plain.len() as u64,
            ..at
        },
    };
    let (sl, tl) = (sb.len() as u64, tb.len() as u64);
    header.params = zstd::candidates(&info).into_iter().find(|c| {
        header.params = *c;
        Header::Zstd(header).need(sl, tl) <= memory_mib
            && zstd::reproduces(c, &target_plain, frame).unwrap_or(false)
    })?;
    Some(Rebuild {
        target_plain,
        source_plain,
        header: Header::Zstd(header),
    })
}

/// The source and target stream ranges of a placement.
fn ranges(at: &Placement) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    let (so, sn) = (at.src_offset as usize, at.src_stream_len as usize);
    let (to, tn) = (at.prefix_len as usize, at.stream_len as usize);
    (so..so + sn, to..to + tn)
}

fn plan_one(
    sb: &[u8],
    tb: &[u8],
    pair: &Pair,
    p: &EncodeParams,
    memory_mib: u64,
) -> Option<Planned> {
    let (s, t) = (&pair.source, &pair.target);
    let at = Placement {
        src_offset: s.stream_at,
        src_stream_len: s.stream_len,
        src_decompressed_len: 0,
        prefix_len: t.stream_at,
        decompressed_len: 0,
        stream_len: t.stream_len,
        inner: OpKind::SourceZstd,
    };
    let (sr, tr) = ranges(&at);
    let Rebuild {
        target_plain,
        source_plain,
        mut header,
    } = match t.codec {
        Codec::Xz => prepare_xz(sb, tb, at, memory_mib)?,
        Codec::Zstd => prepare_zstd(sb, tb, at, memory_mib)?,
    };
    let expanded = |b: &[u8], r: &std::ops::Range<usize>, plain: &[u8]| {
        (b.len() - r.len() + plain.len()) as u64 <= MAX_EXPANDED
    };
    if !expanded(sb, &sr, &source_plain) || !expanded(tb, &tr, &target_plain) {
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
    header.set_inner(inner.0);
    let data = header.encode(&inner.1);
    // What the byte-level encoders would write for these blocks (at most):
    // the stored bytes against the stored bytes.
    let byte_level = romdelta_format::ops::encode_source_zstd(sb, tb, p.trial_level).len();
    if data.len() >= byte_level {
        return None;
    }
    // Checked with the applier's code: its first half must give exactly
    // the expanded target; its second half compresses the new stream with
    // the encoder that reproduced it above (`reproduces`), so the stream
    // is not compressed a third time here.
    if header.expand(&data, sb, tb.len() as u64)? != te {
        return None;
    }
    drop(te);
    Some(Planned {
        kind: header.kind(),
        src_extents: s.extents.clone(),
        src_sha256: romdelta_format::sha256(sb),
        dst_extents: t.extents.clone(),
        apply_memory_mib: header.need(sb.len() as u64, tb.len() as u64),
        data,
    })
}
