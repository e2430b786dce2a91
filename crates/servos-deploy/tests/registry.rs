//! Deploys from a private registry: a real registry (Debian's `docker-registry`, htpasswd
//! auth, plain HTTP on the host's 127.0.0.1:5000) runs inside a test host with its own
//! dockerd and holds a locally made busybox image; the deploy must log in and pull it.
//! The right password deploys; a wrong one fails clearly and leaves no credentials behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use servos_core::model::TlsMode;
use servos_core::{MasterKey, Secret};
use servos_deploy::{DeploymentRecord, Engine};
use servos_ssh::keys;
use servos_store::records::CredentialKind;
use servos_store::services::{NewService, ServiceRecord};
use servos_store::testing::TestDb;
use servos_store::Store;
use servos_testkit::{TestHost, TestNet};

mod common;
use common::{actor, containers, docker, log_text, run_deploy, store_server, test_engine};

const REGISTRY: &str = "127.0.0.1:5000";
const IMAGE: &str = "127.0.0.1:5000/app:1";
const USER: &str = "svt-registry-user";
const PASSWORD: &str = "right-pw-5c1e9a07d3";
const WRONG_PASSWORD: &str = "wrong-pw-8b2f4d61ae";
/// Where the registry's files live inside the host (its state directory).
const REG_DIR: &str = "/run/testhost/registry";

