//! The snapshot seam end to end over a real filesystem store and SQLite:
//! staging, verification, publishing, the grace period and URL splitting.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use wharf_blob::{BlobError, ByteRange};
use wharf_core::{Digest, RepoName, RepositoryKind, TreePath};
use wharf_snapshot::{Base, SnapshotError, Snapshots};

async fn snapshots(dir: &std::path::Path) -> Snapshots {
    let meta = wharf_meta::Meta::connect(&format!("sqlite:{}", dir.join("meta.db").display()))
        .await
        .unwrap();
    let blobs = wharf_blob::fs::open(dir.join("blobs")).await.unwrap();
    Snapshots::new(meta, Arc::new(blobs))
}

fn path(s: &str) -> TreePath {
    TreePath::new(s).unwrap()
}

async fn read_all(s: &Snapshots, repo: &RepoName, p: &str, range: Option<ByteRange>) -> Vec<u8> {
    let served = s.resolve(repo, &path(p)).await.unwrap().expect("served");
    let chunks: Vec<Bytes> = s
        .open(&served.entry, range)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    chunks.concat()
}

#[tokio::test]
async fn staged_files_are_verified_and_served_only_once_published() {
    let dir = tempfile::tempdir().unwrap();
    let s = snapshots(dir.path()).await;
    let repo = RepoName::parse("isos/fedora").unwrap();
    let staged = s
        .stage(&repo, RepositoryKind::Files, Base::Published, "upload")
        .await
        .unwrap();
    let kickstart = b"url --url=http://example/\n".to_vec();
    let stored = staged
        .put_bytes(
            &path("ks/fedora.ks"),
            Bytes::from(kickstart.clone()),
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(stored.digest, Digest::sha256_of(&kickstart));
    // A wrong expected digest stores and records nothing.
    let err = staged
        .put_bytes(
            &path("images/boot.iso"),
            Bytes::from_static(b"not the iso"),
            Some(&Digest::sha256_of(b"the iso")),
            10,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, SnapshotError::Blob(BlobError::DigestMismatch { .. })),
        "{err}"
    );
    assert!(staged
        .entry(&path("images/boot.iso"))
        .await
        .unwrap()
        .is_none());
    // The same bytes under a second name are recorded without being read again.
    let unread: wharf_blob::ByteStream = Box::pin(futures_util::stream::once(async {
        Err::<Bytes, _>(std::io::Error::other("the body must not be read"))
    }));
    staged
        .put_stream(&path("ks/copy.ks"), unread, Some(&stored.digest), 11)
        .await
        .unwrap();
    assert!(s
        .resolve(&repo, &path("ks/fedora.ks"))
        .await
        .unwrap()
        .is_none());
    staged.publish().await.unwrap();
    assert_eq!(read_all(&s, &repo, "ks/copy.ks", None).await, kickstart);
    assert_eq!(
        read_all(
            &s,
            &repo,
            "ks/fedora.ks",
            Some(ByteRange { start: 0, end: 2 })
        )
        .await,
        b"url"
    );
    // The next snapshot drops a file: within the grace period it still answers.
    let next = s
        .stage(&repo, RepositoryKind::Files, Base::Published, "rm")
        .await
        .unwrap();
    next.remove(&[path("ks/copy.ks")]).await.unwrap();
    next.publish().await.unwrap();
    let old = s
        .resolve(&repo, &path("ks/copy.ks"))
        .await
        .unwrap()
        .unwrap();
    assert!(!old.current);
    let strict = s.clone().with_grace(std::time::Duration::ZERO);
    // Retired this second: a zero grace still covers it until the clock moves on.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert!(strict
        .resolve(&repo, &path("ks/copy.ks"))
        .await
        .unwrap()
        .is_none());
    // Rollback: the first snapshot again.
    s.publish_number(&repo, 1).await.unwrap();
    assert!(
        strict
            .resolve(&repo, &path("ks/copy.ks"))
            .await
            .unwrap()
            .unwrap()
            .current
    );
}

#[tokio::test]
async fn url_paths_split_at_the_longest_repository_of_the_kind() {
    let dir = tempfile::tempdir().unwrap();
    let s = snapshots(dir.path()).await;
    for (name, kind) in [
        ("os", RepositoryKind::Files),
        ("os/fedora", RepositoryKind::Files),
        ("os/rpms", RepositoryKind::Rpm),
    ] {
        s.meta()
            .create_repository(&RepoName::parse(name).unwrap(), kind)
            .await
            .unwrap();
    }
    let found = s
        .locate(RepositoryKind::Files, "os/fedora/images/x.iso")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.repo.as_str(), "os/fedora");
    assert_eq!(found.path.unwrap().as_str(), "images/x.iso");
    // Another kind's name does not capture the path.
    let found = s
        .locate(RepositoryKind::Files, "os/rpms/repodata/repomd.xml")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.repo.as_str(), "os");
    assert_eq!(found.path.unwrap().as_str(), "rpms/repodata/repomd.xml");
    let top = s
        .locate(RepositoryKind::Files, "os/fedora")
        .await
        .unwrap()
        .unwrap();
    assert!(top.path.is_none());
    assert!(s
        .locate(RepositoryKind::Files, "osx/a")
        .await
        .unwrap()
        .is_none());
    assert!(s
        .locate(RepositoryKind::Ostree, "os/a")
        .await
        .unwrap()
        .is_none());
    // A hostile rest is no path at all.
    assert!(s
        .locate(RepositoryKind::Files, "os/../etc")
        .await
        .unwrap()
        .is_none());
}

