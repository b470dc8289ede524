//! SOURCE_BRANCH_DELTA operation data: an inner patch from the source
//! bytes to destination bytes whose relative branch and call
//! displacements were rewritten as the source would predict them.
//!
//! When functions move between two builds, every relative call to them
//! holds a new displacement, and a byte-level patch pays for each one. Here
//! the references are found in the *source* bytes (which the applier has),
//! in the source's executable ranges the header names: x86-64 `E8`/`E9`
//! rel32 calls and jumps, `0F 80..8F` conditional jumps and RIP-relative
//! `mov`/`lea`/`cmp`…; AArch64 `B`/`BL` (imm26), `B.cond` and
//! `CBZ`/`CBNZ` (imm19), and `ADRP` with the `ADD`/`LDR`/`STR` after it
//! that adds the offset within the page. An alignment (segments of source bytes that sit,
//! shifted, in the destination) carries each reference and its target to
//! the destination: a reference at `q` in a segment shifted by `dq` whose
//! target lies in a segment shifted by `dt` is expected at `q + dq` with
//! its displacement grown by `dt - dq`. The generator subtracts that
//! correction from the destination's field there before diffing (so an
//! unchanged call to a moved function reads as the source's bytes) and the
//! applier adds it back after the inner patch. The transform is a
//! bijection of any destination bytes (corrections are added modulo the
//! field's width at positions chosen from the source and the header
//! alone, which never overlap): a wrong guess only makes a patch that is
//! not chosen.
//!
//! Wire form: `varint header_len · header · inner` (inner: SOURCE_ZSTD or
//! SOURCE_BSDIFF_SPARSE data from the source to the transformed
//! destination). Header: `u8 version (1) · u8 architecture (1 x86-64,
//! 2 AArch64) · u8 inner kind · varint code range count · ranges ·
//! varint segment count · segments`. A code range is `varint gap (from the
//! end of the previous range) · varint length (≥ 1)` in the source bytes;
//! a segment is `varint gap (from the end of the previous segment in the
//! destination) · varint length (≥ 1) · varint zigzag(shift − previous
//! shift)`, where the segment's destination bytes `[d, d + len)` come from
//! the source's `[d − shift, d − shift + len)`. Ranges and segments lie
//! within their bytes, in order, without overlap, and no two segments
//! overlap in the source either.

use crate::{FormatError, OpKind, Reader, Writer};

/// Header layout version.
const VERSION: u8 = 1;

/// The instruction set whose references are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arch {
    /// x86-64 (`E8`/`E9` rel32, `0F 8x` rel32, RIP-relative disp32).
    X86_64,
    /// AArch64 (`B`/`BL` imm26, `B.cond`/`CBZ`/`CBNZ` imm19, `ADRP` and
    /// the page offset after it).
    Aarch64,
}

impl Arch {
    fn code(self) -> u8 {
        match self {
            Arch::X86_64 => 1,
            Arch::Aarch64 => 2,
        }
    }
}

/// Source bytes `[src, src + len)` found, unchanged or nearly, at
/// destination bytes `[dst, dst + len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// First source byte.
    pub src: u64,
    /// First destination byte.
    pub dst: u64,
    /// Bytes.
    pub len: u64,
}

/// The header of a SOURCE_BRANCH_DELTA operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Instruction set of the code ranges.
    pub arch: Arch,
    /// Kind of the inner patch.
    pub inner: OpKind,
    /// Executable ranges of the source bytes, `(offset, length)`, in
    /// order, not overlapping.
    pub code: Vec<(u64, u64)>,
    /// The alignment, in destination order, overlapping neither in the
    /// destination nor in the source.
    pub segments: Vec<Segment>,
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}
fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn bad(what: &'static str, msg: String) -> FormatError {
    FormatError::invalid(what, msg)
}

