//! Repository names, tags and manifest references, validated by the OCI grammar.

use std::fmt;

use crate::digest::{Digest, DigestError};

/// Longest repository name accepted; the distribution spec suggests clients keep
/// names under 255 characters including the registry host.
const MAX_NAME_LEN: usize = 255;
/// Longest tag, from the distribution spec's tag grammar.
const MAX_TAG_LEN: usize = 128;

/// Why a name or reference was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    /// The repository name does not match the spec's grammar.
    #[error("invalid repository name {0:?}")]
    InvalidName(String),
    /// The tag does not match `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
    #[error("invalid tag {0:?}")]
    InvalidTag(String),
    /// The reference looked like a digest but was malformed.
    #[error("invalid digest reference: {0}")]
    InvalidDigest(#[from] DigestError),
}

/// A repository name: path components of `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
/// joined by `/`.
///
/// Because every component starts and ends with an alphanumeric character, a
/// `RepoName` can never contain `..`, an empty component or a leading `/`, which
/// is what makes it safe to use as a key anywhere.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    /// Validates a repository name.
    pub fn parse(s: &str) -> Result<RepoName, NameError> {
        let invalid = || NameError::InvalidName(s.to_owned());
        if s.is_empty() || s.len() > MAX_NAME_LEN {
            return Err(invalid());
        }
        for component in s.split('/') {
            if !valid_component(component) {
                return Err(invalid());
            }
        }
        Ok(RepoName(s.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    // Separators: ".", "_", "__", or one or more "-"; never two different ones in a row.
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    /// Validates a tag.
    pub fn parse(s: &str) -> Result<Tag, NameError> {
        let b = s.as_bytes();
        let first_ok = b
            .first()
            .is_some_and(|&x| x.is_ascii_alphanumeric() || x == b'_');
        let rest_ok = b
            .iter()
            .all(|&x| x.is_ascii_alphanumeric() || x == b'_' || x == b'.' || x == b'-');
        if !first_ok || !rest_ok || b.len() > MAX_TAG_LEN {
            return Err(NameError::InvalidTag(s.to_owned()));
        }
        Ok(Tag(s.to_owned()))
    }

    /// The tag as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// What a manifest request names: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// A mutable tag.
    Tag(Tag),
    /// An immutable digest.
    Digest(Digest),
}

impl Reference {
    /// Parses a reference; anything containing `:` must be a digest.
    pub fn parse(s: &str) -> Result<Reference, NameError> {
        if s.contains(':') {
            Ok(Reference::Digest(Digest::parse(s)?))
        } else {
            Ok(Reference::Tag(Tag::parse(s)?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names() {
        for ok in [
            "a",
            "library/busybox",
            "quay.io/coreos/etcd",
            "a__b",
            "a---b",
            "x/y_z.w",
        ] {
            assert!(RepoName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "A", "..", "a/../b", "/abs", "a//b", "a/", "-a", "a_.b", "a___b", "a b", "a\0",
        ] {
            assert!(RepoName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(RepoName::parse(&"a".repeat(256)).is_err());
    }

    #[test]
    fn tags_and_references() {
        assert!(Tag::parse("v1.0_rc-1").is_ok());
        assert!(Tag::parse("_x").is_ok());
        assert!(Tag::parse(".x").is_err());
        assert!(Tag::parse(&"a".repeat(129)).is_err());
        assert!(matches!(Reference::parse("latest"), Ok(Reference::Tag(_))));
        assert!(matches!(
            Reference::parse("sha256:zz"),
            Err(NameError::InvalidDigest(_))
        ));
    }
}
