//! romdelta package application.
//!
//! Application runs in stages, each one its own function:
//! 1. [`PackageFile::open`] reads the package's header, manifest and
//!    signatures into memory of its own with the bounded parser of
//!    `romdelta-format`; the caller checks the signatures over those bytes
//!    and only then decodes the manifest from them;
//! 2. [`Plan::new`] checks the package against the source ROM (every
//!    partition present with the size the package expects) and the output
//!    location; only a [`Plan`] can be executed;
//! 3. [`Plan::execute`] runs the operations in parallel on the current rayon
//!    pool with positioned writes into staged files; every operation checks
//!    the hash of its data before decoding it and the hash of its source
//!    bytes before using them;
//! 4. each written image is hashed again from disk as it is finished (see
//!    `frontier`) and synced; only when
//!    every partition matches are the staged files renamed into place, so an
//!    output that exists is an output that verified.

pub mod blockota;
mod crosspart;
mod error;
mod exec;
mod frontier;
mod inplace;
pub mod payload;
pub mod rules;
mod stage;

pub use stage::{staging_paths, CheckpointEvery};

pub use crosspart::match_other_sources;
pub use error::{ApplyError, Hashed, Mismatch};
pub use inplace::{check_in_place_package, in_place_paths, InPlacePlan};

use romdelta_format::{Manifest, Package, PackageKind, PartitionUpdate, Prefix};
use romdelta_rom::{Layout, Partition, Rom};
use romdelta_storage::{EntryKind, RealFs, Storage};
use std::path::{Path, PathBuf};

