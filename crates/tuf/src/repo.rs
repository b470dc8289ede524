//! The repository writer: a directory any static HTTP server can serve.
//!
//! ```text
//! REPO/metadata/N.root.json      every root version (clients walk them)
//! REPO/metadata/root.json        the newest root, for bootstrapping
//! REPO/metadata/N.targets.json   consistent snapshots: never rewritten
//! REPO/metadata/N.snapshot.json
//! REPO/metadata/timestamp.json   the only file that changes in place
//! REPO/targets/DIR/HASH.NAME     target files, by SHA-256
//! ```
//! Files are written before the metadata naming them, and the timestamp
//! last, so a client reading the repository while it is published sees the
//! old release or the new one whole.

use crate::client::write_durably;
use crate::metadata::{
    sign, Common, Key, MetaFile, RoleKeys, Root, Snapshot, TargetFile, Targets, Timestamp,
    SPEC_VERSION,
};
use crate::{time, TufError};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The top-level roles, in the order roots list them.
pub const ROLES: [&str; 4] = ["root", "targets", "snapshot", "timestamp"];

/// How long each role's metadata is valid, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Expiry {
    /// Root (signed offline, rarely).
    pub root: i64,
    /// Targets.
    pub targets: i64,
    /// Snapshot.
    pub snapshot: i64,
    /// Timestamp (short: re-signed often, so a frozen mirror is noticed).
    pub timestamp: i64,
}

impl Default for Expiry {
    fn default() -> Self {
        const DAY: i64 = 86_400;
        Expiry {
            root: 365 * DAY,
            targets: 90 * DAY,
            snapshot: 7 * DAY,
            timestamp: DAY,
        }
    }
}

/// Keys and threshold of one role, as a root is made with them.
#[derive(Debug, Clone)]
pub struct RoleSpec {
    /// Public keys.
    pub keys: Vec<VerifyingKey>,
    /// Signatures needed.
    pub threshold: u64,
}

/// A release repository being written.
pub struct Repository {
    dir: PathBuf,
    root: Root,
    targets: Targets,
    snapshot_version: u64,
    timestamp_version: u64,
    /// Expiry of what is signed next.
    pub expiry: Expiry,
    now: i64,
}

fn common(kind: &str, version: u64, expires: i64) -> Common {
    Common {
        kind: kind.into(),
        spec_version: SPEC_VERSION.into(),
        version,
        expires: time::format(expires),
    }
}

/// Targets before the first commit: version 0, nothing in them.
fn no_targets() -> Targets {
    Targets {
        common: common("targets", 0, 0),
        targets: BTreeMap::new(),
        delegations: None,
    }
}

/// The `signed` part of the repository's own metadata file `name` (not
/// verified: the writer reads what it wrote).
fn signed_of<T: serde::de::DeserializeOwned>(meta: &Path, name: &str) -> Result<T, TufError> {
    let p = meta.join(name);
    let b = std::fs::read(&p).map_err(TufError::io(&p))?;
    let v: Value =
        serde_json::from_slice(&b).map_err(|e| TufError::invalid(name, e.to_string()))?;
    serde_json::from_value(v["signed"].clone()).map_err(|e| TufError::invalid(name, e.to_string()))
}

/// Checks that `path` names a file below a directory: relative, `/`
/// separated, no empty, `.` or `..` segment, no backslash or NUL.
pub fn check_target_path(path: &str) -> Result<(), TufError> {
    let bad = path.is_empty()
        || path.contains('\\')
        || path.contains('\0')
        || path
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..");
    if bad {
        return Err(TufError::invalid(
            "target path",
            format!("{path:?} is not a relative path of plain names"),
        ));
    }
    Ok(())
}