fn sh(host: &TestHost, script: &str) -> String {
    let out = host.exec(script).unwrap();
    assert!(
        out.status.success(),
        "`{script}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A registry process running in a test host; killed on drop.
struct Registry {
    pid: String,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").arg(&self.pid).status();
    }
}

/// Starts `docker-registry serve` on the host's 127.0.0.1:5000 with htpasswd (bcrypt)
/// auth for `USER`/`PASSWORD` and filesystem storage, and waits until it answers.
fn start_registry(host: &TestHost) -> Registry {
    let config = format!(
        "version: 0.1\n\
         log:\n  level: warn\n\
         storage:\n  filesystem:\n    rootdirectory: {REG_DIR}/data\n\
         http:\n  addr: {REGISTRY}\n\
         auth:\n  htpasswd:\n    realm: servos-test\n    path: {REG_DIR}/htpasswd\n"
    );
    sh(
        host,
        &format!(
            "ip link set lo up && mkdir -p {REG_DIR}/data && \
             htpasswd -Bbn {USER} {PASSWORD} > {REG_DIR}/htpasswd && \
             cat > {REG_DIR}/config.yml <<'EOF'\n{config}EOF"
        ),
    );
    let pid = sh(
        host,
        &format!(
            "setsid docker-registry serve {REG_DIR}/config.yml \
             >{REG_DIR}/registry.log 2>&1 </dev/null & echo $!"
        ),
    );
    let registry = Registry { pid };
    let start = Instant::now();
    loop {
        let out = host
            .exec("bash -c 'exec 3<>/dev/tcp/127.0.0.1/5000' 2>/dev/null")
            .unwrap();
        if out.status.success() {
            return registry;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the registry did not come up: {}",
            sh(host, &format!("cat {REG_DIR}/registry.log"))
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Pushes a locally made busybox image to the registry as `IMAGE` (logged in through a
/// throw-away `DOCKER_CONFIG`), then deletes it locally so a deploy has to pull it.
fn push_image(host: &TestHost) {
    host.import_busybox_image("svt-src:1").unwrap();
    docker(host, &["tag", "svt-src:1", IMAGE]);
    let cfg = "/run/testhost/push-config";
    sh(
        host,
        &format!(
            "mkdir -p {cfg} && printf %s {PASSWORD} | DOCKER_CONFIG={cfg} docker login \
             --username {USER} --password-stdin {REGISTRY} >/dev/null && \
             DOCKER_CONFIG={cfg} docker push {IMAGE} >/dev/null; s=$?; rm -rf {cfg}; exit $s"
        ),
    );
    docker(host, &["rmi", IMAGE, "svt-src:1"]);
    assert!(
        !host
            .docker_cli(&["image", "inspect", IMAGE])
            .unwrap()
            .status
            .success(),
        "the image must not be present before the deploy"
    );
}

struct Fixture {
    net: TestNet,
    store: Store,
    engine: Engine,
    server: String,
    _registry: Registry,
    _db: TestDb,
}

impl Fixture {
    /// One host with dockerd, a registry holding `IMAGE`, stored as server `s0`.
    async fn new() -> Self {
        let net = TestNet::builder().hosts(1).with_docker().build().unwrap();
        let host = net.host(0);
        let registry = start_registry(host);
        push_image(host);
        let db = TestDb::new().await;
        let store = Store::open(&db.url, &MasterKey::generate().unwrap())
            .await
            .unwrap();
        let key = keys::generate_ed25519("servos-test").unwrap();
        let engine = test_engine(&store);
        let server = store_server(&store, &key, host, "s0").await;
        Self {
            net,
            store,
            engine,
            server,
            _registry: registry,
            _db: db,
        }
    }

    fn host(&self) -> &TestHost {
        self.net.host(0)
    }

    /// A service running `IMAGE` (busybox httpd on 8080) with a registry credential for
    /// `USER` and `password`.
    async fn service(&self, name: &str, password: &str) -> ServiceRecord {
        let cred = self
            .store
            .create_credential(
                CredentialKind::Registry,
                &actor(),
                &format!("{name}-registry"),
                REGISTRY,
                USER,
                &Secret::new(password.to_owned()),
            )
            .await
            .unwrap();
        let new = NewService {
            name: name.into(),
            image: Some(IMAGE.into()),
            registry_id: Some(cred.id),
            git: None,
            builder_id: None,
            servers: vec![self.server.clone()],
            command: Some(
                ["httpd", "-f", "-p", "8080", "-h", "/etc"]
                    .map(String::from)
                    .to_vec(),
            ),
            port: Some(8080),
            domains: vec![],
            tls: TlsMode::Off,
            healthcheck_path: None,
            healthcheck_port: None,
            webhook_secret: Secret::new("whsec-test-value".into()),
        };
        self.store.create_service(&actor(), new).await.unwrap()
    }

    async fn deploy(&self, svc: &ServiceRecord) -> DeploymentRecord {
        run_deploy(&self.engine, svc, None).await
    }

    async fn log_text(&self, deployment: &str) -> String {
        log_text(&self.store, deployment).await
    }
}

/// Asserts that nothing on the host holds a registry login for `password`: no temporary
/// `DOCKER_CONFIG` left in the secrets directory or /tmp, no `config.json` naming the
/// registry, no file containing the password or its `user:password` base64 auth, and no
/// `docker login` process of ours still running.
fn assert_no_credentials_left(host: &TestHost, password: &str) {
    assert_eq!(
        sh(host, "ls -A /var/lib/servos/secrets"),
        "",
        "the secrets directory is empty"
    );
    assert_eq!(
        sh(
            host,
            "find /tmp /var/tmp /var/lib/servos -maxdepth 3 \\( -name 'login.*' -o -name config.json \\) 2>/dev/null; true"
        ),
        "",
        "no temporary DOCKER_CONFIG is left"
    );
    let root_config = sh(host, "cat /root/.docker/config.json 2>/dev/null; true");
    assert!(
        !root_config.contains(REGISTRY) && !root_config.contains("127.0.0.1"),
        "root's docker config names the registry: {root_config}"
    );
    let auth = sh(host, &format!("printf %s '{USER}:{password}' | base64 -w0"));
    let hits = sh(
        host,
        &format!(
            "grep -rlsF -D skip -e '{password}' -e '{auth}' \
             /tmp /var/lib/servos /run /root/.docker 2>/dev/null; true"
        ),
    );
    assert_eq!(hits, "", "files holding the registry password");
    // The hosts share the test machine's PID namespace: look at this host's processes.
    let netns = sh(host, "readlink /proc/self/ns/net");
    let mut procs = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(ns) = std::fs::read_link(entry.path().join("ns/net")) else {
            continue;
        };
        if ns.to_string_lossy() != netns {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let line = String::from_utf8_lossy(&raw).replace('\0', " ");
        if line.contains(USER) || (line.contains("docker") && line.contains(" login")) {
            procs.push(line);
        }
    }
    assert!(procs.is_empty(), "docker login processes remain: {procs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_image_deploys_with_the_right_registry_password_and_no_login_lingers() {
    let f = Fixture::new().await;
    let svc = f.service("priv", PASSWORD).await;
    let d = f.deploy(&svc).await;
    let log = f.log_text(&d.id).await;
    assert_eq!(d.status, "succeeded", "{:?}\n{log}", d.error);
    let host = f.host();
    let names = containers(host, &svc.id, false);
    assert_eq!(names.len(), 1, "{names:?}");
    let state = docker(
        host,
        &[
            "inspect",
            "--format",
            "{{.State.Status}} {{.Config.Image}}",
            &names[0],
        ],
    );
    assert!(state.starts_with("running "), "{state}");
    let digest = d.image_digest.clone().unwrap();
    assert!(
        digest.starts_with("127.0.0.1:5000/app@sha256:"),
        "pinned by the registry's digest: {digest}"
    );
    assert!(
        log.contains(&format!("logging in to {REGISTRY} as {USER}")),
        "{log}"
    );
    assert!(!log.contains(PASSWORD), "{log}");
    assert_no_credentials_left(host, PASSWORD);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_registry_password_fails_clearly_starts_nothing_and_leaves_no_credentials() {
    let f = Fixture::new().await;
    let svc = f.service("wrongpw", WRONG_PASSWORD).await;
    let d = f.deploy(&svc).await;
    let log = f.log_text(&d.id).await;
    assert_eq!(d.status, "failed", "{log}");
    let error = d.error.clone().unwrap();
    eprintln!("error: {error}\nlog:\n{log}");
    assert!(
        error.contains(REGISTRY),
        "the error names the registry: {error}"
    );
    assert!(
        error.contains("registry login") && error.to_lowercase().contains("unauthorized"),
        "the error says the login was refused: {error}"
    );
    assert!(!error.contains(WRONG_PASSWORD), "{error}");
    assert!(!log.contains(WRONG_PASSWORD), "{log}");
    let host = f.host();
    assert!(
        containers(host, &svc.id, true).is_empty(),
        "no container was created"
    );
    assert!(
        !host
            .docker_cli(&["image", "inspect", IMAGE])
            .unwrap()
            .status
            .success(),
        "nothing was pulled"
    );
    assert_no_credentials_left(host, WRONG_PASSWORD);
}
