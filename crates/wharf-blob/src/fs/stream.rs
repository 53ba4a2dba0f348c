//! Streaming a file region one chunk per request of the consumer.
//!
//! A chunk is read (on a blocking thread, for the duration of that one read)
//! only when the consumer polls for it, so a client that stops reading holds no
//! thread and no buffer beyond what it was already handed. Memory per transfer
//! is one chunk plus whatever the HTTP layer has queued for the socket.

use std::fs::File;
use std::io;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::ByteStream;

struct Region {
    file: Arc<File>,
    offset: u64,
    remaining: u64,
    chunk: usize,
}

/// Streams `len` bytes of `file` starting at `offset`, `chunk` bytes at a time.
pub(crate) fn file_stream(file: File, offset: u64, len: u64, chunk: usize) -> ByteStream {
    let region = Region {
        file: Arc::new(file),
        offset,
        remaining: len,
        chunk,
    };
    Box::pin(futures_util::stream::unfold(
        Some(region),
        |region| async move {
            let mut region = region?;
            if region.remaining == 0 {
                return None;
            }
            let want = region.remaining.min(region.chunk as u64) as usize;
            let (file, offset) = (region.file.clone(), region.offset);
            let read = tokio::task::spawn_blocking(move || read_exact_at(&file, offset, want))
                .await
                .map_err(io::Error::other)
                .and_then(|r| r);
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

fn read_exact_at(file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = BytesMut::zeroed(len);
    let read = positioned_read(file, &mut buf, offset);
    match read {
        Ok(()) => Ok(buf.freeze()),
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
