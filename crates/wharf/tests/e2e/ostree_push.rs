//! Issue 10, pushing OSTree commits over the API: a repository built by stock `ostree init
//! --mode=archive` and `ostree commit` is pushed with `wharf ostree push` by a user with push on
//! the repository, and stock `ostree pull` (commits and summary verified with Wharf's key)
//! gets the same commit, `ostree fsck` clean, its checkout identical. A second commit sends
//! exactly the objects it added; a push with nothing new sends none. Driven with curl: a
//! corrupted object is 400 and kept nowhere, hostile object names are 400, a ref move whose
//! commit reaches an object not uploaded is 409 naming it and moves nothing; a pull-only user
//! gets 403, an anonymous one 401, and a stale `parent` 409.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{ensure, Context, Result};
use wharf_testkit::{run, run_expect_failure, WharfServer};

use crate::ostree::{curl_bytes, make_tree, ostree};
use crate::support::scratch;

const REPO: &str = "os/pushed";
const BRANCH: &str = "os/x86_64/main";

fn add_user(server: &WharfServer, name: &str, password: &str) -> Result<()> {
    let mut child = Command::new(server.bin())
        .args(["user", "add", name, "--password-stdin"])
        .arg("--config")
        .arg(server.config_path())
        .arg("--data-dir")
        .arg(server.data_dir())
        .stdin(Stdio::piped())
        .spawn()?;
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(format!("{password}\n").as_bytes())?;
    }
    ensure!(child.wait()?.success(), "user add {name}");
    Ok(())
}

/// A server whose configuration lets anyone pull `os/**` and the user `builder` (password in
/// the returned file) push there, with `extra` appended; returns it and the password file.
fn server_with_builder(dir: &Path, extra: &str) -> Result<(WharfServer, PathBuf)> {
    let config = dir.join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "[[auth.grants]]\nsubject = \"anonymous\"\nrepositories = \"os/**\"\nactions = [\"pull\"]\n\n\
             [[auth.grants]]\nsubject = \"user:builder\"\nrepositories = \"os/**\"\nactions = [\"pull\", \"push\"]\n\n\
             {extra}"
        ),
    )?;
    let server =
        WharfServer::start_with_config(Path::new(env!("CARGO_BIN_EXE_wharf")), Some(&config))?;
    add_user(&server, "builder", "builder-pw")?;
    let builder_pw = dir.join("builder.pw");
    std::fs::write(&builder_pw, "builder-pw\n")?;
    Ok((server, builder_pw))
}

/// `wharf ostree push` of the local BRANCH to BRANCH as `user`.
fn push(server: &WharfServer, local: &Path, user: &str, password_file: &Path) -> Command {
    let mut cmd = Command::new(server.bin());
    cmd.args(["ostree", "push", "--url", &server.url(), "--repo", REPO])
        .args(["--branch", BRANCH, "--user", user])
        .arg("--password-file")
        .arg(password_file)
        .arg("--from")
        .arg(local);
    cmd
}

/// The number before "objects sent" in the push's summary line.
fn objects_sent(stdout: &str) -> Result<u64> {
    let line = stdout
        .lines()
        .find(|l| l.contains("objects sent"))
        .with_context(|| format!("no summary line in {stdout:?}"))?;
    let words: Vec<&str> = line.split(' ').collect();
    words
        .windows(3)
        .find(|w| w[1] == "objects" && w[2] == "sent")
        .and_then(|w| w[0].parse().ok())
        .with_context(|| format!("no count in {line:?}"))
}

fn commit(local: &Path, tree: &Path, subject: &str) -> Result<String> {
    let out = run(ostree(local)
        .args(["commit", "-b", BRANCH, "-s", subject])
        .arg(format!("--tree=dir={}", tree.display())))?;
    Ok(out.stdout.trim().to_owned())
}

