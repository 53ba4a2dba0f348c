//! Shared set-up for the end-to-end tests: which registry a test targets, and client shorthands.
//!
//! Tests receive a [`Target`] from [`e2e`], which also appends the registry's log to any failure,
//! so a red test shows what the client said and what the server said.
//!
//! Wharf refuses anonymous requests. Stock clients built here (through `Tool::cmd`) already carry
//! the administrator's credentials; raw HTTP goes through [`Target::request`] and friends, which
//! add the `Authorization` header (none for docker-registry, which asks for nothing).

use std::path::Path;
use std::process::Command;

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::Value;
use tempfile::TempDir;
use wharf_testkit::fixture::{scratch_dir, sha256_digest, OciLayout};
use wharf_testkit::http::{self, Response};
use wharf_testkit::{run, CmdOutput, DockerRegistry, Registry, Tool, WharfServer};

/// The registry under test.
pub enum Target {
    /// The real `wharf serve`: what the committed tests run against.
    Wharf(WharfServer),
    /// Debian's docker-registry, selected by `WHARF_E2E_TARGET=docker-registry` to validate the
    /// harness itself.
    Docker(DockerRegistry),
}

impl Target {
    fn start() -> Result<Target> {
        match std::env::var("WHARF_E2E_TARGET").as_deref() {
            Ok("docker-registry") => Ok(Target::Docker(DockerRegistry::start()?)),
            Ok("wharf") | Err(_) => Ok(Target::Wharf(WharfServer::start(env!(
                "CARGO_BIN_EXE_wharf"
            ))?)),
            Ok(other) => bail!("WHARF_E2E_TARGET={other}: expected `wharf` or `docker-registry`"),
        }
    }

    /// The registry as the clients see it.
    pub fn registry(&self) -> &dyn Registry {
        match self {
            Target::Wharf(server) => server,
            Target::Docker(registry) => registry,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.registry().host()
    }

    /// `127.0.0.1:PORT/REPO`, the start of an image reference.
    pub fn repo(&self, repo: &str) -> String {
        format!("{}/{repo}", self.host())
    }

    /// The `Authorization` header a raw request to the registry needs, if any.
    pub fn auth_headers(&self) -> Vec<(&'static str, String)> {
        self.registry()
            .authorization()
            .map(|value| ("Authorization", value))
            .into_iter()
            .collect()
    }

    /// Sends a raw request signed in as the administrator, with `headers` added.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response> {
        let auth = self.auth_headers();
        let headers = with_auth(&auth, headers);
        http::request(self.registry().addr(), method, path, &headers, body)
    }

    /// Restarts on the same storage; references must be rebuilt since the port changes.
    pub fn restart(&mut self) -> Result<()> {
        match self {
            Target::Wharf(server) => server.restart(),
            Target::Docker(registry) => registry.restart(),
        }
    }

    /// The Wharf server, or `None` when validating against docker-registry.
    pub fn wharf(&mut self) -> Option<&mut WharfServer> {
        match self {
            Target::Wharf(server) => Some(server),
            Target::Docker(_) => None,
        }
    }

    /// Asserts that Wharf neither exited on its own nor logged a panic during the test: a
    /// panicking handler can hide behind a client that retries.
    fn assert_healthy(&mut self) -> Result<()> {
        let Some(server) = self.wharf() else {
            return Ok(());
        };
        if let Some(status) = server.exited_unexpectedly() {
            bail!("wharf exited on its own during the test with {status}");
        }
        let log = server.log();
        if let Some(line) = log.lines().find(|line| line.contains("panicked at")) {
            bail!("wharf panicked during the test: {line}");
        }
        Ok(())
    }

    /// Asserts that `wharf check --data-dir` finds every stored blob intact, while the server
    /// runs (check is designed to be safe next to a live server).
    pub fn assert_store_clean(&mut self) -> Result<()> {
        let Some(server) = self.wharf() else {
            return Ok(());
        };
        let output = server.check()?;
        ensure!(
            output.status.success(),
            "wharf check reported a damaged store: {output}"
        );
        Ok(())
    }
}

/// Runs one end-to-end test against a freshly started registry, adding its log to a failure.
pub fn e2e(test: impl FnOnce(&mut Target) -> Result<()>) -> Result<()> {
    let mut target = Target::start()?;
    let result = test(&mut target).and_then(|()| target.assert_healthy());
    result.map_err(|err| {
        // The client's complaint first, then what the server logged meanwhile.
        anyhow!("{err:?}\n\n{}", target.registry().log_tail())
    })
}

/// A scratch directory for client output, deleted when the test ends.
pub fn scratch() -> Result<TempDir> {
    scratch_dir()
}

/// A new OCI layout inside `dir`.
pub fn layout(dir: &Path, name: &str) -> Result<OciLayout> {
    OciLayout::create(&dir.join(name))
}

/// skopeo, with the host's containers policy (installed with skopeo by containers-common).
pub fn skopeo() -> Command {
    Tool::find("skopeo").cmd()
}

/// `skopeo copy` over plain HTTP, with extra flags before the references.
pub fn skopeo_copy(src: &str, dst: &str, flags: &[&str]) -> Result<CmdOutput> {
    run(skopeo()
        .args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false"])
        .args(flags)
        .args([src, dst]))
}

