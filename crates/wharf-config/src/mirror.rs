//! `[mirror]`: upstream registries (`[[mirror.remotes]]`) and what to copy from
//! them (`[[mirror.sync]]`), with their validation.
//!
//! Kept apart from `lib.rs` because mirroring grows its own keys (schedules,
//! rate budgets, pull-through) and its checks are self-contained.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[mirror]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MirrorConfig {
    /// Upstream registries.
    pub remotes: Vec<RemoteConfig>,
    /// What to copy from them.
    pub sync: Vec<SyncConfig>,
    /// skopeo sync YAML files lowered into remotes and sync definitions at load.
    pub skopeo_files: Vec<PathBuf>,
}

/// One `[[mirror.remotes]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// Name used by `[[mirror.sync]]` and `wharf sync REMOTE`.
    pub name: String,
    /// `https://host[:port]` (or `http://` with `insecure_http`).
    pub url: String,
    /// Permit a plain-HTTP `url`.
    #[serde(default)]
    pub insecure_http: bool,
    /// User name for the upstream; empty: anonymous.
    #[serde(default)]
    pub username: String,
    /// File holding the upstream password (or token).
    #[serde(default)]
    pub password_file: PathBuf,
    /// A password written inline, which only a skopeo sync file (`credentials`)
    /// can give; the TOML takes `password_file` alone.
    #[serde(skip)]
    pub password: Option<String>,
    /// PEM bundle of CAs trusted for the upstream instead of the system roots.
    #[serde(default)]
    pub ca_bundle: PathBuf,
    /// Blob transfers at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Local name prefix; `None`: the upstream's host (`host_port` with a port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

fn default_concurrency() -> u32 {
    4
}

/// One `[[mirror.sync]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// The `[[mirror.remotes]]` name.
    pub remote: String,
    /// Upstream repository names.
    pub repositories: Vec<String>,
    /// Explicit tags; empty: every tag (filtered by `include`/`exclude`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Regex a listed tag must match (unanchored, as in skopeo sync).
    #[serde(default)]
    pub include: String,
    /// Regex a listed tag must not match.
    #[serde(default)]
    pub exclude: String,
    /// Semver range a listed tag, read as a version, must fall in; empty: any tag.
    #[serde(default)]
    pub semver: String,
    /// Platforms (`OS/ARCH[/VARIANT]`) of an index to copy; empty: all.
    #[serde(default)]
    pub platforms: Vec<String>,
    /// Copy cosign signatures, attestations, SBOMs and OCI referrers too.
    #[serde(default = "default_signatures")]
    pub signatures: bool,
}

fn default_signatures() -> bool {
    true
}

impl MirrorConfig {
    /// Pushes every problem, with its TOML path, onto `problems`.
    pub fn validate(&self, problems: &mut Vec<String>) {
        let mut names = Vec::new();
        for (i, r) in self.remotes.iter().enumerate() {
            let at = format!("mirror.remotes[{i}]");
            if r.name.is_empty()
                || !r
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                problems.push(format!(
                    "{at}.name: {:?} must be non-empty letters, digits, '-', '_' or '.'",
                    r.name
                ));
            }
            if names.contains(&r.name.as_str()) {
                problems.push(format!("{at}.name: {:?} is used twice", r.name));
            }
            names.push(&r.name);
            match remote_authority(&r.url) {
                Some((scheme, _)) => {
                    if scheme == "http" && !r.insecure_http {
                        problems.push(format!(
                            "{at}.url: {:?} is plain HTTP, which sends credentials and images \
                             unprotected; use https:// or set insecure_http = true",
                            r.url
                        ));
                    }
                }
                None => problems.push(format!(
                    "{at}.url: {:?} is not https://HOST[:PORT] (or http:// with insecure_http)",
                    r.url
                )),
            }
            let has_password = !r.password_file.as_os_str().is_empty() || r.password.is_some();
            if r.username.is_empty() == has_password {
                problems.push(format!(
                    "{at}: username and password_file go together (both or neither)"
                ));
            }
            if r.concurrency == 0 || r.concurrency > 64 {
                problems.push(format!("{at}.concurrency: must be between 1 and 64"));
            }
            if let Some(prefix) = &r.prefix {
                if prefix.starts_with('/') || prefix.ends_with('/') || prefix.contains("//") {
                    problems.push(format!(
                        "{at}.prefix: {prefix:?} must not start or end with '/' or hold an empty component"
                    ));
                }
            }
        }
        for (i, s) in self.sync.iter().enumerate() {
            let at = format!("mirror.sync[{i}]");
            if !names.contains(&s.remote.as_str()) {
                problems.push(format!(
                    "{at}.remote: {:?} is not a [[mirror.remotes]] name",
                    s.remote
                ));
            }
            if s.repositories.is_empty() {
                problems.push(format!("{at}.repositories: name at least one"));
            }
            let filtered = !s.include.is_empty() || !s.exclude.is_empty() || !s.semver.is_empty();
            if !s.tags.is_empty() && filtered {
                problems.push(format!(
                    "{at}: tags (an explicit list) and include/exclude/semver (filters of the upstream's list) exclude each other"
                ));
            }
            if !s.semver.is_empty() {
                if let Err(e) = wharf_core::SemverRange::parse(&s.semver) {
                    problems.push(format!(
                        "{at}.semver: {e} (write comparators such as \">=1.2, <2\", alternatives joined by ||)"
                    ));
                }
            }
            for (j, p) in s.platforms.iter().enumerate() {
                if let Err(e) = wharf_core::Platform::parse(p) {
                    problems.push(format!("{at}.platforms[{j}]: {e}"));
                }
            }
            for (key, pattern) in [("include", &s.include), ("exclude", &s.exclude)] {
                if let Err(e) = regex::Regex::new(pattern) {
                    problems.push(format!("{at}.{key}: {pattern:?} is not a regex: {e}"));
                }
            }
        }
    }
}

