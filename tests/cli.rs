//! The command line as scripts use it: spellings, outputs, exit codes.

use crate::common::{listing, romdelta, synth_roms};
use predicates::prelude::*;

#[test]
fn demo_prints_its_table_and_succeeds() {
    romdelta()
        .arg("demo")
        .assert()
        .success()
        .stdout(predicate::str::contains("| incremental |"))
        .stdout(predicate::str::contains("byte for byte"));
}

#[test]
fn diff_apply_verify_inspect_on_a_rom_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = synth_roms(dir.path(), 3);
    let pkg = dir.path().join("u.romdelta");
    romdelta()
        .args(["diff", "--threads", "2", "--level", "3"])
        .arg(&old)
        .arg(&new)
        .arg("-o")
        .arg(&pkg)
        .assert()
        .success();
    romdelta()
        .arg("verify")
        .arg(&pkg)
        .arg("--source")
        .arg(&old)
        .arg("--insecure-no-verify")
        .assert()
        .success()
        .stdout(predicate::str::contains("OK"));
    let out = dir.path().join("out");
    romdelta()
        .arg("apply")
        .arg(&pkg)
        .arg("--source")
        .arg(&old)
        .arg("-o")
        .arg(&out)
        .arg("--insecure-no-verify")
        .assert()
        .success();
    assert_eq!(listing(&out), listing(&new));
    for name in listing(&new) {
        assert!(std::fs::read(out.join(&name)).unwrap() == std::fs::read(new.join(&name)).unwrap());
    }
    let json = romdelta()
        .arg("inspect")
        .arg(&pkg)
        .arg("--json")
        .output()
        .unwrap();
    assert!(json.status.success());
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["kind"], "delta");
    assert_eq!(v["removed"][0]["name"], "oem");
    let names: Vec<&str> = v["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["boot", "product", "system", "vendor"]);
    // The partition new in the target is sent whole.
    let product = &v["partitions"][1];
    assert!(product["old"].is_null());
    romdelta()
        .arg("inspect")
        .arg(&pkg)
        .assert()
        .success()
        .stdout(predicate::str::contains("SOURCE_COPY"));
}

#[test]
fn full_package_needs_no_source() {
    let dir = tempfile::tempdir().unwrap();
    let (_, new) = synth_roms(dir.path(), 4);
    let img = new.join("boot.img");
    let pkg = dir.path().join("full.romdelta");
    romdelta()
        .args(["diff", "--full", "--level", "3"])
        .arg(&img)
        .arg("-o")
        .arg(&pkg)
        .assert()
        .success();
    let out = dir.path().join("boot-out.img");
    romdelta()
        .arg("apply")
        .arg(&pkg)
        .arg("-o")
        .arg(&out)
        .arg("--insecure-no-verify")
        .assert()
        .success();
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&img).unwrap());
    // An incremental without its source is refused, with exit 1.
    let inc = dir.path().join("inc.romdelta");
    romdelta()
        .arg("diff")
        .arg(&img)
        .arg(&img)
        .arg("-o")
        .arg(&inc)
        .assert()
        .success();
    romdelta()
        .arg("apply")
        .arg(&inc)
        .arg("-o")
        .arg(dir.path().join("x.img"))
        .arg("--insecure-no-verify")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("needs the source build"));
}

#[test]
fn an_error_names_its_cause_once() {
    // Regression: I/O errors printed their cause twice.
    let dir = tempfile::tempdir().unwrap();
    let (_, new) = synth_roms(dir.path(), 4);
    let pkg = dir.path().join("full.romdelta");
    romdelta()
        .args(["diff", "--full", "--level", "1", "-o"])
        .arg(&pkg)
        .arg(&new)
        .assert()
        .success();
    let out = dir.path().join("busy");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("x"), b"x").unwrap();
    let run = romdelta()
        .args(["apply", "--insecure-no-verify", "-o"])
        .arg(&out)
        .arg(&pkg)
        .assert()
        .code(2);
    let err = String::from_utf8_lossy(&run.get_output().stderr).into_owned();
    assert_eq!(err.matches("not empty").count(), 1, "{err}");
}