impl Header {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(VERSION);
        w.u8(self.arch.code());
        w.u8(self.inner.code());
        w.varint(self.code.len() as u64);
        let mut end = 0;
        for &(off, len) in &self.code {
            w.varint(off - end);
            w.varint(len);
            end = off + len;
        }
        w.varint(self.segments.len() as u64);
        let (mut end, mut shift) = (0u64, 0i64);
        for s in &self.segments {
            let sh = s.dst as i64 - s.src as i64;
            w.varint(s.dst - end);
            w.varint(s.len);
            w.varint(zigzag(sh.wrapping_sub(shift)));
            (end, shift) = (s.dst + s.len, sh);
        }
        w.into_bytes()
    }

    fn decode(b: &[u8], src_len: u64, dst_len: u64) -> Result<Header, FormatError> {
        let mut r = Reader::new(b);
        let v = r.u8("branch delta version")?;
        if v != VERSION {
            return Err(bad("branch delta version", format!("unknown version {v}")));
        }
        let arch = match r.u8("branch delta architecture")? {
            1 => Arch::X86_64,
            2 => Arch::Aarch64,
            a => {
                return Err(bad(
                    "branch delta architecture",
                    format!("unknown code {a}"),
                ))
            }
        };
        let inner = OpKind::from_code(r.u8("branch delta inner kind")?)?;
        if !matches!(inner, OpKind::SourceZstd | OpKind::SourceBsdiffSparse) {
            return Err(bad(
                "branch delta inner kind",
                format!("{inner} cannot be an inner patch"),
            ));
        }
        let n = r.count("branch delta code ranges", 2, src_len)?;
        let mut code = r.vec_for::<(u64, u64)>(n);
        let mut end = 0u64;
        for _ in 0..n {
            let gap = r.varint("branch delta code range gap")?;
            let len = r.varint("branch delta code range length")?;
            let off = end.checked_add(gap);
            match off.and_then(|o| o.checked_add(len).map(|e| (o, e))) {
                Some((o, e)) if len >= 1 && e <= src_len => {
                    code.push((o, len));
                    end = e;
                }
                _ => {
                    return Err(bad(
                        "branch delta code range",
                        format!("{len} bytes after a gap of {gap} do not fit in {src_len} bytes (at least 1)"),
                    ))
                }
            }
        }
        let n = r.count("branch delta segments", 3, dst_len)?;
        let mut segments = r.vec_for::<Segment>(n);
        let (mut end, mut shift) = (0u64, 0i64);
        for _ in 0..n {
            let gap = r.varint("branch delta segment gap")?;
            let len = r.varint("branch delta segment length")?;
            let d = unzigzag(r.varint("branch delta segment shift")?);
            let sh = shift.wrapping_add(d);
            let dst = end.checked_add(gap);
            let dst_end = dst.and_then(|o| o.checked_add(len));
            let src = dst.and_then(|o| (o as i64).checked_sub(sh));
            let src_end = src.and_then(|s| s.checked_add(len as i64));
            match (dst, dst_end, src, src_end) {
                (Some(dst), Some(de), Some(s), Some(se))
                    if len >= 1 && de <= dst_len && s >= 0 && se as u64 <= src_len =>
                {
                    segments.push(Segment {
                        src: s as u64,
                        dst,
                        len,
                    });
                    (end, shift) = (de, sh);
                }
                _ => {
                    return Err(bad(
                        "branch delta segment",
                        format!(
                        "{len} bytes after a gap of {gap}, shifted by {sh}, do not fit in {src_len} source and {dst_len} destination bytes (at least 1)"
                    ),
                    ))
                }
            }
        }
        r.finish("branch delta header")?;
        let h = Header {
            arch,
            inner,
            code,
            segments,
        };
        let by_src = h.by_source();
        for w in by_src.windows(2) {
            let (a, b) = (h.segments[w[0]], h.segments[w[1]]);
            if a.src + a.len > b.src {
                return Err(bad(
                    "branch delta segment",
                    format!(
                        "source bytes {}..{} are in two segments",
                        b.src,
                        (a.src + a.len).min(b.src + b.len)
                    ),
                ));
            }
        }
        Ok(h)
    }

    /// Indices of the segments in source order.
    fn by_source(&self) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.segments.len()).collect();
        v.sort_unstable_by_key(|&i| self.segments[i].src);
        v
    }
}

/// The field of a reference: where its displacement lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// A little-endian 32-bit displacement at this byte of the instruction.
    Rel32(u8),
    /// A word-counted field of an AArch64 instruction word: `(low bit,
    /// width)`.
    A64(u8, u8),
    /// The 21-bit page count of an AArch64 `ADRP` (`immhi:immlo`).
    Adrp,
    /// The 12-bit offset of the AArch64 `ADD`/`LDR`/`STR` after an `ADRP`,
    /// counted in units of this many bytes.
    Lo12(u8),
}

