//! `wharf check`: re-hash every stored blob and cross-check the database.

use wharf_blob::{BlobStore, Verification};
use wharf_core::Digest;
use wharf_meta::Meta;

use crate::JobError;

/// One inconsistency found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The bytes no longer hash to their digest.
    Corrupt {
        /// The blob.
        digest: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// The database records a blob whose bytes are missing.
    Missing {
        /// The blob.
        digest: Digest,
    },
    /// The stored size differs from the recorded size.
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// Recorded.
        recorded: u64,
        /// On storage.
        stored: u64,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Corrupt { digest, actual } => {
                write!(f, "corrupt blob {digest}: content hashes to {actual}")
            }
            Problem::Missing { digest } => {
                write!(f, "missing blob {digest}: recorded but not stored")
            }
            Problem::SizeMismatch {
                digest,
                recorded,
                stored,
            } => write!(
                f,
                "size mismatch for {digest}: recorded {recorded} bytes, stored {stored}"
            ),
        }
    }
}

/// What a check found.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Blobs re-hashed.
    pub blobs_verified: u64,
    /// Bytes re-hashed.
    pub bytes_verified: u64,
    /// Every problem.
    pub problems: Vec<Problem>,
}

/// Verifies every blob on storage and every blob the database records.
pub async fn check_store(blobs: &dyn BlobStore, meta: &Meta) -> Result<CheckReport, JobError> {
    let mut report = CheckReport::default();
    let stored = blobs.list().await?;
    for entry in &stored {
        match blobs.verify(&entry.digest).await {
            Ok(Verification::Intact) => {}
            Ok(Verification::Corrupt { actual }) => report.problems.push(Problem::Corrupt {
                digest: entry.digest.clone(),
                actual,
            }),
            // Deleted by a concurrent garbage collection between list and verify.
            Err(wharf_blob::BlobError::NotFound(_)) => continue,
            Err(e) => return Err(e.into()),
        }
        report.blobs_verified += 1;
        report.bytes_verified += entry.size;
    }
    for (digest, recorded) in meta.known_blobs().await? {
        match blobs.stat(&digest).await? {
            None => {
                // A concurrent GC deletes the row before the bytes; re-check the row.
                if meta.known_blobs().await?.iter().any(|(d, _)| d == &digest) {
                    report.problems.push(Problem::Missing { digest });
                }
            }
            Some(stored) if stored != recorded => report.problems.push(Problem::SizeMismatch {
                digest,
                recorded,
                stored,
            }),
            Some(_) => {}
        }
    }
    Ok(report)
}
