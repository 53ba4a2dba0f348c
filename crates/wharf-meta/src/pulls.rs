//! When each manifest was last pulled, for retention rules that keep what is
//! still in use ("pulled within 30 days", as Harbor's rules say).
//!
//! A pull must not cost a database write, so the registry counts pulls in
//! memory and writes them here in batches (`record_pulls`); the time kept is
//! the latest of every replica's, so batches may arrive late and in any order.

use sqlx::Row;
use wharf_core::{Digest, RepoName};

use crate::{Meta, MetaError};

impl Meta {
    /// Records that each `(repository, manifest)` was pulled at the time given,
    /// keeping the later time where one is stored already. One transaction.
    pub async fn record_pulls(&self, pulls: &[(RepoName, Digest, i64)]) -> Result<(), MetaError> {
        if pulls.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        for (repo, digest, at) in pulls {
            sqlx::query(
                "INSERT INTO manifest_pulls (repo, digest, last_pulled_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (repo, digest) DO UPDATE SET last_pulled_at = excluded.last_pulled_at \
                 WHERE manifest_pulls.last_pulled_at < excluded.last_pulled_at",
            )
            .bind(repo.as_str())
            .bind(digest.to_string())
            .bind(*at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// When manifest `digest` of `repo` was last pulled, if ever since pulls were recorded.
    pub async fn last_pulled(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<i64>, MetaError> {
        let row = sqlx::query(
            "SELECT last_pulled_at FROM manifest_pulls WHERE repo = $1 AND digest = $2",
        )
        .bind(repo.as_str())
        .bind(digest.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get::<i64, _>(0)).transpose()?)
    }
}
