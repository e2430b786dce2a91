//! The HTTP API on a real database (SQLite, or PostgreSQL with SERVOS_TEST_DATABASE_URL):
//! setup, auth, tokens, resources, write-only secrets, error shapes, audit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use servos_api::{AppState, SetupToken};
use servos_core::MasterKey;
use servos_store::Store;
use servos_store::testing::TestDb;
use tower::ServiceExt as _;

const CANARY: &str = "canary-7e1f-do-not-leak";

struct App {
    router: axum::Router,
    store: Store,
    dir: tempfile::TempDir,
    _db: TestDb,
    /// Every response body seen, to prove no secret ever comes back.
    seen: std::sync::Mutex<String>,
}

fn key() -> MasterKey {
    use base64::Engine as _;
    MasterKey::from_base64(&base64::engine::general_purpose::STANDARD.encode([9u8; 32])).unwrap()
}

impl App {
    async fn new() -> Self {
        let db = TestDb::new().await;
        let store = Store::open(&db.url, &key()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let setup = SetupToken::prepare(&store, dir.path()).await.unwrap();
        let router = servos_api::router(AppState::new(store.clone(), setup, "https://servos.example".into()));
        Self { router, store, dir, _db: db, seen: Default::default() }
    }

    fn setup_token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("setup_token")).unwrap().trim().to_owned()
    }

    async fn raw(&self, method: Method, path: &str, token: Option<&str>, body: Option<String>) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req.header("content-type", "application/json").body(Body::from(b)).unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24).await.unwrap();
        let text = String::from_utf8_lossy(&bytes).to_string();
        self.seen.lock().unwrap().push_str(&text);
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        self.raw(method, path, token, body.map(|b| b.to_string())).await
    }

    /// Runs setup and returns the admin token.
    async fn admin(&self) -> String {
        let token = self.setup_token();
        let (s, v) = self
            .call(Method::POST, "/api/v1/setup", None, Some(json!({"token": token, "username": "admin", "password": "a long enough password"})))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_owned()
    }
}

