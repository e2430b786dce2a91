//! Deploys on real hosts (network namespaces with their own sshd and dockerd, a busybox
//! image made locally) and a real store (SQLite, or PostgreSQL when
//! SERVOS_TEST_DATABASE_URL is set): ephemeral secrets injection, health checks, crash
//! recovery, rollback, queueing and parallelism, stop/start/restart/remove.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use servos_core::model::TlsMode;
use servos_core::{MasterKey, Secret};
use servos_deploy::{Checkpoint, DeploymentRecord, Engine, Runner};
use servos_ssh::keys;
use servos_store::services::{NewService, ServiceRecord};
use servos_store::testing::TestDb;
use servos_store::Store;
use servos_testkit::{TestHost, TestNet};

mod common;
use common::{actor, containers, docker, log_text, run_deploy, store_server, test_engine};

const IMAGE_V1: &str = "svt-app:1";
const IMAGE_V2: &str = "svt-app:2";

fn httpd() -> Vec<String> {
    ["httpd", "-f", "-p", "8080", "-h", "/etc"]
        .map(String::from)
        .to_vec()
}

struct Fixture {
    net: TestNet,
    store: Store,
    engine: Engine,
    servers: Vec<String>,
    _db: TestDb,
}

impl Fixture {
    /// `n` hosts with dockerd, each stored as server `s<i>` and holding images
    /// `svt-app:1` and `svt-app:2` (a different image: it has `/version`).
    async fn new(n: usize) -> Self {
        let net = TestNet::builder().hosts(n).with_docker().build().unwrap();
        let db = TestDb::new().await;
        let store = Store::open(&db.url, &MasterKey::generate().unwrap())
            .await
            .unwrap();
        let key = keys::generate_ed25519("servos-test").unwrap();
        let engine = test_engine(&store);
        let mut servers = Vec::new();
        for (i, host) in net.hosts().iter().enumerate() {
            host.import_busybox_image(IMAGE_V1).unwrap();
            docker(
                host,
                &[
                    "run",
                    "--name",
                    "mk",
                    IMAGE_V1,
                    "sh",
                    "-c",
                    "echo 2 > /version",
                ],
            );
            docker(host, &["commit", "mk", IMAGE_V2]);
            docker(host, &["rm", "mk"]);
            servers.push(store_server(&store, &key, host, &format!("s{i}")).await);
        }
        Self {
            net,
            store,
            engine,
            servers,
            _db: db,
        }
    }

    fn host(&self, i: usize) -> &TestHost {
        self.net.host(i)
    }

