//! Block-based OTAs ([`romdelta_android::blockota`]) applied the way
//! recovery's updater applies them, to an image file (or a directory of
//! `NAME.img`), resumably.
//!
//! A fresh run first checks, without writing, every source hash the list
//! carries against the image as it is: a `move`, a patch or a `stash`
//! reads only blocks no earlier command wrote (releasetools orders and
//! stashes so), so every source is the old image's and is checked before
//! the first write. A wrong base build is refused there, naming the
//! partition, the line and the command. Then, per command, in order:
//! - `stash` saves blocks to a file of the state directory
//!   (`.NAME.img.romdelta-blockota/`, beside the image), synced and
//!   renamed into place; `free` removes it;
//! - `move` and the patches assemble their source (image blocks and
//!   stashes), check its SHA-1, build the target, check its SHA-1 and only
//!   then write it; a source that overlaps its target is first saved to
//!   the state directory, so that a resumed run reads what the first read;
//! - `new` writes the next blocks of new.dat, `zero` and `erase` zeros.
//!
//! The journal (`journal` in the state directory) names the list (its
//! SHA-256) and the first command not known done. It is written, after a
//! sync of the image, before any command that would overwrite blocks a
//! command since the last journal read (or free a stash it used), before
//! a command whose source overlaps its target, and every
//! [`FLUSH_BYTES`]: re-running from the journal's command reads exactly
//! what the first run read. A power cut or an error leaves it; the same
//! command resumes. The state directory is removed once every command is
//! done and synced.

use crate::ApplyError;
use romdelta_android::blockota::{
    sha1_hex, Command, PartitionOta, PatchKind, RangeSet, Source, BLOCK, MAX_BUFFER_BLOCKS,
};
use romdelta_format::inplace::BlockSet;
use romdelta_storage::{
    check_made, parent_of, read_file, remove_all, write_durably, Made, OpenMode, Storage,
    StorageFile,
};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes written between journal updates at most.
pub const FLUSH_BYTES: u64 = 64 << 20;
const JOURNAL_MAGIC: &str = "romdelta-blockota-journal 1";

/// What a run did to one partition.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PartitionRun {
    /// The partition.
    pub name: String,
    /// The image written.
    pub image: PathBuf,
    /// Commands run (not counting those a resumed run found done).
    pub commands: usize,
    /// The command a resumed run started at (its line), if it resumed.
    pub resumed_at_line: Option<usize>,
    /// Blocks written.
    pub blocks_written: u64,
    /// Source and stash SHA-1s checked.
    pub source_hashes: u64,
    /// Target SHA-1s checked.
    pub target_hashes: u64,
    /// The image already held what the list writes (nothing was done).
    pub already_applied: bool,
}

fn refused(why: String) -> ApplyError {
    ApplyError::Refused(why)
}

/// Reads `ranges` of `img` into one buffer, in order.
fn read_ranges(
    img: &dyn StorageFile,
    ranges: &RangeSet,
    path: &Path,
) -> Result<Vec<u8>, ApplyError> {
    let mut out = vec![0u8; (ranges.blocks() * BLOCK) as usize];
    let mut at = 0usize;
    for &(a, b) in &ranges.0 {
        let n = ((b - a) * BLOCK) as usize;
        img.read_at(&mut out[at..at + n], a * BLOCK)
            .map_err(ApplyError::io(path))?;
        at += n;
    }
    Ok(out)
}

fn write_ranges(
    img: &dyn StorageFile,
    ranges: &RangeSet,
    data: &[u8],
    path: &Path,
) -> Result<(), ApplyError> {
    let mut at = 0usize;
    for &(a, b) in &ranges.0 {
        let n = ((b - a) * BLOCK) as usize;
        img.write_at(&data[at..at + n], a * BLOCK)
            .map_err(ApplyError::io(path))?;
        at += n;
    }
    Ok(())
}

/// Places `bytes` (whole blocks, in order) at the buffer positions `at`.
fn place(buf: &mut [u8], at: &RangeSet, bytes: &[u8]) {
    let mut from = 0usize;
    for &(a, b) in &at.0 {
        let n = ((b - a) * BLOCK) as usize;
        let to = (a * BLOCK) as usize;
        buf[to..to + n].copy_from_slice(&bytes[from..from + n]);
        from += n;
    }
}

