//! Android sparse images (`libsparse`, magic `0xed26ff3a`, version 1.0).
//!
//! A sparse image is a 28-byte file header followed by chunks, each a
//! 12-byte chunk header and its data: `RAW` (the blocks' bytes), `FILL` (a
//! 4-byte pattern repeated over the blocks), `DONT_CARE` (no data; read as
//! zeros) or `CRC32` (a checksum of what came before; no blocks). This module
//! decodes the headers and checks that the chunks tile the image exactly;
//! the caller reads the chunk table out of the file one header at a time
//! ([`SparseLayout::push`]) and then reads the expanded image through
//! [`SparseLayout::chunks`].

use crate::{FormatError, Reader};

/// Magic number at the start of a sparse image (little-endian `3a ff 26 ed`).
pub const SPARSE_MAGIC: u32 = 0xed26_ff3a;
/// Size of the file header this reader needs (larger headers are skipped over).
pub const FILE_HEADER_LEN: usize = 28;
/// Size of the chunk header this reader needs.
pub const CHUNK_HEADER_LEN: usize = 12;

const CHUNK_RAW: u16 = 0xcac1;
const CHUNK_FILL: u16 = 0xcac2;
const CHUNK_DONT_CARE: u16 = 0xcac3;
const CHUNK_CRC32: u16 = 0xcac4;

/// Largest expanded image accepted (16 TiB, as for partitions).
const MAX_IMAGE_BYTES: u64 = crate::limits::MAX_PARTITION_SIZE;

/// Whether `bytes` start like a sparse image.
pub fn is_sparse(bytes: &[u8]) -> bool {
    bytes.len() >= 4 && u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) == SPARSE_MAGIC
}

/// The sparse file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SparseHeader {
    /// Bytes of the file header (at least 28).
    pub file_header_len: u64,
    /// Bytes of each chunk header (at least 12).
    pub chunk_header_len: u64,
    /// Block size in bytes (a non-zero multiple of 4).
    pub block_size: u64,
    /// Blocks in the expanded image.
    pub total_blocks: u64,
    /// Chunks that follow.
    pub total_chunks: u64,
}

impl SparseHeader {
    /// Decodes the first 28 bytes of a sparse image.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes);
        let magic = r.u32_le("sparse magic")?;
        if magic != SPARSE_MAGIC {
            return Err(FormatError::invalid(
                "sparse header",
                format!("magic {magic:#010x}, expected {SPARSE_MAGIC:#010x}"),
            ));
        }
        let u16le = |r: &mut Reader<'_>, what| -> Result<u16, FormatError> {
            let b = r.take(2, what)?;
            Ok(u16::from_le_bytes([b[0], b[1]]))
        };
        let major = u16le(&mut r, "sparse major version")?;
        let minor = u16le(&mut r, "sparse minor version")?;
        if major != 1 {
            return Err(FormatError::invalid(
                "sparse header",
                format!("version {major}.{minor}, this reader knows 1.x"),
            ));
        }
        let file_header_len = u16le(&mut r, "sparse file header size")? as u64;
        let chunk_header_len = u16le(&mut r, "sparse chunk header size")? as u64;
        let block_size = r.u32_le("sparse block size")? as u64;
        let total_blocks = r.u32_le("sparse total blocks")? as u64;
        let total_chunks = r.u32_le("sparse total chunks")? as u64;
        let _image_checksum = r.u32_le("sparse image checksum")?;
        if file_header_len < FILE_HEADER_LEN as u64 || chunk_header_len < CHUNK_HEADER_LEN as u64 {
            return Err(FormatError::invalid(
                "sparse header",
                format!("header sizes {file_header_len}/{chunk_header_len}, need at least 28/12"),
            ));
        }
        if block_size == 0 || !block_size.is_multiple_of(4) {
            return Err(FormatError::invalid(
                "sparse header",
                format!("block size {block_size} is not a positive multiple of 4"),
            ));
        }
        let bytes = total_blocks * block_size;
        if bytes > MAX_IMAGE_BYTES {
            return Err(FormatError::TooLarge {
                what: "sparse image",
                value: bytes,
                limit: MAX_IMAGE_BYTES,
            });
        }
        Ok(SparseHeader {
            file_header_len,
            chunk_header_len,
            block_size,
            total_blocks,
            total_chunks,
        })
    }

    /// Size of the expanded image in bytes.
    pub fn image_len(&self) -> u64 {
        self.total_blocks * self.block_size
    }
}

