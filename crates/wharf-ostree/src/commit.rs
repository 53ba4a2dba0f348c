//! `wharf ostree commit`: a commit made from a directory, natively, into a new
//! snapshot. The tree is read into archive objects (dirtree, dirmeta, `.filez`)
//! with the ownership and permission overrides asked for, so a file can be
//! root-owned 0600 in the commit without being so on the build host; the
//! commit's parent is the branch's published commit, and the summary is
//! rewritten for every ref the repository holds.
//!
//! Published only once every object the new ref reaches is stored, like a
//! mirror run.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::TryStreamExt;
use wharf_core::{Digest, RepoName, RepositoryKind, TreePath};
use wharf_snapshot::{Base, SnapshotError, Snapshots, Staged};

use crate::gvariant::{Type, Value};
use crate::object::{
    content_checksum, encode_filez, parse_ref_file, validate_file_name, validate_ref_name,
    Checksum, Commit, DirMeta, DirTree, FileHeader, ObjectError, ObjectName, ObjectType, Xattrs,
};
use crate::summary::{Summary, SummaryRef};

/// What made a commit fail.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Snapshot(#[from] SnapshotError),
    #[error("{what}: {source}")]
    BadObject {
        what: String,
        #[source]
        source: ObjectError,
    },
}

/// One `wharf ostree commit`.
#[derive(Debug, Clone)]
pub struct CommitPlan {
    pub repository: RepoName,
    pub branch: String,
    pub tree: PathBuf,
    pub subject: String,
    pub body: String,
    /// `--add-metadata-string K=V`, in order.
    pub metadata: Vec<(String, String)>,
    /// Every file and directory owned by this uid/gid instead of the build host's.
    pub owner_uid: Option<u32>,
    pub owner_gid: Option<u32>,
    /// Permission bits by path inside the tree (`usr/bin/su` → 0o4755).
    pub mode_overrides: BTreeMap<String, u32>,
    /// Seconds since the epoch; default now.
    pub timestamp: Option<u64>,
    /// Wharf's keys: they sign the commit (its `.commitmeta`) and the
    /// summary (`summary.sig`); `None` leaves both unsigned.
    pub signer: Option<std::sync::Arc<wharf_sign::SigningKeys>>,
    /// History kept per ref; applied to the staged snapshot before it is published.
    pub retention: crate::retention::Retention,
}

/// What a commit made.
#[derive(Debug, Clone)]
pub struct CommitOutcome {
    pub checksum: Checksum,
    pub parent: Option<Checksum>,
    /// Objects written that the repository did not have.
    pub new_objects: u64,
    pub snapshot: i64,
}

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const CONFIG: &str = "[core]\nrepo_version=1\nmode=archive-z2\n";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CommitError + '_ {
    move |source| CommitError::Io {
        path: path.display().to_string(),
        source,
    }
}

pub(crate) fn tree_path(s: &str) -> Result<TreePath, CommitError> {
    TreePath::new(s).map_err(|e| CommitError::Refused(format!("{s:?} is not a valid path: {e}")))
}

/// The objects a tree becomes, by name, and its root (dirtree, dirmeta).
struct Built {
    objects: HashMap<ObjectName, Bytes>,
    root: (Checksum, Checksum),
}

struct Builder<'a> {
    plan: &'a CommitPlan,
    objects: HashMap<ObjectName, Vec<u8>>,
    /// Overrides not yet matched to a path, to refuse a typo.
    unused: BTreeMap<String, u32>,
}

fn xattrs(path: &Path) -> Result<Xattrs, CommitError> {
    crate::local::read_xattrs(path).map_err(io(path))
}

