//! The audit log: newest first, and a check of the hash chain.

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiResult;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// At most this many events (default 100, max 1000).
    pub limit: Option<i64>,
    /// Only events older than this sequence number (for paging).
    pub before: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventView {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub source: String,
    pub action: String,
    pub object_type: String,
    pub object_id: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    pub hash: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChainView {
    pub ok: bool,
    pub rows: i64,
    pub head_seq: i64,
    pub head_hash: String,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", security(("bearer" = [])), params(AuditQuery),
    responses((status = 200, body = [AuditEventView])))]
pub async fn list(State(state): State<AppState>, _caller: Caller, Query(q): Query<AuditQuery>) -> ApiResult<Json<Vec<AuditEventView>>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = state.store().audit_list(limit, q.before).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| AuditEventView {
                seq: r.seq,
                at: r.at,
                actor: r.actor,
                source: r.source,
                action: r.action,
                object_type: r.object_type,
                object_id: r.object_id,
                detail: serde_json::from_str(&r.detail).unwrap_or(serde_json::Value::String(r.detail)),
                hash: r.hash,
            })
            .collect(),
    ))
}

#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit", security(("bearer" = [])),
    responses((status = 200, body = ChainView), (status = 500, description = "The chain is broken; the message names the first bad event")))]
pub async fn verify(State(state): State<AppState>, _caller: Caller) -> ApiResult<Json<ChainView>> {
    let r = state.store().audit_verify().await?;
    Ok(Json(ChainView { ok: true, rows: r.rows, head_seq: r.head_seq, head_hash: r.head_hash }))
}
