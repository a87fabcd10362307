//! TLS for both directions: the server's certificate (configured, or a
//! self-signed pair generated on first start) and the trust used when
//! calling peers (system roots, an extra CA, or, for tests, anything).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName as TlsName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
}

fn file_err(path: &Path, msg: impl ToString) -> TlsError {
    TlsError::File { path: path.to_owned(), msg: msg.to_string() }
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path).map_err(|e| file_err(path, e))?.collect();
    let certs = certs.map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no certificate found"));
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_err(path, e))
}

/// Writes a self-signed certificate for `names` unless one exists already.
pub fn ensure_self_signed(cert: &Path, key: &Path, names: Vec<String>) -> Result<(), TlsError> {
    if cert.exists() && key.exists() {
        return Ok(());
    }
    let generated = rcgen::generate_simple_self_signed(names)?;
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    }
    write_private(key, generated.key_pair.serialize_pem().as_bytes())?;
    std::fs::write(cert, generated.cert.pem()).map_err(|e| file_err(cert, e))?;
    Ok(())
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(|e| file_err(path, e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| file_err(path, e))
}

pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, TlsError> {
    // TLS 1.2 is accepted inbound for Matrix peers (OQ-36).
    let mut c = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    c.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(c)
}

/// Trust for outbound calls.
pub fn client_config(trust_self_signed: bool, extra_ca: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let mut c = if trust_self_signed {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(WithoutRoots { provider: provider(), pinned: None }))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(path) = extra_ca {
            for cert in load_certs(path)? {
                roots.add(cert).map_err(|e| file_err(path, e))?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    c.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(c)
}

/// Trust in one certificate: the server's own, in the file it serves
/// (read at each handshake, so a renewed certificate is followed), for
/// calls between processes of one server: no roots, no names.
pub fn pinned_client_config(cert_file: &Path) -> Result<ClientConfig, TlsError> {
    let verifier = WithoutRoots { provider: provider(), pinned: Some(cert_file.to_owned()) };
    let mut c = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(c)
}

/// `pinned_client_config` as a connector.
pub fn pinned_connector(cert_file: &Path) -> Result<tokio_rustls::TlsConnector, TlsError> {
    Ok(tokio_rustls::TlsConnector::from(Arc::new(pinned_client_config(cert_file)?)))
}

/// A certificate checked without roots: the pinned one only, or (with
/// `federation.trust_self_signed`) any. Handshake signatures are still
/// checked so the session keys are sound.
#[derive(Debug)]
struct WithoutRoots {
    provider: Arc<CryptoProvider>,
    pinned: Option<PathBuf>,
}

impl ServerCertVerifier for WithoutRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &TlsName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(path) = &self.pinned else { return Ok(ServerCertVerified::assertion()) };
        let ours = load_certs(path).map_err(|e| rustls::Error::General(e.to_string()))?;
        if ours.first().is_some_and(|c| c.as_ref() == end_entity.as_ref()) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!("not the certificate in {}", path.display())))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The federation listener's certificate, read again from its files on
/// request (SIGHUP) and when they change (`keep_reading`), so a renewed
/// certificate takes effect without a restart; connections already open
/// keep the one they began with.
pub struct ServerTls {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    current: std::sync::RwLock<tokio_rustls::TlsAcceptor>,
    looks: std::sync::Mutex<Looks>,
}

/// The files' modification times and sizes.
type Stamp = [Option<(std::time::SystemTime, u64)>; 2];

/// What `reload_if_settled` saw: at the last read, and at its last look.
struct Looks {
    read: Stamp,
    last: Stamp,
}

/// How often `keep_reading` looks at the files.
const LOOK_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

impl ServerTls {
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerTls>, TlsError> {
        let stamp = stamp(cert, key);
        let acceptor = Self::read(cert, key)?;
        let looks = Looks { read: stamp, last: stamp }.into();
        Ok(Arc::new(ServerTls { cert: cert.to_owned(), key: key.to_owned(), current: acceptor.into(), looks }))
    }

    /// Reads the files again once they have changed and then stayed the
    /// same for one look, so a pair being replaced is not read half
    /// written; `None` when there was nothing to read.
    pub fn reload_if_settled(&self) -> Option<Result<(), TlsError>> {
        let now = stamp(&self.cert, &self.key);
        let mut looks = self.looks.lock().expect("poisoned");
        let settled = now == looks.last;
        looks.last = now;
        if now == looks.read || !settled {
            return None;
        }
        drop(looks);
        Some(self.reload())
    }

    /// Looks at the files every two seconds until `stop`, reading them
    /// again when they changed (a refused pair leaves the old in use).
    pub async fn keep_reading(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(LOOK_EVERY) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            match self.reload_if_settled() {
                Some(Ok(())) => tracing::info!(cert = %self.cert.display(), "TLS certificate files changed: reloaded"),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "TLS certificate files changed but are refused; the old certificate stays")
                }
                None => {}
            }
        }
    }

    fn read(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
        let config = server_config(load_certs(cert)?, load_key(key)?)?;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }

    /// What a new connection is served with.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        self.current.read().expect("poisoned").clone()
    }

    /// Reads the files again; on an error the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let now = stamp(&self.cert, &self.key);
        *self.looks.lock().expect("poisoned") = Looks { read: now, last: now };
        let fresh = Self::read(&self.cert, &self.key)?;
        *self.current.write().expect("poisoned") = fresh;
        Ok(())
    }
}

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let of = |p: &Path| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
    [of(cert), of(key)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_files_are_read_once_they_have_settled() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        ensure_self_signed(&cert, &key, vec!["a.test".into()]).unwrap();
        let tls = ServerTls::load(&cert, &key).unwrap();
        assert!(tls.reload_if_settled().is_none(), "unchanged");
        std::fs::remove_file(&cert).unwrap();
        std::fs::remove_file(&key).unwrap();
        ensure_self_signed(&cert, &key, vec!["renewed.a.test".into()]).unwrap();
        assert!(tls.reload_if_settled().is_none(), "changed since the last look: may still be being written");
        assert!(matches!(tls.reload_if_settled(), Some(Ok(()))), "settled: read");
        assert!(tls.reload_if_settled().is_none(), "read once");
        std::fs::write(&cert, "not a certificate").unwrap();
        assert!(tls.reload_if_settled().is_none());
        assert!(matches!(tls.reload_if_settled(), Some(Err(_))), "refused");
        assert!(tls.reload_if_settled().is_none(), "refused once, not at every look");
    }
}
