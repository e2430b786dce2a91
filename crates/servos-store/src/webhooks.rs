//! Webhook deliveries: each delivery id of a service is accepted once, and the
//! deployment it queues is written in the same transaction as the id, so a replayed or
//! concurrently repeated delivery can never queue twice (the primary key
//! `(service_id, delivery_id)` decides, on SQLite and PostgreSQL alike).
//!
//! Rejected deliveries are audited here too, as the HTTP side has coalesced them.

use crate::audit::Event;
use crate::deployments::DeploymentRequest;
use crate::services::ServiceRecord;
use crate::{Actor, Result, Store};

/// How long delivery ids are remembered. Forges retry within hours and allow manual
/// redelivery for a few days; older ids are pruned when the service gets a new one.
const KEEP_DELIVERIES_DAYS: i64 = 30;

/// What became of an authentic push delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// A new deployment was queued.
    Queued { deployment_id: String },
    /// This delivery id was seen before; nothing was queued. The deployment the first
    /// delivery queued, when there was one.
    Duplicate { deployment_id: Option<String> },
}

/// One coalesced record of rejected deliveries (bad or missing signatures).
#[derive(Debug, Clone)]
pub struct Rejections<'a> {
    /// The service id from the URL, or `unknown` when no such service exists.
    pub object_id: &'a str,
    /// `github`, `gitlab` or `gitea`.
    pub provider: &'a str,
    /// How many deliveries this record stands for.
    pub count: u64,
    /// Counts by reason (`missing_signature`, `bad_signature`, `unknown_service`).
    pub reasons: serde_json::Value,
    /// The window the count covers, in seconds (0 for a first, immediate record).
    pub window_secs: u64,
}

impl Store {
    /// Records `delivery_id` for `service` and queues a deployment of `commit`, in one
    /// transaction; or reports a duplicate and changes nothing.
    pub async fn accept_webhook_delivery(
        &self,
        actor: &Actor,
        service: &ServiceRecord,
        provider: &str,
        delivery_id: &str,
        commit: &str,
    ) -> Result<DeliveryOutcome> {
        let now = crate::now();
        let mut tx = self.write().await?;
        let inserted = sqlx::query(
            "INSERT INTO webhook_deliveries (service_id, delivery_id, received_at) VALUES ($1, $2, $3)
             ON CONFLICT (service_id, delivery_id) DO NOTHING",
        )
        .bind(&service.id)
        .bind(delivery_id)
        .bind(&now)
        .execute(&mut *tx.tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            let deployment_id: Option<String> =
                sqlx::query_scalar("SELECT deployment_id FROM webhook_deliveries WHERE service_id = $1 AND delivery_id = $2")
                    .bind(&service.id)
                    .bind(delivery_id)
                    .fetch_optional(&mut *tx.tx)
                    .await?
                    .flatten();
            // Nothing was written: dropping the transaction rolls it back.
            return Ok(DeliveryOutcome::Duplicate { deployment_id });
        }
        let request = DeploymentRequest { image: None, git_ref: Some(commit) };
        let deployment_id = self.queue_deployment_in(&mut tx, actor, service, &request).await?;
        sqlx::query("UPDATE webhook_deliveries SET deployment_id = $1 WHERE service_id = $2 AND delivery_id = $3")
            .bind(&deployment_id)
            .bind(&service.id)
            .bind(delivery_id)
            .execute(&mut *tx.tx)
            .await?;
        let cutoff = crate::format_time(time::OffsetDateTime::now_utc() - time::Duration::days(KEEP_DELIVERIES_DAYS));
        sqlx::query("DELETE FROM webhook_deliveries WHERE service_id = $1 AND received_at < $2")
            .bind(&service.id)
            .bind(cutoff)
            .execute(&mut *tx.tx)
            .await?;
        self.audit(
            &mut tx,
            actor,
            Event::new("webhook.accepted", "service", &service.id).detail(serde_json::json!({
                "provider": provider,
                "delivery_id": delivery_id,
                "commit": commit,
                "deployment": deployment_id,
            })),
        )
        .await?;
        tx.commit().await?;
        Ok(DeliveryOutcome::Queued { deployment_id })
    }

    /// Appends one `webhook.rejected` audit event standing for `r.count` deliveries.
    pub async fn audit_webhook_rejections(&self, actor: &Actor, r: &Rejections<'_>) -> Result<()> {
        let mut tx = self.write().await?;
        self.audit(
            &mut tx,
            actor,
            Event::new("webhook.rejected", "service", r.object_id).detail(serde_json::json!({
                "provider": r.provider,
                "count": r.count,
                "reasons": r.reasons,
                "window_secs": r.window_secs,
            })),
        )
        .await?;
        tx.commit().await
    }
}
