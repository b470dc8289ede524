//! apply(diff(A, B), A) == B, for random images and random edits.

use crate::common::{fast_opts, round_trip};
use proptest::prelude::*;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use romdelta_format::OpKind;

/// An edit of the kinds ROM images see between builds.
#[derive(Debug, Clone)]
pub(crate) enum Edit {
    Insert { at: f64, len: usize },
    Delete { at: f64, len: usize },
    Overwrite { at: f64, len: usize },
    Move { from: f64, to: f64, len: usize },
    ZeroFill { at: f64, len: usize },
    Truncate { keep: f64 },
    Grow { len: usize },
}

pub(crate) fn edit() -> impl Strategy<Value = Edit> {
    let len = prop_oneof![1usize..64, 1usize..8192, 4096usize..600_000];
    prop_oneof![
        (0.0..1.0f64, len.clone()).prop_map(|(at, len)| Edit::Insert { at, len }),
        (0.0..1.0f64, len.clone()).prop_map(|(at, len)| Edit::Delete { at, len }),
        (0.0..1.0f64, len.clone()).prop_map(|(at, len)| Edit::Overwrite { at, len }),
        (0.0..1.0f64, 0.0..1.0f64, len.clone()).prop_map(|(from, to, len)| Edit::Move {
            from,
            to,
            len
        }),
        (0.0..1.0f64, len.clone()).prop_map(|(at, len)| Edit::ZeroFill { at, len }),
        (0.0..1.0f64).prop_map(|keep| Edit::Truncate { keep }),
        len.prop_map(|len| Edit::Grow { len }),
    ]
}

/// Image content with structure: runs of random bytes, repeated text, and zeros.
pub(crate) fn image(rng: &mut ChaCha8Rng, size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size);
    while v.len() < size {
        let n = rng.random_range(1..65536).min(size - v.len());
        match rng.random_range(0..3) {
            0 => {
                let mut b = vec![0; n];
                rng.fill_bytes(&mut b);
                v.extend(b);
            }
            1 => v.extend(b"persist.sys.romdelta=1\n".iter().cycle().take(n)),
            _ => v.extend(std::iter::repeat_n(0u8, n)),
        }
    }
    v
}

pub(crate) fn apply_edits(rng: &mut ChaCha8Rng, mut b: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    let pos = |b: &Vec<u8>, f: f64| ((b.len() as f64) * f) as usize;
    for e in edits {
        match *e {
            Edit::Insert { at, len } => {
                let at = pos(&b, at);
                let mut ins = vec![0; len];
                rng.fill_bytes(&mut ins);
                b.splice(at..at, ins);
            }
            Edit::Delete { at, len } => {
                let at = pos(&b, at);
                let end = (at + len).min(b.len());
                b.drain(at..end);
            }
            Edit::Overwrite { at, len } => {
                let at = pos(&b, at);
                let end = (at + len).min(b.len());
                rng.fill_bytes(&mut b[at..end]);
            }
            Edit::Move { from, to, len } => {
                let from = pos(&b, from);
                let end = (from + len).min(b.len());
                let piece: Vec<u8> = b.drain(from..end).collect();
                let to = pos(&b, to);
                b.splice(to..to, piece);
            }
            Edit::ZeroFill { at, len } => {
                let at = pos(&b, at);
                let end = (at + len).min(b.len());
                b[at..end].fill(0);
            }
            Edit::Truncate { keep } => {
                let n = pos(&b, keep);
                b.truncate(n);
            }
            Edit::Grow { len } => {
                let mut more = vec![0; len];
                rng.fill_bytes(&mut more);
                b.extend(more);
            }
        }
    }
    b
}

