//! The object model against repositories made by the stock `ostree` CLI, and
//! mirroring one from a local path into a snapshot: every object ostree wrote
//! verifies, the summary reads back as normal form, and bad upstream input is
//! refused with nothing published.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use wharf_core::{RepoName, TreePath};
use wharf_ostree::object::{verify_filez, verify_metadata, Commit, DirTree};
use wharf_ostree::summary::Summary;
use wharf_ostree::{
    run_mirror, Checksum, MirrorObserver, MirrorPlan, ObjectName, ObjectType, RefSelection,
    UpstreamSettings,
};
use wharf_snapshot::Snapshots;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the tool is installed");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ostree(repo: &Path) -> Command {
    let mut c = Command::new("ostree");
    c.arg(format!("--repo={}", repo.display()));
    c
}

/// A tree with the awkward cases: symlinks, a hardlink, xattrs, setuid, empty
/// dirs, non-ASCII names, and a larger file.
fn make_tree(dir: &Path, variant: &str) {
    std::fs::create_dir_all(dir.join("usr/bin")).unwrap();
    std::fs::create_dir_all(dir.join("empty/deeper")).unwrap();
    std::fs::create_dir_all(dir.join("données/ünïcødé")).unwrap();
    for i in 0..40 {
        std::fs::write(
            dir.join(format!("usr/bin/tool{i}")),
            format!("#!/bin/sh\necho {i} {variant}\n"),
        )
        .unwrap();
    }
    std::fs::write(dir.join("données/ünïcødé/fichier été.txt"), "é\n").unwrap();
    std::os::unix::fs::symlink("usr/bin/tool1", dir.join("link")).unwrap();
    std::os::unix::fs::symlink("/nowhere/at/all", dir.join("dangling")).unwrap();
    std::fs::hard_link(dir.join("usr/bin/tool2"), dir.join("hardlink")).unwrap();
    let setuid = dir.join("usr/bin/su");
    std::fs::write(&setuid, "setuid\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&setuid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("big.bin"), big).unwrap();
    run(Command::new("python3")
        .args([
            "-c",
            "import os,sys; os.setxattr(sys.argv[1], 'user.wharf', b'yes')",
        ])
        .arg(dir.join("usr/bin/tool3")));
}

fn make_repo(root: &Path) -> PathBuf {
    let repo = root.join("upstream");
    run(ostree(&repo).args(["init", "--mode=archive"]));
    for (branch, variant) in [("main", "a"), ("main", "b"), ("os/x86_64/stable", "c")] {
        let tree = root.join(format!("tree-{variant}"));
        make_tree(&tree, variant);
        run(ostree(&repo)
            .args([
                "commit",
                "-b",
                branch,
                "-s",
                "a commit",
                "--add-metadata-string=version=1.0",
            ])
            .arg(format!("--tree=dir={}", tree.display())));
    }
    run(ostree(&repo).args(["summary", "-u"]));
    repo
}

fn walk(repo: &Path, tree: Checksum, seen: &mut Vec<ObjectName>) {
    let name = ObjectName::new(tree, ObjectType::DirTree);
    let bytes = std::fs::read(repo.join(name.path())).unwrap();
    verify_metadata(&name, &bytes).unwrap();
    seen.push(name);
    let t = DirTree::parse(&bytes).unwrap();
    for (_, c) in &t.files {
        let n = ObjectName::new(*c, ObjectType::File);
        let bytes = std::fs::read(repo.join(n.path())).unwrap();
        verify_filez(c, &bytes).unwrap_or_else(|e| panic!("{n}: {e}"));
        seen.push(n);
    }
    for (_, sub, meta) in &t.dirs {
        let n = ObjectName::new(*meta, ObjectType::DirMeta);
        verify_metadata(&n, &std::fs::read(repo.join(n.path())).unwrap()).unwrap();
        walk(repo, *sub, seen);
    }
}

#[test]
fn every_object_ostree_writes_verifies_and_its_summary_is_normal_form() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_repo(dir.path());
    let summary_bytes = std::fs::read(repo.join("summary")).unwrap();
    let summary = Summary::parse(&summary_bytes).unwrap();
    assert_eq!(
        summary.encode(),
        summary_bytes,
        "our encoding of ostree's summary is byte-identical"
    );
    let names: Vec<&str> = summary.refs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["main", "os/x86_64/stable"]);
    let mut seen = Vec::new();
    for r in &summary.refs {
        let name = ObjectName::new(r.checksum, ObjectType::Commit);
        let bytes = std::fs::read(repo.join(name.path())).unwrap();
        assert_eq!(r.commit_size, bytes.len() as u64);
        verify_metadata(&name, &bytes).unwrap();
        let commit = Commit::parse(&bytes).unwrap();
        assert_eq!(commit.encode(), bytes);
        assert_eq!(commit.subject, "a commit");
        walk(&repo, commit.root_tree, &mut seen);
    }
    assert!(seen.len() > 80, "walked {} objects", seen.len());
    // A flipped bit anywhere in a content object or a dirtree is caught.
    let filez = seen.iter().find(|n| n.kind == ObjectType::File).unwrap();
    let bytes = std::fs::read(repo.join(filez.path())).unwrap();
    // Except in the last byte, whose high bits pad the final deflate block and carry no content.
    for i in (0..bytes.len() - 1).step_by(7) {
        let mut bad = bytes.clone();
        bad[i] ^= 0x04;
        assert!(
            verify_filez(&filez.checksum, &bad).is_err(),
            "bit flipped at {i} of {} passed",
            bytes.len()
        );
    }
}

