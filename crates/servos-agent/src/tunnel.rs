//! The WireGuard mesh interface, one of two backends behind [`Mesh`]: the kernel's
//! WireGuard where the kernel has it ([`crate::kernel_wg`]), else a TUN device created as
//! root and driven after the drop by gotatun (Mullvad's maintained userspace WireGuard).
//! `--wireguard auto|kernel|userspace` chooses ([`WireguardMode`]); peers are updated at
//! runtime the same way on both.

use std::{collections::BTreeMap, net::Ipv4Addr};

use gotatun::{
    device::{DefaultDeviceTransports, Device, DeviceBuilder, Peer},
    tun::tun_async_device::TunDevice,
    x25519::{PublicKey, StaticSecret},
};
use ipnetwork::{IpNetwork, Ipv4Network};
use serde::Serialize;

use crate::{config::PeerConfig, error::AgentError};

/// MTU of the mesh interface: 1500 minus the WireGuard and outer IPv4/UDP overhead (80
/// bytes leaves room for an IPv6 underlay).
pub const MESH_MTU: u16 = 1420;

/// Keepalive towards every peer, seconds: keeps handshakes fresh so a silent peer shows.
pub(crate) const KEEPALIVE_SECS: u16 = 10;

/// `--wireguard`: which WireGuard implementation the agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WireguardMode {
    /// The kernel's WireGuard if the kernel has it, else userspace (logged once).
    Auto,
    /// The kernel's WireGuard; refuse to start without it.
    Kernel,
    /// Userspace WireGuard on /dev/net/tun (`--userspace-engine`), even where the kernel has it.
    Userspace,
}

/// `--userspace-engine`: which userspace WireGuard drives the TUN device when the kernel
/// has no WireGuard (or `--wireguard userspace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UserspaceEngine {
    /// boringtun 0.7's device: one epoll thread, a packet handled in one wake-up
    /// ([`crate::boring`]); the default: its ping is close to boringtun-cli's.
    Boringtun,
    /// gotatun on a tokio runtime (three tasks per direction).
    Gotatun,
}

/// The WireGuard implementation that runs; reported in status.json, heartbeats and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Kernel,
    Userspace,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Kernel => "kernel",
            Backend::Userspace => "userspace",
        })
    }
}

/// The mesh interface as the root phase leaves it: a kernel WireGuard link, or an open
/// TUN device for gotatun.
pub enum MeshDevice {
    Kernel(crate::kernel_wg::KernelLink),
    Tun(tun::Device),
}

impl std::fmt::Debug for MeshDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MeshDevice::Kernel(link) => f.debug_tuple("Kernel").field(link).finish(),
            MeshDevice::Tun(_) => f.write_str("Tun"),
        }
    }
}

impl MeshDevice {
    pub fn backend(&self) -> Backend {
        match self {
            MeshDevice::Kernel(_) => Backend::Kernel,
            MeshDevice::Tun(_) => Backend::Userspace,
        }
    }
}

/// Creates the mesh interface `name` with `address/prefix`, up, as `mode` asks. Root only.
///
/// `auto` tries a kernel WireGuard link first; if the kernel cannot create one (without
/// the module RTM_NEWLINK fails with EOPNOTSUPP) it logs why, once, and creates the TUN
/// device. `kernel` turns that failure into an error naming the interface and the errno.
/// A failure after the kernel link exists (address, up) is an error in both: the kernel
/// has WireGuard, so the problem is not one userspace would avoid; the half-made link is
/// deleted first.
pub fn create_device(
    mode: WireguardMode,
    name: &str,
    address: Ipv4Addr,
    prefix: u8,
) -> Result<MeshDevice, AgentError> {
    if mode == WireguardMode::Userspace {
        return create_interface(name, address, prefix).map(MeshDevice::Tun);
    }
    match crate::kernel_wg::KernelLink::create(name, address, prefix) {
        Ok(link) => Ok(MeshDevice::Kernel(link)),
        Err(e) if mode == WireguardMode::Auto && e.at_create() => {
            tracing::warn!(
                interface = %servos_core::validate::show(name),
                "kernel WireGuard not available ({}{}); using userspace WireGuard on /dev/net/tun",
                crate::netlink::describe(e.errno),
                missing_module_hint(e.errno)
            );
            create_interface(name, address, prefix).map(MeshDevice::Tun)
        }
        Err(e) => Err(AgentError::KernelInterface {
            interface: servos_core::validate::show(name),
            mode: if mode == WireguardMode::Kernel {
                "kernel"
            } else {
                "auto"
            },
            reason: format!("{e}{}", missing_module_hint(e.errno)),
        }),
    }
}

