//! The recovery harness with faults injected into the device's storage:
//! power cuts at hundreds of points of an install (unsynced writes lost,
//! or torn 4 KiB at a time), a full disk, a bad block, a cut-off or
//! corrupted package. After each, the device boots the old build intact or
//! the exact new build, and running the install again finishes it.

use romdelta_apply::CheckpointEvery;
use romdelta_format::BuildInfo;
use romdelta_recovery::{Device, RecoveryError, Slot, Slots};
use romdelta_storage::sim::{CutMode, SimFs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The device directory inside the simulated file system.
const DEV: &str = "/device";

fn build(version: &str, timestamp: u64) -> BuildInfo {
    BuildInfo {
        device: "demo".into(),
        region: "Global".into(),
        channel: "stable".into(),
        version: version.into(),
        fingerprint: format!("romdelta/demo/demo:14/{version}:user/release-keys"),
        security_patch: "2026-11-01".into(),
        timestamp,
    }
}

/// A small ROM pair (a few MiB: boot of an odd size, system, vendor; a
/// partition only the old build has and one only the new has), its
/// package, and a simulated device holding the old build.
pub struct Fixture {
    _dir: tempfile::TempDir,
    /// The images of the old and new build, by partition name.
    pub old: Vec<(String, Vec<u8>)>,
    pub new: Vec<(String, Vec<u8>)>,
    /// The incremental package for the device (in place for a single slot).
    pub package: PathBuf,
    /// The incremental package of the other install mode.
    pub other_package: PathBuf,
    /// A full package of the new build.
    pub full_package: PathBuf,
    /// The device, as initialised (fork it for each run).
    pub base: SimFs,
    pub old_build: BuildInfo,
    pub new_build: BuildInfo,
}

impl Fixture {
    /// An A/B device and an A/B package.
    pub fn new(seed: u64) -> Fixture {
        Self::with(seed, Slots::Ab)
    }

    /// A device with `slots`, and a package for it (in place for a single slot).
    pub fn with(seed: u64, slots: Slots) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = romdelta_synth::rom_pair(seed, 1);
        // In place leaves out what is already in place, so it makes fewer
        // writes: twice the data gives it as many points to cut at.
        let mib = if slots == Slots::Single {
            2 << 20
        } else {
            1 << 20
        };
        let cut = |rom: Vec<(String, Vec<u8>)>| -> Vec<(String, Vec<u8>)> {
            rom.into_iter()
                .map(|(name, mut img)| {
                    let keep = match name.as_str() {
                        "boot" => mib + 1234,
                        "system" => 3 * mib,
                        _ => mib,
                    };
                    img.truncate(keep);
                    (name, img)
                })
                .collect()
        };
        let (old, new) = (cut(old), cut(new));
        let (o, n) = (dir.path().join("old"), dir.path().join("new"));
        romdelta_synth::write_rom(&o, &old).unwrap();
        romdelta_synth::write_rom(&n, &new).unwrap();
        let (old_build, new_build) = (build("V1.0.1.0", 1761955200), build("V1.0.2.0", 1764547200));
        let (src, dst) = (
            romdelta_rom::Rom::open(&o).unwrap(),
            romdelta_rom::Rom::open(&n).unwrap(),
        );
        let make = |name: &str, in_place: bool, full: bool| {
            let path = dir.path().join(name);
            let opts = romdelta_diff::DiffOptions {
                level: 3,
                // Regions as the sweeps were sized for (≥ 200 distinct
                // power-cut points), whatever the generator's default.
                gap_blocks: 32,
                in_place,
                source_build: old_build.clone(),
                target_build: new_build.clone(),
                ..Default::default()
            };
            let source = (!full).then_some(&src);
            romdelta_diff::write_package(source, &dst, &opts, &path, &|_| {}).unwrap();
            path
        };
        let single = slots == Slots::Single;
        let package = make("update.romdelta", single, false);
        let other_package = make("other.romdelta", !single, false);
        let full_package = make("full.romdelta", false, true);
        let base = SimFs::new();
        base.mkdir_all(Path::new("/"));
        Device::init_on(
            Arc::new(base.clone()),
            Path::new(DEV),
            &o,
            Some(old_build.clone()),
            slots,
        )
        .unwrap();
        Fixture {
            _dir: dir,
            old,
            new,
            package,
            other_package,
            full_package,
            base,
            old_build,
            new_build,
        }
    }
}

