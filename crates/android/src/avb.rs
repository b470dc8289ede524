//! AVB (Android Verified Boot 2.0) footers and the hashtree descriptors in
//! their vbmeta: where a partition image's filesystem ends and where its
//! dm-verity hash tree and FEC lie (as `avbtool add_hashtree_footer`
//! writes them).
//!
//! The footer is the image's last 64 bytes: `AVBf`, version (u32 major,
//! u32 minor), the original image size, the vbmeta's offset and size (u64
//! each), 28 reserved bytes; all big-endian. The vbmeta image starts with
//! a 256-byte header (`AVB0`, ... authentication and auxiliary block
//! sizes at 12 and 20, descriptor offset and size within the auxiliary
//! block at 96 and 104), then the authentication block, then the
//! auxiliary block. A hashtree descriptor (tag 1) holds the dm-verity
//! version, image size, tree offset and size, data and hash block sizes,
//! FEC roots, offset and size, the hash algorithm's name (32 bytes), the
//! lengths of partition name, salt and root digest, flags, 60 reserved
//! bytes, then those three strings.
//!
//! Only the footer's bytes are trusted to say where things are, and every
//! offset is checked against the image: this parser reads images a
//! builder gives it, which may be damaged.

use crate::verity::HashAlgorithm;
use romdelta_format::FormatError;

/// Bytes of the footer.
pub const FOOTER_LEN: usize = 64;
/// Largest vbmeta image read (libavb's limit).
pub const MAX_VBMETA: u64 = 64 << 10;
const VBMETA_HEADER_LEN: usize = 256;
const HASHTREE_TAG: u64 = 1;
const HASHTREE_FIXED: usize = 164;

/// A partition's hashtree descriptor: its data, tree and FEC areas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashtree {
    /// The partition the descriptor names.
    pub partition: String,
    /// dm-verity format version (1).
    pub dm_verity_version: u32,
    /// Bytes of data the tree covers, from offset 0.
    pub image_size: u64,
    /// Where the tree lies, and its bytes.
    pub tree_offset: u64,
    /// Bytes of the tree.
    pub tree_size: u64,
    /// Data block size.
    pub data_block_size: u32,
    /// Hash block size.
    pub hash_block_size: u32,
    /// FEC parity bytes per codeword (0: no FEC).
    pub fec_num_roots: u32,
    /// Where the FEC lies (covering data and tree).
    pub fec_offset: u64,
    /// Bytes of FEC.
    pub fec_size: u64,
    /// The tree's hash.
    pub algorithm: HashAlgorithm,
    /// The salt.
    pub salt: Vec<u8>,
    /// The root digest.
    pub root_digest: Vec<u8>,
}

/// An image's AVB footer and the hashtree descriptor of its vbmeta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    /// The size of the image before avbtool added anything.
    pub original_image_size: u64,
    /// Where the vbmeta image is.
    pub vbmeta_offset: u64,
    /// Its bytes.
    pub vbmeta_size: u64,
    /// The hashtree descriptor, when the vbmeta holds one.
    pub hashtree: Option<Hashtree>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn bad(detail: impl Into<String>) -> FormatError {
    FormatError::invalid("AVB footer", detail)
}

/// Reads the footer of an image of `image_len` bytes: `read(offset, buf)`
/// fills `buf` from the image. `Ok(None)` when the image has no footer.
pub fn read_footer(
    image_len: u64,
    mut read: impl FnMut(u64, &mut [u8]) -> std::io::Result<()>,
) -> Result<Option<Footer>, FormatError> {
    if image_len < FOOTER_LEN as u64 {
        return Ok(None);
    }
    let mut f = [0u8; FOOTER_LEN];
    read(image_len - FOOTER_LEN as u64, &mut f).map_err(|e| bad(e.to_string()))?;
    if &f[..4] != b"AVBf" {
        return Ok(None);
    }
    if be32(&f, 4) != 1 {
        return Err(bad(format!(
            "footer version {}.{}, this reader knows 1.x",
            be32(&f, 4),
            be32(&f, 8)
        )));
    }
    let (original_image_size, vbmeta_offset, vbmeta_size) =
        (be64(&f, 12), be64(&f, 20), be64(&f, 28));
    let footer_at = image_len - FOOTER_LEN as u64;
    if vbmeta_size > MAX_VBMETA || vbmeta_size < VBMETA_HEADER_LEN as u64 {
        return Err(bad(format!(
            "vbmeta of {vbmeta_size} bytes (256 to {MAX_VBMETA})"
        )));
    }
    if vbmeta_offset
        .checked_add(vbmeta_size)
        .is_none_or(|e| e > footer_at)
        || original_image_size > footer_at
    {
        return Err(bad(format!(
            "vbmeta {vbmeta_offset}+{vbmeta_size} or original size {original_image_size} past the footer at {footer_at}"
        )));
    }
    let mut v = vec![0u8; vbmeta_size as usize];
    read(vbmeta_offset, &mut v).map_err(|e| bad(e.to_string()))?;
    let hashtree = hashtree_of(&v, image_len)?;
    Ok(Some(Footer {
        original_image_size,
        vbmeta_offset,
        vbmeta_size,
        hashtree,
    }))
}

