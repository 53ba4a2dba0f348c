//! The blob-store conformance suite: every backend must pass every case here.
//!
//! Each case is a plain async function over `&dyn BlobStore`; a backend adds one
//! `#[tokio::test]` per case through the `backend_suite!` macro.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use wharf_blob::{
    bytes_stream, fs::FsBlobStore, put_stream, BlobError, BlobStore, ByteRange, ByteStream,
    Verification,
};
use wharf_core::{Algorithm, Digest};

async fn collect(mut s: ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

fn chunks(parts: Vec<Vec<u8>>) -> ByteStream {
    Box::pin(futures_util::stream::iter(
        parts
            .into_iter()
            .map(|p| Ok::<_, io::Error>(Bytes::from(p))),
    ))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn commit_then_read(store: &dyn BlobStore) {
    let data = pattern(3 * 1024 * 1024 + 17, 1);
    let digest = Digest::sha256_of(&data);
    assert_eq!(store.stat(&digest).await.unwrap(), None);
    let size = put_stream(store, "u1", &digest, chunks(vec![data.clone()]))
        .await
        .unwrap();
    assert_eq!(size, data.len() as u64);
    assert_eq!(store.stat(&digest).await.unwrap(), Some(data.len() as u64));
    assert_eq!(
        collect(store.read(&digest, None).await.unwrap()).await,
        data
    );
    assert_eq!(store.verify(&digest).await.unwrap(), Verification::Intact);
    let listed = store.list().await.unwrap();
    assert!(listed
        .iter()
        .any(|e| e.digest == digest && e.size == data.len() as u64));
}

async fn range_reads(store: &dyn BlobStore) {
    let data = pattern(10_000, 2);
    let digest = Digest::sha256_of(&data);
    put_stream(store, "u2", &digest, chunks(vec![data.clone()]))
        .await
        .unwrap();
    let part = collect(
        store
            .read(&digest, Some(ByteRange { start: 10, end: 19 }))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(part, &data[10..20]);
    let last = collect(
        store
            .read(
                &digest,
                Some(ByteRange {
                    start: 9_999,
                    end: 9_999,
                }),
            )
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(last, &data[9_999..]);
    let err = store
        .read(
            &digest,
            Some(ByteRange {
                start: 5,
                end: 10_000,
            }),
        )
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, BlobError::RangeNotSatisfiable { size: 10_000, .. }),
        "{err}"
    );
}

async fn wrong_digest_is_refused_and_invisible(store: &dyn BlobStore) {
    let data = pattern(1000, 3);
    let claimed = Digest::sha256_of(b"something else");
    let err = put_stream(store, "u3", &claimed, chunks(vec![data]))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, BlobError::DigestMismatch { .. }), "{err}");
    assert_eq!(store.stat(&claimed).await.unwrap(), None);
    assert!(matches!(
        store.upload_size("u3").await,
        Err(BlobError::UploadNotFound(_))
    ));
}

async fn chunked_upload_many_appends(store: &dyn BlobStore) {
    let data = pattern(700_001, 4);
    let digest = Digest::sha256_of(&data);
    store.create_upload("u4").await.unwrap();
    let mut sent = 0;
    for part in data.chunks(100_000) {
        sent = store
            .append("u4", chunks(vec![part.to_vec()]))
            .await
            .unwrap();
    }
    assert_eq!(sent, data.len() as u64);
    assert_eq!(store.upload_size("u4").await.unwrap(), sent);
    assert_eq!(store.commit_upload("u4", &digest).await.unwrap(), sent);
    assert_eq!(
        collect(store.read(&digest, None).await.unwrap()).await,
        data
    );
}

async fn interrupted_body_keeps_received_bytes(store: &dyn BlobStore) {
    let data = pattern(300_000, 5);
    store.create_upload("u5").await.unwrap();
    let first = Bytes::from(data[..100_000].to_vec());
    let broken: ByteStream = Box::pin(futures_util::stream::iter(vec![
        Ok(first),
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "client went away",
        )),
    ]));
    let err = store.append("u5", broken).await.err().unwrap();
    assert!(matches!(err, BlobError::BodyInterrupted(_)), "{err}");
    assert_eq!(store.upload_size("u5").await.unwrap(), 100_000);
    store
        .append("u5", chunks(vec![data[100_000..].to_vec()]))
        .await
        .unwrap();
    let digest = Digest::sha256_of(&data);
    store.commit_upload("u5", &digest).await.unwrap();
    assert_eq!(
        collect(store.read(&digest, None).await.unwrap()).await,
        data
    );
}

async fn sha512_and_empty_blobs(store: &dyn BlobStore) {
    let data = pattern(5000, 6);
    let d512 = Digest::of(Algorithm::Sha512, &data);
    put_stream(store, "u6", &d512, chunks(vec![data.clone()]))
        .await
        .unwrap();
    assert_eq!(collect(store.read(&d512, None).await.unwrap()).await, data);
    assert_eq!(store.verify(&d512).await.unwrap(), Verification::Intact);
    let empty = Digest::sha256_of(b"");
    put_stream(store, "u7", &empty, bytes_stream(Bytes::new()))
        .await
        .unwrap();
    assert_eq!(store.stat(&empty).await.unwrap(), Some(0));
    assert!(collect(store.read(&empty, None).await.unwrap())
        .await
        .is_empty());
}

