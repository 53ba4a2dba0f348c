//! The metadata half of a blob's life: claiming it for use, and deleting it.
//!
//! The blob store and the database cannot change together, so the database
//! decides who may touch a blob's bytes. A blob row is in one of two states:
//!
//! - `live`: its bytes are stored, and nobody deletes them. Every writer that
//!   needs a blob (an upload's commit, a manifest push, a mount) first *claims*
//!   the row live inside its own transaction — which also locks the row — and
//!   only then makes sure the bytes are in place; see [`BlobClaim`].
//! - `deleting`: garbage collection owns the blob. Only the holder of this mark
//!   unlinks the bytes, and it removes the row afterwards. Claimers treat such a
//!   blob as absent and wait until the row is gone, then store the bytes afresh.
//!
//! So "a live row has its bytes" holds at every instant and across a crash at
//! any point: a mark is committed before any unlink, bytes are placed only
//! while a live claim is held, and an unlink never happens under a live row.
//! A collector that crashed after marking leaves a `deleting` row behind; it is
//! taken over once its mark is older than [`DELETION_LEASE_SECS`].
//!
//! The residual assumption (written down in ARCHITECTURE.md): a collector does
//! not stall for longer than the lease between re-reading its mark and the
//! unlink that follows it, a window of one system call.

use sqlx::Row;
use wharf_core::Digest;

use crate::{unix_now, Backend, Meta, MetaError};

/// A `deleting` mark older than this is considered abandoned (its collector
/// crashed) and may be taken over.
pub const DELETION_LEASE_SECS: i64 = 30;

/// How long a claim waits for a collector to finish deleting the same digest.
const CLAIM_WAIT: std::time::Duration =
    std::time::Duration::from_secs(DELETION_LEASE_SECS as u64 + 5);
const CLAIM_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// What the sweep decided for one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SweepOutcome {
    /// Marked `deleting`: the caller owns the bytes' deletion and must call
    /// [`Meta::finish_deletion`] after unlinking them.
    Marked(DeletionMark),
    /// Still referenced, too young, or claimed meanwhile; kept.
    Kept,
}

/// Proof that a collector holds a blob's `deleting` mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletionMark {
    /// The blob.
    pub digest: Digest,
    token: String,
}

/// A live claim on a blob row, holding the transaction that made it.
///
/// While the claim is held nobody can mark the blob for deletion, so the holder
/// may place the bytes (or rely on the stored ones) and then record what uses
/// them — a repository link, a manifest — in the same transaction. Dropping the
/// claim without [`commit`](BlobClaim::commit) rolls everything back; bytes it
/// placed become an orphan that garbage collection removes after the grace period.
pub struct BlobClaim {
    pub(crate) tx: sqlx::Transaction<'static, sqlx::Any>,
    pub(crate) digest: Digest,
    pub(crate) backend: Backend,
}

impl std::fmt::Debug for BlobClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobClaim")
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl BlobClaim {
    /// The claimed blob.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Commits the claim and everything recorded under it.
    pub async fn commit(self) -> Result<(), MetaError> {
        self.tx.commit().await?;
        Ok(())
    }
}

/// Marks `digest` live and used now, creating its row with `size` if it has
/// none; `false` (nothing written) when a collector is deleting it. The
/// upsert only touches a live row, and on PostgreSQL it locks the row until
/// the transaction ends.
pub(crate) async fn claim_live(
    conn: &mut sqlx::AnyConnection,
    digest: &Digest,
    size: u64,
    now: i64,
) -> Result<bool, MetaError> {
    Ok(sqlx::query(
        "INSERT INTO blobs (digest, size, created_at, last_used_at, state) \
         VALUES ($1, $2, $3, $3, 'live') \
         ON CONFLICT (digest) DO UPDATE SET last_used_at = excluded.last_used_at \
         WHERE blobs.state = 'live' RETURNING digest",
    )
    .bind(digest.to_string())
    .bind(size as i64)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?
    .is_some())
}

impl Meta {
    /// Claims `digest` live, creating its row with `size` if it has none, and
    /// waits while a collector is deleting it. See [`BlobClaim`].
    pub async fn claim_blob(&self, digest: &Digest, size: u64) -> Result<BlobClaim, MetaError> {
        let d = digest.to_string();
        let started = std::time::Instant::now();
        loop {
            let mut tx = self.write_tx().await?;
            let now = unix_now();
            // The upsert only touches a live row; a `deleting` row stays as it is
            // and the statement returns nothing. On PostgreSQL the upsert also
            // locks the row until this transaction ends.
            if claim_live(&mut tx, digest, size, now).await? {
                // Garbage unless something references it before the grace period ends.
                crate::refs::add_candidate(&mut tx, digest).await?;
                return Ok(BlobClaim {
                    tx,
                    digest: digest.clone(),
                    backend: self.backend,
                });
            }
            // Being deleted. An abandoned mark (its collector died) is taken
            // over: the row goes, and the claim starts the blob afresh.
            let abandoned = sqlx::query(
                "DELETE FROM blobs WHERE digest = $1 AND state = 'deleting' AND deleting_since < $2",
            )
            .bind(&d)
            .bind(now - DELETION_LEASE_SECS)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
            if abandoned {
                tracing::warn!(blob.digest = %digest, "took over an abandoned blob deletion");
                tx.commit().await?;
                continue;
            }
            drop(tx);
            if started.elapsed() > CLAIM_WAIT {
                return Err(MetaError::Busy(format!(
                    "blob {digest} is still being deleted by garbage collection"
                )));
            }
            tokio::time::sleep(CLAIM_POLL).await;
        }
    }

