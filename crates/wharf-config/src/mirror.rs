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
    /// Tags copied at once by a sync run, and blob transfers at once within each.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Local name prefix; `None`: the upstream's host (`host_port` with a port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Seconds between the server's scheduled syncs of this remote; 0: none (unless `schedule`).
    #[serde(default)]
    pub interval_secs: u64,
    /// A cron expression (UTC) for scheduled syncs instead of `interval_secs`; empty: none.
    #[serde(default)]
    pub schedule: String,
    /// Up to this many seconds of random delay added to each scheduled sync.
    #[serde(default = "default_sync_jitter")]
    pub jitter_secs: u64,
    /// Requests per second sent to the upstream at most; 0: no budget.
    #[serde(default)]
    pub requests_per_second: f64,
    /// `[mirror.remotes.pull_through]`: fetch on demand; `None`: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_through: Option<PullThroughConfig>,
}

/// `[mirror.remotes.pull_through]`: the pull-through cache of one remote.
/// Present means on; `repositories` is the allow-list, so the operator, not
/// whoever pulls, decides what enters the store.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PullThroughConfig {
    /// Upstream repository patterns that may be fetched (`*` within a
    /// component, `**` across); nothing else ever is.
    pub repositories: Vec<String>,
    /// Seconds a cached tag is served before it is revalidated with a HEAD.
    #[serde(default = "default_tag_ttl_secs")]
    pub tag_ttl_secs: u64,
    /// Seconds to wait for the upstream's answer before serving what is
    /// cached (serve-stale) or failing a never-cached pull.
    #[serde(default = "default_upstream_timeout_secs")]
    pub upstream_timeout_secs: u64,
}

fn default_tag_ttl_secs() -> u64 {
    300
}

fn default_upstream_timeout_secs() -> u64 {
    10
}

fn default_concurrency() -> u32 {
    4
}

fn default_sync_jitter() -> u64 {
    60
}

impl RemoteConfig {
    /// Whether the server syncs this remote on its own.
    pub fn scheduled(&self) -> bool {
        self.interval_secs > 0 || !self.schedule.is_empty()
    }
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
    /// cosign public keys (PEM files); when set, a tag is copied only if one of
    /// them verifies a cosign signature of its digest.
    #[serde(default)]
    pub verify_keys: Vec<PathBuf>,
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
            super::remote_name_problems(&at, &r.name, &names, &[], problems);
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
            problems.extend(super::schedule_problem(
                &format!("{at}.schedule"),
                &r.schedule,
            ));
            if !r.requests_per_second.is_finite() || r.requests_per_second < 0.0 {
                problems.push(format!(
                    "{at}.requests_per_second: must be a number of at least 0 (0: no budget)"
                ));
            }
            if let Some(prefix) = &r.prefix {
                if prefix.starts_with('/') || prefix.ends_with('/') || prefix.contains("//") {
                    problems.push(format!(
                        "{at}.prefix: {prefix:?} must not start or end with '/' or hold an empty component"
                    ));
                }
            }
            if let Some(pt) = &r.pull_through {
                validate_pull_through(pt, &format!("{at}.pull_through"), problems);
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

fn validate_pull_through(pt: &PullThroughConfig, at: &str, problems: &mut Vec<String>) {
    if pt.repositories.is_empty() {
        problems.push(format!(
            "{at}.repositories: name at least one upstream repository pattern (e.g. \"coreos/*\"); \
             nothing outside the list is ever fetched"
        ));
    }
    for pattern in &pt.repositories {
        let bad_component = pattern.split('/').any(|c| {
            c.is_empty()
                || (c != "**" && c.contains("**"))
                || !c
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-*".contains(ch))
        });
        if bad_component {
            problems.push(format!(
                "{at}.repositories: {pattern:?} is not a repository pattern (lower-case name \
                 components, `*` within one, `**` as a whole component)"
            ));
        }
    }
    if pt.upstream_timeout_secs == 0 || pt.upstream_timeout_secs > 300 {
        problems.push(format!(
            "{at}.upstream_timeout_secs: must be between 1 and 300"
        ));
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
schedule = "0 25 * * *"
requests_per_second = -1

[[mirror.remotes]]
name = "pt"
url = "https://quay.io"
pull_through = { repositories = ["Coreos/*", "a//b"], upstream_timeout_secs = 0 }

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
            "mirror.remotes[0].schedule: \"0 25 * * *\" is not a cron expression",
            "mirror.remotes[0].requests_per_second",
            "mirror.sync[0].remote",
            "mirror.sync[0].repositories",
            "mirror.sync[0].include",
            "mirror.remotes[1].pull_through.repositories",
            "mirror.remotes[1].pull_through.upstream_timeout_secs",
            "mirror.sync[0].semver",
            "mirror.sync[0].platforms[1]",
        ] {
            assert!(err.contains(needle), "{needle} missing from {err}");
        }
        let ok = Config::parse(
            "[[mirror.remotes]]\nname = \"quay\"\nurl = \"https://quay.io\"\n\
             interval_secs = 3600\nrequests_per_second = 5\n\
             [[mirror.sync]]\nremote = \"quay\"\nrepositories = [\"coreos/etcd\"]\ninclude = \"^v3\"\n",
            "x.toml",
        )
        .unwrap();
        ok.validate().unwrap();
        assert_eq!(ok.mirror.remotes[0].concurrency, 4);
        assert_eq!(ok.mirror.remotes[0].requests_per_second, 5.0);
        assert_eq!(ok.mirror.remotes[0].jitter_secs, 60);
        assert!(ok.mirror.remotes[0].scheduled());
        assert_eq!(ok.mirror.remotes[0].pull_through, None);
        let pt = Config::parse(
            "[[mirror.remotes]]\nname = \"quay\"\nurl = \"https://quay.io\"\n\
             [mirror.remotes.pull_through]\nrepositories = [\"coreos/*\", \"library/**\"]\n",
            "x.toml",
        )
        .unwrap();
        pt.validate().unwrap();
        let pt = pt.mirror.remotes[0].pull_through.as_ref().unwrap();
        assert_eq!((pt.tag_ttl_secs, pt.upstream_timeout_secs), (300, 10));
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
