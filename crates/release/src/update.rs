//! A device's update from a release repository (`romdelta recovery check`
//! and `recovery update`).
//!
//! 1. The device's TUF client (`DEVICE/ota/tuf/`) refreshes the metadata
//!    from `REPO/metadata/`.
//! 2. The catalog of the installed build's line is fetched as a target:
//!    its signed length bounds the fetch, its signed hash is checked
//!    before it is parsed.
//! 3. [`choose`](crate::catalog::choose) picks the package; its length and
//!    hash are taken from the signed targets metadata, not the catalog.
//! 4. The package is installed while it downloads: the install reads it by
//!    byte ranges, never past its signed length, and keeps no copy. Every
//!    operation's data is checked against the signed manifest before it is
//!    written, so a tampered byte stops the install before it reaches an
//!    image. A cut download or install leaves the resume journal; the next
//!    run downloads only what the journal does not hold.
//! 5. An incremental that fails to install (not a failed download) counts
//!    an attempt; after [`Options::attempts`] of them the full package is
//!    taken instead.

use crate::catalog::{catalog_path, choose_after_failures, Catalog, Decision};
use crate::fetch::{RangeFile, Transport};
use crate::ReleaseError;
use romdelta_apply::rules::{describe, Allow};
use romdelta_apply::PackageFile;
use romdelta_format::BuildInfo;
use romdelta_recovery::{Device, InstallReport};
use romdelta_tuf::client::target_url;
use romdelta_tuf::Client;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How a device updates.
#[derive(Debug, Clone)]
pub struct Options {
    /// The repository: `REPO/metadata/` and `REPO/targets/` below it.
    pub repo: String,
    /// The device's rollout seed.
    pub seed: u64,
    /// Now, in seconds since the epoch (expiry and rollout waves).
    pub now: i64,
    /// Failed installs of an incremental before the full package is taken.
    pub attempts: u32,
    /// Where the device's update state is kept: its TUF metadata (`tuf/`),
    /// its attempts (usually [`ota_dir`] of the device).
    pub state: PathBuf,
}

/// The device's update state directory.
pub fn ota_dir(device: &Path) -> PathBuf {
    device.join("ota")
}

/// Makes the update state in `state` trust `root` (a root metadata
/// file's bytes).
pub fn provision(state: &Path, root: &[u8]) -> Result<(), ReleaseError> {
    Ok(Client::init(&state.join("tuf"), root)?)
}

/// Incremental installs that failed, for one target build.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Attempts {
    build: String,
    failures: u32,
}

fn attempts_path(state: &Path) -> PathBuf {
    state.join("attempts.json")
}

fn build_key(b: &BuildInfo) -> String {
    format!("{}\0{}", b.fingerprint, b.version)
}

fn failures(device: &Path, build: &BuildInfo) -> u32 {
    std::fs::read(attempts_path(device))
        .ok()
        .and_then(|b| serde_json::from_slice::<Attempts>(&b).ok())
        .filter(|a| a.build == build_key(build))
        .map_or(0, |a| a.failures)
}

fn record_failures(device: &Path, build: &BuildInfo, n: u32) -> Result<(), ReleaseError> {
    let a = Attempts {
        build: build_key(build),
        failures: n,
    };
    let bytes = serde_json::to_vec(&a).expect("plain struct");
    Ok(romdelta_tuf::client::write_durably(
        &attempts_path(device),
        &bytes,
    )?)
}

/// What `check` found.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// The installed build.
    pub installed: BuildInfo,
    /// The catalog read.
    pub catalog: String,
    /// The trusted root's version after the refresh.
    pub root_version: u64,
    /// Failed installs of this build's incremental so far.
    pub incremental_failures: u32,
    /// The choice.
    #[serde(flatten)]
    pub decision: Decision,
    /// The package's URL, when one is to be installed.
    pub url: Option<String>,
}

/// A device's view of one repository.
pub struct Updater {
    transport: Arc<Transport>,
    opts: Options,
    package_bytes: std::sync::atomic::AtomicU64,
}

impl Updater {
    /// An updater fetching through `transport`.
    pub fn new(transport: Arc<Transport>, opts: Options) -> Updater {
        Updater {
            transport,
            opts,
            package_bytes: Default::default(),
        }
    }

    /// Bytes received so far, metadata and packages.
    pub fn received(&self) -> u64 {
        self.transport.received()
    }

