//! The lookaside cache end to end: stock rpkg (its `pyrpkg.lookaside` client,
//! from PyPI, over pycurl) uploads and downloads sources over mutual TLS with
//! a client certificate, as dist-git packagers do; curl does the same with
//! Basic credentials; a wrong checksum, hostile names and missing rights are
//! refused and leave nothing behind.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};

use super::tls::{curl, make_ca_and_cert, sh};

const WHARF: &str = env!("CARGO_BIN_EXE_wharf");
const ADMIN_PASSWORD: &str = "lookaside-admin-pw";
/// Who may do what: packagers push, a reader reads one package, and rpkg's
/// downloads are anonymous (as `fedpkg sources` from a public cache).
const GRANTS: &str = r#"
[[auth.grants]]
subject = "user:packager"
repositories = "lookaside/**"
actions = ["pull", "push"]

[[auth.grants]]
subject = "user:reader"
repositories = "lookaside/rpms/tool"
actions = ["pull"]

[[auth.grants]]
subject = "anonymous"
repositories = "lookaside/rpms/hello"
actions = ["pull"]

[[auth.grants]]
subject = "anonymous"
repositories = "lookaside/legacy"
actions = ["pull"]
"#;

/// The rpkg release whose client code the test drives.
const RPKG: &str = "rpkg==1.70";

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wharf(dir: &Path, args: &[&str]) -> Result<String> {
    sh(Command::new(WHARF)
        .args(args)
        .arg("--config")
        .arg(dir.join("wharf.toml"))
        .arg("--data-dir")
        .arg(dir.join("data")))
}

fn start(dir: &Path) -> Result<Server> {
    std::fs::write(dir.join("admin-pw"), ADMIN_PASSWORD)?;
    let config = format!(
        "[auth]\nadmin_password_file = \"{}\"\n[tls]\nclient_ca = \"{}\"\n\
         [[tls.certificates]]\nhostnames = [\"localhost\"]\ncert = \"{}\"\nkey = \"{}\"\n\
         [lookaside]\nmax_upload_bytes = 3000000\n{GRANTS}",
        dir.join("admin-pw").display(),
        dir.join("clients-ca.crt").display(),
        dir.join("server.crt").display(),
        dir.join("server.key").display(),
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
    Ok(Server { child, port })
}

/// Fetches rpkg's wheel from PyPI and unpacks it: its lookaside client needs
/// only pycurl and six (Debian's python3-pycurl and python3-six), not the
/// whole of rpkg's dependencies, so the test loads `pyrpkg.lookaside` alone.
fn fetch_rpkg(dir: &Path) -> Result<PathBuf> {
    let wheels = dir.join("wheels");
    let mut fetched = false;
    let mut why = String::new();
    for python in ["python3", "/usr/bin/python3"] {
        let out = Command::new(python)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-q",
                RPKG,
                "-d",
            ])
            .arg(&wheels)
            .output();
        match out {
            Ok(o) if o.status.success() => {
                fetched = true;
                break;
            }
            Ok(o) => why += &String::from_utf8_lossy(&o.stderr),
            Err(e) => why += &format!("{python}: {e}\n"),
        }
    }
    if !fetched {
        bail!("cannot download {RPKG} with pip (install python3-pip): {why}");
    }
    let site = dir.join("site");
    sh(Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import sys, zipfile, glob; zipfile.ZipFile(glob.glob(sys.argv[1] + '/rpkg-*.whl')[0]).extractall(sys.argv[2])",
        ])
        .arg(&wheels)
        .arg(&site))?;
    Ok(site)
}

/// Drives rpkg's `CGILookasideCache` as `fedpkg upload` and `fedpkg sources` do.
const RPKG_CLIENT: &str = r#"
import sys, types, hashlib, os
site, base, cert, ca, hashtype, name, path, out = sys.argv[1:9]
pkg = types.ModuleType("pyrpkg"); pkg.__path__ = [site + "/pyrpkg"]; sys.modules["pyrpkg"] = pkg
import pycurl
# rpkg's download trusts the system's CAs; this stands in for adding the
# test's private CA to them (uploads take `ca_cert` explicitly).
_Curl = pycurl.Curl
def _trusting_curl():
    c = _Curl(); c.setopt(pycurl.CAINFO, ca); return c
pycurl.Curl = _trusting_curl
from pyrpkg.lookaside import CGILookasideCache
from pyrpkg.errors import AlreadyUploadedError
cache = CGILookasideCache(hashtype, base, base + "/upload.cgi", client_cert=cert, ca_cert=ca)
digest = cache.hash_file(path)
filename = os.path.basename(path)
assert not cache.remote_file_exists(name, filename, digest), "exists before the upload"
cache.upload(name, path, digest)
assert cache.remote_file_exists(name, filename, digest), "missing after the upload"
try:
    cache.upload(name, path, digest)
    raise SystemExit("a second upload was not reported as already uploaded")
