//! Tests of the measuring, the formatting and the harness's control flow
//! (with stand-in tools, so they need no peer installed).

use crate::measure::{self, Exit};
use crate::report::thousands;
use crate::*;
use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;
use std::time::Duration;

const ALLOC_ENV: &str = "ROMDELTA_BENCH_ALLOC_CHILD";

/// Not a test of its own: `child_rss_and_time_are_measured` runs it as a
/// child that touches 64 MiB and sleeps a little.
#[test]
#[ignore = "run as a child by child_rss_and_time_are_measured"]
fn alloc_child() {
    if std::env::var_os(ALLOC_ENV).is_some() {
        let v = vec![1u8; 64 << 20];
        std::hint::black_box(&v);
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn alloc_child_command() -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        "tests::alloc_child",
        "--ignored",
        "--test-threads=1",
    ])
    .env(ALLOC_ENV, "1")
    .stdout(std::process::Stdio::null());
    c
}

#[test]
fn child_rss_and_time_are_measured() {
    let m = measure::run(alloc_child_command(), Duration::from_secs(60)).unwrap();
    assert_eq!(m.exit, Exit::Code(0));
    assert!(m.peak_rss_bytes >= 50_000_000, "{m:?}");
    assert!(m.wall >= Duration::from_millis(200), "{m:?}");

    // Through a shell that waits for it, as an apply followed by sync runs.
    let inner = alloc_child_command();
    let mut sh = Command::new("sh");
    sh.args(["-c", "\"$@\" && sync", "sh"])
        .arg(inner.get_program())
        .args(inner.get_args())
        .env(ALLOC_ENV, "1")
        .stdout(std::process::Stdio::null());
    let m = measure::run(sh, Duration::from_secs(60)).unwrap();
    assert_eq!(m.exit, Exit::Code(0));
    assert!(m.peak_rss_bytes >= 50_000_000, "{m:?}");

    // A small child is small.
    let m = measure::run(Command::new("true"), Duration::from_secs(60)).unwrap();
    assert!(m.exit.success());
    assert!(m.peak_rss_bytes < 20_000_000, "{m:?}");
}

#[test]
fn time_limit_kills_the_job_and_its_children() {
    let mut c = Command::new("sh");
    c.args(["-c", "sleep 30; true"]);
    let m = measure::run(c, Duration::from_millis(300)).unwrap();
    assert_eq!(m.exit, Exit::TimedOut);
    assert!(m.wall < Duration::from_secs(5), "{m:?}");

    let mut c = Command::new("sh");
    c.args(["-c", "exit 3"]);
    assert_eq!(
        measure::run(c, Duration::from_secs(10)).unwrap().exit,
        Exit::Code(3)
    );
}

#[test]
fn numbers_are_formatted_for_people() {
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(1000), "1,000");
    assert_eq!(thousands(24_093_797), "24,093,797");
    assert_eq!(thousands(123_456), "123,456");
    assert_eq!(human_bytes(55_000_000), "55.0 MB");
    assert_eq!(human_bytes(2_820_000_000), "2.82 GB");
    assert_eq!(human_bytes(512), "512 B");
    assert_eq!(human_bytes(268_435_456), "268 MB");
}

#[test]
fn peers_parse() {
    assert_eq!(Tool::parse_list("all").unwrap(), Tool::ALL.to_vec());
    assert_eq!(
        Tool::parse_list("zstd19, romdelta,xdelta3,zstd19").unwrap(),
        vec![Tool::Romdelta, Tool::Xdelta3, Tool::Zstd19]
    );
    assert_eq!(
        Tool::parse_list("hdiffz,hdiffpatch").unwrap(),
        vec![Tool::HDiffPatch, Tool::Hdiffz]
    );
    assert!(Tool::parse_list("all").unwrap().contains(&Tool::Hdiffz));
    assert!(Tool::parse_list("bsdiff,nope").is_err());
    assert!(Tool::parse_list("").is_err());
}

