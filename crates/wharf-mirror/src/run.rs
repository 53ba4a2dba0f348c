//! One sync run of one remote: every tag its definitions select, copied with
//! [`Mirror`], reported to a [`SyncObserver`] as it goes, and summed up in one
//! [`SyncSummary`] line. The same function serves `wharf sync` in the
//! foreground and the `sync:<remote>` job on the queue, so both print and keep
//! the same lines.
//!
//! The run is driven by a plain [`SyncPlan`] that the binary lowers from the
//! configuration; nothing here reads it. Tags are copied `concurrency` at a
//! time. Safe points: once the observer says it is cancelled, no further tag
//! starts and the run ends when those in flight are done. A tag moves only after its
//! manifest, children and blobs are stored (see [`Mirror::copy_tag`]), so a run
//! killed anywhere leaves no tag naming incomplete content, and the next run
//! finds every blob already stored and fetches only what is missing.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{stream, StreamExt};
use wharf_core::{Digest, RepoName, Tag};
use wharf_oci::Registry;

use crate::{
    names, CopyOptions, Mirror, MirrorError, Platform, TagOutcome, TagSelection, UpstreamClient,
    UpstreamSettings,
};

/// Everything one run of one remote needs, lowered from the configuration.
#[derive(Debug, Clone)]
pub struct SyncPlan {
    /// The remote's name (`[[mirror.remotes]]` `name`).
    pub remote: String,
    /// How to reach it.
    pub settings: UpstreamSettings,
    /// The upstream's `host[:port]` as configured (Docker Hub's names depend on it).
    pub authority: String,
    /// Where mirrored repositories go locally (`PREFIX/UPSTREAM-NAME`; empty: the name itself).
    pub prefix: String,
    /// Tags copied at once, and blob transfers at once within each tag.
    pub concurrency: usize,
    /// What to copy.
    pub definitions: Vec<SyncDefinition>,
}

/// One `[[mirror.sync]]` definition of the remote.
#[derive(Debug, Clone, Default)]
pub struct SyncDefinition {
    /// Upstream repository names.
    pub repositories: Vec<String>,
    /// Explicit tags; empty: every listed tag, filtered.
    pub tags: Vec<String>,
    /// Regex a listed tag must match.
    pub include: String,
    /// Regex a listed tag must not match.
    pub exclude: String,
    /// Semver range a listed tag must fall in (`>=1.2, <2`); empty: any.
    pub semver: String,
    /// Platforms of an index to copy (`linux/arm64/v8`); empty: every one.
    pub platforms: Vec<String>,
    /// Also copy cosign signature/attestation tags and referrers.
    pub signatures: bool,
    /// Copy a tag only if one of these keys verifies its cosign signature; empty: no check.
    pub trusted_keys: Vec<wharf_oci::cosign::CosignKey>,
}

/// The one place a definition becomes a tag selection and copy options.
fn selection(def: &SyncDefinition) -> Result<(TagSelection, CopyOptions), String> {
    let selection = TagSelection::new(&def.tags, &def.include, &def.exclude, &def.semver)
        .map_err(|e| e.to_string())?;
    let platforms = def
        .platforms
        .iter()
        .map(|p| Platform::parse(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("platforms: {e}"))?;
    Ok((
        selection,
        CopyOptions {
            platforms,
            signatures: def.signatures,
            trusted_keys: def.trusted_keys.clone(),
        },
    ))
}

/// What happened to one tag (or one step before any tag), as printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncLine {
    /// The tag now names `digest`.
    Copied {
        /// `local:tag`.
        target: String,
        /// The manifest digest.
        digest: Digest,
    },
    /// The tag already named the upstream's digest.
    Unchanged {
        /// `local:tag`.
        target: String,
        /// The manifest digest.
        digest: Digest,
    },
    /// A tag, a listing or the connection failed.
    Failed(String),
}

impl fmt::Display for SyncLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncLine::Copied { target, digest } => write!(f, "copied {target} {digest}"),
            SyncLine::Unchanged { target, digest } => write!(f, "unchanged {target} {digest}"),
            SyncLine::Failed(what) => write!(f, "failed {what}"),
        }
    }
}

