//! LZ4DIFF, the patch of the LZ4DIFF_BSDIFF and LZ4DIFF_PUFFDIFF
//! operations: a diff of LZ4-compressed EROFS clusters made on their
//! decompressed bytes, then recompressed into the clusters bit for bit.
//!
//! Layout: `LZ4DIFF` (7 bytes), the version (u32 big-endian at byte 7,
//! 1), the header's length (u32 big-endian at byte 11), one unused byte,
//! the `Lz4diffHeader` protobuf from byte 16, then the inner patch (bsdiff,
//! or puffin's, as the header says). The header lists the source and
//! destination clusters: each one's offset and length in the decompressed
//! stream and its length on disk (compressed iff shorter than its
//! decompressed length), the compressor (LZ4 or LZ4HC and its level),
//! whether clusters are zero-padded at the front (EROFS's `lz4_0padding`),
//! and per destination cluster an optional SHA-256 of the recompressed
//! cluster and a bsdiff patch that turns it into the real one (when the
//! generator's LZ4 differed from the one the image was made with).
//!
//! Applying: each source cluster is decompressed (LZ4 block format, as
//! many bytes as its decompressed length), the inner patch is applied to
//! the concatenation, and each destination cluster is recompressed from
//! its offset with `LZ4_compress_HC_destSize` (or `LZ4_compress_destSize`)
//! into its on-disk length, offered every remaining byte, as mkfs.erofs
//! filled it; stored clusters are copied; the decompressed bytes past the
//! last cluster follow verbatim.

use prost::Message as _;
use romdelta_codecs::lz4;
use romdelta_format::FormatError;

/// Most decompressed bytes of either side.
pub const MAX_DECOMPRESSED: u64 = 512 << 20;
const HEADER_LEN: usize = 16;

fn bad(detail: impl Into<String>) -> FormatError {
    FormatError::invalid("lz4diff", detail)
}

/// The protobuf messages of an LZ4DIFF header.
pub mod proto {
    /// `CompressionAlgorithm`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CompressionAlgorithm {
        /// 0 uncompressed, 1 LZ4, 2 LZ4HC.
        #[prost(int32, tag = "1")]
        pub r#type: i32,
        /// The LZ4HC level.
        #[prost(int32, tag = "2")]
        pub level: i32,
    }
    /// `CompressedBlockInfo`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CompressedBlockInfo {
        /// Offset in the decompressed stream.
        #[prost(uint64, tag = "1")]
        pub uncompressed_offset: u64,
        /// Decompressed bytes.
        #[prost(uint64, tag = "2")]
        pub uncompressed_length: u64,
        /// Bytes on disk.
        #[prost(uint64, tag = "3")]
        pub compressed_length: u64,
        /// SHA-256 of the recompressed cluster (destination only).
        #[prost(bytes = "vec", tag = "4")]
        pub sha256_hash: Vec<u8>,
        /// A bsdiff patch from the recompressed cluster to the real one.
        #[prost(bytes = "vec", tag = "5")]
        pub postfix_bspatch: Vec<u8>,
    }
    /// `CompressionInfo`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CompressionInfo {
        /// The compressor.
        #[prost(message, optional, tag = "1")]
        pub algo: Option<CompressionAlgorithm>,
        /// The clusters, in order.
        #[prost(message, repeated, tag = "2")]
        pub block_info: Vec<CompressedBlockInfo>,
        /// Compressed clusters are zero-padded at the front.
        #[prost(bool, tag = "3")]
        pub zero_padding_enabled: bool,
    }
    /// `Lz4diffHeader`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Lz4diffHeader {
        /// The source's clusters.
        #[prost(message, optional, tag = "1")]
        pub src_info: Option<CompressionInfo>,
        /// The destination's clusters.
        #[prost(message, optional, tag = "2")]
        pub dst_info: Option<CompressionInfo>,
        /// 0: bsdiff, 1: puffdiff.
        #[prost(int32, tag = "3")]
        pub inner_type: i32,
    }
}

