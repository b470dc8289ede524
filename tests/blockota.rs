//! Block-based OTAs (transfer lists): releasetools' fixtures extracted and
//! applied in place byte for byte, from directories and zips, raw and
//! brotli new.dat; wrong bases and damaged packages refused before a
//! write; power cuts at every point of an apply.

use crate::common::{romdelta, unpack_fixture};
use romdelta_android::blockota::{Package, TransferList};
use romdelta_storage::sim::{CutMode, SimFs};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The unpacked block_ota fixture, or `None` (skipped) without it.
fn fixture(dir: &Path) -> Option<PathBuf> {
    unpack_fixture("block_ota", "block_ota.tar.xz", dir)
}

/// A package directory of `files` (names under `from`) as `NAME` files.
fn package(from: &Path, files: &[&str], to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for f in files {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
    to.to_path_buf()
}

/// A zip of `files` of `from`, each deflated or stored, with an updater
/// script naming `new_dat`.
fn zip_of(from: &Path, files: &[&str], deflate: bool, new_dat: &str, to: &Path) -> PathBuf {
    let mut z = zip::ZipWriter::new(std::fs::File::create(to).unwrap());
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let opts = zip::write::SimpleFileOptions::default().compression_method(method);
    for f in files {
        z.start_file(*f, opts).unwrap();
        z.write_all(&std::fs::read(from.join(f)).unwrap()).unwrap();
    }
    z.start_file("META-INF/com/google/android/updater-script", opts)
        .unwrap();
    let script = format!(
        "block_image_update(map_partition(\"system\"), package_extract_file(\"system.transfer.list\"), \"{new_dat}\", \"system.patch.dat\") ||\n  abort(\"E1001: Failed to update system image.\");\n"
    );
    z.write_all(script.as_bytes()).unwrap();
    z.finish().unwrap();
    to.to_path_buf()
}

const FULL: [&str; 3] = ["system.transfer.list", "system.new.dat", "system.patch.dat"];
const FULL_BR: [&str; 3] = [
    "system.transfer.list",
    "system.new.dat.br",
    "system.patch.dat",
];

/// A package of `from`'s list and patch.dat with new.dat as one
/// `lzma_alone` stream (`NAME.new.dat.lzma`).
fn lzma_package(from: &Path, to: &Path) -> PathBuf {
    package(from, &["system.transfer.list", "system.patch.dat"], to);
    let opts = liblzma::stream::LzmaOptions::new_preset(6).unwrap();
    let s = liblzma::stream::Stream::new_lzma_encoder(&opts).unwrap();
    let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), s);
    e.write_all(&std::fs::read(from.join("system.new.dat")).unwrap())
        .unwrap();
    std::fs::write(to.join("system.new.dat.lzma"), e.finish().unwrap()).unwrap();
    to.to_path_buf()
}

/// The list of `from` rewritten as version `v` (3: the same commands; 2:
/// no hashes on moves and patches), with the other files beside it.
fn older_version(from: &Path, v: u32, to: &Path) -> PathBuf {
    package(from, &FULL, to);
    let text = std::fs::read_to_string(from.join("system.transfer.list")).unwrap();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let w: Vec<&str> = line.split(' ').collect();
        out.push(match w[0] {
            _ if i == 0 => v.to_string(),
            "move" if v == 2 => format!("move {}", w[2..].join(" ")),
            "bsdiff" if v == 2 => [&w[..3], &w[5..]].concat().join(" "),
            _ => line.to_string(),
        });
    }
    std::fs::write(to.join("system.transfer.list"), out.join("\n") + "\n").unwrap();
    to.to_path_buf()
}

/// The package in `from` in every form a reader meets, under `root`:
/// directories with raw, brotli and LZMA new.dat, stored and deflated zips.
fn forms(from: &Path, root: &Path) -> Vec<(&'static str, PathBuf)> {
    let zips = root.join("zips");
    std::fs::create_dir_all(&zips).unwrap();
    vec![
        ("raw dir", package(from, &FULL, &root.join("raw"))),
        ("br dir", package(from, &FULL_BR, &root.join("br"))),
        ("lzma dir", lzma_package(from, &root.join("lzma"))),
        (
            "stored zip",
            zip_of(
                from,
                &FULL_BR,
                false,
                "system.new.dat.br",
                &zips.join("s.zip"),
            ),
        ),
        (
            "deflated zip",
            zip_of(from, &FULL, true, "system.new.dat", &zips.join("d.zip")),
        ),
    ]
}

