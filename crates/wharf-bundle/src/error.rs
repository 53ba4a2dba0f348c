//! [`BundleError`]: why an export or an import could not be done, in words an
//! operator can act on (which file, what was expected, what to do).

use std::path::PathBuf;

use wharf_core::Digest;

/// An export or import failure.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The directory is not something that can be imported (or exported into).
    #[error("{}: {reason}", path.display())]
    NotABundle {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The bundle index is malformed or inconsistent.
    #[error("{}: invalid bundle index: {reason}", path.display())]
    InvalidIndex {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file's size differs from what the index (or its digest name) says.
    #[error(
        "{}: {actual} bytes where {expected} were expected (truncated or damaged); nothing was imported",
        path.display()
    )]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// Size the index records.
        expected: u64,
        /// Size on disk.
        actual: u64,
    },
    /// A file's content does not hash to the digest it must have.
    #[error(
        "{}: content hashes to {actual}, not {expected} (corrupted); nothing was imported",
        path.display()
    )]
    DigestMismatch {
        /// The file.
        path: PathBuf,
        /// The digest it must have.
        expected: String,
        /// The digest of what is there.
        actual: String,
    },
    /// Content the bundle refers to is neither in it nor in the store.
    #[error("{what} {digest} is neither in {} nor in the store{hint}; nothing was imported", path.display())]
    Missing {
        /// The bundle or layout directory.
        path: PathBuf,
        /// "blob" or "manifest".
        what: &'static str,
        /// What is missing.
        digest: Digest,
        /// What to do about it (e.g. which parent bundle to import first).
        hint: String,
    },
    /// A manifest in the source is not one the registry stores.
    #[error("manifest {digest}: {reason}")]
    InvalidManifest {
        /// The manifest.
        digest: Digest,
        /// Why it was refused.
        reason: String,
    },
    /// The bundle was written by a newer format version.
    #[error("{}: bundle format version {found}; this wharf reads up to {supported}", path.display())]
    UnsupportedVersion {
        /// The index file.
        path: PathBuf,
        /// The version it declares.
        found: u32,
        /// The newest this build reads.
        supported: u32,
    },
    /// The store refused an operation.
    #[error(transparent)]
    Registry(#[from] wharf_oci::OciError),
    /// The blob store failed.
    #[error(transparent)]
    Blob(#[from] wharf_blob::BlobError),
    /// Trusted keys were given and an image's signature is missing or does not verify.
    #[error("{repository}:{tag}: {source}; nothing was imported")]
    Signature {
        /// The repository.
        repository: String,
        /// The tag.
        tag: String,
        /// What is wrong with its signature.
        source: wharf_oci::cosign::CosignError,
    },
}

impl BundleError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> BundleError {
        let path = path.into();
        move |source| BundleError::Io { path, source }
    }
}
