//! TUF's four top-level roles and delegated targets, as JSON, and the
//! signature envelope around each.
//!
//! Signatures are checked over the canonical form of the `signed` value
//! exactly as it was received (unknown fields included); only then is it
//! read into the typed structs below, which ignore fields they do not know.

use crate::{canonical, time, TufError};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The TUF specification version this crate writes.
pub const SPEC_VERSION: &str = "1.0.31";

/// A public key as TUF metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    /// `ed25519`, `ecdsa` or `rsa` (the schemes each verifies are listed at `Key::verifies`).
    pub keytype: String,
    /// `ed25519`, `ecdsa-sha2-nistp256`, `rsassa-pss-sha256` or
    /// `rsa-pkcs1v15-sha256`.
    pub scheme: String,
    /// `{"public": HEX}` (Ed25519) or `{"public": PEM}`.
    pub keyval: KeyVal,
}

/// The public part of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVal {
    /// The public key, hex.
    pub public: String,
}

impl Key {
    /// The metadata form of an Ed25519 public key.
    pub fn ed25519(k: &VerifyingKey) -> Key {
        Key {
            keytype: "ed25519".into(),
            scheme: "ed25519".into(),
            keyval: KeyVal {
                public: hex::encode(k.to_bytes()),
            },
        }
    }

    /// The key's ID: SHA-256 of its canonical JSON, hex.
    pub fn id(&self) -> String {
        use sha2::Digest as _;
        let v = serde_json::to_value(self).expect("plain struct");
        hex::encode(sha2::Sha256::digest(
            canonical::encode(&v).expect("no numbers"),
        ))
    }

    /// Whether `sig` (hex) is this key's signature of `msg`, in one of the
    /// schemes securesystemslib signs with:
    ///
    /// - `ed25519`: a hex public key, a 64-byte signature;
    /// - `ecdsa-sha2-nistp256` (key type `ecdsa`, or the older
    ///   `ecdsa-sha2-nistp256`): a PEM public key, a DER signature of the
    ///   SHA-256 of `msg`;
    /// - `rsassa-pss-sha256` and `rsa-pkcs1v15-sha256` (key type `rsa`): a
    ///   PEM public key of 2048 to 4096 bits; PSS with MGF1-SHA-256 and a
    ///   salt of 32 bytes.
    ///
    /// Keys of other types, and keys or signatures that do not parse, never
    /// verify.
    fn verifies(&self, msg: &[u8], sig: &str) -> bool {
        let Ok(sig) = hex::decode(sig) else {
            return false;
        };
        let public = self.keyval.public.as_str();
        match (self.keytype.as_str(), self.scheme.as_str()) {
            ("ed25519", "ed25519") => verify_ed25519(public, msg, &sig),
            ("ecdsa" | "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp256") => {
                verify_p256(public, msg, &sig)
            }
            ("rsa", "rsassa-pss-sha256") => {
                verify_rsa(public, msg, &sig, rsa::Pss::new::<sha2_010::Sha256>())
            }
            ("rsa", "rsa-pkcs1v15-sha256") => verify_rsa(
                public,
                msg,
                &sig,
                rsa::Pkcs1v15Sign::new::<sha2_010::Sha256>(),
            ),
            _ => false,
        }
    }
}

fn sha256(msg: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(msg).into()
}

fn verify_ed25519(public: &str, msg: &[u8], sig: &[u8]) -> bool {
    let mut pk = [0u8; 32];
    if hex::decode_to_slice(public, &mut pk).is_err() {
        return false;
    }
    let (Ok(pk), Ok(sig)) = (
        VerifyingKey::from_bytes(&pk),
        ed25519_dalek::Signature::from_slice(sig),
    ) else {
        return false;
    };
    pk.verify_strict(msg, &sig).is_ok()
}

fn verify_p256(public: &str, msg: &[u8], sig: &[u8]) -> bool {
    use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
    use p256::pkcs8::DecodePublicKey as _;
    let (Ok(pk), Ok(sig)) = (
        p256::ecdsa::VerifyingKey::from_public_key_pem(public),
        p256::ecdsa::Signature::from_der(sig),
    ) else {
        return false;
    };
    pk.verify_prehash(&sha256(msg), &sig).is_ok()
}

