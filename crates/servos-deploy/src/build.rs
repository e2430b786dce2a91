//! Builds from git: a deployment of a git service without an image is first built on a
//! builder (shallow clone of the ref, `docker build`, image tagged with the commit SHA,
//! output streamed into the deployment log), then its image is moved to the service's
//! servers (pushed to and pulled from the service's registry, or streamed `docker save` →
//! control plane → `docker load` without touching the control plane's disk), and the
//! usual rollout deploys it.
//!
//! Which builder: the service's own; without one, the first `ready` builder by name (else
//! the first builder at all, which is then commissioned on connect).
//!
//! Secrets: the git token is sent to the builder only on the build script's stdin, inside
//! an `Authorization` header value that the script hands to `git` through its environment
//! (`GIT_CONFIG_*`); token, header value and its base64 part are redacted from every line
//! logged and from the stored error.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use servos_core::Secret;
use servos_core::model::ServerStatus;
use servos_core::validate;
use servos_ssh::{Session, SshError};
use servos_store::Actor;
use servos_store::deployments::DeploymentRecord;
use servos_store::hosts::{HostKind, HostRecord};
use servos_store::records::CredentialKind;
use servos_store::services::{GitSource, ServiceRecord};
use tokio::sync::mpsc;

use crate::Engine;
use crate::error::{DeployError, command_detail};
use crate::logs::DeployLog;
use crate::remote::build::{self as cmd, BuildSpec, Mark};

/// How long a build may take unless configured otherwise.
pub const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Build output lines stored in the deployment log; later ones are only counted.
pub const MAX_BUILD_LOG_LINES: usize = 5000;
/// Lines of build output quoted in the error of a failed build.
pub const ERROR_TAIL_LINES: usize = 15;
/// Chunks of image data buffered per server while streaming (each at most an SSH packet,
/// ~32 KiB): the builder is read no faster than the slowest server loads.
const PIPE_CHUNKS: usize = 64;

/// A branch, tag or commit SHA that may be checked out: what `git check-ref-format`
/// accepts, minus anything a shell or `git` option parser could misread.
pub fn valid_ref(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 255
        && !value.starts_with(['-', '/', '.'])
        && !value.ends_with(['/', '.'])
        && !value.contains("..")
        && !value.contains("//")
        && !value.ends_with(".lock")
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '+'))
}

/// A path inside the repository (Dockerfile, build context): relative, no `..`, visible
/// ASCII without spaces.
pub fn valid_repo_path(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 1024
        && !value.starts_with(['/', '-'])
        && value.split('/').all(|part| part != "..")
        && value.chars().all(|c| c.is_ascii_graphic())
}

/// The `Authorization` header value git sends: HTTP Basic with the credential's username
/// (`x-access-token` when it has none, as GitHub expects for tokens) and the token.
pub fn auth_header(username: &str, token: &Secret<String>) -> Secret<String> {
    let user = if username.is_empty() {
        "x-access-token"
    } else {
        username
    };
    let pair = Secret::new(format!("{user}:{}", token.expose()));
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair.expose());
    Secret::new(format!("Basic {encoded}"))
}

/// What a finished build produced.
#[derive(Debug)]
struct Built {
    commit: String,
    image: String,
}

impl Engine {
    /// The time limit of builds from now on.
    pub fn set_build_timeout(&self, limit: Duration) {
        let ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        self.deploy_state()
            .build_timeout_ms
            .store(ms, Ordering::Relaxed);
    }

    pub fn build_timeout(&self) -> Duration {
        match self.deploy_state().build_timeout_ms.load(Ordering::Relaxed) {
            0 => DEFAULT_BUILD_TIMEOUT,
            ms => Duration::from_millis(ms),
        }
    }

