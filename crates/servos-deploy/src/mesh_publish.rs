//! Services published on the mesh only: their port is bound on the server's mesh address
//! (`docker run --publish <mesh address>:<port>:<port>/tcp`), never on 0.0.0.0 nor the
//! public address, so it is reachable only through the WireGuard interface, where the
//! agent's eBPF classifier admits only the servers the grants allow.
//!
//! One host port per server means the old container gives it up before the new one starts:
//! a redeploy of a mesh service has a short gap (documented in ARCHITECTURE.md).

use servos_ssh::RemoteCommand;
use servos_store::Store;
use servos_store::hosts::HostRecord;
use servos_store::mesh_services::PUBLISH_MESH;
use servos_store::services::ServiceRecord;

use crate::error::DeployError;

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

/// The mesh address to bind on `server`, for a mesh service; the server must have one.
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
pub const MESH_INTERFACE: &str = "servos0";

/// Packets for the mesh address must come through the mesh interface, where the agent's
/// eBPF classifier enforces the policy. Linux accepts a packet for any local address on any
/// interface, so without this a neighbour on the public network routing the mesh address
/// to this server would reach the published port around the classifier. A raw-table chain
/// lets in the mesh interface, loopback and the local Docker bridges (containers on this
/// same server) and drops the rest, before Docker's DNAT. Idempotent.
const GUARD: &str = "iptables -w -t raw -N SERVOS-MESH 2>/dev/null; iptables -w -t raw -F SERVOS-MESH && iptables -w -t raw -A SERVOS-MESH -i \"$2\" -j RETURN && iptables -w -t raw -A SERVOS-MESH -i lo -j RETURN && iptables -w -t raw -A SERVOS-MESH -i docker0 -j RETURN && iptables -w -t raw -A SERVOS-MESH -i br-+ -j RETURN && iptables -w -t raw -A SERVOS-MESH -j DROP && { iptables -w -t raw -C PREROUTING -d \"$1\" -j SERVOS-MESH 2>/dev/null || iptables -w -t raw -I PREROUTING -d \"$1\" -j SERVOS-MESH; }";

/// Installs the guard of `address` (see [`GUARD`]).
pub fn guard(address: &str) -> RemoteCommand {
    RemoteCommand::new("sh").args(["-c", GUARD, "servos", address, MESH_INTERFACE])
}

/// The container id in `docker run -d`'s output (its last line: 64 hex digits).
pub fn container_id(stdout: &str) -> Option<String> {
    let last = stdout.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    (last.len() == 64 && last.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| last.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_passes_address_and_interface_as_parameters() {
        assert_eq!(
            guard("10.77.0.2").to_shell(),
            "sh -c 'iptables -w -t raw -N SERVOS-MESH 2>/dev/null; iptables -w -t raw -F SERVOS-MESH && \
             iptables -w -t raw -A SERVOS-MESH -i \"$2\" -j RETURN && iptables -w -t raw -A SERVOS-MESH -i lo -j RETURN && \
             iptables -w -t raw -A SERVOS-MESH -i docker0 -j RETURN && iptables -w -t raw -A SERVOS-MESH -i br-+ -j RETURN && \
             iptables -w -t raw -A SERVOS-MESH -j DROP && { iptables -w -t raw -C PREROUTING -d \"$1\" -j SERVOS-MESH 2>/dev/null || \
             iptables -w -t raw -I PREROUTING -d \"$1\" -j SERVOS-MESH; }' servos 10.77.0.2 servos0"
        );
    }

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
