//! The HTTPS listener: rustls, certificates from PEM files chosen by SNI and
//! reloaded when the files change, and the plain-HTTP redirect listener.
//!
//! Protocol policy: TLS 1.3 and 1.2 only, with the ring provider's suites, all
//! of which are AEAD (AES-GCM, ChaCha20-Poly1305) with ECDHE key exchange; TLS
//! 1.3 is preferred by rustls whenever the client offers it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::response::IntoResponse;
use axum::Router;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// No certificate was configured.
    #[error("no certificate configured")]
    NoCertificate,
    /// The background reload itself failed (it panicked or was cancelled).
    #[error("certificate reload failed: {0}")]
    Reload(String),
}

/// One certificate chain and key, and the host names it serves.
#[derive(Debug, Clone)]
pub struct CertificateFiles {
    /// Host names (exact, or `*.example.com`) that select this certificate by SNI.
    pub hostnames: Vec<String>,
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

struct Loaded {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
    stamps: Vec<(PathBuf, Option<SystemTime>)>,
}

/// The certificates in force, swapped atomically on reload.
pub struct CertStore {
    files: Vec<CertificateFiles>,
    current: RwLock<Arc<Loaded>>,
    acme: Option<Arc<crate::acme::AcmeChallenges>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("files", &self.files)
            .finish()
    }
}

fn file_error(path: &Path, message: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

fn load_pair(files: &CertificateFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| file_error(&files.cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(&files.cert, e))?;
    if certs.is_empty() {
        return Err(file_error(&files.cert, "no PEM certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_error(&files.key, e))?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| file_error(&files.key, e))?;
    let certified = CertifiedKey::new(certs, signing_key);
    // Catch a key that does not belong to the certificate now, not at the first handshake.
    certified.keys_match().map_err(|e| {
        file_error(
            &files.key,
            format!("does not match {}: {e}", files.cert.display()),
        )
    })?;
    Ok(Arc::new(certified))
}

fn stamps(files: &[CertificateFiles]) -> Vec<(PathBuf, Option<SystemTime>)> {
    files
        .iter()
        .flat_map(|f| [f.cert.clone(), f.key.clone()])
        .map(|p| {
            let m = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
            (p, m)
        })
        .collect()
}

fn load_all(files: &[CertificateFiles]) -> Result<Loaded, TlsError> {
    let stamps = stamps(files);
    let mut by_name = HashMap::new();
    let mut default = None;
    for f in files {
        let key = load_pair(f)?;
        for name in &f.hostnames {
            by_name.insert(name.to_ascii_lowercase(), key.clone());
        }
        default.get_or_insert(key);
    }
    Ok(Loaded {
        by_name,
        default: default.ok_or(TlsError::NoCertificate)?,
        stamps,
    })
}

impl CertStore {
    /// Loads every certificate; the first is served to clients that send no
    /// (or an unknown) server name.
    pub fn load(files: Vec<CertificateFiles>) -> Result<Arc<CertStore>, TlsError> {
        Self::load_with_acme(files, None)
    }

    /// Like [`CertStore::load`], also answering TLS-ALPN-01 validation
    /// handshakes with the certificates in `acme`.
    pub fn load_with_acme(
        files: Vec<CertificateFiles>,
        acme: Option<Arc<crate::acme::AcmeChallenges>>,
    ) -> Result<Arc<CertStore>, TlsError> {
        let loaded = load_all(&files)?;
        Ok(Arc::new(CertStore {
            files,
            current: RwLock::new(Arc::new(loaded)),
            acme,
        }))
    }

    /// Reloads when any file's modification time changed. A broken new file
    /// keeps the old certificates in force and returns the error.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamps(&self.files);
        let unchanged = {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            current.stamps == now
        };
        if unchanged {
            return Ok(false);
        }
        let loaded = load_all(&self.files)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
        Ok(true)
    }

    /// [`CertStore::reload_if_changed`] on the blocking pool: it stats and reads
    /// files, which must not stall an async worker serving requests.
    pub async fn reload_in_background(self: Arc<Self>) -> Result<bool, TlsError> {
        tokio::task::spawn_blocking(move || self.reload_if_changed())
            .await
            .unwrap_or_else(|e| Err(TlsError::Reload(e.to_string())))
    }

    /// Checks the files every `interval` until `cancel` fires.
    pub async fn watch(self: Arc<Self>, interval: Duration, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            match self.clone().reload_in_background().await {
                Ok(true) => tracing::info!("reloaded TLS certificates"),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "cannot reload TLS certificates; keeping the previous ones")
                }
            }
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme_validation = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == crate::acme::ACME_TLS_ALPN));
        if acme_validation {
            // RFC 8737: answer only with the validation certificate, never the real one.
            let name = hello.server_name()?;
            return self.acme.as_ref()?.tls_alpn01(name);
        }
        let current = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(name) = hello.server_name().map(str::to_ascii_lowercase) else {
            return Some(current.default.clone());
        };
        if let Some(k) = current.by_name.get(&name) {
            return Some(k.clone());
        }
        let wildcard = name.split_once('.').map(|(_, rest)| format!("*.{rest}"));
        Some(
            wildcard
                .and_then(|w| current.by_name.get(&w).cloned())
                .unwrap_or_else(|| current.default.clone()),
        )
    }
}

