//! Payload signatures as update_engine makes and checks them: keys, the
//! two hashes a payload is signed over, signing and verification.
//!
//! A signed payload carries the same `Signatures` message twice (one
//! entry per signing key): after the manifest, over the SHA-256 of the
//! header and manifest (the metadata signature), and at the manifest's
//! `signatures_offset` after the blobs, over the SHA-256 of everything
//! before it except the metadata signature (the payload signature). Each
//! entry's `data` is padded with zeros to the key's largest signature (the
//! modulus for RSA, 72 bytes for P-256) so that the message's size is
//! known before signing, and `unpadded_signature_size` gives the real
//! length. RSA signatures are PKCS#1 v1.5 with SHA-256's DigestInfo, of
//! any modulus size; EC signatures are ECDSA P-256 over the raw 32-byte
//! hash, DER-encoded (RFC 6979 nonces: signing again gives the same
//! bytes).
//!
//! Trusted keys come from PEM files (public keys, RSA `RSA PUBLIC KEY`
//! or SubjectPublicKeyInfo, and X.509 certificates, several per file) or
//! from an `otacerts.zip` (the certificates a device keeps in
//! `/system/etc/security/otacerts.zip`).

use crate::payload::proto;
use prost::Message as _;
use romdelta_format::{Digest, FormatError};
use std::path::Path;

/// SHA-256's DigestInfo prefix (PKCS#1 v1.5).
const SHA256_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
/// The largest DER encoding of a P-256 ECDSA signature.
pub const P256_MAX_SIGNATURE: usize = 72;
/// Most keys or certificates read from one file.
const MAX_KEYS_PER_FILE: usize = 64;
/// Largest key file or otacerts.zip member read.
const MAX_KEY_FILE: u64 = 1 << 20;

fn pkcs1_sha256() -> rsa::Pkcs1v15Sign {
    rsa::Pkcs1v15Sign {
        hash_len: Some(32),
        prefix: Box::new(SHA256_PREFIX),
    }
}

/// Why keys could not be read, or a signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A key file could not be used.
    #[error("{path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Signatures were asked for and the payload has none.
    #[error("{what}: the payload is not signed, and trusted keys were given")]
    Unsigned {
        /// `metadata signature` or `payload signature`.
        what: &'static str,
    },
    /// No signature verified with any trusted key.
    #[error("{what}: none of its {count} signature(s) verifies with the trusted key(s) {keys}")]
    NoMatch {
        /// `metadata signature` or `payload signature`.
        what: &'static str,
        /// Signatures in the message.
        count: usize,
        /// The keys tried.
        keys: String,
    },
    /// The signature message is malformed.
    #[error("{what}: {reason}")]
    Malformed {
        /// `metadata signature` or `payload signature`.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// A public key signatures are checked with.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// Where it came from, and what it is (for messages).
    pub label: String,
    key: PublicKey,
}

#[derive(Debug, Clone)]
enum PublicKey {
    Rsa(rsa::RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
}

impl TrustedKey {
    /// Whether `sig` (raw, unpadded) is a signature of `hash` by this key.
    pub fn verifies(&self, hash: &Digest, sig: &[u8]) -> bool {
        match &self.key {
            PublicKey::Rsa(k) => {
                use rsa::traits::PublicKeyParts as _;
                sig.len() == k.size() && k.verify(pkcs1_sha256(), hash, sig).is_ok()
            }
            PublicKey::P256(k) => {
                use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
                p256::ecdsa::Signature::from_der(sig)
                    .is_ok_and(|s| k.verify_prehash(hash, &s).is_ok())
            }
        }
    }
}

fn describe_public(key: &PublicKey) -> String {
    match key {
        PublicKey::Rsa(k) => {
            use rsa::traits::PublicKeyParts as _;
            format!("RSA-{}", k.size() * 8)
        }
        PublicKey::P256(_) => "EC P-256".to_string(),
    }
}

fn public_from_spki_der(der: &[u8]) -> Option<PublicKey> {
    use rsa::pkcs8::DecodePublicKey as _;
    if let Ok(k) = rsa::RsaPublicKey::from_public_key_der(der) {
        return Some(PublicKey::Rsa(k));
    }
    p256::ecdsa::VerifyingKey::from_public_key_der(der)
        .ok()
        .map(PublicKey::P256)
}

/// The PEM blocks of `text`: (label, whole block).
fn pem_blocks(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + 11..];
        let Some(label_end) = after.find("-----") else {
            break;
        };
        let label = after[..label_end].to_string();
        let end_marker = format!("-----END {label}-----");
        let Some(end) = rest[start..].find(&end_marker) else {
            break;
        };
        let stop = start + end + end_marker.len();
        out.push((label, rest[start..stop].to_string()));
        rest = &rest[stop..];
    }
    out
}

