//! The agent's WireGuard key pair: generated on the server on first start, the private key
//! kept in the state directory (mode 0600, owned by the agent's user), never sent anywhere.

use std::{fs, io::Write, os::unix::fs::OpenOptionsExt, path::Path};

use base64::{Engine, engine::general_purpose::STANDARD};
use gotatun::x25519::{PublicKey, StaticSecret};
use servos_core::Secret;

use crate::error::AgentError;

pub const PRIVATE_KEY_FILE: &str = "private.key";
pub const PUBLIC_KEY_FILE: &str = "public.key";

/// Loads the private key from `state_dir`, or generates and stores a new pair.
pub fn load_or_generate(state_dir: &Path) -> Result<StaticSecret, AgentError> {
    let path = state_dir.join(PRIVATE_KEY_FILE);
    let secret = match fs::read_to_string(&path) {
        Ok(text) => {
            let text = Secret::new(text);
            let bytes: [u8; 32] = STANDARD
                .decode(text.expose().trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| AgentError::Config {
                    path: path.clone(),
                    reason: "not a base64 32-byte key".into(),
                })?;
            StaticSecret::from(bytes)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes)
                .map_err(|e| AgentError::Device(format!("no randomness for the key: {e}")))?;
            let secret = StaticSecret::from(bytes);
            bytes.fill(0);
            let text = Secret::new(STANDARD.encode(secret.to_bytes()));
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(AgentError::io("create", &path))?;
            file.write_all(text.expose().as_bytes())
                .map_err(AgentError::io("write", &path))?;
            secret
        }
        Err(e) => return Err(AgentError::io("read", &path)(e)),
    };
    let public = state_dir.join(PUBLIC_KEY_FILE);
    fs::write(&public, public_key(&secret)).map_err(AgentError::io("write", &public))?;
    Ok(secret)
}

/// Base64 of the public half.
pub fn public_key(secret: &StaticSecret) -> String {
    STANDARD.encode(PublicKey::from(secret).as_bytes())
}
