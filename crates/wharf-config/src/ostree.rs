//! `[ostree]`: upstream OSTree repositories mirrored into Wharf's own
//! (`[[ostree.remotes]]`), with their validation. Kept in its own module so
//! the OSTree keys grow without touching the other formats' sections.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[ostree]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OstreeConfig {
    /// Upstream repositories to mirror.
    pub remotes: Vec<OstreeRemoteConfig>,
    /// History kept per ref, mirrored and hosted alike (`[[ostree.retention]]`).
    pub retention: Vec<OstreeRetentionConfig>,
    /// Static deltas Wharf generates for a repository (`[[ostree.deltas]]`).
    pub deltas: Vec<OstreeDeltasConfig>,
    /// Largest object one `PUT /api/v1/ostree/…/objects/…` takes, in bytes.
    pub max_object_bytes: u64,
    /// Objects pushed over `/api/v1/ostree` that no ref move took are
    /// dropped this many seconds after their upload (the hourly
    /// `ostree-sessions:expire` job); 0 keeps them until `wharf snapshot
    /// discard`.
    pub push_session_ttl_secs: u64,
}

/// Default of `ostree.push_session_ttl_secs`: a day, far longer than any push
/// takes between its first upload and its ref move.
pub const DEFAULT_PUSH_SESSION_TTL_SECS: u64 = 24 * 3600;

/// Default of `ostree.max_object_bytes`: 1 GiB. A pushed content object
/// streams through its check into the store; a metadata object is verified
/// in memory, so the cap bounds that request's memory.
pub const DEFAULT_OSTREE_MAX_OBJECT_BYTES: u64 = 1024 * 1024 * 1024;

impl Default for OstreeConfig {
    fn default() -> OstreeConfig {
        OstreeConfig {
            remotes: Vec::new(),
            retention: Vec::new(),
            deltas: Vec::new(),
            max_object_bytes: DEFAULT_OSTREE_MAX_OBJECT_BYTES,
            push_session_ttl_secs: DEFAULT_PUSH_SESSION_TTL_SECS,
        }
    }
}

/// One `[[ostree.retention]]` rule: for the refs it names in the
/// repositories it names, the commits kept behind each ref's own commit.
/// The first rule matching a (repository, ref) decides; a ref no rule
/// matches keeps its whole history.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OstreeRetentionConfig {
    /// Repositories (kind `ostree`) the rule applies to: a pattern, `os/**`.
    pub repositories: String,
    /// Refs the rule applies to: names or glob patterns (`*`, `?`); empty: every ref.
    #[serde(default)]
    pub refs: Vec<String>,
    /// Keep the newest N commits of each ref (its own commit counts); 0: none by count.
    #[serde(default)]
    pub keep_last: u64,
    /// Keep commits younger than this many days (by commit timestamp); 0: none by age.
    #[serde(default)]
    pub keep_days: u64,
}

/// One `[[ostree.deltas]]` table: the static deltas the `ostree-deltas:REPO`
/// job generates after each publish of the repository (a commit, a push, a
/// mirror of a subset of refs), to each ref's commit.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OstreeDeltasConfig {
    /// The repository (kind `ostree`).
    pub repository: String,
    /// Deltas from up to this many earlier commits of each ref (the commits
    /// it was at before, then its parents); 0: none.
    #[serde(default = "default_delta_depth")]
    pub depth: u32,
    /// Also a delta from nothing to each ref's commit, for first pulls.
    #[serde(default)]
    pub from_scratch: bool,
    /// A generated delta is kept only if it saves at least this share
    /// (percent) of the bytes fetched object by object.
    #[serde(default)]
    pub min_saving_percent: u8,
}

fn default_delta_depth() -> u32 {
    1
}

/// One `[[ostree.remotes]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OstreeRemoteConfig {
    /// Name used by `wharf sync REMOTE` and the `ostree-sync:REMOTE` job.
    pub name: String,
    /// `https://HOST[:PORT]/PATH` of the repository's top (`http://` with
    /// `insecure_http`), or a local archive repository's directory.
    pub url: String,
    /// The local repository (kind `ostree`) it fills.
    pub repository: String,
    /// Refs to take: names or glob patterns (`*`, `?`); empty: every ref.
    #[serde(default)]
    pub refs: Vec<String>,
    /// Parent commits taken per ref: 0 the ref's commit only, -1 all.
    #[serde(default)]
    pub depth: i64,
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
    /// Objects fetched at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Seconds between scheduled syncs; 0: none (unless `schedule`).
    #[serde(default)]
    pub interval_secs: u64,
    /// A cron expression (UTC) instead of `interval_secs`; empty: none.
    #[serde(default)]
    pub schedule: String,
    /// Up to this many seconds of random delay added to each scheduled sync.
    #[serde(default = "default_jitter")]
    pub jitter_secs: u64,
    /// OpenPGP public key files (`gpg --export [--armor]`) trusted for commits and the summary.
    #[serde(default)]
    pub gpg_keys: Vec<PathBuf>,
    /// ed25519 public key files (base64, one key a line) trusted for commits and the summary.
    #[serde(default)]
    pub ed25519_keys: Vec<PathBuf>,
    /// For a mirror of a subset of refs (whose summary Wharf writes): after
    /// a publish, the `ostree-deltas` job generates a static delta to each
    /// ref's commit from its previous one (`[[ostree.deltas]]` for the
    /// repository says more). A mirror of every ref copies upstream's deltas instead.
    #[serde(default)]
    pub generate_deltas: bool,
    /// With `generate_deltas`, also a delta from nothing to each new commit.
    #[serde(default)]
    pub delta_from_scratch: bool,
    /// A generated delta is kept only if it saves at least this share
    /// (percent) of the bytes fetched object by object.
    #[serde(default)]
    pub delta_min_saving_percent: u8,
}

