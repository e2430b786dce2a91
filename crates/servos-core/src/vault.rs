//! The vault: AES-256-GCM encryption of every secret at rest, keyed by the master key.
//!
//! Stored format, as the specification fixes it: `Base64(nonce[12] || ciphertext)`, with a
//! fresh random nonce for every encryption. Each value is bound by associated data to the
//! place it lives in (table, column, row id), so a ciphertext copied to another row or
//! column does not decrypt.

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::Secret;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Environment variable that carries the master key; named in every key error.
pub const MASTER_KEY_VAR: &str = "SERVOS_MASTER_KEY";

/// Why a master key was refused. Messages name no key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("is empty")]
    Empty,
    #[error("is not valid base64 ({0})")]
    NotBase64(String),
    #[error("decodes to {0} bytes, expected exactly 32")]
    WrongLength(usize),
    #[error("cannot get randomness from the operating system ({0})")]
    Random(String),
}

/// Why a stored value could not be decrypted.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("stored value for {0} is not valid base64")]
    Encoding(String),
    #[error("stored value for {0} is too short to be a ciphertext")]
    Truncated(String),
    #[error(
        "cannot decrypt {0}: wrong master key, or the value was altered or moved from another row"
    )]
    Decrypt(String),
    #[error("decrypted value for {0} is not UTF-8")]
    Utf8(String),
    #[error("cannot get randomness from the operating system ({0})")]
    Random(String),
}

/// The 32-byte master key. Never stored by ServOS; zeroized when dropped.
#[derive(Clone)]
pub struct MasterKey(Secret<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    /// Parses the base64 text of a key (surrounding whitespace, such as the newline at
    /// the end of a key file, is ignored). It must decode to exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(KeyError::Empty);
        }
        let bytes = Secret::new(
            STANDARD
                .decode(text)
                .map_err(|e| KeyError::NotBase64(e.to_string()))?,
        );
        let len = bytes.expose().len();
        let key: [u8; 32] = bytes
            .expose()
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::WrongLength(len))?;
        Ok(Self(Secret::new(key)))
    }

    /// A fresh random key, as `servos keygen` prints it.
    pub fn generate() -> Result<Self, KeyError> {
        let mut key = [0u8; 32];
        crate::random::fill(&mut key).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self(Secret::new(key)))
    }

    /// The key as base64 text, for `servos keygen` only.
    pub fn to_base64(&self) -> Secret<String> {
        Secret::new(STANDARD.encode(self.0.expose()))
    }
}

/// Where a value lives; bound into the ciphertext as associated data.
#[derive(Debug, Clone, Copy)]
pub struct Aad<'a> {
    pub table: &'a str,
    pub column: &'a str,
    pub row_id: &'a str,
}

impl<'a> Aad<'a> {
    pub fn new(table: &'a str, column: &'a str, row_id: &'a str) -> Self {
        Self { table, column, row_id }
    }

    fn bytes(&self) -> Vec<u8> {
        // Length-prefixed so that ("a:b", "c") and ("a", "b:c") differ.
        let mut out = Vec::with_capacity(16 + self.table.len() + self.column.len() + self.row_id.len());
        out.extend_from_slice(b"servos-v1");
        for part in [self.table, self.column, self.row_id] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        out
    }

    fn describe(&self) -> String {
        format!("{}.{} of row {}", self.table, self.column, self.row_id)
    }
}

/// Encrypts and decrypts values at rest with one master key.
pub struct Vault {
    cipher: Aes256Gcm,
    /// HMAC key for the audit hash chain, derived from the master key, so that someone
    /// who can write to the database but lacks the key cannot forge a consistent chain.
    chain_key: Secret<[u8; 32]>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault([redacted])")
    }
}

impl Vault {
    pub fn new(key: &MasterKey) -> Self {
        Self {
            cipher: Aes256Gcm::new(key.0.expose().into()),
            chain_key: Secret::new(hmac_sha256(key.0.expose(), b"servos/audit-chain/v1")),
        }
    }

    /// HMAC-SHA256 of `data` under the audit chain key, hex.
    pub fn chain_mac(&self, data: &[u8]) -> String {
        hex::encode(hmac_sha256(self.chain_key.expose(), data))
    }

