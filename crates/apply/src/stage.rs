//! The staged output and its resume journal.
//!
//! An apply writes its images under a hidden name beside the output,
//! `.NAME.romdelta-partial` (a file, or a directory of `PART.img`), and keeps
//! `.NAME.romdelta-journal` beside it: at checkpoints the staged images are
//! synced, then the journal is rewritten (new file, synced, renamed) to list
//! every operation whose writes are on disk. A run that finds a journal of
//! the same package and source reopens the staged images and skips what the
//! journal lists; a journal of anything else is refused. A run that fails
//! with an error removes both; a run that is killed or loses power leaves
//! them for the next run. Either path holding anything romdelta does not
//! make there (a symbolic link above all) is refused and left alone.

use crate::exec::sparse_form_path;
use crate::{ApplyError, Plan};
use romdelta_format::journal::Journal;
use romdelta_format::{hex_digest, Digest, Manifest};
use romdelta_rom::{Layout, Partition};
use romdelta_storage::{EntryKind, Made, OpenMode, Storage, StorageFile};
use sha2::Digest as _;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One staged image being written.
pub(crate) struct Output {
    pub(crate) name: String,
    pub(crate) file: Arc<dyn StorageFile>,
    pub(crate) path: PathBuf,
}

/// Where the staged output and the journal of output `out` live.
pub fn staging_paths(out: &Path) -> (PathBuf, PathBuf) {
    let parent = parent_of(out);
    let name = out.file_name().map(OsString::from).unwrap_or_default();
    let with = |suffix: &str| {
        let mut n = OsString::from(".");
        n.push(&name);
        n.push(suffix);
        parent.join(n)
    };
    (with(".romdelta-partial"), with(".romdelta-journal"))
}

pub(crate) use romdelta_storage::parent_of;

/// What refusals call the sparse form written beside a staged image.
pub(crate) const SPARSE_FORM: &str = "the sparse form romdelta writes";

/// What is at `path`, one of romdelta's own paths where it makes `made`
/// (`what` names it); anything else there is refused, naming it, and
/// left alone.
pub(crate) fn own_entry(
    fs: &dyn Storage,
    path: &Path,
    made: Made,
    what: &str,
) -> Result<Option<EntryKind>, ApplyError> {
    let found = fs.entry(path).map_err(ApplyError::io(path))?;
    romdelta_storage::check_made(found, made, path, what).map_err(ApplyError::Refused)
}

/// Removes the file romdelta made at `path` (`what` names it), if there
/// is one; anything else there is refused and left alone.
pub(crate) fn remove_own_file(fs: &dyn Storage, path: &Path, what: &str) -> Result<(), ApplyError> {
    if own_entry(fs, path, Made::File, what)?.is_some() {
        fs.remove_file(path).map_err(ApplyError::io(path))?;
    }
    Ok(())
}

pub(crate) fn sync_dir(fs: &dyn Storage, dir: &Path) -> Result<(), ApplyError> {
    fs.sync_dir(dir).map_err(ApplyError::io(dir))
}

/// The staged output: removed on drop unless kept (after success, or to
/// resume after an interrupted stream).
pub(crate) struct Staging<'a> {
    pub(crate) fs: &'a dyn Storage,
    pub(crate) staged: PathBuf,
    pub(crate) journal: PathBuf,
    pub(crate) dir: bool,
    /// Held for the whole run: a second apply to the same output fails.
    _lock: Arc<dyn StorageFile>,
    armed: bool,
}

impl Staging<'_> {
    /// Keeps the staged output and journal on disk when dropped.
    pub(crate) fn keep(&mut self) {
        self.armed = false;
    }
}

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        if self.armed {
            // Only what romdelta made: a link put there since is left.
            let _ = remove_own_file(self.fs, &self.journal, "the resume journal");
            let _ = romdelta_storage::remove_all(self.fs, &self.staged);
            if !self.dir {
                let _ = remove_own_file(self.fs, &sparse_form_path(&self.staged), SPARSE_FORM);
            }
        }
    }
}

/// A fingerprint of the source files a plan reads: name, size, device,
/// inode and modification time of each. A journal written while reading
/// other files (another build put in place) does not match it.
fn source_id(
    m: &Manifest,
    sources: &[Option<&Partition>],
    others: &[(String, &Partition)],
) -> Result<Digest, ApplyError> {
    let mut h = sha2::Sha256::new();
    // The other source partitions read (format version 5) follow the own
    // ones; a package without them hashes as before.
    let named = others.iter().map(|(n, s)| (n.as_str(), Some(*s)));
    for (name, s) in m
        .partitions
        .iter()
        .map(|p| p.name.as_str())
        .zip(sources.iter().copied())
        .chain(named)
    {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        if let Some(s) = s {
            let id = s.identity().map_err(ApplyError::io(&s.path))?;
            h.update(s.size().to_le_bytes());
            for v in id {
                h.update(v.to_le_bytes());
            }
        }
    }
    Ok(h.finalize().into())
}

