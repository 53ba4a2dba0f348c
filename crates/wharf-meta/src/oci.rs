//! Queries behind the OCI registry: repositories, blob links, manifests, tags
//! and referrers.
//!
//! A blob is usable in a repository only through a `repo_blobs` link (made by an
//! upload or a mount), which is what keeps one repository's pushers from
//! referencing another's private layers by digest alone.

use sqlx::Row;
use wharf_core::{Digest, RepoName, RepositoryKind, Tag};

use crate::gc::BlobClaim;
use crate::refs::RefOwner;
use crate::repos::{ensure_repository, repository_origin_on};
use crate::{unix_now, Meta, MetaError};

/// What a manifest points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferenceKind {
    /// A config or layer blob.
    Blob,
    /// A child manifest of an index.
    Manifest,
}

impl ReferenceKind {
    fn as_str(self) -> &'static str {
        match self {
            ReferenceKind::Blob => "blob",
            ReferenceKind::Manifest => "manifest",
        }
    }
}

/// A validated manifest ready to be recorded; its bytes are already a committed blob.
#[derive(Debug, Clone)]
pub struct NewManifest {
    /// Repository it is pushed to.
    pub repo: RepoName,
    /// Digest of the exact bytes.
    pub digest: Digest,
    /// The manifest's media type.
    pub media_type: String,
    /// Size of the bytes.
    pub size: u64,
    /// `artifactType`, or the config media type for image manifests without one.
    pub artifact_type: Option<String>,
    /// The `subject` it refers to, for the referrers API.
    pub subject: Option<Digest>,
    /// The manifest's `annotations` as JSON text.
    pub annotations: Option<String>,
    /// Everything it references, with the size its descriptor claims.
    pub references: Vec<(Digest, ReferenceKind, u64)>,
    /// Tag to point at it, in the same transaction.
    pub tag: Option<Tag>,
}

/// Outcome of recording a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutManifestOutcome {
    /// Recorded (or already present) and tagged.
    Stored,
    /// A referenced blob is not in the repository.
    MissingBlob(Digest),
    /// A referenced child manifest is not in the repository.
    MissingManifest(Digest),
    /// A descriptor's size disagrees with the stored blob.
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// Size in the descriptor.
        claimed: u64,
        /// Size stored.
        actual: u64,
    },
}

/// A stored manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRecord {
    /// Digest of its bytes.
    pub digest: Digest,
    /// Media type it was pushed with.
    pub media_type: String,
    /// Size in bytes.
    pub size: u64,
}

/// A manifest whose `subject` is the queried digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferrerRecord {
    /// Its digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its size.
    pub size: u64,
    /// Its artifact type, if any.
    pub artifact_type: Option<String>,
    /// Its annotations as JSON text.
    pub annotations: Option<String>,
}

fn parse_digest(s: &str) -> Result<Digest, MetaError> {
    Digest::parse(s).map_err(|e| MetaError::Corrupt(format!("stored digest {s:?}: {e}")))
}

/// Refreshes a live blob's `last_used_at`; false if it has no live row. On
/// PostgreSQL this also locks the row, so garbage collection cannot mark it until
/// the caller's transaction ends, and later statements see a fresh snapshot.
async fn touch_live_blob(
    conn: &mut sqlx::AnyConnection,
    digest: &Digest,
) -> Result<bool, MetaError> {
    Ok(
        sqlx::query("UPDATE blobs SET last_used_at = $1 WHERE digest = $2 AND state = 'live'")
            .bind(unix_now())
            .bind(digest.to_string())
            .execute(&mut *conn)
            .await?
            .rows_affected()
            > 0,
    )
}

pub(crate) async fn link_blob(
    conn: &mut sqlx::AnyConnection,
    repo: &RepoName,
    digest: &Digest,
) -> Result<(), MetaError> {
    sqlx::query(
        "INSERT INTO repo_blobs (repo, digest, linked_at) VALUES ($1, $2, $3) \
         ON CONFLICT (repo, digest) DO UPDATE SET linked_at = excluded.linked_at",
    )
    .bind(repo.as_str())
    .bind(digest.to_string())
    .bind(unix_now())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Size of a blob linked into `repo`, on any connection or pool.
async fn linked_size<'e>(
    conn: impl sqlx::Executor<'e, Database = sqlx::Any>,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Option<u64>, MetaError> {
    let row = sqlx::query(
        "SELECT b.size FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest \
         WHERE rb.repo = $1 AND rb.digest = $2 AND b.state = 'live'",
    )
    .bind(repo.as_str())
    .bind(digest.to_string())
    .fetch_optional(conn)
    .await?;
    Ok(match row {
        Some(r) => Some(r.try_get::<i64, _>(0)? as u64),
        None => None,
    })
}

