//! Symbolic links planted where romdelta keeps its own files (staged
//! output, journals, stashes, a device's slot directory) are refused by
//! name and never followed: what they point to is left as it was.

use crate::common::{romdelta, synth_roms};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// A directory someone else owns: a file and a subdirectory.
fn victim(root: &Path) -> PathBuf {
    let v = root.join("victim");
    std::fs::create_dir_all(v.join("sub")).unwrap();
    std::fs::write(v.join("a.txt"), b"precious\n").unwrap();
    v
}

fn assert_intact(v: &Path) {
    assert_eq!(
        std::fs::read(v.join("a.txt")).unwrap(),
        b"precious\n",
        "the linked file was changed or removed"
    );
    assert!(
        v.join("sub").is_dir(),
        "the linked subdirectory was removed"
    );
}

/// Runs `cmd`, expecting the victim `v` intact, a refusal (exit 1 or 2)
/// whose message names `link` and says it is a symbolic link, and `link`
/// still in place.
fn assert_refused(cmd: &mut assert_cmd::Command, link: &Path, v: &Path) {
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("{err}");
    assert_intact(v);
    assert!(
        matches!(out.status.code(), Some(1 | 2)),
        "exit {:?}: {err}",
        out.status.code()
    );
    let name = link.file_name().unwrap().to_string_lossy();
    assert!(
        err.contains(&*name) && err.contains("symbolic link"),
        "the message does not name the link: {err}"
    );
    assert!(
        std::fs::symlink_metadata(link).unwrap().is_symlink(),
        "the link was removed"
    );
}

/// A pseudo-random image of `blocks` 4 KiB blocks.
fn image(seed: u64, blocks: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..blocks * 4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A full package of one image, at `root/full.romdelta`.
fn full_package(root: &Path) -> PathBuf {
    let new = root.join("new.img");
    std::fs::write(&new, image(7, 16)).unwrap();
    full_package_of(&new, &root.join("full.romdelta"))
}

/// A full package of the ROM (image or directory) `new`, at `pkg`.
fn full_package_of(new: &Path, pkg: &Path) -> PathBuf {
    romdelta()
        .args(["diff", "--full", "--level", "3"])
        .arg(new)
        .arg("-o")
        .arg(pkg)
        .assert()
        .success();
    pkg.to_path_buf()
}

fn apply(pkg: &Path, out: &Path) -> assert_cmd::Command {
    let mut c = romdelta();
    c.arg("apply")
        .arg(pkg)
        .arg("-o")
        .arg(out)
        .arg("--insecure-no-verify");
    c
}

fn apply_in_place(pkg: &Path, target: &Path) -> assert_cmd::Command {
    let mut c = romdelta();
    c.args(["apply", "--insecure-no-verify", "--in-place"])
        .arg(target)
        .arg(pkg);
    c
}

#[test]
fn a_link_at_the_staged_image_is_refused_and_its_target_kept() {
    // The reproduction, exactly.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let pkg = full_package(root);
    let v = victim(root);
    let outp = root.join("outp");
    std::fs::create_dir(&outp).unwrap();
    let link = outp.join(".out.img.romdelta-partial");
    symlink(&v, &link).unwrap();
    assert_refused(&mut apply(&pkg, &outp.join("out.img")), &link, &v);
    assert!(!outp.join("out.img").exists());
    // A link to a file is refused the same way.
    std::fs::remove_file(&link).unwrap();
    symlink(v.join("a.txt"), &link).unwrap();
    assert_refused(&mut apply(&pkg, &outp.join("out.img")), &link, &v);
    // Once it is removed, the same command writes the output.
    std::fs::remove_file(&link).unwrap();
    apply(&pkg, &outp.join("out.img")).assert().success();
    assert_eq!(
        std::fs::read(outp.join("out.img")).unwrap(),
        std::fs::read(root.join("new.img")).unwrap()
    );
}

#[test]
fn a_link_at_the_journal_is_refused_and_its_target_kept() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let pkg = full_package(root);
    let v = victim(root);
    let outp = root.join("outp");
    std::fs::create_dir(&outp).unwrap();
    for target in [v.clone(), v.join("a.txt")] {
        let link = outp.join(".out.img.romdelta-journal");
        symlink(&target, &link).unwrap();
        assert_refused(&mut apply(&pkg, &outp.join("out.img")), &link, &v);
        std::fs::remove_file(&link).unwrap();
    }
    assert!(!outp.join("out.img").exists());
}