#[test]
fn releasetools_full_ota_extracts_to_the_exact_image() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fx) = fixture(dir.path()) else {
        return;
    };
    let want = std::fs::read(fx.join("images/B.img")).unwrap();
    let full = fx.join("full");
    let mut cases = forms(&full, dir.path());
    cases.extend([
        // Both forms in one directory (as in the fixture): the raw one is read.
        ("both forms", full.clone()),
    ]);
    for (what, pkg) in cases {
        let out = dir.path().join(format!("out-{}", what.replace(' ', "-")));
        romdelta()
            .args(["blockota", "extract"])
            .arg(&pkg)
            .arg("-o")
            .arg(&out)
            .assert()
            .success();
        assert!(
            std::fs::read(out.join("system.img")).unwrap() == want,
            "{what}"
        );
        // Extracting again never overwrites.
        romdelta()
            .args(["blockota", "extract"])
            .arg(&pkg)
            .arg("-o")
            .arg(&out)
            .assert()
            .failure()
            .stderr(predicates::str::contains("never overwritten"));
    }
    let out = romdelta()
        .args(["blockota", "inspect", "--json"])
        .arg(&full)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["version"], 4);
    assert_eq!(v[0]["blocks_written"], 816);
    assert_eq!(v[0]["incremental"], false);
    assert_eq!(v[0]["size"], 3072 * 4096);
}

#[test]
fn releasetools_incremental_applies_in_place_to_the_exact_image() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fx) = fixture(dir.path()) else {
        return;
    };
    let (a, want) = (
        std::fs::read(fx.join("images/A.img")).unwrap(),
        std::fs::read(fx.join("images/B.img")).unwrap(),
    );
    let inc = fx.join("incremental");
    let mut cases = forms(&inc, dir.path());
    cases.extend([
        ("version 3", older_version(&inc, 3, &dir.path().join("v3"))),
        ("version 2", older_version(&inc, 2, &dir.path().join("v2"))),
    ]);
    for (what, pkg) in cases {
        // An image file, and a directory of NAME.img.
        let img_dir = dir.path().join(format!("img-{}", what.replace(' ', "-")));
        std::fs::create_dir_all(&img_dir).unwrap();
        let img = img_dir.join("system.img");
        std::fs::write(&img, &a).unwrap();
        let target = if what.contains("zip") { &img_dir } else { &img };
        let out = romdelta()
            .args(["blockota", "apply", "--json"])
            .arg(&pkg)
            .arg("--in-place")
            .arg(target)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v[0]["commands"], 42, "{what}");
        // Version 2 lists carry no hashes.
        let least = if what == "version 2" { 0 } else { 17 };
        assert!(
            v[0]["source_hashes"].as_u64().unwrap() >= least,
            "{what}: {v}"
        );
        assert!(std::fs::read(&img).unwrap() == want, "{what}");
        // Nothing of the run is left beside the image.
        let left: Vec<_> = std::fs::read_dir(&img_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("system.img")], "{what}");
    }
    // The full package, applied in place over the old image, gives the
    // new one too (a full package repairs any state).
    let img = dir.path().join("full.img");
    std::fs::write(&img, &a).unwrap();
    romdelta()
        .args(["blockota", "apply"])
        .arg(fx.join("full"))
        .arg("--in-place")
        .arg(&img)
        .assert()
        .success();
    assert!(std::fs::read(&img).unwrap() == want);
}

#[test]
fn a_wrong_base_is_refused_before_the_first_write() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fx) = fixture(dir.path()) else {
        return;
    };
    let inc = fx.join("incremental");
    // The old build with one block of a later command's source changed
    // (read by line 18's move), and another build.
    let b = std::fs::read(fx.join("images/B.img")).unwrap();
    let mut a = std::fs::read(fx.join("images/A.img")).unwrap();
    a[190 * 4096 + 17] ^= 1;
    let mut other = b.clone();
    other[100 * 4096] ^= 1;
    for (what, bytes, line) in [
        ("another build", &other, "line 6 (bsdiff)"),
        ("altered old build", &a, "line 18 (move)"),
    ] {
        let img = dir.path().join("system.img");
        std::fs::write(&img, bytes).unwrap();
        romdelta()
            .args(["blockota", "apply"])
            .arg(&inc)
            .arg("--in-place")
            .arg(&img)
            .assert()
            .code(1)
            .stderr(predicates::str::contains(format!("system: {line}")))
            .stderr(predicates::str::contains("nothing was written"));
        assert!(&std::fs::read(&img).unwrap() == bytes, "{what}");
        assert!(!dir.path().join(".system.img.romdelta-blockota").exists());
    }
    // The new build itself: already applied, nothing written.
    let img = dir.path().join("system.img");
    std::fs::write(&img, &b).unwrap();
    let out = romdelta()
        .args(["blockota", "apply", "--json"])
        .arg(&inc)
        .arg("--in-place")
        .arg(&img)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["already_applied"], true);
    assert_eq!(v[0]["commands"], 0);
    assert!(std::fs::read(&img).unwrap() == b);
    // An incremental is not extracted.
    romdelta()
        .args(["blockota", "extract"])
        .arg(&inc)
        .arg("-o")
        .arg(dir.path().join("x"))
        .assert()
        .code(1)
        .stderr(predicates::str::contains("an incremental"));
}

