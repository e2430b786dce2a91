//! The audit log: an append-only, hash-chained record of every change.
//!
//! Each row carries `prev_hash` (the previous row's hash) and `hash`, an HMAC-SHA256
//! under a key derived from the master key over the previous hash and the row's fields.
//! Editing, deleting or inserting a row breaks the chain at that point, and someone who
//! can write to the database but lacks the master key cannot rebuild a valid chain.
//! Truncating the newest rows is detected against a head recorded elsewhere
//! (`servos audit verify` prints it).

use serde::Serialize;
use sqlx::Row as _;

use crate::{Result, Store, StoreError, WriteTx};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who made a change, and from where.
#[derive(Debug, Clone)]
pub struct Actor {
    /// `user:NAME`, `system`, `webhook`, `agent:SERVER` …
    pub name: String,
    /// The client address, or `local` for the CLI on the control plane host.
    pub source: String,
}

impl Actor {
    pub fn user(username: &str, source: impl Into<String>) -> Self {
        Self { name: format!("user:{username}"), source: source.into() }
    }

    pub fn system() -> Self {
        Self { name: "system".into(), source: "local".into() }
    }
}

/// What happened to which object. `detail` must never hold a secret value.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub action: &'a str,
    pub object_type: &'a str,
    pub object_id: &'a str,
    pub detail: serde_json::Value,
}

impl<'a> Event<'a> {
    pub fn new(action: &'a str, object_type: &'a str, object_id: &'a str) -> Self {
        Self { action, object_type, object_id, detail: serde_json::Value::Null }
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
}

/// A stored audit row.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditRecord {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub source: String,
    pub action: String,
    pub object_type: String,
    pub object_id: String,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The result of checking the whole chain.
#[derive(Debug, Clone, Serialize)]
pub struct ChainReport {
    pub rows: i64,
    pub head_seq: i64,
    pub head_hash: String,
}

struct Fields<'a> {
    seq: i64,
    at: &'a str,
    actor: &'a str,
    source: &'a str,
    action: &'a str,
    object_type: &'a str,
    object_id: &'a str,
    detail: &'a str,
}

fn chain_hash(vault: &servos_core::Vault, prev: &str, f: &Fields<'_>) -> String {
    // A JSON array is an unambiguous encoding of the fields (no separator confusion).
    let canonical = serde_json::json!([
        prev, f.seq, f.at, f.actor, f.source, f.action, f.object_type, f.object_id, f.detail
    ])
    .to_string();
    vault.chain_mac(canonical.as_bytes())
}

impl Store {
    /// Appends one event inside the caller's write transaction.
    pub async fn audit(&self, tx: &mut WriteTx, actor: &Actor, event: Event<'_>) -> Result<()> {
        let last = sqlx::query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx.tx)
            .await?;
        let (prev_seq, prev_hash) = match last {
            Some(row) => (row.try_get::<i64, _>(0)?, row.try_get::<String, _>(1)?),
            None => (0, GENESIS.to_owned()),
        };
        let at = crate::now();
        let detail = event.detail.to_string();
        let fields = Fields {
            seq: prev_seq + 1,
            at: &at,
            actor: &actor.name,
            source: &actor.source,
            action: event.action,
            object_type: event.object_type,
            object_id: event.object_id,
            detail: &detail,
        };
        let hash = chain_hash(&self.vault, &prev_hash, &fields);
        sqlx::query(
            "INSERT INTO audit_events (seq, at, actor, source, action, object_type, object_id, detail, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(fields.seq)
        .bind(&at)
        .bind(&actor.name)
        .bind(&actor.source)
        .bind(event.action)
        .bind(event.object_type)
        .bind(event.object_id)
        .bind(&detail)
        .bind(&prev_hash)
        .bind(&hash)
        .execute(&mut *tx.tx)
        .await?;
        Ok(())
    }

    /// Appends one event in a transaction of its own.
    pub async fn audit_now(&self, actor: &Actor, event: Event<'_>) -> Result<()> {
        let mut tx = self.write().await?;
        self.audit(&mut tx, actor, event).await?;
        tx.commit().await
    }

    /// The newest events first, at most `limit`, optionally only before `before_seq`.
    pub async fn audit_list(&self, limit: i64, before_seq: Option<i64>) -> Result<Vec<AuditRecord>> {
        Ok(sqlx::query_as::<_, AuditRecord>(
            "SELECT seq, at, actor, source, action, object_type, object_id, detail, prev_hash, hash
             FROM audit_events WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
        )
        .bind(before_seq.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Checks the whole chain; the error names the first bad row.
    pub async fn audit_verify(&self) -> Result<ChainReport> {
        let rows = sqlx::query_as::<_, AuditRecord>(
            "SELECT seq, at, actor, source, action, object_type, object_id, detail, prev_hash, hash
             FROM audit_events ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await?;
        verify_rows(&self.vault, &rows)
    }
}

pub(crate) fn verify_rows(vault: &servos_core::Vault, rows: &[AuditRecord]) -> Result<ChainReport> {
    let mut prev = GENESIS.to_owned();
    let mut expected_seq = 1;
    for r in rows {
        if r.seq != expected_seq {
            return Err(StoreError::Corrupt(format!(
                "audit chain: expected event {expected_seq}, found {} (events deleted or inserted)",
                r.seq
            )));
        }
        if r.prev_hash != prev {
            return Err(StoreError::Corrupt(format!("audit chain: event {} does not follow event {}", r.seq, r.seq - 1)));
        }
        let want = chain_hash(vault, &prev, &fields_of(r));
        if want != r.hash {
            return Err(StoreError::Corrupt(format!("audit chain: event {} was altered", r.seq)));
        }
        prev = r.hash.clone();
        expected_seq += 1;
    }
    Ok(ChainReport { rows: rows.len() as i64, head_seq: expected_seq - 1, head_hash: prev })
}

fn fields_of(r: &AuditRecord) -> Fields<'_> {
    Fields {
        seq: r.seq,
        at: &r.at,
        actor: &r.actor,
        source: &r.source,
        action: &r.action,
        object_type: &r.object_type,
        object_id: &r.object_id,
        detail: &r.detail,
    }
}

/// Recomputes every hash under `new_vault` after checking the chain under `old_vault`
/// (used by key rotation; a broken chain is refused, not laundered).
pub(crate) async fn rechain(
    tx: &mut WriteTx,
    old_vault: &servos_core::Vault,
    new_vault: &servos_core::Vault,
) -> Result<i64> {
    let rows = sqlx::query_as::<_, AuditRecord>(
        "SELECT seq, at, actor, source, action, object_type, object_id, detail, prev_hash, hash
         FROM audit_events ORDER BY seq",
    )
    .fetch_all(&mut *tx.tx)
    .await?;
    verify_rows(old_vault, &rows)?;
    let mut prev = GENESIS.to_owned();
    for r in &rows {
        let hash = chain_hash(new_vault, &prev, &fields_of(r));
        sqlx::query("UPDATE audit_events SET prev_hash = $1, hash = $2 WHERE seq = $3")
            .bind(&prev)
            .bind(&hash)
            .bind(r.seq)
            .execute(&mut *tx.tx)
            .await?;
        prev = hash;
    }
    Ok(rows.len() as i64)
}
