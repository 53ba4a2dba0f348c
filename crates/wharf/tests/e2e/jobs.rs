//! Background work runs as jobs on the queue shared by every replica: two `wharf serve`
//! processes on one PostgreSQL database run each scheduled collection once, not twice, and the
//! CLI starts, follows and cancels jobs that the servers run.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use wharf_testkit::{run, WharfServer};

use crate::support::{wharf_cli, Replica};

const INTERVAL_SECS: u64 = 2;

fn listed_jobs(server: &WharfServer) -> Result<Vec<Value>> {
    let out = run(&mut wharf_cli(
        server,
        &["jobs", "list", "--limit", "1000", "--json"],
    ))?;
    out.stdout
        .lines()
        .map(|line| serde_json::from_str(line).context("a job line is not JSON"))
        .collect()
}

#[test]
fn two_replicas_run_each_scheduled_collection_once() -> Result<()> {
    let database = crate::support::postgres_database("jobs")?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("wharf.toml");
    std::fs::write(
        &config,
        format!("[gc]\ninterval_secs = {INTERVAL_SECS}\n[database]\nurl = \"{database}\"\n"),
    )?;
    let bin = Path::new(env!("CARGO_BIN_EXE_wharf"));
    let first = WharfServer::start_with_config(bin, Some(&config))?;
    // The second replica: same configuration, same database, same blobs.
    let second = Replica::beside(&first)?;
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(INTERVAL_SECS * 6));
    let elapsed = started.elapsed().as_secs();
    let jobs = listed_jobs(&first)?;
    drop(second);

    let gc: Vec<&Value> = jobs.iter().filter(|j| j["kind"] == "gc").collect();
    // Jitter only delays a run (by at most half the interval): at most one per interval.
    let most = elapsed / INTERVAL_SECS + 1;
    ensure!(
        !gc.is_empty() && gc.len() as u64 <= most,
        "{} gc jobs in {elapsed} s with an interval of {INTERVAL_SECS} s (at most {most}): {jobs:#?}",
        gc.len()
    );
    for job in &gc {
        ensure!(
            matches!(
                job["state"].as_str(),
                Some("succeeded" | "running" | "queued")
            ),
            "{job:#}"
        );
    }
    // Never two at once: finished runs do not overlap in time.
    let mut spans: Vec<(i64, i64)> = gc
        .iter()
        .filter_map(|j| Some((j["started_at"].as_i64()?, j["finished_at"].as_i64()?)))
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        ensure!(pair[0].1 <= pair[1].0, "overlapping collections: {spans:?}");
    }
    Ok(())
}

/// A cron schedule fires at its whole minute. The grammar has minutes as its finest field
/// (crontab(5)'s five), so the test waits for the next minute, up to about 70 s; the
/// arithmetic of next runs, jitter and every field is covered by unit tests in wharf-core
/// and wharf-jobs, and this proves the server lowers `check.schedule` into a running job.
#[test]
fn a_cron_schedule_queues_its_job_at_the_whole_minute() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("wharf.toml");
    // No collections, so the only scheduled job is the verification under test.
    std::fs::write(
        &config,
        "[gc]\ninterval_secs = 0\n[check]\nschedule = \"* * * * *\"\njitter_secs = 0\n",
    )?;
    let bin = Path::new(env!("CARGO_BIN_EXE_wharf"));
    let server = WharfServer::start_with_config(bin, Some(&config))?;
    let deadline = Instant::now() + Duration::from_secs(75);
    let checks = loop {
        let checks: Vec<Value> = listed_jobs(&server)?
            .into_iter()
            .filter(|j| j["kind"] == "check")
            .collect();
        if checks.iter().any(|j| j["state"] == "succeeded") || Instant::now() > deadline {
            break checks;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    ensure!(
        checks.len() == 1 && checks[0]["state"] == "succeeded",
        "one scheduled check within 75 s: {checks:#?}"
    );
    // Queued at the minute, give or take the scheduler's 2 s tick, not at some interval
    // counted from the start.
    let queued = checks[0]["created_at"].as_i64().context("created_at")?;
    ensure!(
        queued.rem_euclid(60) <= 4,
        "check queued {} s past a whole minute",
        queued.rem_euclid(60)
    );
    Ok(())
}

#[test]
fn the_cli_runs_follows_and_cancels_jobs() -> Result<()> {
    let bin = Path::new(env!("CARGO_BIN_EXE_wharf"));
    let server = WharfServer::start(bin)?;
    // Run and follow: the server's worker claims it and records the outcome.
    let out = run(&mut wharf_cli(&server, &["jobs", "run", "check", "--wait"]))?;
    ensure!(out.stdout.contains("state     succeeded"), "{out}");
    ensure!(out.stdout.contains("verified 0 blobs"), "{out}");
    let id = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("queued job "))
        .context("no job id printed")?
        .to_owned();
    let shown = run(&mut wharf_cli(&server, &["jobs", "show", &id, "--json"]))?;
    let shown: Value = serde_json::from_str(&shown.stdout)?;
    ensure!(
        shown["state"] == "succeeded" && shown["kind"] == "check",
        "{shown:#}"
    );
    // An unknown kind and an unknown id are clear errors.
    let bad =
        wharf_testkit::run_expect_failure(&mut wharf_cli(&server, &["jobs", "run", "sweep"]))?;
    ensure!(bad.stderr.contains("unknown job kind"), "{bad}");
    let bad =
        wharf_testkit::run_expect_failure(&mut wharf_cli(&server, &["jobs", "show", "nope"]))?;
    ensure!(bad.stderr.contains("no job nope"), "{bad}");
    Ok(())
}

#[test]
fn the_api_runs_shows_and_cancels_jobs() -> Result<()> {
    use wharf_testkit::http::request;
    let server = WharfServer::start(env!("CARGO_BIN_EXE_wharf"))?;
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
        br#"{"kind":"check"}"#,
    )?;
    ensure!(res.status == 201, "{} {}", res.status, res.text());
    let id = serde_json::from_slice::<Value>(&res.body)?["id"]
        .as_str()
        .context("no id")?
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let job = loop {
        let res = request(
            server.addr(),
            "GET",
            &format!("/api/v1/jobs/{id}"),
            &headers,
            b"",
        )?;
        ensure!(res.status == 200, "{} {}", res.status, res.text());
        let job: Value = serde_json::from_slice(&res.body)?;
        if job["state"] == "succeeded" {
            break job;
        }
        ensure!(Instant::now() < deadline, "job never finished: {job:#}");
        std::thread::sleep(Duration::from_millis(200));
    };
    ensure!(
        job["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("verified")),
        "{job:#}"
    );
    let res = request(server.addr(), "GET", "/api/v1/jobs", &headers, b"")?;
    ensure!(res.text().contains(&id), "{}", res.text());
    let res = request(
        server.addr(),
        "POST",
        "/api/v1/jobs",
        &headers,
        br#"{"kind":"sweep"}"#,
    )?;
    ensure!(
        res.status == 400 && res.text().contains("INVALID"),
        "{} {}",
        res.status,
        res.text()
    );
    let res = request(
        server.addr(),
        "POST",
        "/api/v1/jobs/nope/cancel",
        &headers,
        b"",
    )?;
    ensure!(res.status == 404, "{} {}", res.status, res.text());
    // Administrators only.
    let res = request(server.addr(), "GET", "/api/v1/jobs", &[], b"")?;
    ensure!(res.status == 401, "{} {}", res.status, res.text());
    Ok(())
}
