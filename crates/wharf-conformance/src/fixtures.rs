//! Setup steps shared by checks: starting uploads, pushing blobs, manifests and whole images.
//!
//! Blobs are pushed with POST then PUT, the one upload flow whose every status the spec makes a
//! MUST, so setup relies on as little optional behaviour as possible.
//! Every helper checks the statuses it depends on and says which step broke, so a check whose
//! setup fails reports that instead of a confusing later assertion.

use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, Url};

use crate::assert;
use crate::client::Resp;
use crate::content::{self, media, Blob, Manifest};
use crate::context::Ctx;
use crate::outcome::{fail, Failure};

/// An image pushed for a check: its blobs and its manifest.
#[derive(Clone, Debug)]
pub struct Image {
    /// The config blob.
    pub config: Blob,
    /// The layer blobs.
    pub layers: Vec<Blob>,
    /// The manifest as pushed.
    pub manifest: Manifest,
}

/// The path of an endpoint below a repository, e.g. `/v2/<repo>/tags/list`.
pub fn repo_path(repo: &str, rest: &str) -> String {
    format!("/v2/{repo}/{rest}")
}

/// `POST /v2/<repo>/blobs/uploads/` with `Content-Length: 0`; returns the session URL.
pub async fn start_upload(ctx: &Ctx, repo: &str) -> Result<Url, Failure> {
    start_upload_with_query(ctx, repo, "").await
}

/// Like [`start_upload`] with a query string (`?digest-algorithm=...`) appended.
pub async fn start_upload_with_query(ctx: &Ctx, repo: &str, query: &str) -> Result<Url, Failure> {
    let builder = ctx
        .client
        .request(
            Method::POST,
            &repo_path(repo, &format!("blobs/uploads/{query}")),
        )?
        .header(CONTENT_LENGTH, "0");
    let resp = ctx.client.send(builder).await?;
    assert::status(&resp, &[202]).map_err(|it| it.context("starting upload"))?;
    let location = assert::location(&resp)?;
    ctx.client.resolve(&location)
}

/// The session URL with `digest=<digest>` added, keeping any query the registry put there (the
/// spec warns the location "MAY contain critical query parameters").
pub fn with_digest(location: &Url, digest: &str) -> Url {
    let mut url = location.clone();
    url.query_pairs_mut().append_pair("digest", digest);
    url
}

/// Pushes bytes to a repository with POST then PUT and returns the PUT's response (201).
pub async fn push_bytes(
    ctx: &Ctx,
    repo: &str,
    bytes: &[u8],
    digest: &str,
) -> Result<Resp, Failure> {
    let location = start_upload(ctx, repo).await?;
    let builder = ctx
        .client
        .request_url(Method::PUT, with_digest(&location, digest))
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(bytes.to_vec());
    let resp = ctx.client.send(builder).await?;
    assert::status(&resp, &[201]).map_err(|it| it.context("completing upload"))?;
    Ok(resp)
}

/// Pushes a blob with POST then PUT.
pub async fn push_blob(ctx: &Ctx, repo: &str, blob: &Blob) -> Result<(), Failure> {
    push_bytes(ctx, repo, &blob.bytes, &blob.digest)
        .await
        .map_err(|it| it.context(&format!("pushing blob {}", blob.digest)))?;
    Ok(())
}

/// `PUT /v2/<repo>/manifests/<reference>` with the manifest's media type; returns the response
/// whatever its status.
pub async fn put_manifest(
    ctx: &Ctx,
    repo: &str,
    reference: &str,
    manifest: &Manifest,
) -> Result<Resp, Failure> {
    put_manifest_bytes(ctx, repo, reference, &manifest.media_type, &manifest.bytes).await
}

/// `PUT /v2/<repo>/manifests/<reference>` with arbitrary bytes.
pub async fn put_manifest_bytes(
    ctx: &Ctx,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> Result<Resp, Failure> {
    let builder = ctx
        .client
        .request(
            Method::PUT,
            &repo_path(repo, &format!("manifests/{reference}")),
        )?
        .header(CONTENT_TYPE, media_type)
        .body(bytes.to_vec());
    ctx.client.send(builder).await
}

/// Pushes a manifest and requires 201.
pub async fn push_manifest(
    ctx: &Ctx,
    repo: &str,
    reference: &str,
    manifest: &Manifest,
) -> Result<Resp, Failure> {
    let resp = put_manifest(ctx, repo, reference, manifest).await?;
    assert::status(&resp, &[201])
        .map_err(|it| it.context(&format!("pushing manifest {reference}")))?;
    Ok(resp)
}

/// `GET` or `HEAD` of a manifest with an `Accept` header listing every type this suite uses.
pub async fn fetch_manifest(
    ctx: &Ctx,
    method: Method,
    repo: &str,
    reference: &str,
) -> Result<Resp, Failure> {
    let builder = ctx
        .client
        .request(method, &repo_path(repo, &format!("manifests/{reference}")))?
        .header(ACCEPT, media::ACCEPT_ALL);
    ctx.client.send(builder).await
}

/// Pushes blobs for an image of the given manifest type (OCI or Docker), without the manifest.
pub async fn push_image_blobs(
    ctx: &Ctx,
    repo: &str,
    manifest_type: &str,
) -> Result<(Blob, Vec<Blob>), Failure> {
    let (config_type, layer_type) = if manifest_type == media::DOCKER_MANIFEST {
        (media::DOCKER_CONFIG, media::DOCKER_LAYER)
    } else {
        (media::OCI_CONFIG, media::OCI_LAYER)
    };
    let layers = vec![Blob::layer(layer_type, 1024), Blob::layer(layer_type, 300)];
    let config = Blob::config(config_type, &layers.iter().collect::<Vec<_>>());
    for blob in layers.iter().chain([&config]) {
        push_blob(ctx, repo, blob).await?;
    }
    Ok((config, layers))
}

/// Pushes a complete OCI image and tags it (or pushes it by digest when `tag` is `None`).
pub async fn push_image(ctx: &Ctx, repo: &str, tag: Option<&str>) -> Result<Image, Failure> {
    let (config, layers) = push_image_blobs(ctx, repo, media::OCI_MANIFEST).await?;
    let manifest = content::image_manifest(
        media::OCI_MANIFEST,
        &config.descriptor(),
        &layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
        Default::default(),
    );
    push_manifest(ctx, repo, tag.unwrap_or(&manifest.digest), &manifest).await?;
    Ok(Image {
        config,
        layers,
        manifest,
    })
}

/// Parses a `Link` header value of the form `<url>; rel="next"` and returns the URL, failing
/// when the header does not follow RFC 5988 with `rel="next"` as the spec requires.
pub fn next_link(resp: &Resp) -> Result<Option<String>, Failure> {
    let values = resp.header_all("Link");
    if values.is_empty() {
        return Ok(None);
    }
    for value in &values {
        // A header may carry several comma-separated links; look for the one with rel="next".
        for link in value.split(',') {
            let link = link.trim();
            let Some(rest) = link.strip_prefix('<') else {
                continue;
            };
            let Some((target, params)) = rest.split_once('>') else {
                continue;
            };
            let is_next = params.split(';').any(|param| {
                let param = param.trim().to_ascii_lowercase();
                param == "rel=\"next\"" || param == "rel=next"
            });
            if is_next {
                return Ok(Some(target.to_owned()));
            }
        }
    }
    fail!(
        "{}: Link header {values:?} is not `<url>; rel=\"next\"` (RFC 5988)",
        resp.summary()
    )
}
