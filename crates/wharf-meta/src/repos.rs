//! Repositories of every kind: one namespace, one kind each.
//!
//! A name belongs to exactly one repository, whatever its kind; a write of one
//! kind into a repository of another is refused with [`MetaError::WrongKind`]
//! rather than merged, so an OCI push can never land in an OSTree repository of
//! the same name.

use sqlx::Row;
use wharf_core::{RepoName, RepositoryKind};

use crate::{unix_now, Meta, MetaError};

/// A repository as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryRecord {
    /// Stable id, unchanged by renames.
    pub id: String,
    /// Its name.
    pub name: RepoName,
    /// What it holds.
    pub kind: RepositoryKind,
    /// When it was created (unix seconds).
    pub created_at: i64,
}

/// Creates `repo` as `kind` if no repository has that name; refuses a name that
/// a repository of another kind holds.
pub(crate) async fn ensure_repository(
    conn: &mut sqlx::AnyConnection,
    repo: &RepoName,
    kind: RepositoryKind,
) -> Result<(), MetaError> {
    // Every push passes here: read first, so the common case (the repository
    // exists) writes nothing; insert only for a new name.
    let mut found = repository_kind_on(&mut *conn, repo).await?;
    if found.is_none() {
        sqlx::query(
            "INSERT INTO repositories (name, kind, id, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(repo.as_str())
        .bind(kind.as_str())
        .bind(uuid::Uuid::new_v4().simple().to_string())
        .bind(unix_now())
        .execute(&mut *conn)
        .await?;
        // A concurrent creator may have won with another kind.
        found = repository_kind_on(&mut *conn, repo).await?;
    }
    match found {
        Some(actual) if actual == kind => Ok(()),
        Some(actual) => Err(MetaError::WrongKind {
            name: repo.to_string(),
            expected: kind,
            actual,
        }),
        // Inserted or found above, inside this transaction.
        None => Err(MetaError::Corrupt(format!(
            "repository {repo} vanished inside its own transaction"
        ))),
    }
}

async fn repository_kind_on<'e>(
    conn: impl sqlx::Executor<'e, Database = sqlx::Any>,
    repo: &RepoName,
) -> Result<Option<RepositoryKind>, MetaError> {
    let row = sqlx::query("SELECT kind FROM repositories WHERE name = $1")
        .bind(repo.as_str())
        .fetch_optional(conn)
        .await?;
    row.map(|r| parse_kind(&r.try_get::<String, _>(0)?))
        .transpose()
}

/// The origin of `repo` (set by a mirror's copy), if it has one.
pub(crate) async fn repository_origin_on<'e>(
    conn: impl sqlx::Executor<'e, Database = sqlx::Any>,
    repo: &RepoName,
) -> Result<Option<String>, MetaError> {
    let row = sqlx::query("SELECT origin FROM repositories WHERE name = $1")
        .bind(repo.as_str())
        .fetch_optional(conn)
        .await?;
    Ok(match row {
        Some(r) => r.try_get::<Option<String>, _>(0)?,
        None => None,
    })
}

fn parse_kind(s: &str) -> Result<RepositoryKind, MetaError> {
    s.parse()
        .map_err(|e| MetaError::Corrupt(format!("stored repository kind: {e}")))
}

impl Meta {
    /// Creates a repository; `false` if a repository of this name and kind exists,
    /// [`MetaError::WrongKind`] if one of another kind does.
    pub async fn create_repository(
        &self,
        repo: &RepoName,
        kind: RepositoryKind,
    ) -> Result<bool, MetaError> {
        let mut tx = self.write_tx().await?;
        let existed = repository_kind_on(&mut *tx, repo).await?.is_some();
        ensure_repository(&mut tx, repo, kind).await?;
        tx.commit().await?;
        Ok(!existed)
    }

    /// Marks `repo` (created as an OCI repository if absent) as mirrored from
    /// `origin`, which lets it hold sparse indexes. Refuses a name another kind holds.
    pub async fn set_repository_origin(
        &self,
        repo: &RepoName,
        origin: &str,
    ) -> Result<(), MetaError> {
        if repository_origin_on(&self.pool, repo).await?.as_deref() == Some(origin) {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        ensure_repository(&mut tx, repo, RepositoryKind::Oci).await?;
        sqlx::query("UPDATE repositories SET origin = $1 WHERE name = $2")
            .bind(origin)
            .bind(repo.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Where `repo`'s content is mirrored from; `None` for an ordinary repository.
    pub async fn repository_origin(&self, repo: &RepoName) -> Result<Option<String>, MetaError> {
        repository_origin_on(&self.pool, repo).await
    }

    /// The kind of the repository named `repo`, if there is one.
    pub async fn repository_kind(
        &self,
        repo: &RepoName,
    ) -> Result<Option<RepositoryKind>, MetaError> {
        repository_kind_on(&self.pool, repo).await
    }

    /// Every repository, or those of one kind, by name.
    pub async fn list_repositories(
        &self,
        kind: Option<RepositoryKind>,
    ) -> Result<Vec<RepositoryRecord>, MetaError> {
        let rows = sqlx::query(
            "SELECT id, name, kind, created_at FROM repositories \
             WHERE ($1 = '' OR kind = $1) ORDER BY name",
        )
        .bind(kind.map(RepositoryKind::as_str).unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let name: String = r.try_get(1)?;
                Ok(RepositoryRecord {
                    id: r.try_get(0)?,
                    name: RepoName::parse(&name).map_err(|e| {
                        MetaError::Corrupt(format!("stored repository name {name:?}: {e}"))
                    })?,
                    kind: parse_kind(&r.try_get::<String, _>(2)?)?,
                    created_at: r.try_get(3)?,
                })
            })
            .collect()
    }
}
