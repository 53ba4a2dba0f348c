//! OSTree mirroring as the stock `ostree` client sees it: an upstream built with `ostree
//! init/commit` (several refs and commits, symlinks, a hardlink, xattrs, a setuid file, empty
//! and non-ASCII directories, a larger file), GPG-signed commits and summary, served over
//! HTTP; `wharf sync` mirrors it; `ostree pull --mirror` into an archive repository and a
//! plain `ostree pull` into a bare-user one from wharf's `/ostree/<repo>/` with
//! `gpg-verify=true` and `gpg-verify-summary=true`, both `ostree fsck` clean; a re-sync with
//! nothing changed fetches nothing; an update fetches only the new objects; and bad upstream
//! input (a flipped bit, a truncated object, a ref named `../x`) is refused with nothing
//! published and the previous snapshot still served.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use wharf_ostree::gvariant::Value;
use wharf_ostree::object::{Commit, DirTree};
use wharf_ostree::summary::{Summary, SummaryRef};
use wharf_ostree::{Checksum, ObjectName, ObjectType};
use wharf_testkit::{run, run_expect_failure, WharfServer};

use crate::acme::free_port;
use crate::raw_server::{config_with_password, serve_command, wharf_bin, RawServer};
use crate::support::{scratch, wharf_cli};

pub(crate) fn ostree(repo: &Path) -> Command {
    let mut c = Command::new("ostree");
    c.arg(format!("--repo={}", repo.display()));
    c
}

pub(crate) fn make_tree(dir: &Path, variant: &str, files: usize) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir.join("usr/bin"))?;
    std::fs::create_dir_all(dir.join("usr/share/doc"))?;
    std::fs::create_dir_all(dir.join("var/empty/deeper"))?;
    std::fs::create_dir_all(dir.join("données/ünïcødé"))?;
    for i in 0..files {
        std::fs::write(
            dir.join(format!("usr/share/doc/file{i}.txt")),
            format!("doc {i}\n"),
        )?;
    }
    for i in 0..20 {
        std::fs::write(
            dir.join(format!("usr/bin/tool{i}")),
            format!("#!/bin/sh\necho {i} {variant}\n"),
        )?;
    }
    std::fs::write(dir.join("données/ünïcødé/fichier été.txt"), "é\n")?;
    std::os::unix::fs::symlink("usr/bin/tool1", dir.join("link"))?;
    std::os::unix::fs::symlink("/nowhere", dir.join("dangling"))?;
    std::fs::hard_link(dir.join("usr/bin/tool2"), dir.join("hardlink"))?;
    std::fs::write(dir.join("usr/bin/su"), "setuid\n")?;
    std::fs::set_permissions(
        dir.join("usr/bin/su"),
        std::fs::Permissions::from_mode(0o4755),
    )?;
    let big: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    std::fs::write(dir.join("big.bin"), big)?;
    run(Command::new("python3")
        .args([
            "-c",
            "import os,sys; os.setxattr(sys.argv[1], 'user.wharf', b'yes')",
        ])
        .arg(dir.join("usr/bin/tool3")))?;
    Ok(())
}

/// A GPG key in its own home, and its armored public key.
pub(crate) struct Gpg {
    pub(crate) home: PathBuf,
    pub(crate) key_id: String,
    pub(crate) public: PathBuf,
}

pub(crate) fn gpg_key(dir: &Path) -> Result<Gpg> {
    let home = dir.join("gnupg");
    std::fs::create_dir_all(&home)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700))?;
    run(Command::new("gpg").env("GNUPGHOME", &home).args([
        "--batch",
        "--passphrase",
        "",
        "--quick-gen-key",
        "Wharf Test <ostree@wharf.test>",
        "rsa2048",
        "sign",
        "never",
    ]))?;
    let listed = run(Command::new("gpg").env("GNUPGHOME", &home).args([
        "--batch",
        "--with-colons",
        "--list-keys",
    ]))?;
    let key_id = listed
        .stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("fpr:")
                .map(|r| r.trim_matches(':').to_owned())
        })
        .context("no fingerprint")?;
    let public = dir.join("key.asc");
    let exported = Command::new("gpg")
        .env("GNUPGHOME", &home)
        .args(["--batch", "--armor", "--export", &key_id])
        .output()?;
    std::fs::write(&public, exported.stdout)?;
    Ok(Gpg {
        home,
        key_id,
        public,
    })
}

pub(crate) fn commit(repo: &Path, gpg: &Gpg, branch: &str, tree: &Path) -> Result<String> {
    let out = run(ostree(repo)
        .args([
            "commit",
            "-b",
            branch,
            "-s",
            "a commit",
            "--add-metadata-string=version=1",
        ])
        .arg(format!("--tree=dir={}", tree.display()))
        .arg(format!("--gpg-sign={}", gpg.key_id))
        .arg(format!("--gpg-homedir={}", gpg.home.display())))?;
    Ok(out.stdout.trim().to_owned())
}

pub(crate) fn summary_update(repo: &Path, gpg: &Gpg) -> Result<()> {
    run(ostree(repo)
        .args(["summary", "-u"])
        .arg(format!("--gpg-sign={}", gpg.key_id))
        .arg(format!("--gpg-homedir={}", gpg.home.display())))?;
    Ok(())
}

