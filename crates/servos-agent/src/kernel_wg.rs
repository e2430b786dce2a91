//! Kernel WireGuard: the link of kind `wireguard` created as root before the drop
//! ([`KernelLink`], over rtnetlink in [`crate::netlink`]), then configured and read after
//! the drop over WireGuard's generic netlink family ([`KernelMesh`]): WG_CMD_SET_DEVICE
//! for the private key, listen port and peers, WG_CMD_GET_DEVICE (a dump) for the peers'
//! handshakes and byte counters. The family needs CAP_NET_ADMIN, which the agent keeps.
//!
//! The messages are built and parsed with the rust-netlink crates (netlink-packet-core,
//! -generic, -wireguard): nested peers and allowed IPs, multi-part dumps. The socket is a
//! plain blocking NETLINK_GENERIC socket (nix): each request is answered by the kernel at
//! once, so the async runtime is held for microseconds, not for I/O.
//!
//! The private key goes to the kernel only inside a netlink message: the buffer it is
//! serialised into and the parsed attribute are zeroized, and so is every dump reply
//! (the kernel puts the private key in WG_CMD_GET_DEVICE replies too).

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    os::fd::{AsRawFd, OwnedFd},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, SystemTime},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NetlinkDeserializable, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_generic::{
    GenlFamily, GenlMessage,
    ctrl::{GenlCtrl, GenlCtrlCmd, nlas::GenlCtrlAttrs},
};
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardCmd, WireguardMessage, WireguardPeer, WireguardPeerAttribute, WireguardPeerFlags,
};
use nix::{
    errno::Errno,
    sys::{
        socket::{self, MsgFlags, NetlinkAddr, SockProtocol, sockopt},
        time::TimeVal,
    },
};
use servos_core::{Secret, validate::show};
use zeroize::{Zeroize, Zeroizing};

use crate::{
    config::PeerConfig,
    error::AgentError,
    netlink::{self, LinkError},
    tunnel::{KEEPALIVE_SECS, PeerStatus},
};

/// A kernel WireGuard link this process created. Unlike a TUN device it outlives the
/// process, so it is deleted when this value drops: on every error path before and after
/// the drop, and when the agent stops (CAP_NET_ADMIN suffices). A link left by a killed
/// agent is replaced on the next start ([`netlink::create_wireguard_link`]).
#[derive(Debug)]
pub struct KernelLink {
    name: String,
    index: u32,
}

impl KernelLink {
    /// Creates the link `name` of kind `wireguard` (MTU [`crate::tunnel::MESH_MTU`]),
    /// addressed and up. Root only (before the drop).
    pub fn create(name: &str, address: Ipv4Addr, prefix: u8) -> Result<Self, LinkError> {
        let index = netlink::create_wireguard_link(
            name,
            u32::from(crate::tunnel::MESH_MTU),
            address,
            prefix,
        )?;
        Ok(Self {
            name: name.to_owned(),
            index,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for KernelLink {
    fn drop(&mut self) {
        match netlink::delete_link(&self.name) {
            Ok(()) => {}
            Err(e) if e.errno == Errno::ENODEV => {}
            Err(e) => tracing::warn!(
                interface = %show(&self.name),
                "cannot delete the kernel WireGuard interface: {e}"
            ),
        }
    }
}

/// The generic netlink family id of "wireguard" and a socket to talk to it.
struct Genl {
    fd: OwnedFd,
    family: u16,
    seq: AtomicU32,
}

/// Receive buffer for replies: a dump message is at most a few pages.
const RECV_BUFFER: usize = 64 * 1024;

impl Genl {
    fn open() -> Result<Self, (&'static str, Errno)> {
        let fd = netlink::open_socket(SockProtocol::NetlinkGeneric)?;
        // The kernel answers at once; a missing answer must not hang the agent's loop.
        socket::setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(5, 0))
            .map_err(|e| ("receive timeout", e))?;
        let mut genl = Self {
            fd,
            family: 0,
            seq: AtomicU32::new(0),
        };
        genl.family = genl
            .resolve_family(WireguardMessage::family_name())
            .map_err(|e| ("resolve the wireguard generic netlink family", e))?;
        Ok(genl)
    }

    fn next_seq(&self) -> u32 {
        self.seq.fetch_add(1, Ordering::Relaxed).wrapping_add(1)
    }

    /// The sequence number of the request sent last (replies carry it).
    fn last_seq(&self) -> u32 {
        self.seq.load(Ordering::Relaxed)
    }

    /// CTRL_CMD_GETFAMILY `name` ("wireguard"): the family's id (assigned when the module
    /// loaded). ENOENT when the kernel has no such family.
    fn resolve_family(&self, name: &str) -> Result<u16, Errno> {
        let mut genl = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(name.to_owned())],
        });
        genl.finalize();
        let mut message = NetlinkMessage::from(genl);
        message.header.flags = NLM_F_REQUEST;
        message.header.sequence_number = self.next_seq();
        message.finalize();
        let mut bytes = vec![0u8; message.buffer_len()];
        message.serialize(&mut bytes);
        self.send(&bytes)?;
        let mut buffer = vec![0u8; RECV_BUFFER];
        let mut family = None;
        self.receive::<GenlMessage<GenlCtrl>>(&mut buffer, |reply| {
            family = reply.payload.nlas.iter().find_map(|a| match a {
                GenlCtrlAttrs::FamilyId(id) => Some(*id),
                _ => None,
            });
        })?;
        family.ok_or(Errno::ENOENT)
    }

