//! [`Registry`]: every distribution-spec operation over blob store + metadata.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use wharf_blob::{BlobStore, ByteRange, ByteStream};
use wharf_core::{Digest, Reference, RepoName, RepositoryKind, Tag};
use wharf_meta::{Meta, NewManifest, PutManifestOutcome, ReferrerRecord};

use crate::{manifest::parse_manifest, media, OciError};

/// Limits the registry enforces.
#[derive(Debug, Clone)]
pub struct RegistryLimits {
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: u64,
    /// Memory budget for cached manifest bytes (immutable by digest).
    pub manifest_cache_bytes: u64,
}

/// A manifest as served.
#[derive(Debug, Clone)]
pub struct ManifestContent {
    /// Digest of `bytes`.
    pub digest: Digest,
    /// Media type, used as `Content-Type`.
    pub media_type: String,
    /// The exact bytes pushed.
    pub bytes: Bytes,
}

/// Result of a manifest push.
#[derive(Debug, Clone)]
pub struct PushedManifest {
    /// Digest of the stored bytes.
    pub digest: Digest,
    /// The manifest's subject, echoed in `OCI-Subject`.
    pub subject: Option<Digest>,
    /// The `?tag=` tags now pointing at it, echoed in `OCI-Tag`, in request order.
    pub tagged: Vec<Tag>,
}

/// A blob being served.
pub struct BlobRead {
    /// The blob's full size.
    pub size: u64,
    /// The range served, if one was asked for.
    pub range: Option<ByteRange>,
    /// The bytes.
    pub body: ByteStream,
}

/// One page of a listing, and whether more follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Entries in bytewise order.
    pub items: Vec<String>,
    /// The page was cut at the requested size and more entries exist.
    pub more: bool,
}

/// The OCI registry service; cheap to clone.
#[derive(Clone)]
pub struct Registry {
    blobs: Arc<BlobStore>,
    pub(crate) meta: Meta,
    limits: RegistryLimits,
    cache: Arc<ManifestCache>,
    records: Arc<LookupCache<(String, String), wharf_meta::ManifestRecord>>,
    links: Arc<LookupCache<(String, Digest), u64>>,
    /// Upload sessions a request of this process is writing to or committing.
    busy_uploads: Arc<Mutex<HashSet<String>>>,
    /// Pulls not yet written to the database.
    pulls: Arc<crate::pulls::PullLog>,
    /// Byte quotas per namespace; none unless [`Registry::with_quotas`].
    quotas: Arc<crate::Quotas>,
}

