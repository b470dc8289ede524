//! `romdelta demo`: the whole loop on built-in data.

use crate::progress::human;
use crate::Failure;
use anyhow::{anyhow, Context};
use romdelta_apply::{PackageFile, Plan};
use romdelta_diff::DiffOptions;
use romdelta_rom::Rom;
use std::path::Path;
use std::time::Instant;

/// Builds two ROMs, writes an incremental and a full package, applies both,
/// checks the results byte for byte, and prints a table.
pub fn run(dir: Option<&Path>, scale: usize, json: bool) -> Result<(), Failure> {
    let tmp;
    let dir = match dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.to_path_buf()
        }
        None => {
            tmp = tempfile::tempdir().context("creating a temporary directory")?;
            tmp.path().to_path_buf()
        }
    };
    let (old, new) = romdelta_synth::rom_pair(2026, scale);
    let (old_dir, new_dir) = (dir.join("old"), dir.join("new"));
    for (d, rom) in [(&old_dir, &old), (&new_dir, &new)] {
        if d.exists() {
            std::fs::remove_dir_all(d).with_context(|| format!("clearing {}", d.display()))?;
        }
        romdelta_synth::write_rom(d, rom).with_context(|| format!("writing {}", d.display()))?;
    }
    if !json {
        say!(
            "demo ROMs in {}: old = {} , new = {}",
            dir.display(),
            old.iter()
                .map(|(n, b)| format!("{n} {}", human(b.len() as u64)))
                .collect::<Vec<_>>()
                .join(", "),
            new.iter()
                .map(|(n, b)| format!("{n} {}", human(b.len() as u64)))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    // Build identity, as a vendor's build system writes it beside the images.
    let build = |version: &str, timestamp: u64| romdelta_format::BuildInfo {
        device: "demo".into(),
        region: "Global".into(),
        channel: "stable".into(),
        version: version.into(),
        fingerprint: format!("romdelta/demo/demo:14/{version}:user/release-keys"),
        security_patch: "2026-11-01".into(),
        timestamp,
    };
    let (old_build, new_build) = (
        build("V1.0.1.0", 1_761_955_200),
        build("V1.0.2.0", 1_764_547_200),
    );
    for (d, b) in [(&old_dir, &old_build), (&new_dir, &new_build)] {
        std::fs::write(
            d.join("build.prop"),
            romdelta_format::buildprop::build_prop_text(b),
        )
        .with_context(|| format!("writing {}/build.prop", d.display()))?;
    }
    let source = Rom::open(&old_dir).context("opening the old ROM")?;
    let target = Rom::open(&new_dir).context("opening the new ROM")?;
    // Sign with a key made for the demo; apply only what it signed.
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| anyhow!("no randomness from the operating system: {e}"))?;
    let key = romdelta_format::signing::SigningKey::from_bytes(&seed);
    let trusted = [key.verifying_key()];
    let opts = DiffOptions {
        signing_keys: vec![key],
        source_build: old_build.clone(),
        target_build: new_build.clone(),
        ..DiffOptions::default()
    };
    let mut rows = Vec::new();
    for (label, src) in [("incremental", Some(&source)), ("full", None)] {
        let pkg_path = dir.join(format!("{label}.romdelta"));
        let out = dir.join(format!("applied-{label}"));
        if out.exists() {
            std::fs::remove_dir_all(&out).with_context(|| format!("clearing {}", out.display()))?;
        }
        let t = Instant::now();
        let summary = romdelta_diff::write_package(src, &target, &opts, &pkg_path, &|_| {})?;
        let diff_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let file = PackageFile::open(&pkg_path)?;
        let prefix = file.prefix();
        romdelta_apply::check_trust(&prefix.manifest_bytes, &prefix.signatures, &trusted, false)?;
        let manifest = file.manifest()?;
        romdelta_apply::rules::check_rules(&manifest, Some(&old_build), Default::default())?;
        let apply_src = src
            .map(|_| romdelta_apply::open_rom(&old_dir))
            .transpose()?;
        Plan::for_file(&manifest, &file, apply_src.as_ref(), &out)?.execute(&|_| {})?;
        let apply_s = t.elapsed().as_secs_f64();
        for (name, bytes) in &new {
            let got = std::fs::read(out.join(format!("{name}.img")))
                .with_context(|| format!("reading applied {name}"))?;
            if got != *bytes {
                return Err(Failure::from(anyhow!(
                    "applied {name} differs from the new build"
                )));
            }
        }
        rows.push((label, summary, diff_s, apply_s));
    }
    let full_size = target.total_size();
    if json {
        let packages: Vec<_> = rows
            .iter()
            .map(|(label, s, d, a)| {
                serde_json::json!({
                    "package": label.trim(),
                    "package_bytes": s.package_bytes,
                    "target_bytes": full_size,
                    "diff_seconds": d,
                    "apply_seconds": a,
                    "partitions": s.partitions,
                })
            })
            .collect();
        crate::print_json(&serde_json::json!({
            "old_build": old_build,
            "new_build": new_build,
            "packages": packages,
            "verified": true,
        }));
        return Ok(());
    }
    say!();
    say!("| package     |     size | % of new ROM | diff s | apply s |");
    say!("|-------------|---------:|-------------:|-------:|--------:|");
    say!(
        "| (new ROM)   | {:>8} |      100.00% |        |         |",
        human(full_size)
    );
    for (label, s, d, a) in &rows {
        say!(
            "| {label:<11} | {:>8} | {:>11.2}% | {d:>6.2} | {a:>7.2} |",
            human(s.package_bytes),
            100.0 * s.package_bytes as f64 / full_size as f64
        );
    }
    let (_, delta, _, _) = &rows[0];
    say!();
    say!("incremental package, operations by kind:");
    for p in &delta.partitions {
        let kinds: Vec<String> = p
            .by_kind
            .iter()
            .map(|k| format!("{} x{} ({})", k.kind, k.operations, human(k.data_bytes)))
            .collect();
        say!("  {:<8} {}", p.name, kinds.join(", "));
    }
    say!(
        "\nupdate {} -> {}: both packages were signed, checked against the signing key and the installed build, applied, and every image matched the new build byte for byte.",
        old_build.version, new_build.version
    );
    Ok(())
}
