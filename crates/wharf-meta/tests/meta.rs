//! The metadata conformance suite, run against SQLite and PostgreSQL alike.
//!
//! PostgreSQL comes from `WHARF_TEST_POSTGRES_URL`, which the project's test
//! command (`scripts/test.sh`) sets after starting a private server; each test
//! gets a database of its own. A missing URL fails the PostgreSQL half loudly.

use wharf_core::{Digest, RepoName, Tag};
use wharf_meta::{Meta, NewManifest, PutManifestOutcome, ReferenceKind, SweepOutcome};

struct Db {
    meta: Meta,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("meta.db").display());
    Db {
        meta: Meta::connect(&url).await.unwrap(),
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
    Db {
        meta: Meta::connect(&format!("{prefix}/{name}")).await.unwrap(),
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
    assert!(!db.meta.repository_exists(&repo("a")).await.unwrap());
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
        db.meta.repositories("oci", None, 10).await.unwrap(),
        vec!["a"]
    );
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
        db.meta.sweep_blob(&loose, now - 3600).await.unwrap(),
        SweepOutcome::Kept
    );
    // Past the grace period: the loose blob goes, the referenced one stays.
    assert_eq!(
        db.meta.sweep_blob(&loose, now + 10).await.unwrap(),
        SweepOutcome::Deleted
    );
    assert_eq!(
        db.meta.sweep_blob(&used, now + 10).await.unwrap(),
        SweepOutcome::Kept
    );
    assert_eq!(
        db.meta
            .sweep_blob(&Digest::sha256_of(b"x"), now)
            .await
            .unwrap(),
        SweepOutcome::Unknown
    );
    assert_eq!(db.meta.repo_blob_size(&a, &loose).await.unwrap(), None);
    assert_eq!(db.meta.known_blobs().await.unwrap().len(), 2); // `used` and the manifest itself
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
    use wharf_meta::{AuditRecord, GrantRecord, TokenRecord};
    let m = &db.meta;
    assert!(!m.has_admin().await.unwrap());
    assert!(m
        .create_account("root", "user", Some("$argon2id$x"), true)
        .await
        .unwrap());
    assert!(
        !m.create_account("root", "user", None, false).await.unwrap(),
        "names are unique"
    );
    assert!(m.create_account("ci", "robot", None, false).await.unwrap());
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
    let grant = |id: &str, origin: &str| GrantRecord {
        id: id.into(),
        subject_kind: "team".into(),
        subject_name: "ops".into(),
        pattern: "team/**".into(),
        actions: "pull,push".into(),
        origin: origin.into(),
    };
    m.add_grant(&grant("g-api", "api")).await.unwrap();
    m.replace_config_grants(&[grant("g-c1", "config"), grant("g-c2", "config")])
        .await
        .unwrap();
    m.replace_config_grants(&[grant("g-c3", "config")])
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
        outcome: "ok".into(),
    };
    m.audit("a1", &rec).await.unwrap();
    assert_eq!(m.audit_log(10).await.unwrap(), vec![rec]);
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
            async fn referrers_filter_by_artifact_type() {
                super::referrers_filter_by_artifact_type(super::$backend().await).await
            }
            #[tokio::test]
            async fn sweep_spares_referenced_and_young() {
                super::sweep_spares_referenced_and_young(super::$backend().await).await
            }
            #[tokio::test]
            async fn identities_round_trip() {
                super::identities_round_trip(super::$backend().await).await
            }
            #[tokio::test]
            async fn uploads_expire() {
                super::uploads_expire(super::$backend().await).await
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