/// What a chunk's blocks hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkData {
    /// The bytes, stored at this offset of the sparse file.
    Raw {
        /// Offset of the first byte in the sparse file.
        file_offset: u64,
    },
    /// A 4-byte pattern (as stored, little-endian) repeated.
    Fill([u8; 4]),
    /// Nothing stored; reads as zeros.
    DontCare,
}

/// A run of blocks of the expanded image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Offset in the expanded image, in bytes.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// Where its bytes come from.
    pub data: ChunkData,
}

/// The chunk table of a sparse image, built one chunk header at a time
/// and checked against the header and the file's length.
#[derive(Debug, Clone)]
pub struct SparseLayout {
    header: SparseHeader,
    file_len: u64,
    /// Offset of the next chunk header in the sparse file.
    next: u64,
    /// Blocks covered so far.
    blocks: u64,
    /// Chunk headers read so far.
    seen: u64,
    chunks: Vec<Chunk>,
}

impl SparseLayout {
    /// Starts a layout for a sparse file of `file_len` bytes.
    pub fn new(header: SparseHeader, file_len: u64) -> Result<Self, FormatError> {
        if header.file_header_len > file_len {
            return Err(FormatError::Truncated {
                what: "sparse file header",
                need: header.file_header_len - file_len,
                have: file_len,
            });
        }
        Ok(SparseLayout {
            header,
            file_len,
            next: header.file_header_len,
            blocks: 0,
            seen: 0,
            chunks: Vec::new(),
        })
    }

    /// The file header.
    pub fn header(&self) -> &SparseHeader {
        &self.header
    }

    /// Offset in the sparse file of the next chunk header to read, or
    /// `None` once every chunk the header announced has been read.
    pub fn next_header_offset(&self) -> Option<u64> {
        (self.seen < self.header.total_chunks).then_some(self.next)
    }

