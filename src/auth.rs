//! Password hashing: argon2id in PHC string format (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`).
//!
//! Warren never stores or logs a password: the store keeps the PHC string, which carries its
//! own algorithm, parameters and salt, so hashes made with other parameters later still
//! verify. Hashing and verifying are deliberately slow (argon2's defaults: 19 MiB, 2 passes);
//! callers run them on a blocking thread ([`tokio::task::spawn_blocking`]) and the broker
//! bounds how many run at once, so a storm of logins cannot stall the broker.

use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use thiserror::Error;

/// The built-in user of a fresh data directory (password `guest`), allowed in only from
/// loopback addresses, as RabbitMQ's `loopback_users`.
pub const GUEST: &str = "guest";

/// The tag that allows every admin command (users, virtual hosts, permissions, definitions).
pub const ADMINISTRATOR: &str = "administrator";

/// The tag that allows reading listings and status.
pub const MONITORING: &str = "monitoring";

/// A password could not be hashed.
#[derive(Debug, Clone, Error)]
#[error("hashing a password: {0}")]
pub struct HashError(String);

/// Hashes `password` with argon2id and a fresh random salt; returns the PHC string.
///
/// # Errors
/// The system's random source or argon2 failed.
pub fn hash_password(password: &[u8]) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Whether `password` matches the PHC string `phc`. The comparison is constant-time; an
/// unreadable PHC string matches nothing.
pub fn verify_password(phc: &str, password: &[u8]) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default().verify_password(password, &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Whether `phc` is a PHC string this build can verify against.
pub fn is_phc(phc: &str) -> bool {
    PasswordHash::new(phc).is_ok()
}

/// Spends the time of one verification without a user to verify against, so that an
/// unknown user and a wrong password take equally long.
pub fn verify_nothing(password: &[u8]) {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    if let Some(phc) = DUMMY.get_or_init(|| hash_password(b"warren-no-such-user").ok()) {
        let _ = verify_password(phc, password);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let phc = hash_password(b"s3cret").expect("hash");
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(!phc.contains("s3cret"));
        assert!(verify_password(&phc, b"s3cret"));
        assert!(!verify_password(&phc, b"s3cret "));
        assert!(!verify_password("not a hash", b"s3cret"));
        // A fresh salt each time.
        assert_ne!(phc, hash_password(b"s3cret").expect("hash"));
    }
}
