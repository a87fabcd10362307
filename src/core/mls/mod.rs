//! The draft's MLS (digest 9): device credentials and device objects,
//! key packages, and the hub's check of each commit. Everything in MLS's
//! TLS presentation language is read by `openmls` and `tls_codec`; this
//! module only decides.

mod commit;
mod device;
mod key_package;

pub use commit::{check_commit, commit_allowed, commit_epoch, CommitFacts, GroupTrack};
pub use device::{check_device_object, DeviceObject};
pub use key_package::{check_key_package, KeyPackageFacts};

use openmls::prelude::{BasicCredential, Ciphersuite, Credential};
use tls_codec::{DeserializeBytes, Serialize as _, TlsDeserializeBytes, TlsSerialize, TlsSize, VLBytes};

/// The room encryption algorithm of the mandatory suite (§9.1).
pub const ROOM_ALGORITHM: &str = "m.mls.v1.dhkemx25519-aes128gcm-sha256-ed25519";
/// The key algorithm a device's credential is published under (§9.2).
pub const CREDENTIAL_ALGORITHM: &str = "m.mls.v1.credential.ed25519";
/// The key algorithm of key packages (§9.3).
pub const KEY_PACKAGE_ALGORITHM: &str = "m.mls.v1.key_package.dhkemx25519-aes128gcm-sha256-ed25519";
/// The algorithm of a Welcome sent to a device (§9.4).
pub const WELCOME_ALGORITHM: &str = "m.mls.v1.welcome.dhkemx25519-aes128gcm-sha256-ed25519";
/// The MLS ciphersuite those names stand for.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// Why an MLS object was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MlsError(pub String);

fn err(why: impl Into<String>) -> MlsError {
    MlsError(why.into())
}

/// The draft's `BasicCredential` (§9.2): who a leaf is. It travels as the
/// identity of an MLS basic credential and, base64-encoded, as the
/// credential key of the device object.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserializeBytes, TlsSize)]
pub struct DeviceCredential {
    pub user_id: VLBytes,
    pub device_id: VLBytes,
    pub signature_key: VLBytes,
}

/// A leaf's or key package's owner, read from its credential.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeviceRef {
    pub user: String,
    pub device: String,
}

impl std::fmt::Display for DeviceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.user, self.device)
    }
}

impl DeviceCredential {
    pub fn new(user: &str, device: &str, signature_key: &[u8]) -> Self {
        DeviceCredential {
            user_id: user.as_bytes().to_vec().into(),
            device_id: device.as_bytes().to_vec().into(),
            signature_key: signature_key.to_vec().into(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.tls_serialize_detached().expect("a credential of bounded size serializes")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MlsError> {
        let (c, rest) =
            DeviceCredential::tls_deserialize_bytes(bytes).map_err(|e| err(format!("malformed credential: {e}")))?;
        if !rest.is_empty() {
            return Err(err("bytes after the credential"));
        }
        Ok(c)
    }

    /// The MLS credential a leaf carries for this device.
    pub fn to_mls(&self) -> Credential {
        BasicCredential::new(self.to_bytes()).into()
    }

    /// The device an MLS credential names; its signature key must be the
    /// leaf's own (so a leaf cannot borrow another device's name).
    pub fn of_leaf(credential: &Credential, leaf_signature_key: &[u8]) -> Result<DeviceRef, MlsError> {
        let basic = BasicCredential::try_from(credential.clone()).map_err(|_| err("not a basic credential"))?;
        let c = DeviceCredential::from_bytes(basic.identity())?;
        if c.signature_key.as_slice() != leaf_signature_key {
            return Err(err("the credential's signature key is not the leaf's"));
        }
        c.device_ref()
    }

    pub fn device_ref(&self) -> Result<DeviceRef, MlsError> {
        let text = |b: &VLBytes, what: &str| {
            String::from_utf8(b.as_slice().to_vec()).map_err(|_| err(format!("{what} is not UTF-8")))
        };
        Ok(DeviceRef { user: text(&self.user_id, "user_id")?, device: text(&self.device_id, "device_id")? })
    }
}

/// The unpadded base64 field `name` of an MLS content, decoded.
fn b64_field(content: &serde_json::Map<String, serde_json::Value>, name: &str) -> Result<Vec<u8>, MlsError> {
    let text = content.get(name).and_then(serde_json::Value::as_str).ok_or_else(|| err(format!("no {name}")))?;
    crate::core::crypto::b64_decode(text).map_err(|_| err(format!("{name} is not base64")))
}
