//! Defects found by trying to break apply: hostile manifests and the
//! memory they may take, the bytes that are verified being the bytes that
//! are used, a package file cut short while it is applied, a sparse apply
//! killed at any point, and update rules that cannot be checked.

use crate::common::romdelta;
use romdelta_format::{
    BuildInfo, Extent, Manifest, OpKind, Operation, Package, PackageKind, PartitionInfo,
    PartitionUpdate,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::time::Duration;

/// Counts the bytes the current thread holds, and the most it held, while
/// [`peak_while`] runs on it; other threads are not counted.
struct Counting;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static NOW: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn counted(add: usize, sub: usize) {
    let _ = ON.try_with(|on| {
        if on.get() {
            NOW.with(|n| {
                let v = (n.get() + add).saturating_sub(sub);
                n.set(v);
                PEAK.with(|p| p.set(p.get().max(v)));
            });
        }
    });
}

// SAFETY: every call is passed on to the system allocator unchanged; the
// counters are thread-local cells that never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        counted(l.size(), 0);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        counted(0, l.size());
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        counted(l.size(), 0);
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // Counted as the new block taken before the old one is given back.
        counted(new, 0);
        let r = unsafe { System.realloc(p, l, new) };
        counted(0, l.size());
        r
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns the most bytes this thread held above what it held
/// when `f` started.
fn peak_while(f: impl FnOnce()) -> usize {
    NOW.with(|n| n.set(0));
    PEAK.with(|p| p.set(0));
    ON.with(|on| on.set(true));
    f();
    ON.with(|on| on.set(false));
    PEAK.with(|p| p.get())
}

fn zero_op(start: u64) -> Operation {
    Operation {
        kind: OpKind::Zero,
        src_extents: vec![],
        dst_extents: vec![Extent::new(start, 1)],
        data_offset: 0,
        data_length: 0,
        data_sha256: [0; 32],
        src_sha256: [0; 32],
    }
}

/// A valid full manifest of one partition and one ZERO operation of one
/// block, named for `device`, and its encoding split around the operation:
/// (bytes before the operation count, the operation's bytes, the bytes
/// after the operation).
fn one_zero_op(in_place: bool, device: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let m = Manifest {
        kind: PackageKind::Full,
        in_place,
        target_build: BuildInfo {
            device: device.into(),
            ..BuildInfo::default()
        },
        source_build: None,
        data_len: 0,
        partitions: vec![PartitionUpdate {
            name: "system".into(),
            old: None,
            new: PartitionInfo {
                size: 4096,
                sha256: [1; 32],
            },
            operations: vec![zero_op(0)],
            stages: if in_place { vec![1] } else { vec![] },
            source_reads: vec![],
        }],
        removed: vec![],
        codecs: vec![],
        apply_memory_mib: 0,
    };
    let bytes = m.encode();
    Manifest::decode(&bytes).expect("the base manifest is valid");
    // ... n_ops = 1, the operation (kind 0, no source extents, one
    // destination extent 0+1), [stage count 1, stage of 1 operation], no
    // removed partition.
    let op = [0u8, 0, 1, 0, 1];
    let tail: &[u8] = if in_place { &[1, 1, 0] } else { &[0] };
    let n = bytes.len();
    let op_at = n - tail.len() - op.len();
    assert_eq!(&bytes[op_at..], [&op[..], tail].concat());
    assert_eq!(bytes[op_at - 1], 1, "the operation count");
    (bytes[..op_at - 1].to_vec(), op.to_vec(), tail.to_vec())
}

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// Hostile manifests of about `len` bytes, each with a label:
/// - as many valid one-block ZERO operations as fit (all on block 0);
/// - an operation count as large as the bytes allow, followed by bytes
///   that are no operation;
/// - one operation with as many destination extents as fit;
/// - an in-place manifest whose stage count is as large as the bytes allow.
fn hostile_manifests(len: usize) -> Vec<(&'static str, Vec<u8>)> {
    let (head, op, tail) = one_zero_op(false, "");
    let n = (len / op.len()) as u64;
    let mut many_ops = head.clone();
    many_ops.extend(varint(n));
    for _ in 0..n {
        many_ops.extend(&op);
    }
    many_ops.extend(&tail);

    let mut claimed = head.clone();
    claimed.extend(varint((len / 5) as u64));
    claimed.extend(vec![0xffu8; len]);

    let extents = (len / 2) as u64;
    let mut many_extents = head.clone();
    many_extents.extend(varint(1));
    many_extents.extend([0, 0]);
    many_extents.extend(varint(extents));
    for _ in 0..extents {
        many_extents.extend([0, 1]);
    }
    many_extents.extend(&tail);

    let (head, op, _) = one_zero_op(true, "");
    let mut stages = head;
    stages.extend(varint(1));
    stages.extend(&op);
    stages.extend(varint(len as u64));
    stages.extend(vec![1u8; len]);
    stages.push(0);
    vec![
        ("many operations", many_ops),
        ("a claimed operation count", claimed),
        ("many extents", many_extents),
        ("many stages", stages),
    ]
}

/// Bytes of memory decoding may take per byte of manifest: a one-block ZERO
/// operation takes 5 bytes and becomes a 136-byte `Operation` with a
/// 16-byte extent list, kept while the manifest's rules sort 24 bytes per
/// destination extent.
const MAX_BYTES_PER_MANIFEST_BYTE: usize = 64;

#[test]
fn decoding_a_hostile_manifest_takes_memory_in_proportion_to_its_bytes() {
    for (label, bytes) in hostile_manifests(4 << 20) {
        let mut result = None;
        let peak = peak_while(|| result = Some(Manifest::decode(&bytes).map(|_| ())));
        let err = result.unwrap().expect_err(label).to_string();
        let ratio = peak as f64 / bytes.len() as f64;
        eprintln!(
            "{label}: {} bytes, peak {peak} ({ratio:.1} x): {err}",
            bytes.len()
        );
        assert!(
            peak <= MAX_BYTES_PER_MANIFEST_BYTE * bytes.len(),
            "{label}: decoding {} bytes took {peak} bytes ({ratio:.1} x)",
            bytes.len()
        );
    }
}

/// The reproduction of the issue: a 64 MiB unsigned package whose manifest
/// asks for millions of operations, applied with a trusted key under a
/// 2.5 GB address-space limit, is refused for its signature (exit 1), not
/// aborted by a failed allocation.
#[test]
fn a_hostile_unsigned_manifest_is_refused_before_it_is_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let (head, op, tail) = one_zero_op(false, "");
    // As many operations as a count checked at 3 bytes each would admit:
    // the old reader reserved 136 bytes for each (3 GB) before looking.
    let size = (64usize << 20) - 4096;
    let ops = (size - head.len() - 4 - tail.len()) / op.len();
    let n = ((ops * op.len() + tail.len()) / 3) as u64;
    assert_eq!(varint(n).len(), 4);
    let mut m = head;
    m.extend(varint(n));
    for _ in 0..ops {
        m.extend(&op);
    }
    m.extend(&tail);
    let pkg = dir.path().join("hostile.romdelta");
    std::fs::write(&pkg, Package::encode_prefix_bytes(2, &m, 0, &[])).unwrap();
    let key = romdelta_format::signing::SigningKey::from_bytes(&[5; 32]);
    let pubkey = dir.path().join("k.pub");
    std::fs::write(
        &pubkey,
        romdelta_format::signing::public_key_file(&key.verifying_key()),
    )
    .unwrap();
    let out = dir.path().join("out.img");
    let apply = [
        "apply".as_ref(),
        pkg.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ];
    let verify = ["verify".as_ref(), pkg.as_os_str()];
    for args in [&apply[..], &verify[..]] {
        let run = crate::common::romdelta_within(2500)
            .args(args)
            .arg("--trusted-key")
            .arg(&pubkey)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("the package is not signed"), "{args:?}: {err}");
    }
    assert!(!out.exists());
}

