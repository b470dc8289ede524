//! Helpers shared by the integration tests.

use romdelta_apply::{PackageFile, Plan};
use romdelta_diff::DiffOptions;
use romdelta_rom::Rom;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// The path of the romdelta binary under test.
pub fn romdelta() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("romdelta").expect("romdelta binary")
}

/// Whether `img2simg` runs here; CI sets ROMDELTA_REQUIRE_TOOLS=1 so a
/// missing tool fails the test instead of skipping it.
pub fn have_img2simg() -> bool {
    let ok = std::process::Command::new("img2simg").output().is_ok();
    if !ok && std::env::var_os("ROMDELTA_REQUIRE_TOOLS").is_some() {
        panic!("img2simg is required (apt-get install android-sdk-libsparse-utils)");
    }
    if !ok {
        eprintln!("skipping: img2simg not installed");
    }
    ok
}

/// Fast generation settings: low zstd level, otherwise the defaults.
pub fn fast_opts() -> DiffOptions {
    DiffOptions {
        level: 3,
        ..DiffOptions::default()
    }
}

/// Diffs `a` to `b` (single images) at `opts`, applies the package to `a`,
/// and returns the applied bytes.
pub fn round_trip(dir: &Path, a: &[u8], b: &[u8], opts: &DiffOptions) -> Vec<u8> {
    let (pa, pb) = (dir.join("a.img"), dir.join("b.img"));
    std::fs::write(&pa, a).unwrap();
    std::fs::write(&pb, b).unwrap();
    let pkg_path = dir.join("p.romdelta");
    let out = dir.join("out.img");
    let _ = std::fs::remove_file(&out);
    let src = Rom::open(&pa).unwrap();
    let dst = Rom::open(&pb).unwrap();
    romdelta_diff::write_package(Some(&src), &dst, opts, &pkg_path, &|_| {}).unwrap();
    // Apply reads the source the way the CLI does: through bounded buffers.
    let src = romdelta_apply::open_rom(&pa).unwrap();
    let file = PackageFile::open(&pkg_path).unwrap();
    let manifest = file.manifest().unwrap();
    Plan::for_file(&manifest, &file, Some(&src), &out)
        .unwrap()
        .execute(&|_| {})
        .unwrap();
    std::fs::read(&out).unwrap()
}

/// Writes the demo ROM pair at `scale` under `dir` and returns (old, new) dirs.
pub fn synth_roms(dir: &Path, seed: u64) -> (PathBuf, PathBuf) {
    let (old, new) = romdelta_synth::rom_pair(seed, 1);
    let (o, n) = (dir.join("old"), dir.join("new"));
    romdelta_synth::write_rom(&o, &old).unwrap();
    romdelta_synth::write_rom(&n, &new).unwrap();
    (o, n)
}

/// Files in `dir`, sorted, as names.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Lets `child` run until it exits by itself, or until `delay` has passed
/// since `ready()` first held (or 30 s in all), and then kills it with
/// SIGKILL. Returns `None` when it exited by itself, else whether `ready()`
/// had held before the kill.
pub fn kill_when(
    child: &mut Child,
    mut ready: impl FnMut() -> bool,
    delay: Duration,
) -> Option<bool> {
    let started = Instant::now();
    let mut ready_at = None;
    loop {
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        if ready_at.is_none() && ready() {
            ready_at = Some(Instant::now());
        }
        if ready_at.is_some_and(|t| t.elapsed() >= delay)
            || started.elapsed() > Duration::from_secs(30)
        {
            break;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    Some(ready_at.is_some())
}

/// The romdelta binary run with its address space limited to `mib` MiB
/// (`ulimit -v`): what proves that an input's length fields make it
/// allocate nothing near what they claim.
pub fn romdelta_within(mib: u64) -> assert_cmd::Command {
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -v {} && exec \"$0\" \"$@\"", mib << 10))
        .arg(assert_cmd::cargo::cargo_bin("romdelta"));
    assert_cmd::Command::from_std(cmd)
}

/// The ext4 image (`mke2fs -t ext4 -b 4096 -d tree`, `size` as mke2fs takes
/// it) of `tree`, written to `img`, with a fixed UUID, hash seed and time so
/// that it is the same image each run; returns its bytes.
pub fn ext4_image(tree: &Path, img: &Path, size: &str) -> Vec<u8> {
    let out = std::process::Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-E"])
        .arg("hash_seed=2e4c6f1a-8b3d-4f5e-9a7b-1c2d3e4f5a6b,root_owner=0:0")
        .args(["-U", "6f1c2a9e-5b7d-4e3f-9a8b-0c1d2e3f4a5b", "-d"])
        .arg(tree)
        .arg(img)
        .arg(size)
        .env("E2FSPROGS_FAKE_TIME", "1600000000")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mke2fs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(img).unwrap()
}

/// The EROFS image (`mkfs.erofs` with `opts`, no time, a fixed UUID, all
/// files root's) of `tree`, written to `img`; returns its bytes.
pub fn erofs_image(tree: &Path, img: &Path, opts: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("mkfs.erofs")
        .args(["--quiet", "-T0", "--all-root", "-U"])
        .arg("6f1c2a9e-5b7d-4e3f-9a8b-0c1d2e3f4a5b")
        .args(opts)
        .arg(img)
        .arg(tree)
        .output()
        .unwrap();
    assert!(out.status.success(), "mkfs.erofs {opts:?}: {out:?}");
    std::fs::read(img).unwrap()
}

/// `n` pseudo-random bytes (xorshift64 from `seed | 1`).
pub fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The fixture archive `../shared/fixtures/NAME/ARCHIVE` (a `.tar.xz`)
/// unpacked into `into`, or `None` when it is missing (a failure when
/// ROMDELTA_REQUIRE_TOOLS is set, as in CI).
pub fn unpack_fixture(name: &str, archive: &str, into: &Path) -> Option<PathBuf> {
    let tar = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures")
        .join(name)
        .join(archive);
    if !tar.is_file() {
        assert!(
            std::env::var_os("ROMDELTA_REQUIRE_TOOLS").is_none(),
            "the {name} fixtures are required: {}",
            tar.display()
        );
        eprintln!("skipping: no {name} fixtures at {}", tar.display());
        return None;
    }
    let f = std::fs::File::open(&tar).unwrap();
    tar::Archive::new(liblzma::read::XzDecoder::new(f))
        .unpack(into)
        .unwrap();
    Some(into.to_path_buf())
}

/// A puffin test vector of `crates/android/testdata/puffin/` (hex).
pub fn puffin_vector(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates/android/testdata/puffin")
        .join(format!("{name}.hex"));
    let t = std::fs::read_to_string(path).unwrap();
    let t = t.trim();
    (0..t.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&t[i..i + 2], 16).unwrap())
        .collect()
}
