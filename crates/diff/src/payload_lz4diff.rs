//! LZ4DIFF_BSDIFF operations for payload export (minor version 9): a
//! changed lz4-compressed file of an EROFS image is diffed on its
//! decompressed bytes against the same file of the source, and the
//! payload carries that bsdiff patch with the list of the file's clusters;
//! the installer decompresses the old clusters, patches, and compresses
//! the new clusters again. Each new cluster is recompressed here with the
//! installer's code; one that does not come out as in the image gets a
//! postfix patch (and the hash of what the recompression gives). A file's
//! operation is kept only when it is smaller than a SOURCE_BSDIFF of the
//! file's stored bytes.

use crate::blocks::BlockClass;
use crate::files::PathIndex;
use rayon::prelude::*;
use romdelta_android::lz4diff::{self, proto};
use romdelta_codecs::lz4;
use romdelta_erofs::{DataMap, Encoding, ErofsMap, FileKind, Stored};
use romdelta_format::{Digest, Extent, BLOCK_SIZE};
use romdelta_rom::Partition;

/// Most decompressed bytes of a file diffed this way.
const MAX_FILE: u64 = 64 << 20;

/// One planned LZ4DIFF_BSDIFF operation.
pub struct Planned {
    /// The source file's blocks, in logical order.
    pub src_extents: Vec<Extent>,
    /// Their SHA-256.
    pub src_sha256: Digest,
    /// The target file's blocks, in logical order.
    pub dst_extents: Vec<Extent>,
    /// The LZ4DIFF patch.
    pub data: Vec<u8>,
}

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

fn read(p: &Partition, extents: &[Extent]) -> Vec<u8> {
    let mut v = Vec::new();
    p.read_extents(extents, &mut v)
        .expect("reads of a mapped image do not fail");
    v
}

/// The LZ4DIFF_BSDIFF operations for `dst` against `src`: one per changed
/// lz4-compressed file present in both (by path), where smaller than a
/// bsdiff of its stored bytes.
pub fn plan(src: &Partition, dst: &Partition, classes: &[BlockClass]) -> Vec<Planned> {
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
            let dst_raw = read(dst, &dext);
            // The compressor that rebuilds the first compressed cluster.
            let first = dblocks
                .iter()
                .position(|b| b.compressed_length < b.uncompressed_length);
            let mut info = proto::CompressionInfo {
                algo: Some(proto::CompressionAlgorithm {
                    r#type: 2,
                    level: 9,
                }),
                block_info: dblocks,
                zero_padding_enabled: padding(&tm),
            };
            if let Some(f) = first {
                let at: u64 = info.block_info[..f]
                    .iter()
                    .map(|b| b.compressed_length)
                    .sum();
                let want =
                    &dst_raw[at as usize..(at + info.block_info[f].compressed_length) as usize];
                for (t, level) in [
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
                ] {
                    info.algo = Some(proto::CompressionAlgorithm { r#type: t, level });
                    let one = proto::CompressionInfo {
                        block_info: info.block_info[..=f].to_vec(),
                        ..info.clone()
                    };
                    let ok = lz4diff::recompressed_clusters(&dplain[..], &one)
                        .ok()
                        .is_some_and(|c| c[f] == want);
                    if ok {
                        break;
                    }
                }
            }
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
                inner_type: 0,
            };
            let data = lz4diff::encode(&header, &inner);
            let src_raw = read(src, &sext);
            // Kept only when smaller than a bsdiff of the stored bytes.
            let mut plain_patch = Vec::new();
            romdelta_format::bsdiff40::diff(&src_raw, &dst_raw, &mut plain_patch).ok()?;
            if data.len() >= plain_patch.len() {
                return None;
            }
            // What the installer will do gives the image's bytes.
            let mut check = vec![0u8; dst_raw.len()];
            lz4diff::apply(&data, &src_raw, &mut check)
                .ok()
                .filter(|_| check == dst_raw)?;
            Some(Planned {
                src_sha256: romdelta_format::sha256(&src_raw),
                src_extents: sext,
                dst_extents: dext,
                data,
            })
        })
        .collect()
}
