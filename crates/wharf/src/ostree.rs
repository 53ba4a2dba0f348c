//! OSTree from the binary's side: lowering `[[ostree.remotes]]` into a
//! `wharf_ostree::MirrorPlan`, the `ostree-sync:<remote>` job handler, the
//! OSTree part of `wharf sync`, `wharf ostree import` and `wharf ostree commit`.
//!
//! `wharf ostree import --from PATH` is a mirror run whose upstream is a local
//! directory: the same walk, the same verification of every object, the same
//! atomic publish, so a repository built by hand enters Wharf exactly as a
//! mirrored one does.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

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
    /// Take refs from a local repository (archive or bare, bare-user, bare-user-only) into
    /// REPO, verified, and publish them.
    Import {
        /// The local repository (kind ostree) to fill; created if missing.
        #[arg(long = "repo", value_name = "REPO")]
        repo: String,
        /// The ostree repository's directory (mode archive, bare, bare-user or bare-user-only).
        #[arg(long = "from", value_name = "PATH")]
        from: std::path::PathBuf,
        /// A ref to take (repeatable; globs allowed); default: every ref.
        #[arg(long = "ref", value_name = "REF")]
        refs: Vec<String>,
        /// Parent commits taken per ref (-1: all).
        #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
        depth: i64,
    },
    /// Commit the directory TREE onto BRANCH of REPO (parent: the branch's current commit),
    /// write the summary for every ref, and publish, as `ostree commit` into an archive would.
    Commit {
        /// The repository (kind ostree); created if missing. Not one a remote mirrors.
        #[arg(long = "repo", value_name = "REPO")]
        repo: String,
        #[arg(long, short = 'b', value_name = "BRANCH")]
        branch: String,
        #[arg(long, value_name = "DIR")]
        tree: std::path::PathBuf,
        #[arg(long, short = 's', default_value = "")]
        subject: String,
        #[arg(long, default_value = "")]
        body: String,
        /// Commit metadata, a string (repeatable), e.g. `version=40.1`.
        #[arg(long = "add-metadata-string", value_name = "KEY=VALUE")]
        metadata: Vec<String>,
        /// Every file and directory owned by UID in the commit.
        #[arg(long = "owner-uid", value_name = "UID")]
        owner_uid: Option<u32>,
        #[arg(long = "owner-gid", value_name = "GID")]
        owner_gid: Option<u32>,
        /// PATH (inside the tree) gets MODE (octal permission bits) in the commit (repeatable).
        #[arg(long = "mode-override", value_name = "PATH=MODE")]
        mode_overrides: Vec<String>,
        /// After publishing, generate a static delta from the branch's previous commit to the
        /// new one (and what `[[ostree.deltas]]` asks for REPO), in the foreground.
        #[arg(long = "generate-deltas")]
        generate_deltas: bool,
        /// Also a static delta from nothing to the new commit (for first pulls).
        #[arg(long = "delta-from-scratch")]
        delta_from_scratch: bool,
    },
    /// Generate the static deltas `[[ostree.deltas]]` asks for REPO now, in the foreground,
    /// and publish them (what the `ostree-deltas:REPO` job does).
    Deltas {
        /// The repository (kind ostree).
        #[arg(long = "repo", value_name = "REPO")]
        repo: String,
    },
    /// Show (`--dry-run`) or publish what REPO's `[[ostree.retention]]` rules cut.
    Prune(crate::ostree_prune::PruneArgs),
    /// Push a ref of a local archive repository to a Wharf server: only the
    /// objects it lacks are sent, then the server moves BRANCH and publishes.
    Push(crate::ostree_push::PushArgs),
}

fn key_value(what: &str, s: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => bail!("{what} {s:?}: expected KEY=VALUE"),
    }
}

