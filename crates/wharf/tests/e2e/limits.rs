//! Slow and hostile clients: hundreds of connections that stop reading, stall an upload or trickle
//! a request head must neither starve other clients nor live forever.
//!
//! These speak raw HTTP over TCP: no stock client can be told to stop reading mid-response or to
//! send a header one byte at a time.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use wharf_testkit::fixture::{sha256_digest, Rng};
use wharf_testkit::http;
use wharf_testkit::{Registry, WharfServer};

use crate::support::{e2e, location_path, start_upload, with_query, Target};

const WHARF: &str = env!("CARGO_BIN_EXE_wharf");
const REPO: &str = "e2e/limits";

/// Starts Wharf with `config` (TOML) and hands back the directory holding the file too.
fn start_with(config: &str) -> Result<(WharfServer, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("wharf.toml");
    std::fs::write(&path, config)?;
    Ok((WharfServer::start_with_config(WHARF, Some(&path))?, dir))
}

/// Writes a request head (and `body`) on a fresh connection and returns it unread.
fn open_request(
    addr: SocketAddr,
    auth: Option<&str>,
    method: &str,
    path: &str,
    extra: &str,
    body: &[u8],
) -> Result<TcpStream> {
    let mut stream = http::connect(addr)?;
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{extra}\r\n"
    )?;
    stream.write_all(body)?;
    stream.flush()?;
    Ok(stream)
}

/// Reads from `stream` until the server closes it or `limit` passes; returns the bytes read and
/// whether the server closed the connection (EOF or reset) in time.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Result<(Vec<u8>, bool)> {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < limit {
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        match stream.read(&mut buf) {
            Ok(0) => return Ok((received, true)),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok((received, true)),
            Err(e) => return Err(e.into()),
        }
    }
    Ok((received, false))
}

