//! Pushing and pulling manifests of every common type (end-3, end-7).
//!
//! The central property is byte-exactness: "The registry MUST store the manifest in the exact
//! byte representation provided by the client", so the main test manifest is written by hand
//! with odd whitespace, key order and a `\u` escape that any re-serialisation would change.

use reqwest::header::ACCEPT;
use reqwest::Method;
use serde_json::json;

use crate::assert;
use crate::client::Resp;
use crate::content::{self, fields, media, Blob, Manifest};
use crate::context::Ctx;
use crate::fixtures::{
    fetch_manifest, push_blob, push_image, push_image_blobs, push_manifest, put_manifest, repo_path,
};
use crate::outcome::{ensure, Failure, Feature, Outcome};
use crate::runner::{check, Check};

pub(super) fn checks() -> Vec<Check> {
    vec![
        check!(
            "manifests.push.by-tag",
            "PUT of an image manifest by tag answers 201 with Location and Docker-Content-Digest",
            push_by_tag
        ),
        check!(
            "manifests.pull.by-tag",
            "GET by tag answers 200 with the exact bytes, the mediaType as Content-Type and the digest",
            pull_by_tag
        ),
        check!(
            "manifests.pull.by-digest",
            "GET by digest answers 200 with the exact bytes, Content-Type and digest",
            pull_by_digest
        ),
        check!(
            "manifests.head",
            "HEAD by tag and by digest answers 200 with Content-Length, digest and no body",
            head
        ),
        check!(
            "manifests.push.by-digest",
            "PUT of a manifest by its digest answers 201 and is pullable by digest",
            push_by_digest
        ),
        check!(
            "manifests.pull.accept-oci",
            "GET with Accept: application/vnd.oci.image.manifest.v1+json returns the manifest",
            accept_oci
        ),
        check!(
            "manifests.push.index",
            "an OCI image index over two manifests is accepted and served exactly",
            index
        ),
        check!(
            "manifests.push.docker-v2",
            "a Docker schema 2 manifest is accepted and served with its media type",
            docker_v2
        ),
        check!(
            "manifests.push.docker-list",
            "a Docker manifest list is accepted and served with its media type",
            docker_list
        ),
        check!(
            "manifests.push.artifact",
            "an artifact manifest with artifactType and the empty config descriptor is accepted",
            artifact
        ),
        check!(
            "manifests.pull.unknown",
            "GET and HEAD of an unknown tag or digest answer 404 (MANIFEST_UNKNOWN)",
            unknown
        ),
        check!(
            "manifests.pull.unknown-repo",
            "GET of a manifest in a repository that does not exist answers 404",
            unknown_repo
        ),
    ]
}

/// An OCI image manifest over pushed blobs, formatted by hand so that any re-serialisation by
/// the registry changes its bytes.
async fn odd_manifest(ctx: &Ctx, repo: &str) -> Result<Manifest, Failure> {
    let (config, layers) = push_image_blobs(ctx, repo, media::OCI_MANIFEST).await?;
    let text = format!(
        "{{\n\t\"schemaVersion\" :   2 ,\n   \"mediaType\":\"{mt}\",\n\n  \"config\" : {{\"size\": {cs},\
         \"mediaType\": \"{ct}\", \"digest\":\"{cd}\"}},\n  \"layers\": [\n      {{ \"digest\": \"{l0d}\",   \
         \"mediaType\": \"{lt}\", \"size\": {l0s} }} ,{{\"mediaType\":\"{lt}\",\"size\":{l1s},\"digest\":\"{l1d}\"}}\n\
         \r\n  ],\n  \"annotations\": {{\"org.example.conformance\": \"caf\\u00e9 \\/ whitespace\"}}\n}}\n\n",
        mt = media::OCI_MANIFEST,
        ct = config.media_type,
        cs = config.bytes.len(),
        cd = config.digest,
        lt = media::OCI_LAYER,
        l0d = layers[0].digest,
        l0s = layers[0].bytes.len(),
        l1d = layers[1].digest,
        l1s = layers[1].bytes.len(),
    );
    Ok(Manifest::from_bytes(media::OCI_MANIFEST, text.into_bytes()))
}

/// Pushes the hand-formatted manifest by tag and returns it with its tag.
async fn pushed_odd(ctx: &Ctx) -> Result<(Manifest, String), Failure> {
    let manifest = odd_manifest(ctx, &ctx.repo).await?;
    let tag = format!("odd-{}", content::unique_token());
    push_manifest(ctx, &ctx.repo, &tag, &manifest).await?;
    Ok((manifest, tag))
}

/// A successful manifest GET: 200, exact bytes, `Content-Type` equal to the pushed type, and a
/// `Docker-Content-Digest` matching the bytes.
fn served_exactly(ctx: &Ctx, resp: &Resp, manifest: &Manifest) -> Outcome {
    assert::status(resp, &[200])?;
    assert::body(resp, &manifest.bytes)?;
    // "The Content-Type header SHOULD match what the client pushed", and clients "SHOULD
    // reject unless the mediaType field's value matches" it; a mismatch breaks every client
    // that follows the spec, so it is failed here.
    let content_type = resp.content_type().unwrap_or("(none)");
    ensure!(
        content_type == manifest.media_type,
        "{}: Content-Type {content_type}, expected {}",
        resp.summary(),
        manifest.media_type
    );
    assert::content_digest(ctx, resp, &manifest.bytes)
}

