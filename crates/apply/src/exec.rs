//! Stages 3–4: run a validated plan, verify, and put the output in place.

use crate::frontier::{check_written, hash_written, WrittenHashes};
use crate::stage::{parent_of, sync_dir, Checkpointer, Output, Staged};
use crate::{ApplyError, ApplyReport, Hashed, Mismatch, PackageData, Plan};
use rayon::prelude::*;
use romdelta_format::{
    hex_digest, ops, Digest, Extent, FormatError, Manifest, OpKind, Operation, PartitionUpdate,
    BLOCK_SIZE,
};
use romdelta_rom::{Partition, Rom};
use romdelta_storage::{OpenMode, StorageFile};
use sha2::Digest as _;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Writes a byte stream into the destination extents of one operation,
/// dropping bytes past the end of the image (its last block may be partial).
struct ExtentWriter<'a> {
    file: &'a dyn StorageFile,
    path: &'a Path,
    extents: &'a [Extent],
    image_size: u64,
    index: usize,
    offset: u64,
    written: u64,
}

impl ExtentWriter<'_> {
    fn write(&mut self, mut buf: &[u8]) -> Result<(), ApplyError> {
        while !buf.is_empty() {
            let e = self.extents[self.index];
            let n = (e.byte_len() - self.offset).min(buf.len() as u64);
            let pos = e.byte_offset() + self.offset;
            if pos < self.image_size {
                let keep = n.min(self.image_size - pos) as usize;
                self.file
                    .write_at(&buf[..keep], pos)
                    .map_err(ApplyError::io(self.path))?;
                self.written += keep as u64;
            }
            buf = &buf[n as usize..];
            self.offset += n;
            if self.offset == e.byte_len() {
                self.index += 1;
                self.offset = 0;
            }
        }
        Ok(())
    }
}

pub(crate) fn mismatch(
    what: Hashed,
    part: &PartitionUpdate,
    op: Option<(usize, &Operation)>,
    expected: Digest,
    actual: Digest,
) -> ApplyError {
    let extents = match (what, op) {
        (Hashed::Source, Some((_, o))) => o.src_extents.clone(),
        (_, Some((_, o))) => o.dst_extents.clone(),
        _ => Vec::new(),
    };
    Mismatch {
        what,
        partition: part.name.clone(),
        op: op.map(|(i, o)| (i, o.kind)),
        extents,
        expected,
        actual,
    }
    .into()
}

