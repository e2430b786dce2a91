//! An authenticated SSH connection to one host, with host-key pinning checked inside the
//! handshake, and remote commands run over channels of that connection.
//!
//! A `Session` is `Send + Sync` and its methods take `&self`: share it as `Arc<Session>`
//! and run commands concurrently; each runs on its own channel.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Sig};
use servos_core::Secret;
use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc};

use crate::SshError;
use crate::command::RemoteCommand;
use crate::keys;

/// Where to connect and as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
}

impl Target {
    /// `host:port`, as used in error messages.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.user, self.addr())
    }
}

/// How the server's host key is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Only a key with this SHA256 fingerprint (`SHA256:…`, as `ssh-keygen -lf` prints it).
    Pin(String),
    /// Accept any key; the caller records [`Session::host_key_fingerprint`] and pins it
    /// from then on.
    TrustOnFirstUse,
}

/// Time limits of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect + SSH handshake + authentication.
    pub connect: Duration,
    /// Default limit for one command; [`RemoteCommand::timeout`] overrides it.
    pub command: Duration,
    /// Send a keepalive after this much silence from the server…
    pub keepalive_interval: Duration,
    /// …and close the connection after this many unanswered ones.
    pub keepalive_max: usize,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            command: Duration::from_secs(300),
            keepalive_interval: Duration::from_secs(15),
            keepalive_max: 3,
        }
    }
}

/// At most this many commands run at once on one connection; more wait for a free slot.
/// OpenSSH's default `MaxSessions` is 10 and refuses channels beyond it.
pub const MAX_CONCURRENT_CHANNELS: usize = 10;

/// Output beyond this many bytes per stream is dropped from [`Output`] (and flagged), so a
/// runaway command cannot exhaust the control plane's memory. Streaming sees everything.
pub const MAX_CAPTURED_BYTES: usize = 16 * 1024 * 1024;

/// How a remote command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    /// Exited with this code.
    Code(u32),
    /// Killed by this signal (name without `SIG`, e.g. `KILL`).
    Signal(String),
    /// The channel closed without an exit status.
    Unknown,
}

impl ExitStatus {
    pub fn success(&self) -> bool {
        *self == ExitStatus::Code(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "signal {s}"),
            ExitStatus::Unknown => f.write_str("no exit status"),
        }
    }
}

/// What a command printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Whether output beyond [`MAX_CAPTURED_BYTES`] was dropped.
    pub truncated: bool,
}

impl Output {
    pub fn stdout_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// `Ok(self)` if the command exited 0, otherwise [`SshError::CommandFailed`] with its
    /// stderr.
    pub fn checked(self, addr: &str, command: &RemoteCommand) -> Result<Self, SshError> {
        if self.status.success() {
            return Ok(self);
        }
        Err(SshError::CommandFailed {
            addr: addr.to_owned(),
            command: command.to_shell(),
            status: self.status.to_string(),
            stderr: self.stderr_lossy().trim().to_owned(),
        })
    }
}

/// Which stream a chunk of streamed output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Checks the server key against the policy during the handshake and remembers what it saw.
pub(crate) struct Verifier {
    policy: HostKeyPolicy,
    seen: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let public = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(cert) => cert.public_key().clone().into(),
        };
        let presented = keys::fingerprint(&public);
        let accept = match &self.policy {
            HostKeyPolicy::TrustOnFirstUse => true,
            HostKeyPolicy::Pin(expected) => *expected == presented,
        };
        *lock(&self.seen) = Some(presented);
        // Returning false aborts the key exchange: no authentication, no channel.
        Ok(accept)
    }
}

/// An authenticated SSH connection.
pub struct Session {
    /// Shared with the clean-up of abandoned commands (see [`Abandon`]).
    handle: Arc<Handle<Verifier>>,
    target: Target,
    fingerprint: String,
    timeouts: Timeouts,
    channels: Semaphore,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("target", &self.target)
            .field("fingerprint", &self.fingerprint)
            .field("closed", &self.handle.is_closed())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Connects, verifies the host key against `policy` inside the handshake, and
    /// authenticates with `key` (decrypted with `passphrase` if given). The private key
    /// stays in memory; it is never written anywhere.
    pub async fn connect(
        target: &Target,
        key: &Secret<String>,
        passphrase: Option<&Secret<String>>,
        policy: HostKeyPolicy,
        timeouts: Timeouts,
    ) -> Result<Session, SshError> {
        // Decode first: a wrong passphrase is reported without touching the network.
        let private = Arc::new(keys::decode_private_key(key, passphrase)?);
        let addr = target.addr();
        match tokio::time::timeout(
            timeouts.connect,
            Self::establish(target, private, policy, timeouts),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(SshError::ConnectTimeout {
                addr,
                after: timeouts.connect,
            }),
        }
    }

