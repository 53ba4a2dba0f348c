//! cosign against Wharf, offline: sign an image with a local key pair and verify the signature.
//!
//! No transparency log is reachable from the test machine, so signing skips the upload and
//! verification ignores the log; what is tested is that the signature round-trips through the
//! registry. cosign comes from Debian trixie via `scripts/test.sh`.

use std::path::Path;

use anyhow::{ensure, Result};
use wharf_testkit::fixture::ImageSpec;
use wharf_testkit::{run, run_expect_failure};

use crate::support::{e2e, layout, list_tags, scratch, skopeo_copy};

use crate::support::cosign;

fn generate_key_pair(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    run(cosign(dir).arg("generate-key-pair"))?;
    ensure!(dir.join("cosign.key").is_file() && dir.join("cosign.pub").is_file());
    Ok(())
}

#[test]
fn sign_and_verify_with_a_local_key() -> Result<()> {
    e2e(|target| {
        let tmp = scratch()?;
        let mut src = layout(tmp.path(), "src")?;
        let image = src.add_image("v1", &ImageSpec::new(1, 32 * 1024))?;
        let repo = target.repo("e2e/signed");
        skopeo_copy(&src.reference("v1"), &format!("docker://{repo}:v1"), &[])?;
        let by_digest = format!("{repo}@{}", image.manifest.digest);

        let keys = tmp.path().join("keys");
        generate_key_pair(&keys)?;
        run(cosign(&keys).args([
            "sign",
            "--key",
            "cosign.key",
            "--tlog-upload=false",
            "--allow-insecure-registry",
            "--allow-http-registry",
            &by_digest,
        ]))?;
        // cosign stores the signature under the tag `sha256-<hex>.sig` next to the image.
        let sig_tag = format!("{}.sig", image.manifest.digest.replace(':', "-"));
        ensure!(list_tags(&format!("docker://{repo}"))? == [sig_tag, "v1".to_owned()]);

        let verified = run(cosign(&keys).args([
            "verify",
            "--key",
            "cosign.pub",
            "--insecure-ignore-tlog",
            "--allow-insecure-registry",
            "--allow-http-registry",
            &by_digest,
        ]))?;
        let payloads = verified.json()?;
        ensure!(
            payloads[0]["critical"]["image"]["docker-manifest-digest"] == image.manifest.digest,
            "verified payload: {payloads}"
        );

        // A key that did not sign must not verify: the check above is not vacuous.
        let other_keys = tmp.path().join("other-keys");
        generate_key_pair(&other_keys)?;
        run_expect_failure(cosign(&other_keys).args([
            "verify",
            "--key",
            "cosign.pub",
            "--insecure-ignore-tlog",
            "--allow-insecure-registry",
            "--allow-http-registry",
            &by_digest,
        ]))?;
        target.assert_store_clean()
    })
}
