//! The one place where registry errors become OCI error responses:
//! `{"errors":[{"code","message","detail"}]}` with the spec's status codes.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use wharf_oci::OciError;

/// An OCI error response.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    fn with_header(mut self, name: HeaderName, value: String) -> ApiError {
        if let Ok(v) = HeaderValue::from_str(&value) {
            self.headers.push((name, v));
        }
        self
    }

    pub(crate) fn name_invalid(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "NAME_INVALID", msg)
    }

    pub(crate) fn digest_invalid(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", msg)
    }

    pub(crate) fn manifest_unknown(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", msg)
    }

    pub(crate) fn name_unknown(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "NAME_UNKNOWN", msg)
    }

    /// The pull-through cache's failures. An upstream that is down, slow or
    /// refusing is no fault of the client's and none of this server's code:
    /// `503 UNAVAILABLE`, which sends containerd on to its next host.
    pub(crate) fn from_proxy(err: wharf_mirror::proxy::ProxyError, blob: bool) -> ApiError {
        use wharf_mirror::proxy::ProxyError;
        let msg = err.to_string();
        match err {
            ProxyError::NotFound(_) if blob => {
                ApiError::new(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", msg)
            }
            ProxyError::NotFound(_) => ApiError::manifest_unknown(msg),
            ProxyError::NotAllowed(_) => ApiError::name_unknown(msg),
            ProxyError::Unavailable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", msg)
            }
            ProxyError::Store(e) => e.into(),
        }
    }

    pub(crate) fn upload_invalid(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID", msg)
    }

    pub(crate) fn unsupported(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", msg)
    }

    /// 401 with the `WWW-Authenticate` challenge that tells clients where to get a token.
    pub(crate) fn unauthorized(challenge: &str) -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication required",
        )
        .with_header(header::WWW_AUTHENTICATE, challenge.to_owned())
    }

    pub(crate) fn too_many_requests(retry_after_secs: u64) -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TOOMANYREQUESTS",
            "too many failed sign-ins; try again later",
        )
        .with_header(header::RETRY_AFTER, retry_after_secs.to_string())
    }

    /// A fault of the server itself; the caller logs the cause.
    pub(crate) fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN",
            "internal error; see the server log",
        )
    }

    /// The disk (or the database's) is full: a fault of the server, but one the
    /// client should hear about in plain words, and one that passes by itself once
    /// the operator frees space. Logged once, here.
    pub(crate) fn storage_full() -> ApiError {
        tracing::error!("write refused: the registry's storage is full");
        ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "UNKNOWN",
            "the registry's storage is full; try again once its operator has freed space",
        )
    }

    pub(crate) fn denied() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "DENIED",
            "requested access to the resource is denied",
        )
    }

    pub(crate) fn not_found(path: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!("no registry endpoint at {path}"),
        )
    }
}

/// Whether a blob-store failure is a full disk (ENOSPC, or EDQUOT for a quota).
fn storage_full_io(err: &wharf_blob::BlobError) -> bool {
    match err {
        wharf_blob::BlobError::Io(e) => {
            e.kind() == std::io::ErrorKind::StorageFull
                || e.kind() == std::io::ErrorKind::QuotaExceeded
        }
        _ => false,
    }
}

impl From<OciError> for ApiError {
    fn from(err: OciError) -> ApiError {
        let msg = err.to_string();
        // Exhaustive on purpose: a new domain error must choose its wire form here.
        match err {
            OciError::NameInvalid(_) => ApiError::name_invalid(msg),
            OciError::NameUnknown(_) => ApiError::new(StatusCode::NOT_FOUND, "NAME_UNKNOWN", msg),
            OciError::DigestInvalid(_) => ApiError::digest_invalid(msg),
            OciError::BlobUnknown(_) => ApiError::new(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", msg),
            OciError::BlobUploadUnknown(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN", msg)
            }
            OciError::BlobUploadInvalid(_) => ApiError::upload_invalid(msg),
            OciError::ChunkOutOfOrder { size } => ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "BLOB_UPLOAD_INVALID",
                msg,
            )
            .with_header(header::RANGE, format!("0-{}", size.saturating_sub(1))),
            OciError::RangeNotSatisfiable { size } => {
                ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, "SIZE_INVALID", msg)
                    .with_header(header::CONTENT_RANGE, format!("bytes */{size}"))
            }
            OciError::ManifestUnknown(_) => ApiError::manifest_unknown(msg),
            OciError::ManifestInvalid(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", msg)
            }
            // The spec's code table has no tag code (TAG_INVALID is schema 1 legacy
            // that clients "SHOULD NOT depend on"); a bad tag makes the push invalid.
            OciError::TagInvalid(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", msg)
            }
            // The spec's answer for "too many tags are included in the request".
            OciError::TooManyTags { .. } => {
                ApiError::new(StatusCode::URI_TOO_LONG, "MANIFEST_INVALID", msg)
            }
            OciError::ManifestBlobUnknown(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN", msg)
            }
            OciError::ManifestTooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "MANIFEST_INVALID", msg)
            }
            OciError::SizeInvalid(_) => ApiError::new(StatusCode::BAD_REQUEST, "SIZE_INVALID", msg),
            OciError::Unsupported(_) => ApiError::unsupported(msg),
            OciError::WrongKind { .. } => ApiError::new(StatusCode::FORBIDDEN, "DENIED", msg),
            OciError::QuotaExceeded { .. } => ApiError::new(StatusCode::FORBIDDEN, "DENIED", msg),
            OciError::Meta(wharf_meta::MetaError::Busy(_)) => {
                // Transient: a collector held the blob longer than a request waits.
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", msg)
                    .with_header(header::RETRY_AFTER, "1".to_owned())
            }
            OciError::Storage(ref e) if storage_full_io(e) => ApiError::storage_full(),
            OciError::Meta(ref e) if e.is_storage_full() => ApiError::storage_full(),
            OciError::Storage(_) | OciError::Meta(_) => {
                // Server faults are logged once, here, and never blamed on the client.
                tracing::error!(error = %msg, "registry operation failed");
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "errors": [{ "code": self.code, "message": self.message, "detail": null }]
        });
        let mut res = (self.status, axum::Json(body)).into_response();
        for (name, value) in self.headers {
            res.headers_mut().insert(name, value);
        }
        let (name, value) = crate::api_version_header();
        res.headers_mut().insert(name, value);
        res
    }
}
