//! `romdelta blockota inspect|extract|apply`: block-based OTAs of non-A/B
//! devices.

use crate::args::BlockotaCommand;
use crate::progress::human;
use crate::{print_json, Failure};
use romdelta_android::blockota::{Command, Package, PackageError, PartitionOta, BLOCK};
use romdelta_apply::blockota::{self as ab, PartitionRun};
use romdelta_storage::RealFs;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

impl From<PackageError> for Failure {
    fn from(e: PackageError) -> Self {
        match e {
            PackageError::Io { .. } => Failure::io(e.into()),
            _ => Failure::refused(e.into()),
        }
    }
}

#[derive(Serialize)]
struct PartitionView {
    name: String,
    version: u32,
    /// Blocks the commands write (the header's count).
    blocks_written: u64,
    /// The partition's size as the list names it (bytes).
    size: u64,
    incremental: bool,
    max_stash_entries: u64,
    max_stash_blocks: u64,
    /// Commands per kind: count and blocks.
    commands: BTreeMap<&'static str, (u64, u64)>,
    new_data: String,
    new_data_bytes: u64,
    new_blocks: u64,
    patch_bytes: u64,
}

fn view(p: &PartitionOta) -> PartitionView {
    let mut commands: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    for (_, c) in &p.list.commands {
        let e = commands.entry(c.name()).or_default();
        e.0 += 1;
        e.1 += match c {
            Command::Stash { ranges, .. } => ranges.blocks(),
            c => c.target().map_or(0, |t| t.blocks()),
        };
    }
    PartitionView {
        name: p.name.clone(),
        version: p.list.version,
        blocks_written: p.list.total_blocks,
        size: p.list.blocks_named() * BLOCK,
        incremental: p.list.reads_source(),
        max_stash_entries: p.list.max_stash_entries,
        max_stash_blocks: p.list.max_stash_blocks,
        commands,
        new_data: format!("{}.new.dat{}", p.name, p.new_kind.suffix()),
        new_data_bytes: p.new_data_len(),
        new_blocks: p.list.new_blocks(),
        patch_bytes: p.patch().len() as u64,
    }
}

fn inspect(package: &Path, names: &[String], json: bool) -> Result<(), Failure> {
    let pkg = Package::open(package)?;
    let parts = pkg.select(names)?;
    let views: Vec<PartitionView> = parts.iter().map(|p| view(p)).collect();
    if json {
        print_json(&views);
        return Ok(());
    }
    for v in &views {
        println!(
            "{}: transfer list v{}, {}, {} blocks written, {} ({}; {} blocks), patch.dat {}",
            v.name,
            v.version,
            if v.incremental { "incremental" } else { "full" },
            v.blocks_written,
            v.new_data,
            human(v.new_data_bytes),
            v.new_blocks,
            human(v.patch_bytes),
        );
        if v.version >= 2 {
            println!(
                "  stash: at most {} entries, {} blocks ({}) at once",
                v.max_stash_entries,
                v.max_stash_blocks,
                human(v.max_stash_blocks * BLOCK)
            );
        }
        for (name, (n, blocks)) in &v.commands {
            println!("  {name:<8} {n:>6} commands {blocks:>10} blocks");
        }
    }
    Ok(())
}

fn report(runs: &[PartitionRun], json: bool, verb: &str) {
    if json {
        print_json(&runs);
        return;
    }
    for r in runs {
        if r.already_applied {
            println!(
                "{} -> {}: already holds what the package writes; nothing to do",
                r.name,
                r.image.display()
            );
            continue;
        }
        let resumed = r
            .resumed_at_line
            .map(|l| format!(", resumed at line {l}"))
            .unwrap_or_default();
        println!(
            "{verb} {} -> {}: {} commands, {} blocks written, {} source and {} target SHA-1s checked{resumed}",
            r.name,
            r.image.display(),
            r.commands,
            r.blocks_written,
            r.source_hashes,
            r.target_hashes
        );
    }
}

/// Runs one `romdelta blockota` command.
pub fn run(cmd: BlockotaCommand) -> Result<(), Failure> {
    match cmd {
        BlockotaCommand::Inspect {
            package,
            partitions,
            json,
        } => inspect(&package, &partitions.names, json),
        BlockotaCommand::Extract {
            package,
            output,
            partitions,
            json,
        } => {
            let pkg = Package::open(&package)?;
            let parts = pkg.select(&partitions.names)?;
            std::fs::create_dir_all(&output)
                .map_err(|e| Failure::io(anyhow::anyhow!("{}: {e}", output.display())))?;
            for p in &parts {
                let img = output.join(format!("{}.img", p.name));
                if img.symlink_metadata().is_ok() {
                    return Err(Failure::refused(anyhow::anyhow!(
                        "{} exists: images are never overwritten",
                        img.display()
                    )));
                }
            }
            let runs = ab::extract(&parts, &output, &RealFs)?;
            report(&runs, json, "extracted");
            Ok(())
        }
        BlockotaCommand::Apply {
            package,
            in_place,
            partitions,
            json,
        } => {
            let pkg = Package::open(&package)?;
            let parts = pkg.select(&partitions.names)?;
            let target = romdelta_storage::resolve_link(&in_place)
                .map_err(|e| Failure::io(anyhow::anyhow!("{}: {e}", in_place.display())))?;
            let runs = ab::apply_in_place(&parts, &target, &RealFs)?;
            report(&runs, json, "applied");
            Ok(())
        }
    }
}

/// Reports a `diff --format block-ota`.
pub fn report_diff(
    s: &romdelta_diff::blockota::BlockOtaSummary,
    out: &Path,
    started: std::time::Instant,
    json: bool,
) {
    if json {
        print_json(s);
        return;
    }
    println!(
        "wrote {} (block OTA, transfer list v4: {} in {} partition(s)) in {:.1} s",
        out.display(),
        human(s.package_bytes),
        s.partitions.len(),
        started.elapsed().as_secs_f64()
    );
    for p in &s.partitions {
        let kinds: Vec<String> = p
            .commands
            .iter()
            .map(|(k, n)| format!("{k} x{n}"))
            .collect();
        println!(
            "  {}{}: {}; new.dat.br {}, patch.dat {}, at most {} blocks stashed",
            p.name,
            if p.full { " (full)" } else { "" },
            kinds.join(", "),
            human(p.new_data_bytes),
            human(p.patch_bytes),
            p.max_stash_blocks
        );
    }
}
