//! Damaged packages: every truncation and thousands of bit flips, fed to
//! `inspect`, `verify`, `apply` and `apply -` (from a pipe). Each must end with exit 1 or 2 and a
//! message, never a panic, never an output that looks finished.

use crate::common::romdelta;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

/// The key the damaged packages are signed with.
fn test_key() -> romdelta_format::signing::SigningKey {
    romdelta_format::signing::SigningKey::from_bytes(&[42; 32])
}

/// A small signed package that uses every operation kind, and its source image.
fn small_package(dir: &Path) -> (Vec<u8>, std::path::PathBuf) {
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let mut a = vec![0u8; 96 * 1024];
    rng.fill(&mut a[8192..60_000]);
    for (i, b) in a[60_000..90_000].iter_mut().enumerate() {
        *b = b"ro.product.name=demo\n"[i % 21];
    }
    let mut b = a.clone();
    b[20_000..20_010].copy_from_slice(b"0123456789"); // patch
    b[64_000..64_100].fill(b'x'); // patch against text
    rng.fill(&mut b[40_960..45_056]); // new data
    b.extend_from_slice(&[7u8; 5000]); // grow, odd size
    let (pa, pb) = (dir.join("a.img"), dir.join("b.img"));
    std::fs::write(&pa, &a).unwrap();
    std::fs::write(&pb, &b).unwrap();
    let opts = romdelta_diff::DiffOptions {
        region_blocks: 2,
        signing_keys: vec![test_key()],
        ..crate::common::fast_opts()
    };
    let src = romdelta_rom::Rom::open(&pa).unwrap();
    let dst = romdelta_rom::Rom::open(&pb).unwrap();
    let pkg = dir.join("p.romdelta");
    romdelta_diff::write_package(Some(&src), &dst, &opts, &pkg, &|_| {}).unwrap();
    (std::fs::read(&pkg).unwrap(), pa)
}

/// Runs the three commands on `bytes` and checks the contract.
fn check_damaged(dir: &Path, src: &Path, bytes: &[u8], label: &str) {
    let pkg = dir.join("bad.romdelta");
    std::fs::write(&pkg, bytes).unwrap();
    let key = dir.join("trusted.pub");
    if !key.exists() {
        std::fs::write(
            &key,
            romdelta_format::signing::public_key_file(&test_key().verifying_key()),
        )
        .unwrap();
    }
    let out = dir.join("out.img");
    let runs = [
        romdelta().arg("inspect").arg(&pkg).output().unwrap(),
        romdelta()
            .arg("verify")
            .arg(&pkg)
            .arg("--source")
            .arg(src)
            .arg("--trusted-key")
            .arg(&key)
            .output()
            .unwrap(),
        romdelta()
            .arg("apply")
            .arg(&pkg)
            .arg("--source")
            .arg(src)
            .arg("--trusted-key")
            .arg(&key)
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap(),
        romdelta()
            .args(["apply", "-", "--source"])
            .arg(src)
            .arg("--trusted-key")
            .arg(&key)
            .arg("-o")
            .arg(&out)
            .write_stdin(bytes.to_vec())
            .output()
            .unwrap(),
    ];
    for (cmd, o) in ["inspect", "verify", "apply", "apply -"].iter().zip(&runs) {
        let code = o.status.code();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            matches!(code, Some(1) | Some(2)) && err.starts_with("romdelta: error: "),
            "{label}: {cmd} exited {code:?} with stderr {err:?}"
        );
        assert!(!err.contains("panicked"), "{label}: {cmd} panicked: {err}");
    }
    assert!(!out.exists(), "{label}: apply left an output behind");
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.starts_with(".romdelta-"),
            "{label}: staging file {name} left behind"
        );
    }
}

/// Splits `cases` over two workers, each in its own directory.
fn in_parallel(cases: Vec<(String, Vec<u8>)>, src_img: &[u8]) {
    let chunks: Vec<Vec<(String, Vec<u8>)>> = {
        let mut a = Vec::new();
        let mut b = Vec::new();
        for (i, c) in cases.into_iter().enumerate() {
            if i % 2 == 0 {
                a.push(c)
            } else {
                b.push(c)
            }
        }
        vec![a, b]
    };
    std::thread::scope(|s| {
        for chunk in chunks {
            s.spawn(move || {
                let dir = tempfile::tempdir().unwrap();
                let src = dir.path().join("src.img");
                std::fs::write(&src, src_img).unwrap();
                for (label, bytes) in chunk {
                    check_damaged(dir.path(), &src, &bytes, &label);
                }
            });
        }
    });
}

#[test]
fn every_truncation_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg, src) = small_package(dir.path());
    assert!(
        pkg.len() < 8192,
        "keep the package small: {} bytes",
        pkg.len()
    );
    // The package uses every kind that carries data or reads the source.
    let parsed = romdelta_format::Package::parse(&pkg).unwrap();
    let kinds: std::collections::BTreeSet<_> = parsed.manifest.partitions[0]
        .operations
        .iter()
        .map(|o| o.kind)
        .collect();
    assert!(kinds.len() >= 4, "kinds used: {kinds:?}");
    let cases = (0..pkg.len())
        .map(|n| (format!("truncated to {n}"), pkg[..n].to_vec()))
        .collect();
    in_parallel(cases, &std::fs::read(src).unwrap());
}

#[test]
fn random_bit_flips_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg, src) = small_package(dir.path());
    let mut rng = ChaCha8Rng::seed_from_u64(2026);
    let cases = (0..2000)
        .map(|_| {
            let mut b = pkg.clone();
            let at = rng.random_range(0..b.len());
            let bit = 1u8 << rng.random_range(0..8);
            b[at] ^= bit;
            (format!("bit {bit:#x} flipped at {at}"), b)
        })
        .collect();
    in_parallel(cases, &std::fs::read(src).unwrap());
}
