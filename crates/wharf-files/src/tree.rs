//! File repositories: filling a staged snapshot from local files.
//!
//! A file repository is a published snapshot (`wharf-snapshot`) served at
//! `/files/<repo>/…`; this module only produces snapshots. Every path is a
//! `TreePath`, so `..`, absolute paths, NUL and overlong names are refused
//! before anything is stored, and every file is checksummed on its way into
//! the blob store.

use std::path::{Path, PathBuf};

use wharf_core::{InvalidTreePath, TreePath};
use wharf_snapshot::{SnapshotError, Staged};

/// What went wrong filling a file repository.
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
    /// Storing failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// Counts of one [`put_local`].
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

/// Records `local` (a file, or a directory walked recursively; symbolic links
/// are followed for files, not for directories) under `to` in `staged`: a file
/// lands at `to/<its name>`, a directory's contents at `to/<dir name>/…`.
/// `to` `None` is the repository's root.
pub async fn put_local(
    staged: &Staged,
    local: &Path,
    to: Option<&TreePath>,
) -> Result<PutTotals, TreeError> {
    let name = local
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| TreeError::NotUtf8(local.to_owned()))?;
    let dest = match to {
        Some(dir) => dir
            .join(&tree_path(name)?)
            .map_err(|source| TreeError::Path {
                path: format!("{dir}/{name}"),
                source,
            })?,
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
                let child_dest =
                    dest.join(&tree_path(child)?)
                        .map_err(|source| TreeError::Path {
                            path: format!("{dest}/{child}"),
                            source,
                        })?;
                pending.push((entry.path(), child_dest));
            }
            continue;
        }
        let file = tokio::fs::File::open(&path).await.map_err(io)?;
        let modified = tokio::fs::metadata(&path)
            .await
            .map_err(io)?
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        let stored = staged.put_reader(&dest, file, None, modified).await?;
        totals.files += 1;
        totals.bytes += stored.size;
    }
    Ok(totals)
}
