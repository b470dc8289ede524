//! ROMs inside archives: a target-files style zip (`IMAGES/*.img`) and a
//! fastboot ROM tarball (`*/images/*.img`, sparse or raw), read without
//! unpacking to disk.

use crate::common::{have_img2simg, romdelta, synth_roms};
use std::io::Write;
use std::path::Path;

/// A target-files style zip of the ROM directory `rom`: deflated images
/// under IMAGES/, plus a META entry that is not a partition.
fn target_files(rom: &Path, zip_path: &Path) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(zip_path).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("META/misc_info.txt", opts).unwrap();
    zip.write_all(b"recovery_api_version=3\n").unwrap();
    for e in std::fs::read_dir(rom).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "img") {
            let name = format!("IMAGES/{}", p.file_name().unwrap().to_string_lossy());
            zip.start_file(name, opts).unwrap();
            zip.write_all(&std::fs::read(&p).unwrap()).unwrap();
        }
    }
    zip.finish().unwrap();
}

/// A fastboot-style gzipped tarball `NAME/images/*.img` of `rom`; images
/// whose size is a whole number of blocks are stored sparse when
/// `sparse_ok` (`img2simg` is installed), as vendors ship them. Returns
/// how many images are sparse in it.
fn fastboot_tarball(rom: &Path, tgz: &Path, work: &Path, sparse_ok: bool) -> usize {
    let images = work.join("fastboot_rom/images");
    std::fs::create_dir_all(&images).unwrap();
    let mut sparse = 0;
    for e in std::fs::read_dir(rom).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "img") {
            continue;
        }
        let dest = images.join(p.file_name().unwrap());
        if sparse_ok && std::fs::metadata(&p).unwrap().len() % 4096 == 0 {
            assert!(std::process::Command::new("img2simg")
                .arg(&p)
                .arg(&dest)
                .status()
                .unwrap()
                .success());
            // The sparse magic, 0xed26ff3a little-endian.
            let head = std::fs::read(&dest).unwrap();
            assert!(
                head.starts_with(&[0x3a, 0xff, 0x26, 0xed]),
                "{}",
                dest.display()
            );
            sparse += 1;
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(tgz).unwrap(),
        flate2::Compression::fast(),
    );
    let mut tar = tar::Builder::new(gz);
    tar.append_dir_all("fastboot_rom", work.join("fastboot_rom"))
        .unwrap();
    tar.into_inner().unwrap().finish().unwrap();
    sparse
}

#[test]
fn zip_and_tarball_roms_give_the_same_package_as_directories() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = synth_roms(dir.path(), 12);
    let old_zip = dir.path().join("old-target_files.zip");
    let new_tgz = dir.path().join("new-fastboot.tgz");
    target_files(&old, &old_zip);
    // Without img2simg (a failure with ROMDELTA_REQUIRE_TOOLS) the tarball
    // holds raw images only; with it, sparse ones are what is read.
    let sparse_ok = have_img2simg();
    let sparse = fastboot_tarball(&new, &new_tgz, dir.path(), sparse_ok);
    if sparse_ok {
        assert!(sparse >= 2, "{sparse} sparse images in the tarball");
    } else {
        eprintln!("the tarball holds raw images only");
    }
    let from_dirs = dir.path().join("dirs.romdelta");
    let from_archives = dir.path().join("archives.romdelta");
    for (s, t, p) in [
        (&old, &new, &from_dirs),
        (&old_zip, &new_tgz, &from_archives),
    ] {
        romdelta()
            .args(["diff", "--level", "3", "-o"])
            .arg(p)
            .arg(s)
            .arg(t)
            .assert()
            .success();
    }
    assert!(std::fs::read(&from_dirs).unwrap() == std::fs::read(&from_archives).unwrap());
    // Applied with the zip as its source, the package writes the new images.
    let out = dir.path().join("out");
    romdelta()
        .args(["apply", "--insecure-no-verify", "-o"])
        .arg(&out)
        .arg("--source")
        .arg(&old_zip)
        .arg(&from_archives)
        .assert()
        .success();
    for e in std::fs::read_dir(&new).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "img") {
            let got = std::fs::read(out.join(p.file_name().unwrap())).unwrap();
            assert!(got == std::fs::read(&p).unwrap(), "{}", p.display());
        }
    }
}

#[test]
fn an_archive_without_images_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let zip_path = dir.path().join("empty.zip");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
    zip.start_file("README", zip::write::SimpleFileOptions::default())
        .unwrap();
    zip.write_all(b"no images here").unwrap();
    zip.finish().unwrap();
    let diff_fails_with = |said: &str| {
        romdelta()
            .args(["diff", "--full", "-o"])
            .arg(dir.path().join("p"))
            .arg(&zip_path)
            .assert()
            .code(2)
            .stderr(predicates::str::contains(said));
        assert!(!dir.path().join("p").exists());
    };
    diff_fails_with("IMAGES/NAME.img");
    // A damaged zip: a clear error too.
    std::fs::write(&zip_path, b"PK\x03\x04 not really a zip").unwrap();
    diff_fails_with("zip");
}
