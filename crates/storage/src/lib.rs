//! The file-system interface romdelta writes images through.
//!
//! Everything an apply or an install changes on disk — staged images, the
//! resume journal, stash files, the device state — goes through a
//! [`Storage`]: [`RealFs`] in production, [`sim::SimFs`] in the recovery
//! harness, where a power cut loses (or tears, 4 KiB at a time) every write
//! that was not synced, and where a full disk or a bad block can be injected
//! at a chosen place.
//!
//! The contract is the POSIX one, stated here because the simulated file
//! system holds code to it: file data is durable after [`StorageFile::sync`]
//! on that file; a directory's entries (files created, renamed, removed in
//! it) are durable after [`Storage::sync_dir`] on it. Metadata changes reach
//! the disk in the order they were made, each whole (a rename is atomic).
//!
//! Nothing here follows a symbolic link at the last component of a path:
//! [`Storage::entry`] reports the link itself, [`Storage::open`] refuses
//! it, and [`remove_all`] leaves it (and anything that is neither a file
//! nor a directory) alone with an error, so that whoever can write beside
//! an output or into a device cannot make romdelta change what a link
//! points to.

pub mod sim;

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How [`Storage::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// An existing file, read only.
    Read,
    /// An existing file, read and write.
    ReadWrite,
    /// A new, empty file, read and write; fails if the path exists.
    CreateNew,
}

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file of this many bytes.
    File(u64),
    /// A directory.
    Dir,
    /// A symbolic link (never followed).
    Symlink,
    /// Anything else: a fifo, a socket, a device node.
    Other,
}

impl std::fmt::Display for EntryKind {
    /// What is there, as a message says it: "a file of N bytes", "a
    /// directory", "a symbolic link", "a special file (fifo, socket or
    /// device)".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EntryKind::File(n) => write!(f, "a file of {n} bytes"),
            EntryKind::Dir => f.write_str("a directory"),
            EntryKind::Symlink => f.write_str("a symbolic link"),
            EntryKind::Other => f.write_str("a special file (fifo, socket or device)"),
        }
    }
}

/// An open file.
pub trait StorageFile: Send + Sync {
    /// Fills `buf` from `offset`; fails with `UnexpectedEof` past the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, growing the file if needed.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Truncates or extends (with zeros) to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the data and length durable.
    fn sync(&self) -> io::Result<()>;
    /// Takes an exclusive advisory lock held until the file is dropped;
    /// `false` when another holder has it.
    fn try_lock(&self) -> io::Result<bool>;
    /// Numbers that tell this file apart from another one put at the same
    /// path (device, inode) and from itself after a change (modification
    /// time, seconds and nanoseconds).
    fn identity(&self) -> io::Result<[u64; 4]>;
    /// The runs `(offset, length)` of `start..end` that may hold data, in
    /// order; the rest are holes, which read as zeros without any data
    /// behind them. Storage that cannot tell answers one run over
    /// everything (the default).
    fn data_runs(&self, start: u64, end: u64) -> io::Result<Vec<(u64, u64)>> {
        Ok(if end <= start {
            Vec::new()
        } else {
            vec![(start, end - start)]
        })
    }
}

/// A file system.
pub trait Storage: Send + Sync {
    /// Opens the file at `path`; a symbolic link there is refused, never
    /// followed.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>>;
    /// What `path` names, or `None` when nothing is there; a symbolic link
    /// is reported as one, not followed.
    fn entry(&self, path: &Path) -> io::Result<Option<EntryKind>>;
    /// Creates an empty directory (its parent must exist).
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// The names in directory `path`, sorted.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>>;
    /// Renames `from` to `to`, replacing a file at `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes an empty directory.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// Removes the directory `path` and everything below it, following no
    /// symbolic link (one below it is removed, not what it points to). The
    /// default goes through [`Storage::read_dir`] and [`remove_all`].
    fn remove_tree(&self, path: &Path) -> io::Result<()> {
        for name in self.read_dir(path)? {
            remove_all_on(self, &path.join(name))?;
        }
        self.remove_dir(path)
    }
    /// Makes the entries of directory `path` durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Sets the permission bits of `path` (where the file system has them).
    fn set_mode(&self, path: &Path, mode: u32) -> io::Result<()>;
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Whether anything is at `path`.
pub fn exists(fs: &dyn Storage, path: &Path) -> io::Result<bool> {
    Ok(fs.entry(path)?.is_some())
}

/// The error for `kind` found where romdelta expected a file or a
/// directory of its own: it was not made by romdelta and is left alone.
pub fn not_made(kind: EntryKind) -> io::Error {
    io::Error::other(format!("{kind} romdelta did not make: it was left alone"))
}

/// The shape romdelta gives one of its own paths: a staged output, a
/// journal, a stash, a device's slot directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// Either (a staged output is one or the other).
    FileOrDir,
}