    async fn establish(
        target: &Target,
        private: Arc<russh::keys::PrivateKey>,
        policy: HostKeyPolicy,
        timeouts: Timeouts,
    ) -> Result<Session, SshError> {
        let addr = target.addr();
        let stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    SshError::ConnectionRefused { addr: addr.clone() }
                } else {
                    SshError::Unreachable {
                        addr: addr.clone(),
                        source: e,
                    }
                }
            })?;
        let _ = stream.set_nodelay(true);
        let config = Arc::new(client::Config {
            keepalive_interval: Some(timeouts.keepalive_interval),
            keepalive_max: timeouts.keepalive_max,
            nodelay: true,
            ..Default::default()
        });
        let seen = Arc::new(Mutex::new(None));
        let verifier = Verifier {
            policy: policy.clone(),
            seen: Arc::clone(&seen),
        };
        let handshake = client::connect_stream(config, stream, verifier).await;
        let fingerprint = lock(&seen).clone();
        let mut handle = match (handshake, &policy, fingerprint.as_ref()) {
            (Ok(handle), _, Some(_)) => handle,
            (Err(_), HostKeyPolicy::Pin(expected), Some(presented)) if expected != presented => {
                return Err(SshError::HostKeyMismatch {
                    addr,
                    expected: expected.clone(),
                    presented: presented.clone(),
                });
            }
            (Ok(_), _, None) => {
                return Err(SshError::Protocol {
                    addr,
                    reason: "the server presented no host key".to_owned(),
                });
            }
            (Err(e), _, _) => {
                return Err(SshError::Protocol {
                    addr,
                    reason: e.to_string(),
                });
            }
        };
        let fingerprint = fingerprint.unwrap_or_default();
        authenticate(&mut handle, target, private).await?;
        tracing::debug!(target = %target, %fingerprint, "SSH session established");
        Ok(Session {
            handle: Arc::new(handle),
            target: target.clone(),
            fingerprint,
            timeouts,
            channels: Semaphore::new(MAX_CONCURRENT_CHANNELS),
        })
    }

    /// The SHA256 fingerprint of the host key the server presented (`SHA256:…`).
    /// The connection itself, for other channel kinds (see [`crate::forward`]).
    pub(crate) fn handle(&self) -> &Handle<Verifier> {
        &self.handle
    }

    /// The session's time limits.
    pub(crate) fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    pub fn host_key_fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Whether the connection is gone (server closed it, keepalives unanswered…).
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Runs `cmd` and collects its output. A non-zero exit is not an error here; see
    /// [`Output::checked`].
    pub async fn exec(&self, cmd: &RemoteCommand) -> Result<Output, SshError> {
        self.exec_collect(cmd, None).await
    }

    /// Runs `cmd` with `stdin` sent to it, followed by EOF. This is how secrets reach a
    /// host: through stdin, never the command line.
    pub async fn exec_with_stdin(
        &self,
        cmd: &RemoteCommand,
        stdin: &[u8],
    ) -> Result<Output, SshError> {
        self.exec_collect(cmd, Some(stdin)).await
    }

    /// Runs `cmd`, handing each chunk of output to `on_output` as it arrives.
    ///
    /// On timeout the command's process group is killed over a second channel and its
    /// channel closed, so abandoned commands neither keep running nor pile up against the
    /// server's `MaxSessions`; that cleanup adds at most 2s to the timeout.
    ///
    /// The same happens when the returned future is dropped before the command ended (a
    /// cancelled follow such as `docker logs -f`): the clean-up then runs in a task of its
    /// own on the current Tokio runtime. Closing the channel alone would not be enough:
    /// OpenSSH keeps a command whose channel closed running until it next writes.
    pub async fn exec_streaming(
        &self,
        cmd: &RemoteCommand,
        stdin: Option<&[u8]>,
        mut on_output: impl FnMut(Stream, &[u8]) + Send,
    ) -> Result<ExitStatus, SshError> {
        let limit = cmd.timeout_override().unwrap_or(self.timeouts.command);
        let text = cmd.to_shell();
        tracing::debug!(target = %self.target, command = %text, "running remote command");
        let result = self.run_channel(&text, stdin, &mut on_output, limit).await;
        if let Err(SshError::CommandTimeout { .. }) = &result {
            tracing::warn!(target = %self.target, command = %text, ?limit, "remote command timed out");
        }
        result
    }

    /// Runs `cmd` and sends its stdout, chunk by chunk, into `stdout`; stderr goes to
    /// `on_stderr`. Backpressure: while `stdout` is full this stops reading the channel,
    /// so the SSH flow control stops the remote writer (nothing piles up in memory).
    /// If the receiving side goes away first, the command is killed and this fails.
    pub async fn exec_stdout_to(
        &self,
        cmd: &RemoteCommand,
        stdout: mpsc::Sender<Bytes>,
        mut on_stderr: impl FnMut(&[u8]) + Send,
    ) -> Result<ExitStatus, SshError> {
        let limit = cmd.timeout_override().unwrap_or(self.timeouts.command);
        let text = cmd.to_shell();
        tracing::debug!(target = %self.target, command = %text, "running remote command (stdout piped)");
        let mut sink = Sink::Pipe {
            stdout,
            stderr: &mut on_stderr,
        };
        self.run_channel_with(&text, Source::Bytes(None), &mut sink, limit)
            .await
    }

    /// Runs `cmd` with its stdin fed from `stdin` until that channel closes (then EOF),
    /// writing each chunk only as fast as the remote side's SSH window allows. Output is
    /// handed to `on_output`.
    pub async fn exec_stdin_from(
        &self,
        cmd: &RemoteCommand,
        stdin: mpsc::Receiver<Bytes>,
        mut on_output: impl FnMut(Stream, &[u8]) + Send,
    ) -> Result<ExitStatus, SshError> {
        let limit = cmd.timeout_override().unwrap_or(self.timeouts.command);
        let text = cmd.to_shell();
        tracing::debug!(target = %self.target, command = %text, "running remote command (stdin piped)");
        let mut sink = Sink::Callback(&mut on_output);
        self.run_channel_with(&text, Source::Pipe(stdin), &mut sink, limit)
            .await
    }

    /// Closes the connection politely.
    pub async fn close(&self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }

    async fn exec_collect(
        &self,
        cmd: &RemoteCommand,
        stdin: Option<&[u8]>,
    ) -> Result<Output, SshError> {
        let (mut stdout, mut stderr, mut truncated) = (Vec::new(), Vec::new(), false);
        let status = self
            .exec_streaming(cmd, stdin, |stream, data| {
                let buf = if stream == Stream::Stdout {
                    &mut stdout
                } else {
                    &mut stderr
                };
                let room = MAX_CAPTURED_BYTES.saturating_sub(buf.len());
                truncated |= data.len() > room;
                buf.extend_from_slice(&data[..data.len().min(room)]);
            })
            .await?;
        Ok(Output {
            status,
            stdout,
            stderr,
            truncated,
        })
    }

    async fn run_channel(
        &self,
        command: &str,
        stdin: Option<&[u8]>,
        on_output: &mut (dyn FnMut(Stream, &[u8]) + Send),
        limit: Duration,
    ) -> Result<ExitStatus, SshError> {
        let mut sink = Sink::Callback(on_output);
        self.run_channel_with(command, Source::Bytes(stdin), &mut sink, limit)
            .await
    }

    async fn run_channel_with(
        &self,
        command: &str,
        stdin: Source<'_>,
        sink: &mut Sink<'_>,
        limit: Duration,
    ) -> Result<ExitStatus, SshError> {
        let deadline = tokio::time::Instant::now() + limit;
        let timed_out = || SshError::CommandTimeout {
            addr: self.target.addr(),
            command: command.to_owned(),
            after: limit,
        };
        if self.handle.is_closed() {
            return Err(SshError::Disconnected {
                addr: self.target.addr(),
            });
        }
        let open = async {
            let permit = self
                .channels
                .acquire()
                .await
                .map_err(|e| self.failed(command, e.to_string()))?;
            let channel = self
                .handle
                .channel_open_session()
                .await
                .map_err(|e| self.channel_error(e, command))?;
            channel
                .exec(true, with_pid_report(command))
                .await
                .map_err(|e| self.channel_error(e, command))?;
            Ok::<_, SshError>((permit, channel))
        };
        let (_permit, channel) = tokio::time::timeout_at(deadline, open)
            .await
            .map_err(|_| timed_out())??;
        let (read, write) = channel.split();
        let write = Arc::new(write);
        // Stdin is written concurrently with reading output: a command that prints a lot
        // before reading all its input must not deadlock against the channel windows.
        let send_stdin = async {
            match stdin {
                Source::Bytes(Some(data)) => write
                    .data(data)
                    .await
                    .map_err(|e| self.channel_error(e, command))?,
                Source::Bytes(None) => {}
                Source::Pipe(mut rx) => {
                    while let Some(chunk) = rx.recv().await {
                        write
                            .data(&chunk[..])
                            .await
                            .map_err(|e| self.channel_error(e, command))?;
                    }
                }
            }
            write
                .eof()
                .await
                .map_err(|e| self.channel_error(e, command))
        };
        let pid = Arc::new(Mutex::new(PidReport::default()));
        // Armed until the command ended or timed out: if this future is dropped before
        // (the caller stopped following), the drop kills the command.
        let mut guard = Abandon {
            handle: Arc::clone(&self.handle),
            read: Some(read),
            write: Some(Arc::clone(&write)),
            pid: Arc::clone(&pid),
        };
        let read = &mut guard.read;
        let read_output = async {
            let mut status = ExitStatus::Unknown;
            while let Some(msg) = match read.as_mut() {
                Some(r) => r.wait().await,
                None => None,
            } {
                match msg {
                    ChannelMsg::Data { data } if !sink.stdout(&data).await => {
                        return Err(PipeClosed::Yes);
                    }
                    ChannelMsg::Data { .. } => {}
                    ChannelMsg::ExtendedData { data, ext: 1 } => {
                        let rest = lock(&pid).feed(&data);
                        if !rest.is_empty() {
                            sink.stderr(&rest);
                        }
                    }
                    ChannelMsg::ExitStatus { exit_status } => {
                        status = ExitStatus::Code(exit_status)
                    }
                    ChannelMsg::ExitSignal { signal_name, .. } => {
                        status = ExitStatus::Signal(signal_name_of(&signal_name))
                    }
                    ChannelMsg::Failure => {
                        return Err(PipeClosed::No(
                            self.failed(command, "the server refused to run the command"),
                        ));
                    }
                    ChannelMsg::Close => break,
                    _ => {}
                }
            }
            Ok(status)
        };
        let Ok((sent, status)) =
            tokio::time::timeout_at(deadline, async { tokio::join!(send_stdin, read_output) })
                .await
        else {
            // Best effort, bounded: the connection itself may be what hangs.
            let remote_pid = lock(&pid).pid;
            let _ = tokio::time::timeout(
                KILL_TIMEOUT,
                abandon(&self.handle, &write, remote_pid),
            )
            .await;
            guard.disarm();
            return Err(timed_out());
        };
        let status = match status {
            Ok(status) => status,
            Err(PipeClosed::No(e)) => {
                guard.disarm();
                return Err(e);
            }
            Err(PipeClosed::Yes) => {
                // Still armed: dropping the guard kills the command, which would otherwise
                // block forever on a full channel.
                drop(guard);
                return Err(self.failed(command, "the reader of its output went away"));
            }
        };
        guard.disarm();
        let leftover = lock(&pid).finish();
        if !leftover.is_empty() {
            sink.stderr(&leftover);
        }
        if status == ExitStatus::Unknown && self.handle.is_closed() {
            return Err(SshError::Disconnected {
                addr: self.target.addr(),
            });
        }
        // A command that exits without reading its stdin makes the write fail; its exit
        // status is what matters then.
        if status == ExitStatus::Unknown {
            sent?;
        }
        let _ = write.close().await;
        Ok(status)
    }

    fn failed(&self, command: &str, reason: impl Into<String>) -> SshError {
        SshError::Command {
            addr: self.target.addr(),
            command: command.to_owned(),
            reason: reason.into(),
        }
    }

    fn channel_error(&self, e: russh::Error, command: &str) -> SshError {
        if self.handle.is_closed() {
            SshError::Disconnected {
                addr: self.target.addr(),
            }
        } else {
            SshError::Command {
                addr: self.target.addr(),
                command: command.to_owned(),
                reason: e.to_string(),
            }
        }
    }
}