/// The status code of the first response in `bytes`.
fn status_of(bytes: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(bytes.get(..12)?).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Uploads `content` as a blob of `REPO` through an upload session.
fn push_blob(target: &Target, content: &[u8]) -> Result<String> {
    let digest = sha256_digest(content);
    let upload = start_upload(target, REPO)?;
    let put = target.request(
        "PUT",
        &with_query(&upload, &format!("digest={digest}")),
        &[("Content-Type", "application/octet-stream")],
        content,
    )?;
    ensure!(put.status == 201, "PUT blob: {} {}", put.status, put.text());
    Ok(digest)
}

/// A normal client's pull and push, which must each finish within `limit`.
fn normal_client_round(
    target: &Target,
    small: &[u8],
    small_digest: &str,
    limit: Duration,
) -> Result<()> {
    let started = Instant::now();
    let get = target.request("GET", &format!("/v2/{REPO}/blobs/{small_digest}"), &[], b"")?;
    ensure!(
        get.status == 200 && get.body == small,
        "GET small blob: {}",
        get.status
    );
    let pulled = started.elapsed();
    let fresh = Rng::from_entropy().bytes(256 * 1024);
    push_blob(target, &fresh)?;
    let pushed = started.elapsed() - pulled;
    eprintln!("normal client: pull {pulled:?}, push {pushed:?}");
    ensure!(
        pulled < limit && pushed < limit,
        "a normal client was starved: pull took {pulled:?}, push {pushed:?}"
    );
    Ok(())
}

#[test]
fn non_reading_downloads_and_stalled_uploads_do_not_starve_others() -> Result<()> {
    // Before: each non-reading GET pinned a blocking thread and each stalled PATCH two, so 400 +
    // 2 × 200 exceeded the pool's 512 and every other blob GET and upload hung.
    const READERS: usize = 400;
    const STALLED: usize = 200;
    e2e(|target| {
        let big = Rng::from_entropy().bytes(16 * 1024 * 1024);
        let big_digest = push_blob(target, &big)?;
        let small = Rng::from_entropy().bytes(64 * 1024);
        let small_digest = push_blob(target, &small)?;
        let addr = target.registry().addr();
        let auth = target.registry().authorization();

        let mut idle = Vec::new();
        for _ in 0..READERS {
            idle.push(open_request(
                addr,
                auth.as_deref(),
                "GET",
                &format!("/v2/{REPO}/blobs/{big_digest}"),
                "",
                b"",
            )?);
        }
        let chunk = Rng::from_entropy().bytes(64 * 1024);
        for _ in 0..STALLED {
            let upload = start_upload(target, REPO)?;
            idle.push(open_request(
                addr,
                auth.as_deref(),
                "PATCH",
                &upload,
                "Content-Type: application/octet-stream\r\nContent-Length: 1048576\r\n",
                &chunk,
            )?);
        }
        // Let the server start every transfer and fill every buffer it will fill.
        thread::sleep(Duration::from_secs(2));

        for _ in 0..3 {
            normal_client_round(target, &small, &small_digest, Duration::from_secs(5))?;
        }
        drop(idle);
        Ok(())
    })
}

#[test]
fn trickled_request_heads_are_cut_while_others_are_served() -> Result<()> {
    const SLOW: usize = 300;
    const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
    let (server, _config) = start_with("[server]\nheader_read_timeout_secs = 2\n")?;
    let addr = server.addr();
    let auth = server.basic_auth_header();
    let started = Instant::now();
    let slow: Vec<_> = (0..SLOW)
        .map(|_| {
            thread::spawn(move || -> Result<Option<Duration>> {
                let mut stream = http::connect(addr)?;
                let head = format!("GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ");
                let opened = Instant::now();
                let mut bytes = head.into_bytes().into_iter().chain(std::iter::repeat(b'a'));
                while opened.elapsed() < Duration::from_secs(20) {
                    let byte = bytes.next().unwrap_or(b'a');
                    if stream.write_all(&[byte]).is_err() {
                        return Ok(Some(opened.elapsed())); // Reset: the server closed it.
                    }
                    let (_, closed) = read_until_closed(&mut stream, Duration::from_millis(250))?;
                    if closed {
                        return Ok(Some(opened.elapsed()));
                    }
                }
                Ok(None)
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    let result = (|| -> Result<()> {
        // The trickling clients do not slow anyone down.
        while started.elapsed() < HEADER_TIMEOUT + Duration::from_secs(1) {
            let t = Instant::now();
            let res = http::request(addr, "GET", "/v2/", &[("Authorization", &auth)], b"")?;
            ensure!(res.status == 200, "GET /v2/: {}", res.status);
            ensure!(
                t.elapsed() < Duration::from_secs(1),
                "a normal request took {:?} among trickling clients",
                t.elapsed()
            );
        }
        let mut slowest = Duration::ZERO;
        for handle in slow {
            let closed = handle.join().expect("trickling thread panicked")?;
            let after = closed.context("a trickling client was never disconnected")?;
            slowest = slowest.max(after);
        }
        eprintln!("all {SLOW} trickling clients disconnected, the last after {slowest:?}");
        ensure!(
            slowest < HEADER_TIMEOUT + Duration::from_secs(4),
            "the last trickling client was disconnected only after {slowest:?}"
        );
        Ok(())
    })();
    result.map_err(|e| anyhow::anyhow!("{e:?}\n\n{}", server.log_tail()))
}

#[test]
fn a_trickled_second_head_on_a_kept_alive_connection_is_cut() -> Result<()> {
    const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
    let (server, _config) = start_with("[server]\nheader_read_timeout_secs = 2\n")?;
    let addr = server.addr();
    let result = (|| -> Result<()> {
        let mut stream = http::connect(addr)?;
        write!(stream, "GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n")?;
        stream.flush()?;
        // The first response arrives and the connection stays open for a next request.
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut first = Vec::new();
        let mut buf = [0u8; 4096];
        while !first.ends_with(b"ok\n") {
            let n = stream.read(&mut buf)?;
            ensure!(n > 0, "closed before the first response was complete");
            first.extend_from_slice(&buf[..n]);
        }
        ensure!(status_of(&first) == Some(200), "first request: {first:?}");
        // The second head never completes: one byte every 250 ms, for up to 20 s.
        let opened = Instant::now();
        let head = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ");
        let mut bytes = head.into_bytes().into_iter().chain(std::iter::repeat(b'a'));
        let closed_after = loop {
            ensure!(
                opened.elapsed() < Duration::from_secs(20),
                "a trickled second head kept its connection open for 20 s"
            );
            if stream.write_all(&[bytes.next().unwrap_or(b'a')]).is_err() {
                break opened.elapsed();
            }
            let (_, closed) = read_until_closed(&mut stream, Duration::from_millis(250))?;
            if closed {
                break opened.elapsed();
            }
        };
        eprintln!("the trickled second head was cut after {closed_after:?}");
        ensure!(
            closed_after >= HEADER_TIMEOUT - Duration::from_millis(300)
                && closed_after < HEADER_TIMEOUT + Duration::from_secs(4),
            "the trickled second head was cut after {closed_after:?}"
        );
        Ok(())
    })();
    result.map_err(|e| anyhow::anyhow!("{e:?}\n\n{}", server.log_tail()))
}

#[test]
fn connections_beyond_the_cap_wait_for_a_free_slot() -> Result<()> {
    const CAP: usize = 16;
    let (server, _config) =
        start_with("[server]\nmax_connections = 16\nheader_read_timeout_secs = 2\n")?;
    let addr = server.addr();
    let auth = server.basic_auth_header();
    let result = (|| -> Result<()> {
        // Silent clients take every slot until the header timeout frees them.
        let mut silent: Vec<TcpStream> = (0..CAP)
            .map(|_| http::connect(addr))
            .collect::<Result<_>>()?;
        thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        let res = http::request(addr, "GET", "/v2/", &[("Authorization", &auth)], b"")?;
        let waited = started.elapsed();
        ensure!(res.status == 200, "GET /v2/: {}", res.status);
        eprintln!("the connection beyond the cap was served after {waited:?}");
        ensure!(
            waited >= Duration::from_millis(1200),
            "a connection beyond the cap of {CAP} was served at once ({waited:?})"
        );
        for stream in &mut silent {
            let (_, closed) = read_until_closed(stream, Duration::from_secs(3))?;
            ensure!(closed, "a silent connection was not closed");
        }
        Ok(())
    })();
    result.map_err(|e| anyhow::anyhow!("{e:?}\n\n{}", server.log_tail()))
}

#[test]
fn a_stalled_upload_body_is_cut_and_its_session_resumes() -> Result<()> {
    let (server, _config) =
        start_with("[server]\nmin_body_rate_bytes = 65536\nmin_body_rate_window_secs = 2\n")?;
    let addr = server.addr();
    let auth = server.basic_auth_header();
    let result = (|| -> Result<()> {
        let content = Rng::from_entropy().bytes(1024 * 1024);
        let digest = sha256_digest(&content);
        let post = http::request(
            addr,
            "POST",
            &format!("/v2/{REPO}/blobs/uploads/"),
            &[("Authorization", &auth)],
            b"",
        )?;
        ensure!(post.status == 202, "POST upload: {}", post.status);
        let upload = location_path(&post)?;
        let sent = 128 * 1024;
        let mut stalled = open_request(
            addr,
            Some(&auth),
            "PATCH",
            &upload,
            &format!(
                "Content-Type: application/octet-stream\r\nContent-Length: {}\r\n",
                content.len()
            ),
            &content[..sent],
        )?;
        let started = Instant::now();
        let (answer, closed) = read_until_closed(&mut stalled, Duration::from_secs(10))?;
        let after = started.elapsed();
        eprintln!(
            "stalled PATCH: status {:?}, closed after {after:?}",
            status_of(&answer)
        );
        ensure!(
            closed,
            "the server kept a stalled upload body open for {after:?}"
        );

        // The session kept what arrived and is free to continue.
        let status = http::request(addr, "GET", &upload, &[("Authorization", &auth)], b"")?;
        ensure!(status.status == 204, "upload status: {}", status.status);
        let expected_range = format!("0-{}", sent - 1);
        ensure!(
            status.header("range") == Some(expected_range.as_str()),
            "upload status Range {:?}, expected {expected_range}",
            status.header("range")
        );
        let content_range = format!("{sent}-{}", content.len() - 1);
        let patched = http::request(
            addr,
            "PATCH",
            &upload,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", &content_range),
            ],
            &content[sent..],
        )?;
        ensure!(
            patched.status == 202,
            "resuming PATCH: {} {}",
            patched.status,
            patched.text()
        );
        let put = http::request(
            addr,
            "PUT",
            &with_query(&location_path(&patched)?, &format!("digest={digest}")),
            &[("Authorization", &auth)],
            b"",
        )?;
        ensure!(
            put.status == 201,
            "completing PUT: {} {}",
            put.status,
            put.text()
        );
        Ok(())
    })();
    result.map_err(|e| anyhow::anyhow!("{e:?}\n\n{}", server.log_tail()))
}
