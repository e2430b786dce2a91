//! The domains services claim. `service_domains.domain` is the primary key: a domain
//! belongs to at most one service, enforced by the database inside the transaction that
//! changes the service, on SQLite and PostgreSQL alike. `services.domains` keeps the
//! ordered list users see and is rewritten in the same transaction.
//!
//! Domains arrive validated and normalised (lower case) by the caller
//! (`servos_proxy::normalize_domains`).

use crate::audit::Event;
use crate::services::ServiceRecord;
use crate::{Actor, Result, Store, StoreError, WriteTx};

/// Claims `domains` for `service_id` inside `tx`. A domain already claimed by another
/// service is refused, naming it (409 `in_use` through the API).
pub(crate) async fn claim(tx: &mut WriteTx, service_id: &str, domains: &[String]) -> Result<()> {
    let now = crate::now();
    for domain in domains {
        let owner: Option<(String, String)> = sqlx::query_as(
            "SELECT s.id, s.name FROM service_domains d JOIN services s ON s.id = d.service_id WHERE d.domain = $1",
        )
        .bind(domain)
        .fetch_optional(&mut *tx.tx)
        .await?;
        match owner {
            Some((id, _)) if id == service_id => continue,
            Some((_, name)) => {
                return Err(StoreError::InUse { kind: "domain", key: domain.clone(), used_by: format!("service {name}") });
            }
            None => {}
        }
        sqlx::query("INSERT INTO service_domains (domain, service_id, created_at) VALUES ($1, $2, $3)")
            .bind(domain)
            .bind(service_id)
            .bind(&now)
            .execute(&mut *tx.tx)
            .await
            .map_err(|e| match &e {
                // Claimed concurrently by another process between our check and insert.
                sqlx::Error::Database(db) if db.is_unique_violation() => {
                    StoreError::InUse { kind: "domain", key: domain.clone(), used_by: "another service".into() }
                }
                _ => StoreError::Database(e),
            })?;
    }
    Ok(())
}

async fn write_list(tx: &mut WriteTx, service_id: &str, domains: &[String]) -> Result<()> {
    let json = serde_json::Value::from(domains.to_vec()).to_string();
    sqlx::query("UPDATE services SET domains = $1, updated_at = $2 WHERE id = $3")
        .bind(json)
        .bind(crate::now())
        .bind(service_id)
        .execute(&mut *tx.tx)
        .await?;
    Ok(())
}

impl Store {
    /// Adds domains to a service (already present ones are kept once), audited.
    pub async fn add_domains(&self, actor: &Actor, service: &str, domains: &[String]) -> Result<ServiceRecord> {
        let svc = self.get_service(service).await?;
        let mut tx = self.write().await?;
        let current: Vec<String> = sqlx::query_scalar("SELECT domains FROM services WHERE id = $1")
            .bind(&svc.id)
            .fetch_optional(&mut *tx.tx)
            .await?
            .ok_or_else(|| StoreError::NotFound { kind: "service", key: service.into() })
            .and_then(|text: String| {
                serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("services.domains of {}: {e}", svc.id)))
            })?;
        // Domains listed before this table existed are claimed now as well.
        claim(&mut tx, &svc.id, &current).await?;
        claim(&mut tx, &svc.id, domains).await?;
        let mut list = current;
        for d in domains {
            if !list.contains(d) {
                list.push(d.clone());
            }
        }
        write_list(&mut tx, &svc.id, &list).await?;
        self.audit(
            &mut tx,
            actor,
            Event::new("service.domains_added", "service", &svc.id)
                .detail(serde_json::json!({ "name": svc.name, "domains": domains })),
        )
        .await?;
        tx.commit().await?;
        self.get_service(&svc.id).await
    }

    /// Removes domains from a service; a domain it does not have is `NotFound`.
    pub async fn remove_domains(&self, actor: &Actor, service: &str, domains: &[String]) -> Result<ServiceRecord> {
        let svc = self.get_service(service).await?;
        if let Some(missing) = domains.iter().find(|d| !svc.domains.contains(d)) {
            return Err(StoreError::NotFound { kind: "domain", key: format!("{missing} of service {}", svc.name) });
        }
        let mut tx = self.write().await?;
        for d in domains {
            sqlx::query("DELETE FROM service_domains WHERE domain = $1 AND service_id = $2")
                .bind(d)
                .bind(&svc.id)
                .execute(&mut *tx.tx)
                .await?;
        }
        let list: Vec<String> = svc.domains.iter().filter(|d| !domains.contains(d)).cloned().collect();
        write_list(&mut tx, &svc.id, &list).await?;
        self.audit(
            &mut tx,
            actor,
            Event::new("service.domains_removed", "service", &svc.id)
                .detail(serde_json::json!({ "name": svc.name, "domains": domains })),
        )
        .await?;
        tx.commit().await?;
        self.get_service(&svc.id).await
    }

    /// The service that claims `domain`, if any.
    pub async fn domain_owner(&self, domain: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT service_id FROM service_domains WHERE domain = $1")
            .bind(domain)
            .fetch_optional(self.pool())
            .await?)
    }

    /// The path prefix the service's route matches (None: every path).
    pub async fn service_path_prefix(&self, service_id: &str) -> Result<Option<String>> {
        let row: Option<Option<String>> = sqlx::query_scalar("SELECT path_prefix FROM services WHERE id = $1")
            .bind(service_id)
            .fetch_optional(self.pool())
            .await?;
        row.ok_or_else(|| StoreError::NotFound { kind: "service", key: service_id.into() })
    }

    /// Sets (or clears) the path prefix of a service's route, audited. Validated by the
    /// caller (`servos_proxy::normalize_path_prefix`).
    pub async fn set_path_prefix(&self, actor: &Actor, service: &str, prefix: Option<&str>) -> Result<ServiceRecord> {
        let svc = self.get_service(service).await?;
        let mut tx = self.write().await?;
        sqlx::query("UPDATE services SET path_prefix = $1, updated_at = $2 WHERE id = $3")
            .bind(prefix)
            .bind(crate::now())
            .bind(&svc.id)
            .execute(&mut *tx.tx)
            .await?;
        self.audit(
            &mut tx,
            actor,
            Event::new("service.path_prefix_set", "service", &svc.id)
                .detail(serde_json::json!({ "name": svc.name, "path_prefix": prefix })),
        )
        .await?;
        tx.commit().await?;
        self.get_service(&svc.id).await
    }
}
