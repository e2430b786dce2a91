//! `ssh`: ServOS SSH sessions against OpenSSH on real test hosts (servos-testkit network
//! namespaces with their own sshd, 10.250.x.x), in the same run.
//!
//! (a) round trip of `true`, sequentially, over ServOS's reused connection against `ssh`
//! through a ControlMaster socket; (b) 100 commands over 5 hosts in parallel.

mod parallel;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, ensure};
use servos_core::Secret;
use servos_ssh::{HostKeyPolicy, RemoteCommand, Session, Target, Timeouts};
use servos_testkit::TestNet;

use crate::openssh::{Mux, OpenSsh};
use crate::report::{self, Goal, Table};
use crate::stats::{Latencies, ms};

/// Issue 3: ServOS is no slower than OpenSSH with multiplexing.
const GOAL: Goal = Goal::AtMost(1.0);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Test hosts (network namespaces with sshd).
    #[arg(long, default_value_t = 5)]
    hosts: usize,
    /// Sequential round trips per method in part (a).
    #[arg(long, default_value_t = 200)]
    n: usize,
    /// Commands run in parallel over all hosts in part (b).
    #[arg(long, default_value_t = 100)]
    parallel: usize,
    /// Interleaved rounds of part (b).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Leave the machine's /root/.bashrc visible on the test hosts. By default it is
    /// hidden inside their private mount namespaces (see [`hide_root_bashrc`]).
    #[arg(long)]
    keep_root_bashrc: bool,
}

/// A test host as the benchmark sees it.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    addr: Ipv4Addr,
    fingerprint: String,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    ensure!(
        args.hosts > 0 && args.n > 0 && args.rounds > 0,
        "counts must be at least 1"
    );
    ensure!(
        args.parallel >= args.hosts,
        "--parallel must be at least --hosts"
    );
    let started = Instant::now();
    let net = TestNet::new(args.hosts)
        .context("build the test hosts (run scripts/install-test-deps.sh as root)")?;
    let pair = servos_ssh::keys::generate_ed25519("servos-bench")?;
    let mut hosts = Vec::new();
    let mut hidden = false;
    for h in net.hosts() {
        h.authorize(&pair.public_line)?;
        if !args.keep_root_bashrc {
            hidden |= hide_root_bashrc(h)?;
        }
        hosts.push(Host {
            addr: h.addr(),
            fingerprint: h.host_key_fingerprint()?,
        });
    }
    println!(
        "ssh: {} test hosts ({}) ready in {:.2} s; load average {}",
        hosts.len(),
        hosts
            .iter()
            .map(|h| h.addr.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        started.elapsed().as_secs_f64(),
        report::load_average()
    );
    if hidden {
        println!(
            "note: the test hosts share this machine's /root, and bash sources /root/.bashrc \
             for every SSH command (Debian's SSH_SOURCE_BASHRC); on this machine it runs \
             `pyenv init`, a load-dependent cost far above SSH's own that would drown both \
             stacks alike. It is hidden by an empty bind mount inside the test hosts' private \
             mount namespaces only (the file itself is untouched); --keep-root-bashrc keeps it"
        );
    }
    let openssh = OpenSsh::new(&pair.private_openssh)?;
    let result = crate::runtime()?.block_on(bench(args, &hosts, &pair.private_openssh, &openssh));
    let cleaned = openssh.cleanup();
    drop(net);
    result.and(cleaned)
}

async fn bench(
    args: &Args,
    hosts: &[Host],
    key: &Secret<String>,
    openssh: &OpenSsh,
) -> anyhow::Result<()> {
    let first = &hosts[0];
    report::heading(&format!(
        "(a) sequential round trip of `true`, N={} each, host {}",
        args.n, first.addr
    ));
    println!(
        "OpenSSH: {}",
        openssh.describe(first.addr, Mux::ControlMaster, "true")
    );
    println!(
        "ServOS:  Session::connect once, then session.exec(&RemoteCommand::new(\"true\")) N times"
    );

    let t = Instant::now();
    let session = connect(first, key).await?;
    let servos_connect = t.elapsed();
    let t = Instant::now();
    tokio::task::block_in_place(|| openssh.start_master(first.addr))?;
    let master_start = t.elapsed();

    let (servos, ssh) = sequential(&session, openssh, first.addr, args.n).await?;
    print_sequential(&servos, &ssh, servos_connect, master_start);

    for host in &hosts[1..] {
        tokio::task::block_in_place(|| openssh.start_master(host.addr))?;
    }
    let mut sessions = vec![Arc::new(session)];
    for host in &hosts[1..] {
        sessions.push(Arc::new(connect(host, key).await?));
    }
    let outcome = parallel::run(args, hosts, key, &sessions, openssh).await;
    for s in &sessions {
        s.close().await;
    }
    outcome
}

