//! Remote payloads read by ranges (`romdelta payload inspect|extract URL`):
//! a local sparse mirror of a remote payload.bin or OTA zip that holds only
//! the byte ranges fetched: the zip's directory, the payload's metadata and
//! signatures, and the data of the partitions asked for. The payload
//! readers then run on the mirror as on a local file, and never touch a
//! byte that was not fetched (every operation they run is one of a
//! partition asked for).

use crate::fetch::Transport;
use crate::ReleaseError;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A sparse local copy of a remote file, filled by ranges.
pub struct Mirror {
    transport: Arc<Transport>,
    url: String,
    len: u64,
    file: tempfile::NamedTempFile,
    have: Mutex<Vec<(u64, u64)>>,
}

/// The most bytes a remote payload's metadata (header, manifest,
/// metadata signature) may have.
const MAX_METADATA: u64 = 64 << 20;

impl Mirror {
    /// A mirror of `url` (its length from the server), empty so far.
    pub fn open(transport: Arc<Transport>, url: &str) -> Result<Mirror, ReleaseError> {
        let len = transport
            .length(url)
            .map_err(|e| ReleaseError::Invalid(format!("{url}: {e}")))?;
        let file = tempfile::NamedTempFile::new()
            .map_err(|e| ReleaseError::Invalid(format!("a temporary file: {e}")))?;
        file.as_file()
            .set_len(len)
            .map_err(|e| ReleaseError::Invalid(format!("a temporary file of {len} bytes: {e}")))?;
        Ok(Mirror {
            transport,
            url: url.to_string(),
            len,
            file,
            have: Mutex::new(Vec::new()),
        })
    }

    /// The remote file's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the remote file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The local mirror's path (sparse: holes where nothing was fetched).
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Bytes received.
    pub fn received(&self) -> u64 {
        self.transport.received()
    }

    /// Fetches bytes `[start, end)` (clamped to the file) unless held.
    pub fn fetch(&self, start: u64, end: u64) -> Result<(), ReleaseError> {
        use std::os::unix::fs::FileExt as _;
        let end = end.min(self.len);
        if start >= end {
            return Ok(());
        }
        if self
            .have
            .lock()
            .expect("not poisoned")
            .iter()
            .any(|&(s, e)| s <= start && end <= e)
        {
            return Ok(());
        }
        let mut buf = Vec::with_capacity((end - start) as usize);
        self.transport
            .get_range(&self.url, start, end, self.len, &mut buf)
            .map_err(|e| ReleaseError::Invalid(format!("{}: {e}", self.url)))?;
        self.file
            .as_file()
            .write_all_at(&buf, start)
            .map_err(|e| ReleaseError::Invalid(format!("the mirror of {}: {e}", self.url)))?;
        self.have.lock().expect("not poisoned").push((start, end));
        Ok(())
    }

    fn read(&self, start: u64, len: u64) -> Result<Vec<u8>, ReleaseError> {
        use std::os::unix::fs::FileExt as _;
        self.fetch(start, start + len)?;
        let mut b = vec![0u8; len.min(self.len.saturating_sub(start)) as usize];
        self.file
            .as_file()
            .read_exact_at(&mut b, start)
            .map_err(|e| ReleaseError::Invalid(format!("the mirror of {}: {e}", self.url)))?;
        Ok(b)
    }
}

/// Sequential reads of a [`Mirror`] that fetch what they read, 64 KiB at a
/// time (for the zip reader).
struct MirrorReader<'m> {
    m: &'m Mirror,
    pos: u64,
}

impl std::io::Read for MirrorReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64)
            .min(self.m.len.saturating_sub(self.pos))
            .min(64 << 10);
        if n == 0 {
            return Ok(0);
        }
        let chunk = self.pos / (64 << 10) * (64 << 10);
        self.m
            .fetch(chunk, (self.pos + n).max(chunk + (64 << 10)))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let b = self
            .m
            .read(self.pos, n)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        buf[..b.len()].copy_from_slice(&b);
        self.pos += b.len() as u64;
        Ok(b.len())
    }
}

impl std::io::Seek for MirrorReader<'_> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let p = match to {
            std::io::SeekFrom::Start(p) => Some(p),
            std::io::SeekFrom::End(d) => self.m.len.checked_add_signed(d),
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = p.ok_or_else(|| std::io::Error::other("seek before the start"))?;
        Ok(self.pos)
    }
}

/// Fetches into `m` what reading the payload (a payload.bin, or the
/// payload.bin of an OTA zip and its properties) and the partitions
/// `names` (all when empty) needs.
pub fn fetch_payload(m: &Mirror, names: &[String]) -> Result<(), ReleaseError> {
    use romdelta_android::payload::{proto, PayloadHeader, HEADER_LEN};
    let bad = |e: String| ReleaseError::Invalid(format!("{}: {e}", m.url));
    let head = m.read(0, 4.min(m.len))?;
    let (start, size) = if head.starts_with(b"PK") {
        let mut zip = zip::ZipArchive::new(MirrorReader { m, pos: 0 })
            .map_err(|e| bad(format!("zip: {e}")))?;
        if let Ok(mut p) = zip.by_name("payload_properties.txt") {
            std::io::copy(
                &mut std::io::Read::take(&mut p, 1 << 20),
                &mut std::io::sink(),
            )
            .map_err(|e| bad(e.to_string()))?;
        }
        let e = zip
            .by_name("payload.bin")
            .map_err(|e| bad(format!("zip: payload.bin: {e}")))?;
        let start = e
            .data_start()
            .ok_or_else(|| bad("zip: payload.bin: no data offset".into()))?;
        (start, e.size())
    } else {
        (0, m.len)
    };
    let header = PayloadHeader::decode(&m.read(start, (HEADER_LEN as u64).min(size))?)
        .map_err(|e| bad(e.to_string()))?;
    let meta = header.metadata_len();
    let sig = u64::from(header.metadata_signature_len);
    if meta + sig > size.min(MAX_METADATA) {
        return Err(bad(format!(
            "metadata of {} bytes in a payload of {size}",
            meta + sig
        )));
    }
    let metadata = m.read(start, meta + sig)?;
    let manifest = <proto::DeltaArchiveManifest as prost::Message>::decode(
        &metadata[HEADER_LEN..meta as usize],
    )
    .map_err(|e| bad(format!("payload manifest: {e}")))?;
    let blobs = start + meta + sig;
    let end = start + size;
    let mut ranges = Vec::new();
    if let (Some(o), Some(n)) = (manifest.signatures_offset, manifest.signatures_size) {
        ranges.push((
            blobs.saturating_add(o),
            blobs.saturating_add(o).saturating_add(n),
        ));
    }
    for p in &manifest.partitions {
        let name = p.partition_name.as_deref().unwrap_or("");
        if !names.is_empty() && !names.iter().any(|n| n == name) {
            continue;
        }
        for op in &p.operations {
            if let (Some(o), Some(n)) = (op.data_offset, op.data_length) {
                if n > 0 {
                    ranges.push((
                        blobs.saturating_add(o),
                        blobs.saturating_add(o).saturating_add(n),
                    ));
                }
            }
        }
    }
    // Adjacent ranges in one request each.
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (s, e) in ranges {
        let (s, e) = (s.min(end), e.min(end));
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    for (s, e) in merged {
        m.fetch(s, e)?;
    }
    Ok(())
}
