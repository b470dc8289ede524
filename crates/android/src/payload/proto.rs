//! The protobuf messages of an Android `payload.bin` manifest, as
//! `update_metadata.proto` of AOSP's update_engine defines them (proto2).
//! Only the fields this reader and writer use are declared; prost skips the
//! others. Field numbers and types are the proto's: they are the contract.

/// A run of blocks of the partition (`block_size` bytes each).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Extent {
    /// First block.
    #[prost(uint64, optional, tag = "1")]
    pub start_block: Option<u64>,
    /// Number of blocks.
    #[prost(uint64, optional, tag = "2")]
    pub num_blocks: Option<u64>,
}

/// The payload's signatures (the metadata signature and the payload
/// signature blobs both hold this message).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Signatures {
    /// One signature per key.
    #[prost(message, repeated, tag = "1")]
    pub signatures: Vec<Signature>,
}

/// One signature.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Signature {
    /// Deprecated version field.
    #[prost(uint32, optional, tag = "1")]
    pub version: Option<u32>,
    /// The signature bytes (padded to a fixed size by some signers).
    #[prost(bytes = "vec", optional, tag = "2")]
    pub data: Option<Vec<u8>>,
    /// The signature's size before padding.
    #[prost(fixed32, optional, tag = "3")]
    pub unpadded_signature_size: Option<u32>,
}

/// Size and SHA-256 of a whole partition image.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PartitionInfo {
    /// Size in bytes.
    #[prost(uint64, optional, tag = "1")]
    pub size: Option<u64>,
    /// SHA-256 of the image.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub hash: Option<Vec<u8>>,
}

/// One install operation.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct InstallOperation {
    /// The operation type (see [`super::PayloadOpKind`]); required.
    #[prost(int32, optional, tag = "1")]
    pub r#type: Option<i32>,
    /// Offset of the operation's data from the start of the data blobs.
    #[prost(uint64, optional, tag = "2")]
    pub data_offset: Option<u64>,
    /// Length of the operation's data.
    #[prost(uint64, optional, tag = "3")]
    pub data_length: Option<u64>,
    /// Blocks of the old partition the operation reads.
    #[prost(message, repeated, tag = "4")]
    pub src_extents: Vec<Extent>,
    /// Bytes of the source used (legacy bsdiff operations).
    #[prost(uint64, optional, tag = "5")]
    pub src_length: Option<u64>,
    /// Blocks of the new partition the operation writes.
    #[prost(message, repeated, tag = "6")]
    pub dst_extents: Vec<Extent>,
    /// Bytes of the destination written (legacy bsdiff operations).
    #[prost(uint64, optional, tag = "7")]
    pub dst_length: Option<u64>,
    /// SHA-256 of the operation's data.
    #[prost(bytes = "vec", optional, tag = "8")]
    pub data_sha256_hash: Option<Vec<u8>>,
    /// SHA-256 of the source blocks, in extent order.
    #[prost(bytes = "vec", optional, tag = "9")]
    pub src_sha256_hash: Option<Vec<u8>>,
}

