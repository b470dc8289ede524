//! Android payload.bin: Google's own sample payloads (made by
//! update_engine's `delta_generator`) extracted and applied to the exact
//! new images; romdelta's exported payloads read back by romdelta and by
//! two independent readers (`payload-dumper` from PyPI's
//! `android-payload-dumper` for full payloads, `payload_dumper` from PyPI's
//! `payload-dumper` for incremental ones); OTA zips, partition selection,
//! and payloads that must be refused without writing anything.

use crate::common::romdelta;
use predicates::prelude::*;
use romdelta_android::payload::{encode_payload, Payload};
use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) fn require_tools() -> bool {
    std::env::var_os("ROMDELTA_REQUIRE_TOOLS").is_some()
}

/// `../shared/fixtures/update_engine/` beside the checkout, or `None`
/// (a failure when ROMDELTA_REQUIRE_TOOLS is set).
pub(crate) fn fixtures() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/update_engine");
    let ok =
        dir.join("sample_images.tar.bz2").is_file() && dir.join("sample_payloads.tar.xz").is_file();
    if !ok && require_tools() {
        panic!(
            "the update_engine fixtures are required: {} (sample_images.tar.bz2, sample_payloads.tar.xz)",
            dir.display()
        );
    }
    if !ok {
        eprintln!("skipping: no update_engine fixtures at {}", dir.display());
    }
    ok.then_some(dir)
}

/// Unpacks the fixture archives into `into`.
pub(crate) fn unpack_fixtures(dir: &Path, into: &Path) {
    let f = std::fs::File::open(dir.join("sample_images.tar.bz2")).unwrap();
    tar::Archive::new(bzip2::read::BzDecoder::new(f))
        .unpack(into)
        .unwrap();
    let f = std::fs::File::open(dir.join("sample_payloads.tar.xz")).unwrap();
    tar::Archive::new(liblzma::read::XzDecoder::new(f))
        .unpack(into)
        .unwrap();
}

/// Whether the command `name` runs (a failure when ROMDELTA_REQUIRE_TOOLS is set).
pub(crate) fn have_tool(name: &str, package: &str) -> bool {
    let ok = Command::new(name)
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok && require_tools() {
        panic!("{name} is required (pip install {package})");
    }
    if !ok {
        eprintln!("skipping: {name} not installed (pip install {package})");
    }
    ok
}

pub(crate) fn same(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(
        x == y,
        "{} ({} bytes) differs from {} ({} bytes)",
        a.display(),
        x.len(),
        b.display(),
        y.len()
    );
}

/// A zip holding `payload` as `payload.bin`, stored (as OTA zips store it)
/// or deflated, with its `payload_properties.txt` before it.
pub(crate) fn ota_zip(payload: &Path, out: &Path, deflate: bool) {
    let bytes = std::fs::read(payload).unwrap();
    let h = romdelta_android::payload::PayloadHeader::decode(&bytes).unwrap();
    let meta = romdelta_android::payload::HEADER_LEN as u64 + h.manifest_len;
    let props = romdelta_android::payload::properties::render(&bytes, meta);
    ota_zip_with(payload, out, deflate, &props);
}

/// [`ota_zip`] with the given properties file.
fn ota_zip_with(payload: &Path, out: &Path, deflate: bool, properties: &str) {
    use std::io::Write;
    let mut z = zip::ZipWriter::new(std::fs::File::create(out).unwrap());
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("payload_properties.txt", stored).unwrap();
    z.write_all(properties.as_bytes()).unwrap();
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    z.start_file(
        "payload.bin",
        zip::write::SimpleFileOptions::default().compression_method(method),
    )
    .unwrap();
    z.write_all(&std::fs::read(payload).unwrap()).unwrap();
    z.finish().unwrap();
}

