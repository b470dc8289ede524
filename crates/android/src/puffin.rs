//! Puffin, the PUFFDIFF operation's patch format: deflate data seen
//! through its "puff" form, a byte-oriented rewrite of each deflate block
//! that keeps every choice of the encoder (block types, Huffman headers,
//! literals, length/distance pairs), so that the exact deflate bits can be
//! rebuilt from it ("huffing").
//!
//! A patch (`PUF1`, a u32 big-endian header length, a `PatchHeader`
//! protobuf, then a bsdiff patch) describes where the deflate streams of
//! the source and destination lie (bit extents) and where their puffs lie
//! in the puffed streams (byte extents). Applying it: the source is
//! puffed ([`puffed_view`]), the bsdiff patch turns that into the
//! destination's puffed stream, which is huffed back into bytes
//! ([`huffed_bytes`]). Between deflates, the puffed stream holds the raw
//! bytes; a byte shared with a deflate that starts or ends inside it holds
//! only the bits outside the deflate, shifted down to bit 0.
//!
//! Puff encoding (multi-byte integers big-endian):
//! - block metadata: u16 (M - 1) and M bytes; byte 0 is BFINAL << 7 |
//!   BTYPE << 5 | the padding bits of a stored block; a dynamic block adds
//!   HLIT, HDIST, HCLEN, the code-length code lengths as nibbles (high
//!   first, in stream order) and one byte per code-length symbol (0-15 a
//!   length, 16 + 2 bits, 20 + 3 bits, 28 + 7 bits for the repeats);
//! - a literal run: `L - 1` for 1 to 127 literals, or `7F` and u16 `L -
//!   128` for up to 65663, then the literals;
//! - a length/distance pair: `80 | (length - 3)` for lengths below 130, or
//!   `FF` and `length - 130`, then u16 `distance - 1`;
//! - the end of a block: `FF 81`.

use prost::Message as _;
use romdelta_format::FormatError;

/// Most bytes of a puffed stream accepted (source or destination).
pub const MAX_PUFF: u64 = 1 << 30;
/// Longest literal run of one puff item.
const MAX_RUN: usize = 65663;

fn bad(detail: impl Into<String>) -> FormatError {
    FormatError::invalid("puffin", detail)
}

const LEN_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LEN_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];
/// The order of the code-length code lengths in a dynamic header.
const PERM: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

fn fixed_lengths() -> (Vec<u8>, Vec<u8>) {
    let mut lit = vec![8u8; 288];
    lit[144..256].fill(9);
    lit[256..280].fill(7);
    (lit, vec![5u8; 30])
}

/// Reads bits LSB-first.
struct BitReader<'a> {
    data: &'a [u8],
    pos: u64,
    end: u64,
}

impl<'a> BitReader<'a> {
    fn remaining(&self) -> u64 {
        self.end - self.pos
    }
    fn bits(&mut self, n: u32) -> Result<u32, FormatError> {
        if u64::from(n) > self.remaining() {
            return Err(bad("a deflate stream ends early"));
        }
        let mut v = 0u32;
        for i in 0..n {
            let p = self.pos + u64::from(i);
            let bit = (self.data[(p / 8) as usize] >> (p % 8)) & 1;
            v |= u32::from(bit) << i;
        }
        self.pos += u64::from(n);
        Ok(v)
    }
}

/// Writes bits LSB-first.
struct BitWriter {
    out: Vec<u8>,
    bits: u64,
}

impl BitWriter {
    fn new(start_bit: u32) -> Self {
        BitWriter {
            out: vec![0u8; usize::from(start_bit > 0)],
            bits: u64::from(start_bit),
        }
    }
    fn put(&mut self, v: u32, n: u32) {
        for i in 0..n {
            if self.bits.is_multiple_of(8) {
                self.out.push(0);
            }
            let last = self.out.len() - 1;
            self.out[last] |= (((v >> i) & 1) as u8) << (self.bits % 8);
            self.bits += 1;
        }
    }
    fn bytes(&mut self, b: &[u8]) {
        debug_assert_eq!(self.bits % 8, 0);
        self.out.extend_from_slice(b);
        self.bits += 8 * b.len() as u64;
    }
}

/// A canonical Huffman code: decoding by counts (as zlib's puff.c), and
/// the codes for encoding.
struct Huffman {
    counts: [u16; 16],
    symbols: Vec<u16>,
    /// Per symbol: the bit-reversed code and its length (0: no code).
    codes: Vec<(u32, u8)>,
}

