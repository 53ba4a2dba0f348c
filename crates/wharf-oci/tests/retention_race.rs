//! Retention racing pushes: a run plans each repository, then deletes; pushes
//! landing between the two must never be lost. Pushers keep moving tags to new
//! manifests, pushing tags again to the manifest they already name, and putting
//! fresh tags on manifests a run may have planned to delete, while a loop
//! applies a policy that lets every tag go. At the end a tag is missing only if
//! a run reported deleting exactly the state its last push left (that tag
//! naming that digest): a moved tag deleted under its old digest, or a fresh
//! tag deleted with "its" manifest unreported, is a wrong deletion, and there
//! must be none.
//!
//! Referrers racing the deletion of their subject: retention deletes a
//! subject's referrers with it (as zot and distribution do); a referrer pushed
//! while or after its subject goes is an ordinary referrer with a dangling
//! subject, as the spec allows, and later runs treat it as an untagged
//! manifest. Whatever the interleaving, every manifest row left — referrers
//! included — still holds its own bytes and its config against garbage
//! collection, and every referrer a subject lists is such a row.
//!
//! Each race runs on SQLite and on PostgreSQL (`WHARF_TEST_POSTGRES_URL`, set by
//! the project's test command; a missing URL fails the PostgreSQL half loudly).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wharf_core::{Digest, Reference, RepoName, RepoPattern, Tag};
use wharf_meta::Meta;
use wharf_oci::{Registry, RegistryLimits, RepositoryPlan, RetentionPolicy, RetentionRule};

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";

fn manifest(config: &Digest, config_size: usize, n: u64) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": CONFIG, "digest": config.to_string(), "size": config_size},
            "layers": [],
            "annotations": {"push": n.to_string()},
        })
        .to_string(),
    )
}

/// Small xorshift, so the test needs no RNG crate and a failure replays by seed.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// A registry over memory blobs and the metadata database at `url`.
async fn registry_on(url: &str) -> (Registry, Meta) {
    let meta = Meta::connect(url).await.unwrap();
    let registry = Registry::new(
        Arc::new(wharf_blob::memory::open()),
        meta.clone(),
        RegistryLimits {
            max_manifest_bytes: 4 * 1024 * 1024,
            manifest_cache_bytes: 1024 * 1024,
        },
    );
    (registry, meta)
}

/// A fresh SQLite database (kept while the directory lives).
async fn sqlite() -> (Registry, Meta, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("meta.db").display());
    let (registry, meta) = registry_on(&url).await;
    (registry, meta, dir)
}