struct Quiet;
impl MirrorObserver for Quiet {}

async fn snapshots(dir: &Path) -> Snapshots {
    let meta = wharf_meta::Meta::connect(&format!("sqlite:{}", dir.join("meta.db").display()))
        .await
        .unwrap();
    let blobs = wharf_blob::fs::open(dir.join("blobs")).await.unwrap();
    Snapshots::new(meta, Arc::new(blobs))
}

async fn served(s: &Snapshots, repo: &RepoName, p: &str) -> Option<Vec<u8>> {
    let entry = s.resolve(repo, &TreePath::new(p).unwrap()).await.unwrap()?;
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
async fn a_local_repository_mirrors_incrementally_and_bad_objects_publish_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = make_repo(dir.path());
    let s = snapshots(dir.path()).await;
    let repo = RepoName::parse("os/mirror").unwrap();
    let plan = MirrorPlan {
        remote: "local".into(),
        repository: repo.clone(),
        upstream: UpstreamSettings {
            url: upstream.display().to_string(),
            concurrency: 8,
            ..UpstreamSettings::default()
        },
        refs: RefSelection::All,
        depth: -1,
        concurrency: 8,
        trust: None,
        signer: None,
        retention: Default::default(),
    };
    let first = run_mirror(&s, &plan, &Quiet).await;
    assert_eq!(first.failure, None, "{}", first.line());
    assert!(
        first.content_fetched > 40 && first.metadata_fetched > 8,
        "{}",
        first.line()
    );
    assert_eq!(
        served(&s, &repo, "summary").await.unwrap(),
        std::fs::read(upstream.join("summary")).unwrap(),
        "all refs taken: the summary is copied byte for byte"
    );
    let main = std::fs::read_to_string(upstream.join("refs/heads/main")).unwrap();
    assert_eq!(
        served(&s, &repo, "refs/heads/main").await.unwrap(),
        main.as_bytes()
    );

    // Nothing changed upstream: nothing fetched, nothing published.
    let again = run_mirror(&s, &plan, &Quiet).await;
    assert_eq!(
        (
            again.metadata_fetched,
            again.content_fetched,
            again.published
        ),
        (0, 0, None),
        "{}",
        again.line()
    );

    // An update: only the new objects.
    let tree = dir.path().join("tree-d");
    make_tree(&tree, "d");
    run(ostree(&upstream)
        .args(["commit", "-b", "main", "-s", "update"])
        .arg(format!("--tree=dir={}", tree.display())));
    run(ostree(&upstream).args(["summary", "-u"]));
    let update = run_mirror(&s, &plan, &Quiet).await;
    assert_eq!(update.failure, None, "{}", update.line());
    // 40 tools changed content, plus the setuid file and the non-ASCII one are shared.
    assert!(
        update.content_fetched <= 42 && update.content_fetched >= 40,
        "{}",
        update.line()
    );
    let published = update.published.expect("published");

    // A flipped bit in a content object the next commit needs: refused, nothing published.
    let tree = dir.path().join("tree-e");
    make_tree(&tree, "e");
    let new = run(ostree(&upstream)
        .args(["commit", "-b", "main", "-s", "bad"])
        .arg(format!("--tree=dir={}", tree.display())));
    run(ostree(&upstream).args(["summary", "-u"]));
    let commit = Commit::parse(
        &std::fs::read(upstream.join(
            ObjectName::new(Checksum::from_hex(new.trim()).unwrap(), ObjectType::Commit).path(),
        ))
        .unwrap(),
    )
    .unwrap();
    let root = DirTree::parse(
        &std::fs::read(
            upstream.join(ObjectName::new(commit.root_tree, ObjectType::DirTree).path()),
        )
        .unwrap(),
    )
    .unwrap();
    let usr = root.dirs.iter().find(|d| d.0 == "usr").unwrap().1;
    let usr = DirTree::parse(
        &std::fs::read(upstream.join(ObjectName::new(usr, ObjectType::DirTree).path())).unwrap(),
    )
    .unwrap();
    let bin = DirTree::parse(
        &std::fs::read(upstream.join(ObjectName::new(usr.dirs[0].1, ObjectType::DirTree).path()))
            .unwrap(),
    )
    .unwrap();
    let victim = upstream.join(ObjectName::new(bin.files[5].1, ObjectType::File).path());
    let mut bytes = std::fs::read(&victim).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x01;
    std::fs::write(&victim, &bytes).unwrap();
    let refused = run_mirror(&s, &plan, &Quiet).await;
    let failure = refused.failure.clone().expect("refused");
    assert!(failure.contains(".filez"), "{failure}");
    assert_eq!(refused.published, None);
    assert_eq!(
        s.published(&repo).await.unwrap().unwrap().number,
        published,
        "the previous snapshot is still served"
    );

    // A truncated content object: refused too.
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let truncated = run_mirror(&s, &plan, &Quiet).await;
    assert!(
        truncated
            .failure
            .as_deref()
            .unwrap_or_default()
            .contains("truncated"),
        "{}",
        truncated.line()
    );

    // A subset of refs gets wharf's own summary, which ostree's reader accepts as ours re-encoded.
    let subset = MirrorPlan {
        refs: RefSelection::Patterns(vec!["os/*".into()]),
        repository: RepoName::parse("os/subset").unwrap(),
        ..plan.clone()
    };
    let sub = run_mirror(&s, &subset, &Quiet).await;
    assert_eq!(sub.failure, None, "{}", sub.line());
    let own = Summary::parse(&served(&s, &subset.repository, "summary").await.unwrap()).unwrap();
    assert_eq!(own.refs.len(), 1);
    assert_eq!(own.refs[0].name, "os/x86_64/stable");
    assert!(served(&s, &subset.repository, "refs/heads/main")
        .await
        .is_none());
}

