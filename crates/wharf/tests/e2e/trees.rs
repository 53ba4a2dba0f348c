//! The tree surfaces (`/files`, `/rpm`, `/ostree`) as curl sees them: a snapshot is filled
//! through the snapshot seam beside the running server (as a format's sync or upload does),
//! published, and then read over HTTP — access, validators and 304, ranges, listings, the
//! grace period across a publish, rollback with `wharf snapshot publish`, and hostile paths.

use std::process::Command;
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use wharf_core::{RepoName, RepositoryKind, TreePath};
use wharf_snapshot::{Base, Snapshots};
use wharf_testkit::{run, WharfServer};

use crate::support::wharf_cli;

/// The snapshots of `server`'s own store, opened beside it.
fn store_of(rt: &tokio::runtime::Runtime, server: &WharfServer) -> Result<Snapshots> {
    rt.block_on(async {
        let dir = server.data_dir();
        let meta = wharf_meta::Meta::connect_existing(&format!(
            "sqlite:{}",
            dir.join("wharf.db").display()
        ))
        .await?;
        let blobs = wharf_blob::fs::open(dir.join("blobs")).await?;
        Ok(Snapshots::new(meta, Arc::new(blobs)))
    })
}

fn put(
    rt: &tokio::runtime::Runtime,
    staged: &wharf_snapshot::Staged,
    path: &str,
    body: &[u8],
) -> Result<()> {
    rt.block_on(staged.put_bytes(
        &TreePath::new(path)?,
        Bytes::copy_from_slice(body),
        None,
        1_700_000_000,
    ))?;
    Ok(())
}

