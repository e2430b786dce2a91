//! Shared pieces of the deploy tests: an engine with short test timeouts, servers stored
//! for test hosts, running one queued deploy to its end, and docker helpers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use servos_core::model::ProxyKind;
use servos_deploy::{DeploySettings, DeploymentRecord, Engine, Runner, Timeouts};
use servos_ssh::keys::KeyPair;
use servos_store::hosts::{HostKind, NewHost};
use servos_store::services::ServiceRecord;
use servos_store::{Actor, Store};
use servos_testkit::TestHost;

pub fn actor() -> Actor {
    Actor::user("admin", "127.0.0.1")
}

/// An engine with timeouts short enough for tests (1 s minimum uptime, 8 s health).
pub fn test_engine(store: &Store) -> Engine {
    let timeouts = Timeouts {
        connect: Duration::from_secs(5),
        command: Duration::from_secs(60),
        keepalive_interval: Duration::from_secs(5),
        keepalive_max: 3,
    };
    let settings = DeploySettings {
        health_timeout: Duration::from_secs(8),
        min_uptime: Duration::from_secs(1),
        poll_interval: Duration::from_millis(200),
    };
    Engine::with_settings(store.clone(), timeouts, settings)
}

/// Authorizes `key` on `host` and stores the host as server `name`; returns its id.
pub async fn store_server(store: &Store, key: &KeyPair, host: &TestHost, name: &str) -> String {
    host.authorize(&key.public_line).unwrap();
    let new = NewHost {
        name: name.to_owned(),
        host: host.addr().to_string(),
        port: host.ssh_port(),
        user: "root".into(),
        private_key: key.private_openssh.clone(),
        passphrase: None,
        public_key: key.public_line.clone(),
        host_key_fingerprint: None,
        proxy: ProxyKind::None,
    };
    store.create_host(HostKind::Server, &actor(), new).await.unwrap().id
}

/// Queues a deploy and runs it here, to its end.
pub async fn run_deploy(engine: &Engine, svc: &ServiceRecord, image: Option<&str>) -> DeploymentRecord {
    let queued = engine.queue_deployment(&actor(), &svc.id, image).await.unwrap();
    let done = Runner::new(engine.clone()).run_next().await.unwrap().unwrap();
    assert_eq!(done.id, queued.id);
    done
}

/// A deployment's stored log as `stream line` lines.
pub async fn log_text(store: &Store, deployment: &str) -> String {
    let lines = store.deployment_logs(deployment, 0).await.unwrap();
    lines.iter().map(|l| format!("{} {}\n", l.stream, l.line)).collect()
}

/// Runs the docker CLI against the host's daemon; asserts success, returns stdout.
pub fn docker(host: &TestHost, args: &[&str]) -> String {
    let out = host.docker_cli(args).unwrap();
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Names of a service's containers on a host (`all`: stopped ones too).
pub fn containers(host: &TestHost, service_id: &str, all: bool) -> Vec<String> {
    let filter = format!("label=servos.service={service_id}");
    let mut args = vec!["ps", "--filter", &filter, "--format", "{{.Names}}"];
    if all {
        args.push("-a");
    }
    docker(host, &args)
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
}
