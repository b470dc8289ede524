//! Applying Android `payload.bin` files (parsed by
//! `romdelta_android::payload`): extraction of full payloads, application of
//! incremental ones to old images.
//!
//! As for romdelta packages, everything that can be checked before writing
//! is checked first ([`PayloadJob::new`]): that every operation of the
//! selected partitions is of a kind this reader applies, that the old
//! images exist with the sizes the payload expects, that no output would be
//! overwritten. Then [`PayloadJob::run`] runs every operation of every
//! selected partition in parallel on the current rayon pool, with
//! positioned writes into temporary files beside the outputs; each
//! operation checks its data hash before decoding and its source hash
//! before use, and each old image with a recorded hash is hashed whole
//! first. Every image is synced and hashed again from disk, and only when
//! all of them match their `new_partition_info` are they renamed to
//! `NAME.img`.

use memmap2::Mmap;
use rayon::prelude::*;
use romdelta_android::payload::{
    ops, Payload, PayloadOp, PayloadOpKind, PayloadPartition, Unsupported,
};
use romdelta_android::signature::{self, SignatureError, TrustedKey};
use romdelta_format::{hex_digest, Digest, Extent, FormatError, BLOCK_SIZE};
use romdelta_rom::{Partition, Rom};
use sha2::Digest as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a payload was not read or applied.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The payload is malformed.
    #[error("invalid payload: {0}")]
    Format(#[from] FormatError),
    /// The payload holds something this reader does not apply.
    #[error("not supported: {0}")]
    Unsupported(#[from] Unsupported),
    /// The payload does not fit the given source or output.
    #[error("refused: {0}")]
    Refused(String),
    /// The command was asked for something the payload does not have.
    #[error("{0}")]
    Usage(String),
    /// A hash did not match.
    #[error("{0}")]
    Mismatch(Box<PayloadMismatch>),
    /// A signature is missing or does not verify with the trusted keys,
    /// or a key could not be read.
    #[error("signature check failed: {0}")]
    Signature(#[from] SignatureError),
    /// Operation data that passed its hash check could not be decoded.
    #[error("partition {partition}, operation {op} ({kind}): {source}")]
    Decode {
        /// Partition name.
        partition: String,
        /// Operation index.
        op: usize,
        /// Its kind.
        kind: PayloadOpKind,
        /// What the decoder found.
        source: FormatError,
    },
    /// An I/O error on a path.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// A hash mismatch, with where it happened.
#[derive(Debug, Clone)]
pub struct PayloadMismatch {
    /// What was hashed: `data`, `source`, `source image` or `written image`.
    pub what: &'static str,
    /// Partition name.
    pub partition: String,
    /// The operation, for per-operation hashes.
    pub op: Option<(usize, PayloadOpKind)>,
    /// The blocks or bytes involved, described.
    pub blocks: Option<String>,
    /// The hash the payload records.
    pub expected: Digest,
    /// The hash found.
    pub actual: Digest,
}

impl std::fmt::Display for PayloadMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "partition {}", self.partition)?;
        if let Some((i, k)) = self.op {
            write!(f, ", operation {i} ({k})")?;
        }
        write!(f, ": {} hash mismatch", self.what)?;
        if let Some(b) = &self.blocks {
            write!(f, "; {b}")?;
        }
        write!(
            f,
            "; expected sha256 {}, found {}",
            hex_digest(&self.expected),
            hex_digest(&self.actual)
        )
    }
}

impl From<PayloadMismatch> for PayloadError {
    fn from(m: PayloadMismatch) -> Self {
        PayloadError::Mismatch(Box::new(m))
    }
}

impl PayloadError {
    /// The process exit code: 2 for I/O and usage errors, 1 for a payload
    /// that is refused or does not verify.
    pub fn exit_code(&self) -> i32 {
        match self {
            PayloadError::Io { .. } | PayloadError::Usage(_) => 2,
            PayloadError::Signature(SignatureError::Key { .. }) => 2,
            _ => 1,
        }
    }

    fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> PayloadError {
        let path = path.into();
        move |source| PayloadError::Io { path, source }
    }
}

impl From<romdelta_rom::RomError> for PayloadError {
    fn from(e: romdelta_rom::RomError) -> Self {
        match e {
            romdelta_rom::RomError::Io { path, source } => PayloadError::Io { path, source },
            romdelta_rom::RomError::Invalid { path, reason } => PayloadError::Io {
                path,
                source: std::io::Error::other(reason),
            },
        }
    }
}

/// A payload file, mapped: a `payload.bin`, or the `payload.bin` member of
/// an OTA zip (stored uncompressed, as OTA zips store it), mapped in place.
pub struct PayloadFile {
    path: PathBuf,
    member: Option<String>,
    map: Option<Mmap>,
    start: usize,
    len: usize,
    /// The zip's `payload_properties.txt`, if any.
    properties: Option<Vec<u8>>,
    /// Where it came from, for a partial local copy of a remote payload
    /// (only the metadata, the signatures and the partitions asked for
    /// were fetched).
    remote: Option<String>,
}

