//! Password hashing: argon2id in PHC string format (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`).
//!
//! Warren never stores or logs a password: the store keeps the PHC string, which carries its
//! own algorithm, parameters and salt, so hashes made with other parameters later still
//! verify. Hashing and verifying are deliberately slow (argon2's defaults: 19 MiB, 2 passes);
//! the broker runs them on a few dedicated threads, one per core, so a storm of logins cannot
//! stall the broker.

use std::cell::RefCell;
use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, PasswordHash, PasswordHasher, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
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
///
/// argon2's working memory (19 MiB at the default parameters) is kept per thread and reused:
/// allocating it for every login made each one leave about 19 MiB more resident memory behind
/// (the allocator kept the freed blocks without reusing them), some 200 MiB after a burst of
/// logins. The password-hashing threads are few and long-lived, so this bounds it.
pub fn verify_password(phc: &str, password: &[u8]) -> bool {
    thread_local! {
        static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
    }
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        Algorithm::try_from(parsed.algorithm),
        Params::try_from(&parsed),
    ) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let mut salt_bytes = [0u8; Salt::MAX_LENGTH];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let argon2 = Argon2::new(algorithm, version, params);
    let mut out = vec![0u8; expected.len()];
    let hashed = BLOCKS.with(|blocks| {
        let mut blocks = blocks.borrow_mut();
        let needed = argon2.params().block_count();
        if blocks.len() < needed {
            blocks.resize(needed, Block::default());
        }
        argon2
            .hash_password_into_with_memory(password, salt, &mut out, &mut blocks[..needed])
            .is_ok()
    });
    // `Output`'s equality is constant-time.
    hashed && Output::new(&out).is_ok_and(|out| out == expected)
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
