//! Filesystem maps of EROFS images.
//!
//! [`map_image`] reads the metadata of an EROFS image (the read-only,
//! optionally compressed filesystem Android ships its system, vendor and
//! product partitions in) and tells, for every file, which image bytes hold
//! which of its logical bytes and how: plain blocks, an inline tail in the
//! inode's metadata block, chunks, or compressed physical clusters
//! (pclusters) with the logical extents they decode to. It decompresses
//! nothing.
//!
//! The image is untrusted. Every read goes through one bounded reader that
//! checks the range against the image first; no count read from the image
//! makes it allocate more than the image's own bytes could describe; the
//! directory tree is walked without recursion, to at most [`MAX_DEPTH`]
//! levels, each directory once (a directory reached twice is a cycle and is
//! refused), each inode once however many names it has, and the tables read
//! (directory data, compression indexes, chunk tables) together may not
//! exceed the image.
//! Any malformed input ends in an [`ErofsError`]. What is read, the limits
//! and what is refused are specified in `docs/EROFS.md`.

#![warn(missing_docs)]

mod dir;
mod error;
mod flat;
mod image;
mod inode;
mod superblock;
mod zmap;

use std::collections::BTreeMap;

pub use dir::MAX_NAME_LEN;
pub use error::ErofsError;
pub use flat::{Extent, Placement};
pub use inode::{DataLayout, FileKind, Inode, SLOT_LEN};
pub use superblock::{
    superblock_checksum, Superblock, COMPAT_SB_CHKSUM, INCOMPAT_BIG_PCLUSTER,
    INCOMPAT_CHUNKED_FILE, INCOMPAT_DEVICE_TABLE, INCOMPAT_FRAGMENTS, INCOMPAT_KNOWN,
    INCOMPAT_XATTR_PREFIXES, INCOMPAT_ZERO_PADDING, INCOMPAT_ZTAILPACKING, MAGIC, SUPERBLOCK_LEN,
    SUPERBLOCK_OFFSET,
};
pub use zmap::{
    Algorithm, Encoding, MapHeader, Pcluster, Stored, ADVISE_BIG_PCLUSTER_1, ADVISE_BIG_PCLUSTER_2,
    ADVISE_COMPACTED_2B, ADVISE_FRAGMENT_PCLUSTER, ADVISE_INLINE_PCLUSTER,
    ADVISE_INTERLACED_PCLUSTER,
};

use image::{Budget, Image};

/// The deepest directory nesting walked: an entry this many directories
/// below the root is refused with [`ErofsError::TooDeep`].
pub const MAX_DEPTH: usize = 1024;

/// Where an inode's data is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataMap {
    /// The inode has no data to map (a device, a pipe or a socket).
    None,
    /// Uncompressed: extents tiling the data in logical order.
    Flat(Vec<Extent>),
    /// Compressed: the map header and the pclusters tiling the data in
    /// logical order.
    Compressed {
        /// The inode's `z_erofs_map_header`.
        header: MapHeader,
        /// The pclusters, in logical order.
        pclusters: Vec<Pcluster>,
    },
}

/// An inode and its data map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedInode {
    /// The inode as stored.
    pub inode: Inode,
    /// Where its data is.
    pub data: DataMap,
}

/// One directory entry: a name in a directory, and the inode it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The directory it is in: an index into [`ErofsMap::entries`], or
    /// `None` for the root directory.
    pub parent: Option<usize>,
    /// Its name (bytes, as stored; neither empty nor holding `/` or NUL).
    pub name: Vec<u8>,
    /// The inode it names; a key of [`ErofsMap::inodes`].
    pub nid: u64,
}

/// The map of an EROFS image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErofsMap {
    /// The superblock.
    pub superblock: Superblock,
    /// Every entry below the root (`.` and `..` left out), each directory's
    /// entries in their stored order, directories walked depth first.
    pub entries: Vec<Entry>,
    /// Every inode reached, the root included, by nid (hard links share one).
    pub inodes: BTreeMap<u64, MappedInode>,
}

impl ErofsMap {
    /// The root directory's inode.
    pub fn root(&self) -> &MappedInode {
        &self.inodes[&self.superblock.root_nid]
    }

