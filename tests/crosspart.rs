//! Reads across partitions (format version 5) on ROM directories of small
//! ext4 images: a file moved from system to product, and a new `odm` built
//! from files of system. Round trips are exact (A/B, streamed, resumed
//! after a cut stream, the recovery harness with power cuts), the package
//! is much smaller than one whose operations read only their own
//! partition, a package naming a source partition that does not exist is
//! refused before anything is written, and in-place packages read no other
//! partition.

use crate::common::{fast_opts, listing, romdelta};
use romdelta_format::{Manifest, Package};
use romdelta_recovery::{Device, Slots};
use romdelta_storage::sim::{CutMode, SimFs};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// Whether `mke2fs` runs here (CI sets ROMDELTA_REQUIRE_TOOLS=1 so a
/// missing tool fails the test instead of skipping it).
fn have_mke2fs() -> bool {
    let ok = Command::new("mke2fs").arg("-V").output().is_ok();
    if !ok && std::env::var_os("ROMDELTA_REQUIRE_TOOLS").is_some() {
        panic!("mke2fs is required (apt-get install e2fsprogs)");
    }
    if !ok {
        eprintln!("skipping: mke2fs not installed");
    }
    ok
}

/// A temporary working directory, or `None` (the test skipped) where
/// `mke2fs` does not run.
fn work() -> Option<tempfile::TempDir> {
    have_mke2fs().then(|| tempfile::tempdir().unwrap())
}

/// `len` bytes of file content: pseudo-random runs (as machine code and
/// compressed data are) between short text lines, from `seed`.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        let n = 200 + (next() % 1800) as usize;
        for _ in 0..n / 8 {
            v.extend_from_slice(&next().to_le_bytes());
        }
        v.extend_from_slice(format!("symbol_{:08x} = {}\n", next() as u32, v.len()).as_bytes());
    }
    v.truncate(len);
    v
}

/// `b` with a few bytes changed and a few inserted, as a rebuilt file has.
fn edited(b: &[u8], seed: u64) -> Vec<u8> {
    let mut v = b.to_vec();
    for k in 0..6u64 {
        let at = ((seed * 7919 + k * 104_729) as usize * 31) % v.len();
        v[at] ^= 0x5a;
    }
    let mid = v.len() / 2;
    v.splice(mid..mid, b"inserted by the new build".iter().copied());
    v
}

/// An ext4 image of `files` (name, bytes), `mib` MiB.
fn ext4(work: &Path, img: &Path, files: &[(&str, Vec<u8>)], mib: u64) {
    let tree = work.join(format!(
        "tree-{}",
        img.file_name().unwrap().to_string_lossy()
    ));
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(tree.join("lib")).unwrap();
    // Fixed times, so that the same files give the same image.
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_764_547_200);
    let times = std::fs::FileTimes::new().set_accessed(t).set_modified(t);
    for (name, bytes) in files {
        let f = tree.join("lib").join(name);
        std::fs::write(&f, bytes).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_times(times)
            .unwrap();
    }
    for d in [tree.join("lib"), tree.clone()] {
        std::fs::File::open(&d).unwrap().set_times(times).unwrap();
    }
    let out = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-O", "^has_journal"])
        .args([
            "-E",
            "root_owner=0:0,hash_seed=2f0c6d1e-8a3b-4c5d-9e7f-0a1b2c3d4e5f",
        ])
        .args(["-U", "6f1c2a0e-5b4d-4c3e-9a8b-7d6e5f4a3b2c"])
        .arg("-d")
        .arg(&tree)
        .arg(img)
        .arg(format!("{mib}M"))
        .env("E2FSPROGS_FAKE_TIME", "1764547200")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mke2fs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The files of one partition: (name, bytes).
