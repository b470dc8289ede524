//! Block-based OTAs of non-A/B devices, written from romdelta's in-place
//! plan: per partition a version-4 transfer list, new.dat.br and patch.dat
//! (docs/BLOCKOTA.md), in a directory or a flashable zip.
//!
//! The plan's stages become the list's order: a stage's reads of blocks
//! the stage also writes (its stash) become `stash` commands at its start
//! and `free` ones at its end; `SOURCE_COPY` becomes `move`; every other
//! operation that reads the old image becomes `bsdiff` (a BSDIFF40 patch
//! of its source blocks, made here) unless the new blocks cost less as
//! new data; `ZERO` becomes `zero`, the rest `new`. A full partition is
//! `new` and `zero` only. Every hash a command carries is of the bytes it
//! reads and writes, computed from the two images.

use crate::{DiffError, DiffOptions};
use rayon::prelude::*;
use romdelta_android::blockota::{sha1_hex, RangeSet, BLOCK};
use romdelta_format::inplace::{merge_extents, stage_ranges, stage_stash, BlockSet};
use romdelta_format::{Extent, OpKind, Package};
use romdelta_rom::{Partition, Rom};
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

/// brotli quality and window of new.dat.br.
const BROTLI_QUALITY: u32 = 11;
const BROTLI_LGWIN: u32 = 22;

/// What was written for one partition.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PartitionOtaSummary {
    /// The partition.
    pub name: String,
    /// Whether it is written whole.
    pub full: bool,
    /// Commands per kind.
    pub commands: std::collections::BTreeMap<&'static str, u64>,
    /// Bytes of the transfer list, new.dat.br and patch.dat.
    pub list_bytes: u64,
    /// Bytes of new.dat.br.
    pub new_data_bytes: u64,
    /// Bytes of patch.dat.
    pub patch_bytes: u64,
    /// Most blocks stashed at once.
    pub max_stash_blocks: u64,
}

/// What was written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BlockOtaSummary {
    /// Per partition.
    pub partitions: Vec<PartitionOtaSummary>,
    /// Bytes of every partition's three files together.
    pub package_bytes: u64,
}