fn verify_rsa(
    public: &str,
    msg: &[u8],
    sig: &[u8],
    scheme: impl rsa::traits::SignatureScheme,
) -> bool {
    use rsa::pkcs8::DecodePublicKey as _;
    use rsa::traits::PublicKeyParts as _;
    let Ok(pk) = rsa::RsaPublicKey::from_public_key_pem(public) else {
        return false;
    };
    (2048..=4096).contains(&pk.n().bits()) && pk.verify(scheme, &sha256(msg), sig).is_ok()
}

/// The keys and threshold of a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleKeys {
    /// IDs of the keys that may sign for the role.
    pub keyids: Vec<String>,
    /// How many distinct keys must sign (at least one).
    pub threshold: u64,
}

/// What every role's `signed` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Common {
    /// `root`, `timestamp`, `snapshot` or `targets`.
    #[serde(rename = "_type")]
    pub kind: String,
    /// The specification version, `1.x.y`.
    pub spec_version: String,
    /// The metadata's version, from 1.
    pub version: u64,
    /// When it expires, `YYYY-MM-DDTHH:MM:SSZ`.
    pub expires: String,
}

/// The root role: who signs for which role.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Root {
    /// Type, versions, expiry.
    #[serde(flatten)]
    pub common: Common,
    /// Whether metadata and targets are also published under
    /// `VERSION.NAME` and `HASH.NAME` names.
    pub consistent_snapshot: bool,
    /// Every key any role lists, by ID.
    pub keys: BTreeMap<String, Key>,
    /// `root`, `timestamp`, `snapshot` and `targets`.
    pub roles: BTreeMap<String, RoleKeys>,
}

/// A metadata file as the timestamp or snapshot role describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaFile {
    /// Its version.
    pub version: u64,
    /// Its length in bytes, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    /// Its hashes, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashes: Option<BTreeMap<String, String>>,
}

/// The timestamp role: the snapshot's version (and length and hash).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timestamp {
    /// Type, versions, expiry.
    #[serde(flatten)]
    pub common: Common,
    /// `{"snapshot.json": ...}`.
    pub meta: BTreeMap<String, MetaFile>,
}

impl Timestamp {
    /// The snapshot file it names.
    pub fn snapshot(&self) -> Result<&MetaFile, TufError> {
        if self.meta.len() != 1 {
            return Err(TufError::invalid(
                "timestamp",
                "its meta must name snapshot.json and nothing else",
            ));
        }
        self.meta
            .get("snapshot.json")
            .ok_or_else(|| TufError::invalid("timestamp", "its meta does not name snapshot.json"))
    }
}

/// The snapshot role: the version of every targets metadata file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// Type, versions, expiry.
    #[serde(flatten)]
    pub common: Common,
    /// `{"targets.json": ..., "ROLE.json": ...}`.
    pub meta: BTreeMap<String, MetaFile>,
}

/// A target file: its length and hashes (in the order the metadata gives
/// them: the first one names the file under consistent snapshots).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetFile {
    /// Length in bytes.
    pub length: u64,
    /// Algorithm and hex digest pairs.
    #[serde(with = "ordered_map")]
    pub hashes: Vec<(String, String)>,
    /// Whatever the repository adds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<Value>,
}

/// A role the targets role (or a delegated role) delegates to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DelegatedRole {
    /// Its name (its metadata is `NAME.json`).
    pub name: String,
    /// Keys that may sign for it.
    pub keyids: Vec<String>,
    /// How many must.
    pub threshold: u64,
    /// Whether a search for a path it matches ends with it.
    #[serde(default)]
    pub terminating: bool,
    /// Path patterns (shell wildcards per `/`-separated segment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    /// Prefixes of the SHA-256 (hex) of the paths it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_hash_prefixes: Option<Vec<String>>,
}