/// The scheme (`http` or `https`) and `host[:port]` of a remote URL, which has
/// no path, query or credentials.
pub fn remote_authority(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    if !matches!(scheme, "http" | "https") {
        return None;
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let valid = !authority.is_empty()
        && authority
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    valid.then_some((scheme, authority))
}

#[cfg(test)]
mod tests {
    use crate::Config;

    #[test]
    fn remotes_and_sync_are_checked() {
        let cfg = Config::parse(
            r#"
[[mirror.remotes]]
name = "up"
url = "http://127.0.0.1:5000"
concurrency = 0
username = "u"

[[mirror.sync]]
remote = "nope"
repositories = []
include = "("
semver = ">= nope"
platforms = ["linux/amd64", "linux"]
"#,
            "x.toml",
        )
        .unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        for needle in [
            "mirror.remotes[0].url",
            "mirror.remotes[0].concurrency",
            "mirror.remotes[0]: username and password_file",
            "mirror.sync[0].remote",
            "mirror.sync[0].repositories",
            "mirror.sync[0].include",
            "mirror.sync[0].semver",
            "mirror.sync[0].platforms[1]",
        ] {
            assert!(err.contains(needle), "{needle} missing from {err}");
        }
        let ok = Config::parse(
            "[[mirror.remotes]]\nname = \"quay\"\nurl = \"https://quay.io\"\n\
             [[mirror.sync]]\nremote = \"quay\"\nrepositories = [\"coreos/etcd\"]\ninclude = \"^v3\"\n",
            "x.toml",
        )
        .unwrap();
        ok.validate().unwrap();
        assert_eq!(ok.mirror.remotes[0].concurrency, 4);
        assert!(ok.mirror.sync[0].signatures);
        let ranged = Config::parse(
            "[[mirror.remotes]]\nname = \"quay\"\nurl = \"https://quay.io\"\n\
             [[mirror.sync]]\nremote = \"quay\"\nrepositories = [\"coreos/etcd\"]\n\
             semver = \">=3.1, <4\"\ninclude = \"^v\"\nplatforms = [\"linux/arm64/v8\"]\n\
             signatures = false\n",
            "x.toml",
        )
        .unwrap();
        ranged.validate().unwrap();
        let both = Config::parse(
            "[[mirror.remotes]]\nname = \"quay\"\nurl = \"https://quay.io\"\n\
             [[mirror.sync]]\nremote = \"quay\"\nrepositories = [\"x\"]\ntags = [\"a\"]\nsemver = \"1\"\n",
            "x.toml",
        )
        .unwrap();
        let err = both.validate().unwrap_err().to_string();
        assert!(err.contains("include/exclude/semver"), "{err}");
    }
}
