//! Retention per ref: how much of each ref's history a snapshot keeps.
//!
//! Walking back from a ref's commit, a commit is kept while it is among the
//! ref's last `keep_last` commits or younger than `keep_days`; the first
//! commit that is neither ends the ref's history, and it and everything
//! older are *cut*. The oldest commit kept still names its parent, which is
//! absent — exactly the state `ostree prune --depth` leaves, which stock
//! clients pull with `--depth` (a missing parent ends their walk).
//!
//! Pruning a snapshot is a mark over its objects: everything the kept
//! commits reach (their `.commitmeta`, root dirmeta, every dirtree, dirmeta
//! and content object below) stays; every other `objects/` entry leaves the
//! staged snapshot. The bytes are not deleted here: the snapshot's blob
//! references go with its entries, and the online garbage collector frees a
//! blob once no snapshot (staged, published or retired within its grace)
//! names it. So a client in the middle of a pull of the previous snapshot
//! keeps finding what it was promised.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use wharf_core::{RepoName, RepositoryKind, TreePath};
use wharf_meta::{SnapshotEntry, SnapshotId};
use wharf_snapshot::{Base, SnapshotError, Snapshots, Staged};

use crate::object::{
    parse_ref_file, Checksum, Commit, DirTree, ObjectError, ObjectName, ObjectType,
};

/// What made pruning fail.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("{0}")]
    Snapshot(#[from] SnapshotError),
    #[error("{what}: {source}")]
    BadObject {
        what: String,
        #[source]
        source: ObjectError,
    },
    #[error("reading stored {what}: {source}")]
    Read {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0:?} is not a valid path")]
    Path(String),
    #[error("other writers published {0} times while the prune was prepared; try again")]
    Contended(u32),
}

/// One rule, lowered from `[[ostree.retention]]` for one repository.
#[derive(Debug, Clone, PartialEq)]
pub struct RefRule {
    /// Ref names or glob patterns; empty: every ref.
    pub refs: Vec<String>,
    /// The newest N commits of a ref are kept (its own commit counts); 0: none by count.
    pub keep_last: u64,
    /// Commits younger than this many seconds are kept; 0: none by age.
    pub keep_secs: u64,
}

impl RefRule {
    fn applies_to(&self, ref_name: &str) -> bool {
        self.refs.is_empty()
            || self
                .refs
                .iter()
                .any(|p| crate::mirror::glob(p.as_bytes(), ref_name.as_bytes()))
    }

    /// Whether the commit `index` steps behind the ref (0: the ref's own
    /// commit, always kept), made at `timestamp`, is kept at `now`.
    pub fn keeps(&self, index: u64, timestamp: u64, now: i64) -> bool {
        index == 0
            || (self.keep_last > 0 && index < self.keep_last)
            || (self.keep_secs > 0 && (timestamp as i128) + (self.keep_secs as i128) > now as i128)
    }
}

/// A repository's rules, in order: the first that names a ref decides.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Retention {
    pub rules: Vec<RefRule>,
}

impl Retention {
    /// Whether no rule applies to the repository (nothing is ever cut).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule for `ref_name`; `None`: its whole history is kept.
    pub fn rule_for(&self, ref_name: &str) -> Option<&RefRule> {
        self.rules.iter().find(|r| r.applies_to(ref_name))
    }
}

/// A commit that pruning removes.
#[derive(Debug, Clone, PartialEq)]
pub struct CutCommit {
    pub checksum: Checksum,
    pub timestamp: u64,
    pub subject: String,
}

/// What pruning a snapshot keeps and removes.
#[derive(Debug, Clone, Default)]
pub struct PrunePlan {
    /// Per ref (`heads/NAME` or `mirrors/COLLECTION/NAME`), the commits kept, newest first.
    pub kept: BTreeMap<String, Vec<Checksum>>,
    /// Commits removed, sorted by timestamp (oldest first).
    pub cut: Vec<CutCommit>,
    /// Every `objects/` entry removed.
    pub removed: Vec<TreePath>,
    /// The bytes those entries name (shared blobs counted per entry).
    pub removed_bytes: u64,
}

