//! Kernel images whose payload is an xz stream: a synthetic bzImage (the
//! header fields Linux defines, an xz stream of machine-code-like bytes
//! made with the x86 filter) placed block-aligned inside a raw image with
//! other data. With `diff --apply-memory 512` the changed kernel is one
//! SOURCE_XZ_REBUILD operation, which an apply with enough `--max-memory`
//! runs bit for bit and the default apply refuses before writing; without
//! the flag the package has no such operation and still round-trips.

use crate::common::romdelta;
use liblzma::stream::{Action, Check, Filters, LzmaOptions, Status, Stream};
use std::path::Path;

const KIND: &str = "SOURCE_XZ_REBUILD";

/// Machine-code-like bytes: calls with nearby targets, common instruction
/// runs, some noise.
fn code(seed: u32, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        match x % 5 {
            0 => {
                v.push(0xe8);
                v.extend_from_slice(&((x >> 8) as i32 % 4096 - v.len() as i32).to_le_bytes());
            }
            1 => v.extend_from_slice(&[0x48, 0x89, 0xe5, 0x55]),
            2 => v.extend_from_slice(&[0x48, 0x8b, 0x45, (x >> 24) as u8]),
            3 => v.extend_from_slice(&[0xc3, 0x90, 0x90]),
            _ => v.push((x >> 16) as u8),
        }
    }
    v.truncate(n);
    v
}

/// `xz --check=crc32 --x86 --lzma2=preset=6,dict=8MiB`, as the kernel's
/// build compresses (with a smaller dictionary than its 32 MiB, so that
/// the test stays fast but still needs more than 64 MiB to rebuild).
fn xz(data: &[u8]) -> Vec<u8> {
    xz_nice(data, None)
}

/// [`xz`], with the match finder's nice length set when given (a setting
/// the stream's headers do not record, so nobody can guess it back).
fn xz_nice(data: &[u8], nice_len: Option<u32>) -> Vec<u8> {
    let mut o = LzmaOptions::new_preset(6).unwrap();
    o.dict_size(8 << 20);
    if let Some(n) = nice_len {
        o.nice_len(n);
    }
    let mut f = Filters::new();
    f.x86();
    f.lzma2(&o);
    let mut s = Stream::new_stream_encoder(&f, Check::Crc32).unwrap();
    let mut out = Vec::with_capacity(data.len());
    loop {
        if out.capacity() - out.len() < 1 << 16 {
            out.reserve(1 << 20);
        }
        let i = s.total_in() as usize;
        if s.process_vec(&data[i..], &mut out, Action::Finish).unwrap() == Status::StreamEnd {
            return out;
        }
    }
}

/// A bzImage: real-mode setup sectors with the header fields of the boot
/// protocol (2.15), then the protected-mode part holding the xz payload
/// (followed by its 4-byte uncompressed size, as Linux appends it) and
/// some bytes after it.
fn bzimage(code: &[u8]) -> Vec<u8> {
    bzimage_of(code, xz(code))
}

