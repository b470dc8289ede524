//! Writing Android `payload.bin` files (`romdelta diff --format payload`).
//!
//! Full payloads use only the operation kinds every reader knows, one
//! destination extent each and in block order, covering every block:
//! `ZERO` for runs of zero blocks, and for the rest chunks of up to 2 MiB
//! as `REPLACE_XZ`, `REPLACE_BZ` or `REPLACE`, whichever is smallest.
//! Incremental payloads reuse the block classification of romdelta's own
//! generator: `ZERO`, `SOURCE_COPY` (one contiguous source and destination
//! extent each), and for changed regions `SOURCE_BSDIFF` (a BSDIFF40 patch
//! against the source window romdelta's generator picks) or `REPLACE_XZ` /
//! `REPLACE_BZ`, whichever is smallest. Every operation records its data
//! and source hashes, every partition its old and new size and hash. The
//! payload is unsigned.

use crate::blocks::{self, BlockClass, SourceIndex};
use crate::encode::{self, EncodeParams, Region};
use crate::{anchors, DiffError, DiffOptions};
use rayon::prelude::*;
use romdelta_android::avb;
use romdelta_android::payload::{
    ops, ImageInfo, NewOp, PayloadOpKind, PayloadWriter, Verity, DELTA_MINOR_VERSION,
    FULL_MINOR_VERSION,
};
use romdelta_android::signature::{self, SigningKey};
use romdelta_format::{Digest, Extent, BLOCK_SIZE};
use romdelta_rom::{Partition, Rom};
use sha2::Digest as _;
use std::io::{BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

/// Most blocks one data operation writes (2 MiB, as update_engine's own
/// generator chunks full payloads).
pub const CHUNK_BLOCKS: u64 = 512;
/// Most blocks one SOURCE_COPY operation copies (16 MiB).
pub const COPY_BLOCKS: u64 = 4096;
/// Most blocks one ZERO operation covers (64 MiB).
pub const ZERO_BLOCKS: u64 = 16384;

/// The operations of one kind in a partition of a written payload.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PayloadKindSummary {
    /// The kind.
    pub kind: PayloadOpKind,
    /// How many operations.
    pub operations: u64,
    /// Blocks they write.
    pub blocks: u64,
    /// Bytes of data they carry.
    pub data_bytes: u64,
}

/// One partition of a written payload.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PayloadPartitionSummary {
    /// Partition name.
    pub name: String,
    /// New size.
    pub size: u64,
    /// Whether it is updated from an old image (else written whole).
    pub incremental: bool,
    /// Operations per kind.
    pub by_kind: Vec<PayloadKindSummary>,
    /// Blocks of data the hash tree covers, when the image has verity.
    pub verity_data_blocks: Option<u64>,
}

/// What [`write_payload`] wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PayloadSummary {
    /// Always `payload`.
    pub format: &'static str,
    /// Signatures (one per key; 0: unsigned).
    pub signatures: usize,
    /// The `payload_properties.txt` written beside the payload.
    pub properties: PathBuf,
    /// Bytes of the header and manifest (`METADATA_SIZE`).
    pub metadata_bytes: u64,
    /// SHA-256 of the whole payload, hex (`FILE_HASH`).
    pub sha256: String,
    /// The payload's minor version (0: full).
    pub minor_version: u32,
    /// Total payload bytes.
    pub payload_bytes: u64,
    /// Total target bytes.
    pub target_bytes: u64,
    /// Per partition.
    pub partitions: Vec<PayloadPartitionSummary>,
}

/// What a run of blocks becomes.
#[derive(Debug, Clone, Copy)]
enum Piece {
    Zero { start: u64, len: u64 },
    Copy { src: u64, start: u64, len: u64 },
    Data(Region),
}

