//! rpm-md checksums: the `type` attribute's vocabulary and a streaming verifier.
//!
//! repomd.xml and primary name checksums as `<checksum type="sha256">HEX</checksum>`.
//! sha256 is nearly universal; old repositories use `sha` or `sha1`, a few
//! `sha512`, and yum-era ones `md5`, so every one createrepo_c can write is
//! accepted. These are not `wharf_core::Digest` values: the blob store keys on
//! sha256 of its own, and a sha1 here only verifies what upstream claimed.

use std::fmt;

use sha2::Digest as _;

use crate::RpmError;

/// The hash function a `<checksum type=…>` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChecksumKind {
    /// `md5`
    Md5,
    /// `sha` or `sha1`
    Sha1,
    /// `sha224`
    Sha224,
    /// `sha256`
    Sha256,
    /// `sha384`
    Sha384,
    /// `sha512`
    Sha512,
}

impl ChecksumKind {
    /// Reads a `type` attribute.
    pub fn parse(s: &str) -> Result<ChecksumKind, RpmError> {
        Ok(match s {
            "md5" => ChecksumKind::Md5,
            "sha" | "sha1" => ChecksumKind::Sha1,
            "sha224" => ChecksumKind::Sha224,
            "sha256" => ChecksumKind::Sha256,
            "sha384" => ChecksumKind::Sha384,
            "sha512" => ChecksumKind::Sha512,
            other => {
                return Err(RpmError::Metadata(format!(
                    "unknown checksum type {other:?} (expected sha256, sha1, sha224, sha384, sha512 or md5)"
                )))
            }
        })
    }

    /// The canonical name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChecksumKind::Md5 => "md5",
            ChecksumKind::Sha1 => "sha1",
            ChecksumKind::Sha224 => "sha224",
            ChecksumKind::Sha256 => "sha256",
            ChecksumKind::Sha384 => "sha384",
            ChecksumKind::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            ChecksumKind::Md5 => 32,
            ChecksumKind::Sha1 => 40,
            ChecksumKind::Sha224 => 56,
            ChecksumKind::Sha256 => 64,
            ChecksumKind::Sha384 => 96,
            ChecksumKind::Sha512 => 128,
        }
    }
}

/// A checksum as upstream wrote it: a kind and lower-case hex of the kind's length.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Checksum {
    kind: ChecksumKind,
    hex: String,
}

impl Checksum {
    /// Validates a `type` attribute and the element's text.
    pub fn new(kind: &str, hex: &str) -> Result<Checksum, RpmError> {
        let kind = ChecksumKind::parse(kind)?;
        let hex = hex.trim().to_ascii_lowercase();
        if hex.len() != kind.hex_len() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RpmError::Metadata(format!(
                "checksum {hex:?} is not {} hex digits of {}",
                kind.hex_len(),
                kind.as_str()
            )));
        }
        Ok(Checksum { kind, hex })
    }

    /// The hash function.
    pub fn kind(&self) -> ChecksumKind {
        self.kind
    }

    /// Lower-case hex.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The blob-store digest naming the same bytes, when the kind is one the store keys on.
    pub fn as_digest(&self) -> Option<wharf_core::Digest> {
        match self.kind {
            ChecksumKind::Sha256 => wharf_core::Digest::parse(&format!("sha256:{}", self.hex)).ok(),
            ChecksumKind::Sha512 => wharf_core::Digest::parse(&format!("sha512:{}", self.hex)).ok(),
            _ => None,
        }
    }

    /// A verifier for bytes that should have this checksum.
    pub fn verifier(&self) -> ChecksumHasher {
        ChecksumHasher::new(self.kind)
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.hex)
    }
}

/// A running hash of one of the checksum kinds.
#[derive(Clone)]
pub enum ChecksumHasher {
    /// md5
    Md5(md5::Md5),
    /// sha1
    Sha1(sha1::Sha1),
    /// sha224
    Sha224(sha2::Sha224),
    /// sha256
    Sha256(sha2::Sha256),
    /// sha384
    Sha384(sha2::Sha384),
    /// sha512
    Sha512(sha2::Sha512),
}

impl ChecksumHasher {
    /// A fresh hasher.
    pub fn new(kind: ChecksumKind) -> ChecksumHasher {
        match kind {
            ChecksumKind::Md5 => ChecksumHasher::Md5(md5::Md5::new()),
            ChecksumKind::Sha1 => ChecksumHasher::Sha1(sha1::Sha1::new()),
            ChecksumKind::Sha224 => ChecksumHasher::Sha224(sha2::Sha224::new()),
            ChecksumKind::Sha256 => ChecksumHasher::Sha256(sha2::Sha256::new()),
            ChecksumKind::Sha384 => ChecksumHasher::Sha384(sha2::Sha384::new()),
            ChecksumKind::Sha512 => ChecksumHasher::Sha512(sha2::Sha512::new()),
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            ChecksumHasher::Md5(h) => h.update(bytes),
            ChecksumHasher::Sha1(h) => h.update(bytes),
            ChecksumHasher::Sha224(h) => h.update(bytes),
            ChecksumHasher::Sha256(h) => h.update(bytes),
            ChecksumHasher::Sha384(h) => h.update(bytes),
            ChecksumHasher::Sha512(h) => h.update(bytes),
        }
    }

    /// The checksum of everything fed.
    pub fn finish(self) -> Checksum {
        let (kind, hex) = match self {
            ChecksumHasher::Md5(h) => (ChecksumKind::Md5, hex::encode(h.finalize())),
            ChecksumHasher::Sha1(h) => (ChecksumKind::Sha1, hex::encode(h.finalize())),
            ChecksumHasher::Sha224(h) => (ChecksumKind::Sha224, hex::encode(h.finalize())),
            ChecksumHasher::Sha256(h) => (ChecksumKind::Sha256, hex::encode(h.finalize())),
            ChecksumHasher::Sha384(h) => (ChecksumKind::Sha384, hex::encode(h.finalize())),
            ChecksumHasher::Sha512(h) => (ChecksumKind::Sha512, hex::encode(h.finalize())),
        };
        Checksum { kind, hex }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_hex_are_validated() {
        let empty_sha1 = "da39a3ee5e6b4b0d3255bfef95601890afd80709";
        let c = Checksum::new("sha", empty_sha1).unwrap();
        assert_eq!(c.kind(), ChecksumKind::Sha1);
        assert_eq!(ChecksumHasher::new(ChecksumKind::Sha1).finish(), c);
        assert!(c.as_digest().is_none());
        assert!(Checksum::new("sha256", empty_sha1).is_err());
        assert!(Checksum::new("crc32", "00000000").is_err());
        let upper = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        let c = Checksum::new("sha256", upper).unwrap();
        assert_eq!(c.as_digest().unwrap(), wharf_core::Digest::sha256_of(b""));
    }
}
