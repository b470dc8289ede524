//! lz4 streams as Android boot images and bare images hold them, made by
//! the `lz4` command line (Debian's, liblz4 1.9.4): legacy `lz4 -l`
//! kernels and cpio-like ramdisks in `ANDROID!` boot images (header
//! versions 2 and 4), and legacy streams and frames of several settings at
//! block starts of a bare image. A changed stream is one
//! SOURCE_LZ4_REBUILD operation when it reproduces and fits the apply
//! memory (ramdisks by default, kernels with `--apply-memory`); streams
//! nobody reproduces (a damaged block, a hand-made literal-only stream)
//! fall back to byte-level operations. Everything round-trips exactly.

use crate::common::romdelta;
use std::path::{Path, PathBuf};

const KIND: &str = "SOURCE_LZ4_REBUILD";

/// Machine-code-like bytes.
fn code(seed: u32, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        match x % 5 {
            0 => {
                v.push(0xe8);
                v.extend_from_slice(&((x >> 8) as i32 % 4096 - v.len() as i32).to_le_bytes());
            }
            1 => v.extend_from_slice(&[0x48, 0x89, 0xe5, 0x55]),
            2 => v.extend_from_slice(&[0x48, 0x8b, 0x45, (x >> 24) as u8]),
            3 => v.extend_from_slice(&[0xc3, 0x90, 0x90]),
            _ => v.push((x >> 16) as u8),
        }
    }
    v.truncate(n);
    v
}

/// A cpio (newc) archive of text-like files, as a ramdisk is.
fn cpio(seed: u32, files: usize) -> Vec<u8> {
    let words = [
        &b"service "[..],
        b"on boot ",
        b"setprop ",
        b"/system/bin/",
        b"\n",
    ];
    let mut x = seed | 1;
    let mut v = Vec::new();
    for i in 0..files {
        let name = format!("etc/init/file{i}.rc\0");
        let mut body = Vec::new();
        for _ in 0..(200 + (i * 37) % 900) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            body.extend_from_slice(words[(x % 5) as usize]);
            if x.is_multiple_of(4) {
                body.extend_from_slice(format!("{}", x % 1000).as_bytes());
            }
        }
        v.extend_from_slice(
            format!(
                "070701{:08X}000081A4000000000000000000000001000000000{:08X}0000000000000000000000000000000000000{:08X}00000000",
                i + 1,
                body.len(),
                name.len()
            )
            .as_bytes(),
        );
        v.extend_from_slice(name.as_bytes());
        v.resize(v.len().div_ceil(4) * 4, 0);
        v.extend_from_slice(&body);
        v.resize(v.len().div_ceil(4) * 4, 0);
    }
    v.extend_from_slice(b"070701TRAILER!!!\0");
    v
}

/// `data` compressed by the `lz4` command line with `args`.
fn lz4(args: &[&str], data: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (i, o) = (dir.path().join("in"), dir.path().join("out.lz4"));
    std::fs::write(&i, data).unwrap();
    let st = std::process::Command::new("lz4")
        .args(args)
        .args(["-q", "-f"])
        .arg(&i)
        .arg(&o)
        .status()
        .expect("the lz4 command line (apt install lz4)");
    assert!(st.success(), "lz4 {args:?}");
    std::fs::read(&o).unwrap()
}

/// An Android boot image, header version 2 (`page` bytes a page) or 4
/// (4096), per AOSP's layout: header page, kernel, ramdisk, each padded
/// to a page; then some blocks of other data.
fn boot_image(version: u32, page: usize, kernel: &[u8], ramdisk: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; page];
    h[..8].copy_from_slice(b"ANDROID!");
    let put = |h: &mut [u8], at: usize, v: u32| h[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put(&mut h, 8, kernel.len() as u32);
    if version < 3 {
        put(&mut h, 12, 0x1000_8000);
        put(&mut h, 16, ramdisk.len() as u32);
        put(&mut h, 20, 0x1100_0000);
        put(&mut h, 32, 0x1000_0100);
        put(&mut h, 36, page as u32);
        put(&mut h, 40, version);
        h[48..52].copy_from_slice(b"test");
        h[64..64 + 17].copy_from_slice(b"console=ttyS0 rw\0");
        put(&mut h, 1644, 1660);
    } else {
        put(&mut h, 12, ramdisk.len() as u32);
        put(&mut h, 20, 1584);
        put(&mut h, 40, version);
        h[44..44 + 17].copy_from_slice(b"console=ttyS0 rw\0");
    }
    let mut img = h;
    for s in [kernel, ramdisk] {
        img.extend_from_slice(s);
        img.resize(img.len().div_ceil(page) * page, 0);
    }
    img.resize(img.len().div_ceil(4096) * 4096, 0);
    img.extend((0..8 * 4096).map(|i| (i % 241) as u8));
    img
}

