//! Relocation tables of the ELF64 files an image holds, for
//! SOURCE_FIELD_DELTA, and their executable sections, for
//! SOURCE_BRANCH_DELTA.
//!
//! Files start at block boundaries in the filesystems romdelta meets, and
//! most are stored in consecutive blocks. So a block that starts with an
//! ELF64 little-endian header is taken as the start of such a file, and
//! its section headers (read at their file offsets from there) give the
//! image bytes of its `SHT_RELA` sections. Nothing here needs to be right
//! for a package to be correct (the field transform is a bijection of any
//! bytes): a wrong guess only makes a patch that is not chosen. Every read
//! is bounded by the image and by `MAX_FILE`.

use romdelta_format::{branchdelta::Arch, fielddelta::Range, Extent, BLOCK_SIZE};
use romdelta_rom::Partition;

/// Bytes of an ELF64 relocation entry (`Elf64_Rela`).
pub const STRIDE: u8 = 24;
/// Largest file offset a section may have.
const MAX_FILE: u64 = 256 << 20;
/// Most section headers read per file.
const MAX_SECTIONS: u64 = 1 << 16;
const SHT_RELA: u32 = 4;

/// Relocation tables of an image: `(first byte, entries)`, in order, not
/// overlapping.
#[derive(Debug, Default)]
pub struct Tables(Vec<(u64, u64)>);

fn le<const N: usize>(b: &[u8], at: u64) -> Option<[u8; N]> {
    let at = usize::try_from(at).ok()?;
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}
fn u16_at(b: &[u8], at: u64) -> Option<u64> {
    le::<2>(b, at).map(|v| u16::from_le_bytes(v) as u64)
}
fn u32_at(b: &[u8], at: u64) -> Option<u32> {
    le::<4>(b, at).map(u32::from_le_bytes)
}
fn u64_at(b: &[u8], at: u64) -> Option<u64> {
    le::<8>(b, at).map(u64::from_le_bytes)
}

/// The relocation tables of the ELF64 file whose header is at `base`.
fn file_tables(b: &[u8], base: u64, out: &mut Vec<(u64, u64)>) -> Option<()> {
    if le::<6>(b, base)? != *b"\x7fELF\x02\x01" {
        return None;
    }
    let shoff = u64_at(b, base + 0x28)?;
    let (entsize, num) = (u16_at(b, base + 0x3a)?, u16_at(b, base + 0x3c)?);
    if entsize != 64 || num == 0 || num > MAX_SECTIONS || shoff > MAX_FILE {
        return None;
    }
    for i in 0..num {
        let sh = base + shoff + i * 64;
        let (kind, off) = (u32_at(b, sh + 4)?, u64_at(b, sh + 0x18)?);
        let (size, es) = (u64_at(b, sh + 0x20)?, u64_at(b, sh + 0x38)?);
        if kind == SHT_RELA
            && es == STRIDE as u64
            && size >= 2 * es
            && off <= MAX_FILE
            && size <= MAX_FILE
        {
            let start = base + off;
            if start + size <= b.len() as u64 {
                out.push((start, size / es));
            }
        }
    }
    Some(())
}

/// `SHF_EXECINSTR`.
const SHF_EXECINSTR: u64 = 4;
/// `SHT_NOBITS`: a section without file bytes.
const SHT_NOBITS: u32 = 8;

/// The instruction set and executable sections (`(first byte, length)`,
/// from `base` on, in the order of the section headers) of the ELF64
/// little-endian file whose header is at `base`, when it is x86-64 or
/// AArch64 code.
pub fn code_sections(b: &[u8], base: u64) -> Option<(Arch, Vec<(u64, u64)>)> {
    if le::<6>(b, base)? != *b"\x7fELF\x02\x01" {
        return None;
    }
    let arch = match u16_at(b, base + 0x12)? {
        62 => Arch::X86_64,
        183 => Arch::Aarch64,
        _ => return None,
    };
    let shoff = u64_at(b, base + 0x28)?;
    let (entsize, num) = (u16_at(b, base + 0x3a)?, u16_at(b, base + 0x3c)?);
    if entsize != 64 || num == 0 || num > MAX_SECTIONS || shoff > MAX_FILE {
        return None;
    }
    let mut out = Vec::new();
    for i in 0..num {
        let sh = base + shoff + i * 64;
        let (kind, flags) = (u32_at(b, sh + 4)?, u64_at(b, sh + 8)?);
        let (off, size) = (u64_at(b, sh + 0x18)?, u64_at(b, sh + 0x20)?);
        if kind != SHT_NOBITS
            && flags & SHF_EXECINSTR != 0
            && size > 0
            && off <= MAX_FILE
            && size <= MAX_FILE
        {
            out.push((base + off, size));
        }
    }
    (!out.is_empty()).then_some((arch, out))
}

