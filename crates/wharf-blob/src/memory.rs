//! An in-memory backend: the second implementation that keeps the
//! [`Backend`] seam honest (the suite in `tests/backend.rs` runs on it and on
//! the filesystem), and a fast store for tests. Nothing survives the process,
//! but a [`MemoryBackend`] shared by two [`BlobStore`]s behaves like one
//! storage seen by two processes.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use wharf_core::Digest;

use crate::backend::{
    Backend, ListStream, ListedBlob, ListedStaging, ObjectMeta, Part, StagingWriter, UploadId,
};
use crate::{BlobStore, ByteStream};

/// Size of the chunks a read hands out, like a file read in pieces.
const READ_CHUNK: usize = 64 * 1024;
/// Entries copied out of the maps per step of a listing, so a listing never
/// holds the lock while its consumer works.
const LIST_PAGE: usize = 256;

#[derive(Default)]
struct Objects {
    staging: HashMap<UploadId, (BytesMut, SystemTime)>,
    states: HashMap<UploadId, Bytes>,
    /// Ordered so that a listing can resume after the last key it returned.
    blobs: BTreeMap<String, (Digest, Bytes, SystemTime)>,
}

/// Blob store backend in memory.
#[derive(Default, Clone)]
pub struct MemoryBackend {
    objects: Arc<Mutex<Objects>>,
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }

    fn objects(&self) -> MutexGuard<'_, Objects> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A blob store on a fresh in-memory backend.
pub fn open() -> BlobStore {
    BlobStore::new(Arc::new(MemoryBackend::new()))
}

fn not_found(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{what} not found"))
}

fn chunked(bytes: Bytes) -> ByteStream {
    let mut chunks = Vec::with_capacity(bytes.len() / READ_CHUNK + 1);
    let mut rest = bytes;
    while !rest.is_empty() {
        chunks.push(Ok(rest.split_to(rest.len().min(READ_CHUNK))));
    }
    Box::pin(futures_util::stream::iter(chunks))
}

fn slice(bytes: &[u8], offset: u64, len: Option<u64>) -> io::Result<Bytes> {
    let start = usize::try_from(offset).map_err(io::Error::other)?;
    let end = match len {
        Some(len) => start.saturating_add(usize::try_from(len).map_err(io::Error::other)?),
        None => bytes.len(),
    };
    if start > bytes.len() || end > bytes.len() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "read past the end of the object",
        ));
    }
    Ok(Bytes::copy_from_slice(&bytes[start..end]))
}

struct MemoryStagingWriter {
    backend: MemoryBackend,
    id: UploadId,
}

#[async_trait::async_trait]
impl StagingWriter for MemoryStagingWriter {
    async fn write_part(&mut self, part: Part) -> io::Result<()> {
        let mut objects = self.backend.objects();
        let (bytes, modified) = objects
            .staging
            .get_mut(&self.id)
            .ok_or_else(|| not_found("staging area"))?;
        for chunk in part.chunks() {
            bytes.extend_from_slice(chunk);
        }
        *modified = SystemTime::now();
        Ok(())
    }

