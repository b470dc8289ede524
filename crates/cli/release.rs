//! `romdelta repo`, `publish`, `tuf-client` and `recovery check|update`:
//! the release repository and the device's side of it.

use crate::args::{OnlineKeys, RepoCommand, RepoSource, RootRoles, TufClientCommand};
use crate::{print_json, read_key, with_threads, Failure, TrustPolicy};
use anyhow::anyhow;
use romdelta_apply::rules::{describe, Allow};
use romdelta_format::signing::{parse_private_key, parse_public_key, SigningKey, VerifyingKey};
use romdelta_release::catalog::{Decision, Wave};
use romdelta_release::fetch::{FetchOptions, Transport};
use romdelta_release::update::{Options, Updater};
use romdelta_release::ReleaseError;
use romdelta_tuf::repo::{Expiry, Repository, RoleSpec};
use romdelta_tuf::TufError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

impl From<TufError> for Failure {
    fn from(e: TufError) -> Self {
        match e {
            TufError::Io { .. } => Failure::io(e.into()),
            e => Failure::refused(e.into()),
        }
    }
}

impl From<ReleaseError> for Failure {
    fn from(e: ReleaseError) -> Self {
        match e {
            ReleaseError::Tuf(t) => t.into(),
            ReleaseError::Apply(a) => a.into(),
            ReleaseError::Recovery(r) => r.into(),
            e @ ReleaseError::Download { .. } => Failure::io(e.into()),
            e => Failure::refused(e.into()),
        }
    }
}

fn private_keys(paths: &[PathBuf]) -> Result<Vec<SigningKey>, Failure> {
    paths
        .iter()
        .map(|p| read_key(p, parse_private_key))
        .collect()
}

/// A public key from a public or a private key file.
fn public_key(path: &Path) -> Result<VerifyingKey, Failure> {
    read_key(path, |text| {
        parse_public_key(text).or_else(|_| parse_private_key(text).map(|k| k.verifying_key()))
    })
}

fn role_specs(r: &RootRoles) -> Result<BTreeMap<String, RoleSpec>, Failure> {
    let spec = |paths: &[PathBuf], threshold: u64| -> Result<RoleSpec, Failure> {
        Ok(RoleSpec {
            keys: paths
                .iter()
                .map(|p| public_key(p))
                .collect::<Result<_, _>>()?,
            threshold,
        })
    };
    Ok(BTreeMap::from([
        ("root".to_string(), spec(&r.root, r.root_threshold)?),
        ("targets".to_string(), spec(&r.targets, 1)?),
        ("snapshot".to_string(), spec(&r.snapshot, 1)?),
        ("timestamp".to_string(), spec(&r.timestamp, 1)?),
    ]))
}

/// Runs `romdelta repo`.
pub fn repo(command: RepoCommand) -> Result<(), Failure> {
    match command {
        RepoCommand::Init { repo, roles, json } => {
            let specs = role_specs(&roles)?;
            let signers = roles
                .root
                .iter()
                .filter_map(|p| read_key(p, parse_private_key).ok())
                .collect::<Vec<_>>();
            let expiry = Expiry {
                root: roles.root_expires_days * 86_400,
                ..Expiry::default()
            };
            let refs: Vec<&SigningKey> = signers.iter().collect();
            let r = Repository::create(&repo, &specs, &refs, expiry)?;
            report_root(&repo, r.root(), json);
            Ok(())
        }
        RepoCommand::RotateRoot {
            repo,
            sign,
            roles,
            json,
        } => {
            let specs = role_specs(&roles)?;
            let signers = private_keys(&sign)?;
            let refs: Vec<&SigningKey> = signers.iter().collect();
            let mut r = Repository::open(&repo)?;
            r.expiry.root = roles.root_expires_days * 86_400;
            r.rotate_root(&specs, &refs)?;
            report_root(&repo, r.root(), json);
            Ok(())
        }
        RepoCommand::Timestamp { repo, keys } => {
            let keys = private_keys(&keys)?;
            let refs: Vec<&SigningKey> = keys.iter().collect();
            let mut r = Repository::open(&repo)?;
            r.refresh_timestamp(&refs)?;
            say!(
                "{}: a new timestamp for the current snapshot",
                repo.display()
            );
            Ok(())
        }
    }
}