/// The name of the payload's properties file in an OTA zip.
pub const OTA_PROPERTIES: &str = "payload_properties.txt";

/// The name of the payload in an OTA zip.
pub const OTA_MEMBER: &str = "payload.bin";

impl PayloadFile {
    /// Opens `path`: a payload, or an OTA zip holding `payload.bin`.
    pub fn open(path: &Path) -> Result<Self, PayloadError> {
        let file = std::fs::File::open(path).map_err(PayloadError::io(path))?;
        let len = file.metadata().map_err(PayloadError::io(path))?.len();
        // SAFETY: mapped read-only; a payload is not modified while it is read.
        let map = if len == 0 {
            None
        } else {
            Some(unsafe { Mmap::map(&file) }.map_err(PayloadError::io(path))?)
        };
        let bytes = map.as_deref().unwrap_or(&[]);
        let mut pf = PayloadFile {
            path: path.to_path_buf(),
            member: None,
            start: 0,
            len: bytes.len(),
            map: None,
            properties: None,
            remote: None,
        };
        if bytes.starts_with(b"PK\x03\x04") {
            let (start, len, properties) = zip_member(&file, path)?;
            pf.member = Some(OTA_MEMBER.to_string());
            pf.start = start;
            pf.len = len;
            pf.properties = properties;
        }
        pf.map = map;
        Ok(pf)
    }

    /// Opens a partial local copy (`path`) of the remote payload at `url`:
    /// the whole-file hash of `payload_properties.txt` and the payload
    /// signature, which cover bytes that were not fetched, are not checked;
    /// the metadata signature, which covers every operation's data hash, is.
    pub fn open_partial(path: &Path, url: &str) -> Result<Self, PayloadError> {
        let mut f = Self::open(path)?;
        f.remote = Some(url.to_string());
        Ok(f)
    }

