//! Release repositories: `romdelta repo`, `publish`, `recovery check` and
//! `recovery update` through nginx and a fault proxy, python-tuf reading
//! the same repository, and the attacks TUF guards against.

use crate::common::{kill_when, romdelta};
use crate::server::{have_nginx, FaultProxy, Faults, Nginx};
use romdelta_format::signing::{private_key_file, public_key_file, SigningKey};
use romdelta_format::BuildInfo;
use romdelta_recovery::{Device, Slots};
use romdelta_release::fetch::{FetchOptions, Transport};
use romdelta_release::update::{Options, Updater};
use romdelta_storage::sim::{CutMode, SimFs};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

/// The two lines of the tests.
const LINES: [(&str, &str); 2] = [("Global", "stable"), ("CN", "developer")];
const VERSIONS: [(&str, u64); 3] = [
    ("V1.0.1.0", 1761955200),
    ("V1.0.2.0", 1764547200),
    ("V1.0.3.0", 1767225600),
];

fn build(line: usize, v: usize) -> BuildInfo {
    let (region, channel) = LINES[line];
    let (version, timestamp) = VERSIONS[v];
    BuildInfo {
        device: "demo".into(),
        region: region.into(),
        channel: channel.into(),
        version: version.into(),
        fingerprint: format!("romdelta/demo_{region}/demo:14/{version}:user/release-keys"),
        security_patch: "2026-11-01".into(),
        timestamp,
    }
}

fn build_prop(b: &BuildInfo) -> String {
    format!(
        "ro.product.device={}\nro.build.region={}\nro.build.channel={}\n\
         ro.build.version.incremental={}\nro.build.fingerprint={}\n\
         ro.build.version.security_patch={}\nro.build.date.utc={}\n",
        b.device, b.region, b.channel, b.version, b.fingerprint, b.security_patch, b.timestamp
    )
}

/// A package: (line, base version or `None` for a full one, target version).
pub type PackageKey = (usize, Option<usize>, usize);

/// Three builds of two lines, their packages, the keys, and a repository
/// holding three releases.
pub struct World {
    pub dir: tempfile::TempDir,
    /// images[v]: the partition images of version v (both lines).
    pub images: Vec<Vec<(String, Vec<u8>)>>,
    pub repo: PathBuf,
    /// (line, base version or None for full, target version) → package.
    pub packages: Vec<(PackageKey, PathBuf)>,
    pub vendor_pub: PathBuf,
}

impl World {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The ROM directory of build (line, v).
    pub fn rom(&self, line: usize, v: usize) -> PathBuf {
        self.path(&format!("rom-{line}-{v}"))
    }

    pub fn key(&self, name: &str) -> PathBuf {
        self.path(&format!("{name}.key"))
    }

    pub fn package(&self, line: usize, base: Option<usize>, v: usize) -> &Path {
        &self
            .packages
            .iter()
            .find(|(k, _)| *k == (line, base, v))
            .unwrap()
            .1
    }

    /// `romdelta publish` of `pkgs` with the online keys.
    pub fn publish(&self, pkgs: &[&Path], extra: &[&str]) {
        romdelta()
            .arg("publish")
            .arg("--repo")
            .arg(&self.repo)
            .args(["--targets-key"])
            .arg(self.key("targets"))
            .arg("--snapshot-key")
            .arg(self.key("snapshot"))
            .arg("--timestamp-key")
            .arg(self.key("timestamp"))
            .arg("--trusted-key")
            .arg(&self.vendor_pub)
            .args(extra)
            .args(pkgs)
            .assert()
            .success();
    }

    /// A device directory holding build (line, v) in slot a.
    pub fn device(&self, name: &str, line: usize, v: usize) -> PathBuf {
        let dev = self.path(name);
        romdelta()
            .args(["recovery", "init", "--device"])
            .arg(&dev)
            .arg("--from")
            .arg(self.rom(line, v))
            .assert()
            .success();
        dev
    }

    /// The root a device is provisioned with.
    pub fn root(&self) -> PathBuf {
        self.repo.join("metadata/1.root.json")
    }
}

/// The images: a cut-down synthetic pair (about 5 MiB a build) and an
/// edit of the newer one.
fn images() -> Vec<Vec<(String, Vec<u8>)>> {
    let (old, new) = romdelta_synth::rom_pair(77, 1);
    let mib = 1 << 20;
    let cut = |rom: Vec<(String, Vec<u8>)>| -> Vec<(String, Vec<u8>)> {
        rom.into_iter()
            .map(|(name, mut img)| {
                img.truncate(match name.as_str() {
                    "boot" => mib + 1234,
                    "system" => 3 * mib,
                    _ => mib,
                });
                (name, img)
            })
            .collect()
    };
    let (old, new) = (cut(old), cut(new));
    let third = new
        .iter()
        .map(|(n, img)| (n.clone(), romdelta_synth::edited(9, img)))
        .collect();
    vec![old, new, third]
}

