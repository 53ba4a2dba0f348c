//! Hosted repositories against the real tools: packages built by `rpmbuild` (two versions,
//! an epoch, two arches, dependencies, weak dependencies, obsoletes, a binary primary lists,
//! a long changelog, packages signed by `rpmsign`) are uploaded through [`Hosted`]; the
//! metadata Wharf writes is compared element by element with what `createrepo_c` writes for
//! the same files, and real dnf (`repoquery`, then `install` with `gpgcheck=1` and
//! `repo_gpgcheck=1`, repomd.xml signed through the [`MetadataSigner`] hook by `gpg`) reads
//! the published tree. A repomd.xml signed by another key is refused by dnf.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use futures_util::TryStreamExt;
use quick_xml::events::Event;
use wharf_core::RepoName;
use wharf_rpm::hosted::{Hosted, MetadataSigner, PackageVerifier, SignError};
use wharf_rpm::RpmError;
use wharf_snapshot::Snapshots;
use wharf_testkit::fixture::rpm::{build_rpm, comps_xml, createrepo, GpgKey, RpmSpec};
use wharf_testkit::{run, run_expect_failure, Tool};

/// The hook as the lead's signer will fill it, here by shelling out to `gpg --detach-sign`.
struct GpgSigner(Arc<GpgKey>);

impl MetadataSigner for GpgSigner {
    fn sign_armored(&self, data: &[u8]) -> Result<Vec<u8>, SignError> {
        self.0
            .detach_sign(data)
            .map_err(|e| SignError(format!("{e:#}")))
    }
}

/// The package-signature hook, here `gpg --verify` against one key's GnuPG home.
struct GpgVerifier(Arc<GpgKey>);

impl PackageVerifier for GpgVerifier {
    fn verify(&self, signed: &[u8], signature: &[u8]) -> Result<(), SignError> {
        let dir = tempfile::tempdir().map_err(|e| SignError(e.to_string()))?;
        fs::write(dir.path().join("header"), signed).map_err(|e| SignError(e.to_string()))?;
        fs::write(dir.path().join("header.sig"), signature)
            .map_err(|e| SignError(e.to_string()))?;
        let out = Command::new(Tool::find("gpg").path())
            .arg("--homedir")
            .arg(self.0.home())
            .args(["--batch", "--verify"])
            .arg(dir.path().join("header.sig"))
            .arg(dir.path().join("header"))
            .output()
            .map_err(|e| SignError(e.to_string()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(SignError(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ))
        }
    }
}

async fn snapshots(dir: &Path) -> Snapshots {
    let meta = wharf_meta::Meta::connect(&format!("sqlite:{}", dir.join("meta.db").display()))
        .await
        .unwrap();
    let blobs = wharf_blob::fs::open(dir.join("blobs")).await.unwrap();
    Snapshots::new(meta, Arc::new(blobs))
}

/// The packages: hello 1.0 and 2:2.0 (weak deps, obsoletes, a binary), libdep for two arches.
fn build_packages(out: &Path) -> Vec<PathBuf> {
    let mut hello1 = RpmSpec::new("hello", "1.0");
    hello1.requires = vec!["libdep".into(), "/bin/sh".into(), "/usr/bin/hello".into()];
    hello1.extra = vec![
        "Recommends: extra".into(),
        "Requires(pre): coreutils".into(),
        "Provides: greeting = 1.0".into(),
        "Conflicts: rival < 3".into(),
    ];
    hello1.binary = true;
    hello1.changelog = (0..12)
        .map(|i| {
            (
                format!("Tue Dec {:02} 2026", 28 - i),
                format!("Packager {i} <p{i}@wharf.test>"),
                format!("change number {}", 12 - i),
            )
        })
        .collect();
    let mut hello2 = RpmSpec::new("hello", "2.0");
    hello2.epoch = Some(2);
    hello2.requires = vec!["libdep >= 0.3".into()];
    hello2.extra = vec![
        "Obsoletes: oldhello < 1.5".into(),
        "Suggests: extra".into(),
        "Supplements: libdep".into(),
        "Enhances: libdep".into(),
        "Provides: greeting = 2.0".into(),
    ];
    let mut libdep = RpmSpec::new("libdep", "0.3");
    libdep.arch = "x86_64".into();
    let mut libdep_arm = libdep.clone();
    libdep_arm.arch = "aarch64".into();
    [hello1, hello2, libdep, libdep_arm]
        .iter()
        .map(|s| build_rpm(s, out).unwrap())
        .collect()
}

/// Every published file, written under `dir`.
async fn export(s: &Snapshots, repo: &RepoName, dir: &Path) {
    let published = s.published(repo).await.unwrap().unwrap();
    let entries = s
        .meta()
        .snapshot_entries(&published.id, None, None, 10_000)
        .await
        .unwrap();
    for e in entries {
        let bytes: Vec<bytes::Bytes> = s.open(&e, None).await.unwrap().try_collect().await.unwrap();
        let path = dir.join(e.path.as_str());
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes.concat()).unwrap();
    }
}

