//! [`AuthService`]: credentials in, a decision out, backed by the metadata database.
//!
//! Caches keep the hot path cheap without weakening anything: verified
//! password credentials are remembered for a minute by a SHA-256 of the
//! credential pair (argon2id is deliberately slow and clients resend Basic
//! credentials on every request); grants and signing keys are re-read every few
//! seconds, so a change made through another replica takes effect promptly.
//!
//! Password verification is the one expensive thing an unauthenticated
//! client can make us do (argon2id: 19 MiB and tens of milliseconds each), so
//! it is bounded three ways: concurrent requests with the same credentials
//! share one verification (single flight), at most
//! [`AuthSettings::max_concurrent_password_checks`] run at once on the
//! blocking pool (beyond that a request waits briefly, then gets 429), and the
//! failed-login throttle counts an attempt before it is hashed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OnceCell, Semaphore};
use wharf_meta::{AccountRecord, GrantSubjectKind, Meta, MetaError, TokenRecord};

use crate::access::{
    allowed_actions, Action, Actions, Grant, Principal, Resource, Subject, TokenScope,
};
use crate::secret::{constant_time_eq, random_hex, token_digest, verify_password};
use crate::throttle::{Key, Limits, Reservation, Throttle};
use crate::token::{self, AccessEntry, Claims, SigningKey};
use crate::AuthError;
use wharf_core::RepositoryKind;

const GRANTS_TTL: Duration = Duration::from_secs(3);
const KEYS_TTL: Duration = Duration::from_secs(10);
const BASIC_CACHE_TTL: Duration = Duration::from_secs(60);
/// Verified credentials remembered before the cache starts over.
const MAX_CACHED_CREDENTIALS: usize = 10_000;
/// How often unlock requests made by other processes (`wharf auth unlock`)
/// are looked for, at most; only when a request is about to be throttled.
const UNLOCK_POLL: Duration = Duration::from_secs(2);
/// Delay added to every attempt on an account over its soft failure budget.
const ACCOUNT_SLOWDOWN: Duration = Duration::from_secs(1);
/// The soft budget of one account, as a multiple of `max_failed_logins`.
const ACCOUNT_SOFT_BUDGET_FACTOR: u32 = 10;
/// Prefix of API token strings, so they are recognisable in logs and by secret scanners.
pub const API_TOKEN_PREFIX: &str = "wharf_";

/// Settings of the auth service, lowered from the configuration.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Token audience and issuer (the `service` of the challenge).
    pub service: String,
    /// Lifetime of registry access tokens.
    pub token_ttl: Duration,
    /// Lifetime of refresh (offline) tokens.
    pub refresh_token_ttl: Duration,
    /// Failed sign-ins allowed per (account, client address) within `failure_window`.
    pub max_failed_logins: u32,
    /// Failed sign-ins allowed per client address, whatever the account, within `failure_window`.
    pub max_failed_logins_per_address: u32,
    /// Window of the failure counts.
    pub failure_window: Duration,
    /// Password verifications (argon2id, bcrypt) allowed to run at once.
    pub max_concurrent_password_checks: usize,
    /// How long a sign-in waits for a free verification slot before it gets 429.
    pub password_check_wait: Duration,
}

impl AuthSettings {
    /// Settings with every limit at its configuration default, for tests and tools.
    pub fn new(service: &str) -> AuthSettings {
        AuthSettings {
            service: service.to_owned(),
            token_ttl: Duration::from_secs(300),
            refresh_token_ttl: Duration::from_secs(90 * 86400),
            max_failed_logins: 10,
            max_failed_logins_per_address: 30,
            failure_window: Duration::from_secs(300),
            max_concurrent_password_checks: 4,
            password_check_wait: Duration::from_secs(5),
        }
    }
}

/// Credentials a request presented.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// None.
    None,
    /// HTTP Basic: a password or an API token as the password.
    Basic {
        /// User name.
        user: String,
        /// Password or API token.
        password: String,
    },
    /// A bearer token: a registry token or an API token.
    Bearer(String),
}

