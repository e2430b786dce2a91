//! Services, their environment (write-only values) and their webhook secret.

use std::collections::{BTreeMap, HashSet};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use servos_core::Secret;
use servos_core::model::TlsMode;
use servos_core::validate::{self, ValidationError};
use servos_store::hosts::HostKind;
use servos_store::records::CredentialKind;
use servos_store::services::{GitSource, NewService, ServiceRecord};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::ApiJson;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GitSpec {
    /// `https://…` clone URL.
    pub repository: String,
    pub branch: String,
    /// Id or name of a git credential, for private repositories.
    pub credential_id: Option<String>,
    /// Path of the Dockerfile inside the repository (default: `Dockerfile` in the context).
    pub dockerfile: Option<String>,
    /// Build context directory inside the repository (default: the root).
    pub context: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthcheckSpec {
    /// HTTP path probed until the container answers 2xx/3xx, e.g. `/healthz`.
    pub path: Option<String>,
    /// Container port to probe; defaults to the service port.
    pub port: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateService {
    pub name: String,
    /// An image reference; or give `git`.
    pub image: Option<String>,
    /// Id or name of the registry to pull `image` from.
    pub registry: Option<String>,
    pub git: Option<GitSpec>,
    /// Id or name of the builder for `git` services.
    pub builder: Option<String>,
    /// Ids or names of the servers to run on.
    pub servers: Vec<String>,
    /// Container command, as argv.
    pub command: Option<Vec<String>>,
    /// Port the container listens on.
    pub port: Option<i64>,
    #[serde(default)]
    pub domains: Vec<String>,
    /// `acme` (default), `internal` or `off`.
    #[schema(value_type = Option<String>)]
    pub tls: Option<TlsMode>,
    pub healthcheck: Option<HealthcheckSpec>,
    /// `proxy` (default) or `mesh`: the port bound on each server's mesh address only.
    pub publish: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GitView {
    pub repository: String,
    pub branch: String,
    pub credential_id: Option<String>,
    pub dockerfile: Option<String>,
    pub context: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthcheckView {
    pub path: Option<String>,
    pub port: Option<i64>,
}

/// A service. Its environment values and webhook secret are never included.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceView {
    pub id: String,
    pub name: String,
    pub image: Option<String>,
    pub registry_id: Option<String>,
    pub git: Option<GitView>,
    pub builder_id: Option<String>,
    pub servers: Vec<String>,
    pub command: Option<Vec<String>>,
    pub port: Option<i64>,
    pub domains: Vec<String>,
    pub tls: String,
    pub healthcheck: HealthcheckView,
    /// `proxy` or `mesh` (see `PUT /services/{id}/publish`).
    pub publish: String,
    /// For a mesh-published service (in `GET /services/{id}`): its endpoints and grants.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mesh: Option<crate::routes::mesh::ServiceMeshView>,
    /// Where forges deliver push events (GitHub form; `gitlab` and `gitea` work too).
    pub webhook_url: String,
    pub created_at: String,
    pub updated_at: String,
}

/// Answer to creation: the webhook secret is shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedService {
    #[serde(flatten)]
    pub service: ServiceView,
    pub webhook_secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookSecretView {
    pub webhook_url: String,
    pub webhook_secret: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutEnv {
    /// The complete set; replaces what was there. Values are write-only.
    #[schema(value_type = BTreeMap<String, String>, write_only)]
    pub vars: BTreeMap<String, Secret<String>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchEnv {
    /// Variables to add or replace. Values are write-only.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>, write_only)]
    pub set: BTreeMap<String, Secret<String>>,
    /// Names to remove.
    #[serde(default)]
    pub unset: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EnvNames {
    pub names: Vec<String>,
}

fn view(state: &AppState, s: ServiceRecord) -> ServiceView {
    ServiceView {
        webhook_url: format!("{}/api/v1/webhooks/github/{}", state.inner.public_url.trim_end_matches('/'), s.id),
        id: s.id,
        name: s.name,
        image: s.image,
        registry_id: s.registry_id,
        git: s.git.map(|g| GitView { repository: g.repository, branch: g.branch, credential_id: g.credential_id, dockerfile: g.dockerfile, context: g.context }),
        builder_id: s.builder_id,
        servers: s.servers,
        command: s.command,
        port: s.port,
        domains: s.domains,
        tls: s.tls,
        healthcheck: HealthcheckView { path: s.healthcheck_path, port: s.healthcheck_port },
        publish: servos_store::mesh_services::PUBLISH_PROXY.to_owned(),
        mesh: None,
        created_at: s.created_at,
        updated_at: s.updated_at,
    }
}

fn git_ref(field: &str, value: &str) -> Result<(), ValidationError> {
    let ok = !value.is_empty()
        && value.len() <= 255
        && !value.starts_with(['-', '/'])
        && !value.contains("..")
        && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if ok { Ok(()) } else { Err(ValidationError::new(field, format!("{} is not a valid branch name", validate::show(value)))) }
}

fn repository(value: &str) -> Result<(), ValidationError> {
    validate::text("git.repository", value, 2048)?;
    let rest = value.strip_prefix("https://").or_else(|| value.strip_prefix("http://"));
    let host = rest.and_then(|r| r.split('/').next()).map(|h| h.rsplit_once(':').map(|(h, _)| h).unwrap_or(h));
    match host {
        Some(h) if !h.contains('@') && validate::host("git.repository", h).is_ok() && !value.contains(char::is_whitespace) => Ok(()),
        _ => Err(ValidationError::new(
            "git.repository",
            format!("{} is not an http(s) clone URL without credentials in it", validate::show(value)),
        )),
    }
}

async fn build_new(state: &AppState, req: CreateService) -> ApiResult<NewService> {
    validate::name("name", &req.name)?;
    match (&req.image, &req.git) {
        (Some(_), Some(_)) => return Err(ValidationError::new("image", "give either image or git, not both").into()),
        (None, None) => return Err(ValidationError::new("image", "give an image or a git source").into()),
        _ => {}
    }
    if let Some(image) = &req.image {
        validate::image("image", image)?;
    }
    if req.servers.is_empty() {
        return Err(ValidationError::new("servers", "list at least one server").into());
    }
    let store = state.store();
    let mut servers = Vec::with_capacity(req.servers.len());
    for s in &req.servers {
        let id = store.get_host(HostKind::Server, s).await?.id;
        if servers.contains(&id) {
            return Err(ValidationError::new("servers", format!("{} is listed twice", validate::show(s))).into());
        }
        servers.push(id);
    }
    let registry_id = match &req.registry {
        Some(r) => Some(store.get_credential(CredentialKind::Registry, r).await?.id),
        None => None,
    };
    let builder_id = match &req.builder {
        Some(b) => Some(store.get_host(HostKind::Builder, b).await?.id),
        None => None,
    };
    let git = match req.git {
        Some(g) => {
            repository(&g.repository)?;
            git_ref("git.branch", &g.branch)?;
            let credential_id = match &g.credential_id {
                Some(c) => Some(store.get_credential(CredentialKind::GitCredential, c).await?.id),
                None => None,
            };
            for (field, value) in [("git.dockerfile", &g.dockerfile), ("git.context", &g.context)] {
                if let Some(v) = value.as_deref().filter(|v| !servos_deploy::build::valid_repo_path(v)) {
                    return Err(ValidationError::new(field, format!("{} is not a relative path inside the repository", validate::show(v))).into());
                }
            }
            Some(GitSource { repository: g.repository, branch: g.branch, credential_id, dockerfile: g.dockerfile, context: g.context })
        }
        None => None,
    };
    if let Some(cmd) = &req.command {
        if cmd.is_empty() || cmd.len() > 256 {
            return Err(ValidationError::new("command", "must have 1 to 256 arguments").into());
        }
        for arg in cmd {
            if arg.len() > 4096 || arg.contains('\0') {
                return Err(ValidationError::new("command", "arguments must be at most 4096 bytes and contain no NUL").into());
            }
        }
    }
    let port = req.port.map(|p| validate::port("port", p)).transpose()?;
    let mut seen = HashSet::new();
    for d in &req.domains {
        validate::hostname("domains", d, false)?;
        if !seen.insert(d.to_ascii_lowercase()) {
            return Err(ValidationError::new("domains", format!("{} is listed twice", validate::show(d))).into());
        }
    }
    if !req.domains.is_empty() {
        for other in store.list_services().await? {
            if let Some(d) = other.domains.iter().find(|d| seen.contains(&d.to_ascii_lowercase())) {
                return Err(ApiError::conflict("domain_taken", format!("domain {d} already belongs to service {}", other.name)));
            }
        }
    }
    let (healthcheck_path, healthcheck_port) = match req.healthcheck {
        Some(h) => {
            if let Some(p) = &h.path {
                validate::text("healthcheck.path", p, 1024)?;
                if !p.starts_with('/') || p.contains(char::is_whitespace) {
                    return Err(ValidationError::new("healthcheck.path", format!("{} must start with '/' and contain no spaces", validate::show(p))).into());
                }
            }
            (h.path, h.port.map(|p| validate::port("healthcheck.port", p)).transpose()?)
        }
        None => (None, None),
    };
    let webhook_secret = servos_core::random::token("whsec_").map_err(|e| ApiError::internal("random_failed", e.to_string()))?;
    Ok(NewService {
        name: req.name,
        image: req.image,
        registry_id,
        git,
        builder_id,
        servers,
        command: req.command,
        port,
        domains: req.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
        tls: req.tls.unwrap_or(TlsMode::Acme),
        healthcheck_path,
        healthcheck_port,
        webhook_secret,
    })
}

#[utoipa::path(post, path = "/api/v1/services", tag = "services", security(("bearer" = [])), request_body = CreateService,
    responses((status = 201, body = CreatedService), (status = 404, description = "A named server, registry, builder or credential does not exist"),
              (status = 409), (status = 422)))]
pub async fn create(State(state): State<AppState>, caller: Caller, ApiJson(req): ApiJson<CreateService>) -> ApiResult<(StatusCode, Json<CreatedService>)> {
    let publish = req.publish.clone();
    if let Some(p) = &publish {
        crate::routes::mesh::check_publish(p, req.port, &req.domains)?;
    }
    let new = build_new(&state, req).await?;
    let secret = new.webhook_secret.expose().clone();
    let rec = state.store().create_service(&caller.actor(), new).await?;
    if let Some(p) = publish.filter(|p| p != servos_store::mesh_services::PUBLISH_PROXY) {
        state.store().set_service_publish(&caller.actor(), &rec.id, &p).await?;
    }
    let mut service = view(&state, rec);
    crate::routes::mesh::decorate(&state, &mut service).await?;
    Ok((StatusCode::CREATED, Json(CreatedService { service, webhook_secret: secret })))
}

#[utoipa::path(get, path = "/api/v1/services", tag = "services", security(("bearer" = [])), responses((status = 200, body = [ServiceView])))]
pub async fn list(State(state): State<AppState>, _caller: Caller) -> ApiResult<impl axum::response::IntoResponse> {
    // The list changes only when this process writes, so its JSON is kept until the next
    // committed write (the store's generation). Read the generation before querying: a
    // write racing with the query makes the entry stale, never wrongly fresh.
    let generation = state.store().generation();
    let cached = state.inner.services_cache.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let body = match cached {
        Some((g, body)) if g == generation => body,
        _ => {
            let all = state.store().list_services().await?;
            let mut views: Vec<ServiceView> = all.into_iter().map(|s| view(&state, s)).collect();
            crate::routes::mesh::decorate_list(&state, &mut views).await?;
            let body = axum::body::Bytes::from(
                serde_json::to_vec(&views).map_err(|e| ApiError::internal("serialize_failed", e.to_string()))?,
            );
            *state.inner.services_cache.lock().unwrap_or_else(|p| p.into_inner()) = Some((generation, body.clone()));
            body
        }
    };
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body))
}

#[utoipa::path(get, path = "/api/v1/services/{id}", tag = "services", security(("bearer" = [])),
    params(("id" = String, Path, description = "Id or name")), responses((status = 200, body = ServiceView), (status = 404)))]
