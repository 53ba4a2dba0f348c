//! The pull-through cache: what the `/v2` surface asks when a pull misses
//! locally, and how `?ns=HOST` names a remote's mirrored namespace.
//!
//! A miss under a pull-through remote's prefix, for an upstream repository on
//! the remote's allow-list, is fetched from the upstream and answered at once;
//! the content is stored behind the answer in the order `wharf sync` uses
//! (blobs verified by the store's upload, child manifests by digest, the top
//! manifest with its tag last), through the same public `Registry` API, so a
//! half-fetched image never shows as a local tag.
//!
//! Blobs are single-flight: the first miss starts one upstream GET, whose
//! body goes straight into the store's upload (`Registry::stage_blob_observed`):
//! the bytes are written once, into the staging area that becomes the blob by
//! rename. The newest few MiB of chunks stay in memory as they arrive, and a
//! client keeping up is served from them; one further behind (a late joiner)
//! reads the upload from its own offset (`Registry::read_upload`) and follows
//! it as it grows. So memory stays bounded (the window, a part in the store, a
//! chunk per client) whatever the blob's size, late joiners start from the
//! first byte, and a lone client costs no file read per chunk. A client's stream ends
//! only after the store verified the digest, so no one receives a complete
//! body that was not the blob; a mismatch discards the upload and cuts them
//! all. It does not wait for the blob to be made durable and recorded: the
//! bytes are the blob's once verified, and that commit (an fsync, a rename
//! and a database transaction) would otherwise be on every cold pull's path.
//!
//! Tags are revalidated with a HEAD after the remote's TTL; digests never
//! are. The time of the last validation is kept in the metadata database
//! (`Meta::record_tag_validation`), so a restart keeps every TTL. When the
//! upstream fails or is slower than its timeout, cached content is served
//! (and a warning logged); content never cached gets the error.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{stream, StreamExt, TryStreamExt};
use tokio::sync::watch;
use wharf_blob::ByteStream;
use wharf_core::{Digest, Reference, RepoName, Tag};
use wharf_meta::{Meta, ReferenceKind};
use wharf_oci::{parse_manifest, ManifestContent, OciError, Registry};

use crate::client::{FetchedManifest, UpstreamClient};
use crate::names;
use crate::MirrorError;

/// How deep indexes may nest (as in [`crate::copy`]).
const MAX_DEPTH: u32 = 4;

/// How long a manifest fetched for a client is kept for the requests that
/// follow it (HEAD then GET, the index then its children) if storing it fails.
const PENDING_GRACE: Duration = Duration::from_secs(30);

/// One configured upstream as the pull-through cache and `?ns=` see it.
pub struct ProxyRemote {
    /// The remote's name, for logs.
    pub name: String,
    /// `host[:port]` of its URL, which `?ns=` names.
    pub authority: String,
    /// Local prefix of its mirrored repositories (`""`: none).
    pub prefix: String,
    /// Pull-through settings; `None`: sync only (still a `?ns=` namespace).
    pub pull_through: Option<PullThroughPolicy>,
}

/// How one remote's pull-through behaves.
pub struct PullThroughPolicy {
    /// The upstream client.
    pub client: Arc<UpstreamClient>,
    /// Upstream repository patterns that may be fetched.
    pub repositories: Vec<String>,
    /// How long a tag is served before a HEAD revalidates it.
    pub tag_ttl: Duration,
    /// How long to wait for the upstream's answer.
    pub upstream_timeout: Duration,
    /// Blobs fetched at once while storing one image.
    pub concurrency: usize,
}

/// Why a pull-through answer failed, in terms the `/v2` surface maps.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Neither cached nor on the upstream.
    #[error("{0}")]
    NotFound(String),
    /// Under a remote's prefix, but the allow-list does not name it.
    #[error("{0} is not cached and not on the pull-through allow-list")]
    NotAllowed(String),
    /// The upstream failed or was too slow, and nothing is cached.
    #[error("not cached, and the upstream is unavailable: {0}")]
    Unavailable(String),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] OciError),
}

