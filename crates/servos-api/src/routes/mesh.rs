//! Services across servers: a service's publish mode (`proxy`, or `mesh`: its port bound on
//! its servers' mesh addresses only), service-level grants ("service A may reach service B")
//! and the mesh policy as users see it (rules added by hand plus the server-level rules
//! derived from grants, by name). Also the containers of a server's agent view.
//!
//! Granularity, said plainly: the agents' eBPF policy sees server mesh addresses (container
//! traffic is NATed to its server's mesh address), so a grant A → B lets every container on
//! A's servers reach B's port on B's servers.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use servos_core::validate::{self, ValidationError};
use servos_store::mesh_services::{PUBLISH_MESH, PUBLISH_PROXY};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::json::ApiJson;
use crate::routes::services::ServiceView;

/// Where a mesh-published service is reached: `address:port` on each of its servers.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MeshEndpointView {
    pub server: String,
    /// `mesh_address:port`; null until the server's agent has a mesh address.
    pub address: Option<String>,
}

/// The mesh side of a service (in `GET /services/{id}`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ServiceMeshView {
    /// Where other services' containers connect (their servers' mesh addresses + port).
    pub endpoints: Vec<MeshEndpointView>,
    /// Services allowed to reach this one.
    pub allowed_from: Vec<String>,
}

/// Checks a publish mode against the service's port and domains.
pub fn check_publish(
    publish: &str,
    port: Option<i64>,
    domains: &[String],
) -> Result<(), ValidationError> {
    match publish {
        PUBLISH_PROXY => Ok(()),
        PUBLISH_MESH if port.is_none() => Err(ValidationError::new(
            "publish",
            "a service published on the mesh needs a port",
        )),
        PUBLISH_MESH if !domains.is_empty() => Err(ValidationError::new(
            "publish",
            "a service published on the mesh only cannot have domains (they are served through the public proxy)",
        )),
        PUBLISH_MESH => Ok(()),
        other => Err(ValidationError::new(
            "publish",
            format!("{} is not proxy or mesh", validate::show(other)),
        )),
    }
}

/// Fills the publish mode and, for a mesh service, its endpoints and grants.
pub async fn decorate(state: &AppState, view: &mut ServiceView) -> ApiResult<()> {
    let store = state.store();
    view.publish = store.service_publish(&view.id).await?;
    if view.publish != PUBLISH_MESH {
        return Ok(());
    }
    let port = view.port;
    let endpoints = store
        .mesh_endpoints(&view.id)
        .await?
        .into_iter()
        .map(|e| MeshEndpointView {
            server: e.server,
            address: e.mesh_address.zip(port).map(|(a, p)| format!("{a}:{p}")),
        })
        .collect();
    let allowed_from = store
        .service_grants()
        .await?
        .into_iter()
        .filter(|g| g.dst_service_id == view.id)
        .map(|g| g.src_service)
        .collect();
    view.mesh = Some(ServiceMeshView {
        endpoints,
        allowed_from,
    });
    Ok(())
}

/// Fills the publish mode of a list of services (one query).
pub async fn decorate_list(state: &AppState, views: &mut [ServiceView]) -> ApiResult<()> {
    let modes: HashMap<String, String> = state.store().service_publish_modes().await?;
    for v in views {
        if let Some(m) = modes.get(&v.id) {
            v.publish.clone_from(m);
        }
    }
    Ok(())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPublish {
    /// `proxy` (the port stays in the service network; domains through the proxy) or
    /// `mesh` (the port is bound on each server's mesh address only). Applies at the next deploy.
    pub publish: String,
}

#[utoipa::path(put, path = "/api/v1/services/{id}/publish", tag = "mesh", security(("bearer" = [])), request_body = SetPublish,
    params(("id" = String, Path, description = "Service id or name")), responses((status = 200, body = ServiceView), (status = 404), (status = 422)))]