/// Checks what is at `path`, one of romdelta's own paths where it makes
/// `made` (`what` names it: "the resume journal"): nothing, or a shape
/// of `made`, is returned as it is; anything else (a symbolic link above
/// all) is refused with a message naming the path, what is there and
/// what was expected.
pub fn check_made(
    found: Option<EntryKind>,
    made: Made,
    path: &Path,
    what: &str,
) -> Result<Option<EntryKind>, String> {
    let fits = match found {
        None => true,
        Some(EntryKind::File(_)) => made != Made::Dir,
        Some(EntryKind::Dir) => made != Made::File,
        Some(EntryKind::Symlink | EntryKind::Other) => false,
    };
    match found {
        Some(kind) if !fits => Err(format!(
            "{} is {kind}, not {what} romdelta made: it was left alone; remove it to go on",
            path.display()
        )),
        _ => Ok(found),
    }
}

/// The path a user named (an output, an image or directory to update, a
/// device), with a symbolic link at its end resolved on the real file
/// system (`std::fs::canonicalize`): what the user named is what the link
/// points to. Any other path, or one that does not exist, comes back as
/// it is.
pub fn resolve_link(path: &Path) -> io::Result<PathBuf> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(path),
        _ => Ok(path.to_path_buf()),
    }
}

/// Removes `path` and, when it is a directory, everything below it.
/// Nothing there is not an error. A symbolic link (or a fifo, socket or
/// device) at `path` is refused with [`not_made`] and left alone: romdelta
/// removes only files and directories it made.
pub fn remove_all(fs: &dyn Storage, path: &Path) -> io::Result<()> {
    remove_all_on(fs, path)
}

fn remove_all_on<S: Storage + ?Sized>(fs: &S, path: &Path) -> io::Result<()> {
    match fs.entry(path)? {
        None => Ok(()),
        Some(EntryKind::File(_)) => fs.remove_file(path),
        Some(EntryKind::Dir) => fs.remove_tree(path),
        Some(kind) => Err(not_made(kind)),
    }
}

/// Reads the whole file at `path`, refusing one longer than `max` bytes.
pub fn read_file(fs: &dyn Storage, path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let f = fs.open(path, OpenMode::Read)?;
    let len = f.len()?;
    if len > max {
        return Err(io::Error::other(format!(
            "{len} bytes, more than the {max} expected at most"
        )));
    }
    let mut buf = vec![0u8; len as usize];
    f.read_at(&mut buf, 0)?;
    Ok(buf)
}

/// Writes `bytes` to `path` through a synced temporary file (`PATH.new`)
/// renamed over it, then syncs the directory: after a crash `path` holds
/// either its old bytes or the new ones.
pub fn write_durably(fs: &dyn Storage, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    remove_stale_file(fs, &tmp)?;
    let f = fs.open(&tmp, OpenMode::CreateNew)?;
    f.write_at(bytes, 0)?;
    f.sync()?;
    drop(f);
    fs.rename(&tmp, path)?;
    fs.sync_dir(&parent_of(path))
}

/// Removes the file at `path` that a run which died before renaming it
/// left behind (a temporary file of romdelta's own), if there is one;
/// anything else there is refused and left alone.
pub fn remove_stale_file(fs: &dyn Storage, path: &Path) -> io::Result<()> {
    match fs.entry(path)? {
        None => Ok(()),
        Some(EntryKind::File(_)) => fs.remove_file(path),
        Some(kind) => Err(at(path, not_made(kind))),
    }
}