fn missing_module_hint(errno: nix::errno::Errno) -> &'static str {
    if errno == nix::errno::Errno::EOPNOTSUPP {
        ": this kernel has no WireGuard module"
    } else {
        ""
    }
}

/// Creates the TUN interface `name` with `address/prefix`, up. Needs CAP_NET_ADMIN (root).
pub fn create_interface(
    name: &str,
    address: Ipv4Addr,
    prefix: u8,
) -> Result<tun::Device, AgentError> {
    let netmask = Ipv4Network::new(address, prefix)
        .map_err(|_| AgentError::Invalid {
            what: "mesh prefix length",
            value: prefix.to_string(),
        })?
        .mask();
    let mut config = tun::Configuration::default();
    config
        .tun_name(name)
        .address(address)
        .netmask(netmask)
        .mtu(MESH_MTU)
        .up();
    tun::create(&config).map_err(|source| AgentError::Interface {
        interface: servos_core::validate::show(name),
        source,
    })
}

/// One peer's state, as reported in heartbeats and the status file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerStatus {
    pub public_key: String,
    pub endpoint: Option<String>,
    pub mesh_address: Option<Ipv4Addr>,
    /// Seconds since the last completed handshake, if any.
    pub last_handshake_secs: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// The running WireGuard device, kernel or userspace; the agent's loop does not care which.
#[derive(Debug)]
pub enum Mesh {
    Kernel(crate::kernel_wg::KernelMesh),
    Userspace(UserspaceMesh),
    Boringtun(crate::boring::BoringMesh),
}

impl Mesh {
    /// Starts WireGuard on the interface created before the drop. Needs a tokio runtime.
    /// `udp_buffer` sets gotatun's UDP socket buffers (0 keeps the kernel default); the
    /// kernel backend's socket is the kernel's own and keeps its defaults.
    /// `engine` picks the userspace implementation (`threads`: boringtun's event-loop
    /// threads).
    pub async fn start(
        device: MeshDevice,
        key: StaticSecret,
        port: u16,
        udp_buffer: usize,
        (engine, threads): (UserspaceEngine, usize),
    ) -> Result<Self, AgentError> {
        match device {
            MeshDevice::Tun(tun) if engine == UserspaceEngine::Boringtun => {
                let bytes = servos_core::Secret::new(key.to_bytes());
                drop(key);
                Ok(Mesh::Boringtun(crate::boring::BoringMesh::start(
                    tun,
                    bytes.expose(),
                    port,
                    threads,
                )?))
            }
            MeshDevice::Tun(tun) => Ok(Mesh::Userspace(
                UserspaceMesh::start(tun, key, port, udp_buffer).await?,
            )),
            MeshDevice::Kernel(link) => {
                let bytes = servos_core::Secret::new(key.to_bytes());
                drop(key);
                Ok(Mesh::Kernel(crate::kernel_wg::KernelMesh::start(
                    link, bytes, port,
                )?))
            }
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Mesh::Kernel(_) => Backend::Kernel,
            Mesh::Userspace(_) | Mesh::Boringtun(_) => Backend::Userspace,
        }
    }

    /// What carries the packets, for the log: `kernel`, `boringtun` or `gotatun`.
    pub fn data_path(&self) -> &'static str {
        match self {
            Mesh::Kernel(_) => "kernel",
            Mesh::Userspace(_) => "gotatun",
            Mesh::Boringtun(_) => "boringtun",
        }
    }

    /// Makes the device's peers exactly `peers`: unknown ones removed, the rest added or
    /// updated (endpoint, keepalive, allowed IP = the peer's mesh address /32).
    pub async fn set_peers(&self, peers: &[PeerConfig]) -> Result<(), AgentError> {
        match self {
            Mesh::Kernel(k) => k.set_peers(peers),
            Mesh::Userspace(u) => u.set_peers(peers).await,
            Mesh::Boringtun(b) => b.set_peers(peers),
        }
    }

    /// Every peer's endpoint, handshake age and byte counters.
    pub async fn status(&self) -> Result<Vec<PeerStatus>, AgentError> {
        match self {
            Mesh::Kernel(k) => k.status(),
            Mesh::Userspace(u) => Ok(u.status().await),
            Mesh::Boringtun(b) => b.status(),
        }
    }
}

