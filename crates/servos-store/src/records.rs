//! Registries and git credentials: a name, where it applies, a username and one
//! encrypted secret (registry password or git token). Same shape, one implementation.

use serde::Serialize;
use servos_core::{Aad, Secret};

use crate::audit::Event;
use crate::{Actor, Result, Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    Registry,
    GitCredential,
}

struct Sql {
    table: &'static str,
    kind: &'static str,
    secret_column: &'static str,
    insert: &'static str,
    list: &'static str,
    get: &'static str,
    secret: &'static str,
    delete: &'static str,
    used_by: &'static str,
    on_created: &'static str,
    on_deleted: &'static str,
}

const REGISTRY_SQL: Sql = Sql {
    table: "registries",
    kind: "registry",
    secret_column: "password_enc",
    insert: "INSERT INTO registries (id, name, url, username, password_enc, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
    list: "SELECT id, name, url AS location, username, created_at, updated_at FROM registries ORDER BY name",
    get: "SELECT id, name, url AS location, username, created_at, updated_at FROM registries WHERE id = $1 OR name = $1",
    secret: "SELECT password_enc FROM registries WHERE id = $1",
    delete: "DELETE FROM registries WHERE id = $1",
    used_by: "SELECT name FROM services WHERE registry_id = $1 ORDER BY name",
    on_created: "registry.created",
    on_deleted: "registry.deleted",
};

const GIT_SQL: Sql = Sql {
    table: "git_credentials",
    kind: "git credential",
    secret_column: "token_enc",
    insert: "INSERT INTO git_credentials (id, name, host, username, token_enc, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
    list: "SELECT id, name, host AS location, username, created_at, updated_at FROM git_credentials ORDER BY name",
    get: "SELECT id, name, host AS location, username, created_at, updated_at FROM git_credentials WHERE id = $1 OR name = $1",
    secret: "SELECT token_enc FROM git_credentials WHERE id = $1",
    delete: "DELETE FROM git_credentials WHERE id = $1",
    used_by: "SELECT name FROM services WHERE git_credential_id = $1 ORDER BY name",
    on_created: "git_credential.created",
    on_deleted: "git_credential.deleted",
};

impl CredentialKind {
    fn sql(self) -> &'static Sql {
        match self {
            CredentialKind::Registry => &REGISTRY_SQL,
            CredentialKind::GitCredential => &GIT_SQL,
        }
    }
}

/// A registry (`location` = its URL) or git credential (`location` = the forge host),
/// without its secret.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct CredentialRecord {
    pub id: String,
    pub name: String,
    pub location: String,
    pub username: String,
    pub created_at: String,
    pub updated_at: String,
}

impl Store {
    pub async fn create_credential(
        &self,
        kind: CredentialKind,
        actor: &Actor,
        name: &str,
        location: &str,
        username: &str,
        secret: &Secret<String>,
    ) -> Result<CredentialRecord> {
        let sql = kind.sql();
        let id = crate::new_id();
        let enc = self.vault.encrypt_str(secret, &Aad::new(sql.table, sql.secret_column, &id))?;
        let mut tx = self.write().await?;
        sqlx::query(sql.insert)
            .bind(&id)
            .bind(name)
            .bind(location)
            .bind(username)
            .bind(enc)
            .bind(crate::now())
            .execute(&mut *tx.tx)
            .await
            .map_err(StoreError::on_insert(sql.kind, "name", name))?;
        self.audit(
            &mut tx,
            actor,
            Event::new(sql.on_created, sql.kind, &id)
                .detail(serde_json::json!({ "name": name, "location": location, "username": username })),
        )
        .await?;
        tx.commit().await?;
        self.get_credential(kind, &id).await
    }

    pub async fn list_credentials(&self, kind: CredentialKind) -> Result<Vec<CredentialRecord>> {
        Ok(sqlx::query_as::<_, CredentialRecord>(kind.sql().list).fetch_all(&self.pool).await?)
    }

    pub async fn get_credential(&self, kind: CredentialKind, id_or_name: &str) -> Result<CredentialRecord> {
        sqlx::query_as::<_, CredentialRecord>(kind.sql().get)
            .bind(id_or_name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound { kind: kind.sql().kind, key: id_or_name.into() })
    }

    /// Decrypts the password or token, for one use.
    pub async fn credential_secret(&self, kind: CredentialKind, id: &str) -> Result<Secret<String>> {
        let sql = kind.sql();
        let enc: String = sqlx::query_scalar(sql.secret)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound { kind: sql.kind, key: id.into() })?;
        Ok(self.vault.decrypt_string(&enc, &Aad::new(sql.table, sql.secret_column, id))?)
    }

    pub async fn delete_credential(&self, kind: CredentialKind, actor: &Actor, id_or_name: &str) -> Result<()> {
        let sql = kind.sql();
        let rec = self.get_credential(kind, id_or_name).await?;
        let mut tx = self.write().await?;
        let users: Vec<String> = sqlx::query_scalar(sql.used_by).bind(&rec.id).fetch_all(&mut *tx.tx).await?;
        if !users.is_empty() {
            return Err(StoreError::InUse {
                kind: sql.kind,
                key: rec.name,
                used_by: format!("services {}", users.join(", ")),
            });
        }
        sqlx::query(sql.delete).bind(&rec.id).execute(&mut *tx.tx).await?;
        self.audit(&mut tx, actor, Event::new(sql.on_deleted, sql.kind, &rec.id).detail(serde_json::json!({ "name": rec.name })))
            .await?;
        tx.commit().await
    }
}