pub async fn get(State(state): State<AppState>, _caller: Caller, Path(id): Path<String>) -> ApiResult<Json<ServiceView>> {
    let s = state.store().get_service(&id).await?;
    let mut v = view(&state, s);
    crate::routes::mesh::decorate(&state, &mut v).await?;
    Ok(Json(v))
}

#[utoipa::path(delete, path = "/api/v1/services/{id}", tag = "services", security(("bearer" = [])),
    params(("id" = String, Path, description = "Id or name")), responses((status = 204), (status = 404)))]
pub async fn delete(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let svc = state.store().get_service(&id).await?;
    // Containers first: forgetting a service whose containers still run would orphan them.
    if !state.store().service_placements(&svc.id).await?.is_empty() {
        // Its routes before them (only deployed services have any): a proxy must not keep
        // sending its domains to a removed container.
        state
            .engine()
            .unroute(&svc.id)
            .await
            .map_err(|e| ApiError::conflict("remove_failed", format!("cannot remove the routes of {}: {e}", svc.name)))?;
        state
            .engine()
            .remove(&caller.actor(), &svc.id)
            .await
            .map_err(|e| ApiError::conflict("remove_failed", format!("cannot remove the containers of {}: {e}", svc.name)))?;
    }
    state.store().delete_service(&caller.actor(), &svc.id).await?;
    state.webhooks().forget(&svc.id);
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/services/{id}/env", tag = "services", security(("bearer" = [])),
    params(("id" = String, Path, description = "Id or name")), responses((status = 200, body = EnvNames), (status = 404)))]