impl Repository {
    /// Makes a new repository in `dir` (which must not hold one): version 1
    /// of every role, the root signed by `root_signers`.
    pub fn create(
        dir: &Path,
        roles: &BTreeMap<String, RoleSpec>,
        root_signers: &[&SigningKey],
        expiry: Expiry,
    ) -> Result<Repository, TufError> {
        let meta = dir.join("metadata");
        if meta.join("1.root.json").exists() {
            return Err(TufError::invalid(
                "repository",
                format!("{} already holds one", dir.display()),
            ));
        }
        std::fs::create_dir_all(&meta).map_err(TufError::io(&meta))?;
        let now = time::now();
        let root = make_root(1, roles, now + expiry.root)?;
        let repo = Repository {
            dir: dir.to_path_buf(),
            root,
            targets: no_targets(),
            snapshot_version: 0,
            timestamp_version: 0,
            expiry,
            now,
        };
        let signers = repo.signers("root", root_signers)?;
        repo.write_root(&signers)?;
        Ok(repo)
    }

    /// Opens the repository in `dir` as its newest root and timestamp
    /// describe it.
    pub fn open(dir: &Path) -> Result<Repository, TufError> {
        let meta = dir.join("metadata");
        let root: Root = signed_of(&meta, "root.json")?;
        let (targets, snapshot_version, timestamp_version) = if meta.join("timestamp.json").exists()
        {
            let ts: Timestamp = signed_of(&meta, "timestamp.json")?;
            let sv = ts.snapshot()?.version;
            let sn: Snapshot = signed_of(&meta, &format!("{sv}.snapshot.json"))?;
            let tv = sn
                .meta
                .get("targets.json")
                .ok_or_else(|| TufError::invalid("snapshot", "no targets.json"))?
                .version;
            let t: Targets = signed_of(&meta, &format!("{tv}.targets.json"))?;
            (t, sv, ts.common.version)
        } else {
            (no_targets(), 0, 0)
        };
        Ok(Repository {
            dir: dir.to_path_buf(),
            root,
            targets,
            snapshot_version,
            timestamp_version,
            expiry: Expiry::default(),
            now: time::now(),
        })
    }

    /// Signs with expiry counted from `now` instead of the clock.
    pub fn at(mut self, now: i64) -> Self {
        self.now = now;
        self
    }

    /// The newest root.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// The targets as they will be signed next.
    pub fn targets(&self) -> &BTreeMap<String, TargetFile> {
        &self.targets.targets
    }

    /// Where target `path` is stored.
    pub fn target_file(&self, path: &str, info: &TargetFile) -> PathBuf {
        let (dir, name) = match path.rfind('/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => ("", path),
        };
        self.dir
            .join("targets")
            .join(dir)
            .join(format!("{}.{name}", info.hashes[0].1))
    }

    /// Adds (or replaces) target `path` with the file at `from`, copied
    /// into the repository under its hash; `custom` is signed with it.
    pub fn add_target(
        &mut self,
        path: &str,
        from: &Path,
        custom: Option<Value>,
    ) -> Result<TargetFile, TufError> {
        let (length, sha256) = hash_file(from)?;
        self.add_hashed_target(path, from, length, sha256, custom)
    }

    /// [`Repository::add_target`] of a file whose length and SHA-256 (hex,
    /// from [`hash_file`]) the caller has already.
    pub fn add_hashed_target(
        &mut self,
        path: &str,
        from: &Path,
        length: u64,
        sha256: String,
        custom: Option<Value>,
    ) -> Result<TargetFile, TufError> {
        let info = TargetFile {
            length,
            hashes: vec![("sha256".into(), sha256)],
            custom,
        };
        self.store(path, info, |tmp| std::fs::copy(from, tmp).map(|_| ()))
    }

    /// Adds target `path` holding `bytes`.
    pub fn add_target_bytes(
        &mut self,
        path: &str,
        bytes: &[u8],
        custom: Option<Value>,
    ) -> Result<TargetFile, TufError> {
        use sha2::Digest as _;
        let info = TargetFile {
            length: bytes.len() as u64,
            hashes: vec![("sha256".into(), hex::encode(sha2::Sha256::digest(bytes)))],
            custom,
        };
        self.store(path, info, |tmp| std::fs::write(tmp, bytes))
    }

