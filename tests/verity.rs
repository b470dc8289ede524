//! dm-verity hash trees and FEC in payloads: computed on `payload extract`
//! and `payload apply` into images byte-identical to those avbtool and
//! AOSP's `fec` made (`../shared/fixtures/avb/`) and to what `veritysetup`
//! (cryptsetup) computes over random images; exported payloads carry the
//! fields of an image's AVB hashtree footer; bad fields are refused before
//! anything is written.

use crate::common::{noise, romdelta};
use prost::Message as _;
use romdelta_android::payload::{
    encode_payload, proto, FecSpec, HashTreeSpec, ImageInfo, NewOp, Payload, PayloadOpKind,
    PayloadWriter, Verity,
};
use romdelta_android::verity::HashAlgorithm;
use romdelta_android::{avb, fec, verity};
use romdelta_format::{Extent, BLOCK_SIZE};
use std::path::{Path, PathBuf};
use std::process::Command;

fn require_tools() -> bool {
    std::env::var_os("ROMDELTA_REQUIRE_TOOLS").is_some()
}

/// The avb fixtures unpacked into `into`, or `None` (a failure when
/// ROMDELTA_REQUIRE_TOOLS is set).
fn avb_fixtures(into: &Path) -> Option<PathBuf> {
    crate::common::unpack_fixture("avb", "avb.tar.xz", into)
}

fn have_veritysetup() -> bool {
    let ok = Command::new("veritysetup")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok || !require_tools(),
        "veritysetup is required (apt install cryptsetup-bin)"
    );
    if !ok {
        eprintln!("skipping: veritysetup not installed (apt install cryptsetup-bin)");
    }
    ok
}

/// The fixtures' names and root digests (from their README).
const FIXTURES: [(&str, &str, &str); 2] = [
    (
        "system_sha256",
        "system",
        "b31e0dfd4dae49c42849120f4c549ca23b4767708d44a5dbe9f38be91d18703f",
    ),
    (
        "vendor_sha1",
        "vendor",
        "ce199d72f09a4433018855f911bf8302dab506e1",
    ),
];

fn verity_of(img: &[u8]) -> Verity {
    let f = avb::read_footer(img.len() as u64, |off, buf| {
        buf.copy_from_slice(&img[off as usize..off as usize + buf.len()]);
        Ok(())
    })
    .unwrap()
    .expect("an AVB footer");
    Verity::from_avb(&f.hashtree.expect("a hashtree descriptor")).unwrap()
}

/// A full payload with one partition per `(name, image, written, verity)`:
/// REPLACE operations over the `written` extents only (the rest of the
/// image is left to the installer, or is zeros).
fn payload_of(parts: &[(&str, &[u8], Vec<Extent>, Verity)]) -> Vec<u8> {
    let mut w = PayloadWriter::new(0);
    let mut blobs = Vec::new();
    for (name, img, written, v) in parts {
        let info = ImageInfo {
            size: img.len() as u64,
            sha256: Some(romdelta_format::sha256(img)),
        };
        w.push_partition(name, None, info);
        for e in written {
            let data = &img[e.byte_offset() as usize..(e.byte_offset() + e.byte_len()) as usize];
            w.push_op(NewOp {
                kind: PayloadOpKind::Replace,
                src_extents: Vec::new(),
                dst_extents: vec![*e],
                src_sha256: None,
                data_length: data.len() as u64,
                data_sha256: Some(romdelta_format::sha256(data)),
            });
            blobs.extend_from_slice(data);
        }
        w.set_verity(v);
    }
    let mut out = w.finish();
    out.extend(blobs);
    out
}

/// The blocks of `img` outside the areas `v` computes.
fn outside(img_blocks: u64, v: &Verity) -> Vec<Extent> {
    let mut skip = v.computed();
    skip.sort_unstable();
    let mut out = Vec::new();
    let mut at = 0;
    for e in skip.iter().chain([&Extent::new(img_blocks, 0)]) {
        if e.start_block > at {
            out.push(Extent::new(at, e.start_block - at));
        }
        at = e.end_block();
    }
    out
}

#[test]
fn fixture_trees_and_fec_match_avbtool_and_aosp_fec() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fx) = avb_fixtures(dir.path()) else {
        return;
    };
    for (name, _, root) in FIXTURES {
        let data = std::fs::read(fx.join(format!("{name}.data.img"))).unwrap();
        let img = std::fs::read(fx.join(format!("{name}_fec.img"))).unwrap();
        let v = verity_of(&img);
        let t = v.hash_tree.as_ref().unwrap();
        let tree = verity::hash_tree(t.algorithm, &t.salt, 4096, &data);
        assert_eq!(hex::encode(&tree.root), root, "{name}: root digest");
        assert!(
            tree.tree == std::fs::read(fx.join(format!("{name}.hashtree"))).unwrap(),
            "{name}: tree"
        );
        let f = v.fec.as_ref().unwrap();
        let covered = [data.clone(), tree.tree.clone()].concat();
        assert_eq!(covered.len() as u64, f.data.byte_len());
        let parity = fec::encode(f.roots, 4096, &covered).unwrap();
        assert!(
            parity == std::fs::read(fx.join(format!("{name}.fec.roots2"))).unwrap(),
            "{name}: FEC"
        );
    }
}

