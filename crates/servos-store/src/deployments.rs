//! Deployments: the stored job queue that runs them, their log lines, and where their
//! containers run (`deployment_servers`), which is how the control plane knows what runs
//! where and what a crash left behind.
//!
//! The queue: a deployment row and a `jobs` row (`kind = deploy`, `lock_key` = service id)
//! are inserted together. [`Store::claim_job`] hands out the oldest queued job whose lock key
//! has no running job, so two jobs of one service never run at once while jobs of different
//! services do. One control plane process runs jobs (its writers are serialised by
//! [`Store::write`]); several control planes on one database are not supported.
//!
//! Log lines are stored as given: the caller (the deploy engine) redacts secrets first.
//! They are not audited (they describe work, not state); every state change here is.

use serde::Serialize;
use servos_core::model::DeploymentStatus;

use crate::audit::Event;
use crate::{Actor, Result, Store, StoreError, WriteTx};

/// The job kind of a deployment.
pub const DEPLOY_JOB: &str = "deploy";

/// A deployment as stored. `image` is what was asked for (a tag, or a digest for a
/// rollback); `image_digest` is what it resolved to on the first server.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeploymentRecord {
    pub id: String,
    pub service_id: String,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    pub image: Option<String>,
    pub image_digest: Option<String>,
    /// For a service built from git: the branch, tag or commit asked for (none: the
    /// service's branch). Once built, the commit SHA the image was built from.
    pub git_ref: Option<String>,
    pub triggered_by: String,
    pub error: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// One stored line of a deployment's log. `stream` is `step`, `output` or `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct LogLine {
    pub seq: i64,
    pub at: String,
    pub stream: String,
    pub line: String,
}

/// A row of the job queue.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct JobRecord {
    pub id: String,
    pub kind: String,
    /// For a deploy: the deployment id.
    pub subject_id: String,
    /// Jobs with the same lock key never run at once (for a deploy: the service id).
    pub lock_key: String,
    pub status: String,
    pub attempts: i64,
    pub payload: String,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// What a new deployment should deploy. Both `None`: the service's image, or for a
/// service built from git, the head of its branch.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeploymentRequest<'a> {
    pub image: Option<&'a str>,
    pub git_ref: Option<&'a str>,
}

/// Where one deployment put its container on one server.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Placement {
    pub deployment_id: String,
    pub server_id: String,
    pub position: i64,
    /// `starting`, `started`, `running`, `stopped`, `failed`, `retired` or `removed`.
    pub status: String,
    pub container: String,
    /// The secret env file on the server while it may exist (status `starting`).
    pub env_file: Option<String>,
    pub updated_at: String,
}

const DEPLOYMENT_COLUMNS_GET: &str = "SELECT id, service_id, status, image, image_digest, git_ref, triggered_by, error, created_at, started_at, finished_at FROM deployments WHERE id = $1";
const DEPLOYMENT_COLUMNS_LIST: &str = "SELECT id, service_id, status, image, image_digest, git_ref, triggered_by, error, created_at, started_at, finished_at FROM deployments WHERE service_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2";
const DEPLOYMENT_COLUMNS_SUCCEEDED: &str = "SELECT id, service_id, status, image, image_digest, git_ref, triggered_by, error, created_at, started_at, finished_at FROM deployments WHERE service_id = $1 AND status = 'succeeded' ORDER BY finished_at DESC, id DESC";
const JOB_COLUMNS_NEXT: &str = "SELECT id, kind, subject_id, lock_key, status, attempts, payload, created_at, started_at, finished_at FROM jobs
     WHERE status = 'queued' AND lock_key NOT IN (SELECT lock_key FROM jobs WHERE status = 'running')
     ORDER BY created_at, id LIMIT 1";
const JOB_COLUMNS_RUNNING: &str = "SELECT id, kind, subject_id, lock_key, status, attempts, payload, created_at, started_at, finished_at FROM jobs WHERE status = 'running' ORDER BY created_at, id";
const PLACEMENT_COLUMNS_OF_DEPLOYMENT: &str = "SELECT deployment_id, server_id, position, status, container, env_file, updated_at FROM deployment_servers WHERE deployment_id = $1 ORDER BY position";
const PLACEMENT_COLUMNS_OF_SERVICE: &str = "SELECT p.deployment_id, p.server_id, p.position, p.status, p.container, p.env_file, p.updated_at
     FROM deployment_servers p JOIN deployments d ON d.id = p.deployment_id
     WHERE d.service_id = $1 AND p.status IN ('running', 'stopped') ORDER BY p.position, p.updated_at";

