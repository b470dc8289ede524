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

/// A small signed package that uses every operation kind, and its source
/// image; A/B or in place.
fn small_package(dir: &Path, in_place: bool) -> (Vec<u8>, std::path::PathBuf) {
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
        gap_blocks: 0,
        signing_keys: vec![test_key()],
        in_place,
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
        // The last line is the error (a warning that the unnamed test
        // builds' rules were not checked may come before it).
        let last = err.lines().last().unwrap_or("");
        assert!(
            matches!(code, Some(1) | Some(2)) && last.starts_with("romdelta: error: "),
            "{label}: {cmd} exited {code:?} with stderr {err:?}"
        );
        assert!(!err.contains("panicked"), "{label}: {cmd} panicked: {err}");
    }
    assert!(!out.exists(), "{label}: apply left an output behind");
    // Only a stream that ended early keeps its staged progress (to resume
    // from), and says so; every other failure leaves nothing.
    let stream_err = String::from_utf8_lossy(&runs[3].stderr);
    let (staged, journal) = romdelta_apply::staging_paths(&out);
    if staged.exists() || journal.exists() {
        assert!(
            stream_err.contains("ended early") && stream_err.contains("resume"),
            "{label}: staged output kept after {stream_err:?}"
        );
        let _ = std::fs::remove_file(&staged);
        let _ = std::fs::remove_file(&journal);
    }
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.contains(".romdelta-"),
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
    let (pkg, src) = small_package(dir.path(), false);
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
fn truncations_of_an_in_place_package_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg, src) = small_package(dir.path(), true);
    let parsed = romdelta_format::Package::parse(&pkg).unwrap();
    assert!(parsed.manifest.in_place);
    // Every cut in the header, around the install byte and in the last 64
    // bytes of the manifest and the signatures (where the stage lists and
    // what follows them lie), and a sample of the rest; the format's own
    // tests cut an in-place package at every byte.
    let sections = parsed.header.data_offset() as usize;
    let manifest_end = 72 + parsed.header.manifest_len as usize;
    let cases = (0..pkg.len())
        .filter(|&n| {
            n <= 80 || (manifest_end.saturating_sub(64)..=sections).contains(&n) || n % 97 == 0
        })
        .map(|n| {
            (
                format!("in-place package truncated to {n}"),
                pkg[..n].to_vec(),
            )
        })
        .collect();
    in_parallel(cases, &std::fs::read(src).unwrap());
}

#[test]
fn random_bit_flips_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg, src) = small_package(dir.path(), false);
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

#[test]
fn a_signed_package_whose_new_image_hash_is_wrong_leaves_no_output() {
    // Every operation checks out; only the whole written image does not
    // hash to what the manifest says. Hashed while it is written, from a
    // file and from a pipe, it must still be refused before anything is
    // put in place.
    let dir = tempfile::tempdir().unwrap();
    let (bytes, src) = small_package(dir.path(), false);
    let pkg = romdelta_format::Package::parse(&bytes).unwrap();
    let mut m = pkg.manifest.clone();
    m.partitions[0].new.sha256[7] ^= 0x10;
    let sig = romdelta_format::signing::sign(&m.encode(), &test_key());
    let mut bad = romdelta_format::Package::encode_prefix(&m, &[sig]);
    bad.extend_from_slice(pkg.data);
    let path = dir.path().join("bad.romdelta");
    std::fs::write(&path, &bad).unwrap();
    let out = dir.path().join("out.img");
    for stream in [false, true] {
        let mut cmd = romdelta();
        cmd.arg("apply");
        if stream {
            cmd.arg("-").write_stdin(bad.clone());
        } else {
            cmd.arg(&path);
        }
        let o = cmd
            .arg("--source")
            .arg(&src)
            .arg("--insecure-no-verify")
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "stream {stream}: {err}");
        assert!(
            err.contains("written image hash mismatch"),
            "stream {stream}: {err}"
        );
        let (staged, journal) = romdelta_apply::staging_paths(&out);
        assert!(!out.exists() && !staged.exists() && !journal.exists());
    }
}

/// A valid one-partition full manifest to break in one way at a time.
fn base_manifest() -> romdelta_format::Manifest {
    use romdelta_format::*;
    Manifest {
        kind: PackageKind::Full,
        in_place: false,
        target_build: BuildInfo::default(),
        source_build: None,
        data_len: 10,
        partitions: vec![PartitionUpdate {
            name: "system".into(),
            old: None,
            new: PartitionInfo {
                size: 8 * 4096,
                sha256: [1; 32],
            },
            operations: vec![
                Operation {
                    kind: OpKind::Replace,
                    src_extents: vec![],
                    dst_extents: vec![Extent::new(0, 4)],
                    data_offset: 0,
                    data_length: 10,
                    data_sha256: [2; 32],
                    src_sha256: [0; 32],
                },
                Operation {
                    kind: OpKind::Zero,
                    src_extents: vec![],
                    dst_extents: vec![Extent::new(4, 4)],
                    data_offset: 0,
                    data_length: 0,
                    data_sha256: [0; 32],
                    src_sha256: [0; 32],
                },
            ],
            stages: vec![],
        }],
        removed: vec![],
        codecs: vec![],
        apply_memory_mib: 0,
    }
}

