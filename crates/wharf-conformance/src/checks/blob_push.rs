//! Pushing blobs: POST then PUT, single POST, chunked and streamed PATCH, digest validation,
//! sha512 and the zero-length blob (end-4a, end-4b, end-5, end-6).

use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE};
use reqwest::{Method, Url};

use crate::assert;
use crate::client::Resp;
use crate::content::{self, media, Blob};
use crate::context::Ctx;
use crate::fixtures::{self, repo_path, start_upload, with_digest};
use crate::outcome::{ensure, fail, Failure, Feature, Outcome};
use crate::runner::{check, Check};

const OCTET_STREAM: &str = "application/octet-stream";

pub(super) fn checks() -> Vec<Check> {
    vec![
        check!(
            "blobs.push.post-put",
            "POST then PUT: 202 with a unique Location, then 201 with a pullable Location",
            post_put
        ),
        check!(
            "blobs.push.single-post",
            "single POST ?digest= answers 201 with Location and Docker-Content-Digest",
            single_post
        ),
        check!(
            "blobs.push.chunked",
            "chunked PATCH with Content-Range answers 202 with Location and Range, then PUT 201",
            chunked
        ),
        check!(
            "blobs.push.chunked-final-put",
            "chunked upload whose last chunk is sent in the closing PUT",
            chunked_final_put
        ),
        check!(
            "blobs.push.streamed",
            "streamed PATCH without Content-Range, then PUT 201",
            streamed
        ),
        check!(
            "blobs.push.digest-mismatch",
            "PUT with a digest that does not match the content answers 400 DIGEST_INVALID",
            digest_mismatch
        ),
        check!(
            "blobs.push.invalid-digest-post",
            "single POST with a malformed digest= answers 400 DIGEST_INVALID",
            invalid_digest_post
        ),
        check!(
            "blobs.push.invalid-digest-put",
            "closing PUT with a malformed digest= answers 400 DIGEST_INVALID",
            invalid_digest_put
        ),
        check!(
            "blobs.push.sha512",
            "a blob pushed and pulled by a sha512 digest",
            sha512
        ),
        check!(
            "blobs.push.zero-length",
            "a zero-length blob can be pushed and pulled",
            zero_length
        ),
    ]
}

async fn post_put(ctx: &Ctx) -> Outcome {
    let blob = Blob::layer(media::OCI_LAYER, 2048);
    let first = start_upload(ctx, &ctx.repo).await?;
    let second = start_upload(ctx, &ctx.repo).await?;
    // The spec: the location "MUST contain a UUID representing a unique session ID"; two
    // sessions therefore cannot share a location.
    ensure!(
        first != second,
        "two POSTs returned the same upload location {first}"
    );
    let resp = put_chunk(ctx, with_digest(&first, &blob.digest), &blob.bytes, None).await?;
    assert::status(&resp, &[201])?;
    assert::digest_header(ctx, &resp, &blob.digest)?;
    let location = assert::location(&resp)?;
    verify_pullable(ctx, &ctx.repo, &location, &blob).await
}

async fn single_post(ctx: &Ctx) -> Outcome {
    let blob = Blob::layer(media::OCI_LAYER, 1500);
    let path = repo_path(&ctx.repo, &format!("blobs/uploads/?digest={}", blob.digest));
    let builder = ctx
        .client
        .request(Method::POST, &path)?
        .header(CONTENT_TYPE, OCTET_STREAM)
        .body(blob.bytes.clone());
    let resp = ctx.client.send(builder).await?;
    assert::status(&resp, &[201, 202])?;
    let location = assert::location(&resp)?;
    if resp.status == 202 {
        // Spec: "Registries that do not support single request monolithic uploads SHOULD
        // return a 202 Accepted status code and Location header and clients SHOULD proceed with
        // a subsequent PUT request". The fallback must still work.
        let session = ctx.client.resolve(&location)?;
        let resp = put_chunk(ctx, with_digest(&session, &blob.digest), &blob.bytes, None).await?;
        assert::status(&resp, &[201])?;
        let location = assert::location(&resp)?;
        verify_pullable(ctx, &ctx.repo, &location, &blob).await?;
        return ctx.missing(
            Feature::SinglePost,
            "POST ?digest= answered 202 (upload session) instead of 201",
        );
    }
    assert::digest_header(ctx, &resp, &blob.digest)?;
    verify_pullable(ctx, &ctx.repo, &location, &blob).await
}

async fn chunked(ctx: &Ctx) -> Outcome {
    let (mut session, chunk) = start_chunked(ctx).await?;
    let blob = Blob::layer(media::OCI_LAYER, chunk * 2 + chunk / 2);
    let mut offset = 0;
    for piece in blob.bytes.chunks(chunk) {
        session = send_patch(ctx, &session, piece, offset).await?;
        offset += piece.len();
    }
    let resp = put_chunk(ctx, with_digest(&session, &blob.digest), &[], None).await?;
    assert::status(&resp, &[201])?;
    let location = assert::location(&resp)?;
    verify_pullable(ctx, &ctx.repo, &location, &blob).await
}