/// Builds the world; `releases` of the three are published (1 to 3).
pub fn world(releases: usize) -> World {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_path_buf();
    let p = |n: &str| base.join(n);
    for (i, name) in [
        "root",
        "root2",
        "targets",
        "snapshot",
        "timestamp",
        "vendor",
    ]
    .iter()
    .enumerate()
    {
        let k = SigningKey::from_bytes(&[i as u8 + 40; 32]);
        std::fs::write(p(&format!("{name}.key")), private_key_file(&k)).unwrap();
        std::fs::write(
            p(&format!("{name}.key.pub")),
            public_key_file(&k.verifying_key()),
        )
        .unwrap();
    }
    let images = images();
    for line in 0..2 {
        for (v, imgs) in images.iter().enumerate() {
            let rom = p(&format!("rom-{line}-{v}"));
            romdelta_synth::write_rom(&rom, imgs).unwrap();
            std::fs::write(rom.join("build.prop"), build_prop(&build(line, v))).unwrap();
        }
    }
    let vendor = romdelta_format::signing::parse_private_key(
        &std::fs::read_to_string(p("vendor.key")).unwrap(),
    )
    .unwrap();
    // (line, base, target): full packages of each build, incrementals
    // from each earlier build to the newer ones.
    let mut wanted = Vec::new();
    for line in 0..2 {
        for v in 0..releases {
            wanted.push((line, None, v));
            for b in 0..v {
                wanted.push((line, Some(b), v));
            }
        }
    }
    let packages: Vec<_> = wanted
        .iter()
        .map(|&(line, base, v)| {
            let out = p(&format!("pkg-{line}-{base:?}-{v}.romdelta"));
            let dst = romdelta_rom::Rom::open(&p(&format!("rom-{line}-{v}"))).unwrap();
            let src =
                base.map(|b| romdelta_rom::Rom::open(&p(&format!("rom-{line}-{b}"))).unwrap());
            // Operations of at most 64 KiB of output, as a real package's
            // are (the corpus pair's average about 6 KB of data each): what
            // a power cut loses is the operation under way.
            let opts = romdelta_diff::DiffOptions {
                level: 3,
                region_blocks: 16,
                join_new: false,
                source_build: base.map(|b| build(line, b)).unwrap_or_default(),
                target_build: build(line, v),
                signing_keys: vec![vendor.clone()],
                ..Default::default()
            };
            romdelta_diff::write_package(src.as_ref(), &dst, &opts, &out, &|_| {}).unwrap();
            ((line, base, v), out)
        })
        .collect();
    let repo = p("repo");
    romdelta()
        .args(["repo", "init", "--repo"])
        .arg(&repo)
        .arg("--root-key")
        .arg(p("root.key"))
        .arg("--targets-key")
        .arg(p("targets.key.pub"))
        .arg("--snapshot-key")
        .arg(p("snapshot.key.pub"))
        .arg("--timestamp-key")
        .arg(p("timestamp.key.pub"))
        .assert()
        .success();
    let w = World {
        dir,
        images,
        repo,
        packages,
        vendor_pub: p("vendor.key.pub"),
    };
    for v in 0..releases {
        let pkgs: Vec<&Path> = w
            .packages
            .iter()
            .filter(|((_, _, t), _)| *t == v)
            .map(|(_, p)| p.as_path())
            .collect();
        w.publish(&pkgs, &[]);
    }
    w
}

fn json(out: &assert_cmd::assert::Assert) -> serde_json::Value {
    serde_json::from_slice(&out.get_output().stdout).unwrap()
}

fn check(dev: &Path, url: &str, root: &Path) -> serde_json::Value {
    json(
        &romdelta()
            .args(["recovery", "check", "--json", "--seed", "1", "--device"])
            .arg(dev)
            .arg("--repo")
            .arg(url)
            .arg("--root")
            .arg(root)
            .assert()
            .success(),
    )
}

fn update(w: &World, dev: &Path, url: &str) -> assert_cmd::assert::Assert {
    assert_cmd::Command::from_std(update_via(w, dev, url, &[])).assert()
}

/// The active slot of `dev` holds exactly images[v].
fn holds(w: &World, dev: &Path, v: usize) {
    let d = Device::open(dev).unwrap();
    let slot = d.state().active;
    for (name, img) in &w.images[v] {
        let got = std::fs::read(d.image_path(name, slot)).unwrap();
        assert!(
            got == *img,
            "{}: {name} is not version {v}'s",
            dev.display()
        );
    }
}

#[test]
fn a_release_loop_through_nginx_takes_each_device_to_its_lines_newest_build() {
    if !have_nginx() {
        return;
    }
    let w = world(3);
    let nginx = Nginx::serve(&w.repo);
    let url = nginx.url();
    // (name, line, installed version or None for a build never published,
    // expected kind).
    let devices = [
        ("global-v1", 0, Some(0), "incremental"),
        ("global-v2", 0, Some(1), "incremental"),
        ("global-unknown", 0, None, "full"),
        ("cn-v1", 1, Some(0), "incremental"),
        ("cn-v2", 1, Some(1), "incremental"),
    ];
    for (name, line, v, kind) in devices {
        let dev = w.device(name, line, v.unwrap_or(0));
        if v.is_none() {
            // A build of this line the repository never published.
            let mut b = build(line, 0);
            b.version = "V1.0.1.5".into();
            b.fingerprint = "romdelta/demo/demo:14/V1.0.1.5:user/dev-keys".into();
            std::fs::write(dev.join("build_a.prop"), build_prop(&b)).unwrap();
        }
        let c = check(&dev, &url, &w.root());
        assert_eq!(c["decision"], "install", "{name}: {c}");
        assert_eq!(c["kind"], kind, "{name}: {c}");
        assert_eq!(c["build"]["version"], "V1.0.3.0", "{name}");
        let (region, channel) = LINES[line];
        let prefix = format!("packages/demo/{region}/{channel}/");
        assert!(
            c["package"]["target"]
                .as_str()
                .unwrap()
                .starts_with(&prefix),
            "{name}: {c}"
        );
        let r = json(&update(&w, &dev, &url).success());
        assert_eq!(
            r["installed"]["build"]["version"], "V1.0.3.0",
            "{name}: {r}"
        );
        assert_eq!(r["installed"]["build"]["region"], region, "{name}");
        holds(&w, &dev, 2);
        // The package was read once, not more.
        let want = c["package"]["length"].as_u64().unwrap();
        let got = r["package_bytes_received"].as_u64().unwrap();
        assert!(
            got <= want,
            "{name}: {got} bytes received of a {want}-byte package"
        );
        // And now it is up to date.
        let c = check(&dev, &url, &w.root());
        assert_eq!(c["decision"], "up_to_date", "{name}: {c}");
    }
}

