//! Stable upstream addresses: how a deploy moves a Caddy route to a new container without
//! changing Caddy's configuration.
//!
//! Every change through Caddy's admin API is a full graceful reload, and a reload closes
//! the idle keep-alive connections of clients: an HTTP/1.1 client that writes a request
//! onto one at that instant loses it. So Caddy's route never names a container. It dials
//! the service's *stable address*, the gateway IP of the service's own Docker network
//! (local to the server, one network per service, so unique per service on a server) and
//! the service's port, and an nftables DNAT rule in the `output` nat hook of the server
//! sends connections to that address on to the current container:
//!
//! ```text
//! table ip servos-web {
//!     chain output {
//!         type nat hook output priority -110; policy accept;
//!         ip daddr 172.18.0.1 tcp dport 8080 dnat to 172.18.0.3:8080
//!     }
//! }
//! ```
//!
//! One table per service, replaced in one `nft -f` transaction (`add table` + `delete
//! table` + the new table: idempotent and atomic, no window without a rule, no state to
//! read first). Connection tracking keeps each established connection on the container it
//! was opened to, so requests in flight finish on the old container during the drain while
//! every new connection reaches the new one. Caddy's route therefore disables keep-alive
//! towards the upstream (see [`crate::caddy::route_json`]): a pooled connection would
//! otherwise keep sending new requests to the old container until it is stopped.
//!
//! IPv4 only. The rules live in the kernel: a server reboot loses them until the route is
//! set again (next deploy, `services start/restart`, or a domain change).

use std::net::{Ipv4Addr, SocketAddrV4};

use servos_ssh::RemoteCommand;

use crate::{HostIo, ProxyError};

/// Where a service's stable address currently leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    /// The service's name (validated: ASCII letters, digits, `.`, `-`, `_`).
    pub service: String,
    /// The address Caddy dials: the service network's gateway and the service's port.
    pub stable: SocketAddrV4,
    /// The current container's address on the service network.
    pub target: SocketAddrV4,
}

/// The nftables table of a service's stable address: `servos-<service>`.
pub fn table(service: &str) -> String {
    format!("servos-{service}")
}

/// The `nft -f` script that (re)creates the service's table with one DNAT rule, atomically.
pub fn rules(p: &Pointer) -> String {
    let t = table(&p.service);
    format!(
        "add table ip {t}\ndelete table ip {t}\ntable ip {t} {{\n\tchain output {{\n\t\t\
         type nat hook output priority -110; policy accept;\n\t\t\
         ip daddr {} tcp dport {} dnat to {}\n\t}}\n}}\n",
        p.stable.ip(),
        p.stable.port(),
        p.target
    )
}

/// The `nft -f` script that removes the service's table (absent is fine).
pub fn remove_rules(service: &str) -> String {
    let t = table(service);
    format!("add table ip {t}\ndelete table ip {t}\n")
}

const APPLY: &str = "command -v nft >/dev/null 2>&1 || { echo 'nft not found: install the nftables package on this server' >&2; exit 127; }; exec nft -f -";

/// Runs the `nft` script arriving on stdin (one transaction).
pub fn apply_command() -> RemoteCommand {
    RemoteCommand::new("sh").args(["-c", APPLY])
}

/// Prints the service's table, or nothing when it does not exist.
pub fn read_command(service: &str) -> RemoteCommand {
    RemoteCommand::new("sh").args([
        "-c",
        "nft list table ip \"$1\" 2>/dev/null || true",
        "servos",
        &table(service),
    ])
}

/// The DNAT target in a listing of a service's table.
pub fn parse_target(listing: &str) -> Option<SocketAddrV4> {
    listing
        .split_once("dnat to ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|t| t.parse().ok())
}

/// Prints the gateways of a Docker network, space-separated.
pub fn gateway_command(network: &str) -> RemoteCommand {
    RemoteCommand::new("docker").args([
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Gateway}} {{end}}",
        "--",
        network,
    ])
}

/// The first IPv4 gateway in the output of [`gateway_command`].
pub fn parse_gateway(stdout: &str) -> Option<Ipv4Addr> {
    stdout.split_whitespace().find_map(|g| g.parse().ok())
}

