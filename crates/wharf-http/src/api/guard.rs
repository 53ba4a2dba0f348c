//! The `/api/v1` guard: every management operation acts on the server itself,
//! which only administrators may (and not through a scoped token); refusals
//! come back in the API's JSON envelope.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use wharf_auth::access::{Action, Resource};
use wharf_meta::AuditOutcome;

use super::errors::ApiError;
use crate::auth::{authenticate_request, Need};
use crate::AppState;

/// Middleware in front of every existing `/api/v1` route.
pub(super) async fn guard(
    State(state): State<Arc<AppState>>,
    mut req: Request<Body>,
    next: Next,
) -> Response {
    let caller = match authenticate_request(&state, &mut req).await {
        Ok(caller) => caller,
        Err(refusal) => return ApiError::from(refusal).into_response(),
    };
    if let Err(refusal) = caller
        .check(&Need::Action(Action::Admin, Resource::Server))
        .await
    {
        return ApiError::from(refusal).into_response();
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let res = next.run(req).await;
    if method != Method::GET {
        let outcome = if res.status().is_success() {
            AuditOutcome::Ok
        } else {
            AuditOutcome::Failed
        };
        // Local changes apply at once; other replicas pick them up within seconds.
        state.auth.invalidate();
        state.audit(
            caller.identity(),
            caller.remote(),
            Action::Admin,
            &format!("{method} {path}"),
            outcome,
            "-",
        );
    }
    res
}