    /// Stores target `path` as `info` describes it: `write` makes the file
    /// (at a temporary name, then synced and renamed) unless one with that
    /// hash is there already.
    fn store(
        &mut self,
        path: &str,
        info: TargetFile,
        write: impl FnOnce(&Path) -> std::io::Result<()>,
    ) -> Result<TargetFile, TufError> {
        check_target_path(path)?;
        let to = self.target_file(path, &info);
        if !to.exists() {
            let dir = to.parent().expect("below targets/");
            std::fs::create_dir_all(dir).map_err(TufError::io(dir))?;
            let tmp = to.with_extension("partial");
            write(&tmp).map_err(TufError::io(&tmp))?;
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(TufError::io(&tmp))?;
            std::fs::rename(&tmp, &to).map_err(TufError::io(&to))?;
        }
        self.targets.targets.insert(path.to_string(), info.clone());
        Ok(info)
    }

    /// The bytes of target `path` as stored (for a writer that extends a
    /// file it published before).
    pub fn read_target(&self, path: &str) -> Result<Option<Vec<u8>>, TufError> {
        let Some(info) = self.targets.targets.get(path) else {
            return Ok(None);
        };
        let p = self.target_file(path, info);
        std::fs::read(&p).map(Some).map_err(TufError::io(&p))
    }

    /// The keys among `keys` that sign for `role`; at least its threshold
    /// of them, or nothing is signed.
    fn signers<'k>(
        &self,
        role: &str,
        keys: &[&'k SigningKey],
    ) -> Result<Vec<&'k SigningKey>, TufError> {
        let rk = &self.root.roles[role];
        let ok: Vec<&SigningKey> = keys
            .iter()
            .copied()
            .filter(|k| rk.keyids.contains(&Key::ed25519(&k.verifying_key()).id()))
            .collect();
        if (ok.len() as u64) < rk.threshold {
            return Err(TufError::invalid(
                "repository",
                format!(
                    "{} of the keys given sign for the {role} role, its threshold is {}",
                    ok.len(),
                    rk.threshold
                ),
            ));
        }
        Ok(ok)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), TufError> {
        write_durably(&self.dir.join("metadata").join(name), bytes)
    }

    /// Writes the root signed by exactly `signers`.
    fn write_root(&self, signers: &[&SigningKey]) -> Result<(), TufError> {
        let bytes = sign(&self.root, signers)?;
        self.write(&format!("{}.root.json", self.root.common.version), &bytes)?;
        self.write("root.json", &bytes)
    }

    /// Signs the targets as they stand, a new snapshot and a new timestamp.
    pub fn commit(
        &mut self,
        targets_keys: &[&SigningKey],
        snapshot_keys: &[&SigningKey],
        timestamp_keys: &[&SigningKey],
    ) -> Result<(), TufError> {
        let tk = self.signers("targets", targets_keys)?;
        self.signers("snapshot", snapshot_keys)?;
        self.signers("timestamp", timestamp_keys)?;
        let v = self.targets.common.version + 1;
        self.targets.common = common("targets", v, self.now + self.expiry.targets);
        let bytes = sign(&self.targets, &tk)?;
        self.write(&format!("{v}.targets.json"), &bytes)?;
        self.snapshot(v, bytes.len() as u64, snapshot_keys, timestamp_keys)
    }

    fn snapshot(
        &mut self,
        targets_version: u64,
        targets_len: u64,
        snapshot_keys: &[&SigningKey],
        timestamp_keys: &[&SigningKey],
    ) -> Result<(), TufError> {
        let v = self.snapshot_version + 1;
        let sn = Snapshot {
            common: common("snapshot", v, self.now + self.expiry.snapshot),
            meta: BTreeMap::from([(
                "targets.json".to_string(),
                MetaFile {
                    version: targets_version,
                    length: Some(targets_len),
                    hashes: None,
                },
            )]),
        };
        let bytes = sign(&sn, &self.signers("snapshot", snapshot_keys)?)?;
        self.write(&format!("{v}.snapshot.json"), &bytes)?;
        self.snapshot_version = v;
        self.timestamp(&bytes, timestamp_keys)
    }

    fn timestamp(&mut self, snapshot: &[u8], keys: &[&SigningKey]) -> Result<(), TufError> {
        use sha2::Digest as _;
        let v = self.timestamp_version + 1;
        let ts = Timestamp {
            common: common("timestamp", v, self.now + self.expiry.timestamp),
            meta: BTreeMap::from([(
                "snapshot.json".to_string(),
                MetaFile {
                    version: self.snapshot_version,
                    length: Some(snapshot.len() as u64),
                    hashes: Some(BTreeMap::from([(
                        "sha256".to_string(),
                        hex::encode(sha2::Sha256::digest(snapshot)),
                    )])),
                },
            )]),
        };
        let bytes = sign(&ts, &self.signers("timestamp", keys)?)?;
        self.write("timestamp.json", &bytes)?;
        self.timestamp_version = v;
        Ok(())
    }

    /// Signs a new timestamp for the current snapshot (run often: the
    /// timestamp expires soonest).
    pub fn refresh_timestamp(&mut self, keys: &[&SigningKey]) -> Result<(), TufError> {
        let name = format!("{}.snapshot.json", self.snapshot_version);
        let p = self.dir.join("metadata").join(&name);
        let snapshot = std::fs::read(&p).map_err(TufError::io(&p))?;
        self.timestamp(&snapshot, keys)
    }

    /// Writes the next root version with `roles`, signed by `signers`: they
    /// must hold a threshold of the current root keys and of the new ones.
    /// Targets, snapshot and timestamp are signed again with the keys given
    /// (the new ones, where a role's keys changed).
    pub fn rotate_root(
        &mut self,
        roles: &BTreeMap<String, RoleSpec>,
        signers: &[&SigningKey],
    ) -> Result<(), TufError> {
        let old = self.signers("root", signers)?;
        let new = make_root(
            self.root.common.version + 1,
            roles,
            self.now + self.expiry.root,
        )?;
        let prev = std::mem::replace(&mut self.root, new);
        let mut all = old;
        match self.signers("root", signers) {
            Ok(n) => all.extend(n),
            Err(e) => {
                self.root = prev;
                return Err(e);
            }
        }
        self.write_root(&all)
    }
}