#[test]
fn google_payloads_extract_and_apply_to_the_exact_new_images() {
    let Some(fx) = fixtures() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    unpack_fixtures(&fx, dir.path());
    // What the payloads hold, as the fixtures' README describes it.
    romdelta()
        .args(["payload", "inspect", "--json"])
        .arg(d("delta_payload.bin"))
        .assert()
        .success()
        .stdout(
            predicate::str::contains("\"BROTLI_BSDIFF\"")
                .and(predicate::str::contains("\"SOURCE_COPY\""))
                .and(predicate::str::contains("\"REPLACE_XZ\""))
                .and(predicate::str::contains("\"incremental\"")),
        );
    // Full: extract.
    romdelta()
        .args(["payload", "extract"])
        .arg(d("full_payload.bin"))
        .arg("-o")
        .arg(d("full-out"))
        .assert()
        .success();
    same(&d("full-out/kernel.img"), &d("disk_ext2_4k.img"));
    same(&d("full-out/root.img"), &d("disk_sqfs_default.img"));
    // Incremental: apply to the old images.
    std::fs::create_dir(d("old")).unwrap();
    std::fs::copy(d("disk_ext2_4k_empty.img"), d("old/kernel.img")).unwrap();
    std::fs::copy(d("disk_sqfs_empty.img"), d("old/root.img")).unwrap();
    romdelta()
        .args(["payload", "apply", "--json"])
        .arg(d("delta_payload.bin"))
        .arg("--source")
        .arg(d("old"))
        .arg("-o")
        .arg(d("delta-out"))
        .assert()
        .success()
        .stdout(predicate::str::contains("\"source_images\": 2"));
    same(&d("delta-out/kernel.img"), &d("disk_ext2_4k.img"));
    same(&d("delta-out/root.img"), &d("disk_sqfs_default.img"));
    // An incremental payload cannot be extracted without its old images.
    romdelta()
        .args(["payload", "extract"])
        .arg(d("delta_payload.bin"))
        .arg("-o")
        .arg(d("no-source"))
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("partition kernel").and(predicate::str::contains("--source")),
        );
    assert!(!d("no-source/kernel.img").exists());
    // Straight out of an OTA zip, one partition.
    ota_zip(&d("delta_payload.bin"), &d("ota.zip"), false);
    romdelta()
        .args(["payload", "apply", "-p", "kernel"])
        .arg(d("ota.zip"))
        .arg("--source")
        .arg(d("old"))
        .arg("-o")
        .arg(d("zip-out"))
        .assert()
        .success()
        .stdout(predicate::str::contains("ota.zip:payload.bin"));
    same(&d("zip-out/kernel.img"), &d("disk_ext2_4k.img"));
    assert!(!d("zip-out/root.img").exists());
    // The wrong old image is refused by its hash, and nothing is written.
    std::fs::copy(d("disk_ext2_unittest.img"), d("old/kernel.img")).unwrap();
    romdelta()
        .args(["payload", "apply"])
        .arg(d("delta_payload.bin"))
        .arg("--source")
        .arg(d("old"))
        .arg("-o")
        .arg(d("wrong-out"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("partition kernel: source image"));
    assert_eq!(
        crate::common::listing(&d("wrong-out")),
        Vec::<String>::new()
    );
}

/// A pair of small ROMs (the synthetic demo builds, images cut to whole
/// blocks and at most 4 MiB) under `dir`: (old, new). With `same_names`,
/// both hold the same partitions.
pub(crate) fn block_roms(dir: &Path, same_names: bool) -> (PathBuf, PathBuf) {
    let (old, new) = romdelta_synth::rom_pair(5, 1);
    let names = |r: &[(String, Vec<u8>)]| r.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    let (on, nn) = (names(&old), names(&new));
    let mut dirs = Vec::new();
    for (rom, tag) in [(old, "old"), (new, "new")] {
        let d = dir.join(tag);
        std::fs::create_dir_all(&d).unwrap();
        for (name, bytes) in rom {
            if same_names && !(on.contains(&name) && nn.contains(&name)) {
                continue;
            }
            let n = (bytes.len().min(4 << 20) / 4096) * 4096;
            std::fs::write(d.join(format!("{name}.img")), &bytes[..n]).unwrap();
        }
        dirs.push(d);
    }
    (dirs.remove(0), dirs.remove(0))
}

pub(crate) fn images(dir: &Path) -> Vec<String> {
    crate::common::listing(dir)
        .into_iter()
        .filter(|n| n.ends_with(".img"))
        .collect()
}