/// Where an operation's source bytes come from: a source partition (A/B),
/// or the image being updated and its stage's stash (in place).
pub(crate) trait SourceBytes: Sync {
    /// Feeds the bytes of `extents`, in order, to `f` in pieces; bytes past
    /// the end of the source image are zeros.
    fn for_each_piece(
        &self,
        extents: &[Extent],
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<(), ApplyError>;
}

impl SourceBytes for Partition {
    fn for_each_piece(
        &self,
        extents: &[Extent],
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<(), ApplyError> {
        Ok(Partition::for_each_piece(self, extents, f)?)
    }
}

/// Hashes the source bytes an operation reads.
fn source_hash(src: &dyn SourceBytes, op: &Operation) -> Result<Digest, ApplyError> {
    let mut h = sha2::Sha256::new();
    src.for_each_piece(&op.src_extents, &mut |b| h.update(b))?;
    Ok(h.finalize().into())
}

/// Fails with a [`Mismatch`] naming operation `i` when `actual` is not `expected`.
fn expect_hash(
    what: Hashed,
    part: &PartitionUpdate,
    i: usize,
    op: &Operation,
    expected: Digest,
    actual: Digest,
) -> Result<(), ApplyError> {
    if actual != expected {
        return Err(mismatch(what, part, Some((i, op)), expected, actual));
    }
    Ok(())
}

fn check_source(
    src: &dyn SourceBytes,
    part: &PartitionUpdate,
    i: usize,
    op: &Operation,
) -> Result<(), ApplyError> {
    let actual = source_hash(src, op)?;
    expect_hash(Hashed::Source, part, i, op, op.src_sha256, actual)
}

pub(crate) fn check_data(
    data: &[u8],
    part: &PartitionUpdate,
    i: usize,
    op: &Operation,
) -> Result<(), ApplyError> {
    let actual = romdelta_format::sha256(data);
    expect_hash(Hashed::Data, part, i, op, op.data_sha256, actual)
}

/// `(partition index, operation index)` of every operation, in manifest order.
fn op_indices(m: &romdelta_format::Manifest) -> Vec<(usize, usize)> {
    m.partitions
        .iter()
        .enumerate()
        .flat_map(|(pi, p)| (0..p.operations.len()).map(move |oi| (pi, oi)))
        .collect()
}

/// Operations that may need more memory than the default bound (an xz
/// rebuild: hundreds of MiB) hold this exclusively, every other operation
/// holds it shared: such an operation runs alone, never beside others.
static ALONE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Whether operation `op` with `data` runs alone ([`ALONE`]): the stream
/// rebuilds, and cluster rebuilds whose inner patch is one.
pub(crate) fn runs_alone(op: &Operation, data: &[u8]) -> bool {
    match op.kind {
        OpKind::SourceXzRebuild
        | OpKind::SourceDeflateRebuild
        | OpKind::SourceLz4Rebuild
        | OpKind::SourceZstdRebuild => true,
        OpKind::SourceRecompress => {
            romdelta_format::recompress::inner_kind(data, op.dst_blocks() * BLOCK_SIZE)
                == Some(OpKind::SourceXzRebuild)
        }
        _ => false,
    }
}

/// Source copies up to this many bytes are read once into memory, hashed,
/// and written from there.
const COPY_BUFFER: u64 = 8 << 20;

/// Runs one operation: checks, decodes, writes. Returns bytes written.
/// A/B outputs start as zeros, so ZERO writes nothing there; in place
/// (`in_place`) it writes its zeros. Every byte written was read once and
/// is the byte hashed: a source copy of an A/B output is hashed as it is
/// written and fails before it counts as done (the staged output is
/// discarded); in place, where the image written is the only copy, a copy
/// is checked before any byte of it is written.
pub(crate) fn run_op(
    data: &[u8],
    part: &PartitionUpdate,
    i: usize,
    src: Option<&dyn SourceBytes>,
    out: &Output,
    in_place: bool,
    package_memory_mib: u64,
) -> Result<u64, ApplyError> {
    let op = &part.operations[i];
    // Held until the operation has written its bytes.
    let alone = runs_alone(op, data);
    let (_shared, _alone) = if alone {
        (None, Some(ALONE.write().unwrap_or_else(|e| e.into_inner())))
    } else {
        (Some(ALONE.read().unwrap_or_else(|e| e.into_inner())), None)
    };
    let mut w = ExtentWriter {
        file: &*out.file,
        path: &out.path,
        extents: &op.dst_extents,
        image_size: part.new.size,
        index: 0,
        offset: 0,
        written: 0,
    };
    match op.kind {
        // A staged image is created empty (all zeros): nothing to write.
        OpKind::Zero if !in_place => return Ok(0),
        OpKind::Zero => {
            let zeros = vec![0u8; (op.dst_blocks() * BLOCK_SIZE).min(1 << 20) as usize];
            let mut left = op.dst_blocks() * BLOCK_SIZE;
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                w.write(&zeros[..n])?;
                left -= n as u64;
            }
        }
        OpKind::SourceCopy => {
            let src = src.expect("plan: copies have a source");
            let bytes = op.src_blocks() * BLOCK_SIZE;
            if in_place && bytes > COPY_BUFFER {
                // Too large to hold: checked first, then copied.
                check_source(src, part, i, op)?;
                let mut res = Ok(());
                src.for_each_piece(&op.src_extents, &mut |b| {
                    if res.is_ok() {
                        res = w.write(b);
                    }
                })?;
                res?;
            } else if in_place {
                let mut buf = Vec::with_capacity(bytes as usize);
                src.for_each_piece(&op.src_extents, &mut |b| buf.extend_from_slice(b))?;
                let actual = romdelta_format::sha256(&buf);
                expect_hash(Hashed::Source, part, i, op, op.src_sha256, actual)?;
                w.write(&buf)?;
            } else {
                let mut h = sha2::Sha256::new();
                let mut res = Ok(());
                src.for_each_piece(&op.src_extents, &mut |b| {
                    h.update(b);
                    if res.is_ok() {
                        res = w.write(b);
                    }
                })?;
                res?;
                let actual: Digest = h.finalize().into();
                expect_hash(Hashed::Source, part, i, op, op.src_sha256, actual)?;
            }
        }
        OpKind::Replace
        | OpKind::SourceZstd
        | OpKind::SourceBsdiff
        | OpKind::SourceBsdiffSparse
        | OpKind::SourceRecompress
        | OpKind::SourceXzRebuild
        | OpKind::SourceFieldDelta
        | OpKind::SourceDeflateRebuild
        | OpKind::SourceBranchDelta
        | OpKind::SourceLz4Rebuild
        | OpKind::SourceZstdRebuild => {
            check_data(data, part, i, op)?;
            if alone {
                check_op_memory(data, part, i, op, package_memory_mib)?;
            }
            let mut source = Vec::new();
            if op.kind.reads_source() {
                let src = src.expect("plan: source reads have a source");
                source.reserve_exact((op.src_blocks() * BLOCK_SIZE) as usize);
                src.for_each_piece(&op.src_extents, &mut |b| source.extend_from_slice(b))?;
                let actual = romdelta_format::sha256(&source);
                expect_hash(Hashed::Source, part, i, op, op.src_sha256, actual)?;
            }
            let mut buf = vec![0u8; (op.dst_blocks() * BLOCK_SIZE) as usize];
            ops::decode(op.kind, data, &source, &mut buf).map_err(|source| ApplyError::Decode {
                partition: part.name.clone(),
                op: i,
                kind: op.kind,
                source,
            })?;
            w.write(&buf)?;
        }
    }
    Ok(w.written)
}

/// Refuses an xz, deflate or lz4 rebuild that needs more memory than its package declares
/// (`package_memory_mib`, the manifest's apply memory; the default bound
/// when it names none), before the operation allocates or writes anything:
/// the applier was only checked against the declared value.
fn check_op_memory(
    data: &[u8],
    part: &PartitionUpdate,
    i: usize,
    op: &Operation,
    package_memory_mib: u64,
) -> Result<(), ApplyError> {
    let (src_len, dst_len) = (op.src_blocks() * BLOCK_SIZE, op.dst_blocks() * BLOCK_SIZE);
    let decode_error = |source| ApplyError::Decode {
        partition: part.name.clone(),
        op: i,
        kind: op.kind,
        source,
    };
    let need = if op.kind == OpKind::SourceRecompress {
        use romdelta_format::recompress as r;
        let p = r::parse(data, src_len, dst_len).map_err(decode_error)?;
        r::apply_memory(&p, src_len, dst_len).map_err(decode_error)?
    } else if op.kind == OpKind::SourceDeflateRebuild {
        use romdelta_format::deflate_rebuild as d;
        let (header, _) = d::parse(data, src_len, dst_len).map_err(decode_error)?;
        d::apply_memory(&header, src_len, dst_len)
    } else if op.kind == OpKind::SourceZstdRebuild {
        use romdelta_format::zstd_rebuild as z;
        let (header, _) = z::parse(data, src_len, dst_len).map_err(decode_error)?;
        z::apply_memory(&header, src_len, dst_len)
    } else if op.kind == OpKind::SourceLz4Rebuild {
        use romdelta_format::lz4_rebuild as l;
        let (header, _) = l::parse(data, src_len, dst_len).map_err(decode_error)?;
        l::apply_memory(&header, src_len, dst_len)
    } else {
        use romdelta_format::xz_rebuild as x;
        let (header, _) = x::parse(data, src_len, dst_len).map_err(decode_error)?;
        x::apply_memory(&header, src_len, dst_len)
    }
    .div_ceil(1 << 20);
    let allowed = package_memory_mib.max(crate::DEFAULT_APPLY_MEMORY_MIB);
    if need > allowed {
        return Err(ApplyError::Refused(format!(
            "partition {}, operation {i}: {} needs {need} MiB of memory, more than the {allowed} MiB its package declares",
            part.name, op.kind
        )));
    }
    Ok(())
}

impl Plan<'_> {
    /// Runs the plan on a package whose data is in memory or in a file (see
    /// [`Plan::new`], [`Plan::for_file`]).
    /// `progress` is called with the bytes written so far.
    pub fn execute(&self, progress: &(dyn Fn(u64) + Sync)) -> Result<ApplyReport, ApplyError> {
        let data = self.data.ok_or_else(|| {
            ApplyError::Refused("this plan reads its data from a stream: use execute_stream".into())
        })?;
        let m = self.manifest;
        let staged = self.stage()?;
        let cp = Checkpointer::new(
            self.storage,
            &staged.outputs,
            &staged.staging.journal,
            staged.journal.clone(),
            self.checkpoint,
        )
        .in_background(rayon::current_num_threads() > 1);
        let outputs = &staged.outputs;
        let hashes = WrittenHashes::new(m, outputs, |k| cp.is_done(k));
        // (index in manifest order, partition, operation), in the order of
        // the first block each operation writes.
        let mut jobs: Vec<(u64, usize, usize)> = op_indices(m)
            .into_iter()
            .enumerate()
            .map(|(k, (pi, oi))| (k as u64, pi, oi))
            .collect();
        jobs.sort_by_key(|&(_, pi, oi)| {
            let first = m.partitions[pi].operations[oi]
                .dst_extents
                .iter()
                .map(|e| e.start_block)
                .min();
            (pi, first)
        });
        let written = AtomicU64::new(0);
        let next = AtomicUsize::new(0);
        let first_error = FirstError::default();
        let fail = |e: ApplyError| first_error.set(e);
        // Operations are taken front to back, one at a time by whichever
        // worker is free, so the images are finished roughly in order and
        // their hashes follow close behind; checkpoints sync on a thread of
        // their own meanwhile.
        let work = || {
            while !first_error.is_set() {
                let Some(&(k, pi, oi)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    break;
                };
                if cp.is_done(k) {
                    continue;
                }
                let p = &m.partitions[pi];
                let src = self.source_for(pi, oi);
                let ran = data
                    .of(p, oi)
                    .and_then(|op_data| {
                        run_op(
                            &op_data,
                            p,
                            oi,
                            src,
                            &outputs[pi],
                            false,
                            m.apply_memory_mib,
                        )
                    })
                    .and_then(|n| op_finished(&hashes, &cp, &written, progress, (k, pi, oi), n));
                if let Err(e) = ran {
                    fail(e);
                }
            }
        };
        std::thread::scope(|scope| {
            let _serving = cp.serve_in(scope);
            rayon::broadcast(|_| work());
        });
        if let Some(e) = cp.take_error() {
            fail(e);
        }
        if let Some(e) = first_error.take() {
            return Err(e);
        }
        drop(cp);
        sync_and_check(outputs, &hashes)?;
        drop(hashes);
        self.finish(staged, written.load(Ordering::Relaxed))
    }