#[test]
fn a_link_at_the_staged_directory_is_refused_and_its_target_kept() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (_, new) = synth_roms(root, 5);
    let pkg = full_package_of(&new, &root.join("full.romdelta"));
    let v = victim(root);
    let link = root.join(".out.romdelta-partial");
    symlink(&v, &link).unwrap();
    assert_refused(&mut apply(&pkg, &root.join("out")), &link, &v);
    assert!(!root.join("out").exists());
}

/// An in-place package of one image whose halves swap (a stage with a
/// stash), in `root`: (old image, new image, package), and the same as a
/// ROM directory of `system.img`: (old dir, package).
fn in_place_packages(root: &Path) -> (PathBuf, Vec<u8>, PathBuf, PathBuf, PathBuf) {
    let a = image(11, 32);
    let mut b = a[64 * 1024..].to_vec();
    b.extend_from_slice(&a[..64 * 1024]);
    b[100] ^= 1;
    let (pa, pb) = (root.join("a.img"), root.join("b.img"));
    std::fs::write(&pa, &a).unwrap();
    std::fs::write(&pb, &b).unwrap();
    let pkg = root.join("ip.romdelta");
    romdelta()
        .args(["diff", "--in-place", "--level", "3"])
        .arg(&pa)
        .arg(&pb)
        .arg("-o")
        .arg(&pkg)
        .assert()
        .success();
    let (old, new) = (root.join("old"), root.join("new"));
    for (d, bytes) in [(&old, &a), (&new, &b)] {
        std::fs::create_dir(d).unwrap();
        std::fs::write(d.join("system.img"), bytes).unwrap();
    }
    let dir_pkg = root.join("ip-dir.romdelta");
    romdelta()
        .args(["diff", "--in-place", "--level", "3"])
        .arg(&old)
        .arg(&new)
        .arg("-o")
        .arg(&dir_pkg)
        .assert()
        .success();
    (pa, b, pkg, old, dir_pkg)
}

#[test]
fn links_at_the_in_place_journal_and_stash_are_refused_and_their_targets_kept() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (image_file, new, pkg, old_dir, dir_pkg) = in_place_packages(root);
    let old = std::fs::read(&image_file).unwrap();
    let v = victim(root);
    // Beside an image file, and inside a directory.
    let cases = [
        (root.join(".a.img.romdelta-journal"), &image_file, &pkg),
        (root.join(".a.img.romdelta-stash"), &image_file, &pkg),
        (old_dir.join(".romdelta-journal"), &old_dir, &dir_pkg),
        (old_dir.join(".romdelta-stash"), &old_dir, &dir_pkg),
    ];
    for (link, target, pkg) in &cases {
        for to in [v.clone(), v.join("a.txt")] {
            symlink(&to, link).unwrap();
            assert_refused(&mut apply_in_place(pkg, target), link, &v);
            std::fs::remove_file(link).unwrap();
        }
    }
    assert!(
        std::fs::read(&image_file).unwrap() == old,
        "a refused apply wrote"
    );
    assert!(std::fs::read(old_dir.join("system.img")).unwrap() == old);
    // An image inside the directory is not written through a link either.
    let real = old_dir.join("system.img");
    let elsewhere = root.join("elsewhere.img");
    std::fs::rename(&real, &elsewhere).unwrap();
    symlink(&elsewhere, &real).unwrap();
    let out = apply_in_place(&dir_pkg, &old_dir).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("symbolic link"),
        "{err}"
    );
    assert!(std::fs::read(&elsewhere).unwrap() == old);
    std::fs::remove_file(&real).unwrap();
    std::fs::rename(&elsewhere, &real).unwrap();
    // With the links gone, both update in place.
    apply_in_place(&pkg, &image_file).assert().success();
    assert!(std::fs::read(&image_file).unwrap() == new);
    apply_in_place(&dir_pkg, &old_dir).assert().success();
    assert!(std::fs::read(old_dir.join("system.img")).unwrap() == new);
}

