//! Retention and quotas: `wharf retention --dry-run` lists exactly the tags a rule lets go and
//! deletes nothing; `wharf retention` deletes them through the registry, and `wharf gc` then
//! shrinks the blob directory by exactly their bytes; a `[[quota]]` refuses (403 `DENIED`, which
//! skopeo reports) the push that would take its namespace over the limit, counting blobs the
//! namespace's repositories share once. The `retention:oci` job, run by the schedule on a real
//! server and queued with `wharf jobs run`, deletes exactly what the dry run listed, with
//! `keep_newest` counting only the tags `keep_newest_matching` matches and `protect` holding.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use wharf_testkit::fixture::{Image, ImageSpec};
use wharf_testkit::{run, run_expect_failure, WharfServer};

use crate::support::{layout, list_tags, scratch, served_digest, skopeo, skopeo_copy, wharf_cli};

const WHARF: &str = env!("CARGO_BIN_EXE_wharf");

fn start(config: &str) -> Result<(tempfile::TempDir, WharfServer)> {
    let tmp = scratch()?;
    let path = tmp.path().join("wharf.toml");
    fs::write(&path, config)?;
    let server = WharfServer::start_with_config(WHARF, Some(&path))?;
    Ok((tmp, server))
}

/// Bytes of every file under `dir`: what `du --apparent-size` counts for the files.
fn file_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            file_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// Bytes an image's blobs take in the store: manifest, config and layers.
fn image_bytes(image: &Image) -> u64 {
    image.manifest.size + image.config.size + image.layers.iter().map(|l| l.size).sum::<u64>()
}

