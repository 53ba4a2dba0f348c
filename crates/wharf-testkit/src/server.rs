//! Running the real `wharf` binary on an ephemeral loopback port with a temporary data directory.
//!
//! The contract used here is the one `wharf serve` documents: with `--listen 127.0.0.1:0` it
//! prints exactly one line, `wharf listening on http://127.0.0.1:PORT`, on stdout once it accepts
//! connections, logs to stderr, and exits gracefully on SIGTERM.
//! The server's stderr goes to a log file that outlives restarts, so a failing test can show what
//! the server said across the whole test.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

use crate::process::{capture, run_with_timeout, terminate, CmdOutput};
use crate::registry::Registry;

/// How long `wharf serve` may take to print its ready line; a debug build opens its database and
/// runs migrations first.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a SIGTERM'd server may take to drain before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How long `wharf check` or `wharf gc` may take over a test-sized data directory.
const OFFLINE_TIMEOUT: Duration = Duration::from_secs(300);

/// The line prefix `wharf serve` prints once it is ready.
const READY_PREFIX: &str = "wharf listening on http://";

/// A running `wharf serve`, stopped with SIGTERM when dropped.
pub struct WharfServer {
    bin: PathBuf,
    data_dir: TempDir,
    log_dir: TempDir,
    config: Option<PathBuf>,
    child: Option<Child>,
    addr: SocketAddr,
}

impl WharfServer {
    /// Starts `bin serve` on `127.0.0.1:0` with a fresh temporary data directory.
    pub fn start(bin: impl AsRef<Path>) -> Result<WharfServer> {
        Self::start_with_config(bin, None)
    }

    /// Like [`WharfServer::start`], passing `--config FILE` when `config` is given.
    pub fn start_with_config(bin: impl AsRef<Path>, config: Option<&Path>) -> Result<WharfServer> {
        let data_dir = tempfile::Builder::new()
            .prefix("wharf-e2e-data-")
            .tempdir()?;
        let log_dir = tempfile::Builder::new()
            .prefix("wharf-e2e-log-")
            .tempdir()?;
        let mut server = WharfServer {
            bin: bin.as_ref().to_owned(),
            data_dir,
            log_dir,
            config: config.map(Path::to_owned),
            child: None,
            // Replaced by spawn() before anyone can read it.
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        server.spawn()?;
        Ok(server)
    }

    /// The address it listens on; it changes on [`WharfServer::restart`].
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server's peak resident memory so far (`VmHWM`), for asserting that memory stays flat.
    pub fn peak_rss_bytes(&self) -> Result<u64> {
        let child = self.child.as_ref().context("wharf server is not running")?;
        let status = fs::read_to_string(format!("/proc/{}/status", child.id()))?;
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .context("no VmHWM in /proc/PID/status")?;
        Ok(kib * 1024)
    }

    /// The data directory, which survives [`WharfServer::restart`] and is deleted on drop.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// The binary this server runs.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Whether the server process is running (it has not been stopped and has not exited).
    pub fn is_running(&mut self) -> bool {
        matches!(
            self.child.as_mut().map(|child| child.try_wait()),
            Some(Ok(None))
        )
    }

    /// How the server exited if it exited on its own, that is, without [`WharfServer::stop`].
    pub fn exited_unexpectedly(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
    }

    /// Stops the server with SIGTERM, killing it after 10 s, and returns how it exited.
    ///
    /// An error means it had to be killed, or was not running.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("wharf server is not running");
        };
        match terminate(&mut child, STOP_GRACE) {
            Some(status) => Ok(status),
            None => bail!(
                "wharf server did not exit within {STOP_GRACE:?} of SIGTERM and was killed\n{}",
                self.log_tail()
            ),
        }
    }

    /// Kills the server with SIGKILL, as a crash or power cut would stop it: no drain, no
    /// clean-up. [`WharfServer::restart`] then starts it again on the same data directory.
    pub fn kill(&mut self) -> Result<()> {
        let mut child = self.child.take().context("wharf server is not running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Starts the server again on the same data directory, stopping it first if it runs; a
    /// server that does not exit 0 on SIGTERM is an error.
    ///
    /// The new process listens on a new ephemeral port: re-read [`Registry::host`] afterwards.
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            let status = self.stop()?;
            if !status.success() {
                bail!(
                    "wharf server exited with {status} after SIGTERM\n{}",
                    self.log_tail()
                );
            }
        }
        self.spawn()
    }

    /// Runs `wharf check --data-dir DIR` and returns its output whatever the exit status.
    pub fn check(&self) -> Result<CmdOutput> {
        self.offline_command("check")
    }

    /// Runs `wharf gc --data-dir DIR` and fails unless it exits 0.
    pub fn gc(&self) -> Result<CmdOutput> {
        run_with_timeout(
            self.data_dir_command("gc")
                .arg("--data-dir")
                .arg(self.data_dir()),
            OFFLINE_TIMEOUT,
        )
    }

    fn offline_command(&self, sub: &str) -> Result<CmdOutput> {
        let mut cmd = self.data_dir_command(sub);
        cmd.arg("--data-dir").arg(self.data_dir());
        // Callers assert on the status, so a non-zero exit is not an error here.
        capture(&mut cmd, OFFLINE_TIMEOUT)
    }

    fn data_dir_command(&self, sub: &str) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg(sub);
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        cmd
    }

    fn log_path(&self) -> PathBuf {
        self.log_dir.path().join("server.log")
    }

    fn spawn(&mut self) -> Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve");
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        cmd.args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(self.data_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log.try_clone()?));
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        let stdout = child.stdout.take().context("stdout is piped")?;
        let (ready_tx, ready_rx) = mpsc::channel();
        thread::spawn(move || forward_stdout(stdout, log, ready_tx));
        let ready = ready_rx.recv_timeout(READY_TIMEOUT);
        self.child = Some(child);
        let line = match ready {
            Ok(line) => line,
            Err(_) => {
                let status = self.stop().ok();
                bail!(
                    "wharf serve did not print `{READY_PREFIX}PORT` within {READY_TIMEOUT:?} \
                     (exit status: {status:?})\n{}",
                    self.log_tail()
                );
            }
        };
        let addr = line
            .strip_prefix(READY_PREFIX)
            .and_then(|rest| rest.trim().trim_end_matches('/').parse::<SocketAddr>().ok())
            .with_context(|| format!("cannot parse the ready line {line:?}"))?;
        self.addr = addr;
        Ok(())
    }
}

/// Reads the server's stdout: the ready line goes to the channel, everything goes to the log.
///
/// The pipe must be drained for the server's whole life, or a chatty server would block on a full
/// pipe.
fn forward_stdout(stdout: impl std::io::Read, mut log: File, ready: mpsc::Sender<String>) {
    let mut ready = Some(ready);
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let _ = writeln!(log, "[stdout] {line}");
        if line.starts_with(READY_PREFIX) {
            if let Some(ready) = ready.take() {
                let _ = ready.send(line);
            }
        }
    }
}

impl Registry for WharfServer {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn restart(&mut self) -> Result<()> {
        WharfServer::restart(self)
    }

    fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn name(&self) -> &'static str {
        "wharf"
    }
}

impl Drop for WharfServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, STOP_GRACE);
        }
    }
}