/// [`bzimage`] around a given xz stream of `code`.
fn bzimage_of(code: &[u8], stream: Vec<u8>) -> Vec<u8> {
    let setup_sects = 3u8;
    let pm = (setup_sects as usize + 1) * 512;
    let payload_offset = 0x2c0usize;
    let mut payload = stream;
    payload.extend_from_slice(&(code.len() as u32).to_le_bytes());
    let mut b = vec![0u8; pm + payload_offset];
    b[..2].copy_from_slice(b"MZ");
    b[0x1f1] = setup_sects;
    b[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
    b[0x202..0x206].copy_from_slice(b"HdrS");
    b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    b[0x248..0x24c].copy_from_slice(&(payload_offset as u32).to_le_bytes());
    b[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    for (i, x) in b[pm..].iter_mut().enumerate() {
        *x = (i * 7) as u8;
    }
    b.extend_from_slice(&payload);
    b.extend_from_slice(&[0xcc; 3000]);
    let syssize = (b.len() - pm).div_ceil(16) as u32;
    b[0x1f4..0x1f8].copy_from_slice(&syssize.to_le_bytes());
    b
}

/// A raw image: some blocks of other data, the kernel at block 8, more
/// data after it.
fn image(kernel: &[u8], seed: u8) -> Vec<u8> {
    let mut img: Vec<u8> = (0..8 * 4096).map(|i| (i % 251) as u8 ^ seed).collect();
    img.extend_from_slice(kernel);
    img.resize(img.len().div_ceil(4096) * 4096, 0);
    img.extend((0..16 * 4096).map(|i| (i % 241) as u8));
    img
}

fn kinds(pkg: &Path) -> serde_json::Value {
    let out = romdelta()
        .args(["inspect", "--json"])
        .arg(pkg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn uses(v: &serde_json::Value, kind: &str) -> bool {
    v["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["by_kind"].as_array().unwrap())
        .any(|k| k["kind"] == kind)
}

/// Source and target images with a kernel whose code changed in a few bytes.
fn kernel_pair(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let old = code(5, 400_000);
    let mut new = old.clone();
    new[150_000..150_008].copy_from_slice(b"6.1.0-57");
    new[300_000] ^= 0x40;
    let (a, b) = (image(&bzimage(&old), 0), image(&bzimage(&new), 1));
    let (pa, pb) = (dir.join("a.img"), dir.join("b.img"));
    std::fs::write(&pa, &a).unwrap();
    std::fs::write(&pb, &b).unwrap();
    (pa, pb, b)
}

#[test]
fn a_changed_kernel_is_rebuilt_from_its_decompressed_code() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb, b) = kernel_pair(dir.path());

    // With the memory: one rebuild, much smaller than without.
    let pkg = dir.path().join("xz.romdelta");
    romdelta()
        .arg("diff")
        .args([&pa, &pb])
        .arg("-o")
        .arg(&pkg)
        .args(["--apply-memory", "512", "-q"])
        .assert()
        .success();
    let v = kinds(&pkg);
    assert!(uses(&v, KIND), "{v}");
    let need = v["apply_memory_mib"].as_u64().unwrap();
    assert!((65..=512).contains(&need), "{need}");
    assert!(
        v["codecs"][0].as_str().unwrap().starts_with("liblzma "),
        "{v}"
    );
    let text = romdelta().arg("inspect").arg(&pkg).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("apply memory: {need} MiB")),
        "{text}"
    );

    // The default apply refuses before writing, naming both numbers.
    let out = dir.path().join("out-default.img");
    let r = romdelta()
        .args(["apply", "--insecure-no-verify", "--source"])
        .arg(&pa)
        .arg("-o")
        .arg(&out)
        .arg(&pkg)
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(1));
    let e = String::from_utf8_lossy(&r.stderr);
    assert!(
        e.contains(&format!("{need} MiB")) && e.contains("64 MiB") && e.contains("--max-memory"),
        "{e}"
    );
    assert!(!out.exists());
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("partial")),
        "nothing staged"
    );

    // Allowed the memory, it writes the target exactly.
    let out = dir.path().join("out.img");
    romdelta()
        .args([
            "apply",
            "--insecure-no-verify",
            "--max-memory",
            "512",
            "--source",
        ])
        .arg(&pa)
        .arg("-o")
        .arg(&out)
        .arg(&pkg)
        .assert()
        .success();
    assert_eq!(std::fs::read(&out).unwrap(), b);

    // Without --apply-memory: no such operation, and still the target.
    let plain = dir.path().join("plain.romdelta");
    romdelta()
        .arg("diff")
        .args([&pa, &pb])
        .arg("-o")
        .arg(&plain)
        .arg("-q")
        .assert()
        .success();
    let v = kinds(&plain);
    assert!(!uses(&v, KIND), "{v}");
    assert_eq!(v["apply_memory_mib"], 64);
    applies_exactly(&plain, &pa, &b);
    let (small, large) = (
        std::fs::metadata(&pkg).unwrap().len(),
        std::fs::metadata(&plain).unwrap().len(),
    );
    assert!(small * 3 < large, "{small} vs {large} bytes");
}

