//! `payload_properties.txt`, which OTA zips carry beside `payload.bin`:
//! `KEY=VALUE` lines giving the payload's size and SHA-256 (`FILE_SIZE`,
//! `FILE_HASH`) and those of its metadata, the header and manifest
//! (`METADATA_SIZE`, `METADATA_HASH`); hashes in standard base64.

use romdelta_format::{Digest, FormatError};

/// Largest properties file accepted.
pub const MAX_LEN: u64 = 64 << 10;

/// The sizes and hashes a properties file records (each optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    /// Bytes of the whole payload.
    pub file_size: Option<u64>,
    /// SHA-256 of the whole payload.
    pub file_hash: Option<Digest>,
    /// Bytes of the header and manifest.
    pub metadata_size: Option<u64>,
    /// SHA-256 of the header and manifest.
    pub metadata_hash: Option<Digest>,
}

/// Decodes standard base64 (with `=` padding) of exactly 32 bytes.
fn base64_digest(s: &str, what: &'static str) -> Result<Digest, FormatError> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bad = || FormatError::invalid(what, format!("{s:?} is not the base64 of a SHA-256"));
    let b = s.as_bytes();
    // 32 bytes: 43 characters and one `=`.
    if b.len() != 44 || b[43] != b'=' {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(33);
    for chunk in b.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = if c == b'=' && i == 3 {
                0
            } else {
                val(c).ok_or_else(bad)?
            };
            n |= v << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..]);
    }
    out.truncate(32);
    out.try_into().map_err(|_| bad())
}

/// Parses a properties file; unknown keys are ignored, a known key with a
/// bad value is an error.
pub fn parse(text: &[u8]) -> Result<Properties, FormatError> {
    if text.len() as u64 > MAX_LEN {
        return Err(FormatError::TooLarge {
            what: "payload_properties.txt",
            value: text.len() as u64,
            limit: MAX_LEN,
        });
    }
    let text = std::str::from_utf8(text)
        .map_err(|_| FormatError::invalid("payload_properties.txt", "not UTF-8"))?;
    let mut p = Properties::default();
    for line in text.lines() {
        let Some((k, v)) = line.trim().split_once('=') else {
            continue;
        };
        let size = |what| {
            v.parse::<u64>()
                .map_err(|_| FormatError::invalid(what, format!("{v:?} is not a size")))
        };
        match k {
            "FILE_SIZE" => p.file_size = Some(size("FILE_SIZE")?),
            "METADATA_SIZE" => p.metadata_size = Some(size("METADATA_SIZE")?),
            "FILE_HASH" => p.file_hash = Some(base64_digest(v, "FILE_HASH")?),
            "METADATA_HASH" => p.metadata_hash = Some(base64_digest(v, "METADATA_HASH")?),
            _ => {}
        }
    }
    Ok(p)
}

/// The properties file of `payload` (whose metadata is its first
/// `metadata_size` bytes: header and manifest).
pub fn render(payload: &[u8], metadata_size: u64) -> String {
    let meta = &payload[..(metadata_size as usize).min(payload.len())];
    render_hashes(
        &romdelta_format::sha256(payload),
        payload.len() as u64,
        &romdelta_format::sha256(meta),
        metadata_size,
    )
}

/// The `payload_properties.txt` of a payload whose hashes are known.
pub fn render_hashes(
    file_hash: &Digest,
    file_size: u64,
    metadata_hash: &Digest,
    metadata_size: u64,
) -> String {
    format!(
        "FILE_HASH={}\nFILE_SIZE={}\nMETADATA_HASH={}\nMETADATA_SIZE={}\n",
        base64(file_hash),
        file_size,
        base64(metadata_hash),
        metadata_size
    )
}

/// Standard base64 with padding.
pub fn base64(d: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for chunk in d.chunks(3) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= u32::from(c) << (16 - 8 * i);
        }
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_properties_parse_back() {
        let payload: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let text = render(&payload, 100);
        let p = parse(text.as_bytes()).unwrap();
        assert_eq!(p.file_size, Some(1000));
        assert_eq!(p.file_hash, Some(romdelta_format::sha256(&payload)));
        assert_eq!(p.metadata_size, Some(100));
        assert_eq!(
            p.metadata_hash,
            Some(romdelta_format::sha256(&payload[..100]))
        );
        // Known vector: SHA-256 of "" in base64.
        let empty = parse(b"FILE_HASH=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n").unwrap();
        assert_eq!(empty.file_hash, Some(romdelta_format::sha256(b"")));
        for bad in [
            "FILE_HASH=abc",
            "FILE_SIZE=-1",
            "FILE_HASH=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuF!=",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad}");
        }
        assert_eq!(parse(b"OTHER=1\nnoise\n").unwrap(), Properties::default());
    }
}
