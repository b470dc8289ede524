//! The client's update workflow (TUF specification §5), with the trusted
//! metadata kept in a directory of its own:
//!
//! 1. the trusted root, read from `root.json` and checked against itself;
//! 2. root rotation: `N+1.root.json`, `N+2.root.json`, ... each signed by a
//!    threshold of the previous root's root keys and of its own, each
//!    exactly one version newer, until the repository has no newer one;
//!    the newest root must not have expired (freeze);
//! 3. `timestamp.json`: signed by the root's timestamp keys, not older
//!    than the trusted one, nor naming an older snapshot (rollback), not
//!    expired;
//! 4. the snapshot the timestamp names: its length and hashes, the
//!    snapshot keys, exactly the version named (mix-and-match), no targets
//!    file older than, or missing from, the trusted snapshot's; not expired;
//! 5. `targets.json` (and, on a search, delegated roles): the length and
//!    hashes, the delegator's keys, exactly the version the snapshot
//!    names, not expired.
//!
//! Every fetch is bounded: by the signed length where one is given, else by
//! [`Limits`]. A trusted file is written (synced, then renamed) only after
//! it passed every check.

use crate::metadata::{
    check_file, Envelope, HasCommon, Key, MetaFile, RoleKeys, Root, Snapshot, TargetFile, Targets,
    Timestamp,
};
use crate::{quote, time, TufError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// 404 or 403, or no such file: the repository does not have it.
    #[error("not found")]
    NotFound,
    /// More bytes than allowed arrived (endless data).
    #[error("more than the {0} bytes allowed")]
    TooLong(u64),
    /// What the server sent breaks the signed metadata (a file of another
    /// length than signed): no retry helps.
    #[error("{0}")]
    Refused(String),
    /// Anything else (after the fetcher's own retries).
    #[error("{0}")]
    Other(String),
}

/// Gets the bytes at a URL, at most `max_len` of them.
pub trait Fetcher {
    /// The whole file at `url`; more than `max_len` bytes is
    /// [`FetchError::TooLong`].
    fn fetch(&self, url: &str, max_len: u64) -> Result<Vec<u8>, FetchError>;
}

/// The most bytes a metadata file may have when no signed length bounds it
/// (python-tuf's defaults), and how far searches go.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `N.root.json`.
    pub root: u64,
    /// `timestamp.json`.
    pub timestamp: u64,
    /// The snapshot, when the timestamp gives no length.
    pub snapshot: u64,
    /// A targets file, when the snapshot gives no length.
    pub targets: u64,
    /// Root versions taken in one refresh.
    pub root_rotations: u64,
    /// Roles visited in one target search.
    pub delegations: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            root: 512_000,
            timestamp: 16_384,
            snapshot: 2_000_000,
            targets: 5_000_000,
            root_rotations: 256,
            delegations: 32,
        }
    }
}

/// A client's trusted metadata and the repository it refreshes from.
pub struct Client<'a> {
    dir: PathBuf,
    metadata_url: String,
    fetcher: &'a dyn Fetcher,
    limits: Limits,
    now: i64,
    root: Root,
    timestamp: Option<Timestamp>,
    snapshot: Option<Snapshot>,
    /// `targets` and the delegated roles loaded so far.
    targets: BTreeMap<String, Loaded>,
    refreshed: bool,
}

/// A targets role as loaded: what it says, its bytes, and the delegator
/// whose keys verified them (`None`: the root's targets keys).
struct Loaded {
    targets: Targets,
    bytes: Vec<u8>,
    via: Option<String>,
}

/// Writes `bytes` to `path` durably (romdelta-storage's temporary file,
/// sync, rename and directory sync).
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), TufError> {
    romdelta_storage::write_durably(&romdelta_storage::RealFs, path, bytes)
        .map_err(TufError::io(path))
}

fn root_role<'r>(root: &'r Root, role: &str) -> Result<&'r RoleKeys, TufError> {
    root.roles
        .get(role)
        .ok_or_else(|| TufError::invalid("root", format!("it names no {role} role")))
}

