//! [`BlobStore`]: hashing, verification and every other invariant of the blob
//! store, written once over a thin [`Backend`].
//!
//! The running SHA-256 of an upload is saved beside its staging area after
//! every append (see `sha256_state`), so an append or a commit that lands on
//! another process, or after a restart, hashes only the bytes it has not seen.
//! A state that is missing, torn, of another upload or behind the staging area
//! is not trusted at all: the store re-hashes the staged bytes from the start
//! (see `running_hash` for why a stale state is not caught up). A digest
//! computed from a saved state that does not match is re-checked against the
//! bytes themselves before the upload is refused.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use wharf_core::{Algorithm, Digest, Hasher};

use crate::backend::{Backend, ListStream, Part, StagingWriter, UploadId};
use crate::sha256_state::ResumableSha256;
use crate::{BlobEntry, BlobError, ByteRange, ByteStream, Listing, UploadEntry, Verification};

/// Chunks smaller than this are coalesced before they reach the backend, so
/// tiny network frames do not turn into tiny writes. Each part costs a write
/// job and a hash job handed to the blocking pool; at 1 MiB rather than
/// 256 KiB a 128 MiB push took 15 % less server CPU and 9 % less time
/// (docs/benchmarks.md), for at most 1 MiB buffered per upload in progress.
/// A part is a run of the body's own chunks, not a copy of them (see
/// [`Part`]); handing the chunks over uncopied cut another 6 % of a push's CPU.
const COALESCE_BYTES: usize = 1024 * 1024;
/// Chunks below this size are copied into a shared run instead of being kept
/// as their own piece of a part.
const SMALL_CHUNK_BYTES: usize = 16 * 1024;
/// A run of copied small chunks becomes one piece of the part at this size.
const SMALL_RUN_BYTES: usize = 64 * 1024;
/// Bytes hashed per blocking job when re-hashing stored bytes.
const HASH_BATCH: usize = 1024 * 1024;

/// Told an upload's staged size each time more of it is written, by
/// [`stage_stream_observed`]: bytes up to that size can be read with
/// [`BlobStore::read_upload`] while the upload goes on.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// The first `len` bytes of `stream`; an error if it holds fewer.
fn first_bytes(stream: ByteStream, len: u64) -> ByteStream {
    Box::pin(futures_util::stream::unfold(
        (stream, len),
        |(mut stream, left)| async move {
            if left == 0 {
                return None;
            }
            match stream.next().await {
                Some(Ok(mut chunk)) => {
                    if chunk.len() as u64 > left {
                        chunk.truncate(left as usize);
                    }
                    let left = left - chunk.len() as u64;
                    Some((Ok(chunk), (stream, left)))
                }
                Some(Err(e)) => Some((Err(e), (stream, 0))),
                None => Some((
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("staged bytes end {left} bytes short"),
                    )),
                    (stream, 0),
                )),
            }
        },
    ))
}

/// The content-addressed blob store, over any [`Backend`].
///
/// Bytes enter only through an upload, and a digest becomes readable only
/// after this layer checked the bytes against it.
pub struct BlobStore {
    backend: Arc<dyn Backend>,
    /// Uploads this process touched: a lock that serialises appends, commits
    /// and verifications of one upload, and what this process knows of it.
    uploads: Mutex<HashMap<UploadId, Arc<tokio::sync::Mutex<Session>>>>,
}

/// What this process remembers of one upload between requests. Only a cache:
/// every entry is checked against the staging area's size before use.
#[derive(Default)]
struct Session {
    /// The running hash, if it is known here.
    hasher: Option<ResumableSha256>,
    /// The digest and size that the last verification accepted.
    verified: Option<(Digest, u64)>,
}

/// A [`BlobStore::put_many`] batch up to this many bytes is hashed on the
/// calling task: a thread hop costs more than hashing it.
const INLINE_HASH_BYTES: usize = 256 * 1024;

/// Something that consumes bytes on a blocking thread.
trait Consume: Send + 'static {
    fn consume(&mut self, data: &[u8]);
}

impl Consume for ResumableSha256 {
    fn consume(&mut self, data: &[u8]) {
        self.update(data);
    }
}

impl Consume for Hasher {
    fn consume(&mut self, data: &[u8]) {
        self.update(data);
    }
}

