//! `romdelta inspect`: what a package holds.

use crate::progress::human;
use romdelta_format::{
    blocks_in, hex_digest, inplace, BuildInfo, Manifest, OpKind, PackageKind, Prefix, BLOCK_SIZE,
};
use serde::Serialize;

#[derive(Serialize)]
struct KindStats {
    kind: OpKind,
    operations: u64,
    blocks: u64,
    data_bytes: u64,
}

/// Operations of a partition that read another partition of the source
/// build (format version 5), per partition read.
#[derive(Serialize)]
struct ReadsFrom {
    partition: String,
    operations: u64,
    /// Blocks they write.
    blocks: u64,
    /// Source blocks they read.
    src_blocks: u64,
    data_bytes: u64,
}

#[derive(Serialize)]
struct Image {
    size: u64,
    sha256: String,
}

#[derive(Serialize)]
struct Removed {
    name: String,
    old: Image,
}

#[derive(Serialize)]
struct PartitionView {
    name: String,
    old: Option<Image>,
    new: Image,
    operations: u64,
    data_bytes: u64,
    by_kind: Vec<KindStats>,
    /// Operations that read another source partition, by partition read.
    reads_from: Vec<ReadsFrom>,
    /// In place: the number of stages (`null` for A/B).
    stages: Option<u64>,
    /// In place: blocks in the largest stash of a stage (`null` for A/B).
    largest_stash_blocks: Option<u64>,
}

#[derive(Serialize)]
struct View<'a> {
    format_version: u32,
    kind: PackageKind,
    /// `ab` or `in-place`.
    install: &'static str,
    package_bytes: u64,
    manifest_bytes: u64,
    data_bytes: u64,
    signatures: usize,
    signers: Vec<String>,
    target_build: &'a BuildInfo,
    source_build: Option<&'a BuildInfo>,
    partitions: Vec<PartitionView>,
    removed: Vec<Removed>,
    /// Memory (MiB) applying the package needs: what the manifest records,
    /// or the default bound when it records none.
    apply_memory_mib: u64,
    /// Codec libraries its content-aware operations need, `name version`.
    codecs: Vec<String>,
}

fn image(i: &romdelta_format::PartitionInfo) -> Image {
    Image {
        size: i.size,
        sha256: hex_digest(&i.sha256),
    }
}

fn view<'a>(prefix: &'a Prefix, m: &'a Manifest, package_bytes: u64) -> View<'a> {
    View {
        format_version: prefix.header.version,
        kind: m.kind,
        install: if m.in_place { "in-place" } else { "ab" },
        package_bytes,
        manifest_bytes: prefix.header.manifest_len,
        data_bytes: m.data_len,
        signatures: prefix.signatures.len(),
        signers: prefix
            .signatures
            .iter()
            .map(|s| hex::encode(s.public_key))
            .collect(),
        target_build: &m.target_build,
        source_build: m.source_build.as_ref(),
        partitions: m
            .partitions
            .iter()
            .map(|p| PartitionView {
                name: p.name.clone(),
                old: p.old.as_ref().map(image),
                new: image(&p.new),
                operations: p.operations.len() as u64,
                data_bytes: p.operations.iter().map(|o| o.data_length).sum(),
                by_kind: OpKind::ALL
                    .into_iter()
                    .filter_map(|k| {
                        let ops: Vec<_> = p.operations.iter().filter(|o| o.kind == k).collect();
                        (!ops.is_empty()).then(|| KindStats {
                            kind: k,
                            operations: ops.len() as u64,
                            blocks: ops.iter().map(|o| o.dst_blocks()).sum(),
                            data_bytes: ops.iter().map(|o| o.data_length).sum(),
                        })
                    })
                    .collect(),
                reads_from: reads_from(p),
                stages: m.in_place.then_some(p.stages.len() as u64),
                largest_stash_blocks: m.in_place.then(|| {
                    inplace::stage_ranges(p)
                        .into_iter()
                        .map(|r| blocks_in(&inplace::stash_of(p, r)))
                        .max()
                        .unwrap_or(0)
                }),
            })
            .collect(),
        removed: m
            .removed
            .iter()
            .map(|r| Removed {
                name: r.name.clone(),
                old: image(&r.old),
            })
            .collect(),
        apply_memory_mib: m
            .apply_memory_mib
            .max(romdelta_apply::DEFAULT_APPLY_MEMORY_MIB),
        codecs: m
            .codecs
            .iter()
            .map(|c| format!("{} {}", c.name(), c.version_name()))
            .collect(),
    }
}

