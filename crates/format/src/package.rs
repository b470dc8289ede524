//! The package container: header · manifest · signatures · data.

use crate::limits::{MAX_MANIFEST_LEN, MAX_SIGNATURES_LEN};
use crate::{Digest, FormatError, Manifest, Reader, Writer, FORMAT_VERSION, OLDEST_FORMAT_VERSION};

/// The first eight bytes of every package.
pub const MAGIC: [u8; 8] = *b"ROMDELTA";
/// Length of the fixed header: 40 bytes of fields and a 32-byte checksum.
pub const HEADER_LEN: u64 = 72;
/// Length of the header fields that the checksum covers.
const FIELDS_LEN: usize = 40;

/// The fixed-size header at the start of a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Format version ([`FORMAT_VERSION`]).
    pub version: u32,
    /// Length of the manifest that follows the header.
    pub manifest_len: u64,
    /// Length of the signature section that follows the manifest.
    pub signatures_len: u64,
    /// Length of the data section that follows the signatures.
    pub data_len: u64,
    /// SHA-256 of the 40 header bytes before it, the manifest and the
    /// signature section: an integrity check over everything but the data
    /// (which the manifest covers with per-operation hashes).
    pub checksum: Digest,
}

impl Header {
    /// Parses the header from the first [`HEADER_LEN`] bytes of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes);
        if r.take(8, "magic")? != MAGIC {
            return Err(FormatError::BadMagic);
        }
        let version = r.u32_le("format version")?;
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(FormatError::UnsupportedVersion {
                found: version,
                oldest: OLDEST_FORMAT_VERSION,
                newest: FORMAT_VERSION,
            });
        }
        let flags = r.u32_le("header flags")?;
        if flags != 0 {
            return Err(FormatError::invalid(
                "header flags",
                format!("{flags:#x} (no flags are defined in version {version})"),
            ));
        }
        let manifest_len = r.u64_le("manifest length")?;
        let signatures_len = r.u64_le("signatures length")?;
        let data_len = r.u64_le("data length")?;
        let checksum = r.digest("header checksum")?;
        if manifest_len > MAX_MANIFEST_LEN {
            return Err(FormatError::TooLarge {
                what: "manifest",
                value: manifest_len,
                limit: MAX_MANIFEST_LEN,
            });
        }
        if signatures_len > MAX_SIGNATURES_LEN {
            return Err(FormatError::TooLarge {
                what: "signature section",
                value: signatures_len,
                limit: MAX_SIGNATURES_LEN,
            });
        }
        Ok(Header {
            version,
            manifest_len,
            signatures_len,
            data_len,
            checksum,
        })
    }

    /// The checksum of header fields, manifest bytes and signature bytes.
    pub fn compute_checksum(&self, manifest: &[u8], signatures: &[u8]) -> Digest {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(&self.encode()[..FIELDS_LEN]);
        h.update(manifest);
        h.update(signatures);
        h.finalize().into()
    }

    /// Checks the checksum against the sections that follow the header.
    pub fn check_checksum(&self, manifest: &[u8], signatures: &[u8]) -> Result<(), FormatError> {
        let actual = self.compute_checksum(manifest, signatures);
        if actual != self.checksum {
            return Err(FormatError::invalid(
                "header checksum",
                format!(
                    "header, manifest or signatures are damaged: expected sha256 {}, found {}",
                    hex::encode(self.checksum),
                    hex::encode(actual)
                ),
            ));
        }
        Ok(())
    }

    /// Encodes the header.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(&MAGIC);
        w.u32_le(self.version);
        w.u32_le(0);
        w.u64_le(self.manifest_len);
        w.u64_le(self.signatures_len);
        w.u64_le(self.data_len);
        w.bytes(&self.checksum);
        w.into_bytes()
    }

    /// Offset of the data section from the start of the package.
    pub fn data_offset(&self) -> u64 {
        HEADER_LEN + self.manifest_len + self.signatures_len
    }

    /// Checks that a package of `have` bytes is exactly as long as this
    /// header says: neither cut short nor followed by anything.
    pub fn check_len(&self, have: u64) -> Result<(), FormatError> {
        let total = self
            .total_len()
            .ok_or_else(|| FormatError::invalid("header", "section lengths overflow"))?;
        if total > have {
            return Err(FormatError::Truncated {
                what: "package",
                need: total - have,
                have: have.saturating_sub(HEADER_LEN),
            });
        }
        if total < have {
            return Err(FormatError::Trailing {
                what: "package",
                extra: have - total,
            });
        }
        Ok(())
    }

    /// Total package length the header announces (`None` on overflow).
    pub fn total_len(&self) -> Option<u64> {
        self.data_offset().checked_add(self.data_len)
    }
}