fn sample_report() -> Report {
    let cfg = Config::new("romdelta".into(), "a.img".into(), "b.img".into());
    let mut me = Row::new(Tool::Romdelta, 2, Input::Full, 1_000_000_000);
    me.status = Status::Ok;
    me.set_patch_bytes(20_000_000);
    me.diff_wall_s = Some(100.0);
    me.diff_peak_rss_bytes = Some(2_000_000_000);
    me.apply_wall_s = Some(3.0);
    me.apply_peak_rss_bytes = Some(50_000_000);
    me.exact = Some(true);
    let mut xd = Row::new(Tool::Xdelta3, 2, Input::Full, 1_000_000_000);
    xd.status = Status::Ok;
    xd.set_patch_bytes(40_000_000);
    xd.diff_wall_s = Some(50.0);
    xd.diff_peak_rss_bytes = Some(1_000_000_000);
    xd.apply_wall_s = Some(6.0);
    xd.apply_peak_rss_bytes = Some(1_000_000_000);
    xd.exact = Some(true);
    let mut bs = Row::new(Tool::Bsdiff, 2, Input::Full, 1_000_000_000);
    bs.status = Status::TimedOut;
    bs.diff_wall_s = Some(3600.0);
    bs.note = "diff timed out after 3600 s".into();
    let mut hd = Row::new(Tool::HDiffPatch, 2, Input::Full, 1_000_000_000);
    hd.status = Status::Missing;
    hd.note = format!("{MISSING_NOTE} (python module hdiffpatch not found)");
    let rows = vec![me, bs, xd, hd];
    Report::new(
        &cfg,
        RomInfo::new("a.img".as_ref(), 1_000_000_000, false),
        RomInfo::new("b.img".as_ref(), 1_000_000_000, false),
        None,
        true,
        rows,
    )
}

#[test]
fn markdown_and_json_carry_the_rows_and_ratios() {
    let r = sample_report();
    assert_eq!(r.ratios.len(), 1);
    assert_eq!(r.ratios[0].peer, Tool::Xdelta3);
    assert!((r.ratios[0].size - 0.5).abs() < 1e-9);
    assert!((r.ratios[0].diff_time - 2.0).abs() < 1e-9);
    assert!((r.ratios[0].apply_time - 0.5).abs() < 1e-9);

    let md = r.to_markdown();
    assert!(md.contains(
        "| tool | input | patch bytes | % of target | diff wall s | diff peak RSS | apply wall s | apply peak RSS | exact | note |"
    ));
    assert!(md.contains(
        "| romdelta `--threads 2` | full pair | 20,000,000 | 2.00% | 100.0 | 2.00 GB | 3.00 | 50.0 MB | yes |  |"
    ), "{md}");
    assert!(md.contains("| bsdiff 4.3 (Debian) | full pair | – | – | 3600.0 | – | – | – | – | diff timed out after 3600 s |"), "{md}");
    assert!(md.contains("missing: install with scripts/install-peers.sh"));
    assert!(
        md.contains("- vs xdelta3 (full pair): size 0.50 ×, diff time 2.00 ×, apply time 0.50 ×")
    );
    assert!(md.contains("page cache dropped"));

    let json = r.to_json();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["schema"], 1);
    assert_eq!(v["rows"][0]["tool"], "romdelta");
    assert_eq!(v["rows"][0]["input"], "full");
    assert_eq!(v["rows"][0]["status"], "ok");
    assert_eq!(v["rows"][0]["patch_bytes"], 20_000_000);
    assert_eq!(v["rows"][1]["status"], "timed_out");
    assert!(v["rows"][1]["patch_bytes"].is_null());
    assert_eq!(v["rows"][3]["status"], "missing");
    assert_eq!(v["ratios"][0]["peer"], "xdelta3");
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back.to_markdown(), md);
}

#[test]
fn chart_is_drawn_with_and_without_a_font() {
    let dir = tempfile::tempdir().unwrap();
    let r = sample_report();
    let bare = dir.path().join("bare.png");
    chart::write(&r, &bare, None).unwrap();
    assert!(std::fs::read(&bare).unwrap().starts_with(b"\x89PNG"));
    if let Some(font) = chart::find_font() {
        let labelled = dir.path().join("labelled.png");
        chart::write(&r, &labelled, Some(&font)).unwrap();
        assert!(std::fs::read(&labelled).unwrap().starts_with(b"\x89PNG"));
    }
}

fn script(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A stand-in for romdelta: `diff S T -o P` copies T to P, `apply P
/// --source S -o O` copies P to O.
const FAKE_ROMDELTA: &str = r#"#!/bin/sh
case "$1" in
  diff) cp "$3" "$5" ;;
  apply) cp "$2" "$6" ;;
  *) exit 2 ;;
esac
"#;

/// A stand-in for python3 that has the module but never finishes a job.
const SLOW_PYTHON: &str = "#!/bin/sh\n[ \"$1\" = -c ] && exit 0\nexec sleep 30\n";

