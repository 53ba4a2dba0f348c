//! Account, team, grant and token management: the operations behind both the
//! `wharf user|team|grant|token` commands and the `/api/v1` management API, so
//! the two can never disagree on validation.

use wharf_meta::{
    AccountKind, AccountRecord, GrantOrigin, GrantRecord, GrantSubjectKind, Meta, MetaError,
    TokenRecord,
};

use crate::access::{Action, Actions, TokenScope};
use crate::secret::{hash_password, random_hex};
use crate::AuthError;

/// Why a management operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The input is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The thing already exists.
    #[error("{0}")]
    Conflict(String),
    /// The thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The database failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// Hashing or randomness failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// Checks an account or team name: 1-64 of `A-Z a-z 0-9 . _ - @`, not
/// starting with `-` or `.`.
pub fn validate_name(name: &str) -> Result<(), AdminError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['-', '.'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(AdminError::Invalid(format!(
            "invalid name {name:?}: use 1-64 of A-Z a-z 0-9 . _ - @, not starting with - or ."
        )))
    }
}

/// Hashes a new password on the blocking pool: argon2id takes tens of
/// milliseconds and 19 MiB, which must not stall an async worker.
pub async fn hash_blocking(password: String) -> Result<String, AdminError> {
    match tokio::task::spawn_blocking(move || hash_password(&password)).await {
        Ok(hash) => Ok(hash?),
        Err(e) => Err(AdminError::Auth(AuthError::Hashing(format!(
            "hashing task failed: {e}"
        )))),
    }
}

/// A new random password: 24 hex characters, 96 bits.
pub fn generate_password() -> Result<String, AdminError> {
    Ok(random_hex(12)?)
}

/// Creates a user (with `password`, or a generated one that is returned) or a
/// robot (no password). Returns the generated password, if any.
pub async fn add_account(
    meta: &Meta,
    name: &str,
    password: Option<&str>,
    admin: bool,
    robot: bool,
) -> Result<Option<String>, AdminError> {
    validate_name(name)?;
    if robot && password.is_some() {
        return Err(AdminError::Invalid(
            "robots have no password; they use tokens".into(),
        ));
    }
    let (hash, generated) = if robot {
        (None, None)
    } else {
        let (pw, generated) = match password {
            Some(pw) => (pw.to_owned(), None),
            None => {
                let pw = generate_password()?;
                (pw.clone(), Some(pw))
            }
        };
        if pw.is_empty() {
            return Err(AdminError::Invalid("empty password".into()));
        }
        (Some(hash_blocking(pw).await?), generated)
    };
    let kind = if robot {
        AccountKind::Robot
    } else {
        AccountKind::User
    };
    if !meta
        .create_account(name, kind, hash.as_deref(), admin)
        .await?
    {
        return Err(AdminError::Conflict(format!(
            "an account named {name:?} already exists"
        )));
    }
    Ok(generated)
}

/// Replaces a user's password.
pub async fn set_password(meta: &Meta, name: &str, password: &str) -> Result<(), AdminError> {
    if password.is_empty() {
        return Err(AdminError::Invalid("empty password".into()));
    }
    match meta.account(name).await? {
        Some(a) if a.kind == AccountKind::Robot => Err(AdminError::Invalid(format!(
            "{name:?} is a robot; robots use tokens"
        ))),
        Some(_) => {
            meta.set_password(name, &hash_blocking(password.to_owned()).await?)
                .await?;
            Ok(())
        }
        None => Err(AdminError::NotFound(format!("no account named {name:?}"))),
    }
}

/// Deletes an account with its tokens, memberships and grants.
pub async fn delete_account(meta: &Meta, name: &str) -> Result<(), AdminError> {
    if meta.delete_account(name).await? {
        Ok(())
    } else {
        Err(AdminError::NotFound(format!("no account named {name:?}")))
    }
}

/// Every account.
pub async fn accounts(meta: &Meta) -> Result<Vec<AccountRecord>, AdminError> {
    Ok(meta.accounts().await?)
}

