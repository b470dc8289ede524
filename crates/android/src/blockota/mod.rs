//! Block-based OTAs of non-A/B devices, as Android's releasetools writes
//! them and recovery's updater applies them: per partition a transfer list
//! (`NAME.transfer.list`, versions 1 to 4), the new blocks in order
//! (`NAME.new.dat`, or brotli's `.new.dat.br`, or `.new.dat.lzma`) and the
//! patches back to back (`NAME.patch.dat`). docs/BLOCKOTA.md describes the
//! format as romdelta reads it.
//!
//! [`TransferList::parse`] checks every line before anything uses it:
//! ranges well formed and within [`MAX_BLOCKS`], source buffers whose
//! pieces tile them, patch slices inside `patch.dat`, stash ids of the
//! right form. [`NewData`] reads the new blocks of any of the three forms
//! as one stream.

mod newdata;
mod package;
mod ranges;
mod transfer;

pub use newdata::{NewData, NewDataKind};
pub use package::{Package, PackageError, PartitionOta, MAX_INFLATED_PATCH};
pub use ranges::RangeSet;
pub use transfer::{Command, PatchKind, Source, StashPiece, TransferList};

/// Block size of every transfer list.
pub const BLOCK: u64 = 4096;
/// Most blocks a partition may have (16 TiB).
pub const MAX_BLOCKS: u64 = 1 << 32;
/// Most blocks a `move`, a patch or a `stash` may read or write (1 GiB):
/// its buffers are held whole.
pub const MAX_BUFFER_BLOCKS: u64 = 1 << 18;
/// Most bytes of a transfer list read.
pub const MAX_LIST: u64 = 64 << 20;

/// The SHA-1 of `bytes` in lower-case hex, as transfer lists write hashes
/// and stash ids.
pub fn sha1_hex(bytes: &[u8]) -> String {
    use sha1::Digest as _;
    sha1::Sha1::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
