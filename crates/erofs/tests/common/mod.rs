//! Reading a file's bytes through its map, as the tests check maps.

use romdelta_erofs::{Algorithm, DataMap, Encoding, Placement};

/// Reads an inode's bytes through its map, decompressing LZ4 pclusters.
pub fn read_through(
    img: &[u8],
    block_size: u64,
    size: u64,
    data: &DataMap,
    zero_padding: bool,
) -> Vec<u8> {
    let mut out = Vec::new();
    match data {
        DataMap::None => {}
        DataMap::Flat(extents) => {
            for e in extents {
                assert_eq!(e.logical, out.len() as u64, "extents tile the file");
                match e.placement {
                    Placement::Hole => out.resize(out.len() + e.len as usize, 0),
                    Placement::Blocks | Placement::Inline => {
                        let at = e.physical as usize;
                        out.extend_from_slice(&img[at..at + e.len as usize]);
                    }
                }
            }
        }
        DataMap::Compressed { pclusters, .. } => {
            for p in pclusters {
                assert_eq!(p.logical, out.len() as u64, "pclusters tile the file");
                let r = p.stored.byte_range(block_size);
                let raw = &img[r.start as usize..r.end as usize];
                match p.encoding {
                    Encoding::Plain => out.extend_from_slice(&raw[..p.logical_len as usize]),
                    Encoding::Compressed(Algorithm::Lz4) => {
                        assert!(zero_padding, "lz4 without zero padding");
                        // The stream ends at the end of the pcluster,
                        // after leading zeros.
                        let skip = raw.iter().position(|&b| b != 0).unwrap();
                        let mut buf = vec![0u8; p.logical_len as usize];
                        let n = lz4_flex::block::decompress_into(&raw[skip..], &mut buf)
                            .unwrap_or_else(|e| panic!("pcluster {p:?}: {e}"));
                        assert_eq!(
                            n as u64, p.logical_len,
                            "pcluster {p:?} decodes to its extent"
                        );
                        out.extend_from_slice(&buf);
                    }
                    other => panic!("unexpected encoding {other:?}"),
                }
            }
        }
    }
    assert_eq!(out.len() as u64, size, "the map covers the whole file");
    out
}