/// The public keys in PEM `text` (from `origin`).
fn trusted_from_pem(text: &str, origin: &str) -> Result<Vec<TrustedKey>, SignatureError> {
    use rsa::pkcs1::DecodeRsaPublicKey as _;
    use x509_cert::der::{DecodePem as _, Encode as _};
    let err = |reason: String| SignatureError::Key {
        path: origin.to_string(),
        reason,
    };
    let mut out = Vec::new();
    let blocks = pem_blocks(text);
    if blocks.len() > MAX_KEYS_PER_FILE {
        return Err(err(format!(
            "{} PEM blocks, more than {MAX_KEYS_PER_FILE}",
            blocks.len()
        )));
    }
    for (label, block) in blocks {
        let (key, what) = match label.as_str() {
            "CERTIFICATE" => {
                let cert = x509_cert::Certificate::from_pem(block.as_bytes())
                    .map_err(|e| err(format!("certificate: {e}")))?;
                let spki = cert
                    .tbs_certificate
                    .subject_public_key_info
                    .to_der()
                    .map_err(|e| err(format!("certificate's key: {e}")))?;
                let key = public_from_spki_der(&spki).ok_or_else(|| {
                    err("the certificate's key is neither RSA nor EC P-256".into())
                })?;
                (key, format!("certificate {}", cert.tbs_certificate.subject))
            }
            "PUBLIC KEY" => {
                let (_, der) = x509_cert::der::pem::decode_vec(block.as_bytes())
                    .map_err(|e| err(format!("public key: {e}")))?;
                let key = public_from_spki_der(&der)
                    .ok_or_else(|| err("the public key is neither RSA nor EC P-256".into()))?;
                (key, "public key".to_string())
            }
            "RSA PUBLIC KEY" => {
                let k = rsa::RsaPublicKey::from_pkcs1_pem(&block)
                    .map_err(|e| err(format!("RSA public key: {e}")))?;
                (PublicKey::Rsa(k), "public key".to_string())
            }
            l if l.contains("PRIVATE KEY") => {
                return Err(err(
                    "a private key: give the public key or certificate (a private key is for signing, with --key)".into(),
                ))
            }
            other => return Err(err(format!("a PEM block of {other:?}, not a public key or certificate"))),
        };
        let label = format!("{origin} ({}, {what})", describe_public(&key));
        out.push(TrustedKey { label, key });
    }
    if out.is_empty() {
        return Err(err("no PEM public key or certificate in it".into()));
    }
    Ok(out)
}

/// Reads the trusted keys of `path`: a PEM file of public keys or X.509
/// certificates, or an `otacerts.zip` of certificates.
pub fn load_trusted_keys(path: &Path) -> Result<Vec<TrustedKey>, SignatureError> {
    use std::io::Read as _;
    let origin = path.display().to_string();
    let err = |reason: String| SignatureError::Key {
        path: origin.clone(),
        reason,
    };
    let f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut bytes = Vec::new();
    f.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(e.to_string()))?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(err(format!(
            "more than {MAX_KEY_FILE} bytes: not a key file"
        )));
    }
    if !bytes.starts_with(b"PK\x03\x04") {
        let text =
            String::from_utf8(bytes).map_err(|_| err("neither PEM text nor a zip".into()))?;
        return trusted_from_pem(&text, &origin);
    }
    let mut zip =
        zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| err(format!("zip: {e}")))?;
    let mut out = Vec::new();
    for i in 0..zip.len().min(MAX_KEYS_PER_FILE) {
        let mut entry = zip.by_index(i).map_err(|e| err(format!("zip: {e}")))?;
        if entry.is_dir() {
            continue;
        }
        let name = entry
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| format!("member {i}"));
        let mut text = Vec::new();
        (&mut entry)
            .take(MAX_KEY_FILE + 1)
            .read_to_end(&mut text)
            .map_err(|e| err(format!("zip: {name}: {e}")))?;
        let text = String::from_utf8(text).map_err(|_| err(format!("{name}: not PEM text")))?;
        out.extend(trusted_from_pem(&text, &format!("{origin}:{name}"))?);
    }
    if out.is_empty() {
        return Err(err("the zip holds no certificate".into()));
    }
    Ok(out)
}

