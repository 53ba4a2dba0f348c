//! Snapshots: immutable versions of an OSTree, RPM or file repository's tree.
//!
//! These formats serve a tree of files, and a client reads several of them in
//! an order the format dictates (a summary, then the objects it names; a
//! repomd.xml, then the metadata and packages it names). Changing the files one
//! by one would show a client a summary whose objects are not there yet. So a
//! repository's content is a *snapshot* — a map from [`TreePath`] to blob — and
//! what is served switches from one snapshot to the next in one transaction:
//!
//! - `staged`: being filled (by a sync, an upload, a commit). Entries may be
//!   added and removed. Its blobs are already referenced (`blob_refs`, owner
//!   `snapshot:<id>`), so a staged snapshot that takes hours to fill loses
//!   nothing to garbage collection, and a crashed run resumes it.
//! - `published`: what the repository serves; at most one per repository.
//! - `retired`: published before. Still served for the paths the published one
//!   lacks while the grace period lasts, so a client that read the old summary
//!   or repomd.xml finds what it names; publishing it again is a rollback.
//!
//! Entries are copied when a snapshot is staged on top of another (`INSERT …
//! SELECT`), which keeps every snapshot self-contained: serving, listing and
//! deleting one never consult another.

use sqlx::Row;
use wharf_core::{Digest, RepoName, RepositoryKind, TreePath};

use crate::refs::RefOwner;
use crate::{unix_now, Backend, BlobClaim, Meta, MetaError};

/// A snapshot's id: 32 lower-case hex digits, stable for its life.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SnapshotId(String);

impl SnapshotId {
    /// Validates an id read from outside (a job's parameters, the API).
    pub fn parse(s: &str) -> Result<SnapshotId, MetaError> {
        if s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(SnapshotId(s.to_owned()))
        } else {
            Err(MetaError::NoSuchSnapshot(s.to_owned()))
        }
    }

    /// The id as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a snapshot is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotState {
    /// Being filled; not served.
    Staged,
    /// Served.
    Published,
    /// Served before; kept for the grace period and for rollback.
    Retired,
}

impl SnapshotState {
    /// The state as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotState::Staged => "staged",
            SnapshotState::Published => "published",
            SnapshotState::Retired => "retired",
        }
    }

    fn parse(s: &str) -> Result<SnapshotState, MetaError> {
        match s {
            "staged" => Ok(SnapshotState::Staged),
            "published" => Ok(SnapshotState::Published),
            "retired" => Ok(SnapshotState::Retired),
            other => Err(MetaError::Corrupt(format!("snapshot state {other:?}"))),
        }
    }
}

/// A snapshot as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// Its id.
    pub id: SnapshotId,
    /// The repository it belongs to.
    pub repo: RepoName,
    /// 1, 2, 3… per repository, in creation order: what people type.
    pub number: i64,
    /// Where it is in its life.
    pub state: SnapshotState,
    /// What made it (a sync's summary, an upload's description).
    pub note: String,
    /// When it was staged (unix seconds).
    pub created_at: i64,
    /// When it was last published.
    pub published_at: Option<i64>,
    /// When it stopped being published.
    pub retired_at: Option<i64>,
}

/// One file of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// Where it is in the tree.
    pub path: TreePath,
    /// Its bytes.
    pub blob: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time (unix seconds), for `Last-Modified` and listings.
    pub modified_at: i64,
}

/// An entry to record for a blob that is already stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingEntry {
    /// Where it goes.
    pub path: TreePath,
    /// The stored blob.
    pub blob: Digest,
    /// Its modification time (unix seconds).
    pub modified_at: i64,
}

/// What a new snapshot starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotBase {
    /// Nothing.
    Empty,
    /// A copy of the published snapshot's entries (empty if none is published).
    Published,
    /// A copy of this snapshot's entries.
    Snapshot(SnapshotId),
}

/// An entry found for a request, and which snapshot it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedEntry {
    /// The entry.
    pub entry: SnapshotEntry,
    /// The snapshot holding it.
    pub snapshot: SnapshotId,
    /// `false` when it came from a retired snapshot inside the grace period.
    pub current: bool,
}

/// One name in a directory of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirChild {
    /// A file.
    File(SnapshotEntry),
    /// A directory (some entry lies below it).
    Dir(TreePath),
}

const SNAPSHOT_COLUMNS: &str =
    "id, repo, number, state, note, created_at, published_at, retired_at";