/// Why `?ns=` could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// No remote has that host.
    #[error("no configured upstream is named by ns={0:?}")]
    UnknownHost(String),
    /// The mirrored name is not a repository name.
    #[error("{0}")]
    InvalidName(String),
}

/// A blob answered from the upstream while it is being stored.
pub struct ProxiedBlob {
    /// Its size, when the upstream announced one.
    pub size: Option<u64>,
    /// Its bytes; the stream fails if the blob turns out not to match.
    pub body: ByteStream,
}

#[derive(Clone)]
enum Phase {
    Connecting,
    Streaming {
        size: Option<u64>,
    },
    /// Every byte is staged and the digest matched; being stored.
    Verified,
    Stored,
    Failed(String),
}

/// One upstream blob GET shared by every client that missed it.
struct Flight {
    /// The store's upload the blob is fetched into, which clients read.
    upload: String,
    /// How many bytes of the upload are written (readable).
    written: AtomicU64,
    /// The newest chunks received from the upstream, so that clients keeping
    /// up are served from memory as the bytes arrive; one that falls behind
    /// reads the upload instead.
    recent: Mutex<RecentChunks>,
    phase: watch::Sender<Phase>,
}

/// Bytes of recent chunks a flight keeps in memory.
const RECENT_BYTES: usize = 4 << 20;

/// A window of a flight's bytes: chunks by their offset, in order.
#[derive(Default)]
struct RecentChunks {
    chunks: std::collections::VecDeque<(u64, bytes::Bytes)>,
    bytes: usize,
    /// The offset after the last chunk.
    end: u64,
}

impl Flight {
    /// Keeps `chunk`, the next bytes from the upstream.
    fn received(&self, chunk: &bytes::Bytes) {
        let mut recent = lock(&self.recent);
        let at = recent.end;
        recent.end += chunk.len() as u64;
        recent.bytes += chunk.len();
        recent.chunks.push_back((at, chunk.clone()));
        while recent.bytes > RECENT_BYTES {
            match recent.chunks.pop_front() {
                Some((_, old)) => recent.bytes -= old.len(),
                None => break,
            }
        }
    }

    /// The kept bytes from `offset` to the end of the chunk holding it.
    fn recent_at(&self, offset: u64) -> Option<bytes::Bytes> {
        let recent = lock(&self.recent);
        let i = recent
            .chunks
            .partition_point(|(at, c)| at + c.len() as u64 <= offset);
        let (at, chunk) = recent.chunks.get(i)?;
        let skip = usize::try_from(offset.checked_sub(*at)?).ok()?;
        (skip < chunk.len()).then(|| chunk.slice(skip..))
    }
}

struct PendingManifest {
    manifest: FetchedManifest,
    since: Instant,
}

