#![no_main]
//! In-place manifests: whatever `Manifest::decode` accepts as in place runs
//! correctly on the block-by-block reference model (every operation reads
//! only source content), whatever the order of the operations within each
//! stage and when operations run again (as after a power cut).
use libfuzzer_sys::fuzz_target;
use romdelta_format::{inplace, Manifest};
use std::ops::Range;

/// Most blocks named by the operations of a partition that the model runs
/// (its cost is proportional to them).
const MODEL_BLOCKS: u64 = 1 << 18;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Manifest::decode(data) else {
        return;
    };
    if !m.in_place {
        return;
    }
    // A rotation of each stage's operations that depends on the input.
    let turn = data
        .iter()
        .fold(0usize, |a, &b| a.wrapping_mul(31).wrapping_add(b as usize));
    for p in &m.partitions {
        let blocks = p
            .operations
            .iter()
            .map(|o| o.src_blocks().saturating_add(o.dst_blocks()))
            .fold(0u64, u64::saturating_add);
        if blocks > MODEL_BLOCKS {
            continue;
        }
        let schedules: [&dyn Fn(Range<usize>) -> Vec<usize>; 4] = [
            &|r| r.collect(),
            &|r| r.rev().collect(),
            &|r| {
                let mut v: Vec<usize> = r.collect();
                let n = v.len();
                v.rotate_left(turn % n);
                v
            },
            // Every operation, then every operation again in reverse.
            &|r| r.clone().chain(r.rev()).collect(),
        ];
        for schedule in schedules {
            if let Err(e) = inplace::simulate(p, &mut |r| schedule(r)) {
                panic!("accepted in-place manifest misbehaves: {e}");
            }
        }
    }
});