/// python-tuf (PyPI `tuf`) in the virtualenv ROMDELTA_TUF_PYTHON names.
fn tuf_python() -> Option<PathBuf> {
    match std::env::var_os("ROMDELTA_TUF_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            assert!(
                std::env::var_os("ROMDELTA_REQUIRE_TOOLS").is_none(),
                "ROMDELTA_TUF_PYTHON is not set (a python with PyPI's tuf)"
            );
            eprintln!("skipped: ROMDELTA_TUF_PYTHON is not set");
            None
        }
    }
}

/// Runs `script` with `args` in python-tuf's interpreter; its stdout.
fn run_python(python: &Path, script: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python-tuf: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// python-tuf's ngclient: refresh, then download each target named.
const PYTHON_TUF_CLIENT: &str = r#"
import sys
from tuf.ngclient import Updater
md, url, tdir, *targets = sys.argv[1:]
u = Updater(metadata_dir=md, metadata_base_url=url + "/metadata/",
            target_base_url=url + "/targets/", target_dir=tdir, bootstrap=None)
u.refresh()
for t in targets:
    info = u.get_targetinfo(t)
    if info is None:
        sys.exit("no target " + t)
    print(u.download_target(info), info.length)
print("root", u._trusted_set.root.version)
"#;

#[test]
fn python_tuf_reads_the_repository_publish_writes() {
    if !have_nginx() {
        return;
    }
    let Some(python) = tuf_python() else { return };
    let w = world(2);
    let nginx = Nginx::serve(&w.repo);
    let py_targets = w.path("py-targets");
    let run = |md: &Path, targets: &[&str]| {
        let url = nginx.url();
        let mut args = vec![md.as_os_str(), url.as_ref(), py_targets.as_os_str()];
        args.extend(targets.iter().map(std::ffi::OsStr::new));
        run_python(&python, PYTHON_TUF_CLIENT, &args)
    };
    let md = w.path("py-metadata");
    std::fs::create_dir_all(&md).unwrap();
    std::fs::create_dir_all(w.path("py-targets")).unwrap();
    std::fs::copy(w.root(), md.join("root.json")).unwrap();
    let catalogs = [
        "lines/demo/Global/stable/catalog.json",
        "lines/demo/CN/developer/catalog.json",
    ];
    let out = run(&md, &catalogs);
    // python-tuf's copies are the bytes romdelta's client reads.
    for c in catalogs {
        let mine = romdelta_tuf::repo::Repository::open(&w.repo)
            .unwrap()
            .read_target(c)
            .unwrap()
            .unwrap();
        let theirs = std::fs::read(w.path("py-targets").join(romdelta_tuf::quote(c))).unwrap();
        assert!(mine == theirs, "{c}");
        let cat = romdelta_release::catalog::Catalog::parse(&theirs).unwrap();
        assert_eq!(cat.builds.len(), 2);
    }
    assert!(out.contains("root 1"), "{out}");
    // A package, and a root rotated with the old root key and the new.
    let pkg = romdelta_tuf::repo::Repository::open(&w.repo)
        .unwrap()
        .targets()
        .keys()
        .find(|t| t.starts_with("packages/demo/CN/developer/incremental-"))
        .unwrap()
        .clone();
    romdelta()
        .args(["repo", "rotate-root", "--repo"])
        .arg(&w.repo)
        .arg("--sign")
        .arg(w.key("root"))
        .arg("--sign")
        .arg(w.key("root2"))
        .arg("--root-key")
        .arg(w.key("root2"))
        .arg("--targets-key")
        .arg(w.key("targets"))
        .arg("--snapshot-key")
        .arg(w.key("snapshot"))
        .arg("--timestamp-key")
        .arg(w.key("timestamp"))
        .assert()
        .success();
    let out = run(&md, &[&pkg]);
    assert!(out.contains("root 2"), "{out}");
    let theirs = std::fs::read(w.path("py-targets").join(romdelta_tuf::quote(&pkg))).unwrap();
    assert!(theirs == std::fs::read(w.package(1, Some(0), 1)).unwrap());
}

/// Writes, with python-tuf's Metadata API and securesystemslib's signers, a
/// repository whose roles use every key type of the specification: root
/// RSA-PSS and ECDSA P-256 (threshold 2), timestamp ECDSA, snapshot RSA
/// PKCS#1 v1.5, targets Ed25519; one target, `a/b.txt`, under both of its
/// hashes.
const PYTHON_TUF_REPOSITORY: &str = r#"
import os, sys
from datetime import datetime, timedelta, timezone
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (Metadata, MetaFile, Root, Snapshot, TargetFile,
                              Targets, Timestamp)
from tuf.api.serialization.json import JSONSerializer

out, content = sys.argv[1], b"signed by every key type\n"
meta, tdir = os.path.join(out, "metadata"), os.path.join(out, "targets", "a")
os.makedirs(meta), os.makedirs(tdir)
expires = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=7)
signers = {
    "root": [CryptoSigner.generate_rsa(), CryptoSigner.generate_ecdsa()],
    "timestamp": [CryptoSigner.generate_ecdsa()],
    "snapshot": [CryptoSigner.generate_rsa(scheme="rsa-pkcs1v15-sha256")],
    "targets": [CryptoSigner.generate_ed25519()],
}
root = Root(expires=expires, consistent_snapshot=True)
for role, ss in signers.items():
    for s in ss:
        root.add_key(s.public_key, role)
    root.roles[role].threshold = len(ss)
