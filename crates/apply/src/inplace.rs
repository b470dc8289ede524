//! In-place application: the new images are written over the old ones, as
//! a device with a single slot updates.
//!
//! Only a package made for it (`romdelta diff --in-place`, see
//! [`romdelta_format::inplace`]) can be applied this way: its operations
//! form stages that never read a block an earlier stage wrote, and the
//! blocks a stage both reads and writes (its *stash*) are saved before the
//! stage writes anything. The run:
//! 1. (first run only) checks every old image against the package (size and
//!    SHA-256): a wrong base build is refused before a byte is written;
//! 2. writes the journal (`.romdelta-journal` in the directory, or
//!    `.IMAGE.romdelta-journal` beside an image file): from then on the
//!    images are being changed, and only the journal tells how far;
//! 3. per partition, per stage: saves the stash to `.romdelta-stash` (synced,
//!    renamed into place) unless the stash of this very stage is already
//!    there, runs the stage's operations in parallel (reads of stashed
//!    blocks come from the stash), syncs the images and records the stage
//!    in the journal; operations are also recorded as they finish, at the
//!    usual checkpoints;
//! 4. cuts each image to its new size, hashes it, and only when every image
//!    matches removes the journal.
//!
//! A power cut anywhere, or an error, leaves the journal: the same command
//! resumes, and re-running an operation reads exactly the bytes its first
//! run read (the stash is never rewritten once the stage started, and no
//! earlier stage wrote what the stage reads).
//!
//! A journal or stash path holding anything but a file, a symbolic link
//! above all, is refused before anything is written and left alone; so is
//! an image that is a link inside the directory updated. The target named
//! by the user may itself be a link: [`InPlacePlan::new`] updates what it
//! points to.

use crate::exec::{mismatch, run_op, sync_and_verify, SourceBytes};
use crate::stage::{own_entry, CheckpointEvery, Checkpointer, Output};
use crate::{ApplyError, ApplyReport, Hashed, PackageData, WrittenPartition};
use rayon::prelude::*;
use romdelta_format::inplace::{stage_ranges, stash_of};
use romdelta_format::journal::Journal;
use romdelta_format::{
    hex_digest, sha256, Digest, Extent, Manifest, Package, PackageKind, BLOCK_SIZE,
};
use romdelta_storage::{EntryKind, Made, OpenMode, RealFs, Storage, StorageFile};
use sha2::Digest as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The stash file header: magic, version, manifest SHA-256, partition
/// index, stage index, block count, SHA-256 of the stashed bytes.
const STASH_MAGIC: &[u8; 8] = b"RDSTASH1";
const STASH_HEADER: u64 = 8 + 4 + 32 + 8 + 8 + 8 + 32;

/// A package checked against the images it updates in place.
pub struct InPlacePlan<'a> {
    manifest: &'a Manifest,
    data: PackageData<'a>,
    storage: &'a dyn Storage,
    /// The image file, or the directory of `NAME.img`.
    target: PathBuf,
    /// Whether `target` is one image file.
    single: bool,
    checkpoint: CheckpointEvery,
}

/// Refuses an incremental package that was not made for in-place
/// installation, with what to do instead.
pub fn check_in_place_package(m: &Manifest) -> Result<(), ApplyError> {
    if m.kind == PackageKind::Delta && !m.in_place {
        return Err(ApplyError::Refused(
            "this incremental package was made for A/B installation (a new image beside the old one): its operations may read blocks that others overwrite, so it cannot be applied in place; make one with `romdelta diff --in-place`, or apply it with --source and -o".into(),
        ));
    }
    Ok(())
}

impl<'a> InPlacePlan<'a> {
    /// Checks `pkg` for an in-place update of `target` on the real file
    /// system. A `target` that is a symbolic link stands for what it points
    /// to, which is updated.
    pub fn new(pkg: &'a Package<'a>, target: &Path) -> Result<Self, ApplyError> {
        let target = romdelta_storage::resolve_link(target).map_err(ApplyError::io(target))?;
        Self::new_on(pkg, &target, &RealFs)
    }

    /// [`InPlacePlan::new`] through `storage`. `target` is an image file
    /// (for a package of one partition) or a directory of `NAME.img`.
    pub fn new_on(
        pkg: &'a Package<'a>,
        target: &Path,
        storage: &'a dyn Storage,
    ) -> Result<Self, ApplyError> {
        Self::with_data_on(
            &pkg.manifest,
            PackageData::Memory(pkg.data),
            target,
            storage,
        )
    }

