//! Deterministic synthetic ROM builds that change the way real ones do.
//!
//! A partition is laid out like a simple filesystem: files start on block
//! boundaries, with free (zero) space here and there. Between the old and
//! the new build:
//! - executables get code inserted or removed, which shifts everything
//!   after the edit and changes every relative branch and absolute pointer
//!   that crosses it (the case bsdiff was made for);
//! - configuration files get lines edited;
//! - compressed-looking blobs are replaced whole, or kept;
//! - some files move to another place in the image, unchanged;
//! - files are added and deleted, and partitions appear and disappear.

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

const BLOCK: usize = 4096;

/// A file of the synthetic filesystem.
#[derive(Clone, Debug)]
struct File {
    kind: Kind,
    bytes: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Elf,
    Text,
    Blob,
}

/// An ELF-like executable: a header, code made of "instructions" with
/// relative branch targets, and a table of absolute pointers into the code.
fn make_elf(rng: &mut ChaCha8Rng, code_len: usize) -> Vec<u8> {
    let mut code = Vec::with_capacity(code_len);
    // A small instruction vocabulary, as real code has.
    let ops: Vec<Vec<u8>> = (0..48)
        .map(|_| (0..rng.random_range(1..6)).map(|_| rng.random()).collect())
        .collect();
    while code.len() < code_len {
        if rng.random_ratio(1, 6) {
            // call rel32
            code.push(0xe8);
            let target = rng.random_range(0..code_len as i64) - code.len() as i64;
            code.extend_from_slice(&(target as i32).to_le_bytes());
        } else {
            code.extend_from_slice(&ops[rng.random_range(0..ops.len())]);
        }
    }
    code.truncate(code_len);
    let n_ptrs = code_len / 64;
    let mut out = b"\x7fELF\x02\x01\x01\0".to_vec();
    out.extend_from_slice(&(code_len as u64).to_le_bytes());
    out.extend_from_slice(&(n_ptrs as u64).to_le_bytes());
    out.extend_from_slice(&code);
    for _ in 0..n_ptrs {
        let p = 0x40_0000u64 + rng.random_range(0..code_len as u64);
        out.extend_from_slice(&p.to_le_bytes());
    }
    out
}

/// Inserts (or removes) `delta` bytes of code at `at` and fixes every
/// branch and pointer that crosses the edit, as a recompile would.
fn edit_elf(rng: &mut ChaCha8Rng, elf: &[u8]) -> Vec<u8> {
    let code_len = u64::from_le_bytes(elf[8..16].try_into().unwrap()) as usize;
    let n_ptrs = u64::from_le_bytes(elf[16..24].try_into().unwrap()) as usize;
    let code = &elf[24..24 + code_len];
    let at = rng.random_range(0..code_len);
    let insert = rng.random_range(16..600usize);
    let mut new_code = Vec::with_capacity(code_len + insert);
    let mut i = 0;
    // Copy code, adjusting rel32 calls whose span crosses `at`.
    while i < code_len {
        if i == at {
            new_code.extend((0..insert).map(|_| rng.random::<u8>()));
        }
        if code[i] == 0xe8 && i + 5 <= code_len {
            let rel = i32::from_le_bytes(code[i + 1..i + 5].try_into().unwrap()) as i64;
            let target = i as i64 + rel;
            let crosses = (i < at) != ((target as usize) < at) && target >= 0;
            let rel = if crosses {
                if i < at {
                    rel + insert as i64
                } else {
                    rel - insert as i64
                }
            } else {
                rel
            };
            new_code.push(0xe8);
            new_code.extend_from_slice(&(rel as i32).to_le_bytes());
            i += 5;
        } else {
            new_code.push(code[i]);
            i += 1;
        }
    }
    let mut out = elf[..8].to_vec();
    out.extend_from_slice(&(new_code.len() as u64).to_le_bytes());
    out.extend_from_slice(&(n_ptrs as u64).to_le_bytes());
    out.extend_from_slice(&new_code);
    let ptrs = &elf[24 + code_len..];
    for k in 0..n_ptrs {
        let p = u64::from_le_bytes(ptrs[k * 8..k * 8 + 8].try_into().unwrap());
        let p = if p - 0x40_0000 >= at as u64 {
            p + insert as u64
        } else {
            p
        };
        out.extend_from_slice(&p.to_le_bytes());
    }
    out
}

const WORDS: &[&str] = &[
    "ro.build",
    "persist",
    "vendor",
    "display",
    "audio",
    "camera",
    "service",
    "enable",
    "true",
    "false",
    "wifi",
    "modem",
    "sensor",
    "thermal",
    "policy",
    "user",
    "system",
    "config",
    "0",
    "1",
    "100",
    "2048",
    "permission",
    "android",
    "hardware",
    "boot",
    "init",
    "rc",
    "class",
    "main",
];

fn make_text(rng: &mut ChaCha8Rng, len: usize) -> Vec<u8> {
    let mut s = Vec::with_capacity(len + 64);
    while s.len() < len {
        let n = rng.random_range(2..9);
        for k in 0..n {
            if k > 0 {
                s.push(if k == 1 { b'=' } else { b'.' });
            }
            s.extend_from_slice(WORDS[rng.random_range(0..WORDS.len())].as_bytes());
        }
        s.push(b'\n');
    }
    s
}

