//! dm-verity hash trees (format 1, as Android's avbtool, libverity and
//! `veritysetup --format=1` build them).
//!
//! Every data block is hashed with the salt before it: `H(salt || block)`.
//! The digests of a level are stored in slots of the digest size rounded
//! up to a power of two (SHA-1's 20 bytes take 32), packed into blocks,
//! the last block zero-padded; the next level hashes those blocks, until
//! a level fits one block. The tree is stored top level first; the root
//! digest is the hash of the top level's block.
//!
//! [`TreeBuilder`] takes data blocks in order, in batches it hashes in
//! parallel, keeps only the digests of the first level and builds the rest
//! when the data ends: its memory is the first level, 1/128 of the data
//! for SHA-256.

use rayon::prelude::*;
use romdelta_format::FormatError;

/// A hash function a verity tree may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgorithm {
    /// SHA-1 (20 bytes, 32-byte slots).
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-384 (48 bytes, 64-byte slots).
    Sha384,
    /// SHA-512.
    Sha512,
    /// BLAKE2b with a 32-byte digest.
    Blake2b256,
}

impl HashAlgorithm {
    /// Every algorithm, for listings.
    pub const ALL: [HashAlgorithm; 5] = [
        HashAlgorithm::Sha1,
        HashAlgorithm::Sha256,
        HashAlgorithm::Sha384,
        HashAlgorithm::Sha512,
        HashAlgorithm::Blake2b256,
    ];

    /// The algorithm a manifest or AVB descriptor names (`sha256`, ...).
    pub fn from_name(name: &str) -> Result<Self, FormatError> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| {
                FormatError::invalid(
                    "verity hash algorithm",
                    format!(
                        "{name:?} is not one of {}",
                        Self::ALL.map(|a| a.name()).join(", ")
                    ),
                )
            })
    }

    /// Its name as manifests and AVB write it.
    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha1 => "sha1",
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Sha384 => "sha384",
            HashAlgorithm::Sha512 => "sha512",
            HashAlgorithm::Blake2b256 => "blake2b-256",
        }
    }

    /// Bytes of a digest.
    pub fn digest_len(self) -> usize {
        match self {
            HashAlgorithm::Sha1 => 20,
            HashAlgorithm::Sha256 | HashAlgorithm::Blake2b256 => 32,
            HashAlgorithm::Sha384 => 48,
            HashAlgorithm::Sha512 => 64,
        }
    }

    /// Bytes of a digest's slot in the tree.
    pub fn slot_len(self) -> usize {
        self.digest_len().next_power_of_two()
    }

    /// Writes `H(salt || data)` into `out` (its first [`Self::digest_len`]
    /// bytes).
    pub fn hash_into(self, salt: &[u8], data: &[u8], out: &mut [u8]) {
        fn run<D: sha2::Digest>(salt: &[u8], data: &[u8], out: &mut [u8]) {
            let mut h = D::new();
            h.update(salt);
            h.update(data);
            let d = h.finalize();
            out[..d.len()].copy_from_slice(&d);
        }
        match self {
            HashAlgorithm::Sha1 => run::<sha1::Sha1>(salt, data, out),
            HashAlgorithm::Sha256 => run::<sha2::Sha256>(salt, data, out),
            HashAlgorithm::Sha384 => run::<sha2::Sha384>(salt, data, out),
            HashAlgorithm::Sha512 => run::<sha2::Sha512>(salt, data, out),
            HashAlgorithm::Blake2b256 => {
                run::<blake2::Blake2b<blake2::digest::consts::U32>>(salt, data, out)
            }
        }
    }
}

/// The shape of a tree over some data: the bytes of each level, bottom
/// level first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeShape {
    /// Bytes of each level (whole blocks), the level over the data first.
    pub levels: Vec<u64>,
}

impl TreeShape {
    /// The tree over `data_len` bytes in `block_size`-byte blocks.
    pub fn new(data_len: u64, block_size: u64, algorithm: HashAlgorithm) -> Self {
        let slot = algorithm.slot_len() as u64;
        let mut levels = Vec::new();
        let mut size = data_len;
        while size > block_size {
            let digests = size.div_ceil(block_size);
            let level = (digests * slot).div_ceil(block_size) * block_size;
            levels.push(level);
            size = level;
        }
        TreeShape { levels }
    }

    /// Bytes of the whole tree.
    pub fn len(&self) -> u64 {
        self.levels.iter().sum()
    }

    /// Whether the tree is empty (data of at most one block).
    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }
}

/// Builds a hash tree from data blocks given in order.
#[derive(Debug)]
pub struct TreeBuilder {
    algorithm: HashAlgorithm,
    salt: Vec<u8>,
    block_size: usize,
    data_len: u64,
    fed: u64,
    /// The first level's digests (slots), as they come.
    level0: Vec<u8>,
}

/// A finished tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashTree {
    /// The tree's bytes, top level first, as stored in the partition.
    pub tree: Vec<u8>,
    /// The root digest ([`HashAlgorithm::digest_len`] bytes).
    pub root: Vec<u8>,
}

