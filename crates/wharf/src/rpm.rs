//! RPM from the binary's side: lowering `[[rpm.remotes]]` into a
//! `wharf_rpm::mirror::MirrorPlan`, the `rpm-sync:<remote>` job handler the
//! server's worker runs (scheduled per remote, or queued with
//! `wharf jobs run rpm-sync:REMOTE`), and the foreground run `wharf sync
//! REMOTE` makes for an rpm remote.
//!
//! Each successful run publishes one snapshot and then prunes the retired
//! ones beyond `publish.keep_retired` (never one inside the grace period).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use wharf_config::{Config, RpmPolicy, RpmRemoteConfig};
use wharf_core::RepoName;
use wharf_jobs::{HandlerFuture, JobError, JobHandler, Progress};
use wharf_rpm::mirror::{MirrorObserver, MirrorPlan, MirrorSummary, Policy};
use wharf_rpm::{RpmError, Source, SourceSettings};
use wharf_snapshot::Snapshots;

/// The job kind of an rpm mirror run: `rpm-sync:<remote>`.
pub(crate) const JOB_KIND: &str = "rpm-sync";

/// The names of the configured rpm remotes, for the job catalog.
pub(crate) fn remote_names(config: &Config) -> Vec<String> {
    config.rpm.remotes.iter().map(|r| r.name.clone()).collect()
}

/// The scheduled runs: one `rpm-sync:<remote>` per remote with a cadence.
pub(crate) fn schedules(config: &Config) -> Vec<wharf_jobs::Schedule> {
    config
        .rpm
        .remotes
        .iter()
        .filter_map(|r| {
            let cadence = crate::serve::cadence(r.interval_secs, &r.schedule)?;
            Some(wharf_jobs::Schedule {
                name: format!("{JOB_KIND}:{}", r.name),
                job: wharf_jobs::JobKind::Handled {
                    kind: JOB_KIND.into(),
                    target: r.name.clone(),
                },
                cadence,
                jitter: Duration::from_secs(r.jitter_secs),
            })
        })
        .collect()
}

/// Lowers one remote; reads the password file and CA bundle now, so a job
/// picks up a rotated password at its next run.
pub(crate) fn plan(remote: &RpmRemoteConfig) -> anyhow::Result<MirrorPlan> {
    let (credentials, ca_bundle) = crate::sync::remote_secrets(
        "rpm.remotes",
        &remote.name,
        &remote.username,
        &remote.password_file,
        &remote.ca_bundle,
    )?;
    let source = Source::new(
        &remote.url,
        SourceSettings {
            credentials,
            ca_bundle,
        },
    )?;
    Ok(MirrorPlan {
        remote: remote.name.clone(),
        source,
        repository: RepoName::parse(&remote.repository)
            .with_context(|| format!("repository {:?}", remote.repository))?,
        policy: match remote.policy {
            RpmPolicy::Exact => Policy::Exact,
            RpmPolicy::Additive => Policy::Additive,
        },
        concurrency: remote.concurrency as usize,
    })
}

/// One run of `remote`: plan, mirror, publish, prune.
async fn run_remote(
    config: &Config,
    snapshots: &Snapshots,
    remote: &RpmRemoteConfig,
    observer: &dyn MirrorObserver,
) -> anyhow::Result<MirrorSummary> {
    let plan = plan(remote)?;
    let summary = wharf_rpm::mirror::run(snapshots, &plan, observer).await?;
    if summary.snapshot.is_some() {
        if let Err(e) = snapshots
            .prune(&plan.repository, config.publish.keep_retired)
            .await
        {
            tracing::warn!(repository = %plan.repository, "pruning retired snapshots: {e}");
        }
    }
    Ok(summary)
}

/// The `rpm-sync` job kind.
pub(crate) struct RpmSyncJobHandler {
    pub(crate) config: Arc<Config>,
    pub(crate) snapshots: Snapshots,
}

impl JobHandler for RpmSyncJobHandler {
    fn run<'a>(&'a self, target: &'a str, progress: &'a dyn Progress) -> HandlerFuture<'a> {
        Box::pin(async move {
            let Some(remote) = self.config.rpm.remotes.iter().find(|r| r.name == target) else {
                return Err(JobError::Failed(format!(
                    "no [[rpm.remotes]] is named {target:?} in this server's configuration"
                )));
            };
            let observer = JobObserver { progress };
            match run_remote(&self.config, &self.snapshots, remote, &observer).await {
                Ok(summary) => Ok(summary.line()),
                Err(e) if is_cancelled(&e) => Err(JobError::Cancelled),
                Err(e) => Err(JobError::Failed(format!("rpm-sync {target}: {e:#}"))),
            }
        })
    }
}

fn is_cancelled(e: &anyhow::Error) -> bool {
    matches!(e.downcast_ref::<RpmError>(), Some(RpmError::Cancelled))
}

struct JobObserver<'a> {
    progress: &'a dyn Progress,
}

impl MirrorObserver for JobObserver<'_> {
    fn fetched(&self, bytes: u64) {
        self.progress.advance(0, bytes);
    }
    fn package_done(&self) {
        self.progress.advance(1, 0);
    }
    fn cancelled(&self) -> bool {
        self.progress.cancelled()
    }
}

/// Ctrl-C on a foreground run: stop before publishing.
struct Interruptible(Arc<AtomicBool>);

impl MirrorObserver for Interruptible {
    fn cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// `wharf sync REMOTE` for an rpm remote: its summary line; false when it failed.
pub(crate) async fn sync_foreground(
    config: &Config,
    snapshots: &Snapshots,
    remote: &RpmRemoteConfig,
) -> bool {
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let interrupted = interrupted.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("wharf: stopping; nothing will be published (Ctrl-C again to kill)");
                interrupted.store(true, Ordering::Relaxed);
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
    }
    match run_remote(config, snapshots, remote, &Interruptible(interrupted)).await {
        Ok(summary) => {
            println!("{}", summary.line());
            true
        }
        Err(e) => {
            println!(
                "rpm-sync {} -> {}: failed, nothing published",
                remote.name, remote.repository
            );
            eprintln!("wharf: rpm-sync {}: {e:#}", remote.name);
            false
        }
    }
}
