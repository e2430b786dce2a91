//! ServOS engine: for now, commissioning and checks of servers and builders over SSH
//! (deploys, builds and rollbacks will join it).
//!
//! - [`commission`]: [`Engine`], the one place that opens SSH sessions to a stored host,
//!   enforcing its pinned host key or pinning it on first use; [`Engine::check`].
//! - [`remote`]: the commands sent to hosts, built as data by pure functions.
//! - [`facts`]: [`Facts`] and the pure parser of the facts script's output.
//! - [`error`]: [`DeployError`] and the table from failure to host status.
//!
//! Architecture invariants:
//! - Nothing outside [`Engine`] connects to a stored host: every session goes through the
//!   host's pinned fingerprint (or Trust On First Use, pinned before use), so there is no
//!   path that skips the host-key check.
//! - A stored key that does not decrypt ends the attempt; nothing else is ever tried.
//! - Command text sent to hosts comes only from [`remote`] (quoted by
//!   `servos_ssh::shell_quote`); this crate knows nothing about HTTP.

#![forbid(unsafe_code)]
// `DeployError` carries its context (host, address, both fingerprints, the SSH error) by
// value so callers can match on it; it only ever travels next to a network round trip,
// where a few hundred bytes on the stack cost nothing.
#![allow(clippy::result_large_err)]

pub mod commission;
pub mod error;
pub mod facts;
pub mod remote;

pub use commission::{CheckReport, DEFAULT_TIMEOUTS, Engine};
pub use error::DeployError;
pub use facts::Facts;
pub use servos_ssh::Timeouts;
