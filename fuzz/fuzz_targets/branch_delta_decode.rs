#![no_main]
//! SOURCE_BRANCH_DELTA data on arbitrary input: never panics, never writes
//! outside the output, and fills it exactly or fails; what a success wrote
//! depends on the data and the source only.
use libfuzzer_sys::fuzz_target;
use romdelta_format::branchdelta;

fuzz_target!(|data: &[u8]| {
    // u16le destination length · u16le source length · source · operation
    // data (the layout of the committed seed).
    if data.len() < 4 {
        return;
    }
    let out_len = u16::from_le_bytes([data[0], data[1]]) as usize;
    let src_len = (u16::from_le_bytes([data[2], data[3]]) as usize).min(data.len() - 4);
    let (src, payload) = data[4..].split_at(src_len);
    let mut out = vec![0u8; out_len];
    let first = branchdelta::decode(payload, src, &mut out);
    let mut again = vec![0xa5u8; out_len];
    let second = branchdelta::decode(payload, src, &mut again);
    assert_eq!(first, second, "two decodes disagree");
    if first.is_ok() {
        assert!(out == again, "the output depends on the buffer's old bytes");
    }
});
