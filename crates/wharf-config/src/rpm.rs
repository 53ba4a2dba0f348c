//! `[rpm]`: rpm-md upstreams mirrored into local rpm repositories
//! (`[[rpm.remotes]]`), with their validation.
//!
//! Kept apart from `lib.rs` and `mirror.rs`: an rpm remote names a URL with a
//! path (or a local directory) and one local repository, where an OCI remote
//! names a registry host and many repositories.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[rpm]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RpmConfig {
    /// Upstream rpm-md repositories.
    pub remotes: Vec<RpmRemoteConfig>,
    /// OpenPGP public key files; when set, hosted repositories take only
    /// packages whose header signature one of them made.
    pub upload_gpg_keys: Vec<PathBuf>,
    /// The largest package one upload may be, in bytes (unset: 2 GiB).
    pub max_upload_bytes: Option<u64>,
    /// Settings of hosted repositories.
    pub hosted: Vec<RpmHostedConfig>,
    /// Composed repositories: unions of others.
    pub composed: Vec<RpmComposedConfig>,
}

/// One `[[rpm.composed]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RpmComposedConfig {
    /// The composed repository (it takes no uploads).
    pub repository: String,
    /// Its members, hosted or mirrored; the first holding a package wins.
    pub members: Vec<String>,
    /// Only these arches (list `noarch` to keep it); empty: all.
    #[serde(default)]
    pub arches: Vec<String>,
    /// Package names left out (`debug*`: a trailing `*` matches any rest).
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// One `[[rpm.hosted]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RpmHostedConfig {
    /// The hosted repository.
    pub repository: String,
    /// Keep this many versions of each package name (per arch); every change
    /// drops older ones. 0: keep all.
    #[serde(default)]
    pub keep_versions: u32,
    /// Store every uploaded package as a copy signed with Wharf's OpenPGP
    /// key (its header signature replaced; header and payload unchanged), so
    /// dnf's `gpgcheck=1` with `/keys/wharf.asc` takes packages built unsigned.
    #[serde(default)]
    pub write_signed_rpms: bool,
}

/// What a mirror keeps when upstream drops a package.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RpmPolicy {
    /// Byte-identical to upstream.
    #[default]
    Exact,
    /// Packages upstream dropped stay downloadable.
    Additive,
}

/// One `[[rpm.remotes]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RpmRemoteConfig {
    /// Name used by `wharf sync REMOTE` and the `rpm-sync:NAME` job; unique across every kind of remote.
    pub name: String,
    /// The repository's root: `https://…/` (or `http://` with `insecure_http`), or a local
    /// directory. Leave empty when `metalink` or `mirrorlist` names the mirrors instead.
    #[serde(default)]
    pub url: String,
    /// A metalink (`https://mirrors.example/metalink?repo=…&arch=…`): its mirrors are tried by
    /// preference and one is used only if its repomd.xml matches a SHA-256/384/512 hash the
    /// metalink lists, as dnf does. Instead of `url`.
    #[serde(default)]
    pub metalink: String,
    /// A mirrorlist (one base URL per line): the first mirror serving a repomd.xml is used; it
    /// vouches for nothing, so pair it with `gpg_keys`. Instead of `url`.
    #[serde(default)]
    pub mirrorlist: String,
    /// The local rpm repository filled.
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
    /// Transfers in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Exact or additive.
    #[serde(default)]
    pub policy: RpmPolicy,
    /// Seconds between scheduled syncs; 0: none (unless `schedule`).
    #[serde(default)]
    pub interval_secs: u64,
    /// Cron expression (UTC) instead of `interval_secs`; empty: none.
    #[serde(default)]
    pub schedule: String,
    /// Up to this many seconds of random delay added to each scheduled sync.
    #[serde(default = "default_jitter")]
    pub jitter_secs: u64,
    /// OpenPGP public key files (`gpg --export [--armor]`); set: `repodata/repomd.xml.asc`
    /// and every package's header signature must verify against them.
    #[serde(default)]
    pub gpg_keys: Vec<PathBuf>,
    /// Arches kept (`x86_64`, `noarch`, `src`, …); empty: all.
    #[serde(default)]
    pub arches: Vec<String>,
    /// Package names kept: globs (`*`, `?`) or `re:REGEX` (whole name); empty: all.
    #[serde(default)]
    pub include: Vec<String>,
    /// Package names dropped (same patterns), even when `include` matches.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Versions kept per package name, newest first; 0: all.
    #[serde(default)]
    pub newest_versions: u32,
}