/// A kernel found and paired, whose new stream no candidate reproduces,
/// is encoded byte-level after all (the rebuild runs beside the rest of
/// the plan and its blocks are claimed first): exact, and as small as
/// without `--apply-memory`.
#[test]
fn a_kernel_that_does_not_reproduce_falls_back_to_byte_level() {
    let dir = tempfile::tempdir().unwrap();
    let old = code(5, 400_000);
    let mut new = old.clone();
    new[200_000..200_008].copy_from_slice(b"6.1.0-57");
    let a = image(&bzimage(&old), 0);
    let b = image(&bzimage_of(&new, xz_nice(&new, Some(200))), 1);
    let (pa, pb) = (dir.path().join("a.img"), dir.path().join("b.img"));
    std::fs::write(&pa, &a).unwrap();
    std::fs::write(&pb, &b).unwrap();
    let mut sizes = Vec::new();
    for memory in [Some("512"), None] {
        let pkg = dir.path().join(format!("{memory:?}.romdelta"));
        let mut cmd = romdelta();
        cmd.arg("diff")
            .args([&pa, &pb])
            .arg("-o")
            .arg(&pkg)
            .arg("-q");
        if let Some(m) = memory {
            cmd.args(["--apply-memory", m]);
        }
        cmd.assert().success();
        let v = kinds(&pkg);
        assert!(!uses(&v, KIND), "{v}");
        assert_eq!(v["apply_memory_mib"], 64, "{v}");
        applies_exactly(&pkg, &pa, &b);
        sizes.push(std::fs::metadata(&pkg).unwrap().len());
    }
    assert!(sizes[0] * 100 <= sizes[1] * 102, "{sizes:?}");
}

/// Applies `pkg` to `source` with the default memory and checks it writes
/// exactly `target`.
fn applies_exactly(pkg: &Path, source: &Path, target: &[u8]) {
    let out = pkg.with_extension("out.img");
    romdelta()
        .args(["apply", "--insecure-no-verify", "--source"])
        .arg(source)
        .arg("-o")
        .arg(&out)
        .arg(pkg)
        .assert()
        .success();
    assert_eq!(std::fs::read(&out).unwrap(), target);
}

/// The package rewritten (unsigned) with a changed manifest.
fn rewritten(pkg: &Path, out: &Path, f: impl FnOnce(&mut romdelta_format::Manifest)) {
    let bytes = std::fs::read(pkg).unwrap();
    let parsed = romdelta_format::Package::parse(&bytes).unwrap();
    let mut m = parsed.manifest.clone();
    f(&mut m);
    let manifest = m.encode();
    let mut other = romdelta_format::Package::encode_prefix_bytes(
        m.format_version(),
        &manifest,
        m.data_len,
        &[],
    );
    other.extend_from_slice(parsed.data);
    std::fs::write(out, &other).unwrap();
}

#[test]
fn another_liblzma_or_too_little_declared_memory_is_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (pa, pb, _) = kernel_pair(d);
    let pkg = d.join("xz.romdelta");
    romdelta()
        .arg("diff")
        .args([&pa, &pb])
        .arg("-o")
        .arg(&pkg)
        .args(["--apply-memory", "512", "-q"])
        .assert()
        .success();
    let runs = d.join("runs");
    std::fs::create_dir(&runs).unwrap();
    let apply = |p: &Path| {
        let r = romdelta()
            .args([
                "apply",
                "--insecure-no-verify",
                "--max-memory",
                "512",
                "--source",
            ])
            .arg(&pa)
            .arg("-o")
            .arg(runs.join("out.img"))
            .arg(p)
            .output()
            .unwrap();
        assert_eq!(r.status.code(), Some(1));
        String::from_utf8_lossy(&r.stderr).into_owned()
    };
    // Another liblzma: refused before anything is staged.
    let other = d.join("other.romdelta");
    rewritten(&pkg, &other, |m| {
        let c = m
            .codecs
            .iter_mut()
            .find(|c| c.library == romdelta_format::CodecLibrary::Liblzma)
            .unwrap();
        c.version = 50020052;
    });
    let e = apply(&other);
    assert!(
        e.contains("liblzma 5.2.5") && e.contains("liblzma 5.8.4"),
        "{e}"
    );
    assert!(crate::common::listing(&runs).is_empty());
    // A package that declares less memory than its operation needs: the
    // operation is refused before it allocates, and no output appears.
    rewritten(&pkg, &other, |m| m.apply_memory_mib = 0);
    let e = apply(&other);
    assert!(e.contains("its package declares"), "{e}");
    assert!(!runs.join("out.img").exists());
}