target = TargetFile.from_data("a/b.txt", content, ["sha256", "sha512"])
targets = Targets(expires=expires, targets={"a/b.txt": target})
snapshot = Snapshot(expires=expires, meta={"targets.json": MetaFile(1)})
timestamp = Timestamp(expires=expires, snapshot_meta=MetaFile(1))
for role, signed, name in [("root", root, "1.root.json"),
                           ("targets", targets, "1.targets.json"),
                           ("snapshot", snapshot, "1.snapshot.json"),
                           ("timestamp", timestamp, "timestamp.json")]:
    md = Metadata(signed)
    for s in signers[role]:
        md.sign(s, append=True)
    with open(os.path.join(meta, name), "wb") as f:
        f.write(md.to_bytes(JSONSerializer()))
for h in target.hashes.values():
    with open(os.path.join(tdir, h + ".b.txt"), "wb") as f:
        f.write(content)
print(" ".join(f"{k.keytype}/{k.scheme}" for k in root.keys.values()))
"#;

#[test]
fn tuf_client_verifies_every_key_type_python_tuf_signs_with() {
    let Some(python) = tuf_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let kinds = run_python(&python, PYTHON_TUF_REPOSITORY, &[repo.as_os_str()]);
    for k in [
        "rsa/rsassa-pss-sha256",
        "rsa/rsa-pkcs1v15-sha256",
        "ecdsa/ecdsa-sha2-nistp256",
        "ed25519/ed25519",
    ] {
        assert!(kinds.contains(k), "{kinds}");
    }
    let murl = format!("file://{}/metadata", repo.display());
    let turl = format!("file://{}/targets", repo.display());
    let download = |md: &Path| {
        let tdir = dir.path().join("targets");
        let mut c = romdelta();
        c.arg("tuf-client").arg("--metadata-dir").arg(md);
        c.args(["--metadata-url", &murl, "--target-name", "a/b.txt"]);
        c.args(["--target-base-url", &turl, "--target-dir"])
            .arg(&tdir);
        c.arg("download");
        (c.assert(), tdir.join("a%2Fb.txt"))
    };
    let init = |name: &str| {
        let md = dir.path().join(name);
        romdelta()
            .arg("tuf-client")
            .arg("--metadata-dir")
            .arg(&md)
            .arg("init")
            .arg(repo.join("metadata/1.root.json"))
            .assert()
            .success();
        md
    };
    let (ok, got) = download(&init("good"));
    ok.success();
    assert_eq!(std::fs::read(got).unwrap(), b"signed by every key type\n");
    // One signature changed in each role's file in turn (the key type that
    // role uses), or a signature given twice: each refresh fails, exit 1.
    let files = ["timestamp.json", "1.snapshot.json", "1.targets.json"];
    for (i, f) in files.iter().enumerate() {
        for dup in [false, true] {
            let path = repo.join("metadata").join(f);
            let good = std::fs::read(&path).unwrap();
            let mut md: serde_json::Value = serde_json::from_slice(&good).unwrap();
            let sigs = md["signatures"].as_array_mut().unwrap();
            if dup {
                let first = sigs[0].clone();
                sigs.push(first);
            } else {
                let sig = sigs[0]["sig"].as_str().unwrap().to_string();
                let flip = if sig.ends_with('0') { '1' } else { '0' };
                sigs[0]["sig"] = format!("{}{flip}", &sig[..sig.len() - 1]).into();
            }
            std::fs::write(&path, serde_json::to_vec(&md).unwrap()).unwrap();
            let (bad, _) = download(&init(&format!("bad-{i}-{dup}")));
            bad.code(1);
            std::fs::write(&path, good).unwrap();
        }
    }
}

/// A device on the simulated storage, holding build (line 0, version 0),
/// updating from `url` with the update state in `state`.
struct SimDevice {
    fs: SimFs,
}

const SIM_DEV: &str = "/device";

fn sim_base(w: &World) -> SimFs {
    let fs = SimFs::new();
    fs.mkdir_all(Path::new("/"));
    Device::init_on(
        Arc::new(fs.clone()),
        Path::new(SIM_DEV),
        &w.rom(0, 0),
        Some(build(0, 0)),
        Slots::Ab,
    )
    .unwrap();
    fs
}

fn accept_any(
    _: &[u8],
    _: &[romdelta_format::Signature],
) -> Result<(), romdelta_apply::ApplyError> {
    Ok(())
}

