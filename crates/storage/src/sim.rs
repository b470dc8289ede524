//! A simulated file system for fault injection: a power cut at a chosen
//! call, a full disk, an I/O error on a chosen block.
//!
//! It keeps, for every file, the bytes as written and the bytes as last
//! synced, and for the namespace, the entries as they are and as they were
//! when their directory was last synced. A power cut freezes it: that call
//! and every later one fail. [`SimFs::reboot`] then builds what a disk would
//! hold afterwards:
//! - [`CutMode::Lost`]: exactly what was synced — unsynced writes are lost,
//!   unsynced creations, renames and removals never happened;
//! - [`CutMode::Torn`]: what was synced plus a random part of the rest:
//!   every unsynced 4 KiB page of a file independently either reached the
//!   disk or not, and the unsynced namespace changes reached it up to a
//!   random one, in the order they were made (each whole: a rename is
//!   atomic), as a journaling file system commits them.
//!
//! File data is durable only after [`StorageFile::sync`] of that file, a
//! directory's entries only after [`Storage::sync_dir`] of that directory:
//! the POSIX contract, with none of the extra ordering real file systems
//! often give, so code that forgets a sync loses data here.

use crate::{EntryKind, OpenMode, Storage, StorageFile};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// The page size at which unsynced writes tear.
pub const PAGE: u64 = 4096;

/// What a reboot after a power cut keeps of what was not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutMode {
    /// Nothing.
    Lost,
    /// A random part, chosen by this seed.
    Torn(u64),
}

#[derive(Debug, Clone)]
struct Node {
    data: Vec<u8>,
    synced: Vec<u8>,
    /// Pages written since the last sync.
    dirty: BTreeSet<u64>,
    mtime: u64,
    bad_blocks: BTreeSet<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    File(u64),
    Dir,
}

#[derive(Debug, Clone)]
enum Change {
    Add(PathBuf, Entry),
    Rename(PathBuf, PathBuf),
    Remove(PathBuf),
}

impl Change {
    /// Whether the change is in directory `dir`.
    fn touches(&self, dir: &Path) -> bool {
        let in_dir = |p: &Path| p.parent() == Some(dir);
        match self {
            Change::Add(p, _) | Change::Remove(p) => in_dir(p),
            Change::Rename(a, b) => in_dir(a) || in_dir(b),
        }
    }