/// Checks `env` is a root signed by a threshold of its own root keys.
fn self_signed_root(env: &Envelope) -> Result<Root, TufError> {
    let root: Root = env.decode("root", "root")?;
    for r in ["root", "timestamp", "snapshot", "targets"] {
        root_role(&root, r)?;
    }
    env.verify("root", &root.keys, root_role(&root, "root")?)?;
    Ok(root)
}

impl<'a> Client<'a> {
    /// Makes `dir` a client's metadata directory trusting `root` (the bytes
    /// of a root metadata file, which must be signed by its own keys).
    pub fn init(dir: &Path, root: &[u8]) -> Result<(), TufError> {
        self_signed_root(&Envelope::parse("root", root)?)?;
        std::fs::create_dir_all(dir).map_err(TufError::io(dir))?;
        write_durably(&dir.join("root.json"), root)
    }

    /// Opens the client whose trusted metadata is in `dir`, to refresh from
    /// `metadata_url` (a directory URL) through `fetcher`.
    pub fn open(
        dir: &Path,
        metadata_url: &str,
        fetcher: &'a dyn Fetcher,
    ) -> Result<Self, TufError> {
        let path = dir.join("root.json");
        let bytes = std::fs::read(&path).map_err(TufError::io(&path))?;
        let root = self_signed_root(&Envelope::parse("root", &bytes)?)?;
        let mut url = metadata_url.to_string();
        if !url.ends_with('/') {
            url.push('/');
        }
        Ok(Client {
            dir: dir.to_path_buf(),
            metadata_url: url,
            fetcher,
            limits: Limits::default(),
            now: time::now(),
            root,
            timestamp: None,
            snapshot: None,
            targets: BTreeMap::new(),
            refreshed: false,
        })
    }

    /// Checks expiry against `now` (seconds since the epoch) instead of the
    /// clock.
    pub fn at(mut self, now: i64) -> Self {
        self.now = now;
        self
    }

    /// Uses other bounds.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The trusted root.
    pub fn root(&self) -> &Root {
        &self.root
    }

    fn expired(&self, role: &str, m: &impl HasCommon) -> Result<(), TufError> {
        if m.expires() <= self.now {
            return Err(TufError::Expired {
                role: role.to_string(),
                expires: m.common().expires.clone(),
                now: time::format(self.now),
            });
        }
        Ok(())
    }

    fn fetch(&self, what: &str, name: &str, max: u64) -> Result<Vec<u8>, TufError> {
        let url = format!("{}{name}", self.metadata_url);
        self.fetcher
            .fetch(&url, max)
            .map_err(|e| fetch_error(what, url, e))
    }

    fn local(&self, role: &str) -> Option<Vec<u8>> {
        std::fs::read(self.dir.join(format!("{}.json", quote(role)))).ok()
    }

    fn persist(&self, role: &str, bytes: &[u8]) -> Result<(), TufError> {
        write_durably(&self.dir.join(format!("{}.json", quote(role))), bytes)
    }

    /// Refreshes the top-level metadata (§5.3–5.6).
    pub fn refresh(&mut self) -> Result<(), TufError> {
        self.update_root()?;
        self.update_timestamp()?;
        self.update_snapshot()?;
        self.load_targets("targets", None)?;
        self.refreshed = true;
        Ok(())
    }

    fn update_root(&mut self) -> Result<(), TufError> {
        let first = self.root.version() + 1;
        for v in first..first.saturating_add(self.limits.root_rotations) {
            let url = format!("{}{v}.root.json", self.metadata_url);
            let bytes = match self.fetcher.fetch(&url, self.limits.root) {
                Err(FetchError::NotFound) => break,
                r => r.map_err(|e| fetch_error("root", url, e))?,
            };
            let env = Envelope::parse("root", &bytes)?;
            // The old root's keys vouch for the new root, and the new one's
            // own keys for itself.
            env.verify("root", &self.root.keys, root_role(&self.root, "root")?)
                .map_err(|e| match e {
                    TufError::Threshold { have, need, .. } => TufError::Invalid {
                        what: format!("root version {v}"),
                        reason: format!("signed by {have} of the trusted root's keys, {need} needed: a root rotated without the old threshold is refused"),
                    },
                    e => e,
                })?;
            let new = self_signed_root(&env)?;
            if new.version() != v {
                return Err(TufError::Version {
                    role: "root".into(),
                    by: format!("its file name {v}.root.json"),
                    expected: v,
                    got: new.version(),
                });
            }
            self.persist("root", &bytes)?;
            self.root = new;
        }
        self.expired("root", &self.root.clone())
    }