fn snapshot_row(r: &sqlx::any::AnyRow) -> Result<SnapshotRecord, MetaError> {
    let repo: String = r.try_get(1)?;
    Ok(SnapshotRecord {
        id: SnapshotId(r.try_get(0)?),
        repo: RepoName::parse(&repo)
            .map_err(|e| MetaError::Corrupt(format!("snapshot repository: {e}")))?,
        number: r.try_get(2)?,
        state: SnapshotState::parse(&r.try_get::<String, _>(3)?)?,
        note: r.try_get(4)?,
        created_at: r.try_get(5)?,
        published_at: r.try_get(6)?,
        retired_at: r.try_get(7)?,
    })
}

fn entry_row(r: &sqlx::any::AnyRow, first: usize) -> Result<SnapshotEntry, MetaError> {
    let path: String = r.try_get(first)?;
    let blob: String = r.try_get(first + 1)?;
    Ok(SnapshotEntry {
        path: TreePath::new(&path)
            .map_err(|e| MetaError::Corrupt(format!("snapshot entry path: {e}")))?,
        blob: Digest::parse(&blob)
            .map_err(|e| MetaError::Corrupt(format!("snapshot entry blob {blob:?}: {e}")))?,
        size: r.try_get::<i64, _>(first + 2)? as u64,
        modified_at: r.try_get(first + 3)?,
    })
}

/// The smallest string greater than every string that starts with `prefix`
/// (which ends in `/`): the exclusive end of a range scan under bytewise
/// collation (both backends compare these columns bytewise).
fn prefix_end(prefix: &str) -> String {
    let mut end = prefix.to_owned();
    end.pop();
    end.push('0'); // '/' + 1
    end
}

/// The state of `id`, locked against a concurrent publish on PostgreSQL.
async fn locked_state(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    id: &SnapshotId,
) -> Result<SnapshotState, MetaError> {
    let sql = match backend {
        Backend::Sqlite => "SELECT state FROM snapshots WHERE id = $1",
        Backend::Postgres => "SELECT state FROM snapshots WHERE id = $1 FOR UPDATE",
    };
    let row = sqlx::query(sql)
        .bind(id.as_str())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| MetaError::NoSuchSnapshot(id.to_string()))?;
    SnapshotState::parse(&row.try_get::<String, _>(0)?)
}

async fn require_staged(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    id: &SnapshotId,
) -> Result<(), MetaError> {
    match locked_state(conn, backend, id).await? {
        SnapshotState::Staged => Ok(()),
        state => Err(MetaError::SnapshotNotStaged {
            id: id.to_string(),
            state: state.as_str(),
        }),
    }
}

/// Records `entry` in staged snapshot `id`, replacing what the path held, and
/// keeps `blob_refs` equal to the set of blobs the entries name.
async fn upsert_entry(
    conn: &mut sqlx::AnyConnection,
    id: &SnapshotId,
    entry: &SnapshotEntry,
) -> Result<(), MetaError> {
    let replaced =
        sqlx::query("SELECT blob FROM snapshot_entries WHERE snapshot = $1 AND path = $2")
            .bind(id.as_str())
            .bind(entry.path.as_str())
            .fetch_optional(&mut *conn)
            .await?
            .map(|r| r.try_get::<String, _>(0))
            .transpose()?;
    sqlx::query(
        "INSERT INTO snapshot_entries (snapshot, path, blob, size, modified_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (snapshot, path) DO UPDATE SET blob = excluded.blob, size = excluded.size, \
         modified_at = excluded.modified_at",
    )
    .bind(id.as_str())
    .bind(entry.path.as_str())
    .bind(entry.blob.to_string())
    .bind(entry.size as i64)
    .bind(entry.modified_at)
    .execute(&mut *conn)
    .await?;
    let owner = RefOwner::Snapshot { id: id.clone() };
    crate::refs::add_refs(conn, &owner, &[&entry.blob]).await?;
    if let Some(old) = replaced {
        if old != entry.blob.to_string() {
            release_if_unused(conn, id, &old).await?;
        }
    }
    Ok(())
}

