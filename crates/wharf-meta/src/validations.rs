//! When the pull-through cache last confirmed a mirrored tag against its
//! upstream (migration 11), so the tag TTL survives a restart: a restarted
//! server neither revalidates every tag at once nor forgets that a tag was
//! served stale while its upstream was down.

use sqlx::Row;
use wharf_core::{RepoName, Tag};

use crate::{Meta, MetaError};

impl Meta {
    /// Records that tag `tag` of `repo` was confirmed at `at` (unix seconds),
    /// keeping a later time already stored (another replica's).
    pub async fn record_tag_validation(
        &self,
        repo: &RepoName,
        tag: &Tag,
        at: i64,
    ) -> Result<(), MetaError> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO mirror_tag_validations (repo, tag, validated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (repo, tag) DO UPDATE SET validated_at = excluded.validated_at \
             WHERE mirror_tag_validations.validated_at < excluded.validated_at",
        )
        .bind(repo.as_str())
        .bind(tag.as_str())
        .bind(at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// When tag `tag` of `repo` was last confirmed, if ever.
    pub async fn tag_validated_at(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<i64>, MetaError> {
        let row = sqlx::query(
            "SELECT validated_at FROM mirror_tag_validations WHERE repo = $1 AND tag = $2",
        )
        .bind(repo.as_str())
        .bind(tag.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get::<i64, _>(0)).transpose()?)
    }
}
