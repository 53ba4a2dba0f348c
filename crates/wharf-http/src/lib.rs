//! The HTTP layer: routes, typed request parsing, and the mapping of each
//! domain error to its protocol's error format.
//!
//! Handlers stay thin: parse the request into validated values, call one
//! method of a format crate, build the response. Nothing here knows how bytes
//! are stored or how metadata is queried.
//!
//! Surfaces: `/v2/…` (OCI distribution, [`oci`]), `/healthz`.

mod oci;

use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue, Request};
use axum::routing::{any, get};
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use wharf_oci::Registry;

/// Everything the handlers need.
#[derive(Clone)]
pub struct AppState {
    /// The OCI registry.
    pub registry: Registry,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Builds the application router.
pub fn router(state: AppState) -> Router {
    let state = Arc::new(state);
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v2", any(oci::api_root))
        .route("/v2/", any(oci::api_root))
        .route("/v2/{*rest}", any(oci::dispatch))
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
