//! romdelta package generation.
//!
//! [`write_package`] turns a target ROM (and, for an incremental package, a
//! source ROM) into a package file:
//! 1. every source block is hashed ([`blocks::SourceIndex`]);
//! 2. target blocks that are zero become `ZERO`, blocks equal to any source
//!    block become `SOURCE_COPY` ([`blocks::classify`]);
//! 3. content-aware operations claim the changed blocks they serve better
//!    than bytes: xz streams of kernels and files, zstd frames of files
//!    ([`stream_rebuild`], planned
//!    on a thread of its own), lz4 streams of boot images
//!    ([`lz4_rebuild`]), compressed EROFS clusters ([`recompress`]), gzip,
//!    zip and zlib containers ([`deflate_rebuild`]), each diffed in its
//!    decompressed form and kept only when the applier's own decode
//!    rebuilds it exactly and it is smaller; files are paired through
//!    [`files`];
//! 4. the remaining changed blocks form regions of bounded size; each region
//!    is encoded with every candidate encoder against the source bytes it most
//!    likely came from, and the smallest result is kept ([`encode`]), machine
//!    code also with its relocations and branch displacements predicted
//!    ([`elf`], [`branch`]);
//! 5. regions are encoded in parallel on the current rayon pool, in batches,
//!    so memory is bounded by the batch, not by the image;
//! 6. the output is deterministic: the same inputs give the same bytes,
//!    whatever the thread count;
//! 7. for an in-place package, each partition's operations are then ordered
//!    into stages ([`inplace`]), and the data section is rebuilt in that order.

pub mod anchors;
pub mod blockota;
pub mod blocks;
pub mod branch;
pub mod bsdiff;
pub mod crosspart;
pub mod deflate_rebuild;
pub mod elf;
pub mod encode;
pub mod files;
pub mod inplace;
pub mod lz4_rebuild;
pub mod newdata;
pub mod payload;
pub mod payload_lz4diff;
pub mod payload_puffdiff;
pub mod recompress;
pub mod stream_rebuild;

use blocks::{BlockClass, SourceIndex};
use encode::{EncodeParams, Region};
use rayon::prelude::*;
use romdelta_format::{
    limits, BuildInfo, Digest, Extent, Manifest, OpKind, Operation, Package, PackageKind,
    PartitionInfo, PartitionUpdate, RemovedPartition, BLOCK_SIZE,
};
use romdelta_rom::{Layout, Partition, Rom};
use sha2::Digest as _;
use std::io::{BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

/// Why a package could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// An I/O error on a path.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The inputs cannot form a package.
    #[error("{0}")]
    Invalid(String),
}