impl Huffman {
    fn new(lengths: &[u8]) -> Result<Self, FormatError> {
        let mut counts = [0u16; 16];
        for &l in lengths {
            if l > 15 {
                return Err(bad("a Huffman code length above 15"));
            }
            counts[l as usize] += 1;
        }
        counts[0] = 0;
        // Over-subscribed codes are refused; incomplete ones are not.
        let mut left: i32 = 1;
        for &c in &counts[1..] {
            left = left * 2 - i32::from(c);
            if left < 0 {
                return Err(bad("an over-subscribed Huffman code"));
            }
        }
        let mut offs = [0u16; 16];
        for l in 1..15 {
            offs[l + 1] = offs[l] + counts[l];
        }
        let mut symbols = vec![0u16; lengths.len()];
        for (s, &l) in lengths.iter().enumerate() {
            if l != 0 {
                symbols[offs[l as usize] as usize] = s as u16;
                offs[l as usize] += 1;
            }
        }
        let mut next = [0u32; 16];
        let mut code = 0u32;
        for b in 1..16 {
            code = (code + u32::from(counts[b - 1])) << 1;
            next[b] = code;
        }
        let codes = lengths
            .iter()
            .map(|&l| {
                if l == 0 {
                    return (0, 0);
                }
                let c = next[l as usize];
                next[l as usize] += 1;
                let rev = (0..l).fold(0u32, |acc, i| acc | (((c >> i) & 1) << (l - 1 - i)));
                (rev, l)
            })
            .collect();
        Ok(Huffman {
            counts,
            symbols,
            codes,
        })
    }

    fn decode(&self, r: &mut BitReader<'_>) -> Result<u16, FormatError> {
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for len in 1..16 {
            code |= r.bits(1)? as i32;
            let count = i32::from(self.counts[len]);
            if code - count < first {
                return Ok(self.symbols[(index + (code - first)) as usize]);
            }
            index += count;
            first += count;
            first <<= 1;
            code <<= 1;
        }
        Err(bad("a bit pattern that is no Huffman code"))
    }

    fn put(&self, w: &mut BitWriter, sym: usize) -> Result<(), FormatError> {
        match self.codes.get(sym) {
            Some(&(c, l)) if l > 0 => {
                w.put(c, u32::from(l));
                Ok(())
            }
            _ => Err(bad(format!("symbol {sym} has no Huffman code"))),
        }
    }
}

/// The puff items being written.
struct PuffOut<'a> {
    out: &'a mut Vec<u8>,
    run: Vec<u8>,
    limit: u64,
}

impl PuffOut<'_> {
    fn room(&self, n: usize) -> Result<(), FormatError> {
        if (self.out.len() + self.run.len() + n) as u64 > self.limit {
            return Err(bad(format!(
                "a puff longer than the {} bytes the patch records",
                self.limit
            )));
        }
        Ok(())
    }
    fn literal(&mut self, b: u8) -> Result<(), FormatError> {
        self.room(4)?;
        self.run.push(b);
        if self.run.len() == MAX_RUN {
            self.flush();
        }
        Ok(())
    }
    fn flush(&mut self) {
        let n = self.run.len();
        if n == 0 {
            return;
        }
        if n <= 127 {
            self.out.push((n - 1) as u8);
        } else {
            self.out.push(0x7f);
            self.out
                .extend_from_slice(&((n - 128) as u16).to_be_bytes());
        }
        self.out.append(&mut self.run);
    }
    fn item(&mut self, b: &[u8]) -> Result<(), FormatError> {
        self.flush();
        self.room(b.len())?;
        self.out.extend_from_slice(b);
        Ok(())
    }
    fn pair(&mut self, len: u16, dist: u16) -> Result<(), FormatError> {
        let d = (dist - 1).to_be_bytes();
        if len < 130 {
            self.item(&[0x80 | (len - 3) as u8, d[0], d[1]])
        } else {
            self.item(&[0xff, (len - 130) as u8, d[0], d[1]])
        }
    }
    fn metadata(&mut self, m: &[u8]) -> Result<(), FormatError> {
        let mut v = ((m.len() - 1) as u16).to_be_bytes().to_vec();
        v.extend_from_slice(m);
        self.item(&v)
    }
}

/// Puffs the deflate data of `window` from bit `start_bit` (0-7): every
/// block while at least 8 bits remain, appended to `out` (at most `limit`
/// bytes in all).
pub fn puff(
    window: &[u8],
    start_bit: u32,
    out: &mut Vec<u8>,
    limit: u64,
) -> Result<(), FormatError> {
    puff_bits(window, start_bit, out, limit).map(|_| ())
}

