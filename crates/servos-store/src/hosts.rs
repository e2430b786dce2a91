//! Servers and builders: machines ServOS reaches over SSH. Both have the same shape
//! (builders lack a proxy and a mesh address), so one set of functions serves both,
//! parameterised by [`HostKind`], with every SQL string still a literal.

use serde::Serialize;
use servos_core::model::{ProxyKind, ServerStatus};
use servos_core::{Aad, Secret};

use crate::audit::Event;
use crate::{Actor, Result, Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    Server,
    Builder,
}

struct Sql {
    table: &'static str,
    kind: &'static str,
    list: &'static str,
    get: &'static str,
    insert: &'static str,
    credentials: &'static str,
    delete: &'static str,
    set_status: &'static str,
    pin: &'static str,
    reset_pin: &'static str,
    on_created: &'static str,
    on_deleted: &'static str,
    on_pinned: &'static str,
    on_reset: &'static str,
}

macro_rules! host_sql {
    ($table:literal, $kind:literal, $extra_select:literal) => {
        Sql {
            table: $table,
            kind: $kind,
            list: concat!(
                "SELECT id, name, host, port, ssh_user, public_key, host_key_fingerprint, status, status_reason, facts, last_checked_at, created_at, updated_at, ",
                $extra_select,
                " FROM ",
                $table,
                " ORDER BY name"
            ),
            get: concat!(
                "SELECT id, name, host, port, ssh_user, public_key, host_key_fingerprint, status, status_reason, facts, last_checked_at, created_at, updated_at, ",
                $extra_select,
                " FROM ",
                $table,
                " WHERE id = $1 OR name = $1"
            ),
            insert: concat!(
                "INSERT INTO ",
                $table,
                " (id, name, host, port, ssh_user, private_key_enc, passphrase_enc, public_key, host_key_fingerprint, status, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)"
            ),
            credentials: concat!("SELECT private_key_enc, passphrase_enc FROM ", $table, " WHERE id = $1"),
            delete: concat!("DELETE FROM ", $table, " WHERE id = $1"),
            set_status: concat!(
                "UPDATE ",
                $table,
                " SET status = $1, status_reason = $2, facts = COALESCE($3, facts), last_checked_at = $4, updated_at = $4 WHERE id = $5"
            ),
            pin: concat!(
                "UPDATE ",
                $table,
                " SET host_key_fingerprint = $1, updated_at = $2 WHERE id = $3 AND host_key_fingerprint IS NULL"
            ),
            reset_pin: concat!(
                "UPDATE ",
                $table,
                " SET host_key_fingerprint = NULL, status = 'pending', status_reason = NULL, updated_at = $1 WHERE id = $2"
            ),
            on_created: concat!($kind, ".created"),
            on_deleted: concat!($kind, ".deleted"),
            on_pinned: concat!($kind, ".host_key_pinned"),
            on_reset: concat!($kind, ".host_key_reset"),
        }
    };
}

const SERVER_SQL: Sql = host_sql!("servers", "server", "proxy, mesh_address");
const BUILDER_SQL: Sql = host_sql!("builders", "builder", "'none' AS proxy, CAST(NULL AS TEXT) AS mesh_address");

impl HostKind {
    fn sql(self) -> &'static Sql {
        match self {
            HostKind::Server => &SERVER_SQL,
            HostKind::Builder => &BUILDER_SQL,
        }
    }

    pub fn table(self) -> &'static str {
        self.sql().table
    }

    pub fn noun(self) -> &'static str {
        self.sql().kind
    }
}

/// A server or builder as stored, without its secrets.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct HostRecord {
    pub id: String,
    pub name: String,
    pub host: String,
    pub port: i64,
    pub ssh_user: String,
    pub public_key: String,
    pub host_key_fingerprint: Option<String>,
    pub status: String,
    pub status_reason: Option<String>,
    pub facts: Option<String>,
    pub last_checked_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub proxy: String,
    pub mesh_address: Option<String>,
}

/// Input for a new server or builder; validated by the caller.
#[derive(Debug)]
pub struct NewHost {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub private_key: Secret<String>,
    pub passphrase: Option<Secret<String>>,
    pub public_key: String,
    pub host_key_fingerprint: Option<String>,
    pub proxy: ProxyKind,
}

/// Decrypted SSH credentials, for the duration of one connection.
#[derive(Debug)]
pub struct HostCredentials {
    pub private_key: Secret<String>,
    pub passphrase: Option<Secret<String>>,
}

impl Store {
    pub async fn create_host(&self, kind: HostKind, actor: &Actor, new: NewHost) -> Result<HostRecord> {
        let sql = kind.sql();
        let id = crate::new_id();
        let key_enc = self.vault.encrypt_str(&new.private_key, &Aad::new(sql.table, "private_key_enc", &id))?;
        let pass_enc = match &new.passphrase {
            Some(p) => Some(self.vault.encrypt_str(p, &Aad::new(sql.table, "passphrase_enc", &id))?),
            None => None,
        };
        let mut tx = self.write().await?;
        sqlx::query(sql.insert)
            .bind(&id)
            .bind(&new.name)
            .bind(&new.host)
            .bind(i64::from(new.port))
            .bind(&new.user)
            .bind(key_enc)
            .bind(pass_enc)
            .bind(&new.public_key)
            .bind(&new.host_key_fingerprint)
            .bind(ServerStatus::Pending.as_str())
            .bind(crate::now())
            .execute(&mut *tx.tx)
            .await
            .map_err(StoreError::on_insert(sql.kind, "name", &new.name))?;
        if kind == HostKind::Server {
            sqlx::query("UPDATE servers SET proxy = $1 WHERE id = $2")
                .bind(new.proxy.as_str())
                .bind(&id)
                .execute(&mut *tx.tx)
                .await?;
        }
        self.audit(
            &mut tx,
            actor,
            Event::new(kind.sql().on_created, sql.kind, &id).detail(serde_json::json!({
                "name": new.name, "host": new.host, "port": new.port, "user": new.user,
                "host_key_fingerprint": new.host_key_fingerprint,
            })),
        )
        .await?;
        tx.commit().await?;
        self.get_host(kind, &id).await
    }

