//! Events: the LPDU and PDU types, size limits, hashing, redaction and
//! signing per room version.

mod hash;
mod pdu;
mod redact;
mod sign;
pub mod version;

pub use hash::{content_hash, event_id, lpdu_hash, lpdu_view, redacted_signing_bytes};
pub use pdu::{Lpdu, Pdu, Schema};
pub use redact::redact;
pub use sign::{
    check_hashes, required_signers, sign_event, sign_in_role, sign_lpdu, signed_bytes_for, verify_event_signature,
    HashCheck,
};
pub use version::{RoomVersion, LM_VERSION, LM_VERSION_ALIAS};

use crate::core::crypto::CryptoError;
use crate::core::ids::IdError;
use crate::core::json::JsonError;

/// Largest event, in canonical JSON with signatures (item 28).
pub const MAX_PDU_BYTES: usize = 65_536;
/// Largest federation `/send` body (digest: ≈ 50 PDUs of 64 KiB plus EDUs).
pub const MAX_SEND_BODY: usize = 13_107_200;
/// Longest `type` and `state_key`, in characters (items 20-21).
pub const MAX_FIELD_CHARS: usize = 255;
/// Matrix caps on DAG events' references.
pub const MAX_PREV_EVENTS: usize = 20;
pub const MAX_AUTH_EVENTS: usize = 10;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventError {
    #[error("missing or ill-typed field `{0}`")]
    Missing(&'static str),
    #[error("field `{0}` is not allowed here")]
    Forbidden(&'static str),
    #[error("field `{field}` is longer than {max}")]
    TooLong { field: &'static str, max: usize },
    #[error("event is {0} bytes in canonical JSON, over the 65536-byte limit")]
    TooLarge(usize),
    #[error("{0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Id(#[from] IdError),
    #[error(transparent)]
    Json(#[from] JsonError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}
