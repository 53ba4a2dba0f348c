//! Running the real `wharf` binary on an ephemeral loopback port with a temporary data directory.
//!
//! The contract used here is the one `wharf serve` documents: with `--listen 127.0.0.1:0` it
//! prints exactly one line, `wharf listening on http://127.0.0.1:PORT`, on stdout once it accepts
//! connections, logs to stderr, and exits gracefully on SIGTERM.
//! The server's stderr goes to a log file that outlives restarts, so a failing test can show what
//! the server said across the whole test.
//!
//! Wharf refuses anonymous requests and creates its administrator, `admin`, on first start. The
//! testkit always chooses that password: it writes a random one to a file and names the file as
//! `auth.admin_password_file` in a configuration file of its own, which also carries whatever
//! configuration the caller gave. A restart keeps the data directory, where the administrator
//! already exists, so the password never changes. Stock clients get the credentials through the
//! shared auth file (see `client_auth`), raw requests through [`WharfServer::basic_auth_header`].

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

use crate::client_auth::ClientAuth;
use crate::http;
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

/// The administrator `wharf serve` creates on first start.
const ADMIN: &str = "admin";

/// A running `wharf serve`, stopped with SIGTERM when dropped.
pub struct WharfServer {
    bin: PathBuf,
    data_dir: TempDir,
    /// The server's log, its administrator's password file and its configuration file.
    state_dir: TempDir,
    /// The configuration the caller gave, re-read at every start so a test may change it
    /// between restarts.
    caller_config: Option<PathBuf>,
    password: String,
    client_auth: Arc<ClientAuth>,
    child: Option<Child>,
    addr: SocketAddr,
}

impl WharfServer {
    /// Starts `bin serve` on `127.0.0.1:0` with a fresh temporary data directory, and an
    /// administrator `admin` whose password is [`WharfServer::admin_password`].
    pub fn start(bin: impl AsRef<Path>) -> Result<WharfServer> {
        Self::start_with_config(bin, None)
    }

    /// Like [`WharfServer::start`], with the configuration in the file `config` when given.
    ///
    /// The server runs with a copy of it that also sets `auth.admin_password_file`, unless the
    /// caller's configuration sets it already: then that file's password is the administrator's.
    pub fn start_with_config(bin: impl AsRef<Path>, config: Option<&Path>) -> Result<WharfServer> {
        let data_dir = tempfile::Builder::new()
            .prefix("wharf-e2e-data-")
            .tempdir()?;
        let state_dir = tempfile::Builder::new()
            .prefix("wharf-e2e-state-")
            .tempdir()?;
        let caller_password_file = match config {
            Some(path) => caller_password_file(&read_config(path)?),
            None => None,
        };
        let password = match caller_password_file {
            // Read as the server reads it: trailing line ends are not part of the password.
            Some(file) => fs::read_to_string(&file)
                .with_context(|| format!("cannot read auth.admin_password_file {file}"))?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
            None => {
                let password = random_password()?;
                // A trailing newline, as an operator's editor would leave it.
                fs::write(
                    state_dir.path().join("admin-password"),
                    format!("{password}\n"),
                )?;
                password
            }
        };
        let mut server = WharfServer {
            bin: bin.as_ref().to_owned(),
            data_dir,
            state_dir,
            caller_config: config.map(Path::to_owned),
            password,
            client_auth: ClientAuth::shared()?,
            child: None,
            // Replaced by spawn() before anyone can read it.
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        server.spawn()?;
        Ok(server)
    }

    /// The password of the administrator `admin`.
    pub fn admin_password(&self) -> &str {
        &self.password
    }

    /// The administrator's user name and password.
    pub fn credentials(&self) -> (String, String) {
        (ADMIN.to_owned(), self.password.clone())
    }

    /// The `Authorization` header value that signs a raw request in as the administrator.
    pub fn basic_auth_header(&self) -> String {
        http::basic_auth(ADMIN, &self.password)
    }

    /// The configuration file the server runs with: the caller's configuration plus the
    /// administrator's password file. Admin commands (`wharf user …`) take it with `--config`.
    pub fn config_path(&self) -> PathBuf {
        self.state_dir.path().join("wharf.toml")
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

    /// Bytes the server has caused to be written to storage so far
    /// (`write_bytes` of `/proc/PID/io`: counted when pages are dirtied, so a
    /// file written and deleted before it reached the disk still counts).
    pub fn storage_write_bytes(&self) -> Result<u64> {
        let child = self.child.as_ref().context("wharf server is not running")?;
        let io = fs::read_to_string(format!("/proc/{}/io", child.id()))?;
        io.lines()
            .find_map(|line| line.strip_prefix("write_bytes:"))
            .and_then(|rest| rest.trim().parse::<u64>().ok())
            .context("no write_bytes in /proc/PID/io")
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
        cmd.arg(sub).arg("--config").arg(self.config_path());
        cmd
    }

    fn log_path(&self) -> PathBuf {
        self.state_dir.path().join("server.log")
    }

    /// Writes the configuration file the server runs with, from the caller's current one.
    fn write_config(&self) -> Result<()> {
        let mut config = match &self.caller_config {
            Some(path) => read_config(path)?,
            None => toml::Table::new(),
        };
        if caller_password_file(&config).is_none() {
            let file = self.state_dir.path().join("admin-password");
            let auth = config
                .entry("auth")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .context("`auth` in the configuration is not a table")?;
            auth.insert(
                "admin_password_file".to_owned(),
                toml::Value::String(file.to_string_lossy().into_owned()),
            );
        }
        fs::write(self.config_path(), toml::to_string(&config)?)?;
        Ok(())
    }

    /// Stops clients from sending this server's credentials to its port, which another server
    /// may take next.
    fn forget_host(&self) {
        let _ = self
            .client_auth
            .remove(&self.addr.to_string(), ADMIN, &self.password);
    }

    fn spawn(&mut self) -> Result<()> {
        self.forget_host();
        self.write_config()?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve").arg("--config").arg(self.config_path());
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
        self.client_auth.set(&self.host(), ADMIN, &self.password)?;
        Ok(())
    }
}

/// Parses the caller's configuration file.
fn read_config(path: &Path) -> Result<toml::Table> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration {}", path.display()))?;
    text.parse::<toml::Table>()
        .with_context(|| format!("the configuration {} is not TOML", path.display()))
}

/// The administrator's password file a configuration names, if it names one.
fn caller_password_file(config: &toml::Table) -> Option<String> {
    config
        .get("auth")?
        .get("admin_password_file")?
        .as_str()
        .filter(|file| !file.is_empty())
        .map(str::to_owned)
}

/// A password no test could guess: 128 bits from the kernel, as hex so it survives every
/// quoting (a TOML file, a header, a command line).
fn random_password() -> Result<String> {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut urandom| urandom.read_exact(&mut bytes))
        .context("cannot read /dev/urandom")?;
    Ok(hex::encode(bytes))
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

    fn authorization(&self) -> Option<String> {
        Some(self.basic_auth_header())
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
        self.forget_host();
    }
}
