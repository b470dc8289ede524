#![no_main]
//! Android sparse images: parsing never panics, and a table that parses
//! tiles the expanded image exactly, so reading it in any pieces gives the
//! same bytes as reading it whole.
use libfuzzer_sys::fuzz_target;
use romdelta_format::sparse;

fuzz_target!(|data: &[u8]| {
    let Ok(chunks) = sparse::parse(data) else {
        return;
    };
    let header = sparse::SparseHeader::decode(data).expect("parsed before");
    let len = header.image_len();
    let mut covered = 0u64;
    for c in &chunks {
        assert_eq!(c.offset, covered);
        covered += c.len;
    }
    assert_eq!(covered, len);
    // Expand at most 1 MiB, whole and in odd pieces.
    let n = len.min(1 << 20) as usize;
    let read = |off: u64, buf: &mut [u8]| -> Result<(), ()> {
        let s = data.get(off as usize..off as usize + buf.len()).ok_or(())?;
        buf.copy_from_slice(s);
        Ok(())
    };
    let mut whole = vec![0u8; n];
    sparse::read_expanded(&chunks, 0, &mut whole, read).expect("raw chunks lie in the file");
    let mut pieces = vec![0u8; n];
    let mut pos = 0;
    while pos < n {
        let k = (n - pos).min(4093);
        sparse::read_expanded(&chunks, pos as u64, &mut pieces[pos..pos + k], read).unwrap();
        pos += k;
    }
    assert!(whole == pieces);
});
