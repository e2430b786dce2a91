//! rtnetlink on a NETLINK_ROUTE socket, hand-written: re-addressing the mesh interface
//! after the drop (delete the old IPv4 address, add the new one), and, before the drop,
//! creating the kernel WireGuard link (RTM_NEWLINK of kind `wireguard`, address, up) or
//! deleting it. CAP_NET_ADMIN, which the agent keeps, is all they need; no `ip` is executed
//! (exec would drop the capabilities, and Landlock forbids it anyway).
//!
//! Why by hand and not netlink-packet-route: the agent sends five small fixed messages
//! (ifinfomsg/ifaddrmsg plus a few attributes, one nested); that crate is ~52,000 lines
//! for every rtnetlink message there is. The generic-netlink side (WireGuard's own family,
//! nested peers and allowed IPs, dumps) does use the rust-netlink crates: see
//! [`crate::kernel_wg`].

use std::{
    cell::Cell,
    net::Ipv4Addr,
    os::fd::{AsRawFd, OwnedFd},
};

use nix::{
    errno::Errno,
    sys::socket::{self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType},
};

use crate::error::AgentError;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFF_UP: u32 = 0x1;
const AF_INET: u8 = 2;
const AF_UNSPEC: u8 = 0;

/// A NETLINK_ROUTE socket that sends one request at a time and reads its acknowledgement.
struct Route {
    fd: OwnedFd,
    seq: Cell<u32>,
}

/// A netlink socket of `protocol`, bound (the kernel assigns the port id); the error names
/// the step that failed. Shared with [`crate::kernel_wg`]'s generic netlink socket.
pub(crate) fn open_socket(protocol: SockProtocol) -> Result<OwnedFd, (&'static str, Errno)> {
    let fd = socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        protocol,
    )
    .map_err(|e| ("netlink socket", e))?;
    socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(|e| ("bind", e))?;
    Ok(fd)
}

impl Route {
    fn open() -> Result<Self, (&'static str, Errno)> {
        Ok(Self {
            fd: open_socket(SockProtocol::NetlinkRoute)?,
            seq: Cell::new(0),
        })
    }

    /// Adds `addr/prefix` to link `index` (RTM_NEWADDR, refusing an existing one).
    fn add_address(&self, index: u32, addr: Ipv4Addr, prefix: u8) -> Result<(), Errno> {
        self.request(&address_message(
            RTM_NEWADDR,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            self.next_seq(),
            index,
            addr,
            prefix,
        ))
    }

    fn next_seq(&self) -> u32 {
        let seq = self.seq.get().wrapping_add(1);
        self.seq.set(seq);
        seq
    }

    /// Sends `message` (its sequence number already in) and waits for the kernel's ack.
    fn request(&self, message: &[u8]) -> Result<(), Errno> {
        let reply = self.exchange(message)?;
        match ack_errno(&reply) {
            Some(0) => Ok(()),
            Some(errno) => Err(Errno::from_raw(-errno)),
            // Not an acknowledgement: say so with the one errno that fits.
            None => Err(Errno::EBADMSG),
        }
    }

    /// Sends `message` and returns the first reply datagram.
    fn exchange(&self, message: &[u8]) -> Result<Vec<u8>, Errno> {
        socket::sendto(
            self.fd.as_raw_fd(),
            message,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )?;
        let mut reply = vec![0u8; 16 * 1024];
        let n = socket::recv(self.fd.as_raw_fd(), &mut reply, MsgFlags::empty())?;
        reply.truncate(n);
        Ok(reply)
    }

    /// The IFLA_INFO_KIND of link `name` (`wireguard`, `tun`, …; None for a plain device).
    fn link_kind(&self, name: &str) -> Result<Option<String>, Errno> {
        let mut attrs = Vec::new();
        put_attr(&mut attrs, IFLA_IFNAME, &c_string(name));
        let message = link_message(
            RTM_GETLINK,
            NLM_F_REQUEST,
            self.next_seq(),
            0,
            (0, 0),
            &attrs,
        );
        let reply = self.exchange(&message)?;
        if let Some(errno) = ack_errno(&reply) {
            return Err(Errno::from_raw(-errno));
        }
        Ok(parse_link_kind(&reply))
    }
}