/// Who a request is, once its credentials were checked.
#[derive(Debug, Clone)]
pub enum Identity {
    /// No credentials.
    Anonymous,
    /// A password or API token: rights come from the grants.
    Account(Principal),
    /// A registry token: rights are exactly its `access` claims.
    RegistryToken(Claims),
}

impl Identity {
    /// The account name, if any.
    pub fn account(&self) -> Option<&str> {
        match self {
            Identity::Anonymous => None,
            Identity::Account(p) => p.account.as_deref(),
            Identity::RegistryToken(c) if c.sub.is_empty() => None,
            Identity::RegistryToken(c) => Some(&c.sub),
        }
    }

    /// Whether the credential was a registry token (clients fetch a new one on 401).
    pub fn is_registry_token(&self) -> bool {
        matches!(self, Identity::RegistryToken(_))
    }
}

/// Why authentication failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    /// Wrong password, unknown account, forged/expired/revoked token.
    #[error("invalid credentials")]
    BadCredentials,
    /// Too many failures recently; try again later.
    #[error("too many failed sign-ins; retry in {retry_after_secs} s")]
    RateLimited {
        /// Seconds until the window frees up.
        retry_after_secs: u64,
    },
    /// Every password-verification slot stayed busy; try again shortly.
    #[error("too many sign-ins at once; retry in {retry_after_secs} s")]
    Overloaded {
        /// Seconds to wait before retrying.
        retry_after_secs: u64,
    },
    /// The database failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// Hashing or randomness failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// A scope requested at the token endpoint, e.g. `repository:team/app:pull,push`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedScope {
    /// `repository` or `registry`.
    pub kind: String,
    /// Resource name.
    pub name: String,
    /// Requested actions.
    pub actions: Vec<String>,
}

impl RequestedScope {
    /// Parses one scope; `None` if malformed. A `repository` scope must name a
    /// valid repository and known actions (`pull`, `push`, `delete`, `*`), so
    /// nothing unvalidated ever reaches the grant matcher or a token's claims.
    pub fn parse(s: &str) -> Option<RequestedScope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        let actions: Vec<String> = actions
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        match kind {
            "repository" => {
                wharf_core::RepoName::parse(name).ok()?;
                if !actions
                    .iter()
                    .all(|a| crate::access::Action::parse_many(a).is_some())
                {
                    return None;
                }
            }
            "registry" => {
                if name != "catalog" || actions.iter().any(|a| a != "*") {
                    return None;
                }
            }
            _ => return None,
        }
        Some(RequestedScope {
            kind: kind.to_owned(),
            name: name.to_owned(),
            actions,
        })
    }
}

/// A token issued by the token endpoint.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The access token.
    pub token: String,
    /// Its lifetime in seconds.
    pub expires_in: u64,
    /// Issue time, unix seconds.
    pub issued_at: i64,
    /// A refresh token, when an offline token was asked for.
    pub refresh_token: Option<String>,
}

/// Signing keys, the active one first (it signs); retired ones still verify
/// the tokens they signed until those expire.
type KeyRing = Vec<SigningKey>;

/// One password verification shared by every concurrent request presenting
/// the same credentials; `None` inside means the credentials are wrong.
type Flight = Arc<OnceCell<Option<Principal>>>;

#[derive(Default)]
struct Caches {
    grants: Option<(Instant, Arc<Vec<Grant>>)>,
    keys: Option<(Instant, Arc<KeyRing>)>,
    basic: HashMap<String, (Instant, Principal)>,
    flights: HashMap<String, Flight>,
}

/// Where this process is in reading other processes' unlock requests.
struct UnlockCursor {
    polled: Option<Instant>,
    since: i64,
    applied: Vec<String>,
}

/// The authentication and authorization service.
pub struct AuthService {
    meta: Meta,
    settings: AuthSettings,
    caches: Mutex<Caches>,
    throttle: Throttle,
    password_checks: Arc<Semaphore>,
    unlocks: tokio::sync::Mutex<UnlockCursor>,
}

