//! The fuzz seeds (tiny images mkfs.erofs made of one tree, uncompressed,
//! chunked, with extended inodes, and lz4hc with full and compact indexes,
//! small, big and tail-packed pclusters) map without any tool installed, and every file
//! reads back through each map as it reads through the uncompressed one.

mod common;

use common::read_through;
use romdelta_erofs::{map_image, DataMap, FileKind, INCOMPAT_ZERO_PADDING};
use std::collections::BTreeMap;

/// Every entry's path, kind and bytes (file data or link target).
fn contents(img: &[u8]) -> BTreeMap<Vec<u8>, (FileKind, Vec<u8>)> {
    let map = map_image(img).unwrap();
    let bs = map.superblock.block_size();
    let zp = map.superblock.feature_incompat & INCOMPAT_ZERO_PADDING != 0;
    (0..map.entries.len())
        .map(|i| {
            let m = map.inode(i);
            let bytes = match m.inode.kind {
                FileKind::Directory => Vec::new(),
                _ => read_through(img, bs, m.inode.size, &m.data, zp),
            };
            (map.path(i), (m.inode.kind, bytes))
        })
        .collect()
}

#[test]
fn fuzz_seeds_map_to_the_same_files() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/erofs_map");
    let read = |name: &str| std::fs::read(format!("{dir}/seed-{name}")).unwrap();
    let want = contents(&read("plain"));
    assert_eq!(want.len(), 6, "{:?}", want.keys());
    for name in [
        "chunk",
        "extended",
        "lz4hc",
        "lz4hc-big",
        "lz4hc-full",
        "lz4hc-big-full",
    ] {
        let img = read(name);
        assert!(img.len() <= 64 * 1024, "seed-{name} is {} bytes", img.len());
        assert!(contents(&img) == want, "seed-{name}: other files");
        let map = map_image(&img).unwrap();
        let compressed = map
            .inodes
            .values()
            .any(|m| matches!(m.data, DataMap::Compressed { .. }));
        assert_eq!(compressed, name.starts_with("lz4hc"), "seed-{name}");
    }
}

/// The last image byte a map refers to: the end of an inode, its xattrs or
/// any stored range.
fn last_byte(map: &romdelta_erofs::ErofsMap) -> u64 {
    let bs = map.superblock.block_size();
    let mut end = 0;
    for m in map.inodes.values() {
        end = end.max(m.inode.body_end());
        match &m.data {
            DataMap::None => {}
            DataMap::Flat(x) => {
                for e in x {
                    if e.placement != romdelta_erofs::Placement::Hole {
                        end = end.max(e.physical + e.len);
                    }
                }
            }
            DataMap::Compressed { pclusters, .. } => {
                for p in pclusters {
                    end = end.max(p.stored.byte_range(bs).end);
                }
            }
        }
    }
    end
}

/// Every cut of every seed past its first block, with the superblock's
/// block count lowered to fit the cut so that the cut reaches the inodes,
/// directories, indexes and data: refused while it removes any byte the
/// map refers to, and past that mapped exactly as the whole image.
#[test]
fn every_cut_of_the_seeds_is_refused_or_maps_the_same() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/erofs_map");
    let mut seeds: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("seed-")
        })
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 8);
    let (mut refused, mut mapped) = (0, 0);
    for path in seeds {
        let mut img = std::fs::read(&path).unwrap();
        img[1024 + 36..1024 + 40].copy_from_slice(&1u32.to_le_bytes());
        let sum = romdelta_erofs::superblock_checksum(&img).unwrap();
        img[1024 + 4..1024 + 8].copy_from_slice(&sum.to_le_bytes());
        let whole = map_image(&img).unwrap();
        let needed = last_byte(&whole);
        assert!(needed <= img.len() as u64);
        for n in 4096..img.len() {
            match map_image(&img[..n]) {
                Err(_) => refused += 1,
                Ok(m) => {
                    assert!(
                        n as u64 >= needed,
                        "{}: cut at {n} (before {needed}) mapped",
                        path.display()
                    );
                    assert!(
                        m.entries == whole.entries && m.inodes == whole.inodes,
                        "{}: cut at {n} mapped otherwise",
                        path.display()
                    );
                    mapped += 1;
                }
            }
        }
    }
    // Most cuts remove something the map needs.
    assert!(
        refused > 100_000 && mapped < refused,
        "{refused} refused, {mapped} mapped"
    );
}
