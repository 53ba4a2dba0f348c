//! File repositories end to end: `wharf files put` uploads an install tree
//! (a kernel, a squashfs image, a kickstart) as one published snapshot, curl
//! downloads it with Range requests and directory listings, hostile paths are
//! refused, and a file removed by a newer snapshot stays reachable for the
//! grace period, so a client that read the old listing still finds it.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use wharf_testkit::WharfServer;

use super::tls::{curl, sh};

const WHARF: &str = env!("CARGO_BIN_EXE_wharf");

fn cli(server: &WharfServer, args: &[&str]) -> Result<String> {
    sh(Command::new(WHARF)
        .args(args)
        .arg("--config")
        .arg(server.config_path())
        .arg("--data-dir")
        .arg(server.data_dir()))
}

fn cli_fails(server: &WharfServer, args: &[&str]) -> Result<String> {
    let out = Command::new(WHARF)
        .args(args)
        .arg("--config")
        .arg(server.config_path())
        .arg("--data-dir")
        .arg(server.data_dir())
        .output()?;
    assert!(!out.status.success(), "{args:?} succeeded");
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::create_dir_all(path.parent().context("parent")?)?;
    std::fs::write(path, bytes)?;
    Ok(())
}

#[test]
fn install_tree_upload_ranges_listings_hostile_paths_and_grace() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let tree = d.join("f40");
    let vmlinuz: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let squash: Vec<u8> = (0..2_000_000u32).map(|i| (i * 31 % 256) as u8).collect();
    write(&tree.join("images/pxeboot/vmlinuz"), &vmlinuz)?;
    write(&tree.join("LiveOS/squashfs.img"), &squash)?;
    write(&tree.join(".treeinfo"), b"[general]\nfamily = Fedora\n")?;
    let ks = b"url --url=http://example.invalid/files/os/f40/\nreboot\n";
    write(&d.join("ks.cfg"), ks)?;

    let server = WharfServer::start(WHARF)?;
    let (user, password) = server.credentials();
    let auth = format!("{user}:{password}");
    let out = cli(
        &server,
        &[
            "files",
            "put",
            "--repo",
            "os",
            "--to",
            "releases",
            tree.to_str().context("path")?,
        ],
    )?;
    assert!(out.contains("3 files"), "{out}");
    cli(
        &server,
        &[
            "files",
            "put",
            "--repo",
            "os",
            d.join("ks.cfg").to_str().context("path")?,
        ],
    )?;
    let listed = cli(&server, &["files", "ls", "--repo", "os"])?;
    for path in [
        "releases/f40/images/pxeboot/vmlinuz",
        "releases/f40/LiveOS/squashfs.img",
        "ks.cfg",
    ] {
        assert!(listed.contains(path), "{path} not in {listed}");
    }

    let base = format!("{}/files/os", server.url());
    let get = |extra: &[&str], url: &str| -> Result<(String, String)> {
        let mut args = vec![
            "-u",
            &auth,
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ];
        args.extend_from_slice(extra);
        args.push(url);
        let (_, out) = curl(&args)?;
        let code = out
            .trim_end()
            .rsplit('\n')
            .next()
            .unwrap_or("")
            .trim()
            .to_owned();
        Ok((code, out))
    };
    // Whole files, byte for byte.
    let kernel = d.join("vmlinuz");
    let (ok, msg) = curl(&[
        "-u",
        &auth,
        "-o",
        kernel.to_str().context("path")?,
        &format!("{base}/releases/f40/images/pxeboot/vmlinuz"),
    ])?;
    assert!(ok, "{msg}");
    assert_eq!(std::fs::read(&kernel)?, vmlinuz);
    let out = d.join("squashfs.img");
    let (ok, msg) = curl(&[
        "-u",
        &auth,
        "-o",
        out.to_str().context("path")?,
        &format!("{base}/releases/f40/LiveOS/squashfs.img"),
    ])?;
    assert!(ok, "{msg}");
    assert_eq!(std::fs::read(&out)?, squash);
    let (_, body) = curl(&["-u", &auth, &format!("{base}/ks.cfg")])?;
    assert_eq!(body.as_bytes(), ks);
    // Ranges: 206 with the slice, 416 past the end.
    let img = format!("{base}/releases/f40/LiveOS/squashfs.img");
    let (code, headers) = get(&["-r", "1000-1999"], &img)?;
    assert_eq!(code, "206", "{headers}");
    assert!(
        headers.contains(&format!("bytes 1000-1999/{}", squash.len())),
        "{headers}"
    );
    let ranged = Command::new("curl")
        .args(["-sS", "-u", &auth, "-r", "1000-1999", &img])
        .output()?
        .stdout;
    assert_eq!(ranged, &squash[1000..2000]);
    let (code, _) = get(&["-r", "5000000-"], &img)?;
    assert_eq!(code, "416");
    // Listings: HTML and JSON.
    let (_, html) = curl(&["-u", &auth, &format!("{base}/releases/f40/")])?;
    assert!(
        html.contains("images/") && html.contains("LiveOS/"),
        "{html}"
    );
    let (_, json) = curl(&[
        "-u",
        &auth,
        &format!("{base}/releases/f40/LiveOS/?format=json"),
    ])?;
    assert!(json.contains("squashfs.img"), "{json}");
    // Anonymous: refused (no grant).
    let (_, code) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{base}/ks.cfg"),
    ])?;
    assert_eq!(code, "401");

    // Hostile destinations are refused by the CLI, and nothing is published.
    for to in ["../etc", "/abs", "a/../../b", &"x".repeat(300)] {
        let err = cli_fails(
            &server,
            &[
                "files",
                "put",
                "--repo",
                "os",
                "--to",
                to,
                d.join("ks.cfg").to_str().context("path")?,
            ],
        )?;
        assert!(err.contains("invalid path"), "{to}: {err}");
    }
    let nul = cli_fails(
        &server,
        &["files", "rm", "--repo", "os", "ks.cfg\u{1}/../x"],
    )?;
    assert!(!nul.is_empty());
    // Hostile request paths never leave the repository.
    let (code, _) = get(&["--path-as-is"], &format!("{base}/../../etc/passwd"))?;
    assert!(code == "400" || code == "404", "{code}");
    let (code, _) = get(&[], &format!("{base}/a%00b"))?;
    assert!(code == "400" || code == "404", "{code}");

    // A new snapshot without the kernel: the old one answers for it within grace.
    let (_, before) = curl(&["-u", &auth, &format!("{base}/releases/f40/images/pxeboot/")])?;
    assert!(before.contains("vmlinuz"), "{before}");
    cli(
        &server,
        &["files", "rm", "--repo", "os", "releases/f40/images"],
    )?;
    let listed = cli(&server, &["files", "ls", "--repo", "os"])?;
    assert!(!listed.contains("vmlinuz"), "{listed}");
    let (code, _) = get(&[], &format!("{base}/releases/f40/images/pxeboot/vmlinuz"))?;
    assert_eq!(
        code, "200",
        "a client holding the old listing lost the file"
    );
    Ok(())
}

