use crate::{FormatError, Reader, Writer, BLOCK_SIZE};
use serde::Serialize;

/// A run of whole blocks: `num_blocks` blocks starting at `start_block`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Extent {
    /// First block.
    pub start_block: u64,
    /// Number of blocks; never zero in a valid package.
    pub num_blocks: u64,
}

impl Extent {
    /// An extent of `num_blocks` blocks from `start_block`.
    pub const fn new(start_block: u64, num_blocks: u64) -> Self {
        Extent {
            start_block,
            num_blocks,
        }
    }
    /// One past the last block.
    pub fn end_block(&self) -> u64 {
        self.start_block + self.num_blocks
    }
    /// Byte offset of the first block.
    pub fn byte_offset(&self) -> u64 {
        self.start_block * BLOCK_SIZE
    }
    /// Length in bytes.
    pub fn byte_len(&self) -> u64 {
        self.num_blocks * BLOCK_SIZE
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, FormatError> {
        // Any extent must fit in a 2^64-byte address space.
        const MAX_BLOCKS: u64 = u64::MAX / BLOCK_SIZE;
        let start_block = r.varint_max("extent start", MAX_BLOCKS)?;
        let num_blocks = r.varint_max("extent length", MAX_BLOCKS)?;
        if num_blocks == 0 {
            return Err(FormatError::invalid("extent", "zero blocks"));
        }
        if start_block
            .checked_add(num_blocks)
            .is_none_or(|e| e > MAX_BLOCKS)
        {
            return Err(FormatError::invalid(
                "extent",
                "ends past the address space",
            ));
        }
        Ok(Extent {
            start_block,
            num_blocks,
        })
    }

    /// Reads a count (`what`) and that many extents.
    pub(crate) fn decode_list(
        r: &mut Reader<'_>,
        what: &'static str,
    ) -> Result<Vec<Self>, FormatError> {
        let n = r.count(what, 2, u64::MAX)?;
        let mut out = r.vec_for(n);
        for _ in 0..n {
            out.push(Extent::decode(r)?);
        }
        Ok(out)
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.varint(self.start_block);
        w.varint(self.num_blocks);
    }
}

impl std::fmt::Display for Extent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.num_blocks == 1 {
            write!(f, "{}", self.start_block)
        } else {
            write!(f, "{}..{}", self.start_block, self.end_block())
        }
    }
}

/// Total blocks in a list of extents (saturating; valid lists are small).
pub fn blocks_in(extents: &[Extent]) -> u64 {
    extents
        .iter()
        .fold(0u64, |acc, e| acc.saturating_add(e.num_blocks))
}