impl Meta {
    /// Records a blob whose bytes are already stored and links it into `repo`.
    ///
    /// Servers go through [`Meta::claim_blob`] instead, which orders the claim
    /// before the bytes are placed; this is for fixtures and tests.
    pub async fn record_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> Result<(), MetaError> {
        let mut claim = self.claim_blob(digest, size).await?;
        claim.link(repo).await?;
        claim.commit().await
    }

    /// Links an existing blob into `repo`: from `from` if given, else from
    /// anywhere. Returns the blob's size, or `None` if it is not available.
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
    ) -> Result<Option<u64>, MetaError> {
        let mut tx = self.write_tx().await?;
        if !touch_live_blob(&mut tx, digest).await? {
            return Ok(None);
        }
        let size = match from {
            Some(from) => linked_size(&mut *tx, from, digest).await?,
            None => sqlx::query("SELECT size FROM blobs WHERE digest = $1")
                .bind(digest.to_string())
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get::<i64, _>(0).map(|s| s as u64))
                .transpose()?,
        };
        let Some(size) = size else { return Ok(None) };
        ensure_repository(&mut tx, repo, RepositoryKind::Oci).await?;
        link_blob(&mut tx, repo, digest).await?;
        tx.commit().await?;
        Ok(Some(size))
    }

    /// Size of a blob linked into `repo`.
    pub async fn repo_blob_size(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>, MetaError> {
        linked_size(&self.pool, repo, digest).await
    }

    /// Removes a blob's link from `repo`; the bytes go when GC finds them unreferenced.
    pub async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, MetaError> {
        let mut tx = self.write_tx().await?;
        let res = sqlx::query("DELETE FROM repo_blobs WHERE repo = $1 AND digest = $2")
            .bind(repo.as_str())
            .bind(digest.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(res.rows_affected() > 0)
    }

    /// Records a manifest whose bytes are already stored, its references and
    /// optionally a tag, in one transaction. Servers claim the manifest's blob
    /// first and use [`BlobClaim::put_manifest`]; this is for fixtures and tests.
    pub async fn put_manifest(&self, m: &NewManifest) -> Result<PutManifestOutcome, MetaError> {
        let mut claim = self.claim_blob(&m.digest, m.size).await?;
        let outcome = claim.put_manifest(m).await?;
        if outcome == PutManifestOutcome::Stored {
            claim.commit().await?;
        }
        Ok(outcome)
    }

    /// A manifest of `repo` by digest.
    pub async fn manifest_by_digest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<ManifestRecord>, MetaError> {
        let row = sqlx::query(
            "SELECT digest, media_type, size FROM manifests WHERE repo = $1 AND digest = $2",
        )
        .bind(repo.as_str())
        .bind(digest.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| manifest_record(&r)).transpose()
    }

    /// The manifest a tag of `repo` points at.
    pub async fn manifest_by_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<ManifestRecord>, MetaError> {
        let row = sqlx::query(
            "SELECT m.digest, m.media_type, m.size FROM tags t \
             JOIN manifests m ON m.repo = t.repo AND m.digest = t.digest \
             WHERE t.repo = $1 AND t.tag = $2",
        )
        .bind(repo.as_str())
        .bind(tag.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| manifest_record(&r)).transpose()
    }

    /// Deletes a manifest, its references and every tag pointing at it.
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<bool, MetaError> {
        let mut tx = self.write_tx().await?;
        if !delete_manifest_on(&mut tx, repo, digest).await? {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Deletes one tag; the manifest stays reachable by digest.
    pub async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool, MetaError> {
        let mut tx = self.write_tx().await?;
        let res = sqlx::query("DELETE FROM tags WHERE repo = $1 AND tag = $2")
            .bind(repo.as_str())
            .bind(tag.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(res.rows_affected() > 0)
    }

    /// Tags of `repo` in bytewise order, after `last`, at most `limit`.
    pub async fn tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        limit: u64,
    ) -> Result<Vec<String>, MetaError> {
        let rows =
            sqlx::query("SELECT tag FROM tags WHERE repo = $1 AND tag > $2 ORDER BY tag LIMIT $3")
                .bind(repo.as_str())
                .bind(last.unwrap_or(""))
                .bind(limit.min(i64::MAX as u64) as i64)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(MetaError::from))
            .collect()
    }

    /// Repositories of `kind` in bytewise order, after `last`, at most `limit`.
    pub async fn repositories(
        &self,
        kind: RepositoryKind,
        last: Option<&str>,
        limit: u64,
    ) -> Result<Vec<String>, MetaError> {
        let rows = sqlx::query(
            "SELECT name FROM repositories WHERE kind = $1 AND name > $2 ORDER BY name LIMIT $3",
        )
        .bind(kind.as_str())
        .bind(last.unwrap_or(""))
        .bind(limit.min(i64::MAX as u64) as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(MetaError::from))
            .collect()
    }

    /// Manifests of `repo` whose subject is `subject`, optionally of one artifact type.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<ReferrerRecord>, MetaError> {
        let rows = sqlx::query(
            "SELECT digest, media_type, size, artifact_type, annotations FROM manifests \
             WHERE repo = $1 AND subject = $2 AND ($3 = '' OR artifact_type = $3) \
             ORDER BY created_at, digest",
        )
        .bind(repo.as_str())
        .bind(subject.to_string())
        .bind(artifact_type.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ReferrerRecord {
                    digest: parse_digest(&r.try_get::<String, _>(0)?)?,
                    media_type: r.try_get(1)?,
                    size: r.try_get::<i64, _>(2)? as u64,
                    artifact_type: r.try_get(3)?,
                    annotations: r.try_get(4)?,
                })
            })
            .collect()
    }
}

