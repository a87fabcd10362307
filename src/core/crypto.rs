//! Unpadded base64, SHA-256 and ed25519 signatures over canonical JSON
//! (digest sections 3.4 and 3.7; checklist items 38-44).

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, Engine};
use ed25519_dalek::{Signer, Verifier};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::ids::{KeyId, ServerName};
use super::json::{object_to_canonical, Canonical, JsonError, Object};

const ENCODE: GeneralPurposeConfig = GeneralPurposeConfig::new().with_encode_padding(false);
// Decoders accept input with or without padding (item 44), and non-zero
// trailing bits (the Matrix spec's own test seed has them).
const DECODE: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_encode_padding(false)
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const STD_ENCODE: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, ENCODE);
const STD_DECODE: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, DECODE);
const URL_ENCODE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, ENCODE);
const URL_DECODE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, DECODE);

/// Unpadded standard base64 (hashes, signatures, keys).
pub fn b64_encode(bytes: &[u8]) -> String {
    STD_ENCODE.encode(bytes)
}

pub fn b64_decode(s: &str) -> Result<Vec<u8>, CryptoError> {
    STD_DECODE.decode(s).map_err(|_| CryptoError::Base64)
}

/// Unpadded URL-safe base64 (event ids).
pub fn b64url_encode(bytes: &[u8]) -> String {
    URL_ENCODE.encode(bytes)
}

pub fn b64url_decode(s: &str) -> Result<Vec<u8>, CryptoError> {
    URL_DECODE.decode(s).map_err(|_| CryptoError::Base64)
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CryptoError {
    #[error("invalid base64")]
    Base64,
    #[error("a key seed must be 32 bytes")]
    SeedLength,
    #[error("a public key must be 32 bytes")]
    PublicKeyLength,
    #[error("no signatures object")]
    NoSignatures,
    #[error("signatures is malformed")]
    MalformedSignatures,
    #[error("no signature from {server} with key {key_id}")]
    MissingSignature { server: String, key_id: String },
    #[error("signature from {server} with key {key_id} does not verify")]
    BadSignature { server: String, key_id: String },
    #[error(transparent)]
    Json(#[from] JsonError),
}

/// A server's ed25519 signing key with the name and key id it signs as.
#[derive(Clone)]
pub struct SigningKey {
    server: ServerName,
    key_id: KeyId,
    key: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        write!(f, "SigningKey({} {})", self.server, self.key_id)
    }
}

impl SigningKey {
    /// From a 32-byte RFC 8032 seed (the caller supplies the randomness).
    pub fn from_seed(server: ServerName, key_id: KeyId, seed: &[u8]) -> Result<Self, CryptoError> {
        let seed: [u8; 32] = seed.try_into().map_err(|_| CryptoError::SeedLength)?;
        Ok(Self { server, key_id, key: ed25519_dalek::SigningKey::from_bytes(&seed) })
    }

    pub fn server(&self) -> &ServerName {
        &self.server
    }

    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.key.verifying_key())
    }

    pub fn sign_bytes(&self, bytes: &[u8]) -> String {
        b64_encode(&self.key.sign(bytes).to_bytes())
    }

    /// Signs `obj` (without `signatures` and `unsigned`) and stores the
    /// signature at `signatures[server][key_id]`, keeping other entries.
    pub fn sign_object(&self, obj: &mut Object, form: Canonical) -> Result<(), CryptoError> {
        let sig = self.sign_bytes(&signing_bytes(obj, form)?);
        insert_signature(obj, &self.server, &self.key_id, sig);
        Ok(())
    }
}

/// An ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl PublicKey {
    pub fn from_base64(s: &str) -> Result<Self, CryptoError> {
        let bytes: [u8; 32] = b64_decode(s)?.try_into().map_err(|_| CryptoError::PublicKeyLength)?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes).map(Self).map_err(|_| CryptoError::PublicKeyLength)
    }

    pub fn to_base64(&self) -> String {
        b64_encode(self.0.as_bytes())
    }

    /// Verifies a base64 signature over `bytes`.
    pub fn verify(&self, bytes: &[u8], signature_b64: &str) -> bool {
        let Ok(sig) = b64_decode(signature_b64) else {
            return false;
        };
        let Ok(sig) = ed25519_dalek::Signature::from_slice(&sig) else {
            return false;
        };
        self.0.verify(bytes, &sig).is_ok()
    }
}

