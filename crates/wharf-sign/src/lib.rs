//! The signing layer the tree formats share (OSTree commits and summaries,
//! rpm-md's `repomd.xml.asc`): a `Keyring` of trusted OpenPGP and ed25519
//! public keys that verifies detached signatures over bytes, and
//! `SigningKeys`, Wharf's own keys, which sign what Wharf writes itself.
//!
//! It knows no format: callers hand it the signed bytes and the signature
//! bytes, however their format stores them.

mod error;
mod keyring;
mod keys;

pub use error::SignError;
pub use keyring::{Ed25519PublicKey, Keyring, Verified};
pub use keys::{SigningKeys, ED25519_KEY_FILE, KEYS_DIR, OPENPGP_KEY_FILE};

/// The length of an ed25519 signature.
pub const ED25519_SIGNATURE_LEN: usize = 64;
