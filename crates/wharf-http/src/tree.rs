//! The tree surfaces: `/ostree/<repo>/…`, `/rpm/<repo>/…` and `/files/<repo>/…`
//! serve the published snapshot of a repository of that kind as a plain HTTP
//! tree, which is all that ostree, dnf, curl, anaconda and PXE loaders expect.
//!
//! One implementation for the three kinds, because the protocol is the same:
//! GET and HEAD of files, with a strong `ETag` (the blob digest, so an
//! unchanged `summary.sig` or `repomd.xml` answers 304 to `If-None-Match`),
//! `Last-Modified` and `If-Modified-Since`, single `Range` requests (206/416),
//! and, for file and RPM repositories, directory listings (HTML in the shape
//! of a web server's index, or JSON). A path the published snapshot lacks is
//! answered from a snapshot retired within the grace period, so a client that
//! read an old summary or repomd.xml finds everything it names.
//!
//! Everything a format does differently happens when it *builds* a snapshot;
//! nothing here knows OSTree, rpm-md or a file tree's meaning.

mod errors;
mod guard;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use wharf_auth::access::Action;
use wharf_blob::ByteRange;
use wharf_core::RepositoryKind;
use wharf_meta::{DirChild, SnapshotEntry};

use crate::AppState;
pub(crate) use errors::TreeError;

/// Most names one listing shows.
const LISTING_LIMIT: u32 = 10_000;

/// The routes of the three tree surfaces.
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/ostree/{*rest}", any(ostree))
        .route("/rpm/{*rest}", any(rpm))
        .route("/files/{*rest}", any(files))
}

async fn ostree(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    serve(&state, RepositoryKind::Ostree, req).await
}

async fn rpm(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    serve(&state, RepositoryKind::Rpm, req).await
}

async fn files(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    serve(&state, RepositoryKind::Files, req).await
}

/// The URL prefix of a kind's surface.
fn surface_prefix(kind: RepositoryKind) -> &'static str {
    match kind {
        RepositoryKind::Ostree => "/ostree/",
        RepositoryKind::Rpm => "/rpm/",
        RepositoryKind::Files => "/files/",
        // Never routed here; `/v2` has its own surface.
        RepositoryKind::Oci => "/v2/",
    }
}

/// The part of a kind's tree whose names say their bytes (served from an
/// in-memory index, see `Snapshots::resolve_addressed`): OSTree objects are
/// named by their checksums.
fn content_addressed(kind: RepositoryKind) -> Option<&'static str> {
    matches!(kind, RepositoryKind::Ostree).then_some("objects/")
}

/// Whether a kind's directories are listed. OSTree clients never list (and an
/// `objects/` directory holds hundreds of thousands of names).
fn lists_directories(kind: RepositoryKind) -> bool {
    matches!(kind, RepositoryKind::Rpm | RepositoryKind::Files)
}

async fn serve(state: &AppState, kind: RepositoryKind, mut req: Request<Body>) -> Response {
    match serve_inner(state, kind, &mut req).await {
        Ok(res) => res,
        Err(e) => e.into_response(),
    }
}