/// Executable sections of the ELF64 files an image holds (those starting at
/// a block), by instruction set.
#[derive(Debug, Default)]
pub struct Code(Vec<(u64, u64, Arch)>);

impl Code {
    /// Finds the code of every ELF64 file starting at a block of `p`.
    pub fn find(p: &Partition) -> Code {
        let mut found = Vec::new();
        each_elf_start(p, |b, block| {
            if let Some((arch, v)) = code_sections(b, block) {
                let n = b.len() as u64;
                found.extend(
                    v.into_iter()
                        .filter(|&(s, l)| s + l <= n)
                        .map(|(s, l)| (s, l, arch)),
                );
            }
        });
        Code(disjoint(found))
    }

    /// Whether no code was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The code within the image bytes of `extents` as ranges of the
    /// concatenation of those bytes, with the instruction set most of them
    /// are (`None` when there is none).
    pub fn ranges_in(&self, extents: &[Extent]) -> Option<(Arch, Vec<(u64, u64)>)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut bytes = [0u64; 2];
        let mut pos = 0u64;
        for e in extents {
            let (lo, hi) = (e.start_block * BLOCK_SIZE, e.end_block() * BLOCK_SIZE);
            let first = self.0.partition_point(|&(s, n, _)| s + n <= lo);
            for &(s, n, arch) in self.0[first..].iter().take_while(|&&(s, _, _)| s < hi) {
                let (a, b) = (s.max(lo), (s + n).min(hi));
                if a < b {
                    bytes[(arch == Arch::Aarch64) as usize] += b - a;
                    let start = pos + a - lo;
                    match out.last_mut() {
                        Some(l) if l.0 + l.1 == start => l.1 += b - a,
                        _ => out.push((start, b - a)),
                    }
                }
            }
            pos += hi - lo;
        }
        let arch = if bytes[1] > bytes[0] {
            Arch::Aarch64
        } else {
            Arch::X86_64
        };
        (!out.is_empty()).then_some((arch, out))
    }
}

/// Calls `f(bytes, block)` for every block of `p` that starts as an ELF
/// file may (`0x7f`), a pass piece at a time, releasing each piece's pages
/// once it is read and all of them at the end.
fn each_elf_start(p: &Partition, mut f: impl FnMut(&[u8], u64)) {
    let b = p.bytes();
    let piece = crate::PASS_PIECE as u64;
    let mut at = 0u64;
    while at < b.len() as u64 {
        let end = (at + piece).min(b.len() as u64);
        let mut block = at;
        while block < end {
            if b[block as usize] == 0x7f {
                f(b, block);
            }
            block += BLOCK_SIZE;
        }
        p.release(at, end - at);
        at = end;
    }
    p.release_all();
}

/// `(start, length, …)` ranges sorted, each kept when it starts after the
/// ones kept before end.
fn disjoint<T: Ord + Copy>(mut v: Vec<(u64, u64, T)>) -> Vec<(u64, u64, T)> {
    v.sort_unstable();
    let mut out: Vec<(u64, u64, T)> = Vec::with_capacity(v.len());
    for r in v {
        if out.last().is_none_or(|l| r.0 >= l.0 + l.1) {
            out.push(r);
        }
    }
    out
}

impl Tables {
    /// Finds the tables of every ELF64 file starting at a block of `p`.
    pub fn find(p: &Partition) -> Tables {
        let mut found = Vec::new();
        each_elf_start(p, |b, block| {
            let _ = file_tables(b, block, &mut found);
        });
        found.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(found.len());
        for (s, n) in found {
            if out
                .last()
                .is_none_or(|&(ps, pn)| s >= ps + pn * STRIDE as u64)
            {
                out.push((s, n));
            }
        }
        Tables(out)
    }

