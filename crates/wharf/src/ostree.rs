//! OSTree from the binary's side: lowering `[[ostree.remotes]]` into a
//! `wharf_ostree::MirrorPlan`, the `ostree-sync:<remote>` job handler, the
//! OSTree part of `wharf sync`, and `wharf ostree import`.
//!
//! `wharf ostree import --from PATH` is a mirror run whose upstream is a local
//! directory: the same walk, the same verification of every object, the same
//! atomic publish, so a repository built by hand enters Wharf exactly as a
//! mirrored one does.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use wharf_config::{Config, OstreeRemoteConfig};
use wharf_core::RepoName;
use wharf_jobs::{HandlerFuture, JobError, JobHandler, Progress};
use wharf_ostree::{
    run_mirror, MirrorObserver, MirrorPlan, MirrorSummary, RefSelection, UpstreamSettings,
};
use wharf_snapshot::Snapshots;

/// `wharf ostree …`
#[derive(Subcommand)]
pub(crate) enum OstreeCommand {
    /// Take refs from a local archive repository into REPO, verified, and publish them.
    Import {
        /// The local repository (kind ostree) to fill; created if missing.
        #[arg(long = "repo", value_name = "REPO")]
        repo: String,
        /// The ostree repository's directory (mode=archive).
        #[arg(long = "from", value_name = "PATH")]
        from: std::path::PathBuf,
        /// A ref to take (repeatable; globs allowed); default: every ref.
        #[arg(long = "ref", value_name = "REF")]
        refs: Vec<String>,
        /// Parent commits taken per ref (-1: all).
        #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
        depth: i64,
    },
}

/// The remotes' names, for the job catalog.
pub(crate) fn remote_names(config: &Config) -> Vec<String> {
    config
        .ostree
        .remotes
        .iter()
        .map(|r| r.name.clone())
        .collect()
}

