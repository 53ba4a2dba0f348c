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
use wharf_meta::AuditOutcome;

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
    /// Whether the caller may do `action` on `repo`; a lookup failure is an error.
    pub(crate) async fn try_can(
        &self,
        repo: &str,
        action: Action,
    ) -> Result<bool, wharf_meta::MetaError> {
        Ok(self
            .auth
            .allowed(&self.identity, repo)
            .await?
            .contains(action))
    }

    /// Whether the caller may do `action` on `repo`, for second-order questions
    /// (a mount source): a lookup failure counts as "no", which is safe there.
    pub(crate) async fn can(&self, repo: &str, action: Action) -> bool {
        match self.try_can(repo, action).await {
            Ok(ok) => ok,
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

/// Networks whose `X-Forwarded-For` and `X-Forwarded-Proto` are believed:
/// the reverse proxies in front of Wharf. Empty (the default): none, and the
/// client address is the socket's peer.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Proxies from `(network, prefix length)` pairs (validated by the configuration).
    pub fn new(networks: Vec<(IpAddr, u8)>) -> TrustedProxies {
        TrustedProxies(networks)
    }

    /// Whether `ip` is one of the proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0
            .iter()
            .any(|&(net, prefix)| match (canonical(net), ip) {
                (IpAddr::V4(n), IpAddr::V4(a)) => {
                    let bits = u32::from(prefix.min(32));
                    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                    u32::from(n) & mask == u32::from(a) & mask
                }
                (IpAddr::V6(n), IpAddr::V6(a)) => {
                    let bits = u32::from(prefix.min(128));
                    let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                    u128::from(n) & mask == u128::from(a) & mask
                }
                _ => false,
            })
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, from dual-stack sockets) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn peer_ip(req: &Request<Body>) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| canonical(c.0.ip()))
}

/// Whether the request came straight from a trusted proxy.
fn from_trusted_proxy(state: &AppState, req: &Request<Body>) -> bool {
    peer_ip(req).is_some_and(|ip| state.trusted_proxies.contains(ip))
}

/// The client's address: the socket's peer, or, when the peer is a trusted
/// proxy, the right-most `X-Forwarded-For` hop that is not itself a trusted
/// proxy (hops further left were written by the client and prove nothing).
pub(crate) fn client_ip(state: &AppState, req: &Request<Body>) -> Option<IpAddr> {
    let peer = peer_ip(req)?;
    if !state.trusted_proxies.contains(peer) {
        return Some(peer);
    }
    let mut client = peer;
    let hops: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            // Garbage from further left: the last proxy we trust saw this client.
            break;
        };
        client = ip;
        if !state.trusted_proxies.contains(ip) {
            break;
        }
    }
    Some(client)
}

/// One `X-Forwarded-For` entry: an address, optionally bracketed or with a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    hop.parse::<SocketAddr>().ok().map(|a| canonical(a.ip()))
}