impl Builder<'_> {
    fn owner(&self, meta: &std::fs::Metadata) -> (u32, u32) {
        (
            self.plan.owner_uid.unwrap_or(meta.uid()),
            self.plan.owner_gid.unwrap_or(meta.gid()),
        )
    }

    fn mode(&mut self, rel: &str, meta: &std::fs::Metadata) -> u32 {
        let mode = meta.mode();
        match self
            .unused
            .remove(rel)
            .or_else(|| self.plan.mode_overrides.get(rel).copied())
        {
            Some(perms) => (mode & S_IFMT) | (perms & 0o7777),
            None => mode,
        }
    }

    fn add(&mut self, name: ObjectName, bytes: Vec<u8>) -> Checksum {
        self.objects.entry(name).or_insert(bytes);
        name.checksum
    }

    /// A directory's (dirtree, dirmeta), its children first.
    fn dir(&mut self, path: &Path, rel: &str) -> Result<(Checksum, Checksum), CommitError> {
        let meta = std::fs::symlink_metadata(path).map_err(io(path))?;
        let (uid, gid) = self.owner(&meta);
        let dirmeta = DirMeta {
            uid,
            gid,
            mode: self.mode(rel, &meta),
            xattrs: xattrs(path)?,
        };
        let mut entries: Vec<(String, PathBuf)> = Vec::new();
        for e in std::fs::read_dir(path).map_err(io(path))? {
            let e = e.map_err(io(path))?;
            let name = e.file_name().into_string().map_err(|n| {
                CommitError::Refused(format!(
                    "{}: {n:?} is not UTF-8, which OSTree cannot name",
                    path.display()
                ))
            })?;
            validate_file_name(&name).map_err(|source| CommitError::BadObject {
                what: path.display().to_string(),
                source,
            })?;
            entries.push((name, e.path()));
        }
        // OSTree sorts a dirtree's names bytewise.
        entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut tree = DirTree::default();
        for (name, child) in entries {
            let child_rel = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let meta = std::fs::symlink_metadata(&child).map_err(io(&child))?;
            match meta.mode() & S_IFMT {
                S_IFDIR => {
                    let (t, m) = self.dir(&child, &child_rel)?;
                    tree.dirs.push((name, t, m));
                }
                S_IFREG | S_IFLNK => {
                    let c = self.file(&child, &child_rel, &meta)?;
                    tree.files.push((name, c));
                }
                _ => {
                    return Err(CommitError::Refused(format!(
                        "{}: not a regular file, symlink or directory; an OSTree commit holds only those",
                        child.display()
                    )))
                }
            }
        }
        let tree_bytes = tree.encode();
        let meta_bytes = dirmeta.encode();
        let t = self.add(
            ObjectName::new(Checksum::of(&tree_bytes), ObjectType::DirTree),
            tree_bytes,
        );
        let m = self.add(
            ObjectName::new(Checksum::of(&meta_bytes), ObjectType::DirMeta),
            meta_bytes,
        );
        Ok((t, m))
    }

    fn file(
        &mut self,
        path: &Path,
        rel: &str,
        meta: &std::fs::Metadata,
    ) -> Result<Checksum, CommitError> {
        let (uid, gid) = self.owner(meta);
        let mode = self.mode(rel, meta);
        let (content, symlink_target) = if mode & S_IFMT == S_IFLNK {
            let target = std::fs::read_link(path).map_err(io(path))?;
            let target = target.into_os_string().into_string().map_err(|t| {
                CommitError::Refused(format!(
                    "{}: symlink target {t:?} is not UTF-8",
                    path.display()
                ))
            })?;
            (Vec::new(), target)
        } else {
            (std::fs::read(path).map_err(io(path))?, String::new())
        };
        let header = FileHeader {
            size: content.len() as u64,
            uid,
            gid,
            mode,
            rdev: 0,
            symlink_target,
            xattrs: xattrs(path)?,
        };
        let checksum = content_checksum(&header, &content);
        let name = ObjectName::new(checksum, ObjectType::File);
        self.objects
            .entry(name)
            .or_insert_with(|| encode_filez(&header, &content));
        Ok(checksum)
    }
}

fn build(plan: &CommitPlan) -> Result<Built, CommitError> {
    if !std::fs::symlink_metadata(&plan.tree)
        .map_err(io(&plan.tree))?
        .is_dir()
    {
        return Err(CommitError::Refused(format!(
            "--tree {}: not a directory",
            plan.tree.display()
        )));
    }
    let mut b = Builder {
        plan,
        objects: HashMap::new(),
        unused: plan.mode_overrides.clone(),
    };
    let root = b.dir(&plan.tree, "")?;
    if let Some(p) = b.unused.keys().next() {
        return Err(CommitError::Refused(format!(
            "--mode-override {p}: no such path in {}",
            plan.tree.display()
        )));
    }
    Ok(Built {
        objects: b
            .objects
            .into_iter()
            .map(|(name, bytes)| (name, Bytes::from(bytes)))
            .collect(),
        root,
    })
}