fn reads_from(p: &romdelta_format::PartitionUpdate) -> Vec<ReadsFrom> {
    let mut out: Vec<ReadsFrom> = Vec::new();
    for s in &p.source_reads {
        let Some(op) = p.operations.get(s.operation as usize) else {
            continue;
        };
        let i = match out.iter().position(|r| r.partition == s.partition) {
            Some(i) => i,
            None => {
                out.push(ReadsFrom {
                    partition: s.partition.clone(),
                    operations: 0,
                    blocks: 0,
                    src_blocks: 0,
                    data_bytes: 0,
                });
                out.len() - 1
            }
        };
        let r = &mut out[i];
        r.operations += 1;
        r.blocks += op.dst_blocks();
        r.src_blocks += op.src_blocks();
        r.data_bytes += op.data_length;
    }
    out.sort_by(|a, b| a.partition.cmp(&b.partition));
    out
}

fn build_line(b: &BuildInfo) -> String {
    let fields = [
        ("device", &b.device),
        ("region", &b.region),
        ("channel", &b.channel),
        ("version", &b.version),
        ("fingerprint", &b.fingerprint),
        ("patch", &b.security_patch),
    ];
    let mut parts: Vec<String> = fields
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if b.timestamp != 0 {
        parts.push(format!("timestamp={}", b.timestamp));
    }
    if parts.is_empty() {
        "(not recorded)".into()
    } else {
        parts.join(" ")
    }
}

/// Prints the package summary as text or JSON.
pub fn print(prefix: &Prefix, m: &Manifest, package_bytes: u64, json: bool) {
    let v = view(prefix, m, package_bytes);
    if json {
        say!(
            "{}",
            serde_json::to_string_pretty(&v).expect("serializable")
        );
        return;
    }
    let kind = match v.kind {
        PackageKind::Delta => "incremental",
        PackageKind::Full => "full",
    };
    let install = if v.install == "in-place" {
        "installs in place"
    } else {
        "installs A/B"
    };
    say!(
        "romdelta package v{}, {kind}, {install}, {} ({} manifest, {} data), {} signature(s)",
        v.format_version,
        human(v.package_bytes),
        human(v.manifest_bytes),
        human(v.data_bytes),
        v.signatures
    );
    for key in &v.signers {
        say!("signed by Ed25519 key {key} (not checked here: use verify --trusted-key)");
    }
    if let Some(s) = v.source_build {
        say!("source build: {}", build_line(s));
    }
    say!("target build: {}", build_line(v.target_build));
    if v.apply_memory_mib > romdelta_apply::DEFAULT_APPLY_MEMORY_MIB {
        say!(
            "apply memory: {} MiB (more than the default {} MiB: apply with --max-memory {})",
            v.apply_memory_mib,
            romdelta_apply::DEFAULT_APPLY_MEMORY_MIB,
            v.apply_memory_mib
        );
    } else {
        say!(
            "apply memory: within the default {} MiB",
            v.apply_memory_mib
        );
    }
    if !v.codecs.is_empty() {
        say!("codecs: {}", v.codecs.join(", "));
    }
    for p in &v.partitions {
        say!();
        match &p.old {
            Some(o) => say!(
                "{}: {} -> {}  ({} operations, {} data)",
                p.name,
                human(o.size),
                human(p.new.size),
                p.operations,
                human(p.data_bytes)
            ),
            None => say!(
                "{}: new, {}  ({} operations, {} data)",
                p.name,
                human(p.new.size),
                p.operations,
                human(p.data_bytes)
            ),
        }
        if let Some(o) = &p.old {
            say!("  old sha256 {}", o.sha256);
        }
        say!("  new sha256 {}", p.new.sha256);
        if let (Some(stages), Some(stash)) = (p.stages, p.largest_stash_blocks) {
            say!(
                "  in place: {stages} stage(s), largest stash {stash} blocks ({})",
                human(stash * BLOCK_SIZE)
            );
        }
        for k in &p.by_kind {
            say!(
                "  {:<22} {:>7} ops {:>10} blocks {:>12} data",
                k.kind.name(),
                k.operations,
                k.blocks,
                human(k.data_bytes)
            );
        }
        for r in &p.reads_from {
            say!(
                "  reads source {}: {} ops write {} blocks from {} of its blocks, {} data",
                r.partition,
                r.operations,
                r.blocks,
                r.src_blocks,
                human(r.data_bytes)
            );
        }
    }
    for r in &v.removed {
        say!(
            "\n{}: removed ({}, sha256 {})",
            r.name,
            human(r.old.size),
            r.old.sha256
        );
    }
}