    /// Runs the plan while reading the data section from `data`, which must
    /// be positioned at its first byte (see [`read_stream_prefix`]). Data is
    /// read once, in order; each operation runs as soon as its data has
    /// arrived, on as many workers as the current rayon pool has threads,
    /// with at most a few operations' data in memory at once.
    pub fn execute_stream(
        &self,
        data: &mut dyn Read,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<ApplyReport, ApplyError> {
        let m = self.manifest;
        let mut staged = self.stage()?;
        let cp = Checkpointer::new(
            self.storage,
            &staged.outputs,
            &staged.staging.journal,
            staged.journal.clone(),
            self.checkpoint,
        )
        .in_background(rayon::current_num_threads() > 1);
        let outputs = &staged.outputs;
        let hashes = WrittenHashes::new(m, outputs, |k| cp.is_done(k));
        let workers = rayon::current_num_threads().max(1);
        let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, usize, u64, Vec<u8>)>(workers);
        // Set when the stream stops early: the progress so far is kept.
        let cut = AtomicBool::new(false);
        let rx = Mutex::new(rx);
        let written = AtomicU64::new(0);
        let first_error = FirstError::default();
        let fail = |e: ApplyError| first_error.set(e);
        std::thread::scope(|scope| {
            let serving = cp.serve_in(scope);
            let mut pool = Vec::with_capacity(workers);
            for _ in 0..workers {
                pool.push(scope.spawn(|| loop {
                    let job = rx.lock().expect("not poisoned").recv();
                    let Ok((pi, oi, k, op_data)) = job else { break };
                    if first_error.is_set() {
                        continue;
                    }
                    let p = &m.partitions[pi];
                    let src = self.source_for(pi, oi);
                    let ran = run_op(
                        &op_data,
                        p,
                        oi,
                        src,
                        &outputs[pi],
                        false,
                        m.apply_memory_mib,
                    )
                    .and_then(|n| op_finished(&hashes, &cp, &written, progress, (k, pi, oi), n));
                    if let Err(e) = ran {
                        fail(e);
                    }
                }));
            }
            // Operations without data first: they run while data arrives.
            // (partition, operation, index in manifest order, operation).
            let indexed = || {
                m.partitions
                    .iter()
                    .enumerate()
                    .flat_map(|(pi, p)| {
                        p.operations
                            .iter()
                            .enumerate()
                            .map(move |(oi, op)| (pi, oi, op))
                    })
                    .enumerate()
                    .map(|(k, (pi, oi, op))| (pi, oi, k as u64, op))
            };
            for (pi, oi, k, _) in indexed().filter(|(_, _, _, op)| !op.kind.has_data()) {
                if cp.is_done(k) {
                    continue;
                }
                if first_error.is_set() || tx.send((pi, oi, k, Vec::new())).is_err() {
                    break;
                }
            }
            // Then the data section, in manifest order (the format requires it).
            for (pi, oi, k, op) in indexed().filter(|(_, _, _, op)| op.kind.has_data()) {
                if first_error.is_set() {
                    break;
                }
                match read_exactly(data, op.data_length, "operation data") {
                    // Done by an earlier run: its data is read past.
                    Ok(_) if cp.is_done(k) => {}
                    Ok(buf) => {
                        if tx.send((pi, oi, k, buf)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        cut.store(true, Ordering::SeqCst);
                        fail(match e {
                            ApplyError::Format(f) => ApplyError::Refused(format!(
                                "partition {}, operation {oi}: the package stream ended early ({f}); the operations before it are kept: run the same command again to resume",
                                m.partitions[pi].name
                            )),
                            other => other,
                        });
                        break;
                    }
                }
            }
            if !first_error.is_set() {
                let mut one = [0u8; 1];
                match read_full(data, &mut one) {
                    Ok(0) => {}
                    Ok(_) => fail(ApplyError::Format(FormatError::Trailing {
                        what: "package stream",
                        extra: 1,
                    })),
                    Err(e) => fail(e),
                }
            }
            drop(tx);
            for worker in pool {
                if let Err(panic) = worker.join() {
                    std::panic::resume_unwind(panic);
                }
            }
            drop(serving);
        });
        if let Some(e) = cp.take_error() {
            fail(e);
        }
        if let Some(e) = first_error.take() {
            // A stream that stopped (a cut download) keeps what was written
            // for the next run, if it can be made durable; any other failure
            // removes the staged output.
            if cut.load(Ordering::SeqCst) && cp.checkpoint().is_ok() {
                staged.staging.keep();
            }
            return Err(e);
        }
        drop(cp);
        sync_and_check(outputs, &hashes)?;
        drop(hashes);
        self.finish(staged, written.load(Ordering::Relaxed))
    }

    /// Puts the verified staged output into place (as a sparse image when
    /// asked).
    fn finish(&self, staged: Staged<'_>, bytes_written: u64) -> Result<ApplyReport, ApplyError> {
        let fs = self.storage;
        let m = self.manifest;
        let out = &self.output.path;
        let parent = parent_of(out);
        let Staged {
            mut staging,
            outputs,
            resumed,
            ..
        } = staged;
        // Sparse forms are written beside the staged images, which stay as
        // they are under the journal until every sparse form is written,
        // synced and checked: a run killed meanwhile resumes (its journal
        // lists every operation) and converts again.
        let mut converted = Vec::new();
        if self.output.sparse {
            for (o, p) in outputs.iter().zip(&m.partitions) {
                if p.new.size % BLOCK_SIZE == 0 {
                    converted.push((write_sparse_form(fs, o, p)?, o.path.clone()));
                }
            }
        }
        let report = ApplyReport {
            partitions: m
                .partitions
                .iter()
                .zip(&outputs)
                .map(|(p, o)| crate::WrittenPartition {
                    name: o.name.clone(),
                    size: p.new.size,
                    sha256: hex_digest(&p.new.sha256),
                })
                .collect(),
            output: out.clone(),
            bytes_written,
            resumed_ops: resumed,
        };
        drop(outputs);
        // The journal goes first: a crash after this point finds staged
        // output without a journal and starts over, never trusting it.
        match fs.remove_file(&staging.journal) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ApplyError::io(&staging.journal)(e)),
        }
        sync_dir(fs, &parent)?;
        // From here on a crash finds no journal and starts over.
        for (sparse, raw) in &converted {
            fs.rename(sparse, raw).map_err(ApplyError::io(raw))?;
        }
        if staging.dir {
            sync_dir(fs, &staging.staged)?;
            if fs.entry(out).map_err(ApplyError::io(out))?.is_some() {
                // Checked empty by the plan.
                fs.remove_dir(out).map_err(ApplyError::io(out))?;
            }
            fs.set_mode(&staging.staged, 0o755)
                .map_err(ApplyError::io(&staging.staged))?;
        }
        fs.rename(&staging.staged, out)
            .map_err(ApplyError::io(out))?;
        staging.keep();
        sync_dir(fs, &parent)?;
        Ok(report)
    }
}