/// Where a command's stdin comes from.
enum Source<'a> {
    /// These bytes (or nothing), then EOF.
    Bytes(Option<&'a [u8]>),
    /// Chunks until the sender is dropped, then EOF.
    Pipe(mpsc::Receiver<Bytes>),
}

/// Where a command's output goes.
enum Sink<'a> {
    /// Both streams to one callback.
    Callback(&'a mut (dyn FnMut(Stream, &[u8]) + Send)),
    /// Stdout into a bounded channel (awaited: backpressure), stderr to a callback.
    Pipe {
        stdout: mpsc::Sender<Bytes>,
        stderr: &'a mut (dyn FnMut(&[u8]) + Send),
    },
}

impl Sink<'_> {
    /// Hands on a stdout chunk; `false` when the pipe's reader is gone.
    async fn stdout(&mut self, data: &[u8]) -> bool {
        match self {
            Sink::Callback(f) => {
                f(Stream::Stdout, data);
                true
            }
            Sink::Pipe { stdout, .. } => stdout.send(Bytes::copy_from_slice(data)).await.is_ok(),
        }
    }

    fn stderr(&mut self, data: &[u8]) {
        match self {
            Sink::Callback(f) => f(Stream::Stderr, data),
            Sink::Pipe { stderr, .. } => stderr(data),
        }
    }
}