/// A bare image: each stream at a block start, blocks of other data
/// around them.
fn bare_image(streams: &[Vec<u8>], seed: u8) -> Vec<u8> {
    let mut img: Vec<u8> = (0..4 * 4096).map(|i| (i % 251) as u8 ^ seed).collect();
    for s in streams {
        img.extend_from_slice(s);
        img.resize(img.len().div_ceil(4096) * 4096, 0);
        img.extend((0..4096).map(|i| (i % 13) as u8));
    }
    img
}

/// A valid legacy stream no compressor writes: one block of literals only.
fn literal_legacy(data: &[u8]) -> Vec<u8> {
    let mut block = vec![0xf0u8];
    let mut n = data.len() - 15;
    while n >= 255 {
        block.push(255);
        n -= 255;
    }
    block.push(n as u8);
    block.extend_from_slice(data);
    let mut s = 0x184C_2102u32.to_le_bytes().to_vec();
    s.extend_from_slice(&(block.len() as u32).to_le_bytes());
    s.extend_from_slice(&block);
    s
}

fn kinds(pkg: &Path) -> serde_json::Value {
    let out = romdelta()
        .args(["inspect", "--json"])
        .arg(pkg)
        .output()
        .unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Operations of `kind` in the package.
fn count(v: &serde_json::Value, kind: &str) -> u64 {
    v["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["by_kind"].as_array().unwrap())
        .filter(|k| k["kind"] == kind)
        .map(|k| k["operations"].as_u64().unwrap())
        .sum()
}

/// Diffs `a` to `b` with `args`, applies the package with `max_memory`
/// (when given) and checks the output is `b`; returns the package's
/// manifest JSON and size.
fn round_trip(
    dir: &Path,
    name: &str,
    a: &[u8],
    b: &[u8],
    args: &[&str],
    max_memory: Option<&str>,
) -> (serde_json::Value, u64) {
    let (pa, pb): (PathBuf, PathBuf) = (dir.join("a.img"), dir.join("b.img"));
    std::fs::write(&pa, a).unwrap();
    std::fs::write(&pb, b).unwrap();
    let pkg = dir.join(format!("{name}.romdelta"));
    romdelta()
        .arg("diff")
        .args([&pa, &pb])
        .arg("-o")
        .arg(&pkg)
        .arg("-q")
        .args(args)
        .assert()
        .success();
    let out = dir.join(format!("{name}.img"));
    let mut cmd = romdelta();
    cmd.args(["apply", "--insecure-no-verify", "--source"])
        .arg(&pa)
        .arg("-o")
        .arg(&out);
    if let Some(m) = max_memory {
        cmd.args(["--max-memory", m]);
    }
    cmd.arg(&pkg).assert().success();
    assert!(std::fs::read(&out).unwrap() == b, "{name}: output differs");
    (kinds(&pkg), std::fs::metadata(&pkg).unwrap().len())
}

/// New contents: `what` written at `at`, and one byte in about 8 KiB
/// changed, as a rebuild's shifted addresses and changed strings spread.
fn changed(old: &[u8], at: usize, what: &[u8]) -> Vec<u8> {
    let mut new = old.to_vec();
    new[at..at + what.len()].copy_from_slice(what);
    for i in (1000..new.len()).step_by(8191) {
        new[i] = new[i].wrapping_add(1);
    }
    new
}

#[test]
fn boot_image_kernels_and_ramdisks_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    // A kernel of two legacy blocks (8 MiB and the rest), a ramdisk.
    let kernel = code(3, 14 << 20);
    let kernel2 = changed(&kernel, 5_000_000, b"6.1.0-57");
    let ramdisk = cpio(7, 900);
    let ramdisk2 = changed(&ramdisk, ramdisk.len() / 3, b"service adbd");
    // With 2 KiB pages the kernel's last block holds the ramdisk's first
    // bytes: one operation writes the kernel, the ramdisk goes byte-level.
    for (version, page, rd_args, both) in [
        (2u32, 2048usize, &["-l", "-9"][..], 1),
        (4, 4096, &["-l", "-1"], 2),
    ] {
        let k = |d: &[u8]| lz4(&["-l", "-12", "--favor-decSpeed"], d);
        let a = boot_image(version, page, &k(&kernel), &lz4(rd_args, &ramdisk));
        let b = boot_image(version, page, &k(&kernel2), &lz4(rd_args, &ramdisk2));
        let name = format!("v{version}-{page}");
        // By default the ramdisk only: the kernel needs more memory.
        let (v, with) = round_trip(dir.path(), &name, &a, &b, &[], None);
        assert_eq!(count(&v, KIND), 1, "{v}");
        assert_eq!(v["apply_memory_mib"], 64, "{v}");
        assert!(
            v["codecs"][0].as_str().unwrap().starts_with("liblz4 "),
            "{v}"
        );
        assert_eq!(v["format_version"], 5, "{v}");
        // With the memory both.
        let (v, more) = round_trip(
            dir.path(),
            &format!("{name}-mem"),
            &a,
            &b,
            &["--apply-memory", "256"],
            Some("256"),
        );
        assert_eq!(count(&v, KIND), both, "{v}");
        let need = v["apply_memory_mib"].as_u64().unwrap();
        assert!((65..=256).contains(&need), "{need}");
        let (v, without) = round_trip(
            dir.path(),
            &format!("{name}-off"),
            &a,
            &b,
            &["--apply-memory", "256", "--no-lz4-rebuild"],
            None,
        );
        assert_eq!(count(&v, KIND), 0, "{v}");
        eprintln!(
            "boot image v{version}, {page}-byte pages: {without} bytes byte-level, {with} with the ramdisk rebuilt, {more} with both"
        );
        assert!(
            with < without && more * 2 < without,
            "{more} {with} {without}"
        );
    }
}

#[test]
fn bare_streams_of_every_setting_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let old = cpio(11, 500);
    let new = changed(&old, old.len() / 2, b"on property");
    let reproducible: [&[&str]; 7] = [
        &["-l", "-12"],
        &["-9"],
        &["-9", "--no-frame-crc"],
        &["-9", "-B4", "-BD", "-BX", "--content-size"],
        &["-12", "--favor-decSpeed", "-B4"],
        &["-1", "-B5"],
        &["-12", "-B4", "-BD"],
    ];
    let mut sizes = Vec::new();
    for args in reproducible {
        let (a, b) = (
            bare_image(&[lz4(args, &old)], 0),
            bare_image(&[lz4(args, &new)], 1),
        );
        let name = args.join("");
        let (v, with) = round_trip(dir.path(), &name, &a, &b, &[], None);
        assert_eq!(count(&v, KIND), 1, "{args:?}: {v}");
        let (_, without) = round_trip(dir.path(), &name, &a, &b, &["--no-lz4-rebuild"], None);
        assert!(with < without, "{args:?}: {with} vs {without}");
        sizes.push((name, with, without));
    }
    eprintln!("bare streams (with, without): {sizes:?}");

    // Nobody reproduces these: byte-level, exact.
    let mut damaged = lz4(&["-l", "-12"], &new);
    let at = damaged.len() / 2;
    damaged[at] ^= 0x01;
    let odd = [damaged, literal_legacy(&new[..200_000])];
    let a = bare_image(
        &[lz4(&["-l", "-12"], &old), literal_legacy(&old[..200_000])],
        0,
    );
    let b = bare_image(&odd, 1);
    let (v, _) = round_trip(dir.path(), "odd", &a, &b, &[], None);
    assert_eq!(count(&v, KIND), 0, "{v}");
}
