//! Resuming an interrupted apply: after `kill -9` at any moment, or a cut
//! package stream, the same command finishes with the exact target; a
//! journal of another package is refused.

use crate::common::{kill_when, romdelta};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A full package of the demo ROM at `scale` (about 40 MiB per unit) and the
/// directory it should produce.
fn full_package(dir: &Path, scale: usize) -> (PathBuf, PathBuf) {
    let (_, new) = romdelta_synth::rom_pair(21, scale);
    let target = dir.join("new");
    romdelta_synth::write_rom(&target, &new).unwrap();
    let pkg = dir.join("full.romdelta");
    romdelta()
        .args(["diff", "--full", "--level", "1", "-o"])
        .arg(&pkg)
        .arg(&target)
        .assert()
        .success();
    (pkg, target)
}

fn same_tree(a: &Path, b: &Path) {
    let names = crate::common::listing(a);
    assert_eq!(names, crate::common::listing(b));
    for n in names {
        assert!(
            std::fs::read(a.join(&n)).unwrap() == std::fs::read(b.join(&n)).unwrap(),
            "{n} differs"
        );
    }
}

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("romdelta")
}

#[test]
fn apply_killed_at_random_moments_resumes_to_the_exact_target() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg, target) = full_package(dir.path(), 5);
    let out = dir.path().join("out");
    let (_, journal) = romdelta_apply::staging_paths(&out);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut kills_after_checkpoint = 0;
    let snapshot = |p: &Path| std::fs::read(p).ok();
    for _ in 0..40 {
        let before = snapshot(&journal);
        let mut child = Command::new(bin())
            .args(["apply", "--insecure-no-verify", "--threads", "1", "-o"])
            .arg(&out)
            .arg(&pkg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Most runs die right after one of their own checkpoints (plus a
        // few ms), the others at a random moment, checkpoint or not.
        let after_checkpoint = rng.random_bool(0.7);
        let delay = Duration::from_millis(if after_checkpoint {
            rng.random_range(0..5)
        } else {
            rng.random_range(0..100)
        });
        // A checkpoint of this run: a journal with new content (not the
        // journal going away, which a finishing run does).
        let checkpointed = || snapshot(&journal).is_some_and(|j| Some(&j) != before.as_ref());
        let Some(ready) = kill_when(&mut child, || !after_checkpoint || checkpointed(), delay)
        else {
            break;
        };
        if after_checkpoint && ready {
            kills_after_checkpoint += 1;
        }
        if out.exists() {
            // Killed after it put the verified output in place: finished.
            break;
        }
    }
    if !out.exists() {
        // A run killed between removing its journal and renaming the
        // verified output leaves no journal: the next run starts over.
        let resumable = journal.exists();
        let done = romdelta()
            .args(["apply", "--insecure-no-verify", "--json", "-o"])
            .arg(&out)
            .arg(&pkg)
            .assert()
            .success();
        let report: serde_json::Value = serde_json::from_slice(&done.get_output().stdout).unwrap();
        if resumable {
            assert!(report["resumed_ops"].as_u64().unwrap() > 0, "{report}");
        }
    }
    eprintln!("killed {kills_after_checkpoint} times right after a checkpoint");
    assert!(
        kills_after_checkpoint >= 3,
        "only {kills_after_checkpoint} kills after a checkpoint"
    );
    same_tree(&out, &target);
    assert!(!journal.exists());
    assert!(!romdelta_apply::staging_paths(&out).0.exists());
}

#[test]
fn a_cut_stream_keeps_its_progress_and_the_next_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg, target) = full_package(dir.path(), 1);
    let bytes = std::fs::read(&pkg).unwrap();
    let out = dir.path().join("out");
    let (staged, journal) = romdelta_apply::staging_paths(&out);
    // The download stops at 60%: refused, but the work is kept.
    let cut = romdelta()
        .args(["apply", "-", "--insecure-no-verify", "-o"])
        .arg(&out)
        .write_stdin(bytes[..bytes.len() * 6 / 10].to_vec())
        .assert()
        .code(1);
    let err = String::from_utf8_lossy(&cut.get_output().stderr).into_owned();
    assert!(
        err.contains("ended early") && err.contains("resume"),
        "{err}"
    );
    assert!(journal.exists() && staged.exists() && !out.exists());
    let done = romdelta()
        .args(["apply", "-", "--insecure-no-verify", "--json", "-o"])
        .arg(&out)
        .write_stdin(bytes)
        .assert()
        .success();
    let report: serde_json::Value = serde_json::from_slice(&done.get_output().stdout).unwrap();
    assert!(report["resumed_ops"].as_u64().unwrap() > 0, "{report}");
    same_tree(&out, &target);
    assert!(!journal.exists() && !staged.exists());
}

