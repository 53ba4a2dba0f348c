//! `/api/v1`: the management API, JSON in and out, for server administrators.
//!
//! Every account, team, grant and token operation is one call into
//! `wharf_auth::admin`, the same functions the `wharf user|team|grant|token`
//! commands use; job operations call the queue in `wharf_meta`, as `wharf jobs`
//! does. Access is decided by [`guard`], errors mapped by [`errors`], and they
//! share one envelope:
//! `{"error": {"code": "NOT_FOUND", "message": "…"}}` (see `docs/api.md`).
//! Callers authenticate like registry clients — Basic credentials, an API token,
//! or a client certificate — and must be server administrators; registry
//! (bearer JWT) tokens are refused here, since they only carry repository scopes.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use wharf_auth::admin;

use crate::AppState;

mod errors;
mod files;
mod guard;
mod ostree;
mod rpm;

use errors::{internal, ApiError};

/// The request path after `prefix`, percent-decoded, so `%2e%2e%2f` is seen
/// as `../` by the surface's own path checks and refused there (the
/// repository-scoped upload routes: `api/files.rs`, `api/ostree.rs`, `api/rpm.rs`).
fn decoded_path_after(req: &Request<Body>, prefix: &str) -> Result<String, ApiError> {
    let raw = req.uri().path().trim_start_matches(prefix);
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|rest| rest.into_owned())
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "INVALID", "the path is not UTF-8"))
}

/// Largest request body accepted by the management API.
const MAX_BODY_BYTES: usize = 64 * 1024;

type ApiResult = Result<Response, ApiError>;

/// The routes under `/api/v1`, behind the administrator guard.
pub(crate) fn routes(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/users", get(list_users).post(add_user))
        .route("/api/v1/users/{name}", delete(delete_user))
        .route("/api/v1/users/{name}/password", put(set_password))
        .route("/api/v1/teams", get(list_teams).post(add_team))
        .route("/api/v1/teams/{name}", delete(delete_team))
        .route(
            "/api/v1/teams/{team}/members/{account}",
            put(add_member).delete(remove_member),
        )
        .route("/api/v1/grants", get(list_grants).post(add_grant))
        .route("/api/v1/grants/{id}", delete(remove_grant))
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/auth/unlock", post(unlock))
        .route("/api/v1/jobs", get(list_jobs).post(run_job))
        .route("/api/v1/jobs/{id}", get(show_job))
        .route("/api/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/api/v1/snapshots", get(list_snapshots))
        .route("/api/v1/snapshots/publish", post(publish_snapshot))
        // Only routes that exist are guarded: an unknown path is a plain 404,
        // with no challenge (a browser would prompt), no failed-login count and
        // no audit row.
        .route_layer(axum::middleware::from_fn_with_state(state, guard::guard))
        .fallback(not_found)
}

/// `/api/v1/rpm/…`: package uploads and removals, authorized per repository
/// (push) rather than by the administrator guard.
pub(crate) fn rpm_routes() -> Router<Arc<AppState>> {
    rpm::routes()
}

/// `/api/v1/ostree/…`: pushed objects and ref moves, authorized per repository
/// like the RPM and file uploads.
pub(crate) fn ostree_routes() -> Router<Arc<AppState>> {
    ostree::routes()
}

/// `/api/v1/files/…`: file uploads and removals, authorized per repository
/// (push) rather than by the administrator guard.
pub(crate) fn files_routes() -> Router<Arc<AppState>> {
    files::routes()
}

/// Every path that is no route of the whole application.
async fn not_found(req: Request<Body>) -> Response {
    if req.uri().path().starts_with("/api/") {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "no such management endpoint",
        )
        .into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

fn parse<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "INVALID",
            "request body too large",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID",
            format!("malformed JSON: {e}"),
        )
    })
}

fn created(v: Value) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

