#![no_main]
//! payload.bin operation decoders on arbitrary data: never a panic, never
//! a write outside the destination buffer. Input: a kind selector, the
//! destination length and the source length (u16 LE each), the source
//! bytes, then the operation data.
use libfuzzer_sys::fuzz_target;
use romdelta_android::payload::{ops, PayloadOpKind as K};

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let kind = [
        K::Replace,
        K::ReplaceBz,
        K::ReplaceXz,
        K::ReplaceZstd,
        K::SourceBsdiff,
        K::BrotliBsdiff,
        K::Puffdiff,
        K::Lz4diffBsdiff,
        K::Zucchini,
    ][data[0] as usize % 9];
    let out_len = u16::from_le_bytes([data[1], data[2]]) as usize;
    let rest = &data[5..];
    let src_len = (u16::from_le_bytes([data[3], data[4]]) as usize).min(rest.len());
    let (src, op_data) = rest.split_at(src_len);
    let mut out = vec![0u8; out_len];
    if kind.is_replace() {
        if let Ok(n) = ops::decode_replace(kind, op_data, &mut out) {
            assert!(n <= out_len);
            assert!(out[n..].iter().all(|&b| b == 0));
        }
    } else {
        let _ = ops::decode_patch(kind, op_data, src, &mut out);
    }
    assert_eq!(out.len(), out_len);
});