fn push_settings() -> wharf_ostree::push::PushSettings {
    wharf_ostree::push::PushSettings {
        signer: None,
        retention: Box::new(|_| Default::default()),
        queue_after_move: Box::new(|_| None),
        max_object_bytes: 1 << 30,
        mirrored: Vec::new(),
        keep_retired: 3,
    }
}

async fn upload(
    push: &wharf_ostree::push::Push,
    repo: &RepoName,
    object: &wharf_ostree::push::LocalObject,
    bytes: Vec<u8>,
) -> Result<wharf_ostree::push::Stored, wharf_ostree::push::PushError> {
    let body: wharf_ostree::push::Body = Box::pin(futures_util::stream::once(async move {
        Ok::<_, std::io::Error>(Bytes::from(bytes))
    }));
    push.put_object(repo, object.name, None, body).await
}

#[tokio::test]
async fn a_ref_moves_only_once_every_object_its_commit_reaches_is_held() {
    use wharf_ostree::push::{local_closure, local_ref, Push, PushError, Stored};
    let dir = tempfile::tempdir().unwrap();
    let upstream = make_repo(dir.path());
    let s = snapshots(dir.path()).await;
    let repo = RepoName::parse("os/pushed").unwrap();
    let push = Push::new(s.clone(), push_settings());
    let commit = local_ref(&upstream, "main").unwrap();
    let closure = local_closure(&upstream, commit).unwrap();
    assert!(closure.len() > 40, "{} objects", closure.len());
    let names: Vec<ObjectName> = closure.iter().map(|o| o.name).collect();
    assert_eq!(push.missing(&repo, &names).await.unwrap(), names);

    // Every object but one content object, deep in the tree, goes up.
    let held_back = closure
        .iter()
        .rev()
        .find(|o| o.name.kind == ObjectType::File)
        .unwrap();
    for o in closure.iter().filter(|o| o.name != held_back.name) {
        let bytes = std::fs::read(&o.file).unwrap();
        assert_eq!(upload(&push, &repo, o, bytes).await.unwrap(), Stored::New);
    }
    assert_eq!(
        push.missing(&repo, &names).await.unwrap(),
        vec![held_back.name]
    );
    match push.move_ref(&repo, "main", commit, None).await {
        Err(PushError::Missing { missing, .. }) => assert_eq!(missing, vec![held_back.name]),
        other => panic!("a move with an object missing: {other:?}"),
    }
    assert!(s.published(&repo).await.unwrap().is_none());

    // Wrong bytes under its name are refused and kept nowhere.
    let mut bad = std::fs::read(&held_back.file).unwrap();
    let last = bad.len() - 1;
    bad[last] ^= 0x01;
    assert!(matches!(
        upload(&push, &repo, held_back, bad).await,
        Err(PushError::BadObject { .. })
    ));
    assert_eq!(
        push.missing(&repo, &names).await.unwrap(),
        vec![held_back.name]
    );

    let bytes = std::fs::read(&held_back.file).unwrap();
    upload(&push, &repo, held_back, bytes).await.unwrap();
    let moved = push.move_ref(&repo, "main", commit, None).await.unwrap();
    assert_eq!(moved.objects as usize, closure.len());
    assert!(push.missing(&repo, &names).await.unwrap().is_empty());
    assert_eq!(
        served(&s, &repo, "refs/heads/main").await.unwrap(),
        format!("{commit}\n").into_bytes()
    );
    assert!(served(&s, &repo, "summary").await.is_some());
    // The session gave up what was published.
    let session = s
        .list(&repo)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.note == wharf_ostree::push::SESSION_NOTE)
        .unwrap();
    assert_eq!(s.meta().snapshot_totals(&session.id).await.unwrap().0, 0);

    // Held objects are not stored twice; a stale parent is refused; the same
    // commit again publishes nothing.
    let again = std::fs::read(&closure[0].file).unwrap();
    assert_eq!(
        upload(&push, &repo, &closure[0], again).await.unwrap(),
        Stored::Held
    );
    assert!(matches!(
        push.move_ref(&repo, "main", commit, Some(held_back.name.checksum))
            .await,
        Err(PushError::Stale { .. })
    ));
    let same = push
        .move_ref(&repo, "main", commit, Some(commit))
        .await
        .unwrap();
    assert!(same.snapshot.is_none());
    // A commit bound to another ref is refused.
    let other = local_ref(&upstream, "os/x86_64/stable").unwrap();
    for o in local_closure(&upstream, other).unwrap() {
        let bytes = std::fs::read(&o.file).unwrap();
        upload(&push, &repo, &o, bytes).await.unwrap();
    }
    assert!(matches!(
        push.move_ref(&repo, "main", other, None).await,
        Err(PushError::Invalid(m)) if m.contains("ref-binding")
    ));

    // A local repository missing an object offers nothing.
    std::fs::remove_file(&held_back.file).unwrap();
    assert!(local_closure(&upstream, commit).is_err());
}