    /// A timestamp, checked against the root and the trusted timestamp.
    fn check_timestamp(&self, bytes: &[u8]) -> Result<Timestamp, TufError> {
        let env = Envelope::parse("timestamp", bytes)?;
        env.verify(
            "timestamp",
            &self.root.keys,
            root_role(&self.root, "timestamp")?,
        )?;
        let new: Timestamp = env.decode("timestamp", "timestamp")?;
        new.snapshot()?;
        Ok(new)
    }

    fn update_timestamp(&mut self) -> Result<(), TufError> {
        // The local timestamp, if the current root's keys still sign it,
        // is what a new one must not be older than.
        self.timestamp = self
            .local("timestamp")
            .and_then(|b| self.check_timestamp(&b).ok());
        let bytes = self.fetch("timestamp", "timestamp.json", self.limits.timestamp)?;
        let new = self.check_timestamp(&bytes)?;
        if let Some(old) = &self.timestamp {
            if new.version() < old.version() {
                return Err(TufError::Rollback {
                    role: "timestamp".into(),
                    have: old.version(),
                    got: new.version(),
                });
            }
            let (o, n) = (old.snapshot()?.version, new.snapshot()?.version);
            if n < o {
                return Err(TufError::Rollback {
                    role: "snapshot (as the timestamp names it)".into(),
                    have: o,
                    got: n,
                });
            }
            if new.version() == old.version() {
                // The same version again: the trusted one stays.
                return self.expired("timestamp", old);
            }
        }
        self.expired("timestamp", &new)?;
        self.persist("timestamp", &bytes)?;
        self.timestamp = Some(new);
        Ok(())
    }

    /// A snapshot checked against the root, the timestamp's description of
    /// it (`fetched`: length and hashes too) and the trusted snapshot.
    fn check_snapshot(&self, bytes: &[u8], fetched: bool) -> Result<Snapshot, TufError> {
        let meta = self.timestamp.as_ref().expect("loaded first").snapshot()?;
        if fetched {
            check_meta("snapshot", bytes, meta)?;
        }
        let env = Envelope::parse("snapshot", bytes)?;
        env.verify(
            "snapshot",
            &self.root.keys,
            root_role(&self.root, "snapshot")?,
        )?;
        let new: Snapshot = env.decode("snapshot", "snapshot")?;
        if let Some(old) = &self.snapshot {
            for (name, m) in &old.meta {
                match new.meta.get(name) {
                    None => {
                        return Err(TufError::invalid(
                            "snapshot",
                            format!(
                                "{name} is missing from the new snapshot: refused as a rollback"
                            ),
                        ))
                    }
                    Some(n) if n.version < m.version => {
                        return Err(TufError::Rollback {
                            role: format!("{name} (as the snapshot names it)"),
                            have: m.version,
                            got: n.version,
                        })
                    }
                    Some(_) => {}
                }
            }
        }
        if new.version() != meta.version {
            return Err(TufError::Version {
                role: "snapshot".into(),
                by: "the timestamp".into(),
                expected: meta.version,
                got: new.version(),
            });
        }
        self.expired("snapshot", &new)?;
        Ok(new)
    }

    fn update_snapshot(&mut self) -> Result<(), TufError> {
        // A local snapshot that still verifies is the reference for
        // rollback; if it is the very version the timestamp names, it is
        // used as it is.
        self.snapshot = None;
        if let Some(b) = self.local("snapshot") {
            if let Ok(s) = self.check_snapshot(&b, false) {
                self.snapshot = Some(s);
                return Ok(());
            }
            let trusted = Envelope::parse("snapshot", &b).ok().and_then(|env| {
                env.verify(
                    "snapshot",
                    &self.root.keys,
                    root_role(&self.root, "snapshot").ok()?,
                )
                .ok()?;
                env.decode::<Snapshot>("snapshot", "snapshot").ok()
            });
            self.snapshot = trusted;
        }
        let meta = self
            .timestamp
            .as_ref()
            .expect("loaded first")
            .snapshot()?
            .clone();
        let name = if self.root.consistent_snapshot {
            format!("{}.snapshot.json", meta.version)
        } else {
            "snapshot.json".into()
        };
        let bytes = self.fetch(
            "snapshot",
            &name,
            meta.length.unwrap_or(self.limits.snapshot),
        )?;
        let new = self.check_snapshot(&bytes, true)?;
        self.persist("snapshot", &bytes)?;
        // Targets trusted under the old snapshot are read again.
        self.targets.clear();
        self.snapshot = Some(new);
        Ok(())
    }