/// The unit (in bytes) of the 12-bit offset of AArch64 word `w` when it
/// is an `ADD` (immediate, unshifted) or an unsigned-offset `LDR`/`STR`
/// of a 32- or 64-bit register, whose base register is `rn`.
fn lo12_unit(w: u32, rn: u32) -> Option<u8> {
    if (w >> 5) & 31 != rn {
        return None;
    }
    match w & 0xffc0_0000 {
        0x9100_0000 => Some(1),
        0xf940_0000 | 0xf900_0000 => Some(8),
        0xb940_0000 | 0xb900_0000 => Some(4),
        _ => None,
    }
}

/// A reference found in the source: the instruction at `at`, `len` bytes
/// long, whose field points at source byte `target`.
#[derive(Debug, Clone, Copy)]
struct Ref {
    at: u64,
    len: u64,
    field: Field,
    target: u64,
}

fn in_ranges(code: &[(u64, u64)], x: i64) -> bool {
    if x < 0 {
        return false;
    }
    let x = x as u64;
    let i = code.partition_point(|&(o, l)| o + l <= x);
    code.get(i).is_some_and(|&(o, _)| o <= x)
}

/// Calls `f` for every reference of `arch` in the code ranges of `src`
/// whose target lies in `[0, src.len())` (calls and jumps: in a code
/// range).
fn references(arch: Arch, src: &[u8], code: &[(u64, u64)], f: &mut dyn FnMut(Ref)) {
    let n = src.len() as i64;
    for &(off, len) in code {
        let (a, b) = (off as usize, (off + len) as usize);
        match arch {
            Arch::X86_64 => {
                let mut i = a;
                let disp =
                    |p: usize| i32::from_le_bytes(src[p..p + 4].try_into().expect("4")) as i64;
                while i < b {
                    let op = src[i];
                    // (field offset, instruction length, target must be code)
                    let cand = if (op == 0xe8 || op == 0xe9) && i + 5 <= b {
                        Some((1usize, 5usize, true))
                    } else if op == 0x0f && i + 6 <= b && (src[i + 1] & 0xf0) == 0x80 {
                        Some((2, 6, true))
                    } else if (op & 0xf0) == 0x40
                        && i + 7 <= b
                        && matches!(
                            src[i + 1],
                            0x8b | 0x8d | 0x89 | 0x3b | 0x39 | 0x03 | 0x2b | 0x85 | 0x63
                        )
                        && (src[i + 2] & 0xc7) == 0x05
                    {
                        Some((3, 7, false))
                    } else {
                        None
                    };
                    if let Some((fo, il, needs_code)) = cand {
                        let t = (i + il) as i64 + disp(i + fo);
                        let ok = if needs_code {
                            in_ranges(code, t)
                        } else {
                            (0..n).contains(&t)
                        };
                        if ok {
                            f(Ref {
                                at: i as u64,
                                len: il as u64,
                                field: Field::Rel32(fo as u8),
                                target: t as u64,
                            });
                            i += il;
                            continue;
                        }
                    }
                    i += 1;
                }
            }
            Arch::Aarch64 => {
                let mut i = a.next_multiple_of(4);
                while i + 4 <= b {
                    let w = u32::from_le_bytes(src[i..i + 4].try_into().expect("4"));
                    let field = if (w & 0x7c00_0000) == 0x1400_0000 {
                        Some((0u8, 26u8))
                    } else if (w & 0xff00_0010) == 0x5400_0000 || (w & 0x7e00_0000) == 0x3400_0000 {
                        Some((5, 19))
                    } else {
                        None
                    };
                    if (w & 0x9f00_0000) == 0x9000_0000 {
                        // ADRP, and the instruction after it when it adds
                        // the offset within the page.
                        let raw = ((w >> 5) & 0x7ffff) << 2 | (w >> 29) & 3;
                        let pages = ((raw << 11) as i32 >> 11) as i64;
                        let page = (i as i64 & !0xfff) + pages * 4096;
                        let next = (i + 8 <= b)
                            .then(|| u32::from_le_bytes(src[i + 4..i + 8].try_into().expect("4")));
                        let unit = next.and_then(|x| lo12_unit(x, w & 31).map(|u| (x, u)));
                        let t =
                            page + unit.map_or(0, |(x, u)| ((x >> 10) & 0xfff) as i64 * u as i64);
                        if (0..n).contains(&t) {
                            f(Ref {
                                at: i as u64,
                                len: if unit.is_some() { 8 } else { 4 },
                                field: Field::Adrp,
                                target: t as u64,
                            });
                            if let Some((_, u)) = unit {
                                f(Ref {
                                    at: i as u64 + 4,
                                    len: 4,
                                    field: Field::Lo12(u),
                                    target: t as u64,
                                });
                                i += 8;
                                continue;
                            }
                        }
                    } else if let Some((lo, width)) = field {
                        let raw = (w >> lo) & ((1u32 << width) - 1);
                        let imm = ((raw << (32 - width)) as i32 >> (32 - width)) as i64;
                        let t = i as i64 + imm * 4;
                        if in_ranges(code, t) {
                            f(Ref {
                                at: i as u64,
                                len: 4,
                                field: Field::A64(lo, width),
                                target: t as u64,
                            });
                        }
                    }
                    i += 4;
                }
            }
        }
    }
}

