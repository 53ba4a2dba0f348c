//! The tree surfaces' guard: which repository a path names, and whether the
//! caller may pull from it — asked of the one authorization layer.
//!
//! The repository is found before the question is asked (names hold slashes,
//! so only the stored names say where the repository ends). A path that names
//! no repository is refused exactly as a private one would be unless the
//! caller could pull a repository of that name, so a refusal never tells an
//! outsider which private repositories exist.

use axum::body::Body;
use axum::extract::Request;
use wharf_auth::access::{Action, Resource};
use wharf_core::RepositoryKind;
use wharf_snapshot::Located;

use super::errors::TreeError;
use crate::auth::{authenticate_request, Need};
use crate::AppState;

/// Authenticates the request and checks `action` on the repository `raw` names.
pub(super) async fn admit(
    state: &AppState,
    req: &mut Request<Body>,
    kind: RepositoryKind,
    raw: &str,
    action: Action,
) -> Result<Located, TreeError> {
    let caller = authenticate_request(state, req).await?;
    let located = state.snapshots.locate(kind, raw).await?;
    let name = match &located {
        Some(l) => l.repo.as_str().to_owned(),
        None => raw.to_owned(),
    };
    caller
        .check(&Need::Action(action, Resource::repository(kind, name)))
        .await?;
    match located {
        Some(located) => Ok(located),
        None => Err(TreeError::not_found()),
    }
}