/// The pull-through cache and the `?ns=` namespaces of every remote.
pub struct PullThrough {
    registry: Registry,
    meta: Meta,
    remotes: Vec<ProxyRemote>,
    /// When each `(local repo, tag)` was last confirmed against the upstream
    /// (unix seconds): a cache of `mirror_tag_validations`.
    validated: Mutex<HashMap<(String, String), i64>>,
    /// Manifests answered but not yet stored, by `(local repo, digest)`.
    pending: Mutex<HashMap<(String, Digest), PendingManifest>>,
    /// Tags answered but not yet stored: `(local repo, tag)` → digest.
    pending_tags: Mutex<HashMap<(String, String), Digest>>,
    /// Blob GETs in flight, by `(local repo, digest)`.
    flights: Mutex<HashMap<(String, Digest), Arc<Flight>>>,
    /// Upstream blob GETs started (for tests and logs).
    blob_fetches: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PullThrough {
    /// The cache over `registry` for `remotes`, keeping tag validation times
    /// in `meta`.
    pub fn new(registry: Registry, meta: Meta, remotes: Vec<ProxyRemote>) -> Arc<PullThrough> {
        Arc::new(PullThrough {
            registry,
            meta,
            remotes,
            validated: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            pending_tags: Mutex::new(HashMap::new()),
            flights: Mutex::new(HashMap::new()),
            blob_fetches: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Upstream blob GETs started so far.
    pub fn blob_fetches(&self) -> u64 {
        self.blob_fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The local name `?ns=host` gives `name`: the mirrored repository of the
    /// remote whose URL has that host (any Docker Hub name for Docker Hub,
    /// with its `library/` defaulting).
    pub fn namespace(&self, host: &str, name: &RepoName) -> Result<RepoName, NamespaceError> {
        let remote = self
            .remotes
            .iter()
            .find(|r| same_host(&r.authority, host))
            .ok_or_else(|| NamespaceError::UnknownHost(host.to_owned()))?;
        let upstream = names::upstream_repository(&remote.authority, name.as_str());
        let local = names::local_repository(&remote.prefix, &upstream);
        RepoName::parse(&local).map_err(|e| NamespaceError::InvalidName(e.to_string()))
    }

    /// The pull-through remote whose prefix holds `local`, with the upstream
    /// name; the longest prefix wins.
    fn remote_for(&self, local: &RepoName) -> Option<(&ProxyRemote, &PullThroughPolicy, String)> {
        self.remotes
            .iter()
            .filter_map(|r| {
                let policy = r.pull_through.as_ref()?;
                let upstream = if r.prefix.is_empty() {
                    local.as_str()
                } else {
                    local.as_str().strip_prefix(&r.prefix)?.strip_prefix('/')?
                };
                Some((r, policy, upstream.to_owned()))
            })
            .max_by_key(|(r, _, _)| r.prefix.len())
    }

    /// Whether a miss on `local` is the cache's to answer: `None` when no
    /// pull-through remote's prefix holds it; `Some(Err)` when one does but
    /// its allow-list does not name the upstream repository.
    fn covering(
        &self,
        local: &RepoName,
    ) -> Option<Result<(&ProxyRemote, &PullThroughPolicy, String), ProxyError>> {
        let (remote, policy, upstream) = self.remote_for(local)?;
        if policy
            .repositories
            .iter()
            .any(|p| pattern_matches(p, &upstream))
        {
            Some(Ok((remote, policy, upstream)))
        } else {
            Some(Err(ProxyError::NotAllowed(local.to_string())))
        }
    }

    /// Answers a manifest GET/HEAD for a repository under a pull-through
    /// remote's prefix; `None` when `local` is not under one (the caller
    /// answers from the store as usual).
    pub async fn manifest(
        self: &Arc<Self>,
        local: &RepoName,
        reference: &Reference,
    ) -> Option<Result<ManifestContent, ProxyError>> {
        let covering = self.covering(local)?;
        Some(self.manifest_covered(local, reference, covering).await)
    }

    async fn manifest_covered(
        self: &Arc<Self>,
        local: &RepoName,
        reference: &Reference,
        covering: Result<(&ProxyRemote, &PullThroughPolicy, String), ProxyError>,
    ) -> Result<ManifestContent, ProxyError> {
        let cached = match self.registry.get_manifest(local, reference).await {
            Ok(content) => Some(content),
            Err(OciError::ManifestUnknown(_) | OciError::NameUnknown(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let (remote, policy, upstream) = match covering {
            Ok(c) => c,
            // Synced or pushed content is served even off the allow-list;
            // only fetching is refused.
            Err(refusal) => return cached.ok_or(refusal),
        };
        match reference {
            Reference::Digest(digest) => {
                if let Some(content) = cached {
                    return Ok(content);
                }
                if let Some(m) = self.pending_manifest(local, digest) {
                    return Ok(content_of(m));
                }
                let fetched = self
                    .upstream(policy, remote, async {
                        policy
                            .client
                            .get_manifest(&upstream, &digest.to_string(), Some(digest))
                            .await
                    })
                    .await?;
                self.store_behind(remote, policy, &upstream, local, fetched.clone(), None);
                Ok(content_of(fetched))
            }
            Reference::Tag(tag) => {
                self.tag(remote, policy, &upstream, local, tag, cached)
                    .await
            }
        }
    }

    async fn tag(
        self: &Arc<Self>,
        remote: &ProxyRemote,
        policy: &PullThroughPolicy,
        upstream: &str,
        local: &RepoName,
        tag: &Tag,
        cached: Option<ManifestContent>,
    ) -> Result<ManifestContent, ProxyError> {
        let key = (local.to_string(), tag.as_str().to_owned());
        let fresh = cached.is_some() && self.fresh(local, tag, policy.tag_ttl).await;
        if let (Some(content), true) = (&cached, fresh) {
            return Ok(content.clone());
        }
        let pending_digest = lock(&self.pending_tags).get(&key).cloned();
        if let Some(digest) = pending_digest {
            if let Some(m) = self.pending_manifest(local, &digest) {
                return Ok(content_of(m));
            }
        }
        let announced = self
            .upstream(policy, remote, async {
                policy.client.head_manifest(upstream, tag.as_str()).await
            })
            .await;
        let announced = match (announced, cached) {
            (Ok(Some(digest)), Some(content)) if digest == content.digest => {
                self.validated_now(local, tag).await;
                return Ok(content);
            }
            (Ok(announced), _) => announced,
            (Err(e), Some(content)) => {
                tracing::warn!(remote = %remote.name, repo = %local, tag = %tag, error = %e,
                    "upstream unavailable; serving the cached tag");
                // Asked again only after another TTL, so a dead upstream does
                // not cost every pull a time-out.
                self.validated_now(local, tag).await;
                return Ok(content);
            }
            (Err(e), None) => return Err(e),
        };
        let reference = announced
            .as_ref()
            .map_or_else(|| tag.as_str().to_owned(), Digest::to_string);
        let fetched = self
            .upstream(policy, remote, async {
                policy
                    .client
                    .get_manifest(upstream, &reference, announced.as_ref())
                    .await
            })
            .await?;
        lock(&self.pending_tags).insert(key, fetched.digest.clone());
        self.store_behind(
            remote,
            policy,
            upstream,
            local,
            fetched.clone(),
            Some(tag.clone()),
        );
        Ok(content_of(fetched))
    }

    /// Whether `tag` of `local` was confirmed within `ttl`: from memory, else
    /// from the database (after a restart, or confirmed by another replica).
    async fn fresh(&self, local: &RepoName, tag: &Tag, ttl: Duration) -> bool {
        let key = (local.to_string(), tag.as_str().to_owned());
        let remembered = lock(&self.validated).get(&key).copied();
        let at = match remembered {
            Some(at) => Some(at),
            None => match self.meta.tag_validated_at(local, tag).await {
                Ok(at) => {
                    if let Some(at) = at {
                        lock(&self.validated).insert(key, at);
                    }
                    at
                }
                Err(e) => {
                    tracing::warn!(repo = %local, %tag, error = %e,
                        "pull-through: reading the tag's validation time failed");
                    None
                }
            },
        };
        at.is_some_and(|at| {
            let age = unix_now().saturating_sub(at);
            age >= 0 && (age as u64) < ttl.as_secs()
        })
    }

    /// Notes that `tag` of `local` was confirmed now, in memory and in the
    /// database; a failed write only costs a revalidation after a restart.
    async fn validated_now(&self, local: &RepoName, tag: &Tag) {
        let now = unix_now();
        lock(&self.validated).insert((local.to_string(), tag.as_str().to_owned()), now);
        if let Err(e) = self.meta.record_tag_validation(local, tag, now).await {
            tracing::warn!(repo = %local, %tag, error = %e,
                "pull-through: recording the tag's validation time failed");
        }
    }

    fn pending_manifest(&self, local: &RepoName, digest: &Digest) -> Option<FetchedManifest> {
        let mut pending = lock(&self.pending);
        pending.retain(|_, p| p.since.elapsed() < PENDING_GRACE * 10);
        pending
            .get(&(local.to_string(), digest.clone()))
            .map(|p| p.manifest.clone())
    }

    /// An upstream call under the remote's time-out, its failures in the
    /// cache's terms.
    async fn upstream<T>(
        &self,
        policy: &PullThroughPolicy,
        remote: &ProxyRemote,
        call: impl std::future::Future<Output = Result<T, MirrorError>>,
    ) -> Result<T, ProxyError> {
        match tokio::time::timeout(policy.upstream_timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(MirrorError::NotFound(what))) => Err(ProxyError::NotFound(format!(
                "{}: upstream has no {what}",
                remote.name
            ))),
            Ok(Err(MirrorError::Store(e))) => Err(ProxyError::Store(e)),
            Ok(Err(e)) => Err(ProxyError::Unavailable(format!("{}: {e}", remote.name))),
            Err(_) => Err(ProxyError::Unavailable(format!(
                "{}: no answer within {:?}",
                remote.name, policy.upstream_timeout
            ))),
        }
    }

    /// Stores `manifest` (and everything it references) in the background,
    /// keeping it answerable meanwhile; the tag moves last.
    fn store_behind(
        self: &Arc<Self>,
        remote: &ProxyRemote,
        policy: &PullThroughPolicy,
        upstream: &str,
        local: &RepoName,
        manifest: FetchedManifest,
        tag: Option<Tag>,
    ) {
        let key = (local.to_string(), manifest.digest.clone());
        {
            let mut pending = lock(&self.pending);
            if pending.contains_key(&key) && tag.is_none() {
                return; // Already being stored.
            }
            pending.insert(
                key.clone(),
                PendingManifest {
                    manifest: manifest.clone(),
                    since: Instant::now(),
                },
            );
        }
        let this = self.clone();
        let remote_name = remote.name.clone();
        let client = policy.client.clone();
        let concurrency = policy.concurrency;
        let upstream = upstream.to_owned();
        let local = local.clone();
        tokio::spawn(async move {
            let job = Store {
                cache: &this,
                client: &client,
                upstream: &upstream,
                local: &local,
                concurrency,
            };
            let result = job.store(&manifest, tag.as_ref()).await;
            let tag_key = tag
                .as_ref()
                .map(|t| (local.to_string(), t.as_str().to_owned()));
            match result {
                Ok(()) => {
                    if let Some(t) = &tag {
                        this.validated_now(&local, t).await;
                    }
                    lock(&this.pending).remove(&key);
                }
                Err(e) => {
                    // Kept a little for the requests already under way; the
                    // next pull after that fetches again.
                    tracing::warn!(remote = %remote_name, repo = %local, digest = %manifest.digest,
                        error = %e, "pull-through: storing the fetched image failed");
                    tokio::time::sleep(PENDING_GRACE).await;
                    lock(&this.pending).remove(&key);
                }
            }
            if let Some(k) = tag_key {
                let mut tags = lock(&this.pending_tags);
                if tags.get(&k) == Some(&manifest.digest) {
                    tags.remove(&k);
                }
            }
        });
    }

    /// Answers a blob GET/HEAD for a repository under a pull-through remote's
    /// prefix that does not hold the blob; `None` when not under one.
    pub async fn blob(
        self: &Arc<Self>,
        local: &RepoName,
        digest: &Digest,
    ) -> Option<Result<ProxiedBlob, ProxyError>> {
        let covering = self.covering(local)?;
        Some(match covering {
            Err(e) => Err(e),
            Ok((remote, policy, upstream)) => {
                let flight = self.flight(policy, &upstream, local, digest);
                follow(&self.registry, digest, flight, remote, policy).await
            }
        })
    }

    /// The upstream GET of `digest` into `local`, joined or started.
    fn flight(
        self: &Arc<Self>,
        policy: &PullThroughPolicy,
        upstream: &str,
        local: &RepoName,
        digest: &Digest,
    ) -> Arc<Flight> {
        let key = (local.to_string(), digest.clone());
        let mut flights = lock(&self.flights);
        if let Some(f) = flights.get(&key) {
            return f.clone();
        }
        let flight = Arc::new(Flight {
            upload: Registry::new_upload_id(),
            written: AtomicU64::new(0),
            recent: Mutex::default(),
            phase: watch::Sender::new(Phase::Connecting),
        });
        flights.insert(key.clone(), flight.clone());
        drop(flights);
        self.blob_fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let this = self.clone();
        let client = policy.client.clone();
        let timeout = policy.upstream_timeout;
        let upstream = upstream.to_owned();
        let local = local.clone();
        let digest = digest.clone();
        let fetching = flight.clone();
        // Detached from any one client: a client that goes away does not
        // stop the blob from being stored for the others.
        tokio::spawn(async move {
            let result = fetch_into_store(
                &this.registry,
                &client,
                timeout,
                &upstream,
                &local,
                &digest,
                &fetching,
            )
            .await;
            // Out of the map first, so a request after this reads the store.
            lock(&this.flights).remove(&key);
            fetching.phase.send_replace(match result {
                Ok(()) => Phase::Stored,
                Err(e) => {
                    tracing::warn!(repo = %local, %digest, error = %e, "pull-through: blob fetch failed");
                    Phase::Failed(e)
                }
            });
        });
        flight
    }
}

/// The work of storing one fetched image.
struct Store<'a> {
    cache: &'a Arc<PullThrough>,
    client: &'a Arc<UpstreamClient>,
    upstream: &'a str,
    local: &'a RepoName,
    concurrency: usize,
}

impl Store<'_> {
    async fn store(&self, manifest: &FetchedManifest, tag: Option<&Tag>) -> Result<(), String> {
        self.children(manifest, 0).await?;
        let tags: Vec<Tag> = tag.into_iter().cloned().collect();
        self.cache
            .registry
            .put_manifest(
                self.local,
                &Reference::Digest(manifest.digest.clone()),
                &tags,
                manifest.media_type.as_deref(),
                manifest.bytes.clone(),
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn children(&self, manifest: &FetchedManifest, depth: u32) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("indexes nest deeper than {MAX_DEPTH}"));
        }
        let parsed = parse_manifest(&manifest.bytes, manifest.media_type.as_deref())?;
        let mut blobs = Vec::new();
        for (digest, kind, _size) in &parsed.references {
            match kind {
                ReferenceKind::Manifest => Box::pin(self.child(digest, depth + 1)).await?,
                ReferenceKind::Blob => {
                    if !blobs.contains(digest) {
                        blobs.push(digest.clone());
                    }
                }
            }
        }
        stream::iter(blobs.into_iter().map(Ok::<_, String>))
            .try_for_each_concurrent(self.concurrency.max(1), |digest| async move {
                self.blob(&digest).await
            })
            .await
    }

    async fn child(&self, digest: &Digest, depth: u32) -> Result<(), String> {
        let registry = &self.cache.registry;
        match registry
            .manifest_record(self.local, &Reference::Digest(digest.clone()))
            .await
        {
            Ok(_) => return Ok(()),
            Err(OciError::ManifestUnknown(_) | OciError::NameUnknown(_)) => {}
            Err(e) => return Err(e.to_string()),
        }
        let child = match self.cache.pending_manifest(self.local, digest) {
            Some(m) => m,
            None => self
                .client
                .get_manifest(self.upstream, &digest.to_string(), Some(digest))
                .await
                .map_err(|e| e.to_string())?,
        };
        self.children(&child, depth).await?;
        registry
            .put_manifest(
                self.local,
                &Reference::Digest(digest.clone()),
                &[],
                child.media_type.as_deref(),
                child.bytes,
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Makes `digest` available locally: linked already, mounted from
    /// elsewhere in the store, or through the shared single-flight fetch.
    async fn blob(&self, digest: &Digest) -> Result<(), String> {
        let registry = &self.cache.registry;
        match registry.stat_blob(self.local, digest).await {
            Ok(_) => return Ok(()),
            Err(OciError::BlobUnknown(_)) => {}
            Err(e) => return Err(e.to_string()),
        }
        // The manifest that names the blob came from this upstream repository
        // and was verified, so the bytes the store holds are the ones meant.
        if registry
            .mount_blob(self.local, digest, None)
            .await
            .map_err(|e| e.to_string())?
        {
            return Ok(());
        }
        let Some((_, policy, _)) = self.cache.remote_for(self.local) else {
            return Err("no pull-through remote".into());
        };
        let flight = self.cache.flight(policy, self.upstream, self.local, digest);
        let mut phase = flight.phase.subscribe();
        loop {
            match &*phase.borrow_and_update() {
                Phase::Stored => return Ok(()),
                Phase::Failed(e) => return Err(e.clone()),
                Phase::Connecting | Phase::Streaming { .. } | Phase::Verified => {}
            }
            if phase.changed().await.is_err() {
                return Err("blob fetch ended without an outcome".into());
            }
        }
    }
}

/// One upstream GET into the store's upload, which the clients read as it
/// grows: the store reads the upstream body at its own pace (a part at a time,
/// so memory is bounded) and says after each write how much is readable.
async fn fetch_into_store(
    registry: &Registry,
    client: &UpstreamClient,
    timeout: Duration,
    upstream: &str,
    local: &RepoName,
    digest: &Digest,
    flight: &Arc<Flight>,
) -> Result<(), String> {
    let (size, body) =
        match tokio::time::timeout(timeout, client.get_blob_sized(upstream, digest)).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(format!("no answer within {timeout:?}")),
        };
    flight.phase.send_replace(Phase::Streaming { size });
    let teed = flight.clone();
    let body: ByteStream = Box::pin(body.inspect_ok(move |chunk| {
        teed.received(chunk);
        teed.phase.send_modify(|_| {});
    }));
    let written = flight.clone();
    let progress: wharf_blob::Progress = Arc::new(move |staged| {
        written.written.store(staged, Ordering::Release);
        written.phase.send_modify(|_| {});
    });
    let size = registry
        .stage_blob_observed(digest, &flight.upload, body, progress)
        .await
        .map_err(|e| e.to_string())?;
    flight.phase.send_replace(Phase::Verified);
    registry
        .publish_staged_blob(local, &flight.upload, digest, size)
        .await
        .map_err(|e| e.to_string())
}

/// A client's view of a flight: waits for the upstream's answer, then
/// streams the upload from the start, following it as it grows, and ends once
/// the blob is stored and verified.
async fn follow(
    registry: &Registry,
    digest: &Digest,
    flight: Arc<Flight>,
    remote: &ProxyRemote,
    policy: &PullThroughPolicy,
) -> Result<ProxiedBlob, ProxyError> {
    let mut phase = flight.phase.subscribe();
    let size = loop {
        let current = phase.borrow_and_update().clone();
        match current {
            Phase::Connecting => {}
            Phase::Streaming { size } => break size,
            Phase::Verified | Phase::Stored => break Some(flight.written.load(Ordering::Acquire)),
            Phase::Failed(e) => {
                return Err(if e.contains("upstream has no") {
                    ProxyError::NotFound(format!("{}: {e}", remote.name))
                } else {
                    ProxyError::Unavailable(format!("{}: {e}", remote.name))
                })
            }
        }
        if tokio::time::timeout(policy.upstream_timeout * 2, phase.changed())
            .await
            .map_or(true, |r| r.is_err())
        {
            return Err(ProxyError::Unavailable(format!(
                "{}: the blob fetch did not start",
                remote.name
            )));
        }
    };
    let reader = Reader {
        registry: registry.clone(),
        digest: digest.clone(),
        flight,
        phase,
        next: 0,
        reading: None,
        done: false,
    };
    let body = stream::unfold(reader, |mut reader| async move {
        let item = reader.next_chunk().await?;
        Some((item, reader))
    });
    Ok(ProxiedBlob {
        size,
        body: Box::pin(body),
    })
}

/// One client's position in a flight's upload.
struct Reader {
    registry: Registry,
    digest: Digest,
    flight: Arc<Flight>,
    phase: watch::Receiver<Phase>,
    /// The next offset to send.
    next: u64,
    /// The bytes announced when this read began, being streamed.
    reading: Option<ByteStream>,
    /// Ended, by the blob's end or an error.
    done: bool,
}

impl Reader {
    async fn next_chunk(&mut self) -> Option<std::io::Result<bytes::Bytes>> {
        if self.done {
            return None;
        }
        loop {
            if let Some(reading) = &mut self.reading {
                match reading.next().await {
                    Some(Ok(chunk)) => {
                        self.next += chunk.len() as u64;
                        return Some(Ok(chunk));
                    }
                    Some(Err(e)) => return self.fail(format!("reading the upload: {e}")),
                    None => self.reading = None,
                }
            }
            // Marked seen before `written` and the recent chunks are read,
            // so bytes arriving after the read wake the wait below.
            let current = self.phase.borrow_and_update().clone();
            if let Some(chunk) = self.flight.recent_at(self.next) {
                self.next += chunk.len() as u64;
                return Some(Ok(chunk));
            }
            let written = self.flight.written.load(Ordering::Acquire);
            if self.next < written {
                // Everything announced so far in one read: a late joiner
                // opens the upload once, not once per chunk.
                match self
                    .registry
                    .read_upload(
                        &self.flight.upload,
                        &self.digest,
                        self.next,
                        written - self.next,
                    )
                    .await
                {
                    Ok(stream) => self.reading = Some(stream),
                    Err(e) => {
                        // A discarded upload: the outcome says why, if known.
                        let why = match &*self.phase.borrow() {
                            Phase::Failed(f) => f.clone(),
                            _ => e.to_string(),
                        };
                        return self.fail(why);
                    }
                }
                continue;
            }
            match current {
                Phase::Verified | Phase::Stored => {
                    self.done = true;
                    return None;
                }
                Phase::Failed(e) => return self.fail(e),
                Phase::Connecting | Phase::Streaming { .. } => {}
            }
            if self.phase.changed().await.is_err() {
                self.done = true;
                return None;
            }
        }
    }

    fn fail(&mut self, why: String) -> Option<std::io::Result<bytes::Bytes>> {
        self.done = true;
        Some(Err(std::io::Error::other(format!("upstream blob: {why}"))))
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn content_of(m: FetchedManifest) -> ManifestContent {
    ManifestContent {
        digest: m.digest,
        media_type: m
            .media_type
            .unwrap_or_else(|| wharf_oci::media::OCI_MANIFEST.to_owned()),
        bytes: m.bytes,
    }
}

/// Whether two `host[:port]` name one upstream (Docker Hub's names are one).
fn same_host(authority: &str, host: &str) -> bool {
    authority.eq_ignore_ascii_case(host)
        || (names::is_docker_hub(authority) && names::is_docker_hub(host))
}

/// Whether `name` matches `pattern`: `/`-separated components, `**` for any
/// run of components (one at least), `*` for any run within one component.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('/').collect();
    let name: Vec<&str> = name.split('/').collect();
    components_match(&pattern, &name)
}

fn components_match(pattern: &[&str], name: &[&str]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((&"**", rest)) => (1..=name.len()).any(|k| components_match(rest, &name[k..])),
        Some((first, rest)) => match name.split_first() {
            Some((n, name_rest)) => {
                component_matches(first.as_bytes(), n.as_bytes())
                    && components_match(rest, name_rest)
            }
            None => false,
        },
    }
}

fn component_matches(pattern: &[u8], name: &[u8]) -> bool {
    // Iterative wildcard match with one back-track point: linear enough for
    // names of at most 255 bytes.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if p < pattern.len() && pattern[p] == name[n] {
            p += 1;
            n += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_patterns() {
        assert!(pattern_matches("coreos/*", "coreos/etcd"));
        assert!(!pattern_matches("coreos/*", "coreos/etcd/dev"));
        assert!(!pattern_matches("coreos/*", "other/etcd"));
        assert!(pattern_matches("coreos/**", "coreos/etcd/dev"));
        assert!(!pattern_matches("coreos/**", "coreos"));
        assert!(pattern_matches("library/alp*", "library/alpine"));
        assert!(pattern_matches("x/y", "x/y"));
        assert!(!pattern_matches("x/y", "x/yz"));
        assert!(pattern_matches("*-base/*", "ubi-base/app"));
    }

    #[test]
    fn hosts_compare_as_upstreams() {
        assert!(same_host("Quay.io", "quay.io"));
        assert!(same_host("registry-1.docker.io", "docker.io"));
        assert!(!same_host("127.0.0.1:5000", "127.0.0.1"));
    }
}
