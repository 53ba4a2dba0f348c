//! Manifest pushes the registry must refuse, and the error codes it refuses them with.

use reqwest::Method;
use serde_json::json;

use crate::assert;
use crate::client::Resp;
use crate::content::{self, fields, media, Blob, Manifest};
use crate::context::Ctx;
use crate::fixtures::{fetch_manifest, push_blob, push_image, put_manifest, put_manifest_bytes};
use crate::outcome::{fail, Feature, Outcome};
use crate::runner::{check, Check};

/// Comfortably above the 4 MiB that "client and registry implementations SHOULD expect to be
/// able to support".
const LARGE_MANIFEST: usize = (4 << 20) + (64 << 10);

pub(super) fn checks() -> Vec<Check> {
    vec![
        check!(
            "manifests.push.missing-blob",
            "a manifest whose layer or config is unknown answers 400 MANIFEST_BLOB_UNKNOWN",
            missing_blob
        ),
        check!(
            "manifests.push.index-missing-child",
            "an index referencing an unknown manifest answers 400 MANIFEST_BLOB_UNKNOWN",
            index_missing_child
        ),
        check!(
            "manifests.push.malformed",
            "malformed JSON answers 400 MANIFEST_INVALID",
            malformed
        ),
        check!(
            "manifests.push.not-a-manifest",
            "well-formed JSON that is not a manifest answers 400 MANIFEST_INVALID",
            not_a_manifest
        ),
        check!(
            "manifests.push.digest-mismatch",
            "PUT by a digest that does not match the body answers 400 DIGEST_INVALID",
            digest_mismatch
        ),
        check!(
            "manifests.push.too-large",
            "a manifest over 4 MiB is refused with 413 (or 400), or stored exactly; never a 5xx",
            too_large
        ),
        check!(
            "manifests.invalid-tag",
            "PUT and GET with a tag outside [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127} are refused",
            invalid_tag
        ),
    ]
}

/// A manifest the registry "MAY reject" for unknown references; when it does, "it MUST result
/// in one or more MANIFEST_BLOB_UNKNOWN errors". Accepting it is the other conformant answer.
fn unknown_reference(ctx: &Ctx, resp: &Resp) -> Outcome {
    if resp.status == 201 {
        return ctx.missing(
            Feature::ManifestRefCheck,
            format!(
                "{}: manifest with unknown references accepted",
                resp.summary()
            ),
        );
    }
    assert::error(ctx, resp, &[400], &["MANIFEST_BLOB_UNKNOWN"])
}

async fn missing_blob(ctx: &Ctx) -> Outcome {
    let layer = Blob::layer(media::OCI_LAYER, 100);
    let config = Blob::config(media::OCI_CONFIG, &[&layer]);
    // First the config exists and the layer does not; then the other way round.
    push_blob(ctx, &ctx.repo, &config).await?;
    let manifest = content::image_manifest(
        media::OCI_MANIFEST,
        &config.descriptor(),
        &[layer.descriptor()],
        Default::default(),
    );
    let resp = put_manifest(ctx, &ctx.repo, "missing-layer", &manifest).await?;
    unknown_reference(ctx, &resp)?;

    let other_layer = Blob::layer(media::OCI_LAYER, 100);
    push_blob(ctx, &ctx.repo, &other_layer).await?;
    let missing_config = Blob::config(media::OCI_CONFIG, &[&other_layer]);
    let manifest = content::image_manifest(
        media::OCI_MANIFEST,
        &missing_config.descriptor(),
        &[other_layer.descriptor()],
        Default::default(),
    );
    let resp = put_manifest(ctx, &ctx.repo, "missing-config", &manifest).await?;
    unknown_reference(ctx, &resp)
}

async fn index_missing_child(ctx: &Ctx) -> Outcome {
    let present = push_image(ctx, &ctx.repo, None).await?;
    let absent = Manifest::from_bytes(media::OCI_MANIFEST, content::unique_bytes(300));
    let index = content::index_manifest(
        media::OCI_INDEX,
        &[&present.manifest, &absent],
        Default::default(),
    );
    let resp = put_manifest(ctx, &ctx.repo, "index-missing-child", &index).await?;
    unknown_reference(ctx, &resp)
}