except AlreadyUploadedError:
    pass
cache.download(name, filename, digest, out)
assert cache.file_is_valid(out, digest)
assert int(os.stat(out).st_mtime) == int(os.stat(path).st_mtime), "mtime not kept"
print(cache.get_download_url(name, filename, digest, hashtype))
"#;

#[test]
fn rpkg_and_curl_upload_and_download_sources_over_mtls_and_basic() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();

    make_ca_and_cert(d, "server", &["localhost"])?;
    make_ca_and_cert(d, "clients", &["packager"])?;
    // pycurl's SSLCERT alone (what rpkg sets) wants the key in the same file,
    // as in a packager's ~/.fedora.cert.
    std::fs::write(
        d.join("packager.pem"),
        std::fs::read_to_string(d.join("clients.leaf"))?
            + &std::fs::read_to_string(d.join("clients.key"))?,
    )?;
    let site = fetch_rpkg(d)?;
    let server = start(d)?;
    wharf(d, &["user", "add", "packager", "--robot"])?;
    let mut add = Command::new(WHARF);
    add.args(["user", "add", "reader", "--password-stdin", "--config"])
        .arg(d.join("wharf.toml"))
        .arg("--data-dir")
        .arg(d.join("data"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let mut child = add.spawn()?;
    std::io::Write::write_all(child.stdin.as_mut().context("stdin")?, b"reader-pw\n")?;
    drop(child.stdin.take());
    assert!(child.wait()?.success(), "user add reader");

    let base = format!("https://localhost:{}/lookaside", server.port);
    let ca = d.join("server-ca.crt");
    let ca = ca.to_str().context("path")?;

    // rpkg over mutual TLS, SHA-512 and a namespaced package, then legacy MD5.
    for (hashtype, name, file, size) in [
        ("sha512", "rpms/hello", "hello-2.12.tar.gz", 1_500_000usize),
        ("md5", "legacy", "hello-old.patch", 3_000),
    ] {
        let src = d.join(file);
        let bytes: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&src, &bytes)?;
        let out = d.join(format!("{file}.downloaded"));
        let url = sh(Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(RPKG_CLIENT)
            .arg(&site)
            .arg(&base)
            .arg(d.join("packager.pem"))
            .arg(ca)
            .args([hashtype, name])
            .arg(&src)
            .arg(&out))
        .with_context(|| std::fs::read_to_string(d.join("server.log")).unwrap_or_default())?;
        assert_eq!(std::fs::read(&out)?, bytes, "{hashtype}: downloaded bytes");
        assert!(
            url.trim()
                .starts_with(&format!("{base}/{name}/{file}/{hashtype}/")),
            "{url}"
        );
    }

    // curl with Basic: the existence check, a wrong checksum, the real upload.
    let data = b"#!/bin/sh\necho patched\n".repeat(100);
    std::fs::write(d.join("fix.patch"), &data)?;
    let sha512 = sha512_hex(&d.join("fix.patch"))?;
    let upload = |auth: &[&str], fields: &[String]| -> Result<(String, String)> {
        let mut args: Vec<String> = vec![
            "--cacert".into(),
            ca.into(),
            "-w".into(),
            "\n%{http_code}".into(),
        ];
        args.extend(auth.iter().map(|s| s.to_string()));
        for f in fields {
            args.push("-F".into());
            args.push(f.clone());
        }
        args.push(format!("{base}/upload.cgi"));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (_, out) = curl(&refs)?;
        let (body, code) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
        Ok((code.to_owned(), body.trim().to_owned()))
    };
    let admin = ["-u".to_string(), format!("admin:{ADMIN_PASSWORD}")];
    let admin: Vec<&str> = admin.iter().map(String::as_str).collect();
    let check = vec![
        "name=rpms/tool".to_string(),
        format!("sha512sum={sha512}"),
        "filename=fix.patch".into(),
    ];
    assert_eq!(upload(&admin, &check)?, ("200".into(), "Missing".into()));
    // Anonymous: a Basic challenge, nothing else.
    let (code, _) = upload(&[], &check)?;
    assert_eq!(code, "401");
    let file_field = format!("file=@{}", d.join("fix.patch").display());
    let wrong = format!("sha512sum={}", "0".repeat(128));
    let (code, body) = upload(
        &admin,
        &["name=rpms/tool".into(), wrong, file_field.clone()],
    )?;
    assert_eq!(code, "400", "{body}");
    assert!(body.contains("checksum mismatch"), "{body}");
    assert_eq!(
        upload(&admin, &check)?.1,
        "Missing",
        "a refused upload left a file"
    );
    // A reader may check and download but not upload.
    let reader = ["-u", "reader:reader-pw"];
    assert_eq!(upload(&reader, &check)?, ("200".into(), "Missing".into()));
    let good = vec![
        "name=rpms/tool".to_string(),
        format!("sha512sum={sha512}"),
        file_field.clone(),
        "mtime=1700000000".into(),
    ];
    assert_eq!(upload(&reader, &good)?.0, "403");
    let (code, body) = upload(&admin, &good)?;
    assert_eq!(
        (code.as_str(), body.starts_with("Stored fix.patch")),
        ("200", true),
        "{body}"
    );
    assert_eq!(upload(&reader, &check)?.1, "Available");
    // The checksum field must come before the file: authorization reads it first.
    let late = vec![
        "name=rpms/tool".to_string(),
        file_field.clone(),
        format!("sha512sum={sha512}"),
    ];
    assert_eq!(upload(&admin, &late)?.0, "400");

    // Downloads: whole, ranged, conditional; a reader outside its grant is refused.
    let url = format!("{base}/rpms/tool/fix.patch/sha512/{sha512}/fix.patch");
    let get = |extra: &[&str], url: &str| -> Result<(String, String)> {
        let mut args = vec![
            "--cacert",
            ca,
            "-u",
            "reader:reader-pw",
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
    let (code, headers) = get(&[], &url)?;
    assert_eq!(code, "200", "{headers}");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("last-modified: tue, 14 nov 2023 22:13:20 gmt"),
        "{headers}"
    );
    let etag = headers
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("etag:")
                .then(|| l[5..].trim().to_owned())
        })
        .context("no ETag")?;
    let (code, headers) = get(&["-r", "10-19"], &url)?;
    assert_eq!(code, "206");
    assert!(
        headers.contains(&format!("bytes 10-19/{}", data.len())),
        "{headers}"
    );
    let (code, headers) = get(&["-r", "999999-"], &url)?;
    assert_eq!(code, "416");
    assert!(
        headers.contains(&format!("bytes */{}", data.len())),
        "{headers}"
    );
    let inm = format!("If-None-Match: {etag}");
    assert_eq!(get(&["-H", &inm], &url)?.0, "304");
    let (_, out) = curl(&["--cacert", ca, "-u", "reader:reader-pw", &url])?;
    assert_eq!(out.as_bytes(), &data[..]);
    let legacy = format!(
        "{base}/legacy/hello-old.patch/{}/hello-old.patch",
        md5_hex(&d.join("hello-old.patch"))?
    );
    assert_eq!(get(&[], &legacy)?.0, "200", "the oldest URL form");
    let secret = format!("{base}/rpms/secret/fix.patch/sha512/{sha512}/fix.patch");
    assert_eq!(
        get(&[], &secret)?.0,
        "403",
        "reader has no grant on rpms/secret"
    );
    // Anonymous downloads need a grant.
    let (_, code) = curl(&[
        "--cacert",
        ca,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &url,
    ])?;
    assert_eq!(code, "401");

    // Hostile names: refused with 400, never looked up.
    for (fields, what) in [
        (
            vec![
                "name=../../etc".to_string(),
                format!("sha512sum={sha512}"),
                "filename=passwd".into(),
            ],
            "name",
        ),
        (
            vec![
                "name=rpms/tool".to_string(),
                format!("sha512sum={sha512}"),
                "filename=../fix.patch".into(),
            ],
            "filename",
        ),
        (
            vec![
                "name=a/b/c".to_string(),
                format!("sha512sum={sha512}"),
                "filename=x".into(),
            ],
            "deep name",
        ),
        (
            vec![
                "name=rpms/tool".to_string(),
                "sha512sum=abc".into(),
                "filename=x".into(),
            ],
            "short checksum",
        ),
    ] {
        assert_eq!(upload(&admin, &fields)?.0, "400", "{what}");
    }
    for path in [
        format!("rpms/tool/%2e%2e/sha512/{sha512}/%2e%2e"),
        format!("rpms/tool/a%00b/sha512/{sha512}/a%00b"),
        format!("rpms/tool/fix.patch/sha512/{}/fix.patch", "z".repeat(128)),
    ] {
        let (code, _) = get(&["--path-as-is"], &format!("{base}/{path}"))?;
        assert_eq!(code, "400", "{path}");
    }
    // Over the size limit: 413, and nothing kept.
    std::fs::write(d.join("big.tar"), vec![1u8; 3_100_000])?;
    let big = vec![
        "name=rpms/tool".to_string(),
        format!("sha512sum={}", sha512_hex(&d.join("big.tar"))?),
        format!("file=@{}", d.join("big.tar").display()),
    ];
    assert_eq!(upload(&admin, &big)?.0, "413");
    Ok(())
}

fn sha512_hex(path: &Path) -> Result<String> {
    let out = sh(Command::new("sha512sum").arg(path))?;
    Ok(out
        .split_whitespace()
        .next()
        .context("sha512sum")?
        .to_owned())
}

fn md5_hex(path: &Path) -> Result<String> {
    let out = sh(Command::new("md5sum").arg(path))?;
    Ok(out.split_whitespace().next().context("md5sum")?.to_owned())
}
