//! Hosted rpm-md repositories: users upload their own packages and Wharf
//! writes the metadata.
//!
//! Every change is one [`Session`]: a snapshot staged from the published one,
//! packages added (each header checked, the file streamed into the blob store
//! and hashed on the way) or removed, comps and updateinfo replaced, then
//! [`Session::finish`] regenerates primary, filelists, other and repomd.xml
//! (and `repomd.xml.asc` with a [`MetadataSigner`]) and publishes. The
//! metadata is regenerated from the stored packages' headers, one package at
//! a time into gzip streams on disk, so memory does not grow with the number
//! of packages. Packages live at `Packages/NAME-VERSION-RELEASE.ARCH.rpm`, a
//! name built from the header, so no uploader-given name ever becomes a path.

use std::collections::{HashMap, HashSet};
use std::io::{Seek, Write as _};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use wharf_blob::ByteStream;
use wharf_core::{Digest, RepoName, RepositoryKind, TreePath};
use wharf_meta::{ExistingEntry, SnapshotEntry};
use wharf_snapshot::{Base, SnapshotError, Snapshots, Staged};

use crate::createrepo::{self, Kind, MetadataWriter, PackageRecord, RepomdEntry};
use crate::header::{self, Parsed, RpmHeader};
use crate::RpmError;

/// Signs repomd.xml: returns an ASCII-armored detached OpenPGP signature of
/// `data`. Wharf's own key lives elsewhere; this crate only calls it.
pub trait MetadataSigner: Send + Sync {
    /// The armored signature of `data`.
    fn sign_armored(&self, data: &[u8]) -> Result<Vec<u8>, SignError>;
}

/// Checks a package's OpenPGP signature: `signature` is a binary signature
/// packet over `signed` (the package's main header). Configured keys live
/// elsewhere; this crate only calls it.
pub trait PackageVerifier: Send + Sync {
    /// `Ok` when a trusted key made `signature` over `signed`.
    fn verify(&self, signed: &[u8], signature: &[u8]) -> Result<(), SignError>;
}

/// Signs packages (`[[rpm.hosted]] write_signed_rpms`): returns a binary
/// OpenPGP signature packet over `header` (a package's main header, magic
/// included), which becomes the package's header signature. Wharf's own key
/// lives elsewhere; this crate only calls it.
pub trait PackageSigner: Send + Sync {
    /// The binary signature of `header`.
    fn sign_header(&self, header: &[u8]) -> Result<Vec<u8>, SignError>;
}

/// Why signing failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SignError(pub String);

/// Where packages live in a hosted repository.
pub const PACKAGES_DIR: &str = "Packages";
/// Entries read per page.
pub(crate) const PAGE: u32 = 1000;
/// A generated metadata file at most this big is stored from memory.
const IN_MEMORY_METADATA_BYTES: u64 = 8 << 20;

/// Packages queued for each metadata file's writer thread.
const WRITER_QUEUE: usize = 64;

/// A stored package and its headers, as the metadata writers take it.
struct StoredPackage {
    entry: SnapshotEntry,
    header: Box<RpmHeader>,
}

impl StoredPackage {
    fn record(&self) -> PackageRecord<'_> {
        PackageRecord {
            header: &self.header,
            sha256: self.entry.blob.hex(),
            size: self.entry.size,
            file_time: self.entry.modified_at,
            href: self.entry.path.as_str(),
        }
    }
}

/// A generated metadata file to store: in memory or in a temporary file.
enum MetadataBody {
    /// Hashed as it is stored.
    Bytes(Bytes),
    /// Checked against its digest as it is stored.
    File(tokio::fs::File, Digest),
}

fn store(e: SnapshotError) -> RpmError {
    RpmError::Store(e.to_string())
}

fn tree_path(s: &str) -> Result<TreePath, RpmError> {
    TreePath::new(s).map_err(|e| RpmError::Package(format!("{s:?} is not a valid path: {e}")))
}

/// The hosted repositories of one server or CLI run.
#[derive(Clone)]
pub struct Hosted {
    snapshots: Snapshots,
    mirrored: Arc<Vec<RepoName>>,
    signer: Option<Arc<dyn MetadataSigner>>,
    verifier: Option<Arc<dyn PackageVerifier>>,
    /// Repositories whose uploads are stored as signed copies, and the signer.
    signed_copies: Option<SignedCopies>,
    keep_retired: u32,
    /// Versions kept per package name and arch, by repository (retention).
    keep_versions: Arc<HashMap<RepoName, u32>>,
    /// Composed repositories, made again when a member publishes.
    compositions: Arc<Vec<crate::compose::Composition>>,
    /// The largest package an upload may send.
    max_upload_bytes: u64,
    locks: Arc<Mutex<HashMap<RepoName, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Which repositories store their uploads as signed copies, and who signs them.
#[derive(Clone)]
struct SignedCopies {
    repos: Arc<HashSet<RepoName>>,
    signer: Arc<dyn PackageSigner>,
}

/// The default cap of one uploaded package: 2 GiB.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 2 << 30;
/// How many times a session is made again over what another writer published
/// meanwhile before it gives up.
const ATTEMPTS: u32 = 8;
/// Stored packages' headers read at once while the metadata is written.
const HEADERS_PER_READ: usize = 32;
/// Groups of headers read at once.
const GROUPS_AT_ONCE: usize = 2;
/// Packages stored before their entries are recorded in one transaction.
const BATCH: usize = 256;

impl std::fmt::Debug for Hosted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hosted")
            .field("mirrored", &self.mirrored)
            .field("signed", &self.signer.is_some())
            .finish_non_exhaustive()
    }
}