fn host_error(io: &impl HostIo, step: &'static str, detail: String) -> ProxyError {
    ProxyError::Host { server: io.server().to_owned(), step, detail }
}

/// The stable address of the service on `network`, port `port`.
pub async fn stable_address(io: &impl HostIo, network: &str, port: u16) -> Result<SocketAddrV4, ProxyError> {
    let step = "reading the service network's gateway";
    let out = io.run(&gateway_command(network), None).await.map_err(|e| host_error(io, step, e))?;
    let text = out.stdout_lossy();
    parse_gateway(&text)
        .map(|ip| SocketAddrV4::new(ip, port))
        .ok_or_else(|| host_error(io, step, format!("network {network} has no IPv4 gateway (docker said {})", servos_core::validate::show(text.trim()))))
}

/// Points the service's stable address at `p.target` (one atomic transaction).
pub async fn point(io: &impl HostIo, p: &Pointer) -> Result<(), ProxyError> {
    io.run(&apply_command(), Some(rules(p).as_bytes()))
        .await
        .map(drop)
        .map_err(|e| host_error(io, "pointing the stable address at the container", e))
}

/// Removes the service's stable address.
pub async fn remove(io: &impl HostIo, service: &str) -> Result<(), ProxyError> {
    io.run(&apply_command(), Some(remove_rules(service).as_bytes()))
        .await
        .map(drop)
        .map_err(|e| host_error(io, "removing the stable address", e))
}

/// Where the service's stable address leads now, if anywhere.
pub async fn target(io: &impl HostIo, service: &str) -> Result<Option<SocketAddrV4>, ProxyError> {
    let out = io
        .run(&read_command(service), None)
        .await
        .map_err(|e| host_error(io, "reading the stable address", e))?;
    Ok(parse_target(&out.stdout_lossy()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pointer() -> Pointer {
        Pointer {
            service: "web.app_1".into(),
            stable: "172.18.0.1:8080".parse().unwrap(),
            target: "172.18.0.3:8080".parse().unwrap(),
        }
    }

    #[test]
    fn the_table_is_replaced_in_one_transaction() {
        assert_eq!(
            rules(&pointer()),
            "add table ip servos-web.app_1\n\
             delete table ip servos-web.app_1\n\
             table ip servos-web.app_1 {\n\
             \tchain output {\n\
             \t\ttype nat hook output priority -110; policy accept;\n\
             \t\tip daddr 172.18.0.1 tcp dport 8080 dnat to 172.18.0.3:8080\n\
             \t}\n\
             }\n"
        );
        assert_eq!(remove_rules("web"), "add table ip servos-web\ndelete table ip servos-web\n");
    }

    #[test]
    fn commands_are_exact() {
        assert_eq!(
            apply_command().to_shell(),
            "sh -c 'command -v nft >/dev/null 2>&1 || { echo '\\''nft not found: install the nftables package on this server'\\'' >&2; exit 127; }; exec nft -f -'"
        );
        assert_eq!(
            read_command("web").to_shell(),
            "sh -c 'nft list table ip \"$1\" 2>/dev/null || true' servos servos-web"
        );
        assert_eq!(
            gateway_command("servos-web").to_shell(),
            "docker network inspect -f '{{range .IPAM.Config}}{{.Gateway}} {{end}}' -- servos-web"
        );
    }

    #[test]
    fn listings_and_gateways_are_parsed() {
        let listing = "table ip servos-web {\n\tchain output {\n\t\ttype nat hook output priority -110; policy accept;\n\t\tip daddr 172.18.0.1 tcp dport 8080 dnat to 172.18.0.3:8080\n\t}\n}\n";
        assert_eq!(parse_target(listing), Some("172.18.0.3:8080".parse().unwrap()));
        assert_eq!(parse_target(""), None);
        assert_eq!(parse_gateway("fd00::1 172.19.0.1 \n"), Some(Ipv4Addr::new(172, 19, 0, 1)));
        assert_eq!(parse_gateway(" \n"), None);
    }
}
