//! Snapshots of the repositories that serve a tree of files: OSTree, RPM and
//! file repositories (one seam, so each format only *produces* snapshots).
//!
//! A format fills a [`Staged`] snapshot — each file streamed into the blob
//! store, verified, and recorded under a live claim so garbage collection can
//! never take it — and then publishes it: one transaction switches what the
//! repository serves (see `wharf_meta`'s snapshots module). The snapshot it
//! replaces stays servable for the grace period, so a client that read the old
//! summary or repomd.xml still finds every file it names; publishing an older
//! snapshot again is a rollback. Serving (`wharf-http`'s tree surface) asks
//! [`Snapshots::locate`] which repository a URL path names and
//! [`Snapshots::resolve`] which blob answers it.

mod batch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wharf_blob::{BlobError, BlobStore, ByteRange, ByteStream};
use wharf_core::{Digest, RepoName, RepositoryKind, TreePath};
use wharf_meta::{
    DirChild, ExistingEntry, Meta, MetaError, ServedEntry, SnapshotBase, SnapshotEntry, SnapshotId,
    SnapshotRecord, SnapshotState,
};

/// `bytes` as a body of one chunk.
fn one_chunk(bytes: Bytes) -> ByteStream {
    Box::pin(futures_util::stream::once(async move {
        Ok::<_, std::io::Error>(bytes)
    }))
}

/// How long a snapshot that was replaced keeps answering for the paths the
/// published one lacks, unless configured otherwise (`publish.grace_secs`).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// Content-addressed entries of one snapshot held in memory at most (about
/// 200 bytes each): a larger snapshot is served with a query per name.
pub const ADDRESSED_INDEX_MAX: usize = 200_000;

/// How often a name missing from a content-addressed index may read the
/// index again (a new snapshot may have been published by another process).
const ADDRESSED_REREAD: Duration = Duration::from_secs(1);

/// The indexes, per repository and prefix.
type AddressedIndexes = HashMap<(RepoName, String), Arc<AddressedIndex>>;

/// The content-addressed entries of a published snapshot, as read at `read_at`.
struct AddressedIndex {
    /// `None`: nothing was published, or the snapshot was too large to hold.
    snapshot: Option<SnapshotId>,
    read_at: Instant,
    entries: HashMap<String, SnapshotEntry>,
    /// The snapshot held more than [`ADDRESSED_INDEX_MAX`]: read again rarely.
    too_large: bool,
}

impl AddressedIndex {
    /// A second, and a second more per 10,000 entries: misses (objects of a
    /// snapshot published since, probes of absent names) on a large index
    /// must not turn into reading it whole every second; they are resolved
    /// by a query meanwhile.
    fn reread_after(&self) -> Duration {
        if self.too_large {
            ADDRESSED_TOO_LARGE_REREAD
        } else {
            ADDRESSED_REREAD * (1 + (self.entries.len() / 10_000) as u32)
        }
    }
}

/// How often a snapshot too large to index is looked at again.
const ADDRESSED_TOO_LARGE_REREAD: Duration = Duration::from_secs(600);

/// Files up to this size are read whole and served with their headers in
/// one write (OSTree objects, repomd.xml); larger ones are streamed in
/// chunks that hold no thread while the client does not read.
pub const SMALL_READ_BYTES: u64 = 32 * 1024;

/// Files up to this size given whole to [`Staged::put_bytes`] are written by
/// the group commit itself, many with one flush, instead of each staging an
/// upload of its own (an OSTree mirror stores thousands of objects of a few
/// hundred bytes; larger files are streamed as before).
const SMALL_FILE_BYTES: usize = 64 * 1024;

/// How long the list of repository names used to split URL paths is trusted.
/// A repository created on another replica is served within this time.
const NAMES_TTL: Duration = Duration::from_secs(1);

/// How old the list of names must be before a path naming none of them reads
/// it again.
const NAMES_MISS_TTL: Duration = Duration::from_millis(100);

/// The longest of `names` that `raw` names (itself, or a prefix ending at a `/`).
fn longest_named<'a>(names: &'a [RepoName], raw: &str) -> Option<&'a RepoName> {
    let mut best: Option<&RepoName> = None;
    for name in names {
        let n = name.as_str();
        let names_it = raw == n
            || (raw.len() > n.len() && raw.starts_with(n) && raw.as_bytes()[n.len()] == b'/');
        if names_it && best.is_none_or(|b| n.len() > b.as_str().len()) {
            best = Some(name);
        }
    }
    best
}