/// Options of generation.
#[derive(Debug, Clone)]
pub struct DiffOptions {
    /// zstd level used by every encoder (1–22).
    pub level: i32,
    /// Most target blocks in one changed region (one operation).
    pub region_blocks: u64,
    /// Source blocks read on each side of the span a candidate alignment
    /// covers (0: the span alone, so the window budget goes to further
    /// alignments instead; on the corpus pair that is 1.2% smaller and a
    /// fifth faster than 64).
    pub margin_blocks: u64,
    /// Most source blocks one region reads.
    pub max_src_blocks: u64,
    /// Fewest source blocks one region reads (when the source has them).
    pub min_src_blocks: u64,
    /// Source blocks a region may read per block it writes.
    pub src_per_dst_block: u64,
    /// Most blocks in one SOURCE_COPY operation.
    pub copy_op_blocks: u64,
    /// Runs of at most this many unchanged blocks between changed blocks
    /// are encoded with them, as part of one region.
    pub gap_blocks: u64,
    /// Regions encoded per batch (bounds memory).
    pub batch_regions: usize,
    /// zstd level of the trial encodings that pick each region's encoder.
    pub trial_level: i32,
    /// Find source windows by content anchors (not only by offset).
    pub anchors: bool,
    /// Source blocks kept around those the bsdiff matcher reads (the rest
    /// of a region's source window is dropped before the final encodes).
    pub trim_slack_blocks: u64,
    /// Candidates whose trial is within this many percent of the best are
    /// encoded at the final level, and the smallest kept.
    pub band_percent: u64,
    /// Keys that sign the manifest (none: an unsigned package).
    pub signing_keys: Vec<romdelta_format::signing::SigningKey>,
    /// The build the package produces.
    pub target_build: BuildInfo,
    /// The build an incremental package applies to.
    pub source_build: BuildInfo,
    /// Write an in-place package (install = 1): operations ordered into
    /// stages so that the new image can be written over the old one.
    pub in_place: bool,
    /// In place: most blocks a stage may stash (capped at
    /// [`limits::MAX_STAGE_STASH_BLOCKS`]); dependency cycles that need more
    /// are broken by turning operations into REPLACE.
    pub max_stash_blocks: u64,
    /// Diff the compressed files of EROFS images in their decompressed
    /// form and rebuild their clusters at apply (SOURCE_RECOMPRESS).
    pub recompress: bool,
    /// Try SOURCE_FIELD_DELTA (relocation tables delta-coded) on changed
    /// regions that hold ELF relocation tables.
    pub field_delta: bool,
    /// Try SOURCE_BRANCH_DELTA (branch and call displacements predicted
    /// through an alignment) on changed regions that hold x86-64 or
    /// AArch64 code of ELF files.
    pub branch_delta: bool,
    /// Rebuild the deflate streams of changed gzip files, zip archives and
    /// zlib streams from their decompressed bytes (SOURCE_DEFLATE_REBUILD).
    pub deflate: bool,
    /// Most memory (MiB) one operation may need at apply. Above the
    /// applier's default bound (64 MiB) the generator may make operations
    /// that need more (SOURCE_XZ_REBUILD of kernels: about 470 MiB for a
    /// 32 MiB dictionary), and the package records what it needs.
    pub apply_memory_mib: u64,
    /// Let operations read any partition of the source build, not only
    /// their own (format version 5, [`crosspart`]); never in place.
    pub cross_partition: bool,
    /// Try SOURCE_LZ4_REBUILD on the lz4 streams (boot image kernels and
    /// ramdisks, lz4 frames) of changed regions.
    pub lz4_rebuild: bool,
    /// Join an incremental package's REPLACE regions into one operation
    /// (one compression context) where that is smaller ([`newdata`]).
    pub join_new: bool,
    /// The minor version of an incremental payload.bin
    /// ([`payload::write_payload`]): 6 by default; 9 also lets it use
    /// LZ4DIFF_BSDIFF for lz4-compressed EROFS files.
    pub payload_minor_version: u32,
    /// `--format block-ota`: write patches as BSDF2 with brotli streams
    /// (AOSP's bspatch reads them from Android 9 on) instead of BSDIFF40.
    pub bsdf2: bool,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            level: 19,
            region_blocks: 512,
            margin_blocks: 0,
            max_src_blocks: 2048,
            min_src_blocks: 128,
            src_per_dst_block: 4,
            copy_op_blocks: 4096,
            batch_regions: 64,
            gap_blocks: 64,
            trial_level: 7,
            anchors: true,
            trim_slack_blocks: 2,
            band_percent: 10,
            signing_keys: Vec::new(),
            target_build: BuildInfo::default(),
            source_build: BuildInfo::default(),
            in_place: false,
            max_stash_blocks: 16384,
            recompress: true,
            field_delta: true,
            branch_delta: true,
            deflate: true,
            apply_memory_mib: 64,
            cross_partition: true,
            lz4_rebuild: true,
            join_new: true,
            payload_minor_version: romdelta_android::payload::DELTA_MINOR_VERSION,
            bsdf2: false,
        }
    }
}

/// What was written, per partition and operation kind.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DiffSummary {
    /// Total package bytes.
    pub package_bytes: u64,
    /// Total target bytes.
    pub target_bytes: u64,
    /// Per partition: name, operation count and data bytes per kind.
    pub partitions: Vec<PartitionSummary>,
}

/// The operations of one kind in a partition.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KindSummary {
    /// The kind.
    pub kind: OpKind,
    /// How many operations.
    pub operations: u64,
    /// Blocks they write.
    pub blocks: u64,
    /// Bytes of data they carry.
    pub data_bytes: u64,
}

/// Per-partition statistics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PartitionSummary {
    /// Partition name.
    pub name: String,
    /// New size.
    pub size: u64,
    /// Per operation kind present (the operations as written).
    pub by_kind: Vec<KindSummary>,
    /// In-place packages only: stages and what the ordering did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_place: Option<inplace::InPlaceStats>,
    /// The most memory (MiB) one of its SOURCE_XZ_REBUILD operations needs
    /// at apply (0: none made).
    #[serde(skip_serializing_if = "is_zero")]
    pub apply_memory_mib: u64,
    /// Operations that read another partition of the source build.
    #[serde(skip_serializing_if = "is_zero")]
    pub cross_partition_ops: u64,
    /// SOURCE_RECOMPRESS operations whose inner patch rebuilds an xz stream
    /// inside the clusters.
    #[serde(skip_serializing_if = "is_zero")]
    pub nested_xz_ops: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> DiffError + '_ {
    move |source| DiffError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Bytes a whole-image pass maps at a time before releasing them.
