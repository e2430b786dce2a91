//! Webhook authenticity checks, in constant time: HMAC-SHA256 signatures (GitHub,
//! Gitea/Forgejo) and shared tokens (GitLab). Pure functions, no IO.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// Whether `signature_hex` (lower- or upper-case hex, no prefix) is the HMAC-SHA256 of
/// `body` under `secret`. Malformed hex is simply a mismatch. The MAC comparison is
/// constant time (`Mac::verify_slice`).
pub fn hmac_sha256_matches(secret: &[u8], body: &[u8], signature_hex: &str) -> bool {
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return false,
    };
    mac.update(body);
    // Decode after computing the MAC, so a malformed header costs the same as a wrong one.
    let Ok(given) = hex::decode(signature_hex.trim()) else {
        return false;
    };
    mac.verify_slice(&given).is_ok()
}

/// Whether `given` equals `secret`. Both are hashed first so that the comparison covers
/// equal-length values and takes the same time whatever the length or position of a
/// difference.
pub fn token_matches(secret: &[u8], given: &[u8]) -> bool {
    let a = Sha256::digest(secret);
    let b = Sha256::digest(given);
    crate::random::ct_eq(&a, &b)
}

/// HMAC-SHA256 of `body` under `secret`, lower-case hex (what a forge sends; used by
/// tests and the benchmark to sign deliveries).
pub fn hmac_sha256_hex(secret: &[u8], body: &[u8]) -> String {
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's published example ("Validating webhook deliveries").
    const SECRET: &[u8] = b"It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const SIGNATURE: &str = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn github_published_example_verifies() {
        assert!(hmac_sha256_matches(SECRET, BODY, SIGNATURE));
        assert!(hmac_sha256_matches(SECRET, BODY, &SIGNATURE.to_uppercase()));
        assert_eq!(hmac_sha256_hex(SECRET, BODY), SIGNATURE);
    }

    #[test]
    fn any_change_breaks_the_signature() {
        assert!(!hmac_sha256_matches(b"It's a Secret to Everybody!", BODY, SIGNATURE));
        assert!(!hmac_sha256_matches(SECRET, b"Hello, World?", SIGNATURE));
        let mut flipped = SIGNATURE.to_owned();
        flipped.replace_range(63.., "f");
        assert!(!hmac_sha256_matches(SECRET, BODY, &flipped));
        assert!(!hmac_sha256_matches(SECRET, BODY, &SIGNATURE[..62]), "truncated");
        assert!(!hmac_sha256_matches(SECRET, BODY, ""), "empty");
        assert!(!hmac_sha256_matches(SECRET, BODY, "zz"), "not hex");
        assert!(!hmac_sha256_matches(SECRET, BODY, &format!("sha256={SIGNATURE}")), "prefix is the caller's to strip");
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(token_matches(b"whsec_abc", b"whsec_abc"));
        assert!(!token_matches(b"whsec_abc", b"whsec_abd"));
        assert!(!token_matches(b"whsec_abc", b"whsec_ab"));
        assert!(!token_matches(b"whsec_abc", b""));
    }
}
