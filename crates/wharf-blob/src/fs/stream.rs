//! Streaming a file region from a blocking reader thread.
//!
//! Reading on one dedicated blocking task and handing out `Bytes` through a
//! small channel keeps memory flat (at most a few chunks in flight per reader)
//! and avoids a thread hop per chunk.

use std::io::{Read, Seek, SeekFrom};

use bytes::BytesMut;

use crate::ByteStream;

/// Streams `len` bytes of `file` starting at `offset`.
pub(crate) fn file_stream(
    mut file: std::fs::File,
    offset: u64,
    len: u64,
    chunk: usize,
) -> ByteStream {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::task::spawn_blocking(move || {
        if offset > 0 {
            if let Err(e) = file.seek(SeekFrom::Start(offset)) {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
        let mut remaining = len;
        while remaining > 0 {
            let want = remaining.min(chunk as u64) as usize;
            let mut buf = BytesMut::zeroed(want);
            let mut filled = 0;
            while filled < want {
                match file.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
            if filled < want {
                let _ = tx.blocking_send(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "blob shorter than its recorded size",
                )));
                return;
            }
            remaining -= want as u64;
            if tx.blocking_send(Ok(buf.freeze())).is_err() {
                return; // The client went away.
            }
        }
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}
