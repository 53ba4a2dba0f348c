//! Byte quotas per namespace of repositories.
//!
//! A namespace's usage is the size of every distinct blob its repositories
//! hold (linked layers and configs, and manifests), each counted once however
//! many of its repositories share it, and counted again in every other
//! namespace that holds it: Harbor's per-project counting. A push that would
//! take a namespace over its limit is refused; bytes the namespace already
//! holds never are.
//!
//! The check stays off the hot path: usage is cached per namespace, raised by
//! every commit through this process, and re-read from the database only when
//! it is older than [`USAGE_TTL`] or when a push would cross the limit (the
//! cached figure can only overstate: a re-pushed blob is added again, deletions
//! are seen at the next read). A repository that no quota covers costs one
//! pattern match per push.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use wharf_core::{Digest, RepoName, RepoPattern, RepositoryKind};
use wharf_meta::Meta;

use crate::OciError;

/// How long a namespace's cached usage is trusted before it is read again, so
/// that other replicas' pushes and garbage collection are seen.
pub const USAGE_TTL: Duration = Duration::from_secs(30);

/// One namespace's limit.
#[derive(Debug, Clone)]
pub struct QuotaRule {
    /// The repositories it covers.
    pub namespace: RepoPattern,
    /// Most bytes they may hold together.
    pub limit: u64,
}

/// The quotas a registry enforces; empty by default.
#[derive(Default)]
pub struct Quotas {
    rules: Vec<QuotaRule>,
    /// Per rule: the usage last read or raised, and when it was read.
    usage: Mutex<Vec<Option<(u64, Instant)>>>,
    /// One database read of usage at a time, so a burst of pushes near the
    /// limit costs one read, not one each.
    reading: tokio::sync::Mutex<()>,
}

impl Quotas {
    /// Quotas for `rules`.
    pub fn new(rules: Vec<QuotaRule>) -> Quotas {
        let usage = Mutex::new(vec![None; rules.len()]);
        Quotas {
            rules,
            usage,
            reading: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self, i: usize) -> Option<u64> {
        let usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        usage[i].and_then(|(bytes, at)| (at.elapsed() < USAGE_TTL).then_some(bytes))
    }

    /// Refuses adding `size` bytes of `digest` to `repo` when that would take a
    /// namespace covering `repo` over its limit.
    pub async fn admit(
        &self,
        meta: &Meta,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> Result<(), OciError> {
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.namespace.matches(repo.as_str()) {
                continue;
            }
            let fits = |used: u64| used.saturating_add(size) <= rule.limit;
            if self.cached(i).is_some_and(fits) {
                continue;
            }
            let used = self.read_usage(meta, i).await?;
            if fits(used) || namespace_holds(meta, &rule.namespace, digest).await? {
                continue;
            }
            return Err(OciError::QuotaExceeded {
                namespace: rule.namespace.to_string(),
                used,
                limit: rule.limit,
                adding: size,
            });
        }
        Ok(())
    }

    /// Counts `size` more bytes in every namespace covering `repo` (after a commit).
    pub fn added(&self, repo: &RepoName, size: u64) {
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        for (i, rule) in self.rules.iter().enumerate() {
            if let Some((bytes, _)) = usage[i].as_mut() {
                if rule.namespace.matches(repo.as_str()) {
                    *bytes = bytes.saturating_add(size);
                }
            }
        }
    }

    /// The usage of rule `i` as the database has it now.
    async fn read_usage(&self, meta: &Meta, i: usize) -> Result<u64, OciError> {
        let _reading = self.reading.lock().await;
        let used = namespace_usage(meta, &self.rules[i].namespace).await?;
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        usage[i] = Some((used, Instant::now()));
        Ok(used)
    }

    /// Every quota with the usage the database has now: `(namespace, used, limit)`.
    pub async fn report(&self, meta: &Meta) -> Result<Vec<(String, u64, u64)>, OciError> {
        let mut out = Vec::new();
        for i in 0..self.rules.len() {
            let used = self.read_usage(meta, i).await?;
            out.push((
                self.rules[i].namespace.to_string(),
                used,
                self.rules[i].limit,
            ));
        }
        Ok(out)
    }
}

/// The OCI repositories `namespace` covers.
async fn namespace_repositories(
    meta: &Meta,
    namespace: &RepoPattern,
) -> Result<Vec<RepoName>, OciError> {
    const PAGE: u64 = 1000;
    let mut out = Vec::new();
    let mut last: Option<String> = None;
    loop {
        let page = meta
            .repositories(RepositoryKind::Oci, last.as_deref(), PAGE)
            .await?;
        let done = (page.len() as u64) < PAGE;
        for name in &page {
            if namespace.matches(name) {
                if let Ok(repo) = RepoName::parse(name) {
                    out.push(repo);
                }
            }
        }
        match page.into_iter().last() {
            Some(name) if !done => last = Some(name),
            _ => return Ok(out),
        }
    }
}

async fn namespace_usage(meta: &Meta, namespace: &RepoPattern) -> Result<u64, OciError> {
    let mut seen: HashSet<Digest> = HashSet::new();
    let mut used = 0u64;
    for repo in namespace_repositories(meta, namespace).await? {
        for (digest, size) in meta.repository_blobs(&repo).await? {
            if seen.insert(digest) {
                used = used.saturating_add(size);
            }
        }
    }
    Ok(used)
}

async fn namespace_holds(
    meta: &Meta,
    namespace: &RepoPattern,
    digest: &Digest,
) -> Result<bool, OciError> {
    for repo in namespace_repositories(meta, namespace).await? {
        if meta.repository_holds(&repo, digest).await? {
            return Ok(true);
        }
    }
    Ok(false)
}
