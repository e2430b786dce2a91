//! `TestkitError`: why a test host could not be built or operated, with the command and
//! its output, and what to do about a missing tool.

use std::fmt;

/// What to tell a developer whose machine lacks a tool.
pub const INSTALL_HINT: &str = "run scripts/install-test-deps.sh (as root) first";

/// Errors of the test kit. `Debug` prints the same text as `Display`, so that a test's
/// `.unwrap()` shows a readable message instead of a struct dump.
#[derive(thiserror::Error)]
pub enum TestkitError {
    /// Test hosts need namespaces, veths and mounts.
    #[error("the test kit needs root (uid 0) to create network namespaces; running as uid {uid}")]
    NotRoot { uid: String },

    /// A required program is not installed.
    #[error("{tool} is not installed (needed for {purpose}); {hint}", hint = INSTALL_HINT)]
    MissingTool { tool: String, purpose: String },

    /// All 255 subnets 10.250.0-254.0/24 are taken by live test runs.
    #[error(
        "no free test subnet: all of 10.250.0.0/24 … 10.250.254.0/24 are used by running tests"
    )]
    NoFreeSlot,

    /// A command exited unsuccessfully.
    #[error("`{command}` failed with {status}: {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },

    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// A daemon did not become ready.
    #[error("{daemon} on test host {host} did not become ready within {seconds}s; its log:\n{log}")]
    NotReady {
        daemon: String,
        host: String,
        seconds: u64,
        log: String,
    },

    /// An operation that needs dockerd on a host built without `.with_docker()`.
    #[error("test host {host} has no dockerd: build the TestNet with .with_docker()")]
    NoDocker { host: String },
}

impl fmt::Debug for TestkitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl TestkitError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}