/// Repository names of one kind, and when they were read.
type NamesRead = (Instant, Arc<Vec<RepoName>>);

/// What went wrong with a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The metadata database.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// The blob store (including a digest that did not match the bytes).
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// The snapshot named is not staged (it was published or discarded).
    #[error("snapshot {0} is not staged")]
    NotStaged(SnapshotId),
    /// The repository has no snapshot of that number.
    #[error("{repo} has no snapshot {number}")]
    NoSuchNumber {
        /// The repository.
        repo: RepoName,
        /// The number asked for.
        number: i64,
    },
}

/// Where a new snapshot starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// Empty.
    Empty,
    /// A copy of what is published now: an incremental update.
    Published,
}

/// A file stored into a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// The blob holding its bytes.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
}

/// A URL path split into the repository it names and the path inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The repository: the longest prefix of the path naming one of the kind asked.
    pub repo: RepoName,
    /// The rest; `None` for the repository's top directory.
    pub path: Option<TreePath>,
}

/// The snapshots of every tree repository: cheap to clone, shared by the
/// server, the jobs and the CLI.
#[derive(Clone)]
pub struct Snapshots {
    meta: Meta,
    blobs: Arc<BlobStore>,
    grace: Duration,
    names: Arc<Mutex<HashMap<RepositoryKind, NamesRead>>>,
    /// Per repository and prefix, the published snapshot's content-addressed
    /// entries, read once (see [`Snapshots::resolve_addressed`]).
    addressed: Arc<Mutex<AddressedIndexes>>,
    /// Held while an index is read, so a burst of misses reads it once.
    addressed_load: Arc<tokio::sync::Mutex<()>>,
    /// Started by the first file stored (it needs a runtime).
    committer: Arc<OnceLock<batch::Committer>>,
    /// Small files served lately, by blob (see [`Snapshots::read_small`]).
    small: Arc<Mutex<SmallFiles>>,
}

/// Most bytes of small files kept in memory for serving.
const SMALL_CACHE_BYTES: usize = 64 << 20;

/// Small served files by blob digest, least recently used dropped first. A
/// blob's bytes never change, so a hit is always right; and a blob is only
/// read here after an entry of a served snapshot resolved to it, which keeps
/// it from collection, so nothing collected is served from here either.
struct SmallFiles {
    /// Bounded by bytes below, not by count.
    files: hashlink::LruCache<Digest, Bytes>,
    bytes: usize,
}

impl Default for SmallFiles {
    fn default() -> SmallFiles {
        SmallFiles {
            files: hashlink::LruCache::new_unbounded(),
            bytes: 0,
        }
    }
}

impl SmallFiles {
    fn get(&mut self, digest: &Digest) -> Option<Bytes> {
        self.files.get(digest).cloned()
    }

    fn insert(&mut self, digest: Digest, bytes: Bytes) {
        self.bytes += bytes.len();
        if let Some(old) = self.files.insert(digest, bytes) {
            self.bytes -= old.len();
        }
        while self.bytes > SMALL_CACHE_BYTES {
            match self.files.remove_lru() {
                Some((_, old)) => self.bytes -= old.len(),
                None => break,
            }
        }
    }
}

