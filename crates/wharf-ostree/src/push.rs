//! Pushing a commit over the network (`/api/v1/ostree/<repo>/…` in
//! `wharf-http`, `wharf ostree push` in the binary): the client asks which
//! objects the server lacks ([`Push::missing`]), uploads only those
//! ([`Push::put_object`]), then moves a ref ([`Push::move_ref`]).
//!
//! **Where uploaded objects wait.** Each repository has one *push session*: a
//! snapshot staged from nothing with the note [`SESSION_NOTE`], never
//! published. An uploaded object is verified exactly as a mirrored one is
//! (`object::verify_metadata`: a metadata object by the SHA-256 of its bytes
//! and its GVariant normal form, a `.filez` by its header and inflated
//! content) and only then recorded there, under a live claim, so the blob is
//! held by `blob_refs` from the transaction that records it and the collector
//! never takes it; a crash or a second server process loses nothing, since
//! the session is in the database. Objects of an abandoned push are dropped
//! once they are older than `ostree.push_session_ttl_secs`
//! ([`Push::expire_sessions`], the `ostree-sessions:expire` job), and a
//! session left empty is discarded; the collector then reclaims their bytes.
//!
//! **Moving a ref** stages a snapshot from the published one and walks the
//! commit: an object the published snapshot holds is a complete subtree (the
//! invariant every OSTree snapshot keeps), one the session holds is recorded
//! into the new snapshot by blob reference (children before the dirtrees and
//! commit naming them) and read to go on walking, and anything else is
//! missing, which refuses the move naming the objects. Then the ref, Wharf's
//! signature on the commit, static deltas, retention and Wharf's own signed
//! summary are written as `wharf ostree commit` writes them, and the snapshot
//! is published only if the repository still publishes the one it was staged
//! from (else it is staged again, up to [`PUBLISH_ATTEMPTS`] times), so two
//! pushes never undo each other. Only what the move took leaves the session.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt, TryStreamExt};
use wharf_core::{Digest, RepoName, RepositoryKind, TreePath};
use wharf_meta::{ExistingEntry, MetaError, SnapshotId, SnapshotState};
use wharf_sign::SigningKeys;
use wharf_snapshot::{Base, SnapshotError, Snapshots, Staged};

use crate::commit::{digest, read_entry, tree_path, write_summary, CommitError};
use crate::object::{
    parse_ref_file, validate_ref_name, verify_metadata, Checksum, Commit, DirTree, FilezVerifier,
    ObjectError, ObjectName, ObjectType,
};
use crate::retention::Retention;

/// The note of a repository's push session (a staged snapshot never published).
pub const SESSION_NOTE: &str = "ostree-push-session";

/// Object names one [`Push::missing`] call takes.
pub const MAX_NAMES: usize = 10_000;

/// How often a ref move stages again when another writer published meanwhile.
pub const PUBLISH_ATTEMPTS: usize = 8;

/// Missing objects named in an error message, at most.
const NAMED_MISSING: usize = 10;

/// Entries recorded per transaction when a move takes objects from the session.
const RECORD_BATCH: usize = 500;

/// A request body.
pub type Body = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// Why a push request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// An object name or path that is not `CHECKSUM.EXT` (`XX/REST.EXT`).
    #[error("{0}")]
    BadName(String),
    /// Bytes that are not the object their name says.
    #[error("object {name}: {source}")]
    BadObject {
        name: ObjectName,
        #[source]
        source: ObjectError,
    },
    /// A body larger than the configured cap.
    #[error("the object is larger than this server takes (ostree.max_object_bytes = {0})")]
    TooLarge(u64),
    /// A malformed request: a bad ref name or checksum, too many names.
    #[error("{0}")]
    Invalid(String),
    /// The commit reaches objects neither published nor uploaded.
    #[error(
        "commit {commit} reaches {} object(s) this server does not hold; upload them first: {}",
        missing.len(),
        name_some(missing)
    )]
    Missing {
        commit: Checksum,
        missing: Vec<ObjectName>,
    },
    /// `parent` was given and the ref is elsewhere.
    #[error("ref {branch} is at {}, not at the expected {expected}", actual.map(|c| c.to_string()).unwrap_or_else(|| "nothing".into()))]
    Stale {
        branch: String,
        expected: Checksum,
        actual: Option<Checksum>,
    },
    /// The repository cannot take pushes (a mirror fills it, it is of
    /// another kind, or other writers kept publishing).
    #[error("{0}")]
    Conflict(String),
    /// The snapshot layer failed (storage, database).
    #[error("{0}")]
    Snapshot(#[from] SnapshotError),
    /// Writing the summary, deltas, retention or a signature failed.
    #[error("{0}")]
    Failed(String),
}

