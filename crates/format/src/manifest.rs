//! The manifest: build identity and, per partition, the operations that
//! turn its old image into its new one.

use crate::limits::*;
use crate::{blocks_in, Digest, Extent, FormatError, Reader, Writer, BLOCK_SIZE};
use serde::Serialize;

/// Whether a package needs the old build to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageKind {
    /// Incremental: reads the exact source build.
    Delta,
    /// Full: writes every partition from the package alone.
    Full,
}

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OpKind {
    /// Fill the destination with zeros; no data, no source.
    Zero,
    /// Copy source blocks to the destination, in extent order.
    SourceCopy,
    /// Data is one zstd frame of the destination bytes.
    Replace,
    /// Data is a bsdiff patch (control/diff/extra, zstd-compressed) against the source bytes.
    SourceBsdiff,
    /// Data is one zstd frame compressed with the source bytes as reference prefix.
    SourceZstd,
    /// Data is a bsdiff patch whose diff stream is stored as zero runs and
    /// literal bytes (each part zstd-compressed). Since format version 3.
    SourceBsdiffSparse,
    /// Data rebuilds compressed clusters: it names source clusters to
    /// decompress, an inner patch of their decompressed bytes and how each
    /// new cluster is compressed again, bit for bit ([`crate::recompress`]).
    /// Since format version 4.
    SourceRecompress,
    /// Data rebuilds one xz stream (a kernel's payload): the source's
    /// stream is decompressed, an inner patch turns it into the new
    /// stream's decompressed bytes, which are compressed again bit for bit
    /// ([`crate::xz_rebuild`]). Since format version 4.
    SourceXzRebuild,
    /// Data is an inner patch between the source and destination bytes
    /// with their tables of sorted fixed-stride fields (ELF relocation
    /// offsets) delta-coded ([`crate::fielddelta`]). Since format version 4.
    SourceFieldDelta,
    /// Data rebuilds a file's deflate streams (gzip members, zip entries,
    /// zlib streams): they are decompressed, an inner patch turns the
    /// expanded source into the expanded destination, whose streams are
    /// compressed again bit for bit ([`crate::deflate_rebuild`]). Since
    /// format version 5.
    SourceDeflateRebuild,
    /// Data is an inner patch from the source to destination bytes whose
    /// relative branch and call displacements were rewritten as the source
    /// and an alignment predict them ([`crate::branchdelta`]). Since format
    /// version 5.
    SourceBranchDelta,
    /// Data rebuilds one lz4 stream (a legacy `lz4 -l` kernel or ramdisk,
    /// or an lz4 frame) from its decompressed bytes and an inner patch of
    /// them ([`crate::lz4_rebuild`]). Since format version 5.
    SourceLz4Rebuild,
    /// Data rebuilds one zstd frame (a `.zst` file) from its decompressed
    /// bytes and an inner patch of them ([`crate::zstd_rebuild`]). Since
    /// format version 6.
    SourceZstdRebuild,
}

impl OpKind {
    /// All kinds, in wire order.
    pub const ALL: [OpKind; 13] = [
        OpKind::Zero,
        OpKind::SourceCopy,
        OpKind::Replace,
        OpKind::SourceBsdiff,
        OpKind::SourceZstd,
        OpKind::SourceBsdiffSparse,
        OpKind::SourceRecompress,
        OpKind::SourceXzRebuild,
        OpKind::SourceFieldDelta,
        OpKind::SourceDeflateRebuild,
        OpKind::SourceBranchDelta,
        OpKind::SourceLz4Rebuild,
        OpKind::SourceZstdRebuild,
    ];

    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            OpKind::Zero => 0,
            OpKind::SourceCopy => 1,
            OpKind::Replace => 2,
            OpKind::SourceBsdiff => 3,
            OpKind::SourceZstd => 4,
            OpKind::SourceBsdiffSparse => 5,
            OpKind::SourceRecompress => 6,
            OpKind::SourceXzRebuild => 7,
            OpKind::SourceFieldDelta => 8,
            OpKind::SourceDeflateRebuild => 9,
            OpKind::SourceBranchDelta => 10,
            OpKind::SourceLz4Rebuild => 11,
            OpKind::SourceZstdRebuild => 12,
        }
    }

    /// The kind for a wire code.
    pub fn from_code(code: u8) -> Result<Self, FormatError> {
        OpKind::ALL
            .into_iter()
            .find(|k| k.code() == code)
            .ok_or_else(|| FormatError::invalid("operation kind", format!("unknown code {code}")))
    }

    /// The name used in messages and JSON.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Zero => "ZERO",
            OpKind::SourceCopy => "SOURCE_COPY",
            OpKind::Replace => "REPLACE",
            OpKind::SourceBsdiff => "SOURCE_BSDIFF",
            OpKind::SourceZstd => "SOURCE_ZSTD",
            OpKind::SourceBsdiffSparse => "SOURCE_BSDIFF_SPARSE",
            OpKind::SourceRecompress => "SOURCE_RECOMPRESS",
            OpKind::SourceXzRebuild => "SOURCE_XZ_REBUILD",
            OpKind::SourceFieldDelta => "SOURCE_FIELD_DELTA",
            OpKind::SourceDeflateRebuild => "SOURCE_DEFLATE_REBUILD",
            OpKind::SourceBranchDelta => "SOURCE_BRANCH_DELTA",
            OpKind::SourceLz4Rebuild => "SOURCE_LZ4_REBUILD",
            OpKind::SourceZstdRebuild => "SOURCE_ZSTD_REBUILD",
        }
    }

    /// Whether the operation reads source blocks.
    pub fn reads_source(self) -> bool {
        matches!(
            self,
            OpKind::SourceCopy
                | OpKind::SourceBsdiff
                | OpKind::SourceZstd
                | OpKind::SourceBsdiffSparse
                | OpKind::SourceRecompress
                | OpKind::SourceXzRebuild
                | OpKind::SourceFieldDelta
                | OpKind::SourceDeflateRebuild
                | OpKind::SourceBranchDelta
                | OpKind::SourceLz4Rebuild
                | OpKind::SourceZstdRebuild
        )
    }

    /// Whether the operation carries data in the data section.
    pub fn has_data(self) -> bool {
        matches!(
            self,
            OpKind::Replace
                | OpKind::SourceBsdiff
                | OpKind::SourceZstd
                | OpKind::SourceBsdiffSparse
                | OpKind::SourceRecompress
                | OpKind::SourceXzRebuild
                | OpKind::SourceFieldDelta
                | OpKind::SourceDeflateRebuild
                | OpKind::SourceBranchDelta
                | OpKind::SourceLz4Rebuild
                | OpKind::SourceZstdRebuild
        )
    }
}

