//! `DeployError`: every way the engine can fail, naming the host or service, and the one table that
//! maps a failure to the status the host is left in.

use servos_core::model::ServerStatus;
use servos_core::validate::ValidationError;
use servos_ssh::SshError;
use servos_store::StoreError;
use servos_store::hosts::HostKind;

/// How to clear a pinned fingerprint after a legitimate host-key change, with the host's
/// own name and id filled in (servers and builders have the same command and route).
pub fn reset_hint(kind: HostKind, name: &str, id: &str) -> String {
    let plural = plural(kind);
    format!(
        "if the host was legitimately reinstalled or its key rotated, reset the pinned fingerprint \
         with `servos {plural} reset-fingerprint {name}` or `POST /api/v1/{plural}/{id}/fingerprint/reset`",
        name = servos_ssh::shell_quote(name),
    )
}

fn plural(kind: HostKind) -> &'static str {
    match kind {
        HostKind::Server => "servers",
        HostKind::Builder => "builders",
    }
}

/// Errors of the engine. `kind` is `server` or `builder`.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Reading or writing the store failed (including "no such host").
    #[error(transparent)]
    Store(#[from] StoreError),

    /// Configuring a server's reverse proxy failed (see [`crate::routing`]).
    #[error("routing service {service}: {source}")]
    Proxy {
        service: String,
        #[source]
        source: servos_proxy::ProxyError,
    },

    /// The stored SSH key or passphrase does not decrypt. Nothing else is tried.
    #[error(
        "cannot decrypt the stored SSH credentials of {kind} {name}: {source}; \
         no connection was attempted"
    )]
    Credentials {
        kind: &'static str,
        name: String,
        #[source]
        source: StoreError,
    },

    /// The stored port does not fit a TCP port (the store only writes valid ones).
    #[error("{kind} {name} has port {port}, which is not a TCP port")]
    InvalidPort {
        kind: &'static str,
        name: String,
        port: i64,
    },

    /// Connecting or authenticating failed (other than a host-key mismatch).
    #[error("cannot connect to {kind} {name}: {source}")]
    Connect {
        kind: &'static str,
        name: String,
        #[source]
        source: SshError,
    },

    /// The host presented a key other than the pinned one; nothing ran on the host.
    #[error(
        "host key of {kind} {name} ({addr}) does not match the pinned fingerprint: \
         expected {expected}, presented {presented}; the connection was refused and nothing \
         ran on the host; {hint}"
    )]
    HostKeyMismatch {
        kind: &'static str,
        name: String,
        addr: String,
        expected: String,
        presented: String,
        hint: String,
    },

    /// The host is marked `host_key_mismatch`: no connection is attempted until an admin
    /// resets its fingerprint or a check finds the pinned key again.
    #[error("{kind} {name} is marked host_key_mismatch and is not connected to: {reason}")]
    MarkedMismatch {
        kind: &'static str,
        name: String,
        reason: String,
    },

    /// A commissioning command failed or did not answer. The message leaves out the
    /// command text (a whole script, for facts): `step` names it.
    #[error("{step} on {kind} {name} ({addr}) failed: {}", command_detail(.source))]
    Remote {
        kind: &'static str,
        name: String,
        addr: String,
        step: &'static str,
        #[source]
        source: SshError,
    },

    /// The facts script printed something the parser cannot read.
    #[error("cannot read the facts of {kind} {name} ({addr}): {reason}")]
    Facts {
        kind: &'static str,
        name: String,
        addr: String,
        reason: String,
    },

    /// The service cannot be deployed as configured (no image, a git build, a bad value).
    #[error("service {service} cannot be deployed: {reason}")]
    NotDeployable { service: String, reason: String },

    /// A secret of the deploy (an env value, the registry password) does not decrypt. The
    /// deploy stops before anything runs on a server: never a partial or empty environment.
    #[error(
        "cannot decrypt the {what} of service {service}: {source}; the deploy stopped before \
         anything ran on a server"
    )]
    SecretDecrypt {
        service: String,
        what: &'static str,
        #[source]
        source: StoreError,
    },

    /// An env value cannot be carried by a Docker env file (names the variable only).
    #[error("the environment of service {service} cannot be deployed: {source}")]
    InvalidEnv {
        service: String,
        #[source]
        source: ValidationError,
    },

    /// A deploy step failed on a server. `detail` is already redacted.
    #[error("{step} on server {server} failed: {detail}")]
    Step {
        server: String,
        step: &'static str,
        detail: String,
    },

    /// The new container did not become healthy: it was removed and the previous container
    /// keeps serving. `logs` holds its last (redacted) log lines.
    #[error(
        "the new container {container} on server {server} did not become healthy: {reason}; \
         it was removed and the previous container keeps serving{}",
        log_suffix(.logs)
    )]
    Unhealthy {
        server: String,
        container: String,
        reason: String,
        logs: String,
    },

    /// The control plane stopped while this deploy ran; found and cleaned up at start-up.
    #[error("the control plane stopped during this deploy; {cleanup}")]
    Interrupted { cleanup: String },

    /// `servos logs` cannot redact: the service's environment does not decrypt, so nothing
    /// is read (its lines could carry the values unredacted).
    #[error(
        "cannot decrypt the environment of service {service}: {source}; its logs are not \
         read, because they could not be redacted"
    )]
    LogsUnredactable {
        service: String,
        #[source]
        source: StoreError,
    },

    /// The service has no running or stopped container to read logs of.
    #[error("service {service} has no running or stopped container; deploy it first")]
    NoContainers { service: String },

    /// A log request asked for something out of bounds.
    #[error("cannot read the logs of service {service}: {reason}")]
    BadLogRequest { service: String, reason: String },

    /// Building a git service failed on its builder; nothing was deployed. `reason` is
    /// already redacted and ends with the last lines of the build's output.
    #[error("building service {service} on builder {builder} failed: {reason}; nothing was deployed")]
    Build {
        service: String,
        builder: String,
        reason: String,
    },

    /// Moving a built image from the builder to a server failed; nothing was deployed
    /// there. `reason` is already redacted.
    #[error("transferring image {image} to server {server} failed: {reason}")]
    Transfer {
        image: String,
        server: String,
        reason: String,
    },

    /// There is no earlier successful deployment with a recorded digest.
    #[error("service {service} has no earlier successful deployment to roll back to")]
    NoRollbackTarget { service: String },

    /// The deployment asked for cannot be rolled back to.
    #[error("cannot roll back to deployment {deployment}: {reason}")]
    BadRollbackTarget { deployment: String, reason: String },
}