    async fn service(
        &self,
        name: &str,
        servers: &[usize],
        command: Vec<String>,
        env: &[(&str, &str)],
    ) -> ServiceRecord {
        let new = NewService {
            name: name.into(),
            image: Some(IMAGE_V1.into()),
            registry_id: None,
            git: None,
            builder_id: None,
            servers: servers.iter().map(|i| self.servers[*i].clone()).collect(),
            command: Some(command),
            port: Some(8080),
            domains: vec![],
            tls: TlsMode::Off,
            healthcheck_path: None,
            healthcheck_port: None,
            webhook_secret: Secret::new("whsec-test-value".into()),
        };
        let svc = self.store.create_service(&actor(), new).await.unwrap();
        let vars: BTreeMap<String, Secret<String>> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Secret::new((*v).to_owned())))
            .collect();
        self.store.set_env(&actor(), &svc.id, &vars).await.unwrap();
        svc
    }

    async fn deploy(&self, svc: &ServiceRecord, image: Option<&str>) -> DeploymentRecord {
        run_deploy(&self.engine, svc, image).await
    }

    async fn log_text(&self, deployment: &str) -> String {
        log_text(&self.store, deployment).await
    }

    async fn wait_finished(&self, id: &str, within: Duration) -> DeploymentRecord {
        let start = Instant::now();
        loop {
            let d = self.store.get_deployment(id).await.unwrap();
            if d.finished_at.is_some() {
                return d;
            }
            assert!(
                start.elapsed() < within,
                "deployment {id} still {} after {within:?}",
                d.status
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn secret_files(host: &TestHost) -> String {
    let out = host.exec("ls -A /var/lib/servos/secrets").unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn image_id(host: &TestHost, image: &str) -> String {
    docker(host, &["image", "inspect", "--format", "{{.Id}}", image])
}

/// Samples every process's command line on the test machine (the hosts share its PID
/// namespace) until stopped; returns the command lines containing any needle.
fn sample_cmdlines(
    needles: Vec<String>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    std::thread::spawn(move || {
        let mut hits = Vec::new();
        let mut samples = 0;
        while !stop.load(Ordering::Relaxed) {
            for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
                    continue;
                };
                let line = String::from_utf8_lossy(&raw).replace('\0', " ");
                if needles.iter().any(|n| line.contains(n.as_str())) {
                    hits.push(line);
                }
            }
            samples += 1;
        }
        (samples, hits)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_injects_secrets_exactly_through_a_deleted_env_file_and_never_argv() {
    let f = Fixture::new(1).await;
    let tricky = "it's \"quoted\" = $(id) `x` ünïcødé ✓ == ";
    let env = [
        ("TRICKY", tricky),
        ("TOKEN", "tok-3f9a1c77e2"),
        ("EMPTY", ""),
    ];
    let svc = f.service("web", &[0], httpd(), &env).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_cmdlines(
        vec!["tok-3f9a1c77e2".into(), "ünïcødé".into()],
        Arc::clone(&stop),
    );
    let started = Instant::now();
    let d = f.deploy(&svc, None).await;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (samples, hits) = sampler.join().unwrap();
    assert_eq!(
        d.status,
        "succeeded",
        "{:?}\n{}",
        d.error,
        f.log_text(&d.id).await
    );
    eprintln!("deploy took {took:?}; {samples} samples of /proc/*/cmdline");
    assert!(samples > 10, "too few samples: {samples}");
    assert!(hits.is_empty(), "secret on a command line: {hits:?}");

    let host = f.host(0);
    let names = containers(host, &svc.id, false);
    assert_eq!(names.len(), 1, "{names:?}");
    let c = &names[0];
    let out = docker(host, &["exec", c, "env"]);
    let vars: BTreeMap<&str, &str> = out.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(vars.get("TRICKY"), Some(&tricky));
    assert_eq!(vars.get("TOKEN"), Some(&"tok-3f9a1c77e2"));
    assert_eq!(vars.get("EMPTY"), Some(&""));
    let labels = docker(
        host,
        &[
            "inspect",
            "--format",
            "{{index .Config.Labels \"servos.service\"}} {{index .Config.Labels \"servos.deployment\"}}",
            c,
        ],
    );
    assert_eq!(labels, format!("{} {}", svc.id, d.id));
    let network = docker(
        host,
        &[
            "inspect",
            "--format",
            "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}",
            c,
        ],
    );
    assert_eq!(network, "servos-web");
    assert_eq!(secret_files(host), "", "env file left behind");
    assert_eq!(
        d.image_digest.as_deref(),
        Some(image_id(host, IMAGE_V1).as_str())
    );

    let log = f.log_text(&d.id).await;
    assert!(
        log.contains("env file written (mode 0600)") && log.contains("env file removed"),
        "{log}"
    );
    assert!(
        !log.contains("tok-3f9a1c77e2") && !log.contains(tricky),
        "{log}"
    );
    let placements = f.store.service_placements(&svc.id).await.unwrap();
    assert_eq!(placements.len(), 1);
    assert_eq!(
        (
            placements[0].status.as_str(),
            placements[0].container.as_str(),
            placements[0].env_file.as_deref()
        ),
        ("running", c.as_str(), None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_keeps_old_container_when_healthcheck_fails_and_redacts_the_reason() {
    let f = Fixture::new(1).await;
    // Image 2 has /version: this command prints the secret and exits there.
    let cmd = vec![
        "sh".into(),
        "-c".into(),
        "if test -e /version; then echo \"boom $TOKEN\"; exit 3; fi; exec httpd -f -p 8080 -h /etc"
            .into(),
    ];
    let svc = f
        .service("api", &[0], cmd, &[("TOKEN", "tok-77d0e1b2")])
        .await;
    let good = f.deploy(&svc, None).await;
    assert_eq!(good.status, "succeeded", "{:?}", good.error);
    let host = f.host(0);
    let old = containers(host, &svc.id, false);

    let bad = f.deploy(&svc, Some(IMAGE_V2)).await;
    assert_eq!(bad.status, "failed");
    let error = bad.error.clone().unwrap();
    assert!(
        error.contains("did not become healthy")
            && (error.contains("exit code 3") || error.contains("keeps exiting")),
        "{error}"
    );
    assert!(
        error.contains("the previous container keeps serving"),
        "{error}"
    );
    assert!(
        error.contains("boom [redacted]"),
        "the container's last log lines, redacted: {error}"
    );
    assert!(!error.contains("tok-77d0e1b2"), "{error}");
    assert!(!f.log_text(&bad.id).await.contains("tok-77d0e1b2"));
    assert_eq!(
        containers(host, &svc.id, true),
        old,
        "the old container serves, the new one is gone"
    );
    assert_eq!(secret_files(host), "");

    // A container that runs but never listens: the error says what the probes saw
    // (refused every time, as opposed to no answer at all).
    let mute = f.service("mute", &[0], vec!["sleep".into(), "1000".into()], &[]).await;
    let d = f.deploy(&mute, None).await;
    assert_eq!(d.status, "failed");
    let error = d.error.unwrap();
    assert!(
        error.contains(":8080 does not answer (exit code 1") && error.contains(" failed)"),
        "{error}"
    );
    assert!(!error.contains("without any answer"), "{error}");

    // A container nothing reaches (the server drops its own SYNs to port 8080): the error
    // says no answer came at all, and where the server's route to the container leads.
    let out = host
        .exec("iptables -w -I OUTPUT -p tcp --dport 8080 -j DROP")
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cut = f.service("cut", &[0], httpd(), &[]).await;
    let d = f.deploy(&cut, None).await;
    host.exec("iptables -w -D OUTPUT -p tcp --dport 8080 -j DROP")
        .unwrap();
    assert_eq!(d.status, "failed");
    let error = d.error.unwrap();
    assert!(
        error.contains("without any answer within 5s)")
            && error.contains("; the server's route to 172.")
            && error.contains(" dev br-"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_stops_before_anything_starts_when_a_secret_does_not_decrypt() {
    let f = Fixture::new(1).await;
    let svc = f
        .service("db", &[0], httpd(), &[("A", "1"), ("B", "2")])
        .await;
    sqlx::query("UPDATE env_vars SET value_enc = $1 WHERE service_id = $2 AND name = $3")
        .bind("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .bind(&svc.id)
        .bind("B")
        .execute(f.store.pool())
        .await
        .unwrap();
    let d = f.deploy(&svc, None).await;
    assert_eq!(d.status, "failed");
    let error = d.error.unwrap();
    assert!(
        error.starts_with("cannot decrypt the environment of service db:"),
        "{error}"
    );
    assert!(
        error.ends_with("the deploy stopped before anything ran on a server"),
        "{error}"
    );
    let host = f.host(0);
    assert!(containers(host, &svc.id, true).is_empty());
    assert_eq!(secret_files(host), "");
    assert!(
        !f.log_text(&d.id).await.contains("connecting"),
        "no server was contacted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_interrupted_after_writing_the_env_file_is_cleaned_up_by_the_next_runner() {
    let f = Fixture::new(1).await;
    let svc = f
        .service("cache", &[0], httpd(), &[("TOKEN", "tok-crash-1")])
        .await;
    let pause = f.engine.pause_at(Checkpoint::EnvFileWritten);
    let runner = Runner::new(f.engine.clone()).spawn();
    let d = f
        .engine
        .queue_deployment(&actor(), &svc.id, None)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(60), pause.reached.notified())
        .await
        .unwrap();
    let host = f.host(0);
    let left = secret_files(host);
    assert!(
        left.ends_with(".env"),
        "the env file exists at the crash: {left:?}"
    );
    runner.abort();
    assert!(runner.await.unwrap_err().is_cancelled());
    assert_eq!(secret_files(host), left, "nothing cleaned up yet: a crash");
    assert_eq!(
        f.store.get_deployment(&d.id).await.unwrap().status,
        "running"
    );

    let recovered = Runner::new(f.engine.clone()).recover().await.unwrap();
    assert_eq!(recovered, 1);
    let d = f.store.get_deployment(&d.id).await.unwrap();
    assert_eq!(d.status, "failed");
    let error = d.error.unwrap();
    assert!(error.starts_with("the control plane stopped during this deploy; on server s0: removed env file /var/lib/servos/secrets/"), "{error}");
    assert_eq!(secret_files(host), "", "orphan env file removed");
    assert!(containers(host, &svc.id, true).is_empty());
    // The service can be deployed again.
    let again = f.deploy(&svc, None).await;
    assert_eq!(again.status, "succeeded", "{:?}", again.error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_redeploys_the_previous_image_by_digest() {
    let f = Fixture::new(1).await;
    let svc = f.service("site", &[0], httpd(), &[]).await;
    let host = f.host(0);
    let v1 = f.deploy(&svc, None).await;
    let v2 = f.deploy(&svc, Some(IMAGE_V2)).await;
    assert_eq!(
        (v1.status.as_str(), v2.status.as_str()),
        ("succeeded", "succeeded")
    );
    let running_image = |h: &TestHost| {
        let c = containers(h, &svc.id, false);
        assert_eq!(c.len(), 1, "{c:?}");
        docker(h, &["inspect", "--format", "{{.Image}}", &c[0]])
    };
    assert_eq!(running_image(host), image_id(host, IMAGE_V2));
    let queued = f.engine.rollback(&actor(), &svc.id, None).await.unwrap();
    assert_eq!(queued.image, v1.image_digest);
    let back = Runner::new(f.engine.clone())
        .run_next()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.status, "succeeded", "{:?}", back.error);
    assert_eq!(running_image(host), image_id(host, IMAGE_V1));
    assert!(
        f.log_text(&back.id)
            .await
            .starts_with(&format!("step rollback to deployment {}", v1.id))
    );
    let named = f
        .engine
        .rollback(&actor(), &svc.id, Some(&v2.id))
        .await
        .unwrap();
    assert_eq!(named.image, v2.image_digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_of_one_service_queue_and_services_on_three_hosts_run_in_parallel() {
    let f = Fixture::new(3).await;
    let mut services = Vec::new();
    for i in 0..9 {
        services.push(
            f.service(
                &format!("svc{i}"),
                &[i % 3],
                httpd(),
                &[("N", &i.to_string())],
            )
            .await,
        );
    }
    let runner = Runner::new(f.engine.clone()).spawn();
    let started = Instant::now();
    let twice_a = f
        .engine
        .queue_deployment(&actor(), &services[0].id, None)
        .await
        .unwrap();
    let mut queued = vec![twice_a.clone()];
    for s in &services {
        queued.push(
            f.engine
                .queue_deployment(&actor(), &s.id, None)
                .await
                .unwrap(),
        );
    }
    let mut done = Vec::new();
    for q in &queued {
        done.push(f.wait_finished(&q.id, Duration::from_secs(180)).await);
    }
    let total = started.elapsed();
    runner.abort();
    for d in &done {
        if d.status != "succeeded" {
            panic!(
                "deployment {} {}: {:?}\n{}",
                d.id,
                d.status,
                d.error,
                f.log_text(&d.id).await
            );
        }
    }
    // The two deploys of svc0 did not overlap.
    let (a, b) = (&done[0], &done[1]);
    assert!(
        a.finished_at.as_ref().unwrap() <= b.started_at.as_ref().unwrap(),
        "{a:?} overlaps {b:?}"
    );
    // Deploys of different services did.
    let spans: Vec<(String, String)> = done
        .iter()
        .map(|d| {
            (
                d.started_at.clone().unwrap(),
                d.finished_at.clone().unwrap(),
            )
        })
        .collect();
    let max_overlap = spans
        .iter()
        .map(|(s, _)| spans.iter().filter(|(s2, e2)| s2 <= s && s < e2).count())
        .max()
        .unwrap();
    eprintln!("10 deploys of 9 services on 3 hosts took {total:?}; at most {max_overlap} at once");
    assert!(max_overlap >= 3, "deploys ran one after another: {spans:?}");
    for (i, s) in services.iter().enumerate() {
        let all = containers(f.host(i % 3), &s.id, true);
        assert_eq!(all.len(), 1, "{}: {all:?}", s.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_start_restart_and_remove_act_on_every_server_of_the_service() {
    let f = Fixture::new(2).await;
    let svc = f.service("duo", &[0, 1], httpd(), &[]).await;
    let d = f.deploy(&svc, None).await;
    assert_eq!(d.status, "succeeded", "{:?}", d.error);
    let log = f.log_text(&d.id).await;
    let (s0, s1) = (
        log.find("server s0: connecting").unwrap(),
        log.find("server s1: connecting").unwrap(),
    );
    assert!(
        s0 < log.find("server s0: container").unwrap()
            && log.find("server s0: container").unwrap() < s1,
        "server by server:\n{log}"
    );
    let hosts = [f.host(0), f.host(1)];
    for h in hosts {
        assert_eq!(containers(h, &svc.id, false).len(), 1);
    }

    f.engine.stop(&actor(), &svc.id).await.unwrap();
    for h in hosts {
        assert!(containers(h, &svc.id, false).is_empty());
        assert_eq!(containers(h, &svc.id, true).len(), 1);
    }
    let placements = f.store.service_placements(&svc.id).await.unwrap();
    assert!(
        placements.iter().all(|p| p.status == "stopped") && placements.len() == 2,
        "{placements:?}"
    );

    f.engine.start(&actor(), &svc.id).await.unwrap();
    for h in hosts {
        assert_eq!(containers(h, &svc.id, false).len(), 1);
    }
    let c = containers(hosts[0], &svc.id, false)[0].clone();
    let before = docker(
        hosts[0],
        &["inspect", "--format", "{{.State.StartedAt}}", &c],
    );
    f.engine.restart(&actor(), &svc.id).await.unwrap();
    let after = docker(
        hosts[0],
        &["inspect", "--format", "{{.State.StartedAt}}", &c],
    );
    assert_ne!(before, after, "restarted");

    f.engine.remove(&actor(), &svc.id).await.unwrap();
    for h in hosts {
        assert!(containers(h, &svc.id, true).is_empty());
        let nets = docker(h, &["network", "ls", "--format", "{{.Name}}"]);
        assert!(!nets.lines().any(|n| n == "servos-duo"), "{nets}");
    }
    assert!(
        f.store
            .service_placements(&svc.id)
            .await
            .unwrap()
            .is_empty()
    );
    let actions: Vec<String> = f
        .store
        .audit_list(1000, None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    for a in [
        "service.stopped",
        "service.started",
        "service.restarted",
        "service.removed",
        "deployment.queued",
        "deployment.succeeded",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a} not audited");
    }
    f.store.audit_verify().await.unwrap();
}