impl DelegatedRole {
    /// Whether the role is trusted for `path`.
    pub fn matches(&self, path: &str) -> bool {
        if let Some(patterns) = &self.paths {
            let segs: Vec<&str> = path.split('/').collect();
            return patterns.iter().any(|p| {
                let ps: Vec<&str> = p.split('/').collect();
                ps.len() == segs.len()
                    && ps
                        .iter()
                        .zip(&segs)
                        .all(|(p, s)| fnmatch(p.as_bytes(), s.as_bytes()))
            });
        }
        if let Some(prefixes) = &self.path_hash_prefixes {
            let h = hex::encode(sha256(path.as_bytes()));
            return prefixes.iter().any(|p| h.starts_with(p.as_str()));
        }
        false
    }
}

/// Shell-style matching of one path segment: `*`, `?`, `[set]`, `[!set]`.
fn fnmatch(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => (0..=s.len()).any(|i| fnmatch(&p[1..], &s[i..])),
        Some(b'?') => !s.is_empty() && fnmatch(&p[1..], &s[1..]),
        Some(b'[') => {
            let Some(close) = p.iter().skip(2).position(|&c| c == b']').map(|i| i + 2) else {
                return s.first() == Some(&b'[') && fnmatch(&p[1..], &s[1..]);
            };
            let Some(&c) = s.first() else { return false };
            let (neg, set) = match p[1] {
                b'!' => (true, &p[2..close]),
                _ => (false, &p[1..close]),
            };
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == b'-' {
                    hit |= set[i] <= c && c <= set[i + 2];
                    i += 3;
                } else {
                    hit |= set[i] == c;
                    i += 1;
                }
            }
            hit != neg && fnmatch(&p[close + 1..], &s[1..])
        }
        Some(&c) => s.first() == Some(&c) && fnmatch(&p[1..], &s[1..]),
    }
}

/// The keys and roles a targets role delegates to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delegations {
    /// Keys of the delegated roles, by ID.
    pub keys: BTreeMap<String, Key>,
    /// The delegated roles, in the order they are searched.
    #[serde(default)]
    pub roles: Vec<DelegatedRole>,
    /// Hash bins (TAP 15) instead of `roles`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succinct_roles: Option<SuccinctRoles>,
}

/// Succinct hash delegations (TAP 15): `2^bit_length` roles named
/// `PREFIX-HEX`, all signed by the same keys; a path belongs to the bin
/// numbered by the first `bit_length` bits of its SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuccinctRoles {
    /// Keys that may sign for every bin.
    pub keyids: Vec<String>,
    /// How many must.
    pub threshold: u64,
    /// Bits of the path's hash that number its bin (1 to 32).
    pub bit_length: u32,
    /// The bins' names before `-HEX`.
    pub name_prefix: String,
}

impl SuccinctRoles {
    /// The hex digits of a bin number; `None` for a bit length outside
    /// 1..=32.
    fn width(&self) -> Option<usize> {
        (1..=32)
            .contains(&self.bit_length)
            .then(|| format!("{:x}", (1u64 << self.bit_length) - 1).len())
    }

    fn bin_name(&self, bin: u64, width: usize) -> String {
        format!("{}-{bin:0width$x}", self.name_prefix)
    }

    /// The bin that holds `path`; `None` for a bit length outside 1..=32.
    pub fn role_for(&self, path: &str) -> Option<String> {
        let width = self.width()?;
        let h = sha256(path.as_bytes());
        let first = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        Some(self.bin_name(u64::from(first) >> (32 - self.bit_length), width))
    }

    /// Whether `name` is one of the bins (exactly as [`Self::role_for`]
    /// names them).
    pub fn is_bin(&self, name: &str) -> bool {
        let Some(width) = self.width() else {
            return false;
        };
        name.strip_prefix(self.name_prefix.as_str())
            .and_then(|n| n.strip_prefix('-'))
            .and_then(|n| u64::from_str_radix(n, 16).ok())
            .is_some_and(|b| b < 1u64 << self.bit_length && self.bin_name(b, width) == name)
    }
}

/// The targets role (or a delegated one): the files and their hashes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Targets {
    /// Type, versions, expiry.
    #[serde(flatten)]
    pub common: Common,
    /// Target path to file.
    pub targets: BTreeMap<String, TargetFile>,
    /// Roles it delegates to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegations: Option<Delegations>,
}