pub(crate) struct HttpServer(Child);

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn serve_dir(dir: &Path) -> Result<(HttpServer, String)> {
    let port = free_port()?;
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let server = HttpServer(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(
            Instant::now() < deadline,
            "python3 -m http.server did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((server, format!("http://127.0.0.1:{port}")))
}

fn summary_line(out: &str) -> Result<String> {
    out.lines()
        .rev()
        .find(|l| l.contains("content objects fetched"))
        .map(str::to_owned)
        .with_context(|| format!("no summary line in:\n{out}"))
}

/// The number before ` WHAT` in a summary line.
fn count(line: &str, what: &str) -> Result<u64> {
    let words: Vec<&str> = line
        .split([' ', ',', ';'])
        .filter(|w| !w.is_empty())
        .collect();
    words
        .windows(2)
        .find(|w| w[1] == what)
        .and_then(|w| w[0].parse().ok())
        .with_context(|| format!("no count of {what} in {line:?}"))
}

pub(crate) fn curl_bytes(url: &str) -> Result<Vec<u8>> {
    let out = Command::new("curl").args(["-sf", url]).output()?;
    ensure!(out.status.success(), "curl {url}: {}", out.status);
    Ok(out.stdout)
}

fn read_object(repo: &Path, checksum: Checksum, kind: ObjectType) -> Result<Vec<u8>> {
    Ok(std::fs::read(
        repo.join(ObjectName::new(checksum, kind).path()),
    )?)
}

#[test]
fn ostree_clients_pull_a_verified_mirror_and_bad_upstreams_publish_nothing() -> Result<()> {
    let tmp = scratch()?;
    let dir = tmp.path();
    let gpg = gpg_key(dir)?;
    let up = dir.join("upstream");
    run(ostree(&up).args(["init", "--mode=archive"]))?;
    for (i, branch) in ["main", "main", "os/x86_64/stable"].iter().enumerate() {
        let tree = dir.join(format!("tree{i}"));
        make_tree(&tree, &i.to_string(), 200)?;
        commit(&up, &gpg, branch, &tree)?;
    }
    summary_update(&up, &gpg)?;
    let (_http, url) = serve_dir(&up)?;

    let config = dir.join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "[[ostree.remotes]]\nname = \"up\"\nurl = \"{url}\"\ninsecure_http = true\n\
             repository = \"os/mirror\"\ndepth = -1\n\n\
             [[auth.grants]]\nsubject = \"anonymous\"\nrepositories = \"os/**\"\nactions = [\"pull\"]\n"
        ),
    )?;
    let bin = Path::new(env!("CARGO_BIN_EXE_wharf"));
    let server = WharfServer::start_with_config(bin, Some(&config))?;
    let first = run(&mut wharf_cli(&server, &["sync", "up"]))?;
    let line = summary_line(&first.stdout)?;
    ensure!(count(&line, "content")? > 200, "{line}");
    ensure!(line.contains("published"), "{line}");
    let base = format!("{}/ostree/os/mirror", server.url());
    ensure!(
        curl_bytes(&format!("{base}/summary"))? == std::fs::read(up.join("summary"))?,
        "all refs taken: the summary is upstream's, byte for byte"
    );

    // Stock clients, verifying the upstream's signatures on commits and summary.
    let pull = |mode: &str, name: &str, mirror: bool| -> Result<PathBuf> {
        let repo = dir.join(name);
        if !repo.exists() {
            run(ostree(&repo).args(["init", &format!("--mode={mode}")]))?;
            run(ostree(&repo)
                .args([
                    "remote",
                    "add",
                    "--set=gpg-verify=true",
                    "--set=gpg-verify-summary=true",
                ])
                .arg(format!("--gpg-import={}", gpg.public.display()))
                .args(["wharf", &format!("{base}/")]))?;
        }
        let mut cmd = ostree(&repo);
        cmd.arg("pull");
        if mirror {
            cmd.arg("--mirror");
            cmd.arg("--depth=-1");
        }
        cmd.args(["wharf", "main"]);
        if mirror {
            cmd.arg("os/x86_64/stable");
        }
        run(&mut cmd)?;
        run(ostree(&repo).args(["fsck"]))?;
        Ok(repo)
    };
    let mirror = pull("archive", "client-mirror", true)?;
    let bare = pull("bare-user", "client-bare", false)?;
    let upstream_main = std::fs::read_to_string(up.join("refs/heads/main"))?;
    ensure!(std::fs::read_to_string(mirror.join("refs/heads/main"))? == upstream_main);
    let checkout = dir.join("checkout");
    run(ostree(&bare)
        .args(["checkout", "-U", "wharf:main"])
        .arg(&checkout))?;
    ensure!(std::fs::read_link(checkout.join("link"))? == Path::new("usr/bin/tool1"));
    ensure!(std::fs::read_to_string(checkout.join("données/ünïcødé/fichier été.txt"))? == "é\n");
    ensure!(checkout.join("var/empty/deeper").is_dir());

    // `wharf snapshot show` lists the published snapshot whole: every upstream object, at its path.
    let shown = run(&mut wharf_cli(
        &server,
        &["snapshot", "show", "os/mirror", "1"],
    ))?
    .stdout;
    let shown: std::collections::BTreeSet<String> = shown
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|p| p.starts_with("objects/"))
        .map(str::to_owned)
        .collect();
    let mut upstream_objects = std::collections::BTreeSet::new();
    for d in std::fs::read_dir(up.join("objects"))? {
        let d = d?;
        for f in std::fs::read_dir(d.path())? {
            upstream_objects.insert(format!(
                "objects/{}/{}",
                d.file_name().to_string_lossy(),
                f?.file_name().to_string_lossy()
            ));
        }
    }
    ensure!(
        shown == upstream_objects && shown.len() > 200,
        "snapshot show: {} objects, upstream {}",
        shown.len(),
        upstream_objects.len()
    );

    // Nothing changed: nothing fetched.
    let again = summary_line(&run(&mut wharf_cli(&server, &["sync", "up"]))?.stdout)?;
    ensure!(
        count(&again, "metadata")? == 0 && count(&again, "content")? == 0,
        "{again}"
    );

    // An update: only the new objects (20 changed tools), then the clients pull it.
    let tree = dir.join("tree-update");
    make_tree(&tree, "update", 200)?;
    let new = commit(&up, &gpg, "main", &tree)?;
    summary_update(&up, &gpg)?;
    let update = summary_line(&run(&mut wharf_cli(&server, &["sync", "up"]))?.stdout)?;
    let fetched = count(&update, "content")?;
    ensure!(
        (20..=22).contains(&fetched),
        "only the changed files are fetched: {update}"
    );
    pull("bare-user", "client-bare", false)?;
    ensure!(std::fs::read_to_string(bare.join("refs/remotes/wharf/main"))?.trim() == new);
    let served_summary = curl_bytes(&format!("{base}/summary"))?;

    // A flipped bit in an object of a new commit: refused, nothing published.
    let tree = dir.join("tree-bad");
    make_tree(&tree, "bad", 200)?;
    let bad = commit(&up, &gpg, "main", &tree)?;
    summary_update(&up, &gpg)?;
    let root = Commit::parse(&read_object(
        &up,
        Checksum::from_hex(&bad)?,
        ObjectType::Commit,
    )?)?
    .root_tree;
    let root = DirTree::parse(&read_object(&up, root, ObjectType::DirTree)?)?;
    let usr = DirTree::parse(&read_object(
        &up,
        root.dirs.iter().find(|d| d.0 == "usr").context("usr")?.1,
        ObjectType::DirTree,
    )?)?;
    let bin_dir = DirTree::parse(&read_object(
        &up,
        usr.dirs.iter().find(|d| d.0 == "bin").context("bin")?.1,
        ObjectType::DirTree,
    )?)?;
    let victim = up.join(ObjectName::new(bin_dir.files[4].1, ObjectType::File).path());
    let good = std::fs::read(&victim)?;
    let mut flipped = good.clone();
    let at = flipped.len() - 2;
    flipped[at] ^= 0x01;
    std::fs::write(&victim, &flipped)?;
    let refused = run_expect_failure(&mut wharf_cli(&server, &["sync", "up"]))?;
    ensure!(
        refused.stdout.contains("nothing published") && refused.stdout.contains(".filez"),
        "{refused}"
    );
    ensure!(
        curl_bytes(&format!("{base}/summary"))? == served_summary,
        "the previous snapshot is still served"
    );

    // A truncated content object: refused too.
    std::fs::write(&victim, &good[..good.len() / 2])?;
    let truncated = run_expect_failure(&mut wharf_cli(&server, &["sync", "up"]))?;
    ensure!(truncated.stdout.contains("truncated"), "{truncated}");
    std::fs::write(&victim, &good)?;

    // A summary listing a ref named `../x`: refused before anything is fetched.
    let mut evil = Summary::parse(&std::fs::read(up.join("summary"))?)?;
    let first_ref = evil.refs[0].clone();
    evil.refs.push(SummaryRef {
        name: "../x".into(),
        ..first_ref
    });
    std::fs::write(up.join("summary"), evil.encode())?;
    std::fs::remove_file(up.join("summary.sig"))?;
    let evil_run = run_expect_failure(&mut wharf_cli(&server, &["sync", "up"]))?;
    ensure!(
        evil_run
            .stdout
            .contains("a ref named \"../x\", which is not a valid ref name"),
        "{evil_run}"
    );
    ensure!(curl_bytes(&format!("{base}/summary"))? == served_summary);
    pull("bare-user", "client-bare", false)?;

    // `wharf ostree import` takes a local repository through the same checks.
    let from = up.display().to_string();
    let imported = run(&mut wharf_cli(
        &server,
        &["ostree", "import", "--repo", "os/imported", "--from", &from],
    ))?;
    ensure!(imported.stdout.contains("published"), "{imported}");
    let served_main = curl_bytes(&format!(
        "{}/ostree/os/imported/refs/heads/main",
        server.url()
    ))?;
    ensure!(served_main == std::fs::read(up.join("refs/heads/main"))?);
    Ok(())
}