/// What to record about one server of a deployment.
#[derive(Debug, Clone)]
pub struct PlacementUpdate<'a> {
    pub deployment_id: &'a str,
    pub server_id: &'a str,
    pub position: i64,
    pub status: &'a str,
    pub container: &'a str,
    pub env_file: Option<&'a str>,
}

impl Store {
    /// Queues a deployment of `image` (or the service's configured image) and its job, in
    /// one transaction.
    pub async fn queue_deployment(&self, actor: &Actor, service_id: &str, image: Option<&str>) -> Result<DeploymentRecord> {
        self.queue_deployment_of(actor, service_id, &DeploymentRequest { image, git_ref: None }).await
    }

    /// Queues a deployment as `request` describes, and its job, in one transaction.
    pub async fn queue_deployment_of(
        &self,
        actor: &Actor,
        service_id: &str,
        request: &DeploymentRequest<'_>,
    ) -> Result<DeploymentRecord> {
        let service = self.get_service(service_id).await?;
        let mut tx = self.write().await?;
        let id = self.queue_deployment_in(&mut tx, actor, &service, request).await?;
        tx.commit().await?;
        self.get_deployment(&id).await
    }

    /// Inserts a queued deployment, its job and the audit event inside the caller's
    /// transaction (so a caller can tie it to other writes, e.g. a webhook delivery id).
    /// Returns the new deployment's id.
    pub async fn queue_deployment_in(
        &self,
        tx: &mut WriteTx,
        actor: &Actor,
        service: &crate::services::ServiceRecord,
        request: &DeploymentRequest<'_>,
    ) -> Result<String> {
        let image = request.image.map(str::to_owned).or(service.image.clone());
        let id = crate::new_id();
        let now = crate::now();
        sqlx::query(
            "INSERT INTO deployments (id, service_id, status, image, git_ref, triggered_by, created_at) VALUES ($1, $2, 'queued', $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(&service.id)
        .bind(&image)
        .bind(request.git_ref)
        .bind(&actor.name)
        .bind(&now)
        .execute(&mut *tx.tx)
        .await?;
        sqlx::query(
            "INSERT INTO jobs (id, kind, subject_id, lock_key, status, attempts, payload, created_at) VALUES ($1, $2, $3, $4, 'queued', 0, '{}', $5)",
        )
        .bind(crate::new_id())
        .bind(DEPLOY_JOB)
        .bind(&id)
        .bind(&service.id)
        .bind(&now)
        .execute(&mut *tx.tx)
        .await?;
        self.audit(
            tx,
            actor,
            Event::new("deployment.queued", "deployment", &id).detail(serde_json::json!({
                "service": service.id,
                "service_name": service.name,
                "image": image,
                "git_ref": request.git_ref,
            })),
        )
        .await?;
        Ok(id)
    }

    pub async fn get_deployment(&self, id: &str) -> Result<DeploymentRecord> {
        sqlx::query_as::<_, DeploymentRecord>(DEPLOYMENT_COLUMNS_GET)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound { kind: "deployment", key: id.into() })
    }

