//! Mirroring an upstream archive repository into a staged snapshot, then
//! publishing it.
//!
//! The walk goes commit → dirtree → dirmeta/filez and fetches only what the
//! staged snapshot lacks (staged from the published one, so an update fetches
//! only new objects). Every object is verified before it is recorded.
//!
//! **Invariant:** a commit or dirtree is recorded only after everything it
//! reaches is recorded. So an object present in the snapshot means its whole
//! subtree is, which is what lets a run skip a present dirtree without reading
//! it, and what makes a crashed run resumable: its staged snapshot holds only
//! complete subtrees, and the next run goes on from it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{try_join_all, BoxFuture};
use futures_util::{FutureExt, TryStreamExt};
use tokio::sync::{OnceCell, Semaphore};
use wharf_core::{Digest, RepoName, RepositoryKind, TreePath};
use wharf_snapshot::{Base, SnapshotError, Snapshots, Staged};

use crate::extras::{self, CollectionRef, Extras};
use crate::local::LocalMode;
use crate::object::{
    parse_ref_file, validate_ref_name, verify_filez, verify_metadata, Checksum, Commit, DirTree,
    ObjectError, ObjectName, ObjectType,
};
use crate::retention::{Retention, RetentionError};
use crate::signature::SignatureError;
use crate::summary::{Summary, SummaryRef};
use crate::upstream::{Upstream, UpstreamError, UpstreamSettings};

