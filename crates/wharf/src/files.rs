//! The file formats' glue: the lookaside cache's and file repositories' values
//! built from the configuration for the HTTP layer, `wharf files …` (each
//! change audited like an API write), and `[[files.remotes]]`: the
//! `files-sync:<remote>` job handler and the foreground `wharf sync REMOTE`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use wharf_blob::BlobStore;
use wharf_config::{Config, FilesRemoteConfig};
use wharf_files::mirror::{run_mirror, MirrorObserver, MirrorPlan, MirrorSummary, SourceSettings};
use wharf_files::tree::FileRepos;
use wharf_jobs::{HandlerFuture, JobError, JobHandler, Progress};
use wharf_meta::Meta;

/// What `/lookaside` and the file-repository writes serve from.
pub(crate) fn surface(
    config: &Config,
    meta: &Meta,
    blobs: &Arc<BlobStore>,
    snapshots: &wharf_snapshot::Snapshots,
) -> wharf_files::Files {
    wharf_files::Files {
        lookaside: wharf_files::Lookaside::new(
            meta.clone(),
            blobs.clone(),
            config.lookaside.max_upload_bytes,
        ),
        repos: repos(config, snapshots),
        max_upload_bytes: config.files.max_upload_bytes,
    }
}

/// `wharf files …`: fill and inspect file repositories. Each `put` or `rm`
/// is one new snapshot (from the published one), published at the end unless
/// `--no-publish` (then `wharf snapshot publish` makes it live).
#[derive(clap::Subcommand)]
pub(crate) enum FilesCommand {
    /// Upload local files or directories (recursively) into a file repository.
    Put {
        /// The repository (created as a `files` repository if absent).
        #[arg(long)]
        repo: String,
        /// Directory inside the repository to put them under; default: its root.
        #[arg(long)]
        to: Option<String>,
        /// Leave the new snapshot staged instead of publishing it.
        #[arg(long)]
        no_publish: bool,
        /// Files and directories to upload.
        #[arg(required = true)]
        local: Vec<std::path::PathBuf>,
    },
    /// Remove files (or whole directories) from a file repository.
    Rm {
        /// The repository.
        #[arg(long)]
        repo: String,
        /// Leave the new snapshot staged instead of publishing it.
        #[arg(long)]
        no_publish: bool,
        /// Paths inside the repository.
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// List the published files (path, size, blob), optionally below a directory.
    Ls {
        /// The repository.
        #[arg(long)]
        repo: String,
        /// A directory inside the repository.
        under: Option<String>,
    },
}

/// Entries read per page when listing.
const PAGE: u32 = 1000;

/// The writer of file repositories; the remotes' repositories refuse changes.
pub(crate) fn repos(config: &Config, snapshots: &wharf_snapshot::Snapshots) -> FileRepos {
    let mirrored = config
        .files
        .remotes
        .iter()
        .filter_map(|r| wharf_core::RepoName::parse(&r.repository).ok())
        .collect();
    FileRepos::new(snapshots.clone(), mirrored, config.publish.keep_retired)
}

/// Writes one audit record for a CLI change: the operating-system user (the
/// CLI has no Wharf account) and `cli` as the address.
async fn audit(meta: &Meta, resource: &str, ok: bool) {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let record = wharf_meta::AuditRecord {
        at: wharf_meta::unix_now(),
        account: Some(format!("os:{user}")),
        remote: Some("cli".into()),
        action: "push".into(),
        resource: resource.to_owned(),
        outcome: if ok {
            wharf_meta::AuditOutcome::Ok
        } else {
            wharf_meta::AuditOutcome::Failed
        },
    };
    let id = match wharf_auth::secret::random_hex(12) {
        Ok(id) => id,
        Err(e) => {
            eprintln!("wharf: cannot write the audit log: {e}");
            return;
        }
    };
    if let Err(e) = meta.audit(&id, &record).await {
        eprintln!("wharf: cannot write the audit log: {e}");
    }
}

pub(crate) async fn files(
    config: &Config,
    snapshots: &wharf_snapshot::Snapshots,
    cmd: FilesCommand,
) -> anyhow::Result<std::process::ExitCode> {
    use anyhow::Context;
    use wharf_core::RepoName;
    let repo_name = |s: &str| RepoName::parse(s).with_context(|| format!("repository {s:?}"));
    match cmd {
        FilesCommand::Put {
            repo,
            to,
            no_publish,
            local,
        } => {
            let repo = repo_name(&repo)?;
            let to = to
                .as_deref()
                .map(|t| t.trim_end_matches('/'))
                .filter(|t| !t.is_empty())
                .map(wharf_files::tree::tree_path)
                .transpose()?;
            let resource = format!(
                "PUT files:{repo}/{} (wharf files put)",
                to.as_ref().map(|t| t.as_str()).unwrap_or("")
            );
            let result = async {
                let change = repos(config, snapshots)
                    .begin(&repo, "wharf files put")
                    .await?;
                let mut totals = wharf_files::tree::PutTotals::default();
                for path in &local {
                    match change.put_local(path, to.as_ref()).await {
                        Ok(t) => {
                            totals.files += t.files;
                            totals.bytes += t.bytes;
                        }
                        Err(e) => {
                            change.abort().await?;
                            return Err(e);
                        }
                    }
                }
                let done = change.finish(!no_publish).await?;
                Ok::<_, wharf_files::tree::TreeError>((totals, done))
            }
            .await;
            audit(snapshots.meta(), &resource, result.is_ok()).await;
            let (totals, done) = result?;
            println!(
                "{} files, {} bytes into {repo} (snapshot {}{})",
                totals.files,
                totals.bytes,
                done.number,
                if no_publish {
                    ", staged"
                } else {
                    ", published"
                }
            );
        }
        FilesCommand::Rm {
            repo,
            no_publish,
            paths,
        } => {
            let repo = repo_name(&repo)?;
            let paths = paths
                .iter()
                .map(|p| wharf_files::tree::tree_path(p.trim_end_matches('/')))
                .collect::<Result<Vec<_>, _>>()?;
            let resource = format!(
                "DELETE files:{repo}/{} (wharf files rm)",
                paths
                    .iter()
                    .map(|p| p.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            let result = async {
                let change = repos(config, snapshots)
                    .begin(&repo, "wharf files rm")
                    .await?;
                let mut removed = 0;
                for path in &paths {
                    match change.remove(path).await {
                        Ok(n) => removed += n,
                        Err(e) => {
                            change.abort().await?;
                            return Err(e);
                        }
                    }
                }
                change.finish(!no_publish).await?;
                Ok::<_, wharf_files::tree::TreeError>(removed)
            }
            .await;
            audit(snapshots.meta(), &resource, result.is_ok()).await;
            println!("removed {} files from {repo}", result?);
        }
        FilesCommand::Ls { repo, under } => {
            let repo = repo_name(&repo)?;
            let under = under
                .as_deref()
                .map(|u| wharf_files::tree::tree_path(u.trim_end_matches('/')))
                .transpose()?;
            let Some(published) = snapshots.published(&repo).await? else {
                anyhow::bail!("{repo} has no published snapshot");
            };
            let mut after = None;
            loop {
                let page = snapshots
                    .meta()
                    .snapshot_entries(&published.id, under.as_ref(), after.as_ref(), PAGE)
                    .await?;
                for e in &page {
                    println!("{}  {:>12}  {}", e.blob, e.size, e.path);
                }
                match page.last() {
                    Some(last) if page.len() == PAGE as usize => after = Some(last.path.clone()),
                    _ => break,
                }
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// The job kind of a files mirror run: `files-sync:<remote>`.
pub(crate) const JOB_KIND: &str = "files-sync";

/// The names of the configured files remotes, for the job catalog.
pub(crate) fn remote_names(config: &Config) -> Vec<String> {
    config
        .files
        .remotes
        .iter()
        .map(|r| r.name.clone())
        .collect()
}

/// The scheduled runs: one `files-sync:<remote>` per remote with a cadence.
pub(crate) fn schedules(config: &Config) -> Vec<wharf_jobs::Schedule> {
    config
        .files
        .remotes
        .iter()
        .filter_map(|r| {
            crate::serve::remote_schedule(
                JOB_KIND,
                &r.name,
                r.interval_secs,
                &r.schedule,
                r.jitter_secs,
            )
        })
        .collect()
}

/// Lowers one remote; reads the password file and CA bundle now, so a job
/// picks up a rotated password at its next run.
fn plan(remote: &FilesRemoteConfig) -> anyhow::Result<MirrorPlan> {
    use anyhow::Context;
    let (credentials, ca_bundle) = crate::sync::remote_secrets(
        "files.remotes",
        &remote.name,
        &remote.username,
        &remote.password_file,
        &remote.ca_bundle,
    )?;
    Ok(MirrorPlan {
        remote: remote.name.clone(),
        repository: wharf_core::RepoName::parse(&remote.repository)
            .with_context(|| format!("repository {:?}", remote.repository))?,
        source: SourceSettings {
            url: remote.url.clone(),
            credentials,
            ca_bundle,
        },
    })
}

/// One run of `remote`: plan, mirror, publish, prune.
async fn run_remote(
    config: &Config,
    snapshots: &wharf_snapshot::Snapshots,
    remote: &FilesRemoteConfig,
    observer: &dyn MirrorObserver,
) -> MirrorSummary {
    let plan = match plan(remote) {
        Ok(plan) => plan,
        Err(e) => {
            return MirrorSummary {
                remote: remote.name.clone(),
                repository: remote.repository.clone(),
                failure: Some(format!("{e:#}")),
                ..MirrorSummary::default()
            }
        }
    };
    let summary = run_mirror(snapshots, &plan, observer).await;
    if summary.published.is_some() {
        if let Err(e) = snapshots
            .prune(&plan.repository, config.publish.keep_retired)
            .await
        {
            tracing::warn!(repository = %plan.repository, "pruning retired snapshots: {e}");
        }
    }
    summary
}

/// The `files-sync` job kind.
pub(crate) struct FilesSyncJobHandler {
    pub(crate) config: Arc<Config>,
    pub(crate) snapshots: wharf_snapshot::Snapshots,
}

impl JobHandler for FilesSyncJobHandler {
    fn run<'a>(&'a self, target: &'a str, progress: &'a dyn Progress) -> HandlerFuture<'a> {
        Box::pin(async move {
            let Some(remote) = self.config.files.remotes.iter().find(|r| r.name == target) else {
                return Err(JobError::Failed(format!(
                    "no [[files.remotes]] is named {target:?} in this server's configuration"
                )));
            };
            let observer = JobObserver { progress };
            let summary = run_remote(&self.config, &self.snapshots, remote, &observer).await;
            if summary.cancelled {
                Err(JobError::Cancelled)
            } else if summary.failure.is_some() {
                Err(JobError::Failed(summary.line()))
            } else {
                Ok(summary.line())
            }
        })
    }
}

struct JobObserver<'a> {
    progress: &'a dyn Progress,
}

impl MirrorObserver for JobObserver<'_> {
    fn fetched(&self, bytes: u64) {
        self.progress.advance(0, bytes);
    }
    fn file_done(&self) {
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

/// `wharf sync REMOTE` for a files remote: prints its summary line; false when it failed.
pub(crate) async fn sync_foreground(
    config: &Config,
    snapshots: &wharf_snapshot::Snapshots,
    remote: &FilesRemoteConfig,
) -> bool {
    let interrupted = crate::interrupt::on_ctrl_c("; nothing will be published");
    let summary = run_remote(config, snapshots, remote, &Interruptible(interrupted)).await;
    println!("{}", summary.line());
    summary.failure.is_none() && !summary.cancelled
}