/// Drops the snapshot's reference to `blob` if no entry of it names the blob any more.
async fn release_if_unused(
    conn: &mut sqlx::AnyConnection,
    id: &SnapshotId,
    blob: &str,
) -> Result<(), MetaError> {
    let still =
        sqlx::query("SELECT 1 FROM snapshot_entries WHERE snapshot = $1 AND blob = $2 LIMIT 1")
            .bind(id.as_str())
            .bind(blob)
            .fetch_optional(&mut *conn)
            .await?
            .is_some();
    if !still {
        let owner = RefOwner::Snapshot { id: id.clone() }.key();
        sqlx::query("DELETE FROM blob_refs WHERE owner = $1 AND blob = $2")
            .bind(&owner)
            .bind(blob)
            .execute(&mut *conn)
            .await?;
        sqlx::query("INSERT INTO gc_candidates (blob) VALUES ($1) ON CONFLICT (blob) DO NOTHING")
            .bind(blob)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Rows one multi-row statement of an [`EntryBatch`] writes at most: with up
/// to five values a row, well inside SQLite's oldest limit of 999 bound
/// parameters (and PostgreSQL's 65,535).
const ROWS_PER_STATEMENT: usize = 180;

/// Entries of staged snapshots recorded together, each blob claimed live, in
/// one transaction (see [`Meta::begin_entry_batch`]): many writers' files
/// cost one commit instead of one each. Dropping it without
/// [`commit`](EntryBatch::commit) rolls everything back.
pub struct EntryBatch {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    staged: std::collections::HashSet<SnapshotId>,
}

impl std::fmt::Debug for EntryBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntryBatch")
            .field("snapshots", &self.staged.len())
            .finish_non_exhaustive()
    }
}

impl EntryBatch {
    /// Claims `blob` live, creating its row with `size` if it has none.
    /// `false`, with nothing written, when the collector is deleting it: store
    /// it through [`Meta::claim_blob`], which waits for the deletion. Claim
    /// every blob of the batch, in digest order, before recording any entry:
    /// a lone claim takes its blob's row and then the snapshot's, so a batch
    /// taking rows in the same order never deadlocks with one.
    pub async fn claim(&mut self, blob: &Digest, size: u64) -> Result<bool, MetaError> {
        let claimed = crate::gc::claim_live(&mut self.tx, blob, size, unix_now()).await?;
        if claimed {
            crate::refs::add_candidate(&mut self.tx, blob).await?;
        }
        Ok(claimed)
    }

    /// Records `entry`, whose blob this batch claimed, in staged snapshot `id`.
    pub async fn record(
        &mut self,
        id: &SnapshotId,
        entry: &SnapshotEntry,
    ) -> Result<(), MetaError> {
        if !self.staged.contains(id) {
            require_staged(&mut self.tx, self.backend, id).await?;
            self.staged.insert(id.clone());
        }
        upsert_entry(&mut self.tx, id, entry).await
    }