impl SimDevice {
    /// Runs one update on one worker, checkpointing every 16 KiB; returns
    /// its result and the package bytes it received.
    fn update(&self, url: &str, state: &Path, fetch: FetchOptions) -> (Result<(), String>, u64) {
        let u = Updater::new(
            Arc::new(Transport::new(fetch)),
            Options {
                repo: url.to_string(),
                seed: 1,
                now: romdelta_tuf::time::now(),
                attempts: 2,
                state: state.to_path_buf(),
            },
        );
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let r = pool.install(|| {
            let mut d = Device::open_on(Arc::new(self.fs.clone()), Path::new(SIM_DEV))
                .map_err(|e| e.to_string())?;
            d.checkpoint_every(romdelta_apply::CheckpointEvery {
                bytes: 16 << 10,
                interval: Duration::from_secs(3600),
            });
            u.update(&mut d, &accept_any, Default::default())
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        (r, u.package_bytes())
    }

    /// Whether the device boots the exact build (line 0, `v`).
    fn boots(&self, w: &World, v: usize) -> bool {
        let d = Device::open_on(Arc::new(self.fs.clone()), Path::new(SIM_DEV)).unwrap();
        let slot = d.state().active;
        d.build(slot).unwrap().as_ref() == Some(&build(0, v))
            && w.images[v].iter().all(|(n, img)| {
                self.fs.get(&d.image_path(n, slot)).as_deref() == Some(img.as_slice())
            })
    }
}

fn fast_fetch() -> FetchOptions {
    FetchOptions {
        attempts: 6,
        stall: Duration::from_secs(5),
        connect: Duration::from_secs(5),
        backoff: Duration::from_millis(1),
    }
}

/// Two releases served by nginx behind the fault proxy, and the length of
/// the incremental a device on line 0's first build takes.
fn behind_proxy() -> (World, Nginx, FaultProxy, u64) {
    let w = world(2);
    let nginx = Nginx::serve(&w.repo);
    let proxy = FaultProxy::start(nginx.addr);
    let package = std::fs::metadata(w.package(0, Some(0), 1)).unwrap().len();
    (w, nginx, proxy, package)
}

/// A fresh update state trusting the repository's first root.
fn fresh_state(w: &World, name: &str) -> PathBuf {
    let state = w.path(name);
    let _ = std::fs::remove_dir_all(&state);
    romdelta_release::update::provision(&state, &std::fs::read(w.root()).unwrap()).unwrap();
    state
}

#[test]
fn downloads_cut_at_over_a_hundred_points_resume_to_the_exact_build() {
    if !have_nginx() {
        return;
    }
    let (w, _nginx, proxy, package) = behind_proxy();
    let url = proxy.url();
    let base = sim_base(&w);
    let most = package + package / 10;
    // A clean run: the bytes on the wire and the storage calls it makes.
    let clean = SimDevice { fs: base.fork() };
    let (calls0, wire0) = (
        clean.fs.points(),
        proxy.downstream.load(std::sync::atomic::Ordering::SeqCst),
    );
    let (r, got) = clean.update(&url, &fresh_state(&w, "clean"), fast_fetch());
    r.unwrap();
    assert!(clean.boots(&w, 1));
    assert_eq!(got, package, "a clean run receives the package once");
    let wire = proxy.downstream.load(std::sync::atomic::Ordering::SeqCst) - wire0;
    let calls = clean.fs.points() - calls0;
    let mut points = 0;
    // Connections reset at 70 points of the transfer: the retries go on
    // from the last byte received.
    for n in crate::faults::spread(wire - 1, 70) {
        let dev = SimDevice { fs: base.fork() };
        proxy.set(Faults {
            reset_after: Some(n),
            ..Faults::default()
        });
        let (r, got) = dev.update(&url, &fresh_state(&w, "reset"), fast_fetch());
        r.unwrap_or_else(|e| panic!("reset after {n} of {wire} bytes: {e}"));
        assert!(dev.boots(&w, 1), "reset after {n}");
        assert!(
            got <= most,
            "reset after {n}: {got} bytes for a {package}-byte package"
        );
        points += 1;
    }
    // Power cuts at 40 points of the install: unsynced writes lost; the
    // next run resumes from the journal and downloads only the rest.
    let mut worst = 0u64;
    for n in crate::faults::spread(calls, 40) {
        let dev = SimDevice { fs: base.fork() };
        let state = fresh_state(&w, "cut");
        dev.fs.cut_power_at(n);
        let (r, first) = dev.update(&url, &state, fast_fetch());
        if !dev.fs.is_cut() {
            r.unwrap();
            continue;
        }
        assert!(r.is_err(), "power cut at {n}: the update went on");
        dev.fs.reboot(CutMode::Lost);
        let (r, second) = dev.update(&url, &state, fast_fetch());
        r.unwrap_or_else(|e| panic!("power cut at {n} of {calls}: resume: {e}"));
        assert!(dev.boots(&w, 1), "power cut at {n}");
        worst = worst.max(first + second);
        assert!(
            first + second <= most,
            "power cut at {n}: {first} + {second} bytes for a {package}-byte package"
        );
        points += 1;
    }
    assert!(points >= 100, "{points} cut points");
    eprintln!("{points} cuts; the package is {package} bytes; at most {worst} received around a power cut");
}

/// Copies the repository to `name` (so each attack has its own).
fn copy_repo(w: &World, name: &str) -> PathBuf {
    let to = w.path(name);
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&w.repo)
        .arg(&to)
        .status()
        .unwrap();
    assert!(status.success());
    to
}

/// `recovery update` from `repo` must fail with exit code 1, saying
/// `says`, with no file of the device changed.
fn refused(w: &World, dev: &Path, repo: &Path, now: Option<i64>, says: &str) {
    let before = crate::recovery::snapshot(dev);
    let mut cmd = romdelta();
    if let Some(t) = now {
        cmd.env("ROMDELTA_NOW", t.to_string());
    }
    let out = cmd
        .args([
            "recovery",
            "update",
            "--seed",
            "1",
            "--retries",
            "1",
            "--device",
        ])
        .arg(dev)
        .arg("--repo")
        .arg(format!("file://{}", repo.display()))
        .arg("--root")
        .arg(w.root())
        .arg("--trusted-key")
        .arg(&w.vendor_pub)
        .assert()
        .code(1);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.contains(says), "expected {says:?} in: {err}");
    assert!(
        crate::recovery::snapshot(dev) == before,
        "{says}: the device was written to"
    );
}

