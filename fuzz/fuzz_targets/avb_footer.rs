#![no_main]
//! AVB footers and hashtree descriptors: reading never panics, and a
//! descriptor that is read lies within the image and gives verity fields
//! that are either refused or pass the payload reader's checks.
use libfuzzer_sys::fuzz_target;
use romdelta_android::{avb, payload::Verity};

fuzz_target!(|data: &[u8]| {
    let read = avb::read_footer(data.len() as u64, |off, buf| {
        buf.copy_from_slice(&data[off as usize..off as usize + buf.len()]);
        Ok(())
    });
    if let Ok(Some(f)) = read {
        assert!(f.vbmeta_offset + f.vbmeta_size <= data.len() as u64);
        if let Some(h) = f.hashtree {
            assert!(h.tree_offset + h.tree_size <= data.len() as u64);
            if let Ok(v) = Verity::from_avb(&h) {
                let _ = v.check(data.len() as u64);
            }
        }
    }
});
