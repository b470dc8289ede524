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
    assert_eq!(v["removed"][0][0], "oem");
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
        .assert()
        .code(1)
        .stderr(predicate::str::contains("needs the source build"));
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
        .args(["apply", "-", "--threads", "2", "--source"])
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
        .args(["apply", "-", "--source"])
        .arg(&old)
        .arg("-o")
        .arg(&out2)
        .write_stdin(longer)
        .assert()
        .code(1);
    assert!(!out2.exists());
}