pub(crate) const PASS_PIECE: usize = 64 << 20;

/// SHA-256 of a whole partition image.
pub fn partition_info(p: &Partition) -> PartitionInfo {
    // SHA-256 is sequential; pieces only bound what stays resident.
    let mut h = sha2::Sha256::new();
    p.for_each_chunk(PASS_PIECE, |_, piece| h.update(piece));
    PartitionInfo {
        size: p.size(),
        sha256: h.finalize().into(),
    }
}

/// Pairs each target partition with its source partition (by name; two
/// single images pair with each other whatever their names).
pub(crate) fn pair<'a>(
    source: Option<&'a Rom>,
    target: &'a Rom,
) -> Vec<(&'a Partition, Option<&'a Partition>)> {
    target
        .partitions
        .iter()
        .map(|t| {
            let s = source.and_then(|s| match (s.layout, target.layout) {
                (Layout::Image, Layout::Image) => s.partitions.first(),
                _ => s.get(&t.name),
            });
            (t, s)
        })
        .collect()
}

/// Writes a package to `out`: incremental when `source` is given, full otherwise.
/// `progress` is called with the number of target bytes finished so far.
/// The file appears at `out` only once complete and synced.
pub fn write_package(
    source: Option<&Rom>,
    target: &Rom,
    opts: &DiffOptions,
    out: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<DiffSummary, DiffError> {
    if let Some(p) = source
        .into_iter()
        .chain([target])
        .flat_map(|r| &r.partitions)
        .find(|p| !p.is_mapped())
    {
        return Err(DiffError::Invalid(format!(
            "{}: generation needs images opened with Rom::open (mapped)",
            p.path.display()
        )));
    }
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut data_file = tempfile::tempfile_in(&dir).map_err(io_err(&dir))?;
    let mut data = BufWriter::with_capacity(1 << 20, &mut data_file);
    let mut data_len = 0u64;
    let mut partitions = Vec::new();
    let mut summaries = Vec::new();
    let mut done = 0u64;
    let others = source
        .filter(|s| opts.cross_partition && !opts.in_place && s.layout != Layout::Image)
        .map(|s| crosspart::Others::new(&s.partitions));
    for (t, s) in pair(source, target) {
        let (update, summary) = diff_partition(
            s,
            t,
            others.as_ref(),
            opts,
            &mut data,
            &mut data_len,
            &mut |n| {
                done += n;
                progress(done)
            },
        )
        .map_err(io_err(&dir))?;
        partitions.push(update);
        summaries.push(summary);
    }
    data.flush().map_err(io_err(&dir))?;
    drop(data);
    // In place, operations were reordered (and some re-encoded): the data
    // section must follow the new order, so note where each operation's
    // data lies in the scratch file and give it its place in the package.
    let mut pieces: Vec<(u64, u64)> = Vec::new();
    if opts.in_place {
        let mut next = 0u64;
        for op in partitions
            .iter_mut()
            .flat_map(|p: &mut PartitionUpdate| &mut p.operations)
            .filter(|op| op.kind.has_data())
        {
            pieces.push((op.data_offset, op.data_length));
            op.data_offset = next;
            next += op.data_length;
        }
        data_len = next;
    }
    let removed = match source {
        Some(s) if !(s.layout == Layout::Image && target.layout == Layout::Image) => s
            .partitions
            .iter()
            .filter(|p| target.get(&p.name).is_none())
            .map(|p| RemovedPartition {
                name: p.name.clone(),
                old: partition_info(p),
            })
            .collect(),
        _ => Vec::new(),
    };
    let manifest = Manifest {
        kind: if source.is_some() {
            PackageKind::Delta
        } else {
            PackageKind::Full
        },
        in_place: opts.in_place,
        target_build: opts.target_build.clone(),
        source_build: source.map(|_| opts.source_build.clone()),
        data_len,
        codecs: Vec::new(),
        apply_memory_mib: 0,
        partitions,
        removed,
    };
    let mut manifest = manifest;
    if manifest
        .partitions
        .iter()
        .flat_map(|p| &p.operations)
        .any(|o| matches!(o.kind, OpKind::SourceRecompress | OpKind::SourceLz4Rebuild))
    {
        manifest.codecs.push(romdelta_format::Codec::liblz4());
    }
    if manifest
        .partitions
        .iter()
        .flat_map(|p| &p.operations)
        .any(|o| o.kind == OpKind::SourceXzRebuild)
        || summaries.iter().any(|s| s.nested_xz_ops > 0)
    {
        manifest.codecs.push(romdelta_format::Codec::liblzma());
    }
    if manifest
        .partitions
        .iter()
        .flat_map(|p| &p.operations)
        .any(|o| o.kind == OpKind::SourceZstdRebuild)
    {
        manifest.codecs.push(romdelta_format::Codec::libzstd());
    }
    if manifest
        .partitions
        .iter()
        .flat_map(|p| &p.operations)
        .any(|o| o.kind == OpKind::SourceDeflateRebuild)
    {
        manifest.codecs.push(romdelta_format::Codec::zlib());
    }
    // The most any operation needs, recorded when above the default bound.
    let need = summaries
        .iter()
        .map(|s: &PartitionSummary| s.apply_memory_mib)
        .max()
        .unwrap_or(0);
    if need > 64 {
        manifest.apply_memory_mib = need;
    }
    manifest
        .check()
        .map_err(|e| DiffError::Invalid(format!("generated manifest is invalid: {e}")))?;
    let manifest_bytes = manifest.encode();
    let signatures: Vec<_> = opts
        .signing_keys
        .iter()
        .map(|k| romdelta_format::signing::sign(&manifest_bytes, k))
        .collect();
    let prefix = Package::encode_prefix_bytes(
        manifest.format_version(),
        &manifest_bytes,
        manifest.data_len,
        &signatures,
    );
    let mut pkg = tempfile::Builder::new()
        .prefix(".romdelta-")
        .suffix(".partial")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(&dir)
        .map_err(io_err(&dir))?;
    pkg.write_all(&prefix).map_err(io_err(out))?;
    if opts.in_place {
        let mut w = BufWriter::with_capacity(1 << 20, pkg.as_file_mut());
        copy_pieces(&data_file, &pieces, &mut w).map_err(io_err(out))?;
        w.flush().map_err(io_err(out))?;
    } else {
        data_file
            .seek(std::io::SeekFrom::Start(0))
            .map_err(io_err(&dir))?;
        std::io::copy(&mut data_file, pkg.as_file_mut()).map_err(io_err(out))?;
    }
    pkg.as_file().sync_all().map_err(io_err(out))?;
    pkg.persist(out).map_err(|e| DiffError::Io {
        path: out.to_path_buf(),
        source: e.error,
    })?;
    Ok(DiffSummary {
        package_bytes: prefix.len() as u64 + data_len,
        target_bytes: target.total_size(),
        partitions: summaries,
    })
}

/// Copies the byte ranges `(offset, length)` of `file`, in order, to `out`.
fn copy_pieces(
    file: &std::fs::File,
    pieces: &[(u64, u64)],
    out: &mut impl Write,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt as _;
    let mut buf = vec![0u8; 1 << 20];
    for &(offset, len) in pieces {
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            file.read_exact_at(&mut buf[..n], offset + done)?;
            out.write_all(&buf[..n])?;
            done += n as u64;
        }
    }
    Ok(())
}