fn name_some(names: &[ObjectName]) -> String {
    let mut s: Vec<String> = names
        .iter()
        .take(NAMED_MISSING)
        .map(ToString::to_string)
        .collect();
    if names.len() > NAMED_MISSING {
        s.push(format!("and {} more", names.len() - NAMED_MISSING));
    }
    s.join(", ")
}

impl From<MetaError> for PushError {
    fn from(e: MetaError) -> PushError {
        PushError::Snapshot(SnapshotError::Meta(e))
    }
}

impl From<CommitError> for PushError {
    fn from(e: CommitError) -> PushError {
        match e {
            CommitError::Snapshot(e) => PushError::Snapshot(e),
            other => PushError::Failed(other.to_string()),
        }
    }
}

/// What [`Push::expire_sessions`] dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    /// Objects dropped from sessions, no ref move having taken them.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Sessions discarded because nothing was left in them.
    pub sessions: u64,
}

/// The job (if any) to queue once a ref move of a repository is published.
pub type QueueAfterMove = Box<dyn Fn(&RepoName) -> Option<wharf_meta::NewJob> + Send + Sync>;

/// What a push may do, lowered by the binary from the configuration.
pub struct PushSettings {
    /// Wharf's keys: they sign each pushed commit and the summary.
    pub signer: Option<Arc<SigningKeys>>,
    /// `[[ostree.retention]]` for a repository.
    pub retention: Box<dyn Fn(&RepoName) -> Retention + Send + Sync>,
    /// The job queued after a ref move published a snapshot of a
    /// repository (the binary's `ostree-deltas:REPO`), if any.
    pub queue_after_move: QueueAfterMove,
    /// The largest object one upload may be (it is verified in memory).
    pub max_object_bytes: u64,
    /// Repositories `[[ostree.remotes]]` fill, which take no push.
    pub mirrored: Vec<RepoName>,
    /// Retired snapshots kept after a move (`publish.keep_retired`).
    pub keep_retired: u32,
}

impl std::fmt::Debug for PushSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushSettings")
            .field("signer", &self.signer.is_some())
            .field("max_object_bytes", &self.max_object_bytes)
            .field("mirrored", &self.mirrored)
            .field("keep_retired", &self.keep_retired)
            .finish_non_exhaustive()
    }
}

/// The push side of OSTree repositories.
#[derive(Debug, Clone)]
pub struct Push {
    snapshots: Snapshots,
    settings: Arc<PushSettings>,
    /// Within a process, one session is created per repository (another
    /// process may create a second; every reader looks at all of them).
    session_lock: Arc<tokio::sync::Mutex<()>>,
}

/// What an upload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Recorded in the push session.
    New,
    /// Already published or uploaded; nothing was kept.
    Held,
}

/// What a ref move did.
#[derive(Debug, Clone)]
pub struct RefMoved {
    pub branch: String,
    pub commit: Checksum,
    /// The commit the ref named before.
    pub previous: Option<Checksum>,
    /// Objects taken from the push session into the published snapshot.
    pub objects: u64,
    /// The snapshot published; `None` when the ref already named the commit.
    pub snapshot: Option<i64>,
}

/// Parses `CHECKSUM.EXT` (`ext`: commit, commitmeta, dirtree, dirmeta, filez).
pub fn parse_object_name(s: &str) -> Result<ObjectName, PushError> {
    let bad = || {
        PushError::BadName(format!(
            "{s:?} is not an object name (CHECKSUM.commit|commitmeta|dirtree|dirmeta|filez)"
        ))
    };
    let (hex, ext) = s.split_once('.').ok_or_else(bad)?;
    let kind = match ext {
        "commit" => ObjectType::Commit,
        "commitmeta" => ObjectType::CommitMeta,
        "dirtree" => ObjectType::DirTree,
        "dirmeta" => ObjectType::DirMeta,
        "filez" => ObjectType::File,
        _ => return Err(bad()),
    };
    let checksum = Checksum::from_hex(hex).map_err(|_| bad())?;
    Ok(ObjectName::new(checksum, kind))
}

