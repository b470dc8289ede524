#![no_main]
//! Operation data decoders on arbitrary input: never panic, never write
//! outside the output buffer, always fill it exactly or fail.
use libfuzzer_sys::fuzz_target;
use romdelta_format::{ops, OpKind};

fuzz_target!(|data: &[u8]| {
    // kind byte · u16le destination length · u16le source length · source ·
    // operation data (the layout of the committed seeds).
    if data.len() < 5 {
        return;
    }
    let kind = [
        OpKind::Replace,
        OpKind::SourceZstd,
        OpKind::SourceBsdiff,
        OpKind::SourceBsdiffSparse,
    ][data[0] as usize % 4];
    let out_len = u16::from_le_bytes([data[1], data[2]]) as usize;
    let src_len = (u16::from_le_bytes([data[3], data[4]]) as usize).min(data.len() - 5);
    let (src, payload) = data[5..].split_at(src_len);
    let mut out = vec![0u8; out_len];
    let _ = ops::decode(kind, payload, src, &mut out);
});