/// The bytes a signature covers: the object minus `signatures` and
/// `unsigned`, canonicalised.
pub fn signing_bytes(obj: &Object, form: Canonical) -> Result<Vec<u8>, JsonError> {
    if obj.contains_key("signatures") || obj.contains_key("unsigned") {
        let mut copy = obj.clone();
        copy.remove("signatures");
        copy.remove("unsigned");
        object_to_canonical(&copy, form)
    } else {
        object_to_canonical(obj, form)
    }
}

pub fn insert_signature(obj: &mut Object, server: &ServerName, key_id: &KeyId, sig: String) {
    let sigs = obj.entry("signatures").or_insert_with(|| Value::Object(Object::new()));
    if !sigs.is_object() {
        *sigs = Value::Object(Object::new());
    }
    if let Value::Object(sigs) = sigs {
        let mine = sigs.entry(server.as_str()).or_insert_with(|| Value::Object(Object::new()));
        if !mine.is_object() {
            *mine = Value::Object(Object::new());
        }
        if let Value::Object(mine) = mine {
            mine.insert(key_id.as_str().to_owned(), Value::String(sig));
        }
    }
}

/// Looks up `signatures[server][key_id]` (item 40's failure cases).
pub fn find_signature<'a>(obj: &'a Object, server: &str, key_id: &str) -> Result<&'a str, CryptoError> {
    let sigs = obj.get("signatures").ok_or(CryptoError::NoSignatures)?;
    let sigs = sigs.as_object().ok_or(CryptoError::MalformedSignatures)?;
    let missing = || CryptoError::MissingSignature { server: server.to_owned(), key_id: key_id.to_owned() };
    let entity = sigs.get(server).ok_or_else(missing)?;
    let entity = entity.as_object().ok_or(CryptoError::MalformedSignatures)?;
    entity.get(key_id).ok_or_else(missing)?.as_str().ok_or(CryptoError::MalformedSignatures)
}

/// Key ids `server` signed `obj` with, in the order they appear.
pub fn signature_key_ids(obj: &Object, server: &str) -> Vec<String> {
    obj.get("signatures")
        .and_then(Value::as_object)
        .and_then(|s| s.get(server))
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// Verifies `signatures[server][key_id]` on `obj` (no redaction: callers
/// redact events first).
pub fn verify_object(
    obj: &Object,
    server: &str,
    key_id: &str,
    key: &PublicKey,
    form: Canonical,
) -> Result<(), CryptoError> {
    let sig = find_signature(obj, server, key_id)?;
    if key.verify(&signing_bytes(obj, form)?, sig) {
        Ok(())
    } else {
        Err(CryptoError::BadSignature { server: server.to_owned(), key_id: key_id.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_both_alphabets_and_padding() {
        assert_eq!(b64_encode(b"foob"), "Zm9vYg");
        assert_eq!(b64_decode("Zm9vYg==").unwrap(), b"foob");
        assert_eq!(b64_decode("Zm9vYg").unwrap(), b"foob");
        assert_eq!(b64url_encode(&[0xfb, 0xff]), "-_8");
        assert!(b64_decode("-_8").is_err());
    }

    #[test]
    fn sign_then_verify_and_tamper() {
        let key = SigningKey::from_seed(
            ServerName::parse("a.example").unwrap(),
            KeyId::parse("ed25519:1").unwrap(),
            &[7u8; 32],
        )
        .unwrap();
        let mut obj: Object = serde_json::from_str(r#"{"a":1,"unsigned":{"x":1}}"#).unwrap();
        key.sign_object(&mut obj, Canonical::Matrix).unwrap();
        let pk = key.public_key();
        verify_object(&obj, "a.example", "ed25519:1", &pk, Canonical::Matrix).unwrap();
        obj.insert("unsigned".into(), Value::Null);
        verify_object(&obj, "a.example", "ed25519:1", &pk, Canonical::Matrix).unwrap();
        obj.insert("a".into(), Value::from(2));
        assert!(verify_object(&obj, "a.example", "ed25519:1", &pk, Canonical::Matrix).is_err());
        assert!(matches!(
            verify_object(&obj, "b.example", "ed25519:1", &pk, Canonical::Matrix),
            Err(CryptoError::MissingSignature { .. })
        ));
    }
}
