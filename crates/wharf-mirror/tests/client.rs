//! The upstream client against a scripted registry on loopback: the Bearer token flow (token
//! fetched with Basic credentials, cached per scope, fetched again after a 401), `Link`
//! pagination, 429 `Retry-After`, 5xx answers and dropped connections retried with backoff, the
//! request-rate budget, and manifest bytes that do not match their digest.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wharf_core::Digest;
use wharf_mirror::{MirrorError, UpstreamClient, UpstreamSettings};

/// One request as the scripted server saw it.
#[derive(Debug, Clone)]
struct Seen {
    target: String,
    authorization: Option<String>,
}

type Script = Arc<dyn Fn(&Seen, &[Seen]) -> (u16, Vec<(String, String)>, Vec<u8>) + Send + Sync>;

/// Serves `script` on a free loopback port; returns the base URL and the log of requests.
async fn serve(script: Script) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen_log = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let script = script.clone();
            let log = seen_log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let mut lines = head.lines();
                let first = lines.next().unwrap_or_default();
                let method = first.split(' ').next().unwrap_or_default().to_owned();
                let target = first.split(' ').nth(1).unwrap_or_default().to_owned();
                let authorization = lines
                    .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
                    .map(|l| l["authorization:".len()..].trim().to_owned());
                let seen = Seen {
                    target,
                    authorization,
                };
                let earlier = log.lock().unwrap().clone();
                let (status, headers, body) = script(&seen, &earlier);
                log.lock().unwrap().push(seen);
                if status == 0 {
                    // Status 0 in a script: drop the connection without an answer.
                    return;
                }
                let mut response = format!(
                    "HTTP/1.1 {status} X\r\nConnection: close\r\nContent-Length: {}\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    response.push_str(&format!("{k}: {v}\r\n"));
                }
                response.push_str("\r\n");
                let mut bytes = response.into_bytes();
                if method != "HEAD" {
                    bytes.extend_from_slice(&body);
                }
                let _ = sock.write_all(&bytes).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (base, log)
}

fn client(base: &str) -> UpstreamClient {
    UpstreamClient::new(UpstreamSettings {
        base_url: base.to_owned(),
        credentials: Some(("bot".into(), "pw".into())),
        ca_bundle: None,
        max_manifest_bytes: 1 << 20,
        requests_per_second: None,
    })
    .unwrap()
}

fn h(k: &str, v: &str) -> (String, String) {
    (k.to_owned(), v.to_owned())
}