fn edit_text(rng: &mut ChaCha8Rng, text: &[u8]) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = text.split(|&b| b == b'\n').map(|l| l.to_vec()).collect();
    for _ in 0..rng.random_range(1..8) {
        let i = rng.random_range(0..lines.len());
        match rng.random_range(0..3) {
            0 => {
                lines[i] = make_text(rng, 20)
                    .split(|&b| b == b'\n')
                    .next()
                    .unwrap()
                    .to_vec()
            }
            1 => lines.insert(
                i,
                make_text(rng, 30)
                    .split(|&b| b == b'\n')
                    .next()
                    .unwrap()
                    .to_vec(),
            ),
            _ if lines.len() > 1 => {
                lines.remove(i);
            }
            _ => {}
        }
    }
    lines.join(&b'\n')
}

fn make_blob(rng: &mut ChaCha8Rng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

fn make_file(rng: &mut ChaCha8Rng, avg: usize) -> File {
    let len = rng.random_range(avg / 8..avg * 2).max(64);
    match rng.random_range(0..10) {
        0..=4 => File {
            kind: Kind::Elf,
            bytes: make_elf(rng, len),
        },
        5..=7 => File {
            kind: Kind::Text,
            bytes: make_text(rng, len / 4),
        },
        _ => File {
            kind: Kind::Blob,
            bytes: make_blob(rng, len),
        },
    }
}

/// Lays files out on block boundaries with occasional free space, in an image of `size` bytes.
fn layout(rng: &mut ChaCha8Rng, files: &[File], size: usize) -> Vec<u8> {
    let mut img = vec![0u8; size];
    let mut pos = BLOCK; // block 0: a "superblock"
    img[..16].copy_from_slice(b"SYNTHFS1\0\0\0\0\0\0\0\0");
    for f in files {
        if rng.random_ratio(1, 12) {
            pos += BLOCK * rng.random_range(1..16);
        }
        if pos + f.bytes.len() > size {
            break;
        }
        img[pos..pos + f.bytes.len()].copy_from_slice(&f.bytes);
        pos = (pos + f.bytes.len()).div_ceil(BLOCK) * BLOCK;
    }
    img
}

/// One partition in the old and new build.
fn partition_pair(rng: &mut ChaCha8Rng, size: usize, avg_file: usize) -> (Vec<u8>, Vec<u8>) {
    let mut files: Vec<File> = Vec::new();
    let mut total = 0;
    while total < size * 6 / 10 {
        let f = make_file(rng, avg_file);
        total += f.bytes.len().div_ceil(BLOCK) * BLOCK;
        files.push(f);
    }
    let mut layout_rng = ChaCha8Rng::seed_from_u64(rng.random());
    let old = layout(&mut layout_rng.clone(), &files, size);
    let mut new_files = Vec::with_capacity(files.len());
    for f in &files {
        match rng.random_range(0..100) {
            0..=3 => continue, // deleted
            4..=29 => new_files.push(File {
                kind: f.kind,
                bytes: match f.kind {
                    Kind::Elf => edit_elf(rng, &f.bytes),
                    Kind::Text => edit_text(rng, &f.bytes),
                    Kind::Blob => make_blob(rng, f.bytes.len()),
                },
            }),
            _ => new_files.push(f.clone()),
        }
        if rng.random_ratio(1, 25) {
            new_files.push(make_file(rng, avg_file)); // added
        }
    }
    // Move a few files elsewhere (unchanged content, new place).
    for _ in 0..new_files.len() / 20 {
        let i = rng.random_range(0..new_files.len());
        let j = rng.random_range(0..new_files.len());
        let f = new_files.remove(i);
        new_files.insert(j.min(new_files.len()), f);
    }
    let new = layout(&mut layout_rng, &new_files, size);
    (old, new)
}

/// A synthetic ROM: partitions as `(name, image bytes)`.
pub type SynthRom = Vec<(String, Vec<u8>)>;

/// An old and a new build of one ROM. `scale` multiplies partition sizes
/// (1 gives about 40 MiB per build). The same seed gives the same bytes.
pub fn rom_pair(seed: u64, scale: usize) -> (SynthRom, SynthRom) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mib = 1 << 20;
    let mut old = Vec::new();
    let mut new = Vec::new();
    for (name, size, avg) in [
        ("boot", 4 * mib, 256 << 10),
        ("system", 24 * mib, 96 << 10),
        ("vendor", 8 * mib, 48 << 10),
    ] {
        // Odd-sized images too: boot is not a whole number of blocks.
        let size = size * scale + if name == "boot" { 1234 } else { 0 };
        let (o, n) = partition_pair(&mut rng, size, avg);
        old.push((name.to_string(), o));
        new.push((name.to_string(), n));
    }
    // A partition that only the old build has, and one only the new has.
    let (oem, _) = partition_pair(&mut rng, 2 * mib * scale, 32 << 10);
    old.push(("oem".into(), oem));
    let (_, product) = partition_pair(&mut rng, 3 * mib * scale, 64 << 10);
    new.push(("product".into(), product));
    (old, new)
}

/// Writes a ROM as a directory of `NAME.img` files.
pub fn write_rom(dir: &Path, rom: &SynthRom) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in rom {
        std::fs::write(dir.join(format!("{name}.img")), bytes)?;
    }
    Ok(())
}

/// Returns a variant of `img` with random edits of every kind a proptest
/// would want: used by benches to make quick pairs of any size.
pub fn edited(seed: u64, img: &[u8]) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = img.to_vec();
    for _ in 0..8 {
        if out.is_empty() {
            break;
        }
        let at = rng.random_range(0..out.len());
        let n = rng.random_range(1..(out.len() - at).clamp(2, 65536));
        match rng.random_range(0..3) {
            0 => {
                let ins = make_blob(&mut rng, n);
                out.splice(at..at, ins);
            }
            1 => {
                out.drain(at..at + n);
            }
            _ => rng.fill_bytes(&mut out[at..at + n]),
        }
    }
    out
}
