//! File maps of ext4 (and ext2/ext3) images.
//!
//! [`FileMap::read`] walks an image's directory tree from the root and
//! tells, for each regular file, its path, its size and the image blocks
//! that hold its bytes, in file order. It reads the superblock, the group
//! descriptors (32- and 64-byte), inodes, extent trees of any depth, the
//! old direct/indirect block maps, and linear and hashed directories
//! (hashed ones read linearly: their index blocks look like empty
//! entries). Files with inline data have no blocks and are left out.
//!
//! Image bytes are untrusted: every offset is checked against the image,
//! every count against [`Limits`]; a structure that does not hold is an
//! error naming it, never a panic. Unwritten extents are mapped like the
//! others (their blocks read as zeros in the file but hold whatever the
//! image has): a caller that reads file bytes from the map checks what it
//! finds there.

#![warn(missing_docs)]

use std::collections::HashSet;
use std::fmt;

/// Why an image's metadata was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Error(pub String);

impl fmt::Display for Ext4Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ext4: {}", self.0)
    }
}

impl std::error::Error for Ext4Error {}

fn err<T>(what: impl Into<String>) -> Result<T, Ext4Error> {
    Err(Ext4Error(what.into()))
}

/// Bounds on what one map may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most regular files.
    pub max_files: usize,
    /// Most directories walked.
    pub max_dirs: usize,
    /// Most extents (runs of blocks) in all.
    pub max_extents: usize,
    /// Most bytes of all directories read.
    pub max_dir_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_files: 1 << 20,
            max_dirs: 1 << 18,
            max_extents: 1 << 23,
            max_dir_bytes: 256 << 20,
        }
    }
}

/// A run of blocks of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// The file's block number (logical) of its first block.
    pub file_block: u64,
    /// The image block that holds it.
    pub image_block: u64,
    /// Blocks in the run.
    pub len: u64,
}

/// A regular file of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Its path from the root, `/`-separated, without a leading `/`.
    pub path: String,
    /// Its inode number.
    pub inode: u32,
    /// Its size in bytes.
    pub size: u64,
    /// The runs of blocks that hold its bytes, in file order (holes are
    /// the file blocks no run covers).
    pub runs: Vec<Run>,
}

impl File {
    /// Whether its blocks are one run from its first block on, holding the
    /// whole file (no holes, in order).
    pub fn contiguous(&self, block_size: u64) -> bool {
        let need = self.size.div_ceil(block_size);
        match self.runs.as_slice() {
            [] => need == 0,
            [r, rest @ ..] => {
                let mut next = (r.file_block, r.image_block);
                if r.file_block != 0 {
                    return false;
                }
                next.0 += r.len;
                next.1 += r.len;
                for r in rest {
                    if (r.file_block, r.image_block) != next {
                        return false;
                    }
                    next.0 += r.len;
                    next.1 += r.len;
                }
                next.0 >= need
            }
        }
    }
}

/// The regular files of an image and where their bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMap {
    /// The filesystem's block size.
    pub block_size: u64,
    /// Its regular files, in the order the walk found them (directories in
    /// the order of their entries).
    pub files: Vec<File>,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

const EXTENTS_FL: u32 = 0x80000;
const INLINE_DATA_FL: u32 = 0x1000_0000;
const INCOMPAT_64BIT: u32 = 0x80;
const ROOT_INODE: u32 = 2;
const MAX_DEPTH: u32 = 5;

struct Fs<'a> {
    img: &'a [u8],
    bs: u64,
    blocks: u64,
    inodes: u32,
    ipg: u32,
    inode_size: u64,
    tables: Vec<u64>,
    limits: Limits,
    extents: usize,
}

/// Whether `img` starts like an ext2/3/4 image (the superblock's magic).
pub fn is_ext4(img: &[u8]) -> bool {
    img.len() >= 2048 && le16(img, 1024 + 56) == 0xef53
}

