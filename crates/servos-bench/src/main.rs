//! `servos-bench`: benchmarks that measure ServOS and a baseline side by side in one run
//! and print figures, ratios and the goal each ratio is held to (PASS/MISS).
//!
//! These are not timed unit tests: nothing here fails a build. Each subcommand prints a
//! table and ends with `summary:` lines that `scripts/bench.sh` collects.
//!
//! Network traffic goes only to 127.0.0.1 (the control plane child) and to the test hosts
//! that `servos-testkit` creates (network namespaces on 10.250.x.x). Every loop is bounded
//! by a count or a deadline.

#![forbid(unsafe_code)]

mod agent;
mod control_plane;
mod deploy;
mod openssh;
mod proxy;
mod report;
mod ssh;
mod stats;
mod transfer;
mod vault;
mod webhooks;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "servos-bench",
    about = "ServOS benchmarks (figures and ratios, same run)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Issue 2: idle memory and HTTP throughput of `servos serve` (child process on 127.0.0.1).
    ControlPlane(control_plane::Args),
    /// Issue 2: servos_core::Vault against the raw aes-gcm crate, 4 KiB values.
    Vault(vault::Args),
    /// Issue 3: ServOS SSH sessions against OpenSSH (ControlMaster and full handshakes)
    /// on real test hosts. Needs root and sshd (scripts/install-test-deps.sh).
    Ssh(ssh::Args),
    /// Issue 4: one ServOS deploy against the same steps by hand with ssh + docker, and
    /// 30 services over 3 hosts at once (time, control-plane memory). Needs root, sshd, dockerd.
    Deploy(deploy::Args),
    /// Issue 7: requests/s and p99 through Caddy against direct to the container, and
    /// failed requests during 10 redeploys under load. Needs root, sshd, dockerd, caddy.
    Proxy(proxy::Args),
    /// Issue 6: the agent's WireGuard mesh against the plain link between two test hosts
    /// (throughput, ping), and its idle memory with 10 peers. Needs root; `servos` built
    /// with --features ebpf.
    Agent(agent::Args),
    /// Issue 5: signed webhook deliveries, 100 at once (received → deployment queued, p50/p99),
    /// and forged deliveries rejected per second against GET /healthz, same run.
    Webhooks(webhooks::Args),
    /// Issue 5: a built image builder → server through the control plane (docker save |
    /// docker load over SSH) against `docker save | ssh server docker load` by hand.
    Transfer(transfer::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::ControlPlane(args) => control_plane::run(args),
        Command::Vault(args) => vault::run(&args),
        Command::Ssh(args) => ssh::run(&args),
        Command::Deploy(args) => deploy::run(&args),
        Command::Proxy(args) => proxy::run(&args),
        Command::Agent(args) => agent::run(&args),
        Command::Webhooks(args) => webhooks::run(args),
        Command::Transfer(args) => transfer::run(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("servos-bench: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// The `servos` binary next to this one (both live in `target/release`).
fn default_servos_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("servos")))
        .unwrap_or_else(|| PathBuf::from("target/release/servos"))
}

/// A multi-threaded runtime with as many workers as cores (2 on the benchmark machine).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the tokio runtime: {e}"))
}
