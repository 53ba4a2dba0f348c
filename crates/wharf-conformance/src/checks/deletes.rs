//! Content management: deleting manifests, tags and blobs (end-9, end-10).
//!
//! "Registries MAY implement deletion or they MAY disable it", answering 400 or 405 when
//! disabled; such answers are reported under the `delete` and `tag-delete` features.

use reqwest::Method;

use crate::assert;
use crate::client::Resp;
use crate::content::{self, media, Blob};
use crate::context::Ctx;
use crate::fixtures::{fetch_manifest, push_blob, push_image, push_manifest, repo_path};
use crate::outcome::{ensure, Feature, Outcome};
use crate::runner::{check, Check};

pub(super) fn checks() -> Vec<Check> {
    vec![
        check!(
            "deletes.manifest.by-digest",
            "DELETE of a manifest by digest answers 202; then the digest and its tags are 404",
            manifest_by_digest
        ),
        check!(
            "deletes.manifest.by-tag",
            "DELETE by tag answers 202 and removes only the tag; the manifest stays by digest",
            manifest_by_tag
        ),
        check!(
            "deletes.blob",
            "DELETE of a blob answers 202; then GET and HEAD are 404 (BLOB_UNKNOWN)",
            blob
        ),
        check!(
            "deletes.manifest.unknown",
            "DELETE of an unknown manifest answers 404 (MANIFEST_UNKNOWN)",
            manifest_unknown
        ),
        check!(
            "deletes.blob.unknown",
            "DELETE of an unknown blob answers 404 (BLOB_UNKNOWN)",
            blob_unknown
        ),
        check!(
            "deletes.manifest.unknown-repo",
            "DELETE of a manifest in a repository that does not exist answers 404",
            unknown_repo
        ),
    ]
}

fn repo(ctx: &Ctx) -> String {
    ctx.sub_repo("deletes")
}

/// A DELETE answer: 202, or the 400/405 of disabled deletion (reported as missing `feature`).
/// Returns whether the deletion happened.
fn deleted(ctx: &Ctx, resp: &Resp, feature: Feature) -> Result<bool, crate::outcome::Failure> {
    if matches!(resp.status.as_u16(), 400 | 405) {
        ctx.missing(
            feature,
            format!("{}: deletion refused: {}", resp.summary(), resp.snippet()),
        )?;
        return Ok(false);
    }
    assert::status(resp, &[202])?;
    Ok(true)
}

async fn manifest_by_digest(ctx: &Ctx) -> Outcome {
    let repo = repo(ctx);
    let tag = format!("doomed-{}", content::unique_token());
    let image = push_image(ctx, &repo, Some(&tag)).await?;
    let digest = &image.manifest.digest;
    let path = repo_path(&repo, &format!("manifests/{digest}"));
    let resp = ctx.client.call(Method::DELETE, &path).await?;
    if !deleted(ctx, &resp, Feature::Delete)? {
        return Ok(());
    }
    // "Once deleted, a GET to /v2/<name>/manifests/<digest> and any tag pointing to that
    // digest will return a 404."
    for reference in [digest.as_str(), tag.as_str()] {
        let resp = fetch_manifest(ctx, Method::GET, &repo, reference).await?;
        assert::error(ctx, &resp, &[404], &["MANIFEST_UNKNOWN"])?;
        let resp = fetch_manifest(ctx, Method::HEAD, &repo, reference).await?;
        assert::status(&resp, &[404])?;
    }
    Ok(())
}