#[test]
fn a_journal_of_another_package_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg, target) = full_package(dir.path(), 1);
    let out = dir.path().join("out");
    let (staged, journal) = romdelta_apply::staging_paths(&out);
    // A journal for a package of the same shape but another manifest.
    let file = romdelta_apply::PackageFile::open(&pkg).unwrap();
    let ops: u64 = file
        .manifest()
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.operations.len() as u64)
        .sum();
    let mut j = romdelta_format::journal::Journal::new([7; 32], [0; 32], ops);
    j.set_done(0);
    std::fs::write(&journal, j.encode()).unwrap();
    std::fs::create_dir(&staged).unwrap();
    let refused = romdelta()
        .args(["apply", "--insecure-no-verify", "-o"])
        .arg(&out)
        .arg(&pkg)
        .assert()
        .code(1);
    let err = String::from_utf8_lossy(&refused.get_output().stderr).into_owned();
    assert!(err.contains("belongs to another package"), "{err}");
    assert!(journal.exists() && !out.exists());
    // A damaged journal is refused too.
    let mut bytes = j.encode();
    bytes[20] ^= 1;
    std::fs::write(&journal, bytes).unwrap();
    romdelta()
        .args(["apply", "--insecure-no-verify", "-o"])
        .arg(&out)
        .arg(&pkg)
        .assert()
        .code(1)
        .stderr(predicates::str::contains("checksum"));
    // Removed as the message says, the apply starts over and succeeds.
    std::fs::remove_file(&journal).unwrap();
    std::fs::remove_dir_all(&staged).unwrap();
    romdelta()
        .args(["apply", "--insecure-no-verify", "-o"])
        .arg(&out)
        .arg(&pkg)
        .assert()
        .success();
    same_tree(&out, &target);
}

#[test]
fn an_in_place_apply_killed_at_random_moments_resumes_to_the_exact_target() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = romdelta_synth::rom_pair(23, 4);
    let (o, n) = (dir.path().join("old"), dir.path().join("new"));
    romdelta_synth::write_rom(&o, &old).unwrap();
    romdelta_synth::write_rom(&n, &new).unwrap();
    let pkg = dir.path().join("inplace.romdelta");
    romdelta()
        .args(["diff", "--in-place", "--level", "1", "-o"])
        .arg(&pkg)
        .arg(&o)
        .arg(&n)
        .assert()
        .success();
    // The device's images: the old build, updated where they are.
    let dev = dir.path().join("dev");
    romdelta_synth::write_rom(&dev, &old).unwrap();
    let (journal, _) = romdelta_apply::in_place_paths(&dev, false);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let (mut kills, mut kills_mid_update) = (0, 0);
    for _ in 0..30 {
        let mut child = Command::new(bin())
            .args([
                "apply",
                "--insecure-no-verify",
                "--threads",
                "2",
                "--in-place",
            ])
            .arg(&dev)
            .arg(&pkg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Half the kills at a random moment of the run (the first run
        // spends a while hashing the old images, before any write), half
        // at a random moment once the update is under way (its journal
        // exists), whatever the machine's load.
        let mid_update = rng.random_bool(0.5);
        let delay = Duration::from_millis(rng.random_range(0..60));
        if kill_when(&mut child, || !mid_update || journal.exists(), delay).is_none() {
            break;
        }
        kills += 1;
        kills_mid_update += journal.exists() as usize;
    }
    // The same command finishes the update, from wherever the last kill
    // left it (or, run after the update finished, finds nothing to do).
    let done = romdelta()
        .args(["apply", "--insecure-no-verify", "--json", "--in-place"])
        .arg(&dev)
        .arg(&pkg)
        .assert()
        .success();
    let report: serde_json::Value = serde_json::from_slice(&done.get_output().stdout).unwrap();
    eprintln!(
        "in place: killed {kills} times, {kills_mid_update} with the update under way; the last run resumed {} operations",
        report["resumed_ops"]
    );
    assert!(
        kills_mid_update >= 3,
        "only {kills_mid_update} kills mid-update"
    );
    same_tree(&dev, &n);
    assert!(!journal.exists());
}
