//! The `romdelta` command: a thin layer over the romdelta libraries.

#[macro_use]
mod progress;
mod args;
mod bench;
mod blockota;
mod bsdiff40;
mod demo;
mod inspect;
mod payload;
mod recovery;
mod release;

use anyhow::Context as _;
use args::{Cli, Command};
use clap::Parser;
use romdelta_apply::{ApplyError, PackageData, PackageFile, Plan};
use romdelta_diff::{DiffError, DiffOptions};
use romdelta_rom::Rom;
use std::path::Path;
use std::process::ExitCode;

/// An error with the exit code it maps to: 1 refused or failed verification, 2 usage or I/O.
#[derive(Debug)]
pub struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl Failure {
    pub(crate) fn usage(error: anyhow::Error) -> Self {
        Failure { code: 2, error }
    }

    /// An I/O error (exit code 2).
    pub(crate) fn io(error: anyhow::Error) -> Self {
        Failure { code: 2, error }
    }

    /// Input refused (exit code 1).
    pub(crate) fn refused(error: anyhow::Error) -> Self {
        Failure { code: 1, error }
    }
}

impl From<ApplyError> for Failure {
    fn from(e: ApplyError) -> Self {
        Failure {
            code: e.exit_code() as u8,
            error: e.into(),
        }
    }
}

impl From<DiffError> for Failure {
    fn from(e: DiffError) -> Self {
        Failure {
            code: 2,
            error: e.into(),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure { code: 2, error }
    }
}

/// Runs `f` on a rayon pool of the requested size.
pub(crate) fn with_threads<T: Send>(
    threads: args::Threads,
    f: impl FnOnce() -> T + Send,
) -> Result<T, Failure> {
    let mut b = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads.threads {
        b = b.num_threads(n as usize);
    }
    let pool = b
        .build()
        .context("could not start worker threads")
        .map_err(Failure::usage)?;
    Ok(pool.install(f))
}

/// Opens a ROM to read from during application or verification.
fn open_rom(path: &Path) -> Result<Rom, Failure> {
    Ok(romdelta_apply::open_rom(path)?)
}

/// Opens a ROM for generation (memory-mapped).
fn open_rom_mapped(path: &Path) -> Result<Rom, Failure> {
    Ok(Rom::open(path).map_err(romdelta_apply::ApplyError::from)?)
}

/// Reads a key file with `parse`; a bad file is a usage error (exit 2).
fn read_key<T>(
    path: &Path,
    parse: fn(&str) -> Result<T, romdelta_format::FormatError>,
) -> Result<T, Failure> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading key {}", path.display()))?;
    parse(&text)
        .with_context(|| format!("{}", path.display()))
        .map_err(Failure::usage)
}

/// Reads a build descriptor: `explicit`, else `build.prop` inside the ROM
/// directory `rom`, else none.
pub(crate) fn read_build(
    explicit: Option<&Path>,
    rom: Option<&Path>,
) -> Result<Option<romdelta_format::BuildInfo>, Failure> {
    let path = match (explicit, rom) {
        (Some(p), _) => p.to_path_buf(),
        (None, Some(r)) if r.join("build.prop").is_file() => r.join("build.prop"),
        _ => return Ok(None),
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    romdelta_format::buildprop::parse_build_prop(&text)
        .with_context(|| format!("{}", path.display()))
        .map(Some)
        .map_err(Failure::usage)
}

/// The signature policy from `--trusted-key` and `--insecure-no-verify`.
pub(crate) struct TrustPolicy {
    keys: Vec<romdelta_format::signing::VerifyingKey>,
    insecure: bool,
}

impl TrustPolicy {
    pub(crate) fn load(trust: &args::Trust) -> Result<Self, Failure> {
        Ok(TrustPolicy {
            keys: trust
                .trusted_keys
                .iter()
                .map(|p| read_key(p, romdelta_format::signing::parse_public_key))
                .collect::<Result<_, _>>()?,
            insecure: trust.insecure_no_verify,
        })
    }

    /// The trusted keys.
    pub(crate) fn keys(&self) -> &[romdelta_format::signing::VerifyingKey] {
        &self.keys
    }

    /// Whether signatures are not checked.
    pub(crate) fn insecure(&self) -> bool {
        self.insecure
    }

    /// Refuses a package no trusted key vouches for (unless insecure).
    pub(crate) fn admit(
        &self,
        manifest_bytes: &[u8],
        signatures: &[romdelta_format::Signature],
    ) -> Result<(), Failure> {
        Ok(romdelta_apply::check_trust(
            manifest_bytes,
            signatures,
            &self.keys,
            self.insecure,
        )?)
    }
}

/// Writes a new key pair: KEY (0600) and KEY.pub (0644); never overwrites.
fn keygen(output: &Path, json: bool) -> Result<(), Failure> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| anyhow::anyhow!("no randomness from the operating system: {e}"))?;
    let key = romdelta_format::signing::SigningKey::from_bytes(&seed);
    let mut public = output.as_os_str().to_owned();
    public.push(".pub");
    let public = std::path::PathBuf::from(public);
    for (path, text, mode) in [
        (
            output,
            romdelta_format::signing::private_key_file(&key),
            0o600,
        ),
        (
            public.as_path(),
            romdelta_format::signing::public_key_file(&key.verifying_key()),
            0o644,
        ),
    ] {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .with_context(|| {
                format!(
                    "creating {} (an existing key is never overwritten)",
                    path.display()
                )
            })?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let public_hex = hex::encode(key.verifying_key().to_bytes());
    if json {
        print_json(&serde_json::json!({
            "private_key": output,
            "public_key": public,
            "public_key_hex": public_hex,
        }));
    } else {
        say!(
            "wrote {} (private) and {} (public key {public_hex})",
            output.display(),
            public.display(),
        );
    }
    Ok(())
}

