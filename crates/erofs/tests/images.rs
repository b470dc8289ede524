//! Maps of images that `mkfs.erofs` (erofs-utils) builds from small trees,
//! checked independently: the file list against the tree, every file's
//! bytes read (and, for compressed clusters, decompressed) through the map
//! against the tree's, the physical ranges against the image and each
//! other, and extents against `dump.erofs`.

mod common;

use common::read_through;
use rand::{RngCore, SeedableRng};
use romdelta_erofs::{map_image, DataMap, Encoding, ErofsMap, FileKind, Placement, Stored};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Whether `mkfs.erofs` can run. Without it the tests skip, unless
/// `ROMDELTA_REQUIRE_TOOLS` is set, when they fail.
fn have_mkfs() -> bool {
    let ok = Command::new("mkfs.erofs").arg("--help").output().is_ok();
    if !ok && std::env::var_os("ROMDELTA_REQUIRE_TOOLS").is_some() {
        panic!("mkfs.erofs is required (apt-get install erofs-utils)");
    }
    if !ok {
        eprintln!("skipping: mkfs.erofs not installed");
    }
    ok
}

/// What a path of a test tree is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    File(Vec<u8>),
    Dir,
    Link(Vec<u8>),
}

/// Compressible text: lines of words from a small vocabulary.
fn text(len: usize, seed: u64) -> Vec<u8> {
    let words: [&[u8]; 10] = [
        b"alpha", b"beta", b"gamma", b"system", b"vendor", b"product", b"lib", b"so", b"bin",
        b"etc",
    ];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        for i in 0..12 {
            if i > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(words[(rng.next_u32() % 10) as usize]);
        }
        out.push(b'\n');
    }
    out.truncate(len);
    out
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = vec![0u8; len];
    rng.fill_bytes(&mut out);
    out
}

/// The test tree: empty, tiny, tail-packed, block-sized, compressible,
/// random, nested and linked files.
fn tree() -> BTreeMap<String, Node> {
    let mut t = BTreeMap::new();
    let mut f = |p: &str, n: Node| {
        t.insert(p.to_string(), n);
    };
    f("empty", Node::File(Vec::new()));
    f("tiny.txt", Node::File(b"hello\n".to_vec()));
    f("tail.bin", Node::File(random(2 * 4096 + 100, 1)));
    f("blocks.bin", Node::File(random(3 * 4096, 2)));
    f("text.txt", Node::File(text(300 * 1024, 3)));
    f("random.bin", Node::File(random(300 * 1024, 4)));
    f(
        "mixed.bin",
        Node::File([text(70_000, 5), random(50_000, 6), text(90_001, 7)].concat()),
    );
    f("sub", Node::Dir);
    f("sub/deep", Node::Dir);
    f("sub/deep/nested.txt", Node::File(text(20_000, 8)));
    f("sub/empty-dir", Node::Dir);
    f("link", Node::Link(b"tiny.txt".to_vec()));
    f("sub/deep/up", Node::Link(b"../../text.txt".to_vec()));
    t
}

fn write_tree(root: &Path, t: &BTreeMap<String, Node>) {
    std::fs::create_dir_all(root).unwrap();
    for (p, n) in t {
        let path = root.join(p);
        match n {
            Node::File(b) => std::fs::write(&path, b).unwrap(),
            Node::Dir => std::fs::create_dir_all(&path).unwrap(),
            Node::Link(to) => {
                std::os::unix::fs::symlink(String::from_utf8(to.clone()).unwrap(), &path).unwrap()
            }
        }
    }
}

/// Builds an image of `t` with `mkfs.erofs OPTS`.
fn mkfs(dir: &Path, t: &BTreeMap<String, Node>, opts: &[&str]) -> Vec<u8> {
    let src = dir.join("tree");
    if !src.exists() {
        write_tree(&src, t);
    }
    let img = dir.join("fs.img");
    let out = Command::new("mkfs.erofs")
        .args(["-T0", "--all-root"])
        .args(opts)
        .arg(&img)
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success(), "mkfs.erofs {opts:?}: {out:?}");
    std::fs::read(&img).unwrap()
}

