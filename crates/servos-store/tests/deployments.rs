//! The deployment queue on a real database (SQLite, or PostgreSQL when
//! SERVOS_TEST_DATABASE_URL is set): one running job per service, oldest first, every
//! change audited, log lines numbered in order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use servos_core::model::{DeploymentStatus, TlsMode};
use servos_core::{MasterKey, Secret};
use servos_store::deployments::PlacementUpdate;
use servos_store::services::NewService;
use servos_store::testing::TestDb;
use servos_store::{Actor, Store};

fn actor() -> Actor {
    Actor::user("admin", "127.0.0.1")
}

async fn service(store: &Store, name: &str) -> String {
    let new = NewService {
        name: name.into(),
        image: Some("app:1".into()),
        registry_id: None,
        git: None,
        builder_id: None,
        servers: vec![],
        command: None,
        port: None,
        domains: vec![],
        tls: TlsMode::Off,
        healthcheck_path: None,
        healthcheck_port: None,
        webhook_secret: Secret::new("whsec-x".into()),
    };
    store.create_service(&actor(), new).await.unwrap().id
}

#[tokio::test]
async fn jobs_of_one_service_run_one_at_a_time_oldest_first() {
    let db = TestDb::new().await;
    let store = Store::open(&db.url, &MasterKey::generate().unwrap()).await.unwrap();
    let (a, b) = (service(&store, "a").await, service(&store, "b").await);
    let a1 = store.queue_deployment(&actor(), &a, None).await.unwrap();
    let a2 = store.queue_deployment(&actor(), &a, Some("app:2")).await.unwrap();
    let b1 = store.queue_deployment(&actor(), &b, None).await.unwrap();
    assert_eq!((a1.status.as_str(), a1.image.as_deref(), a2.image.as_deref()), ("queued", Some("app:1"), Some("app:2")));
    assert_eq!(a1.triggered_by, "user:admin");

    let system = Actor::system();
    let first = store.claim_job(&system).await.unwrap().unwrap();
    assert_eq!((first.subject_id.as_str(), first.attempts), (a1.id.as_str(), 1));
    let second = store.claim_job(&system).await.unwrap().unwrap();
    assert_eq!(second.subject_id, b1.id, "a2 waits for a1; b1 may run beside it");
    assert!(store.claim_job(&system).await.unwrap().is_none());
    assert_eq!(store.get_deployment(&a1.id).await.unwrap().status, "running");
    assert_eq!(store.running_jobs().await.unwrap().len(), 2);

    store.finish_deployment(&system, &a1.id, DeploymentStatus::Succeeded, None).await.unwrap();
    let third = store.claim_job(&system).await.unwrap().unwrap();
    assert_eq!(third.subject_id, a2.id);
    let failed = store.finish_deployment(&system, &a2.id, DeploymentStatus::Failed, Some("boom")).await.unwrap();
    assert_eq!((failed.status.as_str(), failed.error.as_deref()), ("failed", Some("boom")));
    assert!(failed.finished_at.is_some() && failed.started_at.is_some());

    let listed = store.list_deployments(&a, 10).await.unwrap();
    assert_eq!(listed.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), vec![a2.id.as_str(), a1.id.as_str()]);
    let ok = store.succeeded_deployments(&a).await.unwrap();
    assert_eq!(ok.len(), 1);

    let actions: Vec<String> = store.audit_list(100, None).await.unwrap().into_iter().map(|e| e.action).collect();
    for a in ["deployment.queued", "deployment.started", "deployment.succeeded", "deployment.failed"] {
        assert!(actions.iter().any(|x| x == a), "{a} not audited: {actions:?}");
    }
    store.audit_verify().await.unwrap();
}

#[tokio::test]
async fn log_lines_are_numbered_and_read_after_a_sequence_number() {
    let db = TestDb::new().await;
    let store = Store::open(&db.url, &MasterKey::generate().unwrap()).await.unwrap();
    let s = service(&store, "web").await;
    let d = store.queue_deployment(&actor(), &s, None).await.unwrap();
    for i in 1..=3 {
        let line = store.append_deployment_log(&d.id, "step", &format!("line {i}")).await.unwrap();
        assert_eq!(line.seq, i);
    }
    let after_one = store.deployment_logs(&d.id, 1).await.unwrap();
    assert_eq!(after_one.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(), vec!["line 2", "line 3"]);
}

#[tokio::test]
async fn placements_say_what_runs_where_and_a_promotion_retires_the_old_one() {
    let db = TestDb::new().await;
    let store = Store::open(&db.url, &MasterKey::generate().unwrap()).await.unwrap();
    let s = service(&store, "web").await;
    let host = servos_store::hosts::NewHost {
        name: "s0".into(),
        host: "10.0.0.1".into(),
        port: 22,
        user: "root".into(),
        private_key: Secret::new("k".into()),
        passphrase: None,
        public_key: "ssh-ed25519 AAAA".into(),
        host_key_fingerprint: None,
        proxy: servos_core::model::ProxyKind::None,
    };
    let server = store.create_host(servos_store::hosts::HostKind::Server, &actor(), host).await.unwrap().id;
    let (d1, d2) = (
        store.queue_deployment(&actor(), &s, None).await.unwrap(),
        store.queue_deployment(&actor(), &s, None).await.unwrap(),
    );
    let at = |deployment_id, status, container, env_file| PlacementUpdate {
        deployment_id,
        server_id: &server,
        position: 0,
        status,
        container,
        env_file,
    };
    store.promote_placement(&actor(), &s, &at(&d1.id, "running", "c1", None)).await.unwrap();
    store.set_placement(&actor(), &at(&d2.id, "starting", "c2", Some("/var/lib/servos/secrets/x.env"))).await.unwrap();
    assert_eq!(store.placements_of(&d2.id).await.unwrap()[0].env_file.as_deref(), Some("/var/lib/servos/secrets/x.env"));
    store.promote_placement(&actor(), &s, &at(&d2.id, "running", "c2", None)).await.unwrap();
    let now: Vec<(String, String)> =
        store.service_placements(&s).await.unwrap().into_iter().map(|p| (p.container, p.status)).collect();
    assert_eq!(now, vec![("c2".to_owned(), "running".to_owned())]);
    assert_eq!(store.placements_of(&d1.id).await.unwrap()[0].status, "retired");
    store.record_service_action(&actor(), &s, "service.stopped", "stopped", serde_json::json!({})).await.unwrap();
    assert_eq!(store.service_placements(&s).await.unwrap()[0].status, "stopped");
}
