//! Re-addressing the mesh interface after the drop: two rtnetlink requests (delete the old
//! IPv4 address, add the new one) on a NETLINK_ROUTE socket. CAP_NET_ADMIN, which the
//! agent keeps, is all they need; no `ip` is executed (exec would drop the capabilities,
//! and Landlock forbids it anyway).

use std::{net::Ipv4Addr, os::fd::AsRawFd};

use nix::sys::socket::{
    self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

use crate::error::AgentError;

const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const AF_INET: u8 = 2;

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
    let fd = socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .map_err(|e| fail("netlink socket", &e))?;
    socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(|e| fail("bind", &e))?;
    let request = |kind: u16, flags: u16, seq: u32, addr: Ipv4Addr| -> Result<(), AgentError> {
        let message = address_message(kind, flags, seq, index, addr, prefix);
        socket::sendto(
            fd.as_raw_fd(),
            &message,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )
        .map_err(|e| fail("send", &e))?;
        let mut reply = [0u8; 512];
        let n = socket::recv(fd.as_raw_fd(), &mut reply, MsgFlags::empty())
            .map_err(|e| fail("receive", &e))?;
        match ack_errno(&reply[..n]) {
            Some(0) => Ok(()),
            Some(errno) => Err(fail(
                if kind == RTM_NEWADDR {
                    "add address"
                } else {
                    "delete address"
                },
                &nix::errno::Errno::from_raw(-errno),
            )),
            None => Err(fail("reply", &"not a netlink acknowledgement")),
        }
    };
    request(RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK, 1, old)?;
    request(
        RTM_NEWADDR,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        2,
        new,
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
}
