//! The lookaside surface's one error mapping. rpkg reads only the status code
//! (and, for the existence check, the body), so errors are short plain-text
//! bodies, as dist-git's `upload.cgi` answers; refusals map the same way as on
//! every surface, with a Basic challenge when signing in may help.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use wharf_core::LookasideValueError;
use wharf_files::LookasideError;

use crate::auth::Refusal;

/// An error answered on `/lookaside`.
#[derive(Debug)]
pub(crate) struct LookasideHttpError {
    status: StatusCode,
    message: String,
    retry_after_secs: Option<u64>,
    /// For a 416: the file's size, for `Content-Range: bytes */SIZE`.
    content_range: Option<u64>,
}

impl LookasideHttpError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> LookasideHttpError {
        LookasideHttpError {
            status,
            message: message.into(),
            retry_after_secs: None,
            content_range: None,
        }
    }

    /// The status answered.
    #[cfg(test)]
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// 400 with `message`: the request is malformed.
    pub(crate) fn bad_request(message: impl Into<String>) -> LookasideHttpError {
        LookasideHttpError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404: no such source file.
    pub(crate) fn not_found() -> LookasideHttpError {
        LookasideHttpError::new(StatusCode::NOT_FOUND, "no such source file")
    }

    fn internal(what: &str, err: &dyn std::fmt::Display) -> LookasideHttpError {
        tracing::error!(error = %err, "lookaside: {what}");
        LookasideHttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the server log",
        )
    }

    fn storage_full() -> LookasideHttpError {
        tracing::error!("lookaside write refused: the server's storage is full");
        LookasideHttpError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "the server's storage is full; try again once its operator has freed space",
        )
    }
}

impl IntoResponse for LookasideHttpError {
    fn into_response(self) -> Response {
        let mut res = (self.status, format!("{}\n", self.message)).into_response();
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"wharf\""),
            );
        }
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(size) = self.content_range {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                headers.insert(header::CONTENT_RANGE, v);
            }
        }
        res
    }
}

impl From<Refusal> for LookasideHttpError {
    fn from(refusal: Refusal) -> LookasideHttpError {
        let unauthorized = |msg: &str| LookasideHttpError::new(StatusCode::UNAUTHORIZED, msg);
        match refusal {
            Refusal::MalformedCredentials => unauthorized("malformed Authorization header"),
            Refusal::BadCredentials => unauthorized("invalid credentials"),
            Refusal::SignInRequired => {
                unauthorized("sign in (a client certificate, Basic or a token)")
            }
            Refusal::InsufficientScope => unauthorized("the token does not cover this package"),
            Refusal::Denied => LookasideHttpError::new(
                StatusCode::FORBIDDEN,
                "this account may not do that to this package",
            ),
            Refusal::Throttled { retry_after_secs } => LookasideHttpError {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: "too many failed sign-ins, or too many at once".into(),
                retry_after_secs: Some(retry_after_secs),
                content_range: None,
            },
            Refusal::Internal => {
                LookasideHttpError::internal("authorization", &"authorization lookup failed")
            }
        }
    }
}

impl From<LookasideValueError> for LookasideHttpError {
    fn from(e: LookasideValueError) -> LookasideHttpError {
        LookasideHttpError::bad_request(e.to_string())
    }
}

impl From<LookasideError> for LookasideHttpError {
    fn from(e: LookasideError) -> LookasideHttpError {
        match e {
            LookasideError::TooLarge { .. } => {
                LookasideHttpError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
            }
            LookasideError::ChecksumMismatch { .. } | LookasideError::Interrupted(_) => {
                LookasideHttpError::bad_request(e.to_string())
            }
            LookasideError::Meta(ref m) if m.is_storage_full() => {
                LookasideHttpError::storage_full()
            }
            LookasideError::Blob(wharf_blob::BlobError::Io(ref io))
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                ) =>
            {
                LookasideHttpError::storage_full()
            }
            LookasideError::Blob(wharf_blob::BlobError::RangeNotSatisfiable { size, .. }) => {
                let mut e = LookasideHttpError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "range not satisfiable",
                );
                e.content_range = Some(size);
                e
            }
            LookasideError::Blob(ref b) => LookasideHttpError::internal("blob store", b),
            LookasideError::Meta(ref m) => LookasideHttpError::internal("metadata", m),
        }
    }
}