pub async fn set_publish(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SetPublish>,
) -> ApiResult<Json<ServiceView>> {
    let svc = state.store().get_service(&id).await?;
    check_publish(&req.publish, svc.port, &svc.domains)?;
    state
        .store()
        .set_service_publish(&caller.actor(), &svc.id, &req.publish)
        .await?;
    crate::routes::services::get(State(state), caller, Path(svc.id)).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGrant {
    /// The service (id or name) allowed to reach this one.
    pub from: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GrantView {
    pub from: String,
    pub to: String,
    pub created_at: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/services/{id}/grants", tag = "mesh", security(("bearer" = [])),
    params(("id" = String, Path, description = "Service id or name")), responses((status = 200, body = [GrantView]), (status = 404)))]
pub async fn list_grants(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<GrantView>>> {
    let svc = state.store().get_service(&id).await?;
    let grants = state.store().service_grants().await?;
    Ok(Json(
        grants
            .into_iter()
            .filter(|g| g.dst_service_id == svc.id)
            .map(|g| GrantView {
                from: g.src_service,
                to: g.dst_service,
                created_at: Some(g.created_at),
            })
            .collect(),
    ))
}

#[utoipa::path(post, path = "/api/v1/services/{id}/grants", tag = "mesh", security(("bearer" = [])), request_body = NewGrant,
    params(("id" = String, Path, description = "Service (id or name) to be reached")),
    responses((status = 201, body = GrantView), (status = 404), (status = 409), (status = 422)))]
/// Lets service `from` reach this (mesh-published) service: the agents of `from`'s servers
/// may then connect to this service's port on its servers, applied live by the agents.
pub async fn add_grant(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<NewGrant>,
) -> ApiResult<(StatusCode, Json<GrantView>)> {
    let dst = state.store().get_service(&id).await?;
    let src = state.store().get_service(&req.from).await?;
    if state.store().service_publish(&dst.id).await? != PUBLISH_MESH {
        return Err(ValidationError::new(
            "id",
            format!(
                "service {} is not published on the mesh (servos mesh publish {} mesh, then deploy it)",
                validate::show(&dst.name),
                dst.name
            ),
        )
        .into());
    }
    if src.id == dst.id {
        return Err(ValidationError::new("from", "a service always reaches itself").into());
    }
    state
        .store()
        .add_service_grant(&caller.actor(), &src.id, &dst.id)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(GrantView {
            from: src.name,
            to: dst.name,
            created_at: None,
        }),
    ))
}

#[utoipa::path(delete, path = "/api/v1/services/{id}/grants/{from}", tag = "mesh", security(("bearer" = [])),
    params(("id" = String, Path, description = "Service id or name"), ("from" = String, Path, description = "The granted service's id or name")),
    responses((status = 204), (status = 404)))]
