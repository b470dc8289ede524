//! The superblock: 128 bytes at byte 1024 of the image.

use crate::image::{le16, le32, le64, Image};
use crate::ErofsError;

/// Byte offset of the superblock.
pub const SUPERBLOCK_OFFSET: u64 = 1024;
/// Length of the superblock's fixed part.
pub const SUPERBLOCK_LEN: u64 = 128;
/// The magic number at the start of the superblock.
pub const MAGIC: u32 = 0xE0F5_E1E2;

/// `feature_compat`: the superblock carries a CRC32C of its block, checked.
pub const COMPAT_SB_CHKSUM: u32 = 0x1;
/// `feature_incompat`: compressed data is padded with zeros in front.
pub const INCOMPAT_ZERO_PADDING: u32 = 0x1;
/// `feature_incompat`: compression configurations and big pclusters.
pub const INCOMPAT_BIG_PCLUSTER: u32 = 0x2;
/// `feature_incompat`: chunk-based files.
pub const INCOMPAT_CHUNKED_FILE: u32 = 0x4;
/// `feature_incompat`: a device table, or HEAD2 clusters.
pub const INCOMPAT_DEVICE_TABLE: u32 = 0x8;
/// `feature_incompat`: compressed tails inline in the metadata.
pub const INCOMPAT_ZTAILPACKING: u32 = 0x10;
/// `feature_incompat`: fragments in a packed inode, or deduplication.
pub const INCOMPAT_FRAGMENTS: u32 = 0x20;
/// `feature_incompat`: long xattr name prefixes.
pub const INCOMPAT_XATTR_PREFIXES: u32 = 0x40;
/// Every `feature_incompat` bit this reader knows.
pub const INCOMPAT_KNOWN: u32 = 0x7f;

/// The superblock fields the map needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// `checksum`, as stored (with [`COMPAT_SB_CHKSUM`], checked to be
    /// [`superblock_checksum`]).
    pub checksum: u32,
    /// `feature_compat` bits.
    pub feature_compat: u32,
    /// log2 of the block size (9 to 16).
    pub blkszbits: u8,
    /// The root directory's nid.
    pub root_nid: u64,
    /// Number of inodes.
    pub inodes: u64,
    /// Number of blocks the filesystem says it has.
    pub blocks: u32,
    /// First block of the metadata area; inode `nid` is at
    /// `meta_blkaddr * block_size + nid * 32`.
    pub meta_blkaddr: u32,
    /// First block of the shared xattr area.
    pub xattr_blkaddr: u32,
    /// The filesystem UUID.
    pub uuid: [u8; 16],
    /// `feature_incompat` bits.
    pub feature_incompat: u32,
    /// Extra devices (blob devices) the filesystem refers to.
    pub extra_devices: u16,
}

/// The superblock checksum of `image` as the kernel computes it: CRC32C
/// (Castagnoli, seeded with all ones, without the final inversion) of the
/// superblock's block from byte 1024 to its end, its checksum field taken as
/// zero. `None` when the image is too short for that block or its block
/// size field is outside 2 KiB to 64 KiB (where no such range exists or is
/// read).
pub fn superblock_checksum(image: &[u8]) -> Option<u32> {
    let bits = *image.get(SUPERBLOCK_OFFSET as usize + 12)?;
    if !(11..=16).contains(&bits) {
        return None;
    }
    let end = 1usize << bits;
    let block = image.get(SUPERBLOCK_OFFSET as usize..end)?;
    let mut crc = !0u32;
    for (i, &byte) in block.iter().enumerate() {
        let byte = if (4..8).contains(&i) { 0 } else { byte };
        crc = (crc >> 8) ^ CRC32C[usize::from(crc as u8 ^ byte)];
    }
    Some(crc)
}

/// The CRC32C (reflected polynomial 0x82F63B78) of each byte value.
const CRC32C: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = (c >> 1) ^ (0x82F6_3B78 & (c & 1).wrapping_neg());
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

impl Superblock {
    /// The block size in bytes.
    pub fn block_size(&self) -> u64 {
        1u64 << self.blkszbits
    }

    /// Reads and checks the superblock of `img`.
    pub(crate) fn parse(img: &Image) -> Result<Self, ErofsError> {
        let b = img.bytes(SUPERBLOCK_OFFSET, SUPERBLOCK_LEN, "superblock")?;
        let magic = le32(b, 0);
        if magic != MAGIC {
            return Err(ErofsError::BadMagic(magic));
        }
        let blkszbits = b[12];
        if !(9..=16).contains(&blkszbits) {
            return Err(ErofsError::unsupported(
                "block size",
                format!("blkszbits {blkszbits} (9 to 16 are read)"),
            ));
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[48..64]);
        let sb = Superblock {
            checksum: le32(b, 4),
            feature_compat: le32(b, 8),
            blkszbits,
            root_nid: u64::from(le16(b, 14)),
            inodes: le64(b, 16),
            blocks: le32(b, 36),
            meta_blkaddr: le32(b, 40),
            xattr_blkaddr: le32(b, 44),
            uuid,
            feature_incompat: le32(b, 80),
            extra_devices: le16(b, 86),
        };
        if sb.feature_compat & COMPAT_SB_CHKSUM != 0 {
            if blkszbits > 10 {
                let rest = (1u64 << blkszbits) - SUPERBLOCK_OFFSET;
                img.bytes(SUPERBLOCK_OFFSET, rest, "superblock block")?;
            }
            match superblock_checksum(img.whole()) {
                Some(sum) if sum == sb.checksum => {}
                Some(sum) => {
                    return Err(ErofsError::invalid(
                        "superblock checksum",
                        format!("stored {:#010x}, computed {sum:#010x}", sb.checksum),
                    ))
                }
                None => {
                    return Err(ErofsError::unsupported(
                        "superblock checksum",
                        format!("with blocks of 2^{blkszbits} bytes"),
                    ))
                }
            }
        }
        let unknown = sb.feature_incompat & !INCOMPAT_KNOWN;
        if unknown != 0 {
            return Err(ErofsError::unsupported(
                "feature_incompat",
                format!("unknown bits {unknown:#x}"),
            ));
        }
        if sb.extra_devices != 0 {
            return Err(ErofsError::unsupported(
                "extra devices",
                format!("{} blob devices", sb.extra_devices),
            ));
        }
        // The superblock's own block must be inside the filesystem, and the
        // filesystem inside the image.
        let fs_len = u64::from(sb.blocks) << blkszbits;
        if fs_len > img.len() {
            return Err(ErofsError::Truncated {
                what: "filesystem blocks",
                offset: 0,
                need: fs_len,
                have: img.len(),
            });
        }
        if fs_len < SUPERBLOCK_OFFSET + SUPERBLOCK_LEN {
            return Err(ErofsError::invalid(
                "superblock",
                format!("{} blocks do not hold the superblock", sb.blocks),
            ));
        }
        Ok(sb)
    }
}