    /// Checks the package file `file`, whose manifest (read from its prefix,
    /// signatures checked) is `manifest`, for an in-place update of `target`.
    pub fn for_file(
        manifest: &'a Manifest,
        file: &'a crate::PackageFile,
        target: &Path,
    ) -> Result<Self, ApplyError> {
        let target = romdelta_storage::resolve_link(target).map_err(ApplyError::io(target))?;
        Self::for_file_on(manifest, file, &target, &RealFs)
    }

    /// [`InPlacePlan::for_file`] through `storage`.
    pub fn for_file_on(
        manifest: &'a Manifest,
        file: &'a crate::PackageFile,
        target: &Path,
        storage: &'a dyn Storage,
    ) -> Result<Self, ApplyError> {
        Self::with_data_on(manifest, PackageData::File(file), target, storage)
    }

    fn with_data_on(
        m: &'a Manifest,
        data: PackageData<'a>,
        target: &Path,
        storage: &'a dyn Storage,
    ) -> Result<Self, ApplyError> {
        check_in_place_package(m)?;
        crate::check_codecs(m)?;
        let single = match storage.entry(target).map_err(ApplyError::io(target))? {
            Some(EntryKind::Dir) => false,
            Some(EntryKind::File(_)) if m.partitions.len() == 1 => true,
            Some(EntryKind::File(_)) => {
                return Err(ApplyError::Refused(format!(
                    "{} is an image file; this package updates {} partitions ({}): give the directory of their NAME.img images",
                    target.display(),
                    m.partitions.len(),
                    m.partitions.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
                )))
            }
            Some(kind @ (EntryKind::Symlink | EntryKind::Other)) => {
                return Err(ApplyError::Refused(format!(
                    "{} is {kind}: give the image file or the directory of images to update",
                    target.display()
                )))
            }
            None => {
                return Err(ApplyError::Io {
                    path: target.to_path_buf(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no such image or directory to update in place",
                    ),
                })
            }
        };
        Ok(InPlacePlan {
            manifest: m,
            data,
            storage,
            target: target.to_path_buf(),
            single,
            checkpoint: CheckpointEvery::default(),
        })
    }

    /// Makes progress durable at `every` (default: 16 MiB or 0.5 s), and
    /// always at the end of each stage.
    pub fn checkpoint_every(mut self, every: CheckpointEvery) -> Self {
        self.checkpoint = every;
        self
    }

    /// The image of partition `p`.
    fn image_path(&self, p: &str) -> PathBuf {
        if self.single {
            self.target.clone()
        } else {
            self.target.join(format!("{p}.img"))
        }
    }

    /// Where the journal and the stash live.
    pub fn journal_and_stash_paths(&self) -> (PathBuf, PathBuf) {
        in_place_paths(&self.target, self.single)
    }

