//! SOURCE_BRANCH_DELTA on real machine code: two versions of the same
//! Debian packages (arm64 and amd64 builds), each library in an image,
//! diffed with and without the operation. `.ci/run` downloads the `.deb`s
//! into a directory named by `ROMDELTA_ELF_DEBS`; without it the test
//! skips, or fails under `ROMDELTA_REQUIRE_TOOLS=1`.

use crate::common::{fast_opts, round_trip};
use romdelta_format::{OpKind, Package};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The packages and the library of each that is diffed.
const LIBRARIES: [(&str, &str); 2] = [
    ("libsystemd0", "libsystemd.so.0."),
    ("libssl3", "libssl.so.3"),
];

/// The `.deb`s of `ROMDELTA_ELF_DEBS`, when set and present.
fn debs() -> Option<Vec<PathBuf>> {
    let dir = std::env::var_os("ROMDELTA_ELF_DEBS");
    let found: Option<Vec<PathBuf>> = dir.and_then(|d| {
        let v: Vec<PathBuf> = std::fs::read_dir(d)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "deb"))
            .collect();
        (!v.is_empty()).then_some(v)
    });
    if found.is_none() && std::env::var_os("ROMDELTA_REQUIRE_TOOLS").is_some() {
        panic!("ROMDELTA_ELF_DEBS must name a directory of .debs (.ci/run downloads them)");
    }
    if found.is_none() {
        eprintln!("skipping: ROMDELTA_ELF_DEBS is not set");
    }
    found
}

/// The file of `deb` whose name starts with `prefix`, extracted under `dir`.
fn library(deb: &Path, prefix: &str, dir: &Path) -> Vec<u8> {
    let out = dir.join(deb.file_stem().unwrap());
    let st = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success(), "dpkg-deb -x {}", deb.display());
    let mut stack = vec![out];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() && e.file_name().to_string_lossy().starts_with(prefix) {
                return std::fs::read(e.path()).unwrap();
            }
        }
    }
    panic!("{} holds no {prefix}*", deb.display());
}

/// An image of filler with the file at block 8.
fn image(file: &[u8]) -> Vec<u8> {
    let mut img = vec![0x5a; 8 * 4096];
    img.extend_from_slice(file);
    img.resize(img.len().next_multiple_of(4096) + 4 * 4096, 0);
    img
}

fn package(dir: &Path) -> (usize, Vec<OpKind>) {
    let bytes = std::fs::read(dir.join("p.romdelta")).unwrap();
    let p = Package::parse(&bytes).unwrap();
    let kinds = p.manifest.partitions[0]
        .operations
        .iter()
        .map(|o| o.kind)
        .collect();
    (bytes.len(), kinds)
}

#[test]
fn real_arm64_and_x86_64_libraries_round_trip_and_never_grow() {
    let Some(debs) = debs() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut chosen = [false; 2];
    for arch in ["arm64", "amd64"] {
        for (pkg, prefix) in LIBRARIES {
            let mut versions: Vec<&PathBuf> = debs
                .iter()
                .filter(|p| {
                    let n = p.file_name().unwrap().to_string_lossy().into_owned();
                    n.starts_with(&format!("{pkg}_")) && n.ends_with(&format!("_{arch}.deb"))
                })
                .collect();
            versions.sort();
            assert!(
                versions.len() >= 2,
                "two versions of {pkg} ({arch}) in {debs:?}"
            );
            let a = image(&library(versions[0], prefix, dir.path()));
            let b = image(&library(versions[versions.len() - 1], prefix, dir.path()));
            assert_eq!(
                round_trip(dir.path(), &a, &b, &fast_opts()),
                b,
                "{pkg} {arch}"
            );
            let (with, kinds) = package(dir.path());
            let off = romdelta_diff::DiffOptions {
                branch_delta: false,
                ..fast_opts()
            };
            assert_eq!(round_trip(dir.path(), &a, &b, &off), b, "{pkg} {arch}");
            let (without, plain_kinds) = package(dir.path());
            assert!(!plain_kinds.contains(&OpKind::SourceBranchDelta));
            eprintln!("{pkg} {arch}: {without} bytes without SOURCE_BRANCH_DELTA, {with} with");
            assert!(with <= without, "{pkg} {arch}: {with} > {without}");
            if kinds.contains(&OpKind::SourceBranchDelta) {
                assert!(with < without, "{pkg} {arch}");
                chosen[(arch == "amd64") as usize] = true;
            }
        }
    }
    assert_eq!(chosen, [true, true], "chosen for [arm64, amd64]");
}
