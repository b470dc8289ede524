//! A line's catalog: the builds of one device, region and channel, each
//! with its full package, its incrementals (by base build) and its staged
//! rollout. It is a TUF target, so a device reads it only after its length
//! and hash matched the signed targets metadata.

use romdelta_apply::rules::{describe, same_build};
use romdelta_format::BuildInfo;
use serde::{Deserialize, Serialize};

/// The catalog format this crate writes and reads.
pub const FORMAT: &str = "romdelta-catalog-1";

/// The most bytes a catalog may have (the signed length bounds it first).
pub const MAX_LEN: u64 = 16 << 20;

/// One line's builds, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    /// [`FORMAT`].
    pub format: String,
    /// Device codename.
    pub device: String,
    /// Region.
    pub region: String,
    /// Channel.
    pub channel: String,
    /// The builds, in the order they were published.
    pub builds: Vec<BuildEntry>,
}

/// A published build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildEntry {
    /// Its identity, as its packages' manifests record it.
    pub build: BuildInfo,
    /// When it was published (seconds since the epoch).
    pub published: i64,
    /// The full package, which repairs any state.
    #[serde(default)]
    pub full: Option<PackageRef>,
    /// Incrementals, each from one base build.
    #[serde(default)]
    pub incrementals: Vec<Incremental>,
    /// The staged rollout; none: every device at once.
    #[serde(default)]
    pub rollout: Vec<Wave>,
}

/// A package as a TUF target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRef {
    /// Its target path in the repository.
    pub target: String,
    /// Length in bytes.
    pub length: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// An incremental package and the build it was made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incremental {
    /// The exact build it applies to.
    pub base: BuildInfo,
    /// The package.
    #[serde(flatten)]
    pub package: PackageRef,
}

/// A wave of a staged rollout: from `from` on, `percent` of devices (by
/// their seed) may take the build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wave {
    /// Seconds since the epoch.
    pub from: i64,
    /// 0–100.
    pub percent: u8,
}

impl Wave {
    /// Parses `TIME:PERCENT`, TIME in seconds since the epoch or TUF's
    /// `2027-01-01T00:00:00Z`.
    pub fn parse(s: &str) -> Result<Wave, String> {
        let (t, p) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("wave {s:?}: expected TIME:PERCENT"))?;
        let from = match t.parse::<i64>() {
            Ok(n) => n,
            Err(_) => romdelta_tuf::time::parse(t).map_err(|e| format!("wave {s:?}: {e}"))?,
        };
        let percent: u8 = p
            .trim_end_matches('%')
            .parse()
            .ok()
            .filter(|&p| p <= 100)
            .ok_or_else(|| format!("wave {s:?}: the share must be 0 to 100"))?;
        Ok(Wave { from, percent })
    }
}

impl Catalog {
    /// An empty catalog for `line`'s device, region and channel.
    pub fn new(line: &BuildInfo) -> Catalog {
        Catalog {
            format: FORMAT.into(),
            device: line.device.clone(),
            region: line.region.clone(),
            channel: line.channel.clone(),
            builds: Vec::new(),
        }
    }

    /// Parses a catalog (its length already checked).
    pub fn parse(bytes: &[u8]) -> Result<Catalog, String> {
        if bytes.len() as u64 > MAX_LEN {
            return Err(format!(
                "a catalog of {} bytes (at most {MAX_LEN})",
                bytes.len()
            ));
        }
        let c: Catalog =
            serde_json::from_slice(bytes).map_err(|e| format!("not a romdelta catalog: {e}"))?;
        if c.format != FORMAT {
            return Err(format!(
                "catalog format {:?}, this reads {FORMAT:?}",
                c.format
            ));
        }
        Ok(c)
    }

    /// The JSON written to the repository.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = serde_json::to_vec_pretty(self).expect("plain structs");
        b.push(b'\n');
        b
    }

    /// The entry for `build`, made if new.
    pub fn entry(&mut self, build: &BuildInfo, now: i64) -> &mut BuildEntry {
        let i = match self.builds.iter().position(|e| same_build(&e.build, build)) {
            Some(i) => i,
            None => {
                self.builds.push(BuildEntry {
                    build: build.clone(),
                    published: now,
                    full: None,
                    incrementals: Vec::new(),
                    rollout: Vec::new(),
                });
                self.builds.len() - 1
            }
        };
        &mut self.builds[i]
    }
}

/// The target path of `line`'s catalog.
pub fn catalog_path(line: &BuildInfo) -> String {
    format!(
        "lines/{}/{}/{}/catalog.json",
        segment(&line.device),
        segment(&line.region),
        segment(&line.channel)
    )
}

