//! One deploy of a service, server by server: decrypt the environment (all or nothing),
//! pull the image (private registries through a throw-away `DOCKER_CONFIG`), record its
//! digest, create the service network, write the env file through stdin, `docker run`,
//! delete the env file, wait until healthy, then retire the old containers. A failed
//! health check removes the new container and leaves the old one serving.
//!
//! Secrets: env values and the registry password travel only through SSH stdin, and every
//! value is redacted from each log line and from the stored error. The env file is deleted
//! right after `docker run` returns, whatever it returned; a crash between writing and
//! deleting it is repaired at start-up by the runner (the path is recorded before writing).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use servos_core::Secret;
use servos_core::model::DeploymentStatus;
use servos_core::validate;
use servos_ssh::{Output, RemoteCommand, Session};
use servos_store::deployments::{DeploymentRecord, JobRecord, LogLine, PlacementUpdate};
use servos_store::hosts::{HostKind, HostRecord};
use servos_store::records::CredentialKind;
use servos_store::services::ServiceRecord;
use servos_store::{Actor, StoreError};
use tokio::sync::{Notify, OwnedMutexGuard, broadcast};

use crate::Engine;
use crate::error::{DeployError, command_detail};
use crate::logs::{DeployLog, LogHub};
use crate::remote::docker::{self, RunSpec};

/// How a deploy waits for health. The defaults suit production; tests shorten them.
#[derive(Debug, Clone, Copy)]
pub struct DeploySettings {
    /// How long a new container may take to become healthy.
    pub health_timeout: Duration,
    /// Without a Docker health check, how long the container must have been running (and
    /// its probe, if any, answering) to count as healthy.
    pub min_uptime: Duration,
    /// Time between two looks at the new container.
    pub poll_interval: Duration,
}

impl Default for DeploySettings {
    fn default() -> Self {
        Self {
            health_timeout: Duration::from_secs(60),
            min_uptime: Duration::from_secs(3),
            poll_interval: Duration::from_millis(500),
        }
    }
}

/// Points of a deploy where a test can hold it (see [`Engine::pause_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Checkpoint {
    /// The env file exists on the server; `docker run` has not run yet.
    EnvFileWritten,
    /// The new container runs; its health has not been checked yet.
    ContainerStarted,
}

/// A held checkpoint: `reached` is notified when a deploy gets there, which then waits for
/// `release`.
#[derive(Debug, Clone, Default)]
pub struct Pause {
    pub reached: Arc<Notify>,
    pub release: Arc<Notify>,
}

/// Deploy state shared by all clones of an [`Engine`].
#[derive(Debug, Default)]
pub(crate) struct DeployState {
    pub(crate) settings: DeploySettings,
    pub(crate) logs: LogHub,
    /// One lock per service: a deploy and a stop/start/restart/remove never overlap.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Wakes the runner when a job is queued.
    pub(crate) wake: Notify,
    pauses: Mutex<HashMap<Checkpoint, Pause>>,
    /// How routes are switched (see [`crate::routing`]).
    pub(crate) routing: crate::routing::RoutingState,
    /// The time limit of builds in milliseconds; 0: `build::DEFAULT_BUILD_TIMEOUT`.
    pub(crate) build_timeout_ms: std::sync::atomic::AtomicU64,
}

