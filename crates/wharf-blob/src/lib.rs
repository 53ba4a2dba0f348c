//! The content-addressed blob store shared by every repository and format.
//!
//! Bytes enter only through an upload: `create_upload` → `append` (streamed,
//! hashed on the fly) → `verify_upload(expected_digest)` → `publish_upload`. A
//! blob becomes visible only when it was verified and made durable; there is no
//! "put at path". Publishing happens under the blob's live claim in the metadata
//! database, which is what keeps garbage collection from unlinking it. Blobs are immutable and are removed only by garbage
//! collection, which is driven by the metadata layer (this crate knows nothing
//! of repositories, manifests or references).
//!
//! [`BlobStore`] is the backend seam: the filesystem backend lives in [`fs`];
//! an object-store backend plugs in behind the same trait and must pass the same
//! suite (`tests/backend.rs`).

pub mod fs;

use std::io;
use std::pin::Pin;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::Stream;
use wharf_core::Digest;

/// A stream of blob bytes, used for both directions.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// What went wrong in the blob store.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No committed blob has this digest.
    #[error("blob {0} not found")]
    NotFound(Digest),
    /// No upload session has this id.
    #[error("upload {0} not found")]
    UploadNotFound(String),
    /// The bytes received do not hash to the digest the client claimed.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What the client said.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// The requested byte range lies outside the blob.
    #[error("range {start}-{end} not satisfiable for size {size}")]
    RangeNotSatisfiable {
        /// First byte asked for.
        start: u64,
        /// Last byte asked for (inclusive).
        end: u64,
        /// The blob's size.
        size: u64,
    },
    /// The body stream ended early or failed (e.g. the client disconnected).
    #[error("upload body interrupted: {0}")]
    BodyInterrupted(io::Error),
    /// An upload id that could not name a file safely.
    #[error("invalid upload id {0:?}")]
    InvalidUploadId(String),
    /// The storage itself failed.
    #[error("storage I/O error: {0}")]
    Io(#[from] io::Error),
}

/// An inclusive byte range inside a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// Last byte, inclusive.
    pub end: u64,
}

impl ByteRange {
    /// Number of bytes in the range.
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    /// Ranges are never empty; present for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// A committed blob found by [`BlobStore::list`].
#[derive(Debug, Clone)]
pub struct BlobEntry {
    /// The blob's digest (from its storage key).
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// When it was committed; garbage collection spares young blobs.
    pub modified: SystemTime,
}

/// An upload session's staging area found by [`BlobStore::list_uploads`].
#[derive(Debug, Clone)]
pub struct UploadEntry {
    /// The session id.
    pub id: String,
    /// Bytes received so far.
    pub size: u64,
    /// Last time bytes were appended.
    pub modified: SystemTime,
}

/// Result of re-hashing a stored blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// The bytes still hash to the digest.
    Intact,
    /// The bytes hash to something else: corruption on disk.
    Corrupt {
        /// What the bytes hash to now.
        actual: Digest,
    },
}

/// A backend of the blob store.
///
/// Implementations must guarantee: a digest is readable only after
/// [`commit_upload`](BlobStore::commit_upload) verified it and made it durable;
/// concurrent commits of the same digest are safe; reads stream, never buffering
/// a whole blob.
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Size of a committed blob, or `None`.
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, BlobError>;

    /// Streams a committed blob, or the given range of it.
    async fn read(
        &self,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<ByteStream, BlobError>;

    /// Creates an empty staging area for an upload session.
    async fn create_upload(&self, id: &str) -> Result<(), BlobError>;

    /// Appends a body to an upload and returns the new total size.
    ///
    /// Bytes that arrived before the stream failed stay appended and durable, so
    /// the client can resume from the reported size.
    async fn append(&self, id: &str, body: ByteStream) -> Result<u64, BlobError>;

    /// Bytes received so far by an upload.
    async fn upload_size(&self, id: &str) -> Result<u64, BlobError>;

    /// Checks that the upload's bytes hash to `expected` and returns their size.
    /// On a mismatch the staging area is discarded; on a match it stays, to be
    /// made visible by [`publish_upload`](BlobStore::publish_upload).
    async fn verify_upload(&self, id: &str, expected: &Digest) -> Result<u64, BlobError>;

    /// Makes a verified upload the committed blob `digest`, durably and
    /// atomically; the staging area is gone afterwards. If the blob is already
    /// stored the existing bytes stay (they are the same bytes).
    ///
    /// The caller must hold the blob's live claim in the metadata database
    /// (`wharf_meta::Meta::claim_blob`): that is what stops garbage collection
    /// from unlinking the bytes that this call places or keeps.
    async fn publish_upload(&self, id: &str, digest: &Digest) -> Result<(), BlobError>;

    /// [`verify_upload`](BlobStore::verify_upload) then
    /// [`publish_upload`](BlobStore::publish_upload), for callers that need no
    /// claim in between (tests, and stores no collector runs on).
    async fn commit_upload(&self, id: &str, expected: &Digest) -> Result<u64, BlobError> {
        let size = self.verify_upload(id, expected).await?;
        self.publish_upload(id, expected).await?;
        Ok(size)
    }

    /// Discards an upload's staging area. Unknown ids are not an error.
    async fn abort_upload(&self, id: &str) -> Result<(), BlobError>;

    /// Every upload staging area, for expiry.
    async fn list_uploads(&self) -> Result<Vec<UploadEntry>, BlobError>;

    /// Every committed blob, for verification and garbage collection.
    async fn list(&self) -> Result<Vec<BlobEntry>, BlobError>;

    /// Removes a committed blob. Only garbage collection calls this.
    async fn delete(&self, digest: &Digest) -> Result<(), BlobError>;

    /// Re-hashes a committed blob.
    async fn verify(&self, digest: &Digest) -> Result<Verification, BlobError>;
}

/// Stages a whole stream as one verified upload, ready for
/// [`BlobStore::publish_upload`]: the common monolithic path. Returns its size.
pub async fn stage_stream(
    store: &dyn BlobStore,
    upload_id: &str,
    expected: &Digest,
    body: ByteStream,
) -> Result<u64, BlobError> {
    store.create_upload(upload_id).await?;
    if let Err(err) = store.append(upload_id, body).await {
        store.abort_upload(upload_id).await?;
        return Err(err);
    }
    store.verify_upload(upload_id, expected).await
}

/// Stages, verifies and publishes a whole stream as one blob, for callers that
/// need no metadata claim in between (tests, and stores no collector runs on).
pub async fn put_stream(
    store: &dyn BlobStore,
    upload_id: &str,
    expected: &Digest,
    body: ByteStream,
) -> Result<u64, BlobError> {
    let size = stage_stream(store, upload_id, expected, body).await?;
    store.publish_upload(upload_id, expected).await?;
    Ok(size)
}

/// A byte stream of one in-memory buffer; handy for small blobs such as manifests.
pub fn bytes_stream(bytes: Bytes) -> ByteStream {
    Box::pin(futures_util::stream::once(async move { Ok(bytes) }))
}