/// A package added by a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedPackage {
    /// `NAME-[EPOCH:]VERSION-RELEASE.ARCH`.
    pub nevra: String,
    /// Where it is served, inside the repository.
    pub path: String,
    /// SHA-256 of the file.
    pub sha256: String,
    /// Its size.
    pub size: u64,
    /// Whether it carries an OpenPGP signature.
    pub signed: bool,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The snapshot's number.
    pub number: i64,
    /// Whether it was published (else it stays staged).
    pub published: bool,
    /// How many packages its metadata lists.
    pub packages: u64,
}

impl Hosted {
    /// Hosted repositories over `snapshots`; `mirrored` are the repositories
    /// a mirror fills (uploads are refused there); `signer` signs repomd.xml.
    pub fn new(
        snapshots: Snapshots,
        mirrored: Vec<RepoName>,
        signer: Option<Arc<dyn MetadataSigner>>,
        keep_retired: u32,
    ) -> Hosted {
        Hosted {
            snapshots,
            mirrored: Arc::new(mirrored),
            signer,
            verifier: None,
            signed_copies: None,
            keep_retired,
            keep_versions: Arc::default(),
            compositions: Arc::default(),
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            locks: Arc::default(),
        }
    }

    /// The same, keeping at most N versions of each package name (per arch)
    /// in the repositories named: older ones are dropped by every change.
    pub fn with_retention(mut self, keep_versions: HashMap<RepoName, u32>) -> Hosted {
        self.keep_versions = Arc::new(keep_versions);
        self
    }

    /// The same, with composed repositories (which take no uploads).
    pub fn with_compositions(mut self, compositions: Vec<crate::compose::Composition>) -> Hosted {
        self.compositions = Arc::new(compositions);
        self
    }

    /// The composed repositories.
    pub fn compositions(&self) -> &[crate::compose::Composition] {
        &self.compositions
    }

    /// The same, refusing a package larger than `bytes`.
    pub fn with_max_upload_bytes(mut self, bytes: u64) -> Hosted {
        self.max_upload_bytes = bytes;
        self
    }

    /// The largest package an upload may send.
    pub fn max_upload_bytes(&self) -> u64 {
        self.max_upload_bytes
    }

    /// The snapshots it writes.
    pub fn snapshots(&self) -> &Snapshots {
        &self.snapshots
    }

    /// The same, taking only packages whose header signature `verifier` accepts.
    pub fn with_package_verifier(mut self, verifier: Arc<dyn PackageVerifier>) -> Hosted {
        self.verifier = Some(verifier);
        self
    }

    /// The same, storing what is uploaded to `repos` as a copy signed by
    /// `signer` (replacing the package's own signatures; header and payload
    /// unchanged), as Koji's `dist-repo --write-signed-rpms` writes them.
    pub fn with_signed_copies(
        mut self,
        repos: HashSet<RepoName>,
        signer: Arc<dyn PackageSigner>,
    ) -> Hosted {
        self.signed_copies = Some(SignedCopies {
            repos: Arc::new(repos),
            signer,
        });
        self
    }

    /// The signer of `repo`'s uploads, when it stores signed copies.
    fn package_signer(&self, repo: &RepoName) -> Option<&Arc<dyn PackageSigner>> {
        self.signed_copies
            .as_ref()
            .filter(|copies| copies.repos.contains(repo))
            .map(|copies| &copies.signer)
    }

    async fn published_id(
        &self,
        repo: &RepoName,
    ) -> Result<Option<wharf_meta::SnapshotId>, RpmError> {
        Ok(self
            .snapshots
            .published(repo)
            .await
            .map_err(store)?
            .map(|r| r.id))
    }

    /// Starts a change of `repo` (created as an `rpm` repository if absent).
    /// Changes of one repository through this value run one at a time, so
    /// none is lost to another published from the same base.
    pub async fn begin(&self, repo: &RepoName, note: &str) -> Result<Session, RpmError> {
        if self.compositions.iter().any(|c| &c.repository == repo) {
            return Err(RpmError::Package(format!(
                "{repo} is composed of other repositories ([[rpm.composed]]); change its members instead"
            )));
        }
        self.begin_composed(repo, note).await
    }