    /// For a deployment of a git service that names no image: builds it, moves the image
    /// to the servers and returns the deployment as now stored (with its image and commit).
    /// Any other deployment is returned unchanged.
    pub(crate) async fn build_if_needed(
        &self,
        deployment: &DeploymentRecord,
        log: &mut DeployLog,
    ) -> Result<DeploymentRecord, DeployError> {
        let service = self.store().get_service(&deployment.service_id).await?;
        let Some(git) = service.git.clone() else {
            return Ok(deployment.clone());
        };
        if deployment.image.is_some() {
            return Ok(deployment.clone());
        }
        let not_deployable = |reason: String| DeployError::NotDeployable {
            service: service.name.clone(),
            reason,
        };
        if service.servers.is_empty() {
            return Err(not_deployable("it is assigned to no server".into()));
        }
        let git_ref = deployment
            .git_ref
            .clone()
            .unwrap_or_else(|| git.branch.clone());
        if !valid_ref(&git_ref) {
            return Err(not_deployable(format!(
                "{} is not a branch, tag or commit that can be built",
                validate::show(&git_ref)
            )));
        }
        for (field, value) in [("dockerfile", &git.dockerfile), ("context", &git.context)] {
            if let Some(v) = value.as_deref().filter(|v| !valid_repo_path(v)) {
                return Err(not_deployable(format!(
                    "its {field} {} is not a relative path inside the repository",
                    validate::show(v)
                )));
            }
        }
        let auth = self.git_auth(&service, &git, log).await?;
        let builder = self.pick_builder(&service).await?;
        let built = self
            .run_build(
                deployment,
                &service,
                &git,
                &git_ref,
                &builder,
                auth.as_ref(),
                log,
            )
            .await?;
        let session = self
            .session(HostKind::Builder, &builder.id, &Actor::system())
            .await?;
        let image = match &service.registry_id {
            Some(registry) => self.push(&service, registry, &built, &session, log).await?,
            None => built.image.clone(),
        };
        self.store()
            .record_build(&Actor::system(), &deployment.id, &image, &built.commit)
            .await?;
        if service.registry_id.is_none() {
            self.transfer(&service, &builder, &session, &image, log)
                .await?;
        }
        Ok(self.store().get_deployment(&deployment.id).await?)
    }

    /// The decrypted auth header for the service's git credential (none for public
    /// repositories); all its forms are added to the redactor.
    async fn git_auth(
        &self,
        service: &ServiceRecord,
        git: &GitSource,
        log: &mut DeployLog,
    ) -> Result<Option<Secret<String>>, DeployError> {
        let Some(id) = &git.credential_id else {
            return Ok(None);
        };
        let credential = self
            .store()
            .get_credential(CredentialKind::GitCredential, id)
            .await?;
        let token = self
            .store()
            .credential_secret(CredentialKind::GitCredential, id)
            .await
            .map_err(|e| match e {
                servos_store::StoreError::Vault(_) => DeployError::SecretDecrypt {
                    service: service.name.clone(),
                    what: "git token",
                    source: e,
                },
                other => DeployError::Store(other),
            })?;
        let header = auth_header(&credential.username, &token);
        let encoded = Secret::new(header.expose().trim_start_matches("Basic ").to_owned());
        log.redactor_mut().add([&token, &header, &encoded]);
        log.step(&format!(
            "using git credential {} (token redacted)",
            credential.name
        ))
        .await;
        Ok(Some(header))
    }