/// A fresh database on the test PostgreSQL server.
async fn postgres() -> (Registry, Meta) {
    let base = std::env::var("WHARF_TEST_POSTGRES_URL").expect(
        "WHARF_TEST_POSTGRES_URL is not set: run the suite with scripts/test.sh, which starts PostgreSQL",
    );
    let admin = Meta::connect(&base)
        .await
        .expect("connect to the test PostgreSQL");
    let name = format!("wharf_ret_{}", uuid::Uuid::new_v4().simple());
    admin
        .execute_admin(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    admin.close().await;
    let (prefix, _) = base.rsplit_once('/').unwrap();
    registry_on(&format!("{prefix}/{name}")).await
}

/// A policy that lets every tag go the moment a plan sees it (nothing matches
/// `keep_tags`), and every untagged manifest too (no grace).
fn keep_nothing() -> RetentionPolicy {
    RetentionPolicy {
        rules: vec![RetentionRule {
            repositories: RepoPattern::parse("race/**").unwrap(),
            selects_tags: true,
            keep_newest: 0,
            keep_newest_matching: None,
            keep_tags: Some(regex::Regex::new("^keep-nothing$").unwrap()),
            protect: None,
            keep_pushed_within_secs: None,
            keep_pulled_within_secs: None,
            delete_untagged: true,
        }],
        untagged_grace_secs: 0,
    }
}

/// `now` well ahead, as if every push were long ago: only the conditional
/// deletes stand between a racing push and its loss.
const FAR_FUTURE: i64 = 4_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_racing_retention_never_lose_a_tag() {
    let (registry, _meta, _dir) = sqlite().await;
    tag_race(registry).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_racing_retention_never_lose_a_tag_on_postgres() {
    let (registry, _meta) = postgres().await;
    tag_race(registry).await;
}

async fn tag_race(registry: Registry) {
    let repo = RepoName::parse("race/app").unwrap();
    let config = Bytes::from_static(b"{\"architecture\":\"amd64\",\"os\":\"linux\"}");
    let config_digest = Digest::sha256_of(&config);
    let body: wharf_blob::ByteStream = Box::pin(futures_util::stream::iter([Ok(config.clone())]));
    registry
        .put_blob(&repo, &config_digest, body)
        .await
        .unwrap();

    let policy = keep_nothing();

    // Tag → digest of its last push, written after the push returned.
    let last: Arc<Mutex<HashMap<Tag, Digest>>> = Arc::default();
    // Tag → digests retention reported deleting it with.
    let deleted: Arc<Mutex<HashMap<Tag, Vec<Digest>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let run_for = Duration::from_secs(15);

    let mut pushers = Vec::new();
    for seed in 1..=3u64 {
        let (registry, repo, last, stop, counter) = (
            registry.clone(),
            repo.clone(),
            last.clone(),
            stop.clone(),
            counter.clone(),
        );
        let config_digest = config_digest.clone();
        let config_len = config.len();
        pushers.push(tokio::spawn(async move {
            let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let known: Vec<(Tag, Digest)> = {
                    let last = last.lock().unwrap();
                    last.iter().map(|(t, d)| (t.clone(), d.clone())).collect()
                };
                let dice = next(&mut rng) % 4;
                if dice == 3 && !known.is_empty() {
                    // The same tag pushed again to the manifest it names,
                    // most often within the second of its last push.
                    let (tag, digest) = &known[(next(&mut rng) % known.len() as u64) as usize];
                    let content = match registry
                        .get_manifest(&repo, &Reference::Digest(digest.clone()))
                        .await
                    {
                        Ok(c) => c,
                        Err(_) => continue, // Deleted meanwhile.
                    };
                    let pushed = registry
                        .put_manifest(
                            &repo,
                            &Reference::Tag(tag.clone()),
                            &[],
                            Some(MANIFEST),
                            content.bytes,
                        )
                        .await
                        .unwrap();
                    last.lock().unwrap().insert(tag.clone(), pushed.digest);
                } else if dice < 2 || known.is_empty() {
                    // Move one of a few long-lived tags to a new manifest.
                    let tag = Tag::parse(&format!("t{}", next(&mut rng) % 40)).unwrap();
                    let bytes = manifest(&config_digest, config_len, n);
                    let pushed = registry
                        .put_manifest(
                            &repo,
                            &Reference::Tag(tag.clone()),
                            &[],
                            Some(MANIFEST),
                            bytes,
                        )
                        .await
                        .unwrap();
                    last.lock().unwrap().insert(tag, pushed.digest);
                } else {
                    // A fresh tag on a manifest another tag names (which a run
                    // may be about to delete), by digest with `?tag=`.
                    let (_, digest) = &known[(next(&mut rng) % known.len() as u64) as usize];
                    let content = match registry
                        .get_manifest(&repo, &Reference::Digest(digest.clone()))
                        .await
                    {
                        Ok(c) => c,
                        Err(_) => continue, // Deleted meanwhile: nothing to tag.
                    };
                    let tag = Tag::parse(&format!("n{n}")).unwrap();
                    let pushed = registry
                        .put_manifest(
                            &repo,
                            &Reference::Digest(digest.clone()),
                            std::slice::from_ref(&tag),
                            Some(MANIFEST),
                            content.bytes,
                        )
                        .await
                        .unwrap();
                    last.lock().unwrap().insert(tag, pushed.digest);
                }
                tokio::time::sleep(Duration::from_millis(next(&mut rng) % 5)).await;
            }
        }));
    }

    let mut rounds = 0u64;
    let mut deletions = 0usize;
    // At least twenty runs and fifty deletions, however slow the database is
    // under load (on PostgreSQL beside a busy build a run took a second).
    while started.elapsed() < run_for
        || ((rounds < 20 || deletions < 50) && started.elapsed() < run_for * 8)
    {
        let report = |_: &RepoName, plan: &RepositoryPlan| {
            let mut deleted = deleted.lock().unwrap();
            for (tag, digest) in &plan.tags {
                deleted.entry(tag.clone()).or_default().push(digest.clone());
            }
            for (digest, tags) in &plan.manifests {
                for tag in tags {
                    deleted.entry(tag.clone()).or_default().push(digest.clone());
                }
            }
        };
        let done = registry
            .apply_retention(&policy, FAR_FUTURE, &report, &|| false)
            .await
            .unwrap();
        deletions += done.tag_count();
        rounds += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for p in pushers {
        p.await.unwrap();
    }

    let last = last.lock().unwrap().clone();
    let deleted = deleted.lock().unwrap().clone();
    let mut wrong = Vec::new();
    for (tag, digest) in last.iter() {
        let present = registry
            .get_manifest(&repo, &Reference::Tag(tag.clone()))
            .await
            .ok()
            .map(|c| c.digest);
        match present {
            Some(d) if &d == digest => {}
            Some(d) => wrong.push(format!("{tag} names {d}, its last push was {digest}")),
            None if deleted.get(tag).is_some_and(|ds| ds.last() == Some(digest)) => {}
            None => wrong.push(format!(
                "{tag} (last pushed to {digest}) is gone; retention reported {:?}",
                deleted.get(tag)
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrongly deleted tags in {rounds} rounds: {wrong:#?}",
        wrong.len()
    );
    // The race was real: runs did delete, over many rounds.
    assert!(rounds >= 20, "only {rounds} rounds");
    assert!(
        deletions >= 50,
        "only {deletions} deletions in {rounds} rounds"
    );
    eprintln!(
        "{rounds} rounds, {deletions} tags deleted, {} pushes, 0 wrongly deleted",
        counter.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn referrers_racing_retention_of_their_subject_stay_whole() {
    let (registry, meta, _dir) = sqlite().await;
    referrer_race(registry, meta).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn referrers_racing_retention_of_their_subject_stay_whole_on_postgres() {
    let (registry, meta) = postgres().await;
    referrer_race(registry, meta).await;
}

async fn put_blob(registry: &Registry, repo: &RepoName, bytes: Bytes) -> Digest {
    let digest = Digest::sha256_of(&bytes);
    let body: wharf_blob::ByteStream = Box::pin(futures_util::stream::iter([Ok(bytes)]));
    registry.put_blob(repo, &digest, body).await.unwrap();
    digest
}

/// A referrer of `subject` (an OCI 1.1 artifact) with a config of its own, so
/// that what holds its config is this referrer alone.
fn referrer(config: &Digest, config_size: usize, subject: &Digest, subject_size: usize) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "artifactType": "application/vnd.example.sbom",
            "config": {"mediaType": "application/vnd.example.sbom.config", "digest": config.to_string(), "size": config_size},
            "layers": [],
            "subject": {"mediaType": MANIFEST, "digest": subject.to_string(), "size": subject_size},
        })
        .to_string(),
    )
}

async fn referrer_race(registry: Registry, meta: Meta) {
    let repo = RepoName::parse("race/signed").unwrap();
    let base = Bytes::from_static(b"{\"architecture\":\"amd64\",\"os\":\"linux\"}");
    let base_digest = put_blob(&registry, &repo, base.clone()).await;
    let policy = keep_nothing();

    // Subjects pushed so far (digest, size), and every referrer pushed with
    // the digest of its own config.
    let subjects: Arc<Mutex<Vec<(Digest, usize)>>> = Arc::default();
    let referrers: Arc<Mutex<Vec<(Digest, Digest)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let run_for = Duration::from_secs(10);
    let started = Instant::now();

    let mut pushers = Vec::new();
    for seed in 1..=3u64 {
        let (registry, repo, subjects, referrers, stop, counter) = (
            registry.clone(),
            repo.clone(),
            subjects.clone(),
            referrers.clone(),
            stop.clone(),
            counter.clone(),
        );
        let base_digest = base_digest.clone();
        let base_len = base.len();
        pushers.push(tokio::spawn(async move {
            let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let known = subjects.lock().unwrap().clone();
                if next(&mut rng).is_multiple_of(3) || known.is_empty() {
                    // A new untagged subject, doomed as soon as a plan sees it.
                    let bytes = manifest(&base_digest, base_len, n);
                    let digest = Digest::sha256_of(&bytes);
                    let size = bytes.len();
                    registry
                        .put_manifest(
                            &repo,
                            &Reference::Digest(digest.clone()),
                            &[],
                            Some(MANIFEST),
                            bytes,
                        )
                        .await
                        .unwrap();
                    subjects.lock().unwrap().push((digest, size));
                } else {
                    // A referrer of a recent subject, which a run may be
                    // deleting right now (or has deleted: then it dangles).
                    let recent = known.len().min(8);
                    let pick = known.len() - 1 - (next(&mut rng) % recent as u64) as usize;
                    let (subject, subject_size) = &known[pick];
                    let config = Bytes::from(format!("{{\"referrer\":{n}}}"));
                    let config_len = config.len();
                    let config_digest = put_blob(&registry, &repo, config).await;
                    let bytes = referrer(&config_digest, config_len, subject, *subject_size);
                    let digest = Digest::sha256_of(&bytes);
                    registry
                        .put_manifest(
                            &repo,
                            &Reference::Digest(digest.clone()),
                            &[],
                            Some(MANIFEST),
                            bytes,
                        )
                        .await
                        .unwrap();
                    referrers.lock().unwrap().push((digest, config_digest));
                }
                tokio::time::sleep(Duration::from_millis(next(&mut rng) % 4)).await;
            }
        }));
    }

    let mut rounds = 0u64;
    let mut deleted_manifests = 0usize;
    let mut with_subject = 0usize;
    // At least five runs, however slow the database is under load (a run and
    // its check read every row, and the pushers keep adding: on PostgreSQL
    // beside a busy build, eight runs took two minutes). That the race was
    // real is what the referrer count below asserts.
    while started.elapsed() < run_for || (rounds < 5 && started.elapsed() < run_for * 12) {
        let plans: Mutex<Vec<RepositoryPlan>> = Mutex::default();
        let report = |_: &RepoName, plan: &RepositoryPlan| {
            plans.lock().unwrap().push(plan.clone());
        };
        registry
            .apply_retention(&policy, FAR_FUTURE, &report, &|| false)
            .await
            .unwrap();
        // Referrers deleted in the same run as their subject: the policy at work.
        let gone: Vec<Digest> = plans
            .lock()
            .unwrap()
            .iter()
            .flat_map(|p| p.manifests.iter().map(|(d, _)| d.clone()))
            .collect();
        let known_referrers = referrers.lock().unwrap().clone();
        deleted_manifests += gone.len();
        with_subject += known_referrers
            .iter()
            .filter(|(r, _)| gone.contains(r))
            .count();
        whole(&registry, &meta, &repo, &subjects, &referrers).await;
        rounds += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for p in pushers {
        p.await.unwrap();
    }
    whole(&registry, &meta, &repo, &subjects, &referrers).await;

    // Quiet now: one run takes every subject with its referrers, and every
    // dangling referrer as the untagged manifest it is.
    registry
        .apply_retention(&policy, FAR_FUTURE, &|_, _| {}, &|| false)
        .await
        .unwrap();
    let left = meta.manifest_ages(&repo).await.unwrap();
    assert!(
        left.is_empty(),
        "{} manifests left after a quiet run",
        left.len()
    );
    // Copied out, so no lock is held across the awaits below.
    let subjects: Vec<_> = subjects.lock().unwrap().clone();
    for (subject, _) in subjects.iter() {
        assert!(meta
            .referrers(&repo, subject, None)
            .await
            .unwrap()
            .is_empty());
    }
    assert!(rounds >= 5, "only {rounds} rounds");
    assert!(
        with_subject >= 20,
        "only {with_subject} referrers deleted, {deleted_manifests} manifests in {rounds} rounds"
    );
    eprintln!(
        "{rounds} rounds, {deleted_manifests} manifests deleted ({with_subject} referrers), {} pushes, every row whole",
        counter.load(Ordering::Relaxed)
    );
}

/// Every manifest row of `repo` holds its own bytes, and a referrer its
/// config, against garbage collection; every referrer a subject lists is a
/// stored manifest. Pushers may run meanwhile (they only add); no run does.
async fn whole(
    registry: &Registry,
    meta: &Meta,
    repo: &RepoName,
    subjects: &Mutex<Vec<(Digest, usize)>>,
    referrers: &Mutex<Vec<(Digest, Digest)>>,
) {
    let rows: HashMap<Digest, Option<Digest>> = meta
        .manifest_ages(repo)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.digest, m.subject))
        .collect();
    for digest in rows.keys() {
        assert!(
            meta.blob_is_needed(digest).await.unwrap(),
            "manifest {digest} is stored but nothing holds its bytes"
        );
    }
    let known = referrers.lock().unwrap().clone();
    for (digest, config) in &known {
        if rows.contains_key(digest) {
            assert!(
                meta.blob_is_needed(config).await.unwrap(),
                "referrer {digest} is stored but garbage collection may take its config {config}"
            );
            registry
                .get_manifest(repo, &Reference::Digest(digest.clone()))
                .await
                .unwrap();
        }
    }
    let subjects = subjects.lock().unwrap().clone();
    for (subject, _) in &subjects {
        for r in meta.referrers(repo, subject, None).await.unwrap() {
            if let Some(named) = rows.get(&r.digest) {
                assert_eq!(
                    named.as_ref(),
                    Some(subject),
                    "{} has another subject",
                    r.digest
                );
                continue;
            }
            // Pushed since `rows` was read: stored and held all the same.
            registry
                .get_manifest(repo, &Reference::Digest(r.digest.clone()))
                .await
                .unwrap_or_else(|e| panic!("{subject} lists referrer {}: {e}", r.digest));
            assert!(meta.blob_is_needed(&r.digest).await.unwrap());
        }
    }
}