async fn push_by_tag(ctx: &Ctx) -> Outcome {
    let manifest = odd_manifest(ctx, &ctx.repo).await?;
    let resp = put_manifest(ctx, &ctx.repo, "by-tag", &manifest).await?;
    assert::status(&resp, &[201])?;
    // "The Docker-Content-Digest header returns the canonical digest of the uploaded blob, and
    // MUST be equal to the client provided digest."
    assert::digest_header(ctx, &resp, &manifest.digest)?;
    // "The <location> is a pullable manifest URL."
    let location = assert::location(&resp)?;
    let url = ctx.client.resolve(&location)?;
    let builder = ctx
        .client
        .request_url(Method::GET, url)
        .header(ACCEPT, media::ACCEPT_ALL);
    let resp = ctx.client.send(builder).await?;
    served_exactly(ctx, &resp, &manifest).map_err(|it| it.context("GET of the returned Location"))
}

async fn pull_by_tag(ctx: &Ctx) -> Outcome {
    let (manifest, tag) = pushed_odd(ctx).await?;
    let resp = fetch_manifest(ctx, Method::GET, &ctx.repo, &tag).await?;
    served_exactly(ctx, &resp, &manifest)
}

async fn pull_by_digest(ctx: &Ctx) -> Outcome {
    let (manifest, _) = pushed_odd(ctx).await?;
    let resp = fetch_manifest(ctx, Method::GET, &ctx.repo, &manifest.digest).await?;
    served_exactly(ctx, &resp, &manifest)
}

async fn head(ctx: &Ctx) -> Outcome {
    let (manifest, tag) = pushed_odd(ctx).await?;
    for reference in [tag.as_str(), manifest.digest.as_str()] {
        let resp = fetch_manifest(ctx, Method::HEAD, &ctx.repo, reference).await?;
        assert::status(&resp, &[200])?;
        ensure!(
            resp.body.is_empty(),
            "{}: HEAD returned a body",
            resp.summary()
        );
        assert::content_length(&resp, manifest.bytes.len())?;
        assert::content_digest(ctx, &resp, &manifest.bytes)?;
    }
    Ok(())
}

async fn push_by_digest(ctx: &Ctx) -> Outcome {
    let manifest = odd_manifest(ctx, &ctx.repo).await?;
    let resp = put_manifest(ctx, &ctx.repo, &manifest.digest, &manifest).await?;
    assert::status(&resp, &[201])?;
    assert::location(&resp)?;
    assert::digest_header(ctx, &resp, &manifest.digest)?;
    let resp = fetch_manifest(ctx, Method::GET, &ctx.repo, &manifest.digest).await?;
    served_exactly(ctx, &resp, &manifest)
}

async fn accept_oci(ctx: &Ctx) -> Outcome {
    let (manifest, tag) = pushed_odd(ctx).await?;
    for reference in [tag.as_str(), manifest.digest.as_str()] {
        let path = repo_path(&ctx.repo, &format!("manifests/{reference}"));
        let builder = ctx
            .client
            .request(Method::GET, &path)?
            .header(ACCEPT, media::OCI_MANIFEST);
        let resp = ctx.client.send(builder).await?;
        served_exactly(ctx, &resp, &manifest)?;
    }
    Ok(())
}

async fn index(ctx: &Ctx) -> Outcome {
    let first = push_image(ctx, &ctx.repo, None).await?;
    let second = push_image(ctx, &ctx.repo, None).await?;
    let index = content::index_manifest(
        media::OCI_INDEX,
        &[&first.manifest, &second.manifest],
        fields([("annotations", json!({ "org.example.conformance": "index" }))]),
    );
    let resp = put_manifest(ctx, &ctx.repo, "index", &index).await?;
    assert::status(&resp, &[201])?;
    assert::digest_header(ctx, &resp, &index.digest)?;
    for reference in ["index", index.digest.as_str()] {
        let resp = fetch_manifest(ctx, Method::GET, &ctx.repo, reference).await?;
        served_exactly(ctx, &resp, &index)?;
    }
    Ok(())
}

/// Pushes a Docker schema 2 image; a 4xx on the manifest PUT means the type is unsupported.
async fn push_docker_image(ctx: &Ctx) -> Result<Option<Manifest>, Failure> {
    let (config, layers) = push_image_blobs(ctx, &ctx.repo, media::DOCKER_MANIFEST).await?;
    let manifest = content::image_manifest(
        media::DOCKER_MANIFEST,
        &config.descriptor(),
        &layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
        Default::default(),
    );
    let resp = put_manifest(ctx, &ctx.repo, &manifest.digest, &manifest).await?;
    if resp.status.is_client_error() {
        // The spec is content-type agnostic and names Docker manifests only as legacy types.
        ctx.missing(
            Feature::DockerManifests,
            format!("{}: {}", resp.summary(), resp.snippet()),
        )?;
        return Ok(None);
    }
    assert::status(&resp, &[201])?;
    assert::digest_header(ctx, &resp, &manifest.digest)?;
    Ok(Some(manifest))
}