/// Adds the blocks of `r` to `set`.
fn add(set: &mut BlockSet, r: &RangeSet) {
    for e in r.extents() {
        set.insert(e);
    }
}

/// Whether any block of `r` is in `set`.
fn any(set: &BlockSet, r: &RangeSet) -> bool {
    r.extents().into_iter().any(|e| set.first_in(e).is_some())
}

/// The pieces of at most 256 blocks (1 MiB) `r` is written in, in order:
/// (first block, blocks).
fn pieces(r: &RangeSet) -> impl Iterator<Item = (u64, u64)> + '_ {
    r.0.iter()
        .flat_map(|&(a, b)| (a..b).step_by(256).map(move |at| (at, (b - at).min(256))))
}

/// One partition's run.
struct Run<'a> {
    part: &'a PartitionOta,
    fs: &'a dyn Storage,
    img: Arc<dyn StorageFile>,
    path: PathBuf,
    /// The state directory; `None` for an extract to a new file.
    state: Option<PathBuf>,
    /// Whether the image started as zeros (a new file): zero and erase
    /// need not write.
    fresh: bool,
}

impl Run<'_> {
    fn what(&self, line: usize, c: &Command) -> String {
        format!("{}: line {line} ({})", self.part.name, c.name())
    }

    fn stash_path(&self, id: &str) -> PathBuf {
        self.state
            .as_ref()
            .expect("stashes only with a state directory")
            .join(format!("stash-{id}"))
    }

    fn journal_path(&self) -> PathBuf {
        self.state.as_ref().expect("state").join("journal")
    }

    fn source_path(&self) -> PathBuf {
        self.state.as_ref().expect("state").join("source")
    }

    fn write_journal(&self, next: usize) -> Result<(), ApplyError> {
        let text = format!(
            "{JOURNAL_MAGIC}\nlist {}\nnext {next}\n",
            romdelta_format::hex_digest(&self.part.list_sha256)
        );
        let p = self.journal_path();
        write_durably(self.fs, &p, text.as_bytes()).map_err(ApplyError::io(p))
    }

    /// The index of the next command, from the journal, if there is one.
    fn read_journal(&self) -> Result<Option<usize>, ApplyError> {
        let p = self.journal_path();
        let found = self.fs.entry(&p).map_err(ApplyError::io(&p))?;
        check_made(found, Made::File, &p, "the resume journal").map_err(refused)?;
        if found.is_none() {
            return Ok(None);
        }
        let text = read_file(self.fs, &p, 4096).map_err(ApplyError::io(&p))?;
        let text = String::from_utf8_lossy(&text);
        let mut l = text.lines();
        let list = format!(
            "list {}",
            romdelta_format::hex_digest(&self.part.list_sha256)
        );
        if l.next() != Some(JOURNAL_MAGIC) {
            return Err(refused(format!("{}: not a romdelta journal", p.display())));
        }
        if l.next() != Some(list.as_str()) {
            return Err(refused(format!(
                "{}: an update with another transfer list is in progress on this image; finish it with that package (or restore the image and remove {})",
                p.display(),
                parent_of(&p).display()
            )));
        }
        let next = l
            .next()
            .and_then(|n| n.strip_prefix("next "))
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n <= self.part.list.commands.len())
            .ok_or_else(|| refused(format!("{}: no command index", p.display())))?;
        Ok(Some(next))
    }

    /// The stash `id`'s bytes, from its file.
    fn load_stash(&self, id: &str) -> Result<Vec<u8>, ApplyError> {
        let p = self.stash_path(id);
        read_file(self.fs, &p, MAX_BUFFER_BLOCKS * BLOCK).map_err(ApplyError::io(p))
    }

    /// The source buffer of a command: image blocks and stashes.
    fn load_source(
        &self,
        src: &Source,
        stash: &dyn Fn(&str) -> Result<Vec<u8>, ApplyError>,
        what: &str,
    ) -> Result<Vec<u8>, ApplyError> {
        let mut buf = match (&src.ranges, &src.at) {
            // The image's blocks alone fill the buffer, in order.
            (Some(r), None) if r.blocks() == src.blocks => read_ranges(&*self.img, r, &self.path)?,
            _ => vec![0u8; (src.blocks * BLOCK) as usize],
        };
        if let (Some(r), Some(at)) = (&src.ranges, &src.at) {
            let bytes = read_ranges(&*self.img, r, &self.path)?;
            place(&mut buf, at, &bytes);
        }
        for piece in &src.stashes {
            let bytes = stash(&piece.id)?;
            if bytes.len() as u64 != piece.at.blocks() * BLOCK {
                return Err(refused(format!(
                    "{what}: stash {} holds {} blocks, the command places {}",
                    piece.id,
                    bytes.len() as u64 / BLOCK,
                    piece.at.blocks()
                )));
            }
            place(&mut buf, &piece.at, &bytes);
        }
        Ok(buf)
    }

    /// Checks every source and stash hash against the image as it is,
    /// writing nothing.
    fn precheck(&self, report: &mut PartitionRun) -> Result<(), ApplyError> {
        let list = &self.part.list;
        let mut written = BlockSet::new();
        // Stash id -> the image blocks it saves, while none was written.
        let mut origin: HashMap<&str, Option<&RangeSet>> = HashMap::new();
        for (line, c) in &list.commands {
            let what = self.what(*line, c);
            match c {
                Command::Patch {
                    kind: PatchKind::Imgdiff,
                    ..
                } => {
                    return Err(refused(format!(
                        "{what}: imgdiff patches are not applied by romdelta (nothing was written)"
                    )))
                }
                Command::Stash { id, ranges } => {
                    let pristine = !any(&written, ranges);
                    origin.insert(id, pristine.then_some(ranges));
                    if pristine && list.version >= 3 {
                        let found = sha1_hex(&read_ranges(&*self.img, ranges, &self.path)?);
                        report.source_hashes += 1;
                        if found != *id {
                            return Err(self.wrong_base(&what, ranges, id, &found, true));
                        }
                    }
                }
                Command::Move { hash, source, .. }
                | Command::Patch {
                    source_hash: hash,
                    source,
                    ..
                } => {
                    let pristine = source.ranges.as_ref().is_none_or(|r| !any(&written, r))
                        && source
                            .stashes
                            .iter()
                            .all(|p| origin.get(p.id.as_str()).is_some_and(|o| o.is_some()));
                    if let (true, Some(want)) = (pristine, hash) {
                        let stash = |id: &str| {
                            let r = origin[id].expect("pristine");
                            read_ranges(&*self.img, r, &self.path)
                        };
                        let buf = self.load_source(source, &stash, &what)?;
                        let found = sha1_hex(&buf);
                        report.source_hashes += 1;
                        if found != *want {
                            let blocks = source.ranges.clone().unwrap_or_default();
                            return Err(self.wrong_base(&what, &blocks, want, &found, true));
                        }
                    }
                }
                _ => {}
            }
            if let Some(t) = c.target() {
                add(&mut written, t);
            }
        }
        Ok(())
    }

    /// Whether the image already holds what the list writes (a run that
    /// finished, then lost its journal in the cut that ended it): every
    /// block as its last writer leaves it, `new` blocks equal to new.dat,
    /// zeroed ones zero, moved and patched ones of their SHA-1. A list
    /// without target hashes (versions 1 and 2) cannot show it.
    fn is_applied(&self) -> Result<bool, ApplyError> {
        let list = &self.part.list;
        let mut last = vec![u32::MAX; list.blocks_named() as usize];
        for (i, (_, c)) in list.commands.iter().enumerate() {
            if let Some(t) = c.target() {
                for b in t.iter_blocks() {
                    last[b as usize] = i as u32;
                }
            }
        }
        let mut new = self.part.new_data()?;
        for (i, (_, c)) in list.commands.iter().enumerate() {
            let mine = |b: u64| last[b as usize] == i as u32;
            match c {
                Command::New(r) => {
                    let mut want = vec![0u8; (r.blocks() * BLOCK) as usize];
                    new.read_blocks(&mut want)?;
                    let have = read_ranges(&*self.img, r, &self.path)?;
                    for (k, b) in r.iter_blocks().enumerate() {
                        let at = k * BLOCK as usize..(k + 1) * BLOCK as usize;
                        if mine(b) && have[at.clone()] != want[at] {
                            return Ok(false);
                        }
                    }
                }
                Command::Zero(r) | Command::Erase(r) => {
                    let have = read_ranges(&*self.img, r, &self.path)?;
                    for (k, b) in r.iter_blocks().enumerate() {
                        let at = k * BLOCK as usize..(k + 1) * BLOCK as usize;
                        if mine(b) && have[at].iter().any(|&x| x != 0) {
                            return Ok(false);
                        }
                    }
                }
                Command::Move { hash, target, .. }
                | Command::Patch {
                    target_hash: hash,
                    target,
                    ..
                } => {
                    if !target.iter_blocks().all(mine) {
                        continue;
                    }
                    let Some(want) = hash else {
                        return Ok(false);
                    };
                    if sha1_hex(&read_ranges(&*self.img, target, &self.path)?) != *want {
                        return Ok(false);
                    }
                }
                Command::Stash { .. } | Command::Free { .. } => {}
            }
        }
        Ok(true)
    }

    /// A source hash that does not match; `checking` says whether it was
    /// found by the check before the first write.
    fn wrong_base(
        &self,
        what: &str,
        blocks: &RangeSet,
        want: &str,
        found: &str,
        checking: bool,
    ) -> ApplyError {
        let at = if blocks.0.is_empty() {
            "its stashed source blocks".to_string()
        } else {
            format!("source blocks {}", blocks.render())
        };
        let then = if checking {
            "this incremental was made from another build than the one on the image (nothing was written)"
        } else {
            "the image changed under the update, or is not the build it was made from (the update is under way: its journal is kept)"
        };
        refused(format!(
            "{what}: {at} of {} have SHA-1 {found}, the package expects {want}: {then}",
            self.path.display()
        ))
    }

    /// Runs the commands from index `from`.
    fn execute(&self, from: usize, report: &mut PartitionRun) -> Result<(), ApplyError> {
        let list = &self.part.list;
        let mut new = self.part.new_data()?;
        let skip: u64 = list.commands[..from]
            .iter()
            .map(|(_, c)| match c {
                Command::New(r) => r.blocks(),
                _ => 0,
            })
            .sum();
        new.skip(skip)?;
        let mut read = BlockSet::new();
        let mut used: HashSet<&str> = HashSet::new();
        let mut since_flush = 0u64;
        let resumed_source = self.resumed_source(from)?;
        for (i, (line, c)) in list.commands.iter().enumerate().skip(from) {
            let what = self.what(*line, c);
            let overlap = match c {
                Command::Move { target, source, .. } | Command::Patch { target, source, .. } => {
                    source.ranges.as_ref().is_some_and(|r| r.overlaps(target))
                }
                _ => false,
            };
            if self.state.is_some() {
                let clobbers = c.target().is_some_and(|t| any(&read, t));
                let frees = matches!(c, Command::Free { id } if used.contains(id.as_str()));
                if clobbers || frees || overlap || since_flush >= FLUSH_BYTES {
                    self.img.sync().map_err(ApplyError::io(&self.path))?;
                    self.write_journal(i)?;
                    read = BlockSet::new();
                    used.clear();
                    since_flush = 0;
                }
            }
            match c {
                Command::Erase(r) | Command::Zero(r) => {
                    if !self.fresh {
                        let zeros = vec![0u8; (BLOCK * 256) as usize];
                        for (at, n) in pieces(r) {
                            self.img
                                .write_at(&zeros[..(n * BLOCK) as usize], at * BLOCK)
                                .map_err(ApplyError::io(&self.path))?;
                        }
                    }
                }
                Command::New(r) => {
                    let mut buf = vec![0u8; (BLOCK * 256) as usize];
                    for (at, n) in pieces(r) {
                        let buf = &mut buf[..(n * BLOCK) as usize];
                        new.read_blocks(buf)
                            .map_err(|e| refused(format!("{what}: {e}")))?;
                        self.img
                            .write_at(buf, at * BLOCK)
                            .map_err(ApplyError::io(&self.path))?;
                    }
                }
                Command::Stash { id, ranges } => {
                    let p = self.stash_path(id);
                    let have = self.fs.entry(&p).map_err(ApplyError::io(&p))?;
                    check_made(have, Made::File, &p, "a stash").map_err(refused)?;
                    let keep = match have {
                        Some(_) => {
                            let bytes = self.load_stash(id)?;
                            list.version < 3 || sha1_hex(&bytes) == *id
                        }
                        None => false,
                    };
                    if !keep {
                        let bytes = read_ranges(&*self.img, ranges, &self.path)?;
                        if list.version >= 3 {
                            report.source_hashes += 1;
                            let found = sha1_hex(&bytes);
                            if found != *id {
                                return Err(self.wrong_base(&what, ranges, id, &found, false));
                            }
                        }
                        write_durably(self.fs, &p, &bytes).map_err(ApplyError::io(&p))?;
                    }
                    // Its blocks may be overwritten before it is used, or
                    // never used: freeing it must not be undone by a
                    // re-run that stashes the overwritten blocks again.
                    used.insert(id.as_str());
                }
                Command::Free { id } => {
                    remove_all(self.fs, &self.stash_path(id))
                        .map_err(ApplyError::io(self.stash_path(id)))?;
                }
                Command::Move {
                    hash,
                    target,
                    source,
                } => {
                    let buf = self.command_source(
                        i,
                        source,
                        hash.as_deref(),
                        &resumed_source,
                        overlap,
                        &what,
                        report,
                    )?;
                    if hash.is_some() {
                        report.target_hashes += 1;
                    }
                    write_ranges(&*self.img, target, &buf, &self.path)?;
                }
                Command::Patch {
                    kind,
                    offset,
                    len,
                    source_hash,
                    target_hash,
                    target,
                    source,
                } => {
                    if *kind == PatchKind::Imgdiff {
                        return Err(refused(format!(
                            "{what}: imgdiff patches are not applied by romdelta"
                        )));
                    }
                    let buf = self.command_source(
                        i,
                        source,
                        source_hash.as_deref(),
                        &resumed_source,
                        overlap,
                        &what,
                        report,
                    )?;
                    let patch = &self.part.patch()[*offset as usize..(*offset + *len) as usize];
                    let mut out = vec![0u8; (target.blocks() * BLOCK) as usize];
                    romdelta_android::payload::ops::decode_bsdiff(patch, &buf, &mut out)
                        .map_err(|e| refused(format!("{what}: {e}")))?;
                    if let Some(want) = target_hash {
                        report.target_hashes += 1;
                        let found = sha1_hex(&out);
                        if found != *want {
                            return Err(refused(format!(
                                "{what}: the patched blocks {} have SHA-1 {found}, the package expects {want}",
                                target.render()
                            )));
                        }
                    }
                    write_ranges(&*self.img, target, &out, &self.path)?;
                }
            }
            if let Some(s) = c.source() {
                if let Some(r) = &s.ranges {
                    add(&mut read, r);
                }
                used.extend(s.stashes.iter().map(|p| p.id.as_str()));
            }
            if let Some(t) = c.target() {
                report.blocks_written += t.blocks();
                since_flush += t.blocks() * BLOCK;
            }
            report.commands += 1;
        }
        new.finish()?;
        self.img.sync().map_err(ApplyError::io(&self.path))?;
        Ok(())
    }

    /// The saved source of the command a resumed run starts at, if the
    /// first run saved one (its source overlapped its target).
    fn resumed_source(&self, from: usize) -> Result<Option<Vec<u8>>, ApplyError> {
        if self.state.is_none() {
            return Ok(None);
        }
        let p = self.source_path();
        let have = self.fs.entry(&p).map_err(ApplyError::io(&p))?;
        check_made(have, Made::File, &p, "a saved source").map_err(refused)?;
        if have.is_none() {
            return Ok(None);
        }
        let bytes =
            read_file(self.fs, &p, MAX_BUFFER_BLOCKS * BLOCK + 64).map_err(ApplyError::io(&p))?;
        let tag = format!("{from}\n");
        Ok(bytes.strip_prefix(tag.as_bytes()).map(<[u8]>::to_vec))
    }

    /// The source buffer of command `i`, checked against `hash`; a source
    /// that overlaps the target is saved first (or, resuming at `i`, taken
    /// from what the first run saved).
    #[allow(clippy::too_many_arguments)]
    fn command_source(
        &self,
        i: usize,
        source: &Source,
        hash: Option<&str>,
        resumed: &Option<Vec<u8>>,
        overlap: bool,
        what: &str,
        report: &mut PartitionRun,
    ) -> Result<Vec<u8>, ApplyError> {
        let stash = |id: &str| self.load_stash(id);
        let saved = if overlap && report.commands == 0 {
            resumed.clone()
        } else {
            None
        };
        let from_saved = saved.is_some();
        let buf = match saved {
            Some(b) => b,
            None => self.load_source(source, &stash, what)?,
        };
        if let Some(want) = hash {
            report.source_hashes += 1;
            let found = sha1_hex(&buf);
            if found != want {
                let blocks = source.ranges.clone().unwrap_or_default();
                return Err(self.wrong_base(what, &blocks, want, &found, false));
            }
        }
        if overlap && !from_saved && self.state.is_some() {
            let mut bytes = format!("{i}\n").into_bytes();
            bytes.extend_from_slice(&buf);
            let p = self.source_path();
            write_durably(self.fs, &p, &bytes).map_err(ApplyError::io(p))?;
        }
        Ok(buf)
    }
}

