//! The WireGuard mesh interface: a TUN device created as root, driven after the drop by
//! gotatun (Mullvad's maintained userspace WireGuard), peers updated at runtime.

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
const KEEPALIVE_SECS: u16 = 10;

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

/// The running WireGuard device.
pub struct Mesh {
    device: Device<DefaultDeviceTransports>,
    /// gotatun opens its UDP socket only when a device with peers resumes: the device is
    /// built suspended and resumed once the first peers are in.
    running: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh").finish_non_exhaustive()
    }
}

impl Mesh {
    /// Starts WireGuard on the interface created before the drop. Needs a tokio runtime.
    /// `udp_buffer` sets the UDP socket's kernel buffers (0 keeps the kernel default).
    pub async fn start(
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

    /// Makes the device's peers exactly `peers`: unknown ones removed, the rest added or
    /// updated (endpoint, allowed IP = the peer's mesh address).
    pub async fn set_peers(&self, peers: &[PeerConfig]) -> Result<(), AgentError> {
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

    pub async fn status(&self) -> Vec<PeerStatus> {
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
