#![no_main]
//! The whole apply path on arbitrary packages against a small fixed source:
//! never a panic, never a write outside the staging file, and an output only
//! when every partition verified. The harness fixes up the header checksum
//! first, so that mutations reach manifest validation and the engine.
use libfuzzer_sys::fuzz_target;
use romdelta_format::{Header, Package, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    if let Ok(h) = Header::decode(&bytes) {
        let start = HEADER_LEN as usize;
        let m_end = start.saturating_add(h.manifest_len as usize);
        let s_end = m_end.saturating_add(h.signatures_len as usize);
        if s_end <= bytes.len() {
            let sum = h.compute_checksum(&bytes[start..m_end], &bytes[m_end..s_end]);
            bytes[40..72].copy_from_slice(&sum);
        }
    }
    let Ok(pkg) = Package::parse(&bytes) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let src_path = dir.path().join("source.img");
    let source: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&src_path, &source).expect("write source");
    let Ok(src) = romdelta_apply::open_rom(&src_path) else {
        return;
    };
    let out = dir.path().join("out.img");
    let Ok(plan) = romdelta_apply::Plan::new(&pkg, Some(&src), &out) else {
        return;
    };
    if plan.execute(&|_| {}).is_err() {
        assert!(!out.exists(), "a failed apply left an output");
    }
    // Nothing but the source and (maybe) the output may be in the directory.
    for e in std::fs::read_dir(dir.path()).expect("list") {
        let name = e.expect("entry").file_name();
        assert!(
            name == "source.img" || name == "out.img",
            "stray file {name:?}"
        );
    }
});
