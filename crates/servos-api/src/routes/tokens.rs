//! API tokens of the calling user: list, create (shown once), revoke.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use servos_core::validate;
use servos_store::users::TokenInfo;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::ApiJson;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    /// Days until the token expires; none means it never does.
    pub expires_in_days: Option<u32>,
}

/// A token as listed: never the token itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

/// A newly created token; `token` is shown this once and stored only as a hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub info: TokenView,
    pub token: String,
}

impl From<TokenInfo> for TokenView {
    fn from(t: TokenInfo) -> Self {
        Self { id: t.id, name: t.name, created_at: t.created_at, expires_at: t.expires_at, revoked_at: t.revoked_at }
    }
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", security(("bearer" = [])), responses((status = 200, body = [TokenView])))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<TokenView>>> {
    let tokens = state.store().list_tokens(&caller.user_id).await?;
    Ok(Json(tokens.into_iter().map(TokenView::from).collect()))
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", security(("bearer" = [])), request_body = CreateToken,
    responses((status = 201, body = CreatedToken)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    validate::name("name", &req.name)?;
    let expires = match req.expires_in_days {
        Some(0) => return Err(validate::ValidationError::new("expires_in_days", "must be at least 1").into()),
        Some(days) if days > 3650 => {
            return Err(validate::ValidationError::new("expires_in_days", format!("{days} is more than 3650")).into());
        }
        Some(days) => Some(servos_store::format_time(time::OffsetDateTime::now_utc() + time::Duration::days(i64::from(days)))),
        None => None,
    };
    let token = servos_core::random::token("servos_").map_err(|e| ApiError::internal("random_failed", e.to_string()))?;
    let info = state
        .store()
        .create_token(&caller.actor(), &caller.user_id, &req.name, &servos_core::random::token_hash(token.expose()), expires.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { info: info.into(), token: token.expose().clone() })))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", security(("bearer" = [])),
    params(("id" = String, Path, description = "Token id")), responses((status = 204), (status = 404)))]
pub async fn revoke(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    state.store().revoke_token(&caller.actor(), &caller.user_id, &id).await?;
    state.inner.tokens.clear();
    Ok(StatusCode::NO_CONTENT)
}
