//! Deployment logs: every line is redacted, stored (for later readers) and broadcast (for
//! live followers such as the SSE endpoint).
//!
//! A follower subscribes with [`crate::Engine::subscribe_logs`] first, then reads the stored
//! lines (`Store::deployment_logs`) and the deployment's status: live lines with a `seq` it
//! has already read are duplicates, and once the status is final no new line comes (the
//! channel of a deployment is closed when it finishes).

use std::collections::HashMap;
use std::sync::Mutex;

use servos_store::deployments::LogLine;
use tokio::sync::broadcast;

use crate::Engine;
use crate::redact::Redactor;

/// Lines a slow follower may fall behind before it misses some (it can re-read the store).
const CHANNEL_CAPACITY: usize = 1024;
/// Lines of one command's output kept in the log; the rest is summarised.
const MAX_OUTPUT_LINES: usize = 200;

/// The live channels of deployments that someone follows.
#[derive(Debug, Default)]
pub(crate) struct LogHub {
    channels: Mutex<HashMap<String, broadcast::Sender<LogLine>>>,
}

impl LogHub {
    pub(crate) fn subscribe(&self, deployment_id: &str) -> broadcast::Receiver<LogLine> {
        let mut channels = lock(&self.channels);
        // Channels nobody listens to any more are dropped here; senders create none.
        channels.retain(|_, tx| tx.receiver_count() > 0);
        channels
            .entry(deployment_id.to_owned())
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe()
    }

    fn publish(&self, deployment_id: &str, line: LogLine) {
        if let Some(tx) = lock(&self.channels).get(deployment_id) {
            let _ = tx.send(line);
        }
    }

    /// Closes the channel of a finished deployment: followers drain it and see the end.
    pub(crate) fn close(&self, deployment_id: &str) {
        lock(&self.channels).remove(deployment_id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The log of one running deployment.
#[derive(Debug)]
pub(crate) struct DeployLog {
    engine: Engine,
    deployment_id: String,
    redactor: Redactor,
}

impl DeployLog {
    pub(crate) fn new(engine: Engine, deployment_id: &str) -> Self {
        Self {
            engine,
            deployment_id: deployment_id.to_owned(),
            redactor: Redactor::new(),
        }
    }

    pub(crate) fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    pub(crate) fn redactor_mut(&mut self) -> &mut Redactor {
        &mut self.redactor
    }

    /// A step of the deploy.
    pub(crate) async fn step(&self, text: &str) {
        self.line("step", text).await;
    }

    /// What a command printed, line by line (bounded).
    pub(crate) async fn output(&self, text: &str) {
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        for l in lines.iter().take(MAX_OUTPUT_LINES) {
            self.line("output", l).await;
        }
        if lines.len() > MAX_OUTPUT_LINES {
            self.line(
                "output",
                &format!("… {} more lines not shown", lines.len() - MAX_OUTPUT_LINES),
            )
            .await;
        }
    }

    pub(crate) async fn error(&self, text: &str) {
        self.line("error", text).await;
    }

    /// Redacts, stores and broadcasts one line. A store failure loses the line (and is
    /// traced) but does not fail the deploy.
    async fn line(&self, stream: &str, text: &str) {
        let text = self.redactor.redact(text);
        tracing::info!(deployment = %self.deployment_id, stream, line = %text, "deploy");
        match self
            .engine
            .store()
            .append_deployment_log(&self.deployment_id, stream, &text)
            .await
        {
            Ok(line) => self.engine.log_hub().publish(&self.deployment_id, line),
            Err(e) => {
                tracing::warn!(deployment = %self.deployment_id, error = %e, "cannot store a deployment log line")
            }
        }
    }
}
