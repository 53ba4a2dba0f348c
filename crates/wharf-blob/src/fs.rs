//! The filesystem backend of the blob store.
//!
//! On-disk layout (version 1, recorded in `layout-version`):
//!
//! ```text
//! <root>/layout-version            "wharf-blob-fs 1"
//! <root>/blobs/<algorithm>/<first two hex>/<hex>   committed, verified blobs
//! <root>/uploads/<id>              staging file of an upload session
//! ```
//!
//! A commit is: hash check → fsync the staging file → rename into `blobs/` →
//! fsync the target directory. Rename is atomic, so a reader sees either no blob
//! or the whole verified blob, and two writers committing the same digest both
//! succeed with identical bytes.

mod stream;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use wharf_core::{Algorithm, Digest, Hasher};

use crate::{BlobEntry, BlobError, BlobStore, ByteRange, ByteStream, UploadEntry, Verification};

const LAYOUT_VERSION: &str = "wharf-blob-fs 1";
/// Chunks smaller than this are coalesced before they reach the writer thread,
/// so tiny network frames do not turn into tiny writes.
const COALESCE_BYTES: usize = 256 * 1024;
/// Read size when hashing a stored blob.
const READ_CHUNK: usize = 1024 * 1024;
/// Read size when streaming a stored blob to a client: small, because every
/// concurrent transfer keeps about one chunk (plus the socket's queue) in memory.
const STREAM_CHUNK: usize = 64 * 1024;

/// Blob store backed by a local directory.
pub struct FsBlobStore {
    root: PathBuf,
    /// Running hash state of uploads in progress, so committing a large upload
    /// does not re-read it. Lost on restart, in which case commit re-hashes the
    /// staging file; the state is an optimisation, never the source of truth.
    upload_states: Mutex<HashMap<String, Arc<tokio::sync::Mutex<UploadState>>>>,
}

struct UploadState {
    /// Number of staging-file bytes that `hasher` has consumed.
    hashed_len: u64,
    /// SHA-256 of the first `hashed_len` bytes, if still valid.
    hasher: Option<Hasher>,
}

impl UploadState {
    fn fresh() -> UploadState {
        UploadState {
            hashed_len: 0,
            hasher: Some(Algorithm::Sha256.hasher()),
        }
    }
}

