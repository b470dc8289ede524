//! `romdelta bsdiff` / `romdelta bspatch` against Debian's `bsdiff` /
//! `bspatch` 4.3, in both directions.

use crate::common::romdelta;
use std::path::Path;
use std::process::Command;

fn have_debian_bsdiff() -> bool {
    let ok = Command::new("bsdiff").output().is_ok() && Command::new("bspatch").output().is_ok();
    if !ok && std::env::var_os("ROMDELTA_REQUIRE_TOOLS").is_some() {
        panic!("Debian's bsdiff/bspatch are required (apt-get install bsdiff)");
    }
    if !ok {
        eprintln!("skipping: Debian's bsdiff not installed");
    }
    ok
}

fn run(cmd: &str, args: &[&Path]) {
    let st = Command::new(cmd).args(args).status().unwrap();
    assert!(st.success(), "{cmd} failed");
}

#[test]
fn patches_cross_with_debians_bsdiff_both_ways() {
    if !have_debian_bsdiff() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = romdelta_synth::rom_pair(9, 1);
    let old = &old.iter().find(|(n, _)| n == "system").unwrap().1[..3 << 20];
    let new = &new.iter().find(|(n, _)| n == "system").unwrap().1[..3 << 20];
    let d = |n: &str| dir.path().join(n);
    std::fs::write(d("old"), old).unwrap();
    std::fs::write(d("new"), new).unwrap();
    // romdelta writes, Debian applies.
    romdelta()
        .arg("bsdiff")
        .args([d("old"), d("new"), d("ours.patch")])
        .assert()
        .success();
    run("bspatch", &[&d("old"), &d("out1"), &d("ours.patch")]);
    assert!(std::fs::read(d("out1")).unwrap() == new);
    // Debian writes, romdelta applies.
    run("bsdiff", &[&d("old"), &d("new"), &d("theirs.patch")]);
    romdelta()
        .args(["bspatch", "--json"])
        .args([d("old"), d("out2"), d("theirs.patch")])
        .assert()
        .success()
        .stdout(predicates::str::contains("\"new_bytes\""));
    assert!(std::fs::read(d("out2")).unwrap() == new);
    // A cut patch is refused with exit 1 and leaves no output.
    let patch = std::fs::read(d("theirs.patch")).unwrap();
    for cut in [0, 20, 40, patch.len() / 2, patch.len() - 1] {
        std::fs::write(d("cut.patch"), &patch[..cut]).unwrap();
        romdelta()
            .arg("bspatch")
            .args([d("old"), d("out3"), d("cut.patch")])
            .assert()
            .code(1)
            .stderr(predicates::str::contains("BSDIFF40"));
        assert!(!d("out3").exists());
    }
}
