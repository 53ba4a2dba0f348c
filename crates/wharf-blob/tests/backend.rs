//! The blob-store conformance suite: every backend must pass every case here.
//!
//! Each case is a plain async function over a [`Rig`] (one storage that stores
//! can be opened on, again and again, as processes would); `backend_suite!`
//! adds one `#[tokio::test]` per case for each backend.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use wharf_blob::backend::{ListedBlob, ListedStaging};
use wharf_blob::fs::FsBackend;
use wharf_blob::memory::MemoryBackend;
use wharf_blob::{
    bytes_stream, put_stream, stage_stream_observed, Backend, BlobError, BlobStore, ByteRange,
    ByteStream, ListStream, ObjectMeta, StagingWriter, UploadId, Verification,
};
use wharf_core::{Algorithm, Digest};

/// One storage, and the way to open a fresh store on it (a restart, or another
/// process).
struct Rig {
    dir: Option<tempfile::TempDir>,
    memory: MemoryBackend,
    /// Staged bytes read back by stores this rig opened with counting on.
    staging_read: Arc<AtomicU64>,
}

impl Rig {
    fn filesystem() -> Rig {
        Rig {
            dir: Some(tempfile::tempdir().unwrap()),
            memory: MemoryBackend::new(),
            staging_read: Arc::default(),
        }
    }

    fn memory() -> Rig {
        Rig {
            dir: None,
            memory: MemoryBackend::new(),
            staging_read: Arc::default(),
        }
    }

    async fn backend(&self) -> Arc<dyn Backend> {
        match &self.dir {
            Some(dir) => Arc::new(FsBackend::open(dir.path()).await.unwrap()),
            None => Arc::new(self.memory.clone()),
        }
    }

    /// A fresh store on this storage, as a new process would open it.
    async fn store(&self) -> BlobStore {
        BlobStore::new(Arc::new(Counting {
            inner: self.backend().await,
            staging_read: self.staging_read.clone(),
        }))
    }

    fn staging_read(&self) -> u64 {
        self.staging_read.load(Ordering::SeqCst)
    }
}

/// A backend wrapper that counts the staged bytes read back: reading them is
/// what a resumable hash saves.
struct Counting {
    inner: Arc<dyn Backend>,
    staging_read: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl Backend for Counting {
    async fn create_staging(&self, id: &UploadId) -> io::Result<()> {
        self.inner.create_staging(id).await
    }
    async fn open_staging(&self, id: &UploadId) -> io::Result<Box<dyn StagingWriter>> {
        self.inner.open_staging(id).await
    }
    async fn stat_staging(&self, id: &UploadId) -> io::Result<Option<ObjectMeta>> {
        self.inner.stat_staging(id).await
    }
    async fn read_staging(&self, id: &UploadId, offset: u64) -> io::Result<ByteStream> {
        let counter = self.staging_read.clone();
        let stream = self.inner.read_staging(id, offset).await?;
        Ok(Box::pin(stream.inspect_ok(move |chunk| {
            counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        })))
    }
    async fn complete(&self, id: &UploadId, digest: &Digest) -> io::Result<()> {
        self.inner.complete(id, digest).await
    }
    async fn delete_staging(&self, id: &UploadId) -> io::Result<()> {
        self.inner.delete_staging(id).await
    }
    fn list_staging(&self) -> ListStream<'_, ListedStaging> {
        self.inner.list_staging()
    }
    async fn put_state(&self, id: &UploadId, state: Bytes) -> io::Result<()> {
        self.inner.put_state(id, state).await
    }
    async fn get_state(&self, id: &UploadId) -> io::Result<Option<Bytes>> {
        self.inner.get_state(id).await
    }
    async fn delete_state(&self, id: &UploadId) -> io::Result<()> {
        self.inner.delete_state(id).await
    }
    async fn stat(&self, digest: &Digest) -> io::Result<Option<ObjectMeta>> {
        self.inner.stat(digest).await
    }
    async fn read(&self, digest: &Digest, offset: u64, len: u64) -> io::Result<ByteStream> {
        self.inner.read(digest, offset, len).await
    }
    async fn read_at(&self, digest: &Digest, offset: u64, max: u64) -> io::Result<Bytes> {
        self.inner.read_at(digest, offset, max).await
    }
    async fn read_heads(&self, digests: &[Digest], max: u64) -> Vec<io::Result<Bytes>> {
        self.inner.read_heads(digests, max).await
    }
    async fn delete(&self, digest: &Digest) -> io::Result<()> {
        self.inner.delete(digest).await
    }
    fn list(&self) -> ListStream<'_, ListedBlob> {
        self.inner.list()
    }
}

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