/// The account name a verified client certificate maps to: its subject's
/// common name. Attached to every request of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertSubject(pub String);

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
    config.alpn_protocols = vec![
        b"h2".to_vec(),
        b"http/1.1".to_vec(),
        crate::acme::ACME_TLS_ALPN.to_vec(),
    ];
    Ok(Arc::new(config))
}

/// The subject common name of a (verified) client certificate.
fn subject_common_name(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// The account name of the client certificate a TLS connection presented.
pub(crate) fn client_subject(conn: &rustls::ServerConnection) -> Option<ClientCertSubject> {
    conn.peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(subject_common_name)
        .map(ClientCertSubject)
}

/// Whether `host` (lower-case, no port) is one of `allowed` (exact names, or
/// `*.domain` covering one more label).
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|name| {
        let name = name.to_ascii_lowercase();
        match name.strip_prefix("*.") {
            Some(domain) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == domain),
            None => name == host,
        }
    })
}

/// A plain-HTTP app that answers ACME HTTP-01 challenges and redirects
/// everything else to HTTPS on `https_port` — but only for a `Host` that is
/// one of `hostnames` (the certificates' names, the ACME domains, the external
/// URL's host): anything else gets `421 Misdirected Request`, so the listener
/// can never be used to bounce clients to an arbitrary site.
pub fn redirect_app(
    https_port: u16,
    hostnames: Vec<String>,
    acme: Option<Arc<crate::acme::AcmeChallenges>>,
) -> Router {
    let challenges = acme.clone();
    let hostnames = Arc::new(hostnames);
    Router::new()
        .route(
            "/.well-known/acme-challenge/{token}",
            axum::routing::get(
                move |axum::extract::Path(token): axum::extract::Path<String>| async move {
                    match challenges.as_ref().and_then(|c| c.http01(&token)) {
                        Some(key_authorization) => {
                            (axum::http::StatusCode::OK, key_authorization).into_response()
                        }
                        None => axum::http::StatusCode::NOT_FOUND.into_response(),
                    }
                },
            ),
        )
        .fallback(move |req: axum::extract::Request| async move {
            let authority = crate::auth::request_authority(&req);
            let host = authority.map(|a| {
                let host = match a.strip_prefix('[') {
                    Some(v6) => format!("[{}]", v6.split(']').next().unwrap_or(v6)),
                    None => a.split(':').next().unwrap_or(&a).to_owned(),
                };
                host.to_ascii_lowercase()
            });
            let Some(host) = host.filter(|h| {
                host_allowed(h.trim_start_matches('[').trim_end_matches(']'), &hostnames)
            }) else {
                return (
                    axum::http::StatusCode::MISDIRECTED_REQUEST,
                    "this host name is not served here\n",
                )
                    .into_response();
            };
            let port = if https_port == 443 {
                String::new()
            } else {
                format!(":{https_port}")
            };
            let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
            axum::response::Redirect::permanent(&format!("https://{host}{port}{path}"))
                .into_response()
        })
}

/// Serves the redirect listener until `cancel` fires, under the same
/// connection limits as the main listener.
pub async fn serve_redirect(
    listener: TcpListener,
    https_port: u16,
    hostnames: Vec<String>,
    acme: Option<Arc<crate::acme::AcmeChallenges>>,
    limits: crate::listener::ConnectionLimits,
    cancel: CancellationToken,
) {
    let app = redirect_app(https_port, hostnames, acme);
    crate::listener::serve(listener, app, None, limits, cancel, Duration::from_secs(1)).await;
}
