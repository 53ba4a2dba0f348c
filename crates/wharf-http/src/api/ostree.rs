//! `/api/v1/ostree/<repo>/…`: pushing OSTree commits (`wharf ostree push`).
//!
//! - `POST …/missing` with a JSON array of object names
//!   (`CHECKSUM.commit|commitmeta|dirtree|dirmeta|filez`, at most
//!   `wharf_ostree::push::MAX_NAMES`) answers `{"missing": [...]}`, the ones
//!   neither published nor uploaded.
//! - `PUT …/objects/XX/REST.EXT` uploads one object: verified as a mirrored
//!   one is, then kept in the repository's push session (201; 200 when it was
//!   already held). A body past `ostree.max_object_bytes` is 413.
//! - `POST …/refs/BRANCH` with `{"commit": "…", "parent": "…"}` (`parent`
//!   optional: the commit the ref must still name, else 409) publishes the
//!   ref once every object the commit reaches is held (else 409 naming them).
//!
//! Like `api/files.rs` and `api/rpm.rs` these act on one repository: the need
//! is `push` on the `ostree` repository, through [`crate::auth`]. The
//! repository is what precedes the first `/missing`, `/objects/` or `/refs/`.
//! Ref moves are audited (objects alone publish nothing).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use futures_util::TryStreamExt;
use serde::Deserialize;
use serde_json::json;
use wharf_auth::access::{Action, Resource};
use wharf_core::{RepoName, RepositoryKind};
use wharf_meta::AuditOutcome;
use wharf_ostree::push::{parse_object_name, parse_object_path, PushError, Stored};
use wharf_ostree::Checksum;
use wharf_snapshot::SnapshotError;

use super::errors::{internal, ApiError};
use crate::auth::{authenticate_request, Need};
use crate::AppState;

/// Largest JSON body `missing` and ref moves read.
const MAX_JSON_BYTES: usize = 2 * 1024 * 1024;

/// The routes (each request is authorized in [`push`], which needs the repository name).
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/v1/ostree/{*rest}", any(push))
}

impl From<PushError> for ApiError {
    fn from(e: PushError) -> ApiError {
        let msg = e.to_string();
        match e {
            PushError::BadName(_) | PushError::Invalid(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "INVALID", msg)
            }
            PushError::BadObject { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", msg)
            }
            PushError::TooLarge(_) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "TOO_LARGE", msg)
            }
            PushError::Missing { .. } => {
                ApiError::new(StatusCode::CONFLICT, "OBJECTS_MISSING", msg)
            }
            PushError::Stale { .. } => ApiError::new(StatusCode::CONFLICT, "REF_MOVED", msg),
            PushError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "CONFLICT", msg),
            PushError::Snapshot(SnapshotError::Meta(e)) => e.into(),
            PushError::Snapshot(_) | PushError::Failed(_) => internal(msg),
        }
    }
}

/// What a request's path names.
#[derive(Debug, PartialEq, Eq)]
enum Op {
    Missing,
    Object(String),
    Ref(String),
}

/// Splits `REPO/missing`, `REPO/objects/XX/REST.EXT`, `REPO/refs/BRANCH`.
fn split(rest: &str) -> Result<(RepoName, Op), ApiError> {
    let found = [
        rest.strip_suffix("/missing").map(|r| (r, Op::Missing)),
        rest.split_once("/objects/")
            .map(|(r, o)| (r, Op::Object(o.to_owned()))),
        rest.split_once("/refs/")
            .map(|(r, b)| (r, Op::Ref(b.to_owned()))),
    ];
    // The shortest repository wins, so a branch or object part never
    // becomes part of the repository's name.
    let Some((repo, op)) = found.into_iter().flatten().min_by_key(|(r, _)| r.len()) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "expected /api/v1/ostree/<repo>/missing, …/objects/XX/REST.EXT or …/refs/<branch>",
        ));
    };
    let repo = RepoName::parse(repo).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID",
            format!("repository {repo:?}: {e}"),
        )
    })?;
    Ok((repo, op))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveRef {
    commit: String,
    #[serde(default)]
    parent: Option<String>,
}

fn checksum(what: &str, s: &str) -> Result<Checksum, ApiError> {
    Checksum::from_hex(s)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "INVALID", format!("{what}: {e}")))
}

async fn json_body<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_JSON_BYTES)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "INVALID", e.to_string()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "INVALID", e.to_string()))
}

