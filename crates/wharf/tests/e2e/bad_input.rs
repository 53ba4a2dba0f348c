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

/// Sends a raw request head and body on a fresh connection, without reading the answer.
fn send_raw(target: &Target, head: &str, body: &[u8]) -> Result<std::net::TcpStream> {
    let mut stream = http::connect(target.registry().addr())?;
    let auth: String = target
        .auth_headers()
        .iter()
        .map(|(key, value)| format!("{key}: {value}\r\n"))
        .collect();
    let (request_line, rest) = head.split_once("\r\n").unwrap_or((head, ""));
    write!(
        stream,
        "{request_line}\r\nHost: {}\r\nConnection: close\r\n{auth}{rest}\r\n",
        target.host()
    )?;
    stream.write_all(body)?;
    stream.flush()?;
    Ok(stream)
}

/// Reads a whole `Connection: close` response and returns its status and text.
fn read_raw(mut stream: std::net::TcpStream) -> Result<(u16, String)> {
    use std::io::Read;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP response: {text:?}"))?;
    Ok((status, text))
}

fn error_code(response: &http::Response) -> String {
    serde_json::from_slice::<serde_json::Value>(&response.body)
        .ok()
        .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[test]
fn overflowing_ranges_and_counts_answer_416_or_400() -> Result<()> {
    e2e(|target| {
        let upload = start_upload(target, REPO)?;
        let max = u64::MAX;
        for (content_range, allowed) in [
            (format!("0-{max}"), &[416][..]),
            (format!("{max}-{max}"), &[416][..]),
            ("0-99999999999999999999999".to_owned(), &[400, 416][..]),
            (format!("bytes 0-{max}/{max}"), &[416][..]),
        ] {
            let patched = target.request(
                "PATCH",
                &upload,
                &[
                    ("Content-Type", "application/octet-stream"),
                    ("Content-Range", &content_range),
                ],
                b"x",
            )?;
            ensure!(
                allowed.contains(&patched.status),
                "PATCH with Content-Range {content_range}: {} {}",
                patched.status,
                patched.text()
            );
            let digest = sha256_digest(b"x");
            let put = target.request(
                "PUT",
                &with_query(&upload, &format!("digest={digest}")),
                &[
                    ("Content-Type", "application/octet-stream"),
                    ("Content-Range", &content_range),
                ],
                b"x",
            )?;
            ensure!(
                allowed.contains(&put.status),
                "PUT with Content-Range {content_range}: {} {}",
                put.status,
                put.text()
            );
        }
        // The session survived every refusal.
        let status = target.request("GET", &upload, &[], b"")?;
        ensure!(status.status == 204, "upload status: {}", status.status);

        let content = Rng::from_entropy().bytes(4096);
        let digest = sha256_digest(&content);
        let put = target.request(
            "PUT",
            &with_query(&start_upload(target, REPO)?, &format!("digest={digest}")),
            &[("Content-Type", "application/octet-stream")],
            &content,
        )?;
        ensure!(put.status == 201, "PUT blob: {}", put.status);
        for (range, allowed) in [
            (format!("bytes=0-{max}"), &[200, 206][..]),
            (format!("bytes={max}-"), &[416][..]),
            (format!("bytes=-{max}"), &[200, 206][..]),
            (format!("bytes={max}-{max}"), &[416][..]),
        ] {
            let get = target.request(
                "GET",
                &format!("/v2/{REPO}/blobs/{digest}"),
                &[("Range", &range)],
                b"",
            )?;
            ensure!(
                allowed.contains(&get.status),
                "GET blob with Range {range}: {}",
                get.status
            );
        }
        for (query, allowed) in [
            (format!("n={max}"), &[200, 404][..]),
            ("n=99999999999999999999999".to_owned(), &[400][..]),
            ("n=-1".to_owned(), &[400][..]),
        ] {
            for path in [format!("/v2/{REPO}/tags/list"), "/v2/_catalog".to_owned()] {
                let listed = target.request("GET", &format!("{path}?{query}"), &[], b"")?;
                ensure!(
                    allowed.contains(&listed.status),
                    "GET {path}?{query}: {} {}",
                    listed.status,
                    listed.text()
                );
            }
        }
        assert_server_answers(target)
    })
}

#[test]
fn concurrent_patches_to_one_session_are_serialised() -> Result<()> {
    e2e(|target| {
        let content = Rng::from_entropy().bytes(200 * 1024);
        let half = content.len() / 2;
        let upload = start_upload(target, REPO)?;
        let mut first = send_raw(
            target,
            &format!(
                "PATCH {upload} HTTP/1.1\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nContent-Range: 0-{}\r\n",
                content.len(),
                content.len() - 1
            ),
            &content[..half],
        )?;
        thread::sleep(Duration::from_millis(500));

        // A second PATCH while the first is still sending.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let second = {
            let head = format!(
                "PATCH {upload} HTTP/1.1\r\nContent-Type: application/octet-stream\r\nContent-Length: 1024\r\nContent-Range: 0-1023\r\n"
            );
            let stream = send_raw(target, &head, &[7u8; 1024])?;
            thread::spawn(move || {
                let answer = read_raw(stream);
                let _ = done_tx.send(());
                answer
            })
        };
        // Before the fix the second request queued behind the first; do not wait for it forever.
        let answered_while_first_in_flight = done_rx.recv_timeout(Duration::from_secs(5)).is_ok();
        first.write_all(&content[half..])?;
        first.flush()?;
        let (first_status, first_text) = read_raw(first)?;
        let (second_status, second_text) = second.join().expect("second PATCH thread")?;
        ensure!(
            first_status == 202,
            "first PATCH: {first_status} {first_text}"
        );
        ensure!(
            second_status == 416,
            "a PATCH concurrent with another got {second_status}, not 416: {second_text}"
        );
        ensure!(
            answered_while_first_in_flight,
            "the second PATCH was answered only after the first finished"
        );
        let status = target.request("GET", &upload, &[], b"")?;
        let expected = format!("0-{}", content.len() - 1);
        ensure!(
            status.status == 204 && status.header("range") == Some(expected.as_str()),
            "after both PATCHes the session holds {:?}, expected {expected}",
            status.header("range")
        );
        let digest = sha256_digest(&content);
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
        assert_blob_served(target, &digest, &content)
    })
}

