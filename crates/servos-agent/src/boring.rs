//! boringtun 0.7's own data path on the mesh's TUN device (`--userspace-engine boringtun`,
//! the default): one epoll thread that reads a packet, encrypts or decrypts it and writes
//! it out in the same wake-up, as `boringtun-cli` runs it.
//!
//! Why: with gotatun every packet crosses three tokio tasks and two channels per direction;
//! `scripts/bench.sh agent` measured that path at 1.6–1.8× boringtun-cli's ping on the same
//! hosts, with the same number of syscalls per packet but about 3× its user-space CPU per
//! packet (tokio scheduling, channel hand-offs, per-receive allocations).
//!
//! Security: the TUN device is still created as root before the drop
//! ([`crate::tunnel::create_device`]); only its open descriptor is handed to boringtun
//! (boringtun takes a numeric "name" as a descriptor it owns). The device and its thread
//! are created after the drop, so the thread inherits the reduced capability sets,
//! no_new_privs and the Landlock domain. boringtun is configured through its UAPI over a
//! private socketpair: no socket file, nothing another process can reach.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    net::Ipv4Addr,
    os::{fd::IntoRawFd, unix::net::UnixStream},
    sync::Mutex,
    time::Duration,
};

use boringtun::device::{DeviceConfig, DeviceHandle};
use zeroize::Zeroizing;

use crate::{config::PeerConfig, error::AgentError, tunnel::PeerStatus};

/// How long a UAPI request may take before the agent reports the device as stuck.
const UAPI_TIMEOUT: Duration = Duration::from_secs(5);

/// boringtun on the TUN device, configured over its UAPI.
pub struct BoringMesh {
    /// Dropping the handle stops the device's thread.
    _device: DeviceHandle,
    /// The agent's end of the UAPI socketpair; one request at a time.
    uapi: Mutex<UnixStream>,
    /// What was applied per peer (hex public key): boringtun cannot modify a peer in
    /// place (it panics), so a changed peer is removed and added again.
    applied: Mutex<BTreeMap<String, PeerConfig>>,
}

impl std::fmt::Debug for BoringMesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoringMesh").finish_non_exhaustive()
    }
}

impl BoringMesh {
    /// Starts boringtun on `tun` (created as root before the drop) with `key`, listening on
    /// UDP `port`. `threads` is boringtun's number of event-loop threads.
    pub fn start(
        tun: tun::Device,
        key: &[u8; 32],
        port: u16,
        threads: usize,
    ) -> Result<Self, AgentError> {
        let (ours, theirs) =
            UnixStream::pair().map_err(|e| AgentError::Device(format!("UAPI socketpair: {e}")))?;
        ours.set_read_timeout(Some(UAPI_TIMEOUT))
            .and_then(|()| ours.set_write_timeout(Some(UAPI_TIMEOUT)))
            .map_err(|e| AgentError::Device(format!("UAPI socket timeout: {e}")))?;
        // boringtun takes a numeric interface name as a descriptor to use (and close).
        let fd = tun.into_raw_fd();
        let config = DeviceConfig {
            n_threads: threads.max(1),
            use_connected_socket: true,
            use_multi_queue: false,
            uapi_fd: theirs.into_raw_fd(),
        };
        let device = DeviceHandle::new(&fd.to_string(), config)
            .map_err(|e| AgentError::Device(format!("start boringtun on the TUN device: {e:?}")))?;
        let mesh = Self {
            _device: device,
            uapi: Mutex::new(ours),
            applied: Mutex::new(BTreeMap::new()),
        };
        // The key goes first: boringtun refuses peers before it has one.
        let request = Zeroizing::new(format!(
            "set=1\nprivate_key={}\nlisten_port={port}\n\n",
            Zeroizing::new(hex(key)).as_str()
        ));
        match mesh.request(&request)? {
            (0, _) => Ok(mesh),
            (errno, _) => Err(AgentError::Device(format!(
                "listen on UDP port {port}: {}",
                crate::netlink::describe(nix::errno::Errno::from_raw(errno))
            ))),
        }
    }