/// The independent checks of a map of an image of `t`; returns how many
/// pclusters were compressed.
fn check_map(img: &[u8], map: &ErofsMap, t: &BTreeMap<String, Node>) -> usize {
    let sb = &map.superblock;
    let bs = sb.block_size();
    let zero_padding = sb.feature_incompat & romdelta_erofs::INCOMPAT_ZERO_PADDING != 0;
    let mut got = BTreeMap::new();
    for i in 0..map.entries.len() {
        let path = String::from_utf8(map.path(i)).unwrap();
        let m = map.inode(i);
        let node = match m.inode.kind {
            FileKind::Directory => Node::Dir,
            FileKind::Regular => {
                Node::File(read_through(img, bs, m.inode.size, &m.data, zero_padding))
            }
            FileKind::Symlink => {
                Node::Link(read_through(img, bs, m.inode.size, &m.data, zero_padding))
            }
            k => panic!("{path}: unexpected {k:?}"),
        };
        assert!(
            got.insert(path.clone(), node).is_none(),
            "{path} listed twice"
        );
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        t.keys().collect::<Vec<_>>(),
        "file list"
    );
    for (p, n) in t {
        assert!(got[p] == *n, "{p}: the bytes read through the map differ");
    }
    // Physical ranges: inside the filesystem, disjoint across inodes.
    let mut ranges = Vec::new();
    let mut compressed = 0;
    for (nid, m) in &map.inodes {
        match &m.data {
            DataMap::None => {}
            DataMap::Flat(x) => {
                for e in x.iter().filter(|e| e.placement != Placement::Hole) {
                    ranges.push((e.physical, e.physical + e.len, *nid));
                }
            }
            DataMap::Compressed { pclusters, .. } => {
                for p in pclusters {
                    compressed += usize::from(p.encoding != Encoding::Plain);
                    let r = p.stored.byte_range(bs);
                    ranges.push((r.start, r.end, *nid));
                }
            }
        }
    }
    ranges.sort();
    for w in ranges.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlapping data {:?} {:?}", w[0], w[1]);
    }
    let fs_len = u64::from(sb.blocks) * bs;
    assert!(
        ranges.iter().all(|r| r.1 <= fs_len),
        "data past the filesystem"
    );
    compressed
}

/// The extents `dump.erofs -e` lists for `nid`: (logical start, logical
/// end, physical start, physical end), bytes.
fn dump_extents(img: &Path, nid: u64) -> Option<Vec<(u64, u64, u64, u64)>> {
    let out = Command::new("dump.erofs")
        .arg("-e")
        .arg(format!("--nid={nid}"))
        .arg(img)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v = Vec::new();
    for line in text.lines() {
        // "   0:        0..   17481 |   17481 :     319488..    323584 |    4096"
        let Some((_, rest)) = line.split_once(':') else {
            continue;
        };
        let parts: Vec<&str> = rest.split(['|', ':']).map(str::trim).collect();
        if parts.len() != 4 {
            continue;
        }
        let range = |s: &str| -> Option<(u64, u64)> {
            let (a, b) = s.split_once("..")?;
            Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
        };
        if let (Some(l), Some(p)) = (range(parts[0]), range(parts[2])) {
            v.push((l.0, l.1, p.0, p.1));
        }
    }
    Some(v)
}