/// Prints `value` as pretty JSON on standard output.
pub(crate) fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("serializable")
    );
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Diff {
            paths,
            output,
            full,
            in_place,
            max_stash,
            level,
            source_build,
            target_build,
            keys,
            threads,
            json,
            format,
            downgrade,
            minor_version,
            bsdf2,
            tuning,
        } => {
            let (source, target) = match (full, paths.as_slice()) {
                (true, [t]) | (true, [_, t]) => (None, t),
                (false, [s, t]) => (Some(s), t),
                _ => {
                    return Err(Failure::usage(anyhow::anyhow!(
                        "an incremental package needs SOURCE and TARGET (or use --full TARGET)"
                    )))
                }
            };
            let source_info = read_build(source_build.as_deref(), source.map(|p| p.as_path()))?;
            let target_info = read_build(target_build.as_deref(), Some(target.as_path()))?;
            let source = source.map(|s| open_rom_mapped(s)).transpose()?;
            let target = open_rom_mapped(target)?;
            let mut opts = DiffOptions {
                level,
                ..DiffOptions::default()
            };
            tuning.apply(&mut opts);
            opts.payload_minor_version = minor_version;
            if format == args::DiffFormat::OtaZip {
                let package = payload::ota_package(
                    source_info.as_ref(),
                    target_info.as_ref(),
                    source.is_some(),
                    downgrade,
                )?;
                let payload_keys = payload::signing_keys(&keys)?;
                let bar = progress::bar(json, target.total_size(), "diff");
                let started = std::time::Instant::now();
                let report = with_threads(threads, || {
                    romdelta_diff::payload::write_ota_zip(
                        source.as_ref(),
                        &target,
                        &opts,
                        &payload_keys,
                        package,
                        &output,
                        &|n| bar.set_position(n),
                    )
                })??;
                bar.finish();
                payload::report_ota_zip(&report, &output, started, json);
                return Ok(());
            }
            if format == args::DiffFormat::BlockOta {
                opts.bsdf2 = bsdf2;
                opts.max_stash_blocks = max_stash * ((1 << 20) / romdelta_format::BLOCK_SIZE);
                let bar = progress::bar(json, target.total_size(), "diff");
                let started = std::time::Instant::now();
                let summary = with_threads(threads, || {
                    romdelta_diff::blockota::write_block_ota(
                        source.as_ref(),
                        &target,
                        &opts,
                        &output,
                        &|n| bar.set_position(n),
                    )
                })??;
                bar.finish();
                blockota::report_diff(&summary, &output, started, json);
                return Ok(());
            }
            if format == args::DiffFormat::Payload {
                if in_place {
                    return Err(Failure::usage(anyhow::anyhow!(
                        "--format payload writes an A/B payload.bin: --in-place does not apply"
                    )));
                }
                let payload_keys = payload::signing_keys(&keys)?;
                let bar = progress::bar(json, target.total_size(), "diff");
                let started = std::time::Instant::now();
                let summary = with_threads(threads, || {
                    romdelta_diff::payload::write_payload(
                        source.as_ref(),
                        &target,
                        &opts,
                        &payload_keys,
                        &output,
                        &|n| bar.set_position(n),
                    )
                })??;
                bar.finish();
                payload::report_diff(&summary, &output, started, json);
                return Ok(());
            }
            opts.in_place = in_place;
            opts.max_stash_blocks = max_stash * ((1 << 20) / romdelta_format::BLOCK_SIZE);
            opts.source_build = source_info.unwrap_or_default();
            opts.target_build = target_info.unwrap_or_default();
            opts.signing_keys = keys
                .iter()
                .map(|k| read_key(k, romdelta_format::signing::parse_private_key))
                .collect::<Result<_, _>>()?;
            let bar = progress::bar(json, target.total_size(), "diff");
            let started = std::time::Instant::now();
            let summary = with_threads(threads, || {
                romdelta_diff::write_package(source.as_ref(), &target, &opts, &output, &|n| {
                    bar.set_position(n)
                })
            })??;
            bar.finish();
            if json {
                print_json(&summary);
            } else {
                say!(
                    "wrote {} ({}, {:.2}% of the {} target) in {:.1} s",
                    output.display(),
                    progress::human(summary.package_bytes),
                    100.0 * summary.package_bytes as f64 / summary.target_bytes.max(1) as f64,
                    progress::human(summary.target_bytes),
                    started.elapsed().as_secs_f64()
                );
                for p in &summary.partitions {
                    if let Some(ip) = &p.in_place {
                        say!(
                            "  {}: in place in {} stage(s), largest stash {}; {} operation(s) re-encoded as REPLACE; left in place: {} copied and {} zero block(s)",
                            p.name,
                            ip.stages,
                            progress::human(ip.largest_stash_blocks * romdelta_format::BLOCK_SIZE),
                            ip.converted_to_replace,
                            ip.identity_copy_blocks_dropped,
                            ip.zero_blocks_dropped
                        );
                    }
                }
            }
            Ok(())
        }
        Command::Apply {
            package,
            source,
            output,
            in_place,
            trust,
            installed_build,
            allow_downgrade,
            allow_line_switch,
            skip_build_check,
            max_memory,
            sparse,
            threads,
            json,
        } => {
            let policy = TrustPolicy::load(&trust)?;
            let build_dir = source
                .as_deref()
                .or(in_place.as_deref().filter(|p| p.is_dir()));
            let installed = read_build(installed_build.as_deref(), build_dir)?;
            let allow = romdelta_apply::rules::Allow {
                downgrade: allow_downgrade,
                line_switch: allow_line_switch,
                skip_build_check,
                max_memory_mib: max_memory,
            };
            // The signature over the manifest's bytes first, then the
            // manifest decoded from those very bytes, then the update
            // rules: all before anything is written.
            let admit = |prefix: &romdelta_format::Prefix| {
                policy.admit(&prefix.manifest_bytes, &prefix.signatures)?;
                let manifest = prefix.manifest().map_err(ApplyError::from)?;
                romdelta_apply::check_memory(&manifest, max_memory)?;
                let checked =
                    romdelta_apply::rules::check_rules(&manifest, installed.as_ref(), allow)?;
                if !checked {
                    warn_rules_unchecked(skip_build_check);
                }
                Ok::<_, Failure>((manifest, checked))
            };
            let source = source.map(|s| open_rom(&s)).transpose()?;
            let started = std::time::Instant::now();
            let output = match (output, in_place) {
                (Some(o), None) => o,
                (None, Some(target)) => {
                    if package.as_os_str() == "-" {
                        return Err(Failure::usage(anyhow::anyhow!(
                            "an in-place update reads its package from a file (it may need to resume from it): save the stream first"
                        )));
                    }
                    let file = PackageFile::open(&package)?;
                    let (manifest, checked) = admit(file.prefix())?;
                    let plan = romdelta_apply::InPlacePlan::for_file(&manifest, &file, &target)?;
                    let total: u64 = manifest.partitions.iter().map(|p| p.new.size).sum();
                    let bar = progress::bar(json, total, "apply");
                    let r = with_threads(threads, || plan.execute(&|n| bar.set_position(n)))??;
                    bar.finish();
                    return report_apply(&r, checked, &package, &target, started, json);
                }
                _ => unreachable!("clap: exactly one of --output and --in-place"),
            };
            let (report, checked) = if package.as_os_str() == "-" {
                // One pass over standard input, no temporary copy.
                let mut input = std::io::BufReader::with_capacity(1 << 20, std::io::stdin());
                let prefix = romdelta_apply::read_prefix(&mut input)?;
                let (manifest, checked) = admit(&prefix)?;
                let plan =
                    Plan::for_stream(&manifest, source.as_ref(), &output)?.sparse_output(sparse);
                let total: u64 = manifest.partitions.iter().map(|p| p.new.size).sum();
                let bar = progress::bar(json, total, "apply");
                let r = with_threads(threads, || {
                    plan.execute_stream(&mut input, &|n| bar.set_position(n))
                })??;
                bar.finish();
                (r, checked)
            } else {
                let file = PackageFile::open(&package)?;
                let (manifest, checked) = admit(file.prefix())?;
                let plan = Plan::for_file(&manifest, &file, source.as_ref(), &output)?
                    .sparse_output(sparse);
                let total: u64 = manifest.partitions.iter().map(|p| p.new.size).sum();
                let bar = progress::bar(json, total, "apply");
                let r = with_threads(threads, || plan.execute(&|n| bar.set_position(n)))??;
                bar.finish();
                (r, checked)
            };
            report_apply(&report, checked, &package, &output, started, json)
        }
        Command::Inspect { package, json } => {
            let file = PackageFile::open(&package)?;
            let manifest = file.manifest()?;
            // A damaged package must not look fine: check every data hash first.
            romdelta_apply::verify(&manifest, PackageData::File(&file), None)?;
            inspect::print(file.prefix(), &manifest, file.len(), json);
            Ok(())
        }
        Command::Verify {
            package,
            source,
            trust,
            threads,
            json,
        } => {
            let policy = TrustPolicy::load(&trust)?;
            let file = PackageFile::open(&package)?;
            policy.admit(&file.prefix().manifest_bytes, &file.prefix().signatures)?;
            let manifest = file.manifest()?;
            let source = source.map(|s| open_rom(&s)).transpose()?;
            let report = with_threads(threads, || {
                romdelta_apply::verify(&manifest, PackageData::File(&file), source.as_ref())
            })??;
            if json {
                print_json(&report);
            } else {
                say!(
                    "{}: OK ({} data hashes, {} source hashes, {} source images checked)",
                    package.display(),
                    report.data_hashes,
                    report.source_hashes,
                    report.source_images
                );
            }
            Ok(())
        }
        Command::Bsdiff {
            old,
            new,
            patch,
            json,
        } => bsdiff40::diff(&old, &new, &patch, json),
        Command::Bspatch {
            old,
            new,
            patch,
            json,
        } => bsdiff40::patch(&old, &new, &patch, json),
        Command::Payload { command } => payload::run(command),
        Command::Blockota { command } => blockota::run(command),
        Command::Avb { command } => payload::avb(command),
        Command::Recovery { command } => recovery::run(command),
        Command::Repo { command } => release::repo(command),
        Command::Publish {
            packages,
            repo,
            online,
            trust,
            waves,
            json,
        } => release::publish(packages, repo, online, trust, waves, json),
        Command::TufClient {
            metadata_dir,
            metadata_url,
            target_name,
            target_base_url,
            target_dir,
            command,
        } => release::tuf_client(
            metadata_dir,
            metadata_url,
            target_name,
            target_base_url,
            target_dir,
            command,
        ),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut cmd, "romdelta", &mut text);
            write_stdout(&text).context("writing the completions")?;
            Ok(())
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let mut text = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut text)
                .context("writing the manual page")?;
            write_stdout(&text).context("writing the manual page")?;
            Ok(())
        }
        Command::Keygen { output, json } => keygen(&output, json),
        Command::Demo {
            dir,
            scale,
            threads,
            json,
        } => with_threads(threads, || demo::run(dir.as_deref(), scale as usize, json))?,
        Command::Bench { .. } => bench::run(cli.command),
    }
}

