//! `romdelta bench` on a tiny pair: every row is measured or reported.

use crate::common::romdelta;
use rand::{RngCore as _, SeedableRng as _};

/// A 2 MiB image and a copy with a few changed and shifted stretches.
fn tiny_pair(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut a = vec![0u8; 2 << 20];
    rng.fill_bytes(&mut a[..1 << 20]);
    let mut b = a.clone();
    rng.fill_bytes(&mut b[300_000..310_000]);
    b.copy_within(500_000..600_000, 520_000);
    let (pa, pb) = (dir.join("a.img"), dir.join("b.img"));
    std::fs::write(&pa, &a).unwrap();
    std::fs::write(&pb, &b).unwrap();
    (pa, pb)
}

fn results(out: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(out.join("results.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn bench_measures_romdelta_and_reports_every_peer() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = tiny_pair(dir.path());
    let out = dir.path().join("out");
    let run = romdelta()
        .arg("bench")
        .args([&a, &b])
        .args(["--peers", "romdelta,xdelta3,zstd19", "--timeout", "60"])
        .args(["--romdelta-args", "--level 3", "--keep-caches", "--out"])
        .arg(&out)
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&run.get_output().stdout).into_owned();
    assert!(
        stdout.contains("| tool | input | patch bytes |"),
        "{stdout}"
    );
    for f in ["results.md", "results.json", "chart.png"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    assert!(!out.join("work").exists(), "temporary files left behind");

    let v = results(&out);
    assert_eq!(v["schema"], 1);
    assert_eq!(v["caches_dropped"], false);
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    let me = &rows[0];
    assert_eq!(me["tool"], "romdelta");
    assert_eq!(me["input"], "full");
    assert_eq!(me["status"], "ok", "{me}");
    assert_eq!(me["exact"], true);
    assert!(me["patch_bytes"].as_u64().unwrap() < 1 << 20);
    assert!(me["diff_peak_rss_bytes"].as_u64().unwrap() > 0);
    assert!(me["apply_wall_s"].as_f64().unwrap() > 0.0);
    // A peer is measured and exact, or reported as missing; never dropped.
    for (row, name) in rows[1..].iter().zip(["xdelta3", "zstd19"]) {
        assert_eq!(row["tool"], name);
        match row["status"].as_str().unwrap() {
            "ok" => assert_eq!(row["exact"], true, "{row}"),
            "missing" => assert!(
                row["note"]
                    .as_str()
                    .unwrap()
                    .starts_with("missing: install with scripts/install-peers.sh"),
                "{row}"
            ),
            other => panic!("{name}: {other}: {row}"),
        }
    }
}

#[test]
fn bench_runs_romdelta_alone_on_rom_directories() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = tiny_pair(dir.path());
    let (old, new) = (dir.path().join("old"), dir.path().join("new"));
    for (d, img) in [(&old, &a), (&new, &b)] {
        std::fs::create_dir(d).unwrap();
        std::fs::copy(img, d.join("system.img")).unwrap();
        std::fs::write(d.join("boot.img"), vec![3u8; 64 << 10]).unwrap();
    }
    let out = dir.path().join("out");
    let run = romdelta()
        .arg("bench")
        .args([&old, &new])
        .args(["--peers", "xdelta3", "--romdelta-args", "--level 3"])
        .args(["--keep-caches", "--json", "--out"])
        .arg(&out)
        .assert()
        .success();
    let printed: serde_json::Value = serde_json::from_slice(&run.get_output().stdout).unwrap();
    let v = results(&out);
    assert_eq!(printed["rows"], v["rows"]);
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows[0]["tool"], "romdelta");
    assert_eq!(rows[0]["exact"], true, "{}", rows[0]);
    assert_eq!(rows[1]["tool"], "xdelta3");
    assert!(
        ["not_applicable", "missing"].contains(&rows[1]["status"].as_str().unwrap()),
        "{}",
        rows[1]
    );
}

/// Whether a missing peer fails the test: CI sets ROMDELTA_REQUIRE_TOOLS=1
/// after `scripts/install-peers.sh hdiffz`.
fn require_tools() -> bool {
    std::env::var_os("ROMDELTA_REQUIRE_TOOLS").is_some()
}

/// `romdelta bench --peers hdiffz` on the tiny pair, with `env` added to
/// the environment; returns the hdiffz row.
fn hdiffz_row(dir: &std::path::Path, env: &[(&str, std::ffi::OsString)]) -> serde_json::Value {
    let (a, b) = tiny_pair(dir);
    let out = dir.join("out");
    let mut cmd = romdelta();
    cmd.arg("bench")
        .args([&a, &b])
        .args(["--peers", "hdiffz", "--timeout", "120"])
        .args(["--romdelta-args", "--level 3", "--keep-caches", "--out"])
        .arg(&out);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.assert().success();
    let v = results(&out);
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["tool"], "romdelta");
    assert_eq!(rows[1]["tool"], "hdiffz");
    assert_eq!(
        rows[1]["label"],
        "HDiffPatch native (`hdiffz -m-6 -SD -c-zstd-21-24 -p-2`)"
    );
    rows[1].clone()
}

#[test]
fn bench_runs_native_hdiffpatch_exactly_when_installed() {
    let dir = tempfile::tempdir().unwrap();
    let row = hdiffz_row(dir.path(), &[]);
    if row["status"] == "missing" {
        let note = row["note"].as_str().unwrap();
        assert!(
            !require_tools(),
            "hdiffz/hpatchz are required (scripts/install-peers.sh hdiffz): {note}"
        );
        eprintln!("skipping: {note}");
        return;
    }
    assert_eq!(row["status"], "ok", "{row}");
    assert_eq!(row["exact"], true, "{row}");
    assert!(row["patch_bytes"].as_u64().unwrap() < 1 << 20, "{row}");
    let diff = row["diff_command"].as_str().unwrap();
    assert!(
        diff.contains("hdiffz -m-6 -SD -c-zstd-21-24 -p-2 -f "),
        "{diff}"
    );
    let apply = row["apply_command"].as_str().unwrap();
    assert!(apply.contains("hpatchz -f "), "{apply}");
}

#[test]
fn bench_reports_native_hdiffpatch_missing_when_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    // PATH without any directory that holds hdiffz or hpatchz, and a cache
    // directory where scripts/install-peers.sh has built nothing.
    let path = std::env::var_os("PATH").unwrap_or_default();
    let kept: Vec<_> = std::env::split_paths(&path)
        .filter(|d| !d.join("hdiffz").exists() && !d.join("hpatchz").exists())
        .collect();
    let env = [
        ("PATH", std::env::join_paths(kept).unwrap()),
        ("XDG_CACHE_HOME", cache.clone().into_os_string()),
    ];
    let row = hdiffz_row(dir.path(), &env);
    assert_eq!(row["status"], "missing", "{row}");
    let note = row["note"].as_str().unwrap();
    assert!(
        note.starts_with("missing: install with scripts/install-peers.sh"),
        "{note}"
    );
    let bin = cache.join("romdelta-peers/hdiffpatch-2.6.0/bin");
    assert!(
        note.contains(&format!(
            "hdiffz, hpatchz not found on PATH or in {}",
            bin.display()
        )),
        "{note}"
    );
}
