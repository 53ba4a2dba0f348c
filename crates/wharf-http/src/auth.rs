//! Who is calling, and may they: the one authorization layer under every surface.
//!
//! Authentication is neutral: [`authenticate_request`] turns a request's
//! credentials (Basic, a bearer registry or API token, or the connection's
//! client certificate) into a [`Caller`]. Authorization is one question,
//! [`Caller::check`] / [`Caller::may`]: may this caller do this action on this
//! resource (a repository of some kind, or the server itself)? The decision
//! itself is `wharf_auth::access::allowed_actions`.
//!
//! Each surface has a thin guard of its own (`oci::guard` for `/v2`,
//! `api::guard` for `/api/v1`; `/ostree`, `/rpm`, `/files` and `/lookaside`
//! plug in the same way): it parses its path into a [`Need`], asks this module,
//! and maps a [`Refusal`] to its protocol's error — a Bearer challenge and an
//! OCI error body on `/v2`, the JSON envelope on `/api/v1`. No surface decides
//! access itself, and this module knows no surface.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use wharf_auth::access::{Action, Resource};
use wharf_auth::{AuthService, AuthnError, Credentials, Identity};

use crate::AppState;

/// Longest `Authorization` header accepted; longer ones are refused unread.
const MAX_AUTHORIZATION_BYTES: usize = 8 * 1024;

/// What a request needs before its handler may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Need {
    /// Nothing: handlers filter what they show (the catalog).
    Anyone,
    /// Any valid credentials (the `/v2/` version check).
    SignedIn,
    /// One action on one resource.
    Action(Action, Resource),
}

/// Why a request may not proceed, in the surface-neutral terms each surface's
/// error module maps to its protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The `Authorization` header is present but malformed.
    MalformedCredentials,
    /// The credentials are wrong, expired or disabled.
    BadCredentials,
    /// No credentials were given; signing in may help.
    SignInRequired,
    /// A registry token that lacks the scope; a new token may help.
    InsufficientScope,
    /// A signed-in account that lacks the right; new credentials would not help.
    Denied,
    /// Too many sign-ins from this client, or too many at once.
    Throttled {
        /// Seconds the client should wait.
        retry_after_secs: u64,
    },
    /// A lookup failed: fail closed, and say it is the server's fault (never a
    /// 401/403 that would send the client after new credentials).
    Internal,
}

/// The authenticated caller of one request, and the only way to ask what it may do.
#[derive(Clone)]
pub(crate) struct Caller {
    auth: Arc<AuthService>,
    identity: Identity,
    remote: Option<IpAddr>,
}

impl Caller {
    /// Who the caller is.
    pub(crate) fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The client's address (behind trusted proxies, the forwarded one).
    pub(crate) fn remote(&self) -> Option<IpAddr> {
        self.remote
    }

    /// Whether the caller may do `action` on `resource`; a lookup failure is an error.
    pub(crate) async fn may(
        &self,
        action: Action,
        resource: &Resource,
    ) -> Result<bool, wharf_meta::MetaError> {
        self.auth.may(&self.identity, action, resource).await
    }

    /// [`may`](Caller::may) for second-order questions (a mount source), where
    /// a lookup failure counts as "no", which is safe there.
    pub(crate) async fn may_or_no(&self, action: Action, resource: &Resource) -> bool {
        match self.may(action, resource).await {
            Ok(ok) => ok,
            Err(e) => {
                tracing::error!(error = %e, "authorization lookup failed");
                false
            }
        }
    }

    /// Whether the request may proceed, and if not, why — in terms that say
    /// whether other credentials could help.
    pub(crate) async fn check(&self, need: &Need) -> Result<(), Refusal> {
        let granted = match need {
            Need::Anyone => true,
            Need::SignedIn => !matches!(self.identity, Identity::Anonymous),
            Need::Action(action, resource) => match self.may(*action, resource).await {
                Ok(ok) => ok,
                Err(e) => {
                    tracing::error!(error = %e, "authorization lookup failed");
                    return Err(Refusal::Internal);
                }
            },
        };
        if granted {
            return Ok(());
        }
        Err(match self.identity {
            Identity::Anonymous => Refusal::SignInRequired,
            Identity::RegistryToken(_) => Refusal::InsufficientScope,
            Identity::Account(_) => Refusal::Denied,
        })
    }

    /// The caller whose current grants decide, rather than a registry token's
    /// claims: a token carries scopes for the repositories it asked about, so
    /// listings (`_catalog`) and "would a new token help?" ask the account.
    pub(crate) async fn behind_token(&self) -> Caller {
        let identity = match &self.identity {
            Identity::RegistryToken(_) => match self.auth.principal_for(&self.identity).await {
                Ok(p) if !p.is_anonymous() => Identity::Account(p),
                _ => Identity::Anonymous,
            },
            other => other.clone(),
        };
        Caller {
            auth: self.auth.clone(),
            identity,
            remote: self.remote,
        }
    }

    /// Whether the caller is a server administrator (acting with its full rights).
    pub(crate) async fn is_admin(&self) -> bool {
        self.may_or_no(Action::Admin, &Resource::Server).await
    }
}

/// Authenticates a request: explicit credentials, or else the connection's
/// client certificate. The caller's account is written into the access log line.
///
/// The request is taken by `&mut` only because a request body is `Send` but not
/// `Sync`: a shared reference held by a future would make the future `!Send`.
pub(crate) async fn authenticate_request(
    state: &AppState,
    req: &mut Request<Body>,
) -> Result<Caller, Refusal> {
    let creds = credentials(req.headers()).map_err(|()| Refusal::MalformedCredentials);
    let remote = client_ip(state, req);
    let cert = client_cert(req);
    let slot = req
        .extensions()
        .get::<crate::access_log::PrincipalSlot>()
        .cloned();
    let identity = authenticate(state, &creds?, cert.as_deref(), remote)
        .await
        .map_err(refusal_of)?;
    if let Some(slot) = slot {
        slot.set(identity.account().unwrap_or("-"));
    }
    Ok(Caller {
        auth: state.auth.clone(),
        identity,
        remote,
    })
}

/// An authentication failure as a [`Refusal`].
pub(crate) fn refusal_of(err: AuthnError) -> Refusal {
    match err {
        AuthnError::BadCredentials => Refusal::BadCredentials,
        AuthnError::RateLimited { retry_after_secs }
        | AuthnError::Overloaded { retry_after_secs } => Refusal::Throttled { retry_after_secs },
        AuthnError::Meta(e) => {
            tracing::error!(error = %e, "authentication lookup failed");
            Refusal::Internal
        }
        AuthnError::Auth(e) => {
            tracing::error!(error = %e, "authentication failed internally");
            Refusal::Internal
        }
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
pub(crate) fn from_trusted_proxy(state: &AppState, req: &Request<Body>) -> bool {
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

/// The authority a request was sent to — HTTP/2's `:authority` (in the URI) or
/// HTTP/1.1's `Host` — if it is a plain, valid `host[:port]`; never raw header bytes.
pub(crate) fn request_authority<B>(req: &Request<B>) -> Option<wharf_core::Authority> {
    match req.uri().authority() {
        Some(authority) => wharf_core::Authority::parse(authority.as_str()),
        None => wharf_core::Authority::parse(req.headers().get(header::HOST)?.to_str().ok()?),
    }
}

/// The account named by a verified client certificate, if the connection had one.
pub(crate) fn client_cert(req: &Request<Body>) -> Option<String> {
    req.extensions()
        .get::<wharf_tls::ClientCertSubject>()
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

#[cfg(test)]
mod tests {
    use super::*;

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
