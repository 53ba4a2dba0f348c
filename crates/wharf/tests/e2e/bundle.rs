//! Air-gapped transfer: `wharf export` writes a bundle from one Wharf and `wharf import` brings it
//! into a fresh one, where skopeo sees the same digests; the bundle is also an OCI layout that
//! `skopeo copy oci:…` reads; a corrupted or truncated file is refused with nothing imported; a
//! second import changes nothing; `--since` writes fewer bytes and imports on top of its parent;
//! an interrupted export resumes; and skopeo `dir:` trees and plain OCI layouts import too.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use wharf_testkit::fixture::{dir_manifest_digest, sha256_digest, ImageSpec};
use wharf_testkit::{run, run_expect_failure, CmdOutput, WharfServer};

use crate::support::{
    cosign, inspect_raw, layout, list_tags, scratch, skopeo, skopeo_copy, wharf_cli,
};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_wharf"))
}

/// Waits out the server's one-second tag lookup cache: the import is another process.
fn settle() {
    std::thread::sleep(std::time::Duration::from_millis(1200));
}

fn last_line(out: &CmdOutput) -> &str {
    out.stdout.lines().last().unwrap_or("")
}

fn digest_at(server: &WharfServer, repo_tag: &str) -> Result<String> {
    Ok(sha256_digest(&inspect_raw(&format!(
        "docker://{}/{repo_tag}",
        server.host()
    ))?))
}

