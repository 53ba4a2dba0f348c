//! The lookaside cache's storage: stage a source file while hashing it the
//! way its uploader named it, refuse a mismatch before anything is visible,
//! then publish the blob and its record under one live claim.
//!
//! The blob store addresses bytes by SHA-256, but rpkg names a source by
//! SHA-512 (or, in old `sources` files, MD5), and the upload may be gigabytes.
//! So the body is streamed once into a staging area while a tap hashes it with
//! both SHA-256 (the blob's address) and the uploader's algorithm; only when
//! the uploader's checksum matches is the blob published and recorded.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use md5::Digest as _;
use wharf_blob::{BlobError, BlobStore, ByteRange, ByteStream};
use wharf_core::{
    Algorithm, Digest, Hasher, SourceChecksum, SourceFileName, SourceHashType, SourcePackage,
};
use wharf_meta::{LookasideSource, Meta, MetaError};

/// What went wrong storing or reading a source file.
#[derive(Debug, thiserror::Error)]
pub enum LookasideError {
    /// The body is larger than `lookaside.max_upload_bytes`.
    #[error("the file is larger than this server's limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The bytes do not hash to the checksum the uploader gave.
    #[error("checksum mismatch: the upload's {expected} does not match the file's {actual}")]
    ChecksumMismatch {
        /// What the uploader said.
        expected: SourceChecksum,
        /// What the bytes hash to (same algorithm).
        actual: String,
    },
    /// The client stopped sending before the body ended.
    #[error("the upload was interrupted: {0}")]
    Interrupted(std::io::Error),
    /// The blob store failed.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// The metadata database failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// A source file staged and verified, not yet visible.
#[derive(Debug)]
pub struct StagedSource {
    upload_id: String,
    package: SourcePackage,
    file: SourceFileName,
    checksum: SourceChecksum,
    blob: Digest,
    size: u64,
}

impl StagedSource {
    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// What [`Lookaside::commit`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSource {
    /// The blob holding the bytes.
    pub blob: Digest,
    /// Its size.
    pub size: u64,
    /// `false`: the same file under the same checksum was already stored.
    pub new: bool,
}

/// The lookaside cache over the shared stores.
#[derive(Clone)]
pub struct Lookaside {
    meta: Meta,
    blobs: Arc<BlobStore>,
    max_upload_bytes: u64,
}

/// Hashes every chunk that passes, and counts it.
struct Tap {
    sha256: Hasher,
    named: NamedHasher,
    size: u64,
    too_large: bool,
}

enum NamedHasher {
    Sha512(Box<sha2::Sha512>),
    Md5(md5::Md5),
}

impl NamedHasher {
    fn new(kind: SourceHashType) -> NamedHasher {
        match kind {
            SourceHashType::Sha512 => NamedHasher::Sha512(Box::default()),
            SourceHashType::Md5 => NamedHasher::Md5(md5::Md5::new()),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            NamedHasher::Sha512(h) => h.update(bytes),
            NamedHasher::Md5(h) => h.update(bytes),
        }
    }

    fn finish_hex(self) -> String {
        match self {
            NamedHasher::Sha512(h) => hex::encode(h.finalize()),
            NamedHasher::Md5(h) => hex::encode(h.finalize()),
        }
    }
}

impl Lookaside {
    /// The cache over `meta` and `blobs`, refusing bodies over `max_upload_bytes`.
    pub fn new(meta: Meta, blobs: Arc<BlobStore>, max_upload_bytes: u64) -> Lookaside {
        Lookaside {
            meta,
            blobs,
            max_upload_bytes,
        }
    }

    /// The stored source file, if any.
    pub async fn find(
        &self,
        package: &SourcePackage,
        file: &SourceFileName,
        checksum: &SourceChecksum,
    ) -> Result<Option<LookasideSource>, LookasideError> {
        Ok(self.meta.lookaside_source(package, file, checksum).await?)
    }

    /// The bytes of a stored source, or a range of them.
    pub async fn open(
        &self,
        source: &LookasideSource,
        range: Option<ByteRange>,
    ) -> Result<ByteStream, LookasideError> {
        Ok(self.blobs.read(&source.blob, range).await?)
    }

