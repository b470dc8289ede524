//! Android OTA `payload.bin` (update_engine's "CrAU" format, major
//! version 2): bounded parsing into a validated [`Payload`], the operation
//! decoders ([`ops`]) and a writer ([`PayloadWriter`]).
//!
//! Layout: `CrAU`, the major version (u64 big-endian, 2), the manifest's
//! length (u64 BE), the metadata signature's length (u32 BE), the manifest
//! (a protobuf `DeltaArchiveManifest`, see [`proto`]), the metadata
//! signature, then the data blobs: each operation's data lies at its
//! `data_offset` from the first blob byte, and the payload signatures at
//! the manifest's `signatures_offset`. Nothing may follow the last blob.
//!
//! [`Payload::parse`] checks every length against the bytes that exist
//! before using it, every extent against its partition's size, the
//! destination extents of each partition for overlaps, every hash field's
//! length and every data range; operation kinds this reader cannot apply
//! are kept (so that they can be listed) and refused by
//! [`PayloadPartition::check_supported`].

pub mod ops;
pub mod properties;
pub mod proto;

use crate::verity::HashAlgorithm;
use prost::Message as _;
use romdelta_format::{check_partition_name, limits, Digest, Extent, FormatError, BLOCK_SIZE};

/// The first four bytes of a payload.
pub const MAGIC: &[u8; 4] = b"CrAU";
/// The major version this reader reads and writes.
pub const MAJOR_VERSION: u64 = 2;
/// Bytes before the manifest.
pub const HEADER_LEN: usize = 24;
/// Largest metadata signature or payload signature blob accepted.
pub const MAX_SIGNATURE_BLOB: u64 = 1 << 20;
/// Most bytes one data-carrying operation may write or read (each side):
/// its source and destination are decoded in memory.
pub const MAX_OP_BYTES: u64 = 512 << 20;
/// The minor version of a full payload.
pub const FULL_MINOR_VERSION: u32 = 0;
/// The minor version this writer gives incremental payloads (source
/// operations, source hashes, BROTLI_BSDIFF and PUFFDIFF known).
pub const DELTA_MINOR_VERSION: u32 = 6;

/// The fixed-size header of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadHeader {
    /// The major version (2).
    pub major_version: u64,
    /// Bytes of the manifest.
    pub manifest_len: u64,
    /// Bytes of the metadata signature.
    pub metadata_signature_len: u32,
}

impl PayloadHeader {
    /// Decodes the header at the start of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        if bytes.len() < 4 || &bytes[..4] != MAGIC {
            if bytes.len() < 4 && MAGIC.starts_with(bytes) {
                return Err(FormatError::Truncated {
                    what: "payload header",
                    need: (HEADER_LEN - bytes.len()) as u64,
                    have: bytes.len() as u64,
                });
            }
            return Err(FormatError::invalid(
                "payload header",
                "not an Android payload.bin (no CrAU magic)",
            ));
        }
        if bytes.len() < HEADER_LEN {
            return Err(FormatError::Truncated {
                what: "payload header",
                need: (HEADER_LEN - bytes.len()) as u64,
                have: bytes.len() as u64,
            });
        }
        let be64 = |b: &[u8]| u64::from_be_bytes(b.try_into().expect("8 bytes"));
        let major_version = be64(&bytes[4..12]);
        if major_version != MAJOR_VERSION {
            return Err(FormatError::invalid(
                "payload header",
                format!("major version {major_version}: this reader reads version {MAJOR_VERSION}"),
            ));
        }
        Ok(PayloadHeader {
            major_version,
            manifest_len: be64(&bytes[12..20]),
            metadata_signature_len: u32::from_be_bytes(bytes[20..24].try_into().expect("4 bytes")),
        })
    }

    /// Bytes of the header and manifest: the metadata the metadata
    /// signature covers (`METADATA_SIZE` in payload_properties.txt).
    pub fn metadata_len(&self) -> u64 {
        HEADER_LEN as u64 + self.manifest_len
    }

    /// The header's bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(MAGIC);
        h[4..12].copy_from_slice(&self.major_version.to_be_bytes());
        h[12..20].copy_from_slice(&self.manifest_len.to_be_bytes());
        h[20..24].copy_from_slice(&self.metadata_signature_len.to_be_bytes());
        h
    }
}

/// The kind of an install operation, by its code in `update_metadata.proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PayloadOpKind {
    /// 0: the data, uncompressed.
    Replace,
    /// 1: the data, bzip2-compressed.
    ReplaceBz,
    /// 2: a move within the partition (major version 1 only).
    Move,
    /// 3: a bsdiff within the partition (major version 1 only).
    Bsdiff,
    /// 4: source blocks, copied.
    SourceCopy,
    /// 5: a bsdiff patch over source blocks.
    SourceBsdiff,
    /// 6: zeros.
    Zero,
    /// 7: blocks whose content does not matter (written as zeros here).
    Discard,
    /// 8: the data, xz-compressed.
    ReplaceXz,
    /// 9: a puffdiff patch over source blocks.
    Puffdiff,
    /// 10: a BSDF2 patch (brotli streams) over source blocks.
    BrotliBsdiff,
    /// 11: a Zucchini patch over source blocks.
    Zucchini,
    /// 12: an LZ4-aware bsdiff patch over source blocks.
    Lz4diffBsdiff,
    /// 13: an LZ4-aware puffdiff patch over source blocks.
    Lz4diffPuffdiff,
    /// 14: the data, zstd-compressed.
    ReplaceZstd,
    /// A code this reader does not know.
    Unknown(i32),
}

impl PayloadOpKind {
    /// Every known kind, in code order.
    pub const ALL: [PayloadOpKind; 15] = [
        Self::Replace,
        Self::ReplaceBz,
        Self::Move,
        Self::Bsdiff,
        Self::SourceCopy,
        Self::SourceBsdiff,
        Self::Zero,
        Self::Discard,
        Self::ReplaceXz,
        Self::Puffdiff,
        Self::BrotliBsdiff,
        Self::Zucchini,
        Self::Lz4diffBsdiff,
        Self::Lz4diffPuffdiff,
        Self::ReplaceZstd,
    ];