async fn chunked_final_put(ctx: &Ctx) -> Outcome {
    let (session, chunk) = start_chunked(ctx).await?;
    let blob = Blob::layer(media::OCI_LAYER, chunk + chunk / 3);
    let (head, tail) = blob.bytes.split_at(chunk);
    let session = send_patch(ctx, &session, head, 0).await?;
    // Spec: "The final chunk MAY be uploaded using a PATCH request or it MAY be uploaded in the
    // closing PUT request", with Content-Range and Content-Length of that chunk.
    let range = (chunk, blob.bytes.len() - 1);
    let resp = put_chunk(ctx, with_digest(&session, &blob.digest), tail, Some(range)).await?;
    assert::status(&resp, &[201])?;
    let location = assert::location(&resp)?;
    verify_pullable(ctx, &ctx.repo, &location, &blob).await
}

async fn streamed(ctx: &Ctx) -> Outcome {
    let blob = Blob::layer(media::OCI_LAYER, 4000);
    let session = start_upload(ctx, &ctx.repo).await?;
    let builder = ctx
        .client
        .request_url(Method::PATCH, session)
        .header(CONTENT_TYPE, OCTET_STREAM)
        .body(blob.bytes.clone());
    let resp = ctx.client.send(builder).await?;
    if resp.status.is_client_error() {
        // The v1.1 text only describes PATCH with Content-Range; the streamed form without it
        // comes from the Docker protocol that clients such as docker and containerd still use.
        return ctx.missing(
            Feature::StreamedPatch,
            format!("{}: {}", resp.summary(), resp.snippet()),
        );
    }
    assert::status(&resp, &[202])?;
    assert::upload_range(&resp, blob.bytes.len() as u64 - 1)?;
    let session = ctx.client.resolve(&assert::location(&resp)?)?;
    let resp = put_chunk(ctx, with_digest(&session, &blob.digest), &[], None).await?;
    assert::status(&resp, &[201])?;
    let location = assert::location(&resp)?;
    verify_pullable(ctx, &ctx.repo, &location, &blob).await
}

async fn digest_mismatch(ctx: &Ctx) -> Outcome {
    let blob = Blob::layer(media::OCI_LAYER, 512);
    let wrong = content::unknown_digest();
    let session = start_upload(ctx, &ctx.repo).await?;
    let resp = put_chunk(ctx, with_digest(&session, &wrong), &blob.bytes, None).await?;
    // end-6 lists 400 as the failure, and DIGEST_INVALID is "provided digest did not match
    // uploaded content".
    assert::error(ctx, &resp, &[400], &["DIGEST_INVALID"])?;
    // Neither digest may have become a blob.
    for digest in [&wrong, &blob.digest] {
        let resp = ctx
            .client
            .call(
                Method::HEAD,
                &repo_path(&ctx.repo, &format!("blobs/{digest}")),
            )
            .await?;
        assert::status(&resp, &[404]).map_err(|it| it.context("after a rejected PUT"))?;
    }
    Ok(())
}

async fn invalid_digest_post(ctx: &Ctx) -> Outcome {
    let blob = Blob::layer(media::OCI_LAYER, 64);
    let path = repo_path(&ctx.repo, "blobs/uploads/?digest=sha256:not-a-hex-digest");
    let builder = ctx
        .client
        .request(Method::POST, &path)?
        .header(CONTENT_TYPE, OCTET_STREAM)
        .body(blob.bytes.clone());
    let resp = ctx.client.send(builder).await?;
    if resp.status == 202 {
        // A registry without single-POST support may ignore `digest` and open a session.
        return ctx.missing(
            Feature::SinglePost,
            format!("{}: digest ignored, upload session opened", resp.summary()),
        );
    }
    // Spec (later revision, consistent with end-4b's 400): "if the client provided digest is
    // invalid or uses an unsupported algorithm, the registry SHOULD respond with 400".
    assert::error(ctx, &resp, &[400], &["DIGEST_INVALID"])
}

async fn invalid_digest_put(ctx: &Ctx) -> Outcome {
    let blob = Blob::layer(media::OCI_LAYER, 64);
    let session = start_upload(ctx, &ctx.repo).await?;
    let url = with_digest(&session, "sha256:zz");
    let resp = put_chunk(ctx, url, &blob.bytes, None).await?;
    assert::error(ctx, &resp, &[400], &["DIGEST_INVALID"])
}

async fn sha512(ctx: &Ctx) -> Outcome {
    let bytes = content::unique_bytes(3000);
    let digest = content::sha512(&bytes);
    // The spec's later revision asks clients to announce the algorithm when the upload starts,
    // so a registry that hashes while streaming can pick it; older registries ignore the
    // parameter, which keeps this request valid for them too.
    let session =
        fixtures::start_upload_with_query(ctx, &ctx.repo, "?digest-algorithm=sha512").await?;
    let resp = put_chunk(ctx, with_digest(&session, &digest), &bytes, None).await?;
    if resp.status == 400 {
        return ctx.missing(
            Feature::Sha512,
            format!("{}: {}", resp.summary(), resp.snippet()),
        );
    }
    assert::status(&resp, &[201])?;
    assert::location(&resp)?;
    let path = repo_path(&ctx.repo, &format!("blobs/{digest}"));
    let resp = ctx.client.call(Method::GET, &path).await?;
    assert::status(&resp, &[200])?;
    assert::body(&resp, &bytes)?;
    assert::content_digest(ctx, &resp, &bytes)?;
    let resp = ctx.client.call(Method::HEAD, &path).await?;
    assert::status(&resp, &[200])?;
    assert::content_length(&resp, bytes.len())
}

