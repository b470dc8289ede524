//! `romdelta payload inspect|extract|apply` and `diff --format payload`:
//! Android OTA payload.bin files.

use crate::args::{PartitionList, PayloadCommand, Threads, TrustedKeys};
use crate::progress::human;
use crate::{print_json, with_threads, Failure};
use romdelta_android::payload::{ImageInfo, Payload, PayloadOpKind};
use romdelta_apply::payload::{self as ap, PayloadError, PayloadFile};
use romdelta_format::hex_digest;
use serde::Serialize;
use std::path::Path;

impl From<PayloadError> for Failure {
    fn from(e: PayloadError) -> Self {
        Failure {
            code: e.exit_code() as u8,
            error: e.into(),
        }
    }
}

#[derive(Serialize)]
struct Image {
    size: u64,
    sha256: Option<String>,
}

fn image(i: &ImageInfo) -> Image {
    Image {
        size: i.size,
        sha256: i.sha256.as_ref().map(hex_digest),
    }
}

#[derive(Serialize)]
struct KindStats {
    kind: PayloadOpKind,
    operations: u64,
    blocks: u64,
    data_bytes: u64,
}

#[derive(Serialize)]
struct PartitionView {
    name: String,
    old: Option<Image>,
    new: Image,
    version: Option<String>,
    operations: u64,
    data_bytes: u64,
    by_kind: Vec<KindStats>,
    /// The hash tree the installer computes, if any.
    hash_tree: Option<TreeView>,
    /// The FEC the installer computes, if any.
    fec: Option<FecView>,
    /// `null` when this reader applies the partition, else why not.
    unsupported: Option<String>,
}

#[derive(Serialize)]
struct TreeView {
    algorithm: &'static str,
    salt: String,
    data_blocks: String,
    tree_blocks: String,
}

#[derive(Serialize)]
struct FecView {
    roots: u32,
    data_blocks: String,
    fec_blocks: String,
}

#[derive(Serialize)]
struct Group {
    name: String,
    size: u64,
    partitions: Vec<String>,
}

#[derive(Serialize)]
struct View {
    payload: String,
    payload_bytes: u64,
    major_version: u64,
    minor_version: u32,
    kind: &'static str,
    block_size: u64,
    manifest_bytes: u64,
    metadata_signatures: usize,
    payload_signatures: usize,
    data_bytes: u64,
    data_hashes: ap::DataCheck,
    /// Whether an OTA zip's payload_properties.txt was checked (and matched).
    properties_checked: bool,
    /// With --trusted-key: which key verified each signature.
    signatures_verified: Option<ap::SignatureCheck>,
    max_timestamp: Option<i64>,
    partial_update: bool,
    dynamic_groups: Vec<Group>,
    partitions: Vec<PartitionView>,
}