/// Bytes of every file under `dir`.
fn du(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            du(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    run(std::process::Command::new("cp").arg("-a").arg(from).arg(to))?;
    Ok(())
}

/// The path of the biggest file under `blobs/sha256` (a layer).
fn biggest_blob(bundle: &Path) -> Result<PathBuf> {
    let mut best: Option<(u64, PathBuf)> = None;
    for entry in fs::read_dir(bundle.join("blobs/sha256"))? {
        let entry = entry?;
        let len = entry.metadata()?.len();
        if best.as_ref().is_none_or(|(l, _)| len > *l) {
            best = Some((len, entry.path()));
        }
    }
    best.map(|(_, p)| p).context("no blobs")
}

/// Refused with exit 2, naming `needle`; B's repositories are still unknown.
fn refused(server: &WharfServer, bundle: &Path, needle: &str) -> Result<()> {
    let out = run_expect_failure(&mut wharf_cli(
        server,
        &["import", bundle.to_str().context("path")?],
    ))?;
    ensure!(out.status.code() == Some(2), "{out}");
    ensure!(out.stderr.contains(needle), "expected {needle:?}:\n{out}");
    ensure!(!out.stdout.contains("stored"), "wrote something:\n{out}");
    settle();
    for repo in ["team/app", "base/os"] {
        let tags = run_expect_failure(skopeo().args([
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{}/{repo}", server.host()),
        ]))?;
        ensure!(!tags.status.success(), "{repo} became visible:\n{tags}");
    }
    Ok(())
}

#[test]
fn export_then_import_into_a_fresh_wharf_keeps_every_digest() -> Result<()> {
    let tmp = scratch()?;
    let mut src = layout(tmp.path(), "src")?;
    let a = WharfServer::start(bin())?;
    let push = |from: &str, to: &str, all: bool| -> Result<()> {
        let flags: &[&str] = if all { &["--all"] } else { &[] };
        skopeo_copy(from, &format!("docker://{}/{to}", a.host()), flags)?;
        Ok(())
    };
    let spec = ImageSpec::new(2, 256 * 1024);
    for tag in ["v1", "v2"] {
        src.add_image(tag, &spec)?;
        push(&src.reference(tag), &format!("team/app:{tag}"), false)?;
    }
    src.add_two_arch_index("1.0", 2, 64 * 1024)?;
    push(&src.reference("1.0"), "base/os:1.0", true)?;
    push(&src.reference("v1"), "other/skipped:v1", false)?;
    let refs = ["team/app:v1", "team/app:v2", "base/os:1.0"];

    let bundle = tmp.path().join("bundle");
    let out = run(&mut wharf_cli(
        &a,
        &[
            "export",
            bundle.to_str().context("path")?,
            "--repository",
            "team/*",
            "--repository",
            "base/**",
        ],
    ))?;
    // v1, v2 (config + 2 layers each), the index with two images (config + 2 layers each).
    ensure!(
        last_line(&out).starts_with("exported 2 repositories, 3 tags, 5 manifests, 12 blobs"),
        "{out}"
    );
    ensure!(
        out.stdout.contains("wrote sha256:"),
        "no progress lines:\n{out}"
    );
    ensure!(bundle.join("wharf-bundle.json.sha256").is_file());
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(bundle.join("wharf-bundle.json"))?)?;
    ensure!(
        index["format"] == "wharf-bundle" && index["version"] == 1,
        "{index}"
    );
    ensure!(
        !fs::read_to_string(bundle.join("index.json"))?.contains("other/skipped"),
        "the pattern did not filter"
    );

    // The layout view: skopeo reads `oci:BUNDLE:REPOSITORY:TAG` with the same digests.
    for repo_tag in refs {
        let raw = run(skopeo()
            .args(["inspect", "--raw"])
            .arg(format!("oci:{}:{repo_tag}", bundle.display())))?;
        ensure!(
            sha256_digest(raw.stdout.as_bytes()) == digest_at(&a, repo_tag)?,
            "{repo_tag}: the layout view has another manifest"
        );
    }
    let b = WharfServer::start(bin())?;
    skopeo_copy(
        &format!("oci:{}:team/app:v2", bundle.display()),
        &format!("docker://{}/layout/app:v2", b.host()),
        &[],
    )?;
    ensure!(digest_at(&b, "layout/app:v2")? == digest_at(&a, "team/app:v2")?);

    // A corrupted layer, a truncated one, a tampered index: refused, nothing imported.
    let corrupt = tmp.path().join("corrupt");
    copy_dir(&bundle, &corrupt)?;
    let layer = biggest_blob(&corrupt)?;
    let mut bytes = fs::read(&layer)?;
    bytes[1000] ^= 0xff;
    fs::write(&layer, &bytes)?;
    refused(&b, &corrupt, "corrupted")?;
    bytes[1000] ^= 0xff;
    fs::write(&layer, &bytes[..bytes.len() - 1])?;
    refused(&b, &corrupt, "truncated")?;
    fs::write(&layer, &bytes)?;
    let index_text = fs::read_to_string(corrupt.join("wharf-bundle.json"))?;
    fs::write(
        corrupt.join("wharf-bundle.json"),
        index_text.replace("\"v1\"", "\"v9\""),
    )?;
    refused(&b, &corrupt, "wharf-bundle.json.sha256")?;

    let out = run(&mut wharf_cli(
        &b,
        &["import", bundle.to_str().context("path")?],
    ))?;
    ensure!(out.stdout.contains("verified "), "{out}");
    ensure!(
        last_line(&out).starts_with("imported bundle ")
            // team/app:v2's blobs came in with the layout copy above: linked, not stored again.
            && last_line(&out).contains("9 blobs stored")
            && last_line(&out).contains("3 linked")
            && last_line(&out).contains("5 manifests recorded, 3 tags set"),
        "{out}"
    );
    settle();
    for repo_tag in refs {
        ensure!(
            digest_at(&b, repo_tag)? == digest_at(&a, repo_tag)?,
            "{repo_tag}: imported digest differs"
        );
    }
    ensure!(list_tags(&format!("docker://{}/team/app", b.host()))? == ["v1", "v2"]);
    let again = run(&mut wharf_cli(
        &b,
        &["import", bundle.to_str().context("path")?],
    ))?;
    ensure!(
        last_line(&again).starts_with("nothing to import"),
        "{again}"
    );

    // --since: only the new tag's manifest and blobs; it imports on top of its parent, and is
    // refused (naming the parent) where the parent was never imported.
    src.add_image("v3", &spec)?;
    push(&src.reference("v3"), "team/app:v3", false)?;
    let delta = tmp.path().join("delta");
    let out = run(&mut wharf_cli(
        &a,
        &[
            "export",
            delta.to_str().context("path")?,
            "--repository",
            "team/app",
            "--since",
            bundle.to_str().context("path")?,
        ],
    ))?;
    ensure!(
        last_line(&out).starts_with("exported 1 repository, 3 tags, 3 manifests, 9 blobs")
            && last_line(&out).contains("4 files written")
            && last_line(&out).contains("8 left to"),
        "{out}"
    );
    ensure!(
        du(&delta)? < du(&bundle)? / 2,
        "the --since bundle is not smaller"
    );
    let c = WharfServer::start(bin())?;
    let out = run_expect_failure(&mut wharf_cli(
        &c,
        &["import", delta.to_str().context("path")?],
    ))?;
    ensure!(
        out.status.code() == Some(2) && out.stderr.contains("import that bundle first"),
        "{out}"
    );
    let out = run(&mut wharf_cli(
        &b,
        &["import", delta.to_str().context("path")?],
    ))?;
    ensure!(last_line(&out).contains("3 blobs stored"), "{out}");
    settle();
    ensure!(digest_at(&b, "team/app:v3")? == digest_at(&a, "team/app:v3")?);

    // An interrupted export (index files not yet written, one blob missing, one half-written
    // under its temporary name) is refused by import, then resumed: the complete files are kept.
    let resumed = tmp.path().join("resumed");
    copy_dir(&bundle, &resumed)?;
    fs::remove_file(resumed.join("wharf-bundle.json.sha256"))?;
    let gone = biggest_blob(&resumed)?;
    let partial = resumed.join(".partial");
    fs::create_dir_all(&partial)?;
    fs::write(partial.join("half"), &fs::read(&gone)?[..100])?;
    fs::remove_file(&gone)?;
    let out = run_expect_failure(&mut wharf_cli(
        &c,
        &["import", resumed.to_str().context("path")?],
    ))?;
    ensure!(out.stderr.contains("unfinished export"), "{out}");
    let out = run(&mut wharf_cli(
        &a,
        &[
            "export",
            resumed.to_str().context("path")?,
            "--repository",
            "team/*",
            "--repository",
            "base/os",
        ],
    ))?;
    // v3 is new since the first bundle: its manifest and 3 blobs, and the missing layer.
    ensure!(
        last_line(&out).contains("5 files written") && last_line(&out).contains("16 kept"),
        "{out}"
    );
    ensure!(!partial.exists(), "the temporary directory stayed");
    let out = run(&mut wharf_cli(
        &c,
        &["import", resumed.to_str().context("path")?],
    ))?;
    ensure!(last_line(&out).contains("4 tags set"), "{out}");
    settle();
    ensure!(digest_at(&c, "base/os:1.0")? == digest_at(&a, "base/os:1.0")?);

    for server in [&b, &c] {
        let check = server.check()?;
        ensure!(check.status.success(), "{check}");
    }
    Ok(())
}

