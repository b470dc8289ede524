//! Hand-built images that are cut short, cyclic, too deep or claim counts
//! they do not hold: each is refused with an error, and none makes the
//! reader allocate much (a counting allocator watches; this binary has
//! one test so that nothing else allocates meanwhile).

use romdelta_erofs::{map_image, DataMap, ErofsError, Pcluster};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = NOW.fetch_add(l.size(), Ordering::Relaxed) + l.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        NOW.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const BS: usize = 4096;
/// Inodes start at block 1 (meta_blkaddr 1); the superblock says the
/// filesystem has one block, so any cut past block 0 reaches the inodes.
const META: usize = BS;

const S_IFDIR: u16 = 0o040755;
const S_IFREG: u16 = 0o100644;
const FLAT_PLAIN: u16 = 0;
const FULL: u16 = 1;
const FLAT_INLINE: u16 = 2;
const CHUNK: u16 = 4;

/// A synthetic image of `blocks` blocks.
struct Builder {
    b: Vec<u8>,
}

impl Builder {
    fn new(blocks: usize, root_nid: u16) -> Self {
        let mut b = vec![0u8; blocks * BS];
        let sb = &mut b[1024..1152];
        sb[0..4].copy_from_slice(&0xE0F5_E1E2u32.to_le_bytes());
        sb[12] = 12;
        sb[14..16].copy_from_slice(&root_nid.to_le_bytes());
        sb[36..40].copy_from_slice(&1u32.to_le_bytes());
        sb[40..44].copy_from_slice(&1u32.to_le_bytes());
        Builder { b }
    }

    fn put(&mut self, at: usize, bytes: &[u8]) {
        self.b[at..at + bytes.len()].copy_from_slice(bytes);
    }

    /// A compact inode at `nid`; returns the offset just past it.
    fn compact(&mut self, nid: usize, layout: u16, mode: u16, size: u32, raw_u: u32) -> usize {
        let at = META + nid * 32;
        let mut i = [0u8; 32];
        i[0..2].copy_from_slice(&(layout << 1).to_le_bytes());
        i[4..6].copy_from_slice(&mode.to_le_bytes());
        i[6..8].copy_from_slice(&1u16.to_le_bytes());
        i[8..12].copy_from_slice(&size.to_le_bytes());
        i[16..20].copy_from_slice(&raw_u.to_le_bytes());
        self.put(at, &i);
        at + 32
    }

    /// An extended inode at `nid`; returns the offset just past it.
    fn extended(&mut self, nid: usize, layout: u16, mode: u16, size: u64, raw_u: u32) -> usize {
        let at = META + nid * 32;
        let mut i = [0u8; 64];
        i[0..2].copy_from_slice(&(layout << 1 | 1).to_le_bytes());
        i[4..6].copy_from_slice(&mode.to_le_bytes());
        i[8..16].copy_from_slice(&size.to_le_bytes());
        i[16..20].copy_from_slice(&raw_u.to_le_bytes());
        i[44..48].copy_from_slice(&1u32.to_le_bytes());
        self.put(at, &i);
        at + 64
    }

    /// A directory at `nid` whose one block is inline after its inode.
    fn dir(&mut self, nid: usize, entries: &[(&str, u64)]) {
        let block = dirent_block(entries);
        let end = self.compact(nid, FLAT_INLINE, S_IFDIR, block.len() as u32, 0);
        self.put(end, &block);
    }
}

/// A directory block holding `entries` (after `.` and `..`).
fn dirent_block(entries: &[(&str, u64)]) -> Vec<u8> {
    let all: Vec<(&str, u64)> = [(".", 0), ("..", 0)]
        .into_iter()
        .chain(entries.iter().copied())
        .collect();
    let mut heads = Vec::new();
    let mut names = Vec::new();
    let base = all.len() * 12;
    for (name, nid) in &all {
        heads.extend_from_slice(&nid.to_le_bytes());
        heads.extend_from_slice(&((base + names.len()) as u16).to_le_bytes());
        heads.extend_from_slice(&[2, 0]);
        names.extend_from_slice(name.as_bytes());
    }
    [heads, names].concat()
}

