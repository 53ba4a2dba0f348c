//! The `/v2` guard: what each OCI request needs, and refusals in the
//! distribution protocol's terms.
//!
//! The decision itself is [`crate::auth`]'s, the same for every surface; this
//! module only parses the path into a [`Need`] and maps a [`Refusal`] to the
//! wire: a `WWW-Authenticate: Bearer` challenge naming the scope to ask for
//! when new credentials could help (anonymous callers, and registry tokens that
//! lack a scope: that is how clients know to fetch a new token), 403 `DENIED`
//! for a signed-in account that lacks the right, 429 and 500 as the spec's
//! error bodies.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use wharf_auth::access::{Action, Resource};
use wharf_core::{RepoName, RepositoryKind};
use wharf_meta::AuditOutcome;

use super::route::Route;
use super::ApiError;
use crate::auth::{
    authenticate_request, from_trusted_proxy, request_authority, Caller, Need, Refusal,
};
use crate::AppState;

/// The token endpoint's URL as clients on the other side of any proxy see it:
/// `auth.realm`, else `server.external_url` + `/token`, else built from the
/// request's authority (the URI's for HTTP/2, `Host` for HTTP/1.1) once it is
/// checked to be a plain `host[:port]`, falling back to the listener's address.
pub(crate) fn realm(state: &AppState, req: &Request<Body>) -> String {
    if let Some(realm) = &state.realm {
        return realm.clone();
    }
    if let Some(url) = &state.external_url {
        return format!("{}/token", url.trim_end_matches('/'));
    }
    let authority = request_authority(req).map_or_else(|| state.listen.clone(), |a| a.to_string());
    let forwarded = from_trusted_proxy(state, req)
        .then(|| {
            req.headers()
                .get("x-forwarded-proto")
                .and_then(|h| h.to_str().ok())
                .filter(|p| *p == "https" || *p == "http")
        })
        .flatten();
    let scheme = forwarded.unwrap_or(if state.tls { "https" } else { "http" });
    format!("{scheme}://{authority}/token")
}

/// A 401 with the Bearer challenge; `scopes` are space separated in one
/// `scope` parameter, as distribution writes them.
fn challenge(state: &AppState, realm: &str, scopes: &[String], insufficient: bool) -> Response {
    let mut value = format!(
        "Bearer realm=\"{realm}\",service=\"{}\"",
        state.auth.settings().service
    );
    if !scopes.is_empty() {
        value.push_str(&format!(",scope=\"{}\"", scopes.join(" ")));
    }
    if insufficient {
        value.push_str(",error=\"insufficient_scope\"");
    }
    ApiError::unauthorized(&value).into_response()
}

/// A refusal in the registry protocol's terms; `scopes` are what the request
/// needs, for the challenge. Also used by the token endpoint.
pub(crate) fn refusal_response(
    state: &AppState,
    realm: &str,
    refusal: Refusal,
    scopes: &[String],
) -> Response {
    match refusal {
        Refusal::MalformedCredentials | Refusal::BadCredentials => {
            challenge(state, realm, &[], false)
        }
        Refusal::SignInRequired => challenge(state, realm, scopes, false),
        Refusal::InsufficientScope => challenge(state, realm, scopes, true),
        Refusal::Denied => ApiError::denied().into_response(),
        Refusal::Throttled { retry_after_secs } => {
            ApiError::too_many_requests(retry_after_secs).into_response()
        }
        Refusal::Internal => ApiError::internal().into_response(),
    }
}

/// The response to a refusal, with the realm and the scopes the request
/// needs (plus pull on a mount's source, when that is what is missing).
fn refuse(
    state: &AppState,
    req: &Request<Body>,
    refusal: Refusal,
    need: &Need,
    mount_source: Option<&RepoName>,
) -> Response {
    let realm = realm(state, req);
    let mut scopes: Vec<String> = scope_for(need).into_iter().collect();
    if let Some(from) = mount_source {
        scopes.push(format!("repository:{from}:pull"));
    }
    refusal_response(state, &realm, refusal, &scopes)
}

fn repository(name: &RepoName) -> Resource {
    Resource::repository(RepositoryKind::Oci, name.as_str())
}

