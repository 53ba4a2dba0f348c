//! The OSTree format: archive repositories' objects read, written and verified
//! natively (no libostree), and mirroring an upstream archive repository into
//! a Wharf snapshot that the `tree` surface serves to stock `ostree` clients.

pub mod commit;
pub mod delta;
pub mod extras;
pub mod gvariant;
pub mod local;
pub mod mirror;
pub mod object;
pub mod push;
pub mod retention;
pub mod signature;
pub mod summary;
pub mod upstream;

pub use mirror::{run_mirror, MirrorObserver, MirrorPlan, MirrorSummary, RefSelection};
pub use object::{Checksum, ObjectError, ObjectName, ObjectType};
pub use retention::{RefRule, Retention};
pub use upstream::UpstreamSettings;