fn parent_of(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

fn invalid(why: String) -> DiffError {
    DiffError::Invalid(why)
}

fn ranges(extents: &[Extent]) -> RangeSet {
    RangeSet(
        extents
            .iter()
            .map(|e| (e.start_block, e.end_block()))
            .collect(),
    )
}

fn read(p: &Partition, extents: &[Extent]) -> Vec<u8> {
    let mut v = crate::files::read_mapped(p, extents);
    // The last block of an image whose size is not a multiple of 4096
    // reads short: it is zero-padded.
    v.resize((romdelta_format::blocks_in(extents) * BLOCK) as usize, 0);
    v
}

/// One partition's list being written.
struct Writer {
    lines: Vec<String>,
    written: u64,
    new_data: Vec<u8>,
    patch: Vec<u8>,
    counts: std::collections::BTreeMap<&'static str, u64>,
    stashed: u64,
    max_stashed: u64,
    max_entries: u64,
}

impl Writer {
    fn new() -> Self {
        Writer {
            lines: Vec::new(),
            written: 0,
            new_data: Vec::new(),
            patch: Vec::new(),
            counts: Default::default(),
            stashed: 0,
            max_stashed: 0,
            max_entries: 0,
        }
    }

    fn push(&mut self, name: &'static str, line: String, writes: u64) {
        *self.counts.entry(name).or_default() += 1;
        self.written += writes;
        self.lines.push(line);
    }

    fn new_blocks(&mut self, dst: &Partition, extents: &[Extent]) {
        let r = ranges(extents);
        self.new_data.extend_from_slice(&read(dst, extents));
        self.push("new", format!("new {}", r.render()), r.blocks());
    }

    /// `new` and `zero` commands writing all of `dst`.
    fn full(&mut self, dst: &Partition) {
        let blocks = dst.size().div_ceil(BLOCK);
        let bytes = dst.bytes();
        let zero = |b: u64| {
            let s = (b * BLOCK) as usize;
            let e = (s + BLOCK as usize).min(bytes.len());
            bytes[s..e].iter().all(|&x| x == 0)
        };
        let mut b = 0;
        while b < blocks {
            let z = zero(b);
            let mut e = b + 1;
            while e < blocks && zero(e) == z && e - b < 1 << 15 {
                e += 1;
            }
            let ext = [Extent::new(b, e - b)];
            if z {
                let r = ranges(&ext);
                self.push("zero", format!("zero {}", r.render()), r.blocks());
            } else {
                self.new_blocks(dst, &ext);
            }
            b = e;
        }
    }

    fn text(&self) -> String {
        let mut s = format!(
            "4\n{}\n{}\n{}\n",
            self.written, self.max_entries, self.max_stashed
        );
        for l in &self.lines {
            s.push_str(l);
            s.push('\n');
        }
        s
    }
}

/// The source of a command reading `src` (blocks of the old image, in
/// order, none repeated) when the blocks of `stash` are read from stashes:
/// the text form, and the stashes it needs (id, blocks).
fn source_text(
    old: &Partition,
    src: &[Extent],
    stash: &BlockSet,
) -> (String, Vec<(String, Vec<Extent>)>) {
    let blocks = romdelta_format::blocks_in(src);
    // Runs of consecutive source blocks, each from the image or a stash,
    // and where each goes in the buffer.
    let (mut image, mut image_at) = (Vec::new(), Vec::new());
    let mut pieces: Vec<(Extent, Extent)> = Vec::new();
    let mut pos = 0u64;
    for e in src {
        let mut b = e.start_block;
        for s in stash.overlapping(*e) {
            if s.start_block > b {
                image.push(Extent::new(b, s.start_block - b));
                image_at.push(Extent::new(pos, s.start_block - b));
                pos += s.start_block - b;
            }
            pieces.push((s, Extent::new(pos, s.num_blocks)));
            pos += s.num_blocks;
            b = s.end_block();
        }
        if b < e.end_block() {
            image.push(Extent::new(b, e.end_block() - b));
            image_at.push(Extent::new(pos, e.end_block() - b));
            pos += e.end_block() - b;
        }
    }
    if pieces.is_empty() {
        return (format!("{blocks} {}", ranges(src).render()), Vec::new());
    }
    let mut text = blocks.to_string();
    if image.is_empty() {
        text.push_str(" -");
    } else {
        text.push_str(&format!(
            " {} {}",
            ranges(&image).render(),
            ranges(&image_at).render()
        ));
    }
    let mut stashes = Vec::new();
    for (run, at) in pieces {
        let id = sha1_hex(&read(old, &[run]));
        text.push_str(&format!(" {id}:{}", ranges(&[at]).render()));
        stashes.push((id, vec![run]));
    }
    (text, stashes)
}

/// Most runs one operation is cut into (each is diffed on its own).
const MAX_RUNS: usize = 16;
/// Runs of literal blocks shorter than this stay with their neighbours.
const MIN_LITERAL_RUN: usize = 4;

/// The target's blocks cut into runs that bsdiff matches against `source`
/// and runs it does not (less than half of each block found unchanged):
/// those are cheaper as new data, compressed with all of new.dat (a file
/// new in the build, inside a region that also holds changed ones).
fn runs(
    source: &[u8],
    target: &[u8],
) -> (
    Vec<(std::ops::Range<usize>, bool)>,
    romdelta_format::ops::BsdiffPatch,
) {
    let n = target.len().div_ceil(BLOCK as usize);
    // Per block, the bytes bsdiff found in the source unchanged (an add of
    // zero); the rest it must carry.
    let mut same = vec![0u64; n];
    let p = crate::bsdiff::diff(source, target);
    let (mut at, mut d) = (0usize, 0usize);
    for c in &p.controls {
        for &x in &p.diff[d..d + c.add as usize] {
            if x == 0 {
                same[(at / BLOCK as usize).min(n - 1)] += 1;
            }
            at += 1;
        }
        d += c.add as usize;
        at += c.copy as usize;
    }
    let is_lit: Vec<bool> = same.iter().map(|&k| k * 2 < BLOCK).collect();
    let mut out: Vec<(std::ops::Range<usize>, bool)> = Vec::new();
    for (b, &l) in is_lit.iter().enumerate() {
        match out.last_mut() {
            Some((r, k)) if *k == l => r.end = b + 1,
            _ => out.push((b..b + 1, l)),
        }
    }
    // Short literal runs join the runs around them.
    let mut merged: Vec<(std::ops::Range<usize>, bool)> = Vec::new();
    for (r, l) in out {
        let l = l && r.len() >= MIN_LITERAL_RUN;
        match merged.last_mut() {
            Some((m, k)) if *k == l => m.end = r.end,
            _ => merged.push((r, l)),
        }
    }
    if merged.len() > MAX_RUNS {
        merged = vec![(0..n, false)];
    }
    (merged, p)
}

/// Block numbers as extents, consecutive ones joined.
fn extents_of(blocks: &[u64]) -> Vec<Extent> {
    let mut out: Vec<Extent> = Vec::new();
    for &b in blocks {
        match out.last_mut() {
            Some(e) if e.end_block() == b => e.num_blocks += 1,
            _ => out.push(Extent::new(b, 1)),
        }
    }
    out
}

/// Whether `extents` repeat or overlap a block.
fn repeats(extents: &[Extent]) -> bool {
    romdelta_format::blocks_in(&merge_extents(extents.iter().copied()))
        != romdelta_format::blocks_in(extents)
}

/// Most blocks one `move`, `new` or `zero` command writes: an applier
/// holds a command's source and target in memory (16 MiB together).
const MAX_COMMAND_BLOCKS: u64 = 1024;

/// `op` cut into operations of at most [`MAX_COMMAND_BLOCKS`] target
/// blocks, where its kind allows (copies block for block, zeros and new
/// data); other kinds as they are.
fn split_large(op: &romdelta_format::Operation) -> Vec<romdelta_format::Operation> {
    let flat = |e: &[Extent]| -> Vec<u64> {
        e.iter()
            .flat_map(|x| x.start_block..x.end_block())
            .collect()
    };
    let copy = op.kind == OpKind::SourceCopy && op.src_blocks() == op.dst_blocks();
    let whole = op.kind == OpKind::Zero || !op.kind.reads_source();
    if op.dst_blocks() <= MAX_COMMAND_BLOCKS || !(copy || whole) {
        return vec![op.clone()];
    }
    let (dst, src) = (flat(&op.dst_extents), flat(&op.src_extents));
    dst.chunks(MAX_COMMAND_BLOCKS as usize)
        .enumerate()
        .map(|(i, d)| {
            let mut o = op.clone();
            o.dst_extents = extents_of(d);
            if copy {
                let at = i * MAX_COMMAND_BLOCKS as usize;
                o.src_extents = extents_of(&src[at..at + d.len()]);
            }
            o
        })
        .collect()
}

/// One command an operation becomes, before its patch has an offset.
enum Piece {
    Zero(RangeSet),
    New(Vec<Extent>),
    /// The whole line, and the blocks it writes.
    Move(String, u64),
    /// The patch, the line after its offset and length, the blocks.
    Patch {
        data: Vec<u8>,
        rest: String,
        blocks: u64,
    },
}

/// The commands of one operation: `src` is the source it reads (its text
/// form `text`, stashes named), empty for none.
fn encode(
    old: &Partition,
    new: &Partition,
    op: &romdelta_format::Operation,
    src: &[Extent],
    text: &str,
    level: i32,
    bsdf2_patches: bool,
) -> Result<Vec<Piece>, DiffError> {
    let dst = ranges(&op.dst_extents);
    if op.kind == OpKind::Zero {
        return Ok(vec![Piece::Zero(dst)]);
    }
    if src.is_empty() {
        return Ok(vec![Piece::New(op.dst_extents.clone())]);
    }
    let target = read(new, &op.dst_extents);
    let source = read(old, src);
    if op.kind == OpKind::SourceCopy && source == target {
        return Ok(vec![Piece::Move(
            format!("move {} {} {text}", sha1_hex(&target), dst.render()),
            dst.blocks(),
        )]);
    }
    let src_hash = sha1_hex(&source);
    let blocks: Vec<u64> = op
        .dst_extents
        .iter()
        .flat_map(|e| e.start_block..e.end_block())
        .collect();
    let (runs, whole) = runs(&source, &target);
    let single = runs.len() == 1;
    let mut out = Vec::new();
    for (run, literal) in runs {
        let ext = extents_of(&blocks[run.clone()]);
        let bytes = &target[(run.start as u64 * BLOCK) as usize..(run.end as u64 * BLOCK) as usize];
        if literal {
            out.push(Piece::New(ext));
            continue;
        }
        let mut patch = Vec::new();
        romdelta_format::bsdiff40::diff(&source, bytes, &mut patch)
            .map_err(|e| invalid(format!("bsdiff: {e}")))?;
        let own = if single {
            bsdiff40(&whole, bytes.len() as u64)
        } else {
            bsdiff40(&crate::bsdiff::diff(&source, bytes), bytes.len() as u64)
        };
        if own.len() < patch.len() {
            patch = own;
        }
        if bsdf2_patches {
            if let Some(p) = bsdf2(&patch) {
                patch = p;
            }
        }
        // New data costs about what zstd makes of it.
        let as_new =
            zstd::bulk::compress(bytes, level.clamp(1, 19)).map_or(bytes.len(), |c| c.len());
        if patch.len() >= as_new {
            out.push(Piece::New(ext));
            continue;
        }
        let dst = ranges(&ext);
        out.push(Piece::Patch {
            rest: format!("{src_hash} {} {} {text}", sha1_hex(bytes), dst.render()),
            blocks: dst.blocks(),
            data: patch,
        });
    }
    Ok(out)
}

/// The list of one partition updated from `old` by `update`'s in-place
/// operations.
fn incremental(
    w: &mut Writer,
    old: &Partition,
    new: &Partition,
    update: &romdelta_format::PartitionUpdate,
    opts: &DiffOptions,
) -> Result<(), DiffError> {
    let (level, bsdf2_patches) = (opts.level, opts.bsdf2);
    let old_blocks = old.size().div_ceil(BLOCK);
    let new_blocks = new.size().div_ceil(BLOCK);
    for (stage, ops) in stage_ranges(update).into_iter().enumerate() {
        let mut stash = BlockSet::new();
        for e in stage_stash(update, stage) {
            stash.insert(e);
        }
        // Each operation's source, and the stashes it needs.
        let mut planned = Vec::new();
        let mut stashes: Vec<(String, Vec<Extent>)> = Vec::new();
        let mut ids = HashSet::new();
        let pieces: Vec<romdelta_format::Operation> = update.operations[ops]
            .iter()
            .flat_map(split_large)
            .collect();
        for op in &pieces {
            let reads = op.kind.reads_source() && !op.src_extents.is_empty();
            let src = if op.kind == OpKind::SourceCopy && !repeats(&op.src_extents) {
                op.src_extents.clone()
            } else if reads {
                merge_extents(op.src_extents.iter().copied())
            } else {
                Vec::new()
            };
            let (text, need) = if src.is_empty() {
                (String::new(), Vec::new())
            } else {
                source_text(old, &src, &stash)
            };
            for s in need {
                if ids.insert(s.0.clone()) {
                    stashes.push(s);
                }
            }
            planned.push((op, src, text));
        }
        for (id, run) in &stashes {
            w.push("stash", format!("stash {id} {}", ranges(run).render()), 0);
            w.stashed += romdelta_format::blocks_in(run);
        }
        w.max_stashed = w.max_stashed.max(w.stashed);
        w.max_entries = w.max_entries.max(stashes.len() as u64);
        // Operations are encoded in parallel, written in order.
        let encoded: Vec<Vec<Piece>> = planned
            .par_iter()
            .map(|(op, src, text)| encode(old, new, op, src, text, level, bsdf2_patches))
            .collect::<Result<_, _>>()?;
        for piece in encoded.into_iter().flatten() {
            match piece {
                Piece::Zero(r) => w.push("zero", format!("zero {}", r.render()), r.blocks()),
                Piece::New(ext) => w.new_blocks(new, &ext),
                Piece::Move(line, blocks) => w.push("move", line, blocks),
                Piece::Patch { data, rest, blocks } => {
                    let offset = w.patch.len();
                    w.patch.extend_from_slice(&data);
                    w.push(
                        "bsdiff",
                        format!("bsdiff {offset} {} {rest}", data.len()),
                        blocks,
                    );
                }
            }
        }
        for (id, run) in &stashes {
            w.push("free", format!("free {id}"), 0);
            w.stashed -= romdelta_format::blocks_in(run);
        }
    }
    // Blocks of the old image past the new one's end are erased.
    if old_blocks > new_blocks {
        let r = RangeSet(vec![(new_blocks, old_blocks)]);
        w.push("erase", format!("erase {}", r.render()), 0);
    }
    Ok(())
}

/// `patch` (BSDIFF40: three bzip2 streams) as BSDF2 with its streams
/// brotli-compressed, as AOSP's bspatch reads it (Android 9 and later).
fn bsdf2(patch: &[u8]) -> Option<Vec<u8>> {
    use std::io::Read as _;
    let h = romdelta_android::payload::ops::BsdiffHeader::decode(patch).ok()?;
    let body = &patch[32..];
    let (c, rest) = body.split_at(h.ctrl_len as usize);
    let (d, e) = rest.split_at(h.diff_len as usize);
    let mut out = b"BSDF2\x02\x02\x02".to_vec();
    let mut streams = Vec::new();
    for s in [c, d, e] {
        let mut raw = Vec::new();
        bzip2::read::BzDecoder::new(s).read_to_end(&mut raw).ok()?;
        streams.push(brotli(&raw));
    }
    let off = |v: u64| v.to_le_bytes();
    out.extend(off(streams[0].len() as u64));
    out.extend(off(streams[1].len() as u64));
    out.extend(off(h.new_size));
    for s in streams {
        out.extend(s);
    }
    Some(out)
}

/// `p` written as BSDIFF40: the header, then the control triples (8-byte
/// sign-and-magnitude integers), the diff and the extra bytes, each one
/// bzip2 stream (level 9), as Colin Percival's bsdiff writes them.
fn bsdiff40(p: &romdelta_format::ops::BsdiffPatch, new_size: u64) -> Vec<u8> {
    let offt = |v: i64| {
        let m = v.unsigned_abs();
        (if v < 0 { m | 1 << 63 } else { m }).to_le_bytes()
    };
    let bz = romdelta_android::payload::ops::encode_bz2;
    let mut ctrl = Vec::with_capacity(p.controls.len() * 24);
    for c in &p.controls {
        ctrl.extend(offt(c.add as i64));
        ctrl.extend(offt(c.copy as i64));
        ctrl.extend(offt(c.seek));
    }
    let (c, d, e) = (bz(&ctrl), bz(&p.diff), bz(&p.extra));
    let mut out = b"BSDIFF40".to_vec();
    out.extend(offt(c.len() as i64));
    out.extend(offt(d.len() as i64));
    out.extend(offt(new_size as i64));
    out.extend(c);
    out.extend(d);
    out.extend(e);
    out
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut c = brotli::CompressorWriter::new(&mut out, 1 << 16, BROTLI_QUALITY, BROTLI_LGWIN);
        c.write_all(data).expect("writing to memory");
    }
    out
}

