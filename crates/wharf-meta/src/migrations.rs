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
/// `{random_id}` stands for an expression that makes a random id in each backend.
const MIGRATIONS: &[(i64, &[&str])] = &[
    (
        1,
        &[
            r#"CREATE TABLE repositories (
    name {text_c} PRIMARY KEY,
    format TEXT NOT NULL,
    created_at BIGINT NOT NULL
)"#,
            r#"CREATE TABLE blobs (
    digest TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL
)"#,
            r#"CREATE TABLE repo_blobs (
    repo TEXT NOT NULL,
    digest TEXT NOT NULL,
    linked_at BIGINT NOT NULL,
    PRIMARY KEY (repo, digest)
)"#,
            r#"CREATE INDEX repo_blobs_digest ON repo_blobs (digest)"#,
            r#"CREATE TABLE manifests (
    repo TEXT NOT NULL,
    digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    artifact_type TEXT,
    subject TEXT,
    annotations TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (repo, digest)
)"#,
            r#"CREATE INDEX manifests_digest ON manifests (digest)"#,
            r#"CREATE INDEX manifests_subject ON manifests (repo, subject)"#,
            r#"CREATE TABLE manifest_refs (
    repo TEXT NOT NULL,
    manifest TEXT NOT NULL,
    child TEXT NOT NULL,
    kind TEXT NOT NULL,
    PRIMARY KEY (repo, manifest, child)
)"#,
            r#"CREATE INDEX manifest_refs_child ON manifest_refs (child)"#,
            r#"CREATE TABLE tags (
    repo TEXT NOT NULL,
    tag {text_c} NOT NULL,
    digest TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (repo, tag)
)"#,
            r#"CREATE INDEX tags_digest ON tags (repo, digest)"#,
            r#"CREATE TABLE uploads (
    id TEXT PRIMARY KEY,
    repo TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
)"#,
        ],
    ),
    (
        2,
        &[
            r#"CREATE TABLE accounts (
    name {text_c} PRIMARY KEY,
    kind TEXT NOT NULL,
    password_hash TEXT,
    is_admin BIGINT NOT NULL,
    disabled BIGINT NOT NULL,
    created_at BIGINT NOT NULL
)"#,
            r#"CREATE TABLE teams (
    name {text_c} PRIMARY KEY,
    created_at BIGINT NOT NULL
)"#,
            r#"CREATE TABLE team_members (
    team TEXT NOT NULL,
    account TEXT NOT NULL,
    PRIMARY KEY (team, account)
)"#,
            r#"CREATE INDEX team_members_account ON team_members (account)"#,
            r#"CREATE TABLE grants (
    id TEXT PRIMARY KEY,
    subject_kind TEXT NOT NULL,
    subject_name TEXT NOT NULL,
    pattern TEXT NOT NULL,
    actions TEXT NOT NULL,
    origin TEXT NOT NULL,
    created_at BIGINT NOT NULL
)"#,
            r#"CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    scopes TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
)"#,
            r#"CREATE INDEX api_tokens_account ON api_tokens (account)"#,
            r#"CREATE TABLE signing_keys (
    id TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT
)"#,
            r#"CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    account TEXT,
    remote TEXT,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,
    outcome TEXT NOT NULL
)"#,
            r#"CREATE INDEX audit_log_at ON audit_log (at)"#,
        ],
    ),
    (
        3,
        &[
            // A blob row is `live` (usable, its bytes are stored) or `deleting`
            // (garbage collection owns it and may be unlinking the bytes). See gc.rs.
            "ALTER TABLE blobs ADD COLUMN state TEXT NOT NULL DEFAULT 'live'",
            "ALTER TABLE blobs ADD COLUMN deletion_token TEXT",
            "ALTER TABLE blobs ADD COLUMN deleting_since BIGINT",
            "CREATE INDEX blobs_deleting ON blobs (state, deleting_since)",
        ],
    ),
    (
        4,
        &[
            // The format-neutral reference model (refs.rs) and the sweep's candidate list.
            "CREATE TABLE blob_refs (
    blob TEXT NOT NULL,
    owner TEXT NOT NULL,
    PRIMARY KEY (blob, owner)
)",
            "CREATE INDEX blob_refs_owner ON blob_refs (owner)",
            "CREATE TABLE gc_candidates (blob TEXT PRIMARY KEY)",
            "INSERT INTO blob_refs (blob, owner) \
             SELECT digest, 'oci-manifest:' || repo || '@' || digest FROM manifests WHERE true \
             ON CONFLICT (blob, owner) DO NOTHING",
            "INSERT INTO blob_refs (blob, owner) \
             SELECT child, 'oci-manifest:' || repo || '@' || manifest FROM manifest_refs WHERE true \
             ON CONFLICT (blob, owner) DO NOTHING",
            "INSERT INTO gc_candidates (blob) SELECT digest FROM blobs \
             WHERE NOT EXISTS (SELECT 1 FROM blob_refs WHERE blob_refs.blob = blobs.digest) \
             ON CONFLICT (blob) DO NOTHING",
            "CREATE INDEX blobs_last_used ON blobs (last_used_at)",
        ],
    ),
    (
        5,
        &[
            // Repositories of every kind share one namespace; each has a stable id.
            "ALTER TABLE repositories RENAME COLUMN format TO kind",
            "ALTER TABLE repositories ADD COLUMN id TEXT",
            "UPDATE repositories SET id = {random_id}",
            "CREATE UNIQUE INDEX repositories_id ON repositories (id)",
        ],
    ),
    (
        6,
        &[
            // The persisted job queue, its history and the scheduler's state (jobs.rs).
            "CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    job_key TEXT NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    max_attempts BIGINT NOT NULL,
    run_after BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    cancel_requested BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    items_done BIGINT NOT NULL,
    items_total BIGINT,
    bytes_done BIGINT NOT NULL,
    bytes_total BIGINT,
    error TEXT,
    summary TEXT
)",
            "CREATE UNIQUE INDEX jobs_one_pending_per_key ON jobs (job_key) \
             WHERE state IN ('queued', 'running')",
            "CREATE INDEX jobs_runnable ON jobs (state, run_after)",
            "CREATE INDEX jobs_created ON jobs (created_at)",
            "CREATE TABLE job_log (
    job_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
)",
            "CREATE TABLE leases (name TEXT PRIMARY KEY, owner TEXT NOT NULL, until BIGINT NOT NULL)",
            "CREATE TABLE schedules (name TEXT PRIMARY KEY, next_run_at BIGINT NOT NULL)",
        ],
    ),
    (
        7,
        &[
            // `wharf auth unlock` requests, read by every server (see wharf-auth's throttle).
            "CREATE TABLE auth_unlocks (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    address TEXT NOT NULL,
    at BIGINT NOT NULL
)",
            "CREATE INDEX auth_unlocks_at ON auth_unlocks (at)",
        ],
    ),
    (
        8,
        &[
            // Where a mirrored repository's content comes from (`upstream/name`),
            // set by the mirror's copy; NULL for an ordinary repository. Only a
            // repository with an origin takes a sparse index (see oci.rs).
            "ALTER TABLE repositories ADD COLUMN origin TEXT",
        ],
    ),
    (
        9,
        &[
            // Snapshots of OSTree, RPM and file repositories (snapshots.rs): a
            // staged, published or retired version of a repository's tree, and
            // its entries (path → blob). At most one published per repository.
            r#"CREATE TABLE snapshots (
    id TEXT PRIMARY KEY,
    repo {text_c} NOT NULL,
    number BIGINT NOT NULL,
    state TEXT NOT NULL,
    note TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    published_at BIGINT,
    retired_at BIGINT,
    UNIQUE (repo, number)
)"#,
            "CREATE UNIQUE INDEX snapshots_one_published ON snapshots (repo) WHERE state = 'published'",
            "CREATE INDEX snapshots_repo_state ON snapshots (repo, state)",
            r#"CREATE TABLE snapshot_entries (
    snapshot TEXT NOT NULL,
    path {text_c} NOT NULL,
    blob TEXT NOT NULL,
    size BIGINT NOT NULL,
    modified_at BIGINT NOT NULL,
    PRIMARY KEY (snapshot, path)
)"#,
            "CREATE INDEX snapshot_entries_blob ON snapshot_entries (snapshot, blob)",
        ],
    ),
    // 9 is the snapshots' (snapshots.rs); 10 the lookaside cache's sources.
    (10, crate::lookaside::MIGRATION),
    (
        11,
        &[
            // When the pull-through cache last confirmed each mirrored tag
            // against its upstream (validations.rs), so a restart keeps the TTL.
            "CREATE TABLE mirror_tag_validations (
    repo TEXT NOT NULL,
    tag TEXT NOT NULL,
    validated_at BIGINT NOT NULL,
    PRIMARY KEY (repo, tag)
)",
        ],
    ),
    (
        12,
        &[
            // When each manifest was last pulled (pulls.rs), written in batches.
            "CREATE TABLE manifest_pulls (
    repo TEXT NOT NULL,
    digest TEXT NOT NULL,
    last_pulled_at BIGINT NOT NULL,
    PRIMARY KEY (repo, digest)
)",
        ],
    ),
    (
        13,
        &[
            // Which push last wrote each tag (a random id per push, retention.rs):
            // retention deletes a tag only if no push wrote it since its plan
            // read it, which a push time of one-second resolution, taken from
            // each replica's own clock, cannot tell.
            "ALTER TABLE tags ADD COLUMN push_id BIGINT NOT NULL DEFAULT 0",
        ],
    ),
];

/// Applies every pending migration up to `up_to` (all of them for a server).
pub(crate) async fn run(meta: &Meta, up_to: i64) -> Result<(), MetaError> {
    let text_c = match meta.backend {
        Backend::Sqlite => "TEXT",
        Backend::Postgres => "TEXT COLLATE \"C\"",
    };
    // A random 32-hex-digit id, like the ones the code writes (uuid simple form).
    let random_id = match meta.backend {
        Backend::Sqlite => "lower(hex(randomblob(16)))",
        Backend::Postgres => "md5(random()::text || clock_timestamp()::text)",
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
    for &(version, statements) in MIGRATIONS.iter().filter(|m| m.0 > found && m.0 <= up_to) {
        for statement in statements {
            let statement = statement
                .replace("{text_c}", text_c)
                .replace("{random_id}", random_id);
            sqlx::query(&statement)
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