/// Feeds the first `limit` bytes of `stream` to `hasher`, a batch per blocking
/// job, and fails if the stream holds fewer.
async fn hash_stream<H: Consume>(
    mut hasher: H,
    mut stream: ByteStream,
    limit: u64,
) -> io::Result<H> {
    let mut seen = 0u64;
    let mut batch: Vec<Bytes> = Vec::new();
    let mut batched = 0usize;
    while seen < limit {
        let Some(chunk) = stream.next().await else {
            break;
        };
        let mut chunk = chunk?;
        let room = limit - seen;
        if chunk.len() as u64 > room {
            chunk.truncate(room as usize);
        }
        seen += chunk.len() as u64;
        batched += chunk.len();
        batch.push(chunk);
        if batched >= HASH_BATCH {
            hasher = hash_batch(hasher, std::mem::take(&mut batch)).await?;
            batched = 0;
        }
    }
    if !batch.is_empty() {
        hasher = hash_batch(hasher, batch).await?;
    }
    if seen < limit {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("stored bytes end after {seen} of {limit}"),
        ));
    }
    Ok(hasher)
}

async fn hash_batch<H: Consume>(mut hasher: H, batch: Vec<Bytes>) -> io::Result<H> {
    tokio::task::spawn_blocking(move || {
        for part in &batch {
            hasher.consume(part);
        }
        hasher
    })
    .await
    .map_err(io::Error::other)
}

fn not_found_as<T>(res: io::Result<T>, err: impl FnOnce() -> BlobError) -> Result<T, BlobError> {
    match res {
        Ok(v) => Ok(v),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(err()),
        Err(e) => Err(BlobError::Io(e)),
    }
}

/// The write-and-hash jobs of one append: at most one part in flight.
struct PartPipeline {
    /// The staging writer; `None` while a job has it, or after a failure.
    writer: Option<Box<dyn StagingWriter>>,
    /// The running hash; `None` while a job has it, or after a lost job.
    hasher: Option<ResumableSha256>,
    in_flight: Option<InFlight>,
    /// Bytes written so far by this append.
    written: u64,
    /// The first write (or join) error; nothing more is written after it.
    failed: Option<io::Error>,
    /// Told the staged size after each part is written (an observed append).
    progress: Option<Progress>,
    /// Whether someone follows the upload: then a part is handed over as soon
    /// as the body has nothing more ready, instead of waiting for a full one.
    observed: bool,
    /// Where the next part dispatched will end: the staged size before this
    /// append plus every part handed to a write job.
    dispatched: u64,
}

type WriteJob = tokio::task::JoinHandle<(Box<dyn StagingWriter>, io::Result<usize>)>;
type HashJob = tokio::task::JoinHandle<ResumableSha256>;

struct InFlight {
    write: WriteJob,
    hash: Option<HashJob>,
}

impl PartPipeline {
    /// Waits for the part in flight, then starts writing and hashing `part`.
    /// Returns false once a write has failed.
    async fn dispatch(&mut self, part: Part) -> bool {
        self.settle().await;
        let Some(mut writer) = self.writer.take() else {
            return false;
        };
        let hash = self.hasher.take().map(|mut hasher| {
            let part = part.clone();
            tokio::task::spawn_blocking(move || {
                for chunk in part.chunks() {
                    hasher.update(chunk);
                }
                hasher
            })
        });
        self.dispatched += part.len() as u64;
        let end = self.dispatched;
        let progress = self.progress.clone();
        let write = tokio::spawn(async move {
            let len = part.len();
            let res = writer.write_part(part).await.map(|()| len);
            // Said from the write job itself, not when the next part is
            // dispatched: a reader following the upload gets these bytes now.
            if let (Ok(_), Some(progress)) = (&res, &progress) {
                progress(end);
            }
            (writer, res)
        });
        self.in_flight = Some(InFlight { write, hash });
        true
    }