impl DeployState {
    pub(crate) fn new(settings: DeploySettings) -> Self {
        Self {
            settings,
            ..Self::default()
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The env file: one `NAME=value` line per variable, exactly as Docker's `--env-file`
/// reads it (everything after the first `=` verbatim). Names and values are validated
/// first; an error names the variable, never the value.
pub fn env_file_contents(
    service: &str,
    vars: &[(String, Secret<String>)],
) -> Result<Secret<String>, DeployError> {
    let invalid = |source| DeployError::InvalidEnv {
        service: service.to_owned(),
        source,
    };
    let mut out = String::new();
    for (name, value) in vars {
        validate::env_name(name).map_err(invalid)?;
        validate::env_value(name, value.expose()).map_err(invalid)?;
        out.push_str(name);
        out.push('=');
        out.push_str(value.expose());
        out.push('\n');
    }
    Ok(Secret::new(out))
}

/// A private registry login: URL, username and the decrypted password.
struct Login {
    url: String,
    username: String,
    password: Secret<String>,
}

/// What every server of one deploy shares.
struct Plan {
    deployment: DeploymentRecord,
    service: ServiceRecord,
    image: String,
    port: Option<u16>,
    probe: Option<(u16, Option<String>)>,
    env_file: Secret<String>,
    login: Option<Login>,
    /// Published on the mesh only (see [`crate::mesh_publish`]).
    mesh: bool,
}

impl Engine {
    /// Live log lines of a deployment (for SSE). Subscribe first, then read the stored
    /// lines; see [`crate::logs`].
    pub fn subscribe_logs(&self, deployment_id: &str) -> broadcast::Receiver<LogLine> {
        self.deploy_state().logs.subscribe(deployment_id)
    }

    /// Wakes the runner: a job was queued.
    pub fn notify(&self) {
        self.deploy_state().wake.notify_one();
    }

    /// Queues a deploy of `image` (or the service's image) and wakes the runner.
    pub async fn queue_deployment(
        &self,
        actor: &Actor,
        service_id: &str,
        image: Option<&str>,
    ) -> Result<DeploymentRecord, DeployError> {
        let rec = self
            .store()
            .queue_deployment(actor, service_id, image)
            .await?;
        self.notify();
        Ok(rec)
    }

    /// Queues a deployment as `request` describes (an image, or a git ref to build) and
    /// wakes the runner.
    pub async fn queue_deployment_of(
        &self,
        actor: &Actor,
        service_id: &str,
        request: &servos_store::deployments::DeploymentRequest<'_>,
    ) -> Result<DeploymentRecord, DeployError> {
        let rec = self.store().queue_deployment_of(actor, service_id, request).await?;
        self.notify();
        Ok(rec)
    }

    /// Test hook: the next deploy reaching `at` notifies `reached` and waits for `release`.
    pub fn pause_at(&self, at: Checkpoint) -> Pause {
        let pause = Pause::default();
        lock(&self.deploy_state().pauses).insert(at, pause.clone());
        pause
    }

    async fn checkpoint(&self, at: Checkpoint) {
        let pause = lock(&self.deploy_state().pauses).remove(&at);
        if let Some(p) = pause {
            p.reached.notify_one();
            p.release.notified().await;
        }
    }

    pub(crate) fn log_hub(&self) -> &LogHub {
        &self.deploy_state().logs
    }

    pub(crate) async fn lock_service(&self, service_id: &str) -> OwnedMutexGuard<()> {
        let m = Arc::clone(
            lock(&self.deploy_state().locks)
                .entry(service_id.to_owned())
                .or_default(),
        );
        m.lock_owned().await
    }

    /// Runs one claimed deploy job to its end and records the outcome. `Err` only when the
    /// outcome cannot be stored (the job then stays `running` for start-up recovery).
    pub(crate) async fn run_deploy_job(
        &self,
        job: &JobRecord,
    ) -> Result<DeploymentRecord, DeployError> {
        let _service = self.lock_service(&job.lock_key).await;
        let deployment = self.store().get_deployment(&job.subject_id).await?;
        let mut log = DeployLog::new(self.clone(), &deployment.id);
        let outcome = self.deploy(&deployment, &mut log).await;
        let system = Actor::system();
        let record = match outcome {
            Ok(()) => {
                log.step("deployment succeeded").await;
                self.store()
                    .finish_deployment(&system, &deployment.id, DeploymentStatus::Succeeded, None)
                    .await
            }
            Err(e) => {
                let message = log.redactor().redact(&e.to_string());
                log.error(&format!("deployment failed: {message}")).await;
                self.store()
                    .finish_deployment(
                        &system,
                        &deployment.id,
                        DeploymentStatus::Failed,
                        Some(&message),
                    )
                    .await
            }
        };
        self.log_hub().close(&deployment.id);
        Ok(record?)
    }

    async fn deploy(
        &self,
        deployment: &DeploymentRecord,
        log: &mut DeployLog,
    ) -> Result<(), DeployError> {
        // A git service is built (and its image shipped) first; see `crate::build`.
        let deployment = &self.build_if_needed(deployment, log).await?;
        let plan = self.plan(deployment, log).await?;
        let servers = plan.service.servers.len();
        log.step(&format!(
            "deploying {} of service {} to {servers} server(s), one at a time",
            plan.image, plan.service.name
        ))
        .await;
        for (position, server_id) in plan.service.servers.iter().enumerate() {
            let server = self.store().get_host(HostKind::Server, server_id).await?;
            let digest = self.deploy_to(&plan, position, &server, log).await?;
            if position == 0 {
                self.store()
                    .set_deployment_digest(&Actor::system(), &deployment.id, &digest)
                    .await?;
            }
        }
        Ok(())
    }

    /// Everything decided before any server is touched: a missing image, an undecryptable
    /// secret or an invalid env value stops the deploy here.
    async fn plan(
        &self,
        deployment: &DeploymentRecord,
        log: &mut DeployLog,
    ) -> Result<Plan, DeployError> {
        let service = self.store().get_service(&deployment.service_id).await?;
        let not_deployable = |reason: String| DeployError::NotDeployable {
            service: service.name.clone(),
            reason,
        };
        let image = deployment.image.clone().ok_or_else(|| {
            not_deployable("it has no image and is not built from git".into())
        })?;
        validate::image("image", &image).map_err(|e| not_deployable(e.to_string()))?;
        if service.servers.is_empty() {
            return Err(not_deployable("it is assigned to no server".into()));
        }
        let port = match service.port {
            Some(p) => Some(validate::port("port", p).map_err(|e| not_deployable(e.to_string()))?),
            None => None,
        };
        let probe_port = match service.healthcheck_port {
            Some(p) => Some(
                validate::port("healthcheck_port", p).map_err(|e| not_deployable(e.to_string()))?,
            ),
            None => port,
        };
        if let Some(path) = service
            .healthcheck_path
            .as_deref()
            .filter(|p| !docker::valid_health_path(p))
        {
            return Err(not_deployable(format!(
                "healthcheck_path {} is not an absolute path of visible ASCII",
                validate::show(path)
            )));
        }
        let probe = probe_port.map(|p| (p, service.healthcheck_path.clone()));
        let mesh = crate::mesh_publish::check(self.store(), &service, port).await?;
        log.step("decrypting the environment").await;
        let vars = self
            .store()
            .env_decrypted(&service.id)
            .await
            .map_err(|e| decrypt_error(&service.name, "environment", e))?;
        log.redactor_mut().add(vars.iter().map(|(_, v)| v));
        let env_file = env_file_contents(&service.name, &vars)?;
        log.step(&format!(
            "environment: {} variable(s), values redacted",
            vars.len()
        ))
        .await;
        let login = match &service.registry_id {
            Some(id) => {
                let registry = self
                    .store()
                    .get_credential(CredentialKind::Registry, id)
                    .await?;
                let password = self
                    .store()
                    .credential_secret(CredentialKind::Registry, id)
                    .await
                    .map_err(|e| decrypt_error(&service.name, "registry password", e))?;
                log.redactor_mut().add([&password]);
                Some(Login {
                    url: registry.location,
                    username: registry.username,
                    password,
                })
            }
            None => None,
        };
        Ok(Plan {
            deployment: deployment.clone(),
            service,
            image,
            port,
            probe,
            env_file,
            login,
            mesh,
        })
    }

    /// The whole rollout on one server; returns the image digest there.
    async fn deploy_to(
        &self,
        plan: &Plan,
        position: usize,
        server: &HostRecord,
        log: &DeployLog,
    ) -> Result<String, DeployError> {
        let on = Step {
            server: &server.name,
            log,
        };
        log.step(&format!("server {}: connecting", server.name))
            .await;
        let session = self
            .session(HostKind::Server, &server.id, &Actor::system())
            .await?;
        match &plan.login {
            Some(login) => {
                log.step(&format!(
                    "server {}: logging in to {} as {} and pulling {}",
                    server.name, login.url, login.username, plan.image
                ))
                .await;
                let cmd = docker::login_and_pull(&login.url, &login.username, &plan.image);
                on.run(
                    &session,
                    "registry login and pull",
                    &cmd,
                    Some(login.password.expose().as_bytes()),
                )
                .await?;
            }
            None => {
                log.step(&format!(
                    "server {}: pulling {} unless present",
                    server.name, plan.image
                ))
                .await;
                on.run(
                    &session,
                    "pulling the image",
                    &docker::ensure_image(&plan.image),
                    None,
                )
                .await?;
            }
        }
        let ident = on
            .run(
                &session,
                "inspecting the image",
                &docker::image_identity(&plan.image),
                None,
            )
            .await?;
        let digest =
            docker::parse_image_identity(&ident.stdout_lossy(), &plan.image).ok_or_else(|| {
                DeployError::Step {
                    server: server.name.clone(),
                    step: "inspecting the image",
                    detail: format!("no image id in {}", validate::show(&ident.stdout_lossy())),
                }
            })?;
        log.step(&format!(
            "server {}: image {} is {digest}",
            server.name, plan.image
        ))
        .await;
        let network = docker::network_name(&plan.service.name);
        on.run(
            &session,
            "creating the service network",
            &docker::ensure_network(&network, &plan.service.id),
            None,
        )
        .await?;
        let container = docker::container_name(&plan.service.name, &plan.deployment.id);
        let placement = |status, env_file| PlacementUpdate {
            deployment_id: &plan.deployment.id,
            server_id: &server.id,
            position: position as i64,
            status,
            container: &container,
            env_file,
        };
        // Checked before anything starts; pointed at the new container once it is healthy.
        let mesh_address = crate::mesh_publish::address(plan.mesh, &plan.service, server)?;
        let env_path = docker::env_file_path(&servos_store::new_id());
        // Recorded before the file exists: a crash from here on is cleaned up at start-up.
        self.store()
            .set_placement(&Actor::system(), &placement("starting", Some(&env_path)))
            .await?;
        let spec = RunSpec {
            container: &container,
            service_id: &plan.service.id,
            service_name: &plan.service.name,
            deployment_id: &plan.deployment.id,
            network: &network,
            env_file: &env_path,
            image: &plan.image,
            port: plan.port,
            command: plan.service.command.as_deref().unwrap_or(&[]),
        };
        let started = self.start_with_env_file(&on, &session, plan, &spec).await;
        let removed = on
            .run(
                &session,
                "removing the env file",
                &docker::remove_files(&[&env_path]),
                None,
            )
            .await;
        let leftover = removed.is_err().then_some(env_path.as_str());
        if removed.is_ok() {
            log.step(&format!("server {}: env file removed", server.name))
                .await;
        }
        let container_id = match started {
            Ok(id) => id,
            Err(e) => {
                self.remove_quietly(&session, &container).await;
                self.store()
                    .set_placement(&Actor::system(), &placement("failed", leftover))
                    .await?;
                return Err(e);
            }
        };
        self.store()
            .set_placement(&Actor::system(), &placement("started", leftover))
            .await?;
        if let Some(id) = &container_id {
            // Agents report containers by id (from cgroups): this maps them back.
            self.store()
                .set_container_id(&Actor::system(), &plan.deployment.id, &server.id, id)
                .await?;
        }
        self.checkpoint(Checkpoint::ContainerStarted).await;
        log.step(&format!(
            "server {}: container {container} started, waiting until healthy",
            server.name
        ))
        .await;
        if let Err(reason) = self.wait_healthy(&session, plan, &container).await {
            let logs = session
                .exec(&docker::container_logs(&container))
                .await
                .map(|o| tail(&o))
                .unwrap_or_default();
            self.remove_quietly(&session, &container).await;
            self.store()
                .set_placement(&Actor::system(), &placement("failed", leftover))
                .await?;
            return Err(DeployError::Unhealthy {
                server: server.name.clone(),
                container: container.clone(),
                reason: log.redactor().redact(&reason),
                logs: log.redactor().redact(&logs),
            });
        }
        self.store()
            .promote_placement(
                &Actor::system(),
                &plan.service.id,
                &placement("running", leftover),
            )
            .await?;
        log.step(&format!("server {}: {container} is healthy", server.name))
            .await;
        self.switch_route(&session, &plan.service, server, &container, log)
            .await?;
        self.switch_mesh(
            &session,
            &plan.service,
            server,
            mesh_address,
            &container,
            log,
        )
        .await?;
        self.retire_old(&on, &session, plan, &container).await?;
        Ok(digest)
    }

    /// Writes the env file through stdin and runs the container; returns its id. The caller
    /// deletes the file whatever this returns.
    async fn start_with_env_file(
        &self,
        on: &Step<'_>,
        session: &Session,
        plan: &Plan,
        spec: &RunSpec<'_>,
    ) -> Result<Option<String>, DeployError> {
        let secret = plan.env_file.expose().as_bytes();
        on.run(
            session,
            "writing the env file",
            &docker::write_env_file(spec.env_file),
            Some(secret),
        )
        .await?;
        on.log
            .step(&format!(
                "server {}: env file written (mode 0600)",
                on.server
            ))
            .await;
        self.checkpoint(Checkpoint::EnvFileWritten).await;
        let out = on
            .run(
                session,
                "starting the container",
                &docker::run_container(spec),
                None,
            )
            .await?;
        // `docker run -d` prints the new container's full id.
        Ok(crate::mesh_publish::container_id(&out.stdout_lossy()))
    }

    /// Polls the new container until it is healthy: Docker's health status if the image
    /// has a HEALTHCHECK; otherwise running for `min_uptime` and, when a port is
    /// configured, answering a TCP (or HTTP, with a path) probe from the server.
    async fn wait_healthy(
        &self,
        session: &Session,
        plan: &Plan,
        container: &str,
    ) -> Result<(), String> {
        let settings = self.deploy_state().settings;
        let deadline = Instant::now() + settings.health_timeout;
        let mut running_since: Option<Instant> = None;
        let mut last = String::from("no answer yet");
        let mut probes = ProbeTally::default();
        let mut probed_ip: Option<String> = None;
        loop {
            let out = session
                .exec(&docker::inspect_state(container))
                .await
                .map_err(|e| command_detail(&e))?;
            let state = docker::parse_state(&out.stdout_lossy()).ok_or_else(|| {
                format!(
                    "cannot read its state: {}",
                    validate::show(&out.stderr_lossy())
                )
            })?;
            // Docker resets the exit code when it restarts a container: say what is known.
            if state.restarts > 0 && state.status != "exited" {
                return Err(format!(
                    "it keeps exiting (Docker restarted it {} time(s))",
                    state.restarts
                ));
            }
            match state.status.as_str() {
                "running" => {}
                "created" => last = "it has not started".into(),
                other => return Err(format!("it is {other} (exit code {})", state.exit_code)),
            }
            if state.status == "running" {
                let since = *running_since.get_or_insert_with(Instant::now);
                let up = since.elapsed() >= settings.min_uptime;
                match state.health.as_deref() {
                    Some("healthy") => return Ok(()),
                    Some("unhealthy") => {
                        return Err("its Docker health check reports unhealthy".into());
                    }
                    Some(other) => last = format!("its Docker health check is {other}"),
                    None => match (&plan.probe, state.ips.first()) {
                        (None, _) if up => return Ok(()),
                        (None, _) => last = "it has not been running long enough".into(),
                        (Some(_), None) => last = "it has no IP address".into(),
                        (Some((port, path)), Some(ip)) => {
                            let result = probe(session, ip, *port, path.as_deref()).await;
                            probes.count(&result);
                            probed_ip = Some(ip.clone());
                            match result {
                                Ok(()) if up => return Ok(()),
                                Ok(()) => {
                                    last = "its probe answers; waiting for it to stay up".into()
                                }
                                Err(e) => last = e.to_string(),
                            }
                        }
                    },
                }
            }
            if Instant::now() >= deadline {
                let mut route = String::new();
                if let Some(ip) = probed_ip.filter(|_| probes.no_answer > 0) {
                    route = route_to(session, &ip).await;
                }
                return Err(format!(
                    "not healthy within {:?}: {last}{probes}{route}",
                    settings.health_timeout
                ));
            }
            tokio::time::sleep(settings.poll_interval).await;
        }
    }

    /// Stops and removes every other container of the service on this server.
    async fn retire_old(
        &self,
        on: &Step<'_>,
        session: &Session,
        plan: &Plan,
        new: &str,
    ) -> Result<(), DeployError> {
        let out = on
            .run(
                session,
                "listing old containers",
                &docker::list_containers(&plan.service.id, true),
                None,
            )
            .await?;
        let old: Vec<String> = docker::parse_names(&out.stdout_lossy())
            .into_iter()
            .filter(|n| n != new)
            .collect();
        if old.is_empty() {
            return Ok(());
        }
        on.log
            .step(&format!(
                "server {}: retiring {}",
                on.server,
                old.join(", ")
            ))
            .await;
        // A container that is already stopped makes `docker stop` fail; `rm -f` follows anyway.
        let _ = session.exec(&docker::stop_containers(&old)).await;
        on.run(
            session,
            "removing old containers",
            &docker::remove_containers(&old),
            None,
        )
        .await?;
        Ok(())
    }

    /// Removes a container if it exists; failures only leave a stopped container behind.
    pub(crate) async fn remove_quietly(&self, session: &Session, container: &str) {
        let _ = session
            .exec(&docker::remove_containers(&[container.to_owned()]))
            .await;
    }

    /// Runs a command without recording its output (recovery, quiet cleanup).
    pub(crate) async fn exec_checked(
        session: &Session,
        cmd: &RemoteCommand,
    ) -> Result<Output, String> {
        let addr = session.target().addr();
        session
            .exec(cmd)
            .await
            .and_then(|o| o.checked(&addr, cmd))
            .map_err(|e| command_detail(&e))
    }
}

/// Why a probe failed: the difference between a container that refuses connections (not
/// listening yet) and one nothing reaches (no answer within the probe's timeout) is what
/// a user needs to act on.
#[derive(Debug)]
enum ProbeFailure {
    /// `timeout` ended the probe: not even a refusal came back.
    NoAnswer(String),
    Failed(String),
}

impl std::fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoAnswer(m) | Self::Failed(m) => f.write_str(m),
        }
    }
}

