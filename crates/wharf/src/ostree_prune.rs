//! OSTree retention from the binary's side: lowering `[[ostree.retention]]`
//! into the rules of one repository, and `wharf ostree prune`, which shows
//! (`--dry-run`) or publishes what those rules cut from the published
//! snapshot. Mirror runs and `wharf ostree commit` apply the same rules when
//! they stage a snapshot; this command is for a change of the rules, or for
//! commits that aged out while nothing new arrived.

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use wharf_config::Config;
use wharf_core::{RepoName, RepoPattern};
use wharf_ostree::mirror::human_bytes;
use wharf_ostree::retention::{self, PrunePlan, Pruned, RefRule, Retention};
use wharf_snapshot::Snapshots;

/// `wharf ostree prune`
#[derive(Args)]
pub(crate) struct PruneArgs {
    /// The repository (kind ostree) to prune by its `[[ostree.retention]]` rules.
    #[arg(long = "repo", value_name = "REPO")]
    repo: String,
    /// List the commits and objects that would go; change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// The rules whose `repositories` pattern matches `repository`, in order.
pub(crate) fn retention_for(config: &Config, repository: &str) -> Retention {
    Retention {
        rules: config
            .ostree
            .retention
            .iter()
            // `validate` refused bad patterns before anything runs.
            .filter(|r| RepoPattern::parse(&r.repositories).is_ok_and(|p| p.matches(repository)))
            .map(|r| RefRule {
                refs: r.refs.clone(),
                keep_last: r.keep_last,
                keep_secs: r.keep_days.saturating_mul(86_400),
            })
            .collect(),
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn print_plan(plan: &PrunePlan) {
    for (name, kept) in &plan.kept {
        println!("{name}: {} commits kept", kept.len());
    }
    for c in &plan.cut {
        println!(
            "cut {} {} {:?}",
            c.checksum,
            wharf_core::time::rfc3339(c.timestamp as i64),
            c.subject
        );
    }
}

/// `wharf ostree prune --repo R [--dry-run]`
pub(crate) async fn prune(
    config: &Config,
    snapshots: &Snapshots,
    args: PruneArgs,
) -> anyhow::Result<ExitCode> {
    let repository =
        RepoName::parse(&args.repo).with_context(|| format!("--repo {:?}", args.repo))?;
    let rules = retention_for(config, repository.as_str());
    if rules.is_empty() {
        bail!("no [[ostree.retention]] rule names {repository}: nothing would be pruned");
    }
    let Some(published) = snapshots.published(&repository).await? else {
        bail!("{repository} has no published snapshot");
    };
    let now = unix_now();
    if args.dry_run {
        let plan = retention::plan(snapshots, &published.id, &rules, now).await?;
        print_plan(&plan);
        println!(
            "{repository}: {} commits cut, {} objects ({}) would leave snapshot {}; dry run, nothing changed",
            plan.cut.len(),
            plan.removed.len(),
            human_bytes(plan.removed_bytes),
            published.number
        );
        return Ok(ExitCode::SUCCESS);
    }
    let (plan, number) =
        match retention::prune_published(snapshots, &repository, &rules, now).await? {
            None => bail!("{repository} has no published snapshot"),
            Some(Pruned::Nothing(plan)) => {
                print_plan(&plan);
                println!(
                    "{repository}: nothing to prune; snapshot {} stays",
                    published.number
                );
                return Ok(ExitCode::SUCCESS);
            }
            Some(Pruned::Published(plan, number)) => (plan, number),
        };
    print_plan(&plan);
    if let Err(e) = snapshots
        .prune(&repository, config.publish.keep_retired)
        .await
    {
        tracing::warn!(%repository, "pruning retired snapshots: {e}");
    }
    println!(
        "{repository}: {} commits cut, {} objects ({}) left; snapshot {number} published (the garbage collector frees their bytes)",
        plan.cut.len(),
        plan.removed.len(),
        human_bytes(plan.removed_bytes),
    );
    Ok(ExitCode::SUCCESS)
}
