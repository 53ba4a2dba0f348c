//! Round trips, tampering, untrusted keys, key files' modes, and
//! interoperation with GnuPG in both directions.

use std::path::Path;
use std::process::Command;

use super::*;
use crate::{Keyring, SignError};

#[test]
fn openpgp_round_trip_binary_and_armored() {
    let keys = SigningKeys::generate().unwrap();
    let trust = keys.keyring();
    let data = b"summary bytes";
    let binary = keys.sign_openpgp(data).unwrap();
    let armored = keys.sign_openpgp_armored(data).unwrap();
    assert!(armored.starts_with("-----BEGIN PGP SIGNATURE-----"));
    for sig in [binary.clone(), armored.into_bytes()] {
        let v = trust.verify_openpgp(data, &sig).unwrap();
        assert_eq!(v.fingerprint, keys.openpgp_fingerprint());
        assert_eq!(v.user_id.as_deref(), Some("Wharf signing key"));
    }
    // A flipped bit in the data, or in the signature, fails.
    let mut tampered = data.to_vec();
    tampered[0] ^= 1;
    assert!(matches!(
        trust.verify_openpgp(&tampered, &binary),
        Err(SignError::BadSignature { .. })
    ));
    let mut bad_sig = binary.clone();
    let last = bad_sig.len() - 3;
    bad_sig[last] ^= 0x40;
    assert!(trust.verify_openpgp(data, &bad_sig).is_err());
    assert!(matches!(
        trust.verify_openpgp(data, b""),
        Err(SignError::NoSignature)
    ));
    assert!(trust.verify_openpgp(data, b"\x01\x02garbage").is_err());
}

#[test]
fn an_untrusted_key_is_refused() {
    let signer = SigningKeys::generate().unwrap();
    let other = SigningKeys::generate().unwrap();
    let sig = signer.sign_openpgp(b"x").unwrap();
    let err = other.keyring().verify_openpgp(b"x", &sig).unwrap_err();
    assert!(matches!(err, SignError::UnknownKey { .. }), "{err}");
    assert!(Keyring::new().verify_openpgp(b"x", &sig).is_err());
    let ed = signer.sign_ed25519(b"x");
    assert!(matches!(
        other.keyring().verify_ed25519(b"x", &ed),
        Err(SignError::Ed25519NoMatch)
    ));
}

#[test]
fn ed25519_round_trip() {
    let keys = SigningKeys::generate().unwrap();
    let mut trust = Keyring::new();
    trust
        .add_ed25519(
            &format!("# wharf\n\n{}\n", keys.ed25519_public().to_base64()),
            "k",
        )
        .unwrap();
    let sig = keys.sign_ed25519(b"commit");
    assert_eq!(
        trust.verify_ed25519(b"commit", &sig).unwrap(),
        keys.ed25519_public()
    );
    let mut flipped = sig;
    flipped[10] ^= 1;
    assert!(trust.verify_ed25519(b"commit", &flipped).is_err());
    assert!(trust.verify_ed25519(b"commiT", &sig).is_err());
    assert!(matches!(
        trust.verify_ed25519(b"commit", &sig[..63]),
        Err(SignError::Ed25519Length(63))
    ));
    assert!(matches!(
        trust.add_ed25519("AAAA\n", "bad.pub"),
        Err(SignError::BadEd25519Key { line: 1, .. })
    ));
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
#[test]
fn generated_keys_are_private_and_stable() {
    let dir = tempfile::tempdir().unwrap();
    let first = SigningKeys::load_or_generate(dir.path(), None, None).unwrap();
    let keys_dir = dir.path().join(KEYS_DIR);
    assert_eq!(mode(&keys_dir), 0o700);
    assert_eq!(mode(&keys_dir.join(OPENPGP_KEY_FILE)), 0o600);
    assert_eq!(mode(&keys_dir.join(ED25519_KEY_FILE)), 0o600);
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(&keys_dir).unwrap().count(), 2);
    let second = SigningKeys::load_or_generate(dir.path(), None, None).unwrap();
    assert_eq!(first.openpgp_fingerprint(), second.openpgp_fingerprint());
    assert_eq!(first.ed25519_public(), second.ed25519_public());
    // The stored ed25519 key is libostree's 64-byte form.
    let text = std::fs::read_to_string(keys_dir.join(ED25519_KEY_FILE)).unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .unwrap();
    assert_eq!(&raw[32..], &first.ed25519_public().0);
}