    /// Sends a WireGuard request. The serialised bytes are zeroized after sending and the
    /// message's private key attribute, if any, is zeroized too.
    fn send_wireguard(
        &self,
        mut message: WireguardMessage,
        flags: u16,
    ) -> Result<Zeroizing<Vec<u8>>, Errno> {
        let bytes = wireguard_request(&message, self.family, flags, self.next_seq());
        forget_private_key(&mut message.attributes);
        self.send(&bytes)?;
        Ok(bytes)
    }

    /// Waits for the acknowledgement of a request sent with NLM_F_ACK. The buffer is large
    /// and zeroized: an error reply echoes the whole request, private key included.
    fn ack(&self) -> Result<(), Errno> {
        let mut buffer = Zeroizing::new(vec![0u8; RECV_BUFFER]);
        self.receive::<GenlMessage<WireguardMessage>>(&mut buffer, drop)
    }

    fn send(&self, bytes: &[u8]) -> Result<(), Errno> {
        socket::sendto(
            self.fd.as_raw_fd(),
            bytes,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )
        .map(drop)
    }

    /// Reads replies until the request is done: an acknowledgement (NLMSG_ERROR with code 0),
    /// the end of a dump (NLMSG_DONE), or one plain reply when neither was asked for. Each
    /// inner message goes to `each`.
    fn receive<M: NetlinkDeserializable + std::fmt::Debug>(
        &self,
        buffer: &mut [u8],
        mut each: impl FnMut(M),
    ) -> Result<(), Errno> {
        loop {
            let n = socket::recv(self.fd.as_raw_fd(), buffer, MsgFlags::empty())?;
            match parse_replies(&buffer[..n], self.last_seq(), &mut each)? {
                Replies::Finished => return Ok(()),
                Replies::More => {}
            }
        }
    }
}

enum Replies {
    Finished,
    More,
}

/// Parses one datagram of netlink messages answering request `seq` (a late answer to an
/// earlier, timed-out request is skipped); a reply that is not part of a multi-part dump
/// finishes the request.
fn parse_replies<M: NetlinkDeserializable + std::fmt::Debug>(
    datagram: &[u8],
    seq: u32,
    each: &mut impl FnMut(M),
) -> Result<Replies, Errno> {
    let mut offset = 0;
    let mut finished = false;
    while offset < datagram.len() {
        let rest = &datagram[offset..];
        let len = NetlinkBuffer::new_checked(rest)
            .map_err(|_| Errno::EBADMSG)?
            .length() as usize;
        let message = NetlinkMessage::<M>::deserialize(&rest[..len]).map_err(|_| Errno::EBADMSG)?;
        let multipart = message.header.flags & netlink_packet_core::NLM_F_MULTIPART != 0;
        offset += len.div_ceil(4) * 4;
        if message.header.sequence_number != seq {
            continue;
        }
        match message.payload {
            NetlinkPayload::Error(e) => {
                return match e.code {
                    None => Ok(Replies::Finished),
                    Some(code) => Err(Errno::from_raw(-code.get())),
                };
            }
            NetlinkPayload::Done(_) => return Ok(Replies::Finished),
            NetlinkPayload::InnerMessage(inner) => {
                each(inner);
                if !multipart {
                    finished = true;
                }
            }
            _ => {}
        }
    }
    Ok(if finished {
        Replies::Finished
    } else {
        Replies::More
    })
}