    /// Waits for the part in flight, if any, and takes back writer and hasher.
    async fn settle(&mut self) {
        let Some(InFlight { write, hash }) = self.in_flight.take() else {
            return;
        };
        if let Some(hash) = hash {
            // A hasher lost to a panicked job only means the hash is caught up later.
            self.hasher = hash.await.ok();
        }
        match write.await {
            Ok((writer, Ok(n))) => {
                self.written += n as u64;
                self.writer = Some(writer);
            }
            Ok((_, Err(e))) => self.failed = Some(e),
            Err(e) => self.failed = Some(io::Error::other(e)),
        }
    }
}

impl BlobStore {
    /// A store over `backend`.
    pub fn new(backend: Arc<dyn Backend>) -> BlobStore {
        BlobStore {
            backend,
            uploads: Mutex::new(HashMap::new()),
        }
    }

    fn session(&self, id: &UploadId) -> Arc<tokio::sync::Mutex<Session>> {
        let mut uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        uploads.entry(id.clone()).or_default().clone()
    }

    fn forget(&self, id: &UploadId) {
        let mut uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        uploads.remove(id);
    }

    async fn staging_size(&self, id: &UploadId) -> Result<u64, BlobError> {
        match self.backend.stat_staging(id).await? {
            Some(meta) => Ok(meta.size),
            None => {
                self.forget(id);
                Err(BlobError::UploadNotFound(id.as_str().to_owned()))
            }
        }
    }

    /// Size of a committed blob, or `None`.
    pub async fn stat(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        Ok(self.backend.stat(digest).await?.map(|m| m.size))
    }

    /// A committed blob whole in memory if it holds at most `max` bytes, else
    /// `None` (stream it with [`read`](BlobStore::read)).
    pub async fn read_small(&self, digest: &Digest, max: u64) -> Result<Option<Bytes>, BlobError> {
        not_found_as(self.backend.read_small(digest, max).await, || {
            BlobError::NotFound(digest.clone())
        })
    }

    /// At most `max` bytes of a committed blob from `offset`, in memory;
    /// fewer when it ends sooner.
    pub async fn read_at(
        &self,
        digest: &Digest,
        offset: u64,
        max: u64,
    ) -> Result<Bytes, BlobError> {
        not_found_as(self.backend.read_at(digest, offset, max).await, || {
            BlobError::NotFound(digest.clone())
        })
    }

    /// The first `max` bytes (fewer when shorter) of each of `digests`, in
    /// their order, each `NotFound` on its own when it is not stored.
    pub async fn read_heads(&self, digests: &[Digest], max: u64) -> Vec<Result<Bytes, BlobError>> {
        self.backend
            .read_heads(digests, max)
            .await
            .into_iter()
            .zip(digests)
            .map(|(head, digest)| not_found_as(head, || BlobError::NotFound(digest.clone())))
            .collect()
    }

