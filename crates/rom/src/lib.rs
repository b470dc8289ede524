//! A ROM build as romdelta reads it: one partition image, or a directory of
//! `NAME.img` partition images. Images are memory-mapped for generation and
//! read through bounded buffers for application; reads past the end
//! of an image within its last block return zeros, so every image is a whole
//! number of blocks to the algorithms that work on blocks.
//!
//! Every mapping is of a file: the image itself, a stored member in place
//! in its zip, or an unlinked temporary file that holds an expanded sparse
//! image or a decompressed member (see `spill`), so the kernel may drop
//! clean pages and no length field of an input makes romdelta hold memory
//! its data does not fill.

mod spill;

use memmap2::Mmap;
use romdelta_format::sparse::{self, Chunk, SparseHeader};
use romdelta_format::{Extent, BLOCK_SIZE};
use romdelta_storage::StorageFile;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a ROM could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RomError {
    /// An I/O error on a path.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The path is neither an image file nor a directory of images.
    #[error("{path}: {reason}")]
    Invalid {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// How a ROM is laid out on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A single partition image file.
    Image,
    /// A directory of `NAME.img` files.
    Directory,
}

/// How a partition's bytes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Memory-mapped: every byte addressable at once (generation).
    Mapped,
    /// Positioned reads into bounded buffers (application): memory stays
    /// small whatever the image size, and read errors are reported, not
    /// raised as signals.
    Read,
}

/// Size of the buffer positioned reads go through.
const READ_CHUNK: usize = 1 << 20;

/// What a partition's bytes are read from.
enum Backing {
    /// A file of the real file system (the image, or the archive holding it).
    File(File),
    /// A file opened through a [`romdelta_storage::Storage`].
    Storage(Arc<dyn StorageFile>),
}

impl std::fmt::Debug for Backing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backing::File(file) => f.debug_tuple("File").field(file).finish(),
            Backing::Storage(_) => f.write_str("Storage"),
        }
    }
}

impl Backing {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<()> {
        match self {
            Backing::File(f) => f.read_exact_at(buf, pos),
            Backing::Storage(f) => f.read_at(buf, pos),
        }
    }
}

/// One partition image, opened read-only.
#[derive(Debug)]
pub struct Partition {
    /// Partition name (the file stem).
    pub name: String,
    /// Where it was read from.
    pub path: PathBuf,
    file: Backing,
    size: u64,
    /// A read-only mapping of a file (never anonymous memory), so
    /// [`Partition::release`] may always drop its pages.
    map: Option<Mmap>,
    /// The chunk table when the file is an Android sparse image; `size` is
    /// then the expanded size.
    sparse: Option<Vec<Chunk>>,
}

