//! Services published on the mesh only: `<server's mesh address>:<port>` leads to the
//! service's current container through a per-service nftables DNAT rule, never a Docker
//! port publication, so it is reachable only through the WireGuard interface (where the
//! agent's eBPF classifier admits only the servers the grants allow), the loopback and the
//! local Docker bridges. The host side (rules, guard chains, state file, watcher) is
//! [`servos_proxy::mesh`]; this module decides when it changes:
//!
//! - a deploy ([`Engine::switch_mesh`]) points the address at the new container once it is
//!   healthy (one atomic `nft` transaction), waits the drain time while the old container
//!   finishes its established connections, then retires the old one: no gap;
//! - `start`/`restart` ([`Engine::repoint_running_mesh`]) point it at the running
//!   container again (the watcher also follows containers Docker restarts on its own);
//! - a new mesh address of a server ([`Engine::repoint_mesh_server`]) re-points every
//!   mesh-only service running there, without a redeploy, with an audit event;
//! - removing the service ([`Engine::unpublish_mesh`]), or its first deploy published
//!   through the proxy again, removes its table and state file, and the guard chains with
//!   the last mesh-only service of the server.

use std::net::{Ipv4Addr, SocketAddrV4};

use servos_core::validate;
use servos_proxy::mesh;
use servos_proxy::{ProxyError, SshHost};
use servos_ssh::Session;
use servos_store::hosts::{HostKind, HostRecord};
use servos_store::mesh_services::PUBLISH_MESH;
use servos_store::services::ServiceRecord;
use servos_store::{Actor, Store};

use crate::Engine;
use crate::error::DeployError;
use crate::logs::DeployLog;
use crate::remote::docker;

/// Whether the service is published on the mesh; a mesh service without a port or with
/// domains cannot be deployed.
pub async fn check(
    store: &Store,
    service: &ServiceRecord,
    port: Option<u16>,
) -> Result<bool, DeployError> {
    if store.service_publish(&service.id).await? != PUBLISH_MESH {
        return Ok(false);
    }
    let not_deployable = |reason: &str| DeployError::NotDeployable {
        service: service.name.clone(),
        reason: reason.to_owned(),
    };
    if port.is_none() {
        return Err(not_deployable(
            "it is published on the mesh but has no port",
        ));
    }
    if !service.domains.is_empty() {
        return Err(not_deployable(
            "it is published on the mesh only but has domains (remove them or publish it through the proxy)",
        ));
    }
    Ok(true)
}

/// The mesh address to point on `server`, for a mesh service; the server must have one.
pub fn address<'a>(
    mesh: bool,
    service: &ServiceRecord,
    server: &'a HostRecord,
) -> Result<Option<&'a str>, DeployError> {
    if !mesh {
        return Ok(None);
    }
    match server.mesh_address.as_deref() {
        Some(a) => Ok(Some(a)),
        None => Err(DeployError::NotDeployable {
            service: service.name.clone(),
            reason: format!(
                "it is published on the mesh, but server {} has no mesh address yet: install its agent first (servos servers agent-install {})",
                server.name, server.name
            ),
        }),
    }
}

/// The agent's mesh interface (its default name; installation does not change it).
pub const MESH_INTERFACE: &str = mesh::MESH_INTERFACE;

/// The container id in `docker run -d`'s output (its last line: 64 hex digits).
pub fn container_id(stdout: &str) -> Option<String> {
    let last = stdout.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    (last.len() == 64 && last.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| last.to_ascii_lowercase())
}

/// `address:port` of a mesh service on a server, from the stored address and port.
fn endpoint(
    service: &ServiceRecord,
    server: &HostRecord,
    address: &str,
) -> Result<SocketAddrV4, DeployError> {
    let not_deployable = |reason: String| DeployError::NotDeployable {
        service: service.name.clone(),
        reason,
    };
    let ip: Ipv4Addr = address.parse().map_err(|_| {
        not_deployable(format!(
            "server {} has mesh address {}, not an IPv4 address",
            server.name,
            validate::show(address)
        ))
    })?;
    let port = service
        .port
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| not_deployable("it is published on the mesh but has no port".into()))?;
    Ok(SocketAddrV4::new(ip, port))
}

fn proxy_error(service: &ServiceRecord, source: ProxyError) -> DeployError {
    DeployError::Proxy {
        service: service.name.clone(),
        source,
    }
}

impl Engine {
    /// The deploy's switch on `server`, once `container` is healthy: for a mesh service
    /// (`mesh_address` set), points the mesh address at it and waits the drain time; for
    /// any other, removes a mesh pointer left from when it was published on the mesh.
    pub(crate) async fn switch_mesh(
        &self,
        session: &Session,
        service: &ServiceRecord,
        server: &HostRecord,
        mesh_address: Option<&str>,
        container: &str,
        log: &DeployLog,
    ) -> Result<(), DeployError> {
        let io = SshHost {
            name: &server.name,
            session,
        };
        let Some(address) = mesh_address else {
            let removed = mesh::unpublish(&io, &service.name, false)
                .await
                .map_err(|e| proxy_error(service, e))?;
            if removed.table {
                log.step(&format!(
                    "server {}: no longer published on the mesh: its mesh pointer was removed{}",
                    server.name,
                    if removed.guard {
                        ", and the mesh guard with it (the last mesh-only service here)"
                    } else {
                        ""
                    }
                ))
                .await;
            }
            return Ok(());
        };
        let at = endpoint(service, server, address)?;
        log.step(&format!(
            "server {}: published on the mesh only: pointing {at} at {container}",
            server.name
        ))
        .await;
        let target = mesh::point(&io, &service.name, at, container)
            .await
            .map_err(|e| proxy_error(service, e))?;
        log.step(&format!(
            "server {}: switched: {at} → {container} ({target})",
            server.name
        ))
        .await;
        self.drain_and_settle(session, service, server, Some((at, *target.ip())), log)
            .await
    }