fn default_concurrency() -> u32 {
    16
}

fn default_jitter() -> u64 {
    60
}

impl OstreeRemoteConfig {
    /// Whether commits and the summary must carry a trusted signature.
    pub fn verifies_signatures(&self) -> bool {
        !self.gpg_keys.is_empty() || !self.ed25519_keys.is_empty()
    }

    /// Whether `url` names a local directory rather than an HTTP(S) upstream.
    pub fn is_local(&self) -> bool {
        !self.url.contains("://")
    }
}

impl OstreeConfig {
    /// Pushes every problem, with its TOML path, onto `problems`; `taken`
    /// holds the remote names other sections already use.
    pub fn validate(&self, taken: &[&str], problems: &mut Vec<String>) {
        if self.max_object_bytes == 0 {
            problems.push("ostree.max_object_bytes: must be at least 1".into());
        }
        let mut names: Vec<&str> = Vec::new();
        for (i, r) in self.remotes.iter().enumerate() {
            let at = format!("ostree.remotes[{i}]");
            super::remote_name_problems(&at, &r.name, &names, taken, problems);
            names.push(&r.name);
            if r.url.is_empty() {
                problems.push(format!(
                    "{at}.url: must be an http(s):// URL or a local path"
                ));
            } else if let Some(rest) = r.url.strip_prefix("http://") {
                if !r.insecure_http {
                    problems.push(format!(
                        "{at}.url: {:?} is plain HTTP, which sends credentials and content \
                         unprotected; use https:// or set insecure_http = true",
                        r.url
                    ));
                }
                if rest.is_empty() {
                    problems.push(format!("{at}.url: {:?} names no host", r.url));
                }
            } else if r.url.contains("://") && !r.url.starts_with("https://") {
                problems.push(format!(
                    "{at}.url: {:?} is neither http(s):// nor a local path",
                    r.url
                ));
            }
            if let Err(e) = wharf_core::RepoName::parse(&r.repository) {
                problems.push(format!("{at}.repository: {:?}: {e}", r.repository));
            }
            if r.username.is_empty() != r.password_file.as_os_str().is_empty() {
                problems.push(format!(
                    "{at}: username and password_file go together (both or neither)"
                ));
            }
            if r.depth < -1 {
                problems.push(format!("{at}.depth: must be -1 (all), 0, or more"));
            }
            if r.delta_min_saving_percent > 99 {
                problems.push(format!(
                    "{at}.delta_min_saving_percent: must be between 0 and 99"
                ));
            }
            if r.delta_from_scratch && !r.generate_deltas {
                problems.push(format!(
                    "{at}.delta_from_scratch: needs generate_deltas = true"
                ));
            }
            if r.concurrency == 0 || r.concurrency > 256 {
                problems.push(format!("{at}.concurrency: must be between 1 and 256"));
            }
            for (j, pattern) in r.refs.iter().enumerate() {
                if pattern.is_empty() || pattern.contains("..") || pattern.starts_with('/') {
                    problems.push(format!(
                        "{at}.refs[{j}]: {pattern:?} is not a ref name or pattern"
                    ));
                }
            }
            problems.extend(super::schedule_problem(
                &format!("{at}.schedule"),
                &r.schedule,
            ));
            super::key_files_problems(&format!("{at}.gpg_keys"), &r.gpg_keys, problems);
            super::key_files_problems(&format!("{at}.ed25519_keys"), &r.ed25519_keys, problems);
        }
        for (i, d) in self.deltas.iter().enumerate() {
            let at = format!("ostree.deltas[{i}]");
            if let Err(e) = wharf_core::RepoName::parse(&d.repository) {
                problems.push(format!("{at}.repository: {:?}: {e}", d.repository));
            }
            if self.deltas[..i]
                .iter()
                .any(|o| o.repository == d.repository)
            {
                problems.push(format!(
                    "{at}.repository: {:?} has an earlier [[ostree.deltas]]",
                    d.repository
                ));
            }
            if d.depth > 16 {
                problems.push(format!("{at}.depth: at most 16"));
            }
            if d.depth == 0 && !d.from_scratch {
                problems.push(format!(
                    "{at}: depth = 0 without from_scratch generates nothing; remove the table"
                ));
            }
            if d.min_saving_percent > 99 {
                problems.push(format!("{at}.min_saving_percent: must be between 0 and 99"));
            }
        }
        for (i, r) in self.retention.iter().enumerate() {
            let at = format!("ostree.retention[{i}]");
            if let Err(e) = wharf_core::RepoPattern::parse(&r.repositories) {
                problems.push(format!("{at}.repositories: {:?}: {e}", r.repositories));
            }
            for (j, pattern) in r.refs.iter().enumerate() {
                if pattern.is_empty() || pattern.contains("..") || pattern.starts_with('/') {
                    problems.push(format!(
                        "{at}.refs[{j}]: {pattern:?} is not a ref name or pattern"
                    ));
                }
            }
            if r.keep_last == 0 && r.keep_days == 0 {
                problems.push(format!(
                    "{at}: set keep_last, keep_days or both (a rule keeping neither would keep only each ref's own commit; say keep_last = 1)"
                ));
            }
            if r.keep_days > 36_500 {
                problems.push(format!("{at}.keep_days: at most 36500"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    #[test]
    fn remotes_are_validated() {
        let cfg = Config::parse(
            "[[mirror.remotes]]\nname = \"up\"\nurl = \"https://r.example\"\n\
             [[ostree.remotes]]\nname = \"up\"\nurl = \"http://o.example/repo\"\nrepository = \"Bad\"\n\
             depth = -2\nconcurrency = 0\nschedule = \"nope\"\nrefs = [\"../x\"]\nusername = \"u\"\n\
             [[ostree.remotes]]\nname = \"fine\"\nurl = \"/srv/ostree/repo\"\nrepository = \"os/fedora\"\n",
            "x.toml",
        )
        .unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        for expected in [
            "ostree.remotes[0].name: \"up\" is used twice",
            "ostree.remotes[0].url: \"http://o.example/repo\" is plain HTTP",
            "ostree.remotes[0].repository",
            "ostree.remotes[0].depth",
            "ostree.remotes[0].concurrency",
            "ostree.remotes[0].schedule",
            "ostree.remotes[0].refs[0]",
            "ostree.remotes[0]: username and password_file",
        ] {
            assert!(err.contains(expected), "{expected:?} not in {err}");
        }
        assert!(!err.contains("ostree.remotes[1]"), "{err}");
        let ok = Config::parse(
            "[[ostree.remotes]]\nname = \"fedora\"\nurl = \"https://o.example/repo\"\nrepository = \"os/fedora\"\n",
            "x.toml",
        )
        .unwrap();
        ok.validate().unwrap();
        assert_eq!(ok.ostree.remotes[0].concurrency, 16);
        assert_eq!(ok.ostree.remotes[0].depth, 0);
        assert!(!ok.ostree.remotes[0].is_local());
    }

    #[test]
    fn delta_tables_are_validated() {
        let cfg = Config::parse(
            "[[ostree.deltas]]\nrepository = \"os/x\"\ndepth = 17\nmin_saving_percent = 100\n\
             [[ostree.deltas]]\nrepository = \"os/x\"\ndepth = 0\n\
             [[ostree.deltas]]\nrepository = \"Bad\"\n",
            "x.toml",
        )
        .unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        for expected in [
            "ostree.deltas[0].depth: at most 16",
            "ostree.deltas[0].min_saving_percent",
            "ostree.deltas[1].repository: \"os/x\" has an earlier",
            "ostree.deltas[1]: depth = 0 without from_scratch",
            "ostree.deltas[2].repository",
        ] {
            assert!(err.contains(expected), "{expected:?} not in {err}");
        }
        let ok = Config::parse("[[ostree.deltas]]\nrepository = \"os/x\"\n", "x.toml").unwrap();
        ok.validate().unwrap();
        assert_eq!(ok.ostree.deltas[0].depth, 1);
        assert!(!ok.ostree.deltas[0].from_scratch);
    }

    #[test]
    fn retention_rules_are_validated() {
        let cfg = Config::parse(
            "[[ostree.retention]]\nrepositories = \"os//x\"\nrefs = [\"../x\"]\n\
             [[ostree.retention]]\nrepositories = \"os/**\"\n\
             [[ostree.retention]]\nrepositories = \"os/**\"\nrefs = [\"main\"]\nkeep_last = 2\n",
            "x.toml",
        )
        .unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        for expected in [
            "ostree.retention[0].repositories",
            "ostree.retention[0].refs[0]",
            "ostree.retention[1]: set keep_last, keep_days or both",
        ] {
            assert!(err.contains(expected), "{expected:?} not in {err}");
        }
        assert!(!err.contains("ostree.retention[2]"), "{err}");
        assert_eq!(cfg.ostree.retention[2].keep_days, 0);
    }
}
