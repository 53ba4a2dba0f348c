//! `wharf check`: re-hash every stored blob and cross-check the database.

use std::collections::{HashMap, HashSet};

use wharf_blob::{BlobStore, Verification};
use wharf_core::Digest;
use wharf_meta::Meta;

use crate::{JobError, Progress};

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
    /// An owner (an OCI manifest: its own bytes, a config, a layer, a child
    /// manifest) references a blob that is not stored or not live.
    ReferencedBlobMissing {
        /// The owner, as `wharf_meta::RefOwner::key` names it.
        owner: String,
        /// The blob it needs.
        blob: Digest,
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
            Problem::ReferencedBlobMissing { owner, blob } => {
                write!(f, "{owner} needs blob {blob}, which is not stored")
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

/// Verifies every blob on storage, every blob the database records, and every
/// blob an owner references. Linear in the number of blobs and references: the
/// listing is indexed once, and only suspected problems are re-checked (a
/// concurrent collection may have removed a blob between listing and reading).
pub async fn check_store(blobs: &BlobStore, meta: &Meta) -> Result<CheckReport, JobError> {
    check_store_with(blobs, meta, &crate::NoProgress).await
}

/// [`check_store`], reporting each re-hashed blob to `progress` and stopping
/// between blobs once it is cancelled.
pub async fn check_store_with(
    blobs: &BlobStore,
    meta: &Meta,
    progress: &dyn Progress,
) -> Result<CheckReport, JobError> {
    let mut report = CheckReport::default();
    // The totals come first, so the listing is collected.
    let listed: Vec<_> = blobs.list().try_collect().await?;
    progress.set_totals(
        Some(listed.len() as u64),
        Some(listed.iter().map(|e| e.size).sum()),
    );
    let mut stored: HashMap<Digest, u64> = HashMap::with_capacity(listed.len());
    for entry in listed {
        if progress.cancelled() {
            return Err(JobError::Cancelled);
        }
        progress.advance(1, entry.size);
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
        stored.insert(entry.digest, entry.size);
    }
    let known = meta.known_blobs().await?;
    let live: HashSet<Digest> = known.iter().map(|(d, _)| d.clone()).collect();
    for (digest, recorded) in known {
        match stored.get(&digest) {
            None => {
                if still_missing(blobs, meta, &digest).await? {
                    report.problems.push(Problem::Missing { digest });
                }
            }
            Some(&size) if size != recorded => report.problems.push(Problem::SizeMismatch {
                digest,
                recorded,
                stored: size,
            }),
            Some(_) => {}
        }
    }
    for (owner, blob) in meta.blob_references().await? {
        if stored.contains_key(&blob) && live.contains(&blob) {
            continue;
        }
        // A referenced blob cannot be collected, so this is no race: but
        // re-check one by one in case the owner was deleted meanwhile.
        if still_missing(blobs, meta, &blob).await? {
            report
                .problems
                .push(Problem::ReferencedBlobMissing { owner, blob });
        }
    }
    Ok(report)
}

/// Re-checks one blob that looked missing: true if it has no live row with bytes.
async fn still_missing(blobs: &BlobStore, meta: &Meta, digest: &Digest) -> Result<bool, JobError> {
    if !meta.blob_is_live(digest).await? {
        // Gone from the database too: collected meanwhile, unless something needs it.
        return Ok(meta.blob_is_needed(digest).await?);
    }
    Ok(blobs.stat(digest).await?.is_none())
}
