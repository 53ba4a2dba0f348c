//! ACME (RFC 8555): automatic issuance and renewal of the HTTPS certificate.
//!
//! State lives in `<data_dir>/acme/`: `account.json` (the account key, so the
//! same account is reused across restarts), `cert.pem` and `key.pem` (the
//! current certificate, which the [`CertStore`](crate::CertStore) serves
//! and reloads like any certificate file). Until the first certificate is
//! issued a self-signed placeholder is served, so the listener starts at once.
//!
//! Challenges: HTTP-01 answered by the plain-HTTP redirect listener, and
//! TLS-ALPN-01 (RFC 8737) answered on the HTTPS listener itself, through the
//! certificate resolver when a client offers the `acme-tls/1` protocol.
//! A certificate is renewed when a third of its lifetime remains.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use crate::challenges::AcmeChallenges;
use crate::store::CertStore;

/// Which challenge to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// HTTP-01 on the redirect listener (port 80 in production).
    Http01,
    /// TLS-ALPN-01 on the HTTPS listener (port 443 in production).
    TlsAlpn01,
}

/// ACME settings, lowered from `[tls.acme]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    /// The CA's directory URL.
    pub directory_url: String,
    /// Names to put in the certificate.
    pub domains: Vec<String>,
    /// Account contacts (`mailto:` URLs).
    pub contact: Vec<String>,
    /// PEM bundle trusted for the directory's own TLS (a private CA); `None` for public roots.
    pub ca_bundle: Option<PathBuf>,
    /// The challenge type.
    pub challenge: Challenge,
    /// Renew when less than this remains; `None` means a third of the lifetime.
    pub renew_before: Option<Duration>,
    /// How often to re-check the certificate.
    pub check_interval: Duration,
    /// Directory for the account and certificate files.
    pub state_dir: PathBuf,
}

/// Why ACME failed.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The ACME protocol failed (network, CA refusal, failed validation).
    #[error("ACME: {0}")]
    Protocol(#[from] instant_acme::Error),
    /// Local files could not be read or written.
    #[error("ACME state: {0}")]
    Io(#[from] std::io::Error),
    /// Anything else, described.
    #[error("ACME: {0}")]
    Other(String),
}

fn other(e: impl std::fmt::Display) -> AcmeError {
    AcmeError::Other(e.to_string())
}

/// Paths of the certificate files the [`CertStore`] should serve.
pub fn cert_paths(state_dir: &Path) -> (PathBuf, PathBuf) {
    (state_dir.join("cert.pem"), state_dir.join("key.pem"))
}

/// Writes a self-signed placeholder when no certificate exists yet, so the
/// HTTPS listener can start (and answer TLS-ALPN-01) before the first issuance.
pub fn ensure_placeholder(settings: &AcmeSettings) -> Result<(), AcmeError> {
    create_private_dir(&settings.state_dir)?;
    let (cert, key) = cert_paths(&settings.state_dir);
    if cert.exists() && key.exists() {
        return Ok(());
    }
    let key_pair = rcgen::KeyPair::generate().map_err(other)?;
    let params = rcgen::CertificateParams::new(settings.domains.clone()).map_err(other)?;
    let certificate = params.self_signed(&key_pair).map_err(other)?;
    write_atomically(&key, key_pair.serialize_pem().as_bytes())?;
    write_atomically(&cert, certificate.pem().as_bytes())?;
    write_atomically(
        &settings.state_dir.join("placeholder"),
        b"self-signed until issued\n",
    )?;
    Ok(())
}

/// Creates the ACME state directory owner-only (0700).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    // A leftover from a crash may have been created with another mode: start afresh,
    // so the key is never, even briefly, in a file others can open.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    {
        let mut options = std::fs::OpenOptions::new();
        options.create_new(true).write(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // Owner-only from the moment the file exists, not chmodded afterwards.
            options.mode(0o600);
        }
        let mut f = options.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// When the certificate at `cert` should be renewed (unix seconds), or `None` to renew now.
fn renewal_due(settings: &AcmeSettings) -> Option<i64> {
    if settings.state_dir.join("placeholder").exists() {
        return None;
    }
    let (cert, _) = cert_paths(&settings.state_dir);
    let pem = std::fs::read(cert).ok()?;
    let (_, parsed) = x509_parser::pem::parse_x509_pem(&pem).ok()?;
    let x509 = parsed.parse_x509().ok()?;
    let not_before = x509.validity().not_before.timestamp();
    let not_after = x509.validity().not_after.timestamp();
    let margin = match settings.renew_before {
        Some(d) => d.as_secs() as i64,
        None => (not_after - not_before) / 3,
    };
    Some(not_after - margin)
}

/// Runs file I/O on the blocking pool, off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)?
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

async fn account(settings: &AcmeSettings) -> Result<Account, AcmeError> {
    let builder = || -> Result<_, AcmeError> {
        Ok(match &settings.ca_bundle {
            Some(ca) => Account::builder_with_root(ca)?,
            None => Account::builder()?,
        })
    };
    let path = settings.state_dir.join("account.json");
    if let Ok(text) = tokio::fs::read_to_string(&path).await {
        let credentials: AccountCredentials = serde_json::from_str(&text).map_err(other)?;
        return Ok(builder()?.from_credentials(credentials).await?);
    }
    let contact: Vec<&str> = settings.contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder()?
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            settings.directory_url.clone(),
            None,
        )
        .await?;
    let json = serde_json::to_string(&credentials).map_err(other)?;
    blocking(move || write_atomically(&path, json.as_bytes())).await?;
    tracing::info!(acme.account = account.id(), "created ACME account");
    Ok(account)
}