impl std::fmt::Debug for Snapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshots")
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl Snapshots {
    /// Snapshots kept in `meta`, their bytes in `blobs`, with the default grace period.
    pub fn new(meta: Meta, blobs: Arc<BlobStore>) -> Snapshots {
        Snapshots {
            meta,
            blobs,
            grace: DEFAULT_GRACE,
            names: Arc::default(),
            addressed: Arc::default(),
            addressed_load: Arc::default(),
            committer: Arc::default(),
            small: Arc::default(),
        }
    }

    /// The same, with another grace period.
    pub fn with_grace(mut self, grace: Duration) -> Snapshots {
        self.grace = grace;
        self
    }

    fn committer(&self) -> &batch::Committer {
        self.committer
            .get_or_init(|| batch::Committer::start(self.meta.clone(), self.blobs.clone()))
    }

    /// The grace period.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// The metadata database.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The blob store.
    pub fn blobs(&self) -> &Arc<BlobStore> {
        &self.blobs
    }

    /// Stages a new snapshot of `repo` (created as `kind` if it does not exist).
    pub async fn stage(
        &self,
        repo: &RepoName,
        kind: RepositoryKind,
        base: Base,
        note: &str,
    ) -> Result<Staged, SnapshotError> {
        let base = match base {
            Base::Empty => SnapshotBase::Empty,
            Base::Published => SnapshotBase::Published,
        };
        let record = self.meta.create_snapshot(repo, kind, &base, note).await?;
        self.forget_names(kind);
        Ok(Staged {
            snapshots: self.clone(),
            record,
        })
    }

    /// Goes on filling a staged snapshot (after a crash or restart).
    pub async fn resume(&self, id: &SnapshotId) -> Result<Staged, SnapshotError> {
        match self.meta.snapshot(id).await? {
            Some(record) if record.state == SnapshotState::Staged => Ok(Staged {
                snapshots: self.clone(),
                record,
            }),
            _ => Err(SnapshotError::NotStaged(id.clone())),
        }
    }

    /// The newest staged snapshot of `repo`, for a run that resumes its work.
    pub async fn latest_staged(&self, repo: &RepoName) -> Result<Option<Staged>, SnapshotError> {
        let newest = self
            .meta
            .snapshots(repo)
            .await?
            .into_iter()
            .find(|s| s.state == SnapshotState::Staged);
        Ok(newest.map(|record| Staged {
            snapshots: self.clone(),
            record,
        }))
    }

    /// Publishes snapshot `id`; returns the one it replaced.
    pub async fn publish(&self, id: &SnapshotId) -> Result<Option<SnapshotId>, SnapshotError> {
        Ok(self.meta.publish_snapshot(id).await?)
    }

    /// Publishes snapshot number `number` of `repo` again (a rollback, or a
    /// staged snapshot published by hand).
    pub async fn publish_number(
        &self,
        repo: &RepoName,
        number: i64,
    ) -> Result<SnapshotRecord, SnapshotError> {
        let record = self.by_number(repo, number).await?;
        self.meta.publish_snapshot(&record.id).await?;
        Ok(self.meta.snapshot(&record.id).await?.unwrap_or(record))
    }

    /// Snapshot number `number` of `repo`.
    pub async fn by_number(
        &self,
        repo: &RepoName,
        number: i64,
    ) -> Result<SnapshotRecord, SnapshotError> {
        self.meta
            .snapshot_by_number(repo, number)
            .await?
            .ok_or_else(|| SnapshotError::NoSuchNumber {
                repo: repo.clone(),
                number,
            })
    }

    /// Every snapshot of `repo`, newest first.
    pub async fn list(&self, repo: &RepoName) -> Result<Vec<SnapshotRecord>, SnapshotError> {
        Ok(self.meta.snapshots(repo).await?)
    }

    /// The published snapshot of `repo`.
    pub async fn published(
        &self,
        repo: &RepoName,
    ) -> Result<Option<SnapshotRecord>, SnapshotError> {
        Ok(self.meta.published_snapshot(repo).await?)
    }

    /// Deletes a staged or retired snapshot; what only it held becomes garbage.
    pub async fn discard(&self, id: &SnapshotId) -> Result<(), SnapshotError> {
        Ok(self.meta.delete_snapshot(id).await?)
    }

    /// Deletes the retired snapshots of `repo` beyond the newest `keep_retired`,
    /// never one retired within the grace period.
    pub async fn prune(
        &self,
        repo: &RepoName,
        keep_retired: u32,
    ) -> Result<Vec<SnapshotId>, SnapshotError> {
        let cutoff = self.grace_cutoff();
        Ok(self
            .meta
            .prune_snapshots(repo, keep_retired, cutoff)
            .await?)
    }

    fn grace_cutoff(&self) -> i64 {
        wharf_meta::unix_now() - i64::try_from(self.grace.as_secs()).unwrap_or(i64::MAX)
    }

    /// Splits `raw` (a URL path after the surface's prefix, percent-decoded,
    /// with no leading or trailing `/`) into the repository of `kind` it names
    /// and the path inside it. `None`: no repository of that kind is named, or
    /// the rest is not a valid path.
    pub async fn locate(
        &self,
        kind: RepositoryKind,
        raw: &str,
    ) -> Result<Option<Located>, SnapshotError> {
        let mut names = self.names(kind).await?;
        if longest_named(&names, raw).is_none() && self.names_older_than(kind, NAMES_MISS_TTL) {
            // A miss may be a repository created by another process a moment
            // ago (a CLI sync or promotion beside the server): the list is
            // read again, at most once per NAMES_MISS_TTL, so probes of
            // names that do not exist cannot turn into a query each.
            self.forget_names(kind);
            names = self.names(kind).await?;
        }
        let Some(repo) = longest_named(&names, raw) else {
            return Ok(None);
        };
        let rest = raw[repo.as_str().len()..].trim_start_matches('/');
        if rest.is_empty() {
            return Ok(Some(Located {
                repo: repo.clone(),
                path: None,
            }));
        }
        Ok(TreePath::new(rest).ok().map(|path| Located {
            repo: repo.clone(),
            path: Some(path),
        }))
    }

    async fn names(&self, kind: RepositoryKind) -> Result<Arc<Vec<RepoName>>, SnapshotError> {
        if let Some((at, names)) = self.names.lock().expect("names lock").get(&kind) {
            if at.elapsed() < NAMES_TTL {
                return Ok(names.clone());
            }
        }
        let names: Arc<Vec<RepoName>> = Arc::new(
            self.meta
                .list_repositories(Some(kind))
                .await?
                .into_iter()
                .map(|r| r.name)
                .collect(),
        );
        self.names
            .lock()
            .expect("names lock")
            .insert(kind, (Instant::now(), names.clone()));
        Ok(names)
    }

    fn names_older_than(&self, kind: RepositoryKind, age: Duration) -> bool {
        self.names
            .lock()
            .expect("names lock")
            .get(&kind)
            .is_none_or(|(at, _)| at.elapsed() >= age)
    }

    fn forget_names(&self, kind: RepositoryKind) {
        self.names.lock().expect("names lock").remove(&kind);
    }

    /// The entry that answers `path` of `repo`: the published snapshot's, else
    /// a snapshot's retired within the grace period.
    pub async fn resolve(
        &self,
        repo: &RepoName,
        path: &TreePath,
    ) -> Result<Option<ServedEntry>, SnapshotError> {
        Ok(self
            .meta
            .serve_snapshot_entry(repo, path, self.grace_cutoff())
            .await?)
    }

    /// [`resolve`](Snapshots::resolve) for a path under `prefix` whose name
    /// says its bytes (OSTree's `objects/`: the same name is the same bytes
    /// in every snapshot). Such entries of the published snapshot are read
    /// into memory once, up to [`ADDRESSED_INDEX_MAX`] of them, so a pull of
    /// thousands of objects costs no query per object; a name missing from
    /// the index (a newer snapshot, or a larger one) is resolved as usual.
    ///
    /// Why it answers what `resolve` would: an index is used only while it is
    /// younger than the grace period, and the snapshot it was read from was
    /// published when it was read, so it is still published or retired within
    /// the grace period, whose entries are served (and whose blobs are kept)
    /// all the same.
    pub async fn resolve_addressed(
        &self,
        repo: &RepoName,
        path: &TreePath,
        prefix: &str,
    ) -> Result<Option<ServedEntry>, SnapshotError> {
        if !path.as_str().starts_with(prefix) {
            return self.resolve(repo, path).await;
        }
        let key = (repo.clone(), prefix.to_owned());
        let index = self
            .addressed
            .lock()
            .expect("index lock")
            .get(&key)
            .cloned();
        if let Some(hit) = index.as_ref().and_then(|i| self.addressed_hit(i, path)) {
            return Ok(Some(hit));
        }
        let stale = index.is_none_or(|i| i.read_at.elapsed() >= i.reread_after());
        if stale && self.grace > ADDRESSED_REREAD {
            let _loading = self.addressed_load.lock().await;
            let current = self
                .addressed
                .lock()
                .expect("index lock")
                .get(&key)
                .cloned();
            let index = match current {
                Some(i) if i.read_at.elapsed() < i.reread_after() => i,
                _ => {
                    let read = Arc::new(self.read_addressed(repo, prefix).await?);
                    self.addressed
                        .lock()
                        .expect("index lock")
                        .insert(key, read.clone());
                    read
                }
            };
            if let Some(hit) = self.addressed_hit(&index, path) {
                return Ok(Some(hit));
            }
        }
        self.resolve(repo, path).await
    }

    fn addressed_hit(&self, index: &AddressedIndex, path: &TreePath) -> Option<ServedEntry> {
        if index.read_at.elapsed() >= self.grace {
            return None;
        }
        let snapshot = index.snapshot.clone()?;
        index.entries.get(path.as_str()).map(|e| ServedEntry {
            entry: e.clone(),
            snapshot,
            current: true,
        })
    }

    async fn read_addressed(
        &self,
        repo: &RepoName,
        prefix: &str,
    ) -> Result<AddressedIndex, SnapshotError> {
        let read_at = Instant::now();
        let mut index = AddressedIndex {
            snapshot: None,
            read_at,
            entries: HashMap::new(),
            too_large: false,
        };
        let Some(published) = self.meta.published_snapshot(repo).await? else {
            return Ok(index);
        };
        let Ok(under) = TreePath::new(prefix.trim_end_matches('/')) else {
            return Ok(index);
        };
        let mut pages = std::pin::pin!(self.entry_pages(&published.id, Some(&under), 10_000));
        while let Some(page) = futures_util::TryStreamExt::try_next(&mut pages).await? {
            for e in page {
                index.entries.insert(e.path.as_str().to_owned(), e);
            }
            if index.entries.len() > ADDRESSED_INDEX_MAX {
                // Too large to hold: every name is resolved with a query.
                index.entries = HashMap::new();
                index.too_large = true;
                return Ok(index);
            }
        }
        index.snapshot = Some(published.id.clone());
        Ok(index)
    }

    /// What directory `dir` (the top when `None`) of `repo`'s published
    /// snapshot holds, at most `limit` names; `None` when nothing is published
    /// or no entry lies below `dir`.
    pub async fn children(
        &self,
        repo: &RepoName,
        dir: Option<&TreePath>,
        limit: u32,
    ) -> Result<Option<Vec<DirChild>>, SnapshotError> {
        let Some(published) = self.meta.published_snapshot(repo).await? else {
            return Ok(None);
        };
        let children = self
            .meta
            .snapshot_children(&published.id, dir, limit)
            .await?;
        Ok((dir.is_none() || !children.is_empty()).then_some(children))
    }

    /// Every entry of snapshot `id` below `under` (everything when `None`),
    /// in path order, `page` entries a query: for walks that must not hold a
    /// large snapshot's entries at once.
    pub fn entry_pages<'a>(
        &'a self,
        id: &'a SnapshotId,
        under: Option<&'a TreePath>,
        page: u32,
    ) -> impl futures_util::Stream<Item = Result<Vec<SnapshotEntry>, SnapshotError>> + 'a {
        // The state is the last path read; `None` once a page came back empty.
        futures_util::stream::try_unfold(Some(None::<TreePath>), move |after| async move {
            let Some(after) = after else {
                return Ok(None);
            };
            let entries = self
                .meta
                .snapshot_entries(id, under, after.as_ref(), page)
                .await?;
            Ok(entries
                .last()
                .map(|last| Some(last.path.clone()))
                .map(|next| (entries, Some(next))))
        })
    }

    /// The bytes of a served entry whole, if it is a small file (at most
    /// [`SMALL_READ_BYTES`]); `None` for a larger one, to be streamed with
    /// [`open`](Snapshots::open).
    pub async fn read_small(&self, entry: &SnapshotEntry) -> Result<Option<Bytes>, SnapshotError> {
        if entry.size > SMALL_READ_BYTES {
            return Ok(None);
        }
        // A pull of an OSTree repository asks for thousands of small objects,
        // and a fleet asks for the same ones: from memory they cost no trip
        // to a blocking thread and no open, read and close.
        if let Some(bytes) = self.small.lock().expect("small files").get(&entry.blob) {
            if bytes.len() as u64 == entry.size {
                return Ok(Some(bytes));
            }
        }
        let Some(bytes) = self.blobs.read_small(&entry.blob, SMALL_READ_BYTES).await? else {
            return Ok(None);
        };
        if bytes.len() as u64 != entry.size {
            return Err(SnapshotError::Blob(BlobError::Io(std::io::Error::other(
                format!(
                    "blob {} holds {} bytes, its entry says {}",
                    entry.blob,
                    bytes.len(),
                    entry.size
                ),
            ))));
        }
        self.small
            .lock()
            .expect("small files")
            .insert(entry.blob.clone(), bytes.clone());
        Ok(Some(bytes))
    }

    /// The bytes of a served entry, or a range of them.
    pub async fn open(
        &self,
        entry: &SnapshotEntry,
        range: Option<ByteRange>,
    ) -> Result<ByteStream, SnapshotError> {
        Ok(self.blobs.read(&entry.blob, range).await?)
    }
}