/// Many writers storing at once are recorded in shared transactions (the
/// group commit), while a collector with no grace period sweeps the bytes a
/// discarded snapshot held and the writers store again: every file a
/// writer was told is stored is recorded and readable, round after round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_stores_racing_a_zero_grace_collector_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    race_stores_against_the_collector(snapshots(dir.path()).await, 30).await;
}

/// The same on PostgreSQL, where every claim and snapshot is a row lock held
/// to the commit: batches, lone claims and the collector must never deadlock
/// or let a blob go.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_stores_racing_a_zero_grace_collector_lose_nothing_on_postgres() {
    let base = std::env::var("WHARF_TEST_POSTGRES_URL").expect(
        "WHARF_TEST_POSTGRES_URL is not set: run the suite with scripts/test.sh, which starts PostgreSQL",
    );
    let admin = wharf_meta::Meta::connect(&base).await.unwrap();
    let name = format!("wharf_snap_{}", uuid::Uuid::new_v4().simple());
    admin
        .execute_admin(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    admin.close().await;
    let (prefix, _) = base.rsplit_once('/').unwrap();
    let meta = wharf_meta::Meta::connect(&format!("{prefix}/{name}"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let blobs = wharf_blob::fs::open(dir.path().join("blobs"))
        .await
        .unwrap();
    race_stores_against_the_collector(Snapshots::new(meta, Arc::new(blobs)), 15).await;
}

async fn race_stores_against_the_collector(s: Snapshots, rounds: u32) {
    let meta = s.meta().clone();
    let blobs = s.blobs().clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let (stop, meta, blobs) = (stop.clone(), meta.clone(), blobs.clone());
        tokio::spawn(async move {
            let mut runs = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let policy = wharf_jobs::GcPolicy {
                    grace_period: std::time::Duration::ZERO,
                    upload_expiry: std::time::Duration::from_secs(3600),
                    full: runs.is_multiple_of(4),
                };
                wharf_jobs::collect_garbage(&blobs, &meta, policy)
                    .await
                    .unwrap();
                runs += 1;
            }
            runs
        })
    };
    let repo = RepoName::parse("race/tree").unwrap();
    for round in 0..rounds {
        let staged = s
            .stage(&repo, RepositoryKind::Files, Base::Empty, "race")
            .await
            .unwrap();
        // 64 writers at once; the contents repeat across rounds, so most of
        // them are bytes the previous round's discarded snapshot left as garbage.
        let writers = (0..64u32).map(|i| {
            let staged = staged.clone();
            async move {
                let body = format!("file {} of the pool\n", (i + round) % 80).into_bytes();
                let stored = staged
                    .put_bytes(&path(&format!("f/{i}")), Bytes::from(body.clone()), None, 1)
                    .await
                    .unwrap();
                (i, body, stored.digest)
            }
        });
        let written = futures_util::future::join_all(writers).await;
        for (i, body, digest) in &written {
            let entry = staged
                .entry(&path(&format!("f/{i}")))
                .await
                .unwrap()
                .expect("a stored file is recorded");
            assert_eq!(&entry.blob, digest);
            let chunks: Vec<Bytes> = s
                .open(&entry, None)
                .await
                .unwrap_or_else(|e| panic!("round {round}: f/{i} lost: {e}"))
                .try_collect()
                .await
                .unwrap();
            assert_eq!(&chunks.concat(), body, "round {round}: f/{i}");
        }
        staged.discard().await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let runs = collector.await.unwrap();
    assert!(runs >= 2, "the collector ran {runs} times");
}

/// Bytes stored unrecorded (a batch of uploads recorded later) that a
/// collection with no grace took meanwhile are refused when recorded, never
/// recorded as a file whose blob is gone.
#[tokio::test]
async fn unrecorded_bytes_a_collection_took_are_refused_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let s = snapshots(dir.path()).await;
    let repo = RepoName::parse("rpm/hosted").unwrap();
    let staged = s
        .stage(&repo, RepositoryKind::Rpm, Base::Empty, "upload")
        .await
        .unwrap();
    let kept = staged
        .store_unrecorded(Box::pin(futures_util::stream::once(async {
            Ok::<_, std::io::Error>(Bytes::from_static(b"recorded in time"))
        })))
        .await
        .unwrap();
    let lost = staged
        .store_unrecorded(Box::pin(futures_util::stream::once(async {
            Ok::<_, std::io::Error>(Bytes::from_static(b"taken by the collection"))
        })))
        .await
        .unwrap();
    let entry = |p: &str, stored: &wharf_snapshot::StoredEntry| wharf_meta::SnapshotEntry {
        path: path(p),
        blob: stored.digest.clone(),
        size: stored.size,
        modified_at: 1,
    };
    staged
        .record_stored(&[entry("Packages/a.rpm", &kept)])
        .await
        .unwrap();
    // The orphan sweep takes bytes older than the cutoff, which has a second's resolution.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let policy = wharf_jobs::GcPolicy {
        grace_period: std::time::Duration::ZERO,
        upload_expiry: std::time::Duration::from_secs(3600),
        full: true,
    };
    let report = wharf_jobs::collect_garbage(s.blobs(), s.meta(), policy)
        .await
        .unwrap();
    assert_eq!(report.blobs_deleted, 1, "{report:?}");
    let err = staged
        .record_stored(&[entry("Packages/b.rpm", &lost)])
        .await
        .unwrap_err();
    assert!(
        matches!(err, SnapshotError::Blob(BlobError::NotFound(_))),
        "{err}"
    );
    assert!(staged
        .entry(&path("Packages/b.rpm"))
        .await
        .unwrap()
        .is_none());
    assert!(staged
        .entry(&path("Packages/a.rpm"))
        .await
        .unwrap()
        .is_some());
}

