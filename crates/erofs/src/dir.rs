//! Directories: blocks of 12-byte entries followed by their names.

use crate::flat::{Extent, Placement};
use crate::image::{le16, le64, Image};
use crate::ErofsError;

/// Bytes of one directory entry.
const DIRENT_LEN: usize = 12;
/// The longest name an entry may have.
pub const MAX_NAME_LEN: usize = 255;

/// One name in a directory block.
pub(crate) struct RawDirent<'a> {
    pub nid: u64,
    pub name: &'a [u8],
}

/// The directory blocks of a directory of `size` bytes stored in
/// `extents`, each as its bytes in the image, in order.
pub(crate) fn blocks<'a>(
    img: &Image<'a>,
    block_size: u64,
    size: u64,
    extents: &[Extent],
    nid: u64,
) -> Result<Vec<&'a [u8]>, ErofsError> {
    let mut out = Vec::new();
    let mut at = 0u64;
    let mut e = 0usize;
    while at < size {
        let len = block_size.min(size - at);
        while e < extents.len() && extents[e].logical + extents[e].len <= at {
            e += 1;
        }
        let ext = extents
            .get(e)
            .filter(|x| x.logical <= at && at + len <= x.logical + x.len)
            .ok_or_else(|| {
                ErofsError::invalid(
                    "directory data",
                    format!("nid {nid}: block at {at} is not stored in one piece"),
                )
            })?;
        if ext.placement == Placement::Hole {
            return Err(ErofsError::invalid(
                "directory data",
                format!("nid {nid}: a hole at {at}"),
            ));
        }
        out.push(img.bytes(ext.physical + (at - ext.logical), len, "directory block")?);
        at += len;
    }
    Ok(out)
}

/// The entries of one directory block.
pub(crate) fn entries(block: &[u8], nid: u64) -> Result<Vec<RawDirent<'_>>, ErofsError> {
    let bad = |why: String| ErofsError::invalid("directory block", format!("nid {nid}: {why}"));
    if block.len() < DIRENT_LEN {
        return Err(bad(format!("{} bytes hold no entry", block.len())));
    }
    let first = usize::from(le16(block, 8));
    if first < DIRENT_LEN || first % DIRENT_LEN != 0 || first > block.len() {
        return Err(bad(format!("first name at {first}")));
    }
    let count = first / DIRENT_LEN;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let d = &block[i * DIRENT_LEN..(i + 1) * DIRENT_LEN];
        let start = usize::from(le16(d, 8));
        let end = if i + 1 < count {
            usize::from(le16(block, (i + 1) * DIRENT_LEN + 8))
        } else {
            block.len()
        };
        if start < first || end < start || end > block.len() {
            return Err(bad(format!("entry {i}: name at {start}..{end}")));
        }
        let mut name = &block[start..end];
        if i + 1 == count {
            // The last name runs to the end of the block, or to a NUL.
            if let Some(z) = name.iter().position(|&c| c == 0) {
                name = &name[..z];
            }
        }
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(bad(format!("entry {i}: a name of {} bytes", name.len())));
        }
        if name.iter().any(|&c| c == 0 || c == b'/') {
            return Err(bad(format!(
                "entry {i}: name {:?} holds NUL or '/'",
                String::from_utf8_lossy(name)
            )));
        }
        out.push(RawDirent {
            nid: le64(d, 0),
            name,
        });
    }
    Ok(out)
}