pub(crate) async fn read_entry(
    snapshots: &Snapshots,
    staged: &Staged,
    path: &TreePath,
) -> Result<Option<Vec<u8>>, CommitError> {
    let Some(entry) = staged.entry(path).await? else {
        return Ok(None);
    };
    let stream = snapshots.open(&entry, None).await?;
    let chunks: Vec<Bytes> = stream
        .try_collect()
        .await
        .map_err(|e| CommitError::Refused(format!("reading stored {}: {e}", path.as_str())))?;
    Ok(Some(chunks.concat()))
}

/// Makes the commit and publishes it.
pub async fn commit_tree(
    snapshots: &Snapshots,
    plan: &CommitPlan,
) -> Result<CommitOutcome, CommitError> {
    if !validate_ref_name(&plan.branch) {
        return Err(CommitError::Refused(format!(
            "--branch {:?} is not a valid ref name",
            plan.branch
        )));
    }
    let built = {
        let plan = plan.clone();
        tokio::task::spawn_blocking(move || build(&plan))
            .await
            .map_err(|e| CommitError::Refused(format!("reading the tree: {e}")))??
    };
    // Published only over the snapshot it was staged from, so a push or
    // another commit that landed meanwhile is never undone: then the commit
    // is made again on top of it (the objects are stored already).
    for _ in 0..PUBLISH_ATTEMPTS {
        let base = snapshots.published(&plan.repository).await?;
        let staged = snapshots
            .stage(
                &plan.repository,
                RepositoryKind::Ostree,
                Base::Published,
                &format!("ostree-commit:{}", plan.branch),
            )
            .await?;
        let outcome = match stage_commit(snapshots, &staged, plan, &built).await {
            Ok(outcome) => outcome,
            Err(e) => {
                // Nothing of a failed commit is kept: the published snapshot stays as it was.
                let _ = staged.discard().await;
                return Err(e);
            }
        };
        match staged.publish_replacing(base.as_ref().map(|b| &b.id)).await {
            Ok(true) => return Ok(outcome),
            Ok(false) => staged.discard().await?,
            Err(e) => {
                let _ = staged.discard().await;
                return Err(e.into());
            }
        }
    }
    Err(CommitError::Refused(format!(
        "{} was published by other writers {PUBLISH_ATTEMPTS} times during this commit; try again",
        plan.repository
    )))
}

/// How often a commit is staged again when another writer published first.
const PUBLISH_ATTEMPTS: u32 = 8;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Writes the commit of `built` onto the branch in `staged`, with the
/// summary; the caller publishes.
async fn stage_commit(
    snapshots: &Snapshots,
    staged: &Staged,
    plan: &CommitPlan,
    built: &Built,
) -> Result<CommitOutcome, CommitError> {
    let ref_path = tree_path(&format!("refs/heads/{}", plan.branch))?;
    let parent = match read_entry(snapshots, staged, &ref_path).await? {
        Some(b) => Some(parse_ref_file(&b).map_err(|source| CommitError::BadObject {
            what: format!("ref {}", plan.branch),
            source,
        })?),
        None => None,
    };
    let timestamp = plan.timestamp.unwrap_or_else(now);
    let mut metadata: Vec<(String, Value)> = plan
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), Value::Str(v.clone())))
        .collect();
    // As `ostree commit -b` does: clients check that the ref they pulled is one it was made for.
    metadata.push((
        "ostree.ref-binding".into(),
        Value::Array(
            Type::parse("s").expect("literal"),
            vec![Value::Str(plan.branch.clone())],
        ),
    ));
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    let commit = Commit {
        metadata,
        parent,
        related: Vec::new(),
        subject: plan.subject.clone(),
        body: plan.body.clone(),
        timestamp,
        root_tree: built.root.0,
        root_meta: built.root.1,
    };
    let commit_bytes = commit.encode();
    let checksum = Checksum::of(&commit_bytes);
    let now = timestamp as i64;
    let mut new_objects = 0u64;
    for (name, bytes) in &built.objects {
        let path = tree_path(&name.path())?;
        if staged.entry(&path).await?.is_some() {
            continue;
        }
        let expected = matches!(name.kind, ObjectType::DirTree | ObjectType::DirMeta)
            .then(|| digest(&name.checksum));
        staged
            .put_bytes(&path, bytes.clone(), expected.as_ref(), now)
            .await?;
        new_objects += 1;
    }
    let commit_name = ObjectName::new(checksum, ObjectType::Commit);
    // The signature goes in before the commit, so no snapshot ever holds the
    // commit without it.
    if let Some(keys) = &plan.signer {
        let meta = crate::signature::sign(keys, &commit_bytes)
            .map_err(|e| CommitError::Refused(format!("signing the commit: {e}")))?;
        let meta_name = ObjectName::new(checksum, ObjectType::CommitMeta);
        staged
            .put_bytes(&tree_path(&meta_name.path())?, Bytes::from(meta), None, now)
            .await?;
        new_objects += 1;
    }
    staged
        .put_bytes(
            &tree_path(&commit_name.path())?,
            Bytes::from(commit_bytes),
            Some(&digest(&checksum)),
            now,
        )
        .await?;
    new_objects += 1;
    staged
        .put_bytes(&ref_path, Bytes::from(format!("{checksum}\n")), None, now)
        .await?;
    write_summary(
        snapshots,
        staged,
        plan.signer.as_deref(),
        &plan.retention,
        now,
    )
    .await?;
    let number = staged.record().number;
    Ok(CommitOutcome {
        checksum,
        parent,
        new_objects,
        snapshot: number,
    })
}

