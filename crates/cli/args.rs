//! Command-line arguments. The spellings are a contract: scripts call them.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Incremental and full update packages for ROM partition images.
#[derive(Parser, Debug)]
#[command(name = "romdelta", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Print nothing but errors (and what --json asks for).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Progress on stderr: a bar on a terminal (auto), JSON lines, or none.
    #[arg(long, global = true, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

/// How progress is shown.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal (and neither --json nor -q is given).
    Auto,
    /// One JSON object per line on stderr: {"event":"progress",...}.
    Json,
    /// No progress.
    None,
}

/// Options shared by commands that do heavy work.
#[derive(Args, Debug, Clone, Copy)]
pub struct Threads {
    /// Worker threads (default: one per core).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
}

/// Who may sign the packages this command accepts.
#[derive(Args, Debug, Clone)]
pub struct Trust {
    /// A public key whose signature is accepted (repeat for key rotation).
    #[arg(long = "trusted-key", value_name = "PUB")]
    pub trusted_keys: Vec<PathBuf>,
    /// Accept packages without checking their signatures.
    #[arg(long)]
    pub insecure_no_verify: bool,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Write a package: incremental from SOURCE to TARGET, or full with --full.
    ///
    /// SOURCE and TARGET are partition images or directories of NAME.img images.
    Diff {
        /// SOURCE TARGET, or only TARGET with --full.
        #[arg(value_name = "SOURCE TARGET", num_args = 1..=2, required = true)]
        paths: Vec<PathBuf>,
        /// Where to write the package.
        #[arg(short, long, value_name = "PACKAGE")]
        output: PathBuf,
        /// Write a full package (needs no source to apply).
        #[arg(long)]
        full: bool,
        /// Write an in-place package: the new image is written over the old
        /// one, in stages whose order keeps every read ahead of the writes
        /// that would spoil it (for devices with one copy of each partition).
        #[arg(long)]
        in_place: bool,
        /// In place: most MiB one stage may set aside (stash) to break
        /// dependency cycles; cycles that need more are re-encoded from
        /// scratch (REPLACE).
        #[arg(long, value_name = "MIB", requires = "in_place", default_value_t = 64,
              value_parser = clap::value_parser!(u64).range(0..=256))]
        max_stash: u64,
        /// build.prop of the source build (default: SOURCE/build.prop, if any).
        #[arg(long, value_name = "FILE")]
        source_build: Option<PathBuf>,
        /// build.prop of the target build (default: TARGET/build.prop, if any).
        #[arg(long, value_name = "FILE")]
        target_build: Option<PathBuf>,
        /// Sign the package with this private key (repeatable). For --format payload or ota-zip: an RSA (any size) or EC P-256 private key in PEM (PKCS#8, PKCS#1 or SEC1).
        #[arg(long = "key", value_name = "KEY")]
        keys: Vec<PathBuf>,
        /// zstd level of every encoder (1-22).
        #[arg(long, default_value_t = 19, value_parser = clap::value_parser!(i32).range(1..=22))]
        level: i32,
        #[command(flatten)]
        threads: Threads,
        /// Print a JSON summary instead of text.
        #[arg(long)]
        json: bool,
        /// What to write: a romdelta package, an Android payload.bin (with
        /// payload_properties.txt beside it), or a whole A/B OTA zip (full
        /// with --full, else incremental; signed with --key).
        #[arg(long, value_enum, default_value_t = DiffFormat::Romdelta)]
        format: DiffFormat,
        /// For --format ota-zip: allow the target to be older than the
        /// source (the zip then says ota-downgrade=yes).
        #[arg(long)]
        downgrade: bool,
        /// For an incremental --format payload or ota-zip: the payload's
        /// minor version, 6 to 9. At 9 (update_engine of Android 13 and
        /// later) changed lz4-compressed EROFS files become LZ4DIFF_BSDIFF
        /// operations where that is smaller.
        #[arg(long, value_name = "N", default_value_t = 6, value_parser = clap::value_parser!(u32).range(6..=9))]
        minor_version: u32,
        /// For --format block-ota: write patches as BSDF2 with brotli
        /// streams (smaller; recovery's bspatch reads them from Android 9
        /// on) instead of BSDIFF40.
        #[arg(long)]
        bsdf2: bool,
        #[command(flatten)]
        tuning: Tuning,
    },
    /// Apply a package, writing the new build to OUT (a file for an image, a directory for a ROM).
    Apply {
        /// The package, or `-` to read it from standard input in one pass.
        package: PathBuf,
        /// The build the package was made from (needed for incremental packages).
        #[arg(long, value_name = "SOURCE")]
        source: Option<PathBuf>,
        /// Where to write the new build.
        #[arg(short, long, value_name = "OUT", required_unless_present = "in_place")]
        output: Option<PathBuf>,
        /// Update this image (or directory of NAME.img) in place, as a
        /// single-slot device does: needs a package made with `diff
        /// --in-place` (or a full package); resumes after any interruption.
        #[arg(long, value_name = "IMAGE_OR_DIR", conflicts_with_all = ["source", "output", "sparse"])]
        in_place: Option<PathBuf>,
        #[command(flatten)]
        trust: Trust,
        /// build.prop of the installed build (default: SOURCE/build.prop, or
        /// IMAGE_OR_DIR/build.prop in place, if any).
        #[arg(long, value_name = "FILE")]
        installed_build: Option<PathBuf>,
        /// Allow installing a build older than the installed one.
        #[arg(long)]
        allow_downgrade: bool,
        /// Allow a full package to move to another region or channel.
        #[arg(long)]
        allow_line_switch: bool,
        /// Install without comparing the package's build identity with the
        /// installed build (needed when the installed build is unknown and
        /// the package names a device).
        #[arg(long)]
        skip_build_check: bool,
        /// Most memory (MiB) the package's operations may need; a package
        /// made with a larger `diff --apply-memory` is refused before
        /// anything is written.
        #[arg(long, value_name = "MIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
        max_memory: u64,
        /// Write Android sparse images (as img2simg does) instead of raw ones.
        #[arg(long)]
        sparse: bool,
        #[command(flatten)]
        threads: Threads,
        /// Print a JSON report instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show what a package holds: partitions, operations by kind, sizes, hashes.
    Inspect {
        /// The package.
        package: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a package's integrity, and with --source that it applies to that build.
    Verify {
        /// The package.
        package: PathBuf,
        /// The build to check the package's source hashes against.
        #[arg(long, value_name = "SOURCE")]
        source: Option<PathBuf>,
        #[command(flatten)]
        trust: Trust,
        #[command(flatten)]
        threads: Threads,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a BSDIFF40 patch from OLD to NEW, as Debian's `bsdiff` 4.3 does.
    Bsdiff {
        /// The old file.
        old: PathBuf,
        /// The new file.
        new: PathBuf,
        /// Where to write the patch.
        patch: PathBuf,
        /// Print what was done as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Apply a BSDIFF40 patch to OLD, writing NEW, as Debian's `bspatch` 4.3 does.
    Bspatch {
        /// The old file.
        old: PathBuf,
        /// Where to write the new file.
        new: PathBuf,
        /// The patch.
        patch: PathBuf,
        /// Print what was done as JSON.
        #[arg(long)]
        json: bool,
    },
    /// AVB hashtree footers: read one, or add one (data, dm-verity tree, FEC, unsigned vbmeta) as avbtool does.
    Avb {
        /// What to do.
        #[command(subcommand)]
        command: AvbCommand,
    },
    /// Android OTA payload.bin (CrAU v2): inspect, extract, apply.
    ///
    /// PAYLOAD is a payload.bin or an OTA zip holding one. `romdelta diff
    /// --format payload` writes payloads.
    Payload {
        /// What to do with the payload.
        #[command(subcommand)]
        command: PayloadCommand,
    },
    /// Block-based OTAs of non-A/B devices (transfer.list, new.dat[.br|.lzma], patch.dat): inspect, extract, apply in place.
    ///
    /// PACKAGE is a directory or a zip (a recovery ROM, an incremental OTA)
    /// holding NAME.transfer.list per partition.
    Blockota {
        /// What to do with the package.
        #[command(subcommand)]
        command: BlockotaCommand,
    },
    /// A simulated A/B device: install packages the way a recovery does.
    Recovery {
        /// What to do with the device.
        #[command(subcommand)]
        command: RecoveryCommand,
    },
    /// Create or maintain a signed release repository (TUF).
    Repo {
        /// What to do with the repository.
        #[command(subcommand)]
        command: RepoCommand,
    },
    /// Add packages (full, and incrementals from earlier builds) to a
    /// release repository: its line catalogs, targets, snapshot and timestamp.
    Publish {
        /// The packages.
        packages: Vec<PathBuf>,
        /// The repository directory.
        #[arg(long, value_name = "DIR")]
        repo: PathBuf,
        #[command(flatten)]
        online: OnlineKeys,
        #[command(flatten)]
        trust: Trust,
        /// A staged rollout wave, TIME:PERCENT (TIME in seconds since the
        /// epoch or 2027-01-01T00:00:00Z), for the builds these packages
        /// install; repeatable.
        #[arg(long = "wave", value_name = "TIME:PERCENT")]
        waves: Vec<String>,
        /// Print a JSON report instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The TUF client of `recovery update`, with the command line of TUF's
    /// conformance suite (CLIENT-CLI.md): exit 0 on success, 1 on failure.
    TufClient {
        /// The client's trusted metadata directory.
        #[arg(long, value_name = "DIR")]
        metadata_dir: PathBuf,
        /// The repository's metadata URL (refresh, download).
        #[arg(long, value_name = "URL")]
        metadata_url: Option<String>,
        /// The target to download.
        #[arg(long, value_name = "PATH")]
        target_name: Option<String>,
        /// The repository's targets URL.
        #[arg(long, value_name = "URL")]
        target_base_url: Option<String>,
        /// Where downloaded targets are written.
        #[arg(long, value_name = "DIR")]
        target_dir: Option<PathBuf>,
        /// init ROOT | refresh | download.
        #[command(subcommand)]
        command: TufClientCommand,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `romdelta man > romdelta.1`.
    Man,
    /// Make a signing key: KEY (private, mode 0600) and KEY.pub beside it.
    Keygen {
        /// Where to write the private key.
        #[arg(short, long, value_name = "KEY")]
        output: PathBuf,
        /// Print the paths and the public key as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Build two small ROMs, diff, apply and verify them, and print a summary.
    Demo {
        /// Keep the demo files in this directory (default: a temporary one).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Multiply partition sizes (1 = about 40 MiB per build).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
        scale: u16,
        #[command(flatten)]
        threads: Threads,
        /// Print the results as JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Run romdelta and its peers on one pair: a table, JSON and a chart.
    ///
    /// Every tool runs as a child process, one job at a time; see
    /// docs/BENCHMARKS.md ("Running the harness").
    Bench {
        /// The source image (or directory of NAME.img images).
        source: PathBuf,
        /// The target image (or directory of NAME.img images).
        target: PathBuf,
        /// `all`, or a comma list of romdelta,bsdiff,xdelta3,zstd19,zstd22,hdiffpatch,hdiffz (HDiffPatch's own hdiffz/hpatchz; scripts/install-peers.sh builds them).
        #[arg(long, default_value = "all", value_name = "LIST")]
        peers: String,
        /// Where results.md, results.json, chart.png and the job logs go.
        #[arg(long, default_value = "bench-out", value_name = "DIR")]
        out: PathBuf,
        /// Time limit of each job, in seconds.
        #[arg(long, default_value_t = 3600, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
        timeout: u64,
        /// Worker threads of romdelta diff and apply.
        #[arg(long, default_value_t = 2, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        threads: u16,
        /// Extra arguments for romdelta diff, e.g. "--level 22".
        #[arg(
            long,
            default_value = "",
            value_name = "ARGS",
            allow_hyphen_values = true
        )]
        romdelta_args: String,
        /// Leave the page cache alone (by default it is dropped before each job).
        #[arg(long)]
        keep_caches: bool,
        /// Print the JSON results instead of the Markdown table.
        #[arg(long)]
        json: bool,
    },
}

/// What `diff` writes.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffFormat {
    /// A romdelta package.
    Romdelta,
    /// An Android payload.bin (CrAU, major version 2).
    Payload,
    /// An Android A/B OTA zip: payload.bin, payload_properties.txt,
    /// care_map.pb, META-INF/com/android/metadata and metadata.pb.
    OtaZip,
    /// A block-based OTA of a non-A/B device (applied in place): per
    /// partition a version-4 transfer list, new.dat.br and patch.dat, in a
    /// directory, or with an updater-script in a zip when OUTPUT ends in
    /// `.zip`.
    BlockOta,
}

/// Partitions of a payload to work on.
#[derive(Args, Debug, Clone)]
pub struct PartitionList {
    /// Only these partitions (comma-separated; default: all).
    #[arg(
        short = 'p',
        long = "partitions",
        value_name = "NAME,...",
        value_delimiter = ','
    )]
    pub names: Vec<String>,
}

/// The keys a payload's signatures are checked with.
#[derive(Args, Debug, Clone, Default)]
pub struct TrustedKeys {
    /// Check the metadata and payload signatures with this key: an RSA or EC P-256 public key or X.509 certificate in PEM, or an otacerts.zip (repeatable; one verifying signature suffices). An unsigned or wrongly signed payload is refused before anything is written.
    #[arg(long = "trusted-key", value_name = "FILE")]
    pub keys: Vec<PathBuf>,
}

/// `romdelta avb` subcommands.
#[derive(Subcommand, Debug)]
pub enum AvbCommand {
    /// Print an image's AVB footer and hashtree descriptor.
    Info {
        /// The partition image.
        image: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write IMAGE (a filesystem, whole 4096-byte blocks) with a dm-verity hash tree, FEC and an unsigned vbmeta in an AVB footer, laid out as `avbtool add_hashtree_footer` does (the whole image is held in memory).
    AddHashtreeFooter {
        /// The filesystem image.
        image: PathBuf,
        /// Where the partition image goes (never overwritten).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// The partition's size in bytes.
        #[arg(long, value_name = "BYTES")]
        partition_size: u64,
        /// The partition's name (recorded in the descriptor).
        #[arg(long, value_name = "NAME")]
        partition_name: String,
        /// The tree's hash: sha1, sha256, sha384, sha512 or blake2b-256.
        #[arg(long, default_value = "sha256")]
        hash_algorithm: String,
        /// The salt, in hex.
        #[arg(long, value_name = "HEX", default_value = "")]
        salt: String,
        /// FEC parity bytes per codeword (2 to 24; 0: no FEC).
        #[arg(long, default_value_t = 2)]
        fec_roots: u32,
    },
}

/// `romdelta blockota` subcommands.
#[derive(Subcommand, Debug)]
pub enum BlockotaCommand {
    /// List partitions, transfer-list versions, commands by kind, blocks and stash use.
    Inspect {
        /// The directory or zip.
        package: PathBuf,
        #[command(flatten)]
        partitions: PartitionList,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the images of a full block OTA: DIR/NAME.img per partition.
    Extract {
        /// The directory or zip.
        package: PathBuf,
        /// The directory the images go to (created if missing; existing images are never overwritten).
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
        #[command(flatten)]
        partitions: PartitionList,
        /// Print a JSON report instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Apply a block OTA (incremental or full) over the old images, as recovery does; resumable.
    Apply {
        /// The directory or zip.
        package: PathBuf,
        /// The image to update (one partition), or a directory of NAME.img.
        #[arg(long, value_name = "IMAGE_OR_DIR")]
        in_place: PathBuf,
        #[command(flatten)]
        partitions: PartitionList,
        /// Print a JSON report instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `romdelta payload` subcommands.
#[derive(Subcommand, Debug)]
pub enum PayloadCommand {
    /// List partitions, operations by kind, sizes and hashes (every data hash is checked).
    Inspect {
        /// The payload.bin, or an OTA zip holding one.
        payload: PathBuf,
        #[command(flatten)]
        partitions: PartitionList,
        #[command(flatten)]
        trusted: TrustedKeys,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the images of a full payload: DIR/NAME.img per partition.
    Extract {
        /// The payload.bin, or an OTA zip holding one.
        payload: PathBuf,
        /// The directory the images go to (created if missing; existing images are never overwritten).
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
        #[command(flatten)]
        partitions: PartitionList,
        #[command(flatten)]
        trusted: TrustedKeys,
        #[command(flatten)]
        threads: Threads,
        /// Print a JSON report instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Sign an unsigned payload (metadata and payload signatures, as update_engine's signer lays them out) and write its payload_properties.txt beside it.
    Sign {
        /// The unsigned payload.bin (or an OTA zip holding one).
        payload: PathBuf,
        /// An RSA (any size) or EC P-256 private key in PEM (repeatable: one signature per key).
        #[arg(long = "key", value_name = "KEY", required = true)]
        keys: Vec<PathBuf>,
        /// Where the signed payload goes (never overwritten).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Write the new images of an incremental payload from the old ones.
    Apply {
        /// The payload.bin, or an OTA zip holding one.
        payload: PathBuf,
        /// The directory of old images (NAME.img per partition).
        #[arg(long, value_name = "DIR")]
        source: PathBuf,
        /// The directory the new images go to (created if missing; existing images are never overwritten).
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
        #[command(flatten)]
        partitions: PartitionList,
        #[command(flatten)]
        trusted: TrustedKeys,
        #[command(flatten)]
        threads: Threads,
        /// Print a JSON report instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Generator tuning, for benchmarks and experiments (hidden from --help).
#[derive(Args, Debug, Clone, Copy)]
pub struct Tuning {
    /// Most target blocks per changed region.
    #[arg(long, hide = true)]
    pub region_blocks: Option<u64>,
    /// Source blocks read around each alignment on each side.
    #[arg(long, hide = true)]
    pub margin_blocks: Option<u64>,
    /// Most source blocks a region reads.
    #[arg(long, hide = true)]
    pub max_src_blocks: Option<u64>,
    /// Fewest source blocks a region reads.
    #[arg(long, hide = true)]
    pub min_src_blocks: Option<u64>,
    /// Source blocks per target block of a region.
    #[arg(long, hide = true)]
    pub src_per_dst_block: Option<u64>,
    /// zstd level of the encoder trials.
    #[arg(long, hide = true)]
    pub trial_level: Option<i32>,
    /// Do not use content anchors.
    #[arg(long, hide = true)]
    pub no_anchors: bool,
    /// Diff EROFS images as stored bytes only: no SOURCE_RECOMPRESS
    /// operations (which diff compressed files decompressed and rebuild
    /// their clusters at apply).
    #[arg(long)]
    pub no_recompress: bool,
    /// Do not try SOURCE_FIELD_DELTA (ELF relocation tables delta-coded).
    #[arg(long, hide = true)]
    pub no_field_delta: bool,
    /// Do not try SOURCE_BRANCH_DELTA (branch displacements predicted).
    #[arg(long, hide = true)]
    pub no_branch_delta: bool,
    /// Let operations read only their own partition's source image (no
    /// reads across partitions, format version 5).
    #[arg(long, hide = true)]
    pub no_cross_partition: bool,
    /// Do not try SOURCE_DEFLATE_REBUILD (gzip, zip and zlib files rebuilt
    /// from their decompressed bytes).
    #[arg(long, hide = true)]
    pub no_deflate: bool,
    /// Do not try SOURCE_LZ4_REBUILD (lz4 kernels and ramdisks rebuilt).
    #[arg(long, hide = true)]
    pub no_lz4_rebuild: bool,
    /// Encode each new region (REPLACE) on its own, never several in one
    /// compression context.
    #[arg(long, hide = true)]
    pub no_join_new: bool,
    /// Most memory (MiB) one operation may need at apply (default 64, what
    /// `apply` allows by default). More lets the xz payloads of Linux
    /// kernels be rebuilt (SOURCE_XZ_REBUILD: about 470 MiB for a 32 MiB
    /// dictionary); the package records what it needs and `apply` then
    /// needs `--max-memory` at least that.
    #[arg(long, value_name = "MIB")]
    pub apply_memory: Option<u64>,
    /// Source blocks kept around those the bsdiff matcher reads.
    #[arg(long, hide = true)]
    pub trim_slack_blocks: Option<u64>,
    /// Trial band (percent) of the candidates encoded at the final level.
    #[arg(long, hide = true)]
    pub band_percent: Option<u64>,
    /// Most unchanged blocks between changed ones encoded with them.
    #[arg(long, hide = true)]
    pub gap_blocks: Option<u64>,
}

impl Tuning {
    /// Applies the given settings over `o`.
    pub fn apply(&self, o: &mut romdelta_diff::DiffOptions) {
        if let Some(v) = self.region_blocks {
            o.region_blocks = v.clamp(1, romdelta_format::limits::MAX_OP_DST_BLOCKS);
        }
        if let Some(v) = self.margin_blocks {
            o.margin_blocks = v;
        }
        if let Some(v) = self.max_src_blocks {
            o.max_src_blocks = v.clamp(1, romdelta_format::limits::MAX_OP_SRC_BLOCKS);
        }
        if let Some(v) = self.min_src_blocks {
            o.min_src_blocks = v;
        }
        if let Some(v) = self.src_per_dst_block {
            o.src_per_dst_block = v;
        }
        if let Some(v) = self.trial_level {
            o.trial_level = v.clamp(1, 22);
        }
        if self.no_anchors {
            o.anchors = false;
        }
        if self.no_recompress {
            o.recompress = false;
        }
        if self.no_field_delta {
            o.field_delta = false;
        }
        if self.no_branch_delta {
            o.branch_delta = false;
        }
        if self.no_cross_partition {
            o.cross_partition = false;
        }
        if self.no_deflate {
            o.deflate = false;
        }
        if self.no_lz4_rebuild {
            o.lz4_rebuild = false;
        }
        if self.no_join_new {
            o.join_new = false;
        }
        if let Some(v) = self.apply_memory {
            o.apply_memory_mib = v;
        }
        if let Some(v) = self.trim_slack_blocks {
            o.trim_slack_blocks = v;
        }
        if let Some(v) = self.band_percent {
            o.band_percent = v;
        }
        if let Some(v) = self.gap_blocks {
            o.gap_blocks = v;
        }
    }
}

/// The keys of the online roles (private key files from `romdelta keygen`).
#[derive(Args, Debug, Clone)]
pub struct OnlineKeys {
    /// A key of the targets role; repeat to reach its threshold.
    #[arg(long = "targets-key", value_name = "KEY", required = true)]
    pub targets: Vec<PathBuf>,
    /// A key of the snapshot role.
    #[arg(long = "snapshot-key", value_name = "KEY", required = true)]
    pub snapshot: Vec<PathBuf>,
    /// A key of the timestamp role.
    #[arg(long = "timestamp-key", value_name = "KEY", required = true)]
    pub timestamp: Vec<PathBuf>,
}

/// The keys each role of a new root lists (private or public key files).
#[derive(Args, Debug, Clone)]
pub struct RootRoles {
    /// A key of the root role (offline; repeatable).
    #[arg(long = "root-key", value_name = "KEY", required = true)]
    pub root: Vec<PathBuf>,
    /// Signatures the root role needs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub root_threshold: u64,
    /// A key of the targets role (repeatable).
    #[arg(long = "targets-key", value_name = "KEY", required = true)]
    pub targets: Vec<PathBuf>,
    /// A key of the snapshot role (repeatable).
    #[arg(long = "snapshot-key", value_name = "KEY", required = true)]
    pub snapshot: Vec<PathBuf>,
    /// A key of the timestamp role (repeatable).
    #[arg(long = "timestamp-key", value_name = "KEY", required = true)]
    pub timestamp: Vec<PathBuf>,
    /// Days the root is valid.
    #[arg(long, value_name = "DAYS", default_value_t = 365)]
    pub root_expires_days: i64,
}

/// `romdelta repo` subcommands.
#[derive(Subcommand, Debug)]
pub enum RepoCommand {
    /// Make a new repository: version 1 of the root, signed by its keys
    /// (private key files for root; public or private for the others).
    Init {
        /// The repository directory.
        #[arg(long, value_name = "DIR")]
        repo: PathBuf,
        #[command(flatten)]
        roles: RootRoles,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Sign the next root version with new role keys: signed by a threshold
    /// of the current root keys (--sign) and of the new ones.
    RotateRoot {
        /// The repository directory.
        #[arg(long, value_name = "DIR")]
        repo: PathBuf,
        /// A private key to sign with: current and new root keys (repeatable).
        #[arg(long = "sign", value_name = "KEY", required = true)]
        sign: Vec<PathBuf>,
        #[command(flatten)]
        roles: RootRoles,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Sign a new timestamp for the current snapshot (the timestamp
    /// expires soonest: run this from a timer).
    Timestamp {
        /// The repository directory.
        #[arg(long, value_name = "DIR")]
        repo: PathBuf,
        /// A key of the timestamp role (repeatable).
        #[arg(long = "timestamp-key", value_name = "KEY", required = true)]
        keys: Vec<PathBuf>,
    },
}

/// `romdelta tuf-client` commands.
#[derive(Subcommand, Debug)]
pub enum TufClientCommand {
    /// Trust ROOT (a root metadata file) from now on.
    Init {
        /// The root metadata file.
        root: PathBuf,
    },
    /// Refresh the top-level metadata from --metadata-url.
    Refresh,
    /// Refresh, then download --target-name from --target-base-url into --target-dir.
    Download,
}

/// Where a device updates from, and how.
#[derive(Args, Debug, Clone)]
pub struct RepoSource {
    /// The device directory.
    #[arg(long, value_name = "DIR")]
    pub device: PathBuf,
    /// The release repository: file:///DIR or http(s)://HOST/PATH (with
    /// metadata/ and targets/ below it).
    #[arg(long, value_name = "URL")]
    pub repo: String,
    /// Trust this root metadata file (the first time; later roots come
    /// through the repository, signed by the one before).
    #[arg(long, value_name = "ROOT.json")]
    pub root: Option<PathBuf>,
    /// The device's rollout seed (default: one drawn once and kept in
    /// DEVICE/ota/seed).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Failed installs of an incremental before the full package is taken.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub attempts: u32,
    /// Attempts per request before a download is given up (resumed by the
    /// next run).
    #[arg(long, value_name = "N", default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..))]
    pub retries: u32,
    /// Seconds without a byte before a transfer is given up.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub stall_timeout: u64,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `romdelta recovery` subcommands.
#[derive(Subcommand, Debug)]
pub enum RecoveryCommand {
    /// Create a device whose two slots hold ROM, slot a active.
    Init {
        /// The device directory (new or empty).
        #[arg(long, value_name = "DIR")]
        device: PathBuf,
        /// The ROM to install: a directory of NAME.img (with its build.prop) or one image.
        #[arg(long, value_name = "ROM")]
        from: PathBuf,
        /// build.prop of that build (default: ROM/build.prop, if any).
        #[arg(long, value_name = "FILE")]
        build: Option<PathBuf>,
        /// One slot, updated in place (in-place packages), instead of A/B.
        #[arg(long)]
        single_slot: bool,
        /// Print the new device's status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the active slot, each slot's build and any update in progress.
    Status {
        /// The device directory.
        #[arg(long, value_name = "DIR")]
        device: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Install a package into the inactive slot and switch to it once verified.
    Install {
        /// The package.
        package: PathBuf,
        /// The device directory.
        #[arg(long, value_name = "DIR")]
        device: PathBuf,
        #[command(flatten)]
        trust: Trust,
        /// Allow installing a build older than the installed one.
        #[arg(long)]
        allow_downgrade: bool,
        /// Allow a full package to move to another region or channel.
        #[arg(long)]
        allow_line_switch: bool,
        /// Install without comparing the package's build identity with the
        /// build the device runs (needed when that build is unknown and the
        /// package names a device).
        #[arg(long)]
        skip_build_check: bool,
        /// Most memory (MiB) the package's operations may need; a package
        /// made with a larger `diff --apply-memory` is refused before
        /// anything is written.
        #[arg(long, value_name = "MIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
        max_memory: u64,
        #[command(flatten)]
        threads: Threads,
        /// Print a JSON report instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Say what `recovery update` would install from a repository, and why.
    Check {
        #[command(flatten)]
        source: RepoSource,
    },
    /// Refresh the repository's metadata, choose this device's package
    /// (its exact incremental, else the full one) and install it while it
    /// downloads; a cut download or install resumes on the next run.
    Update {
        #[command(flatten)]
        source: RepoSource,
        #[command(flatten)]
        trust: Trust,
        #[command(flatten)]
        threads: Threads,
    },
}
