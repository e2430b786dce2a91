//! Installs the node agent on a server over SSH: uploads the running `servos` binary
//! (SHA-256 checked on the host before it is moved into place), creates user and group
//! `servos`, hands over the one-time enrolment token through stdin into a 0600 file (never
//! argv), and starts the agent under systemd where systemd runs, else under a plain shell
//! supervisor loop. Every host command is a pure builder below, tested as exact text.

use std::time::Duration;

use servos_core::Secret;
use servos_ssh::{RemoteCommand, shell_quote};
use servos_store::{audit::Actor, hosts::HostKind};
use sha2::{Digest, Sha256};

use crate::{commission::Engine, error::DeployError};

/// Where the agent binary lives on a server (root-owned, 0755).
pub const BIN_DIR: &str = "/var/lib/servos/bin";
pub const AGENT_STATE: &str = "/var/lib/servos/agent";

/// How the agent is started on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentLaunch {
    pub control_plane: String,
    pub server_id: String,
    pub mesh_address: String,
    pub mesh_prefix: u8,
}

impl AgentLaunch {
    /// The agent's argv after the binary (no secret in it: the token is in a file).
    pub fn args(&self) -> Vec<String> {
        vec![
            "agent".into(),
            "--address".into(),
            format!("{}/{}", self.mesh_address, self.mesh_prefix),
            "--control-plane".into(),
            self.control_plane.clone(),
            "--server-id".into(),
            self.server_id.clone(),
            "--enrol-token-file".into(),
            format!("{AGENT_STATE}/enrol.token"),
        ]
    }

    fn command_line(&self) -> String {
        std::iter::once(format!("{BIN_DIR}/servos"))
            .chain(self.args())
            .map(|a| shell_quote(&a))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Receives the binary on stdin into a temporary file.
pub fn upload_cmd() -> RemoteCommand {
    RemoteCommand::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 022 && mkdir -p {BIN_DIR} && cat > {BIN_DIR}/servos.new"
        ))
        .timeout(Duration::from_secs(300))
}

/// Checks the uploaded file's SHA-256, then moves it into place.
pub fn verify_cmd(sha256_hex: &str) -> RemoteCommand {
    RemoteCommand::new("sh").arg("-c").arg(format!(
        "echo {sum} | sha256sum -c --status - && chmod 755 {BIN_DIR}/servos.new && mv {BIN_DIR}/servos.new {BIN_DIR}/servos",
        sum = shell_quote(&format!("{sha256_hex}  {BIN_DIR}/servos.new"))
    ))
}

/// Creates the system user and group `servos` unless they exist, and lets it traverse
/// /var/lib/servos (0711: it still cannot list it, and secrets/ stays 0700 root).
pub fn create_user_cmd() -> RemoteCommand {
    RemoteCommand::new("sh").arg("-c").arg(
        "(getent passwd servos >/dev/null || useradd --system --user-group --no-create-home --home-dir /var/lib/servos/agent --shell /usr/sbin/nologin servos) && mkdir -p /var/lib/servos && chmod 711 /var/lib/servos",
    )
}

/// Writes the enrolment token from stdin into a 0600 file in the agent's state directory.
pub fn token_cmd() -> RemoteCommand {
    RemoteCommand::new("sh").arg("-c").arg(format!(
        "umask 077 && mkdir -p {AGENT_STATE} && cat > {AGENT_STATE}/enrol.token"
    ))
}

/// Prints `systemd` when systemd is PID 1.
pub fn detect_systemd_cmd() -> RemoteCommand {
    RemoteCommand::new("sh")
        .arg("-c")
        .arg("test -d /run/systemd/system && echo systemd || echo plain")
}

/// The systemd unit.
pub fn systemd_unit(launch: &AgentLaunch) -> String {
    format!(
        "[Unit]\nDescription=ServOS node agent (mesh, eBPF policy, heartbeats)\nAfter=network-online.target\nWants=network-online.target\n\n\
         [Service]\nExecStart={}\nRestart=always\nRestartSec=2\n\n[Install]\nWantedBy=multi-user.target\n",
        launch.command_line()
    )
}

/// Installs the unit from stdin and starts it.
pub fn systemd_start_cmd() -> RemoteCommand {
    RemoteCommand::new("sh").arg("-c").arg(
        "cat > /etc/systemd/system/servos-agent.service && systemctl daemon-reload && systemctl enable --now servos-agent.service",
    )
}