    /// The kind of `code`.
    pub fn from_code(code: i32) -> Self {
        usize::try_from(code)
            .ok()
            .and_then(|c| Self::ALL.get(c).copied())
            .unwrap_or(Self::Unknown(code))
    }

    /// The kind's code.
    pub fn code(self) -> i32 {
        match self {
            Self::Unknown(c) => c,
            k => Self::ALL.iter().position(|&x| x == k).expect("listed") as i32,
        }
    }

    /// The kind's name in `update_metadata.proto`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Replace => "REPLACE",
            Self::ReplaceBz => "REPLACE_BZ",
            Self::Move => "MOVE",
            Self::Bsdiff => "BSDIFF",
            Self::SourceCopy => "SOURCE_COPY",
            Self::SourceBsdiff => "SOURCE_BSDIFF",
            Self::Zero => "ZERO",
            Self::Discard => "DISCARD",
            Self::ReplaceXz => "REPLACE_XZ",
            Self::Puffdiff => "PUFFDIFF",
            Self::BrotliBsdiff => "BROTLI_BSDIFF",
            Self::Zucchini => "ZUCCHINI",
            Self::Lz4diffBsdiff => "LZ4DIFF_BSDIFF",
            Self::Lz4diffPuffdiff => "LZ4DIFF_PUFFDIFF",
            Self::ReplaceZstd => "REPLACE_ZSTD",
            Self::Unknown(_) => "UNKNOWN",
        }
    }

    /// Whether the operation carries data in the blobs.
    pub fn has_data(self) -> bool {
        !matches!(
            self,
            Self::Move | Self::SourceCopy | Self::Zero | Self::Discard
        )
    }

    /// Whether the operation reads blocks of the old partition.
    pub fn reads_source(self) -> bool {
        !matches!(
            self,
            Self::Replace
                | Self::ReplaceBz
                | Self::ReplaceXz
                | Self::ReplaceZstd
                | Self::Zero
                | Self::Discard
        )
    }

    /// Whether it is one of the REPLACE kinds.
    pub fn is_replace(self) -> bool {
        matches!(
            self,
            Self::Replace | Self::ReplaceBz | Self::ReplaceXz | Self::ReplaceZstd
        )
    }

    /// Whether this reader applies operations of this kind.
    pub fn supported(self) -> bool {
        self.is_replace()
            || matches!(
                self,
                Self::Zero
                    | Self::Discard
                    | Self::SourceCopy
                    | Self::SourceBsdiff
                    | Self::BrotliBsdiff
                    | Self::Puffdiff
                    | Self::Lz4diffBsdiff
                    | Self::Lz4diffPuffdiff
                    | Self::Zucchini
            )
    }

    /// Whether it patches source blocks (bsdiff, puffdiff, lz4diff).
    pub fn is_patch(self) -> bool {
        matches!(
            self,
            Self::SourceBsdiff
                | Self::BrotliBsdiff
                | Self::Puffdiff
                | Self::Zucchini
                | Self::Lz4diffBsdiff
                | Self::Lz4diffPuffdiff
        )
    }
}

impl std::fmt::Display for PayloadOpKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unknown(c) => write!(f, "unknown type {c}"),
            k => f.write_str(k.name()),
        }
    }
}

impl serde::Serialize for PayloadOpKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Unknown(c) => s.serialize_str(&format!("UNKNOWN_{c}")),
            k => s.serialize_str(k.name()),
        }
    }
}

/// Size and hash of a partition image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, when the payload records it (always for new images).
    pub sha256: Option<Digest>,
}

impl ImageInfo {
    /// Blocks the image spans (the last one may be partial).
    pub fn blocks(&self) -> u64 {
        self.size.div_ceil(BLOCK_SIZE)
    }
}

/// One validated install operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadOp {
    /// What it does.
    pub kind: PayloadOpKind,
    /// Offset of its data from the first blob byte.
    pub data_offset: u64,
    /// Bytes of data (0 for kinds without data).
    pub data_length: u64,
    /// Source blocks, in order.
    pub src_extents: Vec<Extent>,
    /// Destination blocks, in order.
    pub dst_extents: Vec<Extent>,
    /// SHA-256 of the data, when recorded.
    pub data_sha256: Option<Digest>,
    /// SHA-256 of the source blocks, when recorded.
    pub src_sha256: Option<Digest>,
}

impl PayloadOp {
    /// Destination blocks.
    pub fn dst_blocks(&self) -> u64 {
        romdelta_format::blocks_in(&self.dst_extents)
    }
    /// Source blocks.
    pub fn src_blocks(&self) -> u64 {
        romdelta_format::blocks_in(&self.src_extents)
    }
}

/// One partition's update, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadPartition {
    /// Partition name.
    pub name: String,
    /// The image the update applies to (incremental payloads).
    pub old: Option<ImageInfo>,
    /// The image the update produces (its hash always present).
    pub new: ImageInfo,
    /// The operations, in order.
    pub operations: Vec<PayloadOp>,
    /// The dm-verity hash tree and FEC the installer computes into the
    /// image after the operations, when the manifest asks for them.
    pub verity: Verity,
    /// The partition's version, when recorded.
    pub version: Option<String>,
}

/// Why a partition cannot be applied by this reader.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    /// An operation of a kind this reader does not apply.
    #[error("partition {partition}, operation {op}: {kind} is not supported (this reader applies REPLACE, REPLACE_BZ, REPLACE_XZ, REPLACE_ZSTD, ZERO, DISCARD, SOURCE_COPY, SOURCE_BSDIFF, BROTLI_BSDIFF, PUFFDIFF, ZUCCHINI, LZ4DIFF_BSDIFF and LZ4DIFF_PUFFDIFF; see docs/PAYLOAD.md)")]
    Kind {
        /// Partition name.
        partition: String,
        /// Operation index.
        op: usize,
        /// Its kind.
        kind: PayloadOpKind,
    },
    /// An operation larger than this reader decodes in memory.
    #[error("partition {partition}, operation {op} ({kind}): {what} {bytes} bytes, more than this reader decodes in one operation ({limit})")]
    TooLarge {
        /// Partition name.
        partition: String,
        /// Operation index.
        op: usize,
        /// Its kind.
        kind: PayloadOpKind,
        /// `writes` or `reads`.
        what: &'static str,
        /// How many bytes.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
}

