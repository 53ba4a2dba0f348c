//! The plain-HTTP listener's application: ACME HTTP-01 answers, and a
//! redirect to HTTPS for every other request — but only for a host this
//! server holds certificates for, so it never bounces a client to a site of an
//! attacker's choosing. Serving it (connection limits, shutdown) is the HTTP
//! layer's; the binary hands this router to that listener.

use std::sync::Arc;

use axum::extract::{Path, Request};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Router;

use crate::challenges::AcmeChallenges;

/// A plain-HTTP app that answers ACME HTTP-01 challenges and redirects
/// everything else to HTTPS on `https_port` — but only for a `Host` that is
/// one of `hostnames` (the certificates' names, the ACME domains, the external
/// URL's host): anything else gets `421 Misdirected Request`.
pub fn app(https_port: u16, hostnames: Vec<String>, acme: Option<Arc<AcmeChallenges>>) -> Router {
    let hostnames = Arc::new(hostnames);
    Router::new()
        .route(
            "/.well-known/acme-challenge/{token}",
            axum::routing::get(move |Path(token): Path<String>| async move {
                match acme.as_ref().and_then(|c| c.http01(&token)) {
                    Some(key_authorization) => (StatusCode::OK, key_authorization).into_response(),
                    None => StatusCode::NOT_FOUND.into_response(),
                }
            }),
        )
        .fallback(move |req: Request| async move { redirect(&req, https_port, &hostnames) })
}

fn redirect(req: &Request, https_port: u16, hostnames: &[String]) -> Response {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    match requested_host(req).and_then(|host| https_location(&host, path, https_port, hostnames)) {
        Some(location) => Redirect::permanent(&location).into_response(),
        None => (
            StatusCode::MISDIRECTED_REQUEST,
            "this host name is not served here\n",
        )
            .into_response(),
    }
}

/// The host a request names — HTTP/2's `:authority` (in the URI) or HTTP/1.1's
/// `Host` — read by the one authority reader the realm uses too
/// ([`wharf_core::Authority`]): lower-case, without port; IPv6 addresses keep
/// their brackets; user info, paths and anything else is refused.
fn requested_host<B>(req: &axum::http::Request<B>) -> Option<String> {
    let authority = match req.uri().authority() {
        Some(authority) => wharf_core::Authority::parse(authority.as_str())?,
        None => wharf_core::Authority::parse(req.headers().get(header::HOST)?.to_str().ok()?)?,
    };
    Some(authority.host().to_owned())
}

/// `https://host[:https_port]path` when `host` is one of `allowed`, else `None`.
fn https_location(
    host: &str,
    path_and_query: &str,
    https_port: u16,
    allowed: &[String],
) -> Option<String> {
    if !host_allowed(host.trim_start_matches('[').trim_end_matches(']'), allowed) {
        return None;
    }
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    Some(format!("https://{host}{port}{path_and_query}"))
}

/// Whether `host` (lower-case, no port, no brackets) is one of `allowed`:
/// an exact name, or `*.domain` covering one more DNS label (letters, digits
/// and `-` only, so nothing in it can end the host part of the redirect URL).
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|name| {
        let name = name.to_ascii_lowercase();
        match name.strip_prefix("*.") {
            Some(domain) => host.split_once('.').is_some_and(|(label, rest)| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && rest == domain
            }),
            None => name == host,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["registry.test".into(), "*.mirror.test".into(), "::1".into()]
    }

    fn with_host(host: &str) -> axum::http::Request<()> {
        axum::http::Request::builder()
            .uri("/v2/x?y=1")
            .header(header::HOST, host)
            .body(())
            .unwrap()
    }

    #[test]
    fn the_host_is_read_from_the_authority_without_port_or_user_info() {
        let host = |h: &str| requested_host(&with_host(h));
        assert_eq!(host("Registry.Test:8080").as_deref(), Some("registry.test"));
        assert_eq!(host("[::1]:80").as_deref(), Some("[::1]"));
        // User info is no part of a host a client is redirected to.
        for bad in [
            "someone@registry.test",
            "evil.example/x.mirror.test",
            "a b",
            "registry.test#x",
            "",
        ] {
            assert_eq!(host(bad), None, "{bad:?}");
        }
        let http2 = axum::http::Request::builder()
            .uri("http://registry.test:8080/v2/")
            .body(())
            .unwrap();
        assert_eq!(requested_host(&http2).as_deref(), Some("registry.test"));
    }

    #[test]
    fn only_served_names_are_redirected() {
        let to = |host: &str, port| https_location(host, "/v2/x?y=1", port, &names());
        assert_eq!(
            to("registry.test", 8443).as_deref(),
            Some("https://registry.test:8443/v2/x?y=1")
        );
        assert_eq!(
            to("registry.test", 443).as_deref(),
            Some("https://registry.test/v2/x?y=1")
        );
        assert_eq!(
            to("eu.mirror.test", 443).as_deref(),
            Some("https://eu.mirror.test/v2/x?y=1")
        );
        assert_eq!(to("[::1]", 443).as_deref(), Some("https://[::1]/v2/x?y=1"));
        for refused in [
            "evil.example",
            "mirror.test",
            "a.b.mirror.test",
            ".mirror.test",
            "evil/x.mirror.test",
            "evil?x.mirror.test",
            "evil#x.mirror.test",
            "127.0.0.1",
        ] {
            assert_eq!(to(refused, 443), None, "{refused}");
        }
    }

    #[tokio::test]
    async fn http01_is_answered_and_other_requests_redirected_or_refused() {
        use tower::ServiceExt;
        let challenges = Arc::new(AcmeChallenges::default());
        challenges.offer_http01("tok".into(), "tok.thumbprint".into());
        let app = app(8443, names(), Some(challenges));
        let get = |path: &str, host: &str| {
            axum::http::Request::builder()
                .uri(path)
                .header(header::HOST, host)
                .body(axum::body::Body::empty())
                .unwrap()
        };

        let answer = app
            .clone()
            .oneshot(get("/.well-known/acme-challenge/tok", "registry.test"))
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        let body = axum::body::to_bytes(answer.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(&body[..], b"tok.thumbprint");
        let unknown = app
            .clone()
            .oneshot(get("/.well-known/acme-challenge/other", "registry.test"))
            .await
            .unwrap();
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

        let moved = app
            .clone()
            .oneshot(get("/v2/x?y=1", "registry.test:80"))
            .await
            .unwrap();
        assert_eq!(moved.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            moved.headers()[header::LOCATION],
            "https://registry.test:8443/v2/x?y=1"
        );
        let refused = app.oneshot(get("/v2/", "evil.example")).await.unwrap();
        assert_eq!(refused.status(), StatusCode::MISDIRECTED_REQUEST);
    }
}
