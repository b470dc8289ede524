//! EROFS-aware diffs: images that `mkfs.erofs` (erofs-utils) builds with
//! lz4 and lz4hc from small trees and from edits of them, diffed and
//! applied through the command line. A changed compressed file is diffed
//! in decompressed form and its new clusters are rebuilt at apply
//! (`SOURCE_RECOMPRESS`); clusters that do not rebuild bit for bit, and
//! images that are not EROFS, fall back to the byte diff. Whatever the
//! differ chooses, the applied image must be the target byte for byte.

use crate::common::{listing, romdelta};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The operation kind that rebuilds compressed clusters at apply.
const RECOMPRESS: &str = "SOURCE_RECOMPRESS";

/// The large file of the trees (over 1 MiB), which the edits shift.
const BIG: &str = "system/lib64/libbig.so";

/// The mkfs.erofs configurations under test: compressor options.
const LZ4HC: &[&str] = &["-zlz4hc"];
const LZ4HC_12: &[&str] = &["-zlz4hc,12"];
const LZ4: &[&str] = &["-zlz4"];
const LZ4HC_64K: &[&str] = &["-zlz4hc", "-C65536"];
const LZ4HC_TAIL: &[&str] = &["-zlz4hc", "-Eztailpacking"];

/// Whether `mkfs.erofs` and `dump.erofs` can run. Without them the tests
/// skip, unless `ROMDELTA_REQUIRE_TOOLS` is set (as CI does), when they fail.
fn have_tools() -> bool {
    let ok = ["mkfs.erofs", "dump.erofs"]
        .iter()
        .all(|t| Command::new(t).arg("--help").output().is_ok());
    if !ok && std::env::var_os("ROMDELTA_REQUIRE_TOOLS").is_some() {
        panic!("mkfs.erofs and dump.erofs are required (apt-get install erofs-utils)");
    }
    if !ok {
        eprintln!("skipping: mkfs.erofs or dump.erofs not installed");
    }
    ok
}

/// What a path of a test tree is; directories come from the paths.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    File(Vec<u8>),
    Link(&'static str),
}

type Tree = BTreeMap<String, Node>;

/// Compressible text, as configuration files and string tables are: lines
/// of words from a small vocabulary, with numbers among them.
fn text(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&str; 24] = [
        "ro.product",
        "persist.sys",
        "vendor",
        "system",
        "android",
        "hardware",
        "lib64",
        "service",
        "class",
        "main",
        "user",
        "group",
        "oneshot",
        "disabled",
        "socket",
        "on",
        "property",
        "boot",
        "=",
        "true",
        "false",
        "/dev/block",
        "seclabel",
        "u:r:init:s0",
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(len + 200);
    while out.len() < len {
        let words = 4 + rng.next_u32() % 9;
        for i in 0..words {
            if i > 0 {
                out.push(b' ');
            }
            let r = rng.next_u32();
            if r % 5 == 0 {
                out.extend_from_slice(format!("{}", (r >> 8) % 100_000).as_bytes());
            } else {
                out.extend_from_slice(WORDS[(r >> 8) as usize % WORDS.len()].as_bytes());
            }
        }
        out.push(b'\n');
    }
    out.truncate(len);
    out
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = vec![0u8; len];
    rng.fill_bytes(&mut out);
    out
}