#[test]
fn exported_full_and_incremental_payloads_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let (old, new) = block_roms(dir.path(), false);
    romdelta()
        .args(["diff", "--format", "payload", "--full", "--json"])
        .arg(&new)
        .arg("-o")
        .arg(d("full.bin"))
        .assert()
        .success()
        .stdout(predicate::str::contains("\"minor_version\": 0"));
    romdelta()
        .args(["diff", "--format", "payload"])
        .arg(&old)
        .arg(&new)
        .arg("-o")
        .arg(d("delta.bin"))
        .assert()
        .success()
        .stdout(predicate::str::contains("incremental"));
    // Full payloads use only the kinds every reader knows, in block order.
    let bytes = std::fs::read(d("full.bin")).unwrap();
    let p = Payload::parse(&bytes).unwrap();
    use romdelta_android::payload::PayloadOpKind as K;
    for part in &p.partitions {
        let mut next = 0;
        for op in &part.operations {
            assert!(
                matches!(op.kind, K::Replace | K::ReplaceBz | K::ReplaceXz | K::Zero),
                "{:?}",
                op.kind
            );
            assert_eq!(op.dst_extents.len(), 1);
            assert_eq!(op.dst_extents[0].start_block, next);
            next = op.dst_extents[0].end_block();
        }
        assert_eq!(next, part.new.blocks());
    }
    let delta = std::fs::read(d("delta.bin")).unwrap();
    let q = Payload::parse(&delta).unwrap();
    let kinds: Vec<K> = q
        .partitions
        .iter()
        .flat_map(|p| p.operations.iter().map(|o| o.kind))
        .collect();
    for k in [K::SourceCopy, K::SourceBsdiff, K::Zero] {
        assert!(kinds.contains(&k), "{k:?} in {kinds:?}");
    }
    assert!(
        delta.len() * 3 < bytes.len(),
        "incremental smaller than full"
    );
    // Our reader reproduces the target.
    romdelta()
        .args(["payload", "extract"])
        .arg(d("full.bin"))
        .arg("-o")
        .arg(d("x-full"))
        .assert()
        .success();
    romdelta()
        .args(["payload", "apply", "--threads", "1"])
        .arg(d("delta.bin"))
        .arg("--source")
        .arg(&old)
        .arg("-o")
        .arg(d("x-delta"))
        .assert()
        .success();
    let want = images(&new);
    assert_eq!(images(&d("x-full")), want);
    assert_eq!(images(&d("x-delta")), want);
    for n in &want {
        same(&d("x-full").join(n), &new.join(n));
        same(&d("x-delta").join(n), &new.join(n));
    }
    // An image never gets overwritten.
    romdelta()
        .args(["payload", "extract"])
        .arg(d("full.bin"))
        .arg("-o")
        .arg(d("x-full"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("never overwritten"));
}

#[test]
fn payload_dumper_extracts_our_full_payload_byte_identically() {
    if !have_tool("payload-dumper", "android-payload-dumper") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let (_, new) = block_roms(dir.path(), false);
    // Unsigned, and signed with an RSA and an EC key.
    for (name, keys) in [("full", &[][..]), ("signed", &TEST_KEYS[..])] {
        let payload = d(&format!("{name}.bin"));
        let mut cmd = romdelta();
        cmd.args(["diff", "--format", "payload", "--full"])
            .arg(&new);
        for k in keys {
            cmd.arg("--key").arg(test_key(k));
        }
        cmd.arg("-o").arg(&payload).assert().success();
        let theirs = d(&format!("theirs-{name}"));
        let out = Command::new("payload-dumper")
            .arg(&payload)
            .arg("-o")
            .arg(&theirs)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "payload-dumper failed on the {name} payload: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want = images(&new);
        assert_eq!(images(&theirs), want);
        for n in &want {
            same(&theirs.join(n), &new.join(n));
        }
    }
}

/// The private test keys of `crates/android/testdata` (made for tests only).
pub(crate) const TEST_KEYS: [&str; 2] = ["rsa2048.key.pem", "p256.key.pem"];

/// The path of a test key.
pub(crate) fn test_key(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates/android/testdata")
        .join(name)
}

