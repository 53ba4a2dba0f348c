//! rpm-md repositories: reading `repomd.xml` and primary, and mirroring an
//! upstream repository into a published snapshot.
//!
//! The crate only *produces snapshots*: `wharf-http` serves `/rpm/<repo>/…`
//! from whatever snapshot is published. A mirror run ([`mirror::run`]) fetches
//! repomd.xml, every data file it names and every package primary lists, each
//! verified against its checksum and size, stages them at upstream's paths and
//! publishes them at once, so a client never sees a half-updated repository.

mod checksum;
mod compression;
mod error;
mod location;
pub mod mirror;
mod primary;
mod repomd;
mod source;
mod xml;

pub use checksum::{Checksum, ChecksumHasher, ChecksumKind};
pub use compression::Compression;
pub use error::RpmError;
pub use location::Location;
pub use primary::{for_each_package, PackageEntry};
pub use repomd::{DataRecord, Repomd, MAX_REPOMD_BYTES};
pub use source::{Source, SourceSettings};
