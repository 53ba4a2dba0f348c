//! The management API's one error envelope and the mapping of every domain
//! error and refusal to it: `{"error": {"code": "NOT_FOUND", "message": "…"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use wharf_auth::admin::AdminError;

use crate::auth::Refusal;

/// An error in the management API's envelope.
pub(super) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    pub(super) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    fn retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after_secs = Some(secs);
        self
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> ApiError {
        let msg = e.to_string();
        match e {
            AdminError::Invalid(_) => ApiError::new(StatusCode::BAD_REQUEST, "INVALID", msg),
            AdminError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "CONFLICT", msg),
            AdminError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", msg),
            AdminError::Meta(e) => e.into(),
            AdminError::Auth(_) => internal(msg),
        }
    }
}

impl From<wharf_meta::MetaError> for ApiError {
    fn from(e: wharf_meta::MetaError) -> ApiError {
        if e.is_storage_full() {
            // As on /v2: the operator's to fix, and it passes once space is freed.
            tracing::error!("write refused: the server's storage is full");
            return ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "STORAGE_FULL",
                "the server's storage is full; try again once its operator has freed space",
            );
        }
        internal(e.to_string())
    }
}

pub(super) fn internal(msg: String) -> ApiError {
    tracing::error!(error = %msg, "management operation failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL",
        "internal error; see the server log",
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"wharf\""),
            );
        }
        if let Some(secs) = self.retry_after_secs {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> ApiError {
        let unauthorized = |msg| ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", msg);
        match refusal {
            Refusal::MalformedCredentials => unauthorized("malformed Authorization header"),
            Refusal::BadCredentials => unauthorized("invalid credentials"),
            // Registry (bearer JWT) tokens only carry repository scopes.
            Refusal::SignInRequired | Refusal::InsufficientScope => {
                unauthorized("sign in as a server administrator")
            }
            Refusal::Denied => ApiError::new(
                StatusCode::FORBIDDEN,
                "DENIED",
                "server administrators only (and not through a scoped token)",
            ),
            Refusal::Throttled { retry_after_secs } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_REQUESTS",
                "too many failed sign-ins, or too many at once",
            )
            .retry_after(retry_after_secs),
            Refusal::Internal => internal("authorization lookup failed".into()),
        }
    }
}
