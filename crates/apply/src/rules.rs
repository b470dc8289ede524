//! The field's update rules: who may install what on top of which build.
//!
//! - the package's device must be the installed device;
//! - an incremental applies only to the exact build it was made from, and
//!   never moves to another line (region or channel);
//! - a full package repairs anything, but moves to another line only when
//!   asked (`allow_line_switch`);
//! - an older build is never installed unless asked (`allow_downgrade`).
//!
//! Fields a build descriptor leaves empty (or a zero timestamp) are not
//! compared: the rules check what both sides record.
//!
//! When the installed build is unknown (no `build.prop` to read), a package
//! whose identity names a device is refused: the rules cannot be checked,
//! and the caller must say which build is installed or skip the check in
//! so many words (`skip_build_check`). A package that names no device
//! installs, and the caller is told the rules were not checked.

use crate::ApplyError;
use romdelta_format::{BuildInfo, Manifest, PackageKind};

/// What the user allows beyond the defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allow {
    /// Install a build older than the installed one.
    pub downgrade: bool,
    /// Let a full package move the device to another region or channel.
    pub line_switch: bool,
    /// Install without comparing the package with the installed build.
    pub skip_build_check: bool,
    /// Most memory (MiB) the package's operations may need at apply; 0
    /// means [`crate::DEFAULT_APPLY_MEMORY_MIB`] (see [`crate::check_memory`]).
    pub max_memory_mib: u64,
}

/// A build, as messages name it.
pub fn describe(b: &BuildInfo) -> String {
    let mut s = String::new();
    for (k, v) in [
        ("device", &b.device),
        ("region", &b.region),
        ("channel", &b.channel),
        ("version", &b.version),
        ("fingerprint", &b.fingerprint),
    ] {
        if !v.is_empty() {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(&format!("{k}={v}"));
        }
    }
    if b.timestamp != 0 {
        s.push_str(&format!(" built={}", b.timestamp));
    }
    if s.is_empty() {
        "(no identity recorded)".into()
    } else {
        s
    }
}

fn differ(a: &str, b: &str) -> bool {
    !a.is_empty() && !b.is_empty() && a != b
}

fn line_differs(a: &BuildInfo, b: &BuildInfo) -> bool {
    differ(&a.region, &b.region) || differ(&a.channel, &b.channel)
}

/// The same build: by fingerprint where both have one, else by version.
pub fn same_build(a: &BuildInfo, b: &BuildInfo) -> bool {
    if !a.fingerprint.is_empty() && !b.fingerprint.is_empty() {
        return a.fingerprint == b.fingerprint;
    }
    !differ(&a.version, &b.version) && !differ(&a.device, &b.device) && !line_differs(a, b)
}

/// Checks the package's builds against the installed build. Returns
/// whether they were compared with an installed build: `false` when the
/// check was skipped (`allow.skip_build_check`) or the installed build is
/// unknown and the package names no device (the caller says so).
pub fn check_rules(
    m: &Manifest,
    installed: Option<&BuildInfo>,
    allow: Allow,
) -> Result<bool, ApplyError> {
    check_line(m)?;
    if allow.skip_build_check {
        return Ok(false);
    }
    let Some(installed) = installed else {
        if !m.target_build.device.is_empty() {
            return Err(ApplyError::Refused(format!(
                "the package is for {} but the installed build is unknown (no build.prop was found to read): give the installed build's build.prop with --installed-build FILE, or --skip-build-check to install without checking device, line, base build and downgrade",
                describe(&m.target_build)
            )));
        }
        return Ok(false);
    };
    check_installed(m, installed, allow)?;
    Ok(true)
}

/// An incremental never changes line, whatever is installed.
fn check_line(m: &Manifest) -> Result<(), ApplyError> {
    let target = &m.target_build;
    let refuse = |why: String| Err(ApplyError::Refused(why));
    if let Some(source) = &m.source_build {
        if line_differs(source, target) {
            return refuse(format!(
                "an incremental never changes line: it goes from {} to {}; a full package can, with --allow-line-switch",
                describe(source),
                describe(target)
            ));
        }
    }
    Ok(())
}

/// The rules that compare the package with the installed build.
fn check_installed(m: &Manifest, installed: &BuildInfo, allow: Allow) -> Result<(), ApplyError> {
    let target = &m.target_build;
    let refuse = |why: String| Err(ApplyError::Refused(why));
    if differ(&target.device, &installed.device) {
        return refuse(format!(
            "the package is for device {}, the installed build is for device {}",
            target.device, installed.device
        ));
    }
    match (m.kind, &m.source_build) {
        (PackageKind::Delta, Some(source)) if !same_build(source, installed) => {
            return refuse(format!(
                "this incremental applies only to {}; installed is {}",
                describe(source),
                describe(installed)
            ));
        }
        _ => {}
    }
    if m.kind == PackageKind::Full && line_differs(target, installed) && !allow.line_switch {
        return refuse(format!(
            "the package is {}, the installed build is {}: a full package may switch region or channel only with --allow-line-switch",
            describe(target),
            describe(installed)
        ));
    }
    if target.timestamp != 0
        && installed.timestamp != 0
        && target.timestamp < installed.timestamp
        && !allow.downgrade
    {
        return refuse(format!(
            "the package's build ({}) is older than the installed one ({}): a downgrade needs --allow-downgrade",
            describe(target),
            describe(installed)
        ));
    }
    Ok(())
}