/// [`puff`], returning the bit of `window` where the last block ended
/// (where a deflate extent ends, for a generator).
pub fn puff_bits(
    window: &[u8],
    start_bit: u32,
    out: &mut Vec<u8>,
    limit: u64,
) -> Result<u64, FormatError> {
    let mut r = BitReader {
        data: window,
        pos: u64::from(start_bit),
        end: window.len() as u64 * 8,
    };
    let mut p = PuffOut {
        out,
        run: Vec::new(),
        limit,
    };
    let (fixed_lit, fixed_dist) = fixed_lengths();
    while r.remaining() >= 8 {
        let last = r.bits(1)? as u8;
        let kind = r.bits(2)?;
        match kind {
            0 => {
                let pad = ((8 - r.pos % 8) % 8) as u32;
                let padding = r.bits(pad)? as u8;
                let len = r.bits(16)?;
                let nlen = r.bits(16)?;
                if len ^ nlen != 0xffff {
                    return Err(bad(
                        "a stored block whose length and its complement disagree",
                    ));
                }
                p.metadata(&[(last << 7) | padding])?;
                if len > 0 {
                    let at = (r.pos / 8) as usize;
                    if r.remaining() < u64::from(len) * 8 {
                        return Err(bad("a stored block ends early"));
                    }
                    p.room(len as usize + 3)?;
                    // One run: a stored block holds at most 65535 bytes.
                    p.run.extend_from_slice(&window[at..at + len as usize]);
                    p.flush();
                    r.pos += u64::from(len) * 8;
                }
                p.item(&[0xff, 0x81])?;
            }
            1 | 2 => {
                let (lit, dist) = if kind == 1 {
                    p.metadata(&[(last << 7) | 0x20])?;
                    (Huffman::new(&fixed_lit)?, Huffman::new(&fixed_dist)?)
                } else {
                    let hlit = r.bits(5)?;
                    let hdist = r.bits(5)?;
                    let hclen = r.bits(4)?;
                    let (nlit, ndist, ncode) =
                        (hlit as usize + 257, hdist as usize + 1, hclen as usize + 4);
                    if nlit > 286 || ndist > 30 {
                        return Err(bad(format!(
                            "a dynamic block with {nlit} literal/length and {ndist} distance codes"
                        )));
                    }
                    let mut meta = vec![(last << 7) | 0x40, hlit as u8, hdist as u8, hclen as u8];
                    let mut cl = [0u8; 19];
                    let mut nibbles = Vec::with_capacity(ncode);
                    for &sym in PERM.iter().take(ncode) {
                        let l = r.bits(3)? as u8;
                        cl[sym] = l;
                        nibbles.push(l);
                    }
                    for pair in nibbles.chunks(2) {
                        meta.push(pair[0] << 4 | pair.get(1).copied().unwrap_or(0));
                    }
                    let clh = Huffman::new(&cl)?;
                    let mut lengths = Vec::with_capacity(nlit + ndist);
                    while lengths.len() < nlit + ndist {
                        let s = clh.decode(&mut r)?;
                        let (byte, value, times) = match s {
                            0..=15 => (s as u8, s as u8, 1),
                            16 => {
                                let x = r.bits(2)?;
                                let prev = *lengths
                                    .last()
                                    .ok_or_else(|| bad("a length repeat before any length"))?;
                                (16 + x as u8, prev, 3 + x as usize)
                            }
                            17 => {
                                let x = r.bits(3)?;
                                (20 + x as u8, 0, 3 + x as usize)
                            }
                            _ => {
                                let x = r.bits(7)?;
                                (28 + x as u8, 0, 11 + x as usize)
                            }
                        };
                        if lengths.len() + times > nlit + ndist {
                            return Err(bad("code lengths run past the header's count"));
                        }
                        meta.push(byte);
                        lengths.extend(std::iter::repeat_n(value, times));
                    }
                    p.metadata(&meta)?;
                    (
                        Huffman::new(&lengths[..nlit])?,
                        Huffman::new(&lengths[nlit..])?,
                    )
                };
                loop {
                    let s = lit.decode(&mut r)? as usize;
                    match s {
                        0..=255 => p.literal(s as u8)?,
                        256 => {
                            p.item(&[0xff, 0x81])?;
                            break;
                        }
                        257..=285 => {
                            let i = s - 257;
                            let len = LEN_BASE[i] + r.bits(u32::from(LEN_EXTRA[i]))? as u16;
                            let d = dist.decode(&mut r)? as usize;
                            if d >= 30 {
                                return Err(bad(format!("distance symbol {d}")));
                            }
                            let distance =
                                u32::from(DIST_BASE[d]) + r.bits(u32::from(DIST_EXTRA[d]))?;
                            if distance > 32768 {
                                return Err(bad("a distance above 32768"));
                            }
                            p.pair(len, distance as u16)?;
                        }
                        _ => return Err(bad(format!("literal/length symbol {s}"))),
                    }
                }
            }
            _ => return Err(bad("a deflate block of type 3")),
        }
    }
    p.flush();
    Ok(r.pos)
}

/// The layout of the deflates `deflates` (bit extents, sorted, apart) of
/// the raw stream `raw`, and its puffed view: each deflate puffed once, to
/// find its puff's length and to place it. For a generator; the extents
/// must be exact (each ending where its last block does).
pub fn layout(raw: &[u8], deflates: &[BitExtent]) -> Result<(StreamInfo, Vec<u8>), FormatError> {
    let mut puffs = Vec::with_capacity(deflates.len());
    let mut view = Vec::new();
    let mut prev = 0u64;
    for d in deflates {
        if d.offset < prev || d.end().div_ceil(8) > raw.len() as u64 {
            return Err(bad(
                "deflates overlap, are out of order or lie past the stream",
            ));
        }
        push_gap(raw, &mut view, prev, d.offset);
        let at = view.len() as u64;
        puff(
            &raw[(d.offset / 8) as usize..d.end().div_ceil(8) as usize],
            (d.offset % 8) as u32,
            &mut view,
            MAX_PUFF,
        )?;
        puffs.push((at, view.len() as u64 - at));
        prev = d.end();
    }
    push_gap(raw, &mut view, prev, raw.len() as u64 * 8);
    let info = StreamInfo {
        deflates: deflates.to_vec(),
        puffs,
        puff_length: view.len() as u64,
    };
    info.raw_len().map_err(bad)?;
    Ok((info, view))
}