fn refused(bytes: &[u8], what: &str) -> ErofsError {
    let before = NOW.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let r = map_image(bytes);
    let peak = PEAK.load(Ordering::Relaxed) - before;
    assert!(peak < 1 << 20, "{what}: {peak} bytes allocated");
    match r {
        Ok(m) => panic!("{what}: mapped {} entries", m.entries.len()),
        Err(e) => e,
    }
}

fn truncated(e: &ErofsError) -> bool {
    matches!(e, ErofsError::Truncated { .. })
}

/// A small valid tree: the root (compact) holds a file and a directory
/// (extended inode) that holds a compressed file with full indexes.
fn valid() -> (Builder, usize) {
    let mut b = Builder::new(8, 0);
    b.dir(0, &[("f", 32), ("d", 64)]);
    // f: 5000 bytes, one block at block 6 and an inline tail.
    let end = b.compact(32, FLAT_INLINE, S_IFREG, 5000, 6);
    b.put(end, &[7u8; 904]);
    // d: an extended directory inode, its block inline.
    let block = dirent_block(&[("z", 96)]);
    let end = b.extended(64, FLAT_INLINE, S_IFDIR, block.len() as u64, 0);
    b.put(end, &block);
    // z: 3 logical clusters, full indexes: HEAD1 at 0 (block 7), NONHEAD,
    // HEAD1 at 8292 (block 5).
    let end = b.compact(96, FULL, S_IFREG, 3 * 4096, 2);
    let head = end.next_multiple_of(8);
    b.put(head, &[0, 0, 0, 0, 0, 0, 0, 0]);
    let idx = head + 16;
    b.put(idx, &[1, 0, 0, 0, 7, 0, 0, 0]);
    b.put(idx + 8, &[2, 0, 0, 0, 1, 0, 1, 0]);
    b.put(idx + 16, &[1, 0, 100, 0, 5, 0, 0, 0]);
    let end_of_meta = idx + 24;
    (b, end_of_meta)
}