    /// Adds the chunk whose header (at least 12 bytes, read at
    /// [`SparseLayout::next_header_offset`]) is `bytes`. For a FILL chunk,
    /// `bytes` must also hold the 4 pattern bytes right after the header.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), FormatError> {
        let at = self.next;
        let mut r = Reader::new(bytes);
        let kind_b = r.take(2, "sparse chunk type")?;
        let kind = u16::from_le_bytes([kind_b[0], kind_b[1]]);
        r.take(2, "sparse chunk reserved field")?;
        let blocks = r.u32_le("sparse chunk blocks")? as u64;
        let total = r.u32_le("sparse chunk size")? as u64;
        let hdr = self.header.chunk_header_len;
        let bad = |d: String| {
            Err(FormatError::invalid(
                "sparse chunk",
                format!("chunk {} at byte {at}: {d}", self.seen),
            ))
        };
        if total < hdr {
            return bad(format!("size {total} is smaller than its header ({hdr})"));
        }
        let payload = total - hdr;
        if at.checked_add(total).is_none_or(|end| end > self.file_len) {
            return Err(FormatError::Truncated {
                what: "sparse chunk",
                need: (at + total).saturating_sub(self.file_len),
                have: self.file_len.saturating_sub(at),
            });
        }
        let len = blocks * self.header.block_size;
        let data = match kind {
            CHUNK_RAW => {
                if payload != len {
                    return bad(format!(
                        "RAW chunk of {blocks} blocks carries {payload} bytes"
                    ));
                }
                ChunkData::Raw {
                    file_offset: at + hdr,
                }
            }
            CHUNK_FILL => {
                if payload != 4 {
                    return bad(format!("FILL chunk carries {payload} bytes, not 4"));
                }
                r.take(hdr - CHUNK_HEADER_LEN as u64, "sparse chunk header")?;
                let p = r.take(4, "sparse fill pattern")?;
                ChunkData::Fill([p[0], p[1], p[2], p[3]])
            }
            CHUNK_DONT_CARE => {
                if payload != 0 {
                    return bad(format!("DONT_CARE chunk carries {payload} bytes"));
                }
                ChunkData::DontCare
            }
            CHUNK_CRC32 => {
                if payload != 4 || blocks != 0 {
                    return bad("CRC32 chunk must cover no blocks and carry 4 bytes".into());
                }
                self.seen += 1;
                self.next = at + total;
                return Ok(());
            }
            other => return bad(format!("unknown chunk type {other:#06x}")),
        };
        if blocks == 0 {
            return bad("covers no blocks".into());
        }
        if self.blocks + blocks > self.header.total_blocks {
            return bad(format!(
                "reaches block {} of an image of {} blocks",
                self.blocks + blocks,
                self.header.total_blocks
            ));
        }
        let offset = self.blocks * self.header.block_size;
        match (self.chunks.last_mut(), data) {
            // Neighbouring DONT_CAREs merge, so the table stays small.
            (Some(last), ChunkData::DontCare) if last.data == ChunkData::DontCare => {
                last.len += len;
            }
            _ => self.chunks.push(Chunk { offset, len, data }),
        }
        self.blocks += blocks;
        self.seen += 1;
        self.next = at + total;
        Ok(())
    }

    /// Checks that the chunks covered every block and that nothing follows
    /// them, and returns the table.
    pub fn finish(self) -> Result<Vec<Chunk>, FormatError> {
        if self.seen != self.header.total_chunks {
            return Err(FormatError::invalid(
                "sparse image",
                format!("{} of {} chunks read", self.seen, self.header.total_chunks),
            ));
        }
        if self.blocks != self.header.total_blocks {
            return Err(FormatError::invalid(
                "sparse image",
                format!(
                    "chunks cover {} blocks, header says {}",
                    self.blocks, self.header.total_blocks
                ),
            ));
        }
        if self.next != self.file_len {
            return Err(FormatError::Trailing {
                what: "sparse image",
                extra: self.file_len - self.next,
            });
        }
        Ok(self.chunks)
    }
}

/// Decodes a whole sparse image held in memory into its chunk table.
pub fn parse(bytes: &[u8]) -> Result<Vec<Chunk>, FormatError> {
    let header = SparseHeader::decode(bytes)?;
    let mut layout = SparseLayout::new(header, bytes.len() as u64)?;
    while let Some(at) = layout.next_header_offset() {
        let at = at as usize;
        let end = bytes.len().min(at + header.chunk_header_len as usize + 4);
        layout.push(bytes.get(at..end).unwrap_or(&[]))?;
    }
    layout.finish()
}