#[test]
fn dry_run_lists_apply_deletes_and_gc_frees_exactly_those_bytes() -> Result<()> {
    let (tmp, server) = start(
        r#"
[gc]
interval_secs = 0
[[retention.rules]]
repositories = "team/**"
keep_newest = 2
keep_tags = "^stable$"
"#,
    )?;
    let mut src = layout(tmp.path(), "src")?;
    // Oldest first; a second apart, since push times are kept in seconds.
    let order = ["t1", "stable", "t2", "t3", "t4"];
    let mut images = Vec::new();
    for tag in order {
        let image = src.add_image(tag, &ImageSpec::new(2, 96 * 1024))?;
        skopeo_copy(
            &src.reference(tag),
            &format!("docker://{}/team/app:{tag}", server.host()),
            &[],
        )?;
        images.push((tag, image));
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    // A repository no rule covers keeps everything, however old.
    skopeo_copy(
        &src.reference("t1"),
        &format!("docker://{}/other/app:t1", server.host()),
        &[],
    )?;
    let doomed: Vec<&(&str, Image)> = images
        .iter()
        .filter(|(tag, _)| ["t2", "t1"].contains(tag))
        .collect();
    // t1's blobs stay: other/app still holds them.
    let freed: u64 = doomed
        .iter()
        .filter(|(tag, _)| *tag == "t2")
        .map(|(_, image)| image_bytes(image))
        .sum();
    let repo = format!("docker://{}/team/app", server.host());
    let all_tags: BTreeSet<String> = order.iter().map(|t| t.to_string()).collect();

    let dry = run(&mut wharf_cli(&server, &["retention", "--dry-run"]))?;
    for (tag, image) in &doomed {
        let line = format!(
            "would delete manifest team/app@{} with tags {tag}",
            image.manifest.digest
        );
        ensure!(
            dry.stdout.contains(&line),
            "dry run lacks {line:?}:\n{}",
            dry.stdout
        );
    }
    for (tag, image) in images.iter().filter(|(tag, _)| !["t1", "t2"].contains(tag)) {
        ensure!(
            !dry.stdout.contains(&image.manifest.digest),
            "dry run would delete kept {tag}:\n{}",
            dry.stdout
        );
    }
    ensure!(!dry.stdout.contains("other/app"), "{}", dry.stdout);
    let summary = format!(
        "retention: would delete 2 tags and 2 manifests in 1 repositories; garbage collection \
         would then free {freed} bytes in 4 blobs"
    );
    ensure!(
        dry.stdout.contains(&summary),
        "no {summary:?} in:\n{}",
        dry.stdout
    );
    let listed: BTreeSet<String> = list_tags(&repo)?.into_iter().collect();
    ensure!(listed == all_tags, "the dry run deleted tags: {listed:?}");

    let blobs = server.data_dir().join("blobs");
    server.gc()?;
    let before = file_bytes(&blobs)?;
    let applied = run(&mut wharf_cli(&server, &["retention"]))?;
    ensure!(
        applied
            .stdout
            .contains("retention: deleted 2 tags and 2 manifests in 1 repositories"),
        "{}",
        applied.stdout
    );
    ensure!(
        list_tags(&repo)? == ["stable", "t3", "t4"],
        "after retention team/app has {:?}",
        list_tags(&repo)?
    );
    ensure!(list_tags(&format!("docker://{}/other/app", server.host()))? == ["t1"]);
    // Nothing is reclaimed before garbage collection runs…
    ensure!(file_bytes(&blobs)? == before);
    run(&mut wharf_cli(&server, &["gc", "--grace-period-secs", "0"]))?;
    let after = file_bytes(&blobs)?;
    ensure!(
        before - after == freed,
        "the blob directory shrank by {} bytes, expected {freed}",
        before - after
    );
    // …and what stays is whole.
    for (tag, image) in images
        .iter()
        .filter(|(tag, _)| ["stable", "t3", "t4"].contains(tag))
    {
        ensure!(served_digest(&format!("{repo}:{tag}"))? == image.manifest.digest);
    }
    let check = server.check()?;
    ensure!(
        check.status.success(),
        "wharf check after retention and gc: {}",
        check.stdout
    );
    Ok(())
}

#[test]
fn a_quota_refuses_the_push_that_would_exceed_it() -> Result<()> {
    let (tmp, server) = start(
        r#"
[[quota]]
namespace = "small/**"
bytes = 700000
"#,
    )?;
    let mut src = layout(tmp.path(), "src")?;
    let spec = ImageSpec::new(1, 256 * 1024);
    let a = src.add_image("a", &spec)?;
    let b = src.add_image("b", &spec)?;
    src.add_image("c", &spec)?;
    let push = |tag: &str, repo: &str| {
        let mut cmd = skopeo();
        cmd.args(["copy", "--dest-tls-verify=false"])
            .arg(src.reference(tag))
            .arg(format!("docker://{}/{repo}:{tag}", server.host()));
        cmd
    };
    run(&mut push("a", "small/one"))?;
    // The same image in a second repository of the namespace is counted once…
    run(&mut push("a", "small/two"))?;
    // …so a second image still fits (with `a` counted twice it would not).
    run(&mut push("b", "small/one"))?;
    ensure!(image_bytes(&a) * 2 + image_bytes(&b) > 700_000);
    ensure!(image_bytes(&a) + image_bytes(&b) <= 700_000);

    let refused = run_expect_failure(&mut push("c", "small/three"))?;
    ensure!(
        refused
            .stderr
            .contains("quota exceeded: namespace small/** holds"),
        "skopeo's error does not name the quota: {}",
        refused.stderr
    );
    ensure!(
        refused.stderr.to_lowercase().contains("denied"),
        "not DENIED: {}",
        refused.stderr
    );
    // Another namespace is not limited, and the refused push left no tag behind.
    run(&mut push("c", "big/three"))?;
    let refused_tag = format!("docker://{}/small/three:c", server.host());
    run_expect_failure(skopeo().args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        refused_tag.as_str(),
    ]))?;
    // `wharf retention` reports each quota's usage.
    let report = run(&mut wharf_cli(&server, &["retention", "--dry-run"]))?;
    let used = image_bytes(&a) + image_bytes(&b);
    ensure!(
        report
            .stdout
            .contains(&format!("quota: small/** holds {used} of 700000 bytes")),
        "{}",
        report.stdout
    );
    Ok(())
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !done()? {
        ensure!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(())
}

/// The rules of the scheduled test: the newest `v*` tag, and whatever `protect` holds.
const PATTERN_RULES: &str = r#"
[gc]
interval_secs = 0
[retention]
protect = "^lts-"
{schedule}
[[retention.rules]]
repositories = "team/**"
keep_newest = 1
keep_newest_matching = "^v"
"#;