/// `classes` with every run of at most `gap` unchanged blocks that lies
/// between changed blocks marked changed too: nearby edits then form one
/// region (one operation, one compressed stream) instead of many small ones,
/// and the few unchanged blocks between them cost next to nothing to encode.
fn absorb_gaps(classes: &[BlockClass], gap: u64) -> Vec<BlockClass> {
    let mut out = classes.to_vec();
    let n = classes.len();
    let mut i = 0;
    while i < n {
        if classes[i] == BlockClass::Changed {
            i += 1;
            continue;
        }
        let start = i;
        while i < n && classes[i] != BlockClass::Changed {
            i += 1;
        }
        let claimed = classes[start..i].contains(&BlockClass::Claimed);
        if start > 0 && i < n && (i - start) as u64 <= gap && !claimed {
            out[start..i].fill(BlockClass::Changed);
        }
    }
    out
}

/// Splits `classes` into ZERO and SOURCE_COPY operations and changed regions.
fn plan_blocks(
    classes: &[BlockClass],
    src: Option<&Partition>,
    opts: &DiffOptions,
) -> (Vec<Operation>, Vec<Region>) {
    let mut ops = Vec::new();
    let mut regions = Vec::new();
    let mut copy_src: Vec<Extent> = Vec::new();
    let mut copy_dst: Vec<Extent> = Vec::new();
    let flush_copy =
        |src_e: &mut Vec<Extent>, dst_e: &mut Vec<Extent>, ops: &mut Vec<Operation>| {
            if dst_e.is_empty() {
                return;
            }
            let mut h = sha2::Sha256::new();
            src.expect("copies need a source")
                .for_each_piece(src_e, |b| h.update(b))
                .expect("reads of a mapped image do not fail");
            ops.push(Operation {
                kind: OpKind::SourceCopy,
                src_extents: std::mem::take(src_e),
                dst_extents: std::mem::take(dst_e),
                data_offset: 0,
                data_length: 0,
                data_sha256: [0; 32],
                src_sha256: h.finalize().into(),
            });
        };
    let n = classes.len() as u64;
    let mut i = 0u64;
    while i < n {
        let c = classes[i as usize];
        let mut j = i + 1;
        match c {
            BlockClass::Zero => {
                while j < n
                    && classes[j as usize] == BlockClass::Zero
                    && j - i < limits::MAX_COPY_BLOCKS
                {
                    j += 1;
                }
                ops.push(Operation {
                    kind: OpKind::Zero,
                    src_extents: Vec::new(),
                    dst_extents: vec![Extent::new(i, j - i)],
                    data_offset: 0,
                    data_length: 0,
                    data_sha256: [0; 32],
                    src_sha256: [0; 32],
                });
            }
            BlockClass::Copy(s) => {
                let room = opts.copy_op_blocks - romdelta_format::blocks_in(&copy_dst);
                while j < n && j - i < room && classes[j as usize] == BlockClass::Copy(s + (j - i))
                {
                    j += 1;
                }
                copy_src.push(Extent::new(s, j - i));
                copy_dst.push(Extent::new(i, j - i));
                if romdelta_format::blocks_in(&copy_dst) >= opts.copy_op_blocks
                    || copy_dst.len() >= 1024
                {
                    flush_copy(&mut copy_src, &mut copy_dst, &mut ops);
                }
            }
            BlockClass::Claimed => {}
            BlockClass::Changed => {
                while j < n
                    && classes[j as usize] == BlockClass::Changed
                    && j - i < opts.region_blocks
                {
                    j += 1;
                }
                regions.push(Region {
                    start: i,
                    len: j - i,
                });
            }
        }
        i = j;
    }
    flush_copy(&mut copy_src, &mut copy_dst, &mut ops);
    (ops, regions)
}