fn lock(file: &dyn StorageFile, path: &Path) -> Result<(), ApplyError> {
    match file.try_lock() {
        Ok(true) => Ok(()),
        Ok(false) => Err(ApplyError::Refused(format!(
            "{} is being written by another romdelta apply",
            path.display()
        ))),
        Err(e) => Err(ApplyError::io(path)(e)),
    }
}

fn open_rw(
    fs: &dyn Storage,
    path: &Path,
    create: bool,
) -> Result<Arc<dyn StorageFile>, ApplyError> {
    let mode = if create {
        OpenMode::CreateNew
    } else {
        OpenMode::ReadWrite
    };
    fs.open(path, mode).map_err(ApplyError::io(path))
}

/// The staged output of a plan, with the journal to resume from.
pub(crate) struct Staged<'a> {
    pub(crate) staging: Staging<'a>,
    pub(crate) outputs: Vec<Output>,
    pub(crate) journal: Journal,
    /// Operations the journal already listed as done.
    pub(crate) resumed: u64,
}

impl<'a> Plan<'a> {
    /// Creates the staged output, or reopens it when a journal of this
    /// package and source says how far a previous run got.
    pub(crate) fn stage(&self) -> Result<Staged<'a>, ApplyError> {
        let fs = self.storage;
        let m = self.manifest;
        let (staged, journal_path) = staging_paths(&self.output.path);
        let dir = self.output.layout == Layout::Directory;
        let manifest_sha = romdelta_format::sha256(&m.encode());
        let source = source_id(m, &self.sources, &self.others)?;
        let ops: u64 = m.partitions.iter().map(|p| p.operations.len() as u64).sum();
        let image_path = |i: usize| {
            if dir {
                staged.join(format!("{}.img", m.partitions[i].name))
            } else {
                staged.clone()
            }
        };
        let staged_kind = own_entry(fs, &staged, Made::FileOrDir, "the staged output")?;
        if own_entry(fs, &journal_path, Made::File, "the resume journal")?.is_some() {
            let journal = load_journal(fs, &journal_path, ops, manifest_sha, source)?;
            let how = |what: String| {
                ApplyError::Refused(format!(
                    "{what}; it does not match its journal {}: remove both to start over",
                    journal_path.display()
                ))
            };
            let lock_file = open_lock(fs, &staged, dir)
                .map_err(|e| how(format!("staged output {}: {e}", staged.display())))?;
            lock(&*lock_file, &staged)?;
            let mut outputs = Vec::new();
            for (i, p) in m.partitions.iter().enumerate() {
                let path = image_path(i);
                let file =
                    open_rw(fs, &path, false).map_err(|e| how(format!("staged image: {e}")))?;
                let len = file.len().map_err(ApplyError::io(&path))?;
                if len != p.new.size {
                    return Err(how(format!(
                        "staged image {} has {len} bytes, the package writes {}",
                        path.display(),
                        p.new.size
                    )));
                }
                outputs.push(Output {
                    name: p.name.clone(),
                    file,
                    path,
                });
            }
            let resumed = journal.done_count();
            return Ok(Staged {
                staging: Staging {
                    fs,
                    staged,
                    journal: journal_path,
                    dir,
                    _lock: lock_file,
                    armed: true,
                },
                outputs,
                journal,
                resumed,
            });
        }
        // No journal: whatever is staged was never checkpointed (or was
        // verified and is about to be renamed by a run that died): start over,
        // unless another apply holds it.
        if let Some(kind) = staged_kind {
            let f =
                open_lock(fs, &staged, kind == EntryKind::Dir).map_err(ApplyError::io(&staged))?;
            lock(&*f, &staged)?;
            drop(f);
            romdelta_storage::remove_all(fs, &staged).map_err(ApplyError::io(&staged))?;
        }
        // The sparse form a run that died was writing beside a staged image.
        if !dir {
            remove_own_file(fs, &sparse_form_path(&staged), SPARSE_FORM)?;
        }
        let lock_file = if dir {
            fs.create_dir(&staged).map_err(ApplyError::io(&staged))?;
            open_lock(fs, &staged, true).map_err(ApplyError::io(&staged))?
        } else {
            let f = open_rw(fs, &staged, true)?;
            fs.set_mode(&staged, 0o644)
                .map_err(ApplyError::io(&staged))?;
            f
        };
        lock(&*lock_file, &staged)?;
        let staging = Staging {
            fs,
            staged: staged.clone(),
            journal: journal_path,
            dir,
            _lock: lock_file,
            armed: true,
        };
        let mut outputs = Vec::new();
        for (i, p) in m.partitions.iter().enumerate() {
            let path = image_path(i);
            let file = open_rw(fs, &path, dir)?;
            file.set_len(p.new.size).map_err(ApplyError::io(&path))?;
            outputs.push(Output {
                name: p.name.clone(),
                file,
                path,
            });
        }
        // The staged images' names must be on disk before any journal
        // lists their contents: a journal surviving a power cut without
        // the files it describes could never be resumed.
        if dir {
            sync_dir(fs, &staged)?;
        }
        sync_dir(fs, &parent_of(&staged))?;
        Ok(Staged {
            staging,
            outputs,
            journal: Journal::new(manifest_sha, source, ops),
            resumed: 0,
        })
    }
}

