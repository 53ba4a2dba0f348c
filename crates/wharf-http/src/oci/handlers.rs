//! One function per distribution-spec operation; each parses, calls
//! [`Registry`], and shapes the response.

use std::collections::HashMap;
use std::io;

use axum::body::Body;
use axum::extract::{Query, Request};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use wharf_blob::ByteStream;
use wharf_core::{Digest, Reference, RepoName, Tag};
use wharf_oci::{OciError, Page, Registry};

use std::sync::Arc;

use wharf_mirror::PullThrough;

use super::route::Route;
use super::ApiError;
use crate::auth::Caller;
use wharf_auth::access::{Action, Resource};
use wharf_core::RepositoryKind;

type Result<T> = std::result::Result<T, ApiError>;

const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
const DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");
const OCI_TAG: HeaderName = HeaderName::from_static("oci-tag");
/// Bytes of tags per `OCI-Tag` line before another line starts: lines stay far
/// below the header sizes clients accept, however many tags were pushed.
const OCI_TAG_LINE_BYTES: usize = 1024;

pub(crate) async fn handle(
    registry: &Registry,
    cache: Option<&Arc<PullThrough>>,
    route: Route,
    req: Request<Body>,
) -> Result<Response> {
    let method = req.method().clone();
    // Every /v2 request passed the guard, which always attaches the caller's access.
    let Some(caller) = req.extensions().get::<Caller>().cloned() else {
        return Err(ApiError::denied());
    };
    let query = Query::<HashMap<String, String>>::try_from_uri(req.uri())
        .map(|q| q.0)
        .unwrap_or_default();
    match (route, method) {
        (Route::Catalog, Method::GET) => catalog(registry, &caller, &query).await,
        (Route::Tags(repo), Method::GET) => tags(registry, &repo, &query).await,
        (Route::Manifest(repo, r), Method::GET) => {
            get_manifest(registry, cache, &repo, &r, false).await
        }
        (Route::Manifest(repo, r), Method::HEAD) => {
            get_manifest(registry, cache, &repo, &r, true).await
        }
        (Route::Manifest(repo, r), Method::PUT) => put_manifest(registry, &repo, &r, req).await,
        (Route::Manifest(repo, r), Method::DELETE) => {
            registry.delete_manifest(&repo, &r).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        (Route::Blob(repo, d), Method::GET) => {
            get_blob(registry, cache, &repo, &d, req.headers(), false).await
        }
        (Route::Blob(repo, d), Method::HEAD) => {
            get_blob(registry, cache, &repo, &d, req.headers(), true).await
        }
        (Route::Blob(repo, d), Method::DELETE) => {
            registry.delete_blob(&repo, &d).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        (Route::UploadStart(repo), Method::POST) => {
            start_upload(registry, &caller, &repo, &query, req).await
        }
        (Route::Upload(repo, id), Method::PATCH) => patch_upload(registry, &repo, &id, req).await,
        (Route::Upload(repo, id), Method::PUT) => {
            put_upload(registry, &repo, &id, &query, req).await
        }
        (Route::Upload(repo, id), Method::GET) => {
            let size = registry.upload_status(&repo, &id).await?;
            Ok(upload_accepted(StatusCode::NO_CONTENT, &repo, &id, size))
        }
        (Route::Upload(repo, id), Method::DELETE) => {
            registry.cancel_upload(&repo, &id).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Route::Referrers(repo, d), Method::GET) => referrers(registry, &repo, &d, &query).await,
        (_, method) => Err(ApiError::unsupported(format!(
            "{method} is not supported here"
        ))),
    }
}

fn header_value(s: &str) -> HeaderValue {
    // Every value we build is a digest, a path of validated names or a number.
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn body_stream(body: Body) -> ByteStream {
    Box::pin(body.into_data_stream().map_err(io::Error::other))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// `Content-Range` of a chunk: `<start>-<end>`, also accepting the RFC form
/// `bytes <start>-<end>/<total>` that some clients send.
fn chunk_range(headers: &HeaderMap) -> Result<Option<(u64, u64)>> {
    let Some(v) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let bad = || ApiError::upload_invalid("malformed Content-Range");
    let s = v.to_str().map_err(|_| bad())?.trim();
    let s = s.strip_prefix("bytes ").unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let start = a.trim().parse().map_err(|_| bad())?;
    let end = b.trim().parse().map_err(|_| bad())?;
    Ok(Some((start, end)))
}

/// `Range: bytes=a-b` of a blob GET; anything else is ignored (full body).
fn read_range(headers: &HeaderMap) -> Option<(Option<u64>, Option<u64>)> {
    let s = headers.get(header::RANGE)?.to_str().ok()?.trim();
    let spec = s.strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None; // Multipart ranges: serving the whole blob is allowed.
    }
    let (a, b) = spec.split_once('-')?;
    let parse = |x: &str| -> Option<Option<u64>> {
        let x = x.trim();
        if x.is_empty() {
            Some(None)
        } else {
            x.parse().ok().map(Some)
        }
    };
    let (start, end) = (parse(a)?, parse(b)?);
    if start.is_none() && end.is_none() {
        return None;
    }
    Some((start, end))
}

fn query_digest(query: &HashMap<String, String>, key: &str) -> Result<Option<Digest>> {
    match query.get(key) {
        None => Ok(None),
        Some(s) => Digest::parse(s)
            .map(Some)
            .map_err(|e| ApiError::digest_invalid(e.to_string())),
    }
}

fn query_n(query: &HashMap<String, String>) -> Result<Option<u64>> {
    match query.get("n") {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| OciError::SizeInvalid(format!("n={s:?} is not a count")).into()),
    }
}

fn upload_accepted(status: StatusCode, repo: &RepoName, id: &str, size: u64) -> Response {
    let location = format!("/v2/{repo}/blobs/uploads/{id}");
    // `Range` is inclusive; an empty upload reports `0-0` as registries always have.
    let range = format!("0-{}", size.saturating_sub(1));
    (
        status,
        [
            (header::LOCATION, header_value(&location)),
            (header::RANGE, header_value(&range)),
            (DOCKER_UPLOAD_UUID, header_value(id)),
            (header::CONTENT_LENGTH, HeaderValue::from_static("0")),
        ],
    )
        .into_response()
}

fn blob_created(repo: &RepoName, digest: &Digest) -> Response {
    let location = format!("/v2/{repo}/blobs/{digest}");
    (
        StatusCode::CREATED,
        [
            (header::LOCATION, header_value(&location)),
            (DOCKER_CONTENT_DIGEST, header_value(&digest.to_string())),
            (header::CONTENT_LENGTH, HeaderValue::from_static("0")),
        ],
    )
        .into_response()
}

/// end-8a/8b: `GET /v2/<name>/tags/list?n=&last=`.
async fn tags(
    registry: &Registry,
    repo: &RepoName,
    query: &HashMap<String, String>,
) -> Result<Response> {
    let n = query_n(query)?;
    let last = match query.get("last") {
        Some(s) => Some(Tag::parse(s).map_err(|e| OciError::SizeInvalid(e.to_string()))?),
        None => None,
    };
    let page = registry.tags(repo, n, last.as_ref()).await?;
    let body = serde_json::json!({ "name": repo.as_str(), "tags": page.items });
    Ok(paginated(body, &page, n, &format!("/v2/{repo}/tags/list")))
}

/// `GET /v2/_catalog?n=&last=`, listing only repositories the caller may pull.
async fn catalog(
    registry: &Registry,
    caller: &Caller,
    query: &HashMap<String, String>,
) -> Result<Response> {
    let n = query_n(query)?;
    let caller = &caller.behind_token().await;
    let want = n.unwrap_or(u64::MAX);
    let mut last = query.get("last").cloned();
    let mut items = Vec::new();
    let mut more = false;
    // Filter page by page so that `n` counts visible repositories only.
    loop {
        let page = registry.catalog(Some(1000), last.as_deref()).await?;
        for repo in &page.items {
            if caller
                .may_or_no(
                    Action::Pull,
                    &Resource::repository(RepositoryKind::Oci, repo),
                )
                .await
            {
                if items.len() as u64 == want {
                    more = true;
                    break;
                }
                items.push(repo.clone());
            }
        }
        if more || !page.more {
            break;
        }
        last = page.items.last().cloned();
    }
    let page = Page { items, more };
    let body = serde_json::json!({ "repositories": page.items });
    Ok(paginated(body, &page, n, "/v2/_catalog"))
}

fn paginated(body: serde_json::Value, page: &Page, n: Option<u64>, path: &str) -> Response {
    let mut res = axum::Json(body).into_response();
    if let (true, Some(n), Some(last)) = (page.more, n, page.items.last()) {
        let link = format!("<{path}?n={n}&last={}>; rel=\"next\"", url_escape(last));
        res.headers_mut().insert(header::LINK, header_value(&link));
    }
    res
}

/// Escapes the few characters of names and tags that are not URL-safe.
fn url_escape(s: &str) -> String {
    s.replace('/', "%2F")
}

/// end-2/end-3: `GET|HEAD /v2/<name>/manifests/<reference>`.
async fn get_manifest(
    registry: &Registry,
    cache: Option<&Arc<PullThrough>>,
    repo: &RepoName,
    r: &Reference,
    head: bool,
) -> Result<Response> {
    if let Some(cache) = cache {
        if let Some(answer) = cache.manifest(repo, r).await {
            let m = answer.map_err(|e| ApiError::from_proxy(e, false))?;
            return Ok(manifest_response(m, head));
        }
    }
    if head {
        let record = registry.manifest_record(repo, r).await?;
        return Ok((
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, header_value(&record.media_type)),
                (
                    header::CONTENT_LENGTH,
                    header_value(&record.size.to_string()),
                ),
                (
                    DOCKER_CONTENT_DIGEST,
                    header_value(&record.digest.to_string()),
                ),
            ],
        )
            .into_response());
    }
    let m = registry.get_manifest(repo, r).await?;
    Ok(manifest_response(m, false))
}