fn alpn_certificate(
    name: &str,
    key_authorization_digest: &[u8],
) -> Result<Arc<CertifiedKey>, AcmeError> {
    let key_pair = rcgen::KeyPair::generate().map_err(other)?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(other)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(
        key_authorization_digest,
    )];
    let cert = params.self_signed(&key_pair).map_err(other)?;
    let key_der =
        rustls::pki_types::PrivateKeyDer::try_from(key_pair.serialize_der()).map_err(other)?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key_der).map_err(other)?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing_key,
    )))
}

/// Runs one order to completion and writes the new certificate and key.
pub async fn issue(settings: &AcmeSettings, challenges: &AcmeChallenges) -> Result<(), AcmeError> {
    let account = account(settings).await?;
    let identifiers: Vec<Identifier> = settings
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    let kind = match settings.challenge {
        Challenge::Http01 => ChallengeType::Http01,
        Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
    };
    let result = async {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other_status => return Err(other(format!("authorization is {other_status:?}"))),
            }
            let mut challenge = authz
                .challenge(kind.clone())
                .ok_or_else(|| other(format!("the CA offers no {kind:?} challenge")))?;
            let key_authorization = challenge.key_authorization();
            match settings.challenge {
                Challenge::Http01 => {
                    challenges.offer_http01(
                        challenge.token.clone(),
                        key_authorization.as_str().to_owned(),
                    );
                }
                Challenge::TlsAlpn01 => {
                    let name = challenge.identifier().to_string();
                    let cert = alpn_certificate(&name, key_authorization.digest().as_ref())?;
                    challenges.offer_tls_alpn01(&name, cert);
                }
            }
            challenge.set_ready().await?;
        }
        let retry = RetryPolicy::default().timeout(Duration::from_secs(90));
        let status = order.poll_ready(&retry).await?;
        if status != OrderStatus::Ready {
            return Err(other(format!("order ended {status:?}")));
        }
        let key_pem = order.finalize().await?;
        let chain_pem = order.poll_certificate(&retry).await?;
        Ok((key_pem, chain_pem))
    }
    .await;
    challenges.clear();
    let (key_pem, chain_pem) = result?;
    let state_dir = settings.state_dir.clone();
    blocking(move || {
        let (cert, key) = cert_paths(&state_dir);
        // Key first: the reloader only swaps once both files parse and match.
        write_atomically(&key, key_pem.as_bytes())?;
        write_atomically(&cert, chain_pem.as_bytes())?;
        let _ = std::fs::remove_file(state_dir.join("placeholder"));
        Ok(())
    })
    .await?;
    Ok(())
}

/// Issues and renews until `cancel` fires. Failures are retried with backoff.
pub async fn run(
    settings: AcmeSettings,
    challenges: Arc<AcmeChallenges>,
    store: Arc<CertStore>,
    cancel: CancellationToken,
) {
    let mut backoff = Duration::from_secs(5);
    loop {
        let due = {
            let settings = settings.clone();
            tokio::task::spawn_blocking(move || renewal_due(&settings))
                .await
                .unwrap_or(None)
        };
        let wait = match due {
            None => Duration::ZERO,
            Some(at) if at <= now() => Duration::ZERO,
            Some(at) => Duration::from_secs((at - now()) as u64).min(settings.check_interval),
        };
        if !wait.is_zero() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => continue,
            }
        }
        tracing::info!(acme.domains = ?settings.domains, "requesting a certificate");
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return,
            res = issue(&settings, &challenges) => res,
        };
        match outcome {
            Ok(()) => {
                backoff = Duration::from_secs(5);
                match store.clone().reload_in_background().await {
                    Ok(_) => {
                        tracing::info!(acme.domains = ?settings.domains, "certificate issued and in service")
                    }
                    Err(e) => tracing::error!(error = %e, "issued certificate does not load"),
                }
                // At most one order per check interval, even if a renewal margin
                // longer than the certificate's lifetime makes it due at once.
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(settings.check_interval) => {}
                }
            }
            Err(e) => {
                tracing::error!(error = %e, retry_in_secs = backoff.as_secs(), "certificate request failed");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(3600));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn acme_state_is_owner_only_from_the_start() {
        let tmp = tempfile::tempdir().unwrap();
        let state_dir = tmp.path().join("data").join("acme");
        let settings = AcmeSettings {
            directory_url: "https://acme.invalid/directory".into(),
            domains: vec!["registry.test".into()],
            contact: Vec::new(),
            ca_bundle: None,
            challenge: Challenge::Http01,
            renew_before: None,
            check_interval: Duration::from_secs(3600),
            state_dir: state_dir.clone(),
        };
        ensure_placeholder(&settings).unwrap();
        assert_eq!(mode(&state_dir), 0o700, "{}", state_dir.display());
        let (cert, key) = cert_paths(&state_dir);
        for file in [key, cert, state_dir.join("placeholder")] {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        // A stale temporary file from a crash, readable by everyone, is not reused.
        let stale = state_dir.join("account.tmp");
        std::fs::write(&stale, b"old").unwrap();
        std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_atomically(&state_dir.join("account.json"), b"{}").unwrap();
        assert_eq!(mode(&state_dir.join("account.json")), 0o600);
    }
}