impl<'a> Fs<'a> {
    fn open(img: &'a [u8], limits: Limits) -> Result<Self, Ext4Error> {
        if !is_ext4(img) {
            return err("no ext2/3/4 superblock");
        }
        let sb = &img[1024..2048];
        let log = le32(sb, 24);
        if log > 6 {
            return err(format!("block size 2^{} KiB", log));
        }
        let bs = 1024u64 << log;
        let incompat = le32(sb, 96);
        let mut blocks = u64::from(le32(sb, 4));
        let desc_size = if incompat & INCOMPAT_64BIT != 0 {
            blocks |= u64::from(le32(sb, 0x150)) << 32;
            u64::from(le16(sb, 0xfe))
        } else {
            32
        };
        if !(32..=1024).contains(&desc_size) || !desc_size.is_power_of_two() {
            return err(format!("group descriptors of {desc_size} bytes"));
        }
        let (inodes, bpg, ipg) = (le32(sb, 0), u64::from(le32(sb, 32)), le32(sb, 40));
        let inode_size = if le32(sb, 76) == 0 {
            128
        } else {
            u64::from(le16(sb, 88))
        };
        if bpg == 0 || ipg == 0 || !(128..=bs).contains(&inode_size) || blocks == 0 {
            return err("superblock counts out of range");
        }
        if blocks > img.len() as u64 / bs {
            return err(format!(
                "{blocks} blocks of {bs} bytes, more than the image holds"
            ));
        }
        let groups = blocks.div_ceil(bpg);
        if groups > u64::from(inodes / ipg.max(1)).max(1) + 1
            || groups * desc_size > img.len() as u64
        {
            return err(format!("{groups} groups for {inodes} inodes"));
        }
        let first = u64::from(le32(sb, 20));
        let gdt = (first + 1) * bs;
        let mut tables = Vec::with_capacity(groups as usize);
        for g in 0..groups {
            let at = gdt + g * desc_size;
            let d = img
                .get(at as usize..(at + desc_size) as usize)
                .ok_or_else(|| Ext4Error(format!("group descriptor {g} past the image")))?;
            let mut t = u64::from(le32(d, 8));
            if desc_size >= 64 {
                t |= u64::from(le32(d, 0x28)) << 32;
            }
            tables.push(t);
        }
        Ok(Fs {
            img,
            bs,
            blocks,
            inodes,
            ipg,
            inode_size,
            tables,
            limits,
            extents: 0,
        })
    }

    fn block(&self, n: u64) -> Result<&'a [u8], Ext4Error> {
        if n >= self.blocks {
            return err(format!("block {n} past the {} blocks", self.blocks));
        }
        Ok(&self.img[(n * self.bs) as usize..((n + 1) * self.bs) as usize])
    }

    fn inode(&self, n: u32) -> Result<&'a [u8], Ext4Error> {
        if n == 0 || n > self.inodes {
            return err(format!("inode {n} out of range"));
        }
        let (g, i) = ((n - 1) / self.ipg, u64::from((n - 1) % self.ipg));
        let t = *self
            .tables
            .get(g as usize)
            .ok_or_else(|| Ext4Error(format!("inode {n}: no group {g}")))?;
        let at = t
            .checked_mul(self.bs)
            .and_then(|a| a.checked_add(i * self.inode_size))
            .filter(|a| a + self.inode_size <= self.blocks * self.bs)
            .ok_or_else(|| Ext4Error(format!("inode {n} past the image")))?;
        Ok(&self.img[at as usize..(at + self.inode_size) as usize])
    }

    fn push(&mut self, runs: &mut Vec<Run>, r: Run) -> Result<(), Ext4Error> {
        if r.len == 0 {
            return Ok(());
        }
        if r.image_block
            .checked_add(r.len)
            .is_none_or(|e| e > self.blocks)
        {
            return err(format!(
                "a run of {} blocks at block {} past the image",
                r.len, r.image_block
            ));
        }
        self.extents += 1;
        if self.extents > self.limits.max_extents {
            return err(format!("more than {} extents", self.limits.max_extents));
        }
        match runs.last_mut() {
            Some(l)
                if l.file_block + l.len == r.file_block
                    && l.image_block + l.len == r.image_block =>
            {
                l.len += r.len
            }
            _ => runs.push(r),
        }
        Ok(())
    }

    /// The runs of an extent tree node (`node`: header and entries).
    fn extent_node(
        &mut self,
        node: &[u8],
        depth_left: u32,
        runs: &mut Vec<Run>,
    ) -> Result<(), Ext4Error> {
        if node.len() < 12 || le16(node, 0) != 0xf30a {
            return err("extent header magic");
        }
        let (entries, depth) = (le16(node, 2) as usize, u32::from(le16(node, 6)));
        if 12 + entries * 12 > node.len() || depth > depth_left {
            return err("extent header counts");
        }
        for e in 0..entries {
            let x = &node[12 + e * 12..24 + e * 12];
            if depth == 0 {
                let len = u64::from(le16(x, 4));
                let len = if len > 32768 { len - 32768 } else { len };
                let start = u64::from(le16(x, 6)) << 32 | u64::from(le32(x, 8));
                self.push(
                    runs,
                    Run {
                        file_block: u64::from(le32(x, 0)),
                        image_block: start,
                        len,
                    },
                )?;
            } else {
                // Index nodes count against the extent limit too: a tree
                // whose entries all name one child stays bounded.
                self.extents += 1;
                if self.extents > self.limits.max_extents {
                    return err(format!("more than {} extents", self.limits.max_extents));
                }
                let leaf = u64::from(le16(x, 8)) << 32 | u64::from(le32(x, 4));
                let child = self.block(leaf)?;
                self.extent_node(child, depth - 1, runs)?;
            }
        }
        Ok(())
    }

    /// The runs of an indirect block `b` at `level` (0: data block) from
    /// file block `*next`.
    fn indirect(
        &mut self,
        b: u64,
        level: u32,
        next: &mut u64,
        runs: &mut Vec<Run>,
    ) -> Result<(), Ext4Error> {
        let per = self.bs / 4;
        if b == 0 {
            *next += per.pow(level);
            return Ok(());
        }
        if level == 0 {
            let r = Run {
                file_block: *next,
                image_block: b,
                len: 1,
            };
            *next += 1;
            return self.push(runs, r);
        }
        let blk = self.block(b)?;
        for i in 0..per as usize {
            self.indirect(u64::from(le32(blk, i * 4)), level - 1, next, runs)?;
        }
        Ok(())
    }

    /// The file size and runs of inode `n`, or `None` for inline data.
    fn runs(&mut self, n: u32) -> Result<Option<(u64, Vec<Run>)>, Ext4Error> {
        let ino = self.inode(n)?;
        let size = u64::from(le32(ino, 4)) | u64::from(le32(ino, 0x6c)) << 32;
        let flags = le32(ino, 0x20);
        if flags & INLINE_DATA_FL != 0 {
            return Ok(None);
        }
        let iblock = &ino[0x28..0x28 + 60];
        let mut runs = Vec::new();
        if flags & EXTENTS_FL != 0 {
            self.extent_node(iblock, MAX_DEPTH, &mut runs)?;
        } else {
            let need = size.div_ceil(self.bs);
            let mut next = 0u64;
            for i in 0..15usize {
                if next >= need {
                    break;
                }
                let level = i.saturating_sub(11) as u32;
                self.indirect(u64::from(le32(iblock, i * 4)), level, &mut next, &mut runs)?;
            }
        }
        runs.sort_by_key(|r| r.file_block);
        Ok(Some((size, runs)))
    }
}

