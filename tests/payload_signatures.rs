//! Payload signatures: the signed fixtures (`../shared/fixtures/payload_signed/`:
//! RSA-2048, RSA-4096 and EC P-256 test keys, damaged copies) verify with
//! their keys in every form (public key, certificate, otacerts.zip) and
//! are refused with any other, before anything is written; `payload sign`
//! reproduces the fixtures byte for byte; exported signed payloads verify
//! with the matching certificate and fail with another.

use crate::common::romdelta;
use crate::payload::{
    block_roms, fixtures, images, require_tools, same, test_key, unpack_fixtures, TEST_KEYS,
};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The signed fixtures unpacked into `into`, or `None`.
fn signed_fixtures(into: &Path) -> Option<PathBuf> {
    crate::common::unpack_fixture("payload_signed", "payload_signed.tar.xz", into)
}

/// An otacerts.zip holding `certs`, deflated as the build stores it.
fn otacerts(certs: &[PathBuf], out: &Path) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(out).unwrap());
    for c in certs {
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        z.start_file(c.file_name().unwrap().to_string_lossy(), opts)
            .unwrap();
        z.write_all(&std::fs::read(c).unwrap()).unwrap();
    }
    z.finish().unwrap();
}

/// Runs `payload extract PAYLOAD -o OUT --trusted-key K...`; returns
/// (exit code, stderr).
fn extract(payload: &Path, out: &Path, keys: &[PathBuf]) -> (i32, String) {
    let mut cmd = romdelta();
    cmd.args(["payload", "extract"])
        .arg(payload)
        .arg("-o")
        .arg(out);
    for k in keys {
        cmd.arg("--trusted-key").arg(k);
    }
    let o = cmd.output().unwrap();
    (
        o.status.code().unwrap(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn nothing_written(out: &Path) -> bool {
    !out.exists() || std::fs::read_dir(out).unwrap().next().is_none()
}

#[test]
fn signed_fixtures_verify_with_their_keys_in_every_form() {
    let dir = tempfile::tempdir().unwrap();
    let (Some(fx), Some(ue)) = (signed_fixtures(&dir.path().join("s")), fixtures()) else {
        return;
    };
    unpack_fixtures(&ue, &dir.path().join("ue"));
    let key = |n: &str| fx.join("keys").join(n);
    let zip = dir.path().join("otacerts.zip");
    otacerts(
        &[
            key("other_rsa.x509.pem"),
            key("rsa2048.x509.pem"),
            key("ec_p256.x509.pem"),
            key("rsa4096.x509.pem"),
        ],
        &zip,
    );
    for k in ["rsa2048", "rsa4096", "ec_p256"] {
        let payload = fx.join(format!("payload_{k}.bin"));
        for trusted in [
            key(&format!("{k}.pub.pem")),
            key(&format!("{k}.x509.pem")),
            zip.clone(),
        ] {
            let out = dir.path().join(format!(
                "out-{k}-{}",
                trusted.file_name().unwrap().to_string_lossy()
            ));
            let (code, err) = extract(&payload, &out, std::slice::from_ref(&trusted));
            assert_eq!(code, 0, "{k} with {}: {err}", trusted.display());
            same(
                &out.join("kernel.img"),
                &dir.path().join("ue/disk_ext2_4k.img"),
            );
            same(
                &out.join("root.img"),
                &dir.path().join("ue/disk_sqfs_default.img"),
            );
        }
        // inspect names the key; without one it says it did not verify.
        romdelta()
            .args(["payload", "inspect"])
            .arg(&payload)
            .arg("--trusted-key")
            .arg(key(&format!("{k}.x509.pem")))
            .assert()
            .success()
            .stdout(predicates::str::contains(format!(
                "both verified with {}",
                key(&format!("{k}.x509.pem")).display()
            )));
        romdelta()
            .args(["payload", "inspect"])
            .arg(&payload)
            .assert()
            .success()
            .stdout(predicates::str::contains(
                "signed: 1 metadata / 1 payload signature(s), not verified (no --trusted-key)",
            ));
    }
}

#[test]
fn wrong_keys_and_damaged_signatures_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (Some(fx), Some(ue)) = (signed_fixtures(&dir.path().join("s")), fixtures()) else {
        return;
    };
    unpack_fixtures(&ue, &dir.path().join("ue"));
    let key = |n: &str| fx.join("keys").join(n);
    let p = |v: &str| fx.join(format!("payload_{v}.bin"));
    let cases: Vec<(PathBuf, Vec<PathBuf>, &str)> = vec![
        (
            p("rsa2048"),
            vec![key("other_rsa.x509.pem")],
            "metadata signature: none of its 1 signature(s) verifies with the trusted key(s)",
        ),
        (
            p("rsa2048"),
            vec![key("rsa4096.pub.pem"), key("ec_p256.pub.pem")],
            "metadata signature: none of its 1 signature(s)",
        ),
        (
            p("rsa4096"),
            vec![key("rsa2048.x509.pem")],
            "metadata signature: none",
        ),
        (
            p("ec_p256"),
            vec![key("other_ec.x509.pem")],
            "metadata signature: none",
        ),
        (
            p("ec_p256"),
            vec![key("rsa2048.pub.pem")],
            "metadata signature: none",
        ),
        (
            p("rsa2048_bad_payload_sig"),
            vec![key("rsa2048.x509.pem")],
            "payload signature: none of its 1 signature(s)",
        ),
        // paycheck passes this one (it reads only the side file); the
        // signature inside the payload is damaged.
        (
            p("rsa2048_bad_metadata_sig"),
            vec![key("rsa2048.x509.pem")],
            "metadata signature: none of its 1 signature(s)",
        ),
        (
            dir.path().join("ue/full_payload.bin"),
            vec![key("rsa2048.x509.pem")],
            "metadata signature: the payload is not signed",
        ),
    ];
    for (i, (payload, keys, message)) in cases.iter().enumerate() {
        let out = dir.path().join(format!("out{i}"));
        let (code, err) = extract(payload, &out, keys);
        assert_eq!(code, 1, "case {i}: {err}");
        assert!(err.contains(message), "case {i}: {err}");
        assert!(nothing_written(&out), "case {i}: output written");
    }
    // Altered or cut signed payloads: refused, whatever byte.
    let good = std::fs::read(p("rsa2048")).unwrap();
    let trusted = [key("rsa2048.x509.pem")];
    for at in [
        30usize,
        200,
        286,
        300,
        600,
        1500,
        good.len() - 300,
        good.len() - 1,
    ] {
        let mut bad = good.clone();
        bad[at] ^= 0x10;
        let f = dir.path().join("altered.bin");
        std::fs::write(&f, &bad).unwrap();
        let out = dir.path().join(format!("alt{at}"));
        let (code, err) = extract(&f, &out, &trusted);
        assert_eq!(code, 1, "byte {at}: {err}");
        assert!(
            err.contains("signature") || err.contains("invalid payload"),
            "byte {at}: {err}"
        );
        assert!(nothing_written(&out), "byte {at}");
    }
    for cut in [0usize, 10, 24, 287, 554, good.len() - 267, good.len() - 1] {
        let f = dir.path().join("cut.bin");
        std::fs::write(&f, &good[..cut]).unwrap();
        let out = dir.path().join(format!("cut{cut}"));
        let (code, err) = extract(&f, &out, &trusted);
        assert_ne!(code, 0, "cut at {cut}: {err}");
        assert!(nothing_written(&out), "cut at {cut}");
    }
    // A private key is not a trusted key; a missing file is an I/O error.
    let (code, err) = extract(
        &p("rsa2048"),
        &dir.path().join("k"),
        &[key("rsa2048.key.pem")],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("private key"), "{err}");
}

#[test]
fn payload_sign_reproduces_the_fixtures_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (Some(fx), Some(ue)) = (signed_fixtures(&dir.path().join("s")), fixtures()) else {
        return;
    };
    unpack_fixtures(&ue, &dir.path().join("ue"));
    for k in ["rsa2048", "rsa4096", "ec_p256"] {
        let out = dir.path().join(format!("payload_{k}.bin"));
        romdelta()
            .args(["payload", "sign"])
            .arg(dir.path().join("ue/full_payload.bin"))
            .arg("--key")
            .arg(fx.join(format!("keys/{k}.key.pem")))
            .arg("-o")
            .arg(&out)
            .assert()
            .success();
        same(&out, &fx.join(format!("payload_{k}.bin")));
        same(
            &dir.path().join(format!("payload_{k}_properties.txt")),
            &fx.join(format!("payload_{k}_properties.txt")),
        );
    }
    // A signed payload is not signed again.
    romdelta()
        .args(["payload", "sign"])
        .arg(fx.join("payload_rsa2048.bin"))
        .arg("--key")
        .arg(fx.join("keys/rsa2048.key.pem"))
        .arg("-o")
        .arg(dir.path().join("again.bin"))
        .assert()
        .code(1)
        .stderr(predicates::str::contains("already signed"));
}

#[test]
fn exported_signed_payloads_verify_with_the_matching_certificate_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let (old, new) = block_roms(dir.path(), true);
    let mut cmd = romdelta();
    cmd.args(["diff", "--format", "payload"])
        .arg(&old)
        .arg(&new);
    for k in TEST_KEYS {
        cmd.arg("--key").arg(test_key(k));
    }
    cmd.arg("-o").arg(d("payload.bin")).assert().success();
    // payload_properties.txt beside it describes it.
    let bytes = std::fs::read(d("payload.bin")).unwrap();
    let h = romdelta_android::payload::PayloadHeader::decode(&bytes).unwrap();
    let props = romdelta_android::payload::properties::render(&bytes, 24 + h.manifest_len);
    assert_eq!(
        std::fs::read_to_string(d("payload_properties.txt")).unwrap(),
        props
    );
    // The public halves, written as PEM by openssl when it is there, else
    // taken from the keys themselves through `payload inspect`.
    let pubs: Vec<PathBuf> = TEST_KEYS
        .iter()
        .map(|k| {
            let out = d(&format!("{k}.pub"));
            let o = std::process::Command::new("openssl")
                .args(["pkey", "-pubout", "-in"])
                .arg(test_key(k))
                .arg("-out")
                .arg(&out)
                .output();
            assert!(
                o.is_ok_and(|o| o.status.success()) || !require_tools(),
                "openssl is required"
            );
            out
        })
        .filter(|p| p.exists())
        .collect();
    for pubkey in &pubs {
        let out = d(&format!(
            "out-{}",
            pubkey.file_name().unwrap().to_string_lossy()
        ));
        let mut cmd = romdelta();
        cmd.args(["payload", "apply"])
            .arg(d("payload.bin"))
            .arg("--source")
            .arg(&old)
            .arg("-o")
            .arg(&out)
            .arg("--trusted-key")
            .arg(pubkey);
        cmd.assert()
            .success()
            .stdout(predicates::str::contains("signatures verified"));
        for n in images(&new) {
            same(&out.join(&n), &new.join(&n));
        }
    }
    // Another key: refused.
    if let Some(fx) = signed_fixtures(&d("s")) {
        let out = d("out-other");
        let (code, err) = extract(
            &d("payload.bin"),
            &out,
            &[
                fx.join("keys/other_rsa.x509.pem"),
                fx.join("keys/other_ec.x509.pem"),
            ],
        );
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("metadata signature: none of its 2 signature(s)"),
            "{err}"
        );
        assert!(nothing_written(&out));
    }
}
