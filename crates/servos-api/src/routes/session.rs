//! First-admin setup and login.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use servos_core::{Secret, validate};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{hash_password, verify_password};
use crate::error::{ApiError, ApiResult};
use crate::json::ApiJson;
use crate::setup::SetupCheck;

/// Lifetime of a token handed out by login.
const LOGIN_TOKEN_DAYS: i64 = 30;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetupRequest {
    /// The setup token from the log or `$SERVOS_DATA_DIR/setup_token`.
    #[schema(value_type = String, write_only)]
    pub token: Secret<String>,
    pub username: String,
    /// At least 12 characters.
    #[schema(value_type = String, write_only)]
    pub password: Secret<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    #[schema(value_type = String, write_only)]
    pub password: Secret<String>,
}

/// A bearer token, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub token: String,
    pub username: String,
    pub expires_at: Option<String>,
}

pub(crate) fn source_of(addr: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>) -> String {
    addr.map(|Extension(axum::extract::ConnectInfo(a))| a.ip().to_string()).unwrap_or_else(|| "unknown".into())
}

#[utoipa::path(post, path = "/api/v1/setup", tag = "session", request_body = SetupRequest,
    responses((status = 201, body = TokenResponse), (status = 401, description = "Wrong setup token"),
              (status = 409, description = "An admin exists already"), (status = 429, description = "Too many attempts")))]
pub async fn setup(
    State(state): State<AppState>,
    addr: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    ApiJson(req): ApiJson<SetupRequest>,
) -> ApiResult<(StatusCode, Json<TokenResponse>)> {
    let source = source_of(addr);
    let inner = &state.inner;
    inner.setup_limiter.check(&source).map_err(ApiError::too_many)?;
    match inner.setup.check(req.token.expose()) {
        SetupCheck::AlreadyDone => return Err(ApiError::conflict("already_set_up", "an admin exists already; log in instead")),
        SetupCheck::Invalid => return Err(ApiError::unauthorized("invalid_setup_token", "the setup token is not valid")),
        SetupCheck::Valid => {}
    }
    validate::name("username", &req.username)?;
    validate::password(req.password.expose())?;
    let password_hash = hash_password(req.password).await?;
    let token = servos_core::random::token("servos_").map_err(|e| ApiError::internal("random_failed", e.to_string()))?;
    let token_hash = servos_core::random::token_hash(token.expose());
    inner
        .store
        .create_first_admin(&req.username, &password_hash, &token_hash, &source)
        .await
        .map_err(|e| match e {
            servos_store::StoreError::Conflict { .. } => ApiError::conflict("already_set_up", "an admin exists already; log in instead"),
            other => other.into(),
        })?;
    inner.setup.consume();
    tracing::info!(username = %req.username, "first admin created; setup token consumed");
    Ok((StatusCode::CREATED, Json(TokenResponse { token: token.expose().clone(), username: req.username, expires_at: None })))
}

#[utoipa::path(post, path = "/api/v1/auth/login", tag = "session", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse), (status = 401, description = "Wrong username or password"),
              (status = 429, description = "Too many attempts")))]
pub async fn login(
    State(state): State<AppState>,
    addr: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let source = source_of(addr);
    let inner = &state.inner;
    let limit_key = format!("{source}/{}", req.username);
    inner.login_limiter.check(&limit_key).map_err(ApiError::too_many)?;
    let found = inner.store.user_for_login(&req.username).await?;
    let (user, hash) = match found {
        Some((user, hash)) => (Some(user), Some(hash)),
        None => (None, None),
    };
    let ok = verify_password(req.password, hash).await;
    let user = match (ok, user) {
        (true, Some(user)) => user,
        _ => {
            tracing::warn!(username = %servos_core::validate::show(&req.username), %source, "failed login");
            return Err(ApiError::unauthorized("invalid_credentials", "wrong username or password"));
        }
    };
    inner.login_limiter.reset(&limit_key);
    let token = servos_core::random::token("servos_").map_err(|e| ApiError::internal("random_failed", e.to_string()))?;
    let expires = servos_store::format_time(time::OffsetDateTime::now_utc() + time::Duration::days(LOGIN_TOKEN_DAYS));
    let actor = servos_store::Actor::user(&user.username, source);
    inner
        .store
        .create_token(&actor, &user.id, "login", &servos_core::random::token_hash(token.expose()), Some(&expires))
        .await?;
    Ok(Json(TokenResponse { token: token.expose().clone(), username: user.username, expires_at: Some(expires) }))
}