#[test]
fn configured_keys_are_used_and_bad_ones_refused() {
    let dir = tempfile::tempdir().unwrap();
    let made = SigningKeys::load_or_generate(dir.path(), None, None).unwrap();
    let pgp = dir.path().join(KEYS_DIR).join(OPENPGP_KEY_FILE);
    let ed = dir.path().join(KEYS_DIR).join(ED25519_KEY_FILE);
    let other = tempfile::tempdir().unwrap();
    let loaded = SigningKeys::load_or_generate(other.path(), Some(&pgp), Some(&ed)).unwrap();
    assert_eq!(loaded.openpgp_fingerprint(), made.openpgp_fingerprint());
    assert!(!other.path().join(KEYS_DIR).exists(), "nothing generated");
    let junk = other.path().join("junk");
    std::fs::write(&junk, "not a key").unwrap();
    let err = SigningKeys::load_or_generate(other.path(), Some(&junk), Some(&ed)).unwrap_err();
    assert!(err.to_string().contains("junk"), "{err}");
    let err = SigningKeys::load_or_generate(other.path(), Some(&pgp), Some(&junk)).unwrap_err();
    assert!(matches!(err, SignError::BadSecretKey { .. }), "{err}");
    let missing = other.path().join("missing");
    assert!(matches!(
        SigningKeys::load_or_generate(other.path(), Some(&missing), Some(&ed)),
        Err(SignError::Io { .. })
    ));
}

fn gpg(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new("gpg")
        .arg("--homedir")
        .arg(home)
        .args([
            "--batch",
            "--yes",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ])
        .args(args)
        .output()
        .expect("gpg is installed (Debian package gnupg)")
}

fn ok(out: std::process::Output) -> std::process::Output {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A GnuPG RSA key's signatures verify here, a GnuPG key file with two keys
/// loads both, and GnuPG verifies Wharf's signatures with Wharf's exported key.
#[test]
fn interoperates_with_gnupg() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    for name in ["one", "two"] {
        ok(gpg(
            h,
            &[
                "--quick-gen-key",
                &format!("{name} <{name}@example.com>"),
                "rsa2048",
                "sign",
                "never",
            ],
        ));
    }
    let data = h.join("data");
    std::fs::write(&data, b"repomd").unwrap();
    ok(gpg(
        h,
        &[
            "--local-user",
            "two@example.com",
            "--detach-sign",
            "--armor",
            data.to_str().unwrap(),
        ],
    ));
    let sig = std::fs::read(h.join("data.asc")).unwrap();
    let exported = ok(gpg(h, &["--export", "--armor"])).stdout;
    let mut trust = Keyring::new();
    assert_eq!(trust.add_openpgp(&exported, "exported").unwrap(), 2);
    let v = trust.verify_openpgp(b"repomd", &sig).unwrap();
    assert_eq!(v.user_id.as_deref(), Some("two <two@example.com>"));
    assert!(trust.verify_openpgp(b"repomD", &sig).is_err());
    let mut only_one = Keyring::new();
    let one = ok(gpg(h, &["--export", "one@example.com"])).stdout;
    assert_eq!(only_one.add_openpgp(&one, "one").unwrap(), 1);
    assert!(matches!(
        only_one.verify_openpgp(b"repomd", &sig),
        Err(SignError::UnknownKey { .. })
    ));

    // The other way: GnuPG verifies what Wharf signs.
    let keys = SigningKeys::generate().unwrap();
    let public = h.join("wharf.asc");
    std::fs::write(&public, keys.openpgp_public_armored().unwrap()).unwrap();
    ok(gpg(h, &["--import", public.to_str().unwrap()]));
    let ours = h.join("ours");
    std::fs::write(&ours, b"summary").unwrap();
    std::fs::write(h.join("ours.sig"), keys.sign_openpgp(b"summary").unwrap()).unwrap();
    std::fs::write(
        h.join("ours.asc"),
        keys.sign_openpgp_armored(b"summary").unwrap(),
    )
    .unwrap();
    for sig in ["ours.sig", "ours.asc"] {
        ok(gpg(
            h,
            &[
                "--verify",
                h.join(sig).to_str().unwrap(),
                ours.to_str().unwrap(),
            ],
        ));
    }
}

#[test]
fn an_expired_key_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    // Made in the past (a faked clock) with a one-day expiry, so expired now.
    ok(gpg(
        h,
        &[
            "--faked-system-time",
            "20200101T000000!",
            "--quick-gen-key",
            "old <old@example.com>",
            "ed25519",
            "sign",
            "1d",
        ],
    ));
    let data = h.join("data");
    std::fs::write(&data, b"x").unwrap();
    ok(gpg(
        h,
        &[
            "--faked-system-time",
            "20200101T010000!",
            "--detach-sign",
            data.to_str().unwrap(),
        ],
    ));
    let mut trust = Keyring::new();
    trust
        .add_openpgp(&ok(gpg(h, &["--export"])).stdout, "old")
        .unwrap();
    let err = trust
        .verify_openpgp(b"x", &std::fs::read(h.join("data.sig")).unwrap())
        .unwrap_err();
    assert!(matches!(err, SignError::ExpiredKey { .. }), "{err}");
}
