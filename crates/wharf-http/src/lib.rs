//! The HTTP layer: routes, typed request parsing, and the mapping of each
//! domain error to its protocol's error format.
//!
//! Handlers stay thin: parse the request into validated values, call one
//! method of a format crate, build the response. Nothing here knows how bytes
//! are stored or how metadata is queried.
//!
//! Surfaces: `/v2/…` (OCI distribution, [`oci`]), `/healthz`.

pub mod acme;
mod api;
mod auth;
pub mod listener;
mod oci;
pub mod tls;
mod token;

use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue, Request};
use axum::routing::{any, get};
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use wharf_auth::AuthService;
use wharf_oci::Registry;

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
}

impl AppState {
    /// Writes one audit record; failures are logged, never fatal to the request.
    pub(crate) fn audit(
        &self,
        identity: &wharf_auth::Identity,
        remote: Option<std::net::IpAddr>,
        action: wharf_auth::access::Action,
        resource: &str,
        outcome: &str,
        repo: &str,
    ) {
        let auth = self.auth.clone();
        let record = (
            identity.account().map(str::to_owned),
            remote.map(|r| r.to_string()),
            action.as_str().to_owned(),
            resource.to_owned(),
            outcome.to_owned(),
        );
        tracing::info!(audit.account = ?record.0, audit.action = %record.2, repo.name = repo, audit.outcome = outcome, "audit");
        tokio::spawn(async move {
            let (account, remote, action, resource, outcome) = record;
            if let Err(e) = auth
                .audit(account, remote, &action, &resource, &outcome)
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
    let state = Arc::new(state);
    let v2 = Router::new()
        .route("/v2", any(oci::api_root))
        .route("/v2/", any(oci::api_root))
        .route("/v2/{*rest}", any(oci::dispatch))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard_v2,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/token", get(token::token).post(token::token))
        .merge(v2)
        .merge(api::routes(state.clone()))
        .with_state(state)
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                let id = req
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", request.id = %id, method = %req.method(), uri = %req.uri())
            }),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// `Docker-Distribution-API-Version: registry/2.0`, sent on every `/v2` response.
pub(crate) fn api_version_header() -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static("docker-distribution-api-version"),
        HeaderValue::from_static("registry/2.0"),
    )
}