impl PrunePlan {
    /// Whether pruning changes nothing.
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty()
    }
}

fn tree_path(s: &str) -> Result<TreePath, RetentionError> {
    TreePath::new(s).map_err(|_| RetentionError::Path(s.to_owned()))
}

/// Every entry of snapshot `id` below `under`, in path order.
async fn all_entries(
    snapshots: &Snapshots,
    id: &SnapshotId,
    under: &str,
) -> Result<Vec<SnapshotEntry>, RetentionError> {
    let under = tree_path(under)?;
    let mut out = Vec::new();
    let mut pages = std::pin::pin!(snapshots.entry_pages(id, Some(&under), 1000));
    while let Some(page) = pages.try_next().await? {
        out.extend(page);
    }
    Ok(out)
}

async fn read(snapshots: &Snapshots, entry: &SnapshotEntry) -> Result<Bytes, RetentionError> {
    let chunks: Vec<Bytes> = snapshots
        .open(entry, None)
        .await?
        .try_collect()
        .await
        .map_err(|source| RetentionError::Read {
            what: entry.path.as_str().to_owned(),
            source,
        })?;
    Ok(Bytes::from(chunks.concat()))
}

/// The checksum of `objects/XX/REST.EXT` with extension `ext`.
fn checksum_of_path(path: &str, ext: &str) -> Option<Checksum> {
    let rest = path.strip_prefix("objects/")?;
    let (dir, file) = rest.split_once('/')?;
    let file = file.strip_suffix(ext)?.strip_suffix('.')?;
    Checksum::from_hex(&format!("{dir}{file}")).ok()
}

/// Reads commit `c` into `commits` unless there; `false` if the snapshot lacks it.
async fn load_commit(
    snapshots: &Snapshots,
    by_path: &BTreeMap<&str, &SnapshotEntry>,
    c: Checksum,
    commits: &mut BTreeMap<Checksum, Commit>,
) -> Result<bool, RetentionError> {
    if commits.contains_key(&c) {
        return Ok(true);
    }
    let Some(entry) = by_path.get(ObjectName::new(c, ObjectType::Commit).path().as_str()) else {
        return Ok(false);
    };
    let bytes = read(snapshots, entry).await?;
    let commit = Commit::parse(&bytes).map_err(|source| RetentionError::BadObject {
        what: format!("stored commit {c}"),
        source,
    })?;
    commits.insert(c, commit);
    Ok(true)
}

