//! Reads across partitions (format version 5): the source partitions that
//! operations read besides their own, found in the source build and checked
//! before anything is written.

use crate::exec::SourceBytes;
use crate::{ApplyError, Plan};
use romdelta_format::{Manifest, PartitionInfo};
use romdelta_rom::{Partition, Rom};

/// The source partitions the manifest's reads across partitions name, by
/// name (sorted, each once), each found in `source` with the size the
/// manifest gives it. A name the source build does not have, or an image of
/// another size, refuses the package.
pub fn match_other_sources<'a>(
    m: &Manifest,
    source: Option<&'a Rom>,
) -> Result<Vec<(String, &'a Partition)>, ApplyError> {
    let mut out: Vec<(String, &'a Partition)> = Vec::new();
    for p in &m.partitions {
        for s in &p.source_reads {
            let name = s.partition.as_str();
            if out.iter().any(|(n, _)| n == name) {
                continue;
            }
            let refuse = |why: String| {
                ApplyError::Refused(format!(
                    "partition {}, operation {}: it reads source partition {name}, {why}",
                    p.name, s.operation
                ))
            };
            let info = expected(m, name)
                .ok_or_else(|| refuse("which the package does not describe".into()))?;
            let source = source.ok_or_else(|| refuse("and no source build was given".into()))?;
            let found = source.get(name).ok_or_else(|| {
                refuse(format!(
                    "a source image of {} bytes (sha256 {}); the source has no partition {name} (it has: {})",
                    info.size,
                    romdelta_format::hex_digest(&info.sha256),
                    source
                        .partitions
                        .iter()
                        .map(|x| x.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            if found.size() != info.size {
                return Err(refuse(format!(
                    "a source image of {} bytes (sha256 {}); {} has {} bytes",
                    info.size,
                    romdelta_format::hex_digest(&info.sha256),
                    found.path.display(),
                    found.size()
                )));
            }
            out.push((name.to_string(), found));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The old image the manifest gives source partition `name`.
fn expected(m: &Manifest, name: &str) -> Option<PartitionInfo> {
    m.partitions
        .iter()
        .find(|p| p.name == name)
        .and_then(|p| p.old)
        .or_else(|| m.removed.iter().find(|r| r.name == name).map(|r| r.old))
}

/// The source partition named `name` among `others`.
pub(crate) fn find<'a>(others: &[(String, &'a Partition)], name: &str) -> Option<&'a Partition> {
    others
        .binary_search_by(|(n, _)| n.as_str().cmp(name))
        .ok()
        .map(|k| others[k].1)
}

impl Plan<'_> {
    /// The source operation `oi` of partition update `pi` reads: its own
    /// partition's, or the other one it names.
    pub(crate) fn source_for(&self, pi: usize, oi: usize) -> Option<&dyn SourceBytes> {
        match self.manifest.partitions[pi].source_of(oi) {
            Some(name) => find(&self.others, name).map(|s| s as &dyn SourceBytes),
            None => self.sources[pi].map(|s| s as &dyn SourceBytes),
        }
    }
}
