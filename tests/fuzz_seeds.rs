//! The committed fuzz seeds that hold packages or manifests
//! (`fuzz/corpus/{package_parse,apply_package,manifest_decode,inplace_check}/seed-*`)
//! and those of the payload.bin targets (`payload_parse`, `payload_ops`)
//! and of the operation data decoders (`op_decoders`) are valid inputs of the current format version, so that fuzzing starts
//! from inputs that reach deep. They are made here, from fixed images:
//!
//! ```sh
//! ROMDELTA_WRITE_FUZZ_SEEDS=1 cargo test --release --test integration fuzz_seeds
//! ```
//!
//! writes them anew (after a format change); without the variable the test
//! only checks the committed ones.

use crate::common::fast_opts;
use romdelta_diff::DiffOptions;
use romdelta_format::{Manifest, Package};
use std::path::{Path, PathBuf};

/// The source image of the `apply_package` fuzz target (it must match the
/// one in `fuzz/fuzz_targets/apply_package.rs`): 64 KiB.
fn fuzz_source() -> Vec<u8> {
    (0..64 * 1024u32).map(|i| (i * 31 % 251) as u8).collect()
}

/// A target for it that needs every kind of operation: edits inside blocks,
/// bytes changed at a regular stride (as shifted pointers are: what bsdiff
/// wins on), a zeroed block, two whole blocks that trade places, and new
/// data past the old end (an odd size).
fn fuzz_target_image() -> Vec<u8> {
    const B: usize = 4096;
    let a = fuzz_source();
    let mut b = a.clone();
    b[1000..1010].copy_from_slice(b"0123456789");
    b[5 * B + 77..5 * B + 140].fill(0xee);
    for i in (2 * B..4 * B).step_by(16) {
        b[i] = b[i].wrapping_add(3);
    }
    b[7 * B..8 * B].fill(0);
    b[10 * B..11 * B].copy_from_slice(&a[13 * B..14 * B]);
    b[13 * B..14 * B].copy_from_slice(&a[10 * B..11 * B]);
    b.extend((0..6000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    b
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

/// Writes a package from `a` (none: full) to `b` and returns its bytes.
fn package(dir: &Path, a: Option<&[u8]>, b: &[u8], opts: &DiffOptions) -> Vec<u8> {
    let pb = dir.join("b.img");
    std::fs::write(&pb, b).unwrap();
    let src = a.map(|a| {
        let pa = dir.join("a.img");
        std::fs::write(&pa, a).unwrap();
        romdelta_rom::Rom::open(&pa).unwrap()
    });
    let dst = romdelta_rom::Rom::open(&pb).unwrap();
    let out = dir.join("seed.romdelta");
    romdelta_diff::write_package(src.as_ref(), &dst, opts, &out, &|_| {}).unwrap();
    std::fs::read(&out).unwrap()
}

/// The seeds, by target directory and file name.
fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (fuzz_source(), fuzz_target_image());
    let small = DiffOptions {
        region_blocks: 2,
        gap_blocks: 0,
        copy_op_blocks: 1,
        ..fast_opts()
    };
    let in_place = |max_stash_blocks| DiffOptions {
        in_place: true,
        max_stash_blocks,
        ..small.clone()
    };
    let packages = [
        ("delta", package(dir.path(), Some(&a), &b, &small)),
        ("full", package(dir.path(), None, &b, &small)),
        (
            "in-place",
            package(dir.path(), Some(&a), &b, &in_place(16384)),
        ),
        (
            "in-place-no-stash",
            package(dir.path(), Some(&a), &b, &in_place(0)),
        ),
        (
            "in-place-full",
            package(dir.path(), None, &b, &in_place(16384)),
        ),
    ];
    let mut out = payload_seeds(dir.path(), &a, &b);
    for (name, bytes) in packages {
        let pkg = Package::parse(&bytes).unwrap();
        let manifest = pkg.manifest_bytes.to_vec();
        if pkg.manifest.in_place {
            out.push(("inplace_check", format!("seed-{name}"), manifest.clone()));
        }
        out.push(("manifest_decode", format!("seed-{name}"), manifest));
        out.push(("package_parse", format!("seed-{name}"), bytes.clone()));
        out.push(("apply_package", format!("seed-{name}"), bytes));
    }
    out
}

/// The seeds of the payload.bin targets: a full and an incremental payload
/// (from the images above, cut to whole blocks), and operation data of the
/// `payload_ops` target (kind, destination length, source length, source,
/// data).
fn payload_seeds(dir: &Path, a: &[u8], b: &[u8]) -> Vec<(&'static str, String, Vec<u8>)> {
    use romdelta_android::payload::ops;
    let b = &b[..b.len() / 4096 * 4096];
    let (pa, pb) = (dir.join("pa.img"), dir.join("pb.img"));
    std::fs::write(&pa, a).unwrap();
    std::fs::write(&pb, b).unwrap();
    let src = romdelta_rom::Rom::open(&pa).unwrap();
    let dst = romdelta_rom::Rom::open(&pb).unwrap();
    let mut out = Vec::new();
    for (name, source) in [("full", None), ("delta", Some(&src))] {
        let path = dir.join("seed.bin");
        romdelta_diff::payload::write_payload(source, &dst, &fast_opts(), &[], &path, &|_| {})
            .unwrap();
        out.push((
            "payload_parse",
            format!("seed-{name}"),
            std::fs::read(&path).unwrap(),
        ));
    }
    // A partition with an AVB hashtree footer: a payload with verity fields.
    let avb_image = romdelta_android::avb::hashtree_image(
        &b[..8 * 4096],
        &romdelta_android::avb::HashtreeOptions {
            partition: "system".into(),
            partition_size: 12 * 4096,
            algorithm: romdelta_android::verity::HashAlgorithm::Sha256,
            salt: vec![0x5a; 8],
            fec_roots: 2,
        },
    )
    .unwrap();
    let pv = dir.join("system.img");
    std::fs::write(&pv, &avb_image).unwrap();
    let path = dir.join("seed.bin");
    let verity_rom = romdelta_rom::Rom::open(&pv).unwrap();
    romdelta_diff::payload::write_payload(None, &verity_rom, &fast_opts(), &[], &path, &|_| {})
        .unwrap();
    out.push((
        "payload_parse",
        "seed-verity".into(),
        std::fs::read(&path).unwrap(),
    ));
    // Signature messages (of another hash) by the fuzz target's keys.
    for (name, key) in [("rsa", "rsa2048.key.pem"), ("ec", "p256.key.pem")] {
        let pem = std::fs::read_to_string(crate::payload::test_key(key)).unwrap();
        let k = romdelta_android::signature::SigningKey::from_pem(&pem).unwrap();
        let msg = romdelta_android::signature::signatures_message(
            &[k],
            &romdelta_format::sha256(b"seed"),
        );
        out.push(("payload_signatures", format!("seed-{name}"), msg));
    }
    out.push(("avb_footer", "seed-fec".into(), avb_image.clone()));
    let no_fec = romdelta_android::avb::hashtree_image(
        &b[..4 * 4096],
        &romdelta_android::avb::HashtreeOptions {
            partition: "vendor".into(),
            partition_size: 6 * 4096,
            algorithm: romdelta_android::verity::HashAlgorithm::Sha1,
            salt: vec![0xd0; 20],
            fec_roots: 0,
        },
    )
    .unwrap();
    out.push(("avb_footer", "seed-tree".into(), no_fec));
    let op_input = |kind: u8, dst_len: usize, src: &[u8], data: &[u8]| {
        let mut v = vec![kind];
        v.extend((dst_len as u16).to_le_bytes());
        v.extend((src.len() as u16).to_le_bytes());
        v.extend_from_slice(src);
        v.extend_from_slice(data);
        v
    };
    let (old, new) = (&a[..8192], &b[..8192]);
    // The operation data of the package format (`op_decoders`), same layout.
    {
        use romdelta_format::ops as rops;
        let patch = romdelta_diff::bsdiff::diff(old, new);
        for (kind, name, src, data) in [
            (0u8, "replace", &[][..], rops::encode_replace(new, 3)),
            (1, "source-zstd", old, rops::encode_source_zstd(old, new, 3)),
            (2, "bsdiff", old, rops::encode_bsdiff(&patch, 3)),
            (
                3,
                "bsdiff-sparse",
                old,
                rops::encode_bsdiff_sparse(&patch, 3),
            ),
        ] {
            out.push((
                "op_decoders",
                format!("seed-{name}"),
                op_input(kind, 8192, src, &data),
            ));
        }
    }
    out.push((
        "payload_ops",
        "seed-xz".into(),
        op_input(2, 8192, &[], &ops::encode_xz(new)),
    ));
    out.push((
        "payload_ops",
        "seed-bz2".into(),
        op_input(1, 8192, &[], &ops::encode_bz2(new)),
    ));
    let mut patch = Vec::new();
    romdelta_format::bsdiff40::diff(old, new, &mut patch).unwrap();
    out.push((
        "payload_ops",
        "seed-bsdiff40".into(),
        op_input(4, 8192, old, &patch),
    ));
    // puffin's own 1-to-2 patch over its sample stream.
    let hex = crate::common::puffin_vector;
    out.push((
        "payload_ops",
        "seed-puffdiff".into(),
        op_input(6, 22, &hex("sample1_deflates"), &hex("patch_1_to_2")),
    ));
    // An LZ4DIFF patch of EROFS-like lz4hc clusters.
    let lz = |ext: &str| {
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
            "crates/android/testdata/lz4diff/v1_bsdiff_zeropad_exact.{ext}"
        )))
        .unwrap()
    };
    out.push((
        "payload_ops",
        "seed-lz4diff".into(),
        op_input(7, 20480, &lz("src"), &lz("patch")),
    ));
    for (name, text) in blockota_lists() {
        let mut v = 20u32.to_le_bytes().to_vec();
        v.extend_from_slice(text.as_bytes());
        out.push(("blockota_transfer_list", format!("seed-{name}"), v));
    }
    out
}