    fn apply(&self, ns: &mut BTreeMap<PathBuf, Entry>) {
        match self {
            Change::Add(p, e) => {
                ns.insert(p.clone(), *e);
            }
            Change::Remove(p) => {
                let below: Vec<PathBuf> = ns.keys().filter(|k| k.starts_with(p)).cloned().collect();
                for k in below {
                    ns.remove(&k);
                }
            }
            Change::Rename(from, to) => {
                let moved: Vec<PathBuf> =
                    ns.keys().filter(|k| k.starts_with(from)).cloned().collect();
                if moved.is_empty() {
                    return;
                }
                Change::Remove(to.clone()).apply(ns);
                for k in moved {
                    let e = ns.remove(&k).expect("listed");
                    let rest = k.strip_prefix(from).expect("below from");
                    let to_k = if rest.as_os_str().is_empty() {
                        to.clone()
                    } else {
                        to.join(rest)
                    };
                    ns.insert(to_k, e);
                }
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
struct State {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    /// The namespace as it is.
    names: BTreeMap<PathBuf, Entry>,
    /// The namespace as a reboot would find it, before unsynced changes.
    synced_names: BTreeMap<PathBuf, Entry>,
    /// Namespace changes not yet synced, in order.
    pending: Vec<Change>,
    clock: u64,
    /// Calls that changed something (or tried to), counted from 1.
    points: u64,
    cut_at: Option<u64>,
    dead: bool,
    capacity: Option<u64>,
}

fn power_cut() -> io::Error {
    io::Error::other("power cut (simulated)")
}

fn not_found(p: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file or directory", p.display()),
    )
}

impl State {
    fn alive(&self) -> io::Result<()> {
        if self.dead {
            return Err(power_cut());
        }
        Ok(())
    }

    /// Counts a changing call; the one chosen for the power cut fails and
    /// freezes the file system.
    fn point(&mut self) -> io::Result<()> {
        self.alive()?;
        self.points += 1;
        if self.cut_at == Some(self.points) {
            self.dead = true;
            return Err(power_cut());
        }
        Ok(())
    }

    fn parent_is_dir(&self, p: &Path) -> io::Result<()> {
        match p.parent() {
            Some(d) if d == Path::new("/") || self.names.get(d) == Some(&Entry::Dir) => Ok(()),
            Some(d) => Err(not_found(d)),
            None => Err(io::Error::other("no parent directory")),
        }
    }

    fn change(&mut self, c: Change) {
        c.apply(&mut self.names);
        self.pending.push(c);
    }

    fn used(&self) -> u64 {
        let live: BTreeSet<u64> = self
            .names
            .values()
            .filter_map(|e| match e {
                Entry::File(i) => Some(*i),
                Entry::Dir => None,
            })
            .collect();
        live.iter().map(|i| self.nodes[i].data.len() as u64).sum()
    }

    /// Fails with ENOSPC when growing a file by `grow` bytes does not fit.
    fn room_for(&self, grow: u64) -> io::Result<()> {
        if let Some(cap) = self.capacity {
            if grow > 0 && self.used() + grow > cap {
                return Err(io::Error::from_raw_os_error(28));
            }
        }
        Ok(())
    }

    fn entry(&self, p: &Path) -> Option<Entry> {
        if p == Path::new("/") {
            return Some(Entry::Dir);
        }
        self.names.get(p).copied()
    }
}

/// The simulated file system; clones share it (see [`SimFs::fork`] for a copy).
#[derive(Debug, Clone, Default)]
pub struct SimFs(Arc<Mutex<State>>);

impl SimFs {
    /// An empty file system with only `/`. Paths must be absolute.
    pub fn new() -> Self {
        SimFs::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An independent copy of the whole file system, faults included.
    pub fn fork(&self) -> SimFs {
        SimFs(Arc::new(Mutex::new(self.state().clone())))
    }

    /// Creates `dir` and its missing parents, durably (setup, not a point).
    pub fn mkdir_all(&self, dir: &Path) {
        let mut s = self.state();
        for a in dir.ancestors().collect::<Vec<_>>().into_iter().rev() {
            if a != Path::new("/") && !a.as_os_str().is_empty() {
                s.names.entry(a.to_path_buf()).or_insert(Entry::Dir);
                s.synced_names.entry(a.to_path_buf()).or_insert(Entry::Dir);
            }
        }
    }

    /// Puts a file with `bytes` at `path`, durably (setup, not a point).
    pub fn put(&self, path: &Path, bytes: &[u8]) {
        self.mkdir_all(&crate::parent_of(path));
        let mut s = self.state();
        let ino = s.next_ino;
        s.next_ino += 1;
        s.nodes.insert(
            ino,
            Node {
                data: bytes.to_vec(),
                synced: bytes.to_vec(),
                dirty: BTreeSet::new(),
                mtime: 0,
                bad_blocks: BTreeSet::new(),
            },
        );
        s.names.insert(path.to_path_buf(), Entry::File(ino));
        s.synced_names.insert(path.to_path_buf(), Entry::File(ino));
    }

    /// The current bytes of the file at `path`, if there is one.
    pub fn get(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.state();
        match s.entry(path) {
            Some(Entry::File(i)) => Some(s.nodes[&i].data.clone()),
            _ => None,
        }
    }

    /// Every file, with its current bytes, sorted by path.
    pub fn files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let s = self.state();
        s.names
            .iter()
            .filter_map(|(p, e)| match e {
                Entry::File(i) => Some((p.clone(), s.nodes[i].data.clone())),
                Entry::Dir => None,
            })
            .collect()
    }

    /// Cuts the power at the `n`th changing call from now (1 = the next
    /// one): it and every later call fail until [`SimFs::reboot`].
    pub fn cut_power_at(&self, n: u64) {
        let mut s = self.state();
        let at = s.points + n;
        s.cut_at = Some(at);
    }

    /// Changing calls made so far (writes, syncs, creations, renames,
    /// removals): the places a power cut can be put.
    pub fn points(&self) -> u64 {
        self.state().points
    }

    /// Whether the power is cut.
    pub fn is_cut(&self) -> bool {
        self.state().dead
    }

    /// Limits the bytes all files may hold; growing past it fails with
    /// ENOSPC. `None` lifts the limit.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.state().capacity = bytes;
    }

    /// Bytes all files hold now.
    pub fn used(&self) -> u64 {
        self.state().used()
    }

    /// Makes every read or write of 4 KiB block `block` of the file now at
    /// `path` fail with EIO.
    pub fn fail_block(&self, path: &Path, block: u64) -> io::Result<()> {
        let mut s = self.state();
        match s.entry(path) {
            Some(Entry::File(i)) => {
                s.nodes.get_mut(&i).expect("live").bad_blocks.insert(block);
                Ok(())
            }
            _ => Err(not_found(path)),
        }
    }

    /// Clears injected I/O errors.
    pub fn heal(&self) {
        for n in self.state().nodes.values_mut() {
            n.bad_blocks.clear();
        }
    }

    /// Restarts after a power cut (or at any moment, as if the power had
    /// been cut there): keeps what was synced and, with [`CutMode::Torn`],
    /// a random part of what was not. The power-cut point is cleared.
    pub fn reboot(&self, mode: CutMode) {
        let mut s = self.state();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(match mode {
            CutMode::Lost => 0,
            CutMode::Torn(seed) => seed,
        });
        let torn = matches!(mode, CutMode::Torn(_));
        for node in s.nodes.values_mut() {
            if torn && !node.dirty.is_empty() {
                let len = if rng.random_bool(0.5) {
                    node.data.len()
                } else {
                    node.synced.len()
                };
                let mut out = node.synced.clone();
                out.resize(len, 0);
                for &page in &node.dirty {
                    let start = (page * PAGE) as usize;
                    if start >= len || !rng.random_bool(0.5) {
                        continue;
                    }
                    let end = (start + PAGE as usize).min(len);
                    for (k, b) in out[start..end].iter_mut().enumerate() {
                        *b = node.data.get(start + k).copied().unwrap_or(0);
                    }
                }
                node.data = out;
            } else {
                node.data = node.synced.clone();
            }
            node.synced = node.data.clone();
            node.dirty.clear();
        }
        let mut names = s.synced_names.clone();
        if torn {
            // Namespace changes reach the disk in order (as a journaling
            // file system commits them): some first part of what is pending.
            let reached = rng.random_range(0..=s.pending.len());
            for c in &s.pending[..reached] {
                c.apply(&mut names);
            }
        }
        // An entry whose directory did not survive is unreachable.
        let orphans: Vec<PathBuf> = names
            .keys()
            .filter(|k| {
                k.ancestors().skip(1).any(|a| {
                    a != Path::new("/")
                        && !a.as_os_str().is_empty()
                        && names.get(a) != Some(&Entry::Dir)
                })
            })
            .cloned()
            .collect();
        for k in orphans {
            names.remove(&k);
        }
        s.names = names.clone();
        s.synced_names = names;
        s.pending.clear();
        s.dead = false;
        s.cut_at = None;
    }
}

/// A directory opened for reading (to lock it): nothing else works on it.
struct SimDir;

impl StorageFile for SimDir {
    fn read_at(&self, _: &mut [u8], _: u64) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(21))
    }
    fn write_at(&self, _: &[u8], _: u64) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(21))
    }
    fn len(&self) -> io::Result<u64> {
        Ok(0)
    }
    fn set_len(&self, _: u64) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(21))
    }
    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
    fn try_lock(&self) -> io::Result<bool> {
        Ok(true)
    }
    fn identity(&self) -> io::Result<[u64; 4]> {
        Ok([0; 4])
    }
}

