//! `romdelta recovery`: a simulated A/B device installing packages, with
//! the update rules checked against the device's state, signatures, and
//! kills in the middle of an install.

use crate::common::{kill_when, romdelta, synth_roms};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Every file of the device and its bytes, to compare before and after.
pub fn snapshot(dev: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dev)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn status(dev: &Path) -> serde_json::Value {
    let out = romdelta()
        .args(["recovery", "status", "--json", "--device"])
        .arg(dev)
        .assert()
        .success();
    serde_json::from_slice(&out.get_output().stdout).unwrap()
}

/// Slot `slot` of the device holds exactly the images of `rom`.
fn slot_holds(dev: &Path, slot: &str, rom: &Path) {
    for e in std::fs::read_dir(rom).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "img") {
            let name = p.file_stem().unwrap().to_string_lossy();
            let img = dev.join(format!("{name}_{slot}.img"));
            assert!(
                std::fs::read(&img).unwrap() == std::fs::read(&p).unwrap(),
                "{} differs",
                img.display()
            );
        }
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    old: PathBuf,
    new: PathBuf,
    key: PathBuf,
    dev: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let (old, new) = synth_roms(&root, 31);
    for (dir, version, date) in [
        (&old, "V1.0.1.0", 1761955200),
        (&new, "V1.0.2.0", 1764547200),
    ] {
        std::fs::write(
            dir.join("build.prop"),
            format!(
                "ro.product.device=demo\nro.build.region=Global\nro.build.channel=stable\n\
                 ro.build.version.incremental={version}\n\
                 ro.build.fingerprint=romdelta/demo/demo:14/{version}:user/release-keys\n\
                 ro.build.date.utc={date}\n"
            ),
        )
        .unwrap();
    }
    let key = root.join("release.key");
    romdelta()
        .arg("keygen")
        .arg("-o")
        .arg(&key)
        .assert()
        .success();
    let dev = root.join("device");
    romdelta()
        .args(["recovery", "init", "--device"])
        .arg(&dev)
        .arg("--from")
        .arg(&old)
        .assert()
        .success();
    Setup {
        _dir: dir,
        root,
        old,
        new,
        key,
        dev,
    }
}

fn pub_key(s: &Setup) -> PathBuf {
    s.root.join("release.key.pub")
}

fn install(s: &Setup, pkg: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    romdelta()
        .args(["recovery", "install"])
        .arg(pkg)
        .arg("--device")
        .arg(&s.dev)
        .arg("--trusted-key")
        .arg(pub_key(s))
        .args(extra)
        .assert()
}

/// Installs `pkg`, expecting a refusal (exit 1) that changes no file of
/// the device; returns the message.
fn refused(s: &Setup, pkg: &Path) -> String {
    let before = snapshot(&s.dev);
    let out = install(s, pkg, &[]).code(1);
    assert!(
        snapshot(&s.dev) == before,
        "a refused install wrote to the device"
    );
    String::from_utf8_lossy(&out.get_output().stderr).into_owned()
}

#[test]
fn a_signed_incremental_installs_into_the_other_slot_and_only_once() {
    let s = setup();
    assert_eq!(status(&s.dev)["state"]["active"], "a");
    let pkg = s.root.join("inc.romdelta");
    romdelta()
        .args(["diff", "--level", "3", "--key"])
        .arg(&s.key)
        .arg(&s.old)
        .arg(&s.new)
        .arg("-o")
        .arg(&pkg)
        .assert()
        .success();
    // Unsigned by a trusted key: refused before any write.
    let before = snapshot(&s.dev);
    let other = s.root.join("other.key");
    romdelta()
        .arg("keygen")
        .arg("-o")
        .arg(&other)
        .assert()
        .success();
    romdelta()
        .args(["recovery", "install"])
        .arg(&pkg)
        .arg("--device")
        .arg(&s.dev)
        .arg("--trusted-key")
        .arg(s.root.join("other.key.pub"))
        .assert()
        .code(1);
    assert!(snapshot(&s.dev) == before);
    // Signed: slot b gets the new build, then becomes active.
    install(&s, &pkg, &[]).success();
    let st = status(&s.dev);
    assert_eq!(st["state"]["active"], "b");
    assert!(st["state"]["update"].is_null());
    assert_eq!(st["build_b"]["version"], "V1.0.2.0");
    assert_eq!(st["build_a"]["version"], "V1.0.1.0");
    slot_holds(&s.dev, "b", &s.new);
    slot_holds(&s.dev, "a", &s.old);
    // The same incremental again: the installed build is not its source.
    let err = refused(&s, &pkg);
    assert!(
        err.contains("applies only to") && err.contains("installed is"),
        "{err}"
    );
}

#[test]
fn a_full_package_of_another_line_needs_allow_line_switch() {
    let s = setup();
    let prop = s.root.join("cn.prop");
    let text = std::fs::read_to_string(s.new.join("build.prop"))
        .unwrap()
        .replace("ro.build.region=Global", "ro.build.region=CN");
    std::fs::write(&prop, text).unwrap();
    let pkg = s.root.join("full-cn.romdelta");
    romdelta()
        .args(["diff", "--full", "--level", "3", "--key"])
        .arg(&s.key)
        .arg("--target-build")
        .arg(&prop)
        .arg(&s.new)
        .arg("-o")
        .arg(&pkg)
        .assert()
        .success();
    let err = refused(&s, &pkg);
    assert!(
        err.contains("region=CN") && err.contains("region=Global"),
        "{err}"
    );
    install(&s, &pkg, &["--allow-line-switch"]).success();
    let st = status(&s.dev);
    assert_eq!(st["state"]["active"], "b");
    assert_eq!(st["build_b"]["region"], "CN");
    slot_holds(&s.dev, "b", &s.new);
}

#[test]
fn an_install_killed_midway_leaves_the_old_slot_active_and_resumes() {
    let s = setup();
    let pkg = s.root.join("full.romdelta");
    romdelta()
        .args(["diff", "--full", "--level", "1", "--key"])
        .arg(&s.key)
        .arg(&s.new)
        .arg("-o")
        .arg(&pkg)
        .assert()
        .success();
    let (_, journal) = romdelta_apply::staging_paths(&s.dev.join("slot_b.new"));
    let mut killed = 0;
    let mut switched = false;
    for _ in 0..5 {
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("romdelta"))
            .args(["recovery", "install", "--threads", "1"])
            .arg(&pkg)
            .arg("--device")
            .arg(&s.dev)
            .arg("--trusted-key")
            .arg(pub_key(&s))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let before = std::fs::read(&journal).ok();
        let checkpointed = || {
            std::fs::read(&journal)
                .ok()
                .is_some_and(|j| Some(&j) != before.as_ref())
        };
        if kill_when(&mut child, checkpointed, Duration::ZERO).is_none() {
            switched = true;
            break;
        }
        killed += 1;
        // Whatever the moment, the device boots a whole build: slot a with
        // the old one, or (killed after the switch) slot b with the new one.
        if status(&s.dev)["state"]["active"] == "b" {
            switched = true;
            break;
        }
        slot_holds(&s.dev, "a", &s.old);
    }
    assert!(killed >= 1);
    if !switched {
        // Unless the last kill fell between the apply's removal of its
        // journal and its rename, the next install resumes.
        let resumable = journal.exists();
        let out = install(&s, &pkg, &["--json"]).success();
        let report: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
        if resumable {
            assert!(report["resumed_ops"].as_u64().unwrap() > 0, "{report}");
        }
    }
    assert_eq!(status(&s.dev)["state"]["active"], "b");
    slot_holds(&s.dev, "b", &s.new);
}