/// The first hashtree descriptor of the vbmeta image `v`.
fn hashtree_of(v: &[u8], image_len: u64) -> Result<Option<Hashtree>, FormatError> {
    if &v[..4] != b"AVB0" {
        return Err(bad("the footer's vbmeta does not start with AVB0"));
    }
    let (auth, aux) = (be64(v, 12), be64(v, 20));
    let (d_off, d_len) = (be64(v, 96), be64(v, 104));
    let aux_start = (VBMETA_HEADER_LEN as u64).checked_add(auth);
    let d_start = aux_start.and_then(|a| a.checked_add(d_off));
    let d_end = d_start.and_then(|s| s.checked_add(d_len));
    let aux_end = aux_start.and_then(|a| a.checked_add(aux));
    let (Some(d_start), Some(d_end), Some(aux_end)) = (d_start, d_end, aux_end) else {
        return Err(bad("vbmeta block sizes overflow"));
    };
    if d_end > aux_end
        || aux_end > v.len() as u64
        || d_off.checked_add(d_len).is_none_or(|e| e > aux)
    {
        return Err(bad("vbmeta descriptors lie outside its auxiliary block"));
    }
    let mut d = &v[d_start as usize..d_end as usize];
    while d.len() >= 16 {
        let (tag, n) = (be64(d, 0), be64(d, 8));
        if n % 8 != 0 || n > (d.len() - 16) as u64 {
            return Err(bad(format!(
                "a descriptor of {n} bytes in {} remaining",
                d.len() - 16
            )));
        }
        let body = &d[16..16 + n as usize];
        if tag == HASHTREE_TAG {
            return hashtree(body, image_len).map(Some);
        }
        d = &d[16 + n as usize..];
    }
    Ok(None)
}

fn hashtree(b: &[u8], image_len: u64) -> Result<Hashtree, FormatError> {
    if b.len() < HASHTREE_FIXED {
        return Err(bad(format!(
            "hashtree descriptor of {} bytes, shorter than its {HASHTREE_FIXED} fixed bytes",
            b.len()
        )));
    }
    let name_raw = &b[56..88];
    let name = name_raw.split(|&c| c == 0).next().unwrap_or_default();
    let name = std::str::from_utf8(name).map_err(|_| bad("hash algorithm name is not UTF-8"))?;
    let algorithm = HashAlgorithm::from_name(name)?;
    let (pn, sl, rl) = (
        be32(b, 88) as usize,
        be32(b, 92) as usize,
        be32(b, 96) as usize,
    );
    let strings = &b[HASHTREE_FIXED..];
    if pn.saturating_add(sl).saturating_add(rl) > strings.len() {
        return Err(bad("hashtree descriptor strings run past the descriptor"));
    }
    let partition = std::str::from_utf8(&strings[..pn])
        .map_err(|_| bad("partition name is not UTF-8"))?
        .to_string();
    let h = Hashtree {
        partition,
        dm_verity_version: be32(b, 0),
        image_size: be64(b, 4),
        tree_offset: be64(b, 12),
        tree_size: be64(b, 20),
        data_block_size: be32(b, 28),
        hash_block_size: be32(b, 32),
        fec_num_roots: be32(b, 36),
        fec_offset: be64(b, 40),
        fec_size: be64(b, 48),
        algorithm,
        salt: strings[pn..pn + sl].to_vec(),
        root_digest: strings[pn + sl..pn + sl + rl].to_vec(),
    };
    let within = |off: u64, len: u64| off.checked_add(len).is_some_and(|e| e <= image_len);
    if !within(0, h.image_size)
        || !within(h.tree_offset, h.tree_size)
        || (h.fec_num_roots > 0 && !within(h.fec_offset, h.fec_size))
    {
        return Err(bad(
            "the hashtree descriptor's areas lie past the end of the image",
        ));
    }
    Ok(h)
}

