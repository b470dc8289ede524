//! Unlinked temporary files that hold the bytes of an input that cannot be
//! mapped as it is: an expanded sparse image, or an archive member that is
//! compressed or sits in a compressed stream. The file grows only with the
//! bytes that really arrive, all-zero 4 KiB blocks are left as holes, and
//! writing stops with an error before it would take more than the free
//! space of the temporary directory (`TMPDIR`, else `/tmp`), so no length
//! field of an input costs memory or disk that its data does not.

use memmap2::Mmap;
use romdelta_format::sparse::{Chunk, ChunkData};
use std::fs::File;
use std::os::unix::fs::FileExt;

/// Bytes written at a time.
const PIECE: usize = 1 << 20;
/// The granularity of the holes left for zeros.
const HOLE: usize = 4096;

/// A temporary file being written, at any offsets, once per byte.
pub(crate) struct Spill {
    file: File,
    /// Bytes still allowed to be written (the free space when created).
    budget: u64,
}

impl Spill {
    /// A new, empty, already unlinked file in the temporary directory.
    pub(crate) fn new() -> std::io::Result<Self> {
        let file = tempfile::tempfile()?;
        let budget = free_space(&file)?;
        Ok(Spill { file, budget })
    }

    /// Bytes that may still be written before the temporary directory is full.
    pub(crate) fn budget(&self) -> u64 {
        self.budget
    }

    /// Writes `data` at `pos`, skipping every all-zero 4 KiB block (by
    /// offset in the file): a byte written once and never again reads back
    /// as zero when skipped, so the file needs no zero bytes written.
    pub(crate) fn write_at(&mut self, data: &[u8], pos: u64) -> std::io::Result<()> {
        let mut at = 0usize;
        while at < data.len() {
            // Up to the next 4 KiB boundary of the file.
            let edge = HOLE - ((pos + at as u64) % HOLE as u64) as usize;
            let end = (at + edge).min(data.len());
            let piece = &data[at..end];
            if piece.iter().any(|&b| b != 0) {
                // Adjacent nonzero pieces are written together.
                let mut stop = end;
                while stop < data.len() {
                    let next = (stop + HOLE).min(data.len());
                    if data[stop..next].iter().all(|&b| b == 0) {
                        break;
                    }
                    stop = next;
                }
                let n = (stop - at) as u64;
                if n > self.budget {
                    return Err(no_space());
                }
                self.budget -= n;
                self.file.write_all_at(&data[at..stop], pos + at as u64)?;
                at = stop;
            } else {
                at = end;
            }
        }
        Ok(())
    }

    /// Sets the file's length to `len` and returns it.
    pub(crate) fn finish(self, len: u64) -> std::io::Result<File> {
        self.file.set_len(len)?;
        Ok(self.file)
    }
}

fn no_space() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::StorageFull,
        "the temporary directory (TMPDIR) has no room left for the image",
    )
}

/// Free bytes, for an unprivileged writer, of the file system holding `file`.
fn free_space(file: &File) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    // SAFETY: fstatvfs writes only into the struct it is given, and the
    // descriptor is open for the duration of the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatvfs(file.as_raw_fd(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Copies exactly `len` bytes from `reader` into a new temporary file and
/// returns it; an error when the reader ends sooner or holds more.
pub(crate) fn spill_reader(reader: &mut dyn std::io::Read, len: u64) -> Result<File, String> {
    let io = |e: std::io::Error| e.to_string();
    let mut spill = Spill::new().map_err(io)?;
    let mut buf = vec![0u8; PIECE.min(len as usize).max(1)];
    let mut pos = 0u64;
    while pos < len {
        let want = ((len - pos) as usize).min(buf.len());
        let n = match reader.read(&mut buf[..want]) {
            Ok(0) => return Err(format!("ends after {pos} of the {len} bytes it declares")),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.to_string()),
        };
        spill.write_at(&buf[..n], pos).map_err(io)?;
        pos += n as u64;
    }
    let mut one = [0u8; 1];
    if reader.read(&mut one).map_err(io)? != 0 {
        return Err(format!("holds more than the {len} bytes it declares"));
    }
    spill.finish(len).map_err(io)
}