async fn commit_then_read(store: &BlobStore) {
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
    let listed: Vec<_> = store.list().try_collect().await.unwrap();
    assert!(listed
        .iter()
        .any(|e| e.digest == digest && e.size == data.len() as u64));
}

async fn range_reads(store: &BlobStore) {
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
    // In memory from an offset: at most what was asked, fewer at the end,
    // nothing past it; a blob that is not there is NotFound.
    assert_eq!(store.read_at(&digest, 0, 100).await.unwrap(), &data[..100]);
    assert_eq!(
        store.read_at(&digest, 9_990, 100).await.unwrap(),
        &data[9_990..]
    );
    assert!(store.read_at(&digest, 10_000, 1).await.unwrap().is_empty());
    assert!(store.read_at(&digest, 20_000, 1).await.unwrap().is_empty());
    let absent = Digest::sha256_of(b"never stored");
    assert!(matches!(
        store.read_at(&absent, 0, 1).await,
        Err(BlobError::NotFound(_))
    ));
    // Many heads at once, in order; a missing one fails alone.
    let short = b"short".to_vec();
    let short_digest = Digest::sha256_of(&short);
    put_stream(store, "u2b", &short_digest, chunks(vec![short.clone()]))
        .await
        .unwrap();
    let heads = store
        .read_heads(&[digest.clone(), absent.clone(), short_digest], 64)
        .await;
    assert_eq!(heads.len(), 3);
    assert_eq!(heads[0].as_ref().unwrap(), &data[..64]);
    assert!(matches!(heads[1], Err(BlobError::NotFound(_))));
    assert_eq!(heads[2].as_ref().unwrap(), &short[..]);
}

