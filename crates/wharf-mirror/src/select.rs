//! Which tags of an upstream repository a sync copies: an explicit list, or
//! the upstream's list filtered by `include` / `exclude` regexes (unanchored,
//! as in skopeo sync's `images-by-tag-regex` and zot's `regex`).

use regex::Regex;

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
    },
}

impl TagSelection {
    /// Builds a selection from configuration values: `tags` non-empty is an
    /// explicit list; otherwise empty patterns mean no filter.
    pub fn new(
        tags: &[String],
        include: &str,
        exclude: &str,
    ) -> Result<TagSelection, regex::Error> {
        if !tags.is_empty() {
            return Ok(TagSelection::Explicit(tags.to_vec()));
        }
        let compile = |p: &str| (!p.is_empty()).then(|| Regex::new(p)).transpose();
        Ok(TagSelection::Filtered {
            include: compile(include)?,
            exclude: compile(exclude)?,
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
            TagSelection::Filtered { include, exclude } => {
                include.as_ref().is_none_or(|r| r.is_match(tag))
                    && !exclude.as_ref().is_some_and(|r| r.is_match(tag))
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
        let s = TagSelection::new(&tags(&["v2", "v1"]), "", "").unwrap();
        assert!(!s.needs_listing());
        assert_eq!(s.select(&tags(&["v1", "v3"])), tags(&["v2", "v1"]));
    }

    #[test]
    fn include_and_exclude_filter_the_listing() {
        let listed = tags(&["v1", "v1.1", "v2-rc1", "latest", "v10", "dev-v1"]);
        let all = TagSelection::new(&[], "", "").unwrap();
        assert!(all.needs_listing());
        assert_eq!(all.select(&listed), listed);
        let s = TagSelection::new(&[], r"^v\d+", "rc").unwrap();
        assert_eq!(s.select(&listed), tags(&["v1", "v1.1", "v10"]));
        // Unanchored, as in skopeo sync.
        let s = TagSelection::new(&[], "v1", "").unwrap();
        assert_eq!(s.select(&listed), tags(&["v1", "v1.1", "v10", "dev-v1"]));
        let s = TagSelection::new(&[], "", "^latest$").unwrap();
        assert_eq!(s.select(&listed).len(), 5);
        assert!(TagSelection::new(&[], "(", "").is_err());
    }
}
