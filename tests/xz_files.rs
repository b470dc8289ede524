//! Files that are one xz stream, inside ext4 images (`mke2fs -t ext4 -d`)
//! and raw images: kernel modules compressed as Linux's `modules_install`
//! does (`xz --check=crc32 --lzma2=dict=1MiB`), whose directory names the
//! kernel version (so the pairs differ in path), an `xz -6` file, and
//! streams nobody rebuilds: multi-block (`xz -T2 --block-size`, sizes in
//! the block headers) and damaged after compression. The changed
//! reproducible files are SOURCE_XZ_REBUILD operations (the modules within
//! the applier's default 64 MiB, the `-6` file under `--apply-memory`);
//! everything round-trips exactly, the rest through the byte-level
//! operations.

use crate::common::{ext4_image, fast_opts, round_trip};
use romdelta_format::OpKind;
use std::path::Path;
use std::process::Command;

/// Writes the tree of version `v` (0: old, 1: new) under `dir`.
const GENERATOR: &str = r#"
import os, random, subprocess, sys
out, v = sys.argv[1], int(sys.argv[2])
def code(seed, n):
    r = random.Random(seed)
    b = bytearray()
    while len(b) < n:
        k = r.random()
        if k < 0.3: b += b"\xe8" + (r.randint(0, 1 << 16) - len(b)).to_bytes(4, "little", signed=True)
        elif k < 0.6: b += b"\x48\x89\xe5\x55"
        elif k < 0.7: b += b"module_param_%d\0" % r.randint(0, 500)
        else: b += bytes([r.randint(0, 255)])
    return bytes(b[:n])
def changed(data, seed):
    if not v: return data
    r = random.Random(seed)
    b = bytearray(data)
    for _ in range(4):
        at = r.randrange(len(b) - 40)
        b[at:at + 10] = b"chg-%06d" % r.randrange(10 ** 6)
    return bytes(b)
def xz(path, data, args):
    open(path, "wb").write(data)
    subprocess.run(["xz", "-f", "-q"] + args + [path], check=True)
mods = os.path.join(out, "lib/modules/6.1.0-%d-amd64/kernel/drivers" % (50 if v == 0 else 57))
os.makedirs(mods, exist_ok=True)
for i in range(6):
    xz(os.path.join(mods, "m%d.ko" % i), changed(code(i, 150_000 + 20_000 * i), i), ["--check=crc32", "--lzma2=dict=1MiB"])
os.makedirs(os.path.join(out, "usr/share"), exist_ok=True)
xz(os.path.join(out, "usr/share/data"), changed(code(40, 900_000), 40), ["-6"])
xz(os.path.join(out, "usr/share/multi"), changed(code(41, 400_000), 41), ["-T2", "--block-size=65536", "--check=crc32", "--lzma2=dict=1MiB"])
xz(os.path.join(out, "usr/share/damaged"), changed(code(42, 200_000), 42), ["--check=crc32", "--lzma2=dict=1MiB"])
if v:
    p = os.path.join(out, "usr/share/damaged.xz")
    b = bytearray(open(p, "rb").read())
    b[len(b) // 2] ^= 0x20
    open(p, "wb").write(b)
"#;

/// Builds version `v` of the tree under `dir`; returns the tree.
fn tree(dir: &Path, v: u32) -> std::path::PathBuf {
    let tree = dir.join(format!("tree-{v}"));
    let st = Command::new("python3")
        .args(["-c", GENERATOR])
        .arg(&tree)
        .arg(v.to_string())
        .status()
        .unwrap();
    assert!(st.success(), "the generator (python3, xz) failed");
    tree
}

/// The ext4 image of version `v` of the tree.
fn image(dir: &Path, v: u32) -> Vec<u8> {
    let tree = tree(dir, v);
    ext4_image(&tree, &dir.join(format!("fs-{v}.img")), "16M")
}

/// The number of SOURCE_XZ_REBUILD operations of the package at `pkg`,
/// the memory it records and its size.
fn rebuilds(pkg: &Path) -> (usize, u64, u64) {
    let bytes = std::fs::read(pkg).unwrap();
    let m = romdelta_format::Package::parse(&bytes).unwrap().manifest;
    let n = m
        .partitions
        .iter()
        .flat_map(|p| &p.operations)
        .filter(|o| o.kind == OpKind::SourceXzRebuild)
        .count();
    (n, m.apply_memory_mib, bytes.len() as u64)
}

#[test]
fn xz_files_are_rebuilt_from_their_decompressed_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = (image(d, 0), image(d, 1));
    let pkg = d.join("p.romdelta");
    let with_memory = |mib| romdelta_diff::DiffOptions {
        apply_memory_mib: mib,
        ..fast_opts()
    };

    // By default: the six modules (their 1 MiB dictionaries fit 64 MiB).
    assert!(
        round_trip(d, &a, &b, &fast_opts()) == b,
        "the applied image differs"
    );
    let (n, default_mib, default_bytes) = rebuilds(&pkg);
    assert_eq!(n, 6, "the modules, found by path shape");
    assert!(default_mib <= 64, "{default_mib} MiB");
    // With room for preset 6's encoder, the `-6` file too; never the
    // multi-block or the damaged one.
    assert!(
        round_trip(d, &a, &b, &with_memory(512)) == b,
        "the applied image differs"
    );
    let (n, more_mib, more_bytes) = rebuilds(&pkg);
    assert_eq!(n, 7);
    assert!(more_mib > 64, "{more_mib} MiB recorded");
    // Without room for any encoder: byte-level only.
    assert!(
        round_trip(d, &a, &b, &with_memory(16)) == b,
        "the applied image differs"
    );
    let (n, _, without_bytes) = rebuilds(&pkg);
    assert_eq!(n, 0);
    eprintln!(
        "xz files: {more_bytes} bytes (7 rebuilt, {more_mib} MiB), \
         {default_bytes} (6, {default_mib} MiB), {without_bytes} (none)"
    );
    assert!(
        default_bytes * 2 < without_bytes,
        "{default_bytes} vs {without_bytes}"
    );
    assert!(
        more_bytes * 5 < without_bytes,
        "{more_bytes} vs {without_bytes}"
    );
}