impl std::fmt::Display for OpKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The fewest bytes a valid operation takes: kind, two extent counts and
/// one destination extent of two one-byte varints.
const MIN_OPERATION_LEN: u64 = 5;

/// One step of a partition update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Operation {
    /// What it does.
    pub kind: OpKind,
    /// Source blocks it reads, in order (empty unless `kind.reads_source()`).
    pub src_extents: Vec<Extent>,
    /// Destination blocks it writes, in order; pairwise disjoint within a partition.
    pub dst_extents: Vec<Extent>,
    /// Offset of its data within the data section.
    pub data_offset: u64,
    /// Length of its data (0 unless `kind.has_data()`).
    pub data_length: u64,
    /// SHA-256 of its data (unused and all-zero when it has none).
    #[serde(serialize_with = "ser_digest")]
    pub data_sha256: Digest,
    /// SHA-256 of the source bytes it reads, concatenated in extent order
    /// (unused and all-zero when it reads none).
    #[serde(serialize_with = "ser_digest")]
    pub src_sha256: Digest,
}

impl Operation {
    /// Blocks written.
    pub fn dst_blocks(&self) -> u64 {
        blocks_in(&self.dst_extents)
    }
    /// Blocks read.
    pub fn src_blocks(&self) -> u64 {
        blocks_in(&self.src_extents)
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FormatError> {
        let kind = OpKind::from_code(r.u8("operation kind")?)?;
        let src_extents = Extent::decode_list(r, "source extent count")?;
        let dst_extents = Extent::decode_list(r, "destination extent count")?;
        let (mut data_offset, mut data_length, mut data_sha256) = (0, 0, [0; 32]);
        if kind.has_data() {
            data_offset = r.varint("data offset")?;
            data_length = r.varint("data length")?;
            data_sha256 = r.digest("data hash")?;
        }
        let mut src_sha256 = [0; 32];
        if kind.reads_source() {
            src_sha256 = r.digest("source hash")?;
        }
        let op = Operation {
            kind,
            src_extents,
            dst_extents,
            data_offset,
            data_length,
            data_sha256,
            src_sha256,
        };
        op.check_shape()?;
        Ok(op)
    }

    /// Structural rules that hold for every operation of a kind, whatever the partition.
    fn check_shape(&self) -> Result<(), FormatError> {
        let bad = |d: &str| {
            Err(FormatError::invalid(
                "operation",
                format!("{}: {d}", self.kind),
            ))
        };
        let dst = self.dst_blocks();
        let src = self.src_blocks();
        if dst == 0 {
            return bad("no destination blocks");
        }
        if self.kind.reads_source() != (src > 0) {
            return bad(if src > 0 {
                "has source extents but reads no source"
            } else {
                "reads source but has no source extents"
            });
        }
        match self.kind {
            OpKind::Zero | OpKind::SourceCopy => {
                if dst > MAX_COPY_BLOCKS {
                    return bad("too many destination blocks");
                }
                if self.kind == OpKind::SourceCopy && src != dst {
                    return bad("source and destination block counts differ");
                }
            }
            _ => {
                if dst > MAX_OP_DST_BLOCKS {
                    return bad("too many destination blocks");
                }
                if src > MAX_OP_SRC_BLOCKS {
                    return bad("too many source blocks");
                }
                if self.data_length == 0 {
                    return bad("no data");
                }
                if self.data_length > max_data_len(dst) {
                    return bad("more data than any encoding of its destination needs");
                }
            }
        }
        Ok(())
    }

    fn encode(&self, w: &mut Writer) {
        w.u8(self.kind.code());
        w.varint(self.src_extents.len() as u64);
        self.src_extents.iter().for_each(|e| e.encode(w));
        w.varint(self.dst_extents.len() as u64);
        self.dst_extents.iter().for_each(|e| e.encode(w));
        if self.kind.has_data() {
            w.varint(self.data_offset);
            w.varint(self.data_length);
            w.bytes(&self.data_sha256);
        }
        if self.kind.reads_source() {
            w.bytes(&self.src_sha256);
        }
    }
}

/// The most data an operation writing `dst_blocks` blocks may carry: a
/// little above zstd's worst-case bound for that many bytes, so that REPLACE
/// always fits and a reader of a stream never buffers more than this.
pub fn max_data_len(dst_blocks: u64) -> u64 {
    let n = dst_blocks * BLOCK_SIZE;
    n + n / 128 + 1024
}

/// Size and hash of a partition image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PartitionInfo {
    /// Size in bytes (need not be a multiple of the block size).
    pub size: u64,
    /// SHA-256 of exactly `size` bytes.
    #[serde(serialize_with = "ser_digest")]
    pub sha256: Digest,
}