/// Random access to a package's bytes: a file, or a remote file read by
/// byte ranges.
pub trait PackageSource: Send + Sync {
    /// Fills `buf` from `offset`; a read past the end is an error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl PackageSource for std::fs::File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

/// Whether every image `m` writes is at `path_of(partition name)` with
/// its new size and hash: the update has written and verified it already.
pub fn images_hold(
    fs: &dyn Storage,
    m: &Manifest,
    path_of: impl Fn(&str) -> PathBuf,
) -> Result<bool, ApplyError> {
    for p in &m.partitions {
        let path = path_of(&p.name);
        let Ok(f) = fs.open(&path, romdelta_storage::OpenMode::Read) else {
            return Ok(false);
        };
        if f.len().map_err(ApplyError::io(&path))? != p.new.size {
            return Ok(false);
        }
        let h = romdelta_rom::sha256_read(p.new.size, |b, off| f.read_at(b, off))
            .map_err(ApplyError::io(&path))?;
        if h != p.new.sha256 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A package file: its prefix (header, manifest bytes, signatures) read
/// once into memory of this process's own and checked against the header's
/// checksum; its data section read from the file, an operation at a time,
/// when the operation runs.
///
/// Nothing is mapped: whoever can write the file while it is applied cannot
/// have one manifest verified and another one used, and a file cut short
/// meanwhile is an error, not a signal. Operation data is checked against
/// the hash the verified manifest holds before it is used.
pub struct PackageFile {
    path: PathBuf,
    source: Box<dyn PackageSource>,
    len: u64,
    prefix: Prefix,
}

/// Sequential reads of a [`PackageSource`], for the prefix parser.
struct SourceReader<'s> {
    source: &'s dyn PackageSource,
    at: u64,
    len: u64,
}

impl std::io::Read for SourceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.len - self.at) as usize;
        self.source.read_exact_at(&mut buf[..n], self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

impl PackageFile {
    /// Opens the package at `path` and reads its prefix. The header's
    /// section lengths must add up to the file's length exactly.
    pub fn open(path: &Path) -> Result<Self, ApplyError> {
        let file = std::fs::File::open(path).map_err(ApplyError::io(path))?;
        let len = file.metadata().map_err(ApplyError::io(path))?.len();
        Self::from_source(path, Box::new(file), len)
    }

    /// Reads the prefix of the package `source` holds, `len` bytes long;
    /// `name` names it in messages. The header's section lengths must add
    /// up to `len` exactly.
    pub fn from_source(
        name: &Path,
        source: Box<dyn PackageSource>,
        len: u64,
    ) -> Result<Self, ApplyError> {
        // The header first: its lengths must fit the file before the
        // sections they announce are read.
        let head_len = romdelta_format::HEADER_LEN.min(len);
        let mut head = vec![0u8; head_len as usize];
        source
            .read_exact_at(&mut head, 0)
            .map_err(ApplyError::io(name))?;
        let header = romdelta_format::Header::decode(&head)?;
        header.check_len(len)?;
        // The header's bytes are not read twice, nor is a byte past the
        // prefix read ahead (a remote source fetches each byte once).
        let rest = SourceReader {
            source: &*source,
            at: head_len,
            len: header.data_offset().min(len),
        };
        let mut reader =
            std::io::BufReader::with_capacity(1 << 16, std::io::Read::chain(&head[..], rest));
        let prefix = exec::read_prefix(&mut reader)?;
        drop(reader);
        Ok(PackageFile {
            path: name.to_path_buf(),
            source,
            len,
            prefix,
        })
    }

    /// The header, the manifest's bytes and the signatures, as read.
    pub fn prefix(&self) -> &Prefix {
        &self.prefix
    }

    /// Decodes the manifest from the bytes [`PackageFile::prefix`] holds
    /// (check their signatures first).
    pub fn manifest(&self) -> Result<Manifest, ApplyError> {
        Ok(self.prefix.manifest()?)
    }

    /// The package's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the package file is empty (it never is once opened).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads `len` bytes of the data section from `offset`.
    fn read_data(&self, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
        let at = self.prefix.header.data_offset() + offset;
        // Checked by the manifest rules against the data length, which the
        // file held when it was opened; a file cut short since is an error.
        let mut buf = vec![0u8; len as usize];
        self.source.read_exact_at(&mut buf, at)?;
        Ok(buf)
    }
}

/// Where a plan's operation data comes from.
#[derive(Clone, Copy)]
pub enum PackageData<'a> {
    /// A data section held in memory (a package parsed from bytes).
    Memory(&'a [u8]),
    /// The data section of a package file, read as operations run.
    File(&'a PackageFile),
}

impl<'a> PackageData<'a> {
    /// The data of operation `oi` of partition `p` (bounds checked by the
    /// manifest rules: within the data section).
    pub(crate) fn of(
        &self,
        p: &PartitionUpdate,
        oi: usize,
    ) -> Result<std::borrow::Cow<'a, [u8]>, ApplyError> {
        let op = &p.operations[oi];
        if !op.kind.has_data() {
            return Ok(std::borrow::Cow::Borrowed(&[]));
        }
        match *self {
            PackageData::Memory(d) => {
                let start = op.data_offset as usize;
                Ok(std::borrow::Cow::Borrowed(
                    &d[start..start + op.data_length as usize],
                ))
            }
            PackageData::File(f) => f
                .read_data(op.data_offset, op.data_length)
                .map(std::borrow::Cow::Owned)
                .map_err(|e| {
                    let e = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        "the file ends before them".to_string()
                    } else {
                        e.to_string()
                    };
                    ApplyError::Refused(format!(
                        "partition {}, operation {oi}: reading its {} bytes of data from {}: {e} (was the package changed or cut short while it was applied?)",
                        p.name,
                        op.data_length,
                        f.path.display()
                    ))
                }),
        }
    }
}

/// Where the output goes and in which shape.
#[derive(Debug, Clone)]
pub struct OutputSpec {
    /// The path given by the user.
    pub path: PathBuf,
    /// Image file or directory of images.
    pub layout: Layout,
    /// Write each verified image as an Android sparse image (images whose
    /// size is not a whole number of 4 KiB blocks stay raw).
    pub sparse: bool,
}

/// A package checked against its source and output; the only thing that can be executed.
pub struct Plan<'a> {
    pub(crate) manifest: &'a Manifest,
    /// Where operation data comes from (none: from a stream, see
    /// [`Plan::execute_stream`]).
    pub(crate) data: Option<PackageData<'a>>,
    /// For each partition update, the source partition it reads (if any).
    pub(crate) sources: Vec<Option<&'a Partition>>,
    /// The other source partitions operations read (format version 5),
    /// sorted by name ([`crosspart`]).
    pub(crate) others: Vec<(String, &'a Partition)>,
    pub(crate) output: OutputSpec,
    /// Where the output is written.
    pub(crate) storage: &'a dyn Storage,
    /// How often progress is made durable.
    pub(crate) checkpoint: CheckpointEvery,
}

/// One partition image written and verified.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WrittenPartition {
    /// Partition name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// What an application did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApplyReport {
    /// Partitions written.
    pub partitions: Vec<WrittenPartition>,
    /// Where the output is.
    pub output: PathBuf,
    /// Bytes written in all (by this run).
    pub bytes_written: u64,
    /// Operations an interrupted earlier run had finished, skipped by this one.
    pub resumed_ops: u64,
}

