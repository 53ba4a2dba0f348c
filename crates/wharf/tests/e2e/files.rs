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