impl PartitionInfo {
    fn decode(r: &mut Reader<'_>) -> Result<Self, FormatError> {
        Ok(PartitionInfo {
            size: r.varint_max("partition size", MAX_PARTITION_SIZE)?,
            sha256: r.digest("partition hash")?,
        })
    }
    fn encode(&self, w: &mut Writer) {
        w.varint(self.size);
        w.bytes(&self.sha256);
    }
    /// Number of blocks, counting a final partial block.
    pub fn blocks(&self) -> u64 {
        self.size.div_ceil(BLOCK_SIZE)
    }
}

/// How one partition goes from its old image to its new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionUpdate {
    /// Partition name (`system`, `vendor`, `boot`, ...).
    pub name: String,
    /// The source image this update reads, if any (absent in full packages
    /// and for partitions new in the target).
    pub old: Option<PartitionInfo>,
    /// The image the operations produce.
    pub new: PartitionInfo,
    /// Operations, in the order their data is stored.
    pub operations: Vec<Operation>,
    /// In-place packages only: the operations, in order, form consecutive
    /// stages of `stages[i]` operations each (see [`crate::inplace`]).
    /// Empty in A/B packages.
    pub stages: Vec<u64>,
    /// The operations that read another partition of the source build, by
    /// index, in increasing order (since format version 5; see
    /// [`crate::crosspart`]). Every other operation reads `old`.
    pub source_reads: Vec<crate::crosspart::SourceRead>,
}

/// A partition present in the source build and absent from the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemovedPartition {
    /// Partition name.
    pub name: String,
    /// The image that is no longer part of the build.
    pub old: PartitionInfo,
}

/// The identity of a build.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct BuildInfo {
    /// Device codename.
    pub device: String,
    /// Region (CN, Global, EEA, ...).
    pub region: String,
    /// Channel (stable, developer, beta).
    pub channel: String,
    /// Version as the vendor writes it.
    pub version: String,
    /// Build fingerprint.
    pub fingerprint: String,
    /// Security patch level (YYYY-MM-DD).
    pub security_patch: String,
    /// Build time, seconds since the Unix epoch.
    pub timestamp: u64,
}

impl BuildInfo {
    fn decode(r: &mut Reader<'_>) -> Result<Self, FormatError> {
        Ok(BuildInfo {
            device: r.string("device", MAX_STRING_LEN)?,
            region: r.string("region", MAX_STRING_LEN)?,
            channel: r.string("channel", MAX_STRING_LEN)?,
            version: r.string("version", MAX_STRING_LEN)?,
            fingerprint: r.string("fingerprint", MAX_STRING_LEN)?,
            security_patch: r.string("security patch", MAX_STRING_LEN)?,
            timestamp: r.varint("timestamp")?,
        })
    }
    fn encode(&self, w: &mut Writer) {
        for s in [
            &self.device,
            &self.region,
            &self.channel,
            &self.version,
            &self.fingerprint,
            &self.security_patch,
        ] {
            w.string(s);
        }
        w.varint(self.timestamp);
    }
}