/// A snapshot being filled. Everything recorded in it is already safe from
/// garbage collection; nothing is served until [`Staged::publish`].
#[derive(Debug, Clone)]
pub struct Staged {
    snapshots: Snapshots,
    record: SnapshotRecord,
}

impl Staged {
    /// Its id (keep it to [`Snapshots::resume`] after a crash).
    pub fn id(&self) -> &SnapshotId {
        &self.record.id
    }

    /// Its record as staged.
    pub fn record(&self) -> &SnapshotRecord {
        &self.record
    }

    /// Streams `body` into the blob store and records it at `path`. With
    /// `expected`, the bytes must hash to it (else [`BlobError::DigestMismatch`]
    /// and nothing is recorded), and a blob already stored is recorded without
    /// reading the body at all.
    pub async fn put_stream(
        &self,
        path: &TreePath,
        body: ByteStream,
        expected: Option<&Digest>,
        modified_at: i64,
    ) -> Result<StoredEntry, SnapshotError> {
        let blobs = &self.snapshots.blobs;
        if let Some(expected) = expected {
            if let Some(stored) = self.existing(path, expected, modified_at).await? {
                return Ok(stored);
            }
        }
        let upload = uuid::Uuid::new_v4().simple().to_string();
        let (digest, size) = match expected {
            Some(d) => (
                d.clone(),
                wharf_blob::stage_stream(blobs, &upload, d, body).await?,
            ),
            None => wharf_blob::stage_stream_of_unknown_digest(blobs, &upload, body).await?,
        };
        self.record_staged(path, &upload, digest, size, modified_at)
            .await
    }

