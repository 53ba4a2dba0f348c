//! Cross-repository blob mounts (end-11), including the fallbacks to an upload session.

use reqwest::header::CONTENT_LENGTH;
use reqwest::Method;

use super::blob_push::{put_chunk, verify_pullable};
use crate::assert;
use crate::client::Resp;
use crate::content::{media, Blob};
use crate::context::Ctx;
use crate::fixtures::{push_blob, repo_path, with_digest};
use crate::outcome::{Failure, Feature, Outcome};
use crate::runner::{check, Check};

pub(super) fn checks() -> Vec<Check> {
    vec![
        check!(
            "blobs.mount.from",
            "POST ?mount=<digest>&from=<repo> answers 201 with Location and the blob is pullable",
            from
        ),
        check!(
            "blobs.mount.missing-source",
            "mounting a blob absent from `from` answers 202 with a usable upload session",
            missing_source
        ),
        check!(
            "blobs.mount.no-from",
            "POST ?mount=<digest> without `from` answers 201, or 202 with a usable upload session",
            no_from
        ),
    ]
}

async fn from(ctx: &Ctx) -> Outcome {
    let blob = Blob::layer(media::OCI_LAYER, 1200);
    push_blob(ctx, &ctx.cross_repo, &blob).await?;
    let query = format!("mount={}&from={}", blob.digest, ctx.cross_repo);
    let resp = post_mount(ctx, &query).await?;
    assert::status(&resp, &[201, 202])?;
    if resp.status == 202 {
        // "if a registry does not support cross-repository mounting or is unable to mount the
        // requested blob, it SHOULD return a 202"; the session must then work.
        complete_session(ctx, &resp, &blob).await?;
        return ctx.missing(
            Feature::Mount,
            format!(
                "{}: mount not performed, upload session opened",
                resp.summary()
            ),
        );
    }
    let location = assert::location(&resp)?;
    verify_pullable(ctx, &ctx.repo, &location, &blob).await
}

async fn missing_source(ctx: &Ctx) -> Outcome {
    // The blob exists nowhere: `from` exists (it gets an unrelated blob) but lacks this one.
    push_blob(ctx, &ctx.cross_repo, &Blob::layer(media::OCI_LAYER, 10)).await?;
    let blob = Blob::layer(media::OCI_LAYER, 900);
    let query = format!("mount={}&from={}", blob.digest, ctx.cross_repo);
    let resp = post_mount(ctx, &query).await?;
    // A registry "unable to mount the requested blob ... SHOULD return a 202. This indicates
    // that the upload session has begun"; a 201 would claim a blob that does not exist.
    assert::status(&resp, &[202])?;
    complete_session(ctx, &resp, &blob).await
}

async fn no_from(ctx: &Ctx) -> Outcome {
    let blob = Blob::layer(media::OCI_LAYER, 800);
    push_blob(ctx, &ctx.cross_repo, &blob).await?;
    let resp = post_mount(ctx, &format!("mount={}", blob.digest)).await?;
    // "The registry MAY treat the from parameter as optional, and it MAY cross-mount the blob
    // if it can be found"; otherwise it opens a session. Both are conformant.
    assert::status(&resp, &[201, 202])?;
    if resp.status == 201 {
        let location = assert::location(&resp)?;
        return verify_pullable(ctx, &ctx.repo, &location, &blob).await;
    }
    complete_session(ctx, &resp, &blob).await
}

async fn post_mount(ctx: &Ctx, query: &str) -> Result<Resp, Failure> {
    let path = repo_path(&ctx.repo, &format!("blobs/uploads/?{query}"));
    let builder = ctx
        .client
        .request(Method::POST, &path)?
        .header(CONTENT_LENGTH, "0");
    ctx.client.send(builder).await
}

/// A 202 from a mount is an upload session: it needs a Location, and uploading the blob there
/// must succeed.
async fn complete_session(ctx: &Ctx, resp: &Resp, blob: &Blob) -> Outcome {
    let location = assert::location(resp)?;
    let session = ctx.client.resolve(&location)?;
    let resp = put_chunk(ctx, with_digest(&session, &blob.digest), &blob.bytes, None).await?;
    assert::status(&resp, &[201]).map_err(|it| it.context("uploading into the 202 session"))?;
    let location = assert::location(&resp)?;
    verify_pullable(ctx, &ctx.repo, &location, blob).await
}
