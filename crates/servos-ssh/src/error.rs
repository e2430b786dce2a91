//! `SshError`: every way a key, a connection or a remote command can fail, with the
//! offending value in each variant.

use std::time::Duration;

/// How to clear a pinned fingerprint after a legitimate host-key change. Kept in one place
/// so the CLI, the API and this message never disagree.
pub const RESET_FINGERPRINT_HINT: &str = "if the host was legitimately reinstalled or its key rotated, \
     reset the pinned fingerprint with `servos servers reset-fingerprint NAME` \
     or `POST /api/v1/servers/{id}/fingerprint/reset`";

/// Errors of the SSH client crate.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The text is not an SSH private key at all.
    #[error("not an SSH private key (expected an OpenSSH or PEM private key): {reason}")]
    NotAKey { reason: String },

    /// A well-formed key of a type ServOS does not use.
    #[error("unsupported key type {key_type}: use an Ed25519 or RSA key")]
    UnsupportedKeyType { key_type: String },

    /// The key is encrypted and no passphrase was given.
    #[error("the private key is protected by a passphrase: provide its passphrase")]
    PassphraseRequired,

    /// The key is encrypted and the given passphrase does not decrypt it.
    #[error("wrong passphrase: it does not decrypt the private key")]
    WrongPassphrase,

    /// An `authorized_keys`-style public key line that does not parse (`line` is shown
    /// escaped and quoted).
    #[error("invalid public key line {line}: {reason}")]
    InvalidPublicKey { line: String, reason: String },

    /// Key generation or encoding failed (should not happen with a working RNG).
    #[error("could not generate an Ed25519 key pair: {reason}")]
    KeyGeneration { reason: String },

    /// No route to the host, network unreachable, or another connect-time IO error.
    #[error("cannot reach {addr}: {source}")]
    Unreachable {
        addr: String,
        #[source]
        source: std::io::Error,
    },

    /// The host answered but nothing listens on the port.
    #[error("connection to {addr} refused: is sshd running and listening on that port")]
    ConnectionRefused { addr: String },

    /// TCP connect plus SSH handshake plus authentication did not finish in time.
    #[error("connecting to {addr} timed out after {after:?}")]
    ConnectTimeout { addr: String, after: Duration },

    /// The host presented a key whose fingerprint differs from the pinned one. The
    /// handshake was aborted before authentication: nothing ran on the host.
    #[error(
        "host key of {addr} does not match the pinned fingerprint: expected {expected}, \
         presented {presented}; the connection was refused and nothing ran on the host; \
         {hint}",
        hint = RESET_FINGERPRINT_HINT
    )]
    HostKeyMismatch {
        addr: String,
        expected: String,
        presented: String,
    },

    /// The server refused the key for this user.
    #[error("{user}@{addr} rejected the public key authentication: is the key in authorized_keys")]
    AuthRejected { user: String, addr: String },

    /// The SSH protocol exchange failed (bad banner, no common algorithm, dropped link...).
    #[error("SSH session with {addr} failed: {reason}")]
    Protocol { addr: String, reason: String },

    /// The connection is closed (server gone, keepalive timeout); reconnect.
    #[error("SSH connection to {addr} is closed")]
    Disconnected { addr: String },

    /// A remote command did not finish within its timeout.
    #[error("command `{command}` on {addr} did not finish within {after:?}")]
    CommandTimeout {
        addr: String,
        command: String,
        after: Duration,
    },

    /// A command ran and exited unsuccessfully (from [`crate::session::Output::checked`]).
    #[error("command `{command}` on {addr} failed with {status}: {stderr}")]
    CommandFailed {
        addr: String,
        command: String,
        status: String,
        stderr: String,
    },

    /// Opening the channel or running the command failed at the protocol level.
    #[error("command `{command}` on {addr} failed: {reason}")]
    Command {
        addr: String,
        command: String,
        reason: String,
    },
}
