//! The pull-through cache, as container engines use it unchanged: podman configured only with
//! the registries.conf `wharf client-config` wrote, and containerd (Debian's 1.6, started here as
//! root with its own root, state and socket and the `native` snapshotter) through the printed
//! `hosts.toml`, pull `<upstream>/x/y:tag` from Wharf; with the upstream stopped, both pulls still
//! succeed (serve-stale). Also: `?ns=` answers only from the mirror, never from a local repository
//! of that name; an unknown `ns` and an allow-list miss are refused without asking the upstream;
//! concurrent cold GETs of one blob make one upstream fetch, and a 256 MiB one is streamed to
//! its clients from the one staging file it is stored through (Wharf's peak RSS stays far below
//! the blob, and Wharf writes its bytes to storage once); tag validation times survive a restart (no
//! HEAD within the TTL), and a restarted Wharf whose upstream is down still serves the cache.
//!
//! The upstream is Debian's docker-registry behind htpasswd, filled with skopeo.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use wharf_testkit::fixture::{sha256_digest, ImageSpec};
use wharf_testkit::{http, run, run_with_timeout, DockerRegistry, Podman, Registry, WharfServer};

use crate::support::{inspect_raw, layout, scratch, skopeo};

const USER: &str = "proxy";
const PASSWORD: &str = "upstream-secret-9";

fn push_upstream(upstream: &DockerRegistry, src: &str, repo_tag: &str) -> Result<()> {
    run(skopeo()
        .args(["copy", "--all", "--dest-tls-verify=false", "--dest-creds"])
        .arg(format!("{USER}:{PASSWORD}"))
        .arg(src)
        .arg(format!("docker://{}/{repo_tag}", upstream.host())))?;
    Ok(())
}

fn upstream_digest(upstream: &DockerRegistry, repo_ref: &str) -> Result<String> {
    let out = run(skopeo()
        .args(["inspect", "--raw", "--tls-verify=false", "--creds"])
        .arg(format!("{USER}:{PASSWORD}"))
        .arg(format!("docker://{}/{repo_ref}", upstream.host())))?;
    Ok(sha256_digest(out.stdout.as_bytes()))
}

/// A Wharf whose one remote is `upstream` with pull-through for `x/*`, readable anonymously.
fn start_wharf(tmp: &Path, upstream: &DockerRegistry) -> Result<(WharfServer, String)> {
    start_wharf_ttl(tmp, upstream, 1)
}

/// As [`start_wharf`], with tags trusted for `ttl_secs` before a HEAD revalidates them.
fn start_wharf_ttl(
    tmp: &Path,
    upstream: &DockerRegistry,
    ttl_secs: u64,
) -> Result<(WharfServer, String)> {
    let password_file = tmp.join("upstream-password");
    fs::write(&password_file, format!("{PASSWORD}\n"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&password_file, fs::Permissions::from_mode(0o600))?;
    }
    let mirror = format!(
        r#"
[[auth.grants]]
subject = "anonymous"
repositories = "**"
actions = ["pull"]

[[mirror.remotes]]
name = "up"
url = "{}"
insecure_http = true
username = "{USER}"
password_file = "{}"

[mirror.remotes.pull_through]
repositories = ["x/*"]
tag_ttl_secs = {ttl_secs}
upstream_timeout_secs = 3
"#,
        upstream.url(),
        password_file.display()
    );
    let config = tmp.join("wharf.toml");
    fs::write(&config, &mirror)?;
    let server =
        WharfServer::start_with_config(Path::new(env!("CARGO_BIN_EXE_wharf")), Some(&config))?;
    Ok((server, mirror))
}

/// Upstream GETs of `path`, from docker-registry's log.
fn upstream_gets(upstream: &DockerRegistry, path: &str) -> Result<usize> {
    upstream_requests(upstream, "GET", path)
}