fn view(
    file: &PayloadFile,
    p: &Payload<'_>,
    parts: &[usize],
    check: ap::DataCheck,
    properties_checked: bool,
) -> View {
    let m = &p.manifest;
    View {
        payload: file.describe(),
        payload_bytes: p.len(),
        major_version: p.header.major_version,
        minor_version: p.minor_version,
        kind: if p.is_incremental() {
            "incremental"
        } else {
            "full"
        },
        block_size: romdelta_format::BLOCK_SIZE,
        manifest_bytes: p.header.manifest_len,
        metadata_signatures: p.metadata_signatures,
        payload_signatures: p.signatures.as_ref().map_or(0, |s| s.count),
        data_bytes: p.blobs.len() as u64,
        data_hashes: check,
        properties_checked,
        signatures_verified: None,
        max_timestamp: m.max_timestamp,
        partial_update: m.partial_update.unwrap_or(false),
        dynamic_groups: m
            .dynamic_partition_metadata
            .iter()
            .flat_map(|d| &d.groups)
            .map(|g| Group {
                name: g.name.clone().unwrap_or_default(),
                size: g.size.unwrap_or(0),
                partitions: g.partition_names.clone(),
            })
            .collect(),
        partitions: parts
            .iter()
            .map(|&pi| {
                let part = &p.partitions[pi];
                let mut by_kind: Vec<KindStats> = Vec::new();
                for op in &part.operations {
                    let k = match by_kind.iter_mut().find(|k| k.kind == op.kind) {
                        Some(k) => k,
                        None => {
                            by_kind.push(KindStats {
                                kind: op.kind,
                                operations: 0,
                                blocks: 0,
                                data_bytes: 0,
                            });
                            by_kind.last_mut().expect("pushed")
                        }
                    };
                    k.operations += 1;
                    k.blocks += op.dst_blocks();
                    k.data_bytes += op.data_length;
                }
                by_kind.sort_by_key(|k| k.kind);
                PartitionView {
                    name: part.name.clone(),
                    old: part.old.as_ref().map(image),
                    new: image(&part.new),
                    version: part.version.clone(),
                    operations: part.operations.len() as u64,
                    data_bytes: part.operations.iter().map(|o| o.data_length).sum(),
                    by_kind,
                    hash_tree: part.verity.hash_tree.as_ref().map(|t| TreeView {
                        algorithm: t.algorithm.name(),
                        salt: hex::encode(&t.salt),
                        data_blocks: t.data.to_string(),
                        tree_blocks: t.tree.to_string(),
                    }),
                    fec: part.verity.fec.as_ref().map(|f| FecView {
                        roots: f.roots,
                        data_blocks: f.data.to_string(),
                        fec_blocks: f.fec.to_string(),
                    }),
                    unsupported: part.check_supported().err().map(|e| e.to_string()),
                }
            })
            .collect(),
    }
}

/// Opens a payload.bin or OTA zip: a local file, or a URL (`http(s)://`,
/// `file://`) of which only the metadata, the signatures and the data of
/// the partitions `names` (all when empty) are fetched, by ranges, into a
/// sparse local mirror (returned: it lives as long as the payload is read).
fn open_payload(
    path: &Path,
    names: &[String],
) -> Result<(PayloadFile, Option<romdelta_release::remote::Mirror>), Failure> {
    let text = path.to_string_lossy();
    if !["http://", "https://", "file://"]
        .iter()
        .any(|p| text.starts_with(p))
    {
        return Ok((PayloadFile::open(path)?, None));
    }
    let transport = std::sync::Arc::new(romdelta_release::fetch::Transport::new(
        romdelta_release::fetch::FetchOptions::default(),
    ));
    let mirror = romdelta_release::remote::Mirror::open(transport, &text)?;
    romdelta_release::remote::fetch_payload(&mirror, names)?;
    if !crate::progress::quiet() {
        eprintln!(
            "romdelta: {text}: {} of its {} bytes read by ranges",
            mirror.received(),
            mirror.len()
        );
    }
    let file = PayloadFile::open_partial(mirror.path(), &text)?;
    Ok((file, Some(mirror)))
}