#[tokio::test]
async fn what_an_abandoned_push_uploaded_expires_and_its_session_is_discarded() {
    use wharf_ostree::push::{local_closure, local_ref, Expired, Push, SESSION_NOTE};
    let dir = tempfile::tempdir().unwrap();
    let upstream = make_repo(dir.path());
    let s = snapshots(dir.path()).await;
    let repo = RepoName::parse("os/abandoned").unwrap();
    let push = Push::new(s.clone(), push_settings());
    let commit = local_ref(&upstream, "main").unwrap();
    let closure = local_closure(&upstream, commit).unwrap();
    let names: Vec<ObjectName> = closure.iter().map(|o| o.name).collect();
    for o in &closure {
        upload(&push, &repo, o, std::fs::read(&o.file).unwrap())
            .await
            .unwrap();
    }
    let session = || async {
        s.list(&repo)
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.note == SESSION_NOTE)
    };
    let now = wharf_meta::unix_now();
    // Nothing was uploaded before an hour ago: nothing goes.
    assert_eq!(
        push.expire_sessions(now - 3600).await.unwrap(),
        Expired::default()
    );
    assert!(push.missing(&repo, &names).await.unwrap().is_empty());
    assert!(session().await.is_some());

    // Everything was uploaded before a second from now: all of it goes, and
    // the empty session with it.
    let expired = push.expire_sessions(now + 1).await.unwrap();
    assert_eq!(expired.objects as usize, closure.len());
    assert!(expired.bytes > 0);
    assert_eq!(expired.sessions, 1);
    assert!(session().await.is_none(), "the empty session stays");
    assert_eq!(push.missing(&repo, &names).await.unwrap(), names);

    // The push starts over and completes.
    for o in &closure {
        upload(&push, &repo, o, std::fs::read(&o.file).unwrap())
            .await
            .unwrap();
    }
    let moved = push.move_ref(&repo, "main", commit, None).await.unwrap();
    assert_eq!(moved.objects as usize, closure.len());
}

