//! `diff --format ota-zip`: whole A/B OTA zips whose property files point
//! at the exact bytes of their entries, whose metadata comes from the
//! builds' identities, that romdelta installs with the signing key's
//! certificate and that PyPI's `payload_dumper` applies from the bytes the
//! property files name; downgrades and missing identities are refused.

use crate::common::romdelta;
use crate::payload::{block_roms, have_tool, images, same, test_key, TEST_KEYS};
use prost::Message as _;
use romdelta_android::ota_zip::{self, parse_property_files};
use std::io::Read as _;
use std::path::Path;
use std::process::Command;

fn build_prop(dir: &Path, build: &str, time: u64, device: &str) {
    std::fs::write(
        dir.join("build.prop"),
        format!(
            "ro.product.device={device}\nro.build.fingerprint=romdelta/{device}/{device}:14/{build}/{build}:user/release-keys\nro.build.version.incremental={build}\nro.build.date.utc={time}\nro.build.version.security_patch=2026-11-05\n"
        ),
    )
    .unwrap();
}

/// The entry `name` of the zip at `path`.
fn entry(path: &Path, name: &str) -> Vec<u8> {
    let mut z = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut e = z.by_name(name).unwrap();
    assert_eq!(e.compression(), zip::CompressionMethod::Stored, "{name}");
    let mut v = Vec::new();
    e.read_to_end(&mut v).unwrap();
    v
}