/// What made a mirror run fail.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("{0}")]
    Upstream(#[from] UpstreamError),
    #[error("{0}")]
    Snapshot(#[from] SnapshotError),
    #[error("{what}: {source}")]
    BadObject {
        what: String,
        #[source]
        source: ObjectError,
    },
    #[error("{0}")]
    Refused(String),
    #[error("static deltas: {0}")]
    Delta(#[from] crate::delta::DeltaError),
    /// A commit taken lacks a trusted signature.
    #[error("commit {commit} (ref {ref_name}) refused: {source}")]
    CommitSignature {
        commit: Checksum,
        ref_name: String,
        #[source]
        source: SignatureError,
    },
    /// The upstream summary lacks a trusted signature in `summary.sig`.
    #[error("upstream summary refused: {0}")]
    SummarySignature(#[source] SignatureError),
    /// Signing Wharf's own summary failed.
    #[error("signing the summary: {0}")]
    Signing(#[from] wharf_sign::SignError),
    #[error("retention: {0}")]
    Retention(#[from] RetentionError),
    #[error("cancelled")]
    Cancelled,
}

/// Which refs a run takes.
#[derive(Debug, Clone, PartialEq)]
pub enum RefSelection {
    /// Every ref upstream lists; the upstream summary and its signature are copied as they are.
    All,
    /// Names or glob patterns (`*` any run of characters, `?` one).
    Patterns(Vec<String>),
}

impl RefSelection {
    fn is_all(&self) -> bool {
        match self {
            RefSelection::All => true,
            RefSelection::Patterns(p) => p.iter().any(|p| p == "*"),
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            RefSelection::All => true,
            RefSelection::Patterns(p) => p.iter().any(|p| glob(p.as_bytes(), name.as_bytes())),
        }
    }
}

pub(crate) fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

/// One mirror run's settings, lowered from `[[ostree.remotes]]` (or the import command).
#[derive(Debug, Clone)]
pub struct MirrorPlan {
    /// The remote's name (or `import`), for lines and the snapshot's note.
    pub remote: String,
    /// The local repository filled.
    pub repository: RepoName,
    pub upstream: UpstreamSettings,
    pub refs: RefSelection,
    /// Parent commits taken per ref: 0 the ref's commit only, -1 all.
    pub depth: i64,
    /// Objects fetched at once.
    pub concurrency: usize,
    /// Keys a commit (and a summary used) must be signed by; `None`: signatures are not checked.
    pub trust: Option<Arc<wharf_sign::Keyring>>,
    /// Wharf's keys, which sign a summary Wharf writes itself; `None`: it stays unsigned.
    pub signer: Option<Arc<wharf_sign::SigningKeys>>,
    /// History kept per ref: the walk fetches no commit it would cut, and
    /// the staged snapshot loses the objects only cut commits reach.
    pub retention: Retention,
}

/// Progress reports, in the style of `wharf sync`'s observer.
pub trait MirrorObserver: Send + Sync {
    /// Refs chosen for this run.
    fn refs_selected(&self, _n: u64) {}
    /// Objects stored since the last call, and bytes transferred.
    fn fetched(&self, _metadata: u64, _content: u64, _bytes: u64) {}
    /// A line worth printing (a ref taken, a problem).
    fn line(&self, _line: &str) {}
    /// One of the selected refs is complete (all it reaches is stored).
    fn ref_done(&self) {}
    /// Whether to stop.
    fn cancelled(&self) -> bool {
        false
    }
}

/// The result of one run.
#[derive(Debug, Clone, Default)]
pub struct MirrorSummary {
    pub remote: String,
    pub metadata_fetched: u64,
    pub content_fetched: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    /// The snapshot number published, if one was.
    pub published: Option<i64>,
    pub failure: Option<String>,
    pub cancelled: bool,
}

impl MirrorSummary {
    /// "N metadata, M content objects fetched; X transferred in T", what
    /// `wharf sync` prints and the job keeps.
    pub fn line(&self) -> String {
        let mut line = format!(
            "{}: {} metadata, {} content objects fetched; {} transferred in {:.1}s",
            self.remote,
            self.metadata_fetched,
            self.content_fetched,
            human_bytes(self.bytes),
            self.elapsed.as_secs_f64()
        );
        match (&self.failure, self.published) {
            (Some(f), _) => line.push_str(&format!("; failed, nothing published: {f}")),
            (None, Some(n)) => line.push_str(&format!("; snapshot {n} published")),
            (None, None) if self.cancelled => line.push_str("; cancelled, nothing published"),
            (None, None) => line.push_str("; up to date"),
        }
        line
    }
}

/// `1.5 MiB` style sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Runs one mirror: never panics, reports failure in the summary.
pub async fn run_mirror(
    snapshots: &Snapshots,
    plan: &MirrorPlan,
    observer: &dyn MirrorObserver,
) -> MirrorSummary {
    let started = Instant::now();
    let counters = Counters::default();
    let outcome = mirror(snapshots, plan, observer, &counters).await;
    let mut summary = MirrorSummary {
        remote: plan.remote.clone(),
        metadata_fetched: counters.metadata.load(Ordering::Relaxed),
        content_fetched: counters.content.load(Ordering::Relaxed),
        bytes: counters.bytes.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        ..MirrorSummary::default()
    };
    match outcome {
        Ok(published) => summary.published = published,
        Err(MirrorError::Cancelled) => summary.cancelled = true,
        Err(e) => summary.failure = Some(e.to_string()),
    }
    summary
}

#[derive(Default)]
struct Counters {
    metadata: AtomicU64,
    content: AtomicU64,
    bytes: AtomicU64,
}

fn tree_path(s: &str) -> Result<TreePath, MirrorError> {
    TreePath::new(s).map_err(|e| MirrorError::Refused(format!("{s:?} is not a valid path: {e}")))
}

fn bad(what: impl Into<String>) -> impl FnOnce(ObjectError) -> MirrorError {
    let what = what.into();
    move |source| MirrorError::BadObject { what, source }
}

const CONFIG: &str = "[core]\nrepo_version=1\nmode=archive-z2\n";

async fn mirror(
    snapshots: &Snapshots,
    plan: &MirrorPlan,
    observer: &dyn MirrorObserver,
    counters: &Counters,
) -> Result<Option<i64>, MirrorError> {
    let upstream = Upstream::new(&plan.upstream)?;
    // Read before `fetch` below: the mode it names decides how a local upstream is read.
    let config = upstream.get("config").await?.ok_or_else(|| {
        MirrorError::Refused(format!(
            "{}: no config file: not an OSTree repository",
            upstream.describe()
        ))
    })?;
    counters
        .bytes
        .fetch_add(config.len() as u64, Ordering::Relaxed);
    let mode = repo_mode(&config);
    let local_mode = mode.as_deref().and_then(LocalMode::from_config_mode);
    let upstream = match (local_mode, upstream.list_local_refs().is_some()) {
        (Some(LocalMode::Archive), _) => upstream,
        // A local repository in a bare mode: its content objects are read as archive ones.
        (Some(m), true) => upstream.with_local_mode(m),
        _ => {
            return Err(MirrorError::Refused(format!(
                "{}: mode={} cannot be read (a remote must be an archive repository; \
                 a local path may also be bare, bare-user or bare-user-only)",
                upstream.describe(),
                mode.unwrap_or_else(|| "(none)".into())
            )))
        }
    };
    let fetch = |path: &'static str| {
        let upstream = upstream.clone();
        async move {
            let got = upstream.get(path).await?;
            if let Some(b) = &got {
                counters.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
            }
            Ok::<_, MirrorError>(got)
        }
    };

    // The refs upstream has: from its summary, else (a local repository) its refs/heads.
    let upstream_summary = fetch("summary").await?;
    let upstream_sig = match &upstream_summary {
        Some(_) => fetch("summary.sig").await?,
        None => None,
    };
    let mut available: BTreeMap<String, Checksum> = BTreeMap::new();
    let mut summary_refs: Option<BTreeMap<String, Checksum>> = None;
    let local = upstream.list_local_refs();
    if let (Some(trust), Some(bytes), None) = (&plan.trust, &upstream_summary, &local) {
        // The summary says which commit each ref is at, so it is trusted
        // only signed (a local repository's refs come from refs/heads instead).
        let who = crate::signature::verify(trust, bytes, upstream_sig.as_deref())
            .map_err(MirrorError::SummarySignature)?;
        observer.line(&format!("{}: summary signed by {who}", plan.remote));
    }
    if let Some(bytes) = &upstream_summary {
        let summary = Summary::parse(bytes).map_err(bad("upstream summary"))?;
        summary_refs = Some(
            summary
                .refs
                .into_iter()
                .map(|r| (r.name, r.checksum))
                .collect(),
        );
    }
    if let Some(local) = local {
        // A local repository's refs are the truth; its summary may be stale.
        for (name, _) in local {
            if !validate_ref_name(&name) {
                return Err(MirrorError::Refused(format!(
                    "upstream has a ref named {name:?}, which is not a valid ref name; nothing taken"
                )));
            }
            let bytes = upstream
                .get(&format!("refs/heads/{name}"))
                .await?
                .unwrap_or_default();
            available.insert(
                name.clone(),
                parse_ref_file(&bytes).map_err(bad(format!("ref {name}")))?,
            );
        }
    } else if let Some(refs) = &summary_refs {
        available = refs.clone();
    } else if let RefSelection::Patterns(patterns) = &plan.refs {
        for name in patterns {
            if name.contains(['*', '?']) {
                return Err(MirrorError::Refused(format!(
                    "{}: has no summary, so ref patterns cannot be listed; name the refs",
                    upstream.describe()
                )));
            }
            if !validate_ref_name(name) {
                return Err(MirrorError::Refused(format!(
                    "{name:?} is not a valid ref name"
                )));
            }
            if let Some(bytes) = upstream.get(&format!("refs/heads/{name}")).await? {
                available.insert(
                    name.clone(),
                    parse_ref_file(&bytes).map_err(bad(format!("ref {name}")))?,
                );
            }
        }
    } else {
        return Err(MirrorError::Refused(format!(
            "{}: has no summary to list its refs; name them with refs = [...]",
            upstream.describe()
        )));
    }
    if let Some(bad) = available.keys().find(|n| !validate_ref_name(n)) {
        return Err(MirrorError::Refused(format!(
            "upstream lists a ref named {bad:?}, which is not a valid ref name; nothing taken"
        )));
    }
    let selected: BTreeMap<String, Checksum> = available
        .iter()
        .filter(|(n, _)| plan.refs.matches(n))
        .map(|(n, c)| (n.clone(), *c))
        .collect();
    if let RefSelection::Patterns(patterns) = &plan.refs {
        for p in patterns {
            if !p.contains(['*', '?']) && !selected.contains_key(p) {
                return Err(MirrorError::Refused(format!("upstream has no ref {p:?}")));
            }
        }
    }
    if selected.is_empty() {
        return Err(MirrorError::Refused(
            "no upstream ref matches the refs asked for".into(),
        ));
    }
    observer.refs_selected(selected.len() as u64);
    // The upstream summary (and its signature) is served as it is only when it lists exactly what is taken.
    let copy_summary = plan.refs.is_all() && summary_refs.as_ref() == Some(&selected);

    // Nothing changed since what is published: publish nothing.
    if let Some(published) = snapshots.published(&plan.repository).await? {
        let meta = snapshots.meta();
        let mut same = true;
        for (name, checksum) in &selected {
            let entry = meta
                .snapshot_entry(&published.id, &tree_path(&format!("refs/heads/{name}"))?)
                .await
                .map_err(SnapshotError::from)?;
            let want = Digest::sha256_of(format!("{checksum}\n").as_bytes());
            if entry.map(|e| e.blob) != Some(want) {
                same = false;
                break;
            }
        }
        if same && copy_summary {
            let entry = meta
                .snapshot_entry(&published.id, &tree_path("summary")?)
                .await
                .map_err(SnapshotError::from)?;
            let want = upstream_summary.as_deref().map(Digest::sha256_of);
            same = entry.map(|e| e.blob) == want;
        }
        if same && !copy_summary && plan.signer.is_some() {
            // A summary published before Wharf signed its own gets signed now.
            same = meta
                .snapshot_entry(&published.id, &tree_path("summary.sig")?)
                .await
                .map_err(SnapshotError::from)?
                .is_some();
        }
        if same {
            let (refs_now, _) = published_refs(snapshots, &published.id).await?;
            same = refs_now == selected.keys().cloned().collect::<Vec<_>>();
        }
        if same && !plan.retention.is_empty() {
            // Nothing new upstream, but commits may have aged out since.
            let now = unix_now();
            same = crate::retention::plan(snapshots, &published.id, &plan.retention, now)
                .await?
                .is_empty();
        }
        if same {
            return Ok(None);
        }
    }

    let note = format!("ostree-sync:{}", plan.remote);
    let staged = match snapshots.latest_staged(&plan.repository).await? {
        Some(s) if s.record().note == note => {
            observer.line(&format!(
                "{}: resuming staged snapshot {}",
                plan.remote,
                s.record().number
            ));
            s
        }
        _ => {
            snapshots
                .stage(
                    &plan.repository,
                    RepositoryKind::Ostree,
                    Base::Published,
                    &note,
                )
                .await?
        }
    };
    let staged_objects = object_paths(&staged).await?;
    let walker = Walker {
        staged: staged.clone(),
        staged_objects,
        snapshots: snapshots.clone(),
        upstream: upstream.clone(),
        permits: Semaphore::new(plan.concurrency.max(1)),
        cells: Mutex::new(HashMap::new()),
        counters,
        observer,
        commits: Mutex::new(HashMap::new()),
        now: unix_now(),
        trust: plan.trust.clone(),
        retention: plan.retention.clone(),
    };
    for (name, checksum) in &selected {
        if observer.cancelled() {
            return Err(MirrorError::Cancelled);
        }
        walker.commit(name, *checksum, plan.depth, 0, true).await?;
        observer.ref_done();
        observer.line(&format!("{}: {name} → {checksum}", plan.remote));
    }
    let collection_refs = match (copy_summary, &upstream_summary) {
        (true, Some(bytes)) => walk_collection_refs(&walker, bytes, plan).await?,
        _ => Vec::new(),
    };

    // Every object is stored: now the files that point at them.
    let now = walker.now;
    staged
        .put_bytes(
            &tree_path("config")?,
            Bytes::from_static(CONFIG.as_bytes()),
            None,
            now,
        )
        .await?;
    let (old_refs, old_paths) = published_refs(snapshots, staged.id()).await?;
    let stale: Vec<TreePath> = old_refs
        .iter()
        .zip(old_paths)
        .filter(|(n, _)| !selected.contains_key(*n))
        .map(|(_, p)| p)
        .collect();
    if !stale.is_empty() {
        staged.remove(&stale).await?;
    }
    for (name, checksum) in &selected {
        staged
            .put_bytes(
                &tree_path(&format!("refs/heads/{name}"))?,
                Bytes::from(format!("{checksum}\n")),
                None,
                now,
            )
            .await?;
    }
    let summary_path = tree_path("summary")?;
    let sig_path = tree_path("summary.sig")?;
    if copy_summary {
        let bytes = upstream_summary.clone().expect("copy_summary needs it");
        copy_extras(
            &upstream,
            &staged,
            &bytes,
            &selected,
            &collection_refs,
            counters,
            now,
        )
        .await?;
        staged.put_bytes(&summary_path, bytes, None, now).await?;
        match upstream_sig {
            Some(sig) => {
                staged.put_bytes(&sig_path, sig, None, now).await?;
            }
            None => {
                staged.remove(std::slice::from_ref(&sig_path)).await?;
            }
        }
    } else {
        let commits = walker.commits.lock().expect("commits lock").clone();
        let mut summary = own_summary(&selected, &commits, now);
        // Upstream's deltas and flatpak index name upstream's summary, not
        // this one: they go, and Wharf's own deltas to the refs' commits are listed.
        let listing = crate::delta::carry(snapshots, &staged, &selected, now).await?;
        crate::delta::list_in(&mut summary, &listing);
        let summary = summary.encode();
        // An upstream signature does not sign this summary; Wharf's keys do.
        let signature = plan
            .signer
            .as_deref()
            .map(|keys| crate::signature::sign(keys, &summary))
            .transpose()?;
        crate::summary::put_own(&staged, summary, signature, now).await?;
    }
    if !plan.retention.is_empty() {
        let pruned =
            crate::retention::prune_staged(snapshots, &staged, &plan.retention, now).await?;
        if !pruned.is_empty() {
            observer.line(&format!(
                "{}: retention cut {} commits: {} objects ({}) leave the snapshot",
                plan.remote,
                pruned.cut.len(),
                pruned.removed.len(),
                human_bytes(pruned.removed_bytes)
            ));
        }
    }
    let number = staged.record().number;
    drop(walker);
    staged.publish().await?;
    Ok(Some(number))
}

/// Walks the commits of the other collections' refs an upstream summary
/// lists (`refs/mirrors/…`), as deep as the run's refs.
async fn walk_collection_refs(
    walker: &Walker<'_>,
    summary: &[u8],
    plan: &MirrorPlan,
) -> Result<Vec<CollectionRef>, MirrorError> {
    let summary = Summary::parse(summary).map_err(bad("upstream summary"))?;
    let refs = extras::collection_refs(&summary)?;
    for r in &refs {
        if walker.observer.cancelled() {
            return Err(MirrorError::Cancelled);
        }
        walker
            .commit(&r.name, r.checksum, plan.depth, 0, true)
            .await?;
        walker.observer.line(&format!(
            "{}: ({}, {}) → {}",
            plan.remote, r.collection, r.name, r.checksum
        ));
    }
    Ok(refs)
}

/// Static deltas, delta indexes, flatpak's summary index and the collection
/// refs, copied beside the upstream summary they belong to.
async fn copy_extras(
    upstream: &Upstream,
    staged: &Staged,
    summary: &[u8],
    selected: &BTreeMap<String, Checksum>,
    collection_refs: &[CollectionRef],
    counters: &Counters,
    now: i64,
) -> Result<(), MirrorError> {
    let summary = Summary::parse(summary).map_err(bad("upstream summary"))?;
    let mut commits: BTreeSet<Checksum> = selected.values().copied().collect();
    commits.extend(collection_refs.iter().map(|r| r.checksum));
    Extras {
        upstream,
        staged,
        bytes: &counters.bytes,
        now,
    }
    .copy(&summary, &commits, collection_refs)
    .await?;
    Ok(())
}

/// The refs under `refs/heads/` of snapshot `id`, and their paths.
async fn published_refs(
    snapshots: &Snapshots,
    id: &wharf_meta::SnapshotId,
) -> Result<(Vec<String>, Vec<TreePath>), MirrorError> {
    let heads = tree_path("refs/heads")?;
    let mut names = Vec::new();
    let mut paths = Vec::new();
    let mut pages = std::pin::pin!(snapshots.entry_pages(id, Some(&heads), 1000));
    while let Some(page) = pages.try_next().await? {
        for e in page {
            names.push(e.path.as_str()["refs/heads/".len()..].to_owned());
            paths.push(e.path);
        }
    }
    Ok((names, paths))
}

/// A summary of the refs taken, as `ostree summary -u` writes one.
fn own_summary(
    refs: &BTreeMap<String, Checksum>,
    commits: &HashMap<Checksum, (u64, u64)>,
    now: i64,
) -> Summary {
    let refs = refs
        .iter()
        .map(|(name, checksum)| {
            let (size, timestamp) = commits.get(checksum).copied().unwrap_or_default();
            SummaryRef::of_commit(name.clone(), *checksum, size, timestamp)
        })
        .collect();
    Summary::written_by_wharf(refs, now)
}

/// `mode=` in the `[core]` group of a repository's config.
fn repo_mode(config: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(config).ok()?;
    let mut in_core = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_core = line == "[core]";
        } else if in_core {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == "mode" {
                    return Some(v.trim().to_owned());
                }
            }
        }
    }
    None
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The paths under `objects/` of a staged snapshot.
async fn object_paths(staged: &Staged) -> Result<HashSet<String>, MirrorError> {
    let objects = tree_path("objects")?;
    let mut paths = HashSet::new();
    let mut pages = std::pin::pin!(staged.entry_pages(Some(&objects), 10_000));
    while let Some(page) = pages.try_next().await? {
        paths.extend(page.into_iter().map(|e| e.path.as_str().to_owned()));
    }
    Ok(paths)
}

/// Objects up to this size are verified on the walking task: a hop to a
/// blocking thread costs more than inflating them.
const INLINE_VERIFY_BYTES: usize = 64 * 1024;

/// One run's walk over the object graph.
struct Walker<'a> {
    staged: Staged,
    /// The objects the staged snapshot held when the walk began, read once
    /// (a query per object was a large share of a mirror's time); what the
    /// walk stores itself is tracked by `cells`.
    staged_objects: HashSet<String>,
    snapshots: Snapshots,
    upstream: Upstream,
    permits: Semaphore,
    /// One cell per object in progress, so two dirtrees sharing a file fetch it once.
    cells: Mutex<HashMap<ObjectName, Arc<OnceCell<()>>>>,
    counters: &'a Counters,
    observer: &'a dyn MirrorObserver,
    /// Commit checksum → (object size, timestamp), for a summary of our own.
    commits: Mutex<HashMap<Checksum, (u64, u64)>>,
    now: i64,
    /// Keys every commit taken must be signed by.
    trust: Option<Arc<wharf_sign::Keyring>>,
    retention: Retention,
}

impl Walker<'_> {
    fn cell(&self, name: ObjectName) -> Arc<OnceCell<()>> {
        self.cells
            .lock()
            .expect("cells lock")
            .entry(name)
            .or_default()
            .clone()
    }

    async fn present(
        &self,
        name: &ObjectName,
    ) -> Result<Option<wharf_meta::SnapshotEntry>, MirrorError> {
        Ok(self.staged.entry(&tree_path(&name.path())?).await?)
    }

    /// Whether the staged snapshot held `name` when the walk began.
    fn staged_before(&self, name: &ObjectName) -> bool {
        self.staged_objects.contains(&name.path())
    }

    /// Fetches an object's bytes from upstream, `concurrency` at a time.
    async fn fetch(&self, name: &ObjectName, required: bool) -> Result<Option<Bytes>, MirrorError> {
        if self.observer.cancelled() {
            return Err(MirrorError::Cancelled);
        }
        let _permit = self.permits.acquire().await.expect("never closed");
        let got = self.upstream.get(&name.path()).await?;
        match got {
            Some(b) => {
                self.counters
                    .bytes
                    .fetch_add(b.len() as u64, Ordering::Relaxed);
                Ok(Some(b))
            }
            None if required => Err(MirrorError::Refused(format!(
                "upstream lacks {name}, which the refs reach"
            ))),
            None => Ok(None),
        }
    }

    async fn store(&self, name: &ObjectName, bytes: Bytes) -> Result<(), MirrorError> {
        // A metadata object's checksum is its blob digest: the store checks it once more.
        let expected = matches!(
            name.kind,
            ObjectType::Commit | ObjectType::DirTree | ObjectType::DirMeta
        )
        .then(|| sha256_digest(&name.checksum));
        let len = bytes.len();
        self.staged
            .put_bytes(
                &tree_path(&name.path())?,
                bytes,
                expected.as_ref(),
                self.now,
            )
            .await?;
        if name.kind.is_metadata() {
            self.counters.metadata.fetch_add(1, Ordering::Relaxed);
            self.observer.fetched(1, 0, len as u64);
        } else {
            self.counters.content.fetch_add(1, Ordering::Relaxed);
            self.observer.fetched(0, 1, len as u64);
        }
        Ok(())
    }

    /// A leaf object (dirmeta or content): fetched, verified and stored unless present.
    async fn leaf(&self, name: ObjectName) -> Result<(), MirrorError> {
        let cell = self.cell(name);
        cell.get_or_try_init(|| async {
            if self.staged_before(&name) {
                return Ok(());
            }
            if name.kind == ObjectType::DirMeta {
                // A dirmeta's blob digest is its checksum: reuse a stored blob.
                let path = tree_path(&name.path())?;
                if self
                    .staged
                    .put_existing(&path, &sha256_digest(&name.checksum), self.now)
                    .await?
                {
                    return Ok(());
                }
            }
            let bytes = self.fetch(&name, true).await?.expect("required");
            let verdict = if bytes.len() <= INLINE_VERIFY_BYTES {
                verify_metadata(&name, &bytes)
            } else {
                let checked = bytes.clone();
                let what = name.to_string();
                tokio::task::spawn_blocking(move || verify_metadata(&name, &checked))
                    .await
                    .map_err(|e| MirrorError::Refused(format!("verifying {what}: {e}")))?
            };
            verdict.map_err(bad(format!("upstream object {name}")))?;
            self.store(&name, bytes).await
        })
        .await
        .map(|_| ())
    }

    /// A dirtree: its children first, then itself.
    fn dirtree(&self, checksum: Checksum) -> BoxFuture<'_, Result<(), MirrorError>> {
        async move {
            let name = ObjectName::new(checksum, ObjectType::DirTree);
            let cell = self.cell(name);
            cell.get_or_try_init(|| async {
                if self.staged_before(&name) {
                    return Ok(());
                }
                let bytes = self.fetch(&name, true).await?.expect("required");
                verify_metadata(&name, &bytes).map_err(bad(format!("upstream object {name}")))?;
                let tree =
                    DirTree::parse(&bytes).map_err(bad(format!("upstream object {name}")))?;
                let files = tree
                    .files
                    .iter()
                    .map(|(_, c)| self.leaf(ObjectName::new(*c, ObjectType::File)).boxed());
                let dirs = tree.dirs.iter().map(|(_, t, m)| {
                    async move {
                        self.leaf(ObjectName::new(*m, ObjectType::DirMeta)).await?;
                        self.dirtree(*t).await
                    }
                    .boxed()
                });
                try_join_all(files.chain(dirs)).await?;
                self.store(&name, bytes).await
            })
            .await
            .map(|_| ())
        }
        .boxed()
    }

    /// The bytes of a stored object of the staged snapshot.
    async fn read_stored(
        &self,
        name: &ObjectName,
        entry: &wharf_meta::SnapshotEntry,
    ) -> Result<Bytes, MirrorError> {
        let stream = self.snapshots.open(entry, None).await?;
        let chunks: Vec<Bytes> = stream
            .try_collect()
            .await
            .map_err(|e| MirrorError::Refused(format!("reading stored {name}: {e}")))?;
        Ok(Bytes::from(chunks.concat()))
    }

    /// With trusted keys, the commit must carry a signature by one of them
    /// in its detached metadata; checked before anything it reaches is fetched.
    fn check_signature(
        &self,
        ref_name: &str,
        checksum: Checksum,
        commit: &[u8],
        detached: Option<&[u8]>,
    ) -> Result<(), MirrorError> {
        let Some(trust) = &self.trust else {
            return Ok(());
        };
        let who = crate::signature::verify(trust, commit, detached).map_err(|source| {
            MirrorError::CommitSignature {
                commit: checksum,
                ref_name: ref_name.to_owned(),
                source,
            }
        })?;
        tracing::debug!(%checksum, ref_name, "commit signed by {who}");
        Ok(())
    }

    /// A commit with its tree, then `depth` of its parents (-1: all), as
    /// far as the ref's retention keeps them; `index` steps behind the ref.
    fn commit<'b>(
        &'b self,
        ref_name: &'b str,
        checksum: Checksum,
        depth: i64,
        index: u64,
        required: bool,
    ) -> BoxFuture<'b, Result<(), MirrorError>> {
        async move {
            let rule = self.retention.rule_for(ref_name);
            let cut =
                |commit: &Commit| rule.is_some_and(|r| !r.keeps(index, commit.timestamp, self.now));
            let name = ObjectName::new(checksum, ObjectType::Commit);
            let meta_name = ObjectName::new(checksum, ObjectType::CommitMeta);
            let bytes = match self.present(&name).await? {
                Some(entry) => {
                    let bytes = self.read_stored(&name, &entry).await?;
                    let commit =
                        Commit::parse(&bytes).map_err(bad(format!("stored commit {name}")))?;
                    if cut(&commit) {
                        // Retention ends the history here; pruning removes it.
                        return Ok(());
                    }
                    if self.trust.is_some() {
                        // Stored before keys were configured, perhaps: checked all the same.
                        let detached = match self.present(&meta_name).await? {
                            Some(e) => Some(self.read_stored(&meta_name, &e).await?),
                            None => None,
                        };
                        self.check_signature(ref_name, checksum, &bytes, detached.as_deref())?;
                    }
                    bytes
                }
                None => {
                    let Some(bytes) = self.fetch(&name, required).await? else {
                        // History beyond what upstream keeps: the walk stops here.
                        return Ok(());
                    };
                    verify_metadata(&name, &bytes)
                        .map_err(bad(format!("upstream commit {name}")))?;
                    let commit =
                        Commit::parse(&bytes).map_err(bad(format!("upstream commit {name}")))?;
                    if cut(&commit) {
                        // Retention would cut it: nothing of it is fetched.
                        return Ok(());
                    }
                    let detached = self.fetch(&meta_name, false).await?;
                    if let Some(detached) = &detached {
                        verify_metadata(&meta_name, detached)
                            .map_err(bad(format!("upstream {meta_name}")))?;
                    }
                    self.check_signature(ref_name, checksum, &bytes, detached.as_deref())?;
                    self.leaf(ObjectName::new(commit.root_meta, ObjectType::DirMeta))
                        .await?;
                    self.dirtree(commit.root_tree).await?;
                    if let Some(detached) = detached {
                        self.store(&meta_name, detached).await?;
                    }
                    self.store(&name, bytes.clone()).await?;
                    bytes
                }
            };
            let commit = Commit::parse(&bytes).map_err(bad(format!("stored commit {name}")))?;
            self.commits
                .lock()
                .expect("commits lock")
                .insert(checksum, (bytes.len() as u64, commit.timestamp));
            match commit.parent {
                Some(parent) if depth != 0 => {
                    self.commit(ref_name, parent, depth - 1, index + 1, false)
                        .await
                }
                _ => Ok(()),
            }
        }
        .boxed()
    }
}

fn sha256_digest(c: &Checksum) -> Digest {
    Digest::parse(&format!("sha256:{c}")).expect("64 hex digits")
}

/// Verifies a `.filez` (exposed for callers holding one in memory).
pub fn verify_content(checksum: &Checksum, bytes: &[u8]) -> Result<(), ObjectError> {
    verify_filez(checksum, bytes).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_patterns() {
        let p = RefSelection::Patterns(vec!["os/*/stable".into(), "main".into()]);
        assert!(p.matches("os/x86_64/stable"));
        assert!(p.matches("main"));
        assert!(!p.matches("mainline"));
        assert!(!p.matches("os/x86_64/devel"));
        assert!(RefSelection::Patterns(vec!["*".into()]).is_all());
    }

    #[test]
    fn config_mode() {
        assert_eq!(
            repo_mode(b"[core]\nrepo_version=1\nmode=archive-z2\n").as_deref(),
            Some("archive-z2")
        );
        assert_eq!(
            repo_mode(b"[remote \"x\"]\nmode=bare\n[core]\nmode = bare-user\n").as_deref(),
            Some("bare-user")
        );
        assert_eq!(repo_mode(b"junk"), None);
    }
}
