//! Store behaviour on a real database (SQLite, or PostgreSQL when
//! SERVOS_TEST_DATABASE_URL is set): encryption at rest, wrong keys, rotation, audit chain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use servos_core::model::{ProxyKind, TlsMode};
use servos_core::{MasterKey, Secret};
use servos_store::hosts::{HostKind, NewHost};
use servos_store::records::CredentialKind;
use servos_store::services::NewService;
use servos_store::testing::TestDb;
use servos_store::{Actor, Store, StoreError};
use sqlx::{AssertSqlSafe, Row as _};

const CANARY: &str = "canary-secret-7f3a9c1e";

fn key(byte: u8) -> MasterKey {
    use base64::Engine as _;
    MasterKey::from_base64(&base64::engine::general_purpose::STANDARD.encode([byte; 32])).unwrap()
}

fn actor() -> Actor {
    Actor::user("admin", "127.0.0.1")
}

fn new_host(name: &str, secret: &str) -> NewHost {
    NewHost {
        name: name.into(),
        host: "10.0.0.1".into(),
        port: 22,
        user: "root".into(),
        private_key: Secret::new(format!("-----BEGIN OPENSSH PRIVATE KEY-----{secret}")),
        passphrase: Some(Secret::new(format!("pass-{secret}"))),
        public_key: "ssh-ed25519 AAAA test".into(),
        host_key_fingerprint: None,
        proxy: ProxyKind::Traefik,
    }
}

fn new_service(name: &str, servers: Vec<String>) -> NewService {
    NewService {
        name: name.into(),
        image: Some("busybox:latest".into()),
        registry_id: None,
        git: None,
        builder_id: None,
        servers,
        command: Some(vec!["httpd".into(), "-f".into()]),
        port: Some(8080),
        domains: vec!["app.example.com".into()],
        tls: TlsMode::Acme,
        healthcheck_path: None,
        healthcheck_port: None,
        webhook_secret: Secret::new(format!("whsec-{CANARY}")),
    }
}

