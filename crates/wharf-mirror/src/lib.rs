//! Mirroring other registries into Wharf's store.
//!
//! [`client::UpstreamClient`] reads an upstream over the distribution API
//! (ping, token or Basic authentication, tag listing, manifests, blobs);
//! [`copy::Mirror`] copies chosen tags into the store through the public
//! `wharf_oci::Registry` API; [`names`] maps upstream names to local ones
//! (Docker Hub's `library/`, the host prefix); [`select`] picks tags;
//! [`run`] is one sync run of one remote, shared by `wharf sync` and the
//! `sync:<remote>` job.
//! [`proxy`] is the pull-through cache the `/v2` surface falls back to.
//! No configuration is read here: the `wharf` binary lowers `[mirror]` into
//! these types.

#![warn(missing_docs)]

pub mod client;
pub mod copy;
pub mod headers;
pub mod names;
pub mod proxy;
pub mod run;
pub mod select;

use wharf_core::Digest;
use wharf_oci::OciError;

pub use client::{UpstreamClient, UpstreamSettings};
pub use copy::{CopyOptions, Mirror, TagOutcome, Transferred};
pub use proxy::{ProxyRemote, PullThrough, PullThroughPolicy};
pub use run::{run_sync, SyncDefinition, SyncLine, SyncObserver, SyncPlan, SyncSummary};
pub use select::{Platform, SelectionError, SemverRange, TagSelection};

/// Why a mirroring step failed.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The upstream could not be reached (DNS, connection, TLS, time-out).
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// What was asked.
        url: String,
        /// The transport's reason, with its causes.
        reason: String,
    },
    /// The upstream refused the credentials, or asked for some and has none.
    #[error("{upstream} refused {}", match .user {
        Some(u) => format!("the credentials of user {u:?} (check username and password_file)"),
        None => "anonymous access (set username and password_file)".to_owned(),
    })]
    Unauthorized {
        /// The upstream's base URL.
        upstream: String,
        /// The user name sent, if any.
        user: Option<String>,
    },
    /// Signed in, but not allowed.
    #[error("{url}: access denied{}", .user.as_ref().map(|u| format!(" to user {u:?}")).unwrap_or_default())]
    Denied {
        /// What was asked.
        url: String,
        /// The user name sent, if any.
        user: Option<String>,
    },
    /// The upstream has no such repository, tag, manifest or blob.
    #[error("upstream has no {0}")]
    NotFound(String),
    /// 429/503 persisted through every retry, or asked for too long a wait.
    #[error("{url}: still answering {status} after {attempts} attempts")]
    RateLimited {
        /// What was asked.
        url: String,
        /// The last status.
        status: u16,
        /// Attempts made.
        attempts: u32,
    },
    /// Any other unexpected status.
    #[error("{url}: unexpected status {status}{}", if .body.is_empty() { String::new() } else { format!(": {}", .body) })]
    Status {
        /// What was asked.
        url: String,
        /// The status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// Bytes did not match their digest; nothing of them was stored.
    #[error("{what}: content has digest {actual}, expected {expected}")]
    DigestMismatch {
        /// What was fetched.
        what: String,
        /// The digest asked for or announced.
        expected: Digest,
        /// The digest of what arrived.
        actual: Digest,
    },
    /// The upstream broke the protocol (a malformed header or body).
    #[error("{0}")]
    Protocol(String),
    /// The settings are unusable (a bad CA bundle).
    #[error("{0}")]
    Config(String),
    /// The local store refused or failed.
    #[error("storing: {0}")]
    Store(#[from] OciError),
    /// Trusted keys are configured and the image has no signature they verify.
    #[error("{0}")]
    Signature(#[from] wharf_oci::cosign::CosignError),
}