    /// Runs the update (or resumes it). `progress` gets bytes written so far.
    pub fn execute(&self, progress: &(dyn Fn(u64) + Sync)) -> Result<ApplyReport, ApplyError> {
        let fs = self.storage;
        let m = self.manifest;
        let (journal_path, stash_path) = self.journal_and_stash_paths();
        let manifest_sha = sha256(&m.encode());
        let ops: u64 = m.partitions.iter().map(|p| p.operations.len() as u64).sum();
        let has_journal = own_entry(fs, &journal_path, Made::File, "the resume journal")?.is_some();
        own_entry(fs, &stash_path, Made::File, "the stash")?;
        let mut loaded = None;
        if has_journal {
            let bytes = read_journal(fs, &journal_path, ops);
            match bytes.map(|b| Journal::decode(&b, ops)) {
                Ok(Ok(j)) if j.manifest_sha256 == manifest_sha => loaded = Some(j),
                // A full package reads nothing: it replaces whatever update
                // was under way, and that update's stash with it.
                _ if m.kind == PackageKind::Full => {
                    match fs.remove_file(&stash_path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(ApplyError::io(&stash_path)(e))
                        }
                        _ => {}
                    }
                }
                Err(e) => return Err(e),
                Ok(Ok(j)) => {
                    return Err(ApplyError::Refused(format!(
                        "an in-place update with another package (manifest sha256 {}) is under way in {}: its images are neither the old build nor the new one; finish it with that package, or install a full package",
                        hex_digest(&j.manifest_sha256),
                        self.target.display()
                    )))
                }
                Ok(Err(e)) => {
                    return Err(ApplyError::Refused(format!(
                        "resume journal {}: {e}; the images may be partly updated: install a full package to repair them",
                        journal_path.display()
                    )))
                }
            }
        }
        if loaded.is_none() {
            if let Err(e) = self.check_old_images() {
                // Run again after it finished (say, killed right after
                // removing its journal): nothing left to do.
                if self.images_are_new()? {
                    return Ok(self.report(0, 0));
                }
                return Err(e);
            }
        }
        let outputs = self.open_images(loaded.is_none())?;
        let source = image_ids(&outputs)?;
        let journal = match loaded {
            Some(j) if j.source_id == source => j,
            Some(_) => {
                return Err(ApplyError::Refused(format!(
                    "resume journal {}: it was written while updating other image files (they were replaced since); the images may be partly updated: install a full package to repair them",
                    journal_path.display()
                )))
            }
            None => {
                // From here on the images change: the journal must exist first.
                let j = Journal::new(manifest_sha, source, ops);
                romdelta_storage::write_durably(fs, &journal_path, &j.encode())
                    .map_err(ApplyError::io(&journal_path))?;
                j
            }
        };
        let resumed = journal.done_count();
        let cp = Checkpointer::new(fs, &outputs, &journal_path, journal, self.checkpoint);
        let written = AtomicU64::new(0);
        let mut first_op = 0u64;
        for (pi, p) in m.partitions.iter().enumerate() {
            let out = &outputs[pi];
            let len = out.file.len().map_err(ApplyError::io(&out.path))?;
            if len < p.new.size {
                out.file
                    .set_len(p.new.size)
                    .map_err(ApplyError::io(&out.path))?;
            }
            let old_size = p.old.map_or(0, |o| o.size);
            for (si, range) in stage_ranges(p).into_iter().enumerate() {
                if range.clone().all(|oi| cp.is_done(first_op + oi as u64)) {
                    continue;
                }
                let stash = stash_of(p, range.clone());
                let stash_file = if stash.is_empty() {
                    None
                } else {
                    Some(self.stash(&stash_path, manifest_sha, pi, si, &stash, out, old_size)?)
                };
                let src = InPlaceSource {
                    image: &*out.file,
                    path: &out.path,
                    old_size,
                    stash: stash_file.as_ref().map(|f| (&stash[..], &**f, &stash_path)),
                    stash_blocks_before: stash
                        .iter()
                        .scan(0u64, |acc, e| {
                            let before = *acc;
                            *acc += e.num_blocks;
                            Some(before)
                        })
                        .collect(),
                };
                range.clone().into_par_iter().try_for_each(|oi| {
                    let k = first_op + oi as u64;
                    if cp.is_done(k) {
                        return Ok(());
                    }
                    let op = &p.operations[oi];
                    // run_op checks the data's hash, once, before decoding.
                    let op_data = self.data.of(p, oi)?;
                    let reads = op.kind.reads_source().then_some(&src as &dyn SourceBytes);
                    let n = run_op(
                        &op_data,
                        p,
                        oi,
                        reads,
                        out,
                        true,
                        self.manifest.apply_memory_mib,
                    )?;
                    progress(written.fetch_add(n, Ordering::Relaxed) + n);
                    cp.done(k, n)
                })?;
                // The stage is on disk and recorded before its stash goes.
                cp.checkpoint()?;
                if stash_file.is_some() {
                    drop(stash_file);
                    fs.remove_file(&stash_path)
                        .map_err(ApplyError::io(&stash_path))?;
                }
            }
            first_op += p.operations.len() as u64;
        }
        drop(cp);
        self.finish(
            &outputs,
            &journal_path,
            written.load(Ordering::Relaxed),
            resumed,
        )
    }

    /// The first run checks every old image: a wrong base build is refused
    /// before anything is written.
    fn check_old_images(&self) -> Result<(), ApplyError> {
        let fs = self.storage;
        self.manifest.partitions.par_iter().try_for_each(|p| {
            let Some(old) = p.old else { return Ok(()) };
            let path = self.image_path(&p.name);
            let refuse = |found: String| {
                ApplyError::Refused(format!(
                    "partition {}: the package updates an image of {} bytes (sha256 {}); {} {found}",
                    p.name,
                    old.size,
                    hex_digest(&old.sha256),
                    path.display()
                ))
            };
            let f = match fs.open(&path, OpenMode::Read) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(refuse("does not exist".into()))
                }
                Err(e) => return Err(ApplyError::io(&path)(e)),
            };
            let len = f.len().map_err(ApplyError::io(&path))?;
            if len != old.size {
                return Err(refuse(format!("has {len} bytes")));
            }
            let actual = romdelta_rom::sha256_read(len, |b, off| f.read_at(b, off))
                .map_err(ApplyError::io(&path))?;
            if actual != old.sha256 {
                return Err(mismatch(Hashed::SourceImage, p, None, old.sha256, actual));
            }
            Ok(())
        })
    }

    /// Whether every image already is its new image (and the partitions
    /// the target drops are gone): the update has nothing left to do.
    pub fn images_are_new(&self) -> Result<bool, ApplyError> {
        let fs = self.storage;
        if !crate::images_hold(fs, self.manifest, |name| self.image_path(name))? {
            return Ok(false);
        }
        for r in &self.manifest.removed {
            if !self.single
                && romdelta_storage::exists(fs, &self.image_path(&r.name))
                    .map_err(ApplyError::io(&self.target))?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn report(&self, bytes_written: u64, resumed_ops: u64) -> ApplyReport {
        ApplyReport {
            partitions: self
                .manifest
                .partitions
                .iter()
                .map(|p| WrittenPartition {
                    name: p.name.clone(),
                    size: p.new.size,
                    sha256: hex_digest(&p.new.sha256),
                })
                .collect(),
            output: self.target.clone(),
            bytes_written,
            resumed_ops,
        }
    }

    /// Opens every image for writing; a partition new in the target gets a
    /// new image (on the first run).
    fn open_images(&self, first_run: bool) -> Result<Vec<Output>, ApplyError> {
        let fs = self.storage;
        let mut created = false;
        let mut outputs = Vec::new();
        for p in &self.manifest.partitions {
            let path = self.image_path(&p.name);
            let exists = romdelta_storage::exists(fs, &path).map_err(ApplyError::io(&path))?;
            let file = if exists {
                fs.open(&path, OpenMode::ReadWrite)
            } else if first_run || p.old.is_none() {
                created = true;
                fs.open(&path, OpenMode::CreateNew)
            } else {
                return Err(ApplyError::Refused(format!(
                    "{} is gone in the middle of an in-place update: install a full package to repair",
                    path.display()
                )));
            }
            .map_err(ApplyError::io(&path))?;
            outputs.push(Output {
                name: p.name.clone(),
                file,
                path,
            });
        }
        if created {
            let dir = romdelta_storage::parent_of(&self.image_path("x"));
            fs.sync_dir(&dir).map_err(ApplyError::io(&dir))?;
        }
        Ok(outputs)
    }

    /// Returns the stash of stage `si` of partition `pi`, saving it first
    /// unless the stash file already holds exactly it (a resumed stage).
    #[allow(clippy::too_many_arguments)]
    fn stash(
        &self,
        path: &Path,
        manifest_sha: Digest,
        pi: usize,
        si: usize,
        extents: &[Extent],
        out: &Output,
        old_size: u64,
    ) -> Result<Arc<dyn StorageFile>, ApplyError> {
        let fs = self.storage;
        let blocks = romdelta_format::blocks_in(extents);
        let want_len = STASH_HEADER + blocks * BLOCK_SIZE;
        let head = |content: &Digest| {
            let mut h = Vec::with_capacity(STASH_HEADER as usize);
            h.extend_from_slice(STASH_MAGIC);
            h.extend_from_slice(&1u32.to_le_bytes());
            h.extend_from_slice(&manifest_sha);
            h.extend_from_slice(&(pi as u64).to_le_bytes());
            h.extend_from_slice(&(si as u64).to_le_bytes());
            h.extend_from_slice(&blocks.to_le_bytes());
            h.extend_from_slice(content);
            h
        };
        // A stash of this stage saved by an earlier run is the only copy of
        // blocks the stage may have overwritten since: use it as it is.
        if let Some(EntryKind::File(len)) = fs.entry(path).map_err(ApplyError::io(path))? {
            if len == want_len {
                let f = fs
                    .open(path, OpenMode::Read)
                    .map_err(ApplyError::io(path))?;
                let mut h = vec![0u8; STASH_HEADER as usize];
                f.read_at(&mut h, 0).map_err(ApplyError::io(path))?;
                let content = romdelta_rom::sha256_read(len - STASH_HEADER, |b, off| {
                    f.read_at(b, STASH_HEADER + off)
                })
                .map_err(ApplyError::io(path))?;
                if h == head(&content) {
                    return Ok(f);
                }
            }
        }
        // Not saved yet: no operation of the stage has run, so the image
        // still holds these blocks as the stage must read them.
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".new");
        let tmp = PathBuf::from(tmp);
        let save = || -> std::io::Result<()> {
            romdelta_storage::remove_stale_file(fs, &tmp)?;
            let f = fs.open(&tmp, OpenMode::CreateNew)?;
            let mut h = sha2::Sha256::new();
            let mut at = STASH_HEADER;
            let mut buf = Vec::new();
            for e in extents {
                let mut pos = e.byte_offset();
                let end = e.byte_offset() + e.byte_len();
                while pos < end {
                    let n = (end - pos).min(1 << 20);
                    buf.clear();
                    buf.resize(n as usize, 0);
                    read_clamped(&*out.file, &mut buf, pos, old_size)?;
                    h.update(&buf);
                    f.write_at(&buf, at)?;
                    at += n;
                    pos += n;
                }
            }
            f.write_at(&head(&h.finalize().into()), 0)?;
            f.sync()?;
            drop(f);
            fs.rename(&tmp, path)?;
            fs.sync_dir(&romdelta_storage::parent_of(path))
        };
        save().map_err(ApplyError::io(path))?;
        fs.open(path, OpenMode::Read).map_err(ApplyError::io(path))
    }

    /// Cuts each image to its new size, checks every image's hash, removes
    /// what the target no longer has, and only then the journal.
    fn finish(
        &self,
        outputs: &[Output],
        journal_path: &Path,
        bytes_written: u64,
        resumed: u64,
    ) -> Result<ApplyReport, ApplyError> {
        let fs = self.storage;
        let m = self.manifest;
        outputs
            .par_iter()
            .zip(&m.partitions)
            .try_for_each(|(o, p)| {
                let len = o.file.len().map_err(ApplyError::io(&o.path))?;
                if len != p.new.size {
                    o.file
                        .set_len(p.new.size)
                        .map_err(ApplyError::io(&o.path))?;
                }
                sync_and_verify(o, p)
            })?;
        if !self.single {
            for r in &m.removed {
                let path = self.image_path(&r.name);
                match fs.remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(ApplyError::io(&path)(e))
                    }
                    _ => {}
                }
            }
        }
        fs.remove_file(journal_path)
            .map_err(ApplyError::io(journal_path))?;
        let dir = romdelta_storage::parent_of(journal_path);
        fs.sync_dir(&dir).map_err(ApplyError::io(&dir))?;
        Ok(self.report(bytes_written, resumed))
    }
}