    /// [`claim`](EntryBatch::claim) for many blobs at once, a few statements
    /// in all rather than two per blob; one answer per item in order (a digest
    /// given twice gets the same answer). Give them in digest order, as for one.
    pub async fn claim_many(&mut self, blobs: &[(&Digest, u64)]) -> Result<Vec<bool>, MetaError> {
        let mut distinct: Vec<(&Digest, u64)> = blobs.to_vec();
        distinct.sort_by(|a, b| a.0.cmp(b.0));
        distinct.dedup_by(|a, b| a.0 == b.0);
        let now = unix_now();
        let mut claimed = std::collections::HashSet::new();
        for chunk in distinct.chunks(ROWS_PER_STATEMENT) {
            // As in a lone claim, only a live row is touched; one being deleted is not returned.
            let sql = format!(
                "INSERT INTO blobs (digest, size, created_at, last_used_at, state) VALUES {} \
                 ON CONFLICT (digest) DO UPDATE SET last_used_at = excluded.last_used_at \
                 WHERE blobs.state = 'live' RETURNING digest",
                crate::sql_rows(chunk.len(), 2, 2, |p| format!(
                    "(${p}, ${}, $1, $1, 'live')",
                    p + 1
                ))
            );
            let mut query = sqlx::query(&sql).bind(now);
            for (digest, size) in chunk {
                query = query.bind(digest.to_string()).bind(*size as i64);
            }
            for row in query.fetch_all(&mut *self.tx).await? {
                claimed.insert(row.try_get::<String, _>(0)?);
            }
        }
        let fresh: Vec<String> = distinct
            .iter()
            .map(|(d, _)| d.to_string())
            .filter(|d| claimed.contains(d))
            .collect();
        // Garbage unless something references them before the grace period ends.
        for chunk in fresh.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO gc_candidates (blob) VALUES {} ON CONFLICT (blob) DO NOTHING",
                crate::sql_rows(chunk.len(), 1, 1, |p| format!("(${p})"))
            );
            let mut query = sqlx::query(&sql);
            for d in chunk {
                query = query.bind(d);
            }
            query.execute(&mut *self.tx).await?;
        }
        Ok(blobs
            .iter()
            .map(|(d, _)| claimed.contains(&d.to_string()))
            .collect())
    }

    /// [`record`](EntryBatch::record) for many entries of one staged
    /// snapshot, whose blobs this batch claimed, in a few statements. A path
    /// given twice keeps the last entry.
    pub async fn record_many(
        &mut self,
        id: &SnapshotId,
        entries: &[&SnapshotEntry],
    ) -> Result<(), MetaError> {
        if entries.is_empty() {
            return Ok(());
        }
        if !self.staged.contains(id) {
            require_staged(&mut self.tx, self.backend, id).await?;
            self.staged.insert(id.clone());
        }
        let mut by_path: std::collections::BTreeMap<&str, &SnapshotEntry> = Default::default();
        for e in entries {
            by_path.insert(e.path.as_str(), e);
        }
        let distinct: Vec<&SnapshotEntry> = by_path.into_values().collect();
        for chunk in distinct.chunks(ROWS_PER_STATEMENT / 2) {
            // What the paths held, to release blobs no entry names any more.
            let sql = format!(
                "SELECT path, blob FROM snapshot_entries WHERE snapshot = $1 AND path IN ({})",
                crate::sql_rows(chunk.len(), 2, 1, |p| format!("${p}"))
            );
            let mut query = sqlx::query(&sql).bind(id.as_str());
            for e in chunk {
                query = query.bind(e.path.as_str());
            }
            let mut replaced = Vec::new();
            for row in query.fetch_all(&mut *self.tx).await? {
                let path: String = row.try_get(0)?;
                let blob: String = row.try_get(1)?;
                replaced.push((path, blob));
            }
            let sql = format!(
                "INSERT INTO snapshot_entries (snapshot, path, blob, size, modified_at) VALUES {} \
                 ON CONFLICT (snapshot, path) DO UPDATE SET blob = excluded.blob, \
                 size = excluded.size, modified_at = excluded.modified_at",
                crate::sql_rows(chunk.len(), 2, 4, |p| {
                    format!("($1, ${p}, ${}, ${}, ${})", p + 1, p + 2, p + 3)
                })
            );
            let mut query = sqlx::query(&sql).bind(id.as_str());
            for e in chunk {
                query = query
                    .bind(e.path.as_str())
                    .bind(e.blob.to_string())
                    .bind(e.size as i64)
                    .bind(e.modified_at);
            }
            query.execute(&mut *self.tx).await?;
            let mut blobs: Vec<&Digest> = chunk.iter().map(|e| &e.blob).collect();
            blobs.sort();
            blobs.dedup();
            crate::refs::add_refs(&mut self.tx, &RefOwner::Snapshot { id: id.clone() }, &blobs)
                .await?;
            for (path, old) in replaced {
                let now = chunk
                    .iter()
                    .find(|e| e.path.as_str() == path)
                    .map(|e| e.blob.to_string());
                if now.as_deref() != Some(old.as_str()) {
                    release_if_unused(&mut self.tx, id, &old).await?;
                }
            }
        }
        Ok(())
    }

    /// Commits every entry recorded.
    pub async fn commit(self) -> Result<(), MetaError> {
        self.tx.commit().await?;
        Ok(())
    }
}

impl Meta {
    /// Starts an [`EntryBatch`]. On PostgreSQL each claim locks the blob's
    /// row and each snapshot recorded into is locked, until the commit: claim
    /// in digest order, then record in snapshot order, and batches and lone
    /// claims never deadlock on each other.
    pub async fn begin_entry_batch(&self) -> Result<EntryBatch, MetaError> {
        Ok(EntryBatch {
            tx: self.write_tx().await?,
            backend: self.backend,
            staged: Default::default(),
        })
    }
}

