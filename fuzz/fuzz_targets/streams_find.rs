#![no_main]
//! The gzip, zip and zlib parsers on arbitrary input: never panic, stay
//! within their decompression budget, and name only streams inside the
//! input, in ascending order, each of which inflates to its length.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let budget = 1 << 20;
    for c in [
        romdelta_streams::at(data, budget),
        romdelta_streams::gzip(data, budget),
        romdelta_streams::zip(data, budget),
        romdelta_streams::zlib(data, budget),
    ]
    .into_iter()
    .flatten()
    {
        assert!(c.end <= data.len());
        let mut end = 0;
        let mut total = 0;
        for s in &c.streams {
            assert!(s.offset >= end && s.offset + s.len <= data.len());
            end = s.offset + s.len;
            total += s.expanded_len;
            let mut out = vec![0; s.expanded_len];
            romdelta_codecs::deflate::decompress_into(&data[s.offset..end], &mut out).unwrap();
        }
        assert!(total <= budget);
    }
});