impl Partition {
    /// Opens one image file as partition `name`.
    pub fn open(name: &str, path: &Path, access: Access) -> Result<Self, RomError> {
        let io = |source| RomError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(RomError::Invalid {
                path: path.to_path_buf(),
                reason: "not a regular file".into(),
            });
        }
        let mut head = [0u8; sparse::FILE_HEADER_LEN];
        let sparse = if meta.len() >= head.len() as u64
            && file.read_exact_at(&mut head, 0).is_ok()
            && sparse::is_sparse(&head)
        {
            Some(
                read_sparse_table(&file, meta.len()).map_err(|e| RomError::Invalid {
                    path: path.to_path_buf(),
                    reason: format!("Android sparse image: {e}"),
                })?,
            )
        } else {
            None
        };
        if let Some((header, chunks)) = sparse {
            let size = header.image_len();
            let map = match access {
                Access::Mapped if size > 0 => Some(
                    spill::expand_sparse(size, &chunks, |off, b| file.read_exact_at(b, off))
                        .map_err(|e| RomError::Invalid {
                            path: path.to_path_buf(),
                            reason: format!("Android sparse image: expanding it: {e}"),
                        })?,
                ),
                _ => None,
            };
            return Ok(Partition {
                name: name.to_string(),
                path: path.to_path_buf(),
                file: Backing::File(file),
                size,
                map,
                sparse: Some(chunks),
            });
        }
        // SAFETY: the image is mapped read-only; romdelta never writes to a
        // file it has mapped, and images are not expected to change while a
        // diff runs (as with any tool that reads them).
        let map = if meta.len() == 0 || access == Access::Read {
            None
        } else {
            Some(unsafe { Mmap::map(&file) }.map_err(io)?)
        };
        Ok(Partition {
            name: name.to_string(),
            path: path.to_path_buf(),
            file: Backing::File(file),
            size: meta.len(),
            map,
            sparse: None,
        })
    }

    /// A raw image read through `file`, a file of some [`romdelta_storage::Storage`]
    /// (a device's partition image in the recovery harness): never mapped.
    pub fn from_storage(
        name: &str,
        path: &Path,
        file: Arc<dyn StorageFile>,
    ) -> Result<Self, RomError> {
        let size = file.len().map_err(|source| RomError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Partition {
            name: name.to_string(),
            path: path.to_path_buf(),
            file: Backing::Storage(file),
            size,
            map: None,
            sparse: None,
        })
    }

    /// What tells the file the partition was read from (the image, or the
    /// archive holding it) from another one put in its place: device,
    /// inode, modification time (seconds, nanoseconds).
    pub fn identity(&self) -> std::io::Result<[u64; 4]> {
        match &self.file {
            Backing::File(f) => {
                use std::os::unix::fs::MetadataExt;
                let m = f.metadata()?;
                Ok([m.dev(), m.ino(), m.mtime() as u64, m.mtime_nsec() as u64])
            }
            Backing::Storage(f) => f.identity(),
        }
    }

    /// Whether the file is an Android sparse image (read expanded).
    pub fn is_sparse(&self) -> bool {
        self.sparse.is_some()
    }

    /// Reads expanded image bytes at `pos` without a mapping.
    fn read_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<()> {
        match &self.sparse {
            None => self.file.read_exact_at(buf, pos),
            Some(chunks) => {
                sparse::read_expanded(chunks, pos, buf, |off, b| self.file.read_exact_at(b, off))
            }
        }
    }

    /// The image bytes of a partition opened with [`Access::Mapped`].
    ///
    /// # Panics
    /// If the partition was opened with [`Access::Read`].
    pub fn bytes(&self) -> &[u8] {
        match &self.map {
            Some(m) => &m[..self.size as usize],
            None if self.size == 0 => &[],
            None => panic!("{}: bytes() needs a mapped partition", self.path.display()),
        }
    }

    /// A partition read out of an archive: `len` bytes from `reader`,
    /// written to an unlinked temporary file as they arrive (zero blocks
    /// left as holes) and mapped; expanded when they are an Android sparse
    /// image. `archive` is the archive file, `path` names the member.
    fn from_reader(
        name: &str,
        path: PathBuf,
        archive: &File,
        reader: &mut dyn std::io::Read,
        len: u64,
    ) -> Result<Self, RomError> {
        check_member_len(&path, len)?;
        let spilled = spill::spill_reader(reader, len).map_err(|reason| RomError::Invalid {
            path: path.clone(),
            reason,
        })?;
        let mut head = [0u8; sparse::FILE_HEADER_LEN];
        let is_sparse = len >= head.len() as u64
            && spilled.read_exact_at(&mut head, 0).is_ok()
            && sparse::is_sparse(&head);
        let (map, size) = if is_sparse {
            let (header, chunks) =
                read_sparse_table(&spilled, len).map_err(|e| RomError::Invalid {
                    path: path.clone(),
                    reason: format!("Android sparse image: {e}"),
                })?;
            let size = header.image_len();
            let map = spill::expand_sparse(size, &chunks, |off, b| spilled.read_exact_at(b, off));
            (map, size)
        } else {
            (spill::map_file(&spilled, len), len)
        };
        Self::of_member(name, path, archive, map, size)
    }

    /// A partition that is a stored (uncompressed) zip member: its `len`
    /// bytes at `offset` of the zip file `archive`, mapped in place, or
    /// expanded like any sparse image when they are one.
    fn from_stored(
        name: &str,
        path: PathBuf,
        archive: &File,
        offset: u64,
        len: u64,
    ) -> Result<Self, RomError> {
        check_member_len(&path, len)?;
        let invalid = |reason: String| RomError::Invalid {
            path: path.clone(),
            reason,
        };
        let io = |source| RomError::Io {
            path: path.clone(),
            source,
        };
        let file_len = archive.metadata().map_err(io)?.len();
        if offset.checked_add(len).is_none_or(|end| end > file_len) {
            return Err(invalid(format!(
                "its {len} bytes at offset {offset} lie outside the archive of {file_len} bytes"
            )));
        }
        if len == 0 {
            return Self::of_member(name, path, archive, spill::map_file(archive, 0), 0);
        }
        // SAFETY: mapped read-only, as image files are (see Partition::open).
        let bytes = unsafe {
            memmap2::MmapOptions::new()
                .offset(offset)
                .len(len as usize)
                .map(archive)
        }
        .map_err(io)?;
        if !sparse::is_sparse(&bytes) {
            return Self::of_member(name, path, archive, Ok(bytes), len);
        }
        let chunks =
            sparse::parse(&bytes).map_err(|e| invalid(format!("Android sparse image: {e}")))?;
        let size = SparseHeader::decode(&bytes)
            .map_err(|e| invalid(e.to_string()))?
            .image_len();
        let map = spill::expand_sparse(size, &chunks, |off, b| {
            b.copy_from_slice(&bytes[off as usize..off as usize + b.len()]);
            Ok(())
        });
        Self::of_member(name, path, archive, map, size)
    }

    /// The partition of an archive member whose bytes `map` maps.
    fn of_member(
        name: &str,
        path: PathBuf,
        archive: &File,
        map: std::io::Result<Mmap>,
        size: u64,
    ) -> Result<Self, RomError> {
        let io = |source| RomError::Io {
            path: path.clone(),
            source,
        };
        let map = map.map_err(io)?;
        let file = archive.try_clone().map_err(io)?;
        Ok(Partition {
            name: name.to_string(),
            path,
            file: Backing::File(file),
            size,
            map: (size > 0).then_some(map),
            sparse: None,
        })
    }

    /// Lets the kernel drop this process's mapping of bytes
    /// `offset..offset + len` of a mapped partition: the pages stay in the
    /// page cache and are mapped again on the next access, but no longer
    /// count as resident here. Whole-image passes call it behind them, so a
    /// diff of two large images does not hold both resident. A no-op for
    /// partitions that are not mapped.
    pub fn release(&self, offset: u64, len: u64) {
        let Some(map) = self.map.as_ref() else {
            return;
        };
        let end = offset.saturating_add(len).min(self.size);
        release_pages(map, offset, end.saturating_sub(offset));
    }

    /// [`Partition::release`] of the whole image.
    pub fn release_all(&self) {
        self.release(0, self.size);
    }

    /// Calls `f` on consecutive pieces of at most `piece` bytes of a mapped
    /// partition (with their offsets), releasing each piece after use: a
    /// whole-image pass whose resident memory is one piece, not the image.
    pub fn for_each_chunk(&self, piece: usize, mut f: impl FnMut(u64, &[u8])) {
        let bytes = self.bytes();
        for (k, chunk) in bytes.chunks(piece.max(1)).enumerate() {
            let off = (k * piece.max(1)) as u64;
            f(off, chunk);
            self.release(off, chunk.len() as u64);
        }
    }

    /// Whether [`Partition::bytes`] is available.
    pub fn is_mapped(&self) -> bool {
        self.map.is_some() || self.size == 0
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Number of blocks, counting a final partial block.
    pub fn blocks(&self) -> u64 {
        self.size().div_ceil(BLOCK_SIZE)
    }

    /// The bytes of block `index` of a mapped partition, zero-padded to a
    /// whole block; `None` past the end.
    pub fn block(&self, index: u64) -> Option<std::borrow::Cow<'_, [u8]>> {
        let start = index.checked_mul(BLOCK_SIZE)?;
        let bytes = self.bytes();
        if start >= bytes.len() as u64 {
            return None;
        }
        let start = start as usize;
        let end = (start + BLOCK_SIZE as usize).min(bytes.len());
        if end - start == BLOCK_SIZE as usize {
            Some(std::borrow::Cow::Borrowed(&bytes[start..end]))
        } else {
            let mut b = vec![0u8; BLOCK_SIZE as usize];
            b[..end - start].copy_from_slice(&bytes[start..end]);
            Some(std::borrow::Cow::Owned(b))
        }
    }

    fn io_err(&self) -> impl Fn(std::io::Error) -> RomError + '_ {
        |source| RomError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Appends the bytes of `extents` to `out`, zero-padding past the end of
    /// the image. The caller has checked that every extent lies within
    /// [`Partition::blocks`].
    pub fn read_extents(&self, extents: &[Extent], out: &mut Vec<u8>) -> Result<(), RomError> {
        self.for_each_piece(extents, |b| out.extend_from_slice(b))
    }

    /// Feeds the bytes of `extents` (zero-padded like [`Partition::read_extents`])
    /// to `f` in pieces of at most 1 MiB when reading, without copying when mapped.
    pub fn for_each_piece(
        &self,
        extents: &[Extent],
        mut f: impl FnMut(&[u8]),
    ) -> Result<(), RomError> {
        const ZEROS: [u8; BLOCK_SIZE as usize] = [0; BLOCK_SIZE as usize];
        let mut buf = Vec::new();
        for e in extents {
            let start = e.byte_offset().min(self.size);
            let end = (e.byte_offset() + e.byte_len()).min(self.size);
            match &self.map {
                Some(m) => f(&m[start as usize..end as usize]),
                None => {
                    let mut pos = start;
                    while pos < end {
                        let n = ((end - pos) as usize).min(READ_CHUNK);
                        buf.resize(n, 0);
                        self.read_at(&mut buf, pos).map_err(self.io_err())?;
                        f(&buf);
                        pos += n as u64;
                    }
                }
            }
            let mut pad = (e.byte_len() - (end - start)) as usize;
            while pad > 0 {
                let n = pad.min(ZEROS.len());
                f(&ZEROS[..n]);
                pad -= n;
            }
        }
        Ok(())
    }

    /// SHA-256 of exactly the image's bytes.
    pub fn sha256(&self) -> Result<romdelta_format::Digest, RomError> {
        match &self.map {
            Some(m) => Ok(romdelta_format::sha256(m)),
            // Raw or sparse: `read_at` reads the image's bytes either way.
            None => {
                sha256_read(self.size, |buf, pos| self.read_at(buf, pos)).map_err(self.io_err())
            }
        }
    }
}

