//! Online garbage collection racing pushes of the same bytes: the data-safety issue's
//! reproduction, made a test.
//!
//! Two `wharf serve` processes share one data directory and one database (SQLite, then
//! PostgreSQL) while `wharf gc --grace-period-secs 0` runs in a loop beside them, and each
//! server also collects every second. Several clients each push a layer, a config and a
//! manifest naming them, read the layer back, delete the manifest, and start over: thousands of
//! rounds. A manifest push may be refused (`MANIFEST_BLOB_UNKNOWN`, when a zero grace period
//! lets the collector take a layer before the manifest names it), but once a manifest was
//! acknowledged its layer must be readable, and `wharf check` must find the store clean.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Result};
use wharf_testkit::fixture::sha256_digest;
use wharf_testkit::http::request;
use wharf_testkit::{Registry, WharfServer};

use crate::support::Replica;

const CLIENTS: usize = 4;
const ROUNDS_PER_CLIENT: usize = 500;

#[test]
fn gc_racing_repushes_loses_nothing_on_sqlite() -> Result<()> {
    race(None)
}

#[test]
fn gc_racing_repushes_loses_nothing_on_postgres() -> Result<()> {
    race(Some(crate::support::postgres_database("gc_race")?))
}

fn race(database_url: Option<String>) -> Result<()> {
    let config_dir = tempfile::tempdir()?;
    let config = config_dir.path().join("wharf.toml");
    let mut toml = String::from("[gc]\ninterval_secs = 1\n");
    if let Some(url) = &database_url {
        toml.push_str(&format!("[database]\nurl = \"{url}\"\n"));
    }
    std::fs::write(&config, toml)?;
    let bin = Path::new(env!("CARGO_BIN_EXE_wharf"));
    let server = WharfServer::start_with_config(bin, Some(&config))?;
    let replica = Replica::beside(&server)?;
    let addrs = [server.addr(), replica.addr];
    let auth = server.basic_auth_header();

    let stop = Arc::new(AtomicBool::new(false));
    let collector = {
        let (stop, config, data_dir) = (
            stop.clone(),
            server.config_path(),
            server.data_dir().to_owned(),
        );
        std::thread::spawn(move || -> Result<u64> {
            let mut runs = 0;
            while !stop.load(Ordering::Relaxed) {
                let out = Command::new(bin)
                    .arg("gc")
                    .arg("--config")
                    .arg(&config)
                    .arg("--data-dir")
                    .arg(&data_dir)
                    .args(["--grace-period-secs", "0"])
                    .output()?;
                ensure!(
                    out.status.success(),
                    "wharf gc failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                runs += 1;
            }
            Ok(runs)
        })
    };

    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let auth = auth.clone();
            std::thread::spawn(move || client_rounds(client, addrs, &auth))
        })
        .collect();
    let mut acknowledged = 0;
    let mut refused = 0;
    let mut failure = None;
    for client in clients {
        match client.join().expect("client thread panicked") {
            Ok((a, r)) => {
                acknowledged += a;
                refused += r;
            }
            Err(e) => failure = Some(e),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let gc_runs = collector.join().expect("collector thread panicked")?;
    if let Some(e) = failure {
        return Err(e.context(server.log_tail()));
    }
    eprintln!(
        "{acknowledged} acknowledged manifests, {refused} refused, {gc_runs} `wharf gc` runs in {:?}",
        started.elapsed()
    );
    ensure!(
        acknowledged >= CLIENTS * ROUNDS_PER_CLIENT,
        "every round ends acknowledged"
    );
    ensure!(gc_runs > 0, "the collector never ran: nothing was raced");
    drop(replica);
    let check = server.check()?;
    ensure!(
        check.status.success(),
        "wharf check after the race: {check}"
    );
    Ok(())
}

/// One client's rounds; returns (acknowledged manifests, refused manifest pushes).
fn client_rounds(client: usize, addrs: [SocketAddr; 2], auth: &str) -> Result<(usize, usize)> {
    let repo = format!("race/c{client}");
    let layer = format!("layer bytes of client {client}").into_bytes();
    let config = format!("{{\"client\":{client}}}").into_bytes();
    let (layer_digest, config_digest) = (sha256_digest(&layer), sha256_digest(&config));
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    })
    .to_string()
    .into_bytes();
    let manifest_digest = sha256_digest(&manifest);
    let headers = [("Authorization", auth)];
    let (mut acknowledged, mut refused) = (0, 0);
    let mut round = 0;
    while acknowledged < ROUNDS_PER_CLIENT {
        round += 1;
        ensure!(round < ROUNDS_PER_CLIENT * 20, "too many refused pushes");
        // Alternate servers so that every step also crosses processes.
        let addr = addrs[round % 2];
        for (digest, bytes) in [(&layer_digest, &layer), (&config_digest, &config)] {
            let res = request(
                addr,
                "POST",
                &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
                &headers,
                bytes,
            )?;
            ensure!(
                res.status == 201,
                "blob push: {} {}",
                res.status,
                res.text()
            );
        }
        let res = request(
            addrs[(round + 1) % 2],
            "PUT",
            &format!("/v2/{repo}/manifests/latest"),
            &[
                ("Authorization", auth),
                ("Content-Type", "application/vnd.oci.image.manifest.v1+json"),
            ],
            &manifest,
        )?;
        match res.status {
            201 => {}
            400 if res.text().contains("MANIFEST_BLOB_UNKNOWN") => {
                refused += 1;
                continue;
            }
            status => bail!("manifest push: {status} {}", res.text()),
        }
        acknowledged += 1;
        // Acknowledged: the layer must be there, from either server, now and a moment later.
        for addr in addrs {
            let res = request(
                addr,
                "GET",
                &format!("/v2/{repo}/blobs/{layer_digest}"),
                &headers,
                b"",
            )?;
            ensure!(
                res.status == 200 && res.body == layer,
                "round {round}: acknowledged manifest {manifest_digest} lost its layer: {} {}",
                res.status,
                res.text()
            );
        }
        if acknowledged == ROUNDS_PER_CLIENT {
            // Leave the last push in place: `wharf check` then verifies a referenced layer too.
            break;
        }
        let res = request(
            addr,
            "DELETE",
            &format!("/v2/{repo}/manifests/{manifest_digest}"),
            &headers,
            b"",
        )?;
        ensure!(
            res.status == 202,
            "manifest delete: {} {}",
            res.status,
            res.text()
        );
    }
    Ok((acknowledged, refused))
}