/// A signed full package of two partitions (`system`, `vendor`), its
/// target images, and the public key file, in `dir`.
fn signed_full(dir: &Path, device: &str) -> (std::path::PathBuf, Vec<Vec<u8>>, std::path::PathBuf) {
    let key = romdelta_format::signing::SigningKey::from_bytes(&[9; 32]);
    let pubkey = dir.join("k.pub");
    std::fs::write(
        &pubkey,
        romdelta_format::signing::public_key_file(&key.verifying_key()),
    )
    .unwrap();
    let new = dir.join("new");
    std::fs::create_dir_all(&new).unwrap();
    let mut images = Vec::new();
    for (i, name) in ["system", "vendor"].iter().enumerate() {
        let mut b = vec![0u8; (64 + 16 * i) * 4096];
        let mut x = 0x9e37_79b9_u32.wrapping_add(i as u32);
        for (j, v) in b.iter_mut().enumerate() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            // Half random, half text: some blocks compress, some do not.
            *v = if (j / 8192) % 2 == 0 {
                x as u8
            } else {
                b"build "[j % 6]
            };
        }
        b[100 * 1024..110 * 1024].fill(0);
        std::fs::write(new.join(format!("{name}.img")), &b).unwrap();
        images.push(b);
    }
    let opts = romdelta_diff::DiffOptions {
        signing_keys: vec![key],
        target_build: BuildInfo {
            device: device.into(),
            version: "2".into(),
            ..BuildInfo::default()
        },
        ..crate::common::fast_opts()
    };
    let target = romdelta_rom::Rom::open(&new).unwrap();
    let pkg = dir.join("full.romdelta");
    romdelta_diff::write_package(None, &target, &opts, &pkg, &|_| {}).unwrap();
    (pkg, images, pubkey)
}