/// Parses the path form `XX/REST.EXT` (what follows `objects/`).
pub fn parse_object_path(s: &str) -> Result<ObjectName, PushError> {
    match s.split_once('/') {
        Some((xx, rest)) if xx.len() == 2 && !rest.contains('/') => {
            parse_object_name(&format!("{xx}{rest}"))
        }
        _ => Err(PushError::BadName(format!(
            "{s:?} is not an object path (XX/REST.EXT)"
        ))),
    }
}

fn object_path(name: &ObjectName) -> Result<TreePath, PushError> {
    Ok(tree_path(&name.path())?)
}

fn ref_path(branch: &str) -> Result<TreePath, PushError> {
    Ok(tree_path(&format!("refs/heads/{branch}"))?)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The objects a walk reaches from one object: a commit's root dirtree and
/// dirmeta, a dirtree's files, subdirectories and their dirmeta.
pub fn children(name: &ObjectName, bytes: &[u8]) -> Result<Vec<ObjectName>, PushError> {
    let bad = |source| PushError::BadObject {
        name: *name,
        source,
    };
    Ok(match name.kind {
        ObjectType::Commit => {
            let c = Commit::parse(bytes).map_err(bad)?;
            vec![
                ObjectName::new(c.root_tree, ObjectType::DirTree),
                ObjectName::new(c.root_meta, ObjectType::DirMeta),
            ]
        }
        ObjectType::DirTree => {
            let t = DirTree::parse(bytes).map_err(bad)?;
            let mut out: Vec<ObjectName> = t
                .files
                .iter()
                .map(|(_, c)| ObjectName::new(*c, ObjectType::File))
                .collect();
            for (_, tree, meta) in &t.dirs {
                out.push(ObjectName::new(*tree, ObjectType::DirTree));
                out.push(ObjectName::new(*meta, ObjectType::DirMeta));
            }
            out
        }
        _ => Vec::new(),
    })
}

/// Refuses a commit whose `ostree.ref-binding` does not name `branch`: every
/// client pulling `branch` would refuse it.
fn check_binding(branch: &str, commit: Checksum, bytes: &[u8]) -> Result<(), PushError> {
    let name = ObjectName::new(commit, ObjectType::Commit);
    let parsed = Commit::parse(bytes).map_err(|source| PushError::BadObject { name, source })?;
    let Some(crate::gvariant::Value::Array(_, bound)) = parsed.meta("ostree.ref-binding") else {
        return Ok(());
    };
    let bound: Vec<&str> = bound
        .iter()
        .filter_map(|v| match v {
            crate::gvariant::Value::Str(s) => Some(s.as_str()),
            _ => None,
        })
        .collect();
    if bound.contains(&branch) {
        return Ok(());
    }
    Err(PushError::Invalid(format!(
        "commit {commit} is bound to {bound:?} (ostree.ref-binding), so clients pulling {branch} would refuse it; commit with -b {branch}"
    )))
}

/// One object of a local repository's closure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalObject {
    pub name: ObjectName,
    pub file: PathBuf,
    pub size: u64,
}