fn signed_of(path: &Path) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["signed"].clone()
}

fn sign_with(w: &World, signed: &serde_json::Value, keys: &[&str]) -> Vec<u8> {
    let keys: Vec<SigningKey> = keys
        .iter()
        .map(|k| {
            romdelta_format::signing::parse_private_key(&std::fs::read_to_string(w.key(k)).unwrap())
                .unwrap()
        })
        .collect();
    let refs: Vec<&SigningKey> = keys.iter().collect();
    romdelta_tuf::metadata::sign(signed, &refs).unwrap()
}

#[test]
fn attacks_on_the_repository_are_refused_before_a_byte_is_written() {
    let w = world(2);
    let meta = |repo: &Path, name: &str| repo.join("metadata").join(name);
    let dev = w.device("attacked", 0, 0);
    // A device that has seen release 2 keeps what it trusts.
    let seen = w.device("seen", 0, 0);
    let r2 = copy_repo(&w, "repo-r2");
    json(
        &romdelta()
            .args(["recovery", "check", "--json", "--seed", "1", "--device"])
            .arg(&seen)
            .arg("--repo")
            .arg(format!("file://{}", r2.display()))
            .arg("--root")
            .arg(w.root())
            .assert()
            .success(),
    );

    // Tampered metadata: the targets edited, the signature kept.
    let r = copy_repo(&w, "tampered-meta");
    let t = meta(&r, "2.targets.json");
    let text = std::fs::read_to_string(&t).unwrap();
    // The same length (a longer file is cut at the snapshot's length).
    let text = text.replacen("\"length\": 1", "\"length\": 2", 1);
    std::fs::write(&t, text).unwrap();
    refused(
        &w,
        &w.device("attacked-1", 0, 0),
        &r,
        None,
        "targets metadata has 0 valid signature(s)",
    );

    // Unsigned metadata: a timestamp signed by a key the root does not list.
    let r = copy_repo(&w, "unsigned");
    let ts = signed_of(&meta(&r, "timestamp.json"));
    std::fs::write(meta(&r, "timestamp.json"), sign_with(&w, &ts, &["vendor"])).unwrap();
    refused(
        &w,
        &w.device("attacked-2", 0, 0),
        &r,
        None,
        "valid signature(s)",
    );

    // Freeze / rollback: the seen device is served release 1's timestamp.
    let r = copy_repo(&w, "replayed");
    let old_ts = {
        // Release 1's timestamp: version 1, re-created from the layout
        // (the repository keeps only the newest).
        let mut ts = signed_of(&meta(&r, "timestamp.json"));
        let v1 = std::fs::read(meta(&r, "1.snapshot.json")).unwrap();
        use sha2::Digest as _;
        ts["version"] = 1.into();
        ts["meta"]["snapshot.json"] = serde_json::json!({
            "version": 1,
            "length": v1.len(),
            "hashes": {"sha256": hex::encode(sha2::Sha256::digest(&v1))},
        });
        sign_with(&w, &ts, &["timestamp"])
    };
    std::fs::write(meta(&r, "timestamp.json"), old_ts).unwrap();
    refused(&w, &seen, &r, None, "refused as a rollback");

    // Mix and match: targets of another snapshot under this one's name,
    // with a snapshot (re-signed) that gives no length to catch it.
    let r = copy_repo(&w, "mixed");
    let mut sn = signed_of(&meta(&r, "2.snapshot.json"));
    sn["meta"]["targets.json"] = serde_json::json!({"version": 2});
    let sn = sign_with(&w, &sn, &["snapshot"]);
    std::fs::write(meta(&r, "2.snapshot.json"), &sn).unwrap();
    let mut ts = signed_of(&meta(&r, "timestamp.json"));
    {
        use sha2::Digest as _;
        ts["meta"]["snapshot.json"]["length"] = sn.len().into();
        ts["meta"]["snapshot.json"]["hashes"]["sha256"] =
            hex::encode(sha2::Sha256::digest(&sn)).into();
    }
    std::fs::write(
        meta(&r, "timestamp.json"),
        sign_with(&w, &ts, &["timestamp"]),
    )
    .unwrap();
    std::fs::copy(meta(&r, "1.targets.json"), meta(&r, "2.targets.json")).unwrap();
    refused(
        &w,
        &w.device("attacked-3", 0, 0),
        &r,
        None,
        "not published together",
    );

    // Endless data: the package served longer than its signed length.
    let r = copy_repo(&w, "endless");
    let pkg = {
        let repo = romdelta_tuf::repo::Repository::open(&r).unwrap();
        let (path, info) = repo
            .targets()
            .iter()
            .find(|(t, _)| t.starts_with("packages/demo/Global/stable/incremental-"))
            .map(|(t, i)| (t.clone(), i.clone()))
            .unwrap();
        repo.target_file(&path, &info)
    };
    let mut f = std::fs::OpenOptions::new().append(true).open(&pkg).unwrap();
    std::io::Write::write_all(&mut f, &vec![0u8; 1 << 20]).unwrap();
    drop(f);
    refused(&w, &w.device("attacked-4", 0, 0), &r, None, "endless data");

    // A tampered package: one byte of its manifest.
    let r = copy_repo(&w, "tampered-pkg");
    let pkg = r.join(
        pkg.strip_prefix(w.repo.parent().unwrap().join("endless"))
            .unwrap(),
    );
    let mut b = std::fs::read(&pkg).unwrap();
    b[100] ^= 1;
    std::fs::write(&pkg, b).unwrap();
    refused(&w, &w.device("attacked-5", 0, 0), &r, None, "manifest");

    // An expired timestamp (the clock two days on).
    refused(
        &w,
        &w.device("attacked-6", 0, 0),
        &w.repo,
        Some(romdelta_tuf::time::now() + 2 * 86_400),
        "expired",
    );

    // A root rotated without the old threshold: signed by the new key only.
    let r = copy_repo(&w, "rotated");
    let mut root2 = signed_of(&meta(&r, "1.root.json"));
    root2["version"] = 2.into();
    let new_key = romdelta_tuf::metadata::Key::ed25519(
        &romdelta_format::signing::parse_private_key(
            &std::fs::read_to_string(w.key("root2")).unwrap(),
        )
        .unwrap()
        .verifying_key(),
    );
    root2["keys"][new_key.id()] = serde_json::to_value(&new_key).unwrap();
    root2["roles"]["root"] = serde_json::json!({"keyids": [new_key.id()], "threshold": 1});
    std::fs::write(meta(&r, "2.root.json"), sign_with(&w, &root2, &["root2"])).unwrap();
    refused(
        &w,
        &w.device("attacked-7", 0, 0),
        &r,
        None,
        "without the old threshold",
    );

    // After all that, the untouched repository still updates the device.
    update(&w, &dev, &format!("file://{}", w.repo.display())).success();
    holds(&w, &dev, 1);
}

