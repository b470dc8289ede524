//! Files holding deflate streams inside ext4 images (`mke2fs -t ext4 -d`):
//! zip archives written by zlib at every level 0-9 (python's zipfile),
//! gzip files at -1 to -9, an apk-like archive of a few MB, and files from
//! compressors zlib cannot reproduce (7-Zip, zopfli, libdeflate) and a
//! stream damaged after compression. Between two such images with a few
//! entries changed, the changed zlib-made files are SOURCE_DEFLATE_REBUILD
//! operations; everything round-trips exactly, the rest through the
//! byte-level operations.

use crate::common::{ext4_image, fast_opts, round_trip};
use romdelta_format::OpKind;
use std::path::Path;
use std::process::Command;

/// Writes the tree of version `v` (0: old, 1: new) under `dir` with
/// python's zipfile and gzip (zlib), the external compressors when
/// `others`.
const GENERATOR: &str = r#"
import gzip, io, os, random, subprocess, sys, zipfile, zlib
out, v, others = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
os.makedirs(out, exist_ok=True)
WORDS = ["public", "class", "void", "return", "int", "String", "final",
         "static", "import", "android", "view", "getValue", "setValue",
         "{", "}", "(", ")", ";", "\n", "    ", "this", "new", "null"]
def text(seed, n):
    r = random.Random(seed)
    parts, size = [], 0
    while size < n:
        w = r.choice(WORDS) if r.random() < 0.9 else str(r.randint(0, 99999))
        parts.append(w); size += len(w) + 1
    return " ".join(parts).encode()[:n]
def code(seed, n):
    r = random.Random(seed)
    b = bytearray()
    while len(b) < n:
        k = r.random()
        if k < 0.3: b += bytes([0x6e, 0x20]) + r.randint(0, 4000).to_bytes(2, "little")
        elif k < 0.6: b += bytes([0x12, 0x01, 0x0f, 0x00])
        else: b += bytes([r.randint(0, 255)])
    return bytes(b[:n])
def changed(data, seed):
    if not v: return data
    r = random.Random(seed)
    b = bytearray(data)
    for _ in range(3):
        at = r.randrange(len(b) - 40)
        b[at:at + 12] = b"changed-%04d" % r.randrange(10000)
    return bytes(b)
def entries(seed, n):
    return [("res/f%02d.xml" % i, changed(text(seed * 100 + i, 20000 + 3000 * i), seed * 100 + i) if i in (1, 4) else text(seed * 100 + i, 20000 + 3000 * i)) for i in range(n)]
for level in range(10):
    with zipfile.ZipFile(os.path.join(out, "lib%d.jar" % level), "w", zipfile.ZIP_DEFLATED, compresslevel=level) as z:
        for name, data in entries(level, 6):
            z.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=level)
for level in range(1, 10):
    data = changed(text(500 + level, 60000), level)
    p = os.path.join(out, "log%d.txt" % level)
    open(p, "wb").write(data)
    subprocess.run(["gzip", "-n", "-f", "-%d" % level, p], check=True)
# An apk-like archive: code compressed, media stored, resources compressed.
with zipfile.ZipFile(os.path.join(out, "app.apk"), "w") as z:
    t = (2020, 1, 1, 0, 0, 0)
    z.writestr(zipfile.ZipInfo("AndroidManifest.xml", t), changed(text(7, 30000), 70), compress_type=zipfile.ZIP_DEFLATED)
    z.writestr(zipfile.ZipInfo("classes.dex", t), changed(code(8, 2_500_000), 80), compress_type=zipfile.ZIP_DEFLATED)
    for i in range(4):
        z.writestr(zipfile.ZipInfo("res/drawable/p%d.png" % i, t), random.Random(i).randbytes(300_000), compress_type=zipfile.ZIP_STORED)
    for i in range(40):
        data = text(900 + i, 25000)
        if i in (3, 30): data = changed(data, 900 + i)
        z.writestr(zipfile.ZipInfo("res/layout/l%02d.xml" % i, t), data, compress_type=zipfile.ZIP_DEFLATED)
    z.writestr(zipfile.ZipInfo("lib/arm64-v8a/libx.so", t), code(9, 800_000), compress_type=zipfile.ZIP_DEFLATED)