/// The segment (by source-order index list `order`) holding source bytes
/// `[x, x + len)`.
fn segment_of(h: &Header, order: &[usize], x: u64, len: u64) -> Option<Segment> {
    let k = order.partition_point(|&i| h.segments[i].src <= x);
    let s = h.segments[*order.get(k.checked_sub(1)?)?];
    (x + len <= s.src + s.len).then_some(s)
}

/// Calls `f(position, field, correction)` for every destination field
/// the header corrects: corrections in bytes (x86-64) or words
/// (AArch64), never zero, at positions that never overlap.
fn corrections(h: &Header, src: &[u8], f: &mut dyn FnMut(usize, Field, i64)) {
    let order = h.by_source();
    references(h.arch, src, &h.code, &mut |r| {
        let Some(sq) = segment_of(h, &order, r.at, r.len) else {
            return;
        };
        let Some(st) = segment_of(h, &order, r.target, 1) else {
            return;
        };
        let dq = sq.dst as i64 - sq.src as i64;
        let dt = st.dst as i64 - st.src as i64;
        let c = dt - dq;
        let (q, t) = (r.at as i64, r.target as i64);
        let c = match r.field {
            Field::Rel32(_) => c,
            Field::A64(..) if c % 4 == 0 => c / 4,
            Field::A64(..) => 0,
            Field::Adrp => (((t + dt) >> 12) - ((q + dq) >> 12)) - ((t >> 12) - (q >> 12)),
            Field::Lo12(u) => {
                let (old, new) = (t & 0xfff, (t + dt) & 0xfff);
                if new % u as i64 == 0 {
                    (new - old) / u as i64
                } else {
                    0
                }
            }
        };
        if c != 0 {
            f((q + dq) as usize, r.field, c);
        }
    });
}

fn add(buf: &mut [u8], at: usize, field: Field, c: i64) {
    match field {
        Field::Rel32(fo) => {
            let p = at + fo as usize;
            let v = u32::from_le_bytes(buf[p..p + 4].try_into().expect("4"));
            buf[p..p + 4].copy_from_slice(&v.wrapping_add(c as u32).to_le_bytes());
        }
        Field::A64(lo, width) => {
            let w = u32::from_le_bytes(buf[at..at + 4].try_into().expect("4"));
            let mask = ((1u32 << width) - 1) << lo;
            let v = ((w & mask) >> lo).wrapping_add(c as u32) << lo;
            buf[at..at + 4].copy_from_slice(&((w & !mask) | (v & mask)).to_le_bytes());
        }
        Field::Adrp => {
            let w = u32::from_le_bytes(buf[at..at + 4].try_into().expect("4"));
            let raw = ((w >> 5) & 0x7ffff) << 2 | (w >> 29) & 3;
            let v = raw.wrapping_add(c as u32);
            let w = (w & !0x60ff_ffe0) | (v & 3) << 29 | ((v >> 2) & 0x7ffff) << 5;
            buf[at..at + 4].copy_from_slice(&w.to_le_bytes());
        }
        Field::Lo12(_) => add(buf, at, Field::A64(10, 12), c),
    }
}

