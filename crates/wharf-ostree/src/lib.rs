//! The OSTree format: archive repositories' objects read, written and verified
//! natively (no libostree), and mirroring an upstream archive repository into
//! a Wharf snapshot that the `tree` surface serves to stock `ostree` clients.

pub mod gvariant;
pub mod object;
pub mod summary;

pub use object::{Checksum, ObjectError, ObjectName, ObjectType};