    /// Encrypts to the raw stored bytes `nonce || ciphertext || tag`, in one buffer
    /// (no intermediate copy of the ciphertext).
    pub fn seal(&self, plaintext: &[u8], aad: &Aad<'_>) -> Result<Vec<u8>, VaultError> {
        let mut nonce = [0u8; NONCE_LEN];
        crate::random::fill(&mut nonce).map_err(|e| VaultError::Random(e.to_string()))?;
        let ad = aad.bytes();
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .cipher
            .encrypt_inout_detached(&Nonce::from(nonce), &ad, (&mut out[NONCE_LEN..]).into())
            .map_err(|_| VaultError::Decrypt(aad.describe()))?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Decrypts raw stored bytes produced by [`Vault::seal`]. The plaintext buffer is a
    /// `Secret` from the moment it exists, so it is wiped on every path.
    pub fn open(&self, sealed: &[u8], aad: &Aad<'_>) -> Result<Secret<Vec<u8>>, VaultError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(VaultError::Truncated(aad.describe()));
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| VaultError::Truncated(aad.describe()))?;
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| VaultError::Truncated(aad.describe()))?;
        let ad = aad.bytes();
        let mut plain = Secret::new(ct.to_vec());
        self.cipher
            .decrypt_inout_detached(&Nonce::from(nonce), &ad, plain.expose_mut().as_mut_slice().into(), &tag.into())
            .map_err(|_| VaultError::Decrypt(aad.describe()))?;
        Ok(plain)
    }

    /// Encrypts to the stored text form `Base64(nonce || ciphertext)`.
    pub fn encrypt(&self, plaintext: &[u8], aad: &Aad<'_>) -> Result<String, VaultError> {
        self.seal(plaintext, aad).map(|sealed| STANDARD.encode(sealed))
    }

    pub fn encrypt_str(&self, plaintext: &Secret<String>, aad: &Aad<'_>) -> Result<String, VaultError> {
        self.encrypt(plaintext.expose().as_bytes(), aad)
    }

    /// Decrypts the stored text form.
    pub fn decrypt(&self, stored: &str, aad: &Aad<'_>) -> Result<Secret<Vec<u8>>, VaultError> {
        let sealed = STANDARD
            .decode(stored.trim())
            .map_err(|_| VaultError::Encoding(aad.describe()))?;
        self.open(&sealed, aad)
    }

    pub fn decrypt_string(&self, stored: &str, aad: &Aad<'_>) -> Result<Secret<String>, VaultError> {
        let bytes = self.decrypt(stored, aad)?;
        Secret::from_utf8(bytes).map_err(|_| VaultError::Utf8(aad.describe()))
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::from_base64(&STANDARD.encode([7u8; 32])).unwrap()
    }

    #[test]
    fn round_trips_and_uses_a_fresh_nonce_each_time() {
        let v = Vault::new(&key());
        let aad = Aad::new("servers", "private_key", "row-1");
        let a = v.encrypt(b"secret", &aad).unwrap();
        let b = v.encrypt(b"secret", &aad).unwrap();
        assert_ne!(a, b, "same plaintext must not give the same ciphertext");
        let raw = STANDARD.decode(&a).unwrap();
        assert_eq!(raw.len(), 12 + 6 + 16, "nonce || ciphertext || tag");
        assert_eq!(v.decrypt(&a, &aad).unwrap().expose(), b"secret");
    }

    #[test]
    fn value_moved_to_another_row_or_column_does_not_decrypt() {
        let v = Vault::new(&key());
        let stored = v.encrypt(b"secret", &Aad::new("servers", "private_key", "a")).unwrap();
        let other_row = v.decrypt(&stored, &Aad::new("servers", "private_key", "b"));
        assert!(matches!(other_row, Err(VaultError::Decrypt(_))));
        let other_col = v.decrypt(&stored, &Aad::new("servers", "passphrase", "a"));
        assert!(matches!(other_col, Err(VaultError::Decrypt(_))));
        let other_table = v.decrypt(&stored, &Aad::new("builders", "private_key", "a"));
        assert!(matches!(other_table, Err(VaultError::Decrypt(_))));
    }

    #[test]
    fn wrong_key_and_tampering_are_detected() {
        let v = Vault::new(&key());
        let aad = Aad::new("t", "c", "r");
        let stored = v.encrypt(b"secret", &aad).unwrap();
        let other = Vault::new(&MasterKey::from_base64(&STANDARD.encode([8u8; 32])).unwrap());
        let err = other.decrypt(&stored, &aad).unwrap_err().to_string();
        assert_eq!(
            err,
            "cannot decrypt t.c of row r: wrong master key, or the value was altered or moved from another row"
        );
        let mut raw = STANDARD.decode(&stored).unwrap();
        raw[14] ^= 1;
        assert!(v.decrypt(&STANDARD.encode(&raw), &aad).is_err());
        assert!(matches!(v.decrypt("AAAA", &aad), Err(VaultError::Truncated(_))));
        assert!(matches!(v.decrypt("not base64!", &aad), Err(VaultError::Encoding(_))));
    }

    #[test]
    fn aad_parts_are_length_prefixed() {
        let v = Vault::new(&key());
        let stored = v.encrypt(b"x", &Aad::new("a:b", "c", "d")).unwrap();
        assert!(v.decrypt(&stored, &Aad::new("a", "b:c", "d")).is_err());
    }

    #[test]
    fn master_key_errors_say_what_is_wrong() {
        assert_eq!(MasterKey::from_base64("  ").unwrap_err(), KeyError::Empty);
        assert!(matches!(MasterKey::from_base64("@@@"), Err(KeyError::NotBase64(_))));
        assert_eq!(
            MasterKey::from_base64(&STANDARD.encode([1u8; 16])).unwrap_err(),
            KeyError::WrongLength(16)
        );
        assert_eq!(
            KeyError::WrongLength(16).to_string(),
            "decodes to 16 bytes, expected exactly 32"
        );
        let k = MasterKey::generate().unwrap();
        let text = k.to_base64();
        assert_eq!(STANDARD.decode(text.expose()).unwrap().len(), 32);
        assert!(MasterKey::from_base64(&format!("{}\n", text.expose())).is_ok());
        assert_eq!(format!("{k:?}"), "MasterKey([redacted])");
    }
}
