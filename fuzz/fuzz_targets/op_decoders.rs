#![no_main]
//! Operation data decoders on arbitrary input: never panic, never write
//! outside the output buffer, always fill it exactly or fail.
use libfuzzer_sys::fuzz_target;
use romdelta_format::ops;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    // First bytes choose the decoder and the sizes; the rest is split into
    // source bytes and operation data.
    let kind = data[0] % 3;
    let out_len = (u16::from_le_bytes([data[1], data[2]]) as usize) % 65536;
    let split = (data[3] as usize * data.len() / 256).min(data.len());
    let (src, payload) = data[4..].split_at(split.saturating_sub(4).min(data.len() - 4));
    let mut out = vec![0u8; out_len];
    let _ = match kind {
        0 => ops::decode_replace(payload, &mut out),
        1 => ops::decode_source_zstd(payload, src, &mut out),
        _ => ops::decode_bsdiff(payload, src, &mut out),
    };
});