/// The data file of `kind` that `dir/repodata/repomd.xml` names, decompressed.
fn data(dir: &Path, kind: &str) -> Vec<u8> {
    let repomd =
        wharf_rpm::Repomd::parse(&fs::read(dir.join("repodata/repomd.xml")).unwrap()).unwrap();
    let record = repomd.record(kind).unwrap_or_else(|| panic!("no {kind}"));
    let href = record.location.relative_path(kind).unwrap();
    let file = fs::File::open(dir.join(href)).unwrap();
    let mut out = Vec::new();
    std::io::Read::read_to_end(
        &mut wharf_rpm::Compression::from_name(href)
            .unwrap()
            .decoder(file)
            .unwrap(),
        &mut out,
    )
    .unwrap();
    out
}

/// Each package element of an rpm-md file as a list of normalized lines (empty and
/// start+end elements alike, attributes sorted, whitespace-only text dropped), keyed by
/// NEVRA-ish identity; `time file` is the file's mtime and is left out.
fn packages(xml: &[u8]) -> BTreeMap<String, Vec<String>> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut out = BTreeMap::new();
    let mut current: Option<Vec<String>> = None;
    let mut buf = Vec::new();
    let line = |e: &quick_xml::events::BytesStart<'_>| {
        let mut attrs: Vec<String> = e
            .attributes()
            .map(|a| {
                let a = a.unwrap();
                let key = String::from_utf8(a.key.as_ref().to_vec()).unwrap();
                let value = a.unescape_value().unwrap().into_owned();
                if key == "file" && e.name().as_ref() == b"time" {
                    "file=*".to_string()
                } else {
                    format!("{key}={value}")
                }
            })
            .collect();
        attrs.sort();
        format!(
            "<{} {}>",
            String::from_utf8_lossy(e.name().as_ref()),
            attrs.join(" ")
        )
    };
    loop {
        let ev = reader.read_event_into(&mut buf).unwrap();
        match ev {
            Event::Eof => break,
            Event::Start(e) if e.name().as_ref() == b"package" => {
                current = Some(vec![line(&e)]);
            }
            Event::End(e) if e.name().as_ref() == b"package" => {
                let lines = current.take().unwrap();
                // filelists and other name the package in its start tag; primary in
                // the name, arch, version and checksum that open it.
                let key = if lines[0].contains("pkgid=") {
                    lines[0].clone()
                } else {
                    lines[..lines.len().min(12)].join(" ")
                };
                out.insert(key, lines);
            }
            Event::Start(e) => {
                if let Some(c) = current.as_mut() {
                    c.push(line(&e));
                }
            }
            Event::Empty(e) => {
                if let Some(c) = current.as_mut() {
                    c.push(line(&e));
                    c.push(format!("</{}>", String::from_utf8_lossy(e.name().as_ref())));
                }
            }
            Event::End(e) => {
                if let Some(c) = current.as_mut() {
                    c.push(format!("</{}>", String::from_utf8_lossy(e.name().as_ref())));
                }
            }
            Event::Text(t) => {
                let text = t.unescape().unwrap().trim().to_string();
                if let (Some(c), false) = (current.as_mut(), text.is_empty()) {
                    c.push(text);
                }
            }
            _ => {}
        }
        buf.clear();
    }
    out
}