/// Checks that `blocks` follow each other in the decompressed stream and
/// returns their decompressed and on-disk totals.
fn totals(blocks: &[proto::CompressedBlockInfo], what: &str) -> Result<(u64, u64), FormatError> {
    let (mut u, mut c) = (0u64, 0u64);
    for (i, b) in blocks.iter().enumerate() {
        if b.uncompressed_offset != u {
            return Err(bad(format!(
                "{what} cluster {i} starts at {}, after {u} decompressed bytes",
                b.uncompressed_offset
            )));
        }
        u = u
            .checked_add(b.uncompressed_length)
            .ok_or_else(|| bad("cluster lengths overflow"))?;
        c = c
            .checked_add(b.compressed_length)
            .ok_or_else(|| bad("cluster lengths overflow"))?;
        if u > MAX_DECOMPRESSED || c > MAX_DECOMPRESSED {
            return Err(bad(format!(
                "{what} clusters of more than {MAX_DECOMPRESSED} bytes"
            )));
        }
    }
    Ok((u, c))
}

fn compressed(b: &proto::CompressedBlockInfo) -> bool {
    b.compressed_length < b.uncompressed_length
}

/// A parsed LZ4DIFF patch.
#[derive(Debug, Clone)]
pub struct Patch<'a> {
    /// The header.
    pub header: proto::Lz4diffHeader,
    /// The inner patch.
    pub inner: &'a [u8],
}