/// The source tree: a large file, middling ones, tiny and empty ones, a
/// kernel module under a versioned directory, nested directories, links.
fn tree_a() -> Tree {
    let mut t = Tree::new();
    let mut f = |p: &str, n: Node| {
        t.insert(p.to_string(), n);
    };
    f(BIG, Node::File(text(1_400_000, 1)));
    f("system/lib64/libbig.so.1", Node::Link("libbig.so"));
    f("system/etc/init.rc", Node::File(text(300_000, 2)));
    f("system/etc/old.conf", Node::File(text(60_000, 3)));
    f(
        "system/etc/hosts",
        Node::File(b"127.0.0.1 localhost\n".to_vec()),
    );
    f("system/etc/empty", Node::File(Vec::new()));
    f("system/bin/tool", Node::File(text(200_000, 4)));
    f("system/bin/sh", Node::Link("tool"));
    f(
        "system/app/Demo/oat/arm64/Demo.odex",
        Node::File(text(120_000, 5)),
    );
    f("system/app/Demo/Demo.apk", Node::File(random(30_000, 6)));
    f("lib/modules/6.1.0-50/x.ko", Node::File(text(150_000, 7)));
    f(
        "lib/modules/modules.alias",
        Node::File(b"alias x\n".to_vec()),
    );
    t
}

/// The target tree: the source with bytes inserted near the start of the
/// large file (every later cluster shifts), a few bytes changed in the
/// middle of another, a file added, one removed and one renamed to a path
/// that differs only in a version number.
fn tree_b() -> Tree {
    let mut t = tree_a();
    let Some(Node::File(big)) = t.get_mut(BIG) else {
        unreachable!()
    };
    big.splice(5000..5000, text(777, 10));
    let Some(Node::File(init)) = t.get_mut("system/etc/init.rc") else {
        unreachable!()
    };
    init[150_000..150_008].copy_from_slice(b"changed!");
    t.insert(
        "system/etc/new.conf".to_string(),
        Node::File(text(40_000, 11)),
    );
    t.remove("system/etc/old.conf").unwrap();
    let ko = t.remove("lib/modules/6.1.0-50/x.ko").unwrap();
    t.insert("lib/modules/6.1.0-57/x.ko".to_string(), ko);
    t
}

fn write_tree(root: &Path, t: &Tree) {
    for (p, n) in t {
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        match n {
            Node::File(b) => std::fs::write(&path, b).unwrap(),
            Node::Link(to) => std::os::unix::fs::symlink(to, &path).unwrap(),
        }
    }
}

/// Builds `dir/NAME.img` from `t` with `mkfs.erofs OPTS`: fixed
/// timestamps, owners and UUID, so that the image depends on the tree and
/// the options alone.
fn mkfs(dir: &Path, name: &str, t: &Tree, opts: &[&str]) -> PathBuf {
    let src = dir.join(format!("{name}-tree"));
    write_tree(&src, t);
    let img = dir.join(format!("{name}.img"));
    crate::common::erofs_image(&src, &img, opts);
    img
}

/// `romdelta diff SOURCE TARGET -o PKG EXTRA...` at a fast zstd level.
fn diff(source: &Path, target: &Path, pkg: &Path, extra: &[&str]) {
    romdelta()
        .args(["diff", "--level", "3"])
        .args(extra)
        .arg(source)
        .arg(target)
        .arg("-o")
        .arg(pkg)
        .assert()
        .success();
}

/// `romdelta apply PKG --source SOURCE -o OUT` of an unsigned package;
/// returns the applied image.
fn apply(pkg: &Path, source: &Path, out: &Path) -> Vec<u8> {
    romdelta()
        .arg("apply")
        .arg(pkg)
        .arg("--source")
        .arg(source)
        .arg("-o")
        .arg(out)
        .arg("--insecure-no-verify")
        .assert()
        .success();
    std::fs::read(out).unwrap()
}

/// Diffs `source` to `target` and applies the package to `source`: the
/// result must be the target byte for byte. Returns the package's path.
fn round_trip(dir: &Path, source: &Path, target: &Path) -> PathBuf {
    let pkg = dir.join("p.romdelta");
    diff(source, target, &pkg, &[]);
    let got = apply(&pkg, source, &dir.join("out.img"));
    let want = std::fs::read(target).unwrap();
    assert!(
        got == want,
        "applied image differs from the target ({} vs {} bytes)",
        got.len(),
        want.len()
    );
    pkg
}