/// Every object file of a local archive repository, as `objects/XX/REST.EXT`.
fn local_objects(local: &Path) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for dir in std::fs::read_dir(local.join("objects"))? {
        let dir = dir?;
        for f in std::fs::read_dir(dir.path())? {
            let f = f?;
            out.insert(format!(
                "objects/{}/{}",
                dir.file_name().to_string_lossy(),
                f.file_name().to_string_lossy()
            ));
        }
    }
    Ok(out)
}

/// curl: (status, body).
fn request(
    method: &str,
    url: &str,
    auth: Option<&str>,
    body: Option<&Path>,
    json: Option<&str>,
) -> Result<(u16, String)> {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "60",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ]);
    if let Some(auth) = auth {
        cmd.args(["-u", auth]);
    }
    if let Some(body) = body {
        cmd.arg("--data-binary")
            .arg(format!("@{}", body.to_str().context("path")?));
        cmd.args(["-H", "Content-Type: application/octet-stream"]);
    }
    if let Some(json) = json {
        cmd.args([
            "--data-binary",
            json,
            "-H",
            "Content-Type: application/json",
        ]);
    }
    let out = cmd.arg("--path-as-is").arg(url).output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').context("no status")?;
    Ok((code.trim().parse().unwrap_or(0), body.to_owned()))
}

/// The commit BRANCH names on the server, as a client reads it.
fn served_ref(server: &WharfServer) -> Result<String> {
    let bytes = curl_bytes(&format!(
        "{}/ostree/{REPO}/refs/heads/{BRANCH}",
        server.url()
    ))?;
    Ok(String::from_utf8(bytes)?.trim().to_owned())
}

/// A new client repository `name` in `mode` with the remote `wharf` for REPO, commits and
/// summary verified with Wharf's key.
fn client_repo(server: &WharfServer, dir: &Path, name: &str, mode: &str) -> Result<PathBuf> {
    let client = dir.join(name);
    run(ostree(&client).args(["init", &format!("--mode={mode}")]))?;
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
        .args(["wharf", &format!("{}/ostree/{REPO}/", server.url())]))?;
    Ok(client)
}

/// Pulls BRANCH into `client` (verifying commits and summary with Wharf's key), fscks it and
/// checks the checkout out; returns the pulled commit and the checkout's directory.
fn pull_and_check_out(server: &WharfServer, dir: &Path, n: u32) -> Result<(String, PathBuf)> {
    let client = client_repo(server, dir, &format!("client{n}"), "archive")?;
    run(ostree(&client).args(["pull", "wharf", BRANCH]))?;
    run(ostree(&client).args(["fsck"]))?;
    let pulled = std::fs::read_to_string(client.join(format!("refs/remotes/wharf/{BRANCH}")))?;
    let checkout = dir.join(format!("checkout{n}"));
    run(ostree(&client)
        .args(["checkout", "-U", &format!("wharf:{BRANCH}")])
        .arg(&checkout))?;
    Ok((pulled.trim().to_owned(), checkout))
}