fn metadata(path: &Path) -> std::collections::BTreeMap<String, String> {
    String::from_utf8(entry(path, ota_zip::METADATA))
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn incremental_ota_zip_streams_verifies_and_applies() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let (old, new) = block_roms(dir.path(), true);
    build_prop(&old, "A1", 1_764_547_200, "walleye");
    build_prop(&new, "B2", 1_767_225_600, "walleye");
    let zip = d("ota.zip");
    let mut cmd = romdelta();
    cmd.args(["diff", "--format", "ota-zip"])
        .arg(&old)
        .arg(&new);
    for k in TEST_KEYS {
        cmd.arg("--key").arg(test_key(k));
    }
    cmd.arg("-o").arg(&zip).assert().success();
    let bytes = std::fs::read(&zip).unwrap();
    let m = metadata(&zip);
    assert_eq!(m["ota-type"], "AB");
    assert_eq!(m["pre-device"], "walleye");
    assert_eq!(
        m["pre-build"],
        "romdelta/walleye/walleye:14/A1/A1:user/release-keys"
    );
    assert_eq!(
        m["post-build"],
        "romdelta/walleye/walleye:14/B2/B2:user/release-keys"
    );
    assert_eq!(m["post-timestamp"], "1767225600");
    assert_eq!(m["post-security-patch-level"], "2026-11-05");
    assert!(!m.contains_key("ota-downgrade"));
    // Every property file names the exact bytes of its entry.
    for key in ["ota-streaming-property-files", "ota-property-files"] {
        let spans = parse_property_files(&m[key]).unwrap();
        for (name, span) in &spans {
            let at = &bytes[span.offset as usize..(span.offset + span.size) as usize];
            let want = match name.as_str() {
                "metadata" => entry(&zip, ota_zip::METADATA),
                "metadata.pb" => entry(&zip, ota_zip::METADATA_PB),
                "payload_metadata.bin" => {
                    let p = entry(&zip, "payload.bin");
                    let h = romdelta_android::payload::PayloadHeader::decode(&p).unwrap();
                    p[..24 + h.manifest_len as usize + h.metadata_signature_len as usize].to_vec()
                }
                other => entry(&zip, other),
            };
            assert!(at == &want[..], "{key}: {name} at {span:?}");
        }
    }
    // metadata.pb says the same.
    let pb = ota_zip::proto::OtaMetadata::decode(&entry(&zip, ota_zip::METADATA_PB)[..]).unwrap();
    assert_eq!(pb.r#type, 1);
    assert_eq!(pb.precondition.unwrap().build, vec![m["pre-build"].clone()]);
    assert_eq!(pb.postcondition.unwrap().timestamp, 1_767_225_600);
    assert_eq!(
        pb.property_files["ota-property-files"],
        m["ota-property-files"]
    );
    // payload_properties.txt describes payload.bin.
    let payload = entry(&zip, "payload.bin");
    let h = romdelta_android::payload::PayloadHeader::decode(&payload).unwrap();
    assert_eq!(
        String::from_utf8(entry(&zip, "payload_properties.txt")).unwrap(),
        romdelta_android::payload::properties::render(&payload, 24 + h.manifest_len)
    );
    // romdelta installs it, checking properties and signatures.
    let pubkey = d("rsa.pub");
    let have_openssl = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(test_key(TEST_KEYS[0]))
        .arg("-out")
        .arg(&pubkey)
        .status()
        .is_ok_and(|s| s.success());
    let mut cmd = romdelta();
    cmd.args(["payload", "apply"])
        .arg(&zip)
        .arg("--source")
        .arg(&old)
        .arg("-o")
        .arg(d("ours"));
    if have_openssl {
        cmd.arg("--trusted-key").arg(&pubkey);
    }
    cmd.assert().success();
    for n in images(&new) {
        same(&d("ours").join(&n), &new.join(&n));
    }
    // PyPI's payload_dumper applies the payload cut out by its offsets,
    // as a streaming client would fetch it.
    if have_tool("payload_dumper", "payload-dumper") {
        let span = parse_property_files(&m["ota-streaming-property-files"]).unwrap()["payload.bin"];
        std::fs::write(
            d("streamed.bin"),
            &bytes[span.offset as usize..(span.offset + span.size) as usize],
        )
        .unwrap();
        std::fs::create_dir(d("theirs")).unwrap();
        let out = Command::new("payload_dumper")
            .args(["--workers", "1", "--diff", "--old"])
            .arg(&old)
            .arg("--out")
            .arg(d("theirs"))
            .arg(d("streamed.bin"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "payload_dumper: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for n in images(&new) {
            same(&d("theirs").join(&n), &new.join(&n));
        }
    }
}

#[test]
fn full_ota_zip_carries_the_care_map_of_verity_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let new = dir.path().join("new");
    std::fs::create_dir_all(&new).unwrap();
    let data: Vec<u8> = crate::common::noise(3, 300 * 4096);
    let img = romdelta_android::avb::hashtree_image(
        &data,
        &romdelta_android::avb::HashtreeOptions {
            partition: "system".into(),
            partition_size: 320 * 4096,
            algorithm: romdelta_android::verity::HashAlgorithm::Sha256,
            salt: vec![1; 32],
            fec_roots: 2,
        },
    )
    .unwrap();
    std::fs::write(new.join("system.img"), &img).unwrap();
    build_prop(&new, "B2", 1_767_225_600, "walleye");
    let zip = dir.path().join("full.zip");
    romdelta()
        .args(["diff", "--format", "ota-zip", "--full"])
        .arg(&new)
        .arg("-o")
        .arg(&zip)
        .assert()
        .success();
    let m = metadata(&zip);
    assert!(!m.contains_key("pre-build"));
    assert_eq!(m["pre-device"], "walleye");
    let care = ota_zip::proto::CareMap::decode(&entry(&zip, ota_zip::CARE_MAP)[..]).unwrap();
    assert_eq!(care.partitions.len(), 1);
    assert_eq!(care.partitions[0].name, "system");
    assert_eq!(care.partitions[0].ranges, "2,0,300");
    assert_eq!(care.partitions[0].id, "ro.system.build.fingerprint");
    assert!(parse_property_files(&m["ota-streaming-property-files"])
        .unwrap()
        .contains_key("care_map.pb"));
    romdelta()
        .args(["payload", "extract"])
        .arg(&zip)
        .arg("-o")
        .arg(dir.path().join("out"))
        .assert()
        .success();
    assert!(std::fs::read(dir.path().join("out/system.img")).unwrap() == img);
}

#[test]
fn ota_zips_need_identities_and_refuse_downgrades_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = block_roms(dir.path(), true);
    let zip = dir.path().join("ota.zip");
    let run = |extra: &[&str]| {
        let mut cmd = romdelta();
        cmd.args(["diff", "--format", "ota-zip"])
            .args(extra)
            .arg(&old)
            .arg(&new)
            .arg("-o")
            .arg(&zip);
        cmd.output().unwrap()
    };
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("records the target build's identity"));
    build_prop(&old, "B2", 1_767_225_600, "walleye");
    build_prop(&new, "A1", 1_764_547_200, "walleye");
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("a downgrade needs --downgrade"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!zip.exists());
    assert!(run(&["--downgrade"]).status.success());
    assert_eq!(metadata(&zip)["ota-downgrade"], "yes");
    std::fs::remove_file(&zip).unwrap();
    build_prop(&new, "C3", 1_769_904_000, "sailfish");
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("an OTA moves one device"));
}
