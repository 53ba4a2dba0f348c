//! What a mirror selects, as values: semver ranges over tags read leniently as
//! versions, and index platforms. Here rather than in the mirror so that the
//! configuration's validation and the copy share one grammar.

/// A range or platform that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectionSyntaxError {
    /// Not a version range.
    #[error("{0:?} is not a version range: {1}")]
    Semver(String, String),
    /// Not `OS/ARCH[/VARIANT]`.
    #[error("{0:?} is not OS/ARCH or OS/ARCH/VARIANT")]
    Platform(String),
}

/// A semver range: alternatives joined by `||`, each a set of comparators all
/// of which must hold (`>=1.2, <2`; commas or spaces between comparators, as in
/// Cargo and in the Masterminds library skopeo uses).
#[derive(Debug, Clone)]
pub struct SemverRange {
    alternatives: Vec<semver::VersionReq>,
}

impl SemverRange {
    /// Parses a range; an empty one is refused.
    pub fn parse(text: &str) -> Result<SemverRange, SelectionSyntaxError> {
        let refuse = |why: String| SelectionSyntaxError::Semver(text.to_owned(), why);
        let mut alternatives = Vec::new();
        for alternative in text.split("||") {
            // Glue a lone operator to its version (`>= 3.12` → `>=3.12`), then
            // read the remaining whitespace as the comma Cargo's grammar wants.
            let mut comparators: Vec<String> = Vec::new();
            let mut pending_op = String::new();
            for token in alternative
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|t| !t.is_empty())
            {
                let is_op = |c: char| matches!(c, '<' | '>' | '=' | '~' | '^');
                let version = token.trim_start_matches(is_op);
                pending_op.push_str(&token[..token.len() - version.len()]);
                if !version.is_empty() {
                    // Tags carry a `v`; so may the range (`>=v1.2`).
                    let version = version.strip_prefix(['v', 'V']).unwrap_or(version);
                    comparators.push(format!("{}{version}", std::mem::take(&mut pending_op)));
                }
            }
            if !pending_op.is_empty() {
                return Err(refuse(format!("{pending_op:?} has no version after it")));
            }
            if comparators.is_empty() {
                return Err(refuse("an alternative is empty".to_owned()));
            }
            let req = semver::VersionReq::parse(&comparators.join(", "))
                .map_err(|e| refuse(e.to_string()))?;
            alternatives.push(req);
        }
        Ok(SemverRange { alternatives })
    }

    /// Whether `tag`, read leniently as a version, is in the range; a tag that
    /// is no version never is.
    pub fn matches(&self, tag: &str) -> bool {
        lenient_version(tag).is_some_and(|v| self.alternatives.iter().any(|r| r.matches(&v)))
    }
}

/// Reads a tag as a version the way registries' tags are written: an optional
/// `v`, then one to three numeric components (the missing ones 0), then an
/// optional `-prerelease` and `+build`. `1.2`, `v3` and `1.2.3-alpine` are
/// versions (the last a pre-release, which ranges skip unless they name it);
/// `latest` and `1.2.3.4` are not.
pub fn lenient_version(tag: &str) -> Option<semver::Version> {
    let rest = tag.strip_prefix(['v', 'V']).unwrap_or(tag);
    let core_end = rest.find(['-', '+']).unwrap_or(rest.len());
    let (core, suffix) = rest.split_at(core_end);
    let parts: Vec<&str> = core.split('.').collect();
    if parts.is_empty()
        || parts.len() > 3
        || parts.iter().any(|p| {
            p.is_empty()
                || !p.bytes().all(|b| b.is_ascii_digit())
                || (p.len() > 1 && p.starts_with('0'))
        })
    {
        return None;
    }
    let mut numbers = [0u64; 3];
    for (slot, part) in numbers.iter_mut().zip(&parts) {
        *slot = part.parse().ok()?;
    }
    semver::Version::parse(&format!(
        "{}.{}.{}{suffix}",
        numbers[0], numbers[1], numbers[2]
    ))
    .ok()
}

/// One platform of an index to copy: `OS/ARCH` or `OS/ARCH/VARIANT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`.
    pub architecture: String,
    /// `v8`; `None` matches any variant.
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `OS/ARCH[/VARIANT]`.
    pub fn parse(text: &str) -> Result<Platform, SelectionSyntaxError> {
        let parts: Vec<&str> = text.split('/').collect();
        let valid = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| valid(p)) {
            return Err(SelectionSyntaxError::Platform(text.to_owned()));
        }
        Ok(Platform {
            os: parts[0].to_owned(),
            architecture: parts[1].to_owned(),
            variant: parts.get(2).map(|v| (*v).to_owned()),
        })
    }

    /// Whether an index entry's platform is this one. `arm64` without a
    /// variant is `arm64/v8`, as containerd normalises it.
    pub fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        let normalise = |arch: &str, variant: Option<&str>| -> Option<String> {
            match (arch, variant) {
                ("arm64", None | Some("")) => Some("v8".to_owned()),
                (_, Some("")) => None,
                (_, v) => v.map(str::to_owned),
            }
        };
        self.os == os
            && self.architecture == architecture
            && match &self.variant {
                None => true,
                Some(want) => {
                    normalise(architecture, Some(want)) == normalise(architecture, variant)
                }
            }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_read_leniently_as_versions() {
        let v = |t: &str| lenient_version(t).map(|v| v.to_string());
        assert_eq!(v("1.2.3").as_deref(), Some("1.2.3"));
        assert_eq!(v("v1.2").as_deref(), Some("1.2.0"));
        assert_eq!(v("V3").as_deref(), Some("3.0.0"));
        assert_eq!(v("1.2.3-alpine").as_deref(), Some("1.2.3-alpine"));
        assert_eq!(v("3.12-rc.1+b5").as_deref(), Some("3.12.0-rc.1+b5"));
        for not in [
            "latest",
            "1.2.3.4",
            "",
            "v",
            "1..2",
            "01.2",
            "1.x",
            "sha256-abc.sig",
            "-1",
        ] {
            assert_eq!(v(not), None, "{not:?}");
        }
    }

    #[test]
    fn ranges_parse_or_are_refused() {
        let r = SemverRange::parse(">= 1.2 <1.3 || >=v2").unwrap();
        assert!(r.matches("1.2.7") && r.matches("v2") && !r.matches("1.3") && !r.matches("x"));
        for bad in ["", "  ", ">=", "not-a-range", ">=1.2 ||", "1.2.3.4"] {
            assert!(SemverRange::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn platforms_parse_and_match() {
        let amd = Platform::parse("linux/amd64").unwrap();
        assert!(amd.matches("linux", "amd64", None));
        assert!(amd.matches("linux", "amd64", Some("v2")));
        assert!(!amd.matches("linux", "arm64", None));
        let arm = Platform::parse("linux/arm64/v8").unwrap();
        assert!(arm.matches("linux", "arm64", Some("v8")));
        assert!(arm.matches("linux", "arm64", None));
        assert!(!arm.matches("linux", "arm64", Some("v9")));
        assert!(!Platform::parse("linux/arm/v7")
            .unwrap()
            .matches("linux", "arm", Some("v6")));
        assert_eq!(arm.to_string(), "linux/arm64/v8");
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "linux/amd 64"] {
            assert!(Platform::parse(bad).is_err(), "{bad:?}");
        }
    }
}
