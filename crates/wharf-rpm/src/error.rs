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
    /// The upstream could not be reached or refused a request.
    #[error("{0}")]
    Upstream(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
    /// The run was cancelled before it published.
    #[error("cancelled")]
    Cancelled,
}