/// A private key payloads are signed with.
pub struct SigningKey {
    /// Where it came from (for messages).
    pub label: String,
    key: PrivateKey,
}

enum PrivateKey {
    Rsa(Box<rsa::RsaPrivateKey>),
    P256(p256::ecdsa::SigningKey),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("label", &self.label)
            .finish()
    }
}

impl SigningKey {
    /// Reads a PEM private key: PKCS#8 (`PRIVATE KEY`, RSA or P-256),
    /// PKCS#1 (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`).
    pub fn from_pem_file(path: &Path) -> Result<Self, SignatureError> {
        let origin = path.display().to_string();
        let err = |reason: String| SignatureError::Key {
            path: origin.clone(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        Self::from_pem(&text).map_err(err).map(|mut k| {
            k.label = format!("{origin} ({})", k.label);
            k
        })
    }

    /// Reads a PEM private key from `text`.
    pub fn from_pem(text: &str) -> Result<Self, String> {
        use p256::pkcs8::DecodePrivateKey as _;
        use rsa::pkcs1::DecodeRsaPrivateKey as _;
        let Some((label, block)) = pem_blocks(text).into_iter().next() else {
            return Err("no PEM private key in it".into());
        };
        let key = match label.as_str() {
            "PRIVATE KEY" => rsa::RsaPrivateKey::from_pkcs8_pem(&block)
                .map(|k| PrivateKey::Rsa(Box::new(k)))
                .or_else(|_| p256::ecdsa::SigningKey::from_pkcs8_pem(&block).map(PrivateKey::P256))
                .map_err(|e| format!("a PKCS#8 key that is neither RSA nor EC P-256 ({e})"))?,
            "RSA PRIVATE KEY" => rsa::RsaPrivateKey::from_pkcs1_pem(&block)
                .map(|k| PrivateKey::Rsa(Box::new(k)))
                .map_err(|e| format!("RSA private key: {e}"))?,
            "EC PRIVATE KEY" => p256::SecretKey::from_sec1_pem(&block)
                .map(|k| PrivateKey::P256(k.into()))
                .map_err(|e| format!("EC private key (P-256 only): {e}"))?,
            other => return Err(format!("a PEM block of {other:?}, not a private key")),
        };
        let label = match &key {
            PrivateKey::Rsa(k) => {
                use rsa::traits::PublicKeyParts as _;
                format!("RSA-{}", k.size() * 8)
            }
            PrivateKey::P256(_) => "EC P-256".into(),
        };
        Ok(SigningKey { label, key })
    }

    /// The bytes its signatures are padded to.
    pub fn max_signature_len(&self) -> usize {
        match &self.key {
            PrivateKey::Rsa(k) => {
                use rsa::traits::PublicKeyParts as _;
                k.size()
            }
            PrivateKey::P256(_) => P256_MAX_SIGNATURE,
        }
    }

    /// Signs a SHA-256 `hash` (raw signature bytes).
    pub fn sign(&self, hash: &Digest) -> Vec<u8> {
        match &self.key {
            PrivateKey::Rsa(k) => k
                .sign(pkcs1_sha256(), hash)
                .expect("PKCS#1 v1.5 signs a 32-byte hash with any RSA key of 62 bytes or more"),
            PrivateKey::P256(k) => {
                use p256::ecdsa::signature::hazmat::PrehashSigner as _;
                let s: p256::ecdsa::Signature =
                    k.sign_prehash(hash).expect("a 32-byte prehash signs");
                s.to_der().as_bytes().to_vec()
            }
        }
    }

    /// The key's public half.
    pub fn trusted(&self) -> TrustedKey {
        let key = match &self.key {
            PrivateKey::Rsa(k) => PublicKey::Rsa(k.to_public_key()),
            PrivateKey::P256(k) => PublicKey::P256(*k.verifying_key()),
        };
        TrustedKey {
            label: self.label.clone(),
            key,
        }
    }
}

/// The `Signatures` message of `keys` over `hash`, each entry padded to
/// its key's largest signature.
pub fn signatures_message(keys: &[SigningKey], hash: &Digest) -> Vec<u8> {
    let signatures = keys
        .iter()
        .map(|k| {
            let mut data = k.sign(hash);
            let unpadded = data.len() as u32;
            data.resize(k.max_signature_len(), 0);
            proto::Signature {
                version: None,
                data: Some(data),
                unpadded_signature_size: Some(unpadded),
            }
        })
        .collect();
    proto::Signatures { signatures }.encode_to_vec()
}

/// Bytes of [`signatures_message`] for `keys` (the same for every hash).
pub fn signatures_size(keys: &[SigningKey]) -> u64 {
    signatures_message(keys, &[0u8; 32]).len() as u64
}

/// Checks a `Signatures` message (`what`: `metadata signature` or
/// `payload signature`) over `hash`: at least one of its signatures must
/// verify with one of `keys`. Returns the label of the key that did.
pub fn verify(
    what: &'static str,
    message: &[u8],
    hash: &Digest,
    keys: &[TrustedKey],
) -> Result<String, SignatureError> {
    if message.is_empty() {
        return Err(SignatureError::Unsigned { what });
    }
    let sigs = proto::Signatures::decode(message).map_err(|e| SignatureError::Malformed {
        what,
        reason: e.to_string(),
    })?;
    if sigs.signatures.is_empty() {
        return Err(SignatureError::Unsigned { what });
    }
    for s in &sigs.signatures {
        let data = s.data.as_deref().unwrap_or_default();
        let raw = match s.unpadded_signature_size {
            Some(n) if n as usize <= data.len() => &data[..n as usize],
            Some(n) => {
                return Err(SignatureError::Malformed {
                    what,
                    reason: format!(
                        "unpadded_signature_size {n} is larger than its {} bytes",
                        data.len()
                    ),
                })
            }
            None => data,
        };
        if let Some(k) = keys.iter().find(|k| k.verifies(hash, raw)) {
            return Ok(k.label.clone());
        }
    }
    Err(SignatureError::NoMatch {
        what,
        count: sigs.signatures.len(),
        keys: keys
            .iter()
            .map(|k| k.label.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// The two hashes a payload is signed over, from its bytes: the metadata
/// hash (header and manifest, `metadata_len` bytes) and the payload hash
/// (all before the payload signature at `signatures_at`, without the
/// metadata signature of `metadata_signature_len` bytes).
pub fn payload_hashes(
    bytes: &[u8],
    metadata_len: usize,
    metadata_signature_len: usize,
    signatures_at: usize,
    done: &dyn Fn(usize, usize),
) -> Result<(Digest, Digest), FormatError> {
    use sha2::Digest as _;
    let data_start = metadata_len + metadata_signature_len;
    if signatures_at < data_start || signatures_at > bytes.len() {
        return Err(FormatError::invalid(
            "payload signatures",
            format!("at byte {signatures_at}, outside the payload's blobs"),
        ));
    }
    let meta = romdelta_format::sha256(&bytes[..metadata_len]);
    let mut h = sha2::Sha256::new();
    h.update(&bytes[..metadata_len]);
    // In 8 MiB pieces, each handed to `done` once hashed (a caller whose
    // bytes are mapped lets the pages go).
    let mut at = data_start;
    while at < signatures_at {
        let end = (at + (8 << 20)).min(signatures_at);
        h.update(&bytes[at..end]);
        done(at, end - at);
        at = end;
    }
    Ok((meta, h.finalize().into()))
}

/// What [`sign_payload`] wrote.
#[derive(Debug, Clone)]
pub struct Signed {
    /// Bytes written.
    pub len: u64,
    /// The signed payload's `payload_properties.txt`.
    pub properties: String,
}

/// Writes `payload` (unsigned) to `out` signed with `keys`, as
/// update_engine's `PayloadSigner` does: the manifest gains
/// `signatures_offset` (the blobs' length) and `signatures_size`, the
/// header the metadata signature's length, then both signatures are
/// computed and placed. Only the manifest is re-encoded; blobs are copied.
pub fn sign_payload(
    payload: &crate::payload::Payload<'_>,
    keys: &[SigningKey],
    out: &mut dyn std::io::Write,
) -> Result<Signed, FormatError> {
    use sha2::Digest as _;
    if payload.signatures.is_some() || !payload.metadata_signature.is_empty() {
        return Err(FormatError::invalid(
            "payload",
            "already signed: sign the unsigned payload",
        ));
    }
    if keys.is_empty() {
        return Err(FormatError::invalid("payload signing", "no key"));
    }
    let size = signatures_size(keys);
    let mut m = payload.manifest.clone();
    m.signatures_offset = Some(payload.blobs.len() as u64);
    m.signatures_size = Some(size);
    let manifest = m.encode_to_vec();
    let header = crate::payload::PayloadHeader {
        major_version: crate::payload::MAJOR_VERSION,
        manifest_len: manifest.len() as u64,
        metadata_signature_len: size as u32,
    };
    let mut prefix = header.encode().to_vec();
    prefix.extend(manifest);
    let meta_hash = romdelta_format::sha256(&prefix);
    let meta_sig = signatures_message(keys, &meta_hash);
    let mut h = sha2::Sha256::new();
    h.update(&prefix);
    h.update(payload.blobs);
    let sig = signatures_message(keys, &h.finalize().into());
    let io = |e: std::io::Error| FormatError::invalid("signed payload", e.to_string());
    let mut file = sha2::Sha256::new();
    for part in [&prefix[..], &meta_sig, payload.blobs, &sig] {
        file.update(part);
        out.write_all(part).map_err(io)?;
    }
    let len = (prefix.len() + meta_sig.len() + payload.blobs.len() + sig.len()) as u64;
    let properties = crate::payload::properties::render_hashes(
        &file.finalize().into(),
        len,
        &meta_hash,
        prefix.len() as u64,
    );
    Ok(Signed { len, properties })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_PEM: &str = include_str!("../testdata/rsa2048.key.pem");
    const EC_PEM: &str = include_str!("../testdata/p256.key.pem");

    #[test]
    fn signing_and_verifying_round_trip_and_fail_with_another_key() {
        let rsa = SigningKey::from_pem(RSA_PEM).unwrap();
        let ec = SigningKey::from_pem(EC_PEM).unwrap();
        let hash = romdelta_format::sha256(b"payload");
        let other = romdelta_format::sha256(b"another");
        for k in [&rsa, &ec] {
            let msg = signatures_message(std::slice::from_ref(k), &hash);
            assert_eq!(msg.len() as u64, signatures_size(std::slice::from_ref(k)));
            let t = k.trusted();
            verify("payload signature", &msg, &hash, std::slice::from_ref(&t)).unwrap();
            let e =
                verify("payload signature", &msg, &other, std::slice::from_ref(&t)).unwrap_err();
            assert!(matches!(e, SignatureError::NoMatch { count: 1, .. }), "{e}");
        }
        // Each key verifies only its own signature.
        let both = [rsa, ec];
        let msg = signatures_message(&both[..1], &hash);
        assert!(verify("m", &msg, &hash, &[both[1].trusted()]).is_err());
        // Two signatures: either key suffices.
        let msg = signatures_message(&both, &hash);
        assert!(verify("m", &msg, &hash, &[both[1].trusted()]).is_ok());
        assert!(matches!(
            verify("m", &[], &hash, &[both[0].trusted()]),
            Err(SignatureError::Unsigned { .. })
        ));
        assert!(matches!(
            verify("m", &[0xff, 0xff], &hash, &[both[0].trusted()]),
            Err(SignatureError::Malformed { .. })
        ));
    }

    #[test]
    fn ecdsa_is_deterministic() {
        let ec = SigningKey::from_pem(EC_PEM).unwrap();
        let h = romdelta_format::sha256(b"x");
        assert_eq!(ec.sign(&h), ec.sign(&h));
    }

    #[test]
    fn key_files_that_are_not_keys_are_refused() {
        assert!(trusted_from_pem("hello", "f").is_err());
        let e = trusted_from_pem(RSA_PEM, "f").unwrap_err().to_string();
        assert!(e.contains("private key"), "{e}");
        assert!(SigningKey::from_pem(
            "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----"
        )
        .is_err());
    }
}