/// The prefix is read once: bytes of the file changed after it was opened
/// (by whoever can write it) are not what is decoded or verified.
#[test]
fn the_manifest_verified_and_used_is_the_one_read_when_the_package_was_opened() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg, _, _) = signed_full(dir.path(), "");
    let bytes = std::fs::read(&pkg).unwrap();
    let parsed = Package::parse(&bytes).unwrap();
    let file = romdelta_apply::PackageFile::open(&pkg).unwrap();
    // Rewrite the manifest on disk: change the new image's size.
    let mut changed = parsed.manifest.clone();
    changed.partitions[0].new.size += 4096;
    let changed_bytes = changed.encode();
    assert_eq!(changed_bytes.len(), parsed.manifest_bytes.len());
    {
        use std::os::unix::fs::FileExt as _;
        let f = std::fs::OpenOptions::new().write(true).open(&pkg).unwrap();
        f.write_all_at(&changed_bytes, romdelta_format::HEADER_LEN)
            .unwrap();
    }
    assert_ne!(std::fs::read(&pkg).unwrap(), bytes);
    let prefix = file.prefix();
    assert_eq!(prefix.manifest_bytes, parsed.manifest_bytes);
    let key = romdelta_format::signing::SigningKey::from_bytes(&[9; 32]).verifying_key();
    romdelta_apply::check_trust(&prefix.manifest_bytes, &prefix.signatures, &[key], false).unwrap();
    assert_eq!(file.manifest().unwrap(), parsed.manifest);
}

/// A package file cut short after it was opened makes the apply fail with
/// an error naming the operation, and nothing looks finished.
#[test]
fn a_package_file_cut_short_while_it_is_applied_is_an_error_not_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg, _, _) = signed_full(dir.path(), "");
    let file = romdelta_apply::PackageFile::open(&pkg).unwrap();
    let manifest = file.manifest().unwrap();
    let len = std::fs::metadata(&pkg).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&pkg).unwrap();
    f.set_len(len - len / 3).unwrap();
    let out = dir.path().join("out");
    let err = romdelta_apply::Plan::for_file(&manifest, &file, None, &out)
        .unwrap()
        .execute(&|_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("operation") && err.contains("cut short"),
        "{err}"
    );
    assert!(!out.exists());
    let (staged, journal) = romdelta_apply::staging_paths(&out);
    assert!(!staged.exists() && !journal.exists());
}

