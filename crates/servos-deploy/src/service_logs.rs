//! `servos logs`: the output of a service's containers, read with `docker logs` on every
//! server where the service has a running or stopped container, all servers at once.
//!
//! Every line is redacted with every decrypted env value of the service before it leaves
//! this module; when the environment does not decrypt, nothing is read at all (refusing is
//! better than streaming unredacted). Each container is read by a task of its own over the
//! server's pooled, pinned session ([`Engine::session`]); [`ContainerLogs`] owns those
//! tasks, so dropping it (the HTTP client went away) aborts them, and aborting drops the
//! `exec_streaming` future, which kills the remote `docker logs` (see
//! `servos_ssh::Session::exec_streaming`): no follower is left running on a host.

use std::sync::Arc;

use serde::Serialize;
use servos_ssh::Stream;
use servos_store::Actor;
use servos_store::hosts::HostKind;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::Engine;
use crate::error::{DeployError, command_detail};
use crate::redact::Redactor;
use crate::remote::docker;

/// Lines buffered for a slow reader before further lines are dropped (and counted).
pub const CHANNEL_LINES: usize = 4096;
/// A longer line is cut into pieces of this many bytes.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// What to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogsRequest {
    /// Keep reading new lines until the reader goes away.
    pub follow: bool,
    /// Lines from before now, per container (at most [`docker::MAX_LOG_TAIL`]).
    pub tail: u32,
}

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// The container's standard output.
    Stdout,
    /// The container's standard error (and `docker logs` complaints, such as a missing
    /// container).
    Stderr,
    /// ServOS itself: this server's log could not be read, or lines were dropped.
    Error,
}

/// One redacted line of one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogChunk {
    /// The server's name.
    pub server: String,
    pub stream: LogStream,
    pub line: String,
}

/// The lines of every container of a service, as they come. Dropping it stops every
/// reader and kills their remote `docker logs`.
#[derive(Debug)]
pub struct ContainerLogs {
    rx: mpsc::Receiver<LogChunk>,
    _readers: JoinSet<()>,
}

impl ContainerLogs {
    /// The next line; `None` once every reader has ended (never, while following a
    /// reachable server).
    pub async fn next(&mut self) -> Option<LogChunk> {
        self.rx.recv().await
    }
}

impl Engine {
    /// Starts reading the logs of the service's containers (see [`crate::service_logs`]).
    /// Fails before anything runs on a server when the service does not exist, has no
    /// running or stopped container, `tail` is too large, or its environment does not
    /// decrypt. Failures of one server arrive as a [`LogStream::Error`] line of it.
    pub async fn container_logs(
        &self,
        actor: &Actor,
        service_id: &str,
        req: LogsRequest,
    ) -> Result<ContainerLogs, DeployError> {
        let service = self.store().get_service(service_id).await?;
        if req.tail > docker::MAX_LOG_TAIL {
            return Err(DeployError::BadLogRequest {
                service: service.name.clone(),
                reason: format!(
                    "tail {} is more than the maximum of {} lines",
                    req.tail,
                    docker::MAX_LOG_TAIL
                ),
            });
        }
        let vars = self
            .store()
            .env_decrypted(&service.id)
            .await
            .map_err(|e| match e {
                servos_store::StoreError::Vault(_) => DeployError::LogsUnredactable {
                    service: service.name.clone(),
                    source: e,
                },
                other => DeployError::Store(other),
            })?;
        let mut redactor = Redactor::new();
        redactor.add(vars.iter().map(|(_, v)| v));
        let redactor = Arc::new(redactor);
        let placements = self.store().service_placements(&service.id).await?;
        if placements.is_empty() {
            return Err(DeployError::NoContainers {
                service: service.name.clone(),
            });
        }
        let (tx, rx) = mpsc::channel(CHANNEL_LINES);
        let mut readers = JoinSet::new();
        for p in placements {
            let server = self
                .store()
                .get_host(HostKind::Server, &p.server_id)
                .await?;
            let reader = Reader {
                engine: self.clone(),
                actor: actor.clone(),
                server_id: server.id,
                server: server.name,
                container: p.container,
                req,
                redactor: Arc::clone(&redactor),
                tx: tx.clone(),
                dropped: 0,
            };
            readers.spawn(reader.run());
        }
        Ok(ContainerLogs {
            rx,
            _readers: readers,
        })
    }
}

