//! The operator's first steps: what a fresh data directory lets other local users read, what the
//! management commands do where there is no store, and what a failed first start leaves behind.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{ensure, Context, Result};
use wharf_testkit::fixture::sha256_digest;
use wharf_testkit::http::{self, basic_auth};

use crate::raw_server::{
    config_with_password, serve_command, wharf_command, write_file, RawServer, Start,
};
use crate::support::{location_path, scratch, with_query};

/// Pushes `bytes` as a blob of `repo` and leaves a second upload session open, so the data
/// directory holds a blob, a staging file and a database with its WAL.
fn push_blob_and_open_upload(addr: SocketAddr, auth: &str, repo: &str, bytes: &[u8]) -> Result<()> {
    let headers = [("Authorization", auth)];
    let started = http::request(
        addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &headers,
        b"",
    )?;
    ensure!(
        started.status == 202,
        "POST upload: {} {}",
        started.status,
        started.text()
    );
    let put = with_query(
        &location_path(&started)?,
        &format!("digest={}", sha256_digest(bytes)),
    );
    let done = http::request(addr, "PUT", &put, &headers, bytes)?;
    ensure!(
        done.status == 201,
        "PUT blob: {} {}",
        done.status,
        done.text()
    );
    let open = http::request(
        addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &headers,
        b"",
    )?;
    ensure!(
        open.status == 202,
        "POST upload: {} {}",
        open.status,
        open.text()
    );
    Ok(())
}

/// Every directory and file under `root` (itself included) with its permission bits.
fn modes(root: &Path) -> Result<Vec<(String, bool, u32)>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path)?;
        out.push((
            path.display().to_string(),
            meta.is_dir(),
            meta.permissions().mode() & 0o777,
        ));
        if meta.is_dir() {
            for entry in fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(out)
}

#[test]
fn a_fresh_data_directory_is_private_and_loosened_modes_are_warned_about() -> Result<()> {
    let tmp = scratch()?;
    let (config, password) = config_with_password(tmp.path(), "")?;
    // Not there yet: `wharf serve` creates it, parents included.
    let data = tmp.path().join("new").join("data");
    let mut server = RawServer::start_ready(serve_command(
        tmp.path(),
        Some(&config),
        "127.0.0.1:0",
        &data,
    ))?;
    let auth = basic_auth("admin", &password);
    push_blob_and_open_upload(server.addr(), &auth, "ops/modes", b"secret layer bytes")?;

    // Looked at while the server runs, so SQLite's -wal and -shm files are there too.
    let found = modes(&data)?;
    let names: Vec<&str> = found.iter().map(|(p, _, _)| p.as_str()).collect();
    for must in ["wharf.db", "wharf.db-wal", "wharf.db-shm", "layout-version"] {
        ensure!(
            names.iter().any(|n| n.ends_with(must)),
            "no {must} in {names:#?}"
        );
    }
    ensure!(
        found
            .iter()
            .any(|(p, dir, _)| !dir && p.contains("/uploads/")),
        "no staging file in {names:#?}"
    );
    ensure!(
        found
            .iter()
            .any(|(p, dir, _)| !dir && p.contains("/blobs/sha256/")),
        "no blob in {names:#?}"
    );
    let loose: Vec<String> = found
        .iter()
        .filter(|(_, dir, mode)| *mode != if *dir { 0o700 } else { 0o600 })
        .map(|(p, dir, mode)| format!("{p} ({}) {mode:04o}", if *dir { "dir" } else { "file" }))
        .collect();
    ensure!(loose.is_empty(), "not owner-only:\n{}", loose.join("\n"));
    ensure!(
        !server.stderr().contains("other local users can read"),
        "a fresh store was warned about:\n{}",
        server.stderr()
    );
    let status = server.stop()?;
    ensure!(status.success(), "wharf exited with {status}");

    // An operator loosens them (a restore from a backup as another user, a stray chmod -R).
    fs::set_permissions(&data, fs::Permissions::from_mode(0o755))?;
    fs::set_permissions(data.join("wharf.db"), fs::Permissions::from_mode(0o644))?;
    let server = RawServer::start_ready(serve_command(
        tmp.path(),
        Some(&config),
        "127.0.0.1:0",
        &data,
    ))?;
    let log = server.stderr();
    let warned = |path: &Path, mode: &str| {
        log.lines().any(|line| {
            line.contains("other local users can read")
                && line.contains(&format!("path={}", path.display()))
                && line.contains(mode)
        })
    };
    ensure!(
        warned(&data, "0755"),
        "no warning about the data directory (0755):\n{log}"
    );
    ensure!(
        warned(&data.join("wharf.db"), "0644"),
        "no warning about the database (0644):\n{log}"
    );
    Ok(())
}

