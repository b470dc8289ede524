//! Build descriptors in Android's `build.prop` form: `key=value` lines.
//!
//! | key | field |
//! |---|---|
//! | `ro.product.device` | device codename |
//! | `ro.build.region` | region (CN, Global, EEA, IN, RU, ...) |
//! | `ro.build.channel` | channel (stable, developer, beta) |
//! | `ro.build.version.incremental` | version as the vendor writes it |
//! | `ro.build.fingerprint` | fingerprint |
//! | `ro.build.version.security_patch` | security patch level |
//! | `ro.build.date.utc` | build time, seconds since the epoch |
//!
//! Blank lines, `#` comments and other keys are ignored.

use crate::limits::MAX_STRING_LEN;
use crate::{BuildInfo, FormatError};

/// Largest build.prop accepted, in bytes.
pub const MAX_BUILD_PROP_LEN: usize = 1 << 20;

/// Parses a build descriptor from `build.prop` text.
pub fn parse_build_prop(text: &str) -> Result<BuildInfo, FormatError> {
    if text.len() > MAX_BUILD_PROP_LEN {
        return Err(FormatError::TooLarge {
            what: "build.prop",
            value: text.len() as u64,
            limit: MAX_BUILD_PROP_LEN as u64,
        });
    }
    let mut b = BuildInfo::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(FormatError::invalid(
                "build.prop",
                format!("line {}: no '='", n + 1),
            ));
        };
        let (key, value) = (key.trim(), value.trim());
        if value.len() as u64 > MAX_STRING_LEN {
            return Err(FormatError::invalid(
                "build.prop",
                format!("line {}: value longer than {MAX_STRING_LEN} bytes", n + 1),
            ));
        }
        let field = match key {
            "ro.product.device" => &mut b.device,
            "ro.build.region" => &mut b.region,
            "ro.build.channel" => &mut b.channel,
            "ro.build.version.incremental" => &mut b.version,
            "ro.build.fingerprint" => &mut b.fingerprint,
            "ro.build.version.security_patch" => &mut b.security_patch,
            "ro.build.date.utc" => {
                b.timestamp = value.parse().map_err(|_| {
                    FormatError::invalid(
                        "build.prop",
                        format!("line {}: ro.build.date.utc is not a number", n + 1),
                    )
                })?;
                continue;
            }
            _ => continue,
        };
        *field = value.to_string();
    }
    Ok(b)
}

/// Writes a build descriptor as `build.prop` text.
pub fn build_prop_text(b: &BuildInfo) -> String {
    format!(
        "ro.product.device={}\nro.build.region={}\nro.build.channel={}\nro.build.version.incremental={}\nro.build.fingerprint={}\nro.build.version.security_patch={}\nro.build.date.utc={}\n",
        b.device, b.region, b.channel, b.version, b.fingerprint, b.security_patch, b.timestamp
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_round_trips() {
        let text = "# comment\nro.product.device=fuxi\nro.build.region=Global\nro.build.channel=stable\nro.build.version.incremental=V14.0.3.0.TMCMIXM\nro.build.date.utc=1700000000\nro.other=x\n";
        let b = parse_build_prop(text).unwrap();
        assert_eq!(
            (b.device.as_str(), b.region.as_str(), b.timestamp),
            ("fuxi", "Global", 1700000000)
        );
        assert_eq!(parse_build_prop(&build_prop_text(&b)).unwrap(), b);
        assert!(parse_build_prop("no equals sign").is_err());
        assert!(parse_build_prop("ro.build.date.utc=soon").is_err());
        assert!(parse_build_prop(&format!("ro.product.device={}", "x".repeat(300))).is_err());
    }
}