async fn wrong_digest_is_refused_and_invisible(store: &BlobStore) {
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

async fn chunked_upload_many_appends(store: &BlobStore) {
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

/// One body whose chunks mix every size the part builder treats apart: runs
/// of tiny frames (copied together), chunks just below and above the small
/// limit, and chunks larger than a whole part, so that pieces of one part
/// and parts of one append must all land in arrival order.
async fn mixed_chunk_sizes_land_in_order(store: &BlobStore) {
    let sizes = [
        1, 1, 3, 16_383, 16_384, 16_385, 200_000, 7, 1_048_575, 1_048_576, 2_500_000, 5, 65_536,
        65_535, 1,
    ];
    let mut body = Vec::new();
    let mut sent = Vec::new();
    for (i, n) in sizes.iter().enumerate() {
        let chunk = pattern(*n, i as u8);
        sent.extend_from_slice(&chunk);
        body.push(chunk);
    }
    // Thousands of one-byte frames, as a trickling client sends them.
    for i in 0..5_000u32 {
        let b = vec![(i % 251) as u8];
        sent.extend_from_slice(&b);
        body.push(b);
    }
    let digest = Digest::sha256_of(&sent);
    let size = put_stream(store, "mixed", &digest, chunks(body))
        .await
        .unwrap();
    assert_eq!(size, sent.len() as u64);
    assert_eq!(
        collect(store.read(&digest, None).await.unwrap()).await,
        sent
    );
}

async fn interrupted_body_keeps_received_bytes(store: &BlobStore) {
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

async fn sha512_and_empty_blobs(store: &BlobStore) {
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

async fn concurrent_commits_of_same_digest(store: Arc<BlobStore>) {
    let data = pattern(2_000_000, 7);
    let digest = Digest::sha256_of(&data);
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (store, data, digest) = (store.clone(), data.clone(), digest.clone());
        tasks.push(tokio::spawn(async move {
            let halves = vec![data[..1_000_000].to_vec(), data[1_000_000..].to_vec()];
            put_stream(&store, &format!("c{i}"), &digest, chunks(halves)).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        collect(store.read(&digest, None).await.unwrap()).await,
        data
    );
    let uploads: Vec<_> = store.list_uploads().try_collect().await.unwrap();
    assert!(uploads.iter().all(|u| !u.id.starts_with('c')));
}

async fn delete_and_hostile_ids(store: &BlobStore) {
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
    assert!(matches!(
        store.append("../uploads/x", chunks(vec![])).await,
        Err(BlobError::InvalidUploadId(_))
    ));
    assert!(matches!(
        store.upload_size("a.b").await,
        Err(BlobError::InvalidUploadId(_))
    ));
    assert!(matches!(
        store.abort_upload("/etc/passwd").await,
        Err(BlobError::InvalidUploadId(_))
    ));
    assert!(matches!(
        store.publish_upload("..", &digest).await,
        Err(BlobError::InvalidUploadId(_))
    ));
}

/// A verified upload is not yet a blob: only publishing makes it visible, and a
/// second publish of the same digest keeps the bytes.
async fn verify_then_publish(store: &BlobStore) {
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

/// Blobs put together from memory: each verified (a wrong digest stores
/// nothing of it and fails alone), readable once the call returns, and no
/// staging area is left behind; uploads published together likewise, with an
/// unverified one checked on its own.
async fn many_at_once_are_verified_one_by_one(store: &BlobStore) {
    let good: Vec<Bytes> = (0..40u8)
        .map(|i| Bytes::from(pattern(100 + i as usize, i)))
        .collect();
    let liar = Bytes::from_static(b"not what it claims");
    let claimed = Digest::sha256_of(b"something else");
    let mut items: Vec<(Digest, Bytes)> = good
        .iter()
        .map(|b| (Digest::sha256_of(b), b.clone()))
        .collect();
    items.insert(7, (claimed.clone(), liar));
    // The same blob twice in one call is harmless.
    items.push(items[0].clone());
    let results = store.put_many(&items).await;
    assert_eq!(results.len(), items.len());
    for (i, r) in results.iter().enumerate() {
        if i == 7 {
            assert!(matches!(r, Err(BlobError::DigestMismatch { .. })), "{r:?}");
        } else {
            assert!(r.is_ok(), "item {i}: {r:?}");
        }
    }
    assert_eq!(store.stat(&claimed).await.unwrap(), None);
    for b in &good {
        let d = Digest::sha256_of(b);
        assert_eq!(
            collect(store.read(&d, None).await.unwrap()).await,
            b.to_vec()
        );
    }
    let staged: Vec<_> = store.list_uploads().try_collect().await.unwrap();
    assert!(staged.is_empty(), "staging left behind: {staged:?}");

    let a = Bytes::from_static(b"uploaded a");
    let b = Bytes::from_static(b"uploaded b");
    let (da, db) = (Digest::sha256_of(&a), Digest::sha256_of(&b));
    put_stream_staged(store, "ua", &da, a.clone()).await;
    // Staged but never verified here: published alone, after its own check.
    store.create_upload("ub").await.unwrap();
    store.append("ub", bytes_stream(b.clone())).await.unwrap();
    let wrong = Digest::sha256_of(b"neither");
    store.create_upload("uc").await.unwrap();
    store.append("uc", bytes_stream(b.clone())).await.unwrap();
    let results = store
        .publish_uploads(&[("ua", &da), ("ub", &db), ("uc", &wrong), ("bad id!", &da)])
        .await;
    assert!(results[0].is_ok() && results[1].is_ok(), "{results:?}");
    assert!(matches!(results[2], Err(BlobError::DigestMismatch { .. })));
    assert!(matches!(results[3], Err(BlobError::InvalidUploadId(_))));
    assert_eq!(
        collect(store.read(&da, None).await.unwrap()).await,
        a.to_vec()
    );
    assert_eq!(
        collect(store.read(&db, None).await.unwrap()).await,
        b.to_vec()
    );
    assert_eq!(store.stat(&wrong).await.unwrap(), None);
}

/// Stages and verifies a one-shot upload without publishing it.
async fn put_stream_staged(store: &BlobStore, id: &str, digest: &Digest, data: Bytes) {
    wharf_blob::stage_stream(store, id, digest, bytes_stream(data))
        .await
        .unwrap();
}

/// A restart before every chunk: each new store goes on from the saved hash
/// state, reads none of the bytes staged before it, and the digest is right.
async fn restart_between_chunks_rehashes_nothing(rig: &Rig) {
    let data = pattern(3 * 1024 * 1024 + 77, 10);
    let digest = Digest::sha256_of(&data);
    let parts = [
        &data[..1_000_003],
        &data[1_000_003..2_500_000],
        &data[2_500_000..],
    ];
    {
        let store = rig.store().await;
        store.create_upload("r1").await.unwrap();
        store
            .append("r1", chunks(vec![parts[0].to_vec()]))
            .await
            .unwrap();
    }
    for part in &parts[1..] {
        let store = rig.store().await;
        store
            .append("r1", chunks(vec![part.to_vec()]))
            .await
            .unwrap();
    }
    let store = rig.store().await;
    assert_eq!(
        store.commit_upload("r1", &digest).await.unwrap(),
        data.len() as u64
    );
    assert_eq!(
        rig.staging_read(),
        0,
        "bytes staged before a restart were read back to re-hash them"
    );
    assert_eq!(
        collect(store.read(&digest, None).await.unwrap()).await,
        data
    );
}

/// Two processes taking turns on one upload, as PATCHes behind a load
/// balancer do: each goes on from the other's saved state, although its own
/// memory of the upload is behind.
async fn two_stores_take_turns(rig: &Rig) {
    let (a, b) = (rig.store().await, rig.store().await);
    let data = pattern(2 * 1024 * 1024 + 5, 13);
    let digest = Digest::sha256_of(&data);
    a.create_upload("t1").await.unwrap();
    for (i, part) in data.chunks(300_001).enumerate() {
        let store = if i % 2 == 0 { &a } else { &b };
        store
            .append("t1", chunks(vec![part.to_vec()]))
            .await
            .unwrap();
    }
    assert_eq!(
        a.commit_upload("t1", &digest).await.unwrap(),
        data.len() as u64
    );
    assert_eq!(rig.staging_read(), 0, "a turn re-read the other's bytes");
    assert_eq!(collect(b.read(&digest, None).await.unwrap()).await, data);
}

/// How the saved state of an upload is spoiled between two appends.
#[derive(Debug, Clone, Copy)]
enum Spoil {
    Keep,
    Missing,
    Torn,
    Flipped,
    /// The state of another upload of the same length.
    Foreign,
    /// A state saved by an earlier append of this upload.
    Stale,
}

/// Stages `first` in two appends, spoils the saved state, then a fresh store
/// appends `second` and commits. Returns the staged bytes read back.
async fn resume_after(rig: &Rig, id: &str, spoil: Spoil) -> u64 {
    let backend = rig.backend().await;
    let uid = UploadId::parse(id).unwrap();
    let first = pattern(700_000, 11);
    let second = pattern(500_000, 12);
    let mut data = first.clone();
    data.extend_from_slice(&second);
    let digest = Digest::sha256_of(&data);
    {
        let store = rig.store().await;
        store.create_upload(id).await.unwrap();
        store
            .append(id, chunks(vec![first[..300_000].to_vec()]))
            .await
            .unwrap();
        let early = backend.get_state(&uid).await.unwrap().unwrap();
        store
            .append(id, chunks(vec![first[300_000..].to_vec()]))
            .await
            .unwrap();
        let good = backend.get_state(&uid).await.unwrap().unwrap();
        let foreign = {
            let other = format!("{id}-other");
            store.create_upload(&other).await.unwrap();
            store
                .append(&other, chunks(vec![pattern(700_000, 99)]))
                .await
                .unwrap();
            let state = backend
                .get_state(&UploadId::parse(&other).unwrap())
                .await
                .unwrap()
                .unwrap();
            store.abort_upload(&other).await.unwrap();
            state
        };
        let spoiled = match spoil {
            Spoil::Keep => Some(good.clone()),
            Spoil::Missing => None,
            Spoil::Torn => Some(good.slice(..good.len() / 2)),
            Spoil::Flipped => {
                let mut bytes = good.to_vec();
                bytes[20] ^= 0x40;
                Some(Bytes::from(bytes))
            }
            Spoil::Foreign => Some(foreign),
            Spoil::Stale => Some(early),
        };
        match spoiled {
            Some(state) => backend.put_state(&uid, state).await.unwrap(),
            None => backend.delete_state(&uid).await.unwrap(),
        }
    }
    let before = rig.staging_read();
    let store = rig.store().await;
    store.append(id, chunks(vec![second])).await.unwrap();
    assert_eq!(
        store.commit_upload(id, &digest).await.unwrap(),
        data.len() as u64,
        "{spoil:?}"
    );
    assert_eq!(
        collect(store.read(&digest, None).await.unwrap()).await,
        data,
        "{spoil:?}"
    );
    store.delete(&digest).await.unwrap();
    rig.staging_read() - before
}

/// A missing, torn, altered, foreign or stale hash state costs a re-hash of
/// the whole prefix, never a wrong digest: a state behind the staging area is
/// not caught up (see `concurrent_appends_never_let_a_wrong_digest_through`).
async fn spoiled_states_fall_back_to_rehashing(rig: &Rig) {
    assert_eq!(resume_after(rig, "s0", Spoil::Keep).await, 0);
    for (i, spoil) in [Spoil::Missing, Spoil::Torn, Spoil::Flipped, Spoil::Foreign]
        .into_iter()
        .enumerate()
    {
        let read = resume_after(rig, &format!("s{}", i + 1), spoil).await;
        assert_eq!(read, 700_000, "{spoil:?}: the whole prefix is re-hashed");
    }
    assert_eq!(
        resume_after(rig, "s9", Spoil::Stale).await,
        700_000,
        "a stale state is not caught up: the whole prefix is re-hashed"
    );
}

/// Stages `staged` for `id` as if two processes had appended at once from the
/// start: one hashed and saved the state of `own` alone (it saved last), while
/// the staging area holds both writers' parts interleaved.
async fn stage_interleaved(rig: &Rig, id: &str, own: &[u8], staged: &[&[u8]]) {
    let backend = rig.backend().await;
    let uid = UploadId::parse(id).unwrap();
    let store = rig.store().await;
    store.create_upload(id).await.unwrap();
    store.append(id, chunks(vec![own.to_vec()])).await.unwrap();
    let own_state = backend.get_state(&uid).await.unwrap().unwrap();
    backend.delete_staging(&uid).await.unwrap();
    backend.create_staging(&uid).await.unwrap();
    let mut writer = backend.open_staging(&uid).await.unwrap();
    for part in staged {
        writer
            .write_part(Bytes::copy_from_slice(part).into())
            .await
            .unwrap();
    }
    writer.finish(true).await.unwrap();
    backend.put_state(&uid, own_state).await.unwrap();
}

/// Two PATCHes of one upload at once on two processes: each hashes its own
/// bytes from the same start, the staging area gets both, interleaved. No
/// digest but the hash of what is staged may then be accepted — in particular
/// not the one a state "caught up" with the other writer's bytes would give.
async fn concurrent_appends_never_let_a_wrong_digest_through(rig: &Rig) {
    let own = pattern(300_000, 21);
    let (other_a, other_b) = (pattern(200_000, 22), pattern(100_000, 23));
    let staged: Vec<&[u8]> = vec![&other_a, &own, &other_b];
    let all: Vec<u8> = staged.concat();
    // What catching the saved state up would hash: `own`, then the staged
    // bytes past its length.
    let mut caught_up = own.clone();
    caught_up.extend_from_slice(&all[own.len()..]);
    let (caught_up, truth) = (Digest::sha256_of(&caught_up), Digest::sha256_of(&all));
    assert_ne!(caught_up, truth);

    stage_interleaved(rig, "race1", &own, &staged).await;
    let err = rig
        .store()
        .await
        .commit_upload("race1", &caught_up)
        .await
        .unwrap_err();
    assert!(matches!(err, BlobError::DigestMismatch { .. }), "{err}");
    assert_eq!(rig.store().await.stat(&caught_up).await.unwrap(), None);

    stage_interleaved(rig, "race2", &own, &staged).await;
    let store = rig.store().await;
    assert_eq!(
        store.commit_upload("race2", &truth).await.unwrap(),
        all.len() as u64
    );
    assert_eq!(collect(store.read(&truth, None).await.unwrap()).await, all);
}

/// A wrong claimed digest is refused whatever state the hash resumed from.
async fn resumed_upload_with_wrong_digest_is_refused(rig: &Rig) {
    let data = pattern(200_000, 14);
    {
        let store = rig.store().await;
        store.create_upload("w1").await.unwrap();
        store
            .append("w1", chunks(vec![data[..100_000].to_vec()]))
            .await
            .unwrap();
    }
    let store = rig.store().await;
    store
        .append("w1", chunks(vec![data[100_000..].to_vec()]))
        .await
        .unwrap();
    let claimed = Digest::sha256_of(&data[1..]);
    let err = store.commit_upload("w1", &claimed).await.err().unwrap();
    assert!(matches!(err, BlobError::DigestMismatch { .. }), "{err}");
    assert_eq!(store.stat(&claimed).await.unwrap(), None);
    assert!(matches!(
        store.upload_size("w1").await,
        Err(BlobError::UploadNotFound(_))
    ));
    let backend = rig.backend().await;
    assert_eq!(
        backend
            .get_state(&UploadId::parse("w1").unwrap())
            .await
            .unwrap(),
        None,
        "a refused upload's hash state is left behind"
    );
}

/// A publish that no verification preceded still checks the bytes.
async fn publish_without_verify_checks_the_digest(store: &BlobStore) {
    store.create_upload("p1").await.unwrap();
    store
        .append("p1", bytes_stream(Bytes::from_static(b"real bytes")))
        .await
        .unwrap();
    let claimed = Digest::sha256_of(b"other bytes");
    let err = store.publish_upload("p1", &claimed).await.err().unwrap();
    assert!(matches!(err, BlobError::DigestMismatch { .. }), "{err}");
    assert_eq!(store.stat(&claimed).await.unwrap(), None);
    // Verified, then appended to: the verification no longer holds.
    let digest = Digest::sha256_of(b"abc");
    store.create_upload("p2").await.unwrap();
    store
        .append("p2", bytes_stream(Bytes::from_static(b"abc")))
        .await
        .unwrap();
    store.verify_upload("p2", &digest).await.unwrap();
    store
        .append("p2", bytes_stream(Bytes::from_static(b"d")))
        .await
        .unwrap();
    assert!(matches!(
        store.publish_upload("p2", &digest).await,
        Err(BlobError::DigestMismatch { .. })
    ));
    assert_eq!(store.stat(&digest).await.unwrap(), None);
}

/// An upload aborted (by any process) while an append still runs leaves no
/// hash state behind once that append ends.
async fn abort_during_append_leaves_no_state(rig: &Rig) {
    let store = Arc::new(rig.store().await);
    store.create_upload("ab1").await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let body: ByteStream = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok::<_, io::Error>(chunk), rx))
    }));
    let appending = {
        let store = store.clone();
        tokio::spawn(async move { store.append("ab1", body).await })
    };
    tx.send(Bytes::from(pattern(300_000, 15))).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    rig.store().await.abort_upload("ab1").await.unwrap();
    drop(tx);
    // Whether the append fails (its staging area is gone) or not, no state stays.
    let _ = appending.await.unwrap();
    let backend = rig.backend().await;
    assert_eq!(
        backend
            .get_state(&UploadId::parse("ab1").unwrap())
            .await
            .unwrap(),
        None
    );
    assert!(matches!(
        store.upload_size("ab1").await,
        Err(BlobError::UploadNotFound(_))
    ));
}

/// An observed upload (the pull-through cache's) is readable while it grows:
/// the first bytes are written and announced before a full part arrives, every
/// announced byte reads back, and once published the staging area is gone
/// (readers move to the blob); a wrong digest leaves nothing.
async fn observed_upload_is_readable_while_it_grows(store: &BlobStore) {
    let first = pattern(100, 7);
    let rest = pattern(3 * 1024 * 1024 + 5, 8);
    let whole: Vec<u8> = first.iter().chain(rest.iter()).copied().collect();
    let digest = Digest::sha256_of(&whole);
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(1);
    let body: ByteStream = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let (staged_tx, mut staged) = tokio::sync::watch::channel(0u64);
    let progress: wharf_blob::Progress = Arc::new(move |size| {
        staged_tx.send_replace(size);
    });
    let upload = stage_stream_observed(store, "obs1", &digest, body, progress);
    let follower = async {
        tx.send(Ok(Bytes::from(first.clone()))).await.unwrap();
        // Announced while the body is still open: not held back for a part.
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            staged.wait_for(|&n| n >= first.len() as u64),
        )
        .await
        .expect("the first bytes were not announced before the body ended")
        .unwrap();
        let got = collect(store.read_upload("obs1", 0, 100).await.unwrap()).await;
        assert_eq!(got, first);
        for piece in rest.chunks(64 * 1024) {
            tx.send(Ok(Bytes::copy_from_slice(piece))).await.unwrap();
        }
        drop(tx);
    };
    let (size, ()) = tokio::join!(upload, follower);
    assert_eq!(size.unwrap(), whole.len() as u64);
    assert_eq!(*staged.borrow(), whole.len() as u64);
    // Every announced byte reads back from any offset.
    let mid = collect(store.read_upload("obs1", 50, 2_000_000).await.unwrap()).await;
    assert_eq!(mid, &whole[50..2_000_050]);
    store.publish_upload("obs1", &digest).await.unwrap();
    assert!(matches!(
        store.read_upload("obs1", 0, 1).await,
        Err(BlobError::UploadNotFound(_))
    ));
    assert_eq!(
        collect(store.read(&digest, None).await.unwrap()).await,
        whole
    );

    // A wrong digest: refused, and nothing staged is left to read.
    let wrong = Digest::sha256_of(b"something else");
    let noop: wharf_blob::Progress = Arc::new(|_| {});
    let res = stage_stream_observed(store, "obs2", &wrong, chunks(vec![first.clone()]), noop).await;
    assert!(matches!(res, Err(BlobError::DigestMismatch { .. })));
    assert!(matches!(
        store.read_upload("obs2", 0, 1).await,
        Err(BlobError::UploadNotFound(_))
    ));
    assert_eq!(store.stat(&wrong).await.unwrap(), None);
}

macro_rules! backend_suite {
    ($backend:ident, $rig:expr, store: [$($case:ident),* $(,)?], rig: [$($rig_case:ident),* $(,)?]) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let rig = $rig;
                    let store = rig.store().await;
                    super::$case(&store).await
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $rig_case() {
                    super::$rig_case(&$rig).await
                }
            )*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_commits_of_same_digest() {
                let rig = $rig;
                super::concurrent_commits_of_same_digest(Arc::new(rig.store().await)).await
            }
        }
    };
}