/// `curl -s -i` with the given extra arguments; returns (status, headers, body).
fn curl(args: &[&str]) -> Result<(u16, String, Vec<u8>)> {
    let dir = tempfile::tempdir()?;
    let headers = dir.path().join("headers");
    let body = dir.path().join("body");
    let out = Command::new("curl")
        .args(["-s", "-o"])
        .arg(&body)
        .arg("-D")
        .arg(&headers)
        .args(["-w", "%{http_code}"])
        .args(args)
        .output()
        .context("run curl")?;
    let status: u16 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .with_context(|| format!("curl status: {}", String::from_utf8_lossy(&out.stderr)))?;
    Ok((
        status,
        std::fs::read_to_string(&headers).unwrap_or_default(),
        std::fs::read(&body).unwrap_or_default(),
    ))
}

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn published_snapshots_are_served_with_validators_ranges_listings_and_grace() -> Result<()> {
    let server = WharfServer::start(env!("CARGO_BIN_EXE_wharf"))?;
    let rt = tokio::runtime::Runtime::new()?;
    let snapshots = store_of(&rt, &server)?;
    let repo = RepoName::parse("pxe/fedora")?;
    let kernel: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let kickstart = b"url --url=http://mirror.invalid/fedora/\nreboot\n";

    let first = rt.block_on(snapshots.stage(&repo, RepositoryKind::Files, Base::Empty, "v1"))?;
    put(&rt, &first, "images/pxeboot/vmlinuz", &kernel)?;
    put(&rt, &first, "ks/server.ks", kickstart)?;
    put(&rt, &first, "LiveOS/squashfs.img", b"squash")?;
    put(&rt, &first, "names/caf\u{e9} & <tea>.txt", b"odd name")?;
    let base = format!("{}/files/pxe/fedora", server.url());
    let (user, password) = server.credentials();
    let auth = format!("{user}:{password}");

    // Staged: not served yet, even to the administrator.
    let (status, _, _) = curl(&["-u", &auth, &format!("{base}/ks/server.ks")])?;
    ensure!(status == 404, "a staged file was served: {status}");
    rt.block_on(first.publish())?;

    // Private by default: anonymous callers get a Basic challenge, the same for a
    // repository that does not exist.
    for url in [
        format!("{base}/ks/server.ks"),
        format!("{}/files/nothing/here", server.url()),
    ] {
        let (status, headers, _) = curl(&[&url])?;
        ensure!(status == 401, "anonymous GET {url}: {status}");
        ensure!(
            header(&headers, "www-authenticate").is_some_and(|v| v.starts_with("Basic ")),
            "no Basic challenge: {headers}"
        );
    }
    let (status, _, _) = curl(&[
        "-u",
        &format!("{user}:wrong"),
        &format!("{base}/ks/server.ks"),
    ])?;
    ensure!(status == 401, "wrong password: {status}");

    // A file, its validators, and 304 for both kinds of conditional request.
    let (status, headers, body) = curl(&["-u", &auth, &format!("{base}/images/pxeboot/vmlinuz")])?;
    ensure!(
        status == 200 && body == kernel,
        "vmlinuz: {status}, {} bytes",
        body.len()
    );
    let etag = header(&headers, "etag").context("no ETag")?.to_owned();
    let last_modified = header(&headers, "last-modified")
        .context("no Last-Modified")?
        .to_owned();
    ensure!(etag.starts_with("\"sha256:"), "ETag {etag}");
    ensure!(
        header(&headers, "accept-ranges") == Some("bytes"),
        "{headers}"
    );
    let inm = format!("If-None-Match: {etag}");
    let (status, headers, body) = curl(&[
        "-u",
        &auth,
        "-H",
        &inm,
        &format!("{base}/images/pxeboot/vmlinuz"),
    ])?;
    ensure!(status == 304 && body.is_empty(), "If-None-Match: {status}");
    ensure!(
        header(&headers, "etag") == Some(etag.as_str()),
        "304 without its ETag: {headers}"
    );
    let ims = format!("If-Modified-Since: {last_modified}");
    let (status, _, _) = curl(&[
        "-u",
        &auth,
        "-H",
        &ims,
        &format!("{base}/images/pxeboot/vmlinuz"),
    ])?;
    ensure!(status == 304, "If-Modified-Since: {status}");

    // Ranges: a slice, a suffix, and one past the end.
    let (status, headers, body) = curl(&[
        "-u",
        &auth,
        "-r",
        "100-199",
        &format!("{base}/images/pxeboot/vmlinuz"),
    ])?;
    ensure!(status == 206 && body == kernel[100..200], "range: {status}");
    ensure!(
        header(&headers, "content-range") == Some(&format!("bytes 100-199/{}", kernel.len())[..]),
        "{headers}"
    );
    let (status, _, body) = curl(&[
        "-u",
        &auth,
        "-r",
        "-10",
        &format!("{base}/images/pxeboot/vmlinuz"),
    ])?;
    ensure!(
        status == 206 && body == kernel[kernel.len() - 10..],
        "suffix range: {status}"
    );
    let (status, headers, _) = curl(&[
        "-u",
        &auth,
        "-r",
        "999999-",
        &format!("{base}/images/pxeboot/vmlinuz"),
    ])?;
    ensure!(status == 416, "range past the end: {status}");
    ensure!(
        header(&headers, "content-range") == Some(&format!("bytes */{}", kernel.len())[..]),
        "{headers}"
    );
    // HEAD: the headers alone.
    let (status, headers, body) = curl(&["-u", &auth, "-I", &format!("{base}/ks/server.ks")])?;
    // (curl -I writes the headers where the body would go.)
    ensure!(
        status == 200 && !String::from_utf8_lossy(&body).contains("reboot"),
        "HEAD: {status}"
    );
    ensure!(
        header(&headers, "content-length") == Some(&kickstart.len().to_string()[..]),
        "{headers}"
    );

    // Listings: HTML in a web server's shape, JSON on request, and a redirect to the slash.
    let (status, _, body) = curl(&["-u", &auth, &format!("{base}/")])?;
    let html = String::from_utf8(body)?;
    ensure!(status == 200, "top listing: {status}");
    for link in [
        "href=\"images/\"",
        "href=\"ks/\"",
        "href=\"LiveOS/\"",
        "href=\"names/\"",
    ] {
        ensure!(html.contains(link), "{link} missing from {html}");
    }
    let (_, _, body) = curl(&["-u", &auth, &format!("{base}/names/")])?;
    let html = String::from_utf8(body)?;
    ensure!(
        html.contains("href=\"caf%C3%A9%20%26%20%3Ctea%3E.txt\"") && html.contains("&lt;tea&gt;"),
        "names are not escaped: {html}"
    );
    let (status, headers, _) = curl(&["-u", &auth, &format!("{base}/images")])?;
    ensure!(status == 301, "directory without a slash: {status}");
    ensure!(
        header(&headers, "location") == Some("/files/pxe/fedora/images/"),
        "{headers}"
    );
    let (_, _, body) = curl(&["-u", &auth, &format!("{base}/images/pxeboot/?format=json")])?;
    let listing: serde_json::Value = serde_json::from_slice(&body)?;
    ensure!(
        listing[0]["name"] == "vmlinuz" && listing[0]["size"] == kernel.len() as u64,
        "JSON listing: {listing}"
    );

    // Hostile paths name nothing, raw or encoded.
    for hostile in [
        "/files/pxe/fedora/../../../etc/passwd",
        "/files/pxe/fedora/%2e%2e/x",
        "/files/pxe/fedora/a%00b",
    ] {
        let (status, _, _) = curl(&[
            "-u",
            &auth,
            "--path-as-is",
            &format!("{}{hostile}", server.url()),
        ])?;
        ensure!(status == 404 || status == 400, "{hostile}: {status}");
    }
    // Read-only surface.
    let (status, headers, _) =
        curl(&["-u", &auth, "-X", "DELETE", &format!("{base}/ks/server.ks")])?;
    ensure!(
        status == 405 && header(&headers, "allow") == Some("GET, HEAD"),
        "DELETE: {status}"
    );

    // The next snapshot changes the kernel and drops the kickstart. The kickstart stays
    // servable for the grace period (a client that listed it still gets it).
    let second =
        rt.block_on(snapshots.stage(&repo, RepositoryKind::Files, Base::Published, "v2"))?;
    put(&rt, &second, "images/pxeboot/vmlinuz", b"new kernel")?;
    rt.block_on(second.remove(&[TreePath::new("ks/server.ks")?]))?;
    rt.block_on(second.publish())?;
    let (_, _, body) = curl(&["-u", &auth, &format!("{base}/images/pxeboot/vmlinuz")])?;
    ensure!(body == b"new kernel", "the new snapshot is not served");
    let (status, _, body) = curl(&["-u", &auth, &format!("{base}/ks/server.ks")])?;
    ensure!(
        status == 200 && body == kickstart,
        "the old kickstart vanished within grace: {status}"
    );
    let (_, _, body) = curl(&["-u", &auth, &format!("{base}/")])?;
    ensure!(
        !String::from_utf8(body)?.contains("href=\"ks/\""),
        "listings show the published snapshot only"
    );

    // The CLI sees both and rolls back.
    let listed = run(&mut wharf_cli(&server, &["snapshot", "list", "pxe/fedora"]))?;
    ensure!(
        listed.stdout.contains("published") && listed.stdout.contains("retired"),
        "wharf snapshot list: {listed}"
    );
    run(&mut wharf_cli(
        &server,
        &["snapshot", "publish", "pxe/fedora", "1"],
    ))?;
    let (_, _, body) = curl(&["-u", &auth, &format!("{base}/images/pxeboot/vmlinuz")])?;
    ensure!(
        body == kernel,
        "rollback did not serve the first snapshot again"
    );

    // The same snapshot machinery behind /ostree, which lists nothing.
    let os = RepoName::parse("os/iot")?;
    let tree = rt.block_on(snapshots.stage(&os, RepositoryKind::Ostree, Base::Empty, "commit"))?;
    put(&rt, &tree, "refs/heads/stable", b"0123abcd\n")?;
    rt.block_on(tree.publish())?;
    let ostree = format!("{}/ostree/os/iot", server.url());
    let (status, _, body) = curl(&["-u", &auth, &format!("{ostree}/refs/heads/stable")])?;
    ensure!(
        status == 200 && body == b"0123abcd\n",
        "ostree ref: {status}"
    );
    let (status, _, _) = curl(&["-u", &auth, &format!("{ostree}/refs/")])?;
    ensure!(status == 404, "ostree directory listed: {status}");
    // A name holds one kind: the OSTree repository is not a file repository.
    let (status, _, _) = curl(&[
        "-u",
        &auth,
        &format!("{}/files/os/iot/refs/heads/stable", server.url()),
    ])?;
    ensure!(status == 404, "served across kinds: {status}");
    Ok(())
}