/// A `wharf serve` with a JSON log (to read its access lines), its configuration and data
/// directory, for the tests that watch what stock clients request.
pub(crate) struct LoggedWharf {
    pub(crate) server: RawServer,
    config: PathBuf,
    data: PathBuf,
    pub(crate) base: String,
}

impl LoggedWharf {
    pub(crate) fn start(dir: &Path, extra: &str) -> Result<LoggedWharf> {
        let port = free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let (config, _) = config_with_password(
            dir,
            &format!(
                "[server]\nlisten = \"{listen}\"\n[log]\nformat = \"json\"\n\n{extra}\n\
                 [[auth.grants]]\nsubject = \"anonymous\"\nrepositories = \"os/**\"\nactions = [\"pull\"]\n"
            ),
        )?;
        let data = dir.join("wharf-data");
        let server = RawServer::start_ready(serve_command(dir, Some(&config), &listen, &data))?;
        Ok(LoggedWharf {
            base: format!("http://{}", server.addr()),
            server,
            config,
            data,
        })
    }

    pub(crate) fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(wharf_bin());
        cmd.args(args)
            .arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&self.data);
        cmd
    }

    /// (path, status) of every access line so far.
    fn requests(&self) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for line in self.server.stderr().lines() {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if event["message"] == "access" {
                out.push((
                    event["path"].as_str().unwrap_or_default().to_owned(),
                    event["status"].as_u64().unwrap_or_default(),
                ));
            }
        }
        Ok(out)
    }

    /// The requests after the first `since`, once the access lines of a client's requests are
    /// written (they are written when each body ends, on the log's own thread).
    fn requests_since(
        &self,
        since: usize,
        until: impl Fn(&[(String, u64)]) -> bool,
    ) -> Result<Vec<(String, u64)>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let all = self.requests()?;
            let new = all.get(since..).unwrap_or_default().to_vec();
            if until(&new) || Instant::now() > deadline {
                return Ok(new);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn small_tree(dir: &Path, variant: &str) -> Result<()> {
    std::fs::create_dir_all(dir.join("usr/lib"))?;
    for i in 0..30 {
        std::fs::write(
            dir.join(format!("usr/lib/file{i}")),
            format!("{variant} {i}\n"),
        )?;
    }
    let big: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 ^ variant.len() as u8)
        .collect();
    std::fs::write(dir.join("usr/lib/big.bin"), big)?;
    Ok(())
}

