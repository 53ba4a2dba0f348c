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
//! [`BlobStore`] holds every invariant (hashing, verification, resumable
//! hash state, id validation) once, over a thin [`Backend`]: the filesystem
//! backend lives in [`fs`], an in-memory one in [`memory`]. An object-store
//! backend plugs in behind the same trait and must pass the same suite
//! (`tests/backend.rs`, which runs every case on every backend).

pub mod backend;
pub mod fs;
pub mod memory;
mod sha256_state;
mod store;

pub use backend::{Backend, ListStream, ObjectMeta, Part, StagingWriter, UploadId};
pub use store::{
    put_stream, stage_stream, stage_stream_observed, stage_stream_of_unknown_digest, BlobStore,
    Progress,
};

use std::io;
use std::pin::Pin;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use wharf_core::Digest;

/// A stream of blob bytes, used for both directions.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// A listing of the store, one entry at a time (a [`Stream`]; the inherent
/// methods spare callers a `futures` import).
pub struct Listing<'a, T> {
    entries: Pin<Box<dyn Stream<Item = Result<T, BlobError>> + Send + 'a>>,
}

impl<'a, T> Listing<'a, T> {
    fn new(entries: impl Stream<Item = Result<T, BlobError>> + Send + 'a) -> Listing<'a, T> {
        Listing {
            entries: Box::pin(entries),
        }
    }

    /// The next entry, or `None` at the end.
    pub async fn try_next(&mut self) -> Result<Option<T>, BlobError> {
        self.entries.next().await.transpose()
    }

    /// Every remaining entry, for callers that need them all at once.
    pub async fn try_collect(mut self) -> Result<Vec<T>, BlobError> {
        let mut all = Vec::new();
        while let Some(entry) = self.try_next().await? {
            all.push(entry);
        }
        Ok(all)
    }
}

impl<T> Stream for Listing<'_, T> {
    type Item = Result<T, BlobError>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.entries.as_mut().poll_next(cx)
    }
}

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
    /// An upload id that could not name a file or object key safely.
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

/// A byte stream of one in-memory buffer; handy for small blobs such as manifests.
pub fn bytes_stream(bytes: Bytes) -> ByteStream {
    Box::pin(futures_util::stream::once(async move { Ok(bytes) }))
}