    /// Streams `body` into a staging area, hashing it as it passes, and checks
    /// it against `checksum`. A mismatch, an oversized or interrupted body
    /// discards the bytes: nothing becomes visible.
    pub async fn stage(
        &self,
        package: &SourcePackage,
        file: &SourceFileName,
        checksum: &SourceChecksum,
        body: ByteStream,
    ) -> Result<StagedSource, LookasideError> {
        let tap = Arc::new(Mutex::new(Tap {
            sha256: Algorithm::Sha256.hasher(),
            named: NamedHasher::new(checksum.kind()),
            size: 0,
            too_large: false,
        }));
        let limit = self.max_upload_bytes;
        let tapped = {
            let tap = tap.clone();
            body.map(move |chunk: std::io::Result<Bytes>| {
                let chunk = chunk?;
                let mut tap = tap.lock().unwrap_or_else(|e| e.into_inner());
                tap.size += chunk.len() as u64;
                if tap.size > limit {
                    tap.too_large = true;
                    return Err(std::io::Error::other("upload over the size limit"));
                }
                tap.sha256.update(&chunk);
                tap.named.update(&chunk);
                Ok(chunk)
            })
        };
        let upload_id = uuid::Uuid::new_v4().simple().to_string();
        self.blobs.create_upload(&upload_id).await?;
        let appended = self.blobs.append(&upload_id, Box::pin(tapped)).await;
        // The body (and with it the tap's other handle) is gone once append returns.
        let tap = match Arc::try_unwrap(tap) {
            Ok(tap) => tap.into_inner().unwrap_or_else(|e| e.into_inner()),
            Err(_) => {
                let _ = self.blobs.abort_upload(&upload_id).await;
                return Err(LookasideError::Blob(BlobError::Io(std::io::Error::other(
                    "the upload body outlived its append",
                ))));
            }
        };
        let refused = match appended {
            Ok(_) => None,
            Err(_) if tap.too_large => Some(LookasideError::TooLarge { limit }),
            Err(BlobError::BodyInterrupted(e)) => Some(LookasideError::Interrupted(e)),
            Err(e) => Some(LookasideError::Blob(e)),
        };
        let named = tap.named;
        let refused = refused.or_else(|| {
            let actual = named.finish_hex();
            (actual != checksum.hex()).then(|| LookasideError::ChecksumMismatch {
                expected: checksum.clone(),
                actual,
            })
        });
        if let Some(err) = refused {
            if let Err(e) = self.blobs.abort_upload(&upload_id).await {
                tracing::warn!(upload = %upload_id, error = %e, "could not discard a refused lookaside upload");
            }
            return Err(err);
        }
        let blob = tap.sha256.finish();
        // The store's own running hash must agree: it is what makes the blob visible.
        let size = match self.blobs.verify_upload(&upload_id, &blob).await {
            Ok(size) => size,
            Err(e) => {
                let _ = self.blobs.abort_upload(&upload_id).await;
                return Err(e.into());
            }
        };
        Ok(StagedSource {
            upload_id,
            package: package.clone(),
            file: file.clone(),
            checksum: checksum.clone(),
            blob,
            size,
        })
    }

    /// Makes a staged source visible: claims its blob live, places the bytes
    /// under the claim, and records the source with its reference in the
    /// claim's transaction. A second upload of a stored file keeps the first.
    pub async fn commit(
        &self,
        staged: StagedSource,
        mtime: Option<i64>,
        uploaded_by: Option<&str>,
    ) -> Result<StoredSource, LookasideError> {
        let result = self.commit_inner(&staged, mtime, uploaded_by).await;
        if result.is_err() {
            self.abandon(staged).await;
        }
        result
    }

    async fn commit_inner(
        &self,
        staged: &StagedSource,
        mtime: Option<i64>,
        uploaded_by: Option<&str>,
    ) -> Result<StoredSource, LookasideError> {
        let mut claim = self.meta.claim_blob(&staged.blob, staged.size).await?;
        self.blobs
            .publish_upload(&staged.upload_id, &staged.blob)
            .await?;
        let new = claim
            .record_lookaside_source(
                &staged.package,
                &staged.file,
                &staged.checksum,
                staged.size,
                mtime,
                uploaded_by,
            )
            .await?;
        claim.commit().await?;
        Ok(StoredSource {
            blob: staged.blob.clone(),
            size: staged.size,
            new,
        })
    }

    /// Discards a staged source (a later field of the request was bad).
    pub async fn abandon(&self, staged: StagedSource) {
        if let Err(e) = self.blobs.abort_upload(&staged.upload_id).await {
            tracing::warn!(upload = %staged.upload_id, error = %e, "could not discard a staged lookaside upload");
        }
    }
}