/// Where a partition's operations and their data go as they are made:
/// data is written in the order of the operations that carry it.
struct Output<'a, W: Write> {
    data: &'a mut W,
    data_len: &'a mut u64,
    progress: &'a mut dyn FnMut(u64),
    operations: Vec<Operation>,
    /// In place: what each region would cost as a REPLACE, by its first
    /// block.
    replace_lens: std::collections::HashMap<u64, u64>,
    /// The most any operation needs at apply, in MiB (0: the default).
    apply_memory_mib: u64,
    /// The operations that read another source partition ([`crosspart`]).
    source_reads: Vec<romdelta_format::crosspart::SourceRead>,
    /// SOURCE_RECOMPRESS operations whose inner patch is an xz rebuild.
    nested_xz: u64,
}

impl<W: Write> Output<'_, W> {
    /// Writes `data` and appends the operation that carries it.
    fn push(
        &mut self,
        kind: OpKind,
        src_extents: Vec<Extent>,
        dst_extents: Vec<Extent>,
        data: &[u8],
        src_sha256: Digest,
    ) -> std::io::Result<()> {
        self.data.write_all(data)?;
        self.operations.push(Operation {
            kind,
            src_extents,
            dst_extents,
            data_offset: *self.data_len,
            data_length: data.len() as u64,
            data_sha256: romdelta_format::sha256(data),
            src_sha256,
        });
        *self.data_len += data.len() as u64;
        Ok(())
    }
}

