//! Graceful shutdown: a request in flight when SIGTERM arrives is finished and
//! acknowledged, the server then exits cleanly, and the upload it belonged to
//! is still there, resumable, after a restart.

use std::io::{BufRead, BufReader, Read, Write};

use anyhow::{Context, Result};
use wharf_testkit::http::{basic_auth, connect, request};
use wharf_testkit::WharfServer;

const WHARF: &str = env!("CARGO_BIN_EXE_wharf");

#[test]
fn sigterm_lets_an_inflight_chunk_finish_and_the_upload_survives() -> Result<()> {
    let mut server = WharfServer::start(WHARF)?;
    let auth = basic_auth("admin", server.admin_password());
    let res = request(
        server.addr(),
        "POST",
        "/v2/drain/app/blobs/uploads/",
        &[("Authorization", &auth)],
        b"",
    )?;
    assert_eq!(res.status, 202);
    let location = res.header("location").context("location")?.to_owned();

    // Start a 2 MiB chunk but send only half of it.
    let chunk: Vec<u8> = (0..2 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut stream = connect(server.addr())?;
    write!(
        stream,
        "PATCH {location} HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}\r\nContent-Type: application/octet-stream\r\n\
         Content-Range: 0-{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        server.addr(),
        chunk.len() - 1,
        chunk.len()
    )?;
    stream.write_all(&chunk[..chunk.len() / 2])?;
    stream.flush()?;
    std::thread::sleep(std::time::Duration::from_millis(300));

    // SIGTERM arrives mid-request; the stop waits for the process to exit.
    let stopper = std::thread::spawn(move || {
        let status = server.stop();
        (server, status)
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    stream.write_all(&chunk[chunk.len() / 2..])?;
    stream.flush()?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let mut rest = String::new();
    let _ = reader.read_to_string(&mut rest);
    assert!(
        status_line.starts_with("HTTP/1.1 202"),
        "the in-flight chunk was not acknowledged: {status_line}{rest}"
    );
    let rest_lower = rest.to_ascii_lowercase();
    assert!(rest_lower.contains("range: 0-2097151"), "{rest}");

    let (mut server, status) = stopper
        .join()
        .map_err(|_| anyhow::anyhow!("stopper panicked"))?;
    assert!(
        status?.success(),
        "the server did not exit cleanly after SIGTERM"
    );

    // After a restart the acknowledged bytes are still there and the upload completes.
    server.restart()?;
    let res = request(
        server.addr(),
        "GET",
        &location,
        &[("Authorization", &auth)],
        b"",
    )?;
    assert_eq!(res.status, 204, "{}", res.text());
    assert_eq!(res.header("range"), Some("0-2097151"));
    let digest = wharf_testkit::fixture::sha256_digest(&chunk);
    let res = request(
        server.addr(),
        "PUT",
        &format!("{location}?digest={digest}"),
        &[("Authorization", &auth)],
        b"",
    )?;
    assert_eq!(res.status, 201, "{}", res.text());
    let res = request(
        server.addr(),
        "HEAD",
        &format!("/v2/drain/app/blobs/{digest}"),
        &[("Authorization", &auth)],
        b"",
    )?;
    assert_eq!(res.status, 200);
    Ok(())
}