/// Writes `config`, the static deltas still valid, retention and Wharf's own
/// signed summary of every ref into `staged`, once its refs name what they
/// should: the tail of a commit and of a push. New deltas are the
/// `ostree-deltas` job's, after the publish.
pub(crate) async fn write_summary(
    snapshots: &Snapshots,
    staged: &Staged,
    signer: Option<&wharf_sign::SigningKeys>,
    retention: &crate::retention::Retention,
    now: i64,
) -> Result<(), CommitError> {
    staged
        .put_bytes(
            &tree_path("config")?,
            Bytes::from_static(CONFIG.as_bytes()),
            None,
            now,
        )
        .await?;
    let mut summary = summary_of(snapshots, staged, now).await?;
    // Upstream's extras (if a mirror filled this repository) name a summary
    // no longer served; Wharf's deltas to the refs' commits stay listed.
    let heads: BTreeMap<String, Checksum> = summary
        .refs
        .iter()
        .map(|r| (r.name.clone(), r.checksum))
        .collect();
    let listing = crate::delta::carry(snapshots, staged, &heads, now)
        .await
        .map_err(|e| CommitError::Refused(format!("static deltas: {e}")))?;
    crate::delta::list_in(&mut summary, &listing);
    crate::retention::prune_staged(snapshots, staged, retention, now)
        .await
        .map_err(|e| CommitError::Refused(format!("retention: {e}")))?;
    let summary = summary.encode();
    // Upstream's signature (if a mirror filled this repository) does not sign this summary.
    let signature = signer
        .map(|keys| crate::signature::sign(keys, &summary))
        .transpose()
        .map_err(|e| CommitError::Refused(format!("signing the summary: {e}")))?;
    crate::summary::put_own(staged, summary, signature, now).await?;
    Ok(())
}

pub(crate) fn digest(c: &Checksum) -> Digest {
    Digest::parse(&format!("sha256:{c}")).expect("64 hex digits")
}

/// Every ref in `staged` with its commit's size and timestamp.
async fn summary_of(
    snapshots: &Snapshots,
    staged: &Staged,
    now: i64,
) -> Result<Summary, CommitError> {
    let heads = tree_path("refs/heads")?;
    let mut refs = Vec::new();
    let mut pages = std::pin::pin!(staged.entry_pages(Some(&heads), 1000));
    while let Some(page) = pages.try_next().await? {
        for e in page {
            let name = e.path.as_str()["refs/heads/".len()..].to_owned();
            let bytes = read_entry(snapshots, staged, &e.path)
                .await?
                .unwrap_or_default();
            let checksum = parse_ref_file(&bytes).map_err(|source| CommitError::BadObject {
                what: format!("ref {name}"),
                source,
            })?;
            let commit_path = tree_path(&ObjectName::new(checksum, ObjectType::Commit).path())?;
            let commit = read_entry(snapshots, staged, &commit_path)
                .await?
                .ok_or_else(|| {
                    CommitError::Refused(format!("ref {name} names commit {checksum}, not stored"))
                })?;
            let parsed = Commit::parse(&commit).map_err(|source| CommitError::BadObject {
                what: format!("commit {checksum}"),
                source,
            })?;
            refs.push(SummaryRef::of_commit(
                name,
                checksum,
                commit.len() as u64,
                parsed.timestamp,
            ));
        }
    }
    Ok(Summary::written_by_wharf(refs, now))
}