type Files = Vec<(&'static str, Vec<u8>)>;

/// A ROM directory: ext4 images by partition, and a raw boot image.
fn rom(work: &Path, name: &str, parts: &[(&str, Files)], boot: &[u8]) -> PathBuf {
    let dir = work.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for (part, files) in parts {
        ext4(work, &dir.join(format!("{part}.img")), files, 6);
    }
    std::fs::write(dir.join("boot.img"), boot).unwrap();
    dir
}

/// The system files both builds start from.
fn system_files() -> Files {
    vec![
        ("libbase.so", content(1, 700_000)),
        ("libui.so", content(2, 420_000)),
        ("libmedia.so", content(3, 610_000)),
        ("libnet.so", content(4, 380_000)),
        ("libcam.so", content(5, 520_000)),
    ]
}

fn boot(seed: u64) -> Vec<u8> {
    let mut b = content(99, (1 << 20) + 1234);
    b[5000] = seed as u8;
    b
}

/// (old, new): libmedia.so moves from system to product unchanged,
/// libcam.so moves there with edits, libui.so is edited in place.
fn moved_pair(work: &Path) -> (PathBuf, PathBuf) {
    let sys = system_files();
    let product_old = vec![("overlay.apk", content(20, 200_000))];
    let vendor = vec![("libhw.so", content(30, 300_000))];
    let old = rom(
        work,
        "old",
        &[
            ("system", sys.clone()),
            ("product", product_old.clone()),
            ("vendor", vendor.clone()),
        ],
        &boot(1),
    );
    let new_sys = vec![
        sys[0].clone(),
        ("libui.so", edited(&sys[1].1, 1)),
        sys[3].clone(),
    ];
    let mut product = product_old;
    product.push(sys[2].clone());
    product.push(("libcam.so", edited(&sys[4].1, 2)));
    let new = rom(
        work,
        "new",
        &[
            ("system", new_sys),
            ("product", product),
            ("vendor", vendor),
        ],
        &boot(2),
    );
    (old, new)
}

/// (old, new): the new build adds `odm`, built from two system libraries
/// (one of them edited) and one new file.
fn odm_pair(work: &Path) -> (PathBuf, PathBuf) {
    let sys = system_files();
    let vendor = vec![("libhw.so", content(30, 300_000))];
    let old = rom(
        work,
        "old",
        &[("system", sys.clone()), ("vendor", vendor.clone())],
        &boot(1),
    );
    let odm = vec![
        sys[0].clone(),
        ("libnet.so", edited(&sys[3].1, 3)),
        ("odm.prop", content(40, 30_000)),
    ];
    let new = rom(
        work,
        "new",
        &[("system", sys), ("vendor", vendor), ("odm", odm)],
        &boot(2),
    );
    (old, new)
}

/// Runs `romdelta diff` with `args` from `old` to `new` into `out`,
/// which must succeed.
fn diff_to(args: &[&str], old: &Path, new: &Path, out: &Path) {
    romdelta()
        .arg("diff")
        .args(args)
        .arg(old)
        .arg(new)
        .arg("-o")
        .arg(out)
        .assert()
        .success();
}

/// Writes a package from `old` to `new` with the CLI; returns its path.
fn diff(work: &Path, old: &Path, new: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let out = work.join(name);
    diff_to(&[&["--level", "3"], extra].concat(), old, new, &out);
    out
}

/// Packages from `old` to `new` with and without reads across partitions
/// (`with.romdelta`, `without.romdelta`); the first must be less than a
/// quarter of the second. Returns both and the second's size.
fn with_and_without(w: &Path, old: &Path, new: &Path, what: &str) -> (PathBuf, PathBuf, u64) {
    let with = diff(w, old, new, "with.romdelta", &[]);
    let without = diff(w, old, new, "without.romdelta", &["--no-cross-partition"]);
    let (a, b) = (
        std::fs::metadata(&with).unwrap().len(),
        std::fs::metadata(&without).unwrap().len(),
    );
    eprintln!("{what}: {a} bytes with reads across partitions, {b} without");
    assert!(a * 4 < b, "{a} vs {b}");
    (with, without, b)
}

/// `romdelta apply` of the package file `pkg` to `source` into `out`.
fn apply(source: &Path, pkg: &Path, out: &Path) -> assert_cmd::assert::Assert {
    romdelta()
        .args(["apply", "--insecure-no-verify", "--source"])
        .arg(source)
        .arg(pkg)
        .arg("-o")
        .arg(out)
        .assert()
}

/// `romdelta apply -` (with `extra` arguments) of the package `bytes`,
/// read from a pipe, to `source` into `out`.
fn apply_stream(
    extra: &[&str],
    source: &Path,
    bytes: Vec<u8>,
    out: &Path,
) -> assert_cmd::assert::Assert {
    romdelta()
        .args(["apply", "-", "--insecure-no-verify"])
        .args(extra)
        .arg("--source")
        .arg(source)
        .arg("-o")
        .arg(out)
        .write_stdin(bytes)
        .assert()
}

/// Copies the files of directory `from` into a new directory `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

/// `romdelta inspect --json` of `pkg`.
fn inspect(pkg: &Path) -> serde_json::Value {
    let out = romdelta()
        .args(["inspect", "--json"])
        .arg(pkg)
        .assert()
        .success();
    serde_json::from_slice(&out.get_output().stdout).unwrap()
}

/// Every image of `want` is in `got` with the same bytes, and nothing else.
fn same_rom(got: &Path, want: &Path) {
    let names = |d: &Path| -> Vec<String> {
        listing(d)
            .into_iter()
            .filter(|n| n.ends_with(".img"))
            .collect()
    };
    assert_eq!(names(got), names(want));
    for n in names(want) {
        assert!(
            std::fs::read(got.join(&n)).unwrap() == std::fs::read(want.join(&n)).unwrap(),
            "{n} differs"
        );
    }
}

/// Applies `pkg` to `old` into a new directory `name`, from the file and
/// from a pipe, and checks both against `new`.
fn apply_both_ways(work: &Path, pkg: &Path, old: &Path, new: &Path) {
    let out = work.join("out-file");
    apply(old, pkg, &out).success();
    same_rom(&out, new);
    let out = work.join("out-stream");
    apply_stream(&["--threads", "2"], old, std::fs::read(pkg).unwrap(), &out).success();
    same_rom(&out, new);
    romdelta()
        .args(["verify", "--insecure-no-verify", "--source"])
        .arg(old)
        .arg(pkg)
        .assert()
        .success();
}

/// Partition `name` in `inspect --json`.
fn partition<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no partition {name}"))
}