fn log_suffix(logs: &str) -> String {
    if logs.trim().is_empty() {
        String::new()
    } else {
        format!("; its last log lines:\n{}", logs.trim_end())
    }
}

impl DeployError {
    /// The status a host is left in after this failure; `None` when the failure says
    /// nothing about the host (the store failed, or the host was not even tried).
    pub fn host_status(&self) -> Option<ServerStatus> {
        match self {
            DeployError::Store(_)
            | DeployError::MarkedMismatch { .. }
            | DeployError::NotDeployable { .. }
            | DeployError::SecretDecrypt { .. }
            | DeployError::InvalidEnv { .. }
            | DeployError::Step { .. }
            | DeployError::Unhealthy { .. }
            | DeployError::Interrupted { .. }
            | DeployError::NoRollbackTarget { .. }
            | DeployError::BadRollbackTarget { .. }
            | DeployError::LogsUnredactable { .. }
            | DeployError::NoContainers { .. }
            | DeployError::BadLogRequest { .. }
            | DeployError::Proxy { .. }
            | DeployError::Build { .. }
            | DeployError::Transfer { .. } => None,
            DeployError::HostKeyMismatch { .. } => Some(ServerStatus::HostKeyMismatch),
            DeployError::Connect { source, .. } | DeployError::Remote { source, .. }
                if is_unreachable(source) =>
            {
                Some(ServerStatus::Unreachable)
            }
            DeployError::Credentials { .. }
            | DeployError::InvalidPort { .. }
            | DeployError::Connect { .. }
            | DeployError::Remote { .. }
            | DeployError::Facts { .. } => Some(ServerStatus::Error),
        }
    }
}

/// Network-level failures: the host or its sshd did not answer. Everything else (bad key,
/// refused authentication, protocol trouble, failing commands) is an `error`.
fn is_unreachable(e: &SshError) -> bool {
    matches!(
        e,
        SshError::Unreachable { .. }
            | SshError::ConnectionRefused { .. }
            | SshError::ConnectTimeout { .. }
            | SshError::Disconnected { .. }
            | SshError::CommandTimeout { .. }
    )
}

