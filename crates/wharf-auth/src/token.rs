//! Registry bearer tokens: compact JWTs signed with HMAC-SHA256 (`HS256`).
//!
//! Clients treat them as opaque; only Wharf verifies them, so a symmetric key
//! shared by the replicas (through the metadata database) is enough. Each
//! token names its key (`kid`), so keys rotate without invalidating tokens
//! that are still within their short lifetime.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};

use crate::secret::constant_time_eq;
use crate::AuthError;

/// A signing key.
#[derive(Debug, Clone)]
pub struct SigningKey {
    /// Key id, written into each token's header.
    pub id: String,
    /// The secret.
    pub secret: Vec<u8>,
}

/// One `access` entry: what the token allows on one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    /// Resource type, `repository` (or `registry` for the catalog).
    #[serde(rename = "type")]
    pub kind: String,
    /// Resource name.
    pub name: String,
    /// Granted actions.
    pub actions: Vec<String>,
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer: the service name.
    pub iss: String,
    /// Subject: the account name.
    pub sub: String,
    /// Audience: the service the token is for.
    pub aud: String,
    /// Expiry, unix seconds.
    pub exp: i64,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// Unique id.
    pub jti: String,
    /// Granted access (empty for refresh tokens).
    #[serde(default)]
    pub access: Vec<AccessEntry>,
    /// `access` or `refresh`.
    pub typ: String,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: String,
    kid: String,
}

fn mac(secret: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// Signs `claims` with `key`.
pub fn sign(claims: &Claims, key: &SigningKey) -> String {
    let header = Header {
        alg: "HS256".into(),
        typ: "JWT".into(),
        kid: key.id.clone(),
    };
    // Serializing these plain structs cannot fail.
    let h = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap_or_default());
    let c = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signing_input = format!("{h}.{c}");
    let sig = URL_SAFE_NO_PAD.encode(mac(&key.secret, signing_input.as_bytes()));
    format!("{signing_input}.{sig}")
}

/// Longest token accepted; anything longer is refused before decoding.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Verifies a token's signature (against whichever key it names), expiry and
/// audience, and returns its claims.
pub fn verify(
    token: &str,
    keys: &[SigningKey],
    audience: &str,
    now: i64,
) -> Result<Claims, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::InvalidToken("too long"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::InvalidToken("not a compact JWT"));
    };
    let header: Header = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(AuthError::InvalidToken("malformed header"))?;
    if header.alg != "HS256" {
        return Err(AuthError::InvalidToken("unsupported algorithm"));
    }
    let key = keys
        .iter()
        .find(|k| k.id == header.kid)
        .ok_or(AuthError::InvalidToken("unknown signing key"))?;
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| AuthError::InvalidToken("malformed signature"))?;
    let expected = mac(&key.secret, format!("{h}.{c}").as_bytes());
    if !constant_time_eq(&sig, &expected) {
        return Err(AuthError::InvalidToken("bad signature"));
    }
    let claims: Claims = URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(AuthError::InvalidToken("malformed claims"))?;
    if claims.exp <= now {
        return Err(AuthError::InvalidToken("expired"));
    }
    if claims.aud != audience {
        return Err(AuthError::InvalidToken("issued for another service"));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64, aud: &str) -> Claims {
        Claims {
            iss: "wharf".into(),
            sub: "alice".into(),
            aud: aud.into(),
            exp,
            iat: 0,
            jti: "1".into(),
            access: vec![AccessEntry {
                kind: "repository".into(),
                name: "team/app".into(),
                actions: vec!["pull".into()],
            }],
            typ: "access".into(),
        }
    }

    #[test]
    fn sign_verify_and_reject() {
        let k1 = SigningKey {
            id: "k1".into(),
            secret: b"0123456789abcdef0123456789abcdef".to_vec(),
        };
        let k2 = SigningKey {
            id: "k2".into(),
            secret: b"fedcba9876543210fedcba9876543210".to_vec(),
        };
        let t = sign(&claims(100, "wharf"), &k1);
        assert_eq!(
            verify(&t, &[k2.clone(), k1.clone()], "wharf", 50)
                .unwrap()
                .sub,
            "alice"
        );
        assert!(
            verify(&t, std::slice::from_ref(&k2), "wharf", 50).is_err(),
            "unknown key"
        );
        assert!(
            verify(&t, std::slice::from_ref(&k1), "wharf", 100).is_err(),
            "expired"
        );
        assert!(
            verify(&t, std::slice::from_ref(&k1), "other", 50).is_err(),
            "audience"
        );
        // Forged: claims swapped, signature kept.
        let forged_claims =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(1_000_000, "wharf")).unwrap());
        let mut parts: Vec<&str> = t.split('.').collect();
        parts[1] = &forged_claims;
        assert!(verify(&parts.join("."), std::slice::from_ref(&k1), "wharf", 50).is_err());
        for junk in ["", "a.b", "a.b.c.d", "!!.!!.!!"] {
            assert!(
                verify(junk, std::slice::from_ref(&k1), "wharf", 50).is_err(),
                "{junk}"
            );
        }
    }
}
