//! Hosted RPM repositories beyond uploads, as dnf sees them: retention (`wharf rpm prune
//! --keep N`, and `[[rpm.hosted]] keep_versions` applied by every change), promotion of
//! packages and of a whole snapshot between repositories (CLI and `POST
//! /api/v1/rpm/<to>/promote`), the upload size cap (413), and uploads racing from several
//! processes at once into one repository, every one of which must end up in the published
//! metadata.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};
use wharf_testkit::fixture::rpm::{build_rpm, RpmSpec};
use wharf_testkit::{run, run_expect_failure, Tool, WharfServer};

use crate::rpm::{curl_api, get_in, Dnf};
use crate::support::wharf_cli;

const NEVRA: &str = "%{name}-%{epoch}:%{version}-%{release}.%{arch}\n";

/// What dnf lists in `repo`, sorted.
fn repoquery(work: &std::path::Path, server: &WharfServer, repo: &str) -> Result<Vec<String>> {
    let dnf = Dnf::for_repo(work, server, repo)?;
    let out = dnf.run(&["repoquery", "--queryformat", NEVRA])?;
    let mut listed: Vec<String> = out
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    listed.sort();
    Ok(listed)
}

fn server(work: &std::path::Path) -> Result<WharfServer> {
    let config = work.join("wharf.toml");
    fs::write(
        &config,
        "[publish]\ngrace_secs = 3600\n\n[rpm]\nmax_upload_bytes = 300000\n\n\
         [[rpm.hosted]]\nrepository = \"el/stable\"\nkeep_versions = 2\n",
    )?;
    WharfServer::start_with_config(env!("CARGO_BIN_EXE_wharf"), Some(&config))
}