/// A command failure described without the command text (the caller names the step).
pub(crate) fn command_detail(e: &SshError) -> String {
    match e {
        SshError::CommandTimeout { after, .. } => format!("no answer within {after:?}"),
        SshError::CommandFailed { status, stderr, .. } if stderr.is_empty() => status.clone(),
        SshError::CommandFailed { status, stderr, .. } => format!("{status}: {stderr}"),
        SshError::Command { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn connect(source: SshError) -> DeployError {
        DeployError::Connect {
            kind: "server",
            name: "web-1".into(),
            source,
        }
    }

    fn addr() -> String {
        "10.0.0.5:22".into()
    }

    #[test]
    fn network_failures_leave_the_host_unreachable() {
        let io = || std::io::Error::from(std::io::ErrorKind::HostUnreachable);
        for e in [
            SshError::Unreachable {
                addr: addr(),
                source: io(),
            },
            SshError::ConnectionRefused { addr: addr() },
            SshError::ConnectTimeout {
                addr: addr(),
                after: Duration::from_secs(3),
            },
            SshError::Disconnected { addr: addr() },
        ] {
            assert_eq!(connect(e).host_status(), Some(ServerStatus::Unreachable));
        }
    }

    #[test]
    fn key_and_authentication_failures_leave_the_host_in_error() {
        for e in [
            SshError::AuthRejected {
                user: "root".into(),
                addr: addr(),
            },
            SshError::WrongPassphrase,
            SshError::PassphraseRequired,
            SshError::NotAKey { reason: "x".into() },
            SshError::UnsupportedKeyType {
                key_type: "DSA".into(),
            },
            SshError::Protocol {
                addr: addr(),
                reason: "bad banner".into(),
            },
        ] {
            assert_eq!(connect(e).host_status(), Some(ServerStatus::Error));
        }
        let vault = StoreError::Corrupt("x".into());
        let creds = DeployError::Credentials {
            kind: "server",
            name: "web-1".into(),
            source: vault,
        };
        assert_eq!(creds.host_status(), Some(ServerStatus::Error));
    }

    #[test]
    fn a_mismatch_marks_the_host_and_a_marked_host_is_left_alone() {
        let e = DeployError::HostKeyMismatch {
            kind: "server",
            name: "web-1".into(),
            addr: addr(),
            expected: "SHA256:old".into(),
            presented: "SHA256:new".into(),
            hint: reset_hint(HostKind::Server, "web-1", "id-1"),
        };
        assert_eq!(e.host_status(), Some(ServerStatus::HostKeyMismatch));
        assert_eq!(
            e.to_string(),
            "host key of server web-1 (10.0.0.5:22) does not match the pinned fingerprint: \
             expected SHA256:old, presented SHA256:new; the connection was refused and nothing \
             ran on the host; if the host was legitimately reinstalled or its key rotated, reset \
             the pinned fingerprint with `servos servers reset-fingerprint web-1` or \
             `POST /api/v1/servers/id-1/fingerprint/reset`"
        );
        let marked = DeployError::MarkedMismatch {
            kind: "server",
            name: "web-1".into(),
            reason: "r".into(),
        };
        assert_eq!(marked.host_status(), None);
    }

    #[test]
    fn the_reset_hint_names_builders_for_builders_and_quotes_odd_names() {
        assert_eq!(
            reset_hint(HostKind::Builder, "b 1", "id-2"),
            "if the host was legitimately reinstalled or its key rotated, reset the pinned \
             fingerprint with `servos builders reset-fingerprint 'b 1'` or \
             `POST /api/v1/builders/id-2/fingerprint/reset`"
        );
    }

    #[test]
    fn command_failures_read_without_the_command_text() {
        let timeout = SshError::CommandTimeout {
            addr: addr(),
            command: "sh -c '…'".into(),
            after: Duration::from_secs(60),
        };
        assert_eq!(command_detail(&timeout), "no answer within 60s");
        let failed = SshError::CommandFailed {
            addr: addr(),
            command: "install …".into(),
            status: "exit code 1".into(),
            stderr: "install: cannot change owner of '/var/lib/servos': Operation not permitted"
                .into(),
        };
        assert_eq!(
            command_detail(&failed),
            "exit code 1: install: cannot change owner of '/var/lib/servos': Operation not permitted"
        );
        let remote = DeployError::Remote {
            kind: "server",
            name: "web-1".into(),
            addr: addr(),
            step: "preparing /var/lib/servos",
            source: failed,
        };
        assert_eq!(remote.host_status(), Some(ServerStatus::Error));
        assert_eq!(
            remote.to_string(),
            "preparing /var/lib/servos on server web-1 (10.0.0.5:22) failed: exit code 1: install: \
             cannot change owner of '/var/lib/servos': Operation not permitted"
        );
        let timed_out = DeployError::Remote {
            kind: "server",
            name: "web-1".into(),
            addr: addr(),
            step: "gathering facts",
            source: timeout,
        };
        assert_eq!(timed_out.host_status(), Some(ServerStatus::Unreachable));
    }
}