fn manifest_response(m: wharf_oci::ManifestContent, head: bool) -> Response {
    let digest = m.digest.to_string();
    let headers = [
        (header::CONTENT_TYPE, header_value(&m.media_type)),
        (header::ETAG, header_value(&format!("\"{digest}\""))),
        (DOCKER_CONTENT_DIGEST, header_value(&digest)),
    ];
    if head {
        let mut res = (StatusCode::OK, headers).into_response();
        res.headers_mut().insert(
            header::CONTENT_LENGTH,
            header_value(&m.bytes.len().to_string()),
        );
        return res;
    }
    (StatusCode::OK, headers, m.bytes).into_response()
}

/// end-7a/7b: `PUT /v2/<name>/manifests/<reference>[?tag=<tag>...]`.
async fn put_manifest(
    registry: &Registry,
    repo: &RepoName,
    r: &Reference,
    req: Request<Body>,
) -> Result<Response> {
    // Repeated keys: the map the other handlers read keeps only one `tag`.
    let pairs = Query::<Vec<(String, String)>>::try_from_uri(req.uri())
        .map(|q| q.0)
        .map_err(|e| OciError::TagInvalid(format!("unreadable query string: {e}")))?;
    let tags = wharf_oci::tag_params(
        pairs
            .iter()
            .filter(|(k, _)| k == "tag")
            .map(|(_, v)| v.as_str()),
    )?;
    let limit = registry.limits().max_manifest_bytes;
    let too_large = |size| OciError::ManifestTooLarge { size, limit };
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let declared = content_length(req.headers());
    if let Some(len) = declared.filter(|&len| len > limit) {
        drain_modest(req.into_body(), len, limit).await;
        return Err(too_large(len).into());
    }
    // Read by hand rather than with `to_bytes`, whose one error cannot tell
    // "over the limit" (413) from a malformed body, e.g. bad chunking (400).
    let mut body = bytes::BytesMut::new();
    let mut stream = req.into_body().into_data_stream();
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        let chunk = chunk
            .map_err(|e| OciError::ManifestInvalid(format!("unreadable request body: {e}")))?;
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(too_large(limit + 1).into());
        }
        body.extend_from_slice(&chunk);
    }
    let body = body.freeze();
    let pushed = registry
        .put_manifest(repo, r, &tags, content_type.as_deref(), body)
        .await?;
    let location = format!("/v2/{repo}/manifests/{}", pushed.digest);
    let mut res = (
        StatusCode::CREATED,
        [
            (header::LOCATION, header_value(&location)),
            (
                DOCKER_CONTENT_DIGEST,
                header_value(&pushed.digest.to_string()),
            ),
            (header::CONTENT_LENGTH, HeaderValue::from_static("0")),
        ],
    )
        .into_response();
    if let Some(subject) = pushed.subject {
        res.headers_mut()
            .insert(OCI_SUBJECT, header_value(&subject.to_string()));
    }
    for line in oci_tag_lines(&pushed.tagged) {
        res.headers_mut().append(OCI_TAG, header_value(&line));
    }
    Ok(res)
}