/// Serialises a WireGuard generic netlink request into a buffer that zeroizes on drop.
fn wireguard_request(
    message: &WireguardMessage,
    family: u16,
    flags: u16,
    seq: u32,
) -> Zeroizing<Vec<u8>> {
    let mut genl = GenlMessage::from_payload(message.clone());
    genl.set_resolved_family_id(family);
    genl.finalize();
    let mut nl = NetlinkMessage::from(genl);
    nl.header.flags = flags;
    nl.header.sequence_number = seq;
    nl.finalize();
    let mut bytes = Zeroizing::new(vec![0u8; nl.buffer_len()]);
    nl.serialize(&mut bytes);
    if let NetlinkPayload::InnerMessage(genl) = &mut nl.payload {
        forget_private_key(&mut genl.payload.attributes);
    }
    bytes
}

fn forget_private_key(attributes: &mut [WireguardAttribute]) {
    for attribute in attributes {
        if let WireguardAttribute::PrivateKey(key) = attribute {
            key.zeroize();
        }
    }
}

/// The kernel device after the drop: its link and the generic netlink socket.
pub struct KernelMesh {
    link: KernelLink,
    genl: Genl,
}

impl std::fmt::Debug for KernelMesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelMesh")
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

impl KernelMesh {
    /// Gives the device its private key and listen port (WG_CMD_SET_DEVICE). The kernel
    /// opens the UDP socket itself, so no port privilege is needed here.
    pub fn start(link: KernelLink, key: Secret<[u8; 32]>, port: u16) -> Result<Self, AgentError> {
        let fail = |step: &str, e: Errno| {
            AgentError::Device(format!(
                "kernel WireGuard on {}: {step}: {e}",
                show(link.name())
            ))
        };
        let genl = match Genl::open() {
            Ok(genl) => genl,
            Err((step, e)) => return Err(fail(step, e)),
        };
        let message = device_message(link.index, &key, port);
        drop(key);
        genl.send_wireguard(message, NLM_F_REQUEST | NLM_F_ACK)
            .and_then(|_| genl.ack())
            .map_err(|e| fail("set the private key and listen port", e))?;
        Ok(Self { link, genl })
    }

    fn fail(&self, step: &str, e: Errno) -> AgentError {
        AgentError::Device(format!(
            "kernel WireGuard on {}: {step}: {e}",
            show(self.link.name())
        ))
    }

    /// Makes the device's peers exactly `peers`, as [`crate::tunnel::Mesh::set_peers`]
    /// does for gotatun: peers not wanted are removed (WGPEER_F_REMOVE_ME), the rest added
    /// or updated with their allowed IPs replaced. Not WGDEVICE_F_REPLACE_PEERS: that
    /// would drop every peer's session (and handshake) on each configuration change.
    pub fn set_peers(&self, peers: &[PeerConfig]) -> Result<(), AgentError> {
        let current: Vec<[u8; 32]> = self
            .dump()
            .map_err(|e| self.fail("read the peers", e))?
            .into_iter()
            .filter_map(|a| match a {
                WireguardAttribute::Peers(list) => Some(list),
                _ => None,
            })
            .flatten()
            .filter_map(|p| {
                p.iter().find_map(|a| match a {
                    WireguardPeerAttribute::PublicKey(k) => Some(*k),
                    _ => None,
                })
            })
            .collect();
        let Some(message) = peers_message(self.link.index, &current, peers)? else {
            return Ok(());
        };
        self.genl
            .send_wireguard(message, NLM_F_REQUEST | NLM_F_ACK)
            .and_then(|_| self.genl.ack())
            .map_err(|e| self.fail("set the peers", e))
    }

    /// Every peer's endpoint, last handshake and byte counters (WG_CMD_GET_DEVICE).
    pub fn status(&self) -> Result<Vec<PeerStatus>, AgentError> {
        let attributes = self.dump().map_err(|e| self.fail("read the device", e))?;
        Ok(peer_status(&attributes, SystemTime::now()))
    }

