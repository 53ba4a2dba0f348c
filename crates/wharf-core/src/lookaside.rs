//! The lookaside cache's vocabulary: which package a source file belongs to,
//! the file's name, and the checksum dist-git's `sources` file names it by.
//!
//! These values end up in URLs, in database keys and in the audit log, so each
//! is validated once, here: a package is one or two components (`bash`, or
//! `rpms/bash` when the lookaside is namespaced) of the characters package
//! names use; a file name is a single path component; a checksum is lower-case
//! hex of its algorithm's exact length.

use std::fmt;

/// Longest package component or file name accepted (a filesystem's limit).
pub const MAX_COMPONENT_BYTES: usize = 255;

/// Why a lookaside value was refused, in words for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookasideValueError {
    /// The package name is not one or two valid components.
    #[error("invalid package name {0:?}: expected NAME or NAMESPACE/NAME of letters, digits, `.`, `_`, `+` and `-`")]
    Package(String),
    /// The file name is empty, a path, too long or holds control characters.
    #[error("invalid file name {0:?}: expected one path component without control characters")]
    FileName(String),
    /// The checksum type is not one the protocol uses.
    #[error("unsupported checksum type {0:?}: expected sha512 or md5")]
    HashType(String),
    /// The checksum is not hex of the right length.
    #[error("invalid {kind} checksum {value:?}: expected {len} hex digits")]
    Checksum {
        /// The checksum type.
        kind: SourceHashType,
        /// What was given.
        value: String,
        /// How many hex digits it needs.
        len: usize,
    },
}

/// The package (dist-git repository) a source file belongs to, with its
/// namespace when the lookaside is namespaced (`rpms/bash`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourcePackage(String);

impl SourcePackage {
    /// Validates `NAME` or `NAMESPACE/NAME`.
    pub fn new(s: &str) -> Result<SourcePackage, LookasideValueError> {
        let components: Vec<&str> = s.split('/').collect();
        let ok = (1..=2).contains(&components.len())
            && components.iter().all(|c| {
                !c.is_empty()
                    && c.len() <= MAX_COMPONENT_BYTES
                    && !c.starts_with('.')
                    && c.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
            });
        if ok {
            Ok(SourcePackage(s.to_owned()))
        } else {
            Err(LookasideValueError::Package(s.to_owned()))
        }
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SourcePackage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A source file's name: one path component.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceFileName(String);

impl SourceFileName {
    /// Refuses empty names, `.` and `..`, `/` and `\`, control characters
    /// (NUL included) and names over 255 bytes.
    pub fn new(s: &str) -> Result<SourceFileName, LookasideValueError> {
        let ok = !s.is_empty()
            && s.len() <= MAX_COMPONENT_BYTES
            && s != "."
            && s != ".."
            && !s.chars().any(|c| c == '/' || c == '\\' || c.is_control());
        if ok {
            Ok(SourceFileName(s.to_owned()))
        } else {
            Err(LookasideValueError::FileName(s.to_owned()))
        }
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SourceFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The checksum types of the rpkg protocol: SHA-512 today, MD5 in old `sources` files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceHashType {
    /// `sha512`, what current rpkg and fedpkg write.
    Sha512,
    /// `md5`, the legacy form.
    Md5,
}

impl SourceHashType {
    /// Both types.
    pub const ALL: [SourceHashType; 2] = [SourceHashType::Sha512, SourceHashType::Md5];

    /// The name used in URLs and form fields (`sha512`, `md5`).
    pub fn as_str(self) -> &'static str {
        match self {
            SourceHashType::Sha512 => "sha512",
            SourceHashType::Md5 => "md5",
        }
    }

    /// Hex digits in a checksum of this type.
    pub fn hex_len(self) -> usize {
        match self {
            SourceHashType::Sha512 => 128,
            SourceHashType::Md5 => 32,
        }
    }

    /// Parses `sha512` or `md5`.
    pub fn parse(s: &str) -> Result<SourceHashType, LookasideValueError> {
        SourceHashType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| LookasideValueError::HashType(s.to_owned()))
    }
}

impl fmt::Display for SourceHashType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A source file's checksum: its type and lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceChecksum {
    kind: SourceHashType,
    hex: String,
}

impl SourceChecksum {
    /// Validates `hex` for `kind`; upper-case hex is accepted and stored lower-case.
    pub fn new(kind: SourceHashType, hex: &str) -> Result<SourceChecksum, LookasideValueError> {
        if hex.len() != kind.hex_len() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(LookasideValueError::Checksum {
                kind,
                value: hex.chars().take(200).collect(),
                len: kind.hex_len(),
            });
        }
        Ok(SourceChecksum {
            kind,
            hex: hex.to_ascii_lowercase(),
        })
    }

    /// The checksum type.
    pub fn kind(&self) -> SourceHashType {
        self.kind
    }

    /// The lower-case hex.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for SourceChecksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages() {
        for ok in ["bash", "rpms/bash", "perl-DBI", "gtk+", "python3.12", "x_y"] {
            assert!(SourcePackage::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/bash",
            "bash/",
            "a/b/c",
            "..",
            "rpms/..",
            ".hidden",
            "a b",
            "a\0b",
            "a\\b",
            &"x".repeat(256),
        ] {
            assert!(SourcePackage::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn file_names() {
        for ok in ["bash-5.2.tar.gz", "v1.0 (final).zip", "..tar", "a..b"] {
            assert!(SourceFileName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "a\\b",
            "a\0b",
            "a\nb",
            &"x".repeat(256),
        ] {
            assert!(SourceFileName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn checksums() {
        let md5 = "D41D8CD98F00B204E9800998ECF8427E";
        let c = SourceChecksum::new(SourceHashType::Md5, md5).unwrap();
        assert_eq!(c.hex(), md5.to_ascii_lowercase());
        assert!(SourceChecksum::new(SourceHashType::Sha512, md5).is_err());
        assert!(SourceChecksum::new(SourceHashType::Md5, &"g".repeat(32)).is_err());
        assert_eq!(SourceHashType::parse("sha512"), Ok(SourceHashType::Sha512));
        assert!(SourceHashType::parse("sha1").is_err());
    }
}