async fn serve_inner(
    state: &AppState,
    kind: RepositoryKind,
    req: &mut Request<Body>,
) -> Result<Response, TreeError> {
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => return Ok(TreeError::method_not_allowed("GET, HEAD")),
    };
    let uri_path = req.uri().path().to_owned();
    let encoded = uri_path
        .strip_prefix(surface_prefix(kind))
        .unwrap_or_default();
    let decoded = percent_encoding::percent_decode_str(encoded)
        .decode_utf8()
        .map_err(|_| TreeError::new(StatusCode::BAD_REQUEST, "the path is not UTF-8"))?;
    let wants_dir = decoded.is_empty() || decoded.ends_with('/');
    let raw = decoded.trim_end_matches('/');
    if raw.is_empty() {
        return Err(TreeError::not_found());
    }
    let located = guard::admit(state, req, kind, raw, Action::Pull).await?;
    let snapshots = &state.snapshots;
    if let (Some(path), false) = (&located.path, wants_dir) {
        let served = match content_addressed(kind) {
            Some(prefix) => {
                snapshots
                    .resolve_addressed(&located.repo, path, prefix)
                    .await?
            }
            None => snapshots.resolve(&located.repo, path).await?,
        };
        if let Some(served) = served {
            return file_response(state, &served.entry, req.headers(), head).await;
        }
    }
    if !lists_directories(kind) {
        return Err(TreeError::not_found());
    }
    let Some(children) = snapshots
        .children(&located.repo, located.path.as_ref(), LISTING_LIMIT)
        .await?
    else {
        return Err(TreeError::not_found());
    };
    if !wants_dir {
        // As web servers do: a directory's URL ends in `/`, so relative links work.
        let mut res = StatusCode::MOVED_PERMANENTLY.into_response();
        res.headers_mut().insert(
            header::LOCATION,
            HeaderValue::from_str(&format!("{uri_path}/"))
                .map_err(|_| TreeError::new(StatusCode::BAD_REQUEST, "unusable path"))?,
        );
        return Ok(res);
    }
    let json = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "format=json"))
        || req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("application/json"));
    let (content_type, body) = if json {
        ("application/json", listing_json(&children))
    } else {
        (
            "text/html; charset=utf-8",
            listing_html(&uri_path, &children),
        )
    };
    let mut res = if head {
        StatusCode::OK.into_response()
    } else {
        (StatusCode::OK, body.clone()).into_response()
    };
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    Ok(res)
}

/// A file of a snapshot, honouring conditional and range requests.
async fn file_response(
    state: &AppState,
    entry: &SnapshotEntry,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, TreeError> {
    let etag = format!("\"{}\"", entry.blob);
    let modified = UNIX_EPOCH + Duration::from_secs(entry.modified_at.max(0) as u64);
    let last_modified = httpdate::fmt_http_date(modified);
    let validators = |res: &mut Response| {
        let h = res.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&etag) {
            h.insert(header::ETAG, v);
        }
        if let Ok(v) = HeaderValue::from_str(&last_modified) {
            h.insert(header::LAST_MODIFIED, v);
        }
    };
    if not_modified(headers, &etag, modified) {
        let mut res = StatusCode::NOT_MODIFIED.into_response();
        validators(&mut res);
        return Ok(res);
    }
    let range = match requested_range(headers, &etag, modified) {
        None => None,
        Some(spec) => match spec.resolve(entry.size) {
            Some(r) => Some(r),
            None => return Err(TreeError::range_not_satisfiable(entry.size)),
        },
    };
    let (status, len) = match range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.len()),
        None => (StatusCode::OK, entry.size),
    };
    let mut res = if head {
        status.into_response()
    } else if let Some(whole) = match range {
        // A small file goes out whole, with its headers in one write.
        None => state.snapshots.read_small(entry).await?,
        Some(_) => None,
    } {
        (status, Body::from(whole)).into_response()
    } else {
        let body = state.snapshots.open(entry, range).await?;
        (status, Body::from_stream(body)).into_response()
    };
    validators(&mut res);
    let h = res.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(entry.path.file_name())),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(r) = range {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {}-{}/{}", r.start, r.end, entry.size))
        {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(res)
}

/// RFC 9110 §13.2.2: `If-None-Match` decides when present; otherwise
/// `If-Modified-Since` (second resolution, as the header has).
fn not_modified(headers: &HeaderMap, etag: &str, modified: SystemTime) -> bool {
    if let Some(inm) = headers.get(header::IF_NONE_MATCH) {
        let Ok(inm) = inm.to_str() else { return false };
        return inm
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == "*" || t == etag);
    }
    let Some(ims) = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
    else {
        return false;
    };
    modified <= ims
}

/// One byte range as asked: `a-b`, `a-` or `-n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeSpec {
    FromTo(u64, Option<u64>),
    Suffix(u64),
}

