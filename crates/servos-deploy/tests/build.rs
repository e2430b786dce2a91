//! Builds from git on real hosts: a builder and a separate server (network namespaces
//! with their own sshd and dockerd), a real git server (`git http-backend` behind a server
//! that demands the token) in the test process, and a real store. The image reaches the
//! server without a registry: `docker save` on the builder streamed through the control
//! plane into `docker load` on the server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use servos_core::model::{DeploymentStatus, ProxyKind, TlsMode};
use servos_core::{MasterKey, Secret};
use servos_deploy::build::auth_header;
use servos_deploy::{DeploymentRecord, Engine, Runner};
use servos_ssh::keys::{self, KeyPair};
use servos_store::Store;
use servos_store::deployments::DeploymentRequest;
use servos_store::hosts::{HostKind, NewHost};
use servos_store::records::CredentialKind;
use servos_store::services::{GitSource, NewService, ServiceRecord};
use servos_store::testing::TestDb;
use servos_testkit::{GitHttpServer, TestHost, TestNet, create_repository};

mod common;
use common::{actor, docker, log_text, store_server, test_engine};

const BASE_IMAGE: &str = "svt-base:1";
const TOKEN: &str = "ghp_svtTokenThatMustNeverLeak0123456789";

const GOOD_DOCKERFILE: &str = "FROM svt-base:1\nCOPY index.html /www/index.html\n\
     CMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n";

struct Fixture {
    net: TestNet,
    store: Store,
    engine: Engine,
    server: String,
    builder: String,
    git: GitHttpServer,
    repo_root: tempfile::TempDir,
    _db: TestDb,
}

/// Host 0 is the builder (it has the base image), host 1 the server (it has nothing).
async fn fixture() -> Fixture {
    let net = TestNet::builder().hosts(2).with_docker().build().unwrap();
    let db = TestDb::new().await;
    let store = Store::open(&db.url, &MasterKey::generate().unwrap())
        .await
        .unwrap();
    let key = keys::generate_ed25519("servos-test").unwrap();
    let engine = test_engine(&store);
    net.host(0).import_busybox_image(BASE_IMAGE).unwrap();
    let builder = store_builder(&store, &key, net.host(0)).await;
    let server = store_server(&store, &key, net.host(1), "s1").await;
    let repo_root = tempfile::tempdir().unwrap();
    let header = auth_header("", &Secret::new(TOKEN.to_owned()));
    let git = GitHttpServer::start(net.gateway(), repo_root.path(), Some(header.expose())).unwrap();
    Fixture {
        net,
        store,
        engine,
        server,
        builder,
        git,
        repo_root,
        _db: db,
    }
}

async fn store_builder(store: &Store, key: &KeyPair, host: &TestHost) -> String {
    host.authorize(&key.public_line).unwrap();
    let new = NewHost {
        name: "b1".into(),
        host: host.addr().to_string(),
        port: host.ssh_port(),
        user: "root".into(),
        private_key: key.private_openssh.clone(),
        passphrase: None,
        public_key: key.public_line.clone(),
        host_key_fingerprint: None,
        proxy: ProxyKind::None,
    };
    store
        .create_host(HostKind::Builder, &actor(), new)
        .await
        .unwrap()
        .id
}

impl Fixture {
    async fn git_service(
        &self,
        name: &str,
        repo: &str,
        credential: Option<&str>,
        dockerfile: Option<&str>,
    ) -> ServiceRecord {
        let new = NewService {
            name: name.into(),
            image: None,
            registry_id: None,
            git: Some(GitSource {
                repository: self.git.url(&format!("{repo}.git")),
                branch: "main".into(),
                credential_id: credential.map(str::to_owned),
                dockerfile: dockerfile.map(str::to_owned),
                context: None,
            }),
            builder_id: Some(self.builder.clone()),
            servers: vec![self.server.clone()],
            command: None,
            port: Some(8080),
            domains: vec![],
            tls: TlsMode::Off,
            healthcheck_path: None,
            healthcheck_port: None,
            webhook_secret: Secret::new("whsec-test-value".into()),
        };
        self.store.create_service(&actor(), new).await.unwrap()
    }

    async fn credential(&self) -> String {
        self.store
            .create_credential(
                CredentialKind::GitCredential,
                &actor(),
                "forge",
                &self.git.addr().to_string(),
                "",
                &Secret::new(TOKEN.to_owned()),
            )
            .await
            .unwrap()
            .id
    }

    async fn deploy(&self, svc: &ServiceRecord, git_ref: Option<&str>) -> DeploymentRecord {
        let request = DeploymentRequest {
            image: None,
            git_ref,
        };
        let queued = self
            .engine
            .queue_deployment_of(&actor(), &svc.id, &request)
            .await
            .unwrap();
        let done = Runner::new(self.engine.clone())
            .run_next()
            .await
            .unwrap()
            .unwrap();
        assert_eq!(done.id, queued.id);
        done
    }

