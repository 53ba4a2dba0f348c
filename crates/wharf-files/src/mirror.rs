//! Mirroring a file tree into a file repository (`[[files.remotes]]`): an
//! HTTP(S) tree read through its directory listings (the autoindex pages
//! nginx, Apache and Wharf write), or a local directory.
//!
//! One run walks the upstream, directory by directory, into a snapshot staged
//! from nothing (an exact mirror: what upstream dropped goes). A file whose
//! size and modification time equal the published copy's is recorded from the
//! store without a transfer (over HTTP the question is a conditional GET with
//! `If-Modified-Since`, which nginx and Apache answer with 304). A
//! `SHA256SUMS` file in a directory is read first, and every file it names
//! must hash to its line or the run fails with nothing published. When
//! nothing changed the staged snapshot is dropped; otherwise it gets its own
//! generated [`SUMS_NAME`] and is published in one step.
//!
//! Only links that name a direct child of the directory being read are
//! followed — never `..`, an absolute path elsewhere, a query or another
//! host — so a hostile listing cannot make the walk leave the tree or loop.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use futures_util::{StreamExt, TryStreamExt};
use wharf_core::{Digest, RepoName, TreePath};
use wharf_meta::{SnapshotEntry, SnapshotId};
use wharf_snapshot::{Base, Snapshots, Staged};

use crate::tree::{self, is_reserved, tree_path, TreeError, SUMS_NAME};

/// Files an install tree has at its top that autoindex pages hide (nginx
/// lists no dot files): asked for at the top of an HTTP upstream even when
/// unlisted, and skipped when it answers 404.
const HIDDEN_TREE_FILES: &[&str] = &[".treeinfo", ".discinfo"];

/// Largest `SHA256SUMS` or directory listing read into memory.
const MAX_TEXT_BYTES: usize = 16 << 20;

/// Why a mirror run failed.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The upstream could not be reached or answered wrongly.
    #[error("{0}")]
    Upstream(String),
    /// A file does not match the `SHA256SUMS` line naming it.
    #[error("{path}: does not match {sums} (expected sha256 {expected})")]
    Checksum {
        /// The file.
        path: TreePath,
        /// The checksum file naming it.
        sums: String,
        /// What the line says.
        expected: String,
    },
    /// Storing failed.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// Stopped on request.
    #[error("cancelled")]
    Cancelled,
}

impl From<wharf_meta::MetaError> for MirrorError {
    fn from(e: wharf_meta::MetaError) -> MirrorError {
        wharf_snapshot::SnapshotError::Meta(e).into()
    }
}

impl From<wharf_snapshot::SnapshotError> for MirrorError {
    fn from(e: wharf_snapshot::SnapshotError) -> MirrorError {
        MirrorError::Tree(e.into())
    }
}

/// Where a remote's tree is read from, with what it needs to read it.
pub struct SourceSettings {
    /// `http(s)://…/` or a local directory.
    pub url: String,
    /// Basic credentials for the upstream.
    pub credentials: Option<(String, String)>,
    /// PEM CAs trusted instead of the system roots.
    pub ca_bundle: Option<Vec<u8>>,
}

/// One remote's run, lowered from the configuration.
pub struct MirrorPlan {
    /// The remote's name (for lines).
    pub remote: String,
    /// The files repository filled.
    pub repository: RepoName,
    /// The upstream.
    pub source: SourceSettings,
}

/// What a caller sees of a run.
pub trait MirrorObserver: Send + Sync {
    /// Bytes transferred from upstream.
    fn fetched(&self, _bytes: u64) {}
    /// A file was recorded (fetched or kept).
    fn file_done(&self) {}
    /// Whether to stop (checked between files).
    fn cancelled(&self) -> bool {
        false
    }
}