#[test]
fn payload_dumper_applies_our_incremental_payload_byte_identically() {
    if !have_tool("payload_dumper", "payload-dumper") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    // That reader opens OLD/NAME.img for every partition: same names.
    let (old, new) = block_roms(dir.path(), true);
    // Signed: the reader skips the metadata signature and the payload
    // signature after the blobs.
    romdelta()
        .args(["diff", "--format", "payload"])
        .arg(&old)
        .arg(&new)
        .arg("--key")
        .arg(test_key(TEST_KEYS[0]))
        .arg("-o")
        .arg(d("delta.bin"))
        .assert()
        .success();
    std::fs::create_dir(d("theirs")).unwrap();
    let out = Command::new("payload_dumper")
        .args(["--workers", "1", "--diff", "--old"])
        .arg(&old)
        .arg("--out")
        .arg(d("theirs"))
        .arg(d("delta.bin"))
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "payload_dumper failed: {log}");
    let want = images(&new);
    assert!(want.len() >= 2);
    for n in &want {
        let theirs = d("theirs").join(n);
        assert!(theirs.exists(), "{n} not written: {log}");
        same(&theirs, &new.join(n));
    }
}

#[test]
fn ota_zips_and_partition_selection() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let (_, new) = block_roms(dir.path(), false);
    romdelta()
        .args(["diff", "--format", "payload", "--full"])
        .arg(&new)
        .arg("-o")
        .arg(d("full.bin"))
        .assert()
        .success();
    ota_zip(&d("full.bin"), &d("ota.zip"), false);
    romdelta()
        .args(["payload", "inspect", "-p", "system,vendor", "--json"])
        .arg(d("ota.zip"))
        .assert()
        .success()
        .stdout(
            predicate::str::contains("\"name\": \"system\"")
                .and(predicate::str::contains("\"name\": \"product\"").not())
                .and(predicate::str::contains("\"properties_checked\": true")),
        );
    // The zip's payload_properties.txt must match the payload.
    let props = romdelta_android::payload::properties::render(b"another payload", 10);
    ota_zip_with(&d("full.bin"), &d("other.zip"), false, &props);
    romdelta()
        .args(["payload", "extract"])
        .arg(d("other.zip"))
        .arg("-o")
        .arg(d("other"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "payload_properties.txt records FILE_SIZE",
        ));
    assert!(!d("other").exists());
    romdelta()
        .args(["payload", "extract", "-p", "vendor", "--json"])
        .arg(d("ota.zip"))
        .arg("-o")
        .arg(d("one"))
        .assert()
        .success()
        .stdout(predicate::str::contains("\"bytes_written\""));
    assert_eq!(images(&d("one")), ["vendor.img"]);
    same(&d("one/vendor.img"), &new.join("vendor.img"));
    // An unknown name lists the payload's partitions.
    romdelta()
        .args(["payload", "extract", "-p", "vendor,nope"])
        .arg(d("ota.zip"))
        .arg("-o")
        .arg(d("two"))
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("no partition \"nope\"")
                .and(predicate::str::contains("system")),
        );
    // A deflated payload.bin is refused with what to do.
    ota_zip(&d("full.bin"), &d("deflated.zip"), true);
    romdelta()
        .args(["payload", "inspect"])
        .arg(d("deflated.zip"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("compressed in the zip"));
    // So is a file that is neither.
    std::fs::write(d("junk.bin"), b"not a payload at all").unwrap();
    romdelta()
        .args(["payload", "inspect"])
        .arg(d("junk.bin"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("neither a payload.bin"));
}

#[test]
fn unsupported_and_damaged_payloads_are_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let (old, new) = block_roms(dir.path(), true);
    romdelta()
        .args(["diff", "--format", "payload"])
        .arg(&old)
        .arg(&new)
        .arg("-o")
        .arg(d("delta.bin"))
        .assert()
        .success();
    let bytes = std::fs::read(d("delta.bin")).unwrap();
    let p = Payload::parse(&bytes).unwrap();
    // The first SOURCE_BSDIFF operation, made a kind this reader does not apply.
    let (pi, oi) = p
        .partitions
        .iter()
        .enumerate()
        .find_map(|(pi, part)| {
            part.operations
                .iter()
                .position(|o| o.kind == romdelta_android::payload::PayloadOpKind::SourceBsdiff)
                .map(|oi| (pi, oi))
        })
        .expect("a SOURCE_BSDIFF operation");
    let name = p.partitions[pi].name.clone();
    // Data of another kind under a kind this reader applies is refused
    // when decoded; a kind it does not apply, before anything is written.
    // Either way nothing is left behind.
    for (code, kind, message) in [
        (
            9,
            "PUFFDIFF",
            " (PUFFDIFF): invalid puffin: not a puffin patch",
        ),
        (11, "ZUCCHINI", " (ZUCCHINI): invalid ZUCCHINI data"),
        (3, "BSDIFF", ": BSDIFF is not supported"),
    ] {
        let mut m = p.manifest.clone();
        m.partitions[pi].operations[oi].r#type = Some(code);
        std::fs::write(
            d("odd.bin"),
            encode_payload(&m, p.metadata_signature, p.blobs),
        )
        .unwrap();
        romdelta()
            .args(["payload", "apply"])
            .arg(d("odd.bin"))
            .arg("--source")
            .arg(&old)
            .arg("-o")
            .arg(d("odd-out"))
            .assert()
            .code(1)
            .stderr(predicate::str::contains(format!(
                "partition {name}, operation {oi}{message}"
            )));
        assert!(!d("odd-out").exists() || images(&d("odd-out")).is_empty());
        if code != 3 {
            continue;
        }
        // Inspect still lists it, and says why it cannot be applied.
        romdelta()
            .args(["payload", "inspect"])
            .arg(d("odd.bin"))
            .assert()
            .success()
            .stdout(
                predicate::str::contains(kind)
                    .and(predicate::str::contains("cannot be applied here")),
            );
    }
    // Damaged operation data: its hash names it, and nothing is written.
    let op = &p.partitions[pi].operations[oi];
    let mut damaged = bytes.clone();
    let at = bytes.len() - p.blobs.len() + op.data_offset as usize + 40;
    damaged[at] ^= 0x55;
    std::fs::write(d("damaged.bin"), &damaged).unwrap();
    romdelta()
        .args(["payload", "apply"])
        .arg(d("damaged.bin"))
        .arg("--source")
        .arg(&old)
        .arg("-o")
        .arg(d("damaged-out"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "partition {name}, operation {oi} (SOURCE_BSDIFF): data hash mismatch"
        )));
    assert!(images(&d("damaged-out")).is_empty());
    romdelta()
        .args(["payload", "inspect"])
        .arg(d("damaged.bin"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("data hash mismatch"));
    // A changed source block: the operation's source hash names it.
    let src = old.join(format!("{name}.img"));
    let mut img = std::fs::read(&src).unwrap();
    let block = op.src_extents[0].start_block as usize;
    img[block * 4096 + 7] ^= 1;
    let changed = d("changed");
    std::fs::create_dir(&changed).unwrap();
    for e in std::fs::read_dir(&old).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), changed.join(e.file_name())).unwrap();
    }
    std::fs::write(changed.join(format!("{name}.img")), &img).unwrap();
    romdelta()
        .args(["payload", "apply"])
        .arg(d("delta.bin"))
        .arg("--source")
        .arg(&changed)
        .arg("-o")
        .arg(d("changed-out"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "partition {name}: source image"
        )));
    assert!(images(&d("changed-out")).is_empty());
    // Without the old image's hash, the operations' source hashes catch it.
    let mut m = p.manifest.clone();
    m.partitions[pi].old_partition_info.as_mut().unwrap().hash = None;
    std::fs::write(
        d("nohash.bin"),
        encode_payload(&m, p.metadata_signature, p.blobs),
    )
    .unwrap();
    romdelta()
        .args(["payload", "apply"])
        .arg(d("nohash.bin"))
        .arg("--source")
        .arg(&changed)
        .arg("-o")
        .arg(d("changed-out"))
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains(format!("partition {name}, operation")).and(
                predicate::str::contains("source (the old image is not the one"),
            ),
        );
    assert!(images(&d("changed-out")).is_empty());
    // A cut payload is refused.
    std::fs::write(d("cut.bin"), &bytes[..bytes.len() - 1]).unwrap();
    romdelta()
        .args(["payload", "extract"])
        .arg(d("cut.bin"))
        .arg("-o")
        .arg(d("cut-out"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("invalid payload"));
}

