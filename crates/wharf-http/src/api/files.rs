//! `/api/v1/files/<repo>/<path>`: uploading files into and removing them
//! from file repositories.
//!
//! Like `api/rpm.rs` these act on one repository, so the need is `push` on
//! the `files` repository (decided by the same [`crate::auth`] layer, with
//! the same credentials). A `PUT` body is streamed into the store, never
//! buffered whole, and hashed on the way; an expected SHA-256 (`?sha256=HEX`
//! or a `Digest: sha-256=BASE64` header) must match or nothing is kept. Each
//! request is one new snapshot (with a fresh `SHA256SUMS`), published before
//! the answer unless `?publish=false` (then `POST /api/v1/snapshots/publish`
//! makes it live).
//!
//! Which part of the path is the repository: the longest prefix naming an
//! existing files repository; when none does, the first component is a new
//! repository's name (a name with `/` is created first, by `wharf repo create
//! --kind files` or `wharf files put`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use base64::Engine;
use futures_util::{StreamExt, TryStreamExt};
use serde_json::json;
use wharf_auth::access::{Action, Resource};
use wharf_blob::BlobError;
use wharf_core::{Algorithm, Digest, RepoName, RepositoryKind, TreePath};
use wharf_files::tree::TreeError;
use wharf_meta::AuditOutcome;
use wharf_snapshot::SnapshotError;

use super::errors::{internal, ApiError};
use crate::auth::{authenticate_request, Need};
use crate::AppState;

/// The routes (each request is authorized in [`file`], which needs the repository name).
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/v1/files/{*rest}", any(file))
}

impl From<TreeError> for ApiError {
    fn from(e: TreeError) -> ApiError {
        let msg = e.to_string();
        match e {
            TreeError::Path { .. } | TreeError::Reserved(_) | TreeError::NotUtf8(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "INVALID", msg)
            }
            TreeError::WrongKind(_) | TreeError::Mirrored(_) | TreeError::Conflict(_) => {
                ApiError::new(StatusCode::CONFLICT, "CONFLICT", msg)
            }
            TreeError::NotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", msg),
            TreeError::Snapshot(SnapshotError::Blob(BlobError::DigestMismatch { .. })) => {
                ApiError::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", msg)
            }
            TreeError::Snapshot(SnapshotError::Blob(BlobError::BodyInterrupted(_))) => {
                ApiError::new(StatusCode::BAD_REQUEST, "INVALID", msg)
            }
            TreeError::Snapshot(SnapshotError::Meta(e)) => e.into(),
            TreeError::Snapshot(_) | TreeError::Io { .. } => internal(msg),
        }
    }
}

/// What the request's path names.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    repo: RepoName,
    path: TreePath,
}

/// Splits the percent-decoded `REPO/PATH`: `existing` is the longest prefix
/// naming a files repository, if any.
fn split(rest: &str, existing: Option<&RepoName>) -> Result<Target, ApiError> {
    let invalid = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "INVALID", m);
    // The whole path first: `..`, NUL, control characters and overlong
    // names are refused before any of it names a repository.
    let whole = TreePath::new(rest.trim_end_matches('/'))
        .map_err(|e| invalid(format!("invalid path {rest:?}: {e}")))?;
    let (repo, path) = match existing {
        Some(repo) => (
            repo.clone(),
            whole.as_str()[repo.as_str().len()..].trim_start_matches('/'),
        ),
        None => {
            let (first, path) = whole
                .as_str()
                .split_once('/')
                .unwrap_or((whole.as_str(), ""));
            let repo = RepoName::parse(first)
                .map_err(|e| invalid(format!("repository {first:?}: {e}")))?;
            (repo, path)
        }
    };
    if path.is_empty() {
        return Err(invalid(format!(
            "expected /api/v1/files/<repository>/<path>; {rest:?} names no file in {repo}"
        )));
    }
    let path = TreePath::new(path).map_err(|e| invalid(format!("invalid path {path:?}: {e}")))?;
    Ok(Target { repo, path })
}

