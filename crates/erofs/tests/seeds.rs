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