/// Reads the chunk table of the sparse image `file` (of `file_len` bytes).
fn read_sparse_table(file: &File, file_len: u64) -> Result<(SparseHeader, Vec<Chunk>), String> {
    sparse::read_table(file_len, |off, b| file.read_exact_at(b, off)).map_err(|e| e.to_string())
}

/// Refuses an archive member that declares more bytes than any partition.
fn check_member_len(path: &Path, len: u64) -> Result<(), RomError> {
    if len > romdelta_format::limits::MAX_PARTITION_SIZE {
        return Err(RomError::Invalid {
            path: path.to_path_buf(),
            reason: format!("{len} bytes is larger than any partition"),
        });
    }
    Ok(())
}

/// Drops this process's pages of bytes `offset..offset + len` of `map`, a
/// read-only mapping of a file (only the whole pages inside the range, and
/// nothing past the mapping's end): they stay in the page cache and are
/// read again on the next access, but no longer count as resident here.
pub fn release_pages(map: &memmap2::Mmap, offset: u64, len: u64) {
    const PAGE: u64 = 4096;
    // Whole pages by address: a mapping at an offset into its file (a
    // stored zip member) need not start on a page boundary.
    let base = map.as_ptr() as u64;
    let start = (base + offset.min(map.len() as u64)).div_ceil(PAGE) * PAGE - base;
    let end = (base + offset.saturating_add(len).min(map.len() as u64)) / PAGE * PAGE;
    let Some(end) = end.checked_sub(base) else {
        return;
    };
    if end <= start {
        return;
    }
    // SAFETY: the mapping is a read-only mapping of a file; after
    // MADV_DONTNEED the next access reads the same file contents again, so
    // no reference into the mapping observes a change.
    let _ = unsafe {
        map.unchecked_advise_range(
            memmap2::UncheckedAdvice::DontNeed,
            start as usize,
            (end - start) as usize,
        )
    };
}