/// Everything an applier needs to check and run a package, except the data itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Manifest {
    /// Delta or full.
    pub kind: PackageKind,
    /// How the package installs: `false` for A/B (a new image is written
    /// beside the old one; operations run in any order), `true` for in
    /// place (the new image is written over the old one, stage by stage;
    /// see [`crate::inplace`]).
    pub in_place: bool,
    /// The build the package produces.
    pub target_build: BuildInfo,
    /// The build a delta package applies to.
    pub source_build: Option<BuildInfo>,
    /// Length of the data section; every operation's data lies within it.
    pub data_len: u64,
    /// Partition updates, in the order their data is stored.
    pub partitions: Vec<PartitionUpdate>,
    /// Partitions of the source build that the target no longer has.
    pub removed: Vec<RemovedPartition>,
    /// The codec libraries the package's content-aware operations were
    /// checked with (since format version 4; empty when none is used). An
    /// applier with another version of one refuses the package before
    /// writing.
    pub codecs: Vec<Codec>,
    /// The most memory, in MiB, one of the package's operations needs at
    /// apply, when that is more than the default bound an applier keeps
    /// (64 MiB); 0 when no operation needs more (since format version 4).
    /// An applier allowed less refuses the package before writing.
    pub apply_memory_mib: u64,
}

/// A codec library and the version content-aware operations need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Codec {
    /// Which library.
    pub library: CodecLibrary,
    /// Its version number, as the library gives it.
    pub version: u32,
}

/// A codec library content-aware operations compress with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CodecLibrary {
    /// liblz4 (`LZ4_versionNumber`: major × 10000 + minor × 100 + release).
    Liblz4,
    /// liblzma (`lzma_version_number`: major × 10000000 + minor × 10000 +
    /// patch × 10 + stability).
    Liblzma,
    /// zlib (`zlibVersion` as major × 1000000 + minor × 10000 + revision ×
    /// 100 + subrevision). Since format version 5.
    Zlib,
    /// libzstd (`ZSTD_versionNumber`: major × 10000 + minor × 100 +
    /// release). Since format version 6.
    Libzstd,
}

impl Codec {
    /// The liblz4 this build compresses with.
    pub fn liblz4() -> Self {
        Codec {
            library: CodecLibrary::Liblz4,
            version: romdelta_codecs::lz4::library_version(),
        }
    }

    /// The liblzma this build compresses with.
    pub fn liblzma() -> Self {
        Codec {
            library: CodecLibrary::Liblzma,
            version: romdelta_codecs::xz::library_version(),
        }
    }

    /// The zlib this build compresses with.
    pub fn zlib() -> Self {
        Codec {
            library: CodecLibrary::Zlib,
            version: romdelta_codecs::deflate::library_version(),
        }
    }

    /// The libzstd this build compresses with.
    pub fn libzstd() -> Self {
        Codec {
            library: CodecLibrary::Libzstd,
            version: romdelta_codecs::zstd_frame::library_version(),
        }
    }

    /// The version this build has of the same library.
    pub fn built_in(&self) -> Self {
        match self.library {
            CodecLibrary::Liblz4 => Codec::liblz4(),
            CodecLibrary::Liblzma => Codec::liblzma(),
            CodecLibrary::Zlib => Codec::zlib(),
            CodecLibrary::Libzstd => Codec::libzstd(),
        }
    }

    /// `major.minor.release`.
    pub fn version_name(&self) -> String {
        let v = self.version;
        match self.library {
            CodecLibrary::Liblz4 => format!("{}.{}.{}", v / 10000, v / 100 % 100, v % 100),
            CodecLibrary::Liblzma => romdelta_codecs::xz::version_name(v),
            CodecLibrary::Zlib => romdelta_codecs::deflate::version_name(v),
            CodecLibrary::Libzstd => romdelta_codecs::zstd_frame::version_name(v),
        }
    }

    /// The library's name.
    pub fn name(&self) -> &'static str {
        match self.library {
            CodecLibrary::Liblz4 => "liblz4",
            CodecLibrary::Liblzma => "liblzma",
            CodecLibrary::Zlib => "zlib",
            CodecLibrary::Libzstd => "libzstd",
        }
    }

    fn code(&self) -> u8 {
        match self.library {
            CodecLibrary::Liblz4 => 1,
            CodecLibrary::Liblzma => 2,
            CodecLibrary::Zlib => 3,
            CodecLibrary::Libzstd => 4,
        }
    }
}

/// Checks a partition name: 1 to 64 bytes of `[A-Za-z0-9_.-]`, not starting
/// with `.` or `-`, so that it can never name another directory or a hidden
/// or option-like file.
pub fn check_partition_name(name: &str) -> Result<(), FormatError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.';
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(FormatError::invalid(
            "partition name",
            format!("{name:?}: must be 1 to {MAX_NAME_LEN} bytes"),
        ));
    }
    if !name.chars().all(ok_char) || name.starts_with('.') || name.starts_with('-') {
        return Err(FormatError::invalid(
            "partition name",
            format!("{name:?}: only letters, digits, '_', '-' and '.' (not first) are allowed"),
        ));
    }
    Ok(())
}

