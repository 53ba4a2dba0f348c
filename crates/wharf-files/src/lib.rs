//! File repositories and the lookaside cache: bytes that are served as files
//! under names clients choose, rather than as a package format's metadata.
//!
//! [`lookaside`] is dist-git's source cache (the rpkg/fedpkg `upload.cgi`
//! protocol's storage side): source files keyed by package, file name and
//! checksum, each a blob verified against the uploader's checksum before it
//! becomes visible. Nothing here speaks HTTP; `wharf-http` parses requests
//! into this crate's calls. [`tree`] changes file repositories one snapshot
//! at a time (served by `wharf-http`'s tree surface at `/files/<repo>/…`),
//! each with a generated `SHA256SUMS`; [`mirror`] fills one from an upstream
//! HTTP tree or a local directory (`[[files.remotes]]`).

pub mod lookaside;
pub mod mirror;
pub mod tree;

pub use lookaside::{Lookaside, LookasideError, StagedSource, StoredSource};

/// What the HTTP layer needs of this crate: one value, cheap to clone.
#[derive(Clone)]
pub struct Files {
    /// The lookaside cache.
    pub lookaside: Lookaside,
    /// File repositories' writes (`/api/v1/files/…`).
    pub repos: tree::FileRepos,
    /// Largest file one `PUT /api/v1/files/…` stores (`files.max_upload_bytes`).
    pub max_upload_bytes: u64,
}