/// What a `/v2` request needs; `None` is the version check at `/v2/`.
fn need(method: &Method, route: Option<&Route>) -> Need {
    let Some(route) = route else {
        return Need::SignedIn;
    };
    let repo = match route {
        Route::Catalog => return Need::Anyone,
        Route::Tags(r) | Route::UploadStart(r) | Route::Referrers(r, _) => r,
        Route::Manifest(r, _) | Route::Blob(r, _) | Route::Upload(r, _) => r,
    };
    let action = match (route, method) {
        // Upload sessions are part of pushing, whatever the HTTP method.
        (Route::Upload(..), _) => Action::Push,
        (_, &Method::GET | &Method::HEAD) => Action::Pull,
        (_, &Method::DELETE) => Action::Delete,
        _ => Action::Push,
    };
    Need::Action(action, repository(repo))
}

/// The scope a client should ask for to satisfy `need`.
fn scope_for(need: &Need) -> Option<String> {
    let Need::Action(action, Resource::Repository { name, .. }) = need else {
        return None;
    };
    let actions = match action {
        Action::Pull => "pull",
        Action::Push => "pull,push",
        Action::Delete => "delete",
        Action::Admin => "*",
    };
    Some(format!("repository:{name}:{actions}"))
}

/// The source of a cross-repository mount (`POST …/blobs/uploads/?mount=&from=`),
/// when the request is one and names a valid source.
fn mount_source(route: Option<&Route>, req: &Request<Body>) -> Option<RepoName> {
    let Some(Route::UploadStart(_)) = route else {
        return None;
    };
    let query = Query::<HashMap<String, String>>::try_from_uri(req.uri()).ok()?;
    query.get("mount")?;
    RepoName::parse(query.get("from")?).ok()
}

/// Whether a mount from `from` should be answered with a challenge rather than
/// a fallback upload: the caller's registry token lacks pull on the source, but
/// the account behind the token has it, so a wider token makes the mount work
/// (distribution's `requiredAccess` does the same). When the account may not
/// read the source either, a new token would not help, and the handler opens
/// an ordinary upload session instead of sending the client round in circles.
async fn mount_needs_wider_token(caller: &Caller, from: &RepoName) -> bool {
    let source = repository(from);
    caller.identity().is_registry_token()
        && !caller.may_or_no(Action::Pull, &source).await
        && caller
            .behind_token()
            .await
            .may_or_no(Action::Pull, &source)
            .await
}

/// A pull with `?ns=HOST` (what containerd's `hosts.toml` and
/// containers-registries.conf mirrors send) names HOST's mirrored repository,
/// never a local one that shares the name: the route is rewritten to it before
/// anything else, so authorization, the handler and the audit log all see the
/// repository actually served. A host that is no configured remote is
/// `NAME_UNKNOWN`. Other requests ignore `ns`.
fn mirror_namespace(
    state: &AppState,
    method: &Method,
    route: Route,
    req: &Request<Body>,
) -> Result<(Route, Option<RepoName>), ApiError> {
    // Every pull passes here: without a query there is no `ns`, and nothing to parse.
    if !matches!(*method, Method::GET | Method::HEAD) || req.uri().query().is_none() {
        return Ok((route, None));
    }
    let Some(ns) = Query::<HashMap<String, String>>::try_from_uri(req.uri())
        .ok()
        .and_then(|q| q.0.get("ns").cloned())
    else {
        return Ok((route, None));
    };
    let resolve = |name: &RepoName| -> Result<RepoName, ApiError> {
        let unknown =
            || ApiError::name_unknown(format!("no configured upstream is named by ns={ns:?}"));
        let cache = state.pull_through.as_ref().ok_or_else(unknown)?;
        cache.namespace(&ns, name).map_err(|e| match e {
            wharf_mirror::proxy::NamespaceError::UnknownHost(_) => unknown(),
            wharf_mirror::proxy::NamespaceError::InvalidName(m) => ApiError::name_invalid(m),
        })
    };
    Ok(match route {
        Route::Manifest(name, r) => (Route::Manifest(resolve(&name)?, r), Some(name)),
        Route::Blob(name, d) => (Route::Blob(resolve(&name)?, d), Some(name)),
        Route::Tags(name) => (Route::Tags(resolve(&name)?), Some(name)),
        other => (other, None),
    })
}