    /// [`begin`](Hosted::begin), for a composed repository too.
    pub(crate) async fn begin_composed(
        &self,
        repo: &RepoName,
        note: &str,
    ) -> Result<Session, RpmError> {
        if self.mirrored.contains(repo) {
            return Err(RpmError::Package(format!(
                "{repo} is filled by an rpm mirror ([[rpm.remotes]]); upload into a hosted repository instead"
            )));
        }
        let lock = self
            .locks
            .lock()
            .expect("locks")
            .entry(repo.clone())
            .or_default()
            .clone();
        let guard = lock.lock_owned().await;
        let base = self.published_id(repo).await?;
        let staged = self
            .snapshots
            .stage(repo, RepositoryKind::Rpm, Base::Published, note)
            .await
            .map_err(|e| match e {
                SnapshotError::Meta(wharf_meta::MetaError::WrongKind { .. }) => {
                    RpmError::Package(format!("{repo} is not an rpm repository"))
                }
                e => store(e),
            })?;
        // Had another process published between reading `base` and the
        // copy, the copy is of the newer snapshot and publishing over `base`
        // fails: the change is then made again (see `finish`), never lost.
        Ok(Session {
            hosted: self.clone(),
            repo: repo.clone(),
            staged,
            base,
            ops: Mutex::default(),
            pending: Mutex::default(),
            reserved: Mutex::default(),
            _guard: guard,
        })
    }
}

/// One change a session made.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// A stored file recorded at its path (an uploaded or promoted package).
    Put(SnapshotEntry),
    /// An uploaded comps or updateinfo file, replacing any of its kind.
    Extra {
        /// `comps.xml` or `updateinfo.xml`.
        suffix: &'static str,
        /// The file.
        entry: SnapshotEntry,
    },
    /// Packages removed.
    Remove(Vec<TreePath>),
    /// Everything removed (a whole snapshot promoted over the repository).
    Clear,
    /// Only the newest N versions of each package name and arch kept.
    KeepNewest(u32),
}

/// One change of a hosted repository: a staged snapshot.
pub struct Session {
    hosted: Hosted,
    repo: RepoName,
    staged: Staged,
    /// The snapshot published when it started, which it must replace.
    base: Option<wharf_meta::SnapshotId>,
    /// Every change made, in order, to make them again over a snapshot
    /// another writer published meanwhile.
    pub(crate) ops: Mutex<Vec<Op>>,
    /// Packages stored but not yet recorded (recorded [`BATCH`] at a time).
    pending: Mutex<Vec<SnapshotEntry>>,
    /// Package paths being uploaded now, so two uploads of one package in a
    /// session cannot both pass the check.
    reserved: Mutex<HashSet<TreePath>>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("repo", &self.repo)
            .field("snapshot", &self.staged.record().number)
            .finish_non_exhaustive()
    }
}

/// Reads a package's headers from the start of `body`; returns them and the
/// bytes read so far.
async fn read_headers(body: &mut ByteStream) -> Result<(Box<RpmHeader>, Vec<u8>), RpmError> {
    let mut head = Vec::new();
    loop {
        match header::parse(&head)? {
            Parsed::Done(h) => return Ok((h, head)),
            Parsed::NeedMore(_) => match body.next().await {
                Some(Ok(chunk)) => head.extend_from_slice(&chunk),
                Some(Err(e)) => return Err(RpmError::Package(format!("reading the upload: {e}"))),
                None if head.is_empty() => {
                    return Err(RpmError::Package("the file is empty".into()))
                }
                None => {
                    return Err(RpmError::Package(
                        "the file is truncated: it ends inside its headers".into(),
                    ))
                }
            },
        }
    }
}

/// `head` (a package's leading bytes, through its main header) signed by
/// `signer`, and its headers read again from the signed bytes.
fn sign_copy(
    signer: &dyn PackageSigner,
    header: Box<RpmHeader>,
    head: Vec<u8>,
) -> Result<(Box<RpmHeader>, Vec<u8>), RpmError> {
    let main = &head[header.header_start as usize..header.header_end as usize];
    let signature = signer
        .sign_header(main)
        .map_err(|e| RpmError::Store(format!("signing {}: {}", header.nevra(), e.0)))?;
    let signed = header::with_header_signature(&head, &header, &signature)?;
    match header::parse(&signed)? {
        Parsed::Done(h) => Ok((h, signed)),
        Parsed::NeedMore(_) => Err(RpmError::Package(format!(
            "{}: its signed copy does not read back",
            header.nevra()
        ))),
    }
}

impl Session {
    /// The repository changed.
    pub fn repo(&self) -> &RepoName {
        &self.repo
    }

    /// The staged snapshot's number.
    pub fn number(&self) -> i64 {
        self.staged.record().number
    }