/// The journal and stash of an in-place update of `target`: inside a
/// directory, beside an image file.
pub fn in_place_paths(target: &Path, single: bool) -> (PathBuf, PathBuf) {
    if single {
        let dir = romdelta_storage::parent_of(target);
        let with = |suffix: &str| {
            let mut n = std::ffi::OsString::from(".");
            n.push(target.file_name().unwrap_or_default());
            n.push(suffix);
            dir.join(n)
        };
        (with(".romdelta-journal"), with(".romdelta-stash"))
    } else {
        (
            target.join(".romdelta-journal"),
            target.join(".romdelta-stash"),
        )
    }
}

/// Reads the journal of an in-place update of a package of `ops`
/// operations; one of another length belongs to another package.
fn read_journal(fs: &dyn Storage, path: &Path, ops: u64) -> Result<Vec<u8>, ApplyError> {
    let want = 8 + 4 + 32 + 32 + 8 + ops.div_ceil(8) + 32;
    let refuse = |what: String| {
        ApplyError::Refused(format!(
            "resume journal {}: {what}; the images may be partly updated by another package: finish the update with that package, or install a full package to repair them",
            path.display()
        ))
    };
    match fs.entry(path).map_err(ApplyError::io(path))? {
        Some(EntryKind::File(len)) if len == want => {}
        Some(EntryKind::File(len)) => {
            return Err(refuse(format!(
                "{len} bytes, where a journal of this package has {want}"
            )))
        }
        _ => return Err(refuse("not a file".into())),
    }
    romdelta_storage::read_file(fs, path, want).map_err(|e| refuse(e.to_string()))
}

