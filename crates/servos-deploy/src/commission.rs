//! Commissioning and checks of servers and builders, and the SSH sessions the rest of the
//! engine uses: the one place that opens SSH sessions to a stored host.
//!
//! Trust: a host with a pinned fingerprint is only ever connected to with
//! [`HostKeyPolicy::Pin`]; a host without one is connected to with Trust On First Use and
//! the fingerprint it presented is pinned before the session is handed out. A mismatch is
//! refused inside the handshake (by `servos-ssh`), marks the host `host_key_mismatch` and
//! writes an audit event naming both fingerprints.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use servos_core::model::ServerStatus;
use servos_ssh::{
    HostKeyPolicy, Output, RemoteCommand, Session, SshError, SshPool, Target, Timeouts,
};
use servos_store::audit::Event;
use servos_store::hosts::{HostCredentials, HostKind, HostRecord};
use servos_store::{Actor, Store, StoreError};

use crate::deploy::{DeploySettings, DeployState};
use crate::error::{DeployError, reset_hint};
use crate::facts::{self, Facts, Measured};
use crate::remote;

/// Connect (TCP + handshake + authentication) within 10 s; commands within 60 s unless
/// they say otherwise; a silent connection is dropped after 3 unanswered keepalives 15 s
/// apart.
pub const DEFAULT_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(10),
    command: Duration::from_secs(60),
    keepalive_interval: Duration::from_secs(15),
    keepalive_max: 3,
};

/// The engine. Cheap to clone: clones share the store and the connection pool.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// Keyed by host id (server and builder ids are UUIDs, unique across both tables).
    ssh: SshPool<String>,
    timeouts: Timeouts,
    deploy: DeployState,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("timeouts", &self.inner.timeouts)
            .field("live_sessions", &self.inner.ssh.live())
            .finish_non_exhaustive()
    }
}

/// The outcome of [`Engine::check`]: the host as stored afterwards, the facts gathered if
/// the check succeeded, and what went wrong if it did not.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub host: HostRecord,
    pub facts: Option<Facts>,
    pub error: Option<String>,
}

impl Engine {
    pub fn new(store: Store) -> Self {
        Self::with_timeouts(store, DEFAULT_TIMEOUTS)
    }

    pub fn with_timeouts(store: Store, timeouts: Timeouts) -> Self {
        Self::with_settings(store, timeouts, DeploySettings::default())
    }

