//! Authentication: Argon2id password hashes, bearer tokens (SHA-256 at rest, cached
//! briefly in memory so a request costs no hashing beyond one SHA-256), and the
//! [`Caller`] extractor that every protected handler takes as an argument.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use servos_core::Secret;
use servos_store::Actor;
use servos_store::users::TokenOwner;

use crate::AppState;
use crate::error::ApiError;

/// How long a verified token is trusted from memory. Revocation clears the cache at
/// once, so this only bounds the staleness of expiry checks across processes.
const CACHE_TTL: Duration = Duration::from_secs(30);

/// The authenticated user behind a request, and where it came from.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: String,
    pub username: String,
    pub role: String,
    pub token_id: String,
    pub source: String,
}

impl Caller {
    pub fn actor(&self) -> Actor {
        Actor::user(&self.username, self.source.clone())
    }
}

/// Hashes a password with Argon2id (default parameters: 19 MiB, 2 passes), off the
/// async runtime.
pub async fn hash_password(password: Secret<String>) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.expose().as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| ApiError::internal("password_hash_failed", format!("cannot hash password: {e}")))
    })
    .await
    .map_err(|e| ApiError::internal("password_hash_failed", e.to_string()))?
}

/// Verifies a password against a stored hash, off the async runtime. With no stored
/// hash (unknown user) it still does the same work, so timing does not reveal which
/// usernames exist.
pub async fn verify_password(password: Secret<String>, stored: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| dummy_hash().to_owned());
        let ok = Argon2::default().verify_password(password.expose().as_bytes(), hash.as_str()).is_ok();
        ok && known
    })
    .await
    .unwrap_or(false)
}

/// A real Argon2id hash of a random string nobody knows, made once, so that the
/// unknown-user path costs the same as a wrong password.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        let mut noise = [0u8; 32];
        let _ = servos_core::random::fill(&mut noise);
        Argon2::default().hash_password(&noise).map(|h| h.to_string()).unwrap_or_default()
    })
}

/// Verified tokens by hash, with the time they were looked up.
#[derive(Debug, Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<String, (Instant, TokenOwner)>>,
}

impl TokenCache {
    fn get(&self, hash: &str) -> Option<TokenOwner> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(hash)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, owner)| owner.clone())
    }

    fn put(&self, hash: String, owner: TokenOwner) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() > 10_000 {
            entries.clear();
        }
        entries.insert(hash, (Instant::now(), owner));
    }

    pub fn clear(&self) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// The client address as the connection reports it (`unknown` in in-process tests).
pub fn client_source(parts: &Parts) -> String {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
        .unwrap_or_else(|| "unknown".to_owned())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing_token", "send Authorization: Bearer <token>"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("invalid_token", "the Authorization header is not 'Bearer <token>'"))?;
        let hash = servos_core::random::token_hash(token);
        let owner = match state.inner.tokens.get(&hash) {
            Some(owner) => owner,
            None => {
                let owner = state
                    .inner
                    .store
                    .token_owner(&hash)
                    .await?
                    .ok_or_else(|| ApiError::unauthorized("invalid_token", "the token is not valid"))?;
                state.inner.tokens.put(hash, owner.clone());
                owner
            }
        };
        if owner.revoked_at.is_some() {
            return Err(ApiError::unauthorized("token_revoked", "the token was revoked"));
        }
        if let Some(expiry) = &owner.expires_at
            && *expiry <= servos_store::now()
        {
            return Err(ApiError::unauthorized("token_expired", format!("the token expired at {expiry}")));
        }
        Ok(Caller {
            user_id: owner.user_id,
            username: owner.username,
            role: owner.role,
            token_id: owner.token_id,
            source: client_source(parts),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password(Secret::new("correct horse battery".into())).await.unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password(Secret::new("correct horse battery".into()), Some(h.clone())).await);
        assert!(!verify_password(Secret::new("wrong".into()), Some(h)).await);
        assert!(!verify_password(Secret::new("anything".into()), None).await);
    }
}