impl<'a> Patch<'a> {
    /// Parses a patch and checks its clusters.
    pub fn parse(data: &'a [u8]) -> Result<Self, FormatError> {
        if data.len() < HEADER_LEN {
            return Err(FormatError::Truncated {
                what: "lz4diff patch",
                need: (HEADER_LEN - data.len()) as u64,
                have: data.len() as u64,
            });
        }
        if &data[..7] != b"LZ4DIFF" {
            return Err(bad("not an lz4diff patch (no LZ4DIFF)"));
        }
        let version = u32::from_be_bytes(data[7..11].try_into().expect("4 bytes"));
        if version != 1 {
            return Err(bad(format!("version {version}; this reader knows 1")));
        }
        let n = u32::from_be_bytes(data[11..15].try_into().expect("4 bytes")) as u64;
        let have = (data.len() - HEADER_LEN) as u64;
        if n > have {
            return Err(FormatError::Truncated {
                what: "lz4diff header",
                need: n - have,
                have,
            });
        }
        let header = proto::Lz4diffHeader::decode(&data[HEADER_LEN..HEADER_LEN + n as usize])
            .map_err(|e| bad(format!("header: {e}")))?;
        let (src, dst) = (
            header
                .src_info
                .as_ref()
                .ok_or_else(|| bad("no source clusters"))?,
            header
                .dst_info
                .as_ref()
                .ok_or_else(|| bad("no destination clusters"))?,
        );
        if src.block_info.is_empty() {
            return Err(bad("no source clusters"));
        }
        totals(&src.block_info, "source")?;
        totals(&dst.block_info, "destination")?;
        if dst.block_info.iter().any(compressed) {
            let t = dst.algo.as_ref().map_or(0, |a| a.r#type);
            if !(1..=2).contains(&t) {
                return Err(bad(format!(
                    "destination compressor type {t} (LZ4 is 1, LZ4HC 2)"
                )));
            }
        }
        if header.inner_type > 1 || header.inner_type < 0 {
            return Err(bad(format!("inner patch type {}", header.inner_type)));
        }
        Ok(Patch {
            header,
            inner: &data[HEADER_LEN + n as usize..],
        })
    }
}

/// Decompresses the source clusters of `info` from `src`.
fn decompress(src: &[u8], info: &proto::CompressionInfo) -> Result<Vec<u8>, FormatError> {
    let (u, c) = totals(&info.block_info, "source")?;
    if c != src.len() as u64 {
        return Err(bad(format!(
            "source clusters of {c} bytes on disk, the operation reads {}",
            src.len()
        )));
    }
    let mut out = vec![0u8; u as usize];
    let mut at = 0usize;
    for (i, b) in info.block_info.iter().enumerate() {
        let cluster = &src[at..at + b.compressed_length as usize];
        let dst = &mut out[b.uncompressed_offset as usize
            ..(b.uncompressed_offset + b.uncompressed_length) as usize];
        if !compressed(b) {
            dst.copy_from_slice(&cluster[..dst.len()]);
        } else {
            let margin = if info.zero_padding_enabled {
                cluster.iter().take(4096).take_while(|&&x| x == 0).count()
            } else {
                0
            };
            let n = lz4::decompress_partial(&cluster[margin..], dst)
                .map_err(|e| bad(format!("source cluster {i}: {e}")))?;
            if n != dst.len() {
                return Err(bad(format!(
                    "source cluster {i} decodes to {n} bytes, not {}",
                    dst.len()
                )));
            }
        }
        at += b.compressed_length as usize;
    }
    Ok(out)
}

/// The clusters of `info` recompressed from the decompressed stream
/// `plain`, before any postfix patch (what a generator compares with the
/// image to decide where one is needed).
pub fn recompressed_clusters(
    plain: &[u8],
    info: &proto::CompressionInfo,
) -> Result<Vec<Vec<u8>>, FormatError> {
    let mut bare = info.clone();
    for b in &mut bare.block_info {
        b.postfix_bspatch.clear();
    }
    let mut out = Vec::new();
    recompress(plain, &bare, &mut out)?;
    let mut at = 0usize;
    Ok(info
        .block_info
        .iter()
        .map(|b| {
            // Every cluster is emitted as exactly its on-disk length.
            let c = out[at..at + b.compressed_length as usize].to_vec();
            at += c.len();
            c
        })
        .collect())
}

/// Writes an LZ4DIFF patch: `header`, then `inner`.
pub fn encode(header: &proto::Lz4diffHeader, inner: &[u8]) -> Vec<u8> {
    let pb = header.encode_to_vec();
    let mut out = b"LZ4DIFF".to_vec();
    out.extend(1u32.to_be_bytes());
    out.extend((pb.len() as u32).to_be_bytes());
    out.push(0);
    out.extend(pb);
    out.extend_from_slice(inner);
    out
}

/// The lz4 mode of `info`'s algorithm: LZ4HC maps levels outside 1-12 to
/// its default (9) or its maximum.
fn mode(info: &proto::CompressionInfo) -> lz4::Mode {
    let algo = info.algo.clone().unwrap_or_default();
    if algo.r#type == 1 {
        lz4::Mode::Fast
    } else {
        lz4::Mode::Hc(match algo.level {
            l if l < 1 => 9,
            l if l > 12 => 12,
            l => l as u8,
        })
    }
}

/// Cluster `i` of `info` rebuilt from `plain`, before its postfix patch:
/// a plain cluster copied (zero-filled to its length), a compressed one
/// compressed into its length from every byte of `plain[offset..u]`.
fn bare_cluster(
    c: &mut lz4::Compressor,
    mode: lz4::Mode,
    plain: &[u8],
    u: u64,
    info: &proto::CompressionInfo,
    i: usize,
) -> Result<Vec<u8>, FormatError> {
    let b = &info.block_info[i];
    let off = b.uncompressed_offset as usize;
    if !compressed(b) {
        let mut v = plain[off..off + b.uncompressed_length as usize].to_vec();
        v.resize(v.len().max(b.compressed_length as usize), 0);
        return Ok(v);
    }
    let mut buf = vec![0u8; b.compressed_length as usize];
    let (n, _) = c.compress_dest_size(mode, &plain[off..u as usize], &mut buf);
    if n == 0 {
        return Err(bad(format!(
            "destination cluster {i}: nothing fits in {} bytes",
            buf.len()
        )));
    }
    if n < buf.len() && info.zero_padding_enabled {
        let k = buf.len() - n;
        buf.copy_within(..n, k);
        buf[..k].fill(0);
    }
    Ok(buf)
}