/// Rewrites `dst` (the destination bytes) as the generator diffs them:
/// every field the header corrects, less its correction. `src` is the
/// source bytes and `h` must hold within them and `dst` (as [`decode`]
/// checks).
pub fn forward(h: &Header, src: &[u8], dst: &mut [u8]) {
    corrections(h, src, &mut |at, field, c| {
        add(dst, at, field, c.wrapping_neg())
    });
}

/// Undoes [`forward`].
pub fn inverse(h: &Header, src: &[u8], dst: &mut [u8]) {
    corrections(h, src, &mut |at, field, c| add(dst, at, field, c));
}

/// How many destination fields the header corrects.
pub fn corrected(h: &Header, src: &[u8]) -> usize {
    let mut n = 0;
    corrections(h, src, &mut |_, _, _| n += 1);
    n
}

/// Encodes SOURCE_BRANCH_DELTA data from its header and inner patch data.
pub fn encode(header: &Header, inner: &[u8]) -> Vec<u8> {
    crate::codec::headed(&header.encode(), inner)
}

/// Checks `header` against source and destination lengths as [`decode`]
/// does (for the generator, before [`forward`]).
pub fn check(header: &Header, src_len: u64, dst_len: u64) -> Result<(), FormatError> {
    Header::decode(&header.encode(), src_len, dst_len).map(|_| ())
}

