//! A store on a file system that fills up, is freed again, or is read-only: writes fail with a
//! clear answer, `/healthz` tells the truth, and the server recovers by itself once space
//! returns.
//!
//! Each test mounts its own small tmpfs (the suite runs as root) and unmounts it on the way out.

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use tempfile::TempDir;
use wharf_testkit::fixture::sha256_digest;
use wharf_testkit::http::{self, basic_auth, Response};

use crate::raw_server::{config_with_password, serve_command, RawServer, Start};
use crate::support::{location_path, scratch, with_query};

/// A tmpfs mounted for one test, unmounted when dropped.
struct SmallDisk {
    dir: PathBuf,
    _parent: TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Result<SmallDisk> {
        let parent = scratch()?;
        let dir = parent.path().join("disk");
        fs::create_dir(&dir)?;
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .status()
            .context("cannot run mount")?;
        ensure!(
            status.success(),
            "mount -t tmpfs failed ({status}); these tests run as root"
        );
        Ok(SmallDisk {
            dir,
            _parent: parent,
        })
    }

    fn remount(&self, option: &str) -> Result<()> {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{option}")])
            .arg(&self.dir)
            .status()?;
        ensure!(
            status.success(),
            "mount -o remount,{option} failed ({status})"
        );
        Ok(())
    }

    /// Writes a file until the file system is full; returns its path.
    fn fill(&self) -> Result<PathBuf> {
        let path = self.dir.join("filler");
        let mut file = fs::File::create(&path)?;
        for chunk in [1 << 20, 4096, 512] {
            let block = vec![0xa5u8; chunk];
            while file.write_all(&block).is_ok() {}
        }
        let _ = file.sync_all();
        Ok(path)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily, so a server still holding files open cannot keep the mount behind.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn healthz(addr: SocketAddr) -> Result<Response> {
    http::request(addr, "GET", "/healthz", &[], b"")
}

/// POST, PUT of a blob with `bytes`; the first response that is not the expected success.
fn push_blob(addr: SocketAddr, auth: &str, repo: &str, bytes: &[u8]) -> Result<Option<Response>> {
    let headers = [("Authorization", auth)];
    let started = http::request(
        addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &headers,
        b"",
    )?;
    if started.status != 202 {
        return Ok(Some(started));
    }
    let put = with_query(
        &location_path(&started)?,
        &format!("digest={}", sha256_digest(bytes)),
    );
    let done = http::request(addr, "PUT", &put, &headers, bytes)?;
    Ok((done.status != 201).then_some(done))
}

/// A manifest push (a database write that touches no upload file) naming `config`.
fn push_manifest(
    addr: SocketAddr,
    auth: &str,
    repo: &str,
    tag: &str,
    config: &[u8],
) -> Result<Response> {
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256_digest(config),
            "size": config.len(),
        },
        "layers": [],
    });
    http::request(
        addr,
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[
            ("Authorization", auth),
            ("Content-Type", "application/vnd.oci.image.manifest.v1+json"),
        ],
        &serde_json::to_vec(&manifest)?,
    )
}