/// SHA-256 of the first `size` bytes of `file`, read through a 1 MiB buffer.
pub fn sha256_file(file: &File, size: u64) -> std::io::Result<romdelta_format::Digest> {
    sha256_read(size, |buf, pos| file.read_exact_at(buf, pos))
}

/// SHA-256 of an image taken in order, one range after another: each call
/// to [`RunsHasher::hash_to`] adds the bytes from where the last one
/// stopped, reading only those inside its data runs (sorted, disjoint
/// `(offset, length)` ranges, as `StorageFile::data_runs` gives them) and
/// hashing the rest as the zeros they are known to be, without reading
/// them (on a fresh image, its unwritten ZERO ranges). What lets an image
/// be hashed while it is still being written, as far as it is finished.
pub struct RunsHasher {
    h: sha2::Sha256,
    pos: u64,
    buf: Vec<u8>,
}

impl Default for RunsHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl RunsHasher {
    /// A hasher at offset 0.
    pub fn new() -> Self {
        use sha2::Digest as _;
        RunsHasher {
            h: sha2::Sha256::new(),
            pos: 0,
            buf: Vec::new(),
        }
    }

    /// How many bytes have been hashed.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Hashes the bytes from [`RunsHasher::position`] up to `end`: those
    /// inside `runs` (sorted, disjoint; parts outside the range are
    /// ignored) are read through `read(buf, offset)`, the others are zeros.
    pub fn hash_to(
        &mut self,
        end: u64,
        runs: &[(u64, u64)],
        mut read: impl FnMut(&mut [u8], u64) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        use sha2::Digest as _;
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        let zeros = |h: &mut sha2::Sha256, mut n: u64| {
            while n > 0 {
                let k = n.min(ZEROS.len() as u64) as usize;
                h.update(&ZEROS[..k]);
                n -= k as u64;
            }
        };
        if end <= self.pos {
            return Ok(());
        }
        let want = READ_CHUNK.min((end - self.pos) as usize);
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        for &(run, len) in runs {
            let stop = run.saturating_add(len).min(end);
            if stop <= self.pos {
                continue;
            }
            let start = run.clamp(self.pos, end);
            zeros(&mut self.h, start - self.pos);
            self.pos = start;
            while self.pos < stop {
                let n = ((stop - self.pos) as usize).min(self.buf.len());
                read(&mut self.buf[..n], self.pos)?;
                self.h.update(&self.buf[..n]);
                self.pos += n as u64;
            }
        }
        zeros(&mut self.h, end - self.pos);
        self.pos = end;
        Ok(())
    }