fn default_concurrency() -> u32 {
    8
}

fn default_jitter() -> u64 {
    60
}

impl RpmRemoteConfig {
    /// Whether the server syncs this remote on its own.
    pub fn scheduled(&self) -> bool {
        self.interval_secs > 0 || !self.schedule.is_empty()
    }

    /// Whether the remote keeps only some of upstream's packages.
    pub fn filtered(&self) -> bool {
        !self.arches.is_empty()
            || !self.include.is_empty()
            || !self.exclude.is_empty()
            || self.newest_versions > 0
    }

    /// Whether Wharf writes (and signs with its own key) this mirror's
    /// metadata instead of serving upstream's: a filter, or the additive policy.
    pub fn regenerates_metadata(&self) -> bool {
        self.filtered() || self.policy == RpmPolicy::Additive
    }

    /// Whether upstream is reached over http(s) (else a local directory).
    pub fn is_http(&self) -> bool {
        self.url.starts_with("http://")
            || self.url.starts_with("https://")
            || !self.metalink.is_empty()
            || !self.mirrorlist.is_empty()
    }
}

impl RpmConfig {
    /// Pushes every problem, with its TOML path, onto `problems`; `taken`
    /// holds the names of remotes of other kinds.
    pub fn validate(&self, taken: &[&str], problems: &mut Vec<String>) {
        super::key_files_problems("rpm.upload_gpg_keys", &self.upload_gpg_keys, problems);
        let mut names: Vec<&str> = Vec::new();
        for (i, r) in self.remotes.iter().enumerate() {
            let at = format!("rpm.remotes[{i}]");
            super::remote_name_problems(&at, &r.name, &names, taken, problems);
            names.push(&r.name);
            let lists = [("metalink", &r.metalink), ("mirrorlist", &r.mirrorlist)];
            let given: Vec<&str> = [("url", &r.url)]
                .into_iter()
                .chain(lists)
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, _)| k)
                .collect();
            if given.len() > 1 {
                problems.push(format!(
                    "{at}: {} are given; set exactly one of url, metalink and mirrorlist",
                    given.join(" and ")
                ));
            }
            for (key, value) in lists {
                if value.starts_with("http://") {
                    if !r.insecure_http {
                        problems.push(format!(
                            "{at}.{key}: {value:?} is plain HTTP; use https:// or set \
                             insecure_http = true"
                        ));
                    }
                } else if !value.is_empty() && !value.starts_with("https://") {
                    problems.push(format!("{at}.{key}: {value:?} is not an http(s) URL"));
                }
            }
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
            } else if given.is_empty() {
                problems.push(format!("{at}.url: required (or metalink, or mirrorlist)"));
            }
            if let Err(e) = wharf_core::RepoName::parse(&r.repository) {
                problems.push(format!("{at}.repository: {:?}: {e}", r.repository));
            }
            if r.username.is_empty() != r.password_file.as_os_str().is_empty() {
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
            super::key_files_problems(&format!("{at}.gpg_keys"), &r.gpg_keys, problems);
            for (key, patterns) in [("include", &r.include), ("exclude", &r.exclude)] {
                for (j, p) in patterns.iter().enumerate() {
                    if p.is_empty() {
                        problems.push(format!("{at}.{key}[{j}]: an empty pattern"));
                    } else if let Some(re) = p.strip_prefix("re:") {
                        if let Err(e) = regex::Regex::new(re) {
                            problems.push(format!(
                                "{at}.{key}[{j}]: {p:?} is not a regular expression: {e}"
                            ));
                        }
                    }
                }
            }
            for (j, a) in r.arches.iter().enumerate() {
                if a.is_empty() || !a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    problems.push(format!(
                        "{at}.arches[{j}]: {a:?} is not an arch name (x86_64, noarch, src, …)"
                    ));
                }
            }
        }
        if self.max_upload_bytes == Some(0) {
            problems.push("rpm.max_upload_bytes: must be more than 0".into());
        }
        for (i, h) in self.hosted.iter().enumerate() {
            let at = format!("rpm.hosted[{i}]");
            if let Err(e) = wharf_core::RepoName::parse(&h.repository) {
                problems.push(format!("{at}.repository: {:?}: {e}", h.repository));
            }
            if self.remotes.iter().any(|r| r.repository == h.repository) {
                problems.push(format!(
                    "{at}.repository: {:?} is filled by an rpm remote, not hosted",
                    h.repository
                ));
            }
            if self.hosted[..i]
                .iter()
                .any(|o| o.repository == h.repository)
            {
                problems.push(format!(
                    "{at}.repository: {:?} is listed twice",
                    h.repository
                ));
            }
        }
        for (i, c) in self.composed.iter().enumerate() {
            let at = format!("rpm.composed[{i}]");
            if let Err(e) = wharf_core::RepoName::parse(&c.repository) {
                problems.push(format!("{at}.repository: {:?}: {e}", c.repository));
            }
            if self.remotes.iter().any(|r| r.repository == c.repository) {
                problems.push(format!(
                    "{at}.repository: {:?} is filled by an rpm remote",
                    c.repository
                ));
            }
            if self.composed[..i]
                .iter()
                .any(|o| o.repository == c.repository)
            {
                problems.push(format!(
                    "{at}.repository: {:?} is listed twice",
                    c.repository
                ));
            }
            if c.members.is_empty() {
                problems.push(format!("{at}.members: name at least one repository"));
            }
            for m in &c.members {
                if let Err(e) = wharf_core::RepoName::parse(m) {
                    problems.push(format!("{at}.members: {m:?}: {e}"));
                }
                if self.composed.iter().any(|o| &o.repository == m) {
                    problems.push(format!(
                        "{at}.members: {m:?} is composed itself; name its members instead"
                    ));
                }
            }
        }
        let mut repositories: Vec<&str> = Vec::new();
        for (i, r) in self.remotes.iter().enumerate() {
            if repositories.contains(&r.repository.as_str()) {
                problems.push(format!(
                    "rpm.remotes[{i}].repository: {:?} is filled by another remote too; \
                     each would replace the other's snapshot",
                    r.repository
                ));
            }
            repositories.push(&r.repository);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    #[test]
    fn rpm_remotes_are_checked() {
        let cfg = Config::parse(
            r#"
[[mirror.remotes]]
name = "dup"
url = "https://quay.io"

[[rpm.remotes]]
name = "dup"
url = "http://127.0.0.1:8000/repo/"
repository = "Bad//Name"
concurrency = 0
policy = "additive"
include = ["re:("]
arches = ["x86 64"]

[[rpm.remotes]]
name = "b"
url = "ftp://x/"
repository = "el9/base"
username = "u"
schedule = "nope"

[[rpm.remotes]]
name = "c"
url = "/srv/repo"
repository = "el9/base"

[[rpm.hosted]]
repository = "el9/base"
keep_versions = 2

[[rpm.composed]]
repository = "el9/all"
members = ["el9/all", "el9/base"]

[[rpm.composed]]
repository = "el9/none"
members = []
"#,
            "x.toml",
        )
        .unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        for needle in [
            "rpm.remotes[0].name: \"dup\" is used twice",
            "rpm.remotes[0].url",
            "rpm.remotes[0].repository",
            "rpm.remotes[0].concurrency",
            "rpm.remotes[0].include[0]: \"re:(\" is not a regular expression",
            "rpm.remotes[0].arches[0]",
            "rpm.remotes[1].url",
            "rpm.remotes[1]: username and password_file",
            "rpm.remotes[1].schedule",
            "rpm.remotes[2].repository: \"el9/base\" is filled by another remote",
            "rpm.hosted[0].repository: \"el9/base\" is filled by an rpm remote",
            "rpm.composed[0].members: \"el9/all\" is composed itself",
            "rpm.composed[1].members: name at least one",
        ] {
            assert!(err.contains(needle), "{needle} missing from {err}");
        }
        let ok = Config::parse(
            "[[rpm.remotes]]\nname = \"base\"\nurl = \"https://example.org/el9/\"\nrepository = \"el9/base\"\n",
            "x.toml",
        )
        .unwrap();
        ok.validate().unwrap();
        let r = &ok.rpm.remotes[0];
        assert_eq!(r.policy, super::RpmPolicy::Exact);
        assert_eq!((r.concurrency, r.jitter_secs), (8, 60));
        assert!(!r.scheduled() && r.is_http());
        assert!(!r.regenerates_metadata());
    }
}
