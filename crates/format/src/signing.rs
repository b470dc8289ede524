//! Ed25519 signatures over the manifest, and the key files that hold keys.
//!
//! A key file is two lines of text: a tag line and the 32-byte key in hex.
//! ```text
//! romdelta ed25519 private key
//! 9f0c…(64 hex digits)
//! ```
//! The public key file has the tag `romdelta ed25519 public key`.

use crate::{FormatError, Signature};
pub use ed25519_dalek::{SigningKey, VerifyingKey};

const PRIVATE_TAG: &str = "romdelta ed25519 private key";
const PUBLIC_TAG: &str = "romdelta ed25519 public key";

fn parse_key_file(text: &str, tag: &'static str) -> Result<[u8; 32], FormatError> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next() != Some(tag) {
        return Err(FormatError::invalid(
            "key file",
            format!("first line must be {tag:?}"),
        ));
    }
    let key = lines
        .next()
        .ok_or_else(|| FormatError::invalid("key file", "no key line"))?;
    if lines.next().is_some() {
        return Err(FormatError::invalid("key file", "more than two lines"));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(key, &mut out)
        .map_err(|_| FormatError::invalid("key file", "the key line is not 64 hex digits"))?;
    Ok(out)
}

/// Parses a private key file.
pub fn parse_private_key(text: &str) -> Result<SigningKey, FormatError> {
    Ok(SigningKey::from_bytes(&parse_key_file(text, PRIVATE_TAG)?))
}

/// Parses a public key file.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, FormatError> {
    VerifyingKey::from_bytes(&parse_key_file(text, PUBLIC_TAG)?)
        .map_err(|_| FormatError::invalid("key file", "not a valid Ed25519 public key"))
}

/// The private key file text for `key`.
pub fn private_key_file(key: &SigningKey) -> String {
    format!("{PRIVATE_TAG}\n{}\n", hex::encode(key.to_bytes()))
}

/// The public key file text for `key`.
pub fn public_key_file(key: &VerifyingKey) -> String {
    format!("{PUBLIC_TAG}\n{}\n", hex::encode(key.to_bytes()))
}

/// Signs encoded manifest bytes.
pub fn sign(manifest_bytes: &[u8], key: &SigningKey) -> Signature {
    use ed25519_dalek::Signer as _;
    Signature {
        algorithm: Signature::ED25519,
        public_key: key.verifying_key().to_bytes(),
        signature: key
            .sign(&Signature::signed_message(manifest_bytes))
            .to_bytes(),
    }
}

/// Why a package's signatures are not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    /// No signature at all.
    #[error("the package is not signed")]
    Unsigned,
    /// Signed, but by no trusted key.
    #[error("the package is signed by {signers}, none of them a trusted key ({trusted})")]
    Untrusted {
        /// Hex public keys that signed.
        signers: String,
        /// Hex public keys trusted.
        trusted: String,
    },
    /// A trusted key's signature does not match the manifest.
    #[error(
        "the signature by trusted key {key} does not match the manifest: the package was altered"
    )]
    BadSignature {
        /// Hex public key.
        key: String,
    },
}

/// Accepts the package when at least one signature by a trusted key
/// verifies (strict Ed25519 verification); returns that key.
pub fn check_trust(
    manifest_bytes: &[u8],
    signatures: &[Signature],
    trusted: &[VerifyingKey],
) -> Result<VerifyingKey, TrustError> {
    if signatures.is_empty() {
        return Err(TrustError::Unsigned);
    }
    let message = Signature::signed_message(manifest_bytes);
    let mut bad = None;
    for s in signatures {
        let Some(key) = trusted.iter().find(|k| k.to_bytes() == s.public_key) else {
            continue;
        };
        let sig = ed25519_dalek::Signature::from_bytes(&s.signature);
        if key.verify_strict(&message, &sig).is_ok() {
            return Ok(*key);
        }
        bad.get_or_insert(hex::encode(s.public_key));
    }
    match bad {
        Some(key) => Err(TrustError::BadSignature { key }),
        None => Err(TrustError::Untrusted {
            signers: signatures
                .iter()
                .map(|s| hex::encode(s.public_key))
                .collect::<Vec<_>>()
                .join(", "),
            trusted: trusted
                .iter()
                .map(|k| hex::encode(k.to_bytes()))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_refuse() {
        let k1 = SigningKey::from_bytes(&[1; 32]);
        let k2 = SigningKey::from_bytes(&[2; 32]);
        let m = b"manifest bytes";
        let s1 = sign(m, &k1);
        assert!(check_trust(m, std::slice::from_ref(&s1), &[k1.verifying_key()]).is_ok());
        // Rotation: several trusted keys, several signatures.
        let s2 = sign(m, &k2);
        assert!(check_trust(m, &[s2.clone(), s1.clone()], &[k2.verifying_key()]).is_ok());
        assert_eq!(
            check_trust(m, &[], &[k1.verifying_key()]),
            Err(TrustError::Unsigned)
        );
        assert!(matches!(
            check_trust(m, &[s2], &[k1.verifying_key()]),
            Err(TrustError::Untrusted { .. })
        ));
        assert!(matches!(
            check_trust(
                b"other manifest",
                std::slice::from_ref(&s1),
                &[k1.verifying_key()]
            ),
            Err(TrustError::BadSignature { .. })
        ));
        let mut tampered = s1;
        tampered.signature[5] ^= 1;
        assert!(check_trust(m, &[tampered], &[k1.verifying_key()]).is_err());
    }

    #[test]
    fn key_files_round_trip_and_reject_junk() {
        let k = SigningKey::from_bytes(&[9; 32]);
        let private = private_key_file(&k);
        let public = public_key_file(&k.verifying_key());
        assert_eq!(
            parse_private_key(&private).unwrap().to_bytes(),
            k.to_bytes()
        );
        assert_eq!(parse_public_key(&public).unwrap(), k.verifying_key());
        assert!(parse_public_key(&private).is_err());
        assert!(parse_private_key(&public).is_err());
        assert!(parse_public_key("romdelta ed25519 public key\nzz\n").is_err());
        assert!(parse_public_key("").is_err());
    }
}