/// Content-addressed names resolve from the in-memory index of the published
/// snapshot, and a name only a newer snapshot has (published by another
/// process a moment ago, or right here) is served at once all the same;
/// small files read whole equal their streamed bytes.
#[tokio::test]
async fn content_addressed_names_are_served_from_the_index_and_new_ones_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = snapshots(dir.path()).await;
    let repo = RepoName::parse("os/tree").unwrap();
    let first = s
        .stage(&repo, RepositoryKind::Ostree, Base::Empty, "one")
        .await
        .unwrap();
    first
        .put_bytes(
            &path("objects/aa/one.filez"),
            Bytes::from_static(b"one"),
            None,
            1,
        )
        .await
        .unwrap();
    first
        .put_bytes(&path("summary"), Bytes::from_static(b"s1"), None, 1)
        .await
        .unwrap();
    first.publish().await.unwrap();
    let one = s
        .resolve_addressed(&repo, &path("objects/aa/one.filez"), "objects/")
        .await
        .unwrap()
        .expect("served");
    assert_eq!(one.entry.blob, Digest::sha256_of(b"one"));
    assert_eq!(
        s.read_small(&one.entry).await.unwrap().as_deref(),
        Some(&b"one"[..])
    );
    // Another process's view of the same store publishes a second snapshot.
    let other = snapshots(dir.path()).await;
    let second = other
        .stage(&repo, RepositoryKind::Ostree, Base::Published, "two")
        .await
        .unwrap();
    second
        .put_bytes(
            &path("objects/bb/two.filez"),
            Bytes::from_static(b"two"),
            None,
            2,
        )
        .await
        .unwrap();
    second
        .put_bytes(&path("summary"), Bytes::from_static(b"s2"), None, 2)
        .await
        .unwrap();
    second.publish().await.unwrap();
    let two = s
        .resolve_addressed(&repo, &path("objects/bb/two.filez"), "objects/")
        .await
        .unwrap()
        .expect("a new object is served at once");
    assert_eq!(two.entry.blob, Digest::sha256_of(b"two"));
    assert!(s
        .resolve_addressed(&repo, &path("objects/cc/none.filez"), "objects/")
        .await
        .unwrap()
        .is_none());
    // Outside the prefix, the published snapshot answers as ever.
    assert_eq!(read_all(&s, &repo, "summary", None).await, b"s2");
    let summary = s
        .resolve_addressed(&repo, &path("summary"), "objects/")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.entry.blob, Digest::sha256_of(b"s2"));
}

/// `entry_pages` gives every entry below a directory once, in path order,
/// a page at a time, and ends after the last one.
#[tokio::test]
async fn entry_pages_walk_a_snapshot_in_path_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = snapshots(dir.path()).await;
    let repo = RepoName::parse("os/paged").unwrap();
    let staged = s
        .stage(&repo, RepositoryKind::Ostree, Base::Empty, "paged")
        .await
        .unwrap();
    let names = ["a/1", "a/2", "a/3", "a/4", "a/5", "b/1"];
    for (i, n) in names.iter().enumerate() {
        staged
            .put_bytes(&path(n), Bytes::from(format!("{i}")), None, 1)
            .await
            .unwrap();
    }
    let under = path("a");
    let pages: Vec<Vec<String>> = staged
        .entry_pages(Some(&under), 2)
        .map_ok(|page| {
            page.into_iter()
                .map(|e| e.path.as_str().to_owned())
                .collect()
        })
        .try_collect()
        .await
        .unwrap();
    assert_eq!(pages, [vec!["a/1", "a/2"], vec!["a/3", "a/4"], vec!["a/5"]]);
    let all: Vec<usize> = s
        .entry_pages(staged.id(), None, 4)
        .map_ok(|page| page.len())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all, [4, 2]);
}