impl FsBlobStore {
    /// Opens (creating if needed) a blob store rooted at `root`.
    pub async fn open(root: impl Into<PathBuf>) -> Result<FsBlobStore, BlobError> {
        let root = root.into();
        let r = root.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            create_private_dir(&r.join("blobs"))?;
            create_private_dir(&r.join("uploads"))?;
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
        .await
        .map_err(io::Error::other)??;
        Ok(FsBlobStore {
            root,
            upload_states: Mutex::new(HashMap::new()),
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

    fn upload_path(&self, id: &str) -> Result<PathBuf, BlobError> {
        // Ids become file names: allow only characters that cannot form a path.
        let safe = !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !safe {
            return Err(BlobError::InvalidUploadId(id.to_owned()));
        }
        Ok(self.root.join("uploads").join(id))
    }

    fn state_for(&self, id: &str) -> Arc<tokio::sync::Mutex<UploadState>> {
        let mut states = self.upload_states.lock().unwrap_or_else(|e| e.into_inner());
        states
            .entry(id.to_owned())
            .or_insert_with(|| {
                // Unknown here means created before a restart: force a re-hash.
                Arc::new(tokio::sync::Mutex::new(UploadState {
                    hashed_len: u64::MAX,
                    hasher: None,
                }))
            })
            .clone()
    }

    fn forget_state(&self, id: &str) {
        let mut states = self.upload_states.lock().unwrap_or_else(|e| e.into_inner());
        states.remove(id);
    }
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

fn hash_file(path: &Path, algorithm: Algorithm) -> io::Result<Digest> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = algorithm.hasher();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish())
}

/// `None` for a file that vanished between a directory listing and a look at it.
fn skip_vanished<T>(res: io::Result<T>) -> io::Result<Option<T>> {
    match res {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn not_found_as<T>(res: io::Result<T>, err: impl FnOnce() -> BlobError) -> Result<T, BlobError> {
    match res {
        Ok(v) => Ok(v),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(err()),
        Err(e) => Err(BlobError::Io(e)),
    }
}

/// The write-and-hash jobs of one append: at most one chunk in flight.
struct ChunkPipeline {
    /// The staging file; `None` while a job has it, or after a failure.
    file: Option<std::fs::File>,
    /// The running hash; `None` while a job has it, or when it is unknown.
    hasher: Option<Hasher>,
    in_flight: Option<InFlight>,
    /// Bytes written so far by this append.
    written: u64,
    /// The first write (or join) error; nothing more is written after it.
    failed: Option<io::Error>,
}

type WriteJob = tokio::task::JoinHandle<(std::fs::File, io::Result<usize>)>;
type HashJob = tokio::task::JoinHandle<Hasher>;

struct InFlight {
    write: WriteJob,
    hash: Option<HashJob>,
}

impl ChunkPipeline {
    /// Waits for the chunk in flight, then starts writing and hashing `chunk`.
    /// Returns false once a write has failed.
    async fn dispatch(&mut self, chunk: Bytes) -> bool {
        self.settle().await;
        let Some(mut file) = self.file.take() else {
            return false;
        };
        let hash = self.hasher.take().map(|mut hasher| {
            let chunk = chunk.clone();
            tokio::task::spawn_blocking(move || {
                hasher.update(&chunk);
                hasher
            })
        });
        let write = tokio::task::spawn_blocking(move || {
            let res = file.write_all(&chunk).map(|()| chunk.len());
            (file, res)
        });
        self.in_flight = Some(InFlight { write, hash });
        true
    }

    /// Waits for the chunk in flight, if any, and takes back file and hasher.
    async fn settle(&mut self) {
        let Some(InFlight { write, hash }) = self.in_flight.take() else {
            return;
        };
        if let Some(hash) = hash {
            // A hasher lost to a panicked job only means commit re-hashes.
            self.hasher = hash.await.ok();
        }
        match write.await {
            Ok((file, Ok(n))) => {
                self.written += n as u64;
                self.file = Some(file);
            }
            Ok((_, Err(e))) => self.failed = Some(e),
            Err(e) => self.failed = Some(io::Error::other(e)),
        }
    }
}

#[async_trait::async_trait]
impl BlobStore for FsBlobStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        match tokio::fs::metadata(self.blob_path(digest)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn read(
        &self,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<ByteStream, BlobError> {
        let path = self.blob_path(digest);
        let file = not_found_as(
            blocking(move || {
                let f = std::fs::File::open(path)?;
                let len = f.metadata()?.len();
                Ok((f, len))
            })
            .await,
            || BlobError::NotFound(digest.clone()),
        )?;
        let (file, size) = file;
        let (offset, len) = match range {
            None => (0, size),
            Some(r) if r.start <= r.end && r.end < size => (r.start, r.len()),
            Some(r) => {
                return Err(BlobError::RangeNotSatisfiable {
                    start: r.start,
                    end: r.end,
                    size,
                })
            }
        };
        Ok(stream::file_stream(file, offset, len, STREAM_CHUNK))
    }

    async fn create_upload(&self, id: &str) -> Result<(), BlobError> {
        let path = self.upload_path(id)?;
        blocking(move || {
            private_options().write(true).create_new(true).open(&path)?;
            sync_dir(path.parent().expect("upload path has a parent directory"))
        })
        .await?;
        let mut states = self.upload_states.lock().unwrap_or_else(|e| e.into_inner());
        states.insert(
            id.to_owned(),
            Arc::new(tokio::sync::Mutex::new(UploadState::fresh())),
        );
        Ok(())
    }

    async fn append(&self, id: &str, mut body: ByteStream) -> Result<u64, BlobError> {
        let path = self.upload_path(id)?;
        let state = self.state_for(id);
        let mut state = state.lock().await;
        let (file, start_len) = not_found_as(
            blocking(move || {
                let f = std::fs::OpenOptions::new().append(true).open(path)?;
                let len = f.metadata()?.len();
                Ok((f, len))
            })
            .await,
            || BlobError::UploadNotFound(id.to_owned()),
        )?;
        let hasher = if state.hashed_len == start_len {
            state.hasher.take()
        } else {
            None
        };
        state.hasher = None;

        // Each chunk is written and hashed by two short blocking jobs running side
        // by side (a chunk costs the longer of the two, not their sum) while the
        // next network chunk arrives. No thread is held between chunks, so a
        // client that stalls mid-body costs no thread while it sends nothing.
        let mut pipeline = ChunkPipeline {
            file: Some(file),
            hasher,
            in_flight: None,
            written: 0,
            failed: None,
        };
        let mut body_err = None;
        let mut pending = BytesMut::new();
        while let Some(item) = body.next().await {
            match item {
                Ok(chunk) => {
                    let chunk = if pending.is_empty() && chunk.len() >= COALESCE_BYTES {
                        chunk
                    } else {
                        pending.extend_from_slice(&chunk);
                        if pending.len() < COALESCE_BYTES {
                            continue;
                        }
                        pending.split().freeze()
                    };
                    if !pipeline.dispatch(chunk).await {
                        break; // The write failed; its error is reported below.
                    }
                }
                Err(e) => {
                    body_err = Some(e);
                    break;
                }
            }
        }
        if !pending.is_empty() {
            pipeline.dispatch(pending.freeze()).await;
        }
        pipeline.settle().await;
        let ChunkPipeline {
            file,
            hasher,
            written,
            failed,
            ..
        } = pipeline;
        // Acknowledged bytes must survive a crash.
        let synced = match file {
            Some(file) => blocking(move || file.sync_data()).await,
            None => Ok(()),
        };
        let write_result = match failed {
            Some(e) => Err(e),
            None => synced,
        };
        state.hashed_len = start_len + written;
        // The hasher saw every chunk sent; that equals what was written only if
        // every write succeeded.
        state.hasher = if write_result.is_ok() { hasher } else { None };
        if let Err(e) = write_result {
            return Err(BlobError::Io(e));
        }
        if let Some(e) = body_err {
            return Err(BlobError::BodyInterrupted(e));
        }
        Ok(start_len + written)
    }

    async fn upload_size(&self, id: &str) -> Result<u64, BlobError> {
        let path = self.upload_path(id)?;
        let meta = not_found_as(tokio::fs::metadata(path).await, || {
            BlobError::UploadNotFound(id.to_owned())
        })?;
        Ok(meta.len())
    }

    async fn verify_upload(&self, id: &str, expected: &Digest) -> Result<u64, BlobError> {
        let path = self.upload_path(id)?;
        let state = self.state_for(id);
        let mut state = state.lock().await;
        let len = not_found_as(tokio::fs::metadata(&path).await, || {
            BlobError::UploadNotFound(id.to_owned())
        })?
        .len();
        let running = match state.hasher.take() {
            Some(h) if state.hashed_len == len && h.algorithm() == expected.algorithm() => Some(h),
            _ => None,
        };
        let actual = match running {
            Some(h) => h.finish(),
            None => {
                let (p, algo) = (path.clone(), expected.algorithm());
                blocking(move || hash_file(&p, algo)).await?
            }
        };
        if &actual != expected {
            let p = path.clone();
            blocking(move || std::fs::remove_file(p)).await?;
            drop(state);
            self.forget_state(id);
            return Err(BlobError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        Ok(len)
    }

    async fn publish_upload(&self, id: &str, digest: &Digest) -> Result<(), BlobError> {
        let path = self.upload_path(id)?;
        let state = self.state_for(id);
        let state = state.lock().await;
        let target = self.blob_path(digest);
        not_found_as(
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
            .await,
            || BlobError::UploadNotFound(id.to_owned()),
        )?;
        drop(state);
        self.forget_state(id);
        Ok(())
    }

    async fn abort_upload(&self, id: &str) -> Result<(), BlobError> {
        let path = self.upload_path(id)?;
        match tokio::fs::remove_file(path).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        self.forget_state(id);
        Ok(())
    }

    async fn list_uploads(&self) -> Result<Vec<UploadEntry>, BlobError> {
        let dir = self.root.join("uploads");
        Ok(blocking(move || {
            let mut res = Vec::new();
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                // Finished or aborted between the listing and this look.
                let Some(meta) = skip_vanished(entry.metadata())? else {
                    continue;
                };
                if let Some(id) = entry.file_name().to_str() {
                    res.push(UploadEntry {
                        id: id.to_owned(),
                        size: meta.len(),
                        modified: meta.modified()?,
                    });
                }
            }
            Ok(res)
        })
        .await?)
    }

    async fn list(&self) -> Result<Vec<BlobEntry>, BlobError> {
        let dir = self.root.join("blobs");
        Ok(blocking(move || {
            let mut res = Vec::new();
            for algo in std::fs::read_dir(dir)? {
                let algo = algo?;
                let Some(algo_name) = algo.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                for shard in std::fs::read_dir(algo.path())? {
                    let Some(blobs) = skip_vanished(std::fs::read_dir(shard?.path()))? else {
                        continue;
                    };
                    for blob in blobs {
                        let blob = blob?;
                        let name = blob.file_name();
                        let Some(hex) = name.to_str() else { continue };
                        // Stray files that are not digests are ignored, not deleted.
                        let Ok(digest) = Digest::parse(&format!("{algo_name}:{hex}")) else {
                            continue;
                        };
                        // Collected by a concurrent sweep between the listing and this look.
                        let Some(meta) = skip_vanished(blob.metadata())? else {
                            continue;
                        };
                        res.push(BlobEntry {
                            digest,
                            size: meta.len(),
                            modified: meta.modified()?,
                        });
                    }
                }
            }
            Ok(res)
        })
        .await?)
    }

    async fn delete(&self, digest: &Digest) -> Result<(), BlobError> {
        match tokio::fs::remove_file(self.blob_path(digest)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn verify(&self, digest: &Digest) -> Result<Verification, BlobError> {
        let path = self.blob_path(digest);
        let algo = digest.algorithm();
        let actual = not_found_as(blocking(move || hash_file(&path, algo)).await, || {
            BlobError::NotFound(digest.clone())
        })?;
        if &actual == digest {
            Ok(Verification::Intact)
        } else {
            Ok(Verification::Corrupt { actual })
        }
    }
}
