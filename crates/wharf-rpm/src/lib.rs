//! rpm-md repositories: reading `repomd.xml` and primary, mirroring an
//! upstream repository into a published snapshot, and hosted repositories
//! whose metadata Wharf writes from uploaded packages ([`hosted`]).
//!
//! The crate only *produces snapshots*: `wharf-http` serves `/rpm/<repo>/…`
//! from whatever snapshot is published. A mirror run ([`mirror::run`]) fetches
//! repomd.xml, every data file it names and every package primary lists, each
//! verified against its checksum and size, stages them at upstream's paths and
//! publishes them at once, so a client never sees a half-updated repository.

mod checksum;
pub mod compose;
mod compression;
pub mod createrepo;
mod error;
pub mod evr;
pub mod filter;
pub mod header;
pub mod hosted;
mod location;
pub mod mirror;
pub mod mirrorlist;
mod package;
mod primary;
pub mod promote;
mod regenerate;
mod repomd;
pub mod retention;
mod source;
mod xml;

pub use checksum::{Checksum, ChecksumHasher, ChecksumKind};
pub use compression::Compression;
pub use error::RpmError;
pub use location::Location;
pub use primary::{for_each_package, PackageEntry};
pub use repomd::{DataRecord, Repomd, MAX_REPOMD_BYTES};
pub use source::{Source, SourceSettings};