/// The error and its causes on one line, each cause once: errors that
/// already show their cause in their own message do not repeat it.
fn message(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    progress::configure(cli.quiet, cli.progress);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("romdelta: error: {}", message(&f.error));
            ExitCode::from(f.code)
        }
    }
}

/// Says on standard error (whatever `-q`) that the update rules were not
/// compared with an installed build.
pub(crate) fn warn_rules_unchecked(skipped: bool) {
    progress::warn(if skipped {
        "--skip-build-check: the package was not compared with the installed build (device, line, base build, downgrade)"
    } else {
        "the installed build is unknown (no build.prop was found to read, and no --installed-build): the update rules (device, line, base build, downgrade) were not checked"
    });
}

/// The JSON report of an apply.
#[derive(serde::Serialize)]
struct ApplyJson<'a> {
    #[serde(flatten)]
    report: &'a romdelta_apply::ApplyReport,
    /// Whether the package was compared with a known installed build.
    rules_checked: bool,
}

/// Prints what an apply did.
fn report_apply(
    report: &romdelta_apply::ApplyReport,
    rules_checked: bool,
    package: &Path,
    output: &Path,
    started: std::time::Instant,
    json: bool,
) -> Result<(), Failure> {
    if json {
        print_json(&ApplyJson {
            report,
            rules_checked,
        });
        return Ok(());
    }
    say!(
        "applied {} to {} in {:.1} s; every partition verified:",
        package.display(),
        output.display(),
        started.elapsed().as_secs_f64()
    );
    if report.resumed_ops > 0 {
        say!(
            "  resumed: {} operations were already written by an interrupted run",
            report.resumed_ops
        );
    }
    for p in &report.partitions {
        say!(
            "  {:<16} {:>12}  sha256 {}",
            p.name,
            progress::human(p.size),
            p.sha256
        );
    }
    Ok(())
}

/// Writes `bytes` to standard output. A reader that stops early (`romdelta
/// man | head`) has all it wanted: a closed pipe is not an error.
fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
