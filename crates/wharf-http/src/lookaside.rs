//! `/lookaside`: dist-git's source cache, speaking the rpkg/fedpkg protocol.
//!
//! `POST /lookaside/upload.cgi` takes `multipart/form-data` with `name` (the
//! package, optionally `namespace/name`) and `sha512sum` (or the legacy
//! `md5sum`), then either `filename` — answered `Available` or `Missing` — or
//! `file` (the bytes, streamed into the blob store and verified against the
//! checksum before anything is visible) and optionally `mtime`. `name` and the
//! checksum must come before `file` (rpkg sends them first): they decide the
//! authorization before a byte of the file is read. Downloads are
//! `GET|HEAD /lookaside/<name>/<file>/<hashtype>/<hash>/<file>` (see [`route`]).
//! Storage is `wharf_files::Lookaside`; access is [`guard`]; errors [`errors`].

mod errors;
mod guard;
mod route;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use wharf_auth::access::Action;
use wharf_core::{SourceChecksum, SourceFileName, SourceHashType, SourcePackage};
use wharf_meta::AuditOutcome;

use crate::auth::Caller;
use crate::AppState;
use errors::LookasideHttpError;
use route::{LookasideRoute, SourceRef};

/// Longest text field of an upload form (`name`, checksums, `filename`, `mtime`).
const MAX_FIELD_BYTES: usize = 4096;

/// The `/lookaside` routes, behind their guard.
pub(crate) fn routes(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/lookaside/upload.cgi", post(upload).fallback(unrouted))
        .route("/lookaside/{*rest}", any(download))
        .layer(axum::middleware::from_fn_with_state(state, guard::guard))
}

async fn unrouted() -> Response {
    LookasideHttpError::new(StatusCode::METHOD_NOT_ALLOWED, "upload.cgi takes POST").into_response()
}

/// `GET|HEAD` of a source file, with `Range` and `If-None-Match`.
async fn download(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let Some(LookasideRoute::Download(source)) = req.extensions().get::<LookasideRoute>().cloned()
    else {
        return LookasideHttpError::not_found().into_response();
    };
    match serve(&state, &source, req.headers(), req.method() == Method::HEAD).await {
        Ok(res) => res,
        Err(e) => e.into_response(),
    }
}

