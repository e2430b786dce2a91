//! `agent`: the WireGuard mesh against the plain link between the same two test hosts in
//! one run (TCP throughput with busybox nc, ping latency), and the agent's resident memory
//! at idle with 10 peers. The `servos` binary must be built with `--features ebpf`.

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use servos_testkit::{TestHost, TestNet};

use crate::report::{Goal, Table, heading, summary};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The `servos` binary (built with --features ebpf).
    #[arg(long, default_value_os_t = crate::default_servos_bin())]
    servos_bin: PathBuf,
    /// MiB sent per throughput run.
    #[arg(long, default_value_t = 256)]
    mib: u64,
    /// Throughput runs per path (the best is kept).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// `boringtun-cli` (0.7) for the baseline tunnel between the same hosts; `scripts/bench.sh`
    /// installs it under target/boringtun. Configured with `wg` (wireguard-tools).
    #[arg(long, default_value = "target/boringtun/bin/boringtun-cli")]
    boringtun_bin: PathBuf,
}

const STATE: &str = "/var/lib/servos/agent";

pub fn run(args: &Args) -> anyhow::Result<()> {
    heading("agent: userspace WireGuard mesh (gotatun + eBPF policy) vs the plain link");
    ensure_user()?;
    let net = TestNet::new(3).context("test hosts")?;
    let mut pids = Vec::new();
    let result = measure(args, &net, &mut pids);
    for pid in pids {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
    std::thread::sleep(Duration::from_millis(300));
    result
}

fn measure(args: &Args, net: &TestNet, pids: &mut Vec<u32>) -> anyhow::Result<()> {
    let bin = args.servos_bin.display().to_string();
    for (i, host) in net.hosts().iter().take(2).enumerate() {
        pids.push(spawn(
            host,
            &bin,
            &format!(
                "--address 10.77.0.{}/16 --mesh-config {STATE}/mesh.json",
                i + 1
            ),
        )?);
    }
    let keys: Vec<String> = net
        .hosts()
        .iter()
        .take(2)
        .map(public_key)
        .collect::<anyhow::Result<_>>()?;
    let policy = serde_json::json!([
        { "src": "10.77.0.1", "dst": "10.77.0.2", "port": 5201, "proto": "tcp" },
        { "src": "10.77.0.1", "dst": "10.77.0.2", "proto": "icmp" },
    ]);
    for i in 0..2 {
        let j = 1 - i;
        let config = serde_json::json!({
            "peers": [{ "public_key": keys[j], "endpoint": format!("{}:51820", net.host(j).addr()), "mesh_address": format!("10.77.0.{}", j + 1) }],
            "policy": policy,
        });
        sh(
            net.host(i),
            &format!(
                "printf '%s' '{config}' > {STATE}/mesh.tmp && mv {STATE}/mesh.tmp {STATE}/mesh.json"
            ),
        )?;
    }
    // First packets start the handshake.
    let deadline = Instant::now() + Duration::from_secs(20);
    while sh(net.host(0), "busybox ping -c1 -W1 10.77.0.2").is_err() {
        if Instant::now() > deadline {
            bail!("the mesh did not come up between the two hosts");
        }
    }
    let plain = net.host(1).addr().to_string();
    let mut table = Table::new(["path", "throughput MiB/s", "ping avg ms"]);
    let plain_tput = throughput(net, &plain, args)?;
    let mesh_tput = throughput(net, "10.77.0.2", args)?;
    let plain_ping = ping(net.host(0), &plain)?;
    let mesh_ping = ping(net.host(0), "10.77.0.2")?;
    table.row([
        "plain link (veth + bridge)".to_owned(),
        format!("{plain_tput:.0}"),
        format!("{plain_ping:.3}"),
    ]);
    table.row([
        "mesh (WireGuard + eBPF)".to_owned(),
        format!("{mesh_tput:.0}"),
        format!("{mesh_ping:.3}"),
    ]);
    // The same tunnel with the classifier detached from the receiver: what the eBPF
    // program costs.
    detach_classifier(net.host(1), pids[1])?;
    let bare_tput = throughput(net, "10.77.0.2", args)?;
    let bare_ping = ping(net.host(0), "10.77.0.2")?;
    table.row([
        "mesh, classifier detached".to_owned(),
        format!("{bare_tput:.0}"),
        format!("{bare_ping:.3}"),
    ]);
    // boringtun-cli between the same two hosts, same keys and MTU, on its own interface.
    let boring = if args.boringtun_bin.exists() {
        let (t, p) = boringtun(args, net, &keys, pids)?;
        table.row([
            "boringtun-cli 0.7 (userspace WireGuard)".to_owned(),
            format!("{t:.0}"),
            format!("{p:.3}"),
        ]);
        Some((t, p))
    } else {
        println!(
            "  {} not found (scripts/bench.sh agent installs it): no boringtun comparison",
            args.boringtun_bin.display()
        );
        None
    };
    table.print();
    summary(format!(
        "agent mesh throughput {mesh_tput:.0} MiB/s = {:.2}× the plain link ({plain_tput:.0} MiB/s); ping {mesh_ping:.3} ms vs {plain_ping:.3} ms",
        mesh_tput / plain_tput
    ));
    summary(format!(
        "agent mesh with the classifier detached: {bare_tput:.0} MiB/s, ping {bare_ping:.3} ms (eBPF cost {:.1}% throughput)",
        (1.0 - mesh_tput / bare_tput) * 100.0
    ));
    match boring {
        Some((bt, bp)) => {
            summary(format!(
                "agent mesh vs boringtun-cli: throughput {mesh_tput:.0} vs {bt:.0} MiB/s = {:.2}× ({})",
                mesh_tput / bt,
                Goal::AtLeast(1.0).verdict(mesh_tput / bt, "×")
            ));
            summary(format!(
                "agent mesh vs boringtun-cli: ping {mesh_ping:.3} vs {bp:.3} ms = {:.2}× the latency",
                mesh_ping / bp
            ));
        }
        None => summary("agent mesh vs boringtun-cli: not measured (boringtun-cli missing)"),
    }

    // Idle memory with 10 peers: a third agent, peers that never answer.
    let host = net.host(2);
    let pid = spawn(
        host,
        &bin,
        &format!("--address 10.77.0.3/16 --mesh-config {STATE}/mesh.json"),
    )?;
    pids.push(pid);
    public_key(host)?;
    let peers: Vec<_> = (0..10u8)
        .map(|n| {
            let mut key = [0u8; 32];
            key[0] = n + 1;
            key[31] = 0x40;
            serde_json::json!({
                "public_key": base64_std(&key),
                "endpoint": format!("10.250.254.{}:51820", n + 1),
                "mesh_address": format!("10.77.1.{}", n + 1),
            })
        })
        .collect();
    let config = serde_json::json!({ "peers": peers, "policy": [] });
    sh(
        host,
        &format!(
            "printf '%s' '{config}' > {STATE}/mesh.tmp && mv {STATE}/mesh.tmp {STATE}/mesh.json"
        ),
    )?;
    std::thread::sleep(Duration::from_secs(5));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")?;
    let rss = rss_kib / 1024.0;
    println!("  agent VmRSS at idle with 10 peers: {rss:.1} MiB");
    print_breakdown(pid)?;
    summary(format!(
        "agent idle RSS with 10 peers {rss:.1} MiB ({})",
        Goal::AtMost(15.0).verdict(rss, " MiB")
    ));
    Ok(())
}

/// Where the agent's resident memory is, from /proc/<pid>/smaps: per kind of mapping.
fn print_breakdown(pid: u32) -> anyhow::Result<()> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    let mut groups: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    let mut current = String::new();
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            // "start-end perms offset dev inode [path]"
            let path = line.split_whitespace().nth(5).unwrap_or("");
            current = match path {
                "" => "anonymous (heap arenas, thread stacks, mmap'd buffers)".to_owned(),
                p if p.starts_with('[') => p.to_owned(),
                p if p.ends_with("/servos") => "servos binary (text + data)".to_owned(),
                p => format!("file {}", p.rsplit('/').next().unwrap_or(p)),
            };
        } else if first == "Rss:" {
            let kib: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            let entry = groups.entry(current.clone()).or_default();
            entry.0 += kib;
            entry.1 += 1;
        }
    }
    let mut rows: Vec<_> = groups
        .into_iter()
        .filter(|(_, (kib, _))| *kib > 0)
        .collect();
    rows.sort_by_key(|(_, (kib, _))| std::cmp::Reverse(*kib));
    let mut table = Table::new(["mapping", "RSS KiB", "mappings"]);
    for (name, (kib, count)) in rows {
        table.row([name, kib.to_string(), count.to_string()]);
    }
    table.print();
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let field = |name: &str| {
        rollup
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap_or("?")
        .trim()
        .to_owned();
    println!(
        "  smaps_rollup: Rss {} = Anonymous {} + file-backed; Private_Dirty {}; threads {threads}",
        field("Rss:"),
        field("Anonymous:"),
        field("Private_Dirty:"),
    );
    Ok(())
}

