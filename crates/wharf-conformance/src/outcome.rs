//! What a check can conclude: pass, fail, or "an optional feature is absent".
//!
//! The spec leaves whole features optional (deletion, tag deletion, sha512, the single-POST
//! upload, cross-repository mounting, the referrers API's filter, ...).
//! A check that meets a registry without such a feature reports it through
//! `Ctx::missing`, naming the [`Feature`]: that is a [`Failure::Absent`] (a FAIL) by default,
//! because this suite's purpose is to show that a registry implements all of v1.1, and a note on
//! the PASS line when the operator passed `--allow-missing <feature>`, which gives the spec's
//! minimal reading.
//! Everything that is not covered by a named feature is judged strictly against the spec's MUSTs.

use std::fmt;
use std::str::FromStr;

/// The result of one check.
pub type Outcome = Result<(), Failure>;

/// Why a check did not pass.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The registry broke a requirement, or the check could not be carried out.
    #[error("{0}")]
    Fail(String),
    /// The registry does not implement a feature that the spec lets it leave out, and it said
    /// so in a way the spec allows.
    #[error("{reason}")]
    Absent {
        /// The optional feature that is missing.
        feature: Feature,
        /// What the registry answered.
        reason: String,
    },
}

impl Failure {
    /// Prefixes the reason with the step that was being carried out, so a failure in a shared
    /// setup helper says which check step it interrupted.
    pub fn context(self, step: &str) -> Failure {
        match self {
            Failure::Fail(reason) => Failure::Fail(format!("{step}: {reason}")),
            Failure::Absent { feature, reason } => Failure::Absent {
                feature,
                reason: format!("{step}: {reason}"),
            },
        }
    }
}

impl From<reqwest::Error> for Failure {
    fn from(err: reqwest::Error) -> Self {
        // The top-level reqwest message is often just "error sending request"; the source chain
        // carries the useful part (connection refused, reset, timed out).
        let mut msg = format!("http error: {err}");
        let mut source = std::error::Error::source(&err);
        while let Some(inner) = source {
            msg.push_str(&format!(": {inner}"));
            source = inner.source();
        }
        Failure::Fail(msg)
    }
}

/// Returns early from a check with [`Failure::Fail`] and a formatted reason.
macro_rules! fail {
    ($($arg:tt)*) => {
        return Err($crate::outcome::Failure::Fail(format!($($arg)*)))
    };
}
pub(crate) use fail;

/// Returns early with [`Failure::Fail`] unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            $crate::outcome::fail!($($arg)*);
        }
    };
}
pub(crate) use ensure;

/// A part of the spec (or of its legacy Docker heritage) that a registry may leave out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Feature {
    /// Pushing a blob in one `POST ?digest=` request (spec: "Registries MAY support").
    SinglePost,
    /// Cross-repository blob mounting (spec: a registry unable to mount SHOULD return 202).
    Mount,
    /// `Range` requests on blobs (spec: "SHOULD support the Range request header").
    Range,
    /// sha512 digests (image-spec: "Implementations MAY implement SHA-512").
    Sha512,
    /// Streamed `PATCH` uploads without `Content-Range` (Docker heritage; not in the v1.1 text).
    StreamedPatch,
    /// Cancelling an upload with `DELETE` (end-14, added to the spec after v1.1.1).
    UploadCancel,
    /// Rejecting manifests whose blobs are unknown (spec: "MAY reject").
    ManifestRefCheck,
    /// Docker schema 2 manifests and manifest lists (legacy types the spec mentions only).
    DockerManifests,
    /// Manifest and blob deletion (spec: "MAY implement deletion or MAY disable it").
    Delete,
    /// Deleting a tag without its manifest (spec: "a registry MAY implement tag deletion").
    TagDelete,
    /// The referrers API (a v1.1 Content Discovery API; older registries answer 404).
    Referrers,
    /// The referrers `artifactType` filter (spec: "SHOULD support filtering").
    ReferrersFilter,
    /// `GET /v2/_catalog` (Docker heritage; not part of the OCI spec).
    Catalog,
    /// JSON error bodies on 4xx responses (spec: "MAY return a body in any format").
    ErrorBody,
    /// `Docker-Distribution-API-Version` and `Docker-Content-Digest` headers where the v1.1.1
    /// text only says SHOULD or OPTIONAL.
    DockerHeaders,
    /// `?tag=` on a manifest push by digest, answered with `OCI-Tag` (end-7b, the later
    /// revision: "the registry MAY support the pushing of tags").
    TagParam,
    /// Docker token authentication: a mount whose token lacks pull on `from` is challenged for
    /// it (distribution's behaviour; the OCI text does not cover authentication).
    TokenMount,
}

impl Feature {
    /// Every feature, in the order the README lists them.
    pub const ALL: [Feature; 17] = [
        Feature::SinglePost,
        Feature::Mount,
        Feature::Range,
        Feature::Sha512,
        Feature::StreamedPatch,
        Feature::UploadCancel,
        Feature::ManifestRefCheck,
        Feature::DockerManifests,
        Feature::Delete,
        Feature::TagDelete,
        Feature::Referrers,
        Feature::ReferrersFilter,
        Feature::Catalog,
        Feature::ErrorBody,
        Feature::DockerHeaders,
        Feature::TagParam,
        Feature::TokenMount,
    ];

    /// The name used on the command line and in FAIL lines.
    pub fn name(self) -> &'static str {
        match self {
            Feature::SinglePost => "single-post",
            Feature::Mount => "mount",
            Feature::Range => "range",
            Feature::Sha512 => "sha512",
            Feature::StreamedPatch => "streamed-patch",
            Feature::UploadCancel => "upload-cancel",
            Feature::ManifestRefCheck => "manifest-ref-check",
            Feature::DockerManifests => "docker-manifests",
            Feature::Delete => "delete",
            Feature::TagDelete => "tag-delete",
            Feature::Referrers => "referrers",
            Feature::ReferrersFilter => "referrers-filter",
            Feature::Catalog => "catalog",
            Feature::ErrorBody => "error-body",
            Feature::DockerHeaders => "docker-headers",
            Feature::TagParam => "tag-param",
            Feature::TokenMount => "token-mount",
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A feature name on the command line that matches no [`Feature`].
#[derive(Debug, thiserror::Error)]
#[error("unknown feature {0:?}; known: all, {known}", known = known_names())]
pub struct UnknownFeature(String);

fn known_names() -> String {
    Feature::ALL.map(Feature::name).join(", ")
}

impl FromStr for Feature {
    type Err = UnknownFeature;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Feature::ALL
            .into_iter()
            .find(|it| it.name() == s)
            .ok_or_else(|| UnknownFeature(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_names_round_trip() {
        for feature in Feature::ALL {
            assert_eq!(feature.name().parse::<Feature>().unwrap(), feature);
        }
        assert!("nope".parse::<Feature>().is_err());
    }
}