    /// The SHA-256 of everything hashed.
    pub fn finish(self) -> romdelta_format::Digest {
        use sha2::Digest as _;
        self.h.finalize().into()
    }
}

/// SHA-256 of `size` bytes read through `read(buf, offset)` into a 1 MiB buffer.
pub fn sha256_read(
    size: u64,
    mut read: impl FnMut(&mut [u8], u64) -> std::io::Result<()>,
) -> std::io::Result<romdelta_format::Digest> {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; READ_CHUNK.min(size as usize)];
    let mut pos = 0u64;
    while pos < size {
        let n = ((size - pos) as usize).min(buf.len());
        read(&mut buf[..n], pos)?;
        h.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(h.finalize().into())
}

/// Archive kinds a ROM may come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Archive {
    /// A target-files style zip (`IMAGES/*.img`).
    Zip,
    /// A fastboot ROM tarball (`*/images/*.img`), optionally gzipped.
    Tar { gzip: bool },
}

fn archive_kind(path: &Path) -> Option<Archive> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    if name.ends_with(".zip") {
        Some(Archive::Zip)
    } else if name.ends_with(".tgz") || name.ends_with(".tar.gz") {
        Some(Archive::Tar { gzip: true })
    } else if name.ends_with(".tar") {
        Some(Archive::Tar { gzip: false })
    } else {
        None
    }
}

/// The partition an archive member stands for: `IMAGES/NAME.img` or
/// `.../images/NAME.img` (any case of the directory name).
fn member_partition(member: &str) -> Option<String> {
    let p = Path::new(member);
    let dir = p.parent()?.file_name()?.to_str()?;
    if !dir.eq_ignore_ascii_case("images") || p.extension()?.to_str()? != "img" {
        return None;
    }
    let name = p.file_stem()?.to_str()?;
    romdelta_format::check_partition_name(name)
        .ok()
        .map(|_| name.to_string())
}