    /// Lets the kernel drop the mapped pages of the payload's bytes
    /// `[offset, offset + len)`; they are read from the file again if
    /// touched. What keeps a run's resident memory bounded whatever the
    /// payload's size.
    pub fn release(&self, offset: u64, len: u64) {
        let Some(m) = &self.map else { return };
        let start = (self.start as u64)
            .saturating_add(offset)
            .min(m.len() as u64);
        let len = len.min(m.len() as u64 - start);
        if len == 0 {
            return;
        }
        // SAFETY: the map is a read-only shared mapping of a file that is
        // not modified while it is read: dropped pages come back with the
        // same bytes.
        let _ = unsafe {
            m.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                start as usize,
                len as usize,
            )
        };
    }

    /// The payload's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map
            .as_deref()
            .map(|m| &m[self.start..self.start + self.len])
            .unwrap_or(&[])
    }

    /// Where the payload was read from: the path, and `:payload.bin` for a zip.
    pub fn describe(&self) -> String {
        let origin = self
            .remote
            .clone()
            .unwrap_or_else(|| self.path.display().to_string());
        match &self.member {
            Some(m) => format!("{origin}:{m}"),
            None => origin,
        }
    }

    /// Checks the payload against the OTA zip's `payload_properties.txt`:
    /// its size and SHA-256, and those of its metadata (header and
    /// manifest), as far as the file records them. Returns whether there
    /// was such a file (a payload that is not in a zip has none).
    pub fn check_properties(&self) -> Result<bool, PayloadError> {
        use romdelta_android::payload::properties;
        let Some(text) = &self.properties else {
            return Ok(false);
        };
        let bad = |e: FormatError| {
            PayloadError::Refused(format!("{}: {OTA_PROPERTIES}: {e}", self.path.display()))
        };
        let p = properties::parse(text).map_err(bad)?;
        let bytes = self.bytes();
        let wrong = |what: &str, recorded: String, found: String| {
            PayloadError::Refused(format!(
                "{}: {OTA_PROPERTIES} records {what} {recorded}, the payload has {found}",
                self.describe()
            ))
        };
        if let Some(size) = p.file_size.filter(|&s| s != bytes.len() as u64) {
            return Err(wrong(
                "FILE_SIZE",
                size.to_string(),
                bytes.len().to_string(),
            ));
        }
        if let Some(size) = p.metadata_size {
            let header = romdelta_android::payload::PayloadHeader::decode(bytes)?;
            let actual = header.metadata_len();
            if size != actual {
                return Err(wrong("METADATA_SIZE", size.to_string(), actual.to_string()));
            }
            if let Some(h) = p.metadata_hash {
                let meta = bytes.get(..actual as usize).ok_or(FormatError::Truncated {
                    what: "payload manifest",
                    need: actual - bytes.len() as u64,
                    have: bytes.len() as u64,
                })?;
                let found = romdelta_format::sha256(meta);
                if found != h {
                    return Err(wrong(
                        "METADATA_HASH sha256",
                        hex_digest(&h),
                        hex_digest(&found),
                    ));
                }
            }
        }
        if let Some(h) = p.file_hash.filter(|_| self.remote.is_none()) {
            let found = romdelta_rom::sha256_read(bytes.len() as u64, |buf, off| {
                buf.copy_from_slice(&bytes[off as usize..off as usize + buf.len()]);
                self.release(off, buf.len() as u64);
                Ok(())
            })
            .map_err(PayloadError::io(&self.path))?;
            if found != h {
                return Err(wrong(
                    "FILE_HASH sha256",
                    hex_digest(&h),
                    hex_digest(&found),
                ));
            }
        }
        Ok(true)
    }

    /// Parses the payload after checking its signatures with `keys`, as
    /// update_engine does: the metadata signature before the manifest is
    /// decoded, the payload signature (over every byte before it but the
    /// metadata signature) before anything is written. Without keys, only
    /// parses. Returns the payload and, with keys, which key verified each
    /// signature.
    pub fn parse_trusted(
        &self,
        keys: &[TrustedKey],
    ) -> Result<(Payload<'_>, Option<SignatureCheck>), PayloadError> {
        if keys.is_empty() {
            return Ok((self.parse()?, None));
        }
        let bytes = self.bytes();
        let (_, meta, meta_sig) = romdelta_android::payload::split_metadata(bytes)?;
        let metadata = signature::verify(
            "metadata signature",
            meta_sig,
            &romdelta_format::sha256(meta),
            keys,
        )?;
        let (meta_len, sig_len) = (meta.len(), meta_sig.len());
        let payload = self.parse()?;
        if self.remote.is_some() {
            return Ok((
                payload,
                Some(SignatureCheck {
                    metadata,
                    payload: "not checked: the payload was read by ranges (the metadata signature covers every operation's data hash)".into(),
                }),
            ));
        }
        let Some(sigs) = &payload.signatures else {
            return Err(SignatureError::Unsigned {
                what: "payload signature",
            }
            .into());
        };
        let at = meta_len + sig_len + sigs.offset as usize;
        let (_, payload_hash) =
            signature::payload_hashes(bytes, meta_len, sig_len, at, &|off, len| {
                self.release(off as u64, len as u64)
            })?;
        let signed = signature::verify(
            "payload signature",
            &bytes[at..at + sigs.len as usize],
            &payload_hash,
            keys,
        )?;
        Ok((
            payload,
            Some(SignatureCheck {
                metadata,
                payload: signed,
            }),
        ))
    }

    /// Parses and validates the payload.
    pub fn parse(&self) -> Result<Payload<'_>, PayloadError> {
        Payload::parse(self.bytes()).map_err(|e| match e {
            FormatError::Invalid {
                what: "payload header",
                ..
            } if self.member.is_none() && !self.bytes().starts_with(b"CrAU") => {
                PayloadError::Refused(format!(
                    "{}: neither a payload.bin (CrAU) nor an OTA zip holding one",
                    self.path.display()
                ))
            }
            other => PayloadError::Format(other),
        })
    }
}

/// Which trusted key verified each of a payload's signatures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SignatureCheck {
    /// The key that verified the metadata signature.
    pub metadata: String,
    /// The key that verified the payload signature.
    pub payload: String,
}

/// Reads every `--trusted-key` file.
pub fn load_trusted_keys(paths: &[PathBuf]) -> Result<Vec<TrustedKey>, PayloadError> {
    let mut keys = Vec::new();
    for p in paths {
        keys.extend(signature::load_trusted_keys(p)?);
    }
    Ok(keys)
}

/// The stored `payload.bin` member of an OTA zip: offset, length, and the
/// zip's properties file, if any.
type ZipMember = (usize, usize, Option<Vec<u8>>);

