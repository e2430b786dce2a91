//! ServOS SSH client: key handling, host-key pinning (TOFU), remote commands built as data.
//!
//! - [`keys`]: generate Ed25519 pairs, validate imported keys, fingerprints.
//! - [`command`]: [`RemoteCommand`] and the one quoting helper, [`command::shell_quote`].
//! - [`session`]: [`Session`], an authenticated connection whose host key was checked
//!   against a [`HostKeyPolicy`] during the handshake, before anything could run.
//! - [`forward`]: plain HTTP to a port bound to the host's loopback, through an SSH
//!   `direct-tcpip` channel (the proxy admin APIs), with no process started on the host.
//! - [`pool`]: [`SshPool`], one reused connection per server.
//!
//! Architecture invariant: this crate knows nothing about the database or HTTP. It never
//! writes a private key to disk and never puts one on a command line.

#![forbid(unsafe_code)]

pub mod command;
pub mod error;
pub mod forward;
pub mod keys;
pub mod pool;
pub mod session;

pub use command::{RemoteCommand, shell_quote};
pub use error::SshError;
pub use forward::{LocalHttpRequest, LocalHttpResponse};
pub use pool::SshPool;
pub use session::{ExitStatus, HostKeyPolicy, Output, Session, Stream, Target, Timeouts};
