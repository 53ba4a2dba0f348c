//! oras against Wharf: push and pull an artifact, attach a referrer and discover it.
//!
//! oras comes from Debian trixie via `scripts/test.sh` (bookworm has no package).

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context, Result};
use wharf_testkit::fixture::{sha256_digest, ImageSpec};
use wharf_testkit::{http, run, Tool};

use crate::support::{e2e, json, layout, scratch, skopeo_copy};

/// oras run inside `dir`, so file arguments are the relative paths oras requires, with a private
/// HOME so no host config leaks in; credentials come from the testkit's `DOCKER_CONFIG`.
fn oras(dir: &Path) -> Command {
    let mut cmd = Tool::find("oras").cmd();
    cmd.current_dir(dir).env("HOME", dir);
    cmd
}

#[test]
fn push_and_pull_an_artifact() -> Result<()> {
    e2e(|target| {
        let tmp = scratch()?;
        let content = b"wharf e2e artifact\n".repeat(1000);
        fs::write(tmp.path().join("notes.txt"), &content)?;
        let reference = format!("{}:v1", target.repo("e2e/artifact"));

        run(oras(tmp.path()).args([
            "push",
            "--plain-http",
            "--artifact-type",
            "application/vnd.wharf.e2e.notes",
            &reference,
            "notes.txt:text/plain",
        ]))?;

        let fetched =
            run(oras(tmp.path()).args(["manifest", "fetch", "--plain-http", &reference]))?;
        let manifest = fetched.json()?;
        ensure!(
            manifest["artifactType"] == "application/vnd.wharf.e2e.notes",
            "manifest: {manifest}"
        );
        let layer = &manifest["layers"][0];
        ensure!(layer["mediaType"] == "text/plain");
        ensure!(layer["digest"] == sha256_digest(&content));

        let out = tmp.path().join("out");
        run(oras(tmp.path())
            .args(["pull", "--plain-http", "-o"])
            .arg(&out)
            .arg(&reference))?;
        ensure!(
            fs::read(out.join("notes.txt"))? == content,
            "pulled bytes differ"
        );
        target.assert_store_clean()
    })
}

#[test]
fn attach_and_discover_a_referrer() -> Result<()> {
    e2e(|target| {
        let tmp = scratch()?;
        let mut src = layout(tmp.path(), "src")?;
        let image = src.add_image("v1", &ImageSpec::new(1, 32 * 1024))?;
        let repo = target.repo("e2e/referrers");
        skopeo_copy(&src.reference("v1"), &format!("docker://{repo}:v1"), &[])?;

        let signature = b"not really a signature, but bytes to get back\n";
        fs::write(tmp.path().join("sig.txt"), signature)?;
        run(oras(tmp.path()).args([
            "attach",
            "--plain-http",
            "--artifact-type",
            "application/vnd.wharf.e2e.signature",
            &format!("{repo}:v1"),
            "sig.txt:text/plain",
        ]))?;

        let discovered = run(oras(tmp.path())
            .args(["discover", "--plain-http", "--format", "json"])
            .arg(format!("{repo}@{}", image.manifest.digest)))?
        .json()?;
        let referrers = discovered["manifests"]
            .as_array()
            .context("discover: no manifests")?;
        ensure!(referrers.len() == 1, "discover: {discovered}");
        let referrer = &referrers[0];
        ensure!(referrer["artifactType"] == "application/vnd.wharf.e2e.signature");
        let referrer_digest = referrer["digest"]
            .as_str()
            .context("referrer without digest")?;

        let out = tmp.path().join("out");
        run(oras(tmp.path())
            .args(["pull", "--plain-http", "-o"])
            .arg(&out)
            .arg(format!("{repo}@{referrer_digest}")))?;
        ensure!(fs::read(out.join("sig.txt"))? == signature);

        // Wharf implements the OCI 1.1 referrers API itself, so the referrer must be listed there
        // whichever scheme oras chose (docker-registry 2.8 predates the API).
        if let Some(server) = target.wharf() {
            let path = format!("/v2/e2e/referrers/referrers/{}", image.manifest.digest);
            let auth = server.basic_auth_header();
            let response = http::request(
                server.addr(),
                "GET",
                &path,
                &[("Authorization", &auth)],
                b"",
            )?;
            ensure!(
                response.status == 200,
                "GET {path}: {} {}",
                response.status,
                response.text()
            );
            let index = json(&response.body)?;
            let listed = index["manifests"]
                .as_array()
                .context("referrers: no manifests")?;
            ensure!(
                listed
                    .iter()
                    .any(|entry| entry["digest"] == referrer_digest),
                "referrers API does not list {referrer_digest}: {index}"
            );
        }
        target.assert_store_clean()
    })
}