    /// Streams a committed blob, or the given range of it.
    pub async fn read(
        &self,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<ByteStream, BlobError> {
        let size = self
            .stat(digest)
            .await?
            .ok_or_else(|| BlobError::NotFound(digest.clone()))?;
        let (offset, len) = match range {
            None => (0, size),
            Some(r) if r.start <= r.end && r.end < size => (r.start, r.len()),
            Some(r) => {
                return Err(BlobError::RangeNotSatisfiable {
                    start: r.start,
                    end: r.end,
                    size,
                })
            }
        };
        not_found_as(self.backend.read(digest, offset, len).await, || {
            BlobError::NotFound(digest.clone())
        })
    }

    /// Creates an empty staging area for an upload session.
    pub async fn create_upload(&self, id: &str) -> Result<(), BlobError> {
        let id = UploadId::parse(id)?;
        self.backend.create_staging(&id).await?;
        let session = self.session(&id);
        session.lock().await.hasher = Some(ResumableSha256::default());
        Ok(())
    }

    /// Appends a body to an upload and returns the new total size.
    ///
    /// Bytes that arrived before the stream failed stay appended and durable, so
    /// the client can resume from the reported size. The running hash is saved
    /// beside the staging area afterwards, for whichever process goes on.
    pub async fn append(&self, id: &str, body: ByteStream) -> Result<u64, BlobError> {
        self.append_body(id, body, true, None).await
    }

    /// Streams `len` staged bytes of an upload from `offset`, while the upload
    /// may still be growing: the bytes a [`Progress`] of
    /// [`stage_stream_observed`] has announced are readable. `UploadNotFound`
    /// once the upload was published or discarded (a reader that learns of the
    /// publication reads the committed blob instead).
    pub async fn read_upload(
        &self,
        id: &str,
        offset: u64,
        len: u64,
    ) -> Result<ByteStream, BlobError> {
        let id = UploadId::parse(id)?;
        let staged = not_found_as(self.backend.read_staging(&id, offset).await, || {
            BlobError::UploadNotFound(id.as_str().to_owned())
        })?;
        Ok(first_bytes(staged, len))
    }

    async fn append_body(
        &self,
        id: &str,
        mut body: ByteStream,
        save_state: bool,
        progress: Option<Progress>,
    ) -> Result<u64, BlobError> {
        let id = UploadId::parse(id)?;
        let session = self.session(&id);
        let mut session = session.lock().await;
        session.verified = None;
        let start = self.staging_size(&id).await?;
        let (hasher, _) = self.running_hash(&id, start, session.hasher.take()).await?;
        let writer = not_found_as(self.backend.open_staging(&id).await, || {
            BlobError::UploadNotFound(id.as_str().to_owned())
        })?;

        // Each part is written and hashed by two jobs running side by side (a
        // part costs the longer of the two, not their sum) while the next
        // network chunk arrives. No thread is held between parts, so a client
        // that stalls mid-body costs no thread while it sends nothing.
        let mut pipeline = PartPipeline {
            writer: Some(writer),
            hasher: Some(hasher),
            in_flight: None,
            written: 0,
            failed: None,
            observed: progress.is_some(),
            progress,
            dispatched: start,
        };
        let mut body_err = None;
        let mut pending = Part::new();
        // Small chunks are copied together (a client trickling tiny frames
        // must not make a part of a million chunks, each pinning a network
        // buffer); the rest go to the backend as they came, uncopied.
        let mut small = BytesMut::new();
        loop {
            let next = if pipeline.observed {
                match body.next().now_or_never() {
                    Some(next) => next,
                    None => {
                        // Nothing more has arrived: readers following the
                        // upload get what did now, not once a part is full.
                        if !small.is_empty() {
                            pending.push(small.split().freeze());
                        }
                        if !pending.is_empty()
                            && !pipeline.dispatch(std::mem::take(&mut pending)).await
                        {
                            break;
                        }
                        body.next().await
                    }
                }
            } else {
                body.next().await
            };
            let Some(item) = next else {
                break;
            };
            match item {
                Ok(chunk) => {
                    if chunk.len() < SMALL_CHUNK_BYTES {
                        small.extend_from_slice(&chunk);
                        if small.len() >= SMALL_RUN_BYTES {
                            pending.push(small.split().freeze());
                        }
                    } else {
                        if !small.is_empty() {
                            pending.push(small.split().freeze());
                        }
                        pending.push(chunk);
                    }
                    if pending.len() < COALESCE_BYTES {
                        continue;
                    }
                    if !pipeline.dispatch(std::mem::take(&mut pending)).await {
                        break; // The write failed; its error is reported below.
                    }
                }
                Err(e) => {
                    body_err = Some(e);
                    break;
                }
            }
        }
        if !small.is_empty() {
            pending.push(small.freeze());
        }
        if !pending.is_empty() {
            pipeline.dispatch(pending).await;
        }
        pipeline.settle().await;
        let PartPipeline {
            writer,
            hasher,
            written,
            failed,
            ..
        } = pipeline;
        // Acknowledged bytes of a resumable upload must survive a crash, and
        // before any state says they were hashed; a one-shot upload's are made
        // durable when it is completed.
        let write_result = match (failed, writer) {
            (Some(e), _) => Err(e),
            (None, Some(writer)) => writer.finish(save_state).await,
            (None, None) => Ok(()),
        };
        let new_size = start + written;
        // The hasher saw every part sent; that equals what was written only if
        // every write succeeded.
        session.hasher = match (&write_result, hasher) {
            (Ok(()), Some(hasher)) if hasher.len() == new_size => Some(hasher),
            _ => None,
        };
        write_result?;
        if save_state {
            if let Some(hasher) = &session.hasher {
                let saved = Bytes::from(hasher.save(id.as_str()));
                if let Err(e) = self.backend.put_state(&id, saved).await {
                    // Only an optimisation: the next process re-hashes instead.
                    tracing::warn!(upload = id.as_str(), error = %e, "could not save the upload's hash state");
                } else if self.backend.stat_staging(&id).await?.is_none() {
                    // Aborted or expired (by any process) while this append ran:
                    // the state must not outlive its staging area.
                    self.backend.delete_state(&id).await?;
                }
            }
        }
        if let Some(e) = body_err {
            return Err(BlobError::BodyInterrupted(e));
        }
        Ok(new_size)
    }

    /// A SHA-256 of exactly the first `size` staged bytes of `id`: this
    /// process's running hash or the saved state when one covers exactly those
    /// bytes, else a re-hash of all of them. Also returns how many bytes were
    /// taken from a state rather than hashed now.
    ///
    /// A state that covers fewer bytes is not caught up from where it stopped:
    /// the bytes after it need not be the continuation of the bytes it hashed.
    /// Two processes appending to one upload at once (a client sending two
    /// PATCHes to two replicas) each hash their own bytes from the same start,
    /// while the staging area gets both, in some order; each state then covers
    /// less than the staging area, and catching either up would combine the
    /// hash of one writer's bytes with the other writer's bytes, letting a
    /// digest through that is not the hash of what is stored. A state of exactly
    /// the staged length is safe: staging areas only grow by appends, and every
    /// writer saves after its own bytes, so such a state saw every byte there.
    async fn running_hash(
        &self,
        id: &UploadId,
        size: u64,
        cached: Option<ResumableSha256>,
    ) -> Result<(ResumableSha256, u64), BlobError> {
        if let Some(hasher) = cached.filter(|h| h.len() == size) {
            return Ok((hasher, size));
        }
        let saved = match self.backend.get_state(id).await {
            Ok(Some(bytes)) => ResumableSha256::restore(id.as_str(), &bytes),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(upload = id.as_str(), error = %e, "could not read the upload's hash state");
                None
            }
        };
        if let Some(hasher) = saved.filter(|h| h.len() == size) {
            return Ok((hasher, size));
        }
        if size == 0 {
            return Ok((ResumableSha256::default(), 0));
        }
        let bytes = not_found_as(self.backend.read_staging(id, 0).await, || {
            BlobError::UploadNotFound(id.as_str().to_owned())
        })?;
        Ok((
            hash_stream(ResumableSha256::default(), bytes, size).await?,
            0,
        ))
    }