/// How a run ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MirrorSummary {
    /// The remote.
    pub remote: String,
    /// The repository.
    pub repository: String,
    /// Files upstream has (its root `SHA256SUMS` not counted).
    pub files: u64,
    /// Files transferred.
    pub fetched: u64,
    /// Bytes transferred.
    pub bytes: u64,
    /// Files checked against an upstream `SHA256SUMS`.
    pub verified: u64,
    /// Files kept from the published snapshot, unchanged at their path.
    pub kept: u64,
    /// The snapshot published; `None`: nothing changed (or the run failed).
    pub published: Option<i64>,
    /// Why it failed; then nothing was published.
    pub failure: Option<String>,
    /// Whether it was stopped.
    pub cancelled: bool,
}

impl MirrorSummary {
    /// The one summary line of the run.
    pub fn line(&self) -> String {
        let head = format!("files-sync {} -> {}", self.remote, self.repository);
        if let Some(f) = &self.failure {
            return format!("{head}: failed, nothing published: {f}");
        }
        if self.cancelled {
            return format!("{head}: cancelled, nothing published");
        }
        let counts = format!(
            "{} files, {} fetched ({} bytes), {} verified against SHA256SUMS",
            self.files, self.fetched, self.bytes, self.verified
        );
        match self.published {
            Some(n) => format!("{head}: {counts}; snapshot {n} published"),
            None => format!("{head}: {counts}; unchanged, nothing published"),
        }
    }
}

enum Source {
    Http {
        client: reqwest::Client,
        base: url::Url,
        credentials: Option<(String, String)>,
    },
    Local(PathBuf),
}

impl Source {
    fn new(settings: &SourceSettings) -> Result<Source, MirrorError> {
        let url = &settings.url;
        if url.starts_with("http://") || url.starts_with("https://") {
            let mut base = url::Url::parse(url)
                .map_err(|e| MirrorError::Upstream(format!("url {url:?}: {e}")))?;
            if !base.path().ends_with('/') {
                base.set_path(&format!("{}/", base.path()));
            }
            let mut builder = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(30))
                .read_timeout(Duration::from_secs(120));
            if let Some(pem) = &settings.ca_bundle {
                builder = builder.tls_built_in_root_certs(false);
                for cert in reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|e| MirrorError::Upstream(format!("ca_bundle: {e}")))?
                {
                    builder = builder.add_root_certificate(cert);
                }
            }
            let client = builder
                .build()
                .map_err(|e| MirrorError::Upstream(format!("http client: {e}")))?;
            Ok(Source::Http {
                client,
                base,
                credentials: settings.credentials.clone(),
            })
        } else {
            let dir = PathBuf::from(url.strip_prefix("file://").unwrap_or(url));
            if !dir.is_dir() {
                return Err(MirrorError::Upstream(format!(
                    "url {url:?} is neither http(s):// nor an existing directory"
                )));
            }
            Ok(Source::Local(dir))
        }
    }

    fn request(&self, url: url::Url) -> Option<reqwest::RequestBuilder> {
        match self {
            Source::Http {
                client,
                credentials,
                ..
            } => {
                let req = client.get(url);
                Some(match credentials {
                    Some((u, p)) => req.basic_auth(u, Some(p)),
                    None => req,
                })
            }
            Source::Local(_) => None,
        }
    }
}

/// A directory's children: files and subdirectories, by name.
#[derive(Debug, Default, PartialEq, Eq)]
struct Children {
    files: Vec<String>,
    dirs: Vec<String>,
}

