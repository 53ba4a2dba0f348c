//! Accounts (users and robots), teams, grants, API tokens, signing keys and the
//! audit log. Hashing and permission evaluation live in `wharf-auth`; this
//! module only stores and fetches.

use sqlx::Row;

use crate::{unix_now, Meta, MetaError};

/// Declares a stored enum: its variants, their stored names, and parsing that
/// calls an unknown stored name what it is (a hand-edited database).
macro_rules! stored_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// The name as stored and shown.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Parses a stored or typed name.
            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }

            fn from_stored(s: &str) -> Result<$name, MetaError> {
                $name::parse(s).ok_or_else(|| {
                    MetaError::Corrupt(format!("stored {} {s:?}", stringify!($name)))
                })
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}

stored_enum! {
    /// How an account signs in.
    AccountKind {
        /// A person: signs in with a password (or tokens).
        User => "user",
        /// A machine: API tokens only.
        Robot => "robot",
    }
}

stored_enum! {
    /// Whom a grant is for.
    GrantSubjectKind {
        /// Every unauthenticated client.
        Anonymous => "anonymous",
        /// One account.
        Account => "account",
        /// Every member of a team.
        Team => "team",
    }
}

stored_enum! {
    /// Where a grant came from.
    GrantOrigin {
        /// The configuration file: replaced on every start.
        Config => "config",
        /// The CLI or the management API: kept until removed.
        Api => "api",
    }
}

stored_enum! {
    /// How an audited action ended.
    AuditOutcome {
        /// Done.
        Ok => "ok",
        /// Refused by authorization.
        Denied => "denied",
        /// Allowed, but it failed (bad input, a server fault).
        Failed => "failed",
    }
}

/// An account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    /// Unique name.
    pub name: String,
    /// How it signs in.
    pub kind: AccountKind,
    /// argon2id or bcrypt hash; robots have none.
    pub password_hash: Option<String>,
    /// Server administrator.
    pub is_admin: bool,
    /// Disabled accounts cannot sign in.
    pub disabled: bool,
}

/// A grant as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    /// Stable id.
    pub id: String,
    /// Whom it is for.
    pub subject_kind: GrantSubjectKind,
    /// Account or team name; empty for anonymous.
    pub subject_name: String,
    /// Repository pattern.
    pub pattern: String,
    /// Comma-separated actions.
    pub actions: String,
    /// Where it came from.
    pub origin: GrantOrigin,
}

/// An API token as stored (the secret itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Public id, part of the token string.
    pub id: String,
    /// Owning account.
    pub account: String,
    /// SHA-256 of the secret part, hex.
    pub secret_sha256: String,
    /// Scopes as JSON text (`[{"pattern":…,"actions":…}]`); empty list = the account's rights.
    pub scopes: String,
    /// Free text.
    pub description: String,
    /// Creation time.
    pub created_at: i64,
    /// Expiry, if any.
    pub expires_at: Option<i64>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<i64>,
}

/// A token-signing key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    /// Key id.
    pub id: String,
    /// Hex secret.
    pub secret: String,
    /// Creation time.
    pub created_at: i64,
    /// When it stopped signing; it still verifies until tokens signed by it expire.
    pub retired_at: Option<i64>,
}

/// One audited action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// When.
    pub at: i64,
    /// Who (None = anonymous).
    pub account: Option<String>,
    /// Client address.
    pub remote: Option<String>,
    /// What, e.g. `push`, `delete`, `user.add`.
    pub action: String,
    /// On what, e.g. a repository and reference.
    pub resource: String,
    /// How it ended.
    pub outcome: AuditOutcome,
}

/// A request to forget failed sign-ins, made by `wharf auth unlock` or the
/// management API and picked up by every server process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnlockRecord {
    /// Unique id.
    pub id: String,
    /// The account whose failures are forgotten; empty: every account.
    pub account: String,
    /// The client address whose failures are forgotten; empty: every address.
    pub address: String,
    /// When, unix seconds.
    pub at: i64,
}