/// A content object far bigger than one read streams through its check into the store:
/// sent in 16 KiB chunks it is stored whole; the same with one flipped bit near its end, or
/// past the cap with no length declared, is refused, and nothing of it is held.
#[tokio::test]
async fn a_big_content_object_is_verified_as_it_streams_and_a_bad_one_is_kept_nowhere() {
    use wharf_ostree::object::{content_checksum, encode_filez, FileHeader};
    use wharf_ostree::push::{Push, PushError, Stored};
    let dir = tempfile::tempdir().unwrap();
    let s = snapshots(dir.path()).await;
    let repo = RepoName::parse("os/big").unwrap();
    let mut content = Vec::with_capacity(6 << 20);
    let mut x: u64 = 1;
    while content.len() < 6 << 20 {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        content.extend_from_slice(&x.to_le_bytes()[..(x % 8) as usize]);
        content.extend_from_slice(b"some text that compresses ");
    }
    let header = FileHeader {
        size: content.len() as u64,
        uid: 0,
        gid: 0,
        mode: 0o100644,
        rdev: 0,
        symlink_target: String::new(),
        xattrs: Vec::new(),
    };
    let name = ObjectName::new(content_checksum(&header, &content), ObjectType::File);
    let filez = Bytes::from(encode_filez(&header, &content));
    assert!(filez.len() > 512 << 10, "{} bytes", filez.len());
    let chunks = |bytes: Bytes| -> wharf_ostree::push::Body {
        let parts: Vec<std::io::Result<Bytes>> = (0..bytes.len())
            .step_by(16 << 10)
            .map(|i| Ok(bytes.slice(i..(i + (16 << 10)).min(bytes.len()))))
            .collect();
        Box::pin(futures_util::stream::iter(parts))
    };

    let mut flipped = filez.to_vec();
    let near_end = flipped.len() - 100;
    flipped[near_end] ^= 0x10;
    let push = Push::new(s.clone(), push_settings());
    assert!(matches!(
        push.put_object(&repo, name, None, chunks(Bytes::from(flipped)))
            .await,
        Err(PushError::BadObject { .. })
    ));
    assert_eq!(push.missing(&repo, &[name]).await.unwrap(), vec![name]);

    let capped = Push::new(
        s.clone(),
        wharf_ostree::push::PushSettings {
            max_object_bytes: 256 << 10,
            ..push_settings()
        },
    );
    assert!(matches!(
        capped
            .put_object(&repo, name, None, chunks(filez.clone()))
            .await,
        Err(PushError::TooLarge(_))
    ));
    assert_eq!(push.missing(&repo, &[name]).await.unwrap(), vec![name]);

    assert_eq!(
        push.put_object(&repo, name, None, chunks(filez.clone()))
            .await
            .unwrap(),
        Stored::New
    );
    assert!(push.missing(&repo, &[name]).await.unwrap().is_empty());
    // Held now: sent again it is checked, and not stored twice.
    assert_eq!(
        push.put_object(&repo, name, None, chunks(filez.clone()))
            .await
            .unwrap(),
        Stored::Held
    );
}

