//! `/api/v1/rpm/<repo>/packages/<file>.rpm`: uploading packages into and
//! removing them from hosted RPM repositories.
//!
//! Unlike the rest of `/api/v1` these act on one repository, so the need is
//! `push` on the `rpm` repository (decided by the same [`crate::auth`] layer,
//! with the same credentials), not administration of the server. A `PUT` body
//! is streamed into the store, never buffered whole; each request is one new
//! snapshot with freshly written metadata, published before the answer.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use futures_util::TryStreamExt;
use serde_json::json;
use wharf_auth::access::{Action, Resource};
use wharf_core::{RepoName, RepositoryKind};
use wharf_meta::AuditOutcome;
use wharf_rpm::RpmError;

use super::errors::{internal, ApiError};
use crate::auth::{authenticate_request, Need};
use crate::AppState;

/// The routes (each request is authorized in [`package`], which needs the repository name).
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/v1/rpm/{*rest}", any(package))
}

impl From<RpmError> for ApiError {
    fn from(e: RpmError) -> ApiError {
        let msg = e.to_string();
        match e {
            RpmError::Package(_) | RpmError::Metadata(_) | RpmError::Location(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "INVALID_PACKAGE", msg)
            }
            RpmError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "CONFLICT", msg),
            RpmError::TooLarge(_) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "TOO_LARGE", msg),
            RpmError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", msg),
            RpmError::Verification(_) | RpmError::Signature(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "INVALID_PACKAGE", msg)
            }
            RpmError::Upstream(_) | RpmError::Store(_) | RpmError::Cancelled => internal(msg),
        }
    }
}

/// Splits `REPO/packages/FILE`; the file is one path component.
fn split(rest: &str) -> Result<(RepoName, &str), ApiError> {
    let invalid = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "INVALID", m);
    let Some((repo, file)) = rest.rsplit_once("/packages/") else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "expected /api/v1/rpm/<repo>/packages/<file>",
        ));
    };
    let repo = RepoName::parse(repo).map_err(|e| invalid(format!("repository {repo:?}: {e}")))?;
    if file.is_empty()
        || file.len() > 255
        || file.starts_with('.')
        || file.contains(['/', '\\', '\0'])
        || file.chars().any(char::is_control)
    {
        return Err(invalid(format!("{file:?} is not a package file name")));
    }
    Ok((repo, file))
}

async fn package(State(state): State<Arc<AppState>>, mut req: Request<Body>) -> Response {
    let caller = match authenticate_request(&state, &mut req).await {
        Ok(caller) => caller,
        Err(refusal) => return ApiError::from(refusal).into_response(),
    };
    let rest = match super::decoded_path_after(&req, "/api/v1/rpm/") {
        Ok(rest) => rest,
        Err(e) => return e.into_response(),
    };
    if let Some(to) = rest.strip_suffix("/promote") {
        return promote(&state, caller, to, req).await;
    }
    let (repo, file) = match split(&rest) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let method = req.method().clone();
    if method != Method::PUT && method != Method::DELETE {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "packages take PUT (upload) and DELETE",
        )
        .into_response();
    }
    let resource = Resource::repository(RepositoryKind::Rpm, repo.as_str());
    if let Err(refusal) = caller.check(&Need::Action(Action::Push, resource)).await {
        return ApiError::from(refusal).into_response();
    }
    let result = if method == Method::PUT {
        let length = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        upload(&state, &repo, file, length, req.into_body()).await
    } else {
        remove(&state, &repo, file).await
    };
    let outcome = if result.is_ok() {
        AuditOutcome::Ok
    } else {
        AuditOutcome::Failed
    };
    state.audit(
        caller.identity(),
        caller.remote(),
        Action::Push,
        &format!("{method} rpm:{repo}/packages/{file}"),
        outcome,
        repo.as_str(),
    );
    match result {
        Ok(res) => res,
        Err(e) => e.into_response(),
    }
}

async fn upload(
    state: &AppState,
    repo: &RepoName,
    file: &str,
    length: Option<u64>,
    body: Body,
) -> Result<Response, ApiError> {
    if !file.ends_with(".rpm") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID",
            format!("{file:?} does not end in .rpm"),
        ));
    }
    let limit = state.rpm.max_upload_bytes();
    if length.is_some_and(|n| n > limit) {
        // Refused before a byte is read; a body without a length (or a
        // wrong one) is cut off by the session when it passes the cap.
        return Err(RpmError::TooLarge(format!(
            "the upload is larger than the {limit} bytes an upload may be"
        ))
        .into());
    }
    let body: wharf_blob::ByteStream =
        Box::pin(body.into_data_stream().map_err(std::io::Error::other));
    let session = state.rpm.begin(repo, "PUT /api/v1/rpm").await?;
    let added = match session.add_package(body).await {
        Ok(added) => added,
        Err(e) => {
            session.abort().await?;
            return Err(e.into());
        }
    };
    let done = session.finish(true).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "repository": repo.as_str(),
            "package": added.nevra,
            "path": added.path,
            "sha256": added.sha256,
            "size": added.size,
            "signed": added.signed,
            "snapshot": done.number,
            "packages": done.packages,
        })),
    )
        .into_response())
}