    pub async fn list_hosts(&self, kind: HostKind) -> Result<Vec<HostRecord>> {
        Ok(sqlx::query_as::<_, HostRecord>(kind.sql().list).fetch_all(&self.pool).await?)
    }

    /// Finds a server or builder by id or by name.
    pub async fn get_host(&self, kind: HostKind, id_or_name: &str) -> Result<HostRecord> {
        sqlx::query_as::<_, HostRecord>(kind.sql().get)
            .bind(id_or_name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound { kind: kind.noun(), key: id_or_name.into() })
    }

    /// Decrypts the SSH key (and passphrase) of a host. A value that fails to decrypt is
    /// an error: never fall back to connecting without it.
    pub async fn host_credentials(&self, kind: HostKind, id: &str) -> Result<HostCredentials> {
        let sql = kind.sql();
        let (key_enc, pass_enc): (String, Option<String>) = sqlx::query_as(sql.credentials)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound { kind: sql.kind, key: id.into() })?;
        let private_key = self.vault.decrypt_string(&key_enc, &Aad::new(sql.table, "private_key_enc", id))?;
        let passphrase = match pass_enc {
            Some(p) => Some(self.vault.decrypt_string(&p, &Aad::new(sql.table, "passphrase_enc", id))?),
            None => None,
        };
        Ok(HostCredentials { private_key, passphrase })
    }

    pub async fn delete_host(&self, kind: HostKind, actor: &Actor, id_or_name: &str) -> Result<()> {
        let host = self.get_host(kind, id_or_name).await?;
        let mut tx = self.write().await?;
        let users: Vec<(String,)> = match kind {
            HostKind::Server => {
                sqlx::query_as(
                    "SELECT s.name FROM services s JOIN service_servers ss ON ss.service_id = s.id WHERE ss.server_id = $1 ORDER BY s.name",
                )
                .bind(&host.id)
                .fetch_all(&mut *tx.tx)
                .await?
            }
            HostKind::Builder => {
                sqlx::query_as("SELECT name FROM services WHERE builder_id = $1 ORDER BY name")
                    .bind(&host.id)
                    .fetch_all(&mut *tx.tx)
                    .await?
            }
        };
        if !users.is_empty() {
            let names: Vec<String> = users.into_iter().map(|(n,)| n).collect();
            return Err(StoreError::InUse {
                kind: kind.noun(),
                key: host.name,
                used_by: format!("services {}", names.join(", ")),
            });
        }
        sqlx::query(kind.sql().delete).bind(&host.id).execute(&mut *tx.tx).await?;
        self.audit(
            &mut tx,
            actor,
            Event::new(kind.sql().on_deleted, kind.noun(), &host.id)
                .detail(serde_json::json!({ "name": host.name })),
        )
        .await?;
        tx.commit().await
    }

    /// Records the outcome of a connection attempt. `facts` (JSON) replaces the stored
    /// facts when given.
    pub async fn set_host_status(
        &self,
        kind: HostKind,
        id: &str,
        status: ServerStatus,
        reason: Option<&str>,
        facts: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(kind.sql().set_status)
            .bind(status.as_str())
            .bind(reason)
            .bind(facts)
            .bind(crate::now())
            .bind(id)
            .execute(&mut *tx.tx)
            .await?;
        tx.commit().await
    }

    /// Pins a host key fingerprint on first use. Returns false if one was pinned already
    /// (a concurrent commissioning won), in which case nothing changes.
    pub async fn pin_host_key(&self, kind: HostKind, actor: &Actor, id: &str, fingerprint: &str) -> Result<bool> {
        let mut tx = self.write().await?;
        let done = sqlx::query(kind.sql().pin).bind(fingerprint).bind(crate::now()).bind(id).execute(&mut *tx.tx).await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        self.audit(
            &mut tx,
            actor,
            Event::new(kind.sql().on_pinned, kind.noun(), id)
                .detail(serde_json::json!({ "fingerprint": fingerprint })),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Forgets the pinned host key; the next check pins again.
    pub async fn reset_host_key(&self, kind: HostKind, actor: &Actor, id_or_name: &str) -> Result<HostRecord> {
        let host = self.get_host(kind, id_or_name).await?;
        let mut tx = self.write().await?;
        sqlx::query(kind.sql().reset_pin).bind(crate::now()).bind(&host.id).execute(&mut *tx.tx).await?;
        self.audit(
            &mut tx,
            actor,
            Event::new(kind.sql().on_reset, kind.noun(), &host.id)
                .detail(serde_json::json!({ "forgotten_fingerprint": host.host_key_fingerprint })),
        )
        .await?;
        tx.commit().await?;
        self.get_host(kind, &host.id).await
    }
}