    /// WG_CMD_GET_DEVICE as a dump: the device's attributes from every reply message
    /// (a device with many peers is split over several). The private key the kernel
    /// includes is zeroized, in the parsed attributes and in the receive buffer.
    fn dump(&self) -> Result<Vec<WireguardAttribute>, Errno> {
        let request = WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![WireguardAttribute::IfIndex(self.link.index)],
        };
        self.genl
            .send_wireguard(request, NLM_F_REQUEST | NLM_F_DUMP)?;
        let mut buffer = Zeroizing::new(vec![0u8; RECV_BUFFER]);
        let mut attributes = Vec::new();
        self.genl
            .receive::<GenlMessage<WireguardMessage>>(&mut buffer, |reply| {
                let mut reply = reply.payload.attributes;
                forget_private_key(&mut reply);
                attributes.extend(reply);
            })?;
        Ok(attributes)
    }
}

/// WG_CMD_SET_DEVICE: private key and listen port of the device `index`.
fn device_message(index: u32, key: &Secret<[u8; 32]>, port: u16) -> WireguardMessage {
    WireguardMessage {
        cmd: WireguardCmd::SetDevice,
        attributes: vec![
            WireguardAttribute::IfIndex(index),
            WireguardAttribute::PrivateKey(*key.expose()),
            WireguardAttribute::ListenPort(port),
        ],
    }
}

/// WG_CMD_SET_DEVICE that turns the peers `current` into `wanted`; None when there is
/// nothing to send.
fn peers_message(
    index: u32,
    current: &[[u8; 32]],
    wanted: &[PeerConfig],
) -> Result<Option<WireguardMessage>, AgentError> {
    let mut by_key = BTreeMap::new();
    for p in wanted {
        by_key.insert(crate::config::decode_key(&p.public_key)?, p);
    }
    let mut list = Vec::new();
    for key in current {
        if !by_key.contains_key(key) {
            list.push(WireguardPeer(vec![
                WireguardPeerAttribute::PublicKey(*key),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe),
            ]));
        }
    }
    for (key, p) in by_key {
        let mut attributes = vec![
            WireguardPeerAttribute::PublicKey(key),
            WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps),
        ];
        if let Some(endpoint) = p.endpoint {
            attributes.push(WireguardPeerAttribute::Endpoint(endpoint));
        }
        attributes.push(WireguardPeerAttribute::PersistentKeepalive(KEEPALIVE_SECS));
        attributes.push(WireguardPeerAttribute::AllowedIps(vec![
            WireguardAllowedIp(vec![
                WireguardAllowedIpAttr::Family(WireguardAddressFamily::Ipv4),
                WireguardAllowedIpAttr::IpAddr(IpAddr::V4(p.mesh_address)),
                WireguardAllowedIpAttr::Cidr(32),
            ]),
        ]));
        list.push(WireguardPeer(attributes));
    }
    if list.is_empty() {
        return Ok(None);
    }
    Ok(Some(WireguardMessage {
        cmd: WireguardCmd::SetDevice,
        attributes: vec![
            WireguardAttribute::IfIndex(index),
            WireguardAttribute::Peers(list),
        ],
    }))
}