/// Works out what `retention` removes from snapshot `id` (staged or
/// published) at `now`. Reads only commits unless something is cut; then
/// every dirtree the kept commits reach, to mark what they need.
pub async fn plan(
    snapshots: &Snapshots,
    id: &SnapshotId,
    retention: &Retention,
    now: i64,
) -> Result<PrunePlan, RetentionError> {
    let mut out = PrunePlan::default();
    if retention.is_empty() {
        return Ok(out);
    }
    let objects = all_entries(snapshots, id, "objects").await?;
    let by_path: BTreeMap<&str, &SnapshotEntry> =
        objects.iter().map(|e| (e.path.as_str(), e)).collect();
    let mut commits: BTreeMap<Checksum, Commit> = BTreeMap::new();

    // Each ref's kept history, walking back from its commit.
    let mut refs = all_entries(snapshots, id, "refs/heads").await?;
    refs.extend(all_entries(snapshots, id, "refs/mirrors").await?);
    let mut kept: HashSet<Checksum> = HashSet::new();
    for entry in &refs {
        let full = &entry.path.as_str()["refs/".len()..];
        // The rule names the ref as clients do: `main`, not `heads/main`.
        let name = full
            .strip_prefix("heads/")
            .or_else(|| {
                full.strip_prefix("mirrors/")
                    .and_then(|m| m.split_once('/').map(|x| x.1))
            })
            .unwrap_or(full);
        let tip = parse_ref_file(&read(snapshots, entry).await?).map_err(|source| {
            RetentionError::BadObject {
                what: format!("ref {full}"),
                source,
            }
        })?;
        let rule = retention.rule_for(name);
        let mut chain = Vec::new();
        let mut at = Some(tip);
        let mut index = 0u64;
        while let Some(c) = at {
            if chain.contains(&c) || !load_commit(snapshots, &by_path, c, &mut commits).await? {
                break;
            }
            let commit = &commits[&c];
            if rule.is_some_and(|r| !r.keeps(index, commit.timestamp, now)) {
                break;
            }
            chain.push(c);
            kept.insert(c);
            at = commit.parent;
            index += 1;
        }
        out.kept.insert(full.to_owned(), chain);
    }

    // Commits no ref keeps: behind a cut, or reachable from no ref at all.
    for e in &objects {
        let Some(c) = checksum_of_path(e.path.as_str(), "commit") else {
            continue;
        };
        if kept.contains(&c) {
            continue;
        }
        load_commit(snapshots, &by_path, c, &mut commits).await?;
        let (timestamp, subject) = commits
            .get(&c)
            .map(|m| (m.timestamp, m.subject.clone()))
            .unwrap_or_default();
        out.cut.push(CutCommit {
            checksum: c,
            timestamp,
            subject,
        });
    }
    out.cut.sort_by_key(|c| (c.timestamp, c.checksum.to_hex()));
    if out.cut.is_empty() {
        return Ok(out);
    }

    // Mark what the kept commits reach.
    let mut marked: HashSet<String> = HashSet::new();
    let mut trees: Vec<Checksum> = Vec::new();
    for c in &kept {
        let commit = &commits[c];
        marked.insert(ObjectName::new(*c, ObjectType::Commit).path());
        marked.insert(ObjectName::new(*c, ObjectType::CommitMeta).path());
        marked.insert(ObjectName::new(commit.root_meta, ObjectType::DirMeta).path());
        trees.push(commit.root_tree);
    }
    while !trees.is_empty() {
        let todo: Vec<(Checksum, SnapshotEntry)> = trees
            .drain(..)
            .filter(|t| marked.insert(ObjectName::new(*t, ObjectType::DirTree).path()))
            .filter_map(|t| {
                by_path
                    .get(ObjectName::new(t, ObjectType::DirTree).path().as_str())
                    .map(|e| (t, (*e).clone()))
            })
            .collect();
        // Reads in parallel: a large tree has thousands of dirtrees.
        let read_trees: Vec<(Checksum, Bytes)> = futures_util::stream::iter(todo)
            .map(|(t, e)| {
                // Owned futures: a borrowed argument here trips the job's `Send` bound.
                let snapshots = snapshots.clone();
                async move { read(&snapshots, &e).await.map(|b| (t, b)) }
            })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        for (t, bytes) in read_trees {
            let tree = DirTree::parse(&bytes).map_err(|source| RetentionError::BadObject {
                what: format!("stored dirtree {t}"),
                source,
            })?;
            for (_, f) in &tree.files {
                marked.insert(ObjectName::new(*f, ObjectType::File).path());
            }
            for (_, sub, meta) in &tree.dirs {
                marked.insert(ObjectName::new(*meta, ObjectType::DirMeta).path());
                trees.push(*sub);
            }
        }
    }
    for e in &objects {
        if !marked.contains(e.path.as_str()) {
            out.removed_bytes += e.size;
            out.removed.push(e.path.clone());
        }
    }
    Ok(out)
}

/// Prunes a staged snapshot by `retention` at `now`: what [`plan`] finds is removed from it.
pub async fn prune_staged(
    snapshots: &Snapshots,
    staged: &Staged,
    retention: &Retention,
    now: i64,
) -> Result<PrunePlan, RetentionError> {
    let plan = plan(snapshots, staged.id(), retention, now).await?;
    for chunk in plan.removed.chunks(500) {
        staged.remove(chunk).await?;
    }
    Ok(plan)
}