macro_rules! every_backend {
    ($($backend:ident => $rig:expr),* $(,)?) => {
        $(
            backend_suite!(
                $backend,
                $rig,
                store: [
                    commit_then_read,
                    verify_then_publish,
                    range_reads,
                    wrong_digest_is_refused_and_invisible,
                    chunked_upload_many_appends,
                    mixed_chunk_sizes_land_in_order,
                    interrupted_body_keeps_received_bytes,
                    sha512_and_empty_blobs,
                    delete_and_hostile_ids,
                    publish_without_verify_checks_the_digest,
                    observed_upload_is_readable_while_it_grows,
                    many_at_once_are_verified_one_by_one,
                ],
                rig: [
                    restart_between_chunks_rehashes_nothing,
                    two_stores_take_turns,
                    spoiled_states_fall_back_to_rehashing,
                    concurrent_appends_never_let_a_wrong_digest_through,
                    resumed_upload_with_wrong_digest_is_refused,
                    abort_during_append_leaves_no_state,
                ]
            );
        )*
    };
}

every_backend!(filesystem => Rig::filesystem(), memory => Rig::memory());

#[tokio::test]
async fn filesystem_detects_corruption_and_refuses_unknown_layout() {
    let rig = Rig::filesystem();
    let store = rig.store().await;
    let dir = rig.dir.as_ref().unwrap();
    let data = pattern(4096, 9);
    let digest = Digest::sha256_of(&data);
    put_stream(&store, "x", &digest, chunks(vec![data]))
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
    assert!(FsBackend::open(dir.path()).await.is_err());
}