/// One `ostree-sync:<remote>` schedule per remote with a cadence.
pub(crate) fn schedules(config: &Config) -> Vec<wharf_jobs::Schedule> {
    config
        .ostree
        .remotes
        .iter()
        .filter_map(|r| {
            let cadence = crate::serve::cadence(r.interval_secs, &r.schedule)?;
            Some(wharf_jobs::Schedule {
                name: format!("ostree-sync:{}", r.name),
                job: wharf_jobs::JobKind::Handled {
                    kind: "ostree-sync".into(),
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
pub(crate) fn plan(remote: &OstreeRemoteConfig) -> anyhow::Result<MirrorPlan> {
    let (credentials, ca_bundle) = crate::sync::remote_secrets(
        "ostree.remotes",
        &remote.name,
        &remote.username,
        &remote.password_file,
        &remote.ca_bundle,
    )?;
    Ok(MirrorPlan {
        remote: remote.name.clone(),
        repository: RepoName::parse(&remote.repository)
            .with_context(|| format!("repository {:?}", remote.repository))?,
        upstream: UpstreamSettings {
            url: remote.url.clone(),
            credentials,
            ca_bundle,
            concurrency: remote.concurrency as usize,
        },
        refs: if remote.refs.is_empty() {
            RefSelection::All
        } else {
            RefSelection::Patterns(remote.refs.clone())
        },
        depth: remote.depth,
        concurrency: remote.concurrency as usize,
    })
}

/// The `ostree-sync` job kind.
pub(crate) struct OstreeSyncJobHandler {
    pub(crate) config: Arc<Config>,
    pub(crate) snapshots: Snapshots,
}

impl JobHandler for OstreeSyncJobHandler {
    fn run<'a>(&'a self, target: &'a str, progress: &'a dyn Progress) -> HandlerFuture<'a> {
        Box::pin(async move {
            let Some(remote) = self.config.ostree.remotes.iter().find(|r| r.name == target) else {
                return Err(JobError::Failed(format!(
                    "no [[ostree.remotes]] is named {target:?} in this server's configuration"
                )));
            };
            let plan = plan(remote).map_err(|e| JobError::Failed(format!("{target}: {e:#}")))?;
            let observer = JobObserver { progress };
            let summary = run_mirror(&self.snapshots, &plan, &observer).await;
            prune(&self.config, &self.snapshots, &plan, &summary).await;
            let line = summary.line();
            if summary.cancelled {
                Err(JobError::Cancelled)
            } else if summary.failure.is_some() {
                Err(JobError::Failed(line))
            } else {
                Ok(line)
            }
        })
    }
}

struct JobObserver<'a> {
    progress: &'a dyn Progress,
}

impl MirrorObserver for JobObserver<'_> {
    fn refs_selected(&self, n: u64) {
        self.progress.set_totals(Some(n), None);
    }
    fn fetched(&self, _metadata: u64, _content: u64, bytes: u64) {
        self.progress.advance(0, bytes);
    }
    fn line(&self, line: &str) {
        self.progress.advance(1, 0);
        tracing::debug!("{line}");
    }
    fn cancelled(&self) -> bool {
        self.progress.cancelled()
    }
}

/// Plain lines for `wharf sync` and `wharf ostree import`, with a running
/// count every few hundred objects so a long first fill shows it is alive.
struct Plain {
    interrupted: Arc<AtomicBool>,
    objects: AtomicU64,
}

impl MirrorObserver for Plain {
    fn fetched(&self, metadata: u64, content: u64, _bytes: u64) {
        let n = self
            .objects
            .fetch_add(metadata + content, Ordering::Relaxed)
            + metadata
            + content;
        if n.is_multiple_of(500) {
            println!("  {n} objects stored");
        }
    }
    fn line(&self, line: &str) {
        println!("{line}");
    }
    fn cancelled(&self) -> bool {
        self.interrupted.load(Ordering::Relaxed)
    }
}

fn interrupt_flag() -> Arc<AtomicBool> {
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("wharf: stopping; the staged snapshot is resumed by the next run (Ctrl-C again to kill)");
            flag.store(true, Ordering::Relaxed);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    interrupted
}

/// After a publish, retired snapshots beyond `publish.keep_retired` go (never within their grace period).
async fn prune(config: &Config, snapshots: &Snapshots, plan: &MirrorPlan, summary: &MirrorSummary) {
    if summary.published.is_some() {
        if let Err(e) = snapshots
            .prune(&plan.repository, config.publish.keep_retired)
            .await
        {
            tracing::warn!(repository = %plan.repository, "pruning retired snapshots: {e}");
        }
    }
}

async fn run_plain(
    config: &Config,
    snapshots: &Snapshots,
    plan: &MirrorPlan,
    interrupted: Arc<AtomicBool>,
) -> bool {
    let observer = Plain {
        interrupted,
        objects: AtomicU64::new(0),
    };
    let summary = run_mirror(snapshots, plan, &observer).await;
    prune(config, snapshots, plan, &summary).await;
    println!("{}", summary.line());
    summary.failure.is_none() && !summary.cancelled
}

/// Runs `remotes` (by name; all when empty) in turn; `false` when any failed.
pub(crate) async fn sync(
    config: &Config,
    snapshots: &Snapshots,
    only: Option<&str>,
) -> anyhow::Result<bool> {
    let interrupted = interrupt_flag();
    let mut ok = true;
    for remote in &config.ostree.remotes {
        if only.is_some_and(|n| n != remote.name) {
            continue;
        }
        match plan(remote) {
            Ok(plan) => ok &= run_plain(config, snapshots, &plan, interrupted.clone()).await,
            Err(e) => {
                println!("{}: failed, nothing published: {e:#}", remote.name);
                ok = false;
            }
        }
        if interrupted.load(Ordering::Relaxed) {
            break;
        }
    }
    Ok(ok)
}

/// `wharf ostree …`
pub(crate) async fn ostree(
    config: &Config,
    snapshots: &Snapshots,
    cmd: OstreeCommand,
) -> anyhow::Result<ExitCode> {
    match cmd {
        OstreeCommand::Import {
            repo,
            from,
            refs,
            depth,
        } => {
            let repository = RepoName::parse(&repo).with_context(|| format!("--repo {repo:?}"))?;
            if !from.join("config").is_file() {
                bail!(
                    "--from {}: not an ostree repository (no config file)",
                    from.display()
                );
            }
            if depth < -1 {
                bail!("--depth must be -1 (all), 0, or more");
            }
            let plan = MirrorPlan {
                remote: "import".into(),
                repository,
                upstream: UpstreamSettings {
                    url: from.display().to_string(),
                    concurrency: 16,
                    ..UpstreamSettings::default()
                },
                refs: if refs.is_empty() {
                    RefSelection::All
                } else {
                    RefSelection::Patterns(refs)
                },
                depth,
                concurrency: 16,
            };
            Ok(
                if run_plain(config, snapshots, &plan, interrupt_flag()).await {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                },
            )
        }
    }
}