impl PayloadPartition {
    /// Whether any operation reads the old partition.
    pub fn reads_source(&self) -> bool {
        self.operations.iter().any(|o| o.kind.reads_source())
    }

    /// Checks that this reader can apply every operation, before anything
    /// is written: the first operation it cannot apply is named.
    pub fn check_supported(&self) -> Result<(), Unsupported> {
        for (i, op) in self.operations.iter().enumerate() {
            if !op.kind.supported() {
                return Err(Unsupported::Kind {
                    partition: self.name.clone(),
                    op: i,
                    kind: op.kind,
                });
            }
            if op.kind.has_data() {
                for (what, blocks) in [("writes", op.dst_blocks()), ("reads", op.src_blocks())] {
                    let bytes = blocks.saturating_mul(BLOCK_SIZE);
                    if bytes > MAX_OP_BYTES {
                        return Err(Unsupported::TooLarge {
                            partition: self.name.clone(),
                            op: i,
                            kind: op.kind,
                            what,
                            bytes,
                            limit: MAX_OP_BYTES,
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

/// The hash tree an installer computes after the operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashTreeSpec {
    /// The blocks hashed.
    pub data: Extent,
    /// Where the tree goes (exactly its size).
    pub tree: Extent,
    /// The hash.
    pub algorithm: HashAlgorithm,
    /// The salt hashed before every block.
    pub salt: Vec<u8>,
}

/// The FEC an installer computes after the hash tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FecSpec {
    /// The blocks covered (usually data and tree).
    pub data: Extent,
    /// Where the parity goes (exactly its size).
    pub fec: Extent,
    /// Parity bytes per codeword.
    pub roots: u32,
}

/// A partition's verity fields, validated: every area within the
/// partition, the tree after the data it hashes, the FEC after the data it
/// covers, tree and FEC apart, each area of exactly the size its data
/// gives (so that an installer can compute both while reading the image
/// once, in order).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verity {
    /// The hash tree, if asked for.
    pub hash_tree: Option<HashTreeSpec>,
    /// The FEC, if asked for.
    pub fec: Option<FecSpec>,
}

impl Verity {
    /// Whether the manifest asks for neither.
    pub fn is_empty(&self) -> bool {
        self.hash_tree.is_none() && self.fec.is_none()
    }
}

impl Verity {
    /// The verity fields update_engine's generator gives a partition whose
    /// image carries the AVB hashtree descriptor `h`: the tree over the
    /// filesystem, the FEC (when it has one) over filesystem and tree.
    pub fn from_avb(h: &crate::avb::Hashtree) -> Result<Self, FormatError> {
        let bad = |d: String| FormatError::invalid("AVB hashtree descriptor", d);
        if h.dm_verity_version != 1
            || u64::from(h.data_block_size) != BLOCK_SIZE
            || u64::from(h.hash_block_size) != BLOCK_SIZE
        {
            return Err(bad(format!(
                "dm-verity version {}, blocks of {} / {} bytes: a payload carries version 1 with {BLOCK_SIZE}-byte blocks",
                h.dm_verity_version, h.data_block_size, h.hash_block_size
            )));
        }
        let blocks = |off: u64, len: u64, what: &str| -> Result<Extent, FormatError> {
            if !off.is_multiple_of(BLOCK_SIZE) || !len.is_multiple_of(BLOCK_SIZE) || len == 0 {
                return Err(bad(format!(
                    "{what} at {off}, {len} bytes: not whole blocks"
                )));
            }
            Ok(Extent::new(off / BLOCK_SIZE, len / BLOCK_SIZE))
        };
        let mut v = Verity {
            hash_tree: Some(HashTreeSpec {
                data: blocks(0, h.image_size, "data")?,
                tree: blocks(h.tree_offset, h.tree_size, "hash tree")?,
                algorithm: h.algorithm,
                salt: h.salt.clone(),
            }),
            fec: None,
        };
        if h.fec_num_roots > 0 {
            v.fec = Some(FecSpec {
                data: blocks(0, h.tree_offset + h.tree_size, "FEC data")?,
                fec: blocks(h.fec_offset, h.fec_size, "FEC")?,
                roots: h.fec_num_roots,
            });
        }
        Ok(v)
    }

    /// Checks these fields against a partition of `size` bytes, as a
    /// reader will.
    pub fn check(&self, size: u64) -> Result<(), FormatError> {
        let mut p = proto::PartitionUpdate::default();
        self.fill(&mut p);
        verity_of(&p, &ImageInfo { size, sha256: None }).map(|_| ())
    }

    /// Writes these fields into a manifest's partition.
    fn fill(&self, p: &mut proto::PartitionUpdate) {
        let one = |e: &Extent| Some(proto_extents(&[*e]).remove(0));
        if let Some(t) = &self.hash_tree {
            p.hash_tree_data_extent = one(&t.data);
            p.hash_tree_extent = one(&t.tree);
            p.hash_tree_algorithm = Some(t.algorithm.name().to_string());
            p.hash_tree_salt = Some(t.salt.clone());
        }
        if let Some(f) = &self.fec {
            p.fec_data_extent = one(&f.data);
            p.fec_extent = one(&f.fec);
            p.fec_roots = Some(f.roots);
        }
    }

    /// The blocks an installer computes (tree and FEC areas).
    pub fn computed(&self) -> Vec<Extent> {
        self.hash_tree
            .iter()
            .map(|t| t.tree)
            .chain(self.fec.iter().map(|f| f.fec))
            .collect()
    }
}

fn verity_of(p: &proto::PartitionUpdate, new: &ImageInfo) -> Result<Verity, FormatError> {
    let bad = |d: String| FormatError::invalid("payload verity", d);
    let blocks = new.size / BLOCK_SIZE;
    let area =
        |e: &Option<proto::Extent>, what: &'static str| -> Result<Option<Extent>, FormatError> {
            e.as_ref()
                .map(|e| extent(e, Some(blocks), what))
                .transpose()
        };
    let (tree_data, tree) = (
        area(&p.hash_tree_data_extent, "hash_tree_data_extent")?,
        area(&p.hash_tree_extent, "hash_tree_extent")?,
    );
    let (fec_data, fec) = (
        area(&p.fec_data_extent, "fec_data_extent")?,
        area(&p.fec_extent, "fec_extent")?,
    );
    let mut v = Verity::default();
    if (tree_data.is_some() || tree.is_some() || fec_data.is_some() || fec.is_some())
        && !new.size.is_multiple_of(BLOCK_SIZE)
    {
        return Err(bad(format!(
            "a partition of {} bytes (not whole blocks) with verity",
            new.size
        )));
    }
    match (tree_data, tree) {
        (None, None) => {}
        (Some(data), Some(tree)) => {
            let name = p.hash_tree_algorithm.as_deref().unwrap_or("");
            let algorithm = HashAlgorithm::from_name(name)?;
            if data.end_block() > tree.start_block {
                return Err(bad(format!(
                    "hash tree {tree} does not follow its data {data}"
                )));
            }
            let need = crate::verity::TreeShape::new(data.byte_len(), BLOCK_SIZE, algorithm).len();
            if tree.byte_len() != need {
                return Err(bad(format!(
                    "hash tree {tree} of {} bytes; a {} tree of {data} has {need}",
                    tree.byte_len(),
                    algorithm.name()
                )));
            }
            let salt = p.hash_tree_salt.clone().unwrap_or_default();
            if salt.len() > 256 {
                return Err(bad(format!("a salt of {} bytes", salt.len())));
            }
            v.hash_tree = Some(HashTreeSpec {
                data,
                tree,
                algorithm,
                salt,
            });
        }
        _ => {
            return Err(bad(
                "hash_tree_data_extent and hash_tree_extent come together".into(),
            ))
        }
    }
    match (fec_data, fec) {
        (None, None) => {}
        (Some(data), Some(fec)) => {
            let roots = p.fec_roots.unwrap_or(2);
            let layout = crate::fec::FecLayout::new(roots, BLOCK_SIZE as usize, data.byte_len())?;
            if data.end_block() > fec.start_block {
                return Err(bad(format!(
                    "FEC {fec} does not follow the data it covers {data}"
                )));
            }
            if fec.byte_len() != layout.len() {
                return Err(bad(format!(
                    "FEC {fec} of {} bytes; {roots} roots over {data} take {}",
                    fec.byte_len(),
                    layout.len()
                )));
            }
            if let Some(t) = &v.hash_tree {
                if t.tree.start_block < fec.end_block() && fec.start_block < t.tree.end_block() {
                    return Err(bad(format!("hash tree {} and FEC {fec} overlap", t.tree)));
                }
                if t.tree.start_block < data.end_block() && t.tree.end_block() > data.end_block() {
                    return Err(bad(format!(
                        "FEC data {data} ends inside the hash tree {}",
                        t.tree
                    )));
                }
            }
            v.fec = Some(FecSpec { data, fec, roots });
        }
        _ => return Err(bad("fec_data_extent and fec_extent come together".into())),
    }
    Ok(v)
}

/// The signatures of a payload, as recorded (not verified here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureBlob {
    /// Offset from the first blob byte.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
    /// How many signatures it holds.
    pub count: usize,
}

/// A parsed and validated payload, borrowing the payload's bytes.
#[derive(Debug, Clone)]
pub struct Payload<'a> {
    /// The header.
    pub header: PayloadHeader,
    /// The manifest as decoded.
    pub manifest: proto::DeltaArchiveManifest,
    /// The manifest's bytes.
    pub manifest_bytes: &'a [u8],
    /// The metadata signature's bytes.
    pub metadata_signature: &'a [u8],
    /// Signatures in the metadata signature (0 when unsigned).
    pub metadata_signatures: usize,
    /// The data blobs (from the first byte after the metadata signature).
    pub blobs: &'a [u8],
    /// The payload signatures, if any.
    pub signatures: Option<SignatureBlob>,
    /// The minor version (0: full payload).
    pub minor_version: u32,
    /// The partitions, validated.
    pub partitions: Vec<PayloadPartition>,
}

fn digest(v: &Option<Vec<u8>>, what: &'static str) -> Result<Option<Digest>, FormatError> {
    match v {
        None => Ok(None),
        Some(b) if b.is_empty() => Ok(None),
        Some(b) => b.as_slice().try_into().map(Some).map_err(|_| {
            FormatError::invalid(what, format!("{} bytes, a SHA-256 has 32", b.len()))
        }),
    }
}

fn extent(
    e: &proto::Extent,
    limit_blocks: Option<u64>,
    what: &'static str,
) -> Result<Extent, FormatError> {
    let (Some(start), Some(n)) = (e.start_block, e.num_blocks) else {
        return Err(FormatError::invalid(
            what,
            "an extent lacks its start or length",
        ));
    };
    if n == 0 {
        return Err(FormatError::invalid(what, "an extent of zero blocks"));
    }
    let end = start
        .checked_add(n)
        .ok_or_else(|| FormatError::invalid(what, "an extent ends past the address space"))?;
    if let Some(limit) = limit_blocks {
        if end > limit {
            return Err(FormatError::invalid(
                what,
                format!("extent {start}..{end} ends past the partition's {limit} blocks"),
            ));
        }
    }
    Ok(Extent::new(start, n))
}

fn image_info(
    i: &proto::PartitionInfo,
    what: &'static str,
) -> Result<Option<ImageInfo>, FormatError> {
    let sha256 = digest(&i.hash, what)?;
    let size = i.size.unwrap_or(0);
    if size == 0 && sha256.is_none() {
        return Ok(None);
    }
    if size > limits::MAX_PARTITION_SIZE {
        return Err(FormatError::TooLarge {
            what,
            value: size,
            limit: limits::MAX_PARTITION_SIZE,
        });
    }
    Ok(Some(ImageInfo { size, sha256 }))
}

/// The header, the metadata (header and manifest) and the metadata
/// signature at the start of `bytes`, their lengths checked against the
/// bytes that exist and the limits ([`limits::MAX_MANIFEST_LEN`],
/// [`MAX_SIGNATURE_BLOB`]); the manifest is not decoded (a signature
/// check comes first).
pub fn split_metadata(bytes: &[u8]) -> Result<(PayloadHeader, &[u8], &[u8]), FormatError> {
    let header = PayloadHeader::decode(bytes)?;
    let rest = (bytes.len() - HEADER_LEN) as u64;
    if header.manifest_len > limits::MAX_MANIFEST_LEN {
        return Err(FormatError::TooLarge {
            what: "payload manifest",
            value: header.manifest_len,
            limit: limits::MAX_MANIFEST_LEN,
        });
    }
    if header.manifest_len > rest {
        return Err(FormatError::Truncated {
            what: "payload manifest",
            need: header.manifest_len - rest,
            have: rest,
        });
    }
    let m_end = header.metadata_len() as usize;
    let sig_len = u64::from(header.metadata_signature_len);
    if sig_len > MAX_SIGNATURE_BLOB {
        return Err(FormatError::TooLarge {
            what: "payload metadata signature",
            value: sig_len,
            limit: MAX_SIGNATURE_BLOB,
        });
    }
    let rest = (bytes.len() - m_end) as u64;
    if sig_len > rest {
        return Err(FormatError::Truncated {
            what: "payload metadata signature",
            need: sig_len - rest,
            have: rest,
        });
    }
    let s_end = m_end + sig_len as usize;
    Ok((header, &bytes[..m_end], &bytes[m_end..s_end]))
}

impl<'a> Payload<'a> {
    /// Parses and validates a whole payload: `bytes` must hold exactly it.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FormatError> {
        let (header, metadata, metadata_signature) = split_metadata(bytes)?;
        let manifest_bytes = &metadata[HEADER_LEN..];
        let blobs = &bytes[metadata.len() + metadata_signature.len()..];
        let manifest = proto::DeltaArchiveManifest::decode(manifest_bytes)
            .map_err(|e| FormatError::invalid("payload manifest", e.to_string()))?;
        let metadata_signatures = if metadata_signature.is_empty() {
            0
        } else {
            proto::Signatures::decode(metadata_signature)
                .map_err(|e| FormatError::invalid("payload metadata signature", e.to_string()))?
                .signatures
                .len()
        };
        let mut payload = Payload {
            header,
            minor_version: manifest.minor_version.unwrap_or(0),
            partitions: Vec::new(),
            manifest_bytes,
            metadata_signature,
            metadata_signatures,
            blobs,
            signatures: None,
            manifest,
        };
        payload.validate()?;
        Ok(payload)
    }

    fn validate(&mut self) -> Result<(), FormatError> {
        let m = &self.manifest;
        if !m.install_operations.is_empty() || !m.kernel_install_operations.is_empty() {
            return Err(FormatError::invalid(
                "payload manifest",
                "major-version-1 operations in a version-2 payload",
            ));
        }
        let block_size = m.block_size.unwrap_or(BLOCK_SIZE as u32);
        if u64::from(block_size) != BLOCK_SIZE {
            return Err(FormatError::invalid(
                "payload manifest",
                format!("block size {block_size}: this reader handles {BLOCK_SIZE}-byte blocks"),
            ));
        }
        if m.partitions.len() as u64 > limits::MAX_PARTITIONS {
            return Err(FormatError::TooLarge {
                what: "payload partitions",
                value: m.partitions.len() as u64,
                limit: limits::MAX_PARTITIONS,
            });
        }
        let blobs_len = self.blobs.len() as u64;
        // The end of the last thing the blobs hold.
        let mut used_end = 0u64;
        let signatures_size = m.signatures_size.unwrap_or(0);
        if signatures_size > 0 {
            let offset = m.signatures_offset.ok_or_else(|| {
                FormatError::invalid(
                    "payload manifest",
                    "signatures_size without signatures_offset",
                )
            })?;
            if signatures_size > MAX_SIGNATURE_BLOB {
                return Err(FormatError::TooLarge {
                    what: "payload signatures",
                    value: signatures_size,
                    limit: MAX_SIGNATURE_BLOB,
                });
            }
            let end = offset
                .checked_add(signatures_size)
                .filter(|&e| e <= blobs_len);
            let Some(end) = end else {
                return Err(FormatError::Truncated {
                    what: "payload signatures",
                    need: offset
                        .saturating_add(signatures_size)
                        .saturating_sub(blobs_len),
                    have: blobs_len.saturating_sub(offset),
                });
            };
            let sigs = proto::Signatures::decode(&self.blobs[offset as usize..end as usize])
                .map_err(|e| FormatError::invalid("payload signatures", e.to_string()))?;
            self.signatures = Some(SignatureBlob {
                offset,
                len: signatures_size,
                count: sigs.signatures.len(),
            });
            used_end = end;
        }
        let mut partitions = Vec::with_capacity(m.partitions.len());
        for p in &m.partitions {
            let name = p.partition_name.clone().ok_or_else(|| {
                FormatError::invalid("payload partition", "a partition has no name")
            })?;
            check_partition_name(&name)?;
            if partitions.iter().any(|q: &PayloadPartition| q.name == name) {
                return Err(FormatError::invalid(
                    "payload partition",
                    format!("{name} appears twice"),
                ));
            }
            let new = p
                .new_partition_info
                .as_ref()
                .map(|i| image_info(i, "new_partition_info"))
                .transpose()?
                .flatten()
                .filter(|i| i.sha256.is_some())
                .ok_or_else(|| {
                    FormatError::invalid(
                        "payload partition",
                        format!("{name}: no new_partition_info size and hash"),
                    )
                })?;
            let old = p
                .old_partition_info
                .as_ref()
                .map(|i| image_info(i, "old_partition_info"))
                .transpose()?
                .flatten();
            let in_partition = |e: &str| -> FormatError {
                FormatError::Invalid {
                    what: "payload operation",
                    detail: format!("partition {name}: {e}"),
                }
            };
            let mut operations = Vec::with_capacity(p.operations.len());
            for (i, o) in p.operations.iter().enumerate() {
                let at = |e: FormatError| in_partition(&format!("operation {i}: {e}"));
                let kind = PayloadOpKind::from_code(
                    o.r#type
                        .ok_or_else(|| at(FormatError::invalid("operation", "no type")))?,
                );
                let dst_extents = o
                    .dst_extents
                    .iter()
                    .map(|e| extent(e, Some(new.blocks()), "destination"))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(at)?;
                if dst_extents.is_empty() {
                    return Err(at(FormatError::invalid(
                        "operation",
                        "no destination extents",
                    )));
                }
                let src_limit = old.map(|o| o.blocks());
                let src_extents = o
                    .src_extents
                    .iter()
                    .map(|e| extent(e, src_limit, "source"))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(at)?;
                if !kind.reads_source() && !src_extents.is_empty() {
                    return Err(at(FormatError::invalid(
                        "operation",
                        format!("{kind} has source extents"),
                    )));
                }
                if kind.reads_source() && kind.supported() && src_extents.is_empty() {
                    return Err(at(FormatError::invalid(
                        "operation",
                        format!("{kind} has no source extents"),
                    )));
                }
                if kind == PayloadOpKind::SourceCopy
                    && romdelta_format::blocks_in(&src_extents)
                        != romdelta_format::blocks_in(&dst_extents)
                {
                    return Err(at(FormatError::invalid(
                        "operation",
                        "SOURCE_COPY reads and writes different numbers of blocks",
                    )));
                }
                let data_length = o.data_length.unwrap_or(0);
                // An offset without data means nothing (and is not checked).
                let data_offset = if data_length > 0 {
                    o.data_offset.unwrap_or(0)
                } else {
                    0
                };
                if !kind.has_data() && data_length != 0 {
                    return Err(at(FormatError::invalid(
                        "operation",
                        format!("{kind} carries {data_length} bytes of data"),
                    )));
                }
                if data_length > 0 {
                    if o.data_offset.is_none() {
                        return Err(at(FormatError::invalid(
                            "operation",
                            "data without an offset",
                        )));
                    }
                    let end = data_offset
                        .checked_add(data_length)
                        .filter(|&e| e <= blobs_len);
                    let Some(end) = end else {
                        return Err(at(FormatError::Truncated {
                            what: "operation data",
                            need: data_offset
                                .saturating_add(data_length)
                                .saturating_sub(blobs_len),
                            have: blobs_len.saturating_sub(data_offset),
                        }));
                    };
                    used_end = used_end.max(end);
                }
                operations.push(PayloadOp {
                    kind,
                    data_offset,
                    data_length,
                    src_extents,
                    dst_extents,
                    data_sha256: digest(&o.data_sha256_hash, "data_sha256_hash").map_err(at)?,
                    src_sha256: digest(&o.src_sha256_hash, "src_sha256_hash").map_err(at)?,
                });
            }
            // Destinations never overlap: operations may run in any order.
            let mut all: Vec<Extent> = operations
                .iter()
                .flat_map(|o| o.dst_extents.iter().copied())
                .collect();
            all.sort_unstable();
            if let Some(w) = all.windows(2).find(|w| w[1].start_block < w[0].end_block()) {
                return Err(in_partition(&format!(
                    "destination blocks {} and {} overlap",
                    w[0], w[1]
                )));
            }
            let verity = verity_of(p, &new).map_err(|e| in_partition(&e.to_string()))?;
            partitions.push(PayloadPartition {
                name,
                old,
                new,
                operations,
                verity,
                version: p.version.clone(),
            });
        }
        if blobs_len > used_end {
            return Err(FormatError::Trailing {
                what: "payload (after the last data blob)",
                extra: blobs_len - used_end,
            });
        }
        self.partitions = partitions;
        Ok(())
    }

    /// The data of `op` (empty for kinds without data).
    pub fn op_data(&self, op: &PayloadOp) -> &'a [u8] {
        &self.blobs[op.data_offset as usize..(op.data_offset + op.data_length) as usize]
    }