pub async fn delete_grant(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, from)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    state
        .store()
        .delete_service_grant(&caller.actor(), &from, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One server-level rule as the agents apply it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyRuleView {
    /// The rule's id for `DELETE /mesh/policy/{id}`; null for a rule derived from a grant
    /// (revoke the grant instead).
    pub id: Option<String>,
    pub src: String,
    pub src_address: Option<String>,
    /// Null: every server.
    pub dst: Option<String>,
    pub dst_address: Option<String>,
    pub port: i64,
    pub proto: String,
    /// `from -> to` when the rule comes from a service grant.
    pub grant: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/mesh/policy", tag = "mesh", security(("bearer" = [])), responses((status = 200, body = [PolicyRuleView])))]
/// The whole mesh policy: rules added by hand, then those derived from service grants.
pub async fn policy(
    State(state): State<AppState>,
    _caller: Caller,
) -> ApiResult<Json<Vec<PolicyRuleView>>> {
    let store = state.store();
    let mut rules: Vec<PolicyRuleView> = store
        .named_mesh_rules()
        .await?
        .into_iter()
        .map(|r| PolicyRuleView {
            id: Some(r.id),
            src: r.src_server,
            src_address: r.src_address,
            dst: r.dst_server,
            dst_address: r.dst_address,
            port: r.port,
            proto: r.proto,
            grant: None,
        })
        .collect();
    rules.extend(
        store
            .grant_rules()
            .await?
            .into_iter()
            .map(|r| PolicyRuleView {
                id: None,
                src: r.src_server,
                src_address: r.src_address,
                dst: Some(r.dst_server),
                dst_address: r.dst_address,
                port: r.port,
                proto: "tcp".into(),
                grant: Some(format!("{} -> {}", r.src_service, r.dst_service)),
            }),
    );
    Ok(Json(rules))
}

#[utoipa::path(get, path = "/api/v1/mesh/grants", tag = "mesh", security(("bearer" = [])), responses((status = 200, body = [GrantView])))]
pub async fn all_grants(
    State(state): State<AppState>,
    _caller: Caller,
) -> ApiResult<Json<Vec<GrantView>>> {
    Ok(Json(
        state
            .store()
            .service_grants()
            .await?
            .into_iter()
            .map(|g| GrantView {
                from: g.src_service,
                to: g.dst_service,
                created_at: Some(g.created_at),
            })
            .collect(),
    ))
}

/// A container on a server, as its agent reported it (from cgroups) and the control plane
/// knows it (from its placements).
#[derive(Debug, Serialize, ToSchema)]
pub struct ContainerView {
    /// Docker's container id (64 hex digits).
    pub id: String,
    pub name: String,
    pub service: String,
    pub deployment_id: String,
    /// The placement's status as the control plane recorded it (`running`, `started`, …).
    pub placement: String,
    pub memory_bytes: Option<u64>,
    pub cpu_usec: Option<u64>,
    pub pids: Option<u64>,
}

/// The containers ServOS runs on a server, from the last heartbeat's `containers` (ids and
/// usage) matched with the placements; also how many other containers the agent saw.
pub async fn containers(
    state: &AppState,
    server_id: &str,
    heartbeat: Option<&serde_json::Value>,
) -> ApiResult<(Vec<ContainerView>, usize)> {
    let reported: Vec<&serde_json::Value> = heartbeat
        .and_then(|h| h.get("containers"))
        .and_then(|c| c.as_array())
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    if reported.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let known: HashMap<String, servos_store::mesh_services::PlacedContainer> = state
        .store()
        .placed_containers(server_id)
        .await?
        .into_iter()
        .map(|c| (c.container_id.clone(), c))
        .collect();
    let mut out = Vec::new();
    let mut others = 0;
    for c in reported {
        let Some(id) = c.get("id").and_then(|v| v.as_str()) else {
            continue;
        };
        match known.get(id) {
            Some(p) => out.push(ContainerView {
                id: id.to_owned(),
                name: p.container.clone(),
                service: p.service.clone(),
                deployment_id: p.deployment_id.clone(),
                placement: p.status.clone(),
                memory_bytes: c.get("memory_bytes").and_then(|v| v.as_u64()),
                cpu_usec: c.get("cpu_usec").and_then(|v| v.as_u64()),
                pids: c.get("pids").and_then(|v| v.as_u64()),
            }),
            None => others += 1,
        }
    }
    out.sort_by(|a, b| a.service.cmp(&b.service).then(a.name.cmp(&b.name)));
    Ok((out, others))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_publishing_needs_a_port_and_no_domains() {
        assert!(check_publish("proxy", None, &[]).is_ok());
        assert!(check_publish("mesh", Some(7000), &[]).is_ok());
        assert!(
            check_publish("mesh", None, &[])
                .unwrap_err()
                .to_string()
                .contains("needs a port")
        );
        let e = check_publish("mesh", Some(80), &["a.example".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot have domains"), "{e}");
        let e = check_publish("public'", Some(80), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"public'\" is not proxy or mesh"), "{e}");
    }
}