/// Why [`read_table`] failed: the image's bytes could not be read, or
/// they are not a valid sparse image.
#[derive(Debug, thiserror::Error)]
pub enum TableError<E> {
    /// Reading failed.
    #[error("{0}")]
    Read(E),
    /// The bytes are not a valid sparse image.
    #[error("{0}")]
    Format(#[from] FormatError),
}

/// Reads the chunk table of a sparse image of `file_len` bytes through
/// `read(offset, buf)`, the file header first and then one chunk header at
/// a time (never more than one header's bytes at once).
pub fn read_table<E>(
    file_len: u64,
    mut read: impl FnMut(u64, &mut [u8]) -> Result<(), E>,
) -> Result<(SparseHeader, Vec<Chunk>), TableError<E>> {
    let mut head = [0u8; FILE_HEADER_LEN];
    let n = (file_len as usize).min(FILE_HEADER_LEN);
    read(0, &mut head[..n]).map_err(TableError::Read)?;
    let header = SparseHeader::decode(&head[..n])?;
    let mut layout = SparseLayout::new(header, file_len)?;
    let mut buf = vec![0u8; ((header.chunk_header_len + 4) as usize).min(1 << 16)];
    while let Some(at) = layout.next_header_offset() {
        let n = (file_len.saturating_sub(at) as usize).min(buf.len());
        read(at, &mut buf[..n]).map_err(TableError::Read)?;
        layout.push(&buf[..n])?;
    }
    Ok((header, layout.finish()?))
}

/// Fills `out` with the expanded bytes at image offset `pos`, reading RAW
/// bytes through `read_raw(file_offset, buf)`. `chunks` must come from
/// [`SparseLayout::finish`]; bytes past the last chunk read as zeros.
pub fn read_expanded<E>(
    chunks: &[Chunk],
    mut pos: u64,
    mut out: &mut [u8],
    mut read_raw: impl FnMut(u64, &mut [u8]) -> Result<(), E>,
) -> Result<(), E> {
    // The chunk holding `pos`: the last one starting at or before it.
    let mut i = chunks
        .partition_point(|c| c.offset <= pos)
        .saturating_sub(1);
    while !out.is_empty() {
        let Some(c) = chunks
            .get(i)
            .filter(|c| pos >= c.offset && pos < c.offset + c.len)
        else {
            out.fill(0);
            return Ok(());
        };
        let within = pos - c.offset;
        let n = ((c.len - within) as usize).min(out.len());
        let (head, rest) = out.split_at_mut(n);
        match c.data {
            ChunkData::Raw { file_offset } => read_raw(file_offset + within, head)?,
            ChunkData::Fill(p) => head
                .iter_mut()
                .enumerate()
                .for_each(|(k, b)| *b = p[(within as usize + k) % 4]),
            ChunkData::DontCare => head.fill(0),
        }
        out = rest;
        pos += n as u64;
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(blocks: u32, chunks: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(SPARSE_MAGIC.to_le_bytes());
        v.extend(1u16.to_le_bytes());
        v.extend(0u16.to_le_bytes());
        v.extend(28u16.to_le_bytes());
        v.extend(12u16.to_le_bytes());
        v.extend(4096u32.to_le_bytes());
        v.extend(blocks.to_le_bytes());
        v.extend(chunks.to_le_bytes());
        v.extend(0u32.to_le_bytes());
        v
    }

    fn chunk(v: &mut Vec<u8>, kind: u16, blocks: u32, payload: &[u8]) {
        v.extend(kind.to_le_bytes());
        v.extend(0u16.to_le_bytes());
        v.extend(blocks.to_le_bytes());
        v.extend((12 + payload.len() as u32).to_le_bytes());
        v.extend(payload);
    }

    /// RAW, FILL, DONT_CARE, CRC32 and RAW again: 5 chunks, 6 blocks.
    fn sample() -> (Vec<u8>, Vec<u8>) {
        let mut v = header(6, 5);
        let raw: Vec<u8> = (0..8192u32).map(|i| (i % 253) as u8 + 1).collect();
        chunk(&mut v, CHUNK_RAW, 2, &raw);
        chunk(&mut v, CHUNK_FILL, 1, &[1, 2, 3, 4]);
        chunk(&mut v, CHUNK_DONT_CARE, 2, &[]);
        chunk(&mut v, CHUNK_CRC32, 0, &[9, 9, 9, 9]);
        chunk(&mut v, CHUNK_RAW, 1, &raw[..4096]);
        let mut expanded = raw.clone();
        expanded.extend([1, 2, 3, 4].repeat(1024));
        expanded.extend(vec![0; 8192]);
        expanded.extend(&raw[..4096]);
        (v, expanded)
    }

    fn expand(bytes: &[u8]) -> Result<Vec<u8>, FormatError> {
        let chunks = parse(bytes)?;
        let h = SparseHeader::decode(bytes)?;
        let mut out = vec![0xee; h.image_len() as usize];
        read_expanded(&chunks, 0, &mut out, |off, buf: &mut [u8]| {
            buf.copy_from_slice(&bytes[off as usize..off as usize + buf.len()]);
            Ok::<(), ()>(())
        })
        .unwrap();
        Ok(out)
    }

    #[test]
    fn read_table_reads_what_parse_does_and_refuses_every_truncation() {
        let (sparse, _) = sample();
        let read = |bytes: &[u8]| {
            let bytes = bytes.to_vec();
            read_table(bytes.len() as u64, move |off, b: &mut [u8]| {
                let end = off as usize + b.len();
                if end > bytes.len() {
                    return Err("past the end");
                }
                b.copy_from_slice(&bytes[off as usize..end]);
                Ok(())
            })
        };
        let (header, chunks) = read(&sparse).unwrap();
        assert_eq!(chunks, parse(&sparse).unwrap());
        assert_eq!(header.image_len(), 6 * 4096);
        for n in 0..sparse.len() {
            assert!(read(&sparse[..n]).is_err(), "truncated to {n}");
        }
        // A read error is passed on as it is.
        let failing = read_table(sparse.len() as u64, |_, _| Err("EIO"));
        assert!(matches!(failing, Err(TableError::Read("EIO"))));
    }

    #[test]
    fn expands_every_chunk_kind() {
        let (sparse, expanded) = sample();
        assert!(is_sparse(&sparse));
        assert_eq!(expand(&sparse).unwrap(), expanded);
        // Reads at any offset and length agree with the whole.
        let chunks = parse(&sparse).unwrap();
        for (pos, len) in [
            (0, 1),
            (4095, 2),
            (8190, 4100),
            (12287, 9000),
            (20000, 4576),
        ] {
            let mut out = vec![0u8; len];
            read_expanded(&chunks, pos as u64, &mut out, |off, buf: &mut [u8]| {
                buf.copy_from_slice(&sparse[off as usize..off as usize + buf.len()]);
                Ok::<(), ()>(())
            })
            .unwrap();
            assert_eq!(out, expanded[pos..pos + len], "at {pos}+{len}");
        }
    }

    #[test]
    fn every_truncation_is_refused() {
        let (sparse, _) = sample();
        for n in 0..sparse.len() {
            assert!(parse(&sparse[..n]).is_err(), "truncated to {n} bytes");
        }
    }

    #[test]
    fn inconsistent_tables_are_refused() {
        let (sparse, _) = sample();
        let mut more = sparse.clone();
        more.push(0);
        assert!(matches!(parse(&more), Err(FormatError::Trailing { .. })));
        // Header promises more blocks than the chunks cover.
        let mut v = sparse.clone();
        v[16] = 7;
        assert!(parse(&v).is_err());
        // Fewer blocks than a chunk needs.
        v[16] = 5;
        assert!(parse(&v).is_err());
        // Unknown chunk type.
        let mut v = sparse.clone();
        v[28] = 0x00;
        assert!(parse(&v)
            .unwrap_err()
            .to_string()
            .contains("unknown chunk type"));
        // Version 2.
        let mut v = sparse.clone();
        v[4] = 2;
        assert!(parse(&v).is_err());
        // Block size not a multiple of 4.
        let mut v = sparse;
        v[12] = 2;
        assert!(parse(&v).is_err());
    }
}

/// How one run of blocks is stored when writing a sparse image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Raw,
    Fill([u8; 4]),
    DontCare,
}

fn run_of(block: &[u8]) -> Run {
    let p = [block[0], block[1], block[2], block[3]];
    if block.chunks_exact(4).all(|w| w == p) {
        if p == [0; 4] {
            Run::DontCare
        } else {
            Run::Fill(p)
        }
    } else {
        Run::Raw
    }
}

/// Writes an image of `len` bytes as an Android sparse image of
/// `block_size`-byte blocks (`len` must be a whole number of blocks):
/// zero blocks become DONT_CARE, blocks of one repeated 4-byte pattern FILL,
/// the rest RAW. `read(offset, buf)` reads the image; it is called twice
/// per block (once to classify, once to copy RAW blocks).
pub fn write_sparse<W: std::io::Write>(
    len: u64,
    block_size: u32,
    mut read: impl FnMut(u64, &mut [u8]) -> std::io::Result<()>,
    out: &mut W,
) -> std::io::Result<()> {
    let bs = block_size as u64;
    if bs == 0 || !bs.is_multiple_of(4) || !len.is_multiple_of(bs) {
        return Err(std::io::Error::other(format!(
            "{len} bytes is not a whole number of {block_size}-byte blocks"
        )));
    }
    let blocks = len / bs;
    if blocks > u32::MAX as u64 {
        return Err(std::io::Error::other("too many blocks for a sparse image"));
    }
    // First pass: runs of blocks of the same kind (runs of RAW capped so a
    // chunk's byte size fits its 32-bit field).
    let max_raw = ((u32::MAX as u64 - CHUNK_HEADER_LEN as u64) / bs).max(1);
    let mut runs: Vec<(Run, u64)> = Vec::new();
    let mut buf = vec![0u8; bs as usize];
    for b in 0..blocks {
        read(b * bs, &mut buf)?;
        let r = run_of(&buf);
        match runs.last_mut() {
            Some((last, n))
                if *last == r && (r != Run::Raw || *n < max_raw) && *n < u32::MAX as u64 =>
            {
                *n += 1
            }
            _ => runs.push((r, 1)),
        }
    }
    let mut h = Vec::with_capacity(FILE_HEADER_LEN);
    h.extend(SPARSE_MAGIC.to_le_bytes());
    h.extend(1u16.to_le_bytes());
    h.extend(0u16.to_le_bytes());
    h.extend((FILE_HEADER_LEN as u16).to_le_bytes());
    h.extend((CHUNK_HEADER_LEN as u16).to_le_bytes());
    h.extend(block_size.to_le_bytes());
    h.extend((blocks as u32).to_le_bytes());
    h.extend((runs.len() as u32).to_le_bytes());
    h.extend(0u32.to_le_bytes());
    out.write_all(&h)?;
    let mut at = 0u64;
    for (r, n) in runs {
        let (kind, payload) = match r {
            Run::Raw => (CHUNK_RAW, n * bs),
            Run::Fill(_) => (CHUNK_FILL, 4),
            Run::DontCare => (CHUNK_DONT_CARE, 0),
        };
        let mut c = Vec::with_capacity(CHUNK_HEADER_LEN);
        c.extend(kind.to_le_bytes());
        c.extend(0u16.to_le_bytes());
        c.extend((n as u32).to_le_bytes());
        c.extend(((CHUNK_HEADER_LEN as u64 + payload) as u32).to_le_bytes());
        out.write_all(&c)?;
        match r {
            Run::Raw => {
                for b in 0..n {
                    read((at + b) * bs, &mut buf)?;
                    out.write_all(&buf)?;
                }
            }
            Run::Fill(p) => out.write_all(&p)?,
            Run::DontCare => {}
        }
        at += n;
    }
    Ok(())
}

#[cfg(test)]
mod write_tests {
    use super::*;

