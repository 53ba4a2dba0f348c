//! `[files]` (file repositories) and `[lookaside]` (dist-git's source cache),
//! with their validation.
//!
//! Kept apart from `lib.rs` so that the file formats' keys grow in one place
//! that no other format's work touches.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[files]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilesConfig {
    /// Largest file `PUT /api/v1/files/…` stores, in bytes.
    pub max_upload_bytes: u64,
    /// Upstream trees mirrored into file repositories.
    pub remotes: Vec<FilesRemoteConfig>,
}

/// Default of `files.max_upload_bytes`: 20 GiB, above the largest install
/// ISOs (a DVD image is under 12 GiB).
pub const DEFAULT_FILES_MAX_UPLOAD_BYTES: u64 = 20 * 1024 * 1024 * 1024;

impl Default for FilesConfig {
    fn default() -> FilesConfig {
        FilesConfig {
            max_upload_bytes: DEFAULT_FILES_MAX_UPLOAD_BYTES,
            remotes: Vec::new(),
        }
    }
}

/// One `[[files.remotes]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilesRemoteConfig {
    /// Name used by `wharf sync NAME` and the `files-sync:NAME` job; unique across every kind of remote.
    pub name: String,
    /// The tree's top: `https://…/` (or `http://` with `insecure_http`) serving
    /// directory listings, or a local directory.
    pub url: String,
    /// The local files repository filled.
    pub repository: String,
    /// Permit a plain-HTTP `url`.
    #[serde(default)]
    pub insecure_http: bool,
    /// User name for the upstream; empty: anonymous.
    #[serde(default)]
    pub username: String,
    /// File holding the upstream password.
    #[serde(default)]
    pub password_file: PathBuf,
    /// PEM bundle of CAs trusted for the upstream instead of the system roots.
    #[serde(default)]
    pub ca_bundle: PathBuf,
    /// Seconds between scheduled syncs; 0: none (unless `schedule`).
    #[serde(default)]
    pub interval_secs: u64,
    /// Cron expression (UTC) instead of `interval_secs`; empty: none.
    #[serde(default)]
    pub schedule: String,
    /// Up to this many seconds of random delay added to each scheduled sync.
    #[serde(default = "default_jitter")]
    pub jitter_secs: u64,
}

fn default_jitter() -> u64 {
    60
}

impl FilesRemoteConfig {
    /// Whether `url` is http(s) (else a local directory).
    pub fn is_http(&self) -> bool {
        self.url.starts_with("http://") || self.url.starts_with("https://")
    }
}

impl FilesConfig {
    /// Pushes every problem, with its TOML path, onto `problems`; `taken`
    /// holds the names of remotes of other kinds, `filled` the repositories
    /// other kinds of remote fill.
    pub(crate) fn validate(&self, taken: &[&str], filled: &[&str], problems: &mut Vec<String>) {
        if self.max_upload_bytes == 0 {
            problems.push("files.max_upload_bytes: must be at least 1".into());
        }
        let mut names: Vec<&str> = Vec::new();
        let mut repositories: Vec<&str> = Vec::new();
        for (i, r) in self.remotes.iter().enumerate() {
            let at = format!("files.remotes[{i}]");
            super::remote_name_problems(&at, &r.name, &names, taken, problems);
            names.push(&r.name);
            if r.url.starts_with("http://") {
                if !r.insecure_http {
                    problems.push(format!(
                        "{at}.url: {:?} is plain HTTP, which lets anyone on the path change \
                         what is mirrored; use https:// or set insecure_http = true",
                        r.url
                    ));
                }
            } else if r.url.starts_with("https://") {
            } else if r.url.contains("://") {
                problems.push(format!(
                    "{at}.url: {:?} is neither http(s):// nor a local directory",
                    r.url
                ));
            } else if r.url.is_empty() {
                problems.push(format!("{at}.url: required"));
            }
            if let Err(e) = wharf_core::RepoName::parse(&r.repository) {
                problems.push(format!("{at}.repository: {:?}: {e}", r.repository));
            }
            if repositories.contains(&r.repository.as_str())
                || filled.contains(&r.repository.as_str())
            {
                problems.push(format!(
                    "{at}.repository: {:?} is filled by another remote too; \
                     each would replace the other's snapshot",
                    r.repository
                ));
            }
            repositories.push(&r.repository);
            if r.username.is_empty() != r.password_file.as_os_str().is_empty() {
                problems.push(format!(
                    "{at}: username and password_file go together (both or neither)"
                ));
            }
            problems.extend(super::schedule_problem(
                &format!("{at}.schedule"),
                &r.schedule,
            ));
        }
    }
}

/// `[lookaside]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LookasideConfig {
    /// Largest source file `upload.cgi` accepts, in bytes.
    pub max_upload_bytes: u64,
}

/// Default of `lookaside.max_upload_bytes`: 20 GiB, above the largest
/// tarballs distributions keep (kernel and browser sources are a few GB).
pub const DEFAULT_LOOKASIDE_MAX_UPLOAD_BYTES: u64 = 20 * 1024 * 1024 * 1024;

impl Default for LookasideConfig {
    fn default() -> LookasideConfig {
        LookasideConfig {
            max_upload_bytes: DEFAULT_LOOKASIDE_MAX_UPLOAD_BYTES,
        }
    }
}

impl LookasideConfig {
    /// Appends every problem, with its TOML path.
    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        if self.max_upload_bytes == 0 {
            problems.push("lookaside.max_upload_bytes: must be at least 1".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    #[test]
    fn files_remotes_are_checked() {
        let cfg = Config::parse(
            r#"
[[rpm.remotes]]
name = "dup"
url = "/srv/rpm"
repository = "el9"

[files]
max_upload_bytes = 0

[[files.remotes]]
name = "dup"
url = "http://127.0.0.1:8000/tree/"
repository = "Bad//Name"

[[files.remotes]]
name = "b"
url = "ftp://x/"
repository = "el9"
username = "u"
schedule = "nope"

[[files.remotes]]
name = "c"
url = "/srv/tree"
repository = "os/f40"
"#,
            "x.toml",
        )
        .unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        for expected in [
            "files.max_upload_bytes",
            "files.remotes[0].name: \"dup\" is used twice",
            "files.remotes[0].url: \"http://127.0.0.1:8000/tree/\" is plain HTTP",
            "files.remotes[0].repository",
            "files.remotes[1].url",
            "files.remotes[1].repository: \"el9\" is filled by another remote",
            "files.remotes[1]: username and password_file",
            "files.remotes[1].schedule",
        ] {
            assert!(err.contains(expected), "{expected:?} not in {err}");
        }
        assert!(!err.contains("files.remotes[2]"), "{err}");
        let ok = Config::parse(
            "[[files.remotes]]\nname = \"f40\"\nurl = \"https://dl.example/f40/\"\nrepository = \"os/f40\"\n",
            "x.toml",
        )
        .unwrap();
        ok.validate().unwrap();
        assert_eq!(ok.files.remotes[0].jitter_secs, 60);
        assert!(ok.files.remotes[0].is_http());
    }
}