fn err_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn setup_token_is_single_use_and_compared_exactly() {
    let app = App::new().await;
    let path = app.dir.path().join("setup_token");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let real = app.setup_token();
    assert!(real.starts_with("setup_") && real.len() > 40);

    let (s, v) = app
        .call(Method::POST, "/api/v1/setup", None, Some(json!({"token": format!("{real}x"), "username": "admin", "password": "a long enough password"})))
        .await;
    assert_eq!((s, err_code(&v)), (StatusCode::UNAUTHORIZED, "invalid_setup_token"));
    assert!(!app.store.admin_exists().await.unwrap());

    let (s, v) = app
        .call(Method::POST, "/api/v1/setup", None, Some(json!({"token": real, "username": "admin", "password": "short"})))
        .await;
    assert_eq!((s, err_code(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"));
    assert!(v["error"]["message"].as_str().unwrap().starts_with("password: is 5 characters long"));

    let token = app.admin().await;
    assert!(token.starts_with("servos_"));
    assert!(!path.exists(), "setup_token file must be deleted once consumed");
    let (s, v) = app
        .call(Method::POST, "/api/v1/setup", None, Some(json!({"token": real, "username": "other", "password": "a long enough password"})))
        .await;
    assert_eq!((s, err_code(&v)), (StatusCode::CONFLICT, "already_set_up"));
    let (s, _) = app.call(Method::GET, "/api/v1/servers", Some(&token), None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn setup_attempts_are_rate_limited() {
    let app = App::new().await;
    let mut statuses = Vec::new();
    for _ in 0..11 {
        let (s, _) = app
            .call(Method::POST, "/api/v1/setup", None, Some(json!({"token": "setup_wrong", "username": "a", "password": "a long enough password"})))
            .await;
        statuses.push(s);
    }
    assert!(statuses[..10].iter().all(|s| *s == StatusCode::UNAUTHORIZED), "{statuses:?}");
    assert_eq!(statuses[10], StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn login_issues_expiring_tokens_and_rejects_wrong_passwords() {
    let app = App::new().await;
    app.admin().await;
    let (s, v) = app.call(Method::POST, "/api/v1/auth/login", None, Some(json!({"username": "admin", "password": "wrong password!!"}))).await;
    assert_eq!((s, err_code(&v)), (StatusCode::UNAUTHORIZED, "invalid_credentials"));
    let (s, v) = app.call(Method::POST, "/api/v1/auth/login", None, Some(json!({"username": "nobody", "password": "wrong password!!"}))).await;
    assert_eq!((s, err_code(&v)), (StatusCode::UNAUTHORIZED, "invalid_credentials"));
    let (s, v) = app.call(Method::POST, "/api/v1/auth/login", None, Some(json!({"username": "admin", "password": "a long enough password"}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["expires_at"].as_str().unwrap() > "2026");
    let t = v["token"].as_str().unwrap();
    let (s, _) = app.call(Method::GET, "/api/v1/services", Some(t), None).await;
    assert_eq!(s, StatusCode::OK);
    for _ in 0..10 {
        app.call(Method::POST, "/api/v1/auth/login", None, Some(json!({"username": "admin", "password": "wrong password!!"}))).await;
    }
    let (s, v) = app.call(Method::POST, "/api/v1/auth/login", None, Some(json!({"username": "admin", "password": "a long enough password"}))).await;
    assert_eq!((s, err_code(&v)), (StatusCode::TOO_MANY_REQUESTS, "rate_limited"));
}

#[tokio::test]
async fn requests_without_a_valid_token_are_refused() {
    let app = App::new().await;
    let admin = app.admin().await;
    let (s, v) = app.call(Method::GET, "/api/v1/servers", None, None).await;
    assert_eq!((s, err_code(&v)), (StatusCode::UNAUTHORIZED, "missing_token"));
    let (s, v) = app.call(Method::GET, "/api/v1/servers", Some("servos_not-a-token"), None).await;
    assert_eq!((s, err_code(&v)), (StatusCode::UNAUTHORIZED, "invalid_token"));

    let (s, v) = app.call(Method::POST, "/api/v1/tokens", Some(&admin), Some(json!({"name": "ci"}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let ci = v["token"].as_str().unwrap().to_owned();
    let id = v["id"].as_str().unwrap().to_owned();
    let (_, list) = app.call(Method::GET, "/api/v1/tokens", Some(&admin), None).await;
    assert!(!list.to_string().contains(&ci), "tokens are shown once, never listed");
    assert_eq!(app.call(Method::GET, "/api/v1/audit", Some(&ci), None).await.0, StatusCode::OK);
    let (s, _) = app.call(Method::DELETE, &format!("/api/v1/tokens/{id}"), Some(&admin), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = app.call(Method::GET, "/api/v1/audit", Some(&ci), None).await;
    assert_eq!((s, err_code(&v)), (StatusCode::UNAUTHORIZED, "token_revoked"));

    // An expired token: expire it in the database, as time would.
    let (_, v) = app.call(Method::POST, "/api/v1/tokens", Some(&admin), Some(json!({"name": "short", "expires_in_days": 1}))).await;
    let short = v["token"].as_str().unwrap().to_owned();
    sqlx::query("UPDATE api_tokens SET expires_at = '2000-01-01T00:00:00.000000Z' WHERE name = 'short'")
        .execute(app.store.pool())
        .await
        .unwrap();
    let (s, v) = app.call(Method::GET, "/api/v1/audit", Some(&short), None).await;
    assert_eq!((s, err_code(&v)), (StatusCode::UNAUTHORIZED, "token_expired"));
}

#[tokio::test]
async fn bad_input_gets_a_stable_code_and_names_the_value() {
    let app = App::new().await;
    let t = app.admin().await;
    let (s, v) = app.raw(Method::POST, "/api/v1/servers", Some(&t), Some("{not json".into())).await;
    assert_eq!((s, err_code(&v)), (StatusCode::BAD_REQUEST, "malformed_json"));
    let (s, v) = app.call(Method::POST, "/api/v1/servers", Some(&t), Some(json!({"name": "a", "host": "h", "bogus": 1}))).await;
    assert_eq!((s, err_code(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"));
    assert!(v["error"]["message"].as_str().unwrap().contains("unknown field `bogus`"), "{v}");
    for hostile in ["a'b", "$(reboot)", "a\nb", "a\0b", "`id`", &"x".repeat(64)] {
        let (s, v) = app.call(Method::POST, "/api/v1/servers", Some(&t), Some(json!({"name": hostile, "host": "10.0.0.1"}))).await;
        assert_eq!((s, err_code(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"), "{hostile:?}");
        assert!(v["error"]["message"].as_str().unwrap().starts_with("name: "), "{v}");
    }
    let (s, v) = app.call(Method::POST, "/api/v1/servers", Some(&t), Some(json!({"name": "ok", "host": "-oProxyCommand=x"}))).await;
    assert_eq!((s, err_code(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"));
    let (s, v) = app.call(Method::POST, "/api/v1/servers", Some(&t), Some(json!({"name": "ok", "host": "10.0.0.1", "private_key": "garbage"}))).await;
    assert_eq!((s, err_code(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"));
    assert!(v["error"]["message"].as_str().unwrap().starts_with("private_key: "), "{v}");
    let (s, v) = app.call(Method::POST, "/api/v1/servers", Some(&t), Some(json!({"name": "ok", "host": "10.0.0.1", "host_key_fingerprint": "MD5:aa"}))).await;
    assert_eq!((s, err_code(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"));
    let (s, _) = app.call(Method::POST, "/api/v1/servers", Some(&t), Some(json!({"name": "ok", "host": "10.0.0.1"}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = app.call(Method::POST, "/api/v1/servers", Some(&t), Some(json!({"name": "ok", "host": "10.0.0.2"}))).await;
    assert_eq!((s, err_code(&v)), (StatusCode::CONFLICT, "already_exists"));
    let (s, v) = app.call(Method::GET, "/api/v1/servers/nope", Some(&t), None).await;
    assert_eq!((s, err_code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    let (s, v) = app.call(Method::GET, "/api/v1/nothing-here", Some(&t), None).await;
    assert_eq!((s, err_code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    let servers = app.store.list_hosts(servos_store::hosts::HostKind::Server).await.unwrap();
    assert_eq!(servers.len(), 1, "nothing half-written by refused requests");
}

#[tokio::test]
async fn secret_fields_are_write_only_everywhere() {
    let app = App::new().await;
    let t = app.admin().await;
    let (s, server) = app.call(Method::POST, "/api/v1/servers", Some(&t), Some(json!({"name": "web-1", "host": "10.0.0.1"}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let public = server["public_key"].as_str().unwrap();
    assert!(public.starts_with("ssh-ed25519 AAAA") && public.ends_with(" servos@web-1"), "{public}");
    assert_eq!(server["status"], "pending");
    let sid = server["id"].as_str().unwrap();

    let (s, _) = app.call(Method::POST, "/api/v1/registries", Some(&t), Some(json!({"name": "reg", "url": "registry.example:5000", "username": "u", "password": format!("pw-{CANARY}")}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = app.call(Method::POST, "/api/v1/git-credentials", Some(&t), Some(json!({"name": "gh", "host": "github.com", "token": format!("ghp-{CANARY}")}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, svc) = app
        .call(Method::POST, "/api/v1/services", Some(&t), Some(json!({"name": "app", "image": "busybox:latest", "servers": ["web-1"], "registry": "reg", "port": 8080, "domains": ["app.example.com"]})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{svc}");
    let whsec = svc["webhook_secret"].as_str().unwrap().to_owned();
    assert!(whsec.starts_with("whsec_"));
    assert_eq!(svc["servers"], json!([sid]));
    assert_eq!(svc["webhook_url"], format!("https://servos.example/api/v1/webhooks/github/{}", svc["id"].as_str().unwrap()));
    let id = svc["id"].as_str().unwrap();

    let vars = json!({"vars": {"API_KEY": format!("k-{CANARY}"), "QUOTED": format!("a'b\"c=d é {CANARY}")}});
    let (s, v) = app.call(Method::PUT, &format!("/api/v1/services/{id}/env"), Some(&t), Some(vars)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v, json!({"names": ["API_KEY", "QUOTED"]}));
    let (s, v) = app.call(Method::PUT, &format!("/api/v1/services/{id}/env"), Some(&t), Some(json!({"vars": {"PEM": "a\nb"}}))).await;
    assert_eq!((s, err_code(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"));
    let (s, v) = app.call(Method::PATCH, &format!("/api/v1/services/{id}/env"), Some(&t), Some(json!({"set": {"EXTRA": CANARY}, "unset": ["QUOTED"]}))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v, json!({"names": ["API_KEY", "EXTRA"]}));
    let env = app.store.env_decrypted(id).await.unwrap();
    assert_eq!(env[0].1.expose(), &format!("k-{CANARY}"));

    for path in ["/api/v1/servers", "/api/v1/registries", "/api/v1/git-credentials", "/api/v1/services", "/api/v1/audit?limit=1000",
        &format!("/api/v1/services/{id}"), &format!("/api/v1/services/{id}/env"), "/api/v1/openapi.json"] {
        let (s, _) = app.call(Method::GET, path, Some(&t), None).await;
        assert_eq!(s, StatusCode::OK, "{path}");
    }
    let seen = app.seen.lock().unwrap().clone();
    assert!(!seen.contains(CANARY), "a secret came back in an API response");
    assert!(!seen.contains("PRIVATE KEY"), "a private key came back in an API response");
    assert_eq!(seen.matches(&whsec).count(), 1, "the webhook secret is shown once, at creation");

    let (s, v) = app.call(Method::POST, "/api/v1/services", Some(&t), Some(json!({"name": "app2", "image": "busybox", "servers": ["web-1"], "domains": ["APP.example.com"]}))).await;
    assert_eq!((s, err_code(&v)), (StatusCode::CONFLICT, "domain_taken"));
    let (s, v) = app.call(Method::DELETE, "/api/v1/servers/web-1", Some(&t), None).await;
    assert_eq!((s, err_code(&v)), (StatusCode::CONFLICT, "in_use"));
}

#[tokio::test]
async fn imported_keys_need_the_right_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "right passphrase", "-C", "imported", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let pem = std::fs::read_to_string(&key).unwrap();
    let app = App::new().await;
    let t = app.admin().await;
    let (s, v) = app.call(Method::POST, "/api/v1/servers", Some(&t), Some(json!({"name": "a", "host": "10.0.0.1", "private_key": pem, "passphrase": "wrong"}))).await;
    assert_eq!((s, err_code(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"));
    assert!(v["error"]["message"].as_str().unwrap().contains("passphrase"), "{v}");
    let (s, v) = app.call(Method::POST, "/api/v1/servers", Some(&t), Some(json!({"name": "a", "host": "10.0.0.1", "private_key": pem, "passphrase": "right passphrase"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let expected = std::fs::read_to_string(dir.path().join("k.pub")).unwrap();
    assert_eq!(v["public_key"].as_str().unwrap(), expected.trim());
    assert!(!app.seen.lock().unwrap().contains("right passphrase"));
}

#[tokio::test]
async fn every_change_is_audited_and_the_chain_verifies() {
    let app = App::new().await;
    let t = app.admin().await;
    app.call(Method::POST, "/api/v1/servers", Some(&t), Some(json!({"name": "web-1", "host": "10.0.0.1"}))).await;
    app.call(Method::POST, "/api/v1/servers/web-1/fingerprint/reset", Some(&t), None).await;
    app.call(Method::DELETE, "/api/v1/servers/web-1", Some(&t), None).await;
    let (_, events) = app.call(Method::GET, "/api/v1/audit", Some(&t), None).await;
    let actions: Vec<&str> = events.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["server.deleted", "server.host_key_reset", "server.created", "token.created", "setup.admin_created"]);
    assert_eq!(events[0]["actor"], "user:admin");
    let (s, v) = app.call(Method::GET, "/api/v1/audit/verify", Some(&t), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["rows"], 5);
    sqlx::query("DELETE FROM audit_events WHERE seq = 3").execute(app.store.pool()).await.unwrap();
    let (s, v) = app.call(Method::GET, "/api/v1/audit/verify", Some(&t), None).await;
    assert_eq!((s, err_code(&v)), (StatusCode::INTERNAL_SERVER_ERROR, "corrupt_data"));
    assert!(v["error"]["message"].as_str().unwrap().contains("expected event 3, found 4"));
}

#[tokio::test]
async fn openapi_document_lists_the_resources() {
    let app = App::new().await;
    let (s, doc) = app.call(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in ["/api/v1/setup", "/api/v1/auth/login", "/api/v1/servers", "/api/v1/servers/{id}/fingerprint/reset", "/api/v1/builders",
        "/api/v1/registries", "/api/v1/git-credentials", "/api/v1/services", "/api/v1/services/{id}/env", "/api/v1/tokens", "/api/v1/audit"] {
        assert!(paths.contains_key(p), "missing {p}");
    }
    let create = &doc["components"]["schemas"]["CreateHost"]["properties"]["private_key"];
    assert_eq!(create["writeOnly"], true, "{create}");
    let (s, body) = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((s, body), (StatusCode::OK, Value::String("ok".into())));
}

#[tokio::test]
async fn web_ui_is_served_with_a_strict_content_security_policy() {
    let app = App::new().await;
    let resp = app.router.clone().oneshot(Request::builder().uri("/").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let csp = resp.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("default-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    let html = String::from_utf8(body.to_vec()).unwrap();
    assert!(html.contains("Create the first admin") && html.contains("src=\"/ui/app.js\""));
    assert!(!html.contains("<script>"), "no inline script");
    let resp = app.router.clone().oneshot(Request::builder().uri("/ui/app.js").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/javascript; charset=utf-8");
    let resp = app.router.clone().oneshot(Request::builder().uri("/api/v1/servers").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn service_list_reflects_every_write_at_once() {
    let app = App::new().await;
    let t = app.admin().await;
    app.call(Method::POST, "/api/v1/servers", Some(&t), Some(json!({"name": "web-1", "host": "10.0.0.1"}))).await;
    let (_, v) = app.call(Method::GET, "/api/v1/services", Some(&t), None).await;
    assert_eq!(v, json!([]));
    for name in ["a", "b"] {
        let (s, _) = app.call(Method::POST, "/api/v1/services", Some(&t), Some(json!({"name": name, "image": "busybox", "servers": ["web-1"]}))).await;
        assert_eq!(s, StatusCode::CREATED);
        let (_, v) = app.call(Method::GET, "/api/v1/services", Some(&t), None).await;
        assert_eq!(v.as_array().unwrap().last().unwrap()["name"], name, "a cached list must not hide a new service");
    }
    let (s, _) = app.call(Method::DELETE, "/api/v1/services/a", Some(&t), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, v) = app.call(Method::GET, "/api/v1/services", Some(&t), None).await;
    let names: Vec<&str> = v.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["b"]);
}

#[tokio::test]
async fn domains_are_added_listed_removed_and_never_shared_between_services() {
    let app = App::new().await;
    let t = app.admin().await;
    // proxy "none": the routing step has no proxy to reach (Caddy is covered end to end in
    // servos-deploy's proxy test).
    let (s, _) = app.call(Method::POST, "/api/v1/servers", Some(&t), Some(json!({"name": "web-1", "host": "10.0.0.1", "proxy": "none"}))).await;
    assert_eq!(s, StatusCode::CREATED);
    for name in ["web", "api"] {
        let (s, v) = app.call(Method::POST, "/api/v1/services", Some(&t), Some(json!({"name": name, "image": "busybox", "servers": ["web-1"], "port": 8080}))).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (s, v) = app
        .call(Method::POST, "/api/v1/services/web/domains", Some(&t), Some(json!({"domains": ["App.Example.com", "www.example.com"], "path_prefix": "/v1/"})))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["domains"], json!(["app.example.com", "www.example.com"]));
    assert_eq!(v["path_prefix"], "/v1");
    assert_eq!(v["routing"], json!(["server web-1: no proxy"]));
    assert_eq!(v["routing_error"], Value::Null);

    // Another service cannot claim it, in any spelling.
    let (s, v) = app.call(Method::POST, "/api/v1/services/api/domains", Some(&t), Some(json!({"domains": ["APP.example.com"]}))).await;
    assert_eq!((s, err_code(&v)), (StatusCode::CONFLICT, "in_use"), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("app.example.com is still used by service web"), "{v}");

    // Bad input names the value; wildcards need a proxy and issuer that support them.
    let (s, v) = app.call(Method::POST, "/api/v1/services/api/domains", Some(&t), Some(json!({"domains": ["bad_domain.example.com"]}))).await;
    assert_eq!((s, err_code(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("\"bad_domain.example.com\""), "{v}");
    let (s, v) = app.call(Method::POST, "/api/v1/services/api/domains", Some(&t), Some(json!({"domains": ["*.example.com"]}))).await;
    assert_eq!((s, err_code(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"), "{v}");

    let (s, v) = app.call(Method::GET, "/api/v1/services/web/domains", Some(&t), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["domains"], json!(["app.example.com", "www.example.com"]));

    let (s, v) = app.call(Method::DELETE, "/api/v1/services/web/domains/app.example.com", Some(&t), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["domains"], json!(["www.example.com"]));
    let (s, _) = app.call(Method::DELETE, "/api/v1/services/web/domains/app.example.com", Some(&t), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Freed: the other service may now claim it.
    let (s, v) = app.call(Method::POST, "/api/v1/services/api/domains", Some(&t), Some(json!({"domains": ["app.example.com"]}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let (s, v) = app.call(Method::GET, "/api/v1/servers/web-1/proxy", Some(&t), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((v["driver"].as_str(), v["running"].as_bool()), (Some("none"), Some(false)));

    let (_, doc) = app.call(Method::GET, "/api/v1/openapi.json", Some(&t), None).await;
    assert!(doc["paths"]["/api/v1/services/{id}/domains"]["post"].is_object());
    assert!(doc["paths"]["/api/v1/servers/{id}/proxy"]["get"].is_object());
}