/// A commit of `files` (name → content) onto `branch` of `repo`.
async fn commit_files(
    s: &Snapshots,
    dir: &Path,
    repo: &RepoName,
    branch: &str,
    files: &[(&str, String)],
    signer: Option<Arc<wharf_sign::SigningKeys>>,
    retention: wharf_ostree::Retention,
) -> Checksum {
    let tree = tempfile::tempdir_in(dir).unwrap();
    for (name, content) in files {
        std::fs::write(tree.path().join(name), content).unwrap();
    }
    let plan = wharf_ostree::commit::CommitPlan {
        repository: repo.clone(),
        branch: branch.into(),
        tree: tree.path().to_owned(),
        subject: String::new(),
        body: String::new(),
        metadata: Vec::new(),
        owner_uid: None,
        owner_gid: None,
        mode_overrides: Default::default(),
        timestamp: None,
        signer,
        retention,
    };
    wharf_ostree::commit::commit_tree(s, &plan)
        .await
        .unwrap()
        .checksum
}

fn listed_deltas(summary: &Summary) -> Vec<String> {
    let mut names: Vec<String> = summary
        .metadata
        .iter()
        .filter(|(k, _)| k == wharf_ostree::extras::STATIC_DELTAS_KEY)
        .flat_map(|(_, v)| {
            wharf_ostree::extras::delta_map(v, "summary")
                .unwrap()
                .into_keys()
                .map(|n| n.to_string())
        })
        .collect();
    names.sort();
    names
}

