//! The thin storage seam under [`BlobStore`](crate::BlobStore).
//!
//! A backend only moves bytes: it never hashes, never checks a digest and never
//! sees an unvalidated upload id. Every invariant of the store (a digest is
//! checked before it becomes visible, failed bodies keep what they delivered,
//! hostile ids are refused, the running hash survives a restart) lives once in
//! the generic layer, so an object-store backend is a thin adapter that
//! inherits them all. Errors are `io::Error`s; a missing object is
//! `io::ErrorKind::NotFound`, which the generic layer turns into the store's
//! own "not found" errors.

use std::io;
use std::pin::Pin;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::Stream;
use wharf_core::Digest;

use crate::{BlobError, ByteStream};

/// A stream of listing entries: an object store lists millions of keys, so
/// listings are never collected into one `Vec` by the store itself.
pub type ListStream<'a, T> = Pin<Box<dyn Stream<Item = io::Result<T>> + Send + 'a>>;

/// An upload id that is safe to use as a file name or an object key: 1 to 128
/// ASCII letters, digits, `-` or `_`. Backends only ever receive these.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UploadId(String);

impl UploadId {
    /// Validates `id`.
    pub fn parse(id: &str) -> Result<UploadId, BlobError> {
        let safe = !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if safe {
            Ok(UploadId(id.to_owned()))
        } else {
            Err(BlobError::InvalidUploadId(id.to_owned()))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Size and age of a stored object (a committed blob or a staging area).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Size in bytes.
    pub size: u64,
    /// Last write: for a blob, when it was completed.
    pub modified: SystemTime,
}

/// A committed blob as a backend lists it.
#[derive(Debug, Clone)]
pub struct ListedBlob {
    /// The digest its key names.
    pub digest: Digest,
    /// Its size and age.
    pub meta: ObjectMeta,
}

/// A staging area as a backend lists it.
#[derive(Debug, Clone)]
pub struct ListedStaging {
    /// The upload it belongs to.
    pub id: UploadId,
    /// Its size and age.
    pub meta: ObjectMeta,
}

/// A run of body chunks handed to a backend as one write, in arrival order.
///
/// The chunks are kept as the network delivered them rather than copied into
/// one buffer: a copy of every pushed byte (and the page faults of a fresh
/// megabyte buffer per part) was a measurable share of a push's CPU
/// (docs/benchmarks.md, "Push CPU"). The file backend writes them with one
/// vectored write.
#[derive(Debug, Clone, Default)]
pub struct Part {
    chunks: Vec<Bytes>,
    len: usize,
}

impl Part {
    /// An empty part.
    pub fn new() -> Part {
        Part::default()
    }

    /// Adds `chunk` at the end.
    pub fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push(chunk);
        }
    }

    /// Bytes in the part.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the part holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunks, in order.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }
}

impl From<Bytes> for Part {
    fn from(chunk: Bytes) -> Part {
        let mut part = Part::new();
        part.push(chunk);
        part
    }
}

/// Appends parts to one staging area; obtained from [`Backend::open_staging`].
#[async_trait::async_trait]
pub trait StagingWriter: Send + 'static {
    /// Appends one part at the end of the staging area. After an error nothing
    /// more is written through this writer.
    async fn write_part(&mut self, part: Part) -> io::Result<()>;

    /// Ends the writes. With `durable`, every part written so far survives a
    /// crash once this returns; it is called so even when the body failed, so
    /// that what did arrive stays. Without, the bytes need only be readable:
    /// a one-shot upload is made durable when it is completed, or discarded.
    async fn finish(self: Box<Self>, durable: bool) -> io::Result<()>;
}

