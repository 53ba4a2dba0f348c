//! Signatures on the tree formats, as stock clients see them.
//!
//! OSTree: remotes with `gpg_keys` or `ed25519_keys` take only commits signed by a trusted key
//! (`ostree.gpgsigs` made by the stock `ostree commit --gpg-sign`, or `ostree.sign.ed25519`
//! written here in libostree's format, since Debian's ostree cannot make those) and an upstream
//! summary that `summary.sig` verifies; a wrong key, an unsigned commit or a wrong ed25519 key
//! publishes nothing. A subset mirror's own summary is signed with Wharf's key, which stock
//! `ostree` verifies (`gpg-verify-summary=true`) with the key fetched from `/keys/wharf.asc`.
//!
//! RPM: a remote with `gpg_keys` takes only an upstream whose `repomd.xml.asc` (made by `gpg
//! --detach-sign --armor`) verifies; a wrong key, a missing `.asc` or a changed repomd.xml
//! publishes nothing; dnf with `repo_gpgcheck=1` and the upstream key installs from the mirror.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context, Result};
use wharf_ostree::gvariant::{Type, Value};
use wharf_ostree::object::metadata_value;
use wharf_ostree::{Checksum, ObjectName, ObjectType};
use wharf_sign::{Keyring, SigningKeys};
use wharf_testkit::fixture::rpm::{build_rpm, createrepo, RpmSpec};
use wharf_testkit::{run, run_expect_failure, Tool, WharfServer};

use crate::ostree::{commit, curl_bytes, gpg_key, ostree, serve_dir, summary_update};
use crate::support::{scratch, wharf_cli};

/// A file of a repository published a moment ago: the server caches repository names for a
/// second, so a name first asked for before its first publish is found within that.
fn served(url: &str) -> Result<Vec<u8>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match curl_bytes(url) {
            Ok(bytes) => return Ok(bytes),
            Err(e) if std::time::Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
        }
    }
}

