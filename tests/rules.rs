//! The field's update rules: device, exact source build, line, downgrade.
//! Every refusal exits 1, names what the package wants and what is
//! installed, and writes nothing.

use crate::common::{romdelta, synth_roms};
use predicates::prelude::*;
use std::path::Path;

fn prop(device: &str, region: &str, channel: &str, version: &str, ts: u64) -> String {
    format!(
        "ro.product.device={device}\nro.build.region={region}\nro.build.channel={channel}\nro.build.version.incremental={version}\nro.build.date.utc={ts}\n"
    )
}

fn write(p: &Path, text: &str) -> std::path::PathBuf {
    std::fs::write(p, text).unwrap();
    p.to_path_buf()
}

#[test]
fn every_rule_refuses_with_what_it_expected_and_found() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (old, new) = synth_roms(d, 9);
    write(
        &old.join("build.prop"),
        &prop("fuxi", "Global", "stable", "V1.0.1", 100),
    );
    write(
        &new.join("build.prop"),
        &prop("fuxi", "Global", "stable", "V1.0.2", 200),
    );
    let delta = d.join("delta.romdelta");
    romdelta()
        .args(["diff", "--level", "3"])
        .arg(&old)
        .arg(&new)
        .arg("-o")
        .arg(&delta)
        .assert()
        .success();
    // The package records both builds.
    let json = romdelta()
        .arg("inspect")
        .arg(&delta)
        .arg("--json")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["source_build"]["version"], "V1.0.1");
    assert_eq!(v["target_build"]["version"], "V1.0.2");

    let apply = |pkg: &Path, out: &str, installed: Option<&Path>, extra: &[&str]| {
        let mut c = romdelta();
        c.arg("apply")
            .arg(pkg)
            .arg("--insecure-no-verify")
            .arg("-o")
            .arg(d.join(out));
        if pkg == delta.as_path() {
            c.arg("--source").arg(&old);
        }
        if let Some(i) = installed {
            c.arg("--installed-build").arg(i);
        }
        c.args(extra);
        c.assert()
    };
    // The matching build (read from SOURCE/build.prop) takes it.
    apply(&delta, "ok", None, &[]).success();

    // Not the build the incremental was made from.
    let other = write(
        &d.join("v0.prop"),
        &prop("fuxi", "Global", "stable", "V1.0.0", 50),
    );
    apply(&delta, "wrong-build", Some(&other), &[])
        .code(1)
        .stderr(
            predicate::str::contains("applies only to")
                .and(predicate::str::contains("version=V1.0.1"))
                .and(predicate::str::contains("version=V1.0.0")),
        );
    // Another device.
    let dev = write(
        &d.join("dev.prop"),
        &prop("ishtar", "Global", "stable", "V1.0.1", 100),
    );
    apply(&delta, "wrong-device", Some(&dev), &[])
        .code(1)
        .stderr(
            predicate::str::contains("for device fuxi")
                .and(predicate::str::contains("device ishtar")),
        );
    // The same version string on another line (China ROM) is another build.
    let cn = write(
        &d.join("cn.prop"),
        &prop("fuxi", "CN", "stable", "V1.0.1", 100),
    );
    apply(&delta, "wrong-line", Some(&cn), &[])
        .code(1)
        .stderr(predicate::str::contains("region=CN"));

    // A full package switches line only when asked.
    let full_cn = d.join("full-cn.romdelta");
    let cn_target = write(
        &d.join("cn-target.prop"),
        &prop("fuxi", "CN", "stable", "V1.0.2", 300),
    );
    romdelta()
        .args(["diff", "--full", "--level", "3", "--target-build"])
        .arg(&cn_target)
        .arg(&new)
        .arg("-o")
        .arg(&full_cn)
        .assert()
        .success();
    let installed = old.join("build.prop");
    apply(&full_cn, "switch", Some(&installed), &[])
        .code(1)
        .stderr(predicate::str::contains("--allow-line-switch"));
    apply(
        &full_cn,
        "switched",
        Some(&installed),
        &["--allow-line-switch"],
    )
    .success();

    // No downgrade unless asked.
    let full_old = d.join("full-old.romdelta");
    romdelta()
        .args(["diff", "--full", "--level", "3", "--target-build"])
        .arg(&installed)
        .arg(&old)
        .arg("-o")
        .arg(&full_old)
        .assert()
        .success();
    let newer = write(
        &d.join("newer.prop"),
        &prop("fuxi", "Global", "stable", "V1.0.2", 200),
    );
    apply(&full_old, "down", Some(&newer), &[])
        .code(1)
        .stderr(predicate::str::contains("--allow-downgrade"));
    apply(
        &full_old,
        "downgraded",
        Some(&newer),
        &["--allow-downgrade"],
    )
    .success();

    // An incremental that changes line is refused whatever is installed.
    let cross = d.join("cross.romdelta");
    romdelta()
        .args(["diff", "--level", "3", "--target-build"])
        .arg(&cn_target)
        .arg(&old)
        .arg(&new)
        .arg("-o")
        .arg(&cross)
        .assert()
        .success();
    romdelta()
        .arg("apply")
        .arg(&cross)
        .args(["--insecure-no-verify", "--source"])
        .arg(&old)
        .arg("-o")
        .arg(d.join("cross-out"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("never changes line"));

    for out in [
        "wrong-build",
        "wrong-device",
        "wrong-line",
        "switch",
        "down",
        "cross-out",
    ] {
        assert!(!d.join(out).exists(), "{out} was written");
    }
}
