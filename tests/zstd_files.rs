//! Files that are one zstd frame, inside ext4 images (`mke2fs -t ext4 -d`)
//! and raw images. The frames that libzstd 1.5.7 wrote are rebuilt: those
//! of PyPI's `zstandard` 0.25 (its own bundled libzstd 1.5.7, an
//! independent build), streamed at levels 3 and 19 as it compresses a
//! file and in one call at level 9 as it compresses bytes, modules under a
//! directory that names the kernel version (so the pairs differ in path).
//! Frames nobody here rebuilds fall back to the byte-level operations and
//! still round-trip: one damaged after compression, one of Debian's
//! `zstd` tool (libzstd 1.5.4 on bookworm, whose frames 1.5.7 does not
//! reproduce; rebuilt only where that tool is 1.5.7 too), one with its
//! content size left out by a pipe.

use crate::common::{erofs_image, ext4_image, fast_opts, round_trip};
use romdelta_format::OpKind;
use std::path::Path;
use std::process::Command;

/// Writes the tree of version `v` (0: old, 1: new) under `dir`.
const GENERATOR: &str = r#"
import io, os, random, subprocess, sys
import zstandard
out, v = sys.argv[1], int(sys.argv[2])
def text(seed, n):
    r = random.Random(seed)
    words = [b"partition ", b"payload ", b"extent ", b"verity ", b"\n", b"slot_%d " % seed]
    b = bytearray()
    while len(b) < n:
        b += r.choice(words)
        if r.random() < 0.2: b += bytes([r.randint(0, 255)])
    return bytes(b[:n])
def changed(data, seed):
    if not v: return data
    r = random.Random(seed)
    b = bytearray(data)
    for _ in range(4):
        at = r.randrange(len(b) - 40)
        b[at:at + 10] = b"chg-%06d" % r.randrange(10 ** 6)
    return bytes(b)
def streamed(path, data, level):
    buf = io.BytesIO()
    with zstandard.ZstdCompressor(level=level, write_checksum=True).stream_writer(buf, size=len(data), closefd=False) as w:
        for i in range(0, len(data), 1 << 16): w.write(data[i:i + (1 << 16)])
    open(path, "wb").write(buf.getvalue())
def one_call(path, data, level):
    open(path, "wb").write(zstandard.ZstdCompressor(level=level).compress(data))
mods = os.path.join(out, "lib/modules/6.1.0-%d-amd64/kernel/drivers" % (50 if v == 0 else 57))
os.makedirs(mods, exist_ok=True)
for i in range(3):
    streamed(os.path.join(mods, "m%d.ko.zst" % i), changed(text(i, 150_000 + 30_000 * i), i), 3)