/// The `ostree-deltas` job's generation: a delta from the commit a ref was
/// at before, read from the snapshot it was published in once retention cut
/// it from the new one, and from scratch; nothing published when nothing is
/// wanted; a summary Wharf did not sign is left alone; and, raced against
/// commits, a generation never undoes a ref move (it publishes only over the
/// snapshot it started from).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delta_job_reads_the_previous_commit_from_its_snapshot_and_never_undoes_a_move() {
    use wharf_ostree::delta::{refresh_published, DeltaOutcome, DeltaSettings};
    let dir = tempfile::tempdir().unwrap();
    let s = snapshots(dir.path()).await;
    let keys = Arc::new(wharf_sign::SigningKeys::generate().unwrap());
    let repo = RepoName::parse("os/hosted").unwrap();
    let keep_one = wharf_ostree::Retention {
        rules: vec![wharf_ostree::RefRule {
            refs: Vec::new(),
            keep_last: 1,
            keep_secs: 0,
        }],
    };
    let big = |v: u32| {
        (0..2000)
            .map(|i| format!("line {i} of {v}\n"))
            .collect::<String>()
    };
    let files = |v: u32| {
        vec![
            ("same", big(0)),
            ("changed", format!("version {v}\n")),
            ("large", big(v)),
        ]
    };
    let settings = DeltaSettings {
        depth: 1,
        from_scratch: true,
        min_saving_percent: 0,
    };
    let nothing = refresh_published(&s, &repo, &settings, &keys, 1)
        .await
        .unwrap();
    assert_eq!(nothing.outcome, DeltaOutcome::NothingPublished);

    let a = commit_files(
        &s,
        dir.path(),
        &repo,
        "main",
        &files(1),
        Some(keys.clone()),
        keep_one.clone(),
    )
    .await;
    let b = commit_files(
        &s,
        dir.path(),
        &repo,
        "main",
        &files(2),
        Some(keys.clone()),
        keep_one.clone(),
    )
    .await;
    // Retention cut A from the snapshot that publishes B.
    let published = s.published(&repo).await.unwrap().unwrap();
    let a_path = TreePath::new(&ObjectName::new(a, ObjectType::Commit).path()).unwrap();
    assert!(s
        .meta()
        .snapshot_entry(&published.id, &a_path)
        .await
        .unwrap()
        .is_none());
    let run = refresh_published(&s, &repo, &settings, &keys, 2)
        .await
        .unwrap();
    assert!(matches!(run.outcome, DeltaOutcome::Published(_)), "{run:?}");
    let mut generated: Vec<String> = run.generated.iter().map(|g| g.name.to_string()).collect();
    generated.sort();
    let mut expected = vec![format!("{a}-{b}"), b.to_string()];
    expected.sort();
    assert_eq!(generated, expected);
    let summary_bytes = served(&s, &repo, "summary").await.unwrap();
    let summary = Summary::parse(&summary_bytes).unwrap();
    assert_eq!(listed_deltas(&summary), expected);
    assert_eq!(summary.refs[0].checksum, b, "the refs are unchanged");
    // Signed again by Wharf, for exactly the new bytes.
    let sig = served(&s, &repo, "summary.sig").await.unwrap();
    wharf_ostree::signature::verify(&keys.keyring(), &summary_bytes, Some(&sig)).unwrap();
    let from_a = run
        .generated
        .iter()
        .find(|g| g.name.from == Some(a))
        .unwrap();
    let sb = served(&s, &repo, &format!("{}/superblock", from_a.name.dir()))
        .await
        .unwrap();
    let info = wharf_ostree::delta::read_superblock(&sb).unwrap();
    assert_eq!((info.from, info.to), (Some(a), b));
    // The unchanged file is not sent again: A's closure was read from its snapshot.
    assert!(
        from_a.delta_bytes
            < run
                .generated
                .iter()
                .find(|g| g.name.from.is_none())
                .unwrap()
                .delta_bytes,
        "{run:?}"
    );
    assert!(
        served(&s, &repo, &wharf_ostree::extras::delta_index_path(&b))
            .await
            .is_some(),
        "delta index of the target"
    );
    let snapshots_before = s.list(&repo).await.unwrap().len();
    let again = refresh_published(&s, &repo, &settings, &keys, 3)
        .await
        .unwrap();
    assert_eq!(again.outcome, DeltaOutcome::UpToDate, "{again:?}");
    assert_eq!(again.listed, 2);
    assert_eq!(
        s.list(&repo).await.unwrap().len(),
        snapshots_before,
        "a run with nothing to do stages no snapshot"
    );

    // A summary Wharf did not sign (here: unsigned) is not Wharf's to rewrite.
    let other = RepoName::parse("os/unsigned").unwrap();
    commit_files(
        &s,
        dir.path(),
        &other,
        "main",
        &files(1),
        None,
        Default::default(),
    )
    .await;
    let left = refresh_published(&s, &other, &settings, &keys, 4)
        .await
        .unwrap();
    assert_eq!(left.outcome, DeltaOutcome::UpstreamSummary);

    // Commits racing generations: every move stays published.
    let mut last = b;
    for v in 3..9 {
        let s2 = s.clone();
        let keys2 = keys.clone();
        let repo2 = repo.clone();
        let job = tokio::spawn(async move {
            refresh_published(&s2, &repo2, &settings, &keys2, 10 + i64::from(v)).await
        });
        last = commit_files(
            &s,
            dir.path(),
            &repo,
            "main",
            &files(v),
            Some(keys.clone()),
            keep_one.clone(),
        )
        .await;
        job.await.unwrap().unwrap();
        let head = served(&s, &repo, "refs/heads/main").await.unwrap();
        assert_eq!(
            String::from_utf8(head).unwrap().trim(),
            last.to_string(),
            "round {v}: a generation undid the move"
        );
    }
    // And a last generation catches up with the last move.
    let run = refresh_published(&s, &repo, &settings, &keys, 100)
        .await
        .unwrap();
    let summary = Summary::parse(&served(&s, &repo, "summary").await.unwrap()).unwrap();
    assert_eq!(summary.refs[0].checksum, last);
    assert!(
        listed_deltas(&summary).contains(&last.to_string()),
        "{run:?}: {:?}",
        listed_deltas(&summary)
    );
}

