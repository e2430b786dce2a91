//! Services across servers: a service's publish mode (`proxy` or `mesh`), service-level
//! access grants ("service A may reach service B") and the server-level mesh rules derived
//! from them, and the container ids of placements (to match what agents report).
//!
//! Grants are never copied into `mesh_policy`: the rules an agent gets are computed from
//! the grants and the services' current server assignments at each config poll, so they
//! follow a service moved to other servers, a revoked grant and a deleted service (the
//! grant rows cascade) without a second copy to keep in sync.

use std::collections::HashMap;

use crate::audit::Event;
use crate::{Actor, Result, Store, StoreError};

/// How a service's port is published.
pub const PUBLISH_PROXY: &str = "proxy";
pub const PUBLISH_MESH: &str = "mesh";

/// A server-level rule derived from a grant: `src_server` may reach `dst_server` on `port`/tcp
/// because service `src_service` (running on `src_server`) was granted `dst_service`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GrantRule {
    pub src_server_id: String,
    pub src_server: String,
    pub src_address: Option<String>,
    pub dst_server_id: String,
    pub dst_server: String,
    pub dst_address: Option<String>,
    pub port: i64,
    pub src_service: String,
    pub dst_service: String,
}

/// One grant, by service names.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Grant {
    pub src_service_id: String,
    pub src_service: String,
    pub dst_service_id: String,
    pub dst_service: String,
    pub created_at: String,
}

/// A mesh endpoint of a mesh-published service: `mesh_address:port` on one server.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MeshEndpoint {
    pub server_id: String,
    pub server: String,
    pub mesh_address: Option<String>,
}

/// A rule of `mesh_policy` (added by hand), with server names.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NamedRule {
    pub id: String,
    pub src_server: String,
    pub src_address: Option<String>,
    pub dst_server: Option<String>,
    pub dst_address: Option<String>,
    pub port: i64,
    pub proto: String,
}

/// A container ServOS started on a server, as its placement records it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PlacedContainer {
    pub container_id: String,
    pub container: String,
    pub status: String,
    pub deployment_id: String,
    pub service_id: String,
    pub service: String,
}

/// The rules derived from grants, with an extra server filter spliced in; a macro so both
/// forms stay `&'static str` literals (the store's rule) and are written once.
macro_rules! grant_rules {
    ($filter:literal) => {
        concat!(
            "SELECT src.id AS src_server_id, src.name AS src_server, src.mesh_address AS src_address,
    dst.id AS dst_server_id, dst.name AS dst_server, dst.mesh_address AS dst_address, b.port AS port,
    a.name AS src_service, b.name AS dst_service
 FROM service_grants g
 JOIN services a ON a.id = g.src_service_id
 JOIN services b ON b.id = g.dst_service_id
 JOIN service_servers sa ON sa.service_id = a.id
 JOIN service_servers sb ON sb.service_id = b.id
 JOIN servers src ON src.id = sa.server_id
 JOIN servers dst ON dst.id = sb.server_id
 WHERE b.publish = 'mesh' AND b.port IS NOT NULL AND src.id <> dst.id",
            $filter,
            "
 ORDER BY a.name, b.name, src.name, dst.name"
        )
    };
}
const GRANT_RULES_ALL: &str = grant_rules!("");
const GRANT_RULES_FOR: &str = grant_rules!(" AND (src.id = $1 OR dst.id = $1)");

const GRANTS: &str = "SELECT g.src_service_id, a.name AS src_service, g.dst_service_id, b.name AS dst_service, g.created_at
     FROM service_grants g JOIN services a ON a.id = g.src_service_id JOIN services b ON b.id = g.dst_service_id
     ORDER BY b.name, a.name";

async fn service_id(tx: &mut crate::WriteTx, key: &str) -> Result<(String, String)> {
    sqlx::query_as("SELECT id, name FROM services WHERE id = $1 OR name = $1")
        .bind(key)
        .fetch_optional(&mut *tx.tx)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            kind: "service",
            key: key.to_owned(),
        })
}

impl Store {
    /// Sets how a service's port is published (`proxy` or `mesh`); takes effect at its
    /// next deploy. The caller validates (a mesh service needs a port and no domains).
    pub async fn set_service_publish(
        &self,
        actor: &Actor,
        service: &str,
        publish: &str,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        let (id, name) = service_id(&mut tx, service).await?;
        sqlx::query("UPDATE services SET publish = $1, updated_at = $2 WHERE id = $3")
            .bind(publish)
            .bind(crate::now())
            .bind(&id)
            .execute(&mut *tx.tx)
            .await?;
        self.audit(
            &mut tx,
            actor,
            Event::new("service.publish_set", "service", &id)
                .detail(serde_json::json!({ "name": name, "publish": publish })),
        )
        .await?;
        tx.commit().await
    }

    /// The publish mode of every service, by id.
    pub async fn service_publish_modes(&self) -> Result<HashMap<String, String>> {
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT id, publish FROM services")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().collect())
    }

