//! File repositories: changing them one snapshot at a time.
//!
//! A file repository is a published snapshot (`wharf-snapshot`) served at
//! `/files/<repo>/…`; this module only produces snapshots. Every path is a
//! `TreePath`, so `..`, absolute paths, NUL and overlong names are refused
//! before anything is stored, and every file is checksummed on its way into
//! the blob store.
//!
//! Each upload or removal (`wharf files put|rm`, `PUT|DELETE /api/v1/files/…`)
//! is one [`Change`]: a snapshot staged from the published one, filled, given
//! a fresh [`SUMS_NAME`] and then published (or left staged). Changes of one
//! repository through one [`FileRepos`] run one at a time, and a change whose
//! base was replaced meanwhile by another process is refused rather than
//! published over it, so no acknowledged file is silently lost.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wharf_blob::ByteStream;
use wharf_core::{Algorithm, Digest, InvalidTreePath, RepoName, RepositoryKind, TreePath};
use wharf_meta::{MetaError, SnapshotId};
use wharf_snapshot::{Base, SnapshotError, Snapshots, Staged, StoredEntry};

/// The reserved name, at a file repository's root, of the checksum list
/// Wharf writes into every snapshot it makes: one `<sha256>  <path>` line per
/// other file, in path order, which `sha256sum -c` checks from a copy of the
/// tree. Nothing may be uploaded there.
pub const SUMS_NAME: &str = "SHA256SUMS";

/// Entries read per page when listing, removing or summing.
const PAGE: u32 = 1000;

/// What went wrong changing a file repository.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// A destination path is not a valid tree path.
    #[error("invalid path {path:?}: {source}")]
    Path {
        /// The path as given.
        path: String,
        /// Why.
        source: InvalidTreePath,
    },
    /// The path is Wharf's own (the generated checksum list).
    #[error("{0:?} is reserved: Wharf writes the repository's {SUMS_NAME} itself")]
    Reserved(String),
    /// A local file name is not UTF-8.
    #[error("{0}: file names must be UTF-8")]
    NotUtf8(PathBuf),
    /// A local file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The repository exists with another kind.
    #[error("{0} is not a files repository")]
    WrongKind(RepoName),
    /// The repository is filled by a `[[files.remotes]]` mirror.
    #[error("{0} is filled by a mirror ([[files.remotes]]); change its upstream instead")]
    Mirrored(RepoName),
    /// Nothing is recorded at the path.
    #[error("{repo} has no file or directory {path}")]
    NotFound {
        /// The repository.
        repo: RepoName,
        /// The path asked for.
        path: TreePath,
    },
    /// Another writer published while this change was being made.
    #[error("{0} was changed by another writer meanwhile; nothing was published, try again")]
    Conflict(RepoName),
    /// Storing failed (including bytes that do not match an expected digest).
    #[error(transparent)]
    Snapshot(SnapshotError),
}

impl From<SnapshotError> for TreeError {
    fn from(e: SnapshotError) -> TreeError {
        TreeError::Snapshot(e)
    }
}

/// Counts of one [`Change::put_local`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PutTotals {
    /// Files recorded.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// A destination path from text, with the error naming it.
pub fn tree_path(s: &str) -> Result<TreePath, TreeError> {
    TreePath::new(s).map_err(|source| TreeError::Path {
        path: s.to_owned(),
        source,
    })
}

/// Whether `path` is, or lies below, the reserved [`SUMS_NAME`].
pub fn is_reserved(path: &TreePath) -> bool {
    path.components().next() == Some(SUMS_NAME)
}

/// The end of a [`Change`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    /// The snapshot's number.
    pub number: i64,
    /// Whether it was published (else it stays staged).
    pub published: bool,
    /// Files in it, the checksum list included.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Writes of file repositories: cheap to clone, shared by the server and the CLI.
#[derive(Clone)]
pub struct FileRepos {
    snapshots: Snapshots,
    mirrored: Arc<Vec<RepoName>>,
    keep_retired: u32,
    locks: Arc<Mutex<HashMap<RepoName, Arc<tokio::sync::Mutex<()>>>>>,
}

impl std::fmt::Debug for FileRepos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileRepos")
            .field("mirrored", &self.mirrored)
            .finish_non_exhaustive()
    }
}

impl FileRepos {
    /// File repositories over `snapshots`; `mirrored` are those a remote fills
    /// (changes are refused there); `keep_retired` is `publish.keep_retired`.
    pub fn new(snapshots: Snapshots, mirrored: Vec<RepoName>, keep_retired: u32) -> FileRepos {
        FileRepos {
            snapshots,
            mirrored: Arc::new(mirrored),
            keep_retired,
            locks: Arc::default(),
        }
    }

    /// The snapshots it writes.
    pub fn snapshots(&self) -> &Snapshots {
        &self.snapshots
    }