fn inspect(
    path: &Path,
    names: &PartitionList,
    trusted: &TrustedKeys,
    json: bool,
) -> Result<(), Failure> {
    let keys = ap::load_trusted_keys(&trusted.keys)?;
    let (file, _mirror) = open_payload(path, &names.names)?;
    let properties_checked = file.check_properties()?;
    let (p, signatures) = file.parse_trusted(&keys)?;
    let parts = ap::select(&p, &names.names)?;
    // A damaged payload must not look fine: every data hash is checked.
    let check = ap::check_data_hashes(&p, &parts)?;
    let mut v = view(&file, &p, &parts, check, properties_checked);
    v.signatures_verified = signatures;
    if json {
        print_json(&v);
        return Ok(());
    }
    say!(
        "payload.bin v{}.{} ({}), {}: {} ({} manifest, {} data), {}",
        v.major_version,
        v.minor_version,
        v.payload,
        v.kind,
        human(v.payload_bytes),
        human(v.manifest_bytes),
        human(v.data_bytes),
        match (&v.signatures_verified, v.metadata_signatures + v.payload_signatures) {
            (Some(s), _) if s.metadata == s.payload => format!(
                "signed: {} metadata / {} payload signature(s), both verified with {}",
                v.metadata_signatures, v.payload_signatures, s.metadata
            ),
            (Some(s), _) => format!(
                "signed: {} metadata / {} payload signature(s), verified (metadata with {}, payload with {})",
                v.metadata_signatures, v.payload_signatures, s.metadata, s.payload
            ),
            (None, 0) => "unsigned".to_string(),
            (None, _) => format!(
                "signed: {} metadata / {} payload signature(s), not verified (no --trusted-key)",
                v.metadata_signatures, v.payload_signatures
            ),
        }
    );
    say!(
        "data hashes: {} checked, all match{}",
        check.checked,
        if check.unhashed > 0 {
            format!("; {} operation(s) carry no data hash", check.unhashed)
        } else {
            String::new()
        }
    );
    if properties_checked {
        say!("payload_properties.txt: size and hashes match");
    }
    for g in &v.dynamic_groups {
        say!(
            "dynamic group {}: {} max, {}",
            g.name,
            human(g.size),
            g.partitions.join(", ")
        );
    }
    for part in &v.partitions {
        say!();
        match &part.old {
            Some(o) => say!(
                "{}: {} -> {}  ({} operations, {} data)",
                part.name,
                human(o.size),
                human(part.new.size),
                part.operations,
                human(part.data_bytes)
            ),
            None => say!(
                "{}: {}  ({} operations, {} data)",
                part.name,
                human(part.new.size),
                part.operations,
                human(part.data_bytes)
            ),
        }
        if let Some(o) = &part.old {
            say!(
                "  old sha256 {}",
                o.sha256.as_deref().unwrap_or("(not recorded)")
            );
        }
        say!(
            "  new sha256 {}",
            part.new.sha256.as_deref().unwrap_or("(not recorded)")
        );
        for k in &part.by_kind {
            say!(
                "  {:<16} {:>7} ops {:>10} blocks {:>12} data",
                k.kind.to_string(),
                k.operations,
                k.blocks,
                human(k.data_bytes)
            );
        }
        if let Some(t) = &part.hash_tree {
            say!(
                "  hash tree: {} over blocks {}, into blocks {} (computed after the operations)",
                t.algorithm,
                t.data_blocks,
                t.tree_blocks
            );
        }
        if let Some(f) = &part.fec {
            say!(
                "  FEC: {} roots over blocks {}, into blocks {} (computed after the tree)",
                f.roots,
                f.data_blocks,
                f.fec_blocks
            );
        }
        if let Some(u) = &part.unsupported {
            say!("  cannot be applied here: {u}");
        }
    }
    Ok(())
}

fn write(
    path: &Path,
    source: Option<&Path>,
    output: &Path,
    names: &PartitionList,
    trusted: &TrustedKeys,
    threads: Threads,
    json: bool,
) -> Result<(), Failure> {
    let started = std::time::Instant::now();
    let keys = ap::load_trusted_keys(&trusted.keys)?;
    let (file, _mirror) = open_payload(path, &names.names)?;
    let properties_checked = file.check_properties()?;
    let (p, signatures) = file.parse_trusted(&keys)?;
    let parts = ap::select(&p, &names.names)?;
    let source = source
        .map(romdelta_apply::open_rom)
        .transpose()
        .map_err(Failure::from)?;
    let job = ap::PayloadJob::new(&p, parts, source.as_ref(), output)?;
    let verb = if source.is_some() { "apply" } else { "extract" };
    let bar = crate::progress::bar(json, job.total_bytes(), verb);
    let mut report = with_threads(threads, || {
        job.run(&file.describe(), &|n| bar.set_position(n), &|off, len| {
            file.release(off, len)
        })
    })??;
    report.properties_checked = properties_checked;
    report.signatures = signatures;
    bar.finish();
    if json {
        print_json(&report);
        return Ok(());
    }
    say!(
        "{} {} to {} in {:.1} s; every image verified ({} data, {} source and {} old image hashes checked):",
        if source.is_some() { "applied" } else { "extracted" },
        report.payload,
        output.display(),
        started.elapsed().as_secs_f64(),
        report.data_hashes,
        report.source_hashes,
        report.source_images
    );
    match &report.signatures {
        Some(s) => say!(
            "signatures verified: metadata with {}, payload with {}",
            s.metadata,
            s.payload
        ),
        None => say!("signatures not checked (no --trusted-key)"),
    }
    for w in &report.partitions {
        say!(
            "  {:<16} {:>12}  sha256 {}",
            w.name,
            human(w.size),
            w.sha256
        );
    }
    Ok(())
}

