//! The ServOS node agent (`servos agent`): starts as root, creates the WireGuard mesh
//! interface and loads the eBPF classifier, drops to user `servos` with CAP_NET_ADMIN,
//! CAP_BPF and CAP_IPC_LOCK only, then runs the mesh and applies the peers and policy it is
//! given (by the control plane, or by a local file).
//!
//! Architecture invariant: depends on `servos-core` only; it never runs commands for the
//! control plane: the only things it takes from the network are peers and policy.

mod agent;
pub mod boring;
pub mod classifier;
pub mod config;
pub mod containers;
mod control;
mod error;
pub mod kernel_wg;
pub mod keys;
pub mod netlink;
pub mod privdrop;
pub mod sandbox;
pub mod tunnel;

use std::{net::Ipv4Addr, path::PathBuf, process::ExitCode};

pub use agent::Status;
pub use error::AgentError;

/// `servos agent` options.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// The agent's state directory (keys, status); the only place it can write.
    #[arg(long, default_value = "/var/lib/servos/agent")]
    pub state_dir: PathBuf,
    /// Name of the mesh interface.
    #[arg(long, default_value = "servos0")]
    pub interface: String,
    /// This server's mesh address with its prefix, e.g. 10.77.0.3/16.
    #[arg(long, value_parser = parse_cidr)]
    pub address: (Ipv4Addr, u8),
    /// UDP port WireGuard listens on.
    #[arg(long, default_value_t = 51820)]
    pub listen_port: u16,
    /// Which WireGuard carries the mesh; status.json and heartbeats report the one that runs.
    #[arg(long, value_enum, default_value_t = tunnel::WireguardMode::Auto)]
    pub wireguard: tunnel::WireguardMode,
    /// The unprivileged user (and group) the agent drops to.
    #[arg(long, default_value = "servos")]
    pub user: String,
    /// A local mesh configuration (JSON: peers and policy), re-read when it changes; for a
    /// mesh without a control plane.
    #[arg(long, conflicts_with = "control_plane")]
    pub mesh_config: Option<PathBuf>,
    /// The control plane's URL (SERVOS_PUBLIC_URL of `servos serve`).
    #[arg(long, required_unless_present = "mesh_config")]
    pub control_plane: Option<String>,
    /// This server's id on the control plane.
    #[arg(long, requires = "control_plane")]
    pub server_id: Option<String>,
    /// File holding the one-time enrolment token (read once, then deleted); later starts
    /// use the credential saved in the state directory.
    #[arg(long, requires = "control_plane")]
    pub enrol_token_file: Option<PathBuf>,
    /// Seconds between heartbeats / configuration polls.
    #[arg(long, default_value_t = 5)]
    pub interval: u64,
    /// Tuning: tokio worker threads after the drop (0 = one current-thread runtime, the
    /// default: gotatun's tasks hand every packet from one to the next, and on one thread
    /// a hand-off is a queue push instead of waking another thread; `scripts/bench.sh
    /// agent`, CPU per MiB against boringtun's: 1.03× vs 1.13× with 2 workers on a quiet
    /// machine, 1.26–1.28× vs 1.39–1.43× under load).
    #[arg(long, hide = true, default_value_t = 0)]
    pub worker_threads: usize,
    /// Tuning: the userspace WireGuard on the TUN device (boringtun's one-thread epoll loop,
    /// the default, or gotatun's tokio tasks; `scripts/bench.sh agent` compares both with
    /// boringtun-cli, see ARCHITECTURE.md).
    #[arg(long, hide = true, value_enum, default_value_t = tunnel::UserspaceEngine::Boringtun)]
    pub userspace_engine: tunnel::UserspaceEngine,
    /// Tuning: boringtun's event-loop threads (`--userspace-engine boringtun`).
    #[arg(long, hide = true, default_value_t = 1)]
    pub boringtun_threads: usize,
    /// Tuning: SO_RCVBUF/SO_SNDBUF of gotatun's WireGuard UDP socket in bytes (0 = the
    /// kernel's default; capped by net.core.rmem_max / wmem_max; boringtun keeps its own).
    #[arg(long, hide = true, default_value_t = 0)]
    pub udp_buffer_bytes: usize,
    /// Test hook: load this BPF object instead of the built-in classifier.
    #[arg(long, hide = true)]
    pub classifier_object: Option<PathBuf>,
    /// Test hook: after the privilege drop, try to create each of these files, print the
    /// outcome and exit.
    #[arg(long, hide = true)]
    pub probe_write: Vec<PathBuf>,
}

fn parse_cidr(text: &str) -> Result<(Ipv4Addr, u8), String> {
    let bad = || {
        format!(
            "expected IPv4/prefix like 10.77.0.3/16, got {}",
            servos_core::validate::show(text)
        )
    };
    let (ip, prefix) = text.split_once('/').ok_or_else(bad)?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    if !(8..=30).contains(&prefix) {
        return Err(bad());
    }
    Ok((ip, prefix))
}

/// Runs the agent; called by `servos agent` before any async runtime exists.
pub fn main(args: AgentArgs) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: servos agent: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: AgentArgs) -> Result<(), AgentError> {
    // Everything read from the parent (args, the token file's path) is captured before the
    // drop clears the environment.
    let plan = privdrop::RootPlan {
        user: args.user.clone(),
        state_dir: args.state_dir.clone(),
        interface: args.interface.clone(),
        address: args.address.0,
        prefix: args.address.1,
        wireguard: args.wireguard,
        classifier_object: args.classifier_object.clone(),
    };
    let enrol_token = control::read_enrol_token(args.enrol_token_file.as_deref())?;
    let dropped = privdrop::setup_as_root_then_drop(&plan)?;
    tracing::info!(interface = %args.interface, wireguard = %dropped.device.backend(), uid = %dropped.uid, "mesh interface up, classifier attached, privileges dropped");
    if !args.probe_write.is_empty() {
        for path in &args.probe_write {
            match std::fs::write(path, b"probe") {
                Ok(()) => println!("{}: written", path.display()),
                Err(e) => println!("{}: {e}", path.display()),
            }
        }
        return Ok(());
    }
    // Threads start only now, after the drop: they inherit the reduced sets.
    let runtime = match args.worker_threads {
        0 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
    .map_err(AgentError::Runtime)?;
    runtime.block_on(agent::run(args, dropped, enrol_token))
}
