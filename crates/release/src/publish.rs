//! `romdelta publish`: packages into a release repository.
//!
//! Each package is read (its signature checked against the vendor's keys),
//! stored as the target `packages/DEVICE/REGION/CHANNEL/KIND-HASH.romdelta`,
//! and entered in its line's catalog under its target build: as the full
//! package, or as the incremental from its source build. Then the targets,
//! snapshot and timestamp are signed again, in that order.

use crate::catalog::{catalog_path, segment, Catalog, Incremental, PackageRef, Wave};
use crate::ReleaseError;
use romdelta_apply::rules::describe;
use romdelta_apply::PackageFile;
use romdelta_format::{BuildInfo, PackageKind, Signature};
use romdelta_tuf::repo::Repository;
use serde::Serialize;
use std::path::PathBuf;

/// The online keys a publish signs with.
pub struct Keys<'k> {
    /// Targets role.
    pub targets: Vec<&'k romdelta_format::signing::SigningKey>,
    /// Snapshot role.
    pub snapshot: Vec<&'k romdelta_format::signing::SigningKey>,
    /// Timestamp role.
    pub timestamp: Vec<&'k romdelta_format::signing::SigningKey>,
}

/// Checks a package's signatures (manifest bytes, signatures).
pub type Admit<'a> = dyn Fn(&[u8], &[Signature]) -> Result<(), romdelta_apply::ApplyError> + 'a;

/// One package published.
#[derive(Debug, Clone, Serialize)]
pub struct Added {
    /// Its target path.
    pub target: String,
    /// `full` or `incremental`.
    pub kind: String,
    /// The build it installs.
    pub build: BuildInfo,
    /// The build an incremental applies to.
    pub base: Option<BuildInfo>,
    /// Its length.
    pub length: u64,
    /// The catalog it is listed in.
    pub catalog: String,
}

/// Adds `packages` to `repo` and signs the result. `rollout`, if given,
/// becomes the staged rollout of every build these packages install.
pub fn publish(
    repo: &mut Repository,
    packages: &[PathBuf],
    rollout: &[Wave],
    admit: &Admit<'_>,
    keys: &Keys<'_>,
    now: i64,
) -> Result<Vec<Added>, ReleaseError> {
    let mut added = Vec::new();
    let mut catalogs: Vec<(String, Catalog)> = Vec::new();
    for path in packages {
        let file = PackageFile::open(path)?;
        let prefix = file.prefix();
        admit(&prefix.manifest_bytes, &prefix.signatures)?;
        let m = file.manifest()?;
        let build = m.target_build.clone();
        if build.device.is_empty() || (build.fingerprint.is_empty() && build.version.is_empty()) {
            return Err(ReleaseError::Invalid(format!(
                "{}: its target build ({}) names no device and version or fingerprint: devices could not choose it",
                path.display(),
                describe(&build)
            )));
        }
        let base = match m.kind {
            PackageKind::Full => None,
            PackageKind::Delta => Some(m.source_build.clone().ok_or_else(|| {
                ReleaseError::Invalid(format!(
                    "{}: an incremental that does not record its source build",
                    path.display()
                ))
            })?),
        };
        let cpath = catalog_path(&build);
        let ci = match catalogs.iter().position(|(p, _)| *p == cpath) {
            Some(i) => i,
            None => {
                let c = match repo.read_target(&cpath)? {
                    Some(b) => Catalog::parse(&b)
                        .map_err(|e| ReleaseError::Invalid(format!("{cpath}: {e}")))?,
                    None => Catalog::new(&build),
                };
                catalogs.push((cpath.clone(), c));
                catalogs.len() - 1
            }
        };
        let kind = if base.is_some() {
            "incremental"
        } else {
            "full"
        };
        // Target name by content: republishing the same package is a no-op.
        let (length, sha256) = romdelta_tuf::repo::hash_file(path)?;
        let target = format!(
            "packages/{}/{}/{}/{kind}-{}.romdelta",
            segment(&build.device),
            segment(&build.region),
            segment(&build.channel),
            &sha256[..16]
        );
        let info = repo.add_hashed_target(&target, path, length, sha256, None)?;
        let pref = PackageRef {
            target: target.clone(),
            length: info.length,
            sha256: info.hashes[0].1.clone(),
        };
        let entry = catalogs[ci].1.entry(&build, now);
        match &base {
            None => entry.full = Some(pref),
            Some(b) => {
                entry
                    .incrementals
                    .retain(|x| !romdelta_apply::rules::same_build(&x.base, b));
                entry.incrementals.push(Incremental {
                    base: b.clone(),
                    package: pref,
                });
            }
        }
        if !rollout.is_empty() {
            entry.rollout = rollout.to_vec();
        }
        added.push(Added {
            target,
            kind: kind.into(),
            build,
            base,
            length: info.length,
            catalog: cpath,
        });
    }
    for (p, c) in &catalogs {
        repo.add_target_bytes(p, &c.to_bytes(), None)?;
    }
    repo.commit(&keys.targets, &keys.snapshot, &keys.timestamp)?;
    Ok(added)
}
