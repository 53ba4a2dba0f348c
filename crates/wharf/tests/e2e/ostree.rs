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
use wharf_ostree::object::{Commit, DirTree};
use wharf_ostree::summary::{Summary, SummaryRef};
use wharf_ostree::{Checksum, ObjectName, ObjectType};
use wharf_testkit::{run, run_expect_failure, WharfServer};

use crate::acme::free_port;
use crate::support::{scratch, wharf_cli};

fn ostree(repo: &Path) -> Command {
    let mut c = Command::new("ostree");
    c.arg(format!("--repo={}", repo.display()));
    c
}

fn make_tree(dir: &Path, variant: &str, files: usize) -> Result<()> {
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
struct Gpg {
    home: PathBuf,
    key_id: String,
    public: PathBuf,
}

fn gpg_key(dir: &Path) -> Result<Gpg> {
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

fn commit(repo: &Path, gpg: &Gpg, branch: &str, tree: &Path) -> Result<String> {
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

fn summary_update(repo: &Path, gpg: &Gpg) -> Result<()> {
    run(ostree(repo)
        .args(["summary", "-u"])
        .arg(format!("--gpg-sign={}", gpg.key_id))
        .arg(format!("--gpg-homedir={}", gpg.home.display())))?;
    Ok(())
}

struct HttpServer(Child);

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve_dir(dir: &Path) -> Result<(HttpServer, String)> {
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

fn curl_bytes(url: &str) -> Result<Vec<u8>> {
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
