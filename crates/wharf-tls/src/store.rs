//! The certificates in force: chain and key pairs from PEM files, chosen by
//! SNI, swapped atomically when the files change, and — for a client that
//! offers `acme-tls/1` — the pending TLS-ALPN-01 validation certificate.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use crate::challenges::{AcmeChallenges, ACME_TLS_ALPN};

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

pub(crate) fn file_error(path: &Path, message: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// One certificate chain and key, and the host names it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    acme: Option<Arc<AcmeChallenges>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("files", &self.files)
            .finish()
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
    /// (or an unknown) server name. With `acme`, TLS-ALPN-01 validation
    /// handshakes are answered with its pending certificates.
    pub fn load(
        files: Vec<CertificateFiles>,
        acme: Option<Arc<AcmeChallenges>>,
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
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
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
