//! HTTPS end to end: a private CA made with `openssl`, stock clients trusting
//! it through `--cert-dir`, SNI with two certificates, reload on change, the
//! redirect listener, the protocol floor, and refused bad certificates.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

const WHARF: &str = env!("CARGO_BIN_EXE_wharf");
const ADMIN_PASSWORD: &str = "tls-admin-pw";

pub(crate) fn sh(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Makes a CA (`NAME-ca.crt`) and a server certificate for `hosts` signed by it
/// (`NAME.crt` with the chain, `NAME.key`).
pub(crate) fn make_ca_and_cert(dir: &Path, name: &str, hosts: &[&str]) -> Result<()> {
    let p = |f: &str| dir.join(f);
    sh(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
        ])
        .arg(format!("/CN={name} test CA"))
        .arg("-keyout")
        .arg(p(&format!("{name}-ca.key")))
        .arg("-out")
        .arg(p(&format!("{name}-ca.crt"))))?;
    sh(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
        ])
        .arg(format!("/CN={}", hosts[0]))
        .arg("-keyout")
        .arg(p(&format!("{name}.key")))
        .arg("-out")
        .arg(p(&format!("{name}.csr"))))?;
    let sans: Vec<String> = hosts
        .iter()
        .map(|h| {
            if h.parse::<std::net::IpAddr>().is_ok() {
                format!("IP:{h}")
            } else {
                format!("DNS:{h}")
            }
        })
        .collect();
    std::fs::write(
        p(&format!("{name}.ext")),
        format!("subjectAltName={}\n", sans.join(",")),
    )?;
    sh(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
        .arg("-in")
        .arg(p(&format!("{name}.csr")))
        .arg("-CA")
        .arg(p(&format!("{name}-ca.crt")))
        .arg("-CAkey")
        .arg(p(&format!("{name}-ca.key")))
        .arg("-extfile")
        .arg(p(&format!("{name}.ext")))
        .arg("-out")
        .arg(p(&format!("{name}.leaf"))))?;
    let chain = std::fs::read_to_string(p(&format!("{name}.leaf")))?
        + &std::fs::read_to_string(p(&format!("{name}-ca.crt")))?;
    std::fs::write(p(&format!("{name}.crt")), chain)?;
    Ok(())
}

struct TlsServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, extra_config: &str) -> Result<TlsServer> {
    std::fs::write(dir.join("admin-pw"), ADMIN_PASSWORD)?;
    let config = format!(
        "[auth]\nadmin_password_file = \"{}\"\n[tls]\nreload_interval_secs = 1\n{extra_config}",
        dir.join("admin-pw").display()
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
    let stdout = child.stdout.take().context("stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let port = line
        .trim()
        .strip_prefix("wharf listening on https://127.0.0.1:")
        .with_context(|| {
            format!(
                "unexpected ready line {line:?}; log: {}",
                std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
            )
        })?
        .parse()?;
    Ok(TlsServer {
        child,
        port,
        dir: dir.to_owned(),
    })
}

pub(crate) fn curl(args: &[&str]) -> Result<(bool, String)> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    ))
}

fn cert_config(name: &str, dir: &Path, hosts: &[&str]) -> String {
    let hostnames: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    format!(
        "[[tls.certificates]]\nhostnames = [{}]\ncert = \"{}\"\nkey = \"{}\"\n",
        hostnames.join(", "),
        dir.join(format!("{name}.crt")).display(),
        dir.join(format!("{name}.key")).display()
    )
}