    /// Hashes the first `size` staged bytes of `id` from the start.
    async fn rehash_staging(
        &self,
        id: &UploadId,
        algorithm: Algorithm,
        size: u64,
    ) -> Result<Digest, BlobError> {
        let bytes = not_found_as(self.backend.read_staging(id, 0).await, || {
            BlobError::UploadNotFound(id.as_str().to_owned())
        })?;
        Ok(hash_stream(algorithm.hasher(), bytes, size).await?.finish())
    }

    /// Bytes received so far by an upload.
    pub async fn upload_size(&self, id: &str) -> Result<u64, BlobError> {
        let id = UploadId::parse(id)?;
        self.staging_size(&id).await
    }

    /// The SHA-256 digest and size of the bytes an upload holds so far, for a
    /// caller that learns the digest from the bytes (a file uploaded with no
    /// checksum). Verify and publish the upload under that digest as usual.
    pub async fn upload_digest(&self, id: &str) -> Result<(Digest, u64), BlobError> {
        let id = UploadId::parse(id)?;
        let session = self.session(&id);
        let mut session = session.lock().await;
        let size = self.staging_size(&id).await?;
        let (hasher, _) = self.running_hash(&id, size, session.hasher.take()).await?;
        let digest = hasher.finish();
        session.hasher = Some(hasher);
        Ok((digest, size))
    }

    /// Checks that the upload's bytes hash to `expected` and returns their size.
    /// On a mismatch the staging area is discarded; on a match it stays, to be
    /// made visible by [`publish_upload`](BlobStore::publish_upload).
    pub async fn verify_upload(&self, id: &str, expected: &Digest) -> Result<u64, BlobError> {
        let id = UploadId::parse(id)?;
        let session = self.session(&id);
        let mut session = session.lock().await;
        self.verify_locked(&id, &mut session, expected).await
    }

