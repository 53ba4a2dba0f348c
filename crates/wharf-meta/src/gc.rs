//! The metadata half of online garbage collection.
//!
//! A blob may be deleted only when nothing references it — no manifest is that
//! blob, no manifest lists it, no repository link younger than the grace period
//! holds it — and it was last used before the grace period. The check and the
//! deletion of its row are one statement inside one transaction, so a manifest
//! push racing the sweep either commits first (and the sweep spares the blob) or
//! finds the row gone (and is refused with "blob unknown"): never a manifest
//! pointing at deleted bytes.

use sqlx::Row;
use wharf_core::Digest;

use crate::{Meta, MetaError};

/// What the sweep decided for one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepOutcome {
    /// Its row is gone; the caller deletes the bytes.
    Deleted,
    /// Still referenced or too young; kept.
    Kept,
    /// The database has no row for it: bytes left by an interrupted commit.
    Unknown,
}

impl Meta {
    /// Deletes the blob's row (and stale links) if it is garbage as of `cutoff`.
    pub async fn sweep_blob(
        &self,
        digest: &Digest,
        cutoff: i64,
    ) -> Result<SweepOutcome, MetaError> {
        let d = digest.to_string();
        let mut tx = self.write_tx().await?;
        let res = sqlx::query(
            "DELETE FROM blobs WHERE digest = $1 AND last_used_at < $2 \
             AND NOT EXISTS (SELECT 1 FROM manifests WHERE digest = $1) \
             AND NOT EXISTS (SELECT 1 FROM manifest_refs WHERE child = $1) \
             AND NOT EXISTS (SELECT 1 FROM repo_blobs WHERE digest = $1 AND linked_at >= $2)",
        )
        .bind(&d)
        .bind(cutoff)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() > 0 {
            sqlx::query("DELETE FROM repo_blobs WHERE digest = $1")
                .bind(&d)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(SweepOutcome::Deleted);
        }
        let known = sqlx::query("SELECT 1 FROM blobs WHERE digest = $1")
            .bind(&d)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        tx.commit().await?;
        Ok(if known {
            SweepOutcome::Kept
        } else {
            SweepOutcome::Unknown
        })
    }

    /// Every blob the database knows, with its recorded size (for `wharf check`).
    pub async fn known_blobs(&self) -> Result<Vec<(Digest, u64)>, MetaError> {
        let rows = sqlx::query("SELECT digest, size FROM blobs ORDER BY digest")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let s: String = r.try_get(0)?;
                let digest = Digest::parse(&s)
                    .map_err(|e| MetaError::Corrupt(format!("stored digest {s:?}: {e}")))?;
                Ok((digest, r.try_get::<i64, _>(1)? as u64))
            })
            .collect()
    }
}