/// Writes a puffin patch: the `src` and `dst` layouts and the bsdiff
/// patch between their puffed streams.
pub fn encode(src: &StreamInfo, dst: &StreamInfo, inner: &[u8]) -> Vec<u8> {
    let side = |s: &StreamInfo| proto::StreamInfo {
        deflates: s
            .deflates
            .iter()
            .map(|d| proto::BitExtent {
                offset: d.offset,
                length: d.length,
            })
            .collect(),
        puffs: s
            .puffs
            .iter()
            .map(|&(o, l)| proto::BitExtent {
                offset: o * 8,
                length: l * 8,
            })
            .collect(),
        puff_length: s.puff_length,
    };
    let h = proto::PatchHeader {
        version: 1,
        src: Some(side(src)),
        dst: Some(side(dst)),
        r#type: 0,
    }
    .encode_to_vec();
    let mut out = b"PUF1".to_vec();
    out.extend((h.len() as u32).to_be_bytes());
    out.extend(h);
    out.extend_from_slice(inner);
    out
}

/// Reads puff items.
struct PuffIn<'a> {
    b: &'a [u8],
    at: usize,
}

enum Item<'a> {
    Run(&'a [u8]),
    Pair(u16, u16),
    End,
}

impl<'a> PuffIn<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let s = self
            .b
            .get(self.at..self.at + n)
            .ok_or_else(|| bad("a puff ends early"))?;
        self.at += n;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, FormatError> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn metadata(&mut self) -> Result<&'a [u8], FormatError> {
        let m = self.u16()? as usize + 1;
        self.take(m)
    }
    fn item(&mut self) -> Result<Item<'a>, FormatError> {
        let h = self.take(1)?[0];
        if h & 0x80 == 0 {
            let n = if h < 0x7f {
                h as usize + 1
            } else {
                self.u16()? as usize + 128
            };
            return Ok(Item::Run(self.take(n)?));
        }
        let len = if h == 0xff {
            match self.take(1)?[0] {
                0x81 => return Ok(Item::End),
                x if x <= 0x80 => u16::from(x) + 130,
                x => return Err(bad(format!("a length escape of {x:#x}"))),
            }
        } else {
            u16::from(h & 0x7f) + 3
        };
        let d = self.u16()?;
        if d >= 0x8000 {
            return Err(bad("a distance above 32768"));
        }
        Ok(Item::Pair(len, d + 1))
    }
}

