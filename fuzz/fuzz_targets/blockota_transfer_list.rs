#![no_main]
//! Transfer lists: parsing never panics, and a list that parses keeps
//! every promise the applier relies on: its writes add up to the header's
//! count, every patch lies inside patch.dat, every source's pieces fill it,
//! and every range set renders back to what parses to itself.
//!
//! Input: patch.dat's length (u32le), then the list's text.
use libfuzzer_sys::fuzz_target;
use romdelta_android::blockota::{Command, RangeSet, TransferList, MAX_BLOCKS, MAX_BUFFER_BLOCKS};

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let patch_len = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as u64;
    let Ok(list) = TransferList::parse(&data[4..], patch_len) else {
        return;
    };
    assert_eq!(list.written_blocks(), list.total_blocks);
    assert!(list.blocks_named() <= MAX_BLOCKS);
    for (_, c) in &list.commands {
        if let Command::Patch { offset, len, .. } = c {
            assert!(offset + len <= patch_len);
        }
        if let Command::Stash { ranges, .. } = c {
            assert!(ranges.blocks() <= MAX_BUFFER_BLOCKS);
        }
        if let Some(t) = c.target() {
            assert_eq!(&RangeSet::parse(&t.render()).unwrap(), t);
        }
        if let Some(s) = c.source() {
            let placed = s.at.as_ref().map_or_else(
                || s.ranges.as_ref().map_or(0, RangeSet::blocks),
                RangeSet::blocks,
            ) + s.stashes.iter().map(|p| p.at.blocks()).sum::<u64>();
            assert_eq!(placed, s.blocks);
            assert!(s.blocks <= MAX_BUFFER_BLOCKS);
        }
    }
});