    /// Bytes of packages received so far (windows completed).
    pub fn package_bytes(&self) -> u64 {
        self.package_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn url(&self, sub: &str) -> String {
        format!("{}/{sub}", self.opts.repo.trim_end_matches('/'))
    }

    /// Refreshes the metadata and chooses the update for `device`, without
    /// installing.
    pub fn check(&self, device: &Device) -> Result<Check, ReleaseError> {
        let dir = &self.opts.state;
        let installed = device.build(device.state().active)?.ok_or_else(|| {
            ReleaseError::Invalid(
                "the installed build is unknown (the device records no build.prop): its line, and so its catalog, cannot be chosen".into(),
            )
        })?;
        let mut client = Client::open(&dir.join("tuf"), &self.url("metadata"), &*self.transport)
            .map_err(|e| match e {
                romdelta_tuf::TufError::Io { .. } => ReleaseError::Invalid(format!(
                    "the device trusts no repository root yet ({e}): provision it with --root ROOT.json"
                )),
                e => e.into(),
            })?
            .at(self.opts.now);
        client.refresh()?;
        let cpath = catalog_path(&installed);
        let info = client.target(&cpath).map_err(|e| match e {
            romdelta_tuf::TufError::NoSuchTarget(_) => ReleaseError::Invalid(format!(
                "the repository publishes nothing for this device's line ({}): no {cpath}",
                describe(&installed)
            )),
            e => e.into(),
        })?;
        let bytes = client.fetch_target(&self.url("targets"), &cpath, &info)?;
        let catalog =
            Catalog::parse(&bytes).map_err(|e| ReleaseError::Invalid(format!("{cpath}: {e}")))?;
        if (
            catalog.device.as_str(),
            catalog.region.as_str(),
            catalog.channel.as_str(),
        ) != (
            installed.device.as_str(),
            installed.region.as_str(),
            installed.channel.as_str(),
        ) {
            return Err(ReleaseError::Invalid(format!(
                "{cpath} is the catalog of device={} region={} channel={}, not of the installed line ({})",
                catalog.device,
                catalog.region,
                catalog.channel,
                describe(&installed)
            )));
        }
        let (decision, failed) = choose_after_failures(
            &catalog,
            Some(&installed),
            self.opts.seed,
            self.opts.now,
            |b| failures(dir, b),
            self.opts.attempts,
        );
        let url = match &decision {
            Decision::Install { package, .. } => {
                let signed = client.target(&package.target)?;
                if signed.length != package.length || signed.hashes[0].1 != package.sha256 {
                    return Err(ReleaseError::Invalid(format!(
                        "{cpath} lists {} with {} bytes and sha256 {}, the signed targets give {} bytes and {}",
                        package.target, package.length, package.sha256, signed.length, signed.hashes[0].1
                    )));
                }
                Some(target_url(
                    &self.url("targets"),
                    &package.target,
                    &signed,
                    client.consistent(),
                ))
            }
            _ => None,
        };
        Ok(Check {
            installed,
            catalog: cpath,
            root_version: client.root().common.version,
            incremental_failures: failed,
            decision,
            url,
        })
    }

    /// Checks, then installs what was chosen (if anything) while it
    /// downloads. Returns the check and the install's report.
    pub fn update(
        &self,
        device: &mut Device,
        admit: &romdelta_recovery::Admit<'_>,
        allow: Allow,
    ) -> Result<(Check, Option<InstallReport>), ReleaseError> {
        let dir = &self.opts.state;
        loop {
            let check = self.check(device)?;
            let (
                Decision::Install {
                    build,
                    kind,
                    package,
                    ..
                },
                Some(url),
            ) = (&check.decision, &check.url)
            else {
                return Ok((check, None));
            };
            let range = Arc::new(RangeFile::new(self.transport.clone(), url, package.length));
            let installed = PackageFile::from_source(
                Path::new(url),
                Box::new(SharedRange(range.clone())),
                package.length,
            )
            .map_err(ReleaseError::from)
            .and_then(|file| {
                // Progress is made durable often enough that a kill or a
                // power cut costs a small part of the download: about every
                // 1/128 of the output (64 KiB to 16 MiB), or as often as
                // the device already does.
                if let Ok(m) = file.manifest() {
                    let total: u64 = m.partitions.iter().map(|p| p.new.size).sum();
                    let every = device.checkpoint();
                    device.checkpoint_every(romdelta_apply::CheckpointEvery {
                        bytes: (total / 128).clamp(64 << 10, 16 << 20).min(every.bytes),
                        interval: every.interval,
                    });
                }
                Ok(device.install_from(&file, admit, allow)?)
            });
            self.package_bytes
                .fetch_add(range.received(), std::sync::atomic::Ordering::Relaxed);
            // What the server sent breaks the signed metadata: refused.
            // Any other failed download is resumed by the next run.
            let fetch_failure = installed.as_ref().err().and_then(|_| range.take_error());
            match (installed, fetch_failure) {
                (Ok(report), _) => {
                    let _ = std::fs::remove_file(attempts_path(dir));
                    return Ok((check, Some(report)));
                }
                (Err(_), Some(failure)) => {
                    return Err(match failure {
                        romdelta_tuf::FetchError::Refused(why) => {
                            ReleaseError::Invalid(format!("{url}: {why}"))
                        }
                        romdelta_tuf::FetchError::TooLong(n) => ReleaseError::Invalid(format!(
                            "{url}: the server sent more than the {n} bytes asked for: refused as endless data"
                        )),
                        f => ReleaseError::Download {
                            url: url.clone(),
                            reason: f.to_string(),
                        },
                    })
                }
                (Err(e), None) if kind == "incremental" => {
                    let n = failures(dir, build) + 1;
                    record_failures(dir, build, n)?;
                    if n < self.opts.attempts {
                        return Err(ReleaseError::Invalid(format!(
                            "the incremental failed to install ({e}); attempt {n} of {}: the next run tries it again, then the full package",
                            self.opts.attempts
                        )));
                    }
                    // Taken again: now the full package is chosen.
                }
                (Err(e), None) => return Err(e),
            }
        }
    }
}

/// A range file shared between the install and the updater, which asks
/// afterwards which fetch failed, if one did.
struct SharedRange(Arc<RangeFile>);

impl romdelta_apply::PackageSource for SharedRange {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
}
