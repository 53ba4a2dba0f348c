//! [`AuthService`]: credentials in, a decision out, backed by the metadata database.
//!
//! Caches keep the hot path cheap without weakening anything: verified
//! password credentials are remembered for a minute by a SHA-256 of the
//! credential pair (argon2id is deliberately slow and clients resend Basic
//! credentials on every request); grants and signing keys are re-read every few
//! seconds, so a change made through another replica takes effect promptly.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wharf_meta::{AccountRecord, Meta, MetaError, TokenRecord};

use crate::access::{allowed_actions, Actions, Grant, Principal, Subject, TokenScope};
use crate::secret::{constant_time_eq, random_hex, token_digest, verify_password};
use crate::token::{self, AccessEntry, Claims, SigningKey};
use crate::AuthError;

const GRANTS_TTL: Duration = Duration::from_secs(3);
const KEYS_TTL: Duration = Duration::from_secs(10);
const BASIC_CACHE_TTL: Duration = Duration::from_secs(60);
/// Accounts and addresses with recent failures tracked before stale ones are pruned.
const MAX_TRACKED_FAILURE_KEYS: usize = 100_000;
/// Verified credentials remembered before the cache starts over.
const MAX_CACHED_CREDENTIALS: usize = 10_000;
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
    /// Failed sign-ins allowed per account and per client address within `failure_window`.
    pub max_failed_logins: u32,
    /// Window of the failure count.
    pub failure_window: Duration,
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
    /// Parses one scope; `None` if malformed.
    pub fn parse(s: &str) -> Option<RequestedScope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        Some(RequestedScope {
            kind: kind.to_owned(),
            name: name.to_owned(),
            actions: actions
                .split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect(),
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

#[derive(Default)]
struct Caches {
    grants: Option<(Instant, Arc<Vec<Grant>>)>,
    keys: Option<(Instant, Arc<KeyRing>)>,
    basic: HashMap<String, (Instant, Principal)>,
    failures: HashMap<String, Vec<Instant>>,
}

/// The authentication and authorization service.
pub struct AuthService {
    meta: Meta,
    settings: AuthSettings,
    caches: Mutex<Caches>,
}

impl AuthService {
    /// A service over `meta`.
    pub fn new(meta: Meta, settings: AuthSettings) -> AuthService {
        AuthService {
            meta,
            settings,
            caches: Mutex::new(Caches::default()),
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
            Credentials::Bearer(t) if t.starts_with(API_TOKEN_PREFIX) => self
                .guarded("", remote, self.api_token_principal(t))
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
                        .guarded(user, remote, self.api_token_principal(password))
                        .await?;
                    if p.account.as_deref() != Some(user.as_str()) {
                        return Err(AuthnError::BadCredentials);
                    }
                    p
                } else {
                    self.guarded(user, remote, self.password_principal(user, password))
                        .await?
                };
                Ok(Identity::Account(principal))
            }
        }
    }

    /// Runs a credential check under the failed-login rate limit.
    async fn guarded(
        &self,
        user: &str,
        remote: Option<IpAddr>,
        check: impl std::future::Future<Output = Result<Option<Principal>, AuthnError>>,
    ) -> Result<Principal, AuthnError> {
        let keys = [
            format!("user:{user}"),
            format!("ip:{}", remote.map(|r| r.to_string()).unwrap_or_default()),
        ];
        let now = Instant::now();
        {
            let mut caches = self.caches();
            let window = self.settings.failure_window;
            for key in &keys {
                let list = caches.failures.entry(key.clone()).or_default();
                list.retain(|t| now.duration_since(*t) < window);
                if list.len() as u32 >= self.settings.max_failed_logins {
                    let oldest = list.first().copied().unwrap_or(now);
                    let retry = window
                        .saturating_sub(now.duration_since(oldest))
                        .as_secs()
                        .max(1);
                    return Err(AuthnError::RateLimited {
                        retry_after_secs: retry,
                    });
                }
            }
        }
        match check.await? {
            Some(p) => Ok(p),
            None => {
                let mut caches = self.caches();
                if caches.failures.len() >= MAX_TRACKED_FAILURE_KEYS {
                    // Bound the memory an attacker spraying names or addresses can
                    // make us hold: forget keys whose failures are out of the window.
                    let window = self.settings.failure_window;
                    caches.failures.retain(|_, list| {
                        list.last().is_some_and(|t| now.duration_since(*t) < window)
                    });
                }
                for key in keys {
                    caches.failures.entry(key).or_default().push(now);
                }
                tracing::warn!(auth.user = user, client.addr = ?remote, "failed sign-in");
                Err(AuthnError::BadCredentials)
            }
        }
    }

    async fn password_principal(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Option<Principal>, AuthnError> {
        let cache_key = token_digest(&format!("{}\0{password}", user.len()))
            + &token_digest(&format!("{user}\0{password}"));
        if let Some((at, p)) = self.caches().basic.get(&cache_key) {
            if at.elapsed() < BASIC_CACHE_TTL {
                return Ok(Some(p.clone()));
            }
        }
        let Some(account) = self.meta.account(user).await? else {
            // Spend the same effort as a real check so timing does not reveal
            // which account names exist.
            let _ = verify_password(password, DUMMY_HASH);
            return Ok(None);
        };
        let Some(hash) = account.password_hash.clone().filter(|_| !account.disabled) else {
            return Ok(None);
        };
        let pw = password.to_owned();
        let ok = tokio_blocking(move || verify_password(&pw, &hash)).await;
        if !ok {
            return Ok(None);
        }
        let principal = self.principal_of(&account, None).await?;
        let mut caches = self.caches();
        if caches.basic.len() >= MAX_CACHED_CREDENTIALS {
            caches.basic.clear();
        }
        caches
            .basic
            .insert(cache_key, (Instant::now(), principal.clone()));
        drop(caches);
        Ok(Some(principal))
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
        let scopes = parse_scopes(&record.scopes);
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

    /// Everything `identity` may do on `repo`.
    pub async fn allowed(&self, identity: &Identity, repo: &str) -> Result<Actions, MetaError> {
        match identity {
            Identity::RegistryToken(claims) => Ok(claims
                .access
                .iter()
                .filter(|a| a.kind == "repository" && a.name == repo)
                .flat_map(|a| a.actions.iter())
                .filter_map(|a| crate::access::Action::parse_many(a))
                .fold(Actions::NONE, Actions::union)),
            Identity::Anonymous => Ok(allowed_actions(
                &Principal::anonymous(),
                &self.grants().await?,
                repo,
            )),
            Identity::Account(p) => Ok(allowed_actions(p, &self.grants().await?, repo)),
        }
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
                    allowed_actions(principal, &grants, &scope.name).intersect(requested)
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
                let subject = match g.subject_kind.as_str() {
                    "anonymous" => Subject::Anonymous,
                    "account" => Subject::Account(g.subject_name),
                    "team" => Subject::Team(g.subject_name),
                    _ => return None,
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
/// an empty list means the account's full rights.
pub fn parse_scopes(json: &str) -> Option<Vec<TokenScope>> {
    let raw: Vec<HashMap<String, String>> = serde_json::from_str(json).ok()?;
    if raw.is_empty() {
        return None;
    }
    Some(
        raw.into_iter()
            .filter_map(|m| {
                Some(TokenScope {
                    pattern: m.get("pattern")?.clone(),
                    actions: Actions::parse_list(m.get("actions")?).ok()?,
                })
            })
            .collect(),
    )
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
        outcome: &str,
    ) -> Result<(), AuthnError> {
        let record = wharf_meta::AuditRecord {
            at: wharf_meta::unix_now(),
            account,
            remote,
            action: action.to_owned(),
            resource: resource.to_owned(),
            outcome: outcome.to_owned(),
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