/// The updater script: per partition, `block_image_update` as releasetools
/// writes it, after a check of the source blocks an incremental reads.
fn updater_script(parts: &[(String, Option<(RangeSet, String)>)]) -> String {
    let mut s = String::new();
    for (name, check) in parts {
        let dev = format!("/dev/block/bootdevice/by-name/{name}");
        let files = format!(
            "package_extract_file(\"{name}.transfer.list\"), \"{name}.new.dat.br\", \"{name}.patch.dat\""
        );
        if let Some((r, sha1)) = check {
            s.push_str(&format!(
                "if (range_sha1(\"{dev}\", \"{}\") == \"{sha1}\" || block_image_verify(\"{dev}\", {files})) then\n  ui_print(\"Verified {name} image...\");\nelse\n  abort(\"E2001: {name} partition fails to verify (not the build this update was made from).\");\nendif;\n",
                r.render()
            ));
        }
        s.push_str(&format!(
            "ui_print(\"Patching {name} image...\");\nblock_image_update(\"{dev}\", {files}) ||\n  abort(\"E1001: Failed to update {name} image.\");\n"
        ));
    }
    s
}

/// Writes the block OTA of `target` (from `source`, or full) to `out`: a
/// directory (created; never over existing files), or a zip when `out`
/// ends in `.zip`.
pub fn write_block_ota(
    source: Option<&Rom>,
    target: &Rom,
    opts: &DiffOptions,
    out: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<BlockOtaSummary, DiffError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| DiffError::Io { path: p, source }
    };
    // The in-place plan, through romdelta's own generator.
    let manifest = match source {
        Some(_) => {
            let tmp = tempfile::NamedTempFile::new_in(parent_of(out)).map_err(io(out))?;
            let mut o = opts.clone();
            o.in_place = true;
            crate::write_package(source, target, &o, tmp.path(), progress)?;
            let bytes = std::fs::read(tmp.path()).map_err(io(tmp.path()))?;
            Some(
                Package::parse(&bytes)
                    .map_err(|e| invalid(format!("the in-place plan: {e}")))?
                    .manifest,
            )
        }
        None => None,
    };
    let mut files: Vec<(String, Vec<u8>, bool)> = Vec::new();
    let mut summary = BlockOtaSummary {
        partitions: Vec::new(),
        package_bytes: 0,
    };
    let mut script = Vec::new();
    for t in &target.partitions {
        let old = source.and_then(|s| s.partitions.iter().find(|p| p.name == t.name));
        let update = manifest
            .as_ref()
            .and_then(|m| m.partitions.iter().find(|p| p.name == t.name));
        let mut w = Writer::new();
        let mut check = None;
        match (old, update) {
            (Some(old), Some(u)) if u.old.is_some() => {
                incremental(&mut w, old, t, u, opts)?;
                // The source blocks the list reads, and their SHA-1.
                let mut read = Vec::new();
                for op in &u.operations {
                    if op.kind.reads_source() {
                        read.extend(op.src_extents.iter().copied());
                    }
                }
                let read = merge_extents(read);
                if !read.is_empty() {
                    check = Some((ranges(&read), sha1_hex(&crate::blockota::read(old, &read))));
                }
            }
            (Some(old), None) if old.bytes() == t.bytes() => continue,
            _ => w.full(t),
        }
        let text = w.text();
        let br = brotli(&w.new_data);
        let name = &t.name;
        summary.package_bytes += (text.len() + br.len() + w.patch.len()) as u64;
        summary.partitions.push(PartitionOtaSummary {
            name: name.clone(),
            full: check.is_none() && update.is_none_or(|u| u.old.is_none()),
            commands: w.counts.clone(),
            list_bytes: text.len() as u64,
            new_data_bytes: br.len() as u64,
            patch_bytes: w.patch.len() as u64,
            max_stash_blocks: w.max_stashed,
        });
        files.push((format!("{name}.transfer.list"), text.into_bytes(), true));
        files.push((format!("{name}.new.dat.br"), br, false));
        files.push((format!("{name}.patch.dat"), w.patch, false));
        script.push((name.clone(), check));
    }
    let is_zip = out.extension().is_some_and(|e| e == "zip");
    if is_zip {
        let tmp = tempfile::NamedTempFile::new_in(parent_of(out)).map_err(io(out))?;
        let mut z = zip::ZipWriter::new(tmp.as_file());
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .last_modified_time(zip::DateTime::default());
        let deflated = stored.compression_method(zip::CompressionMethod::Deflated);
        let zerr = |e: zip::result::ZipError| invalid(format!("zip: {e}"));
        for (name, bytes, deflate) in &files {
            z.start_file(name.as_str(), if *deflate { deflated } else { stored })
                .map_err(zerr)?;
            z.write_all(bytes).map_err(io(out))?;
        }
        z.start_file("META-INF/com/google/android/updater-script", deflated)
            .map_err(zerr)?;
        z.write_all(updater_script(&script).as_bytes())
            .map_err(io(out))?;
        z.finish().map_err(zerr)?;
        tmp.as_file().sync_all().map_err(io(out))?;
        tmp.persist_noclobber(out).map_err(|e| DiffError::Io {
            path: out.to_path_buf(),
            source: e.error,
        })?;
    } else {
        std::fs::create_dir_all(out).map_err(io(out))?;
        for (name, bytes, _) in &files {
            let p = out.join(name);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&p)
                .map_err(io(&p))?;
            f.write_all(bytes).map_err(io(&p))?;
            f.sync_all().map_err(io(&p))?;
        }
    }
    Ok(summary)
}
