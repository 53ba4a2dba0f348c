//! What Wharf stores survives a restart, garbage collection keeps what is still referenced, and
//! `wharf check` notices damage to what is stored.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use wharf_testkit::fixture::{sha256_digest, ImageSpec};
use wharf_testkit::run;

use crate::support::{e2e, layout, list_tags, scratch, served_digest, skopeo, skopeo_copy};

#[test]
fn pushed_images_survive_a_restart() -> Result<()> {
    e2e(|target| {
        let tmp = scratch()?;
        let mut src = layout(tmp.path(), "src")?;
        let single = src.add_image("single", &ImageSpec::new(2, 128 * 1024))?;
        let multi = src.add_two_arch_index("multi", 1, 64 * 1024)?;
        let repo = "e2e/persist";
        skopeo_copy(
            &src.reference("single"),
            &format!("docker://{}:single", target.repo(repo)),
            &[],
        )?;
        skopeo_copy(
            &src.reference("multi"),
            &format!("docker://{}:multi", target.repo(repo)),
            &["--all"],
        )?;

        target.restart()?;

        // The port changed: every reference is rebuilt from the new address.
        let remote = |tag: &str| format!("docker://{}:{tag}", target.repo(repo));
        ensure!(list_tags(&format!("docker://{}", target.repo(repo)))? == ["multi", "single"]);
        ensure!(served_digest(&remote("single"))? == single.manifest.digest);
        ensure!(served_digest(&remote("multi"))? == multi.index.digest);
        let out = layout(tmp.path(), "out")?;
        skopeo_copy(&remote("single"), &out.reference("single"), &[])?;
        skopeo_copy(&remote("multi"), &out.reference("multi"), &["--all"])?;
        ensure!(out.tagged_digest("single")? == single.manifest.digest);
        ensure!(out.tagged_digest("multi")? == multi.index.digest);
        for layer in &single.layers {
            ensure!(sha256_digest(&out.read_blob(&layer.digest)?) == layer.digest);
        }
        target.assert_store_clean()
    })
}

#[test]
fn gc_after_delete_keeps_what_is_still_tagged() -> Result<()> {
    e2e(|target| {
        let tmp = scratch()?;
        let mut src = layout(tmp.path(), "src")?;
        let kept = src.add_image("kept", &ImageSpec::new(2, 64 * 1024))?;
        let deleted = src.add_image("deleted", &ImageSpec::new(2, 64 * 1024))?;
        let repo = target.repo("e2e/gc");
        skopeo_copy(
            &src.reference("kept"),
            &format!("docker://{repo}:kept"),
            &[],
        )?;
        skopeo_copy(
            &src.reference("deleted"),
            &format!("docker://{repo}:deleted"),
            &[],
        )?;
        run(skopeo()
            .args(["delete", "--tls-verify=false"])
            .arg(format!("docker://{repo}@{}", deleted.manifest.digest)))?;

        // gc and check run on the data directory of a stopped server, as an operator would in a
        // maintenance window; docker-registry has no such commands.
        if let Some(server) = target.wharf() {
            let status = server.stop()?;
            ensure!(status.success(), "wharf exited with {status} on SIGTERM");
            server.gc()?;
            let output = server.check()?;
            ensure!(output.status.success(), "wharf check after gc: {output}");
        }
        target.restart()?;

        let repo = target.repo("e2e/gc");
        ensure!(list_tags(&format!("docker://{repo}"))? == ["kept"]);
        let out = layout(tmp.path(), "out")?;
        skopeo_copy(
            &format!("docker://{repo}:kept"),
            &out.reference("kept"),
            &[],
        )?;
        ensure!(out.tagged_digest("kept")? == kept.manifest.digest);
        for blob in kept.layers.iter().chain([&kept.config]) {
            ensure!(sha256_digest(&out.read_blob(&blob.digest)?) == blob.digest);
        }
        target.assert_store_clean()
    })
}

#[test]
fn check_fails_on_a_corrupted_blob() -> Result<()> {
    e2e(|target| {
        let tmp = scratch()?;
        let mut src = layout(tmp.path(), "src")?;
        let image = src.add_image("v1", &ImageSpec::new(1, 256 * 1024))?;
        let remote = format!("docker://{}:v1", target.repo("e2e/check"));
        skopeo_copy(&src.reference("v1"), &remote, &[])?;
        // docker-registry has no check command: there is nothing more to validate.
        let Some(server) = target.wharf() else {
            return Ok(());
        };
        let clean = server.check()?;
        ensure!(
            clean.status.success(),
            "wharf check on an intact store: {clean}"
        );

        let status = server.stop()?;
        ensure!(status.success(), "wharf exited with {status} on SIGTERM");
        // The test does not know the store's on-disk layout, only the bytes: find the file that
        // holds the layer and flip one byte in it.
        let layer = &image.layers[0];
        let path = find_file_with_digest(server.data_dir(), &layer.digest, layer.size)?
            .with_context(|| format!("no file in the data directory holds {}", layer.digest))?;
        let mut bytes = fs::read(&path)?;
        bytes[1000] ^= 0xff;
        fs::write(&path, &bytes)?;

        let damaged = server.check()?;
        ensure!(
            !damaged.status.success(),
            "wharf check passed a store with a corrupted blob ({}): {damaged}",
            path.display()
        );
        Ok(())
    })
}

fn find_file_with_digest(dir: &Path, digest: &str, size: u64) -> Result<Option<PathBuf>> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            if let Some(found) = find_file_with_digest(&entry.path(), digest, size)? {
                return Ok(Some(found));
            }
        } else if file_type.is_file()
            && entry.metadata()?.len() == size
            && sha256_digest(&fs::read(entry.path())?) == digest
        {
            return Ok(Some(entry.path()));
        }
    }
    Ok(None)
}

#[test]
fn acknowledged_pushes_survive_a_kill() -> Result<()> {
    e2e(|target| {
        let tmp = scratch()?;
        let mut src = layout(tmp.path(), "src")?;
        let image = src.add_image("v1", &ImageSpec::new(2, 256 * 1024))?;
        let repo = "e2e/crash";
        skopeo_copy(
            &src.reference("v1"),
            &format!("docker://{}:v1", target.repo(repo)),
            &[],
        )?;
        // skopeo returned, so every blob and the manifest were acknowledged: a crash now must
        // lose none of them.
        if let Some(server) = target.wharf() {
            server.kill()?;
            let output = server.check()?;
            ensure!(
                output.status.success(),
                "wharf check after SIGKILL: {output}"
            );
        }
        target.restart()?;
        let remote = format!("docker://{}:v1", target.repo(repo));
        ensure!(served_digest(&remote)? == image.manifest.digest);
        let out = layout(tmp.path(), "out")?;
        skopeo_copy(&remote, &out.reference("v1"), &[])?;
        for blob in image.layers.iter().chain([&image.config]) {
            ensure!(sha256_digest(&out.read_blob(&blob.digest)?) == blob.digest);
        }
        target.assert_store_clean()
    })
}
