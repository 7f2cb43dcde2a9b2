//! Ed25519 signatures of a bundle's manifest. The manifest holds the sha256
//! of every other file, so one signature over its exact bytes covers the
//! whole bundle: checksums prove integrity, the signature proves origin.
//!
//! Keys and signatures are one line of lowercase hex: a public key file 64
//! digits (32 bytes), a secret key file 64 digits (the 32-byte seed), the
//! signature file `manifest.sig` 128 digits (64 bytes).

use std::path::Path;

pub use ed25519_dalek::{Signature, SigningKey, VerifyingKey};

use crate::bundle::{read_bounded, BundleError};

/// The signature of `manifest.toml`, beside it in the bundle.
pub const SIGNATURE: &str = "manifest.sig";
/// Largest key or signature file read (one line of hex and some spaces).
pub const MAX_SIGNATURE_FILE_BYTES: u64 = 4096;

/// Decodes a file holding one line of hex of exactly `N` bytes.
pub fn read_hex<const N: usize>(path: &Path, what: &str) -> Result<[u8; N], BundleError> {
    let bytes = read_bounded(path, MAX_SIGNATURE_FILE_BYTES)?;
    parse_hex(&bytes).map_err(|why| BundleError::Signature {
        path: path.to_path_buf(),
        why: format!("not {what}: {why}"),
    })
}

fn parse_hex<const N: usize>(bytes: &[u8]) -> Result<[u8; N], String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| "not text".to_string())?
        .trim();
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out)
        .map_err(|e| format!("expected {} hex digits: {e}", 2 * N))?;
    Ok(out)
}

/// Reads a public key file (as `clip-quantize keygen` writes `KEY.pub`).
/// A `KEY` with a `KEY.pub` beside it is refused: it is the secret half of
/// that pair, in the same form, which would either not parse as a public
/// key or refuse every bundle that key signed (and a secret key does not
/// belong on a board).
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, BundleError> {
    let public = path.with_file_name(format!(
        "{}.pub",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    if path.extension().is_none_or(|e| e != "pub") && public.is_file() {
        return Err(BundleError::Signature {
            path: path.to_path_buf(),
            why: format!(
                "this is a secret key (the public key is {}); --require-signature takes KEY.pub, and the secret key stays where bundles are signed",
                public.display()
            ),
        });
    }
    let b = read_hex::<32>(path, "an ed25519 public key")?;
    VerifyingKey::from_bytes(&b).map_err(|e| BundleError::Signature {
        path: path.to_path_buf(),
        why: format!("not an ed25519 public key: {e}"),
    })
}

/// Reads a secret key file (the 32-byte seed `clip-quantize keygen` writes).
/// `KEY.pub` beside a `KEY` is refused: it is the public half of that pair,
/// in the same form, and a bundle signed with it would be refused by every
/// board.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, BundleError> {
    if path.extension().is_some_and(|e| e == "pub") && path.with_extension("").is_file() {
        return Err(BundleError::Signature {
            path: path.to_path_buf(),
            why: "this is a public key (KEY.pub, for clip-edge --require-signature); signing takes the secret key KEY".into(),
        });
    }
    Ok(SigningKey::from_bytes(&read_hex::<32>(
        path,
        "an ed25519 secret key",
    )?))
}

/// The contents of a signature file for `manifest`.
pub fn sign(key: &SigningKey, manifest: &[u8]) -> String {
    use ed25519_dalek::Signer;
    hex::encode(key.sign(manifest).to_bytes()) + "\n"
}

/// The contents of a key file.
pub fn key_file(bytes: &[u8; 32]) -> String {
    hex::encode(bytes) + "\n"
}

/// Why a signature file does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("not a signature: {0}")]
    Unreadable(String),
    #[error("the signature does not match this manifest and key: the bundle was changed or signed by another key")]
    Mismatch,
}

/// Checks the contents of a signature file against the manifest's bytes.
pub fn verify(key: &VerifyingKey, manifest: &[u8], sig_file: &[u8]) -> Result<(), SignatureError> {
    let sig: [u8; 64] = parse_hex(sig_file).map_err(SignatureError::Unreadable)?;
    key.verify_strict(manifest, &Signature::from_bytes(&sig))
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_its_manifest_and_key() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let other = SigningKey::from_bytes(&[8u8; 32]);
        let sig = sign(&key, b"manifest");
        assert!(verify(&key.verifying_key(), b"manifest", sig.as_bytes()).is_ok());
        assert!(verify(&key.verifying_key(), b"manifesT", sig.as_bytes()).is_err());
        assert!(verify(&other.verifying_key(), b"manifest", sig.as_bytes()).is_err());
        let e = verify(&key.verifying_key(), b"manifest", b"zz")
            .unwrap_err()
            .to_string();
        assert!(e.contains("128 hex digits"), "{e}");
    }
}
