//! The job runner: takes queued jobs from the store and runs them, at most
//! [`DEFAULT_CONCURRENCY`] at once, never two of one service (the store hands out a job only
//! when no job with its lock key runs), and recovers from a crash at start-up.
//!
//! Recovery choice: a deploy interrupted by a crash is **not resumed** but marked failed,
//! after its cleanup: on each server where it had started, the recorded env file is deleted
//! and its new container (not yet healthy, so not serving) is removed; servers it had
//! already finished keep the new version, which the error says. Resuming half a rollout
//! after an unknown pause would be guesswork; a failed deploy can simply be queued again.

use std::sync::Arc;
use std::time::Duration;

use servos_core::model::DeploymentStatus;
use servos_store::Actor;
use servos_store::deployments::{
    DEPLOY_JOB, DeploymentRecord, JobRecord, Placement, PlacementUpdate,
};
use servos_store::hosts::HostKind;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

use crate::Engine;
use crate::error::DeployError;
use crate::remote::docker;

/// Jobs run at once by default (different services, and so different servers, in parallel).
pub const DEFAULT_CONCURRENCY: usize = 8;
/// How often the runner looks for jobs without being notified.
const POLL: Duration = Duration::from_secs(5);

/// The job loop. Start it once per control plane: [`Runner::spawn`].
#[derive(Debug)]
pub struct Runner {
    engine: Engine,
    concurrency: usize,
}

impl Runner {
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }

    /// At most `n` jobs at once (at least one).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Runs the loop on the current Tokio runtime. Aborting the handle aborts every job it
    /// runs (as a crash would); the next runner's start-up recovery cleans up after them.
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(self.run())
    }

    /// Recovers from a previous crash, then runs jobs forever. Wake it with
    /// [`Engine::notify`] when a job is queued; it also looks every few seconds.
    pub async fn run(self) {
        match self.recover().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(jobs = n, "cleaned up jobs interrupted by a previous stop"),
            Err(e) => tracing::error!(error = %e, "cannot recover interrupted jobs"),
        }
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let mut tasks = JoinSet::new();
        loop {
            while let Ok(permit) = Arc::clone(&permits).try_acquire_owned() {
                match self.engine.store().claim_job(&Actor::system()).await {
                    Ok(Some(job)) => {
                        let engine = self.engine.clone();
                        tasks.spawn(async move {
                            let _permit = permit;
                            run_job(&engine, &job).await
                        });
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot take a job from the queue");
                        break;
                    }
                }
            }
            tokio::select! {
                () = self.engine.deploy_state().wake.notified() => {}
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok(Err(e)) = done {
                        tracing::error!(error = %e, "a job ended without its outcome stored");
                    }
                }
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Test hook: takes the next job that may start and runs it to its end, here.
    pub async fn run_next(&self) -> Result<Option<DeploymentRecord>, DeployError> {
        match self.engine.store().claim_job(&Actor::system()).await? {
            Some(job) => run_job(&self.engine, &job).await,
            None => Ok(None),
        }
    }

    /// Cleans up after jobs a crash left `running` and marks them failed; returns how many.
    pub async fn recover(&self) -> Result<usize, DeployError> {
        let jobs = self.engine.store().running_jobs().await?;
        for job in &jobs {
            if job.kind == DEPLOY_JOB {
                recover_deploy(&self.engine, &job.subject_id).await?;
            } else {
                tracing::warn!(job = %job.id, kind = %job.kind, "interrupted job of unknown kind left as it is");
            }
        }
        Ok(jobs.len())
    }
}

async fn run_job(
    engine: &Engine,
    job: &JobRecord,
) -> Result<Option<DeploymentRecord>, DeployError> {
    if job.kind != DEPLOY_JOB {
        tracing::warn!(job = %job.id, kind = %job.kind, "job of unknown kind skipped");
        return Ok(None);
    }
    engine.run_deploy_job(job).await.map(Some)
}

/// Removes the env file and the not-yet-healthy container of an interrupted deploy on each
/// server, then marks it failed with what was done.
async fn recover_deploy(engine: &Engine, deployment_id: &str) -> Result<(), DeployError> {
    let system = Actor::system();
    let deployment = engine.store().get_deployment(deployment_id).await?;
    let placements = engine.store().placements_of(deployment_id).await?;
    let mut notes = Vec::new();
    for p in &placements {
        match p.status.as_str() {
            "starting" | "started" => notes.push(clean_server(engine, &system, p).await?),
            "running" => notes.push(format!(
                "server {} already runs the new container {}",
                server_name(engine, p).await,
                p.container
            )),
            _ => {}
        }
    }
    if notes.is_empty() {
        notes.push("nothing had started on a server".into());
    }
    let cleanup = format!("{}; queue the deploy again to retry", notes.join("; "));
    let message = DeployError::Interrupted { cleanup }.to_string();
    engine
        .store()
        .append_deployment_log(
            &deployment.id,
            "error",
            &format!("deployment failed: {message}"),
        )
        .await?;
    engine
        .store()
        .finish_deployment(
            &system,
            &deployment.id,
            DeploymentStatus::Failed,
            Some(&message),
        )
        .await?;
    engine.log_hub().close(&deployment.id);
    Ok(())
}

async fn server_name(engine: &Engine, p: &Placement) -> String {
    match engine
        .store()
        .get_host(HostKind::Server, &p.server_id)
        .await
    {
        Ok(h) => h.name,
        Err(_) => p.server_id.clone(),
    }
}

/// Deletes the recorded env file and removes the new container on one server. A server
/// that cannot be reached keeps its file until its next check sweeps stale env files.
async fn clean_server(
    engine: &Engine,
    system: &Actor,
    p: &Placement,
) -> Result<String, DeployError> {
    let name = server_name(engine, p).await;
    let session = match engine.session(HostKind::Server, &p.server_id, system).await {
        Ok(s) => s,
        Err(e) => {
            return Ok(format!(
                "server {name} could not be reached for cleanup ({e}); its env file is removed by its next check"
            ));
        }
    };
    let mut done = Vec::new();
    let mut env_file = p.env_file.clone();
    if let Some(file) = &p.env_file {
        match Engine::exec_checked(&session, &docker::remove_files(&[file])).await {
            Ok(_) => {
                done.push(format!("removed env file {file}"));
                env_file = None;
            }
            Err(e) => done.push(format!("could not remove env file {file} ({e})")),
        }
    }
    engine.remove_quietly(&session, &p.container).await;
    done.push(format!("removed the new container {}", p.container));
    let update = PlacementUpdate {
        deployment_id: &p.deployment_id,
        server_id: &p.server_id,
        position: p.position,
        status: "failed",
        container: &p.container,
        env_file: env_file.as_deref(),
    };
    engine.store().set_placement(system, &update).await?;
    Ok(format!("on server {name}: {}", done.join(", ")))
}
