//! Tests of the harness itself, so an end-to-end failure can be trusted to be Wharf's.
//!
//! Fixtures are checked by a stock client (skopeo reads the layouts we write), the HTTP client
//! against a scripted loopback peer, and the reference registry by starting it for real.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::thread;

use anyhow::{ensure, Context, Result};
use wharf_testkit::fixture::{
    scratch_dir, sha256_digest, stream_digest, ImageSpec, OciLayout, Rng, OCI_INDEX, OCI_MANIFEST,
};
use wharf_testkit::{http, run, run_expect_failure, DockerRegistry, Registry, Tool};

fn skopeo_raw(reference: &str) -> Result<Vec<u8>> {
    Ok(run(Tool::find("skopeo")
        .cmd()
        .args(["inspect", "--raw", reference]))?
    .stdout
    .into_bytes())
}

#[test]
fn skopeo_reads_a_single_image_layout_with_the_digests_we_wrote() -> Result<()> {
    let tmp = scratch_dir()?;
    let mut layout = OciLayout::create(&tmp.path().join("layout"))?;
    let image = layout.add_image("v1", &ImageSpec::new(3, 10_000))?;
    ensure!(image.layers.len() == 3);
    let raw = skopeo_raw(&layout.reference("v1"))?;
    ensure!(sha256_digest(&raw) == image.manifest.digest);
    let manifest: serde_json::Value = serde_json::from_slice(&raw)?;
    ensure!(manifest["mediaType"] == OCI_MANIFEST);
    ensure!(layout.tagged_digest("v1")? == image.manifest.digest);

    // skopeo copies the layout into a dir: and every blob keeps its digest, so layers are valid
    // gzip'd tarballs of the sizes we claimed.
    let out = tmp.path().join("copied");
    run(Tool::find("skopeo")
        .cmd()
        .arg("copy")
        .arg(layout.reference("v1"))
        .arg(format!("dir:{}", out.display())))?;
    for layer in &image.layers {
        let bytes = std::fs::read(out.join(layer.digest.trim_start_matches("sha256:")))?;
        ensure!(sha256_digest(&bytes) == layer.digest);
        ensure!(bytes.len() as u64 == layer.size);
    }
    Ok(())
}

#[test]
fn skopeo_reads_a_two_arch_index_and_each_platform() -> Result<()> {
    let tmp = scratch_dir()?;
    let mut layout = OciLayout::create(&tmp.path().join("layout"))?;
    let multi = layout.add_two_arch_index("multi", 1, 1000)?;
    let raw = skopeo_raw(&layout.reference("multi"))?;
    ensure!(sha256_digest(&raw) == multi.index.digest);
    let index: serde_json::Value = serde_json::from_slice(&raw)?;
    ensure!(index["mediaType"] == OCI_INDEX);
    ensure!(index["manifests"].as_array().map(Vec::len) == Some(2));
    for image in &multi.images {
        let reference = layout.reference(&format!("multi-{}", image.arch));
        let inspected = run(Tool::find("skopeo")
            .cmd()
            .args(["inspect", "--override-arch", &image.arch])
            .arg(&reference))?
        .json()?;
        ensure!(
            inspected["Architecture"] == image.arch.as_str(),
            "{inspected}"
        );
    }
    Ok(())
}

#[test]
fn rng_is_reproducible_per_seed_and_distinct_per_instance() {
    assert_eq!(Rng::from_seed(7).bytes(100), Rng::from_seed(7).bytes(100));
    assert_ne!(Rng::from_seed(7).bytes(100), Rng::from_seed(8).bytes(100));
    assert_ne!(Rng::from_entropy().bytes(32), Rng::from_entropy().bytes(32));
    let hex = Rng::from_seed(1).hex(13);
    assert_eq!(hex.len(), 13);
    assert!(hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
}

#[test]
fn rng_streams_the_same_bytes_whatever_the_read_sizes() -> Result<()> {
    use std::io::Read;
    let whole = Rng::from_seed(3).bytes(100_000);
    let mut streamed = Vec::new();
    let mut reader = Rng::from_seed(3).reader(100_000);
    let mut buf = [0u8; 777];
    while streamed.len() < whole.len() {
        let want = buf.len().min(whole.len() - streamed.len());
        let n = reader.read(&mut buf[..want])?;
        streamed.extend_from_slice(&buf[..n]);
    }
    ensure!(streamed == whole);
    ensure!(reader.read(&mut buf)? == 0, "the reader ends at its length");
    let (size, digest) = stream_digest(&mut Rng::from_seed(3).reader(100_000))?;
    ensure!(size == 100_000 && digest == sha256_digest(&whole));
    Ok(())
}

#[test]
fn http_client_decodes_chunked_responses() -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let peer = thread::spawn(move || -> Result<String> {
        let (stream, _) = listener.accept()?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut request_line = String::new();
        reader.read_line(&mut request_line)?;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            if line.trim().is_empty() {
                break;
            }
        }
        let mut stream = stream;
        stream.write_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Test: yes\r\n\r\n\
              5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n",
        )?;
        Ok(request_line)
    });
    let response = http::request(addr, "GET", "/v2/", &[], b"")?;
    let request_line = peer.join().expect("peer thread does not panic")?;
    ensure!(
        request_line.starts_with("GET /v2/ HTTP/1.1"),
        "{request_line:?}"
    );
    ensure!(response.status == 200);
    ensure!(response.header("X-TEST") == Some("yes"));
    ensure!(response.body == b"hello, world", "{:?}", response.text());
    Ok(())
}

#[test]
fn run_reports_the_failing_command_and_its_stderr() -> Result<()> {
    let err = run(std::process::Command::new("sh").args(["-c", "echo oops >&2; exit 3"]))
        .err()
        .context("a failing command is an error")?;
    let text = format!("{err}");
    ensure!(
        text.contains("exit status: 3") && text.contains("oops"),
        "{text}"
    );
    run_expect_failure(&mut std::process::Command::new("false"))?;
    ensure!(run_expect_failure(&mut std::process::Command::new("true")).is_err());
    Ok(())
}

#[test]
fn a_missing_tool_fails_loudly_with_an_install_hint() {
    let panic = std::panic::catch_unwind(|| Tool::find("wharf-testkit-no-such-tool"))
        .expect_err("a missing tool must panic, never skip");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("apt-get install"), "{message}");
}

#[test]
fn docker_registry_starts_restarts_and_keeps_its_data() -> Result<()> {
    let tmp = scratch_dir()?;
    let mut layout = OciLayout::create(&tmp.path().join("layout"))?;
    let image = layout.add_image("v1", &ImageSpec::new(1, 1000))?;
    let mut registry = DockerRegistry::start()?;
    let remote = |registry: &DockerRegistry| format!("docker://{}/kit/test:v1", registry.host());
    run(Tool::find("skopeo")
        .cmd()
        .args(["copy", "--dest-tls-verify=false"])
        .arg(layout.reference("v1"))
        .arg(remote(&registry)))?;
    registry.restart()?;
    let response = http::request(registry.addr(), "GET", "/v2/", &[], b"")?;
    ensure!(response.status == 200);
    let raw = run(Tool::find("skopeo")
        .cmd()
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(remote(&registry)))?;
    ensure!(sha256_digest(raw.stdout.as_bytes()) == image.manifest.digest);
    Ok(())
}