    /// The keys and threshold that sign `role`: the root's targets role for
    /// `targets`, else the delegation of `delegator`.
    fn signers(
        &self,
        role: &str,
        delegator: Option<&str>,
    ) -> Result<(BTreeMap<String, Key>, RoleKeys), TufError> {
        match delegator {
            None => Ok((
                self.root.keys.clone(),
                root_role(&self.root, "targets")?.clone(),
            )),
            Some(d) => {
                let parent = &self.targets[d].targets;
                let del = parent.delegations.as_ref().expect("searched through it");
                let (keyids, threshold) = match &del.succinct_roles {
                    Some(s) if s.is_bin(role) => (s.keyids.clone(), s.threshold),
                    _ => del
                        .roles
                        .iter()
                        .find(|r| r.name == role)
                        .map(|r| (r.keyids.clone(), r.threshold))
                        .expect("searched through it"),
                };
                Ok((del.keys.clone(), RoleKeys { keyids, threshold }))
            }
        }
    }

    fn check_targets(
        &self,
        role: &str,
        delegator: Option<&str>,
        bytes: &[u8],
        meta: &MetaFile,
        fetched: bool,
    ) -> Result<Targets, TufError> {
        if fetched {
            check_meta(role, bytes, meta)?;
        }
        let env = Envelope::parse(role, bytes)?;
        let (keys, signers) = self.signers(role, delegator)?;
        env.verify(role, &keys, &signers)?;
        let t: Targets = env.decode(role, "targets")?;
        if t.version() != meta.version {
            return Err(TufError::Version {
                role: role.to_string(),
                by: "the snapshot".into(),
                expected: meta.version,
                got: t.version(),
            });
        }
        self.expired(role, &t)?;
        Ok(t)
    }

    /// Loads `role` (the local copy if it is still current, else the
    /// repository's).
    ///
    /// A role already loaded through another delegator is checked again
    /// against this one's keys: a role two delegators name is trusted by
    /// each only as far as its own delegation allows.
    fn load_targets(&mut self, role: &str, delegator: Option<&str>) -> Result<(), TufError> {
        let snapshot = self.snapshot.as_ref().expect("loaded first");
        let meta = snapshot
            .meta
            .get(&format!("{role}.json"))
            .ok_or_else(|| TufError::invalid("snapshot", format!("it does not name {role}.json")))?
            .clone();
        if let Some(l) = self.targets.get(role) {
            if l.via.as_deref() != delegator {
                self.check_targets(role, delegator, &l.bytes, &meta, false)?;
            }
            return Ok(());
        }
        if let Some(b) = self.local(role) {
            if let Ok(t) = self.check_targets(role, delegator, &b, &meta, false) {
                self.keep(role, delegator, t, b);
                return Ok(());
            }
        }
        let name = if self.root.consistent_snapshot {
            format!("{}.{}.json", meta.version, quote(role))
        } else {
            format!("{}.json", quote(role))
        };
        let bytes = self.fetch(role, &name, meta.length.unwrap_or(self.limits.targets))?;
        let t = self.check_targets(role, delegator, &bytes, &meta, true)?;
        self.persist(role, &bytes)?;
        self.keep(role, delegator, t, bytes);
        Ok(())
    }

    fn keep(&mut self, role: &str, via: Option<&str>, targets: Targets, bytes: Vec<u8>) {
        let via = via.map(str::to_string);
        self.targets.insert(
            role.to_string(),
            Loaded {
                targets,
                bytes,
                via,
            },
        );
    }

