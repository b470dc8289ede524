//! New data encoded against new data: the REPLACE regions of a partition
//! (bytes no source block helps with) compressed in one context, as one
//! REPLACE operation that writes all their extents, where that measures
//! smaller than each on its own.
//!
//! A file added twice, new files built from one another, a new partition
//! whose halves repeat: each region alone is new, but the second repeats
//! the first. Regions are held back as they are encoded, in groups of at
//! most [`GROUP_BLOCKS`] (what the one operation's buffer takes at apply),
//! and a group is written as one operation when a trial of the joined
//! bytes is clearly smaller than the regions' own trials and the final
//! encoding is smaller than the regions' own data; else each region is
//! written as it was encoded. Not in place, where the stage planner
//! orders regions one by one.

use crate::encode::{self, EncodeParams, Region};
use crate::Output;
use romdelta_format::{ops, Extent, OpKind, BLOCK_SIZE};
use romdelta_rom::Partition;
use std::io::Write;

/// Most blocks one joined REPLACE writes (4 MiB: its buffer at apply).
pub const GROUP_BLOCKS: u64 = 1024;
/// How much smaller (percent) the joined trial must be than the regions'
/// own trials for the final encoding to be tried.
const MIN_GAIN_PERCENT: u64 = 3;

/// REPLACE regions held back, in the order they were encoded.
#[derive(Default)]
pub(crate) struct Group {
    /// Each region, its final data and the length of its trial.
    held: Vec<(Region, Vec<u8>, u64)>,
    blocks: u64,
}

impl Group {
    /// Holds region `r`, encoded as REPLACE `data` (its trial `trial`
    /// bytes), first writing the group when `r` would not fit in it.
    pub(crate) fn add<W: Write>(
        &mut self,
        r: Region,
        data: Vec<u8>,
        trial: u64,
        dst: &Partition,
        p: &EncodeParams,
        out: &mut Output<'_, W>,
    ) -> std::io::Result<()> {
        if self.blocks + r.len > GROUP_BLOCKS {
            self.flush(dst, p, out)?;
        }
        self.blocks += r.len;
        self.held.push((r, data, trial));
        Ok(())
    }

    /// Writes the regions held: as one operation when that is smaller,
    /// else each as it was encoded.
    pub(crate) fn flush<W: Write>(
        &mut self,
        dst: &Partition,
        p: &EncodeParams,
        out: &mut Output<'_, W>,
    ) -> std::io::Result<()> {
        let held = std::mem::take(&mut self.held);
        self.blocks = 0;
        if let Some(data) = joined(&held, dst, p) {
            let extents: Vec<Extent> = held
                .iter()
                .map(|(r, _, _)| Extent::new(r.start, r.len))
                .collect();
            out.push(OpKind::Replace, Vec::new(), extents, &data, [0; 32])?;
            let blocks: u64 = held.iter().map(|(r, _, _)| r.len).sum();
            (out.progress)((blocks * BLOCK_SIZE).min(dst.size()));
            return Ok(());
        }
        for (r, data, _) in held {
            let extents = vec![Extent::new(r.start, r.len)];
            out.push(OpKind::Replace, Vec::new(), extents, &data, [0; 32])?;
            (out.progress)((r.len * BLOCK_SIZE).min(dst.size()));
        }
        Ok(())
    }
}

/// The REPLACE data of `held`'s regions joined, when it beats theirs.
fn joined(held: &[(Region, Vec<u8>, u64)], dst: &Partition, p: &EncodeParams) -> Option<Vec<u8>> {
    if held.len() < 2 {
        return None;
    }
    let mut bytes = Vec::new();
    for (r, _, _) in held {
        bytes.extend_from_slice(&encode::target_bytes(dst, *r));
    }
    let own_trials: u64 = held.iter().map(|(_, _, t)| t).sum();
    let trial_level = p.trial_level.min(p.level);
    let trial = ops::encode_replace(&bytes, trial_level);
    if trial.len() as u64 * 100 >= own_trials * (100 - MIN_GAIN_PERCENT) {
        return None;
    }
    let data = if trial_level == p.level {
        trial
    } else {
        ops::encode_replace(&bytes, p.level)
    };
    let own: usize = held.iter().map(|(_, d, _)| d.len()).sum();
    (data.len() < own).then_some(data)
}
