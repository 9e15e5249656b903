//! Password hashing: argon2id in PHC string format (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`).
//!
//! Warren never stores or logs a password: the store keeps the PHC string, which carries its
//! own algorithm, parameters and salt, so hashes made with other parameters later still
//! verify. Hashing and verifying are deliberately slow (argon2's defaults: 19 MiB, 2 passes);
//! the broker runs them on a few dedicated threads, one per core, so a storm of logins cannot
//! stall the broker.

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

/// The size from which glibc always gives an allocation its own mapping, returned to the
/// system when freed: above its largest mmap threshold (32 MiB on 64-bit). Below that,
/// the threshold rises to the size of each mapped block freed, so after the first login
/// every later one took argon2's 19 MiB from a heap arena, and the password-hashing
/// threads' arenas kept those pages resident: 19 to 38 MiB held for nothing (S6, S7 in
/// docs/BENCHMARKS.md). Reserving this much (only the blocks argon2 uses are touched, so
/// only they become resident) keeps its memory out of the arenas; other allocators are
/// unaffected by the extra reservation.
const ALWAYS_MAPPED_BYTES: usize = 33 << 20;

/// Whether `password` matches the PHC string `phc`. The comparison is constant-time; an
/// unreadable PHC string matches nothing.
///
/// argon2's working memory (19 MiB at the default parameters) is allocated for the
/// verification and given back to the system after it: see `ALWAYS_MAPPED_BYTES`.
pub fn verify_password(phc: &str, password: &[u8]) -> bool {
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
    let needed = argon2.params().block_count();
    let mut blocks: Vec<Block> =
        Vec::with_capacity(needed.max(ALWAYS_MAPPED_BYTES / std::mem::size_of::<Block>()));
    blocks.resize(needed, Block::default());
    let hashed = argon2
        .hash_password_into_with_memory(password, salt, &mut out, &mut blocks[..])
        .is_ok();
    drop(blocks);
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