/// Huffs `puff` back into deflate bits, written from bit `start_bit` of
/// the first byte. Returns the bytes (the last padded with zero bits) and
/// the bits written after `start_bit`.
pub fn huff(puff: &[u8], start_bit: u32) -> Result<(Vec<u8>, u64), FormatError> {
    let mut w = BitWriter::new(start_bit);
    let mut r = PuffIn { b: puff, at: 0 };
    let (fixed_lit, fixed_dist) = fixed_lengths();
    while r.at < puff.len() {
        let m = r.metadata()?;
        let hdr = m[0];
        let kind = u32::from((hdr >> 5) & 3);
        w.put(u32::from(hdr >> 7), 1);
        w.put(kind, 2);
        match kind {
            0 => {
                if m.len() != 1 {
                    return Err(bad("a stored block with Huffman metadata"));
                }
                let pad = ((8 - w.bits % 8) % 8) as u32;
                w.put(u32::from(hdr & 0x1f), pad);
                match r.item()? {
                    Item::End => {
                        w.put(0, 16);
                        w.put(0xffff, 16);
                    }
                    Item::Run(bytes) => {
                        let n = u32::try_from(bytes.len())
                            .ok()
                            .filter(|&n| n <= 0xffff)
                            .ok_or_else(|| bad("a stored block of more than 65535 bytes"))?;
                        w.put(n, 16);
                        w.put(!n & 0xffff, 16);
                        w.bytes(bytes);
                        if !matches!(r.item()?, Item::End) {
                            return Err(bad("a stored block with more than one literal run"));
                        }
                    }
                    Item::Pair(..) => return Err(bad("a length/distance pair in a stored block")),
                }
                continue;
            }
            1 => {
                if m.len() != 1 {
                    return Err(bad("a fixed block with Huffman metadata"));
                }
            }
            2 => {}
            _ => return Err(bad("a deflate block of type 3")),
        }
        let (lit, dist) = if kind == 1 {
            (Huffman::new(&fixed_lit)?, Huffman::new(&fixed_dist)?)
        } else {
            if m.len() < 4 {
                return Err(bad("dynamic block metadata shorter than its header"));
            }
            let (hlit, hdist, hclen) = (m[1], m[2], m[3]);
            if hlit > 29 || hdist > 29 || hclen > 15 {
                return Err(bad("a dynamic block header out of range"));
            }
            let (nlit, ndist, ncode) =
                (hlit as usize + 257, hdist as usize + 1, hclen as usize + 4);
            w.put(u32::from(hlit), 5);
            w.put(u32::from(hdist), 5);
            w.put(u32::from(hclen), 4);
            let nib_bytes = ncode.div_ceil(2);
            let nibs = m
                .get(4..4 + nib_bytes)
                .ok_or_else(|| bad("dynamic block metadata ends early"))?;
            let mut cl = [0u8; 19];
            for (i, &sym) in PERM.iter().enumerate().take(ncode) {
                let b = nibs[i / 2];
                let l = if i % 2 == 0 { b >> 4 } else { b & 0xf };
                if l > 7 {
                    return Err(bad("a code-length code length above 7"));
                }
                cl[sym] = l;
                w.put(u32::from(l), 3);
            }
            let clh = Huffman::new(&cl)?;
            let mut lengths: Vec<u8> = Vec::with_capacity(nlit + ndist);
            for &b in &m[4 + nib_bytes..] {
                let (sym, extra, bits, value, times) = match b {
                    0..=15 => (b as usize, 0, 0, b, 1),
                    16..=19 => {
                        let prev = *lengths
                            .last()
                            .ok_or_else(|| bad("a length repeat before any length"))?;
                        (16, b - 16, 2, prev, 3 + (b - 16) as usize)
                    }
                    20..=27 => (17, b - 20, 3, 0, 3 + (b - 20) as usize),
                    28..=155 => (18, b - 28, 7, 0, 11 + (b - 28) as usize),
                    _ => return Err(bad(format!("code-length symbol byte {b}"))),
                };
                clh.put(&mut w, sym)?;
                w.put(u32::from(extra), bits);
                if lengths.len() + times > nlit + ndist {
                    return Err(bad("code lengths run past the header's count"));
                }
                lengths.extend(std::iter::repeat_n(value, times));
            }
            if lengths.len() != nlit + ndist {
                return Err(bad("dynamic block metadata holds too few code lengths"));
            }
            (
                Huffman::new(&lengths[..nlit])?,
                Huffman::new(&lengths[nlit..])?,
            )
        };
        loop {
            match r.item()? {
                Item::Run(bytes) => {
                    for &b in bytes {
                        lit.put(&mut w, b as usize)?;
                    }
                }
                Item::Pair(len, d) => {
                    let i = LEN_BASE.iter().rposition(|&b| b <= len).expect("len >= 3");
                    lit.put(&mut w, 257 + i)?;
                    w.put(u32::from(len - LEN_BASE[i]), u32::from(LEN_EXTRA[i]));
                    let j = DIST_BASE.iter().rposition(|&b| b <= d).expect("dist >= 1");
                    dist.put(&mut w, j)?;
                    w.put(u32::from(d - DIST_BASE[j]), u32::from(DIST_EXTRA[j]));
                }
                Item::End => {
                    lit.put(&mut w, 256)?;
                    break;
                }
            }
        }
    }
    let bits = w.bits - u64::from(start_bit);
    Ok((w.out, bits))
}

/// A bit range of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitExtent {
    /// First bit.
    pub offset: u64,
    /// Bits.
    pub length: u64,
}

impl BitExtent {
    fn end(&self) -> u64 {
        self.offset + self.length
    }
}

/// Where a stream's deflates and their puffs lie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// The deflates, in bits of the raw stream.
    pub deflates: Vec<BitExtent>,
    /// Their puffs, in bytes of the puffed stream (offset, length).
    pub puffs: Vec<(u64, u64)>,
    /// Bytes of the puffed stream.
    pub puff_length: u64,
}

/// The protobuf messages of a puffin patch header.
pub mod proto {
    /// `BitExtent`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BitExtent {
        /// Offset.
        #[prost(uint64, tag = "1")]
        pub offset: u64,
        /// Length.
        #[prost(uint64, tag = "2")]
        pub length: u64,
    }
    /// `StreamInfo`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StreamInfo {
        /// Deflates, in bits.
        #[prost(message, repeated, tag = "1")]
        pub deflates: Vec<BitExtent>,
        /// Puffs, in bits (multiples of 8).
        #[prost(message, repeated, tag = "2")]
        pub puffs: Vec<BitExtent>,
        /// Bytes of the puffed stream.
        #[prost(uint64, tag = "3")]
        pub puff_length: u64,
    }
    /// `PatchHeader`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PatchHeader {
        /// Version (1).
        #[prost(int32, tag = "1")]
        pub version: i32,
        /// The source stream.
        #[prost(message, optional, tag = "2")]
        pub src: Option<StreamInfo>,
        /// The destination stream.
        #[prost(message, optional, tag = "3")]
        pub dst: Option<StreamInfo>,
        /// 0: bsdiff, 1: zucchini.
        #[prost(int32, tag = "4")]
        pub r#type: i32,
    }
}

/// Bytes of the gap between the raw bits `a` and `b` in a puffed stream.
fn gap_len(a: u64, b: u64) -> u64 {
    if a == b {
        0
    } else {
        b.div_ceil(8) - a / 8
    }
}

