//! Numbered, forward-only schema migrations, identical in intent on SQLite and
//! PostgreSQL.
//!
//! Pending migrations are applied in one transaction together with the rows
//! that record them, so a crash leaves the schema at a whole version. Migrations are
//! written expand/contract: a new version may add tables and columns, and only a
//! later one drops what no running replica reads any more.

use sqlx::Row;

use crate::{Backend, Meta, MetaError};

/// `{text_c}` stands for a text column that sorts bytewise, as the OCI spec
/// requires for tag and repository listings.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE repositories (
    name {text_c} PRIMARY KEY,
    format TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE blobs (
    digest TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL
);
CREATE TABLE repo_blobs (
    repo TEXT NOT NULL,
    digest TEXT NOT NULL,
    linked_at BIGINT NOT NULL,
    PRIMARY KEY (repo, digest)
);
CREATE INDEX repo_blobs_digest ON repo_blobs (digest);
CREATE TABLE manifests (
    repo TEXT NOT NULL,
    digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    artifact_type TEXT,
    subject TEXT,
    annotations TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (repo, digest)
);
CREATE INDEX manifests_digest ON manifests (digest);
CREATE INDEX manifests_subject ON manifests (repo, subject);
CREATE TABLE manifest_refs (
    repo TEXT NOT NULL,
    manifest TEXT NOT NULL,
    child TEXT NOT NULL,
    kind TEXT NOT NULL,
    PRIMARY KEY (repo, manifest, child)
);
CREATE INDEX manifest_refs_child ON manifest_refs (child);
CREATE TABLE tags (
    repo TEXT NOT NULL,
    tag {text_c} NOT NULL,
    digest TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (repo, tag)
);
CREATE INDEX tags_digest ON tags (repo, digest);
CREATE TABLE uploads (
    id TEXT PRIMARY KEY,
    repo TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
"#,
    ),
    (
        2,
        r#"
CREATE TABLE accounts (
    name {text_c} PRIMARY KEY,
    kind TEXT NOT NULL,
    password_hash TEXT,
    is_admin BIGINT NOT NULL,
    disabled BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE teams (
    name {text_c} PRIMARY KEY,
    created_at BIGINT NOT NULL
);
CREATE TABLE team_members (
    team TEXT NOT NULL,
    account TEXT NOT NULL,
    PRIMARY KEY (team, account)
);
CREATE INDEX team_members_account ON team_members (account);
CREATE TABLE grants (
    id TEXT PRIMARY KEY,
    subject_kind TEXT NOT NULL,
    subject_name TEXT NOT NULL,
    pattern TEXT NOT NULL,
    actions TEXT NOT NULL,
    origin TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    scopes TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX api_tokens_account ON api_tokens (account);
CREATE TABLE signing_keys (
    id TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT
);
CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    account TEXT,
    remote TEXT,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,
    outcome TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
"#,
    ),
    (
        3,
        r#"
CREATE TABLE auth_unlocks (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    address TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX auth_unlocks_at ON auth_unlocks (at);
"#,
    ),
];

pub(crate) async fn run(meta: &Meta) -> Result<(), MetaError> {
    let text_c = match meta.backend {
        Backend::Sqlite => "TEXT",
        Backend::Postgres => "TEXT COLLATE \"C\"",
    };
    // One transaction for the whole run. Several replicas may start at once:
    // SQLite's BEGIN IMMEDIATE already serialises them, PostgreSQL needs an
    // advisory lock (held until commit) since CREATE TABLE IF NOT EXISTS races.
    let mut tx = meta.write_tx().await?;
    if meta.backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock(7741245)")
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    let found: i64 = sqlx::query("SELECT MAX(version) FROM schema_migrations")
        .fetch_one(&mut *tx)
        .await?
        .try_get::<Option<i64>, _>(0)?
        .unwrap_or(0);
    let known = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if found > known {
        return Err(MetaError::SchemaTooNew { found, known });
    }
    for &(version, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
        let sql = sql.replace("{text_c}", text_c);
        for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            sqlx::query(statement)
                .execute(&mut *tx)
                .await
                .map_err(|source| MetaError::Migration { version, source })?;
        }
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(version)
            .bind(crate::unix_now())
            .execute(&mut *tx)
            .await?;
        tracing::info!(schema.version = version, "applied metadata migration");
    }
    tx.commit().await?;
    Ok(())
}