    /// After `start` or `restart`: points the mesh address at the running container (it may
    /// have a new IP). Nothing for a service not on the mesh, a server without a mesh
    /// address, or without a running container. Returns what was done, for the audit.
    pub(crate) async fn repoint_running_mesh(
        &self,
        session: &Session,
        service: &ServiceRecord,
        server: &HostRecord,
    ) -> Result<Option<String>, DeployError> {
        if self.store().service_publish(&service.id).await? != PUBLISH_MESH {
            return Ok(None);
        }
        let Some(address) = server.mesh_address.as_deref() else {
            return Ok(None);
        };
        let at = endpoint(service, server, address)?;
        let Some(container) = self.running_container(session, service, server).await? else {
            return Ok(None);
        };
        let io = SshHost {
            name: &server.name,
            session,
        };
        let target = mesh::point(&io, &service.name, at, &container)
            .await
            .map_err(|e| proxy_error(service, e))?;
        Ok(Some(format!("mesh {at} → {container} ({target})")))
    }

    /// When the service is removed from `server`: removes its mesh pointer, and the guard
    /// chains if no mesh-only service is left there. Returns what was removed, for the
    /// audit (nothing for a service never published on the mesh there).
    pub(crate) async fn unpublish_mesh(
        &self,
        session: &Session,
        service: &ServiceRecord,
        server: &HostRecord,
    ) -> Result<Option<String>, DeployError> {
        let was_mesh = self.store().service_publish(&service.id).await? == PUBLISH_MESH;
        let io = SshHost {
            name: &server.name,
            session,
        };
        let removed = mesh::unpublish(&io, &service.name, was_mesh)
            .await
            .map_err(|e| proxy_error(service, e))?;
        Ok(match (removed.table, removed.guard) {
            (false, false) => None,
            (true, false) => Some("mesh pointer removed".into()),
            (false, true) => Some("mesh guard removed (no mesh-only service left)".into()),
            (true, true) => {
                Some("mesh pointer removed, and the mesh guard (no mesh-only service left)".into())
            }
        })
    }

    /// After the mesh address of `server` changed: points the mesh address of every
    /// mesh-only service running there at its container again, on the new address (the old
    /// one leads nowhere any more), and records it in the audit log. Returns one line per
    /// service.
    pub async fn repoint_mesh_server(
        &self,
        actor: &Actor,
        server: &str,
    ) -> Result<Vec<String>, DeployError> {
        let server = self.store().get_host(HostKind::Server, server).await?;
        let Some(address) = server.mesh_address.clone() else {
            return Ok(Vec::new());
        };
        let modes = self.store().service_publish_modes().await?;
        let services: Vec<ServiceRecord> = self
            .store()
            .list_services()
            .await?
            .into_iter()
            .filter(|s| {
                s.servers.contains(&server.id)
                    && modes.get(&s.id).map(String::as_str) == Some(PUBLISH_MESH)
            })
            .collect();
        if services.is_empty() {
            return Ok(Vec::new());
        }
        let session = self.session(HostKind::Server, &server.id, actor).await?;
        let io = SshHost {
            name: &server.name,
            session: &session,
        };
        let mut done = Vec::new();
        for service in &services {
            let _lock = self.lock_service(&service.id).await;
            let at = endpoint(service, &server, &address)?;
            let Some(container) = self.running_container(&session, service, &server).await? else {
                done.push(format!("{}: no running container", service.name));
                continue;
            };
            let target = mesh::point(&io, &service.name, at, &container)
                .await
                .map_err(|e| proxy_error(service, e))?;
            done.push(format!("{}: {at} → {container} ({target})", service.name));
        }
        self.store()
            .record_mesh_repointed(actor, &server.id, &address, &done)
            .await?;
        Ok(done)
    }

    async fn running_container(
        &self,
        session: &Session,
        service: &ServiceRecord,
        server: &HostRecord,
    ) -> Result<Option<String>, DeployError> {
        let out = Engine::exec_checked(session, &docker::list_containers(&service.id, false))
            .await
            .map_err(|detail| DeployError::Step {
                server: server.name.clone(),
                step: "listing the running containers",
                detail,
            })?;
        Ok(docker::parse_names(&out.stdout_lossy()).into_iter().next())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_container_id_is_the_last_line_of_64_hex_digits() {
        let id = "0123456789abcdef".repeat(4);
        assert_eq!(
            container_id(&format!("Unable to find image locally\n{id}\n")),
            Some(id.clone())
        );
        assert_eq!(container_id(&id.to_uppercase()), Some(id));
        assert_eq!(container_id("abc\n"), None);
        assert_eq!(container_id(""), None);
    }
}
