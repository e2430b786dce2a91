//! The agent's one error type: every variant names what failed and with which value.

use std::path::PathBuf;

/// Everything that can stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "the agent must start as root to create the mesh interface and load its eBPF program (running as uid {0})"
    )]
    NotRoot(u32),
    #[error("the agent must drop privileges before starting threads, but {0} threads are running")]
    Threaded(usize),
    #[error("user {0} does not exist: install creates it (useradd --system servos)")]
    NoUser(String),
    #[error("cannot look up user {user}: {source}")]
    UserLookup { user: String, source: nix::Error },
    #[error("cannot create the mesh interface {interface} on /dev/net/tun: {source}")]
    Interface {
        interface: String,
        source: tun::Error,
    },
    #[error(
        "cannot create the kernel WireGuard interface {interface} (--wireguard {mode}): {reason}"
    )]
    KernelInterface {
        interface: String,
        mode: &'static str,
        reason: String,
    },
    #[error(
        "the mesh eBPF classifier is not built into this binary (cargo feature `ebpf`); the agent refuses to run a mesh it cannot police"
    )]
    NoClassifier,
    #[error("cannot load the mesh eBPF classifier onto {interface}: {reason}")]
    Classifier { interface: String, reason: String },
    #[error("cannot update the mesh policy map: {0}")]
    PolicyMap(String),
    #[error("privilege drop failed at {step}: {reason}")]
    Drop { step: &'static str, reason: String },
    #[error("cannot restrict the agent's filesystem access with Landlock: {0}")]
    Landlock(String),
    #[error("privileges after the drop are not as required: {0}")]
    DropVerify(String),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid mesh configuration {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("invalid {what} {value}")]
    Invalid { what: &'static str, value: String },
    #[error("WireGuard device: {0}")]
    Device(String),
    #[error("control plane {url}: {reason}")]
    ControlPlane { url: String, reason: String },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

impl AgentError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }

    pub(crate) fn drop_step(step: &'static str) -> impl FnOnce(String) -> Self {
        move |reason| Self::Drop { step, reason }
    }
}
