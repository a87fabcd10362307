//! TLS to PostgreSQL. Used when the URL says `sslmode=require` or
//! `storage.postgres.ca_file` is set, and then always verified: the
//! server's certificate must chain to the system's roots or the CA file
//! and name the host connected to (libpq's `verify-full`). Without either,
//! the connection is plain, as for a Unix socket or a private network.

use std::path::Path;

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
    let mut config = crate::http::tls::client_config(false, ca_file)
        .map_err(|e| StoreError::Backend(format!("storage.postgres.ca_file: {e}")))?;
    config.alpn_protocols.clear();
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
