//! Mirroring: `wharf sync` copies the configured tags of an upstream (Debian's docker-registry
//! behind htpasswd, filled by skopeo from local fixtures) with identical digests, fetches nothing
//! the second time, follows a tag moved upstream, and fails clearly — leaving the local tag as it
//! was — on a wrong password or an unreachable upstream.

use std::fs;
use std::net::TcpListener;
use std::path::Path;

use anyhow::{ensure, Context, Result};
use wharf_testkit::fixture::{sha256_digest, ImageSpec};
use wharf_testkit::{run, run_expect_failure, CmdOutput, DockerRegistry, Registry, WharfServer};

use crate::support::{inspect_raw, layout, list_tags, scratch, skopeo, wharf_cli};

pub(crate) const USER: &str = "mirror";
pub(crate) const PASSWORD: &str = "upstream-secret-7";

/// `skopeo copy` from a layout into the upstream, with its credentials.
pub(crate) fn push_upstream(
    upstream: &DockerRegistry,
    src: &str,
    repo_tag: &str,
    all: bool,
) -> Result<()> {
    let mut cmd = skopeo();
    cmd.args(["copy", "--dest-tls-verify=false", "--dest-creds"])
        .arg(format!("{USER}:{PASSWORD}"));
    if all {
        cmd.arg("--all");
    }
    run(cmd
        .arg(src)
        .arg(format!("docker://{}/{repo_tag}", upstream.host())))?;
    Ok(())
}

/// The digest of the manifest bytes the upstream serves for `repo_ref`.
pub(crate) fn upstream_digest(upstream: &DockerRegistry, repo_ref: &str) -> Result<String> {
    let out = run(skopeo()
        .args(["inspect", "--raw", "--tls-verify=false", "--creds"])
        .arg(format!("{USER}:{PASSWORD}"))
        .arg(format!("docker://{}/{repo_ref}", upstream.host())))?;
    Ok(sha256_digest(out.stdout.as_bytes()))
}

fn mirror_config(url: &str, password_file: &Path) -> String {
    format!(
        r#"
[[mirror.remotes]]
name = "up"
url = "{url}"
insecure_http = true
username = "{USER}"
password_file = "{}"
concurrency = 2

[[mirror.sync]]
remote = "up"
repositories = ["team/app"]
include = '^v\d+'
exclude = "rc"

[[mirror.sync]]
remote = "up"
repositories = ["base/os"]
tags = ["1.0"]
"#,
        password_file.display()
    )
}

