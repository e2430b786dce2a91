//! Commissioning and checks against real hosts (network namespaces with their own sshd
//! and dockerd) and a real store (SQLite, or PostgreSQL when SERVOS_TEST_DATABASE_URL is
//! set): Trust On First Use, pinning, refusal of changed host keys, and failure statuses.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use servos_core::MasterKey;
use servos_core::model::ProxyKind;
use servos_deploy::{DeployError, Engine, Facts, Timeouts};
use servos_ssh::RemoteCommand;
use servos_ssh::keys::{self, KeyPair};
use servos_store::audit::AuditRecord;
use servos_store::hosts::{HostKind, HostRecord, NewHost};
use servos_store::testing::TestDb;
use servos_store::{Actor, Store};
use servos_testkit::{TestHost, TestNet};

/// Short limits so that failure tests finish quickly.
fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        command: Duration::from_secs(30),
        keepalive_interval: Duration::from_secs(1),
        keepalive_max: 3,
    }
}

fn actor() -> Actor {
    Actor::user("admin", "127.0.0.1")
}

struct Fixture {
    net: TestNet,
    store: Store,
    engine: Engine,
    key: KeyPair,
    _db: TestDb,
}

impl Fixture {
    async fn new(net: TestNet) -> Self {
        let db = TestDb::new().await;
        let store = Store::open(&db.url, &MasterKey::generate().unwrap())
            .await
            .unwrap();
        let key = keys::generate_ed25519("servos-test").unwrap();
        for host in net.hosts() {
            host.authorize(&key.public_line).unwrap();
        }
        let engine = Engine::with_timeouts(store.clone(), timeouts());
        Self {
            net,
            store,
            engine,
            key,
            _db: db,
        }
    }

    async fn hosts(n: usize) -> Self {
        Self::new(TestNet::new(n).unwrap()).await
    }

    fn host(&self, i: usize) -> &TestHost {
        self.net.host(i)
    }

    /// Stores test host `i` under `name`, with this fixture's client key.
    async fn add(
        &self,
        kind: HostKind,
        name: &str,
        i: usize,
        fingerprint: Option<String>,
    ) -> HostRecord {
        self.add_with_key(kind, name, i, &self.key, fingerprint)
            .await
    }

    async fn add_with_key(
        &self,
        kind: HostKind,
        name: &str,
        i: usize,
        key: &KeyPair,
        fingerprint: Option<String>,
    ) -> HostRecord {
        let host = self.host(i);
        let new = NewHost {
            name: name.into(),
            host: host.addr().to_string(),
            port: host.ssh_port(),
            user: "root".into(),
            private_key: key.private_openssh.clone(),
            passphrase: None,
            public_key: key.public_line.clone(),
            host_key_fingerprint: fingerprint,
            proxy: if kind == HostKind::Server {
                ProxyKind::Traefik
            } else {
                ProxyKind::None
            },
        };
        self.store.create_host(kind, &actor(), new).await.unwrap()
    }

    async fn record(&self, kind: HostKind, name: &str) -> HostRecord {
        self.store.get_host(kind, name).await.unwrap()
    }

    async fn events(&self, action: &str) -> Vec<AuditRecord> {
        let all = self.store.audit_list(1000, None).await.unwrap();
        all.into_iter().filter(|e| e.action == action).collect()
    }
}

