//! Which tags of an upstream repository a sync copies: an explicit list, or
//! the upstream's list filtered by `include` / `exclude` regexes (unanchored,
//! as in skopeo sync's `images-by-tag-regex` and zot's `regex`) and a semver
//! range (skopeo sync's `images-by-semver`); and which platforms of an index.

use regex::Regex;
pub use wharf_core::{lenient_version, Platform, SelectionSyntaxError, SemverRange};

/// The tags a sync definition selects.
#[derive(Debug, Clone)]
pub enum TagSelection {
    /// Exactly these tags (an absent one is a failure).
    Explicit(Vec<String>),
    /// Every upstream tag that matches `include` (if any) and not `exclude` (if any).
    Filtered {
        /// Kept when it matches.
        include: Option<Regex>,
        /// Dropped when it matches.
        exclude: Option<Regex>,
        /// Kept when the tag reads as a version inside the range.
        semver: Option<SemverRange>,
    },
}

/// Why a selection could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SelectionError {
    /// `include` or `exclude` is not a regex.
    #[error("{key}: {source}")]
    Regex {
        /// Which key.
        key: &'static str,
        /// The regex crate's reason.
        source: regex::Error,
    },
    /// `semver` is not a range.
    #[error("semver: {0}")]
    Semver(#[from] SelectionSyntaxError),
}

impl TagSelection {
    /// Builds a selection from configuration values: `tags` non-empty is an
    /// explicit list; otherwise empty patterns (and an empty range) mean no filter.
    pub fn new(
        tags: &[String],
        include: &str,
        exclude: &str,
        semver: &str,
    ) -> Result<TagSelection, SelectionError> {
        if !tags.is_empty() {
            return Ok(TagSelection::Explicit(tags.to_vec()));
        }
        let compile = |key: &'static str, p: &str| {
            (!p.is_empty())
                .then(|| Regex::new(p))
                .transpose()
                .map_err(|source| SelectionError::Regex { key, source })
        };
        Ok(TagSelection::Filtered {
            include: compile("include", include)?,
            exclude: compile("exclude", exclude)?,
            semver: (!semver.trim().is_empty())
                .then(|| SemverRange::parse(semver))
                .transpose()?,
        })
    }

    /// Whether the upstream's tag list is needed.
    pub fn needs_listing(&self) -> bool {
        matches!(self, TagSelection::Filtered { .. })
    }

    /// Whether a listed tag is selected.
    pub fn keeps(&self, tag: &str) -> bool {
        match self {
            TagSelection::Explicit(tags) => tags.iter().any(|t| t == tag),
            TagSelection::Filtered {
                include,
                exclude,
                semver,
            } => {
                include.as_ref().is_none_or(|r| r.is_match(tag))
                    && !exclude.as_ref().is_some_and(|r| r.is_match(tag))
                    && semver.as_ref().is_none_or(|r| r.matches(tag))
            }
        }
    }

    /// The selected tags, in the upstream's order (explicit: the list's order).
    pub fn select(&self, listed: &[String]) -> Vec<String> {
        match self {
            TagSelection::Explicit(tags) => tags.clone(),
            TagSelection::Filtered { .. } => {
                listed.iter().filter(|t| self.keeps(t)).cloned().collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn explicit_list_is_taken_as_is() {
        let s = TagSelection::new(&tags(&["v2", "v1"]), "", "", "").unwrap();
        assert!(!s.needs_listing());
        assert_eq!(s.select(&tags(&["v1", "v3"])), tags(&["v2", "v1"]));
    }

    #[test]
    fn include_and_exclude_filter_the_listing() {
        let listed = tags(&["v1", "v1.1", "v2-rc1", "latest", "v10", "dev-v1"]);
        let all = TagSelection::new(&[], "", "", "").unwrap();
        assert!(all.needs_listing());
        assert_eq!(all.select(&listed), listed);
        let s = TagSelection::new(&[], r"^v\d+", "rc", "").unwrap();
        assert_eq!(s.select(&listed), tags(&["v1", "v1.1", "v10"]));
        // Unanchored, as in skopeo sync.
        let s = TagSelection::new(&[], "v1", "", "").unwrap();
        assert_eq!(s.select(&listed), tags(&["v1", "v1.1", "v10", "dev-v1"]));
        let s = TagSelection::new(&[], "", "^latest$", "").unwrap();
        assert_eq!(s.select(&listed).len(), 5);
        assert!(TagSelection::new(&[], "(", "", "").is_err());
    }

    #[test]
    fn semver_ranges_select_versions_only() {
        let listed = tags(&[
            "1.1.9",
            "1.2",
            "v1.2.5",
            "1.9.0",
            "2.0.0",
            "2",
            "1.3.0-rc1",
            "latest",
            "1.4-alpine",
        ]);
        let s = TagSelection::new(&[], "", "", ">=1.2, <2").unwrap();
        assert_eq!(s.select(&listed), tags(&["1.2", "v1.2.5", "1.9.0"]));
        // Spaces between comparators, a space after the operator, `||`, a `v`.
        let s = TagSelection::new(&[], "", "", ">= 1.2 <1.3 || >=v2").unwrap();
        assert_eq!(s.select(&listed), tags(&["1.2", "v1.2.5", "2.0.0", "2"]));
        // Combined with the regexes.
        let s = TagSelection::new(&[], "^v", "", "^1.2").unwrap();
        assert_eq!(s.select(&listed), tags(&["v1.2.5"]));
        let s = TagSelection::new(&[], "", r"\.0$", "1").unwrap();
        assert_eq!(s.select(&listed), tags(&["1.1.9", "1.2", "v1.2.5"]));
        // A range naming a pre-release admits that pre-release line.
        let s = TagSelection::new(&[], "", "", ">=1.3.0-rc0, <1.3.0").unwrap();
        assert_eq!(s.select(&listed), tags(&["1.3.0-rc1"]));
        assert!(TagSelection::new(&[], "", "", ">=1.2 ||").is_err());
    }
}