/// Where a run reports its progress and learns that it should stop.
pub trait SyncObserver: Send + Sync {
    /// `n` more tags were selected (the total grows as repositories are listed).
    fn tags_selected(&self, n: u64);
    /// Fetched since the last call: manifests, blobs, bytes.
    fn fetched(&self, manifests: u64, blobs: u64, bytes: u64);
    /// A tag is done (or a step failed).
    fn line(&self, line: &SyncLine);
    /// True once the run should stop at its next safe point (between tags).
    fn cancelled(&self) -> bool;
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncSummary {
    /// The remote's name.
    pub remote: String,
    /// Manifests fetched.
    pub manifests: u64,
    /// Blobs fetched.
    pub blobs: u64,
    /// Bytes fetched (manifests and blobs).
    pub bytes: u64,
    /// Tags that moved.
    pub copied: u64,
    /// Tags that already named the upstream's digest.
    pub unchanged: u64,
    /// What failed, one line each.
    pub failures: Vec<String>,
    /// Whether the run stopped early because it was cancelled.
    pub cancelled: bool,
    /// How long it took.
    pub elapsed: Duration,
}

impl SyncSummary {
    /// `synced up: 5 manifests, 12 blobs, 1.2 MiB fetched, 3 tags copied, 0 tags unchanged, 0 failed, in 1.4 s`.
    pub fn line(&self) -> String {
        format!(
            "synced {}: {}, {}, {} fetched, {} copied, {} unchanged, {} failed{}, in {:.1} s",
            self.remote,
            plural(self.manifests, "manifest"),
            plural(self.blobs, "blob"),
            human_bytes(self.bytes),
            plural(self.copied, "tag"),
            plural(self.unchanged, "tag"),
            self.failures.len(),
            if self.cancelled { ", cancelled" } else { "" },
            self.elapsed.as_secs_f64()
        )
    }
}

/// `1 tag`, `0 blobs`.
pub fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// `48.2 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// How often fetched counters are passed on while a run goes.
const TICK: Duration = Duration::from_millis(200);

/// Runs `plan` once into `registry`. Never fails as a whole: every failure is a
/// line of the summary, and the other tags are still tried.
pub async fn run_sync(
    registry: &Registry,
    plan: &SyncPlan,
    observer: &dyn SyncObserver,
) -> SyncSummary {
    let started = Instant::now();
    let mut summary = SyncSummary {
        remote: plan.remote.clone(),
        ..SyncSummary::default()
    };
    let mirror = match connect(registry, plan).await {
        Ok(mirror) => mirror,
        Err(e) => {
            fail(&mut summary, observer, format!("{}: {e}", plan.remote));
            summary.elapsed = started.elapsed();
            return summary;
        }
    };
    let done = AtomicBool::new(false);
    let wake = tokio::sync::Notify::new();
    let reported = std::sync::Mutex::new((0u64, 0u64, 0u64));
    let report = || {
        let now = mirror.transferred().snapshot();
        let mut last = reported.lock().unwrap_or_else(|e| e.into_inner());
        let delta = (now.0 - last.0, now.1 - last.1, now.2 - last.2);
        *last = now;
        if delta != (0, 0, 0) {
            observer.fetched(delta.0, delta.1, delta.2);
        }
    };
    let ticker = async {
        while !done.load(Ordering::Relaxed) {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = wake.notified() => {}
            }
            report();
        }
    };
    let work = async {
        copy_all(&mirror, plan, observer, &mut summary).await;
        done.store(true, Ordering::Relaxed);
        wake.notify_one();
    };
    tokio::join!(work, ticker);
    report();
    let (manifests, blobs, bytes) = mirror.transferred().snapshot();
    summary.manifests = manifests;
    summary.blobs = blobs;
    summary.bytes = bytes;
    summary.elapsed = started.elapsed();
    summary
}

fn fail(summary: &mut SyncSummary, observer: &dyn SyncObserver, what: String) {
    observer.line(&SyncLine::Failed(what.clone()));
    summary.failures.push(what);
}

/// One tag to copy.
struct Work {
    upstream: String,
    local: RepoName,
    tag: String,
}