#[test]
fn management_commands_never_create_a_store() -> Result<()> {
    let tmp = scratch()?;
    let cwd = tmp.path().join("fresh");
    fs::create_dir(&cwd)?;
    let htpasswd = write_file(
        tmp.path(),
        "users.htpasswd",
        "alice:$2y$05$4eKnrwvFhOoG8/IyI4tXA.1qEj4gTwTGYVkxSWTs2Q2BhsNwBNJCi\n",
    )?;
    let htpasswd = htpasswd.display().to_string();
    let commands: Vec<Vec<&str>> = vec![
        vec!["user", "list"],
        vec!["user", "import-htpasswd", &htpasswd],
        vec!["team", "list"],
        vec!["token", "list"],
        vec!["grant", "add", "team:ci", "ci/**", "pull"],
        vec!["grant", "list"],
        vec!["audit"],
        vec!["rotate-signing-key"],
        vec!["gc"],
        vec!["check"],
    ];
    for args in &commands {
        let out = wharf_command(&cwd).args(args).output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success(),
            "`wharf {}` succeeded without a store:\n{stderr}",
            args.join(" ")
        );
        for named in [
            "wharf-data",
            "./wharf.toml",
            "/etc/wharf/wharf.toml",
            "wharf serve",
        ] {
            ensure!(
                stderr.contains(named),
                "`wharf {}` does not say {named:?}:\n{stderr}",
                args.join(" ")
            );
        }
        let left: Vec<_> = fs::read_dir(&cwd)?.collect();
        ensure!(
            left.is_empty(),
            "`wharf {}` left {left:?} behind",
            args.join(" ")
        );
    }

    // An explicit data directory that holds no store is named, and not created either.
    let elsewhere = tmp.path().join("elsewhere");
    let out = wharf_command(&cwd)
        .args(["user", "list", "--data-dir"])
        .arg(&elsewhere)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success(),
        "user list succeeded in an empty --data-dir:\n{stderr}"
    );
    ensure!(
        stderr.contains(&elsewhere.display().to_string()),
        "not named:\n{stderr}"
    );
    ensure!(
        !elsewhere.exists(),
        "--data-dir {} was created",
        elsewhere.display()
    );

    // Only `serve` creates a store; then ./wharf.toml, the documented default, finds it.
    let (config, _) = config_with_password(tmp.path(), "")?;
    let data = tmp.path().join("served");
    let mut server = RawServer::start_ready(serve_command(
        tmp.path(),
        Some(&config),
        "127.0.0.1:0",
        &data,
    ))?;
    server.stop()?;
    write_file(
        &cwd,
        "wharf.toml",
        &format!("[storage]\ndata_dir = {:?}\n", data.display().to_string()),
    )?;
    let out = wharf_command(&cwd).args(["user", "list"]).output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && stdout.contains("admin"),
        "`wharf user list` did not read ./wharf.toml: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(!cwd.join("wharf-data").exists(), "./wharf-data was created");
    Ok(())
}

#[test]
fn a_failed_first_start_keeps_the_admin_password_for_the_next() -> Result<()> {
    let tmp = scratch()?;
    let data = tmp.path().join("data");
    // No admin_password_file: the first start generates the password and shows it once.
    let port = crate::acme::free_port()?;
    let busy = std::net::TcpListener::bind(("127.0.0.1", port))?;
    let first = RawServer::start(serve_command(
        tmp.path(),
        None,
        &format!("127.0.0.1:{port}"),
        &data,
    ))?;
    let stderr = match first {
        Start::Ready(_) => anyhow::bail!("wharf serve started on a busy port {port}"),
        Start::Exited(status, stderr) => {
            ensure!(!status.success(), "exit {status} on a busy port");
            stderr
        }
    };
    ensure!(
        stderr.contains("cannot listen"),
        "not the port's fault?\n{stderr}"
    );
    ensure!(
        !stderr.contains("created administrator"),
        "the failed start used up the administrator's password:\n{stderr}"
    );
    drop(busy);

    let server = RawServer::start_ready(serve_command(tmp.path(), None, "127.0.0.1:0", &data))?;
    let log = server.stderr();
    let password = log
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("created administrator \"admin\" with password ")
        })
        .map(str::trim)
        .with_context(|| format!("the second start shows no administrator password:\n{log}"))?;
    let root = http::request(
        server.addr(),
        "GET",
        "/v2/",
        &[("Authorization", &basic_auth("admin", password))],
        b"",
    )?;
    ensure!(
        root.status == 200,
        "the shown password does not sign in: {}",
        root.status
    );
    Ok(())
}