async fn malformed(ctx: &Ctx) -> Outcome {
    let body = format!(
        "{{\"schemaVersion\": 2, \"mediaType\": \"{}\", \"config\": {{",
        media::OCI_MANIFEST
    );
    let resp = put_manifest_bytes(
        ctx,
        &ctx.repo,
        "malformed",
        media::OCI_MANIFEST,
        body.as_bytes(),
    )
    .await?;
    // MANIFEST_INVALID is "manifest invalid"; end-7 gives no other code for a body that is not
    // a manifest at all.
    assert::error(ctx, &resp, &[400], &["MANIFEST_INVALID"])
}

async fn not_a_manifest(ctx: &Ctx) -> Outcome {
    // Valid JSON, wrong shape: no schemaVersion, no config, layers of the wrong type.
    for body in [&b"{}"[..], &br#"{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "layers": "none"}"#[..]] {
        let resp =
            put_manifest_bytes(ctx, &ctx.repo, "not-a-manifest", media::OCI_MANIFEST, body).await?;
        assert::error(ctx, &resp, &[400], &["MANIFEST_INVALID"])?;
    }
    Ok(())
}

async fn digest_mismatch(ctx: &Ctx) -> Outcome {
    let image = push_image(ctx, &ctx.repo, None).await?;
    let wrong = content::unknown_digest();
    let resp = put_manifest(ctx, &ctx.repo, &wrong, &image.manifest).await?;
    // Pushing by digest asserts the body's identity; DIGEST_INVALID is "provided digest did not
    // match uploaded content".
    assert::error(ctx, &resp, &[400], &["DIGEST_INVALID"])?;
    let resp = fetch_manifest(ctx, Method::HEAD, &ctx.repo, &wrong).await?;
    assert::status(&resp, &[404]).map_err(|it| it.context("after the rejected PUT"))
}

async fn too_large(ctx: &Ctx) -> Outcome {
    let image = push_image(ctx, &ctx.repo, None).await?;
    // A valid image manifest made large by one annotation, so the only thing wrong is size.
    let filler = "a".repeat(LARGE_MANIFEST);
    let manifest = content::image_manifest(
        media::OCI_MANIFEST,
        &image.config.descriptor(),
        &image
            .layers
            .iter()
            .map(Blob::descriptor)
            .collect::<Vec<_>>(),
        fields([("annotations", json!({ "org.example.filler": filler }))]),
    );
    let resp = put_manifest(ctx, &ctx.repo, "too-large", &manifest).await?;
    match resp.status.as_u16() {
        201 => {
            // "A registry SHOULD enforce some limit"; one with a higher limit (or none) must
            // then store what it accepted exactly like any other manifest.
            let resp = fetch_manifest(ctx, Method::GET, &ctx.repo, &manifest.digest).await?;
            assert::status(&resp, &[200])?;
            assert::body(&resp, &manifest.bytes)
        }
        // "A registry that enforces this limit SHOULD respond ... with a response code 413
        // Payload Too Large"; the spec names no error code for it, so only the envelope's
        // shape is checked, through the same codes a 400 may use.
        413 => {
            if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&resp.body) {
                assert::error_codes(&resp, &value)?;
            }
            Ok(())
        }
        // A 400 is the older way to refuse it, with the codes that describe a bad manifest.
        400 => assert::error(ctx, &resp, &[400], &["MANIFEST_INVALID", "SIZE_INVALID"]),
        _ => fail!(
            "{}: expected 413, 400 or 201: {}",
            resp.summary(),
            resp.snippet()
        ),
    }
}

async fn invalid_tag(ctx: &Ctx) -> Outcome {
    let image = push_image(ctx, &ctx.repo, None).await?;
    let too_long = format!("t{}", "a".repeat(128));
    for tag in [".starts-with-dot", "-starts-with-dash", too_long.as_str()] {
        let resp = put_manifest(ctx, &ctx.repo, tag, &image.manifest).await?;
        // A tag "MUST match" the regular expression, but the spec names no status for a bad
        // one: routers typically answer 404 and validators 400. Only acceptance and server
        // errors are wrong.
        assert::refused(&resp)?;
        let resp = fetch_manifest(ctx, Method::GET, &ctx.repo, tag).await?;
        assert::refused(&resp)?;
    }
    Ok(())
}
