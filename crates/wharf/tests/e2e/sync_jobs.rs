//! Mirroring as jobs on the queue: a remote's schedule picks up an upstream change with no
//! command; `wharf jobs run sync:REMOTE` (and the API) runs one and keeps its summary line in
//! the job history, the second run fetching nothing; the remote's request budget is what bounds
//! a run's time; and a `wharf sync` killed with SIGKILL midway leaves no tag naming incomplete
//! content, the next run completing with the upstream's digests and fetching only what is missing.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use wharf_testkit::fixture::{sha256_digest, ImageSpec};
use wharf_testkit::{run, run_expect_failure, DockerRegistry, Registry, WharfServer};

use crate::mirror::{push_upstream, upstream_digest, write_secret, PASSWORD, USER};
use crate::support::{inspect_raw, layout, list_tags, scratch, wharf_cli};

fn remote(name: &str, url: &str, password_file: &Path, extra: &str) -> String {
    format!(
        r#"
[[mirror.remotes]]
name = "{name}"
url = "{url}"
insecure_http = true
username = "{USER}"
password_file = "{}"
prefix = "{name}"
{extra}

[[mirror.sync]]
remote = "{name}"
repositories = ["team/app"]
include = '^v'
"#,
        password_file.display()
    )
}

/// The number before ` WHAT` or ` WHATs` in a summary line (`12 blobs`).
fn count(line: &str, what: &str) -> Result<u64> {
    let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    words
        .windows(2)
        .find(|w| w[1] == what || w[1] == format!("{what}s"))
        .and_then(|w| w[0].parse().ok())
        .with_context(|| format!("no count of {what} in {line:?}"))
}

/// The seconds of `in S s` at the end of a summary line.
fn seconds(line: &str) -> Result<f64> {
    line.rsplit_once(" in ")
        .and_then(|(_, s)| s.strip_suffix(" s"))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no time in {line:?}"))
}

fn job_field(out: &str, field: &str) -> Result<String> {
    out.lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_owned())
        .with_context(|| format!("no {field} in:\n{out}"))
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !done()? {
        ensure!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(())
}

#[test]
fn scheduled_and_queued_syncs_run_as_jobs_and_keep_their_summary() -> Result<()> {
    let tmp = scratch()?;
    let upstream = DockerRegistry::start_with_htpasswd(USER, PASSWORD)?;
    let mut src = layout(tmp.path(), "src")?;
    let small = ImageSpec::new(2, 16 * 1024);
    src.add_image("v1", &small)?;
    push_upstream(&upstream, &src.reference("v1"), "team/app:v1", false)?;
    let password_file = tmp.path().join("upstream-password");
    write_secret(&password_file, PASSWORD)?;
    let config = tmp.path().join("wharf.toml");
    // `sched` syncs every 2 s on its own; `manual` only when asked, within 2 requests a second.
    fs::write(
        &config,
        format!(
            "{}{}",
            remote(
                "sched",
                &upstream.url(),
                &password_file,
                "interval_secs = 2\njitter_secs = 0"
            ),
            remote(
                "manual",
                &upstream.url(),
                &password_file,
                "requests_per_second = 2"
            ),
        ),
    )?;
    let bin = Path::new(env!("CARGO_BIN_EXE_wharf"));
    let server = WharfServer::start_with_config(bin, Some(&config))?;
    let repo = |prefix: &str| format!("docker://{}/{prefix}/team/app", server.host());

    // The schedule mirrors v1, then picks up v2 pushed upstream, with no command.
    wait_for("the scheduled sync of v1", Duration::from_secs(40), || {
        Ok(list_tags(&repo("sched")).unwrap_or_default() == ["v1"])
    })?;
    src.add_image("v2", &small)?;
    push_upstream(&upstream, &src.reference("v2"), "team/app:v2", false)?;
    let v2 = upstream_digest(&upstream, "team/app:v2")?;
    wait_for("the scheduled sync of v2", Duration::from_secs(40), || {
        Ok(list_tags(&repo("sched")).unwrap_or_default() == ["v1", "v2"])
    })?;
    ensure!(sha256_digest(&inspect_raw(&format!("{}:v2", repo("sched")))?) == v2);
    let listed = run(&mut wharf_cli(&server, &["jobs", "list", "--json"]))?;
    let scheduled: Vec<Value> = listed
        .stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    ensure!(
        scheduled.iter().any(|j| j["kind"] == "sync"
            && j["key"] == "sync:sched"
            && j["state"] == "succeeded"
            && j["summary"]
                .as_str()
                .is_some_and(|s| s.starts_with("synced sched: "))),
        "{listed}"
    );

    // Queued by hand and followed: the summary is in the job's history.
    let first = run(&mut wharf_cli(
        &server,
        &["jobs", "run", "sync:manual", "--wait"],
    ))?;
    ensure!(first.stdout.contains("state     succeeded"), "{first}");
    let summary = job_field(&first.stdout, "summary")?;
    ensure!(
        summary.starts_with("synced manual: ")
            && summary.contains("2 tags copied, 0 tags unchanged, 0 failed"),
        "{first}"
    );
    ensure!(first.stdout.contains("progress  2 items of 2"), "{first}");
    let id = job_field(&first.stdout, "queued job")?;
    let shown = run(&mut wharf_cli(&server, &["jobs", "show", &id]))?;
    ensure!(job_field(&shown.stdout, "summary")? == summary, "{shown}");
    ensure!(
        list_tags(&repo("manual"))? == ["v1", "v2"],
        "the job did not mirror the tags"
    );

    // The second run transfers nothing. Its five requests (the /v2/ probe, the ping, the tag
    // list, two HEADs) at 2 a second take at least 2 s: without the budget, a few milliseconds.
    let second = run(&mut wharf_cli(
        &server,
        &["jobs", "run", "sync:manual", "--wait"],
    ))?;
    let summary = job_field(&second.stdout, "summary")?;
    ensure!(
        summary.contains("0 manifests, 0 blobs, 0 B fetched, 0 tags copied, 2 tags unchanged"),
        "{second}"
    );
    let took = seconds(&summary)?;
    ensure!(
        (1.95..15.0).contains(&took),
        "5 requests at 2/s took {took} s: {second}"
    );

    // Only configured remotes with a sync definition can be queued, by the CLI and the API.
    let bad = run_expect_failure(&mut wharf_cli(&server, &["jobs", "run", "sync:nope"]))?;
    ensure!(
        bad.stderr.contains("no target \"nope\"") && bad.stderr.contains("sync:manual"),
        "{bad}"
    );
    use wharf_testkit::http::request;
    let auth = server.basic_auth_header();
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let res = request(
        server.addr(),
        "POST",
        "/api/v1/jobs",
        &headers,
        br#"{"kind":"sync:manual"}"#,
    )?;
    ensure!(
        matches!(res.status, 200 | 201),
        "{} {}",
        res.status,
        res.text()
    );
    let res = request(
        server.addr(),
        "POST",
        "/api/v1/jobs",
        &headers,
        br#"{"kind":"sync:nope"}"#,
    )?;
    ensure!(
        res.status == 400 && res.text().contains("sync:sched"),
        "{} {}",
        res.status,
        res.text()
    );
    Ok(())
}