#[test]
fn stock_clients_over_https_with_a_private_ca() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    make_ca_and_cert(d, "main", &["localhost", "127.0.0.1"])?;
    let server = start(d, &cert_config("main", d, &["localhost"]))?;
    let ca = d.join("main-ca.crt");
    let url = format!("https://localhost:{}/v2/", server.port);
    let (ok, out) = curl(&[
        "--cacert",
        ca.to_str().context("path")?,
        "-u",
        &format!("admin:{ADMIN_PASSWORD}"),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &url,
    ])?;
    assert!(ok && out.starts_with("200"), "{out}");
    // Without the CA the certificate is not trusted.
    let (ok, _) = curl(&[&url])?;
    assert!(!ok);
    // TLS 1.1 and below are refused.
    let (ok, out) = curl(&[
        "--cacert",
        ca.to_str().context("path")?,
        "--tlsv1.1",
        "--tls-max",
        "1.1",
        &url,
    ])?;
    assert!(!ok, "TLS 1.1 was accepted: {out}");

    // skopeo pushes and reads back over HTTPS, trusting the CA through --cert-dir.
    let cert_dir = d.join("certs");
    std::fs::create_dir_all(&cert_dir)?;
    std::fs::copy(&ca, cert_dir.join("ca.crt"))?;
    let layout = d.join("layout");
    sh(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout))?;
    sh(Command::new("umoci")
        .args(["new", "--image"])
        .arg(format!("{}:v1", layout.display())))?;
    let dest = format!("docker://localhost:{}/secure/app:v1", server.port);
    sh(Command::new("skopeo")
        .args(["copy", "--dest-cert-dir"])
        .arg(&cert_dir)
        .args(["--dest-creds", &format!("admin:{ADMIN_PASSWORD}")])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(&dest))?;
    let inspected = sh(Command::new("skopeo")
        .args(["inspect", "--cert-dir"])
        .arg(&cert_dir)
        .args(["--creds", &format!("admin:{ADMIN_PASSWORD}")])
        .arg(&dest))?;
    assert!(inspected.contains("\"v1\""), "{inspected}");

    // A reader signs in over TLS and may pull but not push.
    let mut add = Command::new(WHARF);
    add.args(["user", "add", "reader", "--password-stdin", "--data-dir"])
        .arg(d.join("data"))
        .stdin(Stdio::piped());
    let mut child = add.spawn()?;
    std::io::Write::write_all(&mut child.stdin.take().context("stdin")?, b"reader-pw\n")?;
    assert!(child.wait()?.success());
    sh(Command::new(WHARF)
        .args([
            "grant",
            "add",
            "user:reader",
            "secure/**",
            "pull",
            "--data-dir",
        ])
        .arg(d.join("data")))?;
    // The server re-reads grants every few seconds (see docs/security.md); a busy
    // machine may take longer, so poll rather than sleep a fixed time.
    let mut last_error = String::new();
    let granted = (0..40).any(|_| {
        std::thread::sleep(Duration::from_millis(500));
        let mut inspect = Command::new("skopeo");
        inspect
            .args(["inspect", "--cert-dir"])
            .arg(&cert_dir)
            .args(["--creds", "reader:reader-pw"])
            .arg(&dest);
        match sh(&mut inspect) {
            Ok(_) => true,
            Err(e) => {
                last_error = e.to_string();
                false
            }
        }
    });
    assert!(
        granted,
        "the reader's new grant never took effect: {last_error}"
    );
    let refused = Command::new("skopeo")
        .args(["copy", "--dest-cert-dir"])
        .arg(&cert_dir)
        .args(["--dest-creds", "reader:reader-pw"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://localhost:{}/secure/app:v2", server.port))
        .output()?;
    assert!(!refused.status.success(), "a reader pushed");
    let stderr = String::from_utf8_lossy(&refused.stderr).to_lowercase();
    assert!(
        stderr.contains("denied") || stderr.contains("unauthorized"),
        "{stderr}"
    );

    // `podman login` and `skopeo login` store the reader's credentials; pulls then use them.
    let auth_file = d.join("auth.json");
    let podman = wharf_testkit::Podman::new()?;
    let registry = format!("localhost:{}", server.port);
    let mut login = podman.cmd();
    login
        .env("REGISTRY_AUTH_FILE", &auth_file)
        .args(["login", "--cert-dir"])
        .arg(&cert_dir)
        .args(["-u", "reader", "--password-stdin", &registry])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = login.spawn()?;
    std::io::Write::write_all(&mut child.stdin.take().context("stdin")?, b"reader-pw\n")?;
    let out = child.wait_with_output()?;
    assert!(
        out.status.success(),
        "podman login: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut pull = podman.cmd();
    pull.env("REGISTRY_AUTH_FILE", &auth_file)
        .args(["pull", "--cert-dir"])
        .arg(&cert_dir)
        .arg(format!("{registry}/secure/app:v1"));
    sh(&mut pull)?;
    let mut bad_login = podman.cmd();
    bad_login
        .env("REGISTRY_AUTH_FILE", d.join("other-auth.json"))
        .args(["login", "--cert-dir"])
        .arg(&cert_dir)
        .args(["-u", "reader", "-p", "wrong", &registry]);
    assert!(
        !bad_login.output()?.status.success(),
        "a wrong password logged in"
    );
    // `buildah login` as the administrator, then a push of the same image under a new tag.
    let buildah = wharf_testkit::Buildah::new()?;
    let buildah_auth = d.join("buildah-auth.json");
    let mut login = buildah.cmd();
    login
        .env("REGISTRY_AUTH_FILE", &buildah_auth)
        .args(["login", "--cert-dir"])
        .arg(&cert_dir)
        .args(["-u", "admin", "-p", ADMIN_PASSWORD, &registry]);
    sh(&mut login)?;
    let mut pull = buildah.cmd();
    pull.env("REGISTRY_AUTH_FILE", &buildah_auth)
        .args(["pull", "--cert-dir"])
        .arg(&cert_dir)
        .arg(format!("{registry}/secure/app:v1"));
    sh(&mut pull)?;
    let mut push = buildah.cmd();
    push.env("REGISTRY_AUTH_FILE", &buildah_auth)
        .args(["push", "--cert-dir"])
        .arg(&cert_dir)
        .arg(format!("{registry}/secure/app:v1"))
        .arg(format!("docker://{registry}/secure/app:from-buildah"));
    sh(&mut push)?;
    let skopeo_auth = d.join("skopeo-auth.json");
    sh(Command::new("skopeo")
        .env("REGISTRY_AUTH_FILE", &skopeo_auth)
        .args(["login", "--cert-dir"])
        .arg(&cert_dir)
        .args(["-u", "reader", "-p", "reader-pw", &registry]))?;
    sh(Command::new("skopeo")
        .env("REGISTRY_AUTH_FILE", &skopeo_auth)
        .args(["inspect", "--cert-dir"])
        .arg(&cert_dir)
        .arg(&dest))?;
    let _ = &server.dir;
    Ok(())
}

#[test]
fn sni_reload_redirect_and_bad_certificates() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    make_ca_and_cert(d, "alpha", &["alpha.test"])?;
    make_ca_and_cert(d, "beta", &["beta.test"])?;
    let redirect_port = crate::acme::free_port()?;
    // start() opens `[tls]` last, so a leading key belongs to that table.
    let config = format!("redirect_listen = \"127.0.0.1:{redirect_port}\"\n")
        + &cert_config("alpha", d, &["alpha.test"])
        + &cert_config("beta", d, &["beta.test"]);
    let server = start(d, &config)?;
    let port = server.port;
    let ok_with = |host: &str, ca: &str| -> Result<bool> {
        let (ok, _) = curl(&[
            "--resolve",
            &format!("{host}:{port}:127.0.0.1"),
            "--cacert",
            d.join(ca).to_str().unwrap_or(""),
            "-o",
            "/dev/null",
            &format!("https://{host}:{port}/healthz"),
        ])?;
        Ok(ok)
    };
    // Each name gets its own certificate: each verifies only against its own CA.
    assert!(ok_with("alpha.test", "alpha-ca.crt")?);
    assert!(ok_with("beta.test", "beta-ca.crt")?);
    assert!(!ok_with("beta.test", "alpha-ca.crt")?);

    // Replace alpha's certificate with one from a new CA: served within seconds, no restart.
    make_ca_and_cert(d, "gamma", &["alpha.test"])?;
    std::fs::copy(d.join("gamma.crt"), d.join("alpha.crt"))?;
    std::fs::copy(d.join("gamma.key"), d.join("alpha.key"))?;
    let mut reloaded = false;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(250));
        if ok_with("alpha.test", "gamma-ca.crt")? {
            reloaded = true;
            break;
        }
    }
    assert!(reloaded, "the new certificate was not picked up");
    assert!(!ok_with("alpha.test", "alpha-ca.crt")?);
    // A broken file keeps the previous certificate in force.
    std::fs::write(d.join("alpha.crt"), "not a certificate")?;
    std::thread::sleep(Duration::from_millis(2500));
    assert!(ok_with("alpha.test", "gamma-ca.crt")?);

    // Plain HTTP is redirected to HTTPS, but only for the host names configured
    // (here the certificates'): any other Host gets 421, so the listener cannot
    // bounce clients to a site of an attacker's choosing.
    let redirect = |host: &str| {
        curl(&[
            "--resolve",
            &format!("{host}:{redirect_port}:127.0.0.1"),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            &format!("http://{host}:{redirect_port}/v2/x?y=1"),
        ])
    };
    let (ok, out) = redirect("alpha.test")?;
    assert!(ok, "{out}");
    assert_eq!(
        out.trim(),
        format!("308 https://alpha.test:{port}/v2/x?y=1")
    );
    for host in ["127.0.0.1", "evil.example"] {
        let (ok, out) = redirect(host)?;
        assert!(ok, "{out}");
        assert_eq!(out.trim(), "421", "redirect for Host {host}");
    }
    drop(server);

    // A key that does not match its certificate fails the start with a clear message.
    let bad = tempfile::tempdir()?;
    make_ca_and_cert(bad.path(), "one", &["localhost"])?;
    make_ca_and_cert(bad.path(), "two", &["localhost"])?;
    let config = format!(
        "[[tls.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n",
        bad.path().join("one.crt").display(),
        bad.path().join("two.key").display()
    );
    std::fs::write(bad.path().join("w.toml"), config)?;
    let out = Command::new(WHARF)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(bad.path().join("w.toml"))
        .arg("--data-dir")
        .arg(bad.path().join("data"))
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("two.key") && stderr.contains("does not match"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn client_certificates_sign_in_as_their_common_name() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    make_ca_and_cert(d, "server", &["localhost"])?;
    // Client CAs and leaves: "clients" is trusted, "rogue" is not.
    make_ca_and_cert(d, "clients", &["reader"])?;
    make_ca_and_cert(d, "ghost", &["ghost"])?;
    make_ca_and_cert(d, "rogue", &["reader"])?;
    // Issue "ghost" (an account that does not exist) from the trusted client CA too.
    sh(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
        .arg("-in")
        .arg(d.join("ghost.csr"))
        .arg("-CA")
        .arg(d.join("clients-ca.crt"))
        .arg("-CAkey")
        .arg(d.join("clients-ca.key"))
        // Extensions make it an X.509 v3 certificate; webpki refuses v1.
        .arg("-extfile")
        .arg(d.join("ghost.ext"))
        .arg("-out")
        .arg(d.join("ghost.leaf")))?;
    let config = format!("client_ca = \"{}\"\n", d.join("clients-ca.crt").display())
        + &cert_config("server", d, &["localhost"]);
    let server = start(d, &config)?;
    sh(Command::new(WHARF)
        .args(["user", "add", "reader", "--robot", "--data-dir"])
        .arg(d.join("data")))?;
    let url = format!("https://localhost:{}/v2/", server.port);
    let ca = d.join("server-ca.crt");
    let with_cert = |leaf: &str, key: &str| -> Result<(bool, String)> {
        curl(&[
            "--cacert",
            ca.to_str().unwrap_or(""),
            "--cert",
            d.join(leaf).to_str().unwrap_or(""),
            "--key",
            d.join(key).to_str().unwrap_or(""),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url,
        ])
    };
    let (ok, code) = with_cert("clients.leaf", "clients.key")?;
    assert!(
        ok && code.starts_with("200"),
        "trusted client certificate: {code}"
    );
    let (_, code) = with_cert("ghost.leaf", "ghost.key")?;
    assert!(
        code.starts_with("401"),
        "certificate for an unknown account: {code}"
    );
    let (ok, code) = with_cert("rogue.leaf", "rogue.key")?;
    assert!(
        !ok || !code.starts_with("200"),
        "a certificate from an untrusted CA signed in: {code}"
    );
    // Without a certificate the connection still works; the request is anonymous.
    let (ok, code) = curl(&[
        "--cacert",
        ca.to_str().context("path")?,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &url,
    ])?;
    assert!(ok && code.starts_with("401"), "{code}");
    Ok(())
}