/// Fills every encrypted column with a value containing CANARY.
async fn fill(store: &Store) -> (String, String) {
    let a = store.create_host(HostKind::Server, &actor(), new_host("web-1", CANARY)).await.unwrap();
    store.create_host(HostKind::Builder, &actor(), new_host("builder-1", CANARY)).await.unwrap();
    store
        .create_credential(CredentialKind::Registry, &actor(), "reg", "https://r.example", "u", &Secret::new(format!("regpw-{CANARY}")))
        .await
        .unwrap();
    store
        .create_credential(CredentialKind::GitCredential, &actor(), "gh", "github.com", "u", &Secret::new(format!("ghp-{CANARY}")))
        .await
        .unwrap();
    let svc = store.create_service(&actor(), new_service("app", vec![a.id.clone()])).await.unwrap();
    let mut vars = BTreeMap::new();
    vars.insert("API_KEY".to_owned(), Secret::new(format!("env-{CANARY}")));
    vars.insert("QUOTES".to_owned(), Secret::new(r#"a'b"c=d é"#.to_owned()));
    store.set_env(&actor(), &svc.id, &vars).await.unwrap();
    store
        .put_tls_state(&actor(), "acme:certificate:cp.example.com", &Secret::new(format!("tlskey-{CANARY}")), "acme.certificate_issued", serde_json::json!({}))
        .await
        .unwrap();
    (a.id, svc.id)
}

/// Every text cell of every table, as the database returns it.
async fn all_cells(store: &Store) -> String {
    let tables = [
        "meta", "users", "api_tokens", "servers", "builders", "registries", "git_credentials", "services",
        "service_servers", "env_vars", "deployments", "jobs", "audit_events", "tls_state",
    ];
    let mut out = String::new();
    for t in tables {
        let rows = sqlx::query(AssertSqlSafe(format!("SELECT * FROM {t}"))).fetch_all(store.pool()).await.unwrap();
        for row in rows {
            for i in 0..row.len() {
                if let Ok(Some(s)) = row.try_get::<Option<String>, _>(i) {
                    out.push_str(&s);
                    out.push('\n');
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn secrets_are_never_stored_in_plaintext() {
    let db = TestDb::new().await;
    let store = Store::open(&db.url, &key(1)).await.unwrap();
    fill(&store).await;
    let cells = all_cells(&store).await;
    assert!(cells.contains("web-1"), "sanity: the dump sees the data");
    assert!(!cells.contains(CANARY), "a secret is stored in plaintext");
    if let Some(path) = db.url.strip_prefix("sqlite://") {
        store.close().await;
        let dir = std::path::Path::new(path).parent().unwrap();
        for entry in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            let needle = CANARY.as_bytes();
            assert!(!bytes.windows(needle.len()).any(|w| w == needle), "plaintext secret in the SQLite files");
        }
    }
}

#[tokio::test]
async fn decrypted_values_round_trip_exactly() {
    let db = TestDb::new().await;
    let store = Store::open(&db.url, &key(1)).await.unwrap();
    let (server_id, svc_id) = fill(&store).await;
    let creds = store.host_credentials(HostKind::Server, &server_id).await.unwrap();
    assert_eq!(creds.private_key.expose(), &format!("-----BEGIN OPENSSH PRIVATE KEY-----{CANARY}"));
    let env = store.env_decrypted(&svc_id).await.unwrap();
    let env: Vec<(String, String)> = env.into_iter().map(|(n, v)| (n, v.expose().clone())).collect();
    assert_eq!(env, vec![("API_KEY".into(), format!("env-{CANARY}")), ("QUOTES".into(), r#"a'b"c=d é"#.into())]);
    assert_eq!(store.env_names(&svc_id).await.unwrap(), vec!["API_KEY", "QUOTES"]);
}

#[tokio::test]
async fn wrong_master_key_is_refused_at_open() {
    let db = TestDb::new().await;
    let store = Store::open(&db.url, &key(1)).await.unwrap();
    store.close().await;
    let err = Store::open(&db.url, &key(2)).await.unwrap_err();
    assert!(matches!(err, StoreError::WrongMasterKey), "{err}");
    assert!(err.to_string().contains("SERVOS_MASTER_KEY does not open this database"));
}

#[tokio::test]
async fn ciphertext_copied_to_another_row_does_not_decrypt() {
    let db = TestDb::new().await;
    let store = Store::open(&db.url, &key(1)).await.unwrap();
    let a = store.create_host(HostKind::Server, &actor(), new_host("a", "AAA")).await.unwrap();
    let b = store.create_host(HostKind::Server, &actor(), new_host("b", "BBB")).await.unwrap();
    sqlx::query("UPDATE servers SET private_key_enc = (SELECT private_key_enc FROM servers WHERE id = $1) WHERE id = $2")
        .bind(&a.id)
        .bind(&b.id)
        .execute(store.pool())
        .await
        .unwrap();
    let err = store.host_credentials(HostKind::Server, &b.id).await.unwrap_err();
    assert!(err.to_string().contains(&format!("cannot decrypt servers.private_key_enc of row {}", b.id)), "{err}");
}

#[tokio::test]
async fn one_corrupted_env_value_fails_the_whole_environment() {
    let db = TestDb::new().await;
    let store = Store::open(&db.url, &key(1)).await.unwrap();
    let (_, svc) = fill(&store).await;
    sqlx::query("UPDATE env_vars SET value_enc = 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' WHERE name = 'QUOTES'")
        .execute(store.pool())
        .await
        .unwrap();
    let err = store.env_decrypted(&svc).await.unwrap_err();
    assert!(err.to_string().contains("env_vars.value_enc"), "{err}");
}

#[tokio::test]
async fn rotation_re_encrypts_everything_and_the_old_key_stops_working() {
    let db = TestDb::new().await;
    let store = Store::open(&db.url, &key(1)).await.unwrap();
    let (server_id, svc_id) = fill(&store).await;
    let before = all_cells(&store).await;
    store.close().await;

    let report = servos_store::secrets::rotate(&db.url, &key(1), &key(2)).await.unwrap();
    assert_eq!(report.values, 1 + 2 + 2 + 1 + 1 + 1 + 2 + 1, "canary, 2 server, 2 builder, registry, git, webhook, 2 env, tls");
    assert!(report.audit_events > 5);

    assert!(matches!(Store::open(&db.url, &key(1)).await.unwrap_err(), StoreError::WrongMasterKey));
    let store = Store::open(&db.url, &key(2)).await.unwrap();
    assert_ne!(before, all_cells(&store).await);
    let creds = store.host_credentials(HostKind::Server, &server_id).await.unwrap();
    assert!(creds.private_key.expose().ends_with(CANARY));
    assert_eq!(store.env_decrypted(&svc_id).await.unwrap().len(), 2);
    assert!(store.webhook_secret(&svc_id).await.unwrap().expose().ends_with(CANARY));
    let tls = store.tls_state("acme:certificate:cp.example.com").await.unwrap().unwrap();
    assert_eq!(tls.expose(), &format!("tlskey-{CANARY}"));
    assert!(store.tls_state("acme:certificate:other.example.com").await.unwrap().is_none());
    store.audit_verify().await.unwrap();
}

#[tokio::test]
async fn failed_rotation_leaves_the_database_untouched() {
    let db = TestDb::new().await;
    let store = Store::open(&db.url, &key(1)).await.unwrap();
    fill(&store).await;
    // A value that no key opens: rotation must stop and change nothing.
    sqlx::query("UPDATE registries SET password_enc = 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'")
        .execute(store.pool())
        .await
        .unwrap();
    let before = all_cells(&store).await;
    store.close().await;
    let err = servos_store::secrets::rotate(&db.url, &key(1), &key(2)).await.unwrap_err();
    assert!(err.to_string().contains("registries.password_enc"), "{err}");
    let store = Store::open(&db.url, &key(1)).await.unwrap();
    assert_eq!(before, all_cells(&store).await);
}

#[tokio::test]
async fn audit_chain_detects_edited_and_deleted_events() {
    let db = TestDb::new().await;
    let store = Store::open(&db.url, &key(1)).await.unwrap();
    fill(&store).await;
    let report = store.audit_verify().await.unwrap();
    assert!(report.rows >= 6);
    let newest = store.audit_list(1, None).await.unwrap();
    assert_eq!(newest[0].seq, report.head_seq);
    assert_eq!(newest[0].actor, "user:admin");
    assert_eq!(newest[0].source, "127.0.0.1");
    assert!(!newest[0].detail.contains(CANARY), "audit detail must not hold secrets");

    sqlx::query("UPDATE audit_events SET actor = 'user:mallory' WHERE seq = 3").execute(store.pool()).await.unwrap();
    let err = store.audit_verify().await.unwrap_err();
    assert_eq!(err.to_string(), "stored data is inconsistent: audit chain: event 3 was altered");

    let db2 = TestDb::new().await;
    let store2 = Store::open(&db2.url, &key(1)).await.unwrap();
    fill(&store2).await;
    sqlx::query("DELETE FROM audit_events WHERE seq = 2").execute(store2.pool()).await.unwrap();
    let err = store2.audit_verify().await.unwrap_err();
    assert!(err.to_string().contains("expected event 2, found 3"), "{err}");
}

#[tokio::test]
async fn duplicate_names_and_servers_in_use_are_refused() {
    let db = TestDb::new().await;
    let store = Store::open(&db.url, &key(1)).await.unwrap();
    let (server_id, _) = fill(&store).await;
    let err = store.create_host(HostKind::Server, &actor(), new_host("web-1", "x")).await.unwrap_err();
    assert_eq!(err.to_string(), r#"server with name "web-1" already exists"#);
    let err = store.delete_host(HostKind::Server, &actor(), &server_id).await.unwrap_err();
    assert_eq!(err.to_string(), "server web-1 is still used by services app");
    let err = store.create_service(&actor(), new_service("other", vec!["no-such-id".into()])).await.unwrap_err();
    assert_eq!(err.to_string(), "server no-such-id not found");
    assert!(store.get_service("other").await.is_err(), "nothing half-written");
}

#[tokio::test]
async fn pinning_happens_once_and_reset_forgets_it() {
    let db = TestDb::new().await;
    let store = Store::open(&db.url, &key(1)).await.unwrap();
    let s = store.create_host(HostKind::Server, &actor(), new_host("s", "x")).await.unwrap();
    assert!(store.pin_host_key(HostKind::Server, &actor(), &s.id, "SHA256:first").await.unwrap());
    assert!(!store.pin_host_key(HostKind::Server, &actor(), &s.id, "SHA256:second").await.unwrap());
    assert_eq!(store.get_host(HostKind::Server, "s").await.unwrap().host_key_fingerprint.as_deref(), Some("SHA256:first"));
    let after = store.reset_host_key(HostKind::Server, &actor(), "s").await.unwrap();
    assert_eq!(after.host_key_fingerprint, None);
    assert_eq!(after.status, "pending");
}
