//! Group commit of stored files. Every [`Staged::put_stream`](crate::Staged::put_stream)
//! in the process hands its verified upload to one committer task, which
//! records whatever has queued up meanwhile in one transaction: each blob
//! claimed live, each entry recorded, then every upload renamed into the
//! store (made durable together, see `BlobStore::publish_uploads`), then
//! one commit.
//!
//! Why: an OSTree mirror stores thousands of small objects with many in
//! flight. One transaction per object serialises them on the database's
//! single writer (SQLite), with each object's fsync, rename and directory
//! fsync done while holding it; the writers then wait seconds for a pooled
//! connection. A batch pays that once for everything that queued while the
//! previous batch committed, and a lone writer still commits at once.
//!
//! The guarantees are those of one claim ([`wharf_meta::BlobClaim`]): the
//! claims are taken, and on PostgreSQL their rows locked, before the bytes
//! are renamed into place, and the entries naming them commit in the same
//! transaction, so the collector can never take a blob between its bytes
//! arriving and its reference. Rows are taken in one order — blobs by
//! digest, then snapshots — which is the order a lone claim takes its blob
//! and snapshot in, so batches and lone claims never deadlock.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use wharf_blob::BlobStore;
use wharf_meta::{Meta, SnapshotEntry, SnapshotId};

use crate::SnapshotError;

/// Uploads recorded in one transaction, at most.
const MAX_BATCH: usize = 256;

/// What became of one submitted upload.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Stored and recorded.
    Committed,
    /// Nothing done: the upload is intact; store it alone (a blob the
    /// collector is deleting, or a batch that failed before any rename).
    Retry,
    /// The bytes are in the store but not recorded (the batch failed after
    /// renaming them): record them alone.
    Published,
    /// The upload could not be renamed into the store.
    Failed(SnapshotError),
}

/// Where a submitted file's bytes are.
#[derive(Debug)]
pub(crate) enum Body {
    /// A verified one-shot upload of the blob store.
    Upload(String),
    /// Small bytes held in memory, written by the batch itself.
    Bytes(bytes::Bytes),
}

struct Pending {
    snapshot: SnapshotId,
    entry: SnapshotEntry,
    body: Body,
    done: oneshot::Sender<Outcome>,
}

impl Pending {
    fn answer(self, outcome: Outcome) {
        // A writer that went away needs no answer; its upload is expired later.
        let _ = self.done.send(outcome);
    }
}

/// The handle of the committer task.
#[derive(Debug)]
pub(crate) struct Committer {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Committer {
    /// Starts the task on the current runtime.
    pub(crate) fn start(meta: Meta, blobs: Arc<BlobStore>) -> Committer {
        let (queue, mut rx) = mpsc::unbounded_channel::<Pending>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                commit_batch(&meta, &blobs, batch).await;
            }
        });
        Committer { queue }
    }

    /// Stores `body` and records it as `entry` of staged snapshot
    /// `snapshot`, with whatever else is queued.
    pub(crate) async fn submit(
        &self,
        snapshot: &SnapshotId,
        entry: SnapshotEntry,
        body: Body,
    ) -> Outcome {
        let (done, answer) = oneshot::channel();
        let pending = Pending {
            snapshot: snapshot.clone(),
            entry,
            body,
            done,
        };
        if self.queue.send(pending).is_err() {
            return Outcome::Retry;
        }
        // The task ended (its runtime shut down) before answering: only the
        // lone path can tell what is left.
        answer.await.unwrap_or(Outcome::Retry)
    }
}