/// How the health probes of one container went, for the error when it never got healthy.
#[derive(Debug, Default)]
struct ProbeTally {
    answered: u32,
    no_answer: u32,
    failed: u32,
}

impl ProbeTally {
    fn count(&mut self, result: &Result<(), ProbeFailure>) {
        match result {
            Ok(()) => self.answered += 1,
            Err(ProbeFailure::NoAnswer(_)) => self.no_answer += 1,
            Err(ProbeFailure::Failed(_)) => self.failed += 1,
        }
    }
}

/// ` (probes: 2 failed, 1 without any answer within 5s)`, or nothing without probes.
impl std::fmt::Display for ProbeTally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if self.answered > 0 {
            parts.push(format!("{} answered", self.answered));
        }
        if self.failed > 0 {
            parts.push(format!("{} failed", self.failed));
        }
        if self.no_answer > 0 {
            parts.push(format!(
                "{} without any answer within {}s",
                self.no_answer,
                docker::PROBE_SECONDS
            ));
        }
        if parts.is_empty() {
            return Ok(());
        }
        write!(f, " (probes: {})", parts.join(", "))
    }
}

/// `; the server's route to IP: …` (see [`docker::route_to`]), or nothing if it cannot tell.
async fn route_to(session: &Session, ip: &str) -> String {
    match session.exec(&docker::route_to(ip)).await {
        Ok(out) => {
            let text: Vec<String> = out
                .stdout_lossy()
                .lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .filter(|l| !l.is_empty())
                .collect();
            if text.is_empty() {
                String::new()
            } else {
                format!("; the server's route to {ip}: {}", validate::show(&text.join("; ")))
            }
        }
        Err(_) => String::new(),
    }
}

