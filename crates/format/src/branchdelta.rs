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
//! `CBZ`/`CBNZ` (imm19). An alignment (segments of source bytes that sit,
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
    /// AArch64 (`B`/`BL` imm26, `B.cond`/`CBZ`/`CBNZ` imm19).
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
                    if let Some((lo, width)) = field {
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
        let at = (r.at as i64 + dq) as usize;
        match r.field {
            Field::Rel32(_) if c != 0 => f(at, r.field, c),
            Field::A64(..) if c != 0 && c % 4 == 0 => f(at, r.field, c / 4),
            _ => {}
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
    let head = header.encode();
    let mut w = Writer::new();
    w.varint(head.len() as u64);
    w.bytes(&head);
    w.bytes(inner);
    w.into_bytes()
}

/// Checks `header` against source and destination lengths as [`decode`]
/// does (for the generator, before [`forward`]).
pub fn check(header: &Header, src_len: u64, dst_len: u64) -> Result<(), FormatError> {
    Header::decode(&header.encode(), src_len, dst_len).map(|_| ())
}

/// Decodes SOURCE_BRANCH_DELTA data against `src` into exactly
/// `out.len()` bytes.
pub fn decode(data: &[u8], src: &[u8], out: &mut [u8]) -> Result<(), FormatError> {
    let mut r = Reader::new(data);
    let head_len = r.varint("branch delta header length")?;
    let head = r.take(head_len, "branch delta header")?;
    let inner = r.take(r.remaining() as u64, "branch delta inner patch")?;
    let h = Header::decode(head, src.len() as u64, out.len() as u64)?;
    crate::ops::decode(h.inner, inner, src, out)?;
    inverse(&h, src, out);
    Ok(())
}
