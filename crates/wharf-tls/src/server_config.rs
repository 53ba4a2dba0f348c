//! The rustls server configuration of the HTTPS listener.
//!
//! Protocol policy: TLS 1.3 and 1.2 only, with the ring provider's suites, all
//! of which are AEAD (AES-GCM, ChaCha20-Poly1305) with ECDHE key exchange; TLS
//! 1.3 is preferred by rustls whenever the client offers it.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::challenges::ACME_TLS_ALPN;
use crate::store::{file_error, CertStore, TlsError};

/// The rustls server configuration: TLS 1.3 and 1.2, AEAD suites, h2 and
/// http/1.1, and, with `client_ca`, optional client certificates verified
/// against that bundle (clients without one still connect and use passwords).
pub fn server_config(
    store: Arc<CertStore>,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        // The ring provider's default suites are all AEAD; the versions above are valid for it.
        .expect("TLS 1.2 and 1.3 are supported by the ring provider");
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| file_error(path, e))? {
                roots
                    .add(cert.map_err(|e| file_error(path, e))?)
                    .map_err(|e| file_error(path, e))?;
            }
            if roots.is_empty() {
                return Err(file_error(path, "no PEM certificate in the file"));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| file_error(path, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    Ok(Arc::new(config))
}
