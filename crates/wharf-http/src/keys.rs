//! `GET /keys/wharf.asc` and `GET /keys/wharf.ed25519`: Wharf's public
//! signing keys, without authentication, so that a client can be told where
//! to fetch the key that verifies what Wharf signs (`ostree remote add
//! --gpg-import`, dnf's `gpgkey=`). Public keys are public: serving them
//! openly reveals nothing that a signature does not.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::AppState;

/// Wharf's public keys as served (the binary exports them from its signing keys).
#[derive(Debug, Clone, Default)]
pub struct PublicKeys {
    /// The OpenPGP public key, armored.
    pub openpgp_armored: String,
    /// The ed25519 public key, base64 of 32 bytes.
    pub ed25519_base64: String,
}

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/keys/wharf.asc", get(openpgp))
        .route("/keys/wharf.ed25519", get(ed25519))
}

fn text(body: String, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // A key changes only when an operator replaces it: a short cache is safe.
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn openpgp(State(state): State<Arc<AppState>>) -> Response {
    text(
        state.public_keys.openpgp_armored.clone(),
        "application/pgp-keys",
    )
}

async fn ed25519(State(state): State<Arc<AppState>>) -> Response {
    let mut body = state.public_keys.ed25519_base64.clone();
    body.push('\n');
    text(body, "text/plain; charset=utf-8")
}