    async fn finish(self: Box<Self>, _durable: bool) -> io::Result<()> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl Backend for MemoryBackend {
    async fn create_staging(&self, id: &UploadId) -> io::Result<()> {
        let mut objects = self.objects();
        if objects.staging.contains_key(id) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "staging area exists",
            ));
        }
        objects
            .staging
            .insert(id.clone(), (BytesMut::new(), SystemTime::now()));
        Ok(())
    }

    async fn open_staging(&self, id: &UploadId) -> io::Result<Box<dyn StagingWriter>> {
        if !self.objects().staging.contains_key(id) {
            return Err(not_found("staging area"));
        }
        Ok(Box::new(MemoryStagingWriter {
            backend: self.clone(),
            id: id.clone(),
        }))
    }

    async fn stat_staging(&self, id: &UploadId) -> io::Result<Option<ObjectMeta>> {
        Ok(self
            .objects()
            .staging
            .get(id)
            .map(|(bytes, modified)| ObjectMeta {
                size: bytes.len() as u64,
                modified: *modified,
            }))
    }

    async fn read_staging(&self, id: &UploadId, offset: u64) -> io::Result<ByteStream> {
        let objects = self.objects();
        let (bytes, _) = objects
            .staging
            .get(id)
            .ok_or_else(|| not_found("staging area"))?;
        Ok(chunked(slice(bytes, offset, None)?))
    }

    async fn complete(&self, id: &UploadId, digest: &Digest) -> io::Result<()> {
        let mut objects = self.objects();
        let (bytes, _) = objects
            .staging
            .remove(id)
            .ok_or_else(|| not_found("staging area"))?;
        // Replacing an existing blob is harmless: same digest, same bytes.
        objects.blobs.insert(
            digest.to_string(),
            (digest.clone(), bytes.freeze(), SystemTime::now()),
        );
        Ok(())
    }

    async fn delete_staging(&self, id: &UploadId) -> io::Result<()> {
        self.objects().staging.remove(id);
        Ok(())
    }

    fn list_staging(&self) -> ListStream<'_, ListedStaging> {
        // Upload sessions are few; one snapshot is fine.
        let listed: Vec<io::Result<ListedStaging>> = self
            .objects()
            .staging
            .iter()
            .map(|(id, (bytes, modified))| {
                Ok(ListedStaging {
                    id: id.clone(),
                    meta: ObjectMeta {
                        size: bytes.len() as u64,
                        modified: *modified,
                    },
                })
            })
            .collect();
        Box::pin(futures_util::stream::iter(listed))
    }

    async fn put_state(&self, id: &UploadId, state: Bytes) -> io::Result<()> {
        self.objects().states.insert(id.clone(), state);
        Ok(())
    }

    async fn get_state(&self, id: &UploadId) -> io::Result<Option<Bytes>> {
        Ok(self.objects().states.get(id).cloned())
    }

    async fn delete_state(&self, id: &UploadId) -> io::Result<()> {
        self.objects().states.remove(id);
        Ok(())
    }

    async fn stat(&self, digest: &Digest) -> io::Result<Option<ObjectMeta>> {
        Ok(self
            .objects()
            .blobs
            .get(&digest.to_string())
            .map(|(_, bytes, modified)| ObjectMeta {
                size: bytes.len() as u64,
                modified: *modified,
            }))
    }

    async fn read(&self, digest: &Digest, offset: u64, len: u64) -> io::Result<ByteStream> {
        let bytes = self
            .objects()
            .blobs
            .get(&digest.to_string())
            .map(|(_, bytes, _)| bytes.clone())
            .ok_or_else(|| not_found("blob"))?;
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let end = start.saturating_add(usize::try_from(len).map_err(io::Error::other)?);
        if end > bytes.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the blob",
            ));
        }
        Ok(chunked(bytes.slice(start..end)))
    }

    async fn delete(&self, digest: &Digest) -> io::Result<()> {
        self.objects().blobs.remove(&digest.to_string());
        Ok(())
    }

    fn list(&self) -> ListStream<'_, ListedBlob> {
        // Page by key like an object store's listing, without holding the lock.
        let pages = futures_util::stream::unfold(Some(String::new()), move |after| async move {
            let after = after?;
            let page: Vec<(String, ListedBlob)> = self
                .objects()
                .blobs
                .range::<String, _>((
                    std::ops::Bound::Excluded(after.clone()),
                    std::ops::Bound::Unbounded,
                ))
                .take(LIST_PAGE)
                .map(|(key, (digest, bytes, modified))| {
                    (
                        key.clone(),
                        ListedBlob {
                            digest: digest.clone(),
                            meta: ObjectMeta {
                                size: bytes.len() as u64,
                                modified: *modified,
                            },
                        },
                    )
                })
                .collect();
            let next = page.last().map(|(key, _)| key.clone());
            if page.is_empty() {
                return None;
            }
            let items: Vec<io::Result<ListedBlob>> =
                page.into_iter().map(|(_, blob)| Ok(blob)).collect();
            Some((futures_util::stream::iter(items), next))
        });
        Box::pin(futures_util::StreamExt::flatten(pages))
    }
}
