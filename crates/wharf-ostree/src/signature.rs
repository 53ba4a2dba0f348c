//! OSTree's detached signatures: a `.commitmeta` object or a `summary.sig`
//! file is an `a{sv}` whose `ostree.gpgsigs` (`aay`: binary OpenPGP
//! signatures) and `ostree.sign.ed25519` (`aay`: 64-byte signatures) sign the
//! commit object's or the summary's bytes, as libostree writes them.
//! Verification itself is `wharf-sign`'s; this module only reads and writes
//! the GVariant around it.

use wharf_sign::{Keyring, SignError, SigningKeys};

use crate::gvariant::{decode_normal, GvError, Type, Value};
use crate::object::{metadata_of_value, metadata_value, Metadata};

/// The key of OpenPGP signatures in detached metadata.
pub const GPG_KEY: &str = "ostree.gpgsigs";
/// The key of ed25519 signatures in detached metadata.
pub const ED25519_KEY: &str = "ostree.sign.ed25519";

/// Why signed bytes were refused.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// No signature of a kind a trusted key could verify.
    #[error("not signed: {0}")]
    Unsigned(String),
    /// The detached metadata is not an `a{sv}` in normal form, or its
    /// signature entries are not `aay`.
    #[error("malformed signature metadata: {0}")]
    Malformed(String),
    /// Signatures were present and none verified.
    #[error("{0}")]
    Untrusted(#[from] SignError),
}

impl From<GvError> for SignatureError {
    fn from(e: GvError) -> Self {
        SignatureError::Malformed(e.to_string())
    }
}

/// The signatures under `key`, which must be `aay` when present.
fn signatures(meta: &Metadata, key: &str) -> Result<Vec<Vec<u8>>, SignatureError> {
    let Some((_, value)) = meta.iter().find(|(k, _)| k == key) else {
        return Ok(Vec::new());
    };
    match value {
        Value::Array(_, items) => items
            .iter()
            .map(|v| match v {
                Value::Bytes(b) => Ok(b.clone()),
                _ => Err(SignatureError::Malformed(format!(
                    "{key} is not of type aay"
                ))),
            })
            .collect(),
        _ => Err(SignatureError::Malformed(format!(
            "{key} is not of type aay"
        ))),
    }
}

