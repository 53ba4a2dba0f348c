//! OSTree retention and publishing under load, as the stock `ostree` client sees them.
//!
//! Retention: an upstream with old and new commits on one ref is mirrored whole, then
//! `[[ostree.retention]]` (keep the last 2, or anything younger than 7 days) is applied:
//! `wharf ostree prune --dry-run` lists the commits that would go and changes nothing, the
//! next `wharf sync` (nothing new upstream) publishes the pruned snapshot, `wharf gc` frees
//! the bytes, and `ostree pull --depth=-1` and `ostree pull --mirror --depth=-1` from Wharf
//! get exactly the kept history and pass `ostree fsck`; a hosted repository's
//! `wharf ostree commit` applies the same rules.
//!
//! Load: two clients pull (`ostree pull`, `ostree pull --mirror`) in a loop while Wharf
//! mirrors, prunes and publishes new upstream commits and collects garbage; no pull fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{ensure, Context, Result};
use wharf_testkit::{run, WharfServer};

use crate::ostree::{ostree, serve_dir};
use crate::support::scratch;

const DAY: u64 = 86_400;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// A tree with a shared part and `unique` bytes of its own (so each commit has content only it reaches).
fn tree(dir: &Path, variant: &str, unique: usize) -> Result<()> {
    std::fs::create_dir_all(dir.join("usr/share"))?;
    for i in 0..20 {
        std::fs::write(
            dir.join(format!("usr/share/common{i}")),
            format!("common {i}\n"),
        )?;
    }
    let mut x: u64 = variant.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    let own: Vec<u8> = (0..unique)
        .map(|_| {
            // xorshift: incompressible, so the archive's .filez is about `unique` bytes.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(dir.join(format!("usr/share/own-{variant}.bin")), own)?;
    std::fs::write(dir.join("version"), format!("{variant}\n"))?;
    Ok(())
}

/// `ostree commit` onto `branch` of `repo` at `timestamp`; returns the checksum.
fn commit_at(
    repo: &Path,
    branch: &str,
    tree: &Path,
    subject: &str,
    timestamp: u64,
) -> Result<String> {
    let out = run(ostree(repo)
        .args(["commit", "-b", branch, "-s", subject])
        .arg(format!("--timestamp=@{timestamp}"))
        .arg(format!("--tree=dir={}", tree.display())))?;
    Ok(out.stdout.trim().to_owned())
}

fn object_url(base: &str, checksum: &str, ext: &str) -> String {
    format!("{base}/objects/{}/{}.{ext}", &checksum[..2], &checksum[2..])
}

fn status(url: &str) -> Result<u16> {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", url])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// Bytes of every file below `dir`.
fn disk_use(dir: &Path) -> Result<u64> {
    let mut total = 0;
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let meta = e.metadata()?;
            if meta.is_dir() {
                todo.push(e.path());
            } else {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

/// `wharf ARGS --config CONFIG --data-dir (the server's)`, so a test can change the rules
/// a CLI run reads without restarting the server.
fn cli(server: &WharfServer, config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(server.bin());
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(server.data_dir());
    cmd
}

/// The commits `ostree log` shows for `branch` in `repo`, newest first.
fn log(repo: &Path, branch: &str) -> Result<(Vec<String>, String)> {
    let out = run(ostree(repo).args(["log", branch]))?;
    let commits = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("commit "))
        .map(|c| c.trim().to_owned())
        .collect();
    Ok((commits, out.stdout))
}

fn client(dir: &Path, name: &str, base: &str) -> Result<PathBuf> {
    let repo = dir.join(name);
    run(ostree(&repo).args(["init", "--mode=archive"]))?;
    run(ostree(&repo).args([
        "remote",
        "add",
        "--no-gpg-verify",
        "wharf",
        &format!("{base}/"),
    ]))?;
    Ok(repo)
}

#[test]
fn retention_keeps_recent_history_and_gc_frees_what_it_cut() -> Result<()> {
    let tmp = scratch()?;
    let dir = tmp.path();
    let up = dir.join("upstream");
    run(ostree(&up).args(["init", "--mode=archive"]))?;
    let now = unix_now();
    // c0..c3 are 30 to 27 days old, c4 is an hour old.
    let mut commits = Vec::new();
    for i in 0..5u64 {
        let t = dir.join(format!("tree{i}"));
        tree(&t, &format!("c{i}"), 300_000)?;
        let when = if i < 4 {
            now - (30 - i) * DAY
        } else {
            now - 3600
        };
        commits.push(commit_at(&up, "main", &t, &format!("c{i}"), when)?);
    }
    run(ostree(&up).args(["summary", "-u"]))?;
    let (_http, url) = serve_dir(&up)?;

    let remote = format!(
        "[publish]\nkeep_retired = 0\ngrace_secs = 0\n\n\
         [[ostree.remotes]]\nname = \"up\"\nurl = \"{url}\"\ninsecure_http = true\n\
         repository = \"os/ret\"\ndepth = -1\n\n\
         [[auth.grants]]\nsubject = \"anonymous\"\nrepositories = \"os/**\"\nactions = [\"pull\"]\n"
    );
    // The first rule matching decides: os/hosted by count alone, the mirror by count or age.
    let rules = "[[ostree.retention]]\nrepositories = \"os/hosted\"\nkeep_last = 2\n\
                 [[ostree.retention]]\nrepositories = \"os/**\"\nrefs = [\"main\"]\n\
                 keep_last = 2\nkeep_days = 7\n";
    let plain = dir.join("plain.toml");
    std::fs::write(&plain, &remote)?;
    let retained = dir.join("retained.toml");
    std::fs::write(&retained, format!("{remote}\n{rules}"))?;
    let bin = Path::new(env!("CARGO_BIN_EXE_wharf"));
    let server = WharfServer::start_with_config(bin, Some(&plain))?;
    let base = format!("{}/ostree/os/ret", server.url());

    // Without rules, the whole history is mirrored.
    run(&mut cli(&server, &plain, &["sync", "up"]))?;
    for c in &commits {
        ensure!(
            status(&object_url(&base, c, "commit"))? == 200,
            "{c} served"
        );
    }
    let blobs = server.data_dir().join("blobs");
    let before = disk_use(&blobs)?;

    // A dry run names c0..c2 (older than 7 days and beyond the last 2) and changes nothing.
    let dry = run(&mut cli(
        &server,
        &retained,
        &["ostree", "prune", "--repo", "os/ret", "--dry-run"],
    ))?;
    for (i, c) in commits.iter().enumerate() {
        let listed = dry.stdout.contains(&format!("cut {c}"));
        ensure!(listed == (i < 3), "c{i} listed={listed}:\n{}", dry.stdout);
    }
    ensure!(
        dry.stdout.contains("3 commits cut") && dry.stdout.contains("dry run"),
        "{}",
        dry.stdout
    );
    ensure!(
        status(&object_url(&base, &commits[0], "commit"))? == 200,
        "a dry run changes nothing"
    );

    // Nothing new upstream, but the next sync applies the rules and publishes.
    let sync = run(&mut cli(&server, &retained, &["sync", "up"]))?;
    ensure!(
        sync.stdout.contains("retention cut 3 commits"),
        "{}",
        sync.stdout
    );
    // Grace 0 still covers the second of the switch (retired_at >= now - 0); then the retired
    // snapshot is deleted, and with it its references to what the cut commits reached.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    run(&mut cli(
        &server,
        &retained,
        &["snapshot", "prune", "os/ret"],
    ))?;
    for (i, c) in commits.iter().enumerate() {
        let want = if i < 3 { 404 } else { 200 };
        ensure!(
            status(&object_url(&base, c, "commit"))? == want,
            "c{i} should answer {want}"
        );
    }
    run(&mut cli(
        &server,
        &retained,
        &["gc", "--grace-period-secs", "0"],
    ))?;
    let after = disk_use(&blobs)?;
    ensure!(
        after + 3 * 290_000 < before,
        "the three cut commits' own content is freed: {before} → {after} bytes"
    );

    // Stock clients take exactly the kept history and find it consistent.
    let pulled = client(dir, "client", &base)?;
    run(ostree(&pulled).args(["pull", "--depth=-1", "wharf", "main"]))?;
    run(ostree(&pulled).args(["fsck"]))?;
    let (shown, text) = log(&pulled, "wharf:main")?;
    ensure!(shown == [commits[4].clone(), commits[3].clone()], "{text}");
    let mirror = client(dir, "mirror", &base)?;
    run(ostree(&mirror).args(["pull", "--mirror", "--depth=-1", "wharf", "main"]))?;
    run(ostree(&mirror).args(["fsck"]))?;
    ensure!(log(&mirror, "main")?.0 == shown);

    // Two new upstream commits: c5 and c6 by count, c4 by age (an hour old), c3 goes.
    for i in 5..7u64 {
        let t = dir.join(format!("tree{i}"));
        tree(&t, &format!("c{i}"), 300_000)?;
        commits.push(commit_at(&up, "main", &t, &format!("c{i}"), now - 60 + i)?);
    }
    run(ostree(&up).args(["summary", "-u"]))?;
    let sync = run(&mut cli(&server, &retained, &["sync", "up"]))?;
    ensure!(
        sync.stdout.contains("retention cut 1 commits"),
        "{}",
        sync.stdout
    );
    std::thread::sleep(std::time::Duration::from_millis(2100));
    ensure!(status(&object_url(&base, &commits[3], "commit"))? == 404);
    run(ostree(&pulled).args(["pull", "--depth=-1", "wharf", "main"]))?;
    run(ostree(&pulled).args(["fsck"]))?;
    let (shown, text) = log(&pulled, "wharf:main")?;
    ensure!(
        shown[..3] == [commits[6].clone(), commits[5].clone(), commits[4].clone()],
        "{text}"
    );
    let fresh = client(dir, "fresh", &base)?;
    run(ostree(&fresh).args(["pull", "--mirror", "--depth=-1", "wharf", "main"]))?;
    run(ostree(&fresh).args(["fsck"]))?;
    ensure!(log(&fresh, "main")?.0.len() == 3);

    // A hosted repository: `wharf ostree commit` keeps the last 2 of its branch.
    let mut hosted = Vec::new();
    for i in 0..3 {
        let t = dir.join(format!("hosted{i}"));
        tree(&t, &format!("h{i}"), 1000)?;
        let tree_arg = format!("--tree={}", t.display());
        let subject = format!("h{i}");
        let out = run(&mut cli(
            &server,
            &retained,
            &[
                "ostree",
                "commit",
                "--repo",
                "os/hosted",
                "-b",
                "main",
                "-s",
                &subject,
                &tree_arg,
            ],
        ))?;
        hosted.push(
            out.stdout
                .lines()
                .next()
                .context("checksum")?
                .trim()
                .to_owned(),
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let hosted_base = format!("{}/ostree/os/hosted", server.url());
    ensure!(status(&object_url(&hosted_base, &hosted[0], "commit"))? == 404);
    ensure!(status(&object_url(&hosted_base, &hosted[1], "commit"))? == 200);
    let h = client(dir, "hosted-client", &hosted_base)?;
    run(ostree(&h).args(["pull", "--mirror", "--depth=-1", "wharf", "main"]))?;
    run(ostree(&h).args(["fsck"]))?;
    ensure!(log(&h, "main")?.0 == [hosted[2].clone(), hosted[1].clone()]);

    // Rules changed to keep 1: `wharf ostree prune` publishes the cut at once; a second run has
    // nothing left to do.
    let stricter = dir.join("stricter.toml");
    std::fs::write(
        &stricter,
        format!("{remote}\n[[ostree.retention]]\nrepositories = \"os/hosted\"\nkeep_last = 1\n"),
    )?;
    let pruned = run(&mut cli(
        &server,
        &stricter,
        &["ostree", "prune", "--repo", "os/hosted"],
    ))?;
    ensure!(
        pruned.stdout.contains(&format!("cut {}", hosted[1]))
            && pruned.stdout.contains("1 commits cut")
            && pruned.stdout.contains("published"),
        "{}",
        pruned.stdout
    );
    std::thread::sleep(std::time::Duration::from_millis(2100));
    ensure!(status(&object_url(&hosted_base, &hosted[1], "commit"))? == 404);
    ensure!(status(&object_url(&hosted_base, &hosted[2], "commit"))? == 200);
    let again = run(&mut cli(
        &server,
        &stricter,
        &["ostree", "prune", "--repo", "os/hosted"],
    ))?;
    ensure!(
        again.stdout.contains("nothing to prune"),
        "{}",
        again.stdout
    );
    let h2 = client(dir, "hosted-client-2", &hosted_base)?;
    run(ostree(&h2).args(["pull", "--depth=-1", "wharf", "main"]))?;
    run(ostree(&h2).args(["fsck"]))?;

    // The same mirror as a job of the server: its history counts refs done of those selected
    // and the bytes transferred (a new commit's own 300 kB at least).
    let t = dir.join("tree7");
    tree(&t, "c7", 300_000)?;
    commits.push(commit_at(&up, "main", &t, "c7", now)?);
    run(ostree(&up).args(["summary", "-u"]))?;
    let job = run(&mut crate::support::wharf_cli(
        &server,
        &["jobs", "run", "ostree-sync:up", "--wait"],
    ))?;
    ensure!(job.stdout.contains("state     succeeded"), "{}", job.stdout);
    let progress = job
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("progress  "))
        .with_context(|| format!("no progress line in {}", job.stdout))?;
    let bytes: u64 = progress
        .split_once(", ")
        .and_then(|(_, b)| b.split(' ').next())
        .and_then(|b| b.parse().ok())
        .with_context(|| format!("no bytes in {progress:?}"))?;
    ensure!(
        progress.starts_with("1 items of 1, ") && bytes > 290_000,
        "{progress}"
    );
    ensure!(status(&object_url(&base, &commits[7], "commit"))? == 200);
    Ok(())
}

#[test]
fn clients_pulling_in_a_loop_never_fail_while_wharf_publishes() -> Result<()> {
    let tmp = scratch()?;
    let dir = tmp.path().to_owned();
    let up = dir.join("upstream");
    run(ostree(&up).args(["init", "--mode=archive"]))?;
    let t = dir.join("tree0");
    tree(&t, "p0", 200_000)?;
    commit_at(&up, "main", &t, "p0", unix_now())?;
    run(ostree(&up).args(["summary", "-u"]))?;
    let (_http, url) = serve_dir(&up)?;
    // Retention keeps one commit, so every publish removes what the previous one served;
    // the replaced snapshot answers for its grace period, which is what clients mid-pull need.
    let config = dir.join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "[[ostree.remotes]]\nname = \"up\"\nurl = \"{url}\"\ninsecure_http = true\n\
             repository = \"os/live\"\ndepth = -1\n\n\
             [[ostree.retention]]\nrepositories = \"os/live\"\nkeep_last = 1\n\n\
             [[auth.grants]]\nsubject = \"anonymous\"\nrepositories = \"os/**\"\nactions = [\"pull\"]\n"
        ),
    )?;
    let bin = Path::new(env!("CARGO_BIN_EXE_wharf"));
    let server = WharfServer::start_with_config(bin, Some(&config))?;
    run(&mut cli(&server, &config, &["sync", "up"]))?;
    let base = format!("{}/ostree/os/live", server.url());
    let pulling = client(&dir, "pulling", &base)?;
    let mirroring = client(&dir, "mirroring", &base)?;

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = Arc::new(Mutex::new(std::collections::BTreeSet::<String>::new()));
    let loops: Vec<_> = [(pulling.clone(), false), (mirroring.clone(), true)]
        .into_iter()
        .map(|(repo, mirror)| {
            let (stop, failures, seen) = (stop.clone(), failures.clone(), seen.clone());
            std::thread::spawn(move || -> u64 {
                let mut pulls = 0;
                // At least one pull after the last publish.
                loop {
                    let last = stop.load(Ordering::SeqCst);
                    let mut cmd = ostree(&repo);
                    cmd.arg("pull");
                    if mirror {
                        cmd.arg("--mirror");
                    }
                    let out = cmd.args(["wharf", "main"]).output().expect("ostree runs");
                    pulls += 1;
                    if !out.status.success() {
                        failures.lock().unwrap().push(format!(
                            "pull{} #{pulls}: {}",
                            if mirror { " --mirror" } else { "" },
                            String::from_utf8_lossy(&out.stderr)
                        ));
                    }
                    let rev = ostree(&repo)
                        .args(["rev-parse", if mirror { "main" } else { "wharf:main" }])
                        .output()
                        .expect("ostree runs");
                    seen.lock()
                        .unwrap()
                        .insert(String::from_utf8_lossy(&rev.stdout).trim().to_owned());
                    if last {
                        return pulls;
                    }
                }
            })
        })
        .collect();

    let mut published = Vec::new();
    for i in 1..=6 {
        let t = dir.join(format!("tree{i}"));
        tree(&t, &format!("p{i}"), 200_000)?;
        published.push(commit_at(&up, "main", &t, &format!("p{i}"), unix_now())?);
        run(ostree(&up).args(["summary", "-u"]))?;
        let out = run(&mut cli(&server, &config, &["sync", "up"]))?;
        ensure!(out.stdout.contains("published"), "{}", out.stdout);
        // Online GC beside the pulls: what a retired snapshot serves in its grace stays.
        run(&mut cli(
            &server,
            &config,
            &["gc", "--grace-period-secs", "0"],
        ))?;
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    stop.store(true, Ordering::SeqCst);
    let counts: Vec<u64> = loops
        .into_iter()
        .map(|h| h.join().expect("no panic"))
        .collect();
    let failures = failures.lock().unwrap().clone();
    let seen = seen.lock().unwrap().clone();
    let total: u64 = counts.iter().sum();
    ensure!(
        failures.is_empty(),
        "{} of {total} pulls failed during {} publishes:\n{}",
        failures.len(),
        published.len(),
        failures.join("\n")
    );
    ensure!(
        counts.iter().all(|c| *c >= 3) && seen.len() >= 3,
        "pulls {counts:?} saw only {} commits during {} publishes: the loop did not overlap",
        seen.len(),
        published.len()
    );
    let last = published.last().expect("six");
    for (repo, name) in [(&pulling, "wharf:main"), (&mirroring, "main")] {
        run(ostree(repo).args(["fsck"]))?;
        let rev = run(ostree(repo).args(["rev-parse", name]))?;
        ensure!(rev.stdout.trim() == last, "{name} ends at the last publish");
    }
    eprintln!(
        "{total} pulls ({} plain, {} --mirror), {} publishes, {} distinct commits seen, 0 failures",
        counts[0],
        counts[1],
        published.len(),
        seen.len()
    );
    Ok(())
}
