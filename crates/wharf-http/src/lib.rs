//! The HTTP layer: routes, typed request parsing, and the mapping of each
//! domain error to its protocol's error format.
//!
//! Handlers stay thin: parse the request into validated values, call one
//! method of a format crate, build the response. Nothing here knows how bytes
//! are stored or how metadata is queried.
//!
//! Surfaces: `/v2/…` (OCI distribution, [`oci`]), `/token` (the registry token
//! endpoint), `/api/v1/…` (management, [`api`]), `/ostree/…`, `/rpm/…` and
//! `/files/…` (published snapshots as plain HTTP trees, [`tree`]), `/lookaside/…`
//! (dist-git's source cache, [`lookaside`]), `/keys/…` (Wharf's public signing keys, [`keys`]), `/healthz`. Each protected
//! surface has one guard and one error-mapping module, and every guard asks
//! [`auth`] the same question.

mod access_line;
mod access_log;
pub use access_line::{AccessLogOutput, LineFormat, LineSink};
mod api;
pub use api::job_json;
mod auth;
mod keys;
pub use keys::PublicKeys;
pub mod listener;
mod lookaside;
mod oci;
mod token;
mod tree;

use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue, Request};
use axum::routing::{any, get};
use axum::Router;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use wharf_auth::AuthService;
use wharf_oci::Registry;

pub use auth::TrustedProxies;

/// Everything the handlers need.
pub struct AppState {
    /// The OCI registry.
    pub registry: Registry,
    /// Authentication and authorization.
    pub auth: Arc<AuthService>,
    /// Token endpoint URL announced in challenges; `None` derives it from the request.
    pub realm: Option<String>,
    /// Whether the listener speaks TLS (for the derived realm's scheme).
    pub tls: bool,
    /// What `/healthz` checks.
    pub health: Health,
    /// Work a request leaves behind (audit records); shutdown waits for it, so an
    /// acknowledged push is never missing from the audit log.
    pub background: tokio_util::task::TaskTracker,
    /// The URL clients reach this server at (`server.external_url`), without
    /// a trailing `/`; `None` derives it from each request's authority.
    pub external_url: Option<String>,
    /// The configured listen address, used in challenges when a request's
    /// authority is missing or malformed.
    pub listen: String,
    /// Reverse proxies whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: TrustedProxies,
    /// Where access lines go; `None`: through `tracing` (slower, any subscriber).
    pub access_log: Option<AccessLogOutput>,
    /// The jobs `POST /api/v1/jobs` may queue (`gc`, `check`, `sync:<remote>`, …).
    pub jobs: wharf_jobs::JobCatalog,
    /// The configured upstreams: the `?ns=` namespaces and the pull-through
    /// cache a `/v2` pull falls back to; `None`: no `[[mirror.remotes]]`.
    pub pull_through: Option<Arc<wharf_mirror::PullThrough>>,
    /// The snapshots that `/ostree`, `/rpm` and `/files` serve.
    pub snapshots: wharf_snapshot::Snapshots,
    /// File repositories' writes and the lookaside cache (`/lookaside`).
    pub files: wharf_files::Files,
    /// Hosted RPM repositories' writes (`/api/v1/rpm/…`).
    pub rpm: wharf_rpm::hosted::Hosted,
    /// OSTree pushes (`/api/v1/ostree/…`).
    pub ostree: wharf_ostree::push::Push,
    /// Wharf's public signing keys, served at `/keys/…`.
    pub public_keys: keys::PublicKeys,
}

/// What `/healthz` checks: that the server could take a write now.
pub struct Health {
    /// The metadata database, which must answer a query.
    pub meta: wharf_meta::Meta,
    /// The data directory, which must exist and take a write.
    pub data_dir: std::path::PathBuf,
}

