//! Online garbage collection and upload expiry.

use std::time::Duration;

use wharf_blob::BlobStore;
use wharf_core::Digest;
use wharf_meta::{to_unix, unix_now, DeletionMark, Meta, SweepOutcome};

use crate::{JobError, Progress};

/// How aggressive a collection is.
#[derive(Debug, Clone, Copy)]
pub struct GcPolicy {
    /// Unreferenced blobs younger than this are kept.
    pub grace_period: Duration,
    /// Upload sessions idle this long are expired.
    pub upload_expiry: Duration,
    /// Also walk the whole store for orphaned bytes and rebuild the candidate
    /// list: what `wharf gc` does, and the server's first collection after a start.
    pub full: bool,
}

/// What a collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs deleted.
    pub blobs_deleted: u64,
    /// Bytes freed by deleting blobs.
    pub bytes_freed: u64,
    /// Blobs kept (referenced or young).
    pub blobs_kept: u64,
    /// Upload sessions expired.
    pub uploads_expired: u64,
}

/// Runs one collection: expire idle uploads, then sweep unreferenced blobs.
pub async fn collect_garbage(
    blobs: &BlobStore,
    meta: &Meta,
    policy: GcPolicy,
) -> Result<GcReport, JobError> {
    collect_garbage_with(blobs, meta, policy, &crate::NoProgress).await
}

/// [`collect_garbage`], reporting each swept blob to `progress` and stopping
/// between blobs (a safe point: nothing is half-deleted) once it is cancelled.
pub async fn collect_garbage_with(
    blobs: &BlobStore,
    meta: &Meta,
    policy: GcPolicy,
    progress: &dyn Progress,
) -> Result<GcReport, JobError> {
    let mut report = GcReport::default();
    let now = unix_now();
    let upload_cutoff = now - policy.upload_expiry.as_secs() as i64;
    for id in meta.idle_uploads(upload_cutoff).await? {
        blobs.abort_upload(&id).await?;
        meta.delete_upload(&id).await?;
        report.uploads_expired += 1;
    }
    // Staging files without a session row: monolithic pushes interrupted by a crash.
    let mut uploads = blobs.list_uploads();
    while let Some(upload) = uploads.try_next().await? {
        if to_unix(upload.modified) < upload_cutoff && meta.upload_repo(&upload.id).await?.is_none()
        {
            blobs.abort_upload(&upload.id).await?;
            report.uploads_expired += 1;
        }
    }
    // Deletions whose collector died after marking them: finish them first.
    for mark in meta.take_over_abandoned_deletions().await? {
        delete_marked(blobs, meta, &mark).await?;
        report.blobs_deleted += 1;
    }
    let cutoff = now - policy.grace_period.as_secs() as i64;
    if policy.full {
        meta.rebuild_gc_candidates().await?;
    }
    // The candidate list holds every blob that may have become garbage, so the
    // sweep's cost follows the garbage (and recent uploads), not the store.
    let mut after = None;
    loop {
        let batch = meta.gc_candidates(after.as_ref(), CANDIDATE_BATCH).await?;
        let Some(last) = batch.last().cloned() else {
            break;
        };
        for digest in batch {
            if progress.cancelled() {
                return Err(JobError::Cancelled);
            }
            let freed = report.bytes_freed;
            sweep_one(blobs, meta, &digest, cutoff, false, None, &mut report).await?;
            progress.advance(1, report.bytes_freed - freed);
        }
        after = Some(last);
    }
    if policy.full {
        // Bytes without a row are left by a crash between storing and recording
        // them; only a walk of the whole store finds them.
        let mut listed = blobs.list();
        while let Some(entry) = listed.try_next().await? {
            if progress.cancelled() {
                return Err(JobError::Cancelled);
            }
            if to_unix(entry.modified) < cutoff {
                sweep_one(
                    blobs,
                    meta,
                    &entry.digest,
                    cutoff,
                    true,
                    Some(entry.size),
                    &mut report,
                )
                .await?;
            }
        }
    }
    Ok(report)
}

/// Candidates read per query.
const CANDIDATE_BATCH: u32 = 500;

async fn sweep_one(
    blobs: &BlobStore,
    meta: &Meta,
    digest: &Digest,
    cutoff: i64,
    orphan: bool,
    size: Option<u64>,
    report: &mut GcReport,
) -> Result<(), JobError> {
    match meta.mark_for_deletion(digest, cutoff, orphan).await? {
        SweepOutcome::Marked(mark) => {
            let size = match size {
                Some(size) => Some(size),
                None => blobs.stat(digest).await?,
            };
            if delete_marked(blobs, meta, &mark).await? {
                report.blobs_deleted += 1;
                report.bytes_freed += size.unwrap_or(0);
            } else {
                report.blobs_kept += 1;
            }
        }
        SweepOutcome::Kept => report.blobs_kept += 1,
    }
    Ok(())
}

/// Unlinks the bytes under `mark`, then removes the row. Returns false if the
/// mark lapsed before the unlink (another collector took it over), in which case
/// this collector leaves the blob alone.
async fn delete_marked(
    blobs: &BlobStore,
    meta: &Meta,
    mark: &DeletionMark,
) -> Result<bool, JobError> {
    if !meta.deletion_holds(mark).await? {
        return Ok(false);
    }
    blobs.delete(&mark.digest).await?;
    meta.finish_deletion(mark).await?;
    Ok(true)
}