/// One signature of an envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sig {
    /// The signing key's ID.
    pub keyid: String,
    /// The signature, hex.
    pub sig: String,
}

/// A received metadata file: the `signed` value as it came, and its
/// signatures. Nothing in it is trusted until [`Envelope::verify`] passed.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The `signed` value.
    pub signed: Value,
    /// The signatures.
    pub signatures: Vec<Sig>,
}

#[derive(Deserialize)]
struct RawEnvelope {
    signed: Value,
    signatures: Vec<Sig>,
}

impl Envelope {
    /// Parses a metadata file's bytes (already bounded in length by the
    /// caller).
    pub fn parse(role: &str, bytes: &[u8]) -> Result<Envelope, TufError> {
        let raw: RawEnvelope = serde_json::from_slice(bytes)
            .map_err(|e| TufError::invalid(role, format!("not TUF metadata: {e}")))?;
        // The specification: a key ID is unique in the signatures array.
        let mut seen = BTreeSet::new();
        if let Some(s) = raw.signatures.iter().find(|s| !seen.insert(&s.keyid)) {
            return Err(TufError::invalid(
                role,
                format!("key ID {} signs it twice", s.keyid),
            ));
        }
        Ok(Envelope {
            signed: raw.signed,
            signatures: raw.signatures,
        })
    }

    /// Checks that at least `role.threshold` distinct keys of `role` signed
    /// the canonical form of `signed`.
    pub fn verify(
        &self,
        name: &str,
        keys: &BTreeMap<String, Key>,
        role: &RoleKeys,
    ) -> Result<(), TufError> {
        if role.threshold == 0 {
            return Err(TufError::invalid(name, "a threshold of 0"));
        }
        let msg = canonical::encode(&self.signed)?;
        let allowed: BTreeSet<&str> = role.keyids.iter().map(String::as_str).collect();
        let mut good = BTreeSet::new();
        for s in &self.signatures {
            if !allowed.contains(s.keyid.as_str()) || good.contains(s.keyid.as_str()) {
                continue;
            }
            if keys.get(&s.keyid).is_some_and(|k| k.verifies(&msg, &s.sig)) {
                good.insert(s.keyid.as_str());
            }
        }
        if (good.len() as u64) < role.threshold {
            return Err(TufError::Threshold {
                role: name.to_string(),
                have: good.len() as u64,
                need: role.threshold,
            });
        }
        Ok(())
    }

    /// Reads the verified `signed` value as `T`, whose `_type` must be
    /// `kind`.
    pub fn decode<T: for<'de> Deserialize<'de> + HasCommon>(
        &self,
        name: &str,
        kind: &str,
    ) -> Result<T, TufError> {
        let t: T = serde_json::from_value(self.signed.clone())
            .map_err(|e| TufError::invalid(name, format!("not {kind} metadata: {e}")))?;
        let c = t.common();
        if c.kind != kind {
            return Err(TufError::invalid(
                name,
                format!("its type is {:?}, expected {kind:?}", c.kind),
            ));
        }
        if c.spec_version.split('.').next() != Some("1") {
            return Err(TufError::invalid(
                name,
                format!(
                    "specification version {} (this client reads 1.x)",
                    c.spec_version
                ),
            ));
        }
        time::parse(&c.expires)?;
        Ok(t)
    }
}

/// Metadata of any role.
pub trait HasCommon {
    /// Type, versions, expiry.
    fn common(&self) -> &Common;
    /// Expiry in seconds since the epoch (checked when decoded).
    fn expires(&self) -> i64 {
        time::parse(&self.common().expires).unwrap_or(i64::MIN)
    }
    /// The version.
    fn version(&self) -> u64 {
        self.common().version
    }
}

macro_rules! has_common {
    ($($t:ty),*) => {$(impl HasCommon for $t { fn common(&self) -> &Common { &self.common } })*};
}
has_common!(Root, Timestamp, Snapshot, Targets);