fn accept_any(
    _: &[u8],
    _: &[romdelta_format::Signature],
) -> Result<(), romdelta_apply::ApplyError> {
    Ok(())
}

/// Installs `package` on the device in `fs` on one worker thread (so that a
/// power-cut point names the same moment in every run), checkpointing
/// every 16 KiB so that a resume has progress to find.
pub fn install(fs: &SimFs, package: &Path) -> Result<Slot, RecoveryError> {
    install_on(fs, package, 1)
}

/// [`install`] on `threads` workers. With more than one, checkpoints are
/// made on a thread of their own beside the operations, so the calls of two
/// runs interleave differently.
fn install_on(fs: &SimFs, package: &Path, threads: usize) -> Result<Slot, RecoveryError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let mut d = Device::open_on(Arc::new(fs.clone()), Path::new(DEV))?;
        d.checkpoint_every(CheckpointEvery {
            bytes: 16 << 10,
            interval: Duration::from_secs(3600),
        });
        Ok(d.install(package, &accept_any, Default::default())?.slot)
    })
}

/// Which build the device boots: its active slot must hold exactly the
/// images of the build recorded for it, and that build must be the old or
/// the new one. A single-slot device may instead be in the middle of an
/// in-place update that its state records ("updating": it boots into
/// recovery, which resumes). Panics with `what` otherwise.
pub fn booted(fx: &Fixture, fs: &SimFs, what: &str) -> &'static str {
    let d = Device::open_on(Arc::new(fs.clone()), Path::new(DEV))
        .unwrap_or_else(|e| panic!("{what}: the device does not open: {e}"));
    let slot = d.state().active;
    let b = d.build(slot).unwrap();
    let holds = |images: &[(String, Vec<u8>)]| {
        let mut listed: Vec<&String> = d.state().partitions.iter().collect();
        let mut expected: Vec<&String> = images.iter().map(|(n, _)| n).collect();
        listed.sort();
        expected.sort();
        listed == expected
            && images.iter().all(|(part, bytes)| {
                fs.get(&d.image_path(part, slot)).as_deref() == Some(bytes.as_slice())
            })
    };
    if b.as_ref() == Some(&fx.old_build) && holds(&fx.old) {
        return "old";
    }
    if b.as_ref() == Some(&fx.new_build) && holds(&fx.new) {
        return "new";
    }
    if d.state().slots == Slots::Single && d.state().update.is_some() {
        return "updating";
    }
    panic!(
        "{what}: slot {slot:?} records build {:?} and holds neither build, with no update under way",
        b.map(|b| b.version)
    );
}

/// Up to `n` distinct points in `1..=total`, spread evenly, always
/// including the first and the last.
pub fn spread(total: u64, n: u64) -> Vec<u64> {
    if total <= n {
        return (1..=total).collect();
    }
    let mut v: Vec<u64> = (0..n).map(|i| 1 + i * (total - 1) / (n - 1)).collect();
    v.dedup();
    v
}

/// Sweeps power cuts over an install of `fx`'s package on one worker;
/// returns the number of points and the outcomes.
fn power_cut_sweep(fx: &Fixture) -> (usize, u64, Outcomes) {
    // A clean run: how many changing calls an install makes.
    let clean = fx.base.fork();
    let before = clean.points();
    install(&clean, &fx.package).unwrap();
    assert_eq!(booted(fx, &clean, "clean install"), "new");
    let total = clean.points() - before;
    let points = spread(total, 240);
    assert!(
        points.len() >= 200,
        "only {} points in {total}",
        points.len()
    );
    let o = sweep(fx, &points, total, 1);
    assert_eq!(o.old + o.updating + o.new, 2 * points.len());
    // One worker makes the same calls every run: every point is reached.
    assert_eq!(o.uncut, 0);
    (points.len(), total, o)
}

#[test]
fn power_cuts_at_every_point_of_an_ab_install_leave_a_bootable_device() {
    let fx = Fixture::new(41);
    let (n, total, o) = power_cut_sweep(&fx);
    eprintln!(
        "A/B: {n} power-cut points of {total}, 2 modes each: {} booted the old build and resumed to the new one, {} booted the new build",
        o.old, o.new
    );
    assert_eq!(o.updating, 0);
    assert!(o.old > 0);
}