/// Why reading a channel stopped early.
enum PipeClosed {
    /// The reader of a piped stdout went away.
    Yes,
    No(SshError),
}

/// The clean-up of a command nobody waits for any more: sends it `KILL`, closes its
/// channel and kills its process group over a channel of its own (OpenSSH refuses the
/// "signal" request for root sessions, hence the extra channel). Dropped while armed (the
/// future of [`Session::exec_streaming`] was dropped mid-command), it does that in a task
/// of its own, bounded by [`KILL_TIMEOUT`].
struct Abandon {
    handle: Arc<Handle<Verifier>>,
    /// Read on drop until the command's pid is reported, if it was not yet.
    read: Option<ChannelReadHalf>,
    write: Option<Arc<ChannelWriteHalf<client::Msg>>>,
    pid: Arc<Mutex<PidReport>>,
}

impl Abandon {
    /// The command ended (or was cleaned up already): nothing to do on drop.
    fn disarm(&mut self) {
        self.write = None;
    }
}

impl Drop for Abandon {
    fn drop(&mut self) {
        let Some(write) = self.write.take() else {
            return;
        };
        let read = self.read.take();
        let pid = Arc::clone(&self.pid);
        let handle = Arc::clone(&self.handle);
        // Outside a runtime (process shutdown) nothing can be sent any more anyway.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(KILL_TIMEOUT, async {
                    let remote_pid = match read {
                        Some(read) => await_pid(read, &pid).await,
                        None => lock(&pid).pid,
                    };
                    abandon(&handle, &write, remote_pid).await;
                })
                .await;
            });
        }
    }
}

