//! Deployments: queue, inspect, follow the log as server-sent events, roll back; and the
//! service lifecycle actions (stop, start, restart).

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::{Deserialize, Serialize};
use servos_core::validate::{self, ValidationError};
use servos_store::deployments::{DeploymentRecord, DeploymentRequest, LogLine};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::OptionalJson;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDeployment {
    /// Deploy this image instead of the service's configured one.
    pub image: Option<String>,
    /// Git services: the branch, tag or commit SHA to build (default: the service's branch).
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The succeeded deployment to return to; default: the one before the current image.
    pub deployment_id: Option<String>,
}

/// A deployment job.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeploymentView {
    pub id: String,
    pub service_id: String,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    pub image: Option<String>,
    pub image_digest: Option<String>,
    /// Git services: the ref asked for; once built, the commit SHA the image was built from.
    pub git_ref: Option<String>,
    pub triggered_by: String,
    pub error: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

impl From<DeploymentRecord> for DeploymentView {
    fn from(d: DeploymentRecord) -> Self {
        Self {
            id: d.id,
            service_id: d.service_id,
            status: d.status,
            image: d.image,
            image_digest: d.image_digest,
            git_ref: d.git_ref,
            triggered_by: d.triggered_by,
            error: d.error,
            created_at: d.created_at,
            started_at: d.started_at,
            finished_at: d.finished_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// At most this many (default 20, max 200), newest first.
    pub limit: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Only lines after this sequence number (also read from `Last-Event-ID`).
    pub after: Option<i64>,
}

fn deploy_error(e: servos_deploy::DeployError) -> ApiError {
    match e {
        servos_deploy::DeployError::Store(s) => s.into(),
        other => ApiError::conflict("deploy_refused", other.to_string()),
    }
}

#[utoipa::path(post, path = "/api/v1/services/{id}/deployments", tag = "deployments", security(("bearer" = [])),
    request_body(content = CreateDeployment, description = "Optional: an image to deploy instead of the service's, or (git services) a ref to build"),
    params(("id" = String, Path, description = "Service id or name")), responses((status = 202, body = DeploymentView), (status = 404)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<CreateDeployment>,
) -> ApiResult<(StatusCode, Json<DeploymentView>)> {
    if let Some(image) = &req.image {
        validate::image("image", image)?;
    }
    let service = state.store().get_service(&id).await?;
    if let Some(r) = &req.git_ref {
        if service.git.is_none() {
            return Err(ValidationError::new("ref", format!("service {} is not built from git", service.name)).into());
        }
        if req.image.is_some() {
            return Err(ValidationError::new("ref", "give either image or ref, not both").into());
        }
        if !servos_deploy::build::valid_ref(r) {
            return Err(ValidationError::new("ref", format!("{} is not a branch, tag or commit SHA", validate::show(r))).into());
        }
    }
    let request = DeploymentRequest { image: req.image.as_deref(), git_ref: req.git_ref.as_deref() };
    let rec = state.engine().queue_deployment_of(&caller.actor(), &service.id, &request).await.map_err(deploy_error)?;
    Ok((StatusCode::ACCEPTED, Json(rec.into())))
}

#[utoipa::path(get, path = "/api/v1/services/{id}/deployments", tag = "deployments", security(("bearer" = [])),
    params(("id" = String, Path, description = "Service id or name"), ListQuery), responses((status = 200, body = [DeploymentView])))]
pub async fn list(State(state): State<AppState>, _caller: Caller, Path(id): Path<String>, Query(q): Query<ListQuery>) -> ApiResult<Json<Vec<DeploymentView>>> {
    let service = state.store().get_service(&id).await?;
    let rows = state.store().list_deployments(&service.id, q.limit.unwrap_or(20).clamp(1, 200)).await?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}

#[utoipa::path(get, path = "/api/v1/deployments/{id}", tag = "deployments", security(("bearer" = [])),
    params(("id" = String, Path, description = "Deployment id")), responses((status = 200, body = DeploymentView), (status = 404)))]
pub async fn get(State(state): State<AppState>, _caller: Caller, Path(id): Path<String>) -> ApiResult<Json<DeploymentView>> {
    Ok(Json(state.store().get_deployment(&id).await?.into()))
}

