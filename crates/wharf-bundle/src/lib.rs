//! Air-gap bundles: [`export`] writes a store's repositories to a versioned,
//! self-describing directory that is also an OCI image layout (so
//! `skopeo copy oci:DIR:REPOSITORY:TAG …` reads it), and [`import`] brings such
//! a bundle — or a skopeo `dir:` tree, or any OCI image layout — into a store.
//! The format is documented in docs/bundle.md and [`format`].
//!
//! Imports go through `wharf_oci::Registry`, as a push does, after every file
//! was checked, so a damaged bundle changes nothing. The crate sits beside the
//! formats (like `wharf-mirror`) and reads no configuration.

mod error;
mod export;
mod files;
pub mod format;
mod import;

pub use error::BundleError;
pub use export::{export, ExportOptions, ExportSummary};
pub use import::{import, read_bundle_index, ImportOptions, ImportSummary, SourceKind};

use wharf_core::{Digest, RepoName, Tag};

/// One step of an export or import, for progress lines.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// Export: a manifest or blob file was written.
    Wrote {
        /// Its digest.
        digest: &'a Digest,
        /// Its size.
        size: u64,
    },
    /// Export: a file left complete by an interrupted run was kept.
    Kept {
        /// Its digest.
        digest: &'a Digest,
        /// Its size.
        size: u64,
    },
    /// Import: every file was checked against its digest.
    Verified {
        /// Files checked.
        files: usize,
        /// Their bytes.
        bytes: u64,
    },
    /// Import: a blob was stored.
    StoredBlob {
        /// Into which repository.
        repository: &'a RepoName,
        /// Its digest.
        digest: &'a Digest,
        /// Its size.
        size: u64,
    },
    /// Import: a manifest was recorded.
    StoredManifest {
        /// In which repository.
        repository: &'a RepoName,
        /// Its digest.
        digest: &'a Digest,
    },
    /// Import: a tag now names a manifest.
    Tagged {
        /// The repository.
        repository: &'a RepoName,
        /// The tag.
        tag: &'a Tag,
        /// The manifest.
        digest: &'a Digest,
    },
}
