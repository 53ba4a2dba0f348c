//! rpm-md mirroring as dnf sees it. The upstream is built here with rpmbuild and createrepo_c
//! (several versions of a package, a dependency, an epoch, two arches, comps, an updateinfo
//! added by modifyrepo_c) and served by `python3 -m http.server`; `wharf sync` mirrors it into
//! `/rpm/el/base/`, and real dnf (`makecache`, `repoquery`, `updateinfo`, `group list`,
//! `download`, `install` into an installroot) uses the mirror. `dnf reposync` from the mirror
//! is byte-identical to upstream; a second sync fetches only repomd.xml. Tampering upstream (a
//! corrupted package, a corrupted metadata file) fails the sync with a message naming the file,
//! publishes nothing and leaves the previous snapshot served; and a client that read the old
//! repomd.xml still finds the old metadata and packages after a new snapshot is published.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use wharf_testkit::fixture::rpm::{
    build_rpm, comps_xml, createrepo, modifyrepo, updateinfo_xml, RpmSpec,
};
use wharf_testkit::{run, run_expect_failure, Tool, WharfServer};

use crate::acme::free_port;
use crate::support::wharf_cli;

/// `python3 -m http.server` over a directory, stopped on drop.
struct Upstream {
    child: Child,
    url: String,
}

