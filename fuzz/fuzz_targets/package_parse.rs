#![no_main]
//! Whole packages: parsing never panics, and what parses re-encodes to the same bytes.
use libfuzzer_sys::fuzz_target;
use romdelta_format::Package;

fuzz_target!(|data: &[u8]| {
    if let Ok(pkg) = Package::parse(data) {
        let prefix = Package::encode_prefix(&pkg.manifest, &pkg.signatures);
        assert_eq!(&prefix[..], &data[..prefix.len()]);
    }
});
