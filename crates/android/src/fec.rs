//! Android's forward error correction for verity partitions: the parity
//! `fec` (libfec) and avbtool write after the hash tree, and that
//! `veritysetup --fec-device` computes the same way.
//!
//! The code is Reed-Solomon RS(255, 255 - roots) over GF(2^8) with the
//! field polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11d), first consecutive
//! root 0 and primitive element 1, as Phil Karn's library (`init_rs_char(8,
//! 0x11d, 0, 1, roots)`) builds it. The data it covers (`N` blocks: the
//! filesystem and its hash tree) is interleaved by block: with `rounds =
//! ceil(N / (255 - roots))`, codeword `k` of round `i` is byte `k` of the
//! blocks `j * rounds + i` for `j = 0 .. 255 - roots` (blocks past `N` are
//! zeros), and its `roots` parity bytes are stored at `(i * block_size + k)
//! * roots` in the FEC area, which is `rounds * roots` blocks long.
//!
//! [`RoundGroup`] encodes a range of rounds while the data streams by in
//! block order (each round sees its blocks in codeword order): its memory
//! is the parity of its rounds, which the caller bounds by choosing the
//! range ([`FecLayout::groups`]).

use rayon::prelude::*;
use romdelta_format::FormatError;

/// Symbols in a codeword.
const NN: usize = 255;

/// The fewest and most parity bytes per codeword Android's tools accept.
pub const ROOTS: std::ops::RangeInclusive<u32> = 2..=24;

/// GF(2^8) exponent and logarithm tables for 0x11d.
struct Field {
    exp: [u8; 512],
    log: [u16; 256],
}

impl Field {
    fn new() -> Self {
        let mut exp = [0u8; 512];
        let mut log = [0u16; 256];
        let mut x: u16 = 1;
        for (i, e) in exp.iter_mut().take(NN).enumerate() {
            *e = x as u8;
            log[x as usize] = i as u16;
            x <<= 1;
            if x & 0x100 != 0 {
                x ^= 0x11d;
            }
        }
        for i in NN..512 {
            exp[i] = exp[i - NN];
        }
        Field { exp, log }
    }

    fn mul(&self, a: u8, b: u8) -> u8 {
        if a == 0 || b == 0 {
            0
        } else {
            self.exp[self.log[a as usize] as usize + self.log[b as usize] as usize]
        }
    }
}

/// The generator polynomial's coefficients (lowest first, `roots + 1` of
/// them) with roots alpha^0 .. alpha^(roots - 1).
fn generator(f: &Field, roots: usize) -> Vec<u8> {
    let mut g = vec![0u8; roots + 1];
    g[0] = 1;
    for i in 0..roots {
        // Multiply by (x + alpha^i).
        let a = f.exp[i];
        g[i + 1] = 1;
        for j in (1..=i).rev() {
            g[j] = g[j - 1] ^ f.mul(g[j], a);
        }
        g[0] = f.mul(g[0], a);
    }
    g
}

/// Where the FEC of some data goes and how it is cut into rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FecLayout {
    /// Parity bytes per codeword.
    pub roots: usize,
    /// Bytes of a block.
    pub block_size: usize,
    /// Blocks of data covered.
    pub data_blocks: u64,
    /// Rounds (codewords per byte position of a block).
    pub rounds: u64,
}

impl FecLayout {
    /// The layout for `data_len` bytes (whole blocks) and `roots`.
    pub fn new(roots: u32, block_size: usize, data_len: u64) -> Result<Self, FormatError> {
        if !ROOTS.contains(&roots) {
            return Err(FormatError::invalid(
                "FEC",
                format!(
                    "{roots} roots; Android's FEC has {} to {}",
                    ROOTS.start(),
                    ROOTS.end()
                ),
            ));
        }
        if block_size == 0 || !data_len.is_multiple_of(block_size as u64) {
            return Err(FormatError::invalid(
                "FEC",
                format!("{data_len} bytes of data are not whole {block_size}-byte blocks"),
            ));
        }
        let data_blocks = data_len / block_size as u64;
        let k = (NN - roots as usize) as u64;
        Ok(FecLayout {
            roots: roots as usize,
            block_size,
            data_blocks,
            rounds: data_blocks.div_ceil(k),
        })
    }

