//! LZ4DIFF_BSDIFF and LZ4DIFF_PUFFDIFF operations for payload export
//! (minor version 9): a changed lz4-compressed file of an EROFS image is
//! diffed on its decompressed bytes against the same file of the source,
//! and the payload carries that patch with the list of the file's clusters;
//! the installer decompresses the old clusters, patches, and compresses
//! the new clusters again. Each new cluster is recompressed here with the
//! installer's code; one that does not come out as in the image gets a
//! postfix patch (and the hash of what the recompression gives). A file
//! whose decompressed bytes hold deflate streams (an apk) is also diffed
//! in puffin's form, and the smaller inner patch is kept. A file's
//! operation is kept only when it is smaller than a SOURCE_BSDIFF of the
//! file's stored bytes.

use crate::blocks::BlockClass;
use crate::files::{read_mapped as read, PathIndex};
use crate::payload::FilePatch;
use rayon::prelude::*;
use romdelta_android::lz4diff::{self, proto};
use romdelta_android::payload::PayloadOpKind;
use romdelta_codecs::lz4;
use romdelta_erofs::{DataMap, Encoding, ErofsMap, FileKind, Stored};
use romdelta_format::{Extent, BLOCK_SIZE};
use romdelta_rom::Partition;

/// Most decompressed bytes of a file diffed this way.
const MAX_FILE: u64 = 64 << 20;

/// A file's clusters as LZ4DIFF lists them, its blocks, and its
/// decompressed bytes; `None` unless every cluster is lz4 or plain, in
/// whole blocks.
fn file(
    image: &Partition,
    m: &ErofsMap,
    nid: u64,
) -> Option<(Vec<proto::CompressedBlockInfo>, Vec<Extent>, Vec<u8>)> {
    let DataMap::Compressed { pclusters, .. } = &m.inodes[&nid].data else {
        return None;
    };
    if m.inodes[&nid].inode.size > MAX_FILE || pclusters.is_empty() {
        return None;
    }
    let bytes = image.bytes();
    let mut blocks = Vec::new();
    let mut extents: Vec<Extent> = Vec::new();
    let mut plain = Vec::new();
    for c in pclusters {
        let Stored::Blocks { block, blocks: n } = c.stored else {
            return None;
        };
        let stored =
            bytes.get((block * BLOCK_SIZE) as usize..((block + n) * BLOCK_SIZE) as usize)?;
        let at = plain.len();
        match c.encoding {
            Encoding::Plain => {
                if c.logical_len > stored.len() as u64 {
                    return None;
                }
                plain.extend_from_slice(&stored[..c.logical_len as usize]);
            }
            Encoding::Compressed(romdelta_erofs::Algorithm::Lz4) => {
                if c.logical_len <= stored.len() as u64 {
                    // LZ4DIFF calls a cluster compressed only when it is
                    // shorter than its bytes.
                    return None;
                }
                plain.resize(at + c.logical_len as usize, 0);
                let z = stored.iter().take(4096).take_while(|&&b| b == 0).count();
                lz4::decompress_partial(&stored[z..], &mut plain[at..])
                    .ok()
                    .filter(|&k| k == c.logical_len as usize)?;
            }
            Encoding::Compressed(_) => return None,
        }
        blocks.push(proto::CompressedBlockInfo {
            uncompressed_offset: c.logical,
            uncompressed_length: c.logical_len,
            compressed_length: n * BLOCK_SIZE,
            ..Default::default()
        });
        match extents.last_mut() {
            Some(e) if e.end_block() == block => e.num_blocks += n,
            _ => extents.push(Extent::new(block, n)),
        }
    }
    Some((blocks, extents, plain))
}

/// The lz4 compressors and levels tried, most likely first: LZ4HC's
/// default and maximum (mkfs.erofs -zlz4hc), lz4 (-zlz4), the other levels.
const COMPRESSORS: [(i32, i32); 13] = [
    (2, 9),
    (2, 12),
    (1, 0),
    (2, 10),
    (2, 11),
    (2, 8),
    (2, 7),
    (2, 6),
    (2, 5),
    (2, 4),
    (2, 3),
    (2, 2),
    (2, 1),
];
/// Compressed clusters a compressor is tried on.
const SAMPLES: usize = 6;