    #[test]
    fn written_sparse_images_expand_to_the_original() {
        let bs = 4096usize;
        let mut img = vec![0u8; 9 * bs];
        img[..bs]
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = i as u8);
        img[2 * bs..4 * bs]
            .chunks_exact_mut(4)
            .for_each(|w| w.copy_from_slice(&[1, 2, 3, 4]));
        img[6 * bs..7 * bs].fill(0xff);
        img[8 * bs + 5] = 1;
        let mut out = Vec::new();
        write_sparse(
            img.len() as u64,
            4096,
            |off, b| {
                b.copy_from_slice(&img[off as usize..off as usize + b.len()]);
                Ok(())
            },
            &mut out,
        )
        .unwrap();
        let chunks = parse(&out).unwrap();
        // RAW, DONT_CARE, FILL, DONT_CARE, FILL(ff), DONT_CARE, RAW.
        assert_eq!(chunks.len(), 7);
        let mut back = vec![0xeeu8; img.len()];
        read_expanded(&chunks, 0, &mut back, |off, b: &mut [u8]| {
            b.copy_from_slice(&out[off as usize..off as usize + b.len()]);
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(back, img);
        assert!(write_sparse(4095, 4096, |_, _| Ok(()), &mut Vec::new()).is_err());
    }
}