/// Opens every `IMAGES/*.img` (zip) or `images/*.img` (tar) member of the
/// archive at `path`, mapped: a stored zip member in place in the zip, any
/// other member (and any sparse one, expanded) from an unlinked temporary
/// file that holds only the member's nonzero blocks.
fn open_archive(path: &Path) -> Result<Rom, RomError> {
    let io = |source| RomError::Io {
        path: path.to_path_buf(),
        source,
    };
    let invalid = |reason: String| RomError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(io)?;
    let mut partitions: Vec<Partition> = Vec::new();
    match archive_kind(path).expect("checked by the caller") {
        Archive::Zip => {
            let mut zip = zip::ZipArchive::new(file.try_clone().map_err(io)?)
                .map_err(|e| invalid(format!("zip: {e}")))?;
            for i in 0..zip.len() {
                let mut entry = zip
                    .by_index(i)
                    .map_err(|e| invalid(format!("zip entry {i}: {e}")))?;
                let entry_name = entry
                    .name()
                    .map_err(|e| invalid(format!("zip entry {i}: {e}")))?
                    .into_owned();
                let Some(name) = member_partition(&entry_name) else {
                    continue;
                };
                let member = path.join(&entry_name);
                let len = entry.size();
                let start = entry.data_start();
                let part = match start {
                    Some(start) if entry.compression() == zip::CompressionMethod::Stored => {
                        if entry.compressed_size() != len {
                            return Err(invalid(format!(
                                "zip entry {entry_name}: stored with {} bytes of data for {len} bytes",
                                entry.compressed_size()
                            )));
                        }
                        let part = Partition::from_stored(&name, member, &file, start, len)?;
                        // Read through once for the zip's CRC-32 check.
                        std::io::copy(&mut entry, &mut std::io::sink())
                            .map_err(|e| invalid(format!("zip entry {entry_name}: {e}")))?;
                        part
                    }
                    _ => Partition::from_reader(&name, member, &file, &mut entry, len)?,
                };
                partitions.push(part);
            }
        }
        Archive::Tar { gzip } => {
            let reader: Box<dyn std::io::Read> = if gzip {
                Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(
                    file.try_clone().map_err(io)?,
                )))
            } else {
                Box::new(std::io::BufReader::new(file.try_clone().map_err(io)?))
            };
            let mut tar = tar::Archive::new(reader);
            for entry in tar.entries().map_err(io)? {
                let mut entry = entry.map_err(io)?;
                if !entry.header().entry_type().is_file() {
                    continue;
                }
                let member_name = entry.path().map_err(io)?.to_string_lossy().into_owned();
                let Some(name) = member_partition(&member_name) else {
                    continue;
                };
                let len = entry.size();
                let member = path.join(&member_name);
                partitions.push(Partition::from_reader(
                    &name, member, &file, &mut entry, len,
                )?);
            }
        }
    }
    if partitions.is_empty() {
        return Err(invalid(
            "archive holds no IMAGES/NAME.img or images/NAME.img partition images".into(),
        ));
    }
    partitions.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(w) = partitions.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(invalid(format!("partition {} appears twice", w[0].name)));
    }
    Ok(Rom {
        layout: Layout::Directory,
        partitions,
    })
}

/// A ROM build: its partitions, sorted by name.
#[derive(Debug)]
pub struct Rom {
    /// How it is laid out on disk.
    pub layout: Layout,
    /// The partitions, sorted by name.
    pub partitions: Vec<Partition>,
}

/// The partition name a single image file stands for: its file stem when
/// that is a valid partition name, else `image`.
pub fn name_for_image(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| romdelta_format::check_partition_name(s).is_ok())
        .unwrap_or("image")
        .to_string()
}

impl Rom {
    /// Opens a ROM for generation: an image file, or a directory whose
    /// `*.img` files are its partitions, memory-mapped.
    pub fn open(path: &Path) -> Result<Rom, RomError> {
        Self::open_with(path, Access::Mapped)
    }

    /// Opens a ROM with the given access mode.
    pub fn open_with(path: &Path, access: Access) -> Result<Rom, RomError> {
        let meta = std::fs::metadata(path).map_err(|source| RomError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if meta.is_file() && archive_kind(path).is_some() {
            return open_archive(path);
        }
        if meta.is_file() {
            let p = Partition::open(&name_for_image(path), path, access)?;
            return Ok(Rom {
                layout: Layout::Image,
                partitions: vec![p],
            });
        }
        if !meta.is_dir() {
            return Err(RomError::Invalid {
                path: path.to_path_buf(),
                reason: "neither an image file nor a directory".into(),
            });
        }
        let io = |source| RomError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut partitions = Vec::new();
        for entry in std::fs::read_dir(path).map_err(io)? {
            let entry = entry.map_err(io)?;
            let p = entry.path();
            if p.extension().and_then(|e| e.to_str()) != Some("img") {
                continue;
            }
            let name = p
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            romdelta_format::check_partition_name(&name).map_err(|e| RomError::Invalid {
                path: p.clone(),
                reason: e.to_string(),
            })?;
            partitions.push(Partition::open(&name, &p, access)?);
        }
        if partitions.is_empty() {
            return Err(RomError::Invalid {
                path: path.to_path_buf(),
                reason: "directory holds no NAME.img partition images".into(),
            });
        }
        partitions.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Rom {
            layout: Layout::Directory,
            partitions,
        })
    }

    /// A ROM of the given `(partition name, image file)` pairs, laid out as
    /// a directory (for images named other than `NAME.img`, such as a
    /// device's `system_a.img`).
    pub fn from_files(files: &[(String, PathBuf)], access: Access) -> Result<Rom, RomError> {
        Self::of_files(files, |name, path| Partition::open(name, path, access))
    }