/// The first error of a run whose workers stop once any of them fails.
#[derive(Default)]
struct FirstError {
    failed: AtomicBool,
    error: Mutex<Option<ApplyError>>,
}

impl FirstError {
    /// Records `e` unless an error came first; the workers stop.
    fn set(&self, e: ApplyError) {
        self.failed.store(true, Ordering::SeqCst);
        self.error.lock().expect("not poisoned").get_or_insert(e);
    }

    /// Whether a worker has failed.
    fn is_set(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// The first error, once the workers have stopped.
    fn take(self) -> Option<ApplyError> {
        self.error.into_inner().expect("not poisoned")
    }
}

/// What follows operation `oi` of partition `pi` (`k` in manifest order)
/// once it has written its `n` bytes: the hasher may take its chunks,
/// progress is reported, the checkpointer records it, and the finished
/// chunks are hashed.
fn op_finished(
    hashes: &WrittenHashes<'_>,
    cp: &Checkpointer<'_>,
    written: &AtomicU64,
    progress: &(dyn Fn(u64) + Sync),
    (k, pi, oi): (u64, usize, usize),
    n: u64,
) -> Result<(), ApplyError> {
    hashes.op_done(pi, oi);
    progress(written.fetch_add(n, Ordering::Relaxed) + n);
    cp.done(k, n)?;
    hashes.advance(pi)
}

/// Syncs every staged image and checks each against its new image's hash
/// (`hashes` has hashed most of them already, while they were written).
fn sync_and_check(outputs: &[Output], hashes: &WrittenHashes<'_>) -> Result<(), ApplyError> {
    outputs.par_iter().enumerate().try_for_each(|(pi, o)| {
        o.file.sync().map_err(ApplyError::io(&o.path))?;
        hashes.finish(pi)
    })
}

/// Syncs the written image `o` and checks it is partition `p`'s new image.
pub(crate) fn sync_and_verify(o: &Output, p: &PartitionUpdate) -> Result<(), ApplyError> {
    o.file.sync().map_err(ApplyError::io(&o.path))?;
    let mut h = romdelta_rom::RunsHasher::new();
    hash_written(o, &mut h, p.new.size)?;
    check_written(p, h.finish())
}

/// Where the sparse form of the staged image at `path` is written before
/// it replaces it.
pub(crate) fn sparse_form_path(path: &Path) -> std::path::PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".sparse");
    tmp.into()
}