    async fn published_id(&self, repo: &RepoName) -> Result<Option<SnapshotId>, TreeError> {
        Ok(self.snapshots.published(repo).await?.map(|r| r.id))
    }

    /// Starts a change of `repo` (created as a `files` repository if absent),
    /// from what it publishes now.
    pub async fn begin(&self, repo: &RepoName, note: &str) -> Result<Change, TreeError> {
        if self.mirrored.contains(repo) {
            return Err(TreeError::Mirrored(repo.clone()));
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
        let staged = stage(&self.snapshots, repo, Base::Published, note).await?;
        if self.published_id(repo).await? != base {
            // Another process published while the copy was made.
            let _ = staged.discard().await;
            return Err(TreeError::Conflict(repo.clone()));
        }
        Ok(Change {
            repos: self.clone(),
            repo: repo.clone(),
            staged,
            base,
            _guard: guard,
        })
    }
}

/// Stages a snapshot of the `files` repository `repo`.
pub(crate) async fn stage(
    snapshots: &Snapshots,
    repo: &RepoName,
    base: Base,
    note: &str,
) -> Result<Staged, TreeError> {
    snapshots
        .stage(repo, RepositoryKind::Files, base, note)
        .await
        .map_err(|e| match e {
            SnapshotError::Meta(MetaError::WrongKind { .. }) => TreeError::WrongKind(repo.clone()),
            e => e.into(),
        })
}

/// One change of a file repository: a staged snapshot.
pub struct Change {
    repos: FileRepos,
    repo: RepoName,
    staged: Staged,
    /// The snapshot published when it started, which it must replace.
    base: Option<SnapshotId>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl std::fmt::Debug for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Change")
            .field("repo", &self.repo)
            .field("snapshot", &self.staged.record().number)
            .finish_non_exhaustive()
    }
}

impl Change {
    /// The staged snapshot's number.
    pub fn number(&self) -> i64 {
        self.staged.record().number
    }

    /// Streams `body` to `path` (replacing what was there); with `expected`,
    /// the bytes must hash to it or nothing is recorded.
    pub async fn put_stream(
        &self,
        path: &TreePath,
        body: ByteStream,
        expected: Option<&Digest>,
        modified_at: i64,
    ) -> Result<StoredEntry, TreeError> {
        if is_reserved(path) {
            return Err(TreeError::Reserved(path.to_string()));
        }
        Ok(self
            .staged
            .put_stream(path, body, expected, modified_at)
            .await?)
    }

    /// Records `local` (a file, or a directory walked recursively; symbolic
    /// links are followed for files, not for directories) under `to`: a file
    /// lands at `to/<its name>`, a directory's contents at `to/<dir name>/…`.
    /// `to` `None` is the repository's root.
    pub async fn put_local(
        &self,
        local: &Path,
        to: Option<&TreePath>,
    ) -> Result<PutTotals, TreeError> {
        let name = local
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| TreeError::NotUtf8(local.to_owned()))?;
        let dest = match to {
            Some(dir) => join(dir, name)?,
            None => tree_path(name)?,
        };
        let mut totals = PutTotals::default();
        let mut pending = vec![(local.to_owned(), dest)];
        while let Some((path, dest)) = pending.pop() {
            let io = |source| TreeError::Io {
                path: path.clone(),
                source,
            };
            let meta = tokio::fs::symlink_metadata(&path).await.map_err(io)?;
            if meta.is_dir() {
                let mut dir = tokio::fs::read_dir(&path).await.map_err(io)?;
                while let Some(entry) = dir.next_entry().await.map_err(io)? {
                    let child = entry.file_name();
                    let child = child
                        .to_str()
                        .ok_or_else(|| TreeError::NotUtf8(entry.path()))?;
                    pending.push((entry.path(), join(&dest, child)?));
                }
                continue;
            }
            if is_reserved(&dest) {
                return Err(TreeError::Reserved(dest.to_string()));
            }
            let file = tokio::fs::File::open(&path).await.map_err(io)?;
            let modified = modified_secs(&tokio::fs::metadata(&path).await.map_err(io)?);
            let stored = self.staged.put_reader(&dest, file, None, modified).await?;
            totals.files += 1;
            totals.bytes += stored.size;
        }
        Ok(totals)
    }

    /// Removes the file at `path`, or everything below the directory `path`;
    /// returns how many files went.
    pub async fn remove(&self, path: &TreePath) -> Result<u64, TreeError> {
        if is_reserved(path) {
            return Err(TreeError::Reserved(path.to_string()));
        }
        let mut doomed = vec![path.clone()];
        let mut after = None;
        loop {
            let page = self
                .staged
                .entries(Some(path), after.as_ref(), PAGE)
                .await?;
            doomed.extend(page.iter().map(|e| e.path.clone()));
            match page.last() {
                Some(last) if page.len() == PAGE as usize => after = Some(last.path.clone()),
                _ => break,
            }
        }
        let n = self.staged.remove(&doomed).await?;
        if n == 0 {
            return Err(TreeError::NotFound {
                repo: self.repo.clone(),
                path: path.clone(),
            });
        }
        Ok(n)
    }

    /// Writes the checksum list and publishes (then prunes retired snapshots
    /// beyond `publish.keep_retired`), or leaves the snapshot staged. Any
    /// failure discards the snapshot.
    pub async fn finish(self, publish: bool) -> Result<Finished, TreeError> {
        let number = self.number();
        let result = async {
            write_sums(&self.staged).await?;
            let (files, bytes) = self.staged.totals().await?;
            if publish {
                // Changes through one `FileRepos` are serialized by its lock; this
                // catches another process (a CLI beside a server) that published
                // since, whose change this one would silently undo.
                if self.repos.published_id(&self.repo).await? != self.base {
                    return Err(TreeError::Conflict(self.repo.clone()));
                }
                self.staged.clone().publish().await?;
            }
            Ok((files, bytes))
        }
        .await;
        match result {
            Ok((files, bytes)) => {
                if publish {
                    if let Err(e) = self
                        .repos
                        .snapshots
                        .prune(&self.repo, self.repos.keep_retired)
                        .await
                    {
                        tracing::warn!(repository = %self.repo, "pruning retired snapshots: {e}");
                    }
                }
                Ok(Finished {
                    number,
                    published: publish,
                    files,
                    bytes,
                })
            }
            Err(e) => {
                let _ = self.staged.discard().await;
                Err(e)
            }
        }
    }

    /// Drops the change: the staged snapshot is deleted.
    pub async fn abort(self) -> Result<(), TreeError> {
        Ok(self.staged.discard().await?)
    }
}