fn account(r: &sqlx::any::AnyRow) -> Result<AccountRecord, MetaError> {
    Ok(AccountRecord {
        name: r.try_get(0)?,
        kind: AccountKind::from_stored(&r.try_get::<String, _>(1)?)?,
        password_hash: r.try_get(2)?,
        is_admin: r.try_get::<i64, _>(3)? != 0,
        disabled: r.try_get::<i64, _>(4)? != 0,
    })
}

fn token(r: &sqlx::any::AnyRow) -> Result<TokenRecord, MetaError> {
    Ok(TokenRecord {
        id: r.try_get(0)?,
        account: r.try_get(1)?,
        secret_sha256: r.try_get(2)?,
        scopes: r.try_get(3)?,
        description: r.try_get(4)?,
        created_at: r.try_get(5)?,
        expires_at: r.try_get(6)?,
        revoked_at: r.try_get(7)?,
    })
}

const ACCOUNT_COLS: &str = "name, kind, password_hash, is_admin, disabled";
const TOKEN_COLS: &str =
    "id, account, secret_sha256, scopes, description, created_at, expires_at, revoked_at";

impl Meta {
    /// Creates an account; returns false if the name is taken.
    pub async fn create_account(
        &self,
        name: &str,
        kind: AccountKind,
        password_hash: Option<&str>,
        is_admin: bool,
    ) -> Result<bool, MetaError> {
        let mut tx = self.write_tx().await?;
        let res = sqlx::query(
            "INSERT INTO accounts (name, kind, password_hash, is_admin, disabled, created_at) \
             VALUES ($1, $2, $3, $4, 0, $5) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(kind.as_str())
        .bind(password_hash.map(str::to_owned))
        .bind(is_admin as i64)
        .bind(unix_now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(res.rows_affected() > 0)
    }

    /// One account.
    pub async fn account(&self, name: &str) -> Result<Option<AccountRecord>, MetaError> {
        let row = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLS} FROM accounts WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| account(&r)).transpose()
    }