/// The body of `POST /api/v1/rpm/<to>/promote`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteRequest {
    /// The source repository.
    from: String,
    /// A snapshot number of the source (else its published one).
    #[serde(default)]
    snapshot: Option<i64>,
    /// Packages (`NAME-[EPOCH:]VERSION-RELEASE.ARCH` or `NAME`); empty with
    /// `snapshot`: the whole snapshot.
    #[serde(default)]
    packages: Vec<String>,
}

/// The largest promotion request body.
const MAX_PROMOTE_BODY: usize = 1 << 20;

/// `POST /api/v1/rpm/<to>/promote`: needs push on the target and pull on the source.
async fn promote(
    state: &AppState,
    caller: crate::auth::Caller,
    to: &str,
    req: Request<Body>,
) -> Response {
    let result = async {
        let invalid = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "INVALID", m);
        if req.method() != Method::POST {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "promote takes POST",
            ));
        }
        let to = RepoName::parse(to).map_err(|e| invalid(format!("repository {to:?}: {e}")))?;
        let target = Resource::repository(RepositoryKind::Rpm, to.as_str());
        caller
            .check(&Need::Action(Action::Push, target))
            .await
            .map_err(ApiError::from)?;
        let bytes = axum::body::to_bytes(req.into_body(), MAX_PROMOTE_BODY)
            .await
            .map_err(|e| invalid(format!("reading the body: {e}")))?;
        let body: PromoteRequest = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(format!("the body is not a promotion request: {e}")))?;
        let from = RepoName::parse(&body.from)
            .map_err(|e| invalid(format!("repository {:?}: {e}", body.from)))?;
        let source = Resource::repository(RepositoryKind::Rpm, from.as_str());
        caller
            .check(&Need::Action(Action::Pull, source))
            .await
            .map_err(ApiError::from)?;
        if body.packages.is_empty() && body.snapshot.is_none() {
            return Err(invalid(
                "name packages, or a snapshot to promote whole".into(),
            ));
        }
        let session = state
            .rpm
            .begin(&to, &format!("POST /api/v1/rpm promote from {from}"))
            .await?;
        let promoted = match session.promote(&from, body.snapshot, &body.packages).await {
            Ok(p) => p,
            Err(e) => {
                session.abort().await?;
                return Err(e.into());
            }
        };
        let done = session.finish(true).await?;
        Ok((to, from, promoted, done))
    }
    .await;
    let target = to.to_string();
    state.audit(
        caller.identity(),
        caller.remote(),
        Action::Push,
        &format!("POST rpm:{target}/promote"),
        if result.is_ok() {
            AuditOutcome::Ok
        } else {
            AuditOutcome::Failed
        },
        &target,
    );
    match result {
        Ok((to, from, promoted, done)) => Json(json!({
            "repository": to.as_str(),
            "from": from.as_str(),
            "from_snapshot": promoted.from_snapshot,
            "promoted": promoted.paths,
            "snapshot": done.number,
            "packages": done.packages,
        }))
        .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn remove(state: &AppState, repo: &RepoName, file: &str) -> Result<Response, ApiError> {
    let session = state.rpm.begin(repo, "DELETE /api/v1/rpm").await?;
    if let Err(e) = session.remove_package(file).await {
        session.abort().await?;
        return Err(e.into());
    }
    let done = session.finish(true).await?;
    Ok(Json(json!({
        "repository": repo.as_str(),
        "removed": file,
        "snapshot": done.number,
        "packages": done.packages,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn package_paths_split_and_hostile_names_are_refused() {
        let (repo, file) = split("el9/internal/packages/hello-1-1.noarch.rpm")
            .ok()
            .unwrap();
        assert_eq!(
            (repo.as_str(), file),
            ("el9/internal", "hello-1-1.noarch.rpm")
        );
        for bad in [
            "el9/packages/../x.rpm",
            "el9/packages/.hidden.rpm",
            "el9/packages/a\\b.rpm",
            "el9/packages/a\0.rpm",
            "el9/packages/",
            "el9/x.rpm",
            "../el9/packages/x.rpm",
        ] {
            assert!(split(bad).is_err(), "{bad:?} accepted");
        }
    }
}