/// The SHA-256 the client expects, from `?sha256=HEX` or `Digest: sha-256=BASE64`.
fn expected_digest(query: &str, headers: &HeaderMap) -> Result<Option<Digest>, ApiError> {
    let invalid = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "INVALID", m);
    let mut found = None;
    for pair in query.split('&') {
        if let Some(hex) = pair.strip_prefix("sha256=") {
            let d = Digest::parse(&format!("sha256:{}", hex.to_ascii_lowercase()))
                .map_err(|e| invalid(format!("sha256={hex:?}: {e}")))?;
            found = Some(d);
        }
    }
    for value in headers.get_all("digest") {
        let value = value
            .to_str()
            .map_err(|_| invalid("the Digest header is not ASCII".into()))?;
        for item in value.split(',') {
            let Some((algo, b64)) = item.trim().split_once('=') else {
                continue;
            };
            if !algo.eq_ignore_ascii_case("sha-256") {
                continue;
            }
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| invalid(format!("Digest sha-256: {e}")))?;
            if raw.len() != 32 {
                return Err(invalid("Digest sha-256: not 32 bytes".into()));
            }
            let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            let d = Digest::parse(&format!("{}:{hex}", Algorithm::Sha256.as_str()))
                .map_err(|e| invalid(format!("Digest sha-256: {e}")))?;
            if found.as_ref().is_some_and(|f| f != &d) {
                return Err(invalid(
                    "?sha256= and the Digest header name different digests".into(),
                ));
            }
            found = Some(d);
        }
    }
    Ok(found)
}

/// `?publish=false` leaves the snapshot staged.
fn publish_param(query: &str) -> Result<bool, ApiError> {
    let mut publish = true;
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix("publish=") {
            publish = match v {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "INVALID",
                        format!("publish={v:?}: expected true or false"),
                    ))
                }
            };
        }
    }
    Ok(publish)
}

async fn file(State(state): State<Arc<AppState>>, mut req: Request<Body>) -> Response {
    let caller = match authenticate_request(&state, &mut req).await {
        Ok(caller) => caller,
        Err(refusal) => return ApiError::from(refusal).into_response(),
    };
    let method = req.method().clone();
    if method != Method::PUT && method != Method::DELETE {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "files take PUT (upload) and DELETE; read them at /files/<repository>/<path>",
        )
        .into_response();
    }
    let query = req.uri().query().unwrap_or("").to_owned();
    let rest = match super::decoded_path_after(&req, "/api/v1/files/") {
        Ok(rest) => rest,
        Err(e) => return e.into_response(),
    };
    let existing = match state.snapshots.locate(RepositoryKind::Files, &rest).await {
        Ok(located) => located.map(|l| l.repo),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let target = match split(&rest, existing.as_ref()) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let resource = Resource::repository(RepositoryKind::Files, target.repo.as_str());
    if let Err(refusal) = caller.check(&Need::Action(Action::Push, resource)).await {
        return ApiError::from(refusal).into_response();
    }
    let result = async {
        let publish = publish_param(&query)?;
        if method == Method::PUT {
            let expected = expected_digest(&query, req.headers())?;
            upload(&state, &target, expected, publish, req).await
        } else {
            remove(&state, &target, publish).await
        }
    }
    .await;
    let outcome = if result.is_ok() {
        AuditOutcome::Ok
    } else {
        AuditOutcome::Failed
    };
    state.audit(
        caller.identity(),
        caller.remote(),
        Action::Push,
        &format!("{method} files:{}/{}", target.repo, target.path),
        outcome,
        target.repo.as_str(),
    );
    match result {
        Ok(res) => res,
        Err(e) => e.into_response(),
    }
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "TOO_LARGE",
        format!("the file is larger than this server takes (files.max_upload_bytes = {max})"),
    )
}

