//! Running a client command to completion with captured output and a time limit.
//!
//! Every invocation in the suite goes through [`run`], so a failing client always shows its full
//! command line, exit status and stderr in the test failure instead of a bare "exit status 1".
//! A time limit keeps a hung client (a registry that never answers, a prompt waiting for a
//! password) from stalling CI: stdin is always closed, and the child is killed when time is up.

use std::fmt;
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The default limit for one client invocation; pulls of small fixtures take seconds.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// What a finished command printed, and how it exited.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    /// The command line, for error messages.
    pub command: String,
    /// How the process exited.
    pub status: ExitStatus,
    /// Everything written to stdout, lossily decoded.
    pub stdout: String,
    /// Everything written to stderr, lossily decoded.
    pub stderr: String,
}

impl CmdOutput {
    /// Parses stdout as JSON, naming the command when it is not JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.stdout)
            .with_context(|| format!("stdout of `{}` is not JSON:\n{}", self.command, self.stdout))
    }
}

impl fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` and fails, with its full output, unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<CmdOutput> {
    run_with_timeout(cmd, DEFAULT_TIMEOUT)
}

/// Runs `cmd` and fails unless it exits non-zero; for asserting that a client refuses something.
pub fn run_expect_failure(cmd: &mut Command) -> Result<CmdOutput> {
    let output = capture(cmd, DEFAULT_TIMEOUT)?;
    if output.status.success() {
        bail!("expected a failure, but {output}");
    }
    Ok(output)
}

/// Like [`run`] with an explicit time limit.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<CmdOutput> {
    let output = capture(cmd, timeout)?;
    if !output.status.success() {
        bail!("{output}");
    }
    Ok(output)
}

/// Runs `cmd` with a time limit and returns its output whatever the exit status.
pub(crate) fn capture(cmd: &mut Command, timeout: Duration) -> Result<CmdOutput> {
    let command = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{command}`"))?;
    // Both pipes are drained concurrently: a child that fills one pipe while we block reading the
    // other would deadlock.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_with_deadline(&mut child, timeout);
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    match status {
        Some(status) => Ok(CmdOutput {
            command,
            status,
            stdout,
            stderr,
        }),
        None => bail!(
            "`{command}` did not finish within {timeout:?} and was killed\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        ),
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Waits for `child`, killing it at the deadline; `None` means it was killed.
pub(crate) fn wait_with_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Stops a daemon gracefully: SIGTERM, then SIGKILL if it has not exited after `grace`.
///
/// Returns the exit status, or `None` when it had to be killed. `kill(1)` sends the signal
/// because the workspace forbids the `unsafe` a direct `kill(2)` call needs.
pub(crate) fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !sent {
        let _ = child.kill();
    }
    wait_with_deadline(child, grace)
}

fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|arg| arg.to_string_lossy().into_owned()));
    parts.join(" ")
}
