//! `RpmError`: why reading or mirroring an rpm-md repository failed.

/// Why an rpm-md operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RpmError {
    /// repomd.xml or primary is not what rpm-md says.
    #[error("{0}")]
    Metadata(String),
    /// A location an exact mirror cannot keep (`xml:base`, absolute, `..`).
    #[error("{0}")]
    Location(String),
    /// Bytes fetched from upstream are not what its metadata promised.
    #[error("{0}")]
    Verification(String),
    /// `repomd.xml.asc` is missing or does not verify against the configured keys.
    #[error("{0}")]
    Signature(String),
    /// The upstream could not be reached or refused a request.
    #[error("{0}")]
    Upstream(String),
    /// An uploaded file is not a well-formed RPM package (or not the one expected).
    #[error("{0}")]
    Package(String),
    /// The change conflicts with what the repository holds.
    #[error("{0}")]
    Conflict(String),
    /// What the change names is not there.
    #[error("{0}")]
    NotFound(String),
    /// An upload is larger than the configured cap.
    #[error("{0}")]
    TooLarge(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
    /// The run was cancelled before it published.
    #[error("cancelled")]
    Cancelled,
}