fn update_via(w: &World, dev: &Path, url: &str, extra: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_romdelta"));
    cmd.args(["recovery", "update", "--json", "--seed", "1", "--device"])
        .arg(dev)
        .arg("--repo")
        .arg(url)
        .arg("--root")
        .arg(w.root())
        .arg("--trusted-key")
        .arg(&w.vendor_pub)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

#[test]
fn kills_stalls_and_error_answers_have_defined_outcomes() {
    use std::sync::atomic::Ordering::SeqCst;
    if !have_nginx() {
        return;
    }
    let (w, _nginx, proxy, package) = behind_proxy();
    let url = proxy.url();
    let wire = || proxy.downstream.load(SeqCst);
    // A clean run: what besides the package goes over the wire.
    let dev = w.device("clean", 0, 0);
    let before = wire();
    let out = update_via(&w, &dev, &url, &[]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let overhead = wire() - before - package;
    holds(&w, &dev, 1);

    // kill -9 at 10 points of a download over a 1 MiB/s link, then run
    // again at full speed.
    let rate = 1u64 << 20;
    let mut worst = 0;
    for i in 0..10u64 {
        let dev = w.device(&format!("killed-{i}"), 0, 0);
        proxy.set(Faults {
            bytes_per_second: Some(rate),
            ..Faults::default()
        });
        let before = wire();
        // One worker: checkpoints are made in line with the operations
        // (every 1/128 of the output), not on a thread of their own that
        // a busy disk can hold back.
        let mut child = update_via(&w, &dev, &url, &["--threads", "1"])
            .spawn()
            .unwrap();
        let at = Duration::from_millis(20 + i * package * 1000 / rate / 10);
        let killed = kill_when(&mut child, || true, at);
        let first = wire() - before;
        proxy.set(Faults::default());
        let before = wire();
        let out = update_via(&w, &dev, &url, &[]).output().unwrap();
        assert!(
            out.status.success(),
            "after a kill at {at:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        holds(&w, &dev, 1);
        let second = wire() - before;
        if killed.is_some() {
            // Both runs' bytes, less what each spends on metadata.
            let total = (first + second).saturating_sub(2 * overhead);
            assert!(
                total <= package + package / 10,
                "kill at {at:?}: {first} + {second} bytes on the wire for a {package}-byte package"
            );
            worst = worst.max(total);
        }
    }

    eprintln!("kills: at most {worst} package bytes around a kill, of {package}");

    // Two 503 answers, then the server again: retried, installed.
    let dev = w.device("busy", 0, 0);
    proxy.set(Faults {
        answer: Some((503, 2)),
        ..Faults::default()
    });
    let out = update_via(&w, &dev, &url, &[]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    holds(&w, &dev, 1);

    // A 404 is final: two requests (2.root.json, whose 404 means "no newer
    // root", then timestamp.json), no retry, nothing written.
    let dev = w.device("missing", 0, 0);
    let files = crate::recovery::snapshot(&dev);
    proxy.set(Faults {
        answer: Some((404, 100)),
        ..Faults::default()
    });
    let conns = proxy.connections.load(SeqCst);
    let out = update_via(&w, &dev, &url, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    assert_eq!(
        proxy.connections.load(SeqCst) - conns,
        2,
        "a 404 was retried"
    );
    assert!(crate::recovery::snapshot(&dev) == files);
    proxy.set(Faults::default());

    // A server that stalls mid-transfer is given up on after
    // --stall-timeout, and the retry goes on from the last byte.
    let dev = w.device("stalled", 0, 0);
    proxy.set(Faults {
        stall: Some((200_000, Duration::from_secs(20))),
        ..Faults::default()
    });
    let started = std::time::Instant::now();
    let out = update_via(&w, &dev, &url, &["--stall-timeout", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    holds(&w, &dev, 1);
}

#[test]
fn tuf_client_has_the_conformance_suites_command_line() {
    let w = world(1);
    let md = w.path("client-md");
    let tdir = w.path("client-targets");
    let murl = format!("file://{}/metadata", w.repo.display());
    let turl = format!("file://{}/targets", w.repo.display());
    let client = |args: &[&str]| {
        let mut c = romdelta();
        c.arg("tuf-client").arg("--metadata-dir").arg(&md);
        c.args(args);
        c.assert()
    };
    client(&["init", w.root().to_str().unwrap()]).success();
    assert!(md.join("root.json").exists());
    client(&["--metadata-url", &murl, "refresh"]).success();
    for f in ["timestamp.json", "snapshot.json", "targets.json"] {
        assert!(md.join(f).exists(), "{f}");
    }
    let name = "lines/demo/Global/stable/catalog.json";
    client(&[
        "--metadata-url",
        &murl,
        "--target-name",
        name,
        "--target-base-url",
        &turl,
        "--target-dir",
        tdir.to_str().unwrap(),
        "download",
    ])
    .success();
    let got = std::fs::read(tdir.join(romdelta_tuf::quote(name))).unwrap();
    assert_eq!(
        romdelta_release::catalog::Catalog::parse(&got)
            .unwrap()
            .builds
            .len(),
        1
    );
    // Failures exit 1: a target the repository does not sign, a root that
    // is not one, a repository that is not there.
    client(&[
        "--metadata-url",
        &murl,
        "--target-name",
        "nothing",
        "--target-base-url",
        &turl,
        "--target-dir",
        tdir.to_str().unwrap(),
        "download",
    ])
    .code(1);
    client(&["init", w.vendor_pub.to_str().unwrap()]).code(1);
    client(&["--metadata-url", "file:///nonexistent/metadata", "refresh"]).code(1);
    fuzz_seeds(&w, &md, &got);
}

/// The fuzz targets' seeds are this repository's metadata and catalog:
/// written with ROMDELTA_WRITE_FUZZ_SEEDS=1, checked to parse otherwise.
fn fuzz_seeds(w: &World, md: &Path, catalog: &[u8]) {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    if std::env::var_os("ROMDELTA_WRITE_FUZZ_SEEDS").is_some() {
        let dir = corpus.join("tuf_metadata");
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["root", "timestamp", "snapshot", "targets"] {
            std::fs::copy(md.join(format!("{f}.json")), dir.join(format!("seed-{f}"))).unwrap();
        }
        let dir = corpus.join("release_catalog");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("seed-catalog"), catalog).unwrap();
        let _ = w;
    }
    // The committed seeds (a fuzzing run adds files of its own beside them).
    let seeds = |target: &str| {
        std::fs::read_dir(corpus.join(target))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("seed-")
            })
            .map(|p| std::fs::read(p).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(seeds("tuf_metadata").len(), 4);
    for b in seeds("tuf_metadata") {
        romdelta_tuf::metadata::Envelope::parse("seed", &b).unwrap();
    }
    for b in seeds("release_catalog") {
        romdelta_release::catalog::Catalog::parse(&b).unwrap();
    }
}

#[test]
fn payloads_are_read_by_ranges_from_a_server_only_the_partitions_asked_for() {
    if !have_nginx() {
        return;
    }
    let w = world(1);
    // A full OTA zip of build 0's whole-block partitions.
    let served = w.path("served");
    let rom = w.path("payload-rom");
    std::fs::create_dir_all(&served).unwrap();
    std::fs::create_dir_all(&rom).unwrap();
    for e in std::fs::read_dir(w.rom(0, 0)).unwrap() {
        let p = e.unwrap().path();
        if !p.ends_with("boot.img") {
            std::fs::copy(&p, rom.join(p.file_name().unwrap())).unwrap();
        }
    }
    let zip = served.join("ota.zip");
    romdelta()
        .args(["diff", "--format", "ota-zip", "--full"])
        .arg(&rom)
        .arg("-o")
        .arg(&zip)
        .assert()
        .success();
    let size = std::fs::metadata(&zip).unwrap().len();
    let nginx = Nginx::serve(&served);
    let url = format!("{}/ota.zip", nginx.url());
    // inspect: the metadata and the data of the partitions it checks.
    let out = romdelta()
        .args(["payload", "inspect", "--json", "-p", "oem"])
        .arg(&url)
        .assert()
        .success();
    let v = json(&out);
    assert!(v["partitions"].as_array().unwrap().len() == 1, "{v}");
    // extract one partition: its image exact, a part of the file read.
    let outdir = w.path("extracted");
    let out = romdelta()
        .args(["payload", "extract", "-p", "vendor", "-o"])
        .arg(&outdir)
        .arg(&url)
        .assert()
        .success();
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    let read: u64 = err
        .split(": ")
        .nth(2)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {err:?}"));
    let vendor = &w.images[0].iter().find(|(n, _)| n == "vendor").unwrap().1;
    assert!(std::fs::read(outdir.join("vendor.img")).unwrap() == *vendor);
    assert!(!outdir.join("system.img").exists());
    assert!(
        read < size / 2,
        "{read} of {size} bytes read for one partition of three"
    );
    eprintln!("{read} of {size} bytes read for one partition of three");
    // A URL that is not there.
    romdelta()
        .args(["payload", "inspect"])
        .arg(format!("{}/nothing.zip", nginx.url()))
        .assert()
        .failure();
}