#[test]
fn every_cut_of_a_transfer_list_new_dat_or_patch_dat_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fx) = fixture(dir.path()) else {
        return;
    };
    let inc = fx.join("incremental");
    let text = std::fs::read(inc.join("system.transfer.list")).unwrap();
    let patch_len = std::fs::metadata(inc.join("system.patch.dat"))
        .unwrap()
        .len();
    let whole = TransferList::parse(&text, patch_len).unwrap();
    assert_eq!(whole.commands.len(), 42);
    let mut accepted = 0;
    for cut in 0..text.len() {
        if let Ok(l) = TransferList::parse(&text[..cut], patch_len) {
            // Only cuts that lose nothing but trailing erase lines (or
            // the final newline) still parse: every write is counted by
            // the header.
            let n = l.commands.len();
            assert_eq!(l.commands[..], whole.commands[..n], "cut at {cut}");
            assert!(
                whole.commands[n..]
                    .iter()
                    .all(|(_, c)| matches!(c, romdelta_android::blockota::Command::Erase(_))),
                "cut at {cut} loses more than erase lines"
            );
            accepted += 1;
        }
    }
    assert!(accepted <= 3, "{accepted} cuts accepted");
    // A cut or damaged new.dat or patch.dat: refused, the image untouched.
    let a = std::fs::read(fx.join("images/A.img")).unwrap();
    let new_dat = std::fs::read(inc.join("system.new.dat")).unwrap();
    let new_br = std::fs::read(inc.join("system.new.dat.br")).unwrap();
    let patch = std::fs::read(inc.join("system.patch.dat")).unwrap();
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "new.dat cut by a block",
            "system.new.dat",
            new_dat[..new_dat.len() - 4096].to_vec(),
        ),
        (
            "new.dat one byte long",
            "system.new.dat",
            [&new_dat[..], &[0]].concat(),
        ),
        (
            "patch.dat cut",
            "system.patch.dat",
            patch[..patch.len() - 1].to_vec(),
        ),
        (
            "new.dat.br cut",
            "system.new.dat.br",
            new_br[..new_br.len() / 2].to_vec(),
        ),
    ];
    for (what, name, bytes) in cases {
        let pkg = dir.path().join(format!("pkg-{}", what.replace(' ', "-")));
        let files: &[&str] = if name.ends_with(".br") {
            &FULL_BR
        } else {
            &FULL
        };
        package(&inc, files, &pkg);
        std::fs::write(pkg.join(name), &bytes).unwrap();
        let img = dir.path().join("system.img");
        std::fs::write(&img, &a).unwrap();
        let out = romdelta()
            .args(["blockota", "apply"])
            .arg(&pkg)
            .arg("--in-place")
            .arg(&img)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{what}");
        if !name.ends_with(".br") {
            // Found before the first write.
            assert!(std::fs::read(&img).unwrap() == a, "{what}");
        }
        let _ = std::fs::remove_dir_all(dir.path().join(".system.img.romdelta-blockota"));
    }
}

/// Applies the fixture's incremental to `img` on `fs`.
fn apply_on(fs: &SimFs, pkg: &Package, img: &Path) -> Result<(), romdelta_apply::ApplyError> {
    let parts = pkg.select(&[]).unwrap();
    romdelta_apply::blockota::apply_in_place(&parts, img, fs).map(|_| ())
}

