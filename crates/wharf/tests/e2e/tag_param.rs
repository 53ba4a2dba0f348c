//! `?tag=` on a manifest push by digest (end-7b) and its `OCI-Tag` answer, driven with curl.
//!
//! No stock client here sends `?tag=` yet (oras 1.2 pushes by tag, then tags one request at a
//! time; skopeo and podman push one tag), so curl sends the push and skopeo judges the result:
//! which tags exist and which manifest each serves. The push grant of the repository is what
//! writes the tags, and a refused push writes none of them.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use wharf_testkit::fixture::{ImageSpec, OciLayout};
use wharf_testkit::WharfServer;

use crate::support::{layout, list_tags, scratch, served_digest, skopeo_copy, wharf_cli};

const REPO: &str = "team/app";
const CONFIG: &str = r#"
[[auth.grants]]
subject = "user:reader"
repositories = "team/**"
actions = ["pull"]
"#;

/// What curl saw: the status, every header line (lowercased names) and the body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .collect()
    }

    fn code(&self) -> String {
        serde_json::from_str::<Value>(&self.body)
            .ok()
            .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// `curl -X PUT` of `manifest` to `/v2/REPO/manifests/<reference><query>`, as `user` (none:
/// anonymous).
fn curl_put(
    server: &WharfServer,
    user: Option<(&str, &str)>,
    reference: &str,
    query: &str,
    manifest: &[u8],
) -> Result<Answer> {
    let dir = scratch()?;
    let body_file = dir.path().join("manifest.json");
    std::fs::write(&body_file, manifest)?;
    let headers_file = dir.path().join("headers");
    let out_file = dir.path().join("body");
    let url = format!(
        "http://{}/v2/{REPO}/manifests/{reference}{query}",
        server.host()
    );
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "-X", "PUT"])
        .args([
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
        ])
        .arg("--data-binary")
        .arg(format!("@{}", body_file.display()))
        .arg("-D")
        .arg(&headers_file)
        .arg("-o")
        .arg(&out_file)
        .args(["-w", "%{http_code}"]);
    if let Some((name, password)) = user {
        cmd.args(["-u", &format!("{name}:{password}")]);
    }
    let out = cmd.arg(&url).output().context("running curl")?;
    ensure!(
        out.status.success(),
        "curl PUT {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    let headers = std::fs::read_to_string(&headers_file)?
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let body = std::fs::read_to_string(&out_file).unwrap_or_default();
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// Pushes a fresh image with skopeo under `tag` and returns its digest and manifest bytes.
fn push_image(server: &WharfServer, src: &mut OciLayout, tag: &str) -> Result<(String, Vec<u8>)> {
    let image = src.add_image(tag, &ImageSpec::new(1, 4096))?;
    let remote = format!("docker://{}/{REPO}:{tag}", server.host());
    skopeo_copy(&src.reference(tag), &remote, &[])?;
    let digest = image.manifest.digest;
    ensure!(served_digest(&remote)? == digest, "skopeo push of {tag}");
    let bytes = src.read_blob(&digest)?;
    Ok((digest, bytes))
}

fn tags(server: &WharfServer) -> Result<Vec<String>> {
    list_tags(&format!("docker://{}/{REPO}", server.host()))
}

#[test]
fn tag_parameters_tag_a_push_by_digest_all_or_none() -> Result<()> {
    let config_dir = tempfile::tempdir()?;
    let config = config_dir.path().join("wharf.toml");
    std::fs::write(&config, CONFIG)?;
    let server = WharfServer::start_with_config(env!("CARGO_BIN_EXE_wharf"), Some(&config))?;
    let mut add_reader = wharf_cli(&server, &["user", "add", "reader", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    add_reader
        .stdin
        .take()
        .context("stdin")?
        .write_all(b"reader-pw\n")?;
    let output = add_reader.wait_with_output()?;
    ensure!(
        output.status.success(),
        "wharf user add: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let admin = ("admin", server.admin_password());
    let tmp = scratch()?;
    let mut src = layout(tmp.path(), "src")?;
    let (first, first_bytes) = push_image(&server, &mut src, "seed")?;
    let host = server.host();
    let served = |tag: &str| served_digest(&format!("docker://{host}/{REPO}:{tag}"));

    // The spec's example: three tags on one push, listed in one OCI-Tag line.
    let answer = curl_put(
        &server,
        Some(admin),
        &first,
        "?tag=1.2.3&tag=1.2&tag=latest&tag=1.2",
        &first_bytes,
    )?;
    ensure!(answer.status == 201, "push with tags: {}", answer.body);
    ensure!(
        answer.values("oci-tag") == ["1.2.3, 1.2, latest"],
        "OCI-Tag lines {:?}",
        answer.values("oci-tag")
    );
    ensure!(answer.values("docker-content-digest") == [first.as_str()]);
    ensure!(tags(&server)? == ["1.2", "1.2.3", "latest", "seed"]);
    for tag in ["1.2.3", "1.2", "latest"] {
        ensure!(served(tag)? == first, "{tag} serves another manifest");
    }

    // One bad value refuses the whole push: the valid tag beside it is not written.
    for bad in [".dot", "-dash", "a%3Ab", "", &"x".repeat(129)] {
        let answer = curl_put(
            &server,
            Some(admin),
            &first,
            &format!("?tag=fresh&tag={bad}"),
            &first_bytes,
        )?;
        ensure!(
            answer.status == 400 && answer.code() == "MANIFEST_INVALID",
            "bad tag {bad:?}: {} {}",
            answer.status,
            answer.body
        );
        ensure!(answer.values("oci-tag").is_empty());
    }
    // `?tag=` belongs to a push by digest; a push by tag that also names tags is refused.
    let answer = curl_put(&server, Some(admin), "seed", "?tag=fresh", &first_bytes)?;
    ensure!(answer.status == 400 && answer.code() == "MANIFEST_INVALID");
    // Past the limit: 414, as the spec allows.
    let many: String = (0..=100).map(|i| format!("&tag=t{i}")).collect();
    let answer = curl_put(
        &server,
        Some(admin),
        &first,
        &format!("?{}", &many[1..]),
        &first_bytes,
    )?;
    ensure!(
        answer.status == 414,
        "101 tags: {} {}",
        answer.status,
        answer.body
    );
    // A manifest the registry refuses (an unknown layer) tags nothing: the tags share its
    // transaction.
    let text = String::from_utf8(first_bytes.clone())?;
    let layer = text
        .split("\"digest\":\"")
        .nth(2)
        .and_then(|rest| rest.split('"').next())
        .context("layer digest in the manifest")?;
    let unknown = format!("sha256:{}", "0".repeat(64));
    let broken = text.replace(layer, &unknown);
    let broken_digest = wharf_testkit::fixture::sha256_digest(broken.as_bytes());
    let answer = curl_put(
        &server,
        Some(admin),
        &broken_digest,
        "?tag=fresh",
        broken.as_bytes(),
    )?;
    ensure!(
        answer.status == 400 && answer.code() == "MANIFEST_BLOB_UNKNOWN",
        "broken manifest: {} {}",
        answer.status,
        answer.body
    );
    // A digest that does not match the body: refused, no tag.
    let answer = curl_put(
        &server,
        Some(admin),
        &broken_digest,
        "?tag=fresh",
        &first_bytes,
    )?;
    ensure!(answer.status == 400 && answer.code() == "DIGEST_INVALID");

    // Tags are written under the push grant: a reader and an anonymous caller are refused.
    let answer = curl_put(
        &server,
        Some(("reader", "reader-pw")),
        &first,
        "?tag=fresh",
        &first_bytes,
    )?;
    ensure!(
        answer.status == 403 && answer.code() == "DENIED",
        "reader: {} {}",
        answer.status,
        answer.body
    );
    let answer = curl_put(&server, None, &first, "?tag=fresh", &first_bytes)?;
    ensure!(answer.status == 401, "anonymous: {}", answer.status);
    ensure!(
        tags(&server)? == ["1.2", "1.2.3", "latest", "seed"],
        "a refused push changed the tags"
    );

    // A second image takes `latest` over in its push by digest; the first keeps its others.
    let (second, second_bytes) = push_image(&server, &mut src, "second")?;
    let answer = curl_put(&server, Some(admin), &second, "?tag=latest", &second_bytes)?;
    ensure!(answer.status == 201 && answer.values("oci-tag") == ["latest"]);
    ensure!(served("latest")? == second, "latest did not move");
    ensure!(served("1.2")? == first);

    let output = server.check()?;
    ensure!(output.status.success(), "wharf check: {output}");
    Ok(())
}