/// The `OCI-Tag` values for the applied tags: comma-separated lists (RFC 9110,
/// section 5), split over several lines once one grows past a bound.
fn oci_tag_lines(tags: &[Tag]) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for tag in tags {
        match lines.last_mut() {
            Some(line) if line.len() + 2 + tag.as_str().len() <= OCI_TAG_LINE_BYTES => {
                line.push_str(", ");
                line.push_str(tag.as_str());
            }
            _ => lines.push(tag.as_str().to_owned()),
        }
    }
    lines
}

/// end-2/end-10 GET|HEAD `/v2/<name>/blobs/<digest>`, with `Range`.
async fn get_blob(
    registry: &Registry,
    cache: Option<&Arc<PullThrough>>,
    repo: &RepoName,
    d: &Digest,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response> {
    match get_local_blob(registry, repo, d, headers, head).await {
        Err(OciError::BlobUnknown(_) | OciError::NameUnknown(_)) if cache.is_some() => {}
        other => return other.map_err(ApiError::from),
    }
    let Some(answer) = cache.map(|c| c.blob(repo, d)) else {
        return Err(OciError::BlobUnknown(d.clone()).into());
    };
    let Some(answer) = answer.await else {
        return Err(OciError::BlobUnknown(d.clone()).into());
    };
    let blob = answer.map_err(|e| ApiError::from_proxy(e, true))?;
    // A range of a blob still being fetched is cut from the shared stream; it
    // needs the size the upstream announced (else the whole blob is sent).
    let range = match (read_range(headers), blob.size) {
        (Some(spec), Some(size)) => Some(wharf_oci::resolve_range(spec, size)?),
        _ => None,
    };
    let mut res = if head {
        StatusCode::OK.into_response()
    } else {
        match range {
            Some(r) => (
                StatusCode::PARTIAL_CONTENT,
                Body::from_stream(slice_of_stream(blob.body, r)),
            )
                .into_response(),
            None => Body::from_stream(blob.body).into_response(),
        }
    };
    let h = res.headers_mut();
    match (range, blob.size) {
        (Some(r), Some(size)) if !head => {
            h.insert(header::CONTENT_LENGTH, header_value(&r.len().to_string()));
            let cr = format!("bytes {}-{}/{size}", r.start, r.end);
            h.insert(header::CONTENT_RANGE, header_value(&cr));
        }
        (_, Some(size)) => {
            h.insert(header::CONTENT_LENGTH, header_value(&size.to_string()));
        }
        _ => {}
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(DOCKER_CONTENT_DIGEST, header_value(&d.to_string()));
    Ok(res)
}

/// The bytes `range` of a blob streamed through the pull-through cache. After
/// the range it keeps reading (and drops) the rest, so the response still ends
/// only once the cache verified the whole blob's digest, and a mismatch still
/// cuts the client off instead of leaving it with bytes nobody checked.
fn slice_of_stream(
    body: wharf_blob::ByteStream,
    range: wharf_blob::ByteRange,
) -> wharf_blob::ByteStream {
    use futures_util::StreamExt;
    let state = (body, range.start, range.len());
    Box::pin(futures_util::stream::unfold(
        state,
        |(mut body, mut skip, mut left)| async move {
            loop {
                let chunk = match body.next().await? {
                    Ok(chunk) => chunk,
                    Err(e) => return Some((Err(e), (body, skip, 0))),
                };
                if left == 0 {
                    continue;
                }
                let n = chunk.len() as u64;
                if skip >= n {
                    skip -= n;
                    continue;
                }
                let rest = chunk.slice(skip as usize..);
                skip = 0;
                let take = (rest.len() as u64).min(left);
                left -= take;
                return Some((Ok(rest.slice(..take as usize)), (body, skip, left)));
            }
        },
    ))
}

/// A blob the store holds for `repo`.
async fn get_local_blob(
    registry: &Registry,
    repo: &RepoName,
    d: &Digest,
    headers: &HeaderMap,
    head: bool,
) -> std::result::Result<Response, OciError> {
    let digest_header = (DOCKER_CONTENT_DIGEST, header_value(&d.to_string()));
    if head {
        let size = registry.stat_blob(repo, d).await?;
        return Ok((
            StatusCode::OK,
            [
                (header::CONTENT_LENGTH, header_value(&size.to_string())),
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                ),
                (header::ACCEPT_RANGES, HeaderValue::from_static("bytes")),
                digest_header,
            ],
        )
            .into_response());
    }
    let read = registry.read_blob(repo, d, read_range(headers)).await?;
    let (status, len) = match read.range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.len()),
        None => (StatusCode::OK, read.size),
    };
    let mut res = (
        status,
        [
            (header::CONTENT_LENGTH, header_value(&len.to_string())),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::ACCEPT_RANGES, HeaderValue::from_static("bytes")),
            digest_header,
        ],
        Body::from_stream(read.body),
    )
        .into_response();
    if let Some(r) = read.range {
        let cr = format!("bytes {}-{}/{}", r.start, r.end, read.size);
        res.headers_mut()
            .insert(header::CONTENT_RANGE, header_value(&cr));
    }
    Ok(res)
}