fn delta_dirs(repo: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for xx in std::fs::read_dir(repo.join("deltas"))? {
        for rest in std::fs::read_dir(xx?.path())? {
            out.push(rest?.path());
        }
    }
    out.sort();
    Ok(out)
}

#[test]
fn static_deltas_are_copied_verified_and_used_and_unchanged_summaries_get_304() -> Result<()> {
    let tmp = scratch()?;
    let dir = tmp.path();
    let gpg = gpg_key(dir)?;
    let up = dir.join("upstream");
    run(ostree(&up).args(["init", "--mode=archive"]))?;
    let tree = dir.join("tree0");
    small_tree(&tree, "zero")?;
    commit(&up, &gpg, "main", &tree)?;
    summary_update(&up, &gpg)?;
    let (_http, url) = serve_dir(&up)?;
    let wharf = LoggedWharf::start(
        dir,
        &format!(
            "[[ostree.remotes]]\nname = \"up\"\nurl = \"{url}\"\ninsecure_http = true\n\
             repository = \"os/mirror\"\ndepth = -1\n"
        ),
    )?;
    let sync = || -> Result<String> { summary_line(&run(&mut wharf.cli(&["sync", "up"]))?.stdout) };
    ensure!(sync()?.contains("published"));
    let base = format!("{}/ostree/os/mirror", wharf.base);

    // The remote exactly as `wharf client-config ostree` prints it, run verbatim.
    let printed = run(&mut wharf.cli(&["client-config", "ostree", "--repo", "os/mirror"]))?.stdout;
    let add = printed
        .lines()
        .find(|l| l.starts_with("ostree remote add "))
        .with_context(|| format!("no `ostree remote add` in:\n{printed}"))?;
    ensure!(add.contains("--gpg-import=upstream-key.asc"), "{printed}");
    ensure!(
        printed.contains(&format!(
            "ostreesetup --osname=os-mirror --remote=os-mirror --url={base}/ --ref=REF"
        )),
        "{printed}"
    );
    let client = dir.join("client");
    run(ostree(&client).args(["init", "--mode=bare-user"]))?;
    let home = dir.join("operator");
    std::fs::create_dir_all(&home)?;
    std::fs::copy(&gpg.public, home.join("upstream-key.asc"))?;
    run(Command::new("sh")
        .args(["-c", add])
        .current_dir(&home)
        .env("OSTREE_REPO", &client))?;
    run(ostree(&client).args(["pull", "os-mirror", "main"]))?;

    // An update with a static delta from the previous commit (and one from scratch).
    let tree = dir.join("tree1");
    small_tree(&tree, "one")?;
    let new = commit(&up, &gpg, "main", &tree)?;
    run(ostree(&up).args(["static-delta", "generate", "main"]))?;
    run(ostree(&up).args(["static-delta", "generate", "--empty", "main"]))?;
    summary_update(&up, &gpg)?;
    ensure!(sync()?.contains("published"));
    let deltas = delta_dirs(&up)?;
    ensure!(deltas.len() == 2, "{deltas:?}");
    for d in &deltas {
        let rel = d.strip_prefix(&up)?.display().to_string();
        for file in ["superblock", "0"] {
            ensure!(
                curl_bytes(&format!("{base}/{rel}/{file}"))? == std::fs::read(d.join(file))?,
                "{rel}/{file} is served byte for byte"
            );
        }
    }
    let index = std::fs::read_dir(up.join("delta-indexes"))?
        .next()
        .context("no delta index")??
        .path();
    let index = std::fs::read_dir(index)?
        .next()
        .context("no index")??
        .path();
    let rel = index.strip_prefix(&up)?.display().to_string();
    ensure!(curl_bytes(&format!("{base}/{rel}"))? == std::fs::read(&index)?);

    // The client takes the update through the delta (it refuses to go without one).
    let before = wharf.requests()?.len();
    run(ostree(&client).args(["pull", "--require-static-deltas", "os-mirror", "main"]))?;
    run(ostree(&client).args(["fsck"]))?;
    ensure!(std::fs::read_to_string(client.join("refs/remotes/os-mirror/main"))?.trim() == new);
    let pulled = wharf.requests_since(before, |r| r.iter().any(|(p, _)| p.ends_with("/0")))?;
    ensure!(
        pulled
            .iter()
            .any(|(p, s)| p.starts_with("/ostree/os/mirror/deltas/")
                && p.ends_with("/superblock")
                && *s == 200),
        "no delta superblock fetched: {pulled:?}"
    );
    ensure!(
        pulled
            .iter()
            .any(|(p, s)| p.starts_with("/ostree/os/mirror/deltas/")
                && p.ends_with("/0")
                && *s == 200),
        "no delta part fetched: {pulled:?}"
    );
    // No assertion that no `.filez` is fetched loose: Debian's ostree 2022.7 scans the delta's
    // target commit while the part is still being applied and may fetch some of its files
    // individually (ostree issue 2053, fixed in 2023.7), so that count depends on timing.

    // Nothing changed: stock ostree asks for summary.sig conditionally and gets 304.
    let before = wharf.requests()?.len();
    run(ostree(&client).args(["pull", "os-mirror", "main"]))?;
    let again = wharf.requests_since(before, |r| {
        r.iter().any(|(p, _)| p.ends_with("/summary.sig"))
    })?;
    ensure!(
        again
            .iter()
            .any(|(p, s)| p == "/ostree/os/mirror/summary.sig" && *s == 304),
        "summary.sig not answered 304: {again:?}"
    );
    ensure!(
        !again
            .iter()
            .any(|(p, s)| p == "/ostree/os/mirror/summary" && *s == 200),
        "the summary was fetched again: {again:?}"
    );

    // A flipped bit in a delta part, then in a superblock: refused, the old snapshot served.
    let served = curl_bytes(&format!("{base}/summary"))?;
    let tree = dir.join("tree2");
    small_tree(&tree, "two")?;
    commit(&up, &gpg, "main", &tree)?;
    run(ostree(&up).args(["static-delta", "generate", "main"]))?;
    summary_update(&up, &gpg)?;
    let newest = delta_dirs(&up)?
        .into_iter()
        .find(|d| !deltas.contains(d))
        .context("no new delta")?;
    let part = newest.join("0");
    let good = std::fs::read(&part)?;
    let mut flipped = good.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x10;
    std::fs::write(&part, &flipped)?;
    let refused = run_expect_failure(&mut wharf.cli(&["sync", "up"]))?;
    ensure!(
        refused.stdout.contains("part 0 checksum mismatch")
            && refused.stdout.contains("nothing published"),
        "{refused}"
    );
    ensure!(curl_bytes(&format!("{base}/summary"))? == served);
    std::fs::write(&part, &good)?;
    let superblock = newest.join("superblock");
    let good = std::fs::read(&superblock)?;
    let mut flipped = good.clone();
    flipped[10] ^= 0x01;
    std::fs::write(&superblock, &flipped)?;
    let refused = run_expect_failure(&mut wharf.cli(&["sync", "up"]))?;
    ensure!(
        refused.stdout.contains("superblock checksum mismatch"),
        "{refused}"
    );
    ensure!(curl_bytes(&format!("{base}/summary"))? == served);
    std::fs::write(&superblock, &good)?;
    ensure!(sync()?.contains("published"));
    run(ostree(&client).args(["pull", "--require-static-deltas", "os-mirror", "main"]))?;
    run(ostree(&client).args(["fsck"]))?;
    Ok(())
}

