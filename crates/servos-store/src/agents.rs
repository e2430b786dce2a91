//! The node agents and the mesh: enrolment tokens and agent credentials (SHA-256 only),
//! mesh addresses, public keys and endpoints, heartbeats and online state, mesh policy.

use std::net::Ipv4Addr;

use crate::{
    Result, Store, StoreError,
    audit::{Actor, Event},
    new_id, now,
};

/// Mesh addresses are allocated from 10.77.0.0/16 (host part 1 … 65534).
pub const MESH_PREFIX: u8 = 16;

fn mesh_address(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 77, 0, 0)) + n)
}

/// A server's agent as the API shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AgentInfo {
    pub server_id: String,
    pub server_name: String,
    pub mesh_address: Option<String>,
    pub public_key: Option<String>,
    pub enrolled: bool,
    pub online: bool,
    pub last_heartbeat_at: Option<String>,
    pub heartbeat: Option<String>,
}

/// A peer as sent to agents.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MeshPeer {
    pub server_id: String,
    pub public_key: String,
    pub host: String,
    pub listen_port: i64,
    pub mesh_address: String,
}

/// A mesh policy rule, addresses resolved.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MeshRule {
    pub id: String,
    pub src_server_id: String,
    pub src_address: Option<String>,
    pub dst_server_id: Option<String>,
    pub dst_address: Option<String>,
    pub port: i64,
    pub proto: String,
}

type AgentRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    Option<String>,
    Option<String>,
);

const AGENT_SELECT: &str = "SELECT s.id, s.name, s.mesh_address, a.public_key, a.credential_hash, COALESCE(a.online, 0), a.last_heartbeat_at, a.heartbeat
     FROM servers s LEFT JOIN agents a ON a.server_id = s.id WHERE s.id = $1 OR s.name = $1";

impl Store {
    /// Issues a one-time enrolment token (its hash is stored) for a server, allocating the
    /// server's mesh address if it has none. A new token also revokes the current agent
    /// credential: re-enrolment is how a credential is rotated. Returns the mesh address.
    pub async fn issue_agent_enrolment(
        &self,
        actor: &Actor,
        server: &str,
        token_hash: &str,
    ) -> Result<(String, String)> {
        let mut tx = self.write().await?;
        let (id, address) = server_mesh_address(&mut tx, server).await?;
        let address = match address {
            Some(a) => a,
            None => {
                let taken: Vec<(Option<String>,)> = sqlx::query_as(
                    "SELECT mesh_address FROM servers WHERE mesh_address IS NOT NULL",
                )
                .fetch_all(&mut *tx.tx)
                .await?;
                let taken: std::collections::HashSet<String> =
                    taken.into_iter().filter_map(|(a,)| a).collect();
                let free = (1..65535u32)
                    .map(|n| mesh_address(n).to_string())
                    .find(|a| !taken.contains(a))
                    .ok_or_else(|| StoreError::Conflict {
                        kind: "mesh address",
                        field: "range",
                        value: "10.77.0.0/16 is full".into(),
                    })?;
                sqlx::query("UPDATE servers SET mesh_address = $1, updated_at = $2 WHERE id = $3")
                    .bind(&free)
                    .bind(now())
                    .bind(&id)
                    .execute(&mut *tx.tx)
                    .await?;
                free
            }
        };
        let at = now();
        sqlx::query(
            "INSERT INTO agents (server_id, enrol_token_hash, online, created_at, updated_at) VALUES ($1, $2, 0, $3, $3)
             ON CONFLICT (server_id) DO UPDATE SET enrol_token_hash = $2, credential_hash = NULL, online = 0, updated_at = $3",
        )
        .bind(&id)
        .bind(token_hash)
        .bind(&at)
        .execute(&mut *tx.tx)
        .await?;
        self.audit(
            &mut tx,
            actor,
            Event::new("agent.enrolment_issued", "server", &id)
                .detail(serde_json::json!({ "mesh_address": address })),
        )
        .await?;
        tx.commit().await?;
        Ok((id, address))
    }

