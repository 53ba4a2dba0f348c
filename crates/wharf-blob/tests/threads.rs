//! Slow and stalled clients must not pin the blocking thread pool.
//!
//! The runtime here has only two blocking threads: if a reader that stopped
//! reading, or an upload whose body stalled, kept one for the lifetime of its
//! transfer, the next transfer could not even start.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use wharf_blob::{bytes_stream, put_stream, BlobStore, ByteStream};
use wharf_core::Digest;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed))
        .collect()
}

/// A body fed by hand: it stalls whenever the test stops sending.
fn fed_body() -> (tokio::sync::mpsc::Sender<Bytes>, ByteStream) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok::<_, io::Error>(chunk), rx))
    });
    (tx, Box::pin(body))
}

async fn read_all(store: &BlobStore, digest: &Digest) -> Vec<u8> {
    let mut stream = store.read(digest, None).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

#[test]
fn idle_readers_and_stalled_uploads_hold_no_blocking_thread() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<BlobStore> = Arc::new(wharf_blob::fs::open(dir.path()).await.unwrap());
        let big = pattern(8 * 1024 * 1024, 1);
        let big_digest = Digest::sha256_of(&big);
        put_stream(
            &store,
            "big",
            &big_digest,
            bytes_stream(Bytes::from(big.clone())),
        )
        .await
        .unwrap();

        // Readers that took one chunk and then stopped reading.
        let mut idle_readers = Vec::new();
        for _ in 0..6 {
            let mut stream =
                tokio::time::timeout(Duration::from_secs(10), store.read(&big_digest, None))
                    .await
                    .expect("an idle reader holds a blocking thread: opening the next read hangs")
                    .unwrap();
            let first = stream.next().await.unwrap().unwrap().len();
            idle_readers.push((first, stream));
        }

        // Uploads whose body delivered a chunk and then stalled.
        let mut stalled = Vec::new();
        for i in 0..3 {
            let id = format!("stalled{i}");
            store.create_upload(&id).await.unwrap();
            let (tx, body) = fed_body();
            tx.send(Bytes::from(pattern(300 * 1024, 2))).await.unwrap();
            let store = store.clone();
            let task = tokio::spawn(async move { store.append(&id, body).await });
            stalled.push((tx, task));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;

        // Meanwhile another client pushes and pulls in bounded time.
        let other = pattern(3 * 1024 * 1024 + 5, 3);
        let other_digest = Digest::sha256_of(&other);
        tokio::time::timeout(Duration::from_secs(10), async {
            put_stream(
                &store,
                "other",
                &other_digest,
                bytes_stream(Bytes::from(other.clone())),
            )
            .await
            .unwrap();
            assert_eq!(read_all(&store, &other_digest).await, other);
        })
        .await
        .expect("idle readers or stalled uploads starve the blocking pool");

        // The stalled ones still finish correctly once their clients move again.
        for (i, (tx, task)) in stalled.into_iter().enumerate() {
            tx.send(Bytes::from(pattern(100 * 1024, 4))).await.unwrap();
            drop(tx);
            let size = task.await.unwrap().unwrap();
            assert_eq!(size, 400 * 1024);
            let mut expected = pattern(300 * 1024, 2);
            expected.extend(pattern(100 * 1024, 4));
            let digest = Digest::sha256_of(&expected);
            store
                .commit_upload(&format!("stalled{i}"), &digest)
                .await
                .unwrap();
            assert_eq!(read_all(&store, &digest).await, expected);
        }
        for (first, mut reader) in idle_readers {
            let mut len = first;
            while let Some(chunk) = reader.next().await {
                len += chunk.unwrap().len();
            }
            assert_eq!(len, big.len(), "a reader that resumed got other bytes");
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_in_flight_stay_within_a_shared_budget() {
    let dir = tempfile::tempdir().unwrap();
    let store = wharf_blob::fs::open(dir.path()).await.unwrap();
    let data = pattern(8 * 1024 * 1024, 5);
    let digest = Digest::sha256_of(&data);
    put_stream(
        &store,
        "b",
        &digest,
        bytes_stream(Bytes::from(data.clone())),
    )
    .await
    .unwrap();
    // Consumers that keep every chunk they were handed, like sockets that stopped draining.
    let mut held: Vec<Bytes> = Vec::new();
    let mut streams = Vec::new();
    let blocked = loop {
        if streams.is_empty() {
            streams.push(store.read(&digest, None).await.unwrap());
        }
        let stream = streams.last_mut().unwrap();
        match tokio::time::timeout(Duration::from_millis(500), stream.next()).await {
            Ok(Some(chunk)) => held.push(chunk.unwrap()),
            Ok(None) => streams.push(store.read(&digest, None).await.unwrap()),
            Err(_) => break true,
        }
        if held.iter().map(Bytes::len).sum::<usize>() > 256 * 1024 * 1024 {
            break false;
        }
    };
    let held_bytes: usize = held.iter().map(Bytes::len).sum();
    assert!(
        blocked,
        "{held_bytes} bytes of chunks handed out and still held: no budget bounds them"
    );
    assert!(
        held_bytes <= 80 * 1024 * 1024,
        "{held_bytes} bytes held before reads waited"
    );
    // Dropping what was held lets the waiting reader go on.
    held.clear();
    let rest = tokio::time::timeout(Duration::from_secs(5), streams.last_mut().unwrap().next())
        .await
        .expect("a reader stays blocked after the budget was freed");
    assert!(rest.is_some());
}

#[test]
fn uploads_that_stall_mid_flow_give_their_threads_back() {
    // Bodies that already delivered whole parts, so their write and hash
    // threads were running, and then stalled: the threads must end while the
    // clients send nothing, or the two blocking threads here stay taken.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Every step is bounded: without the fix even starting the second upload
    // waits for a thread forever.
    let outcome = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), async {
            let dir = tempfile::tempdir().unwrap();
            let store: Arc<BlobStore> = Arc::new(wharf_blob::fs::open(dir.path()).await.unwrap());
            let first = pattern(3 * 1024 * 1024, 6);
            let mut stalled = Vec::new();
            for i in 0..2 {
                let id = format!("flowing{i}");
                store.create_upload(&id).await.unwrap();
                let (tx, body) = fed_body();
                let store = store.clone();
                let task = tokio::spawn(async move { store.append(&id, body).await });
                for part in first.chunks(256 * 1024) {
                    tx.send(Bytes::copy_from_slice(part)).await.unwrap();
                }
                stalled.push((tx, task));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;

            let other = pattern(2 * 1024 * 1024 + 7, 7);
            let other_digest = Digest::sha256_of(&other);
            let served = tokio::time::timeout(Duration::from_secs(10), async {
                put_stream(
                    &store,
                    "other",
                    &other_digest,
                    bytes_stream(Bytes::from(other.clone())),
                )
                .await
                .unwrap();
                assert_eq!(read_all(&store, &other_digest).await, other);
            })
            .await;
            if served.is_err() {
                return Err("uploads that stalled mid-flow keep their transfer threads");
            }

            for (i, (tx, task)) in stalled.into_iter().enumerate() {
                let rest = pattern(1024 * 1024 + 3, 8);
                tx.send(Bytes::from(rest.clone())).await.unwrap();
                drop(tx);
                let mut expected = first.clone();
                expected.extend(rest);
                assert_eq!(task.await.unwrap().unwrap(), expected.len() as u64);
                let digest = Digest::sha256_of(&expected);
                store
                    .commit_upload(&format!("flowing{i}"), &digest)
                    .await
                    .unwrap();
                assert_eq!(read_all(&store, &digest).await, expected);
            }
            Ok(())
        })
        .await
        .unwrap_or(Err(
            "uploads that stalled mid-flow keep their transfer threads",
        ))
    });
    // Threads that never end would make dropping the runtime wait for them.
    runtime.shutdown_timeout(Duration::from_secs(1));
    outcome.unwrap();
}