/// `romdelta avb ...`.
pub fn avb(cmd: crate::args::AvbCommand) -> Result<(), Failure> {
    use crate::args::AvbCommand;
    use romdelta_android::{avb, verity::HashAlgorithm};
    match cmd {
        AvbCommand::Info { image, json } => {
            let f = std::fs::File::open(&image)
                .map_err(|e| Failure::io(anyhow::anyhow!("{}: {e}", image.display())))?;
            let len = f
                .metadata()
                .map_err(|e| Failure::io(anyhow::anyhow!("{}: {e}", image.display())))?
                .len();
            let footer = avb::read_footer(len, |off, buf| {
                std::os::unix::fs::FileExt::read_exact_at(&f, buf, off)
            })
            .map_err(|e| Failure::refused(anyhow::anyhow!("{}: {e}", image.display())))?;
            let Some(footer) = footer else {
                return Err(Failure::refused(anyhow::anyhow!(
                    "{}: no AVB footer",
                    image.display()
                )));
            };
            #[derive(serde::Serialize)]
            struct View {
                original_image_size: u64,
                vbmeta_offset: u64,
                vbmeta_size: u64,
                hashtree: Option<Tree>,
            }
            #[derive(serde::Serialize)]
            struct Tree {
                partition: String,
                algorithm: &'static str,
                salt: String,
                root_digest: String,
                image_size: u64,
                tree_offset: u64,
                tree_size: u64,
                fec_num_roots: u32,
                fec_offset: u64,
                fec_size: u64,
            }
            let v = View {
                original_image_size: footer.original_image_size,
                vbmeta_offset: footer.vbmeta_offset,
                vbmeta_size: footer.vbmeta_size,
                hashtree: footer.hashtree.map(|h| Tree {
                    partition: h.partition,
                    algorithm: h.algorithm.name(),
                    salt: hex::encode(h.salt),
                    root_digest: hex::encode(h.root_digest),
                    image_size: h.image_size,
                    tree_offset: h.tree_offset,
                    tree_size: h.tree_size,
                    fec_num_roots: h.fec_num_roots,
                    fec_offset: h.fec_offset,
                    fec_size: h.fec_size,
                }),
            };
            if json {
                print_json(&v);
                return Ok(());
            }
            say!(
                "AVB footer: original image size {}, vbmeta {} bytes at {}",
                v.original_image_size,
                v.vbmeta_size,
                v.vbmeta_offset
            );
            match &v.hashtree {
                Some(t) => {
                    say!(
                        "hashtree descriptor for {}: {} over {} bytes, salt {}",
                        t.partition,
                        t.algorithm,
                        t.image_size,
                        t.salt
                    );
                    say!("  root digest {}", t.root_digest);
                    say!("  tree {} bytes at {}", t.tree_size, t.tree_offset);
                    if t.fec_num_roots > 0 {
                        say!(
                            "  FEC {} roots, {} bytes at {}",
                            t.fec_num_roots,
                            t.fec_size,
                            t.fec_offset
                        );
                    }
                }
                None => say!("no hashtree descriptor"),
            }
            Ok(())
        }
        AvbCommand::AddHashtreeFooter {
            image,
            output,
            partition_size,
            partition_name,
            hash_algorithm,
            salt,
            fec_roots,
        } => {
            let algorithm = HashAlgorithm::from_name(&hash_algorithm)
                .map_err(|e| Failure::usage(anyhow::anyhow!("--hash-algorithm: {e}")))?;
            let salt =
                hex::decode(&salt).map_err(|e| Failure::usage(anyhow::anyhow!("--salt: {e}")))?;
            if output.symlink_metadata().is_ok() {
                return Err(Failure::usage(anyhow::anyhow!(
                    "{} exists; it is never overwritten",
                    output.display()
                )));
            }
            let data = std::fs::read(&image)
                .map_err(|e| Failure::io(anyhow::anyhow!("{}: {e}", image.display())))?;
            let img = avb::hashtree_image(
                &data,
                &avb::HashtreeOptions {
                    partition: partition_name,
                    partition_size,
                    algorithm,
                    salt,
                    fec_roots,
                },
            )
            .map_err(|e| Failure::usage(anyhow::anyhow!("{}: {e}", image.display())))?;
            let dir = match output.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => std::path::PathBuf::from("."),
            };
            let mut t = tempfile::Builder::new()
                .prefix(".romdelta-")
                .suffix(".partial")
                .tempfile_in(&dir)
                .map_err(|e| Failure::io(anyhow::anyhow!("{}: {e}", dir.display())))?;
            std::io::Write::write_all(t.as_file_mut(), &img)
                .and_then(|_| t.as_file().sync_all())
                .map_err(|e| Failure::io(anyhow::anyhow!("{}: {e}", output.display())))?;
            t.persist_noclobber(&output)
                .map_err(|e| Failure::io(anyhow::anyhow!("{}: {}", output.display(), e.error)))?;
            say!("wrote {} ({} bytes)", output.display(), img.len());
            Ok(())
        }
    }
}

