//! The account name a verified client certificate stands for. Its own module
//! because it is the one TLS value the HTTP layer reads, per connection.

use rustls::pki_types::CertificateDer;

/// The account name a verified client certificate maps to: its subject's
/// common name. Attached to every request of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertSubject(pub String);

impl ClientCertSubject {
    /// The subject of the client certificate a TLS connection presented, if
    /// any. rustls verified the chain during the handshake; only the name is
    /// read here.
    pub fn of_connection(conn: &rustls::ServerConnection) -> Option<ClientCertSubject> {
        conn.peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(subject_common_name)
            .map(ClientCertSubject)
    }
}

/// The subject common name of a (verified) client certificate.
fn subject_common_name(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subject_is_the_common_name() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["client.test".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(subject_common_name(cert.der()).as_deref(), Some("alice"));

        let mut nameless = rcgen::CertificateParams::new(vec!["client.test".into()]).unwrap();
        nameless.distinguished_name = rcgen::DistinguishedName::new();
        let cert = nameless.self_signed(&key).unwrap();
        assert_eq!(subject_common_name(cert.der()), None);
    }
}