async fn concurrent_commits_of_same_digest(store: Arc<dyn BlobStore>) {
    let data = pattern(2_000_000, 7);
    let digest = Digest::sha256_of(&data);
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (store, data, digest) = (store.clone(), data.clone(), digest.clone());
        tasks.push(tokio::spawn(async move {
            let halves = vec![data[..1_000_000].to_vec(), data[1_000_000..].to_vec()];
            put_stream(&*store, &format!("c{i}"), &digest, chunks(halves)).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        collect(store.read(&digest, None).await.unwrap()).await,
        data
    );
    assert!(store
        .list_uploads()
        .await
        .unwrap()
        .iter()
        .all(|u| !u.id.starts_with('c')));
}

async fn delete_and_hostile_ids(store: &dyn BlobStore) {
    let data = pattern(10, 8);
    let digest = Digest::sha256_of(&data);
    put_stream(store, "u8", &digest, chunks(vec![data]))
        .await
        .unwrap();
    store.delete(&digest).await.unwrap();
    assert_eq!(store.stat(&digest).await.unwrap(), None);
    assert!(matches!(
        store.read(&digest, None).await.err().unwrap(),
        BlobError::NotFound(_)
    ));
    store.delete(&digest).await.unwrap();
    for bad in ["../x", "a/b", "", ".."] {
        assert!(
            matches!(
                store.create_upload(bad).await,
                Err(BlobError::InvalidUploadId(_))
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        store.append("nope", chunks(vec![])).await,
        Err(BlobError::UploadNotFound(_))
    ));
}

/// A verified upload is not yet a blob: only publishing makes it visible, and a
/// second publish of the same digest keeps the bytes.
async fn verify_then_publish(store: &dyn BlobStore) {
    let data = Bytes::from_static(b"two steps");
    let digest = Digest::sha256_of(&data);
    store.create_upload("vp").await.unwrap();
    store
        .append("vp", bytes_stream(data.clone()))
        .await
        .unwrap();
    assert_eq!(store.verify_upload("vp", &digest).await.unwrap(), 9);
    assert_eq!(
        store.stat(&digest).await.unwrap(),
        None,
        "verified is not published"
    );
    store.publish_upload("vp", &digest).await.unwrap();
    assert_eq!(store.stat(&digest).await.unwrap(), Some(9));
    assert!(matches!(
        store.upload_size("vp").await,
        Err(BlobError::UploadNotFound(_))
    ));
    put_stream(store, "vp2", &digest, bytes_stream(data.clone()))
        .await
        .unwrap();
    assert_eq!(
        collect(store.read(&digest, None).await.unwrap()).await,
        data.to_vec()
    );
}

macro_rules! backend_suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            #[tokio::test]
            async fn commit_then_read() {
                let (s, _g) = $make;
                super::commit_then_read(&*s).await
            }
            #[tokio::test]
            async fn verify_then_publish() {
                let (s, _g) = $make;
                super::verify_then_publish(&*s).await
            }
            #[tokio::test]
            async fn range_reads() {
                let (s, _g) = $make;
                super::range_reads(&*s).await
            }
            #[tokio::test]
            async fn wrong_digest() {
                let (s, _g) = $make;
                super::wrong_digest_is_refused_and_invisible(&*s).await
            }
            #[tokio::test]
            async fn chunked() {
                let (s, _g) = $make;
                super::chunked_upload_many_appends(&*s).await
            }
            #[tokio::test]
            async fn interrupted() {
                let (s, _g) = $make;
                super::interrupted_body_keeps_received_bytes(&*s).await
            }
            #[tokio::test]
            async fn sha512_empty() {
                let (s, _g) = $make;
                super::sha512_and_empty_blobs(&*s).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent() {
                let (s, _g) = $make;
                super::concurrent_commits_of_same_digest(s).await
            }
            #[tokio::test]
            async fn delete_hostile() {
                let (s, _g) = $make;
                super::delete_and_hostile_ids(&*s).await
            }
        }
    };
}

async fn fs_store() -> (Arc<dyn BlobStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlobStore::open(dir.path()).await.unwrap();
    (Arc::new(store), dir)
}

backend_suite!(filesystem, fs_store().await);

#[tokio::test]
async fn filesystem_detects_corruption_and_refuses_unknown_layout() {
    let (store, dir) = fs_store().await;
    let data = pattern(4096, 9);
    let digest = Digest::sha256_of(&data);
    put_stream(&*store, "x", &digest, chunks(vec![data]))
        .await
        .unwrap();
    let path = dir
        .path()
        .join("blobs/sha256")
        .join(&digest.hex()[..2])
        .join(digest.hex());
    std::fs::write(&path, b"bit rot").unwrap();
    assert!(matches!(
        store.verify(&digest).await.unwrap(),
        Verification::Corrupt { .. }
    ));
    std::fs::write(dir.path().join("layout-version"), "wharf-blob-fs 99\n").unwrap();
    assert!(FsBlobStore::open(dir.path()).await.is_err());
}
