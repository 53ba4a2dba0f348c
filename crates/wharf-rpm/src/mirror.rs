//! One mirror run of one rpm-md upstream into a local repository's snapshot.
//!
//! Order, and why:
//! 1. repomd.xml (and `.asc`) first. Equal to the published ones → nothing
//!    else is fetched: an unchanged upstream costs one or two small requests.
//! 2. Every data file repomd.xml names, each verified against its checksum and
//!    size while it streams into the staged snapshot (nothing is buffered).
//! 3. primary, read back from the store as a stream, names every package; a
//!    package whose sha256 the store already holds (this repository's last
//!    snapshot, or any other) is reused without a request, the others are
//!    fetched `concurrency` at a time and verified like the data files.
//! 4. repomd.xml (+ `.asc`) joins the snapshot last and the snapshot is
//!    published in one step; any failure before discards the staged snapshot,
//!    so the previous one stays served, untouched.
//!
//! Policies: `exact` (the tree is exactly upstream's) and `additive` (packages
//! of the previous snapshot that upstream dropped stay downloadable).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use wharf_blob::ByteStream;
use wharf_core::{RepoName, RepositoryKind, TreePath};
use wharf_snapshot::{Base, Snapshots, Staged};

use crate::checksum::{Checksum, ChecksumHasher};
use crate::compression::Compression;
use crate::location::Location;
use crate::primary::{for_each_package, PackageEntry};
use crate::repomd::{DataRecord, Repomd, MAX_REPOMD_BYTES};
use crate::source::Source;
use crate::RpmError;

const REPOMD: &str = "repodata/repomd.xml";
const REPOMD_ASC: &str = "repodata/repomd.xml.asc";

/// What a mirror keeps when upstream drops a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The tree is byte for byte upstream's: dropped packages go.
    Exact,
    /// Dropped packages stay downloadable at their paths.
    Additive,
}

/// Everything one run needs, lowered from `[[rpm.remotes]]` by the binary.
#[derive(Debug, Clone)]
pub struct MirrorPlan {
    /// The remote's name, for messages.
    pub remote: String,
    /// Where upstream is.
    pub source: Source,
    /// The local repository filled.
    pub repository: RepoName,
    /// Exact or additive.
    pub policy: Policy,
    /// Transfers in flight at once.
    pub concurrency: usize,
}

/// Called as a run goes, for progress bars and job progress.
pub trait MirrorObserver: Send + Sync {
    /// Bytes arrived from upstream.
    fn fetched(&self, _bytes: u64) {}
    /// One more package is in the snapshot (fetched or reused).
    fn package_done(&self) {}
    /// True once the run should stop (before it publishes; nothing is kept).
    fn cancelled(&self) -> bool {
        false
    }
}

/// An observer that ignores everything.
pub struct Quiet;
impl MirrorObserver for Quiet {}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MirrorSummary {
    /// The remote.
    pub remote: String,
    /// The local repository.
    pub repository: String,
    /// repomd.xml was as published: nothing else was fetched.
    pub unchanged: bool,
    /// Data files named by repomd.xml.
    pub metadata_files: u64,
    /// Packages primary lists.
    pub packages: u64,
    /// Packages fetched from upstream.
    pub fetched_packages: u64,
    /// Packages whose bytes the store already held.
    pub reused_packages: u64,
    /// Packages kept although upstream dropped them (additive).
    pub kept_packages: u64,
    /// Bytes fetched from upstream.
    pub bytes_fetched: u64,
    /// The number of the snapshot published, when one was.
    pub snapshot: Option<i64>,
}

