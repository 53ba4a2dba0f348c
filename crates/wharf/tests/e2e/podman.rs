//! podman against Wharf: push a locally loaded image, remove it, pull it back.
//!
//! podman runs with private vfs storage and no systemd (see `wharf_testkit::Podman`).

use anyhow::{ensure, Result};
use wharf_testkit::fixture::{ImageSpec, DOCKER_MANIFEST_V2};
use wharf_testkit::{run, run_expect_failure, Podman};

use crate::support::{e2e, inspect_raw, json, layout, scratch, served_digest};

#[test]
fn push_remove_and_pull_back() -> Result<()> {
    e2e(|target| {
        let tmp = scratch()?;
        let mut src = layout(tmp.path(), "src")?;
        let image = src.add_image("v1", &ImageSpec::new(2, 128 * 1024))?;
        let podman = Podman::new()?;
        // podman reports image IDs as bare hex config digests.
        let image_id = image.config.digest.trim_start_matches("sha256:");
        let remote = format!("{}:v1", target.repo("e2e/podman"));

        run(podman.cmd().args(["pull", &src.reference("v1")]))?;
        run(podman.cmd().args(["tag", image_id, &remote]))?;
        run(podman.cmd().args(["push", "--tls-verify=false", &remote]))?;
        // podman re-encodes layers from its storage, so the manifest digest may differ from the
        // fixture's; what must hold is that the registry serves what podman says it pushed.
        let pushed = served_digest(&format!("docker://{remote}"))?;

        run(podman.cmd().args(["rmi", "--force", "--all"]))?;
        run_expect_failure(podman.cmd().args(["image", "exists", &remote]))?;

        run(podman.cmd().args(["pull", "--tls-verify=false", &remote]))?;
        let id = run(podman
            .cmd()
            .args(["image", "inspect", "--format", "{{.Id}}", &remote]))?;
        ensure!(
            id.stdout.trim() == image_id,
            "pulled image ID {}",
            id.stdout.trim()
        );
        let digest =
            run(podman
                .cmd()
                .args(["image", "inspect", "--format", "{{.Digest}}", &remote]))?;
        ensure!(
            digest.stdout.trim() == pushed,
            "pulled digest {}, served {pushed}",
            digest.stdout.trim()
        );
        target.assert_store_clean()
    })
}

#[test]
fn push_docker_format_and_pull_by_digest() -> Result<()> {
    e2e(|target| {
        let tmp = scratch()?;
        let mut src = layout(tmp.path(), "src")?;
        let image = src.add_image("v1", &ImageSpec::new(1, 64 * 1024))?;
        let podman = Podman::new()?;
        let image_id = image.config.digest.trim_start_matches("sha256:");
        let remote = format!("{}:v2s2", target.repo("e2e/podman-docker"));

        run(podman.cmd().args(["pull", &src.reference("v1")]))?;
        run(podman.cmd().args(["tag", image_id, &remote]))?;
        run(podman
            .cmd()
            .args(["push", "--tls-verify=false", "--format", "v2s2", &remote]))?;
        let manifest = json(&inspect_raw(&format!("docker://{remote}"))?)?;
        ensure!(
            manifest["mediaType"] == DOCKER_MANIFEST_V2,
            "pushed: {manifest}"
        );
        let pushed = served_digest(&format!("docker://{remote}"))?;

        run(podman.cmd().args(["rmi", "--force", "--all"]))?;
        let by_digest = format!("{}@{pushed}", target.repo("e2e/podman-docker"));
        run(podman
            .cmd()
            .args(["pull", "--tls-verify=false", &by_digest]))?;
        let id = run(podman
            .cmd()
            .args(["image", "inspect", "--format", "{{.Id}}", &by_digest]))?;
        ensure!(
            id.stdout.trim() == image_id,
            "pulled image ID {}",
            id.stdout.trim()
        );
        target.assert_store_clean()
    })
}
