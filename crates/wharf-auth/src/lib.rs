//! Identities and access, with no HTTP and no SQL.
//!
//! - [`secret`]: password hashing (argon2id; bcrypt accepted for imported
//!   htpasswd users), random secrets, and the one constant-time comparison.
//! - [`glob`]: repository-name patterns of grants (the one grammar, kept in
//!   wharf-core and re-exported here).
//! - [`access`]: actions, grants, principals and the single evaluation
//!   function that every surface uses.
//! - [`token`]: short-lived signed registry tokens (the Docker token flow).
//!
//! Architecture invariant: whether a request may do something is decided only
//! by [`access::allowed_actions`]; callers never compare names or roles.

pub mod access;
pub mod admin;
pub use wharf_core::glob;
pub mod secret;
mod service;
mod throttle;
pub mod token;

pub use service::{
    new_api_token, parse_api_token, parse_scopes, AuthService, AuthSettings, AuthnError,
    Credentials, Identity, IssuedToken, RequestedScope, API_TOKEN_PREFIX,
};

/// What went wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Hashing failed (bad parameters; not a wrong password).
    #[error("password hashing failed: {0}")]
    Hashing(String),
    /// The system's random source failed.
    #[error("no randomness available: {0}")]
    Random(String),
    /// A token was malformed, forged, expired or for another audience.
    #[error("invalid token: {0}")]
    InvalidToken(&'static str),
}
