#![no_main]
//! Line catalogs: parsing never panics, and the choice made from one that
//! parses is one of its own packages (or none).
use libfuzzer_sys::fuzz_target;
use romdelta_release::catalog::{choose, Catalog, Decision};

fuzz_target!(|data: &[u8]| {
    let Ok(c) = Catalog::parse(data) else {
        return;
    };
    let installed = c.builds.first().map(|e| e.build.clone());
    for seed in [0, 1, u64::MAX] {
        for full_only in [false, true] {
            if let Decision::Install { package, .. } =
                choose(&c, installed.as_ref(), seed, i64::MAX, full_only)
            {
                assert!(c.builds.iter().any(|e| {
                    e.full.as_ref() == Some(&package)
                        || e.incrementals.iter().any(|i| i.package == package)
                }));
            }
        }
    }
});
