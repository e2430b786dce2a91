//! Domains on a real database (SQLite, or PostgreSQL when SERVOS_TEST_DATABASE_URL is set):
//! a domain belongs to at most one service, whether claimed at creation or added later,
//! also when two claims race; removal frees it; every change is audited.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use servos_core::model::TlsMode;
use servos_core::{MasterKey, Secret};
use servos_store::services::NewService;
use servos_store::testing::TestDb;
use servos_store::{Actor, Store, StoreError};

fn actor() -> Actor {
    Actor::user("admin", "127.0.0.1")
}

fn new_service(name: &str, domains: &[&str]) -> NewService {
    NewService {
        name: name.into(),
        image: Some("app:1".into()),
        registry_id: None,
        git: None,
        builder_id: None,
        servers: vec![],
        command: None,
        port: Some(8080),
        domains: domains.iter().map(|d| (*d).to_owned()).collect(),
        tls: TlsMode::Internal,
        healthcheck_path: None,
        healthcheck_port: None,
        webhook_secret: Secret::new("whsec-x".into()),
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|d| (*d).to_owned()).collect()
}

#[tokio::test]
async fn a_domain_belongs_to_one_service_and_is_freed_by_removal() {
    let db = TestDb::new().await;
    let store = Store::open(&db.url, &MasterKey::generate().unwrap()).await.unwrap();
    let web = store.create_service(&actor(), new_service("web", &["app.example.com"])).await.unwrap();
    assert_eq!(store.domain_owner("app.example.com").await.unwrap().as_deref(), Some(web.id.as_str()));

    // Creating a second service with the same domain fails as a whole: no service row.
    let e = store.create_service(&actor(), new_service("api", &["app.example.com"])).await.unwrap_err();
    assert!(matches!(&e, StoreError::InUse { kind: "domain", .. }), "{e:?}");
    assert_eq!(e.to_string(), "domain app.example.com is still used by service web");
    assert!(matches!(store.get_service("api").await, Err(StoreError::NotFound { .. })));

    let api = store.create_service(&actor(), new_service("api", &[])).await.unwrap();
    let e = store.add_domains(&actor(), &api.id, &strings(&["api.example.com", "app.example.com"])).await.unwrap_err();
    assert!(matches!(e, StoreError::InUse { .. }), "{e:?}");
    // All or nothing: api.example.com was not claimed either.
    assert_eq!(store.domain_owner("api.example.com").await.unwrap(), None);
    assert!(store.get_service(&api.id).await.unwrap().domains.is_empty());

    // Adding twice keeps one entry.
    let web = store.add_domains(&actor(), "web", &strings(&["www.example.com", "www.example.com"])).await.unwrap();
    assert_eq!(web.domains, ["app.example.com", "www.example.com"]);

    let web = store.remove_domains(&actor(), "web", &strings(&["app.example.com"])).await.unwrap();
    assert_eq!(web.domains, ["www.example.com"]);
    let e = store.remove_domains(&actor(), "web", &strings(&["app.example.com"])).await.unwrap_err();
    assert!(matches!(e, StoreError::NotFound { .. }), "{e:?}");
    let api = store.add_domains(&actor(), "api", &strings(&["app.example.com"])).await.unwrap();
    assert_eq!(api.domains, ["app.example.com"]);

    // Deleting a service frees its domains.
    store.delete_service(&actor(), "api").await.unwrap();
    assert_eq!(store.domain_owner("app.example.com").await.unwrap(), None);

    let actions: Vec<String> = store.audit_list(50, None).await.unwrap().into_iter().map(|a| a.action).collect();
    assert!(actions.iter().any(|a| a == "service.domains_added"), "{actions:?}");
    assert!(actions.iter().any(|a| a == "service.domains_removed"), "{actions:?}");
    store.audit_verify().await.unwrap();
}

#[tokio::test]
async fn concurrent_claims_of_one_domain_leave_exactly_one_owner() {
    let db = TestDb::new().await;
    let key = MasterKey::generate().unwrap();
    let store = Store::open(&db.url, &key).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(store.create_service(&actor(), new_service(&format!("s{i}"), &[])).await.unwrap().id);
    }
    // A second Store on the same database: its writes are not serialised with the first's.
    let other = Store::open(&db.url, &key).await.unwrap();
    let mut tasks = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let s = if i % 2 == 0 { store.clone() } else { other.clone() };
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            s.add_domains(&actor(), &id, &["race.example.com".to_owned()]).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::InUse { .. }) => {}
            // SQLite: a writer that lost the lock race may time out waiting; not a claim.
            Err(StoreError::Database(e)) if e.to_string().contains("locked") => {}
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_eq!(ok, 1);
    let owner = store.domain_owner("race.example.com").await.unwrap().unwrap();
    let owners: Vec<String> = {
        let mut v = Vec::new();
        for id in &ids {
            if store.get_service(id).await.unwrap().domains.contains(&"race.example.com".to_owned()) {
                v.push(id.clone());
            }
        }
        v
    };
    assert_eq!(owners, [owner]);
}
