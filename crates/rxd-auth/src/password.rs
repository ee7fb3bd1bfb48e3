//! The trust password and token secrets. The password is stored only as an Argon2id PHC string
//! with its own salt; token secrets only as SHA-256. Comparisons are constant time.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

#[derive(Debug, Error)]
#[error("hashing the trust password: {0}")]
pub struct HashError(String);

/// Hash a new trust password (Argon2id, default parameters, random salt).
pub fn hash_password(password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// True when `password` matches the stored hash. An unparsable hash matches nothing.
pub fn verify_password(password: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        // The argon2 crate compares the derived hash in constant time.
        Ok(hash) => Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok(),
        Err(_) => false,
    }
}

/// A new token secret: 32 random bytes as 64 lowercase hex characters, as LXD makes them.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::Rng::fill(&mut rand::thread_rng(), &mut bytes[..]);
    hex::encode(bytes)
}

pub fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Constant-time equality of two secrets' hashes.
pub fn same_secret(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_round_trip() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(!h.contains("correct horse"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct hors", &h));
        assert!(!verify_password("", &h));
        assert!(!verify_password("correct horse", "not a hash"));
        assert_ne!(hash_password("correct horse").unwrap(), h, "salts differ");
    }

    #[test]
    fn secrets() {
        let s = new_secret();
        assert_eq!(s.len(), 64);
        assert!(same_secret(&secret_hash(&s), &secret_hash(&s)));
        assert!(!same_secret(&secret_hash(&s), &secret_hash("other")));
    }
}