/// `curl` with a method, optional body file and headers: (status, body).
fn request(
    method: &str,
    url: &str,
    auth: Option<&str>,
    body: Option<&Path>,
    headers: &[&str],
) -> Result<(u16, String)> {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "60",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ]);
    if let Some(auth) = auth {
        cmd.args(["-u", auth]);
    }
    if let Some(body) = body {
        cmd.arg("--data-binary")
            .arg(format!("@{}", body.to_str().context("path")?));
        cmd.args(["-H", "Content-Type: application/octet-stream"]);
    }
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg("--path-as-is").arg(url).output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').context("no status")?;
    Ok((code.trim().parse().unwrap_or(0), body.to_owned()))
}

fn download(url: &str, auth: &str, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to.parent().context("parent")?)?;
    let (ok, msg) = curl(&["-f", "-u", auth, "-o", to.to_str().context("path")?, url])?;
    anyhow::ensure!(ok, "GET {url}: {msg}");
    Ok(())
}

/// Runs `sha256sum -c --strict SHA256SUMS` in `dir`; its output.
fn sha256sum_check(dir: &Path) -> Result<String> {
    let out = Command::new("sha256sum")
        .args(["-c", "--strict", "SHA256SUMS"])
        .current_dir(dir)
        .output()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(out.status.success(), "sha256sum -c failed: {text}");
    Ok(text)
}

