#![no_main]
//! EROFS filesystem maps: mapping never panics, and a map that is made
//! describes only bytes inside the image: every inode's extents or
//! pclusters tile its logical size in order, every stored range lies in
//! the image, and every entry's path is made of its names. The harness
//! fixes up the superblock checksum first, so that mutations reach the
//! inodes, directories and indexes.
use libfuzzer_sys::fuzz_target;
use romdelta_erofs::{map_image, superblock_checksum, DataMap, Placement};

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    if let Some(sum) = superblock_checksum(&bytes) {
        bytes[1028..1032].copy_from_slice(&sum.to_le_bytes());
    }
    let data = &bytes[..];
    let Ok(map) = map_image(data) else {
        return;
    };
    let len = data.len() as u64;
    let bs = map.superblock.block_size();
    for m in map.inodes.values() {
        let mut at = 0u64;
        match &m.data {
            DataMap::None => continue,
            DataMap::Flat(extents) => {
                for e in extents {
                    assert_eq!(e.logical, at, "extents in order, without gaps");
                    assert!(e.len > 0);
                    if e.placement != Placement::Hole {
                        assert!(e.physical + e.len <= len, "extent inside the image");
                    }
                    at += e.len;
                }
            }
            DataMap::Compressed { pclusters, .. } => {
                for p in pclusters {
                    assert_eq!(p.logical, at, "pclusters in order, without gaps");
                    assert!(p.logical_len > 0);
                    let r = p.stored.byte_range(bs);
                    assert!(r.start < r.end, "pcluster stores bytes");
                    assert!(r.end <= len, "pcluster inside the image");
                    at += p.logical_len;
                }
            }
        }
        assert_eq!(at, m.inode.size, "the map covers the whole inode");
    }
    for (i, e) in map.entries.iter().enumerate() {
        assert!(map.inodes.contains_key(&e.nid));
        assert!(e.parent.is_none_or(|p| p < i));
        assert!(map.path(i).ends_with(&e.name));
    }
});