fn same_tree(a: &Path, b: &Path) -> Result<()> {
    let out = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(a)
        .arg(b)
        .output()?;
    ensure!(
        out.status.success(),
        "checkouts differ: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}

#[test]
fn a_push_sends_only_missing_objects_verified_and_moves_the_ref_atomically() -> Result<()> {
    let tmp = scratch()?;
    let dir = tmp.path();
    let (server, builder_pw) = server_with_builder(
        dir,
        "[[auth.grants]]\nsubject = \"user:reader\"\nrepositories = \"os/**\"\nactions = [\"pull\"]\n",
    )?;
    add_user(&server, "reader", "reader-pw")?;
    let reader_pw = dir.join("reader.pw");
    std::fs::write(&reader_pw, "reader-pw\n")?;
    let api = format!("{}/api/v1/ostree/{REPO}", server.url());

    // A build host's repository: stock ostree, a few hundred files.
    let local = dir.join("local");
    run(ostree(&local).args(["init", "--mode=archive"]))?;
    let tree = dir.join("tree");
    make_tree(&tree, "v1", 300)?;
    let first = commit(&local, &tree, "first")?;
    let all_first = local_objects(&local)?;
    let out = run(&mut push(&server, &local, "builder", &builder_pw))?;
    ensure!(
        objects_sent(&out.stdout)? as usize == all_first.len() && all_first.len() > 300,
        "first push: {} objects locally\n{out}",
        all_first.len()
    );
    ensure!(out.stdout.lines().count() == 1, "one summary line: {out}");
    ensure!(served_ref(&server)? == first);
    let (pulled, checkout) = pull_and_check_out(&server, dir, 1)?;
    ensure!(pulled == first, "pulled {pulled}, pushed {first}");
    let local_checkout = dir.join("local-checkout1");
    run(ostree(&local)
        .args(["checkout", "-U", BRANCH])
        .arg(&local_checkout))?;
    same_tree(&local_checkout, &checkout)?;

    // A second commit: three files changed, one added. Exactly the objects the local
    // repository gained are sent.
    for i in 0..3 {
        std::fs::write(
            tree.join(format!("usr/share/doc/file{i}.txt")),
            format!("doc {i}, revised\n"),
        )?;
    }
    std::fs::write(tree.join("usr/bin/new-tool"), "#!/bin/sh\necho new\n")?;
    let second = commit(&local, &tree, "second")?;
    let gained = local_objects(&local)?.len() - all_first.len();
    let out = run(&mut push(&server, &local, "builder", &builder_pw))?;
    ensure!(
        objects_sent(&out.stdout)? as usize == gained && gained < 20,
        "second push should send the {gained} new objects: {out}"
    );
    let (pulled, _) = pull_and_check_out(&server, dir, 2)?;
    ensure!(pulled == second);

    // Nothing new: nothing sent.
    let out = run(&mut push(&server, &local, "builder", &builder_pw))?;
    ensure!(objects_sent(&out.stdout)? == 0, "{out}");
    ensure!(out.stdout.contains("already named it"), "{out}");

    // A third commit, uploaded by hand: a corrupted object is refused and kept nowhere.
    let before_third = local_objects(&local)?;
    std::fs::write(tree.join("usr/bin/tool5"), "#!/bin/sh\necho five, third\n")?;
    let third = commit(&local, &tree, "third")?;
    let new: Vec<String> = local_objects(&local)?
        .difference(&before_third)
        .cloned()
        .collect();
    let auth = "builder:builder-pw";
    let victim = new
        .iter()
        .find(|o| o.ends_with(".filez"))
        .context("a new content object")?
        .clone();
    let mut bytes = std::fs::read(local.join(&victim))?;
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let corrupt = dir.join("corrupt");
    std::fs::write(&corrupt, &bytes)?;
    let (code, body) = request(
        "PUT",
        &format!("{api}/{victim}"),
        Some(auth),
        Some(&corrupt),
        None,
    )?;
    ensure!(
        code == 400 && body.contains("DIGEST_INVALID"),
        "{code} {body}"
    );
    let dirtree = new
        .iter()
        .find(|o| o.ends_with(".dirtree"))
        .context("a new dirtree")?
        .clone();
    let (code, body) = request(
        "PUT",
        &format!("{api}/{dirtree}"),
        Some(auth),
        Some(&corrupt),
        None,
    )?;
    ensure!(
        code == 400,
        "a filez body under a dirtree name: {code} {body}"
    );
    for hostile in [
        "objects/..%2f..%2fconfig",
        "objects/../../config",
        "objects/zz/not-hex.filez",
        &format!(
            "objects/{}",
            &victim["objects/".len()..].replace(".filez", ".exe")
        ),
    ] {
        let (code, body) = request(
            "PUT",
            &format!("{api}/{hostile}"),
            Some(auth),
            Some(&corrupt),
            None,
        )?;
        ensure!(
            code == 400 && body.contains("INVALID"),
            "{hostile}: {code} {body}"
        );
    }
    let victim_name = victim["objects/".len()..].replacen('/', "", 1);
    let names = format!("[\"{victim_name}\"]");
    let (code, body) = request(
        "POST",
        &format!("{api}/missing"),
        Some(auth),
        None,
        Some(&names),
    )?;
    ensure!(
        code == 200 && body.contains(&victim_name),
        "still missing: {code} {body}"
    );
    // Everything else of the third commit goes up; the ref move names what is missing.
    for o in new.iter().filter(|o| **o != victim) {
        let (code, body) = request(
            "PUT",
            &format!("{api}/{o}"),
            Some(auth),
            Some(&local.join(o)),
            None,
        )?;
        ensure!(code == 201, "{o}: {code} {body}");
    }
    let move_third = format!("{{\"commit\": \"{third}\", \"parent\": \"{second}\"}}");
    let (code, body) = request(
        "POST",
        &format!("{api}/refs/{BRANCH}"),
        Some(auth),
        None,
        Some(&move_third),
    )?;
    ensure!(
        code == 409 && body.contains("OBJECTS_MISSING") && body.contains(&victim_name),
        "{code} {body}"
    );
    ensure!(
        served_ref(&server)? == second,
        "a refused move moved the ref"
    );
    // The right bytes go in, and the move succeeds.
    let (code, body) = request(
        "PUT",
        &format!("{api}/{victim}"),
        Some(auth),
        Some(&local.join(&victim)),
        None,
    )?;
    ensure!(code == 201, "{code} {body}");
    let (code, body) = request(
        "PUT",
        &format!("{api}/{victim}"),
        Some(auth),
        Some(&local.join(&victim)),
        None,
    )?;
    ensure!(
        code == 200,
        "a second upload of a held object: {code} {body}"
    );
    let (code, body) = request(
        "POST",
        &format!("{api}/refs/{BRANCH}"),
        Some(auth),
        None,
        Some(&move_third),
    )?;
    ensure!(code == 200 && body.contains(&third), "{code} {body}");
    ensure!(served_ref(&server)? == third);

    // A stale parent: 409, and the ref stays.
    let stale = format!("{{\"commit\": \"{first}\", \"parent\": \"{second}\"}}");
    let (code, body) = request(
        "POST",
        &format!("{api}/refs/{BRANCH}"),
        Some(auth),
        None,
        Some(&stale),
    )?;
    ensure!(code == 409 && body.contains("REF_MOVED"), "{code} {body}");
    let mut stale_push = push(&server, &local, "builder", &builder_pw);
    stale_push.args(["--parent", &first]);
    let refused = run_expect_failure(&mut stale_push)?;
    ensure!(refused.stderr.contains("409"), "{refused}");
    ensure!(served_ref(&server)? == third);

    // A pull-only user: 403; nobody: 401.
    std::fs::write(tree.join("usr/bin/tool6"), "#!/bin/sh\necho reader\n")?;
    commit(&local, &tree, "by a reader")?;
    let refused = run_expect_failure(&mut push(&server, &local, "reader", &reader_pw))?;
    ensure!(refused.stderr.contains("403"), "{refused}");
    let (code, _) = request("POST", &format!("{api}/missing"), None, None, Some("[]"))?;
    ensure!(code == 401, "anonymous: {code}");
    let (code, _) = request(
        "POST",
        &format!("{api}/refs/{BRANCH}"),
        Some("reader:reader-pw"),
        None,
        Some(&stale),
    )?;
    ensure!(code == 403, "reader's ref move: {code}");
    ensure!(served_ref(&server)? == third);

    // A commit bound to another ref (`ostree commit -b elsewhere`) is refused: clients pulling
    // BRANCH would reject it.
    run(ostree(&local)
        .args(["commit", "-b", "elsewhere", "-s", "bound elsewhere"])
        .arg(format!("--tree=dir={}", tree.display())))?;
    let mut bound = push(&server, &local, "builder", &builder_pw);
    bound.args(["--ref", "elsewhere"]);
    let refused = run_expect_failure(&mut bound)?;
    ensure!(
        refused.stderr.contains("400") && refused.stderr.contains("ref-binding"),
        "{refused}"
    );
    ensure!(served_ref(&server)? == third);

    // What stock ostree sees at the end: the third commit, verified, fsck clean.
    let (pulled, _) = pull_and_check_out(&server, dir, 3)?;
    ensure!(pulled == third);
    Ok(())
}

/// The `ostree-deltas:REPO` job a push queues (the pushed repository has an `[[ostree.deltas]]`
/// table): the push returns with the ref moved and no delta; the server's worker then
/// generates the delta from the commit the branch was at and one from scratch, publishes them
/// with a summary signed again, and a stock client at the first commit updates through the
/// delta alone (`--require-static-deltas`), fsck clean. The job is in the history, succeeded.
#[test]
fn a_push_queues_the_delta_job_and_clients_update_through_its_delta() -> Result<()> {
    let tmp = scratch()?;
    let dir = tmp.path();
    let (server, builder_pw) = server_with_builder(
        dir,
        "[[ostree.deltas]]\nrepository = \"os/pushed\"\nfrom_scratch = true\n",
    )?;
    let local = dir.join("local");
    run(ostree(&local).args(["init", "--mode=archive"]))?;
    let tree = dir.join("tree");
    make_tree(&tree, "v1", 200)?;
    let first = commit(&local, &tree, "first")?;
    run(&mut push(&server, &local, "builder", &builder_pw))?;
    let summary_url = format!("{}/ostree/{REPO}/summary", server.url());
    let listed = |wanted: &str| -> Result<bool> {
        let summary = wharf_ostree::summary::Summary::parse(&curl_bytes(&summary_url)?)?;
        Ok(format!("{:?}", summary.metadata).contains(wanted))
    };
    let wait_for = |wanted: String| -> Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !listed(&wanted)? {
            ensure!(
                std::time::Instant::now() < deadline,
                "no delta {wanted} listed after 60 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        Ok(())
    };
    wait_for(format!("\"{first}\""))?;
    // Static deltas are for repositories that check out (ostree refuses them into an archive).
    let client = client_repo(&server, dir, "client", "bare-user")?;
    run(ostree(&client).args(["pull", "--require-static-deltas", "wharf", BRANCH]))?;

    for i in 0..20 {
        std::fs::write(
            tree.join(format!("usr/share/doc/file{i}.txt")),
            format!("doc {i}, revised\n"),
        )?;
    }
    let second = commit(&local, &tree, "second")?;
    run(&mut push(&server, &local, "builder", &builder_pw))?;
    ensure!(
        served_ref(&server)? == second,
        "the move is published at once"
    );
    wait_for(format!("{first}-{second}"))?;
    ensure!(
        !listed(&format!("\"{first}\""))?,
        "the delta to a commit no ref is at is dropped"
    );

    let out = run(ostree(&client).args(["pull", "--require-static-deltas", "wharf", BRANCH]))?;
    run(ostree(&client).arg("fsck"))?;
    let at = std::fs::read_to_string(client.join(format!("refs/remotes/wharf/{BRANCH}")))?;
    ensure!(at.trim() == second, "updated to {at}, not {second}: {out}");

    let jobs = run(Command::new(server.bin())
        .args(["jobs", "list", "--json", "--config"])
        .arg(server.config_path())
        .arg("--data-dir")
        .arg(server.data_dir()))?
    .stdout;
    let delta_jobs: Vec<serde_json::Value> = jobs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|j| j["key"] == format!("ostree-deltas:{REPO}"))
        .collect();
    ensure!(
        delta_jobs.len() >= 2 && delta_jobs.iter().all(|j| j["state"] == "succeeded"),
        "{jobs}"
    );
    ensure!(
        delta_jobs.iter().any(|j| j["summary"]
            .as_str()
            .is_some_and(|s| s.contains("static delta(s) generated") && s.contains("published"))),
        "{jobs}"
    );
    Ok(())
}
