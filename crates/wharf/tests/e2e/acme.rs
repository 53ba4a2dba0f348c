//! ACME end to end against Pebble, the ACME test CA, on loopback: issuance with
//! HTTP-01 and with TLS-ALPN-01, the served certificate verified by curl against
//! Pebble's root, renewal before expiry, account reuse across restarts, and the
//! HTTP-to-HTTPS redirect. `pebble-challtestsrv` answers Pebble's DNS queries so
//! the test domain resolves to 127.0.0.1.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::tls::{curl, make_ca_and_cert, sh};

const WHARF: &str = env!("CARGO_BIN_EXE_wharf");
const DOMAIN: &str = "registry.wharf.test";
/// Lifetime of Pebble's certificates in this test: renewal is due after 30 s.
const CERT_LIFETIME_SECS: u64 = 45;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free port below the kernel's ephemeral range, so that the many servers
/// other tests start on port 0 cannot take it between our pick and our bind.
pub(crate) fn free_port() -> Result<u16> {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = (std::process::id() as u16).wrapping_mul(7919);
    for _ in 0..2000 {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed).wrapping_add(seed) % 10_000;
        let port = 20_000 + offset;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port in 20000-29999")
}

fn wait_for_port(port: u16, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{what} did not listen on {port}")
}

struct Pebble {
    _challtestsrv: Killed,
    _pebble: Killed,
    /// Pebble's own TLS CA, which wharf must trust for the directory.
    directory_ca: std::path::PathBuf,
    directory_url: String,
    management_port: u16,
}

fn start_pebble(dir: &Path, http_port: u16, tls_port: u16) -> Result<Pebble> {
    make_ca_and_cert(dir, "pebble", &["localhost", "127.0.0.1"])?;
    let dns_port = free_port()?;
    let (listen_port, management_port) = (free_port()?, free_port()?);
    let challtestsrv = Killed(
        Command::new("pebble-challtestsrv")
            .args([
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
            ])
            .args([
                "-dns01",
                &format!("127.0.0.1:{dns_port}"),
                "-management",
                &format!("127.0.0.1:{}", free_port()?),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("pebble-challtestsrv (Debian package pebble) is required")?,
    );
    let config = serde_json::json!({"pebble": {
        "listenAddress": format!("127.0.0.1:{listen_port}"),
        "managementListenAddress": format!("127.0.0.1:{management_port}"),
        "certificate": dir.join("pebble.crt"),
        "privateKey": dir.join("pebble.key"),
        "httpPort": http_port,
        "tlsPort": tls_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
        // Short-lived certificates, so renewal (due when a third of the lifetime
        // remains) happens within the test.
        "certificateValidityPeriod": CERT_LIFETIME_SECS,
    }});
    std::fs::write(dir.join("pebble.json"), config.to_string())?;
    let pebble = Killed(
        Command::new("pebble")
            .arg("-config")
            .arg(dir.join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .stdout(std::fs::File::create(dir.join("pebble.log"))?)
            .stderr(Stdio::null())
            .spawn()
            .context("pebble (Debian package pebble) is required")?,
    );
    wait_for_port(listen_port, "pebble").with_context(|| {
        format!(
            "pebble log: {}",
            std::fs::read_to_string(dir.join("pebble.log")).unwrap_or_default()
        )
    })?;
    wait_for_port(management_port, "pebble management")?;
    Ok(Pebble {
        _challtestsrv: challtestsrv,
        _pebble: pebble,
        directory_ca: dir.join("pebble-ca.crt"),
        directory_url: format!("https://localhost:{listen_port}/dir"),
        management_port,
    })
}

fn start_wharf(dir: &Path, data: &Path, https_port: u16, config: &str) -> Result<Killed> {
    std::fs::write(dir.join("pw"), "acme-admin-pw")?;
    let config = format!(
        "[auth]\nadmin_password_file = \"{}\"\n{config}",
        dir.join("pw").display()
    );
    let config_path = data.with_extension("toml");
    std::fs::write(&config_path, config)?;
    let mut child = Command::new(WHARF)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{https_port}"),
            "--config",
        ])
        .arg(&config_path)
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(data.with_extension("log"))?)
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    if !line.starts_with("wharf listening on https://") {
        bail!(
            "wharf did not start: {line:?}; log: {}",
            std::fs::read_to_string(data.with_extension("log")).unwrap_or_default()
        );
    }
    Ok(Killed(child))
}