/// The `reads_from` entries of partition `name` in `inspect --json`.
fn reads_from(v: &serde_json::Value, name: &str) -> Vec<serde_json::Value> {
    partition(v, name)["reads_from"].as_array().unwrap().clone()
}

#[test]
fn a_file_moved_from_system_to_product_costs_a_copy() {
    let Some(dir) = work() else { return };
    let w = dir.path();
    let (old, new) = moved_pair(w);
    // The moved files (1.1 MB of incompressible bytes) are no longer sent.
    let (with, without, b) = with_and_without(w, &old, &new, "file moved system -> product");
    let v = inspect(&with);
    assert_eq!(v["format_version"], 5);
    let reads = reads_from(&v, "product");
    assert_eq!(reads.len(), 1, "{reads:?}");
    assert_eq!(reads[0]["partition"], "system");
    // libmedia.so whole, and most of libcam.so, are copies from system.
    assert!(reads[0]["src_blocks"].as_u64().unwrap() >= (610_000 + 400_000) / 4096);
    assert!(reads_from(&v, "system").is_empty() && reads_from(&v, "boot").is_empty());
    let plain = inspect(&without);
    assert!(plain["format_version"].as_u64().unwrap() <= 4);
    assert!(reads_from(&plain, "product").is_empty());
    let text = romdelta().args(["inspect"]).arg(&with).assert().success();
    let text = String::from_utf8_lossy(&text.get_output().stdout).into_owned();
    assert!(text.contains("reads source system:"), "{text}");
    apply_both_ways(w, &with, &old, &new);
    std::fs::create_dir_all(w.join("x")).unwrap();
    apply_both_ways(&w.join("x"), &without, &old, &new);
    // payload.bin cannot read across partitions: its export encodes each
    // partition against its own source image, and still round-trips.
    // (Without the boot image, whose size is not a whole number of blocks.)
    let no_boot = |d: &Path, name: &str| {
        let to = w.join(name);
        std::fs::create_dir_all(&to).unwrap();
        for part in ["system", "product", "vendor"] {
            let f = format!("{part}.img");
            std::fs::copy(d.join(&f), to.join(&f)).unwrap();
        }
        to
    };
    let (old, new) = (no_boot(&old, "old-p"), no_boot(&new, "new-p"));
    let payload = w.join("payload.bin");
    diff_to(&["--format", "payload"], &old, &new, &payload);
    let out = w.join("payload-out");
    romdelta()
        .args(["payload", "apply"])
        .arg(&payload)
        .arg("--source")
        .arg(&old)
        .arg("-o")
        .arg(&out)
        .assert()
        .success();
    same_rom(&out, &new);
    let p = std::fs::metadata(&payload).unwrap().len();
    eprintln!("the same as payload.bin: {p} bytes");
    assert!(p > b / 2, "{p}");
}