/// The pid the command reported, reading its stderr until it comes (a command dropped
/// right after its first output may not have reported it yet) or the channel closes.
async fn await_pid(mut read: ChannelReadHalf, pid: &Mutex<PidReport>) -> Option<u32> {
    loop {
        if let Some(p) = lock(pid).pid {
            return Some(p);
        }
        match read.wait().await {
            Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                lock(pid).feed(&data);
            }
            Some(ChannelMsg::Close) | None => return None,
            Some(_) => {}
        }
        if lock(pid).done {
            return lock(pid).pid;
        }
    }
}

/// Sends `KILL` on the command's channel, closes it, and kills the command's process group
/// (`remote_pid`, if it was reported) over a new channel.
async fn abandon(
    handle: &Handle<Verifier>,
    write: &ChannelWriteHalf<client::Msg>,
    remote_pid: Option<u32>,
) {
    let _ = write.signal(Sig::KILL).await;
    let _ = write.close().await;
    if let Some(remote_pid) = remote_pid {
        kill_process_group(handle, remote_pid).await;
    }
}

/// Kills the process group of an abandoned command, over a channel of its own.
async fn kill_process_group(handle: &Handle<Verifier>, pid: u32) {
    let Ok(channel) = handle.channel_open_session().await else {
        return;
    };
    let kill = RemoteCommand::new("kill")
        .args(["-s", "KILL", "--", &format!("-{pid}")])
        .to_shell();
    if channel.exec(true, kill).await.is_ok() {
        let (mut read, _write) = channel.split();
        while let Some(msg) = read.wait().await {
            if matches!(msg, ChannelMsg::Close) {
                break;
            }
        }
    }
}