    /// The path of entry `i` from the root, components joined by `/`
    /// (`etc/hosts`). Panics if `i` is not an index into
    /// [`ErofsMap::entries`].
    pub fn path(&self, i: usize) -> Vec<u8> {
        let mut parts = Vec::new();
        let mut at = Some(i);
        // Parents always come before their entries, so this ends.
        while let Some(j) = at {
            let e = &self.entries[j];
            parts.push(e.name.as_slice());
            at = e.parent;
        }
        parts.reverse();
        parts.join(&b'/')
    }

    /// The inode entry `i` names.
    pub fn inode(&self, i: usize) -> &MappedInode {
        &self.inodes[&self.entries[i].nid]
    }
}

/// Maps an EROFS image: reads its superblock, walks its directory tree from
/// the root and maps the data of every inode reached.
///
/// `bytes` is the whole image (raw, not sparse). Fails with an
/// [`ErofsError`] on anything truncated, malformed, cyclic, too deep, or
/// using a feature this reader does not map (see `docs/EROFS.md`); it
/// never panics, whatever the bytes.
pub fn map_image(bytes: &[u8]) -> Result<ErofsMap, ErofsError> {
    let img = Image::new(bytes);
    let sb = Superblock::parse(&img)?;
    let root = Inode::parse(&img, &sb, sb.root_nid)?;
    if root.kind != FileKind::Directory {
        return Err(ErofsError::invalid(
            "root inode",
            format!("nid {} is not a directory", sb.root_nid),
        ));
    }
    let mut map = ErofsMap {
        superblock: sb,
        entries: Vec::new(),
        inodes: BTreeMap::new(),
    };
    let mut budget = Budget::new(&img);
    let root_data = map_data(&img, &map.superblock, &root, &mut budget)?;
    map.inodes.insert(
        root.nid,
        MappedInode {
            inode: root,
            data: root_data,
        },
    );
    // Directories still to read: (nid, its entry, its depth).
    let mut todo: Vec<(u64, Option<usize>, usize)> = vec![(map.superblock.root_nid, None, 0)];
    let bs = map.superblock.block_size();
    while let Some((nid, parent, depth)) = todo.pop() {
        let dir = &map.inodes[&nid];
        let size = dir.inode.size;
        // Directory data counts against the image too, so the entries are
        // bounded by its bytes even when directories share blocks.
        budget.spend(size, "directory data", nid)?;
        let extents = match &dir.data {
            DataMap::Flat(x) => x.clone(),
            _ => {
                return Err(ErofsError::unsupported(
                    "compressed directories",
                    format!("nid {nid}"),
                ))
            }
        };
        for block in dir::blocks(&img, bs, size, &extents, nid)? {
            for d in dir::entries(block, nid)? {
                if d.name == b"." || d.name == b".." {
                    continue;
                }
                let index = map.entries.len();
                map.entries.push(Entry {
                    parent,
                    name: d.name.to_vec(),
                    nid: d.nid,
                });
                let kind = match map.inodes.get(&d.nid) {
                    Some(m) if m.inode.kind == FileKind::Directory => {
                        return Err(ErofsError::DirectoryCycle {
                            path: lossy(&map.path(index)),
                            nid: d.nid,
                        });
                    }
                    Some(m) => m.inode.kind,
                    None => {
                        let ino = Inode::parse(&img, &map.superblock, d.nid)?;
                        let data = map_data(&img, &map.superblock, &ino, &mut budget)?;
                        let kind = ino.kind;
                        map.inodes.insert(d.nid, MappedInode { inode: ino, data });
                        kind
                    }
                };
                if kind == FileKind::Directory {
                    if depth + 1 > MAX_DEPTH {
                        return Err(ErofsError::TooDeep {
                            path: lossy(&map.path(index)),
                            limit: MAX_DEPTH,
                        });
                    }
                    todo.push((d.nid, Some(index), depth + 1));
                }
            }
        }
    }
    Ok(map)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn map_data(
    img: &Image,
    sb: &Superblock,
    ino: &Inode,
    budget: &mut Budget,
) -> Result<DataMap, ErofsError> {
    match ino.kind {
        FileKind::Regular | FileKind::Directory | FileKind::Symlink => {}
        _ => return Ok(DataMap::None),
    }
    if ino.layout.is_compressed() {
        let (header, pclusters) = zmap::map_compressed(img, sb, ino, budget)?;
        Ok(DataMap::Compressed { header, pclusters })
    } else {
        Ok(DataMap::Flat(flat::map_flat(img, sb, ino, budget)?))
    }
}
