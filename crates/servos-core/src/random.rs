//! Random tokens and their hashes: setup tokens, API tokens, webhook secrets, ids.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::Secret;

/// Fills `buf` from the operating system's CSPRNG. Failure means the OS cannot give
/// randomness, which no caller can work around, so it is reported, not hidden.
pub fn fill(buf: &mut [u8]) -> Result<(), getrandom::Error> {
    getrandom::fill(buf)
}

/// A random token of 32 bytes, URL-safe base64 without padding, with a readable prefix
/// (`servos_` for API tokens, `setup_` for the setup token) so leaked tokens are greppable.
pub fn token(prefix: &str) -> Result<Secret<String>, getrandom::Error> {
    let mut raw = [0u8; 32];
    fill(&mut raw)?;
    let out = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(raw));
    zeroize::Zeroize::zeroize(&mut raw);
    Ok(Secret::new(out))
}

/// SHA-256 of a high-entropy token, hex. Tokens carry 256 random bits, so a fast hash is
/// enough to store them (no Argon2 per request), and a database leak reveals no token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares two byte strings in constant time (for equal lengths).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_prefixed_and_long() {
        let a = token("servos_").unwrap();
        let b = token("servos_").unwrap();
        assert!(a.expose().starts_with("servos_"));
        assert_eq!(a.expose().len(), "servos_".len() + 43);
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn token_hash_is_sha256_hex() {
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn ct_eq_compares() {
        assert!(ct_eq(b"same", b"same"));
        assert!(!ct_eq(b"same", b"samf"));
        assert!(!ct_eq(b"same", b"sam"));
    }
}