/// How long `/healthz` waits for the database before calling it down.
const HEALTH_DB_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// `GET /healthz`: 200 `ok` only if the data directory exists and takes a write
/// and the database answers; otherwise 503 with what failed, so a load balancer
/// stops sending pushes to a replica whose disk is gone or full.
async fn healthz(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let dir = state.health.data_dir.clone();
    let disk = tokio::task::spawn_blocking(move || probe_data_dir(&dir))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    let db = match tokio::time::timeout(HEALTH_DB_TIMEOUT, state.health.meta.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {HEALTH_DB_TIMEOUT:?}")),
    };
    let mut problems = Vec::new();
    if let Err(e) = disk {
        problems.push(format!(
            "data directory {}: {e}",
            state.health.data_dir.display()
        ));
    }
    if let Err(e) = db {
        problems.push(format!("database: {e}"));
    }
    if problems.is_empty() {
        return "ok\n".into_response();
    }
    tracing::warn!(problems = %problems.join("; "), "health check failed");
    (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        format!("unhealthy\n{}\n", problems.join("\n")),
    )
        .into_response()
}

/// Writes and removes a small file in the data directory: a deleted, read-only
/// or full directory fails here.
fn probe_data_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    if !dir.join("blobs").is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "missing, or without its blobs/ directory",
        ));
    }
    static PROBE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!(".healthz-{}-{n}", std::process::id()));
    let written = std::fs::File::create(&path).and_then(|mut f| {
        // Some bytes, not just an inode: a full disk still has inodes to spare.
        f.write_all(&[0u8; 4096])?;
        f.sync_data()
    });
    let _ = std::fs::remove_file(&path);
    written
}

impl AppState {
    /// Writes one audit record; failures are logged, never fatal to the request.
    pub(crate) fn audit(
        &self,
        identity: &wharf_auth::Identity,
        remote: Option<std::net::IpAddr>,
        action: wharf_auth::access::Action,
        resource: &str,
        outcome: wharf_meta::AuditOutcome,
        repo: &str,
    ) {
        let auth = self.auth.clone();
        let record = (
            identity.account().map(str::to_owned),
            remote.map(|r| r.to_string()),
            action.as_str().to_owned(),
            resource.to_owned(),
            outcome,
        );
        tracing::info!(audit.account = ?record.0, audit.action = %record.2, repo.name = repo, audit.outcome = outcome.as_str(), "audit");
        self.background.spawn(async move {
            let (account, remote, action, resource, outcome) = record;
            if let Err(e) = auth
                .audit(account, remote, &action, &resource, outcome)
                .await
            {
                tracing::error!(error = %e, "cannot write the audit log");
            }
        });
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Builds the application router.
pub fn router(state: AppState) -> Router {
    let access_log = access_log::AccessLogLayer::new(state.access_log.clone());
    // What a request's span is for: text lines logged during the request name
    // its id (method and path are on the access line with the same id). The
    // JSON log prints no span fields, and a span costs ~5,000 instructions a
    // request (callgrind) for the fields' formatting, so there is none.
    let request_spans = !matches!(
        &state.access_log,
        Some(AccessLogOutput {
            format: LineFormat::Json,
            ..
        })
    );
    let state = Arc::new(state);
    let v2 = Router::new()
        .route("/v2", any(oci::api_root))
        .route("/v2/", any(oci::api_root))
        .route("/v2/{*rest}", any(oci::dispatch))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            oci::guard::guard,
        ));
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/token", get(token::token).post(token::token))
        .merge(v2)
        .merge(api::routes(state.clone()))
        .merge(api::rpm_routes())
        .merge(api::files_routes())
        .merge(api::ostree_routes())
        .merge(tree::routes())
        .merge(keys::routes())
        .merge(lookaside::routes(state.clone()))
        .with_state(state);
    // The request-wide layers wrap the whole router once, as one service, rather
    // than through `Router::layer`, which wraps every route and so boxes the
    // service, its future and its response body again for each layer on every
    // request.
    let layered = tower::ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(
            REQUEST_ID,
            access_log::ProcessRequestId,
        ))
        .layer(
            TraceLayer::new_for_http().make_span_with(move |req: &Request<axum::body::Body>| {
                if !request_spans {
                    return tracing::Span::none();
                }
                let id = req
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", request.id = %id)
            }),
        )
        // Inside the request-id layer, so every access line carries the id.
        .layer(access_log)
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .service(routes);
    Router::new().fallback_service(layered)
}

/// `Docker-Distribution-API-Version: registry/2.0`, sent on every `/v2` response.
pub(crate) fn api_version_header() -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static("docker-distribution-api-version"),
        HeaderValue::from_static("registry/2.0"),
    )
}