/// The names an autoindex page links to that are direct children of `dir`
/// (an absolute URL ending in `/`). Everything else — sort links with a
/// query, the parent, absolute paths elsewhere, other hosts, names with `/`
/// or `..` — is skipped.
fn parse_listing(html: &str, dir: &url::Url) -> Children {
    let mut out = Children::default();
    let lower = html.to_ascii_lowercase();
    let mut at = 0;
    while let Some(found) = lower[at..].find("href=") {
        let start = at + found + 5;
        let Some(quote) = html[start..].chars().next() else {
            break;
        };
        let (value, end) = if quote == '"' || quote == '\'' {
            match html[start + 1..].find(quote) {
                Some(len) => (&html[start + 1..start + 1 + len], start + 1 + len),
                None => break,
            }
        } else {
            let len = html[start..]
                .find(|c: char| c.is_whitespace() || c == '>')
                .unwrap_or(html.len() - start);
            (&html[start..start + len], start + len)
        };
        at = end;
        let href = unescape_html(value);
        if href.is_empty() || href.contains(['?', '#']) {
            continue;
        }
        let Ok(resolved) = dir.join(&href) else {
            continue;
        };
        if resolved.scheme() != dir.scheme()
            || resolved.host_str() != dir.host_str()
            || resolved.port_or_known_default() != dir.port_or_known_default()
            || resolved.query().is_some()
        {
            continue;
        }
        let Some(rest) = resolved.path().strip_prefix(dir.path()) else {
            continue;
        };
        let (name, is_dir) = match rest.strip_suffix('/') {
            Some(name) => (name, true),
            None => (rest, false),
        };
        if name.is_empty() || name.contains('/') {
            continue;
        }
        let Ok(name) = percent_encoding::percent_decode_str(name).decode_utf8() else {
            continue;
        };
        let name = name.into_owned();
        if name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
            continue;
        }
        let list = if is_dir {
            &mut out.dirs
        } else {
            &mut out.files
        };
        if !list.contains(&name) {
            list.push(name);
        }
    }
    out
}

fn unescape_html(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The lines of a `SHA256SUMS` file: GNU (`HEX  NAME`, `HEX *NAME`) and BSD
/// (`SHA256 (NAME) = HEX`) forms; other lines (comments, signatures) skipped.
fn parse_sums(text: &str) -> Vec<(String, Digest)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        let parsed = if let Some(rest) = line.strip_prefix("SHA256 (") {
            rest.rsplit_once(") = ")
                .map(|(name, hex)| (name.to_owned(), hex.trim().to_owned()))
        } else {
            line.split_once(' ').and_then(|(hex, rest)| {
                let name = rest.strip_prefix(' ').or_else(|| rest.strip_prefix('*'))?;
                Some((name.to_owned(), hex.to_owned()))
            })
        };
        let Some((name, hex)) = parsed else { continue };
        let name = name.strip_prefix("./").unwrap_or(&name).to_owned();
        if let Ok(d) = Digest::parse(&format!("sha256:{}", hex.to_ascii_lowercase())) {
            out.push((name, d));
        }
    }
    out
}

fn http_date(secs: i64) -> String {
    httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64))
}

fn header_time(res: &reqwest::Response) -> i64 {
    res.headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64)
}

/// Runs one mirror of `plan`; never panics, always returns the summary.
pub async fn run_mirror(
    snapshots: &Snapshots,
    plan: &MirrorPlan,
    observer: &dyn MirrorObserver,
) -> MirrorSummary {
    let mut summary = MirrorSummary {
        remote: plan.remote.clone(),
        repository: plan.repository.to_string(),
        ..MirrorSummary::default()
    };
    match run_inner(snapshots, plan, observer, &mut summary).await {
        Ok(()) => {}
        Err(MirrorError::Cancelled) => summary.cancelled = true,
        Err(e) => summary.failure = Some(e.to_string()),
    }
    if summary.failure.is_some() || summary.cancelled {
        summary.published = None;
    }
    summary
}

/// The state of one walk.
struct Walk<'a> {
    source: Source,
    staged: Staged,
    snapshots: &'a Snapshots,
    published: Option<SnapshotId>,
    /// Expected digests from upstream `SHA256SUMS` files, by path, with the
    /// checksum file that named each.
    expected: HashMap<String, (Digest, String)>,
    observer: &'a dyn MirrorObserver,
}