pub(crate) fn write_secret(path: &Path, text: &str) -> Result<()> {
    fs::write(path, format!("{text}\n"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Waits out the server's one-second tag lookup cache: `wharf sync` is another process, whose
/// writes the server sees within that second (as it sees another replica's).
fn settle() {
    std::thread::sleep(std::time::Duration::from_millis(1200));
}

fn summary(out: &CmdOutput) -> Result<&str> {
    out.stdout
        .lines()
        .last()
        .filter(|l| l.starts_with("synced up: "))
        .with_context(|| format!("no summary line:\n{out}"))
}

#[test]
fn sync_copies_selected_tags_with_their_digests_and_only_what_changed() -> Result<()> {
    let tmp = scratch()?;
    let upstream = DockerRegistry::start_with_htpasswd(USER, PASSWORD)?;
    let mut src = layout(tmp.path(), "src")?;
    let small = ImageSpec::new(2, 32 * 1024);
    for tag in ["v1", "v2", "v3-rc1", "latest"] {
        src.add_image(tag, &small)?;
        push_upstream(
            &upstream,
            &src.reference(tag),
            &format!("team/app:{tag}"),
            false,
        )?;
    }
    src.add_two_arch_index("1.0", 2, 32 * 1024)?;
    push_upstream(&upstream, &src.reference("1.0"), "base/os:1.0", true)?;
    src.add_image("v1", &small)?;
    push_upstream(&upstream, &src.reference("v1"), "other/skipped:v1", false)?;

    let password_file = tmp.path().join("upstream-password");
    write_secret(&password_file, PASSWORD)?;
    let config = tmp.path().join("wharf.toml");
    fs::write(&config, mirror_config(&upstream.url(), &password_file))?;
    let bin = Path::new(env!("CARGO_BIN_EXE_wharf"));
    let server = WharfServer::start_with_config(bin, Some(&config))?;
    // The default prefix is the upstream's host, its port written `_PORT`.
    let prefix = upstream.host().replace(':', "_");
    let local = |repo: &str| format!("docker://{}/{prefix}/{repo}", server.host());

    let first = run(&mut wharf_cli(&server, &["sync", "up"]))?;
    let line = summary(&first)?;
    // team/app v1 and v2 (config + 2 layers each), the index and its two images.
    ensure!(
        line.contains("5 manifests, 12 blobs") && line.contains("3 tags copied, 0 tags unchanged"),
        "{first}"
    );
    ensure!(
        list_tags(&local("team/app"))? == ["v1", "v2"],
        "the filters selected other tags"
    );
    ensure!(list_tags(&local("base/os"))? == ["1.0"]);
    for repo_tag in ["team/app:v1", "team/app:v2", "base/os:1.0"] {
        let mirrored = sha256_digest(&inspect_raw(&local(repo_tag))?);
        ensure!(
            mirrored == upstream_digest(&upstream, repo_tag)?,
            "{repo_tag}: mirrored digest differs from the upstream's"
        );
        ensure!(
            first
                .stdout
                .contains(&format!("copied {prefix}/{repo_tag} {mirrored}")),
            "{first}"
        );
    }
    // Every platform of the index came along, by digest.
    let index: serde_json::Value = serde_json::from_slice(&inspect_raw(&local("base/os:1.0"))?)?;
    for entry in index["manifests"].as_array().context("no manifests")? {
        let digest = entry["digest"].as_str().context("no digest")?;
        inspect_raw(&format!("{}@{digest}", local("base/os")))?;
    }
    let skipped = run_expect_failure(skopeo().args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &local("other/skipped:v1"),
    ]))?;
    ensure!(!skipped.status.success());

    let second = run(&mut wharf_cli(&server, &["sync"]))?;
    let line = summary(&second)?;
    ensure!(
        line.contains("0 manifests, 0 blobs, 0 B fetched, 0 tags copied, 3 tags unchanged"),
        "{second}"
    );

    // A tag moved upstream is picked up; the others stay unchanged.
    src.add_image("v2", &small)?;
    push_upstream(&upstream, &src.reference("v2"), "team/app:v2", false)?;
    let moved = upstream_digest(&upstream, "team/app:v2")?;
    let third = run(&mut wharf_cli(&server, &["sync", "up"]))?;
    let line = summary(&third)?;
    ensure!(
        line.contains("1 manifest, 3 blobs") && line.contains("1 tag copied, 2 tags unchanged"),
        "{third}"
    );
    settle();
    ensure!(sha256_digest(&inspect_raw(&local("team/app:v2"))?) == moved);

    // Move v1 upstream, then sync with a wrong password and with an unreachable upstream: both
    // fail, name the cause, and leave the local v1 where it was.
    let before = sha256_digest(&inspect_raw(&local("team/app:v1"))?);
    src.add_image("v1", &small)?;
    push_upstream(&upstream, &src.reference("v1"), "team/app:v1", false)?;
    let wrong_file = tmp.path().join("wrong-password");
    write_secret(&wrong_file, "not-the-password")?;
    let wrong = tmp.path().join("wrong.toml");
    fs::write(&wrong, mirror_config(&upstream.url(), &wrong_file))?;
    let out = run_expect_failure(
        std::process::Command::new(bin)
            .args(["sync", "up", "--config"])
            .arg(&wrong)
            .arg("--data-dir")
            .arg(server.data_dir()),
    )?;
    ensure!(out.status.code() == Some(1), "{out}");
    ensure!(
        out.stdout
            .contains("refused the credentials of user \"mirror\"")
            && out.stderr.contains("failed"),
        "{out}"
    );
    settle();
    ensure!(sha256_digest(&inspect_raw(&local("team/app:v1"))?) == before);

    let closed = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let unreachable = tmp.path().join("unreachable.toml");
    fs::write(
        &unreachable,
        mirror_config(&format!("http://{closed}"), &password_file),
    )?;
    let out = run_expect_failure(
        std::process::Command::new(bin)
            .args(["sync", "--config"])
            .arg(&unreachable)
            .arg("--data-dir")
            .arg(server.data_dir()),
    )?;
    ensure!(out.status.code() == Some(1), "{out}");
    ensure!(out.stdout.contains("cannot reach"), "{out}");
    settle();
    ensure!(sha256_digest(&inspect_raw(&local("team/app:v1"))?) == before);

    let check = server.check()?;
    ensure!(check.status.success(), "{check}");
    drop(upstream);
    Ok(())
}

#[test]
fn sync_from_a_token_authenticated_wharf() -> Result<()> {
    // The upstream answers /v2/ with a Bearer challenge: the client gets a token per repository
    // from its /token with the Basic credentials.
    let tmp = scratch()?;
    let bin = Path::new(env!("CARGO_BIN_EXE_wharf"));
    let upstream = WharfServer::start(bin)?;
    let mut src = layout(tmp.path(), "src")?;
    let image = src.add_image("v1", &ImageSpec::new(2, 32 * 1024))?;
    src.add_two_arch_index("multi", 1, 16 * 1024)?;
    run(skopeo()
        .args(["copy", "--dest-tls-verify=false"])
        .arg(src.reference("v1"))
        .arg(format!("docker://{}/team/app:v1", upstream.host())))?;
    // The same image in a second repository: its blobs are mounted from the first, not fetched.
    run(skopeo()
        .args(["copy", "--dest-tls-verify=false"])
        .arg(src.reference("v1"))
        .arg(format!("docker://{}/team/copy:v1", upstream.host())))?;
    run(skopeo()
        .args(["copy", "--all", "--dest-tls-verify=false"])
        .arg(src.reference("multi"))
        .arg(format!("docker://{}/team/app:multi", upstream.host())))?;

    let (user, password) = upstream.credentials();
    let password_file = tmp.path().join("upstream-password");
    write_secret(&password_file, &password)?;
    let config = tmp.path().join("wharf.toml");
    fs::write(
        &config,
        format!(
            "[[mirror.remotes]]\nname = \"up\"\nurl = \"{}\"\ninsecure_http = true\n\
             username = \"{user}\"\npassword_file = \"{}\"\nprefix = \"mirrors/up\"\n\
             [[mirror.sync]]\nremote = \"up\"\nrepositories = [\"team/app\"]\n\
             [[mirror.sync]]\nremote = \"up\"\nrepositories = [\"team/copy\"]\ntags = [\"v1\"]\n",
            upstream.url(),
            password_file.display()
        ),
    )?;
    let server = WharfServer::start_with_config(bin, Some(&config))?;
    let out = run(&mut wharf_cli(&server, &["sync", "up"]))?;
    // v1 (config + 2 layers), the index and its two images (config + 1 layer each), and
    // team/copy:v1's manifest alone.
    ensure!(
        summary(&out)?.contains("5 manifests, 7 blobs")
            && summary(&out)?.contains("3 tags copied, 0 tags unchanged"),
        "{out}"
    );
    ensure!(
        sha256_digest(&inspect_raw(&format!(
            "docker://{}/mirrors/up/team/copy:v1",
            server.host()
        ))?) == image.manifest.digest
    );
    let local = |tag: &str| format!("docker://{}/mirrors/up/team/app:{tag}", server.host());
    ensure!(
        list_tags(&format!("docker://{}/mirrors/up/team/app", server.host()))? == ["multi", "v1"]
    );
    ensure!(sha256_digest(&inspect_raw(&local("v1"))?) == image.manifest.digest);
    let upstream_multi = sha256_digest(&inspect_raw(&format!(
        "docker://{}/team/app:multi",
        upstream.host()
    ))?);
    ensure!(sha256_digest(&inspect_raw(&local("multi"))?) == upstream_multi);
    Ok(())
}

/// The key password cosign reads from the environment instead of prompting.
const COSIGN_PASSWORD: &str = "wharf-e2e";

/// cosign inside `dir`, with a private HOME and TUF cache and no transparency log in reach.
fn cosign(dir: &Path) -> std::process::Command {
    let mut cmd = wharf_testkit::Tool::find("cosign").cmd();
    cmd.current_dir(dir)
        .env("HOME", dir)
        .env("TUF_ROOT", dir.join("tuf"))
        .env("COSIGN_PASSWORD", COSIGN_PASSWORD)
        .env("COSIGN_YES", "true");
    cmd
}

#[test]
fn filtered_sync_takes_semver_ranges_one_platform_and_signatures() -> Result<()> {
    let tmp = scratch()?;
    let upstream = DockerRegistry::start_with_htpasswd(USER, PASSWORD)?;
    let mut src = layout(tmp.path(), "src")?;
    let tiny = ImageSpec::new(1, 4 * 1024);
    for tag in [
        "1.0.0",
        "v1.2",
        "1.5.3",
        "2.0.0",
        "1.3.0-rc1",
        "latest",
        "dev",
    ] {
        src.add_image(tag, &tiny)?;
        push_upstream(
            &upstream,
            &src.reference(tag),
            &format!("team/app:{tag}"),
            false,
        )?;
    }
    for tag in ["v1", "v2.1", "v3", "2.5"] {
        src.add_image(tag, &tiny)?;
        push_upstream(
            &upstream,
            &src.reference(tag),
            &format!("team/tools:{tag}"),
            false,
        )?;
    }
    let multi = src.add_two_arch_index("multi", 1, 4 * 1024)?;
    push_upstream(&upstream, &src.reference("multi"), "base/os:multi", true)?;
    let upstream_index = upstream_digest(&upstream, "base/os:multi")?;
    let (amd64, arm64) = (
        &multi.images[0].manifest.digest,
        &multi.images[1].manifest.digest,
    );

    // Sign v1.2 in the upstream: cosign stores `sha256-HEX.sig` beside it.
    let signed = upstream_digest(&upstream, "team/app:v1.2")?;
    let keys = tmp.path().join("keys");
    fs::create_dir_all(&keys)?;
    run(cosign(&keys).arg("generate-key-pair"))?;
    run(cosign(&keys).args([
        "sign",
        "--key",
        "cosign.key",
        "--tlog-upload=false",
        "--allow-insecure-registry",
        "--allow-http-registry",
        "--registry-username",
        USER,
        "--registry-password",
        PASSWORD,
        &format!("{}/team/app@{signed}", upstream.host()),
    ]))?;
    let sig_tag = format!("{}.sig", signed.replace(':', "-"));

    let password_file = tmp.path().join("upstream-password");
    write_secret(&password_file, PASSWORD)?;
    let config = tmp.path().join("wharf.toml");
    fs::write(
        &config,
        format!(
            r#"
[[mirror.remotes]]
name = "up"
url = "{}"
insecure_http = true
username = "{USER}"
password_file = "{}"

[[mirror.sync]]
remote = "up"
repositories = ["team/app"]
semver = ">=1.2, <2"

[[mirror.sync]]
remote = "up"
repositories = ["team/tools"]
include = '^v\d'
semver = ">= 2"
signatures = false

[[mirror.sync]]
remote = "up"
repositories = ["base/os"]
tags = ["multi"]
platforms = ["linux/arm64/v8"]
"#,
            upstream.url(),
            password_file.display()
        ),
    )?;
    let bin = Path::new(env!("CARGO_BIN_EXE_wharf"));
    let server = WharfServer::start_with_config(bin, Some(&config))?;
    let prefix = upstream.host().replace(':', "_");
    let local = |repo: &str| format!("docker://{}/{prefix}/{repo}", server.host());

    let out = run(&mut wharf_cli(&server, &["sync", "up"]))?;
    // v1.2, 1.5.3, the signature; v2.1, v3; the index and its arm64 image.
    ensure!(
        summary(&out)?.contains("5 tags copied, 0 tags unchanged"),
        "{out}"
    );
    // Exactly the range (no pre-release, no non-version tag), plus the signature that travelled.
    ensure!(
        list_tags(&local("team/app"))? == ["1.5.3", sig_tag.as_str(), "v1.2"],
        "team/app: {:?}\n{out}",
        list_tags(&local("team/app"))?
    );
    ensure!(list_tags(&local("team/tools"))? == ["v2.1", "v3"]);
    for repo_tag in [
        "team/app:v1.2",
        "team/app:1.5.3",
        "team/tools:v2.1",
        "team/tools:v3",
    ] {
        ensure!(
            sha256_digest(&inspect_raw(&local(repo_tag))?) == upstream_digest(&upstream, repo_tag)?,
            "{repo_tag}: mirrored digest differs from the upstream's"
        );
    }

    // The sparse index keeps the upstream's digest; its arm64 image pulls, amd64 is unknown.
    ensure!(sha256_digest(&inspect_raw(&local("base/os:multi"))?) == upstream_index);
    ensure!(list_tags(&local("base/os"))? == ["multi"]);
    let pulled = tmp.path().join("pulled");
    run(skopeo()
        .args(["--override-arch", "arm64", "--override-variant", "v8"])
        .args(["copy", "--src-tls-verify=false"])
        .arg(local("base/os:multi"))
        .arg(format!("oci:{}:arm64", pulled.display())))?;
    let pulled_index: serde_json::Value =
        serde_json::from_slice(&fs::read(pulled.join("index.json"))?)?;
    ensure!(
        pulled_index["manifests"][0]["digest"] == arm64.as_str(),
        "pulled {pulled_index}, wanted {arm64}"
    );
    let left_out = run_expect_failure(skopeo().args([
        "--override-arch",
        "amd64",
        "copy",
        "--src-tls-verify=false",
        &local("base/os:multi"),
        &format!("oci:{}:amd64", pulled.display()),
    ]))?;
    ensure!(left_out.stderr.contains("manifest unknown"), "{left_out}");
    let child = run_expect_failure(skopeo().args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("{}@{amd64}", local("base/os")),
    ]))?;
    ensure!(child.stderr.contains("manifest unknown"), "{child}");

    // cosign verifies against the mirror with the key that signed upstream.
    let verified = run(cosign(&keys).args([
        "verify",
        "--key",
        "cosign.pub",
        "--insecure-ignore-tlog",
        "--allow-insecure-registry",
        "--allow-http-registry",
        &format!("{}/{prefix}/team/app@{signed}", server.host()),
    ]))?;
    ensure!(
        verified.json()?[0]["critical"]["image"]["docker-manifest-digest"] == signed.as_str(),
        "{verified}"
    );

    // A second run fetches nothing; check and a collection find nothing wrong with the
    // children the index names but the store never had, and lose nothing.
    let again = run(&mut wharf_cli(&server, &["sync", "up"]))?;
    ensure!(
        summary(&again)?.contains("0 manifests, 0 blobs, 0 B fetched, 0 tags copied"),
        "{again}"
    );
    let check = server.check()?;
    ensure!(check.status.success(), "{check}");
    server.gc()?;
    let check = server.check()?;
    ensure!(check.status.success(), "{check}");
    settle();
    run(skopeo()
        .args(["--override-arch", "arm64", "copy", "--src-tls-verify=false"])
        .arg(local("base/os:multi"))
        .arg(format!("oci:{}:again", pulled.display())))?;
    Ok(())
}

