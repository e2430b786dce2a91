//! ServOS engine: commissioning and checks of servers and builders, and deploys of
//! services over SSH (builds from git will join it).
//!
//! - [`commission`]: [`Engine`], the one place that opens SSH sessions to a stored host,
//!   enforcing its pinned host key or pinning it on first use; [`Engine::check`].
//! - [`deploy`]: one deploy, server by server, with ephemeral secrets injection and health
//!   checks; [`runner`]: [`Runner`], the job loop with crash recovery; [`lifecycle`]:
//!   stop/start/restart/remove and rollback; [`logs`]/[`redact`]: redacted, stored and
//!   streamed deployment logs; [`service_logs`]: the redacted output of a service's
//!   containers on all its servers (`servos logs`).
//! - [`routing`]: domains through the server's reverse proxy (`servos-proxy`): the
//!   deploy's switch to a healthy new container, route sync and proxy status.
//! - [`remote`]: the commands sent to hosts, built as data by pure functions.
//! - [`facts`]: [`Facts`] and the pure parser of the facts script's output.
//! - [`error`]: [`DeployError`] and the table from failure to host status.
//!
//! Architecture invariants:
//! - Nothing outside [`Engine`] connects to a stored host: every session goes through the
//!   host's pinned fingerprint (or Trust On First Use, pinned before use), so there is no
//!   path that skips the host-key check.
//! - A stored key that does not decrypt ends the attempt; nothing else is ever tried.
//! - Secret values (env values, registry passwords) reach hosts only through SSH stdin,
//!   and every line streamed or stored by a deploy passes through its [`redact::Redactor`].
//! - Command text sent to hosts comes only from [`remote`] (quoted by
//!   `servos_ssh::shell_quote`); this crate knows nothing about HTTP.

#![forbid(unsafe_code)]
// `DeployError` carries its context (host, address, both fingerprints, the SSH error) by
// value so callers can match on it; it only ever travels next to a network round trip,
// where a few hundred bytes on the stack cost nothing.
#![allow(clippy::result_large_err)]

pub mod agent_install;
pub mod build;
pub mod commission;
pub mod deploy;
pub mod error;
pub mod facts;
pub mod lifecycle;
pub mod logs;
pub mod mesh_publish;
pub mod redact;
pub mod remote;
pub mod routing;
pub mod runner;
pub mod service_logs;

pub use commission::{CheckReport, DEFAULT_TIMEOUTS, Engine};
pub use deploy::{Checkpoint, DeploySettings, Pause};
pub use error::DeployError;
pub use facts::Facts;
pub use routing::RoutingSettings;
pub use runner::Runner;
pub use service_logs::{ContainerLogs, LogChunk, LogStream, LogsRequest};
pub use servos_ssh::Timeouts;
pub use servos_store::deployments::{DeploymentRecord, LogLine};