#[test]
fn power_cuts_during_background_checkpoints_leave_a_bootable_device() {
    // Two workers: checkpoints sync on their own thread while operations
    // run, so the journal must list only what an earlier sync made durable.
    let fx = Fixture::new(53);
    let clean = fx.base.fork();
    let before = clean.points();
    install_on(&clean, &fx.package, 2).unwrap();
    assert_eq!(booted(&fx, &clean, "clean install"), "new");
    let total = clean.points() - before;
    let points = spread(total, 80);
    // As the one-worker sweeps demand their 200: enough points to mean
    // something, whatever the install's call count becomes.
    assert!(
        points.len() >= 64,
        "only {} points in {total}",
        points.len()
    );
    let o = sweep(&fx, &points, total, 2);
    let cut = 2 * points.len() - o.uncut;
    eprintln!(
        "A/B on two workers: {} power cuts in {total} points, 2 modes each: {} booted the old build and resumed, {} booted the new build; {} installs finished before their point",
        points.len(), o.old, o.new, o.uncut
    );
    assert_eq!(o.updating, 0);
    assert_eq!(o.old + o.updating + o.new, 2 * points.len());
    // At least half of the runs were really cut (the others finished first).
    assert!(
        cut >= points.len(),
        "{cut} of {} runs cut: {o:?}",
        2 * points.len()
    );
    assert!(o.old > 0, "{o:?}");
}

#[test]
fn power_cuts_at_every_point_of_an_in_place_install_resume_to_the_new_build() {
    let fx = Fixture::with(47, Slots::Single);
    let (n, total, o) = power_cut_sweep(&fx);
    eprintln!(
        "in place: {n} power-cut points of {total}, 2 modes each: {} booted the old build intact, {} booted recovery with the update under way, {} booted the new build; every one ended with the exact new build",
        o.old, o.updating, o.new
    );
    assert!(o.old > 0 && o.updating > 0);
}

/// What the device booted after each power cut and reboot.
#[derive(Debug, Default, Clone, Copy)]
struct Outcomes {
    /// The old build, intact (then the install ran again to the new one).
    old: usize,
    /// Recovery, with an in-place update under way (then resumed to the new one).
    updating: usize,
    /// The new build.
    new: usize,
    /// Of those, installs that finished before their cut point.
    uncut: usize,
}

/// Cuts the power at each of `points` in both modes, reboots, checks the
/// device boots the old build, the new one, or (single slot) recovery with
/// the update recorded, then runs the install again and checks it ends
/// with the exact new build. Runs on two threads.
fn sweep(fx: &Fixture, points: &[u64], total: u64, threads: usize) -> Outcomes {
    let one = |n: u64, mode: CutMode, o: &mut Outcomes| {
        let what = format!("power cut at point {n} of {total} ({mode:?})");
        let fs = fx.base.fork();
        fs.cut_power_at(n);
        let r = install_on(&fs, &fx.package, threads);
        if !fs.is_cut() {
            // With background checkpoints, as many as time allows, the
            // number of points varies from run to run: this install
            // finished before point n.
            r.unwrap_or_else(|e| panic!("{what}: failed with the power on: {e}"));
            assert_eq!(booted(fx, &fs, &what), "new", "{what}: not cut");
            o.new += 1;
            o.uncut += 1;
            return;
        }
        assert!(r.is_err(), "{what}: the install went on after the cut");
        fs.reboot(mode);
        match booted(fx, &fs, &what) {
            "new" => o.new += 1,
            b => {
                if b == "old" {
                    o.old += 1;
                } else {
                    o.updating += 1;
                }
                // The restart resumes (or restarts) the update.
                install_on(&fs, &fx.package, threads)
                    .unwrap_or_else(|e| panic!("{what}: resume: {e}"));
                assert_eq!(booted(fx, &fs, &what), "new", "{what}: after resume");
            }
        }
    };
    let half = points.len() / 2;
    let run = |pts: &[u64]| {
        let mut o = Outcomes::default();
        for &n in pts {
            for mode in [CutMode::Lost, CutMode::Torn(n)] {
                one(n, mode, &mut o);
            }
        }
        o
    };
    let (a, b) = std::thread::scope(|s| {
        let h = s.spawn(|| run(&points[..half]));
        let b = run(&points[half..]);
        (h.join().unwrap(), b)
    });
    Outcomes {
        old: a.old + b.old,
        updating: a.updating + b.updating,
        new: a.new + b.new,
        uncut: a.uncut + b.uncut,
    }
}

