//! skopeo against Wharf: copy in and out with digests intact, multi-arch, Docker schema 2,
//! sync both ways, inspect, list-tags and delete.

use std::collections::BTreeSet;

use anyhow::{ensure, Context, Result};
use wharf_testkit::fixture::{
    dir_manifest_digest, sha256_digest, ImageSpec, DOCKER_MANIFEST_V2, OCI_MANIFEST,
};
use wharf_testkit::{run, run_expect_failure};

use crate::support::{
    e2e, inspect_raw, json, layout, list_tags, scratch, served_digest, skopeo, skopeo_copy,
};

#[test]
fn copy_layout_in_and_out_keeps_digests() -> Result<()> {
    e2e(|target| {
        let tmp = scratch()?;
        let mut src = layout(tmp.path(), "src")?;
        let image = src.add_image("v1", &ImageSpec::new(3, 256 * 1024))?;
        let remote = format!("docker://{}:v1", target.repo("e2e/copy"));

        skopeo_copy(&src.reference("v1"), &remote, &[])?;
        ensure!(
            served_digest(&remote)? == image.manifest.digest,
            "the served manifest differs from the pushed one"
        );

        let out = layout(tmp.path(), "out")?;
        skopeo_copy(&remote, &out.reference("v1"), &[])?;
        ensure!(out.tagged_digest("v1")? == image.manifest.digest);
        for blob in image.layers.iter().chain([&image.config]) {
            let bytes = out.read_blob(&blob.digest)?;
            ensure!(
                sha256_digest(&bytes) == blob.digest,
                "pulled blob {} has other bytes",
                blob.digest
            );
        }
        target.assert_store_clean()
    })
}

#[test]
fn copy_all_of_a_two_arch_index() -> Result<()> {
    e2e(|target| {
        let tmp = scratch()?;
        let mut src = layout(tmp.path(), "src")?;
        let multi = src.add_two_arch_index("multi", 2, 64 * 1024)?;
        let remote = format!("docker://{}:multi", target.repo("e2e/multi"));

        skopeo_copy(&src.reference("multi"), &remote, &["--all"])?;
        let served = inspect_raw(&remote)?;
        ensure!(sha256_digest(&served) == multi.index.digest);
        let index = json(&served)?;
        let listed: BTreeSet<String> = index["manifests"]
            .as_array()
            .context("index without manifests")?
            .iter()
            .filter_map(|entry| entry["digest"].as_str().map(str::to_owned))
            .collect();
        let expected: BTreeSet<String> = multi
            .images
            .iter()
            .map(|image| image.manifest.digest.clone())
            .collect();
        ensure!(listed == expected, "index lists {listed:?}");

        // Each platform's manifest is fetchable by digest, and pulling the index back brings
        // every platform.
        for image in &multi.images {
            let by_digest = format!(
                "docker://{}@{}",
                target.repo("e2e/multi"),
                image.manifest.digest
            );
            ensure!(served_digest(&by_digest)? == image.manifest.digest);
        }
        let out = layout(tmp.path(), "out")?;
        skopeo_copy(&remote, &out.reference("multi"), &["--all"])?;
        ensure!(out.tagged_digest("multi")? == multi.index.digest);
        for image in &multi.images {
            out.read_blob(&image.manifest.digest)?;
            for layer in &image.layers {
                out.read_blob(&layer.digest)?;
            }
        }
        target.assert_store_clean()
    })
}

#[test]
fn docker_schema2_push_and_pull() -> Result<()> {
    e2e(|target| {
        let tmp = scratch()?;
        let mut src = layout(tmp.path(), "src")?;
        let image = src.add_image("v1", &ImageSpec::new(2, 128 * 1024))?;
        let remote = format!("docker://{}:v2s2", target.repo("e2e/docker"));

        skopeo_copy(&src.reference("v1"), &remote, &["--format", "v2s2"])?;
        let served = inspect_raw(&remote)?;
        let manifest = json(&served)?;
        ensure!(
            manifest["mediaType"] == DOCKER_MANIFEST_V2,
            "served mediaType is {}",
            manifest["mediaType"]
        );
        // The conversion changes media types, not layer bytes.
        let layers: Vec<&str> = manifest["layers"]
            .as_array()
            .context("manifest without layers")?
            .iter()
            .filter_map(|layer| layer["digest"].as_str())
            .collect();
        let expected: Vec<&str> = image.layers.iter().map(|l| l.digest.as_str()).collect();
        ensure!(
            layers == expected,
            "layers {layers:?}, expected {expected:?}"
        );

        let out = tmp.path().join("pulled");
        skopeo_copy(&remote, &format!("dir:{}", out.display()), &[])?;
        ensure!(dir_manifest_digest(&out)? == sha256_digest(&served));
        for digest in expected {
            let hex = digest.trim_start_matches("sha256:");
            let bytes = std::fs::read(out.join(hex))?;
            ensure!(sha256_digest(&bytes) == digest);
        }
        target.assert_store_clean()
    })
}

