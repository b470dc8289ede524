//! The written images' hashes, taken while the images are being written.
//!
//! Each image is cut into chunks of [`CHUNK_BLOCKS`] blocks; a chunk is
//! final once every operation that writes into it has finished. Workers
//! hash the finished chunks in order between operations (one worker per
//! image at a time, the others go on with operations), reading them back
//! from the staged file: the hash covers what the file holds, as a hash
//! taken after the last write would, but most of it is done by the time
//! the last operation ends instead of after it.

use crate::exec::mismatch;
use crate::stage::Output;
use crate::{ApplyError, Hashed};
use romdelta_format::{Digest, Manifest, PartitionUpdate, BLOCK_SIZE};
use romdelta_rom::RunsHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, TryLockError};

/// Blocks per chunk (4 MiB).
pub(crate) const CHUNK_BLOCKS: u64 = 1024;
const CHUNK_BYTES: u64 = CHUNK_BLOCKS * BLOCK_SIZE;

/// The hashes of every staged image of a plan, taken as they are finished.
pub(crate) struct WrittenHashes<'a> {
    parts: Vec<PartHash<'a>>,
}

struct PartHash<'a> {
    part: &'a PartitionUpdate,
    output: &'a Output,
    /// Per chunk: writes into it by operations that have not finished.
    waiting: Vec<AtomicU64>,
    hasher: Mutex<RunsHasher>,
}

/// The chunks the operation's destination extents touch, once per extent
/// and chunk (the same sequence counts and releases them).
fn chunks_of<'o>(
    op: &'o romdelta_format::Operation,
    chunks: usize,
) -> impl Iterator<Item = usize> + 'o {
    op.dst_extents.iter().flat_map(move |e| {
        let first = (e.start_block / CHUNK_BLOCKS) as usize;
        let last = (e.start_block.saturating_add(e.num_blocks.max(1) - 1) / CHUNK_BLOCKS) as usize;
        first.min(chunks)..last.saturating_add(1).min(chunks)
    })
}

impl<'a> WrittenHashes<'a> {
    /// Hashers for the images of `m` staged in `outputs`. `finished(k)`
    /// says whether operation `k` (in manifest order) was finished by an
    /// earlier run: its writes are already in the file.
    pub(crate) fn new(
        m: &'a Manifest,
        outputs: &'a [Output],
        finished: impl Fn(u64) -> bool,
    ) -> Self {
        let mut k = 0u64;
        let parts = m
            .partitions
            .iter()
            .zip(outputs)
            .map(|(part, output)| {
                let chunks = part.new.size.div_ceil(CHUNK_BYTES) as usize;
                let mut waiting: Vec<AtomicU64> = (0..chunks).map(|_| AtomicU64::new(0)).collect();
                for op in &part.operations {
                    if !finished(k) {
                        for c in chunks_of(op, chunks) {
                            *waiting[c].get_mut() += 1;
                        }
                    }
                    k += 1;
                }
                PartHash {
                    part,
                    output,
                    waiting,
                    hasher: Mutex::new(RunsHasher::new()),
                }
            })
            .collect();
        WrittenHashes { parts }
    }

    /// Notes that operation `oi` of partition `pi` has written everything.
    pub(crate) fn op_done(&self, pi: usize, oi: usize) {
        let p = &self.parts[pi];
        for c in chunks_of(&p.part.operations[oi], p.waiting.len()) {
            p.waiting[c].fetch_sub(1, Ordering::Release);
        }
    }

    /// Hashes partition `pi`'s finished chunks that follow what is hashed,
    /// unless another worker is at it.
    pub(crate) fn advance(&self, pi: usize) -> Result<(), ApplyError> {
        let p = &self.parts[pi];
        let mut h = match p.hasher.try_lock() {
            Ok(h) => h,
            Err(TryLockError::WouldBlock) => return Ok(()),
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
        };
        let first = (h.position() / CHUNK_BYTES) as usize;
        let ready = p.waiting[first.min(p.waiting.len())..]
            .iter()
            .take_while(|w| w.load(Ordering::Acquire) == 0)
            .count();
        let end = ((first + ready) as u64 * CHUNK_BYTES).min(p.part.new.size);
        hash_written(p.output, &mut h, end)
    }

    /// Hashes the rest of partition `pi` (every operation has finished) and
    /// checks the whole against the manifest.
    pub(crate) fn finish(&self, pi: usize) -> Result<(), ApplyError> {
        let p = &self.parts[pi];
        let mut h = p.hasher.lock().unwrap_or_else(|e| e.into_inner());
        hash_written(p.output, &mut h, p.part.new.size)?;
        check_written(p.part, std::mem::take(&mut *h).finish())
    }
}

/// Adds `output`'s bytes from the hasher's position up to `end` to `h`.
/// Holes (ZERO ranges left unwritten in a fresh image) are hashed as the
/// zeros they read as, without reading them back.
pub(crate) fn hash_written(
    output: &Output,
    h: &mut RunsHasher,
    end: u64,
) -> Result<(), ApplyError> {
    let (file, path) = (&output.file, &output.path);
    if end <= h.position() {
        return Ok(());
    }
    let runs = file
        .data_runs(h.position(), end)
        .map_err(ApplyError::io(path))?;
    h.hash_to(end, &runs, |b, off| file.read_at(b, off))
        .map_err(ApplyError::io(path))
}

/// Checks that `actual`, the hash of a whole written image, is `part`'s
/// new image hash.
pub(crate) fn check_written(part: &PartitionUpdate, actual: Digest) -> Result<(), ApplyError> {
    if actual != part.new.sha256 {
        return Err(mismatch(
            Hashed::TargetImage,
            part,
            None,
            part.new.sha256,
            actual,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use romdelta_format::{Extent, OpKind, Operation};

    fn op(extents: &[(u64, u64)]) -> Operation {
        Operation {
            kind: OpKind::Zero,
            src_extents: Vec::new(),
            dst_extents: extents.iter().map(|&(s, n)| Extent::new(s, n)).collect(),
            data_offset: 0,
            data_length: 0,
            data_sha256: [0; 32],
            src_sha256: [0; 32],
        }
    }

    #[test]
    fn an_operation_holds_back_every_chunk_it_writes_into() {
        let c = CHUNK_BLOCKS;
        let chunks = |o: &Operation, n| chunks_of(o, n).collect::<Vec<_>>();
        // Inside one chunk, up to its last block, and across two.
        assert_eq!(chunks(&op(&[(0, 1)]), 8), [0]);
        assert_eq!(chunks(&op(&[(0, c)]), 8), [0]);
        assert_eq!(chunks(&op(&[(c - 1, 2)]), 8), [0, 1]);
        // Several extents: once per extent and chunk, in their order.
        assert_eq!(chunks(&op(&[(5 * c, 1), (c + 3, 2 * c)]), 8), [5, 1, 2, 3]);
        // Nothing past the image's last chunk (validated manifests have no
        // such extents; the count stays in bounds all the same).
        assert_eq!(chunks(&op(&[(7 * c, 3 * c)]), 8), [7]);
        assert!(chunks(&op(&[(u64::MAX - 1, 1)]), 8).is_empty());
    }
}
