//! The `/lookaside` guard: authenticates every request once and decides
//! through [`crate::auth`] like every surface.
//!
//! The resource is the repository of kind `files` named `lookaside/<package>`
//! (`lookaside/rpms/bash` when namespaced), so one grant pattern such as
//! `lookaside/**` or `lookaside/rpms/*` covers a set of packages; no repository
//! row is created for it. Downloads need `pull` (anonymous only if a grant
//! says so); `upload.cgi` needs `pull` for the existence check and `push` to
//! store. A download's need comes from its path and is checked here; an
//! upload's package is in the request body, so the handler asks [`require`]
//! once it has read the `name` field, before any file byte is read.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use wharf_auth::access::{Action, Resource};
use wharf_core::{RepositoryKind, SourcePackage};

use super::errors::LookasideHttpError;
use super::route::{self, LookasideRoute};
use crate::auth::{authenticate_request, Caller, Need};
use crate::AppState;

/// The resource a package's sources are guarded as.
pub(crate) fn resource(package: &SourcePackage) -> Resource {
    Resource::repository(RepositoryKind::Files, format!("lookaside/{package}"))
}

/// Whether `caller` may do `action` on `package`'s sources.
pub(crate) async fn require(
    caller: &Caller,
    action: Action,
    package: &SourcePackage,
) -> Result<(), LookasideHttpError> {
    caller
        .check(&Need::Action(action, resource(package)))
        .await
        .map_err(LookasideHttpError::from)
}

/// Middleware in front of every `/lookaside` route: the caller (and, for a
/// download, the parsed path) go to the handler as request extensions.
pub(crate) async fn guard(
    State(state): State<Arc<AppState>>,
    mut req: Request<Body>,
    next: Next,
) -> Response {
    let caller = match authenticate_request(&state, &mut req).await {
        Ok(caller) => caller,
        Err(refusal) => return LookasideHttpError::from(refusal).into_response(),
    };
    let parsed = match route::parse(req.uri().path()) {
        Ok(parsed) => parsed,
        Err(e) => return e.into_response(),
    };
    match (&parsed, req.method()) {
        (LookasideRoute::Upload, &Method::POST) => {}
        (LookasideRoute::Download(source), &Method::GET | &Method::HEAD) => {
            if let Err(e) = require(&caller, Action::Pull, &source.package).await {
                return e.into_response();
            }
        }
        _ => {
            return LookasideHttpError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "upload.cgi takes POST; source files take GET and HEAD",
            )
            .into_response()
        }
    }
    req.extensions_mut().insert(caller);
    req.extensions_mut().insert(parsed);
    next.run(req).await
}