/// Cluster `i` of `info` recompressed from the decompressed stream `plain`
/// as the installer recompresses it, before any postfix patch: a
/// generator compares a few with the image to find the compressor, with
/// one reusable compressor state `c`.
pub fn recompressed_cluster(
    c: &mut lz4::Compressor,
    plain: &[u8],
    info: &proto::CompressionInfo,
    i: usize,
) -> Result<Vec<u8>, FormatError> {
    let (u, _) = totals(&info.block_info, "destination")?;
    if u > plain.len() as u64 || i >= info.block_info.len() {
        return Err(bad(format!(
            "destination cluster {i} of {}, {u} decompressed bytes of {}",
            info.block_info.len(),
            plain.len()
        )));
    }
    bare_cluster(c, mode(info), plain, u, info, i)
}

/// Recompresses the decompressed destination `plain` into its clusters,
/// appended to `out`.
fn recompress(
    plain: &[u8],
    info: &proto::CompressionInfo,
    out: &mut Vec<u8>,
) -> Result<(), FormatError> {
    let (u, _) = totals(&info.block_info, "destination")?;
    if u > plain.len() as u64 {
        return Err(bad(format!(
            "destination clusters of {u} decompressed bytes, the inner patch gives {}",
            plain.len()
        )));
    }
    let mode = mode(info);
    let mut c = lz4::Compressor::new();
    for (i, b) in info.block_info.iter().enumerate() {
        let mut cluster = bare_cluster(&mut c, mode, plain, u, info, i)?;
        if !b.postfix_bspatch.is_empty() {
            if !b.sha256_hash.is_empty()
                && romdelta_format::sha256(&cluster)[..] != b.sha256_hash[..]
            {
                return Err(bad(format!(
                    "destination cluster {i}: the recompressed cluster is not the generator's (another LZ4 build?)"
                )));
            }
            let mut fixed = vec![0u8; b.compressed_length as usize];
            crate::payload::ops::decode_bsdiff(&b.postfix_bspatch, &cluster, &mut fixed)
                .map_err(|e| bad(format!("destination cluster {i}: postfix patch: {e}")))?;
            cluster = fixed;
        }
        out.extend_from_slice(&cluster);
    }
    out.extend_from_slice(&plain[u as usize..]);
    Ok(())
}