impl BlobClaim {
    /// Records the claimed blob at `path` in staged snapshot `id`, in the claim's
    /// transaction: the blob cannot be collected between being stored and being
    /// referenced. Commit the claim to make it count.
    pub async fn put_snapshot_entry(
        &mut self,
        id: &SnapshotId,
        path: &TreePath,
        size: u64,
        modified_at: i64,
    ) -> Result<(), MetaError> {
        require_staged(&mut self.tx, self.backend, id).await?;
        let entry = SnapshotEntry {
            path: path.clone(),
            blob: self.digest.clone(),
            size,
            modified_at,
        };
        upsert_entry(&mut self.tx, id, &entry).await
    }
}

impl Meta {
    /// Stages a new snapshot of `repo` (created as `kind` if absent; refused if
    /// another kind holds the name), starting from `base`.
    pub async fn create_snapshot(
        &self,
        repo: &RepoName,
        kind: RepositoryKind,
        base: &SnapshotBase,
        note: &str,
    ) -> Result<SnapshotRecord, MetaError> {
        let mut tx = self.write_tx().await?;
        crate::repos::ensure_repository(&mut tx, repo, kind).await?;
        if self.backend == Backend::Postgres {
            // Serialises number allocation per repository.
            sqlx::query("SELECT name FROM repositories WHERE name = $1 FOR UPDATE")
                .bind(repo.as_str())
                .execute(&mut *tx)
                .await?;
        }
        let number: i64 =
            sqlx::query("SELECT COALESCE(MAX(number), 0) + 1 FROM snapshots WHERE repo = $1")
                .bind(repo.as_str())
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
        let base_id = match base {
            SnapshotBase::Empty => None,
            SnapshotBase::Published => {
                sqlx::query("SELECT id FROM snapshots WHERE repo = $1 AND state = 'published'")
                    .bind(repo.as_str())
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|r| r.try_get::<String, _>(0))
                    .transpose()?
            }
            SnapshotBase::Snapshot(id) => {
                let row = sqlx::query("SELECT repo FROM snapshots WHERE id = $1")
                    .bind(id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| MetaError::NoSuchSnapshot(id.to_string()))?;
                if row.try_get::<String, _>(0)? != repo.as_str() {
                    return Err(MetaError::NoSuchSnapshot(format!(
                        "{id} is not a snapshot of {repo}"
                    )));
                }
                Some(id.as_str().to_owned())
            }
        };
        let id = SnapshotId(uuid::Uuid::new_v4().simple().to_string());
        let now = unix_now();
        sqlx::query(
            "INSERT INTO snapshots (id, repo, number, state, note, created_at) \
             VALUES ($1, $2, $3, 'staged', $4, $5)",
        )
        .bind(id.as_str())
        .bind(repo.as_str())
        .bind(number)
        .bind(note)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if let Some(base_id) = base_id {
            sqlx::query(
                "INSERT INTO snapshot_entries (snapshot, path, blob, size, modified_at) \
                 SELECT $1, path, blob, size, modified_at FROM snapshot_entries WHERE snapshot = $2",
            )
            .bind(id.as_str())
            .bind(&base_id)
            .execute(&mut *tx)
            .await?;
            // The base's references keep these blobs alive until this commits,
            // and this snapshot's own keep them afterwards.
            sqlx::query(
                "INSERT INTO blob_refs (blob, owner) \
                 SELECT DISTINCT blob, $1 FROM snapshot_entries WHERE snapshot = $2 \
                 ON CONFLICT (blob, owner) DO NOTHING",
            )
            .bind(RefOwner::Snapshot { id: id.clone() }.key())
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(SnapshotRecord {
            id,
            repo: repo.clone(),
            number,
            state: SnapshotState::Staged,
            note: note.to_owned(),
            created_at: now,
            published_at: None,
            retired_at: None,
        })
    }

    /// The snapshot `id`, if it exists.
    pub async fn snapshot(&self, id: &SnapshotId) -> Result<Option<SnapshotRecord>, MetaError> {
        let row = sqlx::query(&format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(snapshot_row).transpose()
    }

    /// Snapshot number `number` of `repo`, if it exists.
    pub async fn snapshot_by_number(
        &self,
        repo: &RepoName,
        number: i64,
    ) -> Result<Option<SnapshotRecord>, MetaError> {
        let row = sqlx::query(&format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE repo = $1 AND number = $2"
        ))
        .bind(repo.as_str())
        .bind(number)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(snapshot_row).transpose()
    }

    /// Every snapshot of `repo`, newest first.
    pub async fn snapshots(&self, repo: &RepoName) -> Result<Vec<SnapshotRecord>, MetaError> {
        let rows = sqlx::query(&format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE repo = $1 ORDER BY number DESC"
        ))
        .bind(repo.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(snapshot_row).collect()
    }