#[test]
fn imports_skopeo_dir_trees_and_plain_oci_layouts() -> Result<()> {
    let tmp = scratch()?;
    let mut src = layout(tmp.path(), "src")?;
    let image = src.add_image("v1", &ImageSpec::new(2, 64 * 1024))?;
    let multi = src.add_two_arch_index("1.0", 1, 32 * 1024)?;
    let server = WharfServer::start(bin())?;

    // seed 001's USB flow: `skopeo copy … dir:` on one side, `wharf import` on the other.
    let single = tmp.path().join("single");
    run(skopeo()
        .arg("copy")
        .arg(src.reference("v1"))
        .arg(format!("dir:{}", single.display())))?;
    let all = tmp.path().join("all");
    run(skopeo()
        .args(["copy", "--all"])
        .arg(src.reference("1.0"))
        .arg(format!("dir:{}", all.display())))?;

    let out = run_expect_failure(&mut wharf_cli(
        &server,
        &["import", single.to_str().context("path")?],
    ))?;
    ensure!(out.stderr.contains("--repository NAME:TAG"), "{out}");
    let out = run(&mut wharf_cli(
        &server,
        &[
            "import",
            single.to_str().context("path")?,
            "--repository",
            "usb/app:v1",
        ],
    ))?;
    ensure!(last_line(&out).starts_with("imported skopeo dir "), "{out}");
    run(&mut wharf_cli(
        &server,
        &[
            "import",
            all.to_str().context("path")?,
            "--repository",
            "usb/os:1.0",
        ],
    ))?;
    settle();
    ensure!(digest_at(&server, "usb/app:v1")? == dir_manifest_digest(&single)?);
    ensure!(digest_at(&server, "usb/app:v1")? == image.manifest.digest);
    ensure!(digest_at(&server, "usb/os:1.0")? == multi.index.digest);

    // A damaged dir: file is refused by the digest it is named by.
    let layer = &image.layers[0].digest;
    let path = single.join(layer.trim_start_matches("sha256:"));
    let mut bytes = fs::read(&path)?;
    bytes[10] ^= 1;
    fs::write(&path, &bytes)?;
    let out = run_expect_failure(&mut wharf_cli(
        &server,
        &[
            "import",
            single.to_str().context("path")?,
            "--repository",
            "usb/broken:v1",
        ],
    ))?;
    ensure!(out.stderr.contains("corrupted"), "{out}");

    // A plain OCI layout whose references are bare tags goes under --repository.
    let out = run_expect_failure(&mut wharf_cli(
        &server,
        &["import", src.path().to_str().context("path")?],
    ))?;
    ensure!(out.stderr.contains("--repository NAME"), "{out}");
    let out = run(&mut wharf_cli(
        &server,
        &[
            "import",
            src.path().to_str().context("path")?,
            "--repository",
            "plain/app",
        ],
    ))?;
    ensure!(last_line(&out).starts_with("imported OCI layout "), "{out}");
    settle();
    ensure!(
        list_tags(&format!("docker://{}/plain/app", server.host()))?
            == ["1.0", "1.0-amd64", "1.0-arm64", "v1"]
    );
    for tag in ["v1", "1.0", "1.0-arm64"] {
        ensure!(digest_at(&server, &format!("plain/app:{tag}"))? == src.tagged_digest(tag)?);
    }
    let check = server.check()?;
    ensure!(check.status.success(), "{check}");
    Ok(())
}