    /// Records the stored blob `expected` at `path` if it is stored.
    async fn existing(
        &self,
        path: &TreePath,
        expected: &Digest,
        modified_at: i64,
    ) -> Result<Option<StoredEntry>, SnapshotError> {
        if !self.put_existing(path, expected, modified_at).await? {
            return Ok(None);
        }
        let size = self
            .snapshots
            .meta
            .snapshot_entry(self.id(), path)
            .await?
            .map(|e| e.size)
            .unwrap_or_default();
        Ok(Some(StoredEntry {
            digest: expected.clone(),
            size,
        }))
    }

    /// Publishes the verified upload `upload` and records it at `path`:
    /// through the group commit, else under a claim of its own.
    async fn record_staged(
        &self,
        path: &TreePath,
        upload: &str,
        digest: Digest,
        size: u64,
        modified_at: i64,
    ) -> Result<StoredEntry, SnapshotError> {
        let entry = SnapshotEntry {
            path: path.clone(),
            blob: digest.clone(),
            size,
            modified_at,
        };
        match self
            .through_batch(entry, batch::Body::Upload(upload.to_owned()))
            .await
        {
            Ok(Some(stored)) => Ok(stored),
            Ok(None) => {
                self.claim_and_record(path, upload, digest, size, modified_at)
                    .await
            }
            Err(e) => {
                // Nothing left to publish: the staging area goes (a no-op if it was renamed).
                self.snapshots.blobs.abort_upload(upload).await?;
                Err(e)
            }
        }
    }

