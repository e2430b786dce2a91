//! Registries and git credentials: the password or token is write-only.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use servos_core::Secret;
use servos_core::validate::{self, ValidationError};
use servos_store::records::{CredentialKind, CredentialRecord};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::json::ApiJson;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRegistry {
    pub name: String,
    /// e.g. `registry.example.com:5000` or `https://ghcr.io`.
    pub url: String,
    pub username: String,
    #[schema(value_type = String, write_only)]
    pub password: Secret<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RegistryView {
    pub id: String,
    pub name: String,
    pub url: String,
    pub username: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGitCredential {
    pub name: String,
    /// The forge host the token is for, e.g. `github.com`.
    pub host: String,
    /// Defaults to `x-access-token` (what GitHub and Gitea accept with a PAT).
    pub username: Option<String>,
    #[schema(value_type = String, write_only)]
    pub token: Secret<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GitCredentialView {
    pub id: String,
    pub name: String,
    pub host: String,
    pub username: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<CredentialRecord> for RegistryView {
    fn from(r: CredentialRecord) -> Self {
        Self { id: r.id, name: r.name, url: r.location, username: r.username, created_at: r.created_at, updated_at: r.updated_at }
    }
}

impl From<CredentialRecord> for GitCredentialView {
    fn from(r: CredentialRecord) -> Self {
        Self { id: r.id, name: r.name, host: r.location, username: r.username, created_at: r.created_at, updated_at: r.updated_at }
    }
}

fn non_empty_secret(field: &str, s: &Secret<String>) -> Result<(), ValidationError> {
    let v = s.expose();
    if v.is_empty() || v.len() > 4096 || v.chars().any(char::is_control) {
        return Err(ValidationError::new(field, "must be 1 to 4096 characters without control characters"));
    }
    Ok(())
}

fn registry_url(value: &str) -> Result<(), ValidationError> {
    let hostport = value.strip_prefix("https://").or_else(|| value.strip_prefix("http://")).unwrap_or(value);
    let hostport = hostport.trim_end_matches('/');
    let host = hostport.rsplit_once(':').filter(|(_, p)| p.parse::<u16>().is_ok()).map(|(h, _)| h).unwrap_or(hostport);
    validate::host("url", host).map_err(|_| ValidationError::new("url", format!("{} is not a registry address (host[:port])", validate::show(value))))
}

#[utoipa::path(post, path = "/api/v1/registries", tag = "registries", security(("bearer" = [])), request_body = CreateRegistry,
    responses((status = 201, body = RegistryView), (status = 409), (status = 422)))]
pub async fn create_registry(State(state): State<AppState>, caller: Caller, ApiJson(req): ApiJson<CreateRegistry>) -> ApiResult<(StatusCode, Json<RegistryView>)> {
    validate::name("name", &req.name)?;
    registry_url(&req.url)?;
    validate::text("username", &req.username, 255)?;
    non_empty_secret("password", &req.password)?;
    let rec = state
        .store()
        .create_credential(CredentialKind::Registry, &caller.actor(), &req.name, &req.url, &req.username, &req.password)
        .await?;
    Ok((StatusCode::CREATED, Json(rec.into())))
}

#[utoipa::path(get, path = "/api/v1/registries", tag = "registries", security(("bearer" = [])), responses((status = 200, body = [RegistryView])))]
pub async fn list_registries(State(state): State<AppState>, _caller: Caller) -> ApiResult<Json<Vec<RegistryView>>> {
    Ok(Json(state.store().list_credentials(CredentialKind::Registry).await?.into_iter().map(Into::into).collect()))
}

#[utoipa::path(get, path = "/api/v1/registries/{id}", tag = "registries", security(("bearer" = [])),
    params(("id" = String, Path, description = "Id or name")), responses((status = 200, body = RegistryView), (status = 404)))]
pub async fn get_registry(State(state): State<AppState>, _caller: Caller, Path(id): Path<String>) -> ApiResult<Json<RegistryView>> {
    Ok(Json(state.store().get_credential(CredentialKind::Registry, &id).await?.into()))
}

#[utoipa::path(delete, path = "/api/v1/registries/{id}", tag = "registries", security(("bearer" = [])),
    params(("id" = String, Path, description = "Id or name")), responses((status = 204), (status = 404), (status = 409)))]
pub async fn delete_registry(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    state.store().delete_credential(CredentialKind::Registry, &caller.actor(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/git-credentials", tag = "git-credentials", security(("bearer" = [])), request_body = CreateGitCredential,
    responses((status = 201, body = GitCredentialView), (status = 409), (status = 422)))]
pub async fn create_git(State(state): State<AppState>, caller: Caller, ApiJson(req): ApiJson<CreateGitCredential>) -> ApiResult<(StatusCode, Json<GitCredentialView>)> {
    validate::name("name", &req.name)?;
    validate::hostname("host", &req.host, false)?;
    let username = req.username.unwrap_or_else(|| "x-access-token".into());
    validate::text("username", &username, 255)?;
    non_empty_secret("token", &req.token)?;
    let rec = state
        .store()
        .create_credential(CredentialKind::GitCredential, &caller.actor(), &req.name, &req.host, &username, &req.token)
        .await?;
    Ok((StatusCode::CREATED, Json(rec.into())))
}

#[utoipa::path(get, path = "/api/v1/git-credentials", tag = "git-credentials", security(("bearer" = [])), responses((status = 200, body = [GitCredentialView])))]
pub async fn list_git(State(state): State<AppState>, _caller: Caller) -> ApiResult<Json<Vec<GitCredentialView>>> {
    Ok(Json(state.store().list_credentials(CredentialKind::GitCredential).await?.into_iter().map(Into::into).collect()))
}

#[utoipa::path(get, path = "/api/v1/git-credentials/{id}", tag = "git-credentials", security(("bearer" = [])),
    params(("id" = String, Path, description = "Id or name")), responses((status = 200, body = GitCredentialView), (status = 404)))]
pub async fn get_git(State(state): State<AppState>, _caller: Caller, Path(id): Path<String>) -> ApiResult<Json<GitCredentialView>> {
    Ok(Json(state.store().get_credential(CredentialKind::GitCredential, &id).await?.into()))
}

#[utoipa::path(delete, path = "/api/v1/git-credentials/{id}", tag = "git-credentials", security(("bearer" = [])),
    params(("id" = String, Path, description = "Id or name")), responses((status = 204), (status = 404), (status = 409)))]
pub async fn delete_git(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    state.store().delete_credential(CredentialKind::GitCredential, &caller.actor(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