/// Decodes SOURCE_BRANCH_DELTA data against `src` into exactly
/// `out.len()` bytes.
pub fn decode(data: &[u8], src: &[u8], out: &mut [u8]) -> Result<(), FormatError> {
    let (head, inner) = crate::codec::split_headed(
        data,
        [
            "branch delta header length",
            "branch delta header",
            "branch delta inner patch",
        ],
        u64::MAX,
    )?;
    let h = Header::decode(head, src.len() as u64, out.len() as u64)?;
    crate::ops::decode(h.inner, inner, src, out)?;
    inverse(&h, src, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed pseudo-random byte sequence (xorshift64 from `seed`).
    fn bytes(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// x86-64 "code": `n` functions of 64 bytes, each calling the next
    /// (`E8`) and jumping to the one after (`0F 84`), with filler between;
    /// in the target 16 bytes are inserted before function `insert_at`.
    fn x86(n: usize, insert_at: usize) -> (Vec<u8>, Vec<u8>) {
        let build = |ins: usize| {
            let start = |k: usize| (k * 64 + if k >= ins { 16 } else { 0 }) as i64;
            let mut v = Vec::new();
            for k in 0..n {
                if k == ins {
                    v.extend_from_slice(&[0x90; 16]);
                }
                let f = v.len() as i64;
                v.extend_from_slice(&[0x55, 0x48, 0x89, 0xe5]);
                let call = start(n - 1 - k) - (f + 4 + 5);
                v.push(0xe8);
                v.extend_from_slice(&(call as i32).to_le_bytes());
                let jcc = start((k + 2) % n) - (f + 9 + 6);
                v.extend_from_slice(&[0x0f, 0x84]);
                v.extend_from_slice(&(jcc as i32).to_le_bytes());
                v.extend_from_slice(&bytes(k as u64 + 7, 64 - 15));
            }
            v
        };
        (build(usize::MAX), build(insert_at))
    }

    fn header(src: &[u8], dst: &[u8], split: u64, arch: Arch) -> Header {
        Header {
            arch,
            inner: OpKind::SourceZstd,
            code: vec![(0, src.len() as u64)],
            segments: vec![
                Segment {
                    src: 0,
                    dst: 0,
                    len: split,
                },
                Segment {
                    src: split,
                    dst: split + 16,
                    len: dst.len() as u64 - split - 16,
                },
            ],
        }
    }

    fn op(h: &Header, src: &[u8], dst: &[u8]) -> Vec<u8> {
        let mut t = dst.to_vec();
        forward(h, src, &mut t);
        encode(h, &crate::ops::encode_source_zstd(src, &t, 19))
    }

    /// With the segments split at `split`, more than 1000 fields of `src`
    /// are corrected, `dst` decodes exactly, and the data is less than a
    /// quarter of a plain SOURCE_ZSTD of the same pair.
    fn moved_callees_cost_nothing(src: &[u8], dst: &[u8], split: u64, arch: Arch) {
        let h = header(src, dst, split, arch);
        assert!(corrected(&h, src) > 1000);
        let data = op(&h, src, dst);
        let mut out = vec![0xa5; dst.len()];
        decode(&data, src, &mut out).unwrap();
        assert_eq!(out, dst);
        let plain = crate::ops::encode_source_zstd(src, dst, 19);
        assert!(
            data.len() * 4 < plain.len(),
            "{} vs {}",
            data.len(),
            plain.len()
        );
    }

    #[test]
    fn moved_callees_cost_nothing_on_x86_64() {
        let (src, dst) = x86(2000, 1000);
        moved_callees_cost_nothing(&src, &dst, 1000 * 64, Arch::X86_64);
    }

    /// AArch64 "code": words that are `BL`/`B.cond`/`CBZ` to functions
    /// 16 words apart, with 4 words inserted before function `insert_at`.
    fn a64(n: usize, insert_at: usize) -> (Vec<u8>, Vec<u8>) {
        let build = |ins: usize| {
            let start = |k: usize| (k * 16 + if k >= ins { 4 } else { 0 }) as i64;
            let mut v: Vec<u32> = Vec::new();
            for k in 0..n {
                if k == ins {
                    v.extend_from_slice(&[0xd503_201f; 4]);
                }
                let f = v.len() as i64;
                let bl = (start((n - 1 - k) % n) - f) as u32 & 0x3ff_ffff;
                v.push(0x9400_0000 | bl);
                let bc = (start((k + 3) % n) - f - 1) as u32 & 0x7ffff;
                v.push(0x5400_0001 | bc << 5);
                let cbz = (start((k + 5) % n) - f - 2) as u32 & 0x7ffff;
                v.push(0xb400_0003 | cbz << 5);
                v.extend(bytes(k as u64, 52).chunks(4).map(|c| {
                    u32::from_le_bytes(c.try_into().unwrap()) & 0x0fff_ffff | 0x8000_0000
                }));
            }
            v.iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>()
        };
        (build(usize::MAX), build(insert_at))
    }

    #[test]
    fn moved_callees_cost_nothing_on_aarch64() {
        let (src, dst) = a64(2000, 700);
        moved_callees_cost_nothing(&src, &dst, 700 * 64, Arch::Aarch64);
    }

    #[test]
    fn the_transform_undoes_itself_on_any_bytes() {
        // Random sources and targets, sources dense with opcode bytes,
        // overlapping candidate patterns and instructions cut by the ends
        // of code ranges and segments.
        let mut fields = [0usize; 2];
        for seed in 0..40u64 {
            let n = 3000 + seed as usize * 37;
            let mut src = bytes(seed, n);
            if seed % 2 == 0 {
                // Instructions whose targets lie in the bytes, written at
                // steps shorter than themselves: they overlap and cut each
                // other.
                let r = bytes(seed + 77, n);
                let mut i = 0;
                while i + 8 <= n {
                    let disp = (r[i] as i32 * 11 - 1000) as u32;
                    let word = |top: u32, imm: u32| (top | (imm & 0x3ff_ffff)).to_le_bytes();
                    let pat: Vec<u8> = match r[i + 1] % 7 {
                        0 => [&[0xe8][..], &disp.to_le_bytes()].concat(),
                        1 => [&[0x0f, 0x85][..], &disp.to_le_bytes()].concat(),
                        2 => [&[0x48, 0x8d, 0x05][..], &disp.to_le_bytes()].concat(),
                        3 => word(0x9400_0000, disp / 4).to_vec(),
                        4 => word(0x5400_0000, (disp & 0x7ffff) << 5).to_vec(),
                        // ADRP x1 (page 0), then ADD x1, x1, #imm or LDR x2, [x1, #imm].
                        5 => [
                            0x9000_0001u32.to_le_bytes(),
                            (0x9100_0021 | (disp & 0xfff) << 10).to_le_bytes(),
                        ]
                        .concat(),
                        _ => [
                            0x9000_0001u32.to_le_bytes(),
                            (0xf940_0022 | (disp & 0xfff) << 10).to_le_bytes(),
                        ]
                        .concat(),
                    };
                    src[i..i + pat.len()].copy_from_slice(&pat);
                    i += 1 + r[i + 2] as usize % 6;
                }
            }
            let dst0 = bytes(seed + 1000, n + 64);
            for arch in [Arch::X86_64, Arch::Aarch64] {
                let cut = (seed as usize * 131) % n;
                let h = Header {
                    arch,
                    inner: OpKind::SourceZstd,
                    code: vec![
                        (1, cut as u64 / 2 + 1),
                        (cut as u64 / 2 + 3, (n - cut / 2 - 3) as u64),
                    ],
                    segments: vec![
                        Segment {
                            src: 0,
                            dst: 0,
                            len: cut as u64 + 1,
                        },
                        Segment {
                            src: cut as u64 + 1,
                            dst: cut as u64 + 50,
                            len: 7,
                        },
                        Segment {
                            src: cut as u64 + 13,
                            dst: cut as u64 + 61,
                            len: (n - cut - 13) as u64,
                        },
                    ],
                };
                check(&h, n as u64, dst0.len() as u64).unwrap();
                fields[(arch == Arch::Aarch64) as usize] += corrected(&h, &src);
                let mut d = dst0.clone();
                forward(&h, &src, &mut d);
                inverse(&h, &src, &mut d);
                assert_eq!(d, dst0, "seed {seed} {arch:?}");
                let data = op(&h, &src, &dst0);
                let mut out = vec![0; dst0.len()];
                decode(&data, &src, &mut out).unwrap();
                assert_eq!(out, dst0, "seed {seed} {arch:?}");
            }
        }
        assert!(fields[0] > 100 && fields[1] > 50, "{fields:?}");
    }

    /// The committed `branch_delta_decode` fuzz seeds (u16le destination
    /// length · u16le source length · source · data), checked here and
    /// written anew with `ROMDELTA_WRITE_FUZZ_SEEDS=1`.
    #[test]
    fn fuzz_seed_is_a_valid_operation() {
        let pairs = [
            ("seed-x86", Arch::X86_64, x86(60, 30)),
            ("seed-a64", Arch::Aarch64, a64(60, 20)),
        ];
        for (name, arch, (src, dst)) in pairs {
            let split = if arch == Arch::X86_64 {
                30 * 64
            } else {
                20 * 64
            };
            let h = header(&src, &dst, split, arch);
            assert!(corrected(&h, &src) > 10);
            let data = op(&h, &src, &dst);
            let mut out = vec![0; dst.len()];
            decode(&data, &src, &mut out).unwrap();
            assert_eq!(out, dst);
            let mut seed = Vec::new();
            seed.extend_from_slice(&(dst.len() as u16).to_le_bytes());
            seed.extend_from_slice(&(src.len() as u16).to_le_bytes());
            seed.extend_from_slice(&src);
            seed.extend_from_slice(&data);
            crate::check_fuzz_seed("branch_delta_decode", name, &seed);
        }
    }

    #[test]
    fn every_truncation_and_hostile_header_is_refused() {
        let (src, dst) = a64(300, 100);
        let h = header(&src, &dst, 100 * 64, Arch::Aarch64);
        let data = op(&h, &src, &dst);
        for cut in 0..data.len() {
            assert!(
                decode(&data[..cut], &src, &mut vec![0; dst.len()]).is_err(),
                "cut {cut}"
            );
        }
        let with = |f: &dyn Fn(&mut Header)| {
            let mut h = header(&src, &dst, 100 * 64, Arch::Aarch64);
            f(&mut h);
            decode(&encode(&h, &[]), &src, &mut vec![0; dst.len()])
                .unwrap_err()
                .to_string()
        };
        assert!(with(&|h| h.code[0].1 += 1).contains("do not fit"));
        assert!(with(&|h| h.code.push((src.len() as u64, 0))).contains("at least 1"));
        assert!(with(&|h| h.segments[1].len += 1).contains("do not fit"));
        assert!(with(&|h| h.segments[0].src = 1 << 40).contains("do not fit"));
        assert!(with(&|h| h.segments[0].len = 0).contains("at least 1"));
        assert!(with(&|h| h.segments[1].src = 10).contains("in two segments"));
        assert!(with(&|h| h.inner = OpKind::SourceBranchDelta).contains("cannot be an inner patch"));
        let mut bad = encode(&h, &[]);
        bad[2] = 9; // the architecture byte, after the one-byte length and the version
        assert!(decode(&bad, &src, &mut vec![0; dst.len()])
            .unwrap_err()
            .to_string()
            .contains("architecture"));
    }
}