/// `wharf import --verify-key` takes a bundle only when every tag in it has a cosign signature
/// (carried in the bundle) that the key verifies: an unsigned tag or another key's signature
/// refuses the whole import, and nothing becomes visible.
#[test]
fn import_with_a_verify_key_takes_only_signed_images() -> Result<()> {
    let tmp = scratch()?;
    let a = WharfServer::start(bin())?;
    let mut src = layout(tmp.path(), "src")?;
    src.add_image("signed", &ImageSpec::new(1, 8 * 1024))?;
    src.add_image("unsigned", &ImageSpec::new(1, 9 * 1024))?;
    skopeo_copy(
        &src.reference("signed"),
        &format!("docker://{}/team/app:signed", a.host()),
        &[],
    )?;
    skopeo_copy(
        &src.reference("unsigned"),
        &format!("docker://{}/team/other:unsigned", a.host()),
        &[],
    )?;
    let keys = tmp.path().join("keys");
    let stranger = tmp.path().join("stranger");
    for dir in [&keys, &stranger] {
        fs::create_dir_all(dir)?;
        run(cosign(dir).arg("generate-key-pair"))?;
    }
    let (user, password) = a.credentials();
    let signed = digest_at(&a, "team/app:signed")?;
    run(cosign(&keys).args([
        "sign",
        "--key",
        "cosign.key",
        "--tlog-upload=false",
        "--allow-insecure-registry",
        "--allow-http-registry",
        "--registry-username",
        &user,
        "--registry-password",
        &password,
        &format!("{}/team/app@{signed}", a.host()),
    ]))?;
    let app_only = tmp.path().join("app-only");
    let everything = tmp.path().join("everything");
    run(&mut wharf_cli(
        &a,
        &[
            "export",
            app_only.to_str().context("path")?,
            "--repository",
            "team/app",
        ],
    ))?;
    run(&mut wharf_cli(
        &a,
        &["export", everything.to_str().context("path")?],
    ))?;

    let b = WharfServer::start(bin())?;
    let key = keys.join("cosign.pub");
    let import = |bundle: &Path, key: &Path| {
        wharf_cli(
            &b,
            &[
                "import",
                bundle.to_str().unwrap_or_default(),
                "--verify-key",
                key.to_str().unwrap_or_default(),
            ],
        )
    };
    // An unsigned tag in the bundle refuses all of it.
    let out = run_expect_failure(&mut import(&everything, &key))?;
    ensure!(
        out.stderr.contains("team/other:unsigned") && out.stderr.contains("is not signed"),
        "{out}"
    );
    // Another key's trust is not ours.
    let out = run_expect_failure(&mut import(&app_only, &stranger.join("cosign.pub")))?;
    ensure!(out.stderr.contains("verifies with no trusted key"), "{out}");
    settle();
    let none = run_expect_failure(skopeo().args([
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{}/team/app", b.host()),
    ]))?;
    ensure!(
        !none.stdout.contains("signed"),
        "a refused import left tags: {none}"
    );
    // Signed with the trusted key: imported, signature and all.
    run(&mut import(&app_only, &key))?;
    settle();
    ensure!(digest_at(&b, "team/app:signed")? == signed);
    let tags = list_tags(&format!("docker://{}/team/app", b.host()))?;
    ensure!(
        tags.iter().any(|t| t.ends_with(".sig")),
        "the signature was not imported: {tags:?}"
    );
    Ok(())
}