    async fn pick_builder(&self, service: &ServiceRecord) -> Result<HostRecord, DeployError> {
        if let Some(id) = &service.builder_id {
            return Ok(self.store().get_host(HostKind::Builder, id).await?);
        }
        let builders = self.store().list_hosts(HostKind::Builder).await?;
        let ready = builders
            .iter()
            .find(|b| b.status == ServerStatus::Ready.as_str());
        ready
            .or(builders.first())
            .cloned()
            .ok_or_else(|| DeployError::NotDeployable {
                service: service.name.clone(),
                reason: "it is built from git and there is no builder: add one with `servos builders add`"
                    .into(),
            })
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_build(
        &self,
        deployment: &DeploymentRecord,
        service: &ServiceRecord,
        git: &GitSource,
        git_ref: &str,
        builder: &HostRecord,
        auth: Option<&Secret<String>>,
        log: &DeployLog,
    ) -> Result<Built, DeployError> {
        let limit = self.build_timeout();
        let fail = |reason: String| DeployError::Build {
            service: service.name.clone(),
            builder: builder.name.clone(),
            reason: log.redactor().redact(&reason),
        };
        log.step(&format!(
            "building {} at {git_ref} on builder {} (time limit {}s)",
            git.repository,
            builder.name,
            limit.as_secs()
        ))
        .await;
        let session = self
            .session(HostKind::Builder, &builder.id, &Actor::system())
            .await?;
        let work_dir = cmd::work_dir(&deployment.id);
        let repository = cmd::local_repository(&service.name);
        let spec = BuildSpec {
            work_dir: &work_dir,
            repository: &git.repository,
            git_ref,
            dockerfile: git.dockerfile.as_deref().unwrap_or(""),
            context: git.context.as_deref().unwrap_or("."),
            image_repository: &repository,
            limit,
        };
        let mut stdin = auth.map(|a| a.expose().clone()).unwrap_or_default();
        stdin.push('\n');
        let stdin = Secret::new(stdin);
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let mut pending = Vec::new();
        let run = async {
            let result = session
                .exec_streaming(
                    &cmd::build(&spec),
                    Some(stdin.expose().as_bytes()),
                    |_, data| {
                        pending.extend_from_slice(data);
                        while let Some(end) = pending.iter().position(|&b| b == b'\n' || b == b'\r')
                        {
                            let line: Vec<u8> = pending.drain(..=end).collect();
                            let _ = tx.send(String::from_utf8_lossy(&line).trim_end().to_owned());
                        }
                    },
                )
                .await;
            if !pending.is_empty() {
                let _ = tx.send(String::from_utf8_lossy(&pending).trim_end().to_owned());
            }
            drop(tx);
            result
        };
        let consume = async {
            let mut marks = Vec::new();
            let mut tail = VecDeque::with_capacity(ERROR_TAIL_LINES);
            let mut stored = 0usize;
            while let Some(line) = rx.recv().await {
                if let Some(mark) = cmd::parse_mark(&line) {
                    marks.push(mark);
                    continue;
                }
                if line.trim().is_empty() {
                    continue;
                }
                if tail.len() == ERROR_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line.clone());
                stored += 1;
                if stored <= MAX_BUILD_LOG_LINES {
                    log.output(&line).await;
                }
            }
            if stored > MAX_BUILD_LOG_LINES {
                log.output(&format!(
                    "… {} more lines of build output not stored",
                    stored - MAX_BUILD_LOG_LINES
                ))
                .await;
            }
            (marks, tail)
        };
        let (result, (marks, tail)) = tokio::join!(run, consume);
        let last_lines = || {
            if tail.is_empty() {
                String::new()
            } else {
                format!(
                    "; last lines of its output:\n{}",
                    tail.iter().cloned().collect::<Vec<_>>().join("\n")
                )
            }
        };
        let status = match result {
            Ok(status) => status,
            Err(e) => {
                // The script did not get to remove its work directory itself.
                let _ = session.exec(&cmd::remove_work_dir(&work_dir)).await;
                return Err(match e {
                    SshError::CommandTimeout { .. } => fail(format!(
                        "it did not finish within its time limit of {}s and was killed{}",
                        limit.as_secs(),
                        last_lines()
                    )),
                    other => fail(format!("{}{}", command_detail(&other), last_lines())),
                });
            }
        };
        let mut commit = None;
        let mut image = None;
        for mark in marks {
            match mark {
                Mark::Commit(c) => commit = Some(c),
                Mark::Image(i) => image = Some(i),
                Mark::Timeout(step) => {
                    return Err(fail(format!(
                        "{step} did not finish within the build time limit of {}s and was stopped{}",
                        limit.as_secs(),
                        last_lines()
                    )));
                }
                Mark::Failed(step) => {
                    return Err(fail(format!("{step} failed{}", last_lines())));
                }
            }
        }
        match (status.success(), commit, image) {
            (true, Some(commit), Some(image)) => {
                log.step(&format!(
                    "built {image} from commit {commit} on builder {}",
                    builder.name
                ))
                .await;
                Ok(Built { commit, image })
            }
            (_, _, _) => Err(fail(format!(
                "the build script ended with {status} without reporting an image{}",
                last_lines()
            ))),
        }
    }