#[test]
fn completions_and_man_page_come_from_the_argument_definitions() {
    for shell in ["bash", "zsh", "fish"] {
        let out = romdelta().args(["completions", shell]).assert().success();
        let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
        for word in ["romdelta", "apply", "trusted-key", "bspatch"] {
            assert!(text.contains(word), "{shell} completions lack {word}");
        }
    }
    let out = romdelta().arg("man").assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(
        text.starts_with(".ie") || text.contains(".TH romdelta"),
        "{text}"
    );
    for word in ["diff", "apply", "verify", "keygen", "bench"] {
        assert!(text.contains(word), "man page lacks {word}");
    }
    romdelta().args(["completions", "tcsh"]).assert().code(2);
    // A reader that closes the pipe early (`romdelta man | head`) is no error.
    for args in [&["man"][..], &["completions", "bash"][..]] {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("romdelta"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && err.is_empty(), "{args:?}: {err}");
    }
}

#[test]
fn quiet_json_and_json_progress_for_machines() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = synth_roms(dir.path(), 6);
    let pkg = dir.path().join("p.romdelta");
    // -q: nothing on stdout or stderr.
    let run = romdelta()
        .args(["-q", "diff", "--level", "1", "-o"])
        .arg(&pkg)
        .arg(&old)
        .arg(&new)
        .assert()
        .success();
    assert!(run.get_output().stdout.is_empty() && run.get_output().stderr.is_empty());
    // --progress json: every stderr line is a JSON object, the last says done.
    let run = romdelta()
        .args([
            "apply",
            "--progress",
            "json",
            "--insecure-no-verify",
            "--json",
            "-o",
        ])
        .arg(dir.path().join("out"))
        .arg("--source")
        .arg(&old)
        .arg(&pkg)
        .assert()
        .success();
    let err = String::from_utf8_lossy(&run.get_output().stderr).into_owned();
    let events: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let last = events.last().expect("progress events");
    assert_eq!(last["event"], "done");
    assert_eq!(last["command"], "apply");
    assert_eq!(last["bytes_done"], last["bytes_total"]);
    let report: serde_json::Value = serde_json::from_slice(&run.get_output().stdout).unwrap();
    assert!(report["partitions"].is_array());
    // --json on keygen.
    let run = romdelta()
        .args(["keygen", "--json", "-o"])
        .arg(dir.path().join("k"))
        .assert()
        .success();
    let k: serde_json::Value = serde_json::from_slice(&run.get_output().stdout).unwrap();
    assert_eq!(k["public_key_hex"].as_str().unwrap().len(), 64);
}

#[test]
fn usage_errors_exit_2() {
    romdelta()
        .args(["diff", "only-one-path", "-o", "x"])
        .assert()
        .code(2);
    romdelta().args(["apply"]).assert().code(2);
    romdelta()
        .args(["inspect", "/nonexistent/package"])
        .assert()
        .code(2);
}

#[test]
fn wrong_source_is_refused_naming_partition_and_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = synth_roms(dir.path(), 5);
    let pkg = dir.path().join("u.romdelta");
    romdelta()
        .args(["diff", "--level", "3"])
        .arg(&old)
        .arg(&new)
        .arg("-o")
        .arg(&pkg)
        .assert()
        .success();
    // Flip one byte inside a block the package reads: block 1 of system
    // (the first file) is read by a SOURCE_COPY or a patch.
    let sys = old.join("system.img");
    let mut bytes = std::fs::read(&sys).unwrap();
    bytes[4096 + 100] ^= 0x5a;
    std::fs::write(&sys, &bytes).unwrap();
    let out = dir.path().join("out");
    romdelta()
        .arg("apply")
        .arg(&pkg)
        .arg("--source")
        .arg(&old)
        .arg("-o")
        .arg(&out)
        .arg("--insecure-no-verify")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("partition system"))
        .stderr(predicate::str::contains("source hash mismatch"))
        .stderr(predicate::str::contains("source blocks"));
    assert!(!out.exists(), "no output may be left behind");
    let leftovers: Vec<String> = listing(dir.path())
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "staging files left behind: {leftovers:?}"
    );
    romdelta()
        .arg("verify")
        .arg(&pkg)
        .arg("--source")
        .arg(&old)
        .arg("--insecure-no-verify")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("partition system"));
}