/// The right to write to one upload session, released when dropped.
struct UploadClaim {
    busy: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl Drop for UploadClaim {
    fn drop(&mut self) {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        busy.remove(&self.id);
    }
}

/// How long a tag → manifest or blob-link lookup is reused. Writes through this
/// process invalidate at once; this bounds how stale a replica can be after a
/// write through another replica (or `wharf gc`).
const LOOKUP_TTL: std::time::Duration = std::time::Duration::from_secs(1);
/// Entries kept before the cache starts over.
const LOOKUP_CAPACITY: usize = 50_000;

/// A small time-bounded cache for hot metadata lookups: a manifest GET or blob
/// HEAD then costs no database round trip (which, through the pooled driver,
/// costs several thread hand-offs per query). Misses are single-flight: when a
/// thousand clients ask for the same key the moment its entry expires, one
/// query runs and the others share its answer (found or not), instead of
/// queueing a thousand queries for the pool.
struct LookupCache<K, V> {
    inner: Mutex<HashMap<K, (std::time::Instant, V)>>,
    loading: Mutex<HashMap<K, Arc<tokio::sync::OnceCell<Option<V>>>>>,
    /// Bumped by `clear`: a load that began before a write must not cache
    /// what it read, nor be joined by callers arriving after the write.
    generation: std::sync::atomic::AtomicU64,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> LookupCache<K, V> {
    fn new() -> Self {
        LookupCache {
            inner: Mutex::new(HashMap::new()),
            loading: Mutex::new(HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match inner.get(key) {
            Some((at, v)) if at.elapsed() < LOOKUP_TTL => Some(v.clone()),
            _ => None,
        }
    }

    fn clear(&self) {
        use std::sync::atomic::Ordering;
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        inner.clear();
        self.loading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn put_if_current(&self, key: K, value: V, generation: u64) {
        use std::sync::atomic::Ordering;
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        if inner.len() >= LOOKUP_CAPACITY {
            inner.clear();
        }
        inner.insert(key, (std::time::Instant::now(), value));
    }

    /// The cached value, or the one `load` finds, loaded once however many
    /// callers miss at the same moment. `None` (not found) is shared with the
    /// callers waiting at that moment but never cached, so it is re-checked at
    /// the next request. A failed load is not shared: each waiter tries itself.
    async fn get_or_load<E, F>(&self, key: &K, load: impl FnOnce() -> F) -> Result<Option<V>, E>
    where
        F: std::future::Future<Output = Result<Option<V>, E>>,
    {
        if let Some(v) = self.get(key) {
            return Ok(Some(v));
        }
        let cell = {
            let mut loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
            loading.entry(key.clone()).or_default().clone()
        };
        let result = cell
            .get_or_try_init(|| async {
                // A load that finished while this caller waited for the lock.
                if let Some(v) = self.get(key) {
                    return Ok(Some(v));
                }
                let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
                let found = load().await?;
                if let Some(v) = &found {
                    self.put_if_current(key.clone(), v.clone(), generation);
                }
                Ok(found)
            })
            .await
            .cloned();
        let mut loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        if loading.get(key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            loading.remove(key);
        }
        result
    }
}

/// Manifest bytes by digest. Safe to cache without invalidation because a
/// digest always names the same bytes; only the tag → digest step hits the
/// database, so replicas never serve a stale tag.
struct ManifestCache {
    budget: u64,
    inner: Mutex<(u64, HashMap<Digest, Bytes>)>,
}

impl ManifestCache {
    fn get(&self, digest: &Digest) -> Option<Bytes> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.1.get(digest).cloned()
    }

    fn put(&self, digest: Digest, bytes: Bytes) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let len = bytes.len() as u64;
        if len > self.budget {
            return;
        }
        if inner.0 + len > self.budget {
            // Crude but bounded: start over rather than track recency.
            inner.1.clear();
            inner.0 = 0;
        }
        if inner.1.insert(digest, bytes).is_none() {
            inner.0 += len;
        }
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Registry {
    /// A registry over `blobs` and `meta`.
    pub fn new(blobs: Arc<BlobStore>, meta: Meta, limits: RegistryLimits) -> Registry {
        let cache = Arc::new(ManifestCache {
            budget: limits.manifest_cache_bytes,
            inner: Mutex::new((0, HashMap::new())),
        });
        Registry {
            blobs,
            meta,
            limits,
            cache,
            records: Arc::new(LookupCache::new()),
            links: Arc::new(LookupCache::new()),
            busy_uploads: Arc::new(Mutex::new(HashSet::new())),
            pulls: Arc::default(),
            quotas: Arc::new(crate::Quotas::default()),
        }
    }

    /// This registry, enforcing `quotas` on every push.
    pub fn with_quotas(mut self, quotas: crate::Quotas) -> Registry {
        self.quotas = Arc::new(quotas);
        self
    }

    /// The quotas enforced, with the usage the database has now.
    pub async fn quota_report(&self) -> Result<Vec<(String, u64, u64)>, OciError> {
        self.quotas.report(&self.meta).await
    }

    /// The configured limits.
    pub fn limits(&self) -> &RegistryLimits {
        &self.limits
    }

    /// Size of a blob in `repo` (spec: HEAD blob, end-2).
    pub async fn stat_blob(&self, repo: &RepoName, digest: &Digest) -> Result<u64, OciError> {
        let key = (repo.as_str().to_owned(), digest.clone());
        self.links
            .get_or_load(&key, || self.meta.repo_blob_size(repo, digest))
            .await?
            .ok_or_else(|| OciError::BlobUnknown(digest.clone()))
    }

    /// Streams a blob of `repo`, optionally a range (spec: GET blob, end-2).
    pub async fn read_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<(Option<u64>, Option<u64>)>,
    ) -> Result<BlobRead, OciError> {
        let size = self.stat_blob(repo, digest).await?;
        let range = match range {
            None => None,
            Some(spec) => Some(resolve_range(spec, size)?),
        };
        let body = self.blobs.read(digest, range).await?;
        Ok(BlobRead { size, range, body })
    }

    /// Unlinks a blob from `repo` (spec: end-10).
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<(), OciError> {
        let unlinked = self.meta.unlink_blob(repo, digest).await?;
        // After the write, so a concurrent lookup cannot re-cache the old link.
        self.links.clear();
        if unlinked {
            Ok(())
        } else {
            Err(OciError::BlobUnknown(digest.clone()))
        }
    }

    /// Opens an upload session (spec: POST, end-4a).
    pub async fn start_upload(&self, repo: &RepoName) -> Result<String, OciError> {
        self.refuse_other_kinds(repo).await?;
        let id = new_id();
        self.blobs.create_upload(&id).await?;
        if let Err(e) = self.meta.create_upload(&id, repo).await {
            self.blobs.abort_upload(&id).await?;
            return Err(e.into());
        }
        Ok(id)
    }

    /// Refuses a write into a name that a repository of another kind holds,
    /// before any bytes are taken (the metadata layer refuses it again at commit).
    async fn refuse_other_kinds(&self, repo: &RepoName) -> Result<(), OciError> {
        match self.meta.repository_kind(repo).await? {
            Some(kind) if kind != RepositoryKind::Oci => Err(OciError::WrongKind {
                name: repo.to_string(),
                kind,
            }),
            _ => Ok(()),
        }
    }

    /// Marks `repo` as mirrored from `origin` (an upstream's URL and name),
    /// creating it if needed. A mirrored repository takes sparse indexes:
    /// children a platform filter left out need not be stored, and pulling
    /// one answers `MANIFEST_UNKNOWN`. An ordinary repository keeps requiring
    /// every child of an index.
    pub async fn mark_mirrored(&self, repo: &RepoName, origin: &str) -> Result<(), OciError> {
        self.refuse_other_kinds(repo).await?;
        Ok(self.meta.set_repository_origin(repo, origin).await?)
    }

    /// Uploads a whole blob in one request (spec: POST `?digest=`, end-4b).
    pub async fn put_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: ByteStream,
    ) -> Result<u64, OciError> {
        let id = new_id();
        let size = wharf_blob::stage_stream(&*self.blobs, &id, digest, body).await?;
        if let Err(e) = self.publish_blob(repo, &id, digest, size).await {
            self.blobs.abort_upload(&id).await?;
            return Err(e);
        }
        Ok(size)
    }

    /// A fresh upload id, for [`stage_blob_observed`](Registry::stage_blob_observed).
    pub fn new_upload_id() -> String {
        new_id()
    }

    /// Stages `body` as `digest` in the upload `id`, telling `progress` the
    /// staged size as the bytes are written, so that
    /// [`read_upload`](Registry::read_upload) can serve them to others while
    /// they arrive: the bytes are written once, into the staging area that
    /// becomes the blob. Returns the size once the digest is verified; the
    /// blob is stored only by [`publish_staged_blob`](Registry::publish_staged_blob).
    pub async fn stage_blob_observed(
        &self,
        digest: &Digest,
        id: &str,
        body: ByteStream,
        progress: wharf_blob::Progress,
    ) -> Result<u64, OciError> {
        Ok(wharf_blob::stage_stream_observed(&*self.blobs, id, digest, body, progress).await?)
    }

    /// Publishes the verified upload `id` of
    /// [`stage_blob_observed`](Registry::stage_blob_observed) as `digest`,
    /// linked into `repo`; the upload is discarded if that fails.
    pub async fn publish_staged_blob(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<(), OciError> {
        if let Err(e) = self.publish_blob(repo, id, digest, size).await {
            self.blobs.abort_upload(id).await?;
            return Err(e);
        }
        Ok(())
    }

    /// `len` bytes from `offset` of the upload `id` of
    /// [`stage_blob_observed`](Registry::stage_blob_observed) for `digest`, bytes
    /// its progress has announced: from the staging area while it is one, from
    /// the committed blob once it was published. `BlobUnknown` when it is
    /// neither (the upload was discarded: its digest did not match).
    pub async fn read_upload(
        &self,
        id: &str,
        digest: &Digest,
        offset: u64,
        len: u64,
    ) -> Result<ByteStream, OciError> {
        if len == 0 {
            return Ok(Box::pin(futures_util::stream::empty()));
        }
        match self.blobs.read_upload(id, offset, len).await {
            Err(wharf_blob::BlobError::UploadNotFound(_)) => {}
            other => return Ok(other?),
        }
        // Published (the rename is atomic: the bytes are in one place or the
        // other), or discarded.
        let range = ByteRange {
            start: offset,
            end: offset + len - 1,
        };
        Ok(self.blobs.read(digest, Some(range)).await?)
    }

    /// Makes a verified upload the blob `digest`, linked into `repo`: the live
    /// claim comes first, the bytes are placed under it, the link commits with it.
    async fn publish_blob(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<(), OciError> {
        self.quotas.admit(&self.meta, repo, digest, size).await?;
        let mut claim = self.meta.claim_blob(digest, size).await?;
        self.blobs.publish_upload(id, digest).await?;
        claim.link(repo).await?;
        claim.commit().await?;
        self.quotas.added(repo, size);
        Ok(())
    }

    /// Mounts a blob from `from` (or from anywhere if `None`) into `repo`
    /// (spec: end-11). Returns false when it is not available to mount.
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
    ) -> Result<bool, OciError> {
        // The database says the blob exists; make sure the bytes do too before
        // promising it to the client.
        let Some(size) = self.blobs.stat(digest).await? else {
            return Ok(false);
        };
        self.quotas.admit(&self.meta, repo, digest, size).await?;
        let mounted = self.meta.mount_blob(repo, digest, from).await?.is_some();
        if mounted {
            self.quotas.added(repo, size);
        }
        Ok(mounted)
    }

    async fn check_upload(&self, repo: &RepoName, id: &str) -> Result<(), OciError> {
        match self.meta.upload_repo(id).await? {
            Some(owner) if owner == repo.as_str() => Ok(()),
            _ => Err(OciError::BlobUploadUnknown(id.to_owned())),
        }
    }

    /// Bytes received so far (spec: GET upload, end-13).
    pub async fn upload_status(&self, repo: &RepoName, id: &str) -> Result<u64, OciError> {
        self.check_upload(repo, id).await?;
        Ok(self.blobs.upload_size(id).await?)
    }

    /// Claims an upload session for one request. A second request while the
    /// first still writes would have checked its `Content-Range` against a size
    /// about to change, so it is refused (416 with the current size) rather
    /// than queued behind the first and appended after it.
    async fn claim_upload(&self, id: &str) -> Result<UploadClaim, OciError> {
        let claimed = {
            let mut busy = self.busy_uploads.lock().unwrap_or_else(|e| e.into_inner());
            busy.insert(id.to_owned())
        };
        if claimed {
            return Ok(UploadClaim {
                busy: self.busy_uploads.clone(),
                id: id.to_owned(),
            });
        }
        let size = self.blobs.upload_size(id).await?;
        Err(OciError::ChunkOutOfOrder { size })
    }

    /// Appends a chunk (spec: PATCH, end-5). `range` is the chunk's
    /// `Content-Range` (first and last byte); it must continue the upload.
    pub async fn append_upload(
        &self,
        repo: &RepoName,
        id: &str,
        range: Option<(u64, u64)>,
        content_length: Option<u64>,
        body: ByteStream,
    ) -> Result<u64, OciError> {
        self.check_upload(repo, id).await?;
        let _claim = self.claim_upload(id).await?;
        self.append_claimed(id, range, content_length, body).await
    }

    async fn append_claimed(
        &self,
        id: &str,
        range: Option<(u64, u64)>,
        content_length: Option<u64>,
        body: ByteStream,
    ) -> Result<u64, OciError> {
        let size = self.blobs.upload_size(id).await?;
        if let Some((start, end)) = range {
            if start != size || end < start {
                return Err(OciError::ChunkOutOfOrder { size });
            }
            // `end - start + 1` overflows for `0-18446744073709551615`.
            let chunk_len = (end - start).checked_add(1);
            if content_length.is_some_and(|len| Some(len) != chunk_len) {
                return Err(OciError::ChunkOutOfOrder { size });
            }
        }
        let new_size = self.blobs.append(id, body).await?;
        self.meta.touch_upload(id).await?;
        Ok(new_size)
    }

    /// Completes an upload with an optional last chunk (spec: PUT, end-6).
    pub async fn finish_upload(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        range: Option<(u64, u64)>,
        content_length: Option<u64>,
        body: Option<ByteStream>,
    ) -> Result<u64, OciError> {
        self.check_upload(repo, id).await?;
        let _claim = self.claim_upload(id).await?;
        if let Some(body) = body {
            self.append_claimed(id, range, content_length, body).await?;
        }
        let size = match self.blobs.verify_upload(id, digest).await {
            Ok(size) => size,
            Err(e) => {
                // A digest mismatch discards the bytes, and with them the session.
                self.meta.delete_upload(id).await?;
                return Err(e.into());
            }
        };
        // Until this succeeds the session and its verified bytes stay, so the
        // client may retry the PUT.
        self.publish_blob(repo, id, digest, size).await?;
        self.meta.delete_upload(id).await?;
        Ok(size)
    }

    /// Cancels an upload (spec: DELETE upload, end-12).
    pub async fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<(), OciError> {
        self.check_upload(repo, id).await?;
        self.blobs.abort_upload(id).await?;
        self.meta.delete_upload(id).await?;
        Ok(())
    }

    /// Looks up a manifest without its bytes (spec: HEAD manifest, end-3).
    pub async fn manifest_record(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<wharf_meta::ManifestRecord, OciError> {
        let key = (repo.as_str().to_owned(), reference.to_string());
        self.records
            .get_or_load(&key, || async {
                match reference {
                    Reference::Tag(tag) => self.meta.manifest_by_tag(repo, tag).await,
                    Reference::Digest(digest) => self.meta.manifest_by_digest(repo, digest).await,
                }
            })
            .await?
            .ok_or_else(|| OciError::ManifestUnknown(reference.to_string()))
    }

    /// Fetches a manifest (spec: GET manifest, end-3).
    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<ManifestContent, OciError> {
        let record = self.manifest_record(repo, reference).await?;
        let bytes = match self.cache.get(&record.digest) {
            Some(b) => b,
            None => {
                let mut stream = self.blobs.read(&record.digest, None).await?;
                let mut buf = BytesMut::with_capacity(record.size as usize);
                while let Some(chunk) = stream.next().await {
                    buf.extend_from_slice(&chunk.map_err(wharf_blob::BlobError::Io)?);
                }
                let bytes = buf.freeze();
                self.cache.put(record.digest.clone(), bytes.clone());
                bytes
            }
        };
        Ok(ManifestContent {
            digest: record.digest,
            media_type: record.media_type,
            bytes,
        })
    }

    /// Notes that a client pulled manifest `digest` of `repo` (a GET, not a
    /// HEAD), for retention's "pulled within"; written by [`Registry::flush_pulls`].
    pub fn note_pull(&self, repo: &RepoName, digest: &Digest) {
        self.pulls.note(repo, digest);
    }

    /// Writes the pulls noted since the last flush; returns how many.
    pub async fn flush_pulls(&self) -> Result<usize, OciError> {
        Ok(self.pulls.flush(&self.meta).await?)
    }

    /// When manifest `digest` of `repo` was last pulled, as far as flushed.
    pub async fn last_pulled(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<i64>, OciError> {
        Ok(self.meta.last_pulled(repo, digest).await?)
    }

    /// Stores a manifest and moves the tag (spec: PUT manifest, end-7a), or,
    /// for a push by digest, every tag of `tags` (end-7b, from [`tag_params`]):
    /// the manifest and all its tags commit together, or nothing does.
    ///
    /// [`tag_params`]: crate::tag_params
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        tags: &[Tag],
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<PushedManifest, OciError> {
        if !tags.is_empty() && matches!(reference, Reference::Tag(_)) {
            // The spec defines `?tag=` for a push by digest only; a second way to
            // name tags in one request would leave which one wins to guesswork.
            return Err(OciError::TagInvalid(
                "tag query parameters apply only to a push by digest".to_owned(),
            ));
        }
        let size = body.len() as u64;
        if size > self.limits.max_manifest_bytes {
            return Err(OciError::ManifestTooLarge {
                size,
                limit: self.limits.max_manifest_bytes,
            });
        }
        let parsed = parse_manifest(&body, content_type).map_err(OciError::ManifestInvalid)?;
        let (digest, tag) = match reference {
            Reference::Digest(claimed) => {
                let actual = Digest::of(claimed.algorithm(), &body);
                if &actual != claimed {
                    return Err(OciError::DigestInvalid(format!(
                        "manifest digest {actual} does not match {claimed}"
                    )));
                }
                (actual, None)
            }
            Reference::Tag(tag) => (Digest::sha256_of(&body), Some(tag.clone())),
        };
        let record = NewManifest {
            repo: repo.clone(),
            digest: digest.clone(),
            media_type: parsed.media_type,
            size,
            artifact_type: parsed.artifact_type,
            subject: parsed.subject.clone(),
            annotations: parsed.annotations,
            references: parsed.references,
            tag,
        };
        self.quotas.admit(&self.meta, repo, &digest, size).await?;
        // Claim the manifest's blob first, then make sure its bytes are stored:
        // bytes found before the claim could be an orphan that a collector is
        // unlinking; under the claim nobody unlinks them.
        let mut claim = self.meta.claim_blob(&digest, size).await?;
        if self.blobs.stat(&digest).await?.is_none() {
            let id = new_id();
            wharf_blob::stage_stream(
                &*self.blobs,
                &id,
                &digest,
                wharf_blob::bytes_stream(body.clone()),
            )
            .await?;
            self.blobs.publish_upload(&id, &digest).await?;
        }
        let outcome = claim.put_manifest(&record).await?;
        if outcome == PutManifestOutcome::Stored {
            claim.tag_manifest(repo, tags).await?;
            claim.commit().await?;
        }
        match outcome {
            PutManifestOutcome::Stored => {}
            PutManifestOutcome::MissingBlob(d) | PutManifestOutcome::MissingManifest(d) => {
                return Err(OciError::ManifestBlobUnknown(d))
            }
            PutManifestOutcome::SizeMismatch {
                digest,
                claimed,
                actual,
            } => {
                return Err(OciError::ManifestInvalid(format!(
                    "descriptor of {digest} claims {claimed} bytes, the blob has {actual}"
                )))
            }
        }
        self.quotas.added(repo, size);
        self.cache.put(digest.clone(), body);
        // The tag may have moved: forget what this process remembered of it.
        self.records.clear();
        Ok(PushedManifest {
            digest,
            subject: parsed.subject,
            tagged: tags.to_vec(),
        })
    }

    /// Deletes a manifest by digest, or just a tag (spec: end-9).
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<(), OciError> {
        let deleted = match reference {
            Reference::Digest(d) => self.meta.delete_manifest(repo, d).await?,
            Reference::Tag(t) => self.meta.delete_tag(repo, t).await?,
        };
        // After the write, so a concurrent lookup cannot re-cache the old record.
        self.records.clear();
        if deleted {
            Ok(())
        } else {
            Err(OciError::ManifestUnknown(reference.to_string()))
        }
    }

    /// Drops the cached tag and manifest lookups, after a write that bypassed
    /// `delete_manifest` (retention's conditional deletions).
    pub(crate) fn forget_records(&self) {
        self.records.clear();
    }

    /// One page of `repo`'s tags (spec: end-8a/8b).
    pub async fn tags(
        &self,
        repo: &RepoName,
        n: Option<u64>,
        last: Option<&Tag>,
    ) -> Result<Page, OciError> {
        if self.meta.repository_kind(repo).await? != Some(RepositoryKind::Oci) {
            return Err(OciError::NameUnknown(repo.to_string()));
        }
        let limit = n.unwrap_or(u64::MAX - 1);
        let mut items = self
            .meta
            .tags(repo, last.map(Tag::as_str), limit.saturating_add(1))
            .await?;
        Ok(page(&mut items, limit))
    }

    /// One page of repository names (`/v2/_catalog`).
    pub async fn catalog(&self, n: Option<u64>, last: Option<&str>) -> Result<Page, OciError> {
        let limit = n.unwrap_or(u64::MAX - 1);
        let mut items = self
            .meta
            .repositories(RepositoryKind::Oci, last, limit.saturating_add(1))
            .await?;
        Ok(page(&mut items, limit))
    }

    /// The referrers index of `subject` (spec: end-12a/12b). Returns the index
    /// bytes and whether the artifact type filter was applied.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Bytes, OciError> {
        let records = self.meta.referrers(repo, subject, artifact_type).await?;
        Ok(referrers_index(&records))
    }
}

fn page(items: &mut Vec<String>, limit: u64) -> Page {
    let more = items.len() as u64 > limit;
    items.truncate(limit.min(usize::MAX as u64) as usize);
    Page {
        items: std::mem::take(items),
        more,
    }
}

/// Turns a `Range: bytes=a-b` (either side optional) into an inclusive range.
pub fn resolve_range(spec: (Option<u64>, Option<u64>), size: u64) -> Result<ByteRange, OciError> {
    let unsatisfiable = OciError::RangeNotSatisfiable { size };
    let (start, end) = match spec {
        (Some(start), Some(end)) => (start, end.min(size.saturating_sub(1))),
        (Some(start), None) => (start, size.saturating_sub(1)),
        (None, Some(suffix)) if suffix > 0 => (size.saturating_sub(suffix), size.saturating_sub(1)),
        _ => return Err(unsatisfiable),
    };
    if size == 0 || start > end || start >= size {
        return Err(unsatisfiable);
    }
    Ok(ByteRange { start, end })
}

fn referrers_index(records: &[ReferrerRecord]) -> Bytes {
    let manifests: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            let mut d = serde_json::json!({
                "mediaType": r.media_type,
                "digest": r.digest.to_string(),
                "size": r.size,
            });
            if let Some(at) = &r.artifact_type {
                d["artifactType"] = serde_json::Value::String(at.clone());
            }
            if let Some(a) = r.annotations.as_deref() {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(a) {
                    d["annotations"] = v;
                }
            }
            d
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": manifests,
    });
    Bytes::from(index.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stampede_of_misses_runs_one_lookup() {
        let cache = Arc::new(LookupCache::<String, u64>::new());
        let loads = Arc::new(AtomicUsize::new(0));
        let lookup = |cache: Arc<LookupCache<String, u64>>, loads: Arc<AtomicUsize>, found| async move {
            cache
                .get_or_load(&"k".to_owned(), || async {
                    loads.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    Ok::<_, ()>(found)
                })
                .await
        };
        // Found: one query for all, then cached.
        let tasks: Vec<_> = (0..200)
            .map(|_| tokio::spawn(lookup(cache.clone(), loads.clone(), Some(7))))
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(Some(7)));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(
            lookup(cache.clone(), loads.clone(), None).await,
            Ok(Some(7))
        );
        assert_eq!(loads.load(Ordering::SeqCst), 1);

        // Not found: shared by the callers of that moment, never cached.
        cache.clear();
        loads.store(0, Ordering::SeqCst);
        let tasks: Vec<_> = (0..200)
            .map(|_| tokio::spawn(lookup(cache.clone(), loads.clone(), None)))
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(None));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(
            lookup(cache.clone(), loads.clone(), Some(8)).await,
            Ok(Some(8))
        );
        assert_eq!(loads.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn ranges() {
        assert_eq!(
            resolve_range((Some(0), Some(9)), 100).unwrap(),
            ByteRange { start: 0, end: 9 }
        );
        assert_eq!(
            resolve_range((Some(90), None), 100).unwrap(),
            ByteRange { start: 90, end: 99 }
        );
        assert_eq!(
            resolve_range((None, Some(10)), 100).unwrap(),
            ByteRange { start: 90, end: 99 }
        );
        assert_eq!(
            resolve_range((Some(50), Some(500)), 100).unwrap(),
            ByteRange { start: 50, end: 99 }
        );
        assert!(resolve_range((Some(100), Some(200)), 100).is_err());
        assert!(resolve_range((Some(5), Some(2)), 100).is_err());
        assert!(resolve_range((Some(0), Some(0)), 0).is_err());
    }
}