#[test]
fn http_write_api_rights_limits_hostile_paths_digests_and_sums() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let config = d.join("wharf.toml");
    std::fs::write(
        &config,
        "[files]\nmax_upload_bytes = 3000000\n\n\
         [[auth.grants]]\nsubject = \"user:reader\"\nrepositories = \"**\"\nactions = [\"pull\"]\n",
    )?;
    let server = WharfServer::start_with_config(WHARF, Some(&config))?;
    let (user, password) = server.credentials();
    let admin = format!("{user}:{password}");
    let mut add = Command::new(WHARF);
    add.args(["user", "add", "reader", "--password-stdin"])
        .arg("--config")
        .arg(server.config_path())
        .arg("--data-dir")
        .arg(server.data_dir())
        .stdin(std::process::Stdio::piped());
    let mut child = add.spawn()?;
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(b"reader-pw\n")?;
    }
    anyhow::ensure!(child.wait()?.success(), "user add");
    let api = format!("{}/api/v1/files", server.url());
    let served = format!("{}/files", server.url());

    let iso: Vec<u8> = (0..2_500_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let iso_file = d.join("boot.iso");
    std::fs::write(&iso_file, &iso)?;
    let ks = d.join("ks.cfg");
    std::fs::write(&ks, b"text\nreboot\n")?;

    // 401 without credentials, 403 with only pull.
    let (code, body) = request("PUT", &format!("{api}/isos/boot.iso"), None, Some(&ks), &[])?;
    assert_eq!(code, 401, "{body}");
    let (code, body) = request(
        "PUT",
        &format!("{api}/isos/boot.iso"),
        Some("reader:reader-pw"),
        Some(&ks),
        &[],
    )?;
    assert_eq!(code, 403, "{body}");

    // 201: streamed, with the expected digest given; served back identical.
    let sha = wharf_core::Digest::sha256_of(&iso);
    let (code, body) = request(
        "PUT",
        &format!("{api}/isos/f40/Fedora%20%C3%A9.iso?sha256={}", sha.hex()),
        Some(&admin),
        Some(&iso_file),
        &[],
    )?;
    assert_eq!(code, 201, "{body}");
    assert!(body.contains(sha.hex()), "{body}");
    let back = d.join("back.iso");
    download(
        &format!("{served}/isos/f40/Fedora%20%C3%A9.iso"),
        &admin,
        &back,
    )?;
    assert_eq!(std::fs::read(&back)?, iso);
    // The reader may pull what it may not push.
    download(
        &format!("{served}/isos/f40/Fedora%20%C3%A9.iso"),
        "reader:reader-pw",
        &back,
    )?;

    // A wrong expected digest (query or RFC 3230 header): 400, nothing published.
    let wrong = wharf_core::Digest::sha256_of(b"something else");
    let (code, body) = request(
        "PUT",
        &format!("{api}/isos/ks.cfg?sha256={}", wrong.hex()),
        Some(&admin),
        Some(&ks),
        &[],
    )?;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("DIGEST_INVALID"), "{body}");
    let (code, body) = request(
        "PUT",
        &format!("{api}/isos/ks.cfg"),
        Some(&admin),
        Some(&ks),
        &["Digest: sha-256=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="],
    )?;
    assert_eq!(code, 400, "{body}");
    let (code, _) = request(
        "GET",
        &format!("{served}/isos/ks.cfg"),
        Some(&admin),
        None,
        &[],
    )?;
    assert_eq!(code, 404, "a refused upload was published");

    // 413: over files.max_upload_bytes, declared or chunked; nothing kept.
    let big = d.join("big.bin");
    std::fs::write(&big, vec![7u8; 3_100_000])?;
    let (code, body) = request(
        "PUT",
        &format!("{api}/isos/big.bin"),
        Some(&admin),
        Some(&big),
        &[],
    )?;
    assert_eq!(code, 413, "{body}");
    let (code, body) = request(
        "PUT",
        &format!("{api}/isos/big.bin"),
        Some(&admin),
        Some(&big),
        &["Transfer-Encoding: chunked"],
    )?;
    assert_eq!(code, 413, "{body}");
    let (code, _) = request(
        "GET",
        &format!("{served}/isos/big.bin"),
        Some(&admin),
        None,
        &[],
    )?;
    assert_eq!(code, 404);

    // Hostile paths: 400 before anything is stored.
    for bad in [
        "isos/../etc/passwd",
        "isos/%2e%2e/%2e%2e/etc/passwd",
        "isos/a%00b",
        "isos/a%5Cb",
        "isos/./x",
        "isos",
        "Isos/x",
        "isos/SHA256SUMS",
    ] {
        let (code, body) = request("PUT", &format!("{api}/{bad}"), Some(&admin), Some(&ks), &[])?;
        assert_eq!(code, 400, "{bad}: {body}");
    }
    let long = format!("{api}/isos/{}", "x".repeat(5000));
    let (code, _) = request("PUT", &long, Some(&admin), Some(&ks), &[])?;
    assert!(
        code == 400 || code == 414 || code == 431,
        "overlong: {code}"
    );

    // A matching RFC 3230 digest, and ?publish=false: staged until published.
    let b64 = {
        let out = Command::new("sh")
            .arg("-c")
            .arg("openssl dgst -sha256 -binary \"$0\" | base64")
            .arg(&ks)
            .output()?;
        String::from_utf8(out.stdout)?.trim().to_owned()
    };
    assert_eq!(b64.len(), 44, "{b64}");
    let (code, body) = request(
        "PUT",
        &format!("{api}/isos/ks.cfg?publish=false"),
        Some(&admin),
        Some(&ks),
        &[&format!("Digest: sha-256={b64}")],
    )?;
    assert_eq!(code, 201, "{body}");
    let staged: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(staged["published"], false);
    let (code, _) = request(
        "GET",
        &format!("{served}/isos/ks.cfg"),
        Some(&admin),
        None,
        &[],
    )?;
    assert_eq!(code, 404, "a staged snapshot was served");
    let number = staged["snapshot"].as_i64().context("snapshot")?;
    let publish = d.join("publish.json");
    std::fs::write(
        &publish,
        format!("{{\"repository\":\"isos\",\"number\":{number}}}"),
    )?;
    let (code, body) = request(
        "POST",
        &format!("{}/api/v1/snapshots/publish", server.url()),
        Some(&admin),
        Some(&publish),
        &[],
    )?;
    assert_eq!(code, 200, "{body}");
    let (code, body) = request(
        "GET",
        &format!("{served}/isos/ks.cfg"),
        Some(&admin),
        None,
        &[],
    )?;
    assert_eq!((code, body.as_str()), (200, "text\nreboot\n"));

    // SHA256SUMS: the published snapshot's, checked by sha256sum -c on a copy.
    let copy = d.join("copy");
    download(
        &format!("{served}/isos/SHA256SUMS"),
        &admin,
        &copy.join("SHA256SUMS"),
    )?;
    let sums = std::fs::read_to_string(copy.join("SHA256SUMS"))?;
    assert_eq!(sums.lines().count(), 2, "{sums}");
    download(
        &format!("{served}/isos/ks.cfg"),
        &admin,
        &copy.join("ks.cfg"),
    )?;
    download(
        &format!("{served}/isos/f40/Fedora%20%C3%A9.iso"),
        &admin,
        &copy.join("f40/Fedora é.iso"),
    )?;
    let checked = sha256sum_check(&copy)?;
    assert!(checked.contains("f40/Fedora é.iso: OK"), "{checked}");
    // A corrupted copy fails the check: the list is not a rubber stamp.
    std::fs::write(copy.join("ks.cfg"), b"tampered\n")?;
    assert!(sha256sum_check(&copy).is_err());

    // DELETE: 403 for the reader, 200 then 404 for the admin; the list follows.
    let (code, _) = request(
        "DELETE",
        &format!("{api}/isos/ks.cfg"),
        Some("reader:reader-pw"),
        None,
        &[],
    )?;
    assert_eq!(code, 403);
    let (code, body) = request(
        "DELETE",
        &format!("{api}/isos/ks.cfg"),
        Some(&admin),
        None,
        &[],
    )?;
    assert_eq!(code, 200, "{body}");
    let (code, _) = request(
        "DELETE",
        &format!("{api}/isos/ks.cfg"),
        Some(&admin),
        None,
        &[],
    )?;
    assert_eq!(code, 404);
    let (_, sums) = request(
        "GET",
        &format!("{served}/isos/SHA256SUMS"),
        Some(&admin),
        None,
        &[],
    )?;
    assert!(
        !sums.contains("ks.cfg") && sums.contains("Fedora é.iso"),
        "{sums}"
    );

    // Concurrent uploads into one repository: every acknowledged file is published.
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let url = format!("{api}/isos/race/{i}.txt");
            let admin = admin.clone();
            let file = d.join(format!("race-{i}.txt"));
            std::fs::write(&file, format!("file {i}\n")).map(|_| {
                std::thread::spawn(move || request("PUT", &url, Some(&admin), Some(&file), &[]))
            })
        })
        .collect::<std::io::Result<_>>()?;
    let mut acknowledged = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        let (code, body) = h.join().map_err(|_| anyhow::anyhow!("thread"))??;
        // One server serializes the changes of a repository: none conflicts.
        assert_eq!(code, 201, "race {i}: {body}");
        acknowledged.push(i);
    }
    for i in acknowledged {
        let (code, body) = request(
            "GET",
            &format!("{served}/isos/race/{i}.txt"),
            Some(&admin),
            None,
            &[],
        )?;
        assert_eq!(
            (code, body),
            (200, format!("file {i}\n")),
            "an acknowledged upload was lost"
        );
    }

    // Every write is audited, refused ones included; so are CLI writes.
    cli(
        &server,
        &[
            "files",
            "put",
            "--repo",
            "isos",
            ks.to_str().context("path")?,
        ],
    )?;
    let audit = cli(&server, &["audit", "--limit", "100"])?;
    for wanted in [
        "PUT files:isos/f40/Fedora é.iso",
        "DELETE files:isos/ks.cfg",
        "wharf files put",
    ] {
        assert!(
            audit.contains(wanted),
            "{wanted:?} not in the audit log:\n{audit}"
        );
    }
    assert!(audit.contains("failed"), "{audit}");
    Ok(())
}