/// `e`, said of `path`.
fn at(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// A [`std::io::Write`] that appends to a [`StorageFile`] from an offset.
pub struct FileWriter<'a> {
    file: &'a dyn StorageFile,
    offset: u64,
}

impl<'a> FileWriter<'a> {
    /// Writes into `file` from `offset` on.
    pub fn new(file: &'a dyn StorageFile, offset: u64) -> Self {
        FileWriter { file, offset }
    }
    /// Where the next byte goes.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl io::Write for FileWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write_at(buf, self.offset)?;
        self.offset += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

/// A file of the real file system.
#[derive(Debug)]
pub struct RealFile(std::fs::File);

impl RealFile {
    /// The open file.
    pub fn file(&self) -> &std::fs::File {
        &self.0
    }
}

impl StorageFile for RealFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.0, buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.0, buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync(&self) -> io::Result<()> {
        self.0.sync_all()
    }
    fn try_lock(&self) -> io::Result<bool> {
        match self.0.try_lock() {
            Ok(()) => Ok(true),
            Err(std::fs::TryLockError::WouldBlock) => Ok(false),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
    fn identity(&self) -> io::Result<[u64; 4]> {
        use std::os::unix::fs::MetadataExt;
        let m = self.0.metadata()?;
        Ok([m.dev(), m.ino(), m.mtime() as u64, m.mtime_nsec() as u64])
    }
    fn data_runs(&self, start: u64, end: u64) -> io::Result<Vec<(u64, u64)>> {
        use std::os::fd::AsRawFd;
        let fd = self.0.as_raw_fd();
        let seek = |off: u64, whence| -> io::Result<Option<u64>> {
            let off =
                libc::off_t::try_from(off).map_err(|_| io::Error::other("offset too large"))?;
            // SAFETY: lseek on a file descriptor this value owns; it reads
            // the file's extent map and moves the file offset, which this
            // type never uses (it reads and writes with pread/pwrite).
            let r = unsafe { libc::lseek(fd, off, whence) };
            if r >= 0 {
                return Ok(Some(r as u64));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // No data at or after `off`.
                Some(libc::ENXIO) => Ok(None),
                _ => Err(e),
            }
        };
        let mut runs = Vec::new();
        let mut off = start;
        while off < end {
            let data = match seek(off, libc::SEEK_DATA) {
                Ok(Some(s)) if s < end => s,
                Ok(_) => break,
                // A file system without SEEK_DATA: everything may be data.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    return Ok(vec![(start, end - start)]);
                }
                Err(e) => return Err(e),
            };
            let hole = seek(data, libc::SEEK_HOLE)?.unwrap_or(end).min(end);
            runs.push((data, hole - data));
            off = hole;
        }
        // Put the unused offset back at the start all the same.
        seek(0, libc::SEEK_SET)?;
        Ok(runs)
    }
}

/// Opens `path` with `O_NOFOLLOW`: a symbolic link as its last component
/// fails, with a message that says so (ELOOP alone reads as a loop).
fn open_nofollow(path: &Path, o: &mut std::fs::OpenOptions) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    o.custom_flags(libc::O_NOFOLLOW);
    o.open(path).map_err(|e| {
        let link = e.raw_os_error() == Some(libc::ELOOP)
            && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        if link {
            io::Error::other("a symbolic link, which romdelta does not follow here")
        } else {
            e
        }
    })
}