/// Where staged uploads, their hash states and committed blobs are kept.
///
/// Contract, beyond moving bytes: [`complete`](Backend::complete) is atomic
/// and durable (a reader sees no blob or the whole one), and completing a
/// digest that already exists keeps a whole blob (the bytes are the same).
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Creates an empty staging area; an existing one is an error.
    async fn create_staging(&self, id: &UploadId) -> io::Result<()>;

    /// Opens a staging area for appending (`NotFound` if there is none).
    async fn open_staging(&self, id: &UploadId) -> io::Result<Box<dyn StagingWriter>>;

    /// Size and age of a staging area, `None` if there is none.
    async fn stat_staging(&self, id: &UploadId) -> io::Result<Option<ObjectMeta>>;

    /// Streams a staging area from `offset` to its end, to re-hash it, or to
    /// serve it while it grows: the bytes of every `write_part` that has
    /// returned must be readable (the pull-through cache streams a blob to
    /// its waiting clients from the upload it is fetched into).
    async fn read_staging(&self, id: &UploadId, offset: u64) -> io::Result<ByteStream>;

    /// Turns a staging area into the blob `digest`, atomically and durably,
    /// with a fresh modification time (garbage collection's grace period starts
    /// now). The staging area is gone afterwards; its hash state is not
    /// touched (the generic layer removes it).
    async fn complete(&self, id: &UploadId, digest: &Digest) -> io::Result<()>;

    /// Removes a staging area; a missing one is not an error.
    async fn delete_staging(&self, id: &UploadId) -> io::Result<()>;

    /// Stores blobs whose bytes are in memory (the generic layer checked each
    /// digest), each atomically and durably as [`complete`](Backend::complete)
    /// does, with one result per item in order. The default stages and
    /// completes each in turn; a backend may write them all at once.
    async fn put_many(&self, items: &[(Digest, Bytes)]) -> Vec<io::Result<()>> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let mut results = Vec::with_capacity(items.len());
        for (digest, bytes) in items {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let id = UploadId(format!("put-{}-{n}", std::process::id()));
            let result = async {
                self.create_staging(&id).await?;
                let mut writer = self.open_staging(&id).await?;
                writer.write_part(Part::from(bytes.clone())).await?;
                writer.finish(false).await?;
                self.complete(&id, digest).await
            }
            .await;
            if result.is_err() {
                let _ = self.delete_staging(&id).await;
            }
            results.push(result);
        }
        results
    }

    /// [`complete`](Backend::complete) for many staging areas, each written
    /// moments ago (their modification time is already fresh), with one
    /// result per item in order. A backend may make them durable together:
    /// every `Ok` item is a durable blob once this returns. The default
    /// completes them side by side.
    async fn complete_many(&self, items: &[(UploadId, Digest)]) -> Vec<io::Result<()>> {
        futures_util::future::join_all(items.iter().map(|(id, d)| self.complete(id, d))).await
    }

    /// Every staging area.
    fn list_staging(&self) -> ListStream<'_, ListedStaging>;

    /// Replaces the small opaque hash state kept beside a staging area. It need
    /// not be durable (a lost or torn state only costs a re-hash), but a reader
    /// must never see a mix of two writes (or must see it as torn).
    async fn put_state(&self, id: &UploadId, state: Bytes) -> io::Result<()>;

    /// The hash state kept beside a staging area, `None` if there is none.
    async fn get_state(&self, id: &UploadId) -> io::Result<Option<Bytes>>;

    /// Removes the hash state of a staging area; a missing one is not an error.
    async fn delete_state(&self, id: &UploadId) -> io::Result<()>;

    /// Size and age of a committed blob, `None` if there is none.
    async fn stat(&self, digest: &Digest) -> io::Result<Option<ObjectMeta>>;

    /// Streams `len` bytes of a committed blob from `offset` (the generic layer
    /// checked the range against [`stat`](Backend::stat)). A stream must hold
    /// no thread and no more than a chunk or so of memory while its consumer
    /// does not read.
    async fn read(&self, digest: &Digest, offset: u64, len: u64) -> io::Result<ByteStream>;

    /// The whole committed blob in memory if it holds at most `max` bytes,
    /// else `None` (stream it with [`read`](Backend::read)). A small file
    /// served whole goes out with its response headers in one write, and a
    /// backend may read it in one step. The default stats, then reads.
    async fn read_small(&self, digest: &Digest, max: u64) -> io::Result<Option<Bytes>> {
        let Some(meta) = self.stat(digest).await? else {
            return Err(io::ErrorKind::NotFound.into());
        };
        if meta.size > max {
            return Ok(None);
        }
        let mut stream = self.read(digest, 0, meta.size).await?;
        let mut buf = Vec::with_capacity(meta.size as usize);
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            buf.extend_from_slice(&chunk?);
        }
        Ok(Some(Bytes::from(buf)))
    }

    /// At most `max` bytes of a committed blob from `offset`, fewer when it
    /// ends sooner (none past its end), in memory: a format reading a
    /// file's leading headers (an RPM's) needs neither its size first nor a
    /// stream. The default stats, then reads.
    async fn read_at(&self, digest: &Digest, offset: u64, max: u64) -> io::Result<Bytes> {
        let Some(meta) = self.stat(digest).await? else {
            return Err(io::ErrorKind::NotFound.into());
        };
        let len = meta.size.saturating_sub(offset).min(max);
        if len == 0 {
            return Ok(Bytes::new());
        }
        let mut stream = self.read(digest, offset, len).await?;
        let mut buf = Vec::with_capacity(len as usize);
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            buf.extend_from_slice(&chunk?);
        }
        Ok(Bytes::from(buf))
    }

    /// The first `max` bytes (fewer when shorter) of each of many committed
    /// blobs: what a format reads to list many files by their headers. A
    /// backend may read them in one step; the default reads one by one.
    async fn read_heads(&self, digests: &[Digest], max: u64) -> Vec<io::Result<Bytes>> {
        let mut heads = Vec::with_capacity(digests.len());
        for digest in digests {
            heads.push(self.read_at(digest, 0, max).await);
        }
        heads
    }

    /// Removes a committed blob; a missing one is not an error.
    async fn delete(&self, digest: &Digest) -> io::Result<()>;

    /// Every committed blob. Objects that vanish during the walk are skipped,
    /// and keys that do not name a digest are ignored.
    fn list(&self) -> ListStream<'_, ListedBlob>;
}