/// Exit code of `timeout` when it ended the command.
const TIMED_OUT: u32 = 124;

/// A TCP or HTTP probe of `ip:port` from the server.
async fn probe(
    session: &Session,
    ip: &str,
    port: u16,
    path: Option<&str>,
) -> Result<(), ProbeFailure> {
    let cmd = match path {
        Some(p) => docker::probe_http(ip, port, p),
        None => docker::probe_tcp(ip, port),
    };
    let out = session.exec(&cmd).await.map_err(|e| {
        ProbeFailure::Failed(format!("{ip}:{port} does not answer ({})", command_detail(&e)))
    })?;
    if out.status == servos_ssh::ExitStatus::Code(TIMED_OUT) {
        return Err(ProbeFailure::NoAnswer(format!(
            "{ip}:{port} does not answer (no answer within {}s)",
            docker::PROBE_SECONDS
        )));
    }
    if !out.status.success() {
        return Err(ProbeFailure::Failed(format!(
            "{ip}:{port} does not answer ({}: {})",
            out.status,
            validate::show(out.stderr_lossy().trim())
        )));
    }
    match (path, docker::parse_http_status(&out.stdout_lossy())) {
        (None, _) => Ok(()),
        (Some(_), Some(code)) if (200..400).contains(&code) => Ok(()),
        (Some(p), Some(code)) => Err(ProbeFailure::Failed(format!(
            "GET {p} on {ip}:{port} answered {code}"
        ))),
        (Some(p), None) => Err(ProbeFailure::Failed(format!(
            "GET {p} on {ip}:{port} gave no HTTP status line"
        ))),
    }
}