pub async fn get_env(State(state): State<AppState>, _caller: Caller, Path(id): Path<String>) -> ApiResult<Json<EnvNames>> {
    let svc = state.store().get_service(&id).await?;
    Ok(Json(EnvNames { names: state.store().env_names(&svc.id).await? }))
}

#[utoipa::path(put, path = "/api/v1/services/{id}/env", tag = "services", security(("bearer" = [])), request_body = PutEnv,
    params(("id" = String, Path, description = "Id or name")), responses((status = 200, body = EnvNames), (status = 404), (status = 422)))]
pub async fn put_env(State(state): State<AppState>, caller: Caller, Path(id): Path<String>, ApiJson(req): ApiJson<PutEnv>) -> ApiResult<Json<EnvNames>> {
    if req.vars.len() > 1000 {
        return Err(ValidationError::new("vars", "at most 1000 variables").into());
    }
    for (name, value) in &req.vars {
        validate::env_name(name)?;
        validate::env_value(name, value.expose())?;
    }
    let svc = state.store().get_service(&id).await?;
    state.store().set_env(&caller.actor(), &svc.id, &req.vars).await?;
    Ok(Json(EnvNames { names: req.vars.keys().cloned().collect() }))
}

#[utoipa::path(patch, path = "/api/v1/services/{id}/env", tag = "services", security(("bearer" = [])), request_body = PatchEnv,
    params(("id" = String, Path, description = "Id or name")), responses((status = 200, body = EnvNames), (status = 404), (status = 422)))]
