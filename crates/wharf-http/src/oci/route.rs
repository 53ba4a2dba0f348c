//! Parsing `/v2/<name>/<endpoint>` paths into validated routes.

use wharf_core::{Digest, Reference, RepoName};

use super::ApiError;

/// A parsed `/v2/` path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags(RepoName),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(RepoName, Reference),
    /// `/v2/<name>/blobs/<digest>`
    Blob(RepoName, Digest),
    /// `/v2/<name>/blobs/uploads/`
    UploadStart(RepoName),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(RepoName, String),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(RepoName, Digest),
}

fn name(segments: &[&str]) -> Result<RepoName, ApiError> {
    let joined = segments.join("/");
    RepoName::parse(&joined).map_err(|e| ApiError::name_invalid(e.to_string()))
}

fn digest(s: &str) -> Result<Digest, ApiError> {
    Digest::parse(s).map_err(|e| ApiError::digest_invalid(e.to_string()))
}

impl Route {
    /// Parses the path of a request under `/v2/`.
    pub(crate) fn parse(path: &str) -> Result<Route, ApiError> {
        let rest = path.strip_prefix("/v2/").unwrap_or(path);
        if rest == "_catalog" {
            return Ok(Route::Catalog);
        }
        let segs: Vec<&str> = rest.split('/').collect();
        let n = segs.len();
        let tail = |k: usize| if n >= k { Some(&segs[n - k..]) } else { None };
        if let Some(["tags", "list"]) = tail(2) {
            return Ok(Route::Tags(name(&segs[..n - 2])?));
        }
        if let Some(["blobs", "uploads", id]) = tail(3) {
            // `…/blobs/uploads/<x>` where x is a digest is a blob of a
            // repository whose name ends in `/blobs/uploads`; ids never hold ':'.
            if !id.contains(':') && n > 3 {
                let repo = name(&segs[..n - 3])?;
                return Ok(if id.is_empty() {
                    Route::UploadStart(repo)
                } else {
                    Route::Upload(repo, (*id).to_owned())
                });
            }
        }
        if let Some(["blobs", "uploads"]) = tail(2) {
            return Ok(Route::UploadStart(name(&segs[..n - 2])?));
        }
        if n >= 3 {
            let repo_segs = &segs[..n - 2];
            match segs[n - 2] {
                "manifests" => {
                    let reference = Reference::parse(segs[n - 1]).map_err(|e| match e {
                        wharf_core::NameError::InvalidDigest(d) => {
                            ApiError::digest_invalid(d.to_string())
                        }
                        other => ApiError::manifest_unknown(other.to_string()),
                    })?;
                    return Ok(Route::Manifest(name(repo_segs)?, reference));
                }
                "blobs" => return Ok(Route::Blob(name(repo_segs)?, digest(segs[n - 1])?)),
                "referrers" => return Ok(Route::Referrers(name(repo_segs)?, digest(segs[n - 1])?)),
                _ => {}
            }
        }
        Err(ApiError::not_found(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_from_the_end() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(
            matches!(Route::parse("/v2/a/b/tags/list"), Ok(Route::Tags(n)) if n.as_str() == "a/b")
        );
        assert!(
            matches!(Route::parse("/v2/x/manifests/y/manifests/latest"), Ok(Route::Manifest(n, _)) if n.as_str() == "x/manifests/y")
        );
        assert!(matches!(
            Route::parse("/v2/a/blobs/uploads/"),
            Ok(Route::UploadStart(_))
        ));
        assert!(matches!(
            Route::parse("/v2/a/blobs/uploads"),
            Ok(Route::UploadStart(_))
        ));
        assert!(
            matches!(Route::parse("/v2/a/blobs/uploads/abc"), Ok(Route::Upload(_, id)) if id == "abc")
        );
        assert!(
            matches!(Route::parse(&format!("/v2/a/blobs/uploads/blobs/{d}")), Ok(Route::Blob(n, _)) if n.as_str() == "a/blobs/uploads")
        );
        assert!(matches!(
            Route::parse(&format!("/v2/a/referrers/{d}")),
            Ok(Route::Referrers(..))
        ));
        assert!(Route::parse("/v2/A/tags/list").is_err());
        assert!(Route::parse("/v2/../x/tags/list").is_err());
        assert!(Route::parse("/v2/a/blobs/sha256:zz").is_err());
        assert!(Route::parse("/v2/a/whatever").is_err());
    }
}