/// Reads the journal at `path` and checks that it belongs to this package
/// and source.
fn load_journal(
    fs: &dyn Storage,
    path: &Path,
    ops: u64,
    manifest_sha: Digest,
    source: Digest,
) -> Result<Journal, ApplyError> {
    let expected_len = 8 + 4 + 32 + 32 + 8 + ops.div_ceil(8) + 32;
    let refuse = |what: String| {
        ApplyError::Refused(format!(
            "resume journal {}: {what}; remove it and the staged output beside it to start over",
            path.display()
        ))
    };
    let len = match fs.entry(path).map_err(ApplyError::io(path))? {
        Some(EntryKind::File(len)) => len,
        _ => return Err(refuse("not a file".into())),
    };
    if len != expected_len {
        return Err(refuse(format!(
            "{len} bytes, a journal of this package has {expected_len}"
        )));
    }
    let bytes =
        romdelta_storage::read_file(fs, path, expected_len).map_err(ApplyError::io(path))?;
    let j = Journal::decode(&bytes, ops).map_err(|e| refuse(e.to_string()))?;
    if j.manifest_sha256 != manifest_sha {
        return Err(refuse(format!(
            "it belongs to another package (manifest sha256 {}, this package {})",
            hex_digest(&j.manifest_sha256),
            hex_digest(&manifest_sha)
        )));
    }
    if j.source_id != source {
        return Err(refuse(
            "it was written while reading other source images (their size, inode or time changed)"
                .into(),
        ));
    }
    Ok(j)
}

/// Records finished operations and, at checkpoints, makes them durable:
/// sync the staged images, then replace the journal.
pub(crate) struct Checkpointer<'a> {
    fs: &'a dyn Storage,
    outputs: &'a [Output],
    path: &'a Path,
    journal: Mutex<Journal>,
    /// The journal as loaded: which operations an earlier run finished.
    loaded: Journal,
    /// Finished since the last checkpoint (not yet known to be on disk).
    pending: Mutex<Vec<u64>>,
    last: Mutex<Instant>,
    bytes_since: AtomicU64,
    interval: Duration,
    bytes_interval: u64,
    /// Set by [`Checkpointer::in_background`]: checkpoints are made by
    /// [`Checkpointer::serve`] on its own thread.
    background: bool,
    /// What the background thread is asked: (a checkpoint is due, stop).
    asked: Mutex<(bool, bool)>,
    wake: Condvar,
    /// A background checkpoint failed: its error, until a worker takes it.
    failed: AtomicBool,
    error: Mutex<Option<ApplyError>>,
}

impl<'a> Checkpointer<'a> {
    pub(crate) fn new(
        fs: &'a dyn Storage,
        outputs: &'a [Output],
        path: &'a Path,
        journal: Journal,
        every: CheckpointEvery,
    ) -> Self {
        Checkpointer {
            fs,
            outputs,
            path,
            loaded: journal.clone(),
            journal: Mutex::new(journal),
            pending: Mutex::new(Vec::new()),
            last: Mutex::new(Instant::now()),
            bytes_since: AtomicU64::new(0),
            interval: every.interval,
            bytes_interval: every.bytes,
            background: false,
            asked: Mutex::new((false, false)),
            wake: Condvar::new(),
            failed: AtomicBool::new(false),
            error: Mutex::new(None),
        }
    }

    /// When `yes`, leaves the checkpoints [`Checkpointer::done`] finds due
    /// to a thread running [`Checkpointer::serve`], so that workers go on
    /// with their operations while the images are synced: at most one at a
    /// time, so when operations outrun the syncs there are fewer of them.
    /// Otherwise (one worker) the worker makes them itself, and a run is
    /// the same sequence of calls every time.
    pub(crate) fn in_background(mut self, yes: bool) -> Self {
        self.background = yes;
        self
    }