/// Reads every `--key` file as a payload signing key.
pub fn signing_keys(
    keys: &[std::path::PathBuf],
) -> Result<Vec<romdelta_android::signature::SigningKey>, Failure> {
    keys.iter()
        .map(|k| romdelta_android::signature::SigningKey::from_pem_file(k))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::usage(anyhow::anyhow!("--key: {e}")))
}

/// The metadata of an OTA zip from the builds' identities: the target's
/// is required, and the source's for an incremental; a target older than
/// the source is refused unless `downgrade`.
pub fn ota_package(
    source: Option<&romdelta_format::BuildInfo>,
    target: Option<&romdelta_format::BuildInfo>,
    incremental: bool,
    downgrade: bool,
) -> Result<romdelta_android::ota_zip::OtaPackage, Failure> {
    use romdelta_android::ota_zip::{BuildState, OtaPackage};
    let state = |b: &romdelta_format::BuildInfo| BuildState {
        device: b.device.clone(),
        fingerprint: b.fingerprint.clone(),
        incremental: b.version.clone(),
        timestamp: b.timestamp as i64,
        security_patch_level: b.security_patch.clone(),
    };
    let need = |what: &str| {
        Failure::usage(anyhow::anyhow!(
            "--format ota-zip records the {what} build's identity: give a build.prop in the ROM directory or --{what}-build FILE"
        ))
    };
    let post = state(target.ok_or_else(|| need("target"))?);
    let pre = if incremental {
        Some(state(source.ok_or_else(|| need("source"))?))
    } else {
        None
    };
    if let Some(p) = &pre {
        if p.device != post.device {
            return Err(Failure::usage(anyhow::anyhow!(
                "the source build is for device {:?}, the target for {:?}: an OTA moves one device",
                p.device,
                post.device
            )));
        }
        if post.timestamp < p.timestamp && !downgrade {
            return Err(Failure::usage(anyhow::anyhow!(
                "the target build ({}, ro.build.date.utc {}) is older than the source ({}, {}): a downgrade needs --downgrade",
                post.fingerprint,
                post.timestamp,
                p.fingerprint,
                p.timestamp
            )));
        }
    }
    let is_downgrade = pre.as_ref().is_some_and(|p| post.timestamp < p.timestamp);
    Ok(OtaPackage {
        post,
        pre,
        downgrade: is_downgrade,
        care_map: Vec::new(),
    })
}

