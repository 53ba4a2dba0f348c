//! The metadata database: the single source of truth for everything mutable.
//!
//! Blobs are immutable bytes in `wharf-blob`; which repositories exist, which
//! manifests and tags they hold, which blobs those reference and which uploads
//! are in flight live here. This is the only crate that contains SQL.
//!
//! One code path serves both backends through sqlx's `Any` driver: SQLite (the
//! embedded default) and PostgreSQL (for scale-out). The SQL is written in the
//! common dialect (`$n` placeholders, `BIGINT` unix-second timestamps, text
//! keys); the few differences (collation, how a write transaction begins) are
//! decided in [`Backend`].
//!
//! Architecture invariant: every change that must be seen together is one
//! transaction — publishing a tag, pushing a manifest with its references,
//! garbage-collecting a blob.

mod gc;
mod identity;
mod jobs;
mod lookaside;
mod migrations;
mod oci;
mod pulls;
mod refs;
mod repos;
mod retention;
mod snapshots;
mod uploads;
mod validations;

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::path::{Path, PathBuf};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, ConnectOptions, Connection, Executor};

pub use gc::{BlobClaim, DeletionMark, SweepOutcome, DELETION_LEASE_SECS};
pub use identity::{
    AccountKind, AccountRecord, AuditOutcome, AuditRecord, GrantOrigin, GrantRecord,
    GrantSubjectKind, SigningKeyRecord, TokenRecord, UnlockRecord,
};
pub use jobs::{
    retry_backoff_secs, ClaimedJob, JobProgress, JobRecord, JobState, LeaseStatus, NewJob,
};
pub use lookaside::LookasideSource;
pub use oci::{ManifestRecord, NewManifest, PutManifestOutcome, ReferenceKind, ReferrerRecord};
pub use refs::RefOwner;
pub use repos::RepositoryRecord;
pub use retention::{ManifestAge, TagPush};
pub use snapshots::{
    DirChild, EntryBatch, ExistingEntry, ServedEntry, SnapshotBase, SnapshotEntry, SnapshotId,
    SnapshotRecord, SnapshotState,
};

/// What went wrong in the metadata layer.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The database URL names no supported backend.
    #[error("unsupported database URL {0:?}: expected sqlite:PATH or postgres://…")]
    UnsupportedUrl(String),
    /// The database refused or failed a query.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed; the schema is left at the previous version.
    #[error("migration {version} failed: {source}")]
    Migration {
        /// The migration that failed.
        version: i64,
        /// Why.
        source: sqlx::Error,
    },
    /// The database was written by a newer Wharf.
    #[error("database schema version {found} is newer than this build's {known}")]
    SchemaTooNew {
        /// Version found in the database.
        found: i64,
        /// Latest version this build knows.
        known: i64,
    },
    /// The name belongs to a repository of another kind.
    #[error("repository {name} is an {actual} repository, not {expected}")]
    WrongKind {
        /// The repository.
        name: String,
        /// The kind the operation needs.
        expected: wharf_core::RepositoryKind,
        /// The kind it has.
        actual: wharf_core::RepositoryKind,
    },
    /// A row stayed locked by other work for longer than a request may wait.
    #[error("busy: {0}")]
    Busy(String),
    /// No store exists where one was expected (and this caller may not create one).
    #[error("no Wharf store: {0}")]
    NoStore(String),
    /// The SQLite database file could not be created.
    #[error("cannot create {path}: {source}")]
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No snapshot has this id (or number), or it belongs to another repository.
    #[error("no such snapshot: {0}")]
    NoSuchSnapshot(String),
    /// Entries can be changed only while a snapshot is staged.
    #[error("snapshot {id} is {state}; only a staged snapshot can change")]
    SnapshotNotStaged {
        /// The snapshot.
        id: String,
        /// Its state.
        state: &'static str,
    },
    /// The published snapshot cannot be deleted; publish another first.
    #[error("snapshot {0} is published; publish another before deleting it")]
    SnapshotPublished(String),
    /// A stored value failed validation, which means the database was edited by hand.
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
}

impl MetaError {
    /// Whether the database refused a write because its disk is full (SQLite's
    /// `SQLITE_FULL`, PostgreSQL's `disk_full`), which passes once space is freed.
    pub fn is_storage_full(&self) -> bool {
        let (MetaError::Database(e) | MetaError::Migration { source: e, .. }) = self else {
            return false;
        };
        match e {
            sqlx::Error::Database(db) => {
                matches!(db.code().as_deref(), Some("13") | Some("53100"))
            }
            sqlx::Error::Io(io) => io.kind() == std::io::ErrorKind::StorageFull,
            _ => false,
        }
    }
}

/// Which database engine is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// Handle to the metadata database; cheap to clone.
#[derive(Clone)]
pub struct Meta {
    pool: AnyPool,
    backend: Backend,
}

impl Meta {
    /// Connects to `url` (`sqlite:PATH` or `postgres://…`), creating the SQLite
    /// file if it does not exist, and runs pending migrations.
    pub async fn connect(url: &str) -> Result<Meta, MetaError> {
        Self::open(url, true, i64::MAX).await
    }

    /// Connects to a store that already exists: a SQLite file that is missing, or a
    /// database without Wharf's schema, is [`MetaError::NoStore`] rather than a new,
    /// empty store. Pending migrations still run.
    pub async fn connect_existing(url: &str) -> Result<Meta, MetaError> {
        Self::open(url, false, i64::MAX).await
    }

