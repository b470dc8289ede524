//! SOURCE_FIELD_DELTA operation data: an inner patch between source and
//! destination bytes whose tables of sorted fixed-stride fields are
//! delta-coded first.
//!
//! When code moves, every entry of a relocation table (ELF64 `Elf64_Rela`:
//! 24-byte entries whose first 8 bytes, `r_offset`, ascend) after the
//! change holds a new offset: a byte-level patch pays for each of them.
//! Replacing each field by its difference from the previous one leaves the
//! shifted entries as they were, so the patch pays for the change alone.
//! The transform is a bijection of any bytes: nothing depends on the ranges
//! really holding such tables, only the size of the patch.
//!
//! Wire form: `varint header_len · header · inner` (inner: SOURCE_ZSTD or
//! SOURCE_BSDIFF_SPARSE data). Header: `u8 version (1) · u8 inner kind ·
//! u8 stride · u8 field offset · varint source range count · ranges ·
//! varint destination range count · ranges`, each range `varint gap (from
//! the end of the previous range) · varint entries (≥ 2)`. Ranges lie
//! within their bytes, in order, without overlap.

use crate::{FormatError, OpKind, Reader, Writer};

/// Header layout version.
const VERSION: u8 = 1;
/// Width of a field: a little-endian u64.
const WIDTH: usize = 8;

/// A run of `entries` fixed-stride entries from byte `offset` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// First byte of the first entry.
    pub offset: u64,
    /// Number of entries.
    pub entries: u64,
}

/// The header of a SOURCE_FIELD_DELTA operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Kind of the inner patch.
    pub inner: OpKind,
    /// Bytes from one entry to the next.
    pub stride: u8,
    /// Where the field lies in its entry.
    pub field: u8,
    /// Ranges of the source bytes, in order.
    pub src: Vec<Range>,
    /// Ranges of the destination bytes, in order.
    pub dst: Vec<Range>,
}

fn encode_ranges(w: &mut Writer, ranges: &[Range], stride: u64) {
    w.varint(ranges.len() as u64);
    let mut end = 0;
    for r in ranges {
        w.varint(r.offset - end);
        w.varint(r.entries);
        end = r.offset + r.entries * stride;
    }
}

fn decode_ranges(r: &mut Reader<'_>, stride: u64, len: u64) -> Result<Vec<Range>, FormatError> {
    let n = r.count("field delta ranges", 2, len / stride.max(1))?;
    let mut out = r.vec_for::<Range>(n);
    let mut end = 0u64;
    for _ in 0..n {
        let gap = r.varint("field delta range gap")?;
        let entries = r.varint("field delta range entries")?;
        let offset = end.checked_add(gap);
        let stop = offset.and_then(|o| entries.checked_mul(stride).and_then(|b| o.checked_add(b)));
        match (offset, stop) {
            (Some(offset), Some(stop)) if entries >= 2 && stop <= len => {
                out.push(Range { offset, entries });
                end = stop;
            }
            _ => {
                return Err(FormatError::invalid(
                    "field delta range",
                    format!(
                    "{entries} entries after a gap of {gap} do not fit in {len} bytes (at least 2)"
                ),
                ))
            }
        }
    }
    Ok(out)
}

impl Header {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(VERSION);
        w.u8(self.inner.code());
        w.u8(self.stride);
        w.u8(self.field);
        encode_ranges(&mut w, &self.src, self.stride as u64);
        encode_ranges(&mut w, &self.dst, self.stride as u64);
        w.into_bytes()
    }

    fn decode(b: &[u8], src_len: u64, dst_len: u64) -> Result<Header, FormatError> {
        let mut r = Reader::new(b);
        let v = r.u8("field delta version")?;
        if v != VERSION {
            return Err(FormatError::invalid(
                "field delta version",
                format!("unknown version {v}"),
            ));
        }
        let inner = OpKind::from_code(r.u8("field delta inner kind")?)?;
        if !matches!(inner, OpKind::SourceZstd | OpKind::SourceBsdiffSparse) {
            return Err(FormatError::invalid(
                "field delta inner kind",
                format!("{inner} cannot be an inner patch"),
            ));
        }
        let stride = r.u8("field delta stride")?;
        let field = r.u8("field delta field offset")?;
        if (field as usize) + WIDTH > stride as usize {
            return Err(FormatError::invalid(
                "field delta stride",
                format!("an {WIDTH}-byte field at {field} does not fit in a {stride}-byte entry"),
            ));
        }
        let src = decode_ranges(&mut r, stride as u64, src_len)?;
        let dst = decode_ranges(&mut r, stride as u64, dst_len)?;
        r.finish("field delta header")?;
        Ok(Header {
            inner,
            stride,
            field,
            src,
            dst,
        })
    }
}

