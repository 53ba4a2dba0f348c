//! buildah against Wharf: assemble a two-arch manifest list and push it with `--all`.

use std::collections::BTreeSet;

use anyhow::{ensure, Context, Result};
use wharf_testkit::{run, Buildah};

use crate::support::{e2e, inspect_raw, json, layout, scratch, served_digest};

#[test]
fn manifest_push_all_of_two_arches() -> Result<()> {
    e2e(|target| {
        let tmp = scratch()?;
        let mut src = layout(tmp.path(), "src")?;
        let multi = src.add_two_arch_index("multi", 1, 64 * 1024)?;
        let buildah = Buildah::new()?;
        run(buildah.cmd().args(["manifest", "create", "e2e-list"]))?;
        for image in &multi.images {
            let reference = src.reference(&format!("multi-{}", image.arch));
            run(buildah
                .cmd()
                .args(["manifest", "add", "e2e-list", &reference]))?;
        }
        let remote = format!("docker://{}:multi", target.repo("e2e/buildah"));
        run(buildah.cmd().args([
            "manifest",
            "push",
            "--all",
            "--tls-verify=false",
            "e2e-list",
            &remote,
        ]))?;

        let index = json(&inspect_raw(&remote)?)?;
        let entries = index["manifests"]
            .as_array()
            .context("no manifests in the index")?;
        ensure!(
            entries.len() == 2,
            "index has {} manifests: {index}",
            entries.len()
        );
        let arches: BTreeSet<&str> = entries
            .iter()
            .filter_map(|entry| entry["platform"]["architecture"].as_str())
            .collect();
        ensure!(
            arches == BTreeSet::from(["amd64", "arm64"]),
            "architectures {arches:?}"
        );
        // --all pushed every platform's manifest, so each is served under its own digest.
        for entry in entries {
            let digest = entry["digest"].as_str().context("entry without digest")?;
            let by_digest = format!("docker://{}@{digest}", target.repo("e2e/buildah"));
            ensure!(served_digest(&by_digest)? == digest);
        }
        target.assert_store_clean()
    })
}