/// The metadata file for `signed`, signed by `keys`, as the repository
/// writes it.
pub fn sign(signed: &impl Serialize, keys: &[&SigningKey]) -> Result<Vec<u8>, TufError> {
    let value = serde_json::to_value(signed).expect("plain structs");
    let msg = canonical::encode(&value)?;
    let mut signatures: Vec<Sig> = keys
        .iter()
        .map(|k| Sig {
            keyid: Key::ed25519(&k.verifying_key()).id(),
            sig: hex::encode(k.sign(&msg).to_bytes()),
        })
        .collect();
    signatures.sort_by(|a, b| a.keyid.cmp(&b.keyid));
    signatures.dedup_by(|a, b| a.keyid == b.keyid);
    let mut out = serde_json::to_vec_pretty(&serde_json::json!({
        "signatures": signatures,
        "signed": value,
    }))
    .expect("plain values");
    out.push(b'\n');
    Ok(out)
}

/// Checks `bytes` against a length and the hashes metadata gives for
/// them. Hash algorithms other than SHA-256 and SHA-512 are refused.
pub fn check_file(
    what: &str,
    bytes: &[u8],
    length: Option<u64>,
    hashes: &[(String, String)],
) -> Result<(), TufError> {
    use sha2::Digest as _;
    if let Some(l) = length {
        if bytes.len() as u64 != l {
            return Err(TufError::Length {
                what: what.to_string(),
                expected: l,
                got: bytes.len() as u64,
            });
        }
    }
    for (alg, want) in hashes {
        let got = match alg.as_str() {
            "sha256" => hex::encode(sha2::Sha256::digest(bytes)),
            "sha512" => hex::encode(sha2::Sha512::digest(bytes)),
            other => {
                return Err(TufError::invalid(
                    what,
                    format!("hash algorithm {other:?} (this client checks sha256 and sha512)"),
                ))
            }
        };
        if !got.eq_ignore_ascii_case(want) {
            return Err(TufError::Hash {
                what: what.to_string(),
                expected: want.clone(),
                got,
            });
        }
    }
    Ok(())
}

/// Serde for a JSON object kept as ordered pairs.
mod ordered_map {
    use serde::de::{MapAccess, Visitor};
    use serde::ser::SerializeMap as _;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(v.len()))?;
        for (k, x) in v {
            m.serialize_entry(k, x)?;
        }
        m.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<(String, String)>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of hex digests")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(String, String)> = Vec::new();
                while let Some((k, v)) = a.next_entry::<String, String>()? {
                    if out.iter().any(|(x, _)| *x == k) {
                        return Err(serde::de::Error::custom(format!("hash {k} given twice")));
                    }
                    out.push((k, v));
                }
                if out.is_empty() {
                    return Err(serde::de::Error::custom("no hashes"));
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnmatch_is_shell_style_per_segment() {
        let r = DelegatedRole {
            name: "a".into(),
            keyids: vec![],
            threshold: 1,
            terminating: false,
            paths: Some(vec!["pkg/*.romdelta".into(), "x/[a-c]?".into()]),
            path_hash_prefixes: None,
        };
        assert!(r.matches("pkg/one.romdelta"));
        assert!(!r.matches("pkg/sub/one.romdelta"));
        assert!(r.matches("x/b1"));
        assert!(!r.matches("x/d1"));
    }

    #[test]
    fn succinct_bins_are_numbered_by_the_paths_hash() {
        let s = |bit_length| SuccinctRoles {
            keyids: vec![],
            threshold: 1,
            bit_length,
            name_prefix: "bin".into(),
        };
        // SHA-256("bar") starts fc de 2b 2e.
        assert_eq!(s(8).role_for("bar").unwrap(), "bin-fc");
        assert_eq!(s(1).role_for("bar").unwrap(), "bin-1");
        assert_eq!(s(5).role_for("bar").unwrap(), "bin-1f");
        assert_eq!(s(32).role_for("bar").unwrap(), "bin-fcde2b2e");
        assert!(s(0).role_for("bar").is_none() && s(33).role_for("bar").is_none());
        assert!(s(8).is_bin("bin-00") && s(8).is_bin("bin-ff"));
        assert!(!s(8).is_bin("bin-100") && !s(8).is_bin("bin-f") && !s(8).is_bin("bin-FF"));
        assert!(!s(5).is_bin("bin-20") && !s(8).is_bin("bon-00"));
    }
}