#[test]
fn unfinished_peers_rerun_on_prefixes_and_missing_ones_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = (d.join("a.img"), d.join("b.img"));
    let data: Vec<u8> = (0..192 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&a, &data).unwrap();
    let mut changed = data.clone();
    changed[100_000..100_100].fill(9);
    std::fs::write(&b, &changed).unwrap();
    script(&d.join("romdelta"), FAKE_ROMDELTA);
    script(&d.join("python"), SLOW_PYTHON);

    let mut cfg = Config::new(d.join("romdelta"), a.clone(), b.clone());
    cfg.tools = vec![Tool::Romdelta, Tool::HDiffPatch];
    cfg.out_dir = d.join("out");
    cfg.timeout = Duration::from_millis(500);
    cfg.drop_caches = false;
    cfg.prefix_bytes = 64 * 1024;
    cfg.python = d.join("python").display().to_string();
    let mut lines = Vec::new();
    let r = run(&cfg, &mut |l| lines.push(l.to_string())).unwrap();
    let got: Vec<_> = r.rows.iter().map(|r| (r.tool, r.input, r.status)).collect();
    assert_eq!(
        got,
        [
            (Tool::Romdelta, Input::Full, Status::Ok),
            (Tool::HDiffPatch, Input::Full, Status::TimedOut),
            (Tool::Romdelta, Input::Prefix, Status::Ok),
            (Tool::HDiffPatch, Input::Prefix, Status::TimedOut),
        ]
    );
    assert_eq!(r.rows[0].exact, Some(true));
    assert_eq!(r.rows[0].patch_bytes, Some(192 * 1024));
    assert_eq!(r.rows[2].exact, Some(true));
    assert_eq!(r.rows[2].patch_bytes, Some(64 * 1024));
    assert_eq!(r.prefix_bytes, Some(64 * 1024));
    assert!(!r.caches_dropped);
    assert!(r.rows[1].note.contains("timed out"), "{:?}", r.rows[1]);
    assert!(!cfg.out_dir.join("work").exists(), "temporary files left");
    assert!(lines.iter().any(|l| l.contains("did not finish")));

    // Missing: no interpreter, so a missing row and no rerun.
    cfg.python = d.join("no-such-python").display().to_string();
    let r = run(&cfg, &mut |_| {}).unwrap();
    assert_eq!(r.rows.len(), 2);
    assert_eq!(r.rows[1].status, Status::Missing);
    assert!(r.rows[1].note.starts_with(MISSING_NOTE));
    let r = write_outputs(r, &cfg.out_dir).unwrap();
    for f in ["results.md", "results.json", "chart.png"] {
        assert!(cfg.out_dir.join(f).is_file(), "{f}");
    }
    let md = std::fs::read_to_string(cfg.out_dir.join("results.md")).unwrap();
    assert_eq!(md, r.to_markdown());
}

#[test]
fn native_hdiffpatch_commands_are_those_its_users_run() {
    let p = tools::JobPaths {
        source: "/s/old.img".as_ref(),
        target: "/s/new.img".as_ref(),
        patch: "/w/hdiffz-full.patch".as_ref(),
        output: "/w/hdiffz-full.out".as_ref(),
        source_bytes: 1 << 20,
    };
    let s = tools::ToolSettings {
        romdelta: "romdelta".as_ref(),
        threads: 2,
        romdelta_args: &[],
        python: "python3",
        hdiffpatch_driver: "driver.py".as_ref(),
        hdiffz: "/c/bin/hdiffz".as_ref(),
        hpatchz: "/c/bin/hpatchz".as_ref(),
    };
    assert_eq!(
        tools::describe(&Tool::Hdiffz.diff_command(&p, &s)),
        "/c/bin/hdiffz -m-6 -SD -c-zstd-21-24 -p-2 -f /s/old.img /s/new.img /w/hdiffz-full.patch"
    );
    assert_eq!(
        tools::describe(&Tool::Hdiffz.apply_command(&p, &s)),
        "sh -c '\"$@\" && sync' sh /c/bin/hpatchz -f /s/old.img /w/hdiffz-full.patch /w/hdiffz-full.out"
    );
    assert_eq!(
        Tool::Hdiffz.label(2),
        "HDiffPatch native (`hdiffz -m-6 -SD -c-zstd-21-24 -p-2`)"
    );
    assert_ne!(Tool::Hdiffz.label(2), Tool::HDiffPatch.label(2));
    if let Some(cache) = tools::hdiffz_cache_bin() {
        assert!(cache.ends_with("romdelta-peers/hdiffpatch-2.6.0/bin"));
        assert_eq!(tools::hdiffz_dirs().last(), Some(&cache));
    }
}