    /// Adds one package streamed from `body`: its headers are read and
    /// checked first (digest, the size the signature header states), then the
    /// whole file is streamed into the store. A package of the same
    /// `NAME-VERSION-RELEASE.ARCH` already present is refused.
    pub async fn add_package(&self, mut body: ByteStream) -> Result<AddedPackage, RpmError> {
        let (header, head) = read_headers(&mut body).await?;
        if let Some(verifier) = &self.hosted.verifier {
            let Some(signature) = &header.header_signature else {
                return Err(RpmError::Package(format!(
                    "{} is not signed, and {} takes only signed packages",
                    header.nevra(),
                    self.repo
                )));
            };
            let signed = &head[header.header_start as usize..header.header_end as usize];
            verifier.verify(signed, signature).map_err(|e| {
                RpmError::Package(format!(
                    "{}: its signature is not one a trusted key made ({})",
                    header.nevra(),
                    e.0
                ))
            })?;
        }
        let (header, head) = match self.hosted.package_signer(&self.repo) {
            Some(signer) => sign_copy(signer.as_ref(), header, head)?,
            None => (header, head),
        };
        let path = tree_path(&format!("{PACKAGES_DIR}/{}.rpm", header.nvra()))?;
        let limit = self.hosted.max_upload_bytes;
        let expected = header.signed_size.map(|s| header.header_start + s);
        if let Some(size) = expected.filter(|&s| s > limit) {
            return Err(RpmError::TooLarge(format!(
                "{} is {size} bytes, more than the {limit} bytes an upload may be",
                header.nvra()
            )));
        }
        self.reserve(&path, &header).await?;
        let result = self
            .store_package(&path, &header, head, body, expected)
            .await;
        self.reserved.lock().expect("reserved").remove(&path);
        let (entry, added) = result?;
        let flush = {
            let mut pending = self.pending.lock().expect("pending");
            pending.push(entry.clone());
            pending.len() >= BATCH
        };
        self.ops.lock().expect("ops").push(Op::Put(entry));
        if flush {
            self.flush().await?;
        }
        Ok(added)
    }

    /// Refuses a package already in the snapshot or being uploaded in this
    /// session, and marks it as being uploaded.
    async fn reserve(&self, path: &TreePath, header: &RpmHeader) -> Result<(), RpmError> {
        let taken = || {
            RpmError::Conflict(format!(
                "{} already holds {}; remove it first",
                self.repo,
                header.nvra()
            ))
        };
        if !self.reserved.lock().expect("reserved").insert(path.clone()) {
            return Err(taken());
        }
        let pending = self
            .pending
            .lock()
            .expect("pending")
            .iter()
            .any(|e| &e.path == path);
        let recorded = match self.staged.entry(path).await {
            Ok(e) => e.is_some(),
            Err(e) => {
                self.reserved.lock().expect("reserved").remove(path);
                return Err(store(e));
            }
        };
        if pending || recorded {
            self.reserved.lock().expect("reserved").remove(path);
            return Err(taken());
        }
        Ok(())
    }

