//! [`UpstreamClient`]: the distribution-API client that reads an upstream
//! registry, as skopeo and containerd do.
//!
//! Authentication follows what the upstream's `/v2/` asks for: nothing, Basic
//! credentials, or the Docker token flow (a Bearer challenge names a realm and
//! service; a token per `repository:NAME:pull` scope is fetched with the Basic
//! credentials, cached until it expires, and fetched again on a 401). 429 and
//! 503 answers are retried after their `Retry-After`, a bounded number of
//! times; other 5xx answers and transport failures (a refused or reset
//! connection, a time-out) are retried with exponential backoff. Every request,
//! the token service's too, first takes a slot of the remote's request budget
//! ([`RequestBudget`]), so a run never exceeds the rate the operator allows.
//! Manifests are verified here (sha256 of the exact bytes); blobs are
//! streamed and verified by the store's upload as they are written.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use reqwest::{header, Method, Response, StatusCode};
use wharf_blob::ByteStream;
use wharf_core::Digest;

use crate::headers::{next_link, parse_challenges, retry_after, Challenge};
use crate::MirrorError;

/// Every manifest type Wharf stores, so the upstream never down-converts.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Attempts of one request when the upstream rate-limits or is unavailable.
const MAX_ATTEMPTS: u32 = 5;

/// First wait before retrying a transport failure or a 5xx; doubled each attempt.
const TRANSIENT_BACKOFF: Duration = Duration::from_millis(250);

/// Longest single wait for a `Retry-After`; a longer ask fails the request
/// rather than stalling the whole run.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// How long a token lives when the token service does not say.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// Tags asked for per page of a listing.
const TAGS_PAGE: u32 = 1000;

/// How to reach one upstream.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// `https://host[:port]`, no trailing `/` (Docker Hub already resolved to its endpoint).
    pub base_url: String,
    /// User name and password, if any.
    pub credentials: Option<(String, String)>,
    /// PEM bundle of CAs trusted instead of the system roots.
    pub ca_bundle: Option<Vec<u8>>,
    /// Largest manifest accepted.
    pub max_manifest_bytes: u64,
    /// Most requests per second sent to the upstream; `None`: no budget.
    pub requests_per_second: Option<f64>,
}

/// A request-rate budget: requests are spaced at least `1 / rate` apart (a token
/// bucket holding one token), so `n` requests take at least `(n - 1) / rate`.
/// A bucket of one, not of a second's worth, because upstream limits such as
/// Docker Hub's are counted over short windows and a burst is what trips them.
#[derive(Debug)]
pub struct RequestBudget {
    spacing: Duration,
    next: Mutex<Instant>,
}

impl RequestBudget {
    /// A budget of `per_second` requests; `None` for a rate that is not positive.
    pub fn new(per_second: f64) -> Option<RequestBudget> {
        if !(per_second.is_finite() && per_second > 0.0) {
            return None;
        }
        Some(RequestBudget {
            spacing: Duration::from_secs_f64(1.0 / per_second),
            next: Mutex::new(Instant::now()),
        })
    }

    /// Waits for the next slot.
    pub async fn take(&self) {
        let at = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let at = (*next).max(Instant::now());
            *next = at + self.spacing;
            at
        };
        tokio::time::sleep_until(at.into()).await;
    }
}

/// What the upstream's `/v2/` asked for.
#[derive(Debug, Clone)]
enum AuthScheme {
    Anonymous,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

struct CachedToken {
    token: String,
    expires: Instant,
}

/// A manifest read from the upstream, verified against its digest.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// sha256 of `bytes`.
    pub digest: Digest,
    /// The upstream's `Content-Type`.
    pub media_type: Option<String>,
    /// The exact bytes.
    pub bytes: Bytes,
}

/// A client of one upstream registry.
pub struct UpstreamClient {
    http: reqwest::Client,
    settings: UpstreamSettings,
    auth: tokio::sync::OnceCell<AuthScheme>,
    tokens: Mutex<HashMap<String, CachedToken>>,
    budget: Option<RequestBudget>,
}