    /// Connects and migrates only up to schema `version`: how the upgrade test
    /// makes a database as an earlier release left it. Not for servers.
    #[doc(hidden)]
    pub async fn connect_at(url: &str, version: i64) -> Result<Meta, MetaError> {
        Self::open(url, true, version).await
    }

    async fn open(url: &str, create: bool, version: i64) -> Result<Meta, MetaError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(MetaError::UnsupportedUrl(url.to_owned()));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                if let Some(path) = sqlite_file(url) {
                    if create {
                        create_private_file(&path)?;
                    } else if !path.exists() {
                        return Err(MetaError::NoStore(format!(
                            "no database file {}",
                            path.display()
                        )));
                    }
                }
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode={}", if create { "rwc" } else { "rw" })
            }
            _ => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url)?.disable_statement_logging();
        // One connection first, outside the pool: the pool retries a failing connect
        // until its acquire time-out and then reports only "pool timed out", while
        // this reports the cause (a read-only directory, a refused password) at once.
        let mut probe = AnyConnection::connect_with(&options).await?;
        configure(&mut probe, backend).await?;
        if !create && !has_schema(&mut probe).await {
            let _ = probe.close().await;
            return Err(MetaError::NoStore(format!(
                "the database at {} has no Wharf schema",
                redact(&url)
            )));
        }
        probe.close().await?;
        let pool = AnyPoolOptions::new()
            // Every blob and manifest GET that misses the lookup cache reads
            // here, so readers must not queue behind a few connections. SQLite
            // (WAL) runs readers in parallel, one thread per connection; writers
            // serialise on the file lock whatever the size. PostgreSQL's are
            // server processes, shared by every replica.
            .max_connections(match backend {
                Backend::Sqlite => 32,
                Backend::Postgres => 32,
            })
            .after_connect(move |conn, _| Box::pin(configure(conn, backend)))
            // A transaction whose COMMIT and ROLLBACK both failed (a full disk:
            // SQLite rolls back by itself, so the ROLLBACK finds no transaction)
            // leaves the connection at a non-zero transaction depth, and every later
            // `begin_with` on it fails. Such a connection is closed, not reused; the
            // pool opens a fresh one, so the store recovers once space returns.
            .before_acquire(|conn, _| Box::pin(async move { Ok(!conn.is_in_transaction()) }))
            .connect_with(options)
            .await?;
        let meta = Meta { pool, backend };
        migrations::run(&meta, version).await?;
        Ok(meta)
    }

    /// Answers whether the database answers a query (for health checks).
    pub async fn ping(&self) -> Result<(), MetaError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes every connection; call once on shutdown.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Begins a transaction that will write.
    ///
    /// SQLite's default deferred `BEGIN` fails with a busy-snapshot error when a
    /// transaction that has read is later upgraded to write while another
    /// connection wrote; `BEGIN IMMEDIATE` takes the write lock up front instead.
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, MetaError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }
}

/// Per-connection settings.
async fn configure(conn: &mut AnyConnection, backend: Backend) -> Result<(), sqlx::Error> {
    if backend == Backend::Sqlite {
        // WAL lets readers proceed during a write; FULL sync makes an
        // acknowledged commit survive power loss; the busy timeout lets
        // `wharf gc` and `wharf serve` share the file.
        conn.execute(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
             PRAGMA busy_timeout = 15000; PRAGMA foreign_keys = ON;",
        )
        .await?;
    }
    Ok(())
}

async fn has_schema(conn: &mut AnyConnection) -> bool {
    sqlx::query("SELECT version FROM schema_migrations LIMIT 1")
        .fetch_optional(conn)
        .await
        .is_ok()
}

/// The URL without its password, for messages.
/// `rows` comma-separated groups for a multi-row statement: `row(p)` writes
/// one, its parameters numbered from `p`; row `i` starts at
/// `first + i * per_row`. Numbered `$n` parameters are what both databases
/// take through sqlx's `Any` driver.
pub(crate) fn sql_rows(
    rows: usize,
    first: usize,
    per_row: usize,
    row: impl Fn(usize) -> String,
) -> String {
    (0..rows)
        .map(|i| row(first + i * per_row))
        .collect::<Vec<_>>()
        .join(", ")
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:…{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The file a `sqlite:` URL names, if it names one (not `:memory:`).
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && !path.starts_with(':')).then(|| PathBuf::from(path))
}

/// Creates the database file owner-only (0600) before SQLite opens it: SQLite
/// creates the `-wal` and `-shm` files with the database file's mode, and the
/// database holds the token signing keys. An existing file is left as it is.
fn create_private_file(path: &Path) -> Result<(), MetaError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(MetaError::Create {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Seconds since the Unix epoch, the unit of every stored timestamp.
pub fn unix_now() -> i64 {
    to_unix(SystemTime::now())
}

/// Converts a time to stored seconds.
pub fn to_unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64
}

impl Meta {
    /// Runs one administrative statement outside any transaction (e.g. `CREATE
    /// DATABASE` in test set-up). Not for application data.
    pub async fn execute_admin(&self, statement: &str) -> Result<(), MetaError> {
        sqlx::query(statement).execute(&self.pool).await?;
        Ok(())
    }
}