#[test]
fn retention_and_promotion_keep_what_dnf_sees() -> Result<()> {
    let work = tempfile::tempdir()?;
    let built = work.path().join("built");
    let mut specs: Vec<RpmSpec> = ["1.0", "2.0", "10.0"]
        .iter()
        .map(|v| RpmSpec::new("hello", v))
        .collect();
    // An epoch beats any version: 1:0.5 is newer than 10.0.
    let mut epoch = RpmSpec::new("hello", "0.5");
    epoch.epoch = Some(1);
    specs.push(epoch);
    for v in ["0.3", "0.4"] {
        let mut libdep = RpmSpec::new("libdep", v);
        libdep.arch = "x86_64".into();
        specs.push(libdep);
    }
    let mut arm = RpmSpec::new("libdep", "0.1");
    arm.arch = "aarch64".into();
    specs.push(arm);
    for s in &specs {
        build_rpm(s, &built)?;
    }
    let server = server(work.path())?;

    // A directory uploads in one snapshot.
    let out = run(&mut wharf_cli(
        &server,
        &[
            "rpm",
            "upload",
            "--repo",
            "el/testing",
            built.to_str().context("path")?,
        ],
    ))?;
    ensure!(
        out.stdout
            .contains("el/testing: 7 packages (snapshot 1, published)"),
        "{}",
        out.stdout
    );

    // A dry run changes nothing.
    let dry = run(&mut wharf_cli(
        &server,
        &[
            "rpm",
            "prune",
            "--repo",
            "el/testing",
            "--keep",
            "2",
            "--dry-run",
        ],
    ))?;
    ensure!(
        dry.stdout.contains("would remove hello-1.0-1.noarch")
            && dry.stdout.contains("would remove hello-2.0-1.noarch")
            && dry.stdout.contains("2 packages would be removed"),
        "{}",
        dry.stdout
    );
    ensure!(repoquery(&work.path().join("d1"), &server, "el/testing")?.len() == 7);

    let pruned = run(&mut wharf_cli(
        &server,
        &["rpm", "prune", "--repo", "el/testing", "--keep", "2"],
    ))?;
    ensure!(
        pruned
            .stdout
            .contains("el/testing: 5 packages (snapshot 2, published)"),
        "{}",
        pruned.stdout
    );
    ensure!(
        repoquery(&work.path().join("d2"), &server, "el/testing")?
            == [
                "hello-0:10.0-1.noarch",
                "hello-1:0.5-1.noarch",
                "libdep-0:0.1-1.aarch64",
                "libdep-0:0.3-1.x86_64",
                "libdep-0:0.4-1.x86_64",
            ],
        "the two newest hello by rpm's order, every arch of libdep"
    );
    let refused = run_expect_failure(&mut wharf_cli(
        &server,
        &["rpm", "prune", "--repo", "el/testing", "--keep", "0"],
    ))?;
    ensure!(
        refused.stderr.contains("keep at least 1"),
        "{}",
        refused.stderr
    );

    // Promotion by name takes the newest build of each arch; by NEVRA that build.
    let promoted = run(&mut wharf_cli(
        &server,
        &[
            "rpm",
            "promote",
            "--from",
            "el/testing",
            "--to",
            "el/stable",
            "hello",
            "libdep-0.3-1.x86_64",
        ],
    ))?;
    ensure!(
        promoted
            .stdout
            .contains("el/testing#2 -> el/stable: Packages/hello-0.5-1.noarch.rpm")
            && promoted.stdout.contains("el/stable: 2 packages"),
        "{}",
        promoted.stdout
    );
    // The same blob, not a copy: the file dnf downloads from stable is testing's.
    // The promotion created el/stable in another process (the CLI); the server
    // learns new repository names within a second (wharf-snapshot NAMES_TTL).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let stable = loop {
        match get_in(&server, "el/stable", "Packages/hello-0.5-1.noarch.rpm")? {
            Some(bytes) => break bytes,
            None if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(100))
            }
            None => bail!("el/stable never served the promoted package"),
        }
    };
    ensure!(Some(stable) == get_in(&server, "el/testing", "Packages/hello-0.5-1.noarch.rpm")?);
    // Through the API, from snapshot 1 (before the prune): two more hello versions, of
    // which stable's `keep_versions = 2` keeps the newest two of three.
    let body = work.path().join("promote.json");
    fs::write(
        &body,
        r#"{"from": "el/testing", "snapshot": 1, "packages": ["hello-2.0-1.noarch", "hello-1.0-1.noarch"]}"#,
    )?;
    let (status, answer) = curl_api(
        &server,
        false,
        "POST",
        "/api/v1/rpm/el/stable/promote",
        Some(&body),
    )?;
    ensure!(status == 401, "anonymous promotion: {status} {answer}");
    let (status, answer) = curl_api(
        &server,
        true,
        "POST",
        "/api/v1/rpm/el/stable/promote",
        Some(&body),
    )?;
    ensure!(status == 200, "promote: {status} {answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer)?;
    ensure!(answer["from_snapshot"] == 1, "{answer}");
    ensure!(
        repoquery(&work.path().join("d3"), &server, "el/stable")?
            == [
                "hello-0:2.0-1.noarch",
                "hello-1:0.5-1.noarch",
                "libdep-0:0.3-1.x86_64",
            ],
        "retention dropped the oldest of three hello"
    );
    let (status, answer) = curl_api(
        &server,
        true,
        "POST",
        "/api/v1/rpm/el/stable/promote",
        Some(&{
            let p = work.path().join("missing.json");
            fs::write(&p, r#"{"from": "el/testing", "packages": ["nosuch"]}"#)?;
            p
        }),
    )?;
    ensure!(
        status == 404 && answer.contains("no package nosuch"),
        "{status} {answer}"
    );

    // A whole snapshot: el/copy becomes testing's snapshot 1, signed, and dnf checks it.
    let whole = run(&mut wharf_cli(
        &server,
        &[
            "rpm",
            "promote",
            "--from",
            "el/testing",
            "--to",
            "el/copy",
            "--snapshot",
            "1",
        ],
    ))?;
    ensure!(
        whole.stdout.contains("el/copy: 7 packages"),
        "{}",
        whole.stdout
    );
    ensure!(repoquery(&work.path().join("d4"), &server, "el/copy")?.len() == 7);
    let key = work.path().join("wharf.asc");
    run(Command::new(Tool::find("curl").path())
        .args(["-sf", "-o"])
        .arg(&key)
        .arg(format!("{}/keys/wharf.asc", server.url())))?;
    let checked = Dnf::for_repo(&work.path().join("d5"), &server, "el/copy")?;
    let repo_file = checked.reposdir.join("wharf.repo");
    let text = fs::read_to_string(&repo_file)?.replace(
        "gpgcheck=0\n",
        &format!(
            "gpgcheck=0\nrepo_gpgcheck=1\ngpgkey=file://{}\n",
            key.display()
        ),
    );
    fs::write(&repo_file, text)?;
    run(&mut checked.cmd_checking(true, &["makecache"]))
        .context("dnf makecache with repo_gpgcheck=1 and Wharf's key")?;
    Ok(())
}

#[test]
fn uploads_racing_from_several_processes_all_publish_and_the_size_cap_answers_413() -> Result<()> {
    let work = tempfile::tempdir()?;
    let built = work.path().join("built");
    let server = server(work.path())?;

    // The cap: a declared length over it is refused before the body is read, and a
    // package over it streamed without a length is cut off; nothing is published.
    let mut big = RpmSpec::new("big", "1");
    big.payload_bytes = 400_000;
    let big = build_rpm(&big, &built.join("big"))?;
    let (status, body) = curl_api(
        &server,
        true,
        "PUT",
        "/api/v1/rpm/el/race/packages/big.rpm",
        Some(&big),
    )?;
    ensure!(
        status == 413 && body.contains("300000 bytes"),
        "{status} {body}"
    );
    let (user, password) = server.credentials();
    let chunked = run(Command::new(Tool::find("curl").path())
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
        .args(["-H", "Transfer-Encoding: chunked", "-u"])
        .arg(format!("{user}:{password}"))
        .arg("--data-binary")
        .arg(format!("@{}", big.display()))
        .arg(format!(
            "{}/api/v1/rpm/el/race/packages/big.rpm",
            server.url()
        )))?;
    ensure!(
        chunked.stdout.trim() == "413",
        "chunked: {}",
        chunked.stdout
    );
    ensure!(get_in(&server, "el/race", "repodata/repomd.xml")?.is_none());

    // Racing writers: CLI processes (no lock shared with the server) and API uploads
    // (serialized inside the server), all at once.
    let mut rpms: Vec<PathBuf> = Vec::new();
    for i in 0..8 {
        rpms.push(build_rpm(&RpmSpec::new(&format!("racer{i}"), "1"), &built)?);
    }
    let mut children = Vec::new();
    for (i, rpm) in rpms.iter().enumerate() {
        let child = if i % 2 == 0 {
            wharf_cli(
                &server,
                &[
                    "rpm",
                    "upload",
                    "--repo",
                    "el/race",
                    rpm.to_str().context("path")?,
                ],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?
        } else {
            Command::new(Tool::find("curl").path())
                .args(["-s", "-f", "-X", "PUT", "-u"])
                .arg(format!("{user}:{password}"))
                .arg("--data-binary")
                .arg(format!("@{}", rpm.display()))
                .arg(format!(
                    "{}/api/v1/rpm/el/race/packages/racer{i}.rpm",
                    server.url()
                ))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?
        };
        children.push(child);
    }
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "writer {i}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let listed = repoquery(&work.path().join("d1"), &server, "el/race")?;
    let want: Vec<String> = (0..8).map(|i| format!("racer{i}-0:1-1.noarch")).collect();
    ensure!(
        listed == want,
        "every racing upload is published: {listed:?}"
    );
    Ok(())
}

/// A composed repository: the union of a hosted repository, a mirror (of a local
/// directory) and another hosted one, first member winning for the same package, with an
/// arch filter and an excluded name; made again when a member publishes (an upload, a
/// mirror run).
#[test]
fn a_composed_repository_follows_its_members_first_wins() -> Result<()> {
    let work = tempfile::tempdir()?;
    let built = work.path().join("built");
    let upstream = work.path().join("upstream");
    let mut upstream_hello = PathBuf::new();
    for (name, version, arch) in [
        ("base-tool", "1.0", "noarch"),
        ("hello", "10.0", "noarch"),
        ("baselib", "1", "aarch64"),
        ("junk-tool", "1", "noarch"),
    ] {
        let mut spec = RpmSpec::new(name, version);
        spec.arch = arch.into();
        let built = build_rpm(&spec, &upstream)?;
        if name == "hello" {
            upstream_hello = built;
        }
    }
    wharf_testkit::fixture::rpm::createrepo(&upstream, &[])?;
    let config = work.path().join("wharf.toml");
    fs::write(
        &config,
        format!(
            "[[rpm.remotes]]\nname = \"up\"\nurl = \"{}\"\nrepository = \"el/base\"\n\n\
             [[rpm.composed]]\nrepository = \"el/all\"\nmembers = [\"el/stable\", \"el/base\", \"el/testing\"]\n\
             arches = [\"noarch\", \"x86_64\"]\nexclude = [\"junk*\"]\n",
            upstream.display()
        ),
    )?;
    let server = WharfServer::start_with_config(env!("CARGO_BIN_EXE_wharf"), Some(&config))?;
    let mut hello = RpmSpec::new("hello", "2.0");
    hello.release = "5".into();
    let stable = build_rpm(&hello, &built.join("stable"))?;
    let testing: Vec<PathBuf> = [("hello", "10.0", "noarch"), ("libdep", "0.4", "x86_64")]
        .iter()
        .map(|(n, v, a)| {
            let mut spec = RpmSpec::new(n, v);
            spec.arch = (*a).into();
            build_rpm(&spec, &built.join("testing"))
        })
        .collect::<Result<_>>()?;
    let upload = |repo: &str, files: &[&PathBuf]| -> Result<String> {
        let mut args = vec!["rpm", "upload", "--repo", repo];
        for f in files {
            args.push(f.to_str().context("path")?);
        }
        Ok(run(&mut wharf_cli(&server, &args))?.stdout)
    };
    upload("el/stable", &[&stable])?;
    upload("el/testing", &testing.iter().collect::<Vec<_>>())?;
    ensure!(
        repoquery(&work.path().join("d1"), &server, "el/all")?
            == [
                "hello-0:10.0-1.noarch",
                "hello-0:2.0-5.noarch",
                "libdep-0:0.4-1.x86_64"
            ],
        "before the mirror ran"
    );
    let synced = run(&mut wharf_cli(&server, &["sync", "up"]))?;
    ensure!(synced.status.success(), "{}", synced.stdout);
    ensure!(
        repoquery(&work.path().join("d2"), &server, "el/all")?
            == [
                "base-tool-0:1.0-1.noarch",
                "hello-0:10.0-1.noarch",
                "hello-0:2.0-5.noarch",
                "libdep-0:0.4-1.x86_64"
            ],
        "after the mirror ran: junk-tool excluded"
    );
    // The mirror is before testing: its hello-10.0 wins over testing's (other bytes).
    let served = get_in(&server, "el/all", "Packages/hello-10.0-1.noarch.rpm")?;
    ensure!(
        served == Some(fs::read(&upstream_hello)?),
        "the first member holding hello-10.0 wins"
    );
    ensure!(get_in(&server, "el/all", "Packages/baselib-1-1.aarch64.rpm")?.is_none());
    // No uploads into a composition.
    let refused = run_expect_failure(&mut wharf_cli(
        &server,
        &[
            "rpm",
            "upload",
            "--repo",
            "el/all",
            stable.to_str().context("path")?,
        ],
    ))?;
    ensure!(
        refused.stderr.contains("is composed of other repositories"),
        "{}",
        refused.stderr
    );
    // By hand, too.
    let out = run(&mut wharf_cli(
        &server,
        &["rpm", "compose", "--repo", "el/all"],
    ))?;
    ensure!(
        out.stdout.contains(
            "el/all: 4 packages from 3 members (1 shadowed by an earlier member, 2 filtered out)"
        ),
        "{}",
        out.stdout
    );
    Ok(())
}

/// Where the main header starts: the second header magic in the file (the
/// first opens the signature header).
fn main_header_start(rpm: &[u8]) -> Result<usize> {
    const MAGIC: [u8; 4] = [0x8e, 0xad, 0xe8, 0x01];
    rpm.windows(4)
        .enumerate()
        .filter(|(_, w)| *w == MAGIC)
        .map(|(i, _)| i)
        .nth(1)
        .context("no main header")
}

#[test]
fn write_signed_rpms_stores_signed_copies_that_rpm_verifies_and_dnf_installs_with_gpgcheck(
) -> Result<()> {
    let work = tempfile::tempdir()?;
    let built = work.path().join("built");
    let unsigned = build_rpm(&RpmSpec::new("hello", "1.0"), &built)?;
    let config = work.path().join("wharf.toml");
    fs::write(
        &config,
        "[[rpm.hosted]]\nrepository = \"el/signed\"\nwrite_signed_rpms = true\n",
    )?;
    let server = WharfServer::start_with_config(env!("CARGO_BIN_EXE_wharf"), Some(&config))?;
    // One package through the CLI, one through the API.
    run(&mut wharf_cli(
        &server,
        &[
            "rpm",
            "upload",
            "--repo",
            "el/signed",
            unsigned.to_str().context("path")?,
        ],
    ))?;
    let libdep = build_rpm(&RpmSpec::new("libdep", "0.3"), &built)?;
    let (status, body) = curl_api(
        &server,
        true,
        "PUT",
        "/api/v1/rpm/el/signed/packages/libdep-0.3-1.noarch.rpm",
        Some(&libdep),
    )?;
    ensure!(status == 201, "API upload: {status} {body}");

    let key = work.path().join("wharf.asc");
    run(Command::new(Tool::find("curl").path())
        .args(["-sf", "-o"])
        .arg(&key)
        .arg(format!("{}/keys/wharf.asc", server.url())))?;
    let rpmdb = work.path().join("rpmdb");
    fs::create_dir_all(&rpmdb)?;
    run(Command::new(Tool::find("rpmkeys").path())
        .arg("--root")
        .arg(&rpmdb)
        .arg("--import")
        .arg(&key))?;
    let checksig = |file: &std::path::Path| -> Result<String> {
        let out = Command::new(Tool::find("rpmkeys").path())
            .arg("--root")
            .arg(&rpmdb)
            .arg("--checksig")
            .arg(file)
            .output()?;
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    };
    let original = checksig(&unsigned)?;
    ensure!(
        !original.contains("signatures"),
        "the built package is already signed: {original}"
    );
    for (name, source) in [
        ("hello-1.0-1.noarch.rpm", &unsigned),
        ("libdep-0.3-1.noarch.rpm", &libdep),
    ] {
        let served = get_in(&server, "el/signed", &format!("Packages/{name}"))?
            .with_context(|| format!("{name} is not served"))?;
        let copy = work.path().join(name);
        fs::write(&copy, &served)?;
        let verdict = checksig(&copy)?;
        ensure!(
            verdict.contains("digests signatures OK"),
            "{name}: rpmkeys --checksig with Wharf's key: {verdict}"
        );
        let source = fs::read(source)?;
        ensure!(
            served[main_header_start(&served)?..] == source[main_header_start(&source)?..],
            "{name}: the signed copy's header and payload differ from the upload"
        );
    }

    // dnf with gpgcheck=1 and repo_gpgcheck=1 installs the signed copies.
    let dnf = Dnf::for_repo(&work.path().join("dnf"), &server, "el/signed")?;
    let repo_file = dnf.reposdir.join("wharf.repo");
    let text = fs::read_to_string(&repo_file)?.replace(
        "gpgcheck=0\n",
        &format!(
            "gpgcheck=1\nrepo_gpgcheck=1\ngpgkey=file://{}\n",
            key.display()
        ),
    );
    fs::write(&repo_file, text)?;
    run(&mut dnf.cmd_checking(true, &["install", "hello", "libdep"]))
        .context("dnf install with gpgcheck=1 from a write_signed_rpms repository")?;
    let installed = run(Command::new(Tool::find("rpm").path())
        .arg("--root")
        .arg(&dnf.root)
        .args(["-q", "hello", "libdep"]))?
    .stdout;
    ensure!(
        installed.contains("hello-1.0-1.noarch") && installed.contains("libdep-0.3-1.noarch"),
        "{installed}"
    );
    Ok(())
}