/// Serial of the certificate served for DOMAIN, if it verifies against `root`.
fn served_serial(https_port: u16, root: &Path) -> Result<Option<String>> {
    let (ok, _) = curl(&[
        "--resolve",
        &format!("{DOMAIN}:{https_port}:127.0.0.1"),
        "--cacert",
        root.to_str().context("path")?,
        "-o",
        "/dev/null",
        &format!("https://{DOMAIN}:{https_port}/healthz"),
    ])?;
    if !ok {
        return Ok(None);
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{https_port} -servername {DOMAIN} </dev/null 2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()?;
    Ok(Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()))
}

fn wait_for_serial(https_port: u16, root: &Path, not: Option<&str>) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(serial) = served_serial(https_port, root)? {
            if Some(serial.as_str()) != not && !serial.is_empty() {
                return Ok(serial);
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    bail!("no (new) certificate verified by Pebble's root within 60 s")
}

fn pebble_root(pebble: &Pebble, dir: &Path) -> Result<std::path::PathBuf> {
    let path = dir.join("pebble-root.pem");
    sh(Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(&pebble.directory_ca)
        .arg("-o")
        .arg(&path)
        .arg(format!(
            "https://localhost:{}/roots/0",
            pebble.management_port
        )))?;
    Ok(path)
}

#[test]
fn acme_issues_renews_and_redirects_with_http01_then_tls_alpn01() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let (http_port, https_port) = (free_port()?, free_port()?);
    let pebble = start_pebble(d, http_port, https_port)?;
    let root = pebble_root(&pebble, d)?;
    let acme = |challenge: &str, renew: &str| {
        format!(
            "[tls]\nredirect_listen = \"127.0.0.1:{http_port}\"\n[tls.acme]\ndirectory_url = \"{}\"\ndomains = [\"{DOMAIN}\"]\n\
             ca_bundle = \"{}\"\nchallenge = \"{challenge}\"\ncheck_interval_secs = 2\n{renew}",
            pebble.directory_url,
            pebble.directory_ca.display()
        )
    };

    // HTTP-01: issued, served, verified against Pebble's root.
    let data = d.join("http01");
    let wharf = start_wharf(d, &data, https_port, &acme("http-01", ""))?;
    let first = wait_for_serial(https_port, &root, None)?;
    // Plain HTTP redirects to HTTPS, for the certificate's domain only.
    let (ok, out) = curl(&[
        "--resolve",
        &format!("{DOMAIN}:{http_port}:127.0.0.1"),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        &format!("http://{DOMAIN}:{http_port}/v2/"),
    ])?;
    assert!(
        ok && out.starts_with(&format!("308 https://{DOMAIN}:{https_port}/v2/")),
        "{out}"
    );
    // A restart reuses the account and the certificate (not due for renewal).
    drop(wharf);
    let account = std::fs::read_to_string(data.join("acme/account.json"))?;
    let wharf = start_wharf(d, &data, https_port, &acme("http-01", ""))?;
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(wait_for_serial(https_port, &root, None)?, first);
    assert_eq!(
        std::fs::read_to_string(data.join("acme/account.json"))?,
        account
    );
    drop(wharf);

    // Renewal with the default policy: when a third of the 45-second lifetime
    // remains, a new certificate replaces the old one in service, no restart.
    let wharf = start_wharf(d, &data, https_port, &acme("http-01", ""))?;
    let renewed = wait_for_serial(https_port, &root, Some(&first))?;
    assert_ne!(renewed, first);
    drop(wharf);

    // TLS-ALPN-01, answered on the HTTPS port itself.
    let data = d.join("alpn");
    let _wharf = start_wharf(
        d,
        &data,
        https_port,
        &acme("tls-alpn-01", "").replace(
            &format!("redirect_listen = \"127.0.0.1:{http_port}\"\n"),
            "",
        ),
    )?;
    let alpn = wait_for_serial(https_port, &root, None)?;
    assert!(!alpn.is_empty());
    let log = std::fs::read_to_string(data.with_extension("log"))?;
    assert!(log.contains("certificate issued and in service"), "{log}");
    Ok(())
}