#[test]
fn each_hostile_manifest_is_refused_with_a_clear_error() {
    use romdelta_format::*;
    let ok = base_manifest();
    Manifest::decode(&ok.encode()).expect("the base manifest is valid");
    let refused = |label: &str, m: &Manifest, expect: &str| {
        let err = Manifest::decode(&m.encode()).expect_err(label).to_string();
        assert!(
            err.contains(expect),
            "{label}: {err:?} should mention {expect:?}"
        );
    };
    for (name, why) in [
        ("", "1 to 64"),
        ("a/b", "only letters"),
        ("..", "only letters"),
        ("a\0b", "only letters"),
        (".hidden", "only letters"),
        ("-rf", "only letters"),
    ] {
        let mut m = ok.clone();
        m.partitions[0].name = name.into();
        refused(&format!("name {name:?}"), &m, why);
    }
    let mut m = ok.clone();
    m.partitions.push(m.partitions[0].clone());
    refused("duplicate partition", &m, "appears twice");
    let mut m = ok.clone();
    m.partitions[0].operations[1].dst_extents = vec![Extent::new(3, 2)];
    refused("overlapping destinations", &m, "both write");
    let mut m = ok.clone();
    m.partitions[0].operations[1].dst_extents = vec![Extent::new(8, 1)];
    refused("destination out of range", &m, "past the target");
    let mut m = ok.clone();
    m.data_len = 5;
    refused("data past the end", &m, "past the data section");
    let mut m = ok.clone();
    m.kind = PackageKind::Delta;
    m.source_build = Some(BuildInfo::default());
    m.partitions[0].old = Some(PartitionInfo {
        size: 4096,
        sha256: [3; 32],
    });
    m.partitions[0].operations[1] = Operation {
        kind: OpKind::SourceCopy,
        src_extents: vec![Extent::new(0, 4)],
        ..m.partitions[0].operations[1].clone()
    };
    refused("source read past the source", &m, "past the source");
    let mut m = ok.clone();
    m.partitions[0].operations[0].data_length = 1 << 40;
    m.data_len = 1 << 40;
    refused("data longer than any encoding", &m, "more data than");

    // Byte-level cases the encoder cannot produce.
    let bytes = ok.encode();
    // Unknown operation kind: the first op's kind byte follows the op count.
    // The same manifest without operations ends in [op count 0, removed count 0]:
    // in the real one the op count sits at that place and the first kind right after.
    let mut no_ops = ok.clone();
    no_ops.partitions[0].operations.clear();
    let op_at = no_ops.encode().len() - 2 + 1;
    let mut b = bytes.clone();
    assert_eq!(b[op_at], OpKind::Replace.code(), "offset arithmetic");
    b[op_at] = 9;
    assert!(Manifest::decode(&b)
        .unwrap_err()
        .to_string()
        .contains("unknown code 9"));
    // A huge operation count with few bytes behind it.
    let mut b = bytes[..op_at - 1].to_vec();
    b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(Manifest::decode(&b)
        .unwrap_err()
        .to_string()
        .contains("too large"));
    // Format versions from the past and the future, and lengths past the end of the file.
    let pkg = Package::encode_prefix(&ok, &[]);
    for v in [0u8, 1, 6, 200] {
        let mut other = pkg.clone();
        other[8] = v;
        let err = Package::parse(&other).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "unsupported package format version {v} (this romdelta reads versions 2 to 5)"
            )),
            "{err}"
        );
    }
    let mut long = pkg.clone();
    long[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(Package::parse(&long).is_err());
    // A package is written with the oldest version that can express it: a
    // SOURCE_BSDIFF_SPARSE operation needs version 3, and a version-2 header
    // over one is refused.
    let mut sparse = ok.clone();
    sparse.kind = PackageKind::Delta;
    sparse.source_build = Some(BuildInfo::default());
    sparse.partitions[0].old = Some(PartitionInfo {
        size: 4 * 4096,
        sha256: [3; 32],
    });
    sparse.partitions[0].operations[0].kind = OpKind::SourceBsdiffSparse;
    sparse.partitions[0].operations[0].src_extents = vec![Extent::new(0, 4)];
    let with_data = |mut prefix: Vec<u8>| {
        prefix.extend_from_slice(&[0; 10]);
        prefix
    };
    let v3 = with_data(Package::encode_prefix(&sparse, &[]));
    assert_eq!(Package::parse(&v3).unwrap().header.version, 3);
    assert_eq!(
        Package::parse(&with_data(pkg.clone()))
            .unwrap()
            .header
            .version,
        2
    );
    let v2 = with_data(Package::encode_prefix_bytes(2, &sparse.encode(), 10, &[]));
    let err = Package::parse(&v2).unwrap_err().to_string();
    assert!(
        err.contains("uses operation kinds of format version 3, the header says version 2"),
        "{err}"
    );
    // A valid signature over a different manifest.
    let key = signing::SigningKey::from_bytes(&[5; 32]);
    let mut other = ok.clone();
    other.target_build.version = "2".into();
    let sig = signing::sign(&other.encode(), &key);
    let mut full = Package::encode_prefix(&ok, &[sig]);
    full.extend_from_slice(&[0; 10]);
    let parsed = Package::parse(&full).unwrap();
    let err = signing::check_trust(
        parsed.manifest_bytes,
        &parsed.signatures,
        &[key.verifying_key()],
    )
    .unwrap_err();
    assert!(err.to_string().contains("altered"), "{err}");
}