#[test]
fn a_new_partition_built_from_system_files_reads_system() {
    let Some(dir) = work() else { return };
    let w = dir.path();
    let (old, new) = odm_pair(w);
    let (with, _, _) = with_and_without(w, &old, &new, "new odm from system files");
    let v = inspect(&with);
    let odm = partition(&v, "odm");
    assert!(odm["old"].is_null());
    let reads = reads_from(&v, "odm");
    assert_eq!(reads[0]["partition"], "system");
    // The edited library is encoded against its old version in system.
    let kinds: Vec<&str> = odm["by_kind"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"SOURCE_COPY"), "{kinds:?}");
    assert!(
        reads[0]["data_bytes"].as_u64().unwrap() > 0,
        "no changed region read system: {reads:?}"
    );
    apply_both_ways(w, &with, &old, &new);
}

#[test]
fn the_same_inputs_give_the_same_package_whatever_the_thread_count() {
    for pair in [odm_pair, moved_pair] {
        let Some(dir) = work() else { return };
        let w = dir.path();
        let (old, new) = pair(w);
        let one = diff(w, &old, &new, "one.romdelta", &["--threads", "1"]);
        let two = diff(w, &old, &new, "two.romdelta", &["--threads", "2"]);
        assert!(std::fs::read(one).unwrap() == std::fs::read(two).unwrap());
    }
}

#[test]
fn a_cut_stream_of_a_cross_partition_package_resumes() {
    let Some(dir) = work() else { return };
    let w = dir.path();
    let (old, new) = moved_pair(w);
    let pkg = diff(w, &old, &new, "p.romdelta", &[]);
    let bytes = std::fs::read(&pkg).unwrap();
    let out = w.join("out");
    apply_stream(&[], &old, bytes[..bytes.len() * 7 / 10].to_vec(), &out).code(1);
    assert!(!out.exists());
    let done = apply_stream(&["--json"], &old, bytes, &out).success();
    let report: serde_json::Value = serde_json::from_slice(&done.get_output().stdout).unwrap();
    assert!(report["resumed_ops"].as_u64().unwrap() > 0, "{report}");
    same_rom(&out, &new);
}

/// Points every read across partitions of `m` at partition `name`.
fn reads_moved_to(m: &mut Manifest, name: &str) {
    for p in &mut m.partitions {
        for s in &mut p.source_reads {
            s.partition = name.into();
        }
    }
}

/// `pkg` with its manifest changed by `f`, unsigned, at `out`.
fn rewritten(pkg: &Path, out: &Path, f: impl Fn(&mut Manifest)) {
    let bytes = std::fs::read(pkg).unwrap();
    let p = Package::parse(&bytes).unwrap();
    let mut m = p.manifest.clone();
    f(&mut m);
    let mb = m.encode();
    let mut v = Package::encode_prefix_bytes(5, &mb, m.data_len, &[]);
    v.extend_from_slice(p.data);
    std::fs::write(out, v).unwrap();
}