#[test]
fn null_media_type_and_malformed_manifest_bodies_are_400() -> Result<()> {
    e2e(|target| {
        let config = b"{}";
        let config_digest = sha256_digest(config);
        let put = target.request(
            "PUT",
            &with_query(
                &start_upload(target, REPO)?,
                &format!("digest={config_digest}"),
            ),
            &[("Content-Type", "application/octet-stream")],
            config,
        )?;
        ensure!(put.status == 201, "PUT config blob: {}", put.status);
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":null,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":2}},"layers":[]}}"#
        );
        let pushed = target.request(
            "PUT",
            &format!("/v2/{REPO}/manifests/null-type"),
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            manifest.as_bytes(),
        )?;
        ensure!(
            pushed.status == 400 && error_code(&pushed) == "MANIFEST_INVALID",
            "manifest with \"mediaType\": null: {} {}",
            pushed.status,
            pushed.text()
        );

        let chunked = send_raw(
            target,
            &format!(
                "PUT /v2/{REPO}/manifests/bad-chunks HTTP/1.1\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nTransfer-Encoding: chunked\r\n"
            ),
            b"zz\r\n{}\r\n0\r\n\r\n",
        )?;
        let (status, text) = read_raw(chunked)?;
        ensure!(
            status == 400,
            "manifest with a malformed chunked body: {status}, not 400: {text}"
        );
        assert_server_answers(target)
    })
}