async fn docker_v2(ctx: &Ctx) -> Outcome {
    let Some(manifest) = push_docker_image(ctx).await? else {
        return Ok(());
    };
    let tag = "docker-v2";
    push_manifest(ctx, &ctx.repo, tag, &manifest).await?;
    for reference in [tag, manifest.digest.as_str()] {
        let resp = fetch_manifest(ctx, Method::GET, &ctx.repo, reference).await?;
        served_exactly(ctx, &resp, &manifest)?;
    }
    Ok(())
}

async fn docker_list(ctx: &Ctx) -> Outcome {
    let Some(first) = push_docker_image(ctx).await? else {
        return Ok(());
    };
    let Some(second) = push_docker_image(ctx).await? else {
        return Ok(());
    };
    let list = content::index_manifest(media::DOCKER_LIST, &[&first, &second], Default::default());
    let resp = put_manifest(ctx, &ctx.repo, "docker-list", &list).await?;
    if resp.status.is_client_error() {
        return ctx.missing(
            Feature::DockerManifests,
            format!("{}: {}", resp.summary(), resp.snippet()),
        );
    }
    assert::status(&resp, &[201])?;
    for reference in ["docker-list", list.digest.as_str()] {
        let resp = fetch_manifest(ctx, Method::GET, &ctx.repo, reference).await?;
        served_exactly(ctx, &resp, &list)?;
    }
    Ok(())
}

/// The image-spec's empty descriptor, with the `{}` content inlined as base64 `data`.
pub(super) fn empty_descriptor() -> serde_json::Value {
    let mut desc = Blob::empty_json().descriptor();
    desc["data"] = json!("e30=");
    desc
}

async fn artifact(ctx: &Ctx) -> Outcome {
    let empty = Blob::empty_json();
    ensure!(
        empty.digest == content::EMPTY_JSON_DIGEST && empty.bytes.len() == 2,
        "internal: empty descriptor is {} / {}",
        empty.digest,
        empty.bytes.len()
    );
    push_blob(ctx, &ctx.repo, &empty).await?;
    let payload = Blob::layer("application/vnd.example.conformance.payload", 256);
    push_blob(ctx, &ctx.repo, &payload).await?;
    let manifest = content::image_manifest(
        media::OCI_MANIFEST,
        &empty_descriptor(),
        &[payload.descriptor()],
        fields([
            (
                "artifactType",
                json!("application/vnd.example.conformance.v1"),
            ),
            (
                "annotations",
                json!({ "org.opencontainers.image.created": "2024-01-01T00:00:00Z" }),
            ),
        ]),
    );
    let resp = put_manifest(ctx, &ctx.repo, "artifact", &manifest).await?;
    assert::status(&resp, &[201])?;
    assert::digest_header(ctx, &resp, &manifest.digest)?;
    let resp = fetch_manifest(ctx, Method::GET, &ctx.repo, "artifact").await?;
    served_exactly(ctx, &resp, &manifest)?;
    // The empty blob itself must be pullable like any other.
    let path = repo_path(&ctx.repo, &format!("blobs/{}", content::EMPTY_JSON_DIGEST));
    let resp = ctx.client.call(Method::GET, &path).await?;
    assert::status(&resp, &[200])?;
    assert::body(&resp, content::EMPTY_JSON)
}

async fn unknown(ctx: &Ctx) -> Outcome {
    // Make sure the repository exists, so the 404 is about the manifest.
    push_image(ctx, &ctx.repo, Some("known")).await?;
    let tag = format!("unknown-{}", content::unique_token());
    for reference in [tag, content::unknown_digest()] {
        let resp = fetch_manifest(ctx, Method::GET, &ctx.repo, &reference).await?;
        // "If the manifest is not found in the repository, the response code MUST be 404";
        // MANIFEST_UNKNOWN is "manifest unknown to registry".
        assert::error(ctx, &resp, &[404], &["MANIFEST_UNKNOWN"])?;
        let resp = fetch_manifest(ctx, Method::HEAD, &ctx.repo, &reference).await?;
        assert::status(&resp, &[404])?;
    }
    Ok(())
}

async fn unknown_repo(ctx: &Ctx) -> Outcome {
    let repo = ctx.sub_repo(&format!("never-pushed-{}", content::unique_token()));
    let resp = fetch_manifest(ctx, Method::GET, &repo, "latest").await?;
    // "An attempt to pull a nonexistent repository MUST return response code 404"; either
    // the name or the manifest is the unknown thing, so both codes describe it.
    assert::error(ctx, &resp, &[404], &["NAME_UNKNOWN", "MANIFEST_UNKNOWN"])
}
