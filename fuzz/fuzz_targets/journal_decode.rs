#![no_main]
//! Resume journals read back from disk: decoding never panics, and what
//! decodes re-encodes to the same bytes.
use libfuzzer_sys::fuzz_target;
use romdelta_format::journal::Journal;

fuzz_target!(|data: &[u8]| {
    // The operation count a package would expect, from the input itself.
    let ops = data
        .get(76..84)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()));
    if let Ok(j) = Journal::decode(data, ops.min(1 << 20)) {
        assert_eq!(j.encode(), data);
        assert!(j.done_count() <= j.ops);
    }
});