pub async fn patch_env(State(state): State<AppState>, caller: Caller, Path(id): Path<String>, ApiJson(req): ApiJson<PatchEnv>) -> ApiResult<Json<EnvNames>> {
    for (name, value) in &req.set {
        validate::env_name(name)?;
        validate::env_value(name, value.expose())?;
    }
    for name in &req.unset {
        validate::env_name(name)?;
    }
    let svc = state.store().get_service(&id).await?;
    state.store().patch_env(&caller.actor(), &svc.id, &req.set, &req.unset).await?;
    Ok(Json(EnvNames { names: state.store().env_names(&svc.id).await? }))
}

#[utoipa::path(post, path = "/api/v1/services/{id}/webhook-secret/rotate", tag = "services", security(("bearer" = [])),
    params(("id" = String, Path, description = "Id or name")), responses((status = 200, body = WebhookSecretView), (status = 404)))]
pub async fn rotate_webhook_secret(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<WebhookSecretView>> {
    let svc = state.store().get_service(&id).await?;
    let secret = servos_core::random::token("whsec_").map_err(|e| ApiError::internal("random_failed", e.to_string()))?;
    state.store().rotate_webhook_secret(&caller.actor(), &svc.id, &secret).await?;
    state.webhooks().forget(&svc.id);
    let v = view(&state, svc);
    Ok(Json(WebhookSecretView { webhook_url: v.webhook_url, webhook_secret: secret.expose().clone() }))
}
