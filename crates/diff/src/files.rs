//! Files of an image through its file map, and the pairing of a target
//! file with its source file by path.
//!
//! Content-aware operations work file by file: an archive, an xz file or
//! a compressed EROFS file is diffed against the same file of the source
//! build. [`PathIndex`] finds it by path, or where the path changed only in
//! its numbers (`lib/modules/6.1.0-50-amd64/...` → `6.1.0-57-amd64/...`)
//! by the file of the same shape; [`image_files`] lists an ext4 or EROFS
//! image's files with their image blocks.

use romdelta_format::{Extent, BLOCK_SIZE};
use romdelta_rom::Partition;
use std::collections::HashMap;

/// The runs of digits in a path, in order.
type Numbers = Vec<Vec<u8>>;

/// `path` with every run of digits replaced by one `#`, and the runs.
fn shape(path: &[u8]) -> (Vec<u8>, Numbers) {
    let mut out = Vec::with_capacity(path.len());
    let mut runs: Vec<Vec<u8>> = Vec::new();
    for &b in path {
        if b.is_ascii_digit() {
            if out.last() == Some(&b'#') {
                runs.last_mut().expect("a run is open").push(b);
            } else {
                out.push(b'#');
                runs.push(vec![b]);
            }
        } else {
            out.push(b);
        }
    }
    (out, runs)
}

/// Source files by path and by path without its numbers.
pub struct PathIndex<T> {
    by_path: HashMap<Vec<u8>, T>,
    /// By shape: each file and the numbers in its path.
    by_shape: HashMap<Vec<u8>, Vec<(T, Numbers)>>,
}

impl<T: Copy> PathIndex<T> {
    /// The index of `files`, each a path and what the caller names the
    /// file by; of two files of one path the later stays.
    pub fn new(files: impl IntoIterator<Item = (Vec<u8>, T)>) -> Self {
        let mut by_path = HashMap::new();
        let mut by_shape: HashMap<Vec<u8>, Vec<(T, Numbers)>> = HashMap::new();
        for (path, file) in files {
            let (sh, runs) = shape(&path);
            by_shape.entry(sh).or_default().push((file, runs));
            by_path.insert(path, file);
        }
        PathIndex { by_path, by_shape }
    }

    /// The source file of target `path`: the same path, else the one file
    /// of its shape whose numbers agree with it in the most places
    /// (`net/mac80211/mac80211.ko` goes with its old self, not with
    /// `net/mac802154/mac802154.ko`); none when two agree as well.
    pub fn find(&self, path: &[u8]) -> Option<T> {
        if let Some(&file) = self.by_path.get(path) {
            return Some(file);
        }
        let (sh, runs) = shape(path);
        let candidates = self.by_shape.get(&sh)?;
        let score = |r: &[Vec<u8>]| r.iter().zip(&runs).filter(|(a, b)| a == b).count();
        let best = candidates.iter().map(|(_, r)| score(r)).max()?;
        let mut top = candidates.iter().filter(|(_, r)| score(r) == best);
        match (top.next(), top.next()) {
            (Some(&(file, _)), None) => Some(file),
            _ => None,
        }
    }
}

/// The bytes of `extents` of a mapped image, in order.
pub(crate) fn read_mapped(p: &Partition, extents: &[Extent]) -> Vec<u8> {
    let mut v = Vec::new();
    p.read_extents(extents, &mut v)
        .expect("reads of a mapped image do not fail");
    v
}

/// The files of an ext4 image ([`ext4_files`]) or of an EROFS image
/// ([`erofs_files`]) with their image blocks; `None` when the image is
/// neither (or its metadata does not hold).
pub fn image_files(p: &Partition) -> Option<Vec<(String, Vec<Extent>)>> {
    ext4_files(p).or_else(|| erofs_files(p))
}