/// A raw image (no filesystem) of some of the files, each from a block
/// start: found by their magic, paired by the nearest stream length.
#[test]
fn xz_streams_in_a_raw_image_are_found_at_block_starts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = |v: u32| {
        let t = tree(d, v);
        let m = t.join(format!(
            "lib/modules/6.1.0-{}-amd64/kernel/drivers",
            if v == 0 { 50 } else { 57 }
        ));
        let mut img = vec![0x5au8; 3 * 4096];
        for f in ["m1.ko.xz", "m4.ko.xz"] {
            img.extend_from_slice(&std::fs::read(m.join(f)).unwrap());
            img.resize(img.len().div_ceil(4096) * 4096, 0);
        }
        img.extend_from_slice(&std::fs::read(t.join("usr/share/damaged.xz")).unwrap());
        img.resize(img.len().div_ceil(4096) * 4096 + 4096, 0x11);
        img
    };
    let (a, b) = (raw(0), raw(1));
    assert!(
        round_trip(d, &a, &b, &fast_opts()) == b,
        "the applied image differs"
    );
    assert_eq!(rebuilds(&d.join("p.romdelta")).0, 2);
    // An image that ends inside a stream's last block (no whole number of
    // blocks): that stream is rebuilt too, its last block as far as the
    // image goes.
    let cut = |img: &[u8], v: u32| {
        let m = d.join(format!("tree-{v}")).join(format!(
            "lib/modules/6.1.0-{}-amd64/kernel/drivers/m2.ko.xz",
            if v == 0 { 50 } else { 57 }
        ));
        let mut img = img.to_vec();
        img.extend_from_slice(&std::fs::read(m).unwrap());
        img
    };
    let (a, b) = (cut(&a, 0), cut(&b, 1));
    assert!(
        round_trip(d, &a, &b, &fast_opts()) == b,
        "the applied image differs"
    );
    assert_eq!(rebuilds(&d.join("p.romdelta")).0, 3);
}

/// An xz stream inside a compressed EROFS file (`mkfs.erofs -zlz4hc`): a
/// firmware-like file of text, an xz stream and more text, changed in the
/// text and in the stream's content. Its clusters are one
/// SOURCE_RECOMPRESS operation whose inner patch rebuilds the xz stream
/// from its decompressed bytes (the recompress header names the inner
/// kind), far smaller than the same operation without it (`--apply-memory
/// 16` leaves no room for the xz encoder); both round-trip.
#[test]
fn an_xz_stream_inside_erofs_clusters_is_rebuilt() {
    use romdelta_format::recompress;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let image = |v: u32| {
        let t = tree(d, v);
        // The tree's xz file, between two runs of text (of which the
        // first changes), as one file of a compressed image.
        let stream = std::fs::read(t.join("usr/share/data.xz")).unwrap();
        let text = |seed: u64, n: usize| {
            let mut s = Vec::new();
            let mut i = seed;
            while s.len() < n {
                s.extend_from_slice(
                    format!("firmware block {i} table entry {}\n", i * 7 % 13).as_bytes(),
                );
                i += 1;
            }
            s.truncate(n);
            s
        };
        let mut head = text(1, 70_000);
        if v == 1 {
            head[1000..1008].copy_from_slice(b"changed!");
        }
        let file = [head, stream, text(9, 20_000)].concat();
        let fw = d.join(format!("fw-{v}"));
        std::fs::create_dir_all(fw.join("vendor/firmware")).unwrap();
        std::fs::write(fw.join("vendor/firmware/blob.bin"), file).unwrap();
        crate::common::erofs_image(&fw, &d.join(format!("fw-{v}.erofs")), &["-zlz4hc"])
    };
    let (a, b) = (image(0), image(1));
    let pkg = d.join("p.romdelta");
    let nested = |pkg: &Path| {
        let bytes = std::fs::read(pkg).unwrap();
        let p = romdelta_format::Package::parse(&bytes).unwrap();
        let n = p
            .manifest
            .partitions
            .iter()
            .flat_map(|q| &q.operations)
            .filter(|o| {
                o.kind == OpKind::SourceRecompress
                    && recompress::inner_kind(p.op_data(o), o.dst_blocks() * 4096)
                        == Some(OpKind::SourceXzRebuild)
            })
            .count();
        (n, bytes.len(), p.manifest.codecs.clone())
    };
    let opts = |mib| romdelta_diff::DiffOptions {
        apply_memory_mib: mib,
        ..fast_opts()
    };
    assert!(
        round_trip(d, &a, &b, &opts(512)) == b,
        "the applied image differs"
    );
    let (n, with_bytes, codecs) = nested(&pkg);
    assert_eq!(n, 1, "one cluster rebuild with an xz rebuild inside");
    assert!(
        codecs.contains(&romdelta_format::Codec::liblzma()),
        "{codecs:?}"
    );
    assert!(
        round_trip(d, &a, &b, &opts(16)) == b,
        "the applied image differs"
    );
    let (n, without_bytes, _) = nested(&pkg);
    assert_eq!(n, 0);
    eprintln!("xz inside clusters: {with_bytes} bytes, {without_bytes} without");
    assert!(
        with_bytes * 3 < without_bytes,
        "{with_bytes} vs {without_bytes}"
    );
}