    /// Streams a package whose headers were read into the store, unrecorded,
    /// failing when the stream ends short of or runs past `expected`.
    async fn store_package(
        &self,
        path: &TreePath,
        header: &RpmHeader,
        head: Vec<u8>,
        body: ByteStream,
        expected: Option<u64>,
    ) -> Result<(SnapshotEntry, AddedPackage), RpmError> {
        let limit = self.hosted.max_upload_bytes;
        let problem: Arc<Mutex<Option<RpmError>>> = Arc::default();
        let counted = {
            let problem = problem.clone();
            let mut seen = 0u64;
            let first = futures_util::stream::iter([Ok(Bytes::from(head))]);
            let mut inner = first.chain(body);
            let mut ended = false;
            futures_util::stream::poll_fn(move |cx| {
                if ended {
                    return std::task::Poll::Ready(None);
                }
                let item = std::task::ready!(inner.poll_next_unpin(cx));
                let fail = |e: RpmError| {
                    let msg = e.to_string();
                    *problem.lock().expect("problem") = Some(e);
                    std::task::Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        msg,
                    ))))
                };
                match item {
                    Some(Ok(chunk)) => {
                        seen += chunk.len() as u64;
                        if expected.is_some_and(|e| seen > e) {
                            ended = true;
                            return fail(RpmError::Package(format!(
                                "the file is longer than its signature header says ({} bytes)",
                                expected.unwrap_or_default()
                            )));
                        }
                        if seen > limit {
                            ended = true;
                            return fail(RpmError::TooLarge(format!(
                                "the upload is larger than the {limit} bytes an upload may be"
                            )));
                        }
                        std::task::Poll::Ready(Some(Ok(chunk)))
                    }
                    Some(Err(e)) => std::task::Poll::Ready(Some(Err(e))),
                    None => {
                        ended = true;
                        match expected {
                            Some(e) if seen < e => fail(RpmError::Package(format!(
                                "the file is truncated: {seen} of the {e} bytes its signature header states"
                            ))),
                            _ => std::task::Poll::Ready(None),
                        }
                    }
                }
            })
        };
        let stored = match self.staged.store_unrecorded(Box::pin(counted)).await {
            Ok(s) => s,
            Err(e) => {
                if let Some(problem) = problem.lock().expect("problem").take() {
                    return Err(problem);
                }
                return Err(store(e));
            }
        };
        let entry = SnapshotEntry {
            path: path.clone(),
            blob: stored.digest.clone(),
            size: stored.size,
            modified_at: wharf_meta::unix_now(),
        };
        let added = AddedPackage {
            nevra: header.nevra(),
            path: path.as_str().to_string(),
            sha256: stored.digest.hex().to_string(),
            size: stored.size,
            signed: header.signed,
        };
        Ok((entry, added))
    }

    /// Records the packages stored so far, in one transaction.
    pub(crate) async fn flush(&self) -> Result<(), RpmError> {
        let pending = std::mem::take(&mut *self.pending.lock().expect("pending"));
        if pending.is_empty() {
            return Ok(());
        }
        self.staged.record_stored(&pending).await.map_err(store)
    }

    /// Removes the package `NAME-[EPOCH:]VERSION-RELEASE.ARCH`.
    pub async fn remove_package(&self, nevra: &str) -> Result<(), RpmError> {
        self.flush().await?;
        // The path carries no epoch: `name-2:1.0-1.x` is `name-1.0-1.x`.
        let nvra = match nevra.split_once(':') {
            Some((left, right)) => match left.rsplit_once('-') {
                Some((name, epoch)) if epoch.bytes().all(|b| b.is_ascii_digit()) => {
                    format!("{name}-{right}")
                }
                _ => nevra.to_string(),
            },
            None => nevra.to_string(),
        };
        let nvra = nvra.strip_suffix(".rpm").unwrap_or(&nvra);
        let path = tree_path(&format!("{PACKAGES_DIR}/{nvra}.rpm"))?;
        if nvra.contains('/')
            || self
                .staged
                .remove(std::slice::from_ref(&path))
                .await
                .map_err(store)?
                == 0
        {
            return Err(RpmError::NotFound(format!(
                "{} has no package {nevra}",
                self.repo
            )));
        }
        self.ops.lock().expect("ops").push(Op::Remove(vec![path]));
        Ok(())
    }

    /// Replaces the comps (group) file with `bytes`, kept as uploaded.
    pub async fn put_comps(&self, bytes: Bytes) -> Result<(), RpmError> {
        self.put_extra("comps.xml", bytes).await
    }

    /// Replaces the updateinfo file with `bytes`, kept as uploaded.
    pub async fn put_updateinfo(&self, bytes: Bytes) -> Result<(), RpmError> {
        self.put_extra("updateinfo.xml", bytes).await
    }

    async fn put_extra(&self, suffix: &'static str, bytes: Bytes) -> Result<(), RpmError> {
        // Well-formed XML at least: a broken file would break every client.
        let mut reader = quick_xml::Reader::from_reader(bytes.as_ref());
        let mut buf = Vec::new();
        let mut elements = 0;
        loop {
            match reader.read_event_into(&mut buf) {
                Ok(quick_xml::events::Event::Eof) => break,
                Ok(quick_xml::events::Event::Start(_)) => elements += 1,
                Ok(_) => {}
                Err(e) => {
                    return Err(RpmError::Package(format!(
                        "{suffix} is not well-formed XML: {e}"
                    )))
                }
            }
            buf.clear();
        }
        if elements == 0 {
            return Err(RpmError::Package(format!("{suffix} holds no XML element")));
        }
        self.flush().await?;
        let digest = Digest::sha256_of(&bytes);
        let path = tree_path(&format!("repodata/{}-{suffix}", digest.hex()))?;
        let now = wharf_meta::unix_now();
        let stored = self
            .staged
            .put_bytes(&path, bytes, Some(&digest), now)
            .await
            .map_err(store)?;
        let entry = SnapshotEntry {
            path,
            blob: stored.digest,
            size: stored.size,
            modified_at: now,
        };
        self.replace_extra(suffix, &entry).await?;
        self.ops
            .lock()
            .expect("ops")
            .push(Op::Extra { suffix, entry });
        Ok(())
    }

    /// Removes every `…-SUFFIX` file of `repodata/` but `keep`'s.
    async fn replace_extra(&self, suffix: &str, keep: &SnapshotEntry) -> Result<(), RpmError> {
        let old: Vec<TreePath> = self
            .repodata()
            .await?
            .into_iter()
            .filter(|p| p.file_name().ends_with(&format!("-{suffix}")) && *p != keep.path)
            .collect();
        self.staged.remove(&old).await.map_err(store)?;
        Ok(())
    }

    async fn repodata(&self) -> Result<Vec<TreePath>, RpmError> {
        let dir = tree_path("repodata")?;
        self.paths_under(&dir).await
    }

    /// Every path of the snapshot below `dir`.
    async fn paths_under(&self, dir: &TreePath) -> Result<Vec<TreePath>, RpmError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .staged
                .entries(Some(dir), after.as_ref(), PAGE)
                .await
                .map_err(store)?;
            out.extend(page.iter().map(|e| e.path.clone()));
            match page.last() {
                Some(last) if page.len() == PAGE as usize => after = Some(last.path.clone()),
                _ => return Ok(out),
            }
        }
    }

    /// Removes `paths` from the snapshot.
    pub(crate) async fn staged_remove(&self, paths: &[TreePath]) -> Result<u64, RpmError> {
        self.staged.remove(paths).await.map_err(store)
    }

    /// The repository's published snapshot or its snapshot `number`, for reading.
    pub(crate) fn hosted(&self) -> &Hosted {
        &self.hosted
    }

    /// Removes everything from the snapshot (before a whole snapshot is copied in).
    pub(crate) async fn clear(&self) -> Result<(), RpmError> {
        self.flush().await?;
        for dir in [PACKAGES_DIR, "repodata"] {
            let paths = self.paths_under(&tree_path(dir)?).await?;
            self.staged.remove(&paths).await.map_err(store)?;
        }
        Ok(())
    }

    /// Records stored files (promoted packages) in one transaction; refuses a
    /// package path the snapshot holds with other bytes.
    pub(crate) async fn put_existing(&self, entries: &[SnapshotEntry]) -> Result<(), RpmError> {
        self.flush().await?;
        let mut new = Vec::new();
        for e in entries {
            match self.staged.entry(&e.path).await.map_err(store)? {
                Some(held) if held.blob == e.blob => {}
                Some(_) => {
                    return Err(RpmError::Conflict(format!(
                        "{} already holds {} with other bytes; remove it first",
                        self.repo, e.path
                    )))
                }
                None => new.push(ExistingEntry {
                    path: e.path.clone(),
                    blob: e.blob.clone(),
                    modified_at: e.modified_at,
                }),
            }
        }
        for chunk in new.chunks(PAGE as usize) {
            let missing = self.staged.put_existing_many(chunk).await.map_err(store)?;
            if let Some(d) = missing.first() {
                return Err(RpmError::Store(format!("blob {d} is no longer stored")));
            }
        }
        Ok(())
    }

    /// Makes the recorded changes again over a snapshot staged from what is
    /// published now (another writer published since this session began).
    async fn replay(&mut self) -> Result<(), RpmError> {
        let base = self.hosted.published_id(&self.repo).await?;
        let staged = self
            .hosted
            .snapshots
            .stage(
                &self.repo,
                RepositoryKind::Rpm,
                Base::Published,
                &self.staged.record().note,
            )
            .await
            .map_err(store)?;
        let old = std::mem::replace(&mut self.staged, staged);
        let _ = old.discard().await;
        self.base = base;
        let ops = self.ops.lock().expect("ops").clone();
        let mut puts: Vec<SnapshotEntry> = Vec::new();
        for op in ops {
            if let Op::Put(entry) = op {
                puts.push(entry);
                continue;
            }
            self.put_existing(&std::mem::take(&mut puts)).await?;
            match op {
                Op::Put(_) => unreachable!("handled above"),
                Op::Extra { suffix, entry } => {
                    self.put_existing(std::slice::from_ref(&entry)).await?;
                    self.replace_extra(suffix, &entry).await?;
                }
                Op::Remove(paths) => {
                    self.staged.remove(&paths).await.map_err(store)?;
                }
                Op::Clear => self.clear().await?,
                Op::KeepNewest(n) => {
                    self.keep_newest(n).await?;
                }
            }
        }
        self.put_existing(&puts).await
    }

    /// Discards the staged snapshot.
    pub async fn abort(self) -> Result<(), RpmError> {
        self.staged.discard().await.map_err(store)
    }

    /// Writes the metadata into the snapshot and publishes it (unless
    /// `publish` is false: then it stays staged, complete, for `wharf
    /// snapshot publish`). The repository's retention runs first. When
    /// another writer (another process) published since this session began,
    /// the session's changes are made again over that snapshot, so neither
    /// change is lost. Any failure discards the snapshot.
    pub async fn finish(mut self, publish: bool) -> Result<Finished, RpmError> {
        let result = async {
            self.flush().await?;
            if let Some(&keep) = self.hosted.keep_versions.get(&self.repo) {
                if keep > 0 {
                    self.keep_newest(keep).await?;
                    self.ops.lock().expect("ops").push(Op::KeepNewest(keep));
                }
            }
            let mut attempt = 1;
            loop {
                let packages = self.write_metadata().await?;
                if !publish {
                    return Ok((packages, false));
                }
                // Checked in the publishing transaction: a change another
                // process published since this one began is never undone.
                if self
                    .staged
                    .publish_replacing(self.base.as_ref())
                    .await
                    .map_err(store)?
                {
                    return Ok((packages, true));
                }
                if attempt == ATTEMPTS {
                    return Err(RpmError::Conflict(format!(
                        "{} kept changing while this change was published; nothing was published, try again",
                        self.repo
                    )));
                }
                attempt += 1;
                self.replay().await?;
            }
        }
        .await;
        match result {
            Ok((packages, published)) => {
                let number = self.number();
                if published {
                    if let Err(e) = self
                        .hosted
                        .snapshots
                        .prune(&self.repo, self.hosted.keep_retired)
                        .await
                    {
                        tracing::warn!(repository = %self.repo, "pruning retired snapshots: {e}");
                    }
                }
                if published
                    && self
                        .hosted
                        .compositions
                        .iter()
                        .any(|c| c.members.contains(&self.repo))
                {
                    // Its own change is published; the compositions follow
                    // (`refresh_composed` is boxed: a composition publishes through here).
                    let (hosted, repo) = (self.hosted.clone(), self.repo.clone());
                    drop(self);
                    hosted.refresh_composed(&repo).await;
                }
                Ok(Finished {
                    number,
                    published,
                    packages,
                })
            }
            Err(e) => {
                let _ = self.staged.discard().await;
                Err(e)
            }
        }
    }

    /// The packages' entries, page by page.
    async fn packages_page(
        &self,
        after: Option<&TreePath>,
    ) -> Result<Vec<wharf_meta::SnapshotEntry>, RpmError> {
        let dir = tree_path(PACKAGES_DIR)?;
        Ok(self
            .staged
            .entries(Some(&dir), after, PAGE)
            .await
            .map_err(store)?
            .into_iter()
            .filter(|e| e.path.as_str().ends_with(".rpm"))
            .collect())
    }

    /// A stored package's headers, read from the start of its blob.
    pub(crate) async fn stored_header(
        &self,
        entry: &wharf_meta::SnapshotEntry,
    ) -> Result<Box<RpmHeader>, RpmError> {
        stored_header(&self.hosted.snapshots, entry).await
    }

    /// The packages' entries after `after`, one page.
    pub(crate) async fn package_entries(
        &self,
        after: Option<&TreePath>,
    ) -> Result<Vec<wharf_meta::SnapshotEntry>, RpmError> {
        self.packages_page(after).await
    }
}