/// Every power cut of an apply with `--sparse` output, lost or torn,
/// followed by the same apply again, ends with the exact sparse images:
/// the staged raw images stay under the journal until every sparse form
/// is written, so a cut during the conversion resumes.
#[test]
fn a_sparse_apply_cut_at_any_point_resumes_to_the_exact_output() {
    use romdelta_storage::sim::{CutMode, SimFs};
    let dir = tempfile::tempdir().unwrap();
    let (pkg, images, _) = signed_full(dir.path(), "");
    let bytes = std::fs::read(&pkg).unwrap();
    let parsed = Package::parse(&bytes).unwrap();
    let out = Path::new("/dev0/out");
    let base = SimFs::new();
    base.mkdir_all(Path::new("/dev0"));
    let apply = |fs: &SimFs| {
        romdelta_apply::Plan::new_on(&parsed, None, out, fs)?
            .sparse_output(true)
            .execute(&|_| {})
    };
    // One uninterrupted run: the reference output and the number of points.
    let whole = base.fork();
    let before = whole.points();
    apply(&whole).unwrap();
    let points = whole.points() - before;
    let reference: Vec<(String, Vec<u8>)> = ["system", "vendor"]
        .iter()
        .map(|n| {
            let b = whole.get(&out.join(format!("{n}.img"))).unwrap();
            (n.to_string(), b)
        })
        .collect();
    for ((_, sparse), raw) in reference.iter().zip(&images) {
        assert!(romdelta_format::sparse::is_sparse(sparse));
        let chunks = romdelta_format::sparse::parse(sparse).unwrap();
        let mut expanded = vec![0u8; raw.len()];
        romdelta_format::sparse::read_expanded(&chunks, 0, &mut expanded, |off, b| {
            b.copy_from_slice(&sparse[off as usize..off as usize + b.len()]);
            Ok::<(), ()>(())
        })
        .unwrap();
        assert!(expanded == *raw);
    }
    let mut cut = 0;
    for at in 1..=points {
        for mode in [CutMode::Lost, CutMode::Torn(at)] {
            let fs = base.fork();
            fs.cut_power_at(at);
            if apply(&fs).is_ok() {
                continue;
            }
            cut += 1;
            fs.reboot(mode);
            apply(&fs).unwrap_or_else(|e| panic!("cut at {at} ({mode:?}), then: {e}"));
            for (name, want) in &reference {
                let got = fs.get(&out.join(format!("{name}.img"))).unwrap();
                assert!(got == *want, "cut at {at} ({mode:?}): {name} differs");
            }
            // Nothing but the output is left beside it.
            let left: Vec<_> = fs
                .files()
                .into_iter()
                .map(|(p, _)| p)
                .filter(|p| !p.starts_with(out))
                .collect();
            assert!(left.is_empty(), "cut at {at} ({mode:?}): left {left:?}");
        }
    }
    assert!(cut as u64 >= points, "only {cut} of {points} points cut");
}

/// `romdelta [global...] apply PKG -o OUT --trusted-key PUB [extra...]`.
fn apply(
    global: &[&str],
    pkg: &Path,
    out: &Path,
    pubkey: &Path,
    extra: &[&str],
) -> std::process::Output {
    romdelta()
        .args(global)
        .arg("apply")
        .arg(pkg)
        .arg("-o")
        .arg(out)
        .arg("--trusted-key")
        .arg(pubkey)
        .args(extra)
        .output()
        .unwrap()
}