/// Creates a team.
pub async fn add_team(meta: &Meta, name: &str) -> Result<(), AdminError> {
    validate_name(name)?;
    if meta.create_team(name).await? {
        Ok(())
    } else {
        Err(AdminError::Conflict(format!(
            "a team named {name:?} already exists"
        )))
    }
}

/// Deletes a team with its grants.
pub async fn delete_team(meta: &Meta, name: &str) -> Result<(), AdminError> {
    if meta.delete_team(name).await? {
        Ok(())
    } else {
        Err(AdminError::NotFound(format!("no team named {name:?}")))
    }
}

/// Adds (`member = true`) or removes an account from a team.
pub async fn set_membership(
    meta: &Meta,
    team: &str,
    account: &str,
    member: bool,
) -> Result<(), AdminError> {
    if meta.set_membership(team, account, member).await? {
        Ok(())
    } else if member {
        Err(AdminError::NotFound(format!(
            "no team {team:?} or no account {account:?}"
        )))
    } else {
        Err(AdminError::NotFound(format!(
            "{account:?} is not a member of {team:?}"
        )))
    }
}

/// Splits a grant subject (`anonymous`, `user:NAME`, `team:NAME`) into its
/// stored kind and name.
pub fn parse_subject(subject: &str) -> Result<(GrantSubjectKind, String), AdminError> {
    if subject == "anonymous" {
        return Ok((GrantSubjectKind::Anonymous, String::new()));
    }
    if let Some(n) = subject.strip_prefix("user:").filter(|n| !n.is_empty()) {
        return Ok((GrantSubjectKind::Account, n.to_owned()));
    }
    if let Some(n) = subject.strip_prefix("team:").filter(|n| !n.is_empty()) {
        return Ok((GrantSubjectKind::Team, n.to_owned()));
    }
    Err(AdminError::Invalid(format!(
        "subject {subject:?} must be anonymous, user:NAME or team:NAME"
    )))
}

/// The subject of a stored grant, as written in configuration and commands.
pub fn subject_string(g: &GrantRecord) -> String {
    match g.subject_kind {
        GrantSubjectKind::Anonymous => "anonymous".into(),
        GrantSubjectKind::Account => format!("user:{}", g.subject_name),
        GrantSubjectKind::Team => format!("team:{}", g.subject_name),
    }
}

/// Parses a grant's actions: `pull`, `push`, `delete`, `admin`, comma-separated.
/// (Docker's `*` belongs to token scopes, not to grants.)
pub fn parse_grant_actions(actions: &str) -> Result<Actions, AdminError> {
    let mut parsed = Actions::NONE;
    for a in actions.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        match a {
            "pull" | "push" | "delete" | "admin" => {
                parsed = parsed.union(Action::parse_many(a).unwrap_or(Actions::NONE));
            }
            other => {
                return Err(AdminError::Invalid(format!(
                    "unknown action {other:?}: use pull, push, delete or admin"
                )))
            }
        }
    }
    if parsed.is_empty() {
        return Err(AdminError::Invalid(
            "a grant needs at least one action".into(),
        ));
    }
    Ok(parsed)
}

/// Builds a validated grant record: the one
/// implementation of the grant grammar, whatever surface the grant comes from.
/// Whether the subject exists is checked by [`add_grant`] (the configuration
/// may name accounts that are created later).
pub fn grant_record(
    id: String,
    subject: &str,
    pattern: &str,
    actions: &str,
    origin: GrantOrigin,
) -> Result<GrantRecord, AdminError> {
    let (kind, name) = parse_subject(subject)?;
    if kind != GrantSubjectKind::Anonymous {
        validate_name(&name)?;
    }
    crate::glob::validate_pattern(pattern).map_err(AdminError::Invalid)?;
    let parsed = parse_grant_actions(actions)?;
    if kind == GrantSubjectKind::Anonymous && parsed != Actions::of(Action::Pull) {
        return Err(AdminError::Invalid("anonymous may only pull".into()));
    }
    Ok(GrantRecord {
        id,
        subject_kind: kind,
        subject_name: name,
        pattern: pattern.to_owned(),
        actions: parsed.to_list(),
        origin,
    })
}

