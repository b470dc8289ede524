//! romdelta package application.
//!
//! Application runs in stages, each one its own function:
//! 1. [`PackageFile::open`] maps the package and parses it with the bounded
//!    parser of `romdelta-format`;
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

mod error;
mod exec;
mod frontier;
mod inplace;
pub mod payload;
pub mod rules;
mod stage;

pub use stage::{staging_paths, CheckpointEvery};

pub use error::{ApplyError, Hashed, Mismatch};
pub use inplace::{check_in_place_package, in_place_paths, InPlacePlan};

use memmap2::Mmap;
use romdelta_format::{Manifest, Package, PackageKind};
use romdelta_rom::{Layout, Partition, Rom};
use romdelta_storage::{EntryKind, RealFs, Storage};
use std::path::{Path, PathBuf};

/// A package file, mapped into memory.
pub struct PackageFile {
    path: PathBuf,
    map: Option<Mmap>,
}

impl PackageFile {
    /// Maps the package at `path`.
    pub fn open(path: &Path) -> Result<Self, ApplyError> {
        let file = std::fs::File::open(path).map_err(ApplyError::io(path))?;
        let len = file.metadata().map_err(ApplyError::io(path))?.len();
        // SAFETY: mapped read-only; a package is not modified while it is applied.
        let map = if len == 0 {
            None
        } else {
            Some(unsafe { Mmap::map(&file) }.map_err(ApplyError::io(path))?)
        };
        Ok(PackageFile {
            path: path.to_path_buf(),
            map,
        })
    }

    /// The package bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Where it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Parses the package.
    pub fn parse(&self) -> Result<Package<'_>, ApplyError> {
        Ok(Package::parse(self.bytes())?)
    }

    /// Drops the whole pages of `part` (a slice of [`PackageFile::bytes`];
    /// anything else is ignored) from this process's memory: the next read
    /// of them reads the file again. Applying releases each operation's
    /// data once it is used, so its resident memory does not grow with the
    /// package.
    pub fn release(&self, part: &[u8]) {
        let Some(map) = self.map.as_ref() else {
            return;
        };
        let base = map.as_ptr() as usize;
        let Some(offset) = (part.as_ptr() as usize).checked_sub(base) else {
            return;
        };
        if offset + part.len() > map.len() {
            return;
        }
        romdelta_rom::release_pages(map, offset as u64, part.len() as u64);
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
    /// The data section, when the whole package is in memory.
    pub(crate) data: Option<&'a [u8]>,
    /// For each partition update, the source partition it reads (if any).
    pub(crate) sources: Vec<Option<&'a Partition>>,
    pub(crate) output: OutputSpec,
    /// Where the output is written.
    pub(crate) storage: &'a dyn Storage,
    /// How often progress is made durable.
    pub(crate) checkpoint: CheckpointEvery,
    /// The mapped file the data section is in, to release what is used.
    pub(crate) mapped: Option<&'a PackageFile>,
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
        plan.data = Some(pkg.data);
        Ok(plan)
    }

    /// Writes the verified images as Android sparse images.
    pub fn sparse_output(mut self, sparse: bool) -> Self {
        self.output.sparse = sparse;
        self
    }

    /// Releases each operation's data from memory once it is used, when
    /// the package is `file` (see [`PackageFile::release`]).
    pub fn releasing_data(mut self, file: &'a PackageFile) -> Self {
        self.mapped = Some(file);
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
        let sources = match_sources(manifest, source)?;
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
            output: OutputSpec {
                path: out.to_path_buf(),
                layout,
                sparse: false,
            },
            storage,
            checkpoint: CheckpointEvery::default(),
            mapped: None,
        })
    }
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

pub use exec::{read_stream_prefix, verify, StreamPrefix, VerifyReport};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releasing_package_pages_keeps_their_bytes_and_ignores_other_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let file = PackageFile::open(&path).unwrap();
        // Ranges inside the mapping, page-aligned or not, and all of it:
        // what is read afterwards is the file's bytes again.
        for (a, b) in [(0, 4096), (100, 70_000), (8192, 200_000), (0, 200_000)] {
            file.release(&file.bytes()[a..b]);
            assert_eq!(file.bytes(), &bytes[..]);
        }
        // Memory that is not the mapping (a copy on the heap) is left alone.
        let copy = file.bytes().to_vec();
        file.release(&copy);
        file.release(&copy[4096..]);
        assert_eq!(copy, bytes);
        // An empty package has no mapping.
        std::fs::write(&path, b"").unwrap();
        let empty = PackageFile::open(&path).unwrap();
        empty.release(&bytes);
        assert!(empty.bytes().is_empty());
    }
}
