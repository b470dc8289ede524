#![no_main]
//! The whole apply path on arbitrary packages against a small fixed source:
//! never a panic, never a write outside the staging file, and an output only
//! when every partition verified, holding exactly the images the manifest's
//! new sizes and hashes say (hashed here again, apart from apply's own
//! check). The harness fixes up the header checksum first, so that
//! mutations reach manifest validation and the engine.
use libfuzzer_sys::fuzz_target;
use romdelta_apply::ApplyReport;
use romdelta_format::{hex_digest, sha256, Header, Manifest, Package, HEADER_LEN};
use std::path::Path;

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
    match plan.execute(&|_| {}) {
        Err(_) => assert!(!out.exists(), "a failed apply left an output"),
        Ok(report) => check_written(&pkg.manifest, &out, &report),
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

/// A successful apply wrote each partition's new image, as the manifest
/// gives its size and SHA-256: `out` itself for an image output, else
/// `out/NAME.img` for each partition and nothing else; the report says so
/// too.
fn check_written(m: &Manifest, out: &Path, report: &ApplyReport) {
    let dir = out.is_dir();
    assert!(
        dir || m.partitions.len() == 1,
        "one image written for {} partitions",
        m.partitions.len()
    );
    assert_eq!(report.partitions.len(), m.partitions.len(), "report");
    for (p, r) in m.partitions.iter().zip(&report.partitions) {
        let path = if dir {
            out.join(format!("{}.img", p.name))
        } else {
            out.to_path_buf()
        };
        let got = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(got.len() as u64, p.new.size, "{}: size", p.name);
        assert!(
            sha256(&got) == p.new.sha256,
            "{}: written bytes do not hash to the manifest's new sha256",
            p.name
        );
        assert_eq!(
            (r.name.as_str(), r.size, r.sha256.as_str()),
            (
                p.name.as_str(),
                p.new.size,
                hex_digest(&p.new.sha256).as_str()
            ),
            "report"
        );
    }
    if dir {
        let mut names: Vec<String> = std::fs::read_dir(out)
            .expect("list output")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut want: Vec<String> = m
            .partitions
            .iter()
            .map(|p| format!("{}.img", p.name))
            .collect();
        want.sort();
        assert_eq!(names, want, "files in the output directory");
    }
}
