//! The file formats' glue: the lookaside cache's and file repositories' values
//! built from the configuration for the HTTP layer.

use std::sync::Arc;

use wharf_blob::BlobStore;
use wharf_config::Config;
use wharf_meta::Meta;

/// What `/lookaside` (and the file-repository writes) serve from.
pub(crate) fn surface(config: &Config, meta: &Meta, blobs: &Arc<BlobStore>) -> wharf_files::Files {
    wharf_files::Files {
        lookaside: wharf_files::Lookaside::new(
            meta.clone(),
            blobs.clone(),
            config.lookaside.max_upload_bytes,
        ),
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

/// Entries read per page when listing or removing.
const PAGE: u32 = 1000;

pub(crate) async fn files(
    config: &Config,
    snapshots: &wharf_snapshot::Snapshots,
    cmd: FilesCommand,
) -> anyhow::Result<std::process::ExitCode> {
    use anyhow::Context;
    use wharf_core::{RepoName, RepositoryKind};
    use wharf_snapshot::Base;
    let repo_name = |s: &str| RepoName::parse(s).with_context(|| format!("repository name {s:?}"));
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
            let staged = snapshots
                .stage(
                    &repo,
                    RepositoryKind::Files,
                    Base::Published,
                    "wharf files put",
                )
                .await?;
            let mut totals = wharf_files::tree::PutTotals::default();
            for path in &local {
                match wharf_files::tree::put_local(&staged, path, to.as_ref()).await {
                    Ok(t) => {
                        totals.files += t.files;
                        totals.bytes += t.bytes;
                    }
                    Err(e) => {
                        staged.discard().await?;
                        return Err(e.into());
                    }
                }
            }
            let number = staged.record().number;
            finish(config, snapshots, &repo, staged, no_publish).await?;
            println!(
                "{} files, {} bytes into {repo} (snapshot {number}{})",
                totals.files,
                totals.bytes,
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
            let staged = snapshots
                .stage(
                    &repo,
                    RepositoryKind::Files,
                    Base::Published,
                    "wharf files rm",
                )
                .await?;
            let mut removed = 0;
            for path in &paths {
                // A file, or everything below a directory.
                let mut doomed = vec![path.clone()];
                let mut after = None;
                loop {
                    let page = staged.entries(Some(path), after.as_ref(), PAGE).await?;
                    doomed.extend(page.iter().map(|e| e.path.clone()));
                    match page.last() {
                        Some(last) if page.len() == PAGE as usize => {
                            after = Some(last.path.clone())
                        }
                        _ => break,
                    }
                }
                let n = staged.remove(&doomed).await?;
                if n == 0 {
                    staged.discard().await?;
                    anyhow::bail!("{repo} has no file or directory {path}");
                }
                removed += n;
            }
            finish(config, snapshots, &repo, staged, no_publish).await?;
            println!("removed {removed} files from {repo}");
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

/// Publishes (and prunes) or leaves staged.
async fn finish(
    config: &Config,
    snapshots: &wharf_snapshot::Snapshots,
    repo: &wharf_core::RepoName,
    staged: wharf_snapshot::Staged,
    no_publish: bool,
) -> anyhow::Result<()> {
    if no_publish {
        return Ok(());
    }
    staged.publish().await?;
    snapshots.prune(repo, config.publish.keep_retired).await?;
    Ok(())
}
