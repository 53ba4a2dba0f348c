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
//! of the previous snapshot that upstream dropped stay downloadable, and stay
//! in the metadata). With keys configured, every package's header signature
//! must verify against them too, whether fetched or already stored.
//!
//! A filtered remote ([`PackageFilter`]) or an additive one does not serve
//! upstream's package lists: only primary is fetched (to choose and verify
//! packages), then Wharf writes primary, filelists and other for the packages
//! the snapshot holds ([`crate::regenerate`]), keeps comps, updateinfo and
//! modules as upstream wrote them, and signs its own repomd.xml. Such a run
//! is "unchanged" when upstream's repomd.xml (and `.asc`) and the remote's
//! settings are those the published snapshot was made from, which its note
//! records.

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
use crate::filter::{Newest, PackageFilter};
use crate::location::Location;
use crate::package::{check_signature, stored_header};
use crate::primary::{for_each_package, PackageEntry};
use crate::regenerate::{kept_kind, write_metadata, KeptRecord};
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
    /// Keys `repodata/repomd.xml.asc` and every package's header signature
    /// must verify against; `None`: neither is checked.
    pub trust: Option<Arc<wharf_sign::Keyring>>,
    /// Which upstream packages are kept; everything by default.
    pub filter: PackageFilter,
    /// Wharf's keys, which sign the repomd.xml Wharf writes for a filtered or
    /// additive mirror; `None`: it stays unsigned.
    pub signer: Option<Arc<wharf_sign::SigningKeys>>,
}

impl MirrorPlan {
    /// Whether Wharf writes this mirror's metadata itself (a filter, or the
    /// additive policy) instead of serving upstream's byte for byte.
    pub fn regenerates(&self) -> bool {
        self.policy == Policy::Additive || !self.filter.is_everything()
    }