/// Every file of the simulated device and its bytes.
fn snapshot(fs: &SimFs) -> Vec<(PathBuf, Vec<u8>)> {
    fs.files()
}

fn err_text(e: RecoveryError) -> String {
    e.to_string()
}

#[test]
fn a_full_disk_a_bad_block_and_a_damaged_package_fail_cleanly_and_recover() {
    let fx = Fixture::new(43);

    // Full disk: the install stops with ENOSPC; the old build still boots;
    // with room made, the same install succeeds.
    let fs = fx.base.fork();
    fs.set_capacity(Some(fs.used() + (2 << 20)));
    let e = err_text(install(&fs, &fx.package).unwrap_err());
    assert!(e.contains("No space left on device"), "{e}");
    assert_eq!(booted(&fx, &fs, "after ENOSPC"), "old");
    fs.set_capacity(None);
    install(&fs, &fx.package).unwrap();
    assert_eq!(booted(&fx, &fs, "after ENOSPC and more room"), "new");

    // A read error on a block of the active slot: the install stops naming
    // the image; nothing of the old build changed; once the block reads
    // again the install succeeds.
    let fs = fx.base.fork();
    let system_a = Path::new(DEV).join("system_a.img");
    fs.fail_block(&system_a, 100).unwrap();
    let e = err_text(install(&fs, &fx.package).unwrap_err());
    assert!(
        e.contains("system_a.img") && e.contains("Input/output error"),
        "{e}"
    );
    assert_eq!(booted(&fx, &fs, "after EIO"), "old");
    fs.heal();
    install(&fs, &fx.package).unwrap();
    assert_eq!(booted(&fx, &fs, "after EIO healed"), "new");

    // A package cut off anywhere, or damaged in its manifest: refused
    // before anything is written. Damaged data: the operation that reads
    // it fails on its hash and the old build still boots.
    let bytes = std::fs::read(&fx.package).unwrap();
    let cut = fx.package.with_extension("cut");
    let fs = fx.base.fork();
    let before = snapshot(&fs);
    for len in spread(bytes.len() as u64 - 1, 40) {
        std::fs::write(&cut, &bytes[..len as usize]).unwrap();
        let e = err_text(install(&fs, &cut).unwrap_err());
        // Cut in the magic, or past the header: the exact field and counts.
        let header = romdelta_format::HEADER_LEN;
        let want = if len < 8 {
            format!(
                "invalid package: truncated: magic needs {} more bytes, {len} left",
                8 - len
            )
        } else if len >= header {
            format!(
                "invalid package: truncated: package needs {} more bytes, {} left",
                bytes.len() as u64 - len,
                len - header
            )
        } else {
            panic!("cut at {len}, inside the header past its magic: no message expected");
        };
        assert_eq!(e, want, "cut at {len}");
        assert!(snapshot(&fs) == before, "cut at {len}: the device changed");
    }
    let pkg = romdelta_format::Package::parse(&bytes).unwrap();
    let data_start = bytes.len() - pkg.data.len();
    for at in [100, data_start - 10, data_start + 100, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x40;
        std::fs::write(&cut, &bad).unwrap();
        let fs = fx.base.fork();
        let e = err_text(install(&fs, &cut).unwrap_err());
        if at < data_start {
            assert!(e.contains("checksum"), "byte {at}: {e}");
            assert!(snapshot(&fs) == before, "byte {at}: the device changed");
        } else {
            assert!(e.contains("data") && e.contains("sha256"), "byte {at}: {e}");
        }
        assert_eq!(booted(&fx, &fs, "after a damaged package"), "old");
        // The intact package then installs.
        install(&fs, &fx.package).unwrap();
        assert_eq!(
            booted(&fx, &fs, "intact package after a damaged one"),
            "new"
        );
    }
}