/// nginx serving `root` with autoindex on, stopped on drop.
struct Nginx {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(root: &Path) -> Result<Nginx> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let p = dir.path().display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {p}/nginx.pid;\n\
             error_log {p}/error.log;\nevents {{ worker_connections 64; }}\n\
             http {{\n access_log off;\n client_body_temp_path {p}/body;\n proxy_temp_path {p}/proxy;\n\
             fastcgi_temp_path {p}/fcgi;\n uwsgi_temp_path {p}/uwsgi;\n scgi_temp_path {p}/scgi;\n\
             server {{ listen 127.0.0.1:{port}; root {}; autoindex on; charset utf-8; }}\n}}\n",
            root.display()
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .spawn()
            .context("nginx (nginx-light) must be installed")?;
        let nginx = Nginx {
            child,
            port,
            _dir: dir,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(nginx);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        anyhow::bail!("nginx did not start on port {port}")
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    wharf_core::Digest::sha256_of(bytes).hex().to_owned()
}

/// Sets a file's modification time (so a change is seen even within one second).
fn touch(path: &Path, date: &str) -> Result<()> {
    sh(Command::new("touch").arg("-d").arg(date).arg(path))?;
    Ok(())
}

fn sync(server: &WharfServer, remote: &str) -> Result<(bool, String)> {
    let out = Command::new(WHARF)
        .args(["sync", remote])
        .arg("--config")
        .arg(server.config_path())
        .arg("--data-dir")
        .arg(server.data_dir())
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    ))
}