    /// Makes the device's peers exactly `peers` (allowed IP = the peer's mesh address /32,
    /// keepalive [`crate::tunnel::KEEPALIVE_SECS`]); unchanged peers keep their session.
    pub fn set_peers(&self, peers: &[PeerConfig]) -> Result<(), AgentError> {
        let mut wanted = BTreeMap::new();
        for p in peers {
            wanted.insert(hex(&crate::config::decode_key(&p.public_key)?), p);
        }
        let mut applied = self
            .applied
            .lock()
            .map_err(|_| AgentError::Device("the peer table lock is poisoned".into()))?;
        let stale: Vec<String> = applied
            .iter()
            .filter(|(key, old)| wanted.get(*key).is_none_or(|new| *new != *old))
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            self.expect_ok(
                &format!("set=1\npublic_key={key}\nremove=true\n\n"),
                "remove a peer",
            )?;
            applied.remove(&key);
        }
        for (key, p) in wanted {
            if applied.contains_key(&key) {
                continue;
            }
            let mut request = format!(
                "set=1\npublic_key={key}\npersistent_keepalive_interval={}\nallowed_ip={}/32\n",
                crate::tunnel::KEEPALIVE_SECS,
                p.mesh_address
            );
            if let Some(endpoint) = p.endpoint {
                request.push_str(&format!("endpoint={endpoint}\n"));
            }
            request.push('\n');
            self.expect_ok(&request, &format!("add peer {}", p.mesh_address))?;
            applied.insert(key, p.clone());
        }
        Ok(())
    }

    /// Every peer's endpoint, handshake age and byte counters (UAPI `get`).
    pub fn status(&self) -> Result<Vec<PeerStatus>, AgentError> {
        let (errno, lines) = self.request("get=1\n\n")?;
        if errno != 0 {
            return Err(AgentError::Device(format!("read the peers: errno {errno}")));
        }
        Ok(parse_get(&lines))
    }

    fn expect_ok(&self, request: &str, what: &str) -> Result<(), AgentError> {
        match self.request(request)? {
            (0, _) => Ok(()),
            (errno, _) => Err(AgentError::Device(format!(
                "{what}: {}",
                crate::netlink::describe(nix::errno::Errno::from_raw(errno))
            ))),
        }
    }

    /// One UAPI exchange: the request, then the answer's lines up to `errno=N`.
    fn request(&self, request: &str) -> Result<(i32, Vec<String>), AgentError> {
        let uapi = self
            .uapi
            .lock()
            .map_err(|_| AgentError::Device("the UAPI lock is poisoned".into()))?;
        let broken = |e: std::io::Error| AgentError::Device(format!("boringtun UAPI: {e}"));
        (&*uapi).write_all(request.as_bytes()).map_err(broken)?;
        let mut reader = BufReader::new(&*uapi);
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).map_err(broken)? == 0 {
                return Err(AgentError::Device(
                    "boringtun UAPI: the device closed its end".into(),
                ));
            }
            let line = line.trim_end_matches('\n');
            if let Some(errno) = line.strip_prefix("errno=") {
                // The blank line that ends the answer.
                let mut end = String::new();
                reader.read_line(&mut end).map_err(broken)?;
                let errno = errno.parse().map_err(|_| {
                    AgentError::Device(format!(
                        "boringtun UAPI: bad errno line {}",
                        servos_core::validate::show(line)
                    ))
                })?;
                return Ok((errno, lines));
            }
            lines.push(line.to_owned());
        }
    }
}

/// Peers from the lines of a UAPI `get` answer (boringtun reports the handshake's age,
/// not its time).
fn parse_get(lines: &[String]) -> Vec<PeerStatus> {
    use base64::{Engine, engine::general_purpose::STANDARD};
    let mut peers: Vec<PeerStatus> = Vec::new();
    for line in lines {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key == "public_key" {
            let Some(bytes) = unhex(value) else { continue };
            peers.push(PeerStatus {
                public_key: STANDARD.encode(bytes),
                endpoint: None,
                mesh_address: None,
                last_handshake_secs: None,
                rx_bytes: 0,
                tx_bytes: 0,
            });
            continue;
        }
        let Some(peer) = peers.last_mut() else {
            continue;
        };
        match key {
            "endpoint" => peer.endpoint = Some(value.to_owned()),
            "allowed_ip" if peer.mesh_address.is_none() => {
                peer.mesh_address = value
                    .split_once('/')
                    .and_then(|(ip, _)| ip.parse::<Ipv4Addr>().ok());
            }
            "last_handshake_time_sec" => peer.last_handshake_secs = value.parse().ok(),
            "rx_bytes" => peer.rx_bytes = value.parse().unwrap_or(0),
            "tx_bytes" => peer.tx_bytes = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    peers
}

fn hex(bytes: &[u8]) -> String {
    ::hex::encode(bytes)
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    ::hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_answer_parses_into_peers() {
        let lines: Vec<String> = [
            "own_public_key=00",
            "listen_port=51820",
            &format!("public_key={}", "01".repeat(32)),
            "persistent_keepalive_interval=10",
            "endpoint=10.0.0.2:51820",
            "allowed_ip=10.77.0.2/32",
            "last_handshake_time_sec=3",
            "last_handshake_time_nsec=5",
            "rx_bytes=100",
            "tx_bytes=200",
            &format!("public_key={}", "02".repeat(32)),
            "allowed_ip=10.77.0.3/32",
            "rx_bytes=0",
            "tx_bytes=0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let peers = parse_get(&lines);
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[0].endpoint.as_deref(), Some("10.0.0.2:51820"));
        assert_eq!(peers[0].mesh_address, Some(Ipv4Addr::new(10, 77, 0, 2)));
        assert_eq!(peers[0].last_handshake_secs, Some(3));
        assert_eq!((peers[0].rx_bytes, peers[0].tx_bytes), (100, 200));
        assert_eq!(peers[0].public_key, base64_of(&[1u8; 32]));
        assert_eq!(peers[1].endpoint, None);
        assert_eq!(peers[1].last_handshake_secs, None);
        assert_eq!(peers[1].mesh_address, Some(Ipv4Addr::new(10, 77, 0, 3)));
    }

    #[test]
    fn hex_round_trips() {
        let key = [0xabu8; 32];
        assert_eq!(hex(&key).len(), 64);
        assert_eq!(unhex(&hex(&key)), Some(key));
        assert_eq!(unhex("zz"), None);
    }

    fn base64_of(bytes: &[u8]) -> String {
        use base64::{Engine, engine::general_purpose::STANDARD};
        STANDARD.encode(bytes)
    }
}