#[test]
fn a_first_start_with_a_mismatched_tls_key_keeps_the_admin_password() -> Result<()> {
    let tmp = scratch()?;
    let dir = tmp.path();
    // A certificate and a key that is not its own.
    for args in [
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-days",
            "1",
            "-keyout",
            "own.key",
            "-out",
            "cert.pem",
        ][..],
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "other.key",
        ][..],
    ] {
        wharf_testkit::run(
            std::process::Command::new("openssl")
                .current_dir(dir)
                .args(args),
        )?;
    }
    let tls = |key: &str| {
        format!(
            "[[tls.certificates]]\nhostnames = [\"localhost\"]\ncert = {:?}\nkey = {:?}\n",
            dir.join("cert.pem").display().to_string(),
            dir.join(key).display().to_string()
        )
    };
    let data = dir.join("data");
    let bad = write_file(dir, "bad.toml", &tls("other.key"))?;
    let stderr = match RawServer::start(serve_command(dir, Some(&bad), "127.0.0.1:0", &data))? {
        Start::Ready(_) => {
            anyhow::bail!("wharf serve started with a key that is not the certificate's")
        }
        Start::Exited(status, stderr) => {
            ensure!(!status.success(), "exit {status}");
            stderr
        }
    };
    ensure!(
        stderr.contains("does not match"),
        "not the key's fault?\n{stderr}"
    );
    ensure!(
        !stderr.contains("created administrator"),
        "the failed start used up the administrator's password:\n{stderr}"
    );

    let good = write_file(dir, "good.toml", &tls("own.key"))?;
    let server = RawServer::start(serve_command(dir, Some(&good), "127.0.0.1:0", &data))?;
    let log = match server {
        Start::Ready(server) => server.stderr(),
        Start::Exited(status, stderr) => anyhow::bail!("second start exited {status}:\n{stderr}"),
    };
    ensure!(
        log.contains("created administrator \"admin\" with password "),
        "the second start shows no administrator password:\n{log}"
    );
    Ok(())
}

/// Root running a management command on the service account's data directory is refused before
/// anything is written, naming the owner; as the owner again, the same commands work. (These
/// tests run as root, as CI does; the directory is handed to another uid with chown.)
#[test]
fn root_is_refused_on_a_data_directory_that_belongs_to_the_service_account() -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let tmp = scratch()?;
    let (config, _) = config_with_password(tmp.path(), "")?;
    let data = tmp.path().join("data");
    let mut server = RawServer::start_ready(serve_command(
        tmp.path(),
        Some(&config),
        "127.0.0.1:0",
        &data,
    ))?;
    server.stop()?;
    // The server generated its signing keys; without them `signing-key show` would make new ones.
    fs::remove_dir_all(data.join("keys"))?;
    ensure!(
        fs::metadata(&data)?.uid() == 0,
        "these tests run as root (as CI does)"
    );
    // uid 65534 is Debian's `nobody`.
    let chown = |owner: &str| -> Result<()> {
        let status = std::process::Command::new("chown")
            .args(["-R", owner])
            .arg(&data)
            .status()?;
        ensure!(status.success(), "chown {owner} failed");
        Ok(())
    };
    chown("65534:65534")?;
    let commands: [&[&str]; 3] = [&["signing-key", "show"], &["user", "list"], &["check"]];
    for args in commands {
        let out = wharf_command(tmp.path())
            .args(args)
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success(),
            "`wharf {}` ran as root on nobody's data directory:\n{stderr}",
            args.join(" ")
        );
        ensure!(
            stderr.contains("belongs to nobody (uid 65534)") && stderr.contains("sudo -u nobody"),
            "`wharf {}`: the refusal names no owner:\n{stderr}",
            args.join(" ")
        );
    }
    ensure!(
        !data.join("keys").exists(),
        "a refused command still generated keys"
    );
    let foreign: Vec<String> = walk(&data)?
        .into_iter()
        .filter(|(_, uid)| *uid != 65534)
        .map(|(p, uid)| format!("{p} (uid {uid})"))
        .collect();
    ensure!(
        foreign.is_empty(),
        "refused commands left files of another owner: {foreign:?}"
    );
    chown("0:0")?;
    let out = wharf_command(tmp.path())
        .args(["signing-key", "show", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .output()?;
    ensure!(
        out.status.success()
            && String::from_utf8_lossy(&out.stdout).contains("BEGIN PGP PUBLIC KEY"),
        "as the owner: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Every path under `dir` with its owner's uid.
fn walk(dir: &Path) -> Result<Vec<(String, u32)>> {
    use std::os::unix::fs::MetadataExt;
    let mut out = vec![(dir.display().to_string(), fs::metadata(dir)?.uid())];
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if fs::symlink_metadata(&path)?.is_dir() {
            out.extend(walk(&path)?);
        } else {
            out.push((
                path.display().to_string(),
                fs::symlink_metadata(&path)?.uid(),
            ));
        }
    }
    Ok(out)
}