/// flatpak with its own HOME and XDG directories under `home`, so nothing of the host's
/// installation is read or changed. `--user` installations work as root too: they deploy
/// into `$XDG_DATA_HOME/flatpak` without the system helper, which only `--system` needs.
fn flatpak(home: &Path) -> Command {
    let mut c = Command::new("flatpak");
    c.env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env_remove("FLATPAK_USER_DIR")
        .current_dir(home);
    c
}

#[test]
fn flatpak_installs_from_a_mirrored_signed_flatpak_repository() -> Result<()> {
    let tmp = scratch()?;
    let dir = tmp.path();
    let gpg = gpg_key(dir)?;
    let sign = [
        format!("--gpg-sign={}", gpg.key_id),
        format!("--gpg-homedir={}", gpg.home.display()),
    ];
    let repo = dir.join("flatpak-repo");
    let builder = dir.join("builder");
    std::fs::create_dir_all(&builder)?;

    // A tiny runtime, exported signed.
    let runtime = dir.join("runtime");
    std::fs::create_dir_all(runtime.join("files/lib"))?;
    std::fs::write(
        runtime.join("metadata"),
        "[Runtime]\nname=org.test.Platform\nruntime=org.test.Platform/x86_64/1\n\
         sdk=org.test.Platform/x86_64/1\n",
    )?;
    std::fs::write(runtime.join("files/lib/platform.txt"), "the platform\n")?;
    run(flatpak(&builder)
        .args([
            "build-export",
            "--runtime",
            "--files=files",
            "--arch=x86_64",
        ])
        .args(&sign)
        .arg(&repo)
        .arg(&runtime)
        .arg("1"))?;
    // build-init wants the runtime and SDK installed: into the builder's own installation.
    run(flatpak(&builder)
        .args(["remote-add", "--user"])
        .arg(format!("--gpg-import={}", gpg.public.display()))
        .arg("local")
        .arg(format!("file://{}", repo.display())))?;
    run(flatpak(&builder).args([
        "install",
        "--user",
        "-y",
        "local",
        "runtime/org.test.Platform/x86_64/1",
    ]))?;

    // An app against it, built the way flatpak-builder drives these commands.
    let app = dir.join("app");
    run(flatpak(&builder)
        .args(["build-init", "--arch=x86_64"])
        .arg(&app)
        .args([
            "org.test.App",
            "org.test.Platform",
            "org.test.Platform",
            "1",
        ]))?;
    std::fs::create_dir_all(app.join("files/bin"))?;
    std::fs::write(app.join("files/bin/hello"), "#!/bin/sh\necho hello\n")?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        app.join("files/bin/hello"),
        std::fs::Permissions::from_mode(0o755),
    )?;
    run(flatpak(&builder)
        .args(["build-finish", "--command=hello"])
        .arg(&app))?;
    run(flatpak(&builder)
        .args(["build-export", "--arch=x86_64"])
        .args(&sign)
        .arg(&repo)
        .arg(&app)
        .arg("stable"))?;
    run(flatpak(&builder)
        .args(["build-update-repo"])
        .args(&sign)
        .arg(&repo))?;
    ensure!(repo.join("summary.idx").exists() && repo.join("summary.idx.sig").exists());
    // The subsummaries summary.idx names now (older ones stay on disk, unlisted), and the
    // index's signature by digest, which flatpak fetches for an index it has cached.
    let index_bytes = std::fs::read(repo.join("summary.idx"))?;
    let index = wharf_ostree::gvariant::decode(
        &wharf_ostree::gvariant::Type::parse("(a{s(ayaaya{sv})}a{sv})")?,
        &index_bytes,
    )?;
    let mut subsummaries =
        vec![repo.join(format!("summaries/{}.idx.sig", Checksum::of(&index_bytes)))];
    if let Value::Tuple(fields) = index {
        if let Some(Value::Array(_, entries)) = fields.first() {
            for e in entries {
                if let Value::DictEntry(_, data) = e {
                    if let Value::Tuple(data) = &**data {
                        if let Some(Value::Bytes(sum)) = data.first() {
                            subsummaries.push(
                                repo.join(format!("summaries/{}.gz", Checksum::from_bytes(sum)?)),
                            );
                        }
                    }
                }
            }
        }
    }
    ensure!(
        subsummaries.len() > 1 && subsummaries.iter().all(|p| p.exists()),
        "{subsummaries:?}"
    );

    let (_http, url) = serve_dir(&repo)?;
    let config = dir.join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "[[ostree.remotes]]\nname = \"flathub\"\nurl = \"{url}\"\ninsecure_http = true\n\
             repository = \"os/flatpak\"\n\n\
             [[auth.grants]]\nsubject = \"anonymous\"\nrepositories = \"os/**\"\nactions = [\"pull\"]\n"
        ),
    )?;
    let bin = Path::new(env!("CARGO_BIN_EXE_wharf"));
    let server = WharfServer::start_with_config(bin, Some(&config))?;
    let line = summary_line(&run(&mut wharf_cli(&server, &["sync", "flathub"]))?.stdout)?;
    ensure!(line.contains("published"), "{line}");
    let base = format!("{}/ostree/os/flatpak", server.url());
    for p in subsummaries
        .iter()
        .map(|p| p.strip_prefix(&repo).map(|p| p.display().to_string()))
        .chain([
            Ok("summary.idx".into()),
            Ok("summary.idx.sig".into()),
            Ok("summary".into()),
        ])
    {
        let p = p?;
        ensure!(
            curl_bytes(&format!("{base}/{p}"))? == std::fs::read(repo.join(&p))?,
            "{p} is served byte for byte"
        );
    }

    // A fresh user installation takes the app, and the runtime it needs, from Wharf.
    let user = dir.join("user");
    std::fs::create_dir_all(&user)?;
    run(flatpak(&user)
        .args(["remote-add", "--user"])
        .arg(format!("--gpg-import={}", gpg.public.display()))
        .arg("test")
        .arg(format!("{base}/")))?;
    let listed =
        run(flatpak(&user).args(["remote-ls", "--user", "--columns=application", "test"]))?;
    ensure!(
        listed.stdout.contains("org.test.App") && listed.stdout.contains("org.test.Platform"),
        "{listed}"
    );
    run(flatpak(&user).args(["install", "--user", "-y", "test", "org.test.App"]))?;
    let installed = run(flatpak(&user).args(["list", "--user", "--columns=application"]))?;
    ensure!(
        installed.stdout.contains("org.test.App") && installed.stdout.contains("org.test.Platform"),
        "{installed}"
    );
    let deployed = user.join("data/flatpak/app/org.test.App/current/active/files/bin/hello");
    ensure!(std::fs::read_to_string(&deployed)? == "#!/bin/sh\necho hello\n");
    Ok(())
}

