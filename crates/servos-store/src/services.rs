//! Services, the servers they run on, and their encrypted environment.

use std::collections::BTreeMap;

use serde::Serialize;
use servos_core::model::TlsMode;
use servos_core::{Aad, Secret};
use sqlx::Row as _;

use crate::audit::Event;
use crate::{Actor, Result, Store, StoreError};

/// Where a service's code comes from when it is built from git.
#[derive(Debug, Clone, Serialize)]
pub struct GitSource {
    pub repository: String,
    pub branch: String,
    pub credential_id: Option<String>,
    /// The Dockerfile's path inside the repository (default `Dockerfile` in the context).
    pub dockerfile: Option<String>,
    /// The build context directory inside the repository (default `.`).
    pub context: Option<String>,
}

/// Input for a new service; validated by the caller (ids must exist: checked here).
#[derive(Debug)]
pub struct NewService {
    pub name: String,
    pub image: Option<String>,
    pub registry_id: Option<String>,
    pub git: Option<GitSource>,
    pub builder_id: Option<String>,
    pub servers: Vec<String>,
    pub command: Option<Vec<String>>,
    pub port: Option<u16>,
    pub domains: Vec<String>,
    pub tls: TlsMode,
    pub healthcheck_path: Option<String>,
    pub healthcheck_port: Option<u16>,
    pub webhook_secret: Secret<String>,
}

/// A service as stored, without secrets.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceRecord {
    pub id: String,
    pub name: String,
    pub image: Option<String>,
    pub registry_id: Option<String>,
    pub git: Option<GitSource>,
    pub builder_id: Option<String>,
    pub servers: Vec<String>,
    pub command: Option<Vec<String>>,
    pub port: Option<i64>,
    pub domains: Vec<String>,
    pub tls: String,
    pub healthcheck_path: Option<String>,
    pub healthcheck_port: Option<i64>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(sqlx::FromRow)]
struct ServiceRow {
    id: String,
    name: String,
    image: Option<String>,
    registry_id: Option<String>,
    git_repository: Option<String>,
    git_branch: Option<String>,
    git_credential_id: Option<String>,
    git_dockerfile: Option<String>,
    git_context: Option<String>,
    builder_id: Option<String>,
    command: Option<String>,
    port: Option<i64>,
    domains: String,
    tls: String,
    healthcheck_path: Option<String>,
    healthcheck_port: Option<i64>,
    created_at: String,
    updated_at: String,
}

const SERVICE_COLUMNS_LIST: &str = "SELECT id, name, image, registry_id, git_repository, git_branch, git_credential_id, git_dockerfile, git_context, builder_id, command, port, domains, tls, healthcheck_path, healthcheck_port, created_at, updated_at FROM services ORDER BY name";
const SERVICE_COLUMNS_GET: &str = "SELECT id, name, image, registry_id, git_repository, git_branch, git_credential_id, git_dockerfile, git_context, builder_id, command, port, domains, tls, healthcheck_path, healthcheck_port, created_at, updated_at FROM services WHERE id = $1 OR name = $1";

fn webhook_aad(id: &str) -> Aad<'_> {
    Aad::new("services", "webhook_secret_enc", id)
}

