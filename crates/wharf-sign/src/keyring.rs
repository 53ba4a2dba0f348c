//! `Keyring`: the public keys an operator trusts, and verification of
//! detached signatures against them.
//!
//! OpenPGP keys come as `gpg --export [--armor]` writes them (several per
//! file). A key is usable only through components whose self-signatures
//! verify: the primary key itself, and subkeys with a valid binding
//! signature (and, for a signing subkey, a valid back-signature). Anything
//! else in a key file could have been attached by anyone, so it is ignored.
//! ed25519 keys come as libostree's `--keys-file` takes them: base64 of the
//! 32 public bytes, one per line.

use std::path::Path;

use base64::Engine;
use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
use pgp::packet::{Signature, SignatureType};
use pgp::types::{KeyDetails, Tag};

use crate::SignError;

/// Who made a signature that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The fingerprint of the trusted (primary) key, upper-case hex.
    pub fingerprint: String,
    /// The id of the key or subkey that signed, upper-case hex.
    pub key_id: String,
    /// The key's first user id, when it has one.
    pub user_id: Option<String>,
}

/// An ed25519 public key (32 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ed25519PublicKey(pub [u8; 32]);

impl Ed25519PublicKey {
    /// base64 of the 32 bytes, as libostree's key files hold it.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }
}

/// One key or subkey that can check signatures.
#[derive(Debug)]
struct Component {
    /// Index of its certificate in `Keyring::certs`.
    cert: usize,
    /// `None`: the primary key; else the subkey's index.
    subkey: Option<usize>,
    key_id: [u8; 8],
    fingerprint: Vec<u8>,
    /// Unix seconds after which it is expired, if it expires.
    expires: Option<u64>,
    revoked: bool,
}