#[test]
fn a_package_naming_a_missing_source_partition_is_refused_before_writing() {
    let Some(dir) = work() else { return };
    let w = dir.path();
    let (old, new) = moved_pair(w);
    let pkg = diff(w, &old, &new, "p.romdelta", &[]);
    let bad = w.join("bad.romdelta");
    rewritten(&pkg, &bad, |m| reads_moved_to(m, "oem"));
    let out = w.join("out");
    let refused = |r: assert_cmd::assert::Assert| {
        let err = String::from_utf8_lossy(&r.failure().get_output().stderr).into_owned();
        assert!(
            err.contains("source partition oem, which the source build does not have"),
            "{err}"
        );
        assert!(!out.exists() && !romdelta_apply::staging_paths(&out).0.exists());
    };
    refused(apply(&old, &bad, &out));
    refused(apply_stream(&[], &old, std::fs::read(&bad).unwrap(), &out));
    // A package that is valid, applied to a source build without the
    // partition it reads: refused too, before writing. (The source
    // directory keeps system, so only the read across partitions is
    // missing: product's old image is system's under another name.)
    let src2 = w.join("old2");
    copy_dir(&old, &src2);
    let renamed = w.join("renamed.romdelta");
    rewritten(&pkg, &renamed, |m| {
        reads_moved_to(m, "system_ext");
        let sys = m.partitions.iter().find(|p| p.name == "system").unwrap();
        m.removed.push(romdelta_format::RemovedPartition {
            name: "system_ext".into(),
            old: sys.old.unwrap(),
        });
    });
    let out = w.join("out2");
    let r = apply(&src2, &renamed, &out).failure();
    let err = String::from_utf8_lossy(&r.get_output().stderr).into_owned();
    assert!(
        err.contains("reads source partition system_ext")
            && err.contains("the source has no partition system_ext"),
        "{err}"
    );
    assert!(!out.exists() && !romdelta_apply::staging_paths(&out).0.exists());
    // With the image there, under its name, the same package applies.
    std::fs::copy(old.join("system.img"), src2.join("system_ext.img")).unwrap();
    let out = w.join("out3");
    apply(&src2, &renamed, &out).success();
    same_rom(&out, &new);
}

#[test]
fn in_place_packages_read_only_their_own_partition() {
    let Some(dir) = work() else { return };
    let w = dir.path();
    let (old, new) = moved_pair(w);
    let pkg = diff(w, &old, &new, "p.romdelta", &["--in-place"]);
    let v = inspect(&pkg);
    assert_eq!(v["install"], "in-place");
    assert!(v["format_version"].as_u64().unwrap() <= 4);
    for p in v["partitions"].as_array().unwrap() {
        assert!(p["reads_from"].as_array().unwrap().is_empty());
    }
    let dev = w.join("dev");
    copy_dir(&old, &dev);
    romdelta()
        .args(["apply", "--insecure-no-verify", "--in-place"])
        .arg(&dev)
        .arg(&pkg)
        .assert()
        .success();
    same_rom(&dev, &new);
    // An A/B package's reads across partitions made into an in-place
    // package: refused as it is parsed.
    let ab = diff(w, &old, &new, "ab.romdelta", &[]);
    let bytes = std::fs::read(&ab).unwrap();
    let p = Package::parse(&bytes).unwrap();
    let mut m = p.manifest.clone();
    m.in_place = true;
    for p in &mut m.partitions {
        p.stages = vec![p.operations.len() as u64];
    }
    let e = m.check().unwrap_err().to_string();
    assert!(
        e.contains("an in-place package may only read each partition's own source"),
        "{e}"
    );
}