/// Prints what `diff --format ota-zip` wrote.
pub fn report_ota_zip(
    r: &romdelta_diff::payload::OtaZipReport,
    output: &Path,
    started: std::time::Instant,
    json: bool,
) {
    if json {
        print_json(r);
        return;
    }
    say!(
        "wrote {} (A/B OTA zip, {}; payload.bin v2.{}, {}, {}) in {:.1} s",
        output.display(),
        human(r.zip.zip_bytes),
        r.payload.minor_version,
        if r.payload.minor_version == 0 {
            "full"
        } else {
            "incremental"
        },
        match r.payload.signatures {
            0 => "unsigned".to_string(),
            n => format!("signed with {n} key(s)"),
        },
        started.elapsed().as_secs_f64()
    );
    say!("  ota-property-files={}", r.zip.property_files);
}

fn sign(path: &Path, keys: &[std::path::PathBuf], output: &Path) -> Result<(), Failure> {
    let keys = signing_keys(keys)?;
    let file = PayloadFile::open(path)?;
    let p = file.parse()?;
    let props_path = romdelta_diff::payload::properties_path(output);
    for o in [output, props_path.as_path()] {
        if o.symlink_metadata().is_ok() {
            return Err(Failure::usage(anyhow::anyhow!(
                "{} exists; it is never overwritten",
                o.display()
            )));
        }
    }
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let io = |p: &Path, e: std::io::Error| Failure::io(anyhow::anyhow!("{}: {e}", p.display()));
    let mut tmp = tempfile::Builder::new()
        .prefix(".romdelta-")
        .suffix(".partial")
        .tempfile_in(&dir)
        .map_err(|e| io(&dir, e))?;
    let signed = {
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        let s = romdelta_android::signature::sign_payload(&p, &keys, &mut w)
            .map_err(|e| Failure::refused(anyhow::anyhow!("{}: {e}", file.describe())))?;
        std::io::Write::flush(&mut w).map_err(|e| io(output, e))?;
        s
    };
    tmp.as_file().sync_all().map_err(|e| io(output, e))?;
    std::fs::write(&props_path, &signed.properties).map_err(|e| io(&props_path, e))?;
    tmp.persist_noclobber(output)
        .map_err(|e| io(output, e.error))?;
    say!(
        "signed {} with {} key(s): {} ({}) and {}",
        file.describe(),
        keys.len(),
        output.display(),
        human(signed.len),
        props_path.display()
    );
    Ok(())
}

/// `romdelta payload ...`.
pub fn run(cmd: PayloadCommand) -> Result<(), Failure> {
    match cmd {
        PayloadCommand::Inspect {
            payload,
            partitions,
            trusted,
            json,
        } => inspect(&payload, &partitions, &trusted, json),
        PayloadCommand::Extract {
            payload,
            output,
            partitions,
            trusted,
            threads,
            json,
        } => write(
            &payload,
            None,
            &output,
            &partitions,
            &trusted,
            threads,
            json,
        ),
        PayloadCommand::Sign {
            payload,
            keys,
            output,
        } => sign(&payload, &keys, &output),
        PayloadCommand::Apply {
            payload,
            source,
            output,
            partitions,
            trusted,
            threads,
            json,
        } => write(
            &payload,
            Some(&source),
            &output,
            &partitions,
            &trusted,
            threads,
            json,
        ),
    }
}

/// Prints what `diff --format payload` wrote.
pub fn report_diff(
    summary: &romdelta_diff::payload::PayloadSummary,
    output: &Path,
    started: std::time::Instant,
    json: bool,
) {
    if json {
        print_json(summary);
        return;
    }
    say!(
        "wrote {} and {} (payload.bin v2.{}, {}, {}; {}, {:.2}% of the {} target) in {:.1} s",
        output.display(),
        summary.properties.display(),
        summary.minor_version,
        if summary.minor_version == 0 {
            "full"
        } else {
            "incremental"
        },
        match summary.signatures {
            0 => "unsigned".to_string(),
            n => format!("signed with {n} key(s)"),
        },
        human(summary.payload_bytes),
        100.0 * summary.payload_bytes as f64 / summary.target_bytes.max(1) as f64,
        human(summary.target_bytes),
        started.elapsed().as_secs_f64()
    );
    for p in &summary.partitions {
        let kinds: Vec<String> = p
            .by_kind
            .iter()
            .map(|k| format!("{} x{}", k.kind, k.operations))
            .collect();
        say!("  {}: {}", p.name, kinds.join(", "));
    }
}