    /// Marks a blob for deletion if it is garbage as of `cutoff`: no owner
    /// references it (`blob_refs`) and it was last used — stored, linked,
    /// mounted or referenced — before `cutoff`. Its repository links go with the mark.
    ///
    /// `orphan` says the caller found bytes old enough to be an orphan: if the
    /// database has no row at all (a crash between storing bytes and recording
    /// them), a `deleting` row is created for them so that a concurrent claim
    /// waits instead of racing the unlink.
    pub async fn mark_for_deletion(
        &self,
        digest: &Digest,
        cutoff: i64,
        orphan: bool,
    ) -> Result<SweepOutcome, MetaError> {
        let d = digest.to_string();
        let token = uuid_token();
        let now = unix_now();
        let mut tx = self.write_tx().await?;
        // On PostgreSQL, take the row lock first and mark only a row this
        // transaction holds locked: the UPDATE below then runs on a fresh
        // snapshot that sees every reference committed by whoever held the row
        // (writers touch or claim a blob's row before they reference it).
        // Without a row at lock time there is no UPDATE: a row that appeared
        // since (a claim after the previous deletion) would be locked by the
        // UPDATE itself, and PostgreSQL re-checks a concurrently changed row
        // with the statement's old snapshot for the NOT EXISTS, which cannot
        // see a manifest committed meanwhile — the blob would be marked under
        // an acknowledged reference.
        let row_locked = match self.backend {
            Backend::Postgres => sqlx::query("SELECT 1 FROM blobs WHERE digest = $1 FOR UPDATE")
                .bind(&d)
                .fetch_optional(&mut *tx)
                .await?
                .is_some(),
            // One writer at a time (BEGIN IMMEDIATE): nothing changes underneath.
            Backend::Sqlite => true,
        };
        let marked = row_locked
            && sqlx::query(
                "UPDATE blobs SET state = 'deleting', deletion_token = $3, deleting_since = $4 \
                 WHERE digest = $1 AND state = 'live' AND last_used_at < $2 \
                 AND NOT EXISTS (SELECT 1 FROM blob_refs WHERE blob = $1)",
            )
            .bind(&d)
            .bind(cutoff)
            .bind(&token)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
        if marked {
            sqlx::query("DELETE FROM repo_blobs WHERE digest = $1")
                .bind(&d)
                .execute(&mut *tx)
                .await?;
        } else if orphan {
            let inserted = sqlx::query(
                "INSERT INTO blobs (digest, size, created_at, last_used_at, state, \
                 deletion_token, deleting_since) VALUES ($1, 0, $2, $2, 'deleting', $3, $2) \
                 ON CONFLICT (digest) DO NOTHING",
            )
            .bind(&d)
            .bind(now)
            .bind(&token)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
            if !inserted {
                settle_candidate(&mut tx, &d).await?;
                tx.commit().await?;
                return Ok(SweepOutcome::Kept);
            }
        } else {
            settle_candidate(&mut tx, &d).await?;
            tx.commit().await?;
            return Ok(SweepOutcome::Kept);
        }
        tx.commit().await?;
        Ok(SweepOutcome::Marked(DeletionMark {
            digest: digest.clone(),
            token,
        }))
    }

    /// Whether `mark` still holds and is fresh enough to unlink under; checked
    /// immediately before the unlink.
    pub async fn deletion_holds(&self, mark: &DeletionMark) -> Result<bool, MetaError> {
        Ok(sqlx::query(
            "SELECT 1 FROM blobs WHERE digest = $1 AND state = 'deleting' \
             AND deletion_token = $2 AND deleting_since >= $3",
        )
        .bind(mark.digest.to_string())
        .bind(&mark.token)
        .bind(unix_now() - DELETION_LEASE_SECS / 2)
        .fetch_optional(&self.pool)
        .await?
        .is_some())
    }

