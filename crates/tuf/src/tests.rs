//! The client's workflow against repositories the writer made, and the
//! attacks of the specification, each refused.

use crate::client::{Client, FetchError, Fetcher};
use crate::metadata::{Envelope, Key, KeyVal, RoleKeys};
use crate::repo::{Expiry, Repository, RoleSpec};
use crate::TufError;
use ed25519_dalek::SigningKey;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Serves files of a directory; `file:///` URLs.
struct Dir;

impl Fetcher for Dir {
    fn fetch(&self, url: &str, max_len: u64) -> Result<Vec<u8>, FetchError> {
        let path = url.strip_prefix("file://").expect("file URL");
        match std::fs::read(path) {
            Err(_) => Err(FetchError::NotFound),
            Ok(b) if b.len() as u64 > max_len => Err(FetchError::TooLong(max_len)),
            Ok(b) => Ok(b),
        }
    }
}

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn roles(root: &[u8], threshold: u64, others: u8) -> BTreeMap<String, RoleSpec> {
    let mut m = BTreeMap::new();
    m.insert(
        "root".into(),
        RoleSpec {
            keys: root.iter().map(|&n| key(n).verifying_key()).collect(),
            threshold,
        },
    );
    for (i, r) in ["targets", "snapshot", "timestamp"].iter().enumerate() {
        m.insert(
            r.to_string(),
            RoleSpec {
                keys: vec![key(others + i as u8).verifying_key()],
                threshold: 1,
            },
        );
    }
    m
}

struct Fixture {
    _tmp: tempfile::TempDir,
    repo: PathBuf,
    client: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        let client = tmp.path().join("client");
        let r = Repository::create(
            &repo,
            &roles(&[1, 2], 2, 10),
            &[&key(1), &key(2)],
            Expiry::default(),
        )
        .unwrap();
        drop(r);
        let root = std::fs::read(repo.join("metadata/1.root.json")).unwrap();
        Client::init(&client, &root).unwrap();
        let f = Fixture {
            _tmp: tmp,
            repo,
            client,
        };
        f.publish("a.txt", b"first");
        f
    }

    fn publish(&self, path: &str, bytes: &[u8]) {
        let mut r = Repository::open(&self.repo).unwrap();
        r.add_target_bytes(path, bytes, None).unwrap();
        r.commit(&[&key(10)], &[&key(11)], &[&key(12)]).unwrap();
    }

    fn url(&self) -> String {
        format!("file://{}/metadata", self.repo.display())
    }

    fn refresh(&self) -> Result<(), TufError> {
        let mut c = Client::open(&self.client, &self.url(), &Dir)?;
        c.refresh()
    }

    fn meta(&self, name: &str) -> PathBuf {
        self.repo.join("metadata").join(name)
    }
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap();
}

#[test]
fn a_client_reads_what_the_writer_publishes() {
    let f = Fixture::new();
    f.refresh().unwrap();
    f.publish("dir/b.bin", b"second");
    let mut c = Client::open(&f.client, &f.url(), &Dir).unwrap();
    c.refresh().unwrap();
    let t = c.target("dir/b.bin").unwrap();
    assert_eq!(t.length, 6);
    let url = crate::client::target_url(
        &format!("file://{}/targets", f.repo.display()),
        "dir/b.bin",
        &t,
        c.consistent(),
    );
    assert_eq!(Dir.fetch(&url, t.length).unwrap(), b"second");
    assert!(matches!(
        c.target("nothing"),
        Err(TufError::NoSuchTarget(_))
    ));
}

#[test]
fn a_replayed_older_timestamp_is_a_rollback() {
    let f = Fixture::new();
    let old = std::fs::read(f.meta("timestamp.json")).unwrap();
    f.publish("b", b"b");
    f.refresh().unwrap();
    std::fs::write(f.meta("timestamp.json"), old).unwrap();
    let e = f.refresh().unwrap_err();
    assert!(matches!(e, TufError::Rollback { .. }), "{e}");
}

#[test]
fn targets_from_another_snapshot_are_mix_and_match() {
    let f = Fixture::new();
    f.publish("b", b"b");
    // Version 3 of the targets served under the name of version 2.
    copy(&f.meta("2.targets.json"), &f.meta("3.targets.json.keep"));
    copy(&f.meta("1.targets.json"), &f.meta("2.targets.json"));
    let e = f.refresh().unwrap_err();
    assert!(
        matches!(e, TufError::Length { .. } | TufError::Version { .. }),
        "{e}"
    );
}

#[test]
fn unsigned_or_tampered_metadata_is_refused() {
    let f = Fixture::new();
    let p = f.meta("timestamp.json");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text.replace("\"version\": 1", "\"version\": 7")).unwrap();
    let e = f.refresh().unwrap_err();
    assert!(matches!(e, TufError::Threshold { .. }), "{e}");
}