    /// Gives a server a new mesh address (already validated to lie in the mesh range);
    /// its agent re-addresses its interface and the other agents update the peer from
    /// their next configuration. Returns the server id.
    pub async fn set_mesh_address(
        &self,
        actor: &Actor,
        server: &str,
        address: Ipv4Addr,
    ) -> Result<String> {
        let mut tx = self.write().await?;
        let (id, old) = server_mesh_address(&mut tx, server).await?;
        let address = address.to_string();
        let taken: Option<(String,)> =
            sqlx::query_as("SELECT id FROM servers WHERE mesh_address = $1 AND id <> $2")
                .bind(&address)
                .bind(&id)
                .fetch_optional(&mut *tx.tx)
                .await?;
        if taken.is_some() {
            return Err(StoreError::Conflict {
                kind: "server",
                field: "mesh address",
                value: address,
            });
        }
        sqlx::query("UPDATE servers SET mesh_address = $1, updated_at = $2 WHERE id = $3")
            .bind(&address)
            .bind(now())
            .bind(&id)
            .execute(&mut *tx.tx)
            .await?;
        self.audit(
            &mut tx,
            actor,
            Event::new("server.mesh_address_changed", "server", &id)
                .detail(serde_json::json!({ "from": old, "to": address })),
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The mesh address of the server whose agent this is.
    pub async fn own_mesh_address(&self, server_id: &str) -> Result<Option<String>> {
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT mesh_address FROM servers WHERE id = $1")
                .bind(server_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.and_then(|(a,)| a))
    }

    /// Exchanges a valid enrolment token for a credential (hash stored); the token is
    /// used up. `None` when the token does not match.
    pub async fn enrol_agent(
        &self,
        server_id: &str,
        token_hash: &str,
        credential_hash: &str,
        public_key: &str,
        listen_port: u16,
        source: &str,
    ) -> Result<Option<String>> {
        let mut tx = self.write().await?;
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT a.server_id, s.name FROM agents a JOIN servers s ON s.id = a.server_id
             WHERE a.server_id = $1 AND a.enrol_token_hash = $2",
        )
        .bind(server_id)
        .bind(token_hash)
        .fetch_optional(&mut *tx.tx)
        .await?;
        let Some((id, name)) = row else {
            return Ok(None);
        };
        sqlx::query(
            "UPDATE agents SET enrol_token_hash = NULL, credential_hash = $1, public_key = $2, listen_port = $3, updated_at = $4
             WHERE server_id = $5",
        )
        .bind(credential_hash)
        .bind(public_key)
        .bind(i64::from(listen_port))
        .bind(now())
        .bind(&id)
        .execute(&mut *tx.tx)
        .await?;
        let actor = Actor {
            name: format!("agent:{name}"),
            source: source.to_owned(),
        };
        self.audit(
            &mut tx,
            &actor,
            Event::new("agent.enrolled", "server", &id).detail(
                serde_json::json!({ "public_key": public_key, "listen_port": listen_port }),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(id))
    }

    /// The server whose agent holds this credential.
    pub async fn agent_for_credential(
        &self,
        credential_hash: &str,
    ) -> Result<Option<(String, String)>> {
        Ok(sqlx::query_as(
            "SELECT a.server_id, s.name FROM agents a JOIN servers s ON s.id = a.server_id WHERE a.credential_hash = $1",
        )
        .bind(credential_hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Records a heartbeat. A server coming (back) online, or changing its public key, is
    /// audited; plain heartbeats are telemetry and are not.
    pub async fn agent_heartbeat(
        &self,
        server_id: &str,
        public_key: &str,
        heartbeat: &str,
        source: &str,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        let before: Option<(i64, Option<String>, String)> = sqlx::query_as(
            "SELECT a.online, a.public_key, s.name FROM agents a JOIN servers s ON s.id = a.server_id WHERE a.server_id = $1",
        )
        .bind(server_id)
        .fetch_optional(&mut *tx.tx)
        .await?;
        let Some((online, old_key, name)) = before else {
            return Err(StoreError::NotFound {
                kind: "agent",
                key: server_id.to_owned(),
            });
        };
        sqlx::query("UPDATE agents SET online = 1, last_heartbeat_at = $1, heartbeat = $2, public_key = $3, updated_at = $1 WHERE server_id = $4")
            .bind(now())
            .bind(heartbeat)
            .bind(public_key)
            .bind(server_id)
            .execute(&mut *tx.tx)
            .await?;
        let actor = Actor {
            name: format!("agent:{name}"),
            source: source.to_owned(),
        };
        if online == 0 {
            self.audit(
                &mut tx,
                &actor,
                Event::new("agent.online", "server", server_id),
            )
            .await?;
        }
        if old_key.as_deref() != Some(public_key) && old_key.is_some() {
            self.audit(
                &mut tx,
                &actor,
                Event::new("agent.key_changed", "server", server_id)
                    .detail(serde_json::json!({ "public_key": public_key })),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Marks agents silent since before `cutoff` offline, one audit alert each; returns
    /// the names of the servers that went offline.
    pub async fn mark_silent_agents_offline(&self, cutoff: &str) -> Result<Vec<String>> {
        let mut tx = self.write().await?;
        let silent: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT a.server_id, s.name, a.last_heartbeat_at FROM agents a JOIN servers s ON s.id = a.server_id
             WHERE a.online = 1 AND (a.last_heartbeat_at IS NULL OR a.last_heartbeat_at < $1)",
        )
        .bind(cutoff)
        .fetch_all(&mut *tx.tx)
        .await?;
        for (id, name, last) in &silent {
            sqlx::query("UPDATE agents SET online = 0, updated_at = $1 WHERE server_id = $2")
                .bind(now())
                .bind(id)
                .execute(&mut *tx.tx)
                .await?;
            self.audit(&mut tx, &Actor::system(), Event::new("agent.offline", "server", id)
                .detail(serde_json::json!({ "server": name, "last_heartbeat_at": last, "alert": "agent went silent" }))).await?;
        }
        tx.commit().await?;
        Ok(silent.into_iter().map(|(_, name, _)| name).collect())
    }

    pub async fn agent_info(&self, server: &str) -> Result<AgentInfo> {
        let row: Option<AgentRow> = sqlx::query_as(AGENT_SELECT)
            .bind(server)
            .fetch_optional(&self.pool)
            .await?;
        let (
            server_id,
            server_name,
            mesh_address,
            public_key,
            credential,
            online,
            last_heartbeat_at,
            heartbeat,
        ) = row.ok_or_else(|| StoreError::NotFound {
            kind: "server",
            key: server.to_owned(),
        })?;
        Ok(AgentInfo {
            server_id,
            server_name,
            mesh_address,
            public_key,
            enrolled: credential.is_some(),
            online: online != 0,
            last_heartbeat_at,
            heartbeat,
        })
    }

    /// Every enrolled agent except `server_id`'s, with its endpoint (the server's SSH host).
    pub async fn mesh_peers(&self, server_id: &str) -> Result<Vec<MeshPeer>> {
        Ok(sqlx::query_as(
            "SELECT s.id AS server_id, a.public_key, s.host, a.listen_port, s.mesh_address FROM agents a JOIN servers s ON s.id = a.server_id
             WHERE a.server_id <> $1 AND a.credential_hash IS NOT NULL AND a.public_key IS NOT NULL
               AND a.listen_port IS NOT NULL AND s.mesh_address IS NOT NULL ORDER BY s.mesh_address",
        )
        .bind(server_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Policy rules that involve `server_id` (as source or destination, or any destination).
    pub async fn mesh_rules_for(&self, server_id: &str) -> Result<Vec<MeshRule>> {
        Ok(sqlx::query_as(
            "SELECT p.id, p.src_server_id, src.mesh_address AS src_address, p.dst_server_id, dst.mesh_address AS dst_address, p.port, p.proto
             FROM mesh_policy p JOIN servers src ON src.id = p.src_server_id LEFT JOIN servers dst ON dst.id = p.dst_server_id
             WHERE p.src_server_id = $1 OR p.dst_server_id = $1 OR p.dst_server_id IS NULL ORDER BY p.created_at, p.id",
        )
        .bind(server_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Allows `src` to reach `dst` (any server when None) on `port`/`proto`.
    pub async fn add_mesh_rule(
        &self,
        actor: &Actor,
        src: &str,
        dst: Option<&str>,
        port: u16,
        proto: &str,
    ) -> Result<String> {
        let mut tx = self.write().await?;
        let server_id = |key: String| async move {
            let r: Option<(String,)> =
                sqlx::query_as("SELECT id FROM servers WHERE id = $1 OR name = $1")
                    .bind(&key)
                    .fetch_optional(&self.pool)
                    .await?;
            r.map(|(id,)| id).ok_or(StoreError::NotFound {
                kind: "server",
                key,
            })
        };
        let src_id = server_id(src.to_owned()).await?;
        let dst_id = match dst {
            Some(d) => Some(server_id(d.to_owned()).await?),
            None => None,
        };
        let id = new_id();
        sqlx::query("INSERT INTO mesh_policy (id, src_server_id, dst_server_id, port, proto, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&id)
            .bind(&src_id)
            .bind(&dst_id)
            .bind(i64::from(port))
            .bind(proto)
            .bind(now())
            .execute(&mut *tx.tx)
            .await?;
        self.audit(
            &mut tx,
            actor,
            Event::new("mesh.rule_added", "mesh_rule", &id).detail(
                serde_json::json!({ "src": src_id, "dst": dst_id, "port": port, "proto": proto }),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn delete_mesh_rule(&self, actor: &Actor, id: &str) -> Result<()> {
        let mut tx = self.write().await?;
        let done = sqlx::query("DELETE FROM mesh_policy WHERE id = $1")
            .bind(id)
            .execute(&mut *tx.tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                kind: "mesh rule",
                key: id.to_owned(),
            });
        }
        self.audit(
            &mut tx,
            actor,
            Event::new("mesh.rule_deleted", "mesh_rule", id),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// A server's id and mesh address (if it has one yet), by id or name, read inside the
/// write transaction that changes them.
async fn server_mesh_address(tx: &mut crate::WriteTx, server: &str) -> Result<(String, Option<String>)> {
    let found: Option<(String, Option<String>)> =
        sqlx::query_as("SELECT id, mesh_address FROM servers WHERE id = $1 OR name = $1")
            .bind(server)
            .fetch_optional(&mut *tx.tx)
            .await?;
    found.ok_or_else(|| StoreError::NotFound {
        kind: "server",
        key: server.to_owned(),
    })
}