#[test]
fn remotes_mirror_nginx_and_local_trees_incrementally_verified_by_sha256sums() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let up = d.join("upstream");
    let vmlinuz: Vec<u8> = (0..400_000u32).map(|i| (i % 241) as u8).collect();
    let squash: Vec<u8> = (0..24_000_000u32).map(|i| (i * 13 % 256) as u8).collect();
    let treeinfo = b"[general]\nfamily = Fedora\nversion = 40\n".to_vec();
    let unicode = "Überblick – café ✓.txt";
    write(&up.join("images/pxeboot/vmlinuz"), &vmlinuz)?;
    write(&up.join("images/pxeboot/initrd.img"), b"initrd")?;
    write(&up.join("LiveOS/squashfs.img"), &squash)?;
    write(&up.join(".treeinfo"), &treeinfo)?;
    write(&up.join("docs/ré sumé").join(unicode), b"non-ASCII names\n")?;
    // Checksum lists upstream: one at the root, one naming a nested path.
    write(
        &up.join("SHA256SUMS"),
        format!(
            "{}  .treeinfo\n{}  LiveOS/squashfs.img\n",
            sha256_hex(&treeinfo),
            sha256_hex(&squash)
        )
        .as_bytes(),
    )?;
    write(
        &up.join("images/SHA256SUMS"),
        format!("{} *pxeboot/vmlinuz\n", sha256_hex(&vmlinuz)).as_bytes(),
    )?;
    for f in ["images/pxeboot/vmlinuz", "LiveOS/squashfs.img", ".treeinfo"] {
        touch(&up.join(f), "2024-04-01 12:00:00 UTC")?;
    }
    let nginx = Nginx::start(&up)?;
    let config = d.join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "[[files.remotes]]\nname = \"f40\"\nurl = \"{}\"\ninsecure_http = true\nrepository = \"os/f40\"\n\n\
             [[files.remotes]]\nname = \"f40-local\"\nurl = \"{}\"\nrepository = \"os/f40-local\"\n",
            nginx.url(),
            up.display()
        ),
    )?;
    let server = WharfServer::start_with_config(WHARF, Some(&config))?;
    let (user, password) = server.credentials();
    let auth = format!("{user}:{password}");
    let base = format!("{}/files/os/f40", server.url());

    // First run: everything fetched, verified, published.
    let (ok, out) = sync(&server, "f40")?;
    assert!(ok, "{out}");
    assert!(
        out.contains("files-sync f40 -> os/f40: 6 files, 6 fetched")
            && out.contains("3 verified against SHA256SUMS")
            && out.contains("published"),
        "{out}"
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("files-sync")).count(),
        1,
        "{out}"
    );
    // Served back identical, the non-ASCII name included; then sha256sum -c on the copy.
    let copy = d.join("copy");
    for (path, bytes) in [
        ("images/pxeboot/vmlinuz", &vmlinuz),
        ("LiveOS/squashfs.img", &squash),
        (".treeinfo", &treeinfo),
    ] {
        download(&format!("{base}/{path}"), &auth, &copy.join(path))?;
        assert_eq!(&std::fs::read(copy.join(path))?, bytes, "{path}");
    }
    for path in [
        "images/pxeboot/initrd.img",
        "images/SHA256SUMS",
        "SHA256SUMS",
    ] {
        download(&format!("{base}/{path}"), &auth, &copy.join(path))?;
    }
    let encoded = format!(
        "docs/r%C3%A9%20sum%C3%A9/{}",
        unicode
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() || b == b'.' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            })
            .collect::<String>()
    );
    download(
        &format!("{base}/{encoded}"),
        &auth,
        &copy.join("docs/ré sumé").join(unicode),
    )?;
    let checked = sha256sum_check(&copy)?;
    assert_eq!(checked.matches(": OK").count(), 6, "{checked}");
    assert!(checked.contains(unicode), "{checked}");

    // Second run: nothing transferred, nothing published.
    let (ok, out) = sync(&server, "f40")?;
    assert!(ok, "{out}");
    assert!(
        out.contains("6 files, 0 fetched (0 bytes)")
            && out.contains("unchanged, nothing published"),
        "{out}"
    );

    // An upstream change is picked up: one file changed (its checksum too), one gone.
    let treeinfo2 = b"[general]\nfamily = Fedora\nversion = 40.1\n".to_vec();
    write(&up.join(".treeinfo"), &treeinfo2)?;
    touch(&up.join(".treeinfo"), "2024-05-01 12:00:00 UTC")?;
    write(
        &up.join("SHA256SUMS"),
        format!(
            "{}  .treeinfo\n{}  LiveOS/squashfs.img\n",
            sha256_hex(&treeinfo2),
            sha256_hex(&squash)
        )
        .as_bytes(),
    )?;
    std::fs::remove_file(up.join("images/pxeboot/initrd.img"))?;
    let (ok, out) = sync(&server, "f40")?;
    assert!(ok, "{out}");
    assert!(
        out.contains("5 files, 1 fetched (") && out.contains("published"),
        "{out}"
    );
    let (_, body) = request("GET", &format!("{base}/.treeinfo"), Some(&auth), None, &[])?;
    assert_eq!(body.as_bytes(), treeinfo2);
    let listed = cli(&server, &["files", "ls", "--repo", "os/f40"])?;
    assert!(!listed.contains("initrd.img"), "{listed}");
    let (_, sums) = request("GET", &format!("{base}/SHA256SUMS"), Some(&auth), None, &[])?;
    assert!(
        sums.contains(&sha256_hex(&treeinfo2)) && !sums.contains("initrd"),
        "{sums}"
    );

    // A new file corrupted against SHA256SUMS: refused, nothing published, the old one
    // served. (A checksum naming bytes the store already holds is answered from the
    // store without reading the body, so the list names a new version here.)
    let vmlinuz2: Vec<u8> = (0..400_000u32).map(|i| (i % 239) as u8).collect();
    write(
        &up.join("images/SHA256SUMS"),
        format!("{} *pxeboot/vmlinuz\n", sha256_hex(&vmlinuz2)).as_bytes(),
    )?;
    let mut bad = vmlinuz2.clone();
    bad[1000] ^= 0xff;
    write(&up.join("images/pxeboot/vmlinuz"), &bad)?;
    touch(
        &up.join("images/pxeboot/vmlinuz"),
        "2024-06-01 12:00:00 UTC",
    )?;
    let before = cli(&server, &["snapshot", "list", "os/f40"])?;
    let (ok, out) = sync(&server, "f40")?;
    assert!(!ok, "a corrupted file was accepted: {out}");
    assert!(
        out.contains("failed, nothing published") && out.contains("images/pxeboot/vmlinuz"),
        "{out}"
    );
    let after = cli(&server, &["snapshot", "list", "os/f40"])?;
    assert_eq!(before, after, "a failed run changed the snapshots");
    let served = d.join("served-vmlinuz");
    download(&format!("{base}/images/pxeboot/vmlinuz"), &auth, &served)?;
    assert_eq!(std::fs::read(&served)?, vmlinuz);

    // Uploads into a mirrored repository are refused.
    let (code, body) = request(
        "PUT",
        &format!("{}/api/v1/files/os/f40/x.txt", server.url()),
        Some(&auth),
        Some(&up.join(".treeinfo")),
        &[],
    )?;
    assert_eq!(code, 409, "{body}");

    // A local directory as the upstream: the same checks (the corrupted kernel
    // is refused there too); fixed, it mirrors, and a second run fetches nothing.
    let (ok, out) = sync(&server, "f40-local")?;
    assert!(!ok && out.contains("images/pxeboot/vmlinuz"), "{out}");
    write(&up.join("images/pxeboot/vmlinuz"), &vmlinuz2)?;
    let (ok, out) = sync(&server, "f40-local")?;
    // .treeinfo and squashfs.img are named by SHA256SUMS and already stored
    // (the HTTP mirror took them): recorded without being read.
    assert!(
        ok && out.contains("5 files, 3 fetched") && out.contains("3 verified"),
        "{out}"
    );
    let (ok, out) = sync(&server, "f40-local")?;
    assert!(
        ok && out.contains("0 fetched") && out.contains("unchanged"),
        "{out}"
    );
    let (_, body) = request(
        "GET",
        &format!("{}/files/os/f40-local/.treeinfo", server.url()),
        Some(&auth),
        None,
        &[],
    )?;
    assert_eq!(body.as_bytes(), treeinfo2);

    // The same remote as a job of the running server: the restored kernel
    // (new mtime, matching its SHA256SUMS line) is fetched and published.
    let out = cli(&server, &["jobs", "run", "files-sync:f40", "--wait"])?;
    assert!(!out.is_empty());
    let served = d.join("served-vmlinuz-2");
    download(&format!("{base}/images/pxeboot/vmlinuz"), &auth, &served)?;
    assert_eq!(std::fs::read(&served)?, vmlinuz2);
    let snapshots = cli(&server, &["snapshot", "list", "os/f40"])?;
    assert_ne!(snapshots, after, "the job published nothing");
    Ok(())
}