/// Without systemd: a detached shell loop restarts the agent when it exits.
pub fn plain_start_cmd(launch: &AgentLaunch) -> RemoteCommand {
    let supervisor = format!("while true; do {}; sleep 2; done", launch.command_line());
    RemoteCommand::new("sh").arg("-c").arg(format!(
        "nohup setsid sh -c {} >>/var/lib/servos/agent.log 2>&1 </dev/null &",
        shell_quote(&supervisor)
    ))
}

impl Engine {
    /// Installs and starts the agent on server `id` with `binary` (the running `servos`
    /// executable) and the one-time `token`.
    pub async fn install_agent(
        &self,
        id: &str,
        actor: &Actor,
        binary: &[u8],
        launch: &AgentLaunch,
        token: &Secret<String>,
    ) -> Result<(), DeployError> {
        let session = self.session(HostKind::Server, id, actor).await?;
        let record = self.store().get_host(HostKind::Server, id).await?;
        let addr = session.target().addr();
        let fail = |step: &'static str| {
            let (name, addr) = (record.name.clone(), addr.clone());
            move |source| DeployError::Remote {
                kind: "server",
                name,
                addr,
                step,
                source,
            }
        };
        let sum = hex::encode(Sha256::digest(binary));
        let run = |cmd: RemoteCommand, stdin: Option<Vec<u8>>, step: &'static str| {
            let session = session.clone();
            let fail = fail(step);
            let addr = addr.clone();
            async move {
                let out = match stdin {
                    Some(bytes) => session.exec_with_stdin(&cmd, &bytes).await,
                    None => session.exec(&cmd).await,
                };
                out.and_then(|o| o.checked(&addr, &cmd)).map_err(fail)
            }
        };
        run(
            upload_cmd(),
            Some(binary.to_vec()),
            "upload the agent binary",
        )
        .await?;
        run(verify_cmd(&sum), None, "verify the agent binary's checksum").await?;
        run(create_user_cmd(), None, "create user servos").await?;
        run(
            token_cmd(),
            Some(token.expose().as_bytes().to_vec()),
            "hand over the enrolment token",
        )
        .await?;
        let init = run(detect_systemd_cmd(), None, "detect systemd").await?;
        if String::from_utf8_lossy(&init.stdout).trim() == "systemd" {
            run(
                systemd_start_cmd(),
                Some(systemd_unit(launch).into_bytes()),
                "start the agent (systemd)",
            )
            .await?;
        } else {
            run(plain_start_cmd(launch), None, "start the agent").await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch() -> AgentLaunch {
        AgentLaunch {
            control_plane: "http://cp.example:8080/$(reboot)'".into(),
            server_id: "srv-1".into(),
            mesh_address: "10.77.0.5".into(),
            mesh_prefix: 16,
        }
    }

    #[test]
    fn upload_and_verify_commands_are_exact() {
        assert_eq!(
            upload_cmd().to_shell(),
            "sh -c 'umask 022 && mkdir -p /var/lib/servos/bin && cat > /var/lib/servos/bin/servos.new'"
        );
        assert_eq!(
            verify_cmd("ab12").to_shell(),
            "sh -c 'echo '\\''ab12  /var/lib/servos/bin/servos.new'\\'' | sha256sum -c --status - && chmod 755 /var/lib/servos/bin/servos.new && mv /var/lib/servos/bin/servos.new /var/lib/servos/bin/servos'"
        );
        assert_eq!(
            token_cmd().to_shell(),
            "sh -c 'umask 077 && mkdir -p /var/lib/servos/agent && cat > /var/lib/servos/agent/enrol.token'"
        );
    }

    #[test]
    fn hostile_control_plane_url_stays_one_quoted_argument() {
        let line = launch().command_line();
        assert_eq!(
            line,
            "/var/lib/servos/bin/servos agent --address 10.77.0.5/16 --control-plane 'http://cp.example:8080/$(reboot)'\\''' --server-id srv-1 --enrol-token-file /var/lib/servos/agent/enrol.token"
        );
        assert!(systemd_unit(&launch()).contains(&format!("ExecStart={line}\n")));
    }
}