fn tail(out: &Output) -> String {
    let text = format!("{}{}", out.stdout_lossy(), out.stderr_lossy());
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(docker::LOG_TAIL_LINES as usize);
    lines[start..].join("\n")
}

fn decrypt_error(service: &str, what: &'static str, e: StoreError) -> DeployError {
    match e {
        StoreError::Vault(_) => DeployError::SecretDecrypt {
            service: service.to_owned(),
            what,
            source: e,
        },
        other => DeployError::Store(other),
    }
}

/// Runs deploy steps on one server, logging their output and naming the step on failure.
struct Step<'a> {
    server: &'a str,
    log: &'a DeployLog,
}

impl Step<'_> {
    async fn run(
        &self,
        session: &Session,
        step: &'static str,
        cmd: &RemoteCommand,
        stdin: Option<&[u8]>,
    ) -> Result<Output, DeployError> {
        let addr = session.target().addr();
        let result = match stdin {
            Some(bytes) => session.exec_with_stdin(cmd, bytes).await,
            None => session.exec(cmd).await,
        };
        let fail = |detail: String| DeployError::Step {
            server: self.server.to_owned(),
            step,
            detail: self.log.redactor().redact(&detail),
        };
        let out = result.map_err(|e| fail(command_detail(&e)))?;
        if !out.status.success() {
            let output = format!("{}{}", out.stdout_lossy(), out.stderr_lossy());
            self.log.output(&output).await;
            let checked = out
                .checked(&addr, cmd)
                .err()
                .map(|e| command_detail(&e))
                .unwrap_or_default();
            return Err(fail(checked));
        }
        if step == "pulling the image" || step == "registry login and pull" {
            self.log.output(&out.stdout_lossy()).await;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_carry_quotes_equals_and_unicode_verbatim() {
        let vars = vec![
            (
                "A".to_owned(),
                Secret::new("it's \"quoted\" = $(id)".to_owned()),
            ),
            ("B_2".to_owned(), Secret::new("ünïcødé ✓".to_owned())),
            ("EMPTY".to_owned(), Secret::new(String::new())),
        ];
        let file = env_file_contents("web", &vars).unwrap();
        assert_eq!(
            file.expose(),
            "A=it's \"quoted\" = $(id)\nB_2=ünïcødé ✓\nEMPTY=\n"
        );
    }

    #[test]
    fn newlines_and_bad_names_are_refused_naming_the_variable_only() {
        let vars = vec![(
            "TOKEN".to_owned(),
            Secret::new("line1\nline2-secret".to_owned()),
        )];
        let e = env_file_contents("web", &vars).unwrap_err().to_string();
        assert!(e.contains("TOKEN") && e.contains("web"), "{e}");
        assert!(!e.contains("line2-secret"), "{e}");
        let vars = vec![("1BAD".to_owned(), Secret::new("v".to_owned()))];
        assert!(env_file_contents("web", &vars).is_err());
    }
}
