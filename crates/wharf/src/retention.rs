//! `wharf retention [--dry-run]`, the `retention:oci` job, and the lowering of
//! `[retention]` and `[[quota]]` into wharf-oci's types.
//!
//! The policy itself is `wharf_oci::retention`; this file only reads the
//! configuration, prints, and hands the job to the queue.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use wharf_config::Config;
use wharf_core::RepoPattern;
use wharf_jobs::{HandlerFuture, JobError, JobHandler, Progress};
use wharf_oci::{
    QuotaRule, Quotas, Registry, RepositoryPlan, RetentionPlan, RetentionPolicy, RetentionRule,
};

/// The one target of the `retention` job kind: OCI repositories (other formats
/// may add theirs).
pub(crate) const JOB_TARGET: &str = "oci";

/// `[retention]` lowered; `validate` has already checked every pattern and regex.
pub(crate) fn policy(config: &Config) -> anyhow::Result<RetentionPolicy> {
    let protect = optional_regex(&config.retention.protect)?;
    let rules = config
        .retention
        .rules
        .iter()
        .map(|r| {
            Ok(RetentionRule {
                repositories: RepoPattern::parse(&r.repositories).map_err(anyhow::Error::msg)?,
                selects_tags: r.selects_tags(),
                keep_newest: usize::try_from(r.keep_newest).unwrap_or(usize::MAX),
                keep_newest_matching: optional_regex(&r.keep_newest_matching)?,
                keep_tags: optional_regex(&r.keep_tags)?,
                protect: protect.clone(),
                keep_pushed_within_secs: (r.keep_pushed_within_days > 0)
                    .then(|| r.keep_pushed_within_days as i64 * 86_400),
                keep_pulled_within_secs: (r.keep_pulled_within_days > 0)
                    .then(|| r.keep_pulled_within_days as i64 * 86_400),
                delete_untagged: r.delete_untagged,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(RetentionPolicy {
        rules,
        untagged_grace_secs: i64::try_from(config.gc.grace_period_secs).unwrap_or(i64::MAX),
    })
}

/// An empty key is no pattern.
fn optional_regex(pattern: &str) -> anyhow::Result<Option<regex::Regex>> {
    Ok((!pattern.is_empty())
        .then(|| regex::Regex::new(pattern))
        .transpose()?)
}

/// `[[quota]]` lowered.
pub(crate) fn quotas(config: &Config) -> anyhow::Result<Quotas> {
    let rules = config
        .quota
        .iter()
        .map(|q| {
            Ok(QuotaRule {
                namespace: RepoPattern::parse(&q.namespace).map_err(anyhow::Error::msg)?,
                limit: q.bytes,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Quotas::new(rules))
}

/// The `retention:oci` job when rules exist, for the catalog.
pub(crate) fn job_targets(config: &Config) -> Vec<String> {
    if config.retention.rules.is_empty() {
        Vec::new()
    } else {
        vec![JOB_TARGET.to_owned()]
    }
}

/// The scheduled retention run, if `[retention]` asks for one.
pub(crate) fn schedule(config: &Config) -> Option<wharf_jobs::Schedule> {
    if config.retention.rules.is_empty() {
        return None;
    }
    let cadence =
        crate::serve::cadence(config.retention.interval_secs, &config.retention.schedule)?;
    Some(wharf_jobs::Schedule {
        name: format!("retention:{JOB_TARGET}"),
        job: wharf_jobs::JobKind::Handled {
            kind: "retention".into(),
            target: JOB_TARGET.into(),
        },
        cadence,
        jitter: Duration::from_secs(config.retention.jitter_secs),
    })
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The lines of one repository's removals, `verb` being "delete" or "would delete".
fn repository_lines(verb: &str, repo: &wharf_core::RepoName, plan: &RepositoryPlan) -> Vec<String> {
    let mut lines = Vec::new();
    for (tag, digest) in &plan.tags {
        lines.push(format!(
            "{verb} tag {repo}:{tag} ({digest}; the manifest stays)"
        ));
    }
    for (digest, tags) in &plan.manifests {
        if tags.is_empty() {
            lines.push(format!("{verb} manifest {repo}@{digest} (untagged)"));
        } else {
            let tags: Vec<&str> = tags.iter().map(|t| t.as_str()).collect();
            lines.push(format!(
                "{verb} manifest {repo}@{digest} with tags {}",
                tags.join(", ")
            ));
        }
    }
    lines
}

fn summary(plan: &RetentionPlan, dry_run: bool) -> String {
    let (verb, gc) = if dry_run {
        ("would delete", "garbage collection would then free")
    } else {
        ("deleted", "the next garbage collection frees")
    };
    format!(
        "retention: {verb} {} tags and {} manifests in {} repositories; {gc} {} bytes in {} blobs",
        plan.tag_count(),
        plan.manifest_count(),
        plan.repositories.len(),
        plan.freed_bytes,
        plan.freed_blobs
    )
}

/// `wharf retention [--dry-run]`.
pub(crate) async fn retention(
    config: &Config,
    registry: &Registry,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let policy = policy(config)?;
    if policy.rules.is_empty() {
        println!("retention: no [[retention.rules]] in the configuration; nothing to delete");
    } else {
        apply(&policy, registry, dry_run).await?;
    }
    for (namespace, used, limit) in registry.quota_report().await? {
        println!("quota: {namespace} holds {used} of {limit} bytes");
    }
    Ok(ExitCode::SUCCESS)
}

async fn apply(policy: &RetentionPolicy, registry: &Registry, dry_run: bool) -> anyhow::Result<()> {
    let plan = if dry_run {
        let plan = registry.plan_retention(policy, now()).await?;
        for (repo, repo_plan) in &plan.repositories {
            for line in repository_lines("would delete", repo, repo_plan) {
                println!("{line}");
            }
        }
        plan
    } else {
        let print = |repo: &wharf_core::RepoName, plan: &RepositoryPlan| {
            for line in repository_lines("deleted", repo, plan) {
                println!("{line}");
            }
        };
        registry
            .apply_retention(policy, now(), &print, &|| false)
            .await?
    };
    println!("{}", summary(&plan, dry_run));
    Ok(())
}

/// The `retention` job kind: applies `[retention]` on the server's worker.
pub(crate) struct RetentionJobHandler {
    pub(crate) config: Arc<Config>,
    pub(crate) registry: Registry,
}

impl JobHandler for RetentionJobHandler {
    fn run<'a>(&'a self, target: &'a str, progress: &'a dyn Progress) -> HandlerFuture<'a> {
        Box::pin(async move {
            if target != JOB_TARGET {
                return Err(JobError::Failed(format!(
                    "retention has no target {target:?}: expected {JOB_TARGET:?}"
                )));
            }
            let policy = policy(&self.config).map_err(|e| JobError::Failed(format!("{e:#}")))?;
            let report = |repo: &wharf_core::RepoName, plan: &RepositoryPlan| {
                progress.advance(1, 0);
                for line in repository_lines("deleted", repo, plan) {
                    tracing::info!("{line}");
                }
            };
            let cancelled = || progress.cancelled();
            let plan = self
                .registry
                .apply_retention(&policy, now(), &report, &cancelled)
                .await
                .map_err(|e| JobError::Failed(e.to_string()))?;
            if progress.cancelled() {
                return Err(JobError::Cancelled);
            }
            Ok(summary(&plan, false))
        })
    }
}
