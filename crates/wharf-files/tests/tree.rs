//! File repositories' changes over a real filesystem store and SQLite: no
//! acknowledged change is lost to a racing one, and every snapshot's
//! `SHA256SUMS` lists exactly its other files.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use wharf_core::{Digest, RepoName};
use wharf_files::tree::{tree_path, FileRepos, TreeError, SUMS_NAME};
use wharf_snapshot::Snapshots;

async fn snapshots(dir: &std::path::Path) -> Snapshots {
    let meta = wharf_meta::Meta::connect(&format!("sqlite:{}", dir.join("meta.db").display()))
        .await
        .unwrap();
    let blobs = wharf_blob::fs::open(dir.join("blobs")).await.unwrap();
    Snapshots::new(meta, Arc::new(blobs))
}

fn body(bytes: &[u8]) -> wharf_blob::ByteStream {
    let bytes = Bytes::copy_from_slice(bytes);
    Box::pin(futures_util::stream::once(async move {
        Ok::<_, std::io::Error>(bytes)
    }))
}

async fn served(s: &Snapshots, repo: &RepoName, p: &str) -> Option<Vec<u8>> {
    let entry = s.resolve(repo, &tree_path(p).unwrap()).await.unwrap()?;
    let chunks: Vec<Bytes> = s
        .open(&entry.entry, None)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    Some(chunks.concat())
}