async fn manifest_by_tag(ctx: &Ctx) -> Outcome {
    let repo = repo(ctx);
    let token = content::unique_token();
    let (kept, dropped) = (format!("keep-{token}"), format!("drop-{token}"));
    let image = push_image(ctx, &repo, Some(&kept)).await?;
    push_manifest(ctx, &repo, &dropped, &image.manifest).await?;
    let path = repo_path(&repo, &format!("manifests/{dropped}"));
    let resp = ctx.client.call(Method::DELETE, &path).await?;
    // "a registry MAY implement tag deletion"; "If tag deletion is disabled, the registry MUST
    // respond with either a 400 Bad Request or a 405 Method Not Allowed."
    if !deleted(ctx, &resp, Feature::TagDelete)? {
        return Ok(());
    }
    // "Once deleted, a GET to /v2/<name>/manifests/<tag> will return a 404."
    let resp = fetch_manifest(ctx, Method::GET, &repo, &dropped).await?;
    assert::error(ctx, &resp, &[404], &["MANIFEST_UNKNOWN"])?;
    // Deleting a tag is not deleting the manifest: the digest and other tags still resolve.
    for reference in [image.manifest.digest.as_str(), kept.as_str()] {
        let resp = fetch_manifest(ctx, Method::GET, &repo, reference).await?;
        assert::status(&resp, &[200]).map_err(|it| it.context("after deleting a different tag"))?;
        assert::body(&resp, &image.manifest.bytes)?;
    }
    let resp = ctx
        .client
        .call(Method::GET, &repo_path(&repo, "tags/list"))
        .await?;
    assert::status(&resp, &[200])?;
    let value = resp.json()?;
    let tags: Vec<&str> = value
        .get("tags")
        .and_then(|it| it.as_array())
        .map(|list| list.iter().filter_map(|it| it.as_str()).collect())
        .unwrap_or_default();
    ensure!(
        tags.contains(&kept.as_str()) && !tags.contains(&dropped.as_str()),
        "tags after deleting {dropped}: {tags:?}"
    );
    Ok(())
}

async fn blob(ctx: &Ctx) -> Outcome {
    let repo = repo(ctx);
    let blob = Blob::layer(media::OCI_LAYER, 700);
    push_blob(ctx, &repo, &blob).await?;
    let path = repo_path(&repo, &format!("blobs/{}", blob.digest));
    let resp = ctx.client.call(Method::DELETE, &path).await?;
    if !deleted(ctx, &resp, Feature::Delete)? {
        return Ok(());
    }
    let resp = ctx.client.call(Method::GET, &path).await?;
    assert::error(ctx, &resp, &[404], &["BLOB_UNKNOWN"])?;
    let resp = ctx.client.call(Method::HEAD, &path).await?;
    assert::status(&resp, &[404])
}

async fn manifest_unknown(ctx: &Ctx) -> Outcome {
    let repo = repo(ctx);
    push_image(ctx, &repo, Some("present")).await?;
    let path = repo_path(&repo, &format!("manifests/{}", content::unknown_digest()));
    let resp = ctx.client.call(Method::DELETE, &path).await?;
    if matches!(resp.status.as_u16(), 400 | 405) {
        return ctx.missing(
            Feature::Delete,
            format!("{}: deletion refused: {}", resp.summary(), resp.snippet()),
        );
    }
    assert::error(ctx, &resp, &[404], &["MANIFEST_UNKNOWN"])
}

async fn blob_unknown(ctx: &Ctx) -> Outcome {
    let repo = repo(ctx);
    push_blob(ctx, &repo, &Blob::layer(media::OCI_LAYER, 10)).await?;
    let path = repo_path(&repo, &format!("blobs/{}", content::unknown_digest()));
    let resp = ctx.client.call(Method::DELETE, &path).await?;
    if matches!(resp.status.as_u16(), 400 | 405) {
        return ctx.missing(
            Feature::Delete,
            format!("{}: deletion refused: {}", resp.summary(), resp.snippet()),
        );
    }
    // "If the blob is not found, a 404 Not Found code MUST be returned."
    assert::error(ctx, &resp, &[404], &["BLOB_UNKNOWN"])
}

async fn unknown_repo(ctx: &Ctx) -> Outcome {
    let repo = ctx.sub_repo(&format!("never-pushed-{}", content::unique_token()));
    let path = repo_path(&repo, &format!("manifests/{}", content::unknown_digest()));
    let resp = ctx.client.call(Method::DELETE, &path).await?;
    if matches!(resp.status.as_u16(), 400 | 405) {
        return ctx.missing(
            Feature::Delete,
            format!("{}: deletion refused: {}", resp.summary(), resp.snippet()),
        );
    }
    // "If the repository does not exist, the response MUST return 404 Not Found."
    assert::error(ctx, &resp, &[404], &["NAME_UNKNOWN", "MANIFEST_UNKNOWN"])
}
