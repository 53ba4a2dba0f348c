//! Tagging a manifest in the push by digest (end-7b): `PUT .../manifests/<digest>?tag=a&tag=b`.
//!
//! The later revision of the spec lets a registry "support the pushing of tags specified by
//! addition of `tag` query parameters"; one that does "MUST include an `OCI-Tag` response
//! header, in accordance with RFC 9110 (section 5) semantics, for each accepted tag", so the
//! header may list several tags per line, comma-separated, over one or more lines. A registry
//! that ignores the parameters answers 201 without `OCI-Tag`: that is the optional feature
//! `tag-param` missing, not a failure of the push.
//! Every check works in a sub-repository of its own, so tag lists are exactly what it pushed.

use reqwest::Method;

use crate::assert;
use crate::client::Resp;
use crate::content::{self, media, Blob, Manifest};
use crate::context::Ctx;
use crate::fixtures::{fetch_manifest, push_image_blobs, push_manifest, repo_path};
use crate::outcome::{ensure, fail, Failure, Feature, Outcome};
use crate::runner::{check, Check};

/// The spec's example tags, then enough more to reach the ten a registry "SHOULD support".
const SEVERAL: [&str; 10] = [
    "1.2.3",
    "1.2",
    "1",
    "latest",
    "stable",
    "v1.2.3",
    "release_1",
    "a-b",
    "X.Y",
    "z9",
];

pub(super) fn checks() -> Vec<Check> {
    vec![
        check!(
            "manifests.tag-param.applied",
            "PUT by digest with ?tag= answers 201 with OCI-Tag naming the tag, which then pulls the manifest",
            applied
        ),
        check!(
            "manifests.tag-param.several",
            "ten ?tag= parameters are all applied, each listed once in OCI-Tag and in tags/list",
            several
        ),
        check!(
            "manifests.tag-param.moves",
            "?tag= moves a tag that pointed at another manifest, and a repeated tag is listed once",
            moves
        ),
        check!(
            "manifests.tag-param.invalid",
            "a ?tag= outside the tag grammar is never applied, and a push refused for it applies no tag",
            invalid
        ),
        check!(
            "manifests.tag-param.digest-mismatch",
            "PUT by a digest that does not match the body, with ?tag=, answers 400 DIGEST_INVALID and tags nothing",
            digest_mismatch
        ),
    ]
}

/// A fresh image manifest over fresh blobs in `repo` (not pushed).
async fn fresh_manifest(ctx: &Ctx, repo: &str) -> Result<Manifest, Failure> {
    let (config, layers) = push_image_blobs(ctx, repo, media::OCI_MANIFEST).await?;
    Ok(content::image_manifest(
        media::OCI_MANIFEST,
        &config.descriptor(),
        &layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
        Default::default(),
    ))
}

/// `PUT /v2/<repo>/manifests/<reference>?tag=...`, one `tag` parameter per entry, in order.
async fn put_tagged(
    ctx: &Ctx,
    repo: &str,
    reference: &str,
    manifest: &Manifest,
    tags: &[&str],
) -> Result<Resp, Failure> {
    let query: Vec<(&str, &str)> = tags.iter().map(|tag| ("tag", *tag)).collect();
    let builder = ctx
        .client
        .request(
            Method::PUT,
            &repo_path(repo, &format!("manifests/{reference}")),
        )?
        .query(&query)
        .header(reqwest::header::CONTENT_TYPE, &manifest.media_type)
        .body(manifest.bytes.clone());
    ctx.client.send(builder).await
}

