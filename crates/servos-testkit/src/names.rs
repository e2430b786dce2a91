//! Every name and path a test network uses, derived from its slot number, so that a later
//! run can find and remove the leftovers of a killed one from the slot number alone.
//!
//! A slot `X` (0–254) is held by one live test network at a time, recorded in
//! `/run/servos-testkit/slots/X` with the owner's pid. It gives the subnet
//! `10.250.X.0/24` (the root namespace holds `.1`, host `i` holds `.(i+2)`), the bridge
//! `svtbrX` and, for host `i`, the network namespace and root-side veth `svtXhI`. Names
//! are unique across processes (nextest runs each test in its own process) and threads
//! (cargo test runs tests of one binary in parallel) because slots are allocated under a
//! file lock.

use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Runtime state (tmpfs): the allocation lock, slot files, mount-namespace handles.
pub(crate) const RUN_DIR: &str = "/run/servos-testkit";
/// Per-host state on disk (docker images do not fit in tmpfs nicely).
pub(crate) const DISK_DIR: &str = "/var/tmp/servos-testkit";
/// Prefix of every namespace and interface the kit creates.
pub(crate) const PREFIX: &str = "svt";

pub(crate) fn lock_file() -> PathBuf {
    PathBuf::from(RUN_DIR).join("lock")
}

pub(crate) fn slots_dir() -> PathBuf {
    PathBuf::from(RUN_DIR).join("slots")
}

pub(crate) fn slot_file(slot: u8) -> PathBuf {
    slots_dir().join(slot.to_string())
}

/// Directory whose files are bind mounts of each host's mount namespace.
pub(crate) fn mnt_dir() -> PathBuf {
    PathBuf::from(RUN_DIR).join("mnt")
}

pub(crate) fn bridge(slot: u8) -> String {
    format!("{PREFIX}br{slot}")
}

/// The host's network namespace name, which is also the name of its root-side veth.
pub(crate) fn host(slot: u8, index: usize) -> String {
    format!("{PREFIX}{slot}h{index}")
}

pub(crate) fn gateway(slot: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 250, slot, 1)
}

pub(crate) fn host_addr(slot: u8, index: usize) -> Ipv4Addr {
    // At most MAX_HOSTS hosts, so this stays below 255.
    Ipv4Addr::new(10, 250, slot, (index + 2) as u8)
}

/// Locally administered MAC of a host's `eth0`, fixed so the root namespace can hold a
/// permanent neighbour entry (a cut-off host then times out instead of failing ARP).
pub(crate) fn host_mac(slot: u8, index: usize) -> String {
    format!("02:5e:00:{slot:02x}:{:02x}:01", index as u8)
}

pub(crate) const MAX_HOSTS: usize = 250;

pub(crate) fn netns_path(name: &str) -> String {
    format!("/run/netns/{name}")
}

pub(crate) fn mnt_file(name: &str) -> PathBuf {
    mnt_dir().join(name)
}

pub(crate) fn slot_disk_dir(slot: u8) -> PathBuf {
    PathBuf::from(DISK_DIR).join(slot.to_string())
}

pub(crate) fn host_dir(slot: u8, index: usize) -> PathBuf {
    slot_disk_dir(slot).join(format!("h{index}"))
}

/// Docker's `--cgroup-parent` for a host, so its containers can be found and killed.
pub(crate) fn cgroup_parent(name: &str) -> String {
    format!("/{name}")
}

/// Parses `svtXhI` into `(X, I)`.
pub(crate) fn parse_host(name: &str) -> Option<(u8, usize)> {
    let rest = name.strip_prefix(PREFIX)?;
    let (slot, index) = rest.split_once('h')?;
    Some((slot.parse().ok()?, index.parse().ok()?))
}

/// Parses `svtbrX` into `X`.
pub(crate) fn parse_bridge(name: &str) -> Option<u8> {
    name.strip_prefix(PREFIX)?.strip_prefix("br")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_fit_in_an_interface_name() {
        assert_eq!(host(254, 249), "svt254h249");
        assert!(host(254, 249).len() <= 15);
        assert_eq!(parse_host("svt7h3"), Some((7, 3)));
        assert_eq!(parse_host("svtbr7"), None);
        assert_eq!(parse_bridge("svtbr7"), Some(7));
        assert_eq!(host_addr(7, 0), Ipv4Addr::new(10, 250, 7, 2));
        assert_eq!(host_mac(10, 1), "02:5e:00:0a:01:01");
    }
}