/// Replaces `old/prefix` by `new/prefix` on `interface`. The old address goes first: with
/// both in one subnet the new one would be a secondary, and deleting the primary deletes
/// its secondaries unless promote_secondaries is set.
pub fn readdress(
    interface: &str,
    old: Ipv4Addr,
    new: Ipv4Addr,
    prefix: u8,
) -> Result<(), AgentError> {
    let fail = |step: &str, e: &dyn std::fmt::Display| {
        AgentError::Device(format!(
            "re-address {} from {old} to {new}: {step}: {e}",
            servos_core::validate::show(interface)
        ))
    };
    let index = nix::net::if_::if_nametoindex(interface).map_err(|e| fail("interface", &e))?;
    let route = Route::open().map_err(|(step, e)| fail(step, &e))?;
    let message = address_message(
        RTM_DELADDR,
        NLM_F_REQUEST | NLM_F_ACK,
        route.next_seq(),
        index,
        old,
        prefix,
    );
    route
        .request(&message)
        .map_err(|e| fail("delete address", &e))?;
    route
        .add_address(index, new, prefix)
        .map_err(|e| fail("add address", &e))
}

/// Which step of creating the kernel WireGuard link failed, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkError {
    /// `create` (RTM_NEWLINK of kind wireguard: the step that fails without the module),
    /// `add address`, `set up`, or the socket's own steps.
    pub step: &'static str,
    pub errno: Errno,
}

impl LinkError {
    /// The kernel was asked for a link of kind `wireguard` and could not make one.
    pub fn at_create(&self) -> bool {
        self.step == "create"
    }
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.step, describe(self.errno))
    }
}

/// `EOPNOTSUPP: Operation not supported (os error 95)`: the errno's name and libc's text
/// (nix's own text for 95 is the socket one, "… on transport endpoint").
pub fn describe(errno: Errno) -> String {
    format!(
        "{errno:?}: {}",
        std::io::Error::from_raw_os_error(errno as i32)
    )
}

/// Creates the kernel WireGuard link `name` with MTU `mtu`, gives it `address/prefix` and
/// sets it up; returns its interface index. A link of that name left by an earlier run
/// (the agent killed before it could delete it) is deleted first. If a step after the
/// creation fails, the half-made link is deleted before the error is returned.
pub fn create_wireguard_link(
    name: &str,
    mtu: u32,
    address: Ipv4Addr,
    prefix: u8,
) -> Result<u32, LinkError> {
    create_link("wireguard", name, mtu, address, prefix)
}

/// [`create_wireguard_link`] for a link of any `kind` (the tests use `bridge`, which this
/// kernel has, to run every step against a real kernel).
fn create_link(
    kind: &str,
    name: &str,
    mtu: u32,
    address: Ipv4Addr,
    prefix: u8,
) -> Result<u32, LinkError> {
    let route = Route::open().map_err(|(step, errno)| LinkError { step, errno })?;
    let create =
        |route: &Route| route.request(&new_link_message(route.next_seq(), kind, name, mtu));
    match create(&route) {
        Ok(()) => {}
        // A link of this kind and name is one a killed agent left (a running agent's TUN
        // device, or anything else, is never touched: the error stands).
        Err(Errno::EEXIST) if route.link_kind(name).ok().flatten().as_deref() == Some(kind) => {
            tracing::info!(interface = %servos_core::validate::show(name), "deleting the {kind} interface left by an earlier run");
            route
                .request(&delete_link_message(route.next_seq(), name))
                .and_then(|()| create(&route))
                .map_err(|errno| LinkError {
                    step: "create",
                    errno,
                })?;
        }
        Err(errno) => {
            return Err(LinkError {
                step: "create",
                errno,
            });
        }
    }
    let configure = || -> Result<u32, LinkError> {
        let index = nix::net::if_::if_nametoindex(name).map_err(|errno| LinkError {
            step: "look up the new link",
            errno,
        })?;
        route
            .add_address(index, address, prefix)
            .map_err(|errno| LinkError {
                step: "add address",
                errno,
            })?;
        route
            .request(&set_up_message(route.next_seq(), index))
            .map_err(|errno| LinkError {
                step: "set up",
                errno,
            })?;
        Ok(index)
    };
    configure().inspect_err(|_| {
        let _ = route.request(&delete_link_message(route.next_seq(), name));
    })
}