/// A signature over the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// Algorithm code: 1 = Ed25519.
    pub algorithm: u8,
    /// The signer's public key (32 bytes for Ed25519).
    pub public_key: [u8; 32],
    /// The signature (64 bytes for Ed25519).
    pub signature: [u8; 64],
}

impl Signature {
    /// Algorithm code of Ed25519.
    pub const ED25519: u8 = 1;

    /// Parses a signature section.
    pub fn decode_all(bytes: &[u8]) -> Result<Vec<Signature>, FormatError> {
        let mut r = Reader::new(bytes);
        let n = r.count("signature count", 97, 64)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let algorithm = r.u8("signature algorithm")?;
            if algorithm != Self::ED25519 {
                return Err(FormatError::invalid(
                    "signature algorithm",
                    format!("unknown code {algorithm}"),
                ));
            }
            out.push(Signature {
                algorithm,
                public_key: r.take(32, "public key")?.try_into().expect("32"),
                signature: r.take(64, "signature")?.try_into().expect("64"),
            });
        }
        r.finish("signature section")?;
        Ok(out)
    }

    /// Encodes a signature section.
    pub fn encode_all(sigs: &[Signature]) -> Vec<u8> {
        let mut w = Writer::new();
        w.varint(sigs.len() as u64);
        for s in sigs {
            w.u8(s.algorithm);
            w.bytes(&s.public_key);
            w.bytes(&s.signature);
        }
        w.into_bytes()
    }

    /// The message a signature signs: a domain tag and the manifest bytes.
    pub fn signed_message(manifest_bytes: &[u8]) -> Vec<u8> {
        let mut m = b"romdelta manifest v1\0".to_vec();
        m.extend_from_slice(manifest_bytes);
        m
    }
}

/// Decodes the manifest that follows `header` and checks it against the
/// header: its operation kinds within the header's version, its data
/// length the header's.
fn decode_manifest(header: &Header, manifest_bytes: &[u8]) -> Result<Manifest, FormatError> {
    let manifest = Manifest::decode(manifest_bytes)?;
    let needs = manifest.oldest_readable_version();
    if needs > header.version {
        return Err(FormatError::invalid(
            "manifest",
            format!(
                "uses operation kinds of format version {needs}, the header says version {}",
                header.version
            ),
        ));
    }
    if manifest.data_len != header.data_len {
        return Err(FormatError::invalid(
            "manifest",
            format!(
                "data length {} differs from the header's {}",
                manifest.data_len, header.data_len
            ),
        ));
    }
    Ok(manifest)
}

/// What precedes a package's data section, in memory of the reader's own:
/// the header, the manifest's bytes (not decoded yet) and the signatures.
///
/// An applier reads the prefix once, checks the signatures over
/// [`Prefix::manifest_bytes`] and only then decodes the manifest from those
/// very bytes ([`Prefix::manifest`]): what was verified is what is used,
/// and a manifest nobody vouches for is never decoded.
#[derive(Debug, Clone)]
pub struct Prefix {
    /// The header.
    pub header: Header,
    /// The manifest's bytes, as the signatures sign them.
    pub manifest_bytes: Vec<u8>,
    /// The signatures.
    pub signatures: Vec<Signature>,
}