/// The facts `dump.erofs --nid=N` prints of every inode the map lists
/// must be the map's: path, size, links, layout, inode and xattr sizes,
/// permissions, owner, and a flat file's extents. Returns how many inodes were compared (0 without
/// dump.erofs).
fn compare_with_dump(img: &Path, map: &ErofsMap) -> usize {
    let mut compared = 0;
    for i in 0..map.entries.len() {
        let m = map.inode(i);
        let Ok(out) = Command::new("dump.erofs")
            .arg(format!("--nid={}", m.inode.nid))
            .arg(img)
            .output()
        else {
            return 0;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let mut facts = BTreeMap::new();
        for line in text.lines() {
            for field in line.split("  ") {
                if let Some((k, v)) = field.split_once(':') {
                    facts.insert(k.trim().to_string(), v.trim().to_string());
                }
            }
        }
        let ino = &m.inode;
        let want = [
            (
                "File",
                format!("/{}", String::from_utf8(map.path(i)).unwrap()),
            ),
            ("Size", ino.size.to_string()),
            ("Links", ino.nlink.to_string()),
            ("Layout", ino.layout.code().to_string()),
            ("Inode size", ino.inode_size().to_string()),
            ("Xattr size", ino.xattr_size.to_string()),
            ("Uid", ino.uid.to_string()),
            ("Gid", ino.gid.to_string()),
        ];
        for (k, v) in want {
            assert_eq!(
                facts.get(k),
                Some(&v),
                "nid {}: {k} against dump.erofs",
                ino.nid
            );
        }
        let access = format!("{:04o}", ino.mode & 0o7777);
        assert!(
            facts.get("Access").is_some_and(|a| a.starts_with(&access)),
            "nid {}: access {access} against dump.erofs {:?}",
            ino.nid,
            facts.get("Access")
        );
        // Flat files' extents, as `dump.erofs -e` lists them (compressed
        // ones are compared in `compressed`).
        if let (FileKind::Regular | FileKind::Symlink, DataMap::Flat(x)) = (ino.kind, &m.data) {
            let got: Vec<_> = x
                .iter()
                .map(|e| (e.logical, e.logical + e.len, e.physical, e.physical + e.len))
                .collect();
            // dump.erofs lists a last chunk whole; the map ends it with the file.
            let want: Vec<_> = dump_extents(img, ino.nid)
                .unwrap()
                .into_iter()
                .map(|(l0, l1, p0, _)| {
                    let l1 = l1.min(ino.size);
                    (l0, l1, p0, p0 + (l1 - l0))
                })
                .collect();
            assert_eq!(got, want, "nid {}: extents against dump.erofs", ino.nid);
        }
        compared += 1;
    }
    compared
}

/// Maps an image built with `opts` and checks it; returns the map, the
/// image and its path.
fn build_and_check(opts: &[&str]) -> Option<(ErofsMap, usize, tempfile::TempDir)> {
    if !have_mkfs() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = tree();
    let img = mkfs(dir.path(), &t, opts);
    let map = map_image(&img).unwrap_or_else(|e| panic!("mkfs.erofs {opts:?}: {e}"));
    let compressed = check_map(&img, &map, &t);
    let compared = compare_with_dump(&dir.path().join("fs.img"), &map);
    assert!(
        compared == t.len() || compared == 0,
        "{compared} inodes compared"
    );
    Some((map, compressed, dir))
}

#[test]
fn uncompressed_image_reads_back_every_file() {
    let Some((map, compressed, _dir)) = build_and_check(&[]) else {
        return;
    };
    assert_eq!(compressed, 0);
    let layouts: Vec<_> = map.inodes.values().map(|m| m.inode.layout).collect();
    assert!(layouts.contains(&romdelta_erofs::DataLayout::FlatInline));
    assert!(layouts.contains(&romdelta_erofs::DataLayout::FlatPlain));
    // The tail of tail.bin is inline, after whole blocks.
    let i = (0..map.entries.len())
        .find(|&i| map.path(i) == b"tail.bin")
        .unwrap();
    let DataMap::Flat(x) = &map.inode(i).data else {
        panic!()
    };
    assert_eq!(
        x.iter().map(|e| (e.len, e.placement)).collect::<Vec<_>>(),
        [(8192, Placement::Blocks), (100, Placement::Inline)]
    );
}

#[test]
fn extended_inodes_read_back_every_file() {
    let Some((map, _, _dir)) = build_and_check(&["-Eforce-inode-extended"]) else {
        return;
    };
    assert!(map.inodes.values().all(|m| m.inode.extended));
}

#[test]
fn chunk_based_image_reads_back_every_file() {
    let Some((map, _, _dir)) = build_and_check(&["--chunksize=8192"]) else {
        return;
    };
    assert!(map
        .inodes
        .values()
        .any(|m| m.inode.layout == romdelta_erofs::DataLayout::ChunkBased));
}

/// How a compressed image's pclusters are stored.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pclusters {
    /// One block each.
    Small,
    /// Some of several blocks.
    Big,
    /// One block each, the last ones of some files inline.
    TailPacked,
    /// Some of several blocks, the last ones of some files inline.
    BigTailPacked,
}