pub(crate) fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => Just(0usize),
        3 => 1usize..5000,
        2 => (1usize..64).prop_map(|b| b * 4096),
        6 => 1usize..(2 << 20),
        1 => (4usize << 20)..(40 << 20),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn apply_of_diff_gives_the_target(
        seed in any::<u64>(),
        size in size(),
        edits in prop::collection::vec(edit(), 0..8),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let a = image(&mut rng, size);
        let b = apply_edits(&mut rng, a.clone(), &edits);
        let dir = tempfile::tempdir().unwrap();
        let got = round_trip(dir.path(), &a, &b, &fast_opts());
        prop_assert!(got == b, "round trip differs: {} vs {} bytes", got.len(), b.len());
    }
}

#[test]
fn round_trip_at_default_level_with_small_regions() {
    // The shipping settings, and tiny regions so that many operations and
    // every encoder get used.
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut a = image(&mut rng, 3 << 20);
    // Random bytes at the front, which the edits below leave in place.
    rng.fill_bytes(&mut a[..256 << 10]);
    let edits = [
        Edit::Insert { at: 0.3, len: 777 },
        Edit::Move {
            from: 0.6,
            to: 0.1,
            len: 300_000,
        },
        Edit::Overwrite { at: 0.8, len: 5000 },
        Edit::ZeroFill {
            at: 0.5,
            len: 40_000,
        },
        // More zero blocks in a row than the gaps a region absorbs.
        Edit::ZeroFill {
            at: 0.62,
            len: 400_000,
        },
        Edit::Grow { len: 10_000 },
    ];
    let mut b = apply_edits(&mut rng, a.clone(), &edits);
    // One byte changed in every 61, as relocated code changes: what
    // bsdiff's diff stream is for.
    for x in b[64 << 10..192 << 10].iter_mut().step_by(61) {
        *x = x.wrapping_add(3);
    }
    let dir = tempfile::tempdir().unwrap();
    let opts = romdelta_diff::DiffOptions {
        region_blocks: 3,
        margin_blocks: 2,
        copy_op_blocks: 5,
        ..romdelta_diff::DiffOptions::default()
    };
    assert!(round_trip(dir.path(), &a, &b, &opts) == b);
    // Every kind the generator writes is in the package (SOURCE_BSDIFF, the
    // format-2 bsdiff encoding, is still read but no longer written).
    let bytes = std::fs::read(dir.path().join("p.romdelta")).unwrap();
    let pkg = romdelta_format::Package::parse(&bytes).unwrap();
    let used: std::collections::BTreeSet<&str> = pkg.manifest.partitions[0]
        .operations
        .iter()
        .map(|o| o.kind.name())
        .collect();
    let written = [
        OpKind::Zero,
        OpKind::SourceCopy,
        OpKind::Replace,
        OpKind::SourceZstd,
        OpKind::SourceBsdiffSparse,
    ];
    for k in written {
        assert!(used.contains(k.name()), "no {k} operation; used: {used:?}");
    }
}

#[test]
fn output_is_deterministic_across_thread_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = crate::common::synth_roms(dir.path(), 11);
    let src = romdelta_rom::Rom::open(&old).unwrap();
    let dst = romdelta_rom::Rom::open(&new).unwrap();
    let mut outputs = Vec::new();
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let p = dir.path().join(format!("p{threads}"));
        pool.install(|| {
            romdelta_diff::write_package(Some(&src), &dst, &fast_opts(), &p, &|_| {}).unwrap()
        });
        outputs.push(std::fs::read(&p).unwrap());
    }
    assert!(outputs[0] == outputs[1] && outputs[1] == outputs[2]);
}

#[test]
fn generation_refuses_unmapped_images_with_an_error() {
    // Regression: the CLI once opened diff inputs in read mode, which
    // panicked deep in generation. Now it is an error up front.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.img");
    std::fs::write(&p, vec![1u8; 10_000]).unwrap();
    let unmapped = romdelta_apply::open_rom(&p).unwrap();
    let err = romdelta_diff::write_package(
        None,
        &unmapped,
        &fast_opts(),
        &dir.path().join("o"),
        &|_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("mapped"), "{err}");
    assert!(!dir.path().join("o").exists());
}