#[test]
fn an_expired_timestamp_is_refused() {
    let f = Fixture::new();
    let mut c = Client::open(&f.client, &f.url(), &Dir)
        .unwrap()
        .at(crate::time::now() + 2 * 86_400);
    let e = c.refresh().unwrap_err();
    assert!(
        matches!(e, TufError::Expired { ref role, .. } if role == "timestamp"),
        "{e}"
    );
}

#[test]
fn roots_rotate_only_with_the_old_threshold() {
    let f = Fixture::new();
    f.refresh().unwrap();
    let mut r = Repository::open(&f.repo).unwrap();
    // One of two old keys is not enough.
    assert!(r
        .rotate_root(&roles(&[3], 1, 10), &[&key(1), &key(3)])
        .is_err());
    r.rotate_root(&roles(&[3], 1, 10), &[&key(1), &key(2), &key(3)])
        .unwrap();
    f.refresh().unwrap();
    assert_eq!(
        Client::open(&f.client, &f.url(), &Dir)
            .unwrap()
            .root()
            .common
            .version,
        2
    );
    // A root 3 signed by the new key only, with the old ones absent, is
    // fine; one signed by a stranger is not.
    let mut r = Repository::open(&f.repo).unwrap();
    let forged = roles(&[9], 1, 10);
    let root3 = {
        r.rotate_root(&forged, &[&key(3), &key(9)]).unwrap();
        std::fs::read(f.meta("3.root.json")).unwrap()
    };
    let text = String::from_utf8(root3).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let only_new = crate::metadata::sign(&v["signed"], &[&key(9)]).unwrap();
    std::fs::write(f.meta("3.root.json"), only_new).unwrap();
    let e = f.refresh().unwrap_err();
    assert!(e.to_string().contains("without the old threshold"), "{e}");
}

#[test]
fn endless_data_is_cut_at_the_signed_length() {
    let f = Fixture::new();
    let p = f.meta("1.snapshot.json");
    let mut b = std::fs::read(&p).unwrap();
    b.extend(std::iter::repeat_n(b' ', 10_000));
    std::fs::write(&p, b).unwrap();
    let e = f.refresh().unwrap_err();
    assert!(e.to_string().contains("endless data"), "{e}");
}

#[test]
fn targets_are_found_through_delegations_in_order() {
    use crate::metadata::{
        sign, Common, DelegatedRole, Delegations, Key, MetaFile, Snapshot, TargetFile, Targets,
        Timestamp,
    };
    use sha2::Digest as _;
    let f = Fixture::new();
    let common = |kind: &str, version| Common {
        kind: kind.into(),
        spec_version: "1.0.31".into(),
        version,
        expires: crate::time::format(crate::time::now() + 86_400),
    };
    let file = |b: &[u8]| TargetFile {
        length: b.len() as u64,
        hashes: vec![("sha256".into(), hex::encode(sha2::Sha256::digest(b)))],
        custom: None,
    };
    let del = key(20);
    let k = Key::ed25519(&del.verifying_key());
    let role = |name: &str, terminating, paths: &[&str]| DelegatedRole {
        name: name.into(),
        keyids: vec![k.id()],
        threshold: 1,
        terminating,
        paths: Some(paths.iter().map(|p| p.to_string()).collect()),
        path_hash_prefixes: None,
    };
    let top = Targets {
        common: common("targets", 9),
        targets: Default::default(),
        delegations: Some(Delegations {
            succinct_roles: None,
            keys: BTreeMap::from([(k.id(), k.clone())]),
            // "first" is searched first and ends the search for pkg/*.
            roles: vec![
                role("first", true, &["pkg/*"]),
                role("second", false, &["pkg/*", "other/*", "shared/*"]),
                role("shared", false, &["shared/one"]),
            ],
        }),
    };
    // "second" also delegates "shared" (for shared/two), to another key.
    let other = Key::ed25519(&key(21).verifying_key());
    let second = Targets {
        common: common("targets", 1),
        targets: BTreeMap::from([("other/b".to_string(), file(b"from second"))]),
        delegations: Some(Delegations {
            succinct_roles: None,
            keys: BTreeMap::from([(other.id(), other.clone())]),
            roles: vec![DelegatedRole {
                keyids: vec![other.id()],
                ..role("shared", false, &["shared/two"])
            }],
        }),
    };
    let shared = Targets {
        common: common("targets", 1),
        targets: BTreeMap::from([
            ("shared/one".to_string(), file(b"one")),
            ("shared/two".to_string(), file(b"two")),
        ]),
        delegations: None,
    };
    let leaf = |name: &str, path: &str, bytes: &[u8]| {
        sign(
            &Targets {
                common: common("targets", 1),
                targets: BTreeMap::from([(path.to_string(), file(bytes))]),
                delegations: None,
            },
            &[&del],
        )
        .map(|b| (name.to_string(), b))
        .unwrap()
    };
    let files = [
        ("targets".to_string(), sign(&top, &[&key(10)]).unwrap()),
        leaf("first", "pkg/a", b"from first"),
        ("second".to_string(), sign(&second, &[&del]).unwrap()),
        ("shared".to_string(), sign(&shared, &[&del]).unwrap()),
    ];
    let mut meta = BTreeMap::new();
    for (name, bytes) in &files {
        let v = if name == "targets" { 9 } else { 1 };
        std::fs::write(f.meta(&format!("{v}.{name}.json")), bytes).unwrap();
        meta.insert(
            format!("{name}.json"),
            MetaFile {
                version: v,
                length: Some(bytes.len() as u64),
                hashes: None,
            },
        );
    }
    let sn = sign(
        &Snapshot {
            common: common("snapshot", 9),
            meta,
        },
        &[&key(11)],
    )
    .unwrap();
    std::fs::write(f.meta("9.snapshot.json"), &sn).unwrap();
    let ts = Timestamp {
        common: common("timestamp", 9),
        meta: BTreeMap::from([(
            "snapshot.json".to_string(),
            MetaFile {
                version: 9,
                length: Some(sn.len() as u64),
                hashes: None,
            },
        )]),
    };
    std::fs::write(f.meta("timestamp.json"), sign(&ts, &[&key(12)]).unwrap()).unwrap();
    let mut c = Client::open(&f.client, &f.url(), &Dir).unwrap();
    c.refresh().unwrap();
    assert_eq!(c.target("pkg/a").unwrap().length, 10);
    assert_eq!(c.target("other/b").unwrap().length, 11);
    // "first" is terminating for pkg/*: "second" is not asked.
    assert!(matches!(c.target("pkg/b"), Err(TufError::NoSuchTarget(_))));
    assert!(f.client.join("first.json").exists());
    // "shared" is trusted for shared/one through the top role's key; asked
    // for shared/two through "second", it must carry that delegation's key,
    // which did not sign it (the copy already loaded is checked again).
    assert_eq!(c.target("shared/one").unwrap().length, 3);
    assert!(matches!(
        c.target("shared/two"),
        Err(TufError::Threshold { have: 0, .. })
    ));
}

