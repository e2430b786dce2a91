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
    table.print();
    summary(format!(
        "agent mesh throughput {mesh_tput:.0} MiB/s = {:.2}× the plain link ({plain_tput:.0} MiB/s); ping {mesh_ping:.3} ms vs {plain_ping:.3} ms",
        mesh_tput / plain_tput
    ));

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
    summary(format!(
        "agent idle RSS with 10 peers {rss:.1} MiB ({})",
        Goal::AtMost(15.0).verdict(rss, " MiB")
    ));
    Ok(())
}

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