/// Options of [`hashtree_image`].
#[derive(Debug, Clone)]
pub struct HashtreeOptions {
    /// The partition's name, recorded in the descriptor.
    pub partition: String,
    /// The whole partition's size (the image is grown to it).
    pub partition_size: u64,
    /// The tree's hash.
    pub algorithm: HashAlgorithm,
    /// The salt.
    pub salt: Vec<u8>,
    /// FEC parity bytes per codeword (0: no FEC).
    pub fec_roots: u32,
}

/// Lays `data` (the filesystem, whole 4096-byte blocks) out as
/// `avbtool add_hashtree_footer` does for an unsigned vbmeta (algorithm
/// NONE): data, hash tree, FEC over both (when asked), the vbmeta image
/// (a 256-byte header and one hashtree descriptor in its auxiliary
/// block), zeros, and the footer in the last 64 bytes.
pub fn hashtree_image(data: &[u8], o: &HashtreeOptions) -> Result<Vec<u8>, FormatError> {
    const BS: u64 = 4096;
    let bad = |d: String| FormatError::invalid("AVB hashtree image", d);
    if !(data.len() as u64).is_multiple_of(BS) {
        return Err(bad(format!(
            "{} bytes of data: not whole {BS}-byte blocks",
            data.len()
        )));
    }
    let tree = crate::verity::hash_tree(o.algorithm, &o.salt, BS as usize, data);
    let mut img = data.to_vec();
    let tree_offset = img.len() as u64;
    img.extend_from_slice(&tree.tree);
    let (fec_offset, fec_size) = if o.fec_roots > 0 {
        let fec = crate::fec::encode(o.fec_roots, BS as usize, &img)?;
        let at = img.len() as u64;
        img.extend_from_slice(&fec);
        (at, fec.len() as u64)
    } else {
        (0, 0)
    };
    // The descriptor.
    let mut d = vec![0u8; HASHTREE_FIXED];
    d[0..4].copy_from_slice(&1u32.to_be_bytes());
    d[4..12].copy_from_slice(&(data.len() as u64).to_be_bytes());
    d[12..20].copy_from_slice(&tree_offset.to_be_bytes());
    d[20..28].copy_from_slice(&(tree.tree.len() as u64).to_be_bytes());
    d[28..32].copy_from_slice(&(BS as u32).to_be_bytes());
    d[32..36].copy_from_slice(&(BS as u32).to_be_bytes());
    d[36..40].copy_from_slice(&o.fec_roots.to_be_bytes());
    d[40..48].copy_from_slice(&fec_offset.to_be_bytes());
    d[48..56].copy_from_slice(&fec_size.to_be_bytes());
    d[56..56 + o.algorithm.name().len()].copy_from_slice(o.algorithm.name().as_bytes());
    for (at, s) in [
        (88, o.partition.len()),
        (92, o.salt.len()),
        (96, tree.root.len()),
    ] {
        d[at..at + 4].copy_from_slice(&(s as u32).to_be_bytes());
    }
    d.extend_from_slice(o.partition.as_bytes());
    d.extend_from_slice(&o.salt);
    d.extend_from_slice(&tree.root);
    d.resize(d.len().div_ceil(8) * 8, 0);
    let mut desc = HASHTREE_TAG.to_be_bytes().to_vec();
    desc.extend_from_slice(&(d.len() as u64).to_be_bytes());
    desc.extend(d);
    let aux_len = desc.len().div_ceil(64) * 64;
    // The vbmeta header: no authentication block, the auxiliary block
    // holding only the descriptor.
    let mut v = vec![0u8; VBMETA_HEADER_LEN];
    v[..4].copy_from_slice(b"AVB0");
    v[4..8].copy_from_slice(&1u32.to_be_bytes());
    v[20..28].copy_from_slice(&(aux_len as u64).to_be_bytes());
    for at in [64, 80] {
        // public key and its metadata: empty, after the descriptors
        v[at..at + 8].copy_from_slice(&(desc.len() as u64).to_be_bytes());
    }
    v[104..112].copy_from_slice(&(desc.len() as u64).to_be_bytes());
    let release = b"avbtool 1.3.0";
    v[128..128 + release.len()].copy_from_slice(release);
    v.extend(desc);
    v.resize(VBMETA_HEADER_LEN + aux_len, 0);
    let vbmeta_offset = img.len() as u64;
    img.extend_from_slice(&v);
    let need = img.len() as u64 + FOOTER_LEN as u64;
    if o.partition_size < need || !o.partition_size.is_multiple_of(BS) {
        return Err(bad(format!(
            "a partition of {} bytes; data, tree, FEC, vbmeta and footer take {need} (and it must be whole blocks)",
            o.partition_size
        )));
    }
    img.resize(o.partition_size as usize - FOOTER_LEN, 0);
    let mut f = [0u8; FOOTER_LEN];
    f[..4].copy_from_slice(b"AVBf");
    f[4..8].copy_from_slice(&1u32.to_be_bytes());
    f[12..20].copy_from_slice(&(data.len() as u64).to_be_bytes());
    f[20..28].copy_from_slice(&vbmeta_offset.to_be_bytes());
    f[28..36].copy_from_slice(&(v.len() as u64).to_be_bytes());
    img.extend_from_slice(&f);
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn footer_image(descriptor: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; 8192];
        let mut v = vec![0u8; 256];
        v[..4].copy_from_slice(b"AVB0");
        v[4..8].copy_from_slice(&1u32.to_be_bytes());
        v[20..28].copy_from_slice(&(descriptor.len() as u64).to_be_bytes());
        v[104..112].copy_from_slice(&(descriptor.len() as u64).to_be_bytes());
        v.extend_from_slice(descriptor);
        let at = 4096;
        img[at..at + v.len()].copy_from_slice(&v);
        let mut f = [0u8; 64];
        f[..4].copy_from_slice(b"AVBf");
        f[4..8].copy_from_slice(&1u32.to_be_bytes());
        f[12..20].copy_from_slice(&4096u64.to_be_bytes());
        f[20..28].copy_from_slice(&(at as u64).to_be_bytes());
        f[28..36].copy_from_slice(&(v.len() as u64).to_be_bytes());
        let n = img.len();
        img[n - 64..].copy_from_slice(&f);
        img
    }

    fn descriptor() -> Vec<u8> {
        let mut b = vec![0u8; HASHTREE_FIXED];
        b[0..4].copy_from_slice(&1u32.to_be_bytes());
        b[4..12].copy_from_slice(&4096u64.to_be_bytes());
        b[56..62].copy_from_slice(b"sha256");
        b[88..92].copy_from_slice(&3u32.to_be_bytes());
        b[92..96].copy_from_slice(&2u32.to_be_bytes());
        b[96..100].copy_from_slice(&1u32.to_be_bytes());
        b.extend_from_slice(b"sysabr");
        b.resize(b.len().div_ceil(8) * 8, 0);
        let mut d = HASHTREE_TAG.to_be_bytes().to_vec();
        d.extend_from_slice(&(b.len() as u64).to_be_bytes());
        d.extend(b);
        d
    }

    fn read(img: &[u8]) -> Result<Option<Footer>, FormatError> {
        read_footer(img.len() as u64, |off, buf| {
            buf.copy_from_slice(&img[off as usize..off as usize + buf.len()]);
            Ok(())
        })
    }

    #[test]
    fn reads_a_descriptor() {
        let f = read(&footer_image(&descriptor())).unwrap().unwrap();
        let h = f.hashtree.unwrap();
        assert_eq!(
            (h.partition.as_str(), &h.salt[..], &h.root_digest[..]),
            ("sys", &b"ab"[..], &b"r"[..])
        );
        assert_eq!(h.algorithm, HashAlgorithm::Sha256);
        assert!(read(&[0u8; 100]).unwrap().is_none());
    }

    #[test]
    fn every_damage_is_an_error_not_a_panic() {
        let img = footer_image(&descriptor());
        let n = img.len();
        for at in (4096..4096 + 256 + 200).chain(n - 64..n) {
            for bit in [0x01u8, 0x80] {
                let mut d = img.clone();
                d[at] ^= bit;
                let _ = read(&d);
            }
        }
        for cut in 0..descriptor().len() {
            let _ = read(&footer_image(&descriptor()[..cut]));
        }
    }
}