/// The byte-level encoding of the blocks no content-aware operation claims.
struct Regions<'a, 'o> {
    src: Option<&'a Partition>,
    dst: &'a Partition,
    anchors: Option<&'a anchors::AnchorIndex>,
    tables: Option<&'a elf::FieldTables>,
    code: Option<&'a elf::Code>,
    params: &'a EncodeParams,
    opts: &'a DiffOptions,
    /// The other source partitions and the blocks copied from them.
    others: Option<(&'a crosspart::Others<'o>, &'a crosspart::ForeignCopies)>,
}

impl Regions<'_, '_> {
    /// Appends the ZERO and SOURCE_COPY operations of `classes` to `out`
    /// and returns the changed regions left to encode.
    fn plan<W: Write>(&self, classes: &[BlockClass], out: &mut Output<'_, W>) -> Vec<Region> {
        let planned = absorb_gaps(classes, self.opts.gap_blocks);
        let (operations, regions) = plan_blocks(&planned, self.src, self.opts);
        out.operations.extend(operations);
        regions
    }

    /// Encodes `regions` in parallel batches, in order, into `out`.
    fn encode<W: Write>(
        &self,
        regions: &[Region],
        classes: &[BlockClass],
        out: &mut Output<'_, W>,
    ) -> std::io::Result<()> {
        let (src, dst) = (self.src, self.dst);
        // New data against new data ([`newdata`]): incremental, not in place.
        let join_new = self.opts.join_new && !self.opts.in_place && src.is_some();
        let mut group = newdata::Group::default();
        for batch in regions.chunks(self.opts.batch_regions.max(1)) {
            let encoded: Vec<_> = batch
                .par_iter()
                .map(|r| match self.others {
                    Some((o, copies)) => o.encode_region(
                        src,
                        self.anchors,
                        dst,
                        classes,
                        copies,
                        self.tables,
                        self.code,
                        *r,
                        self.params,
                    ),
                    None => (
                        encode::encode_region(
                            src,
                            dst,
                            classes,
                            self.anchors,
                            self.tables,
                            self.code,
                            *r,
                            self.params,
                        ),
                        None,
                    ),
                })
                .collect();
            for (r, (e, from)) in batch.iter().zip(encoded) {
                if join_new && e.kind == OpKind::Replace && from.is_none() {
                    group.add(*r, e.data, e.replace_len, dst, self.params, out)?;
                    continue;
                }
                if let Some(from) = from {
                    let i = out.operations.len();
                    out.source_reads.push(crosspart::source_read(i, from));
                }
                if self.opts.in_place {
                    out.replace_lens.insert(r.start, e.replace_len);
                }
                let dst_extents = vec![Extent::new(r.start, r.len)];
                out.push(e.kind, e.src_extents, dst_extents, &e.data, e.src_sha256)?;
                (out.progress)((r.len * BLOCK_SIZE).min(dst.size()));
            }
            // What the next batch needs is mapped again on access.
            dst.release_all();
            if let Some(s) = src {
                s.release_all();
            }
        }
        group.flush(dst, self.params, out)
    }
}

fn diff_partition(
    src: Option<&Partition>,
    dst: &Partition,
    others: Option<&crosspart::Others<'_>>,
    opts: &DiffOptions,
    data: &mut impl Write,
    data_len: &mut u64,
    progress: &mut dyn FnMut(u64),
) -> std::io::Result<(PartitionUpdate, PartitionSummary)> {
    let (index, (new_info, old_info)) = rayon::join(
        || src.map(SourceIndex::build),
        || rayon::join(|| partition_info(dst), || src.map(partition_info)),
    );
    let mut classes = blocks::classify_with(dst, index.as_ref(), opts.in_place);
    drop(index);
    // Blocks equal to a block of another source partition (after the own one).
    let copies = others.map(|o| o.claim_copies(src, dst, &mut classes, opts.gap_blocks));
    let params = EncodeParams::from_options(opts);
    // Content-aware operations first: the blocks they write are claimed.
    // xz streams that may be rebuilt (kernels; xz files whose encoder fits
    // the applier's memory) are claimed before the clusters (an EROFS
    // image may store a kernel as plain clusters, which this serves
    // better); their rebuild, a minute of single-threaded work for a
    // kernel, is planned on a thread of its own beside everything else,
    // and a stream that makes no operation is encoded byte-level at the end.
    let xz_pairs = match src {
        // Not in place: the stage planner has no estimate of these.
        Some(s) if !opts.in_place && classes.contains(&BlockClass::Changed) => {
            stream_rebuild::pairs(s, dst, &classes, opts.apply_memory_mib)
        }
        _ => Vec::new(),
    };
    let before_xz = (!xz_pairs.is_empty()).then(|| classes.clone());
    for e in xz_pairs.iter().flat_map(stream_rebuild::Pair::dst_extents) {
        classes[e.start_block as usize..e.end_block() as usize].fill(BlockClass::Claimed);
    }
    let xz_blocks: u64 = xz_pairs
        .iter()
        .map(|k| romdelta_format::blocks_in(k.dst_extents()))
        .sum();
    let mut out = Output {
        data,
        data_len,
        progress,
        operations: Vec::new(),
        replace_lens: std::collections::HashMap::new(),
        apply_memory_mib: 0,
        source_reads: Vec::new(),
        nested_xz: 0,
    };
    std::thread::scope(|scope| {
        let rebuilding = scope.spawn(|| match src {
            Some(s) => stream_rebuild::plan(s, dst, &xz_pairs, &params, opts.apply_memory_mib),
            None => Vec::new(),
        });
        // lz4 streams (boot image kernels and ramdisks) rebuilt from their
        // decompressed bytes, their blocks claimed before the clusters'.
        let lz4_rebuilt = match src {
            Some(s)
                if opts.lz4_rebuild && !opts.in_place && classes.contains(&BlockClass::Changed) =>
            {
                lz4_rebuild::plan(s, dst, &classes, &params, opts.apply_memory_mib)
            }
            _ => Vec::new(),
        };
        for e in lz4_rebuilt.iter().flat_map(|r| &r.dst_extents) {
            classes[e.start_block as usize..e.end_block() as usize].fill(BlockClass::Claimed);
        }
        let recompressed = match src {
            Some(s) if opts.recompress && classes.contains(&BlockClass::Changed) => {
                recompress::plan(s, dst, &classes, &params, opts.apply_memory_mib)
            }
            _ => Vec::new(),
        };
        for e in recompressed.iter().flat_map(|r| &r.dst_extents) {
            classes[e.start_block as usize..e.end_block() as usize].fill(BlockClass::Claimed);
        }
        // Files holding deflate streams (gzip, zip, zlib), rebuilt from
        // their decompressed bytes. Not in place, as the xz rebuilds.
        let deflated = match src {
            Some(s) if opts.deflate && !opts.in_place && classes.contains(&BlockClass::Changed) => {
                deflate_rebuild::plan(s, dst, &classes, &params, opts.apply_memory_mib)
            }
            _ => Vec::new(),
        };
        for e in deflated.iter().flat_map(|r| &r.dst_extents) {
            classes[e.start_block as usize..e.end_block() as usize].fill(BlockClass::Claimed);
        }
        dst.release_all();
        if let Some(s) = src {
            s.release_all();
        }
        // Built when some block may be encoded byte-level (an xz stream's too).
        let byte_level = classes.contains(&BlockClass::Changed) || !xz_pairs.is_empty();
        let anchors = match src {
            Some(s) if opts.anchors && byte_level => {
                Some(anchors::AnchorIndex::build(s.bytes(), &|off, len| {
                    s.release(off, len)
                }))
            }
            _ => None,
        };
        let tables = match src {
            Some(s) if opts.field_delta && byte_level => elf::FieldTables::find(s, dst),
            _ => None,
        };
        let code = match src {
            Some(s) if opts.branch_delta && byte_level => {
                Some(elf::Code::find(s)).filter(|c| !c.is_empty())
            }
            _ => None,
        };
        let regions = Regions {
            src,
            dst,
            anchors: anchors.as_ref(),
            tables: tables.as_ref(),
            code: code.as_ref(),
            params: &params,
            opts,
            others: others.zip(copies.as_ref()),
        };
        let changed = regions.plan(&classes, &mut out);
        if let Some((o, c)) = regions.others {
            for (op, from) in o.copy_operations(c) {
                let i = out.operations.len();
                out.source_reads.push(crosspart::source_read(i, from));
                out.operations.push(op);
            }
        }
        let pending: u64 = changed.iter().map(|r| r.len).sum::<u64>() + xz_blocks;
        (out.progress)(dst.size().saturating_sub(pending * BLOCK_SIZE));
        for r in recompressed {
            out.apply_memory_mib = out.apply_memory_mib.max(r.apply_memory_mib);
            out.nested_xz += u64::from(r.apply_memory_mib > 0);
            out.push(
                OpKind::SourceRecompress,
                r.src_extents,
                r.dst_extents,
                &r.data,
                r.src_sha256,
            )?;
        }
        for r in lz4_rebuilt {
            out.apply_memory_mib = out.apply_memory_mib.max(r.apply_memory_mib);
            out.push(
                OpKind::SourceLz4Rebuild,
                r.src_extents,
                r.dst_extents,
                &r.data,
                r.src_sha256,
            )?;
        }
        for r in deflated {
            out.apply_memory_mib = out.apply_memory_mib.max(r.apply_memory_mib);
            out.push(
                OpKind::SourceDeflateRebuild,
                r.src_extents,
                r.dst_extents,
                &r.data,
                r.src_sha256,
            )?;
        }
        regions.encode(&changed, &classes, &mut out)?;
        let rebuilt: Vec<Option<stream_rebuild::Planned>> = rebuilding
            .join()
            .expect("the xz rebuild's thread does not panic");
        // A stream that made no operation is encoded byte-level after all:
        // its blocks as they were classified, all else claimed.
        let mut fallback: Option<Vec<BlockClass>> = None;
        for (k, r) in xz_pairs.iter().zip(rebuilt) {
            match r {
                Some(r) => {
                    out.apply_memory_mib = out.apply_memory_mib.max(r.apply_memory_mib);
                    out.push(r.kind, r.src_extents, r.dst_extents, &r.data, r.src_sha256)?;
                    (out.progress)(romdelta_format::blocks_in(k.dst_extents()) * BLOCK_SIZE);
                }
                None => {
                    let before = before_xz.as_ref().expect("kept when there are xz streams");
                    let f =
                        fallback.get_or_insert_with(|| vec![BlockClass::Claimed; classes.len()]);
                    for e in k.dst_extents() {
                        let range = e.start_block as usize..e.end_block() as usize;
                        f[range.clone()].copy_from_slice(&before[range]);
                    }
                }
            }
        }
        if let Some(fallback) = fallback {
            let changed = regions.plan(&fallback, &mut out);
            regions.encode(&changed, &fallback, &mut out)?;
        }
        Ok::<_, std::io::Error>(())
    })?;
    let Output {
        operations,
        replace_lens,
        apply_memory_mib,
        source_reads,
        nested_xz,
        ..
    } = out;
    let (operations, stages, in_place) = if opts.in_place {
        let o = inplace::order(operations, src, dst, opts, &replace_lens, data, data_len)?;
        (o.operations, o.stages, Some(o.stats))
    } else {
        (operations, Vec::new(), None)
    };
    let mut by_kind: Vec<KindSummary> = Vec::new();
    for k in OpKind::ALL {
        let of_kind = operations.iter().filter(|o| o.kind == k);
        let (n, blocks, bytes) = of_kind.fold((0, 0, 0), |(n, b, d), o| {
            (n + 1, b + o.dst_blocks(), d + o.data_length)
        });
        if n > 0 {
            by_kind.push(KindSummary {
                kind: k,
                operations: n,
                blocks,
                data_bytes: bytes,
            });
        }
    }
    let summary = PartitionSummary {
        name: dst.name.clone(),
        size: dst.size(),
        by_kind,
        in_place,
        apply_memory_mib,
        cross_partition_ops: source_reads.len() as u64,
        nested_xz_ops: nested_xz,
    };
    Ok((
        PartitionUpdate {
            name: dst.name.clone(),
            old: old_info,
            new: new_info,
            operations,
            stages,
            source_reads,
        },
        summary,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use BlockClass::{Changed as C, Copy as K, Zero as Z};

    #[test]
    fn short_gaps_between_changed_blocks_join_the_region() {
        let classes = [K(0), C, K(7), Z, C, Z, Z, Z, C, Z, K(3)];
        // Gaps of at most 2 blocks: the first joins, the 3-block one does
        // not, and the unchanged edges never do.
        assert_eq!(
            absorb_gaps(&classes, 2),
            [K(0), C, C, C, C, Z, Z, Z, C, Z, K(3)]
        );
        assert_eq!(
            absorb_gaps(&classes, 3),
            [K(0), C, C, C, C, C, C, C, C, Z, K(3)]
        );
        assert_eq!(absorb_gaps(&classes, 0), classes);
        assert!(absorb_gaps(&[], 8).is_empty());
    }
}
