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
mod migrations;
mod oci;
mod uploads;

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};

pub use gc::SweepOutcome;
pub use identity::{AccountRecord, AuditRecord, GrantRecord, SigningKeyRecord, TokenRecord};
pub use oci::{ManifestRecord, NewManifest, PutManifestOutcome, ReferenceKind, ReferrerRecord};

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
    /// A stored value failed validation, which means the database was edited by hand.
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
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
    /// Connects to `url` (`sqlite:PATH` or `postgres://…`) and runs pending migrations.
    pub async fn connect(url: &str) -> Result<Meta, MetaError> {
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
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url)?.disable_statement_logging();
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
            .after_connect(move |conn, _| {
                Box::pin(async move {
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
                })
            })
            .connect_with(options)
            .await?;
        let meta = Meta { pool, backend };
        migrations::run(&meta).await?;
        Ok(meta)
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
