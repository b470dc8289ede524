//! Android sparse images as diff and apply inputs, made by the real
//! `img2simg` (android-sdk-libsparse-utils).

use crate::common::{have_img2simg, romdelta, synth_roms};
use std::path::Path;
use std::process::Command;

/// Copies the ROM directory `from` to `to`, converting every image whose
/// size is a whole number of 4 KiB blocks to a sparse image (img2simg pads
/// other sizes, which would change the image).
fn sparse_copy(from: &Path, to: &Path) -> usize {
    std::fs::create_dir_all(to).unwrap();
    let mut converted = 0;
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if std::fs::metadata(&p).unwrap().len() % 4096 == 0 {
            let st = Command::new("img2simg")
                .arg(&p)
                .arg(&dest)
                .status()
                .unwrap();
            assert!(st.success(), "img2simg {}", p.display());
            converted += 1;
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
    converted
}

#[test]
fn sparse_inputs_give_the_same_package_as_raw_ones() {
    if !have_img2simg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = synth_roms(dir.path(), 5);
    let (sold, snew) = (dir.path().join("sold"), dir.path().join("snew"));
    assert!(sparse_copy(&old, &sold) >= 2);
    assert!(sparse_copy(&new, &snew) >= 2);
    let raw_pkg = dir.path().join("raw.romdelta");
    let sparse_pkg = dir.path().join("sparse.romdelta");
    for (s, t, p) in [(&old, &new, &raw_pkg), (&sold, &snew, &sparse_pkg)] {
        romdelta()
            .args(["diff", "--level", "3", "--threads", "2", "-o"])
            .arg(p)
            .arg(s)
            .arg(t)
            .assert()
            .success();
    }
    // The expanded images are what is diffed: the packages are identical.
    assert!(std::fs::read(&raw_pkg).unwrap() == std::fs::read(&sparse_pkg).unwrap());
    // Applied to the sparse source, the package writes the raw target.
    let out = dir.path().join("out");
    romdelta()
        .args(["apply", "--insecure-no-verify", "-o"])
        .arg(&out)
        .arg("--source")
        .arg(&sold)
        .arg(&sparse_pkg)
        .assert()
        .success();
    for e in std::fs::read_dir(&new).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap();
        assert!(std::fs::read(out.join(name)).unwrap() == std::fs::read(&p).unwrap());
    }
    // A full package from the sparse target equals the one from the raw target.
    let (f1, f2) = (dir.path().join("f1"), dir.path().join("f2"));
    for (t, p) in [(&new, &f1), (&snew, &f2)] {
        romdelta()
            .args(["diff", "--full", "--level", "3", "-o"])
            .arg(p)
            .arg(t)
            .assert()
            .success();
    }
    assert!(std::fs::read(&f1).unwrap() == std::fs::read(&f2).unwrap());
}

#[test]
fn a_damaged_sparse_image_is_refused_with_its_name() {
    if !have_img2simg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("raw.img");
    let bytes: Vec<u8> = (0..64 * 4096u32).map(|i| (i / 4096 % 7) as u8).collect();
    std::fs::write(&raw, &bytes).unwrap();
    let sparse = dir.path().join("system.img");
    assert!(Command::new("img2simg")
        .arg(&raw)
        .arg(&sparse)
        .status()
        .unwrap()
        .success());
    let len = std::fs::metadata(&sparse).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&sparse)
        .unwrap();
    f.set_len(len - 100).unwrap();
    let out = romdelta()
        .args(["diff", "--full", "-o"])
        .arg(dir.path().join("p"))
        .arg(&sparse)
        .assert()
        .code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        err.contains("system.img") && err.contains("Android sparse image"),
        "{err}"
    );
    assert!(!dir.path().join("p").exists());
}

#[test]
fn apply_writes_sparse_images_that_simg2img_expands_to_the_target() {
    if !have_img2simg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = synth_roms(dir.path(), 8);
    let pkg = dir.path().join("p.romdelta");
    romdelta()
        .args(["diff", "--level", "1", "-o"])
        .arg(&pkg)
        .arg(&old)
        .arg(&new)
        .assert()
        .success();
    let out = dir.path().join("out");
    romdelta()
        .args(["apply", "--sparse", "--insecure-no-verify", "-o"])
        .arg(&out)
        .arg("--source")
        .arg(&old)
        .arg(&pkg)
        .assert()
        .success();
    let mut sparse = 0;
    for e in std::fs::read_dir(&new).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "img") {
            continue;
        }
        let want = std::fs::read(&p).unwrap();
        let got = out.join(p.file_name().unwrap());
        if want.len() % 4096 != 0 {
            // Not a whole number of blocks: written raw.
            assert!(std::fs::read(&got).unwrap() == want);
            continue;
        }
        let expanded = dir.path().join("expanded.img");
        assert!(Command::new("simg2img")
            .arg(&got)
            .arg(&expanded)
            .status()
            .unwrap()
            .success());
        assert!(std::fs::read(&expanded).unwrap() == want, "{}", p.display());
        assert!(std::fs::metadata(&got).unwrap().len() < want.len() as u64);
        sparse += 1;
    }
    assert!(sparse >= 2);
}