    /// Pushes the built image to the service's registry from the builder; returns the
    /// registry name the servers pull.
    async fn push(
        &self,
        service: &ServiceRecord,
        registry_id: &str,
        built: &Built,
        session: &Session,
        log: &mut DeployLog,
    ) -> Result<String, DeployError> {
        let registry = self
            .store()
            .get_credential(CredentialKind::Registry, registry_id)
            .await?;
        let password = self
            .store()
            .credential_secret(CredentialKind::Registry, registry_id)
            .await
            .map_err(|e| match e {
                servos_store::StoreError::Vault(_) => DeployError::SecretDecrypt {
                    service: service.name.clone(),
                    what: "registry password",
                    source: e,
                },
                other => DeployError::Store(other),
            })?;
        log.redactor_mut().add([&password]);
        let remote = cmd::registry_image(&registry.location, &service.name, &built.commit);
        log.step(&format!("pushing {remote} to registry {}", registry.name))
            .await;
        let push = cmd::login_and_push(
            &registry.location,
            &registry.username,
            &built.image,
            &remote,
        );
        let out = session
            .exec_with_stdin(&push, password.expose().as_bytes())
            .await;
        let failed = |detail: String| DeployError::Transfer {
            image: remote.clone(),
            server: format!("registry {}", registry.name),
            reason: log.redactor().redact(&detail),
        };
        let out = out.map_err(|e| failed(command_detail(&e)))?;
        log.output(&format!("{}{}", out.stdout_lossy(), out.stderr_lossy()))
            .await;
        if !out.status.success() {
            return Err(failed(format!(
                "{}: {}",
                out.status,
                out.stderr_lossy().trim()
            )));
        }
        Ok(remote)
    }

    /// Streams `docker save` on the builder into `docker load` on every server that does
    /// not have the image yet, all at once, through this process's memory only.
    async fn transfer(
        &self,
        service: &ServiceRecord,
        builder: &HostRecord,
        source: &Session,
        image: &str,
        log: &DeployLog,
    ) -> Result<(), DeployError> {
        let fail = |server: &str, reason: String| DeployError::Transfer {
            image: image.to_owned(),
            server: server.to_owned(),
            reason: log.redactor().redact(&reason),
        };
        let id_cmd = cmd::image_id(image);
        let built_id = source
            .exec(&id_cmd)
            .await
            .map_err(|e| fail(&builder.name, command_detail(&e)))?
            .stdout_lossy()
            .trim()
            .to_owned();
        let mut targets = Vec::new();
        for server_id in &service.servers {
            let server = self.store().get_host(HostKind::Server, server_id).await?;
            let session = self
                .session(HostKind::Server, &server.id, &Actor::system())
                .await?;
            let present = session
                .exec(&id_cmd)
                .await
                .map(|o| o.status.success() && o.stdout_lossy().trim() == built_id)
                .unwrap_or(false);
            if present {
                log.step(&format!("server {}: already has {image}", server.name))
                    .await;
            } else {
                targets.push((server.name.clone(), session));
            }
        }
        if targets.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = targets.iter().map(|(name, _)| name.as_str()).collect();
        log.step(&format!(
            "streaming {image} from builder {} to server(s) {} (docker save | docker load through the control plane)",
            builder.name,
            names.join(", ")
        ))
        .await;
        let started = Instant::now();
        let outcome = pipe_image(&builder.name, source, image, &targets).await;
        let bytes = match outcome {
            Ok(bytes) => bytes,
            Err((who, reason)) => return Err(fail(&who, reason)),
        };
        log.step(&format!(
            "transferred {:.1} MiB in {:.1}s",
            bytes as f64 / (1024.0 * 1024.0),
            started.elapsed().as_secs_f64()
        ))
        .await;
        Ok(())
    }
}

