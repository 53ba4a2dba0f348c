//! Wharf's TLS, apart from HTTP serving: the rustls server configuration, the
//! certificates chosen by SNI and reloaded when their files change, the
//! account name a client certificate carries, ACME issuance and renewal, and
//! the plain-HTTP listener that answers HTTP-01 and redirects to HTTPS.
//!
//! The HTTP layer needs only [`ClientCertSubject`] and [`ACME_TLS_ALPN`] from
//! here; the `wharf` binary lowers the configuration and wires the rest.
//!
//! Imports point one way: [`acme`] and [`redirect`] use the certificate store
//! and the pending [`challenges`]; the store uses only the challenges.

pub mod acme;
pub mod challenges;
mod client_cert;
pub mod redirect;
mod server_config;
mod store;

pub use challenges::{AcmeChallenges, ACME_TLS_ALPN};
pub use client_cert::ClientCertSubject;
pub use server_config::server_config;
pub use store::{CertStore, CertificateFiles, TlsError};