#[test]
fn a_sync_killed_midway_resumes_and_fetches_only_what_is_missing() -> Result<()> {
    let tmp = scratch()?;
    let upstream = DockerRegistry::start_with_htpasswd(USER, PASSWORD)?;
    let mut src = layout(tmp.path(), "src")?;
    let spec = ImageSpec::new(2, 64 * 1024);
    let tags = ["v1", "v2", "v3", "v4"];
    for tag in tags {
        src.add_image(tag, &spec)?;
        push_upstream(
            &upstream,
            &src.reference(tag),
            &format!("team/app:{tag}"),
            false,
        )?;
    }
    let password_file = tmp.path().join("upstream-password");
    write_secret(&password_file, PASSWORD)?;
    let config = tmp.path().join("wharf.toml");
    // One tag at a time, four requests a second: each tag (HEAD, manifest, config and two layers) takes over a
    // second, so the run is still going when the first tag is reported.
    fs::write(
        &config,
        remote(
            "up",
            &upstream.url(),
            &password_file,
            "requests_per_second = 4\nconcurrency = 1",
        ),
    )?;
    let bin = Path::new(env!("CARGO_BIN_EXE_wharf"));
    let server = WharfServer::start_with_config(bin, Some(&config))?;

    let mut child = wharf_cli(&server, &["sync", "up"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let first = lines.recv_timeout(Duration::from_secs(60))?;
    ensure!(first.starts_with("copied "), "{first}");
    child.kill()?; // SIGKILL
    child.wait()?;
    let killed: Vec<String> = std::iter::once(first).chain(lines.try_iter()).collect();
    if killed.iter().any(|l| l.starts_with("synced up: ")) {
        bail!("the run ended before it was killed: {killed:?}");
    }
    // Nothing half-done is visible: every tag there is complete (check re-hashes every blob and
    // cross-checks every manifest's references).
    let check = server.check()?;
    ensure!(check.status.success(), "{check}");

    let out = run(&mut wharf_cli(&server, &["sync", "up"]))?;
    let summary = out.stdout.lines().last().context("no output")?;
    ensure!(summary.contains(", 0 failed"), "{out}");
    // An uninterrupted run fetches 12 blobs (a config and two layers per tag); the resumed one
    // fetches none of those already stored.
    let copied_before = killed.iter().filter(|l| l.starts_with("copied ")).count() as u64;
    let blobs = count(summary, "blob")?;
    ensure!(blobs <= 12 - 3 * copied_before, "{killed:?}\n{out}");
    ensure!(
        count(summary, "tag")? == 4 - copied_before,
        "{killed:?}\n{out}"
    );
    std::thread::sleep(Duration::from_millis(1200));
    for tag in tags {
        let local = format!("docker://{}/up/team/app:{tag}", server.host());
        ensure!(
            sha256_digest(&inspect_raw(&local)?)
                == upstream_digest(&upstream, &format!("team/app:{tag}"))?,
            "{tag}: mirrored digest differs from the upstream's"
        );
    }
    Ok(())
}