    /// Whether any partition reads the old build (an incremental payload).
    pub fn is_incremental(&self) -> bool {
        self.partitions
            .iter()
            .any(|p| p.old.is_some() || p.reads_source())
    }

    /// The whole payload's length.
    pub fn len(&self) -> u64 {
        HEADER_LEN as u64
            + self.manifest_bytes.len() as u64
            + self.metadata_signature.len() as u64
            + self.blobs.len() as u64
    }

    /// Whether the payload is empty (never: a parsed payload has a header).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The partition called `name`.
    pub fn partition(&self, name: &str) -> Option<&PayloadPartition> {
        self.partitions.iter().find(|p| p.name == name)
    }
}

/// The bytes of a payload made of `manifest`, `metadata_signature` and
/// `blobs` (for tools and tests that rewrite a payload's manifest).
pub fn encode_payload(
    manifest: &proto::DeltaArchiveManifest,
    metadata_signature: &[u8],
    blobs: &[u8],
) -> Vec<u8> {
    let m = manifest.encode_to_vec();
    let header = PayloadHeader {
        major_version: MAJOR_VERSION,
        manifest_len: m.len() as u64,
        metadata_signature_len: u32::try_from(metadata_signature.len())
            .expect("a metadata signature fits in 4 GiB"),
    };
    let mut out = header.encode().to_vec();
    out.extend(m);
    out.extend_from_slice(metadata_signature);
    out.extend_from_slice(blobs);
    out
}