/// Finds the stored `payload.bin` member of the zip `file`.
fn zip_member(file: &std::fs::File, path: &Path) -> Result<ZipMember, PayloadError> {
    use std::io::Read as _;
    let refuse = |why: String| PayloadError::Refused(format!("{}: {why}", path.display()));
    let f = file.try_clone().map_err(PayloadError::io(path))?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| refuse(format!("zip: {e}")))?;
    let properties = match zip.by_name(OTA_PROPERTIES) {
        Ok(entry) => {
            let mut text = Vec::new();
            entry
                .take(romdelta_android::payload::properties::MAX_LEN + 1)
                .read_to_end(&mut text)
                .map_err(|e| refuse(format!("zip: {OTA_PROPERTIES}: {e}")))?;
            Some(text)
        }
        Err(zip::result::ZipError::FileNotFound) => None,
        Err(e) => return Err(refuse(format!("zip: {OTA_PROPERTIES}: {e}"))),
    };
    let entry = zip.by_name(OTA_MEMBER).map_err(|e| match e {
        zip::result::ZipError::FileNotFound => refuse(format!(
            "the zip holds no {OTA_MEMBER} (not an A/B OTA package)"
        )),
        other => refuse(format!("zip: {OTA_MEMBER}: {other}")),
    })?;
    if entry.encrypted() {
        return Err(refuse(format!("{OTA_MEMBER} is encrypted in the zip")));
    }
    if entry.compression() != zip::CompressionMethod::Stored {
        return Err(refuse(format!(
            "{OTA_MEMBER} is compressed in the zip ({}); OTA packages store it uncompressed: unzip it and pass the payload.bin",
            entry.compression()
        )));
    }
    let start = entry
        .data_start()
        .ok_or_else(|| refuse(format!("zip: {OTA_MEMBER}: no data offset")))?;
    let len = entry.size();
    let file_len = file.metadata().map_err(PayloadError::io(path))?.len();
    if start.checked_add(len).is_none_or(|e| e > file_len) {
        return Err(refuse(format!(
            "zip: {OTA_MEMBER} ends past the end of the file"
        )));
    }
    Ok((start as usize, len as usize, properties))
}