/// The objects a commit of the local archive repository at `root` reaches
/// (with its `.commitmeta` when there is one), each once, read on the
/// calling thread; an object missing locally or not what its name says is
/// an error, so nothing broken is offered to the server.
pub fn local_closure(root: &Path, commit: Checksum) -> Result<Vec<LocalObject>, PushError> {
    let config = std::fs::read_to_string(root.join("config")).map_err(|e| {
        PushError::Invalid(format!("{}: not an ostree repository: {e}", root.display()))
    })?;
    let mode = config
        .lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == "mode")
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    if mode != "archive" && mode != "archive-z2" {
        return Err(PushError::Invalid(format!(
            "{}: mode={mode}; only archive repositories can be pushed (ostree init --mode=archive)",
            root.display()
        )));
    }
    let mut seen = HashSet::new();
    let mut stack = vec![ObjectName::new(commit, ObjectType::Commit)];
    let mut out = Vec::new();
    let meta = ObjectName::new(commit, ObjectType::CommitMeta);
    let meta_file = root.join(meta.path());
    if let Ok(m) = std::fs::metadata(&meta_file) {
        out.push(LocalObject {
            name: meta,
            file: meta_file,
            size: m.len(),
        });
    }
    while let Some(name) = stack.pop() {
        if !seen.insert(name) {
            continue;
        }
        let file = root.join(name.path());
        let size = std::fs::metadata(&file)
            .map_err(|e| PushError::Invalid(format!("{}: {e}", file.display())))?
            .len();
        if name.kind != ObjectType::File {
            let bytes = std::fs::read(&file)
                .map_err(|e| PushError::Invalid(format!("{}: {e}", file.display())))?;
            verify_metadata(&name, &bytes)
                .map_err(|source| PushError::BadObject { name, source })?;
            stack.extend(children(&name, &bytes)?);
        }
        out.push(LocalObject { name, file, size });
    }
    Ok(out)
}

/// A ref of a local repository (`refs/heads/REF`).
pub fn local_ref(root: &Path, name: &str) -> Result<Checksum, PushError> {
    if !validate_ref_name(name) {
        return Err(PushError::Invalid(format!(
            "{name:?} is not a valid ref name"
        )));
    }
    let file = root.join("refs/heads").join(name);
    let bytes =
        std::fs::read(&file).map_err(|e| PushError::Invalid(format!("{}: {e}", file.display())))?;
    parse_ref_file(&bytes).map_err(|e| PushError::Invalid(format!("{}: {e}", file.display())))
}