/// `docker save` on `source` fanned out to `docker load` on every target: each chunk goes
/// to all targets before the next is read, so memory stays bounded by the pipes. Returns
/// the bytes moved, or which host failed and why.
pub async fn pipe_image(
    source_name: &str,
    source: &Session,
    image: &str,
    targets: &[(String, Arc<Session>)],
) -> Result<u64, (String, String)> {
    let (save_tx, mut save_rx) = mpsc::channel::<Bytes>(PIPE_CHUNKS);
    let mut sinks = Vec::with_capacity(targets.len());
    let mut loads = Vec::with_capacity(targets.len());
    for (name, session) in targets {
        let (tx, rx) = mpsc::channel::<Bytes>(PIPE_CHUNKS);
        sinks.push(tx);
        let name = name.clone();
        let session = Arc::clone(session);
        loads.push(async move {
            let mut output = Vec::new();
            let result = session
                .exec_stdin_from(&cmd::load(), rx, |_, d: &[u8]| {
                    if output.len() < 64 * 1024 {
                        output.extend_from_slice(d);
                    }
                })
                .await;
            let text = String::from_utf8_lossy(&output).trim().to_owned();
            match result {
                Ok(s) if s.success() => Ok(()),
                Ok(s) => Err((name, format!("docker load ended with {s}: {text}"))),
                Err(e) => Err((name, format!("docker load: {}", command_detail(&e)))),
            }
        });
    }
    let mut save_err = Vec::new();
    let save_cmd = cmd::save(image);
    let save = source.exec_stdout_to(&save_cmd, save_tx, |d: &[u8]| {
        if save_err.len() < 64 * 1024 {
            save_err.extend_from_slice(d);
        }
    });
    let fanout = async move {
        let mut total = 0u64;
        while let Some(chunk) = save_rx.recv().await {
            total += chunk.len() as u64;
            for sink in &sinks {
                if sink.send(chunk.clone()).await.is_err() {
                    // A load failed: stop reading, which ends the save (and its reason
                    // comes from that load).
                    return total;
                }
            }
        }
        total
    };
    let (saved, total, loaded) = tokio::join!(save, fanout, futures::future::join_all(loads));
    let load_error = loaded.into_iter().find_map(Result::err);
    let save_error = match saved {
        Ok(s) if s.success() => None,
        Ok(s) => Some(format!(
            "docker save ended with {s}: {}",
            String::from_utf8_lossy(&save_err).trim()
        )),
        // The save was stopped because a load failed: that load says why.
        Err(SshError::Command { .. }) if load_error.is_some() => None,
        Err(e) => Some(format!("docker save: {}", command_detail(&e))),
    };
    match (save_error, load_error) {
        (Some(reason), _) => Err((source_name.to_owned(), reason)),
        (None, Some(load)) => Err(load),
        (None, None) => Ok(total),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_that_git_or_a_shell_could_misread_are_refused() {
        for ok in [
            "main",
            "release/1.2",
            "v1.2.3",
            "feature_x-y",
            &"ab".repeat(20),
        ] {
            assert!(valid_ref(ok), "{ok}");
        }
        for bad in [
            "",
            "-c",
            "--upload-pack=x",
            "/abs",
            "a..b",
            "a b",
            "a;b",
            "$(id)",
            "x/",
            "x.lock",
            ".hidden",
            "a//b",
            "a\nb",
        ] {
            assert!(!valid_ref(bad), "{bad:?}");
        }
    }

    #[test]
    fn repo_paths_stay_inside_the_repository() {
        assert!(valid_repo_path("Dockerfile"));
        assert!(valid_repo_path("docker/prod.Dockerfile"));
        assert!(valid_repo_path("."));
        assert!(!valid_repo_path("/etc/passwd"));
        assert!(!valid_repo_path("../x"));
        assert!(!valid_repo_path("a/../../x"));
        assert!(!valid_repo_path("-f"));
        assert!(!valid_repo_path("a b"));
    }

    #[test]
    fn the_auth_header_is_basic_with_the_username_or_x_access_token() {
        let token = Secret::new("ghp_secret".to_owned());
        assert_eq!(
            auth_header("", &token).expose(),
            "Basic eC1hY2Nlc3MtdG9rZW46Z2hwX3NlY3JldA=="
        );
        assert_eq!(
            auth_header("bob", &token).expose(),
            "Basic Ym9iOmdocF9zZWNyZXQ="
        );
    }
}