    /// The signed description of target `path`, searched through the
    /// delegations in TUF's order (pre-order, depth first, stopping at a
    /// terminating role). [`Client::refresh`] must have run.
    pub fn target(&mut self, path: &str) -> Result<TargetFile, TufError> {
        if !self.refreshed {
            self.refresh()?;
        }
        let mut stack: Vec<(String, Option<String>)> = vec![("targets".into(), None)];
        let mut visited = BTreeSet::new();
        let mut budget = self.limits.delegations;
        while budget > 0 {
            let Some((role, delegator)) = stack.pop() else {
                break;
            };
            if visited.contains(&role) {
                continue;
            }
            self.load_targets(&role, delegator.as_deref())?;
            let t = &self.targets[&role].targets;
            if let Some(f) = t.targets.get(path) {
                return Ok(f.clone());
            }
            visited.insert(role.clone());
            budget -= 1;
            if let Some(d) = &t.delegations {
                // Hash bins: the one bin of the path, which ends the search.
                if let Some(s) = &d.succinct_roles {
                    let bin = s.role_for(path).ok_or_else(|| {
                        TufError::invalid(
                            &role,
                            format!("a succinct bit length of {}", s.bit_length),
                        )
                    })?;
                    stack.clear();
                    stack.push((bin, Some(role.clone())));
                    continue;
                }
                let mut children = Vec::new();
                for r in d.roles.iter().filter(|r| r.matches(path)) {
                    children.push((r.name.clone(), Some(role.clone())));
                    if r.terminating {
                        stack.clear();
                        break;
                    }
                }
                children.reverse();
                stack.extend(children);
            }
        }
        Err(TufError::NoSuchTarget(path.to_string()))
    }

    /// Fetches target `path` (described by `info`, from [`Client::target`])
    /// from `base`: never more than its signed length, and its length and
    /// hashes checked.
    pub fn fetch_target(
        &self,
        base: &str,
        path: &str,
        info: &TargetFile,
    ) -> Result<Vec<u8>, TufError> {
        let url = target_url(base, path, info, self.consistent());
        let bytes = self
            .fetcher
            .fetch(&url, info.length)
            .map_err(|e| fetch_error(path, url, e))?;
        check_file(path, &bytes, Some(info.length), &info.hashes)?;
        Ok(bytes)
    }

    /// Whether the trusted root publishes targets under `HASH.NAME`.
    pub fn consistent(&self) -> bool {
        self.root.consistent_snapshot
    }
}

/// The URL of target `path` under `base`: `DIR/HASH.NAME` with the first
/// hash the metadata lists when the root publishes consistent snapshots.
pub fn target_url(base: &str, path: &str, info: &TargetFile, consistent: bool) -> String {
    let mut url = base.to_string();
    if !url.ends_with('/') {
        url.push('/');
    }
    if consistent {
        let (dir, name) = match path.rfind('/') {
            Some(i) => (&path[..=i], &path[i + 1..]),
            None => ("", path),
        };
        let hash = &info.hashes[0].1;
        url.push_str(&format!("{dir}{hash}.{name}"));
    } else {
        url.push_str(path);
    }
    url
}

/// A fetch's failure as the client reports it.
pub fn fetch_error(what: &str, url: String, e: FetchError) -> TufError {
    match e {
        FetchError::TooLong(n) => TufError::Invalid {
            what: what.to_string(),
            reason: format!("{url} sends more than the {n} bytes its signed metadata allows: refused as endless data"),
        },
        FetchError::Refused(reason) => TufError::Invalid {
            what: what.to_string(),
            reason: format!("{url}: {reason}"),
        },
        e => TufError::Fetch {
            url,
            reason: e.to_string(),
        },
    }
}

/// Checks a fetched metadata file against its signed length and hashes.
fn check_meta(role: &str, bytes: &[u8], meta: &MetaFile) -> Result<(), TufError> {
    let hashes: Vec<(String, String)> = meta
        .hashes
        .iter()
        .flatten()
        .map(|(a, h)| (a.clone(), h.clone()))
        .collect();
    check_file(&format!("{role} metadata"), bytes, meta.length, &hashes)
}