/// The indexes of the partitions `names` selects (all when empty), in
/// payload order; an unknown name is an error that lists the payload's.
pub fn select(payload: &Payload<'_>, names: &[String]) -> Result<Vec<usize>, PayloadError> {
    if names.is_empty() {
        return Ok((0..payload.partitions.len()).collect());
    }
    let mut out = Vec::new();
    for n in names {
        match payload.partitions.iter().position(|p| &p.name == n) {
            Some(i) if !out.contains(&i) => out.push(i),
            Some(_) => {}
            None => {
                return Err(PayloadError::Usage(format!(
                    "the payload has no partition {n:?} (it has: {})",
                    payload
                        .partitions
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// A whole image of `part` (`what`: the source image or the written one)
/// must hash to `expected`.
fn expect_image(
    what: &'static str,
    part: &PayloadPartition,
    expected: Digest,
    actual: Digest,
) -> Result<(), PayloadError> {
    if actual == expected {
        return Ok(());
    }
    Err(PayloadError::from(PayloadMismatch {
        what,
        partition: part.name.clone(),
        op: None,
        blocks: None,
        expected,
        actual,
    }))
}

fn check_data(
    payload: &Payload<'_>,
    part: &PayloadPartition,
    i: usize,
    op: &PayloadOp,
) -> Result<(), PayloadError> {
    if let Some(expected) = op.data_sha256 {
        let actual = romdelta_format::sha256(payload.op_data(op));
        if actual != expected {
            return Err(PayloadError::from(PayloadMismatch {
                what: "data",
                partition: part.name.clone(),
                op: Some((i, op.kind)),
                blocks: Some(format!(
                    "data bytes {}..{}",
                    op.data_offset,
                    op.data_offset + op.data_length
                )),
                expected,
                actual,
            }));
        }
    }
    Ok(())
}

/// What [`check_data_hashes`] found.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct DataCheck {
    /// Operations whose data hash matched.
    pub checked: u64,
    /// Operations with data but no recorded hash.
    pub unhashed: u64,
}

/// Checks the data hash of every operation of the `parts` partitions, in parallel.
pub fn check_data_hashes(
    payload: &Payload<'_>,
    parts: &[usize],
) -> Result<DataCheck, PayloadError> {
    let jobs: Vec<(usize, usize)> = parts
        .iter()
        .flat_map(|&pi| (0..payload.partitions[pi].operations.len()).map(move |oi| (pi, oi)))
        .filter(|&(pi, oi)| payload.partitions[pi].operations[oi].data_length > 0)
        .collect();
    jobs.par_iter().try_for_each(|&(pi, oi)| {
        let p = &payload.partitions[pi];
        check_data(payload, p, oi, &p.operations[oi])
    })?;
    let unhashed = jobs
        .iter()
        .filter(|&&(pi, oi)| payload.partitions[pi].operations[oi].data_sha256.is_none())
        .count() as u64;
    Ok(DataCheck {
        checked: jobs.len() as u64 - unhashed,
        unhashed,
    })
}

/// One image written and verified.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WrittenImage {
    /// Partition name.
    pub name: String,
    /// Where it is.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, hex (that of `new_partition_info`, matched from disk).
    pub sha256: String,
    /// Operations run.
    pub operations: u64,
    /// The dm-verity hash tree computed into the image, if the payload asks for one.
    pub hash_tree: Option<VerityArea>,
    /// The FEC computed into the image, if the payload asks for it.
    pub fec: Option<VerityArea>,
}

/// A hash tree or FEC area computed into an image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerityArea {
    /// Its offset in the image.
    pub offset: u64,
    /// Its bytes.
    pub bytes: u64,
    /// The hash algorithm (tree) or the roots (FEC).
    pub detail: String,
}

/// Bytes read at a time by the final pass.
const PASS_CHUNK: u64 = 4 << 20;
/// Most bytes of FEC parity held at once; larger FEC areas are computed in
/// groups of rounds, the later groups re-reading the data they cover.
const FEC_BUDGET: usize = 16 << 20;

/// Reads the written image of `part` once, in order, and returns its
/// SHA-256. When the payload asks for a hash tree and FEC, the data blocks
/// are hashed into the tree and fed to the FEC encoder as they pass; the
/// tree is written when the pass reaches its area, then the FEC (its
/// first group of rounds built during the pass), and the pass reads both
/// back like any other bytes: the partition hash covers them.
fn finish_image(
    file: &std::fs::File,
    path: &Path,
    part: &PayloadPartition,
) -> Result<Digest, PayloadError> {
    use romdelta_android::{fec, verity};
    let size = part.new.size;
    let tree_spec = part.verity.hash_tree.as_ref();
    let fec_spec = part.verity.fec.as_ref();
    let mut tree = tree_spec.map(|t| {
        verity::TreeBuilder::new(t.algorithm, &t.salt, BLOCK_SIZE as usize, t.data.byte_len())
    });
    let layout = fec_spec
        .map(|f| fec::FecLayout::new(f.roots, BLOCK_SIZE as usize, f.data.byte_len()))
        .transpose()?;
    let groups = layout.map(|l| l.groups(FEC_BUDGET)).unwrap_or_default();
    let mut group = layout.map(|l| fec::RoundGroup::new(l, groups[0].clone()));
    let range = |e: &Extent| e.byte_offset()..e.byte_offset() + e.byte_len();
    // The boundaries the pass stops at.
    let mut stops: Vec<u64> = vec![size];
    for e in tree_spec
        .iter()
        .flat_map(|t| [t.data, t.tree])
        .chain(fec_spec.iter().flat_map(|f| [f.data, f.fec]))
    {
        stops.extend([e.byte_offset(), e.byte_offset() + e.byte_len()]);
    }
    stops.sort_unstable();
    stops.dedup();
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; PASS_CHUNK.min(size) as usize];
    let mut pos = 0u64;
    while pos < size {
        if let Some(spec) = tree_spec.filter(|t| t.tree.byte_offset() == pos) {
            let built = tree.take().expect("the tree is written once").finish();
            file.write_all_at(&built.tree, spec.tree.byte_offset())
                .map_err(PayloadError::io(path))?;
        }
        if let (Some(f), Some(spec)) = (fec_spec.filter(|f| f.fec.byte_offset() == pos), layout) {
            let first = group.take().expect("the FEC is written once").finish();
            file.write_all_at(&first, f.fec.byte_offset())
                .map_err(PayloadError::io(path))?;
            let per_group = (spec.roots * spec.block_size) as u64;
            for g in &groups[1..] {
                let mut rg = fec::RoundGroup::new(spec, g.clone());
                let data = range(&f.data);
                let mut at = data.start;
                while at < data.end {
                    let n = (data.end - at).min(PASS_CHUNK) as usize;
                    file.read_exact_at(&mut buf[..n], at)
                        .map_err(PayloadError::io(path))?;
                    rg.feed(&buf[..n]);
                    at += n as u64;
                }
                file.write_all_at(&rg.finish(), f.fec.byte_offset() + g.start * per_group)
                    .map_err(PayloadError::io(path))?;
            }
        }
        let stop = stops.iter().copied().find(|&s| s > pos).unwrap_or(size);
        let n = (stop - pos).min(PASS_CHUNK) as usize;
        file.read_exact_at(&mut buf[..n], pos)
            .map_err(PayloadError::io(path))?;
        let chunk = &buf[..n];
        h.update(chunk);
        let span = pos..pos + n as u64;
        if let (Some(t), Some(spec)) = (tree.as_mut(), tree_spec) {
            if range(&spec.data).contains(&span.start) {
                t.update(chunk);
            }
        }
        if let (Some(g), Some(spec)) = (group.as_mut(), fec_spec) {
            if range(&spec.data).contains(&span.start) {
                g.feed(chunk);
            }
        }
        pos += n as u64;
    }
    Ok(h.finalize().into())
}

/// What a run wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PayloadReport {
    /// The payload (`ZIP:payload.bin` for an OTA zip).
    pub payload: String,
    /// The output directory.
    pub output: PathBuf,
    /// The images, in payload order.
    pub partitions: Vec<WrittenImage>,
    /// Bytes written by operations.
    pub bytes_written: u64,
    /// Operation data hashes checked.
    pub data_hashes: u64,
    /// Operation source hashes checked.
    pub source_hashes: u64,
    /// Whole old images whose hash was checked.
    pub source_images: u64,
    /// Whether the payload was checked against an OTA zip's
    /// `payload_properties.txt` (set by the caller, see
    /// [`PayloadFile::check_properties`]).
    pub properties_checked: bool,
    /// With trusted keys: which key verified each signature (set by the
    /// caller, see [`PayloadFile::parse_trusted`]).
    pub signatures: Option<SignatureCheck>,
}

/// Selected partitions of a payload, checked against their source and
/// output; the only thing that can be run.
pub struct PayloadJob<'p, 'a> {
    payload: &'p Payload<'a>,
    parts: Vec<usize>,
    /// The old image of each selected partition (when it reads one or the
    /// payload records one and the source has it).
    sources: Vec<Option<&'p Partition>>,
    out: PathBuf,
}

impl<'p, 'a> PayloadJob<'p, 'a> {
    /// Checks the `parts` partitions of `payload` against `source` (the old
    /// images, for an incremental payload) and the output directory `out`
    /// (created if missing; no `NAME.img` it would write may exist).
    pub fn new(
        payload: &'p Payload<'a>,
        parts: Vec<usize>,
        source: Option<&'p Rom>,
        out: &Path,
    ) -> Result<Self, PayloadError> {
        let mut sources = Vec::with_capacity(parts.len());
        for &pi in &parts {
            let p = &payload.partitions[pi];
            p.check_supported()?;
            let reader = p
                .operations
                .iter()
                .enumerate()
                .find(|(_, o)| o.kind.reads_source());
            let found = source.and_then(|s| s.get(&p.name));
            if let Some((i, op)) = reader {
                let Some(s) = source else {
                    return Err(PayloadError::Refused(format!(
                        "partition {}, operation {i} ({}) reads the old image: this is an incremental payload; apply it with `romdelta payload apply PAYLOAD --source OLD_DIR -o DIR`",
                        p.name, op.kind
                    )));
                };
                let Some(found) = found else {
                    return Err(PayloadError::Refused(format!(
                        "partition {}: the payload reads its old image, and the source has no {}.img (it has: {})",
                        p.name,
                        p.name,
                        s.partitions.iter().map(|x| x.name.as_str()).collect::<Vec<_>>().join(", ")
                    )));
                };
                // Without a recorded old size, the extents must fit the image given.
                let blocks = found.size().div_ceil(BLOCK_SIZE);
                for (i, op) in p.operations.iter().enumerate() {
                    if let Some(e) = op.src_extents.iter().find(|e| e.end_block() > blocks) {
                        return Err(PayloadError::Refused(format!(
                            "partition {}, operation {i} ({}): source blocks {e} lie past the end of {} ({blocks} blocks)",
                            p.name,
                            op.kind,
                            found.path.display()
                        )));
                    }
                }
            }
            if let (Some(old), Some(found)) = (p.old, found) {
                if found.size() != old.size {
                    return Err(PayloadError::Refused(format!(
                        "partition {}: the payload applies to an image of {} bytes{}; {} has {} bytes",
                        p.name,
                        old.size,
                        old.sha256.map(|h| format!(" (sha256 {})", hex_digest(&h))).unwrap_or_default(),
                        found.path.display(),
                        found.size()
                    )));
                }
            }
            sources.push(found);
        }
        if std::fs::metadata(out).is_ok_and(|m| !m.is_dir()) {
            return Err(PayloadError::Io {
                path: out.to_path_buf(),
                source: std::io::Error::other(
                    "is not a directory; give the directory the images go to",
                ),
            });
        }
        for &pi in &parts {
            let target = out.join(format!("{}.img", payload.partitions[pi].name));
            if target.symlink_metadata().is_ok() {
                return Err(PayloadError::Io {
                    path: target,
                    source: std::io::Error::other("exists; an image is never overwritten: remove it or choose another directory"),
                });
            }
        }
        Ok(PayloadJob {
            payload,
            parts,
            sources,
            out: out.to_path_buf(),
        })
    }

    /// Total bytes of the images the job writes (for progress).
    pub fn total_bytes(&self) -> u64 {
        self.parts
            .iter()
            .map(|&pi| self.payload.partitions[pi].new.size)
            .sum()
    }

    /// Runs the job; `progress` is called with the bytes written so far,
    /// `release` with each payload byte range (from the payload's first
    /// byte) an operation is done with.
    pub fn run(
        &self,
        describe: &str,
        progress: &(dyn Fn(u64) + Sync),
        release: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<PayloadReport, PayloadError> {
        let payload = self.payload;
        let blobs_at = payload.len() - payload.blobs.len() as u64;
        std::fs::create_dir_all(&self.out).map_err(PayloadError::io(&self.out))?;
        // Whole old images first: a wrong build is refused before any work.
        let old_checks: Vec<usize> = (0..self.parts.len())
            .filter(|&k| {
                let p = &payload.partitions[self.parts[k]];
                self.sources[k].is_some() && p.old.and_then(|o| o.sha256).is_some()
            })
            .collect();
        old_checks.par_iter().try_for_each(|&k| {
            let p = &payload.partitions[self.parts[k]];
            let expected = p.old.and_then(|o| o.sha256).expect("filtered");
            let actual = self.sources[k].expect("filtered").sha256()?;
            expect_image(
                "source image (the old image is not the one this payload applies to, or is damaged)",
                p,
                expected,
                actual,
            )
        })?;
        // Temporary files beside the outputs, removed unless renamed into place.
        let mut temps = Vec::with_capacity(self.parts.len());
        for &pi in &self.parts {
            let p = &payload.partitions[pi];
            let t = tempfile::Builder::new()
                .prefix(&format!(".{}.img.", p.name))
                .suffix(".romdelta-partial")
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .tempfile_in(&self.out)
                .map_err(PayloadError::io(&self.out))?;
            t.as_file()
                .set_len(p.new.size)
                .map_err(PayloadError::io(t.path()))?;
            temps.push(t);
        }
        let jobs: Vec<(usize, usize)> = (0..self.parts.len())
            .flat_map(|k| {
                (0..payload.partitions[self.parts[k]].operations.len()).map(move |oi| (k, oi))
            })
            .collect();
        let written = AtomicU64::new(0);
        let source_hashes = AtomicU64::new(0);
        jobs.par_iter().try_for_each(|&(k, oi)| {
            let p = &payload.partitions[self.parts[k]];
            let out = Out {
                file: temps[k].as_file(),
                path: temps[k].path(),
                size: p.new.size,
            };
            let (n, hashed) = run_op(payload, p, oi, self.sources[k], &out)?;
            let op = &p.operations[oi];
            release(blobs_at + op.data_offset, op.data_length);
            source_hashes.fetch_add(u64::from(hashed), Ordering::Relaxed);
            progress(written.fetch_add(n, Ordering::Relaxed) + n);
            Ok::<(), PayloadError>(())
        })?;
        // Every image read back once, in order: its hash tree and FEC
        // computed and written as the pass reaches them, the whole image
        // hashed, then synced.
        temps.par_iter().zip(&self.parts).try_for_each(|(t, &pi)| {
            let p = &payload.partitions[pi];
            let actual = finish_image(t.as_file(), t.path(), p)?;
            t.as_file().sync_all().map_err(PayloadError::io(t.path()))?;
            let expected = p.new.sha256.expect("validated: new images have hashes");
            expect_image("written image", p, expected, actual)
        })?;
        let mut partitions = Vec::with_capacity(self.parts.len());
        for (t, &pi) in temps.into_iter().zip(&self.parts) {
            let p = &payload.partitions[pi];
            let target = self.out.join(format!("{}.img", p.name));
            t.persist_noclobber(&target).map_err(|e| PayloadError::Io {
                path: target.clone(),
                source: e.error,
            })?;
            partitions.push(WrittenImage {
                name: p.name.clone(),
                path: target,
                size: p.new.size,
                sha256: hex_digest(&p.new.sha256.expect("validated")),
                operations: p.operations.len() as u64,
                hash_tree: p.verity.hash_tree.as_ref().map(|t| VerityArea {
                    offset: t.tree.byte_offset(),
                    bytes: t.tree.byte_len(),
                    detail: t.algorithm.name().to_string(),
                }),
                fec: p.verity.fec.as_ref().map(|f| VerityArea {
                    offset: f.fec.byte_offset(),
                    bytes: f.fec.byte_len(),
                    detail: format!("{} roots", f.roots),
                }),
            });
        }
        std::fs::File::open(&self.out)
            .and_then(|d| d.sync_all())
            .map_err(PayloadError::io(&self.out))?;
        let data_hashes = jobs
            .iter()
            .filter(|&&(k, oi)| {
                payload.partitions[self.parts[k]].operations[oi]
                    .data_sha256
                    .is_some()
            })
            .count() as u64;
        Ok(PayloadReport {
            payload: describe.to_string(),
            output: self.out.clone(),
            partitions,
            bytes_written: written.load(Ordering::Relaxed),
            data_hashes,
            source_hashes: source_hashes.load(Ordering::Relaxed),
            source_images: old_checks.len() as u64,
            properties_checked: false,
            signatures: None,
        })
    }
}

/// The image file an operation writes.
struct Out<'a> {
    file: &'a std::fs::File,
    path: &'a Path,
    size: u64,
}

/// Writes `buf` over `extents` of `out`, in order, dropping bytes past the
/// end of the image; continues at `*pos` bytes into the extents. Returns
/// the bytes written.
fn write_extents(
    out: &Out<'_>,
    extents: &[Extent],
    pos: &mut u64,
    mut buf: &[u8],
) -> Result<u64, PayloadError> {
    let mut written = 0;
    let mut base = 0u64;
    for e in extents {
        if buf.is_empty() {
            break;
        }
        let len = e.byte_len();
        if *pos >= base + len {
            base += len;
            continue;
        }
        let within = *pos - base;
        let n = (len - within).min(buf.len() as u64);
        let at = e.byte_offset() + within;
        if at < out.size {
            let keep = n.min(out.size - at) as usize;
            out.file
                .write_all_at(&buf[..keep], at)
                .map_err(PayloadError::io(out.path))?;
            written += keep as u64;
        }
        buf = &buf[n as usize..];
        *pos += n;
        base += len;
    }
    Ok(written)
}

fn source_mismatch(
    part: &PayloadPartition,
    i: usize,
    op: &PayloadOp,
    expected: Digest,
    actual: Digest,
) -> PayloadError {
    let mut s: Vec<String> = op
        .src_extents
        .iter()
        .take(8)
        .map(|e| e.to_string())
        .collect();
    if op.src_extents.len() > 8 {
        s.push(format!("... ({} extents)", op.src_extents.len()));
    }
    PayloadError::from(PayloadMismatch {
        what: "source (the old image is not the one this payload applies to, or is damaged)",
        partition: part.name.clone(),
        op: Some((i, op.kind)),
        blocks: Some(format!("source blocks {}", s.join(", "))),
        expected,
        actual,
    })
}

/// Runs operation `i` of `part`: checks, decodes, writes. Returns the bytes
/// written and whether a source hash was checked. The output starts as
/// zeros, so ZERO and DISCARD write nothing.
fn run_op(
    payload: &Payload<'_>,
    part: &PayloadPartition,
    i: usize,
    src: Option<&Partition>,
    out: &Out<'_>,
) -> Result<(u64, bool), PayloadError> {
    let op = &part.operations[i];
    let dst_len = op.dst_blocks() * BLOCK_SIZE;
    let decode_err = |source| PayloadError::Decode {
        partition: part.name.clone(),
        op: i,
        kind: op.kind,
        source,
    };
    match op.kind {
        PayloadOpKind::Zero | PayloadOpKind::Discard => {
            let clipped: u64 = op
                .dst_extents
                .iter()
                .map(|e| e.byte_len().min(out.size.saturating_sub(e.byte_offset())))
                .sum();
            Ok((clipped, false))
        }
        PayloadOpKind::SourceCopy => {
            let src = src.expect("checked by the job: copies have a source");
            // One pass: hash and copy; a mismatch fails the whole run, and
            // the output is never renamed into place.
            let mut h = sha2::Sha256::new();
            let mut pos = 0u64;
            let mut written = 0u64;
            let mut res = Ok(());
            src.for_each_piece(&op.src_extents, |b| {
                h.update(b);
                if res.is_ok() {
                    match write_extents(out, &op.dst_extents, &mut pos, b) {
                        Ok(n) => written += n,
                        Err(e) => res = Err(e),
                    }
                }
            })?;
            res?;
            let actual: Digest = h.finalize().into();
            if let Some(expected) = op.src_sha256 {
                if actual != expected {
                    return Err(source_mismatch(part, i, op, expected, actual));
                }
            }
            Ok((written, op.src_sha256.is_some()))
        }
        k if k.is_replace() => {
            check_data(payload, part, i, op)?;
            let mut buf = vec![0u8; dst_len as usize];
            ops::decode_replace(k, payload.op_data(op), &mut buf).map_err(decode_err)?;
            let n = write_extents(out, &op.dst_extents, &mut 0, &buf)?;
            Ok((n, false))
        }
        k if k.is_patch() => {
            check_data(payload, part, i, op)?;
            let src = src.expect("checked by the job: patches have a source");
            let mut source = Vec::with_capacity((op.src_blocks() * BLOCK_SIZE) as usize);
            src.read_extents(&op.src_extents, &mut source)?;
            let actual = romdelta_format::sha256(&source);
            if let Some(expected) = op.src_sha256 {
                if actual != expected {
                    return Err(source_mismatch(part, i, op, expected, actual));
                }
            }
            let mut buf = vec![0u8; dst_len as usize];
            ops::decode_patch(op.kind, payload.op_data(op), &source, &mut buf)
                .map_err(decode_err)?;
            let n = write_extents(out, &op.dst_extents, &mut 0, &buf)?;
            Ok((n, op.src_sha256.is_some()))
        }
        other => Err(Unsupported::Kind {
            partition: part.name.clone(),
            op: i,
            kind: other,
        }
        .into()),
    }
}