/// The push side `/api/v1/ostree` calls: Wharf's keys sign pushed commits and
/// the summary, `[[ostree.retention]]` applies, and repositories a remote
/// fills take no push.
pub(crate) fn push_surface(
    config: &Config,
    snapshots: &Snapshots,
) -> anyhow::Result<wharf_ostree::push::Push> {
    let mirrored = config
        .ostree
        .remotes
        .iter()
        .map(|r| {
            RepoName::parse(&r.repository)
                .with_context(|| format!("ostree.remotes {:?}: repository", r.name))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let rules = config.clone();
    Ok(wharf_ostree::push::Push::new(
        snapshots.clone(),
        wharf_ostree::push::PushSettings {
            signer: Some(crate::signing::keys(config)?),
            retention: Box::new(move |repo| {
                crate::ostree_prune::retention_for(&rules, repo.as_str())
            }),
            queue_after_move: {
                let config = config.clone();
                Box::new(move |repo| deltas_job(&config, repo.as_str()))
            },
            max_object_bytes: config.ostree.max_object_bytes,
            mirrored,
            keep_retired: config.publish.keep_retired,
        },
    ))
}

/// The job that generates a repository's static deltas (`ostree-deltas:REPO`).
pub(crate) const DELTAS_JOB_KIND: &str = "ostree-deltas";

/// The static deltas generated for `repository`: its `[[ostree.deltas]]`
/// table, else `generate_deltas` on the remote filling it, else none.
pub(crate) fn deltas_for(config: &Config, repository: &str) -> wharf_ostree::delta::DeltaSettings {
    if let Some(d) = config
        .ostree
        .deltas
        .iter()
        .find(|d| d.repository == repository)
    {
        return wharf_ostree::delta::DeltaSettings {
            depth: d.depth,
            from_scratch: d.from_scratch,
            min_saving_percent: d.min_saving_percent,
        };
    }
    match config
        .ostree
        .remotes
        .iter()
        .find(|r| r.repository == repository && r.generate_deltas)
    {
        Some(r) => wharf_ostree::delta::DeltaSettings {
            depth: 1,
            from_scratch: r.delta_from_scratch,
            min_saving_percent: r.delta_min_saving_percent,
        },
        None => wharf_ostree::delta::DeltaSettings::default(),
    }
}

/// The repositories that get static deltas, for the job catalog.
pub(crate) fn delta_repositories(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = config
        .ostree
        .deltas
        .iter()
        .map(|d| d.repository.clone())
        .chain(
            config
                .ostree
                .remotes
                .iter()
                .filter(|r| r.generate_deltas)
                .map(|r| r.repository.clone()),
        )
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The `ostree-deltas:REPO` job to queue after a publish of `repository`, if
/// it gets deltas.
pub(crate) fn deltas_job(config: &Config, repository: &str) -> Option<wharf_meta::NewJob> {
    deltas_for(config, repository).enabled().then(|| {
        wharf_jobs::JobKind::Handled {
            kind: DELTAS_JOB_KIND.into(),
            target: repository.to_owned(),
        }
        .to_job()
    })
}

/// Queues `ostree-deltas:REPO` after a publish; a failure costs a delta, not the publish.
async fn queue_deltas(config: &Config, snapshots: &Snapshots, repository: &RepoName) {
    if let Some(job) = deltas_job(config, repository.as_str()) {
        if let Err(e) = snapshots.meta().enqueue_job(&job).await {
            tracing::warn!(repository = %repository, "queueing {}: {e}", job.key);
        }
    }
}

/// One generation of `repository`'s deltas with `settings`, in this process.
async fn generate_deltas(
    config: &Config,
    snapshots: &Snapshots,
    repository: &RepoName,
    settings: &wharf_ostree::delta::DeltaSettings,
) -> anyhow::Result<wharf_ostree::delta::DeltaRun> {
    let signer = crate::signing::keys(config)?;
    let run = wharf_ostree::delta::refresh_published(
        snapshots,
        repository,
        settings,
        &signer,
        wharf_meta::unix_now(),
    )
    .await
    .with_context(|| format!("static deltas of {repository}"))?;
    if matches!(run.outcome, wharf_ostree::delta::DeltaOutcome::Published(_)) {
        if let Err(e) = snapshots
            .prune(repository, config.publish.keep_retired)
            .await
        {
            tracing::warn!(repository = %repository, "pruning retired snapshots: {e}");
        }
    }
    Ok(run)
}

/// The line printed (and logged) for each delta generated.
fn generated_line(g: &wharf_ostree::delta::Generated) -> String {
    format!(
        "static delta {} generated: {} in {} part(s), {} fallback(s), instead of {} of objects",
        g.name,
        wharf_ostree::mirror::human_bytes(g.delta_bytes),
        g.parts,
        g.fallbacks,
        wharf_ostree::mirror::human_bytes(g.object_bytes)
    )
}

/// Generates `repository`'s deltas in the foreground, printing a line per
/// delta and the run's line; `false` when it failed.
async fn deltas_foreground(
    config: &Config,
    snapshots: &Snapshots,
    repository: &RepoName,
    settings: &wharf_ostree::delta::DeltaSettings,
) -> bool {
    match generate_deltas(config, snapshots, repository, settings).await {
        Ok(run) => {
            for g in &run.generated {
                println!("{}", generated_line(g));
            }
            println!("{}", run.line(repository));
            true
        }
        Err(e) => {
            println!("{repository}: static deltas failed: {e:#}");
            false
        }
    }
}

/// The `ostree-deltas` job kind: [`wharf_ostree::delta::refresh_published`]
/// with the repository's settings, again while its refs moved during a run
/// (a publish meanwhile found this job pending and queued nothing).
pub(crate) struct OstreeDeltasJobHandler {
    pub(crate) config: Arc<Config>,
    pub(crate) snapshots: Snapshots,
}

/// Runs of one `ostree-deltas` job at most, when publishes keep coming.
const DELTA_JOB_ROUNDS: u32 = 4;

impl JobHandler for OstreeDeltasJobHandler {
    fn run<'a>(&'a self, target: &'a str, progress: &'a dyn Progress) -> HandlerFuture<'a> {
        Box::pin(async move {
            let repository = RepoName::parse(target)
                .map_err(|e| JobError::Failed(format!("{target:?}: {e}")))?;
            let settings = deltas_for(&self.config, target);
            if !settings.enabled() {
                return Err(JobError::Failed(format!(
                    "no [[ostree.deltas]] names {target:?} in this server's configuration"
                )));
            }
            let mut lines = Vec::new();
            let mut generated = 0;
            for _ in 0..DELTA_JOB_ROUNDS {
                let started_from = self.snapshots.published(&repository).await.ok().flatten();
                let run = generate_deltas(&self.config, &self.snapshots, &repository, &settings)
                    .await
                    .map_err(|e| JobError::Failed(format!("{e:#}")))?;
                for g in &run.generated {
                    tracing::info!(repository = %repository, "{}", generated_line(g));
                }
                generated += run.generated.len();
                progress.advance(run.generated.len() as u64, 0);
                lines.push(run.line(&repository));
                // Done unless a writer published between the start of the run
                // and now other than this run itself.
                let now_published = self.snapshots.published(&repository).await.ok().flatten();
                let ours = match run.outcome {
                    wharf_ostree::delta::DeltaOutcome::Published(n) => {
                        now_published.as_ref().is_some_and(|p| p.number == n)
                    }
                    _ => {
                        now_published.as_ref().map(|p| &p.id)
                            == started_from.as_ref().map(|p| &p.id)
                    }
                };
                if ours || progress.cancelled() {
                    break;
                }
            }
            let last = lines.pop().unwrap_or_default();
            Ok(if generated > 0 && !lines.is_empty() {
                format!(
                    "{last} ({generated} generated over {} runs)",
                    lines.len() + 1
                )
            } else {
                last
            })
        })
    }
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

/// One `ostree-sync:<remote>` schedule per remote with a cadence, and the
/// hourly expiry of abandoned push sessions.
pub(crate) fn schedules(config: &Config) -> Vec<wharf_jobs::Schedule> {
    config
        .ostree
        .remotes
        .iter()
        .filter_map(|r| {
            crate::serve::remote_schedule(
                "ostree-sync",
                &r.name,
                r.interval_secs,
                &r.schedule,
                r.jitter_secs,
            )
        })
        .chain(
            (config.ostree.push_session_ttl_secs > 0).then(|| wharf_jobs::Schedule {
                name: format!("{SESSIONS_JOB_KIND}:{SESSIONS_JOB_TARGET}"),
                job: wharf_jobs::JobKind::Handled {
                    kind: SESSIONS_JOB_KIND.into(),
                    target: SESSIONS_JOB_TARGET.into(),
                },
                cadence: wharf_jobs::Cadence::Every(std::time::Duration::from_secs(3600)),
                jitter: std::time::Duration::from_secs(300),
            }),
        )
        .collect()
}

/// The job that drops what abandoned pushes uploaded (`ostree-sessions:expire`).
pub(crate) const SESSIONS_JOB_KIND: &str = "ostree-sessions";
/// Its one target.
pub(crate) const SESSIONS_JOB_TARGET: &str = "expire";

/// The `ostree-sessions` job kind: [`wharf_ostree::push::Push::expire_sessions`]
/// with `ostree.push_session_ttl_secs`.
pub(crate) struct PushSessionsJobHandler {
    pub(crate) push: wharf_ostree::push::Push,
    pub(crate) ttl_secs: u64,
}

impl JobHandler for PushSessionsJobHandler {
    fn run<'a>(&'a self, target: &'a str, _progress: &'a dyn Progress) -> HandlerFuture<'a> {
        Box::pin(async move {
            if target != SESSIONS_JOB_TARGET {
                return Err(JobError::Failed(format!(
                    "{SESSIONS_JOB_KIND} has no target {target:?}: expected {SESSIONS_JOB_TARGET:?}"
                )));
            }
            if self.ttl_secs == 0 {
                return Ok("ostree.push_session_ttl_secs = 0: push sessions are kept".into());
            }
            let cutoff = wharf_meta::unix_now()
                .saturating_sub(i64::try_from(self.ttl_secs).unwrap_or(i64::MAX));
            let expired = self
                .push
                .expire_sessions(cutoff)
                .await
                .map_err(|e| JobError::Failed(e.to_string()))?;
            Ok(format!(
                "dropped {} object(s) ({} bytes) that abandoned pushes uploaded over {} s ago; \
                 discarded {} empty session(s)",
                expired.objects, expired.bytes, self.ttl_secs, expired.sessions
            ))
        })
    }
}

