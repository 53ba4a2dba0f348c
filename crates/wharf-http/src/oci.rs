//! `/v2/…`: the OCI distribution API.
//!
//! Repository names contain slashes, so the path is parsed from its end into a
//! [`Route`] rather than matched by the router. Each handler cites the spec's
//! endpoint id (end-1 … end-13).

mod errors;
pub(crate) mod guard;
mod handlers;
pub(crate) mod route;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::AppState;
pub(crate) use errors::ApiError;
use route::Route;

/// `GET /v2/` (end-1): the API version check.
pub(crate) async fn api_root(method: Method) -> Response {
    match method {
        Method::GET | Method::HEAD => (
            StatusCode::OK,
            [
                crate::api_version_header(),
                (
                    axum::http::header::CONTENT_TYPE,
                    axum::http::HeaderValue::from_static("application/json"),
                ),
            ],
            "{}",
        )
            .into_response(),
        _ => ApiError::unsupported("method not allowed on /v2/").into_response(),
    }
}

/// Routes every other `/v2/…` request.
pub(crate) async fn dispatch(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    // The guard parsed the path already; parse here only if it could not.
    let parsed = match req.extensions().get::<Route>().cloned() {
        Some(route) => Ok(route),
        None => Route::parse(req.uri().path()),
    };
    let mut res = match parsed {
        Ok(route) => {
            handlers::handle(&state.registry, state.pull_through.as_ref(), route, req).await
        }
        Err(e) => Err(e),
    }
    .unwrap_or_else(IntoResponse::into_response);
    let (name, value) = crate::api_version_header();
    res.headers_mut().insert(name, value);
    res
}
