//! Upload sessions: which repository an upload belongs to and when it last moved.
//!
//! The bytes live in the blob store's staging area under the same id; this table
//! makes sessions survive restarts and lets expiry find abandoned ones.

use sqlx::Row;
use wharf_core::RepoName;

use crate::{unix_now, Meta, MetaError};

impl Meta {
    /// Registers a new upload session.
    pub async fn create_upload(&self, id: &str, repo: &RepoName) -> Result<(), MetaError> {
        let now = unix_now();
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO uploads (id, repo, created_at, updated_at) VALUES ($1, $2, $3, $3)",
        )
        .bind(id)
        .bind(repo.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The repository an upload session belongs to.
    pub async fn upload_repo(&self, id: &str) -> Result<Option<String>, MetaError> {
        let row = sqlx::query("SELECT repo FROM uploads WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get(0)?),
            None => None,
        })
    }

    /// Marks an upload as active now, postponing its expiry.
    pub async fn touch_upload(&self, id: &str) -> Result<(), MetaError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE uploads SET updated_at = $1 WHERE id = $2")
            .bind(unix_now())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forgets an upload session (finished, cancelled or expired).
    pub async fn delete_upload(&self, id: &str) -> Result<bool, MetaError> {
        let mut tx = self.write_tx().await?;
        let res = sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(res.rows_affected() > 0)
    }

    /// Sessions idle since before `cutoff` (unix seconds).
    pub async fn idle_uploads(&self, cutoff: i64) -> Result<Vec<String>, MetaError> {
        let rows = sqlx::query("SELECT id FROM uploads WHERE updated_at < $1")
            .bind(cutoff)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(MetaError::from))
            .collect()
    }
}