#[test]
fn a_skopeo_sync_file_is_a_source() -> Result<()> {
    // Seed 001's two lines, `docker.io/busybox:musl` and all of `quay.io/coreos/etcd`, as a
    // skopeo sync file naming two loopback hosts (one registry under two names).
    let tmp = scratch()?;
    let upstream = DockerRegistry::start_with_htpasswd(USER, PASSWORD)?;
    let mut src = layout(tmp.path(), "src")?;
    let tiny = ImageSpec::new(1, 4 * 1024);
    for (repo, tag) in [
        ("busybox", "musl"),
        ("busybox", "glibc"),
        ("coreos/etcd", "v3.1"),
        ("coreos/etcd", "v3.3"),
        ("coreos/etcd", "latest"),
    ] {
        src.add_image(tag, &tiny)?;
        push_upstream(
            &upstream,
            &src.reference(tag),
            &format!("{repo}:{tag}"),
            false,
        )?;
    }
    let port = upstream
        .host()
        .rsplit_once(':')
        .context("no port")?
        .1
        .to_owned();
    let sync_file = tmp.path().join("sync.yml");
    fs::write(
        &sync_file,
        format!(
            r#"127.0.0.1:{port}:
    images:
        busybox:
            - musl
    credentials:
        username: {USER}
        password: {PASSWORD}
    tls-verify: false
localhost:{port}:
    images:
        coreos/etcd: []
    credentials:
        username: {USER}
        password: {PASSWORD}
    tls-verify: false
"#
        ),
    )?;
    let config = tmp.path().join("wharf.toml");
    // Absolute: the testkit copies the configuration into a directory of its own.
    fs::write(
        &config,
        format!("[mirror]\nskopeo_files = [\"{}\"]\n", sync_file.display()),
    )?;
    let bin = Path::new(env!("CARGO_BIN_EXE_wharf"));
    let server = WharfServer::start_with_config(bin, Some(&config))?;
    let out = run(&mut wharf_cli(&server, &["sync"]))?;
    // One summary line per remote the file's registries became.
    let summary = |remote: &str| {
        out.stdout
            .lines()
            .find(|l| l.starts_with(&format!("synced {remote}:")))
            .unwrap_or_default()
            .to_owned()
    };
    ensure!(
        summary(&format!("127.0.0.1_{port}")).contains("1 tag copied"),
        "{out}"
    );
    ensure!(
        summary(&format!("localhost_{port}")).contains("3 tags copied"),
        "{out}"
    );
    let local = |name: &str| format!("docker://{}/{name}", server.host());
    ensure!(list_tags(&local(&format!("127.0.0.1_{port}/busybox")))? == ["musl"]);
    ensure!(
        list_tags(&local(&format!("localhost_{port}/coreos/etcd")))? == ["latest", "v3.1", "v3.3"]
    );
    ensure!(
        sha256_digest(&inspect_raw(&local(&format!(
            "localhost_{port}/coreos/etcd:v3.1"
        )))?)
            == upstream_digest(&upstream, "coreos/etcd:v3.1")?
    );
    // `wharf sync NAME` takes the remote the file's registry key became.
    let one = run(&mut wharf_cli(
        &server,
        &["sync", &format!("127.0.0.1_{port}")],
    ))?;
    ensure!(one.stdout.contains("1 tag unchanged"), "{one}");

    // A mistake names the file and the key.
    fs::write(
        &sync_file,
        "quay.io:\n    images-by-semver:\n        coreos/etcd: \">= x\"\n",
    )?;
    let bad = run_expect_failure(&mut wharf_cli(&server, &["sync"]))?;
    ensure!(
        bad.stderr.contains("sync.yml")
            && bad.stderr.contains("quay.io.images-by-semver.coreos/etcd"),
        "{bad}"
    );
    Ok(())
}