fn report_root(repo: &Path, root: &romdelta_tuf::metadata::Root, json: bool) {
    let v = root.common.version;
    let path = repo.join("metadata").join(format!("{v}.root.json"));
    if json {
        print_json(&serde_json::json!({
            "root": path,
            "version": v,
            "expires": root.common.expires,
            "roles": root.roles,
        }));
    } else {
        say!(
            "{}: root version {v} (expires {}); give devices {} as their trusted root",
            repo.display(),
            root.common.expires,
            path.display()
        );
    }
}

/// Runs `romdelta publish`.
#[allow(clippy::too_many_arguments)]
pub fn publish(
    packages: Vec<PathBuf>,
    repo: PathBuf,
    online: OnlineKeys,
    trust: crate::args::Trust,
    waves: Vec<String>,
    json: bool,
) -> Result<(), Failure> {
    let policy = TrustPolicy::load(&trust)?;
    if policy.keys().is_empty() && !policy.insecure() {
        return Err(Failure::usage(anyhow!(
            "publish needs the vendor's package key (--trusted-key PUB): a repository only serves packages its vendor signed"
        )));
    }
    let waves = waves
        .iter()
        .map(|w| Wave::parse(w))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::usage(anyhow!(e)))?;
    let (t, s, ts) = (
        private_keys(&online.targets)?,
        private_keys(&online.snapshot)?,
        private_keys(&online.timestamp)?,
    );
    let keys = romdelta_release::publish::Keys {
        targets: t.iter().collect(),
        snapshot: s.iter().collect(),
        timestamp: ts.iter().collect(),
    };
    let mut r = Repository::open(&repo)?;
    let admit = |m: &[u8], sigs: &[romdelta_format::Signature]| {
        romdelta_apply::check_trust(m, sigs, policy.keys(), policy.insecure())
    };
    let now = romdelta_tuf::time::now();
    let added = romdelta_release::publish::publish(&mut r, &packages, &waves, &admit, &keys, now)?;
    if json {
        print_json(&added);
    } else {
        for a in &added {
            say!(
                "published {} ({} bytes): {} {}{}",
                a.target,
                a.length,
                a.kind,
                describe(&a.build),
                a.base
                    .as_ref()
                    .map(|b| format!(" from {}", describe(b)))
                    .unwrap_or_default()
            );
        }
        say!("{}: targets, snapshot and timestamp signed", repo.display());
    }
    Ok(())
}

/// Runs `romdelta tuf-client` (CLIENT-CLI.md of TUF's conformance suite):
/// exit code 0 on success, 1 on any failure.
pub fn tuf_client(
    metadata_dir: PathBuf,
    metadata_url: Option<String>,
    target_name: Option<String>,
    target_base_url: Option<String>,
    target_dir: Option<PathBuf>,
    command: TufClientCommand,
) -> Result<(), Failure> {
    let need = |v: Option<String>, what: &str| {
        v.ok_or_else(|| Failure::refused(anyhow!("{what} is needed")))
    };
    let transport = Transport::new(FetchOptions {
        attempts: 1,
        ..FetchOptions::default()
    });
    let fail = |e: TufError| Failure::refused(e.into());
    match command {
        TufClientCommand::Init { root } => {
            let bytes = std::fs::read(&root)
                .map_err(|e| Failure::refused(anyhow!("{}: {e}", root.display())))?;
            romdelta_tuf::Client::init(&metadata_dir, &bytes).map_err(fail)
        }
        TufClientCommand::Refresh => {
            let url = need(metadata_url, "--metadata-url")?;
            let mut c =
                romdelta_tuf::Client::open(&metadata_dir, &url, &transport).map_err(fail)?;
            c.refresh().map_err(fail)
        }
        TufClientCommand::Download => {
            let url = need(metadata_url, "--metadata-url")?;
            let name = need(target_name, "--target-name")?;
            let base = need(target_base_url, "--target-base-url")?;
            let dir =
                target_dir.ok_or_else(|| Failure::refused(anyhow!("--target-dir is needed")))?;
            let mut c =
                romdelta_tuf::Client::open(&metadata_dir, &url, &transport).map_err(fail)?;
            c.refresh().map_err(fail)?;
            let info = c.target(&name).map_err(fail)?;
            let out = dir.join(romdelta_tuf::quote(&name));
            // A copy already there with the signed length and hashes is kept.
            if let Ok(b) = std::fs::read(&out) {
                if romdelta_tuf::metadata::check_file(&name, &b, Some(info.length), &info.hashes)
                    .is_ok()
                {
                    return Ok(());
                }
            }
            let bytes = c.fetch_target(&base, &name, &info).map_err(fail)?;
            std::fs::create_dir_all(&dir)
                .map_err(|e| Failure::refused(anyhow!("{}: {e}", dir.display())))?;
            romdelta_tuf::client::write_durably(&out, &bytes).map_err(fail)
        }
    }
}