    /// An engine whose deploys wait for health as `settings` say.
    pub fn with_settings(store: Store, timeouts: Timeouts, settings: DeploySettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                ssh: SshPool::new(),
                timeouts,
                deploy: DeployState::new(settings),
            }),
        }
    }

    pub(crate) fn deploy_state(&self) -> &DeployState {
        &self.inner.deploy
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Connects now over a new connection (the first time: pins the host key), measures
    /// the latency, prepares `/var/lib/servos`, sweeps stale env files and gathers facts,
    /// then records the status: `ready` with the facts, or `unreachable`, `error` or
    /// `host_key_mismatch` with the reason. A host that cannot be reached is not an `Err`:
    /// the report says why. `Err` means the store failed or the host does not exist.
    pub async fn check(
        &self,
        kind: HostKind,
        id_or_name: &str,
        actor: &Actor,
    ) -> Result<CheckReport, DeployError> {
        let record = self.store().get_host(kind, id_or_name).await?;
        let (facts, error) = match self.commission(kind, &record, actor).await {
            Ok(facts) => (Some(facts), None),
            Err(DeployError::Store(e)) => return Err(DeployError::Store(e)),
            Err(e) => {
                tracing::warn!(kind = kind.noun(), host = %record.name, error = %e, "check failed");
                self.record_failure(kind, &record, actor, &e).await?;
                (None, Some(e.to_string()))
            }
        };
        let host = self.store().get_host(kind, &record.id).await?;
        Ok(CheckReport { host, facts, error })
    }

    /// A session for other engine parts (deploys), reused from the pool while it lives.
    /// A new connection pins the host key on first use and prepares the host's directories
    /// before it is handed out. A host marked `host_key_mismatch` is refused without
    /// connecting until an admin resets its fingerprint (or a check finds the pinned key
    /// again); a new mismatch marks the host and is audited.
    pub async fn session(
        &self,
        kind: HostKind,
        id: &str,
        actor: &Actor,
    ) -> Result<Arc<Session>, DeployError> {
        let record = self.store().get_host(kind, id).await?;
        if record.status == ServerStatus::HostKeyMismatch.as_str() {
            self.forget(&record.id);
            return Err(DeployError::MarkedMismatch {
                kind: kind.noun(),
                name: record.name.clone(),
                reason: record.status_reason.clone().unwrap_or_default(),
            });
        }
        match self.open(kind, &record, actor).await {
            Ok(session) => Ok(session),
            Err(e) => {
                if let Err(store) = self.record_failure(kind, &record, actor, &e).await {
                    tracing::error!(kind = kind.noun(), host = %record.name, error = %e, %store, "cannot record the failure");
                }
                Err(e)
            }
        }
    }

    /// Drops the pooled connection of host `id` (after a fingerprint reset or deletion);
    /// the next [`Engine::session`] connects anew. Holders of the old session keep it.
    pub fn forget(&self, id: &str) {
        self.inner.ssh.forget(&id.to_owned());
    }

    async fn commission(
        &self,
        kind: HostKind,
        record: &HostRecord,
        actor: &Actor,
    ) -> Result<Facts, DeployError> {
        let who = Who::of(kind, record)?;
        let (session, _) = self.connect(&who, record, actor, Reuse::Never).await?;
        let started = Instant::now();
        run(&who, &session, "measuring latency", &remote::probe()).await?;
        let latency_ms = (started.elapsed().as_secs_f64() * 100_000.0).round() / 100.0;
        let swept = prepare(&who, &session).await?;
        let out = run(&who, &session, "gathering facts", &remote::gather_facts()).await?;
        let measured = Measured {
            latency_ms,
            stale_secret_files_removed: swept,
            checked_at: servos_store::now(),
        };
        let facts =
            facts::parse(&out.stdout_lossy(), measured).map_err(|reason| who.facts(reason))?;
        let json = serde_json::to_string(&facts).map_err(|e| who.facts(e.to_string()))?;
        self.store()
            .set_host_status(kind, &who.id, ServerStatus::Ready, None, Some(&json))
            .await?;
        tracing::info!(kind = kind.noun(), host = %who.name, os = %facts.os, docker = %facts.docker_status, "host checked");
        Ok(facts)
    }

    async fn open(
        &self,
        kind: HostKind,
        record: &HostRecord,
        actor: &Actor,
    ) -> Result<Arc<Session>, DeployError> {
        let who = Who::of(kind, record)?;
        let (session, fresh) = self.connect(&who, record, actor, Reuse::Pooled).await?;
        if fresh {
            prepare(&who, &session).await?;
            if record.status != ServerStatus::Ready.as_str() {
                self.store()
                    .set_host_status(kind, &who.id, ServerStatus::Ready, None, None)
                    .await?;
            }
        }
        Ok(session)
    }

    /// Decrypts the credentials (a failure ends here: nothing else is ever tried), then
    /// gets a session from the pool or connects with the policy the record demands, and
    /// pins the host key on first use. Returns whether the session is a new connection.
    async fn connect(
        &self,
        who: &Who,
        record: &HostRecord,
        actor: &Actor,
        reuse: Reuse,
    ) -> Result<(Arc<Session>, bool), DeployError> {
        let creds = self
            .store()
            .host_credentials(who.kind, &who.id)
            .await
            .map_err(|e| match e {
                StoreError::Vault(_) => who.credentials(e),
                other => DeployError::Store(other),
            })?;
        let policy = match &record.host_key_fingerprint {
            Some(fp) => HostKeyPolicy::Pin(fp.clone()),
            None => HostKeyPolicy::TrustOnFirstUse,
        };
        if reuse == Reuse::Never {
            self.forget(&who.id);
        }
        let (mut session, mut fresh) = self.pooled(who, &creds, policy.clone()).await?;
        // A pooled connection made before the record changed (pin reset or re-pinned,
        // address edited) is not reused: a reset must lead to a new first use.
        if !fresh && !matches_record(&session, &who.target, record) {
            self.forget(&who.id);
            (session, fresh) = self.pooled(who, &creds, policy).await?;
        }
        if record.host_key_fingerprint.is_none() {
            self.pin(who, actor, &session).await?;
        }
        Ok((session, fresh))
    }

    async fn pooled(
        &self,
        who: &Who,
        creds: &HostCredentials,
        policy: HostKeyPolicy,
    ) -> Result<(Arc<Session>, bool), DeployError> {
        let mut fresh = false;
        let timeouts = self.inner.timeouts;
        let session = self
            .inner
            .ssh
            .get(&who.id, || {
                fresh = true;
                Session::connect(
                    &who.target,
                    &creds.private_key,
                    creds.passphrase.as_ref(),
                    policy,
                    timeouts,
                )
            })
            .await
            .map_err(|e| who.connect_error(e))?;
        Ok((session, fresh))
    }

    /// Records the presented fingerprint as the trusted one. If a concurrent first use
    /// pinned first, only the same key may proceed.
    async fn pin(&self, who: &Who, actor: &Actor, session: &Session) -> Result<(), DeployError> {
        let presented = session.host_key_fingerprint();
        for _ in 0..2 {
            if self
                .store()
                .pin_host_key(who.kind, actor, &who.id, presented)
                .await?
            {
                tracing::info!(kind = who.noun(), host = %who.name, fingerprint = presented, "host key pinned on first use");
                return Ok(());
            }
            match self
                .store()
                .get_host(who.kind, &who.id)
                .await?
                .host_key_fingerprint
            {
                Some(pinned) if pinned == presented => return Ok(()),
                Some(pinned) => {
                    self.forget(&who.id);
                    return Err(who.mismatch(who.target.addr(), pinned, presented.to_owned()));
                }
                // Reset between our attempt and this read: try again.
                None => continue,
            }
        }
        Err(DeployError::Store(StoreError::Corrupt(format!(
            "the host key of {} {} is being reset and pinned concurrently",
            who.noun(),
            who.name
        ))))
    }

    /// Leaves the host in the status the failure implies, with the failure as reason, and
    /// audits a host-key mismatch. The pooled connection is dropped.
    async fn record_failure(
        &self,
        kind: HostKind,
        record: &HostRecord,
        actor: &Actor,
        err: &DeployError,
    ) -> Result<(), DeployError> {
        let Some(status) = err.host_status() else {
            return Ok(());
        };
        self.forget(&record.id);
        let reason = err.to_string();
        self.store()
            .set_host_status(kind, &record.id, status, Some(&reason), None)
            .await?;
        if let DeployError::HostKeyMismatch {
            addr,
            expected,
            presented,
            ..
        } = err
        {
            let action = format!("{}.host_key_mismatch", kind.noun());
            let detail = serde_json::json!({
                "name": record.name,
                "addr": addr,
                "expected_fingerprint": expected,
                "presented_fingerprint": presented,
            });
            self.store()
                .audit_now(
                    actor,
                    Event::new(&action, kind.noun(), &record.id).detail(detail),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reuse {
    /// Take the pooled connection if it is alive and still fits the record.
    Pooled,
    /// Connect anew (a check proves the host answers and still has its key now).
    Never,
}

fn matches_record(session: &Session, target: &Target, record: &HostRecord) -> bool {
    session.target() == target
        && record.host_key_fingerprint.as_deref() == Some(session.host_key_fingerprint())
}

/// Creates the state directories and sweeps stale env files; returns how many it removed.
async fn prepare(who: &Who, session: &Session) -> Result<u32, DeployError> {
    let out = run(
        who,
        session,
        "preparing /var/lib/servos",
        &remote::prepare_dirs(),
    )
    .await?;
    let swept = remote::count_swept(&out.stdout_lossy());
    if swept > 0 {
        tracing::warn!(kind = who.noun(), host = %who.name, swept, "removed env files left behind by a crash");
    }
    Ok(swept)
}

/// Runs one command; a non-zero exit is a failure of `step`.
async fn run(
    who: &Who,
    session: &Session,
    step: &'static str,
    cmd: &RemoteCommand,
) -> Result<Output, DeployError> {
    let addr = who.target.addr();
    session
        .exec(cmd)
        .await
        .and_then(|out| out.checked(&addr, cmd))
        .map_err(|source| who.remote(step, source))
}

/// The host being worked on, for connecting and for error messages.
struct Who {
    kind: HostKind,
    id: String,
    name: String,
    target: Target,
}

impl Who {
    fn of(kind: HostKind, record: &HostRecord) -> Result<Self, DeployError> {
        let port = u16::try_from(record.port).map_err(|_| DeployError::InvalidPort {
            kind: kind.noun(),
            name: record.name.clone(),
            port: record.port,
        })?;
        Ok(Self {
            kind,
            id: record.id.clone(),
            name: record.name.clone(),
            target: Target {
                host: record.host.clone(),
                port,
                user: record.ssh_user.clone(),
            },
        })
    }

    fn noun(&self) -> &'static str {
        self.kind.noun()
    }

    fn connect_error(&self, e: SshError) -> DeployError {
        match e {
            SshError::HostKeyMismatch {
                addr,
                expected,
                presented,
            } => self.mismatch(addr, expected, presented),
            source => DeployError::Connect {
                kind: self.noun(),
                name: self.name.clone(),
                source,
            },
        }
    }

    fn mismatch(&self, addr: String, expected: String, presented: String) -> DeployError {
        DeployError::HostKeyMismatch {
            kind: self.noun(),
            name: self.name.clone(),
            addr,
            expected,
            presented,
            hint: reset_hint(self.kind, &self.name, &self.id),
        }
    }

    fn credentials(&self, source: StoreError) -> DeployError {
        DeployError::Credentials {
            kind: self.noun(),
            name: self.name.clone(),
            source,
        }
    }

    fn remote(&self, step: &'static str, source: SshError) -> DeployError {
        DeployError::Remote {
            kind: self.noun(),
            name: self.name.clone(),
            addr: self.target.addr(),
            step,
            source,
        }
    }

    fn facts(&self, reason: String) -> DeployError {
        DeployError::Facts {
            kind: self.noun(),
            name: self.name.clone(),
            addr: self.target.addr(),
            reason,
        }
    }
}