/// The tags an `OCI-Tag` header lists: every line, split on commas (RFC 9110, section 5.3:
/// several field lines are one comma-separated list), surrounding whitespace dropped.
fn listed_tags(resp: &Resp) -> Vec<String> {
    resp.header_all("oci-tag")
        .iter()
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .filter(|tag| !tag.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether the registry took the `?tag=` parameters of a successful push at all: a 201
/// without any `OCI-Tag` is a registry without the feature (reported through
/// [`Ctx::missing`]), so the caller stops there.
fn supports_tag_param(ctx: &Ctx, resp: &Resp) -> Result<bool, Failure> {
    if resp.headers.contains_key("oci-tag") {
        return Ok(true);
    }
    ctx.missing(
        Feature::TagParam,
        format!("{}: 201 without an OCI-Tag header", resp.summary()),
    )?;
    Ok(false)
}

/// The header lists exactly `expected`, each tag once (order is not prescribed).
fn lists_exactly(resp: &Resp, expected: &[&str]) -> Outcome {
    let mut listed = listed_tags(resp);
    let lines = resp.header_all("oci-tag");
    listed.sort();
    let mut wanted: Vec<String> = expected.iter().map(|tag| (*tag).to_owned()).collect();
    wanted.sort();
    wanted.dedup();
    ensure!(
        listed == wanted,
        "{}: OCI-Tag lines {lines:?} list {listed:?}, expected each of {wanted:?} once",
        resp.summary()
    );
    Ok(())
}

/// `reference` in `repo` serves `manifest`.
async fn resolves_to(ctx: &Ctx, repo: &str, reference: &str, manifest: &Manifest) -> Outcome {
    let resp = fetch_manifest(ctx, Method::GET, repo, reference).await?;
    assert::status(&resp, &[200])
        .and_then(|()| assert::body(&resp, &manifest.bytes))
        .and_then(|()| assert::content_digest(ctx, &resp, &manifest.bytes))
        .map_err(|it| it.context(&format!("GET of tag {reference}")))
}

/// `tag` does not exist in `repo`.
async fn absent(ctx: &Ctx, repo: &str, tag: &str, why: &str) -> Outcome {
    let resp = fetch_manifest(ctx, Method::GET, repo, tag).await?;
    ensure!(
        resp.status == 404,
        "{}: tag {tag:?} exists after {why}",
        resp.summary()
    );
    Ok(())
}

async fn applied(ctx: &Ctx) -> Outcome {
    let repo = ctx.sub_repo("tag-param-applied");
    let manifest = fresh_manifest(ctx, &repo).await?;
    let tag = format!("t-{}", content::unique_token());
    let resp = put_tagged(ctx, &repo, &manifest.digest, &manifest, &[&tag]).await?;
    assert::status(&resp, &[201])?;
    assert::location(&resp)?;
    assert::digest_header(ctx, &resp, &manifest.digest)?;
    if !supports_tag_param(ctx, &resp)? {
        return Ok(());
    }
    lists_exactly(&resp, &[&tag])?;
    resolves_to(ctx, &repo, &tag, &manifest).await?;
    resolves_to(ctx, &repo, &manifest.digest, &manifest).await
}

async fn several(ctx: &Ctx) -> Outcome {
    let repo = ctx.sub_repo("tag-param-several");
    let manifest = fresh_manifest(ctx, &repo).await?;
    let resp = put_tagged(ctx, &repo, &manifest.digest, &manifest, &SEVERAL).await?;
    assert::status(&resp, &[201])?;
    if !supports_tag_param(ctx, &resp)? {
        return Ok(());
    }
    lists_exactly(&resp, &SEVERAL)?;
    for tag in SEVERAL {
        resolves_to(ctx, &repo, tag, &manifest).await?;
    }
    let resp = ctx
        .client
        .call(Method::GET, &repo_path(&repo, "tags/list"))
        .await?;
    assert::status(&resp, &[200])?;
    let value = resp.json()?;
    let mut listed: Vec<&str> = value["tags"]
        .as_array()
        .map(|tags| tags.iter().filter_map(|it| it.as_str()).collect())
        .unwrap_or_default();
    listed.sort_unstable();
    let mut expected = SEVERAL.to_vec();
    expected.sort_unstable();
    ensure!(
        listed == expected,
        "{}: tags {listed:?}, expected {expected:?}",
        resp.summary()
    );
    Ok(())
}

async fn moves(ctx: &Ctx) -> Outcome {
    let repo = ctx.sub_repo("tag-param-moves");
    let first = fresh_manifest(ctx, &repo).await?;
    push_manifest(ctx, &repo, "moving", &first).await?;
    let second = fresh_manifest(ctx, &repo).await?;
    // The same tag twice: it is one tag, so OCI-Tag lists it once.
    let resp = put_tagged(
        ctx,
        &repo,
        &second.digest,
        &second,
        &["moving", "fresh", "moving"],
    )
    .await?;
    assert::status(&resp, &[201])?;
    if !supports_tag_param(ctx, &resp)? {
        return Ok(());
    }
    lists_exactly(&resp, &["moving", "fresh"])?;
    resolves_to(ctx, &repo, "moving", &second).await?;
    resolves_to(ctx, &repo, "fresh", &second).await?;
    // The manifest the tag left stays pullable by digest.
    resolves_to(ctx, &repo, &first.digest, &first).await
}

async fn invalid(ctx: &Ctx) -> Outcome {
    let repo = ctx.sub_repo("tag-param-invalid");
    // The repository exists, so a 404 cannot be about an unknown name.
    let base = fresh_manifest(ctx, &repo).await?;
    push_manifest(ctx, &repo, "base", &base).await?;
    let too_long = format!("t{}", "a".repeat(128));
    for bad in [".dot", "-dash", "a:b", "", too_long.as_str()] {
        let manifest = fresh_manifest(ctx, &repo).await?;
        let good = format!("good-{}", content::unique_token());
        let resp = put_tagged(ctx, &repo, &manifest.digest, &manifest, &[&good, bad]).await?;
        // A tag "MUST match" [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}; the spec names no status or
        // code for a bad one, so any refusal that is not a server error passes.
        ensure!(
            !resp.status.is_server_error(),
            "{}: server error for ?tag={bad:?}: {}",
            resp.summary(),
            resp.snippet()
        );
        if resp.status.is_success() {
            // A registry may accept the push and only some tags ("for each accepted tag"),
            // but never the invalid one.
            ensure!(
                !listed_tags(&resp).iter().any(|it| it == bad),
                "{}: OCI-Tag lists the invalid tag {bad:?}",
                resp.summary()
            );
            continue;
        }
        // A refused push is refused whole: the valid tag beside the bad one must not move,
        // or the client would be told "failed" about a change that happened.
        absent(
            ctx,
            &repo,
            &good,
            &format!("a refused push with ?tag={bad:?}"),
        )
        .await?;
    }
    resolves_to(ctx, &repo, "base", &base).await
}

async fn digest_mismatch(ctx: &Ctx) -> Outcome {
    let repo = ctx.sub_repo("tag-param-mismatch");
    let base = fresh_manifest(ctx, &repo).await?;
    push_manifest(ctx, &repo, "base", &base).await?;
    let manifest = fresh_manifest(ctx, &repo).await?;
    let other = content::sha256(&content::unique_bytes(64));
    let tag = format!("t-{}", content::unique_token());
    let resp = put_tagged(ctx, &repo, &other, &manifest, &[&tag, "base"]).await?;
    // "If the digest does not match, the registry MUST return DIGEST_INVALID"; the tag
    // parameters do not change what the path names.
    assert::error(ctx, &resp, &[400], &["DIGEST_INVALID"])?;
    if !listed_tags(&resp).is_empty() {
        fail!("{}: OCI-Tag on a refused push", resp.summary());
    }
    absent(ctx, &repo, &tag, "a push with a mismatched digest").await?;
    resolves_to(ctx, &repo, "base", &base).await
}