/// The device's rollout seed: given, else drawn once and kept.
fn seed(source: &RepoSource) -> Result<u64, Failure> {
    if let Some(s) = source.seed {
        return Ok(s);
    }
    let path = romdelta_release::update::ota_dir(&source.device).join("seed");
    if let Some(s) = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| t.trim().parse().ok())
    {
        return Ok(s);
    }
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| Failure::io(anyhow!("drawing a seed: {e}")))?;
    let s = u64::from_le_bytes(b);
    std::fs::create_dir_all(path.parent().expect("below the device"))
        .map_err(|e| Failure::io(anyhow!("{}: {e}", path.display())))?;
    romdelta_tuf::client::write_durably(&path, format!("{s}\n").as_bytes())?;
    Ok(s)
}

fn updater(source: &RepoSource) -> Result<Updater, Failure> {
    let state = romdelta_release::update::ota_dir(&source.device);
    if let Some(root) = &source.root {
        let bytes =
            std::fs::read(root).map_err(|e| Failure::io(anyhow!("{}: {e}", root.display())))?;
        if !state.join("tuf/root.json").exists() {
            romdelta_release::update::provision(&state, &bytes)?;
        }
    }
    let transport = Arc::new(Transport::new(FetchOptions {
        attempts: source.retries,
        stall: std::time::Duration::from_secs(source.stall_timeout),
        ..FetchOptions::default()
    }));
    let now = std::env::var("ROMDELTA_NOW")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(romdelta_tuf::time::now);
    Ok(Updater::new(
        transport,
        Options {
            repo: source.repo.clone(),
            seed: seed(source)?,
            now,
            attempts: source.attempts,
            state,
        },
    ))
}

fn say_decision(d: &Decision) {
    match d {
        Decision::UpToDate { reason } => say!("up to date: {reason}"),
        Decision::Waiting {
            build,
            bucket,
            percent,
            next_wave,
        } => say!(
            "{} is being rolled out to {percent}% of devices; this device is at {bucket}%{}",
            describe(build),
            next_wave
                .map(|t| format!(", next wave at {}", romdelta_tuf::time::format(t)))
                .unwrap_or_default()
        ),
        Decision::Install {
            build,
            kind,
            package,
            reason,
        } => say!(
            "install {} ({kind}, {} bytes, {}): {reason}",
            describe(build),
            package.length,
            package.target
        ),
    }
}

/// Runs `romdelta recovery check`.
pub fn check(source: RepoSource) -> Result<(), Failure> {
    let u = updater(&source)?;
    let device = romdelta_recovery::Device::open(&source.device)?;
    let check = u.check(&device)?;
    if source.json {
        print_json(&check);
    } else {
        say!(
            "installed {} ({})",
            describe(&check.installed),
            check.catalog
        );
        say_decision(&check.decision);
    }
    Ok(())
}

/// Runs `romdelta recovery update`.
pub fn update(
    source: RepoSource,
    trust: crate::args::Trust,
    threads: crate::args::Threads,
) -> Result<(), Failure> {
    let policy = TrustPolicy::load(&trust)?;
    let u = updater(&source)?;
    let mut device = romdelta_recovery::Device::open(&source.device)?;
    let admit = |m: &[u8], sigs: &[romdelta_format::Signature]| {
        romdelta_apply::check_trust(m, sigs, policy.keys(), policy.insecure())
    };
    let started = std::time::Instant::now();
    let (check, report) =
        with_threads(threads, || u.update(&mut device, &admit, Allow::default()))??;
    if source.json {
        print_json(&serde_json::json!({
            "check": check,
            "installed": report,
            "bytes_received": u.received(),
            "package_bytes_received": u.package_bytes(),
            "seconds": started.elapsed().as_secs_f64(),
        }));
    } else {
        say_decision(&check.decision);
        if let Some(r) = report {
            say!(
                "installed {} in {:.1} s; {} bytes received; every partition verified",
                describe(&r.build),
                started.elapsed().as_secs_f64(),
                u.received()
            );
            if r.resumed_ops > 0 {
                say!(
                    "  resumed: {} operations were already written by an interrupted update",
                    r.resumed_ops
                );
            }
        }
    }
    Ok(())
}
