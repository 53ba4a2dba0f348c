//! The [`Registry`] seam shared by Wharf and the reference registry, and the reference itself.
//!
//! [`DockerRegistry`] runs Debian's `docker-registry` (distribution 2.8) on a free loopback port.
//! It validates the harness (a test that fails against the reference is a harness bug, not a
//! Wharf bug), and later tests use it as an upstream to mirror from, optionally behind htpasswd
//! (Basic) authentication like a private upstream.

use std::fs::{self, OpenOptions};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

use crate::http;
use crate::process::terminate;
use crate::tool::Tool;

/// A registry the end-to-end tests can push to and pull from over plain HTTP on loopback.
pub trait Registry {
    /// The address it listens on.
    fn addr(&self) -> SocketAddr;

    /// `127.0.0.1:PORT`, the registry part of an image reference.
    fn host(&self) -> String {
        self.addr().to_string()
    }

    /// `http://127.0.0.1:PORT`.
    fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The `Authorization` header value a raw HTTP request needs, or `None` for a registry that
    /// asks for no credentials. Stock clients need nothing extra: they read the credentials from
    /// the auth file the testkit points them at.
    fn authorization(&self) -> Option<String> {
        None
    }

    /// Stops it gracefully and starts it again on the same storage; the port may change.
    fn restart(&mut self) -> Result<()>;

    /// Everything it logged so far.
    fn log(&self) -> String;

    /// A short name for messages: `wharf` or `docker-registry`.
    fn name(&self) -> &'static str;

    /// The last lines of [`Registry::log`], for failure messages.
    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(60);
        format!(
            "--- {} log (last {} lines) ---\n{}",
            self.name(),
            lines.len() - start,
            lines[start..].join("\n")
        )
    }
}

/// How long docker-registry may take to answer `/v2/` after it starts.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Debian's `docker-registry` with filesystem storage in a temporary directory.
pub struct DockerRegistry {
    dir: TempDir,
    child: Option<Child>,
    addr: SocketAddr,
    /// The one htpasswd account, when it asks for credentials.
    account: Option<(String, String)>,
}

impl DockerRegistry {
    /// Starts it on a free loopback port; panics like [`Tool::find`] when it is not installed.
    pub fn start() -> Result<DockerRegistry> {
        Self::start_inner(None)
    }

    /// Like [`DockerRegistry::start`], asking every request for the Basic credentials of
    /// `user` with `password` (distribution's htpasswd authentication, bcrypt hashes).
    pub fn start_with_htpasswd(user: &str, password: &str) -> Result<DockerRegistry> {
        Self::start_inner(Some((user.to_owned(), password.to_owned())))
    }

    fn start_inner(account: Option<(String, String)>) -> Result<DockerRegistry> {
        let dir = tempfile::Builder::new()
            .prefix("wharf-e2e-docker-registry-")
            .tempdir()?;
        if let Some((user, password)) = &account {
            let hash = bcrypt::hash(password, 5).context("cannot hash the htpasswd password")?;
            fs::write(dir.path().join("htpasswd"), format!("{user}:{hash}\n"))?;
        }
        let mut registry = DockerRegistry {
            dir,
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            account,
        };
        registry.spawn()?;
        Ok(registry)
    }

    fn spawn(&mut self) -> Result<()> {
        let tool = Tool::find("docker-registry");
        // The port is found by binding and releasing it; another process could take it in
        // between, which start-up then reports as a failure rather than a hang.
        let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let root = self.dir.path();
        let config = root.join("config.yml");
        let auth = match &self.account {
            Some(_) => format!(
                "auth:\n  htpasswd:\n    realm: wharf-e2e\n    path: {}\n",
                root.join("htpasswd").display()
            ),
            None => String::new(),
        };
        fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: info\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {addr}\n{auth}",
                root.join("data").display()
            ),
        )?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("registry.log"))?;
        // distribution reads every `REGISTRY_*` variable as a configuration override, so the
        // clients' `REGISTRY_AUTH_FILE` that `Tool::cmd` sets (when a Wharf runs in this process)
        // would turn into a broken `auth.file` setting.
        let child = tool
            .cmd()
            .env_remove("REGISTRY_AUTH_FILE")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("cannot start docker-registry")?;
        self.child = Some(child);
        self.addr = addr;
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                bail!("docker-registry exited with {status}\n{}", self.log_tail());
            }
            if let Ok(response) = http::request(self.addr, "GET", "/v2/", &[], b"") {
                // Behind htpasswd, the challenge is the sign of life.
                if response.status == 200 || (self.account.is_some() && response.status == 401) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "docker-registry did not answer /v2/ within {READY_TIMEOUT:?}\n{}",
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Where it stores blobs and manifests.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(10));
        }
    }
}

impl Registry for DockerRegistry {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn authorization(&self) -> Option<String> {
        self.account
            .as_ref()
            .map(|(user, password)| http::basic_auth(user, password))
    }

    fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    fn name(&self) -> &'static str {
        "docker-registry"
    }
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}