/// Whether `s` is a `host[:port]` authority fit to echo into a challenge: a
/// DNS name, an IPv4 address or a bracketed IPv6 address, and a port of
/// digits. Anything else (quotes, spaces, user info, paths) is refused.
pub(crate) fn valid_authority(s: &str) -> bool {
    if s.is_empty() || s.len() > 261 {
        return false;
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("", port),
                None => return false,
            },
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => (s, ""),
        }
    };
    let port_ok = (port.is_empty() && !s.ends_with(':'))
        || (port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| p <= 65535));
    if !port_ok {
        return false;
    }
    if s.starts_with('[') {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The authority a request was sent to — HTTP/2's `:authority` (in the URI) or
/// HTTP/1.1's `Host` — if it is a plain, valid `host[:port]`; never raw header bytes.
pub(crate) fn request_authority<B>(req: &Request<B>) -> Option<String> {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .filter(|a| valid_authority(a))
}

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
    let authority = request_authority(req).unwrap_or_else(|| state.listen.clone());
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

fn challenge(state: &AppState, realm: &str, scope: Option<String>, insufficient: bool) -> Response {
    let mut value = format!(
        "Bearer realm=\"{realm}\",service=\"{}\"",
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
pub(crate) fn authn_failure(state: &AppState, realm: &str, err: AuthnError) -> Response {
    match err {
        AuthnError::BadCredentials => challenge(state, realm, None, false),
        AuthnError::RateLimited { retry_after_secs }
        | AuthnError::Overloaded { retry_after_secs } => {
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
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // Whether the path is an endpoint at all is decided before anything else:
    // a path that is not one gets its plain error (404 for an unknown
    // endpoint), never a challenge, a failed-login count or an audit row.
    let route = if path == "/v2" || path == "/v2/" {
        None
    } else {
        match Route::parse(&path) {
            Ok(route) => Some(route),
            Err(e) => {
                let mut res = e.into_response();
                let (name, value) = crate::api_version_header();
                res.headers_mut().insert(name, value);
                return res;
            }
        }
    };
    let realm = realm(&state, &req);
    let Ok(creds) = credentials(req.headers()) else {
        return challenge(&state, &realm, None, false);
    };
    let remote = client_ip(&state, &req);
    let cert = client_cert(&req);
    let identity = match authenticate(&state, &creds, cert.as_deref(), remote).await {
        Ok(identity) => identity,
        Err(e) => return authn_failure(&state, &realm, e),
    };
    if let Some(slot) = req.extensions().get::<crate::access_log::PrincipalSlot>() {
        slot.set(identity.account().unwrap_or("-"));
    }
    let access = Access {
        auth: state.auth.clone(),
        identity: identity.clone(),
    };
    // Parsed once above; the dispatcher takes it from the request's extensions.
    let need = need(&method, &path, route.as_ref());
    let (granted, audited) = match &need {
        None | Some(Need::SignedIn) => (!matches!(identity, Identity::Anonymous), None),
        Some(Need::Anyone) => (true, None),
        Some(Need::Action(repo, action)) => {
            let ok = match access.try_can(repo, *action).await {
                Ok(ok) => ok,
                // Fail closed, and say it is our fault: a database error is a 500,
                // never a 401/403 that would send the client after new credentials.
                Err(e) => {
                    tracing::error!(error = %e, "authorization lookup failed");
                    return ApiError::internal().into_response();
                }
            };
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
                AuditOutcome::Denied,
                repo,
            );
        }
        let scope = match &need {
            Some(Need::Action(repo, action)) => Some(scope_for(repo, *action)),
            _ => None,
        };
        return match identity {
            Identity::Anonymous => challenge(&state, &realm, scope, false),
            Identity::RegistryToken(_) => challenge(&state, &realm, scope, true),
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
                AuditOutcome::Ok
            } else {
                AuditOutcome::Failed
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_fit_to_echo() {
        for ok in [
            "localhost",
            "localhost:5000",
            "registry.example.com:443",
            "127.0.0.1:8443",
            "[::1]",
            "[::1]:5000",
        ] {
            assert!(valid_authority(ok), "{ok}");
        }
        for bad in [
            "",
            "evil\",error=\"x",
            "a b",
            "user@host",
            "host:",
            "host:99999",
            "host:12a",
            "host/path",
            "-bad.example",
            "[::1",
            "[nothex]:1",
            "[::1]x",
        ] {
            assert!(!valid_authority(bad), "{bad}");
        }
    }

    #[test]
    fn trusted_proxy_networks() {
        let proxies = TrustedProxies::new(vec![
            ("10.0.0.0".parse().unwrap(), 8),
            ("::1".parse().unwrap(), 128),
            ("192.168.1.7".parse().unwrap(), 32),
        ]);
        assert!(proxies.contains("10.200.3.4".parse().unwrap()));
        assert!(!proxies.contains("11.0.0.1".parse().unwrap()));
        assert!(proxies.contains("::1".parse().unwrap()));
        assert!(proxies.contains("192.168.1.7".parse().unwrap()));
        assert!(!proxies.contains("192.168.1.8".parse().unwrap()));
        // A dual-stack socket's IPv4-mapped peer is the IPv4 address.
        assert!(proxies.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(!TrustedProxies::default().contains("127.0.0.1".parse().unwrap()));
    }
}
