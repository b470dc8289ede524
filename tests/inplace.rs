//! In-place packages (install = 1): generated from synthetic pairs, checked
//! by the format's validator, installed over their source by a model
//! applier that follows docs/FORMAT.md ("In-place installation") to the
//! letter, and refused once their stages are tampered with.

use crate::common::{fast_opts, romdelta, synth_roms};
use crate::roundtrip::{apply_edits, edit, image, size};
use proptest::prelude::*;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use romdelta_diff::DiffOptions;
use romdelta_format::inplace::{stage_ranges, stage_stash};
use romdelta_format::{blocks_in, ops, OpKind, Package, PartitionUpdate, BLOCK_SIZE};
use std::collections::HashMap;
use std::path::Path;

const BS: usize = BLOCK_SIZE as usize;

/// Installs `p` over `image` (its old image, or empty) the way an in-place
/// applier does: the image is extended with zeros, each stage saves its
/// stash before writing and serves reads of it from the copy, runs its
/// operations in a random order and re-runs some of them (as after a power
/// cut); finally the image is cut to the new size. Every operation checks
/// the hash of the source bytes it read.
fn install_in_place(
    pkg: &Package<'_>,
    p: &PartitionUpdate,
    image: &mut Vec<u8>,
    rng: &mut ChaCha8Rng,
) {
    let new_blocks = p.new.blocks() as usize;
    if image.len() < new_blocks * BS {
        image.resize(new_blocks * BS, 0);
    }
    for (s, r) in stage_ranges(p).into_iter().enumerate() {
        let mut stash: HashMap<u64, Vec<u8>> = HashMap::new();
        for e in stage_stash(p, s) {
            for b in e.start_block..e.end_block() {
                stash.insert(b, block_of(image, b));
            }
        }
        let mut order: Vec<usize> = r.collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        let reruns: Vec<usize> = order
            .iter()
            .copied()
            .filter(|_| rng.random_ratio(1, 4))
            .collect();
        for i in order.into_iter().chain(reruns) {
            run(pkg, p, i, image, &stash);
        }
    }
    image.truncate(p.new.size as usize);
}

/// Block `b` of `image`, zero-padded past its end.
fn block_of(image: &[u8], b: u64) -> Vec<u8> {
    let start = (b as usize * BS).min(image.len());
    let end = (start + BS).min(image.len());
    let mut v = image[start..end].to_vec();
    v.resize(BS, 0);
    v
}

fn run(
    pkg: &Package<'_>,
    p: &PartitionUpdate,
    i: usize,
    image: &mut [u8],
    stash: &HashMap<u64, Vec<u8>>,
) {
    let op = &p.operations[i];
    let mut src = Vec::new();
    for e in &op.src_extents {
        for b in e.start_block..e.end_block() {
            match stash.get(&b) {
                Some(saved) => src.extend_from_slice(saved),
                None => src.extend(block_of(image, b)),
            }
        }
    }
    if op.kind.reads_source() {
        assert_eq!(
            romdelta_format::sha256(&src),
            op.src_sha256,
            "partition {}, operation {i} ({}) read changed source blocks",
            p.name,
            op.kind
        );
    }
    let mut out = vec![0u8; (op.dst_blocks() * BLOCK_SIZE) as usize];
    let data = pkg.op_data(op);
    match op.kind {
        OpKind::Zero => {}
        OpKind::SourceCopy => out.copy_from_slice(&src),
        kind => ops::decode(kind, data, &src, &mut out).unwrap(),
    }
    let mut at = 0;
    for e in &op.dst_extents {
        let start = e.start_block as usize * BS;
        let len = e.num_blocks as usize * BS;
        image[start..start + len].copy_from_slice(&out[at..at + len]);
        at += len;
    }
}

/// Writes an in-place package from `a` to `b` with `opts` and returns its bytes.
fn in_place_package(dir: &Path, a: &[u8], b: &[u8], opts: &DiffOptions) -> Vec<u8> {
    let (pa, pb) = (dir.join("a.img"), dir.join("b.img"));
    std::fs::write(&pa, a).unwrap();
    std::fs::write(&pb, b).unwrap();
    let src = romdelta_rom::Rom::open(&pa).unwrap();
    let dst = romdelta_rom::Rom::open(&pb).unwrap();
    let out = dir.join("ip.romdelta");
    let opts = DiffOptions {
        in_place: true,
        ..opts.clone()
    };
    romdelta_diff::write_package(Some(&src), &dst, &opts, &out, &|_| {}).unwrap();
    std::fs::read(&out).unwrap()
}