impl RangeSpec {
    /// The inclusive range inside a file of `size` bytes; `None`: unsatisfiable.
    fn resolve(self, size: u64) -> Option<ByteRange> {
        match self {
            RangeSpec::FromTo(start, end) => {
                if start >= size {
                    return None;
                }
                let end = end.map_or(size - 1, |e| e.min(size - 1));
                (start <= end).then_some(ByteRange { start, end })
            }
            RangeSpec::Suffix(0) => None,
            RangeSpec::Suffix(n) => {
                if size == 0 {
                    return None;
                }
                Some(ByteRange {
                    start: size.saturating_sub(n),
                    end: size - 1,
                })
            }
        }
    }
}

/// The single byte range asked for, unless `If-Range` no longer matches. Several
/// ranges, other units and malformed headers are ignored (the whole file is
/// sent), as RFC 9110 allows.
fn requested_range(headers: &HeaderMap, etag: &str, modified: SystemTime) -> Option<RangeSpec> {
    let value = headers.get(header::RANGE)?.to_str().ok()?;
    if let Some(if_range) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        let still = if if_range.starts_with('"') {
            if_range == etag
        } else {
            httpdate::parse_http_date(if_range).is_ok_and(|d| modified <= d)
        };
        if !still {
            return None;
        }
    }
    let spec = value.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let parsed = if a.is_empty() {
        RangeSpec::Suffix(b.parse().ok()?)
    } else {
        let start = a.parse().ok()?;
        let end = if b.is_empty() {
            None
        } else {
            Some(b.parse().ok()?)
        };
        if end.is_some_and(|e| e < start) {
            return None;
        }
        RangeSpec::FromTo(start, end)
    };
    Some(parsed)
}

/// The media type clients of these trees expect, by file name.
fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or_default();
    match ext.to_ascii_lowercase().as_str() {
        "xml" => "application/xml",
        "gz" => "application/gzip",
        "bz2" => "application/x-bzip2",
        "xz" => "application/x-xz",
        "zst" | "zck" => "application/octet-stream",
        "rpm" => "application/x-rpm",
        "asc" => "application/pgp-signature",
        "iso" => "application/x-iso9660-image",
        "json" => "application/json",
        "html" | "htm" => "text/html; charset=utf-8",
        "txt" | "ks" | "cfg" | "conf" | "repo" | "treeinfo" => "text/plain; charset=utf-8",
        "sqlite" => "application/vnd.sqlite3",
        _ => "application/octet-stream",
    }
}

/// Characters left as they are in an `href` path segment.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn child_name(child: &DirChild) -> (&str, bool) {
    match child {
        DirChild::File(e) => (e.path.file_name(), false),
        DirChild::Dir(d) => (d.file_name(), true),
    }
}

/// A listing in the shape of nginx's autoindex, which tools that walk HTTP
/// trees (including Wharf's own file mirroring) read.
fn listing_html(uri_path: &str, children: &[DirChild]) -> String {
    let title = html_escape(uri_path);
    let mut out = format!(
        "<!DOCTYPE html>\n<html>\n<head><meta charset=\"utf-8\"><title>Index of {title}</title></head>\n\
         <body>\n<h1>Index of {title}</h1><hr><pre><a href=\"../\">../</a>\n"
    );
    for child in children {
        let (name, dir) = child_name(child);
        let slash = if dir { "/" } else { "" };
        let href = percent_encoding::utf8_percent_encode(name, SEGMENT);
        let shown = html_escape(name);
        let (date, size) = match child {
            DirChild::File(e) => (
                httpdate::fmt_http_date(
                    UNIX_EPOCH + Duration::from_secs(e.modified_at.max(0) as u64),
                ),
                e.size.to_string(),
            ),
            DirChild::Dir(_) => ("-".to_owned(), "-".to_owned()),
        };
        out.push_str(&format!(
            "<a href=\"{href}{slash}\">{shown}{slash}</a> {date} {size}\n"
        ));
    }
    out.push_str("</pre><hr></body>\n</html>\n");
    out
}