/// Builds an unsigned payload: partitions are added with their operations
/// and data, then [`PayloadWriter::finish`] writes header, manifest and
/// blobs.
#[derive(Debug, Default)]
pub struct PayloadWriter {
    manifest: proto::DeltaArchiveManifest,
    data_len: u64,
    metadata_signature_len: u32,
}

/// One operation to add with [`PayloadWriter::push_op`]; its data goes to
/// the blob stream the caller writes, in the order operations are pushed.
#[derive(Debug, Clone)]
pub struct NewOp {
    /// Its kind.
    pub kind: PayloadOpKind,
    /// Source blocks.
    pub src_extents: Vec<Extent>,
    /// Destination blocks.
    pub dst_extents: Vec<Extent>,
    /// SHA-256 of the source blocks (for kinds that read the source).
    pub src_sha256: Option<Digest>,
    /// The data's length (its bytes are written by the caller).
    pub data_length: u64,
    /// SHA-256 of the data.
    pub data_sha256: Option<Digest>,
}

fn proto_extents(v: &[Extent]) -> Vec<proto::Extent> {
    v.iter()
        .map(|e| proto::Extent {
            start_block: Some(e.start_block),
            num_blocks: Some(e.num_blocks),
        })
        .collect()
}

impl PayloadWriter {
    /// A writer of a payload of `minor_version` ([`FULL_MINOR_VERSION`] or
    /// [`DELTA_MINOR_VERSION`]).
    pub fn new(minor_version: u32) -> Self {
        PayloadWriter {
            manifest: proto::DeltaArchiveManifest {
                block_size: Some(BLOCK_SIZE as u32),
                minor_version: Some(minor_version),
                ..Default::default()
            },
            data_len: 0,
            metadata_signature_len: 0,
        }
    }

