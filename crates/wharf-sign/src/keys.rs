//! `SigningKeys`: Wharf's own OpenPGP and ed25519 keys, which sign what
//! Wharf writes itself (an OSTree summary of a subset of refs, hosted
//! repositories' metadata).
//!
//! An operator may give keys in the configuration; otherwise they are
//! generated on first use into `<data-dir>/keys/` (directory 0700, files
//! 0600), written through a temporary file and a rename that never replaces
//! an existing key, so two processes starting at once end with one key: the
//! loser loads the winner's. Secret keys are stored unprotected, like the
//! server's TLS keys: the service must sign unattended, and the file modes
//! are the protection.
//!
//! File formats: the OpenPGP key is what `gpg --export-secret-keys
//! [--armor]` writes (without a passphrase); the ed25519 key is base64 of the
//! 64-byte secret key (seed followed by public key) as libostree's `ostree
//! sign --keys-file` reads it, or of the 32-byte seed alone.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use pgp::composed::{
    ArmorOptions, Deserializable, DetachedSignature, KeyType, SecretKeyParamsBuilder,
    SignedPublicKey, SignedSecretKey,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::ser::Serialize;
use pgp::types::{KeyDetails, Password};
use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::keyring::{Ed25519PublicKey, Keyring};
use crate::SignError;

/// The directory under the data directory holding generated keys.
pub const KEYS_DIR: &str = "keys";
/// The generated OpenPGP secret key (armored), in `KEYS_DIR`.
pub const OPENPGP_KEY_FILE: &str = "wharf-openpgp.asc";
/// The generated ed25519 secret key (base64 of seed and public key), in `KEYS_DIR`.
pub const ED25519_KEY_FILE: &str = "wharf-ed25519.key";

const USER_ID: &str = "Wharf signing key";

/// Which component of the OpenPGP key signs.
#[derive(Debug, Clone, Copy)]
enum Signer {
    Primary,
    Subkey(usize),
}

/// Wharf's own signing keys.
pub struct SigningKeys {
    openpgp: SignedSecretKey,
    signer: Signer,
    ed25519: Ed25519KeyPair,
    ed25519_public: Ed25519PublicKey,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret parts.
        f.debug_struct("SigningKeys")
            .field("openpgp", &self.openpgp_fingerprint())
            .field("ed25519", &self.ed25519_public.to_base64())
            .finish()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SignError + '_ {
    move |source| SignError::Io {
        path: path.to_owned(),
        source,
    }
}

fn signing(e: impl std::fmt::Display) -> SignError {
    SignError::Signing(e.to_string())
}

impl SigningKeys {
    /// Loads the configured keys, else the generated ones in
    /// `<data_dir>/keys/`, generating what is missing.
    pub fn load_or_generate(
        data_dir: &Path,
        openpgp_key_file: Option<&Path>,
        ed25519_key_file: Option<&Path>,
    ) -> Result<SigningKeys, SignError> {
        let dir = data_dir.join(KEYS_DIR);
        let need_dir = openpgp_key_file.is_none() || ed25519_key_file.is_none();
        if need_dir {
            ensure_private_dir(&dir)?;
        }
        let openpgp_bytes = match openpgp_key_file {
            Some(path) => std::fs::read(path).map_err(io(path))?,
            None => {
                let path = dir.join(OPENPGP_KEY_FILE);
                load_or_create(&path, || {
                    let key = generate_openpgp()?;
                    key.to_armored_bytes(ArmorOptions::default())
                        .map_err(signing)
                })?
            }
        };
        let openpgp_path = openpgp_key_file
            .map(Path::to_owned)
            .unwrap_or_else(|| dir.join(OPENPGP_KEY_FILE));
        let ed25519_path = ed25519_key_file
            .map(Path::to_owned)
            .unwrap_or_else(|| dir.join(ED25519_KEY_FILE));
        let ed25519_bytes = match ed25519_key_file {
            Some(path) => std::fs::read(path).map_err(io(path))?,
            None => load_or_create(&ed25519_path, || {
                let seed = random_seed()?;
                let pair = Ed25519KeyPair::from_seed_unchecked(&seed).map_err(signing)?;
                let mut secret = seed.to_vec();
                secret.extend_from_slice(pair.public_key().as_ref());
                let mut text = base64::engine::general_purpose::STANDARD.encode(&secret);
                text.push('\n');
                Ok(text.into_bytes())
            })?,
        };
        SigningKeys::from_bytes(&openpgp_bytes, &openpgp_path, &ed25519_bytes, &ed25519_path)
    }

