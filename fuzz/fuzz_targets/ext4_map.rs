#![no_main]
//! The ext4 file map on arbitrary image bytes: never panics, and every run
//! it names lies within the image.
use libfuzzer_sys::fuzz_target;
use romdelta_ext4::{FileMap, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_files: 4096,
        max_dirs: 1024,
        max_extents: 1 << 16,
        max_dir_bytes: 16 << 20,
    };
    if let Ok(m) = FileMap::read(data, limits) {
        for f in &m.files {
            for r in &f.runs {
                assert!((r.image_block + r.len) * m.block_size <= data.len() as u64);
            }
        }
    }
});