    async fn verify_locked(
        &self,
        id: &UploadId,
        session: &mut Session,
        expected: &Digest,
    ) -> Result<u64, BlobError> {
        session.verified = None;
        let size = self.staging_size(id).await?;
        let (mut actual, trusted) = match expected.algorithm() {
            Algorithm::Sha256 => {
                let (hasher, trusted) = self.running_hash(id, size, session.hasher.take()).await?;
                let digest = hasher.finish();
                session.hasher = Some(hasher);
                (digest, trusted)
            }
            // Only SHA-256 runs while the bytes arrive (it is what clients use).
            other => (self.rehash_staging(id, other, size).await?, 0),
        };
        if &actual != expected && trusted > 0 {
            // Part of the hash came from a state; before refusing the bytes,
            // ask the bytes themselves.
            let rehashed = self.rehash_staging(id, Algorithm::Sha256, size).await?;
            if rehashed != actual {
                tracing::warn!(
                    upload = id.as_str(),
                    "the upload's saved hash state did not match its bytes"
                );
                session.hasher = None;
                actual = rehashed;
            }
        }
        if &actual != expected {
            self.discard(id).await?;
            return Err(BlobError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        session.verified = Some((expected.clone(), size));
        Ok(size)
    }

    /// Makes a verified upload the committed blob `digest`, durably and
    /// atomically; the staging area is gone afterwards. If the blob is already
    /// stored the existing bytes stay (they are the same bytes). An upload that
    /// this store has not verified against `digest` at its current size is
    /// verified first.
    ///
    /// The caller must hold the blob's live claim in the metadata database
    /// (`wharf_meta::Meta::claim_blob`): that is what stops garbage collection
    /// from unlinking the bytes that this call places or keeps.
    pub async fn publish_upload(&self, id: &str, digest: &Digest) -> Result<(), BlobError> {
        let id = UploadId::parse(id)?;
        let session = self.session(&id);
        let mut session = session.lock().await;
        let current = match &session.verified {
            Some((verified, size)) if verified == digest => self.staging_size(&id).await? == *size,
            _ => false,
        };
        if !current {
            self.verify_locked(&id, &mut session, digest).await?;
        }
        not_found_as(self.backend.complete(&id, digest).await, || {
            BlobError::UploadNotFound(id.as_str().to_owned())
        })?;
        if let Err(e) = self.backend.delete_state(&id).await {
            tracing::warn!(upload = id.as_str(), error = %e, "could not remove the upload's hash state");
        }
        drop(session);
        self.forget(&id);
        Ok(())
    }

    /// Stores blobs whose bytes are in memory, each verified against its
    /// digest first (a mismatch stores nothing of it), atomically and durably;
    /// one result per item in order. Meant for small objects (OSTree metadata
    /// and content objects of a few hundred bytes): written together, they
    /// cost the backend one step and one flush rather than a staged upload
    /// each, which had been most of a mirror's time. The caller must hold
    /// every blob's live claim, as for [`publish_upload`](BlobStore::publish_upload).
    pub async fn put_many(&self, items: &[(Digest, Bytes)]) -> Vec<Result<(), BlobError>> {
        let total: usize = items.iter().map(|(_, b)| b.len()).sum();
        let check = |items: &[(Digest, Bytes)]| -> Vec<Option<Digest>> {
            items
                .iter()
                .map(|(d, b)| Some(Digest::of(d.algorithm(), b)).filter(|a| a != d))
                .collect()
        };
        let mismatches = if total <= INLINE_HASH_BYTES {
            check(items)
        } else {
            let owned = items.to_vec();
            match tokio::task::spawn_blocking(move || check(&owned)).await {
                Ok(m) => m,
                Err(e) => {
                    return items
                        .iter()
                        .map(|_| Err(BlobError::Io(io::Error::other(e.to_string()))))
                        .collect()
                }
            }
        };
        let good: Vec<(Digest, Bytes)> = items
            .iter()
            .zip(&mismatches)
            .filter(|(_, m)| m.is_none())
            .map(|(item, _)| item.clone())
            .collect();
        let mut stored = self.backend.put_many(&good).await.into_iter();
        items
            .iter()
            .zip(mismatches)
            .map(|((expected, _), mismatch)| match mismatch {
                Some(actual) => Err(BlobError::DigestMismatch {
                    expected: expected.clone(),
                    actual,
                }),
                None => stored
                    .next()
                    .expect("one result per item")
                    .map_err(BlobError::Io),
            })
            .collect()
    }

    /// [`publish_upload`](BlobStore::publish_upload) for many one-shot
    /// uploads at once (verified by this process and written moments ago),
    /// one result per item in order: the backend may make them durable with
    /// one flush. An upload not verified here at its digest goes alone. The
    /// caller must hold every blob's live claim, as for one.
    pub async fn publish_uploads(&self, items: &[(&str, &Digest)]) -> Vec<Result<(), BlobError>> {
        let mut results: Vec<Option<Result<(), BlobError>>> = Vec::with_capacity(items.len());
        let mut together = Vec::new();
        let mut together_at = Vec::new();
        let mut alone = Vec::new();
        for (i, (id, digest)) in items.iter().enumerate() {
            results.push(None);
            let parsed = match UploadId::parse(id) {
                Ok(p) => p,
                Err(e) => {
                    results[i] = Some(Err(e));
                    continue;
                }
            };
            let session = self.session(&parsed);
            let verified = session.lock().await.verified.clone();
            let current = match verified {
                Some((verified, size)) if verified == **digest => {
                    matches!(self.backend.stat_staging(&parsed).await, Ok(Some(m)) if m.size == size)
                }
                _ => false,
            };
            if current {
                together.push((parsed, (*digest).clone()));
                together_at.push(i);
            } else {
                alone.push(i);
            }
        }
        if !together.is_empty() {
            let done = self.backend.complete_many(&together).await;
            for ((at, (id, _)), result) in together_at.into_iter().zip(&together).zip(done) {
                if result.is_ok() {
                    if let Err(e) = self.backend.delete_state(id).await {
                        tracing::warn!(upload = id.as_str(), error = %e, "could not remove the upload's hash state");
                    }
                    self.forget(id);
                }
                results[at] = Some(not_found_as(result, || {
                    BlobError::UploadNotFound(id.as_str().to_owned())
                }));
            }
        }
        let singles = futures_util::future::join_all(
            alone
                .iter()
                .map(|&i| self.publish_upload(items[i].0, items[i].1)),
        )
        .await;
        for (i, result) in alone.into_iter().zip(singles) {
            results[i] = Some(result);
        }
        results
            .into_iter()
            .map(|r| r.expect("every item answered"))
            .collect()
    }

    /// [`verify_upload`](BlobStore::verify_upload) then
    /// [`publish_upload`](BlobStore::publish_upload), for callers that need no
    /// claim in between (tests, and stores no collector runs on).
    pub async fn commit_upload(&self, id: &str, expected: &Digest) -> Result<u64, BlobError> {
        let size = self.verify_upload(id, expected).await?;
        self.publish_upload(id, expected).await?;
        Ok(size)
    }

    /// Removes the state first: a crash in between leaves a staging area
    /// without a state (re-hashed if resumed, listed for expiry), never a
    /// state without its staging area.
    async fn discard(&self, id: &UploadId) -> Result<(), BlobError> {
        self.backend.delete_state(id).await?;
        self.backend.delete_staging(id).await?;
        self.forget(id);
        Ok(())
    }

    /// Discards an upload's staging area. Unknown ids are not an error.
    pub async fn abort_upload(&self, id: &str) -> Result<(), BlobError> {
        let id = UploadId::parse(id)?;
        self.discard(&id).await
    }

    /// Every upload staging area, for expiry.
    pub fn list_uploads(&self) -> Listing<'_, UploadEntry> {
        entries(self.backend.list_staging(), |s| UploadEntry {
            id: s.id.as_str().to_owned(),
            size: s.meta.size,
            modified: s.meta.modified,
        })
    }

    /// Every committed blob, for verification and garbage collection.
    pub fn list(&self) -> Listing<'_, BlobEntry> {
        entries(self.backend.list(), |b| BlobEntry {
            digest: b.digest,
            size: b.meta.size,
            modified: b.meta.modified,
        })
    }