async fn upload(
    state: &AppState,
    target: &Target,
    expected: Option<Digest>,
    publish: bool,
    req: Request<Body>,
) -> Result<Response, ApiError> {
    let max = state.files.max_upload_bytes;
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large(max));
    }
    // A body without a length (chunked) is cut off once it passes the cap.
    let exceeded = Arc::new(AtomicBool::new(false));
    let body: wharf_blob::ByteStream = {
        let exceeded = exceeded.clone();
        let mut seen = 0u64;
        Box::pin(
            req.into_body()
                .into_data_stream()
                .map_err(std::io::Error::other)
                .map(move |chunk| {
                    let chunk = chunk?;
                    seen += chunk.len() as u64;
                    if seen > max {
                        exceeded.store(true, Ordering::Relaxed);
                        return Err(std::io::Error::other("the body passed the size cap"));
                    }
                    Ok(chunk)
                }),
        )
    };
    let change = state
        .files
        .repos
        .begin(&target.repo, "PUT /api/v1/files")
        .await?;
    let now = wharf_meta::unix_now();
    let stored = match change
        .put_stream(&target.path, body, expected.as_ref(), now)
        .await
    {
        Ok(stored) => stored,
        Err(e) => {
            change.abort().await?;
            if exceeded.load(Ordering::Relaxed) {
                return Err(too_large(max));
            }
            return Err(e.into());
        }
    };
    let done = change.finish(publish).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "repository": target.repo.as_str(),
            "path": target.path.as_str(),
            "sha256": stored.digest.hex(),
            "size": stored.size,
            "snapshot": done.number,
            "published": done.published,
        })),
    )
        .into_response())
}

async fn remove(state: &AppState, target: &Target, publish: bool) -> Result<Response, ApiError> {
    let change = state
        .files
        .repos
        .begin(&target.repo, "DELETE /api/v1/files")
        .await?;
    let removed = match change.remove(&target.path).await {
        Ok(n) => n,
        Err(e) => {
            change.abort().await?;
            return Err(e.into());
        }
    };
    let done = change.finish(publish).await?;
    Ok(Json(json!({
        "repository": target.repo.as_str(),
        "path": target.path.as_str(),
        "removed": removed,
        "snapshot": done.number,
        "published": done.published,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_and_hostile_ones_are_refused() {
        let os = RepoName::parse("os/f40").ok().unwrap();
        let t = split("os/f40/images/pxeboot/vmlinuz", Some(&os))
            .ok()
            .unwrap();
        assert_eq!(
            (t.repo.as_str(), t.path.as_str()),
            ("os/f40", "images/pxeboot/vmlinuz")
        );
        let t = split("isos/Fedora é.iso", None).ok().unwrap();
        assert_eq!((t.repo.as_str(), t.path.as_str()), ("isos", "Fedora é.iso"));
        for bad in [
            "os/../etc/passwd",
            "os/a\0b",
            "os/a\\b",
            "/os/x",
            "os",
            "Os/x",
            "os/./x",
            &format!("os/{}", "x".repeat(5000)),
        ] {
            assert!(split(bad, None).is_err(), "{bad:?} accepted");
        }
        assert!(split("os/f40/", Some(&os)).is_err());
    }

    #[test]
    fn digests_from_query_and_header() {
        let d = Digest::sha256_of(b"hello\n");
        let mut headers = HeaderMap::new();
        let b64 = base64::engine::general_purpose::STANDARD.encode(
            (0..32)
                .map(|i| u8::from_str_radix(&d.hex()[2 * i..2 * i + 2], 16).unwrap())
                .collect::<Vec<u8>>(),
        );
        headers.insert("digest", format!("sha-256={b64}").parse().unwrap());
        assert_eq!(expected_digest("", &headers).ok().unwrap(), Some(d.clone()));
        assert_eq!(
            expected_digest(&format!("sha256={}", d.hex()), &HeaderMap::new())
                .ok()
                .unwrap(),
            Some(d.clone())
        );
        assert!(expected_digest("sha256=zz", &HeaderMap::new()).is_err());
        let other = Digest::sha256_of(b"other");
        assert!(expected_digest(&format!("sha256={}", other.hex()), &headers).is_err());
        assert!(publish_param("publish=false").ok() == Some(false));
        assert!(publish_param("publish=maybe").is_err());
    }
}
