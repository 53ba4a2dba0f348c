//! Background work over the blob store and the metadata database, shared by
//! the server's scheduler and the `wharf gc` / `wharf check` commands.
//!
//! Everything here is safe to run while the server is serving: garbage
//! collection marks one blob at a time for deletion inside a database
//! transaction, unlinks only what it marked, and spares everything younger than
//! the grace period (see `wharf_meta`'s gc module), so there is never a
//! read-only window and no interleaving with a writer loses a blob.

mod check;
mod gc;

pub use check::{check_store, CheckReport, Problem};
pub use gc::{collect_garbage, run_scheduler, GcPolicy, GcReport};

/// What went wrong while running a job.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The blob store failed.
    #[error(transparent)]
    Blob(#[from] wharf_blob::BlobError),
    /// The metadata database failed.
    #[error(transparent)]
    Meta(#[from] wharf_meta::MetaError),
}