    /// What a published snapshot's note records of the run that made it, so a
    /// later run can tell that neither upstream nor the settings changed.
    fn marker(&self, repomd: &[u8], asc: Option<&Bytes>) -> String {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        for part in [
            repomd,
            asc.map_or(&b""[..], |a| a.as_ref()),
            self.filter.fingerprint().as_bytes(),
            format!("{:?}", self.policy).as_bytes(),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        format!("[upstream {}]", hex::encode(h.finalize()))
    }
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
    /// Packages of upstream's primary the filter left out.
    pub filtered_out: u64,
    /// Wharf wrote the metadata (filtered or additive).
    pub regenerated: bool,
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
        if self.filtered_out > 0 {
            line.push_str(&format!(", {} left out by the filter", self.filtered_out));
        }
        if self.regenerated {
            line.push_str(", metadata written by wharf");
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
    if let Some(trust) = &plan.trust {
        // Before anything else is fetched: an unsigned upstream costs nothing more.
        let asc = asc.as_ref().ok_or_else(|| {
            RpmError::Signature(format!(
                "{}: missing, and gpg_keys are configured for this remote",
                plan.source.describe(REPOMD_ASC)
            ))
        })?;
        trust.verify_openpgp(&repomd_bytes, asc).map_err(|e| {
            RpmError::Signature(format!(
                "{} does not verify {}: {e}",
                plan.source.describe(REPOMD_ASC),
                REPOMD
            ))
        })?;
    }
    let marker = plan.marker(&repomd_bytes, asc.as_ref());
    let same = if plan.regenerates() {
        published_note_has(snapshots, &plan.repository, &marker).await?
    } else {
        unchanged(snapshots, &plan.repository, &repomd_bytes, asc.as_ref()).await?
    };
    if same {
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
            &format!("rpm-sync {} {marker}", plan.remote),
        )
        .await
        .map_err(|e| store_error("stage a snapshot", e))?;
    let outcome = fill(
        snapshots,
        &staged,
        plan,
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

/// Whether the published snapshot was made from `marker` (see [`MirrorPlan::marker`]).
async fn published_note_has(
    snapshots: &Snapshots,
    repository: &RepoName,
    marker: &str,
) -> Result<bool, RpmError> {
    let published = snapshots
        .published(repository)
        .await
        .map_err(|e| store_error("read the published snapshot", e))?;
    Ok(published.is_some_and(|p| p.note.ends_with(marker)))
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
        blobs: snapshots.blobs(),
    };
    let concurrency = plan.concurrency.max(1);
    let regenerate = plan.regenerates();
    if plan.policy == Policy::Additive {
        // The previous metadata files are not upstream's any more; only packages are kept.
        remove_prefix(staged, "repodata/").await?;
    }
    // Built as a list first: a closure over borrowed records here makes the
    // job handler's future fail the higher-ranked `Send` check.
    let mut files = Vec::with_capacity(data.len());
    let mut kept = Vec::new();
    for (record, path) in data {
        if regenerate {
            // Only what Wharf keeps, and primary, which chooses the packages.
            if kept_kind(&record.kind) {
                let open = match (&record.open_checksum, record.open_size) {
                    (Some(c), Some(n)) if c.kind() == crate::ChecksumKind::Sha256 => {
                        Some((c.hex().to_string(), n))
                    }
                    _ => None,
                };
                kept.push(KeptRecord {
                    kind: record.kind.clone(),
                    path: path.clone(),
                    open,
                    timestamp: record.timestamp.unwrap_or_else(now),
                });
            } else if record.kind != "primary" {
                continue;
            }
        }
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
    let files_len = files.len() as u64;
    futures_util::stream::iter(files)
        .buffer_unordered(concurrency)
        .try_collect::<Vec<bool>>()
        .await?;
    summary.metadata_files = files_len;
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
    let bridge = |body| tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(body));
    // "Newest N" needs every version of a name before the first is chosen: a
    // first pass over primary, remembering N versions per name.
    let first_pass = match plan.filter.newest {
        Some(_) => Some(bridge(
            snapshots
                .blobs()
                .read(&stored.blob, None)
                .await
                .map_err(|e| store_error("read back primary", e))?,
        )),
        None => None,
    };
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<PackageEntry>(256);
    let reader = bridge(body);
    let filter = plan.filter.clone();
    let parser = tokio::task::spawn_blocking(move || {
        let newest = match first_pass {
            Some(first) => {
                let mut newest = Newest::new(filter.newest.unwrap_or(1));
                for_each_package(
                    std::io::BufReader::with_capacity(64 << 10, compression.decoder(first)?),
                    |entry| {
                        if filter.admits(&entry) {
                            newest.see(&entry);
                        }
                        Ok(())
                    },
                )?;
                Some(newest)
            }
            None => None,
        };
        let decoded = compression.decoder(reader)?;
        for_each_package(
            std::io::BufReader::with_capacity(64 << 10, decoded),
            |entry| {
                if !filter.admits(&entry) || newest.as_ref().is_some_and(|n| !n.keeps(&entry)) {
                    return Ok(());
                }
                sender.blocking_send(entry).map_err(|_| RpmError::Cancelled)
            },
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
                if let Some(trust) = &plan.trust {
                    // Stored bytes too: they may come from a run without keys.
                    let what = format!("{} (package {nevra})", path.as_str());
                    let stored = staged
                        .entry(&path)
                        .await
                        .map_err(|e| store_error(&what, e))?
                        .ok_or_else(|| RpmError::Store(format!("{what} vanished")))?;
                    let (header, head) =
                        stored_header(snapshots.blobs(), &stored.blob, stored.size, &what).await?;
                    check_signature(&header, &head, trust, &what)?;
                }
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
    summary.packages = listed.len() as u64;
    summary.filtered_out = count.saturating_sub(listed.len() as u64);
    summary.reused_packages = reused.load(Ordering::Relaxed);
    summary.fetched_packages = fetched_packages.load(Ordering::Relaxed);
    if plan.policy == Policy::Additive {
        summary.kept_packages = count_kept(staged, &listed).await?;
    }
    if regenerate {
        // Upstream's primary lists what the filter left out; Wharf's replaces it.
        if !kept.iter().any(|k| k.path == primary_path) {
            staged
                .remove(std::slice::from_ref(&primary_path))
                .await
                .map_err(|e| store_error("remove upstream's primary", e))?;
        }
        if observer.cancelled() {
            return Err(RpmError::Cancelled);
        }
        write_metadata(
            snapshots.blobs(),
            staged,
            &kept,
            plan.signer.as_deref(),
            now(),
        )
        .await?;
        summary.regenerated = true;
    } else {
        if let Some(asc) = asc {
            put_small(staged, REPOMD_ASC, asc).await?;
        }
        put_small(staged, REPOMD, repomd_bytes.clone()).await?;
    }
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
        // A look at the blob store first (no database write): a new file then
        // costs no write transaction before its own, which matters when
        // `concurrency` writers queue for SQLite's one write lock.
        let stored = counting
            .blobs
            .stat(digest)
            .await
            .map_err(|e| store_error(what, e))?
            .is_some();
        if stored
            && staged
                .put_existing(path, digest, modified_at)
                .await
                .map_err(|e| store_error(what, e))?
        {
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
    blobs: &'a wharf_blob::BlobStore,
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