#[test]
fn sync_to_a_directory_and_back_into_another_repository() -> Result<()> {
    e2e(|target| {
        let tmp = scratch()?;
        let mut src = layout(tmp.path(), "src")?;
        let first = src.add_image("one", &ImageSpec::new(1, 64 * 1024))?;
        let second = src.add_image("two", &ImageSpec::new(2, 64 * 1024))?;
        for tag in ["one", "two"] {
            let remote = format!("docker://{}:{tag}", target.repo("e2e/sync/app"));
            skopeo_copy(&src.reference(tag), &remote, &[])?;
        }

        let synced = tmp.path().join("synced");
        run(skopeo()
            .args([
                "sync",
                "--src",
                "docker",
                "--dest",
                "dir",
                "--src-tls-verify=false",
            ])
            .arg(target.repo("e2e/sync/app"))
            .arg(&synced))?;
        // skopeo names each copy after the repository's last component and the tag.
        ensure!(dir_manifest_digest(&synced.join("app:one"))? == first.manifest.digest);
        ensure!(dir_manifest_digest(&synced.join("app:two"))? == second.manifest.digest);

        run(skopeo()
            .args([
                "sync",
                "--src",
                "dir",
                "--dest",
                "docker",
                "--dest-tls-verify=false",
            ])
            .arg(&synced)
            .arg(target.repo("e2e/mirror")))?;
        let mirror = target.repo("e2e/mirror/app");
        ensure!(list_tags(&format!("docker://{mirror}"))? == ["one", "two"]);
        ensure!(served_digest(&format!("docker://{mirror}:one"))? == first.manifest.digest);
        ensure!(served_digest(&format!("docker://{mirror}:two"))? == second.manifest.digest);
        target.assert_store_clean()
    })
}

