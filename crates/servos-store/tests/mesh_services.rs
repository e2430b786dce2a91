//! Service grants and the server-level rules derived from them, on a real database (SQLite,
//! or PostgreSQL when SERVOS_TEST_DATABASE_URL is set): rules follow the services' servers,
//! need a mesh-published destination with a port, vanish with a revoked grant or a deleted
//! service, and every change is audited.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use servos_core::model::{ProxyKind, TlsMode};
use servos_core::{MasterKey, Secret};
use servos_store::hosts::{HostKind, NewHost};
use servos_store::services::NewService;
use servos_store::testing::TestDb;
use servos_store::{Actor, Store, StoreError};

fn actor() -> Actor {
    Actor::user("admin", "127.0.0.1")
}

async fn server(store: &Store, name: &str) -> String {
    let h = store
        .create_host(
            HostKind::Server,
            &actor(),
            NewHost {
                name: name.into(),
                host: "10.0.0.1".into(),
                port: 22,
                user: "root".into(),
                private_key: Secret::new("-----BEGIN OPENSSH PRIVATE KEY-----".into()),
                passphrase: None,
                public_key: "ssh-ed25519 AAAA test".into(),
                host_key_fingerprint: None,
                proxy: ProxyKind::None,
            },
        )
        .await
        .unwrap();
    // A mesh address, as enrolment allocates it.
    store
        .issue_agent_enrolment(&actor(), &h.id, "hash")
        .await
        .unwrap();
    h.id
}

async fn service(store: &Store, name: &str, servers: Vec<String>, port: Option<u16>) -> String {
    let new = NewService {
        name: name.into(),
        image: Some("busybox:latest".into()),
        registry_id: None,
        git: None,
        builder_id: None,
        servers,
        command: None,
        port,
        domains: vec![],
        tls: TlsMode::Off,
        healthcheck_path: None,
        healthcheck_port: None,
        webhook_secret: Secret::new("whsec".into()),
    };
    store.create_service(&actor(), new).await.unwrap().id
}

fn rules(r: &[servos_store::mesh_services::GrantRule]) -> Vec<String> {
    r.iter()
        .map(|r| {
            format!(
                "{}({}) -> {}({}):{} [{} -> {}]",
                r.src_server,
                r.src_address.as_deref().unwrap_or("-"),
                r.dst_server,
                r.dst_address.as_deref().unwrap_or("-"),
                r.port,
                r.src_service,
                r.dst_service
            )
        })
        .collect()
}

#[tokio::test]
async fn grants_become_server_rules_that_follow_services_and_go_with_revocation_and_deletion() {
    let db = TestDb::new().await;
    let store = Store::open(&db.url, &MasterKey::generate().unwrap())
        .await
        .unwrap();
    let s1 = server(&store, "s1").await;
    let s2 = server(&store, "s2").await;
    let s3 = server(&store, "s3").await;
    // a runs on s1 and s3; b (port 7000) on s2 and s3; c has no port.
    let a = service(&store, "a", vec![s1.clone(), s3.clone()], None).await;
    let b = service(&store, "b", vec![s2.clone(), s3.clone()], Some(7000)).await;
    let c = service(&store, "c", vec![s2.clone()], None).await;

    store.add_service_grant(&actor(), "a", "b").await.unwrap();
    // b is not published on the mesh yet: no rule.
    assert!(store.grant_rules().await.unwrap().is_empty());
    store
        .set_service_publish(&actor(), &b, "mesh")
        .await
        .unwrap();
    assert_eq!(store.service_publish(&b).await.unwrap(), "mesh");
    // Every server of a to every server of b, except a server to itself (s3 → s3 stays local).
    assert_eq!(
        rules(&store.grant_rules().await.unwrap()),
        [
            "s1(10.77.0.1) -> s2(10.77.0.2):7000 [a -> b]",
            "s1(10.77.0.1) -> s3(10.77.0.3):7000 [a -> b]",
            "s3(10.77.0.3) -> s2(10.77.0.2):7000 [a -> b]",
        ]
    );
    // Each agent gets the rules that involve its server.
    assert_eq!(rules(&store.grant_rules_for(&s1).await.unwrap()).len(), 2);
    assert_eq!(rules(&store.grant_rules_for(&s2).await.unwrap()).len(), 2);
    assert_eq!(rules(&store.grant_rules_for(&s3).await.unwrap()).len(), 2);

    // A second identical grant is a conflict; an unknown service is named.
    match store.add_service_grant(&actor(), &a, &b).await {
        Err(StoreError::Conflict { .. }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    match store.add_service_grant(&actor(), "nope", "b").await {
        Err(StoreError::NotFound {
            kind: "service",
            key,
        }) => assert_eq!(key, "nope"),
        other => panic!("expected not found, got {other:?}"),
    }

    // A destination without a port yields no rule even when mesh-published.
    store
        .set_service_publish(&actor(), &c, "mesh")
        .await
        .unwrap();
    store.add_service_grant(&actor(), "a", "c").await.unwrap();
    assert_eq!(store.grant_rules().await.unwrap().len(), 3);
    assert_eq!(store.service_grants().await.unwrap().len(), 2);

    // Revoked: its rules go; deleting the source service takes its grants with it.
    store
        .delete_service_grant(&actor(), "a", "c")
        .await
        .unwrap();
    assert!(matches!(
        store.delete_service_grant(&actor(), "a", "c").await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.grant_rules().await.unwrap().len(), 3);
    store.delete_service(&actor(), &a).await.unwrap();
    assert!(store.service_grants().await.unwrap().is_empty());
    assert!(store.grant_rules().await.unwrap().is_empty());

    // Every change is in the audit log.
    let kinds: Vec<String> = store
        .audit_list(100, None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    for k in [
        "service.publish_set",
        "service.grant_added",
        "service.grant_revoked",
    ] {
        assert!(kinds.iter().any(|a| a == k), "{k} not audited: {kinds:?}");
    }
    assert!(store.audit_verify().await.unwrap().rows > 0);
}
