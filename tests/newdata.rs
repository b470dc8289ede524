//! New data encoded against new data: a target that adds a block of new
//! bytes twice (the second copy with a few edits) and unrelated new bytes,
//! none of which the source has. By default the new regions are one
//! REPLACE operation writing all their extents, so the edited copy costs
//! almost nothing; with `join_new` off each region is its own REPLACE.
//! Both round-trip exactly.

use crate::common::{fast_opts, noise, round_trip};
use romdelta_format::OpKind;

#[test]
fn repeated_new_data_is_encoded_in_one_context() {
    let bs = 4096;
    let source: Vec<u8> = noise(1, 3000 * bs);
    let mut target = source[..64 * bs].to_vec();
    target.resize(3000 * bs, 0);
    let new = noise(2, 256 * bs);
    let mut edited = new.clone();
    for i in (0..edited.len()).step_by(100_000) {
        edited[i] ^= 0xff;
    }
    target[100 * bs..356 * bs].copy_from_slice(&new);
    target[1000 * bs..1256 * bs].copy_from_slice(&edited);
    target[2000 * bs..2256 * bs].copy_from_slice(&noise(4, 256 * bs));

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let package = || {
        let bytes = std::fs::read(d.join("p.romdelta")).unwrap();
        let m = romdelta_format::Package::parse(&bytes).unwrap().manifest;
        let replaces: Vec<usize> = m.partitions[0]
            .operations
            .iter()
            .filter(|o| o.kind == OpKind::Replace)
            .map(|o| o.dst_extents.len())
            .collect();
        (bytes.len(), replaces)
    };
    assert!(round_trip(d, &source, &target, &fast_opts()) == target);
    let (joined, replaces) = package();
    assert_eq!(replaces, [3], "one REPLACE writing the three new regions");
    let apart = romdelta_diff::DiffOptions {
        join_new: false,
        ..fast_opts()
    };
    assert!(round_trip(d, &source, &target, &apart) == target);
    let (alone, replaces) = package();
    assert_eq!(replaces, [1, 1, 1]);
    eprintln!("new data: {joined} bytes in one context, {alone} apart");
    assert!(joined * 10 < alone * 7, "{joined} vs {alone}");
}