fn manifest_record(r: &sqlx::any::AnyRow) -> Result<ManifestRecord, MetaError> {
    Ok(ManifestRecord {
        digest: parse_digest(&r.try_get::<String, _>(0)?)?,
        media_type: r.try_get(1)?,
        size: r.try_get::<i64, _>(2)? as u64,
    })
}

impl BlobClaim {
    /// Links the blob into the OCI repository `repo` (an upload or mount into
    /// that repository). Other formats record their own references under the
    /// same claim; the claim itself (in `gc`) knows no format.
    pub async fn link(&mut self, repo: &RepoName) -> Result<(), MetaError> {
        crate::repos::ensure_repository(&mut self.tx, repo, wharf_core::RepositoryKind::Oci)
            .await?;
        link_blob(&mut self.tx, repo, &self.digest).await
    }

    /// Records the claimed blob as manifest `m` (its digest must be the claim's),
    /// with its references and optionally a tag, under the claim's transaction.
    /// Nothing is recorded unless the outcome is `Stored` and the claim is committed.
    pub async fn put_manifest(&mut self, m: &NewManifest) -> Result<PutManifestOutcome, MetaError> {
        debug_assert_eq!(&m.digest, self.digest());
        let tx = &mut self.tx;
        let now = unix_now();
        // Lock referenced blob rows in one global order, so two pushes that share
        // layers cannot deadlock on PostgreSQL.
        let mut references: Vec<_> = m.references.iter().collect();
        references.sort_by(|a, b| a.0.cmp(&b.0));
        // Children of a sparse index (a mirror that copied some platforms)
        // that are not stored: neither referenced nor required.
        let mut absent: Vec<&Digest> = Vec::new();
        let mut mirrored: Option<bool> = None;
        for (digest, kind, claimed) in references {
            match kind {
                ReferenceKind::Blob => {
                    // Touch (and lock) first, then read: a blob being deleted is absent.
                    if !touch_live_blob(tx, digest).await? {
                        return Ok(PutManifestOutcome::MissingBlob(digest.clone()));
                    }
                    let Some(actual) = linked_size(&mut **tx, &m.repo, digest).await? else {
                        return Ok(PutManifestOutcome::MissingBlob(digest.clone()));
                    };
                    if actual != *claimed {
                        return Ok(PutManifestOutcome::SizeMismatch {
                            digest: digest.clone(),
                            claimed: *claimed,
                            actual,
                        });
                    }
                }
                ReferenceKind::Manifest => {
                    // Shared-locked on PostgreSQL, so retention's conditional
                    // delete of this child waits for the index and then sees it.
                    let sql = match self.backend {
                        crate::Backend::Sqlite => {
                            "SELECT size FROM manifests WHERE repo = $1 AND digest = $2"
                        }
                        crate::Backend::Postgres => {
                            "SELECT size FROM manifests WHERE repo = $1 AND digest = $2 FOR SHARE"
                        }
                    };
                    let row = sqlx::query(sql)
                        .bind(m.repo.as_str())
                        .bind(digest.to_string())
                        .fetch_optional(&mut **tx)
                        .await?;
                    if row.is_none() {
                        let sparse_allowed = match mirrored {
                            Some(known) => known,
                            None => {
                                let known =
                                    repository_origin_on(&mut **tx, &m.repo).await?.is_some();
                                mirrored = Some(known);
                                known
                            }
                        };
                        if !sparse_allowed {
                            return Ok(PutManifestOutcome::MissingManifest(digest.clone()));
                        }
                        absent.push(digest);
                    }
                }
            }
        }
        ensure_repository(tx, &m.repo, RepositoryKind::Oci).await?;
        // A no-op update rather than DO NOTHING: it row-locks a manifest already
        // there on PostgreSQL, so retention's conditional delete of it either
        // waits for this push and sees its tag, or runs first and this insert
        // records the manifest afresh.
        sqlx::query(
            "INSERT INTO manifests (repo, digest, media_type, size, artifact_type, subject, \
             annotations, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (repo, digest) DO UPDATE SET size = manifests.size",
        )
        .bind(m.repo.as_str())
        .bind(m.digest.to_string())
        .bind(&m.media_type)
        .bind(m.size as i64)
        .bind(m.artifact_type.clone())
        .bind(m.subject.as_ref().map(|d| d.to_string()))
        .bind(m.annotations.clone())
        .bind(now)
        .execute(&mut **tx)
        .await?;
        for (digest, kind, _) in m.references.iter().filter(|r| !absent.contains(&&r.0)) {
            sqlx::query(
                "INSERT INTO manifest_refs (repo, manifest, child, kind) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (repo, manifest, child) DO NOTHING",
            )
            .bind(m.repo.as_str())
            .bind(m.digest.to_string())
            .bind(digest.to_string())
            .bind(kind.as_str())
            .execute(&mut **tx)
            .await?;
        }
        let owner = RefOwner::OciManifest {
            repo: m.repo.clone(),
            digest: m.digest.clone(),
        };
        let needs: Vec<&Digest> = std::iter::once(&m.digest)
            .chain(m.references.iter().map(|(d, _, _)| d))
            .filter(|d| !absent.contains(d))
            .collect();
        crate::refs::add_refs(tx, &owner, &needs).await?;
        if let Some(tag) = &m.tag {
            point_tag(tx, &m.repo, tag, &m.digest, now).await?;
        }
        Ok(PutManifestOutcome::Stored)
    }

