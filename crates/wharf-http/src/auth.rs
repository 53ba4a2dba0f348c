//! The one authorization path of every protected surface.
//!
//! [`guard_v2`] runs before any `/v2` handler: it reads the credentials,
//! authenticates them through `wharf_auth::AuthService`, works out which action
//! the request needs on which repository, and either lets the request through
//! (with an [`Access`] extension the handlers use for second-order questions
//! such as "may this caller also pull from the mount source?") or answers with
//! the spec's 401/403/429. Handlers never decide access themselves.
//!
//! 401 versus 403: a request without credentials, or with a registry token that
//! lacks the scope, gets 401 and a `WWW-Authenticate: Bearer` challenge naming
//! the scope to ask for (that is how clients know to fetch a new token); a
//! signed-in account (password or API token) that lacks the right gets 403
//! `DENIED`, because new credentials would not help.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use wharf_auth::access::Action;
use wharf_auth::{AuthService, AuthnError, Credentials, Identity};

use crate::oci::route::Route;
use crate::oci::ApiError;
use crate::AppState;

/// Longest `Authorization` header accepted; longer ones are refused unread.
const MAX_AUTHORIZATION_BYTES: usize = 8 * 1024;

/// What the handlers may ask about the current caller.
#[derive(Clone)]
pub(crate) struct Access {
    auth: Arc<AuthService>,
    identity: Identity,
}

impl Access {
    /// Whether the caller may do `action` on `repo`.
    pub(crate) async fn can(&self, repo: &str, action: Action) -> bool {
        match self.auth.allowed(&self.identity, repo).await {
            Ok(actions) => actions.contains(action),
            Err(e) => {
                tracing::error!(error = %e, "authorization lookup failed");
                false
            }
        }
    }

    /// The caller as seen for listings: a registry token carries scopes for the
    /// repositories it asked about, not for every repository, so `_catalog`
    /// filters by the token subject's current grants instead.
    pub(crate) async fn for_listing(&self) -> Access {
        let identity = match &self.identity {
            Identity::RegistryToken(_) => match self.auth.principal_for(&self.identity).await {
                Ok(p) if !p.is_anonymous() => Identity::Account(p),
                _ => Identity::Anonymous,
            },
            other => other.clone(),
        };
        Access {
            auth: self.auth.clone(),
            identity,
        }
    }

    /// Whether the caller is a server administrator.
    pub(crate) async fn is_admin(&self) -> bool {
        matches!(self.auth.principal_for(&self.identity).await, Ok(p) if p.is_admin)
    }
}

/// Parses the `Authorization` header. `Err` for a header that is present but malformed.
pub(crate) fn credentials(headers: &HeaderMap) -> Result<Credentials, ()> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(Credentials::None);
    };
    if value.len() > MAX_AUTHORIZATION_BYTES {
        return Err(());
    }
    let value = value.to_str().map_err(|_| ())?.trim();
    let (scheme, rest) = value.split_once(' ').ok_or(())?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD.decode(rest).map_err(|_| ())?;
        let decoded = String::from_utf8(decoded).map_err(|_| ())?;
        let (user, password) = decoded.split_once(':').ok_or(())?;
        if user.is_empty() {
            return Err(());
        }
        Ok(Credentials::Basic {
            user: user.to_owned(),
            password: password.to_owned(),
        })
    } else if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        Ok(Credentials::Bearer(rest.to_owned()))
    } else {
        Err(())
    }
}