impl Manifest {
    /// The format version this build writes this manifest in, the oldest
    /// that can express it: 6 when an
    /// operation is SOURCE_ZSTD_REBUILD or SOURCE_RECOMPRESS (whose header
    /// version 2 leaves rebuilt clusters' lengths implicit) or libzstd is
    /// named; 5 when an
    /// operation is SOURCE_DEFLATE_REBUILD, SOURCE_BRANCH_DELTA or
    /// SOURCE_LZ4_REBUILD, reads another source partition, or zlib is
    /// named; 4 when one is SOURCE_RECOMPRESS, SOURCE_XZ_REBUILD or
    /// SOURCE_FIELD_DELTA (or codecs or an apply memory are named), 3 when
    /// one is SOURCE_BSDIFF_SPARSE, else 2.
    pub fn format_version(&self) -> u32 {
        self.version_needed(true)
    }

    /// The oldest format version whose readers know every operation kind
    /// and codec of this manifest: [`Manifest::format_version`], except that
    /// SOURCE_RECOMPRESS counts from version 4, where it came (its header
    /// version 1, in the packages of versions 4 and 5, is still read). A
    /// reader refuses a package whose header names an older version.
    pub fn oldest_readable_version(&self) -> u32 {
        self.version_needed(false)
    }

    /// The version needed; SOURCE_RECOMPRESS as this build writes it
    /// (header version 2: format 6) with `written_here`.
    fn version_needed(&self, written_here: bool) -> u32 {
        let uses = |k: OpKind| {
            self.partitions
                .iter()
                .flat_map(|p| &p.operations)
                .any(|o| o.kind == k)
        };
        if uses(OpKind::SourceZstdRebuild)
            || (written_here && uses(OpKind::SourceRecompress))
            || self
                .codecs
                .iter()
                .any(|c| c.library == CodecLibrary::Libzstd)
        {
            6
        } else if uses(OpKind::SourceDeflateRebuild)
            || uses(OpKind::SourceBranchDelta)
            || uses(OpKind::SourceLz4Rebuild)
            || self.codecs.iter().any(|c| c.library == CodecLibrary::Zlib)
            || self.partitions.iter().any(|p| !p.source_reads.is_empty())
        {
            5
        } else if uses(OpKind::SourceRecompress)
            || uses(OpKind::SourceFieldDelta)
            || uses(OpKind::SourceXzRebuild)
            || !self.codecs.is_empty()
            || self.apply_memory_mib != 0
        {
            4
        } else if uses(OpKind::SourceBsdiffSparse) {
            3
        } else {
            crate::OLDEST_FORMAT_VERSION
        }
    }

