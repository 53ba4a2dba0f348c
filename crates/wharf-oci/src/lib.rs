//! The OCI registry: what `/v2/` means, independent of HTTP.
//!
//! [`Registry`] implements every operation of the OCI distribution spec v1.1
//! (and the Docker registry v2 dialect) over the shared blob store and the
//! metadata database. The HTTP layer only extracts typed inputs, calls one
//! method and maps [`OciError`] to the spec's error codes.
//!
//! Architecture invariant: a manifest is recorded only after its bytes are a
//! verified blob and every blob or child manifest it references is present in
//! the same repository; the tag (if any), or every `?tag=` tag of a push by
//! digest, moves in that same transaction.

pub mod cosign;
mod error;
mod manifest;
pub mod media;
mod pulls;
pub mod quota;
mod registry;
pub mod retention;

pub use error::OciError;
pub use manifest::{parse_manifest, tag_params, ParsedManifest, MAX_TAG_PARAMS};
pub use quota::{QuotaRule, Quotas};
pub use registry::{
    resolve_range, BlobRead, ManifestContent, Page, PushedManifest, Registry, RegistryLimits,
};
pub use retention::{RepositoryPlan, RetentionPlan, RetentionPolicy, RetentionRule};