#[test]
fn inspect_list_tags_and_delete() -> Result<()> {
    e2e(|target| {
        let tmp = scratch()?;
        let mut src = layout(tmp.path(), "src")?;
        let kept = src.add_image("kept", &ImageSpec::new(1, 32 * 1024))?;
        let doomed = src.add_image("doomed", &ImageSpec::new(1, 32 * 1024))?;
        let repo = target.repo("e2e/tags");
        for (tag, source) in [("a", "kept"), ("b", "kept"), ("c", "doomed")] {
            skopeo_copy(
                &src.reference(source),
                &format!("docker://{repo}:{tag}"),
                &[],
            )?;
        }
        ensure!(list_tags(&format!("docker://{repo}"))? == ["a", "b", "c"]);

        let inspected = run(skopeo()
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{repo}:a")))?
        .json()?;
        ensure!(
            inspected["Digest"] == kept.manifest.digest,
            "inspect: {inspected}"
        );
        ensure!(inspected["Architecture"] == "amd64" && inspected["Os"] == "linux");
        ensure!(inspected["Layers"].as_array().map(Vec::len) == Some(1));
        let config = run(skopeo()
            .args(["inspect", "--config", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{repo}:a")))?;
        ensure!(sha256_digest(config.stdout.as_bytes()) == kept.config.digest);

        run(skopeo()
            .args(["delete", "--tls-verify=false"])
            .arg(format!("docker://{repo}@{}", doomed.manifest.digest)))?;
        run_expect_failure(
            skopeo()
                .args(["inspect", "--raw", "--tls-verify=false"])
                .arg(format!("docker://{repo}:c")),
        )?;
        run_expect_failure(
            skopeo()
                .args(["inspect", "--raw", "--tls-verify=false"])
                .arg(format!("docker://{repo}@{}", doomed.manifest.digest)),
        )?;
        ensure!(list_tags(&format!("docker://{repo}"))? == ["a", "b"]);
        ensure!(served_digest(&format!("docker://{repo}:b"))? == kept.manifest.digest);
        target.assert_store_clean()
    })
}

#[test]
fn copy_between_repositories_and_retag() -> Result<()> {
    e2e(|target| {
        let tmp = scratch()?;
        let mut src = layout(tmp.path(), "src")?;
        let first = src.add_image("first", &ImageSpec::new(2, 64 * 1024))?;
        let second = src.add_image("second", &ImageSpec::new(2, 64 * 1024))?;
        let origin = format!("docker://{}:latest", target.repo("e2e/origin"));
        skopeo_copy(&src.reference("first"), &origin, &[])?;

        // Registry to registry on the same server: skopeo asks for cross-repository blob mounts.
        let copy = format!("docker://{}:latest", target.repo("e2e/copy/of/origin"));
        skopeo_copy(&origin, &copy, &[])?;
        ensure!(served_digest(&copy)? == first.manifest.digest);

        // Moving a tag: the same name now serves the second image, the first stays by digest.
        skopeo_copy(&src.reference("second"), &origin, &[])?;
        ensure!(served_digest(&origin)? == second.manifest.digest);
        let first_by_digest = format!(
            "docker://{}@{}",
            target.repo("e2e/origin"),
            first.manifest.digest
        );
        ensure!(served_digest(&first_by_digest)? == first.manifest.digest);
        ensure!(served_digest(&copy)? == first.manifest.digest);
        target.assert_store_clean()
    })
}

#[test]
fn large_layer_round_trip() -> Result<()> {
    e2e(|target| {
        let tmp = scratch()?;
        let mut src = layout(tmp.path(), "src")?;
        let image = src.add_image("big", &ImageSpec::new(1, 48 * 1024 * 1024))?;
        let remote = format!("docker://{}:big", target.repo("e2e/large"));
        skopeo_copy(&src.reference("big"), &remote, &[])?;
        let out = layout(tmp.path(), "out")?;
        skopeo_copy(&remote, &out.reference("big"), &[])?;
        ensure!(out.tagged_digest("big")? == image.manifest.digest);
        let layer = &image.layers[0];
        ensure!(sha256_digest(&out.read_blob(&layer.digest)?) == layer.digest);
        target.assert_store_clean()
    })
}

#[test]
fn concurrent_pushes_of_shared_layers() -> Result<()> {
    e2e(|target| {
        let tmp = scratch()?;
        let mut src = layout(tmp.path(), "src")?;
        let image = src.add_image("v1", &ImageSpec::new(3, 512 * 1024))?;
        let source = src.reference("v1");
        // Four clients upload the same blobs at once, to the same and to different repositories.
        let destinations: Vec<String> = ["e2e/race/a", "e2e/race/a", "e2e/race/b", "e2e/race/c"]
            .iter()
            .enumerate()
            .map(|(idx, repo)| format!("docker://{}:t{idx}", target.repo(repo)))
            .collect();
        std::thread::scope(|scope| {
            let pushes: Vec<_> = destinations
                .iter()
                .map(|dst| scope.spawn(|| skopeo_copy(&source, dst, &[])))
                .collect();
            pushes
                .into_iter()
                .map(|push| push.join().expect("push thread does not panic"))
                .collect::<Result<Vec<_>>>()
        })?;
        for dst in &destinations {
            ensure!(served_digest(dst)? == image.manifest.digest, "{dst}");
        }
        target.assert_store_clean()
    })
}

#[test]
fn zstd_layers_round_trip() -> Result<()> {
    e2e(|target| {
        let tmp = scratch()?;
        let mut src = layout(tmp.path(), "src")?;
        src.add_image("v1", &ImageSpec::new(2, 64 * 1024))?;
        let remote = format!("docker://{}:zstd", target.repo("e2e/zstd"));
        // skopeo recompresses the layers, so the registry sees media types and digests it has
        // never seen from the fixture.
        skopeo_copy(
            &src.reference("v1"),
            &remote,
            &["--dest-compress-format", "zstd", "--format", "oci"],
        )?;
        let served = inspect_raw(&remote)?;
        let manifest = json(&served)?;
        let layers = manifest["layers"]
            .as_array()
            .context("manifest without layers")?;
        ensure!(layers.len() == 2);
        for layer in layers {
            ensure!(
                layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd",
                "layer: {layer}"
            );
        }
        let out = tmp.path().join("pulled");
        skopeo_copy(&remote, &format!("dir:{}", out.display()), &[])?;
        ensure!(dir_manifest_digest(&out)? == sha256_digest(&served));
        for layer in layers {
            let digest = layer["digest"].as_str().context("layer without digest")?;
            let bytes = std::fs::read(out.join(digest.trim_start_matches("sha256:")))?;
            ensure!(sha256_digest(&bytes) == digest);
        }
        target.assert_store_clean()
    })
}

#[test]
fn many_tags_are_all_listed() -> Result<()> {
    e2e(|target| {
        let tmp = scratch()?;
        let mut src = layout(tmp.path(), "src")?;
        let image = src.add_image("v1", &ImageSpec::new(1, 4 * 1024))?;
        let repo = "e2e/many-tags";
        skopeo_copy(
            &src.reference("v1"),
            &format!("docker://{}:base", target.repo(repo)),
            &[],
        )?;
        // Tagging by PUTting the same manifest bytes is what `crane tag` does; it keeps 150 tags
        // fast enough for a test, and more than one page for a registry that paginates at 100.
        let manifest = src.read_blob(&image.manifest.digest)?;
        let mut expected = vec!["base".to_owned()];
        for idx in 0..150 {
            let tag = format!("t{idx:03}");
            let response = target.request(
                "PUT",
                &format!("/v2/{repo}/manifests/{tag}"),
                &[("Content-Type", OCI_MANIFEST)],
                &manifest,
            )?;
            ensure!(
                response.status == 201,
                "PUT tag {tag}: {} {}",
                response.status,
                response.text()
            );
            expected.push(tag);
        }
        expected.sort();
        let listed = list_tags(&format!("docker://{}", target.repo(repo)))?;
        ensure!(
            listed.len() == expected.len(),
            "listed {} tags",
            listed.len()
        );
        ensure!(listed == expected);
        target.assert_store_clean()
    })
}