/// Reads one container's log on one server.
struct Reader {
    engine: Engine,
    actor: Actor,
    server_id: String,
    server: String,
    container: String,
    req: LogsRequest,
    redactor: Arc<Redactor>,
    tx: mpsc::Sender<LogChunk>,
    /// Lines not delivered because the reader was too slow, not reported yet.
    dropped: u64,
}

impl Reader {
    async fn run(mut self) {
        let session = match self
            .engine
            .session(HostKind::Server, &self.server_id, &self.actor)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                let text = format!("cannot read the log of container {}: {e}", self.container);
                self.send(LogStream::Error, &text);
                return;
            }
        };
        let cmd = docker::read_logs(&self.container, self.req.tail, self.req.follow);
        let mut out = LineSplitter::default();
        let mut err = LineSplitter::default();
        let result = session
            .exec_streaming(&cmd, None, |stream, data| {
                let (splitter, kind) = match stream {
                    Stream::Stdout => (&mut out, LogStream::Stdout),
                    Stream::Stderr => (&mut err, LogStream::Stderr),
                };
                for line in splitter.push(data) {
                    self.send(kind, &line);
                }
            })
            .await;
        if let Some(line) = out.finish() {
            self.send(LogStream::Stdout, &line);
        }
        if let Some(line) = err.finish() {
            self.send(LogStream::Stderr, &line);
        }
        match result {
            Ok(status) if status.success() => {}
            Ok(status) => {
                let text = format!(
                    "docker logs of container {} ended with {status}",
                    self.container
                );
                self.send(LogStream::Error, &text);
            }
            Err(e) => {
                let text = format!(
                    "reading the log of container {} failed: {}",
                    self.container,
                    command_detail(&e)
                );
                self.send(LogStream::Error, &text);
            }
        }
        if self.dropped > 0 {
            // The reader is gone or still slow: wait for room so this one is not lost.
            let chunk = self.chunk(LogStream::Error, &self.dropped_note());
            let _ = self.tx.send(chunk).await;
        }
    }

    fn dropped_note(&self) -> String {
        format!(
            "{} line(s) of container {} were dropped: the reader was too slow",
            self.dropped, self.container
        )
    }

    fn chunk(&self, stream: LogStream, line: &str) -> LogChunk {
        LogChunk {
            server: self.server.clone(),
            stream,
            line: self.redactor.redact(line),
        }
    }

    /// Redacts and queues one line without waiting: the SSH callback cannot wait, so a
    /// full queue drops the line (counted, and reported once there is room again).
    fn send(&mut self, stream: LogStream, line: &str) {
        if self.dropped > 0 {
            let note = self.chunk(LogStream::Error, &self.dropped_note());
            if self.tx.try_send(note).is_ok() {
                self.dropped = 0;
            }
        }
        let chunk = self.chunk(stream, line);
        if self.tx.try_send(chunk).is_err() {
            self.dropped += 1;
        }
    }
}

/// Cuts a byte stream into lines: `\n` ends a line (a trailing `\r` is removed), invalid
/// UTF-8 is replaced, and a line longer than [`MAX_LINE_BYTES`] is cut into pieces.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// The lines completed by `data`.
    pub fn push(&mut self, data: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &b in data {
            if b == b'\n' {
                lines.push(self.take());
            } else {
                self.pending.push(b);
                if self.pending.len() >= MAX_LINE_BYTES {
                    lines.push(self.take());
                }
            }
        }
        lines
    }

    /// What is left when the stream ends (a last line without `\n`).
    pub fn finish(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            None
        } else {
            Some(self.take())
        }
    }

    fn take(&mut self) -> String {
        let mut bytes = std::mem::take(&mut self.pending);
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_across_chunks_with_crlf_and_bad_utf8() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"one\r\ntw"), vec!["one".to_owned()]);
        assert_eq!(
            s.push(b"o\n\nthr\xffee"),
            vec!["two".to_owned(), String::new()]
        );
        assert_eq!(s.finish(), Some("thr\u{fffd}ee".to_owned()));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn long_lines_are_cut() {
        let mut s = LineSplitter::default();
        let long = vec![b'a'; MAX_LINE_BYTES + 3];
        let lines = s.push(&long);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), MAX_LINE_BYTES);
        assert_eq!(s.finish(), Some("aaa".to_owned()));
    }

    #[test]
    fn a_chunk_serialises_as_server_stream_line() {
        let c = LogChunk {
            server: "web-1".into(),
            stream: LogStream::Stderr,
            line: "x".into(),
        };
        assert_eq!(
            serde_json::to_string(&c).unwrap_or_default(),
            r#"{"server":"web-1","stream":"stderr","line":"x"}"#
        );
    }
}