    /// Whether no table was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The whole entries of tables within the image bytes of `extents`, as
    /// ranges of the concatenation of those bytes.
    pub fn ranges_in(&self, extents: &[Extent]) -> Vec<Range> {
        let stride = STRIDE as u64;
        let mut out = Vec::new();
        let mut pos = 0u64;
        for e in extents {
            let (lo, hi) = (e.start_block * BLOCK_SIZE, e.end_block() * BLOCK_SIZE);
            let first = self.0.partition_point(|&(s, n)| s + n * stride <= lo);
            for &(s, n) in self.0[first..].iter().take_while(|&&(s, _)| s < hi) {
                let k0 = if s >= lo {
                    0
                } else {
                    (lo - s).div_ceil(stride)
                };
                let k1 = n.min(hi.saturating_sub(s) / stride);
                if k1 >= k0 + 2 {
                    out.push(Range {
                        offset: pos + s + k0 * stride - lo,
                        entries: k1 - k0,
                    });
                }
            }
            pos += hi - lo;
        }
        out
    }
}

/// The relocation tables of a partition's source and target images.
#[derive(Debug, Default)]
pub struct FieldTables {
    /// In the source image.
    pub src: Tables,
    /// In the target image.
    pub dst: Tables,
}

impl FieldTables {
    /// Finds both; `None` when either image has none.
    pub fn find(src: &Partition, dst: &Partition) -> Option<FieldTables> {
        let (s, d) = rayon::join(|| Tables::find(src), || Tables::find(dst));
        (!s.is_empty() && !d.is_empty()).then_some(FieldTables { src: s, dst: d })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_cut_to_whole_entries_within_the_extents() {
        // A table of 1000 entries from byte 4096 + 100 on.
        let t = Tables(vec![(4096 + 100, 1000)]);
        assert_eq!(
            t.ranges_in(&[Extent::new(1, 2)]),
            [Range {
                offset: 100,
                entries: (8192 - 100) / 24
            }]
        );
        // From the third block: the first whole entry after it.
        let r = t.ranges_in(&[Extent::new(0, 1), Extent::new(3, 2)]);
        let k0 = (3 * 4096 - 4196u64).div_ceil(24);
        let k1 = (5 * 4096 - 4196u64) / 24;
        assert_eq!(
            r,
            [Range {
                offset: 4096 + 4196 + k0 * 24 - 3 * 4096,
                entries: k1 - k0
            }]
        );
        assert!(t.ranges_in(&[Extent::new(20, 4)]).is_empty());
        assert!(Tables::default().ranges_in(&[Extent::new(0, 9)]).is_empty());
    }

    #[test]
    fn code_is_cut_to_the_extents_and_named_by_its_larger_part() {
        let c = Code(disjoint(vec![
            (4096 + 10, 5000, Arch::X86_64),
            (4 * 4096, 100, Arch::Aarch64),
            (4 * 4096 + 50, 10, Arch::X86_64),
        ]));
        // The overlapping third range is left out.
        assert_eq!(c.0.len(), 2);
        let (arch, r) = c
            .ranges_in(&[Extent::new(1, 1), Extent::new(2, 3)])
            .unwrap();
        assert_eq!(arch, Arch::X86_64);
        // One range over both extents (they are consecutive in the
        // concatenation), then the AArch64 one.
        assert_eq!(r, [(10, 5000), (3 * 4096, 100)]);
        let (arch, r) = c.ranges_in(&[Extent::new(4, 1)]).unwrap();
        assert_eq!((arch, r), (Arch::Aarch64, vec![(0, 100)]));
        assert!(c.ranges_in(&[Extent::new(9, 3)]).is_none());
        // A file's header: x86-64 with one executable section.
        let mut f = vec![0u8; 4096];
        f[..6].copy_from_slice(b"\x7fELF\x02\x01");
        f[0x12] = 62;
        f[0x28..0x30].copy_from_slice(&1024u64.to_le_bytes());
        f[0x3a] = 64;
        f[0x3c] = 2;
        let sh = 1024 + 64;
        f[sh + 4] = 1;
        f[sh + 8] = 6;
        f[sh + 0x18..sh + 0x20].copy_from_slice(&2048u64.to_le_bytes());
        f[sh + 0x20..sh + 0x28].copy_from_slice(&300u64.to_le_bytes());
        assert_eq!(
            code_sections(&f, 0),
            Some((Arch::X86_64, vec![(2048, 300)]))
        );
        f[0x12] = 40;
        assert_eq!(code_sections(&f, 0), None);
    }
}