    /// A ROM of the given `(partition name, image file)` pairs read through
    /// `fs`, laid out as a directory.
    pub fn from_storage(
        files: &[(String, PathBuf)],
        fs: &dyn romdelta_storage::Storage,
    ) -> Result<Rom, RomError> {
        Self::of_files(files, |name, path| {
            let file = fs
                .open(path, romdelta_storage::OpenMode::Read)
                .map_err(|source| RomError::Io {
                    path: path.clone(),
                    source,
                })?;
            Partition::from_storage(name, path, file)
        })
    }

    /// The ROM of `files`, each checked for a valid partition name and
    /// opened by `open`, sorted by name.
    fn of_files(
        files: &[(String, PathBuf)],
        mut open: impl FnMut(&str, &PathBuf) -> Result<Partition, RomError>,
    ) -> Result<Rom, RomError> {
        let mut partitions = Vec::new();
        for (name, path) in files {
            romdelta_format::check_partition_name(name).map_err(|e| RomError::Invalid {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            partitions.push(open(name, path)?);
        }
        partitions.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Rom {
            layout: Layout::Directory,
            partitions,
        })
    }

    /// The partition called `name`.
    pub fn get(&self, name: &str) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.name == name)
    }

    /// Total bytes over all partitions.
    pub fn total_size(&self) -> u64 {
        self.partitions.iter().map(|p| p.size()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_with_holes_equals_hashing_every_byte() {
        let size = 3 * READ_CHUNK as u64 + 12345;
        let mut bytes = vec![0u8; size as usize];
        let runs = [(5u64, 10u64), (1 << 20, 3 << 19), (size - 7, 7)];
        for &(o, n) in &runs {
            for (i, b) in bytes[o as usize..(o + n) as usize].iter_mut().enumerate() {
                *b = (i % 251) as u8 + 1;
            }
        }
        let read_any = |buf: &mut [u8], off: u64| {
            buf.copy_from_slice(&bytes[off as usize..off as usize + buf.len()]);
            Ok(())
        };
        let whole = sha256_read(size, read_any).unwrap();
        // Only bytes inside a run are read.
        let read = |buf: &mut [u8], off: u64| {
            let end = off + buf.len() as u64;
            let inside = runs
                .iter()
                .any(|&(o, n)| o <= off && end <= o + n.min(size - o));
            assert!(inside, "read {off}..{end} outside the runs");
            read_any(buf, off)
        };
        assert_eq!(whole, romdelta_format::sha256(&bytes));
        // In one call.
        fn in_one(
            size: u64,
            runs: &[(u64, u64)],
            read: impl FnMut(&mut [u8], u64) -> std::io::Result<()>,
        ) -> romdelta_format::Digest {
            let mut h = RunsHasher::new();
            h.hash_to(size, runs, read).unwrap();
            h.finish()
        }
        assert_eq!(in_one(size, &runs, read), whole);
        assert_eq!(in_one(size, &[(0, size)], read_any), whole);
        // Runs past the end are cut at it; no runs at all hash zeros.
        assert_eq!(
            in_one(size, &[(5, 10), (1 << 20, 3 << 19), (size - 7, 100)], read),
            whole
        );
        let zeros = vec![0u8; size as usize];
        let none = in_one(size, &[], |_, _| panic!("nothing to read"));
        assert_eq!(none, romdelta_format::sha256(&zeros));
        // Range by range, each with the runs inside it (or all of them,
        // or runs reaching over its edges), gives the same hash.
        for step in [1u64, 4096, 777_777, size] {
            let mut h = RunsHasher::new();
            let mut at = 0;
            while at < size {
                let end = (at + step).min(size);
                let inside: Vec<_> = runs
                    .iter()
                    .filter(|&&(o, n)| o < end && o + n > at)
                    .copied()
                    .collect();
                let given = if step == 4096 { &runs[..] } else { &inside[..] };
                h.hash_to(end, given, read).unwrap();
                assert_eq!(h.position(), end);
                at = end;
            }
            // Asking for less than what is hashed adds nothing.
            h.hash_to(size / 2, &runs, read).unwrap();
            assert_eq!(h.finish(), whole, "step {step}");
        }
    }

    #[test]
    fn released_pieces_read_back_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.img");
        let bytes: Vec<u8> = (0..3 * 1024 * 1024 + 123u32)
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &bytes).unwrap();
        let p = Partition::open("p", &path, Access::Mapped).unwrap();
        let mut seen = Vec::new();
        p.for_each_chunk(1 << 20, |off, piece| {
            assert_eq!(off as usize, seen.len());
            seen.extend_from_slice(piece);
        });
        assert_eq!(seen, bytes);
        p.release(5, 10_000);
        p.release_all();
        p.release(u64::MAX - 1, 10);
        assert_eq!(p.bytes(), &bytes[..]);
        // Not mapped: a no-op.
        let r = Partition::open("p", &path, Access::Read).unwrap();
        r.release_all();
    }

    /// A sparse image of `blocks` 4 KiB blocks made of `chunks`
    /// (`(type, blocks, payload)`).
    fn sparse_image(blocks: u32, chunks: &[(u16, u32, &[u8])]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(sparse::SPARSE_MAGIC.to_le_bytes());
        v.extend(1u16.to_le_bytes());
        v.extend(0u16.to_le_bytes());
        v.extend(28u16.to_le_bytes());
        v.extend(12u16.to_le_bytes());
        v.extend(4096u32.to_le_bytes());
        v.extend(blocks.to_le_bytes());
        v.extend((chunks.len() as u32).to_le_bytes());
        v.extend(0u32.to_le_bytes());
        for (kind, n, payload) in chunks {
            v.extend(kind.to_le_bytes());
            v.extend(0u16.to_le_bytes());
            v.extend(n.to_le_bytes());
            v.extend((12 + payload.len() as u32).to_le_bytes());
            v.extend(*payload);
        }
        v
    }

    const RAW: u16 = 0xcac1;
    const FILL: u16 = 0xcac2;
    const DONT_CARE: u16 = 0xcac3;

    #[test]
    fn a_sparse_image_maps_expanded_with_what_reading_gives() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.img");
        let raw: Vec<u8> = (0..3 * 4096u32).map(|i| (i % 251) as u8).collect();
        let mut with_zeros = raw.clone();
        with_zeros[4096..8192].fill(0);
        let img = sparse_image(
            12,
            &[
                (RAW, 3, &with_zeros),
                (FILL, 2, &[0xff, 0, 0xff, 1]),
                (DONT_CARE, 4, &[]),
                (FILL, 1, &[0, 0, 0, 0]),
                (RAW, 2, &raw[..8192]),
            ],
        );
        std::fs::write(&path, &img).unwrap();
        let mapped = Partition::open("s", &path, Access::Mapped).unwrap();
        let read = Partition::open("s", &path, Access::Read).unwrap();
        assert_eq!(mapped.size(), 12 * 4096);
        let mut want = Vec::new();
        read.read_extents(&[Extent::new(0, 12)], &mut want).unwrap();
        assert_eq!(mapped.bytes(), &want[..]);
        assert_eq!(&want[..3 * 4096], &with_zeros[..]);
        assert_eq!(
            &want[3 * 4096..3 * 4096 + 8],
            &[0xff, 0, 0xff, 1, 0xff, 0, 0xff, 1]
        );
        assert_eq!(mapped.sha256().unwrap(), read.sha256().unwrap());
        mapped.release_all();
        assert_eq!(mapped.bytes(), &want[..]);
    }

    #[test]
    fn a_tiny_sparse_image_claiming_16_tib_costs_neither_memory_nor_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.img");
        let data = [0x5au8; 4096];
        // 2^32 - 1 blocks: the largest image a 4 KiB-block header can claim.
        let img = sparse_image(u32::MAX, &[(DONT_CARE, u32::MAX - 1, &[]), (RAW, 1, &data)]);
        std::fs::write(&path, &img).unwrap();
        let p = Partition::open("s", &path, Access::Mapped).unwrap();
        assert_eq!(p.size(), u32::MAX as u64 * 4096);
        assert_eq!(p.block(0).unwrap().as_ref(), &[0u8; 4096][..]);
        assert_eq!(
            p.block(u32::MAX as u64 / 2).unwrap().as_ref(),
            &[0u8; 4096][..]
        );
        assert_eq!(p.block(u32::MAX as u64 - 1).unwrap().as_ref(), &data[..]);
        assert!(p.block(u32::MAX as u64).is_none());
    }

    #[test]
    fn a_fill_chunk_larger_than_the_temporary_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.img");
        let img = sparse_image(u32::MAX, &[(FILL, u32::MAX, &[1, 2, 3, 4])]);
        std::fs::write(&path, &img).unwrap();
        let err = Partition::open("s", &path, Access::Mapped)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("s.img") && err.contains("Android sparse image") && err.contains("TMPDIR"),
            "{err}"
        );
        // Read through the chunk table, it needs no room at all.
        let p = Partition::open("s", &path, Access::Read).unwrap();
        let mut b = Vec::new();
        p.read_extents(&[Extent::new(u32::MAX as u64 - 1, 1)], &mut b)
            .unwrap();
        assert_eq!(&b[..4], &[1, 2, 3, 4]);
    }
}