async fn serve(
    state: &AppState,
    source: &SourceRef,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, LookasideHttpError> {
    let lookaside = &state.files.lookaside;
    let found = lookaside
        .find(&source.package, &source.file, &source.checksum)
        .await?
        .ok_or_else(LookasideHttpError::not_found)?;
    let etag = format!("\"{}\"", found.blob);
    let last_modified = httpdate::fmt_http_date(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(found.mtime.max(0) as u64),
    );
    let common = |res: &mut Response| {
        let h = res.headers_mut();
        for (name, value) in [
            (header::ETAG, etag.as_str()),
            (header::LAST_MODIFIED, last_modified.as_str()),
            (header::ACCEPT_RANGES, "bytes"),
            (header::CONTENT_TYPE, "application/octet-stream"),
        ] {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(name, v);
            }
        }
    };
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if unchanged {
        let mut res = StatusCode::NOT_MODIFIED.into_response();
        common(&mut res);
        return Ok(res);
    }
    let range = match byte_range(headers, found.size) {
        Ok(range) => range,
        Err(()) => {
            return Err(wharf_files::LookasideError::Blob(
                wharf_blob::BlobError::RangeNotSatisfiable {
                    start: 0,
                    end: 0,
                    size: found.size,
                },
            )
            .into())
        }
    };
    let len = range.map_or(found.size, |r| r.len());
    let mut res = if head {
        StatusCode::OK.into_response()
    } else {
        let body = lookaside.open(&found, range).await?;
        Body::from_stream(body).into_response()
    };
    if let Some(r) = range {
        *res.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {}-{}/{}", r.start, r.end, found.size))
        {
            res.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    res.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    common(&mut res);
    Ok(res)
}

/// The `Range: bytes=…` of a request against a file of `size` bytes: `None`
/// for the whole file (no header, or a form this does not serve partially),
/// `Err` for a range outside the file (416).
fn byte_range(headers: &HeaderMap, size: u64) -> Result<Option<wharf_blob::ByteRange>, ()> {
    let Some(spec) = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = match (a.parse::<u64>().ok(), b.parse::<u64>().ok()) {
        (Some(start), Some(end)) if start <= end => (start, end.min(size.saturating_sub(1))),
        (Some(start), None) if b.is_empty() => (start, size.saturating_sub(1)),
        (None, Some(suffix)) if a.is_empty() && suffix > 0 => {
            (size.saturating_sub(suffix), size.saturating_sub(1))
        }
        _ => return Ok(None),
    };
    if size == 0 || start >= size {
        return Err(());
    }
    Ok(Some(wharf_blob::ByteRange { start, end }))
}

/// The form fields read before the file.
#[derive(Default)]
struct UploadForm {
    name: Option<SourcePackage>,
    checksum: Option<SourceChecksum>,
    filename: Option<SourceFileName>,
    mtime: Option<i64>,
}

/// `POST /lookaside/upload.cgi`.
async fn upload(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let Some(caller) = req.extensions().get::<Caller>().cloned() else {
        return LookasideHttpError::new(StatusCode::INTERNAL_SERVER_ERROR, "no caller")
            .into_response();
    };
    match upload_form(&state, &caller, req).await {
        Ok(res) => res,
        Err(e) => e.into_response(),
    }
}

async fn upload_form(
    state: &AppState,
    caller: &Caller,
    req: Request<Body>,
) -> Result<Response, LookasideHttpError> {
    let boundary = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok())
        .ok_or_else(|| {
            LookasideHttpError::bad_request("expected a multipart/form-data body with a boundary")
        })?;
    let stream = req.into_body().into_data_stream();
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut form = UploadForm::default();
    let mut stored: Option<(wharf_files::StagedSource, SourceFileName)> = None;
    let lookaside = &state.files.lookaside;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => {
                if let Some((staged, _)) = stored.take() {
                    lookaside.abandon(staged).await;
                }
                return Err(LookasideHttpError::bad_request(format!(
                    "malformed multipart body: {e}"
                )));
            }
        };
        let field_name = field.name().unwrap_or_default().to_owned();
        if field_name == "file" {
            if stored.is_some() {
                return Err(LookasideHttpError::bad_request("more than one file field"));
            }
            let (Some(package), Some(checksum)) = (&form.name, &form.checksum) else {
                return Err(LookasideHttpError::bad_request(
                    "the name and sha512sum (or md5sum) fields must come before the file",
                ));
            };
            guard::require(caller, Action::Push, package).await?;
            let file = field
                .file_name()
                .map(|n| n.rsplit(['/', '\\']).next().unwrap_or(n).to_owned())
                .ok_or_else(|| LookasideHttpError::bad_request("the file field has no filename"))?;
            let file = SourceFileName::new(&file)?;
            let body = field.map(|chunk| chunk.map_err(std::io::Error::other));
            let staged = lookaside
                .stage(package, &file, checksum, Box::pin(body))
                .await
                .inspect_err(|e| {
                    if matches!(e, wharf_files::LookasideError::ChecksumMismatch { .. }) {
                        audit(state, caller, package, &file, AuditOutcome::Failed);
                    }
                })?;
            stored = Some((staged, file));
            continue;
        }
        let text = match read_text(field).await {
            Ok(text) => text,
            Err(e) => {
                if let Some((staged, _)) = stored.take() {
                    lookaside.abandon(staged).await;
                }
                return Err(e);
            }
        };
        let parsed = apply_field(&mut form, &field_name, text.trim());
        if let Err(e) = parsed {
            if let Some((staged, _)) = stored.take() {
                lookaside.abandon(staged).await;
            }
            return Err(e);
        }
    }
    let package = form.name.ok_or_else(|| {
        LookasideHttpError::bad_request("Required field \"name\" is not present.")
    })?;
    if let Some((staged, file)) = stored {
        let size = staged.size();
        let account = caller.identity().account().map(str::to_owned);
        let done = lookaside
            .commit(staged, form.mtime, account.as_deref())
            .await;
        let outcome = if done.is_ok() {
            AuditOutcome::Ok
        } else {
            AuditOutcome::Failed
        };
        audit(state, caller, &package, &file, outcome);
        let done = done?;
        let body = if done.new {
            format!("Stored {file} ({size} bytes)\n")
        } else {
            format!("File {file} already exists\n")
        };
        return Ok(text_response(body));
    }
    let checksum = form
        .checksum
        .ok_or_else(|| LookasideHttpError::bad_request("Required checksum is not present"))?;
    let file = form.filename.ok_or_else(|| {
        LookasideHttpError::bad_request("Required field \"filename\" or \"file\" is not present.")
    })?;
    guard::require(caller, Action::Pull, &package).await?;
    let found = lookaside.find(&package, &file, &checksum).await?;
    Ok(text_response(
        if found.is_some() {
            "Available\n"
        } else {
            "Missing\n"
        }
        .to_owned(),
    ))
}

fn apply_field(form: &mut UploadForm, field: &str, value: &str) -> Result<(), LookasideHttpError> {
    match field {
        "name" => form.name = Some(SourcePackage::new(value)?),
        "sha512sum" | "md5sum" => {
            let kind = if field == "md5sum" {
                SourceHashType::Md5
            } else {
                SourceHashType::Sha512
            };
            // A form with both checksums is judged by the stronger one.
            if form
                .checksum
                .as_ref()
                .is_none_or(|c| c.kind() == SourceHashType::Md5)
            {
                form.checksum = Some(SourceChecksum::new(kind, value)?);
            }
        }
        "filename" => form.filename = Some(SourceFileName::new(value)?),
        "mtime" => {
            form.mtime = Some(value.parse::<i64>().map_err(|_| {
                LookasideHttpError::bad_request(format!("mtime {value:?} is not a unix time"))
            })?)
        }
        // Other fields (a client's extras) are ignored, as upload.cgi does.
        _ => {}
    }
    Ok(())
}

/// A text field, refused when longer than [`MAX_FIELD_BYTES`].
async fn read_text(mut field: multer::Field<'static>) -> Result<String, LookasideHttpError> {
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| LookasideHttpError::bad_request(format!("malformed multipart body: {e}")))?
    {
        let chunk: Bytes = chunk;
        if buf.len() + chunk.len() > MAX_FIELD_BYTES {
            return Err(LookasideHttpError::bad_request(format!(
                "a form field is longer than {MAX_FIELD_BYTES} bytes"
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    String::from_utf8(buf).map_err(|_| LookasideHttpError::bad_request("a form field is not UTF-8"))
}

fn text_response(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn audit(
    state: &AppState,
    caller: &Caller,
    package: &SourcePackage,
    file: &SourceFileName,
    outcome: AuditOutcome,
) {
    state.audit(
        caller.identity(),
        caller.remote(),
        Action::Push,
        &format!("lookaside:{package}/{file}"),
        outcome,
        &format!("lookaside/{package}"),
    );
}