impl Storage for RealFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut o = std::fs::File::options();
        match mode {
            OpenMode::Read => o.read(true),
            OpenMode::ReadWrite => o.read(true).write(true),
            OpenMode::CreateNew => o.read(true).write(true).create_new(true),
        };
        Ok(Arc::new(RealFile(open_nofollow(path, &mut o)?)))
    }
    fn entry(&self, path: &Path) -> io::Result<Option<EntryKind>> {
        match std::fs::symlink_metadata(path) {
            Ok(m) => {
                let t = m.file_type();
                Ok(Some(if t.is_dir() {
                    EntryKind::Dir
                } else if t.is_file() {
                    EntryKind::File(m.len())
                } else if t.is_symlink() {
                    EntryKind::Symlink
                } else {
                    EntryKind::Other
                }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        let mut names = std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<Vec<_>>>()?;
        names.sort();
        Ok(names)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }
    /// `std::fs::remove_dir_all`: on Linux it works through `openat` and
    /// `unlinkat` from the directory's own descriptor, opened with
    /// `O_NOFOLLOW`, so a link put anywhere in the tree, even while it is
    /// being removed, is unlinked and never followed.
    fn remove_tree(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::File::open(path)?.sync_all()
    }
    /// Through a descriptor opened with `O_NOFOLLOW` (`fchmod`): a link put
    /// at `path` since it was made is refused, not followed.
    fn set_mode(&self, path: &Path, mode: u32) -> io::Result<()> {
        let f = open_nofollow(path, std::fs::File::options().read(true))?;
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_runs_cover_the_written_bytes_and_skip_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = RealFs.open(&path, OpenMode::CreateNew).unwrap();
        let len = 16u64 << 20;
        f.set_len(len).unwrap();
        assert!(f.data_runs(0, 0).unwrap().is_empty());
        f.write_at(&[7; 4096], 4 << 20).unwrap();
        f.write_at(&[9; 100], len - 100).unwrap();
        let runs = f.data_runs(0, len).unwrap();
        // Sorted, disjoint, inside the file, and covering both writes.
        for w in runs.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "{runs:?}");
        }
        assert!(runs.iter().all(|&(o, n)| n > 0 && o + n <= len), "{runs:?}");
        let covered = |at: u64| runs.iter().any(|&(o, n)| o <= at && at < o + n);
        assert!(covered(4 << 20) && covered((4 << 20) + 4095) && covered(len - 1));
        // A file system with holes (ext4, xfs, tmpfs, btrfs) leaves most of it out.
        let data: u64 = runs.iter().map(|r| r.1).sum();
        if data == len {
            eprintln!("this file system reports no holes");
        }
        // Only the range asked.
        assert!(f
            .data_runs(0, 1 << 20)
            .unwrap()
            .iter()
            .all(|&(o, n)| o + n <= 1 << 20));
        let inner = f.data_runs((4 << 20) + 100, (4 << 20) + 200).unwrap();
        assert_eq!(inner, [((4 << 20) + 100, 100)], "inside a written block");
        let tail = f.data_runs(len - 50, len).unwrap();
        assert!(tail.iter().all(|&(o, n)| o >= len - 50 && o + n <= len));
        assert!(tail.iter().any(|&(o, _)| o == len - 50), "{tail:?}");
    }

    #[test]
    fn write_durably_replaces_and_remove_all_clears_a_tree() {
        let dir = tempfile::tempdir().unwrap();
        let fs = RealFs;
        let p = dir.path().join("state");
        write_durably(&fs, &p, b"one").unwrap();
        write_durably(&fs, &p, b"two").unwrap();
        assert_eq!(read_file(&fs, &p, 16).unwrap(), b"two");
        assert!(read_file(&fs, &p, 2).is_err());
        let tree = dir.path().join("t");
        fs.create_dir(&tree).unwrap();
        fs.create_dir(&tree.join("sub")).unwrap();
        let f = fs.open(&tree.join("sub/x"), OpenMode::CreateNew).unwrap();
        f.write_at(b"abc", 5).unwrap();
        assert_eq!(f.len().unwrap(), 8);
        drop(f);
        assert_eq!(fs.read_dir(&tree).unwrap(), vec![OsString::from("sub")]);
        remove_all(&fs, &tree).unwrap();
        assert_eq!(fs.entry(&tree).unwrap(), None);
    }

    /// A directory holding a file and a subdirectory, and a file: what a
    /// planted link points to.
    fn victim(root: &Path) -> (PathBuf, PathBuf) {
        let v = root.join("victim");
        std::fs::create_dir_all(v.join("sub")).unwrap();
        std::fs::write(v.join("a.txt"), b"precious").unwrap();
        let f = root.join("precious.txt");
        std::fs::write(&f, b"precious").unwrap();
        (v, f)
    }

    fn assert_intact(v: &Path, f: &Path) {
        assert_eq!(std::fs::read(v.join("a.txt")).unwrap(), b"precious");
        assert!(v.join("sub").is_dir());
        assert_eq!(std::fs::read(f).unwrap(), b"precious");
    }

    #[test]
    fn remove_all_refuses_a_symlink_and_never_touches_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let fs = RealFs;
        let (v, f) = victim(dir.path());
        let dangling = dir.path().join("nothing");
        for (i, to) in [&v, &f, &dangling].into_iter().enumerate() {
            let link = dir.path().join(format!("link{i}"));
            std::os::unix::fs::symlink(to, &link).unwrap();
            assert_eq!(fs.entry(&link).unwrap(), Some(EntryKind::Symlink));
            let e = remove_all(&fs, &link).unwrap_err();
            assert!(e.to_string().contains("symbolic link"), "{e}");
            assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
            assert_intact(&v, &f);
        }
        // A fifo is neither a file nor a directory: left alone too.
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path and a mode.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(fs.entry(&fifo).unwrap(), Some(EntryKind::Other));
        assert!(remove_all(&fs, &fifo).is_err());
        assert!(fifo.exists());
        // Links inside a tree are removed as links, their targets kept.
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("deep")).unwrap();
        std::os::unix::fs::symlink(&v, tree.join("to-dir")).unwrap();
        std::os::unix::fs::symlink(&f, tree.join("deep/to-file")).unwrap();
        remove_all(&fs, &tree).unwrap();
        assert_eq!(fs.entry(&tree).unwrap(), None);
        assert_intact(&v, &f);
    }

    #[test]
    fn open_set_mode_and_write_durably_refuse_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let fs = RealFs;
        let (v, f) = victim(dir.path());
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        for mode in [OpenMode::Read, OpenMode::ReadWrite, OpenMode::CreateNew] {
            let e = fs.open(&link, mode).err().expect("a link is not opened");
            if mode != OpenMode::CreateNew {
                assert!(e.to_string().contains("symbolic link"), "{e}");
            }
        }
        assert!(fs.set_mode(&link, 0o777).is_err());
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(&f).unwrap().permissions().mode();
        assert_ne!(m & 0o777, 0o777, "set_mode followed the link");
        // A link at the temporary name of a durable write is refused.
        let state = dir.path().join("state");
        std::os::unix::fs::symlink(&v, dir.path().join("state.new")).unwrap();
        let e = write_durably(&fs, &state, b"x").unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(fs.entry(&state).unwrap(), None);
        assert_intact(&v, &f);
        // A link to a directory is not opened as the directory either.
        std::os::unix::fs::symlink(&v, dir.path().join("dlink")).unwrap();
        assert!(fs.open(&dir.path().join("dlink"), OpenMode::Read).is_err());
    }

    #[test]
    fn check_made_admits_only_the_shapes_romdelta_makes() {
        let p = Path::new("/x/.out.romdelta-partial");
        let ok = |k, m| check_made(k, m, p, "the staged output").is_ok();
        assert!(ok(None, Made::File) && ok(None, Made::Dir));
        assert!(ok(Some(EntryKind::File(3)), Made::File));
        assert!(ok(Some(EntryKind::Dir), Made::FileOrDir));
        assert!(!ok(Some(EntryKind::Dir), Made::File));
        assert!(!ok(Some(EntryKind::File(3)), Made::Dir));
        for m in [Made::File, Made::Dir, Made::FileOrDir] {
            assert!(!ok(Some(EntryKind::Other), m));
            let e = check_made(Some(EntryKind::Symlink), m, p, "the staged output").unwrap_err();
            assert_eq!(
                e,
                "/x/.out.romdelta-partial is a symbolic link, not the staged output romdelta made: it was left alone; remove it to go on"
            );
        }
    }
}
