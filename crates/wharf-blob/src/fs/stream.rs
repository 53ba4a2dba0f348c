//! Streaming a file region one chunk per request of the consumer.
//!
//! A chunk is read (on a blocking thread, for the duration of that one read)
//! only when the consumer polls for it, so a client that stops reading holds no
//! thread and no buffer beyond what it was already handed.
//!
//! Memory: every chunk handed out carries a permit that is returned when the
//! last reference to its bytes is dropped, i.e. once the HTTP layer has written
//! it to the socket. Each transfer owns one permit of its own, so it always
//! progresses one small chunk at a time; larger chunks, and more chunks in
//! flight (which the HTTP layer queues while the socket drains), come from one
//! process-wide budget. However
//! many clients read at once, blob buffers stay under that budget plus one
//! chunk per transfer, and a client that stops reading pins at most a chunk or
//! a few of the budget, never a thread.

use std::fs::File;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ByteStream;

/// Bytes of blob chunks that may be in flight beyond each transfer's own one.
const SHARED_BUDGET_BYTES: usize = 64 * 1024 * 1024;
/// Chunk size while the shared budget has room: fewer reads and thread hops
/// per byte for the few fast transfers; under load every transfer falls back
/// to its own small chunks.
const BUDGET_CHUNK: u64 = 1024 * 1024;

fn shared_budget() -> &'static Arc<Semaphore> {
    static BUDGET: std::sync::OnceLock<Arc<Semaphore>> = std::sync::OnceLock::new();
    BUDGET.get_or_init(|| Arc::new(Semaphore::new(SHARED_BUDGET_BYTES)))
}

struct Region {
    file: Arc<File>,
    offset: u64,
    remaining: u64,
    chunk: usize,
    /// This transfer's own one-chunk allowance.
    own: Arc<Semaphore>,
}

/// A chunk's buffer and the permit it holds until the bytes are dropped.
struct Budgeted {
    buf: Vec<u8>,
    _permit: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Budgeted {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Region {
    /// The size of the next chunk and its permit: a large chunk if the shared
    /// budget has room for one right now, else a small one as soon as this
    /// transfer's previous chunk is gone or the budget has room for it.
    async fn next_permit(&self) -> io::Result<(usize, OwnedSemaphorePermit)> {
        let large = self.remaining.min(BUDGET_CHUNK.max(self.chunk as u64)) as usize;
        if let Ok(permit) = shared_budget()
            .clone()
            .try_acquire_many_owned(u32::try_from(large).unwrap_or(u32::MAX))
        {
            return Ok((large, permit));
        }
        let small = self.remaining.min(self.chunk as u64) as usize;
        Ok((small, self.permit(small).await?))
    }

    /// Waits until this transfer's previous chunk is gone or the shared budget
    /// has room for another.
    async fn permit(&self, len: usize) -> io::Result<OwnedSemaphorePermit> {
        let shared = u32::try_from(len).unwrap_or(u32::MAX);
        let own = self.own.clone().acquire_owned();
        let budget = shared_budget().clone().acquire_many_owned(shared);
        tokio::select! {
            biased;
            permit = own => permit.map_err(io::Error::other),
            permit = budget => permit.map_err(io::Error::other),
        }
    }
}

/// Streams `len` bytes of `file` starting at `offset`, in chunks of `chunk`
/// bytes (larger while the shared budget has room).
pub(crate) fn file_stream(file: File, offset: u64, len: u64, chunk: usize) -> ByteStream {
    let region = Region {
        file: Arc::new(file),
        offset,
        remaining: len,
        chunk,
        own: Arc::new(Semaphore::new(1)),
    };
    Box::pin(futures_util::stream::unfold(
        Some(region),
        |region| async move {
            let mut region = region?;
            if region.remaining == 0 {
                return None;
            }
            let (want, permit) = match region.next_permit().await {
                Ok(next) => next,
                Err(e) => return Some((Err(e), None)),
            };
            let (file, offset) = (region.file.clone(), region.offset);
            // Allocated here rather than on the blocking thread, so buffers come
            // from the few workers' allocator arenas instead of one per thread.
            let buf = vec![0; want];
            let read = tokio::task::spawn_blocking(move || read_exact_at(&file, offset, buf))
                .await
                .map_err(io::Error::other)
                .and_then(|r| r)
                .map(|buf| {
                    Bytes::from_owner(Budgeted {
                        buf,
                        _permit: permit,
                    })
                });
            match read {
                Ok(bytes) => {
                    region.offset += want as u64;
                    region.remaining -= want as u64;
                    Some((Ok(bytes), Some(region)))
                }
                // After an error the stream ends.
                Err(e) => Some((Err(e), None)),
            }
        },
    ))
}

fn read_exact_at(file: &File, offset: u64, mut buf: Vec<u8>) -> io::Result<Vec<u8>> {
    let read = positioned_read(file, &mut buf, offset);
    match read {
        Ok(()) => Ok(buf),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "blob shorter than its recorded size",
        )),
        Err(e) => Err(e),
    }
}

#[cfg(unix)]
fn positioned_read(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(not(unix))]
fn positioned_read(mut file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    // Each stream owns its handle and reads in order, so moving the shared
    // cursor is safe here.
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}
