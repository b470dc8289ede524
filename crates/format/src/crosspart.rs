//! Reads across partitions (since format version 5): operations that read a
//! partition of the source build other than their own.
//!
//! A partition update lists, after its operations (and stages), the
//! operations that read another source partition and the name of the
//! partition each one reads ([`SourceRead`]). Every other operation reads
//! its own partition's source image, as in earlier versions. The table is
//! present only when bit 1 of the partition's flags byte is set, a bit no
//! version-4 reader accepts, so such a manifest can never be misread as an
//! older one; a package without reads across partitions encodes exactly as
//! it did in version 4.
//!
//! Rules ([`check`]): operation indexes strictly increase and name
//! operations that read source; a named partition is not the update's own
//! and is a partition of the source build (a partition update with an old
//! image, or a removed partition); the operation's source extents lie
//! within that image. In-place packages may not read across partitions: a
//! partition rewritten in place would be read by another partition's
//! operation after it was overwritten.

use crate::limits::MAX_NAME_LEN;
use crate::manifest::{check_partition_name, PartitionInfo, PartitionUpdate};
use crate::{FormatError, Reader, Writer};
use serde::Serialize;

/// One operation that reads another partition of the source build.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SourceRead {
    /// Index of the operation within its partition update.
    pub operation: u64,
    /// The source partition it reads.
    pub partition: String,
}

/// Bit of a partition's flags byte: the partition has an old image.
pub(crate) const FLAG_OLD: u8 = 1;
/// Bit of a partition's flags byte: a table of [`SourceRead`]s follows the
/// partition's operations and stages (since format version 5).
pub(crate) const FLAG_SOURCE_READS: u8 = 2;

/// The fewest bytes one encoded [`SourceRead`] takes: a one-byte index and
/// a one-byte name with its length.
const MIN_ENTRY_LEN: u64 = 3;

/// Decodes the table of a partition with `n_ops` operations: a count (at
/// least 1), then per entry the operation index (varint) and the partition
/// name (string). Only the shape is checked here; [`check`] does the rest.
pub(crate) fn decode(r: &mut Reader<'_>, n_ops: usize) -> Result<Vec<SourceRead>, FormatError> {
    let n = r.count("source read count", MIN_ENTRY_LEN, n_ops as u64)?;
    if n == 0 {
        return Err(FormatError::invalid(
            "source reads",
            "an empty table is written by leaving it out",
        ));
    }
    let mut out = r.vec_for(n);
    for _ in 0..n {
        let operation = r.varint("source read operation")?;
        let partition = r.string("source read partition", MAX_NAME_LEN as u64)?;
        check_partition_name(&partition)?;
        out.push(SourceRead {
            operation,
            partition,
        });
    }
    Ok(out)
}

/// Encodes a non-empty table (see [`decode`]).
pub(crate) fn encode(reads: &[SourceRead], w: &mut Writer) {
    w.varint(reads.len() as u64);
    for s in reads {
        w.varint(s.operation);
        w.string(&s.partition);
    }
}

/// Checks `p`'s table against the manifest: `in_place` is the install
/// mode, `source(name)` the old image of the source build's partition
/// `name` (none when the source build has no such partition).
pub(crate) fn check(
    p: &PartitionUpdate,
    in_place: bool,
    source: &dyn Fn(&str) -> Option<PartitionInfo>,
) -> Result<(), FormatError> {
    let bad = |d: String| {
        Err(FormatError::invalid(
            "source reads",
            format!("partition {}: {d}", p.name),
        ))
    };
    let mut prev: Option<u64> = None;
    for s in &p.source_reads {
        let i = s.operation;
        if in_place {
            return bad(format!(
                "operation {i} reads source partition {}: an in-place package may only read each partition's own source (a partition rewritten in place could be read after it was overwritten); make it as an A/B package, or with `romdelta diff --in-place`, which reads no other partition",
                s.partition
            ));
        }
        if prev.is_some_and(|p| p >= i) {
            return bad(format!("operation {i} listed out of order or twice"));
        }
        prev = Some(i);
        let Some(op) = p.operations.get(i as usize) else {
            return bad(format!(
                "operation {i} named, but the partition has {} operations",
                p.operations.len()
            ));
        };
        if !op.kind.reads_source() {
            return bad(format!(
                "operation {i} is {}, which reads no source",
                op.kind
            ));
        }
        if s.partition == p.name {
            return bad(format!(
                "operation {i} names its own partition (leave it out of the table)"
            ));
        }
        let Some(info) = source(&s.partition) else {
            return bad(format!(
                "operation {i} reads source partition {}, which the source build does not have",
                s.partition
            ));
        };
        let ob = info.blocks();
        if let Some(e) = op.src_extents.iter().find(|e| e.end_block() > ob) {
            return bad(format!(
                "operation {i}: source blocks {e} lie past source partition {} ({ob} blocks)",
                s.partition
            ));
        }
    }
    Ok(())
}