/// Images A (source tree) and B (target tree) built with `opts` in `dir`.
fn image_pair(dir: &Path, opts: &[&str]) -> (PathBuf, PathBuf) {
    (
        mkfs(dir, "a", &tree_a(), opts),
        mkfs(dir, "b", &tree_b(), opts),
    )
}

/// A and B built with `opts` round-trip.
fn check_round_trip(opts: &[&str]) {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = image_pair(dir.path(), opts);
    round_trip(dir.path(), &a, &b);
}

#[test]
fn lz4hc_images_round_trip() {
    check_round_trip(LZ4HC);
}

#[test]
fn lz4hc_level_12_images_round_trip() {
    check_round_trip(LZ4HC_12);
}

#[test]
fn lz4_images_round_trip() {
    check_round_trip(LZ4);
}

#[test]
fn lz4hc_64k_pcluster_images_round_trip() {
    check_round_trip(LZ4HC_64K);
}

#[test]
fn lz4hc_tail_packed_images_round_trip() {
    check_round_trip(LZ4HC_TAIL);
}

#[test]
fn lz4hc_images_update_in_place() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = image_pair(dir.path(), LZ4HC);
    let pkg = dir.path().join("ip.romdelta");
    diff(&a, &b, &pkg, &["--in-place"]);
    let dev = dir.path().join("device.img");
    std::fs::copy(&a, &dev).unwrap();
    romdelta()
        .args(["apply", "--insecure-no-verify", "--in-place"])
        .arg(&dev)
        .arg(&pkg)
        .assert()
        .success();
    assert!(std::fs::read(&dev).unwrap() == std::fs::read(&b).unwrap());
}

/// The physical byte ranges of the pclusters of `path` in `img`, in file
/// order, as `dump.erofs -e` lists them.
fn pclusters(img: &Path, path: &str) -> Vec<(usize, usize)> {
    let out = Command::new("dump.erofs")
        .args(["-e", &format!("--path=/{path}")])
        .arg(img)
        .output()
        .unwrap();
    assert!(out.status.success(), "dump.erofs: {out:?}");
    // "   3:    84734..  113089 |   28355 :      16384..     20480 |    4096"
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (ext, phys) = l.split_once(':')?;
            ext.trim().parse::<u32>().ok()?;
            let phys = phys.split(':').nth(1)?;
            let (range, _) = phys.split_once('|')?;
            let (start, end) = range.trim().split_once("..")?;
            Some((start.trim().parse().ok()?, end.trim().parse().ok()?))
        })
        .collect()
}

#[test]
fn damaged_clusters_round_trip() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = image_pair(d, LZ4HC);
    // 16 bytes in the middle of three pclusters of the second half of the
    // large file, after mkfs: those clusters no longer decompress to what
    // the file's metadata says, or not at all.
    let damage = |img: &Path, to: &Path| {
        let ranges = pclusters(img, BIG);
        assert!(ranges.len() > 20, "{} pclusters of {BIG}", ranges.len());
        let mut bytes = std::fs::read(img).unwrap();
        let n = ranges.len();
        for i in [n / 2, 2 * n / 3, n - 3] {
            let (start, end) = ranges[i];
            assert!(end - start >= 4096 && end <= bytes.len(), "{start}..{end}");
            let at = (start + end) / 2;
            for x in &mut bytes[at..at + 16] {
                *x ^= 0xa5;
            }
        }
        std::fs::write(to, bytes).unwrap();
    };
    let (bad_a, bad_b) = (d.join("bad-a.img"), d.join("bad-b.img"));
    damage(&b, &bad_b);
    damage(&a, &bad_a);
    // A damaged target, and a damaged source.
    round_trip(d, &a, &bad_b);
    round_trip(d, &bad_a, &b);
}

