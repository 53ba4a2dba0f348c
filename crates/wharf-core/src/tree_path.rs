//! Paths inside a served tree (an OSTree, RPM or file repository's snapshot).
//!
//! Every byte of such a path may come from outside — a client's URL, an
//! upstream's listing, an upload — and the path ends up as a key in the
//! database and in URLs the server writes. So the rule is checked once, here:
//! a `TreePath` that exists is relative, has no empty, `.` or `..` component,
//! no NUL, no backslash and no control character, and is bounded in length,
//! so no path built from it can escape its repository.

use std::fmt;

/// Longest path accepted, in bytes (Linux's `PATH_MAX`).
pub const MAX_TREE_PATH_LEN: usize = 4096;
/// Longest single component, in bytes (Linux's `NAME_MAX`).
pub const MAX_TREE_COMPONENT_LEN: usize = 255;

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTreePath {
    /// Empty, or only slashes.
    #[error("empty path")]
    Empty,
    /// Starts with `/`.
    #[error("path {0:?} is absolute")]
    Absolute(String),
    /// Has an empty, `.` or `..` component.
    #[error("path {0:?} has an empty, \".\" or \"..\" component")]
    BadComponent(String),
    /// Holds NUL, a backslash or another control character.
    #[error("path {0:?} holds a NUL, backslash or control character")]
    BadCharacter(String),
    /// Longer than [`MAX_TREE_PATH_LEN`], or a component longer than [`MAX_TREE_COMPONENT_LEN`].
    #[error("path of {0} bytes is too long (at most {MAX_TREE_PATH_LEN}, components at most {MAX_TREE_COMPONENT_LEN})")]
    TooLong(usize),
}

/// A validated relative path of `/`-separated components.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TreePath(String);

impl TreePath {
    /// Validates `s`. A single trailing `/` is not accepted: a `TreePath` names a
    /// file or a directory, and the caller says which.
    pub fn new(s: &str) -> Result<TreePath, InvalidTreePath> {
        if s.len() > MAX_TREE_PATH_LEN {
            return Err(InvalidTreePath::TooLong(s.len()));
        }
        if s.is_empty() {
            return Err(InvalidTreePath::Empty);
        }
        if s.starts_with('/') {
            return Err(InvalidTreePath::Absolute(s.to_owned()));
        }
        if s.chars().any(|c| c == '\\' || c.is_control()) {
            return Err(InvalidTreePath::BadCharacter(s.escape_debug().to_string()));
        }
        for component in s.split('/') {
            if component.is_empty() || component == "." || component == ".." {
                return Err(InvalidTreePath::BadComponent(s.to_owned()));
            }
            if component.len() > MAX_TREE_COMPONENT_LEN {
                return Err(InvalidTreePath::TooLong(component.len()));
            }
        }
        Ok(TreePath(s.to_owned()))
    }

    /// The path as stored and as written in URLs (before percent-encoding).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its components, in order.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The directory holding it; `None` at the top.
    pub fn parent(&self) -> Option<TreePath> {
        self.0
            .rsplit_once('/')
            .map(|(dir, _)| TreePath(dir.to_owned()))
    }

    /// `self/child`, where `child` is itself valid.
    pub fn join(&self, child: &TreePath) -> Result<TreePath, InvalidTreePath> {
        TreePath::new(&format!("{}/{}", self.0, child.0))
    }

    /// Whether `self` is `dir` or lies below it.
    pub fn starts_with(&self, dir: &TreePath) -> bool {
        self.0 == dir.0
            || (self.0.len() > dir.0.len()
                && self.0.starts_with(&dir.0)
                && self.0.as_bytes()[dir.0.len()] == b'/')
    }
}

impl fmt::Display for TreePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TreePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TreePath({:?})", self.0)
    }
}

impl std::str::FromStr for TreePath {
    type Err = InvalidTreePath;
    fn from_str(s: &str) -> Result<TreePath, InvalidTreePath> {
        TreePath::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        for ok in [
            "repodata/repomd.xml",
            "objects/ab/cdef.filez",
            "images/pxeboot/vmlinuz",
            "Ünïcode/файл name.txt",
            ".hidden/..dots../x",
            "a",
        ] {
            let p = TreePath::new(ok).unwrap();
            assert_eq!(p.as_str(), ok);
        }
    }

    #[test]
    fn refuses_paths_that_could_escape_or_confuse() {
        type Expect = fn(&InvalidTreePath) -> bool;
        let cases: &[(&str, Expect)] = &[
            ("", |e| matches!(e, InvalidTreePath::Empty)),
            ("/etc/passwd", |e| matches!(e, InvalidTreePath::Absolute(_))),
            ("../x", |e| matches!(e, InvalidTreePath::BadComponent(_))),
            ("a/../../x", |e| {
                matches!(e, InvalidTreePath::BadComponent(_))
            }),
            ("a/./b", |e| matches!(e, InvalidTreePath::BadComponent(_))),
            ("a//b", |e| matches!(e, InvalidTreePath::BadComponent(_))),
            ("a/", |e| matches!(e, InvalidTreePath::BadComponent(_))),
            ("a\0b", |e| matches!(e, InvalidTreePath::BadCharacter(_))),
            ("a\\..\\b", |e| {
                matches!(e, InvalidTreePath::BadCharacter(_))
            }),
            ("a\nb", |e| matches!(e, InvalidTreePath::BadCharacter(_))),
        ];
        for (bad, expect) in cases {
            let err = TreePath::new(bad).unwrap_err();
            assert!(expect(&err), "{bad:?} gave {err:?}");
        }
        let long_component = "x".repeat(MAX_TREE_COMPONENT_LEN + 1);
        assert!(matches!(
            TreePath::new(&long_component),
            Err(InvalidTreePath::TooLong(_))
        ));
        let long_path = ["y"; 3000].join("/");
        assert!(matches!(
            TreePath::new(&long_path),
            Err(InvalidTreePath::TooLong(_))
        ));
    }

    #[test]
    fn parents_names_and_prefixes() {
        let p = TreePath::new("images/pxeboot/vmlinuz").unwrap();
        assert_eq!(p.file_name(), "vmlinuz");
        assert_eq!(p.parent().unwrap().as_str(), "images/pxeboot");
        assert!(p.starts_with(&TreePath::new("images").unwrap()));
        assert!(!p.starts_with(&TreePath::new("imag").unwrap()));
        assert!(TreePath::new("a").unwrap().parent().is_none());
        assert_eq!(
            TreePath::new("a")
                .unwrap()
                .join(&TreePath::new("b/c").unwrap())
                .unwrap()
                .as_str(),
            "a/b/c"
        );
    }
}