/// Upstream requests of `method` for `path`, from docker-registry's log.
fn upstream_requests(upstream: &DockerRegistry, method: &str, path: &str) -> Result<usize> {
    let log = upstream
        .data_dir()
        .parent()
        .context("registry dir")?
        .join("registry.log");
    let text = fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
    // One access line per request, in combined log format.
    Ok(text
        .lines()
        .filter(|l| l.contains(&format!("\"{method} {path} ")))
        .count())
}

fn get(server: &WharfServer, path: &str) -> Result<http::Response> {
    http::request(server.addr(), "GET", path, &[], b"")
}

/// Waits until the server answers `path` with 200: a pull-through store finishes behind the
/// answer that started it.
fn wait_stored(server: &WharfServer, path: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The tag list is the store's own view: it names a tag only once it is recorded.
        let res = get(server, path)?;
        if res.status == 200 {
            let body: serde_json::Value = serde_json::from_slice(&res.body)?;
            if body["tags"].as_array().is_some_and(|t| !t.is_empty()) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "{path} never listed a tag: {} {}",
                res.status,
                String::from_utf8_lossy(&res.body)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn ns_answers_only_from_the_mirror_allow_list_holds_and_cold_blobs_are_fetched_once() -> Result<()>
{
    let tmp = scratch()?;
    let upstream = DockerRegistry::start_with_htpasswd(USER, PASSWORD)?;
    let mut src = layout(tmp.path(), "src")?;
    src.add_image("v1", &ImageSpec::new(1, 16 * 1024))?;
    push_upstream(&upstream, &src.reference("v1"), "x/y:v1")?;
    push_upstream(&upstream, &src.reference("v1"), "other/z:v1")?;
    let big = src.add_image("big", &ImageSpec::new(1, 24 * 1024 * 1024))?;
    push_upstream(&upstream, &src.reference("big"), "x/big:v1")?;
    let ranged = src.add_image("ranged", &ImageSpec::new(1, 4 * 1024 * 1024))?;
    push_upstream(&upstream, &src.reference("ranged"), "x/ranged:v1")?;
    let (server, _) = start_wharf(tmp.path(), &upstream)?;
    let up_host = upstream.host();
    let prefix = up_host.replace(':', "_");

    // A local repository named like the upstream's: a plain pull gets it, `?ns=` never does.
    let mut local = layout(tmp.path(), "local")?;
    let pushed = local.add_image("v1", &ImageSpec::new(1, 8 * 1024))?;
    let (user, password) = server.credentials();
    run(skopeo()
        .args(["copy", "--dest-tls-verify=false", "--dest-creds"])
        .arg(format!("{user}:{password}"))
        .arg(local.reference("v1"))
        .arg(format!("docker://{}/x/y:v1", server.host())))?;
    let plain = get(&server, "/v2/x/y/manifests/v1")?;
    ensure!(plain.status == 200 && sha256_digest(&plain.body) == pushed.manifest.digest);
    let want = upstream_digest(&upstream, "x/y:v1")?;
    ensure!(want != pushed.manifest.digest);
    let ns = get(&server, &format!("/v2/x/y/manifests/v1?ns={up_host}"))?;
    ensure!(
        ns.status == 200 && sha256_digest(&ns.body) == want,
        "?ns= answered {} {}",
        ns.status,
        String::from_utf8_lossy(&ns.body)
    );
    ensure!(ns.header("docker-content-digest") == Some(want.as_str()));
    // The same content under its host-prefixed name, stored as a sync stores it.
    wait_stored(&server, &format!("/v2/{prefix}/x/y/tags/list"))?;
    ensure!(
        sha256_digest(&inspect_raw(&format!(
            "docker://{}/{prefix}/x/y:v1",
            server.host()
        ))?) == want
    );
    // The local repository is untouched.
    let plain = get(&server, "/v2/x/y/manifests/v1")?;
    ensure!(sha256_digest(&plain.body) == pushed.manifest.digest);

    // An ns naming no configured upstream is the protocol's NAME_UNKNOWN.
    let unknown = get(&server, "/v2/x/y/manifests/v1?ns=elsewhere.example")?;
    ensure!(unknown.status == 404, "{}", unknown.status);
    ensure!(String::from_utf8_lossy(&unknown.body).contains("NAME_UNKNOWN"));

    // Outside the allow-list nothing is fetched, in either form.
    for path in [
        format!("/v2/{prefix}/other/z/manifests/v1"),
        format!("/v2/other/z/manifests/v1?ns={up_host}"),
    ] {
        let refused = get(&server, &path)?;
        ensure!(
            refused.status == 404 && String::from_utf8_lossy(&refused.body).contains("allow-list"),
            "{path}: {} {}",
            refused.status,
            String::from_utf8_lossy(&refused.body)
        );
    }
    ensure!(upstream_gets(&upstream, "/v2/other/z/manifests/v1")? == 0);

    // Concurrent cold GETs of one blob: one upstream fetch, every client gets the whole blob.
    let layer = &big.layers[0];
    let path = format!("/v2/{prefix}/x/big/blobs/{}", layer.digest);
    let addr = server.addr();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || http::request(addr, "GET", &path, &[], b""))
        })
        .collect();
    for client in clients {
        let res = client.join().expect("client thread")?;
        ensure!(
            res.status == 200,
            "{} {}",
            res.status,
            String::from_utf8_lossy(&res.body)
        );
        ensure!(res.body.len() as u64 == layer.size && sha256_digest(&res.body) == layer.digest);
    }
    let fetched = upstream_gets(&upstream, &format!("/v2/x/big/blobs/{}", layer.digest))?;
    ensure!(fetched == 1, "{fetched} upstream GETs of one blob");
    // And afterwards it is served from the store, with no further fetch.
    let again = get(&server, &path)?;
    ensure!(again.status == 200 && sha256_digest(&again.body) == layer.digest);
    ensure!(upstream_gets(&upstream, &format!("/v2/x/big/blobs/{}", layer.digest))? == 1);

    // A cold GET with a Range gets that range (206) from the blob being fetched, and the
    // blob is stored whole behind it: the full blob afterwards comes from the store.
    let layer = &ranged.layers[0];
    let path = format!("/v2/{prefix}/x/ranged/blobs/{}", layer.digest);
    let part = http::request(addr, "GET", &path, &[("Range", "bytes=1000-1999")], b"")?;
    ensure!(
        part.status == 206 && part.body.len() == 1000,
        "cold ranged GET: {} with {} bytes",
        part.status,
        part.body.len()
    );
    let range_header = format!("bytes 1000-1999/{}", layer.size);
    ensure!(part.header("content-range") == Some(range_header.as_str()));
    let whole = get(&server, &path)?;
    ensure!(whole.status == 200 && sha256_digest(&whole.body) == layer.digest);
    ensure!(
        whole.body[1000..2000] == part.body[..],
        "the range is not the blob's bytes"
    );
    ensure!(upstream_gets(&upstream, &format!("/v2/x/ranged/blobs/{}", layer.digest))? == 1);
    Ok(())
}