#[test]
fn wharf_ostree_commit_checks_out_identically_with_its_overrides() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = scratch()?;
    let dir = tmp.path();
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("usr/bin"))?;
    std::fs::create_dir_all(tree.join("etc"))?;
    std::fs::create_dir_all(tree.join("var/empty"))?;
    std::fs::write(tree.join("usr/bin/tool"), "#!/bin/sh\necho tool\n")?;
    std::fs::set_permissions(
        tree.join("usr/bin/tool"),
        std::fs::Permissions::from_mode(0o755),
    )?;
    std::fs::write(tree.join("etc/secret"), "root only\n")?;
    std::fs::set_permissions(
        tree.join("etc/secret"),
        std::fs::Permissions::from_mode(0o644),
    )?;
    std::fs::write(tree.join("données été.txt"), "é\n")?;
    std::os::unix::fs::symlink("usr/bin/tool", tree.join("link"))?;
    let big: Vec<u8> = (0..500_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 9) as u8)
        .collect();
    std::fs::write(tree.join("usr/big.bin"), &big)?;
    run(Command::new("python3")
        .args([
            "-c",
            "import os,sys; os.setxattr(sys.argv[1], 'user.wharf', b'yes')",
        ])
        .arg(tree.join("usr/bin/tool")))?;

    let config = dir.join("wharf.toml");
    std::fs::write(
        &config,
        "[[auth.grants]]\nsubject = \"anonymous\"\nrepositories = \"os/**\"\nactions = [\"pull\"]\n",
    )?;
    let bin = Path::new(env!("CARGO_BIN_EXE_wharf"));
    let server = WharfServer::start_with_config(bin, Some(&config))?;
    let tree_arg = tree.display().to_string();
    let commit_args = |subject: &'static str| {
        vec![
            "ostree",
            "commit",
            "--repo",
            "os/hosted",
            "--branch",
            "custom/main",
            "--tree",
            &tree_arg,
            "--subject",
            subject,
            "--add-metadata-string",
            "version=1.0",
            "--owner-uid",
            "0",
            "--owner-gid",
            "0",
            "--mode-override",
            "etc/secret=0600",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>()
    };
    let args = commit_args("first");
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = run(&mut wharf_cli(&server, &refs))?;
    let first_commit = first
        .stdout
        .lines()
        .next()
        .context("no checksum")?
        .to_owned();
    ensure!(first.stdout.contains("parent none"), "{first}");

    // A second commit: its parent is the first.
    std::fs::write(tree.join("usr/bin/tool"), "#!/bin/sh\necho tool 2\n")?;
    let args = commit_args("second");
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let second = run(&mut wharf_cli(&server, &refs))?;
    let second_commit = second
        .stdout
        .lines()
        .next()
        .context("no checksum")?
        .to_owned();
    ensure!(
        second.stdout.contains(&format!("parent {first_commit}")),
        "{second}"
    );

    // A typo in an override and a path that escapes are refused, and nothing is published.
    let mut bad = commit_args("bad");
    *bad.last_mut().context("override")? = "etc/nope=0600".into();
    let refs: Vec<&str> = bad.iter().map(String::as_str).collect();
    let refused = run_expect_failure(&mut wharf_cli(&server, &refs))?;
    ensure!(refused.stderr.contains("no such path"), "{refused}");
    let refused = run_expect_failure(&mut wharf_cli(
        &server,
        &[
            "ostree",
            "commit",
            "--repo",
            "os/hosted",
            "--branch",
            "../x",
            "--tree",
            &tree_arg,
        ],
    ))?;
    ensure!(refused.stderr.contains("not a valid ref name"), "{refused}");

    let client = dir.join("client");
    run(ostree(&client).args(["init", "--mode=archive"]))?;
    // Commits and summary are signed with Wharf's key, which anyone may fetch.
    let wharf_key = dir.join("wharf.asc");
    std::fs::write(
        &wharf_key,
        curl_bytes(&format!("{}/keys/wharf.asc", server.url()))?,
    )?;
    run(ostree(&client)
        .args([
            "remote",
            "add",
            "--set=gpg-verify=true",
            "--set=gpg-verify-summary=true",
        ])
        .arg(format!("--gpg-import={}", wharf_key.display()))
        .args(["wharf", &format!("{}/ostree/os/hosted/", server.url())]))?;
    run(ostree(&client).args(["pull", "--depth=-1", "wharf", "custom/main"]))?;
    run(ostree(&client).args(["fsck"]))?;
    ensure!(
        std::fs::read_to_string(client.join("refs/remotes/wharf/custom/main"))?.trim()
            == second_commit
    );
    let shown = run(ostree(&client).args(["show", "wharf:custom/main"]))?.stdout;
    ensure!(
        shown.contains(&format!("Parent:  {first_commit}"))
            && shown.contains("second")
            && shown.contains("Version: 1.0"),
        "{shown}"
    );

    // Ownership, modes, symlinks and xattrs as the overrides say.
    let listed = run(ostree(&client).args(["ls", "-R", "-X", "wharf:custom/main"]))?.stdout;
    let line = |path: &str| -> Result<String> {
        listed
            .lines()
            .find(|l| {
                l.rsplit_once("} ")
                    .is_some_and(|(_, p)| p == path || p.starts_with(&format!("{path} -> ")))
            })
            .map(str::to_owned)
            .with_context(|| format!("{path} not listed:\n{listed}"))
    };
    ensure!(line("/etc/secret")?.starts_with("-00600 0 0"), "{listed}");
    ensure!(line("/usr/bin/tool")?.starts_with("-00755 0 0"), "{listed}");
    ensure!(line("/usr/bin/tool")?.contains("user.wharf"), "{listed}");
    ensure!(line("/link")?.contains("-> usr/bin/tool"), "{listed}");
    ensure!(line("/var/empty")?.starts_with("d00"), "{listed}");

    // The checkout is the tree, byte for byte.
    let checkout = dir.join("checkout");
    run(ostree(&client)
        .args(["checkout", "-U", "wharf:custom/main"])
        .arg(&checkout))?;
    for f in [
        "usr/bin/tool",
        "etc/secret",
        "données été.txt",
        "usr/big.bin",
    ] {
        ensure!(
            std::fs::read(checkout.join(f))? == std::fs::read(tree.join(f))?,
            "{f} differs"
        );
    }
    ensure!(std::fs::read_link(checkout.join("link"))? == Path::new("usr/bin/tool"));
    ensure!(checkout.join("var/empty").is_dir());
    ensure!(
        std::fs::symlink_metadata(checkout.join("etc/secret"))?
            .permissions()
            .mode()
            & 0o7777
            == 0o600
    );
    Ok(())
}

