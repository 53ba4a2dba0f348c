//! Background work over the blob store and the metadata database, shared by
//! the server's scheduler and the `wharf gc` / `wharf check` commands.
//!
//! Everything here is safe to run while the server is serving: garbage
//! collection decides per blob inside one database transaction (see
//! `wharf_meta::Meta::sweep_blob`) and spares everything younger than the grace
//! period, so there is never a read-only window.

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
