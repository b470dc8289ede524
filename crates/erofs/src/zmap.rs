//! Data maps of compressed layouts: the map header after the inode, the
//! logical cluster indexes (full 8-byte ones, or compact 2- and 4-byte
//! packs), and the physical clusters (pclusters) they describe.

use crate::image::{le16, le32, Budget, Image};
use crate::inode::{DataLayout, Inode};
use crate::superblock::Superblock;
use crate::ErofsError;

/// `h_advise`: compact indexes use 2-byte packs where they can.
pub const ADVISE_COMPACTED_2B: u16 = 0x1;
/// `h_advise`: HEAD1 pclusters may span several blocks.
pub const ADVISE_BIG_PCLUSTER_1: u16 = 0x2;
/// `h_advise`: HEAD2 (and plain) pclusters may span several blocks.
pub const ADVISE_BIG_PCLUSTER_2: u16 = 0x4;
/// `h_advise`: the last pcluster is inline in the metadata (ztailpacking).
pub const ADVISE_INLINE_PCLUSTER: u16 = 0x8;
/// `h_advise`: plain pclusters are stored rotated (interlaced).
pub const ADVISE_INTERLACED_PCLUSTER: u16 = 0x10;
/// `h_advise`: the tail is a fragment of the packed inode.
pub const ADVISE_FRAGMENT_PCLUSTER: u16 = 0x20;

/// Logical cluster types (the low two bits of `di_advise`).
const TYPE_PLAIN: u8 = 0;
const TYPE_HEAD1: u8 = 1;
const TYPE_NONHEAD: u8 = 2;
const TYPE_HEAD2: u8 = 3;
/// In the first NONHEAD lcluster of a big pcluster, `delta[0]` carries
/// this bit and the pcluster's block count.
const D0_CBLKCNT: u16 = 0x800;

/// A compression algorithm, as `h_algorithmtype` numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// LZ4 (also what lz4hc writes).
    Lz4,
    /// MicroLZMA.
    Lzma,
    /// Raw deflate.
    Deflate,
    /// Zstandard.
    Zstd,
    /// A number this reader does not name.
    Other(u8),
}

impl Algorithm {
    fn from_id(id: u8) -> Self {
        match id {
            0 => Algorithm::Lz4,
            1 => Algorithm::Lzma,
            2 => Algorithm::Deflate,
            3 => Algorithm::Zstd,
            n => Algorithm::Other(n),
        }
    }
}

/// How a pcluster's blocks hold its logical bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Stored as they are, from the first byte of the first block.
    Plain,
    /// Compressed with this algorithm. With the superblock's zero-padding
    /// feature the compressed stream ends at the end of the last block,
    /// after leading zeros; it decompresses to exactly
    /// [`Pcluster::logical_len`] bytes.
    Compressed(Algorithm),
}

/// Where a pcluster's stored bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// In whole image blocks.
    Blocks {
        /// The first block.
        block: u64,
        /// How many.
        blocks: u64,
    },
    /// Inline in the inode's metadata block, right after its indexes
    /// (a tail-packed last pcluster).
    Inline {
        /// Byte offset in the image.
        offset: u64,
        /// Number of bytes.
        len: u64,
    },
}

impl Stored {
    /// The image bytes, as a range of byte offsets.
    pub fn byte_range(&self, block_size: u64) -> std::ops::Range<u64> {
        match *self {
            Stored::Blocks { block, blocks } => block * block_size..(block + blocks) * block_size,
            Stored::Inline { offset, len } => offset..offset + len,
        }
    }
}

/// One physical cluster: stored bytes that decode to one run of a file's
/// logical bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pcluster {
    /// First logical byte of the file it decodes to.
    pub logical: u64,
    /// Number of logical bytes it decodes to.
    pub logical_len: u64,
    /// Where its bytes are: blocks, or inline in the metadata.
    pub stored: Stored,
    /// Plain or compressed.
    pub encoding: Encoding,
}

/// The 8-byte `z_erofs_map_header` of a compressed inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapHeader {
    /// `h_idata_size`: bytes of the inline (tail-packed) pcluster.
    pub idata_size: u16,
    /// `h_advise` bits (`ADVISE_*`).
    pub advise: u16,
    /// Algorithms of HEAD1 and HEAD2 lclusters.
    pub algorithms: [Algorithm; 2],
    /// log2 of the logical cluster size.
    pub lclusterbits: u8,
}

const ADVISE_KNOWN: u16 = 0x3f;

