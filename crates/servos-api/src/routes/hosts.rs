//! Servers and builders: machines reached over SSH. Same handlers for both, with one
//! thin wrapper per route so the OpenAPI document lists each path.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use servos_core::model::ProxyKind;
use servos_core::validate::{self, ValidationError};
use servos_core::Secret;
use servos_store::hosts::{HostKind, HostRecord, NewHost};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::json::ApiJson;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateHost {
    pub name: String,
    /// IP address or DNS name.
    pub host: String,
    #[serde(default = "default_port")]
    #[schema(default = 22)]
    pub port: i64,
    #[serde(default = "default_user")]
    #[schema(default = "root")]
    pub user: String,
    /// OpenSSH or PEM private key (Ed25519 or RSA). Omit it and ServOS generates an
    /// Ed25519 pair; install the returned `public_key` in `authorized_keys`.
    #[schema(value_type = Option<String>, write_only)]
    pub private_key: Option<Secret<String>>,
    #[schema(value_type = Option<String>, write_only)]
    pub passphrase: Option<Secret<String>>,
    /// `SHA256:…` as `ssh-keygen -lf` prints it; enforced from the first connection.
    pub host_key_fingerprint: Option<String>,
    /// Servers only: `traefik` (default), `caddy` or `none`.
    #[schema(value_type = Option<String>)]
    pub proxy: Option<ProxyKind>,
}

fn default_port() -> i64 {
    22
}

fn default_user() -> String {
    "root".into()
}

/// A server or builder. Never includes the private key or passphrase.
#[derive(Debug, Serialize, ToSchema)]
pub struct HostView {
    pub id: String,
    pub name: String,
    pub host: String,
    pub port: i64,
    pub user: String,
    /// `pending`, `ready`, `unreachable`, `host_key_mismatch` or `error`.
    pub status: String,
    pub status_reason: Option<String>,
    pub host_key_fingerprint: Option<String>,
    /// The `authorized_keys` line of ServOS's key for this machine.
    pub public_key: String,
    pub proxy: String,
    pub mesh_address: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub facts: Option<serde_json::Value>,
    pub last_checked_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<HostRecord> for HostView {
    fn from(h: HostRecord) -> Self {
        Self {
            id: h.id,
            name: h.name,
            host: h.host,
            port: h.port,
            user: h.ssh_user,
            status: h.status,
            status_reason: h.status_reason,
            host_key_fingerprint: h.host_key_fingerprint,
            public_key: h.public_key,
            proxy: h.proxy,
            mesh_address: h.mesh_address,
            facts: h.facts.and_then(|f| serde_json::from_str(&f).ok()),
            last_checked_at: h.last_checked_at,
            created_at: h.created_at,
            updated_at: h.updated_at,
        }
    }
}

/// Checks a `SHA256:<43 base64 chars>` fingerprint.
fn fingerprint(value: &str) -> Result<(), ValidationError> {
    let body = value.strip_prefix("SHA256:").unwrap_or("");
    let ok = body.len() == 43 && body.chars().all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/');
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            "host_key_fingerprint",
            format!("{} is not a SHA256 fingerprint as `ssh-keygen -lf` prints it (SHA256:<43 base64 characters>)", validate::show(value)),
        ))
    }
}

async fn create(state: &AppState, caller: &Caller, kind: HostKind, req: CreateHost) -> ApiResult<HostView> {
    validate::name("name", &req.name)?;
    validate::host("host", &req.host)?;
    let port = validate::port("port", req.port)?;
    validate::name("user", &req.user)?;
    if let Some(fp) = &req.host_key_fingerprint {
        fingerprint(fp)?;
    }
    let proxy = match (kind, req.proxy) {
        (HostKind::Builder, Some(_)) => return Err(ValidationError::new("proxy", "builders run no proxy").into()),
        (_, p) => p.unwrap_or(ProxyKind::Traefik),
    };
    let (private_key, passphrase, public_key) = match req.private_key {
        Some(key) => {
            let public = servos_ssh::keys::public_line_of(&key, req.passphrase.as_ref())
                .map_err(|e| ValidationError::new("private_key", e.to_string()))?;
            (key, req.passphrase, public)
        }
        None => {
            if req.passphrase.is_some() {
                return Err(ValidationError::new("passphrase", "given without a private_key").into());
            }
            let pair = servos_ssh::keys::generate_ed25519(&format!("servos@{}", req.name))
                .map_err(|e| crate::ApiError::internal("keygen_failed", e.to_string()))?;
            (pair.private_openssh, None, pair.public_line)
        }
    };
    let new = NewHost {
        name: req.name,
        host: req.host,
        port,
        user: req.user,
        private_key,
        passphrase,
        public_key,
        host_key_fingerprint: req.host_key_fingerprint,
        proxy,
    };
    Ok(state.store().create_host(kind, &caller.actor(), new).await?.into())
}