#[test]
fn in_place_faults_have_defined_outcomes_and_a_full_package_repairs() {
    let fx = Fixture::with(53, Slots::Single);
    let dev = Path::new(DEV);

    // Each install mode refuses the other's incremental, before writing.
    let fs = fx.base.fork();
    let before = snapshot(&fs);
    let e = err_text(install(&fs, &fx.other_package).unwrap_err());
    assert!(e.contains("A/B") && e.contains("--in-place"), "{e}");
    assert!(
        snapshot(&fs) == before,
        "a refused package changed the device"
    );
    let ab = Fixture::new(53);
    let fs = ab.base.fork();
    let before = snapshot(&fs);
    let e = err_text(install(&fs, &ab.other_package).unwrap_err());
    assert!(e.contains("in place"), "{e}");
    assert!(
        snapshot(&fs) == before,
        "a refused package changed the device"
    );

    // A full disk when a stage's stash is saved: the update stops with
    // ENOSPC, recorded as under way; with room made, it resumes.
    let fs = fx.base.fork();
    fs.set_capacity(Some(fs.used() + (64 << 10)));
    let e = err_text(install(&fs, &fx.package).unwrap_err());
    assert!(e.contains("No space left on device"), "{e}");
    let bytes = std::fs::read(&fx.package).unwrap();
    let manifest_sha = romdelta_format::hex_digest(&romdelta_format::sha256(
        romdelta_format::Package::parse(&bytes)
            .unwrap()
            .manifest_bytes,
    ));
    let d = Device::open_on(Arc::new(fs.clone()), dev).unwrap();
    let update = d.state().update.as_ref();
    assert!(
        update.is_some_and(|u| u.manifest_sha256 == manifest_sha && u.status == "writing"),
        "after ENOSPC the device records {update:?}, not this package's update under way"
    );
    fs.set_capacity(None);
    install(&fs, &fx.package).unwrap();
    assert_eq!(booted(&fx, &fs, "after ENOSPC and more room"), "new");

    // A bad block of the image being updated: the update stops naming the
    // image and the error; once the block reads again it resumes.
    let fs = fx.base.fork();
    let clean = fx.base.fork();
    install(&clean, &fx.package).unwrap();
    // A block the update reads: one where the old and new system differ.
    let old_sys = &fx.old.iter().find(|(n, _)| n == "system").unwrap().1;
    let new_sys = &fx.new.iter().find(|(n, _)| n == "system").unwrap().1;
    let block = (0..old_sys.len() / 4096)
        .rev()
        .find(|&b| old_sys[b * 4096..(b + 1) * 4096] != new_sys[b * 4096..(b + 1) * 4096])
        .unwrap() as u64;
    fs.fail_block(&dev.join("system.img"), block).unwrap();
    let e = err_text(install(&fs, &fx.package).unwrap_err());
    assert!(
        e.contains("system.img") && e.contains("Input/output error"),
        "{e}"
    );
    fs.heal();
    install(&fs, &fx.package).unwrap();
    assert_eq!(booted(&fx, &fs, "after EIO healed"), "new");

    // Damaged data found in the middle of the update: it stops on the
    // operation's hash; the intact package then resumes it.
    let bytes = std::fs::read(&fx.package).unwrap();
    let pkg = romdelta_format::Package::parse(&bytes).unwrap();
    let data_start = bytes.len() - pkg.data.len();
    let mut bad = bytes.clone();
    let at = bytes.len() - 1;
    assert!(at > data_start);
    bad[at] ^= 0x40;
    let damaged = fx.package.with_extension("damaged");
    std::fs::write(&damaged, &bad).unwrap();
    let fs = fx.base.fork();
    let e = err_text(install(&fs, &damaged).unwrap_err());
    assert!(e.contains("data") && e.contains("sha256"), "{e}");
    install(&fs, &fx.package).unwrap();
    assert_eq!(
        booted(&fx, &fs, "intact package after a damaged one"),
        "new"
    );

    // Cut the power in the middle of the update; after the reboot a full
    // package repairs the device, whatever state the update left.
    let fs = fx.base.fork();
    fs.cut_power_at(150);
    assert!(install(&fs, &fx.package).is_err());
    fs.reboot(CutMode::Torn(3));
    assert_eq!(booted(&fx, &fs, "cut mid-update"), "updating");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        let mut d = Device::open_on(Arc::new(fs.clone()), dev).unwrap();
        d.install(&fx.full_package, &accept_any, Default::default())
            .unwrap();
    });
    assert_eq!(booted(&fx, &fs, "repaired by the full package"), "new");
}
