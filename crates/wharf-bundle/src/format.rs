//! The bundle's on-disk format (version 1), documented in docs/bundle.md: the
//! index `wharf-bundle.json` and its checksum file, and the OCI image layout
//! (`oci-layout`, `index.json`, `blobs/<algorithm>/<hex>`) whose blob
//! directory is also the bundle's blob store, so every blob is one file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wharf_core::Digest;

/// The `format` value of every bundle index.
pub const FORMAT: &str = "wharf-bundle";
/// The newest format version this build writes and reads.
pub const VERSION: u32 = 1;
/// The bundle index, at the top of the directory.
pub const INDEX_FILE: &str = "wharf-bundle.json";
/// The index's own checksum, in `sha256sum` format (`sha256sum -c` checks it).
pub const INDEX_CHECKSUM_FILE: &str = "wharf-bundle.json.sha256";
/// The OCI image layout marker.
pub const OCI_LAYOUT_FILE: &str = "oci-layout";
/// The OCI image layout index.
pub const OCI_INDEX_FILE: &str = "index.json";
/// The `oci-layout` file's content.
pub const OCI_LAYOUT_CONTENT: &str = "{\"imageLayoutVersion\":\"1.0.0\"}\n";
/// The annotation naming a manifest in an OCI layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Where an export keeps files until their digest is checked (removed when done).
pub const PARTIAL_DIR: &str = ".partial";

/// `wharf-bundle.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleIndex {
    /// Always [`FORMAT`].
    pub format: String,
    /// The format version ([`VERSION`]).
    pub version: u32,
    /// This bundle's id, which a `--since` bundle names as its parent.
    pub id: String,
    /// When the export finished (RFC 3339, UTC).
    pub created: String,
    /// What wrote it (the wharf version and the store it was exported from).
    pub source: String,
    /// The id of the bundle this one was exported `--since`, if any.
    pub since: Option<String>,
    /// Every repository, its tags and its manifests.
    pub repositories: Vec<RepositoryEntry>,
    /// Every file of the bundle but the index and its checksum.
    pub files: Vec<FileEntry>,
    /// Blobs and manifests this bundle refers to but leaves to an earlier bundle.
    #[serde(default)]
    pub absent: Vec<AbsentEntry>,
}

/// One repository of a bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryEntry {
    /// The repository name.
    pub name: String,
    /// Tag → manifest digest.
    pub tags: BTreeMap<String, String>,
    /// Every manifest of the repository's tags, children before the indexes naming them.
    pub manifests: Vec<ManifestEntry>,
}

/// One manifest of a repository.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestEntry {
    /// Its digest.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
}

/// One file of the bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    /// Relative to the bundle directory, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 of the content.
    pub sha256: String,
}

/// Content a `--since` bundle refers to without carrying it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AbsentEntry {
    /// The blob or manifest digest.
    pub digest: String,
    /// Its size.
    pub size: u64,
    /// The id of the bundle that carries it.
    pub bundle: String,
}

/// `index.json` of an OCI image layout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayoutIndex {
    /// Always 2.
    pub schema_version: u32,
    /// The OCI index media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// One descriptor per reference.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// An OCI content descriptor (the fields a layout index needs).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The manifest's media type.
    #[serde(default)]
    pub media_type: String,
    /// Its digest.
    pub digest: String,
    /// Its size.
    pub size: u64,
    /// `org.opencontainers.image.ref.name` and others.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// `blobs/<algorithm>/<hex>`, the one path of a blob in a bundle or layout.
pub fn blob_path(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm().as_str(), digest.hex())
}

/// The digest a bundle-relative path names, if it is a blob path; `None` for
/// anything else (including any path that could leave the directory).
pub fn digest_of_blob_path(path: &str) -> Option<Digest> {
    let rest = path.strip_prefix("blobs/")?;
    let (algorithm, hex) = rest.split_once('/')?;
    let digest = Digest::parse(&format!("{algorithm}:{hex}")).ok()?;
    (blob_path(&digest) == path).then_some(digest)
}

/// `dir` joined with a checked bundle-relative path.
pub fn join(dir: &Path, relative: &str) -> PathBuf {
    relative.split('/').fold(dir.to_owned(), |p, c| p.join(c))
}

/// The reference name of `repository:tag` in the layout view (`skopeo copy oci:DIR:REPO:TAG`).
pub fn ref_name(repository: &str, tag: &str) -> String {
    format!("{repository}:{tag}")
}

/// Splits a layout reference name into repository and tag: `team/app:v1` →
/// (`Some("team/app")`, `v1`); a bare `v1` → (`None`, `v1`).
pub fn split_ref_name(name: &str) -> (Option<&str>, &str) {
    match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') && !repo.is_empty() => (Some(repo), tag),
        _ => (None, name),
    }
}

/// `2026-12-01T14:27:24Z` for a time since the Unix epoch.
pub fn rfc3339(since_epoch: std::time::Duration) -> String {
    wharf_core::time::rfc3339(i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_paths_round_trip_and_nothing_else_is_one() {
        let d = Digest::sha256_of(b"x");
        assert_eq!(digest_of_blob_path(&blob_path(&d)), Some(d.clone()));
        for bad in [
            "index.json",
            "blobs/sha256/../index.json",
            "blobs/sha256/ABC",
            "blobs/md5/00",
            &format!("blobs/sha256/{}/x", d.hex()),
            &format!("/blobs/sha256/{}", d.hex()),
        ] {
            assert_eq!(digest_of_blob_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn ref_names_split_at_the_tag() {
        assert_eq!(split_ref_name("team/app:v1"), (Some("team/app"), "v1"));
        assert_eq!(
            split_ref_name("host_5000/a/b:1.0"),
            (Some("host_5000/a/b"), "1.0")
        );
        assert_eq!(split_ref_name("latest"), (None, "latest"));
    }

    #[test]
    fn dates() {
        use std::time::Duration;
        assert_eq!(rfc3339(Duration::from_secs(0)), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(Duration::from_secs(1_796_135_244)),
            "2026-12-01T14:27:24Z"
        );
        assert_eq!(
            rfc3339(Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }
}