/// Deletes the link `name` (RTM_DELLINK by name).
pub fn delete_link(name: &str) -> Result<(), LinkError> {
    let route = Route::open().map_err(|(step, errno)| LinkError { step, errno })?;
    route
        .request(&delete_link_message(route.next_seq(), name))
        .map_err(|errno| LinkError {
            step: "delete",
            errno,
        })
}

/// IFLA_INFO_KIND from an RTM_NEWLINK reply (nlmsghdr, ifinfomsg, attributes).
fn parse_link_kind(reply: &[u8]) -> Option<String> {
    use netlink_packet_core::NlasIterator;
    let len = u32::from_ne_bytes(reply.get(0..4)?.try_into().ok()?) as usize;
    let attrs = reply.get(32..len.min(reply.len()))?;
    let info = NlasIterator::new(attrs)
        .filter_map(Result::ok)
        .find(|a| a.kind() & !NLA_F_NESTED == IFLA_LINKINFO)?;
    let kind = NlasIterator::new(info.value())
        .filter_map(Result::ok)
        .find(|a| a.kind() == IFLA_INFO_KIND)?;
    let text = kind.value().split(|b| *b == 0).next()?;
    String::from_utf8(text.to_vec()).ok()
}

/// Appends one netlink attribute (header, value, padding to 4 bytes).
fn put_attr(m: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    m.extend_from_slice(&(len as u16).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(value);
    m.resize(m.len() + (4 - len % 4) % 4, 0);
}

/// A NUL-terminated attribute string.
fn c_string(text: &str) -> Vec<u8> {
    let mut v = text.as_bytes().to_vec();
    v.push(0);
    v
}

/// nlmsghdr + ifinfomsg (family AF_UNSPEC, `index`, `flags`/`change`) + `attrs`.
fn link_message(
    kind: u16,
    flags: u16,
    seq: u32,
    index: u32,
    up: (u32, u32),
    attrs: &[u8],
) -> Vec<u8> {
    let len = 16 + 16 + attrs.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes()); // nlmsg_len
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel
    m.extend_from_slice(&[AF_UNSPEC, 0, 0, 0]); // ifi_family, pad, ifi_type (any)
    m.extend_from_slice(&index.to_ne_bytes()); // ifi_index
    m.extend_from_slice(&up.0.to_ne_bytes()); // ifi_flags
    m.extend_from_slice(&up.1.to_ne_bytes()); // ifi_change
    m.extend_from_slice(attrs);
    m
}

/// RTM_NEWLINK, create-exclusive: IFLA_IFNAME, IFLA_MTU and IFLA_LINKINFO holding
/// IFLA_INFO_KIND "wireguard" (`ip link add NAME mtu MTU type wireguard`).
#[cfg(test)]
fn new_wireguard_link_message(seq: u32, name: &str, mtu: u32) -> Vec<u8> {
    new_link_message(seq, "wireguard", name, mtu)
}