/// A stored package's headers, read from the start of its blob.
pub(crate) async fn stored_header(
    snapshots: &Snapshots,
    entry: &wharf_meta::SnapshotEntry,
) -> Result<Box<RpmHeader>, RpmError> {
    let (header, _) = crate::package::stored_header(
        snapshots.blobs(),
        &entry.blob,
        entry.size,
        entry.path.as_str(),
    )
    .await?;
    Ok(header)
}

/// Many stored packages' headers, read together, in their order.
async fn stored_headers(
    snapshots: &Snapshots,
    entries: &[SnapshotEntry],
) -> Vec<Result<Box<RpmHeader>, RpmError>> {
    let packages: Vec<_> = entries
        .iter()
        .map(|e| (&e.blob, e.size, e.path.as_str()))
        .collect();
    crate::package::stored_headers(snapshots.blobs(), &packages).await
}

impl Session {
    async fn write_metadata(&self) -> Result<u64, RpmError> {
        let io = |e: std::io::Error| RpmError::Store(format!("writing metadata: {e}"));
        // The previous metadata goes; uploaded comps and updateinfo stay.
        let generated: Vec<TreePath> = self
            .repodata()
            .await?
            .into_iter()
            .filter(|p| {
                let n = p.file_name();
                !n.ends_with("-comps.xml") && !n.ends_with("-updateinfo.xml")
            })
            .collect();
        self.staged.remove(&generated).await.map_err(store)?;

        let mut count = 0u64;
        let mut after: Option<TreePath> = None;
        loop {
            let page = self.packages_page(after.as_ref()).await?;
            count += page.len() as u64;
            match page.last() {
                Some(last) if page.len() == PAGE as usize => after = Some(last.path.clone()),
                _ => break,
            }
        }

        // Each file is written on a thread of its own while the headers are
        // read here: the XML and its compression are most of the work, and
        // they need not wait on the store's reads or on each other.
        let mut writers = Vec::new();
        for kind in [Kind::Primary, Kind::Filelists, Kind::Other] {
            let file = tempfile::tempfile().map_err(io)?;
            let mut writer =
                MetadataWriter::start(kind, count, std::io::BufWriter::new(file)).map_err(io)?;
            let (queue, mut packages) =
                tokio::sync::mpsc::channel::<Arc<StoredPackage>>(WRITER_QUEUE);
            let thread = tokio::task::spawn_blocking(move || {
                while let Some(p) = packages.blocking_recv() {
                    writer.package(&p.record())?;
                }
                Ok::<_, std::io::Error>((kind, writer.finish()?))
            });
            writers.push((queue, thread));
        }
        let mut after: Option<TreePath> = None;
        let mut written = 0u64;
        'pages: loop {
            let page = self.packages_page(after.as_ref()).await?;
            // The headers are read a group at a time (one trip to the store
            // each), the next group while this one is queued to the writers.
            // Each future owns what it reads (no borrow of the page), which
            // keeps the session's futures `Send` for any caller.
            let read = |group: &[SnapshotEntry]| {
                let snapshots = self.hosted.snapshots.clone();
                let group = group.to_vec();
                async move {
                    let headers = stored_headers(&snapshots, &group).await;
                    (group, headers)
                }
            };
            let mut groups = page.chunks(HEADERS_PER_READ);
            let mut reads = futures_util::stream::FuturesOrdered::new();
            for group in groups.by_ref().take(GROUPS_AT_ONCE) {
                reads.push_back(read(group));
            }
            while let Some((group, headers)) = reads.next().await {
                if let Some(next) = groups.next() {
                    reads.push_back(read(next));
                }
                for (entry, header) in group.into_iter().zip(headers) {
                    let package = Arc::new(StoredPackage {
                        header: header?,
                        entry,
                    });
                    for (queue, _) in &writers {
                        if queue.send(package.clone()).await.is_err() {
                            // That writer failed: its error is taken below.
                            break 'pages;
                        }
                    }
                    written += 1;
                }
            }
            match page.last() {
                Some(last) if page.len() == PAGE as usize => after = Some(last.path.clone()),
                _ => break,
            }
        }
        let mut finished = Vec::new();
        for (queue, thread) in writers {
            drop(queue);
            let done = thread
                .await
                .map_err(|e| RpmError::Store(format!("writing metadata: {e}")))?;
            finished.push(done.map_err(io)?);
        }
        if written != count {
            return Err(RpmError::Store(format!(
                "the package list changed while metadata was written ({count} then {written})"
            )));
        }

