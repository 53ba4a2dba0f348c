//! The tree surfaces' errors (`/ostree`, `/rpm`, `/files`): plain HTTP status
//! codes with a one-line text body, which is all that ostree, dnf, curl and
//! PXE loaders read. Every domain error and refusal is mapped here, once.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use wharf_blob::BlobError;
use wharf_snapshot::SnapshotError;

use crate::auth::Refusal;

/// An error answer on a tree surface.
#[derive(Debug)]
pub(crate) struct TreeError {
    status: StatusCode,
    message: String,
    retry_after_secs: Option<u64>,
    basic_challenge: bool,
    content_range_size: Option<u64>,
}

impl TreeError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> TreeError {
        TreeError {
            status,
            message: message.into(),
            retry_after_secs: None,
            basic_challenge: false,
            content_range_size: None,
        }
    }

    pub(crate) fn not_found() -> TreeError {
        TreeError::new(StatusCode::NOT_FOUND, "not found")
    }

    pub(crate) fn method_not_allowed(allow: &'static str) -> Response {
        let mut res =
            TreeError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed").into_response();
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
        res
    }

    pub(crate) fn range_not_satisfiable(size: u64) -> TreeError {
        let mut e = TreeError::new(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
        e.content_range_size = Some(size);
        e
    }

    fn internal(msg: String) -> TreeError {
        tracing::error!(error = %msg, "tree request failed");
        TreeError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the server log",
        )
    }
}

impl From<Refusal> for TreeError {
    fn from(r: Refusal) -> TreeError {
        match r {
            Refusal::MalformedCredentials => {
                TreeError::new(StatusCode::BAD_REQUEST, "malformed Authorization header")
            }
            // ostree, dnf and curl all answer a Basic challenge with the
            // credentials in their remote URL or configuration.
            Refusal::BadCredentials | Refusal::SignInRequired => {
                let mut e = TreeError::new(StatusCode::UNAUTHORIZED, "authentication required");
                e.basic_challenge = true;
                e
            }
            Refusal::InsufficientScope | Refusal::Denied => {
                TreeError::new(StatusCode::FORBIDDEN, "access denied")
            }
            Refusal::Throttled { retry_after_secs } => {
                let mut e = TreeError::new(StatusCode::TOO_MANY_REQUESTS, "too many requests");
                e.retry_after_secs = Some(retry_after_secs);
                e
            }
            Refusal::Internal => TreeError::internal("authorization lookup failed".into()),
        }
    }
}

impl From<SnapshotError> for TreeError {
    fn from(e: SnapshotError) -> TreeError {
        match e {
            SnapshotError::Blob(BlobError::RangeNotSatisfiable { size, .. }) => {
                TreeError::range_not_satisfiable(size)
            }
            // The database names a blob the store lacks: `wharf check` reports it.
            SnapshotError::Blob(BlobError::NotFound(d)) => TreeError::internal(format!(
                "a published snapshot names blob {d}, which is not stored"
            )),
            SnapshotError::NoSuchNumber { .. } => TreeError::not_found(),
            other => TreeError::internal(other.to_string()),
        }
    }
}

impl IntoResponse for TreeError {
    fn into_response(self) -> Response {
        let mut res = (self.status, format!("{}\n", self.message)).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if self.basic_challenge {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"wharf\", charset=\"UTF-8\""),
            );
        }
        if let Some(secs) = self.retry_after_secs {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(size) = self.content_range_size {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
        }
        res
    }
}