macro_rules! host_routes {
    ($kind:expr, $tag:literal, $base:literal, $item:literal, $resetp:literal, $checkp:literal, $create:ident, $list:ident, $get:ident, $delete:ident, $reset:ident, $check:ident) => {
        #[utoipa::path(post, path = $base, tag = $tag, security(("bearer" = [])), request_body = CreateHost,
            responses((status = 201, body = HostView), (status = 409, description = "Name taken"), (status = 422, description = "Invalid input")))]
        pub async fn $create(State(state): State<AppState>, caller: Caller, ApiJson(req): ApiJson<CreateHost>) -> ApiResult<(StatusCode, Json<HostView>)> {
            Ok((StatusCode::CREATED, Json(create(&state, &caller, $kind, req).await?)))
        }

        #[utoipa::path(get, path = $base, tag = $tag, security(("bearer" = [])), responses((status = 200, body = [HostView])))]
        pub async fn $list(State(state): State<AppState>, _caller: Caller) -> ApiResult<Json<Vec<HostView>>> {
            Ok(Json(state.store().list_hosts($kind).await?.into_iter().map(HostView::from).collect()))
        }

        #[utoipa::path(get, path = $item, tag = $tag, security(("bearer" = [])),
            params(("id" = String, Path, description = "Id or name")), responses((status = 200, body = HostView), (status = 404)))]
        pub async fn $get(State(state): State<AppState>, _caller: Caller, Path(id): Path<String>) -> ApiResult<Json<HostView>> {
            Ok(Json(state.store().get_host($kind, &id).await?.into()))
        }

        #[utoipa::path(delete, path = $item, tag = $tag, security(("bearer" = [])),
            params(("id" = String, Path, description = "Id or name")), responses((status = 204), (status = 404), (status = 409, description = "Still used by services")))]
        pub async fn $delete(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
            let host = state.store().get_host($kind, &id).await?;
            state.store().delete_host($kind, &caller.actor(), &host.id).await?;
            state.engine().forget(&host.id);
            Ok(StatusCode::NO_CONTENT)
        }

        #[utoipa::path(post, path = $resetp, tag = $tag, security(("bearer" = [])),
            params(("id" = String, Path, description = "Id or name")), responses((status = 200, body = HostView), (status = 404)))]
        pub async fn $reset(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<HostView>> {
            let host = state.store().reset_host_key($kind, &caller.actor(), &id).await?;
            state.engine().forget(&host.id);
            Ok(Json(host.into()))
        }

        /// Connects now: the first time it commissions the machine and pins its host key.
        /// Answers 200 with the machine's state either way; `status` and `status_reason`
        /// say what happened (`unreachable`, `host_key_mismatch`, `error` …).
        #[utoipa::path(post, path = $checkp, tag = $tag, security(("bearer" = [])),
            params(("id" = String, Path, description = "Id or name")), responses((status = 200, body = HostView), (status = 404)))]
        pub async fn $check(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<HostView>> {
            let report = state.engine().check($kind, &id, &caller.actor()).await.map_err(check_error)?;
            Ok(Json(report.host.into()))
        }
    };
}

fn check_error(e: servos_deploy::DeployError) -> crate::ApiError {
    match e {
        servos_deploy::DeployError::Store(s) => s.into(),
        other => crate::ApiError::internal("check_failed", other.to_string()),
    }
}

host_routes!(HostKind::Server, "servers", "/api/v1/servers", "/api/v1/servers/{id}", "/api/v1/servers/{id}/fingerprint/reset", "/api/v1/servers/{id}/check",
    create_server, list_servers, get_server, delete_server, reset_server_fingerprint, check_server);
host_routes!(HostKind::Builder, "builders", "/api/v1/builders", "/api/v1/builders/{id}", "/api/v1/builders/{id}/fingerprint/reset", "/api/v1/builders/{id}/check",
    create_builder, list_builders, get_builder, delete_builder, reset_builder_fingerprint, check_builder);