        let now = wharf_meta::unix_now();
        let mut records = Vec::new();
        let mut files = Vec::new();
        for (kind, (out, w)) in finished {
            let mut file = out.into_inner().map_err(|e| io(e.into_error()))?;
            file.flush().map_err(io)?;
            file.rewind().map_err(io)?;
            let href = format!("repodata/{}-{}.xml.gz", w.checksum, kind.name());
            let digest = Digest::parse(&format!("sha256:{}", w.checksum))
                .map_err(|e| RpmError::Store(e.to_string()))?;
            // A small file goes in memory, so it joins the group commit's
            // in-memory batch with the others.
            let body = if w.size <= IN_MEMORY_METADATA_BYTES {
                let mut bytes = Vec::with_capacity(w.size as usize);
                std::io::Read::read_to_end(&mut file, &mut bytes).map_err(io)?;
                MetadataBody::Bytes(Bytes::from(bytes))
            } else {
                MetadataBody::File(tokio::fs::File::from_std(file), digest)
            };
            files.push((tree_path(&href)?, body));
            records.push(RepomdEntry {
                kind: kind.name().to_string(),
                href,
                checksum: w.checksum,
                size: w.size,
                open: Some((w.open_checksum, w.open_size)),
                timestamp: now,
            });
        }
        let dir = tree_path("repodata")?;
        for entry in self
            .staged
            .entries(Some(&dir), None, PAGE)
            .await
            .map_err(store)?
        {
            let name = entry.path.file_name();
            let kind = if name.ends_with("-comps.xml") {
                "group"
            } else if name.ends_with("-updateinfo.xml") {
                "updateinfo"
            } else {
                continue;
            };
            records.push(RepomdEntry {
                kind: kind.into(),
                href: entry.path.as_str().to_string(),
                checksum: entry.blob.hex().to_string(),
                size: entry.size,
                open: None,
                timestamp: entry.modified_at,
            });
        }
        let repomd = createrepo::repomd_xml(now, &records);
        if let Some(signer) = &self.hosted.signer {
            let asc = signer
                .sign_armored(&repomd)
                .map_err(|e| RpmError::Store(format!("signing repomd.xml: {e}")))?;
            files.push((
                tree_path("repodata/repomd.xml.asc")?,
                MetadataBody::Bytes(Bytes::from(asc)),
            ));
        }
        files.push((
            tree_path("repodata/repomd.xml")?,
            MetadataBody::Bytes(Bytes::from(repomd)),
        ));
        // All at once: the group commit makes them durable together. The
        // order inside the staged snapshot does not matter, as publishing
        // switches all of them at once.
        let staged = &self.staged;
        let puts = files.into_iter().map(|(path, body)| async move {
            match body {
                MetadataBody::Bytes(bytes) => staged.put_bytes(&path, bytes, None, now).await,
                MetadataBody::File(file, digest) => {
                    staged.put_reader(&path, file, Some(&digest), now).await
                }
            }
        });
        futures_util::future::try_join_all(puts)
            .await
            .map_err(store)?;
        Ok(count)
    }
}
