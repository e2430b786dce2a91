//! Users and API tokens. Passwords arrive already hashed (Argon2id, in the API crate);
//! tokens are stored only as their SHA-256.

use serde::Serialize;

use crate::audit::Event;
use crate::{Actor, Result, Store, StoreError};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct User {
    pub id: String,
    pub username: String,
    pub role: String,
    pub created_at: String,
}

/// A token as listed: never the token itself.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TokenInfo {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

/// The identity a valid token stands for.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenOwner {
    pub token_id: String,
    pub user_id: String,
    pub username: String,
    pub role: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

impl Store {
    pub async fn admin_exists(&self) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(&self.pool).await?;
        Ok(n > 0)
    }

    /// Creates the first admin and its first token atomically. Fails with `Conflict` if
    /// any user already exists, so two racing setups cannot both win.
    pub async fn create_first_admin(
        &self,
        username: &str,
        password_hash: &str,
        token_hash: &str,
        source: &str,
    ) -> Result<User> {
        let mut tx = self.write().await?;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(&mut *tx.tx).await?;
        if n > 0 {
            return Err(StoreError::Conflict { kind: "admin", field: "setup", value: "already done".into() });
        }
        let user = User { id: crate::new_id(), username: username.into(), role: "admin".into(), created_at: crate::now() };
        sqlx::query("INSERT INTO users (id, username, password_hash, role, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&user.id)
            .bind(&user.username)
            .bind(password_hash)
            .bind(&user.role)
            .bind(&user.created_at)
            .execute(&mut *tx.tx)
            .await
            .map_err(StoreError::on_insert("user", "username", username))?;
        let token_id = insert_token(&mut tx, &user.id, "setup", token_hash, None).await?;
        let actor = Actor::user(username, source);
        self.audit(&mut tx, &actor, Event::new("setup.admin_created", "user", &user.id)
            .detail(serde_json::json!({ "username": username }))).await?;
        self.audit(&mut tx, &actor, Event::new("token.created", "token", &token_id)
            .detail(serde_json::json!({ "name": "setup" }))).await?;
        tx.commit().await?;
        Ok(user)
    }

    /// The user and Argon2 hash for a login attempt.
    pub async fn user_for_login(&self, username: &str) -> Result<Option<(User, String)>> {
        let row: Option<(String, String, String, String, String)> = sqlx::query_as(
            "SELECT id, username, role, created_at, password_hash FROM users WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(id, username, role, created_at, hash)| (User { id, username, role, created_at }, hash)))
    }

    pub async fn create_token(
        &self,
        actor: &Actor,
        user_id: &str,
        name: &str,
        token_hash: &str,
        expires_at: Option<&str>,
    ) -> Result<TokenInfo> {
        let mut tx = self.write().await?;
        let id = insert_token(&mut tx, user_id, name, token_hash, expires_at).await?;
        self.audit(&mut tx, actor, Event::new("token.created", "token", &id)
            .detail(serde_json::json!({ "name": name, "expires_at": expires_at }))).await?;
        let info = sqlx::query_as::<_, TokenInfo>(
            "SELECT id, user_id, name, created_at, expires_at, revoked_at FROM api_tokens WHERE id = $1",
        )
        .bind(&id)
        .fetch_one(&mut *tx.tx)
        .await?;
        tx.commit().await?;
        Ok(info)
    }

    /// Looks a token up by hash (one indexed query; no password hashing per request).
    pub async fn token_owner(&self, token_hash: &str) -> Result<Option<TokenOwner>> {
        Ok(sqlx::query_as::<_, TokenOwner>(
            "SELECT t.id AS token_id, u.id AS user_id, u.username, u.role, t.expires_at, t.revoked_at
             FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn list_tokens(&self, user_id: &str) -> Result<Vec<TokenInfo>> {
        Ok(sqlx::query_as::<_, TokenInfo>(
            "SELECT id, user_id, name, created_at, expires_at, revoked_at FROM api_tokens
             WHERE user_id = $1 ORDER BY created_at",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn revoke_token(&self, actor: &Actor, user_id: &str, token_id: &str) -> Result<()> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
        )
        .bind(crate::now())
        .bind(token_id)
        .bind(user_id)
        .execute(&mut *tx.tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound { kind: "token", key: token_id.into() });
        }
        self.audit(&mut tx, actor, Event::new("token.revoked", "token", token_id)).await?;
        tx.commit().await
    }
}

async fn insert_token(
    tx: &mut crate::WriteTx,
    user_id: &str,
    name: &str,
    token_hash: &str,
    expires_at: Option<&str>,
) -> Result<String> {
    let id = crate::new_id();
    sqlx::query(
        "INSERT INTO api_tokens (id, user_id, name, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(user_id)
    .bind(name)
    .bind(token_hash)
    .bind(crate::now())
    .bind(expires_at)
    .execute(&mut *tx.tx)
    .await?;
    Ok(id)
}