    /// Hands `entry`, whose bytes are `body`, to the group commit: `None`
    /// when it did nothing and the file is to be stored alone.
    async fn through_batch(
        &self,
        entry: SnapshotEntry,
        body: batch::Body,
    ) -> Result<Option<StoredEntry>, SnapshotError> {
        let stored = StoredEntry {
            digest: entry.blob.clone(),
            size: entry.size,
        };
        let (path, modified_at) = (entry.path.clone(), entry.modified_at);
        match self
            .snapshots
            .committer()
            .submit(self.id(), entry, body)
            .await
        {
            batch::Outcome::Committed => Ok(Some(stored)),
            batch::Outcome::Failed(e) => Err(e),
            batch::Outcome::Published => {
                self.record_published(&path, &stored.digest, stored.size, modified_at)
                    .await?;
                Ok(Some(stored))
            }
            batch::Outcome::Retry => Ok(None),
        }
    }

    /// Publishes the verified upload `upload` under a claim of its own and
    /// records it at `path`.
    async fn claim_and_record(
        &self,
        path: &TreePath,
        upload: &str,
        digest: Digest,
        size: u64,
        modified_at: i64,
    ) -> Result<StoredEntry, SnapshotError> {
        let meta = &self.snapshots.meta;
        let blobs = &self.snapshots.blobs;
        let mut claim = match meta.claim_blob(&digest, size).await {
            Ok(claim) => claim,
            Err(e) => {
                blobs.abort_upload(upload).await?;
                return Err(e.into());
            }
        };
        if let Err(e) = blobs.publish_upload(upload, &digest).await {
            blobs.abort_upload(upload).await?;
            return Err(e.into());
        }
        claim
            .put_snapshot_entry(self.id(), path, size, modified_at)
            .await?;
        claim.commit().await?;
        Ok(StoredEntry { digest, size })
    }