pub(crate) fn remote_ip(req: &Request<Body>) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The token endpoint's URL as clients on the other side of any proxy see it.
pub(crate) fn realm(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(realm) = &state.realm {
        return realm.clone();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .filter(|p| *p == "https" || *p == "http")
        .unwrap_or(if state.tls { "https" } else { "http" });
    format!("{scheme}://{host}/token")
}

fn challenge(
    state: &AppState,
    headers: &HeaderMap,
    scope: Option<String>,
    insufficient: bool,
) -> Response {
    let mut value = format!(
        "Bearer realm=\"{}\",service=\"{}\"",
        realm(state, headers),
        state.auth.settings().service
    );
    if let Some(scope) = scope {
        value.push_str(&format!(",scope=\"{scope}\""));
    }
    if insufficient {
        value.push_str(",error=\"insufficient_scope\"");
    }
    ApiError::unauthorized(&value).into_response()
}

/// The account named by a verified client certificate, if the connection had one.
pub(crate) fn client_cert(req: &Request<Body>) -> Option<String> {
    req.extensions()
        .get::<crate::tls::ClientCertSubject>()
        .map(|s| s.0.clone())
}

/// Authenticates explicit credentials, or else the connection's client
/// certificate: an `Authorization` header always wins, so one TLS client can
/// still act as another account by saying so.
pub(crate) async fn authenticate(
    state: &AppState,
    creds: &Credentials,
    cert: Option<&str>,
    remote: Option<IpAddr>,
) -> Result<Identity, AuthnError> {
    match (creds, cert) {
        (Credentials::None, Some(account)) => state.auth.authenticate_account(account).await,
        _ => state.auth.authenticate(creds, remote).await,
    }
}

/// Maps an authentication failure to the wire.
pub(crate) fn authn_failure(state: &AppState, headers: &HeaderMap, err: AuthnError) -> Response {
    match err {
        AuthnError::BadCredentials => challenge(state, headers, None, false),
        AuthnError::RateLimited { retry_after_secs } => {
            ApiError::too_many_requests(retry_after_secs).into_response()
        }
        AuthnError::Meta(e) => {
            tracing::error!(error = %e, "authentication lookup failed");
            ApiError::internal().into_response()
        }
        AuthnError::Auth(e) => {
            tracing::error!(error = %e, "authentication failed internally");
            ApiError::internal().into_response()
        }
    }
}

/// What a `/v2` request needs: an action on a repository, or just a signed-in caller.
enum Need {
    SignedIn,
    Anyone,
    Action(String, Action),
}

fn need(method: &Method, path: &str, route: Option<&Route>) -> Option<Need> {
    if path == "/v2" || path == "/v2/" {
        return Some(Need::SignedIn);
    }
    let route = route?;
    let repo = match route {
        Route::Catalog => return Some(Need::Anyone),
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
    Some(Need::Action(repo.as_str().to_owned(), action))
}

fn scope_for(repo: &str, action: Action) -> String {
    let actions = match action {
        Action::Pull => "pull",
        Action::Push => "pull,push",
        Action::Delete => "delete",
        Action::Admin => "*",
    };
    format!("repository:{repo}:{actions}")
}

/// Middleware in front of every `/v2` route.
pub(crate) async fn guard_v2(
    State(state): State<Arc<AppState>>,
    mut req: Request<Body>,
    next: Next,
) -> Response {
    let Ok(creds) = credentials(req.headers()) else {
        return challenge(&state, req.headers(), None, false);
    };
    let remote = remote_ip(&req);
    let cert = client_cert(&req);
    let identity = match authenticate(&state, &creds, cert.as_deref(), remote).await {
        Ok(identity) => identity,
        Err(e) => return authn_failure(&state, req.headers(), e),
    };
    if let Some(slot) = req.extensions().get::<crate::access_log::PrincipalSlot>() {
        slot.set(identity.account().unwrap_or("-"));
    }
    let access = Access {
        auth: state.auth.clone(),
        identity: identity.clone(),
    };
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // Parsed once here; the dispatcher takes it from the request's extensions.
    let route = Route::parse(&path).ok();
    let need = need(&method, &path, route.as_ref());
    let (granted, audited) = match &need {
        // Unparseable paths: the handler answers with the spec error, but only
        // to callers who signed in, so anonymous probing learns nothing.
        None => (!matches!(identity, Identity::Anonymous), None),
        Some(Need::SignedIn) => (!matches!(identity, Identity::Anonymous), None),
        Some(Need::Anyone) => (true, None),
        Some(Need::Action(repo, action)) => {
            let ok = access.can(repo, *action).await;
            let audited =
                matches!(action, Action::Push | Action::Delete).then(|| (repo.clone(), *action));
            (ok, audited)
        }
    };
    if !granted {
        if let Some((repo, action)) = &audited {
            state.audit(
                &identity,
                remote,
                *action,
                &format!("{method} {path}"),
                "denied",
                repo,
            );
        }
        let scope = match &need {
            Some(Need::Action(repo, action)) => Some(scope_for(repo, *action)),
            _ => None,
        };
        return match identity {
            Identity::Anonymous => challenge(&state, req.headers(), scope, false),
            Identity::RegistryToken(_) => challenge(&state, req.headers(), scope, true),
            Identity::Account(_) => ApiError::denied().into_response(),
        };
    }
    req.extensions_mut().insert(access);
    if let Some(route) = route {
        req.extensions_mut().insert(route);
    }
    let res = next.run(req).await;
    if let Some((repo, action)) = audited {
        // Only state changes are audited; upload chunks are noise, so record
        // manifests (tags move), deletions and completed blob pushes.
        let significant =
            action == Action::Delete || (method == Method::PUT && res.status().is_success());
        if significant {
            let outcome = if res.status().is_success() {
                "ok"
            } else {
                "failed"
            };
            state.audit(
                &identity,
                remote,
                action,
                &format!("{method} {path}"),
                outcome,
                &repo,
            );
        }
    }
    res
}