impl AuthService {
    /// A service over `meta`.
    pub fn new(meta: Meta, settings: AuthSettings) -> AuthService {
        let throttle = Throttle::new(Limits {
            per_pair: settings.max_failed_logins,
            per_address: settings.max_failed_logins_per_address,
            account_soft: settings
                .max_failed_logins
                .saturating_mul(ACCOUNT_SOFT_BUDGET_FACTOR),
            window: settings.failure_window,
        });
        AuthService {
            meta,
            password_checks: Arc::new(Semaphore::new(
                settings.max_concurrent_password_checks.max(1),
            )),
            settings,
            caches: Mutex::new(Caches::default()),
            throttle,
            unlocks: tokio::sync::Mutex::new(UnlockCursor {
                polled: None,
                // Requests made before this process started concern state it never had.
                since: wharf_meta::unix_now(),
                applied: Vec::new(),
            }),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    fn caches(&self) -> std::sync::MutexGuard<'_, Caches> {
        self.caches.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks credentials. Anonymous requests are not an error.
    pub async fn authenticate(
        &self,
        credentials: &Credentials,
        remote: Option<IpAddr>,
    ) -> Result<Identity, AuthnError> {
        match credentials {
            Credentials::None => Ok(Identity::Anonymous),
            // Token failures are keyed by the client address alone: a token names
            // no account until it is verified, and one shared key would let anyone
            // lock every token user out.
            Credentials::Bearer(t) if t.starts_with(API_TOKEN_PREFIX) => self
                .token_guarded(Throttle::keys(None, remote), self.api_token_principal(t))
                .await
                .map(Identity::Account),
            Credentials::Bearer(t) => {
                let keys = self.signing_keys().await?;
                match token::verify(t, &keys, &self.settings.service, wharf_meta::unix_now()) {
                    Ok(claims) if claims.typ == "access" => Ok(Identity::RegistryToken(claims)),
                    _ => Err(AuthnError::BadCredentials),
                }
            }
            Credentials::Basic { user, password } => {
                let principal = if password.starts_with(API_TOKEN_PREFIX) {
                    let p = self
                        .token_guarded(
                            Throttle::keys(Some(user), remote),
                            self.api_token_principal(password),
                        )
                        .await?;
                    if p.account.as_deref() != Some(user.as_str()) {
                        return Err(AuthnError::BadCredentials);
                    }
                    p
                } else {
                    self.password_principal(user, password, remote).await?
                };
                Ok(Identity::Account(principal))
            }
        }
    }

    /// Refuses when a hard limit is reached, after picking up any unlock made
    /// by another process meanwhile.
    async fn check_throttle(&self, keys: &[Key]) -> Result<(), AuthnError> {
        if self.throttle.check(keys).is_err() {
            self.apply_unlocks().await;
        }
        self.throttle
            .check(keys)
            .map_err(|retry_after_secs| AuthnError::RateLimited { retry_after_secs })
    }

    /// Counts an attempt before it is verified.
    async fn begin_attempt(&self, keys: Vec<Key>) -> Result<Reservation, AuthnError> {
        if let Ok(r) = self.throttle.begin(keys.clone()) {
            return Ok(r);
        }
        self.apply_unlocks().await;
        self.throttle
            .begin(keys)
            .map_err(|retry_after_secs| AuthnError::RateLimited { retry_after_secs })
    }

    /// Settles a counted attempt: right credentials and internal errors are not failures.
    fn finish_attempt<T>(
        &self,
        reservation: Reservation,
        account: Option<&str>,
        remote: Option<IpAddr>,
        result: &Result<Option<T>, AuthnError>,
    ) {
        match result {
            Ok(None) => {
                tracing::warn!(auth.user = account, client.addr = ?remote, "failed sign-in");
            }
            Ok(Some(_)) | Err(_) => self.throttle.release(reservation),
        }
    }

    /// Runs an API token check under the throttle.
    async fn token_guarded(
        &self,
        keys: Vec<Key>,
        check: impl std::future::Future<Output = Result<Option<Principal>, AuthnError>>,
    ) -> Result<Principal, AuthnError> {
        let remote = keys.iter().find_map(|k| match k {
            Key::Address(a) => *a,
            _ => None,
        });
        let reservation = self.begin_attempt(keys).await?;
        let result = check.await;
        self.finish_attempt(reservation, None, remote, &result);
        result?.ok_or(AuthnError::BadCredentials)
    }

    async fn password_principal(
        &self,
        user: &str,
        password: &str,
        remote: Option<IpAddr>,
    ) -> Result<Principal, AuthnError> {
        let keys = Throttle::keys(Some(user), remote);
        // A throttled address is refused even with credentials it proved before.
        self.check_throttle(&keys).await?;
        let cache_key = token_digest(&format!("{}\0{password}", user.len()))
            + &token_digest(&format!("{user}\0{password}"));
        if let Some((at, p)) = self.caches().basic.get(&cache_key) {
            if at.elapsed() < BASIC_CACHE_TTL {
                return Ok(p.clone());
            }
        }
        let flight_key = cache_key.as_str();
        let flight = {
            let mut caches = self.caches();
            if caches.flights.len() >= MAX_CACHED_CREDENTIALS {
                // Flights whose every request hung up are held by nobody but the map.
                caches.flights.retain(|_, f| Arc::strong_count(f) > 1);
            }
            caches.flights.entry(cache_key.clone()).or_default().clone()
        };
        // Only the request that runs the verification counts an attempt: the
        // others present the very same guess and share its outcome.
        let outcome = flight
            .get_or_try_init(|| async move {
                let reservation = self.begin_attempt(keys).await?;
                if reservation.slow {
                    tokio::time::sleep(ACCOUNT_SLOWDOWN).await;
                }
                let result = self.verify_password_once(user, password, flight_key).await;
                self.finish_attempt(reservation, Some(user), remote, &result);
                result
            })
            .await
            .cloned();
        {
            let mut caches = self.caches();
            if caches
                .flights
                .get(&cache_key)
                .is_some_and(|f| Arc::ptr_eq(f, &flight))
            {
                caches.flights.remove(&cache_key);
            }
        }
        outcome?.ok_or(AuthnError::BadCredentials)
    }

    /// Looks the account up and verifies the password, within the verification budget.
    async fn verify_password_once(
        &self,
        user: &str,
        password: &str,
        cache_key: &str,
    ) -> Result<Option<Principal>, AuthnError> {
        let account = self.meta.account(user).await?;
        let hash = match &account {
            Some(a) if a.disabled => return Ok(None),
            Some(a) => match &a.password_hash {
                Some(h) => h.clone(),
                // Robots have no password.
                None => return Ok(None),
            },
            // Spend the same effort as a real check so timing does not reveal
            // which account names exist.
            None => DUMMY_HASH.to_owned(),
        };
        let ok = self.verify_bounded(password, hash).await?;
        let Some(account) = account.filter(|_| ok) else {
            return Ok(None);
        };
        let principal = self.principal_of(&account, None).await?;
        let mut caches = self.caches();
        if caches.basic.len() >= MAX_CACHED_CREDENTIALS {
            caches.basic.clear();
        }
        caches
            .basic
            .insert(cache_key.to_owned(), (Instant::now(), principal.clone()));
        drop(caches);
        Ok(Some(principal))
    }

    /// Verifies on the blocking pool, holding one of the verification slots.
    async fn verify_bounded(&self, password: &str, hash: String) -> Result<bool, AuthnError> {
        let overloaded = AuthnError::Overloaded {
            retry_after_secs: 1,
        };
        let permit = match tokio::time::timeout(
            self.settings.password_check_wait,
            self.password_checks.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) | Err(_) => {
                tracing::warn!("every password-verification slot is busy; answering 429");
                return Err(overloaded);
            }
        };
        let pw = password.to_owned();
        // The slot travels with the hashing itself: a client that hangs up
        // mid-verification does not free it while argon2 still runs.
        let ok = tokio_blocking(move || {
            let ok = verify_password(&pw, &hash);
            drop(permit);
            ok
        })
        .await;
        Ok(ok)
    }

    /// Forgets failed sign-ins in this process (see [`Throttle`]); returns how
    /// many throttle entries were cleared.
    pub fn unlock_local(&self, account: Option<&str>, address: Option<IpAddr>) -> usize {
        self.throttle.unlock(account, address)
    }

    /// Records an unlock that every server process on this database applies
    /// (within seconds, the next time it would throttle), and applies it here.
    pub async fn unlock(
        &self,
        account: Option<&str>,
        address: Option<IpAddr>,
    ) -> Result<usize, AuthnError> {
        crate::admin::record_unlock(&self.meta, account, address)
            .await
            .map_err(|e| match e {
                crate::admin::AdminError::Meta(m) => AuthnError::Meta(m),
                crate::admin::AdminError::Auth(a) => AuthnError::Auth(a),
                other => AuthnError::Auth(AuthError::Hashing(other.to_string())),
            })?;
        Ok(self.unlock_local(account, address))
    }

    /// Applies unlock requests recorded since the last look, at most every [`UNLOCK_POLL`].
    async fn apply_unlocks(&self) {
        let mut cursor = self.unlocks.lock().await;
        if cursor.polled.is_some_and(|t| t.elapsed() < UNLOCK_POLL) {
            return;
        }
        cursor.polled = Some(Instant::now());
        let records = match self.meta.unlocks_since(cursor.since).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read unlock requests");
                return;
            }
        };
        for r in records {
            if cursor.applied.contains(&r.id) {
                continue;
            }
            let account = (!r.account.is_empty()).then_some(r.account.as_str());
            let address = r.address.parse::<IpAddr>().ok();
            let cleared = self.throttle.unlock(account, address);
            tracing::info!(auth.user = account, client.addr = ?address, cleared, "applied an unlock request");
            if r.at > cursor.since {
                cursor.since = r.at;
                cursor.applied.clear();
            }
            cursor.applied.push(r.id);
        }
    }

    async fn api_token_principal(&self, presented: &str) -> Result<Option<Principal>, AuthnError> {
        let Some((id, secret)) = parse_api_token(presented) else {
            return Ok(None);
        };
        let Some(record) = self.meta.token(id).await? else {
            return Ok(None);
        };
        let now = wharf_meta::unix_now();
        let valid = constant_time_eq(
            token_digest(secret).as_bytes(),
            record.secret_sha256.as_bytes(),
        ) && record.revoked_at.is_none()
            && record.expires_at.is_none_or(|e| e > now);
        if !valid {
            return Ok(None);
        }
        let Some(account) = self
            .meta
            .account(&record.account)
            .await?
            .filter(|a| !a.disabled)
        else {
            return Ok(None);
        };
        let scopes = match parse_scopes(&record.scopes) {
            Ok(scopes) => scopes,
            Err(e) => {
                // Fail closed: a token whose limits cannot be read gets no rights,
                // never its account's full rights.
                tracing::error!(token.id = id, error = %e, "stored token scopes are unreadable; the token gets no rights");
                Some(Vec::new())
            }
        };
        Ok(Some(self.principal_of(&account, scopes).await?))
    }

    async fn principal_of(
        &self,
        account: &AccountRecord,
        token_scopes: Option<Vec<TokenScope>>,
    ) -> Result<Principal, MetaError> {
        Ok(Principal {
            account: Some(account.name.clone()),
            teams: self.meta.teams_of(&account.name).await?,
            is_admin: account.is_admin,
            token_scopes,
        })
    }

    /// The principal behind a registry token's subject, for listings that are
    /// filtered by the account's current rights rather than the token's claims.
    pub async fn principal_for(&self, identity: &Identity) -> Result<Principal, MetaError> {
        match identity {
            Identity::Anonymous => Ok(Principal::anonymous()),
            Identity::Account(p) => Ok(p.clone()),
            Identity::RegistryToken(c) => match self.meta.account(&c.sub).await? {
                Some(a) if !a.disabled => self.principal_of(&a, None).await,
                _ => Ok(Principal::anonymous()),
            },
        }
    }

    /// Everything `identity` may do on `resource`.
    ///
    /// A registry token carries its own decision, made when it was issued: its
    /// `repository` claims, for repositories only (names are one namespace
    /// across kinds, so a claim covers the name whatever its kind).
    pub async fn allowed(
        &self,
        identity: &Identity,
        resource: &Resource,
    ) -> Result<Actions, MetaError> {
        match identity {
            Identity::RegistryToken(claims) => {
                let Some(repo) = resource.repository_name() else {
                    return Ok(Actions::NONE);
                };
                Ok(claims
                    .access
                    .iter()
                    .filter(|a| a.kind == "repository" && a.name == repo)
                    .flat_map(|a| a.actions.iter())
                    .filter_map(|a| crate::access::Action::parse_many(a))
                    .fold(Actions::NONE, Actions::union))
            }
            Identity::Anonymous => Ok(allowed_actions(
                &Principal::anonymous(),
                &self.grants().await?,
                resource,
            )),
            Identity::Account(p) => Ok(allowed_actions(p, &self.grants().await?, resource)),
        }
    }

    /// The one question every surface asks: may `identity` do `action` on `resource`?
    pub async fn may(
        &self,
        identity: &Identity,
        action: Action,
        resource: &Resource,
    ) -> Result<bool, MetaError> {
        Ok(self.allowed(identity, resource).await?.contains(action))
    }

    /// Issues a registry token for the scopes the principal may have.
    pub async fn issue_token(
        &self,
        principal: &Principal,
        scopes: &[RequestedScope],
        offline: bool,
    ) -> Result<IssuedToken, AuthnError> {
        let grants = self.grants().await?;
        let mut access = Vec::new();
        for scope in scopes {
            let granted = match scope.kind.as_str() {
                "repository" => {
                    let requested = scope
                        .actions
                        .iter()
                        .filter_map(|a| crate::access::Action::parse_many(a))
                        .fold(Actions::NONE, Actions::union);
                    allowed_actions(
                        principal,
                        &grants,
                        &Resource::repository(RepositoryKind::Oci, scope.name.as_str()),
                    )
                    .intersect(requested)
                }
                // The catalog is filtered per repository; any signed-in principal may ask.
                "registry" if scope.name == "catalog" && !principal.is_anonymous() => Actions::ALL,
                _ => Actions::NONE,
            };
            let actions: Vec<String> = if scope.kind == "registry" {
                if granted.is_empty() {
                    vec![]
                } else {
                    vec!["*".to_owned()]
                }
            } else {
                granted.iter().map(|a| a.as_str().to_owned()).collect()
            };
            access.push(AccessEntry {
                kind: scope.kind.clone(),
                name: scope.name.clone(),
                actions,
            });
        }
        let key = self.current_key().await?;
        let now = wharf_meta::unix_now();
        let sub = principal.account.clone().unwrap_or_default();
        let claims = Claims {
            iss: self.settings.service.clone(),
            sub: sub.clone(),
            aud: self.settings.service.clone(),
            exp: now + self.settings.token_ttl.as_secs() as i64,
            iat: now,
            jti: random_hex(12)?,
            access,
            typ: "access".into(),
        };
        let refresh_token = if offline && !principal.is_anonymous() {
            let refresh = Claims {
                exp: now + self.settings.refresh_token_ttl.as_secs() as i64,
                jti: random_hex(12)?,
                access: Vec::new(),
                typ: "refresh".into(),
                ..claims.clone()
            };
            Some(token::sign(&refresh, &key))
        } else {
            None
        };
        Ok(IssuedToken {
            token: token::sign(&claims, &key),
            expires_in: self.settings.token_ttl.as_secs(),
            issued_at: now,
            refresh_token,
        })
    }

    /// Checks a refresh token and returns its account's current principal.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Principal, AuthnError> {
        let keys = self.signing_keys().await?;
        let claims = token::verify(
            refresh_token,
            &keys,
            &self.settings.service,
            wharf_meta::unix_now(),
        )
        .map_err(|_| AuthnError::BadCredentials)?;
        if claims.typ != "refresh" {
            return Err(AuthnError::BadCredentials);
        }
        match self.meta.account(&claims.sub).await? {
            Some(a) if !a.disabled => Ok(self.principal_of(&a, None).await?),
            _ => Err(AuthnError::BadCredentials),
        }
    }

    async fn grants(&self) -> Result<Arc<Vec<Grant>>, MetaError> {
        if let Some((at, g)) = &self.caches().grants {
            if at.elapsed() < GRANTS_TTL {
                return Ok(g.clone());
            }
        }
        let grants: Vec<Grant> = self
            .meta
            .grants()
            .await?
            .into_iter()
            .filter_map(|g| {
                let subject = match g.subject_kind {
                    GrantSubjectKind::Anonymous => Subject::Anonymous,
                    GrantSubjectKind::Account => Subject::Account(g.subject_name),
                    GrantSubjectKind::Team => Subject::Team(g.subject_name),
                };
                Some(Grant {
                    subject,
                    pattern: g.pattern,
                    actions: Actions::parse_list(&g.actions).ok()?,
                })
            })
            .collect();
        let grants = Arc::new(grants);
        self.caches().grants = Some((Instant::now(), grants.clone()));
        Ok(grants)
    }

    /// Forgets cached grants and credentials (after a change made by this process).
    pub fn invalidate(&self) {
        let mut caches = self.caches();
        caches.grants = None;
        caches.basic.clear();
        caches.keys = None;
    }

    async fn signing_keys(&self) -> Result<Arc<KeyRing>, AuthnError> {
        if let Some((at, k)) = &self.caches().keys {
            if at.elapsed() < KEYS_TTL {
                return Ok(k.clone());
            }
        }
        let mut records = self.meta.signing_keys().await?;
        if records.is_empty() {
            self.meta
                .rotate_signing_key(&random_hex(8)?, &random_hex(32)?)
                .await?;
            records = self.meta.signing_keys().await?;
        }
        let keys: KeyRing = records
            .into_iter()
            .filter_map(|r| {
                Some(SigningKey {
                    id: r.id,
                    secret: hex::decode(&r.secret).ok()?,
                })
            })
            .collect();
        let keys = Arc::new(keys);
        self.caches().keys = Some((Instant::now(), keys.clone()));
        Ok(keys)
    }

    async fn current_key(&self) -> Result<SigningKey, AuthnError> {
        let keys = self.signing_keys().await?;
        keys.first()
            .cloned()
            .ok_or(AuthnError::Auth(AuthError::InvalidToken("no signing key")))
    }
}

