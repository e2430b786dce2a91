//! The control plane's own TLS state (ACME account, issued certificate and key), stored
//! encrypted like every other secret so that a control plane on PostgreSQL can move hosts
//! and a stolen database file yields nothing.

use servos_core::{Aad, Secret};

use crate::audit::Event;
use crate::{Actor, Result, Store};

fn aad(name: &str) -> Aad<'_> {
    Aad::new("tls_state", "value_enc", name)
}

impl Store {
    /// The stored value named `name`, decrypted; `None` when there is none.
    pub async fn tls_state(&self, name: &str) -> Result<Option<Secret<String>>> {
        let enc: Option<String> = sqlx::query_scalar("SELECT value_enc FROM tls_state WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        match enc {
            Some(enc) => Ok(Some(self.vault.decrypt_string(&enc, &aad(name))?)),
            None => Ok(None),
        }
    }

    /// Stores (or replaces) `value` under `name`, encrypted, with an audit event
    /// `action` that carries `detail` (never the value).
    pub async fn put_tls_state(
        &self,
        actor: &Actor,
        name: &str,
        value: &Secret<String>,
        action: &str,
        detail: serde_json::Value,
    ) -> Result<()> {
        let enc = self.vault.encrypt_str(value, &aad(name))?;
        let now = crate::now();
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO tls_state (name, value_enc, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET value_enc = excluded.value_enc, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(enc)
        .bind(now)
        .execute(&mut *tx.tx)
        .await?;
        self.audit(&mut tx, actor, Event::new(action, "tls_state", name).detail(detail)).await?;
        tx.commit().await
    }
}