impl StreamInfo {
    fn from_proto(p: Option<proto::StreamInfo>, what: &str) -> Result<Self, FormatError> {
        let p = p.ok_or_else(|| bad(format!("the patch has no {what} stream")))?;
        if p.deflates.len() != p.puffs.len() {
            return Err(bad(format!(
                "{what}: {} deflates, {} puffs",
                p.deflates.len(),
                p.puffs.len()
            )));
        }
        if p.puff_length > MAX_PUFF {
            return Err(bad(format!(
                "{what}: a puffed stream of {} bytes, more than {MAX_PUFF}",
                p.puff_length
            )));
        }
        let deflates: Vec<BitExtent> = p
            .deflates
            .iter()
            .map(|e| BitExtent {
                offset: e.offset,
                length: e.length,
            })
            .collect();
        let puffs: Vec<(u64, u64)> = p
            .puffs
            .iter()
            .map(|e| {
                if e.offset % 8 != 0 || e.length % 8 != 0 {
                    return Err(bad(format!("{what}: a puff extent not in whole bytes")));
                }
                Ok((e.offset / 8, e.length / 8))
            })
            .collect::<Result<_, _>>()?;
        let s = StreamInfo {
            deflates,
            puffs,
            puff_length: p.puff_length,
        };
        s.raw_len().map_err(|e| bad(format!("{what}: {e}")))?;
        Ok(s)
    }

    /// Checks the layout (sorted, disjoint, each puff where the gaps put
    /// it) and returns the raw stream's length in bytes.
    pub fn raw_len(&self) -> Result<u64, String> {
        let mut prev_end = 0u64;
        let mut pos = 0u64;
        for (d, &(po, pl)) in self.deflates.iter().zip(&self.puffs) {
            if d.offset < prev_end || d.offset.checked_add(d.length).is_none() {
                return Err("deflates overlap or are out of order".into());
            }
            pos += gap_len(prev_end, d.offset);
            if po != pos {
                return Err(format!(
                    "a puff at byte {po}, where the layout puts it at {pos}"
                ));
            }
            pos = pos.checked_add(pl).ok_or("puff lengths overflow")?;
            prev_end = d.end();
        }
        if pos > self.puff_length {
            return Err("the puffs run past the puffed stream".into());
        }
        let raw = prev_end / 8 + (self.puff_length - pos);
        if raw * 8 < prev_end {
            return Err("the last deflate ends past the raw stream".into());
        }
        Ok(raw)
    }
}

/// Appends to a puffed view the gap between the raw bits `a` and `b` of
/// `raw`: a byte per raw byte they touch, holding only the bits outside
/// the deflates on either side, shifted down to bit 0.
fn push_gap(raw: &[u8], out: &mut Vec<u8>, a: u64, b: u64) {
    if a == b {
        return;
    }
    let (first, last) = (a / 8, b.div_ceil(8) - 1);
    for k in first..=last {
        let mut v = raw[k as usize];
        if k == last && !b.is_multiple_of(8) {
            v &= (1u8 << (b % 8)) - 1;
        }
        if k == first && !a.is_multiple_of(8) {
            v >>= a % 8;
        }
        out.push(v);
    }
}

/// The puffed view of the raw stream `raw` (at least as long as `info`
/// describes).
pub fn puffed_view(raw: &[u8], info: &StreamInfo) -> Result<Vec<u8>, FormatError> {
    let raw_len = info.raw_len().map_err(bad)?;
    if raw_len > raw.len() as u64 {
        return Err(bad(format!(
            "the patch describes {raw_len} source bytes, the operation reads {}",
            raw.len()
        )));
    }
    let mut out = Vec::new();
    let mut prev_end = 0u64;
    for (d, &(_, pl)) in info.deflates.iter().zip(&info.puffs) {
        push_gap(raw, &mut out, prev_end, d.offset);
        let window = &raw[(d.offset / 8) as usize..d.end().div_ceil(8) as usize];
        let before = out.len() as u64;
        puff(window, (d.offset % 8) as u32, &mut out, before + pl)?;
        if out.len() as u64 - before != pl {
            return Err(bad(format!(
                "the deflate at bit {} puffs to {} bytes, the patch records {pl}",
                d.offset,
                out.len() as u64 - before
            )));
        }
        prev_end = d.end();
    }
    push_gap(raw, &mut out, prev_end, raw_len * 8);
    debug_assert_eq!(out.len() as u64, info.puff_length);
    Ok(out)
}

/// The raw bytes of the puffed stream `puffed` laid out as `info` says.
pub fn huffed_bytes(puffed: &[u8], info: &StreamInfo) -> Result<Vec<u8>, FormatError> {
    let raw_len = info.raw_len().map_err(bad)?;
    if puffed.len() as u64 != info.puff_length {
        return Err(bad("the patched puffed stream has the wrong length"));
    }
    let mut out = vec![0u8; raw_len as usize];
    let mut pos = 0usize;
    let gap = |out: &mut [u8], pos: &mut usize, a: u64, b: u64| {
        if a == b {
            return;
        }
        let (first, last) = (a / 8, b.div_ceil(8) - 1);
        for k in first..=last {
            let lo = if k == first { a % 8 } else { 0 };
            let hi = if k == last && !b.is_multiple_of(8) {
                b % 8
            } else {
                8
            };
            let mask = ((1u16 << (hi - lo)) - 1) as u8;
            out[k as usize] |= (puffed[*pos] & mask) << lo;
            *pos += 1;
        }
    };
    let mut prev_end = 0u64;
    for (d, &(po, pl)) in info.deflates.iter().zip(&info.puffs) {
        gap(&mut out, &mut pos, prev_end, d.offset);
        let (bytes, bits) = huff(
            &puffed[po as usize..(po + pl) as usize],
            (d.offset % 8) as u32,
        )?;
        if bits != d.length {
            return Err(bad(format!(
                "the puff at byte {po} huffs to {bits} bits, the patch's deflate has {}",
                d.length
            )));
        }
        for (o, b) in out[(d.offset / 8) as usize..].iter_mut().zip(&bytes) {
            *o |= b;
        }
        pos = (po + pl) as usize;
        prev_end = d.end();
    }
    gap(&mut out, &mut pos, prev_end, raw_len * 8);
    Ok(out)
}