/// Splits `wharf_<id>_<secret>`.
pub fn parse_api_token(s: &str) -> Option<(&str, &str)> {
    let rest = s.strip_prefix(API_TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (!id.is_empty() && !secret.is_empty()).then_some((id, secret))
}

/// Token scopes stored as JSON `[{"pattern": "...", "actions": "pull,push"}]`;
/// an empty list means the account's full rights (`Ok(None)`). Anything
/// unreadable — bad JSON, a missing field, an invalid pattern or an unknown
/// action — is an error, so that callers can fail closed.
pub fn parse_scopes(json: &str) -> Result<Option<Vec<TokenScope>>, String> {
    let raw: Vec<HashMap<String, String>> =
        serde_json::from_str(json).map_err(|e| format!("not a scope list: {e}"))?;
    if raw.is_empty() {
        return Ok(None);
    }
    raw.into_iter()
        .map(|m| {
            let pattern = m.get("pattern").ok_or("a scope without a pattern")?;
            crate::glob::validate_pattern(pattern)?;
            let actions = m.get("actions").ok_or("a scope without actions")?;
            let actions =
                Actions::parse_list(actions).map_err(|a| format!("unknown action {a:?}"))?;
            if actions.is_empty() {
                return Err("a scope without actions".to_owned());
            }
            Ok(TokenScope {
                pattern: pattern.clone(),
                actions,
            })
        })
        .collect::<Result<Vec<_>, String>>()
        .map(Some)
}

/// Creates an API token for `account`; returns the record and the token string,
/// which is shown once and never stored.
pub fn new_api_token(
    account: &str,
    scopes: &[TokenScope],
    description: &str,
    expires_at: Option<i64>,
) -> Result<(TokenRecord, String), AuthError> {
    let id = random_hex(8)?;
    let secret = random_hex(24)?;
    let scopes_json = serde_json::to_string(
        &scopes
            .iter()
            .map(|s| {
                let mut m = HashMap::new();
                m.insert("pattern", s.pattern.clone());
                m.insert("actions", s.actions.to_list());
                m
            })
            .collect::<Vec<_>>(),
    )
    .unwrap_or_else(|_| "[]".into());
    let record = TokenRecord {
        id: id.clone(),
        account: account.to_owned(),
        secret_sha256: token_digest(&secret),
        scopes: scopes_json,
        description: description.to_owned(),
        created_at: wharf_meta::unix_now(),
        expires_at,
        revoked_at: None,
    };
    Ok((record, format!("{API_TOKEN_PREFIX}{id}_{secret}")))
}

/// A valid argon2id hash of a random password, verified against when the
/// account does not exist so that both paths cost the same.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0B9ZzmTjNJbDvMZzaqlqNXd4HSVgP8Nvj0hoA0m8Ea0";

async fn tokio_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    // Hashing takes tens of milliseconds: keep it off the async workers.
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

impl AuthService {
    /// Appends one record to the audit log.
    pub async fn audit(
        &self,
        account: Option<String>,
        remote: Option<String>,
        action: &str,
        resource: &str,
        outcome: wharf_meta::AuditOutcome,
    ) -> Result<(), AuthnError> {
        let record = wharf_meta::AuditRecord {
            at: wharf_meta::unix_now(),
            account,
            remote,
            action: action.to_owned(),
            resource: resource.to_owned(),
            outcome,
        };
        self.meta.audit(&random_hex(12)?, &record).await?;
        Ok(())
    }
}

impl AuthService {
    /// The identity of an account proven by other means than a password — a
    /// client certificate verified by the TLS layer. Unknown or disabled
    /// accounts are refused like a wrong password.
    pub async fn authenticate_account(&self, name: &str) -> Result<Identity, AuthnError> {
        match self.meta.account(name).await? {
            Some(account) if !account.disabled => {
                Ok(Identity::Account(self.principal_of(&account, None).await?))
            }
            _ => {
                tracing::warn!(
                    auth.user = name,
                    "client certificate names no usable account"
                );
                Err(AuthnError::BadCredentials)
            }
        }
    }
}

impl AuthService {
    /// The metadata database behind this service (for the management API).
    pub fn meta(&self) -> &Meta {
        &self.meta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_scopes_are_validated_before_matching() {
        let s = RequestedScope::parse("repository:team/app:pull,push").unwrap();
        assert_eq!(
            (s.kind.as_str(), s.name.as_str()),
            ("repository", "team/app")
        );
        assert_eq!(s.actions, ["pull", "push"]);
        assert!(RequestedScope::parse("repository:team/app:*").is_some());
        assert!(RequestedScope::parse("registry:catalog:*").is_some());
        for bad in [
            "repository:Team/App:pull",
            "repository:team//x:pull",
            "repository:../etc:pull",
            "repository:team/**:pull",
            "repository:team/app:fly",
            "repository::pull",
            "registry:other:*",
            "weird:thing:pull",
            "nocolon",
        ] {
            assert!(RequestedScope::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn unreadable_stored_scopes_are_errors_not_full_rights() {
        assert_eq!(parse_scopes("[]"), Ok(None));
        let ok = parse_scopes(r#"[{"pattern":"ci/**","actions":"pull,push"}]"#)
            .unwrap()
            .unwrap();
        assert_eq!(ok[0].pattern, "ci/**");
        for bad in [
            "not json",
            r#"[{"pattern":"ci/**"}]"#,
            r#"[{"pattern":"ci/**","actions":"fly"}]"#,
            r#"[{"pattern":"Team//x","actions":"pull"}]"#,
            r#"[{"pattern":"ci/**","actions":""}]"#,
        ] {
            assert!(parse_scopes(bad).is_err(), "{bad}");
        }
    }
}
