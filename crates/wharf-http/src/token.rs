//! `GET|POST /token`: the Docker registry token endpoint.
//!
//! GET follows the Docker token specification (credentials by Basic auth,
//! `scope` repeated, `offline_token=true` for a refresh token); POST follows
//! its OAuth2 variant (`grant_type=password` or `refresh_token`, scopes space
//! separated, `access_type=offline`). Granted scopes are the intersection of
//! what was asked for and what the caller may do; asking for more is not an
//! error, the token simply carries less.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use wharf_auth::access::Principal;
use wharf_auth::{Credentials, Identity, RequestedScope};

use crate::auth::{authenticate, client_cert, client_ip, credentials, refusal_of, Refusal};
use crate::oci::guard::{realm, refusal_response};
use crate::AppState;

/// Largest form body accepted at the token endpoint.
const MAX_FORM_BYTES: usize = 64 * 1024;

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// Handles both forms of token request.
pub(crate) async fn token(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let headers = req.headers().clone();
    let remote = client_ip(&state, &req);
    let realm = realm(&state, &req);
    let cert = client_cert(&req);
    let slot = req
        .extensions()
        .get::<crate::access_log::PrincipalSlot>()
        .cloned();
    let method = req.method().clone();
    let query = req.uri().query().unwrap_or("").to_owned();
    let form = if method == Method::POST {
        match axum::body::to_bytes(req.into_body(), MAX_FORM_BYTES).await {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(_) => {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "form too large")
            }
        }
    } else {
        String::new()
    };
    let params: Vec<(String, String)> = parse_form(&query)
        .into_iter()
        .chain(parse_form(&form))
        .collect();
    let param = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };

    if let Some(service) = param("service") {
        if service != state.auth.settings().service {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "unknown service",
            );
        }
    }
    let mut scopes = Vec::new();
    for (k, v) in &params {
        if k == "scope" {
            for s in v.split(' ').filter(|s| !s.is_empty()) {
                match RequestedScope::parse(s) {
                    Some(scope) => scopes.push(scope),
                    None => {
                        return oauth_error(
                            StatusCode::BAD_REQUEST,
                            "invalid_scope",
                            "malformed scope",
                        )
                    }
                }
            }
        }
    }
    let offline = param("offline_token") == Some("true") || param("access_type") == Some("offline");

    let principal = match (method == Method::POST, param("grant_type")) {
        (true, Some("refresh_token")) => {
            let Some(refresh) = param("refresh_token") else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "refresh_token missing",
                );
            };
            match state.auth.refresh(refresh).await {
                Ok(p) => p,
                Err(_) => {
                    return oauth_error(
                        StatusCode::UNAUTHORIZED,
                        "invalid_grant",
                        "invalid refresh token",
                    )
                }
            }
        }
        (true, Some("password")) => {
            let creds = Credentials::Basic {
                user: param("username").unwrap_or("").to_owned(),
                password: param("password").unwrap_or("").to_owned(),
            };
            match principal_from(&state, &realm, &creds, cert.as_deref(), remote).await {
                Ok(p) => p,
                Err(res) => return res,
            }
        }
        (true, _) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "use password or refresh_token",
            )
        }
        (false, _) => {
            let Ok(creds) = credentials(&headers) else {
                return refusal_response(&state, &realm, Refusal::MalformedCredentials, &[]);
            };
            match principal_from(&state, &realm, &creds, cert.as_deref(), remote).await {
                Ok(p) => p,
                Err(res) => return res,
            }
        }
    };
    if let Some(slot) = slot {
        slot.set(principal.account.as_deref().unwrap_or("-"));
    }
    match state.auth.issue_token(&principal, &scopes, offline).await {
        Ok(issued) => {
            let mut body = serde_json::json!({
                "token": issued.token,
                "access_token": issued.token,
                "expires_in": issued.expires_in,
                "issued_at": rfc3339(issued.issued_at),
            });
            if let Some(r) = issued.refresh_token {
                body["refresh_token"] = serde_json::Value::String(r);
            }
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Err(e) => refusal_response(&state, &realm, refusal_of(e), &[]),
    }
}

async fn principal_from(
    state: &AppState,
    realm: &str,
    creds: &Credentials,
    cert: Option<&str>,
    remote: Option<std::net::IpAddr>,
) -> Result<Principal, Response> {
    match authenticate(state, creds, cert, remote).await {
        Ok(Identity::Account(p)) => Ok(p),
        Ok(Identity::Anonymous) => Ok(Principal::anonymous()),
        // A registry token is not a credential for getting another one.
        Ok(Identity::RegistryToken(_)) => {
            Err(refusal_response(state, realm, Refusal::BadCredentials, &[]))
        }
        Err(e) => Err(refusal_response(state, realm, refusal_of(e), &[])),
    }
}

/// Parses `application/x-www-form-urlencoded` text, keeping repeated keys.
pub(crate) fn parse_form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Formats unix seconds as RFC 3339 UTC.
fn rfc3339(secs: i64) -> String {
    wharf_core::time::rfc3339(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_and_dates() {
        let f =
            parse_form("scope=repository%3Aa%2Fb%3Apull&scope=x+y&service=wharf&bad=%zz&tail=%4");
        assert_eq!(f[0], ("scope".into(), "repository:a/b:pull".into()));
        assert_eq!(f[1].1, "x y");
        assert_eq!(f[3].1, "%zz");
        assert_eq!(f[4].1, "%4");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