/// The compressor that rebuilds most of the first [`SAMPLES`] compressed
/// clusters of `info` exactly, from the file's decompressed bytes `plain`
/// and its stored bytes `raw` (one cluster alone can come out the same
/// from two compressors, when it barely compresses).
fn compressor(
    info: &proto::CompressionInfo,
    plain: &[u8],
    raw: &[u8],
) -> proto::CompressionAlgorithm {
    let mut at = 0u64;
    let mut samples = Vec::new();
    for (i, b) in info.block_info.iter().enumerate() {
        if b.compressed_length < b.uncompressed_length && samples.len() < SAMPLES {
            samples.push((i, &raw[at as usize..(at + b.compressed_length) as usize]));
        }
        at += b.compressed_length;
    }
    let mut best = (0, COMPRESSORS[0]);
    let mut c = lz4::Compressor::new();
    for (t, level) in COMPRESSORS {
        let info = proto::CompressionInfo {
            algo: Some(proto::CompressionAlgorithm { r#type: t, level }),
            ..info.clone()
        };
        let hits = samples
            .iter()
            .filter(|&&(i, want)| {
                lz4diff::recompressed_cluster(&mut c, plain, &info, i).is_ok_and(|r| r == want)
            })
            .count();
        if hits > best.0 {
            best = (hits, (t, level));
        }
        if hits == samples.len() {
            break;
        }
    }
    proto::CompressionAlgorithm {
        r#type: best.1 .0,
        level: best.1 .1,
    }
}

/// The LZ4DIFF_BSDIFF operations for `dst` against `src`: one per changed
/// lz4-compressed file present in both (by path), where smaller than a
/// bsdiff of its stored bytes.
pub fn plan(src: &Partition, dst: &Partition, classes: &[BlockClass]) -> Vec<FilePatch> {
    let (Ok(sm), Ok(tm)) = (
        romdelta_erofs::map_image(src.bytes()),
        romdelta_erofs::map_image(dst.bytes()),
    ) else {
        return Vec::new();
    };
    if sm.superblock.block_size() != BLOCK_SIZE || tm.superblock.block_size() != BLOCK_SIZE {
        return Vec::new();
    }
    let padding =
        |m: &ErofsMap| m.superblock.feature_incompat & romdelta_erofs::INCOMPAT_ZERO_PADDING != 0;
    let sources = PathIndex::new(
        (0..sm.entries.len())
            .filter(|&i| sm.inode(i).inode.kind == FileKind::Regular)
            .map(|i| (sm.path(i), sm.entries[i].nid)),
    );
    let mut seen = std::collections::HashSet::new();
    let files: Vec<(usize, u64)> = (0..tm.entries.len())
        .filter(|&i| {
            tm.inode(i).inode.kind == FileKind::Regular
                && matches!(tm.inode(i).data, DataMap::Compressed { .. })
                && seen.insert(tm.entries[i].nid)
        })
        .map(|i| (i, tm.entries[i].nid))
        .collect();
    files
        .par_iter()
        .filter_map(|&(e, nid)| {
            let snid = sources.find(&tm.path(e))?;
            let (dblocks, dext, dplain) = file(dst, &tm, nid)?;
            let changed = dext.iter().any(|x| {
                (x.start_block..x.end_block())
                    .any(|b| classes.get(b as usize) == Some(&BlockClass::Changed))
            });
            if !changed {
                return None;
            }
            let (sblocks, sext, splain) = file(src, &sm, snid)?;
            let mut inner = Vec::new();
            romdelta_format::bsdiff40::diff(&splain, &dplain, &mut inner).ok()?;
            // A decompressed file with deflate streams (an apk whose
            // stored entries lz4 compresses) may patch smaller in
            // puffin's form: LZ4DIFF_PUFFDIFF.
            let mut kind = PayloadOpKind::Lz4diffBsdiff;
            if let Some(p) = crate::payload_puffdiff::patch(&splain, &dplain) {
                if p.len() < inner.len() {
                    (inner, kind) = (p, PayloadOpKind::Lz4diffPuffdiff);
                }
            }
            let dst_raw = read(dst, &dext);
            let mut info = proto::CompressionInfo {
                algo: Some(proto::CompressionAlgorithm {
                    r#type: 2,
                    level: 9,
                }),
                block_info: dblocks,
                zero_padding_enabled: padding(&tm),
            };
            info.algo = Some(compressor(&info, &dplain, &dst_raw));
            // Postfix patches where the recompression differs.
            let rebuilt = lz4diff::recompressed_clusters(&dplain, &info).ok()?;
            let mut at = 0usize;
            for (b, r) in info.block_info.iter_mut().zip(&rebuilt) {
                let real = &dst_raw[at..at + r.len()];
                if r != real {
                    let mut fix = Vec::new();
                    romdelta_format::bsdiff40::diff(r, real, &mut fix).ok()?;
                    b.postfix_bspatch = fix;
                    b.sha256_hash = romdelta_format::sha256(r).to_vec();
                }
                at += r.len();
            }
            let header = proto::Lz4diffHeader {
                src_info: Some(proto::CompressionInfo {
                    algo: Some(proto::CompressionAlgorithm {
                        r#type: 2,
                        level: 9,
                    }),
                    block_info: sblocks,
                    zero_padding_enabled: padding(&sm),
                }),
                dst_info: Some(info),
                inner_type: i32::from(kind == PayloadOpKind::Lz4diffPuffdiff),
            };
            let data = lz4diff::encode(&header, &inner);
            let src_raw = read(src, &sext);
            FilePatch::checked(
                kind,
                data,
                (&src_raw, sext),
                (&dst_raw, dext),
                lz4diff::apply,
            )
        })
        .collect()
}