    fn builder_host(&self) -> &TestHost {
        self.net.host(0)
    }

    fn server_host(&self) -> &TestHost {
        self.net.host(1)
    }

    /// Where the builder's `/var/lib/servos/builds/<id>` is seen from the test machine.
    fn work_dir(&self, deployment: &str) -> PathBuf {
        self.builder_host()
            .dir()
            .join("var-lib-servos/builds")
            .join(deployment)
    }

    fn builds_dir(&self) -> PathBuf {
        self.builder_host().dir().join("var-lib-servos/builds")
    }
}

/// Watches the machine while a build runs: every `/proc/*/cmdline` (the builder's
/// processes are ordinary processes of this machine, in another network namespace) and any
/// clone's `.git/config` under the builder's build directory.
struct Watch {
    stop: Arc<AtomicBool>,
    samples: Arc<AtomicUsize>,
    git_seen: Arc<AtomicBool>,
    leaks: Arc<Mutex<Vec<String>>>,
    configs: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn start(builds: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(AtomicUsize::new(0));
        let git_seen = Arc::new(AtomicBool::new(false));
        let leaks = Arc::new(Mutex::new(Vec::new()));
        let configs = Arc::new(Mutex::new(Vec::new()));
        let (s, n, g, l, c) = (
            Arc::clone(&stop),
            Arc::clone(&samples),
            Arc::clone(&git_seen),
            Arc::clone(&leaks),
            Arc::clone(&configs),
        );
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                    let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
                        continue;
                    };
                    let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
                    if cmdline.contains("git")
                        && (cmdline.contains("clone")
                            || cmdline.contains("fetch")
                            || cmdline.contains("remote-http"))
                    {
                        g.store(true, Ordering::SeqCst);
                    }
                    if cmdline.contains(TOKEN) || cmdline.contains(&b64_of_token()) {
                        l.lock().unwrap().push(cmdline);
                    }
                }
                collect_configs(&builds, &c);
                n.fetch_add(1, Ordering::SeqCst);
            }
        });
        Self {
            stop,
            samples,
            git_seen,
            leaks,
            configs,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (usize, bool, Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        (
            self.samples.load(Ordering::SeqCst),
            self.git_seen.load(Ordering::SeqCst),
            self.leaks.lock().unwrap().clone(),
            self.configs.lock().unwrap().clone(),
        )
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn b64_of_token() -> String {
    auth_header("", &Secret::new(TOKEN.to_owned()))
        .expose()
        .trim_start_matches("Basic ")
        .to_owned()
}

fn collect_configs(builds: &Path, into: &Mutex<Vec<String>>) {
    let Ok(dirs) = std::fs::read_dir(builds) else {
        return;
    };
    for d in dirs.flatten() {
        if let Ok(text) = std::fs::read_to_string(d.path().join("src/.git/config")) {
            into.lock().unwrap().push(text);
        }
    }
}

fn assert_no_token(what: &str, text: &str) {
    assert!(!text.contains(TOKEN), "{what} contains the token:\n{text}");
    assert!(
        !text.contains(&b64_of_token()),
        "{what} contains the encoded token:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_repository_is_built_on_the_builder_and_runs_on_a_separate_server_without_a_registry()
 {
    let f = fixture().await;
    let sha = create_repository(
        f.repo_root.path(),
        "app",
        &[
            ("Dockerfile", GOOD_DOCKERFILE),
            ("index.html", "hello from git\n"),
        ],
    )
    .unwrap();
    let credential = f.credential().await;
    let svc = f.git_service("app", "app", Some(&credential), None).await;

    let watch = Watch::start(f.builds_dir());
    let done = f.deploy(&svc, None).await;
    let (samples, git_seen, leaks, configs) = watch.finish();
    let log = log_text(&f.store, &done.id).await;
    assert_eq!(
        done.status,
        DeploymentStatus::Succeeded.as_str(),
        "{:?}\n{log}",
        done.error
    );

    // The token never showed up where other users of the builder could read it.
    assert!(
        samples > 10 && git_seen,
        "the watcher saw no git process ({samples} samples)"
    );
    assert!(leaks.is_empty(), "token in a command line: {leaks:?}");
    assert!(
        !configs.is_empty(),
        "the watcher never saw the clone's .git/config"
    );
    for c in &configs {
        assert_no_token(".git/config", c);
    }
    assert_no_token("the stored deployment log", &log);
    for r in f.git.requests() {
        assert_no_token("a requested URL", &r.target);
        assert!(r.had_authorization && r.status == 200, "{r:?}");
    }

    // The image is tagged with the commit, recorded, built on the builder and running on
    // the server, which never had the base image.
    let image = format!("servos/app:{sha}");
    assert_eq!(done.git_ref.as_deref(), Some(sha.as_str()));
    assert_eq!(done.image.as_deref(), Some(image.as_str()));
    assert!(log.contains("streaming servos/app:"), "{log}");
    assert!(
        log.contains("COPY index.html"),
        "build output is in the log:\n{log}"
    );
    let running = docker(
        f.server_host(),
        &[
            "ps",
            "--filter",
            &format!("label=servos.service={}", svc.id),
            "--format",
            "{{.Image}}",
        ],
    );
    assert_eq!(running, image);
    let served = docker(
        f.server_host(),
        &[
            "run",
            "--rm",
            "--entrypoint",
            "cat",
            &image,
            "/www/index.html",
        ],
    );
    assert_eq!(served, "hello from git");
    assert!(
        !f.server_host()
            .docker_cli(&["image", "inspect", BASE_IMAGE])
            .unwrap()
            .status
            .success()
    );
    assert!(
        !f.work_dir(&done.id).exists(),
        "the work dir is left behind"
    );

    // A commit SHA builds that commit (init + fetch); the server already has the image.
    let again = f.deploy(&svc, Some(&sha)).await;
    let log = log_text(&f.store, &again.id).await;
    assert_eq!(
        again.status,
        DeploymentStatus::Succeeded.as_str(),
        "{:?}\n{log}",
        again.error
    );
    assert_eq!(again.git_ref.as_deref(), Some(sha.as_str()));
    assert!(log.contains("already has"), "{log}");
    assert!(!f.work_dir(&again.id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_build_deploys_nothing_and_says_why() {
    let f = fixture().await;
    create_repository(
        f.repo_root.path(),
        "good",
        &[("Dockerfile", GOOD_DOCKERFILE), ("index.html", "x\n")],
    )
    .unwrap();
    create_repository(
        f.repo_root.path(),
        "bad",
        &[
            (
                "Dockerfile",
                "FROM svt-base:1\nRUN echo about to fail && exit 3\n",
            ),
            ("slow/Dockerfile", "FROM svt-base:1\nRUN sleep 60\n"),
        ],
    )
    .unwrap();
    let credential = f.credential().await;
    let nothing_runs = |svc: &ServiceRecord| {
        let names = docker(
            f.server_host(),
            &[
                "ps",
                "-a",
                "--filter",
                &format!("label=servos.service={}", svc.id),
                "--format",
                "{{.Names}}",
            ],
        );
        assert_eq!(names, "", "a container was started for {}", svc.name);
    };

    // Without the token the forge refuses the clone; the error says so.
    let anonymous = f.git_service("anon", "good", None, None).await;
    let done = f.deploy(&anonymous, None).await;
    let error = done.error.clone().unwrap_or_default();
    assert_eq!(done.status, DeploymentStatus::Failed.as_str());
    assert!(
        error.contains("building service anon on builder b1 failed: cloning failed"),
        "{error}"
    );
    assert!(
        error.contains("terminal prompts disabled") || error.contains("Authentication failed"),
        "{error}"
    );
    assert!(error.contains("nothing was deployed"), "{error}");
    assert!(
        f.git
            .requests()
            .iter()
            .any(|r| r.status == 401 && !r.had_authorization)
    );
    nothing_runs(&anonymous);
    assert!(!f.work_dir(&done.id).exists());

    // A Dockerfile that fails: the error quotes the build's last lines.
    let bad = f.git_service("bad", "bad", Some(&credential), None).await;
    let done = f.deploy(&bad, None).await;
    let error = done.error.clone().unwrap_or_default();
    assert_eq!(done.status, DeploymentStatus::Failed.as_str());
    assert!(
        error.contains("docker build failed; last lines of its output:"),
        "{error}"
    );
    assert!(error.contains("about to fail"), "{error}");
    assert_no_token("the error", &error);
    assert!(done.image.is_none(), "{:?}", done.image);
    nothing_runs(&bad);
    assert!(!f.work_dir(&done.id).exists());

    // A build over its time limit is stopped, and its work dir removed.
    f.engine.set_build_timeout(Duration::from_secs(3));
    let slow = f
        .git_service("slow", "bad", Some(&credential), Some("slow/Dockerfile"))
        .await;
    let done = f.deploy(&slow, None).await;
    let error = done.error.clone().unwrap_or_default();
    assert_eq!(done.status, DeploymentStatus::Failed.as_str());
    assert!(
        error.contains(
            "docker build did not finish within the build time limit of 3s and was stopped"
        ),
        "{error}"
    );
    nothing_runs(&slow);
    assert!(!f.work_dir(&done.id).exists());
    let leftovers: Vec<_> = std::fs::read_dir(f.builds_dir())
        .unwrap()
        .flatten()
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
