//! Upload sessions: status (end-13), out-of-order chunks (416), cancellation (end-14) and
//! sessions that no longer exist.
//!
//! Session URLs are used exactly as the registry returned them: the spec says the location
//! "SHOULD NOT be assembled manually by clients", so an unknown session is produced by closing a
//! real one rather than by inventing a path.

use reqwest::Method;

use super::blob_push::{patch_range, put_chunk, send_patch};
use crate::assert;
use crate::content::{media, Blob};
use crate::context::Ctx;
use crate::fixtures::{start_upload, with_digest};
use crate::outcome::{Feature, Outcome};
use crate::runner::{check, Check};

/// Chunk size for these checks; larger than any sensible minimum is not needed because these
/// sessions only test bookkeeping, but the blobs stay well above a few bytes.
const CHUNK: usize = 1000;

pub(super) fn checks() -> Vec<Check> {
    vec![
        check!(
            "blobs.upload.status",
            "GET on an upload session answers 204 with Location and Range, and the upload goes on",
            status
        ),
        check!(
            "blobs.upload.out-of-order",
            "a chunk that does not start at the current offset answers 416",
            out_of_order
        ),
        check!(
            "blobs.upload.cancel",
            "DELETE of an upload session answers 204, then the session is 404 BLOB_UPLOAD_UNKNOWN",
            cancel
        ),
        check!(
            "blobs.upload.closed",
            "a completed upload session answers 404 BLOB_UPLOAD_UNKNOWN",
            closed
        ),
    ]
}

async fn status(ctx: &Ctx) -> Outcome {
    let blob = Blob::layer(media::OCI_LAYER, CHUNK * 2);
    let session = start_upload(ctx, &ctx.repo).await?;
    let session = send_patch(ctx, &session, &blob.bytes[..CHUNK], 0).await?;
    let resp = ctx
        .client
        .send(ctx.client.request_url(Method::GET, session.clone()))
        .await?;
    assert::status(&resp, &[204])?;
    assert::upload_range(&resp, CHUNK as u64 - 1)?;
    // "The following chunk upload SHOULD use the <location> provided in the response."
    let session = ctx.client.resolve(&assert::location(&resp)?)?;
    let session = send_patch(ctx, &session, &blob.bytes[CHUNK..], CHUNK).await?;
    let resp = put_chunk(ctx, with_digest(&session, &blob.digest), &[], None).await?;
    assert::status(&resp, &[201])
}

async fn out_of_order(ctx: &Ctx) -> Outcome {
    let blob = Blob::layer(media::OCI_LAYER, CHUNK * 3);
    let session = start_upload(ctx, &ctx.repo).await?;
    let session = send_patch(ctx, &session, &blob.bytes[..CHUNK], 0).await?;
    // Skip ahead by one chunk: "If a chunk is uploaded out of order, the registry MUST respond
    // with a 416 Requested Range Not Satisfiable code."
    let resp = patch_range(ctx, &session, &blob.bytes[CHUNK * 2..], CHUNK * 2).await?;
    assert::status(&resp, &[416])?;
    // "To get the current status after a 416 error, issue a GET request"; the offset must not
    // have moved.
    let resp = ctx
        .client
        .send(ctx.client.request_url(Method::GET, session))
        .await?;
    assert::status(&resp, &[204]).map_err(|it| it.context("status after the 416"))?;
    assert::upload_range(&resp, CHUNK as u64 - 1)
}

async fn cancel(ctx: &Ctx) -> Outcome {
    let blob = Blob::layer(media::OCI_LAYER, CHUNK);
    let session = start_upload(ctx, &ctx.repo).await?;
    let session = send_patch(ctx, &session, &blob.bytes, 0).await?;
    let resp = ctx
        .client
        .send(ctx.client.request_url(Method::DELETE, session.clone()))
        .await?;
    if matches!(resp.status.as_u16(), 400 | 404 | 405) {
        // Cancellation is end-14 in the spec's revision after v1.1.1; the v1.1.1 text has no
        // DELETE on sessions (the Docker-era text answered 204).
        return ctx.missing(
            Feature::UploadCancel,
            format!("{}: {}", resp.summary(), resp.snippet()),
        );
    }
    // "If successful, the response SHOULD be a 204 No Content": other 2xx are successes too.
    assert::status(&resp, &[200, 202, 204])?;
    let resp = ctx
        .client
        .send(ctx.client.request_url(Method::GET, session))
        .await?;
    // end-13 fails with 404; BLOB_UPLOAD_UNKNOWN is "blob upload unknown to registry".
    assert::error(ctx, &resp, &[404], &["BLOB_UPLOAD_UNKNOWN"])
}

async fn closed(ctx: &Ctx) -> Outcome {
    let blob = Blob::layer(media::OCI_LAYER, CHUNK);
    let session = start_upload(ctx, &ctx.repo).await?;
    let resp = put_chunk(ctx, with_digest(&session, &blob.digest), &blob.bytes, None).await?;
    assert::status(&resp, &[201])?;
    let resp = ctx
        .client
        .send(ctx.client.request_url(Method::GET, session.clone()))
        .await?;
    assert::error(ctx, &resp, &[404], &["BLOB_UPLOAD_UNKNOWN"])?;
    // end-5: a PATCH to a session that no longer exists fails with 404 as well.
    let resp = patch_range(ctx, &session, &blob.bytes, 0).await?;
    assert::error(ctx, &resp, &[404], &["BLOB_UPLOAD_UNKNOWN"])
}
