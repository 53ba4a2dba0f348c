//! The registry's domain errors; `wharf-http` maps each to the spec's code.

use wharf_blob::BlobError;
use wharf_core::Digest;
use wharf_meta::MetaError;

/// What went wrong in a registry operation.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The repository name is not valid.
    #[error("invalid repository name: {0}")]
    NameInvalid(String),
    /// The repository does not exist.
    #[error("repository {0} not known")]
    NameUnknown(String),
    /// A digest was malformed, or bytes did not match it.
    #[error("{0}")]
    DigestInvalid(String),
    /// The blob is not in the repository.
    #[error("blob {0} unknown to this repository")]
    BlobUnknown(Digest),
    /// No such upload session in this repository.
    #[error("upload {0} unknown")]
    BlobUploadUnknown(String),
    /// The upload request was malformed.
    #[error("invalid upload: {0}")]
    BlobUploadInvalid(String),
    /// A chunk did not start where the upload ends.
    #[error("chunk out of order: upload holds {size} bytes")]
    ChunkOutOfOrder {
        /// Bytes received so far.
        size: u64,
    },
    /// A byte range outside the blob was requested.
    #[error("range not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable {
        /// The blob's size.
        size: u64,
    },
    /// No manifest by that reference.
    #[error("manifest {0} unknown")]
    ManifestUnknown(String),
    /// The manifest is malformed or of an unsupported type.
    #[error("invalid manifest: {0}")]
    ManifestInvalid(String),
    /// A `?tag=` of a manifest push is not a valid tag, or not allowed there.
    #[error("invalid tag parameter: {0}")]
    TagInvalid(String),
    /// A manifest push names more `?tag=` tags than one request may carry.
    #[error("{count} tag parameters; at most {limit} are accepted per request")]
    TooManyTags {
        /// Tags asked for.
        count: usize,
        /// The most accepted.
        limit: usize,
    },
    /// The manifest references a blob or manifest the repository lacks.
    #[error("manifest references unknown {0}")]
    ManifestBlobUnknown(Digest),
    /// The manifest is larger than the configured limit.
    #[error("manifest of {size} bytes exceeds the limit of {limit} bytes")]
    ManifestTooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A length did not match the content.
    #[error("{0}")]
    SizeInvalid(String),
    /// The operation is not supported.
    #[error("{0}")]
    Unsupported(String),
    /// The blob store failed.
    #[error(transparent)]
    Storage(BlobError),
    /// The name belongs to a repository of another kind (OSTree, RPM, files).
    #[error("repository {name} is an {kind} repository, not a container repository")]
    WrongKind {
        /// The repository.
        name: String,
        /// Its kind.
        kind: wharf_core::RepositoryKind,
    },
    /// The push would take a namespace over its byte quota.
    #[error(
        "quota exceeded: namespace {namespace} holds {used} of its {limit} bytes, \
         and this push adds {adding} more"
    )]
    QuotaExceeded {
        /// The namespace's pattern.
        namespace: String,
        /// Bytes it holds.
        used: u64,
        /// Its limit.
        limit: u64,
        /// Bytes the refused push adds.
        adding: u64,
    },
    /// The metadata database failed.
    #[error(transparent)]
    Meta(MetaError),
}

impl From<MetaError> for OciError {
    fn from(err: MetaError) -> Self {
        match err {
            MetaError::WrongKind { name, actual, .. } => OciError::WrongKind { name, kind: actual },
            other => OciError::Meta(other),
        }
    }
}

impl From<BlobError> for OciError {
    fn from(err: BlobError) -> Self {
        match err {
            BlobError::NotFound(d) => OciError::BlobUnknown(d),
            BlobError::UploadNotFound(id) | BlobError::InvalidUploadId(id) => {
                OciError::BlobUploadUnknown(id)
            }
            BlobError::DigestMismatch { expected, actual } => OciError::DigestInvalid(format!(
                "content digest {actual} does not match {expected}"
            )),
            BlobError::RangeNotSatisfiable { size, .. } => OciError::RangeNotSatisfiable { size },
            BlobError::BodyInterrupted(e) => {
                OciError::BlobUploadInvalid(format!("body interrupted: {e}"))
            }
            other @ BlobError::Io(_) => OciError::Storage(other),
        }
    }
}