/// An open file of a [`SimFs`].
struct SimFile {
    fs: SimFs,
    ino: u64,
    writable: bool,
}

fn touches_bad(node: &Node, offset: u64, len: usize) -> bool {
    if node.bad_blocks.is_empty() || len == 0 {
        return false;
    }
    let first = offset / PAGE;
    let last = (offset + len as u64 - 1) / PAGE;
    node.bad_blocks.range(first..=last).next().is_some()
}

impl StorageFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let s = self.fs.state();
        s.alive()?;
        let node = &s.nodes[&self.ino];
        if touches_bad(node, offset, buf.len()) {
            return Err(io::Error::from_raw_os_error(5));
        }
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= node.data.len() as u64)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(&node.data[offset as usize..end as usize]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::from_raw_os_error(9));
        }
        let mut s = self.fs.state();
        s.point()?;
        let len = s.nodes[&self.ino].data.len() as u64;
        let end = offset + buf.len() as u64;
        if touches_bad(&s.nodes[&self.ino], offset, buf.len()) {
            return Err(io::Error::from_raw_os_error(5));
        }
        s.room_for(end.saturating_sub(len))?;
        s.clock += 1;
        let clock = s.clock;
        let node = s.nodes.get_mut(&self.ino).expect("open file");
        if end > len {
            node.data.resize(end as usize, 0);
        }
        node.data[offset as usize..end as usize].copy_from_slice(buf);
        if !buf.is_empty() {
            node.dirty.extend(offset / PAGE..=(end - 1) / PAGE);
        }
        node.mtime = clock;
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let s = self.fs.state();
        s.alive()?;
        Ok(s.nodes[&self.ino].data.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut s = self.fs.state();
        s.point()?;
        let old = s.nodes[&self.ino].data.len() as u64;
        s.room_for(len.saturating_sub(old))?;
        s.clock += 1;
        let clock = s.clock;
        let node = s.nodes.get_mut(&self.ino).expect("open file");
        node.data.resize(len as usize, 0);
        // The length itself is unsynced until the next sync: mark the pages
        // between the two lengths.
        let (a, b) = (old.min(len), old.max(len));
        if b > a {
            node.dirty.extend(a / PAGE..=(b - 1) / PAGE);
        }
        node.mtime = clock;
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut s = self.fs.state();
        s.point()?;
        let node = s.nodes.get_mut(&self.ino).expect("open file");
        node.synced = node.data.clone();
        node.dirty.clear();
        Ok(())
    }

    fn try_lock(&self) -> io::Result<bool> {
        self.fs.state().alive()?;
        Ok(true)
    }

    fn identity(&self) -> io::Result<[u64; 4]> {
        let s = self.fs.state();
        s.alive()?;
        Ok([0, self.ino, s.nodes[&self.ino].mtime, 0])
    }
}

