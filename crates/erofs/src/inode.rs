//! Inodes: compact (32 bytes) and extended (64 bytes), located by nid.

use crate::image::{le16, le32, le64, Image};
use crate::superblock::Superblock;
use crate::ErofsError;

/// How an inode's data is laid out (`i_format` bits 1 to 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataLayout {
    /// Consecutive blocks from `raw_blkaddr`.
    FlatPlain,
    /// Compressed, one 8-byte index per logical cluster.
    CompressedFull,
    /// Consecutive blocks, the last partial block inline after the inode.
    FlatInline,
    /// Compressed, indexes packed 2 or 4 bytes per logical cluster.
    CompressedCompact,
    /// A table of chunks, each a run of blocks or a hole.
    ChunkBased,
}

impl DataLayout {
    fn from_bits(v: u16) -> Option<Self> {
        Some(match v {
            0 => DataLayout::FlatPlain,
            1 => DataLayout::CompressedFull,
            2 => DataLayout::FlatInline,
            3 => DataLayout::CompressedCompact,
            4 => DataLayout::ChunkBased,
            _ => return None,
        })
    }

    /// The layout's number in `i_format` (0 to 4).
    pub fn code(self) -> u8 {
        match self {
            DataLayout::FlatPlain => 0,
            DataLayout::CompressedFull => 1,
            DataLayout::FlatInline => 2,
            DataLayout::CompressedCompact => 3,
            DataLayout::ChunkBased => 4,
        }
    }

    /// Whether the data is compressed.
    pub fn is_compressed(self) -> bool {
        matches!(
            self,
            DataLayout::CompressedFull | DataLayout::CompressedCompact
        )
    }
}

/// What an inode is (from the file type bits of `i_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A named pipe.
    Fifo,
    /// A socket.
    Socket,
}

impl FileKind {
    fn from_mode(mode: u16) -> Option<Self> {
        Some(match mode & 0o170000 {
            0o100000 => FileKind::Regular,
            0o040000 => FileKind::Directory,
            0o120000 => FileKind::Symlink,
            0o020000 => FileKind::CharDevice,
            0o060000 => FileKind::BlockDevice,
            0o010000 => FileKind::Fifo,
            0o140000 => FileKind::Socket,
            _ => return None,
        })
    }
}

/// Bytes of an inode slot; nids count slots.
pub const SLOT_LEN: u64 = 32;

/// One inode, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    /// The inode's number: its slot from the start of the metadata area.
    pub nid: u64,
    /// Byte offset of the inode in the image.
    pub offset: u64,
    /// Whether it is the 64-byte extended form (else the 32-byte compact one).
    pub extended: bool,
    /// The data layout.
    pub layout: DataLayout,
    /// What it is.
    pub kind: FileKind,
    /// `i_mode`, type and permission bits.
    pub mode: u16,
    /// Number of hard links.
    pub nlink: u32,
    /// Size of the data in bytes.
    pub size: u64,
    /// Bytes of inline xattrs after the inode (0 when there are none).
    pub xattr_size: u64,
    /// `i_u`: the first data block (flat layouts), the compressed block
    /// count (compressed layouts), the device number (devices) or the
    /// chunk format (chunk-based).
    pub raw_u: u32,
    /// `i_ino`, the inode number shown to users.
    pub ino: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

impl Inode {
    /// Length of the inode itself: 32 or 64.
    pub fn inode_size(&self) -> u64 {
        if self.extended {
            64
        } else {
            32
        }
    }

    /// Byte offset just past the inode and its inline xattrs: where an
    /// inline tail, a compression map header or a chunk table begins.
    pub fn body_end(&self) -> u64 {
        self.offset + self.inode_size() + self.xattr_size
    }

    /// Reads inode `nid` of `img`.
    pub(crate) fn parse(img: &Image, sb: &Superblock, nid: u64) -> Result<Self, ErofsError> {
        let offset = nid
            .checked_mul(SLOT_LEN)
            .and_then(|o| o.checked_add(u64::from(sb.meta_blkaddr) << sb.blkszbits))
            .ok_or_else(|| ErofsError::invalid("nid", format!("{nid} is out of range")))?;
        let head = img.bytes(offset, 2, "inode i_format")?;
        let format = le16(head, 0);
        if format & !0xf != 0 {
            return Err(ErofsError::unsupported(
                "inode i_format",
                format!("nid {nid}: bits {format:#06x}"),
            ));
        }
        let extended = format & 1 == 1;
        let layout = DataLayout::from_bits((format >> 1) & 7).ok_or_else(|| {
            ErofsError::unsupported(
                "inode data layout",
                format!("nid {nid}: {}", (format >> 1) & 7),
            )
        })?;
        let len = if extended { 64 } else { 32 };
        let b = img.bytes(offset, len, "inode")?;
        let xattr_icount = le16(b, 2);
        let mode = le16(b, 4);
        let kind = FileKind::from_mode(mode)
            .ok_or_else(|| ErofsError::invalid("inode i_mode", format!("nid {nid}: {mode:#o}")))?;
        let (nlink, size, raw_u, ino, uid, gid) = if extended {
            (
                le32(b, 44),
                le64(b, 8),
                le32(b, 16),
                le32(b, 20),
                le32(b, 24),
                le32(b, 28),
            )
        } else {
            (
                u32::from(le16(b, 6)),
                u64::from(le32(b, 8)),
                le32(b, 16),
                le32(b, 20),
                u32::from(le16(b, 24)),
                u32::from(le16(b, 26)),
            )
        };
        // A 12-byte ibody header and 4 bytes per further slot.
        let xattr_size = match xattr_icount {
            0 => 0,
            n => 12 + 4 * (u64::from(n) - 1),
        };
        let inode = Inode {
            nid,
            offset,
            extended,
            layout,
            kind,
            mode,
            nlink,
            size,
            xattr_size,
            raw_u,
            ino,
            uid,
            gid,
        };
        // The inline xattrs belong to the inode: they must be in the image.
        img.bytes(offset + len, xattr_size, "inode xattrs")?;
        Ok(inode)
    }
}
