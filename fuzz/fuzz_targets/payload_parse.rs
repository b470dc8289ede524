#![no_main]
//! Android payload.bin: parsing never panics, and what parses is
//! consistent: every operation's data lies in the blobs, every destination
//! extent in its partition, and the support check names a reason or none.
use libfuzzer_sys::fuzz_target;
use romdelta_android::payload::Payload;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Payload::parse(data) {
        assert_eq!(p.len(), data.len() as u64);
        for part in &p.partitions {
            let _ = part.check_supported();
            for op in &part.operations {
                assert_eq!(p.op_data(op).len() as u64, op.data_length);
                for e in &op.dst_extents {
                    assert!(e.end_block() <= part.new.blocks());
                }
                if let Some(old) = part.old {
                    for e in &op.src_extents {
                        assert!(e.end_block() <= old.blocks());
                    }
                }
            }
        }
    }
});