# A gzip file whose stream was damaged after compression (its CRC no
# longer matches what it holds).
raw = bytearray(gzip.compress(changed(text(77, 50000), 77), 6, mtime=0))
raw[len(raw) // 2] ^= 0x10
open(os.path.join(out, "damaged.gz"), "wb").write(raw)
if others:
    tmp = os.path.join(out, "..", "others-%d" % v)
    os.makedirs(tmp, exist_ok=True)
    for name, data in entries(60, 5):
        p = os.path.join(tmp, name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        open(p, "wb").write(data)
    subprocess.run(["7z", "a", "-tzip", "-mx=9", "-bd", "-bso0", os.path.abspath(os.path.join(out, "seven.zip")), "res"], cwd=tmp, check=True)
    for tool, args, name in [("zopfli", ["-c"], "zopfli.gz"), ("libdeflate-gzip", ["-12", "-c", "-n"], "libdeflate.gz")]:
        p = os.path.join(tmp, "plain.txt")
        open(p, "wb").write(changed(text(88, 80000), 88))
        with open(os.path.join(out, name), "wb") as f:
            subprocess.run([tool] + args + [p], check=True, stdout=f)
"#;

/// Whether the external compressors run. Without them the test leaves
/// their files out, unless `ROMDELTA_REQUIRE_TOOLS` is set (as CI does).
fn have_others() -> bool {
    let ok = ["7z", "zopfli", "libdeflate-gzip"].iter().all(|t| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !ok && std::env::var_os("ROMDELTA_REQUIRE_TOOLS").is_some() {
        panic!("7z, zopfli and libdeflate-gzip are required (apt-get install p7zip-full zopfli libdeflate-tools)");
    }
    if !ok {
        eprintln!("skipping the 7-Zip, zopfli and libdeflate files: not installed");
    }
    ok
}

/// The ext4 image of version `v` of the tree.
fn image(dir: &Path, v: u32, others: bool) -> Vec<u8> {
    let tree = dir.join(format!("tree-{v}"));
    let st = Command::new("python3")
        .args(["-c", GENERATOR])
        .arg(&tree)
        .arg(v.to_string())
        .arg(if others { "1" } else { "0" })
        .status()
        .unwrap();
    assert!(st.success());
    ext4_image(&tree, &dir.join(format!("fs-{v}.img")), "24M")
}

/// The package's operation kinds and their data bytes.
fn kinds(pkg: &Path) -> Vec<(OpKind, u64)> {
    let bytes = std::fs::read(pkg).unwrap();
    let p = romdelta_format::Package::parse(&bytes).unwrap();
    p.manifest
        .partitions
        .iter()
        .flat_map(|p| &p.operations)
        .map(|o| (o.kind, o.data_length))
        .collect()
}

#[test]
fn archives_and_gzip_files_are_rebuilt_from_their_decompressed_bytes() {
    let others = have_others();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = (image(d, 0, others), image(d, 1, others));
    let pkg = d.join("p.romdelta");
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();

    let with = round_trip(d, &a, &b, &fast_opts());
    assert!(with == b, "the applied image differs");
    let ops = kinds(&pkg);
    let rebuilt: Vec<u64> = ops
        .iter()
        .filter(|(k, _)| *k == OpKind::SourceDeflateRebuild)
        .map(|(_, n)| *n)
        .collect();
    let with_bytes = size(&pkg);
    let bytes = std::fs::read(&pkg).unwrap();
    let m = romdelta_format::Package::parse(&bytes).unwrap().manifest;
    assert_eq!(m.format_version(), 5);
    assert!(
        m.codecs.contains(&romdelta_format::Codec::zlib()),
        "{:?}",
        m.codecs
    );
    assert_eq!(m.apply_memory_mib, 0, "within the default bound");

    let without = round_trip(
        d,
        &a,
        &b,
        &romdelta_diff::DiffOptions {
            deflate: false,
            ..fast_opts()
        },
    );
    assert!(without == b, "the applied image differs");
    let without_bytes = size(&pkg);
    assert!(!kinds(&pkg)
        .iter()
        .any(|(k, _)| *k == OpKind::SourceDeflateRebuild));
    eprintln!(
        "deflate rebuild: {} operations ({rebuilt:?} bytes), package {with_bytes} bytes; without: {without_bytes} bytes",
        rebuilt.len()
    );
    // lib1-9.jar, log1-9.txt.gz and app.apk at least (lib0.jar's stored
    // streams and the damaged, 7-Zip, zopfli and libdeflate files may
    // fall back).
    assert!(rebuilt.len() >= 19, "{rebuilt:?}");
    assert!(
        with_bytes * 2 < without_bytes,
        "{with_bytes} vs {without_bytes}"
    );
}

/// A raw image (no filesystem) of some of the files, each from a block
/// start: found by their signatures.
#[test]
fn containers_in_a_raw_image_are_found_at_block_starts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = |v: u32| {
        image(d, v, false);
        let mut img = vec![0x5au8; 3 * 4096];
        for f in ["lib6.jar", "log9.txt.gz", "lib2.jar"] {
            img.extend_from_slice(&std::fs::read(d.join(format!("tree-{v}")).join(f)).unwrap());
            img.resize(img.len().div_ceil(4096) * 4096, 0);
        }
        img
    };
    let (a, b) = (raw(0), raw(1));
    assert!(
        round_trip(d, &a, &b, &fast_opts()) == b,
        "the applied image differs"
    );
    let n = kinds(&d.join("p.romdelta"))
        .iter()
        .filter(|(k, _)| *k == OpKind::SourceDeflateRebuild)
        .count();
    assert_eq!(n, 3);
}
