//! Queries behind OCI retention and quotas: a repository's tags with their
//! push times, its manifests with their ages, subjects and children, which
//! blobs only a given set of manifests holds, and a repository's distinct
//! stored bytes, and the two conditional deletions retention makes: a tag or
//! a manifest goes only while it is exactly as the plan saw it, so a push
//! racing a run is never lost.

use std::collections::{HashMap, HashSet};

use sqlx::Row;
use wharf_core::{Digest, RepoName, Tag};

use crate::refs::RefOwner;
use crate::{Backend, Meta, MetaError};

/// A tag as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagPush {
    /// The tag.
    pub tag: Tag,
    /// The manifest it points at.
    pub digest: Digest,
    /// When it was last pushed (moved), unix seconds.
    pub pushed_at: i64,
    /// When its manifest was last pulled (a GET), as far as pull times were written.
    pub pulled_at: Option<i64>,
    /// Which push last wrote it: a fresh id per push, even one that changes
    /// neither its digest nor its push second. The conditional deletes compare it.
    pub push_id: i64,
}

/// A manifest as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestAge {
    /// Its digest.
    pub digest: Digest,
    /// Size of its own bytes.
    pub size: u64,
    /// When it was first recorded in the repository, unix seconds.
    pub created_at: i64,
    /// Its `subject`, for a referrer.
    pub subject: Option<Digest>,
    /// The child manifests it lists (an index).
    pub children: Vec<Digest>,
}

fn digest(s: &str) -> Result<Digest, MetaError> {
    Digest::parse(s).map_err(|e| MetaError::Corrupt(format!("stored digest {s:?}: {e}")))
}

