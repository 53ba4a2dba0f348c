//! The seam through which the queue runs kinds of job it does not know: the
//! binary registers a [`JobHandler`] per kind (`sync` for mirroring), so this
//! crate never imports a format or the mirror, and `gc`/`check` stay built in.
//!
//! A handled job is named `KIND:TARGET` (`sync:quay`): the job key, so one run
//! at a time per target; the target travels in the job's parameters.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::{JobError, JobKind, Progress};

/// What a handler's run returns: its one-line summary, or why it failed.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<String, JobError>> + Send + 'a>>;

/// Runs one kind of job for a target.
pub trait JobHandler: Send + Sync {
    /// Runs the job for `target`, reporting to `progress` and stopping at a
    /// safe point once `progress.cancelled()`; returns the summary line the
    /// job history keeps.
    fn run<'a>(&'a self, target: &'a str, progress: &'a dyn Progress) -> HandlerFuture<'a>;
}

/// The handlers a worker runs, by kind.
#[derive(Clone, Default)]
pub struct Handlers(Arc<HashMap<String, Arc<dyn JobHandler>>>);

impl Handlers {
    /// No handlers: only the built-in kinds run.
    pub fn new() -> Handlers {
        Handlers::default()
    }

    /// Adds (or replaces) the handler of `kind`.
    pub fn with(mut self, kind: &str, handler: Arc<dyn JobHandler>) -> Handlers {
        Arc::make_mut(&mut self.0).insert(kind.to_owned(), handler);
        self
    }

    pub(crate) fn get(&self, kind: &str) -> Option<&Arc<dyn JobHandler>> {
        self.0.get(kind)
    }
}

/// Which jobs may be queued by name (`gc`, `gc-full`, `check`, `KIND:TARGET`):
/// what the CLI and the API accept. Kept apart from [`Handlers`] so that a
/// client that only writes to the queue (`wharf jobs run`) need not build them.
#[derive(Debug, Clone, Default)]
pub struct JobCatalog {
    targets: BTreeMap<String, Vec<String>>,
}

impl JobCatalog {
    /// Only the built-in kinds.
    pub fn new() -> JobCatalog {
        JobCatalog::default()
    }

    /// Accepts `KIND:TARGET` for each of `targets`.
    pub fn with(mut self, kind: &str, targets: Vec<String>) -> JobCatalog {
        self.targets.insert(kind.to_owned(), targets);
        self
    }

    /// Every name that may be queued, for messages.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = ["gc", "gc-full", "check"].map(String::from).into();
        for (kind, targets) in &self.targets {
            names.extend(targets.iter().map(|t| format!("{kind}:{t}")));
        }
        names
    }

    /// The job a name stands for, or a message saying what is accepted.
    pub fn parse(&self, name: &str) -> Result<JobKind, String> {
        if let Some(kind) = JobKind::parse(name) {
            return Ok(kind);
        }
        let accepted = || self.names().join(", ");
        let Some((kind, target)) = name.split_once(':') else {
            return Err(format!(
                "unknown job kind {name:?}: expected one of {}",
                accepted()
            ));
        };
        match self.targets.get(kind) {
            Some(targets) if targets.iter().any(|t| t == target) => Ok(JobKind::Handled {
                kind: kind.to_owned(),
                target: target.to_owned(),
            }),
            Some(_) => Err(format!(
                "{kind:?} has no target {target:?}: expected one of {}",
                accepted()
            )),
            None => Err(format!(
                "unknown job kind {kind:?}: expected one of {}",
                accepted()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_accepts_builtins_and_registered_targets_only() {
        let catalog = JobCatalog::new().with("sync", vec!["quay".into(), "hub".into()]);
        assert_eq!(catalog.parse("gc"), Ok(JobKind::Gc { full: false }));
        assert_eq!(
            catalog.parse("sync:quay"),
            Ok(JobKind::Handled {
                kind: "sync".into(),
                target: "quay".into()
            })
        );
        let no_target = catalog.parse("sync:nope").unwrap_err();
        assert!(no_target.contains("sync:quay, sync:hub") || no_target.contains("sync:hub"));
        assert!(catalog
            .parse("sync")
            .unwrap_err()
            .contains("unknown job kind"));
        assert!(catalog
            .parse("export:x")
            .unwrap_err()
            .contains("\"export\""));
        let job = catalog.parse("sync:hub").unwrap().to_job();
        assert_eq!((job.kind.as_str(), job.key.as_str()), ("sync", "sync:hub"));
    }
}