#[test]
fn an_in_place_target_named_through_a_link_is_updated() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (image_file, new, pkg, old_dir, dir_pkg) = in_place_packages(root);
    let file_link = root.join("device.img");
    symlink(&image_file, &file_link).unwrap();
    apply_in_place(&pkg, &file_link).assert().success();
    assert!(std::fs::read(&image_file).unwrap() == new);
    let dir_link = root.join("device");
    symlink(&old_dir, &dir_link).unwrap();
    apply_in_place(&dir_pkg, &dir_link).assert().success();
    assert!(std::fs::read(old_dir.join("system.img")).unwrap() == new);
}

#[test]
fn an_output_named_through_a_link_replaces_the_link_not_its_target() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let pkg = full_package(root);
    let file = root.join("precious.txt");
    std::fs::write(&file, b"precious\n").unwrap();
    let out = root.join("out.img");
    symlink(&file, &out).unwrap();
    apply(&pkg, &out).assert().success();
    assert!(!std::fs::symlink_metadata(&out).unwrap().is_symlink());
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(root.join("new.img")).unwrap()
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"precious\n");
    // A directory of images cannot replace a link: refused before writing.
    let (_, new) = synth_roms(root, 5);
    let dir_pkg = full_package_of(&new, &root.join("full-dir.romdelta"));
    let v = victim(root);
    let out = root.join("out");
    std::fs::create_dir(v.join("empty")).unwrap();
    symlink(v.join("empty"), &out).unwrap();
    assert_refused(&mut apply(&dir_pkg, &out), &out, &v);
    assert!(std::fs::read_dir(v.join("empty")).unwrap().next().is_none());
    assert!(!root.join(".out.romdelta-partial").exists());
}

#[test]
fn a_link_at_a_devices_new_slot_is_refused_and_its_target_kept() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (old, new) = synth_roms(root, 9);
    let pkg = root.join("u.romdelta");
    romdelta()
        .args(["diff", "--level", "3"])
        .arg(&old)
        .arg(&new)
        .arg("-o")
        .arg(&pkg)
        .assert()
        .success();
    let dev = root.join("dev");
    romdelta()
        .args(["recovery", "init", "--device"])
        .arg(&dev)
        .arg("--from")
        .arg(&old)
        .assert()
        .success();
    let v = victim(root);
    let link = dev.join("slot_b.new");
    symlink(&v, &link).unwrap();
    let install = || {
        let mut c = romdelta();
        c.args(["recovery", "install", "--insecure-no-verify"])
            .arg(&pkg)
            .arg("--device")
            .arg(&dev);
        c
    };
    assert_refused(&mut install(), &link, &v);
    // Removed, the install goes on; the device may be named through a link.
    std::fs::remove_file(&link).unwrap();
    let dev_link = root.join("dev-link");
    symlink(&dev, &dev_link).unwrap();
    romdelta()
        .args(["recovery", "install", "--insecure-no-verify"])
        .arg(&pkg)
        .arg("--device")
        .arg(&dev_link)
        .assert()
        .success();
    assert!(!dev.join("slot_b.new").exists());
    assert!(std::fs::symlink_metadata(&dev_link).unwrap().is_symlink());
    assert_intact(&v);
}
