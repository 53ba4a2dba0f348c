//! `wharf serve` started by hand, for tests about what the operator sees: the first start, the
//! data directory's modes, a store on a small file system, the log format.
//!
//! `WharfServer` (the testkit) always picks the administrator's password, its own data directory
//! and configuration, which is right for protocol tests but hides exactly what these tests look
//! at. Here the test chooses every argument and reads the whole of stderr.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

const READY_PREFIX: &str = "wharf listening on ";
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The binary under test.
pub fn wharf_bin() -> &'static str {
    env!("CARGO_BIN_EXE_wharf")
}

/// A `wharf` command with no configuration from the environment: `$WHARF_CONFIG` and `RUST_LOG`
/// are removed, so only the arguments and the working directory decide.
pub fn wharf_command(cwd: &Path) -> Command {
    let mut cmd = Command::new(wharf_bin());
    cmd.current_dir(cwd)
        .env_remove("WHARF_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

/// How a start ended.
pub enum Start {
    /// It printed its ready line.
    Ready(RawServer),
    /// It exited first; its status and stderr.
    Exited(ExitStatus, String),
}

/// A running `wharf serve`; killed when dropped.
pub struct RawServer {
    child: Option<Child>,
    addr: SocketAddr,
    stderr: PathBuf,
    _state: TempDir,
}

impl RawServer {
    /// Runs `cmd` (a `wharf serve …` command) until it prints its ready line or exits.
    pub fn start(mut cmd: Command) -> Result<Start> {
        let state = tempfile::Builder::new()
            .prefix("wharf-e2e-raw-")
            .tempdir()?;
        let stderr = state.path().join("stderr");
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr)?)
            .spawn()
            .context("cannot start wharf serve")?;
        let stdout = child.stdout.take().context("stdout is piped")?;
        let (ready_tx, ready_rx) = mpsc::channel();
        thread::spawn(move || {
            let mut ready = Some(ready_tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with(READY_PREFIX) {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(line);
                    }
                }
            }
        });
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(line) = ready_rx.recv_timeout(Duration::from_millis(50)) {
                let addr = line
                    .strip_prefix(READY_PREFIX)
                    .and_then(|rest| {
                        let rest = rest.trim();
                        rest.strip_prefix("http://")
                            .or_else(|| rest.strip_prefix("https://"))
                    })
                    .and_then(|addr| addr.parse::<SocketAddr>().ok())
                    .with_context(|| format!("cannot parse the ready line {line:?}"))?;
                return Ok(Start::Ready(RawServer {
                    child: Some(child),
                    addr,
                    stderr,
                    _state: state,
                }));
            }
            if let Some(status) = child.try_wait()? {
                // Give the stdout thread no say: the process is gone.
                let text = fs::read_to_string(&stderr).unwrap_or_default();
                return Ok(Start::Exited(status, text));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "wharf serve neither got ready nor exited within {READY_TIMEOUT:?}\n{}",
                    fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
        }
    }

    /// Like [`RawServer::start`], failing unless the server got ready.
    pub fn start_ready(cmd: Command) -> Result<RawServer> {
        match RawServer::start(cmd)? {
            Start::Ready(server) => Ok(server),
            Start::Exited(status, stderr) => {
                bail!("wharf serve exited with {status} before it was ready:\n{stderr}")
            }
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Everything it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Stops it with SIGTERM (SIGKILL after 10 s) and returns how it exited.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let mut child = self.child.take().context("already stopped")?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            thread::sleep(Duration::from_millis(50));
        }
        child.kill()?;
        let status = child.wait()?;
        bail!("wharf serve did not stop within 10 s of SIGTERM ({status})")
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `wharf serve --listen LISTEN --data-dir DATA` command run in `cwd`, with `config` when given.
pub fn serve_command(cwd: &Path, config: Option<&Path>, listen: &str, data: &Path) -> Command {
    let mut cmd = wharf_command(cwd);
    cmd.arg("serve");
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    cmd.args(["--listen", listen]).arg("--data-dir").arg(data);
    cmd
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: impl AsRef<OsStr>, text: &str) -> Result<PathBuf> {
    let path = dir.join(name.as_ref());
    fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// A configuration naming a password file for `admin` (whose password is returned).
pub fn config_with_password(dir: &Path, extra: &str) -> Result<(PathBuf, String)> {
    let password = "operator-test-password";
    let file = write_file(dir, "admin-password", &format!("{password}\n"))?;
    let config = write_file(
        dir,
        "wharf-test.toml",
        &format!(
            "{extra}\n[auth]\nadmin_password_file = {:?}\n",
            file.display().to_string()
        ),
    )?;
    Ok((config, password.to_owned()))
}