#[test]
fn images_that_are_not_erofs_round_trip() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = image_pair(d, LZ4HC);
    let noise = |img: &Path, to: &Path, seed: u64| {
        let len = std::fs::metadata(img).unwrap().len() as usize;
        std::fs::write(to, random(len, seed)).unwrap();
    };
    let (na, nb) = (d.join("noise-a.img"), d.join("noise-b.img"));
    noise(&b, &nb, 20);
    noise(&a, &na, 21);
    // EROFS to random bytes of the same size, and back.
    round_trip(d, &a, &nb);
    round_trip(d, &na, &b);
}

#[test]
fn another_lz4hc_level_in_the_target_round_trips() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = mkfs(dir.path(), "a", &tree_a(), &["-zlz4hc,9"]);
    let b = mkfs(dir.path(), "b", &tree_b(), &["-zlz4hc,12"]);
    round_trip(dir.path(), &a, &b);
}

/// The operation kinds of every partition of `pkg`, by `inspect --json`.
fn kinds(pkg: &Path) -> BTreeSet<String> {
    let out = romdelta()
        .args(["inspect", "--json"])
        .arg(pkg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["by_kind"].as_array().unwrap())
        .map(|k| k["kind"].as_str().unwrap().to_string())
        .collect()
}

/// The package from A to B built with `opts` rebuilds clusters at apply.
fn check_uses_recompress(opts: &[&str]) {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = image_pair(dir.path(), opts);
    let pkg = dir.path().join("p.romdelta");
    diff(&a, &b, &pkg, &[]);
    let used = kinds(&pkg);
    assert!(
        used.contains(RECOMPRESS),
        "mkfs.erofs {opts:?}: no {RECOMPRESS} operation; used: {used:?}"
    );
    let out = romdelta().arg("inspect").arg(&pkg).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(RECOMPRESS), "{text}");
}

#[test]
fn lz4hc_packages_rebuild_clusters() {
    check_uses_recompress(LZ4HC);
}

#[test]
fn lz4hc_level_12_packages_rebuild_clusters() {
    check_uses_recompress(LZ4HC_12);
}

#[test]
fn lz4hc_64k_pcluster_packages_rebuild_clusters() {
    check_uses_recompress(LZ4HC_64K);
}

#[test]
fn lz4hc_tail_packed_packages_rebuild_clusters() {
    check_uses_recompress(LZ4HC_TAIL);
}

#[test]
fn lz4_packages_rebuild_clusters() {
    check_uses_recompress(LZ4);
}

/// The package is the same bytes whatever the thread count.
#[test]
fn recompress_packages_do_not_depend_on_the_thread_count() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = image_pair(dir.path(), LZ4HC);
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    diff(&a, &b, &one, &["--threads", "1"]);
    diff(&a, &b, &two, &["--threads", "2"]);
    assert!(kinds(&one).contains(RECOMPRESS));
    assert!(std::fs::read(&one).unwrap() == std::fs::read(&two).unwrap());
}

#[test]
fn rebuilding_clusters_makes_the_package_smaller() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = image_pair(dir.path(), LZ4HC);
    let (with, without) = (dir.path().join("with"), dir.path().join("without"));
    diff(&a, &b, &with, &[]);
    diff(&a, &b, &without, &["--no-recompress"]);
    // Without the rebuild the package still applies.
    let got = apply(&without, &a, &dir.path().join("out.img"));
    assert!(got == std::fs::read(&b).unwrap());
    assert!(!kinds(&without).contains(RECOMPRESS));
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert!(
        size(&with) < size(&without),
        "{} bytes with the rebuild, {} without",
        size(&with),
        size(&without)
    );
}

