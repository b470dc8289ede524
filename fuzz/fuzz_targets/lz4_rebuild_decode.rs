#![no_main]
//! SOURCE_LZ4_REBUILD data and lz4 streams on arbitrary input: never
//! panics, never writes outside the output, never allocates past its
//! limits, and fills the output exactly or fails; what a success wrote
//! depends on the data and the source only. The source bytes are also
//! read as an lz4 stream, walked and decoded exactly.
use libfuzzer_sys::fuzz_target;
use romdelta_codecs::lz4_stream;
use romdelta_format::lz4_rebuild;

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
    let first = lz4_rebuild::decode(payload, src, &mut out);
    let mut again = vec![0xa5u8; blocks * 4096];
    let second = lz4_rebuild::decode(payload, src, &mut again);
    assert_eq!(first.is_ok(), second.is_ok(), "two decodes disagree");
    if first.is_ok() {
        assert!(out == again, "the output depends on the buffer's old bytes");
    }
    // The stream parsers on the source bytes (and from each offset of the
    // first few, where a magic may start).
    for at in 0..src.len().min(8) {
        let b = &src[at..];
        if let Some(info) = lz4_stream::stream_info(b, 1 << 20) {
            assert!(info.len <= b.len() && info.decompressed_len <= 1 << 20);
            let mut plain = vec![0u8; info.decompressed_len];
            lz4_stream::decompress_exact(&b[..info.len], &mut plain)
                .expect("a stream the walk accepted decodes exactly");
        }
        let _ = lz4_stream::decompress_exact(b, &mut out);
    }
});