async fn run_inner(
    snapshots: &Snapshots,
    plan: &MirrorPlan,
    observer: &dyn MirrorObserver,
    summary: &mut MirrorSummary,
) -> Result<(), MirrorError> {
    let source = Source::new(&plan.source)?;
    let published = snapshots.published(&plan.repository).await?;
    let staged = tree::stage(
        snapshots,
        &plan.repository,
        Base::Empty,
        &format!("files-sync {}", plan.remote),
    )
    .await?;
    let mut walk = Walk {
        source,
        staged: staged.clone(),
        snapshots,
        published: published.as_ref().map(|p| p.id.clone()),
        expected: HashMap::new(),
        observer,
    };
    let result = walk.all(summary).await;
    if let Err(e) = result {
        let _ = staged.discard().await;
        return Err(e);
    }
    // Unchanged: every upstream file was kept from the published snapshot at
    // its own path, and that snapshot has exactly those (and its SHA256SUMS).
    if let Some(p) = &published {
        let (files, _) = snapshots.meta().snapshot_totals(&p.id).await?;
        let had_sums = snapshots
            .meta()
            .snapshot_entry(&p.id, &tree_path(SUMS_NAME)?)
            .await?
            .is_some();
        // Counted by what was kept, not by what was fetched: a changed file
        // whose new bytes the store already held is fetched by no one.
        if summary.kept == summary.files && had_sums && files == summary.files + 1 {
            staged.discard().await?;
            return Ok(());
        }
    }
    if observer.cancelled() {
        let _ = staged.discard().await;
        return Err(MirrorError::Cancelled);
    }
    if let Err(e) = tree::write_sums(&staged).await {
        let _ = staged.discard().await;
        return Err(e.into());
    }
    let number = staged.record().number;
    staged.publish().await?;
    summary.published = Some(number);
    Ok(())
}

