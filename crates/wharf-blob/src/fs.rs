//! The filesystem backend of the blob store.
//!
//! On-disk layout (version 1, recorded in `layout-version`):
//!
//! ```text
//! <root>/layout-version            "wharf-blob-fs 1"
//! <root>/blobs/<algorithm>/<first two hex>/<hex>   committed, verified blobs
//! <root>/uploads/<id>              staging file of an upload session
//! <root>/upload-state/<id>         saved running hash of that upload (optional)
//! ```
//!
//! `upload-state/` joined layout 1 without a version bump: a build that does
//! not know it ignores it, and a missing one only costs a re-hash.
//!
//! Completing is: fsync the staging file → rename into `blobs/` → fsync the
//! target directory. Rename is atomic, so a reader sees either no blob or the
//! whole blob, and two writers completing the same digest both succeed with
//! identical bytes. Hashing and checks are not done here but in
//! [`BlobStore`](crate::BlobStore).

mod stream;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use wharf_core::Digest;

use crate::backend::{
    Backend, ListStream, ListedBlob, ListedStaging, ObjectMeta, Part, StagingWriter, UploadId,
};
use crate::{BlobError, BlobStore, ByteStream};

const LAYOUT_VERSION: &str = "wharf-blob-fs 1";
/// Read size when streaming a stored blob to a client: small, because every
/// concurrent transfer keeps about one chunk (plus the socket's queue) in memory.
const STREAM_CHUNK: usize = 64 * 1024;

/// Blob store backend on a local directory.
pub struct FsBackend {
    root: PathBuf,
    /// Makes temporary state-file names unique within this process.
    temp_counter: AtomicU64,
}