/// Middleware in front of every `/v2` route.
pub(crate) async fn guard(
    State(state): State<Arc<AppState>>,
    mut req: Request<Body>,
    next: Next,
) -> Response {
    let method = req.method().clone();
    // Whether the path is an endpoint at all is decided before anything else:
    // a path that is not one gets its plain error (404 for an unknown
    // endpoint), never a challenge, a failed-login count or an audit row.
    let path = req.uri().path();
    // The name a `?ns=` request used, before it named the mirrored repository.
    let mut ns_asked = None;
    let route = if path == "/v2" || path == "/v2/" {
        None
    } else {
        match Route::parse(path).and_then(|route| mirror_namespace(&state, &method, route, &req)) {
            Ok((route, asked)) => {
                ns_asked = asked;
                Some(route)
            }
            Err(e) => {
                let mut res = e.into_response();
                let (name, value) = crate::api_version_header();
                res.headers_mut().insert(name, value);
                return res;
            }
        }
    };
    let need = need(&method, route.as_ref());
    let audited = match &need {
        Need::Action(action @ (Action::Push | Action::Delete), resource) => {
            resource.repository_name().map(|r| (r.to_owned(), *action))
        }
        _ => None,
    };
    // The audit log names the request with its query: `?tag=` moves tags and
    // `?mount=&from=` reads another repository. Pulls are not audited, so the
    // hot path builds no strings here (nor a realm or scopes, until a refusal).
    let target = audited.as_ref().map(|_| {
        let uri = req.uri();
        let target = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
        format!("{method} {target}")
    });
    let caller = match authenticate_request(&state, &mut req).await {
        Ok(caller) => caller,
        Err(refusal) => return refuse(&state, &req, refusal, &need, None),
    };
    let mut checked = caller.check(&need).await;
    if let (Err(Refusal::InsufficientScope), Some(asked), Need::Action(action, served)) =
        (&checked, &ns_asked, &need)
    {
        // containerd asks for a token scoped to the name it sent (`x/y`), not to the
        // mirrored name `?ns=` makes of it; such a token reads the mirror when the account
        // behind it may pull there itself.
        if caller.may_or_no(*action, &repository(asked)).await
            && caller.behind_token().await.may_or_no(*action, served).await
        {
            checked = Ok(());
        }
    }
    if let Err(refusal) = checked {
        if let (Some((repo, action)), Some(target), true) =
            (&audited, &target, refusal != Refusal::Internal)
        {
            state.audit(
                caller.identity(),
                caller.remote(),
                *action,
                target,
                AuditOutcome::Denied,
                repo,
            );
        }
        return refuse(&state, &req, refusal, &need, None);
    }
    if let Some(from) = mount_source(route.as_ref(), &req) {
        if mount_needs_wider_token(&caller, &from).await {
            return refuse(&state, &req, Refusal::InsufficientScope, &need, Some(&from));
        }
    }
    let identity = caller.identity().clone();
    let remote = caller.remote();
    req.extensions_mut().insert(caller);
    if let Some(route) = route {
        req.extensions_mut().insert(route);
    }
    let res = next.run(req).await;
    if let (Some((repo, action)), Some(target)) = (audited, target) {
        // Only state changes are audited; upload chunks are noise, so record
        // manifests (tags move), deletions and completed blob pushes.
        let significant =
            action == Action::Delete || (method == Method::PUT && res.status().is_success());
        if significant {
            let outcome = if res.status().is_success() {
                AuditOutcome::Ok
            } else {
                AuditOutcome::Failed
            };
            state.audit(&identity, remote, action, &target, outcome, &repo);
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_needs_its_action() {
        let repo = RepoName::parse("team/app").unwrap();
        let blob = Route::Blob(
            repo.clone(),
            wharf_core::Digest::parse(&format!("sha256:{}", "0".repeat(64))).unwrap(),
        );
        let on = |a| Need::Action(a, repository(&repo));
        assert_eq!(need(&Method::GET, None), Need::SignedIn);
        assert_eq!(need(&Method::GET, Some(&Route::Catalog)), Need::Anyone);
        assert_eq!(need(&Method::GET, Some(&blob)), on(Action::Pull));
        assert_eq!(need(&Method::HEAD, Some(&blob)), on(Action::Pull));
        assert_eq!(need(&Method::DELETE, Some(&blob)), on(Action::Delete));
        let upload = Route::Upload(repo.clone(), "id".into());
        // Even a GET of an upload session's status is part of pushing.
        assert_eq!(need(&Method::GET, Some(&upload)), on(Action::Push));
        assert_eq!(
            scope_for(&on(Action::Push)).as_deref(),
            Some("repository:team/app:pull,push")
        );
        assert_eq!(scope_for(&Need::Anyone), None);
    }
}
