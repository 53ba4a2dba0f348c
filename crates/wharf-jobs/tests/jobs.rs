//! Garbage collection and verification against a real filesystem blob store
//! and a real SQLite database.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use wharf_blob::{bytes_stream, put_stream, BlobStore};
use wharf_core::{Digest, RepoName, Tag};
use wharf_jobs::{check_store, collect_garbage, GcPolicy, Problem};
use wharf_meta::{Meta, NewManifest, ReferenceKind};

async fn stores() -> (Arc<BlobStore>, Meta, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let blobs = wharf_blob::fs::open(dir.path().join("blobs"))
        .await
        .unwrap();
    let meta = Meta::connect(&format!("sqlite:{}", dir.path().join("m.db").display()))
        .await
        .unwrap();
    (Arc::new(blobs), meta, dir)
}

async fn push_blob(blobs: &BlobStore, meta: &Meta, repo: &RepoName, data: &'static [u8]) -> Digest {
    let d = Digest::sha256_of(data);
    put_stream(blobs, &uuid(), &d, bytes_stream(Bytes::from_static(data)))
        .await
        .unwrap();
    meta.record_blob(repo, &d, data.len() as u64).await.unwrap();
    d
}

fn uuid() -> String {
    format!(
        "t{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

const NO_GRACE: GcPolicy = GcPolicy {
    grace_period: Duration::ZERO,
    upload_expiry: Duration::ZERO,
    full: true,
};
const DAY: GcPolicy = GcPolicy {
    grace_period: Duration::from_secs(86400),
    upload_expiry: Duration::from_secs(86400),
    full: true,
};

#[tokio::test]
async fn gc_deletes_only_unreferenced_blobs_past_the_grace_period() {
    let (blobs, meta, _dir) = stores().await;
    let repo = RepoName::parse("team/app").unwrap();
    let layer = push_blob(&blobs, &meta, &repo, b"layer bytes").await;
    let loose = push_blob(&blobs, &meta, &repo, b"never referenced").await;
    let manifest_bytes: &'static [u8] = b"{\"manifest\":1}";
    let manifest = push_blob(&blobs, &meta, &repo, manifest_bytes).await;
    meta.put_manifest(&NewManifest {
        repo: repo.clone(),
        digest: manifest.clone(),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        size: manifest_bytes.len() as u64,
        artifact_type: None,
        subject: None,
        annotations: None,
        references: vec![(layer.clone(), ReferenceKind::Blob, 11)],
        tag: Some(Tag::parse("v1").unwrap()),
    })
    .await
    .unwrap();
    blobs.create_upload("idle").await.unwrap();
    meta.create_upload("idle", &repo).await.unwrap();

    // Within the grace period nothing goes, not even the loose blob or the idle upload.
    let report = collect_garbage(&blobs, &meta, DAY).await.unwrap();
    assert_eq!((report.blobs_deleted, report.uploads_expired), (0, 0));

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let report = collect_garbage(&blobs, &meta, NO_GRACE).await.unwrap();
    assert_eq!(report.blobs_deleted, 1, "{report:?}");
    assert_eq!(report.bytes_freed, 16);
    assert_eq!(report.uploads_expired, 1);
    assert_eq!(blobs.stat(&loose).await.unwrap(), None);
    assert!(blobs.stat(&layer).await.unwrap().is_some());
    assert!(blobs.stat(&manifest).await.unwrap().is_some());
    assert!(matches!(
        blobs.upload_size("idle").await,
        Err(wharf_blob::BlobError::UploadNotFound(_))
    ));
    assert!(check_store(&blobs, &meta)
        .await
        .unwrap()
        .problems
        .is_empty());

    // Once the manifest is deleted, its layer and its own bytes become garbage too.
    assert!(meta.delete_manifest(&repo, &manifest).await.unwrap());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let report = collect_garbage(&blobs, &meta, NO_GRACE).await.unwrap();
    assert_eq!(report.blobs_deleted, 2, "{report:?}");
    assert!(check_store(&blobs, &meta)
        .await
        .unwrap()
        .problems
        .is_empty());
}

#[tokio::test]
async fn gc_removes_orphaned_bytes_and_check_reports_corruption() {
    let (blobs, meta, dir) = stores().await;
    let repo = RepoName::parse("a").unwrap();
    // Bytes committed to the store but never recorded: a crash between the two steps.
    let orphan = Digest::sha256_of(b"orphan");
    put_stream(
        &*blobs,
        "o",
        &orphan,
        bytes_stream(Bytes::from_static(b"orphan")),
    )
    .await
    .unwrap();
    let kept = push_blob(&blobs, &meta, &repo, b"kept").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let report = collect_garbage(&blobs, &meta, DAY).await.unwrap();
    assert_eq!(report.blobs_deleted, 0);
    let report = collect_garbage(&blobs, &meta, NO_GRACE).await.unwrap();
    assert_eq!(report.blobs_deleted, 2); // the orphan, and `kept`, which nothing references
    assert_eq!(blobs.stat(&orphan).await.unwrap(), None);

    let d = push_blob(&blobs, &meta, &repo, b"precious").await;
    let path = dir
        .path()
        .join("blobs/blobs/sha256")
        .join(&d.hex()[..2])
        .join(d.hex());
    std::fs::write(&path, b"tampered!").unwrap();
    let report = check_store(&blobs, &meta).await.unwrap();
    assert!(
        matches!(
            report.problems.as_slice(),
            [Problem::Corrupt { .. }, Problem::SizeMismatch { .. }]
        ),
        "{:?}",
        report.problems
    );
    std::fs::remove_file(&path).unwrap();
    let report = check_store(&blobs, &meta).await.unwrap();
    assert_eq!(report.problems, vec![Problem::Missing { digest: d }]);
    let _ = kept;
}

/// A manifest whose layer is gone — row and bytes both — is a problem that
/// `wharf check` reports, even though no blob row disagrees with the store.
#[tokio::test]
async fn check_reports_a_manifest_whose_blob_is_missing() {
    let (blobs, meta, _dir) = stores().await;
    let repo = RepoName::parse("team/app").unwrap();
    let layer = push_blob(&blobs, &meta, &repo, b"layer bytes").await;
    let manifest_bytes: &'static [u8] = b"{\"manifest\":2}";
    let manifest = push_blob(&blobs, &meta, &repo, manifest_bytes).await;
    meta.put_manifest(&NewManifest {
        repo: repo.clone(),
        digest: manifest.clone(),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        size: manifest_bytes.len() as u64,
        artifact_type: None,
        subject: None,
        annotations: None,
        references: vec![(layer.clone(), ReferenceKind::Blob, 11)],
        tag: Some(Tag::parse("v1").unwrap()),
    })
    .await
    .unwrap();
    assert!(check_store(&blobs, &meta)
        .await
        .unwrap()
        .problems
        .is_empty());
    // What the lost-blob race left behind: the bytes and the row gone, the manifest still there.
    blobs.delete(&layer).await.unwrap();
    meta.execute_admin(&format!("DELETE FROM blobs WHERE digest = '{layer}'"))
        .await
        .unwrap();
    let report = check_store(&blobs, &meta).await.unwrap();
    assert_eq!(
        report.problems,
        vec![Problem::ReferencedBlobMissing {
            owner: format!("oci-manifest:team/app@{manifest}"),
            blob: layer,
        }]
    );
}