impl PartitionUpdate {
    /// The source partition operation `i` reads when it is not the
    /// update's own (see [`crate::crosspart`]).
    pub fn source_of(&self, i: usize) -> Option<&str> {
        self.source_reads
            .binary_search_by_key(&(i as u64), |s| s.operation)
            .ok()
            .map(|k| self.source_reads[k].partition.as_str())
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        BuildInfo, Extent, Manifest, OpKind, Operation, PackageKind, PartitionInfo,
        PartitionUpdate, RemovedPartition, BLOCK_SIZE,
    };

    use super::SourceRead;

    fn op(kind: OpKind, src: Vec<Extent>, dst: Extent, data: u64, off: u64) -> Operation {
        Operation {
            kind,
            src_extents: src,
            dst_extents: vec![dst],
            data_offset: off,
            data_length: data,
            data_sha256: if kind.has_data() { [4; 32] } else { [0; 32] },
            src_sha256: if kind.reads_source() {
                [5; 32]
            } else {
                [0; 32]
            },
        }
    }

    fn info(blocks: u64) -> PartitionInfo {
        PartitionInfo {
            size: blocks * BLOCK_SIZE,
            sha256: [7; 32],
        }
    }

    /// A system update, a new `odm` that reads system, and a product that
    /// reads the removed `oem`.
    fn manifest() -> Manifest {
        Manifest {
            kind: PackageKind::Delta,
            in_place: false,
            target_build: BuildInfo::default(),
            source_build: Some(BuildInfo::default()),
            data_len: 30,
            partitions: vec![
                PartitionUpdate {
                    name: "system".into(),
                    old: Some(info(16)),
                    new: info(16),
                    operations: vec![op(
                        OpKind::SourceCopy,
                        vec![Extent::new(0, 16)],
                        Extent::new(0, 16),
                        0,
                        0,
                    )],
                    stages: vec![],
                    source_reads: vec![],
                },
                PartitionUpdate {
                    name: "odm".into(),
                    old: None,
                    new: info(8),
                    operations: vec![
                        op(OpKind::Replace, vec![], Extent::new(0, 2), 10, 0),
                        op(
                            OpKind::SourceCopy,
                            vec![Extent::new(10, 4)],
                            Extent::new(2, 4),
                            0,
                            0,
                        ),
                        op(
                            OpKind::SourceZstd,
                            vec![Extent::new(12, 4)],
                            Extent::new(6, 2),
                            10,
                            10,
                        ),
                    ],
                    stages: vec![],
                    source_reads: vec![
                        SourceRead {
                            operation: 1,
                            partition: "system".into(),
                        },
                        SourceRead {
                            operation: 2,
                            partition: "system".into(),
                        },
                    ],
                },
                PartitionUpdate {
                    name: "product".into(),
                    old: Some(info(4)),
                    new: info(4),
                    operations: vec![op(
                        OpKind::SourceBsdiffSparse,
                        vec![Extent::new(0, 3)],
                        Extent::new(0, 4),
                        10,
                        20,
                    )],
                    stages: vec![],
                    source_reads: vec![SourceRead {
                        operation: 0,
                        partition: "oem".into(),
                    }],
                },
            ],
            removed: vec![RemovedPartition {
                name: "oem".into(),
                old: info(3),
            }],
            codecs: vec![],
            apply_memory_mib: 0,
        }
    }