/// RTM_NEWLINK, create-exclusive, of link kind `kind`.
fn new_link_message(seq: u32, kind: &str, name: &str, mtu: u32) -> Vec<u8> {
    let mut attrs = Vec::new();
    put_attr(&mut attrs, IFLA_IFNAME, &c_string(name));
    put_attr(&mut attrs, IFLA_MTU, &mtu.to_ne_bytes());
    let mut info = Vec::new();
    put_attr(&mut info, IFLA_INFO_KIND, &c_string(kind));
    put_attr(&mut attrs, IFLA_LINKINFO | NLA_F_NESTED, &info);
    link_message(
        RTM_NEWLINK,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        seq,
        0,
        (0, 0),
        &attrs,
    )
}

/// RTM_NEWLINK on an existing link: IFF_UP set (`ip link set dev … up`).
fn set_up_message(seq: u32, index: u32) -> Vec<u8> {
    link_message(
        RTM_NEWLINK,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        index,
        (IFF_UP, IFF_UP),
        &[],
    )
}

/// RTM_DELLINK by name.
fn delete_link_message(seq: u32, name: &str) -> Vec<u8> {
    let mut attrs = Vec::new();
    put_attr(&mut attrs, IFLA_IFNAME, &c_string(name));
    link_message(
        RTM_DELLINK,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        0,
        (0, 0),
        &attrs,
    )
}

/// nlmsghdr + ifaddrmsg + IFA_LOCAL + IFA_ADDRESS, in native byte order (addresses in
/// network order).
fn address_message(
    kind: u16,
    flags: u16,
    seq: u32,
    index: u32,
    addr: Ipv4Addr,
    prefix: u8,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(40);
    m.extend_from_slice(&40u32.to_ne_bytes()); // nlmsg_len
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel
    m.extend_from_slice(&[AF_INET, prefix, 0, 0]); // family, prefixlen, flags, scope universe
    m.extend_from_slice(&index.to_ne_bytes());
    for attr in [IFA_LOCAL, IFA_ADDRESS] {
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&attr.to_ne_bytes());
        m.extend_from_slice(&addr.octets());
    }
    m
}