async fn copy_all(
    mirror: &Mirror,
    plan: &SyncPlan,
    observer: &dyn SyncObserver,
    summary: &mut SyncSummary,
) {
    // The tags of each repository `concurrency` at a time: a run of many small images is
    // bound by round trips, not bandwidth, and tags are independent (each moves only when its
    // own content is stored). Repositories one after another, so a blob that two repositories
    // share is fetched once and mounted for the second.
    for def in &plan.definitions {
        let (selection, options) = match selection(def) {
            Ok(s) => s,
            Err(e) => {
                fail(summary, observer, format!("{}: {e}", plan.remote));
                continue;
            }
        };
        for repository in &def.repositories {
            if observer.cancelled() {
                summary.cancelled = true;
                return;
            }
            let upstream = names::upstream_repository(&plan.authority, repository);
            let local_name = names::local_repository(&plan.prefix, &upstream);
            let local = match RepoName::parse(&local_name) {
                Ok(name) => name,
                Err(e) => {
                    fail(
                        summary,
                        observer,
                        format!("{local_name}: not a repository name: {e}"),
                    );
                    continue;
                }
            };
            let tags = if selection.needs_listing() {
                match mirror.client().list_tags(&upstream).await {
                    Ok(listed) => selection.select(&listed),
                    Err(e) => {
                        fail(
                            summary,
                            observer,
                            format!("{local}: listing tags of {upstream}: {e}"),
                        );
                        continue;
                    }
                }
            } else {
                selection.select(&[])
            };
            observer.tags_selected(tags.len() as u64);
            let work = tags.into_iter().map(|tag| Work {
                upstream: upstream.clone(),
                local: local.clone(),
                tag,
            });
            copy_tags(mirror, plan, &options, observer, summary, work).await;
            if summary.cancelled {
                return;
            }
        }
    }
}

async fn copy_tags(
    mirror: &Mirror,
    plan: &SyncPlan,
    options: &CopyOptions,
    observer: &dyn SyncObserver,
    summary: &mut SyncSummary,
    work: impl Iterator<Item = Work>,
) {
    let mut results = stream::iter(work)
        .map(|w| async move {
            // The safe point: a tag not started is left for the next run.
            if observer.cancelled() {
                return None;
            }
            let result = match Tag::parse(&w.tag) {
                Ok(t) => mirror
                    .copy_tag_with(&w.upstream, &w.local, &t, options)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(format!("not a tag: {e}")),
            };
            Some((format!("{}:{}", w.local, w.tag), result))
        })
        .buffer_unordered(plan.concurrency.max(1));
    while let Some(done) = results.next().await {
        let Some((target, result)) = done else {
            summary.cancelled = true;
            continue;
        };
        let line = match result {
            Ok(TagOutcome::Copied { digest }) => {
                summary.copied += 1;
                SyncLine::Copied { target, digest }
            }
            Ok(TagOutcome::Unchanged { digest }) => {
                summary.unchanged += 1;
                SyncLine::Unchanged { target, digest }
            }
            Err(e) => {
                let what = format!("{target}: {e}");
                summary.failures.push(what.clone());
                SyncLine::Failed(what)
            }
        };
        observer.line(&line);
    }
}

/// Builds the remote's client and checks that it answers and takes the credentials.
async fn connect(registry: &Registry, plan: &SyncPlan) -> Result<Mirror, MirrorError> {
    let client = UpstreamClient::new(plan.settings.clone())?;
    client.ping().await?;
    Ok(Mirror::new(
        registry.clone(),
        Arc::new(client),
        plan.concurrency,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line_names_every_counter() {
        let summary = SyncSummary {
            remote: "up".into(),
            manifests: 5,
            blobs: 1,
            bytes: 1536,
            copied: 3,
            unchanged: 0,
            failures: vec!["x".into()],
            cancelled: false,
            elapsed: Duration::from_millis(1400),
        };
        assert_eq!(
            summary.line(),
            "synced up: 5 manifests, 1 blob, 1.5 KiB fetched, 3 tags copied, 0 tags unchanged, 1 failed, in 1.4 s"
        );
        assert_eq!(human_bytes(48 * 1024 * 1024 + 200 * 1024), "48.2 MiB");
        assert_eq!(human_bytes(0), "0 B");
    }
}