/// PUFFDIFF, LZ4DIFF_BSDIFF and ZUCCHINI operations in one incremental
/// payload, applied to the exact new image: puffin's own 1-to-2 patch over
/// its sample stream, an LZ4DIFF patch of lz4hc clusters made with Debian's
/// liblz4 and bsdiff (`crates/android/testdata/`), and a patch made by
/// Chromium's Zucchini.
#[test]
fn puffdiff_lz4diff_and_zucchini_operations_apply() {
    use romdelta_android::payload::{ImageInfo, NewOp, PayloadOpKind as K, PayloadWriter};
    use romdelta_format::Extent;
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/android/testdata");
    let hex = crate::common::puffin_vector;
    let lz = |ext: &str| {
        std::fs::read(testdata.join(format!("lz4diff/v2_bsdiff_zeropad_postfix.{ext}"))).unwrap()
    };
    let block = |mut v: Vec<u8>, blocks: usize| {
        v.resize(blocks * 4096, 0);
        v
    };
    let zold: Vec<u8> = (0..8 * 4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let mut znew = zold.clone();
    znew[5000..5400].fill(3);
    let zpatch = {
        let mut out = Vec::new();
        {
            use std::io::Write as _;
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 9, 22);
            w.write_all(&zucchini::generate(&zold, &znew).unwrap())
                .unwrap();
        }
        out
    };
    // (kind, old bytes, new bytes, data)
    let pieces = [
        (
            K::Puffdiff,
            block(hex("sample1_deflates"), 1),
            block(hex("sample2_deflates"), 1),
            hex("patch_1_to_2"),
        ),
        (K::Lz4diffBsdiff, lz("src"), lz("dst"), lz("patch")),
        (K::Zucchini, zold, znew, zpatch),
    ];
    let old: Vec<u8> = pieces.iter().flat_map(|p| p.1.clone()).collect();
    let new: Vec<u8> = pieces.iter().flat_map(|p| p.2.clone()).collect();
    let mut w = PayloadWriter::new(9);
    let info = |b: &[u8]| ImageInfo {
        size: b.len() as u64,
        sha256: Some(romdelta_format::sha256(b)),
    };
    w.push_partition("system", Some(info(&old)), info(&new));
    let (mut at_old, mut at_new) = (0u64, 0u64);
    let mut blobs = Vec::new();
    for (kind, o, n, data) in &pieces {
        let (ob, nb) = (o.len() as u64 / 4096, n.len() as u64 / 4096);
        w.push_op(NewOp {
            kind: *kind,
            src_extents: vec![Extent::new(at_old, ob)],
            dst_extents: vec![Extent::new(at_new, nb)],
            src_sha256: Some(romdelta_format::sha256(o)),
            data_length: data.len() as u64,
            data_sha256: Some(romdelta_format::sha256(data)),
        });
        blobs.extend_from_slice(data);
        at_old += ob;
        at_new += nb;
    }
    let mut payload = w.finish();
    payload.extend(blobs);
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    std::fs::create_dir(d("old")).unwrap();
    std::fs::write(d("old/system.img"), &old).unwrap();
    std::fs::write(d("p.bin"), &payload).unwrap();
    romdelta()
        .args(["payload", "inspect"])
        .arg(d("p.bin"))
        .assert()
        .success()
        .stdout(predicate::str::contains("PUFFDIFF").and(predicate::str::contains("ZUCCHINI")))
        .stdout(predicate::str::contains("cannot be applied").not());
    romdelta()
        .args(["payload", "apply"])
        .arg(d("p.bin"))
        .arg("--source")
        .arg(d("old"))
        .arg("-o")
        .arg(d("new"))
        .assert()
        .success();
    assert!(std::fs::read(d("new/system.img")).unwrap() == new);
}