/// The error code of an NLMSG_ERROR acknowledgement (0 = success, else -errno).
fn ack_errno(reply: &[u8]) -> Option<i32> {
    let kind = u16::from_ne_bytes(reply.get(4..6)?.try_into().ok()?);
    if kind != NLMSG_ERROR {
        return None;
    }
    Some(i32::from_ne_bytes(reply.get(16..20)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_message_layout() {
        let m = address_message(RTM_NEWADDR, 0x605, 2, 7, Ipv4Addr::new(10, 77, 0, 9), 16);
        assert_eq!(m.len(), 40);
        assert_eq!(&m[0..4], &40u32.to_ne_bytes());
        assert_eq!(&m[4..6], &20u16.to_ne_bytes());
        assert_eq!(&m[16..20], &[2, 16, 0, 0]);
        assert_eq!(&m[20..24], &7u32.to_ne_bytes());
        assert_eq!(
            &m[24..28],
            [8u16.to_ne_bytes(), IFA_LOCAL.to_ne_bytes()].concat()
        );
        assert_eq!(&m[28..32], &[10, 77, 0, 9]);
        assert_eq!(&m[36..40], &[10, 77, 0, 9]);
    }

    #[test]
    fn ack_is_read_from_an_nlmsgerr() {
        let mut reply = vec![0u8; 36];
        reply[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        reply[16..20].copy_from_slice(&(-17i32).to_ne_bytes());
        assert_eq!(ack_errno(&reply), Some(-17));
        assert_eq!(ack_errno(&[0u8; 8]), None);
    }

    /// `ip link add servos0 mtu 1420 type wireguard`, byte for byte (x86-64/aarch64 order).
    #[cfg(target_endian = "little")]
    #[test]
    fn new_wireguard_link_message_golden_bytes() {
        let m = new_wireguard_link_message(1, "servos0", 1420);
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &[72, 0, 0, 0, 16, 0, 0x05, 0x06, 1, 0, 0, 0, 0, 0, 0, 0][..], // nlmsghdr: RTM_NEWLINK, REQUEST|ACK|EXCL|CREATE
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],              // ifinfomsg: AF_UNSPEC, index 0, no flags
            &[12, 0, 3, 0], b"servos0\0",                                   // IFLA_IFNAME
            &[8, 0, 4, 0, 0x8c, 0x05, 0, 0],                                // IFLA_MTU 1420
            &[20, 0, 18, 0x80],                                             // IFLA_LINKINFO | NLA_F_NESTED
            &[14, 0, 1, 0], b"wireguard\0", &[0, 0],                        //   IFLA_INFO_KIND, padded
        ]
        .concat();
        assert_eq!(m, want);
    }

    /// The same request read back with netlink-packet-core's attribute parser.
    #[test]
    fn new_wireguard_link_attributes_parse_back() {
        use netlink_packet_core::{NlaBuffer, NlasIterator};
        let m = new_wireguard_link_message(7, "wgmesh1", 1420);
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize,
            m.len()
        );
        let attrs: Vec<(u16, Vec<u8>)> = NlasIterator::new(&m[32..])
            .map(|a| {
                let a: NlaBuffer<&[u8]> = a.unwrap();
                (a.kind(), a.value().to_vec())
            })
            .collect();
        assert_eq!(attrs.len(), 3);
        assert_eq!(attrs[0], (IFLA_IFNAME, b"wgmesh1\0".to_vec()));
        assert_eq!(attrs[1], (IFLA_MTU, 1420u32.to_ne_bytes().to_vec()));
        assert_eq!(attrs[2].0 & !NLA_F_NESTED, IFLA_LINKINFO);
        let info: Vec<(u16, Vec<u8>)> = NlasIterator::new(&attrs[2].1[..])
            .map(|a| {
                let a: NlaBuffer<&[u8]> = a.unwrap();
                (a.kind(), a.value().to_vec())
            })
            .collect();
        assert_eq!(info, vec![(IFLA_INFO_KIND, b"wireguard\0".to_vec())]);
    }

    #[test]
    fn errno_is_named_and_described() {
        let e = LinkError {
            step: "create",
            errno: Errno::EOPNOTSUPP,
        };
        assert_eq!(
            e.to_string(),
            "create: EOPNOTSUPP: Operation not supported (os error 95)"
        );
        assert!(e.at_create());
    }

    #[test]
    fn link_kind_is_read_from_a_newlink_reply() {
        // A reply has the request's layout: the creation request stands in for one.
        let reply = new_wireguard_link_message(1, "servos0", 1420);
        assert_eq!(parse_link_kind(&reply).as_deref(), Some("wireguard"));
        assert_eq!(parse_link_kind(&set_up_message(1, 2)), None);
        assert_eq!(parse_link_kind(&[0u8; 8]), None);
    }

    #[test]
    fn set_up_and_delete_messages() {
        let up = set_up_message(3, 9);
        assert_eq!(up.len(), 32);
        assert_eq!(&up[4..6], &RTM_NEWLINK.to_ne_bytes());
        assert_eq!(&up[6..8], &(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        assert_eq!(&up[20..24], &9u32.to_ne_bytes());
        assert_eq!(
            &up[24..32],
            [IFF_UP.to_ne_bytes(), IFF_UP.to_ne_bytes()].concat()
        );
        let del = delete_link_message(4, "servos0");
        assert_eq!(del.len(), 44);
        assert_eq!(&del[4..6], &RTM_DELLINK.to_ne_bytes());
        assert_eq!(&del[36..44], b"servos0\0");
    }

    /// Every rtnetlink step of the kernel link against this machine's kernel, in a private
    /// network namespace (the test re-runs itself under `unshare --net`): create, MTU,
    /// address, up, a stale link of the same kind replaced, a link of another kind left
    /// alone, a half-made link deleted when a later step fails, delete. The kind is
    /// `bridge`: this kernel has no WireGuard module, so `wireguard` itself can only be
    /// checked to fail with EOPNOTSUPP and leave nothing behind.
    #[test]
    fn rtnetlink_link_steps_on_a_bridge_kernel_wireguard_not_available_here() {
        const NAME: &str =
            "netlink::tests::rtnetlink_link_steps_on_a_bridge_kernel_wireguard_not_available_here";
        if std::env::var_os("SERVOS_NETLINK_TEST_NETNS").is_some() {
            return link_steps_in_private_netns();
        }
        assert!(
            nix::unistd::geteuid().is_root(),
            "needs root (network namespaces)"
        );
        let out = std::process::Command::new("unshare")
            .arg("--net")
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
            .env("SERVOS_NETLINK_TEST_NETNS", "1")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(text.contains("link steps: all checked"), "{text}");
    }

    fn link_steps_in_private_netns() {
        // `ip`, not /sys/class/net: sysfs still shows the namespace it was mounted in.
        let link = |name: &str| {
            let out = std::process::Command::new("ip")
                .args(["-o", "link", "show", "dev", name])
                .output()
                .unwrap();
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let index_of = |name: &str| {
            link(name).map(|l| l.split(':').next().unwrap_or_default().trim().to_owned())
        };
        let addresses = |name: &str| {
            let out = std::process::Command::new("ip")
                .args(["-4", "-o", "addr", "show", "dev", name])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let address = Ipv4Addr::new(10, 77, 5, 1);

        // Created with its MTU, address and IFF_UP.
        let index = create_link("bridge", "mesh-t0", 1420, address, 16).unwrap();
        let shown = link("mesh-t0").unwrap();
        assert!(shown.starts_with(&format!("{index}: mesh-t0:")), "{shown}");
        assert!(shown.contains(" mtu 1420 "), "{shown}");
        let flags = shown.split(['<', '>']).nth(1).unwrap_or_default();
        assert!(flags.split(',').any(|f| f == "UP"), "{shown}");
        assert!(
            addresses("mesh-t0").contains("10.77.5.1/16"),
            "{}",
            addresses("mesh-t0")
        );
        let route = Route::open().unwrap();
        assert_eq!(route.link_kind("mesh-t0"), Ok(Some("bridge".to_owned())));

        // The same kind and name again: the old link is replaced (a killed agent's).
        let again = create_link("bridge", "mesh-t0", 1420, address, 16).unwrap();
        assert_ne!(again, index);
        assert!(addresses("mesh-t0").contains("10.77.5.1/16"));

        // A later step fails (prefix 33): the half-made link is deleted.
        let err =
            create_link("bridge", "mesh-t1", 1420, Ipv4Addr::new(10, 77, 5, 2), 33).unwrap_err();
        assert_eq!(err.step, "add address");
        assert!(!err.at_create());
        assert_eq!(link("mesh-t1"), None, "half-made link left behind");

        // Another kind of that name is never deleted.
        let err = create_link("wireguard", "mesh-t0", 1420, address, 16).unwrap_err();
        assert_eq!((err.step, err.errno), ("create", Errno::EEXIST));
        assert_eq!(index_of("mesh-t0"), Some(again.to_string()));

        // WireGuard itself: EOPNOTSUPP here, nothing left.
        if !std::path::Path::new("/sys/module/wireguard").exists() {
            let err = create_wireguard_link("mesh-wg", 1420, address, 16).unwrap_err();
            assert_eq!((err.step, err.errno), ("create", Errno::EOPNOTSUPP));
            assert_eq!(link("mesh-wg"), None);
        }

        // Deleted, and deleting again says so.
        delete_link("mesh-t0").unwrap();
        assert_eq!(link("mesh-t0"), None);
        assert_eq!(delete_link("mesh-t0").unwrap_err().errno, Errno::ENODEV);
        println!("link steps: all checked");
    }
}