/// A compressed inode's header and pclusters, in logical order, tiling
/// `0..size` exactly.
pub(crate) fn map_compressed(
    img: &Image,
    sb: &Superblock,
    ino: &Inode,
    budget: &mut Budget,
) -> Result<(MapHeader, Vec<Pcluster>), ErofsError> {
    let nid = ino.nid;
    let head_at = ino.body_end().next_multiple_of(8);
    let h = img.bytes(head_at, 8, "compression map header")?;
    let advise = le16(h, 4);
    let algorithmtype = h[6];
    let clusterbits = h[7];
    let header = MapHeader {
        idata_size: le16(h, 2),
        advise,
        algorithms: [
            Algorithm::from_id(algorithmtype & 0xf),
            Algorithm::from_id(algorithmtype >> 4),
        ],
        lclusterbits: sb.blkszbits + (clusterbits & 7),
    };
    if advise & !ADVISE_KNOWN != 0 {
        return Err(ErofsError::unsupported(
            "h_advise",
            format!("nid {nid}: {advise:#x}"),
        ));
    }
    for (bit, name) in [
        (ADVISE_INTERLACED_PCLUSTER, "interlaced pclusters"),
        (ADVISE_FRAGMENT_PCLUSTER, "fragments"),
    ] {
        if advise & bit != 0 {
            return Err(ErofsError::unsupported(name, format!("nid {nid}")));
        }
    }
    if clusterbits != 0 {
        return Err(ErofsError::unsupported(
            "h_clusterbits",
            format!("nid {nid}: {clusterbits:#x} (logical clusters of one block are read)"),
        ));
    }
    let lbits = header.lclusterbits;
    let lsize = 1u64 << lbits;
    let total = ino.size.div_ceil(lsize);
    let index = match ino.layout {
        DataLayout::CompressedFull => Index::full(img, head_at + 16, total)?,
        DataLayout::CompressedCompact => {
            Index::compact(img, head_at + 8, total, advise, lbits, nid)?
        }
        _ => {
            return Err(ErofsError::invalid(
                "data layout",
                format!("nid {nid}: not compressed"),
            ))
        }
    };
    budget.spend(index.end(total) - index.start(), "compression indexes", nid)?;
    let big1 = advise & ADVISE_BIG_PCLUSTER_1 != 0;
    let big2 = advise & ADVISE_BIG_PCLUSTER_2 != 0;
    let bad = |why: String| ErofsError::invalid("compressed index", format!("nid {nid}: {why}"));
    // A tail-packed last pcluster: its bytes follow the indexes, within
    // their metadata block.
    let inline_tail = if advise & ADVISE_INLINE_PCLUSTER != 0 {
        let offset = index.end(total);
        let len = u64::from(header.idata_size);
        let bs = sb.block_size();
        if len == 0 || offset % bs + len > bs {
            return Err(ErofsError::invalid(
                "inline pcluster",
                format!("nid {nid}: {len} bytes at offset {offset}"),
            ));
        }
        img.bytes(offset, len, "inline pcluster")?;
        Some(Stored::Inline { offset, len })
    } else {
        None
    };

    let mut out: Vec<Pcluster> = Vec::new();
    // The blocks of the last pcluster pushed, checked once it is known not
    // to be the inline tail.
    let mut pending: Option<Result<Stored, ErofsError>> = None;
    let mut next = if total > 0 {
        Some(index.entry(img, 0)?)
    } else {
        None
    };
    // Compact indexes: the running block address of the current pack.
    let mut run: Option<(u64, u64)> = None;
    for lcn in 0..total {
        let e = next.take().ok_or_else(|| bad("index ends early".into()))?;
        next = if lcn + 1 < total {
            Some(index.entry(img, lcn + 1)?)
        } else {
            None
        };
        let follows_cblkcnt = next
            .as_ref()
            .is_some_and(|n| n.ty == TYPE_NONHEAD && n.lo & D0_CBLKCNT != 0);
        let same_pack = |n: &Option<Entry>| match (n, e.pack) {
            (Some(n), Some((p, _))) => n.pack.map(|(q, _)| q) == Some(p),
            _ => false,
        };
        // The block address a head of this pack starts at.
        let mut here = None;
        if let Some((pack, base)) = e.pack {
            // Without big pclusters a pack's base is one block before its
            // first head's; with them, the pcluster its first block count
            // (or head) belongs to starts there.
            let b = match run {
                Some((p, b)) if p == pack => b,
                _ => u64::from(base) + u64::from(!big1),
            };
            here = Some(b);
            let step = if e.ty == TYPE_NONHEAD {
                if e.lo & D0_CBLKCNT != 0 {
                    u64::from(e.lo & !D0_CBLKCNT)
                } else {
                    0
                }
            } else if follows_cblkcnt && same_pack(&next) {
                0
            } else {
                1
            };
            run = Some((pack, b + step));
        }
        if e.ty == TYPE_NONHEAD {
            if lcn == 0 {
                return Err(bad("the first logical cluster is not a head".into()));
            }
            if e.lo & D0_CBLKCNT != 0 && !(big1 || big2) {
                return Err(bad(format!(
                    "lcluster {lcn}: a block count without big pclusters"
                )));
            }
            continue;
        }
        let clusterofs = u64::from(e.lo);
        if clusterofs >= lsize || (lcn == 0 && clusterofs != 0) {
            return Err(bad(format!("lcluster {lcn}: cluster offset {clusterofs}")));
        }
        let logical = lcn * lsize + clusterofs;
        if logical > ino.size {
            return Err(bad(format!(
                "lcluster {lcn}: starts past the end of the file"
            )));
        }
        if let Some(prev) = out.last_mut() {
            prev.logical_len = logical - prev.logical;
        }
        if logical == ino.size {
            // A head at the very end (mkfs writes one when the last
            // extent ends inside the last logical cluster) starts nothing.
            if lcn + 1 != total {
                return Err(bad(format!("lcluster {lcn}: an empty extent")));
            }
            break;
        }
        if let Some(prev) = out.last_mut() {
            prev.stored = pending
                .take()
                .unwrap_or_else(|| Err(bad("lost blocks".into())))?;
            check_plain_len(prev, sb, nid)?;
        }
        let may_be_big = match e.ty {
            TYPE_HEAD1 => big1,
            TYPE_PLAIN | TYPE_HEAD2 => big2,
            _ => false,
        };
        let blocks = match &next {
            Some(n) if n.ty == TYPE_NONHEAD && may_be_big => {
                if n.lo & D0_CBLKCNT == 0 || n.lo & !D0_CBLKCNT == 0 {
                    Err(bad(format!(
                        "lcluster {}: a big pcluster without a block count",
                        lcn + 1
                    )))
                } else {
                    Ok(u64::from(n.lo & !D0_CBLKCNT))
                }
            }
            _ if follows_cblkcnt => Err(bad(format!(
                "lcluster {}: a block count after a head that cannot be big",
                lcn + 1
            ))),
            _ => Ok(1),
        };
        let block = match (e.blkaddr, here) {
            (Some(b), _) => Ok(u64::from(b)),
            (None, Some(b)) => Ok(b),
            (None, None) => Err(bad("no block address".into())),
        };
        pending = Some(blocks.and_then(|blocks| {
            let block = block?;
            let start = block
                .checked_mul(sb.block_size())
                .ok_or_else(|| bad(format!("lcluster {lcn}: block {block} is out of range")))?;
            img.bytes(start, blocks << sb.blkszbits, "pcluster blocks")?;
            Ok(Stored::Blocks { block, blocks })
        }));
        let encoding = match e.ty {
            TYPE_PLAIN => Encoding::Plain,
            TYPE_HEAD1 => Encoding::Compressed(header.algorithms[0]),
            _ => Encoding::Compressed(header.algorithms[1]),
        };
        out.push(Pcluster {
            logical,
            logical_len: 0,
            stored: Stored::Blocks {
                block: 0,
                blocks: 0,
            },
            encoding,
        });
    }
    if let Some(prev) = out.last_mut() {
        if prev.logical_len == 0 {
            prev.logical_len = ino.size - prev.logical;
        }
        prev.stored = match inline_tail {
            Some(t) => t,
            None => pending
                .take()
                .unwrap_or_else(|| Err(bad("lost blocks".into())))?,
        };
        check_plain_len(prev, sb, nid)?;
    } else if inline_tail.is_some() {
        return Err(ErofsError::invalid(
            "inline pcluster",
            format!("nid {nid}: no last extent to hold it"),
        ));
    }
    Ok((header, out))
}