/// A name as one plain path segment (`_` for an empty one).
pub fn segment(s: &str) -> String {
    if s.is_empty() {
        return "_".into();
    }
    let q = romdelta_tuf::quote(s);
    if q == "." || q == ".." {
        q.replace('.', "%2E")
    } else {
        q
    }
}

/// The share of the devices (0–99) a seed puts a device in, for one build:
/// the same device falls elsewhere for each build.
pub fn bucket(seed: u64, build: &BuildInfo) -> u8 {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(b"romdelta rollout\0");
    h.update(seed.to_le_bytes());
    h.update(build.fingerprint.as_bytes());
    h.update(b"\0");
    h.update(build.version.as_bytes());
    let d = h.finalize();
    (u64::from_le_bytes(d[..8].try_into().expect("8 bytes")) % 100) as u8
}

/// The share of devices `e`'s rollout admits at `now`.
pub fn admitted_percent(e: &BuildEntry, now: i64) -> u8 {
    if e.rollout.is_empty() {
        return 100;
    }
    e.rollout
        .iter()
        .filter(|w| w.from <= now)
        .map(|w| w.percent)
        .max()
        .unwrap_or(0)
}

/// What a device should do.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Nothing newer that this device may take.
    UpToDate {
        /// Why.
        reason: String,
    },
    /// A newer build exists, but not yet for this device.
    Waiting {
        /// The build.
        build: BuildInfo,
        /// The device's place (0–99).
        bucket: u8,
        /// The share admitted now.
        percent: u8,
        /// When the next wave starts, if one is planned.
        next_wave: Option<i64>,
    },
    /// Install `package`.
    Install {
        /// The build it installs.
        build: BuildInfo,
        /// `incremental` or `full`.
        kind: String,
        /// The package.
        package: PackageRef,
        /// Why this package.
        reason: String,
    },
}

/// Picks the update for a device running `installed` (unknown: `None`)
/// from its line's catalog: the newest build its wave admits; the
/// incremental made from exactly `installed`, unless `full_only` (an
/// incremental failed too often), else the full package. Never an older
/// build.
pub fn choose(
    c: &Catalog,
    installed: Option<&BuildInfo>,
    seed: u64,
    now: i64,
    full_only: bool,
) -> Decision {
    let newest = c
        .builds
        .iter()
        .rev()
        .find(|e| e.full.is_some() || !e.incrementals.is_empty());
    let Some(newest) = newest else {
        return Decision::UpToDate {
            reason: "the line's catalog has no build yet".into(),
        };
    };
    // The newest build that this device's wave admits.
    let bucket_of = |e: &BuildEntry| bucket(seed, &e.build);
    let admitted = c.builds.iter().rev().find(|e| {
        bucket_of(e) < admitted_percent(e, now) && (e.full.is_some() || !e.incrementals.is_empty())
    });
    let waiting = || Decision::Waiting {
        build: newest.build.clone(),
        bucket: bucket_of(newest),
        percent: admitted_percent(newest, now),
        next_wave: newest
            .rollout
            .iter()
            .map(|w| w.from)
            .filter(|&t| t > now)
            .min(),
    };
    let Some(e) = admitted else {
        return waiting();
    };
    if let Some(i) = installed {
        if same_build(&e.build, i) {
            if !std::ptr::eq(e, newest) {
                return waiting();
            }
            return Decision::UpToDate {
                reason: format!("{} is the newest build this device may take", describe(i)),
            };
        }
        if e.build.timestamp != 0 && i.timestamp != 0 && e.build.timestamp < i.timestamp {
            return Decision::UpToDate {
                reason: format!(
                    "the newest build this device may take ({}) is older than the installed one ({}): no downgrade",
                    describe(&e.build),
                    describe(i)
                ),
            };
        }
        if !full_only {
            if let Some(inc) = e.incrementals.iter().find(|x| same_build(&x.base, i)) {
                return Decision::Install {
                    build: e.build.clone(),
                    kind: "incremental".into(),
                    package: inc.package.clone(),
                    reason: format!(
                        "the incremental made from the installed build {}",
                        describe(i)
                    ),
                };
            }
        }
    }
    match &e.full {
        Some(full) => Decision::Install {
            build: e.build.clone(),
            kind: "full".into(),
            package: full.clone(),
            reason: match installed {
                None => "the installed build is unknown: the full package".into(),
                Some(_) if full_only => {
                    "an incremental failed to install too often: the full package".into()
                }
                Some(i) => format!(
                    "no incremental from the installed build {}: the full package",
                    describe(i)
                ),
            },
        },
        None => Decision::UpToDate {
            reason: format!(
                "{} has no full package and no incremental from the installed build",
                describe(&e.build)
            ),
        },
    }
}