    /// Removes a committed blob. Only garbage collection calls this.
    pub async fn delete(&self, digest: &Digest) -> Result<(), BlobError> {
        Ok(self.backend.delete(digest).await?)
    }

    /// Re-hashes a committed blob.
    pub async fn verify(&self, digest: &Digest) -> Result<Verification, BlobError> {
        let size = self
            .stat(digest)
            .await?
            .ok_or_else(|| BlobError::NotFound(digest.clone()))?;
        let bytes = not_found_as(self.backend.read(digest, 0, size).await, || {
            BlobError::NotFound(digest.clone())
        })?;
        let actual = hash_stream(digest.algorithm().hasher(), bytes, size)
            .await?
            .finish();
        if &actual == digest {
            Ok(Verification::Intact)
        } else {
            Ok(Verification::Corrupt { actual })
        }
    }
}

impl AsRef<BlobStore> for BlobStore {
    fn as_ref(&self) -> &BlobStore {
        self
    }
}

fn entries<'a, T: Send + 'a, U: Send + 'a>(
    listed: ListStream<'a, T>,
    map: impl Fn(T) -> U + Send + 'a,
) -> Listing<'a, U> {
    Listing::new(listed.map_ok(map).map_err(BlobError::Io))
}

/// Stages a whole stream as one verified upload, ready for
/// [`BlobStore::publish_upload`]: the common monolithic path. Returns its size.
/// Its hash state stays in memory: no other process continues a monolithic
/// upload. `store` is the store or an `Arc` of it.
pub async fn stage_stream(
    store: &(impl AsRef<BlobStore> + ?Sized),
    upload_id: &str,
    expected: &Digest,
    body: ByteStream,
) -> Result<u64, BlobError> {
    let store = store.as_ref();
    store.create_upload(upload_id).await?;
    if let Err(err) = store.append_body(upload_id, body, false, None).await {
        store.abort_upload(upload_id).await?;
        return Err(err);
    }
    store.verify_upload(upload_id, expected).await
}