    #[test]
    fn source_reads_round_trip_as_version_5() {
        let m = manifest();
        m.check().unwrap();
        assert_eq!(m.format_version(), 5);
        let b = m.encode();
        let d = Manifest::decode(&b).unwrap();
        assert_eq!(d, m);
        assert_eq!(d.partitions[1].source_of(2), Some("system"));
        assert_eq!(d.partitions[1].source_of(0), None);
        assert_eq!(d.partitions[2].source_of(0), Some("oem"));
        // Without the reads the same manifest is what version 2 wrote.
        let mut plain = m.clone();
        plain.partitions.truncate(1);
        plain.removed.clear();
        plain.data_len = 0;
        assert_eq!(plain.format_version(), 2);
        let pb = plain.encode();
        assert_eq!(Manifest::decode(&pb).unwrap(), plain);
    }

    #[test]
    fn every_truncation_of_a_manifest_with_source_reads_fails() {
        let b = manifest().encode();
        for cut in 0..b.len() {
            assert!(Manifest::decode(&b[..cut]).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn bad_tables_are_refused() {
        let refused = |f: &dyn Fn(&mut Manifest), want: &str| {
            let mut m = manifest();
            f(&mut m);
            let e = m.check().unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
            // A manifest that does not check does not decode either.
            assert!(Manifest::decode(&m.encode()).is_err(), "{want}");
        };
        refused(
            &|m| m.partitions[1].source_reads[0].partition = "vendor".into(),
            "reads source partition vendor, which the source build does not have",
        );
        refused(
            &|m| m.partitions[1].source_reads[1].partition = "odm".into(),
            "names its own partition",
        );
        refused(
            &|m| m.partitions[1].source_reads.swap(0, 1),
            "out of order or twice",
        );
        refused(
            &|m| m.partitions[1].source_reads[1].operation = 1,
            "out of order or twice",
        );
        refused(
            &|m| m.partitions[1].source_reads[0].operation = 0,
            "reads no source",
        );
        refused(
            &|m| m.partitions[1].source_reads[1].operation = 3,
            "the partition has 3 operations",
        );
        refused(
            &|m| m.partitions[2].operations[0].src_extents = vec![Extent::new(1, 3)],
            "lie past source partition oem (3 blocks)",
        );
        refused(
            &|m| {
                m.in_place = true;
                for p in &mut m.partitions {
                    p.stages = vec![p.operations.len() as u64];
                }
            },
            "an in-place package may only read each partition's own source",
        );
        // Without its table entry, odm's copy reads a partition it does not have.
        refused(
            &|m| {
                m.partitions[1].source_reads.remove(0);
            },
            "the partition has no source",
        );
    }

    #[test]
    fn flags_and_counts_outside_the_format_are_refused() {
        let m = manifest();
        let b = m.encode();
        // The odm partition's flags byte (2: no old image, a table) follows
        // its name.
        let at = b.windows(4).position(|w| w == b"\x03odm").unwrap() + 4;
        assert_eq!(b[at], 2);
        for f in [4u8, 6, 0x82] {
            let mut bad = b.clone();
            bad[at] = f;
            assert!(Manifest::decode(&bad).is_err(), "flags {f}");
        }
        // Without bit 1 the table is read as the next partition: refused.
        let mut bad = b.clone();
        bad[at] = 0;
        assert!(Manifest::decode(&bad).is_err());
        // An empty table, announced.
        let mut one = m.clone();
        one.partitions.truncate(1);
        one.removed.clear();
        one.data_len = 0;
        let mut e = one.encode();
        let at = e.windows(7).position(|w| w == b"\x06system").unwrap() + 7;
        e[at] |= 2;
        let tail = e.len() - 1; // the removed count, 0
        e.insert(tail, 0);
        let err = Manifest::decode(&e).unwrap_err().to_string();
        assert!(err.contains("leaving it out"), "{err}");
    }
}