impl FileMap {
    /// The file map of the ext2/3/4 image `img`.
    pub fn read(img: &[u8], limits: Limits) -> Result<FileMap, Ext4Error> {
        let mut fs = Fs::open(img, limits)?;
        let mut files = Vec::new();
        let mut seen = HashSet::new();
        let mut dirs = vec![(ROOT_INODE, String::new())];
        let mut dir_bytes = 0u64;
        while let Some((n, path)) = dirs.pop() {
            if !seen.insert(n) {
                continue;
            }
            if seen.len() > limits.max_dirs {
                return err(format!("more than {} directories", limits.max_dirs));
            }
            let Some((size, runs)) = fs.runs(n)? else {
                continue;
            };
            let mut found = Vec::new();
            for r in &runs {
                for k in 0..r.len {
                    if (r.file_block + k) * fs.bs >= size {
                        break;
                    }
                    dir_bytes += fs.bs;
                    if dir_bytes > limits.max_dir_bytes {
                        return err("directories larger than the limit");
                    }
                    let b = fs.block(r.image_block + k)?;
                    let mut at = 0usize;
                    while at + 8 <= b.len() {
                        let (ino, rec) = (le32(b, at), le16(b, at + 4) as usize);
                        let (nlen, kind) = (b[at + 6] as usize, b[at + 7]);
                        if rec < 8 || at + rec > b.len() || 8 + nlen > rec {
                            return err(format!(
                                "directory entry at {at} of block {}",
                                r.image_block + k
                            ));
                        }
                        let name = &b[at + 8..at + 8 + nlen];
                        if ino != 0 && name != b"." && name != b".." {
                            found.push((ino, kind, String::from_utf8_lossy(name).into_owned()));
                        }
                        at += rec;
                    }
                }
            }
            let mut subdirs = Vec::new();
            for (ino, kind, name) in found {
                let p = if path.is_empty() {
                    name
                } else {
                    format!("{path}/{name}")
                };
                let mode = le16(fs.inode(ino)?, 0) & 0xf000;
                match (kind, mode) {
                    (_, 0x4000) => subdirs.push((ino, p)),
                    (_, 0x8000) => {
                        if let Some((size, runs)) = fs.runs(ino)? {
                            if files.len() >= limits.max_files {
                                return err(format!("more than {} files", limits.max_files));
                            }
                            files.push(File {
                                path: p,
                                inode: ino,
                                size,
                                runs,
                            });
                        }
                    }
                    _ => {}
                }
            }
            // Walked in entry order: the stack takes them reversed.
            dirs.extend(subdirs.into_iter().rev());
        }
        Ok(FileMap {
            block_size: fs.bs,
            files,
        })
    }