    /// The newest deployments of a service first, at most `limit`.
    pub async fn list_deployments(&self, service_id: &str, limit: i64) -> Result<Vec<DeploymentRecord>> {
        Ok(sqlx::query_as::<_, DeploymentRecord>(DEPLOYMENT_COLUMNS_LIST)
            .bind(service_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Succeeded deployments of a service, the most recently finished first.
    pub async fn succeeded_deployments(&self, service_id: &str) -> Result<Vec<DeploymentRecord>> {
        Ok(sqlx::query_as::<_, DeploymentRecord>(DEPLOYMENT_COLUMNS_SUCCEEDED)
            .bind(service_id)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Stored log lines of a deployment with `seq > after_seq`, in order.
    pub async fn deployment_logs(&self, id: &str, after_seq: i64) -> Result<Vec<LogLine>> {
        Ok(sqlx::query_as::<_, LogLine>(
            "SELECT seq, at, stream, line FROM deployment_logs WHERE deployment_id = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(id)
        .bind(after_seq)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Appends one (already redacted) line to a deployment's log and returns it.
    pub async fn append_deployment_log(&self, id: &str, stream: &str, line: &str) -> Result<LogLine> {
        let mut tx = self.write().await?;
        let last: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM deployment_logs WHERE deployment_id = $1")
            .bind(id)
            .fetch_one(&mut *tx.tx)
            .await?;
        let entry = LogLine { seq: last.unwrap_or(0) + 1, at: crate::now(), stream: stream.to_owned(), line: line.to_owned() };
        sqlx::query("INSERT INTO deployment_logs (deployment_id, seq, at, stream, line) VALUES ($1, $2, $3, $4, $5)")
            .bind(id)
            .bind(entry.seq)
            .bind(&entry.at)
            .bind(&entry.stream)
            .bind(&entry.line)
            .execute(&mut *tx.tx)
            .await?;
        tx.commit().await?;
        Ok(entry)
    }

    /// Takes the oldest queued job whose lock key has no running job, marks it (and its
    /// deployment) running, and returns it; `None` when nothing can start now.
    pub async fn claim_job(&self, actor: &Actor) -> Result<Option<JobRecord>> {
        let mut tx = self.write().await?;
        let Some(job) = sqlx::query_as::<_, JobRecord>(JOB_COLUMNS_NEXT).fetch_optional(&mut *tx.tx).await? else {
            return Ok(None);
        };
        let now = crate::now();
        sqlx::query("UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = $1 WHERE id = $2")
            .bind(&now)
            .bind(&job.id)
            .execute(&mut *tx.tx)
            .await?;
        if job.kind == DEPLOY_JOB {
            sqlx::query("UPDATE deployments SET status = 'running', started_at = $1 WHERE id = $2")
                .bind(&now)
                .bind(&job.subject_id)
                .execute(&mut *tx.tx)
                .await?;
            self.audit(&mut tx, actor, Event::new("deployment.started", "deployment", &job.subject_id)).await?;
        }
        tx.commit().await?;
        Ok(Some(JobRecord { status: "running".into(), attempts: job.attempts + 1, started_at: Some(now), ..job }))
    }

    /// Jobs marked running: at start-up, these were interrupted by a crash.
    pub async fn running_jobs(&self) -> Result<Vec<JobRecord>> {
        Ok(sqlx::query_as::<_, JobRecord>(JOB_COLUMNS_RUNNING).fetch_all(&self.pool).await?)
    }

    /// Records the digest the deployment's image resolved to.
    pub async fn set_deployment_digest(&self, actor: &Actor, id: &str, digest: &str) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query("UPDATE deployments SET image_digest = $1 WHERE id = $2")
            .bind(digest)
            .bind(id)
            .execute(&mut *tx.tx)
            .await?;
        self.audit(
            &mut tx,
            actor,
            Event::new("deployment.image_resolved", "deployment", id).detail(serde_json::json!({ "digest": digest })),
        )
        .await?;
        tx.commit().await
    }

    /// Ends a deployment (`succeeded`, `failed` or `cancelled`) and its job. `error` must
    /// already be redacted.
    pub async fn finish_deployment(
        &self,
        actor: &Actor,
        id: &str,
        status: DeploymentStatus,
        error: Option<&str>,
    ) -> Result<DeploymentRecord> {
        let now = crate::now();
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE deployments SET status = $1, error = $2, finished_at = $3, started_at = COALESCE(started_at, $3) WHERE id = $4",
        )
        .bind(status.as_str())
        .bind(error)
        .bind(&now)
        .bind(id)
        .execute(&mut *tx.tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound { kind: "deployment", key: id.into() });
        }
        let job_status = if status == DeploymentStatus::Succeeded { "succeeded" } else { "failed" };
        sqlx::query("UPDATE jobs SET status = $1, finished_at = $2 WHERE kind = $3 AND subject_id = $4 AND status IN ('queued', 'running')")
            .bind(job_status)
            .bind(&now)
            .bind(DEPLOY_JOB)
            .bind(id)
            .execute(&mut *tx.tx)
            .await?;
        let action = match status {
            DeploymentStatus::Succeeded => "deployment.succeeded",
            DeploymentStatus::Cancelled => "deployment.cancelled",
            _ => "deployment.failed",
        };
        self.audit(&mut tx, actor, Event::new(action, "deployment", id).detail(serde_json::json!({ "error": error })))
            .await?;
        tx.commit().await?;
        self.get_deployment(id).await
    }

    /// Records where a deployment's container is on one server (insert or update).
    pub async fn set_placement(&self, actor: &Actor, p: &PlacementUpdate<'_>) -> Result<()> {
        let mut tx = self.write().await?;
        upsert_placement(&mut tx, p).await?;
        self.audit(
            &mut tx,
            actor,
            Event::new("deployment.placement", "deployment", p.deployment_id).detail(serde_json::json!({
                "server": p.server_id, "status": p.status, "container": p.container, "env_file": p.env_file,
            })),
        )
        .await?;
        tx.commit().await
    }

    /// Marks the new container of `p` running on its server and every other container of
    /// the service there retired, in one transaction.
    pub async fn promote_placement(&self, actor: &Actor, service_id: &str, p: &PlacementUpdate<'_>) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "UPDATE deployment_servers SET status = 'retired', updated_at = $1
             WHERE server_id = $2 AND deployment_id <> $3 AND status IN ('running', 'stopped', 'started')
               AND deployment_id IN (SELECT id FROM deployments WHERE service_id = $4)",
        )
        .bind(crate::now())
        .bind(p.server_id)
        .bind(p.deployment_id)
        .bind(service_id)
        .execute(&mut *tx.tx)
        .await?;
        upsert_placement(&mut tx, p).await?;
        self.audit(
            &mut tx,
            actor,
            Event::new("deployment.promoted", "deployment", p.deployment_id)
                .detail(serde_json::json!({ "server": p.server_id, "container": p.container })),
        )
        .await?;
        tx.commit().await
    }

    /// The placements of one deployment, in server order.
    pub async fn placements_of(&self, deployment_id: &str) -> Result<Vec<Placement>> {
        Ok(sqlx::query_as::<_, Placement>(PLACEMENT_COLUMNS_OF_DEPLOYMENT)
            .bind(deployment_id)
            .fetch_all(&self.pool)
            .await?)
    }

    /// What runs (or is stopped) where for a service: its current containers.
    pub async fn service_placements(&self, service_id: &str) -> Result<Vec<Placement>> {
        Ok(sqlx::query_as::<_, Placement>(PLACEMENT_COLUMNS_OF_SERVICE)
            .bind(service_id)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Records a stop/start/restart/remove of a service: its current placements take
    /// `status`, and the action is audited with `detail`.
    pub async fn record_service_action(
        &self,
        actor: &Actor,
        service_id: &str,
        action: &str,
        status: &str,
        detail: serde_json::Value,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "UPDATE deployment_servers SET status = $1, updated_at = $2
             WHERE status IN ('running', 'stopped') AND deployment_id IN (SELECT id FROM deployments WHERE service_id = $3)",
        )
        .bind(status)
        .bind(crate::now())
        .bind(service_id)
        .execute(&mut *tx.tx)
        .await?;
        self.audit(&mut tx, actor, Event::new(action, "service", service_id).detail(detail)).await?;
        tx.commit().await
    }
}

async fn upsert_placement(tx: &mut WriteTx, p: &PlacementUpdate<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO deployment_servers (deployment_id, server_id, position, status, container, env_file, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (deployment_id, server_id) DO UPDATE SET
            position = excluded.position, status = excluded.status, container = excluded.container,
            env_file = excluded.env_file, updated_at = excluded.updated_at",
    )
    .bind(p.deployment_id)
    .bind(p.server_id)
    .bind(p.position)
    .bind(p.status)
    .bind(p.container)
    .bind(p.env_file)
    .bind(crate::now())
    .execute(&mut *tx.tx)
    .await?;
    Ok(())
}
