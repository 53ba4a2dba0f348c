//! The metadata conformance suite, run against SQLite and PostgreSQL alike.
//!
//! PostgreSQL comes from `WHARF_TEST_POSTGRES_URL`, which the project's test
//! command (`scripts/test.sh`) sets after starting a private server; each test
//! gets a database of its own. A missing URL fails the PostgreSQL half loudly.

use wharf_core::{Digest, RepoName, Tag};
use wharf_meta::{Meta, NewManifest, PutManifestOutcome, ReferenceKind, SweepOutcome};

struct Db {
    meta: Meta,
    url: String,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("meta.db").display());
    Db {
        meta: Meta::connect(&url).await.unwrap(),
        url,
        _dir: Some(dir),
    }
}

async fn postgres() -> Db {
    let base = std::env::var("WHARF_TEST_POSTGRES_URL").expect(
        "WHARF_TEST_POSTGRES_URL is not set: run the suite with scripts/test.sh, which starts PostgreSQL",
    );
    let admin = Meta::connect(&base)
        .await
        .expect("connect to the test PostgreSQL");
    let name = format!("wharf_t_{}", uuid::Uuid::new_v4().simple());
    admin
        .execute_admin(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    admin.close().await;
    let (prefix, _) = base.rsplit_once('/').unwrap();
    let url = format!("{prefix}/{name}");
    Db {
        meta: Meta::connect(&url).await.unwrap(),
        url,
        _dir: None,
    }
}

fn repo(s: &str) -> RepoName {
    RepoName::parse(s).unwrap()
}

fn manifest(
    r: &RepoName,
    body: &[u8],
    refs: Vec<(Digest, ReferenceKind, u64)>,
    tag: Option<&str>,
) -> NewManifest {
    NewManifest {
        repo: r.clone(),
        digest: Digest::sha256_of(body),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        size: body.len() as u64,
        artifact_type: None,
        subject: None,
        annotations: None,
        references: refs,
        tag: tag.map(|t| Tag::parse(t).unwrap()),
    }
}

async fn migrations_are_idempotent(db: Db) {
    // Running the migrations again on an up-to-date schema changes nothing.
    let again = db.meta.clone();
    drop(again);
    assert_eq!(db.meta.repository_kind(&repo("a")).await.unwrap(), None);
}

async fn manifest_requires_linked_blobs(db: Db) {
    let (a, b) = (repo("team/a"), repo("team/b"));
    let layer = Digest::sha256_of(b"layer");
    let m = manifest(
        &a,
        b"m1",
        vec![(layer.clone(), ReferenceKind::Blob, 5)],
        Some("v1"),
    );
    assert_eq!(
        db.meta.put_manifest(&m).await.unwrap(),
        PutManifestOutcome::MissingBlob(layer.clone())
    );
    // A blob linked into another repository does not count.
    db.meta.record_blob(&b, &layer, 5).await.unwrap();
    assert_eq!(
        db.meta.put_manifest(&m).await.unwrap(),
        PutManifestOutcome::MissingBlob(layer.clone())
    );
    assert_eq!(
        db.meta.mount_blob(&a, &layer, Some(&b)).await.unwrap(),
        Some(5)
    );
    let wrong_size = manifest(
        &a,
        b"m0",
        vec![(layer.clone(), ReferenceKind::Blob, 6)],
        None,
    );
    assert!(matches!(
        db.meta.put_manifest(&wrong_size).await.unwrap(),
        PutManifestOutcome::SizeMismatch { .. }
    ));
    assert_eq!(
        db.meta.put_manifest(&m).await.unwrap(),
        PutManifestOutcome::Stored
    );
    let got = db
        .meta
        .manifest_by_tag(&a, &Tag::parse("v1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.digest, m.digest);
    assert_eq!(
        db.meta
            .manifest_by_digest(&a, &m.digest)
            .await
            .unwrap()
            .unwrap()
            .size,
        2
    );
    assert!(db
        .meta
        .manifest_by_digest(&b, &m.digest)
        .await
        .unwrap()
        .is_none());
    let index = manifest(
        &a,
        b"idx",
        vec![(Digest::sha256_of(b"absent"), ReferenceKind::Manifest, 3)],
        None,
    );
    assert!(matches!(
        db.meta.put_manifest(&index).await.unwrap(),
        PutManifestOutcome::MissingManifest(_)
    ));
}

async fn sparse_indexes_only_in_mirrored_repositories(db: Db) {
    let (pushed, mirrored) = (repo("team/app"), repo("up/team/app"));
    let kept = manifest(&mirrored, b"amd64", vec![], None);
    let left_out = Digest::sha256_of(b"arm64");
    let index = |r: &RepoName| {
        manifest(
            r,
            b"index",
            vec![
                (kept.digest.clone(), ReferenceKind::Manifest, 5),
                (left_out.clone(), ReferenceKind::Manifest, 5),
            ],
            Some("1.0"),
        )
    };
    // An ordinary repository keeps requiring every child.
    db.meta
        .put_manifest(&manifest(&pushed, b"amd64", vec![], None))
        .await
        .unwrap();
    assert_eq!(
        db.meta.put_manifest(&index(&pushed)).await.unwrap(),
        PutManifestOutcome::MissingManifest(left_out.clone())
    );
    assert_eq!(db.meta.repository_origin(&pushed).await.unwrap(), None);
    db.meta
        .set_repository_origin(&mirrored, "https://up.example/team/app")
        .await
        .unwrap();
    assert_eq!(
        db.meta
            .repository_origin(&mirrored)
            .await
            .unwrap()
            .as_deref(),
        Some("https://up.example/team/app")
    );
    // A mirrored one takes the index with a child it does not hold, but never
    // a blob it does not hold.
    db.meta.put_manifest(&kept).await.unwrap();
    let sparse = index(&mirrored);
    assert_eq!(
        db.meta.put_manifest(&sparse).await.unwrap(),
        PutManifestOutcome::Stored
    );
    let missing_blob = manifest(
        &mirrored,
        b"m",
        vec![(Digest::sha256_of(b"nope"), ReferenceKind::Blob, 4)],
        None,
    );
    assert!(matches!(
        db.meta.put_manifest(&missing_blob).await.unwrap(),
        PutManifestOutcome::MissingBlob(_)
    ));
    assert_eq!(
        db.meta
            .manifest_by_tag(&mirrored, &Tag::parse("1.0").unwrap())
            .await
            .unwrap()
            .unwrap()
            .digest,
        sparse.digest
    );
    assert!(db
        .meta
        .manifest_by_digest(&mirrored, &left_out)
        .await
        .unwrap()
        .is_none());
    // The child left out is no reference (a check finds nothing missing); the
    // child kept is one (a collection keeps it).
    let refs = db.meta.blob_references().await.unwrap();
    assert!(!refs.iter().any(|(_, b)| b == &left_out), "{refs:?}");
    assert!(refs
        .iter()
        .any(|(o, b)| b == &kept.digest && o.contains(&sparse.digest.to_string())));
    assert!(db.meta.blob_is_needed(&kept.digest).await.unwrap());
}

async fn tags_sort_bytewise_and_paginate(db: Db) {
    let a = repo("a");
    for t in ["b", "B", "a", "a0", "_z", "Z9"] {
        db.meta
            .put_manifest(&manifest(&a, t.as_bytes(), vec![], Some(t)))
            .await
            .unwrap();
    }
    let all = db.meta.tags(&a, None, 100).await.unwrap();
    assert_eq!(all, vec!["B", "Z9", "_z", "a", "a0", "b"]);
    assert_eq!(db.meta.tags(&a, None, 2).await.unwrap(), vec!["B", "Z9"]);
    assert_eq!(
        db.meta.tags(&a, Some("Z9"), 2).await.unwrap(),
        vec!["_z", "a"]
    );
    assert!(db
        .meta
        .delete_tag(&a, &Tag::parse("a").unwrap())
        .await
        .unwrap());
    assert!(!db
        .meta
        .delete_tag(&a, &Tag::parse("a").unwrap())
        .await
        .unwrap());
    assert_eq!(db.meta.tags(&a, None, 100).await.unwrap().len(), 5);
    let d = Digest::sha256_of(b"b");
    assert!(db.meta.delete_manifest(&a, &d).await.unwrap());
    assert!(!db
        .meta
        .tags(&a, None, 100)
        .await
        .unwrap()
        .contains(&"b".to_owned()));
    assert_eq!(
        db.meta
            .repositories(wharf_core::RepositoryKind::Oci, None, 10)
            .await
            .unwrap(),
        vec!["a"]
    );
}

/// The `?tag=` tags of a push by digest share the manifest's transaction: none
/// without it, all with it, and a tag moved from another manifest moves alone.
async fn extra_tags_commit_with_their_manifest(db: Db) {
    let a = repo("a");
    let tag = |t: &str| Tag::parse(t).unwrap();
    let first = manifest(&a, b"tagged-1", vec![], None);
    let tags = [tag("v1"), tag("latest"), tag("v1")];
    {
        let mut claim = db.meta.claim_blob(&first.digest, first.size).await.unwrap();
        assert_eq!(
            claim.put_manifest(&first).await.unwrap(),
            PutManifestOutcome::Stored
        );
        claim.tag_manifest(&a, &tags).await.unwrap();
        // Dropped uncommitted, as a push that fails after tagging is.
    }
    assert!(db.meta.tags(&a, None, 10).await.unwrap().is_empty());
    assert!(db
        .meta
        .manifest_by_digest(&a, &first.digest)
        .await
        .unwrap()
        .is_none());
    let mut claim = db.meta.claim_blob(&first.digest, first.size).await.unwrap();
    assert_eq!(
        claim.put_manifest(&first).await.unwrap(),
        PutManifestOutcome::Stored
    );
    claim.tag_manifest(&a, &tags).await.unwrap();
    claim.commit().await.unwrap();
    assert_eq!(db.meta.tags(&a, None, 10).await.unwrap(), ["latest", "v1"]);

    let second = manifest(&a, b"tagged-2", vec![], None);
    let mut claim = db
        .meta
        .claim_blob(&second.digest, second.size)
        .await
        .unwrap();
    assert_eq!(
        claim.put_manifest(&second).await.unwrap(),
        PutManifestOutcome::Stored
    );
    claim.tag_manifest(&a, &[tag("latest")]).await.unwrap();
    claim.commit().await.unwrap();
    let at = |t: &str| {
        let meta = db.meta.clone();
        let a = a.clone();
        let t = tag(t);
        async move { meta.manifest_by_tag(&a, &t).await.unwrap().unwrap().digest }
    };
    assert_eq!(at("latest").await, second.digest);
    assert_eq!(at("v1").await, first.digest);
}

async fn referrers_filter_by_artifact_type(db: Db) {
    let a = repo("a");
    let subject = Digest::sha256_of(b"subject");
    for (body, ty) in [
        (&b"sig"[..], "application/sig"),
        (b"sbom", "application/sbom"),
    ] {
        let mut m = manifest(&a, body, vec![], None);
        m.subject = Some(subject.clone());
        m.artifact_type = Some(ty.into());
        db.meta.put_manifest(&m).await.unwrap();
    }
    assert_eq!(
        db.meta.referrers(&a, &subject, None).await.unwrap().len(),
        2
    );
    let sigs = db
        .meta
        .referrers(&a, &subject, Some("application/sig"))
        .await
        .unwrap();
    assert_eq!(sigs.len(), 1);
    assert_eq!(sigs[0].digest, Digest::sha256_of(b"sig"));
}

async fn sweep_spares_referenced_and_young(db: Db) {
    let a = repo("a");
    let (used, loose) = (Digest::sha256_of(b"used"), Digest::sha256_of(b"loose"));
    db.meta.record_blob(&a, &used, 4).await.unwrap();
    db.meta.record_blob(&a, &loose, 5).await.unwrap();
    db.meta
        .put_manifest(&manifest(
            &a,
            b"m",
            vec![(used.clone(), ReferenceKind::Blob, 4)],
            Some("t"),
        ))
        .await
        .unwrap();
    let now = wharf_meta::unix_now();
    // Young: kept even though unreferenced.
    assert_eq!(
        db.meta
            .mark_for_deletion(&loose, now - 3600, false)
            .await
            .unwrap(),
        SweepOutcome::Kept
    );
    // Past the grace period: the loose blob is marked, the referenced one stays.
    let SweepOutcome::Marked(mark) = db
        .meta
        .mark_for_deletion(&loose, now + 10, false)
        .await
        .unwrap()
    else {
        panic!("the loose blob should be marked for deletion");
    };
    assert_eq!(
        db.meta
            .mark_for_deletion(&used, now + 10, true)
            .await
            .unwrap(),
        SweepOutcome::Kept
    );
    // Marked: absent to everyone, and its stale links are gone with the mark.
    assert_eq!(db.meta.repo_blob_size(&a, &loose).await.unwrap(), None);
    assert_eq!(
        db.meta.mount_blob(&repo("b"), &loose, None).await.unwrap(),
        None
    );
    assert!(db.meta.deletion_holds(&mark).await.unwrap());
    db.meta.finish_deletion(&mark).await.unwrap();
    assert!(!db.meta.deletion_holds(&mark).await.unwrap());
    // Bytes with no row at all are an orphan only when the caller says they are old.
    let stray = Digest::sha256_of(b"x");
    assert_eq!(
        db.meta.mark_for_deletion(&stray, now, false).await.unwrap(),
        SweepOutcome::Kept
    );
    assert!(matches!(
        db.meta.mark_for_deletion(&stray, now, true).await.unwrap(),
        SweepOutcome::Marked(_)
    ));
    assert_eq!(db.meta.known_blobs().await.unwrap().len(), 2); // `used` and the manifest itself
}

/// A claim on a blob that a collector is deleting waits for the deletion to
/// finish and then starts the blob afresh; it never shares the row with it.
async fn claim_waits_for_deletion(db: Db) {
    let a = repo("a");
    let d = Digest::sha256_of(b"reborn");
    db.meta.record_blob(&a, &d, 6).await.unwrap();
    let SweepOutcome::Marked(mark) = db
        .meta
        .mark_for_deletion(&d, wharf_meta::unix_now() + 10, false)
        .await
        .unwrap()
    else {
        panic!("unreferenced blob should be marked");
    };
    let meta = db.meta.clone();
    let (claimed_tx, mut claimed_rx) = tokio::sync::oneshot::channel();
    let (d2, a2) = (d.clone(), a.clone());
    let claimer = tokio::spawn(async move {
        let mut claim = meta.claim_blob(&d2, 6).await.unwrap();
        let _ = claimed_tx.send(());
        claim.link(&a2).await.unwrap();
        claim.commit().await.unwrap();
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        claimed_rx.try_recv().is_err(),
        "a claim must wait while the blob is being deleted"
    );
    db.meta.finish_deletion(&mark).await.unwrap();
    claimer.await.unwrap();
    assert_eq!(db.meta.repo_blob_size(&a, &d).await.unwrap(), Some(6));
}

/// A deletion whose collector died is taken over, by a claim or by the next collector.
async fn abandoned_deletion_is_taken_over(db: Db) {
    let a = repo("a");
    let (d1, d2) = (Digest::sha256_of(b"one"), Digest::sha256_of(b"two"));
    for d in [&d1, &d2] {
        db.meta.record_blob(&a, d, 3).await.unwrap();
        assert!(matches!(
            db.meta
                .mark_for_deletion(d, wharf_meta::unix_now() + 10, false)
                .await
                .unwrap(),
            SweepOutcome::Marked(_)
        ));
    }
    // Age both marks past the lease, as if their collector had died long ago.
    db.meta
        .execute_admin("UPDATE blobs SET deleting_since = 0 WHERE state = 'deleting'")
        .await
        .unwrap();
    let claim = db.meta.claim_blob(&d1, 3).await.unwrap();
    claim.commit().await.unwrap();
    let marks = db.meta.take_over_abandoned_deletions().await.unwrap();
    assert_eq!(marks.len(), 1);
    assert_eq!(marks[0].digest, d2);
    assert!(db.meta.deletion_holds(&marks[0]).await.unwrap());
}

/// The race of the data-safety issue, played at the metadata seam with a model
/// of the blob store: pushers claim a blob, place its bytes under the claim and
/// record a manifest naming it, then delete the manifest and push again, while
/// collectors with a zero grace period mark, unlink and finish in a loop. After
/// every acknowledged manifest its blob's bytes must be there.
async fn collector_never_loses_an_acknowledged_blob(db: Db) {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};
    let stored: Arc<Mutex<HashSet<Digest>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut collectors = Vec::new();
    for _ in 0..2 {
        let (meta, stored, stop) = (db.meta.clone(), stored.clone(), stop.clone());
        collectors.push(tokio::spawn(async move {
            let mut deleted = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let listed: Vec<Digest> = stored.lock().unwrap().iter().cloned().collect();
                // A zero grace period, and a clock one second ahead: everything
                // unreferenced is garbage at once.
                let cutoff = wharf_meta::unix_now() + 1;
                for d in listed {
                    if let SweepOutcome::Marked(mark) =
                        meta.mark_for_deletion(&d, cutoff, true).await.unwrap()
                    {
                        if meta.deletion_holds(&mark).await.unwrap() {
                            stored.lock().unwrap().remove(&d);
                            deleted += 1;
                        }
                        meta.finish_deletion(&mark).await.unwrap();
                    }
                }
                tokio::task::yield_now().await;
            }
            deleted
        }));
    }
    let rounds = 400;
    let mut pushers = Vec::new();
    for p in 0..3 {
        let (meta, stored) = (db.meta.clone(), stored.clone());
        pushers.push(tokio::spawn(async move {
            let r = repo(&format!("p{p}"));
            let layer = Digest::sha256_of(format!("layer{p}").as_bytes());
            let body = format!("manifest{p}");
            let mut acknowledged = 0;
            for _ in 0..rounds {
                // Upload: claim, then place the bytes, then link; one transaction.
                let mut claim = meta.claim_blob(&layer, 6).await.unwrap();
                stored.lock().unwrap().insert(layer.clone());
                claim.link(&r).await.unwrap();
                claim.commit().await.unwrap();
                // Manifest push, its own bytes placed under its own claim.
                let m = manifest(
                    &r,
                    body.as_bytes(),
                    vec![(layer.clone(), ReferenceKind::Blob, 6)],
                    Some("t"),
                );
                let mut claim = meta.claim_blob(&m.digest, m.size).await.unwrap();
                stored.lock().unwrap().insert(m.digest.clone());
                match claim.put_manifest(&m).await.unwrap() {
                    PutManifestOutcome::Stored => {
                        claim.commit().await.unwrap();
                        acknowledged += 1;
                        let s = stored.lock().unwrap();
                        assert!(s.contains(&layer), "acknowledged manifest lost its layer");
                        assert!(
                            s.contains(&m.digest),
                            "acknowledged manifest lost its bytes"
                        );
                    }
                    // The collector took the layer between upload and manifest:
                    // refused, never acknowledged; the client pushes again.
                    PutManifestOutcome::MissingBlob(_) => {
                        drop(claim);
                        continue;
                    }
                    other => panic!("unexpected outcome {other:?}"),
                }
                assert!(meta.delete_manifest(&r, &m.digest).await.unwrap());
            }
            acknowledged
        }));
    }
    let mut acknowledged = 0;
    for p in pushers {
        acknowledged += p.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut deleted = 0;
    for c in collectors {
        deleted += c.await.unwrap();
    }
    assert!(
        acknowledged > rounds,
        "too few acknowledged pushes to mean anything: {acknowledged}"
    );
    assert!(
        deleted > 0,
        "the collectors never deleted anything: the race was not exercised"
    );
}

/// A database as the previous release (schema version 2) left it, with data, is
/// upgraded in place: nothing is lost, and the new reference model knows what the
/// old manifests need, so the first collection after the upgrade takes only garbage.
async fn upgrade_from_previous_release(db: Db) {
    // A fresh database of its own, stopped at the previous release's schema.
    db.meta.close().await;
    let url = match db.url.strip_prefix("sqlite:") {
        Some(path) => format!("sqlite:{path}.v2"),
        None => {
            let name = format!("wharf_up_{}", uuid::Uuid::new_v4().simple());
            let admin = Meta::connect(&db.url).await.unwrap();
            admin
                .execute_admin(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap();
            admin.close().await;
            format!("{}/{name}", db.url.rsplit_once('/').unwrap().0)
        }
    };
    let old = Meta::connect_at(&url, 2).await.unwrap();
    let (layer, loose) = (Digest::sha256_of(b"layer"), Digest::sha256_of(b"loose"));
    let manifest = Digest::sha256_of(b"manifest");
    // Rows exactly as release 0.1 wrote them for one pushed image, one loose blob,
    // an administrator and an open upload.
    for statement in [
        "INSERT INTO repositories (name, format, created_at) VALUES ('team/app', 'oci', 1)".to_owned(),
        format!("INSERT INTO blobs (digest, size, created_at, last_used_at) VALUES ('{layer}', 5, 1, 1)"),
        format!("INSERT INTO blobs (digest, size, created_at, last_used_at) VALUES ('{loose}', 5, 1, 1)"),
        format!("INSERT INTO blobs (digest, size, created_at, last_used_at) VALUES ('{manifest}', 8, 1, 1)"),
        format!("INSERT INTO repo_blobs (repo, digest, linked_at) VALUES ('team/app', '{layer}', 1)"),
        format!("INSERT INTO repo_blobs (repo, digest, linked_at) VALUES ('team/app', '{loose}', 1)"),
        format!(
            "INSERT INTO manifests (repo, digest, media_type, size, created_at) VALUES \
             ('team/app', '{manifest}', 'application/vnd.oci.image.manifest.v1+json', 8, 1)"
        ),
        format!(
            "INSERT INTO manifest_refs (repo, manifest, child, kind) VALUES \
             ('team/app', '{manifest}', '{layer}', 'blob')"
        ),
        format!("INSERT INTO tags (repo, tag, digest, updated_at) VALUES ('team/app', 'v1', '{manifest}', 1)"),
        "INSERT INTO uploads (id, repo, created_at, updated_at) VALUES ('u1', 'team/app', 1, 1)".to_owned(),
        "INSERT INTO accounts (name, kind, password_hash, is_admin, disabled, created_at) \
         VALUES ('admin', 'user', '$argon2id$x', 1, 0, 1)"
            .to_owned(),
    ] {
        old.execute_admin(&statement).await.unwrap();
    }
    old.close().await;

    let meta = Meta::connect(&url).await.unwrap();
    let a = repo("team/app");
    let tagged = meta
        .manifest_by_tag(&a, &Tag::parse("v1").unwrap())
        .await
        .unwrap();
    assert_eq!(tagged.map(|m| m.digest), Some(manifest.clone()));
    assert_eq!(meta.repo_blob_size(&a, &layer).await.unwrap(), Some(5));
    assert_eq!(
        meta.upload_repo("u1").await.unwrap().as_deref(),
        Some("team/app")
    );
    assert!(meta.has_admin().await.unwrap());
    let owner = wharf_meta::RefOwner::OciManifest {
        repo: a.clone(),
        digest: manifest.clone(),
    }
    .key();
    let mut refs = meta.blob_references().await.unwrap();
    refs.sort();
    let mut expected = vec![(owner.clone(), layer.clone()), (owner, manifest.clone())];
    expected.sort();
    assert_eq!(refs, expected);
    assert_eq!(
        meta.gc_candidates(None, 10).await.unwrap(),
        vec![loose.clone()]
    );
    let later = wharf_meta::unix_now() + 10;
    assert!(matches!(
        meta.mark_for_deletion(&loose, later, false).await.unwrap(),
        SweepOutcome::Marked(_)
    ));
    for needed in [&layer, &manifest] {
        assert_eq!(
            meta.mark_for_deletion(needed, later, false).await.unwrap(),
            SweepOutcome::Kept
        );
    }
    meta.close().await;
}

/// Names are unique across kinds, and a write of one kind into a repository of
/// another is refused, never merged.
async fn repository_kinds_share_one_namespace(db: Db) {
    use wharf_core::RepositoryKind;
    let tree = repo("fedora/iot");
    assert!(db
        .meta
        .create_repository(&tree, RepositoryKind::Ostree)
        .await
        .unwrap());
    assert!(!db
        .meta
        .create_repository(&tree, RepositoryKind::Ostree)
        .await
        .unwrap());
    let wrong = db.meta.create_repository(&tree, RepositoryKind::Rpm).await;
    assert!(
        matches!(
            wrong,
            Err(wharf_meta::MetaError::WrongKind {
                expected: RepositoryKind::Rpm,
                actual: RepositoryKind::Ostree,
                ..
            })
        ),
        "{wrong:?}"
    );
    // An OCI upload into the OSTree repository's name is refused at commit.
    let d = Digest::sha256_of(b"layer");
    assert!(matches!(
        db.meta.record_blob(&tree, &d, 5).await,
        Err(wharf_meta::MetaError::WrongKind { .. })
    ));
    assert_eq!(db.meta.repo_blob_size(&tree, &d).await.unwrap(), None);
    // OCI content elsewhere is unaffected, and listings keep the kinds apart.
    db.meta
        .record_blob(&repo("fedora/app"), &d, 5)
        .await
        .unwrap();
    let all = db.meta.list_repositories(None).await.unwrap();
    let names: Vec<_> = all.iter().map(|r| (r.name.as_str(), r.kind)).collect();
    assert_eq!(
        names,
        vec![
            ("fedora/app", RepositoryKind::Oci),
            ("fedora/iot", RepositoryKind::Ostree)
        ]
    );
    assert_ne!(all[0].id, all[1].id);
    assert_eq!(
        db.meta
            .repositories(RepositoryKind::Oci, None, 10)
            .await
            .unwrap(),
        vec!["fedora/app"]
    );
}

fn gc_job() -> wharf_meta::NewJob {
    wharf_meta::NewJob {
        kind: "gc".into(),
        key: "gc".into(),
        params: "{}".into(),
        max_attempts: 2,
    }
}

/// One pending job per key; of many concurrent claimers exactly one wins; the
/// winner's progress is readable while it runs; the history keeps the outcome.
async fn job_queue_one_winner_per_job(db: Db) {
    use wharf_meta::{JobProgress, JobState, LeaseStatus};
    let (id, new) = db.meta.enqueue_job(&gc_job()).await.unwrap();
    assert!(new);
    assert_eq!(
        db.meta.enqueue_job(&gc_job()).await.unwrap(),
        (id.clone(), false)
    );
    let mut claimers = Vec::new();
    for w in 0..8 {
        let meta = db.meta.clone();
        claimers.push(tokio::spawn(async move {
            meta.claim_job(&format!("worker{w}"), 60).await.unwrap()
        }));
    }
    let mut winners = Vec::new();
    for (w, c) in claimers.into_iter().enumerate() {
        if let Some(job) = c.await.unwrap() {
            winners.push((w, job));
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let (w, job) = winners.pop().unwrap();
    let worker = format!("worker{w}");
    assert_eq!(
        (job.id.as_str(), job.kind.as_str(), job.attempt),
        (id.as_str(), "gc", 1)
    );
    // Still pending while it runs: a second enqueue joins it.
    assert_eq!(
        db.meta.enqueue_job(&gc_job()).await.unwrap(),
        (id.clone(), false)
    );
    let progress = JobProgress {
        items_done: 3,
        items_total: Some(10),
        bytes_done: 300,
        bytes_total: None,
    };
    assert_eq!(
        db.meta.renew_job(&id, &worker, 60, progress).await.unwrap(),
        LeaseStatus::Held
    );
    assert_eq!(
        db.meta
            .renew_job(&id, "intruder", 60, progress)
            .await
            .unwrap(),
        LeaseStatus::Lost
    );
    let running = db.meta.job(&id).await.unwrap().unwrap();
    assert_eq!(
        (running.state, running.progress),
        (JobState::Running, progress)
    );
    db.meta.job_log(&id, "swept 10 candidates").await.unwrap();
    let done = db
        .meta
        .finish_job(&id, &worker, Ok("deleted 3 blobs"), progress)
        .await
        .unwrap();
    assert_eq!(done, Some(JobState::Succeeded));
    let record = db.meta.job(&id).await.unwrap().unwrap();
    assert_eq!(record.summary.as_deref(), Some("deleted 3 blobs"));
    assert!(record.finished_at.is_some());
    assert_eq!(
        db.meta.job_log_lines(&id).await.unwrap()[0].1,
        "swept 10 candidates"
    );
    // Finished: the key is free again.
    let (next, new) = db.meta.enqueue_job(&gc_job()).await.unwrap();
    assert!(new && next != id);
    assert_eq!(db.meta.jobs(10).await.unwrap().len(), 2);
}

/// A lapsed lease (the worker died) makes the job claimable again; a failed
/// attempt is retried after a backoff and failed for good after its last attempt.
async fn job_queue_lease_expiry_and_retries(db: Db) {
    use wharf_meta::{JobProgress, JobState};
    let (id, _) = db.meta.enqueue_job(&gc_job()).await.unwrap();
    let first = db.meta.claim_job("dead", -1).await.unwrap().unwrap();
    assert_eq!(first.attempt, 1);
    // Lease already lapsed: another worker takes over, as after a crash.
    let second = db.meta.claim_job("alive", 60).await.unwrap().unwrap();
    assert_eq!((second.id.as_str(), second.attempt), (id.as_str(), 2));
    assert_eq!(
        db.meta
            .finish_job(&id, "dead", Ok("late"), JobProgress::default())
            .await
            .unwrap(),
        None,
        "a worker that lost its lease cannot finish the job"
    );
    // A worker shutting down hands the job back: claimable at once, the attempt not counted.
    assert!(db.meta.release_job(&id, "alive").await.unwrap());
    assert!(!db.meta.release_job(&id, "alive").await.unwrap());
    let again = db.meta.claim_job("alive", 60).await.unwrap().unwrap();
    assert_eq!((again.id.as_str(), again.attempt), (id.as_str(), 2));
    // Attempt 2 of 2 fails: failed for good.
    let state = db
        .meta
        .finish_job(&id, "alive", Err("disk on fire"), JobProgress::default())
        .await
        .unwrap();
    assert_eq!(state, Some(JobState::Failed));
    assert_eq!(
        db.meta.job(&id).await.unwrap().unwrap().error.as_deref(),
        Some("disk on fire")
    );
    // A first failure is queued again, but not before its backoff.
    let (id, _) = db.meta.enqueue_job(&gc_job()).await.unwrap();
    db.meta.claim_job("w", 60).await.unwrap().unwrap();
    let state = db
        .meta
        .finish_job(&id, "w", Err("transient"), JobProgress::default())
        .await
        .unwrap();
    assert_eq!(state, Some(JobState::Queued));
    assert_eq!(
        db.meta.claim_job("w", 60).await.unwrap(),
        None,
        "still backing off"
    );
    assert_eq!(wharf_meta::retry_backoff_secs(1), 10);
}

/// Cancelling a queued job ends it at once; a running one is told at its next renewal.
async fn job_queue_cancellation(db: Db) {
    use wharf_meta::{JobProgress, JobState, LeaseStatus};
    let (queued, _) = db.meta.enqueue_job(&gc_job()).await.unwrap();
    assert_eq!(
        db.meta.cancel_job(&queued).await.unwrap(),
        Some(JobState::Cancelled)
    );
    assert_eq!(db.meta.claim_job("w", 60).await.unwrap(), None);
    assert_eq!(db.meta.cancel_job("no-such-job").await.unwrap(), None);
    let (running, _) = db.meta.enqueue_job(&gc_job()).await.unwrap();
    db.meta.claim_job("w", 60).await.unwrap().unwrap();
    assert_eq!(
        db.meta.cancel_job(&running).await.unwrap(),
        Some(JobState::Running)
    );
    assert_eq!(
        db.meta
            .renew_job(&running, "w", 60, JobProgress::default())
            .await
            .unwrap(),
        LeaseStatus::CancelRequested
    );
    let state = db
        .meta
        .finish_job(&running, "w", Err("stopped"), JobProgress::default())
        .await
        .unwrap();
    assert_eq!(state, Some(JobState::Cancelled));
}

/// Exactly one of several schedulers holds the lease, and a due run fires once.
async fn scheduler_lease_and_due_runs(db: Db) {
    assert!(db.meta.acquire_lease("scheduler", "a", 30).await.unwrap());
    assert!(!db.meta.acquire_lease("scheduler", "b", 30).await.unwrap());
    assert!(
        db.meta.acquire_lease("scheduler", "a", 30).await.unwrap(),
        "renewal"
    );
    db.meta.release_lease("scheduler", "a").await.unwrap();
    assert!(db.meta.acquire_lease("scheduler", "b", 30).await.unwrap());
    assert!(!db.meta.acquire_lease("scheduler", "a", 30).await.unwrap());
    // Lapsed: anyone may take it.
    assert!(db.meta.acquire_lease("expiring", "a", -1).await.unwrap());
    assert!(db.meta.acquire_lease("expiring", "b", 30).await.unwrap());

    let now = wharf_meta::unix_now();
    assert!(
        !db.meta.take_due_schedule("gc", now - 1).await.unwrap(),
        "first sight only starts it"
    );
    let mut fired = Vec::new();
    for _ in 0..4 {
        let meta = db.meta.clone();
        fired.push(tokio::spawn(async move {
            meta.take_due_schedule("gc", now + 3600).await.unwrap()
        }));
    }
    let mut count = 0;
    for f in fired {
        count += usize::from(f.await.unwrap());
    }
    assert_eq!(count, 1, "a due run fires exactly once");
    assert!(
        !db.meta.take_due_schedule("gc", now + 7200).await.unwrap(),
        "not due again yet"
    );
}

async fn uploads_expire(db: Db) {
    let a = repo("a");
    db.meta.create_upload("u1", &a).await.unwrap();
    assert_eq!(
        db.meta.upload_repo("u1").await.unwrap().as_deref(),
        Some("a")
    );
    let now = wharf_meta::unix_now();
    assert!(db.meta.idle_uploads(now - 60).await.unwrap().is_empty());
    assert_eq!(db.meta.idle_uploads(now + 60).await.unwrap(), vec!["u1"]);
    assert!(db.meta.delete_upload("u1").await.unwrap());
    assert_eq!(db.meta.upload_repo("u1").await.unwrap(), None);
}

async fn concurrent_writers(db: Db) {
    let a = repo("a");
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (meta, a) = (db.meta.clone(), a.clone());
        tasks.push(tokio::spawn(async move {
            let body = format!("m{i}");
            let d = Digest::sha256_of(body.as_bytes());
            meta.record_blob(&a, &d, 1).await.unwrap();
            meta.put_manifest(&manifest(&a, body.as_bytes(), vec![], Some("same")))
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(db.meta.tags(&a, None, 10).await.unwrap(), vec!["same"]);
}

async fn identities_round_trip(db: Db) {
    use wharf_meta::{
        AccountKind, AuditOutcome, AuditRecord, GrantOrigin, GrantRecord, GrantSubjectKind,
        TokenRecord,
    };
    let m = &db.meta;
    assert!(!m.has_admin().await.unwrap());
    assert!(m
        .create_account("root", AccountKind::User, Some("$argon2id$x"), true)
        .await
        .unwrap());
    assert!(
        !m.create_account("root", AccountKind::User, None, false)
            .await
            .unwrap(),
        "names are unique"
    );
    assert!(m
        .create_account("ci", AccountKind::Robot, None, false)
        .await
        .unwrap());
    assert!(m.has_admin().await.unwrap());
    assert!(m.set_password("root", "$argon2id$y").await.unwrap());
    assert!(!m.set_password("nobody", "h").await.unwrap());
    assert_eq!(
        m.account("root")
            .await
            .unwrap()
            .unwrap()
            .password_hash
            .as_deref(),
        Some("$argon2id$y")
    );
    assert!(m.create_team("ops").await.unwrap());
    assert!(m.set_membership("ops", "ci", true).await.unwrap());
    assert!(!m.set_membership("ops", "ghost", true).await.unwrap());
    assert_eq!(m.teams_of("ci").await.unwrap(), vec!["ops"]);
    let grant = |id: &str, origin: GrantOrigin| GrantRecord {
        id: id.into(),
        subject_kind: GrantSubjectKind::Team,
        subject_name: "ops".into(),
        pattern: "team/**".into(),
        actions: "pull,push".into(),
        origin,
    };
    m.add_grant(&grant("g-api", GrantOrigin::Api))
        .await
        .unwrap();
    m.replace_config_grants(&[
        grant("g-c1", GrantOrigin::Config),
        grant("g-c2", GrantOrigin::Config),
    ])
    .await
    .unwrap();
    m.replace_config_grants(&[grant("g-c3", GrantOrigin::Config)])
        .await
        .unwrap();
    let ids: Vec<String> = m
        .grants()
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.id)
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&"g-api".to_owned()) && ids.contains(&"g-c3".to_owned()));
    m.create_token(&TokenRecord {
        id: "t1".into(),
        account: "ci".into(),
        secret_sha256: "ab".into(),
        scopes: "[]".into(),
        description: "build".into(),
        created_at: 1,
        expires_at: Some(2),
        revoked_at: None,
    })
    .await
    .unwrap();
    assert_eq!(m.tokens(Some("ci")).await.unwrap().len(), 1);
    assert!(m.revoke_token("t1").await.unwrap());
    assert!(!m.revoke_token("t1").await.unwrap());
    assert!(m.token("t1").await.unwrap().unwrap().revoked_at.is_some());
    // Deleting the team removes its grants; deleting the account its tokens and memberships.
    assert!(m.delete_team("ops").await.unwrap());
    assert_eq!(m.grants().await.unwrap().len(), 0);
    assert!(m.delete_account("ci").await.unwrap());
    assert!(m.tokens(None).await.unwrap().is_empty());
    m.rotate_signing_key("k1", "aa").await.unwrap();
    m.rotate_signing_key("k2", "bb").await.unwrap();
    let keys = m.signing_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys.iter().filter(|k| k.retired_at.is_none()).count(), 1);
    let rec = AuditRecord {
        at: 5,
        account: Some("root".into()),
        remote: Some("127.0.0.1".into()),
        action: "push".into(),
        resource: "team/app:v1".into(),
        outcome: AuditOutcome::Ok,
    };
    m.audit("a1", &rec).await.unwrap();
    assert_eq!(m.audit_log(10).await.unwrap(), vec![rec]);
}

fn tree(s: &str) -> wharf_core::TreePath {
    wharf_core::TreePath::new(s).unwrap()
}

/// Stores `body` as a blob the way a format crate does: claim, (place bytes),
/// record the entry, commit — one transaction.
async fn put_entry(meta: &Meta, id: &wharf_meta::SnapshotId, path: &str, body: &[u8]) -> Digest {
    let d = Digest::sha256_of(body);
    let mut claim = meta.claim_blob(&d, body.len() as u64).await.unwrap();
    claim
        .put_snapshot_entry(id, &tree(path), body.len() as u64, 1_700_000_000)
        .await
        .unwrap();
    claim.commit().await.unwrap();
    d
}

/// A snapshot is staged, filled, published in one step, copied for the next
/// version, and retired; a retired one is served for what the published one
/// lacks only within the grace period; its blobs are held until it is deleted.
async fn snapshots_publish_atomically_and_hold_their_blobs(db: Db) {
    use wharf_core::RepositoryKind;
    use wharf_meta::{DirChild, ExistingEntry, MetaError, SnapshotBase, SnapshotState};
    let r = repo("os/fedora");
    let first = db
        .meta
        .create_snapshot(
            &r,
            RepositoryKind::Ostree,
            &SnapshotBase::Published,
            "sync 1",
        )
        .await
        .unwrap();
    assert_eq!((first.number, first.state), (1, SnapshotState::Staged));
    let old_summary = put_entry(&db.meta, &first.id, "summary", b"summary v1").await;
    let object = put_entry(&db.meta, &first.id, "objects/ab/cd.commit", b"commit 1").await;
    put_entry(&db.meta, &first.id, "refs/heads/stable", b"abcd").await;
    // Staged: nothing is served yet.
    let now = wharf_meta::unix_now();
    assert!(db
        .meta
        .serve_snapshot_entry(&r, &tree("summary"), now - 60)
        .await
        .unwrap()
        .is_none());
    assert_eq!(db.meta.publish_snapshot(&first.id).await.unwrap(), None);
    let served = db
        .meta
        .serve_snapshot_entry(&r, &tree("summary"), now - 60)
        .await
        .unwrap()
        .unwrap();
    assert!(served.current);
    assert_eq!(served.entry.blob, old_summary);
    // A published snapshot never changes.
    let err = db
        .meta
        .remove_snapshot_entries(&first.id, &[tree("summary")])
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::SnapshotNotStaged { .. }), "{err}");
    // The next version starts as a copy: only what changed is written.
    let second = db
        .meta
        .create_snapshot(
            &r,
            RepositoryKind::Ostree,
            &SnapshotBase::Published,
            "sync 2",
        )
        .await
        .unwrap();
    assert_eq!(second.number, 2);
    assert_eq!(db.meta.snapshot_totals(&second.id).await.unwrap().0, 3);
    let new_summary = put_entry(&db.meta, &second.id, "summary", b"summary v2").await;
    assert_eq!(
        db.meta
            .remove_snapshot_entries(&second.id, &[tree("objects/ab/cd.commit")])
            .await
            .unwrap(),
        1
    );
    // Reusing stored bytes: one path is recorded, an unknown blob is reported back.
    let unknown = Digest::sha256_of(b"never stored");
    let missing = db
        .meta
        .put_existing_snapshot_entries(
            &second.id,
            &[
                ExistingEntry {
                    path: tree("objects/ab/cd.dirtree"),
                    blob: object.clone(),
                    modified_at: 1,
                },
                ExistingEntry {
                    path: tree("objects/ef/gh.filez"),
                    blob: unknown.clone(),
                    modified_at: 1,
                },
            ],
        )
        .await
        .unwrap();
    assert_eq!(missing, vec![unknown]);
    assert_eq!(
        db.meta.publish_snapshot(&second.id).await.unwrap(),
        Some(first.id.clone())
    );
    let records = db.meta.snapshots(&r).await.unwrap();
    assert_eq!(
        records
            .iter()
            .map(|s| (s.number, s.state))
            .collect::<Vec<_>>(),
        vec![(2, SnapshotState::Published), (1, SnapshotState::Retired)]
    );
    // The new summary is served; the object only the old one had is served
    // within the grace period, and not after it.
    let now = wharf_meta::unix_now();
    let served = db
        .meta
        .serve_snapshot_entry(&r, &tree("summary"), now - 60)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(served.entry.blob, new_summary);
    let old = db
        .meta
        .serve_snapshot_entry(&r, &tree("objects/ab/cd.commit"), now - 60)
        .await
        .unwrap()
        .unwrap();
    assert!(!old.current);
    assert_eq!(old.snapshot, first.id);
    assert!(db
        .meta
        .serve_snapshot_entry(&r, &tree("objects/ab/cd.commit"), now + 10)
        .await
        .unwrap()
        .is_none());
    // Listings: one level at a time, directories once each.
    let top = db
        .meta
        .snapshot_children(&second.id, None, 100)
        .await
        .unwrap();
    let names: Vec<String> = top
        .iter()
        .map(|c| match c {
            DirChild::File(e) => e.path.to_string(),
            DirChild::Dir(d) => format!("{d}/"),
        })
        .collect();
    assert_eq!(names, vec!["objects/", "refs/", "summary"]);
    let objects = db
        .meta
        .snapshot_children(&second.id, Some(&tree("objects")), 100)
        .await
        .unwrap();
    assert_eq!(objects, vec![DirChild::Dir(tree("objects/ab"))]);
    let all = db
        .meta
        .snapshot_entries(&second.id, None, None, 2)
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    let rest = db
        .meta
        .snapshot_entries(&second.id, None, Some(&all[1].path), 10)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].path.as_str(), "summary");
    // The old summary is held by the retired snapshot, then released by its deletion.
    let later = wharf_meta::unix_now() + 10;
    assert_eq!(
        db.meta
            .mark_for_deletion(&old_summary, later, false)
            .await
            .unwrap(),
        SweepOutcome::Kept
    );
    assert!(matches!(
        db.meta.delete_snapshot(&second.id).await.unwrap_err(),
        MetaError::SnapshotPublished(_)
    ));
    assert!(db
        .meta
        .prune_snapshots(&r, 1, later)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        db.meta.prune_snapshots(&r, 0, later).await.unwrap(),
        vec![first.id.clone()]
    );
    assert!(matches!(
        db.meta
            .mark_for_deletion(&old_summary, later, false)
            .await
            .unwrap(),
        SweepOutcome::Marked(_)
    ));
    // Still referenced by the published snapshot (as the dirtree path).
    assert_eq!(
        db.meta
            .mark_for_deletion(&object, later, false)
            .await
            .unwrap(),
        SweepOutcome::Kept
    );
    // Rollback is publishing an older snapshot; a name of another kind is refused.
    let third = db
        .meta
        .create_snapshot(&r, RepositoryKind::Ostree, &SnapshotBase::Empty, "empty")
        .await
        .unwrap();
    db.meta.publish_snapshot(&third.id).await.unwrap();
    db.meta.publish_snapshot(&second.id).await.unwrap();
    assert_eq!(
        db.meta.published_snapshot(&r).await.unwrap().unwrap().id,
        second.id
    );
    assert!(matches!(
        db.meta
            .create_snapshot(&r, RepositoryKind::Rpm, &SnapshotBase::Empty, "")
            .await
            .unwrap_err(),
        MetaError::WrongKind { .. }
    ));
}

/// Recording stored blobs into a snapshot races a zero-grace collector: every
/// recorded entry's blob stays live, and a blob the collector took first is
/// reported missing rather than recorded.
async fn snapshot_entries_never_name_a_collected_blob(db: Db) {
    use wharf_core::RepositoryKind;
    use wharf_meta::{ExistingEntry, SnapshotBase};
    let r = repo("files/race");
    let staged = db
        .meta
        .create_snapshot(&r, RepositoryKind::Files, &SnapshotBase::Empty, "race")
        .await
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let (meta, stop) = (db.meta.clone(), stop.clone());
        tokio::spawn(async move {
            let mut deleted = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for i in 0..20u32 {
                    let d = Digest::sha256_of(format!("blob{i}").as_bytes());
                    let cutoff = wharf_meta::unix_now() + 1;
                    if let SweepOutcome::Marked(mark) =
                        meta.mark_for_deletion(&d, cutoff, false).await.unwrap()
                    {
                        deleted += 1;
                        meta.finish_deletion(&mark).await.unwrap();
                    }
                }
                tokio::task::yield_now().await;
            }
            deleted
        })
    };
    let (mut recorded, mut refused) = (0u32, 0u32);
    for round in 0..300u32 {
        let i = round % 20;
        let d = Digest::sha256_of(format!("blob{i}").as_bytes());
        // Stored by someone else, unreferenced: fair game for the collector.
        db.meta
            .claim_blob(&d, 5)
            .await
            .unwrap()
            .commit()
            .await
            .unwrap();
        let path = tree(&format!("f/{round}"));
        let missing = db
            .meta
            .put_existing_snapshot_entries(
                &staged.id,
                &[ExistingEntry {
                    path: path.clone(),
                    blob: d.clone(),
                    modified_at: 0,
                }],
            )
            .await
            .unwrap();
        if missing.is_empty() {
            recorded += 1;
            assert!(
                db.meta.blob_is_live(&d).await.unwrap(),
                "a recorded entry's blob was collected"
            );
            // Drop it again so the collector has work next round.
            db.meta
                .remove_snapshot_entries(&staged.id, &[path])
                .await
                .unwrap();
        } else {
            refused += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let deleted = collector.await.unwrap();
    assert!(recorded > 0, "nothing was ever recorded");
    assert!(
        deleted > 0,
        "the collector never deleted anything: the race was not exercised ({refused} refused)"
    );
}

/// Pull times keep the latest of every batch, whatever order batches arrive in.
async fn pull_times_keep_the_latest(db: Db) {
    let (r, d) = (repo("team/app"), Digest::sha256_of(b"m"));
    assert_eq!(db.meta.last_pulled(&r, &d).await.unwrap(), None);
    db.meta
        .record_pulls(&[(r.clone(), d.clone(), 200)])
        .await
        .unwrap();
    // A late batch from another replica with an older time changes nothing.
    db.meta
        .record_pulls(&[(r.clone(), d.clone(), 100)])
        .await
        .unwrap();
    assert_eq!(db.meta.last_pulled(&r, &d).await.unwrap(), Some(200));
    db.meta
        .record_pulls(&[(r.clone(), d.clone(), 300)])
        .await
        .unwrap();
    assert_eq!(db.meta.last_pulled(&r, &d).await.unwrap(), Some(300));
    assert_eq!(db.meta.last_pulled(&repo("other"), &d).await.unwrap(), None);
}

async fn put(db: &Db, m: &NewManifest) {
    let mut claim = db.meta.claim_blob(&m.digest, m.size).await.unwrap();
    assert_eq!(
        claim.put_manifest(m).await.unwrap(),
        PutManifestOutcome::Stored
    );
    claim.commit().await.unwrap();
}

/// Retention's deletions go only while the tag or manifest is exactly as the
/// plan saw it: a moved, re-pushed or new tag, or a new index listing the
/// manifest, keeps it — a re-push to the same digest in the same second too,
/// which a push time of one-second resolution cannot tell from the planned
/// push (before the push id, a plan whose clock had reached the next second,
/// such as another replica's, deleted that tag).
async fn retention_deletes_only_what_is_unchanged(db: Db) {
    let r = repo("team/app");
    let tag = |t: &str| Tag::parse(t).unwrap();
    let pushed = |t: &str| {
        let meta = db.meta.clone();
        let r = r.clone();
        let t = tag(t);
        async move {
            let all = meta.tag_pushes(&r).await.unwrap();
            all.into_iter().find(|p| p.tag == t)
        }
    };
    let m1 = manifest(&r, b"ret-1", vec![], Some("a"));
    let m2 = manifest(&r, b"ret-2", vec![], Some("b"));
    put(&db, &m1).await;
    put(&db, &m2).await;
    let planned = pushed("a").await.unwrap();
    assert_eq!(planned.digest, m1.digest);
    let id1 = planned.push_id;

    // A tag: wrong digest or another push: kept.
    let meta = &db.meta;
    assert!(!meta
        .delete_tag_if_unchanged(&r, &tag("a"), &m2.digest, id1)
        .await
        .unwrap());
    assert!(!meta
        .delete_tag_if_unchanged(&r, &tag("a"), &m1.digest, id1 ^ 1)
        .await
        .unwrap());
    // Re-pushed to the same manifest after the plan read it, within the same
    // second (retried until both pushes share one): kept.
    let (before, after) = loop {
        let before = pushed("a").await.unwrap();
        put(&db, &m1).await;
        let after = pushed("a").await.unwrap();
        if before.pushed_at == after.pushed_at {
            break (before, after);
        }
    };
    assert_eq!(after.digest, m1.digest);
    assert_ne!(
        before.push_id, after.push_id,
        "a re-push gets a new push id"
    );
    assert!(!meta
        .delete_tag_if_unchanged(&r, &tag("a"), &m1.digest, before.push_id)
        .await
        .unwrap());
    assert_eq!(pushed("a").await.unwrap(), after);
    // Moved to another manifest after the plan: kept.
    let mut moved = manifest(&r, b"ret-2", vec![], Some("a"));
    moved.tag = Some(tag("a"));
    put(&db, &moved).await;
    assert!(!meta
        .delete_tag_if_unchanged(&r, &tag("a"), &m1.digest, after.push_id)
        .await
        .unwrap());
    let now_a = pushed("a").await.unwrap();
    assert_eq!(now_a.digest, m2.digest);
    assert!(meta
        .delete_tag_if_unchanged(&r, &tag("a"), &m2.digest, now_a.push_id)
        .await
        .unwrap());
    assert!(pushed("a").await.is_none());

    // A manifest: m2 carries tag b; planned with b it goes, but not when a
    // tag the plan did not see (c) names it, nor when the plan missed b, nor
    // when b was re-pushed since.
    let id_b = pushed("b").await.unwrap().push_id;
    let mut c = manifest(&r, b"ret-2", vec![], Some("c"));
    c.tag = Some(tag("c"));
    put(&db, &c).await;
    let id_c = pushed("c").await.unwrap().push_id;
    assert!(!meta
        .delete_manifest_if_unchanged(&r, &m2.digest, &[(tag("b"), id_b)])
        .await
        .unwrap());
    assert!(!meta
        .delete_manifest_if_unchanged(&r, &m2.digest, &[])
        .await
        .unwrap());
    assert!(!meta
        .delete_manifest_if_unchanged(&r, &m2.digest, &[(tag("b"), id_b), (tag("c"), id_c ^ 1)])
        .await
        .unwrap());
    assert!(meta
        .manifest_by_digest(&r, &m2.digest)
        .await
        .unwrap()
        .is_some());

    // An untagged manifest an index lists stays until the index goes.
    let child = manifest(&r, b"ret-child", vec![], None);
    put(&db, &child).await;
    let index = manifest(
        &r,
        b"ret-index",
        vec![(child.digest.clone(), ReferenceKind::Manifest, child.size)],
        None,
    );
    put(&db, &index).await;
    assert!(!meta
        .delete_manifest_if_unchanged(&r, &child.digest, &[])
        .await
        .unwrap());
    assert!(meta
        .delete_manifest_if_unchanged(&r, &index.digest, &[])
        .await
        .unwrap());
    assert!(meta
        .delete_manifest_if_unchanged(&r, &child.digest, &[])
        .await
        .unwrap());
    assert!(meta
        .manifest_by_digest(&r, &child.digest)
        .await
        .unwrap()
        .is_none());

    // Unchanged since the plan: m2 goes with both its tags.
    assert!(meta
        .delete_manifest_if_unchanged(&r, &m2.digest, &[(tag("c"), id_c), (tag("b"), id_b)])
        .await
        .unwrap());
    assert!(meta
        .manifest_by_digest(&r, &m2.digest)
        .await
        .unwrap()
        .is_none());
    assert!(meta.tag_pushes(&r).await.unwrap().is_empty());
    // Already gone: nothing to do.
    assert!(!meta
        .delete_manifest_if_unchanged(&r, &m2.digest, &[])
        .await
        .unwrap());
}

/// A mirrored tag's validation time survives reconnecting, and the later time wins.
async fn tag_validations_persist_and_keep_the_latest(db: Db) {
    let (r, t) = (repo("quay.io/coreos/etcd"), Tag::parse("v3.1").unwrap());
    assert_eq!(db.meta.tag_validated_at(&r, &t).await.unwrap(), None);
    db.meta.record_tag_validation(&r, &t, 200).await.unwrap();
    db.meta.record_tag_validation(&r, &t, 100).await.unwrap();
    assert_eq!(db.meta.tag_validated_at(&r, &t).await.unwrap(), Some(200));
    let again = Meta::connect(&db.url).await.unwrap();
    assert_eq!(again.tag_validated_at(&r, &t).await.unwrap(), Some(200));
    again.record_tag_validation(&r, &t, 300).await.unwrap();
    assert_eq!(db.meta.tag_validated_at(&r, &t).await.unwrap(), Some(300));
    let other = Tag::parse("v3.2").unwrap();
    assert_eq!(db.meta.tag_validated_at(&r, &other).await.unwrap(), None);
}

/// A group commit's multi-row claims and records: a digest given twice gets
/// one answer, a blob being deleted is not claimed (nothing written for it),
/// and an entry replaced within a snapshot releases the blob no entry names.
async fn entry_batches_claim_and_record_many(db: Db) {
    use wharf_core::RepositoryKind;
    use wharf_meta::{SnapshotBase, SnapshotEntry};
    let r = repo("files/batch");
    let staged = db
        .meta
        .create_snapshot(&r, RepositoryKind::Files, &SnapshotBase::Empty, "batch")
        .await
        .unwrap();
    let (d1, d2, d3) = (
        Digest::sha256_of(b"one"),
        Digest::sha256_of(b"deleted"),
        Digest::sha256_of(b"three"),
    );
    db.meta
        .claim_blob(&d2, 7)
        .await
        .unwrap()
        .commit()
        .await
        .unwrap();
    let SweepOutcome::Marked(mark) = db
        .meta
        .mark_for_deletion(&d2, wharf_meta::unix_now() + 10, false)
        .await
        .unwrap()
    else {
        panic!("an unreferenced blob is marked");
    };
    let entry = |p: &str, blob: &Digest| SnapshotEntry {
        path: tree(p),
        blob: blob.clone(),
        size: 3,
        modified_at: 1,
    };
    let mut batch = db.meta.begin_entry_batch().await.unwrap();
    let claimed = batch
        .claim_many(&[(&d1, 3), (&d1, 3), (&d2, 7)])
        .await
        .unwrap();
    assert_eq!(claimed, vec![true, true, false]);
    let (a, b) = (entry("a", &d1), entry("b", &d1));
    batch.record_many(&staged.id, &[&a, &b]).await.unwrap();
    batch.commit().await.unwrap();
    db.meta.finish_deletion(&mark).await.unwrap();
    let got = db
        .meta
        .snapshot_entry(&staged.id, &tree("b"))
        .await
        .unwrap();
    assert_eq!(got.map(|e| e.blob), Some(d1.clone()));
    let cutoff = wharf_meta::unix_now() + 10;
    assert!(matches!(
        db.meta.mark_for_deletion(&d1, cutoff, false).await.unwrap(),
        SweepOutcome::Kept
    ));
    // "a" now names d3; "b" still names d1, which stays referenced.
    let mut batch = db.meta.begin_entry_batch().await.unwrap();
    assert_eq!(batch.claim_many(&[(&d3, 3)]).await.unwrap(), vec![true]);
    let a3 = entry("a", &d3);
    batch.record_many(&staged.id, &[&a3]).await.unwrap();
    batch.commit().await.unwrap();
    assert!(matches!(
        db.meta.mark_for_deletion(&d1, cutoff, false).await.unwrap(),
        SweepOutcome::Kept
    ));
    // Then "b" too, given twice in one call: the last entry is kept, d1 is released.
    let mut batch = db.meta.begin_entry_batch().await.unwrap();
    batch.claim_many(&[(&d3, 3)]).await.unwrap();
    let (b1, b3) = (entry("b", &d1), entry("b", &d3));
    batch.record_many(&staged.id, &[&b1, &b3]).await.unwrap();
    batch.commit().await.unwrap();
    let got = db
        .meta
        .snapshot_entry(&staged.id, &tree("b"))
        .await
        .unwrap();
    assert_eq!(got.map(|e| e.blob), Some(d3.clone()));
    assert!(matches!(
        db.meta.mark_for_deletion(&d1, cutoff, false).await.unwrap(),
        SweepOutcome::Marked(_)
    ));
    assert!(matches!(
        db.meta.mark_for_deletion(&d3, cutoff, false).await.unwrap(),
        SweepOutcome::Kept
    ));
}

macro_rules! suite {
    ($backend:ident) => {
        mod $backend {
            #[tokio::test]
            async fn migrations_are_idempotent() {
                super::migrations_are_idempotent(super::$backend().await).await
            }
            #[tokio::test]
            async fn manifest_requires_linked_blobs() {
                super::manifest_requires_linked_blobs(super::$backend().await).await
            }
            #[tokio::test]
            async fn tags_sort_bytewise_and_paginate() {
                super::tags_sort_bytewise_and_paginate(super::$backend().await).await
            }
            #[tokio::test]
            async fn extra_tags_commit_with_their_manifest() {
                super::extra_tags_commit_with_their_manifest(super::$backend().await).await
            }
            #[tokio::test]
            async fn referrers_filter_by_artifact_type() {
                super::referrers_filter_by_artifact_type(super::$backend().await).await
            }
            #[tokio::test]
            async fn sweep_spares_referenced_and_young() {
                super::sweep_spares_referenced_and_young(super::$backend().await).await
            }
            #[tokio::test]
            async fn claim_waits_for_deletion() {
                super::claim_waits_for_deletion(super::$backend().await).await
            }
            #[tokio::test]
            async fn abandoned_deletion_is_taken_over() {
                super::abandoned_deletion_is_taken_over(super::$backend().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn collector_never_loses_an_acknowledged_blob() {
                super::collector_never_loses_an_acknowledged_blob(super::$backend().await).await
            }
            #[tokio::test]
            async fn snapshots_publish_atomically_and_hold_their_blobs() {
                super::snapshots_publish_atomically_and_hold_their_blobs(super::$backend().await)
                    .await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn snapshot_entries_never_name_a_collected_blob() {
                super::snapshot_entries_never_name_a_collected_blob(super::$backend().await).await
            }
            #[tokio::test]
            async fn retention_deletes_only_what_is_unchanged() {
                super::retention_deletes_only_what_is_unchanged(super::$backend().await).await
            }
            #[tokio::test]
            async fn tag_validations_persist_and_keep_the_latest() {
                super::tag_validations_persist_and_keep_the_latest(super::$backend().await).await
            }
            #[tokio::test]
            async fn pull_times_keep_the_latest() {
                super::pull_times_keep_the_latest(super::$backend().await).await
            }
            #[tokio::test]
            async fn upgrade_from_previous_release() {
                super::upgrade_from_previous_release(super::$backend().await).await
            }
            #[tokio::test]
            async fn sparse_indexes_only_in_mirrored_repositories() {
                super::sparse_indexes_only_in_mirrored_repositories(super::$backend().await).await
            }
            #[tokio::test]
            async fn repository_kinds_share_one_namespace() {
                super::repository_kinds_share_one_namespace(super::$backend().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn job_queue_one_winner_per_job() {
                super::job_queue_one_winner_per_job(super::$backend().await).await
            }
            #[tokio::test]
            async fn job_queue_lease_expiry_and_retries() {
                super::job_queue_lease_expiry_and_retries(super::$backend().await).await
            }
            #[tokio::test]
            async fn job_queue_cancellation() {
                super::job_queue_cancellation(super::$backend().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn scheduler_lease_and_due_runs() {
                super::scheduler_lease_and_due_runs(super::$backend().await).await
            }
            #[tokio::test]
            async fn identities_round_trip() {
                super::identities_round_trip(super::$backend().await).await
            }
            #[tokio::test]
            async fn uploads_expire() {
                super::uploads_expire(super::$backend().await).await
            }
            #[tokio::test]
            async fn entry_batches_claim_and_record_many() {
                super::entry_batches_claim_and_record_many(super::$backend().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_writers() {
                super::concurrent_writers(super::$backend().await).await
            }
        }
    };
}

suite!(sqlite);
suite!(postgres);