/// The update of one partition.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PartitionUpdate {
    /// Partition name (`system`, `boot`, ...); required.
    #[prost(string, optional, tag = "1")]
    pub partition_name: Option<String>,
    /// Whether a postinstall program runs.
    #[prost(bool, optional, tag = "2")]
    pub run_postinstall: Option<bool>,
    /// The postinstall program's path.
    #[prost(string, optional, tag = "3")]
    pub postinstall_path: Option<String>,
    /// The file system type of the postinstall mount.
    #[prost(string, optional, tag = "4")]
    pub filesystem_type: Option<String>,
    /// Signatures of the new partition.
    #[prost(message, repeated, tag = "5")]
    pub new_partition_signature: Vec<Signature>,
    /// The image the update applies to (incremental payloads).
    #[prost(message, optional, tag = "6")]
    pub old_partition_info: Option<PartitionInfo>,
    /// The image the update produces.
    #[prost(message, optional, tag = "7")]
    pub new_partition_info: Option<PartitionInfo>,
    /// The operations, in order.
    #[prost(message, repeated, tag = "8")]
    pub operations: Vec<InstallOperation>,
    /// Whether a failing postinstall is tolerated.
    #[prost(bool, optional, tag = "9")]
    pub postinstall_optional: Option<bool>,
    /// Blocks the dm-verity hash tree is computed over.
    #[prost(message, optional, tag = "10")]
    pub hash_tree_data_extent: Option<Extent>,
    /// Blocks the device writes the hash tree to.
    #[prost(message, optional, tag = "11")]
    pub hash_tree_extent: Option<Extent>,
    /// Hash algorithm of the hash tree.
    #[prost(string, optional, tag = "12")]
    pub hash_tree_algorithm: Option<String>,
    /// Salt of the hash tree.
    #[prost(bytes = "vec", optional, tag = "13")]
    pub hash_tree_salt: Option<Vec<u8>>,
    /// Blocks the forward error correction code is computed over.
    #[prost(message, optional, tag = "14")]
    pub fec_data_extent: Option<Extent>,
    /// Blocks the device writes the error correction code to.
    #[prost(message, optional, tag = "15")]
    pub fec_extent: Option<Extent>,
    /// Reed-Solomon roots of the error correction code.
    #[prost(uint32, optional, tag = "16")]
    pub fec_roots: Option<u32>,
    /// Version of the partition (a timestamp, for downgrade checks).
    #[prost(string, optional, tag = "17")]
    pub version: Option<String>,
    /// Estimated size of the copy-on-write device (Virtual A/B).
    #[prost(uint64, optional, tag = "19")]
    pub estimate_cow_size: Option<u64>,
}

/// A group of dynamic partitions.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct DynamicPartitionGroup {
    /// Group name.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// Most bytes the group's partitions may take.
    #[prost(uint64, optional, tag = "2")]
    pub size: Option<u64>,
    /// The partitions of the group.
    #[prost(string, repeated, tag = "3")]
    pub partition_names: Vec<String>,
}

/// How the device lays out its dynamic partitions.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct DynamicPartitionMetadata {
    /// The groups.
    #[prost(message, repeated, tag = "1")]
    pub groups: Vec<DynamicPartitionGroup>,
    /// Whether the update uses Virtual A/B snapshots.
    #[prost(bool, optional, tag = "2")]
    pub snapshot_enabled: Option<bool>,
    /// Whether the snapshots are compressed (Virtual A/B compression).
    #[prost(bool, optional, tag = "3")]
    pub vabc_enabled: Option<bool>,
    /// The compression of the snapshots.
    #[prost(string, optional, tag = "4")]
    pub vabc_compression_param: Option<String>,
}

/// The manifest of a major-version-2 payload.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeltaArchiveManifest {
    /// Major-version-1 operations (must be absent in version 2).
    #[prost(message, repeated, tag = "1")]
    pub install_operations: Vec<InstallOperation>,
    /// Major-version-1 kernel operations (must be absent in version 2).
    #[prost(message, repeated, tag = "2")]
    pub kernel_install_operations: Vec<InstallOperation>,
    /// Bytes per block of every extent (default 4096).
    #[prost(uint32, optional, tag = "3")]
    pub block_size: Option<u32>,
    /// Offset of the payload signatures from the start of the data blobs.
    #[prost(uint64, optional, tag = "4")]
    pub signatures_offset: Option<u64>,
    /// Length of the payload signatures.
    #[prost(uint64, optional, tag = "5")]
    pub signatures_size: Option<u64>,
    /// The minor version: 0 for a full payload, 2 and up for incremental ones.
    #[prost(uint32, optional, tag = "12")]
    pub minor_version: Option<u32>,
    /// The partitions.
    #[prost(message, repeated, tag = "13")]
    pub partitions: Vec<PartitionUpdate>,
    /// The newest build timestamp of the payload (downgrade protection).
    #[prost(int64, optional, tag = "14")]
    pub max_timestamp: Option<i64>,
    /// Dynamic partitions.
    #[prost(message, optional, tag = "15")]
    pub dynamic_partition_metadata: Option<DynamicPartitionMetadata>,
    /// Whether only some of the device's partitions are updated.
    #[prost(bool, optional, tag = "16")]
    pub partial_update: Option<bool>,
}