#[test]
fn extract_computes_tree_and_fec_into_the_fixture_images() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fx) = avb_fixtures(&dir.path().join("fx")) else {
        return;
    };
    let imgs: Vec<(&str, Vec<u8>)> = FIXTURES
        .iter()
        .flat_map(|(name, part, _)| {
            [(
                *part,
                std::fs::read(fx.join(format!("{name}_fec.img"))).unwrap(),
            )]
        })
        .collect();
    let parts: Vec<(&str, &[u8], Vec<Extent>, Verity)> = imgs
        .iter()
        .map(|(part, img)| {
            let v = verity_of(img);
            let written = outside(img.len() as u64 / BLOCK_SIZE, &v);
            (*part, &img[..], written, v)
        })
        .collect();
    let bytes = payload_of(&parts);
    let p = dir.path().join("payload.bin");
    std::fs::write(&p, &bytes).unwrap();
    // No operation writes a tree or FEC block: the reader must compute them.
    let parsed = Payload::parse(&bytes).unwrap();
    for part in &parsed.partitions {
        for op in &part.operations {
            for e in &op.dst_extents {
                for c in part.verity.computed() {
                    assert!(e.end_block() <= c.start_block || c.end_block() <= e.start_block);
                }
            }
        }
    }
    let out = dir.path().join("out");
    let o = romdelta()
        .args(["payload", "extract"])
        .arg(&p)
        .arg("-o")
        .arg(&out)
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for (part, img) in &imgs {
        let got = std::fs::read(out.join(format!("{part}.img"))).unwrap();
        assert!(
            &got == img,
            "{part}: the extracted image differs from avbtool's"
        );
        let r = report["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == *part)
            .unwrap();
        assert!(
            r["hash_tree"]["bytes"].as_u64().unwrap() > 0 && r["fec"]["detail"] == "2 roots",
            "{r}"
        );
    }
    // inspect lists both.
    romdelta()
        .args(["payload", "inspect"])
        .arg(&p)
        .assert()
        .success()
        .stdout(predicates::str::contains(
            "hash tree: sha1 over blocks 0..1024, into blocks 1024..1033",
        ))
        .stdout(predicates::str::contains(
            "FEC: 2 roots over blocks 0..1549, into blocks 1549..1563",
        ));
}

#[test]
fn exported_payloads_carry_the_avb_footers_verity() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fx) = avb_fixtures(&dir.path().join("fx")) else {
        return;
    };
    let (old, new) = (dir.path().join("old"), dir.path().join("new"));
    std::fs::create_dir_all(&old).unwrap();
    std::fs::create_dir_all(&new).unwrap();
    for (name, part, _) in FIXTURES {
        std::fs::copy(
            fx.join(format!("{name}.img")),
            old.join(format!("{part}.img")),
        )
        .unwrap();
        std::fs::copy(
            fx.join(format!("{name}_fec.img")),
            new.join(format!("{part}.img")),
        )
        .unwrap();
    }
    let inc = dir.path().join("inc.bin");
    romdelta()
        .args(["diff", "--format", "payload"])
        .arg(&old)
        .arg(&new)
        .arg("-o")
        .arg(&inc)
        .assert()
        .success();
    let full = dir.path().join("full.bin");
    romdelta()
        .args(["diff", "--format", "payload", "--full"])
        .arg(&new)
        .arg("-o")
        .arg(&full)
        .assert()
        .success();
    for (payload, incremental) in [(&inc, true), (&full, false)] {
        let bytes = std::fs::read(payload).unwrap();
        let parsed = Payload::parse(&bytes).unwrap();
        for part in &parsed.partitions {
            let img = std::fs::read(new.join(format!("{}.img", part.name))).unwrap();
            assert_eq!(part.verity, verity_of(&img), "{}", part.name);
            // An incremental leaves tree and FEC to the installer; a full
            // payload writes every block.
            let writes_computed = part.operations.iter().any(|op| {
                op.kind != PayloadOpKind::Zero
                    && op.dst_extents.iter().any(|e| {
                        part.verity
                            .computed()
                            .iter()
                            .any(|c| e.start_block < c.end_block() && c.start_block < e.end_block())
                    })
            });
            assert_eq!(writes_computed, !incremental, "{}", part.name);
        }
        let out = dir
            .path()
            .join(if incremental { "out-inc" } else { "out-full" });
        let mut cmd = romdelta();
        if incremental {
            cmd.args(["payload", "apply"])
                .arg(payload)
                .arg("--source")
                .arg(&old);
        } else {
            cmd.args(["payload", "extract"]).arg(payload);
        }
        cmd.arg("-o").arg(&out).assert().success();
        for (_, part, _) in FIXTURES {
            let want = std::fs::read(new.join(format!("{part}.img"))).unwrap();
            assert!(
                std::fs::read(out.join(format!("{part}.img"))).unwrap() == want,
                "{part}"
            );
        }
    }
}