/// Splits a partition's block classes into pieces, in block order,
/// leaving out the blocks of `skip` (sorted, disjoint).
fn plan(classes: &[BlockClass], skip: &[Extent]) -> Vec<Piece> {
    let total = classes.len() as u64;
    let mut out = Vec::new();
    let mut i = 0u64;
    let mut k = 0usize;
    while i < total {
        while k < skip.len() && skip[k].end_block() <= i {
            k += 1;
        }
        if let Some(e) = skip.get(k).filter(|e| e.start_block <= i) {
            i = e.end_block();
            continue;
        }
        // Runs stop where the next skipped area starts.
        let n = skip.get(k).map_or(total, |e| e.start_block).min(total);
        let mut j = i + 1;
        match classes[i as usize] {
            BlockClass::Zero => {
                while j < n && classes[j as usize] == BlockClass::Zero && j - i < ZERO_BLOCKS {
                    j += 1;
                }
                out.push(Piece::Zero {
                    start: i,
                    len: j - i,
                });
            }
            BlockClass::Copy(s) => {
                while j < n
                    && classes[j as usize] == BlockClass::Copy(s + (j - i))
                    && j - i < COPY_BLOCKS
                {
                    j += 1;
                }
                out.push(Piece::Copy {
                    src: s,
                    start: i,
                    len: j - i,
                });
            }
            BlockClass::Changed | BlockClass::Claimed => {
                while j < n && classes[j as usize] == BlockClass::Changed && j - i < CHUNK_BLOCKS {
                    j += 1;
                }
                out.push(Piece::Data(Region {
                    start: i,
                    len: j - i,
                }));
            }
        }
        i = j;
    }
    out
}

/// An encoded data piece.
struct Encoded {
    kind: PayloadOpKind,
    src_extents: Vec<Extent>,
    src_sha256: Option<romdelta_format::Digest>,
    data: Vec<u8>,
}

/// The smallest of REPLACE_XZ, REPLACE_BZ and REPLACE for `target` (the
/// first of them on a tie).
fn encode_replace(target: &[u8]) -> Encoded {
    let (kind, data) = [
        (PayloadOpKind::ReplaceXz, ops::encode_xz(target)),
        (PayloadOpKind::ReplaceBz, ops::encode_bz2(target)),
        (PayloadOpKind::Replace, target.to_vec()),
    ]
    .into_iter()
    .min_by_key(|(_, d)| d.len())
    .expect("three candidates");
    Encoded {
        kind,
        src_extents: Vec::new(),
        src_sha256: None,
        data,
    }
}

/// Encodes a changed region: against the source window romdelta's
/// generator would pick (SOURCE_BSDIFF, BSDIFF40), or whole, whichever is
/// smaller.
fn encode_region(
    src: Option<&Partition>,
    dst: &Partition,
    classes: &[BlockClass],
    anchors: Option<&anchors::AnchorIndex>,
    region: Region,
    params: &EncodeParams,
) -> Encoded {
    let target = encode::target_bytes(dst, region);
    let replace = encode_replace(&target);
    let Some(src) = src else { return replace };
    let anchored = anchors.map(|ix| anchors::alignments(ix, &target, region.start));
    let windows = encode::source_windows(
        region,
        classes,
        src,
        anchored.as_deref().unwrap_or(&[]),
        params,
    );
    if windows.is_empty() {
        return replace;
    }
    let mut source = Vec::new();
    src.read_extents(&windows, &mut source)
        .expect("reads of a mapped image do not fail");
    let mut patch = Vec::new();
    romdelta_format::bsdiff40::diff(&source, &target, &mut patch).expect("writing to memory");
    if patch.len() < replace.data.len() {
        Encoded {
            kind: PayloadOpKind::SourceBsdiff,
            src_extents: windows,
            src_sha256: Some(romdelta_format::sha256(&source)),
            data: patch,
        }
    } else {
        replace
    }
}

