//! Pulling blobs: GET, HEAD, ranges and unknown digests (end-2).

use reqwest::header::RANGE;
use reqwest::Method;

use crate::assert;
use crate::content::{self, media, Blob};
use crate::context::Ctx;
use crate::fixtures::{push_blob, repo_path};
use crate::outcome::{ensure, Failure, Feature, Outcome};
use crate::runner::{check, Check};

const SIZE: usize = 3000;

pub(super) fn checks() -> Vec<Check> {
    vec![
        check!(
            "blobs.pull.get",
            "GET of a blob answers 200 with the exact bytes, Content-Length and Docker-Content-Digest",
            get
        ),
        check!(
            "blobs.pull.head",
            "HEAD of a blob answers 200 with Content-Length and Docker-Content-Digest and no body",
            head
        ),
        check!(
            "blobs.pull.range",
            "GET with Range: bytes=0-9 answers 206 with Content-Range and those bytes",
            range
        ),
        check!(
            "blobs.pull.range-unsatisfiable",
            "GET with a Range past the end answers 416",
            range_unsatisfiable
        ),
        check!(
            "blobs.pull.unknown",
            "GET and HEAD of an unknown blob answer 404 (BLOB_UNKNOWN)",
            unknown
        ),
    ]
}

async fn pushed(ctx: &Ctx) -> Result<(Blob, String), Failure> {
    let blob = Blob::layer(media::OCI_LAYER, SIZE);
    push_blob(ctx, &ctx.repo, &blob).await?;
    let path = repo_path(&ctx.repo, &format!("blobs/{}", blob.digest));
    Ok((blob, path))
}

async fn get(ctx: &Ctx) -> Outcome {
    let (blob, path) = pushed(ctx).await?;
    let resp = ctx.client.call(Method::GET, &path).await?;
    assert::status(&resp, &[200])?;
    assert::body(&resp, &blob.bytes)?;
    assert::content_length(&resp, SIZE)?;
    assert::content_digest(ctx, &resp, &blob.bytes)
}

async fn head(ctx: &Ctx) -> Outcome {
    let (blob, path) = pushed(ctx).await?;
    let resp = ctx.client.call(Method::HEAD, &path).await?;
    assert::status(&resp, &[200])?;
    ensure!(
        resp.body.is_empty(),
        "{}: HEAD returned {} body bytes",
        resp.summary(),
        resp.body.len()
    );
    // "A successful response SHOULD [later revision: MUST] contain the size in bytes of the
    // uploaded blob in the header Content-Length"; clients rely on it to size downloads.
    assert::content_length(&resp, SIZE)?;
    assert::content_digest(ctx, &resp, &blob.bytes)
}

async fn range(ctx: &Ctx) -> Outcome {
    let (blob, path) = pushed(ctx).await?;
    for (start, end) in [(0usize, 9usize), (100, 1099)] {
        let builder = ctx
            .client
            .request(Method::GET, &path)?
            .header(RANGE, format!("bytes={start}-{end}"));
        let resp = ctx.client.send(builder).await?;
        if resp.status == 200 {
            // "A registry SHOULD support the Range request header"; ignoring it (a full 200) is
            // what RFC 9110 allows a server without range support to do.
            assert::body(&resp, &blob.bytes)?;
            return ctx.missing(Feature::Range, format!("{}: Range ignored", resp.summary()));
        }
        assert::status(&resp, &[206])?;
        let expected = format!("bytes {start}-{end}/{SIZE}");
        let got = assert::header(&resp, "Content-Range")?;
        ensure!(
            got == expected,
            "{}: Content-Range {got:?}, expected {expected:?}",
            resp.summary()
        );
        assert::body(&resp, &blob.bytes[start..=end])?;
    }
    Ok(())
}

async fn range_unsatisfiable(ctx: &Ctx) -> Outcome {
    let (blob, path) = pushed(ctx).await?;
    let builder = ctx
        .client
        .request(Method::GET, &path)?
        .header(RANGE, format!("bytes={}-{}", SIZE + 100, SIZE + 200));
    let resp = ctx.client.send(builder).await?;
    if resp.status == 200 {
        assert::body(&resp, &blob.bytes)?;
        return ctx.missing(Feature::Range, format!("{}: Range ignored", resp.summary()));
    }
    // RFC 9110 section 15.5.17: a range that starts past the end is not satisfiable.
    assert::status(&resp, &[416])
}

async fn unknown(ctx: &Ctx) -> Outcome {
    // The repository must exist so that the answer is about the blob, not the name.
    let _ = pushed(ctx).await?;
    let path = repo_path(&ctx.repo, &format!("blobs/{}", content::unknown_digest()));
    let resp = ctx.client.call(Method::GET, &path).await?;
    assert::error(ctx, &resp, &[404], &["BLOB_UNKNOWN"])?;
    let resp = ctx.client.call(Method::HEAD, &path).await?;
    assert::status(&resp, &[404])
}