impl MirrorSummary {
    /// The line `wharf sync` prints and the job keeps.
    pub fn line(&self) -> String {
        let head = format!("rpm-sync {} -> {}", self.remote, self.repository);
        if self.unchanged {
            return format!("{head}: unchanged (upstream repomd.xml is the one published)");
        }
        let mut line = format!(
            "{head}: {} packages ({} fetched, {} already stored), {} metadata files, {} fetched",
            self.packages,
            self.fetched_packages,
            self.reused_packages,
            self.metadata_files,
            human_bytes(self.bytes_fetched)
        );
        if self.kept_packages > 0 {
            line.push_str(&format!(
                ", {} dropped upstream and kept",
                self.kept_packages
            ));
        }
        if let Some(id) = self.snapshot {
            line.push_str(&format!("; published snapshot {id}"));
        }
        line
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn store_error(what: &str, e: impl std::fmt::Display) -> RpmError {
    RpmError::Store(format!("{what}: {e}"))
}

/// The tree path of a location, or why an exact mirror cannot keep it.
fn tree_path(location: &Location, what: &str) -> Result<TreePath, RpmError> {
    let relative = location.relative_path(what)?;
    TreePath::new(relative).map_err(|e| {
        RpmError::Location(format!(
            "{what}: location href {relative:?} is not a valid path: {e}"
        ))
    })
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Runs one mirror pass. On error nothing is published.
pub async fn run(
    snapshots: &Snapshots,
    plan: &MirrorPlan,
    observer: &dyn MirrorObserver,
) -> Result<MirrorSummary, RpmError> {
    let mut summary = MirrorSummary {
        remote: plan.remote.clone(),
        repository: plan.repository.to_string(),
        ..MirrorSummary::default()
    };
    let repomd_bytes = plan
        .source
        .fetch_small(REPOMD, MAX_REPOMD_BYTES)
        .await?
        .ok_or_else(|| {
            RpmError::Upstream(format!(
                "{}: not found (is this the root of an rpm-md repository?)",
                plan.source.describe(REPOMD)
            ))
        })?;
    let asc = plan.source.fetch_small(REPOMD_ASC, 1 << 20).await?;
    summary.bytes_fetched += repomd_bytes.len() as u64 + asc.as_ref().map_or(0, |a| a.len() as u64);
    if unchanged(snapshots, &plan.repository, &repomd_bytes, asc.as_ref()).await? {
        summary.unchanged = true;
        return Ok(summary);
    }
    let repomd = Repomd::parse(&repomd_bytes)?;
    // Every location is checked before anything is fetched, so a refused
    // repository costs no transfer.
    let mut data = Vec::new();
    for record in &repomd.records {
        let path = tree_path(
            &record.location,
            &format!("repomd.xml <data type={:?}>", record.kind),
        )?;
        data.push((record, path));
    }
    let primary = repomd.record("primary").ok_or_else(|| {
        RpmError::Metadata(format!(
            "{}: names no primary",
            plan.source.describe(REPOMD)
        ))
    })?;
    let base = match plan.policy {
        Policy::Exact => Base::Empty,
        Policy::Additive => Base::Published,
    };
    let staged = snapshots
        .stage(
            &plan.repository,
            RepositoryKind::Rpm,
            base,
            &format!("rpm-sync {}", plan.remote),
        )
        .await
        .map_err(|e| store_error("stage a snapshot", e))?;
    let outcome = fill(
        snapshots,
        &staged,
        plan,
        &repomd,
        &data,
        primary,
        &repomd_bytes,
        asc,
        observer,
        &mut summary,
    )
    .await;
    match outcome {
        Ok(()) => {
            snapshots
                .publish(staged.id())
                .await
                .map_err(|e| store_error("publish", e))?;
            summary.snapshot = Some(staged.record().number);
            Ok(summary)
        }
        Err(e) => {
            if let Err(discard) = snapshots.discard(staged.id()).await {
                tracing::warn!("discarding the staged snapshot {}: {discard}", staged.id());
            }
            Err(e)
        }
    }
}

/// Whether upstream's repomd.xml (and signature) are the published ones.
async fn unchanged(
    snapshots: &Snapshots,
    repository: &RepoName,
    repomd: &Bytes,
    asc: Option<&Bytes>,
) -> Result<bool, RpmError> {
    let read = |e| store_error("read the published snapshot", e);
    let Some(published) = snapshots.published(repository).await.map_err(read)? else {
        return Ok(false);
    };
    let entry = |path: &'static str| {
        let id = published.id.clone();
        async move {
            snapshots
                .meta()
                .snapshot_entry(&id, &TreePath::new(path).expect("constant"))
                .await
                .map_err(|e| store_error("read the published snapshot", e))
        }
    };
    let Some(current) = entry(REPOMD).await? else {
        return Ok(false);
    };
    if current.blob != wharf_core::Digest::sha256_of(repomd) {
        return Ok(false);
    }
    Ok(match (entry(REPOMD_ASC).await?, asc) {
        (None, None) => true,
        (Some(c), Some(a)) => c.blob == wharf_core::Digest::sha256_of(a),
        _ => false,
    })
}

#[allow(clippy::too_many_arguments)]
async fn fill(
    snapshots: &Snapshots,
    staged: &Staged,
    plan: &MirrorPlan,
    repomd: &Repomd,
    data: &[(&DataRecord, TreePath)],
    primary: &DataRecord,
    repomd_bytes: &Bytes,
    asc: Option<Bytes>,
    observer: &dyn MirrorObserver,
    summary: &mut MirrorSummary,
) -> Result<(), RpmError> {
    let fetched = AtomicU64::new(0);
    let counting = Counting {
        inner: observer,
        bytes: &fetched,
    };
    let concurrency = plan.concurrency.max(1);
    if plan.policy == Policy::Additive {
        // The previous metadata files are not upstream's any more; only packages are kept.
        remove_prefix(staged, "repodata/").await?;
    }
    // Built as a list first: a closure over borrowed records here makes the
    // job handler's future fail the higher-ranked `Send` check.
    let mut files = Vec::with_capacity(data.len());
    for (record, path) in data {
        files.push(copy(
            staged,
            &plan.source,
            path,
            &record.checksum,
            record.size,
            record.timestamp.unwrap_or_else(now),
            format!("{} ({})", path.as_str(), record.kind),
            &counting,
        ));
    }
    futures_util::stream::iter(files)
        .buffer_unordered(concurrency)
        .try_collect::<Vec<bool>>()
        .await?;
    summary.metadata_files = repomd.records.len() as u64;
    if observer.cancelled() {
        return Err(RpmError::Cancelled);
    }

    // primary, read back from the store on a blocking thread, feeds a bounded
    // channel: memory holds a few hundred entries, whatever primary's size.
    let primary_path = tree_path(&primary.location, "primary")?;
    let stored = staged
        .entry(&primary_path)
        .await
        .map_err(|e| store_error("read back primary", e))?
        .ok_or_else(|| RpmError::Store("primary vanished from the staged snapshot".into()))?;
    let body = snapshots
        .blobs()
        .read(&stored.blob, None)
        .await
        .map_err(|e| store_error("read back primary", e))?;
    let compression = Compression::from_name(primary_path.as_str())?;
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<PackageEntry>(256);
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(body));
    let parser = tokio::task::spawn_blocking(move || {
        let decoded = compression.decoder(reader)?;
        for_each_package(
            std::io::BufReader::with_capacity(64 << 10, decoded),
            |entry| sender.blocking_send(entry).map_err(|_| RpmError::Cancelled),
        )
    });
    let entries = futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx));
    let reused = AtomicU64::new(0);
    let fetched_packages = AtomicU64::new(0);
    let packages = entries
        .map(|entry| {
            let counting = &counting;
            let reused = &reused;
            let fetched_packages = &fetched_packages;
            async move {
                if counting.inner.cancelled() {
                    return Err(RpmError::Cancelled);
                }
                let nevra = entry.nevra();
                let path = tree_path(&entry.location, &nevra)?;
                let was_fetched = copy(
                    staged,
                    &plan.source,
                    &path,
                    &entry.checksum,
                    Some(entry.size),
                    now(),
                    format!("{} (package {nevra})", path.as_str()),
                    counting,
                )
                .await?;
                if was_fetched {
                    fetched_packages.fetch_add(1, Ordering::Relaxed);
                } else {
                    reused.fetch_add(1, Ordering::Relaxed);
                }
                counting.inner.package_done();
                Ok::<_, RpmError>(path)
            }
        })
        .buffer_unordered(concurrency);
    let mut listed = HashSet::new();
    // Boxed so that dropping it on a failure drops the receiver, which stops the parser.
    let mut packages = Box::pin(packages);
    let mut failure = None;
    while let Some(done) = packages.next().await {
        match done {
            Ok(path) => {
                listed.insert(path);
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(packages);
    let parsed = parser
        .await
        .map_err(|e| RpmError::Metadata(format!("primary reader: {e}")));
    if let Some(e) = failure {
        return Err(e);
    }
    let count = parsed??;
    summary.packages = count;
    summary.reused_packages = reused.load(Ordering::Relaxed);
    summary.fetched_packages = fetched_packages.load(Ordering::Relaxed);
    if plan.policy == Policy::Additive {
        summary.kept_packages = count_kept(staged, &listed).await?;
    }
    if let Some(asc) = asc {
        put_small(staged, REPOMD_ASC, asc).await?;
    }
    put_small(staged, REPOMD, repomd_bytes.clone()).await?;
    summary.bytes_fetched += fetched.load(Ordering::Relaxed);
    Ok(())
}

async fn put_small(staged: &Staged, path: &'static str, bytes: Bytes) -> Result<(), RpmError> {
    staged
        .put_bytes(&TreePath::new(path).expect("constant"), bytes, None, now())
        .await
        .map_err(|e| store_error(path, e))?;
    Ok(())
}

/// Removes every staged entry under `prefix` (the previous snapshot's copies).
async fn remove_prefix(staged: &Staged, prefix: &str) -> Result<(), RpmError> {
    let paths = all_paths(staged, prefix).await?;
    if !paths.is_empty() {
        staged
            .remove(&paths)
            .await
            .map_err(|e| store_error("remove old metadata", e))?;
    }
    Ok(())
}

async fn all_paths(staged: &Staged, under: &str) -> Result<Vec<TreePath>, RpmError> {
    let under =
        (!under.is_empty()).then(|| TreePath::new(under.trim_end_matches('/')).expect("constant"));
    let mut paths = Vec::new();
    let mut after: Option<TreePath> = None;
    loop {
        let page = staged
            .entries(under.as_ref(), after.as_ref(), 1000)
            .await
            .map_err(|e| store_error("list the staged snapshot", e))?;
        let Some(last) = page.last() else { break };
        after = Some(last.path.clone());
        paths.extend(page.into_iter().map(|e| e.path));
    }
    Ok(paths)
}

/// Packages left from the previous snapshot that primary no longer lists.
async fn count_kept(staged: &Staged, listed: &HashSet<TreePath>) -> Result<u64, RpmError> {
    let paths = all_paths(staged, "").await?;
    Ok(paths
        .iter()
        .filter(|p| p.as_str().ends_with(".rpm") && !listed.contains(*p))
        .count() as u64)
}

/// Puts one upstream file into the staged snapshot, verified against its
/// checksum and size; `Ok(false)` when the store already held its bytes.
#[allow(clippy::too_many_arguments)]
async fn copy(
    staged: &Staged,
    source: &Source,
    path: &TreePath,
    checksum: &Checksum,
    size: Option<u64>,
    modified_at: i64,
    what: String,
    counting: &Counting<'_>,
) -> Result<bool, RpmError> {
    let what = what.as_str();
    let digest = checksum.as_digest();
    if let Some(digest) = &digest {
        let reused = staged
            .put_existing(path, digest, modified_at)
            .await
            .map_err(|e| store_error(what, e))?;
        if reused {
            return Ok(false);
        }
    }
    let body = source.open(path.as_str()).await?;
    let state = Arc::new(Mutex::new(Check {
        hasher: checksum.verifier(),
        seen: 0,
    }));
    let stored = staged
        .put_stream(
            path,
            verifying(body, state.clone(), size),
            digest.as_ref(),
            modified_at,
        )
        .await;
    let (got, seen) = {
        let mut state = state.lock().expect("not poisoned");
        let hasher = std::mem::replace(&mut state.hasher, checksum.verifier());
        (hasher.finish(), state.seen)
    };
    counting.bytes.fetch_add(seen, Ordering::Relaxed);
    counting.inner.fetched(seen);
    if stored.is_ok() && seen == 0 && digest.is_some() {
        // Another writer stored the same digest meanwhile; the store matched it.
        return Ok(false);
    }
    if let Some(size) = size {
        if seen != size {
            return Err(RpmError::Verification(format!(
                "{what}: upstream sent {}{seen} bytes but its metadata says {size}; refusing {}",
                if seen > size { "at least " } else { "" },
                source.describe(path.as_str())
            )));
        }
    }
    if &got != checksum {
        return Err(RpmError::Verification(format!(
            "{what}: checksum mismatch: upstream's metadata says {checksum}, the file has {got}; refusing {}",
            source.describe(path.as_str())
        )));
    }
    stored.map_err(|e| store_error(what, e))?;
    Ok(true)
}

struct Counting<'a> {
    inner: &'a dyn MirrorObserver,
    bytes: &'a AtomicU64,
}

struct Check {
    hasher: ChecksumHasher,
    seen: u64,
}

/// Hashes and counts the bytes as they pass; more than `size` stops the
/// stream with an error, so an endless upstream cannot fill the store.
fn verifying(body: ByteStream, state: Arc<Mutex<Check>>, size: Option<u64>) -> ByteStream {
    Box::pin(body.map(move |chunk| {
        let chunk = chunk?;
        let mut state = state.lock().expect("not poisoned");
        state.hasher.update(&chunk);
        state.seen += chunk.len() as u64;
        if size.is_some_and(|size| state.seen > size) {
            return Err(std::io::Error::other("more bytes than the metadata says"));
        }
        Ok(chunk)
    }))
}