#[test]
fn power_cuts_during_a_cross_partition_install_leave_a_bootable_device() {
    let Some(dir) = work() else { return };
    let w = dir.path();
    let (old, new) = odm_pair(w);
    let pkg = diff(w, &old, &new, "p.romdelta", &[]);
    let read = |d: &Path| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "img"))
            .map(|p| {
                (
                    p.file_stem().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let (old_imgs, new_imgs) = (read(&old), read(&new));
    let dev = Path::new("/device");
    let base = SimFs::new();
    base.mkdir_all(Path::new("/"));
    Device::init_on(Arc::new(base.clone()), dev, &old, None, Slots::Ab).unwrap();
    let accept = |_: &[u8], _: &[romdelta_format::Signature]| Ok(());
    let install = |fs: &SimFs| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        pool.install(|| {
            let mut d = Device::open_on(Arc::new(fs.clone()), dev)?;
            d.checkpoint_every(romdelta_apply::CheckpointEvery {
                bytes: 64 << 10,
                interval: std::time::Duration::from_secs(3600),
            });
            d.install(&pkg, &accept, Default::default()).map(|_| ())
        })
    };
    let holds = |fs: &SimFs, imgs: &[(String, Vec<u8>)]| {
        let d = Device::open_on(Arc::new(fs.clone()), dev).unwrap();
        let slot = d.state().active;
        let mut listed: Vec<String> = d.state().partitions.clone();
        listed.sort();
        listed == imgs.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
            && imgs
                .iter()
                .all(|(n, b)| fs.get(&d.image_path(n, slot)).as_deref() == Some(b.as_slice()))
    };
    let clean = base.fork();
    let before = clean.points();
    install(&clean).unwrap();
    assert!(holds(&clean, &new_imgs));
    let total = clean.points() - before;
    let (mut old_seen, mut new_seen) = (0, 0);
    for k in 1..=24u64 {
        let n = 1 + k * (total - 1) / 25;
        for mode in [CutMode::Lost, CutMode::Torn(n)] {
            let fs = base.fork();
            fs.cut_power_at(n);
            assert!(install(&fs).is_err(), "point {n}: not cut");
            fs.reboot(mode);
            if holds(&fs, &new_imgs) {
                new_seen += 1;
                continue;
            }
            assert!(holds(&fs, &old_imgs), "point {n} {mode:?}: neither build");
            old_seen += 1;
            install(&fs).unwrap_or_else(|e| panic!("point {n}: resume: {e}"));
            assert!(holds(&fs, &new_imgs), "point {n}: after resume");
        }
    }
    eprintln!("{total} points, 48 cuts: {old_seen} booted the old build and resumed, {new_seen} the new one");
    assert!(old_seen > 0);
}

/// The fuzz seeds with reads across partitions
/// (`fuzz/corpus/{manifest_decode,package_parse}/seed-cross-partition`),
/// made from small raw images; written anew with
/// `ROMDELTA_WRITE_FUZZ_SEEDS=1`, else checked.
#[test]
fn cross_partition_fuzz_seeds_are_valid_version_5_inputs() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let paths = [
        corpus.join("manifest_decode/seed-cross-partition"),
        corpus.join("package_parse/seed-cross-partition"),
    ];
    if std::env::var_os("ROMDELTA_WRITE_FUZZ_SEEDS").is_some() {
        let dir = tempfile::tempdir().unwrap();
        let sys = content(7, 16 * 4096);
        let mut sys2 = sys.clone();
        sys2[100] ^= 1;
        // vendor: four blocks of system, and an edited fifth.
        let mut vnd = sys[4 * 4096..8 * 4096].to_vec();
        vnd.extend(edited(&sys[9 * 4096..10 * 4096], 1));
        let write = |name: &str, parts: &[(&str, &[u8])]| {
            let d = dir.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            for (p, b) in parts {
                std::fs::write(d.join(format!("{p}.img")), b).unwrap();
            }
            romdelta_rom::Rom::open(&d).unwrap()
        };
        let old = write("old", &[("system", &sys)]);
        let new = write("new", &[("system", &sys2), ("vendor", &vnd)]);
        let out = dir.path().join("p.romdelta");
        romdelta_diff::write_package(Some(&old), &new, &fast_opts(), &out, &|_| {}).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        let p = Package::parse(&bytes).unwrap();
        std::fs::write(&paths[0], p.manifest_bytes).unwrap();
        std::fs::write(&paths[1], &bytes).unwrap();
    }
    let m = Manifest::decode(&std::fs::read(&paths[0]).unwrap()).unwrap();
    let bytes = std::fs::read(&paths[1]).unwrap();
    let p = Package::parse(&bytes).unwrap();
    assert_eq!(p.manifest, m);
    assert_eq!(p.header.version, 5);
    let vendor = m.partitions.iter().find(|p| p.name == "vendor").unwrap();
    assert!(
        vendor.old.is_none() && vendor.source_reads.len() >= 2,
        "{vendor:?}"
    );
}
