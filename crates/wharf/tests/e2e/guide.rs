//! The guide's "Move from docker-registry (TLS and htpasswd)" recipe, run the
//! way a new user runs it: a configuration file named with `--config` on every
//! command, certificate files, an htpasswd file made by `htpasswd -B`, then
//! `podman login` and a push with the old password.
//!
//! The test first checks that docs/guide.md still says each command it runs,
//! so the recipe and this test cannot drift apart silently.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::tls::{make_ca_and_cert, sh};

const WHARF: &str = env!("CARGO_BIN_EXE_wharf");
const GUIDE: &str = include_str!("../../../../docs/guide.md");

/// The recipe's commands, as the guide prints them.
const RECIPE: &[&str] = &[
    "wharf user import-htpasswd /etc/docker/registry/htpasswd",
    "wharf user list",
    "wharf team add developers",
    "wharf team add-member developers alice",
    "wharf grant add team:developers '**' pull,push",
    "podman login registry.example:5000",
    "[[tls.certificates]]",
];

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `wharf ARGS --config CONFIG`, as the guide's "or `--config FILE` on each command".
fn wharf(config: &Path, args: &[&str]) -> Result<String> {
    sh(Command::new(WHARF).args(args).arg("--config").arg(config))
}

#[test]
fn moving_from_docker_registry_as_the_guide_says() -> Result<()> {
    for command in RECIPE {
        assert!(
            GUIDE.contains(command),
            "docs/guide.md no longer says `{command}`: update the recipe and this test together"
        );
    }
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    make_ca_and_cert(d, "registry", &["localhost"])?;
    // The docker-registry's htpasswd file, with a bcrypt entry as `htpasswd -B` writes it.
    let htpasswd = d.join("htpasswd");
    sh(Command::new("htpasswd")
        .args(["-Bbc"])
        .arg(&htpasswd)
        .args(["alice", "alice-old-password"]))?;
    std::fs::write(d.join("admin-password"), "admin-secret-for-the-guide\n")?;
    let port = crate::acme::free_port()?;
    let config = d.join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[storage]\ndata_dir = \"{data}\"\n\n\
             [auth]\nadmin_password_file = \"{pw}\"\n\n\
             [[tls.certificates]]\nhostnames = [\"localhost\"]\ncert = \"{cert}\"\nkey = \"{key}\"\n",
            data = d.join("data").display(),
            pw = d.join("admin-password").display(),
            cert = d.join("registry.crt").display(),
            key = d.join("registry.key").display(),
        ),
    )?;

    // "Start the server once first … so the store exists".
    let mut child = Command::new(WHARF)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(d.join("server.log"))?)
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let _server = Server(child);
    let mut ready = String::new();
    BufReader::new(stdout).read_line(&mut ready)?;
    if !ready.contains(&format!("https://127.0.0.1:{port}")) {
        bail!(
            "unexpected ready line {ready:?}; log: {}",
            std::fs::read_to_string(d.join("server.log")).unwrap_or_default()
        );
    }

    let imported = wharf(
        &config,
        &[
            "user",
            "import-htpasswd",
            htpasswd.to_str().context("path")?,
        ],
    )?;
    assert!(imported.contains("imported 1"), "{imported}");
    let users = wharf(&config, &["user", "list"])?;
    assert!(users.contains("alice"), "{users}");
    wharf(&config, &["team", "add", "developers"])?;
    wharf(&config, &["team", "add-member", "developers", "alice"])?;
    wharf(
        &config,
        &["grant", "add", "team:developers", "**", "pull,push"],
    )?;

    // Clients trust the private CA where they look for the registry's host:port.
    let certs = d.join("certs.d").join(format!("localhost:{port}"));
    std::fs::create_dir_all(&certs)?;
    std::fs::copy(d.join("registry-ca.crt"), certs.join("ca.crt"))?;
    let registry = format!("localhost:{port}");
    let podman = wharf_testkit::Podman::new()?;
    let auth_file = d.join("auth.json");
    // The grant takes effect within a few seconds (each server caches for up to 3 s).
    let mut last = String::new();
    let logged_in = (0..30).any(|_| {
        let mut login = podman.cmd();
        login
            .env("REGISTRY_AUTH_FILE", &auth_file)
            .args(["login", "--cert-dir"])
            .arg(&certs)
            .args(["-u", "alice", "--password-stdin", &registry])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let ok = login.spawn().and_then(|mut child| {
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(b"alice-old-password\n")?;
            }
            child.wait_with_output()
        });
        match ok {
            Ok(out) if out.status.success() => true,
            Ok(out) => {
                last = String::from_utf8_lossy(&out.stderr).into_owned();
                std::thread::sleep(std::time::Duration::from_millis(300));
                false
            }
            Err(e) => {
                last = e.to_string();
                false
            }
        }
    });
    assert!(
        logged_in,
        "podman login as alice with her old password: {last}"
    );

    // docker-registry let alice push; so does the grant the guide gives her team.
    let layout = d.join("layout");
    sh(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout))?;
    sh(Command::new("umoci")
        .args(["new", "--image"])
        .arg(format!("{}:v1", layout.display())))?;
    let reference = format!("{registry}/team/app:v1");
    let mut push = Command::new("skopeo");
    push.env("REGISTRY_AUTH_FILE", &auth_file)
        .args(["copy", "--dest-cert-dir"])
        .arg(&certs)
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{reference}"));
    sh(&mut push)?;
    let mut pull = podman.cmd();
    pull.env("REGISTRY_AUTH_FILE", &auth_file)
        .args(["pull", "--cert-dir"])
        .arg(&certs)
        .arg(&reference);
    sh(&mut pull)?;
    // A wrong password still fails, over the same TLS.
    let mut wrong = podman.cmd();
    wrong
        .env("REGISTRY_AUTH_FILE", d.join("other-auth.json"))
        .args(["login", "--cert-dir"])
        .arg(&certs)
        .args(["-u", "alice", "-p", "not-her-password", &registry]);
    assert!(
        !wrong.output()?.status.success(),
        "a wrong password signed in"
    );
    Ok(())
}