/// A parsed puffin patch.
#[derive(Debug, Clone)]
pub struct Patch<'a> {
    /// The source stream's layout.
    pub src: StreamInfo,
    /// The destination stream's layout.
    pub dst: StreamInfo,
    /// The bsdiff patch from the source's puffed view to the destination's.
    pub inner: &'a [u8],
}

impl<'a> Patch<'a> {
    /// Parses a patch (`PUF1`, header length, header, bsdiff patch).
    pub fn parse(data: &'a [u8]) -> Result<Self, FormatError> {
        if data.len() < 8 {
            return Err(FormatError::Truncated {
                what: "puffin patch",
                need: 8 - data.len() as u64,
                have: data.len() as u64,
            });
        }
        if &data[..4] != b"PUF1" {
            return Err(bad("not a puffin patch (no PUF1)"));
        }
        let n = u32::from_be_bytes(data[4..8].try_into().expect("4 bytes")) as u64;
        if n > data.len() as u64 - 8 {
            return Err(FormatError::Truncated {
                what: "puffin patch header",
                need: n - (data.len() as u64 - 8),
                have: data.len() as u64 - 8,
            });
        }
        let h = proto::PatchHeader::decode(&data[8..8 + n as usize])
            .map_err(|e| bad(format!("patch header: {e}")))?;
        if h.r#type != 0 {
            return Err(bad(format!(
                "a patch of type {} (zucchini), which this reader does not apply",
                h.r#type
            )));
        }
        Ok(Patch {
            src: StreamInfo::from_proto(h.src, "source")?,
            dst: StreamInfo::from_proto(h.dst, "destination")?,
            inner: &data[8 + n as usize..],
        })
    }

    /// Bytes of the destination it writes.
    pub fn dst_len(&self) -> u64 {
        self.dst.raw_len().expect("checked by parse")
    }
}

