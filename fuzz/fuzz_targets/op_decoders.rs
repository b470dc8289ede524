#![no_main]
//! Operation data decoders on arbitrary input: never panic, never write
//! outside the output buffer, always fill it exactly or fail. What a
//! success wrote depends on the data and the source only: decoding again,
//! into a buffer of other bytes, gives the same output, and REPLACE data
//! decodes to what zstd itself makes of the frame.
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
        OpKind::SourceRecompress,
        OpKind::SourceFieldDelta,
    ][data[0] as usize % 6];
    let out_len = u16::from_le_bytes([data[1], data[2]]) as usize;
    let src_len = (u16::from_le_bytes([data[3], data[4]]) as usize).min(data.len() - 5);
    let (src, payload) = data[5..].split_at(src_len);
    let mut out = vec![0u8; out_len];
    let first = ops::decode(kind, payload, src, &mut out);
    // The same call on a buffer of other bytes: the same verdict, and on
    // success the same output, so every byte was written by the decoder.
    let mut again = vec![0xa5u8; out_len];
    let second = ops::decode(kind, payload, src, &mut again);
    assert_eq!(first, second, "{kind}: two decodes disagree");
    if first.is_err() {
        return;
    }
    assert_eq!(out.len(), out_len);
    assert!(
        out == again,
        "{kind}: the output depends on the buffer's old bytes"
    );
    if kind == OpKind::Replace {
        // An independent decoder of the one frame it accepted.
        let want =
            zstd::stream::decode_all(payload).expect("zstd refuses a frame romdelta decoded");
        assert!(out == want, "REPLACE: not what zstd decodes");
        // REPLACE reads no source.
        let mut alone = vec![0u8; out_len];
        ops::decode(kind, payload, &[], &mut alone).expect("REPLACE failed without the source");
        assert!(alone == out, "REPLACE: the output depends on the source");
    }
});