/// `diff --format payload --minor-version 9` of lz4hc, lz4 and 64 KiB
/// cluster EROFS images: changed files become LZ4DIFF_BSDIFF operations,
/// a changed apk an LZ4DIFF_PUFFDIFF one, the payload is smaller than at minor version 6, and it applies to the
/// exact image.
#[test]
fn minor_version_9_payloads_use_lz4diff_for_erofs_files() {
    let have = Command::new("mkfs.erofs").arg("--help").output().is_ok();
    if !have {
        assert!(
            !require_tools(),
            "mkfs.erofs is required (apt-get install erofs-utils)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let words: [&[u8]; 8] = [
        b"update ",
        b"engine ",
        b"cluster ",
        b"erofs ",
        b"payload ",
        b"android ",
        b"kernel ",
        b"module ",
    ];
    for t in ["ta", "tb"] {
        std::fs::create_dir_all(d(t)).unwrap();
    }
    let mut x = 7u64;
    for i in 0..24 {
        let mut data = Vec::new();
        let n = 3000 + (i * 1777) % 40000;
        while data.len() < n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.extend_from_slice(words[(x % 8) as usize]);
            data.extend_from_slice((x % 1000).to_string().as_bytes());
        }
        std::fs::write(d("ta").join(format!("f{i}.txt")), &data).unwrap();
        if i % 3 == 0 {
            for k in (0..data.len()).step_by(5000) {
                data[k] = b'#';
            }
        }
        std::fs::write(d("tb").join(format!("f{i}.txt")), &data).unwrap();
    }
    // An apk of stored entries (which lz4 compresses) and deflated ones
    // (which it leaves as they are), a few of each changed: its diff of
    // decompressed bytes is smaller in puffin's form (LZ4DIFF_PUFFDIFF).
    for (t, changed) in [("ta", false), ("tb", true)] {
        use std::io::Write as _;
        let mut z = zip::ZipWriter::new(std::fs::File::create(d(t).join("app.apk")).unwrap());
        for i in 0..12u64 {
            let (mut entry, mut y) = (Vec::new(), 1000 + i);
            while entry.len() < 24000 + 700 * i as usize {
                y ^= y << 13;
                y ^= y >> 7;
                y ^= y << 17;
                entry.extend_from_slice(words[(y % 8) as usize]);
                entry.extend_from_slice((y % 100000).to_string().as_bytes());
            }
            if changed && i % 3 == 0 {
                entry[200..210].copy_from_slice(b"CHANGED!!!");
            }
            let method = if i % 2 == 0 {
                zip::CompressionMethod::Deflated
            } else {
                zip::CompressionMethod::Stored
            };
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(method)
                .last_modified_time(zip::DateTime::default());
            z.start_file(format!("res/f{i}.xml"), opts).unwrap();
            z.write_all(&entry).unwrap();
        }
        z.finish().unwrap();
    }
    for (name, opts) in [
        ("lz4hc", &["-zlz4hc"][..]),
        ("lz4", &["-zlz4"][..]),
        ("lz4hc-64k", &["-zlz4hc", "-C65536"][..]),
    ] {
        let (old, new) = (d(&format!("{name}-old")), d(&format!("{name}-new")));
        std::fs::create_dir_all(&old).unwrap();
        std::fs::create_dir_all(&new).unwrap();
        crate::common::erofs_image(&d("ta"), &old.join("system.img"), opts);
        let want = crate::common::erofs_image(&d("tb"), &new.join("system.img"), opts);
        let mut sizes = Vec::new();
        for minor in ["6", "9"] {
            let p = d(&format!("{name}-{minor}.bin"));
            romdelta()
                .args(["diff", "--format", "payload", "--minor-version", minor])
                .arg(&old)
                .arg(&new)
                .arg("-o")
                .arg(&p)
                .assert()
                .success();
            let bytes = std::fs::read(&p).unwrap();
            let parsed = Payload::parse(&bytes).unwrap();
            assert_eq!(parsed.minor_version.to_string(), minor);
            let lz = parsed.partitions[0]
                .operations
                .iter()
                .filter(|o| o.kind == romdelta_android::payload::PayloadOpKind::Lz4diffBsdiff)
                .count();
            assert_eq!(
                lz > 0,
                minor == "9",
                "{name} minor {minor}: {lz} LZ4DIFF operations"
            );
            let lz_puff = parsed.partitions[0]
                .operations
                .iter()
                .filter(|o| o.kind == romdelta_android::payload::PayloadOpKind::Lz4diffPuffdiff)
                .count();
            // The installer's recompression (the same liblz4 as
            // mkfs.erofs's, offered every remaining byte) rebuilds every
            // cluster: no postfix patch is needed.
            for op in &parsed.partitions[0].operations {
                if let Ok(p) = romdelta_android::lz4diff::Patch::parse(parsed.op_data(op)) {
                    let dst = p.header.dst_info.unwrap();
                    let fixed = dst
                        .block_info
                        .iter()
                        .filter(|b| !b.postfix_bspatch.is_empty())
                        .count();
                    assert_eq!(fixed, 0, "{name}: postfix patches in {op:?}");
                }
            }
            assert_eq!(
                lz_puff,
                usize::from(minor == "9"),
                "{name} minor {minor}: one LZ4DIFF_PUFFDIFF operation, for the apk"
            );
            let out = d(&format!("{name}-{minor}-out"));
            romdelta()
                .args(["payload", "apply"])
                .arg(&p)
                .arg("--source")
                .arg(&old)
                .arg("-o")
                .arg(&out)
                .assert()
                .success();
            assert!(
                std::fs::read(out.join("system.img")).unwrap() == want,
                "{name} minor {minor}"
            );
            sizes.push(bytes.len());
        }
        assert!(
            sizes[1] < sizes[0],
            "{name}: minor 9 {} bytes, minor 6 {}",
            sizes[1],
            sizes[0]
        );
    }
}