fn field_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + WIDTH].try_into().expect("8 bytes"))
}

/// Replaces, in each range of `buf`, every field but the first by its
/// difference from the one before (wrapping).
pub fn forward(buf: &mut [u8], ranges: &[Range], stride: u8, field: u8) {
    for r in ranges {
        let mut prev = 0u64;
        for k in 0..r.entries as usize {
            let at = r.offset as usize + k * stride as usize + field as usize;
            let v = field_at(buf, at);
            let d = if k == 0 { v } else { v.wrapping_sub(prev) };
            buf[at..at + WIDTH].copy_from_slice(&d.to_le_bytes());
            prev = v;
        }
    }
}

/// Undoes [`forward`].
pub fn inverse(buf: &mut [u8], ranges: &[Range], stride: u8, field: u8) {
    for r in ranges {
        let mut prev = 0u64;
        for k in 0..r.entries as usize {
            let at = r.offset as usize + k * stride as usize + field as usize;
            let d = field_at(buf, at);
            let v = if k == 0 { d } else { prev.wrapping_add(d) };
            buf[at..at + WIDTH].copy_from_slice(&v.to_le_bytes());
            prev = v;
        }
    }
}

/// Encodes SOURCE_FIELD_DELTA data from its header and inner patch data.
pub fn encode(header: &Header, inner: &[u8]) -> Vec<u8> {
    crate::codec::headed(&header.encode(), inner)
}