/// end-4a/4b/11: `POST /v2/<name>/blobs/uploads/` (session, monolithic, mount).
async fn start_upload(
    registry: &Registry,
    caller: &Caller,
    repo: &RepoName,
    query: &HashMap<String, String>,
    req: Request<Body>,
) -> Result<Response> {
    if let Some(mount) = query_digest(query, "mount")? {
        let from = match query.get("from") {
            Some(f) => Some(RepoName::parse(f).map_err(|e| ApiError::name_invalid(e.to_string()))?),
            None => None,
        };
        // Mounting reads from the source: it needs pull there. Without `from`
        // the source could be any repository, so only administrators may.
        let may_read_source = match &from {
            Some(f) => {
                caller
                    .may_or_no(
                        Action::Pull,
                        &Resource::repository(RepositoryKind::Oci, f.as_str()),
                    )
                    .await
            }
            None => caller.is_admin().await,
        };
        if may_read_source && registry.mount_blob(repo, &mount, from.as_ref()).await? {
            return Ok(blob_created(repo, &mount));
        }
        // Not mountable: the spec says to fall back to an ordinary upload session.
    } else if let Some(digest) = query_digest(query, "digest")? {
        registry
            .put_blob(repo, &digest, body_stream(req.into_body()))
            .await?;
        return Ok(blob_created(repo, &digest));
    }
    let id = registry.start_upload(repo).await?;
    Ok(upload_accepted(StatusCode::ACCEPTED, repo, &id, 0))
}