impl Prefix {
    /// Checks the header's checksum over the two sections that follow it
    /// and decodes the signatures.
    pub fn new(
        header: Header,
        manifest_bytes: Vec<u8>,
        sig_bytes: &[u8],
    ) -> Result<Self, FormatError> {
        if manifest_bytes.len() as u64 != header.manifest_len
            || sig_bytes.len() as u64 != header.signatures_len
        {
            return Err(FormatError::invalid(
                "package",
                "manifest or signature section of another length than the header says",
            ));
        }
        header.check_checksum(&manifest_bytes, sig_bytes)?;
        let signatures = Signature::decode_all(sig_bytes)?;
        Ok(Prefix {
            header,
            manifest_bytes,
            signatures,
        })
    }

    /// Decodes and validates the manifest (after its signatures are checked).
    pub fn manifest(&self) -> Result<Manifest, FormatError> {
        decode_manifest(&self.header, &self.manifest_bytes)
    }

    /// SHA-256 of the manifest's bytes: what names this package in journals
    /// and device state.
    pub fn manifest_sha256(&self) -> Digest {
        crate::sha256(&self.manifest_bytes)
    }
}

/// A parsed package whose bytes are all in memory.
#[derive(Debug, Clone)]
pub struct Package<'a> {
    /// The header.
    pub header: Header,
    /// The manifest, structurally validated.
    pub manifest: Manifest,
    /// The raw manifest bytes (what signatures sign).
    pub manifest_bytes: &'a [u8],
    /// The signatures.
    pub signatures: Vec<Signature>,
    /// The data section.
    pub data: &'a [u8],
}

impl<'a> Package<'a> {
    /// Parses a whole package. The header's lengths must add up to exactly
    /// `bytes.len()`, and the manifest's data length must equal the header's.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FormatError> {
        let header = Header::decode(bytes)?;
        header.check_len(bytes.len() as u64)?;
        let mut r = Reader::new(bytes);
        r.take(HEADER_LEN, "header")?;
        let manifest_bytes = r.take(header.manifest_len, "manifest")?;
        let sig_bytes = r.take(header.signatures_len, "signatures")?;
        let data = r.take(header.data_len, "data")?;
        let (manifest, signatures) = Self::parse_sections(&header, manifest_bytes, sig_bytes)?;
        Ok(Package {
            header,
            manifest,
            manifest_bytes,
            signatures,
            data,
        })
    }

    /// Parses the manifest and signature sections that follow a header; for
    /// readers that hold the data section elsewhere.
    pub fn parse_sections(
        header: &Header,
        manifest_bytes: &[u8],
        sig_bytes: &[u8],
    ) -> Result<(Manifest, Vec<Signature>), FormatError> {
        header.check_checksum(manifest_bytes, sig_bytes)?;
        let signatures = Signature::decode_all(sig_bytes)?;
        let manifest = decode_manifest(header, manifest_bytes)?;
        Ok((manifest, signatures))
    }

    /// Assembles the bytes that precede the data section.
    pub fn encode_prefix(manifest: &Manifest, signatures: &[Signature]) -> Vec<u8> {
        Self::encode_prefix_bytes(
            manifest.format_version(),
            &manifest.encode(),
            manifest.data_len,
            signatures,
        )
    }

    /// Assembles the bytes that precede the data section around manifest
    /// bytes already encoded (the very bytes the signatures were made over),
    /// with format `version` (the manifest's [`Manifest::format_version`]).
    pub fn encode_prefix_bytes(
        version: u32,
        m: &[u8],
        data_len: u64,
        signatures: &[Signature],
    ) -> Vec<u8> {
        let s = Signature::encode_all(signatures);
        let mut header = Header {
            version,
            manifest_len: m.len() as u64,
            signatures_len: s.len() as u64,
            data_len,
            checksum: [0; 32],
        };
        header.checksum = header.compute_checksum(m, &s);
        let mut out = header.encode();
        out.extend_from_slice(m);
        out.extend_from_slice(&s);
        out
    }

    /// The data of operation `op`, already bounds-checked by the manifest rules.
    pub fn op_data(&self, op: &crate::Operation) -> &'a [u8] {
        let start = op.data_offset as usize;
        &self.data[start..start + op.data_length as usize]
    }
}
