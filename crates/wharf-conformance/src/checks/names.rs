//! Repository names outside the spec's grammar must be refused, never accepted or crashed on.
//!
//! `<name>` "MUST match" `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`
//! and NAME_INVALID is the spec's code for "invalid repository name"; but a registry whose
//! router simply does not match such a path answers a plain 404, which is just as safe.
//! So each request must end in 400 NAME_INVALID or 404, and never in a success or a 5xx.

use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::Method;

use crate::assert;
use crate::client::Resp;
use crate::content::{self, media, Blob};
use crate::context::Ctx;
use crate::fixtures::repo_path;
use crate::outcome::{ensure, fail, Outcome};
use crate::runner::{check, Check};

pub(super) fn checks() -> Vec<Check> {
    vec![
        check!(
            "names.invalid.uppercase",
            "a name with upper case answers 400 NAME_INVALID or 404 on every endpoint",
            uppercase
        ),
        check!(
            "names.invalid.separators",
            "names with `..`, leading or trailing separators answer 400 NAME_INVALID or 404",
            separators
        ),
        check!(
            "names.invalid.dotdot-segment",
            "a literal `..` path segment in a name is refused without a 5xx",
            dotdot_segment
        ),
    ]
}

fn name_refused(ctx: &Ctx, resp: &Resp) -> Outcome {
    match resp.status.as_u16() {
        400 => assert::error(ctx, resp, &[400], &["NAME_INVALID"]),
        404 => Ok(()),
        _ => fail!(
            "{}: expected 400 NAME_INVALID or 404: {}",
            resp.summary(),
            resp.snippet()
        ),
    }
}

/// Tries the read and write endpoints that take a name.
async fn probe(ctx: &Ctx, repo: &str) -> Outcome {
    let resp = ctx
        .client
        .call(Method::GET, &repo_path(repo, "tags/list"))
        .await?;
    name_refused(ctx, &resp)?;
    let resp = ctx
        .client
        .call(Method::GET, &repo_path(repo, "manifests/latest"))
        .await?;
    name_refused(ctx, &resp)?;
    let builder = ctx
        .client
        .request(Method::POST, &repo_path(repo, "blobs/uploads/"))?
        .header(CONTENT_LENGTH, "0");
    let resp = ctx.client.send(builder).await?;
    name_refused(ctx, &resp)?;
    // A well-formed manifest whose blobs exist nowhere: the name is the only thing wrong with
    // it (unless a redirect normalises the name, and then the unknown blobs are).
    let layer = Blob::layer(media::OCI_LAYER, 10);
    let config = Blob::config(media::OCI_CONFIG, &[&layer]);
    let manifest = content::image_manifest(
        media::OCI_MANIFEST,
        &config.descriptor(),
        &[layer.descriptor()],
        Default::default(),
    );
    let builder = ctx
        .client
        .request(
            Method::PUT,
            &repo_path(repo, &format!("manifests/{}", manifest.digest)),
        )?
        .header(CONTENT_TYPE, media::OCI_MANIFEST)
        .body(manifest.bytes);
    let resp = ctx.client.send(builder).await?;
    // A registry may validate the body before the name, so any refusal will do here.
    assert::refused(&resp)
}

async fn uppercase(ctx: &Ctx) -> Outcome {
    probe(ctx, &format!("Conformance/X-{}", ctx.token)).await
}

async fn separators(ctx: &Ctx) -> Outcome {
    for repo in [
        format!("conformance/a..b-{}", ctx.token),
        format!("conformance/-lead-{}", ctx.token),
        format!("conformance/trail-{}_", ctx.token),
        format!("conformance//empty-{}", ctx.token),
    ] {
        probe(ctx, &repo).await?;
    }
    Ok(())
}

async fn dotdot_segment(ctx: &Ctx) -> Outcome {
    let path = format!("/v2/{}/../x-{}/tags/list", ctx.repo, ctx.token);
    let status = ctx.client.raw_get(&path).await?;
    // A redirect to the normalised path is an RFC 3986 reading of `..` and the spec lets a
    // registry redirect any request; what must not happen is a success on the raw name or a
    // server error.
    ensure!(
        !(200..300).contains(&status) && status < 500,
        "GET {path} -> {status}: expected 400, 404 or a redirect"
    );
    Ok(())
}