/// gotatun on the TUN device.
pub struct UserspaceMesh {
    device: Device<DefaultDeviceTransports>,
    /// gotatun opens its UDP socket only when a device with peers resumes: the device is
    /// built suspended and resumed once the first peers are in.
    running: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for UserspaceMesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserspaceMesh").finish_non_exhaustive()
    }
}

impl UserspaceMesh {
    async fn start(
        tun: tun::Device,
        key: StaticSecret,
        port: u16,
        udp_buffer: usize,
    ) -> Result<Self, AgentError> {
        let tun = tun::AsyncDevice::new(tun)
            .map_err(|e| AgentError::Device(format!("register the TUN device: {e}")))?;
        let tun = TunDevice::from_tun_device(tun).map_err(|e| AgentError::Device(e.to_string()))?;
        let mut builder = DeviceBuilder::new().with_default_udp();
        if udp_buffer > 0 {
            builder = builder
                .udp_recv_buffer_size(udp_buffer)
                .udp_send_buffer_size(udp_buffer);
        }
        let device = builder
            .with_listen_port(port)
            .with_ip(tun)
            .with_private_key(key)
            .suspended(true)
            .build()
            .await
            .map_err(|e| AgentError::Device(format!("listen on UDP port {port}: {e}")))?;
        Ok(Self {
            device,
            running: false.into(),
        })
    }

    async fn set_peers(&self, peers: &[PeerConfig]) -> Result<(), AgentError> {
        let mut wanted = BTreeMap::new();
        for p in peers {
            let key = PublicKey::from(crate::config::decode_key(&p.public_key)?);
            wanted.insert(key.to_bytes(), p);
        }
        for current in self.device.peers().await {
            if !wanted.contains_key(current.peer.public_key.as_bytes()) {
                self.device
                    .remove_peer(&current.peer.public_key)
                    .await
                    .map_err(|e| AgentError::Device(format!("remove peer: {e}")))?;
            }
        }
        for (key, p) in wanted {
            let mut peer = Peer::new(PublicKey::from(key));
            peer.endpoint = p.endpoint;
            peer.keepalive = Some(KEEPALIVE_SECS);
            let net = Ipv4Network::new(p.mesh_address, 32).map_err(|_| AgentError::Invalid {
                what: "peer mesh address",
                value: p.mesh_address.to_string(),
            })?;
            peer.allowed_ips = vec![IpNetwork::V4(net)];
            self.device
                .add_or_update_peer(peer)
                .await
                .map_err(|e| AgentError::Device(format!("add peer {}: {e}", p.mesh_address)))?;
        }
        if !peers.is_empty()
            && !self.running.swap(true, std::sync::atomic::Ordering::SeqCst)
            && let Err(e) = self.device.resume().await
        {
            self.running
                .store(false, std::sync::atomic::Ordering::SeqCst);
            return Err(AgentError::Device(format!(
                "listen on the WireGuard port: {e}"
            )));
        }
        Ok(())
    }

    async fn status(&self) -> Vec<PeerStatus> {
        use base64::{Engine, engine::general_purpose::STANDARD};
        self.device
            .peers()
            .await
            .into_iter()
            .map(|s| PeerStatus {
                public_key: STANDARD.encode(s.peer.public_key.as_bytes()),
                endpoint: s.peer.endpoint.map(|e| e.to_string()),
                mesh_address: s.peer.allowed_ips.iter().find_map(|n| match n {
                    IpNetwork::V4(v4) => Some(v4.ip()),
                    IpNetwork::V6(_) => None,
                }),
                last_handshake_secs: s.stats.last_handshake.map(|d| d.as_secs()),
                rx_bytes: s.stats.rx_bytes as u64,
                tx_bytes: s.stats.tx_bytes as u64,
            })
            .collect()
    }
}