/// Trusted public keys, OpenPGP and ed25519.
#[derive(Debug, Default)]
pub struct Keyring {
    certs: Vec<SignedPublicKey>,
    components: Vec<Component>,
    ed25519: Vec<Ed25519PublicKey>,
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn key_id_bytes(id: &pgp::types::KeyId) -> [u8; 8] {
    let bytes: &[u8] = id.as_ref();
    bytes.try_into().unwrap_or([0; 8])
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn read(path: &Path) -> Result<Vec<u8>, SignError> {
    std::fs::read(path).map_err(|source| SignError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The expiry a (self-)signature gives the key created at `created`.
fn expiry(created: u32, sig: &Signature) -> Option<u64> {
    let d: std::time::Duration = sig.key_expiration_time()?.into();
    (d.as_secs() > 0).then(|| u64::from(created) + d.as_secs())
}

impl Keyring {
    /// An empty keyring (trusts nothing).
    pub fn new() -> Keyring {
        Keyring::default()
    }

    /// Whether it holds no key at all.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty() && self.ed25519.is_empty()
    }

    /// Whether it holds an OpenPGP key.
    pub fn has_openpgp(&self) -> bool {
        !self.certs.is_empty()
    }

    /// Whether it holds an ed25519 key.
    pub fn has_ed25519(&self) -> bool {
        !self.ed25519.is_empty()
    }

    /// The fingerprints of the OpenPGP keys, upper-case hex.
    pub fn openpgp_fingerprints(&self) -> Vec<String> {
        self.certs
            .iter()
            .map(|c| hex_upper(c.fingerprint().as_bytes()))
            .collect()
    }

    /// Adds the OpenPGP public keys in `bytes` (armored or binary, one or
    /// more); `what` names the source in errors. Returns how many were added.
    pub fn add_openpgp(&mut self, bytes: &[u8], what: &str) -> Result<usize, SignError> {
        let bad = |reason: String| SignError::BadPublicKey {
            what: what.to_owned(),
            reason,
        };
        let (keys, _) = SignedPublicKey::from_reader_many(std::io::Cursor::new(bytes.to_vec()))
            .map_err(|e| bad(e.to_string()))?;
        let mut added = 0;
        for key in keys {
            let key = key.map_err(|e| bad(e.to_string()))?;
            self.add_cert(key);
            added += 1;
        }
        if added == 0 {
            return Err(SignError::NoPublicKey {
                what: what.to_owned(),
            });
        }
        Ok(added)
    }

    /// Adds the OpenPGP public keys of a file (`gpg --export [--armor]`).
    pub fn add_openpgp_file(&mut self, path: &Path) -> Result<usize, SignError> {
        let bytes = read(path)?;
        self.add_openpgp(&bytes, &path.display().to_string())
    }

    fn add_cert(&mut self, cert: SignedPublicKey) {
        let index = self.certs.len();
        let primary = &cert.primary_key;
        let created = primary.created_at().as_secs();
        let revoked = cert
            .details
            .revocation_signatures
            .iter()
            .any(|s| s.verify_key(primary).is_ok());
        // The newest verified self-signature decides the primary key's expiry.
        let mut newest: Option<&Signature> = None;
        let self_sigs = cert
            .details
            .users
            .iter()
            .flat_map(|u| {
                u.signatures
                    .iter()
                    .filter(move |s| s.verify_certification(primary, Tag::UserId, &u.id).is_ok())
            })
            .chain(
                cert.details
                    .direct_signatures
                    .iter()
                    .filter(|s| s.verify_key(primary).is_ok()),
            );
        for s in self_sigs {
            if newest.is_none_or(|n| s.created() > n.created()) {
                newest = Some(s);
            }
        }
        let primary_expires = newest.and_then(|s| expiry(created, s));
        self.components.push(Component {
            cert: index,
            subkey: None,
            key_id: key_id_bytes(&primary.legacy_key_id()),
            fingerprint: primary.fingerprint().as_bytes().to_vec(),
            expires: primary_expires,
            revoked,
        });
        for (i, sub) in cert.public_subkeys.iter().enumerate() {
            let bound = sub.signatures.iter().filter(|s| {
                s.typ() == Some(SignatureType::SubkeyBinding)
                    && s.verify_subkey_binding(primary, &sub.key).is_ok()
                    && (!s.key_flags().sign()
                        || s.embedded_signature().is_some_and(|back| {
                            back.verify_primary_key_binding(&sub.key, primary).is_ok()
                        }))
            });
            let Some(binding) = bound.max_by_key(|s| s.created()) else {
                continue;
            };
            let sub_revoked = sub.signatures.iter().any(|s| {
                s.typ() == Some(SignatureType::SubkeyRevocation)
                    && s.verify_subkey_binding(primary, &sub.key).is_ok()
            });
            let sub_expires = expiry(sub.key.created_at().as_secs(), binding);
            self.components.push(Component {
                cert: index,
                subkey: Some(i),
                key_id: key_id_bytes(&sub.key.legacy_key_id()),
                fingerprint: sub.key.fingerprint().as_bytes().to_vec(),
                expires: [primary_expires, sub_expires].into_iter().flatten().min(),
                revoked: revoked || sub_revoked,
            });
        }
        self.certs.push(cert);
    }

    /// Adds ed25519 public keys: base64 of 32 bytes per line (blank lines
    /// and `#` comments skipped). Returns how many were added.
    pub fn add_ed25519(&mut self, text: &str, what: &str) -> Result<usize, SignError> {
        let mut added = 0;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || SignError::BadEd25519Key {
                what: what.to_owned(),
                line: n + 1,
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(line)
                .map_err(|_| bad())?;
            let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| bad())?;
            self.ed25519.push(Ed25519PublicKey(key));
            added += 1;
        }
        if added == 0 {
            return Err(SignError::BadEd25519Key {
                what: what.to_owned(),
                line: 0,
            });
        }
        Ok(added)
    }

    /// Adds the ed25519 public keys of a file.
    pub fn add_ed25519_file(&mut self, path: &Path) -> Result<usize, SignError> {
        let bytes = read(path)?;
        let text = String::from_utf8(bytes).map_err(|_| SignError::BadEd25519Key {
            what: path.display().to_string(),
            line: 0,
        })?;
        self.add_ed25519(&text, &path.display().to_string())
    }

    /// Adds one ed25519 public key.
    pub fn add_ed25519_key(&mut self, key: Ed25519PublicKey) {
        self.ed25519.push(key);
    }

    /// Verifies a detached OpenPGP signature (binary or armored; it may hold
    /// several signature packets, one verifying by a trusted key is enough)
    /// over `data`.
    pub fn verify_openpgp(&self, data: &[u8], signature: &[u8]) -> Result<Verified, SignError> {
        if signature.iter().all(u8::is_ascii_whitespace) {
            return Err(SignError::NoSignature);
        }
        let (sigs, _) =
            DetachedSignature::from_reader_many(std::io::Cursor::new(signature.to_vec()))
                .map_err(|e| SignError::MalformedSignature(e.to_string()))?;
        let mut first_error = None;
        let mut any = false;
        for sig in sigs {
            let sig = sig.map_err(|e| SignError::MalformedSignature(e.to_string()))?;
            any = true;
            match self.verify_one(data, &sig.signature) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if !any {
            return Err(SignError::NoSignature);
        }
        Err(first_error.unwrap_or(SignError::NoSignature))
    }

    fn verify_one(&self, data: &[u8], sig: &Signature) -> Result<Verified, SignError> {
        let issuer_ids: Vec<[u8; 8]> = sig
            .issuer_key_id()
            .into_iter()
            .filter_map(|k| {
                let bytes: &[u8] = k.as_ref();
                bytes.try_into().ok()
            })
            .collect();
        let issuer_fps: Vec<&[u8]> = sig
            .issuer_fingerprint()
            .into_iter()
            .map(|f| f.as_bytes())
            .collect();
        let named = hex_upper(
            issuer_ids
                .first()
                .map(|k| &k[..])
                .or(issuer_fps.first().copied())
                .unwrap_or_default(),
        );
        if !matches!(sig.typ(), Some(SignatureType::Binary | SignatureType::Text)) {
            return Err(SignError::MalformedSignature(format!(
                "a {:?} signature is not a signature over data",
                sig.typ()
            )));
        }
        let anonymous = issuer_ids.is_empty() && issuer_fps.is_empty();
        let candidates = self.components.iter().filter(|c| {
            anonymous
                || issuer_ids.contains(&c.key_id)
                || issuer_fps.contains(&c.fingerprint.as_slice())
        });
        let mut result = Err(SignError::UnknownKey {
            key_id: if named.is_empty() {
                "(unnamed)".into()
            } else {
                named.clone()
            },
        });
        for c in candidates {
            let cert = &self.certs[c.cert];
            let ok = match c.subkey {
                None => sig.verify(&cert.primary_key, data).is_ok(),
                Some(i) => sig.verify(&cert.public_subkeys[i].key, data).is_ok(),
            };
            let key_id = hex_upper(&c.key_id);
            if !ok {
                result = Err(SignError::BadSignature { key_id });
                continue;
            }
            if c.revoked {
                return Err(SignError::RevokedKey { key_id });
            }
            if c.expires.is_some_and(|t| t <= now()) {
                return Err(SignError::ExpiredKey { key_id });
            }
            return Ok(Verified {
                fingerprint: hex_upper(cert.fingerprint().as_bytes()),
                key_id,
                user_id: cert
                    .details
                    .users
                    .first()
                    .map(|u| String::from_utf8_lossy(u.id.id()).into_owned()),
            });
        }
        result
    }

    /// Verifies a 64-byte ed25519 signature over `data` against the trusted
    /// ed25519 keys; returns the key that verified it.
    pub fn verify_ed25519(
        &self,
        data: &[u8],
        signature: &[u8],
    ) -> Result<Ed25519PublicKey, SignError> {
        if signature.len() != crate::ED25519_SIGNATURE_LEN {
            return Err(SignError::Ed25519Length(signature.len()));
        }
        self.ed25519
            .iter()
            .find(|k| {
                ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &k.0)
                    .verify(data, signature)
                    .is_ok()
            })
            .copied()
            .ok_or(SignError::Ed25519NoMatch)
    }
}