/// Finds the source partition each partition update reads, and checks its size.
pub fn match_sources<'a>(
    m: &Manifest,
    source: Option<&'a Rom>,
) -> Result<Vec<Option<&'a Partition>>, ApplyError> {
    if m.kind == PackageKind::Delta && source.is_none() {
        return Err(ApplyError::Refused(
            "this is an incremental package: it needs the source build (--source)".into(),
        ));
    }
    let single = source.filter(|s| s.layout == Layout::Image && m.partitions.len() == 1);
    m.partitions
        .iter()
        .map(|p| {
            let Some(old) = p.old else { return Ok(None) };
            let source = source.expect("checked above");
            let found = match single {
                Some(s) => s.partitions.first(),
                None => source.get(&p.name),
            };
            let Some(found) = found else {
                return Err(ApplyError::Refused(format!(
                    "partition {}: the package needs a source image of {} bytes (sha256 {}); the source has no partition {} (it has: {})",
                    p.name,
                    old.size,
                    romdelta_format::hex_digest(&old.sha256),
                    p.name,
                    source
                        .partitions
                        .iter()
                        .map(|x| x.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            if found.size() != old.size {
                return Err(ApplyError::Refused(format!(
                    "partition {}: the package needs a source image of {} bytes (sha256 {}); {} has {} bytes",
                    p.name,
                    old.size,
                    romdelta_format::hex_digest(&old.sha256),
                    found.path.display(),
                    found.size()
                )));
            }
            Ok(Some(found))
        })
        .collect()
}

impl<'a> Plan<'a> {
    /// Checks `pkg` against `source` and the output path `out`. The output is
    /// an image file when the source is one (or, for a full package of one
    /// partition, when `out` is not a directory), else a directory of
    /// `NAME.img` files, which must not exist yet or be empty.
    pub fn new(
        pkg: &'a Package<'a>,
        source: Option<&'a Rom>,
        out: &Path,
    ) -> Result<Self, ApplyError> {
        Self::new_on(pkg, source, out, &RealFs)
    }

    /// Like [`Plan::new`], writing the output through `storage` instead of
    /// the real file system (the recovery harness's simulated device).
    pub fn new_on(
        pkg: &'a Package<'a>,
        source: Option<&'a Rom>,
        out: &Path,
        storage: &'a dyn Storage,
    ) -> Result<Self, ApplyError> {
        let mut plan = Self::for_stream_on(&pkg.manifest, source, out, storage)?;
        plan.data = Some(PackageData::Memory(pkg.data));
        Ok(plan)
    }

    /// Like [`Plan::new`] for the package file `file`, whose manifest (read
    /// from its prefix, signatures checked) is `manifest`.
    pub fn for_file(
        manifest: &'a Manifest,
        file: &'a PackageFile,
        source: Option<&'a Rom>,
        out: &Path,
    ) -> Result<Self, ApplyError> {
        Self::for_file_on(manifest, file, source, out, &RealFs)
    }

    /// [`Plan::for_file`] through `storage`.
    pub fn for_file_on(
        manifest: &'a Manifest,
        file: &'a PackageFile,
        source: Option<&'a Rom>,
        out: &Path,
        storage: &'a dyn Storage,
    ) -> Result<Self, ApplyError> {
        let mut plan = Self::for_stream_on(manifest, source, out, storage)?;
        plan.data = Some(PackageData::File(file));
        Ok(plan)
    }

    /// Writes the verified images as Android sparse images.
    pub fn sparse_output(mut self, sparse: bool) -> Self {
        self.output.sparse = sparse;
        self
    }

    /// Makes progress durable after `every.bytes` bytes or `every.interval`,
    /// whichever comes first (default: 16 MiB or 0.5 s).
    pub fn checkpoint_every(mut self, every: CheckpointEvery) -> Self {
        self.checkpoint = every;
        self
    }

    /// Like [`Plan::new`], for a package whose data section will be read
    /// from a stream by [`Plan::execute_stream`].
    pub fn for_stream(
        manifest: &'a Manifest,
        source: Option<&'a Rom>,
        out: &Path,
    ) -> Result<Self, ApplyError> {
        Self::for_stream_on(manifest, source, out, &RealFs)
    }

    /// [`Plan::for_stream`] through `storage`.
    pub fn for_stream_on(
        manifest: &'a Manifest,
        source: Option<&'a Rom>,
        out: &Path,
        storage: &'a dyn Storage,
    ) -> Result<Self, ApplyError> {
        check_ab_package(manifest)?;
        check_codecs(manifest)?;
        let sources = match_sources(manifest, source)?;
        let others = match_other_sources(manifest, source)?;
        let out_is_dir = storage.entry(out).map_err(ApplyError::io(out))? == Some(EntryKind::Dir);
        let layout = match source {
            Some(s) if manifest.kind == PackageKind::Delta => s.layout,
            _ if manifest.partitions.len() == 1 && !out_is_dir => Layout::Image,
            _ => Layout::Directory,
        };
        check_output(storage, out, layout)?;
        Ok(Plan {
            manifest,
            data: None,
            sources,
            others,
            output: OutputSpec {
                path: out.to_path_buf(),
                layout,
                sparse: false,
            },
            storage,
            checkpoint: CheckpointEvery::default(),
        })
    }
}

/// The memory (MiB) an applier keeps to by default, whatever the image
/// size; a package whose operations need more is applied only when the
/// applier is allowed more ([`check_memory`]).
pub const DEFAULT_APPLY_MEMORY_MIB: u64 = 64;

/// Refuses, before anything is written, a package whose operations need
/// more memory at apply (its manifest's `apply_memory_mib`) than
/// `max_mib` (0: [`DEFAULT_APPLY_MEMORY_MIB`]), naming both numbers and
/// the flag that allows more.
pub fn check_memory(m: &Manifest, max_mib: u64) -> Result<(), ApplyError> {
    let max = if max_mib == 0 {
        DEFAULT_APPLY_MEMORY_MIB
    } else {
        max_mib
    };
    if m.apply_memory_mib > max {
        return Err(ApplyError::Refused(format!(
            "this package needs {} MiB of memory to apply (an operation rebuilds an xz stream), more than the {max} MiB this apply may use: give --max-memory {} (or more) on a device that has it, or use a package made with a smaller `romdelta diff --apply-memory`",
            m.apply_memory_mib, m.apply_memory_mib
        )));
    }
    Ok(())
}

/// Refuses a package whose content-aware operations need a codec library
/// version other than the one built in (they would not rebuild their bytes
/// exactly), before anything is written.
pub fn check_codecs(m: &Manifest) -> Result<(), ApplyError> {
    for c in &m.codecs {
        let have = c.built_in();
        if have.version != c.version {
            return Err(ApplyError::Refused(format!(
                "this package rebuilds compressed data with {name} {want}, but this romdelta has {name} {have}: they would not come out exactly; apply it with a romdelta built with {name} {want}, or install a full package",
                name = c.name(),
                want = c.version_name(),
                have = have.version_name(),
            )));
        }
    }
    Ok(())
}

/// Refuses an incremental package made for in-place installation, with
/// what to do instead: A/B application writes a new image and runs
/// operations in any order.
pub fn check_ab_package(m: &Manifest) -> Result<(), ApplyError> {
    if m.in_place && m.kind == PackageKind::Delta {
        return Err(ApplyError::Refused(
            "this package updates images in place (made with `romdelta diff --in-place`): apply it with --in-place IMAGE_OR_DIR, or install it on a single-slot device; an A/B install needs a package made without --in-place".into(),
        ));
    }
    Ok(())
}

/// Checks that `out` can take an output of `layout`: an image file goes
/// where no directory is, a directory of images into a new or empty one.
fn check_output(fs: &dyn Storage, out: &Path, layout: Layout) -> Result<(), ApplyError> {
    let refuse = |why: &str| ApplyError::Io {
        path: out.to_path_buf(),
        source: std::io::Error::other(why.to_string()),
    };
    match (layout, fs.entry(out).map_err(ApplyError::io(out))?) {
        (Layout::Image, Some(EntryKind::Dir)) => Err(refuse(
            "is a directory; the output of this package is one image file",
        )),
        (Layout::Directory, Some(EntryKind::File(_))) => Err(refuse(
            "is a file; the output of this package is a directory of images",
        )),
        // Renamed into place, the output would replace the link, and a
        // directory cannot replace one.
        (Layout::Directory, Some(kind @ (EntryKind::Symlink | EntryKind::Other))) => {
            Err(refuse(&format!(
                "is {kind}; the output of this package is a directory of images, put in place by a rename: give the directory itself, or a new path"
            )))
        }
        (Layout::Directory, Some(EntryKind::Dir)) => {
            if !fs.read_dir(out).map_err(ApplyError::io(out))?.is_empty() {
                return Err(refuse(
                    "directory is not empty; give a new or empty directory",
                ));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The signature policy of `apply` and `verify`: unless `insecure` is set,
/// at least one signature by a key in `trusted` must verify over the
/// manifest. Checked before anything is written.
pub fn check_trust(
    manifest_bytes: &[u8],
    signatures: &[romdelta_format::Signature],
    trusted: &[romdelta_format::signing::VerifyingKey],
    insecure: bool,
) -> Result<(), ApplyError> {
    if insecure {
        return Ok(());
    }
    if trusted.is_empty() {
        return Err(ApplyError::Refused(
            "no trusted key given: pass --trusted-key PUB (or --insecure-no-verify to accept a package nobody vouches for)".into(),
        ));
    }
    romdelta_format::signing::check_trust(manifest_bytes, signatures, trusted)
        .map(|_| ())
        .map_err(|e| ApplyError::Refused(e.to_string()))
}

/// Opens the source ROM at `path` for application: read through bounded
/// buffers, not mapped, so memory stays small whatever the image size.
pub fn open_rom(path: &Path) -> Result<Rom, ApplyError> {
    Ok(Rom::open_with(path, romdelta_rom::Access::Read)?)
}

pub use exec::{read_prefix, verify, VerifyReport};
