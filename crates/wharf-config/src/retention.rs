//! `[retention]` (which OCI tags and untagged manifests are deleted, and when)
//! and `[[quota]]` (byte limits per namespace of OCI repositories).
//!
//! Retention and quotas are one section pair because they answer one
//! operator question, how much a namespace may keep; both name repositories
//! with the one pattern grammar (`wharf_core::glob`).

use serde::{Deserialize, Serialize};
use wharf_core::RepoPattern;

/// `[retention]`: when the `retention:oci` job runs, and its rules.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Seconds between scheduled runs; 0 (the default) disables them.
    pub interval_secs: u64,
    /// A cron expression (UTC) instead of `interval_secs`; empty: none.
    pub schedule: String,
    /// Up to this many seconds of random delay added to each scheduled run.
    pub jitter_secs: u64,
    /// The protect pattern: tags matching this regex are never deleted, by
    /// any rule (a rule's own `keep_tags` protects within that rule); a tag
    /// kept keeps its manifest and what that reaches. Empty: none.
    pub protect: String,
    /// The rules, as `[[retention.rules]]`.
    pub rules: Vec<RetentionRuleConfig>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            interval_secs: 0,
            schedule: String::new(),
            jitter_secs: 300,
            protect: String::new(),
            rules: Vec::new(),
        }
    }
}

/// `[[retention.rules]]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionRuleConfig {
    /// Repositories the rule applies to (a pattern, `team/**`).
    pub repositories: String,
    /// Keep this many newest tags (by push time) among those matching
    /// `keep_newest_matching`; 0 with no other `keep_*` key: every tag is kept.
    pub keep_newest: u64,
    /// Which tags `keep_newest` counts (a regex, `^v\d`): "the N newest
    /// `v*` tags". Tags not matching it are kept only by the other `keep_*`
    /// keys. Empty: every tag counts.
    pub keep_newest_matching: String,
    /// Tags matching this regex are always kept (the rule's protect
    /// pattern); empty: none.
    pub keep_tags: String,
    /// Tags pushed within this many days are kept; 0: none by age.
    pub keep_pushed_within_days: u64,
    /// Tags whose manifest was pulled within this many days are kept; 0: none by use.
    pub keep_pulled_within_days: u64,
    /// Delete manifests that no tag, index or kept subject holds, once older
    /// than the GC grace period.
    pub delete_untagged: bool,
}

impl Default for RetentionRuleConfig {
    fn default() -> Self {
        RetentionRuleConfig {
            repositories: String::new(),
            keep_newest: 0,
            keep_newest_matching: String::new(),
            keep_tags: String::new(),
            keep_pushed_within_days: 0,
            keep_pulled_within_days: 0,
            delete_untagged: true,
        }
    }
}

impl RetentionRuleConfig {
    /// Whether the rule deletes tags at all (some `keep_*` key is set).
    pub fn selects_tags(&self) -> bool {
        self.keep_newest > 0
            || !self.keep_tags.is_empty()
            || self.keep_pushed_within_days > 0
            || self.keep_pulled_within_days > 0
    }
}

/// `[[quota]]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaConfig {
    /// The namespace: a repository pattern (`team/**`).
    pub namespace: String,
    /// Most bytes its repositories may hold, each blob counted once.
    pub bytes: u64,
}

impl RetentionConfig {
    /// Reports every problem with its TOML path.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if let Some(p) = crate::schedule_problem("retention.schedule", &self.schedule) {
            problems.push(p);
        }
        regex_problem("retention.protect", &self.protect, problems);
        for (i, rule) in self.rules.iter().enumerate() {
            let at = format!("retention.rules[{i}]");
            if rule.repositories.is_empty() {
                problems.push(format!(
                    "{at}.repositories: required (a pattern such as \"team/**\")"
                ));
            } else if let Err(e) = RepoPattern::parse(&rule.repositories) {
                problems.push(format!("{at}.repositories: {e}"));
            }
            regex_problem(&format!("{at}.keep_tags"), &rule.keep_tags, problems);
            regex_problem(
                &format!("{at}.keep_newest_matching"),
                &rule.keep_newest_matching,
                problems,
            );
            if !rule.keep_newest_matching.is_empty() && rule.keep_newest == 0 {
                problems.push(format!(
                    "{at}.keep_newest_matching: needs keep_newest (how many of those tags to keep)"
                ));
            }
            if rule.keep_pushed_within_days > 36_500 {
                problems.push(format!("{at}.keep_pushed_within_days: at most 36500"));
            }
            if rule.keep_pulled_within_days > 36_500 {
                problems.push(format!("{at}.keep_pulled_within_days: at most 36500"));
            }
        }
    }
}

fn regex_problem(at: &str, pattern: &str, problems: &mut Vec<String>) {
    if !pattern.is_empty() {
        if let Err(e) = regex::Regex::new(pattern) {
            problems.push(format!("{at}: {pattern:?} is not a regex: {e}"));
        }
    }
}

/// Reports every problem of `[[quota]]` with its TOML path.
pub(crate) fn validate_quotas(quotas: &[QuotaConfig], problems: &mut Vec<String>) {
    for (i, quota) in quotas.iter().enumerate() {
        let at = format!("quota[{i}]");
        if quota.namespace.is_empty() {
            problems.push(format!(
                "{at}.namespace: required (a pattern such as \"team/**\")"
            ));
        } else if let Err(e) = RepoPattern::parse(&quota.namespace) {
            problems.push(format!("{at}.namespace: {e}"));
        }
        if quota.bytes == 0 {
            problems.push(format!("{at}.bytes: required, more than 0"));
        } else if quota.bytes > i64::MAX as u64 {
            problems.push(format!("{at}.bytes: at most {}", i64::MAX));
        }
        if quotas[..i].iter().any(|q| q.namespace == quota.namespace) {
            problems.push(format!(
                "{at}.namespace: {:?} already has a quota",
                quota.namespace
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    #[test]
    fn rules_and_quotas_parse_and_bad_ones_are_named() {
        let config: Config = toml::from_str(
            r#"
[retention]
interval_secs = 3600
[[retention.rules]]
repositories = "team/**"
keep_newest = 3
keep_newest_matching = '^v'
keep_tags = '^v\d+$'
keep_pushed_within_days = 7
[[quota]]
namespace = "team/**"
bytes = 1000
"#,
        )
        .unwrap();
        assert!(config.validate().is_ok());
        assert_eq!(config.retention.rules[0].keep_newest, 3);
        assert!(config.retention.rules[0].delete_untagged);
        assert_eq!(config.quota[0].bytes, 1000);

        let bad: Config = toml::from_str(
            r#"
[retention]
schedule = "61 * * * *"
protect = "["
[[retention.rules]]
repositories = "Team/**"
keep_tags = "("
keep_newest_matching = "^v"
[[quota]]
namespace = "team//x"
[[quota]]
namespace = "team//x"
bytes = 5
"#,
        )
        .unwrap();
        let err = bad.validate().unwrap_err().to_string();
        for needle in [
            "retention.schedule",
            "retention.rules[0].repositories",
            "retention.rules[0].keep_tags",
            "retention.protect",
            "retention.rules[0].keep_newest_matching: needs keep_newest",
            "quota[0].namespace",
            "quota[0].bytes",
            "quota[1].namespace: \"team//x\" already",
        ] {
            assert!(err.contains(needle), "{needle} missing from {err}");
        }
    }
}