/// The largest stash of any stage of `p`, in blocks.
fn largest_stash(p: &PartitionUpdate) -> u64 {
    (0..p.stages.len())
        .map(|s| blocks_in(&stage_stash(p, s)))
        .max()
        .unwrap_or(0)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn installing_in_place_gives_the_target(
        seed in any::<u64>(),
        size in size(),
        edits in prop::collection::vec(edit(), 0..8),
        max_stash in prop_oneof![Just(0u64), Just(1), Just(16), Just(16384)],
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let a = image(&mut rng, size.min(8 << 20));
        let b = apply_edits(&mut rng, a.clone(), &edits);
        let dir = tempfile::tempdir().unwrap();
        let opts = DiffOptions { max_stash_blocks: max_stash, region_blocks: 64, ..fast_opts() };
        let bytes = in_place_package(dir.path(), &a, &b, &opts);
        let pkg = Package::parse(&bytes).unwrap();
        prop_assert!(pkg.manifest.in_place);
        let p = &pkg.manifest.partitions[0];
        prop_assert!(largest_stash(p) <= max_stash);
        let mut img = a.clone();
        install_in_place(&pkg, p, &mut img, &mut rng);
        prop_assert!(img == b, "installed image differs: {} vs {} bytes", img.len(), b.len());
    }
}

#[test]
fn synthetic_roms_install_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = synth_roms(dir.path(), 5);
    let src = romdelta_rom::Rom::open(&old).unwrap();
    let dst = romdelta_rom::Rom::open(&new).unwrap();
    let out = dir.path().join("ip.romdelta");
    let opts = DiffOptions {
        in_place: true,
        max_stash_blocks: 256,
        ..fast_opts()
    };
    let summary = romdelta_diff::write_package(Some(&src), &dst, &opts, &out, &|_| {}).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let pkg = Package::parse(&bytes).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for (p, s) in pkg.manifest.partitions.iter().zip(&summary.partitions) {
        let stats = s.in_place.as_ref().expect("in-place statistics");
        assert_eq!(stats.stages, p.stages.len() as u64);
        assert_eq!(stats.largest_stash_blocks, largest_stash(p));
        assert!(stats.largest_stash_blocks <= 256, "{}: {stats:?}", p.name);
        // The summary describes the operations as written.
        let ops: u64 = s.by_kind.iter().map(|k| k.operations).sum();
        assert_eq!(ops, p.operations.len() as u64);
        let mut img = match src.get(&p.name) {
            Some(o) => std::fs::read(&o.path).unwrap(),
            None => Vec::new(),
        };
        if p.old.is_some() {
            assert!(
                stats.identity_copy_blocks_dropped > 0,
                "{}: {stats:?}",
                p.name
            );
        }
        install_in_place(&pkg, p, &mut img, &mut rng);
        let want = std::fs::read(&dst.get(&p.name).unwrap().path).unwrap();
        assert!(img == want, "partition {} differs", p.name);
    }
}

/// Two images of 64 blocks in which blocks 8..16 and 40..48 trade places
/// (and nothing else changes): with copies of at most 8 blocks, two
/// SOURCE_COPY operations that each read what the other writes.
fn swapped_pair() -> (Vec<u8>, Vec<u8>) {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut a = vec![0u8; 64 * BS];
    rng.fill_bytes(&mut a);
    let mut b = a.clone();
    b[8 * BS..16 * BS].copy_from_slice(&a[40 * BS..48 * BS]);
    b[40 * BS..48 * BS].copy_from_slice(&a[8 * BS..16 * BS]);
    (a, b)
}