/// An OCI 1.1 referrer (an `oras attach` artifact whose `subject` is the image) travels with its
/// image: the upstream is a second Wharf, which serves the referrers API, and after the sync
/// `oras discover` against the mirror lists the same referrer, byte for byte.
#[test]
fn an_oci_referrer_travels_with_its_image() -> Result<()> {
    let tmp = scratch()?;
    let bin = Path::new(env!("CARGO_BIN_EXE_wharf"));
    let upstream = WharfServer::start(bin)?;
    let mut src = layout(tmp.path(), "src")?;
    let image = src.add_image("v1", &ImageSpec::new(1, 16 * 1024))?;
    run(skopeo()
        .args(["copy", "--dest-tls-verify=false"])
        .arg(src.reference("v1"))
        .arg(format!("docker://{}/team/app:v1", upstream.host())))?;
    let oras = |args: &[&str]| {
        let mut cmd = wharf_testkit::Tool::find("oras").cmd();
        cmd.current_dir(tmp.path())
            .env("HOME", tmp.path())
            .args(args);
        cmd
    };
    fs::write(tmp.path().join("sbom.json"), b"{\"sbom\": \"wharf e2e\"}\n")?;
    run(&mut oras(&[
        "attach",
        "--plain-http",
        "--artifact-type",
        "application/vnd.wharf.e2e.sbom",
        &format!("{}/team/app:v1", upstream.host()),
        "sbom.json:application/json",
    ]))?;
    let discover = |host: &str, repo: &str| -> Result<Vec<(String, String)>> {
        let out = run(&mut oras(&[
            "discover",
            "--plain-http",
            "--format",
            "json",
            &format!("{host}/{repo}@{}", image.manifest.digest),
        ]))?
        .json()?;
        Ok(out["manifests"]
            .as_array()
            .context("discover: no manifests")?
            .iter()
            .map(|m| {
                (
                    m["digest"].as_str().unwrap_or_default().to_owned(),
                    m["artifactType"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect())
    };
    let upstream_referrers = discover(&upstream.host(), "team/app")?;
    ensure!(
        upstream_referrers.len() == 1,
        "upstream: {upstream_referrers:?}"
    );

    let (user, password) = upstream.credentials();
    let password_file = tmp.path().join("upstream-password");
    write_secret(&password_file, &password)?;
    let config = tmp.path().join("wharf.toml");
    fs::write(
        &config,
        format!(
            "[[mirror.remotes]]\nname = \"up\"\nurl = \"{}\"\ninsecure_http = true\n\
             username = \"{user}\"\npassword_file = \"{}\"\nprefix = \"mirrors/up\"\n\
             [[mirror.sync]]\nremote = \"up\"\nrepositories = [\"team/app\"]\ntags = [\"v1\"]\n",
            upstream.url(),
            password_file.display()
        ),
    )?;
    let server = WharfServer::start_with_config(bin, Some(&config))?;
    run(&mut wharf_cli(&server, &["sync", "up"]))?;
    let mirrored = discover(&server.host(), "mirrors/up/team/app")?;
    ensure!(
        mirrored == upstream_referrers,
        "the mirror lists {mirrored:?}, the upstream {upstream_referrers:?}"
    );
    // The referrer's own bytes came along: it is pullable from the mirror.
    let out = tmp.path().join("out");
    run(&mut oras(&[
        "pull",
        "--plain-http",
        "-o",
        out.to_str().context("utf-8 path")?,
        &format!("{}/mirrors/up/team/app@{}", server.host(), mirrored[0].0),
    ]))?;
    ensure!(fs::read(out.join("sbom.json"))? == b"{\"sbom\": \"wharf e2e\"}\n");
    Ok(())
}