async fn zero_length(ctx: &Ctx) -> Outcome {
    let session = start_upload(ctx, &ctx.repo).await?;
    let resp = put_chunk(ctx, with_digest(&session, content::EMPTY_SHA256), &[], None).await?;
    assert::status(&resp, &[201])?;
    let path = repo_path(&ctx.repo, &format!("blobs/{}", content::EMPTY_SHA256));
    let resp = ctx.client.call(Method::GET, &path).await?;
    assert::status(&resp, &[200])?;
    ensure!(
        resp.body.is_empty(),
        "{}: {} bytes for an empty blob",
        resp.summary(),
        resp.body.len()
    );
    let resp = ctx.client.call(Method::HEAD, &path).await?;
    assert::status(&resp, &[200])?;
    assert::content_length(&resp, 0)
}

/// `POST` for a chunked upload; returns the session and a chunk size that honours any
/// `OCI-Chunk-Min-Length` the registry announced.
async fn start_chunked(ctx: &Ctx) -> Result<(Url, usize), Failure> {
    let builder = ctx
        .client
        .request(Method::POST, &repo_path(&ctx.repo, "blobs/uploads/"))?
        .header(CONTENT_LENGTH, "0");
    let resp = ctx.client.send(builder).await?;
    assert::status(&resp, &[202])?;
    let session = ctx.client.resolve(&assert::location(&resp)?)?;
    let min = match resp.header("OCI-Chunk-Min-Length") {
        None => 0,
        Some(value) => match value.trim().parse::<usize>() {
            Ok(it) => it,
            Err(_) => fail!(
                "{}: OCI-Chunk-Min-Length {value:?} is not a size",
                resp.summary()
            ),
        },
    };
    // Keep test blobs small unless the registry insists on large chunks; cap at 16 MiB so a
    // huge announced minimum cannot make the suite allocate without bound.
    ensure!(
        min <= 16 << 20,
        "OCI-Chunk-Min-Length {min} is larger than this suite's 16 MiB test chunks"
    );
    Ok((session, min.max(1000)))
}

/// Sends one chunk with `Content-Range: <start>-<end>` and checks the 202, `Location` and
/// `Range` the spec requires; returns the location for the next chunk.
pub(super) async fn send_patch(
    ctx: &Ctx,
    session: &Url,
    chunk: &[u8],
    offset: usize,
) -> Result<Url, Failure> {
    let resp = patch_range(ctx, session, chunk, offset).await?;
    assert::status(&resp, &[202])?;
    assert::upload_range(&resp, (offset + chunk.len()) as u64 - 1)?;
    ctx.client.resolve(&assert::location(&resp)?)
}

/// A `PATCH` with `Content-Range`, returning the response whatever its status.
pub(super) async fn patch_range(
    ctx: &Ctx,
    session: &Url,
    chunk: &[u8],
    offset: usize,
) -> Result<Resp, Failure> {
    let end = offset + chunk.len() - 1;
    let builder = ctx
        .client
        .request_url(Method::PATCH, session.clone())
        .header(CONTENT_TYPE, OCTET_STREAM)
        .header(CONTENT_RANGE, format!("{offset}-{end}"))
        .body(chunk.to_vec());
    ctx.client.send(builder).await
}

/// The closing (or monolithic) `PUT`, optionally with a final chunk and its range.
pub(super) async fn put_chunk(
    ctx: &Ctx,
    url: Url,
    body: &[u8],
    range: Option<(usize, usize)>,
) -> Result<Resp, Failure> {
    let mut builder = ctx
        .client
        .request_url(Method::PUT, url)
        .header(CONTENT_TYPE, OCTET_STREAM)
        .body(body.to_vec());
    if let Some((start, end)) = range {
        builder = builder.header(CONTENT_RANGE, format!("{start}-{end}"));
    }
    ctx.client.send(builder).await
}

/// The `Location` of a completed upload must be "a pullable blob URL", and the blob must also
/// be reachable at its canonical path.
pub(super) async fn verify_pullable(ctx: &Ctx, repo: &str, location: &str, blob: &Blob) -> Outcome {
    let url = ctx.client.resolve(location)?;
    let resp = ctx
        .client
        .send(ctx.client.request_url(Method::GET, url))
        .await?;
    assert::status(&resp, &[200]).map_err(|it| it.context("GET of the returned Location"))?;
    assert::body(&resp, &blob.bytes)?;
    let path = repo_path(repo, &format!("blobs/{}", blob.digest));
    let resp = ctx.client.call(Method::GET, &path).await?;
    assert::status(&resp, &[200])?;
    assert::body(&resp, &blob.bytes)
}