    /// Makes room for signatures of `size` bytes (a `Signatures` message,
    /// see [`crate::signature::signatures_size`]): the metadata signature
    /// after the manifest, the payload signature after the blobs pushed so
    /// far (push no more after this).
    pub fn reserve_signatures(&mut self, size: u64) {
        self.manifest.signatures_offset = Some(self.data_len);
        self.manifest.signatures_size = Some(size);
        self.metadata_signature_len =
            u32::try_from(size).expect("a signature message fits in 4 GiB");
    }

    /// Sets the newest timestamp of the build the payload installs
    /// (`max_timestamp`: update_engine refuses a payload older than the
    /// running build).
    pub fn set_max_timestamp(&mut self, t: i64) {
        self.manifest.max_timestamp = Some(t);
    }

    /// Starts partition `name`, which turns an image of `old` into `new`.
    pub fn push_partition(&mut self, name: &str, old: Option<ImageInfo>, new: ImageInfo) {
        let info = |i: ImageInfo| proto::PartitionInfo {
            size: Some(i.size),
            hash: i.sha256.map(|h| h.to_vec()),
        };
        self.manifest.partitions.push(proto::PartitionUpdate {
            partition_name: Some(name.to_string()),
            old_partition_info: old.map(info),
            new_partition_info: Some(info(new)),
            ..Default::default()
        });
    }

