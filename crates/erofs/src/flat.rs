//! Data maps of uncompressed layouts: flat (plain or with an inline tail)
//! and chunk-based.

use crate::image::{le16, le32, Budget, Image};
use crate::inode::{DataLayout, Inode};
use crate::superblock::Superblock;
use crate::ErofsError;

/// Where one range of a file's bytes is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// In data blocks at [`Extent::physical`].
    Blocks,
    /// In the inode's metadata block, right after the inode and its
    /// xattrs, at [`Extent::physical`].
    Inline,
    /// Nowhere: the bytes read as zeros (a chunk with no block).
    Hole,
}

/// A run of a file's logical bytes stored as they are (uncompressed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First logical byte of the file covered.
    pub logical: u64,
    /// Number of bytes.
    pub len: u64,
    /// Byte offset in the image of the first of them (0 for a hole).
    pub physical: u64,
    /// How they are stored.
    pub placement: Placement,
}

/// The extents of an inode with a flat or chunk-based layout, in logical
/// order, tiling `0..size` exactly.
pub(crate) fn map_flat(
    img: &Image,
    sb: &Superblock,
    ino: &Inode,
    budget: &mut Budget,
) -> Result<Vec<Extent>, ErofsError> {
    match ino.layout {
        DataLayout::FlatPlain => map_plain(img, sb, ino, false),
        DataLayout::FlatInline => map_plain(img, sb, ino, true),
        DataLayout::ChunkBased => map_chunks(img, sb, ino, budget),
        DataLayout::CompressedFull | DataLayout::CompressedCompact => Err(ErofsError::invalid(
            "data layout",
            format!("nid {}: compressed, not flat", ino.nid),
        )),
    }
}

fn map_plain(
    img: &Image,
    sb: &Superblock,
    ino: &Inode,
    inline: bool,
) -> Result<Vec<Extent>, ErofsError> {
    let bs = sb.block_size();
    let size = ino.size;
    if size == 0 {
        return Ok(Vec::new());
    }
    // With an inline tail, the last block (full or partial) is in the
    // metadata; the blocks before it are at raw_blkaddr.
    let blocks_len = if inline { (size - 1) / bs * bs } else { size };
    let mut out = Vec::with_capacity(2);
    if blocks_len > 0 {
        let physical = u64::from(ino.raw_u) << sb.blkszbits;
        img.bytes(physical, blocks_len, "file data blocks")?;
        out.push(Extent {
            logical: 0,
            len: blocks_len,
            physical,
            placement: Placement::Blocks,
        });
    }
    if inline {
        let tail = size - blocks_len;
        let physical = ino.body_end();
        if physical % bs + tail > bs {
            return Err(ErofsError::invalid(
                "inline tail",
                format!(
                    "nid {}: {tail} bytes at offset {physical} cross a block boundary",
                    ino.nid
                ),
            ));
        }
        img.bytes(physical, tail, "inline tail")?;
        out.push(Extent {
            logical: blocks_len,
            len: tail,
            physical,
            placement: Placement::Inline,
        });
    }
    Ok(out)
}

/// `i_u` of a chunk-based inode: chunk size bits, and 8-byte indexes
/// instead of a 4-byte block map.
const CHUNK_FORMAT_BLKBITS_MASK: u32 = 0x1f;
const CHUNK_FORMAT_INDEXES: u32 = 0x20;
/// A block address that means "no block".
const NULL_ADDR: u32 = u32::MAX;

fn map_chunks(
    img: &Image,
    sb: &Superblock,
    ino: &Inode,
    budget: &mut Budget,
) -> Result<Vec<Extent>, ErofsError> {
    let format = ino.raw_u & 0xffff;
    if format & !(CHUNK_FORMAT_BLKBITS_MASK | CHUNK_FORMAT_INDEXES) != 0 {
        return Err(ErofsError::unsupported(
            "chunk format",
            format!("nid {}: {format:#x}", ino.nid),
        ));
    }
    let chunkbits = u32::from(sb.blkszbits) + (format & CHUNK_FORMAT_BLKBITS_MASK);
    if chunkbits > 48 {
        return Err(ErofsError::invalid(
            "chunk format",
            format!("nid {}: chunks of 2^{chunkbits} bytes", ino.nid),
        ));
    }
    let chunk = 1u64 << chunkbits;
    let count = ino.size.div_ceil(chunk);
    let indexes = format & CHUNK_FORMAT_INDEXES != 0;
    let (start, unit) = if indexes {
        (ino.body_end().next_multiple_of(8), 8)
    } else {
        (ino.body_end(), 4)
    };
    let table_len = count
        .checked_mul(unit)
        .ok_or_else(|| ErofsError::invalid("chunk table", format!("nid {}", ino.nid)))?;
    // The whole table is in the image, so `count` is bounded by its bytes.
    let table = img.bytes(start, table_len, "chunk table")?;
    budget.spend(table_len, "chunk table", ino.nid)?;
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count as usize {
        let (device, blkaddr) = if indexes {
            (le16(table, i * 8 + 2), le32(table, i * 8 + 4))
        } else {
            (0, le32(table, i * 4))
        };
        let logical = i as u64 * chunk;
        let len = chunk.min(ino.size - logical);
        if blkaddr == NULL_ADDR {
            out.push(Extent {
                logical,
                len,
                physical: 0,
                placement: Placement::Hole,
            });
            continue;
        }
        if device != 0 {
            return Err(ErofsError::unsupported(
                "chunk on another device",
                format!("nid {}: device {device}", ino.nid),
            ));
        }
        let physical = u64::from(blkaddr) << sb.blkszbits;
        img.bytes(physical, len, "chunk data")?;
        out.push(Extent {
            logical,
            len,
            physical,
            placement: Placement::Blocks,
        });
    }
    Ok(out)
}