    /// Data symbols per codeword.
    pub fn k(&self) -> usize {
        NN - self.roots
    }

    /// Bytes of the FEC area.
    pub fn len(&self) -> u64 {
        self.rounds * (self.roots * self.block_size) as u64
    }

    /// Whether there is no FEC (no data).
    pub fn is_empty(&self) -> bool {
        self.rounds == 0
    }

    /// The rounds cut into ranges whose parity holds at most `budget`
    /// bytes each (at least one round per range).
    pub fn groups(&self, budget: usize) -> Vec<std::ops::Range<u64>> {
        let per = (budget / (self.roots * self.block_size)).max(1) as u64;
        (0..self.rounds.div_ceil(per))
            .map(|g| g * per..((g + 1) * per).min(self.rounds))
            .collect()
    }
}

/// The parity of a range of rounds, built as the data streams by.
pub struct RoundGroup {
    layout: FecLayout,
    rounds: std::ops::Range<u64>,
    /// `tables[j][x]` = x * g_j.
    tables: Vec<[u8; 256]>,
    /// Per round of the range, per byte position, `roots` parity bytes:
    /// exactly that round's part of the FEC area.
    state: Vec<u8>,
    /// Blocks seen so far (all rounds), to check the order.
    next_block: u64,
}

impl RoundGroup {
    /// A group for `rounds` (within `layout.rounds`).
    pub fn new(layout: FecLayout, rounds: std::ops::Range<u64>) -> Self {
        assert!(rounds.start <= rounds.end && rounds.end <= layout.rounds);
        let f = Field::new();
        let g = generator(&f, layout.roots);
        let tables = g
            .iter()
            .map(|&c| std::array::from_fn(|x| f.mul(x as u8, c)))
            .collect();
        let len = (rounds.end - rounds.start) as usize * layout.roots * layout.block_size;
        RoundGroup {
            layout,
            rounds,
            tables,
            state: vec![0u8; len],
            next_block: 0,
        }
    }

    /// Feeds the next data blocks (whole blocks, in order from block 0),
    /// keeping those of this group's rounds; parallel over rounds.
    pub fn feed(&mut self, blocks: &[u8]) {
        let bs = self.layout.block_size;
        assert_eq!(blocks.len() % bs, 0);
        let first = self.next_block;
        let n = (blocks.len() / bs) as u64;
        assert!(
            first + n <= self.layout.data_blocks,
            "more blocks than the layout covers"
        );
        self.next_block += n;
        let rounds = self.layout.rounds;
        let (r0, roots) = (self.rounds.start, self.layout.roots);
        let tables = &self.tables;
        self.state
            .par_chunks_mut(roots * bs)
            .enumerate()
            .with_min_len(8)
            .for_each(|(idx, st)| {
                let r = r0 + idx as u64;
                // The first block of round r at or after `first`.
                let mut b = first + (r + rounds - first % rounds) % rounds;
                while b < first + n {
                    let at = ((b - first) as usize) * bs;
                    encode_block(tables, roots, st, &blocks[at..at + bs]);
                    b += rounds;
                }
            });
    }

    /// The parity of the group's rounds (their part of the FEC area, which
    /// starts at `rounds.start * roots * block_size`), once every data
    /// block was fed: the codeword positions past the data are zeros.
    pub fn finish(mut self) -> Vec<u8> {
        assert_eq!(
            self.next_block, self.layout.data_blocks,
            "every data block first"
        );
        let l = self.layout;
        let zeros = vec![0u8; l.block_size];
        let (r0, tables) = (self.rounds.start, &self.tables);
        self.state
            .par_chunks_mut(l.roots * l.block_size)
            .enumerate()
            .for_each(|(idx, st)| {
                let r = r0 + idx as u64;
                // Positions j with j * rounds + r >= data_blocks.
                let have = if r < l.data_blocks {
                    (l.data_blocks - r).div_ceil(l.rounds)
                } else {
                    0
                };
                for _ in have..l.k() as u64 {
                    encode_block(tables, l.roots, st, &zeros);
                }
            });
        self.state
    }
}