/// Compressed images: the pclusters decompress to each file, and their
/// extents are the ones `dump.erofs` lists.
fn compressed(opts: &[&str], layout: romdelta_erofs::DataLayout, kind: Pclusters) {
    let Some((map, compressed, dir)) = build_and_check(opts) else {
        return;
    };
    assert!(compressed > 0, "{opts:?}: nothing compressed");
    let img = dir.path().join("fs.img");
    let mut checked = 0;
    let (mut plain, mut big, mut inline) = (false, false, false);
    for (nid, m) in &map.inodes {
        let DataMap::Compressed { pclusters, .. } = &m.data else {
            continue;
        };
        assert_eq!(m.inode.layout, layout);
        for (i, p) in pclusters.iter().enumerate() {
            match p.stored {
                Stored::Blocks { blocks, .. } => big |= blocks > 1,
                Stored::Inline { .. } => {
                    assert_eq!(i + 1, pclusters.len(), "only the last pcluster is inline");
                    inline = true;
                }
            }
            plain |= p.encoding == Encoding::Plain;
        }
        let Some(want) = dump_extents(&img, *nid) else {
            continue;
        };
        let bs = map.superblock.block_size();
        let got: Vec<_> = pclusters
            .iter()
            .map(|p| {
                let r = p.stored.byte_range(bs);
                (p.logical, p.logical + p.logical_len, r.start, r.end)
            })
            .collect();
        assert_eq!(got, want, "{opts:?}: nid {nid} against dump.erofs");
        checked += 1;
    }
    assert!(checked > 0 || Command::new("dump.erofs").output().is_err());
    let want_big = matches!(kind, Pclusters::Big | Pclusters::BigTailPacked);
    let want_inline = matches!(kind, Pclusters::TailPacked | Pclusters::BigTailPacked);
    assert_eq!(big, want_big, "{opts:?}: big pclusters");
    assert_eq!(inline, want_inline, "{opts:?}: inline pclusters");
    // The random middle of mixed.bin does not compress into one block.
    assert!(big || plain, "{opts:?}: no plain pcluster");
}

#[test]
fn lz4hc_compact_indexes_decompress_to_every_file() {
    compressed(
        &["-zlz4hc"],
        romdelta_erofs::DataLayout::CompressedCompact,
        Pclusters::Small,
    );
}

#[test]
fn lz4hc_big_pclusters_compact_indexes_decompress_to_every_file() {
    compressed(
        &["-zlz4hc", "-C65536"],
        romdelta_erofs::DataLayout::CompressedCompact,
        Pclusters::Big,
    );
}

#[test]
fn lz4hc_full_indexes_decompress_to_every_file() {
    compressed(
        &["-zlz4hc", "-Elegacy-compress"],
        romdelta_erofs::DataLayout::CompressedFull,
        Pclusters::Small,
    );
}

#[test]
fn lz4hc_big_pclusters_full_indexes_decompress_to_every_file() {
    compressed(
        &["-zlz4hc", "-C65536", "-Elegacy-compress"],
        romdelta_erofs::DataLayout::CompressedFull,
        Pclusters::Big,
    );
}

#[test]
fn lz4hc_tail_packed_compact_indexes_decompress_to_every_file() {
    compressed(
        &["-zlz4hc", "-Eztailpacking"],
        romdelta_erofs::DataLayout::CompressedCompact,
        Pclusters::TailPacked,
    );
}

#[test]
fn lz4hc_tail_packed_full_indexes_decompress_to_every_file() {
    compressed(
        &["-zlz4hc", "-Eztailpacking", "-Elegacy-compress"],
        romdelta_erofs::DataLayout::CompressedFull,
        Pclusters::TailPacked,
    );
}

#[test]
fn lz4hc_tail_packed_big_pclusters_decompress_to_every_file() {
    compressed(
        &["-zlz4hc", "-C65536", "-Eztailpacking"],
        romdelta_erofs::DataLayout::CompressedCompact,
        Pclusters::BigTailPacked,
    );
}
