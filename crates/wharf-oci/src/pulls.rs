//! Pull times, counted in memory and written in batches.
//!
//! Retention rules keep manifests pulled within some days, so each pull must
//! be remembered — but a manifest GET is the hottest request there is, and a
//! database write per pull would cost more than the rest of it. So a pull only
//! updates this process's map (no allocation when the manifest was pulled
//! before), and [`PullLog::flush`] writes the map out, which the server does
//! every few seconds and at shutdown. A crash loses at most the last interval
//! of pull times, which only makes retention keep less than it might.

use std::collections::HashMap;
use std::sync::Mutex;

use wharf_core::{Digest, RepoName};
use wharf_meta::{Meta, MetaError};

/// Pulls not yet written: repository → manifest → latest pull (unix seconds).
#[derive(Default)]
pub struct PullLog {
    pending: Mutex<HashMap<RepoName, HashMap<Digest, i64>>>,
}

impl PullLog {
    /// Notes a pull of manifest `digest` from `repo` now.
    pub fn note(&self, repo: &RepoName, digest: &Digest) {
        let now = wharf_meta::unix_now();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.get_mut(repo) {
            Some(manifests) => match manifests.get_mut(digest) {
                Some(at) => *at = now,
                None => {
                    manifests.insert(digest.clone(), now);
                }
            },
            None => {
                pending.insert(repo.clone(), HashMap::from([(digest.clone(), now)]));
            }
        }
    }

    /// Writes every pull noted so far; on failure they are kept for the next flush.
    pub async fn flush(&self, meta: &Meta) -> Result<usize, MetaError> {
        let taken = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let pulls: Vec<(RepoName, Digest, i64)> = taken
            .iter()
            .flat_map(|(repo, manifests)| {
                manifests
                    .iter()
                    .map(move |(digest, at)| (repo.clone(), digest.clone(), *at))
            })
            .collect();
        if let Err(e) = meta.record_pulls(&pulls).await {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for (repo, digest, at) in pulls {
                let slot = pending.entry(repo).or_default().entry(digest).or_insert(at);
                *slot = (*slot).max(at);
            }
            return Err(e);
        }
        Ok(pulls.len())
    }
}