#[tokio::test]
async fn token_flow_pagination_and_retry_after() {
    let realm = Arc::new(Mutex::new(String::new()));
    let realm_in = realm.clone();
    let script: Script = Arc::new(move |req: &Seen, earlier: &[Seen]| {
        let realm = realm_in.lock().unwrap().clone();
        let challenge = h(
            "WWW-Authenticate",
            &format!(r#"Bearer realm="{realm}",service="fake""#),
        );
        if req.target.starts_with("/token") {
            // "bot:pw"
            assert_eq!(req.authorization.as_deref(), Some("Basic Ym90OnB3"));
            let n = earlier
                .iter()
                .filter(|s| s.target.starts_with("/token"))
                .count();
            return (
                200,
                vec![],
                format!(r#"{{"token":"t{n}","expires_in":300}}"#).into_bytes(),
            );
        }
        if req.target == "/v2/" && req.authorization.is_none() {
            return (401, vec![challenge], vec![]);
        }
        let listings = earlier
            .iter()
            .filter(|s| s.target.contains("tags/list"))
            .count();
        match (req.target.as_str(), req.authorization.as_deref()) {
            // The first token is refused once, as after a key rotation upstream.
            (_, Some("Bearer t1")) if req.target.contains("tags/list") => {
                (401, vec![challenge], vec![])
            }
            ("/v2/team/app/tags/list?n=1000", Some("Bearer t2")) if listings == 1 => {
                (429, vec![h("Retry-After", "1")], vec![])
            }
            ("/v2/team/app/tags/list?n=1000", Some("Bearer t2")) => (
                200,
                vec![h(
                    "Link",
                    r#"</v2/team/app/tags/list?n=1000&last=b>; rel="next""#,
                )],
                br#"{"name":"team/app","tags":["a","b"]}"#.to_vec(),
            ),
            ("/v2/team/app/tags/list?n=1000&last=b", Some("Bearer t2")) => {
                (200, vec![], br#"{"name":"team/app","tags":["c"]}"#.to_vec())
            }
            _ => (404, vec![], vec![]),
        }
    });
    let (base, log) = serve(script).await;
    *realm.lock().unwrap() = format!("{base}/token");
    let client = client(&base);
    client.ping().await.unwrap();
    let started = Instant::now();
    let tags = client.list_tags("team/app").await.unwrap();
    assert_eq!(tags, ["a", "b", "c"]);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was not waited for"
    );
    let log = log.lock().unwrap();
    let tokens: Vec<&str> = log
        .iter()
        .filter(|s| s.target.starts_with("/token"))
        .map(|s| s.target.as_str())
        .collect();
    // One for the ping (no scope), one for the scope, one after the 401; the 429 retry and
    // the second page reuse the cached token.
    assert_eq!(tokens.len(), 3, "{log:?}");
    assert_eq!(tokens[0], "/token?service=fake");
    assert_eq!(
        tokens[1],
        "/token?service=fake&scope=repository%3Ateam%2Fapp%3Apull"
    );
}

#[tokio::test]
async fn manifest_bytes_must_match_their_digest_and_bad_credentials_are_named() {
    let body = br#"{"schemaVersion":2}"#.to_vec();
    let good = Digest::sha256_of(&body);
    let other = Digest::sha256_of(b"other");
    let announced = other.to_string();
    let script: Script = Arc::new(move |req: &Seen, _| {
        if req.authorization.as_deref() != Some("Basic Ym90OnB3") {
            return (
                401,
                vec![h("WWW-Authenticate", r#"Basic realm="x""#)],
                vec![],
            );
        }
        (
            200,
            vec![
                h("Content-Type", "application/vnd.oci.image.manifest.v1+json"),
                h("Docker-Content-Digest", &announced),
            ],
            body.clone(),
        )
    });
    let (base, _log) = serve(script).await;
    let c = client(&base);
    c.ping().await.unwrap();
    // Announced digest differs from the bytes.
    let err = c.get_manifest("team/app", "v1", None).await.unwrap_err();
    assert!(matches!(err, MirrorError::DigestMismatch { .. }), "{err}");
    // Asked by digest: the bytes are checked against what was asked.
    let err = c
        .get_manifest("team/app", &other.to_string(), Some(&other))
        .await
        .unwrap_err();
    assert!(matches!(err, MirrorError::DigestMismatch { .. }), "{err}");
    let fetched = c
        .get_manifest("team/app", &good.to_string(), Some(&good))
        .await;
    // The header still disagrees, but the digest asked for wins and matches.
    assert_eq!(fetched.unwrap().digest, good);

    let wrong = UpstreamClient::new(UpstreamSettings {
        base_url: base.clone(),
        credentials: Some(("bot".into(), "nope".into())),
        ca_bundle: None,
        max_manifest_bytes: 1 << 20,
        requests_per_second: None,
    })
    .unwrap();
    let err = wrong.ping().await.unwrap_err();
    assert!(matches!(err, MirrorError::Unauthorized { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("refused the credentials of user \"bot\""),
        "{err}"
    );
}

#[tokio::test]
async fn server_errors_and_dropped_connections_are_retried_with_backoff() {
    let body = br#"{"schemaVersion":2}"#.to_vec();
    let digest = Digest::sha256_of(&body);
    let script: Script = Arc::new(move |req: &Seen, earlier: &[Seen]| {
        let tries = earlier.iter().filter(|s| s.target == req.target).count();
        match (req.target.as_str(), tries) {
            ("/v2/", _) => (200, vec![], vec![]),
            // A 502, then a connection dropped without an answer, then the manifest.
            (_, 0) => (502, vec![], vec![]),
            (_, 1) => (0, vec![], vec![]),
            _ => (
                200,
                vec![h(
                    "Content-Type",
                    "application/vnd.oci.image.manifest.v1+json",
                )],
                body.clone(),
            ),
        }
    });
    let (base, log) = serve(script).await;
    let c = client(&base);
    c.ping().await.unwrap();
    let fetched = c
        .get_manifest("team/app", &digest.to_string(), Some(&digest))
        .await
        .unwrap();
    assert_eq!(fetched.digest, digest);
    let asked = log
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.target.contains("manifests"))
        .count();
    assert_eq!(asked, 3);

    // A 500 that persists ends as the status, after every attempt.
    let script: Script = Arc::new(|req: &Seen, _| match req.target.as_str() {
        "/v2/" => (200, vec![], vec![]),
        _ => (500, vec![], b"boom".to_vec()),
    });
    let (base, log) = serve(script).await;
    let c = client(&base);
    let err = c.head_manifest("team/app", "v1").await.unwrap_err();
    assert!(
        matches!(err, MirrorError::Status { status: 500, .. }),
        "{err}"
    );
    assert_eq!(
        log.lock().unwrap().len(),
        1 + 5,
        "the ping and five attempts"
    );
}

#[tokio::test]
async fn the_request_budget_spaces_requests() {
    let script: Script = Arc::new(|_, _| {
        (
            200,
            vec![h(
                "Docker-Content-Digest",
                &Digest::sha256_of(b"m").to_string(),
            )],
            vec![],
        )
    });
    let (base, log) = serve(script).await;
    let rate = 10.0;
    let c = UpstreamClient::new(UpstreamSettings {
        base_url: base.clone(),
        credentials: None,
        ca_bundle: None,
        max_manifest_bytes: 1 << 20,
        requests_per_second: Some(rate),
    })
    .unwrap();
    let started = Instant::now();
    // The ping's probe, then ten HEADs at once: eleven requests in all.
    futures_util::future::join_all((0..10).map(|i| {
        let c = &c;
        async move { c.head_manifest("team/app", &format!("v{i}")).await.unwrap() }
    }))
    .await;
    let elapsed = started.elapsed();
    assert_eq!(log.lock().unwrap().len(), 11);
    assert!(
        elapsed >= Duration::from_secs_f64(10.0 / rate),
        "11 requests at {rate}/s took only {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}