impl TreeBuilder {
    /// A builder for a tree over `data_len` bytes (a whole number of
    /// `block_size` blocks).
    pub fn new(algorithm: HashAlgorithm, salt: &[u8], block_size: usize, data_len: u64) -> Self {
        let blocks = data_len.div_ceil(block_size as u64);
        TreeBuilder {
            algorithm,
            salt: salt.to_vec(),
            block_size,
            data_len,
            fed: 0,
            level0: Vec::with_capacity((blocks as usize).saturating_mul(algorithm.slot_len())),
        }
    }

    /// Bytes of data still expected.
    pub fn remaining(&self) -> u64 {
        self.data_len - self.fed
    }

    /// Hashes the next data blocks (`data` holds whole blocks, at most
    /// [`Self::remaining`] bytes), in parallel.
    pub fn update(&mut self, data: &[u8]) {
        assert!(
            data.len() as u64 <= self.remaining() && data.len().is_multiple_of(self.block_size)
        );
        let slot = self.algorithm.slot_len();
        let at = self.level0.len();
        self.level0
            .resize(at + data.len() / self.block_size * slot, 0);
        let (alg, salt) = (self.algorithm, &self.salt[..]);
        self.level0[at..]
            .par_chunks_mut(slot * 64)
            .zip(data.par_chunks(self.block_size * 64))
            .for_each(|(out, blocks)| {
                for (o, b) in out.chunks_mut(slot).zip(blocks.chunks(self.block_size)) {
                    alg.hash_into(salt, b, o);
                }
            });
        self.fed += data.len() as u64;
    }

    /// The tree, once every data block was given.
    pub fn finish(self) -> HashTree {
        assert_eq!(self.fed, self.data_len, "every data block first");
        let bs = self.block_size;
        let slot = self.algorithm.slot_len();
        let (alg, salt) = (self.algorithm, &self.salt[..]);
        let shape = TreeShape::new(self.data_len, bs as u64, alg);
        let mut levels: Vec<Vec<u8>> = Vec::new();
        let mut below = self.level0;
        if shape.is_empty() {
            // One data block (or none): the root hashes it alone.
            let mut block = below;
            block.clear();
            block.resize(bs, 0);
            let mut root = vec![0u8; slot];
            alg.hash_into(salt, &block, &mut root);
            root.truncate(alg.digest_len());
            return HashTree {
                tree: Vec::new(),
                root,
            };
        }
        for &len in &shape.levels {
            below.resize(len as usize, 0);
            let next: Vec<u8> = below
                .par_chunks(bs)
                .flat_map_iter(|b| {
                    let mut d = vec![0u8; slot];
                    alg.hash_into(salt, b, &mut d);
                    d
                })
                .collect();
            levels.push(below);
            below = next;
        }
        // `below` is now the top level's single digest: the root.
        let mut root = below;
        root.truncate(alg.digest_len());
        let tree = levels.into_iter().rev().flatten().collect();
        HashTree { tree, root }
    }
}

/// The tree of `data` in one call.
pub fn hash_tree(
    algorithm: HashAlgorithm,
    salt: &[u8],
    block_size: usize,
    data: &[u8],
) -> HashTree {
    let mut b = TreeBuilder::new(algorithm, salt, block_size, data.len() as u64);
    b.update(data);
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_match_avbtool() {
        // 1536 blocks, SHA-256: 12 blocks of digests, then 1.
        let s = TreeShape::new(6291456, 4096, HashAlgorithm::Sha256);
        assert_eq!(s.levels, vec![49152, 4096]);
        assert_eq!(
            TreeShape::new(4194304, 4096, HashAlgorithm::Sha1).len(),
            36864
        );
        assert!(TreeShape::new(4096, 4096, HashAlgorithm::Sha256).is_empty());
    }

    #[test]
    fn names_round_trip_and_unknown_is_refused() {
        for a in HashAlgorithm::ALL {
            assert_eq!(HashAlgorithm::from_name(a.name()).unwrap(), a);
        }
        let e = HashAlgorithm::from_name("md5").unwrap_err().to_string();
        assert!(e.contains("md5") && e.contains("blake2b-256"), "{e}");
    }

    #[test]
    fn batches_give_the_tree_of_the_whole() {
        let data: Vec<u8> = (0..300 * 4096u32).map(|i| (i * 7 / 4096) as u8).collect();
        for alg in HashAlgorithm::ALL {
            let whole = hash_tree(alg, b"salt", 4096, &data);
            let mut b = TreeBuilder::new(alg, b"salt", 4096, data.len() as u64);
            for c in data.chunks(4096 * 17) {
                b.update(c);
            }
            assert_eq!(b.finish(), whole);
            assert_eq!(whole.root.len(), alg.digest_len());
            assert_eq!(
                whole.tree.len() as u64,
                TreeShape::new(data.len() as u64, 4096, alg).len()
            );
        }
    }

    #[test]
    fn two_levels_by_hand() {
        // 2 blocks: one level of one block holding two digests; the root
        // hashes that block.
        let data = [vec![1u8; 4096], vec![2u8; 4096]].concat();
        let t = hash_tree(HashAlgorithm::Sha256, b"s", 4096, &data);
        let h = |b: &[u8]| {
            let mut o = [0u8; 32];
            HashAlgorithm::Sha256.hash_into(b"s", b, &mut o);
            o
        };
        let mut level = [h(&data[..4096]), h(&data[4096..])].concat();
        level.resize(4096, 0);
        assert_eq!(t.tree, level);
        assert_eq!(t.root, h(&level));
    }
}