/// Transfer lists of versions 1, 2 and 4 with every command and every
/// source form (patch.dat of 20 bytes).
fn blockota_lists() -> [(&'static str, String); 3] {
    let h = "0123456789abcdef0123456789abcdef01234567";
    let v4 = format!(
        "4\n11\n0\n3\nerase 2,20,30\nstash {h} 2,0,1\nmove {h} 2,10,12 2 2,0,2\n\
         bsdiff 0 10 {h} {h} 2,12,13 1 2,1,2\nmove {h} 2,13,15 2 2,2,3 2,0,1 {h}:2,1,2\n\
         bsdiff 10 5 {h} {h} 2,15,16 1 - {h}:2,0,1\nfree {h}\nnew 2,16,18\nzero 2,18,20\n\
         imgdiff 15 5 {h} {h} 2,0,1 1 2,5,6\n"
    );
    let v2 = "2\n3\n1\n1\nstash 1 2,0,1\nmove 2,5,6 1 - 1:2,0,1\nfree 1\nnew 2,6,7\nbsdiff 0 4 2,7,8 1 2,1,2\n";
    let v1 = "1\n3\nmove 2,0,1 2,5,6\nbsdiff 0 4 2,1,2 2,7,8\nnew 2,8,9\nerase 2,9,10\n";
    [("v4", v4), ("v2", v2.into()), ("v1", v1.into())]
}

/// Splits an operation-data seed (`op_decoders`, `payload_ops`): kind byte,
/// u16le destination length, u16le source length, source, data.
fn split_op_input(bytes: &[u8]) -> (usize, Vec<u8>, &[u8], &[u8]) {
    let dst_len = u16::from_le_bytes([bytes[1], bytes[2]]) as usize;
    let src_len = u16::from_le_bytes([bytes[3], bytes[4]]) as usize;
    let (src, data) = bytes[5..].split_at(src_len);
    (bytes[0] as usize, vec![0; dst_len], src, data)
}

/// Checks a committed payload seed (or operation data seed).
fn check_payload_seed(target: &str, bytes: &[u8]) -> Result<(), String> {
    use romdelta_android::payload::{ops, Payload, PayloadOpKind as K};
    if target == "payload_parse" {
        return Payload::parse(bytes).map(|_| ()).map_err(|e| e.to_string());
    }
    if target == "payload_signatures" {
        use prost::Message as _;
        let m = romdelta_android::payload::proto::Signatures::decode(bytes)
            .map_err(|e| e.to_string())?;
        return if m.signatures.is_empty() {
            Err("no signature".into())
        } else {
            Ok(())
        };
    }
    if target == "blockota_transfer_list" {
        let patch_len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as u64;
        return romdelta_android::blockota::TransferList::parse(&bytes[4..], patch_len)
            .map(|_| ())
            .map_err(|e| e.to_string());
    }
    if target == "avb_footer" {
        let f = romdelta_android::avb::read_footer(bytes.len() as u64, |off, buf| {
            buf.copy_from_slice(&bytes[off as usize..off as usize + buf.len()]);
            Ok(())
        });
        return match f {
            Ok(Some(f)) if f.hashtree.is_some() => Ok(()),
            other => Err(format!("no hashtree descriptor: {other:?}")),
        };
    }
    let (kind, mut out, src, data) = split_op_input(bytes);
    if target == "op_decoders" {
        use romdelta_format::OpKind;
        let kind = [
            OpKind::Replace,
            OpKind::SourceZstd,
            OpKind::SourceBsdiff,
            OpKind::SourceBsdiffSparse,
            OpKind::SourceRecompress,
            OpKind::SourceFieldDelta,
        ][kind % 6];
        return romdelta_format::ops::decode(kind, data, src, &mut out).map_err(|e| e.to_string());
    }
    let kind = [
        K::Replace,
        K::ReplaceBz,
        K::ReplaceXz,
        K::ReplaceZstd,
        K::SourceBsdiff,
        K::BrotliBsdiff,
        K::Puffdiff,
        K::Lz4diffBsdiff,
        K::Zucchini,
    ][kind % 9];
    if kind.is_replace() {
        ops::decode_replace(kind, data, &mut out).map(|_| ())
    } else {
        ops::decode_patch(kind, data, src, &mut out)
    }
    .map_err(|e| e.to_string())
}

#[test]
fn fuzz_seeds_are_valid_inputs_of_this_format_version() {
    if std::env::var_os("ROMDELTA_WRITE_FUZZ_SEEDS").is_some() {
        for target in [
            "package_parse",
            "apply_package",
            "manifest_decode",
            "inplace_check",
            "payload_parse",
            "payload_ops",
            "op_decoders",
            "avb_footer",
            "payload_signatures",
        ] {
            let dir = corpus().join(target);
            std::fs::create_dir_all(&dir).unwrap();
            for e in std::fs::read_dir(&dir).unwrap() {
                let path = e.unwrap().path();
                if path
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("seed-")
                {
                    std::fs::remove_file(path).unwrap();
                }
            }
        }
        for (target, name, bytes) in seeds() {
            std::fs::write(corpus().join(target).join(name), bytes).unwrap();
        }
    }
    let (mut in_place, mut sparse) = (0, 0);
    for target in [
        "package_parse",
        "apply_package",
        "manifest_decode",
        "inplace_check",
    ] {
        let mut n = 0;
        for e in std::fs::read_dir(corpus().join(target)).unwrap() {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let manifest = match target {
                "package_parse" | "apply_package" => Package::parse(&bytes).map(|p| p.manifest),
                _ => Manifest::decode(&bytes),
            }
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if target == "inplace_check" {
                assert!(manifest.in_place, "{}", path.display());
                for p in &manifest.partitions {
                    romdelta_format::inplace::simulate(p, &mut |r| r.rev().collect())
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                }
            }
            in_place += usize::from(manifest.in_place);
            sparse += usize::from(manifest.format_version() == 3);
            n += 1;
        }
        assert!(n >= 2, "{target}: {n} seeds");
    }
    assert!(in_place >= 9, "{in_place} in-place seeds");
    assert!(
        sparse >= 4,
        "{sparse} seeds with SOURCE_BSDIFF_SPARSE operations"
    );
    for target in [
        "payload_parse",
        "payload_ops",
        "op_decoders",
        "avb_footer",
        "payload_signatures",
        "blockota_transfer_list",
    ] {
        let mut n = 0;
        for e in std::fs::read_dir(corpus().join(target)).unwrap() {
            let path = e.unwrap().path();
            check_payload_seed(target, &std::fs::read(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
        assert!(n >= 2, "{target}: {n} seeds");
    }
}

/// `fuzz/Cargo.toml` (its own workspace, which `cargo test` does not
/// build) names each dependency and each target once, and each target's
/// source file exists: a merge that repeats a key there makes cargo-fuzz
/// refuse the whole manifest.
#[test]
fn the_fuzz_manifest_names_each_dependency_and_target_once() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let text = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    let mut section = String::new();
    let mut seen = std::collections::HashSet::new();
    let mut names = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if section == "[dependencies]" {
            assert!(seen.insert(key.to_string()), "dependency {key} named twice");
        } else if section == "[[bin]]" && key == "name" {
            names.push(value.trim().trim_matches('"').to_string());
        }
    }
    let unique: std::collections::HashSet<_> = names.iter().collect();
    assert_eq!(
        unique.len(),
        names.len(),
        "a fuzz target named twice: {names:?}"
    );
    assert!(names.len() >= 18, "{names:?}");
    for n in &names {
        assert!(
            dir.join("fuzz_targets").join(format!("{n}.rs")).is_file(),
            "fuzz target {n} has no source"
        );
    }
}
