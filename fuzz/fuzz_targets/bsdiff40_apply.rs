#![no_main]
//! BSDIFF40 patches (Debian's bsdiff format) against a small fixed old
//! file: never a panic, never more output than the header announces.
use libfuzzer_sys::fuzz_target;
use romdelta_format::bsdiff40;

fuzz_target!(|data: &[u8]| {
    let old: Vec<u8> = (0..4096u32).map(|i| (i * 31 % 253) as u8).collect();
    let mut out = Vec::new();
    if let Ok(n) = bsdiff40::apply(data, &old, &mut out) {
        let h = bsdiff40::Bsdiff40Header::decode(data).expect("applied");
        assert_eq!(n, h.new_size);
        assert_eq!(out.len() as u64, n);
    }
});