/// The verity fields of `t`, when its image ends in an AVB footer with a
/// hashtree descriptor.
fn verity_of(t: &Partition) -> Result<Option<Verity>, DiffError> {
    let bytes = t.bytes();
    let footer = avb::read_footer(bytes.len() as u64, |off, buf| {
        buf.copy_from_slice(&bytes[off as usize..off as usize + buf.len()]);
        Ok(())
    });
    let invalid =
        |e: romdelta_format::FormatError| DiffError::Invalid(format!("{}: {e}", t.path.display()));
    let Some(h) = footer.map_err(invalid)?.and_then(|f| f.hashtree) else {
        return Ok(None);
    };
    let v = Verity::from_avb(&h).map_err(invalid)?;
    v.check(t.size()).map_err(invalid)?;
    Ok(Some(v))
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> DiffError + '_ {
    move |source| DiffError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The `payload_properties.txt` path for a payload at `out`: beside it,
/// `payload_properties.txt` for a `payload.bin`, else `STEM_properties.txt`.
pub fn properties_path(out: &Path) -> PathBuf {
    let name = match out.file_stem().map(|s| s.to_string_lossy()) {
        Some(s) if s != "payload" => format!("{s}_properties.txt"),
        _ => "payload_properties.txt".to_string(),
    };
    out.with_file_name(name)
}

/// One planned file operation (PUFFDIFF, LZ4DIFF_BSDIFF, LZ4DIFF_PUFFDIFF):
/// a file's source and target blocks and the patch between them.
pub struct FilePatch {
    /// The operation.
    pub kind: PayloadOpKind,
    /// The source file's blocks, in order.
    pub src_extents: Vec<Extent>,
    /// Their SHA-256.
    pub src_sha256: Digest,
    /// The target file's blocks, in order.
    pub dst_extents: Vec<Extent>,
    /// The patch.
    pub data: Vec<u8>,
}

impl FilePatch {
    /// `data`, an operation of `kind` from the stored bytes `src` (at
    /// `src_extents`) to `dst` (at `dst_extents`), kept only where it is
    /// smaller than a BSDIFF40 of the stored bytes and where `apply` (what
    /// the installer runs) gives `dst` exactly.
    pub(crate) fn checked(
        kind: PayloadOpKind,
        data: Vec<u8>,
        (src, src_extents): (&[u8], Vec<Extent>),
        (dst, dst_extents): (&[u8], Vec<Extent>),
        apply: impl Fn(&[u8], &[u8], &mut [u8]) -> Result<(), romdelta_format::FormatError>,
    ) -> Option<Self> {
        let mut plain = Vec::new();
        romdelta_format::bsdiff40::diff(src, dst, &mut plain).ok()?;
        if data.len() >= plain.len() {
            return None;
        }
        let mut check = vec![0u8; dst.len()];
        apply(&data, src, &mut check)
            .ok()
            .filter(|_| check == dst)?;
        Some(FilePatch {
            kind,
            src_sha256: romdelta_format::sha256(src),
            src_extents,
            dst_extents,
            data,
        })
    }
}

/// Writes a `payload.bin` to `out`: incremental when `source` is given
/// (partitions the source lacks are written whole), full otherwise, signed
/// with every key of `keys` (metadata and payload signatures, as
/// update_engine's signer lays them out), and its `payload_properties.txt`
/// beside it ([`properties_path`]). Every image must be a whole number of
/// 4096-byte blocks. `progress` is called with the target bytes finished
/// so far. The files appear only once complete and synced.
pub fn write_payload(
    source: Option<&Rom>,
    target: &Rom,
    opts: &DiffOptions,
    keys: &[SigningKey],
    out: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PayloadSummary, DiffError> {
    for p in source
        .into_iter()
        .chain([target])
        .flat_map(|r| &r.partitions)
    {
        if !p.is_mapped() {
            return Err(DiffError::Invalid(format!(
                "{}: generation needs images opened with Rom::open (mapped)",
                p.path.display()
            )));
        }
        if p.size() % BLOCK_SIZE != 0 {
            return Err(DiffError::Invalid(format!(
                "{}: {} bytes; a payload.bin partition is a whole number of {BLOCK_SIZE}-byte blocks",
                p.path.display(),
                p.size()
            )));
        }
    }
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut data_file = tempfile::tempfile_in(&dir).map_err(io_err(&dir))?;
    let mut data = BufWriter::with_capacity(1 << 20, &mut data_file);
    let minor = if source.is_some() {
        opts.payload_minor_version
    } else {
        FULL_MINOR_VERSION
    };
    if source.is_some() && !(DELTA_MINOR_VERSION..=9).contains(&minor) {
        return Err(DiffError::Invalid(format!(
            "an incremental payload of minor version {minor}: this writer writes {DELTA_MINOR_VERSION} to 9"
        )));
    }
    let mut w = PayloadWriter::new(minor);
    let params = EncodeParams::from_options(opts);
    let mut summaries = Vec::new();
    let mut done = 0u64;
    for (t, s) in crate::pair(source, target) {
        let (index, (new_info, old_info)) = rayon::join(
            || s.map(SourceIndex::build),
            || rayon::join(|| crate::partition_info(t), || s.map(crate::partition_info)),
        );
        let classes = blocks::classify(t, index.as_ref());
        drop(index);
        let anchors = match s {
            Some(s) if opts.anchors && classes.contains(&BlockClass::Changed) => {
                Some(anchors::AnchorIndex::build(s.bytes(), &|off, len| {
                    s.release(off, len)
                }))
            }
            _ => None,
        };
        let info = |i: romdelta_format::PartitionInfo| ImageInfo {
            size: i.size,
            sha256: Some(i.sha256),
        };
        w.push_partition(&t.name, old_info.map(info), info(new_info));
        // A partition with an AVB hashtree footer asks the installer for
        // its tree and FEC; an incremental payload leaves both to it.
        let verity = verity_of(t)?;
        let mut skip = Vec::new();
        if let Some(v) = &verity {
            w.set_verity(v);
            if s.is_some() {
                skip = v.computed();
            }
        }
        // lz4-compressed EROFS files, diffed decompressed (minor 9).
        let lz4 = match s {
            Some(s) if minor >= 9 => crate::payload_lz4diff::plan(s, t, &classes),
            _ => Vec::new(),
        };
        skip.extend(lz4.iter().flat_map(|p| p.dst_extents.iter().copied()));
        // Files with deflate streams, diffed in puffin's form (minor 5+).
        let puff = match s {
            Some(s) => crate::payload_puffdiff::plan(s, t, &classes, &skip),
            None => Vec::new(),
        };
        skip.extend(puff.iter().flat_map(|p| p.dst_extents.iter().copied()));
        skip.sort_unstable();
        let patched = lz4.into_iter().chain(puff);
        let pieces = plan(&classes, &skip);
        let mut by_kind: Vec<PayloadKindSummary> = Vec::new();
        let mut count = |kind: PayloadOpKind, blocks: u64, data: u64| match by_kind
            .iter_mut()
            .find(|k| k.kind == kind)
        {
            Some(k) => {
                k.operations += 1;
                k.blocks += blocks;
                k.data_bytes += data;
            }
            None => by_kind.push(PayloadKindSummary {
                kind,
                operations: 1,
                blocks,
                data_bytes: data,
            }),
        };
        for FilePatch {
            kind,
            src_extents,
            src_sha256,
            dst_extents,
            data: bytes,
        } in patched
        {
            data.write_all(&bytes).map_err(io_err(&dir))?;
            let blocks = romdelta_format::blocks_in(&dst_extents);
            let op = NewOp {
                kind,
                src_extents,
                dst_extents,
                src_sha256: Some(src_sha256),
                data_length: bytes.len() as u64,
                data_sha256: Some(romdelta_format::sha256(&bytes)),
            };
            count(op.kind, blocks, op.data_length);
            w.push_op(op);
            done += blocks * BLOCK_SIZE;
            progress(done);
        }
        for batch in pieces.chunks(opts.batch_regions.max(1)) {
            let encoded: Vec<Option<Encoded>> = batch
                .par_iter()
                .map(|piece| match piece {
                    Piece::Data(r) => {
                        Some(encode_region(s, t, &classes, anchors.as_ref(), *r, &params))
                    }
                    _ => None,
                })
                .collect();
            for (piece, e) in batch.iter().zip(encoded) {
                let (op, blocks) = match (piece, e) {
                    (Piece::Zero { start, len }, _) => (
                        NewOp {
                            kind: PayloadOpKind::Zero,
                            src_extents: Vec::new(),
                            dst_extents: vec![Extent::new(*start, *len)],
                            src_sha256: None,
                            data_length: 0,
                            data_sha256: None,
                        },
                        *len,
                    ),
                    (Piece::Copy { src, start, len }, _) => {
                        let e = [Extent::new(*src, *len)];
                        let mut bytes = Vec::with_capacity((*len * BLOCK_SIZE) as usize);
                        s.expect("copies have a source")
                            .read_extents(&e, &mut bytes)
                            .expect("reads of a mapped image do not fail");
                        (
                            NewOp {
                                kind: PayloadOpKind::SourceCopy,
                                src_extents: e.to_vec(),
                                dst_extents: vec![Extent::new(*start, *len)],
                                src_sha256: Some(romdelta_format::sha256(&bytes)),
                                data_length: 0,
                                data_sha256: None,
                            },
                            *len,
                        )
                    }
                    (Piece::Data(r), Some(e)) => {
                        data.write_all(&e.data).map_err(io_err(&dir))?;
                        (
                            NewOp {
                                kind: e.kind,
                                src_extents: e.src_extents,
                                dst_extents: vec![Extent::new(r.start, r.len)],
                                src_sha256: e.src_sha256,
                                data_length: e.data.len() as u64,
                                data_sha256: Some(romdelta_format::sha256(&e.data)),
                            },
                            r.len,
                        )
                    }
                    (Piece::Data(_), None) => unreachable!("data pieces are encoded"),
                };
                count(op.kind, blocks, op.data_length);
                w.push_op(op);
                done += blocks * BLOCK_SIZE;
                progress(done);
            }
            t.release_all();
            if let Some(s) = s {
                s.release_all();
            }
        }
        by_kind.sort_by_key(|k| k.kind);
        summaries.push(PayloadPartitionSummary {
            name: t.name.clone(),
            size: t.size(),
            incremental: s.is_some(),
            by_kind,
            verity_data_blocks: verity
                .as_ref()
                .and_then(|v| v.hash_tree.as_ref())
                .map(|t| t.data.end_block()),
        });
    }
    data.flush().map_err(io_err(&dir))?;
    drop(data);
    if !keys.is_empty() {
        w.reserve_signatures(signature::signatures_size(keys));
    }
    let prefix = w.finish();
    let metadata_hash = romdelta_format::sha256(&prefix);
    let metadata_signature = if keys.is_empty() {
        Vec::new()
    } else {
        signature::signatures_message(keys, &metadata_hash)
    };
    let mut file = tempfile::Builder::new()
        .prefix(".romdelta-")
        .suffix(".partial")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(&dir)
        .map_err(io_err(&dir))?;
    // The file and payload hashes are taken as the bytes go out.
    let (mut file_h, mut payload_h) = (sha2::Sha256::new(), sha2::Sha256::new());
    let mut put = |bytes: &[u8], signed: bool| -> Result<(), DiffError> {
        file_h.update(bytes);
        if signed {
            payload_h.update(bytes);
        }
        file.write_all(bytes).map_err(io_err(out))
    };
    put(&prefix, true)?;
    put(&metadata_signature, false)?;
    data_file
        .seek(std::io::SeekFrom::Start(0))
        .map_err(io_err(&dir))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut data_file, &mut buf).map_err(io_err(&dir))?;
        if n == 0 {
            break;
        }
        put(&buf[..n], true)?;
    }
    let payload_hash: romdelta_format::Digest = payload_h.finalize().into();
    let mut total = prefix.len() as u64 + metadata_signature.len() as u64 + w.data_len();
    if !keys.is_empty() {
        let sig = signature::signatures_message(keys, &payload_hash);
        total += sig.len() as u64;
        file_h.update(&sig);
        file.write_all(&sig).map_err(io_err(out))?;
    }
    let file_hash: romdelta_format::Digest = file_h.finalize().into();
    file.as_file().sync_all().map_err(io_err(out))?;
    let props_path = properties_path(out);
    let props = romdelta_android::payload::properties::render_hashes(
        &file_hash,
        total,
        &metadata_hash,
        prefix.len() as u64,
    );
    let mut pf = tempfile::Builder::new()
        .prefix(".romdelta-")
        .suffix(".partial")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(&dir)
        .map_err(io_err(&dir))?;
    pf.write_all(props.as_bytes())
        .map_err(io_err(&props_path))?;
    pf.as_file().sync_all().map_err(io_err(&props_path))?;
    file.persist(out).map_err(|e| DiffError::Io {
        path: out.to_path_buf(),
        source: e.error,
    })?;
    pf.persist(&props_path).map_err(|e| DiffError::Io {
        path: props_path.clone(),
        source: e.error,
    })?;
    Ok(PayloadSummary {
        format: "payload",
        signatures: keys.len(),
        properties: props_path,
        metadata_bytes: prefix.len() as u64,
        sha256: romdelta_format::hex_digest(&file_hash),
        minor_version: minor,
        payload_bytes: total,
        target_bytes: target.total_size(),
        partitions: summaries,
    })
}