    /// The published snapshot of `repo`, if any.
    pub async fn published_snapshot(
        &self,
        repo: &RepoName,
    ) -> Result<Option<SnapshotRecord>, MetaError> {
        let row = sqlx::query(&format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE repo = $1 AND state = 'published'"
        ))
        .bind(repo.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(snapshot_row).transpose()
    }

    /// Records entries for blobs that are already stored, in one transaction.
    /// Each blob is claimed live first, so none can be collected before its
    /// reference commits. Returns the blobs that are not stored (their entries
    /// are not recorded): the caller stores them and records them through a claim.
    pub async fn put_existing_snapshot_entries(
        &self,
        id: &SnapshotId,
        entries: &[ExistingEntry],
    ) -> Result<Vec<Digest>, MetaError> {
        let mut tx = self.write_tx().await?;
        require_staged(&mut tx, self.backend, id).await?;
        let now = unix_now();
        let mut missing = Vec::new();
        for e in entries {
            let size = sqlx::query(
                "UPDATE blobs SET last_used_at = $2 WHERE digest = $1 AND state = 'live' RETURNING size",
            )
            .bind(e.blob.to_string())
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get::<i64, _>(0))
            .transpose()?;
            match size {
                Some(size) => {
                    let entry = SnapshotEntry {
                        path: e.path.clone(),
                        blob: e.blob.clone(),
                        size: size as u64,
                        modified_at: e.modified_at,
                    };
                    upsert_entry(&mut tx, id, &entry).await?;
                }
                None => missing.push(e.blob.clone()),
            }
        }
        tx.commit().await?;
        Ok(missing)
    }

    /// Removes `paths` from staged snapshot `id`; returns how many were there.
    pub async fn remove_snapshot_entries(
        &self,
        id: &SnapshotId,
        paths: &[TreePath],
    ) -> Result<u64, MetaError> {
        let mut tx = self.write_tx().await?;
        require_staged(&mut tx, self.backend, id).await?;
        let mut removed = 0;
        for path in paths {
            let blob = sqlx::query(
                "DELETE FROM snapshot_entries WHERE snapshot = $1 AND path = $2 RETURNING blob",
            )
            .bind(id.as_str())
            .bind(path.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get::<String, _>(0))
            .transpose()?;
            if let Some(blob) = blob {
                removed += 1;
                release_if_unused(&mut tx, id, &blob).await?;
            }
        }
        tx.commit().await?;
        Ok(removed)
    }

    /// The entry at `path` in snapshot `id`.
    pub async fn snapshot_entry(
        &self,
        id: &SnapshotId,
        path: &TreePath,
    ) -> Result<Option<SnapshotEntry>, MetaError> {
        let row = sqlx::query(
            "SELECT path, blob, size, modified_at FROM snapshot_entries WHERE snapshot = $1 AND path = $2",
        )
        .bind(id.as_str())
        .bind(path.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| entry_row(&r, 0)).transpose()
    }

    /// Up to `limit` entries of snapshot `id` in path order, below `under` (the
    /// whole tree when `None`) and after `after` (for paging).
    pub async fn snapshot_entries(
        &self,
        id: &SnapshotId,
        under: Option<&TreePath>,
        after: Option<&TreePath>,
        limit: u32,
    ) -> Result<Vec<SnapshotEntry>, MetaError> {
        let (start, end) = match under {
            Some(dir) => {
                let prefix = format!("{dir}/");
                let end = prefix_end(&prefix);
                (prefix, Some(end))
            }
            None => (String::new(), None),
        };
        let start = match after {
            Some(a) if a.as_str() >= start.as_str() => format!("{a}\u{1}"),
            _ => start,
        };
        let rows = match end {
            Some(end) => {
                sqlx::query(
                    "SELECT path, blob, size, modified_at FROM snapshot_entries \
                     WHERE snapshot = $1 AND path >= $2 AND path < $3 ORDER BY path LIMIT $4",
                )
                .bind(id.as_str())
                .bind(start)
                .bind(end)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT path, blob, size, modified_at FROM snapshot_entries \
                     WHERE snapshot = $1 AND path >= $2 ORDER BY path LIMIT $3",
                )
                .bind(id.as_str())
                .bind(start)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(|r| entry_row(r, 0)).collect()
    }

    /// The names directly in directory `dir` (the top when `None`) of snapshot
    /// `id`, in order, at most `limit`. One query per name, skipping each
    /// subdirectory's contents, so a listing costs its own length and not the
    /// size of the tree below it.
    pub async fn snapshot_children(
        &self,
        id: &SnapshotId,
        dir: Option<&TreePath>,
        limit: u32,
    ) -> Result<Vec<DirChild>, MetaError> {
        let prefix = dir.map(|d| format!("{d}/")).unwrap_or_default();
        let end = (!prefix.is_empty()).then(|| prefix_end(&prefix));
        let mut from = prefix.clone();
        let mut children = Vec::new();
        while children.len() < limit as usize {
            let row = sqlx::query(
                "SELECT path, blob, size, modified_at FROM snapshot_entries \
                 WHERE snapshot = $1 AND path >= $2 ORDER BY path LIMIT 1",
            )
            .bind(id.as_str())
            .bind(&from)
            .fetch_optional(&self.pool)
            .await?;
            let Some(row) = row else { break };
            let entry = entry_row(&row, 0)?;
            let path = entry.path.as_str();
            if end.as_deref().is_some_and(|end| path >= end) || !path.starts_with(&prefix) {
                break;
            }
            let rest = &path[prefix.len()..];
            match rest.split_once('/') {
                None => {
                    from = format!("{path}\u{1}");
                    children.push(DirChild::File(entry));
                }
                Some((name, _)) => {
                    let sub = format!("{prefix}{name}");
                    from = prefix_end(&format!("{sub}/"));
                    let sub = TreePath::new(&sub)
                        .map_err(|e| MetaError::Corrupt(format!("snapshot directory: {e}")))?;
                    children.push(DirChild::Dir(sub));
                }
            }
        }
        Ok(children)
    }

    /// How many entries snapshot `id` has and how many bytes they name.
    pub async fn snapshot_totals(&self, id: &SnapshotId) -> Result<(u64, u64), MetaError> {
        let row = sqlx::query(
            "SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM snapshot_entries WHERE snapshot = $1",
        )
        .bind(id.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok((
            row.try_get::<i64, _>(0)? as u64,
            row.try_get::<i64, _>(1)? as u64,
        ))
    }

    /// Publishes snapshot `id` (staged, or retired: a rollback), retiring the
    /// one it replaces, in one transaction. Returns the replaced snapshot.
    pub async fn publish_snapshot(&self, id: &SnapshotId) -> Result<Option<SnapshotId>, MetaError> {
        let mut tx = self.write_tx().await?;
        let state = locked_state(&mut tx, self.backend, id).await?;
        if state == SnapshotState::Published {
            tx.commit().await?;
            return Ok(None);
        }
        let repo: String = sqlx::query("SELECT repo FROM snapshots WHERE id = $1")
            .bind(id.as_str())
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        let now = unix_now();
        let previous = sqlx::query(
            "UPDATE snapshots SET state = 'retired', retired_at = $2 \
             WHERE repo = $1 AND state = 'published' RETURNING id",
        )
        .bind(&repo)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get::<String, _>(0).map(SnapshotId))
        .transpose()?;
        sqlx::query(
            "UPDATE snapshots SET state = 'published', published_at = $2, retired_at = NULL WHERE id = $1",
        )
        .bind(id.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(previous)
    }

    /// The entry served for `path` of `repo`: from the published snapshot, else
    /// from the most recently retired snapshot retired at or after
    /// `grace_cutoff` that has it.
    pub async fn serve_snapshot_entry(
        &self,
        repo: &RepoName,
        path: &TreePath,
        grace_cutoff: i64,
    ) -> Result<Option<ServedEntry>, MetaError> {
        let row = sqlx::query(
            "SELECT e.path, e.blob, e.size, e.modified_at, s.id, s.state FROM snapshots s \
             JOIN snapshot_entries e ON e.snapshot = s.id AND e.path = $2 \
             WHERE s.repo = $1 AND (s.state = 'published' OR (s.state = 'retired' AND s.retired_at >= $3)) \
             ORDER BY CASE WHEN s.state = 'published' THEN 0 ELSE 1 END, s.retired_at DESC LIMIT 1",
        )
        .bind(repo.as_str())
        .bind(path.as_str())
        .bind(grace_cutoff)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(ServedEntry {
            entry: entry_row(&row, 0)?,
            snapshot: SnapshotId(row.try_get(4)?),
            current: row.try_get::<String, _>(5)? == "published",
        }))
    }

    /// Deletes snapshot `id` (staged or retired; never the published one) and
    /// drops its references, so garbage collection may take what only it held.
    pub async fn delete_snapshot(&self, id: &SnapshotId) -> Result<(), MetaError> {
        self.delete_snapshot_unless(id, false).await.map(|_| ())
    }

    /// Deletes staged or retired snapshot `id` only if it has no entries, in
    /// the transaction that checks it, so an entry recorded meanwhile is
    /// never dropped with it; `false` when entries kept it.
    pub async fn delete_snapshot_if_empty(&self, id: &SnapshotId) -> Result<bool, MetaError> {
        self.delete_snapshot_unless(id, true).await
    }

    async fn delete_snapshot_unless(
        &self,
        id: &SnapshotId,
        only_if_empty: bool,
    ) -> Result<bool, MetaError> {
        let mut tx = self.write_tx().await?;
        let state = locked_state(&mut tx, self.backend, id).await?;
        if state == SnapshotState::Published {
            return Err(MetaError::SnapshotPublished(id.to_string()));
        }
        if only_if_empty
            && sqlx::query("SELECT 1 FROM snapshot_entries WHERE snapshot = $1 LIMIT 1")
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await?
                .is_some()
        {
            return Ok(false);
        }
        sqlx::query("DELETE FROM snapshot_entries WHERE snapshot = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        crate::refs::drop_refs(&mut tx, &RefOwner::Snapshot { id: id.clone() }).await?;
        sqlx::query("DELETE FROM snapshots WHERE id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Publishes staged snapshot `id` only if the snapshot its repository
    /// publishes now is still `expected` (`None`: none is published), checked
    /// in the publishing transaction; `false` (nothing changed) otherwise. A
    /// writer that prepared a change from `expected` then never undoes a
    /// change another writer published meanwhile.
    pub async fn publish_snapshot_replacing(
        &self,
        id: &SnapshotId,
        expected: Option<&SnapshotId>,
    ) -> Result<bool, MetaError> {
        let mut tx = self.write_tx().await?;
        require_staged(&mut tx, self.backend, id).await?;
        let repo: String = sqlx::query("SELECT repo FROM snapshots WHERE id = $1")
            .bind(id.as_str())
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if self.backend == Backend::Postgres {
            // Two writers checking the same repository take turns here.
            sqlx::query("SELECT name FROM repositories WHERE name = $1 FOR UPDATE")
                .bind(&repo)
                .execute(&mut *tx)
                .await?;
        }
        let current =
            sqlx::query("SELECT id FROM snapshots WHERE repo = $1 AND state = 'published'")
                .bind(&repo)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get::<String, _>(0))
                .transpose()?;
        if current.as_deref() != expected.map(SnapshotId::as_str) {
            return Ok(false);
        }
        let now = unix_now();
        sqlx::query(
            "UPDATE snapshots SET state = 'retired', retired_at = $2 \
             WHERE repo = $1 AND state = 'published'",
        )
        .bind(&repo)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE snapshots SET state = 'published', published_at = $2, retired_at = NULL WHERE id = $1",
        )
        .bind(id.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Deletes the retired snapshots of `repo` beyond the newest `keep_retired`
    /// that were retired before `retired_before` (never one inside the grace
    /// period). Returns what was deleted.
    pub async fn prune_snapshots(
        &self,
        repo: &RepoName,
        keep_retired: u32,
        retired_before: i64,
    ) -> Result<Vec<SnapshotId>, MetaError> {
        let rows = sqlx::query(
            "SELECT id, retired_at FROM snapshots WHERE repo = $1 AND state = 'retired' \
             ORDER BY retired_at DESC, number DESC",
        )
        .bind(repo.as_str())
        .fetch_all(&self.pool)
        .await?;
        let mut deleted = Vec::new();
        for row in rows.iter().skip(keep_retired as usize) {
            let retired_at: Option<i64> = row.try_get(1)?;
            if retired_at.is_some_and(|t| t < retired_before) {
                let id = SnapshotId(row.try_get(0)?);
                match self.delete_snapshot(&id).await {
                    Ok(()) => deleted.push(id),
                    // Rolled back to meanwhile, or deleted by another pruner.
                    Err(MetaError::SnapshotPublished(_) | MetaError::NoSuchSnapshot(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(deleted)
    }
}
