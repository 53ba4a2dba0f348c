//! Signing in over HTTPS with HTTP/2 on a non-default port, as Go clients do:
//! oras logs in, pushes and pulls; cosign signs and verifies. Under HTTP/2 the
//! request's authority travels as `:authority`, not `Host`, so this is where a
//! token realm built from the wrong place loses the port.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{ensure, Context, Result};
use wharf_testkit::Tool;

use crate::tls::{curl, make_ca_and_cert, sh};

const WHARF: &str = env!("CARGO_BIN_EXE_wharf");
const ADMIN_PASSWORD: &str = "h2-admin-pw";

struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

fn start(dir: &Path) -> Result<Server> {
    make_ca_and_cert(dir, "h2", &["127.0.0.1"])?;
    std::fs::write(dir.join("admin-pw"), ADMIN_PASSWORD)?;
    let config = format!(
        "[auth]\nadmin_password_file = \"{}\"\n[[tls.certificates]]\nhostnames = [\"127.0.0.1\"]\ncert = \"{}\"\nkey = \"{}\"\n",
        dir.join("admin-pw").display(),
        dir.join("h2.crt").display(),
        dir.join("h2.key").display(),
    );
    std::fs::write(dir.join("wharf.toml"), config)?;
    let mut child = Command::new(WHARF)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(dir.join("wharf.toml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("server.log"))?)
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let port = line
        .trim()
        .strip_prefix("wharf listening on https://127.0.0.1:")
        .with_context(|| format!("unexpected ready line {line:?}"))?
        .parse()?;
    Ok(Server {
        child,
        port,
        dir: dir.to_owned(),
    })
}

/// A Go client with a private HOME (its own Docker config, written by `oras
/// login`) that trusts only the test CA.
fn go_client(name: &'static str, home: &Path, ca: &Path) -> Command {
    let mut cmd = Command::new(Tool::find(name).path());
    cmd.current_dir(home)
        .env("HOME", home)
        .env_remove("DOCKER_CONFIG")
        .env("SSL_CERT_FILE", ca)
        .env("TUF_ROOT", home.join("tuf"))
        .env("COSIGN_PASSWORD", "h2-key-pw")
        .env("COSIGN_YES", "true");
    cmd
}

#[test]
fn oras_and_cosign_sign_in_over_https_with_http2() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let server = start(d)?;
    let result = run_clients(&server, d);
    result.map_err(|e| anyhow::anyhow!("{e:?}\n\nserver log:\n{}", server.log()))
}

fn run_clients(server: &Server, d: &Path) -> Result<()> {
    let ca = d.join("h2-ca.crt");
    // An address, not `localhost`, which oras would talk to in plain HTTP.
    let host = format!("127.0.0.1:{}", server.port);

    // The challenge an HTTP/2 client gets names the token endpoint with the port.
    let (ok, head) = curl(&[
        "--http2",
        "--cacert",
        ca.to_str().context("path")?,
        "-o",
        "/dev/null",
        "-D",
        "-",
        &format!("https://{host}/v2/"),
    ])?;
    ensure!(ok, "{head}");
    ensure!(head.starts_with("HTTP/2 401"), "not an HTTP/2 401: {head}");
    ensure!(
        head.contains(&format!("realm=\"https://{host}/token\"")),
        "challenge without the port: {head}"
    );

    let home = d.join("home");
    std::fs::create_dir_all(&home)?;
    let mut login = go_client("oras", &home, &ca);
    login
        .args(["login", "-u", "admin", "--password-stdin", &host])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = login.spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(ADMIN_PASSWORD.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "oras login: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let content = b"signed in over h2\n".repeat(100);
    std::fs::write(home.join("notes.txt"), &content)?;
    let reference = format!("{host}/h2/artifact:v1");
    sh(go_client("oras", &home, &ca).args([
        "push",
        "--artifact-type",
        "application/vnd.wharf.e2e.notes",
        &reference,
        "notes.txt:text/plain",
    ]))?;
    let out = home.join("out");
    sh(go_client("oras", &home, &ca)
        .args(["pull", "-o"])
        .arg(&out)
        .arg(&reference))?;
    ensure!(std::fs::read(out.join("notes.txt"))? == content);
    let digest = sh(go_client("oras", &home, &ca).args(["resolve", &reference]))?
        .trim()
        .to_owned();
    ensure!(digest.starts_with("sha256:"), "resolve: {digest}");

    // cosign signs and verifies through the same sign-in (the Docker config oras wrote).
    let by_digest = format!("{host}/h2/artifact@{digest}");
    sh(go_client("cosign", &home, &ca).arg("generate-key-pair"))?;
    sh(go_client("cosign", &home, &ca).args([
        "sign",
        "--key",
        "cosign.key",
        "--tlog-upload=false",
        &by_digest,
    ]))?;
    let verified = sh(go_client("cosign", &home, &ca).args([
        "verify",
        "--key",
        "cosign.pub",
        "--insecure-ignore-tlog",
        &by_digest,
    ]))?;
    ensure!(verified.contains(&digest), "verify: {verified}");
    Ok(())
}