/// end-5: `PATCH /v2/<name>/blobs/uploads/<id>` (chunked or streamed).
async fn patch_upload(
    registry: &Registry,
    repo: &RepoName,
    id: &str,
    req: Request<Body>,
) -> Result<Response> {
    let range = chunk_range(req.headers())?;
    let len = content_length(req.headers());
    let size = registry
        .append_upload(repo, id, range, len, body_stream(req.into_body()))
        .await?;
    Ok(upload_accepted(StatusCode::ACCEPTED, repo, id, size))
}

/// end-6: `PUT /v2/<name>/blobs/uploads/<id>?digest=`.
async fn put_upload(
    registry: &Registry,
    repo: &RepoName,
    id: &str,
    query: &HashMap<String, String>,
    req: Request<Body>,
) -> Result<Response> {
    let digest = query_digest(query, "digest")?
        .ok_or_else(|| ApiError::digest_invalid("the digest query parameter is required"))?;
    let range = chunk_range(req.headers())?;
    let len = content_length(req.headers());
    let body = match len {
        Some(0) => None,
        _ => Some(body_stream(req.into_body())),
    };
    registry
        .finish_upload(repo, id, &digest, range, len, body)
        .await?;
    Ok(blob_created(repo, &digest))
}

/// end-12a/12b: `GET /v2/<name>/referrers/<digest>?artifactType=`.
async fn referrers(
    registry: &Registry,
    repo: &RepoName,
    d: &Digest,
    query: &HashMap<String, String>,
) -> Result<Response> {
    let filter = query.get("artifactType").map(String::as_str);
    let index = registry.referrers(repo, d, filter).await?;
    let mut res = (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(wharf_oci::media::OCI_INDEX),
        )],
        index,
    )
        .into_response();
    if filter.is_some() {
        res.headers_mut().insert(
            OCI_FILTERS_APPLIED,
            HeaderValue::from_static("artifactType"),
        );
    }
    Ok(res)
}