/// Applies an LZ4DIFF patch to `src` (the source extents' bytes), writing
/// `out` (the destination extents): the clusters and the trailing bytes
/// must fit in it; the rest stays zero.
pub fn apply(data: &[u8], src: &[u8], out: &mut [u8]) -> Result<(), FormatError> {
    let p = Patch::parse(data)?;
    let (si, di) = (
        p.header.src_info.as_ref().expect("checked"),
        p.header.dst_info.as_ref().expect("checked"),
    );
    let plain_src = decompress(src, si)?;
    let plain_dst = if p.header.inner_type == 0 {
        let n = crate::payload::ops::bsdiff_new_size(p.inner)?;
        if n > MAX_DECOMPRESSED {
            return Err(bad(format!("an inner patch writing {n} bytes")));
        }
        let mut v = vec![0u8; n as usize];
        crate::payload::ops::decode_bsdiff(p.inner, &plain_src, &mut v)?;
        v
    } else {
        let pp = crate::puffin::Patch::parse(p.inner)?;
        let n = pp.dst_len();
        if n > MAX_DECOMPRESSED {
            return Err(bad(format!("an inner patch writing {n} bytes")));
        }
        let mut v = vec![0u8; n as usize];
        crate::puffin::apply(p.inner, &plain_src, &mut v)?;
        v
    };
    let mut written = Vec::with_capacity(out.len());
    recompress(&plain_dst, di, &mut written)?;
    if written.len() > out.len() {
        return Err(bad(format!(
            "the patch writes {} bytes, the operation's destination holds {}",
            written.len(),
            out.len()
        )));
    }
    out[..written.len()].copy_from_slice(&written);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/testdata/lz4diff/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn vectors_apply_to_their_destinations() {
        for v in [
            "v1_bsdiff_zeropad_exact",
            "v2_bsdiff_zeropad_postfix",
            "v3_bsdiff_trailing_zeros",
        ] {
            let (src, patch, dst) = (
                vector(&format!("{v}.src")),
                vector(&format!("{v}.patch")),
                vector(&format!("{v}.dst")),
            );
            let mut out = vec![0u8; dst.len()];
            apply(&patch, &src, &mut out).unwrap_or_else(|e| panic!("{v}: {e}"));
            assert!(out == dst, "{v}");
            for cut in (0..patch.len()).step_by(7) {
                let mut o = vec![0u8; dst.len()];
                assert!(
                    apply(&patch[..cut], &src, &mut o).is_err(),
                    "{v}: cut at {cut}"
                );
            }
            for at in (0..patch.len()).step_by(23) {
                let mut p = patch.clone();
                p[at] ^= 0x08;
                let mut o = vec![0u8; dst.len()];
                let _ = apply(&p, &src, &mut o);
            }
        }
    }

    /// An inner puffin patch (LZ4DIFF_PUFFDIFF): puffin's own 1-to-2
    /// patch between its sample streams, here held in stored clusters.
    #[test]
    fn inner_puffin_patches_apply() {
        let hex = crate::puffin::tests::vector;
        let (s1, s2, patch) = (
            hex("sample1_deflates"),
            hex("sample2_deflates"),
            hex("patch_1_to_2"),
        );
        let cluster = |len: usize| proto::CompressedBlockInfo {
            uncompressed_length: len as u64,
            compressed_length: 4096,
            ..Default::default()
        };
        let info = |len: usize| proto::CompressionInfo {
            algo: Some(proto::CompressionAlgorithm {
                r#type: 2,
                level: 9,
            }),
            block_info: vec![cluster(len)],
            zero_padding_enabled: true,
        };
        let header = proto::Lz4diffHeader {
            src_info: Some(info(s1.len())),
            dst_info: Some(info(s2.len())),
            inner_type: 1,
        };
        let data = encode(&header, &patch);
        let mut src = s1.clone();
        src.resize(4096, 0);
        let mut out = vec![0u8; 4096];
        apply(&data, &src, &mut out).unwrap();
        let mut want = s2.clone();
        want.resize(4096, 0);
        assert_eq!(out, want);
    }

    #[test]
    fn a_recompression_that_is_not_the_generators_is_refused() {
        // v2's postfix clusters carry the hash of the generator's
        // recompression: another hash is another LZ4, refused before the
        // postfix patch is trusted.
        let (src, patch) = (
            vector("v2_bsdiff_zeropad_postfix.src"),
            vector("v2_bsdiff_zeropad_postfix.patch"),
        );
        let p = Patch::parse(&patch).unwrap();
        let mut h = p.header.clone();
        let b = h
            .dst_info
            .as_mut()
            .unwrap()
            .block_info
            .iter_mut()
            .find(|b| !b.postfix_bspatch.is_empty())
            .unwrap();
        b.sha256_hash[0] ^= 1;
        let pb = h.encode_to_vec();
        let mut bad = b"LZ4DIFF".to_vec();
        bad.extend(1u32.to_be_bytes());
        bad.extend((pb.len() as u32).to_be_bytes());
        bad.push(0);
        bad.extend(pb);
        bad.extend_from_slice(p.inner);
        let mut o = vec![0u8; 20480];
        let e = apply(&bad, &src, &mut o).unwrap_err().to_string();
        assert!(e.contains("not the generator's"), "{e}");
    }
}