impl Walk<'_> {
    async fn all(&mut self, summary: &mut MirrorSummary) -> Result<(), MirrorError> {
        let mut pending: VecDeque<Option<TreePath>> = VecDeque::from([None]);
        while let Some(dir) = pending.pop_front() {
            let mut children = self.children(dir.as_ref()).await?;
            children.files.sort();
            children.dirs.sort();
            let child = |name: &str| -> Result<TreePath, MirrorError> {
                Ok(match &dir {
                    Some(d) => d
                        .join(&tree_path(name)?)
                        .map_err(|source| TreeError::Path {
                            path: format!("{d}/{name}"),
                            source,
                        })?,
                    None => tree_path(name)?,
                })
            };
            // The directory's checksum list first, so it covers its siblings.
            if children.files.iter().any(|f| f == SUMS_NAME) {
                let path = child(SUMS_NAME)?;
                let text = self.read_text(&path).await?;
                for (name, digest) in parse_sums(&text) {
                    let Ok(target) = child(&name) else { continue };
                    self.expected
                        .insert(target.to_string(), (digest, path.to_string()));
                }
            }
            // Names a listing may not show (nginx's autoindex hides dot files):
            // those a checksum list names here, and an install tree's own.
            let mut unlisted: Vec<(String, bool)> = Vec::new();
            let prefix = dir.as_ref().map(|d| format!("{d}/")).unwrap_or_default();
            for named in self.expected.keys() {
                if let Some(name) = named.strip_prefix(&prefix) {
                    if !name.contains('/') && !children.files.iter().any(|f| f == name) {
                        unlisted.push((name.to_owned(), false));
                    }
                }
            }
            if dir.is_none() && matches!(self.source, Source::Http { .. }) {
                for name in HIDDEN_TREE_FILES {
                    if !children.files.iter().any(|f| f == name)
                        && !unlisted.iter().any(|(n, _)| n == name)
                    {
                        unlisted.push(((*name).to_owned(), true));
                    }
                }
            }
            unlisted.sort();
            let listed = children.files.iter().map(|n| (n.clone(), false));
            for (name, optional) in listed.chain(unlisted) {
                if self.observer.cancelled() {
                    return Err(MirrorError::Cancelled);
                }
                let path = child(&name)?;
                // The root SHA256SUMS is Wharf's own (written at publish); upstream's
                // has verified its siblings above.
                if is_reserved(&path) {
                    continue;
                }
                if self.file(&path, optional, summary).await? {
                    summary.files += 1;
                    self.observer.file_done();
                }
            }
            for name in &children.dirs {
                pending.push_back(Some(child(name)?));
            }
        }
        Ok(())
    }

    fn url_of(
        base: &url::Url,
        path: Option<&TreePath>,
        dir: bool,
    ) -> Result<url::Url, MirrorError> {
        let mut url = base.clone();
        if let Some(path) = path {
            let mut segments = url
                .path_segments_mut()
                .map_err(|_| MirrorError::Upstream(format!("{base} cannot have paths")))?;
            segments.pop_if_empty();
            for c in path.components() {
                segments.push(c);
            }
            if dir {
                segments.push("");
            }
        }
        Ok(url)
    }

    async fn children(&self, dir: Option<&TreePath>) -> Result<Children, MirrorError> {
        match &self.source {
            Source::Local(root) => {
                let at = match dir {
                    Some(d) => root.join(d.as_str()),
                    None => root.clone(),
                };
                let io =
                    |e: std::io::Error| MirrorError::Upstream(format!("{}: {e}", at.display()));
                let mut out = Children::default();
                let mut rd = tokio::fs::read_dir(&at).await.map_err(io)?;
                while let Some(entry) = rd.next_entry().await.map_err(io)? {
                    let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                        return Err(TreeError::NotUtf8(entry.path()).into());
                    };
                    // Symbolic links to files are followed; to directories, not (no loops).
                    let kind = entry.file_type().await.map_err(io)?;
                    if kind.is_dir() {
                        out.dirs.push(name);
                    } else if tokio::fs::metadata(entry.path())
                        .await
                        .map(|m| m.is_file())
                        .unwrap_or(false)
                    {
                        out.files.push(name);
                    }
                }
                Ok(out)
            }
            Source::Http { base, .. } => {
                let url = Self::url_of(base, dir, true)?;
                let req = self.source.request(url.clone()).expect("http");
                let res = req
                    .send()
                    .await
                    .map_err(|e| MirrorError::Upstream(format!("GET {url}: {e}")))?;
                if !res.status().is_success() {
                    return Err(MirrorError::Upstream(format!(
                        "GET {url}: {}",
                        res.status()
                    )));
                }
                let text = read_capped(res, &url).await?;
                Ok(parse_listing(&text, &url))
            }
        }
    }

    async fn read_text(&self, path: &TreePath) -> Result<String, MirrorError> {
        match &self.source {
            Source::Local(root) => {
                let at = root.join(path.as_str());
                let bytes = tokio::fs::read(&at)
                    .await
                    .map_err(|e| MirrorError::Upstream(format!("{}: {e}", at.display())))?;
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            Source::Http { base, .. } => {
                let url = Self::url_of(base, Some(path), false)?;
                let res = self
                    .source
                    .request(url.clone())
                    .expect("http")
                    .send()
                    .await
                    .map_err(|e| MirrorError::Upstream(format!("GET {url}: {e}")))?;
                if !res.status().is_success() {
                    return Err(MirrorError::Upstream(format!(
                        "GET {url}: {}",
                        res.status()
                    )));
                }
                read_capped(res, &url).await
            }
        }
    }

    async fn previous(&self, path: &TreePath) -> Result<Option<SnapshotEntry>, MirrorError> {
        match &self.published {
            Some(id) => Ok(self.snapshots.meta().snapshot_entry(id, path).await?),
            None => Ok(None),
        }
    }

    /// Records one upstream file: kept from the published snapshot when
    /// unchanged, else transferred (and verified when a checksum names it).
    /// `false`: an `optional` file upstream does not have.
    async fn file(
        &self,
        path: &TreePath,
        optional: bool,
        summary: &mut MirrorSummary,
    ) -> Result<bool, MirrorError> {
        let expected = self.expected.get(path.as_str()).cloned();
        let previous = self
            .previous(path)
            .await?
            // A copy that does not match today's checksum is fetched again.
            .filter(|p| expected.as_ref().is_none_or(|(d, _)| d == &p.blob));
        let keep = |p: &SnapshotEntry| {
            let staged = self.staged.clone();
            let (path, blob, at) = (path.clone(), p.blob.clone(), p.modified_at);
            async move { staged.put_existing(&path, &blob, at).await }
        };
        let mismatch = |e: wharf_snapshot::SnapshotError| match (&e, &expected) {
            (
                wharf_snapshot::SnapshotError::Blob(wharf_blob::BlobError::DigestMismatch {
                    ..
                }),
                Some((d, sums)),
            ) => MirrorError::Checksum {
                path: path.clone(),
                sums: sums.clone(),
                expected: d.hex().to_owned(),
            },
            _ => MirrorError::from(e),
        };
        match &self.source {
            Source::Local(root) => {
                let at = root.join(path.as_str());
                let io =
                    |e: std::io::Error| MirrorError::Upstream(format!("{}: {e}", at.display()));
                let meta = tokio::fs::metadata(&at).await.map_err(io)?;
                let modified = tree::modified_secs(&meta);
                if let Some(p) = &previous {
                    if p.size == meta.len() && p.modified_at == modified && keep(p).await? {
                        summary.verified += u64::from(expected.is_some());
                        summary.kept += 1;
                        return Ok(true);
                    }
                }
                // The checksum names bytes the store already holds: those are
                // recorded, and the file is not read (as `put_stream` would not).
                if let Some((d, _)) = &expected {
                    if self.staged.put_existing(path, d, modified).await? {
                        summary.verified += 1;
                        return Ok(true);
                    }
                }
                let file = tokio::fs::File::open(&at).await.map_err(io)?;
                let stored = self
                    .staged
                    .put_reader(path, file, expected.as_ref().map(|(d, _)| d), modified)
                    .await
                    .map_err(mismatch)?;
                summary.fetched += 1;
                summary.bytes += stored.size;
                summary.verified += u64::from(expected.is_some());
                self.observer.fetched(stored.size);
                Ok(true)
            }
            Source::Http { base, .. } => {
                let url = Self::url_of(base, Some(path), false)?;
                let mut req = self.source.request(url.clone()).expect("http");
                if let Some(p) = &previous {
                    req = req.header(reqwest::header::IF_MODIFIED_SINCE, http_date(p.modified_at));
                }
                let res = req
                    .send()
                    .await
                    .map_err(|e| MirrorError::Upstream(format!("GET {url}: {e}")))?;
                if optional && res.status() == reqwest::StatusCode::NOT_FOUND {
                    return Ok(false);
                }
                if res.status() == reqwest::StatusCode::NOT_MODIFIED {
                    if let Some(p) = &previous {
                        if keep(p).await? {
                            summary.verified += u64::from(expected.is_some());
                            summary.kept += 1;
                            return Ok(true);
                        }
                    }
                    return Err(MirrorError::Upstream(format!(
                        "GET {url}: 304 Not Modified without a stored copy"
                    )));
                }
                if !res.status().is_success() {
                    return Err(MirrorError::Upstream(format!(
                        "GET {url}: {}",
                        res.status()
                    )));
                }
                let modified = header_time(&res);
                if let Some(p) = &previous {
                    // A server that ignores If-Modified-Since: the same size and
                    // time still mean the same file; the body is not read.
                    if res.content_length() == Some(p.size)
                        && modified == p.modified_at
                        && modified != 0
                        && keep(p).await?
                    {
                        summary.verified += u64::from(expected.is_some());
                        summary.kept += 1;
                        return Ok(true);
                    }
                }
                let observer = self.observer;
                let counted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
                let body: wharf_blob::ByteStream = {
                    let counted = counted.clone();
                    Box::pin(
                        res.bytes_stream()
                            .map_err(std::io::Error::other)
                            .inspect_ok(move |chunk| {
                                counted.fetch_add(
                                    chunk.len() as u64,
                                    std::sync::atomic::Ordering::Relaxed,
                                );
                            }),
                    )
                };
                let stored = self
                    .staged
                    .put_stream(path, body, expected.as_ref().map(|(d, _)| d), modified)
                    .await
                    .map_err(mismatch)?;
                let read = counted.load(std::sync::atomic::Ordering::Relaxed);
                summary.verified += u64::from(expected.is_some());
                // An expected digest the store already held: `put_stream`
                // recorded it without reading the body, so nothing was fetched.
                if read == 0 && stored.size > 0 {
                    return Ok(true);
                }
                observer.fetched(read);
                summary.fetched += 1;
                summary.bytes += read;
                Ok(true)
            }
        }
    }
}