    /// Points more tags of `repo` at the claimed manifest (the `?tag=` of a push
    /// by digest), under the claim's transaction: they move when the claim
    /// commits, all or none. Call after a `Stored` [`BlobClaim::put_manifest`].
    pub async fn tag_manifest(&mut self, repo: &RepoName, tags: &[Tag]) -> Result<(), MetaError> {
        let digest = self.digest().clone();
        let now = unix_now();
        // One global order, so two pushes moving the same tags cannot deadlock
        // on PostgreSQL's row locks.
        let mut tags: Vec<&Tag> = tags.iter().collect();
        tags.sort();
        tags.dedup();
        for tag in tags {
            point_tag(&mut self.tx, repo, tag, &digest, now).await?;
        }
        Ok(())
    }
}

/// Deletes a manifest, its references and every tag pointing at it, in `tx`;
/// false when it is not there.
pub(crate) async fn delete_manifest_on(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    repo: &RepoName,
    digest: &Digest,
) -> Result<bool, MetaError> {
    let res = sqlx::query("DELETE FROM manifests WHERE repo = $1 AND digest = $2")
        .bind(repo.as_str())
        .bind(digest.to_string())
        .execute(&mut **tx)
        .await?;
    if res.rows_affected() == 0 {
        return Ok(false);
    }
    let owner = RefOwner::OciManifest {
        repo: repo.clone(),
        digest: digest.clone(),
    };
    crate::refs::drop_refs(tx, &owner).await?;
    for table in [
        "DELETE FROM manifest_refs WHERE repo = $1 AND manifest = $2",
        "DELETE FROM tags WHERE repo = $1 AND digest = $2",
    ] {
        sqlx::query(table)
            .bind(repo.as_str())
            .bind(digest.to_string())
            .execute(&mut **tx)
            .await?;
    }
    Ok(true)
}

async fn point_tag(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    repo: &RepoName,
    tag: &Tag,
    digest: &Digest,
    now: i64,
) -> Result<(), MetaError> {
    // A fresh id for every push, also one that leaves digest and second
    // unchanged: what retention's conditional delete compares.
    let push_id = (uuid::Uuid::new_v4().as_u64_pair().0 >> 1) as i64;
    sqlx::query(
        "INSERT INTO tags (repo, tag, digest, updated_at, push_id) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (repo, tag) DO UPDATE SET digest = excluded.digest, \
         updated_at = excluded.updated_at, push_id = excluded.push_id",
    )
    .bind(repo.as_str())
    .bind(tag.as_str())
    .bind(digest.to_string())
    .bind(now)
    .bind(push_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