fn listing_json(children: &[DirChild]) -> String {
    let items: Vec<serde_json::Value> = children
        .iter()
        .map(|child| match child {
            DirChild::File(e) => serde_json::json!({
                "name": e.path.file_name(),
                "type": "file",
                "size": e.size,
                "modified": e.modified_at,
                "digest": e.blob.to_string(),
            }),
            DirChild::Dir(d) => serde_json::json!({
                "name": d.file_name(),
                "type": "directory",
            }),
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn ranges_resolve_as_rfc_9110_says() {
        let t = UNIX_EPOCH;
        let ask = |v: &str| requested_range(&headers(&[(header::RANGE, v)]), "\"e\"", t);
        assert_eq!(
            ask("bytes=0-9").unwrap().resolve(100),
            Some(ByteRange { start: 0, end: 9 })
        );
        assert_eq!(
            ask("bytes=90-").unwrap().resolve(100),
            Some(ByteRange { start: 90, end: 99 })
        );
        assert_eq!(
            ask("bytes=-10").unwrap().resolve(100),
            Some(ByteRange { start: 90, end: 99 })
        );
        assert_eq!(
            ask("bytes=-500").unwrap().resolve(100),
            Some(ByteRange { start: 0, end: 99 })
        );
        assert_eq!(
            ask("bytes=50-500").unwrap().resolve(100),
            Some(ByteRange { start: 50, end: 99 })
        );
        assert_eq!(ask("bytes=100-").unwrap().resolve(100), None);
        assert_eq!(ask("bytes=-0").unwrap().resolve(100), None);
        assert!(ask("bytes=0-1,5-6").is_none());
        assert!(ask("bytes=9-1").is_none());
        assert!(ask("items=0-1").is_none());
        assert!(ask("bytes=x-1").is_none());
        // If-Range with another validator: the whole file.
        let h = headers(&[(header::RANGE, "bytes=0-1"), (header::IF_RANGE, "\"old\"")]);
        assert!(requested_range(&h, "\"e\"", t).is_none());
    }

    #[test]
    fn conditional_requests() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let etag = "\"sha256:ab\"";
        assert!(not_modified(
            &headers(&[(header::IF_NONE_MATCH, etag)]),
            etag,
            t
        ));
        assert!(not_modified(
            &headers(&[(header::IF_NONE_MATCH, "\"x\", W/\"sha256:ab\"")]),
            etag,
            t
        ));
        assert!(!not_modified(
            &headers(&[(header::IF_NONE_MATCH, "\"x\"")]),
            etag,
            t
        ));
        let same = httpdate::fmt_http_date(t);
        assert!(not_modified(
            &headers(&[(header::IF_MODIFIED_SINCE, &same)]),
            etag,
            t
        ));
        let before = httpdate::fmt_http_date(t - Duration::from_secs(1));
        assert!(!not_modified(
            &headers(&[(header::IF_MODIFIED_SINCE, &before)]),
            etag,
            t
        ));
        // If-None-Match wins over If-Modified-Since.
        let both = headers(&[
            (header::IF_NONE_MATCH, "\"x\""),
            (header::IF_MODIFIED_SINCE, &same),
        ]);
        assert!(!not_modified(&both, etag, t));
    }

    #[test]
    fn listings_escape_names() {
        let entry = SnapshotEntry {
            path: wharf_core::TreePath::new("d/<b>&\"x y\".iso").unwrap(),
            blob: wharf_core::Digest::sha256_of(b""),
            size: 3,
            modified_at: 0,
        };
        let html = listing_html("/files/r/d/", &[DirChild::File(entry)]);
        assert!(
            html.contains("href=\"%3Cb%3E%26%22x%20y%22.iso\""),
            "{html}"
        );
        assert!(
            html.contains("&lt;b&gt;&amp;&quot;x y&quot;.iso</a>"),
            "{html}"
        );
    }
}