/// Steps every byte position's encoder by one symbol of `block`.
fn encode_block(tables: &[[u8; 256]], roots: usize, st: &mut [u8], block: &[u8]) {
    if roots == 2 {
        let (t0, t1) = (&tables[0], &tables[1]);
        for (p, &d) in st.chunks_exact_mut(2).zip(block) {
            let fb = (d ^ p[0]) as usize;
            p[0] = p[1] ^ t1[fb];
            p[1] = t0[fb];
        }
        return;
    }
    for (p, &d) in st.chunks_exact_mut(roots).zip(block) {
        let fb = (d ^ p[0]) as usize;
        for j in 1..roots {
            p[j - 1] = p[j] ^ tables[roots - j][fb];
        }
        p[roots - 1] = tables[0][fb];
    }
}

/// The whole FEC area of `data` in one call.
pub fn encode(roots: u32, block_size: usize, data: &[u8]) -> Result<Vec<u8>, FormatError> {
    let layout = FecLayout::new(roots, block_size, data.len() as u64)?;
    let mut g = RoundGroup::new(layout, 0..layout.rounds);
    g.feed(data);
    Ok(g.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// update_engine's unit-test vector: one block of 0x01, 2 roots.
    #[test]
    fn one_block_of_ones() {
        let fec = encode(2, 4096, &[1u8; 4096]).unwrap();
        assert_eq!(fec.len(), 2 * 4096);
        assert!(fec.chunks(2).all(|p| p == [0x8e, 0x8f]), "{:?}", &fec[..4]);
    }

    /// A codeword (data then parity) of a systematic RS code is divisible
    /// by the generator: it vanishes at every root alpha^i.
    #[test]
    fn codewords_vanish_at_the_roots() {
        let f = Field::new();
        for roots in [2u32, 3, 8, 24] {
            let k = NN - roots as usize;
            let data: Vec<u8> = (0..k * 16).map(|i| (i * 131 % 251) as u8).collect();
            let fec = encode(roots, 16, &data).unwrap();
            // One round: codeword for byte position `pos` is byte `pos` of each block.
            for pos in 0..16 {
                let mut cw: Vec<u8> = (0..k).map(|j| data[j * 16 + pos]).collect();
                cw.extend_from_slice(&fec[pos * roots as usize..(pos + 1) * roots as usize]);
                for i in 0..roots as usize {
                    // Horner: highest degree first.
                    let x = f.exp[i];
                    let v = cw.iter().fold(0u8, |acc, &c| f.mul(acc, x) ^ c);
                    assert_eq!(v, 0, "roots {roots}, position {pos}, root {i}");
                }
            }
        }
    }

    #[test]
    fn groups_and_batches_give_the_whole() {
        let data: Vec<u8> = (0..600 * 512u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let whole = encode(4, 512, &data).unwrap();
        let layout = FecLayout::new(4, 512, data.len() as u64).unwrap();
        assert_eq!(layout.rounds, 3);
        let mut out = Vec::new();
        for r in layout.groups(4 * 512) {
            let mut g = RoundGroup::new(layout, r);
            for c in data.chunks(512 * 7) {
                g.feed(c);
            }
            out.extend(g.finish());
        }
        assert_eq!(out, whole);
    }

    #[test]
    fn bad_layouts_are_refused() {
        assert!(FecLayout::new(1, 4096, 4096).is_err());
        assert!(FecLayout::new(25, 4096, 4096).is_err());
        assert!(FecLayout::new(2, 4096, 4095).is_err());
    }
}