/// Random images with tree and FEC laid out after the data, as AVB does;
/// `veritysetup format` over the same data must give the same bytes.
#[test]
fn veritysetup_computes_the_same_tree_and_fec() {
    if !have_veritysetup() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (HashAlgorithm::Sha256, 2u32, 1000u64, "0011223344556677"),
        (HashAlgorithm::Sha1, 5, 777, "d00dfeed"),
        (HashAlgorithm::Sha512, 24, 301, "00"),
    ];
    for (k, (alg, roots, blocks, salt_hex)) in cases.into_iter().enumerate() {
        let salt = hex::decode(salt_hex).unwrap();
        let mut data = noise(k as u64 + 40, (blocks * BLOCK_SIZE) as usize);
        // Some zero and repeated blocks.
        data[4096 * 10..4096 * 30].fill(0);
        data.copy_within(0..4096 * 5, 4096 * 50);
        let tree_len = verity::TreeShape::new(data.len() as u64, BLOCK_SIZE, alg).len();
        let fec_layout = fec::FecLayout::new(roots, 4096, data.len() as u64 + tree_len).unwrap();
        let (tree_at, fec_at) = (blocks, blocks + tree_len / BLOCK_SIZE);
        let total = fec_at + fec_layout.len() / BLOCK_SIZE + 1; // one block after, like vbmeta
                                                                // veritysetup writes tree and FEC into a copy of the data.
        let w = dir.path().join(format!("w{k}"));
        let mut img = data.clone();
        img.resize((total * BLOCK_SIZE) as usize, 0);
        let tail = (total - 1) * BLOCK_SIZE;
        img[tail as usize..].fill(0x5a);
        std::fs::write(&w, &img).unwrap();
        let o = Command::new("veritysetup")
            .args([
                "format",
                "--no-superblock",
                "--format=1",
                "--data-block-size=4096",
                "--hash-block-size=4096",
            ])
            .arg(format!("--hash={}", alg.name()))
            .arg(format!("--data-blocks={blocks}"))
            .arg(format!("--hash-offset={}", tree_at * BLOCK_SIZE))
            .arg(format!("--salt={salt_hex}"))
            .arg("--fec-device")
            .arg(&w)
            .arg(format!("--fec-offset={}", fec_at * BLOCK_SIZE))
            .arg(format!("--fec-roots={roots}"))
            .arg(&w)
            .arg(&w)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "veritysetup: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let want = std::fs::read(&w).unwrap();
        let v = Verity {
            hash_tree: Some(HashTreeSpec {
                data: Extent::new(0, blocks),
                tree: Extent::new(tree_at, tree_len / BLOCK_SIZE),
                algorithm: alg,
                salt,
            }),
            fec: Some(FecSpec {
                data: Extent::new(0, fec_at),
                fec: Extent::new(fec_at, fec_layout.len() / BLOCK_SIZE),
                roots,
            }),
        };
        let written = outside(total, &v);
        let p = dir.path().join(format!("p{k}.bin"));
        std::fs::write(&p, payload_of(&[("system", &want, written, v)])).unwrap();
        let out = dir.path().join(format!("out{k}"));
        let o = romdelta()
            .args(["payload", "extract"])
            .arg(&p)
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{:?}: {}",
            alg,
            String::from_utf8_lossy(&o.stderr)
        );
        let got = std::fs::read(out.join("system.img")).unwrap();
        assert!(
            got == want,
            "{alg:?}, {roots} roots: romdelta's tree and FEC differ from veritysetup's"
        );
    }
}

