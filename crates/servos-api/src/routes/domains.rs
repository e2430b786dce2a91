//! A service's domains and the proxy of a server. Changing domains reconfigures the proxy
//! of every server the service runs on (`Engine::sync_routes`); the domains are stored
//! first, so a proxy that cannot be reached leaves them stored and says so in
//! `routing_error` (the next deploy or change applies them).

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use servos_core::model::{ProxyKind, TlsMode};
use servos_core::validate::ValidationError;
use servos_store::hosts::HostKind;
use servos_store::services::ServiceRecord;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::ApiJson;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDomains {
    /// Hostnames to add, e.g. `app.example.com`. A domain belongs to one service only.
    pub domains: Vec<String>,
    /// Route only paths under this prefix (e.g. `/api`); `/` routes every path.
    pub path_prefix: Option<String>,
}

/// A service's domains, and what the change did on its servers' proxies.
#[derive(Debug, Serialize, ToSchema)]
pub struct DomainsView {
    pub service: String,
    pub domains: Vec<String>,
    pub path_prefix: Option<String>,
    pub tls: String,
    /// One line per server: what its proxy now does for the service.
    pub routing: Vec<String>,
    /// Set when the proxies could not be reconfigured (the domains are stored anyway).
    pub routing_error: Option<String>,
}

/// One route a proxy serves.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProxyRouteView {
    pub service: String,
    pub domains: Vec<String>,
    pub upstreams: Vec<String>,
    /// Where each upstream leads when it is a stable address (Caddy: the current container,
    /// through the server's DNAT rule); empty otherwise.
    pub targets: Vec<String>,
}

/// The proxy of a server, as read from the proxy itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProxyView {
    pub server: String,
    /// `traefik`, `caddy` or `none`.
    pub driver: String,
    pub running: bool,
    pub detail: String,
    pub routes: Vec<ProxyRouteView>,
}

async fn view(state: &AppState, svc: ServiceRecord, routing: Vec<String>, routing_error: Option<String>) -> ApiResult<DomainsView> {
    let path_prefix = state.store().service_path_prefix(&svc.id).await?;
    Ok(DomainsView { service: svc.name, domains: svc.domains, path_prefix, tls: svc.tls, routing, routing_error })
}

async fn sync(state: &AppState, svc: ServiceRecord) -> ApiResult<DomainsView> {
    let (routing, error) = match state.engine().sync_routes(&svc.id).await {
        Ok(lines) => (lines, None),
        Err(servos_deploy::DeployError::Store(e)) => return Err(e.into()),
        Err(e) => (vec![], Some(e.to_string())),
    };
    view(state, svc, routing, error).await
}

#[utoipa::path(get, path = "/api/v1/services/{id}/domains", tag = "domains", security(("bearer" = [])),
    params(("id" = String, Path, description = "Id or name")), responses((status = 200, body = DomainsView), (status = 404)))]
pub async fn list(State(state): State<AppState>, _caller: Caller, Path(id): Path<String>) -> ApiResult<Json<DomainsView>> {
    let svc = state.store().get_service(&id).await?;
    Ok(Json(view(&state, svc, vec![], None).await?))
}

#[utoipa::path(post, path = "/api/v1/services/{id}/domains", tag = "domains", security(("bearer" = [])), request_body = AddDomains,
    params(("id" = String, Path, description = "Id or name")),
    responses((status = 200, body = DomainsView), (status = 404), (status = 409, description = "A domain belongs to another service"), (status = 422)))]
pub async fn add(State(state): State<AppState>, caller: Caller, Path(id): Path<String>, ApiJson(req): ApiJson<AddDomains>) -> ApiResult<Json<DomainsView>> {
    let svc = state.store().get_service(&id).await?;
    if req.domains.is_empty() && req.path_prefix.is_none() {
        return Err(ValidationError::new("domains", "list at least one domain").into());
    }
    if req.domains.len() > 100 {
        return Err(ValidationError::new("domains", "at most 100 domains at once").into());
    }
    // Wildcards only where every server's proxy can get a certificate for them.
    let tls = TlsMode::parse(&svc.tls).unwrap_or(TlsMode::Acme);
    let mut wildcards = !svc.servers.is_empty();
    for server in &svc.servers {
        let host = state.store().get_host(HostKind::Server, server).await?;
        let proxy = ProxyKind::parse(&host.proxy).unwrap_or(ProxyKind::None);
        wildcards &= servos_proxy::supports_wildcards(proxy, tls);
    }
    let domains = servos_proxy::normalize_domains(&req.domains, wildcards)?;
    let prefix = match &req.path_prefix {
        Some(p) => Some(servos_proxy::normalize_path_prefix(Some(p))?),
        None => None,
    };
    if svc.port.is_none() {
        return Err(ValidationError::new("domains", format!("service {} has no port: the proxy needs one to route to", svc.name)).into());
    }
    let mut svc = if domains.is_empty() { svc } else { state.store().add_domains(&caller.actor(), &svc.id, &domains).await? };
    if let Some(prefix) = prefix {
        svc = state.store().set_path_prefix(&caller.actor(), &svc.id, prefix.as_deref()).await?;
    }
    Ok(Json(sync(&state, svc).await?))
}

#[utoipa::path(delete, path = "/api/v1/services/{id}/domains/{domain}", tag = "domains", security(("bearer" = [])),
    params(("id" = String, Path, description = "Id or name"), ("domain" = String, Path, description = "The domain to remove")),
    responses((status = 200, body = DomainsView), (status = 404)))]
pub async fn remove(State(state): State<AppState>, caller: Caller, Path((id, domain)): Path<(String, String)>) -> ApiResult<Json<DomainsView>> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let svc = state.store().remove_domains(&caller.actor(), &id, &[domain]).await?;
    Ok(Json(sync(&state, svc).await?))
}

#[utoipa::path(get, path = "/api/v1/servers/{id}/proxy", tag = "servers", security(("bearer" = [])),
    params(("id" = String, Path, description = "Id or name")), responses((status = 200, body = ProxyView), (status = 404), (status = 502)))]
pub async fn proxy_status(State(state): State<AppState>, _caller: Caller, Path(id): Path<String>) -> ApiResult<Json<ProxyView>> {
    let server = state.store().get_host(HostKind::Server, &id).await?;
    let status = state.engine().proxy_status(&server.id).await.map_err(|e| match e {
        servos_deploy::DeployError::Store(s) => s.into(),
        other => ApiError::new(axum::http::StatusCode::BAD_GATEWAY, "proxy_unreachable", other.to_string()),
    })?;
    Ok(Json(ProxyView {
        server: server.name,
        driver: status.driver,
        running: status.running,
        detail: status.detail,
        routes: status
            .routes
            .into_iter()
            .map(|r| ProxyRouteView { service: r.service, domains: r.domains, upstreams: r.upstreams, targets: r.targets })
            .collect(),
    }))
}