/// What tells the images apart from others put in their place: device and
/// inode of each (not its time, which the update itself changes).
fn image_ids(outputs: &[Output]) -> Result<Digest, ApplyError> {
    let mut h = sha2::Sha256::new();
    for o in outputs {
        h.update((o.name.len() as u64).to_le_bytes());
        h.update(o.name.as_bytes());
        let id = o.file.identity().map_err(ApplyError::io(&o.path))?;
        h.update(id[0].to_le_bytes());
        h.update(id[1].to_le_bytes());
    }
    Ok(h.finalize().into())
}

/// Reads `buf.len()` bytes at `pos` of an image whose source was
/// `old_size` bytes: bytes at or past `old_size` read as zeros.
fn read_clamped(
    f: &dyn StorageFile,
    buf: &mut [u8],
    pos: u64,
    old_size: u64,
) -> std::io::Result<()> {
    let have = old_size.saturating_sub(pos).min(buf.len() as u64) as usize;
    f.read_at(&mut buf[..have], pos)?;
    buf[have..].fill(0);
    Ok(())
}

/// The source of an in-place operation: the image itself, except the
/// stage's stashed blocks, which come from the stash file.
struct InPlaceSource<'a> {
    image: &'a dyn StorageFile,
    path: &'a Path,
    old_size: u64,
    /// Stashed extents (sorted, disjoint), the stash file, its path.
    stash: Option<(&'a [Extent], &'a dyn StorageFile, &'a PathBuf)>,
    /// For each stashed extent, the stashed blocks before it.
    stash_blocks_before: Vec<u64>,
}

