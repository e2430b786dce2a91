//! The agent's side of the control-plane protocol (`/api/v1/agent/…`): enrolment with the
//! one-time token, then the agent credential for config polls and heartbeats.

use std::{
    fs,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use servos_core::Secret;

use crate::{classifier::Counters, config::MeshConfig, error::AgentError, tunnel::PeerStatus};

const CREDENTIAL_FILE: &str = "credential";

/// Reads (before the drop) the one-time enrolment token, if a file was given.
pub fn read_enrol_token(path: Option<&Path>) -> Result<Option<Secret<String>>, AgentError> {
    let Some(path) = path else { return Ok(None) };
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(Secret::new(text.trim().to_owned()))),
        // Already used and deleted: the saved credential takes over.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AgentError::io("read", path)(e)),
    }
}

/// Server health sent with each heartbeat.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub load1: f64,
    pub mem_total_kib: u64,
    pub mem_available_kib: u64,
    pub disk_total_bytes: u64,
    pub disk_free_bytes: u64,
    pub peers: Vec<PeerStatus>,
    pub counters: Counters,
    /// The containers on this server (ids and usage from cgroups; no Docker socket).
    pub containers: Vec<crate::containers::ContainerUsage>,
    /// `kernel` or `userspace`: the WireGuard that carries the mesh (absent from agents
    /// before it was reported; the control plane stores the heartbeat as sent).
    pub wireguard: crate::tunnel::Backend,
}

impl Health {
    pub fn sample(
        peers: &[PeerStatus],
        counters: Counters,
        wireguard: crate::tunnel::Backend,
    ) -> Self {
        let load1 = fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
            .unwrap_or(0.0);
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let field = |name: &str| {
            meminfo
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        let (disk_total_bytes, disk_free_bytes) = nix::sys::statvfs::statvfs("/")
            .map(|s| {
                (
                    s.blocks() * s.fragment_size(),
                    s.blocks_available() * s.fragment_size(),
                )
            })
            .unwrap_or((0, 0));
        Self {
            load1,
            mem_total_kib: field("MemTotal:"),
            mem_available_kib: field("MemAvailable:"),
            disk_total_bytes,
            disk_free_bytes,
            peers: peers.to_vec(),
            counters,
            containers: crate::containers::sample(),
            wireguard,
        }
    }
}

#[derive(Serialize)]
struct EnrolRequest<'a> {
    server_id: &'a str,
    token: &'a str,
    public_key: &'a str,
    listen_port: u16,
}

#[derive(Deserialize)]
struct EnrolResponse {
    credential: String,
}

#[derive(Serialize)]
struct Heartbeat<'a> {
    public_key: &'a str,
    #[serde(flatten)]
    health: &'a Health,
}

/// An enrolled agent's connection to the control plane.
pub struct ControlPlane {
    http: reqwest::Client,
    base: String,
    credential: Secret<String>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Uses the saved credential, or enrols with the token and saves the credential
    /// (0600 in the state directory), then deletes the token file.
    pub async fn connect(
        url: &str,
        server_id: Option<&str>,
        state_dir: &Path,
        token: Option<Secret<String>>,
        public_key: &str,
        listen_port: u16,
    ) -> Result<Self, AgentError> {
        let base = url.trim_end_matches('/').to_owned();
        let fail = |reason: String| AgentError::ControlPlane {
            url: base.clone(),
            reason,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let saved = state_dir.join(CREDENTIAL_FILE);
        let credential = match fs::read_to_string(&saved) {
            Ok(text) => Secret::new(text.trim().to_owned()),
            Err(_) => {
                let token = token.ok_or_else(|| {
                    fail("no saved credential and no enrolment token (--enrol-token-file)".into())
                })?;
                let server_id =
                    server_id.ok_or_else(|| fail("enrolment needs --server-id".into()))?;
                // A control plane that is not reachable yet (starting, restarting, a
                // network blip) is waited for; an answer that refuses us is final.
                let mut backoff = Duration::from_millis(250);
                let response = loop {
                    let sent = http
                        .post(format!("{base}/api/v1/agent/enroll"))
                        .json(&EnrolRequest {
                            server_id,
                            token: token.expose(),
                            public_key,
                            listen_port,
                        })
                        .send()
                        .await;
                    match sent {
                        Ok(response) => break response,
                        Err(e) => {
                            tracing::warn!(control_plane = %base, error = %e, retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX), "enrolment: control plane not reachable; retrying");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                };
                let response = check(response)
                    .await
                    .map_err(|r| fail(format!("enrol: {r}")))?;
                let body: EnrolResponse = response
                    .json()
                    .await
                    .map_err(|e| fail(format!("enrol: {e}")))?;
                let credential = Secret::new(body.credential);
                save_secret(&saved, &credential)?;
                remove_token_files(state_dir);
                credential
            }
        };
        Ok(Self {
            http,
            base,
            credential,
        })
    }

    pub async fn config(&self) -> Result<MeshConfig, AgentError> {
        let response = self
            .http
            .get(format!("{}/api/v1/agent/config", self.base))
            .bearer_auth(self.credential.expose())
            .send()
            .await
            .map_err(|e| self.fail(format!("config: {e}")))?;
        let response = check(response)
            .await
            .map_err(|r| self.fail(format!("config: {r}")))?;
        response
            .json()
            .await
            .map_err(|e| self.fail(format!("config: {e}")))
    }

    pub async fn heartbeat(&self, public_key: &str, health: &Health) -> Result<(), AgentError> {
        let response = self
            .http
            .post(format!("{}/api/v1/agent/heartbeat", self.base))
            .bearer_auth(self.credential.expose())
            .json(&Heartbeat { public_key, health })
            .send()
            .await
            .map_err(|e| self.fail(format!("heartbeat: {e}")))?;
        check(response)
            .await
            .map(drop)
            .map_err(|r| self.fail(format!("heartbeat: {r}")))
    }

    fn fail(&self, reason: String) -> AgentError {
        AgentError::ControlPlane {
            url: self.base.clone(),
            reason,
        }
    }
}

async fn check(response: reqwest::Response) -> Result<reqwest::Response, String> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    Err(format!("{status}: {}", servos_core::validate::show(&body)))
}

fn save_secret(path: &PathBuf, secret: &Secret<String>) -> Result<(), AgentError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(AgentError::io("create", path))?;
    file.write_all(secret.expose().as_bytes())
        .map_err(AgentError::io("write", path))
}

/// The enrolment token is single-use: once exchanged, its file in the state directory goes.
fn remove_token_files(state_dir: &Path) {
    let _ = fs::remove_file(state_dir.join("enrol.token"));
}