impl Upstream {
    fn serve(dir: &Path) -> Result<Upstream> {
        let port = free_port()?;
        let child = Command::new(Tool::find("python3").path())
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .arg("--directory")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start python3 -m http.server")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            ensure!(Instant::now() < deadline, "http.server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Upstream {
            child,
            url: format!("http://127.0.0.1:{port}/"),
        })
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The upstream tree: hello 1.0 and 2:2.0 (noarch, needing libdep), libdep (x86_64), extra,
/// comps naming hello, and an advisory for libdep 0.3.
fn build_upstream(dir: &Path) -> Result<()> {
    let mut specs = Vec::new();
    let mut hello1 = RpmSpec::new("hello", "1.0");
    hello1.requires = vec!["libdep".into()];
    specs.push(hello1);
    let mut hello2 = RpmSpec::new("hello", "2.0");
    hello2.epoch = Some(2);
    hello2.requires = vec!["libdep >= 0.3".into()];
    hello2.payload_bytes = 300_000;
    specs.push(hello2);
    let mut libdep = RpmSpec::new("libdep", "0.3");
    libdep.arch = "x86_64".into();
    specs.push(libdep);
    specs.push(RpmSpec::new("extra", "5"));
    for spec in &specs {
        build_rpm(spec, dir)?;
    }
    let comps = dir.join("comps.xml");
    fs::write(&comps, comps_xml(&["hello"]))?;
    createrepo(dir, &["--groupfile", comps.to_str().context("path")?])?;
    let updateinfo = dir.join("updateinfo.xml");
    fs::write(&updateinfo, updateinfo_xml("libdep", "0.3", "1", "x86_64"))?;
    modifyrepo(&updateinfo, dir, "updateinfo")?;
    fs::remove_file(comps)?;
    fs::remove_file(updateinfo)?;
    Ok(())
}

/// Every file under `dir`, by relative path, with its bytes.
fn tree(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) -> Result<()> {
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(root, &path, out)?;
            } else {
                let rel = path.strip_prefix(root)?.to_string_lossy().into_owned();
                out.insert(rel, fs::read(&path)?);
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

fn server_with_remote(work: &Path, upstream: &str, extra: &str) -> Result<WharfServer> {
    let config = work.join("wharf.toml");
    fs::write(
        &config,
        format!(
            "[publish]\ngrace_secs = 3600\n\n[[rpm.remotes]]\nname = \"up\"\nurl = \"{upstream}\"\n\
             insecure_http = true\nrepository = \"el/base\"\nconcurrency = 4\n{extra}\n"
        ),
    )?;
    WharfServer::start_with_config(env!("CARGO_BIN_EXE_wharf"), Some(&config))
}

fn sync(server: &WharfServer) -> Result<String> {
    let out = run(&mut wharf_cli(server, &["sync", "up"]))?;
    Ok(out.stdout.trim().to_owned())
}

/// dnf against the mirror only, in its own installroot, cache and repo directory.
struct Dnf {
    root: PathBuf,
    reposdir: PathBuf,
    cache: PathBuf,
}

impl Dnf {
    fn new(work: &Path, server: &WharfServer) -> Result<Dnf> {
        let dnf = Dnf {
            root: work.join("installroot"),
            reposdir: work.join("repos.d"),
            cache: work.join("dnf-cache"),
        };
        for d in [&dnf.root, &dnf.reposdir, &dnf.cache] {
            fs::create_dir_all(d)?;
        }
        let (user, password) = server.credentials();
        fs::write(
            dnf.reposdir.join("wharf.repo"),
            format!(
                "[wharf]\nname=Wharf mirror\nbaseurl={}/rpm/el/base/\nenabled=1\ngpgcheck=0\n\
                 username={user}\npassword={password}\nmetadata_expire=0\n",
                server.url()
            ),
        )?;
        Ok(dnf)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(Tool::find("dnf").path());
        cmd.arg("--installroot")
            .arg(&self.root)
            .args(["--releasever", "12", "-y", "--nogpgcheck", "--quiet"])
            .arg(format!("--setopt=reposdir={}", self.reposdir.display()))
            .arg(format!("--setopt=cachedir={}", self.cache.display()))
            .args([
                "--setopt=skip_if_unavailable=0",
                "--setopt=install_weak_deps=0",
                "--repo=wharf",
            ])
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Result<String> {
        Ok(run(&mut self.cmd(args))?.stdout)
    }
}

#[test]
fn dnf_uses_an_exact_mirror_and_reposync_is_byte_identical() -> Result<()> {
    let work = tempfile::tempdir()?;
    let upstream_dir = work.path().join("upstream");
    fs::create_dir_all(&upstream_dir)?;
    build_upstream(&upstream_dir)?;
    let upstream = Upstream::serve(&upstream_dir)?;
    let server = server_with_remote(work.path(), &upstream.url, "")?;

    let first = sync(&server)?;
    ensure!(
        first.contains("4 packages (4 fetched, 0 already stored)") && first.contains("published"),
        "first sync: {first}"
    );

    let dnf = Dnf::new(work.path(), &server)?;
    dnf.run(&["makecache"])?;
    let available = dnf.run(&[
        "repoquery",
        "--available",
        "--queryformat",
        "%{name}-%{epoch}:%{version}-%{release}.%{arch}\n",
    ])?;
    for nevra in [
        "hello-0:1.0-1.noarch",
        "hello-2:2.0-1.noarch",
        "libdep-0:0.3-1.x86_64",
        "extra-0:5-1.noarch",
    ] {
        ensure!(
            available.contains(nevra),
            "{nevra} missing from {available}"
        );
    }
    let groups = run(&mut dnf.cmd(&["group", "list", "--hidden"]))?;
    ensure!(
        format!("{}{}", groups.stdout, groups.stderr).contains("Wharf Test"),
        "group list: {groups}"
    );
    let downloads = work.path().join("downloads");
    dnf.run(&[
        "download",
        "--destdir",
        downloads.to_str().context("path")?,
        "extra",
    ])?;
    ensure!(
        fs::read(downloads.join("extra-5-1.noarch.rpm"))?
            == fs::read(upstream_dir.join("noarch/extra-5-1.noarch.rpm"))?,
        "dnf download differs from upstream"
    );
    dnf.run(&["install", "hello"])?;
    let installed = run(Command::new(Tool::find("rpm").path())
        .arg("--root")
        .arg(&dnf.root)
        .args(["-q", "hello", "libdep"]))?;
    ensure!(
        installed.stdout.contains("hello-2.0-1.noarch")
            && installed.stdout.contains("libdep-0.3-1.x86_64"),
        "installed: {installed}"
    );
    // dnf lists advisories of installed packages only: libdep 0.3 (hello's dependency) is now.
    let advisories = run(&mut dnf.cmd(&["updateinfo", "list", "--all"]))?;
    ensure!(
        advisories.stdout.contains("WHARF-2026-0001"),
        "updateinfo: {advisories}"
    );

    // reposync with the metadata: every file upstream has, byte for byte, and nothing else.
    let synced = work.path().join("reposync");
    dnf.run(&[
        "reposync",
        "--download-metadata",
        "--norepopath",
        "-p",
        synced.to_str().context("path")?,
    ])?;
    let theirs = tree(&upstream_dir)?;
    let ours = tree(&synced)?;
    let names = |t: &BTreeMap<String, Vec<u8>>| t.keys().cloned().collect::<Vec<_>>();
    let packages = |t: &BTreeMap<String, Vec<u8>>| {
        t.iter()
            .filter(|(k, _)| k.ends_with(".rpm"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    ensure!(
        packages(&ours) == packages(&theirs),
        "reposync packages differ: {:?} vs {:?}",
        names(&ours),
        names(&theirs)
    );
    for (name, bytes) in &ours {
        ensure!(
            theirs.get(name) == Some(bytes),
            "reposync wrote {name}, which is not upstream's byte for byte"
        );
    }
    ensure!(
        ours.contains_key("repodata/repomd.xml"),
        "no repomd.xml in {:?}",
        names(&ours)
    );
    // And every file upstream has is served at its path, byte for byte.
    let served_files = fetch_all(&server, &theirs)?;
    ensure!(
        served_files == theirs.len(),
        "served {served_files} of {}",
        theirs.len()
    );

    // Nothing changed upstream: only repomd.xml (and its absent .asc) are asked for.
    let second = sync(&server)?;
    ensure!(second.contains("unchanged"), "second sync: {second}");
    Ok(())
}

/// Fetches every file of `expected` from the mirror and compares bytes; returns how many matched.
fn fetch_all(server: &WharfServer, expected: &BTreeMap<String, Vec<u8>>) -> Result<usize> {
    let out = tempfile::tempdir()?;
    let (user, password) = server.credentials();
    let mut matched = 0;
    for (name, bytes) in expected {
        let file = out.path().join("f");
        run(Command::new("curl")
            .args(["-sf", "-u", &format!("{user}:{password}"), "-o"])
            .arg(&file)
            .arg(format!("{}/rpm/el/base/{name}", server.url())))
        .with_context(|| format!("GET {name}"))?;
        ensure!(&fs::read(&file)? == bytes, "{name} differs from upstream");
        matched += 1;
    }
    Ok(matched)
}

fn get(server: &WharfServer, path: &str) -> Result<Option<Vec<u8>>> {
    let (user, password) = server.credentials();
    let out = Command::new("curl")
        .args([
            "-s",
            "-u",
            &format!("{user}:{password}"),
            "-w",
            "\n%{http_code}",
        ])
        .arg(format!("{}/rpm/el/base/{path}", server.url()))
        .output()?;
    let mut body = out.stdout;
    let at = body
        .iter()
        .rposition(|b| *b == b'\n')
        .context("curl printed no status")?;
    let status = String::from_utf8_lossy(&body[at + 1..]).trim().to_owned();
    body.truncate(at);
    match status.as_str() {
        "200" => Ok(Some(body)),
        "404" => Ok(None),
        other => bail!("GET {path}: {other}"),
    }
}

/// The href of the primary record in a repomd.xml.
fn primary_href(repomd: &[u8]) -> Result<String> {
    let md = wharf_rpm::Repomd::parse(repomd)?;
    Ok(md
        .record("primary")
        .context("no primary")?
        .location
        .href
        .clone())
}

#[test]
fn tampering_publishes_nothing_and_old_metadata_survives_a_publish() -> Result<()> {
    let work = tempfile::tempdir()?;
    let upstream_dir = work.path().join("upstream");
    fs::create_dir_all(&upstream_dir)?;
    let old = build_rpm(&RpmSpec::new("old", "1"), &upstream_dir)?;
    build_rpm(&RpmSpec::new("kept", "1"), &upstream_dir)?;
    createrepo(&upstream_dir, &[])?;
    let upstream = Upstream::serve(&upstream_dir)?;
    let server = server_with_remote(work.path(), &upstream.url, "")?;
    let first = sync(&server)?;
    ensure!(first.contains("2 packages"), "{first}");

    // A client reads repomd.xml now…
    let old_repomd = get(&server, "repodata/repomd.xml")?.context("repomd.xml")?;
    let old_primary = primary_href(&old_repomd)?;

    // Upstream moves on: `old` goes, `new` comes.
    fs::remove_file(&old)?;
    let new = build_rpm(&RpmSpec::new("new", "1"), &upstream_dir)?;
    fs::remove_dir_all(upstream_dir.join("repodata"))?;
    createrepo(&upstream_dir, &[])?;
    // A corrupted metadata file (one byte changed) is refused. (First: once a good copy of a
    // file is stored, a later run reuses it by checksum without fetching it again.)
    let new_repomd = fs::read(upstream_dir.join("repodata/repomd.xml"))?;
    let md = wharf_rpm::Repomd::parse(&new_repomd)?;
    let filelists = &md.record("filelists").context("filelists")?.location.href;
    let filelists_path = upstream_dir.join(filelists);
    let good_filelists = fs::read(&filelists_path)?;
    let mut bad_filelists = good_filelists.clone();
    bad_filelists[10] ^= 0x01;
    fs::write(&filelists_path, &bad_filelists)?;
    let failed = run_expect_failure(&mut wharf_cli(&server, &["sync", "up"]))?;
    ensure!(
        failed.stderr.contains("checksum mismatch") && failed.stderr.contains(filelists.as_str()),
        "corrupted metadata: {failed}"
    );
    ensure!(
        get(&server, "repodata/repomd.xml")?.as_deref() == Some(old_repomd.as_slice()),
        "a failed sync changed what is served"
    );
    fs::write(&filelists_path, &good_filelists)?;

    let good = fs::read(&new)?;
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    fs::write(&new, &bad)?;
    let failed = run_expect_failure(&mut wharf_cli(&server, &["sync", "up"]))?;
    ensure!(
        failed.stderr.contains("checksum mismatch") && failed.stderr.contains("new-1-1.noarch.rpm"),
        "corrupted package: {failed}"
    );
    ensure!(
        failed.stdout.contains("nothing published"),
        "corrupted package: {failed}"
    );
    ensure!(
        get(&server, "repodata/repomd.xml")?.as_deref() == Some(old_repomd.as_slice()),
        "a failed sync changed what is served"
    );
    fs::write(&new, &good)?;

    // Repaired upstream: published; the client holding the old repomd.xml still finds the
    // old primary and the dropped package (the grace period), and new clients see the new tree.
    let third = sync(&server)?;
    ensure!(
        third.contains("2 packages (1 fetched, 1 already stored)"),
        "{third}"
    );
    ensure!(
        get(&server, "repodata/repomd.xml")?.as_deref() == Some(new_repomd.as_slice()),
        "the new repomd.xml is not served"
    );
    ensure!(
        get(&server, &old_primary)?.is_some(),
        "old primary {old_primary} is gone right after the publish"
    );
    ensure!(
        get(&server, "noarch/old-1-1.noarch.rpm")?.is_some(),
        "a package the old metadata names is gone right after the publish"
    );
    ensure!(get(&server, "noarch/new-1-1.noarch.rpm")?.as_deref() == Some(good.as_slice()));
    Ok(())
}

#[test]
fn locations_outside_the_tree_are_refused_naming_the_package() -> Result<()> {
    let work = tempfile::tempdir()?;
    let upstream_dir = work.path().join("upstream");
    fs::create_dir_all(&upstream_dir)?;
    build_rpm(&RpmSpec::new("based", "1"), &upstream_dir)?;
    // createrepo_c writes xml:base into every location with --baseurl.
    createrepo(
        &upstream_dir,
        &["--baseurl", "http://elsewhere.invalid/repo/"],
    )?;
    let server = server_with_remote(work.path(), upstream_dir.to_str().context("path")?, "")?;
    let failed = run_expect_failure(&mut wharf_cli(&server, &["sync", "up"]))?;
    ensure!(
        failed.stderr.contains("based-1-1.noarch") && failed.stderr.contains("xml:base"),
        "{failed}"
    );
    ensure!(
        get(&server, "repodata/repomd.xml")?.is_none(),
        "something was published"
    );
    Ok(())
}