/// Detaches the agent's classifier from the mesh interface (the agent keeps running). On
/// kernels ≥ 6.6 aya attaches through a TCX link the agent holds: found in the agent's
/// /proc/<pid>/fdinfo and detached with `bpftool link detach`; older kernels use a tc filter.
fn detach_classifier(host: &TestHost, agent_pid: u32) -> anyhow::Result<()> {
    let mut links = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{agent_pid}/fdinfo"))? {
        let text = std::fs::read_to_string(entry?.path()).unwrap_or_default();
        if text
            .lines()
            .any(|l| l.starts_with("link_type:") && l.contains("tcx"))
        {
            links.extend(text.lines().find_map(|l| {
                l.strip_prefix("link_id:")
                    .and_then(|v| v.trim().parse::<u32>().ok())
            }));
        }
    }
    if links.is_empty() {
        sh(host, "tc filter del dev servos0 ingress")?;
        return Ok(());
    }
    for id in links {
        let status = Command::new("bpftool")
            .args(["link", "detach", "id", &id.to_string()])
            .status()
            .context("bpftool (apt package bpftool) detaches the classifier's TCX link")?;
        if !status.success() {
            bail!("bpftool link detach id {id} failed");
        }
    }
    Ok(())
}

/// boringtun-cli on hosts 0 and 1 (interfaces wgb0/wgb1, 10.78.0.x, UDP 51821) with the
/// agents' own key pairs and the mesh MTU; returns (throughput MiB/s, ping ms) from host 0
/// to host 1.
fn boringtun(
    args: &Args,
    net: &TestNet,
    keys: &[String],
    pids: &mut Vec<u32>,
) -> anyhow::Result<(f64, f64)> {
    let bin = std::fs::canonicalize(&args.boringtun_bin)?;
    for i in 0..2 {
        let j = 1 - i;
        let host = net.host(i);
        // Foreground, so the pid is its own; it stays root (the UAPI socket and `wg` need
        // no drop for a benchmark) and uses its default 4 threads.
        let out = sh(
            host,
            &format!(
                "WG_SUDO=1 {} --foreground --disable-drop-privileges wgb{i} >/tmp/boringtun.log 2>&1 & echo $!",
                bin.display()
            ),
        )?;
        pids.push(out.trim().parse()?);
        let deadline = Instant::now() + Duration::from_secs(10);
        while sh(host, &format!("test -S /var/run/wireguard/wgb{i}.sock")).is_err() {
            if Instant::now() > deadline {
                let log = sh(host, "cat /tmp/boringtun.log").unwrap_or_default();
                bail!("boringtun-cli did not start on {}: {log}", host.name());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        sh(
            host,
            &format!(
                "wg set wgb{i} private-key {STATE}/private.key listen-port 51821 \
                 peer {} endpoint {}:51821 allowed-ips 10.78.0.{}/32 persistent-keepalive 10 && \
                 ip addr add 10.78.0.{}/24 dev wgb{i} && ip link set wgb{i} mtu {MESH_MTU} up",
                keys[j],
                net.host(j).addr(),
                j + 1,
                i + 1,
            ),
        )?;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while sh(net.host(0), "busybox ping -c1 -W1 10.78.0.2").is_err() {
        if Instant::now() > deadline {
            bail!("boringtun-cli: no traffic between the two hosts");
        }
    }
    let t = throughput(net, "10.78.0.2", args)?;
    let p = ping(net.host(0), "10.78.0.2")?;
    Ok((t, p))
}

/// The agent's mesh MTU (servos_agent::tunnel::MESH_MTU).
const MESH_MTU: u16 = 1420;

fn throughput(net: &TestNet, target: &str, args: &Args) -> anyhow::Result<f64> {
    let mut best = 0.0f64;
    let bytes = args.mib * 1024 * 1024;
    for _ in 0..args.runs {
        // The receiver counts what arrived; the clock stops when it has all of it.
        sh(
            net.host(1),
            "rm -f /tmp/received; printf '#!/bin/sh\\nwc -c > /tmp/received.tmp; mv /tmp/received.tmp /tmp/received\\n' > /tmp/count.sh; \
             chmod 755 /tmp/count.sh; busybox nc -l -p 5201 -e /tmp/count.sh >/dev/null 2>&1 &",
        )?;
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        sh(
            net.host(0),
            &format!(
                "bash -c 'dd if=/dev/zero bs=64k count={} 2>/dev/null > /dev/tcp/{target}/5201'",
                args.mib * 16
            ),
        )?;
        let deadline = Instant::now() + Duration::from_secs(120);
        let received: u64 = loop {
            if let Ok(text) = sh(net.host(1), "cat /tmp/received 2>/dev/null") {
                break text.trim().parse()?;
            }
            if Instant::now() > deadline {
                bail!("the receiver never finished");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let secs = started.elapsed().as_secs_f64();
        if received != bytes {
            bail!("sent {bytes} bytes to {target}, {received} arrived");
        }
        best = best.max(args.mib as f64 / secs);
    }
    Ok(best)
}

fn ping(host: &TestHost, target: &str) -> anyhow::Result<f64> {
    let out = sh(host, &format!("busybox ping -c 20 -i 0.05 {target}"))?;
    // "round-trip min/avg/max = 0.041/0.060/0.113 ms"
    out.lines()
        .find_map(|l| l.split(" = ").nth(1))
        .and_then(|v| v.split('/').nth(1))
        .and_then(|v| v.parse().ok())
        .context("ping summary")
}

fn spawn(host: &TestHost, bin: &str, args: &str) -> anyhow::Result<u32> {
    let out = sh(
        host,
        &format!("{bin} agent {args} >>/tmp/servos-agent.log 2>&1 & echo $!"),
    )?;
    Ok(out.trim().parse()?)
}

fn public_key(host: &TestHost) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(key) = sh(host, &format!("cat {STATE}/public.key")) {
            return Ok(key.trim().to_owned());
        }
        if Instant::now() > deadline {
            let log = sh(host, "cat /tmp/servos-agent.log").unwrap_or_default();
            bail!("agent on {} did not start: {log}", host.name());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn sh(host: &TestHost, script: &str) -> anyhow::Result<String> {
    let out = host.exec(script)?;
    if !out.status.success() {
        bail!(
            "`{script}` on {}: {}",
            host.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ensure_user() -> anyhow::Result<()> {
    let status = Command::new("sh")
        .args(["-c", "getent passwd servos >/dev/null || useradd --system --user-group --no-create-home --shell /usr/sbin/nologin servos"])
        .status()?;
    if !status.success() {
        bail!("cannot create user servos");
    }
    Ok(())
}

fn base64_std(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
