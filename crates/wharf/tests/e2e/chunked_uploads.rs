//! Chunked uploads across processes: PATCHes that land on either of two `wharf serve`
//! processes sharing one data directory and database, and a PATCH after a crash and restart.
//!
//! The upload's running SHA-256 is saved beside its staging file after every PATCH, so the
//! process that takes the next chunk, or the final PUT, goes on from it instead of reading back
//! and re-hashing everything before. The proof that it does: the staged prefix is overwritten
//! behind the servers' backs before the PUT, and the PUT still accepts the digest of the bytes
//! that were hashed when they arrived (a server that re-read the prefix would refuse it).

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{ensure, Context, Result};
use wharf_testkit::fixture::sha256_digest;
use wharf_testkit::http::{request, Response};
use wharf_testkit::{Registry, WharfServer};

use crate::support::{location_path, with_query, Replica};

const CHUNK: usize = 512 * 1024 + 7;
const CHUNKS: usize = 6;

#[test]
fn patches_alternate_between_processes_and_survive_a_restart_on_sqlite() -> Result<()> {
    alternate(None)
}

#[test]
fn patches_alternate_between_processes_and_survive_a_restart_on_postgres() -> Result<()> {
    alternate(Some(crate::support::postgres_database("chunked")?))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(37).wrapping_add(seed))
        .collect()
}

struct Upload<'a> {
    path: String,
    auth: &'a str,
    sent: usize,
}

impl Upload<'_> {
    fn start<'a>(addr: SocketAddr, repo: &str, auth: &'a str) -> Result<Upload<'a>> {
        let res = request(
            addr,
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &[("Authorization", auth)],
            b"",
        )?;
        ensure!(
            res.status == 202,
            "POST upload: {} {}",
            res.status,
            res.text()
        );
        Ok(Upload {
            path: location_path(&res)?,
            auth,
            sent: 0,
        })
    }

    fn id(&self) -> Result<&str> {
        self.path
            .split('?')
            .next()
            .and_then(|p| p.rsplit('/').next())
            .context("upload Location without an id")
    }

    fn patch(&mut self, addr: SocketAddr, chunk: &[u8]) -> Result<()> {
        let range = format!("{}-{}", self.sent, self.sent + chunk.len() - 1);
        let res = request(
            addr,
            "PATCH",
            &self.path,
            &[
                ("Authorization", self.auth),
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", &range),
            ],
            chunk,
        )?;
        ensure!(
            res.status == 202,
            "PATCH {range} to {addr}: {} {}",
            res.status,
            res.text()
        );
        self.sent += chunk.len();
        ensure!(
            res.header("range") == Some(&format!("0-{}", self.sent - 1)),
            "PATCH {range} to {addr} answered Range {:?}",
            res.header("range")
        );
        Ok(())
    }

    fn put(&self, addr: SocketAddr, digest: &str) -> Result<Response> {
        request(
            addr,
            "PUT",
            &with_query(&self.path, &format!("digest={digest}")),
            &[("Authorization", self.auth)],
            b"",
        )
    }
}

/// Overwrites the start of an upload's staging file in place.
fn overwrite_staged_prefix(data_dir: &Path, id: &str) -> Result<()> {
    use std::io::Write;
    let path = data_dir.join("blobs").join("uploads").join(id);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .with_context(|| format!("staging file {}", path.display()))?;
    file.write_all(&[0xAA; 4096])?;
    file.sync_all()?;
    Ok(())
}

fn alternate(database_url: Option<String>) -> Result<()> {
    let config_dir = tempfile::tempdir()?;
    let config = config_dir.path().join("wharf.toml");
    let toml = match &database_url {
        Some(url) => format!("[database]\nurl = \"{url}\"\n"),
        None => String::new(),
    };
    std::fs::write(&config, toml)?;
    let bin = Path::new(env!("CARGO_BIN_EXE_wharf"));
    let mut server = WharfServer::start_with_config(bin, Some(&config))?;
    let replica = Replica::beside(&server)?;
    let auth = server.basic_auth_header();

    // One upload, its PATCHes alternating between the two processes, the server crashing
    // and coming back before the last one.
    let data = pattern(CHUNK * CHUNKS, 1);
    let digest = sha256_digest(&data);
    let mut upload = Upload::start(server.addr(), "chunked/alternate", &auth)?;
    let chunks: Vec<&[u8]> = data.chunks(CHUNK).collect();
    for (i, chunk) in chunks[..CHUNKS - 1].iter().enumerate() {
        let addr = if i % 2 == 0 {
            server.addr()
        } else {
            replica.addr
        };
        upload.patch(addr, chunk)?;
    }
    server.kill()?;
    server.restart()?;
    upload.patch(server.addr(), chunks[CHUNKS - 1])?;
    let res = upload.put(replica.addr, &digest)?;
    ensure!(
        res.status == 201,
        "PUT after alternating PATCHes: {} {}\n{}",
        res.status,
        res.text(),
        server.log_tail()
    );
    ensure!(res.header("docker-content-digest") == Some(digest.as_str()));
    for addr in [server.addr(), replica.addr] {
        let res = request(
            addr,
            "GET",
            &format!("/v2/chunked/alternate/blobs/{digest}"),
            &[("Authorization", &auth)],
            b"",
        )?;
        ensure!(
            res.status == 200 && res.body == data,
            "GET from {addr}: {} ({} bytes)",
            res.status,
            res.body.len()
        );
    }

    // The same again, with the staged prefix overwritten before the PUT: nothing before the
    // last chunk may be read back, so the digest of what arrived is still the one accepted.
    let data = pattern(CHUNK * 3, 2);
    let digest = sha256_digest(&data);
    let mut upload = Upload::start(replica.addr, "chunked/unread", &auth)?;
    upload.patch(replica.addr, &data[..CHUNK])?;
    upload.patch(server.addr(), &data[CHUNK..2 * CHUNK])?;
    overwrite_staged_prefix(server.data_dir(), upload.id()?)?;
    server.kill()?;
    server.restart()?;
    upload.patch(server.addr(), &data[2 * CHUNK..])?;
    // The restarted server remembers nothing of this upload but its saved state.
    let res = upload.put(server.addr(), &digest)?;
    ensure!(
        res.status == 201,
        "the PUT re-read the staged prefix instead of resuming the saved hash: {} {}",
        res.status,
        res.text()
    );
    Ok(())
}
