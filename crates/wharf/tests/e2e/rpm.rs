//! rpm-md mirroring as dnf sees it. The upstream is built here with rpmbuild and createrepo_c
//! (several versions of a package, a dependency, an epoch, two arches, comps, an updateinfo
//! added by modifyrepo_c) and served by `python3 -m http.server`; `wharf sync` mirrors it into
//! `/rpm/el/base/`, and real dnf (`makecache`, `repoquery`, `updateinfo`, `group list`,
//! `download`, `install` into an installroot) uses the mirror. `dnf reposync` from the mirror
//! is byte-identical to upstream; a second sync fetches only repomd.xml. Tampering upstream (a
//! corrupted package, a corrupted metadata file) fails the sync with a message naming the file,
//! publishes nothing and leaves the previous snapshot served; and a client that read the old
//! repomd.xml still finds the old metadata and packages after a new snapshot is published.
//! Hosted repositories: packages uploaded with `wharf rpm upload` and `PUT /api/v1/rpm/…`,
//! read by dnf (repoquery, groups, advisories, install), the old metadata served after a new
//! upload, and bad packages and hostile names refused with nothing published.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use wharf_testkit::fixture::rpm::{
    build_rpm, comps_xml, createrepo, modifyrepo, updateinfo_xml, GpgKey, RpmSpec,
};
use wharf_testkit::{run, run_expect_failure, Tool, WharfServer};

use crate::acme::free_port;
use crate::support::wharf_cli;

/// `python3 -m http.server` over a directory, stopped on drop.
pub(crate) struct Upstream {
    child: Child,
    pub(crate) url: String,
}