/// Reads and discards an oversized request body so the client, still busy
/// sending, receives the error response instead of a reset connection. Bodies
/// far beyond the limit are not worth reading; their connection is dropped.
async fn drain_modest(body: Body, declared: u64, limit: u64) {
    use futures_util::StreamExt;
    if declared > limit.saturating_mul(8) {
        return;
    }
    let mut stream = body.into_data_stream();
    while let Some(Ok(_)) = stream.next().await {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_tag_lines_list_every_tag_once_and_stay_bounded() {
        let tags: Vec<Tag> = ["1.2.3", "1.2", "latest"]
            .iter()
            .map(|t| Tag::parse(t).unwrap())
            .collect();
        assert_eq!(oci_tag_lines(&tags), ["1.2.3, 1.2, latest"]);
        assert!(oci_tag_lines(&[]).is_empty());
        let long: Vec<Tag> = (0..40)
            .map(|i| Tag::parse(&format!("{i:0>100}")).unwrap())
            .collect();
        let lines = oci_tag_lines(&long);
        assert!(lines.len() > 1);
        assert!(lines.iter().all(|l| l.len() <= OCI_TAG_LINE_BYTES));
        let listed: Vec<&str> = lines.iter().flat_map(|l| l.split(", ")).collect();
        let expected: Vec<&str> = long.iter().map(Tag::as_str).collect();
        assert_eq!(listed, expected);
    }
}