/// A changed apk (zip of deflated entries) and gzip file in ext4 images
/// become PUFFDIFF operations, smaller than the bsdiff of their stored
/// bytes, and the payload applies to the exact image.
#[test]
fn changed_zip_and_gzip_files_become_puffdiff_operations() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let words: [&[u8]; 8] = [
        b"update ",
        b"engine ",
        b"class ",
        b"dex ",
        b"payload ",
        b"android ",
        b"res ",
        b"xml ",
    ];
    let text = |n: usize, seed: u64| {
        let mut x = seed | 1;
        let mut v = Vec::new();
        while v.len() < n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(words[(x % 8) as usize]);
            v.extend_from_slice((x % 10000).to_string().as_bytes());
        }
        v
    };
    for (t, changed) in [("ta", false), ("tb", true)] {
        std::fs::create_dir_all(d(t)).unwrap();
        let mut z = zip::ZipWriter::new(std::fs::File::create(d(t).join("app.apk")).unwrap());
        for i in 0..16u64 {
            let mut entry = text(20000 + 500 * i as usize, i);
            if changed && i % 4 == 0 {
                entry[100..110].copy_from_slice(b"CHANGED!!!");
            }
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .last_modified_time(zip::DateTime::default());
            z.start_file(format!("res/f{i}.xml"), opts).unwrap();
            z.write_all(&entry).unwrap();
        }
        z.finish().unwrap();
        let mut plain = text(200_000, 99);
        if changed {
            plain[5000..5010].copy_from_slice(b"0123456789");
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&plain).unwrap();
        std::fs::write(d(t).join("data.gz"), gz.finish().unwrap()).unwrap();
    }
    let (old, new) = (d("old"), d("new"));
    std::fs::create_dir_all(&old).unwrap();
    std::fs::create_dir_all(&new).unwrap();
    crate::common::ext4_image(&d("ta"), &old.join("system.img"), "8M");
    let want = crate::common::ext4_image(&d("tb"), &new.join("system.img"), "8M");
    romdelta()
        .args(["diff", "--format", "payload"])
        .arg(&old)
        .arg(&new)
        .arg("-o")
        .arg(d("p.bin"))
        .assert()
        .success();
    let bytes = std::fs::read(d("p.bin")).unwrap();
    let p = Payload::parse(&bytes).unwrap();
    let puff: Vec<_> = p.partitions[0]
        .operations
        .iter()
        .filter(|o| o.kind == romdelta_android::payload::PayloadOpKind::Puffdiff)
        .collect();
    assert_eq!(
        puff.len(),
        2,
        "one PUFFDIFF for the apk, one for the gzip file"
    );
    romdelta()
        .args(["payload", "apply"])
        .arg(d("p.bin"))
        .arg("--source")
        .arg(&old)
        .arg("-o")
        .arg(d("out"))
        .assert()
        .success();
    assert!(std::fs::read(d("out/system.img")).unwrap() == want);
}