    /// The file whose first block is image block `block`.
    pub fn starting_at(&self, block: u64) -> Option<&File> {
        self.files.iter().find(|f| {
            f.runs
                .first()
                .is_some_and(|r| r.file_block == 0 && r.image_block == block)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn mke2fs(dir: &std::path::Path, args: &[&str]) -> Option<Vec<u8>> {
        let img = dir.join("fs.img");
        let out = Command::new("mke2fs")
            .args(["-q", "-F"])
            .args(args)
            .arg("-d")
            .arg(dir.join("tree"))
            .arg(&img)
            .arg("16M")
            .output()
            .ok()?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(std::fs::read(img).unwrap())
    }

    fn tree(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
        let files: Vec<(String, Vec<u8>)> = vec![
            ("a.txt".into(), b"hello".repeat(3000)),
            (
                "sub/deeper/b.bin".into(),
                (0..300_000u32).map(|i| (i * 31 / 7) as u8).collect(),
            ),
            ("sub/empty".into(), Vec::new()),
            (
                "big".into(),
                (0..3_000_000u32).map(|i| (i % 253) as u8).collect(),
            ),
        ];
        for (p, d) in &files {
            let p = dir.join("tree").join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, d).unwrap();
        }
        for i in 0..200 {
            let p = dir
                .join("tree/many")
                .join(format!("file-with-a-long-name-{i:04}"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, [i as u8; 10]).unwrap();
        }
        files
    }

    fn bytes(img: &[u8], f: &File, bs: u64) -> Vec<u8> {
        let mut v = vec![0u8; f.size as usize];
        for r in &f.runs {
            for k in 0..r.len {
                let at = ((r.file_block + k) * bs) as usize;
                if at >= v.len() {
                    break;
                }
                let n = (v.len() - at).min(bs as usize);
                let src = ((r.image_block + k) * bs) as usize;
                v[at..at + n].copy_from_slice(&img[src..src + n]);
            }
        }
        v
    }

    #[test]
    fn files_of_ext4_and_ext2_images_are_mapped() {
        for args in [
            &["-t", "ext4", "-b", "4096"][..],
            &["-t", "ext4", "-b", "1024", "-O", "^flex_bg"][..],
            &["-t", "ext2", "-b", "4096"][..],
            &["-t", "ext2", "-b", "1024"][..],
        ] {
            let dir = tempfile::tempdir().unwrap();
            let files = tree(dir.path());
            let Some(img) = mke2fs(dir.path(), args) else {
                eprintln!("skipping: mke2fs not installed");
                return;
            };
            let m = FileMap::read(&img, Limits::default()).unwrap();
            assert_eq!(m.files.len(), files.len() + 200, "{args:?}");
            for (p, d) in &files {
                let f = m.files.iter().find(|f| &f.path == p).unwrap();
                assert_eq!(&bytes(&img, f, m.block_size), d, "{args:?} {p}");
            }
            let big = m.files.iter().find(|f| f.path == "big").unwrap();
            assert!(big.contiguous(m.block_size) || big.runs.len() > 1);
            assert_eq!(m.starting_at(big.runs[0].image_block), Some(big));
        }
    }

    #[test]
    fn damaged_and_truncated_images_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path());
        let Some(img) = mke2fs(dir.path(), &["-t", "ext4", "-b", "4096"]) else {
            return;
        };
        let m = FileMap::read(&img, Limits::default()).unwrap();
        // Every truncation at a block boundary of the metadata area, and
        // past it.
        for cut in (0..img.len())
            .step_by(4096 * 7)
            .chain([1023, 1100, 2047, 5000])
        {
            let _ = FileMap::read(&img[..cut], Limits::default());
        }
        assert!(FileMap::read(&img[..1500], Limits::default()).is_err());
        // Bytes of the metadata flipped one at a time.
        let meta: Vec<usize> = (1024..1024 + 256).chain(4096..4096 + 64).collect();
        for &i in &meta {
            let mut d = img.clone();
            d[i] ^= 0xff;
            let _ = FileMap::read(&d, Limits::default());
        }
        let few = Limits {
            max_files: 10,
            ..Limits::default()
        };
        assert!(FileMap::read(&img, few)
            .unwrap_err()
            .to_string()
            .contains("more than 10 files"));
        assert!(m.files.len() > 10);
    }
}