    /// Makes the checkpoints asked for until [`Checkpointer::stop`]; run it
    /// on a thread of its own. A failed checkpoint ends it: its error goes
    /// to the next [`Checkpointer::done`] (or to
    /// [`Checkpointer::take_error`]).
    pub(crate) fn serve(&self) {
        loop {
            {
                let mut asked = self.asked.lock().expect("not poisoned");
                while !asked.0 && !asked.1 {
                    asked = self.wake.wait(asked).expect("not poisoned");
                }
                if asked.1 {
                    return;
                }
                asked.0 = false;
            }
            if let Err(e) = self.checkpoint() {
                *self.error.lock().expect("not poisoned") = Some(e);
                self.failed.store(true, Ordering::SeqCst);
                return;
            }
        }
    }

    /// Ends [`Checkpointer::serve`] after the checkpoint it is making.
    pub(crate) fn stop(&self) {
        self.asked.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.wake.notify_all();
    }

    /// Runs [`Checkpointer::serve`] on a thread of `scope` until the
    /// returned guard is dropped (also when a worker panics, so the scope
    /// never waits on it forever).
    pub(crate) fn serve_in<'s, 'e>(
        &'s self,
        scope: &'s std::thread::Scope<'s, 'e>,
    ) -> StopServing<'s, 'a> {
        scope.spawn(|| self.serve());
        StopServing(self)
    }

    /// The error of a failed background checkpoint that no worker has
    /// taken (ask once [`Checkpointer::serve`] has returned).
    pub(crate) fn take_error(&self) -> Option<ApplyError> {
        self.error.lock().expect("not poisoned").take()
    }

    /// Whether an earlier run finished operation `i` (read from the journal
    /// as loaded, so workers never wait on a checkpoint's sync to ask).
    pub(crate) fn is_done(&self, i: u64) -> bool {
        self.loaded.is_done(i)
    }

    /// Notes that operation `i` finished writing `bytes`; checkpoints when
    /// enough time or data has passed.
    pub(crate) fn done(&self, i: u64, bytes: u64) -> Result<(), ApplyError> {
        if self.failed.load(Ordering::SeqCst) {
            if let Some(e) = self.error.lock().expect("not poisoned").take() {
                return Err(e);
            }
        }
        self.pending.lock().expect("not poisoned").push(i);
        let since = self.bytes_since.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let due = since >= self.bytes_interval
            || self.last.lock().expect("not poisoned").elapsed() >= self.interval;
        if due && self.background {
            // Counted again from now, so that one checkpoint is asked for
            // per interval rather than one per operation until it starts.
            self.bytes_since.store(0, Ordering::Relaxed);
            *self.last.lock().expect("not poisoned") = Instant::now();
            self.asked.lock().expect("not poisoned").0 = true;
            self.wake.notify_one();
        } else if due {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Syncs the staged images and records every operation finished before
    /// the sync began.
    pub(crate) fn checkpoint(&self) -> Result<(), ApplyError> {
        // One checkpoint at a time; the journal lock serialises them.
        let mut journal = self.journal.lock().expect("not poisoned");
        let batch = std::mem::take(&mut *self.pending.lock().expect("not poisoned"));
        *self.last.lock().expect("not poisoned") = Instant::now();
        self.bytes_since.store(0, Ordering::Relaxed);
        if batch.is_empty() {
            return Ok(());
        }
        for o in self.outputs {
            o.file.sync().map_err(ApplyError::io(&o.path))?;
        }
        for i in batch {
            journal.set_done(i);
        }
        romdelta_storage::write_durably(self.fs, self.path, &journal.encode())
            .map_err(ApplyError::io(self.path))
    }
}

/// Stops a [`Checkpointer::serve_in`] thread when dropped.
pub(crate) struct StopServing<'s, 'a>(&'s Checkpointer<'a>);

impl Drop for StopServing<'_, '_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// How often an apply makes its progress durable: after this much data
/// or this much time, whichever comes first.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointEvery {
    /// Bytes written.
    pub bytes: u64,
    /// Time.
    pub interval: Duration,
}

impl Default for CheckpointEvery {
    fn default() -> Self {
        CheckpointEvery {
            bytes: 16 << 20,
            interval: Duration::from_millis(500),
        }
    }
}

/// Opens what `flock` is taken on: the staged image, or the staged directory.
fn open_lock(fs: &dyn Storage, path: &Path, dir: bool) -> std::io::Result<Arc<dyn StorageFile>> {
    if dir && fs.entry(path)? != Some(EntryKind::Dir) {
        return Err(std::io::Error::other("not a directory"));
    }
    fs.open(path, OpenMode::Read)
}