/// Whether the subject of `record` exists (anonymous always does).
pub async fn subject_exists(meta: &Meta, record: &GrantRecord) -> Result<bool, AdminError> {
    Ok(match record.subject_kind {
        GrantSubjectKind::Account => meta.account(&record.subject_name).await?.is_some(),
        GrantSubjectKind::Team => meta
            .teams()
            .await?
            .iter()
            .any(|(t, _)| *t == record.subject_name),
        GrantSubjectKind::Anonymous => true,
    })
}

/// Adds a grant; returns its id. The subject must exist.
pub async fn add_grant(
    meta: &Meta,
    subject: &str,
    pattern: &str,
    actions: &str,
) -> Result<String, AdminError> {
    let id = format!("g{}", random_hex(6)?);
    let record = grant_record(id.clone(), subject, pattern, actions, GrantOrigin::Api)?;
    if !subject_exists(meta, &record).await? {
        let what = if record.subject_kind == GrantSubjectKind::Team {
            "team"
        } else {
            "account"
        };
        return Err(AdminError::NotFound(format!(
            "no {what} named {:?}; create it first",
            record.subject_name
        )));
    }
    meta.add_grant(&record).await?;
    Ok(id)
}

/// Records a request to forget failed sign-ins of `account` and/or from
/// `address` (both `None`: all of them), which every server process on this
/// database applies the next time it would throttle.
pub async fn record_unlock(
    meta: &Meta,
    account: Option<&str>,
    address: Option<std::net::IpAddr>,
) -> Result<(), AdminError> {
    if let Some(account) = account {
        validate_name(account)?;
    }
    let record = wharf_meta::UnlockRecord {
        id: random_hex(12)?,
        account: account.unwrap_or_default().to_owned(),
        address: address.map(|a| a.to_string()).unwrap_or_default(),
        at: wharf_meta::unix_now(),
    };
    meta.record_unlock(&record).await?;
    Ok(())
}

/// Removes a grant.
pub async fn remove_grant(meta: &Meta, id: &str) -> Result<(), AdminError> {
    if meta.remove_grant(id).await? {
        Ok(())
    } else {
        Err(AdminError::NotFound(format!("no grant with id {id:?}")))
    }
}

/// Parses `PATTERN:ACTIONS` token scopes.
pub fn parse_token_scopes(scopes: &[(String, String)]) -> Result<Vec<TokenScope>, AdminError> {
    scopes
        .iter()
        .map(|(pattern, actions)| {
            crate::glob::validate_pattern(pattern).map_err(AdminError::Invalid)?;
            let actions = Actions::parse_list(actions).map_err(|a| {
                AdminError::Invalid(format!("scope {pattern:?}: unknown action {a:?}"))
            })?;
            if actions.is_empty() {
                return Err(AdminError::Invalid(format!(
                    "scope {pattern:?} needs a pattern and actions"
                )));
            }
            Ok(TokenScope {
                pattern: pattern.clone(),
                actions,
            })
        })
        .collect()
}

/// Creates an API token for `account`; returns the record and the token string
/// (shown once, never stored).
pub async fn create_token(
    meta: &Meta,
    account: &str,
    scopes: &[TokenScope],
    description: &str,
    expires_in_secs: Option<u64>,
) -> Result<(TokenRecord, String), AdminError> {
    if meta.account(account).await?.is_none() {
        return Err(AdminError::NotFound(format!(
            "no account named {account:?}"
        )));
    }
    let expires_at = expires_in_secs.map(|s| wharf_meta::unix_now() + s as i64);
    let (record, secret) = crate::new_api_token(account, scopes, description, expires_at)?;
    meta.create_token(&record).await?;
    Ok((record, secret))
}

/// Revokes a token.
pub async fn revoke_token(meta: &Meta, id: &str) -> Result<(), AdminError> {
    if meta.revoke_token(id).await? {
        Ok(())
    } else {
        Err(AdminError::NotFound(format!(
            "no active token with id {id:?}"
        )))
    }
}