/// What [`write_ota_zip`] wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OtaZipReport {
    /// The payload inside.
    pub payload: PayloadSummary,
    /// The zip's property files and size.
    pub zip: romdelta_android::ota_zip::OtaZipSummary,
}

/// Writes an A/B OTA zip to `out`: the payload of [`write_payload`] (its
/// properties file inside the zip, not beside it), the care map of every
/// partition with verity (identified by `ro.PARTITION.build.fingerprint`
/// with the target's fingerprint), and `package`'s metadata.
pub fn write_ota_zip(
    source: Option<&Rom>,
    target: &Rom,
    opts: &DiffOptions,
    keys: &[SigningKey],
    mut package: romdelta_android::ota_zip::OtaPackage,
    out: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<OtaZipReport, DiffError> {
    use romdelta_android::ota_zip;
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let work = tempfile::Builder::new()
        .prefix(".romdelta-ota-")
        .tempdir_in(&dir)
        .map_err(io_err(&dir))?;
    let payload_path = work.path().join("payload.bin");
    let summary = write_payload(source, target, opts, keys, &payload_path, progress)?;
    let properties =
        std::fs::read_to_string(&summary.properties).map_err(io_err(&summary.properties))?;
    for p in &summary.partitions {
        if let Some(blocks) = p.verity_data_blocks {
            package.care_map.push(ota_zip::CareMapEntry {
                name: p.name.clone(),
                ranges: vec![(0, blocks)],
                id: format!("ro.{}.build.fingerprint", p.name),
                fingerprint: package.post.fingerprint.clone(),
            });
        }
    }
    // The payload's metadata and metadata signature, from its header.
    let mut payload = std::fs::File::open(&payload_path).map_err(io_err(&payload_path))?;
    let mut head = [0u8; romdelta_android::payload::HEADER_LEN];
    std::io::Read::read_exact(&mut payload, &mut head).map_err(io_err(&payload_path))?;
    let header = romdelta_android::payload::PayloadHeader::decode(&head)
        .map_err(|e| DiffError::Invalid(format!("the written payload: {e}")))?;
    let metadata_len = header.metadata_len() + u64::from(header.metadata_signature_len);
    payload
        .seek(std::io::SeekFrom::Start(0))
        .map_err(io_err(&payload_path))?;
    let file = tempfile::Builder::new()
        .prefix(".romdelta-")
        .suffix(".partial")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(&dir)
        .map_err(io_err(&dir))?;
    let (tmp, path) = file.into_parts();
    let (tmp, zip) = ota_zip::write(
        tmp,
        &mut payload,
        summary.payload_bytes,
        metadata_len,
        &properties,
        &package,
    )
    .map_err(|e| DiffError::Invalid(format!("{}: {e}", out.display())))?;
    tmp.sync_all().map_err(io_err(out))?;
    path.persist(out).map_err(|e| DiffError::Io {
        path: out.to_path_buf(),
        source: e.error,
    })?;
    Ok(OtaZipReport {
        payload: summary,
        zip,
    })
}