impl InPlaceSource<'_> {
    /// Reads blocks `start..end` (all inside or all outside the stash).
    fn read_run(
        &self,
        start: u64,
        end: u64,
        f: &mut dyn FnMut(&[u8]),
        buf: &mut Vec<u8>,
    ) -> Result<(), ApplyError> {
        let in_stash = self.stash.and_then(|(ext, file, path)| {
            let i = ext.partition_point(|e| e.end_block() <= start);
            let e = ext.get(i).filter(|e| e.start_block <= start)?;
            let before = self.stash_blocks_before[i];
            let at = STASH_HEADER + (before + start - e.start_block) * BLOCK_SIZE;
            Some((file, path, at))
        });
        let mut pos = 0u64;
        let total = (end - start) * BLOCK_SIZE;
        while pos < total {
            let n = (total - pos).min(1 << 20);
            buf.clear();
            buf.resize(n as usize, 0);
            match in_stash {
                Some((file, path, at)) => file
                    .read_at(buf, at + pos)
                    .map_err(ApplyError::io(path.as_path()))?,
                None => read_clamped(self.image, buf, start * BLOCK_SIZE + pos, self.old_size)
                    .map_err(ApplyError::io(self.path))?,
            }
            f(buf);
            pos += n;
        }
        Ok(())
    }
}

impl SourceBytes for InPlaceSource<'_> {
    fn for_each_piece(
        &self,
        extents: &[Extent],
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<(), ApplyError> {
        let mut buf = Vec::new();
        for e in extents {
            let mut b = e.start_block;
            while b < e.end_block() {
                // Cut the extent where it enters or leaves the stash.
                let next = match self.stash {
                    None => e.end_block(),
                    Some((ext, ..)) => {
                        let i = ext.partition_point(|x| x.end_block() <= b);
                        match ext.get(i) {
                            Some(x) if x.start_block <= b => x.end_block(),
                            Some(x) => x.start_block,
                            None => e.end_block(),
                        }
                        .min(e.end_block())
                    }
                };
                self.read_run(b, next, f, &mut buf)?;
                b = next;
            }
        }
        Ok(())
    }
}