async fn authenticate(
    handle: &mut Handle<Verifier>,
    target: &Target,
    private: Arc<russh::keys::PrivateKey>,
) -> Result<(), SshError> {
    let addr = target.addr();
    let protocol = |e: russh::Error| SshError::Protocol {
        addr: addr.clone(),
        reason: e.to_string(),
    };
    let hash = if private.algorithm().is_rsa() {
        // `None` means the server did not say; every OpenSSH since 7.2 takes SHA-256.
        match handle.best_supported_rsa_hash().await.map_err(protocol)? {
            Some(hash) => hash,
            None => Some(HashAlg::Sha256),
        }
    } else {
        None
    };
    let result = handle
        .authenticate_publickey(
            target.user.clone(),
            PrivateKeyWithHashAlg::new(private, hash),
        )
        .await
        .map_err(protocol)?;
    if result.success() {
        Ok(())
    } else {
        Err(SshError::AuthRejected {
            user: target.user.clone(),
            addr: target.addr(),
        })
    }
}

/// How long cleaning up after a timed-out command may take.
const KILL_TIMEOUT: Duration = Duration::from_secs(2);

const PID_PREFIX: &str = "servos-pid:";

/// The text actually sent: reports the shell's pid on the first stderr line, then `exec`s
/// the command in its place. sshd makes that pid a process group leader, so a timed-out
/// command and its children can be killed with `kill -s KILL -- -PID`.
fn with_pid_report(command: &str) -> String {
    format!(
        "echo {PID_PREFIX}$$ >&2; exec sh -c {}",
        crate::command::shell_quote(command)
    )
}

/// Strips the pid line that [`with_pid_report`] prints to stderr. Lines before it (a
/// chatty `.bashrc`, say) are passed through; after a few lines without it, give up.
#[derive(Default)]
struct PidReport {
    pid: Option<u32>,
    done: bool,
    lines_seen: usize,
    pending: Vec<u8>,
}

impl PidReport {
    const MAX_LINES: usize = 32;
    const MAX_LINE: usize = 4096;

    /// Takes stderr bytes; returns those that belong to the command.
    fn feed(&mut self, data: &[u8]) -> Vec<u8> {
        if self.done {
            return data.to_vec();
        }
        self.pending.extend_from_slice(data);
        let mut passed = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let pid = std::str::from_utf8(&line[..end])
                .ok()
                .and_then(|l| l.strip_prefix(PID_PREFIX))
                .and_then(|p| p.parse().ok());
            if let Some(pid) = pid {
                self.pid = Some(pid);
                passed.extend(self.finish());
                return passed;
            }
            passed.extend(line);
            self.lines_seen += 1;
            if self.lines_seen >= Self::MAX_LINES {
                passed.extend(self.finish());
                return passed;
            }
        }
        if self.pending.len() > Self::MAX_LINE {
            passed.extend(self.finish());
        }
        passed
    }

    /// Returns whatever is still held back (stderr that never completed a line).
    fn finish(&mut self) -> Vec<u8> {
        self.done = true;
        std::mem::take(&mut self.pending)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn signal_name_of(sig: &Sig) -> String {
    match sig {
        Sig::Custom(name) => name.clone(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sent_text_reports_the_pid_then_execs_the_quoted_command() {
        assert_eq!(
            with_pid_report("echo 'a b'"),
            r#"echo servos-pid:$$ >&2; exec sh -c 'echo '\''a b'\'''"#
        );
    }

    #[test]
    fn the_pid_line_is_stripped_from_stderr_even_when_split() {
        let mut r = PidReport::default();
        assert_eq!(r.feed(b"servos-p"), b"");
        assert_eq!(r.feed(b"id:4242\nwarn"), b"warn");
        assert_eq!(r.feed(b"ing\n"), b"ing\n");
        assert_eq!(r.pid, Some(4242));
    }

    #[test]
    fn lines_before_the_pid_line_are_passed_through() {
        let mut r = PidReport::default();
        assert_eq!(
            r.feed(b"bashrc says hi\nservos-pid:7\nreal"),
            b"bashrc says hi\nreal"
        );
        assert_eq!(r.pid, Some(7));
    }

    #[test]
    fn stderr_without_a_pid_line_is_passed_through() {
        let mut r = PidReport::default();
        let many = "x\n".repeat(PidReport::MAX_LINES);
        assert_eq!(r.feed(many.as_bytes()), many.as_bytes());
        assert_eq!(r.feed(b"servos-pid:9\n"), b"servos-pid:9\n");
        assert_eq!(r.pid, None);
        let mut short = PidReport::default();
        assert_eq!(short.feed(b"partial"), b"");
        assert_eq!(short.finish(), b"partial");
    }
}