    /// Asks the installer to compute `verity` into the last partition after
    /// its operations.
    pub fn set_verity(&mut self, verity: &Verity) {
        let p = self
            .manifest
            .partitions
            .last_mut()
            .expect("push_partition first");
        verity.fill(p);
    }

    /// Adds an operation to the last partition; its data (if any) is the
    /// next `op.data_length` bytes of the blobs. Returns its data offset.
    pub fn push_op(&mut self, op: NewOp) -> u64 {
        let offset = self.data_len;
        let p = self
            .manifest
            .partitions
            .last_mut()
            .expect("push_partition first");
        p.operations.push(proto::InstallOperation {
            r#type: Some(op.kind.code()),
            data_offset: (op.data_length > 0).then_some(offset),
            data_length: (op.data_length > 0).then_some(op.data_length),
            src_extents: proto_extents(&op.src_extents),
            dst_extents: proto_extents(&op.dst_extents),
            data_sha256_hash: op.data_sha256.map(|h| h.to_vec()),
            src_sha256_hash: op.src_sha256.map(|h| h.to_vec()),
            ..Default::default()
        });
        self.data_len += op.data_length;
        offset
    }

    /// Bytes of blobs so far.
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// The header and manifest (the payload's metadata): what precedes
    /// the metadata signature, if any, and the blobs.
    pub fn finish(&self) -> Vec<u8> {
        let manifest = self.manifest.encode_to_vec();
        let header = PayloadHeader {
            major_version: MAJOR_VERSION,
            manifest_len: manifest.len() as u64,
            metadata_signature_len: self.metadata_signature_len,
        };
        let mut out = header.encode().to_vec();
        out.extend(manifest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small full payload of two partitions: REPLACE_XZ, REPLACE_BZ,
    /// REPLACE, ZERO; and an incremental one over it.
    fn sample() -> (Vec<u8>, Vec<u8>) {
        let a: Vec<u8> = (0..3 * 4096u32).map(|i| (i % 251) as u8).collect();
        let b: Vec<u8> = [vec![7u8; 4096], vec![0; 4096]].concat();
        let mut w = PayloadWriter::new(FULL_MINOR_VERSION);
        let mut blobs = Vec::new();
        let mut add = |w: &mut PayloadWriter, kind, dst: Vec<Extent>, data: Vec<u8>| {
            w.push_op(NewOp {
                kind,
                src_extents: vec![],
                dst_extents: dst,
                src_sha256: None,
                data_length: data.len() as u64,
                data_sha256: (!data.is_empty()).then(|| romdelta_format::sha256(&data)),
            });
            blobs.extend(data);
        };
        let info = |d: &[u8]| ImageInfo {
            size: d.len() as u64,
            sha256: Some(romdelta_format::sha256(d)),
        };
        w.push_partition("a", None, info(&a));
        add(
            &mut w,
            PayloadOpKind::ReplaceXz,
            vec![Extent::new(0, 1)],
            ops::encode_xz(&a[..4096]),
        );
        add(
            &mut w,
            PayloadOpKind::ReplaceBz,
            vec![Extent::new(1, 1)],
            ops::encode_bz2(&a[4096..8192]),
        );
        add(
            &mut w,
            PayloadOpKind::Replace,
            vec![Extent::new(2, 1)],
            a[8192..].to_vec(),
        );
        w.push_partition("b", None, info(&b));
        add(
            &mut w,
            PayloadOpKind::ReplaceXz,
            vec![Extent::new(0, 1)],
            ops::encode_xz(&b[..4096]),
        );
        add(&mut w, PayloadOpKind::Zero, vec![Extent::new(1, 1)], vec![]);
        let mut full = w.finish();
        full.extend(&blobs);
        // Incremental: a's blocks rotated, b patched.
        let mut w = PayloadWriter::new(DELTA_MINOR_VERSION);
        w.push_partition("a", Some(info(&a)), info(&a));
        w.push_op(NewOp {
            kind: PayloadOpKind::SourceCopy,
            src_extents: vec![Extent::new(0, 3)],
            dst_extents: vec![Extent::new(0, 3)],
            src_sha256: Some(romdelta_format::sha256(&a)),
            data_length: 0,
            data_sha256: None,
        });
        let mut patch = Vec::new();
        romdelta_format::bsdiff40::diff(&b, &a[..8192], &mut patch).unwrap();
        w.push_partition("b", Some(info(&b)), info(&a[..8192]));
        w.push_op(NewOp {
            kind: PayloadOpKind::SourceBsdiff,
            src_extents: vec![Extent::new(0, 2)],
            dst_extents: vec![Extent::new(0, 2)],
            src_sha256: Some(romdelta_format::sha256(&b)),
            data_length: patch.len() as u64,
            data_sha256: Some(romdelta_format::sha256(&patch)),
        });
        let mut delta = w.finish();
        delta.extend(patch);
        (full, delta)
    }

    #[test]
    fn written_payloads_parse_back() {
        let (full, delta) = sample();
        let p = Payload::parse(&full).unwrap();
        assert_eq!(p.minor_version, 0);
        assert!(!p.is_incremental());
        assert_eq!(p.partitions.len(), 2);
        assert_eq!(p.partitions[0].operations[1].kind, PayloadOpKind::ReplaceBz);
        for part in &p.partitions {
            part.check_supported().unwrap();
        }
        let d = Payload::parse(&delta).unwrap();
        assert!(d.is_incremental());
        assert_eq!(
            d.partitions[1].operations[0].kind,
            PayloadOpKind::SourceBsdiff
        );
        assert_eq!(d.len(), delta.len() as u64);
    }

    #[test]
    fn every_truncation_is_refused() {
        let (full, delta) = sample();
        for bytes in [&full, &delta] {
            for n in 0..bytes.len() {
                assert!(Payload::parse(&bytes[..n]).is_err(), "truncated to {n}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(Payload::parse(&longer).is_err());
        }
    }

    fn reencode(bytes: &[u8], edit: impl Fn(&mut proto::DeltaArchiveManifest)) -> Vec<u8> {
        let p = Payload::parse(bytes).unwrap();
        let mut m = p.manifest.clone();
        edit(&mut m);
        encode_payload(&m, p.metadata_signature, p.blobs)
    }

    #[test]
    fn structural_errors_are_refused() {
        let (full, delta) = sample();
        type Edit = Box<dyn Fn(&mut proto::DeltaArchiveManifest)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("block size", Box::new(|m| m.block_size = Some(1024))),
            (
                "extent past the end",
                Box::new(|m| m.partitions[0].operations[0].dst_extents[0].start_block = Some(3)),
            ),
            (
                "overlap",
                Box::new(|m| m.partitions[0].operations[1].dst_extents[0].start_block = Some(0)),
            ),
            (
                "hash length",
                Box::new(|m| m.partitions[0].operations[0].data_sha256_hash = Some(vec![1, 2, 3])),
            ),
            (
                "data past the end",
                Box::new(|m| m.partitions[0].operations[0].data_offset = Some(1 << 40)),
            ),
            (
                "no new info",
                Box::new(|m| m.partitions[0].new_partition_info = None),
            ),
            (
                "duplicate",
                Box::new(|m| m.partitions[1].partition_name = Some("a".into())),
            ),
            (
                "bad name",
                Box::new(|m| m.partitions[1].partition_name = Some("../etc".into())),
            ),
            (
                "zero data",
                Box::new(|m| m.partitions[1].operations[1].data_length = Some(5)),
            ),
            (
                "data offset without data is harmless",
                Box::new(|m| m.partitions[1].operations[1].data_offset = Some(1 << 40)),
            ),
            (
                "v1 ops",
                Box::new(|m| m.install_operations.push(Default::default())),
            ),
        ];
        for (what, edit) in &cases {
            match Payload::parse(&reencode(&full, edit)) {
                Ok(p) if what.ends_with("harmless") => {
                    let op = &p.partitions[1].operations[1];
                    assert!(p.op_data(op).is_empty());
                }
                r => assert!(r.is_err(), "{what}"),
            }
        }
        // Source extents past the old image.
        let bad = reencode(&delta, |m| {
            m.partitions[0].operations[0].src_extents[0].num_blocks = Some(4)
        });
        assert!(Payload::parse(&bad).is_err());
        // An unknown version or magic.
        let mut v = full.clone();
        v[11] = 1;
        assert!(Payload::parse(&v).is_err());
        let mut v = full.clone();
        v[0] = b'X';
        assert!(Payload::parse(&v).is_err());
    }

    #[test]
    fn unsupported_kinds_parse_and_are_named_by_check_supported() {
        let (_, delta) = sample();
        // MOVE carries no data: it replaces partition a's SOURCE_COPY.
        for (part, code) in [(0, 2), (1, 3), (1, 99)] {
            let bytes = reencode(&delta, |m| {
                m.partitions[part].operations[0].r#type = Some(code)
            });
            let p = Payload::parse(&bytes).unwrap();
            let e = p.partitions[part]
                .check_supported()
                .unwrap_err()
                .to_string();
            let name = ["a", "b"][part];
            assert!(e.contains(&format!("partition {name}, operation 0")), "{e}");
            assert!(
                e.contains(PayloadOpKind::from_code(code).name()) || code == 99,
                "{e}"
            );
        }
        for k in PayloadOpKind::ALL {
            assert_eq!(PayloadOpKind::from_code(k.code()), k);
        }
    }
}