/// The HTTP status of a GET.
fn status(url: &str) -> Result<String> {
    let out = run(Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", url]))?;
    Ok(out.stdout.trim().to_owned())
}

fn small_tree(dir: &Path, variant: &str) -> Result<()> {
    fs::create_dir_all(dir.join("etc"))?;
    fs::write(dir.join("etc/os-release"), format!("ID={variant}\n"))?;
    fs::write(dir.join("README"), format!("tree {variant}\n"))?;
    Ok(())
}

fn unsigned_commit(repo: &Path, branch: &str, tree: &Path) -> Result<String> {
    let out = run(ostree(repo)
        .args(["commit", "-b", branch, "-s", "unsigned"])
        .arg(format!("--tree=dir={}", tree.display())))?;
    Ok(out.stdout.trim().to_owned())
}

/// The failure part of `wharf sync NAME`'s line, which must say nothing was published.
fn refused(server: &WharfServer, remote: &str) -> Result<String> {
    let out = run_expect_failure(&mut wharf_cli(server, &["sync", remote]))?;
    ensure!(out.stdout.contains("nothing published"), "{out}");
    Ok(out.stdout)
}

#[test]
fn ostree_signatures_are_verified_and_wharf_signs_its_own_summary() -> Result<()> {
    let tmp = scratch()?;
    let dir = tmp.path();
    fs::create_dir_all(dir.join("a"))?;
    fs::create_dir_all(dir.join("b"))?;
    let gpg = gpg_key(&dir.join("a"))?;
    let other = gpg_key(&dir.join("b"))?;

    // Upstream: two refs, commits and summary signed with key a.
    let up = dir.join("upstream");
    run(ostree(&up).args(["init", "--mode=archive"]))?;
    small_tree(&dir.join("t1"), "one")?;
    small_tree(&dir.join("t2"), "two")?;
    let main = commit(&up, &gpg, "main", &dir.join("t1"))?;
    let extra = commit(&up, &gpg, "extra", &dir.join("t2"))?;
    summary_update(&up, &gpg)?;
    let (_http, url) = serve_dir(&up)?;

    // An unsigned commit under a signed summary.
    let unsigned = dir.join("unsigned");
    run(ostree(&unsigned).args(["init", "--mode=archive"]))?;
    let bare_commit = unsigned_commit(&unsigned, "main", &dir.join("t1"))?;
    summary_update(&unsigned, &gpg)?;
    let (_http2, unsigned_url) = serve_dir(&unsigned)?;

    // A commit signed with ed25519 only: `.commitmeta` = {'ostree.sign.ed25519': <[sig]>}.
    let ed = dir.join("ed");
    run(ostree(&ed).args(["init", "--mode=archive"]))?;
    let ed_commit = unsigned_commit(&ed, "main", &dir.join("t2"))?;
    let checksum = Checksum::from_hex(&ed_commit)?;
    let commit_bytes = fs::read(ed.join(ObjectName::new(checksum, ObjectType::Commit).path()))?;
    let ed_keys = SigningKeys::generate()?;
    let sig = ed_keys.sign_ed25519(&commit_bytes);
    let meta = metadata_value(&vec![(
        "ostree.sign.ed25519".into(),
        Value::Array(Type::parse("ay")?, vec![Value::Bytes(sig.to_vec())]),
    )]);
    fs::write(
        ed.join(ObjectName::new(checksum, ObjectType::CommitMeta).path()),
        meta.encode(),
    )?;
    fs::write(
        dir.join("ed.pub"),
        format!("{}\n", ed_keys.ed25519_public().to_base64()),
    )?;
    fs::write(
        dir.join("wrong-ed.pub"),
        format!(
            "{}\n",
            SigningKeys::generate()?.ed25519_public().to_base64()
        ),
    )?;

    let a = gpg.public.display().to_string();
    let b = other.public.display().to_string();
    let remote = |name: &str, url: &str, repo: &str, keys: &str| {
        format!(
            "[[ostree.remotes]]\nname = \"{name}\"\nurl = \"{url}\"\ninsecure_http = true\n\
             repository = \"{repo}\"\ndepth = -1\n{keys}\n\n"
        )
    };
    let mut config = String::new();
    config += &remote("good", &url, "os/good", &format!("gpg_keys = [\"{a}\"]"));
    config += &remote("wrong", &url, "os/wrong", &format!("gpg_keys = [\"{b}\"]"));
    // A local upstream: refs come from refs/heads, so the commits' own signatures decide.
    config += &remote(
        "wrong-commit",
        &up.display().to_string(),
        "os/wrong-commit",
        &format!("gpg_keys = [\"{b}\"]"),
    );
    config += &remote(
        "unsigned",
        &unsigned_url,
        "os/unsigned",
        &format!("gpg_keys = [\"{a}\"]"),
    );
    let ed_pub = dir.join("ed.pub").display().to_string();
    let wrong_ed = dir.join("wrong-ed.pub").display().to_string();
    let ed_path = ed.display().to_string();
    config += &remote(
        "ed",
        &ed_path,
        "os/ed",
        &format!("ed25519_keys = [\"{ed_pub}\"]"),
    );
    config += &remote(
        "ed-wrong",
        &ed_path,
        "os/ed-wrong",
        &format!("ed25519_keys = [\"{wrong_ed}\"]"),
    );
    config += &remote(
        "subset",
        &url,
        "os/subset",
        &format!("refs = [\"main\"]\ngpg_keys = [\"{a}\"]"),
    );
    config += "[[auth.grants]]\nsubject = \"anonymous\"\nrepositories = \"os/**\"\nactions = [\"pull\"]\n";
    let config_path = dir.join("wharf.toml");
    fs::write(&config_path, config)?;
    let server = WharfServer::start_with_config(env!("CARGO_BIN_EXE_wharf"), Some(&config_path))?;
    let base = format!("{}/ostree", server.url());

    // The right key: mirrored, and the stock client verifies commits and summary with it.
    let good = run(&mut wharf_cli(&server, &["sync", "good"]))?;
    ensure!(good.stdout.contains("published"), "{good}");
    let client = dir.join("client");
    run(ostree(&client).args(["init", "--mode=bare-user"]))?;
    run(ostree(&client)
        .args([
            "remote",
            "add",
            "--set=gpg-verify=true",
            "--set=gpg-verify-summary=true",
        ])
        .arg(format!("--gpg-import={a}"))
        .args(["wharf", &format!("{base}/os/good/")]))?;
    run(ostree(&client).args(["pull", "wharf", "main", "extra"]))?;
    run(ostree(&client).args(["fsck"]))?;
    ensure!(fs::read_to_string(client.join("refs/remotes/wharf/main"))?.trim() == main);

    // Another key: the summary is refused first, then (a local upstream) the commit itself.
    let wrong = refused(&server, "wrong")?;
    ensure!(
        wrong.contains("upstream summary refused") && wrong.contains("not a trusted key"),
        "{wrong}"
    );
    ensure!(
        status(&format!("{base}/os/wrong/summary"))? == "404",
        "nothing published"
    );
    let wrong_commit = refused(&server, "wrong-commit")?;
    ensure!(
        wrong_commit.contains(&format!("commit {extra} (ref extra) refused"))
            && wrong_commit.contains("not a trusted key"),
        "{wrong_commit}"
    );
    ensure!(status(&format!("{base}/os/wrong-commit/summary"))? == "404");

    // An unsigned commit: refused, naming it and its ref.
    let unsigned_run = refused(&server, "unsigned")?;
    ensure!(
        unsigned_run.contains(&format!(
            "commit {bare_commit} (ref main) refused: not signed"
        )),
        "{unsigned_run}"
    );
    ensure!(status(&format!("{base}/os/unsigned/refs/heads/main"))? == "404");

    // ed25519: the right public key takes it, with its `.commitmeta`; another refuses it.
    let ed_run = run(&mut wharf_cli(&server, &["sync", "ed"]))?;
    ensure!(ed_run.stdout.contains("published"), "{ed_run}");
    ensure!(
        served(&format!(
            "{base}/os/ed/{}",
            ObjectName::new(checksum, ObjectType::CommitMeta).path()
        ))? == meta.encode()
    );
    let ed_wrong = refused(&server, "ed-wrong")?;
    ensure!(
        ed_wrong.contains("no trusted ed25519 key verifies the signature"),
        "{ed_wrong}"
    );

    // Wharf's public keys: served without credentials, and what `signing-key show` prints.
    let served_asc = curl_bytes(&format!("{}/keys/wharf.asc", server.url()))?;
    let shown = run(&mut wharf_cli(&server, &["signing-key", "show"]))?.stdout;
    ensure!(
        served_asc == shown.as_bytes(),
        "/keys/wharf.asc is the shown key"
    );
    ensure!(
        shown.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"),
        "{shown}"
    );
    let served_ed = curl_bytes(&format!("{}/keys/wharf.ed25519", server.url()))?;
    let shown_ed = run(&mut wharf_cli(
        &server,
        &["signing-key", "show", "--ed25519"],
    ))?
    .stdout;
    ensure!(served_ed == shown_ed.as_bytes(), "{shown_ed}");
    let wharf_asc = dir.join("wharf.asc");
    fs::write(&wharf_asc, &served_asc)?;

    // A subset: Wharf's own summary, signed with Wharf's keys.
    let subset = run(&mut wharf_cli(&server, &["sync", "subset"]))?;
    ensure!(subset.stdout.contains("published"), "{subset}");
    let summary = served(&format!("{base}/os/subset/summary"))?;
    ensure!(
        summary != fs::read(up.join("summary"))?,
        "a summary of its own"
    );
    let sig = curl_bytes(&format!("{base}/os/subset/summary.sig"))?;
    let mut ed_trust = Keyring::new();
    ed_trust.add_ed25519(std::str::from_utf8(&served_ed)?, "/keys/wharf.ed25519")?;
    wharf_ostree::signature::verify(&ed_trust, &summary, Some(sig.as_slice()))
        .context("the ed25519 signature in summary.sig")?;
    let verified = dir.join("client-wharf-key");
    run(ostree(&verified).args(["init", "--mode=bare-user"]))?;
    run(ostree(&verified)
        .args([
            "remote",
            "add",
            "--set=gpg-verify=true",
            "--set=gpg-verify-summary=true",
        ])
        .arg(format!("--gpg-import={}", wharf_asc.display()))
        .args(["wharf", &format!("{base}/os/subset/")]))?;
    // Commits stay signed by upstream's key: the client trusts both.
    run(ostree(&verified).args(["remote", "gpg-import", "wharf", "-k", &a]))?;
    let refs = run(ostree(&verified).args(["remote", "refs", "wharf"]))?.stdout;
    ensure!(
        refs.contains("wharf:main") && !refs.contains("extra"),
        "{refs}"
    );
    run(ostree(&verified).args(["pull", "wharf", "main"]))?;
    run(ostree(&verified).args(["fsck"]))?;
    // Without Wharf's key the summary does not verify: the signature is what lets it in.
    let unverified = dir.join("client-upstream-key-only");
    run(ostree(&unverified).args(["init", "--mode=bare-user"]))?;
    run(ostree(&unverified)
        .args([
            "remote",
            "add",
            "--set=gpg-verify=true",
            "--set=gpg-verify-summary=true",
        ])
        .arg(format!("--gpg-import={a}"))
        .args(["wharf", &format!("{base}/os/subset/")]))?;
    run_expect_failure(ostree(&unverified).args(["remote", "refs", "wharf"]))?;
    Ok(())
}

fn gpg_sign(gpg: &crate::ostree::Gpg, file: &Path) -> Result<()> {
    run(Command::new("gpg")
        .env("GNUPGHOME", &gpg.home)
        .args([
            "--batch",
            "--yes",
            "--local-user",
            &gpg.key_id,
            "--detach-sign",
            "--armor",
        ])
        .arg(file))?;
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    run(Command::new("cp").arg("-a").arg(from).arg(to))?;
    Ok(())
}

#[test]
fn rpm_repomd_must_verify_against_the_configured_keys() -> Result<()> {
    let tmp = scratch()?;
    let dir = tmp.path();
    fs::create_dir_all(dir.join("a"))?;
    fs::create_dir_all(dir.join("b"))?;
    let gpg = gpg_key(&dir.join("a"))?;
    let other = gpg_key(&dir.join("b"))?;
    let trees = dir.join("trees");
    let up = trees.join("up");
    fs::create_dir_all(&up)?;
    // Signed too: with gpg_keys, a mirrored package's header signature is checked as well.
    let hello = build_rpm(&RpmSpec::new("hello", "1.0"), &up)?;
    run(Command::new("rpmsign")
        .arg("--addsign")
        .arg("--define")
        .arg(format!("_gpg_name {}", gpg.key_id))
        .arg("--define")
        .arg(format!("_gpg_path {}", gpg.home.display()))
        .arg("--define")
        .arg("__gpg /usr/bin/gpg")
        .arg(&hello))?;
    createrepo(&up, &[])?;
    let nosig = trees.join("nosig");
    copy_tree(&up, &nosig)?;
    gpg_sign(&gpg, &up.join("repodata/repomd.xml"))?;
    let tampered = trees.join("tampered");
    copy_tree(&up, &tampered)?;
    let repomd = tampered.join("repodata/repomd.xml");
    let mut text = fs::read_to_string(&repomd)?;
    text.push_str("<!-- changed after signing -->\n");
    fs::write(&repomd, text)?;
    let (_http, url) = serve_dir(&trees)?;

    let a = gpg.public.display().to_string();
    let b = other.public.display().to_string();
    let mut config = String::from("[publish]\ngrace_secs = 60\n\n");
    for (name, tree, key) in [
        ("good", "up", &a),
        ("wrong", "up", &b),
        ("nosig", "nosig", &a),
        ("tampered", "tampered", &a),
    ] {
        config += &format!(
            "[[rpm.remotes]]\nname = \"{name}\"\nurl = \"{url}/{tree}/\"\ninsecure_http = true\n\
             repository = \"el/{name}\"\ngpg_keys = [\"{key}\"]\n\n"
        );
    }
    config += "[[auth.grants]]\nsubject = \"anonymous\"\nrepositories = \"el/**\"\nactions = [\"pull\"]\n";
    let config_path = dir.join("wharf.toml");
    fs::write(&config_path, config)?;
    let server = WharfServer::start_with_config(env!("CARGO_BIN_EXE_wharf"), Some(&config_path))?;
    let base = format!("{}/rpm/el", server.url());

    let good = run(&mut wharf_cli(&server, &["sync", "good"]))?;
    ensure!(good.stdout.contains("published snapshot"), "{good}");
    ensure!(
        curl_bytes(&format!("{base}/good/repodata/repomd.xml.asc"))?
            == fs::read(up.join("repodata/repomd.xml.asc"))?
    );
    let wrong = refused_rpm(&server, "wrong")?;
    ensure!(
        wrong.contains("repomd.xml.asc does not verify") && wrong.contains("not a trusted key"),
        "{wrong}"
    );
    let nosig_run = refused_rpm(&server, "nosig")?;
    ensure!(
        nosig_run.contains("missing, and gpg_keys are configured"),
        "{nosig_run}"
    );
    let tampered_run = refused_rpm(&server, "tampered")?;
    ensure!(tampered_run.contains("altered"), "{tampered_run}");
    for name in ["wrong", "nosig", "tampered"] {
        ensure!(
            status(&format!("{base}/{name}/repodata/repomd.xml"))? == "404",
            "{name}: nothing published"
        );
    }

    // dnf checks the mirrored repomd.xml with the upstream key, and installs from it.
    let dnf = |work: &str, key: &str, args: &[&str]| -> Command {
        let work = dir.join(work);
        let reposdir = work.join("repos.d");
        fs::create_dir_all(&reposdir).expect("reposdir");
        fs::create_dir_all(work.join("root")).expect("root");
        fs::write(
            reposdir.join("wharf.repo"),
            format!(
                "[wharf]\nname=Wharf mirror\nbaseurl={base}/good/\nenabled=1\ngpgcheck=0\n\
                 repo_gpgcheck=1\ngpgkey=file://{key}\nmetadata_expire=0\n"
            ),
        )
        .expect("repo file");
        let mut cmd = Command::new(Tool::find("dnf").path());
        cmd.arg("--installroot")
            .arg(work.join("root"))
            .args(["--releasever", "12", "-y"])
            .arg(format!("--setopt=reposdir={}", reposdir.display()))
            .arg(format!(
                "--setopt=cachedir={}",
                work.join("cache").display()
            ))
            .args(["--setopt=skip_if_unavailable=0", "--repo=wharf"])
            .args(args);
        cmd
    };
    run(&mut dnf("dnf-good", &a, &["install", "hello"]))?;
    let installed = run(Command::new("rpm")
        .arg("--root")
        .arg(dir.join("dnf-good/root"))
        .args(["-q", "hello"]))?;
    ensure!(installed.stdout.contains("hello-1.0"), "{installed}");
    // With another key dnf refuses the metadata: repo_gpgcheck is really checking.
    run_expect_failure(&mut dnf("dnf-wrong", &b, &["makecache"]))?;
    Ok(())
}

fn refused_rpm(server: &WharfServer, remote: &str) -> Result<String> {
    let out = run_expect_failure(&mut wharf_cli(server, &["sync", remote]))?;
    let text = format!("{}{}", out.stdout, out.stderr);
    ensure!(text.contains("nothing published"), "{out}");
    Ok(text)
}