/// dnf against one file:// repository.
fn dnf(work: &Path, name: &str, baseurl: &Path, extra: &str) -> impl Fn(&[&str]) -> Command {
    let root = work.join(format!("{name}-root"));
    let reposdir = work.join(format!("{name}-repos"));
    let cache = work.join(format!("{name}-cache"));
    for d in [&root, &reposdir, &cache] {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(
        reposdir.join(format!("{name}.repo")),
        format!(
            "[{name}]\nname={name}\nbaseurl=file://{}\nenabled=1\nmetadata_expire=0\n{extra}",
            baseurl.display()
        ),
    )
    .unwrap();
    let name = name.to_string();
    move |args: &[&str]| {
        let mut cmd = Command::new(Tool::find("dnf").path());
        cmd.arg("--installroot")
            .arg(&root)
            .args(["--releasever", "12", "-y", "--quiet"])
            .arg(format!("--setopt=reposdir={}", reposdir.display()))
            .arg(format!("--setopt=cachedir={}", cache.display()))
            .args([
                "--setopt=skip_if_unavailable=0",
                "--setopt=install_weak_deps=0",
                "--forcearch=x86_64",
            ])
            .arg(format!("--repo={name}"))
            .args(args);
        cmd
    }
}

fn lines(out: String) -> Vec<String> {
    let mut v: Vec<String> = out
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn hosted_metadata_matches_createrepo_c_and_dnf_checks_both_signatures() {
    let work = tempfile::tempdir().unwrap();
    let built = work.path().join("built");
    let rpms = build_packages(&built);
    let key = Arc::new(GpgKey::generate("wharf-hosted").unwrap());
    // hello 2:2.0 and libdep (what an install pulls in) are signed; hello 1.0 is not.
    key.sign_rpm(&rpms[1]).unwrap();
    key.sign_rpm(&rpms[2]).unwrap();

    let s = snapshots(work.path()).await;
    let hosted = Hosted::new(
        s.clone(),
        vec![RepoName::parse("el/mirror").unwrap()],
        Some(Arc::new(GpgSigner(key.clone()))),
        3,
    );
    let repo = RepoName::parse("el/hosted").unwrap();
    let session = hosted.begin(&repo, "test").await.unwrap();
    let mut signed = Vec::new();
    for rpm in &rpms {
        let body: wharf_blob::ByteStream = Box::pin(tokio_util::io::ReaderStream::new(
            tokio::fs::File::open(rpm).await.unwrap(),
        ));
        let added = session.add_package(body).await.unwrap();
        assert_eq!(
            added.sha256,
            wharf_core::Digest::sha256_of(&fs::read(rpm).unwrap())
                .hex()
                .to_string(),
            "the package's SHA-256 is computed while it streams in"
        );
        signed.push(added.signed);
    }
    assert_eq!(signed, [false, true, true, false]);
    session
        .put_comps(comps_xml(&["hello"]).into_bytes().into())
        .await
        .unwrap();
    let done = session.finish(true).await.unwrap();
    assert_eq!(done.packages, 4);

    // A mirrored repository takes no upload, and a duplicate is refused.
    let err = hosted
        .begin(&RepoName::parse("el/mirror").unwrap(), "t")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("mirror"), "{err}");
    let session = hosted.begin(&repo, "dup").await.unwrap();
    let body: wharf_blob::ByteStream = Box::pin(tokio_util::io::ReaderStream::new(
        tokio::fs::File::open(&rpms[0]).await.unwrap(),
    ));
    assert!(matches!(
        session.add_package(body).await,
        Err(RpmError::Conflict(_))
    ));
    session.abort().await.unwrap();

    let ours = work.path().join("ours");
    export(&s, &repo, &ours).await;
    assert!(ours.join("repodata/repomd.xml.asc").is_file());

    // createrepo_c over the same files at the same paths.
    let theirs = work.path().join("theirs");
    fs::create_dir_all(theirs.join("Packages")).unwrap();
    for rpm in &rpms {
        fs::copy(rpm, theirs.join("Packages").join(rpm.file_name().unwrap())).unwrap();
    }
    let comps = work.path().join("comps.xml");
    fs::write(&comps, comps_xml(&["hello"])).unwrap();
    createrepo(
        &theirs,
        &["--no-database", "--groupfile", comps.to_str().unwrap()],
    )
    .unwrap();
    for kind in ["primary", "filelists", "other"] {
        let a = packages(&data(&ours, kind));
        let b = packages(&data(&theirs, kind));
        assert_eq!(a.len(), 4, "{kind}");
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>(),
            "{kind}: same packages and checksums"
        );
        for (k, ours) in &a {
            assert_eq!(ours, &b[k], "{kind} of {k} differs from createrepo_c's");
        }
    }
    let other = String::from_utf8(data(&ours, "other")).unwrap();
    assert_eq!(other.matches("<changelog").count(), 10, "the newest ten");
    assert!(other.contains("change number 12") && !other.contains("change number 2<"));

    // dnf reads both the same way.
    let query = [
        "repoquery",
        "--queryformat",
        "%{name}-%{epoch}:%{version}-%{release}.%{arch}|%{provides}|%{requires}|%{recommends}|%{suggests}|%{obsoletes}|%{conflicts}|%{supplements}|%{enhances}\n",
        "--forcearch=aarch64",
    ];
    let ours_dnf = dnf(work.path(), "ours", &ours, "gpgcheck=0\n");
    let theirs_dnf = dnf(work.path(), "theirs", &theirs, "gpgcheck=0\n");
    let a = lines(run(&mut ours_dnf(&query)).unwrap().stdout);
    let b = lines(run(&mut theirs_dnf(&query)).unwrap().stdout);
    assert_eq!(a, b);
    // Multi-valued fields span lines; what matters is that they are there at all.
    let all = a.join("\n");
    for want in [
        "hello-2:2.0-1.noarch|greeting = 2.0",
        "hello = 2:2.0-1|libdep >= 0.3||extra|oldhello < 1.5||libdep|libdep",
        "libdep|extra|||rival < 3||",
        "libdep-0:0.3-1.aarch64|libdep = 0.3-1",
        "coreutils",
    ] {
        assert!(all.contains(want), "{want:?} in {all}");
    }
    let whatprovides = run(&mut ours_dnf(&[
        "repoquery",
        "--whatprovides",
        "greeting > 1.5",
    ]))
    .unwrap()
    .stdout;
    assert_eq!(whatprovides.trim(), "hello-2:2.0-1.noarch");

    // Install with gpgcheck=1 and repo_gpgcheck=1: dnf verifies repomd.xml.asc and the
    // packages' signatures against the key.
    let gpg = format!(
        "gpgcheck=1\nrepo_gpgcheck=1\ngpgkey=file://{}\n",
        key.public_key.display()
    );
    let signed_dnf = dnf(work.path(), "signed", &ours, &gpg);
    run(&mut signed_dnf(&["makecache"])).unwrap();
    run(&mut signed_dnf(&["install", "hello"])).unwrap();
    let installed = run(Command::new(Tool::find("rpm").path())
        .arg("--root")
        .arg(work.path().join("signed-root"))
        .args(["-q", "hello", "libdep"]))
    .unwrap()
    .stdout;
    assert!(installed.contains("hello-2.0-1.noarch"), "{installed}");
    // The unsigned package is refused under gpgcheck=1.
    run_expect_failure(&mut signed_dnf(&["install", "hello-1.0"])).unwrap();

    // A repomd.xml signed by another key is refused.
    let other_key = GpgKey::generate("intruder").unwrap();
    let forged = work.path().join("forged");
    export(&s, &repo, &forged).await;
    fs::write(
        forged.join("repodata/repomd.xml.asc"),
        other_key
            .detach_sign(&fs::read(forged.join("repodata/repomd.xml")).unwrap())
            .unwrap(),
    )
    .unwrap();
    let forged_dnf = dnf(work.path(), "forged", &forged, &gpg);
    run_expect_failure(&mut forged_dnf(&["makecache"])).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_verifier_refuses_unsigned_and_foreign_packages() {
    let work = tempfile::tempdir().unwrap();
    let built = work.path().join("built");
    let ours = build_rpm(&RpmSpec::new("ours", "1"), &built).unwrap();
    let unsigned = build_rpm(&RpmSpec::new("unsigned", "1"), &built).unwrap();
    let foreign = build_rpm(&RpmSpec::new("foreign", "1"), &built).unwrap();
    let key = Arc::new(GpgKey::generate("trusted").unwrap());
    let intruder = GpgKey::generate("intruder").unwrap();
    key.sign_rpm(&ours).unwrap();
    intruder.sign_rpm(&foreign).unwrap();

    let s = snapshots(work.path()).await;
    let hosted = Hosted::new(s.clone(), vec![], None, 3)
        .with_package_verifier(Arc::new(GpgVerifier(key.clone())));
    let repo = RepoName::parse("signed/only").unwrap();
    let session = hosted.begin(&repo, "test").await.unwrap();
    let stream = |p: &Path| -> wharf_blob::ByteStream {
        Box::pin(tokio_util::io::ReaderStream::new(
            std::fs::File::open(p)
                .map(tokio::fs::File::from_std)
                .unwrap(),
        ))
    };
    let added = session.add_package(stream(&ours)).await.unwrap();
    assert!(added.signed);
    let err = session.add_package(stream(&unsigned)).await.unwrap_err();
    assert!(err.to_string().contains("is not signed"), "{err}");
    let err = session.add_package(stream(&foreign)).await.unwrap_err();
    assert!(
        err.to_string().contains("not one a trusted key made"),
        "{err}"
    );
    let done = session.finish(true).await.unwrap();
    assert_eq!(done.packages, 1, "only the package the trusted key signed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_published_by_another_writer_is_not_undone() {
    let work = tempfile::tempdir().unwrap();
    let built = work.path().join("built");
    let a = build_rpm(&RpmSpec::new("a", "1"), &built).unwrap();
    let b = build_rpm(&RpmSpec::new("b", "1"), &built).unwrap();
    let s = snapshots(work.path()).await;
    // Two values, as a CLI run and a server would have: no shared lock.
    let cli = Hosted::new(s.clone(), vec![], None, 3);
    let server = Hosted::new(s.clone(), vec![], None, 3);
    let repo = RepoName::parse("shared/repo").unwrap();
    let stream = |p: &Path| -> wharf_blob::ByteStream {
        Box::pin(tokio_util::io::ReaderStream::new(
            std::fs::File::open(p)
                .map(tokio::fs::File::from_std)
                .unwrap(),
        ))
    };
    let first = cli.begin(&repo, "cli").await.unwrap();
    first.add_package(stream(&a)).await.unwrap();
    let second = server.begin(&repo, "server").await.unwrap();
    second.add_package(stream(&b)).await.unwrap();
    assert_eq!(second.finish(true).await.unwrap().packages, 1);
    // The first was prepared from an older snapshot: it is made again over the
    // second's, so both packages are published.
    assert_eq!(first.finish(true).await.unwrap().packages, 2);
    let work2 = tempfile::tempdir().unwrap();
    export(&s, &repo, work2.path()).await;
    let listed = packages(&data(work2.path(), "primary"));
    assert_eq!(listed.len(), 2, "{listed:?}");
}

/// Metadata is written from headers read a group at a time, the first 256 KiB of each
/// package; a package whose headers are bigger is read again whole. Both kinds, mixed in
/// one group, are listed with everything they provide, and a second rewrite (a package
/// removed) lists the same.
#[tokio::test(flavor = "multi_thread")]
async fn packages_with_headers_past_the_first_read_are_listed_whole() {
    let work = tempfile::tempdir().unwrap();
    let built = work.path().join("built");
    const PROVIDES: usize = 16_000;
    let mut big = RpmSpec::new("bigheader", "1");
    big.extra = (0..PROVIDES)
        .map(|i| format!("Provides: capability-number-{i:05} = {i}"))
        .collect();
    let big = build_rpm(&big, &built).unwrap();
    assert!(
        fs::metadata(&big).unwrap().len() > 300 << 10,
        "the fixture's headers must pass the first read"
    );
    let small: Vec<PathBuf> = ["a", "c", "d"]
        .iter()
        .map(|n| build_rpm(&RpmSpec::new(n, "1"), &built).unwrap())
        .collect();
    let s = snapshots(work.path()).await;
    let hosted = Hosted::new(s.clone(), vec![], None, 3);
    let repo = RepoName::parse("big/headers").unwrap();
    let session = hosted.begin(&repo, "test").await.unwrap();
    for rpm in small.iter().chain([&big]) {
        let body: wharf_blob::ByteStream = Box::pin(tokio_util::io::ReaderStream::new(
            tokio::fs::File::open(rpm).await.unwrap(),
        ));
        session.add_package(body).await.unwrap();
    }
    assert_eq!(session.finish(true).await.unwrap().packages, 4);
    let listed = |expected: usize| {
        let s = s.clone();
        let repo = repo.clone();
        async move {
            let dir = tempfile::tempdir().unwrap();
            export(&s, &repo, dir.path()).await;
            let primary = data(dir.path(), "primary");
            assert_eq!(packages(&primary).len(), expected);
            let text = String::from_utf8(primary).unwrap();
            assert_eq!(
                text.matches("name=\"capability-number-").count(),
                PROVIDES,
                "every provide of the big package is listed"
            );
        }
    };
    listed(4).await;
    let session = hosted.begin(&repo, "rm").await.unwrap();
    session.remove_package("a-1-1.noarch").await.unwrap();
    assert_eq!(session.finish(true).await.unwrap().packages, 3);
    listed(3).await;
}

/// The race of two processes publishing the same repository: many writers, each with its
/// own `Hosted` (no lock in common), begin, upload and finish at once; every package ends
/// up in the published metadata, and every writer reports success.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_of_one_repository_lose_nothing() {
    let work = tempfile::tempdir().unwrap();
    let built = work.path().join("built");
    let s = snapshots(work.path()).await;
    let repo = RepoName::parse("race/repo").unwrap();
    let rpms: Vec<PathBuf> = (0..6)
        .map(|i| build_rpm(&RpmSpec::new(&format!("racer{i}"), "1"), &built).unwrap())
        .collect();
    let tasks: Vec<_> = rpms
        .iter()
        .map(|rpm| {
            let hosted = Hosted::new(s.clone(), vec![], None, 3);
            let repo = repo.clone();
            let rpm = rpm.clone();
            tokio::spawn(async move {
                let body: wharf_blob::ByteStream = Box::pin(tokio_util::io::ReaderStream::new(
                    tokio::fs::File::open(&rpm).await.unwrap(),
                ));
                let session = hosted.begin(&repo, "racer").await?;
                session.add_package(body).await?;
                session.finish(true).await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().expect("every racing writer publishes");
    }
    let out = tempfile::tempdir().unwrap();
    export(&s, &repo, out.path()).await;
    let listed = packages(&data(out.path(), "primary"));
    assert_eq!(listed.len(), 6, "{:?}", listed.keys());
}