impl Upstream {
    pub(crate) fn serve(dir: &Path) -> Result<Upstream> {
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

pub(crate) fn server_with_remote(work: &Path, upstream: &str, extra: &str) -> Result<WharfServer> {
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

pub(crate) fn sync(server: &WharfServer) -> Result<String> {
    let out = run(&mut wharf_cli(server, &["sync", "up"]))?;
    Ok(out.stdout.trim().to_owned())
}

/// dnf against the mirror only, in its own installroot, cache and repo directory.
pub(crate) struct Dnf {
    pub(crate) root: PathBuf,
    pub(crate) reposdir: PathBuf,
    cache: PathBuf,
}

impl Dnf {
    fn new(work: &Path, server: &WharfServer) -> Result<Dnf> {
        Dnf::for_repo(work, server, "el/base")
    }

    pub(crate) fn for_repo(work: &Path, server: &WharfServer, repo: &str) -> Result<Dnf> {
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
                "[wharf]\nname=Wharf mirror\nbaseurl={}/rpm/{repo}/\nenabled=1\ngpgcheck=0\n\
                 username={user}\npassword={password}\nmetadata_expire=0\n",
                server.url()
            ),
        )?;
        Ok(dnf)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        self.cmd_checking(false, args)
    }

    /// `checking`: dnf applies the repository's gpgcheck/repo_gpgcheck settings
    /// instead of `--nogpgcheck`.
    pub(crate) fn cmd_checking(&self, checking: bool, args: &[&str]) -> Command {
        let mut cmd = Command::new(Tool::find("dnf").path());
        cmd.arg("--installroot")
            .arg(&self.root)
            .args(["--releasever", "12", "-y", "--quiet"]);
        if !checking {
            cmd.arg("--nogpgcheck");
        }
        cmd.arg(format!("--setopt=reposdir={}", self.reposdir.display()))
            .arg(format!("--setopt=cachedir={}", self.cache.display()))
            .args([
                "--setopt=skip_if_unavailable=0",
                "--setopt=install_weak_deps=0",
                "--repo=wharf",
            ])
            .args(args);
        cmd
    }

    pub(crate) fn run(&self, args: &[&str]) -> Result<String> {
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

/// GET `/rpm/REPO/PATH` with the server's credentials: the body, or `None` on 404.
pub(crate) fn get_in(server: &WharfServer, repo: &str, path: &str) -> Result<Option<Vec<u8>>> {
    let (user, password) = server.credentials();
    let out = Command::new("curl")
        .args([
            "-s",
            "-u",
            &format!("{user}:{password}"),
            "-w",
            "\n%{http_code}",
        ])
        .arg(format!("{}/rpm/{repo}/{path}", server.url()))
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
        other => bail!("GET {repo}/{path}: {other}"),
    }
}

/// A file of the mirror `el/base`.
fn get(server: &WharfServer, path: &str) -> Result<Option<Vec<u8>>> {
    get_in(server, "el/base", path)
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

/// curl with the server's credentials (`auth`), `--path-as-is` so hostile paths reach the
/// server unnormalized: the status and the body.
pub(crate) fn curl_api(
    server: &WharfServer,
    auth: bool,
    method: &str,
    path: &str,
    upload: Option<&Path>,
) -> Result<(u16, String)> {
    let (user, password) = server.credentials();
    let mut cmd = Command::new(Tool::find("curl").path());
    cmd.args(["-s", "--path-as-is", "-X", method, "-w", "\n%{http_code}"]);
    if auth {
        cmd.arg("-u").arg(format!("{user}:{password}"));
    }
    if let Some(file) = upload {
        cmd.arg("--data-binary").arg(format!("@{}", file.display()));
    }
    let out = cmd.arg(format!("{}{path}", server.url())).output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').context("curl printed no status")?;
    Ok((status.trim().parse()?, body.to_owned()))
}

/// A file of the hosted repository `hosted/el`.
fn hosted_file(server: &WharfServer, path: &str) -> Result<Option<Vec<u8>>> {
    get_in(server, "hosted/el", path)
}

#[test]
fn hosted_repositories_take_uploads_dnf_installs_and_bad_packages_publish_nothing() -> Result<()> {
    let work = tempfile::tempdir()?;
    let built = work.path().join("built");
    let mut hello1 = RpmSpec::new("hello", "1.0");
    hello1.requires = vec!["libdep".into()];
    hello1.extra = vec![
        "Recommends: extra".into(),
        "Provides: greeting = 1.0".into(),
    ];
    let mut hello2 = RpmSpec::new("hello", "2.0");
    hello2.epoch = Some(2);
    hello2.requires = vec!["libdep >= 0.3".into()];
    hello2.extra = vec!["Obsoletes: oldhello < 2".into()];
    let mut libdep = RpmSpec::new("libdep", "0.3");
    libdep.arch = "x86_64".into();
    let mut libdep_arm = libdep.clone();
    libdep_arm.arch = "aarch64".into();
    let extra = RpmSpec::new("extra", "5");
    let rpms: Vec<PathBuf> = [&hello1, &hello2, &libdep, &libdep_arm, &extra]
        .iter()
        .map(|s| build_rpm(s, &built))
        .collect::<Result<_>>()?;
    let comps = work.path().join("comps.xml");
    fs::write(&comps, comps_xml(&["hello"]))?;
    let updateinfo = work.path().join("updateinfo.xml");
    fs::write(&updateinfo, updateinfo_xml("libdep", "0.3", "1", "x86_64"))?;

    // el/base is a mirror's (its upstream never answers: only the refusal matters).
    let server = server_with_remote(work.path(), "http://127.0.0.1:9/", "")?;
    let refused = run_expect_failure(&mut wharf_cli(
        &server,
        &[
            "rpm",
            "upload",
            "--repo",
            "el/base",
            rpms[0].to_str().context("path")?,
        ],
    ))?;
    ensure!(
        refused.stderr.contains("filled by an rpm mirror"),
        "{}",
        refused.stderr
    );

    // The CLI: four packages, comps and updateinfo in one snapshot.
    let mut args = vec![
        "rpm".to_string(),
        "upload".into(),
        "--repo".into(),
        "hosted/el".into(),
        "--comps".into(),
        comps.display().to_string(),
        "--updateinfo".into(),
        updateinfo.display().to_string(),
    ];
    for rpm in [&rpms[0], &rpms[2], &rpms[3], &rpms[4]] {
        args.push(rpm.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&mut wharf_cli(&server, &args))?;
    ensure!(
        out.stdout.contains("hosted/el: 4 packages") && out.stdout.contains("published"),
        "{}",
        out.stdout
    );

    let dnf = Dnf::for_repo(&work.path().join("dnf1"), &server, "hosted/el")?;
    dnf.run(&["makecache"])?;

    // repomd.xml is signed with Wharf's own key, which anyone may fetch: dnf with
    // repo_gpgcheck=1 and that key takes the repository.
    let wharf_key = work.path().join("wharf.asc");
    run(Command::new(Tool::find("curl").path())
        .args(["-sf", "-o"])
        .arg(&wharf_key)
        .arg(format!("{}/keys/wharf.asc", server.url())))?;
    let checked = Dnf::for_repo(&work.path().join("dnf-checked"), &server, "hosted/el")?;
    let repo_file = checked.reposdir.join("wharf.repo");
    let text = fs::read_to_string(&repo_file)?.replace(
        "gpgcheck=0\n",
        &format!(
            "gpgcheck=0\nrepo_gpgcheck=1\ngpgkey=file://{}\n",
            wharf_key.display()
        ),
    );
    fs::write(&repo_file, text)?;
    run(&mut checked.cmd_checking(true, &["makecache"]))
        .context("dnf makecache with repo_gpgcheck=1 and Wharf's key")?;
    let nevra = "%{name}-%{epoch}:%{version}-%{release}.%{arch}\n";
    let listed = dnf.run(&["repoquery", "--forcearch=aarch64", "--queryformat", nevra])?;
    let mut listed: Vec<&str> = listed.lines().filter(|l| !l.is_empty()).collect();
    listed.sort();
    ensure!(
        listed
            == [
                "extra-0:5-1.noarch",
                "hello-0:1.0-1.noarch",
                "libdep-0:0.3-1.aarch64",
                "libdep-0:0.3-1.x86_64"
            ],
        "{listed:?}"
    );
    let requires = dnf.run(&["repoquery", "--requires", "hello"])?;
    ensure!(requires.trim() == "libdep", "{requires}");
    let recommends = dnf.run(&["repoquery", "--recommends", "hello"])?;
    ensure!(recommends.trim() == "extra", "{recommends}");
    let provides = dnf.run(&["repoquery", "--whatprovides", "greeting"])?;
    ensure!(provides.trim() == "hello-0:1.0-1.noarch", "{provides}");
    let groups = dnf.run(&["group", "list", "--hidden"])?;
    ensure!(groups.contains("Wharf Test"), "{groups}");

    // A client holding the old repomd.xml; the API uploads 2:2.0 and publishes.
    let old_repomd = hosted_file(&server, "repodata/repomd.xml")?.context("no repomd.xml")?;
    let old_primary = primary_href(&old_repomd)?;
    let (status, body) = curl_api(
        &server,
        false,
        "PUT",
        "/api/v1/rpm/hosted/el/packages/hello-2.0-1.noarch.rpm",
        Some(&rpms[1]),
    )?;
    ensure!(status == 401, "anonymous upload: {status} {body}");
    let (status, body) = curl_api(
        &server,
        true,
        "PUT",
        "/api/v1/rpm/hosted/el/packages/hello-2.0-1.noarch.rpm",
        Some(&rpms[1]),
    )?;
    ensure!(status == 201, "upload: {status} {body}");
    let answer: serde_json::Value = serde_json::from_str(&body)?;
    ensure!(answer["package"] == "hello-2:2.0-1.noarch", "{answer}");
    ensure!(
        answer["sha256"].as_str()
            == Some(wharf_core::Digest::sha256_of(&fs::read(&rpms[1])?).hex()),
        "{answer}"
    );
    let new_repomd = hosted_file(&server, "repodata/repomd.xml")?.context("no repomd.xml")?;
    ensure!(new_repomd != old_repomd, "a new repomd.xml is served");
    ensure!(primary_href(&new_repomd)? != old_primary);
    ensure!(
        hosted_file(&server, &old_primary)?.is_some(),
        "the old primary is still served within the grace period"
    );
    let (status, body) = curl_api(
        &server,
        true,
        "PUT",
        "/api/v1/rpm/hosted/el/packages/hello-2.0-1.noarch.rpm",
        Some(&rpms[1]),
    )?;
    ensure!(status == 409, "a second upload: {status} {body}");

    // Bad input: refused with a message, nothing published.
    // A package not uploaded yet, so only its damage can be the reason.
    let bytes = fs::read(build_rpm(&RpmSpec::new("fresh", "1"), &built)?)?;
    let truncated = work.path().join("truncated.rpm");
    fs::write(&truncated, &bytes[..bytes.len() - 100])?;
    let not_rpm = work.path().join("notes.rpm");
    fs::write(&not_rpm, b"just some text, not a package\n")?;
    let flipped = work.path().join("flipped.rpm");
    let mut flip = bytes.clone();
    // In the middle of the main header, which its SHA-256 in the signature header covers.
    let wharf_rpm::header::Parsed::Done(header) = wharf_rpm::header::parse(&bytes)? else {
        bail!("the built package's headers do not parse");
    };
    flip[((header.header_start + header.header_end) / 2) as usize] ^= 0x40;
    fs::write(&flipped, &flip)?;
    let before = hosted_file(&server, "repodata/repomd.xml")?;
    for (file, path, want) in [
        (
            &truncated,
            "/api/v1/rpm/hosted/el/packages/t.rpm",
            "truncated",
        ),
        (
            &not_rpm,
            "/api/v1/rpm/hosted/el/packages/n.rpm",
            "not an RPM",
        ),
        (&flipped, "/api/v1/rpm/hosted/el/packages/f.rpm", "digest"),
        (
            &rpms[0],
            "/api/v1/rpm/hosted/el/packages/../x.rpm",
            "not a package file name",
        ),
        (
            &rpms[0],
            "/api/v1/rpm/hosted/el/packages/%2e%2e%2fx.rpm",
            "not a package file name",
        ),
    ] {
        let (status, body) = curl_api(&server, true, "PUT", path, Some(file))?;
        ensure!(
            status == 400 && body.contains(want),
            "{path}: {status} {body}"
        );
    }
    ensure!(
        hosted_file(&server, "repodata/repomd.xml")? == before,
        "nothing was published"
    );
    let refused = run_expect_failure(&mut wharf_cli(
        &server,
        &[
            "rpm",
            "upload",
            "--repo",
            "hosted/el",
            truncated.to_str().context("path")?,
        ],
    ))?;
    ensure!(
        refused.stderr.contains("truncated") && refused.stderr.contains("nothing was published"),
        "{}",
        refused.stderr
    );

    // dnf installs the newest hello with its dependency.
    let dnf = Dnf::for_repo(&work.path().join("dnf2"), &server, "hosted/el")?;
    dnf.run(&["install", "hello"])?;
    let installed = run(Command::new(Tool::find("rpm").path())
        .arg("--root")
        .arg(&dnf.root)
        .args(["-q", "hello", "libdep"]))?
    .stdout;
    ensure!(
        installed.contains("hello-2.0-1.noarch") && installed.contains("libdep-0.3-1.x86_64"),
        "{installed}"
    );
    // dnf lists advisories of installed packages only: libdep 0.3 is now.
    let advisories = dnf.run(&["updateinfo", "list", "--all"])?;
    ensure!(advisories.contains("WHARF-2026-0001"), "{advisories}");

    // Removal, by the CLI and the API.
    run(&mut wharf_cli(
        &server,
        &["rpm", "rm", "--repo", "hosted/el", "hello-1.0-1.noarch"],
    ))?;
    let (status, body) = curl_api(
        &server,
        true,
        "DELETE",
        "/api/v1/rpm/hosted/el/packages/libdep-0.3-1.aarch64",
        None,
    )?;
    ensure!(status == 200, "delete: {status} {body}");
    let (status, _) = curl_api(
        &server,
        true,
        "DELETE",
        "/api/v1/rpm/hosted/el/packages/libdep-0.3-1.aarch64",
        None,
    )?;
    ensure!(status == 404, "a second delete: {status}");
    let dnf = Dnf::for_repo(&work.path().join("dnf3"), &server, "hosted/el")?;
    let listed = dnf.run(&["repoquery", "--forcearch=aarch64", "--queryformat", nevra])?;
    let mut listed: Vec<&str> = listed.lines().filter(|l| !l.is_empty()).collect();
    listed.sort();
    ensure!(
        listed
            == [
                "extra-0:5-1.noarch",
                "hello-2:2.0-1.noarch",
                "libdep-0:0.3-1.x86_64"
            ],
        "{listed:?}"
    );
    Ok(())
}

/// `[rpm] upload_gpg_keys`: a hosted repository takes only packages a trusted key signed
/// (rpmsign's header signature); unsigned ones and ones another key signed are refused, and
/// nothing of a refused upload is published.
#[test]
fn upload_gpg_keys_take_only_packages_a_trusted_key_signed() -> Result<()> {
    let work = tempfile::tempdir()?;
    let built = work.path().join("built");
    let trusted = GpgKey::generate("packager")?;
    let intruder = GpgKey::generate("intruder")?;
    let good = build_rpm(&RpmSpec::new("good", "1.0"), &built)?;
    trusted.sign_rpm(&good)?;
    let unsigned = build_rpm(&RpmSpec::new("plain", "1.0"), &built)?;
    let forged = build_rpm(&RpmSpec::new("forged", "1.0"), &built)?;
    intruder.sign_rpm(&forged)?;

    let config = work.path().join("wharf.toml");
    fs::write(
        &config,
        format!(
            "[rpm]\nupload_gpg_keys = [\"{}\"]\n",
            trusted.public_key.display()
        ),
    )?;
    let server = WharfServer::start_with_config(env!("CARGO_BIN_EXE_wharf"), Some(&config))?;
    let upload = |rpm: &Path| {
        wharf_cli(
            &server,
            &[
                "rpm",
                "upload",
                "--repo",
                "hosted/el",
                rpm.to_str().expect("utf-8 path"),
            ],
        )
    };
    run(&mut upload(&good))?;
    let repomd = hosted_file(&server, "repodata/repomd.xml")?.context("no repomd.xml")?;
    for (rpm, why) in [
        (&unsigned, "is not signed"),
        (&forged, "not one a trusted key made"),
    ] {
        let refused = run_expect_failure(&mut upload(rpm))?;
        ensure!(refused.stderr.contains(why), "{}", refused.stderr);
    }
    // Still the snapshot of the one good package.
    ensure!(hosted_file(&server, "repodata/repomd.xml")?.as_ref() == Some(&repomd));
    ensure!(hosted_file(&server, "Packages/good-1.0-1.noarch.rpm")?.is_some());
    ensure!(hosted_file(&server, "Packages/plain-1.0-1.noarch.rpm")?.is_none());
    Ok(())
}

/// A metalink for repomd.xml whose SHA-256 is `sha256`, listing `mirrors`
/// (base URLs) with their preferences.
fn metalink(sha256: &str, mirrors: &[(&str, u32)]) -> String {
    let urls: String = mirrors
        .iter()
        .map(|(base, preference)| {
            format!(
                "<url protocol=\"http\" type=\"http\" location=\"XX\" preference=\"{preference}\">\
                 {base}repodata/repomd.xml</url>\n"
            )
        })
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<metalink version=\"3.0\" \
         xmlns=\"http://www.metalinker.org/\" type=\"dynamic\" \
         xmlns:mm0=\"http://fedorahosted.org/mirrormanager\">\n<files>\n\
         <file name=\"repomd.xml\">\n<mm0:timestamp>1700000000</mm0:timestamp>\n\
         <verification>\n<hash type=\"md5\">00000000000000000000000000000000</hash>\n\
         <hash type=\"sha256\">{sha256}</hash>\n</verification>\n\
         <resources maxconnections=\"1\">\n{urls}</resources>\n</file>\n</files>\n</metalink>\n"
    )
}

fn server_with_list(work: &Path, key: &str, list_url: &str) -> Result<WharfServer> {
    fs::create_dir_all(work)?;
    let config = work.join("wharf.toml");
    fs::write(
        &config,
        format!(
            "[[rpm.remotes]]\nname = \"up\"\n{key} = \"{list_url}\"\ninsecure_http = true\n\
             repository = \"el/base\"\n"
        ),
    )?;
    WharfServer::start_with_config(env!("CARGO_BIN_EXE_wharf"), Some(&config))
}

#[test]
fn metalinks_choose_a_mirror_whose_repomd_they_vouch_for_and_mirrorlists_the_first_that_answers(
) -> Result<()> {
    let work = tempfile::tempdir()?;
    let good_dir = work.path().join("good");
    fs::create_dir_all(&good_dir)?;
    build_upstream(&good_dir)?;
    // A stale mirror: a valid repository, but not the one the metalink vouches for.
    let stale_dir = work.path().join("stale");
    build_rpm(&RpmSpec::new("stale", "1"), &stale_dir)?;
    createrepo(&stale_dir, &[])?;
    let good = Upstream::serve(&good_dir)?;
    let stale = Upstream::serve(&stale_dir)?;
    let lists_dir = work.path().join("lists");
    fs::create_dir_all(&lists_dir)?;
    let lists = Upstream::serve(&lists_dir)?;
    let repomd = fs::read(good_dir.join("repodata/repomd.xml"))?;
    let sha256 = wharf_core::Digest::sha256_of(&repomd).hex().to_owned();
    let dead = "http://127.0.0.1:9/";

    // Preference order: the stale mirror, a dead one, then the good one.
    fs::write(
        lists_dir.join("metalink.xml"),
        metalink(&sha256, &[(&stale.url, 100), (dead, 95), (&good.url, 90)]),
    )?;
    let server = server_with_list(
        &work.path().join("m"),
        "metalink",
        &format!("{}metalink.xml", lists.url),
    )?;
    let out = sync(&server)?;
    ensure!(out.contains("up"), "{out}");
    ensure!(
        get_in(&server, "el/base", "repodata/repomd.xml")? == Some(repomd.clone()),
        "the mirror's repomd.xml is not the one the metalink vouches for"
    );
    let expected = tree(&good_dir)?;
    ensure!(fetch_all(&server, &expected)? == expected.len());
    drop(server);

    // A metalink no mirror matches publishes nothing, naming why.
    fs::write(
        lists_dir.join("bad.xml"),
        metalink(&"0".repeat(64), &[(&stale.url, 100), (&good.url, 90)]),
    )?;
    let server = server_with_list(
        &work.path().join("b"),
        "metalink",
        &format!("{}bad.xml", lists.url),
    )?;
    let refused = run_expect_failure(&mut wharf_cli(&server, &["sync", "up"]))?;
    ensure!(
        refused
            .stderr
            .contains("no mirror served a usable repomd.xml")
            && refused
                .stderr
                .contains("not the repomd.xml the metalink vouches for"),
        "{}",
        refused.stderr
    );
    ensure!(get_in(&server, "el/base", "repodata/repomd.xml")?.is_none());
    drop(server);

    // A mirrorlist: the dead mirror is passed over, the next one serves.
    fs::write(
        lists_dir.join("mirrorlist"),
        format!("# repo = el arch = x86_64\n{dead}\n{}\n", good.url),
    )?;
    let server = server_with_list(
        &work.path().join("l"),
        "mirrorlist",
        &format!("{}mirrorlist", lists.url),
    )?;
    sync(&server)?;
    ensure!(get_in(&server, "el/base", "repodata/repomd.xml")? == Some(repomd));
    let dnf = Dnf::new(&work.path().join("dnf"), &server)?;
    dnf.run(&["makecache"])?;
    let listed = dnf.run(&["repoquery", "--queryformat", "%{name}\n", "hello"])?;
    ensure!(listed.contains("hello"), "{listed}");
    Ok(())
}