/// Verifies `signed` against the detached metadata `detached` (a
/// `.commitmeta` or `summary.sig`; `None` when there is none): one signature
/// by a trusted key, of either kind, is enough. Returns who signed.
pub fn verify(
    trust: &Keyring,
    signed: &[u8],
    detached: Option<&[u8]>,
) -> Result<String, SignatureError> {
    let Some(detached) = detached else {
        return Err(SignatureError::Unsigned(
            "there is no detached signature metadata".into(),
        ));
    };
    let meta = metadata_of_value(decode_normal(
        &Type::parse("a{sv}").expect("literal"),
        detached,
    )?);
    let gpg = signatures(&meta, GPG_KEY)?;
    let ed25519 = signatures(&meta, ED25519_KEY)?;
    let mut first_error: Option<SignError> = None;
    if trust.has_openpgp() {
        for sig in &gpg {
            match trust.verify_openpgp(signed, sig) {
                Ok(v) => {
                    return Ok(match v.user_id {
                        Some(uid) => format!("OpenPGP key {} ({uid})", v.fingerprint),
                        None => format!("OpenPGP key {}", v.fingerprint),
                    })
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    if trust.has_ed25519() {
        for sig in &ed25519 {
            match trust.verify_ed25519(signed, sig) {
                Ok(k) => return Ok(format!("ed25519 key {}", k.to_base64())),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    match first_error {
        Some(e) => Err(e.into()),
        None => {
            let mut wanted = Vec::new();
            if trust.has_openpgp() {
                wanted.push(GPG_KEY);
            }
            if trust.has_ed25519() {
                wanted.push(ED25519_KEY);
            }
            Err(SignatureError::Unsigned(format!(
                "no {} signature in its detached metadata",
                wanted.join(" or ")
            )))
        }
    }
}

/// Detached metadata signing `data` with Wharf's keys: an OpenPGP and an
/// ed25519 signature, as `summary.sig` (or a `.commitmeta`) holds them.
pub fn sign(keys: &SigningKeys, data: &[u8]) -> Result<Vec<u8>, SignError> {
    let ay = Type::parse("ay").expect("literal");
    let gpg = keys.sign_openpgp(data)?;
    let ed = keys.sign_ed25519(data);
    let meta: Metadata = vec![
        (
            GPG_KEY.into(),
            Value::Array(ay.clone(), vec![Value::Bytes(gpg)]),
        ),
        (
            ED25519_KEY.into(),
            Value::Array(ay, vec![Value::Bytes(ed.to_vec())]),
        ),
    ];
    Ok(metadata_value(&meta).encode())
}

/// Detached metadata for `data` that Wharf's keys sign: `None` when
/// `existing` already carries a Wharf signature over `data`; else `existing`
/// (a pushed `.commitmeta`, whose keys and signatures are kept) with Wharf's
/// two signatures added, or Wharf's alone when there is none.
pub fn add_signatures(
    keys: &SigningKeys,
    data: &[u8],
    existing: Option<&[u8]>,
) -> Result<Option<Vec<u8>>, SignatureError> {
    let Some(existing) = existing else {
        return Ok(Some(sign(keys, data)?));
    };
    if verify(&keys.keyring(), data, Some(existing)).is_ok() {
        return Ok(None);
    }
    let mut meta = metadata_of_value(decode_normal(
        &Type::parse("a{sv}").expect("literal"),
        existing,
    )?);
    let ours = [
        (GPG_KEY, keys.sign_openpgp(data)?),
        (ED25519_KEY, keys.sign_ed25519(data).to_vec()),
    ];
    for (key, sig) in ours {
        let mut all = signatures(&meta, key)?;
        all.push(sig);
        let value = Value::Array(
            Type::parse("ay").expect("literal"),
            all.into_iter().map(Value::Bytes).collect(),
        );
        match meta.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => meta.push((key.to_owned(), value)),
        }
    }
    Ok(Some(metadata_value(&meta).encode()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_metadata_verifies_and_tampering_fails() {
        let keys = SigningKeys::generate().unwrap();
        let detached = sign(&keys, b"commit bytes").unwrap();
        let trust = keys.keyring();
        assert!(verify(&trust, b"commit bytes", Some(detached.as_slice()))
            .unwrap()
            .starts_with("OpenPGP key"));
        // Only the ed25519 key trusted: its signature verifies alone.
        let mut ed_only = Keyring::new();
        ed_only.add_ed25519_key(keys.ed25519_public());
        assert!(verify(&ed_only, b"commit bytes", Some(detached.as_slice()))
            .unwrap()
            .starts_with("ed25519 key"));
        assert!(matches!(
            verify(&trust, b"commit bytez", Some(detached.as_slice())),
            Err(SignatureError::Untrusted(_))
        ));
        assert!(matches!(
            verify(&trust, b"commit bytes", None),
            Err(SignatureError::Unsigned(_))
        ));
        // Metadata without signatures (an unsigned commit's other detached metadata).
        let empty = metadata_value(&vec![("x".into(), Value::Bool(true))]).encode();
        let err = verify(&trust, b"commit bytes", Some(empty.as_slice())).unwrap_err();
        assert!(err.to_string().contains("ostree.gpgsigs"), "{err}");
        let other = SigningKeys::generate().unwrap().keyring();
        assert!(verify(&other, b"commit bytes", Some(detached.as_slice())).is_err());
        assert!(matches!(
            verify(&trust, b"commit bytes", Some(&b"\x01junk"[..])),
            Err(SignatureError::Malformed(_))
        ));
    }

    #[test]
    fn wharf_signatures_join_a_pushed_commitmeta() {
        let keys = SigningKeys::generate().unwrap();
        let builder = SigningKeys::generate().unwrap();
        let theirs = sign(&builder, b"commit").unwrap();
        let merged = add_signatures(&keys, b"commit", Some(&theirs))
            .unwrap()
            .unwrap();
        assert!(verify(&keys.keyring(), b"commit", Some(&merged)).is_ok());
        assert!(verify(&builder.keyring(), b"commit", Some(&merged)).is_ok());
        assert!(add_signatures(&keys, b"commit", Some(&merged))
            .unwrap()
            .is_none());
        let fresh = add_signatures(&keys, b"commit", None).unwrap().unwrap();
        assert!(verify(&keys.keyring(), b"commit", Some(&fresh)).is_ok());
        assert!(add_signatures(&keys, b"commit", Some(&b"\x01junk"[..])).is_err());
    }
}