    /// Records bytes a failed batch left in the store, unrecorded, under a
    /// claim of their own.
    async fn record_published(
        &self,
        path: &TreePath,
        digest: &Digest,
        size: u64,
        modified_at: i64,
    ) -> Result<(), SnapshotError> {
        let mut claim = self.snapshots.meta.claim_blob(digest, size).await?;
        if self.snapshots.blobs.stat(digest).await?.is_none() {
            return Err(BlobError::NotFound(digest.clone()).into());
        }
        claim
            .put_snapshot_entry(self.id(), path, size, modified_at)
            .await?;
        claim.commit().await?;
        Ok(())
    }

    /// Streams `body` into the blob store without recording it: a batch of
    /// files is stored one by one and then recorded in one transaction with
    /// [`record_stored`](Staged::record_stored) (one commit instead of one per
    /// file). Until then the bytes are an orphan that only the collector's
    /// grace period (from the moment they were stored) protects, so record
    /// them well within it; bytes it did not protect are refused by
    /// `record_stored`, not recorded.
    pub async fn store_unrecorded(&self, body: ByteStream) -> Result<StoredEntry, SnapshotError> {
        let blobs = &self.snapshots.blobs;
        let upload = uuid::Uuid::new_v4().simple().to_string();
        let (digest, size) =
            wharf_blob::stage_stream_of_unknown_digest(blobs, &upload, body).await?;
        if let Err(e) = blobs.publish_upload(&upload, &digest).await {
            blobs.abort_upload(&upload).await?;
            return Err(e.into());
        }
        Ok(StoredEntry { digest, size })
    }

    /// Records blobs stored with [`store_unrecorded`](Staged::store_unrecorded),
    /// each claimed live, in one transaction. Bytes a collection took before
    /// their claim (possible only with a grace period shorter than the time
    /// since they were stored) are refused, never recorded: once a blob is
    /// claimed the collector cannot take it, so its bytes are checked then.
    pub async fn record_stored(&self, entries: &[SnapshotEntry]) -> Result<(), SnapshotError> {
        let mut sorted: Vec<&SnapshotEntry> = entries.iter().collect();
        // Blob rows in digest order, as the group commit takes them.
        sorted.sort_by(|a, b| a.blob.cmp(&b.blob));
        let mut tx = self.snapshots.meta.begin_entry_batch().await?;
        for e in &sorted {
            if !tx.claim(&e.blob, e.size).await? {
                return Err(MetaError::Busy(format!(
                    "blob {} is being deleted by garbage collection; store it again",
                    e.blob
                ))
                .into());
            }
            if self.snapshots.blobs.stat(&e.blob).await?.is_none() {
                return Err(BlobError::NotFound(e.blob.clone()).into());
            }
        }
        for e in sorted {
            tx.record(self.id(), e).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// [`put_stream`](Staged::put_stream) for bytes already in memory (small
    /// files: OSTree metadata objects, repomd.xml).
    pub async fn put_bytes(
        &self,
        path: &TreePath,
        bytes: Bytes,
        expected: Option<&Digest>,
        modified_at: i64,
    ) -> Result<StoredEntry, SnapshotError> {
        if bytes.len() > SMALL_FILE_BYTES {
            return self
                .put_stream(path, one_chunk(bytes), expected, modified_at)
                .await;
        }
        let digest = Digest::sha256_of(&bytes);
        if let Some(expected) = expected {
            if *expected != digest {
                return Err(BlobError::DigestMismatch {
                    expected: expected.clone(),
                    actual: digest,
                }
                .into());
            }
            if let Some(stored) = self.existing(path, expected, modified_at).await? {
                return Ok(stored);
            }
        }
        let size = bytes.len() as u64;
        let entry = SnapshotEntry {
            path: path.clone(),
            blob: digest.clone(),
            size,
            modified_at,
        };
        if let Some(stored) = self
            .through_batch(entry, batch::Body::Bytes(bytes.clone()))
            .await?
        {
            return Ok(stored);
        }
        // Stored alone, under a claim of its own.
        let upload = uuid::Uuid::new_v4().simple().to_string();
        wharf_blob::stage_stream(&self.snapshots.blobs, &upload, &digest, one_chunk(bytes)).await?;
        self.claim_and_record(path, &upload, digest, size, modified_at)
            .await
    }

    /// [`put_stream`](Staged::put_stream) from a reader (a local file).
    pub async fn put_reader(
        &self,
        path: &TreePath,
        reader: impl tokio::io::AsyncRead + Send + 'static,
        expected: Option<&Digest>,
        modified_at: i64,
    ) -> Result<StoredEntry, SnapshotError> {
        let body: ByteStream =
            Box::pin(tokio_util::io::ReaderStream::with_capacity(reader, 1 << 20));
        self.put_stream(path, body, expected, modified_at).await
    }

    /// Records the stored blob `digest` at `path`; `false` if it is not stored
    /// (store it with [`put_stream`](Staged::put_stream)).
    pub async fn put_existing(
        &self,
        path: &TreePath,
        digest: &Digest,
        modified_at: i64,
    ) -> Result<bool, SnapshotError> {
        // A write transaction only when there are bytes to record (a mirror
        // asks this of every object it has not seen).
        if self.snapshots.blobs.stat(digest).await?.is_none() {
            return Ok(false);
        }
        let missing = self
            .put_existing_many(&[ExistingEntry {
                path: path.clone(),
                blob: digest.clone(),
                modified_at,
            }])
            .await?;
        Ok(missing.is_empty())
    }

    /// Records many stored blobs in one transaction; returns those not stored.
    pub async fn put_existing_many(
        &self,
        entries: &[ExistingEntry],
    ) -> Result<Vec<Digest>, SnapshotError> {
        Ok(self
            .snapshots
            .meta
            .put_existing_snapshot_entries(self.id(), entries)
            .await?)
    }

    /// The entry at `path`, if recorded.
    pub async fn entry(&self, path: &TreePath) -> Result<Option<SnapshotEntry>, SnapshotError> {
        Ok(self.snapshots.meta.snapshot_entry(self.id(), path).await?)
    }

    /// Every entry below `under`, `page` at a time (see [`Snapshots::entry_pages`]).
    pub fn entry_pages<'a>(
        &'a self,
        under: Option<&'a TreePath>,
        page: u32,
    ) -> impl futures_util::Stream<Item = Result<Vec<SnapshotEntry>, SnapshotError>> + 'a {
        self.snapshots.entry_pages(self.id(), under, page)
    }