#[test]
fn a_swap_is_one_stage_with_a_stash_or_is_broken_by_a_replace() {
    let (a, b) = swapped_pair();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let base = DiffOptions {
        copy_op_blocks: 8,
        ..fast_opts()
    };
    // Room for both halves: one stage, both copies, a 16-block stash.
    let bytes = in_place_package(dir.path(), &a, &b, &base);
    let pkg = Package::parse(&bytes).unwrap();
    let p = &pkg.manifest.partitions[0];
    assert_eq!(p.stages, vec![2]);
    assert!(p.operations.iter().all(|o| o.kind == OpKind::SourceCopy));
    assert_eq!(largest_stash(p), 16);
    let mut img = a.clone();
    install_in_place(&pkg, p, &mut img, &mut rng);
    assert!(img == b);
    // Room for 8 blocks: one half is re-encoded, and the copy that reads
    // what it overwrites runs first, in a stage of its own or with it.
    let bytes = in_place_package(
        dir.path(),
        &a,
        &b,
        &DiffOptions {
            max_stash_blocks: 8,
            ..base.clone()
        },
    );
    let pkg = Package::parse(&bytes).unwrap();
    let p = &pkg.manifest.partitions[0];
    let kinds: Vec<OpKind> = p.operations.iter().map(|o| o.kind).collect();
    assert_eq!(kinds, vec![OpKind::SourceCopy, OpKind::Replace]);
    assert!(largest_stash(p) <= 8);
    let mut img = a.clone();
    install_in_place(&pkg, p, &mut img, &mut rng);
    assert!(img == b);
    // No stash at all: the copy and the REPLACE in two stages.
    let bytes = in_place_package(
        dir.path(),
        &a,
        &b,
        &DiffOptions {
            max_stash_blocks: 0,
            ..base
        },
    );
    let pkg = Package::parse(&bytes).unwrap();
    let p = &pkg.manifest.partitions[0];
    assert_eq!(p.stages, vec![1, 1]);
    assert_eq!(largest_stash(p), 0);
    let mut img = a.clone();
    install_in_place(&pkg, p, &mut img, &mut rng);
    assert!(img == b);
}

#[test]
fn the_cli_writes_and_shows_in_place_packages() {
    let (a, b) = swapped_pair();
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (dir.path().join("a.img"), dir.path().join("b.img"));
    std::fs::write(&pa, &a).unwrap();
    std::fs::write(&pb, &b).unwrap();
    let pkg = dir.path().join("ip.romdelta");
    let out = romdelta()
        .args([
            "diff",
            "--in-place",
            "--max-stash",
            "0",
            "--level",
            "3",
            "--json",
        ])
        .arg(&pa)
        .arg(&pb)
        .arg("-o")
        .arg(&pkg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ip = &v["partitions"][0]["in_place"];
    assert_eq!(ip["converted_to_replace"], 1, "{v}");
    assert_eq!(ip["largest_stash_blocks"], 0, "{v}");
    assert_eq!(ip["identity_copy_blocks_dropped"], 48, "{v}");
    let out = romdelta()
        .args(["inspect", "--json"])
        .arg(&pkg)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["format_version"], 2);
    assert_eq!(v["install"], "in-place");
    // The two halves of the swap read each other: with no stash, one is
    // re-encoded and the other copies first, a stage of its own.
    assert_eq!(v["partitions"][0]["stages"], 2);
    let kinds: Vec<&str> = (0..2)
        .map(|k| v["partitions"][0]["by_kind"][k]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["SOURCE_COPY", "REPLACE"]);
    assert_eq!(v["partitions"][0]["largest_stash_blocks"], 0);
    let out = romdelta().arg("inspect").arg(&pkg).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("installs in place") && text.contains("in place: 2 stage(s)"),
        "{text}"
    );
    // A/B packages say so, and have no stages.
    let ab = dir.path().join("ab.romdelta");
    romdelta()
        .args(["diff", "--level", "3"])
        .arg(&pa)
        .arg(&pb)
        .arg("-o")
        .arg(&ab)
        .assert()
        .success();
    let out = romdelta()
        .args(["inspect", "--json"])
        .arg(&ab)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["install"], "ab");
    assert!(v["partitions"][0]["stages"].is_null());
    // --max-stash means nothing without --in-place; a full package may be in place.
    romdelta()
        .args(["diff", "--max-stash", "1"])
        .arg(&pa)
        .arg(&pb)
        .arg("-o")
        .arg(&ab)
        .assert()
        .code(2);
    let full = dir.path().join("full.romdelta");
    romdelta()
        .args(["diff", "--full", "--in-place", "--level", "3"])
        .arg(&pb)
        .arg("-o")
        .arg(&full)
        .assert()
        .success();
    let full_bytes = std::fs::read(&full).unwrap();
    let pkg = Package::parse(&full_bytes).unwrap();
    assert!(pkg.manifest.in_place && pkg.manifest.partitions[0].stages.len() == 1);
    let mut img = Vec::new();
    install_in_place(
        &pkg,
        &pkg.manifest.partitions[0],
        &mut img,
        &mut ChaCha8Rng::seed_from_u64(0),
    );
    assert!(img == b);
    // The real applier: each install mode refuses the other's incremental;
    // the in-place package updates a copy of the old image where it lies.
    let ip = dir.path().join("ip.romdelta");
    let dev = dir.path().join("device.img");
    std::fs::write(&dev, &a).unwrap();
    let out = romdelta()
        .args(["apply", "--insecure-no-verify", "--in-place"])
        .arg(&dev)
        .arg(&ab)
        .assert()
        .code(1);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.contains("A/B") && err.contains("--in-place"), "{err}");
    let out = romdelta()
        .args(["apply", "--insecure-no-verify", "--source"])
        .arg(&pa)
        .arg("-o")
        .arg(dir.path().join("new.img"))
        .arg(&ip)
        .assert()
        .code(1);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.contains("in place"), "{err}");
    assert!(!dir.path().join("new.img").exists());
    assert!(std::fs::read(&dev).unwrap() == a, "a refused apply wrote");
    romdelta()
        .args(["apply", "--insecure-no-verify", "--in-place"])
        .arg(&dev)
        .arg(&ip)
        .assert()
        .success();
    assert!(std::fs::read(&dev).unwrap() == b);
    // Run again once finished: nothing to do.
    romdelta()
        .args(["apply", "--insecure-no-verify", "--in-place"])
        .arg(&dev)
        .arg(&ip)
        .assert()
        .success();
    // A full package, in place or not, installs either way.
    let full_ab = dir.path().join("full-ab.romdelta");
    romdelta()
        .args(["diff", "--full", "--level", "3"])
        .arg(&pb)
        .arg("-o")
        .arg(&full_ab)
        .assert()
        .success();
    std::fs::write(&dev, &a).unwrap();
    romdelta()
        .args(["apply", "--insecure-no-verify", "--in-place"])
        .arg(&dev)
        .arg(&full_ab)
        .assert()
        .success();
    assert!(std::fs::read(&dev).unwrap() == b);
}