fn join(dir: &TreePath, name: &str) -> Result<TreePath, TreeError> {
    dir.join(&tree_path(name)?)
        .map_err(|source| TreeError::Path {
            path: format!("{dir}/{name}"),
            source,
        })
}

/// A file's modification time in unix seconds (0 when unknown).
pub(crate) fn modified_secs(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64)
}

/// One line of the checksum list, in `sha256sum`'s own format. Tree paths
/// hold no backslash, newline or other control character, so no line needs
/// `sha256sum`'s escaping.
fn sums_line(digest: &Digest, path: &TreePath) -> String {
    format!("{}  {}\n", digest.hex(), path)
}

/// (Re)writes [`SUMS_NAME`] in `staged` from its other entries. Entries are
/// read page by page and the list is streamed into the store, so memory stays
/// flat in the number of files. Every file a files repository holds is
/// stored under its SHA-256 (uploads and mirrors hash with it), so the list
/// is read from the entries without touching the bytes.
pub async fn write_sums(staged: &Staged) -> Result<StoredEntry, TreeError> {
    let sums = tree_path(SUMS_NAME)?;
    staged.remove(std::slice::from_ref(&sums)).await?;
    let staged_for_stream = staged.clone();
    struct Cursor {
        staged: Staged,
        after: Option<TreePath>,
        done: bool,
    }
    let body = futures_util::stream::unfold(
        Cursor {
            staged: staged_for_stream,
            after: None,
            done: false,
        },
        |mut c| async move {
            if c.done {
                return None;
            }
            let page = match c.staged.entries(None, c.after.as_ref(), PAGE).await {
                Ok(page) => page,
                Err(e) => return Some((Err(std::io::Error::other(e)), c)),
            };
            c.done = page.len() < PAGE as usize;
            c.after = page.last().map(|e| e.path.clone());
            let mut text = String::new();
            for e in &page {
                if is_reserved(&e.path) {
                    continue;
                }
                if e.blob.algorithm() != Algorithm::Sha256 {
                    let msg = format!("{} is stored as {}, not SHA-256", e.path, e.blob);
                    return Some((Err(std::io::Error::other(msg)), c));
                }
                text.push_str(&sums_line(&e.blob, &e.path));
            }
            Some((Ok(Bytes::from(text)), c))
        },
    );
    let now = wharf_meta::unix_now();
    Ok(staged.put_stream(&sums, Box::pin(body), None, now).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_names_and_sums_lines() {
        assert!(is_reserved(&tree_path("SHA256SUMS").unwrap()));
        assert!(is_reserved(&tree_path("SHA256SUMS/x").unwrap()));
        assert!(!is_reserved(&tree_path("iso/SHA256SUMS").unwrap()));
        assert!(!is_reserved(&tree_path("SHA256SUMS.asc").unwrap()));
        let d = Digest::sha256_of(b"hello\n");
        assert_eq!(
            sums_line(&d, &tree_path("a b/é.txt").unwrap()),
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03  a b/é.txt\n"
        );
    }
}
