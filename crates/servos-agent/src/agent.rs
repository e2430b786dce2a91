//! The agent after the drop: the WireGuard device, the loop that applies peers and policy
//! (from the control plane or a local file), heartbeats and the status file.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use serde::Serialize;
use servos_core::Secret;

use crate::{
    AgentArgs,
    classifier::Counters,
    config::MeshConfig,
    control::{ControlPlane, Health},
    error::AgentError,
    keys,
    privdrop::Dropped,
    tunnel::{Mesh, PeerStatus},
};

/// Written to `<state dir>/status.json` after every round: what the agent applied and sees.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub public_key: String,
    pub address: String,
    pub peers: Vec<PeerStatus>,
    pub policy_rules: usize,
    pub counters: Counters,
    /// How many configurations were applied since start (a changed one counts once).
    pub applied: u64,
    pub control_plane: Option<String>,
    pub last_error: Option<String>,
    /// Landlock: `enforced`, `partial` or `unsupported` (writes outside the state dir).
    pub filesystem_confinement: crate::sandbox::Confinement,
    /// The WireGuard that runs: `kernel` or `userspace` (gotatun).
    pub wireguard: crate::tunnel::Backend,
}

/// Where peers and policy come from.
enum Source {
    File {
        path: PathBuf,
        seen: Option<SystemTime>,
    },
    ControlPlane(ControlPlane),
}

pub async fn run(
    args: AgentArgs,
    dropped: Dropped,
    enrol_token: Option<Secret<String>>,
) -> Result<(), AgentError> {
    let Dropped {
        device,
        mut classifier,
        confinement,
        ..
    } = dropped;
    let key = keys::load_or_generate(&args.state_dir)?;
    let public_key = keys::public_key(&key);
    let mesh = Mesh::start(
        device,
        key,
        args.listen_port,
        args.udp_buffer_bytes,
        (args.userspace_engine, args.boringtun_threads),
    )
    .await?;
    tracing::info!(
        data_path = mesh.data_path(),
        port = args.listen_port,
        "WireGuard started"
    );
    let mut source = match (&args.mesh_config, &args.control_plane) {
        (Some(path), _) => Source::File {
            path: path.clone(),
            seen: None,
        },
        (None, Some(url)) => Source::ControlPlane(
            ControlPlane::connect(
                url,
                args.server_id.as_deref(),
                &args.state_dir,
                enrol_token,
                &public_key,
                args.listen_port,
            )
            .await?,
        ),
        (None, None) => {
            return Err(AgentError::Invalid {
                what: "configuration source",
                value: "none".into(),
            });
        }
    };
    let mut status = Status {
        public_key,
        address: format!("{}/{}", args.address.0, args.address.1),
        peers: Vec::new(),
        policy_rules: 0,
        counters: Counters::default(),
        applied: 0,
        control_plane: args.control_plane.clone(),
        last_error: None,
        filesystem_confinement: confinement,
        wireguard: mesh.backend(),
    };
    let mut current: Option<MeshConfig> = None;
    let mut address = args.address.0;
    let mut tick = tokio::time::interval(
        Duration::from_secs(args.interval.max(1)).min(Duration::from_secs(1)),
    );
    let mut round: u64 = 0;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| AgentError::Device(format!("SIGTERM handler: {e}")))?;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
        round += 1;
        // File sources are checked every second; the control plane every `interval`.
        let due = matches!(source, Source::File { .. }) || (round - 1).is_multiple_of(args.interval.max(1));
        if due {
            let result = one_round(
                &mut source,
                &mesh,
                &mut classifier,
                &mut current,
                &mut status,
                (&args.interface, &mut address, args.address.1),
            )
            .await;
            status.last_error = result.err().map(|e| {
                tracing::warn!("{e}");
                e.to_string()
            });
        }
        match mesh.status().await {
            Ok(peers) => status.peers = peers,
            Err(e) => {
                tracing::warn!("{e}");
                status.last_error = Some(e.to_string());
            }
        }
        status.counters = classifier.counters();
        write_status(&args.state_dir, &status);
    }
    tracing::info!("stopping");
    Ok(())
}

async fn one_round(
    source: &mut Source,
    mesh: &Mesh,
    classifier: &mut crate::classifier::Classifier,
    current: &mut Option<MeshConfig>,
    status: &mut Status,
    (interface, address, prefix): (&str, &mut std::net::Ipv4Addr, u8),
) -> Result<(), AgentError> {
    let next = match source {
        Source::File { path, seen } => read_if_changed(path, seen)?,
        Source::ControlPlane(cp) => {
            let health = Health::sample(&status.peers, status.counters, status.wireguard);
            cp.heartbeat(&status.public_key, &health).await?;
            Some(cp.config().await?)
        }
    };
    let Some(next) = next else { return Ok(()) };
    if current.as_ref() == Some(&next) {
        return Ok(());
    }
    next.validate()?;
    if let Some(new) = next.address.filter(|new| new != address) {
        crate::netlink::readdress(interface, *address, new, prefix)?;
        tracing::info!(old = %address, new = %new, "mesh address changed");
        *address = new;
        status.address = format!("{new}/{prefix}");
    }
    mesh.set_peers(&next.peers).await?;
    let rules = next.rules();
    classifier.set_policy(&rules)?;
    status.policy_rules = rules.len();
    status.applied += 1;
    tracing::info!(
        peers = next.peers.len(),
        rules = rules.len(),
        "mesh configuration applied"
    );
    *current = Some(next);
    Ok(())
}

fn read_if_changed(
    path: &Path,
    seen: &mut Option<SystemTime>,
) -> Result<Option<MeshConfig>, AgentError> {
    let modified = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(AgentError::io("read", path))?;
    if *seen == Some(modified) {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(AgentError::io("read", path))?;
    let config = serde_json::from_str(&text).map_err(|e| AgentError::Config {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    *seen = Some(modified);
    Ok(Some(config))
}

/// Replaces status.json atomically (write + rename), so readers never see half a file.
fn write_status(state_dir: &Path, status: &Status) {
    let tmp = state_dir.join("status.json.tmp");
    let result = serde_json::to_vec_pretty(status)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, state_dir.join("status.json")));
    if let Err(e) = result {
        tracing::warn!(
            "cannot write the status file in {}: {e}",
            state_dir.display()
        );
    }
}