#[test]
fn a_package_whose_stages_are_reordered_is_refused() {
    let (a, b) = swapped_pair();
    let dir = tempfile::tempdir().unwrap();
    let opts = DiffOptions {
        copy_op_blocks: 8,
        max_stash_blocks: 0,
        ..fast_opts()
    };
    let bytes = in_place_package(dir.path(), &a, &b, &opts);
    let pkg = Package::parse(&bytes).unwrap();
    // Stage 0 copies blocks 40..48 (or 8..16) away, stage 1 overwrites
    // them with new data. Swap the stages, keeping data in operation order
    // and the header checksum right: only the order is wrong now.
    let mut m = pkg.manifest.clone();
    let p = &mut m.partitions[0];
    p.operations.swap(0, 1);
    let replace = &mut p.operations[0];
    assert_eq!(replace.kind, OpKind::Replace);
    replace.data_offset = 0;
    let tampered_prefix = Package::encode_prefix(&m, &[]);
    let mut tampered = tampered_prefix.clone();
    tampered.extend_from_slice(pkg.data);
    let err = Package::parse(&tampered).unwrap_err().to_string();
    let writer = m.partitions[0].operations[0].dst_extents[0].start_block;
    assert_eq!(
        err,
        format!("invalid in-place stages: partition b, stage 0 (operation 0) writes block {writer}, which operation 1 of stage 1 reads")
    );
    // The command line refuses it the same way, before anything is written.
    let path = dir.path().join("tampered.romdelta");
    std::fs::write(&path, &tampered).unwrap();
    let out = romdelta().arg("inspect").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("which operation 1 of stage 1 reads"),
        "{stderr}"
    );
    // Merged into one stage the same operations are fine again (the stash
    // covers the swap).
    m.partitions[0].stages = vec![2];
    let mut merged = Package::encode_prefix(&m, &[]);
    merged.extend_from_slice(pkg.data);
    let ok = Package::parse(&merged).unwrap();
    assert_eq!(largest_stash(&ok.manifest.partitions[0]), 8);
}
