#![no_main]
//! TUF metadata: parsing, decoding as each role and checking signatures
//! never panic; canonical JSON of what parses is stable (encoding the
//! value parsed back from it gives the same bytes; strings with control
//! characters, which the OLPC form writes raw, do not parse back as JSON);
//! a root verifies against its own keys (of any type) only as its
//! threshold says; a hash bin a path falls in is one of the bins.
use libfuzzer_sys::fuzz_target;
use romdelta_tuf::metadata::{Envelope, Root, Snapshot, Targets, Timestamp};

fuzz_target!(|data: &[u8]| {
    let Ok(env) = Envelope::parse("fuzz", data) else {
        return;
    };
    if let Ok(c) = romdelta_tuf::canonical::encode(&env.signed) {
        if !c.iter().any(|&b| b < 0x20) {
            let back: serde_json::Value =
                serde_json::from_slice(&c).expect("canonical JSON parses");
            assert_eq!(romdelta_tuf::canonical::encode(&back).unwrap(), c);
        }
    }
    if let Ok(root) = env.decode::<Root>("root", "root") {
        if let Some(r) = root.roles.get("root") {
            let _ = env.verify("root", &root.keys, r);
        }
    }
    if let Ok(t) = env.decode::<Timestamp>("timestamp", "timestamp") {
        let _ = t.snapshot();
    }
    let _ = env.decode::<Snapshot>("snapshot", "snapshot");
    if let Ok(t) = env.decode::<Targets>("targets", "targets") {
        for r in t.delegations.iter().flat_map(|d| &d.roles) {
            let _ = r.matches("packages/demo/Global/stable/full-0.romdelta");
        }
        // A hash bin's name is always one of its bins.
        for s in t.delegations.iter().flat_map(|d| &d.succinct_roles) {
            if let Some(bin) = s.role_for("packages/demo/Global/stable/full-0.romdelta") {
                assert!(s.is_bin(&bin), "{bin}");
            }
        }
    }
});