/// The raw manifest bytes that `skopeo inspect --raw` gets for `reference` (`docker://…`).
pub fn inspect_raw(reference: &str) -> Result<Vec<u8>> {
    let output = run(skopeo().args(["inspect", "--raw", "--tls-verify=false", reference]))?;
    Ok(output.stdout.into_bytes())
}

/// The digest of the manifest the registry serves for `reference`.
pub fn served_digest(reference: &str) -> Result<String> {
    Ok(sha256_digest(&inspect_raw(reference)?))
}

/// Parses bytes as JSON.
pub fn json(bytes: &[u8]) -> Result<Value> {
    serde_json::from_slice(bytes).context("not JSON")
}

/// The tags `skopeo list-tags` reports for `docker://HOST/REPO`, sorted.
pub fn list_tags(repo_ref: &str) -> Result<Vec<String>> {
    let output = run(skopeo().args(["list-tags", "--tls-verify=false", repo_ref]))?;
    let value = output.json()?;
    let mut tags: Vec<String> = value["Tags"]
        .as_array()
        .context("list-tags output has no Tags array")?
        .iter()
        .filter_map(|tag| tag.as_str().map(str::to_owned))
        .collect();
    tags.sort();
    Ok(tags)
}

/// The path (and query) of an upload `Location`, which may be absolute or relative.
pub fn location_path(response: &Response) -> Result<String> {
    let location = response
        .header("location")
        .context("upload response without Location")?;
    let path = match location
        .strip_prefix("http://")
        .or_else(|| location.strip_prefix("https://"))
    {
        Some(rest) => rest
            .find('/')
            .map(|idx| rest[idx..].to_owned())
            .unwrap_or_default(),
        None => location.to_owned(),
    };
    ensure!(path.starts_with('/'), "odd upload Location {location:?}");
    Ok(path)
}

/// `path` with `query` appended after `?` or `&`.
pub fn with_query(path: &str, query: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}{query}")
}

/// `auth` followed by `headers`, in the borrowed form the raw HTTP client takes.
pub fn with_auth<'a>(
    auth: &'a [(&'static str, String)],
    headers: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    auth.iter()
        .map(|(key, value)| (*key, value.as_str()))
        .chain(headers.iter().copied())
        .collect()
}

/// Opens a blob upload session in `repo` and returns its path.
pub fn start_upload(target: &Target, repo: &str) -> Result<String> {
    let response = target.request("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"")?;
    ensure!(
        response.status == 202,
        "POST upload: {} {}",
        response.status,
        response.text()
    );
    location_path(&response)
}

/// A new, empty PostgreSQL database on the test server (`WHARF_TEST_POSTGRES_URL`, which
/// `scripts/test.sh` sets), named after `purpose`; returns its URL.
pub fn postgres_database(purpose: &str) -> Result<String> {
    let base = std::env::var("WHARF_TEST_POSTGRES_URL").context(
        "WHARF_TEST_POSTGRES_URL is not set: run the suite with scripts/test.sh, which starts PostgreSQL",
    )?;
    let name = format!(
        "wharf_e2e_{purpose}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    );
    wharf_testkit::run(
        Command::new("psql")
            .arg(&base)
            .args(["-q", "-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!("CREATE DATABASE {name}")),
    )?;
    let (prefix, _) = base
        .rsplit_once('/')
        .context("WHARF_TEST_POSTGRES_URL has no database part")?;
    Ok(format!("{prefix}/{name}"))
}

/// A second `wharf serve` on the first one's configuration and data directory.
pub struct Replica {
    child: std::process::Child,
    /// Where it listens.
    pub addr: std::net::SocketAddr,
}

impl Replica {
    /// Starts a second server beside `server`, sharing its data directory and database.
    pub fn beside(server: &WharfServer) -> Result<Replica> {
        let mut child = Command::new(server.bin())
            .arg("serve")
            .arg("--config")
            .arg(server.config_path())
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(server.data_dir())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("cannot start the second wharf serve")?;
        let stdout = child.stdout.take().context("stdout is piped")?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        let addr = line
            .trim()
            .strip_prefix("wharf listening on http://")
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("unexpected ready line {line:?}"))?;
        Ok(Replica { child, addr })
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `wharf SUBCOMMAND ARGS…` on `server`'s configuration and data directory, beside the running
/// server (for the CLI tests: `repo`, `jobs`, …).
pub fn wharf_cli(server: &WharfServer, args: &[&str]) -> Command {
    let mut cmd = Command::new(server.bin());
    cmd.args(args)
        .arg("--config")
        .arg(server.config_path())
        .arg("--data-dir")
        .arg(server.data_dir());
    cmd
}

/// The key password cosign reads from the environment instead of prompting.
pub const COSIGN_PASSWORD: &str = "wharf-e2e";

/// cosign run inside `dir` with a private HOME and TUF cache, so nothing of the host's leaks in
/// and no transparency log is in reach; credentials come from the testkit's `DOCKER_CONFIG` or
/// `--registry-username`/`--registry-password`.
pub fn cosign(dir: &Path) -> Command {
    let mut cmd = wharf_testkit::Tool::find("cosign").cmd();
    cmd.current_dir(dir)
        .env("HOME", dir)
        .env("TUF_ROOT", dir.join("tuf"))
        .env("COSIGN_PASSWORD", COSIGN_PASSWORD)
        .env("COSIGN_YES", "true");
    cmd
}
