//! Password hashes, random secrets and constant-time comparison.
//!
//! New passwords are hashed with argon2id (PHC string format, parameters in
//! the string, so they can be raised later without invalidating old hashes).
//! bcrypt hashes (`$2y$`, `$2b$`, `$2a$`) are verified too, because users
//! imported from htpasswd files keep their passwords.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::AuthError;

/// Longest password accepted; longer input is refused before hashing so that
/// a huge `Authorization` header cannot buy a huge hashing cost.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Hashes a new password with argon2id.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AuthError::Hashing("password too long".into()));
    }
    let mut salt = [0u8; 16];
    fill_random(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Hashing(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hashing(e.to_string()))
}

/// Checks a password against a stored argon2id or bcrypt hash. Unknown hash
/// formats never match.
pub fn verify_password(password: &str, stored: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    if stored.starts_with("$2y$") || stored.starts_with("$2b$") || stored.starts_with("$2a$") {
        return bcrypt::verify(password, stored).unwrap_or(false);
    }
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Fills `buf` from the operating system's random source.
pub fn fill_random(buf: &mut [u8]) -> Result<(), AuthError> {
    getrandom::fill(buf).map_err(|e| AuthError::Random(e.to_string()))
}

/// A random secret of `bytes` bytes, hex-encoded.
pub fn random_hex(bytes: usize) -> Result<String, AuthError> {
    let mut buf = vec![0u8; bytes];
    fill_random(&mut buf)?;
    Ok(hex::encode(buf))
}

/// SHA-256 of an API token secret, as stored. Token secrets are 256-bit random
/// values, so a fast hash is enough; passwords use argon2id instead.
pub fn token_digest(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// Compares two secrets in time independent of where they differ.
/// Every secret comparison in Wharf goes through this function.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_round_trip() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("x", "not a hash"));
        assert!(!verify_password(&"a".repeat(MAX_PASSWORD_BYTES + 1), &h));
    }

    #[test]
    fn bcrypt_from_htpasswd() {
        // Produced by `htpasswd -nbB alice secret` style tools (cost 5 for speed).
        let h = bcrypt::hash("secret", 5)
            .unwrap()
            .replacen("$2b$", "$2y$", 1);
        assert!(verify_password("secret", &h));
        assert!(!verify_password("Secret", &h));
    }

    #[test]
    fn constant_time() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert_eq!(random_hex(16).unwrap().len(), 32);
    }
}