/// The length and SHA-256 (hex) of the file at `path`, read in pieces.
pub fn hash_file(path: &Path) -> Result<(u64, String), TufError> {
    use sha2::Digest as _;
    use std::io::Read as _;
    let mut f = std::fs::File::open(path).map_err(TufError::io(path))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut length = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(TufError::io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        length += n as u64;
    }
    Ok((length, hex::encode(h.finalize())))
}

fn make_root(
    version: u64,
    roles: &BTreeMap<String, RoleSpec>,
    expires: i64,
) -> Result<Root, TufError> {
    let mut keys = BTreeMap::new();
    let mut out = BTreeMap::new();
    for r in ROLES {
        let spec = roles
            .get(r)
            .ok_or_else(|| TufError::invalid("root", format!("no keys for the {r} role")))?;
        if spec.threshold == 0 || spec.threshold > spec.keys.len() as u64 {
            return Err(TufError::invalid(
                "root",
                format!(
                    "the {r} role's threshold is {} with {} key(s)",
                    spec.threshold,
                    spec.keys.len()
                ),
            ));
        }
        let mut ids = Vec::new();
        for k in &spec.keys {
            let key = Key::ed25519(k);
            let id = key.id();
            keys.insert(id.clone(), key);
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        out.insert(
            r.to_string(),
            RoleKeys {
                keyids: ids,
                threshold: spec.threshold,
            },
        );
    }
    Ok(Root {
        common: common("root", version, expires),
        consistent_snapshot: true,
        keys,
        roles: out,
    })
}