async fn push(State(state): State<Arc<AppState>>, mut req: Request<Body>) -> Response {
    let caller = match authenticate_request(&state, &mut req).await {
        Ok(caller) => caller,
        Err(refusal) => return ApiError::from(refusal).into_response(),
    };
    let rest = match super::decoded_path_after(&req, "/api/v1/ostree/") {
        Ok(rest) => rest,
        Err(e) => return e.into_response(),
    };
    let (repo, op) = match split(&rest) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let method = req.method().clone();
    let allowed = match op {
        Op::Object(_) => Method::PUT,
        Op::Missing | Op::Ref(_) => Method::POST,
    };
    if method != allowed {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "missing and refs take POST, objects PUT",
        )
        .into_response();
    }
    let resource = Resource::repository(RepositoryKind::Ostree, repo.as_str());
    if let Err(refusal) = caller.check(&Need::Action(Action::Push, resource)).await {
        return ApiError::from(refusal).into_response();
    }
    let result = match op {
        Op::Missing => missing(&state, &repo, req.into_body()).await,
        Op::Object(path) => object(&state, &repo, &path, req).await,
        Op::Ref(branch) => {
            let result = move_ref(&state, &repo, &branch, req.into_body()).await;
            let outcome = if result.is_ok() {
                AuditOutcome::Ok
            } else {
                AuditOutcome::Failed
            };
            state.audit(
                caller.identity(),
                caller.remote(),
                Action::Push,
                &format!("POST ostree:{repo}/refs/{branch}"),
                outcome,
                repo.as_str(),
            );
            result
        }
    };
    match result {
        Ok(res) => res,
        Err(e) => e.into_response(),
    }
}

async fn missing(state: &AppState, repo: &RepoName, body: Body) -> Result<Response, ApiError> {
    let names: Vec<String> = json_body(body).await?;
    let names = names
        .iter()
        .map(|n| parse_object_name(n))
        .collect::<Result<Vec<_>, _>>()?;
    let missing = state.ostree.missing(repo, &names).await?;
    let missing: Vec<String> = missing.iter().map(ToString::to_string).collect();
    Ok(Json(json!({ "missing": missing })).into_response())
}

async fn object(
    state: &AppState,
    repo: &RepoName,
    path: &str,
    req: Request<Body>,
) -> Result<Response, ApiError> {
    let name = parse_object_path(path)?;
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = Box::pin(
        req.into_body()
            .into_data_stream()
            .map_err(std::io::Error::other),
    );
    let stored = state.ostree.put_object(repo, name, declared, body).await?;
    let status = match stored {
        Stored::New => StatusCode::CREATED,
        Stored::Held => StatusCode::OK,
    };
    Ok((
        status,
        Json(json!({ "object": name.to_string(), "stored": stored == Stored::New })),
    )
        .into_response())
}

async fn move_ref(
    state: &AppState,
    repo: &RepoName,
    branch: &str,
    body: Body,
) -> Result<Response, ApiError> {
    let asked: MoveRef = json_body(body).await?;
    let commit = checksum("commit", &asked.commit)?;
    let parent = asked
        .parent
        .as_deref()
        .map(|p| checksum("parent", p))
        .transpose()?;
    let moved = state.ostree.move_ref(repo, branch, commit, parent).await?;
    Ok(Json(json!({
        "repository": repo.as_str(),
        "branch": moved.branch,
        "commit": moved.commit.to_string(),
        "previous": moved.previous.map(|c| c.to_string()),
        "objects": moved.objects,
        "snapshot": moved.snapshot,
        "published": moved.snapshot.is_some(),
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_repository_and_operation() {
        let (r, op) = split("os/hosted/refs/os/x86_64/stable").ok().unwrap();
        assert_eq!(
            (r.as_str(), op),
            ("os/hosted", Op::Ref("os/x86_64/stable".into()))
        );
        let (r, op) = split("os/missing").ok().unwrap();
        assert_eq!((r.as_str(), op), ("os", Op::Missing));
        let (r, op) = split("a/objects/ab/cd.filez").ok().unwrap();
        assert_eq!((r.as_str(), op), ("a", Op::Object("ab/cd.filez".into())));
        for bad in ["os", "../x/missing", "Os/refs/main", "/missing"] {
            assert!(split(bad).is_err(), "{bad:?} accepted");
        }
    }
}