/// A plain pcluster holds its bytes as they are: they must fit.
fn check_plain_len(p: &Pcluster, sb: &Superblock, nid: u64) -> Result<(), ErofsError> {
    let room = match p.stored {
        Stored::Blocks { blocks, .. } => blocks << sb.blkszbits,
        Stored::Inline { len, .. } => len,
    };
    if p.encoding == Encoding::Plain && p.logical_len > room {
        return Err(ErofsError::invalid(
            "plain pcluster",
            format!(
                "nid {nid}: {} bytes do not fit {room} stored bytes",
                p.logical_len
            ),
        ));
    }
    Ok(())
}

/// One decoded logical cluster index.
#[derive(Debug, Clone, Copy)]
struct Entry {
    ty: u8,
    /// The cluster offset of a head; `delta[0]` (or a block count with
    /// [`D0_CBLKCNT`]) of a NONHEAD.
    lo: u16,
    /// A head's block address, stored in full indexes.
    blkaddr: Option<u32>,
    /// Compact indexes: the pack's offset and its base block address.
    pack: Option<(u64, u32)>,
}

/// Where the indexes are, checked to be inside the image.
enum Index {
    Full {
        start: u64,
    },
    Compact {
        ebase: u64,
        initial_4b: u64,
        compacted_2b: u64,
        lbits: u8,
    },
}

