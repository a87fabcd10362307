//! TLS to PostgreSQL. Used when the URL says `sslmode=require` or
//! `storage.postgres.ca_file` is set, and then always verified: the
//! server's certificate must chain to the system's roots or the CA file
//! and name the host connected to (libpq's `verify-full`). Without either,
//! the connection is plain, as for a Unix socket or a private network.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::StoreError;

/// The mode to connect with, from the URL's and the CA file's: TLS when
/// either asks for it, refused when they contradict each other.
pub fn mode(from_url: SslMode, ca_file: bool) -> Result<SslMode, String> {
    match (from_url, ca_file) {
        (SslMode::Disable, true) => Err("storage.postgres.ca_file is set but the URL says sslmode=disable".to_owned()),
        // libpq's default `prefer` would take TLS without checking the
        // certificate, and fall back to plain text; lmx asks for TLS
        // explicitly instead.
        (SslMode::Disable | SslMode::Prefer, false) => Ok(SslMode::Disable),
        // `require` and anything stricter a later tokio-postgres parses.
        _ => Ok(SslMode::Require),
    }
}

/// The connector: the system's roots and the CA file, no ALPN.
pub fn connector(ca_file: Option<&Path>) -> Result<MakeRustlsConnect, StoreError> {
    let refused = |e: &dyn std::fmt::Display| StoreError::Backend(format!("storage.postgres.ca_file: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect())
            .map_err(|e| refused(&format!("{}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(refused(&format!("{}: no certificate found", path.display())));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| refused(&e))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| refused(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_when_the_url_or_a_ca_file_asks_for_it_and_never_half_way() {
        assert!(matches!(mode(SslMode::Prefer, false), Ok(SslMode::Disable)));
        assert!(matches!(mode(SslMode::Disable, false), Ok(SslMode::Disable)));
        assert!(matches!(mode(SslMode::Require, false), Ok(SslMode::Require)));
        assert!(matches!(mode(SslMode::Prefer, true), Ok(SslMode::Require)));
        assert!(matches!(mode(SslMode::Require, true), Ok(SslMode::Require)));
        assert!(mode(SslMode::Disable, true).is_err());
    }
}