    pub async fn service_publish(&self, service_id: &str) -> Result<String> {
        sqlx::query_scalar("SELECT publish FROM services WHERE id = $1")
            .bind(service_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                kind: "service",
                key: service_id.to_owned(),
            })
    }

    /// Lets service `src` reach service `dst` (ids or names) over the mesh. Returns the
    /// two ids. A grant that exists already is a conflict.
    pub async fn add_service_grant(
        &self,
        actor: &Actor,
        src: &str,
        dst: &str,
    ) -> Result<(String, String)> {
        let mut tx = self.write().await?;
        let (src_id, src_name) = service_id(&mut tx, src).await?;
        let (dst_id, dst_name) = service_id(&mut tx, dst).await?;
        sqlx::query("INSERT INTO service_grants (src_service_id, dst_service_id, created_at) VALUES ($1, $2, $3)")
            .bind(&src_id)
            .bind(&dst_id)
            .bind(crate::now())
            .execute(&mut *tx.tx)
            .await
            .map_err(StoreError::on_insert("grant", "from", &src_name))?;
        self.audit(
            &mut tx,
            actor,
            Event::new("service.grant_added", "service", &dst_id)
                .detail(serde_json::json!({ "from": src_name, "from_id": src_id, "to": dst_name })),
        )
        .await?;
        tx.commit().await?;
        Ok((src_id, dst_id))
    }

    /// Revokes `src`'s access to `dst`.
    pub async fn delete_service_grant(&self, actor: &Actor, src: &str, dst: &str) -> Result<()> {
        let mut tx = self.write().await?;
        let (src_id, src_name) = service_id(&mut tx, src).await?;
        let (dst_id, dst_name) = service_id(&mut tx, dst).await?;
        let done = sqlx::query(
            "DELETE FROM service_grants WHERE src_service_id = $1 AND dst_service_id = $2",
        )
        .bind(&src_id)
        .bind(&dst_id)
        .execute(&mut *tx.tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                kind: "grant",
                key: format!("{src_name} -> {dst_name}"),
            });
        }
        self.audit(
            &mut tx,
            actor,
            Event::new("service.grant_revoked", "service", &dst_id)
                .detail(serde_json::json!({ "from": src_name, "from_id": src_id, "to": dst_name })),
        )
        .await?;
        tx.commit().await
    }

    /// Every rule added by hand, with server names.
    pub async fn named_mesh_rules(&self) -> Result<Vec<NamedRule>> {
        Ok(sqlx::query_as(
            "SELECT p.id, src.name AS src_server, src.mesh_address AS src_address, dst.name AS dst_server, dst.mesh_address AS dst_address, p.port, p.proto
             FROM mesh_policy p JOIN servers src ON src.id = p.src_server_id LEFT JOIN servers dst ON dst.id = p.dst_server_id
             ORDER BY src.name, dst.name, p.port, p.id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every grant, by destination then source name.
    pub async fn service_grants(&self) -> Result<Vec<Grant>> {
        Ok(sqlx::query_as(GRANTS).fetch_all(&self.pool).await?)
    }

    /// Every server-level rule the grants produce, with names (for `GET /mesh/policy`).
    pub async fn grant_rules(&self) -> Result<Vec<GrantRule>> {
        Ok(sqlx::query_as(GRANT_RULES_ALL)
            .fetch_all(&self.pool)
            .await?)
    }

    /// The grant-derived rules that involve `server_id` (for its agent's config).
    pub async fn grant_rules_for(&self, server_id: &str) -> Result<Vec<GrantRule>> {
        Ok(sqlx::query_as(GRANT_RULES_FOR)
            .bind(server_id)
            .fetch_all(&self.pool)
            .await?)
    }

    /// The servers of a service, with their mesh addresses (for its mesh endpoints).
    pub async fn mesh_endpoints(&self, service_id: &str) -> Result<Vec<MeshEndpoint>> {
        Ok(sqlx::query_as(
            "SELECT s.id AS server_id, s.name AS server, s.mesh_address FROM service_servers ss JOIN servers s ON s.id = ss.server_id
             WHERE ss.service_id = $1 ORDER BY ss.position",
        )
        .bind(service_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records the id Docker gave the container of a placement.
    pub async fn set_container_id(
        &self,
        actor: &Actor,
        deployment_id: &str,
        server_id: &str,
        container_id: &str,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query("UPDATE deployment_servers SET container_id = $1, updated_at = $2 WHERE deployment_id = $3 AND server_id = $4")
            .bind(container_id)
            .bind(crate::now())
            .bind(deployment_id)
            .bind(server_id)
            .execute(&mut *tx.tx)
            .await?;
        self.audit(
            &mut tx,
            actor,
            Event::new("deployment.container_id", "deployment", deployment_id)
                .detail(serde_json::json!({ "server": server_id, "container_id": container_id })),
        )
        .await?;
        tx.commit().await
    }

    /// Records that the mesh-only services on a server were pointed at its new mesh
    /// address (`done`: one line per service); the change itself is on the server.
    pub async fn record_mesh_repointed(
        &self,
        actor: &Actor,
        server_id: &str,
        address: &str,
        done: &[String],
    ) -> Result<()> {
        let mut tx = self.write().await?;
        self.audit(
            &mut tx,
            actor,
            Event::new("server.mesh_services_repointed", "server", server_id)
                .detail(serde_json::json!({ "mesh_address": address, "services": done })),
        )
        .await?;
        tx.commit().await
    }

    /// The containers ServOS started on a server whose ids it knows, newest first.
    pub async fn placed_containers(&self, server_id: &str) -> Result<Vec<PlacedContainer>> {
        Ok(sqlx::query_as(
            "SELECT ds.container_id, ds.container, ds.status, ds.deployment_id, s.id AS service_id, s.name AS service
             FROM deployment_servers ds JOIN deployments d ON d.id = ds.deployment_id JOIN services s ON s.id = d.service_id
             WHERE ds.server_id = $1 AND ds.container_id IS NOT NULL ORDER BY ds.updated_at DESC",
        )
        .bind(server_id)
        .fetch_all(&self.pool)
        .await?)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_per_server_rule_query_is_the_full_one_plus_its_filter() {
        let strip = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let all = strip(super::GRANT_RULES_ALL);
        let (base, order) = all.split_once(" ORDER BY").unwrap();
        assert_eq!(
            strip(super::GRANT_RULES_FOR),
            format!("{base} AND (src.id = $1 OR dst.id = $1) ORDER BY{order}")
        );
    }
}