impl Index {
    fn full(img: &Image, start: u64, total: u64) -> Result<Self, ErofsError> {
        let len = total.checked_mul(8).ok_or(ErofsError::Truncated {
            what: "full compression indexes",
            offset: start,
            need: u64::MAX,
            have: img.len(),
        })?;
        img.bytes(start, len, "full compression indexes")?;
        Ok(Index::Full { start })
    }

    fn compact(
        img: &Image,
        ebase: u64,
        total: u64,
        advise: u16,
        lbits: u8,
        nid: u64,
    ) -> Result<Self, ErofsError> {
        let mut initial_4b = (32 - ebase % 32) / 4;
        if initial_4b == 8 {
            initial_4b = 0;
        }
        let compacted_2b = if advise & ADVISE_COMPACTED_2B != 0 && initial_4b < total {
            if lbits != 12 {
                return Err(ErofsError::unsupported(
                    "2-byte compact indexes",
                    format!("nid {nid}: logical clusters of 2^{lbits} bytes"),
                ));
            }
            (total - initial_4b) / 16 * 16
        } else {
            0
        };
        let index = Index::Compact {
            ebase,
            initial_4b,
            compacted_2b,
            lbits,
        };
        // The pack holding the last index ends the index area.
        let end = index.end(total);
        img.bytes(ebase, end - ebase, "compact compression indexes")?;
        Ok(index)
    }

    /// Where the indexes start.
    fn start(&self) -> u64 {
        match *self {
            Index::Full { start } => start,
            Index::Compact { ebase, .. } => ebase,
        }
    }

    /// Where the indexes of `total` logical clusters end (the end of the
    /// last compact pack): an inline pcluster starts there.
    fn end(&self, total: u64) -> u64 {
        match *self {
            Index::Full { start } => start + total * 8,
            Index::Compact { ebase, .. } => {
                if total == 0 {
                    return ebase;
                }
                let (pos, shift) = self.compact_pos(total - 1);
                let pack = if shift == 2 { 8 } else { 32 };
                (pos / pack + 1) * pack
            }
        }
    }

    /// Compact: the byte position of index `lcn` and log2 of its size.
    fn compact_pos(&self, lcn: u64) -> (u64, u32) {
        let Index::Compact {
            ebase,
            initial_4b,
            compacted_2b,
            ..
        } = *self
        else {
            return (0, 0);
        };
        if lcn < initial_4b {
            return (ebase + lcn * 4, 2);
        }
        let pos = ebase + initial_4b * 4;
        let lcn = lcn - initial_4b;
        if lcn < compacted_2b {
            return (pos + lcn * 2, 1);
        }
        (pos + compacted_2b * 2 + (lcn - compacted_2b) * 4, 2)
    }

    fn entry(&self, img: &Image, lcn: u64) -> Result<Entry, ErofsError> {
        match *self {
            Index::Full { start } => {
                let b = img.bytes(start + lcn * 8, 8, "full compression index")?;
                let ty = (le16(b, 0) & 3) as u8;
                if ty == TYPE_NONHEAD {
                    Ok(Entry {
                        ty,
                        lo: le16(b, 4),
                        blkaddr: None,
                        pack: None,
                    })
                } else {
                    Ok(Entry {
                        ty,
                        lo: le16(b, 2),
                        blkaddr: Some(le32(b, 4)),
                        pack: None,
                    })
                }
            }
            Index::Compact { lbits, .. } => {
                let (pos, shift) = self.compact_pos(lcn);
                let (vcnt, pack_len) = if shift == 2 { (2u64, 8u64) } else { (16, 32) };
                let pack_at = pos / pack_len * pack_len;
                let pack = img.bytes(pack_at, pack_len, "compact compression index pack")?;
                let encodebits = (pack_len - 4) * 8 / vcnt;
                let i = (pos - pack_at) >> shift;
                let bit = encodebits * i;
                let byte = (bit / 8) as usize;
                let v = le32(pack, byte) >> (bit % 8);
                let lo = (v & ((1 << lbits) - 1)) as u16;
                let ty = ((v >> lbits) & 3) as u8;
                let base = le32(pack, pack_len as usize - 4);
                Ok(Entry {
                    ty,
                    lo,
                    blkaddr: None,
                    pack: Some((pack_at, base)),
                })
            }
        }
    }
}
