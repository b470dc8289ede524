#![no_main]
//! Manifests without the header checksum in the way: decoding never panics,
//! and what decodes re-encodes to the same bytes.
use libfuzzer_sys::fuzz_target;
use romdelta_format::Manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::decode(data) {
        assert_eq!(m.encode(), data);
    }
});