#[test]
fn power_cuts_at_every_point_of_a_block_ota_apply_end_with_the_new_build() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fx) = fixture(dir.path()) else {
        return;
    };
    let (a, want) = (
        std::fs::read(fx.join("images/A.img")).unwrap(),
        std::fs::read(fx.join("images/B.img")).unwrap(),
    );
    // The brotli form: resuming re-reads new.dat from its start.
    let pkg = Package::open(&package(
        &fx.join("incremental"),
        &FULL_BR,
        &dir.path().join("pkg"),
    ))
    .unwrap();
    let img = Path::new("/dev/system.img");
    let base = SimFs::new();
    base.mkdir_all(Path::new("/dev"));
    base.put(img, &a);
    let clean = base.fork();
    let before = clean.points();
    apply_on(&clean, &pkg, img).unwrap();
    assert!(clean.get(img).unwrap() == want);
    let total = clean.points() - before;
    let points = crate::faults::spread(total, 240);
    assert!(
        points.len() >= 200,
        "only {} points in {total}",
        points.len()
    );
    let (mut intact, mut resumed) = (0, 0);
    for &n in &points {
        for mode in [CutMode::Lost, CutMode::Torn(n)] {
            let what = format!("power cut at point {n} of {total} ({mode:?})");
            let fs = base.fork();
            fs.cut_power_at(n);
            assert!(apply_on(&fs, &pkg, img).is_err(), "{what}: went on");
            fs.reboot(mode);
            let now = fs.get(img).unwrap();
            if now == a {
                intact += 1;
            } else {
                resumed += 1;
            }
            apply_on(&fs, &pkg, img).unwrap_or_else(|e| panic!("{what}: resume: {e}"));
            assert!(fs.get(img).unwrap() == want, "{what}: not the new build");
            // Nothing of the run is left.
            assert_eq!(
                fs.files().len(),
                1,
                "{what}: {:?}",
                fs.files().iter().map(|f| &f.0).collect::<Vec<_>>()
            );
        }
    }
    eprintln!(
        "block OTA: {} power-cut points of {total}, 2 modes each: {intact} left the old image intact, {resumed} resumed a changed one; all ended with the new build",
        points.len()
    );
    assert!(intact > 0 && resumed > 0);
}

/// Whether `got` is `want` as a block OTA leaves it: the image may keep
/// more bytes than the new build's (a written last block is whole, and
/// what the old image had past the new end is erased), all zeros.
fn same_image(got: &[u8], want: &[u8]) -> bool {
    got.len() >= want.len()
        && got[..want.len()] == *want
        && got[want.len()..].iter().all(|&b| b == 0)
}

/// Bytes of a block OTA directory's files.
fn package_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[test]
fn generated_block_otas_of_multi_partition_roms_apply_to_the_new_build() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let (old, new) = crate::common::synth_roms(dir.path(), 31);
    // romdelta's own in-place package of the pair, for its size.
    romdelta()
        .args(["diff", "--in-place"])
        .arg(&old)
        .arg(&new)
        .arg("-o")
        .arg(d("own.rdp"))
        .assert()
        .success();
    let own = std::fs::metadata(d("own.rdp")).unwrap().len();
    for (what, out, extra) in [
        ("directory", d("ota"), &[][..]),
        ("zip", d("ota.zip"), &[][..]),
        ("full", d("full"), &["--full"][..]),
    ] {
        let mut cmd = romdelta();
        cmd.args(["diff", "--in-place", "--format", "block-ota"])
            .args(extra);
        if what != "full" {
            cmd.arg(&old);
        }
        cmd.arg(&new).arg("-o").arg(&out).assert().success();
        if what == "directory" {
            let size = package_bytes(&out);
            eprintln!(
                "{what}: block OTA {size} bytes, romdelta in-place package {own} ({:.3}x)",
                size as f64 / own as f64
            );
            assert!(size as f64 <= 1.15 * own as f64, "{what}: {size} vs {own}");
        }
        // The device: the old build's images.
        let dev = d(&format!("dev-{what}"));
        std::fs::create_dir_all(&dev).unwrap();
        for f in crate::common::listing(&old) {
            std::fs::copy(old.join(&f), dev.join(&f)).unwrap();
        }
        romdelta()
            .args(["blockota", "apply"])
            .arg(&out)
            .arg("--in-place")
            .arg(&dev)
            .assert()
            .success();
        for f in crate::common::listing(&new) {
            let (got, want) = (
                std::fs::read(dev.join(&f)).unwrap(),
                std::fs::read(new.join(&f)).unwrap(),
            );
            assert!(
                same_image(&got, &want),
                "{what}: {f}: {} vs {} bytes, first difference at {:?}",
                got.len(),
                want.len(),
                got.iter().zip(&want).position(|(a, b)| a != b)
            );
        }
        if what == "full" {
            romdelta()
                .args(["blockota", "extract"])
                .arg(&out)
                .arg("-o")
                .arg(d("extracted"))
                .assert()
                .success();
            for f in crate::common::listing(&new) {
                let got = std::fs::read(d("extracted").join(&f)).unwrap();
                assert!(
                    same_image(&got, &std::fs::read(new.join(&f)).unwrap()),
                    "{f}"
                );
            }
        }
        if what == "zip" {
            // The updater script calls block_image_update per partition.
            let mut z = zip::ZipArchive::new(std::fs::File::open(&out).unwrap()).unwrap();
            let mut script = String::new();
            std::io::Read::read_to_string(
                &mut z
                    .by_name("META-INF/com/google/android/updater-script")
                    .unwrap(),
                &mut script,
            )
            .unwrap();
            for p in ["system", "vendor", "boot", "product"] {
                assert!(
                    script.contains(&format!("package_extract_file(\"{p}.transfer.list\"), \"{p}.new.dat.br\", \"{p}.patch.dat\")")),
                    "{p}: {script}"
                );
            }
            assert!(script.contains("range_sha1("));
        }
    }
}