/// Writes the Android sparse form of the verified staged image `o` beside
/// it (synced), reads it back and checks that it expands to partition
/// `p`'s new image. Returns its path.
fn write_sparse_form(
    fs: &dyn romdelta_storage::Storage,
    o: &Output,
    p: &PartitionUpdate,
) -> Result<std::path::PathBuf, ApplyError> {
    let tmp = sparse_form_path(&o.path);
    crate::stage::remove_own_file(fs, &tmp, crate::stage::SPARSE_FORM)?;
    let write = || -> std::io::Result<std::sync::Arc<dyn StorageFile>> {
        let f = fs.open(&tmp, OpenMode::CreateNew)?;
        let mut w =
            std::io::BufWriter::with_capacity(1 << 20, romdelta_storage::FileWriter::new(&*f, 0));
        romdelta_format::sparse::write_sparse(
            p.new.size,
            BLOCK_SIZE as u32,
            |off, buf| o.file.read_at(buf, off),
            &mut w,
        )?;
        std::io::Write::flush(&mut w)?;
        drop(w);
        f.sync()?;
        Ok(f)
    };
    let f = write().map_err(ApplyError::io(&tmp))?;
    // What was written expands to the verified image.
    let actual = sparse_sha256(&*f).map_err(ApplyError::io(&tmp))?;
    if actual != p.new.sha256 {
        return Err(mismatch(Hashed::TargetImage, p, None, p.new.sha256, actual));
    }
    Ok(tmp)
}

