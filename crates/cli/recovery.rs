//! `romdelta recovery`: the simulated device of `romdelta-recovery`.

use crate::args::RecoveryCommand;
use crate::{print_json, read_build, with_threads, Failure, TrustPolicy};
use romdelta_apply::rules::{describe, Allow};
use romdelta_recovery::{Device, RecoveryError, Slot, Slots};

impl From<RecoveryError> for Failure {
    fn from(e: RecoveryError) -> Self {
        Failure {
            code: e.exit_code() as u8,
            error: e.into(),
        }
    }
}

fn build_line(b: &Option<romdelta_format::BuildInfo>) -> String {
    b.as_ref().map_or("(unknown build)".into(), describe)
}

/// Runs one `romdelta recovery` subcommand.
pub fn run(command: RecoveryCommand) -> Result<(), Failure> {
    match command {
        RecoveryCommand::Init {
            device,
            from,
            build,
            single_slot,
            json,
        } => {
            let b = read_build(build.as_deref(), None)?;
            let slots = if single_slot {
                romdelta_recovery::Slots::Single
            } else {
                romdelta_recovery::Slots::Ab
            };
            let d = Device::init(&device, &from, b, slots)?;
            if json {
                print_json(&d.status()?);
                return Ok(());
            }
            let holds = match slots {
                Slots::Ab => "slots a and b hold",
                Slots::Single => "its single slot holds",
            };
            say!(
                "device {}: {holds} {} ({} partitions){}",
                device.display(),
                build_line(&d.build(Slot::A)?),
                d.state().partitions.len(),
                if slots == Slots::Ab {
                    ", slot a active"
                } else {
                    ""
                }
            );
            Ok(())
        }
        RecoveryCommand::Status { device, json } => {
            let s = Device::open(&device)?.status()?;
            if json {
                print_json(&s);
            } else {
                say!("device {}", device.display());
                if s.state.slots == Slots::Single {
                    say!("  slots        one, updated in place");
                    say!("  build        {}", build_line(&s.build_a));
                } else {
                    say!("  active slot  {}", s.state.active.letter());
                    say!("  slot a       {}", build_line(&s.build_a));
                    say!("  slot b       {}", build_line(&s.build_b));
                }
                say!("  partitions   {}", s.state.partitions.join(", "));
                match &s.state.update {
                    None => say!("  update       none in progress"),
                    Some(u) if s.state.slots == Slots::Single => say!(
                        "  update       {} in place (package manifest sha256 {}): the device boots into recovery until the same package finishes it, or a full package repairs it",
                        u.status,
                        u.manifest_sha256
                    ),
                    Some(u) => say!(
                        "  update       {} to slot {} (package manifest sha256 {})",
                        u.status,
                        u.target_slot.letter(),
                        u.manifest_sha256
                    ),
                }
            }
            Ok(())
        }
        RecoveryCommand::Check { source } => crate::release::check(source),
        RecoveryCommand::Update {
            source,
            trust,
            threads,
        } => crate::release::update(source, trust, threads),
        RecoveryCommand::Install {
            package,
            device,
            trust,
            allow_downgrade,
            allow_line_switch,
            skip_build_check,
            max_memory,
            threads,
            json,
        } => {
            let policy = TrustPolicy::load(&trust)?;
            let mut d = Device::open(&device)?;
            let allow = Allow {
                downgrade: allow_downgrade,
                line_switch: allow_line_switch,
                skip_build_check,
                max_memory_mib: max_memory,
            };
            let admit = |m: &[u8], sigs: &[romdelta_format::Signature]| {
                romdelta_apply::check_trust(m, sigs, policy.keys(), policy.insecure())
            };
            let started = std::time::Instant::now();
            let report = with_threads(threads, || d.install(&package, &admit, allow))??;
            if !report.rules_checked {
                crate::warn_rules_unchecked(skip_build_check);
            }
            if json {
                print_json(&report);
            } else {
                if d.state().slots == Slots::Single {
                    say!(
                        "installed {} in place in {:.1} s; every partition verified: {}",
                        package.display(),
                        started.elapsed().as_secs_f64(),
                        describe(&report.build)
                    );
                } else {
                    say!(
                    "installed {} into slot {} in {:.1} s; every partition verified; slot {} active: {}",
                    package.display(),
                    report.slot.letter(),
                    started.elapsed().as_secs_f64(),
                    report.slot.letter(),
                    describe(&report.build)
                );
                }
                if report.resumed_ops > 0 {
                    say!(
                        "  resumed: {} operations were already written by an interrupted install",
                        report.resumed_ops
                    );
                }
            }
            Ok(())
        }
    }
}