impl FsBackend {
    /// Opens (creating if needed) a backend rooted at `root`.
    pub async fn open(root: impl Into<PathBuf>) -> Result<FsBackend, BlobError> {
        let root = root.into();
        let r = root.clone();
        blocking(move || -> io::Result<()> {
            create_private_dir(&r.join("blobs"))?;
            create_private_dir(&r.join("uploads"))?;
            create_private_dir(&r.join("upload-state"))?;
            let marker = r.join("layout-version");
            match std::fs::read_to_string(&marker) {
                Ok(v) if v.trim() == LAYOUT_VERSION => Ok(()),
                Ok(v) => Err(io::Error::other(format!(
                    "blob store at {} has layout {:?}, this build understands {:?}",
                    r.display(),
                    v.trim(),
                    LAYOUT_VERSION
                ))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => create_private_file(&marker)?
                    .write_all(format!("{LAYOUT_VERSION}\n").as_bytes()),
                Err(e) => Err(e),
            }
        })
        .await?;
        Ok(FsBackend {
            root,
            temp_counter: AtomicU64::new(0),
        })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(&hex[..2])
            .join(hex)
    }

    fn staging_path(&self, id: &UploadId) -> PathBuf {
        self.root.join("uploads").join(id.as_str())
    }

    fn state_path(&self, id: &UploadId) -> PathBuf {
        self.root.join("upload-state").join(id.as_str())
    }
}

/// Opens the blob store on the filesystem backend at `root`.
pub async fn open(root: impl Into<PathBuf>) -> Result<BlobStore, BlobError> {
    Ok(BlobStore::new(Arc::new(FsBackend::open(root).await?)))
}

/// Options that create a file readable by its owner only (0600), whatever the
/// umask: blobs of private repositories are secrets of their owners. A blob is a
/// renamed staging file, so it keeps this mode.
fn private_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

fn create_private_file(path: &Path) -> io::Result<std::fs::File> {
    private_options().write(true).create_new(true).open(path)
}

/// Creates `dir` and any missing parents as 0700 (owner only).
fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Writes every chunk, in order, with as few `writev` calls as the kernel
/// allows (one, for a regular file, unless a signal or a full disk cuts it).
fn write_all_vectored(file: &mut std::fs::File, chunks: &[Bytes]) -> io::Result<()> {
    let mut slices: Vec<io::IoSlice<'_>> = chunks.iter().map(|c| io::IoSlice::new(c)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Renames each staged file to its blob path, durably. On Linux the whole
/// batch costs two `syncfs` calls (the files' bytes before any rename, so no
/// blob path ever names unwritten bytes; then the renames) instead of a file
/// and a directory fsync per blob, which is what a mirror of thousands of
/// small objects paid most for. It also flushes whatever else is dirty on
/// the filesystem, as `ostree` does at the end of a pull transaction.
fn complete_moves(root: &Path, moves: Vec<(PathBuf, PathBuf)>) -> Vec<io::Result<()>> {
    #[cfg(target_os = "linux")]
    {
        let sync = || -> io::Result<()> {
            let dir = std::fs::File::open(root)?;
            rustix::fs::syncfs(&dir).map_err(io::Error::from)
        };
        if let Err(e) = sync() {
            return failing_all(moves.iter().map(|_| Ok(())).collect(), &e);
        }
        let mut made = std::collections::HashSet::new();
        let results: Vec<io::Result<()>> = moves
            .iter()
            .map(|(from, to)| {
                let dir = to.parent().expect("blob path has a parent directory");
                if !made.contains(dir) {
                    create_private_dir(dir)?;
                    made.insert(dir.to_path_buf());
                }
                // Replacing an existing blob is harmless: same digest, same bytes.
                std::fs::rename(from, to)
            })
            .collect();
        match sync() {
            Ok(()) => results,
            Err(e) => failing_all(results, &e),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = root;
        let mut dirs = std::collections::HashSet::new();
        let results: Vec<io::Result<()>> = moves
            .iter()
            .map(|(from, to)| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(from)?
                    .sync_all()?;
                let dir = to.parent().expect("blob path has a parent directory");
                create_private_dir(dir)?;
                std::fs::rename(from, to)?;
                dirs.insert(dir.to_path_buf());
                Ok(())
            })
            .collect();
        let synced: io::Result<()> = dirs.iter().try_for_each(|d| sync_dir(d));
        match synced {
            Ok(()) => results,
            Err(e) => failing_all(results, &e),
        }
    }
}

/// `results` with every success turned into `e`: a step after them failed
/// for the whole batch.
fn failing_all(results: Vec<io::Result<()>>, e: &io::Error) -> Vec<io::Result<()>> {
    results
        .into_iter()
        .map(|r| r.and_then(|()| Err(io::Error::new(e.kind(), e.to_string()))))
        .collect()
}

/// `None` for a file that vanished between a directory listing and a look at it.
fn skip_vanished<T>(res: io::Result<T>) -> io::Result<Option<T>> {
    match res {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn missing_is_ok(res: io::Result<()>) -> io::Result<()> {
    skip_vanished(res).map(|_| ())
}

async fn stat_path(path: PathBuf) -> io::Result<Option<ObjectMeta>> {
    match tokio::fs::metadata(path).await {
        Ok(m) => Ok(Some(ObjectMeta {
            size: m.len(),
            modified: m.modified()?,
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Streams `path` from `offset`, `len` bytes or (`None`) to its end.
async fn stream_path(path: PathBuf, offset: u64, len: Option<u64>) -> io::Result<ByteStream> {
    let (file, size) = blocking(move || {
        let f = std::fs::File::open(path)?;
        let size = f.metadata()?.len();
        Ok((f, size))
    })
    .await?;
    let len = len.unwrap_or_else(|| size.saturating_sub(offset));
    Ok(stream::file_stream(file, offset, len, STREAM_CHUNK))
}

/// Appends to a staging file, one short blocking job per part, so no thread is
/// held while the client sends nothing.
struct FsStagingWriter {
    file: Option<std::fs::File>,
}

#[async_trait::async_trait]
impl StagingWriter for FsStagingWriter {
    async fn write_part(&mut self, part: Part) -> io::Result<()> {
        let mut file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("staging file lost to an earlier failure"))?;
        let (file, res) = tokio::task::spawn_blocking(move || {
            let res = write_all_vectored(&mut file, part.chunks());
            (file, res)
        })
        .await
        .map_err(io::Error::other)?;
        res?;
        self.file = Some(file);
        Ok(())
    }

    async fn finish(self: Box<Self>, durable: bool) -> io::Result<()> {
        match self.file {
            // `complete` fsyncs the file before the rename in any case; a
            // second fsync here would cost a one-shot upload a journal commit.
            Some(file) if durable => blocking(move || file.sync_data()).await,
            _ => Ok(()),
        }
    }
}

/// The digests under `blobs/`, walked one directory batch at a time.
struct BlobWalk {
    algorithms: Option<tokio::fs::ReadDir>,
    algorithm: String,
    shards: Option<tokio::fs::ReadDir>,
    blobs: Option<tokio::fs::ReadDir>,
}

impl BlobWalk {
    async fn next_blob(&mut self) -> io::Result<Option<ListedBlob>> {
        loop {
            if let Some(blobs) = &mut self.blobs {
                let Some(blob) = blobs.next_entry().await? else {
                    self.blobs = None;
                    continue;
                };
                let name = blob.file_name();
                let Some(hex) = name.to_str() else { continue };
                // Stray files that are not digests are ignored, not deleted.
                let Ok(digest) = Digest::parse(&format!("{}:{hex}", self.algorithm)) else {
                    continue;
                };
                // Collected by a concurrent sweep between the listing and this look.
                let Some(meta) = skip_vanished(blob.metadata().await)? else {
                    continue;
                };
                return Ok(Some(ListedBlob {
                    digest,
                    meta: ObjectMeta {
                        size: meta.len(),
                        modified: meta.modified()?,
                    },
                }));
            }
            if let Some(shards) = &mut self.shards {
                let Some(shard) = shards.next_entry().await? else {
                    self.shards = None;
                    continue;
                };
                self.blobs = skip_vanished(tokio::fs::read_dir(shard.path()).await)?;
                continue;
            }
            let Some(algorithms) = &mut self.algorithms else {
                return Ok(None);
            };
            let Some(algorithm) = algorithms.next_entry().await? else {
                self.algorithms = None;
                return Ok(None);
            };
            let Some(name) = algorithm.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            self.algorithm = name;
            self.shards = skip_vanished(tokio::fs::read_dir(algorithm.path()).await)?;
        }
    }
}

async fn next_staging(dir: &mut tokio::fs::ReadDir) -> io::Result<Option<ListedStaging>> {
    while let Some(entry) = dir.next_entry().await? {
        let Some(Ok(id)) = entry.file_name().to_str().map(UploadId::parse) else {
            continue;
        };
        // Finished or aborted between the listing and this look.
        let Some(meta) = skip_vanished(entry.metadata().await)? else {
            continue;
        };
        return Ok(Some(ListedStaging {
            id,
            meta: ObjectMeta {
                size: meta.len(),
                modified: meta.modified()?,
            },
        }));
    }
    Ok(None)
}

/// At most `max` bytes of the file at `path` from `offset`.
/// A small file read on the calling thread, but only if its bytes are in the
/// page cache (`preadv2` with `RWF_NOWAIT`); `None` when the read would wait
/// for the disk, and the caller goes to a blocking thread instead. The hop is
/// most of a cached small read's time when the machine is busy (the blocking
/// thread waits for a core): an `ostree pull` from a server whose small-file
/// cache is cold spent about 0.2 ms per object on it, against 0.02 ms once
/// cached. The open and `fstat` stay on this thread, as a web server's do.
#[cfg(target_os = "linux")]
fn read_small_cached(path: &Path, max: u64) -> io::Result<Option<Option<Bytes>>> {
    use rustix::fs::{Mode, OFlags};
    use rustix::io::{Errno, ReadWriteFlags};
    let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let size = rustix::fs::fstat(&fd)?.st_size as u64;
    if size > max {
        return Ok(Some(None));
    }
    let mut buf = vec![0u8; size as usize];
    let mut done = 0;
    while done < buf.len() {
        let mut slices = [io::IoSliceMut::new(&mut buf[done..])];
        match rustix::io::preadv2(&fd, &mut slices, done as u64, ReadWriteFlags::NOWAIT) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => done += n,
            // Not (all) cached, or a kernel or filesystem without RWF_NOWAIT.
            Err(Errno::AGAIN | Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => return Ok(None),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some(Some(Bytes::from(buf))))
}

#[cfg(not(target_os = "linux"))]
fn read_small_cached(_path: &Path, _max: u64) -> io::Result<Option<Option<Bytes>>> {
    Ok(None)
}

fn read_file_at(path: &Path, offset: u64, max: u64) -> io::Result<Bytes> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path)?;
    // Sized from the file's length, so the bytes come in one pread(2):
    // `read_to_end` into an empty buffer probes and grows it, about ten
    // reads per file (a rewrite of 1,000 packages' metadata made 11,000).
    let len = file.metadata()?.len();
    let want = len.saturating_sub(offset).min(max) as usize;
    let mut buf = vec![0u8; want];
    let mut done = 0;
    while done < want {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(done);
    Ok(Bytes::from(buf))
}

#[async_trait::async_trait]
impl Backend for FsBackend {
    async fn create_staging(&self, id: &UploadId) -> io::Result<()> {
        let path = self.staging_path(id);
        blocking(move || {
            private_options().write(true).create_new(true).open(&path)?;
            sync_dir(path.parent().expect("staging path has a parent directory"))
        })
        .await
    }

    async fn open_staging(&self, id: &UploadId) -> io::Result<Box<dyn StagingWriter>> {
        let path = self.staging_path(id);
        let file = blocking(move || std::fs::OpenOptions::new().append(true).open(path)).await?;
        Ok(Box::new(FsStagingWriter { file: Some(file) }))
    }

    async fn stat_staging(&self, id: &UploadId) -> io::Result<Option<ObjectMeta>> {
        stat_path(self.staging_path(id)).await
    }

    async fn read_staging(&self, id: &UploadId, offset: u64) -> io::Result<ByteStream> {
        stream_path(self.staging_path(id), offset, None).await
    }

    async fn complete(&self, id: &UploadId, digest: &Digest) -> io::Result<()> {
        let path = self.staging_path(id);
        let target = self.blob_path(digest);
        blocking(move || {
            let file = std::fs::OpenOptions::new().write(true).open(&path)?;
            // A fresh mtime starts the garbage collector's grace period now, not
            // when the upload began, so bytes that a failed metadata commit
            // leaves behind are not swept as an orphan at once.
            file.set_modified(std::time::SystemTime::now())?;
            file.sync_all()?;
            let dir = target.parent().expect("blob path has a parent directory");
            create_private_dir(dir)?;
            // Replacing an existing blob is harmless: same digest, same bytes.
            std::fs::rename(&path, &target)?;
            sync_dir(dir)
        })
        .await
    }

    async fn put_many(&self, items: &[(Digest, Bytes)]) -> Vec<io::Result<()>> {
        let pid = std::process::id();
        let moves: Vec<(PathBuf, PathBuf, Bytes)> = items
            .iter()
            .map(|(digest, bytes)| {
                let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
                // Under uploads/, so a crash leaves them where upload expiry looks.
                let temp = self.root.join("uploads").join(format!("put-{pid}-{n}"));
                (temp, self.blob_path(digest), bytes.clone())
            })
            .collect();
        let root = self.root.clone();
        let n = moves.len();
        blocking(move || {
            let mut written = Vec::with_capacity(moves.len());
            let mut failed = Vec::with_capacity(moves.len());
            for (mut temp, target, bytes) in moves {
                // A name left by a crashed process whose pid this one reuses
                // gets a suffix (still a valid upload id, so expiry finds it).
                let base = temp.clone();
                let mut file = create_private_file(&temp);
                let mut tries = 0;
                while matches!(&file, Err(e) if e.kind() == io::ErrorKind::AlreadyExists)
                    && tries < 8
                {
                    tries += 1;
                    let name = base.file_name().expect("a file name").to_string_lossy();
                    temp = base.with_file_name(format!("{name}_{tries}"));
                    file = create_private_file(&temp);
                }
                match file.and_then(|mut f| f.write_all(&bytes)) {
                    Ok(()) => {
                        written.push((temp, target));
                        failed.push(None);
                    }
                    Err(e) => {
                        let _ = std::fs::remove_file(&temp);
                        failed.push(Some(e));
                    }
                }
            }
            let mut done = complete_moves(&root, written).into_iter();
            Ok(failed
                .into_iter()
                .map(|f| match f {
                    Some(e) => Err(e),
                    None => done.next().expect("one result per move"),
                })
                .collect())
        })
        .await
        .unwrap_or_else(|e| failing_all((0..n).map(|_| Ok(())).collect(), &e))
    }

    async fn complete_many(&self, items: &[(UploadId, Digest)]) -> Vec<io::Result<()>> {
        let moves: Vec<(PathBuf, PathBuf)> = items
            .iter()
            .map(|(id, digest)| (self.staging_path(id), self.blob_path(digest)))
            .collect();
        let root = self.root.clone();
        let n = moves.len();
        blocking(move || Ok(complete_moves(&root, moves)))
            .await
            .unwrap_or_else(|e| failing_all((0..n).map(|_| Ok(())).collect(), &e))
    }

    async fn delete_staging(&self, id: &UploadId) -> io::Result<()> {
        missing_is_ok(tokio::fs::remove_file(self.staging_path(id)).await)
    }

    fn list_staging(&self) -> ListStream<'_, ListedStaging> {
        let dir = self.root.join("uploads");
        Box::pin(futures_util::stream::try_unfold(
            None,
            move |state: Option<tokio::fs::ReadDir>| {
                let dir = dir.clone();
                async move {
                    let mut read_dir = match state {
                        Some(read_dir) => read_dir,
                        None => tokio::fs::read_dir(dir).await?,
                    };
                    Ok(next_staging(&mut read_dir)
                        .await?
                        .map(|entry| (entry, Some(read_dir))))
                }
            },
        ))
    }

    async fn put_state(&self, id: &UploadId, state: Bytes) -> io::Result<()> {
        let target = self.state_path(id);
        let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        // Written aside and renamed over, so a reader sees one whole state. Not
        // fsynced: a state lost to a crash only costs a re-hash.
        let temp = target.with_file_name(format!("{}.{}.{n}.tmp", id.as_str(), std::process::id()));
        blocking(move || {
            create_private_file(&temp)?.write_all(&state)?;
            std::fs::rename(&temp, &target).inspect_err(|_| {
                let _ = std::fs::remove_file(&temp);
            })
        })
        .await
    }

    async fn get_state(&self, id: &UploadId) -> io::Result<Option<Bytes>> {
        match tokio::fs::read(self.state_path(id)).await {
            Ok(bytes) => Ok(Some(Bytes::from(bytes))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn delete_state(&self, id: &UploadId) -> io::Result<()> {
        missing_is_ok(tokio::fs::remove_file(self.state_path(id)).await)
    }

    async fn stat(&self, digest: &Digest) -> io::Result<Option<ObjectMeta>> {
        stat_path(self.blob_path(digest)).await
    }

    async fn read(&self, digest: &Digest, offset: u64, len: u64) -> io::Result<ByteStream> {
        stream_path(self.blob_path(digest), offset, Some(len)).await
    }

    async fn read_small(&self, digest: &Digest, max: u64) -> io::Result<Option<Bytes>> {
        let path = self.blob_path(digest);
        if let Some(read) = read_small_cached(&path, max)? {
            return Ok(read);
        }
        // One hop to a blocking thread for open, size and read, instead of three.
        blocking(move || {
            let mut file = std::fs::File::open(path)?;
            let size = file.metadata()?.len();
            if size > max {
                return Ok(None);
            }
            let mut buf = Vec::with_capacity(size as usize);
            io::Read::read_to_end(&mut file, &mut buf)?;
            Ok(Some(Bytes::from(buf)))
        })
        .await
    }

    async fn read_at(&self, digest: &Digest, offset: u64, max: u64) -> io::Result<Bytes> {
        let path = self.blob_path(digest);
        // One hop to a blocking thread for open and read.
        blocking(move || read_file_at(&path, offset, max)).await
    }

    async fn read_heads(&self, digests: &[Digest], max: u64) -> Vec<io::Result<Bytes>> {
        let paths: Vec<PathBuf> = digests.iter().map(|d| self.blob_path(d)).collect();
        let count = paths.len();
        // One hop for all of them: a hop costs more than reading a small
        // file's start from the page cache.
        match tokio::task::spawn_blocking(move || {
            paths
                .iter()
                .map(|path| read_file_at(path, 0, max))
                .collect::<Vec<_>>()
        })
        .await
        {
            Ok(heads) => heads,
            Err(e) => (0..count)
                .map(|_| Err(io::Error::other(format!("reading blobs: {e}"))))
                .collect(),
        }
    }

    async fn delete(&self, digest: &Digest) -> io::Result<()> {
        missing_is_ok(tokio::fs::remove_file(self.blob_path(digest)).await)
    }

    fn list(&self) -> ListStream<'_, ListedBlob> {
        let dir = self.root.join("blobs");
        Box::pin(futures_util::stream::try_unfold(
            None,
            move |state: Option<BlobWalk>| {
                let dir = dir.clone();
                async move {
                    let mut walk = match state {
                        Some(walk) => walk,
                        None => BlobWalk {
                            algorithms: Some(tokio::fs::read_dir(dir).await?),
                            algorithm: String::new(),
                            shards: None,
                            blobs: None,
                        },
                    };
                    Ok(walk.next_blob().await?.map(|blob| (blob, Some(walk))))
                }
            },
        ))
    }
}