fn pattern_config(schedule: &str) -> String {
    PATTERN_RULES.replace("{schedule}", schedule)
}

#[test]
fn the_schedule_and_a_queued_job_delete_what_the_dry_run_listed() -> Result<()> {
    let tmp = scratch()?;
    let config = tmp.path().join("wharf.toml");
    fs::write(&config, pattern_config(""))?;
    let mut server = WharfServer::start_with_config(WHARF, Some(&config))?;
    let mut src = layout(tmp.path(), "src")?;
    let push = |server: &WharfServer, src: &mut wharf_testkit::fixture::OciLayout, tag: &str| {
        let image = src.add_image(tag, &ImageSpec::new(1, 32 * 1024))?;
        skopeo_copy(
            &src.reference(tag),
            &format!("docker://{}/team/app:{tag}", server.host()),
            &[],
        )?;
        // Push times are kept in seconds.
        std::thread::sleep(Duration::from_millis(1100));
        anyhow::Ok(image)
    };
    let mut images = std::collections::HashMap::new();
    for tag in ["v1", "lts-1", "dev1", "v2", "v3"] {
        images.insert(tag, push(&server, &mut src, tag)?);
    }
    let repo = |server: &WharfServer| format!("docker://{}/team/app", server.host());

    // keep_newest counts only v* tags: v3 stays, v1 and v2 go, and so does dev1, which no
    // keep_* key keeps; lts-1 is protected.
    let dry = run(&mut wharf_cli(&server, &["retention", "--dry-run"]))?;
    let mut listed = Vec::new();
    for line in dry
        .stdout
        .lines()
        .filter(|l| l.starts_with("would delete "))
    {
        listed.push(line.replacen("would delete ", "", 1));
    }
    listed.sort();
    let mut expected: Vec<String> = ["v1", "v2", "dev1"]
        .iter()
        .map(|t| {
            format!(
                "manifest team/app@{} with tags {t}",
                images[t].manifest.digest
            )
        })
        .collect();
    expected.sort();
    ensure!(
        listed == expected,
        "the dry run listed {listed:#?}\n{}",
        dry.stdout
    );

    // The schedule runs the retention:oci job with no command, deleting exactly that.
    fs::write(
        &config,
        pattern_config("interval_secs = 1\njitter_secs = 0"),
    )?;
    server.restart()?;
    wait_for(
        "the scheduled retention run",
        Duration::from_secs(60),
        || Ok(list_tags(&repo(&server))? == ["lts-1", "v3"]),
    )?;
    let jobs = run(&mut wharf_cli(&server, &["jobs", "list", "--json"]))?;
    let summaries: Vec<serde_json::Value> = jobs
        .stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    ensure!(
        summaries.iter().any(|j| j["key"] == "retention:oci"
            && j["state"] == "succeeded"
            && j["summary"]
                .as_str()
                .is_some_and(|s| s
                    .starts_with("retention: deleted 3 tags and 3 manifests in 1 repositories"))),
        "no scheduled retention job deleted the three: {}",
        jobs.stdout
    );
    for tag in ["lts-1", "v3"] {
        ensure!(served_digest(&format!("{}:{tag}", repo(&server)))? == images[tag].manifest.digest);
    }

    // Without the schedule, `wharf jobs run retention:oci` queues the job for the server's
    // worker: v4 pushed now makes v3 the one to go.
    fs::write(&config, pattern_config(""))?;
    server.restart()?;
    images.insert("v4", push(&server, &mut src, "v4")?);
    ensure!(list_tags(&repo(&server))? == ["lts-1", "v3", "v4"]);
    let queued = run(&mut wharf_cli(
        &server,
        &["jobs", "run", "retention:oci", "--wait"],
    ))?;
    ensure!(queued.stdout.contains("succeeded"), "{}", queued.stdout);
    ensure!(
        queued
            .stdout
            .contains("retention: deleted 1 tags and 1 manifests in 1 repositories"),
        "{}",
        queued.stdout
    );
    ensure!(
        list_tags(&repo(&server))? == ["lts-1", "v4"],
        "after the queued job: {:?}",
        list_tags(&repo(&server))?
    );
    let check = server.check()?;
    ensure!(check.status.success(), "wharf check: {}", check.stdout);
    Ok(())
}