async fn commit_batch(meta: &Meta, blobs: &BlobStore, mut batch: Vec<Pending>) {
    batch.sort_by(|a, b| a.entry.blob.cmp(&b.entry.blob));
    let mut tx = match meta.begin_entry_batch().await {
        Ok(tx) => tx,
        Err(e) => {
            tracing::debug!(error = %e, "batch of {} uploads: no transaction; stored one by one", batch.len());
            batch.into_iter().for_each(|p| p.answer(Outcome::Retry));
            return;
        }
    };
    // Blob rows first, in digest order, then the snapshots' rows: the order a
    // lone claim takes them in.
    let wanted: Vec<(&wharf_core::Digest, u64)> = batch
        .iter()
        .map(|p| (&p.entry.blob, p.entry.size))
        .collect();
    let answers = match tx.claim_many(&wanted).await {
        Ok(answers) => answers,
        Err(e) => {
            // The transaction may be unusable (PostgreSQL aborts it on any
            // error): nothing was renamed yet, so everyone stores alone.
            tracing::debug!(error = %e, "batch of uploads failed; stored one by one");
            drop(tx);
            batch.into_iter().for_each(|p| p.answer(Outcome::Retry));
            return;
        }
    };
    let mut claimed = Vec::with_capacity(batch.len());
    for (p, ok) in batch.into_iter().zip(answers) {
        if ok {
            claimed.push(p);
        } else {
            // Being deleted by the collector: the lone path waits for it.
            p.answer(Outcome::Retry);
        }
    }
    claimed.sort_by(|a, b| {
        (a.snapshot.as_str(), a.entry.path.as_str())
            .cmp(&(b.snapshot.as_str(), b.entry.path.as_str()))
    });
    let mut failed = None;
    for group in claimed.chunk_by(|a, b| a.snapshot == b.snapshot) {
        let entries: Vec<&SnapshotEntry> = group.iter().map(|p| &p.entry).collect();
        if let Err(e) = tx.record_many(&group[0].snapshot, &entries).await {
            failed = Some(e);
            break;
        }
    }
    if let Some(e) = failed {
        // The one at fault (a snapshot discarded meanwhile) meets its error alone.
        tracing::debug!(error = %e, "batch of uploads failed; stored one by one");
        drop(tx);
        claimed.into_iter().for_each(|p| p.answer(Outcome::Retry));
        return;
    }
    let renamed = place(blobs, &claimed).await;
    if renamed.iter().any(Result::is_err) {
        drop(tx);
        for (p, result) in claimed.into_iter().zip(renamed) {
            p.answer(match result {
                Ok(()) => Outcome::Published,
                Err(e) => Outcome::Failed(e.into()),
            });
        }
        return;
    }
    let outcome = tx.commit().await;
    for p in claimed {
        p.answer(match &outcome {
            Ok(()) => Outcome::Committed,
            Err(_) => Outcome::Published,
        });
    }
    if let Err(e) = outcome {
        tracing::warn!(error = %e, "committing a batch of uploads failed; recording them one by one");
    }
}

/// Puts every claimed file's bytes at its blob path: uploads renamed, bytes
/// in memory written, each kind together; one result per file in order.
async fn place(blobs: &BlobStore, claimed: &[Pending]) -> Vec<Result<(), wharf_blob::BlobError>> {
    let mut upload_at = Vec::new();
    let mut uploads = Vec::new();
    let mut bytes_at = Vec::new();
    let mut bytes = Vec::new();
    for (i, p) in claimed.iter().enumerate() {
        match &p.body {
            Body::Upload(id) => {
                upload_at.push(i);
                uploads.push((id.as_str(), &p.entry.blob));
            }
            Body::Bytes(b) => {
                bytes_at.push(i);
                bytes.push((p.entry.blob.clone(), b.clone()));
            }
        }
    }
    let (published, written) =
        futures_util::future::join(blobs.publish_uploads(&uploads), blobs.put_many(&bytes)).await;
    let mut results: Vec<Option<Result<(), wharf_blob::BlobError>>> =
        claimed.iter().map(|_| None).collect();
    for (i, r) in upload_at.into_iter().zip(published) {
        results[i] = Some(r);
    }
    for (i, r) in bytes_at.into_iter().zip(written) {
        results[i] = Some(r);
    }
    results
        .into_iter()
        .map(|r| r.expect("every file answered"))
        .collect()
}