/// What [`prune_published`] did.
#[derive(Debug, Clone)]
pub enum Pruned {
    /// Nothing would go: nothing was published.
    Nothing(PrunePlan),
    /// The pruned snapshot, this number, was published.
    Published(PrunePlan, i64),
}

/// How often [`prune_published`] stages again when another writer published first.
const PUBLISH_ATTEMPTS: u32 = 8;

/// `wharf ostree prune`: stages a snapshot from the one `repo` publishes,
/// prunes it by `retention` and publishes it only over that snapshot, so a
/// ref moved meanwhile (a push, a commit) is never undone: the prune is made
/// again on top of it. `None` when nothing is published.
pub async fn prune_published(
    snapshots: &Snapshots,
    repo: &RepoName,
    retention: &Retention,
    now: i64,
) -> Result<Option<Pruned>, RetentionError> {
    for _ in 0..PUBLISH_ATTEMPTS {
        let Some(base) = snapshots.published(repo).await? else {
            return Ok(None);
        };
        let staged = snapshots
            .stage(
                repo,
                RepositoryKind::Ostree,
                Base::Published,
                "ostree-prune",
            )
            .await?;
        let plan = match prune_staged(snapshots, &staged, retention, now).await {
            Ok(plan) => plan,
            Err(e) => {
                let _ = staged.discard().await;
                return Err(e);
            }
        };
        if plan.is_empty() {
            staged.discard().await?;
            return Ok(Some(Pruned::Nothing(plan)));
        }
        if staged.publish_replacing(Some(&base.id)).await? {
            return Ok(Some(Pruned::Published(plan, staged.record().number)));
        }
        staged.discard().await?;
    }
    Err(RetentionError::Contended(PUBLISH_ATTEMPTS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_is_kept_by_count_or_by_age() {
        let now = 1_000_000;
        let day = 86_400;
        let by_count = RefRule {
            refs: vec![],
            keep_last: 2,
            keep_secs: 0,
        };
        assert!(by_count.keeps(0, 0, now));
        assert!(by_count.keeps(1, 0, now));
        assert!(!by_count.keeps(2, now as u64, now));
        let by_age = RefRule {
            refs: vec!["os/*".into()],
            keep_last: 0,
            keep_secs: 7 * day,
        };
        assert!(by_age.keeps(0, 0, now), "the ref's own commit always stays");
        assert!(by_age.keeps(5, (now - day as i64) as u64, now));
        assert!(!by_age.keeps(1, (now - 8 * day as i64) as u64, now));
        let both = RefRule {
            refs: vec![],
            keep_last: 3,
            keep_secs: day,
        };
        assert!(both.keeps(2, 0, now), "within the count, however old");
        assert!(both.keeps(9, now as u64, now), "young, however far back");
        assert!(!both.keeps(3, 0, now));
    }

    #[test]
    fn the_first_rule_naming_a_ref_decides() {
        let r = Retention {
            rules: vec![
                RefRule {
                    refs: vec!["os/*/stable".into()],
                    keep_last: 5,
                    keep_secs: 0,
                },
                RefRule {
                    refs: vec![],
                    keep_last: 1,
                    keep_secs: 0,
                },
            ],
        };
        assert_eq!(r.rule_for("os/x86_64/stable").unwrap().keep_last, 5);
        assert_eq!(r.rule_for("main").unwrap().keep_last, 1);
        assert!(Retention::default().rule_for("main").is_none());
    }

    #[test]
    fn commit_paths_give_their_checksum() {
        let c = Checksum::of(b"x");
        let path = ObjectName::new(c, ObjectType::Commit).path();
        assert_eq!(checksum_of_path(&path, "commit"), Some(c));
        assert_eq!(checksum_of_path(&path, "dirtree"), None);
        assert_eq!(
            checksum_of_path("objects/zz/notahex.commit", "commit"),
            None
        );
    }
}
