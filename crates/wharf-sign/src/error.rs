//! `SignError`: why a key could not be read or a signature did not verify.

use std::path::PathBuf;

/// Why loading a key or verifying a signature failed.
///
/// The verification variants are distinct so a caller can say precisely why
/// it refused content (no signature at all versus a signature by a key it
/// does not trust versus a signature that does not match the bytes).
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// A key file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file meant to hold OpenPGP public keys does not.
    #[error("{what}: not OpenPGP public keys: {reason}")]
    BadPublicKey { what: String, reason: String },
    /// A file meant to hold OpenPGP public keys holds none.
    #[error("{what}: holds no OpenPGP public key")]
    NoPublicKey { what: String },
    /// A line of an ed25519 key file is not base64 of 32 bytes.
    #[error("{what} line {line}: not an ed25519 public key (base64 of 32 bytes)")]
    BadEd25519Key { what: String, line: usize },
    /// A file meant to hold a secret signing key does not.
    #[error("{}: {reason}", path.display())]
    BadSecretKey { path: PathBuf, reason: String },
    /// There is no signature to check.
    #[error("no signature")]
    NoSignature,
    /// The signature bytes are not an OpenPGP signature.
    #[error("not an OpenPGP signature: {0}")]
    MalformedSignature(String),
    /// Signed by a key that is not in the keyring.
    #[error("signed by key {key_id}, which is not a trusted key")]
    UnknownKey { key_id: String },
    /// The signature does not match the bytes (or was made by another key with the same id).
    #[error("the signature by key {key_id} does not verify: the signed data or the signature was altered")]
    BadSignature { key_id: String },
    /// The signing key expired before the signature was made.
    #[error("signed by key {key_id}, which has expired")]
    ExpiredKey { key_id: String },
    /// The signing key was revoked by its owner.
    #[error("signed by key {key_id}, which has been revoked")]
    RevokedKey { key_id: String },
    /// An ed25519 signature is not 64 bytes.
    #[error("an ed25519 signature is 64 bytes, not {0}")]
    Ed25519Length(usize),
    /// No trusted ed25519 key verifies the signature.
    #[error("no trusted ed25519 key verifies the signature")]
    Ed25519NoMatch,
    /// Making a signature or a key failed.
    #[error("signing: {0}")]
    Signing(String),
}
