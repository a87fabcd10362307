//! Key packages (§9.3): checked when a device uploads them, so E18 hands
//! out only packages that name their device and can still be used.

use openmls::prelude::{KeyPackageIn, ProtocolVersion};
use openmls_rust_crypto::RustCrypto;
use tls_codec::Deserialize as _;

use super::{err, DeviceCredential, DeviceRef, MlsError, CIPHERSUITE};

/// What the server keeps knowing of a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPackageFacts {
    pub device: DeviceRef,
    /// An MLS "last resort" package: handed out again, but only when no
    /// other is left.
    pub last_resort: bool,
    /// Seconds since the epoch after which it must not be handed out.
    pub not_after: u64,
}

/// A package's signature, suite and owner, from its TLS encoding.
pub fn check_key_package(bytes: &[u8]) -> Result<KeyPackageFacts, MlsError> {
    let package = KeyPackageIn::tls_deserialize_exact(bytes).map_err(|e| err(format!("malformed key package: {e}")))?;
    let package = package
        .validate(&RustCrypto::default(), ProtocolVersion::Mls10)
        .map_err(|e| err(format!("invalid key package: {e}")))?;
    if package.ciphersuite() != CIPHERSUITE {
        return Err(err(format!("the key package is for {:?}, not the room suite", package.ciphersuite())));
    }
    let leaf = package.leaf_node();
    let device = DeviceCredential::of_leaf(leaf.credential(), leaf.signature_key().as_slice())?;
    Ok(KeyPackageFacts { device, last_resort: package.last_resort(), not_after: package.life_time().not_after() })
}