/// Decodes SOURCE_FIELD_DELTA data against `src` into exactly `out.len()`
/// bytes.
pub fn decode(data: &[u8], src: &[u8], out: &mut [u8]) -> Result<(), FormatError> {
    let (head, inner) = crate::codec::split_headed(
        data,
        [
            "field delta header length",
            "field delta header",
            "field delta inner patch",
        ],
        u64::MAX,
    )?;
    let h = Header::decode(head, src.len() as u64, out.len() as u64)?;
    let mut source = src.to_vec();
    forward(&mut source, &h.src, h.stride, h.field);
    crate::ops::decode(h.inner, inner, &source, out)?;
    inverse(out, &h.dst, h.stride, h.field);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A relocation-table-like buffer: entries of 24 bytes whose first
    /// field ascends, from `base` on, between other bytes.
    fn table(base: u64, n: usize, shift_from: usize) -> Vec<u8> {
        let mut v = b"header bytes before the table ".to_vec();
        for k in 0..n {
            let off = base + 16 * k as u64 + if k >= shift_from { 40 } else { 0 };
            v.extend_from_slice(&off.to_le_bytes());
            v.extend_from_slice(&((k as u64 % 7) << 32 | 2).to_le_bytes());
            v.extend_from_slice(&(-4i64).to_le_bytes());
        }
        v.extend_from_slice(b" and after it");
        v.resize(v.len().next_multiple_of(4096), 0);
        v
    }

    fn fixture() -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
        let src = table(0x1000, 3000, usize::MAX);
        let dst = table(0x1000, 3000, 1000);
        let h = Header {
            inner: OpKind::SourceZstd,
            stride: 24,
            field: 0,
            src: vec![Range {
                offset: 30,
                entries: 3000,
            }],
            dst: vec![Range {
                offset: 30,
                entries: 3000,
            }],
        };
        let (mut s, mut d) = (src.clone(), dst.clone());
        forward(&mut s, &h.src, 24, 0);
        forward(&mut d, &h.dst, 24, 0);
        let inner = crate::ops::encode_source_zstd(&s, &d, 19);
        let plain = crate::ops::encode_source_zstd(&src, &dst, 19);
        (src, dst, encode(&h, &inner), plain)
    }

    #[test]
    fn shifted_tables_cost_their_change_only() {
        let (src, dst, data, plain) = fixture();
        let mut out = vec![0xa5; dst.len()];
        decode(&data, &src, &mut out).unwrap();
        assert_eq!(out, dst);
        assert!(
            data.len() * 3 < plain.len(),
            "{} vs {}",
            data.len(),
            plain.len()
        );
        // The transform undoes itself on any bytes.
        let mut any: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761u32) >> 7) as u8)
            .collect();
        let keep = any.clone();
        let ranges = [
            Range {
                offset: 3,
                entries: 100,
            },
            Range {
                offset: 2500,
                entries: 50,
            },
        ];
        forward(&mut any, &ranges, 24, 16);
        assert_ne!(any, keep);
        inverse(&mut any, &ranges, 24, 16);
        assert_eq!(any, keep);
    }

    /// The committed `op_decoders` fuzz seed of this kind (kind index 5 ·
    /// u16le destination length · u16le source length · source · data),
    /// checked here and written anew with `ROMDELTA_WRITE_FUZZ_SEEDS=1`.
    #[test]
    fn fuzz_seed_is_a_valid_operation() {
        let src = table(0x1000, 160, usize::MAX);
        let dst = table(0x1000, 160, 50);
        let r = vec![Range {
            offset: 30,
            entries: 160,
        }];
        let h = Header {
            inner: OpKind::SourceZstd,
            stride: 24,
            field: 0,
            src: r.clone(),
            dst: r,
        };
        let (mut s, mut d) = (src.clone(), dst.clone());
        forward(&mut s, &h.src, 24, 0);
        forward(&mut d, &h.dst, 24, 0);
        let data = encode(&h, &crate::ops::encode_source_zstd(&s, &d, 19));
        let mut out = vec![0; dst.len()];
        decode(&data, &src, &mut out).unwrap();
        assert_eq!(out, dst);
        let mut seed = vec![5u8];
        seed.extend_from_slice(&(dst.len() as u16).to_le_bytes());
        seed.extend_from_slice(&(src.len() as u16).to_le_bytes());
        seed.extend_from_slice(&src);
        seed.extend_from_slice(&data);
        crate::check_fuzz_seed("op_decoders", "seed-field-delta", &seed);
    }

    #[test]
    fn every_truncation_and_hostile_range_is_refused() {
        let (src, dst, data, _) = fixture();
        for cut in 0..data.len() {
            assert!(
                decode(&data[..cut], &src, &mut vec![0; dst.len()]).is_err(),
                "cut {cut}"
            );
        }
        let with = |f: &dyn Fn(&mut Header)| {
            let mut h = Header {
                inner: OpKind::SourceZstd,
                stride: 24,
                field: 0,
                src: vec![Range {
                    offset: 30,
                    entries: 3000,
                }],
                dst: vec![Range {
                    offset: 30,
                    entries: 3000,
                }],
            };
            f(&mut h);
            decode(&encode(&h, &[]), &src, &mut vec![0; dst.len()])
                .unwrap_err()
                .to_string()
        };
        assert!(with(&|h| h.dst[0].entries = 1 << 40).contains("do not fit"));
        assert!(with(&|h| h.src[0].entries = 1).contains("at least 2"));
        assert!(with(&|h| h.field = 17).contains("does not fit"));
        assert!(with(&|h| h.inner = OpKind::SourceCopy).contains("cannot be an inner patch"));
        assert!(with(&|h| h.src.push(Range {
            offset: 10,
            entries: 2
        }))
        .contains("do not fit"));
    }
}