#[test]
fn hostile_images_are_refused_without_allocating() {
    // The valid tree maps, with what was written.
    let (b, end_of_meta) = valid();
    let m = map_image(&b.b).unwrap();
    let paths: Vec<Vec<u8>> = (0..m.entries.len()).map(|i| m.path(i)).collect();
    assert_eq!(paths, [b"f".to_vec(), b"d".to_vec(), b"d/z".to_vec()]);
    let DataMap::Compressed { pclusters, .. } = &m.inode(2).data else {
        panic!()
    };
    assert_eq!(
        pclusters
            .iter()
            .map(|p: &Pcluster| (
                p.logical,
                p.logical_len,
                p.stored.byte_range(4096).start / 4096
            ))
            .collect::<Vec<_>>(),
        [(0, 8292, 7), (8292, 3996, 5)]
    );

    // A tail-packed last pcluster that is empty or crosses its block.
    let z_header = (META + 96 * 32 + 32).next_multiple_of(8);
    for idata in [0u16, 4000] {
        let mut x = b.b.clone();
        x[z_header + 2..z_header + 4].copy_from_slice(&idata.to_le_bytes());
        x[z_header + 4] = 0x8;
        let e = refused(&x, "inline pcluster");
        assert!(
            matches!(
                e,
                ErofsError::Invalid {
                    what: "inline pcluster",
                    ..
                }
            ),
            "{e}"
        );
    }
    // One that fits maps, right after the indexes.
    let mut x = b.b.clone();
    x[z_header + 2] = 100;
    x[z_header + 4] = 0x8;
    let m = map_image(&x).unwrap();
    let DataMap::Compressed { pclusters, .. } = &m.inode(2).data else {
        panic!()
    };
    assert_eq!(
        pclusters[1].stored,
        romdelta_erofs::Stored::Inline {
            offset: end_of_meta as u64,
            len: 100
        }
    );

    // Every cut of the superblock.
    for n in 0..1152 {
        let e = refused(&b.b[..n], "superblock cut");
        assert!(truncated(&e), "cut at {n}: {e}");
    }
    // Every cut of the metadata: the inodes (compact and extended), the
    // inline tail and directory blocks, the map header and the indexes.
    for n in META..end_of_meta {
        refused(&b.b[..n], &format!("metadata cut at {n}"));
    }
    // And cuts of the data blocks the map points to.
    for n in (end_of_meta..8 * BS).step_by(97) {
        refused(&b.b[..n], &format!("data cut at {n}"));
    }

    // Bad magic, block size, unknown incompatible features, extra devices.
    let bad_sb = |at: usize, v: &[u8]| {
        let mut x = b.b.clone();
        x[1024 + at..1024 + at + v.len()].copy_from_slice(v);
        refused(&x, "superblock field")
    };
    assert_eq!(bad_sb(0, &[0, 0, 0, 0]), ErofsError::BadMagic(0));
    assert!(matches!(bad_sb(12, &[8]), ErofsError::Unsupported { .. }));
    assert!(matches!(bad_sb(12, &[17]), ErofsError::Unsupported { .. }));
    assert!(matches!(
        bad_sb(80, &[0x80]),
        ErofsError::Unsupported { .. }
    ));
    assert!(matches!(bad_sb(86, &[1]), ErofsError::Unsupported { .. }));
    assert!(truncated(&bad_sb(36, &[0xff, 0xff, 0xff, 0xff])));
    // A superblock checksum that does not match is refused; one that does
    // maps.
    let mut x = b.b.clone();
    x[1024 + 8] = 1;
    assert!(matches!(
        refused(&x, "checksum"),
        ErofsError::Invalid {
            what: "superblock checksum",
            ..
        }
    ));
    let sum = romdelta_erofs::superblock_checksum(&x).unwrap();
    x[1024 + 4..1024 + 8].copy_from_slice(&sum.to_le_bytes());
    assert_eq!(map_image(&x).unwrap().entries.len(), 3);
    // A root nid past the image, or naming a file.
    assert!(truncated(&bad_sb(14, &[0xff, 0xff])));
    assert!(matches!(bad_sb(14, &[32, 0]), ErofsError::Invalid { .. }));

    // A directory entry naming its own directory, the root, or an
    // ancestor; a directory reached by two names.
    for (name, entries) in [
        ("self", vec![("me", 0u64)]),
        ("root from below", vec![("d", 64)]),
    ] {
        let mut x = Builder::new(8, 0);
        x.dir(0, &entries);
        x.dir(64, &[("up", 0)]);
        let e = refused(&x.b, name);
        assert!(
            matches!(e, ErofsError::DirectoryCycle { nid: 0, .. }),
            "{name}: {e}"
        );
    }
    let mut x = Builder::new(8, 0);
    x.dir(0, &[("a", 64)]);
    x.dir(64, &[("b", 128)]);
    x.dir(128, &[("back", 64)]);
    let e = refused(&x.b, "loop a/b/back");
    assert!(
        matches!(e, ErofsError::DirectoryCycle { nid: 64, ref path } if path == "a/b/back"),
        "{e}"
    );
    let mut x = Builder::new(8, 0);
    x.dir(0, &[("a", 64), ("b", 64)]);
    x.dir(64, &[]);
    assert!(matches!(
        refused(&x.b, "two names"),
        ErofsError::DirectoryCycle { .. }
    ));

    // A chain deeper than the limit: directories of one entry each, in
    // 128-byte slots, 32 to a block.
    let depth = romdelta_erofs::MAX_DEPTH + 1;
    let mut x = Builder::new(3 + (depth + 1) * 128 / BS, 0);
    for i in 0..=depth {
        let child = (i + 1) * 4;
        let entries: &[(&str, u64)] = if i < depth {
            &[("d", child as u64)]
        } else {
            &[]
        };
        x.dir(i * 4, entries);
    }
    let e = refused(&x.b, "deep");
    assert!(matches!(e, ErofsError::TooDeep { .. }), "{e}");
    // One level less maps.
    let mut x = Builder::new(3 + (depth + 1) * 128 / BS, 0);
    for i in 0..depth {
        let child = (i + 1) * 4;
        let entries: &[(&str, u64)] = if i + 1 < depth {
            &[("d", child as u64)]
        } else {
            &[]
        };
        x.dir(i * 4, entries);
    }
    assert_eq!(map_image(&x.b).unwrap().entries.len(), depth - 1);

    // Counts the image cannot hold: a compressed file of 2^60 bytes, a
    // chunk table for 2^62 bytes, a directory of 2^40 bytes, 65535 xattr
    // slots, a first name offset past its block.
    let one_file = |f: &dyn Fn(&mut Builder)| {
        let mut x = Builder::new(8, 0);
        x.dir(0, &[("f", 32)]);
        f(&mut x);
        refused(&x.b, "count")
    };
    assert!(truncated(&one_file(&|x| {
        x.extended(32, FULL, S_IFREG, 1 << 60, 0);
    })));
    assert!(truncated(&one_file(&|x| {
        x.extended(32, CHUNK, S_IFREG, 1 << 62, 0);
    })));
    assert!(truncated(&one_file(&|x| {
        x.extended(32, FLAT_PLAIN, S_IFDIR, 1 << 40, 2);
    })));
    assert!(truncated(&one_file(&|x| {
        x.compact(32, FLAT_PLAIN, S_IFREG, 10, 2);
        x.put(META + 32 * 32 + 2, &[0xff, 0xff]);
    })));
    let mut x = Builder::new(8, 0);
    x.dir(0, &[("f", 32)]);
    x.put(META + 32 + 8, &[0xf0, 0xff]);
    assert!(matches!(
        refused(&x.b, "nameoff"),
        ErofsError::Invalid { .. }
    ));
    // A hundred inodes whose xattrs end at one shared chunk table of a
    // thousand holes: each alone fits, together they claim more table bytes
    // than the image holds, and the map would hold 100,000 extents.
    let mut x = Builder::new(8, 0);
    let names: Vec<String> = (0..100).map(|i| format!("f{i}")).collect();
    let entries: Vec<(&str, u64)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), 64 + i as u64))
        .collect();
    x.dir(0, &entries);
    let table = 9472;
    for k in 64..164 {
        let at = x.compact(k, CHUNK, S_IFREG, 1000 * 4096, 0) - 32;
        let icount = (1334 - 8 * k) as u16;
        x.put(at + 2, &icount.to_le_bytes());
    }
    x.put(table, &[0xff; 4000]);
    let e = refused(&x.b, "shared chunk table");
    assert!(
        matches!(
            e,
            ErofsError::Invalid {
                what: "chunk table",
                ..
            }
        ),
        "{e}"
    );
    // One of them alone maps: a thousand holes.
    let mut one = Builder::new(8, 0);
    one.dir(0, &[("f0", 64)]);
    let at = one.compact(64, CHUNK, S_IFREG, 1000 * 4096, 0) - 32;
    one.put(at + 2, &((1334 - 8 * 64) as u16).to_le_bytes());
    one.put(table, &[0xff; 4000]);
    let m = map_image(&one.b).unwrap();
    let DataMap::Flat(holes) = &m.inode(0).data else {
        panic!()
    };
    assert_eq!(holes.len(), 1000);

    // An entry naming a nid past the image.
    let mut x = Builder::new(8, 0);
    x.dir(0, &[("f", u64::MAX / 2)]);
    assert!(matches!(refused(&x.b, "nid"), ErofsError::Invalid { .. }));
}