/// Two commits onto different branches at once: each publishes only over the
/// snapshot it was staged from, so neither undoes the other's move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_onto_two_branches_both_stay_published() {
    let dir = tempfile::tempdir().unwrap();
    let s = snapshots(dir.path()).await;
    let repo = RepoName::parse("os/two").unwrap();
    for round in 0..6 {
        let (s1, s2) = (s.clone(), s.clone());
        let (d1, d2) = (dir.path().to_owned(), dir.path().to_owned());
        let (r1, r2) = (repo.clone(), repo.clone());
        let one = tokio::spawn(async move {
            let files = [("a", format!("one {round}\n"))];
            commit_files(&s1, &d1, &r1, "one", &files, None, Default::default()).await
        });
        let two = tokio::spawn(async move {
            let files = [("b", format!("two {round}\n"))];
            commit_files(&s2, &d2, &r2, "two", &files, None, Default::default()).await
        });
        let (one, two) = (one.await.unwrap(), two.await.unwrap());
        for (branch, commit) in [("one", one), ("two", two)] {
            let head = served(&s, &repo, &format!("refs/heads/{branch}")).await;
            assert_eq!(
                head.map(|h| String::from_utf8(h).unwrap().trim().to_owned()),
                Some(commit.to_string()),
                "round {round}: the move of {branch} was undone"
            );
        }
        let summary = Summary::parse(&served(&s, &repo, "summary").await.unwrap()).unwrap();
        assert_eq!(summary.refs.len(), 2, "round {round}");
    }
}

/// `wharf ostree prune` raced against commits onto another branch: while one
/// task commits onto `main` and prunes it again and again, another commits
/// onto `other`. A prune publishes only over the snapshot it started from, so
/// no move of `other` is ever undone, and the prunes still cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_racing_commits_never_undoes_a_move() {
    use wharf_ostree::retention::{prune_published, Pruned};
    let dir = tempfile::tempdir().unwrap();
    let s = snapshots(dir.path()).await;
    let repo = RepoName::parse("os/pruned").unwrap();
    let keep_one = wharf_ostree::Retention {
        rules: vec![wharf_ostree::RefRule {
            refs: vec!["main".into()],
            keep_last: 1,
            keep_secs: 0,
        }],
    };
    let head = |branch: &'static str| {
        let s = s.clone();
        let repo = repo.clone();
        async move {
            let bytes = served(&s, &repo, &format!("refs/heads/{branch}")).await;
            bytes.map(|b| String::from_utf8(b).unwrap().trim().to_owned())
        }
    };
    let main_file = |v: u32| vec![("m", format!("main {v}\n"))];
    commit_files(
        &s,
        dir.path(),
        &repo,
        "main",
        &main_file(0),
        None,
        Default::default(),
    )
    .await;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pruner = {
        let (s, repo, rules, done) = (s.clone(), repo.clone(), keep_one.clone(), done.clone());
        let dir = dir.path().to_owned();
        tokio::spawn(async move {
            let mut cuts = 0;
            let mut v = 1;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let files = vec![("m", format!("main {v}\n"))];
                commit_files(&s, &dir, &repo, "main", &files, None, Default::default()).await;
                v += 1;
                for _ in 0..3 {
                    if let Some(Pruned::Published(plan, _)) =
                        prune_published(&s, &repo, &rules, 1).await.unwrap()
                    {
                        cuts += plan.cut.len();
                    }
                }
            }
            cuts
        })
    };
    let mut other = None;
    for round in 0..12u32 {
        let files = [("o", format!("other {round}\n"))];
        let c = commit_files(
            &s,
            dir.path(),
            &repo,
            "other",
            &files,
            None,
            Default::default(),
        )
        .await;
        // Whatever was published since this commit was staged from it.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(
            head("other").await,
            Some(c.to_string()),
            "round {round}: a prune undid the move of other"
        );
        other = Some(c.to_string());
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let cuts = pruner.await.unwrap();
    assert!(cuts > 0, "the prunes cut nothing");
    assert_eq!(head("other").await, other);
}