/// `containerd` as root with everything of its own in `dir`.
struct Containerd {
    child: Child,
    socket: PathBuf,
}

impl Containerd {
    fn start(dir: &Path) -> Result<Containerd> {
        fs::create_dir_all(dir)?;
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{sock}\"\n\
                 [ttrpc]\n  address = \"{sock}.ttrpc\"\n\
                 [debug]\n  address = \"\"\n\
                 [metrics]\n  address = \"\"\n\
                 [plugins.\"io.containerd.service.v1.diff-service\"]\n  default = [\"walking\"]\n",
                root = dir.join("root").display(),
                state = dir.join("state").display(),
                sock = socket.display(),
            ),
        )?;
        let log = fs::File::create(dir.join("containerd.log"))?;
        let child = Command::new(wharf_testkit::Tool::find("containerd").path())
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("cannot start containerd")?;
        let mut containerd = Containerd { child, socket };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = containerd.child.try_wait()? {
                bail!(
                    "containerd exited with {status}: {}",
                    fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
                );
            }
            if containerd.socket.exists()
                && containerd
                    .ctr()
                    .arg("version")
                    .output()
                    .is_ok_and(|o| o.status.success())
            {
                return Ok(containerd);
            }
            if Instant::now() > deadline {
                bail!("containerd did not come up within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn ctr(&self) -> Command {
        let mut cmd = Command::new(wharf_testkit::Tool::find("ctr").path());
        cmd.arg("--address").arg(&self.socket);
        cmd
    }

    /// `ctr images pull --hosts-dir DIR REF` with the native snapshotter; the image's digest.
    fn pull(&self, hosts_dir: &Path, reference: &str) -> Result<String> {
        run_with_timeout(
            self.ctr()
                .args(["images", "pull", "--snapshotter", "native", "--hosts-dir"])
                .arg(hosts_dir)
                .arg(reference),
            Duration::from_secs(120),
        )?;
        let listed = run(self.ctr().args(["images", "ls"]))?;
        let line = listed
            .stdout
            .lines()
            .find(|l| l.starts_with(reference))
            .with_context(|| format!("{reference} not listed:\n{listed}"))?;
        line.split_whitespace()
            .find(|w| w.starts_with("sha256:"))
            .map(str::to_owned)
            .with_context(|| format!("no digest in {line:?}"))
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn podman_and_containerd_pull_through_the_printed_configuration_and_after_the_upstream_stops(
) -> Result<()> {
    let tmp = scratch()?;
    let upstream = DockerRegistry::start_with_htpasswd(USER, PASSWORD)?;
    let mut src = layout(tmp.path(), "src")?;
    src.add_image("v1", &ImageSpec::new(2, 256 * 1024))?;
    push_upstream(&upstream, &src.reference("v1"), "x/y:v1")?;
    src.add_two_arch_index("multi", 1, 64 * 1024)?;
    push_upstream(&upstream, &src.reference("multi"), "x/y:multi")?;
    let want = upstream_digest(&upstream, "x/y:v1")?;
    let want_multi = upstream_digest(&upstream, "x/y:multi")?;
    let (server, mirror) = start_wharf(tmp.path(), &upstream)?;
    let up_host = upstream.host();

    // `wharf client-config` reads the same [mirror] as serve, with the address clients use.
    let client_toml = tmp.path().join("client.toml");
    fs::write(
        &client_toml,
        format!("[server]\nexternal_url = \"{}\"\n{mirror}", server.url()),
    )?;
    let out_dir = tmp.path().join("client");
    let printed = run(Command::new(server.bin())
        .arg("client-config")
        .arg("--config")
        .arg(&client_toml))?;
    ensure!(printed.stdout.contains("### registries.conf"), "{printed}");
    run(Command::new(server.bin())
        .args(["client-config", "--out"])
        .arg(&out_dir)
        .arg("--config")
        .arg(&client_toml))?;
    let registries_conf = out_dir.join("registries.conf");
    let hosts_dir = out_dir.join("certs.d");
    ensure!(hosts_dir.join(&up_host).join("hosts.toml").is_file());

    let podman_pull = |reference: &str| -> Result<String> {
        let podman = Podman::new()?;
        let mut cmd = podman.cmd();
        cmd.env("CONTAINERS_REGISTRIES_CONF", &registries_conf);
        run_with_timeout(cmd.args(["pull", reference]), Duration::from_secs(120))?;
        let digest =
            run(podman
                .cmd()
                .args(["image", "inspect", "--format", "{{.Digest}}", reference]))?;
        Ok(digest.stdout.trim().to_owned())
    };
    let reference = format!("{up_host}/x/y:v1");
    ensure!(
        podman_pull(&reference)? == want,
        "podman pulled another digest"
    );
    // It came through Wharf: the image is in Wharf's store now.
    let prefix = up_host.replace(':', "_");
    wait_stored(&server, &format!("/v2/{prefix}/x/y/tags/list"))?;

    let containerd = Containerd::start(&tmp.path().join("containerd-1"))?;
    ensure!(containerd.pull(&hosts_dir, &reference)? == want);
    let multi = format!("{up_host}/x/y:multi");
    ensure!(containerd.pull(&hosts_dir, &multi)? == want_multi);
    drop(containerd);
    // Both engines' pulls were answered by Wharf; containerd asked with ?ns=.
    let manifests = get(&server, &format!("/v2/x/y/manifests/multi?ns={up_host}"))?;
    ensure!(manifests.status == 200 && sha256_digest(&manifests.body) == want_multi);

    // The upstream goes away; past the tag TTL, Wharf serves what it has.
    drop(upstream);
    std::thread::sleep(Duration::from_millis(1500));
    ensure!(
        podman_pull(&reference)? == want,
        "podman after the upstream stopped"
    );
    let containerd = Containerd::start(&tmp.path().join("containerd-2"))?;
    ensure!(containerd.pull(&hosts_dir, &reference)? == want);
    ensure!(containerd.pull(&hosts_dir, &multi)? == want_multi);

    // A name never cached, with the upstream down: the protocol's error, not a 500.
    let never = get(&server, &format!("/v2/{prefix}/x/never/manifests/v1"))?;
    ensure!(
        never.status == 503,
        "{} {}",
        never.status,
        String::from_utf8_lossy(&never.body)
    );
    ensure!(String::from_utf8_lossy(&never.body).contains("UNAVAILABLE"));
    Ok(())
}

#[test]
fn a_large_cold_blob_is_fetched_once_written_once_and_memory_stays_flat() -> Result<()> {
    let tmp = scratch()?;
    let upstream = DockerRegistry::start_with_htpasswd(USER, PASSWORD)?;
    let mut src = layout(tmp.path(), "src")?;
    let huge = src.add_image("huge", &ImageSpec::new(1, 256 * 1024 * 1024))?;
    push_upstream(&upstream, &src.reference("huge"), "x/huge:v1")?;
    let (server, _) = start_wharf(tmp.path(), &upstream)?;
    let prefix = upstream.host().replace(':', "_");
    let layer = &huge.layers[0];
    ensure!(layer.size > 256 * 1024 * 1024);
    let url = format!("{}/v2/{prefix}/x/huge/blobs/{}", server.url(), layer.digest);
    let written_before = server.storage_write_bytes()?;

    let clients: Vec<_> = (0..4)
        .map(|i| {
            let out = tmp.path().join(format!("client-{i}"));
            let url = url.clone();
            std::thread::spawn(move || -> Result<(PathBuf, String)> {
                let got = run_with_timeout(
                    Command::new("curl")
                        .args(["-sSf", "-o"])
                        .arg(&out)
                        .args(["-w", "%{time_starttransfer} %{time_total}"])
                        .arg(&url),
                    Duration::from_secs(300),
                )?;
                Ok((out, got.stdout))
            })
        })
        .collect();
    for client in clients {
        let (out, times) = client.join().expect("client thread")?;
        let sum = run(Command::new("sha256sum").arg(&out))?;
        let digest = format!(
            "sha256:{}",
            sum.stdout.split_whitespace().next().unwrap_or("")
        );
        ensure!(
            digest == layer.digest && fs::metadata(&out)?.len() == layer.size,
            "{}: {digest}",
            out.display()
        );
        // The first byte came long before the last: streamed, not stored first.
        let (start, total) = times
            .split_once(' ')
            .and_then(|(a, b)| Some((a.parse::<f64>().ok()?, b.parse::<f64>().ok()?)))
            .context("curl's times")?;
        ensure!(start < total / 2.0, "first byte at {start} s of {total} s");
        fs::remove_file(&out)?;
    }
    let fetched = upstream_gets(&upstream, &format!("/v2/x/huge/blobs/{}", layer.digest))?;
    ensure!(fetched == 1, "{fetched} upstream GETs of one blob");
    // The clients are served from the staging file the blob is stored
    // through: its bytes reach storage once, not once for the clients and
    // again for the store (the database's few pages are the rest).
    let written = server.storage_write_bytes()? - written_before;
    eprintln!(
        "wharf wrote {} MiB to storage for a {} MiB blob",
        written >> 20,
        layer.size >> 20
    );
    ensure!(
        written >= layer.size && written < layer.size + layer.size / 2,
        "wharf wrote {written} bytes to storage for a blob of {}",
        layer.size
    );
    let peak = server.peak_rss_bytes()?;
    eprintln!(
        "wharf peak RSS {} MiB for a {} MiB blob and 4 clients",
        peak >> 20,
        layer.size >> 20
    );
    ensure!(
        peak < 96 * 1024 * 1024,
        "wharf's peak RSS was {} MiB for a {} MiB blob",
        peak >> 20,
        layer.size >> 20
    );
    // Stored whole: served from the store now, with no further fetch.
    let again = run(Command::new("curl")
        .args(["-sSf", &url])
        .stdout(Stdio::null()))?;
    drop(again);
    ensure!(upstream_gets(&upstream, &format!("/v2/x/huge/blobs/{}", layer.digest))? == 1);
    // Nothing of the fetch is left in staging.
    let staging = fs::read_dir(server.data_dir().join("blobs").join("uploads"))?.count();
    ensure!(staging == 0, "{staging} staging files left behind");
    Ok(())
}

#[test]
fn tag_validations_survive_a_restart_and_a_dead_upstream_still_serves_the_cache() -> Result<()> {
    let tmp = scratch()?;
    let upstream = DockerRegistry::start_with_htpasswd(USER, PASSWORD)?;
    let mut src = layout(tmp.path(), "src")?;
    let image = src.add_image("v1", &ImageSpec::new(1, 64 * 1024))?;
    push_upstream(&upstream, &src.reference("v1"), "x/y:v1")?;
    let want = upstream_digest(&upstream, "x/y:v1")?;
    let (mut server, mirror) = start_wharf_ttl(tmp.path(), &upstream, 3600)?;
    let prefix = upstream.host().replace(':', "_");
    let manifest = format!("/v2/{prefix}/x/y/manifests/v1");
    let pulled = get(&server, &manifest)?;
    ensure!(pulled.status == 200 && sha256_digest(&pulled.body) == want);
    wait_stored(&server, &format!("/v2/{prefix}/x/y/tags/list"))?;
    let blob = format!("/v2/{prefix}/x/y/blobs/{}", image.layers[0].digest);
    ensure!(get(&server, &blob)?.status == 200);
    std::thread::sleep(Duration::from_millis(500));
    let heads = || upstream_requests(&upstream, "HEAD", "/v2/x/y/manifests/v1");
    let before = heads()?;
    ensure!(before >= 1, "the first pull sent no HEAD upstream");

    // Restarted within the TTL: the tag is answered from the store, no HEAD goes upstream.
    server.restart()?;
    for _ in 0..3 {
        let again = get(&server, &manifest)?;
        ensure!(again.status == 200 && sha256_digest(&again.body) == want);
    }
    std::thread::sleep(Duration::from_millis(500));
    ensure!(
        heads()? == before,
        "{} HEADs upstream after a restart within the TTL",
        heads()? - before
    );

    // The upstream goes away and the TTL is over: a restarted Wharf still serves the cache.
    drop(upstream);
    fs::write(
        tmp.path().join("wharf.toml"),
        mirror.replace("tag_ttl_secs = 3600", "tag_ttl_secs = 1"),
    )?;
    std::thread::sleep(Duration::from_millis(1500));
    server.restart()?;
    let stale = get(&server, &manifest)?;
    ensure!(
        stale.status == 200 && sha256_digest(&stale.body) == want,
        "with the upstream down: {} {}",
        stale.status,
        String::from_utf8_lossy(&stale.body)
    );
    ensure!(get(&server, &blob)?.status == 200);
    let copied = tmp.path().join("copied");
    run(skopeo()
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{}/{prefix}/x/y:v1", server.host()))
        .arg(format!("dir:{}", copied.display())))?;
    ensure!(sha256_digest(&fs::read(copied.join("manifest.json"))?) == want);
    Ok(())
}
