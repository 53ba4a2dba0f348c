//! Wharf's vocabulary: validated value types shared by every crate.
//!
//! Nothing here does I/O. Every type has a validating constructor, so a value
//! that exists is a value that is valid: a `Digest` always has a known algorithm
//! and well-formed hex, a `RepoName` never contains `..` or an absolute path.

mod authority;
mod cron;
mod digest;
pub mod glob;
mod kind;
mod lookaside;
mod name;
mod selection;
mod tree_path;

pub mod time;

pub use authority::Authority;
pub use cron::{CronError, CronExpr, CronField};
pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use glob::RepoPattern;
pub use kind::{RepositoryKind, UnknownKind};
pub use lookaside::{
    LookasideValueError, SourceChecksum, SourceFileName, SourceHashType, SourcePackage,
};
pub use name::{NameError, Reference, RepoName, Tag};
pub use selection::{lenient_version, Platform, SelectionSyntaxError, SemverRange};
pub use tree_path::{InvalidTreePath, TreePath, MAX_TREE_COMPONENT_LEN, MAX_TREE_PATH_LEN};