async fn read_capped(res: reqwest::Response, url: &url::Url) -> Result<String, MirrorError> {
    let mut body = res.bytes_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| MirrorError::Upstream(format!("GET {url}: {e}")))?;
        buf.extend_from_slice(&chunk);
        if buf.len() > MAX_TEXT_BYTES {
            return Err(MirrorError::Upstream(format!(
                "GET {url}: larger than {MAX_TEXT_BYTES} bytes"
            )));
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_yield_only_direct_children() {
        let dir = url::Url::parse("http://up.example:8080/pub/f40/").unwrap();
        let html = r#"<html><body><h1>Index of /pub/f40/</h1><pre>
<a href="../">../</a>
<a href="?C=N;O=D">Name</a>
<a href="/pub/">Parent Directory</a>
<a href="images/">images/</a>
<a href="LiveOS/">LiveOS/</a>
<a href='caf%C3%A9%20menu.txt'>café menu.txt</a>
<a href="a&amp;b.iso">a&amp;b.iso</a>
<a href="http://evil.example/pub/f40/x">x</a>
<a href="http://up.example:8080/pub/f40/abs.txt">abs</a>
<a href="deep/er/file">deep</a>
<a href="%2e%2e/escape">esc</a>
<a href="..%2fescape">esc2</a>
<a href=SHA256SUMS>SHA256SUMS</a>
</pre></body></html>"#;
        let c = parse_listing(html, &dir);
        assert_eq!(c.dirs, vec!["images", "LiveOS"]);
        assert_eq!(
            c.files,
            vec!["café menu.txt", "a&b.iso", "abs.txt", "SHA256SUMS"]
        );
    }

    #[test]
    fn sums_in_gnu_and_bsd_forms() {
        let a = Digest::sha256_of(b"a");
        let b = Digest::sha256_of(b"b");
        let text = format!(
            "# comment\n{}  images/vmlinuz\n{} *./b.iso\nSHA256 (c d.txt) = {}\n-----BEGIN PGP SIGNATURE-----\n",
            a.hex(),
            b.hex(),
            a.hex()
        );
        assert_eq!(
            parse_sums(&text),
            vec![
                ("images/vmlinuz".to_owned(), a.clone()),
                ("b.iso".to_owned(), b),
                ("c d.txt".to_owned(), a)
            ]
        );
    }

    #[test]
    fn summary_lines() {
        let mut s = MirrorSummary {
            remote: "f40".into(),
            repository: "os/f40".into(),
            files: 3,
            fetched: 1,
            bytes: 10,
            verified: 2,
            published: Some(4),
            ..MirrorSummary::default()
        };
        assert_eq!(
            s.line(),
            "files-sync f40 -> os/f40: 3 files, 1 fetched (10 bytes), 2 verified against SHA256SUMS; snapshot 4 published"
        );
        s.failure = Some("boom".into());
        assert!(s.line().ends_with("failed, nothing published: boom"));
    }
}
