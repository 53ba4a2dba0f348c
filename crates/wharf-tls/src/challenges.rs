//! The ACME challenge responses pending right now: written by the ACME task
//! while an order runs, read by the listeners that answer the CA's validation
//! requests. A module of its own so that the certificate store (TLS-ALPN-01)
//! and the redirect listener (HTTP-01) read it without depending on the ACME
//! client, and the ACME client depends on them, not the other way round.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls::sign::CertifiedKey;

/// The ALPN protocol of TLS-ALPN-01 validation connections (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Pending challenge responses, shared by the listeners and the ACME task.
#[derive(Default)]
pub struct AcmeChallenges {
    http01: Mutex<HashMap<String, String>>,
    tls_alpn01: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for AcmeChallenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AcmeChallenges")
    }
}

impl AcmeChallenges {
    /// The key authorization for an HTTP-01 token.
    pub fn http01(&self, token: &str) -> Option<String> {
        self.http01
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }

    /// The TLS-ALPN-01 validation certificate for a server name.
    pub fn tls_alpn01(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.tls_alpn01
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&name.to_ascii_lowercase())
            .cloned()
    }

    /// Answers the HTTP-01 challenge `token` with `key_authorization`.
    pub(crate) fn offer_http01(&self, token: String, key_authorization: String) {
        self.http01
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token, key_authorization);
    }

    /// Answers TLS-ALPN-01 handshakes for `name` with the validation certificate `cert`.
    pub(crate) fn offer_tls_alpn01(&self, name: &str, cert: Arc<CertifiedKey>) {
        self.tls_alpn01
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_ascii_lowercase(), cert);
    }

    /// Forgets every response once an order is over, whatever its outcome.
    pub(crate) fn clear(&self) {
        self.http01
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.tls_alpn01
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_found_by_token_and_case_insensitive_name_until_cleared() {
        let challenges = AcmeChallenges::default();
        challenges.offer_http01("tok".into(), "tok.thumb".into());
        assert_eq!(challenges.http01("tok").as_deref(), Some("tok.thumb"));
        assert_eq!(challenges.http01("other"), None);
        challenges.clear();
        assert_eq!(challenges.http01("tok"), None);
        assert!(challenges.tls_alpn01("Registry.Test").is_none());
    }
}