/// The uncompressed files of an EROFS image with the whole blocks that
/// hold them as extents in file order, at most
/// [`romdelta_format::limits::MAX_OP_DST_BLOCKS`] of them. A file whose
/// tail is inline (in the metadata block of its inode, which it shares) is
/// listed with its whole blocks only, as a file cut before its tail: a
/// container's streams inside those blocks are still found, a stream that
/// runs into the tail is not. Files with holes are left out; compressed
/// files are the clusters' business ([`crate::recompress`]).
/// `None` when the image is not EROFS of 4 KiB blocks (or its metadata
/// does not hold).
pub fn erofs_files(p: &Partition) -> Option<Vec<(String, Vec<Extent>)>> {
    use romdelta_erofs::{DataMap, FileKind, Placement as At};
    let img = p.bytes();
    let at = romdelta_erofs::SUPERBLOCK_OFFSET as usize;
    if img.get(at..at + 4) != Some(&romdelta_erofs::MAGIC.to_le_bytes()[..]) {
        return None;
    }
    let map = romdelta_erofs::map_image(img).ok();
    p.release_all();
    let map = map?;
    if map.superblock.block_size() != BLOCK_SIZE {
        return None;
    }
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, e) in map.entries.iter().enumerate() {
        let ino = map.inode(i);
        let DataMap::Flat(runs) = &ino.data else {
            continue;
        };
        // The runs in blocks, then at most an inline tail.
        let tail = matches!(runs.last(), Some(r) if r.placement == At::Inline);
        let blocks = &runs[..runs.len() - usize::from(tail)];
        let need = if tail {
            ino.inode.size / BLOCK_SIZE
        } else {
            ino.inode.size.div_ceil(BLOCK_SIZE)
        };
        if ino.inode.kind != FileKind::Regular
            || need == 0
            || need > romdelta_format::limits::MAX_OP_DST_BLOCKS
            || !seen.insert(e.nid)
        {
            continue;
        }
        let mut extents: Vec<Extent> = Vec::new();
        let whole = blocks.iter().all(|r| {
            if r.placement != At::Blocks || r.physical % BLOCK_SIZE != 0 {
                return false;
            }
            let (start, n) = (r.physical / BLOCK_SIZE, r.len.div_ceil(BLOCK_SIZE));
            match extents.last_mut() {
                Some(l) if l.end_block() == start => l.num_blocks += n,
                _ => extents.push(Extent::new(start, n)),
            }
            true
        });
        if whole && romdelta_format::blocks_in(&extents) == need {
            out.push((String::from_utf8_lossy(&map.path(i)).into_owned(), extents));
        }
    }
    Some(out)
}

/// The files of an ext4 image with their image blocks as extents in file
/// order: each file without holes whose blocks lie in the image, at most
/// [`romdelta_format::limits::MAX_OP_DST_BLOCKS`] of them. `None` when the
/// image is not ext4 (or its metadata does not hold).
pub fn ext4_files(p: &Partition) -> Option<Vec<(String, Vec<Extent>)>> {
    let img = p.bytes();
    if !romdelta_ext4::is_ext4(img) {
        return None;
    }
    let map = romdelta_ext4::FileMap::read(img, romdelta_ext4::Limits::default()).ok();
    p.release_all();
    let map = map?;
    if map.block_size != BLOCK_SIZE {
        return None;
    }
    let mut out = Vec::new();
    for f in map.files {
        let need = f.size.div_ceil(BLOCK_SIZE);
        if need == 0 || need > romdelta_format::limits::MAX_OP_DST_BLOCKS {
            continue;
        }
        let mut extents: Vec<Extent> = Vec::new();
        let mut next = 0u64;
        for r in &f.runs {
            if next >= need {
                break;
            }
            if r.file_block != next {
                break;
            }
            let len = r.len.min(need - next);
            extents.push(Extent::new(r.image_block, len));
            next += len;
        }
        if next == need {
            out.push((f.path, extents));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_found_by_path_then_by_their_numbers() {
        let f = PathIndex::new(
            [
                "lib/modules/6.1.0-50-amd64/kernel/net/mac80211/mac80211.ko",
                "lib/modules/6.1.0-50-amd64/kernel/net/mac802154/mac802154.ko",
                "usr/lib/libfoo.so.1",
                "usr/lib/libfoo.so.2",
                "etc/hosts",
            ]
            .iter()
            .enumerate()
            .map(|(i, p)| (p.as_bytes().to_vec(), i)),
        );
        let find = |p: &str| f.find(p.as_bytes());
        assert_eq!(find("etc/hosts"), Some(4));
        assert_eq!(
            find("lib/modules/6.1.0-57-amd64/kernel/net/mac80211/mac80211.ko"),
            Some(0)
        );
        assert_eq!(
            find("lib/modules/6.1.0-57-amd64/kernel/net/mac802154/mac802154.ko"),
            Some(1)
        );
        // Two candidates agreeing as well: neither.
        assert_eq!(find("usr/lib/libfoo.so.3"), None);
        assert_eq!(find("usr/lib/libfoo.so.2"), Some(3));
        assert_eq!(find("usr/lib/libbar.so.1"), None);
        assert_eq!(shape(b"a12b3").0, b"a#b#");
    }
}