/// The state directory of the image at `image`.
pub fn state_dir(image: &Path) -> PathBuf {
    let name = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_of(image).join(format!(".{name}.romdelta-blockota"))
}

/// Applies `parts` in place: each to `target` when it is one image file
/// (then `parts` must be one partition), or to `target/NAME.img`.
pub fn apply_in_place(
    parts: &[&PartitionOta],
    target: &Path,
    fs: &dyn Storage,
) -> Result<Vec<PartitionRun>, ApplyError> {
    let kind = fs.entry(target).map_err(ApplyError::io(target))?;
    let single = matches!(kind, Some(romdelta_storage::EntryKind::File(_)));
    if single && parts.len() != 1 {
        return Err(refused(format!(
            "{} is one image, the package updates {} partitions ({}): pass a directory of NAME.img, or -p NAME",
            target.display(),
            parts.len(),
            parts.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    let images: Vec<PathBuf> = parts
        .iter()
        .map(|p| {
            if single {
                target.to_path_buf()
            } else {
                target.join(format!("{}.img", p.name))
            }
        })
        .collect();
    // Every image is there and large enough, and every fresh run's
    // sources check, before the first write to any of them.
    let mut runs = Vec::new();
    let mut missing: Vec<PathBuf> = Vec::new();
    // Full partitions without an image come last: their images are made
    // after every other check.
    let entries: Vec<_> = images
        .iter()
        .map(|p| fs.entry(p).map_err(ApplyError::io(p)))
        .collect::<Result<_, _>>()?;
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by_key(|&i| !parts[i].list.reads_source() && entries[i].is_none());
    for i in order {
        let (part, path, found) = (&parts[i], &images[i], entries[i]);
        if found.is_none() && !single && !part.list.reads_source() {
            // A partition the old build lacks, written whole: its image is
            // made empty once every other one checked.
            missing.push(path.clone());
        }
        let found = found.or(missing
            .contains(path)
            .then_some(romdelta_storage::EntryKind::File(0)));
        let Some(romdelta_storage::EntryKind::File(len)) = found else {
            return Err(refused(format!(
                "{}: {} (partition {} needs its image there)",
                path.display(),
                found.map_or("nothing there".to_string(), |k| k.to_string()),
                part.name
            )));
        };
        let need = part.list.blocks_read() * BLOCK;
        if len < need {
            return Err(refused(format!(
                "{}: {len} bytes, the list of partition {} reads up to byte {need}",
                path.display(),
                part.name
            )));
        }
        let state = state_dir(path);
        let have = fs.entry(&state).map_err(ApplyError::io(&state))?;
        check_made(have, Made::Dir, &state, "romdelta's block-OTA state").map_err(refused)?;
        if missing.contains(path) {
            fs.open(path, OpenMode::CreateNew)
                .map_err(ApplyError::io(path))?;
            fs.sync_dir(target).map_err(ApplyError::io(target))?;
        }
        let img = fs
            .open(path, OpenMode::ReadWrite)
            .map_err(ApplyError::io(path))?;
        let run = Run {
            part,
            fs,
            img,
            path: path.clone(),
            state: Some(state.clone()),
            fresh: false,
        };
        let mut report = PartitionRun {
            name: part.name.clone(),
            image: path.clone(),
            ..Default::default()
        };
        let next = if have.is_some() {
            run.read_journal()?
        } else {
            None
        };
        let mut done = false;
        if next.is_none() {
            if let Err(e) = run.precheck(&mut report) {
                if !run.is_applied()? {
                    return Err(e);
                }
                done = true;
            }
        }
        report.already_applied = done;
        runs.push((run, next, report));
    }
    let mut out = Vec::new();
    for (run, next, mut report) in runs {
        let state = run.state.clone().expect("state");
        if report.already_applied {
            // What a finished run left of its state goes; the image stays.
            remove_all(fs, &state).map_err(ApplyError::io(&state))?;
            out.push(report);
            continue;
        }
        let from = match next {
            Some(n) => {
                report.resumed_at_line = run.part.list.commands.get(n).map(|c| c.0);
                n
            }
            None => {
                // A state directory without a journal is what a finished
                // (or never started) run left: start afresh.
                remove_all(fs, &state).map_err(ApplyError::io(&state))?;
                fs.create_dir(&state).map_err(ApplyError::io(&state))?;
                fs.sync_dir(&parent_of(&state))
                    .map_err(ApplyError::io(parent_of(&state)))?;
                run.write_journal(0)?;
                0
            }
        };
        run.execute(from, &mut report)?;
        let j = run.journal_path();
        fs.remove_file(&j).map_err(ApplyError::io(&j))?;
        fs.sync_dir(&state).map_err(ApplyError::io(&state))?;
        remove_all(fs, &state).map_err(ApplyError::io(&state))?;
        fs.sync_dir(&parent_of(&state))
            .map_err(ApplyError::io(parent_of(&state)))?;
        out.push(report);
    }
    Ok(out)
}

/// Writes each full partition of `parts` to `out_dir/NAME.img` (through
/// `NAME.img.part`, renamed when done). A partition whose list reads the
/// old image is refused before anything is written.
pub fn extract(
    parts: &[&PartitionOta],
    out_dir: &Path,
    fs: &dyn Storage,
) -> Result<Vec<PartitionRun>, ApplyError> {
    for p in parts {
        if p.list.reads_source() {
            return Err(refused(format!(
                "{}: an incremental (its list moves, patches or stashes blocks of the old image): apply it to the old image with `romdelta blockota apply PACKAGE --in-place IMAGE`",
                p.name
            )));
        }
    }
    let mut out = Vec::new();
    for p in parts {
        let path = out_dir.join(format!("{}.img", p.name));
        let part = out_dir.join(format!("{}.img.part", p.name));
        romdelta_storage::remove_stale_file(fs, &part).map_err(ApplyError::io(&part))?;
        let img = fs
            .open(&part, OpenMode::CreateNew)
            .map_err(ApplyError::io(&part))?;
        img.set_len(p.list.blocks_named() * BLOCK)
            .map_err(ApplyError::io(&part))?;
        let run = Run {
            part: p,
            fs,
            img,
            path: part.clone(),
            state: None,
            fresh: true,
        };
        let mut report = PartitionRun {
            name: p.name.clone(),
            image: path.clone(),
            ..Default::default()
        };
        run.execute(0, &mut report)?;
        drop(run);
        fs.rename(&part, &path).map_err(ApplyError::io(&path))?;
        fs.sync_dir(out_dir).map_err(ApplyError::io(out_dir))?;
        out.push(report);
    }
    Ok(out)
}