/// The expanded image of `size` bytes described by `chunks` (RAW bytes
/// read through `read_raw(offset, buf)`), written to a new temporary file
/// and mapped read-only: DONT_CARE chunks, zero FILL chunks and zero blocks
/// of RAW chunks are holes. Refused before anything is written when the
/// RAW and nonzero FILL bytes would not fit in the temporary directory.
pub(crate) fn expand_sparse(
    size: u64,
    chunks: &[Chunk],
    mut read_raw: impl FnMut(u64, &mut [u8]) -> std::io::Result<()>,
) -> std::io::Result<Mmap> {
    let mut spill = Spill::new()?;
    let need: u64 = chunks
        .iter()
        .filter(|c| !matches!(c.data, ChunkData::DontCare | ChunkData::Fill([0, 0, 0, 0])))
        .map(|c| c.len)
        .sum();
    if need > spill.budget() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            format!(
                "its RAW and FILL chunks expand to {need} bytes; the temporary \
                 directory (TMPDIR) has {} free",
                spill.budget()
            ),
        ));
    }
    let mut buf = vec![0u8; PIECE];
    for c in chunks {
        let mut done = 0u64;
        match c.data {
            ChunkData::DontCare | ChunkData::Fill([0, 0, 0, 0]) => continue,
            ChunkData::Fill(p) => {
                // Chunks start at multiples of the block size, itself a
                // multiple of 4: the pattern starts in phase.
                buf.chunks_exact_mut(4).for_each(|w| w.copy_from_slice(&p));
                while done < c.len {
                    let n = ((c.len - done) as usize).min(buf.len());
                    spill.write_at(&buf[..n], c.offset + done)?;
                    done += n as u64;
                }
            }
            ChunkData::Raw { file_offset } => {
                while done < c.len {
                    let n = ((c.len - done) as usize).min(buf.len());
                    read_raw(file_offset + done, &mut buf[..n])?;
                    spill.write_at(&buf[..n], c.offset + done)?;
                    done += n as u64;
                }
            }
        }
    }
    let file = spill.finish(size)?;
    map_file(&file, size)
}

/// Maps the first `len` bytes of a temporary file read-only.
pub(crate) fn map_file(file: &File, len: u64) -> std::io::Result<Mmap> {
    let len = usize::try_from(len).map_err(|_| std::io::Error::other("image too large"))?;
    // SAFETY: the file is unlinked and only this process holds it; nothing
    // writes to it once it is mapped.
    unsafe { memmap2::MmapOptions::new().len(len).map(file) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn zero_blocks_are_holes_and_read_back_as_zeros() {
        let mut spill = Spill::new().unwrap();
        let mut data = vec![0u8; 64 << 10];
        data[5000] = 7; // in the second 4 KiB block
        data[40_000..40_010].fill(9);
        // Written at an offset that is not block-aligned.
        spill.write_at(&data, 100).unwrap();
        let file = spill.finish(1 << 30).unwrap();
        let map = map_file(&file, 1 << 30).unwrap();
        let mut want = vec![0u8; 100];
        want.extend_from_slice(&data);
        assert_eq!(&map[..want.len()], &want[..]);
        assert!(map[want.len()..want.len() + 4096].iter().all(|&b| b == 0));
        // Far less than the 1 GiB of its length is allocated.
        assert!(file.metadata().unwrap().blocks() * 512 <= 64 << 10);
    }

    #[test]
    fn a_reader_that_ends_early_or_goes_on_is_refused() {
        let err = spill_reader(&mut &[1u8; 10][..], 1 << 40).unwrap_err();
        assert!(
            err.contains("ends after 10 of the 1099511627776 bytes"),
            "{err}"
        );
        let err = spill_reader(&mut &[1u8; 10][..], 9).unwrap_err();
        assert!(err.contains("holds more than the 9 bytes"), "{err}");
        let f = spill_reader(&mut &[1u8; 10][..], 10).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 10);
    }
}