    /// Removes the row of a blob whose bytes the holder of `mark` has unlinked.
    pub async fn finish_deletion(&self, mark: &DeletionMark) -> Result<(), MetaError> {
        let mut tx = self.write_tx().await?;
        let finished = sqlx::query(
            "DELETE FROM blobs WHERE digest = $1 AND state = 'deleting' AND deletion_token = $2",
        )
        .bind(mark.digest.to_string())
        .bind(&mark.token)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if finished {
            sqlx::query("DELETE FROM gc_candidates WHERE blob = $1")
                .bind(mark.digest.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Up to `limit` blobs on the candidate list, in digest order after `after`.
    pub async fn gc_candidates(
        &self,
        after: Option<&Digest>,
        limit: u32,
    ) -> Result<Vec<Digest>, MetaError> {
        let rows =
            sqlx::query("SELECT blob FROM gc_candidates WHERE blob > $1 ORDER BY blob LIMIT $2")
                .bind(after.map(Digest::to_string).unwrap_or_default())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| parse_digest(&r.try_get::<String, _>(0)?))
            .collect()
    }

    /// Puts every live, unreferenced blob back on the candidate list: the full
    /// collection's repair for a candidate lost to a race (a leak, never a loss).
    pub async fn rebuild_gc_candidates(&self) -> Result<u64, MetaError> {
        let mut tx = self.write_tx().await?;
        let added = sqlx::query(
            "INSERT INTO gc_candidates (blob) SELECT digest FROM blobs WHERE state = 'live' \
             AND NOT EXISTS (SELECT 1 FROM blob_refs WHERE blob_refs.blob = blobs.digest) \
             ON CONFLICT (blob) DO NOTHING",
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(added)
    }

    /// Deletions abandoned by a collector that died, taken over with a fresh mark.
    pub async fn take_over_abandoned_deletions(&self) -> Result<Vec<DeletionMark>, MetaError> {
        let now = unix_now();
        let rows = sqlx::query(
            "SELECT digest FROM blobs WHERE state = 'deleting' AND deleting_since < $1",
        )
        .bind(now - DELETION_LEASE_SECS)
        .fetch_all(&self.pool)
        .await?;
        let mut marks = Vec::new();
        for row in rows {
            let digest = parse_digest(&row.try_get::<String, _>(0)?)?;
            let token = uuid_token();
            let mut tx = self.write_tx().await?;
            let taken = sqlx::query(
                "UPDATE blobs SET deletion_token = $2, deleting_since = $3 \
                 WHERE digest = $1 AND state = 'deleting' AND deleting_since < $4",
            )
            .bind(digest.to_string())
            .bind(&token)
            .bind(now)
            .bind(now - DELETION_LEASE_SECS)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
            tx.commit().await?;
            if taken {
                marks.push(DeletionMark { digest, token });
            }
        }
        Ok(marks)
    }

    /// Whether `digest` has a live row (for `wharf check`'s re-check of one blob).
    pub async fn blob_is_live(&self, digest: &Digest) -> Result<bool, MetaError> {
        Ok(
            sqlx::query("SELECT 1 FROM blobs WHERE digest = $1 AND state = 'live'")
                .bind(digest.to_string())
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// Whether any owner references `digest`.
    pub async fn blob_is_needed(&self, digest: &Digest) -> Result<bool, MetaError> {
        Ok(sqlx::query("SELECT 1 FROM blob_refs WHERE blob = $1")
            .bind(digest.to_string())
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// Every live blob the database knows, with its recorded size (for `wharf check`).
    pub async fn known_blobs(&self) -> Result<Vec<(Digest, u64)>, MetaError> {
        let rows =
            sqlx::query("SELECT digest, size FROM blobs WHERE state = 'live' ORDER BY digest")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                let s: String = r.try_get(0)?;
                Ok((parse_digest(&s)?, r.try_get::<i64, _>(1)? as u64))
            })
            .collect()
    }

    /// Every reference, as (owner key, blob), for `wharf check`.
    pub async fn blob_references(&self) -> Result<Vec<(String, Digest)>, MetaError> {
        let rows = sqlx::query("SELECT owner, blob FROM blob_refs ORDER BY owner, blob")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>(0)?,
                    parse_digest(&r.try_get::<String, _>(1)?)?,
                ))
            })
            .collect()
    }
}

/// Takes a kept blob off the candidate list when it is referenced (it stops
/// being garbage only when that reference goes, which puts it back) or has no
/// live row (nothing left to collect).
async fn settle_candidate(conn: &mut sqlx::AnyConnection, digest: &str) -> Result<(), MetaError> {
    sqlx::query(
        "DELETE FROM gc_candidates WHERE blob = $1 AND (EXISTS (SELECT 1 FROM blob_refs WHERE blob = $1) \
         OR NOT EXISTS (SELECT 1 FROM blobs WHERE digest = $1 AND state = 'live'))",
    )
    .bind(digest)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn parse_digest(s: &str) -> Result<Digest, MetaError> {
    Digest::parse(s).map_err(|e| MetaError::Corrupt(format!("stored digest {s:?}: {e}")))
}

fn uuid_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
