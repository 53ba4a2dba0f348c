//! Misbehaving clients: uploads cut off mid-body must leave a working server and a clean store.
//!
//! These speak raw HTTP over TCP because no stock client can be made to lie about
//! `Content-Length` and hang up.

use std::io::Write;
use std::net::Shutdown;
use std::thread;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use wharf_testkit::fixture::{sha256_digest, ImageSpec, Rng};
use wharf_testkit::http;

use crate::support::{
    e2e, layout, location_path, scratch, served_digest, skopeo_copy, start_upload, with_query,
    Target,
};

const REPO: &str = "e2e/bad-input";

/// Sends a request head promising `promised` body bytes, then only `sent`, then closes.
fn send_truncated(
    target: &Target,
    method: &str,
    path: &str,
    promised: usize,
    sent: &[u8],
) -> Result<()> {
    let mut stream = http::connect(target.registry().addr())?;
    let auth: String = target
        .auth_headers()
        .iter()
        .map(|(key, value)| format!("{key}: {value}\r\n"))
        .collect();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/octet-stream\r\nContent-Length: {promised}\r\n\r\n",
        target.host()
    )?;
    stream.write_all(sent)?;
    stream.flush()?;
    stream.shutdown(Shutdown::Both)?;
    drop(stream);
    // Give the server a moment to notice the hang-up before the next request races it.
    thread::sleep(Duration::from_millis(300));
    Ok(())
}

fn assert_blob_served(target: &Target, digest: &str, content: &[u8]) -> Result<()> {
    let response = target.request("GET", &format!("/v2/{REPO}/blobs/{digest}"), &[], b"")?;
    ensure!(
        response.status == 200,
        "GET blob: {} {}",
        response.status,
        response.text()
    );
    ensure!(response.body == content, "served blob has other bytes");
    Ok(())
}

fn assert_server_answers(target: &Target) -> Result<()> {
    let response = target.request("GET", "/v2/", &[], b"")?;
    ensure!(
        response.status == 200,
        "GET /v2/ after a hang-up: {}",
        response.status
    );
    Ok(())
}

/// Pushes an image with skopeo and stops the server, then checks the store offline too.
fn assert_still_works(target: &mut Target) -> Result<()> {
    let tmp = scratch()?;
    let mut src = layout(tmp.path(), "src")?;
    let image = src.add_image("v1", &ImageSpec::new(1, 64 * 1024))?;
    let remote = format!("docker://{}:after", target.repo(REPO));
    skopeo_copy(&src.reference("v1"), &remote, &[])?;
    ensure!(served_digest(&remote)? == image.manifest.digest);
    target.assert_store_clean()?;
    if let Some(server) = target.wharf() {
        let status = server.stop()?;
        ensure!(status.success(), "wharf exited with {status} on SIGTERM");
        let output = server.check()?;
        ensure!(output.status.success(), "offline wharf check: {output}");
    }
    Ok(())
}

#[test]
fn patch_cut_off_mid_body_is_resumable_or_abandoned() -> Result<()> {
    e2e(|target| {
        let content = Rng::from_entropy().bytes(1024 * 1024);
        let digest = sha256_digest(&content);
        let upload = start_upload(target, REPO)?;
        send_truncated(
            target,
            "PATCH",
            &upload,
            content.len(),
            &content[..64 * 1024],
        )?;
        assert_server_answers(target)?;

        let status = target.request("GET", &upload, &[], b"")?;
        match status.status {
            // Resumable: the server reports how much it kept, and the client continues there.
            204 => {
                let range = status
                    .header("range")
                    .context("upload status without Range")?;
                let end: usize = range
                    .split_once('-')
                    .and_then(|(_, end)| end.parse().ok())
                    .with_context(|| format!("bad Range {range:?}"))?;
                let kept = end + 1;
                eprintln!("upload after a hang-up: resumable, {kept} bytes kept (Range {range})");
                ensure!(
                    kept <= 64 * 1024,
                    "server claims {kept} bytes, only 65536 were sent"
                );
                let upload = location_path(&status).unwrap_or(upload);
                let content_range = format!("{kept}-{}", content.len() - 1);
                let patched = target.request(
                    "PATCH",
                    &upload,
                    &[
                        ("Content-Type", "application/octet-stream"),
                        ("Content-Range", &content_range),
                    ],
                    &content[kept..],
                )?;
                ensure!(
                    patched.status == 202,
                    "resuming PATCH: {} {}",
                    patched.status,
                    patched.text()
                );
                let upload = location_path(&patched)?;
                let put = target.request(
                    "PUT",
                    &with_query(&upload, &format!("digest={digest}")),
                    &[],
                    b"",
                )?;
                ensure!(
                    put.status == 201,
                    "completing PUT: {} {}",
                    put.status,
                    put.text()
                );
            }
            // Abandoned: the session is gone and a fresh upload must work.
            404 => {
                eprintln!("upload after a hang-up: abandoned (404)");
                let upload = start_upload(target, REPO)?;
                let put = target.request(
                    "PUT",
                    &with_query(&upload, &format!("digest={digest}")),
                    &[("Content-Type", "application/octet-stream")],
                    &content,
                )?;
                ensure!(
                    put.status == 201,
                    "fresh monolithic PUT: {} {}",
                    put.status,
                    put.text()
                );
            }
            other => bail!("upload status after a hang-up: {other} {}", status.text()),
        }
        assert_blob_served(target, &digest, &content)?;
        assert_still_works(target)
    })
}

#[test]
fn monolithic_put_cut_off_mid_body_is_never_served() -> Result<()> {
    e2e(|target| {
        let content = Rng::from_entropy().bytes(512 * 1024);
        let digest = sha256_digest(&content);
        let upload = start_upload(target, REPO)?;
        let put_path = with_query(&upload, &format!("digest={digest}"));
        send_truncated(
            target,
            "PUT",
            &put_path,
            content.len(),
            &content[..100 * 1024],
        )?;
        assert_server_answers(target)?;

        let head = target.request("HEAD", &format!("/v2/{REPO}/blobs/{digest}"), &[], b"")?;
        ensure!(
            head.status == 404,
            "a blob cut off mid-upload is visible: HEAD {}",
            head.status
        );
        assert_still_works(target)
    })
}