#[tokio::test]
async fn racing_changes_in_one_process_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let s = snapshots(dir.path()).await;
    let repos = FileRepos::new(s.clone(), Vec::new(), 3);
    let repo = RepoName::parse("isos").unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let repos = repos.clone();
            let repo = repo.clone();
            tokio::spawn(async move {
                let change = repos.begin(&repo, "race").await?;
                let p = tree_path(&format!("race/{i}.txt")).unwrap();
                change
                    .put_stream(&p, body(format!("file {i}\n").as_bytes()), None, 0)
                    .await?;
                change.finish(true).await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    for i in 0..8 {
        assert_eq!(
            served(&s, &repo, &format!("race/{i}.txt")).await,
            Some(format!("file {i}\n").into_bytes()),
            "an acknowledged change was lost"
        );
    }
}

#[tokio::test]
async fn a_change_over_another_writers_publish_is_refused_not_published() {
    let dir = tempfile::tempdir().unwrap();
    let s = snapshots(dir.path()).await;
    // Two values over one store: two processes (a CLI beside a server).
    let a = FileRepos::new(s.clone(), Vec::new(), 3);
    let b = FileRepos::new(s.clone(), Vec::new(), 3);
    let repo = RepoName::parse("os").unwrap();
    let first = a.begin(&repo, "a").await.unwrap();
    let second = b.begin(&repo, "b").await.unwrap();
    first
        .put_stream(&tree_path("a.txt").unwrap(), body(b"a"), None, 0)
        .await
        .unwrap();
    second
        .put_stream(&tree_path("b.txt").unwrap(), body(b"b"), None, 0)
        .await
        .unwrap();
    first.finish(true).await.unwrap();
    match second.finish(true).await {
        Err(TreeError::Conflict(r)) => assert_eq!(r, repo),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(served(&s, &repo, "a.txt").await, Some(b"a".to_vec()));
    assert_eq!(served(&s, &repo, "b.txt").await, None);
}

#[tokio::test]
async fn sums_list_every_other_file_across_pages_and_follow_removals() {
    let dir = tempfile::tempdir().unwrap();
    let s = snapshots(dir.path()).await;
    let repos = FileRepos::new(s.clone(), Vec::new(), 3);
    let repo = RepoName::parse("tree").unwrap();
    let change = repos.begin(&repo, "fill").await.unwrap();
    // More than one page of entries (1000).
    for i in 0..1203 {
        let p = tree_path(&format!("d{}/f {i}.bin", i % 7)).unwrap();
        change
            .put_stream(&p, body(format!("{i}").as_bytes()), None, 0)
            .await
            .unwrap();
    }
    // The reserved name cannot be written, at the root or below it.
    for reserved in [SUMS_NAME, "SHA256SUMS/x"] {
        let err = change
            .put_stream(&tree_path(reserved).unwrap(), body(b"x"), None, 0)
            .await
            .unwrap_err();
        assert!(matches!(err, TreeError::Reserved(_)), "{err}");
    }
    let done = change.finish(true).await.unwrap();
    assert_eq!(done.files, 1204);
    let sums = String::from_utf8(served(&s, &repo, SUMS_NAME).await.unwrap()).unwrap();
    assert_eq!(sums.lines().count(), 1203);
    let want = format!("{}  d3/f 10.bin", Digest::sha256_of(b"10").hex());
    assert!(sums.lines().any(|l| l == want), "{want} not listed");
    assert!(!sums.contains(SUMS_NAME));

    let change = repos.begin(&repo, "rm").await.unwrap();
    let removed = change.remove(&tree_path("d3").unwrap()).await.unwrap();
    assert!(removed > 100);
    change.finish(true).await.unwrap();
    let sums = String::from_utf8(served(&s, &repo, SUMS_NAME).await.unwrap()).unwrap();
    assert_eq!(sums.lines().count() as u64, 1203 - removed);
    assert!(!sums.contains("d3/"));
    // Removing what is not there is refused; a mirrored repository takes no change.
    let change = repos.begin(&repo, "rm").await.unwrap();
    assert!(matches!(
        change.remove(&tree_path("nope").unwrap()).await,
        Err(TreeError::NotFound { .. })
    ));
    change.abort().await.unwrap();
    let mirrored = FileRepos::new(s.clone(), vec![repo.clone()], 3);
    assert!(matches!(
        mirrored.begin(&repo, "x").await,
        Err(TreeError::Mirrored(_))
    ));
}

struct Quiet;
impl wharf_files::mirror::MirrorObserver for Quiet {}

fn plan(remote: &str, repo: &RepoName, dir: &std::path::Path) -> wharf_files::mirror::MirrorPlan {
    wharf_files::mirror::MirrorPlan {
        remote: remote.into(),
        repository: repo.clone(),
        source: wharf_files::mirror::SourceSettings {
            url: dir.display().to_string(),
            credentials: None,
            ca_bundle: None,
        },
    }
}

/// A mirror run that changes only a file whose new bytes the store already
/// held (so nothing is transferred) still publishes the change: "unchanged"
/// means every file was kept from the published snapshot, not "nothing fetched".
#[tokio::test]
async fn a_change_to_bytes_already_stored_is_published() {
    use wharf_files::mirror::run_mirror;
    let dir = tempfile::tempdir().unwrap();
    let s = snapshots(dir.path()).await;
    let write = |p: &str, b: &[u8]| {
        let p = dir.path().join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b).unwrap();
    };
    let sums = |b: &[u8]| format!("{}  a.txt\n", Digest::sha256_of(b).hex());
    write("other/c.txt", b"three");
    write("up/a.txt", b"one");
    write("up/b.txt", b"two");
    write("up/SHA256SUMS", sums(b"one").as_bytes());
    let other = RepoName::parse("m/other").unwrap();
    let repo = RepoName::parse("m/one").unwrap();
    let first = run_mirror(
        &s,
        &plan("other", &other, &dir.path().join("other")),
        &Quiet,
    )
    .await;
    assert!(first.published.is_some(), "{}", first.line());
    let up = dir.path().join("up");
    let run = run_mirror(&s, &plan("one", &repo, &up), &Quiet).await;
    assert!(run.published.is_some(), "{}", run.line());
    let again = run_mirror(&s, &plan("one", &repo, &up), &Quiet).await;
    assert_eq!(again.published, None, "{}", again.line());
    assert_eq!(again.kept, 2, "{}", again.line());

    // a.txt now holds the bytes m/other already stored, as its checksum says.
    write("up/a.txt", b"three");
    write("up/SHA256SUMS", sums(b"three").as_bytes());
    let changed = run_mirror(&s, &plan("one", &repo, &up), &Quiet).await;
    assert_eq!(changed.failure, None);
    assert_eq!(changed.fetched, 0, "{}", changed.line());
    assert!(changed.published.is_some(), "{}", changed.line());
    assert_eq!(served(&s, &repo, "a.txt").await.unwrap(), b"three");
}