impl ServiceRow {
    fn into_record(self, servers: Vec<String>) -> Result<ServiceRecord> {
        let command = match self.command {
            Some(text) => Some(
                serde_json::from_str(&text)
                    .map_err(|e| StoreError::Corrupt(format!("services.command of {}: {e}", self.id)))?,
            ),
            None => None,
        };
        let domains = serde_json::from_str(&self.domains)
            .map_err(|e| StoreError::Corrupt(format!("services.domains of {}: {e}", self.id)))?;
        let git = match (self.git_repository, self.git_branch) {
            (Some(repository), Some(branch)) => Some(GitSource {
                repository,
                branch,
                credential_id: self.git_credential_id,
                dockerfile: self.git_dockerfile,
                context: self.git_context,
            }),
            _ => None,
        };
        Ok(ServiceRecord {
            id: self.id,
            name: self.name,
            image: self.image,
            registry_id: self.registry_id,
            git,
            builder_id: self.builder_id,
            servers,
            command,
            port: self.port,
            domains,
            tls: self.tls,
            healthcheck_path: self.healthcheck_path,
            healthcheck_port: self.healthcheck_port,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

async fn ensure_exists(tx: &mut crate::WriteTx, sql: &'static str, kind: &'static str, id: &str) -> Result<()> {
    let n: i64 = sqlx::query_scalar(sql).bind(id).fetch_one(&mut *tx.tx).await?;
    if n == 0 {
        return Err(StoreError::NotFound { kind, key: id.into() });
    }
    Ok(())
}

impl Store {
    pub async fn create_service(&self, actor: &Actor, new: NewService) -> Result<ServiceRecord> {
        let id = crate::new_id();
        let secret_enc = self.vault.encrypt_str(&new.webhook_secret, &webhook_aad(&id))?;
        let command = new.command.as_ref().map(|c| serde_json::Value::from(c.clone()).to_string());
        let domains = serde_json::Value::from(new.domains.clone()).to_string();
        let mut tx = self.write().await?;
        for server in &new.servers {
            ensure_exists(&mut tx, "SELECT COUNT(*) FROM servers WHERE id = $1", "server", server).await?;
        }
        if let Some(r) = &new.registry_id {
            ensure_exists(&mut tx, "SELECT COUNT(*) FROM registries WHERE id = $1", "registry", r).await?;
        }
        if let Some(b) = &new.builder_id {
            ensure_exists(&mut tx, "SELECT COUNT(*) FROM builders WHERE id = $1", "builder", b).await?;
        }
        if let Some(c) = new.git.as_ref().and_then(|g| g.credential_id.as_ref()) {
            ensure_exists(&mut tx, "SELECT COUNT(*) FROM git_credentials WHERE id = $1", "git credential", c).await?;
        }
        let now = crate::now();
        sqlx::query(
            "INSERT INTO services (id, name, image, registry_id, git_repository, git_branch, git_credential_id, builder_id,
                command, port, domains, tls, healthcheck_path, healthcheck_port, webhook_secret_enc, created_at, updated_at,
                git_dockerfile, git_context)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16, $17, $18)",
        )
        .bind(&id)
        .bind(&new.name)
        .bind(&new.image)
        .bind(&new.registry_id)
        .bind(new.git.as_ref().map(|g| g.repository.clone()))
        .bind(new.git.as_ref().map(|g| g.branch.clone()))
        .bind(new.git.as_ref().and_then(|g| g.credential_id.clone()))
        .bind(&new.builder_id)
        .bind(command)
        .bind(new.port.map(i64::from))
        .bind(domains)
        .bind(new.tls.as_str())
        .bind(&new.healthcheck_path)
        .bind(new.healthcheck_port.map(i64::from))
        .bind(secret_enc)
        .bind(&now)
        .bind(new.git.as_ref().and_then(|g| g.dockerfile.clone()))
        .bind(new.git.as_ref().and_then(|g| g.context.clone()))
        .execute(&mut *tx.tx)
        .await
        .map_err(StoreError::on_insert("service", "name", &new.name))?;
        for (position, server) in new.servers.iter().enumerate() {
            sqlx::query("INSERT INTO service_servers (service_id, server_id, position) VALUES ($1, $2, $3)")
                .bind(&id)
                .bind(server)
                .bind(position as i64)
                .execute(&mut *tx.tx)
                .await?;
        }
        crate::domains::claim(&mut tx, &id, &new.domains).await?;
        self.audit(
            &mut tx,
            actor,
            Event::new("service.created", "service", &id).detail(serde_json::json!({
                "name": new.name, "image": new.image, "servers": new.servers, "domains": new.domains,
            })),
        )
        .await?;
        tx.commit().await?;
        self.get_service(&id).await
    }

    pub async fn list_services(&self) -> Result<Vec<ServiceRecord>> {
        let rows = sqlx::query_as::<_, ServiceRow>(SERVICE_COLUMNS_LIST).fetch_all(&self.pool).await?;
        let links = sqlx::query("SELECT service_id, server_id FROM service_servers ORDER BY service_id, position")
            .fetch_all(&self.pool)
            .await?;
        let mut by_service: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for link in links {
            by_service.entry(link.try_get(0)?).or_default().push(link.try_get(1)?);
        }
        rows.into_iter()
            .map(|r| {
                let servers = by_service.remove(&r.id).unwrap_or_default();
                r.into_record(servers)
            })
            .collect()
    }

    pub async fn get_service(&self, id_or_name: &str) -> Result<ServiceRecord> {
        let row = sqlx::query_as::<_, ServiceRow>(SERVICE_COLUMNS_GET)
            .bind(id_or_name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound { kind: "service", key: id_or_name.into() })?;
        let servers: Vec<String> =
            sqlx::query_scalar("SELECT server_id FROM service_servers WHERE service_id = $1 ORDER BY position")
                .bind(&row.id)
                .fetch_all(&self.pool)
                .await?;
        row.into_record(servers)
    }

    pub async fn delete_service(&self, actor: &Actor, id_or_name: &str) -> Result<()> {
        let svc = self.get_service(id_or_name).await?;
        let mut tx = self.write().await?;
        sqlx::query("DELETE FROM services WHERE id = $1").bind(&svc.id).execute(&mut *tx.tx).await?;
        self.audit(&mut tx, actor, Event::new("service.deleted", "service", &svc.id).detail(serde_json::json!({ "name": svc.name })))
            .await?;
        tx.commit().await
    }

    /// Replaces the whole environment of a service (names are audited, values never).
    pub async fn set_env(&self, actor: &Actor, service_id: &str, vars: &BTreeMap<String, Secret<String>>) -> Result<()> {
        let encrypted = self.encrypt_env(service_id, vars)?;
        let mut tx = self.write().await?;
        ensure_exists(&mut tx, "SELECT COUNT(*) FROM services WHERE id = $1", "service", service_id).await?;
        sqlx::query("DELETE FROM env_vars WHERE service_id = $1").bind(service_id).execute(&mut *tx.tx).await?;
        let now = crate::now();
        for (name, enc) in encrypted {
            sqlx::query("INSERT INTO env_vars (service_id, name, value_enc, updated_at) VALUES ($1, $2, $3, $4)")
                .bind(service_id)
                .bind(name)
                .bind(enc)
                .bind(&now)
                .execute(&mut *tx.tx)
                .await?;
        }
        let names: Vec<&String> = vars.keys().collect();
        self.audit(&mut tx, actor, Event::new("service.env_set", "service", service_id).detail(serde_json::json!({ "names": names })))
            .await?;
        tx.commit().await
    }

    /// Sets some variables and removes others, leaving the rest as they are.
    pub async fn patch_env(
        &self,
        actor: &Actor,
        service_id: &str,
        set: &BTreeMap<String, Secret<String>>,
        unset: &[String],
    ) -> Result<()> {
        let encrypted = self.encrypt_env(service_id, set)?;
        let mut tx = self.write().await?;
        ensure_exists(&mut tx, "SELECT COUNT(*) FROM services WHERE id = $1", "service", service_id).await?;
        for name in unset {
            sqlx::query("DELETE FROM env_vars WHERE service_id = $1 AND name = $2")
                .bind(service_id)
                .bind(name)
                .execute(&mut *tx.tx)
                .await?;
        }
        let now = crate::now();
        for (name, enc) in encrypted {
            sqlx::query("DELETE FROM env_vars WHERE service_id = $1 AND name = $2")
                .bind(service_id)
                .bind(name)
                .execute(&mut *tx.tx)
                .await?;
            sqlx::query("INSERT INTO env_vars (service_id, name, value_enc, updated_at) VALUES ($1, $2, $3, $4)")
                .bind(service_id)
                .bind(name)
                .bind(enc)
                .bind(&now)
                .execute(&mut *tx.tx)
                .await?;
        }
        let names: Vec<&String> = set.keys().collect();
        self.audit(
            &mut tx,
            actor,
            Event::new("service.env_changed", "service", service_id).detail(serde_json::json!({ "set": names, "unset": unset })),
        )
        .await?;
        tx.commit().await
    }

    /// Encrypts values before the write transaction starts (the lock is held briefly),
    /// each bound to its service and name.
    fn encrypt_env<'a>(&self, service_id: &str, vars: &'a BTreeMap<String, Secret<String>>) -> Result<Vec<(&'a String, String)>> {
        vars.iter()
            .map(|(name, value)| {
                let row_id = format!("{service_id}/{name}");
                Ok((name, self.vault.encrypt_str(value, &Aad::new("env_vars", "value_enc", &row_id))?))
            })
            .collect()
    }

    pub async fn env_names(&self, service_id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT name FROM env_vars WHERE service_id = $1 ORDER BY name")
            .bind(service_id)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Decrypts the whole environment of a service. Any value that fails to decrypt fails
    /// the whole call: a deploy never runs with a partial or empty environment.
    pub async fn env_decrypted(&self, service_id: &str) -> Result<Vec<(String, Secret<String>)>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT name, value_enc FROM env_vars WHERE service_id = $1 ORDER BY name")
                .bind(service_id)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|(name, enc)| {
                let row_id = format!("{service_id}/{name}");
                let value = self.vault.decrypt_string(&enc, &Aad::new("env_vars", "value_enc", &row_id))?;
                Ok((name, value))
            })
            .collect()
    }

    pub async fn webhook_secret(&self, service_id: &str) -> Result<Secret<String>> {
        let enc: String = sqlx::query_scalar("SELECT webhook_secret_enc FROM services WHERE id = $1")
            .bind(service_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound { kind: "service", key: service_id.into() })?;
        Ok(self.vault.decrypt_string(&enc, &webhook_aad(service_id))?)
    }

    pub async fn rotate_webhook_secret(&self, actor: &Actor, service_id: &str, secret: &Secret<String>) -> Result<()> {
        let enc = self.vault.encrypt_str(secret, &webhook_aad(service_id))?;
        let mut tx = self.write().await?;
        let done = sqlx::query("UPDATE services SET webhook_secret_enc = $1, updated_at = $2 WHERE id = $3")
            .bind(enc)
            .bind(crate::now())
            .bind(service_id)
            .execute(&mut *tx.tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound { kind: "service", key: service_id.into() });
        }
        self.audit(&mut tx, actor, Event::new("service.webhook_secret_rotated", "service", service_id)).await?;
        tx.commit().await
    }
}