impl UpstreamClient {
    /// A client for `settings`; fails only on an unusable CA bundle.
    pub fn new(settings: UpstreamSettings) -> Result<UpstreamClient, MirrorError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(concat!("wharf/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(120));
        if let Some(pem) = &settings.ca_bundle {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| MirrorError::Config(format!("ca_bundle: {e}")))?;
            if certs.is_empty() {
                return Err(MirrorError::Config(
                    "ca_bundle: no certificate in the file".into(),
                ));
            }
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| MirrorError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(UpstreamClient {
            http,
            budget: settings.requests_per_second.and_then(RequestBudget::new),
            settings,
            auth: tokio::sync::OnceCell::new(),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// The upstream's base URL.
    pub fn base_url(&self) -> &str {
        &self.settings.base_url
    }

    fn user(&self) -> Option<String> {
        self.settings.credentials.as_ref().map(|(u, _)| u.clone())
    }

    fn unauthorized(&self) -> MirrorError {
        MirrorError::Unauthorized {
            upstream: self.settings.base_url.clone(),
            user: self.user(),
        }
    }

    fn transport(&self, url: &str, err: reqwest::Error) -> MirrorError {
        MirrorError::Unreachable {
            url: url.to_owned(),
            reason: error_chain(&err),
        }
    }

    /// Pings `/v2/`, learns how to authenticate, and checks the credentials
    /// (with a token for no particular scope, or a Basic-authenticated ping).
    pub async fn ping(&self) -> Result<(), MirrorError> {
        let scheme = self.auth_scheme().await?.clone();
        match scheme {
            AuthScheme::Anonymous => Ok(()),
            AuthScheme::Basic => {
                let url = format!("{}/v2/", self.settings.base_url);
                let resp = self.send(Method::GET, &url, None, None).await?;
                match resp.status() {
                    s if s.is_success() => Ok(()),
                    s => Err(self.status_error(&url, s, resp).await),
                }
            }
            AuthScheme::Bearer { .. } => {
                self.token("").await?;
                Ok(())
            }
        }
    }

    async fn auth_scheme(&self) -> Result<&AuthScheme, MirrorError> {
        self.auth
            .get_or_try_init(|| async {
                let url = format!("{}/v2/", self.settings.base_url);
                let resp = self.request(&url, || self.http.get(&url)).await?;
                if resp.status().is_success() {
                    return Ok(AuthScheme::Anonymous);
                }
                if resp.status() != StatusCode::UNAUTHORIZED {
                    let status = resp.status();
                    return Err(self.status_error(&url, status, resp).await);
                }
                let challenges = www_authenticate(&resp);
                if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
                    let realm = bearer.param("realm").ok_or_else(|| {
                        MirrorError::Protocol(format!("{url}: Bearer challenge without a realm"))
                    })?;
                    return Ok(AuthScheme::Bearer {
                        realm: realm.to_owned(),
                        service: bearer.param("service").map(str::to_owned),
                    });
                }
                if challenges.iter().any(|c| c.scheme == "basic") {
                    if self.settings.credentials.is_none() {
                        return Err(self.unauthorized());
                    }
                    return Ok(AuthScheme::Basic);
                }
                Err(MirrorError::Protocol(format!(
                    "{url}: 401 without a Bearer or Basic challenge"
                )))
            })
            .await
    }

    /// A token for `scope` (empty: none), from the cache or the token service.
    async fn token(&self, scope: &str) -> Result<String, MirrorError> {
        if let Some(t) = self.cached_token(scope) {
            return Ok(t);
        }
        let AuthScheme::Bearer { realm, service } = self.auth_scheme().await? else {
            return Err(MirrorError::Protocol(
                "token asked of a non-token upstream".into(),
            ));
        };
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(service) = service {
            query.push(("service", service));
        }
        if !scope.is_empty() {
            query.push(("scope", scope));
        }
        let resp = self
            .request(realm, || {
                let req = self.http.get(realm.as_str()).query(&query);
                match &self.settings.credentials {
                    Some((user, password)) => req.basic_auth(user, Some(password)),
                    None => req,
                }
            })
            .await?;
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => return Err(self.unauthorized()),
            s => return Err(self.status_error(realm, s, resp).await),
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let body: TokenResponse = resp
            .json()
            .await
            .map_err(|e| MirrorError::Protocol(format!("{realm}: token response: {e}")))?;
        let token = body
            .token
            .or(body.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                MirrorError::Protocol(format!("{realm}: token response without a token"))
            })?;
        let lifetime = body
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        // Renewed a little early, so a token never expires in flight.
        let expires = Instant::now()
            + lifetime
                .saturating_sub(Duration::from_secs(10))
                .max(Duration::from_secs(5));
        self.lock_tokens().insert(
            scope.to_owned(),
            CachedToken {
                token: token.clone(),
                expires,
            },
        );
        Ok(token)
    }

    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedToken>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cached_token(&self, scope: &str) -> Option<String> {
        let tokens = self.lock_tokens();
        tokens
            .get(scope)
            .filter(|t| t.expires > Instant::now())
            .map(|t| t.token.clone())
    }

    /// Sends the request `build` makes within the budget, retrying transport
    /// failures and 5xx answers with backoff and waiting out 429/503; the
    /// answer is any other response, or the last one once the attempts are spent.
    async fn request(
        &self,
        url: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Response, MirrorError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Some(budget) = &self.budget {
                budget.take().await;
            }
            let resp = match build().send().await {
                Ok(resp) => resp,
                Err(e) if attempt < MAX_ATTEMPTS && transient(&e) => {
                    let wait = transient_backoff(attempt);
                    tracing::info!(%url, error = %error_chain(&e), wait_ms = wait.as_millis() as u64, "upstream request failed; retrying");
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Err(e) => return Err(self.transport(url, e)),
            };
            if let Some(wait) = self.retry_wait(&resp, attempt, url)? {
                tokio::time::sleep(wait).await;
                continue;
            }
            return Ok(resp);
        }
    }

    /// How long to wait before retrying a 429, a 503 or another 5xx, or `None`
    /// to use this response; an error when a 429/503's attempts are spent.
    fn retry_wait(
        &self,
        resp: &Response,
        attempt: u32,
        url: &str,
    ) -> Result<Option<Duration>, MirrorError> {
        let status = resp.status();
        if matches!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR
                | StatusCode::BAD_GATEWAY
                | StatusCode::GATEWAY_TIMEOUT
        ) {
            if attempt >= MAX_ATTEMPTS {
                return Ok(None);
            }
            let wait = transient_backoff(attempt);
            tracing::info!(%url, status = status.as_u16(), wait_ms = wait.as_millis() as u64, "upstream failed; retrying");
            return Ok(Some(wait));
        }
        if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
            return Ok(None);
        }
        let asked = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, SystemTime::now()));
        let backoff = Duration::from_millis(500 * 2u64.pow(attempt.min(6)));
        let wait = asked.unwrap_or(backoff);
        if attempt >= MAX_ATTEMPTS || wait > MAX_RETRY_WAIT {
            return Err(MirrorError::RateLimited {
                url: url.to_owned(),
                status: status.as_u16(),
                attempts: attempt,
            });
        }
        tracing::info!(%url, status = status.as_u16(), wait_ms = wait.as_millis() as u64, "upstream asked to retry later");
        Ok(Some(wait))
    }

    /// Sends a request with the credentials the upstream asked for, renewing
    /// the token once on a 401 and waiting out 429/503.
    async fn send(
        &self,
        method: Method,
        url: &str,
        scope: Option<&str>,
        accept: Option<&str>,
    ) -> Result<Response, MirrorError> {
        let scheme = self.auth_scheme().await?.clone();
        let mut renewed = false;
        loop {
            let bearer = match &scheme {
                AuthScheme::Bearer { .. } => Some(self.token(scope.unwrap_or("")).await?),
                _ => None,
            };
            let resp = self
                .request(url, || {
                    let mut req = self.http.request(method.clone(), url);
                    if let Some(accept) = accept {
                        req = req.header(header::ACCEPT, accept);
                    }
                    match (&scheme, &bearer) {
                        (AuthScheme::Basic, _) => match &self.settings.credentials {
                            Some((user, password)) => req.basic_auth(user, Some(password)),
                            None => req,
                        },
                        (_, Some(token)) => req.bearer_auth(token),
                        _ => req,
                    }
                })
                .await?;
            if resp.status() == StatusCode::UNAUTHORIZED {
                if matches!(scheme, AuthScheme::Bearer { .. }) && !renewed {
                    renewed = true;
                    self.lock_tokens().remove(scope.unwrap_or(""));
                    continue;
                }
                return Err(self.unauthorized());
            }
            return Ok(resp);
        }
    }

    async fn status_error(&self, url: &str, status: StatusCode, resp: Response) -> MirrorError {
        let body = resp.text().await.unwrap_or_default();
        let mut snippet: String = body.chars().take(200).collect();
        snippet = snippet.trim().to_owned();
        match status {
            StatusCode::FORBIDDEN => MirrorError::Denied {
                url: url.to_owned(),
                user: self.user(),
            },
            _ => MirrorError::Status {
                url: url.to_owned(),
                status: status.as_u16(),
                body: snippet,
            },
        }
    }

    fn repo_url(&self, repo: &str, rest: &str) -> String {
        format!("{}/v2/{repo}/{rest}", self.settings.base_url)
    }

    /// Every tag of `repo`, following `Link` pagination.
    pub async fn list_tags(&self, repo: &str) -> Result<Vec<String>, MirrorError> {
        let scope = pull_scope(repo);
        let mut url = self.repo_url(repo, &format!("tags/list?n={TAGS_PAGE}"));
        let mut tags = Vec::new();
        // A bound, so an upstream whose links loop cannot hold the run forever.
        for _ in 0..10_000 {
            let resp = self.send(Method::GET, &url, Some(&scope), None).await?;
            let status = resp.status();
            if status == StatusCode::NOT_FOUND {
                return Err(MirrorError::NotFound(format!("repository {repo}")));
            }
            if !status.is_success() {
                return Err(self.status_error(&url, status, resp).await);
            }
            let next = resp
                .headers()
                .get(header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(next_link);
            #[derive(serde::Deserialize)]
            struct TagList {
                tags: Option<Vec<String>>,
            }
            let page: TagList = resp
                .json()
                .await
                .map_err(|e| MirrorError::Protocol(format!("{url}: tag list: {e}")))?;
            tags.extend(page.tags.unwrap_or_default());
            match next {
                Some(next) => url = self.resolve(&url, &next),
                None => return Ok(tags),
            }
        }
        Err(MirrorError::Protocol(format!(
            "{repo}: the tag list's Link pagination does not end"
        )))
    }

    /// A `Link` target relative to the page it came from.
    fn resolve(&self, current: &str, target: &str) -> String {
        match reqwest::Url::parse(current).and_then(|base| base.join(target)) {
            Ok(url) => url.to_string(),
            Err(_) => format!("{}{target}", self.settings.base_url),
        }
    }

    /// The digest the upstream names for `reference` (HEAD, which Docker Hub
    /// does not count against its pull limit); `None` when it sends none.
    pub async fn head_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<Digest>, MirrorError> {
        let url = self.repo_url(repo, &format!("manifests/{reference}"));
        let resp = self
            .send(
                Method::HEAD,
                &url,
                Some(&pull_scope(repo)),
                Some(MANIFEST_ACCEPT),
            )
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(content_digest(&resp)),
            StatusCode::NOT_FOUND => Err(MirrorError::NotFound(format!(
                "manifest {repo}:{reference}"
            ))),
            s => Err(self.status_error(&url, s, resp).await),
        }
    }

    /// Fetches a manifest and checks its bytes against `expected` (when
    /// fetched by digest) or the upstream's `Docker-Content-Digest`.
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
        expected: Option<&Digest>,
    ) -> Result<FetchedManifest, MirrorError> {
        let url = self.repo_url(repo, &format!("manifests/{reference}"));
        let resp = self
            .send(
                Method::GET,
                &url,
                Some(&pull_scope(repo)),
                Some(MANIFEST_ACCEPT),
            )
            .await?;
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND => {
                return Err(MirrorError::NotFound(format!(
                    "manifest {repo}:{reference}"
                )))
            }
            s => return Err(self.status_error(&url, s, resp).await),
        }
        let announced = content_digest(&resp);
        let media_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let limit = self.settings.max_manifest_bytes;
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.transport(&url, e))?;
            body.extend_from_slice(&chunk);
            if body.len() as u64 > limit {
                return Err(MirrorError::Protocol(format!(
                    "{url}: manifest larger than oci.max_manifest_bytes ({limit} bytes)"
                )));
            }
        }
        let bytes = Bytes::from(body);
        let want = expected.cloned().or(announced);
        let digest = match &want {
            Some(want) => Digest::of(want.algorithm(), &bytes),
            None => Digest::sha256_of(&bytes),
        };
        if let Some(want) = want {
            if want != digest {
                return Err(MirrorError::DigestMismatch {
                    what: format!("manifest {repo}:{reference}"),
                    expected: want,
                    actual: digest,
                });
            }
        }
        Ok(FetchedManifest {
            digest,
            media_type,
            bytes,
        })
    }

    /// The manifests whose `subject` is `digest`, from the OCI 1.1 referrers
    /// API; `None` when the upstream has no such API (404, 400 or 405: the
    /// caller then reads the `sha256-HEX` tag of the referrers tag schema).
    pub async fn list_referrers(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<Vec<Digest>>, MirrorError> {
        let url = self.repo_url(repo, &format!("referrers/{digest}"));
        let resp = self
            .send(
                Method::GET,
                &url,
                Some(&pull_scope(repo)),
                Some("application/vnd.oci.image.index.v1+json"),
            )
            .await?;
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST | StatusCode::METHOD_NOT_ALLOWED => {
                return Ok(None)
            }
            s => return Err(self.status_error(&url, s, resp).await),
        }
        #[derive(serde::Deserialize)]
        struct Descriptor {
            digest: String,
        }
        #[derive(serde::Deserialize)]
        struct Index {
            #[serde(default)]
            manifests: Vec<Descriptor>,
        }
        let body = resp.bytes().await.map_err(|e| self.transport(&url, e))?;
        if body.len() as u64 > self.settings.max_manifest_bytes {
            return Err(MirrorError::Protocol(format!(
                "{url}: referrers index larger than oci.max_manifest_bytes"
            )));
        }
        let index: Index = serde_json::from_slice(&body)
            .map_err(|e| MirrorError::Protocol(format!("{url}: referrers index: {e}")))?;
        index
            .manifests
            .iter()
            .map(|d| {
                Digest::parse(&d.digest).map_err(|e| {
                    MirrorError::Protocol(format!("{url}: referrer digest {:?}: {e}", d.digest))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// Streams a blob; the caller verifies it (the store's upload does).
    pub async fn get_blob(&self, repo: &str, digest: &Digest) -> Result<ByteStream, MirrorError> {
        Ok(self.get_blob_sized(repo, digest).await?.1)
    }

    /// Streams a blob with its announced `Content-Length` (the pull-through
    /// cache passes it on to clients before the blob is complete).
    pub async fn get_blob_sized(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<(Option<u64>, ByteStream), MirrorError> {
        let url = self.repo_url(repo, &format!("blobs/{digest}"));
        let resp = self
            .send(Method::GET, &url, Some(&pull_scope(repo)), None)
            .await?;
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND => {
                return Err(MirrorError::NotFound(format!("blob {digest} in {repo}")))
            }
            s => return Err(self.status_error(&url, s, resp).await),
        }
        let size = resp.content_length();
        Ok((
            size,
            Box::pin(
                resp.bytes_stream()
                    .map_err(|e| std::io::Error::other(error_chain(&e))),
            ),
        ))
    }
}

/// Whether a transport failure may pass if tried again: a refused, reset or
/// timed-out connection, not a TLS or URL problem.
fn transient(err: &reqwest::Error) -> bool {
    if err.is_connect() || err.is_timeout() {
        return true;
    }
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        source = cause.source();
    }
    err.is_request()
}

fn transient_backoff(attempt: u32) -> Duration {
    TRANSIENT_BACKOFF * 2u32.pow(attempt.saturating_sub(1).min(6))
}

fn pull_scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

fn www_authenticate(resp: &Response) -> Vec<Challenge> {
    resp.headers()
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_challenges)
        .collect()
}

fn content_digest(resp: &Response) -> Option<Digest> {
    resp.headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Digest::parse(v.trim()).ok())
}

/// An error and its causes on one line (reqwest's own message says only
/// "error sending request").
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}
