//! SSH key pairs: generating Ed25519 keys, validating imported private keys (OpenSSH or
//! PEM, optionally passphrase-protected) and computing fingerprints as `ssh-keygen -lf`.
//!
//! Private keys only ever live in memory, inside [`Secret`]; nothing here touches the disk.

use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, HashAlg, PrivateKey, PublicKey};
use servos_core::Secret;

use crate::SshError;

/// A freshly generated key pair: the private half in OpenSSH format, the public half as
/// an `authorized_keys` line.
#[derive(Debug)]
pub struct KeyPair {
    pub private_openssh: Secret<String>,
    pub public_line: String,
}

/// Generates a fresh Ed25519 pair; `public_line` is the `authorized_keys` line
/// `"ssh-ed25519 AAAA… <comment>"`.
pub fn generate_ed25519(comment: &str) -> Result<KeyPair, SshError> {
    if comment.chars().any(char::is_control) {
        return Err(SshError::KeyGeneration {
            reason: format!("the comment {comment:?} contains control characters"),
        });
    }
    let mut rng = russh::keys::key::safe_rng();
    let mut key =
        PrivateKey::random(&mut rng, Algorithm::Ed25519).map_err(|e| SshError::KeyGeneration {
            reason: e.to_string(),
        })?;
    key.set_comment(comment);
    let private = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| SshError::KeyGeneration {
            reason: e.to_string(),
        })?;
    Ok(KeyPair {
        private_openssh: Secret::new(private.as_str().to_owned()),
        public_line: public_line(key.public_key())?,
    })
}

/// Validates an imported private key (OpenSSH or PEM; Ed25519 or RSA; decrypted with the
/// passphrase if one is given) and returns the `authorized_keys` line of its public half
/// (`"ssh-ed25519 AAAA… comment"`, as `ssh-keygen -y` prints it; no comment for PEM keys).
pub fn public_line_of(
    private: &Secret<String>,
    passphrase: Option<&Secret<String>>,
) -> Result<String, SshError> {
    let key = decode_private_key(private, passphrase)?;
    public_line(key.public_key())
}

/// The SHA256 fingerprint of an `authorized_keys`-style line, exactly as `ssh-keygen -lf`
/// prints it: `"SHA256:<base64 without padding>"`.
pub fn fingerprint_of_public_line(line: &str) -> Result<String, SshError> {
    let key = PublicKey::from_openssh(line.trim()).map_err(|e| SshError::InvalidPublicKey {
        line: servos_core::validate::show(line),
        reason: e.to_string(),
    })?;
    Ok(fingerprint(&key))
}

/// The SHA256 fingerprint of a public key, as `ssh-keygen -lf` prints it.
pub(crate) fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

fn public_line(key: &PublicKey) -> Result<String, SshError> {
    key.to_openssh().map_err(|e| SshError::KeyGeneration {
        reason: e.to_string(),
    })
}

/// Decodes and, if needed, decrypts a private key, accepting only Ed25519 and RSA.
pub(crate) fn decode_private_key(
    private: &Secret<String>,
    passphrase: Option<&Secret<String>>,
) -> Result<PrivateKey, SshError> {
    let text = private.expose().trim();
    let passphrase = passphrase.map(|p| p.expose().as_str());
    let label = pem_label(text)?;
    let key = if label == "OPENSSH PRIVATE KEY" {
        decode_openssh(text, passphrase)?
    } else {
        decode_pem(text, label, passphrase)?
    };
    ensure_supported(key.algorithm())?;
    Ok(key)
}

/// The `XXX` of the first `-----BEGIN XXX-----` line, rejecting what is clearly not a
/// private key with a message that says what it is instead.
fn pem_label(text: &str) -> Result<&str, SshError> {
    if text.starts_with("ssh-") || text.starts_with("ecdsa-") {
        return Err(SshError::NotAKey {
            reason:
                "this is a public key; paste the private key file (id_ed25519, not id_ed25519.pub)"
                    .to_owned(),
        });
    }
    let label = text
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .ok_or_else(|| SshError::NotAKey {
            reason: "no `-----BEGIN ... PRIVATE KEY-----` line found".to_owned(),
        })?;
    match label {
        "OPENSSH PRIVATE KEY" | "RSA PRIVATE KEY" | "PRIVATE KEY" | "ENCRYPTED PRIVATE KEY" => {
            Ok(label)
        }
        "EC PRIVATE KEY" => Err(SshError::UnsupportedKeyType {
            key_type: "ECDSA".to_owned(),
        }),
        "DSA PRIVATE KEY" => Err(SshError::UnsupportedKeyType {
            key_type: "DSA".to_owned(),
        }),
        other => Err(SshError::NotAKey {
            reason: format!("the PEM block is a {other:?}, not a private key"),
        }),
    }
}

fn decode_openssh(text: &str, passphrase: Option<&str>) -> Result<PrivateKey, SshError> {
    let key = PrivateKey::from_openssh(text).map_err(|e| SshError::NotAKey {
        reason: e.to_string(),
    })?;
    // The public half and the algorithm are stored in clear, so an unsupported type is
    // reported before asking for a passphrase.
    ensure_supported(key.algorithm())?;
    if !key.is_encrypted() {
        return Ok(key);
    }
    let passphrase = passphrase.ok_or(SshError::PassphraseRequired)?;
    key.decrypt(passphrase)
        .map_err(|_| SshError::WrongPassphrase)
}

fn decode_pem(text: &str, label: &str, passphrase: Option<&str>) -> Result<PrivateKey, SshError> {
    let encrypted = label == "ENCRYPTED PRIVATE KEY" || text.contains("Proc-Type: 4,ENCRYPTED");
    if encrypted && passphrase.is_none() {
        return Err(SshError::PassphraseRequired);
    }
    if let Some(cipher) = legacy_pem_cipher(text)
        && cipher != "AES-128-CBC"
    {
        return Err(SshError::UnsupportedKeyType {
            key_type: format!(
                "PEM key encrypted with {cipher} (re-encrypt it with `ssh-keygen -p -f KEYFILE`)"
            ),
        });
    }
    russh::keys::decode_secret_key(text, passphrase).map_err(|e| match e {
        _ if encrypted => SshError::WrongPassphrase,
        russh::keys::Error::UnsupportedKeyType {
            key_type_string, ..
        } => SshError::UnsupportedKeyType {
            key_type: key_type_string,
        },
        russh::keys::Error::UnknownAlgorithm(oid) => SshError::UnsupportedKeyType {
            key_type: format!("algorithm OID {oid}"),
        },
        other => SshError::NotAKey {
            reason: other.to_string(),
        },
    })
}

/// The cipher named by a legacy (PKCS#1) `DEK-Info:` header, if any.
fn legacy_pem_cipher(text: &str) -> Option<&str> {
    let info = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("DEK-Info:"))?;
    Some(info.split(',').next().unwrap_or_default().trim())
}

fn ensure_supported(algorithm: Algorithm) -> Result<(), SshError> {
    match algorithm {
        Algorithm::Ed25519 | Algorithm::Rsa { .. } => Ok(()),
        other => Err(SshError::UnsupportedKeyType {
            key_type: other.as_str().to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests;