#[test]
fn damaged_recompress_data_is_refused() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = image_pair(d, LZ4HC);
    let pkg = d.join("p.romdelta");
    diff(&a, &b, &pkg, &[]);
    // `inspect --json` reports no operation offsets: the package's own
    // manifest says where each operation's data lies.
    let bytes = std::fs::read(&pkg).unwrap();
    let parsed = romdelta_format::Package::parse(&bytes).unwrap();
    let data_start = bytes.len() - parsed.data.len();
    let op = parsed
        .manifest
        .partitions
        .iter()
        .flat_map(|p| &p.operations)
        .filter(|o| o.kind.name() == RECOMPRESS && o.data_length > 0)
        .max_by_key(|o| o.data_length)
        .unwrap_or_else(|| panic!("no {RECOMPRESS} operation with data"));
    let (start, len) = (
        data_start + op.data_offset as usize,
        op.data_length as usize,
    );
    let runs = d.join("runs");
    std::fs::create_dir(&runs).unwrap();
    for at in [0, 1, len / 3, len / 2, len - 1] {
        let mut bad = bytes.clone();
        bad[start + at] ^= 0x10;
        let bad_pkg = d.join("bad.romdelta");
        std::fs::write(&bad_pkg, &bad).unwrap();
        let out = runs.join("out.img");
        let run = romdelta()
            .arg("apply")
            .arg(&bad_pkg)
            .arg("--source")
            .arg(&a)
            .arg("-o")
            .arg(&out)
            .arg("--insecure-no-verify")
            .assert()
            .code(1);
        let err = String::from_utf8_lossy(&run.get_output().stderr).into_owned();
        let error = err.lines().find(|l| l.starts_with("romdelta: error: "));
        assert!(
            error.is_some_and(|e| e.contains(&format!("({})", op.kind.name()))
                && e.contains("package data hash mismatch")),
            "byte {at} of {len}: {err}"
        );
        assert!(!out.exists(), "byte {at} of {len}: output left behind");
        assert!(
            listing(&runs).is_empty(),
            "byte {at} of {len}: left behind {:?}",
            listing(&runs)
        );
        romdelta()
            .arg("verify")
            .arg(&bad_pkg)
            .arg("--insecure-no-verify")
            .assert()
            .code(1);
    }
}

/// A package whose manifest names another liblz4 than the one built in is
/// refused before anything is written, with both versions in the message.
#[test]
fn another_liblz4_version_is_refused_before_writing() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = image_pair(d, LZ4HC);
    let runs = d.join("runs");
    std::fs::create_dir(&runs).unwrap();
    for in_place in [false, true] {
        let pkg = d.join("p.romdelta");
        diff(&a, &b, &pkg, if in_place { &["--in-place"] } else { &[] });
        let bytes = std::fs::read(&pkg).unwrap();
        let parsed = romdelta_format::Package::parse(&bytes).unwrap();
        let mut m = parsed.manifest.clone();
        assert_eq!(m.codecs, vec![romdelta_format::Codec::liblz4()]);
        m.codecs[0].version = 10903;
        let manifest = m.encode();
        let mut other = romdelta_format::Package::encode_prefix_bytes(
            m.format_version(),
            &manifest,
            m.data_len,
            &[],
        );
        other.extend_from_slice(parsed.data);
        let other_pkg = d.join("other.romdelta");
        std::fs::write(&other_pkg, &other).unwrap();
        let mut cmd = romdelta();
        cmd.arg("apply").arg(&other_pkg).arg("--insecure-no-verify");
        let copy = runs.join("copy.img");
        if in_place {
            std::fs::copy(&a, &copy).unwrap();
            cmd.arg("--in-place").arg(&copy);
        } else {
            cmd.arg("--source")
                .arg(&a)
                .arg("-o")
                .arg(runs.join("out.img"));
        }
        let run = cmd.assert().code(1);
        let err = String::from_utf8_lossy(&run.get_output().stderr).into_owned();
        assert!(
            err.contains("liblz4 1.9.3") && err.contains("liblz4 1.9.4"),
            "{err}"
        );
        if in_place {
            assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&a).unwrap());
            assert_eq!(listing(&runs), ["copy.img"]);
            std::fs::remove_file(&copy).unwrap();
        } else {
            assert!(listing(&runs).is_empty(), "{:?}", listing(&runs));
        }
    }
}