#[utoipa::path(post, path = "/api/v1/services/{id}/rollback", tag = "deployments", security(("bearer" = [])),
    request_body(content = RollbackRequest, description = "Optional target deployment"),
    params(("id" = String, Path, description = "Service id or name")), responses((status = 202, body = DeploymentView), (status = 404), (status = 409)))]
pub async fn rollback(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<RollbackRequest>,
) -> ApiResult<(StatusCode, Json<DeploymentView>)> {
    let service = state.store().get_service(&id).await?;
    let rec = state.engine().rollback(&caller.actor(), &service.id, req.deployment_id.as_deref()).await.map_err(deploy_error)?;
    Ok((StatusCode::ACCEPTED, Json(rec.into())))
}

macro_rules! lifecycle {
    ($name:ident, $path:literal, $method:ident, $what:literal) => {
        #[doc = concat!("Runs `docker ", $what, "` on the service's containers on every server.")]
        #[utoipa::path(post, path = $path, tag = "services", security(("bearer" = [])),
            params(("id" = String, Path, description = "Service id or name")), responses((status = 204), (status = 404), (status = 409)))]
        pub async fn $name(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
            let service = state.store().get_service(&id).await?;
            state.engine().$method(&caller.actor(), &service.id).await.map_err(deploy_error)?;
            Ok(StatusCode::NO_CONTENT)
        }
    };
}

lifecycle!(stop, "/api/v1/services/{id}/stop", stop, "stop");
lifecycle!(start, "/api/v1/services/{id}/start", start, "start");
lifecycle!(restart, "/api/v1/services/{id}/restart", restart, "restart");

fn is_finished(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "cancelled")
}

fn log_event(l: &LogLine) -> Event {
    Event::default()
        .event("log")
        .id(l.seq.to_string())
        .data(serde_json::json!({ "seq": l.seq, "at": l.at, "stream": l.stream, "line": l.line }).to_string())
}

struct Follow {
    state: AppState,
    id: String,
    after: i64,
    live: tokio::sync::broadcast::Receiver<LogLine>,
    pending: std::collections::VecDeque<Event>,
    done: bool,
}

/// The deploy's steps and output (already redacted when stored), then live lines until it
/// finishes; the last event is `status`. Reconnects resume with `Last-Event-ID`.
#[utoipa::path(get, path = "/api/v1/deployments/{id}/logs", tag = "deployments", security(("bearer" = [])),
    params(("id" = String, Path, description = "Deployment id"), LogQuery),
    responses((status = 200, description = "text/event-stream of `log` events ({seq, at, stream, line}) and a final `status` event")))]
pub async fn logs(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let deployment = state.store().get_deployment(&id).await?;
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .or(q.after)
        .unwrap_or(0);
    // Subscribe before reading stored lines so nothing falls between the two.
    let live = state.engine().subscribe_logs(&deployment.id);
    let follow = Follow { state, id: deployment.id, after, live, pending: Default::default(), done: false };
    let stream = futures::stream::unfold(follow, |mut f| async move {
        loop {
            if let Some(ev) = f.pending.pop_front() {
                return Some((Ok(ev), f));
            }
            if f.done {
                return None;
            }
            let lines = match f.state.store().deployment_logs(&f.id, f.after).await {
                Ok(lines) => lines,
                Err(e) => {
                    f.done = true;
                    f.pending.push_back(Event::default().event("error").data(e.to_string()));
                    continue;
                }
            };
            for l in &lines {
                f.after = l.seq;
                f.pending.push_back(log_event(l));
            }
            if !f.pending.is_empty() {
                continue;
            }
            match f.state.store().get_deployment(&f.id).await {
                Ok(d) if is_finished(&d.status) => {
                    f.done = true;
                    let data = serde_json::json!({ "status": d.status, "error": d.error });
                    f.pending.push_back(Event::default().event("status").data(data.to_string()));
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    f.done = true;
                    f.pending.push_back(Event::default().event("error").data(e.to_string()));
                    continue;
                }
            }
            // Wait for a live line (or poll again after a short while: the store is
            // the source of truth; the broadcast only wakes us early).
            if let Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) =
                tokio::time::timeout(Duration::from_millis(500), f.live.recv()).await
            {
                // The live channel closes when the deploy ends; the status may be a moment
                // behind, so poll gently instead of spinning.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_states() {
        assert!(is_finished("succeeded") && is_finished("failed") && is_finished("cancelled"));
        assert!(!is_finished("queued") && !is_finished("running"));
    }
}