impl Storage for SimFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut s = self.state();
        let ino = match mode {
            OpenMode::Read | OpenMode::ReadWrite => {
                s.alive()?;
                match s.entry(path) {
                    Some(Entry::File(i)) => i,
                    Some(Entry::Dir) if mode == OpenMode::Read => return Ok(Arc::new(SimDir)),
                    Some(Entry::Dir) => return Err(io::Error::from_raw_os_error(21)),
                    None => return Err(not_found(path)),
                }
            }
            OpenMode::CreateNew => {
                s.point()?;
                s.parent_is_dir(path)?;
                if s.entry(path).is_some() {
                    return Err(io::Error::from(io::ErrorKind::AlreadyExists));
                }
                let ino = s.next_ino;
                s.next_ino += 1;
                s.clock += 1;
                let mtime = s.clock;
                s.nodes.insert(
                    ino,
                    Node {
                        data: Vec::new(),
                        synced: Vec::new(),
                        dirty: BTreeSet::new(),
                        mtime,
                        bad_blocks: BTreeSet::new(),
                    },
                );
                s.change(Change::Add(path.to_path_buf(), Entry::File(ino)));
                ino
            }
        };
        Ok(Arc::new(SimFile {
            fs: self.clone(),
            ino,
            writable: mode != OpenMode::Read,
        }))
    }

    fn entry(&self, path: &Path) -> io::Result<Option<EntryKind>> {
        let s = self.state();
        s.alive()?;
        Ok(s.entry(path).map(|e| match e {
            Entry::Dir => EntryKind::Dir,
            Entry::File(i) => EntryKind::File(s.nodes[&i].data.len() as u64),
        }))
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.point()?;
        s.parent_is_dir(path)?;
        if s.entry(path).is_some() {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        s.change(Change::Add(path.to_path_buf(), Entry::Dir));
        Ok(())
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        let s = self.state();
        s.alive()?;
        if s.entry(path) != Some(Entry::Dir) {
            return Err(not_found(path));
        }
        Ok(s.names
            .keys()
            .filter(|k| k.parent() == Some(path))
            .filter_map(|k| k.file_name().map(OsString::from))
            .collect())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.point()?;
        let what = s.entry(from).ok_or_else(|| not_found(from))?;
        s.parent_is_dir(to)?;
        match (what, s.entry(to)) {
            (Entry::File(_), Some(Entry::Dir)) => return Err(io::Error::from_raw_os_error(21)),
            (Entry::Dir, Some(Entry::File(_))) => return Err(io::Error::from_raw_os_error(20)),
            (Entry::Dir, Some(Entry::Dir)) if s.names.keys().any(|k| k.parent() == Some(to)) => {
                return Err(io::Error::from_raw_os_error(39))
            }
            _ => {}
        }
        s.change(Change::Rename(from.to_path_buf(), to.to_path_buf()));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.point()?;
        match s.entry(path) {
            Some(Entry::File(_)) => {
                s.change(Change::Remove(path.to_path_buf()));
                Ok(())
            }
            Some(Entry::Dir) => Err(io::Error::from_raw_os_error(21)),
            None => Err(not_found(path)),
        }
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.point()?;
        match s.entry(path) {
            Some(Entry::Dir) if s.names.keys().any(|k| k.parent() == Some(path)) => {
                Err(io::Error::from_raw_os_error(39))
            }
            Some(Entry::Dir) => {
                s.change(Change::Remove(path.to_path_buf()));
                Ok(())
            }
            Some(Entry::File(_)) => Err(io::Error::from_raw_os_error(20)),
            None => Err(not_found(path)),
        }
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.point()?;
        if s.entry(path) != Some(Entry::Dir) {
            return Err(not_found(path));
        }
        let pending = std::mem::take(&mut s.pending);
        let mut rest = Vec::new();
        for c in pending {
            if c.touches(path) {
                c.apply(&mut s.synced_names);
            } else {
                rest.push(c);
            }
        }
        s.pending = rest;
        Ok(())
    }

    fn set_mode(&self, path: &Path, _mode: u32) -> io::Result<()> {
        let s = self.state();
        s.alive()?;
        s.entry(path).map(|_| ()).ok_or_else(|| not_found(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write_durably;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn unsynced_writes_are_lost_and_synced_ones_kept() {
        let fs = SimFs::new();
        fs.put(&p("/d/img"), &[1u8; 3 * PAGE as usize]);
        let f = fs.open(&p("/d/img"), OpenMode::ReadWrite).unwrap();
        f.write_at(&[2u8; PAGE as usize], 0).unwrap();
        f.sync().unwrap();
        f.write_at(&[3u8; PAGE as usize], PAGE).unwrap();
        fs.reboot(CutMode::Lost);
        let data = fs.get(&p("/d/img")).unwrap();
        assert_eq!(data[0], 2);
        assert_eq!(data[PAGE as usize], 1, "the unsynced write is lost");
    }

    #[test]
    fn torn_writes_keep_some_pages_whole() {
        let mut kept = BTreeSet::new();
        for seed in 0..32 {
            let fs = SimFs::new();
            fs.put(&p("/img"), &vec![0u8; 8 * PAGE as usize]);
            let f = fs.open(&p("/img"), OpenMode::ReadWrite).unwrap();
            f.write_at(&vec![9u8; 8 * PAGE as usize], 0).unwrap();
            fs.reboot(CutMode::Torn(seed));
            let data = fs.get(&p("/img")).unwrap();
            for page in data.chunks(PAGE as usize) {
                assert!(page.iter().all(|&b| b == page[0]), "torn within a page");
                kept.insert(page[0]);
            }
        }
        assert_eq!(kept, BTreeSet::from([0, 9]));
    }

    #[test]
    fn entries_need_their_directory_synced() {
        let fs = SimFs::new();
        fs.mkdir_all(&p("/d"));
        let f = fs.open(&p("/d/new"), OpenMode::CreateNew).unwrap();
        f.write_at(b"x", 0).unwrap();
        f.sync().unwrap();
        fs.reboot(CutMode::Lost);
        assert_eq!(
            fs.get(&p("/d/new")),
            None,
            "created but directory not synced"
        );
        write_durably(&fs, &p("/d/state"), b"one").unwrap();
        fs.reboot(CutMode::Lost);
        assert_eq!(fs.get(&p("/d/state")).unwrap(), b"one");
    }

    #[test]
    fn a_power_cut_freezes_everything_until_reboot() {
        let fs = SimFs::new();
        fs.put(&p("/state"), b"old");
        fs.cut_power_at(3);
        // 1: create state.new, 2: write, 3: sync -> cut.
        assert!(write_durably(&fs, &p("/state"), b"new").is_err());
        assert!(fs.is_cut());
        assert!(fs.entry(&p("/state")).is_err());
        fs.reboot(CutMode::Torn(7));
        assert_eq!(fs.get(&p("/state")).unwrap(), b"old");
    }

    #[test]
    fn full_disk_and_bad_blocks() {
        let fs = SimFs::new();
        fs.put(&p("/a"), &[0u8; 100]);
        fs.set_capacity(Some(150));
        let f = fs.open(&p("/a"), OpenMode::ReadWrite).unwrap();
        f.write_at(&[1u8; 40], 100).unwrap();
        let e = f.write_at(&[1u8; 40], 140).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(28));
        fs.put(&p("/b"), &vec![0u8; 3 * PAGE as usize]);
        fs.fail_block(&p("/b"), 1).unwrap();
        let b = fs.open(&p("/b"), OpenMode::Read).unwrap();
        let mut buf = vec![0u8; 10];
        b.read_at(&mut buf, 0).unwrap();
        assert_eq!(
            b.read_at(&mut buf, PAGE + 5).unwrap_err().raw_os_error(),
            Some(5)
        );
    }

    #[test]
    fn renaming_a_directory_moves_what_is_below_it() {
        let fs = SimFs::new();
        fs.mkdir_all(&p("/dev"));
        fs.create_dir(&p("/dev/.stage")).unwrap();
        let f = fs
            .open(&p("/dev/.stage/x.img"), OpenMode::CreateNew)
            .unwrap();
        f.write_at(b"img", 0).unwrap();
        f.sync().unwrap();
        fs.sync_dir(&p("/dev/.stage")).unwrap();
        fs.rename(&p("/dev/.stage"), &p("/dev/out")).unwrap();
        fs.sync_dir(&p("/dev")).unwrap();
        fs.reboot(CutMode::Lost);
        assert_eq!(fs.get(&p("/dev/out/x.img")).unwrap(), b"img");
        assert_eq!(fs.entry(&p("/dev/.stage")).unwrap(), None);
    }
}