    /// Parses and structurally validates a manifest that must fill `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes);
        let kind = match r.u8("package kind")? {
            0 => PackageKind::Delta,
            1 => PackageKind::Full,
            k => {
                return Err(FormatError::invalid(
                    "package kind",
                    format!("unknown code {k}"),
                ))
            }
        };
        let in_place = match r.u8("install mode")? {
            0 => false,
            1 => true,
            k => {
                return Err(FormatError::invalid(
                    "install mode",
                    format!("unknown code {k} (0 = A/B, 1 = in place)"),
                ))
            }
        };
        let block_size = r.varint("block size")?;
        if block_size != BLOCK_SIZE {
            return Err(FormatError::invalid(
                "block size",
                format!("{block_size} (only {BLOCK_SIZE} is supported)"),
            ));
        }
        let target_build = BuildInfo::decode(&mut r)?;
        let source_build = match r.u8("source build flag")? {
            0 => None,
            1 => Some(BuildInfo::decode(&mut r)?),
            f => return Err(FormatError::invalid("source build flag", format!("{f}"))),
        };
        let data_len = r.varint("data length")?;
        let n = r.count("partition count", 35, MAX_PARTITIONS)?;
        let mut partitions = r.vec_for(n);
        for _ in 0..n {
            let name = r.string("partition name", MAX_NAME_LEN as u64)?;
            check_partition_name(&name)?;
            // Bit 0: an old image; bit 1 (since version 5): a table of
            // reads across partitions follows the operations.
            use crate::crosspart::{FLAG_OLD, FLAG_SOURCE_READS};
            let flags = r.u8("old partition flag")?;
            if flags & !(FLAG_OLD | FLAG_SOURCE_READS) != 0 {
                return Err(FormatError::invalid(
                    "old partition flag",
                    format!("{flags}"),
                ));
            }
            let old = match flags & FLAG_OLD {
                0 => None,
                _ => Some(PartitionInfo::decode(&mut r)?),
            };
            let new = PartitionInfo::decode(&mut r)?;
            let n_ops = r.count("operation count", MIN_OPERATION_LEN, u64::MAX)?;
            let mut operations = r.vec_for(n_ops);
            for _ in 0..n_ops {
                operations.push(Operation::decode(&mut r)?);
            }
            let mut stages: Vec<u64> = Vec::new();
            if in_place {
                let n_stages = r.count("stage count", 1, u64::MAX)?;
                stages = r.vec_for(n_stages);
                for _ in 0..n_stages {
                    stages.push(r.varint("stage operation count")?);
                }
            }
            let source_reads = match flags & FLAG_SOURCE_READS {
                0 => Vec::new(),
                _ => crate::crosspart::decode(&mut r, operations.len())?,
            };
            partitions.push(PartitionUpdate {
                name,
                old,
                new,
                operations,
                stages,
                source_reads,
            });
        }
        let n = r.count("removed partition count", 34, MAX_PARTITIONS)?;
        let mut removed = r.vec_for(n);
        for _ in 0..n {
            let name = r.string("partition name", MAX_NAME_LEN as u64)?;
            check_partition_name(&name)?;
            removed.push(RemovedPartition {
                name,
                old: PartitionInfo::decode(&mut r)?,
            });
        }
        // Since format version 4: the codecs, when any is used, then the
        // apply memory, when it is named.
        let mut codecs = Vec::new();
        let mut apply_memory_mib = 0;
        if r.remaining() > 0 {
            let n = r.count("codec count", 5, 16)?;
            for _ in 0..n {
                let library = match r.u8("codec library")? {
                    1 => CodecLibrary::Liblz4,
                    2 => CodecLibrary::Liblzma,
                    3 => CodecLibrary::Zlib,
                    4 => CodecLibrary::Libzstd,
                    c => {
                        return Err(FormatError::invalid(
                            "codec library",
                            format!("unknown code {c}"),
                        ))
                    }
                };
                let version = r.u32_le("codec version")?;
                codecs.push(Codec { library, version });
            }
            if r.remaining() > 0 {
                apply_memory_mib = r.varint_max("apply memory", MAX_APPLY_MEMORY_MIB)?;
                if apply_memory_mib == 0 {
                    return Err(FormatError::invalid(
                        "apply memory",
                        "0 is written by leaving the field out",
                    ));
                }
            } else if n == 0 {
                return Err(FormatError::invalid(
                    "codecs",
                    "no codec and no apply memory: leave the section out",
                ));
            }
        }
        r.finish("manifest")?;
        let m = Manifest {
            kind,
            in_place,
            target_build,
            source_build,
            data_len,
            partitions,
            removed,
            codecs,
            apply_memory_mib,
        };
        m.check()?;
        Ok(m)
    }

    /// Rules that tie the manifest together: unique names, data within the
    /// data section, extents within partitions, destinations disjoint, a
    /// full package that reads no source, and for an in-place package the
    /// stage rules of [`crate::inplace`] (an A/B package has no stages).
    pub fn check(&self) -> Result<(), FormatError> {
        let uses = |k: OpKind| {
            self.partitions
                .iter()
                .flat_map(|p| &p.operations)
                .any(|o| o.kind == k)
        };
        let named = |l: CodecLibrary| self.codecs.iter().filter(|c| c.library == l).count();
        for (kind, library) in [
            (OpKind::SourceRecompress, CodecLibrary::Liblz4),
            (OpKind::SourceXzRebuild, CodecLibrary::Liblzma),
            (OpKind::SourceDeflateRebuild, CodecLibrary::Zlib),
            (OpKind::SourceLz4Rebuild, CodecLibrary::Liblz4),
            (OpKind::SourceZstdRebuild, CodecLibrary::Libzstd),
        ] {
            if named(library) > 1 {
                return Err(FormatError::invalid("codecs", "a library is named twice"));
            }
            if uses(kind) && named(library) == 0 {
                return Err(FormatError::invalid(
                    "codecs",
                    format!(
                        "{kind} operations, but no {} version",
                        Codec {
                            library,
                            version: 0
                        }
                        .name()
                    ),
                ));
            }
        }
        if self.apply_memory_mib > MAX_APPLY_MEMORY_MIB {
            return Err(FormatError::TooLarge {
                what: "apply memory",
                value: self.apply_memory_mib,
                limit: MAX_APPLY_MEMORY_MIB,
            });
        }
        let mut names = std::collections::BTreeSet::new();
        for name in self
            .partitions
            .iter()
            .map(|p| &p.name)
            .chain(self.removed.iter().map(|p| &p.name))
        {
            check_partition_name(name)?;
            if !names.insert(name.as_str()) {
                return Err(FormatError::invalid(
                    "partition name",
                    format!("{name:?} appears twice"),
                ));
            }
        }
        if self.kind == PackageKind::Full
            && (self.source_build.is_some() || !self.removed.is_empty())
        {
            return Err(FormatError::invalid(
                "manifest",
                "a full package names no source build and removes no partition",
            ));
        }
        // The data section is exactly the operations' data, in manifest
        // order: an applier can stream it, and every byte is under a hash.
        let mut next = 0u64;
        let source = |name: &str| {
            let of_update = self.partitions.iter().find(|p| p.name == name);
            of_update.map_or_else(
                || self.removed.iter().find(|r| r.name == name).map(|r| r.old),
                |p| p.old,
            )
        };
        for p in &self.partitions {
            crate::crosspart::check(p, self.in_place, &source)?;
            p.check(self.kind, self.data_len)?;
            crate::inplace::check_partition(p, self.in_place)?;
            for (i, op) in p.operations.iter().enumerate() {
                if op.kind.has_data() {
                    if op.data_offset != next {
                        return Err(FormatError::invalid(
                            "operation",
                            format!(
                                "partition {}, operation {i}: data at offset {} where {next} was expected (data must follow operation order)",
                                p.name, op.data_offset
                            ),
                        ));
                    }
                    next += op.data_length;
                }
            }
        }
        if next != self.data_len {
            return Err(FormatError::invalid(
                "manifest",
                format!(
                    "operations use {next} bytes of the {} byte data section",
                    self.data_len
                ),
            ));
        }
        Ok(())
    }

    /// Encodes the manifest.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(match self.kind {
            PackageKind::Delta => 0,
            PackageKind::Full => 1,
        });
        w.u8(u8::from(self.in_place));
        w.varint(BLOCK_SIZE);
        self.target_build.encode(&mut w);
        match &self.source_build {
            None => w.u8(0),
            Some(b) => {
                w.u8(1);
                b.encode(&mut w);
            }
        }
        w.varint(self.data_len);
        w.varint(self.partitions.len() as u64);
        for p in &self.partitions {
            w.string(&p.name);
            let reads = if p.source_reads.is_empty() {
                0
            } else {
                crate::crosspart::FLAG_SOURCE_READS
            };
            match &p.old {
                None => w.u8(reads),
                Some(o) => {
                    w.u8(crate::crosspart::FLAG_OLD | reads);
                    o.encode(&mut w);
                }
            }
            p.new.encode(&mut w);
            w.varint(p.operations.len() as u64);
            p.operations.iter().for_each(|op| op.encode(&mut w));
            if self.in_place {
                w.varint(p.stages.len() as u64);
                p.stages.iter().for_each(|&n| w.varint(n));
            }
            if !p.source_reads.is_empty() {
                crate::crosspart::encode(&p.source_reads, &mut w);
            }
        }
        w.varint(self.removed.len() as u64);
        for r in &self.removed {
            w.string(&r.name);
            r.old.encode(&mut w);
        }
        if !self.codecs.is_empty() || self.apply_memory_mib != 0 {
            w.varint(self.codecs.len() as u64);
            for c in &self.codecs {
                w.u8(c.code());
                w.u32_le(c.version);
            }
            if self.apply_memory_mib != 0 {
                w.varint(self.apply_memory_mib);
            }
        }
        w.into_bytes()
    }
}

