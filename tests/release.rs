//! Release repositories: `romdelta repo`, `publish`, `recovery check` and
//! `recovery update` through nginx and a fault proxy, python-tuf reading
//! the same repository, and the attacks TUF guards against.

use crate::common::{kill_when, romdelta};
use crate::server::{have_nginx, FaultProxy, Faults, Nginx};
use romdelta_format::signing::{private_key_file, public_key_file, SigningKey};
use romdelta_format::BuildInfo;
use romdelta_recovery::{Device, Slot, Slots};
use romdelta_release::fetch::{FetchOptions, Transport};
use romdelta_release::update::{Options, Updater};
use romdelta_storage::sim::{CutMode, SimFs};
use std::path::{Path, PathBuf};
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

/// Three builds of two lines, their packages, the keys, and a repository
/// holding three releases.
pub struct World {
    pub dir: tempfile::TempDir,
    /// images[v]: the partition images of version v (both lines).
    pub images: Vec<Vec<(String, Vec<u8>)>>,
    pub repo: PathBuf,
    /// (line, base version or None for full, target version) → package.
    pub packages: Vec<((usize, Option<usize>, usize), PathBuf)>,
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
            let opts = romdelta_diff::DiffOptions {
                level: 3,
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
    romdelta()
        .args(["recovery", "update", "--json", "--seed", "1", "--device"])
        .arg(dev)
        .arg("--repo")
        .arg(url)
        .arg("--root")
        .arg(w.root())
        .arg("--trusted-key")
        .arg(&w.vendor_pub)
        .assert()
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

#[test]
#[ignore]
fn debug_one() {
    let w = world(2);
    let dev = w.device("g", 0, 0);
    let url = format!("file://{}", w.repo.display());
    let out = romdelta()
        .env("RD_DEBUG", "1")
        .args([
            "recovery",
            "update",
            "--json",
            "--seed",
            "1",
            "--threads",
            "1",
            "--device",
        ])
        .arg(&dev)
        .arg("--repo")
        .arg(&url)
        .arg("--root")
        .arg(w.root())
        .arg("--trusted-key")
        .arg(&w.vendor_pub)
        .assert()
        .success();
    eprintln!("{}", String::from_utf8_lossy(&out.get_output().stderr));
    eprintln!("{}", String::from_utf8_lossy(&out.get_output().stdout));
}
