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

use crate::{
    report::{Goal, Table, heading, load_average, summary},
    stats::median,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The `servos` binary (built with --features ebpf).
    #[arg(long, default_value_os_t = crate::default_servos_bin())]
    servos_bin: PathBuf,
    /// MiB sent per throughput run.
    #[arg(long, default_value_t = 256)]
    mib: u64,
    /// Interleaved rounds per path (plain, mesh, boringtun-cli each once per round; medians
    /// reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// `boringtun-cli` (0.7) for the baseline tunnel between the same hosts; `scripts/bench.sh`
    /// installs it under target/boringtun. Configured with `wg` (wireguard-tools).
    #[arg(long, default_value = "target/boringtun/bin/boringtun-cli")]
    boringtun_bin: PathBuf,
    /// Extra options for the two mesh agents (A/B of the agent's hidden tuning flags, e.g.
    /// "--worker-threads 0").
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    agent_args: String,
    /// Diagnostics: once both tunnels are up, print the hosts' network namespaces and the
    /// tunnels' pids and wait this many seconds before the rounds (to attach strace/perf
    /// and ping by hand).
    #[arg(long, hide = true, default_value_t = 0)]
    hold_secs: u64,
}

const STATE: &str = "/var/lib/servos/agent";

pub fn run(args: &Args) -> anyhow::Result<()> {
    heading("agent: userspace WireGuard mesh (+ eBPF policy) vs the plain link");
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
                "--address 10.77.0.{}/16 --mesh-config {STATE}/mesh.json {}",
                i + 1,
                args.agent_args
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
    let agents = vec![pids[0], pids[1]];
    // boringtun-cli between the same two hosts, same keys and MTU, on its own interface,
    // up at the same time as the mesh so that rounds can alternate between the two.
    let boring = if args.boringtun_bin.exists() {
        Some(boringtun(args, net, &keys, pids)?)
    } else {
        println!(
            "  {} not found (scripts/bench.sh agent installs it): no boringtun comparison",
            args.boringtun_bin.display()
        );
        None
    };
    if args.hold_secs > 0 {
        println!(
            "  holding {} s: hosts {} / {}, mesh pids {:?} (10.77.0.2), boringtun-cli pids {:?} (10.78.0.2)",
            args.hold_secs,
            net.host(0).name(),
            net.host(1).name(),
            agents,
            boring
        );
        std::thread::sleep(Duration::from_secs(args.hold_secs));
    }
    let mut paths = vec![
        Path::new("plain link (veth + bridge)", &plain, Vec::new()),
        Path::new("mesh (WireGuard + eBPF)", "10.77.0.2", agents.clone()),
    ];
    if let Some(bt_pids) = &boring {
        paths.push(Path::new(
            "boringtun-cli 0.7 (userspace WireGuard)",
            "10.78.0.2",
            bt_pids.clone(),
        ));
    }
    // Interleaved rounds, the two tunnels in alternating order (ABBA), so that a burst of
    // load from the other users of the machine hits both alike.
    println!(
        "  {} rounds of {} MiB per path, interleaved; load average {}",
        args.runs,
        args.mib,
        load_average()
    );
    for round in 0..args.runs {
        let mut order: Vec<usize> = (0..paths.len()).collect();
        if round % 2 == 1 && order.len() == 3 {
            order.swap(1, 2);
        }
        for i in order {
            paths[i].measure_round(net, args)?;
        }
    }
    let mut rounds = Table::new(if boring.is_some() {
        vec![
            "round",
            "plain MiB/s",
            "mesh MiB/s",
            "boringtun MiB/s",
            "mesh/boringtun",
            "mesh CPU ms/MiB",
            "boringtun CPU ms/MiB",
            "ping plain/mesh/boringtun ms",
        ]
    } else {
        vec![
            "round",
            "plain MiB/s",
            "mesh MiB/s",
            "mesh CPU ms/MiB",
            "ping plain/mesh ms",
        ]
    });
    let ratios: Vec<f64> = match paths.get(2) {
        Some(bt) => per_round(&paths[1].tput, &bt.tput),
        None => Vec::new(),
    };
    for r in 0..args.runs {
        let pings: Vec<String> = paths.iter().map(|p| format!("{:.3}", p.ping[r])).collect();
        let mut cells = vec![
            (r + 1).to_string(),
            format!("{:.0}", paths[0].tput[r]),
            format!("{:.0}", paths[1].tput[r]),
        ];
        if let Some(bt) = paths.get(2) {
            cells.push(format!("{:.0}", bt.tput[r]));
            cells.push(format!("{:.2}×", paths[1].tput[r] / bt.tput[r]));
        }
        cells.push(format!("{:.2}", paths[1].cpu[r]));
        if let Some(bt) = paths.get(2) {
            cells.push(format!("{:.2}", bt.cpu[r]));
        }
        cells.push(pings.join(" / "));
        rounds.row(cells);
    }
    let mut cells = vec![
        "median".to_owned(),
        format!("{:.0}", median(&paths[0].tput)),
        format!("{:.0}", median(&paths[1].tput)),
    ];
    if let Some(bt) = paths.get(2) {
        cells.push(format!("{:.0}", median(&bt.tput)));
        cells.push(format!("{:.2}×", median(&ratios)));
    }
    cells.push(format!("{:.2}", median(&paths[1].cpu)));
    if let Some(bt) = paths.get(2) {
        cells.push(format!("{:.2}", median(&bt.cpu)));
    }
    cells.push(
        paths
            .iter()
            .map(|p| format!("{:.3}", median(&p.ping)))
            .collect::<Vec<_>>()
            .join(" / "),
    );
    rounds.row(cells);
    rounds.print();

    // The same tunnel with the classifier detached from the receiver: what the eBPF
    // program costs (it cannot be re-attached, so these rounds come last).
    detach_classifier(net.host(1), pids[1])?;
    let mut bare = Path::new("mesh, classifier detached", "10.77.0.2", agents);
    for _ in 0..args.runs.div_ceil(2) {
        bare.measure_round(net, args)?;
    }
    paths.push(bare);

    let mut table = Table::new([
        "path (medians)",
        "throughput MiB/s",
        "ping avg ms",
        "tunnel CPU ms/MiB",
    ]);
    for p in &paths {
        table.row([
            p.name.to_owned(),
            format!("{:.0}", median(&p.tput)),
            format!("{:.3}", median(&p.ping)),
            if p.pids.is_empty() {
                "-".to_owned()
            } else {
                format!("{:.2}", median(&p.cpu))
            },
        ]);
    }
    table.print();
    let (plain_tput, plain_ping) = (median(&paths[0].tput), median(&paths[0].ping));
    let (mesh_tput, mesh_ping) = (median(&paths[1].tput), median(&paths[1].ping));
    let bare = paths.last().map(|p| (median(&p.tput), median(&p.ping)));
    let (bare_tput, bare_ping) = bare.unwrap_or_default();
    summary(format!(
        "agent mesh throughput {mesh_tput:.0} MiB/s = {:.2}× the plain link ({plain_tput:.0} MiB/s); ping {mesh_ping:.3} ms vs {plain_ping:.3} ms (medians of {} rounds)",
        mesh_tput / plain_tput,
        args.runs
    ));
    summary(format!(
        "agent mesh with the classifier detached: {bare_tput:.0} MiB/s, ping {bare_ping:.3} ms (eBPF cost {:.1}% throughput)",
        (1.0 - mesh_tput / bare_tput) * 100.0
    ));
    match paths.get(2).filter(|_| boring.is_some()) {
        Some(bt) => {
            let ratio = median(&ratios);
            let (bt_tput, bt_ping) = (median(&bt.tput), median(&bt.ping));
            let ping_ratios = per_round(&paths[1].ping, &bt.ping);
            let p50_ratios = per_round(&paths[1].ping_p50, &bt.ping_p50);
            let cpu_ratios = per_round(&paths[1].cpu, &bt.cpu);
            summary(format!(
                "agent mesh vs boringtun-cli: throughput {mesh_tput:.0} vs {bt_tput:.0} MiB/s, median per-round ratio {ratio:.2}× ({})",
                Goal::AtLeast(1.0).verdict(ratio, "×")
            ));
            summary(format!(
                "agent mesh vs boringtun-cli: ping {mesh_ping:.3} vs {bt_ping:.3} ms = {:.2}× the latency (per-packet median RTT {:.3} vs {:.3} ms = {:.2}×); CPU {:.2} vs {:.2} ms/MiB = {:.2}× (median per-round ratios)",
                median(&ping_ratios),
                median(&paths[1].ping_p50),
                median(&bt.ping_p50),
                median(&p50_ratios),
                median(&paths[1].cpu),
                median(&bt.cpu),
                median(&cpu_ratios),
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

/// Round by round, `mesh / other` (the rounds are interleaved, so each pair shares its load).
fn per_round(mesh: &[f64], other: &[f64]) -> Vec<f64> {
    mesh.iter().zip(other).map(|(m, b)| m / b).collect()
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
) -> anyhow::Result<Vec<u32>> {
    let bin = std::fs::canonicalize(&args.boringtun_bin)?;
    let mut own = Vec::new();
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
        let pid: u32 = out.trim().parse()?;
        pids.push(pid);
        own.push(pid);
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
    Ok(own)
}

/// The agent's mesh MTU (servos_agent::tunnel::MESH_MTU).
const MESH_MTU: u16 = 1420;

/// One path measured in rounds: throughput, the CPU its tunnel processes used per MiB
/// (both ends, user + system), and ping.
struct Path {
    name: &'static str,
    target: String,
    /// The tunnel's processes on both hosts (none for the plain link).
    pids: Vec<u32>,
    tput: Vec<f64>,
    cpu: Vec<f64>,
    ping: Vec<f64>,
    /// Median RTT of each round's packets.
    ping_p50: Vec<f64>,
}

impl Path {
    fn new(name: &'static str, target: &str, pids: Vec<u32>) -> Self {
        Self {
            name,
            target: target.to_owned(),
            pids,
            tput: Vec::new(),
            cpu: Vec::new(),
            ping: Vec::new(),
            ping_p50: Vec::new(),
        }
    }

    fn measure_round(&mut self, net: &TestNet, args: &Args) -> anyhow::Result<()> {
        let before = cpu_secs(&self.pids)?;
        let secs = transfer(net, &self.target, args.mib)?;
        let cpu = cpu_secs(&self.pids)? - before;
        self.tput.push(args.mib as f64 / secs);
        self.cpu.push(cpu * 1000.0 / args.mib as f64);
        let (avg, p50) = ping(net.host(0), &self.target)?;
        self.ping.push(avg);
        self.ping_p50.push(p50);
        Ok(())
    }
}

/// CPU seconds (user + system, all threads) the processes have used so far.
fn cpu_secs(pids: &[u32]) -> anyhow::Result<f64> {
    let mut ticks = 0u64;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("process {pid} (a tunnel) is gone"))?;
        // Fields after "pid (comm) ": state is field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        for i in [11, 12] {
            ticks += fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(ticks as f64 / clock_ticks())
}

/// USER_HZ, the unit of /proc/<pid>/stat times.
fn clock_ticks() -> f64 {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Sends `mib` MiB from host 0 to `target` on host 1 over TCP; returns the seconds until
/// the receiver had all of it.
fn transfer(net: &TestNet, target: &str, mib: u64) -> anyhow::Result<f64> {
    let bytes = mib * 1024 * 1024;
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
            mib * 16
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
    Ok(secs)
}

/// (average, median) RTT in ms of 20 pings. The average is the figure the tables have
/// always shown; the median of the packets is the one a few multi-ms stalls from the other
/// users of the machine do not move.
fn ping(host: &TestHost, target: &str) -> anyhow::Result<(f64, f64)> {
    let out = sh(host, &format!("busybox ping -c 20 -i 0.05 {target}"))?;
    // "round-trip min/avg/max = 0.041/0.060/0.113 ms"
    let avg = out
        .lines()
        .find_map(|l| l.split(" = ").nth(1))
        .and_then(|v| v.split('/').nth(1))
        .and_then(|v| v.parse().ok())
        .context("ping summary")?;
    // "64 bytes from 10.77.0.2: seq=0 ttl=64 time=0.312 ms"
    let times: Vec<f64> = out
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse().ok())
        .collect();
    if times.is_empty() {
        bail!("no ping replies from {target}");
    }
    Ok((avg, median(&times)))
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