impl PartitionUpdate {
    fn check(&self, kind: PackageKind, data_len: u64) -> Result<(), FormatError> {
        let name = &self.name;
        let bad = |i: usize, d: String| {
            Err(FormatError::invalid(
                "operation",
                format!("partition {name}, operation {i}: {d}"),
            ))
        };
        let new_blocks = self.new.blocks();
        let old_blocks = self.old.map(|o| o.blocks());
        // Destination extents must be pairwise disjoint: collect and sort them.
        let mut dsts: Vec<(Extent, usize)> = Vec::new();
        for (i, op) in self.operations.iter().enumerate() {
            if op.kind.has_data() && op.data_length == 0 {
                return bad(i, "carries no data".into());
            }
            if op.kind.has_data()
                && op
                    .data_offset
                    .checked_add(op.data_length)
                    .is_none_or(|end| end > data_len)
            {
                return bad(
                    i,
                    format!(
                        "data {}+{} lies past the data section ({data_len} bytes)",
                        op.data_offset, op.data_length
                    ),
                );
            }
            // An operation that reads another source partition is checked
            // against that one ([`crate::crosspart::check`]).
            if op.kind.reads_source() && self.source_of(i).is_none() {
                match old_blocks {
                    None if kind == PackageKind::Full => {
                        return bad(i, format!("{} in a full package", op.kind))
                    }
                    None => return bad(i, format!("{} but the partition has no source", op.kind)),
                    Some(ob) => {
                        if let Some(e) = op.src_extents.iter().find(|e| e.end_block() > ob) {
                            return bad(
                                i,
                                format!("source blocks {e} lie past the source ({ob} blocks)"),
                            );
                        }
                    }
                }
            }
            for e in &op.dst_extents {
                if e.end_block() > new_blocks {
                    return bad(
                        i,
                        format!("destination blocks {e} lie past the target ({new_blocks} blocks)"),
                    );
                }
                dsts.push((*e, i));
            }
        }
        dsts.sort_unstable();
        for w in dsts.windows(2) {
            if w[0].0.end_block() > w[1].0.start_block {
                return Err(FormatError::invalid(
                    "operation",
                    format!(
                        "partition {name}: operations {} and {} both write blocks {} and {}",
                        w[0].1, w[1].1, w[0].0, w[1].0
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn ser_digest<S: serde::Serializer>(d: &Digest, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A delta manifest with one SOURCE_XZ_REBUILD operation.
    fn xz_manifest() -> Manifest {
        let info = PartitionInfo {
            size: 8 * BLOCK_SIZE,
            sha256: [3; 32],
        };
        Manifest {
            kind: PackageKind::Delta,
            in_place: false,
            target_build: BuildInfo::default(),
            source_build: Some(BuildInfo::default()),
            data_len: 100,
            partitions: vec![PartitionUpdate {
                name: "boot".into(),
                old: Some(info),
                new: info,
                operations: vec![Operation {
                    kind: OpKind::SourceXzRebuild,
                    src_extents: vec![Extent::new(0, 4)],
                    dst_extents: vec![Extent::new(2, 4)],
                    data_offset: 0,
                    data_length: 100,
                    data_sha256: [1; 32],
                    src_sha256: [2; 32],
                }],
                stages: vec![],
                source_reads: vec![],
            }],
            removed: vec![],
            codecs: vec![Codec::liblzma()],
            apply_memory_mib: 470,
        }
    }

    #[test]
    fn apply_memory_and_liblzma_round_trip() {
        let m = xz_manifest();
        assert_eq!(m.format_version(), 4);
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
        // An apply memory without codecs, and none at all.
        let mut m2 = m.clone();
        m2.partitions[0].operations[0].kind = OpKind::SourceZstd;
        m2.codecs.clear();
        assert_eq!(Manifest::decode(&m2.encode()).unwrap(), m2);
        m2.apply_memory_mib = 0;
        assert_eq!(m2.format_version(), 2);
        assert_eq!(Manifest::decode(&m2.encode()).unwrap(), m2);
        assert_eq!(Codec::liblzma().version_name(), "5.8.4");
    }

    /// Packages of versions 4 and 5 with SOURCE_RECOMPRESS operations (their
    /// header version 1) are still read; this build writes version 6.
    #[test]
    fn recompress_is_written_as_version_6_and_read_from_version_4() {
        let mut m = xz_manifest();
        m.partitions[0].operations[0].kind = OpKind::SourceRecompress;
        (m.codecs, m.apply_memory_mib) = (vec![Codec::liblz4()], 0);
        assert_eq!(m.format_version(), 6);
        assert_eq!(m.oldest_readable_version(), 4);
        for version in [4, 5, 6] {
            let prefix = crate::Package::encode_prefix_bytes(version, &m.encode(), m.data_len, &[]);
            let mut bytes = prefix;
            bytes.resize(bytes.len() + m.data_len as usize, 0);
            let p = crate::Package::parse(&bytes).unwrap();
            assert_eq!((p.header.version, p.manifest), (version, m.clone()));
        }
        let bytes = crate::Package::encode_prefix_bytes(3, &m.encode(), m.data_len, &[]);
        assert!(crate::Package::parse(&bytes).is_err());
    }

    #[test]
    fn a_branch_delta_operation_needs_version_5() {
        let mut m = xz_manifest();
        m.partitions[0].operations[0].kind = OpKind::SourceBranchDelta;
        (m.codecs, m.apply_memory_mib) = (vec![], 0);
        assert_eq!(m.format_version(), 5);
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
        assert_eq!(OpKind::from_code(10).unwrap(), OpKind::SourceBranchDelta);
    }

    #[test]
    fn hostile_tails_are_refused() {
        let m = xz_manifest();
        let mut no_codec = m.clone();
        no_codec.codecs.clear();
        let e = no_codec.check().unwrap_err().to_string();
        assert!(e.contains("no liblzma version"), "{e}");
        let mut huge = m.clone();
        huge.apply_memory_mib = MAX_APPLY_MEMORY_MIB + 1;
        assert!(Manifest::decode(&huge.encode()).is_err());
        // An explicit 0, and an empty codec list with nothing after it.
        let mut b = m.encode();
        *b.last_mut().unwrap() = 0;
        let b = [&b[..b.len() - 2], &[0u8][..]].concat();
        let e = Manifest::decode(&b).unwrap_err().to_string();
        assert!(e.contains("apply memory") || e.contains("leave"), "{e}");
        let mut plain = m.clone();
        plain.partitions[0].operations[0].kind = OpKind::SourceZstd;
        plain.codecs.clear();
        plain.apply_memory_mib = 0;
        let mut b = plain.encode();
        b.push(0);
        let e = Manifest::decode(&b).unwrap_err().to_string();
        assert!(e.contains("leave the section out"), "{e}");
        // Every truncation of the tail fails, except the one that drops the
        // whole (optional) apply memory: the header's checksum and the
        // signatures over the manifest's bytes are what catch that.
        let b = m.encode();
        for cut in b.len() - 8..b.len() {
            if let Ok(t) = Manifest::decode(&b[..cut]) {
                assert!(cut == b.len() - 2 && t.apply_memory_mib == 0, "cut {cut}");
            }
        }
    }
}