/// Applies a puffin patch to `src`, writing `out` (which must be at least
/// the destination's length; the rest stays zero).
pub fn apply(data: &[u8], src: &[u8], out: &mut [u8]) -> Result<(), FormatError> {
    let p = Patch::parse(data)?;
    let dst_len = p.dst_len();
    if dst_len > out.len() as u64 {
        return Err(bad(format!(
            "the patch writes {dst_len} bytes, the operation's destination holds {}",
            out.len()
        )));
    }
    let view = puffed_view(src, &p.src)?;
    let mut puffed = vec![0u8; p.dst.puff_length as usize];
    crate::payload::ops::decode_bsdiff(p.inner, &view, &mut puffed)?;
    let bytes = huffed_bytes(&puffed, &p.dst)?;
    out[..bytes.len()].copy_from_slice(&bytes);
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A zlib deflate of `data` at `level` (flate2), raw.
    fn deflate(data: &[u8], level: u32) -> Vec<u8> {
        use std::io::Write as _;
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(level));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn text(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| {
                b"the quick brown fox jumps over the lazy dog; "[i % 45] ^ ((i / 997) as u8 & 1)
            })
            .collect()
    }

    #[test]
    fn puff_then_huff_gives_the_same_bits() {
        for (data, level) in [
            (text(20000), 9),
            (text(3000), 1),
            (vec![7u8; 100000], 6),
            (text(50), 0),
            (Vec::new(), 6),
        ] {
            let d = deflate(&data, level);
            let mut p = Vec::new();
            puff(&d, 0, &mut p, MAX_PUFF).unwrap();
            let (back, _) = huff(&p, 0).unwrap();
            assert_eq!(back, d, "level {level}, {} bytes", data.len());
        }
    }

    /// A puffin test vector of `testdata/puffin/`.
    pub(crate) fn vector(name: &str) -> Vec<u8> {
        let p = format!("{}/testdata/puffin/{name}.hex", env!("CARGO_MANIFEST_DIR"));
        let t = std::fs::read_to_string(&p).unwrap();
        let t = t.trim();
        (0..t.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&t[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The layout of `deflates` in `raw` ([`layout`]).
    fn info(raw: &[u8], deflates: &[(u64, u64)]) -> StreamInfo {
        let extents: Vec<BitExtent> = deflates
            .iter()
            .map(|&(offset, length)| BitExtent { offset, length })
            .collect();
        layout(raw, &extents).unwrap().0
    }

    #[test]
    fn puffins_block_vectors() {
        for name in [
            "dynamic",
            "uncompressed",
            "zero_len_uncompressed",
            "one_literal_fixed",
            "empty_fixed",
            "fixed_5_literals",
            "nonfinal_one_literal",
            "two_blocks_no_final",
            "two_blocks_first_final",
            "two_blocks_both_final",
        ] {
            let d = vector(&format!("{name}_deflate"));
            let want = vector(&format!("{name}_puff"));
            let mut p = Vec::new();
            puff(&d, 0, &mut p, MAX_PUFF).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(p, want, "{name}: puff");
            assert_eq!(huff(&want, 0).unwrap().0, d, "{name}: huff");
        }
        for name in ["invalid_stored_len", "invalid_block_type"] {
            let mut p = Vec::new();
            assert!(
                puff(&vector(&format!("{name}_deflate")), 0, &mut p, MAX_PUFF).is_err(),
                "{name}"
            );
        }
        // The problematic cache: puffs, and huffs back to its bits.
        let raw = vector("problematic_cache");
        let i = info(&raw, &[(2, 606)]);
        let view = puffed_view(&raw, &i).unwrap();
        assert_eq!(huffed_bytes(&view, &i).unwrap(), raw);
    }

    #[test]
    fn puffins_stream_vectors() {
        let gaps = [
            (0, 18),
            (18, 18),
            (37, 18),
            (57, 18),
            (75, 0),
            (78, 18),
            (96, 18),
            (122, 18),
            (140, 18),
            (166, 18),
            (186, 18),
            (206, 18),
            (232, 18),
        ];
        for (raw, puffs, deflates) in [
            ("gap_deflates", "gap_puffs", &gaps[..]),
            (
                "sample1_deflates",
                "sample1_puffs",
                &[(16, 50), (80, 10), (96, 18)][..],
            ),
            (
                "sample2_deflates",
                "sample2_puffs",
                &[(0, 50), (72, 80), (152, 18)][..],
            ),
        ] {
            let raw = vector(raw);
            let i = info(&raw, deflates);
            let view = puffed_view(&raw, &i).unwrap();
            assert_eq!(view, vector(puffs), "{puffs}");
            assert_eq!(huffed_bytes(&view, &i).unwrap(), raw, "{puffs}: huffed");
        }
    }

    #[test]
    fn puffins_patch_vectors() {
        let (s1, s2) = (vector("sample1_deflates"), vector("sample2_deflates"));
        for (patch, src, want) in [
            ("patch_1_to_2", &s1, s2.clone()),
            ("patch_8_to_9_bsdiff40", &s1, s2.clone()),
            ("patch_2_to_1", &s2, s1.clone()),
            ("patch_1_to_empty", &s1, Vec::new()),
            ("patch_1_to_nodeflate", &s1, vec![0x0b, 0x16, 0x21, 0x2c]),
        ] {
            let data = vector(patch);
            let p = Patch::parse(&data).unwrap();
            assert_eq!(p.dst_len(), want.len() as u64, "{patch}");
            let mut out = vec![0u8; want.len()];
            apply(&data, src, &mut out).unwrap_or_else(|e| panic!("{patch}: {e}"));
            assert_eq!(out, want, "{patch}");
            // Every truncation is refused; no damage panics.
            for cut in 0..data.len() {
                let mut o = vec![0u8; want.len()];
                assert!(
                    apply(&data[..cut], src, &mut o).is_err(),
                    "{patch} cut at {cut}"
                );
            }
            for at in 0..data.len() {
                let mut d = data.clone();
                d[at] ^= 0x10;
                let mut o = vec![0u8; want.len() + 64];
                let _ = apply(&d, src, &mut o);
            }
        }
    }

    #[test]
    fn stored_block_by_hand() {
        // Final stored block of 5 bytes: header bits 1, 00, then 5 padding bits.
        let d = [0x01, 0x05, 0x00, 0xfa, 0xff, b'h', b'e', b'l', b'l', b'o'];
        let mut p = Vec::new();
        puff(&d, 0, &mut p, MAX_PUFF).unwrap();
        assert_eq!(
            p,
            [0x00, 0x00, 0x80, 0x04, b'h', b'e', b'l', b'l', b'o', 0xff, 0x81]
        );
        assert_eq!(huff(&p, 0).unwrap().0, d);
    }

    #[test]
    fn damaged_puffs_and_deflates_are_errors_not_panics() {
        let d = deflate(&text(5000), 9);
        let mut p = Vec::new();
        puff(&d, 0, &mut p, MAX_PUFF).unwrap();
        for cut in 0..p.len().min(400) {
            let _ = huff(&p[..cut], 3);
        }
        for at in 0..p.len().min(300) {
            let mut q = p.clone();
            q[at] ^= 0x5a;
            let _ = huff(&q, 0);
        }
        for at in 0..d.len().min(300) {
            let mut q = d.clone();
            q[at] ^= 0x21;
            let mut out = Vec::new();
            let _ = puff(&q, 0, &mut out, 1 << 20);
        }
        // A limit stops a puff that grows too long.
        let mut small = Vec::new();
        assert!(puff(&d, 0, &mut small, 100).is_err());
    }
}