impl Meta {
    /// Every tag of `repo` with its manifest and push time.
    pub async fn tag_pushes(&self, repo: &RepoName) -> Result<Vec<TagPush>, MetaError> {
        let rows = sqlx::query(
            "SELECT t.tag, t.digest, t.updated_at, p.last_pulled_at, t.push_id FROM tags t \
             LEFT JOIN manifest_pulls p ON p.repo = t.repo AND p.digest = t.digest WHERE t.repo = $1",
        )
            .bind(repo.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let tag: String = r.try_get(0)?;
                Ok(TagPush {
                    tag: Tag::parse(&tag)
                        .map_err(|e| MetaError::Corrupt(format!("stored tag {tag:?}: {e}")))?,
                    digest: digest(&r.try_get::<String, _>(1)?)?,
                    pushed_at: r.try_get(2)?,
                    pulled_at: r.try_get(3)?,
                    push_id: r.try_get(4)?,
                })
            })
            .collect()
    }

    /// Every manifest of `repo` with its age, subject and child manifests.
    pub async fn manifest_ages(&self, repo: &RepoName) -> Result<Vec<ManifestAge>, MetaError> {
        let mut children: HashMap<String, Vec<Digest>> = HashMap::new();
        for r in sqlx::query(
            "SELECT manifest, child FROM manifest_refs WHERE repo = $1 AND kind = 'manifest'",
        )
        .bind(repo.as_str())
        .fetch_all(&self.pool)
        .await?
        {
            children
                .entry(r.try_get(0)?)
                .or_default()
                .push(digest(&r.try_get::<String, _>(1)?)?);
        }
        let rows =
            sqlx::query("SELECT digest, size, created_at, subject FROM manifests WHERE repo = $1")
                .bind(repo.as_str())
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                let key: String = r.try_get(0)?;
                Ok(ManifestAge {
                    digest: digest(&key)?,
                    size: r.try_get::<i64, _>(1)? as u64,
                    created_at: r.try_get(2)?,
                    subject: r
                        .try_get::<Option<String>, _>(3)?
                        .map(|s| digest(&s))
                        .transpose()?,
                    children: children.remove(&key).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Deletes tag `tag` of `repo` only if it still names `digest` and was
    /// last written by the push `push_id` (the [`TagPush`] the plan read): one
    /// statement, so a push moving or re-pushing the tag after the plan keeps
    /// it, even one in the same second to the same digest, or from a replica
    /// whose clock is behind. True when deleted.
    pub async fn delete_tag_if_unchanged(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
        push_id: i64,
    ) -> Result<bool, MetaError> {
        let mut tx = self.write_tx().await?;
        let res = sqlx::query(
            "DELETE FROM tags WHERE repo = $1 AND tag = $2 AND digest = $3 AND push_id = $4",
        )
        .bind(repo.as_str())
        .bind(tag.as_str())
        .bind(digest.to_string())
        .bind(push_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(res.rows_affected() > 0)
    }

    /// Deletes manifest `digest` of `repo` with its tags only if the tags
    /// naming it are exactly `tags` (each last written by the planned push id)
    /// and no index lists it, in one transaction. On PostgreSQL
    /// the manifest row is locked first; a push that finds the manifest present
    /// locks it too (`BlobClaim::put_manifest`), so one of the two sees the other.
    /// True when deleted.
    pub async fn delete_manifest_if_unchanged(
        &self,
        repo: &RepoName,
        digest: &Digest,
        tags: &[(Tag, i64)],
    ) -> Result<bool, MetaError> {
        let mut tx = self.write_tx().await?;
        let lock = match self.backend {
            Backend::Sqlite => "SELECT digest FROM manifests WHERE repo = $1 AND digest = $2",
            Backend::Postgres => {
                "SELECT digest FROM manifests WHERE repo = $1 AND digest = $2 FOR UPDATE"
            }
        };
        let present = sqlx::query(lock)
            .bind(repo.as_str())
            .bind(digest.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !present {
            return Ok(false);
        }
        let mut now_tags: Vec<(String, i64)> = Vec::new();
        for r in sqlx::query("SELECT tag, push_id FROM tags WHERE repo = $1 AND digest = $2")
            .bind(repo.as_str())
            .bind(digest.to_string())
            .fetch_all(&mut *tx)
            .await?
        {
            now_tags.push((r.try_get(0)?, r.try_get(1)?));
        }
        now_tags.sort();
        let mut planned: Vec<(String, i64)> = tags
            .iter()
            .map(|(t, at)| (t.as_str().to_owned(), *at))
            .collect();
        planned.sort();
        if now_tags != planned {
            return Ok(false);
        }
        let listed = sqlx::query(
            "SELECT 1 FROM manifest_refs WHERE repo = $1 AND child = $2 AND kind = 'manifest' LIMIT 1",
        )
        .bind(repo.as_str())
        .bind(digest.to_string())
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        if listed {
            return Ok(false);
        }
        if !crate::oci::delete_manifest_on(&mut tx, repo, digest).await? {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The blobs (with their sizes) that no owner outside `owners` references:
    /// what garbage collection frees once `owners` are deleted.
    pub async fn blobs_only_held_by(
        &self,
        owners: &[RefOwner],
    ) -> Result<Vec<(Digest, u64)>, MetaError> {
        let keys: HashSet<String> = owners.iter().map(RefOwner::key).collect();
        let mut held: HashSet<String> = HashSet::new();
        for key in &keys {
            for r in sqlx::query("SELECT blob FROM blob_refs WHERE owner = $1")
                .bind(key)
                .fetch_all(&self.pool)
                .await?
            {
                held.insert(r.try_get(0)?);
            }
        }
        let mut freed = Vec::new();
        for blob in held {
            let rows = sqlx::query("SELECT owner FROM blob_refs WHERE blob = $1")
                .bind(&blob)
                .fetch_all(&self.pool)
                .await?;
            let mut only_ours = true;
            for r in &rows {
                if !keys.contains(&r.try_get::<String, _>(0)?) {
                    only_ours = false;
                    break;
                }
            }
            if !only_ours {
                continue;
            }
            if let Some(r) = sqlx::query("SELECT size FROM blobs WHERE digest = $1")
                .bind(&blob)
                .fetch_optional(&self.pool)
                .await?
            {
                freed.push((digest(&blob)?, r.try_get::<i64, _>(0)? as u64));
            }
        }
        freed.sort();
        Ok(freed)
    }

    /// Every distinct blob `repo` holds — linked blobs (layers, configs) and
    /// manifests — with its size: what a quota counts.
    pub async fn repository_blobs(&self, repo: &RepoName) -> Result<Vec<(Digest, u64)>, MetaError> {
        let rows = sqlx::query(
            "SELECT rb.digest, b.size FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest \
             WHERE rb.repo = $1 AND b.state = 'live' \
             UNION SELECT digest, size FROM manifests WHERE repo = $1",
        )
        .bind(repo.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    digest(&r.try_get::<String, _>(0)?)?,
                    r.try_get::<i64, _>(1)? as u64,
                ))
            })
            .collect()
    }

    /// Whether `repo` already holds `blob` (linked, or as a manifest).
    pub async fn repository_holds(
        &self,
        repo: &RepoName,
        blob: &Digest,
    ) -> Result<bool, MetaError> {
        let row = sqlx::query(
            "SELECT 1 FROM repo_blobs WHERE repo = $1 AND digest = $2 \
             UNION SELECT 1 FROM manifests WHERE repo = $1 AND digest = $2",
        )
        .bind(repo.as_str())
        .bind(blob.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }
}
