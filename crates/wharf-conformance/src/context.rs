//! The state shared by all checks of one run: the client, this run's repository names, and the
//! set of optional features the operator allowed to be missing.
//!
//! Repository names carry a random suffix so that a rerun against the same registry starts from
//! empty repositories; checks that need a known set of tags or referrers use a sub-repository of
//! their own (`<repo>/tags`, `<repo>/referrers`, ...), so no check sees another's content.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::client::Client;
use crate::outcome::{Failure, Feature, Outcome};

/// Everything a check needs.
#[derive(Debug)]
pub struct Ctx {
    /// The registry client.
    pub client: Client,
    /// This run's main repository, `<namespace>-<token>`.
    pub repo: String,
    /// This run's second repository for cross-repository mounts, `<cross-namespace>-<token>`.
    pub cross_repo: String,
    /// The random token shared by this run's names.
    pub token: String,
    allowed: HashSet<Feature>,
    // Notes about allowed-but-missing features, collected while one check runs and printed on
    // its PASS line; the runner drains this between checks.
    notes: Mutex<Vec<(Feature, String)>>,
}

impl Ctx {
    /// A context for one run.
    pub fn new(
        client: Client,
        namespace: &str,
        cross_namespace: &str,
        token: String,
        allowed: HashSet<Feature>,
    ) -> Ctx {
        Ctx {
            client,
            repo: format!("{namespace}-{token}"),
            cross_repo: format!("{cross_namespace}-{token}"),
            token,
            allowed,
            notes: Mutex::new(Vec::new()),
        }
    }

    /// A repository below the main one, private to one group of checks.
    pub fn sub_repo(&self, name: &str) -> String {
        format!("{}/{}", self.repo, name)
    }

    /// Records that the registry lacks an optional feature: a note when the operator allowed
    /// it to be missing, otherwise a failure.
    pub fn missing(&self, feature: Feature, reason: impl Into<String>) -> Outcome {
        let reason = reason.into();
        if self.allowed.contains(&feature) {
            self.lock_notes().push((feature, reason));
            Ok(())
        } else {
            Err(Failure::Absent { feature, reason })
        }
    }

    /// Takes the (feature, reason) notes recorded since the last call.
    pub fn take_notes(&self) -> Vec<(Feature, String)> {
        std::mem::take(&mut *self.lock_notes())
    }

    fn lock_notes(&self) -> std::sync::MutexGuard<'_, Vec<(Feature, String)>> {
        // A panic inside a check can poison the lock; the notes are plain strings, so the data
        // is still usable.
        self.notes.lock().unwrap_or_else(|it| it.into_inner())
    }
}
