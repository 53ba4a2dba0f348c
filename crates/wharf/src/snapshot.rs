//! `wharf snapshot`: list, inspect, publish (roll back) and prune the snapshots
//! of OSTree, RPM and file repositories.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use wharf_core::RepoName;
use wharf_snapshot::Snapshots;

#[derive(Subcommand)]
pub(crate) enum SnapshotCommand {
    /// List a repository's snapshots, newest first.
    List {
        /// The repository.
        repo: String,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// List the files of one snapshot (path, size, blob).
    Show {
        /// The repository.
        repo: String,
        /// The snapshot's number (from `wharf snapshot list`).
        number: i64,
    },
    /// Publish snapshot NUMBER: a staged one, or an older one (a rollback).
    Publish {
        /// The repository.
        repo: String,
        /// The snapshot's number.
        number: i64,
    },
    /// Delete retired snapshots beyond `publish.keep_retired` whose grace period is over.
    Prune {
        /// The repository.
        repo: String,
    },
}

/// The snapshots of the configured stores, with the configured grace period.
pub(crate) fn snapshots(
    config: &wharf_config::Config,
    blobs: &std::sync::Arc<wharf_blob::BlobStore>,
    meta: &wharf_meta::Meta,
) -> Snapshots {
    Snapshots::new(meta.clone(), blobs.clone())
        .with_grace(std::time::Duration::from_secs(config.publish.grace_secs))
}

fn repo_name(s: &str) -> anyhow::Result<RepoName> {
    RepoName::parse(s).with_context(|| format!("repository name {s:?}"))
}

pub(crate) async fn snapshot(
    config: &wharf_config::Config,
    snapshots: &Snapshots,
    cmd: SnapshotCommand,
) -> anyhow::Result<ExitCode> {
    match cmd {
        SnapshotCommand::List { repo, json } => {
            let repo = repo_name(&repo)?;
            for s in snapshots.list(&repo).await? {
                let (files, bytes) = snapshots.meta().snapshot_totals(&s.id).await?;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "number": s.number,
                            "id": s.id.as_str(),
                            "state": s.state.as_str(),
                            "note": s.note,
                            "created_at": s.created_at,
                            "published_at": s.published_at,
                            "retired_at": s.retired_at,
                            "files": files,
                            "bytes": bytes,
                        })
                    );
                } else {
                    println!(
                        "{:>4}  {:<9}  {:>7} files  {:>12} bytes  {}",
                        s.number,
                        s.state.as_str(),
                        files,
                        bytes,
                        s.note
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SnapshotCommand::Show { repo, number } => {
            let repo = repo_name(&repo)?;
            let record = snapshots.by_number(&repo, number).await?;
            let mut pages = std::pin::pin!(snapshots.entry_pages(&record.id, None, 1000));
            while let Some(page) = futures_util::TryStreamExt::try_next(&mut pages).await? {
                for e in &page {
                    println!("{}  {:>12}  {}", e.blob, e.size, e.path);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SnapshotCommand::Publish { repo, number } => {
            let repo = repo_name(&repo)?;
            let record = snapshots.publish_number(&repo, number).await?;
            println!("published snapshot {} of {repo}", record.number);
            Ok(ExitCode::SUCCESS)
        }
        SnapshotCommand::Prune { repo } => {
            let repo = repo_name(&repo)?;
            let deleted = snapshots.prune(&repo, config.publish.keep_retired).await?;
            println!("deleted {} retired snapshots of {repo}", deleted.len());
            Ok(ExitCode::SUCCESS)
        }
    }
}
