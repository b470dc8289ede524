//! The romdelta package format, version 5 (and versions 2 to 4, which it extends).
//!
//! This crate is the only place in romdelta that parses untrusted bytes. It
//! does no I/O of its own: it turns bytes into typed, structurally valid
//! values ([`Package`], [`Manifest`], [`Operation`]) and back, and it decodes
//! operation data ([`ops`]) into caller-sized buffers. Every length or count
//! read from input is checked against the bytes that remain before anything
//! is allocated, and no list reserves room for more elements than those
//! bytes could hold in memory ([`Reader::vec_for`]): a hostile package
//! makes the reader allocate in proportion to its own bytes, never to the
//! numbers it claims (at most about 50 bytes per manifest byte). Appliers
//! read a package's [`Prefix`], check its signatures and only then decode
//! its manifest. The byte layout is specified in
//! `docs/FORMAT.md`. Android's formats (payload.bin, OTA zips, verity)
//! live in `romdelta-android`, under the same rules.

pub mod branchdelta;
pub mod bsdiff40;
pub mod buildprop;
mod codec;
pub mod crosspart;
pub mod deflate_rebuild;
mod error;
mod extent;
pub mod fielddelta;
pub mod inplace;
pub mod journal;
pub mod lz4_rebuild;
mod manifest;
pub mod ops;
mod package;
pub mod placement;
pub mod recompress;
pub mod signing;
pub mod sparse;
#[cfg(test)]
mod testkit;
pub mod xz_rebuild;
pub mod zstd_rebuild;

pub use codec::{Reader, Writer};
pub use error::FormatError;
pub use extent::{blocks_in, Extent};
pub use manifest::{
    check_partition_name, max_data_len, BuildInfo, Codec, CodecLibrary, Manifest, OpKind,
    Operation, PackageKind, PartitionInfo, PartitionUpdate, RemovedPartition,
};
pub use package::{Header, Package, Prefix, Signature, HEADER_LEN, MAGIC};

/// Size of a block in bytes; every extent counts blocks of this size.
pub const BLOCK_SIZE: u64 = 4096;
/// The newest package format version this crate reads and writes. A
/// package is written with the oldest version that can express it (see
/// [`Manifest::format_version`]), so older readers keep reading packages that
/// use none of the newer features.
pub const FORMAT_VERSION: u32 = 6;

/// The oldest package format version this crate reads.
pub const OLDEST_FORMAT_VERSION: u32 = 2;
/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// Limits that bound what a package may ask of a reader.
pub mod limits {
    /// Largest manifest accepted, in bytes.
    pub const MAX_MANIFEST_LEN: u64 = 256 << 20;
    /// Largest signature section accepted, in bytes.
    pub const MAX_SIGNATURES_LEN: u64 = 1 << 20;
    /// Most partitions in one package.
    pub const MAX_PARTITIONS: u64 = 256;
    /// Longest string field (names, build identity), in bytes.
    pub const MAX_STRING_LEN: u64 = 256;
    /// Longest partition name, in bytes.
    pub const MAX_NAME_LEN: usize = 64;
    /// Most destination blocks one operation may write (64 MiB).
    pub const MAX_OP_DST_BLOCKS: u64 = 16384;
    /// Most source blocks one data-carrying operation may read (64 MiB).
    pub const MAX_OP_SRC_BLOCKS: u64 = 16384;
    /// Most source/destination blocks one SOURCE_COPY or ZERO operation may cover (1 GiB);
    /// these are executed in bounded chunks.
    pub const MAX_COPY_BLOCKS: u64 = 1 << 18;
    /// Largest partition accepted (16 TiB).
    pub const MAX_PARTITION_SIZE: u64 = 1 << 44;
    /// Apply memory (MiB) a package may ask for before a reader refuses it
    /// as nonsense (64 GiB).
    pub const MAX_APPLY_MEMORY_MIB: u64 = 1 << 16;
    /// Most blocks the stash of one in-place stage may hold (256 MiB).
    pub const MAX_STAGE_STASH_BLOCKS: u64 = 1 << 16;
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Digest {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).into()
}

/// Lower-case hex of a digest, for messages.
pub fn hex_digest(d: &Digest) -> String {
    hex::encode(d)
}

/// Test support: checks `seed` against the committed fuzz seed
/// `fuzz/corpus/{target}/{name}`, writing it first when
/// `ROMDELTA_WRITE_FUZZ_SEEDS` is set (after a format change).
#[cfg(test)]
pub(crate) fn check_fuzz_seed(target: &str, name: &str, seed: &[u8]) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
        .join(name);
    if std::env::var_os("ROMDELTA_WRITE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(path.parent().expect("a directory")).unwrap();
        std::fs::write(&path, seed).unwrap();
    }
    assert!(
        std::fs::read(&path).unwrap() == seed,
        "{}: stale seed",
        path.display()
    );
}