/// [`stage_stream`], telling `progress` the staged size each time more is
/// written, so that others can read the upload with
/// [`BlobStore::read_upload`] while it arrives (the pull-through cache serves
/// every client waiting for a blob from the one staging area it is fetched
/// into). Parts are handed to the backend as soon as the body has nothing more
/// ready, so the first bytes are readable before a full part has arrived.
pub async fn stage_stream_observed(
    store: &(impl AsRef<BlobStore> + ?Sized),
    upload_id: &str,
    expected: &Digest,
    body: ByteStream,
    progress: Progress,
) -> Result<u64, BlobError> {
    let store = store.as_ref();
    store.create_upload(upload_id).await?;
    if let Err(err) = store
        .append_body(upload_id, body, false, Some(progress))
        .await
    {
        store.abort_upload(upload_id).await?;
        return Err(err);
    }
    store.verify_upload(upload_id, expected).await
}

/// Stages a whole stream whose digest is learnt from its bytes (a file uploaded
/// with no checksum), verified against that digest and ready for
/// [`BlobStore::publish_upload`]. Returns the digest and size.
pub async fn stage_stream_of_unknown_digest(
    store: &(impl AsRef<BlobStore> + ?Sized),
    upload_id: &str,
    body: ByteStream,
) -> Result<(Digest, u64), BlobError> {
    let store = store.as_ref();
    store.create_upload(upload_id).await?;
    if let Err(err) = store.append_body(upload_id, body, false, None).await {
        store.abort_upload(upload_id).await?;
        return Err(err);
    }
    let (digest, _) = store.upload_digest(upload_id).await?;
    let size = store.verify_upload(upload_id, &digest).await?;
    Ok((digest, size))
}

/// Stages, verifies and publishes a whole stream as one blob, for callers that
/// need no metadata claim in between (tests, and stores no collector runs on).
pub async fn put_stream(
    store: &(impl AsRef<BlobStore> + ?Sized),
    upload_id: &str,
    expected: &Digest,
    body: ByteStream,
) -> Result<u64, BlobError> {
    let store = store.as_ref();
    let size = stage_stream(store, upload_id, expected, body).await?;
    store.publish_upload(upload_id, expected).await?;
    Ok(size)
}