#[test]
fn apply_streams_a_package_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = synth_roms(dir.path(), 6);
    let pkg = dir.path().join("u.romdelta");
    romdelta()
        .args(["diff", "--level", "3"])
        .arg(&old)
        .arg(&new)
        .arg("-o")
        .arg(&pkg)
        .assert()
        .success();
    let out = dir.path().join("out");
    romdelta()
        .args([
            "apply",
            "-",
            "--insecure-no-verify",
            "--threads",
            "2",
            "--source",
        ])
        .arg(&old)
        .arg("-o")
        .arg(&out)
        .write_stdin(std::fs::read(&pkg).unwrap())
        .assert()
        .success();
    for name in listing(&new) {
        assert!(std::fs::read(out.join(&name)).unwrap() == std::fs::read(new.join(&name)).unwrap());
    }
    // Bytes past the data section are refused too.
    let mut longer = std::fs::read(&pkg).unwrap();
    longer.push(0);
    let out2 = dir.path().join("out2");
    romdelta()
        .args(["apply", "-", "--insecure-no-verify", "--source"])
        .arg(&old)
        .arg("-o")
        .arg(&out2)
        .write_stdin(longer)
        .assert()
        .code(1);
    assert!(!out2.exists());
}

#[test]
fn signed_packages_apply_only_with_a_trusted_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (old, new) = synth_roms(d, 8);
    let (k1, k2) = (d.join("release.key"), d.join("other.key"));
    for k in [&k1, &k2] {
        romdelta().arg("keygen").arg("-o").arg(k).assert().success();
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&k1), 0o600);
    assert_eq!(mode(&d.join("release.key.pub")), 0o644);
    // An existing key is never overwritten.
    let before = std::fs::read(&k1).unwrap();
    romdelta().arg("keygen").arg("-o").arg(&k1).assert().code(2);
    assert_eq!(std::fs::read(&k1).unwrap(), before);

    let (pub1, pub2) = (d.join("release.key.pub"), d.join("other.key.pub"));
    let signed = d.join("signed.romdelta");
    romdelta()
        .args(["diff", "--level", "3", "--key"])
        .arg(&k1)
        .arg(&old)
        .arg(&new)
        .arg("-o")
        .arg(&signed)
        .assert()
        .success();
    romdelta()
        .arg("inspect")
        .arg(&signed)
        .assert()
        .success()
        .stdout(predicate::str::contains("signed by Ed25519 key"));
    let apply = |pkg: &std::path::Path, out: &str, extra: &[&std::ffi::OsStr]| {
        let mut c = romdelta();
        c.arg("apply")
            .arg(pkg)
            .arg("--source")
            .arg(&old)
            .arg("-o")
            .arg(d.join(out))
            .args(extra);
        c.assert()
    };
    // Trusted: applies. Rotation: several trusted keys, one of them the signer.
    apply(
        &signed,
        "ok1",
        &[
            "--trusted-key".as_ref(),
            pub2.as_os_str(),
            "--trusted-key".as_ref(),
            pub1.as_os_str(),
        ],
    )
    .success();
    // No key given, a wrong key, or an unsigned package: refused, nothing written.
    apply(&signed, "no-key", &[])
        .code(1)
        .stderr(predicate::str::contains("no trusted key given"));
    apply(
        &signed,
        "wrong",
        &["--trusted-key".as_ref(), pub2.as_os_str()],
    )
    .code(1)
    .stderr(predicate::str::contains("none of them a trusted key"));
    let unsigned = d.join("unsigned.romdelta");
    romdelta()
        .args(["diff", "--level", "3"])
        .arg(&old)
        .arg(&new)
        .arg("-o")
        .arg(&unsigned)
        .assert()
        .success();
    apply(
        &unsigned,
        "unsigned",
        &["--trusted-key".as_ref(), pub1.as_os_str()],
    )
    .code(1)
    .stderr(predicate::str::contains("not signed"));
    // A manifest changed after signing, with its checksum made valid again:
    // only the signature can tell, and it does.
    let bytes = std::fs::read(&signed).unwrap();
    let pkg = romdelta_format::Package::parse(&bytes).unwrap();
    let mut manifest = pkg.manifest.clone();
    manifest.target_build.device = "evil".into();
    let mut forged = romdelta_format::Package::encode_prefix(&manifest, &pkg.signatures);
    forged.extend_from_slice(pkg.data);
    let forged_path = d.join("forged.romdelta");
    std::fs::write(&forged_path, forged).unwrap();
    apply(
        &forged_path,
        "forged",
        &["--trusted-key".as_ref(), pub1.as_os_str()],
    )
    .code(1)
    .stderr(predicate::str::contains("the package was altered"));
    romdelta()
        .arg("verify")
        .arg(&forged_path)
        .arg("--trusted-key")
        .arg(&pub1)
        .assert()
        .code(1);
    for out in ["no-key", "wrong", "unsigned", "forged"] {
        assert!(!d.join(out).exists(), "{out} was written");
    }
}