/// The envelope of `signed` with one signature by key ID `k`, checked
/// against `key` for a role of threshold 1.
fn verify_one(key: Key, signed: &serde_json::Value, sig: &[u8]) -> Result<(), TufError> {
    let env = serde_json::json!({
        "signed": signed,
        "signatures": [{"keyid": "k", "sig": hex::encode(sig)}],
    });
    let env = Envelope::parse("timestamp", &serde_json::to_vec(&env).unwrap())?;
    let role = RoleKeys {
        keyids: vec!["k".into()],
        threshold: 1,
    };
    env.verify(
        "timestamp",
        &BTreeMap::from([("k".to_string(), key)]),
        &role,
    )
}

#[test]
fn ecdsa_p256_signatures_verify_under_both_key_type_names() {
    use p256::ecdsa::signature::hazmat::PrehashSigner as _;
    use p256::pkcs8::EncodePublicKey as _;
    use sha2::Digest as _;
    let sk = p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap();
    let pem = sk
        .verifying_key()
        .to_public_key_pem(p256::pkcs8::LineEnding::LF)
        .unwrap();
    let signed = serde_json::json!({"_type": "timestamp", "version": 1});
    let msg = crate::canonical::encode(&signed).unwrap();
    let sig: p256::ecdsa::Signature = sk.sign_prehash(&sha2::Sha256::digest(&msg)).unwrap();
    let key = |keytype: &str, scheme: &str| Key {
        keytype: keytype.into(),
        scheme: scheme.into(),
        keyval: KeyVal {
            public: pem.clone(),
        },
    };
    let der = sig.to_der();
    for kt in ["ecdsa", "ecdsa-sha2-nistp256"] {
        verify_one(key(kt, "ecdsa-sha2-nistp256"), &signed, der.as_bytes()).unwrap();
    }
    // Another message, a raw (not DER) signature, another scheme's name.
    let other = serde_json::json!({"_type": "timestamp", "version": 2});
    let refused = |k: Key, v: &serde_json::Value, s: &[u8]| {
        assert!(matches!(
            verify_one(k, v, s),
            Err(TufError::Threshold { have: 0, .. })
        ))
    };
    refused(key("ecdsa", "ecdsa-sha2-nistp256"), &other, der.as_bytes());
    refused(
        key("ecdsa", "ecdsa-sha2-nistp256"),
        &signed,
        &sig.to_bytes(),
    );
    refused(key("ecdsa", "ed25519"), &signed, der.as_bytes());
    refused(key("rsa", "rsassa-pss-sha256"), &signed, der.as_bytes());
}

#[test]
fn a_key_id_signing_twice_is_refused() {
    let env = serde_json::json!({
        "signed": {"_type": "timestamp"},
        "signatures": [{"keyid": "k", "sig": "00"}, {"keyid": "k", "sig": "00"}],
    });
    let err = Envelope::parse("timestamp", &serde_json::to_vec(&env).unwrap()).unwrap_err();
    assert!(err.to_string().contains("signs it twice"), "{err}");
}