/// The peers of a WG_CMD_GET_DEVICE dump as [`PeerStatus`], in the kernel's order. A
/// peer whose allowed IPs did not fit one message appears again in the next with the
/// same public key: its parts are merged.
fn peer_status(attributes: &[WireguardAttribute], now: SystemTime) -> Vec<PeerStatus> {
    let mut peers: Vec<PeerStatus> = Vec::new();
    let all = attributes.iter().filter_map(|a| match a {
        WireguardAttribute::Peers(list) => Some(list),
        _ => None,
    });
    for peer in all.flatten() {
        let Some(key) = peer.iter().find_map(|a| match a {
            WireguardPeerAttribute::PublicKey(k) => Some(STANDARD.encode(k)),
            _ => None,
        }) else {
            continue;
        };
        let position = match peers.iter().position(|p| p.public_key == key) {
            Some(i) => i,
            None => {
                peers.push(PeerStatus {
                    public_key: key,
                    endpoint: None,
                    mesh_address: None,
                    last_handshake_secs: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                });
                peers.len() - 1
            }
        };
        let status = &mut peers[position];
        for attribute in peer.iter() {
            match attribute {
                WireguardPeerAttribute::Endpoint(e) => status.endpoint = Some(e.to_string()),
                WireguardPeerAttribute::LastHandshake(t) if t.seconds > 0 || t.nano_seconds > 0 => {
                    let at = SystemTime::UNIX_EPOCH
                        + Duration::new(
                            u64::try_from(t.seconds).unwrap_or(0),
                            u32::try_from(t.nano_seconds).unwrap_or(0),
                        );
                    status.last_handshake_secs =
                        Some(now.duration_since(at).map(|d| d.as_secs()).unwrap_or(0));
                }
                WireguardPeerAttribute::RxBytes(n) => status.rx_bytes = *n,
                WireguardPeerAttribute::TxBytes(n) => status.tx_bytes = *n,
                WireguardPeerAttribute::AllowedIps(ips) if status.mesh_address.is_none() => {
                    status.mesh_address = ips.iter().find_map(|ip| {
                        ip.iter().find_map(|a| match a {
                            WireguardAllowedIpAttr::IpAddr(IpAddr::V4(v4)) => Some(*v4),
                            _ => None,
                        })
                    });
                }
                _ => {}
            }
        }
    }
    peers
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use netlink_packet_core::{NLM_F_MULTIPART, NetlinkHeader};
    use netlink_packet_wireguard::WireguardTimeSpec;

    use super::*;

    const FAMILY: u16 = 0x15;

    fn peer(key: u8, endpoint: Option<&str>, mesh: [u8; 4]) -> PeerConfig {
        PeerConfig {
            public_key: STANDARD.encode([key; 32]),
            endpoint: endpoint.map(|e| e.parse().unwrap()),
            mesh_address: Ipv4Addr::from(mesh),
        }
    }

    fn parse(bytes: &[u8]) -> NetlinkMessage<GenlMessage<WireguardMessage>> {
        NetlinkMessage::deserialize(bytes).unwrap()
    }

    /// WG_CMD_SET_DEVICE with the private key and port, byte for byte.
    #[cfg(target_endian = "little")]
    #[test]
    fn device_message_golden_bytes() {
        let key: [u8; 32] = std::array::from_fn(|i| i as u8 + 1);
        let mut message = device_message(7, &Secret::new(key), 51820);
        let bytes = wireguard_request(&message, FAMILY, NLM_F_REQUEST | NLM_F_ACK, 1);
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &[72, 0, 0, 0, 0x15, 0, 5, 0, 1, 0, 0, 0, 0, 0, 0, 0][..], // nlmsghdr: family, REQUEST|ACK, seq 1
            &[1, 1, 0, 0],                                             // genlmsghdr: WG_CMD_SET_DEVICE, version 1
            &[8, 0, 1, 0, 7, 0, 0, 0],                                 // WGDEVICE_A_IFINDEX 7
            &[36, 0, 3, 0], &key,                                      // WGDEVICE_A_PRIVATE_KEY
            &[6, 0, 6, 0, 0x6c, 0xca, 0, 0],                           // WGDEVICE_A_LISTEN_PORT 51820, padded
        ]
        .concat();
        assert_eq!(&bytes[..], &want[..]);
        forget_private_key(&mut message.attributes);
        assert_eq!(
            message.attributes[1],
            WireguardAttribute::PrivateKey([0; 32])
        );
    }

    /// Two wanted peers and one to remove, in one WG_CMD_SET_DEVICE: read back with the
    /// crate's parser, and the allowed-IP bytes compared with `wg setconf`'s (captured
    /// with nlmon in netlink-packet-wireguard's tests).
    #[test]
    fn peers_message_for_two_peers_round_trips() {
        let old = [9u8; 32];
        let wanted = [
            peer(2, None, [10, 77, 0, 3]),
            peer(1, Some("192.0.2.2:51820"), [10, 77, 0, 2]),
        ];
        let message = peers_message(7, &[old, [2; 32]], &wanted).unwrap().unwrap();
        let bytes = wireguard_request(&message, FAMILY, NLM_F_REQUEST | NLM_F_ACK, 2);
        let parsed = parse(&bytes);
        assert_eq!(parsed.header.message_type, FAMILY);
        assert_eq!(parsed.header.flags, NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(parsed.header.length as usize, bytes.len());
        let NetlinkPayload::InnerMessage(genl) = parsed.payload else {
            panic!("not a generic netlink message")
        };
        assert_eq!(genl.header.cmd, 1);
        let allowed = |ip: [u8; 4]| {
            WireguardPeerAttribute::AllowedIps(vec![WireguardAllowedIp(vec![
                WireguardAllowedIpAttr::Family(WireguardAddressFamily::Ipv4),
                WireguardAllowedIpAttr::IpAddr(IpAddr::V4(Ipv4Addr::from(ip))),
                WireguardAllowedIpAttr::Cidr(32),
            ])])
        };
        let endpoint: SocketAddr = "192.0.2.2:51820".parse().unwrap();
        assert_eq!(
            genl.payload.attributes,
            vec![
                WireguardAttribute::IfIndex(7),
                WireguardAttribute::Peers(vec![
                    WireguardPeer(vec![
                        WireguardPeerAttribute::PublicKey(old),
                        WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe),
                    ]),
                    WireguardPeer(vec![
                        WireguardPeerAttribute::PublicKey([1; 32]),
                        WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps),
                        WireguardPeerAttribute::Endpoint(endpoint),
                        WireguardPeerAttribute::PersistentKeepalive(10),
                        allowed([10, 77, 0, 2]),
                    ]),
                    WireguardPeer(vec![
                        WireguardPeerAttribute::PublicKey([2; 32]),
                        WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps),
                        WireguardPeerAttribute::PersistentKeepalive(10),
                        allowed([10, 77, 0, 3]),
                    ]),
                ]),
            ]
        );
        // No device-level WGDEVICE_F_REPLACE_PEERS: kept peers keep their sessions.
        assert!(
            !genl
                .payload
                .attributes
                .iter()
                .any(|a| matches!(a, WireguardAttribute::Flags(_)))
        );
        #[cfg(target_endian = "little")]
        {
            #[rustfmt::skip]
            let wg_setconf_allowed_ip: &[u8] = &[
                0x1c, 0x00, 0x00, 0x80, 0x06, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00,
                0x08, 0x00, 0x02, 0x00, 10, 77, 0, 2, 0x05, 0x00, 0x03, 0x00, 0x20, 0x00, 0x00, 0x00,
            ];
            let keepalive: &[u8] = &[6, 0, 5, 0, 10, 0, 0, 0];
            let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
            assert!(contains(wg_setconf_allowed_ip));
            assert!(contains(keepalive));
        }
    }

    #[test]
    fn peers_message_edge_cases() {
        assert_eq!(peers_message(7, &[], &[]).unwrap(), None);
        let bad = PeerConfig {
            public_key: "nope".into(),
            endpoint: None,
            mesh_address: Ipv4Addr::new(10, 77, 0, 2),
        };
        let err = peers_message(7, &[], &[bad]).unwrap_err().to_string();
        assert_eq!(err, "invalid WireGuard public key \"nope\"");
        // Everything removed: one RemoveMe per current peer.
        let message = peers_message(7, &[[5; 32]], &[]).unwrap().unwrap();
        assert_eq!(
            message.attributes[1],
            WireguardAttribute::Peers(vec![WireguardPeer(vec![
                WireguardPeerAttribute::PublicKey([5; 32]),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe),
            ])])
        );
    }

    /// A kernel reply to `wg show` (nlmon capture from netlink-packet-wireguard's tests:
    /// generic netlink header onwards, private key masked to 0..31, endpoint to
    /// 1.1.1.1:1111).
    #[rustfmt::skip]
    const CAPTURED_GET_DEVICE: &[u8] = &[
        0x00, 0x01, 0x00, 0x00, 0x06, 0x00, 0x06, 0x00, 0x2c, 0x80, 0x00, 0x00,
        0x08, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x01, 0x00,
        0x03, 0x00, 0x00, 0x00, 0x07, 0x00, 0x02, 0x00, 0x63, 0x6e, 0x00, 0x00,
        0x24, 0x00, 0x03, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
        0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13,
        0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
        0x24, 0x00, 0x04, 0x00, 0xcc, 0xaf, 0x10, 0xe1, 0xa9, 0xd7, 0xd0, 0x5f,
        0xf2, 0xbd, 0xd2, 0xa0, 0xf1, 0x78, 0x2d, 0x97, 0x46, 0x9a, 0x1c, 0xf7,
        0xbe, 0x88, 0x0f, 0x68, 0x75, 0xa7, 0x79, 0x93, 0x5d, 0x1d, 0x21, 0x75,
        0xc0, 0x00, 0x08, 0x80, 0xbc, 0x00, 0x00, 0x80, 0x24, 0x00, 0x01, 0x00,
        0x77, 0xdc, 0x9a, 0xc0, 0xb3, 0xf0, 0xc5, 0xe7, 0x5b, 0xb8, 0xd3, 0x42,
        0x2d, 0x88, 0xec, 0x92, 0xd1, 0x3a, 0x34, 0x23, 0x22, 0x90, 0x87, 0x82,
        0x15, 0x51, 0x57, 0x19, 0x69, 0xde, 0xa0, 0x44, 0x24, 0x00, 0x02, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x06, 0x00,
        0x9a, 0x24, 0x77, 0x69, 0x00, 0x00, 0x00, 0x00, 0x02, 0x0e, 0xa8, 0x0f,
        0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x05, 0x00, 0x19, 0x00, 0x00, 0x00,
        0x0c, 0x00, 0x08, 0x00, 0x80, 0x40, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x0c, 0x00, 0x07, 0x00, 0x98, 0x44, 0xd0, 0x01, 0x00, 0x00, 0x00, 0x00,
        0x08, 0x00, 0x0a, 0x00, 0x01, 0x00, 0x00, 0x00, 0x14, 0x00, 0x04, 0x00,
        0x02, 0x00, 0x04, 0x57, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x09, 0x80, 0x1c, 0x00, 0x00, 0x80,
        0x05, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x01, 0x00,
        0x02, 0x00, 0x00, 0x00, 0x08, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    /// One datagram as the kernel sends a dump: the captured reply in a multi-part
    /// netlink message, a second part continuing the same peer and adding another, DONE.
    fn dump_datagram() -> Vec<u8> {
        let header = |len: usize, kind: u16| {
            let mut h = NetlinkHeader::default();
            h.length = len as u32;
            h.message_type = kind;
            h.flags = NLM_F_MULTIPART;
            h.sequence_number = 3;
            let mut b = vec![0u8; 16];
            netlink_packet_core::Emitable::emit(&h, &mut b);
            b
        };
        let mut datagram = header(16 + CAPTURED_GET_DEVICE.len(), FAMILY);
        datagram.extend_from_slice(CAPTURED_GET_DEVICE);
        let captured_peer: [u8; 32] = STANDARD
            .decode("d9yawLPwxedbuNNCLYjsktE6NCMikIeCFVFXGWneoEQ=")
            .unwrap()
            .try_into()
            .unwrap();
        let second = WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![
                WireguardAttribute::IfIndex(3),
                WireguardAttribute::Peers(vec![
                    WireguardPeer(vec![
                        WireguardPeerAttribute::PublicKey(captured_peer),
                        WireguardPeerAttribute::AllowedIps(vec![]),
                    ]),
                    WireguardPeer(vec![
                        WireguardPeerAttribute::PublicKey([7; 32]),
                        WireguardPeerAttribute::LastHandshake(WireguardTimeSpec::default()),
                        WireguardPeerAttribute::RxBytes(0),
                        WireguardPeerAttribute::TxBytes(148),
                        WireguardPeerAttribute::AllowedIps(vec![WireguardAllowedIp(vec![
                            WireguardAllowedIpAttr::Family(WireguardAddressFamily::Ipv4),
                            WireguardAllowedIpAttr::IpAddr(IpAddr::V4(Ipv4Addr::new(10, 77, 0, 4))),
                            WireguardAllowedIpAttr::Cidr(32),
                        ])]),
                    ]),
                ]),
            ],
        };
        let part = wireguard_request(&second, FAMILY, NLM_F_MULTIPART, 3);
        datagram.extend_from_slice(&part);
        datagram.extend_from_slice(&header(20, 3)); // NLMSG_DONE
        datagram.extend_from_slice(&0i32.to_ne_bytes());
        datagram
    }

    #[test]
    fn get_device_dump_parses_into_peer_status() {
        let datagram = dump_datagram();
        let mut attributes = Vec::new();
        let finished = parse_replies(&datagram, 3, &mut |reply: GenlMessage<WireguardMessage>| {
            let mut reply = reply.payload.attributes;
            forget_private_key(&mut reply);
            attributes.extend(reply);
        })
        .unwrap();
        assert!(
            matches!(finished, Replies::Finished),
            "NLMSG_DONE ends the dump"
        );
        assert!(
            attributes.contains(&WireguardAttribute::PrivateKey([0; 32])),
            "zeroized"
        );
        // Captured handshake at 1769415834.262671874; "now" 42.5 s later.
        let now = SystemTime::UNIX_EPOCH + Duration::new(1_769_415_876, 762_671_874);
        let peers = peer_status(&attributes, now);
        assert_eq!(
            peers,
            vec![
                PeerStatus {
                    public_key: "d9yawLPwxedbuNNCLYjsktE6NCMikIeCFVFXGWneoEQ=".into(),
                    endpoint: Some("1.1.1.1:1111".into()),
                    mesh_address: Some(Ipv4Addr::UNSPECIFIED),
                    last_handshake_secs: Some(42),
                    rx_bytes: 30_426_264,
                    tx_bytes: 1_917_056,
                },
                PeerStatus {
                    public_key: STANDARD.encode([7u8; 32]),
                    endpoint: None,
                    mesh_address: Some(Ipv4Addr::new(10, 77, 0, 4)),
                    last_handshake_secs: None,
                    rx_bytes: 0,
                    tx_bytes: 148,
                },
            ]
        );
    }

    /// CTRL_CMD_GETFAMILY against this machine's kernel: nlctrl always resolves (id 0x10);
    /// "wireguard" resolves only where the module is loaded, which it is not here, so the
    /// open fails with ENOENT at that step. Needs no privilege.
    #[test]
    fn generic_netlink_family_lookup_kernel_wireguard_not_available_here() {
        let wireguard_loaded = std::path::Path::new("/sys/module/wireguard").exists();
        match Genl::open() {
            Ok(genl) => {
                assert!(wireguard_loaded, "resolved without the module?");
                assert!(genl.family > 0x10);
                assert_eq!(genl.resolve_family("nlctrl"), Ok(0x10));
            }
            Err((step, errno)) => {
                assert!(!wireguard_loaded, "{step}: {errno}");
                assert_eq!(step, "resolve the wireguard generic netlink family");
                assert_eq!(errno, Errno::ENOENT);
            }
        }
        let fd = netlink::open_socket(SockProtocol::NetlinkGeneric).unwrap();
        let genl = Genl {
            fd,
            family: 0,
            seq: AtomicU32::new(0),
        };
        assert_eq!(genl.resolve_family("nlctrl"), Ok(0x10));
        assert_eq!(genl.resolve_family("no-such-family"), Err(Errno::ENOENT));
    }

    #[test]
    fn error_and_ack_replies() {
        let reply = |code: i32| {
            let mut m = vec![0u8; 36];
            m[0..4].copy_from_slice(&36u32.to_ne_bytes());
            m[4..6].copy_from_slice(&2u16.to_ne_bytes()); // NLMSG_ERROR
            m[16..20].copy_from_slice(&code.to_ne_bytes());
            m[20..24].copy_from_slice(&16u32.to_ne_bytes()); // the request's header
            m
        };
        let mut none = |_: GenlMessage<WireguardMessage>| panic!("no inner message");
        assert!(matches!(
            parse_replies(&reply(0), 0, &mut none),
            Ok(Replies::Finished)
        ));
        assert!(matches!(
            parse_replies(&reply(-1), 0, &mut none),
            Err(Errno::EPERM)
        ));
        // A late reply to another request is skipped.
        assert!(matches!(
            parse_replies(&reply(-1), 5, &mut none),
            Ok(Replies::More)
        ));
        assert!(matches!(
            parse_replies(&[1, 2, 3], 0, &mut none),
            Err(Errno::EBADMSG)
        ));
    }
}
