//! Real test hosts for ServOS integration tests: each host is a network namespace on a
//! private bridge with its own mount namespace, sshd and, optionally, dockerd.
//!
//! ```no_run
//! # fn main() -> Result<(), servos_testkit::TestkitError> {
//! let net = servos_testkit::TestNet::new(2)?;
//! let host = net.host(0);
//! host.authorize("ssh-ed25519 AAAA… me")?;
//! let fingerprint = host.host_key_fingerprint()?;
//! # Ok(()) }
//! ```
//!
//! Needs root and the tools that `scripts/install-test-deps.sh` installs; without them
//! building a [`TestNet`] fails with a message saying so (tests are never skipped).
//!
//! Architecture invariant: used only as a dev-dependency; it knows nothing about ServOS
//! itself and drives only system tools (`ip`, `nsenter`, `unshare`, `sshd`, `dockerd`).

#![forbid(unsafe_code)]

mod cmd;
mod error;
mod git;
mod host;
mod names;
mod net;
mod slots;

pub use error::{INSTALL_HINT, TestkitError};
pub use git::{GitHttpServer, GitRequest, create_repository};
pub use host::TestHost;
pub use net::{TestNet, TestNetBuilder};