/// Lowers one remote; reads the password file and CA bundle now, so a job
/// picks up a rotated password at its next run.
pub(crate) fn plan(config: &Config, remote: &OstreeRemoteConfig) -> anyhow::Result<MirrorPlan> {
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
        trust: crate::signing::trust(
            "ostree.remotes",
            &remote.name,
            &remote.gpg_keys,
            &remote.ed25519_keys,
        )?,
        signer: Some(crate::signing::keys(config)?),
        retention: crate::ostree_prune::retention_for(config, &remote.repository),
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
            let plan = plan(&self.config, remote)
                .map_err(|e| JobError::Failed(format!("{target}: {e:#}")))?;
            let observer = JobObserver { progress };
            let summary = run_mirror(&self.snapshots, &plan, &observer).await;
            prune(&self.config, &self.snapshots, &plan, &summary).await;
            if summary.published.is_some() {
                queue_deltas(&self.config, &self.snapshots, &plan.repository).await;
            }
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
    fn ref_done(&self) {
        self.progress.advance(1, 0);
    }
    fn line(&self, line: &str) {
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
    crate::interrupt::on_ctrl_c("; the staged snapshot is resumed by the next run")
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
    let summary = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        let bars = crate::ostree_progress::Bars::new(&plan.remote, interrupted);
        let summary = run_mirror(snapshots, plan, &bars).await;
        bars.finish();
        summary
    } else {
        let observer = Plain {
            interrupted,
            objects: AtomicU64::new(0),
        };
        run_mirror(snapshots, plan, &observer).await
    };
    prune(config, snapshots, plan, &summary).await;
    println!("{}", summary.line());
    let mut ok = summary.failure.is_none() && !summary.cancelled;
    let deltas = deltas_for(config, plan.repository.as_str());
    if summary.published.is_some() && deltas.enabled() {
        ok &= deltas_foreground(config, snapshots, &plan.repository, &deltas).await;
    }
    ok
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
        match plan(config, remote) {
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
        OstreeCommand::Prune(args) => crate::ostree_prune::prune(config, snapshots, args).await,
        OstreeCommand::Push(args) => crate::ostree_push::push(args).await,
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
                repository: repository.clone(),
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
                trust: None,
                signer: Some(crate::signing::keys(config)?),
                retention: crate::ostree_prune::retention_for(config, repository.as_str()),
            };
            Ok(
                if run_plain(config, snapshots, &plan, interrupt_flag()).await {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                },
            )
        }
        OstreeCommand::Commit {
            repo,
            branch,
            tree,
            subject,
            body,
            metadata,
            owner_uid,
            owner_gid,
            mode_overrides,
            generate_deltas,
            delta_from_scratch,
        } => {
            let repository = RepoName::parse(&repo).with_context(|| format!("--repo {repo:?}"))?;
            if let Some(remote) = config
                .ostree
                .remotes
                .iter()
                .find(|r| r.repository == repository.as_str())
            {
                bail!(
                    "--repo {repository} is filled by [[ostree.remotes]] {:?}; commit into a repository of its own",
                    remote.name
                );
            }
            let metadata = metadata
                .iter()
                .map(|m| key_value("--add-metadata-string", m))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut overrides = std::collections::BTreeMap::new();
            for m in &mode_overrides {
                let (path, mode) = key_value("--mode-override", m)?;
                let mode = u32::from_str_radix(&mode, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .with_context(|| {
                        format!("--mode-override {m:?}: MODE is octal, at most 7777")
                    })?;
                overrides.insert(path.trim_matches('/').to_owned(), mode);
            }
            let plan = wharf_ostree::commit::CommitPlan {
                repository: repository.clone(),
                branch,
                tree,
                subject,
                body,
                metadata,
                owner_uid,
                owner_gid,
                mode_overrides: overrides,
                timestamp: None,
                signer: Some(crate::signing::keys(config)?),
                retention: crate::ostree_prune::retention_for(config, repository.as_str()),
            };
            let mut deltas = deltas_for(config, repository.as_str());
            if generate_deltas {
                deltas.depth = deltas.depth.max(1);
            }
            deltas.from_scratch |= delta_from_scratch;
            let outcome = wharf_ostree::commit::commit_tree(snapshots, &plan)
                .await
                .with_context(|| format!("committing onto {}", plan.branch))?;
            println!("{}", outcome.checksum);
            println!(
                "{}: {} objects written; parent {}; snapshot {} published",
                plan.branch,
                outcome.new_objects,
                outcome
                    .parent
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "none".into()),
                outcome.snapshot
            );
            if deltas.enabled() && !deltas_foreground(config, snapshots, &repository, &deltas).await
            {
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        OstreeCommand::Deltas { repo } => {
            let repository = RepoName::parse(&repo).with_context(|| format!("--repo {repo:?}"))?;
            let deltas = deltas_for(config, repository.as_str());
            if !deltas.enabled() {
                bail!("no [[ostree.deltas]] names {repository} (nor a remote with generate_deltas = true)");
            }
            Ok(
                if deltas_foreground(config, snapshots, &repository, &deltas).await {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                },
            )
        }
    }
}