/// SHA-256 of the image the sparse file `f` expands to.
fn sparse_sha256(f: &dyn StorageFile) -> std::io::Result<Digest> {
    let (header, chunks) = romdelta_format::sparse::read_table(f.len()?, |off, b| {
        f.read_at(b, off)
    })
    .map_err(|e| match e {
        romdelta_format::sparse::TableError::Read(e) => e,
        romdelta_format::sparse::TableError::Format(e) => {
            std::io::Error::other(format!("sparse form: {e}"))
        }
    })?;
    let mut h = sha2::Sha256::new();
    let mut piece = vec![0u8; 1 << 20];
    let size = header.image_len();
    let mut pos = 0;
    while pos < size {
        let n = (size - pos).min(piece.len() as u64) as usize;
        romdelta_format::sparse::read_expanded(&chunks, pos, &mut piece[..n], |off, b| {
            f.read_at(b, off)
        })?;
        h.update(&piece[..n]);
        pos += n as u64;
    }
    Ok(h.finalize().into())
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
pub(crate) fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> Result<usize, ApplyError> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ApplyError::io("<package stream>")(e)),
        }
    }
    Ok(n)
}

/// Reads exactly `len` bytes. The buffer grows only as bytes arrive, so a
/// length field cannot make it allocate more than the stream really holds.
fn read_exactly(r: &mut dyn Read, len: u64, what: &'static str) -> Result<Vec<u8>, ApplyError> {
    const STEP: usize = 1 << 20;
    let mut buf = Vec::new();
    while (buf.len() as u64) < len {
        let want = ((len - buf.len() as u64) as usize).min(STEP);
        let start = buf.len();
        buf.resize(start + want, 0);
        let got = read_full(r, &mut buf[start..])?;
        if got < want {
            return Err(ApplyError::Format(FormatError::Truncated {
                what,
                need: len - (start + got) as u64,
                have: 0,
            }));
        }
    }
    Ok(buf)
}