/// A stand-in for `hdiffz -m-6 -SD -c-zstd-21-24 -p-2 -f OLD NEW PATCH`:
/// the patch is a copy of NEW; any other options fail.
const FAKE_HDIFFZ: &str = r#"#!/bin/sh
[ "$1 $2 $3 $4 $5" = "-m-6 -SD -c-zstd-21-24 -p-2 -f" ] || exit 2
cp "$7" "$8"
"#;

/// A stand-in for `hpatchz -f OLD PATCH OUT`: the output is a copy of PATCH.
const FAKE_HPATCHZ: &str = "#!/bin/sh\n[ \"$1\" = -f ] || exit 2\ncp \"$3\" \"$4\"\n";

#[test]
fn native_hdiffpatch_is_found_in_its_dirs_or_reported_missing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = (d.join("a.img"), d.join("b.img"));
    std::fs::write(&a, vec![5u8; 100_000]).unwrap();
    std::fs::write(&b, vec![6u8; 90_000]).unwrap();
    script(&d.join("romdelta"), FAKE_ROMDELTA);
    let (empty, bin, half) = (d.join("empty"), d.join("bin"), d.join("half"));
    for sub in [&empty, &bin, &half] {
        std::fs::create_dir(sub).unwrap();
    }
    script(&bin.join("hdiffz"), FAKE_HDIFFZ);
    script(&bin.join("hpatchz"), FAKE_HPATCHZ);
    script(&half.join("hdiffz"), FAKE_HDIFFZ);

    let mut cfg = Config::new(d.join("romdelta"), a, b);
    cfg.tools = vec![Tool::Hdiffz];
    cfg.out_dir = d.join("out");
    cfg.timeout = Duration::from_secs(60);
    cfg.drop_caches = false;
    // Searched in order, past a directory without them.
    cfg.hdiffz_dirs = vec![empty.clone(), bin.clone()];
    let r = run(&cfg, &mut |_| {}).unwrap();
    assert_eq!(r.rows.len(), 2);
    let row = &r.rows[1];
    assert_eq!(
        (row.tool, row.status),
        (Tool::Hdiffz, Status::Ok),
        "{row:?}"
    );
    assert_eq!(row.exact, Some(true));
    assert_eq!(row.patch_bytes, Some(90_000));
    let diff = row.diff_command.as_deref().unwrap();
    assert!(
        diff.starts_with(&format!("{} -m-6 -SD", bin.join("hdiffz").display())),
        "{diff}"
    );
    let apply = row.apply_command.as_deref().unwrap();
    assert!(
        apply.contains(&format!("{} -f ", bin.join("hpatchz").display())),
        "{apply}"
    );
    assert!(r.to_markdown().contains(
        "| HDiffPatch native (`hdiffz -m-6 -SD -c-zstd-21-24 -p-2`) | full pair | 90,000 |"
    ));

    // hpatchz missing: a missing row saying which, and no rerun.
    cfg.hdiffz_dirs = vec![half.clone()];
    let r = run(&cfg, &mut |_| {}).unwrap();
    assert_eq!(r.rows.len(), 2);
    assert_eq!(r.rows[1].status, Status::Missing);
    assert!(r.rows[1].note.starts_with(MISSING_NOTE), "{:?}", r.rows[1]);
    assert!(
        r.rows[1].note.contains("(hpatchz not found in "),
        "{:?}",
        r.rows[1]
    );

    // Neither anywhere.
    cfg.hdiffz_dirs = vec![empty];
    let r = run(&cfg, &mut |_| {}).unwrap();
    assert_eq!(r.rows[1].status, Status::Missing);
    assert!(
        r.rows[1].note.contains("hdiffz, hpatchz not found"),
        "{:?}",
        r.rows[1]
    );
    assert!(r
        .to_markdown()
        .contains("| HDiffPatch native (`hdiffz -m-6 -SD -c-zstd-21-24 -p-2`) | full pair | – |"));
}

#[test]
fn a_package_made_under_apply_memory_is_applied_with_it() {
    let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(tools::apply_memory(&args(&["--level", "19"])), None);
    assert_eq!(
        tools::apply_memory(&args(&["--apply-memory", "512"])),
        Some("512")
    );
    assert_eq!(
        tools::apply_memory(&args(&["--apply-memory=300", "-x"])),
        Some("300")
    );
}