/// A ServOS session to `host`, its host key pinned to what the testkit generated.
pub(crate) async fn connect(host: &Host, key: &Secret<String>) -> anyhow::Result<Session> {
    let target = Target {
        host: host.addr.to_string(),
        port: 22,
        user: "root".to_owned(),
    };
    Session::connect(
        &target,
        key,
        None,
        HostKeyPolicy::Pin(host.fingerprint.clone()),
        // Bounded: a stuck command fails the benchmark instead of hanging it.
        Timeouts {
            command: Duration::from_secs(30),
            ..Timeouts::default()
        },
    )
    .await
    .with_context(|| format!("ServOS connect to {target}"))
}

/// Bind-mounts an empty file over `/root/.bashrc` inside the host's private mount
/// namespace, if the file exists; returns whether it did. Nothing outside the test host
/// changes: the namespace was made with private propagation and goes with the `TestNet`.
pub(crate) fn hide_root_bashrc(host: &servos_testkit::TestHost) -> anyhow::Result<bool> {
    let script = "if [ -e /root/.bashrc ]; then : > /run/servos-bench-empty-bashrc && \
                  mount --bind /run/servos-bench-empty-bashrc /root/.bashrc && echo hidden; fi";
    let out = host.exec(script)?;
    ensure!(
        out.status.success(),
        "hiding /root/.bashrc on {}: {}: {}",
        host.name(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).contains("hidden"))
}

pub(crate) async fn exec_true(session: &Session) -> anyhow::Result<()> {
    let out = session.exec(&RemoteCommand::new("true")).await?;
    ensure!(
        out.status.success(),
        "`true` on {}: {}",
        session.target(),
        out.status
    );
    Ok(())
}

/// Warm-up, then N timed round trips per method, in alternating blocks so both see the
/// same background load.
async fn sequential(
    session: &Session,
    openssh: &OpenSsh,
    addr: Ipv4Addr,
    n: usize,
) -> anyhow::Result<(Latencies, Latencies)> {
    const WARMUP: usize = 10;
    const BLOCK: usize = 50;
    for _ in 0..WARMUP {
        exec_true(session).await?;
        tokio::task::block_in_place(|| openssh.run_true(addr, Mux::ControlMaster))?;
    }
    let (mut servos, mut ssh) = (Vec::with_capacity(n), Vec::with_capacity(n));
    while servos.len() < n {
        let block = BLOCK.min(n - servos.len());
        for _ in 0..block {
            let t = Instant::now();
            exec_true(session).await?;
            servos.push(t.elapsed());
        }
        tokio::task::block_in_place(|| -> anyhow::Result<()> {
            for _ in 0..block {
                let t = Instant::now();
                openssh.run_true(addr, Mux::ControlMaster)?;
                ssh.push(t.elapsed());
            }
            Ok(())
        })?;
    }
    Ok((Latencies::new(servos), Latencies::new(ssh)))
}

fn print_sequential(servos: &Latencies, ssh: &Latencies, connect: Duration, master: Duration) {
    let mut table = Table::new(["method", "n", "mean", "p50", "p99", "max"]);
    for (label, l) in [
        ("ServOS Session::exec (reused connection)", servos),
        ("OpenSSH ssh via ControlMaster socket", ssh),
    ] {
        table.row([
            label.to_owned(),
            l.count().to_string(),
            ms(l.mean()),
            ms(l.p50()),
            ms(l.p99()),
            ms(l.max()),
        ]);
    }
    table.print();
    println!(
        "one-time setup, not in the figures: ServOS connect+auth {}, OpenSSH first call (starts the master) {}",
        ms(connect),
        ms(master)
    );
    let ratio = |f: fn(&Latencies) -> Duration| f(servos).as_secs_f64() / f(ssh).as_secs_f64();
    let (mean, p50, p99) = (
        ratio(Latencies::mean),
        ratio(Latencies::p50),
        ratio(Latencies::p99),
    );
    println!(
        "ratio servos/openssh: mean {mean:.3}× ({})  [held to the goal]",
        GOAL.verdict(mean, "×")
    );
    println!(
        "                      p50  {p50:.3}× ({})",
        GOAL.verdict(p50, "×")
    );
    println!(
        "                      p99  {p99:.3}× ({})",
        GOAL.verdict(p99, "×")
    );
    println!(
        "note: each OpenSSH call includes starting an `ssh` process; that is what a caller of ssh pays"
    );
    report::summary(format!(
        "ssh (a): round trip mean/p50/p99 ServOS {}/{}/{}, OpenSSH ControlMaster {}/{}/{}; \
         ratio mean {mean:.3}× [{}]",
        ms(servos.mean()),
        ms(servos.p50()),
        ms(servos.p99()),
        ms(ssh.mean()),
        ms(ssh.p50()),
        ms(ssh.p99()),
        GOAL.verdict(mean, "×"),
    ));
}

/// Joins spawned tasks, keeping the first error.
pub(crate) async fn join_all(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
) -> anyhow::Result<()> {
    let mut first = Ok(());
    for task in tasks {
        let r = task
            .await
            .map_err(|e| anyhow!("task failed: {e}"))
            .and_then(|r| r);
        if first.is_ok() {
            first = r;
        }
    }
    first
}