#[test]
fn a_generated_block_ota_of_the_fixture_pair_is_smaller_than_releasetools() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fx) = fixture(dir.path()) else {
        return;
    };
    let d = |n: &str| dir.path().join(n);
    for t in ["old", "new"] {
        std::fs::create_dir_all(d(t)).unwrap();
    }
    std::fs::copy(fx.join("images/A.img"), d("old/system.img")).unwrap();
    std::fs::copy(fx.join("images/B.img"), d("new/system.img")).unwrap();
    let releasetools: u64 = FULL_BR
        .iter()
        .map(|f| {
            std::fs::metadata(fx.join("incremental").join(f))
                .unwrap()
                .len()
        })
        .sum();
    for extra in [&[][..], &["--bsdf2"][..]] {
        let out = d(&format!("ota{}", extra.len()));
        romdelta()
            .args(["diff", "--in-place", "--format", "block-ota"])
            .args(extra)
            .arg(d("old"))
            .arg(d("new"))
            .arg("-o")
            .arg(&out)
            .assert()
            .success();
        let size = package_bytes(&out);
        eprintln!("{extra:?}: {size} bytes, releasetools {releasetools}");
        assert!(size < releasetools, "{extra:?}: {size} >= {releasetools}");
        let img = d("system.img");
        std::fs::copy(fx.join("images/A.img"), &img).unwrap();
        romdelta()
            .args(["blockota", "apply"])
            .arg(&out)
            .arg("--in-place")
            .arg(&img)
            .assert()
            .success();
        assert!(std::fs::read(&img).unwrap() == std::fs::read(fx.join("images/B.img")).unwrap());
    }
}

#[test]
fn a_stash_freed_after_its_blocks_were_overwritten_survives_power_cuts() {
    // stash block 0, overwrite it, free the stash unused: a resumed run
    // must not stash the overwritten block again.
    let dir = tempfile::tempdir().unwrap();
    let old: Vec<u8> = (0..4 * 4096u32).map(|i| (i % 251) as u8).collect();
    let new_block = vec![0x5au8; 4096];
    let id = romdelta_android::blockota::sha1_hex(&old[..4096]);
    let pkg = dir.path().join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(
        pkg.join("system.transfer.list"),
        format!("4\n1\n1\n1\nstash {id} 2,0,1\nnew 2,0,1\nfree {id}\n"),
    )
    .unwrap();
    std::fs::write(pkg.join("system.new.dat"), &new_block).unwrap();
    std::fs::write(pkg.join("system.patch.dat"), b"").unwrap();
    let pkg = Package::open(&pkg).unwrap();
    let img = Path::new("/dev/system.img");
    let base = SimFs::new();
    base.mkdir_all(Path::new("/dev"));
    base.put(img, &old);
    let clean = base.fork();
    let before = clean.points();
    apply_on(&clean, &pkg, img).unwrap();
    let total = clean.points() - before;
    let mut want = old.clone();
    want[..4096].copy_from_slice(&new_block);
    assert!(clean.get(img).unwrap() == want);
    for n in 1..=total {
        for seed in 0..4 {
            let mode = if seed == 0 {
                CutMode::Lost
            } else {
                CutMode::Torn(n * 7 + seed)
            };
            let fs = base.fork();
            fs.cut_power_at(n);
            assert!(apply_on(&fs, &pkg, img).is_err());
            fs.reboot(mode);
            apply_on(&fs, &pkg, img)
                .unwrap_or_else(|e| panic!("cut at {n} of {total} ({mode:?}): {e}"));
            assert!(fs.get(img).unwrap() == want, "cut at {n} ({mode:?})");
        }
    }
}