/// Reads the sections of a package that precede its data (header,
/// manifest bytes, signatures) from a stream into memory of its own, and
/// checks the header's checksum over them, leaving the stream at the first
/// byte of the data section. The manifest is not decoded: check the
/// signatures first, then call [`romdelta_format::Prefix::manifest`].
pub fn read_prefix(r: &mut dyn Read) -> Result<romdelta_format::Prefix, ApplyError> {
    let head = read_exactly(r, romdelta_format::HEADER_LEN, "header")?;
    let header = romdelta_format::Header::decode(&head)?;
    let manifest_bytes = read_exactly(r, header.manifest_len, "manifest")?;
    let sig_bytes = read_exactly(r, header.signatures_len, "signatures")?;
    Ok(romdelta_format::Prefix::new(
        header,
        manifest_bytes,
        &sig_bytes,
    )?)
}

/// What [`verify`] checked.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    /// Operations whose data hash was checked.
    pub data_hashes: u64,
    /// Operations whose source hash was checked.
    pub source_hashes: u64,
    /// Source images whose whole hash was checked.
    pub source_images: u64,
}

/// Checks every data hash of the package of manifest `m` and data `data`
/// and, given the source build, every source hash and every source image
/// hash, without writing anything.
pub fn verify(
    m: &Manifest,
    data: PackageData<'_>,
    source: Option<&Rom>,
) -> Result<VerifyReport, ApplyError> {
    let mut report = VerifyReport::default();
    let jobs = op_indices(m);
    jobs.par_iter().try_for_each(|&(pi, oi)| {
        let (p, op) = (&m.partitions[pi], &m.partitions[pi].operations[oi]);
        if op.kind.has_data() {
            check_data(&data.of(p, oi)?, p, oi, op)?;
        }
        Ok::<(), ApplyError>(())
    })?;
    report.data_hashes = jobs
        .iter()
        .filter(|(pi, oi)| m.partitions[*pi].operations[*oi].kind.has_data())
        .count() as u64;
    if let Some(source) = source {
        let sources = crate::match_sources(m, Some(source))?;
        let others = crate::match_other_sources(m, Some(source))?;
        jobs.par_iter().try_for_each(|&(pi, oi)| {
            let (p, op) = (&m.partitions[pi], &m.partitions[pi].operations[oi]);
            let src = match p.source_of(oi) {
                Some(name) => crate::crosspart::find(&others, name),
                None => sources[pi],
            };
            if let (Some(src), true) = (src, op.kind.reads_source()) {
                check_source(src as &dyn SourceBytes, p, oi, op)?;
            }
            Ok::<(), ApplyError>(())
        })?;
        report.source_hashes = jobs
            .iter()
            .filter(|(pi, oi)| m.partitions[*pi].operations[*oi].kind.reads_source())
            .count() as u64;
        m.partitions
            .par_iter()
            .zip(&sources)
            .try_for_each(|(p, s)| {
                if let (Some(src), Some(old)) = (s, p.old) {
                    let actual = src.sha256()?;
                    if actual != old.sha256 {
                        return Err(mismatch(Hashed::SourceImage, p, None, old.sha256, actual));
                    }
                }
                Ok(())
            })?;
        report.source_images = sources.iter().filter(|s| s.is_some()).count() as u64;
    }
    Ok(report)
}