/// [`choose`], then the full package instead of an incremental that has
/// failed to install `attempts` times already (`failed`: the failures
/// recorded for a build). Returns the choice and the failures counted for
/// the build it installs.
pub fn choose_after_failures(
    c: &Catalog,
    installed: Option<&BuildInfo>,
    seed: u64,
    now: i64,
    failed: impl Fn(&BuildInfo) -> u32,
    attempts: u32,
) -> (Decision, u32) {
    let d = choose(c, installed, seed, now, false);
    match &d {
        Decision::Install { build, kind, .. } if kind == "incremental" => {
            let n = failed(build);
            if n >= attempts {
                (choose(c, installed, seed, now, true), n)
            } else {
                (d, n)
            }
        }
        _ => (d, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(version: &str, ts: u64) -> BuildInfo {
        BuildInfo {
            device: "demo".into(),
            region: "Global".into(),
            channel: "stable".into(),
            version: version.into(),
            fingerprint: format!("demo/{version}"),
            timestamp: ts,
            ..Default::default()
        }
    }

    fn pkg(name: &str) -> PackageRef {
        PackageRef {
            target: name.into(),
            length: 1,
            sha256: "00".into(),
        }
    }

    fn catalog(rollout: Vec<Wave>) -> Catalog {
        let mut c = Catalog::new(&b("V1", 1));
        c.entry(&b("V1", 1), 0).full = Some(pkg("full-1"));
        let e = c.entry(&b("V2", 2), 0);
        e.full = Some(pkg("full-2"));
        e.incrementals.push(Incremental {
            base: b("V1", 1),
            package: pkg("inc-1-2"),
        });
        e.rollout = rollout;
        c
    }

    fn target(d: &Decision) -> &str {
        match d {
            Decision::Install { package, .. } => &package.target,
            _ => "",
        }
    }

    #[test]
    fn the_exact_incremental_else_the_full_package_never_older() {
        let c = catalog(vec![]);
        assert_eq!(
            target(&choose(&c, Some(&b("V1", 1)), 0, 0, false)),
            "inc-1-2"
        );
        assert_eq!(target(&choose(&c, Some(&b("V1", 1)), 0, 0, true)), "full-2");
        assert_eq!(
            target(&choose(&c, Some(&b("V0", 0)), 0, 0, false)),
            "full-2"
        );
        assert_eq!(target(&choose(&c, None, 0, 0, false)), "full-2");
        assert!(matches!(
            choose(&c, Some(&b("V2", 2)), 0, 0, false),
            Decision::UpToDate { .. }
        ));
        assert!(matches!(
            choose(&c, Some(&b("V3", 3)), 0, 0, false),
            Decision::UpToDate { .. }
        ));
    }

    #[test]
    fn failures_count_for_the_build_chosen_not_the_newest_one() {
        // V3 is published but admits nobody yet: V2 is what devices take.
        let mut c = catalog(vec![]);
        let e = c.entry(&b("V3", 3), 0);
        e.full = Some(pkg("full-3"));
        e.rollout = vec![Wave {
            from: 0,
            percent: 0,
        }];
        let v1 = b("V1", 1);
        let failed = |x: &BuildInfo| if x.version == "V2" { 2 } else { 0 };
        let (d, n) = choose_after_failures(&c, Some(&v1), 0, 10, failed, 2);
        assert_eq!((target(&d), n), ("full-2", 2));
        let (d, n) = choose_after_failures(&c, Some(&v1), 0, 10, |_| 1, 2);
        assert_eq!((target(&d), n), ("inc-1-2", 1));
    }

    #[test]
    fn waves_admit_the_share_of_devices_their_seeds_put_below_it() {
        let c = catalog(vec![
            Wave {
                from: 100,
                percent: 10,
            },
            Wave {
                from: 200,
                percent: 50,
            },
        ]);
        let count = |now| {
            (0..2000u64)
                .filter(|&seed| {
                    target(&choose(&c, Some(&b("V1", 1)), seed, now, false)) == "inc-1-2"
                })
                .count()
        };
        assert_eq!(count(50), 0);
        let (a, b_) = (count(150), count(250));
        assert!((140..=260).contains(&a), "{a} of 2000 at 10%");
        assert!((900..=1100).contains(&b_), "{b_} of 2000 at 50%");
        // A device not yet admitted is told when the next wave starts.
        let waiting = (0..100u64)
            .map(|seed| choose(&c, Some(&b("V1", 1)), seed, 150, false))
            .find(|d| matches!(d, Decision::Waiting { .. }))
            .unwrap();
        assert!(matches!(
            waiting,
            Decision::Waiting {
                next_wave: Some(200),
                percent: 10,
                ..
            }
        ));
        assert!(
            Wave::parse("2027-01-01T00:00:00Z:25").unwrap()
                == Wave {
                    from: 1_798_761_600,
                    percent: 25
                }
        );
        assert!(Wave::parse("100:101").is_err() && Wave::parse("x").is_err());
    }
}
