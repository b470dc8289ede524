#![no_main]
//! SOURCE_ZSTD_REBUILD data on arbitrary input: never panics, never writes
//! outside the output, never allocates past its expanded-form limits, and fills
//! the output exactly or fails; what a success wrote depends on the data
//! and the source only.
use libfuzzer_sys::fuzz_target;
use romdelta_format::zstd_rebuild;

fuzz_target!(|data: &[u8]| {
    // u8 destination blocks (1–16) · u16le source length · source ·
    // operation data (the layout of the committed seed).
    if data.len() < 3 {
        return;
    }
    let blocks = (data[0] % 16) as usize + 1;
    let src_len = (u16::from_le_bytes([data[1], data[2]]) as usize).min(data.len() - 3);
    let (src, payload) = data[3..].split_at(src_len);
    let mut out = vec![0u8; blocks * 4096];
    let first = zstd_rebuild::decode(payload, src, &mut out);
    let mut again = vec![0xa5u8; blocks * 4096];
    let second = zstd_rebuild::decode(payload, src, &mut again);
    assert_eq!(first.is_ok(), second.is_ok(), "two decodes disagree");
    if first.is_ok() {
        assert!(out == again, "the output depends on the buffer's old bytes");
    }
});
