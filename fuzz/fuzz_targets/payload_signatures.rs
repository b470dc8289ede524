#![no_main]
//! Payload signature messages: checking any bytes as a `Signatures`
//! message never panics and never verifies without the key's signature.
use libfuzzer_sys::fuzz_target;
use romdelta_android::signature::{self, SigningKey};
use std::sync::OnceLock;

fn keys() -> &'static [signature::TrustedKey] {
    static KEYS: OnceLock<Vec<signature::TrustedKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        [
            include_str!("../../crates/android/testdata/rsa2048.key.pem"),
            include_str!("../../crates/android/testdata/p256.key.pem"),
        ]
        .iter()
        .map(|pem| SigningKey::from_pem(pem).expect("test key").trusted())
        .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let hash = romdelta_format::sha256(b"romdelta fuzz");
    // Random bytes are no signature of this hash.
    assert!(signature::verify("payload signature", data, &hash, keys()).is_err());
});
