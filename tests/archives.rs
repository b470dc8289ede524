//! ROMs inside archives: a target-files style zip (`IMAGES/*.img`) and a
//! fastboot ROM tarball (`*/images/*.img`, sparse or raw), read without
//! unpacking them where anyone can see.

use crate::common::{have_img2simg, romdelta, romdelta_within, synth_roms};
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

/// A zip holding `IMAGES/system.img` (`data`, stored or deflated) whose
/// local and central headers are then made to claim `claim` bytes.
fn zip_claiming(path: &Path, data: &[u8], method: zip::CompressionMethod, claim: u32) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(method);
    zip.start_file("IMAGES/system.img", opts).unwrap();
    zip.write_all(data).unwrap();
    zip.finish().unwrap();
    let mut bytes = std::fs::read(path).unwrap();
    let stored = method == zip::CompressionMethod::Stored;
    let mut patched = 0;
    for (sig, sizes) in [(b"PK\x03\x04", 18), (b"PK\x01\x02", 20)] {
        let at = bytes.windows(4).position(|w| w == sig).unwrap();
        // Compressed size (only when stored), then uncompressed size.
        if stored {
            bytes[at + sizes..at + sizes + 4].copy_from_slice(&claim.to_le_bytes());
        }
        bytes[at + sizes + 4..at + sizes + 8].copy_from_slice(&claim.to_le_bytes());
        patched += 1;
    }
    assert_eq!(patched, 2);
    std::fs::write(path, bytes).unwrap();
}

/// `diff --full` of `archive`, with 512 MiB of address space: refused with
/// exit code 2 and a message naming the member that says `said`.
fn refused_within_512_mib(dir: &Path, archive: &Path, member: &str, said: &str) {
    let out = romdelta_within(512)
        .args(["diff", "--full", "--threads", "1", "-o"])
        .arg(dir.join("p"))
        .arg(archive)
        .assert()
        .code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.contains(member) && err.contains(said), "{err}");
    assert!(!dir.join("p").exists());
}

#[test]
fn archive_members_claiming_gigabytes_they_do_not_hold_are_refused_without_allocating_them() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..8192u32).map(|i| (i % 253) as u8).collect();
    let claim = 0xffff_f000u32; // 4 GiB less 4 KiB
                                // Deflated: the stream ends long before the size its headers give.
    let deflated = dir.path().join("deflated.zip");
    zip_claiming(&deflated, &data, zip::CompressionMethod::Deflated, claim);
    refused_within_512_mib(dir.path(), &deflated, "IMAGES/system.img", "4294963200");
    // Stored: its bytes would lie past the end of the zip.
    let stored = dir.path().join("stored.zip");
    zip_claiming(&stored, &data, zip::CompressionMethod::Stored, claim);
    refused_within_512_mib(
        dir.path(),
        &stored,
        "IMAGES/system.img",
        "outside the archive",
    );
    // A tar header claiming 8 GiB less one byte, over 8 KiB of data.
    let tar_path = dir.path().join("rom.tar");
    let mut header = tar::Header::new_gnu();
    header.set_path("rom/images/system.img").unwrap();
    header.set_size(0o77777777777);
    header.set_mode(0o644);
    header.set_cksum();
    let mut bytes = header.as_bytes().to_vec();
    bytes.extend_from_slice(&data);
    bytes.extend_from_slice(&[0u8; 1024]);
    std::fs::write(&tar_path, &bytes).unwrap();
    refused_within_512_mib(dir.path(), &tar_path, "rom/images/system.img", "8589934591");
}

#[test]
fn stored_and_deflated_members_read_as_their_images() {
    let dir = tempfile::tempdir().unwrap();
    // Zeros, data at an odd offset, and an odd length.
    let mut image = vec![0u8; 3 << 20];
    image[12_345..1_000_000]
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = (i % 241) as u8);
    image.truncate((3 << 20) - 77);
    let raw = dir.path().join("system.img");
    std::fs::write(&raw, &image).unwrap();
    let mut packages = Vec::new();
    for method in [
        zip::CompressionMethod::Stored,
        zip::CompressionMethod::Deflated,
    ] {
        let zip_path = dir.path().join(format!("{method:?}.zip"));
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
        let opts = zip::write::SimpleFileOptions::default().compression_method(method);
        // A member before it, so the image's data starts at no page boundary.
        zip.start_file("META/misc_info.txt", opts).unwrap();
        zip.write_all(b"x=1\n").unwrap();
        zip.start_file("IMAGES/system.img", opts).unwrap();
        zip.write_all(&image).unwrap();
        zip.finish().unwrap();
        packages.push(dir.path().join(format!("{method:?}.romdelta")));
        romdelta()
            .args(["diff", "--full", "--level", "1", "-o"])
            .arg(packages.last().unwrap())
            .arg(&zip_path)
            .assert()
            .success();
    }
    let from_raw = dir.path().join("raw.romdelta");
    let dir_rom = dir.path().join("rom");
    std::fs::create_dir_all(&dir_rom).unwrap();
    std::fs::copy(&raw, dir_rom.join("system.img")).unwrap();
    romdelta()
        .args(["diff", "--full", "--level", "1", "-o"])
        .arg(&from_raw)
        .arg(&dir_rom)
        .assert()
        .success();
    let want = std::fs::read(&from_raw).unwrap();
    for p in &packages {
        assert!(std::fs::read(p).unwrap() == want, "{}", p.display());
    }
    // A damaged byte inside the stored member fails the zip's CRC-32.
    let zip_path = dir.path().join("Stored.zip");
    let mut bytes = std::fs::read(&zip_path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(&zip_path, bytes).unwrap();
    let out = romdelta()
        .args(["diff", "--full", "-o"])
        .arg(dir.path().join("p"))
        .arg(&zip_path)
        .assert()
        .code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.contains("IMAGES/system.img"), "{err}");
}
