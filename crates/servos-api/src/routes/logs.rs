//! A service's container logs (`servos logs`) as server-sent events: every line of every
//! server, redacted by the engine. The stream ends when every container's log is read
//! (without `follow`), or when the client goes away: dropping the stream stops the
//! engine's readers and kills the remote `docker logs`.

use std::convert::Infallible;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;
use servos_deploy::{DeployError, LogsRequest};
use utoipa::IntoParams;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};

/// Lines per container when the request does not say.
pub const DEFAULT_TAIL: u32 = 200;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// Keep streaming new lines until the client disconnects (default false).
    pub follow: Option<bool>,
    /// Lines from before now, per container (default 200, at most 100000).
    pub tail: Option<u32>,
}

fn logs_error(e: DeployError) -> ApiError {
    match e {
        DeployError::Store(s) => s.into(),
        e @ DeployError::BadLogRequest { .. } => ApiError::bad_request("invalid_request", e.to_string()),
        e @ DeployError::NoContainers { .. } => ApiError::conflict("no_containers", e.to_string()),
        e @ DeployError::LogsUnredactable { .. } => ApiError::internal("decrypt_failed", e.to_string()),
        other => ApiError::conflict("logs_refused", other.to_string()),
    }
}

/// Each line is a `log` event with data `{server, stream, line}`; `stream` is `stdout`,
/// `stderr` or `error` (ServOS could not read that server's log).
#[utoipa::path(get, path = "/api/v1/services/{id}/logs", tag = "services", security(("bearer" = [])),
    params(("id" = String, Path, description = "Service id or name"), LogsQuery),
    responses((status = 200, description = "text/event-stream of `log` events ({server, stream, line}), redacted"),
        (status = 400), (status = 404), (status = 409, description = "The service has no running or stopped container"),
        (status = 500, description = "The environment does not decrypt: nothing is read")))]
pub async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let service = state.store().get_service(&id).await?;
    let req = LogsRequest { follow: q.follow.unwrap_or(false), tail: q.tail.unwrap_or(DEFAULT_TAIL) };
    let lines = state.engine().container_logs(&caller.actor(), &service.id, req).await.map_err(logs_error)?;
    let stream = futures::stream::unfold(lines, |mut lines| async move {
        let chunk = lines.next().await?;
        let data = serde_json::to_string(&chunk).unwrap_or_default();
        Some((Ok(Event::default().event("log").data(data)), lines))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
