//! Background work over the blob store and the metadata database: the handlers
//! (garbage collection, upload expiry, verification), shared by the server's
//! job worker and the `wharf gc` / `wharf check` commands, and the worker and
//! scheduler that run them from the persisted queue (`runner`), and the seam
//! (`handler`) through which the binary adds kinds this crate does not know.
//!
//! Everything here is safe to run while the server is serving: garbage
//! collection marks one blob at a time for deletion inside a database
//! transaction, unlinks only what it marked, and spares everything younger than
//! the grace period (see `wharf_meta`'s gc module), so there is never a
//! read-only window and no interleaving with a writer loses a blob.

mod check;
mod gc;
mod handler;
mod runner;

pub use check::{check_store, check_store_with, CheckReport, Problem};
pub use gc::{collect_garbage, collect_garbage_with, GcPolicy, GcReport};
pub use handler::{HandlerFuture, Handlers, JobCatalog, JobHandler};
pub use runner::{
    run_scheduler, Cadence, JobKind, NoProgress, Progress, Schedule, Worker, JOB_LEASE_SECS,
};

/// What went wrong while running a job.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The blob store failed.
    #[error(transparent)]
    Blob(#[from] wharf_blob::BlobError),
    /// The metadata database failed.
    #[error(transparent)]
    Meta(#[from] wharf_meta::MetaError),
    /// The job was cancelled and stopped at a safe point.
    #[error("cancelled")]
    Cancelled,
    /// A verification found problems (its summary line).
    #[error("{0}")]
    Problems(String),
    /// A handled job failed (its summary line and the first failure).
    #[error("{0}")]
    Failed(String),
}