    /// New keys in memory only (tests, and callers that store keys themselves).
    pub fn generate() -> Result<SigningKeys, SignError> {
        let openpgp = generate_openpgp()?;
        let seed = random_seed()?;
        let ed25519 = Ed25519KeyPair::from_seed_unchecked(&seed).map_err(signing)?;
        let public: [u8; 32] = ed25519.public_key().as_ref().try_into().map_err(signing)?;
        Ok(SigningKeys {
            openpgp,
            signer: Signer::Primary,
            ed25519,
            ed25519_public: Ed25519PublicKey(public),
        })
    }

    /// Keys from their files' bytes; the paths name them in errors.
    pub fn from_bytes(
        openpgp: &[u8],
        openpgp_path: &Path,
        ed25519: &[u8],
        ed25519_path: &Path,
    ) -> Result<SigningKeys, SignError> {
        let bad = |path: &Path, reason: String| SignError::BadSecretKey {
            path: path.to_owned(),
            reason,
        };
        let (key, _) = SignedSecretKey::from_reader_single(std::io::Cursor::new(openpgp.to_vec()))
            .map_err(|e| {
                bad(
                    openpgp_path,
                    format!(
                        "not an OpenPGP secret key (gpg --export-secret-keys --armor writes one): {e}"
                    ),
                )
            })?;
        let ed25519_pair =
            parse_ed25519_secret(ed25519).map_err(|reason| bad(ed25519_path, reason))?;
        let public: [u8; 32] = ed25519_pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(signing)?;
        // Find the component that makes signatures the public key verifies:
        // the primary key when it may sign, else a signing subkey. A key
        // protected by a passphrase fails here, at load, not at first use.
        let mut keys = SigningKeys {
            openpgp: key,
            signer: Signer::Primary,
            ed25519: ed25519_pair,
            ed25519_public: Ed25519PublicKey(public),
        };
        let trust = keys.openpgp_keyring();
        let probe = b"wharf signing key probe";
        let mut candidates = vec![Signer::Primary];
        candidates.extend((0..keys.openpgp.secret_subkeys.len()).map(Signer::Subkey));
        let mut last = String::from("it has no key that can sign");
        for candidate in candidates {
            keys.signer = candidate;
            match keys
                .sign_openpgp(probe)
                .and_then(|sig| trust.verify_openpgp(probe, &sig))
            {
                Ok(_) => return Ok(keys),
                Err(e) => last = e.to_string(),
            }
        }
        Err(bad(
            openpgp_path,
            format!("cannot sign with it (is it protected by a passphrase?): {last}"),
        ))
    }

    /// A detached binary OpenPGP signature over `data`.
    pub fn sign_openpgp(&self, data: &[u8]) -> Result<Vec<u8>, SignError> {
        let sig = self.detached(data)?;
        let mut out = Vec::new();
        sig.to_writer(&mut out).map_err(signing)?;
        Ok(out)
    }

    /// A detached armored OpenPGP signature over `data` (what `gpg
    /// --detach-sign --armor` writes, e.g. `repomd.xml.asc`).
    pub fn sign_openpgp_armored(&self, data: &[u8]) -> Result<String, SignError> {
        self.detached(data)?
            .to_armored_string(ArmorOptions::default())
            .map_err(signing)
    }

    fn detached(&self, data: &[u8]) -> Result<DetachedSignature, SignError> {
        let rng = rand::thread_rng();
        let pw = Password::empty();
        match self.signer {
            Signer::Primary => DetachedSignature::sign_binary_data(
                rng,
                &*self.openpgp,
                &pw,
                HashAlgorithm::Sha256,
                data,
            ),
            Signer::Subkey(i) => DetachedSignature::sign_binary_data(
                rng,
                &*self.openpgp.secret_subkeys[i],
                &pw,
                HashAlgorithm::Sha256,
                data,
            ),
        }
        .map_err(signing)
    }

    /// A 64-byte ed25519 signature over `data`.
    pub fn sign_ed25519(&self, data: &[u8]) -> [u8; 64] {
        let sig = self.ed25519.sign(data);
        let mut out = [0u8; 64];
        out.copy_from_slice(sig.as_ref());
        out
    }