async fn list_users(State(state): State<Arc<AppState>>) -> ApiResult {
    let accounts = admin::accounts(state.auth.meta()).await?;
    let v: Vec<Value> = accounts
        .iter()
        .map(|a| json!({"name": a.name, "kind": a.kind.as_str(), "admin": a.is_admin, "disabled": a.disabled}))
        .collect();
    Ok(Json(v).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    password: Option<String>,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    robot: bool,
}

async fn add_user(State(state): State<Arc<AppState>>, body: Bytes) -> ApiResult {
    let u: NewUser = parse(&body)?;
    let generated = admin::add_account(
        state.auth.meta(),
        &u.name,
        u.password.as_deref(),
        u.admin,
        u.robot,
    )
    .await?;
    let kind = if u.robot { "robot" } else { "user" };
    let mut v = json!({"name": u.name, "kind": kind, "admin": u.admin});
    if let Some(pw) = generated {
        v["password"] = Value::String(pw);
    }
    Ok(created(v))
}

async fn delete_user(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> ApiResult {
    admin::delete_account(state.auth.meta(), &name).await?;
    Ok(no_content())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    password: String,
}

async fn set_password(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let p: NewPassword = parse(&body)?;
    admin::set_password(state.auth.meta(), &name, &p.password).await?;
    Ok(no_content())
}

async fn list_teams(State(state): State<Arc<AppState>>) -> ApiResult {
    let teams = state.auth.meta().teams().await?;
    let v: Vec<Value> = teams
        .iter()
        .map(|(t, m)| json!({"name": t, "members": m}))
        .collect();
    Ok(Json(v).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTeam {
    name: String,
}

async fn add_team(State(state): State<Arc<AppState>>, body: Bytes) -> ApiResult {
    let t: NewTeam = parse(&body)?;
    admin::add_team(state.auth.meta(), &t.name).await?;
    Ok(created(json!({"name": t.name, "members": []})))
}

async fn delete_team(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> ApiResult {
    admin::delete_team(state.auth.meta(), &name).await?;
    Ok(no_content())
}

async fn add_member(
    State(state): State<Arc<AppState>>,
    Path((team, account)): Path<(String, String)>,
) -> ApiResult {
    admin::set_membership(state.auth.meta(), &team, &account, true).await?;
    Ok(no_content())
}

async fn remove_member(
    State(state): State<Arc<AppState>>,
    Path((team, account)): Path<(String, String)>,
) -> ApiResult {
    admin::set_membership(state.auth.meta(), &team, &account, false).await?;
    Ok(no_content())
}

async fn list_grants(State(state): State<Arc<AppState>>) -> ApiResult {
    let grants = state.auth.meta().grants().await?;
    let v: Vec<Value> = grants
        .iter()
        .map(|g| json!({"id": g.id, "subject": admin::subject_string(g), "pattern": g.pattern, "actions": g.actions.split(',').collect::<Vec<_>>(), "origin": g.origin.as_str()}))
        .collect();
    Ok(Json(v).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGrant {
    subject: String,
    pattern: String,
    actions: Vec<String>,
}

async fn add_grant(State(state): State<Arc<AppState>>, body: Bytes) -> ApiResult {
    let g: NewGrant = parse(&body)?;
    let id = admin::add_grant(
        state.auth.meta(),
        &g.subject,
        &g.pattern,
        &g.actions.join(","),
    )
    .await?;
    Ok(created(
        json!({"id": id, "subject": g.subject, "pattern": g.pattern, "actions": g.actions}),
    ))
}

async fn remove_grant(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> ApiResult {
    admin::remove_grant(state.auth.meta(), &id).await?;
    Ok(no_content())
}

#[derive(Deserialize)]
struct TokenFilter {
    user: Option<String>,
}

async fn list_tokens(
    State(state): State<Arc<AppState>>,
    Query(f): Query<TokenFilter>,
) -> ApiResult {
    let tokens = state.auth.meta().tokens(f.user.as_deref()).await?;
    let v: Vec<Value> = tokens
        .iter()
        .map(|t| {
            json!({
                "id": t.id, "user": t.account, "description": t.description,
                "scopes": serde_json::from_str::<Value>(&t.scopes).unwrap_or(Value::Null),
                "created_at": t.created_at, "expires_at": t.expires_at, "revoked_at": t.revoked_at,
            })
        })
        .collect();
    Ok(Json(v).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeSpec {
    pattern: String,
    actions: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    user: String,
    #[serde(default)]
    scopes: Vec<ScopeSpec>,
    expires_in_secs: Option<u64>,
    #[serde(default)]
    description: String,
}

async fn create_token(State(state): State<Arc<AppState>>, body: Bytes) -> ApiResult {
    let t: NewToken = parse(&body)?;
    let pairs: Vec<(String, String)> = t
        .scopes
        .iter()
        .map(|s| (s.pattern.clone(), s.actions.join(",")))
        .collect();
    let scopes = admin::parse_token_scopes(&pairs)?;
    let (record, secret) = admin::create_token(
        state.auth.meta(),
        &t.user,
        &scopes,
        &t.description,
        t.expires_in_secs,
    )
    .await?;
    Ok(created(
        json!({"id": record.id, "user": record.account, "token": secret, "expires_at": record.expires_at}),
    ))
}

async fn revoke_token(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> ApiResult {
    admin::revoke_token(state.auth.meta(), &id).await?;
    Ok(no_content())
}

#[derive(Deserialize)]
struct AuditQuery {
    limit: Option<u64>,
}

async fn audit(State(state): State<Arc<AppState>>, Query(q): Query<AuditQuery>) -> ApiResult {
    let records = state
        .auth
        .meta()
        .audit_log(q.limit.unwrap_or(100).min(10_000))
        .await?;
    let v: Vec<Value> = records
        .iter()
        .map(|r| json!({"at": r.at, "account": r.account, "remote": r.remote, "action": r.action, "resource": r.resource, "outcome": r.outcome.as_str()}))
        .collect();
    Ok(Json(v).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Unlock {
    account: Option<String>,
    address: Option<String>,
}

async fn unlock(State(state): State<Arc<AppState>>, body: Bytes) -> ApiResult {
    let u: Unlock = parse(&body)?;
    let address = match u.address.as_deref() {
        None => None,
        Some(a) => Some(a.parse::<std::net::IpAddr>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID",
                format!("address {a:?} is not an IP address"),
            )
        })?),
    };
    let cleared = state
        .auth
        .unlock(u.account.as_deref(), address)
        .await
        .map_err(|e| internal(e.to_string()))?;
    Ok(
        Json(json!({"account": u.account, "address": u.address, "cleared": cleared}))
            .into_response(),
    )
}

#[derive(Deserialize)]
struct JobsQuery {
    limit: Option<u32>,
}

async fn list_jobs(State(state): State<Arc<AppState>>, Query(q): Query<JobsQuery>) -> ApiResult {
    let jobs = state
        .auth
        .meta()
        .jobs(q.limit.unwrap_or(100).min(10_000))
        .await?;
    let v: Vec<Value> = jobs.iter().map(|j| job_json(j, &[])).collect();
    Ok(Json(v).into_response())
}

async fn show_job(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> ApiResult {
    let meta = state.auth.meta();
    let Some(job) = meta.job(&id).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no job {id}"),
        ));
    };
    let log = meta.job_log_lines(&id).await?;
    Ok(Json(job_json(&job, &log)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunJob {
    kind: String,
}

async fn run_job(State(state): State<Arc<AppState>>, body: Bytes) -> ApiResult {
    let r: RunJob = parse(&body)?;
    let kind = state
        .jobs
        .parse(&r.kind)
        .map_err(|why| ApiError::new(StatusCode::BAD_REQUEST, "INVALID", why))?;
    let (id, new) = state.auth.meta().enqueue_job(&kind.to_job()).await?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({"id": id, "queued": new}))).into_response())
}

async fn cancel_job(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> ApiResult {
    match state.auth.meta().cancel_job(&id).await? {
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no job {id}"),
        )),
        Some(job_state) => Ok(Json(json!({"id": id, "state": job_state.as_str()})).into_response()),
    }
}

#[derive(Deserialize)]
struct SnapshotsQuery {
    repository: String,
}

fn repository_param(name: &str) -> Result<wharf_core::RepoName, ApiError> {
    wharf_core::RepoName::parse(name)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "INVALID", e.to_string()))
}

impl From<wharf_snapshot::SnapshotError> for ApiError {
    fn from(e: wharf_snapshot::SnapshotError) -> ApiError {
        use wharf_snapshot::SnapshotError;
        match e {
            SnapshotError::NoSuchNumber { .. } | SnapshotError::NotStaged(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", e.to_string())
            }
            SnapshotError::Meta(e) => e.into(),
            SnapshotError::Blob(e) => internal(e.to_string()),
        }
    }
}

/// `GET /api/v1/snapshots?repository=R`: R's snapshots, newest first.
async fn list_snapshots(
    State(state): State<Arc<AppState>>,
    Query(q): Query<SnapshotsQuery>,
) -> ApiResult {
    let repo = repository_param(&q.repository)?;
    let mut out = Vec::new();
    for s in state.snapshots.list(&repo).await? {
        let (files, bytes) = state.snapshots.meta().snapshot_totals(&s.id).await?;
        out.push(json!({
            "number": s.number,
            "id": s.id.as_str(),
            "state": s.state.as_str(),
            "note": s.note,
            "created_at": s.created_at,
            "published_at": s.published_at,
            "retired_at": s.retired_at,
            "files": files,
            "bytes": bytes,
        }));
    }
    Ok(Json(Value::Array(out)).into_response())
}

#[derive(Deserialize)]
struct PublishSnapshot {
    repository: String,
    number: i64,
}

/// `POST /api/v1/snapshots/publish` `{"repository": R, "number": N}`: publish
/// snapshot N of R (a staged one, or an older one: a rollback).
async fn publish_snapshot(State(state): State<Arc<AppState>>, body: Bytes) -> ApiResult {
    let p: PublishSnapshot = parse(&body)?;
    let repo = repository_param(&p.repository)?;
    let record = state.snapshots.publish_number(&repo, p.number).await?;
    Ok(Json(json!({"repository": repo.as_str(), "number": record.number, "state": record.state.as_str()})).into_response())
}

/// A job as the API and `wharf jobs --json` show it.
pub fn job_json(job: &wharf_meta::JobRecord, log: &[(i64, String)]) -> Value {
    json!({
        "id": job.id,
        "kind": job.kind,
        "key": job.key,
        "state": job.state.as_str(),
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "cancel_requested": job.cancel_requested,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "items_done": job.progress.items_done,
        "items_total": job.progress.items_total,
        "bytes_done": job.progress.bytes_done,
        "bytes_total": job.progress.bytes_total,
        "summary": job.summary,
        "error": job.error,
        "log": log.iter().map(|(at, line)| json!({"at": at, "line": line})).collect::<Vec<_>>(),
    })
}