#[test]
fn a_full_disk_answers_clearly_and_recovers_once_space_is_freed() -> Result<()> {
    let disk = SmallDisk::mount("24m")?;
    let tmp = scratch()?;
    let (config, password) = config_with_password(tmp.path(), "")?;
    let data = disk.dir.join("data");
    let server = RawServer::start_ready(serve_command(
        tmp.path(),
        Some(&config),
        "127.0.0.1:0",
        &data,
    ))?;
    let addr = server.addr();
    let auth = basic_auth("admin", &password);
    let log = || server.stderr();
    let health = healthz(addr)?;
    ensure!(
        health.status == 200,
        "healthz on a fresh store: {} {}",
        health.status,
        health.text()
    );
    ensure!(
        push_blob(addr, &auth, "ops/disk", b"before the disk filled")?.is_none(),
        "first push failed"
    );

    let filler = disk.fill()?;
    let health = healthz(addr)?;
    ensure!(
        health.status == 503 && health.text().contains("data directory"),
        "healthz on a full disk: {} {}",
        health.status,
        health.text()
    );
    // Writes of every kind: new upload sessions (database rows), blob bytes, manifests.
    let mut failures = Vec::new();
    for round in 0..40u32 {
        let blob = vec![round as u8; 256 * 1024];
        if let Some(res) = push_blob(addr, &auth, "ops/disk", &blob)? {
            failures.push(res);
        }
        let res = push_manifest(
            addr,
            &auth,
            "ops/disk",
            &format!("full-{round}"),
            b"before the disk filled",
        )?;
        if res.status != 201 {
            failures.push(res);
        }
    }
    // The management API writes to the same database: its refusals say the same.
    let mut api_failures = 0;
    for round in 0..40u32 {
        let body = format!(r#"{{"name":"full-disk-team-{round}"}}"#);
        let res = http::request(
            addr,
            "POST",
            "/api/v1/teams",
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )?;
        if !(200..300).contains(&res.status) {
            api_failures += 1;
            failures.push(res);
        }
    }
    ensure!(
        !failures.is_empty() && api_failures > 0,
        "every write succeeded on a full disk? ({api_failures} API writes refused)"
    );
    for res in &failures {
        ensure!(
            res.status == 507 && res.text().contains("storage is full"),
            "a write on a full disk answered {} {}\n{}",
            res.status,
            res.text(),
            log()
        );
    }

    fs::remove_file(&filler)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while healthz(addr)?.status != 200 {
        ensure!(
            Instant::now() < deadline,
            "healthz still failing after space was freed:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Every pooled connection is used again; none may be stuck in its failed transaction.
    for round in 0..40u32 {
        let blob = format!("after the disk was freed, round {round}").into_bytes();
        if let Some(res) = push_blob(addr, &auth, "ops/disk", &blob)? {
            bail!(
                "push {round} after freeing space: {} {}\n{}",
                res.status,
                res.text(),
                log()
            );
        }
        let res = push_manifest(addr, &auth, "ops/disk", &format!("freed-{round}"), &blob)?;
        ensure!(
            res.status == 201,
            "manifest {round} after freeing space: {} {}\n{}",
            res.status,
            res.text(),
            log()
        );
    }
    ensure!(
        !log().contains("transaction depth"),
        "a connection stayed broken:\n{}",
        log()
    );

    // A deleted data directory is not healthy either, whatever the open database says.
    fs::remove_dir_all(&data)?;
    let health = healthz(addr)?;
    ensure!(
        health.status == 503,
        "healthz without a data directory: {} {}",
        health.status,
        health.text()
    );
    Ok(())
}

#[test]
fn a_read_only_data_directory_fails_the_start_at_once_with_its_cause() -> Result<()> {
    let disk = SmallDisk::mount("16m")?;
    let tmp = scratch()?;
    let (config, _) = config_with_password(tmp.path(), "")?;
    let data = disk.dir.join("data");
    let mut server = RawServer::start_ready(serve_command(
        tmp.path(),
        Some(&config),
        "127.0.0.1:0",
        &data,
    ))?;
    server.stop()?;
    // An empty directory too: the first start of a store on a read-only mount.
    let empty = disk.dir.join("empty");
    fs::create_dir(&empty)?;
    disk.remount("ro")?;

    for dir in [&data, &empty] {
        let started = Instant::now();
        let outcome =
            RawServer::start(serve_command(tmp.path(), Some(&config), "127.0.0.1:0", dir))?;
        let elapsed = started.elapsed();
        let stderr = match outcome {
            Start::Ready(_) => bail!("wharf serve started on read-only {}", dir.display()),
            Start::Exited(status, stderr) => {
                ensure!(!status.success(), "exit {status}");
                stderr
            }
        };
        ensure!(
            stderr.contains("Read-only file system") && stderr.contains(&dir.display().to_string()),
            "the cause is not named:\n{stderr}"
        );
        ensure!(
            elapsed < Duration::from_secs(10),
            "took {elapsed:?} to refuse read-only {}:\n{stderr}",
            dir.display()
        );
    }
    disk.remount("rw")?;
    Ok(())
}
