//! SOURCE_FIELD_DELTA: relocation tables of ELF files in an image are
//! delta-coded before diffing, so entries shifted by moved code cost
//! nothing; round trips stay exact, and the transform is chosen only where
//! it is smaller.

use crate::common::{fast_opts, noise, round_trip};
use romdelta_format::{OpKind, Package};

/// An ELF64 relocatable-like file: a header, 64 KiB of "code", one
/// SHT_RELA section of `n` entries whose offsets ascend (those from
/// `shift_from` on moved by 40 bytes, as after an insertion), and the
/// section headers.
fn elf(n: usize, shift_from: usize, code_seed: u64) -> Vec<u8> {
    let code = noise(code_seed, 64 << 10);
    let rela_off = 64 + code.len();
    let mut f = vec![0u8; 64];
    f[..6].copy_from_slice(b"\x7fELF\x02\x01");
    f.extend_from_slice(&code);
    for k in 0..n {
        let off = 16 * k as u64 + if k >= shift_from { 40 } else { 0 };
        f.extend_from_slice(&off.to_le_bytes());
        f.extend_from_slice(&(((k % 97) as u64) << 32 | 2).to_le_bytes());
        f.extend_from_slice(&(-4i64).to_le_bytes());
    }
    let shoff = f.len() as u64;
    f.extend_from_slice(&[0u8; 64]);
    let mut sh = [0u8; 64];
    sh[4..8].copy_from_slice(&4u32.to_le_bytes());
    sh[0x18..0x20].copy_from_slice(&(rela_off as u64).to_le_bytes());
    sh[0x20..0x28].copy_from_slice(&((n * 24) as u64).to_le_bytes());
    sh[0x38..0x40].copy_from_slice(&24u64.to_le_bytes());
    f.extend_from_slice(&sh);
    f[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
    f[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
    f[0x3c..0x3e].copy_from_slice(&2u16.to_le_bytes());
    f
}

/// An image of filler with the file at block 8.
fn image(file: &[u8]) -> Vec<u8> {
    let mut img = noise(99, 8 * 4096);
    img.extend_from_slice(file);
    img.resize(img.len().next_multiple_of(4096) + 4 * 4096, 0x11);
    img
}

fn kinds(pkg: &[u8]) -> Vec<OpKind> {
    let p = Package::parse(pkg).unwrap();
    p.manifest.partitions[0]
        .operations
        .iter()
        .map(|o| o.kind)
        .collect()
}

#[test]
fn shifted_relocation_tables_cost_little_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let a = image(&elf(20_000, usize::MAX, 5));
    let mut b_file = elf(20_000, 7_000, 5);
    b_file[5000..5016].copy_from_slice(b"a changed insn..");
    let b = image(&b_file);
    let opts = fast_opts();
    assert_eq!(round_trip(dir.path(), &a, &b, &opts), b);
    let with = std::fs::read(dir.path().join("p.romdelta")).unwrap();
    assert!(
        kinds(&with).contains(&OpKind::SourceFieldDelta),
        "{:?}",
        kinds(&with)
    );
    let off = romdelta_diff::DiffOptions {
        field_delta: false,
        ..fast_opts()
    };
    assert_eq!(round_trip(dir.path(), &a, &b, &off), b);
    let without = std::fs::read(dir.path().join("p.romdelta")).unwrap();
    assert!(!kinds(&without).contains(&OpKind::SourceFieldDelta));
    assert!(
        with.len() < without.len(),
        "{} vs {}",
        with.len(),
        without.len()
    );
}

#[test]
fn files_that_only_look_like_elf_still_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    // Section headers that point past the image, at the header itself, or
    // at a table whose entries do not ascend: whatever is chosen is exact.
    let mut f = elf(3000, usize::MAX, 8);
    let a = image(&f);
    f[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
    let mut b = image(&f);
    b[9 * 4096..9 * 4096 + 100].fill(3);
    assert_eq!(round_trip(dir.path(), &a, &b, &fast_opts()), b);
    let mut g = elf(3000, 100, 8);
    let shoff = u64::from_le_bytes(g[0x28..0x30].try_into().unwrap()) as usize;
    g[shoff + 64 + 0x18..shoff + 64 + 0x20].copy_from_slice(&0u64.to_le_bytes());
    let c = image(&g);
    assert_eq!(round_trip(dir.path(), &a, &c, &fast_opts()), c);
}