/// `wharf ostree import` of repositories that `ostree commit` wrote in the bare modes (what a
/// build host or rpm-ostree compose leaves): each content object is read as the archive object
/// it would be, verified against its name, and served; a stock client pulls the same commit
/// checksum and fsck finds nothing wrong. Ownership recorded only in bare-user's
/// `user.ostreemeta` (root here, without the file being root-owned) survives.
#[test]
fn bare_repositories_import_with_their_commit_checksums() -> Result<()> {
    let tmp = scratch()?;
    let dir = tmp.path();
    let tree = dir.join("tree");
    make_tree(&tree, "bare", 30)?;
    let config = dir.join("wharf.toml");
    std::fs::write(
        &config,
        "[[auth.grants]]\nsubject = \"anonymous\"\nrepositories = \"os/**\"\nactions = [\"pull\"]\n",
    )?;
    let bin = Path::new(env!("CARGO_BIN_EXE_wharf"));
    let server = WharfServer::start_with_config(bin, Some(&config))?;
    for mode in ["bare-user", "bare-user-only", "bare"] {
        let src = dir.join(format!("src-{mode}"));
        run(ostree(&src).args(["init", &format!("--mode={mode}")]))?;
        let mut commit = ostree(&src);
        commit
            .args(["commit", "-b", "main", "-s", "built here"])
            .arg(format!("--tree=dir={}", tree.display()));
        match mode {
            // Recorded in the xattr only: the files stay the build user's.
            "bare-user" => commit.args(["--owner-uid=0", "--owner-gid=0"]),
            // A bare-user-only commit cannot hold setuid bits or xattrs.
            "bare-user-only" => commit.arg("--canonical-permissions"),
            _ => &mut commit,
        };
        let checksum = run(&mut commit)?.stdout.trim().to_owned();
        let repo = format!("os/{mode}");
        let imported = run(&mut wharf_cli(
            &server,
            &[
                "ostree",
                "import",
                "--repo",
                &repo,
                "--from",
                &src.display().to_string(),
            ],
        ))?;
        ensure!(imported.stdout.contains("published"), "{mode}: {imported}");
        let served = curl_bytes(&format!("{}/ostree/{repo}/refs/heads/main", server.url()))?;
        ensure!(
            String::from_utf8(served)?.trim() == checksum,
            "{mode}: the served ref is not the commit ostree made"
        );
        let client = dir.join(format!("client-{mode}"));
        run(ostree(&client).args(["init", "--mode=archive"]))?;
        run(ostree(&client).args([
            "remote",
            "add",
            "--no-gpg-verify",
            "wharf",
            &format!("{}/ostree/{repo}/", server.url()),
        ]))?;
        run(ostree(&client).args(["pull", "--mirror", "wharf", "main"]))?;
        run(ostree(&client).args(["fsck"]))?;
        let pulled = run(ostree(&client).args(["rev-parse", "main"]))?;
        ensure!(pulled.stdout.trim() == checksum, "{mode}: pulled {pulled}");
        let listing = run(ostree(&client).args(["ls", "-R", "main", "/usr/bin"]))?;
        let su = listing
            .stdout
            .lines()
            .find(|l| l.ends_with("/usr/bin/su"))
            .context("su listed")?;
        let expected = match mode {
            "bare-user" => "-04755 0 0",
            "bare-user-only" => "-00755 0 0",
            _ => "-04755 0 0",
        };
        ensure!(su.starts_with(expected), "{mode}: {su}");
    }
    // A content object that is not what its name says is refused; nothing is published.
    let src = dir.join("src-bare-user");
    let victim = walk_files(&src.join("objects"))?
        .into_iter()
        .find(|p| {
            p.extension().is_some_and(|e| e == "file")
                && std::fs::read(p).is_ok_and(|b| b.starts_with(b"#!/bin/sh"))
        })
        .context("a tool's object")?;
    let mut bytes = std::fs::read(&victim)?;
    bytes.push(b'\n');
    std::fs::write(&victim, bytes)?;
    let refused = run_expect_failure(&mut wharf_cli(
        &server,
        &[
            "ostree",
            "import",
            "--repo",
            "os/tampered",
            "--from",
            &src.display().to_string(),
        ],
    ))?;
    ensure!(refused.stdout.contains("checksum"), "{refused}");
    let gone = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!(
            "{}/ostree/os/tampered/refs/heads/main",
            server.url()
        ))
        .output()?;
    ensure!(gone.stdout == b"404", "{:?}", gone);
    Ok(())
}

fn walk_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    Ok(out)
}
