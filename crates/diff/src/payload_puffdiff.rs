//! PUFFDIFF operations for payload export (minor version 5 and later): a
//! changed file that holds deflate streams (a zip archive such as an apk
//! or jar, a gzip file, a zlib stream), found through the image's file
//! map, is diffed in puffin's form against the same file of the source:
//! both files' streams are puffed (each deflate block rewritten in a byte
//! form that keeps every choice of its encoder), bsdiff runs on the puffed
//! streams, and the installer huffs the result back into the exact
//! deflate bits. A file's operation is kept only where smaller than a
//! SOURCE_BSDIFF of its stored bytes, and after applying it here gives the
//! file's bytes.

use crate::blocks::BlockClass;
use crate::files::{read_mapped as read, PathIndex};
use crate::payload::FilePatch;
use rayon::prelude::*;
use romdelta_android::payload::PayloadOpKind;
use romdelta_android::puffin::{self, BitExtent};
use romdelta_format::{Extent, BLOCK_SIZE};
use romdelta_rom::Partition;

/// Most stored bytes of a file diffed this way.
const MAX_FILE: u64 = 32 << 20;
/// Most bytes of a file's puffed stream (bsdiff's suffix array holds it).
const MAX_PUFFED: u64 = 64 << 20;
/// Expanded bytes the stream parser may decompress to find a container's
/// streams.
const PARSE_BUDGET: usize = 256 << 20;

/// The exact bit extents of the deflate streams of `bytes` (a file's
/// blocks), each ending where its last block does.
fn deflates(bytes: &[u8]) -> Option<Vec<BitExtent>> {
    let c = romdelta_streams::at(bytes, PARSE_BUDGET)?;
    let mut out = Vec::with_capacity(c.streams.len());
    let mut scratch = Vec::new();
    for s in &c.streams {
        let window = bytes.get(s.offset..s.offset + s.len)?;
        scratch.clear();
        let end = puffin::puff_bits(window, 0, &mut scratch, puffin::MAX_PUFF).ok()?;
        out.push(BitExtent {
            offset: s.offset as u64 * 8,
            length: end,
        });
    }
    (!out.is_empty()).then_some(out)
}

/// A puffin patch from `src` to `dst` (a file's bytes each), `None` when
/// either holds no deflate stream or puffs to more than bsdiff may hold.
/// The LZ4DIFF_PUFFDIFF generator uses it on decompressed files.
pub(crate) fn patch(src: &[u8], dst: &[u8]) -> Option<Vec<u8>> {
    if !romdelta_streams::has_signature(src) || !romdelta_streams::has_signature(dst) {
        return None;
    }
    let (sd, dd) = (deflates(src)?, deflates(dst)?);
    let ((si, sview), (di, dview)) = (
        puffin::layout(src, &sd).ok()?,
        puffin::layout(dst, &dd).ok()?,
    );
    if si.puff_length > MAX_PUFFED || di.puff_length > MAX_PUFFED {
        return None;
    }
    let mut inner = Vec::new();
    romdelta_format::bsdiff40::diff(&sview, &dview, &mut inner).ok()?;
    Some(puffin::encode(&si, &di, &inner))
}

/// The PUFFDIFF operations for `dst` against `src`: one per changed file
/// with deflate streams that the source has at the same path (none of
/// whose blocks `claimed` holds), where smaller than a bsdiff of its
/// stored bytes.
pub fn plan(
    src: &Partition,
    dst: &Partition,
    classes: &[BlockClass],
    claimed: &[Extent],
) -> Vec<FilePatch> {
    let (Some(sfiles), Some(tfiles)) = (
        crate::files::image_files(src),
        crate::files::image_files(dst),
    ) else {
        return Vec::new();
    };
    let sources = PathIndex::new(
        sfiles
            .iter()
            .enumerate()
            .map(|(i, (path, _))| (path.as_bytes().to_vec(), i)),
    );
    let overlaps = |x: &Extent| {
        claimed
            .iter()
            .any(|c| c.start_block < x.end_block() && x.start_block < c.end_block())
    };
    let img = dst.bytes();
    tfiles
        .par_iter()
        .filter_map(|(path, dext)| {
            let first = (dext.first()?.start_block * BLOCK_SIZE) as usize;
            if !romdelta_streams::has_signature(img.get(first..)?) {
                return None;
            }
            let blocks = romdelta_format::blocks_in(dext);
            let changed = dext.iter().any(|x| {
                (x.start_block..x.end_block())
                    .any(|b| classes.get(b as usize) == Some(&BlockClass::Changed))
            });
            if !changed || blocks * BLOCK_SIZE > MAX_FILE || dext.iter().any(overlaps) {
                return None;
            }
            let (_, sext) = &sfiles[sources.find(path.as_bytes())?];
            if romdelta_format::blocks_in(sext) * BLOCK_SIZE > MAX_FILE {
                return None;
            }
            let (sraw, draw) = (read(src, sext), read(dst, dext));
            let data = patch(&sraw, &draw)?;
            FilePatch::checked(
                PayloadOpKind::Puffdiff,
                data,
                (&sraw, sext.clone()),
                (&draw, dext.clone()),
                puffin::apply,
            )
        })
        .collect()
}