    /// Every account, by name.
    pub async fn accounts(&self) -> Result<Vec<AccountRecord>, MetaError> {
        let rows = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLS} FROM accounts ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(account).collect()
    }

    /// Whether any enabled administrator exists.
    pub async fn has_admin(&self) -> Result<bool, MetaError> {
        Ok(
            sqlx::query("SELECT 1 FROM accounts WHERE is_admin = 1 AND disabled = 0")
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// Replaces an account's password hash; false if there is no such account.
    pub async fn set_password(&self, name: &str, hash: &str) -> Result<bool, MetaError> {
        let mut tx = self.write_tx().await?;
        let res = sqlx::query("UPDATE accounts SET password_hash = $1 WHERE name = $2")
            .bind(hash)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(res.rows_affected() > 0)
    }

    /// Deletes an account with its memberships, grants and tokens.
    pub async fn delete_account(&self, name: &str) -> Result<bool, MetaError> {
        let mut tx = self.write_tx().await?;
        let res = sqlx::query("DELETE FROM accounts WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        for statement in [
            "DELETE FROM team_members WHERE account = $1",
            "DELETE FROM grants WHERE subject_kind = 'account' AND subject_name = $1",
            "DELETE FROM api_tokens WHERE account = $1",
        ] {
            sqlx::query(statement).bind(name).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(res.rows_affected() > 0)
    }

    /// Creates a team; false if it exists.
    pub async fn create_team(&self, name: &str) -> Result<bool, MetaError> {
        let mut tx = self.write_tx().await?;
        let res = sqlx::query(
            "INSERT INTO teams (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(unix_now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(res.rows_affected() > 0)
    }

    /// Deletes a team with its memberships and grants.
    pub async fn delete_team(&self, name: &str) -> Result<bool, MetaError> {
        let mut tx = self.write_tx().await?;
        let res = sqlx::query("DELETE FROM teams WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        for statement in [
            "DELETE FROM team_members WHERE team = $1",
            "DELETE FROM grants WHERE subject_kind = 'team' AND subject_name = $1",
        ] {
            sqlx::query(statement).bind(name).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(res.rows_affected() > 0)
    }

    /// Every team with its members.
    pub async fn teams(&self) -> Result<Vec<(String, Vec<String>)>, MetaError> {
        let teams = sqlx::query("SELECT name FROM teams ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        let mut res = Vec::new();
        for t in teams {
            let name: String = t.try_get(0)?;
            let members =
                sqlx::query("SELECT account FROM team_members WHERE team = $1 ORDER BY account")
                    .bind(&name)
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(|r| r.try_get::<String, _>(0))
                    .collect::<Result<Vec<_>, _>>()?;
            res.push((name, members));
        }
        Ok(res)
    }

    /// Adds or removes a team member; false when the team or account is unknown
    /// (add) or the membership did not exist (remove).
    pub async fn set_membership(
        &self,
        team: &str,
        account: &str,
        member: bool,
    ) -> Result<bool, MetaError> {
        let mut tx = self.write_tx().await?;
        let changed = if member {
            let team_exists = sqlx::query("SELECT 1 FROM teams WHERE name = $1")
                .bind(team)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            let account_exists = sqlx::query("SELECT 1 FROM accounts WHERE name = $1")
                .bind(account)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            if !(team_exists && account_exists) {
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO team_members (team, account) VALUES ($1, $2) ON CONFLICT (team, account) DO NOTHING",
            )
            .bind(team)
            .bind(account)
            .execute(&mut *tx)
            .await?;
            true
        } else {
            sqlx::query("DELETE FROM team_members WHERE team = $1 AND account = $2")
                .bind(team)
                .bind(account)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                > 0
        };
        tx.commit().await?;
        Ok(changed)
    }

    /// Teams an account belongs to.
    pub async fn teams_of(&self, account: &str) -> Result<Vec<String>, MetaError> {
        sqlx::query("SELECT team FROM team_members WHERE account = $1 ORDER BY team")
            .bind(account)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>(0).map_err(MetaError::from))
            .collect()
    }

    /// Every grant.
    pub async fn grants(&self) -> Result<Vec<GrantRecord>, MetaError> {
        let rows = sqlx::query(
            "SELECT id, subject_kind, subject_name, pattern, actions, origin FROM grants ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(GrantRecord {
                    id: r.try_get(0)?,
                    subject_kind: GrantSubjectKind::from_stored(&r.try_get::<String, _>(1)?)?,
                    subject_name: r.try_get(2)?,
                    pattern: r.try_get(3)?,
                    actions: r.try_get(4)?,
                    origin: GrantOrigin::from_stored(&r.try_get::<String, _>(5)?)?,
                })
            })
            .collect()
    }

    /// Adds one grant.
    pub async fn add_grant(&self, g: &GrantRecord) -> Result<(), MetaError> {
        let mut tx = self.write_tx().await?;
        insert_grant(&mut tx, g).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes one grant by id.
    pub async fn remove_grant(&self, id: &str) -> Result<bool, MetaError> {
        let mut tx = self.write_tx().await?;
        let res = sqlx::query("DELETE FROM grants WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(res.rows_affected() > 0)
    }

    /// Replaces every grant declared in the configuration file, in one transaction.
    pub async fn replace_config_grants(&self, grants: &[GrantRecord]) -> Result<(), MetaError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM grants WHERE origin = 'config'")
            .execute(&mut *tx)
            .await?;
        for g in grants {
            insert_grant(&mut tx, g).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Stores a new API token.
    pub async fn create_token(&self, t: &TokenRecord) -> Result<(), MetaError> {
        let mut tx = self.write_tx().await?;
        sqlx::query(&format!(
            "INSERT INTO api_tokens ({TOKEN_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(&t.id)
        .bind(&t.account)
        .bind(&t.secret_sha256)
        .bind(&t.scopes)
        .bind(&t.description)
        .bind(t.created_at)
        .bind(t.expires_at)
        .bind(t.revoked_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// One API token by id.
    pub async fn token(&self, id: &str) -> Result<Option<TokenRecord>, MetaError> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLS} FROM api_tokens WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| token(&r)).transpose()
    }

    /// API tokens, of one account or all.
    pub async fn tokens(&self, account: Option<&str>) -> Result<Vec<TokenRecord>, MetaError> {
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLS} FROM api_tokens WHERE ($1 = '' OR account = $1) ORDER BY created_at, id"
        ))
        .bind(account.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(token).collect()
    }

    /// Revokes a token; false if unknown or already revoked.
    pub async fn revoke_token(&self, id: &str) -> Result<bool, MetaError> {
        let mut tx = self.write_tx().await?;
        let res = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(unix_now())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(res.rows_affected() > 0)
    }

    /// Every signing key: the active one first, then the retired ones, newest first.
    pub async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, MetaError> {
        let rows = sqlx::query(
            "SELECT id, secret, created_at, retired_at FROM signing_keys \
             ORDER BY CASE WHEN retired_at IS NULL THEN 0 ELSE 1 END, created_at DESC, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SigningKeyRecord {
                    id: r.try_get(0)?,
                    secret: r.try_get(1)?,
                    created_at: r.try_get(2)?,
                    retired_at: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// Adds a signing key and retires the others, in one transaction.
    pub async fn rotate_signing_key(&self, id: &str, secret: &str) -> Result<(), MetaError> {
        let now = unix_now();
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO signing_keys (id, secret, created_at) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(secret)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Appends to the audit log.
    pub async fn audit(&self, id: &str, r: &AuditRecord) -> Result<(), MetaError> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO audit_log (id, at, account, remote, action, resource, outcome) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(r.at)
        .bind(r.account.clone())
        .bind(r.remote.clone())
        .bind(&r.action)
        .bind(&r.resource)
        .bind(r.outcome.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records an unlock request.
    pub async fn record_unlock(&self, u: &UnlockRecord) -> Result<(), MetaError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("INSERT INTO auth_unlocks (id, account, address, at) VALUES ($1, $2, $3, $4)")
            .bind(&u.id)
            .bind(&u.account)
            .bind(&u.address)
            .bind(u.at)
            .execute(&mut *tx)
            .await?;
        // Requests older than a day can no longer matter to any throttle window.
        sqlx::query("DELETE FROM auth_unlocks WHERE at < $1")
            .bind(u.at - 86_400)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Unlock requests made at or after `since` (unix seconds), oldest first.
    pub async fn unlocks_since(&self, since: i64) -> Result<Vec<UnlockRecord>, MetaError> {
        let rows = sqlx::query(
            "SELECT id, account, address, at FROM auth_unlocks WHERE at >= $1 ORDER BY at, id",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UnlockRecord {
                    id: r.try_get(0)?,
                    account: r.try_get(1)?,
                    address: r.try_get(2)?,
                    at: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// The newest audit entries, newest first.
    pub async fn audit_log(&self, limit: u64) -> Result<Vec<AuditRecord>, MetaError> {
        let rows = sqlx::query(
            "SELECT at, account, remote, action, resource, outcome FROM audit_log ORDER BY at DESC, id LIMIT $1",
        )
        .bind(limit.min(i64::MAX as u64) as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRecord {
                    at: r.try_get(0)?,
                    account: r.try_get(1)?,
                    remote: r.try_get(2)?,
                    action: r.try_get(3)?,
                    resource: r.try_get(4)?,
                    outcome: AuditOutcome::from_stored(&r.try_get::<String, _>(5)?)?,
                })
            })
            .collect()
    }
}

async fn insert_grant(conn: &mut sqlx::AnyConnection, g: &GrantRecord) -> Result<(), MetaError> {
    sqlx::query(
        "INSERT INTO grants (id, subject_kind, subject_name, pattern, actions, origin, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&g.id)
    .bind(g.subject_kind.as_str())
    .bind(&g.subject_name)
    .bind(&g.pattern)
    .bind(&g.actions)
    .bind(g.origin.as_str())
    .bind(unix_now())
    .execute(&mut *conn)
    .await?;
    Ok(())
}