impl Push {
    pub fn new(snapshots: Snapshots, settings: PushSettings) -> Push {
        Push {
            snapshots,
            settings: Arc::new(settings),
            session_lock: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The largest object [`put_object`](Push::put_object) takes.
    pub fn max_object_bytes(&self) -> u64 {
        self.settings.max_object_bytes
    }

    fn refuse_mirrored(&self, repo: &RepoName) -> Result<(), PushError> {
        if self.settings.mirrored.contains(repo) {
            return Err(PushError::Conflict(format!(
                "{repo} is filled by [[ostree.remotes]]; push into a repository of its own"
            )));
        }
        Ok(())
    }

    /// The push sessions of `repo`, oldest first.
    async fn sessions(&self, repo: &RepoName) -> Result<Vec<SnapshotId>, PushError> {
        let mut found: Vec<_> = self
            .snapshots
            .list(repo)
            .await?
            .into_iter()
            .filter(|s| s.state == SnapshotState::Staged && s.note == SESSION_NOTE)
            .collect();
        found.sort_by_key(|s| s.number);
        Ok(found.into_iter().map(|s| s.id).collect())
    }

    /// Drops from the push sessions of every OSTree repository the objects
    /// uploaded before `uploaded_before` (Unix seconds) that no ref move has
    /// taken, and discards the sessions left empty. A push that resumes later
    /// is told by [`Push::missing`] to upload them again.
    pub async fn expire_sessions(&self, uploaded_before: i64) -> Result<Expired, PushError> {
        let mut expired = Expired::default();
        let repos = self
            .snapshots
            .meta()
            .list_repositories(Some(RepositoryKind::Ostree))
            .await?;
        for repo in repos {
            let _held = self.session_lock.lock().await;
            for id in self.sessions(&repo.name).await? {
                let session = self.snapshots.resume(&id).await?;
                let mut stale = Vec::new();
                let mut after: Option<TreePath> = None;
                loop {
                    let page = session
                        .entries(None, after.as_ref(), RECORD_BATCH as u32)
                        .await?;
                    let Some(last) = page.last() else { break };
                    after = Some(last.path.clone());
                    for e in &page {
                        if e.modified_at < uploaded_before {
                            expired.bytes += e.size;
                            stale.push(e.path.clone());
                        }
                    }
                }
                for chunk in stale.chunks(RECORD_BATCH) {
                    expired.objects += session.remove(chunk).await?;
                }
                if session.discard_if_empty().await? {
                    expired.sessions += 1;
                }
            }
        }
        Ok(expired)
    }

    /// The session uploads go to, created on the first upload.
    async fn session(&self, repo: &RepoName) -> Result<Staged, PushError> {
        let _held = self.session_lock.lock().await;
        if let Some(id) = self.sessions(repo).await?.into_iter().next() {
            return Ok(self.snapshots.resume(&id).await?);
        }
        match self
            .snapshots
            .stage(repo, RepositoryKind::Ostree, Base::Empty, SESSION_NOTE)
            .await
        {
            Ok(s) => Ok(s),
            Err(SnapshotError::Meta(e @ MetaError::WrongKind { .. })) => {
                Err(PushError::Conflict(e.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the published snapshot or a session of `repo` records `path`.
    async fn holds(
        &self,
        places: &[SnapshotId],
        path: &TreePath,
    ) -> Result<Option<(SnapshotId, wharf_meta::SnapshotEntry)>, PushError> {
        for id in places {
            if let Some(e) = self.snapshots.meta().snapshot_entry(id, path).await? {
                return Ok(Some((id.clone(), e)));
            }
        }
        Ok(None)
    }

    /// Of `names`, those neither published in `repo` nor uploaded to its session.
    pub async fn missing(
        &self,
        repo: &RepoName,
        names: &[ObjectName],
    ) -> Result<Vec<ObjectName>, PushError> {
        if names.len() > MAX_NAMES {
            return Err(PushError::Invalid(format!(
                "{} names in one request; ask about at most {MAX_NAMES} at a time",
                names.len()
            )));
        }
        let mut places: Vec<SnapshotId> = self
            .snapshots
            .published(repo)
            .await?
            .map(|p| p.id)
            .into_iter()
            .collect();
        places.extend(self.sessions(repo).await?);
        let mut out = Vec::new();
        for name in names {
            if self.holds(&places, &object_path(name)?).await?.is_none() {
                out.push(*name);
            }
        }
        Ok(out)
    }

    /// Reads an upload of at most the cap into memory.
    async fn read_capped(&self, declared: Option<u64>, body: Body) -> Result<Bytes, PushError> {
        let max = self.settings.max_object_bytes;
        if declared.is_some_and(|n| n > max) {
            return Err(PushError::TooLarge(max));
        }
        let mut buf = BytesMut::new();
        let mut body = body;
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|e| PushError::Invalid(format!("the body was cut off: {e}")))?;
            if (buf.len() + chunk.len()) as u64 > max {
                return Err(PushError::TooLarge(max));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }

    /// Verifies one uploaded object and records it in the push session
    /// (nothing is kept when it is not what `name` says).
    pub async fn put_object(
        &self,
        repo: &RepoName,
        name: ObjectName,
        declared: Option<u64>,
        body: Body,
    ) -> Result<Stored, PushError> {
        self.refuse_mirrored(repo)?;
        if name.kind == ObjectType::File {
            return self.put_filez(repo, name, declared, body).await;
        }
        let bytes = self.read_capped(declared, body).await?;
        let checked = bytes.clone();
        // Parsing a large dirtree is CPU work, off the runtime.
        tokio::task::spawn_blocking(move || verify_metadata(&name, &checked))
            .await
            .map_err(|e| PushError::Failed(format!("verifying {name}: {e}")))?
            .map_err(|source| PushError::BadObject { name, source })?;
        let path = object_path(&name)?;
        let session = self.session(repo).await?;
        if self.held(repo, &session, &path).await? {
            return Ok(Stored::Held);
        }
        let expected = if matches!(
            name.kind,
            ObjectType::Commit | ObjectType::DirTree | ObjectType::DirMeta
        ) {
            digest(&name.checksum)
        } else {
            Digest::sha256_of(&bytes)
        };
        session
            .put_bytes(&path, bytes, Some(&expected), now())
            .await?;
        Ok(Stored::New)
    }

    /// Whether `path` is in the published snapshot of `repo` or in `session`.
    async fn held(
        &self,
        repo: &RepoName,
        session: &Staged,
        path: &TreePath,
    ) -> Result<bool, PushError> {
        let mut places: Vec<SnapshotId> = self
            .snapshots
            .published(repo)
            .await?
            .map(|p| p.id)
            .into_iter()
            .collect();
        places.push(session.id().clone());
        Ok(self.holds(&places, path).await?.is_some())
    }

    /// A content object, verified as it streams into the store (never whole
    /// in memory, whatever its size up to the cap): the stream fails at its
    /// end unless the bytes are what `name` says, and then nothing is recorded.
    async fn put_filez(
        &self,
        repo: &RepoName,
        name: ObjectName,
        declared: Option<u64>,
        body: Body,
    ) -> Result<Stored, PushError> {
        let max = self.settings.max_object_bytes;
        if declared.is_some_and(|n| n > max) {
            return Err(PushError::TooLarge(max));
        }
        let path = object_path(&name)?;
        let session = self.session(repo).await?;
        let held = self.held(repo, &session, &path).await?;
        // Why the stream failed, when it was this check and not the store.
        let refusal: Arc<std::sync::Mutex<Option<PushError>>> = Arc::default();
        let checked = verified_filez(name, max, body, refusal.clone());
        let refused = || refusal.lock().expect("refusal").take();
        if held {
            // Checked all the same, so a bad body is refused whether or not
            // the object is already there.
            let mut checked = checked;
            while let Some(chunk) = checked.next().await {
                if let Err(e) = chunk {
                    return Err(refused().unwrap_or_else(|| {
                        PushError::Invalid(format!("the body was cut off: {e}"))
                    }));
                }
            }
            return Ok(Stored::Held);
        }
        match session.put_stream(&path, checked, None, now()).await {
            Ok(_) => Ok(Stored::New),
            Err(e) => Err(refused().unwrap_or(PushError::Snapshot(e))),
        }
    }

    /// Points `branch` of `repo` at `commit` once everything it reaches is
    /// held; with `parent`, only if the ref is still there.
    pub async fn move_ref(
        &self,
        repo: &RepoName,
        branch: &str,
        commit: Checksum,
        parent: Option<Checksum>,
    ) -> Result<RefMoved, PushError> {
        self.refuse_mirrored(repo)?;
        if !validate_ref_name(branch) {
            return Err(PushError::Invalid(format!(
                "{branch:?} is not a valid ref name"
            )));
        }
        let ref_file = ref_path(branch)?;
        for _ in 0..PUBLISH_ATTEMPTS {
            let base = self.snapshots.published(repo).await?;
            let previous = match &base {
                Some(b) => match self
                    .snapshots
                    .meta()
                    .snapshot_entry(&b.id, &ref_file)
                    .await?
                {
                    Some(e) => {
                        let bytes: Vec<Bytes> = self
                            .snapshots
                            .open(&e, None)
                            .await?
                            .try_collect()
                            .await
                            .map_err(|e| PushError::Failed(format!("reading the ref: {e}")))?;
                        Some(parse_ref_file(&bytes.concat()).map_err(|e| {
                            PushError::Failed(format!("the published ref {branch}: {e}"))
                        })?)
                    }
                    None => None,
                },
                None => None,
            };
            if let Some(expected) = parent {
                if previous != Some(expected) {
                    return Err(PushError::Stale {
                        branch: branch.to_owned(),
                        expected,
                        actual: previous,
                    });
                }
            }
            if previous == Some(commit) {
                return Ok(RefMoved {
                    branch: branch.to_owned(),
                    commit,
                    previous,
                    objects: 0,
                    snapshot: None,
                });
            }
            let staged = match self
                .snapshots
                .stage(
                    repo,
                    RepositoryKind::Ostree,
                    Base::Published,
                    &format!("ostree-push:{branch}"),
                )
                .await
            {
                Ok(s) => s,
                Err(SnapshotError::Meta(e @ MetaError::WrongKind { .. })) => {
                    return Err(PushError::Conflict(e.to_string()))
                }
                Err(e) => return Err(e.into()),
            };
            let sessions = self.sessions(repo).await?;
            let (taken, objects) = match self
                .fill(&staged, &sessions, branch, &ref_file, commit)
                .await
            {
                Ok(filled) => filled,
                Err(e) => {
                    // Nothing of a refused move is kept; the session keeps its objects.
                    let _ = staged.discard().await;
                    return Err(e);
                }
            };
            let replaced = staged.publish_replacing(base.as_ref().map(|b| &b.id)).await;
            match replaced {
                Ok(true) => {}
                Ok(false) => {
                    staged.discard().await?;
                    continue;
                }
                Err(e) => {
                    let _ = staged.discard().await;
                    return Err(e.into());
                }
            }
            // Published now, so the session no longer needs to hold them.
            for (id, paths) in taken {
                let session = self.snapshots.resume(&id).await?;
                for chunk in paths.chunks(RECORD_BATCH) {
                    session.remove(chunk).await?;
                }
            }
            if let Err(e) = self.snapshots.prune(repo, self.settings.keep_retired).await {
                tracing::warn!(repository = %repo, "pruning retired snapshots: {e}");
            }
            // The move is published: a job that cannot be queued costs a
            // delta, not the push.
            if let Some(job) = (self.settings.queue_after_move)(repo) {
                if let Err(e) = self.snapshots.meta().enqueue_job(&job).await {
                    tracing::warn!(repository = %repo, job = %job.key, "queueing: {e}");
                }
            }
            return Ok(RefMoved {
                branch: branch.to_owned(),
                commit,
                previous,
                objects,
                snapshot: Some(staged.record().number),
            });
        }
        Err(PushError::Conflict(format!(
            "{repo} was published by other writers {PUBLISH_ATTEMPTS} times during this move; try again"
        )))
    }

    /// Takes what `commit` reaches from the sessions into `staged` and writes
    /// the ref, the commit's signature and the summary; returns the
    /// session paths to let go and how many objects were taken.
    async fn fill(
        &self,
        staged: &Staged,
        sessions: &[SnapshotId],
        branch: &str,
        ref_file: &TreePath,
        commit: Checksum,
    ) -> Result<(HashMap<SnapshotId, Vec<TreePath>>, u64), PushError> {
        let now = now();
        let commit_name = ObjectName::new(commit, ObjectType::Commit);
        let mut seen = HashSet::new();
        let mut stack = vec![commit_name];
        let mut take: Vec<ExistingEntry> = Vec::new();
        let mut taken: HashMap<SnapshotId, Vec<TreePath>> = HashMap::new();
        let mut missing = Vec::new();
        while let Some(name) = stack.pop() {
            if !seen.insert(name) {
                continue;
            }
            let path = object_path(&name)?;
            // Published means complete: its subtree needs no walk. A copy
            // the session also holds (uploaded while another push published
            // it) is let go with the rest.
            if staged.entry(&path).await?.is_some() {
                if let Some((id, _)) = self.holds(sessions, &path).await? {
                    taken.entry(id).or_default().push(path);
                }
                continue;
            }
            let Some((id, entry)) = self.holds(sessions, &path).await? else {
                missing.push(name);
                continue;
            };
            if matches!(name.kind, ObjectType::Commit | ObjectType::DirTree) {
                let bytes: Vec<Bytes> = self
                    .snapshots
                    .open(&entry, None)
                    .await?
                    .try_collect()
                    .await
                    .map_err(|e| PushError::Failed(format!("reading uploaded {name}: {e}")))?;
                stack.extend(children(&name, &bytes.concat())?);
            }
            take.push(ExistingEntry {
                path: path.clone(),
                blob: entry.blob,
                modified_at: now,
            });
            taken.entry(id).or_default().push(path);
        }
        if !missing.is_empty() {
            return Err(PushError::Missing { commit, missing });
        }
        let meta_path = object_path(&ObjectName::new(commit, ObjectType::CommitMeta))?;
        if staged.entry(&meta_path).await?.is_none() {
            if let Some((id, entry)) = self.holds(sessions, &meta_path).await? {
                take.push(ExistingEntry {
                    path: meta_path.clone(),
                    blob: entry.blob,
                    modified_at: now,
                });
                taken.entry(id).or_default().push(meta_path.clone());
            }
        }
        let n_taken = take.len() as u64;
        // The walk went parent first; recording in reverse puts every child
        // in before the dirtree or commit naming it.
        take.reverse();
        for chunk in take.chunks(RECORD_BATCH) {
            let lost = staged.put_existing_many(chunk).await?;
            if let Some(d) = lost.first() {
                return Err(PushError::Failed(format!(
                    "blob {d} of the push session is no longer stored"
                )));
            }
        }
        let commit_bytes = read_entry(&self.snapshots, staged, &object_path(&commit_name)?)
            .await?
            .ok_or_else(|| PushError::Failed(format!("commit {commit} vanished")))?;
        check_binding(branch, commit, &commit_bytes)?;
        if let Some(keys) = &self.settings.signer {
            let existing = read_entry(&self.snapshots, staged, &meta_path).await?;
            let signed = crate::signature::add_signatures(keys, &commit_bytes, existing.as_deref())
                .map_err(|e| PushError::Failed(format!("signing commit {commit}: {e}")))?;
            if let Some(signed) = signed {
                staged
                    .put_bytes(&meta_path, Bytes::from(signed), None, now)
                    .await?;
            }
        }
        staged
            .put_bytes(ref_file, Bytes::from(format!("{commit}\n")), None, now)
            .await?;
        let retention = (self.settings.retention)(&staged.record().repo);
        write_summary(
            &self.snapshots,
            staged,
            self.settings.signer.as_deref(),
            &retention,
            now,
        )
        .await?;
        tracing::debug!(branch, commit = %commit, "ref staged");
        Ok((taken, n_taken))
    }
}

/// `body` passed through a [`FilezVerifier`] and the size cap. A chunk past
/// the cap, or the end of a body that is not the object `name` names, is an
/// error (its reason left in `refusal`), so whatever stores the stream keeps
/// nothing of it. Inflating runs on the task, a chunk at a time: a few
/// hundred microseconds for a network read's worth of bytes.
fn verified_filez(
    name: ObjectName,
    max: u64,
    body: Body,
    refusal: Arc<std::sync::Mutex<Option<PushError>>>,
) -> Body {
    struct Check {
        body: Body,
        verifier: Option<FilezVerifier>,
        seen: u64,
    }
    let refuse = move |e: PushError| -> std::io::Error {
        let message = e.to_string();
        *refusal.lock().expect("refusal") = Some(e);
        std::io::Error::other(message)
    };
    let start = Check {
        body,
        verifier: Some(FilezVerifier::new(name.checksum)),
        seen: 0,
    };
    Box::pin(futures_util::stream::unfold(start, move |mut check| {
        let refuse = refuse.clone();
        async move {
            let verifier = check.verifier.as_mut()?;
            match check.body.next().await {
                Some(Ok(chunk)) => {
                    check.seen += chunk.len() as u64;
                    let checked = if check.seen > max {
                        Err(refuse(PushError::TooLarge(max)))
                    } else {
                        verifier
                            .update(&chunk)
                            .map(|()| chunk)
                            .map_err(|source| refuse(PushError::BadObject { name, source }))
                    };
                    if checked.is_err() {
                        check.verifier = None;
                    }
                    Some((checked, check))
                }
                Some(Err(e)) => {
                    check.verifier = None;
                    Some((Err(e), check))
                }
                None => {
                    let verifier = check.verifier.take()?;
                    match verifier.finish() {
                        Ok(_) => None,
                        Err(source) => {
                            Some((Err(refuse(PushError::BadObject { name, source })), check))
                        }
                    }
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_and_paths() {
        let hex = "ab".repeat(32);
        let n = parse_object_name(&format!("{hex}.filez")).unwrap();
        assert_eq!(n.kind, ObjectType::File);
        assert_eq!(
            parse_object_path(&format!("ab/{}.dirtree", &hex[2..])).unwrap(),
            ObjectName::new(n.checksum, ObjectType::DirTree)
        );
        for bad in [
            format!("{hex}.file"),
            hex.clone(),
            format!("{}.commit", "AB".repeat(32)),
            format!("{}.commit", &hex[2..]),
            "../../etc/passwd".into(),
            format!("{hex}.commit.x"),
        ] {
            assert!(parse_object_name(&bad).is_err(), "{bad:?} accepted");
        }
        for bad in [
            format!("ab/../{}.commit", &hex[2..]),
            format!("abc/{}.commit", &hex[3..]),
            format!("ab/cd/{}.commit", &hex[4..]),
            format!("{hex}.commit"),
        ] {
            assert!(parse_object_path(&bad).is_err(), "{bad:?} accepted");
        }
    }
}