#[test]
fn bad_verity_fields_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let img = noise(9, 64 * 4096);
    let v = Verity {
        hash_tree: Some(HashTreeSpec {
            data: Extent::new(0, 40),
            tree: Extent::new(40, 1),
            algorithm: HashAlgorithm::Sha256,
            salt: b"salt".to_vec(),
        }),
        fec: Some(FecSpec {
            data: Extent::new(0, 41),
            fec: Extent::new(41, 2),
            roots: 2,
        }),
    };
    let good = payload_of(&[(
        "system",
        &img,
        vec![Extent::new(0, 40), Extent::new(43, 21)],
        v,
    )]);
    Payload::parse(&good).unwrap();
    let h = romdelta_android::payload::PayloadHeader::decode(&good).unwrap();
    let m_end = 24 + h.manifest_len as usize;
    let manifest = proto::DeltaArchiveManifest::decode(&good[24..m_end]).unwrap();
    fn ext(s: u64, n: u64) -> Option<proto::Extent> {
        Some(proto::Extent {
            start_block: Some(s),
            num_blocks: Some(n),
        })
    }
    type Edit = fn(&mut proto::PartitionUpdate);
    let cases: [(&str, Edit, &str); 8] = [
        (
            "tree size",
            |p| p.hash_tree_extent = ext(40, 2),
            "a sha256 tree of 0..40 has 4096",
        ),
        (
            "algorithm",
            |p| p.hash_tree_algorithm = Some("md5".into()),
            "\"md5\" is not one of",
        ),
        (
            "tree before data",
            |p| p.hash_tree_extent = ext(10, 1),
            "does not follow its data",
        ),
        (
            "tree alone",
            |p| p.hash_tree_data_extent = None,
            "come together",
        ),
        ("roots", |p| p.fec_roots = Some(1), "1 roots"),
        (
            "fec size",
            |p| p.fec_extent = ext(41, 3),
            "2 roots over 0..41 take 8192",
        ),
        (
            "fec over tree",
            |p| p.fec_extent = ext(40, 2),
            "does not follow the data it covers",
        ),
        (
            "past the end",
            |p| p.fec_extent = ext(63, 2),
            "ends past the partition",
        ),
    ];
    for (what, edit, message) in cases {
        let mut m = manifest.clone();
        edit(&mut m.partitions[0]);
        let bad = encode_payload(&m, &[], &good[m_end..]);
        let p = dir.path().join("bad.bin");
        std::fs::write(&p, &bad).unwrap();
        let out = dir.path().join(format!("out-{}", what.replace(' ', "-")));
        let o = romdelta()
            .args(["payload", "extract"])
            .arg(&p)
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{what}: {err}");
        assert!(err.contains(message), "{what}: {err}");
        assert!(
            !out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(),
            "{what}: output written"
        );
    }
}

/// romdelta's AVB layout (`avb::hashtree_image`, which makes the test
/// images of the bench) is avbtool's, byte for byte.
#[test]
fn hashtree_images_are_avbtools() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fx) = avb_fixtures(dir.path()) else {
        return;
    };
    for (name, part, _) in FIXTURES {
        let data = std::fs::read(fx.join(format!("{name}.data.img"))).unwrap();
        for suffix in ["", "_fec"] {
            let want = std::fs::read(fx.join(format!("{name}{suffix}.img"))).unwrap();
            let v = verity_of(&want);
            let t = v.hash_tree.unwrap();
            let got = avb::hashtree_image(
                &data,
                &avb::HashtreeOptions {
                    partition: part.to_string(),
                    partition_size: want.len() as u64,
                    algorithm: t.algorithm,
                    salt: t.salt,
                    fec_roots: v.fec.map_or(0, |f| f.roots),
                },
            )
            .unwrap();
            assert!(got == want, "{name}{suffix}.img");
        }
    }
}

/// `romdelta avb add-hashtree-footer` writes avbtool's bytes, and `avb
/// info` reads them back.
#[test]
fn avb_cli_adds_and_reads_footers() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fx) = avb_fixtures(dir.path()) else {
        return;
    };
    let out = dir.path().join("made.img");
    romdelta()
        .args(["avb", "add-hashtree-footer"])
        .arg(fx.join("vendor_sha1.data.img"))
        .arg("-o")
        .arg(&out)
        .args([
            "--partition-size",
            "4390912",
            "--partition-name",
            "vendor",
            "--hash-algorithm",
            "sha1",
        ])
        .args(["--salt", "d00dfeedc0ffee0123456789abcdef0011223344"])
        .assert()
        .success();
    assert!(std::fs::read(&out).unwrap() == std::fs::read(fx.join("vendor_sha1_fec.img")).unwrap());
    romdelta()
        .args(["avb", "info"])
        .arg(&out)
        .assert()
        .success()
        .stdout(predicates::str::contains(
            "root digest ce199d72f09a4433018855f911bf8302dab506e1",
        ))
        .stdout(predicates::str::contains(
            "FEC 2 roots, 40960 bytes at 4231168",
        ));
    // Too small a partition, an unknown hash: refused, nothing written.
    let o = romdelta()
        .args(["avb", "add-hashtree-footer"])
        .arg(fx.join("vendor_sha1.data.img"))
        .arg("-o")
        .arg(dir.path().join("small.img"))
        .args(["--partition-size", "4194304", "--partition-name", "vendor"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(!dir.path().join("small.img").exists());
}