/// With the installed build unknown, apply says so; a package that names
/// a device is refused unless the build is given or the check skipped.
#[test]
fn an_unknown_installed_build_is_said_and_a_package_for_a_device_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg, _, pubkey) = signed_full(dir.path(), "falcon");
    let out = dir.path().join("out");
    let run = apply(&[], &pkg, &out, &pubkey, &[]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the package is for device=falcon")
            && err.contains("the installed build is unknown")
            && err.contains("--installed-build")
            && err.contains("--skip-build-check"),
        "{err}"
    );
    assert!(!out.exists());
    // Given the installed build: checked.
    let prop = dir.path().join("build.prop");
    std::fs::write(
        &prop,
        "ro.product.device=falcon\nro.build.version.incremental=1\n",
    )
    .unwrap();
    let prop_arg = prop.to_str().unwrap();
    let run = apply(
        &[],
        &pkg,
        &out,
        &pubkey,
        &["--installed-build", prop_arg, "--json"],
    );
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{err}");
    assert!(!err.contains("warning"), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(report["rules_checked"], true);
    // Skipped in so many words: installed, with a warning.
    let out2 = dir.path().join("out2");
    let run = apply(&[], &pkg, &out2, &pubkey, &["--skip-build-check", "--json"]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{err}");
    assert!(
        err.contains("romdelta: warning: --skip-build-check"),
        "{err}"
    );
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(report["rules_checked"], false);
    // A package that names no device installs, and the warning says the
    // rules were not checked (also with -q, and as JSON with --progress json).
    let anon = tempfile::tempdir().unwrap();
    let (pkg, _, pubkey) = signed_full(anon.path(), "");
    let out3 = anon.path().join("out");
    let run = apply(&["-q", "--progress", "json"], &pkg, &out3, &pubkey, &[]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{err}");
    let warning = err
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["event"] == "warning")
        .unwrap_or_else(|| panic!("no warning in {err}"));
    assert!(warning["message"]
        .as_str()
        .unwrap()
        .contains("the installed build is unknown"));
}

/// `mib` MiB of random bytes from `seed` (incompressible: the package
/// holds as many).
fn random_bytes(mib: usize, seed: u64) -> Vec<u8> {
    use rand::{Rng, SeedableRng};
    let mut b = vec![0u8; mib << 20];
    rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill(&mut b[..]);
    b
}

/// The image a sparse file expands to.
fn expanded(sparse: &[u8]) -> Vec<u8> {
    let (header, chunks) =
        romdelta_format::sparse::read_table(sparse.len() as u64, |off, b: &mut [u8]| {
            b.copy_from_slice(&sparse[off as usize..off as usize + b.len()]);
            Ok::<(), ()>(())
        })
        .unwrap();
    let mut out = vec![0u8; header.image_len() as usize];
    romdelta_format::sparse::read_expanded(&chunks, 0, &mut out, |off, b| {
        b.copy_from_slice(&sparse[off as usize..off as usize + b.len()]);
        Ok::<(), ()>(())
    })
    .unwrap();
    out
}

/// A full package, at `dir/full.romdelta`, of a ROM of random images
/// (`name`, MiB), and the images.
fn random_full(dir: &Path, images: &[(&str, usize)]) -> (std::path::PathBuf, Vec<Vec<u8>>) {
    let rom = dir.join("rom");
    std::fs::create_dir_all(&rom).unwrap();
    let bytes: Vec<Vec<u8>> = images
        .iter()
        .enumerate()
        .map(|(i, &(name, mib))| {
            let b = random_bytes(mib, i as u64 + 1);
            std::fs::write(rom.join(format!("{name}.img")), &b).unwrap();
            b
        })
        .collect();
    let pkg = dir.join("full.romdelta");
    romdelta()
        .args(["-q", "diff", "--full", "--level", "1"])
        .arg(&rom)
        .arg("-o")
        .arg(&pkg)
        .assert()
        .success();
    (pkg, bytes)
}

/// The reproduction: `apply --sparse` killed while it converts the
/// second image (the first one's sparse form is written), then run again,
/// ends with the exact sparse images.
#[test]
fn apply_sparse_killed_during_the_conversion_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg, images) = random_full(dir.path(), &[("system", 96), ("vendor", 64)]);
    for attempt in 0..5 {
        let out = dir.path().join(format!("out{attempt}"));
        let (staged, journal) = romdelta_apply::staging_paths(&out);
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("romdelta"))
            .args(["-q", "apply"])
            .arg(&pkg)
            .arg("-o")
            .arg(&out)
            .args(["--sparse", "--insecure-no-verify"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let converting = || staged.join("vendor.img.sparse").exists();
        let killed = crate::common::kill_when(&mut child, converting, Duration::ZERO);
        if killed != Some(true) {
            continue; // finished (or never got there) before the kill
        }
        assert!(
            journal.exists(),
            "the journal is kept during the conversion"
        );
        let run = romdelta()
            .args(["apply"])
            .arg(&pkg)
            .arg("-o")
            .arg(&out)
            .args(["--sparse", "--insecure-no-verify"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(0), "{err}");
        assert!(String::from_utf8_lossy(&run.stdout).contains("resumed:"));
        for (name, raw) in ["system", "vendor"].iter().zip(&images) {
            let sparse = std::fs::read(out.join(format!("{name}.img"))).unwrap();
            assert!(romdelta_format::sparse::is_sparse(&sparse), "{name}");
            assert!(expanded(&sparse) == *raw, "{name} differs");
        }
        assert!(!staged.exists() && !journal.exists());
        return;
    }
    panic!("no attempt was killed during the conversion");
}

/// The reproduction: a package file cut short while it is being
/// applied ends the apply with an error that names the operation (it was
/// a SIGBUS while the package was mapped), and leaves nothing behind.
#[test]
fn a_package_file_truncated_during_an_apply_is_an_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (pkg, _) = random_full(dir.path(), &[("system", 96)]);
    for attempt in 0..5 {
        let cut = dir.path().join("cut.romdelta");
        std::fs::copy(&pkg, &cut).unwrap();
        let out = dir.path().join(format!("out{attempt}"));
        let (staged, journal) = romdelta_apply::staging_paths(&out);
        let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("romdelta"))
            .args(["-q", "apply"])
            .arg(&cut)
            .arg("-o")
            .arg(&out)
            .args(["--insecure-no-verify", "--threads", "1"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while !staged.exists() && started.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_micros(200));
        }
        std::fs::OpenOptions::new()
            .write(true)
            .open(&cut)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let run = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        if run.status.success() {
            continue; // done before the cut
        }
        assert_eq!(run.status.code(), Some(1), "{:?}: {err}", run.status);
        assert!(
            err.contains("operation") && err.contains("the file ends before them"),
            "{err}"
        );
        assert!(!out.exists() && !staged.exists() && !journal.exists());
        return;
    }
    panic!("every apply finished before its package was cut");
}