    fn openpgp_public_key(&self) -> SignedPublicKey {
        self.openpgp.to_public_key()
    }

    /// The OpenPGP public key, armored (what `gpg --export --armor` writes).
    pub fn openpgp_public_armored(&self) -> Result<String, SignError> {
        self.openpgp_public_key()
            .to_armored_string(ArmorOptions::default())
            .map_err(signing)
    }

    /// The OpenPGP public key, binary (what `gpg --export` writes).
    pub fn openpgp_public_binary(&self) -> Result<Vec<u8>, SignError> {
        let mut out = Vec::new();
        self.openpgp_public_key()
            .to_writer(&mut out)
            .map_err(signing)?;
        Ok(out)
    }

    /// The OpenPGP key's fingerprint, upper-case hex.
    pub fn openpgp_fingerprint(&self) -> String {
        self.openpgp
            .fingerprint()
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect()
    }

    /// The ed25519 public key.
    pub fn ed25519_public(&self) -> Ed25519PublicKey {
        self.ed25519_public
    }

    /// A keyring trusting exactly these keys' public halves.
    pub fn keyring(&self) -> Keyring {
        let mut ring = self.openpgp_keyring();
        ring.add_ed25519_key(self.ed25519_public);
        ring
    }

    fn openpgp_keyring(&self) -> Keyring {
        let mut ring = Keyring::new();
        let mut bytes = Vec::new();
        if self.openpgp_public_key().to_writer(&mut bytes).is_ok() {
            // Our own key always parses; a failure leaves a keyring that verifies nothing.
            let _ = ring.add_openpgp(&bytes, "wharf's key");
        }
        ring
    }
}

fn random_seed() -> Result<[u8; 32], SignError> {
    let mut seed = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
        .map_err(|_| SignError::Signing("no system randomness".into()))?;
    Ok(seed)
}

fn generate_openpgp() -> Result<SignedSecretKey, SignError> {
    // Ed25519 (the v4 "legacy" EdDSA form): what GnuPG 2.2, gpgme (ostree,
    // flatpak, librepo) and rpm verify, and fast to generate.
    let params = SecretKeyParamsBuilder::default()
        .key_type(KeyType::Ed25519Legacy)
        .can_certify(true)
        .can_sign(true)
        .primary_user_id(USER_ID.into())
        .build()
        .map_err(signing)?;
    params.generate(rand::thread_rng()).map_err(signing)
}

fn parse_ed25519_secret(bytes: &[u8]) -> Result<Ed25519KeyPair, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not base64 text".to_string())?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or("holds no ed25519 key (base64 of the 64-byte secret key, as ostree sign takes)")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(line)
        .map_err(|_| "not base64 of an ed25519 secret key".to_string())?;
    match raw.len() {
        64 => Ed25519KeyPair::from_seed_and_public_key(&raw[..32], &raw[32..])
            .map_err(|_| "its public half does not belong to its seed".to_string()),
        32 => Ed25519KeyPair::from_seed_unchecked(&raw).map_err(|e| e.to_string()),
        n => Err(format!(
            "an ed25519 secret key is 64 bytes (seed and public key) or a 32-byte seed, not {n}"
        )),
    }
}

/// Creates `dir` (and parents) and makes it owner-only.
fn ensure_private_dir(dir: &Path) -> Result<(), SignError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    set_mode(dir, 0o700)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<(), SignError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> Result<(), SignError> {
    Ok(())
}

/// The bytes of `path`, creating it from `make` first when it is missing.
fn load_or_create(
    path: &Path,
    make: impl FnOnce() -> Result<Vec<u8>, SignError>,
) -> Result<Vec<u8>, SignError> {
    match std::fs::read(path) {
        Ok(bytes) => return Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(path)(e)),
    }
    let bytes = make()?;
    let dir: PathBuf = path
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."));
    // tempfile creates its files 0600; the mode is set again to be explicit.
    let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(io(&dir))?;
    set_mode(tmp.path(), 0o600)?;
    tmp.write_all(&bytes).map_err(io(path))?;
    tmp.as_file().sync_all().map_err(io(path))?;
    match tmp.persist_noclobber(path) {
        Ok(_) => {}
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
            // Another process generated it first: its key is the key.
            return std::fs::read(path).map_err(io(path));
        }
        Err(e) => return Err(io(path)(e.error)),
    }
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests;
