//! Helpers for the agent tests: the `servos` user, agents started inside test hosts (and
//! killed when the test ends, even on panic), status files, TCP probes across the mesh.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{
    process::Command,
    time::{Duration, Instant},
};

use servos_testkit::{TestHost, TestNet};

pub const STATE_DIR: &str = "/var/lib/servos/agent";
pub const PORT: u16 = 51820;

pub fn servos_bin() -> &'static str {
    env!("CARGO_BIN_EXE_servos")
}

/// Creates the `servos` system user and group as installation does; idempotent and safe
/// when several tests race (test hosts share /etc/passwd with this machine).
pub fn ensure_servos_user() {
    let out = Command::new("flock")
        .args([
            "/var/tmp/servos-useradd.lock",
            "sh",
            "-c",
            "getent passwd servos >/dev/null || useradd --system --user-group --no-create-home \
             --home-dir /var/lib/servos/agent --shell /usr/sbin/nologin servos",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "useradd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn servos_ids() -> (u32, u32) {
    let out = Command::new("id").args(["-u", "servos"]).output().unwrap();
    let uid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let out = Command::new("id").args(["-g", "servos"]).output().unwrap();
    let gid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (uid, gid)
}

/// Mesh address of host `i`.
pub fn mesh_ip(i: usize) -> String {
    format!("10.77.0.{}", i + 1)
}

/// TCP from host `from` to host `to` on `port`, allowed.
pub fn rule(from: usize, to: usize, port: u16) -> serde_json::Value {
    serde_json::json!({ "src": mesh_ip(from), "dst": mesh_ip(to), "port": port, "proto": "tcp" })
}

/// Agents running inside the hosts of a net; killed on drop.
pub struct Agents {
    pids: Vec<(String, u32)>,
}

impl Agents {
    /// Starts `servos agent` in every host with a local mesh configuration file.
    pub fn start_static(net: &TestNet) -> Self {
        let mut agents = Self { pids: Vec::new() };
        for (i, host) in net.hosts().iter().enumerate() {
            let args = format!(
                "--address {}/16 --mesh-config {STATE_DIR}/mesh.json --listen-port {PORT}",
                mesh_ip(i)
            );
            agents
                .pids
                .push((host.name().to_owned(), spawn_agent(host, &args)));
        }
        agents
    }

    pub fn start_args(net: &TestNet, args: impl Fn(usize) -> String) -> Self {
        let mut agents = Self { pids: Vec::new() };
        for (i, host) in net.hosts().iter().enumerate() {
            agents
                .pids
                .push((host.name().to_owned(), spawn_agent(host, &args(i))));
        }
        agents
    }

    pub fn pid(&self, i: usize) -> u32 {
        self.pids[i].1
    }

    /// Waits for each agent's status file and returns its public key.
    pub fn public_keys(&self, net: &TestNet) -> Vec<String> {
        (0..self.pids.len())
            .map(|i| {
                let mut key = String::new();
                wait_for(&format!("agent {i} status"), || {
                    let out = net
                        .host(i)
                        .exec(&format!("cat {STATE_DIR}/status.json"))
                        .unwrap();
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
                        key = v["public_key"].as_str().unwrap().to_owned();
                        return true;
                    }
                    assert!(alive(self.pid(i)), "agent {i} died: {}", log(net.host(i)));
                    false
                });
                key
            })
            .collect()
    }

    /// Writes every host's mesh.json: all other hosts as peers, `policy` for all.
    pub fn write_static_configs(
        &self,
        net: &TestNet,
        keys: &[String],
        policy: &[serde_json::Value],
    ) {
        for (i, host) in net.hosts().iter().enumerate() {
            let peers: Vec<_> = net
                .hosts()
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(j, h)| {
                    serde_json::json!({
                        "public_key": keys[j],
                        "endpoint": format!("{}:{PORT}", h.addr()),
                        "mesh_address": mesh_ip(j),
                    })
                })
                .collect();
            let config = serde_json::json!({ "peers": peers, "policy": policy });
            let json = config.to_string().replace('\'', "");
            let out = host
                .exec(&format!(
                    "printf '%s' '{json}' > {STATE_DIR}/mesh.json.tmp && mv {STATE_DIR}/mesh.json.tmp {STATE_DIR}/mesh.json"
                ))
                .unwrap();
            assert!(
                out.status.success(),
                "write mesh.json: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        for (_, pid) in &self.pids {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        for (_, pid) in &self.pids {
            let deadline = Instant::now() + Duration::from_secs(5);
            while alive(*pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

pub fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .contains("State:\tZ")
}

/// Starts the agent in the background inside `host`; returns its pid.
pub fn spawn_agent(host: &TestHost, args: &str) -> u32 {
    let script = format!(
        "SERVOS_LOG=info {bin} agent {args} >>/tmp/servos-agent.log 2>&1 & echo $!",
        bin = servos_bin()
    );
    let out = host.exec(&script).unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

pub fn log(host: &TestHost) -> String {
    let out = host.exec("tail -n 30 /tmp/servos-agent.log").unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn status(net: &TestNet, i: usize) -> serde_json::Value {
    let out = net
        .host(i)
        .exec(&format!("cat {STATE_DIR}/status.json"))
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// Host `a` has completed a handshake with the peer at host `b`'s mesh address.
pub fn handshake_done(net: &TestNet, a: usize, b: usize) -> bool {
    let s = status(net, a);
    s["peers"].as_array().is_some_and(|peers| {
        peers.iter().any(|p| {
            p["mesh_address"] == mesh_ip(b).as_str() && p["last_handshake_secs"].is_number()
        })
    })
}

/// Sends a packet from `a` to `b` over the mesh (starting the WireGuard handshake) until
/// `a` reports a completed handshake with `b`.
pub fn wait_for_handshake(net: &TestNet, a: usize, b: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        net.host(a)
            .exec(&format!(
                "busybox ping -c1 -W1 {} >/dev/null 2>&1",
                mesh_ip(b)
            ))
            .unwrap();
        if handshake_done(net, a, b) {
            return;
        }
    }
    panic!(
        "no handshake {a}→{b}: status {}\nlog {}\nlog of {b}: {}",
        status(net, a),
        log(net.host(a)),
        log(net.host(b))
    );
}

/// Connects from host `from` to `to`'s mesh address; the reply line, or None on timeout.
pub fn tcp(net: &TestNet, from: usize, to: usize, port: u16) -> Option<String> {
    let out = net
        .host(from)
        .exec(&format!(
            "timeout 4 busybox nc -w 3 {} {port} </dev/null",
            mesh_ip(to)
        ))
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

pub fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}");
}
