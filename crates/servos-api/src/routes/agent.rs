//! The node agents' API: enrolment tokens issued by an admin, then the agents' own
//! endpoints (`/api/v1/agent/…`, authenticated by the agent credential): enrol, mesh
//! configuration (peers + policy), heartbeat. Also the mesh policy and a server's agent
//! status, and the monitor that marks silent agents offline.

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::{StatusCode, header, request::Parts};
use serde::{Deserialize, Serialize};
use servos_core::{random, validate};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Caller, client_source};
use crate::error::{ApiError, ApiResult};
use crate::json::ApiJson;

/// Seconds without a heartbeat after which an agent counts as offline (agents beat every 5 s).
pub const OFFLINE_AFTER_SECS: i64 = 15;

/// An enrolment token, shown once; hand it to the agent (stdin or a 0600 file, never argv).
#[derive(Debug, Serialize, ToSchema)]
pub struct Enrolment {
    pub server_id: String,
    pub mesh_address: String,
    pub mesh_prefix: u8,
    pub token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentView {
    pub server_id: String,
    pub server: String,
    pub mesh_address: Option<String>,
    pub public_key: Option<String>,
    /// `not_enrolled`, `online` or `offline`.
    pub status: String,
    pub last_heartbeat_at: Option<String>,
    /// The last heartbeat as the agent sent it (mesh peers, load, memory, disk, drop counters).
    #[schema(value_type = Object)]
    pub heartbeat: Option<serde_json::Value>,
    /// The containers ServOS runs there (the agent reports ids and usage from cgroups; the
    /// control plane names them from its placements).
    pub containers: Vec<crate::routes::mesh::ContainerView>,
    /// Containers the agent saw that ServOS did not start (or whose ids it does not know).
    pub other_containers: usize,
}

#[utoipa::path(post, path = "/api/v1/servers/{id}/agent/enrolment", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path, description = "Server id or name")), responses((status = 201, body = Enrolment), (status = 404)))]
pub async fn issue_enrolment(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Enrolment>)> {
    let token = random::token("servos_enrol_")
        .map_err(|e| ApiError::internal("random_failed", e.to_string()))?;
    let (server_id, mesh_address) = state
        .store()
        .issue_agent_enrolment(&caller.actor(), &id, &random::token_hash(token.expose()))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(Enrolment {
            server_id,
            mesh_address,
            mesh_prefix: servos_store::agents::MESH_PREFIX,
            token: token.expose().clone(),
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/servers/{id}/agent", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path, description = "Server id or name")), responses((status = 200, body = AgentView), (status = 404)))]
pub async fn get_agent(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentView>> {
    let a = state.store().agent_info(&id).await?;
    let status = if !a.enrolled {
        "not_enrolled"
    } else if a.online {
        "online"
    } else {
        "offline"
    };
    let heartbeat: Option<serde_json::Value> = a.heartbeat.and_then(|h| serde_json::from_str(&h).ok());
    let (containers, other_containers) =
        crate::routes::mesh::containers(&state, &a.server_id, heartbeat.as_ref()).await?;
    Ok(Json(AgentView {
        server_id: a.server_id,
        server: a.server_name,
        mesh_address: a.mesh_address,
        public_key: a.public_key,
        status: status.to_owned(),
        last_heartbeat_at: a.last_heartbeat_at,
        heartbeat,
        containers,
        other_containers,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMeshAddress {
    /// The server's new mesh address, inside 10.77.0.0/16 (host part 1 … 65534).
    pub mesh_address: String,
}

#[utoipa::path(put, path = "/api/v1/servers/{id}/agent/mesh-address", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path, description = "Server id or name")), request_body = NewMeshAddress,
    responses((status = 200, body = AgentView), (status = 404), (status = 409), (status = 422)))]
/// Changes a server's mesh address. Its running agent re-addresses its interface in place
/// (no reinstall, no restart) and the other agents update the peer, on their next poll.
/// The mesh-only services running there are pointed at the new address at once (no
/// redeploy); if that fails the address is changed anyway, and sending the same request
/// again retries it.
pub async fn set_mesh_address(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<NewMeshAddress>,
) -> ApiResult<Json<AgentView>> {
    let invalid = || {
        validate::ValidationError::new(
            "mesh_address",
            format!(
                "{} is not an address of the mesh 10.77.0.0/16 (10.77.0.1 … 10.77.255.254)",
                validate::show(&req.mesh_address)
            ),
        )
    };
    let address: std::net::Ipv4Addr = req.mesh_address.parse().map_err(|_| invalid())?;
    let [a, b, c, d] = address.octets();
    if [a, b] != [10, 77] || [c, d] == [0, 0] || [c, d] == [255, 255] {
        return Err(invalid().into());
    }
    let server_id = state
        .store()
        .set_mesh_address(&caller.actor(), &id, address)
        .await?;
    state
        .engine()
        .repoint_mesh_server(&caller.actor(), &server_id)
        .await
        .map_err(|e| {
            ApiError::conflict(
                "repoint_failed",
                format!("the mesh address is now {address}, but the mesh-only services of the server could not be pointed at it: {e}; send the same request again to retry"),
            )
        })?;
    get_agent(State(state), caller, Path(server_id)).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMeshRule {
    /// Server (id or name) allowed to connect.
    pub src: String,
    /// Server (id or name) it may reach; absent = every server.
    pub dst: Option<String>,
    pub port: u16,
    /// `tcp`, `udp` or `icmp`.
    pub proto: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedRule {
    pub id: String,
}

#[utoipa::path(post, path = "/api/v1/mesh/policy", tag = "agents", security(("bearer" = [])), request_body = NewMeshRule,
    responses((status = 201, body = CreatedRule), (status = 400), (status = 404)))]
pub async fn add_rule(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<NewMeshRule>,
) -> ApiResult<(StatusCode, Json<CreatedRule>)> {
    if !matches!(req.proto.as_str(), "tcp" | "udp" | "icmp") {
        return Err(validate::ValidationError::new(
            "proto",
            format!("{} is not tcp, udp or icmp", validate::show(&req.proto)),
        )
        .into());
    }
    let id = state
        .store()
        .add_mesh_rule(
            &caller.actor(),
            &req.src,
            req.dst.as_deref(),
            req.port,
            &req.proto,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(CreatedRule { id })))
}

#[utoipa::path(delete, path = "/api/v1/mesh/policy/{id}", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path, description = "Rule id")), responses((status = 204), (status = 404)))]
pub async fn delete_rule(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.store().delete_mesh_rule(&caller.actor(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct EnrolRequest {
    pub server_id: String,
    pub token: String,
    pub public_key: String,
    pub listen_port: u16,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EnrolResponse {
    /// The agent's credential: shown this once, stored only as a hash.
    pub credential: String,
}

#[utoipa::path(post, path = "/api/v1/agent/enroll", tag = "agents", request_body = EnrolRequest,
    responses((status = 200, body = EnrolResponse), (status = 401)))]
pub async fn enroll(
    State(state): State<AppState>,
    parts: Parts,
    ApiJson(req): ApiJson<EnrolRequest>,
) -> ApiResult<Json<EnrolResponse>> {
    check_public_key(&req.public_key)?;
    let credential = random::token("servos_agent_")
        .map_err(|e| ApiError::internal("random_failed", e.to_string()))?;
    let enrolled = state
        .store()
        .enrol_agent(
            &req.server_id,
            &random::token_hash(&req.token),
            &random::token_hash(credential.expose()),
            &req.public_key,
            req.listen_port,
            &client_source(&parts),
        )
        .await?;
    match enrolled {
        Some(_) => Ok(Json(EnrolResponse {
            credential: credential.expose().clone(),
        })),
        None => Err(ApiError::unauthorized(
            "bad_enrolment_token",
            "the enrolment token is not valid for this server (used, replaced or wrong)",
        )),
    }
}

/// An agent authenticated by its credential.
#[derive(Debug)]
pub struct AgentCaller {
    pub server_id: String,
    pub source: String,
}

impl FromRequestParts<AppState> for AgentCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "missing_credential",
                    "agent credential required (Authorization: Bearer …)",
                )
            })?;
        match state
            .store()
            .agent_for_credential(&random::token_hash(token))
            .await?
        {
            Some((server_id, _)) => Ok(Self {
                server_id,
                source: client_source(parts),
            }),
            None => Err(ApiError::unauthorized(
                "bad_credential",
                "unknown or revoked agent credential",
            )),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MeshPeerView {
    pub public_key: String,
    pub endpoint: Option<String>,
    pub mesh_address: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MeshRuleView {
    pub src: String,
    pub dst: Option<String>,
    pub port: u16,
    pub proto: String,
}

/// What an agent applies: its peers and the policy rules that involve it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeshConfigView {
    /// The agent's own mesh address (it re-addresses its interface when this changes).
    pub address: Option<String>,
    pub peers: Vec<MeshPeerView>,
    pub policy: Vec<MeshRuleView>,
}

#[utoipa::path(get, path = "/api/v1/agent/config", tag = "agents", security(("bearer" = [])),
    responses((status = 200, body = MeshConfigView), (status = 401)))]
pub async fn config(
    State(state): State<AppState>,
    agent: AgentCaller,
) -> ApiResult<Json<MeshConfigView>> {
    let peers = state
        .store()
        .mesh_peers(&agent.server_id)
        .await?
        .into_iter()
        .map(|p| MeshPeerView {
            endpoint: endpoint(&p.host, p.listen_port),
            public_key: p.public_key,
            mesh_address: p.mesh_address,
        })
        .collect();
    let policy = state
        .store()
        .mesh_rules_for(&agent.server_id)
        .await?
        .into_iter()
        .filter_map(|r| {
            Some(MeshRuleView {
                src: r.src_address?,
                dst: match r.dst_server_id {
                    Some(_) => Some(r.dst_address?),
                    None => None,
                },
                port: u16::try_from(r.port).ok()?,
                proto: r.proto,
            })
        })
        .collect::<Vec<_>>();
    // Plus the rules derived from service grants (see routes/mesh.rs).
    let mut policy = policy;
    policy.extend(
        state
            .store()
            .grant_rules_for(&agent.server_id)
            .await?
            .into_iter()
            .filter_map(|r| {
                Some(MeshRuleView {
                    src: r.src_address?,
                    dst: Some(r.dst_address?),
                    port: u16::try_from(r.port).ok()?,
                    proto: "tcp".to_owned(),
                })
            }),
    );
    let address = state.store().own_mesh_address(&agent.server_id).await?;
    Ok(Json(MeshConfigView {
        address,
        peers,
        policy,
    }))
}

/// `host:port` when the server's host is an IP address (agents take no DNS from us).
fn endpoint(host: &str, port: i64) -> Option<String> {
    let ip: std::net::IpAddr = host.parse().ok()?;
    Some(std::net::SocketAddr::new(ip, u16::try_from(port).ok()?).to_string())
}

#[utoipa::path(post, path = "/api/v1/agent/heartbeat", tag = "agents", security(("bearer" = [])),
    request_body = Object, responses((status = 204), (status = 401)))]
pub async fn heartbeat(
    State(state): State<AppState>,
    agent: AgentCaller,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> ApiResult<StatusCode> {
    let public_key = body
        .get("public_key")
        .and_then(|k| k.as_str())
        .unwrap_or_default()
        .to_owned();
    check_public_key(&public_key)?;
    state
        .store()
        .agent_heartbeat(
            &agent.server_id,
            &public_key,
            &body.to_string(),
            &agent.source,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn check_public_key(key: &str) -> Result<(), ApiError> {
    use base64::Engine;
    let ok = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map(|b| b.len() == 32)
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(validate::ValidationError::new(
            "public_key",
            format!(
                "{} is not a base64 32-byte WireGuard key",
                validate::show(key)
            ),
        )
        .into())
    }
}

/// Marks agents that missed their heartbeats offline (an `agent.offline` audit alert each),
/// every few seconds, for as long as the control plane runs.
pub fn spawn_offline_monitor(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(3));
        loop {
            tick.tick().await;
            let cutoff = servos_store::format_time(
                time::OffsetDateTime::now_utc() - time::Duration::seconds(OFFLINE_AFTER_SECS),
            );
            match state.store().mark_silent_agents_offline(&cutoff).await {
                Ok(names) => {
                    for name in names {
                        tracing::warn!(server = %name, "agent went silent: server marked offline");
                    }
                }
                Err(e) => tracing::warn!("agent monitor: {e}"),
            }
        }
    })
}

#[utoipa::path(post, path = "/api/v1/servers/{id}/agent/install", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path, description = "Server id or name")), responses((status = 200, body = AgentView), (status = 404), (status = 502)))]
/// Installs the agent over SSH (binary = this control plane's own executable, checksum
/// verified on the host) with a fresh one-time enrolment token, and starts it.
pub async fn install(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentView>> {
    let exe = std::env::current_exe().map_err(|e| {
        ApiError::internal("no_binary", format!("cannot locate the servos binary: {e}"))
    })?;
    let binary = tokio::fs::read(&exe).await.map_err(|e| {
        ApiError::internal("no_binary", format!("cannot read {}: {e}", exe.display()))
    })?;
    let token = random::token("servos_enrol_")
        .map_err(|e| ApiError::internal("random_failed", e.to_string()))?;
    let (server_id, mesh_address) = state
        .store()
        .issue_agent_enrolment(&caller.actor(), &id, &random::token_hash(token.expose()))
        .await?;
    let launch = servos_deploy::agent_install::AgentLaunch {
        control_plane: state.inner.public_url.clone(),
        server_id: server_id.clone(),
        mesh_address,
        mesh_prefix: servos_store::agents::MESH_PREFIX,
    };
    state
        .engine()
        .install_agent(&server_id, &caller.actor(), &binary, &launch, &token)
        .await
        .map_err(|e| match e {
            servos_deploy::DeployError::Store(s) => s.into(),
            other => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "agent_install_failed",
                other.to_string(),
            ),
        })?;
    get_agent(State(state), caller, Path(server_id)).await
}