fn sh(host: &TestHost, script: &str) -> String {
    let out = host.exec(script).unwrap();
    assert!(
        out.status.success(),
        "`{script}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn exists_on(host: &TestHost, path: &str) -> bool {
    host.exec(&format!("test -e '{path}'"))
        .unwrap()
        .status
        .success()
}

fn sshd_log_lines(host: &TestHost, needle: &str) -> usize {
    let log = std::fs::read_to_string(host.dir().join("sshd.log")).unwrap_or_default();
    log.lines().filter(|l| l.contains(needle)).count()
}

/// Logins sshd accepted: a command can only run after one.
fn accepted_logins(host: &TestHost) -> usize {
    sshd_log_lines(host, "Accepted publickey")
}

/// TCP connections sshd saw at all.
fn connections(host: &TestHost) -> usize {
    sshd_log_lines(host, "Connection from")
}

/// An env file in the secrets dir last modified `minutes` ago.
fn plant_env_file(host: &TestHost, name: &str, minutes: u32) {
    sh(
        host,
        &format!(
            "mkdir -p /var/lib/servos/secrets && touch -d '{minutes} minutes ago' /var/lib/servos/secrets/{name}"
        ),
    );
}

fn detail(event: &AuditRecord) -> serde_json::Value {
    serde_json::from_str(&event.detail).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commissioning_pins_the_fingerprint_ssh_keygen_prints_and_prepares_the_host() {
    let f = Fixture::hosts(1).await;
    let host = f.host(0);
    let created = f.add(HostKind::Server, "web-1", 0, None).await;
    assert_eq!(created.status, "pending");
    assert_eq!(created.host_key_fingerprint, None);

    let report = f
        .engine
        .check(HostKind::Server, "web-1", &actor())
        .await
        .unwrap();

    assert_eq!(report.error, None);
    let expected = host.host_key_fingerprint().unwrap();
    assert_eq!(
        report.host.host_key_fingerprint.as_deref(),
        Some(expected.as_str())
    );
    assert_eq!(report.host.status, "ready");
    assert_eq!(report.host.status_reason, None);
    assert!(report.host.last_checked_at.is_some());

    let facts = report.facts.clone().unwrap();
    let pretty = sh(host, ". /etc/os-release && printf '%s' \"$PRETTY_NAME\"");
    assert_eq!(facts.os, pretty);
    assert_eq!(facts.arch, sh(host, "uname -m"));
    assert_eq!(facts.kernel, sh(host, "uname -r"));
    assert!(facts.disk_free_bytes > 0, "{facts:?}");
    assert!(
        facts.latency_ms >= 0.0 && facts.latency_ms < 1000.0,
        "{facts:?}"
    );
    assert_eq!(facts.stale_secret_files_removed, 0);
    // This host runs no dockerd, but the docker CLI is installed on the test machine.
    assert_eq!(facts.docker, None);
    assert!(
        facts
            .docker_status
            .starts_with("installed but daemon not reachable: ")
            && facts
                .docker_status
                .contains("Cannot connect to the Docker daemon"),
        "{}",
        facts.docker_status
    );
    let stored: Facts = serde_json::from_str(report.host.facts.as_deref().unwrap()).unwrap();
    assert_eq!(stored, facts);

    assert_eq!(
        sh(
            host,
            "stat -c '%a %U %G %n' /var/lib/servos /var/lib/servos/secrets"
        ),
        "711 root root /var/lib/servos\n700 root root /var/lib/servos/secrets"
    );

    let pinned = f.events("server.host_key_pinned").await;
    assert_eq!(pinned.len(), 1);
    assert_eq!(pinned[0].object_id, created.id);
    assert_eq!(pinned[0].actor, "user:admin");
    assert_eq!(detail(&pinned[0])["fingerprint"], expected.as_str());

    // A second check connects with the pin and pins nothing new.
    let again = f
        .engine
        .check(HostKind::Server, &created.id, &actor())
        .await
        .unwrap();
    assert_eq!(again.error, None);
    assert_eq!(
        again.host.host_key_fingerprint.as_deref(),
        Some(expected.as_str())
    );
    assert_eq!(f.events("server.host_key_pinned").await.len(), 1);
    f.store.audit_verify().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_is_reported_with_the_version_of_the_running_daemon() {
    let f = Fixture::new(TestNet::builder().hosts(1).with_docker().build().unwrap()).await;
    f.add(HostKind::Server, "docker-1", 0, None).await;

    let report = f
        .engine
        .check(HostKind::Server, "docker-1", &actor())
        .await
        .unwrap();

    assert_eq!(report.error, None);
    let out = f
        .host(0)
        .docker_cli(&["version", "--format", "{{.Server.Version}}"])
        .unwrap();
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(!version.is_empty());
    let facts = report.facts.unwrap();
    assert_eq!(facts.docker, Some(version));
    assert_eq!(facts.docker_status, "running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_without_docker_installed_is_reported_as_not_installed() {
    let f = Fixture::hosts(1).await;
    let host = f.host(0);
    // Hide every docker binary inside this host's private mount namespace.
    sh(
        host,
        ": > /run/testhost/no-docker && chmod 644 /run/testhost/no-docker && \
         for d in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do \
           if [ -x \"$d/docker\" ]; then mount --bind /run/testhost/no-docker \"$d/docker\"; fi; \
         done",
    );
    f.add(HostKind::Server, "bare-1", 0, None).await;

    let report = f
        .engine
        .check(HostKind::Server, "bare-1", &actor())
        .await
        .unwrap();

    assert_eq!(report.error, None);
    let facts = report.facts.unwrap();
    assert_eq!(facts.docker, None);
    assert_eq!(facts.docker_status, "not installed");
    assert_eq!(report.host.status, "ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_sweeps_env_files_left_by_a_crash_and_keeps_fresh_ones() {
    let f = Fixture::hosts(1).await;
    let host = f.host(0);
    plant_env_file(host, "crashed.env", 30);
    plant_env_file(host, "in-flight.env", 1);
    plant_env_file(host, "old-notes.txt", 30);
    f.add(HostKind::Server, "web-1", 0, None).await;

    let report = f
        .engine
        .check(HostKind::Server, "web-1", &actor())
        .await
        .unwrap();

    assert_eq!(report.error, None);
    assert_eq!(report.facts.unwrap().stale_secret_files_removed, 1);
    assert!(!exists_on(host, "/var/lib/servos/secrets/crashed.env"));
    assert!(exists_on(host, "/var/lib/servos/secrets/in-flight.env"));
    assert!(exists_on(host, "/var/lib/servos/secrets/old-notes.txt"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_host_key_is_refused_nothing_runs_and_the_server_is_marked_until_reset() {
    let f = Fixture::hosts(1).await;
    let host = f.host(0);
    let created = f.add(HostKind::Server, "web-1", 0, None).await;
    let first = f
        .engine
        .check(HostKind::Server, "web-1", &actor())
        .await
        .unwrap();
    assert_eq!(first.error, None);
    let old = host.host_key_fingerprint().unwrap();

    // Left by a "crash": the engine's first command after connecting would delete it.
    plant_env_file(host, "crashed.env", 30);
    let new = host.replace_host_key().unwrap();
    assert_ne!(old, new);
    let logins_before = accepted_logins(host);

    let report = f
        .engine
        .check(HostKind::Server, "web-1", &actor())
        .await
        .unwrap();

    let error = report.error.clone().unwrap();
    assert_eq!(
        error,
        format!(
            "host key of server web-1 ({addr}:22) does not match the pinned fingerprint: \
             expected {old}, presented {new}; the connection was refused and nothing ran on the \
             host; if the host was legitimately reinstalled or its key rotated, reset the pinned \
             fingerprint with `servos servers reset-fingerprint web-1` or \
             `POST /api/v1/servers/{id}/fingerprint/reset`",
            addr = host.addr(),
            id = created.id,
        )
    );
    assert_eq!(report.host.status, "host_key_mismatch");
    assert_eq!(report.host.status_reason.as_deref(), Some(error.as_str()));
    assert_eq!(
        report.host.host_key_fingerprint.as_deref(),
        Some(old.as_str()),
        "the pin must not move"
    );
    assert!(report.facts.is_none());
    // The facts of the last good check are kept.
    assert_eq!(report.host.facts, first.host.facts);

    let events = f.events("server.host_key_mismatch").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].object_type, "server");
    assert_eq!(events[0].object_id, created.id);
    assert_eq!(events[0].actor, "user:admin");
    let d = detail(&events[0]);
    assert_eq!(d["expected_fingerprint"], old.as_str());
    assert_eq!(d["presented_fingerprint"], new.as_str());
    assert_eq!(d["name"], "web-1");

    // Nothing ran: sshd accepted no login, and the sweep never happened.
    assert_eq!(
        accepted_logins(host),
        logins_before,
        "sshd accepted a login despite the mismatch"
    );
    assert!(
        exists_on(host, "/var/lib/servos/secrets/crashed.env"),
        "a command ran despite the mismatch"
    );

    // Deploys are refused without even connecting while the server is marked.
    let connections_before = connections(host);
    let err = f
        .engine
        .session(HostKind::Server, "web-1", &actor())
        .await
        .unwrap_err();
    assert!(matches!(err, DeployError::MarkedMismatch { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("server web-1 is marked host_key_mismatch and is not connected to: {error}")
    );
    assert_eq!(connections(host), connections_before);

    // The admin resets the pin: the next check trusts the new key on first use.
    f.store
        .reset_host_key(HostKind::Server, &actor(), "web-1")
        .await
        .unwrap();
    f.engine.forget(&created.id);
    let after = f
        .engine
        .check(HostKind::Server, "web-1", &actor())
        .await
        .unwrap();
    assert_eq!(after.error, None);
    assert_eq!(after.host.status, "ready");
    assert_eq!(
        after.host.host_key_fingerprint.as_deref(),
        Some(new.as_str())
    );
    assert_eq!(after.facts.unwrap().stale_secret_files_removed, 1);
    assert!(!exists_on(host, "/var/lib/servos/secrets/crashed.env"));
    let pins = f.events("server.host_key_pinned").await;
    assert_eq!(pins.len(), 2);
    assert_eq!(
        detail(&pins[0])["fingerprint"],
        new.as_str(),
        "newest first"
    );
    f.store.audit_verify().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fingerprint_given_at_creation_is_enforced_from_the_very_first_connection() {
    let f = Fixture::hosts(2).await;
    let impostor = keys::generate_ed25519("other-host").unwrap();
    let wrong = keys::fingerprint_of_public_line(&impostor.public_line).unwrap();
    let right = f.host(1).host_key_fingerprint().unwrap();
    f.add(HostKind::Server, "wrong-pin", 0, Some(wrong.clone()))
        .await;
    f.add(HostKind::Server, "right-pin", 1, Some(right.clone()))
        .await;
    let connections_before = connections(f.host(0));

    let refused = f
        .engine
        .check(HostKind::Server, "wrong-pin", &actor())
        .await
        .unwrap();

    let presented = f.host(0).host_key_fingerprint().unwrap();
    assert_eq!(refused.host.status, "host_key_mismatch");
    let error = refused.error.unwrap();
    assert!(
        error.contains(&format!("expected {wrong}, presented {presented}")),
        "{error}"
    );
    assert_eq!(
        refused.host.host_key_fingerprint.as_deref(),
        Some(wrong.as_str())
    );
    assert!(
        connections(f.host(0)) > connections_before,
        "the engine did connect"
    );
    assert_eq!(
        accepted_logins(f.host(0)),
        0,
        "sshd accepted a login despite the mismatch"
    );
    assert!(
        !exists_on(f.host(0), "/var/lib/servos/secrets"),
        "a command ran despite the mismatch"
    );
    assert_eq!(f.events("server.host_key_mismatch").await.len(), 1);

    let accepted = f
        .engine
        .check(HostKind::Server, "right-pin", &actor())
        .await
        .unwrap();
    assert_eq!(accepted.error, None);
    assert_eq!(accepted.host.status, "ready");
    assert_eq!(
        accepted.host.host_key_fingerprint.as_deref(),
        Some(right.as_str())
    );
    assert!(
        f.events("server.host_key_pinned").await.is_empty(),
        "a given fingerprint is not pinned again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_host_does_not_authorize_leaves_the_server_in_error() {
    let f = Fixture::hosts(1).await;
    let stranger = keys::generate_ed25519("stranger").unwrap();
    f.add_with_key(HostKind::Server, "web-1", 0, &stranger, None)
        .await;

    let report = f
        .engine
        .check(HostKind::Server, "web-1", &actor())
        .await
        .unwrap();

    let expected = format!(
        "cannot connect to server web-1: root@{}:22 rejected the public key authentication: \
         is the key in authorized_keys",
        f.host(0).addr()
    );
    assert_eq!(report.error.as_deref(), Some(expected.as_str()));
    assert_eq!(report.host.status, "error");
    assert_eq!(
        report.host.status_reason.as_deref(),
        Some(expected.as_str())
    );
    // Authentication failed, so nothing is trusted: the host key is not pinned.
    assert_eq!(report.host.host_key_fingerprint, None);
    assert!(f.events("server.host_key_pinned").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_host_is_marked_unreachable_within_the_connect_timeout() {
    let f = Fixture::hosts(1).await;
    f.add(HostKind::Server, "web-1", 0, None).await;
    f.host(0).cut_off().unwrap();

    let started = Instant::now();
    let report = f
        .engine
        .check(HostKind::Server, "web-1", &actor())
        .await
        .unwrap();
    let took = started.elapsed();

    let expected = format!(
        "cannot connect to server web-1: connecting to {}:22 timed out after 2s",
        f.host(0).addr()
    );
    assert_eq!(report.error.as_deref(), Some(expected.as_str()));
    assert_eq!(report.host.status, "unreachable");
    assert_eq!(
        report.host.status_reason.as_deref(),
        Some(expected.as_str())
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_sshd_is_marked_unreachable_at_once() {
    let f = Fixture::hosts(1).await;
    f.add(HostKind::Server, "web-1", 0, None).await;
    f.host(0).stop().unwrap();

    let started = Instant::now();
    let report = f
        .engine
        .check(HostKind::Server, "web-1", &actor())
        .await
        .unwrap();
    let took = started.elapsed();

    let expected = format!(
        "cannot connect to server web-1: connection to {}:22 refused: is sshd running and listening on that port",
        f.host(0).addr()
    );
    assert_eq!(report.error.as_deref(), Some(expected.as_str()));
    assert_eq!(report.host.status, "unreachable");
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_key_that_does_not_decrypt_is_never_used_and_nothing_else_is_tried() {
    let f = Fixture::hosts(1).await;
    let a = f.add(HostKind::Server, "web-1", 0, None).await;
    let b = f.add(HostKind::Server, "web-2", 0, None).await;
    // Move web-2's ciphertext into web-1's row: it is sealed for another row, so it must
    // not open (the associated data names table, column and row id).
    let (foreign,): (String,) = sqlx::query_as("SELECT private_key_enc FROM servers WHERE id = $1")
        .bind(&b.id)
        .fetch_one(f.store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE servers SET private_key_enc = $1 WHERE id = $2")
        .bind(&foreign)
        .bind(&a.id)
        .execute(f.store.pool())
        .await
        .unwrap();

    // The test kit's readiness probe shows up as a connection too: count from here.
    let connections_before = connections(f.host(0));

    let report = f
        .engine
        .check(HostKind::Server, "web-1", &actor())
        .await
        .unwrap();

    let error = report.error.unwrap();
    assert!(
        error.starts_with("cannot decrypt the stored SSH credentials of server web-1: "),
        "{error}"
    );
    assert!(error.ends_with("; no connection was attempted"), "{error}");
    assert_eq!(report.host.status, "error");
    assert_eq!(
        connections(f.host(0)),
        connections_before,
        "the engine connected without its key"
    );
    let err = f
        .engine
        .session(HostKind::Server, "web-1", &actor())
        .await
        .unwrap_err();
    assert!(matches!(err, DeployError::Credentials { .. }), "{err}");
    assert_eq!(
        connections(f.host(0)),
        connections_before,
        "the engine connected without its key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builders_are_commissioned_pinned_and_refused_like_servers() {
    let f = Fixture::hosts(1).await;
    let host = f.host(0);
    let created = f.add(HostKind::Builder, "builder-1", 0, None).await;

    let report = f
        .engine
        .check(HostKind::Builder, "builder-1", &actor())
        .await
        .unwrap();
    assert_eq!(report.error, None);
    assert_eq!(report.host.status, "ready");
    let old = host.host_key_fingerprint().unwrap();
    assert_eq!(
        report.host.host_key_fingerprint.as_deref(),
        Some(old.as_str())
    );
    assert_eq!(report.facts.unwrap().arch, sh(host, "uname -m"));
    assert_eq!(f.events("builder.host_key_pinned").await.len(), 1);

    let new = host.replace_host_key().unwrap();
    let refused = f
        .engine
        .check(HostKind::Builder, "builder-1", &actor())
        .await
        .unwrap();
    assert_eq!(refused.host.status, "host_key_mismatch");
    let error = refused.error.unwrap();
    assert!(
        error.starts_with("host key of builder builder-1 "),
        "{error}"
    );
    assert!(
        error.contains(&format!("expected {old}, presented {new}")),
        "{error}"
    );
    assert!(
        error.contains("`servos builders reset-fingerprint builder-1`"),
        "{error}"
    );
    assert!(
        error.contains(&format!(
            "`POST /api/v1/builders/{}/fingerprint/reset`",
            created.id
        )),
        "{error}"
    );
    let events = f.events("builder.host_key_mismatch").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].object_type, "builder");
    assert_eq!(detail(&events[0])["presented_fingerprint"], new.as_str());

    f.store
        .reset_host_key(HostKind::Builder, &actor(), "builder-1")
        .await
        .unwrap();
    f.engine.forget(&created.id);
    let after = f
        .engine
        .check(HostKind::Builder, "builder-1", &actor())
        .await
        .unwrap();
    assert_eq!(after.error, None);
    assert_eq!(
        after.host.host_key_fingerprint.as_deref(),
        Some(new.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_pins_on_first_use_prepares_the_host_and_reuses_the_pooled_connection() {
    let f = Fixture::hosts(1).await;
    let host = f.host(0);
    let created = f.add(HostKind::Server, "web-1", 0, None).await;

    let first = f
        .engine
        .session(HostKind::Server, &created.id, &actor())
        .await
        .unwrap();

    assert_eq!(
        first.host_key_fingerprint(),
        host.host_key_fingerprint().unwrap()
    );
    let record = f.record(HostKind::Server, "web-1").await;
    assert_eq!(
        record.host_key_fingerprint.as_deref(),
        Some(first.host_key_fingerprint())
    );
    assert_eq!(record.status, "ready");
    assert_eq!(
        sh(host, "stat -c '%a %U' /var/lib/servos/secrets"),
        "700 root"
    );
    let out = first
        .exec(&RemoteCommand::new("echo").arg("deploy"))
        .await
        .unwrap();
    assert_eq!(out.stdout_lossy(), "deploy\n");

    let logins = accepted_logins(host);
    let second = f
        .engine
        .session(HostKind::Server, &created.id, &actor())
        .await
        .unwrap();
    assert!(
        Arc::ptr_eq(&first, &second),
        "the pooled connection was not reused"
    );
    assert_eq!(accepted_logins(host), logins);

    f.engine.forget(&created.id);
    let third = f
        .engine
        .session(HostKind::Server, &created.id, &actor())
        .await
        .unwrap();
    assert!(
        !Arc::ptr_eq(&first, &third),
        "forget did not drop the pooled connection"
    );
    assert_eq!(f.events("server.host_key_pinned").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fingerprint_reset_leads_to_a_new_first_use_even_if_the_pool_was_not_told() {
    let f = Fixture::hosts(1).await;
    let host = f.host(0);
    let created = f.add(HostKind::Server, "web-1", 0, None).await;
    let before = f
        .engine
        .session(HostKind::Server, "web-1", &actor())
        .await
        .unwrap();
    // The old connection outlives the key change (sshd keeps established sessions).
    let new = host.replace_host_key().unwrap();

    f.store
        .reset_host_key(HostKind::Server, &actor(), "web-1")
        .await
        .unwrap();
    let after = f
        .engine
        .session(HostKind::Server, &created.id, &actor())
        .await
        .unwrap();

    assert!(
        !Arc::ptr_eq(&before, &after),
        "the pre-reset connection was reused"
    );
    assert_eq!(after.host_key_fingerprint(), new);
    assert_eq!(
        f.record(HostKind::Server, "web-1")
            .await
            .host_key_fingerprint
            .as_deref(),
        Some(new.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_mismatch_found_by_session_marks_the_server_and_is_audited() {
    let f = Fixture::hosts(1).await;
    let host = f.host(0);
    let old = host.host_key_fingerprint().unwrap();
    f.add(HostKind::Server, "web-1", 0, Some(old.clone())).await;
    let new = host.replace_host_key().unwrap();

    let err = f
        .engine
        .session(HostKind::Server, "web-1", &actor())
        .await
        .unwrap_err();

    match &err {
        DeployError::HostKeyMismatch {
            expected,
            presented,
            ..
        } => {
            assert_eq!(expected, &old);
            assert_eq!(presented, &new);
        }
        other => panic!("expected HostKeyMismatch, got {other}"),
    }
    let record = f.record(HostKind::Server, "web-1").await;
    assert_eq!(record.status, "host_key_mismatch");
    assert_eq!(record.status_reason, Some(err.to_string()));
    assert_eq!(f.events("server.host_key_mismatch").await.len(), 1);
    assert_eq!(accepted_logins(host), 0);
}