share = os.path.join(out, "usr/share")
os.makedirs(share, exist_ok=True)
streamed(os.path.join(share, "high.zst"), changed(text(40, 500_000), 40), 19)
one_call(os.path.join(share, "bytes.zst"), changed(text(41, 300_000), 41), 9)
damaged = os.path.join(share, "damaged.zst")
streamed(damaged, changed(text(42, 200_000), 42), 3)
if v:
    b = bytearray(open(damaged, "rb").read())
    b[len(b) // 2] ^= 0x20
    open(damaged, "wb").write(b)
tool = os.path.join(share, "tool")
open(tool, "wb").write(changed(text(43, 250_000), 43))
subprocess.run(["zstd", "-q", "-f", "-3", "--rm", tool], check=True)
with open(os.path.join(share, "piped.zst"), "wb") as f:
    subprocess.run(["zstd", "-q", "-3", "-c"], input=changed(text(44, 200_000), 44), stdout=f, check=True)
"#;

/// The Python with PyPI's `zstandard` (CI installs it in a virtualenv and
/// names it in ROMDELTA_ZSTD_PYTHON).
fn python() -> String {
    std::env::var("ROMDELTA_ZSTD_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Builds version `v` of the tree under `dir`; returns the tree.
fn tree(dir: &Path, v: u32) -> std::path::PathBuf {
    let tree = dir.join(format!("tree-{v}"));
    let st = Command::new(python())
        .args(["-c", GENERATOR])
        .arg(&tree)
        .arg(v.to_string())
        .status()
        .unwrap();
    assert!(
        st.success(),
        "the generator failed: it needs python3 with PyPI's zstandard \
         (pip install zstandard==0.25.0) and the zstd tool"
    );
    tree
}

/// Whether Debian's `zstd` tool here is libzstd 1.5.7 (then its frame is
/// rebuilt too).
fn tool_is_157() -> bool {
    let out = Command::new("zstd").arg("--version").output().unwrap();
    String::from_utf8_lossy(&out.stdout).contains("v1.5.7")
}

/// The number of SOURCE_ZSTD_REBUILD operations of the package at `pkg`
/// and its size.
fn rebuilds(pkg: &Path) -> (usize, u64) {
    let bytes = std::fs::read(pkg).unwrap();
    let m = romdelta_format::Package::parse(&bytes).unwrap().manifest;
    let n = m
        .partitions
        .iter()
        .flat_map(|p| &p.operations)
        .filter(|o| o.kind == OpKind::SourceZstdRebuild)
        .count();
    if n > 0 {
        assert!(m.codecs.contains(&romdelta_format::Codec::libzstd()));
        assert_eq!(
            romdelta_format::Package::parse(&bytes)
                .unwrap()
                .header
                .version,
            6
        );
    }
    (n, bytes.len() as u64)
}

#[test]
fn zstd_files_are_rebuilt_from_their_decompressed_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let image = |v: u32| ext4_image(&tree(d, v), &d.join(format!("fs-{v}.img")), "16M");
    let (a, b) = (image(0), image(1));
    let pkg = d.join("p.romdelta");
    assert!(
        round_trip(d, &a, &b, &fast_opts()) == b,
        "the applied image differs"
    );
    let (n, with_bytes) = rebuilds(&pkg);
    let want = 5 + usize::from(tool_is_157());
    assert_eq!(n, want, "three modules, the level 19 and the one-call file");
    // Without room for any encoder: byte-level only.
    let tight = romdelta_diff::DiffOptions {
        apply_memory_mib: 16,
        ..fast_opts()
    };
    assert!(
        round_trip(d, &a, &b, &tight) == b,
        "the applied image differs"
    );
    let (n, without_bytes) = rebuilds(&pkg);
    assert_eq!(n, 0);
    eprintln!("zstd files: {with_bytes} bytes ({want} rebuilt), {without_bytes} (none)");
    assert!(
        with_bytes * 2 < without_bytes,
        "{with_bytes} vs {without_bytes}"
    );
}

/// The same trees as EROFS images: uncompressed with no inline tails (every
/// file in whole blocks, so the EROFS file map finds them all, by path),
/// and lz4hc, whose compressed files are the clusters' business while the
/// frames, which lz4 cannot shrink, are stored plain; then with inline
/// tails (mkfs.erofs's default), whose frames are not in whole blocks and
/// stay byte-level.
#[test]
fn zstd_files_in_erofs_images_are_found_through_its_file_map() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ta, tb) = (tree(d, 0), tree(d, 1));
    let want = 5 + usize::from(tool_is_157());
    // `None`: fewer than `want` (only frames that happen to end on a block).
    for (opts, rebuilt) in [
        (&[][..], None),
        (&["-zlz4hc", "-Enoinline_data"][..], Some(want)),
        (&["-Enoinline_data"][..], Some(want)),
    ] {
        let a = erofs_image(&ta, &d.join("a.erofs"), opts);
        let b = erofs_image(&tb, &d.join("b.erofs"), opts);
        assert!(
            round_trip(d, &a, &b, &fast_opts()) == b,
            "{opts:?}: the applied image differs"
        );
        let n = rebuilds(&d.join("p.romdelta")).0;
        match rebuilt {
            Some(r) => assert_eq!(n, r, "{opts:?}"),
            None => assert!(n < want, "{opts:?}: {n}"),
        }
    }
    // The map names them by path (the last image: no inline tails).
    let p =
        romdelta_rom::Partition::open("system", &d.join("b.erofs"), romdelta_rom::Access::Mapped)
            .unwrap();
    let files = romdelta_diff::files::image_files(&p).expect("an EROFS image");
    assert!(files
        .iter()
        .any(|(path, _)| path == "lib/modules/6.1.0-57-amd64/kernel/drivers/m1.ko.zst"));
}

/// A raw image (no filesystem) of some of the files, each from a block
/// start: found by their magic, paired by the nearest frame length.
#[test]
fn zstd_frames_in_a_raw_image_are_found_at_block_starts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = |v: u32| {
        let t = tree(d, v);
        let m = t.join(format!(
            "lib/modules/6.1.0-{}-amd64/kernel/drivers",
            if v == 0 { 50 } else { 57 }
        ));
        let mut img = vec![0x5au8; 3 * 4096];
        for f in [m.join("m0.ko.zst"), t.join("usr/share/high.zst")] {
            img.extend_from_slice(&std::fs::read(f).unwrap());
            img.resize(img.len().div_ceil(4096) * 4096, 0);
        }
        img.extend_from_slice(&std::fs::read(t.join("usr/share/damaged.zst")).unwrap());
        img.resize(img.len().div_ceil(4096) * 4096 + 4096, 0x11);
        img
    };
    let (a, b) = (raw(0), raw(1));
    assert!(
        round_trip(d, &a, &b, &fast_opts()) == b,
        "the applied image differs"
    );
    assert_eq!(rebuilds(&d.join("p.romdelta")).0, 2);
}