    /// Up to `limit` entries in path order, below `under`, after `after`.
    pub async fn entries(
        &self,
        under: Option<&TreePath>,
        after: Option<&TreePath>,
        limit: u32,
    ) -> Result<Vec<SnapshotEntry>, SnapshotError> {
        Ok(self
            .snapshots
            .meta
            .snapshot_entries(self.id(), under, after, limit)
            .await?)
    }

    /// Removes `paths`; returns how many were recorded.
    pub async fn remove(&self, paths: &[TreePath]) -> Result<u64, SnapshotError> {
        Ok(self
            .snapshots
            .meta
            .remove_snapshot_entries(self.id(), paths)
            .await?)
    }

    /// How many entries it has and how many bytes they name.
    pub async fn totals(&self) -> Result<(u64, u64), SnapshotError> {
        Ok(self.snapshots.meta.snapshot_totals(self.id()).await?)
    }

    /// Publishes it; returns the snapshot it replaced.
    pub async fn publish(self) -> Result<Option<SnapshotId>, SnapshotError> {
        self.snapshots.publish(self.id()).await
    }

    /// Publishes it only if the repository still publishes `expected` (the
    /// snapshot this one was prepared from; `None`: nothing), checked in the
    /// publishing transaction; `false`, with nothing changed and this one still
    /// staged, when another writer published meanwhile.
    pub async fn publish_replacing(
        &self,
        expected: Option<&SnapshotId>,
    ) -> Result<bool, SnapshotError> {
        Ok(self
            .snapshots
            .meta
            .publish_snapshot_replacing(self.id(), expected)
            .await?)
    }

    /// Deletes it unpublished.
    pub async fn discard(self) -> Result<(), SnapshotError> {
        self.snapshots.discard(self.id()).await
    }

    /// Discards it only if it holds no entries, checked in the deleting
    /// transaction; `false` when entries kept it.
    pub async fn discard_if_empty(&self) -> Result<bool, SnapshotError> {
        Ok(self
            .snapshots
            .meta
            .delete_snapshot_if_empty(self.id())
            .await?)
    }
}
