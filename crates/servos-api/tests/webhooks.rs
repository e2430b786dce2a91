//! Webhooks on a real database (SQLite, or PostgreSQL with SERVOS_TEST_DATABASE_URL):
//! signed pushes from each forge queue exactly one build of the pushed commit; forged,
//! unsigned, replayed, oversize and irrelevant deliveries queue nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use servos_api::{AppState, SetupToken};
use servos_core::MasterKey;
use servos_core::webhook::hmac_sha256_hex;
use servos_store::Store;
use servos_store::testing::TestDb;
use tower::ServiceExt as _;

const COMMIT: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";

struct App {
    router: axum::Router,
    state: AppState,
    store: Store,
    _dir: tempfile::TempDir,
    _db: TestDb,
    token: String,
    /// Every response body seen, to prove no webhook secret comes back after creation.
    seen: std::sync::Mutex<String>,
}

struct Service {
    id: String,
    secret: String,
}

fn key() -> MasterKey {
    use base64::Engine as _;
    MasterKey::from_base64(&base64::engine::general_purpose::STANDARD.encode([5u8; 32])).unwrap()
}

/// A delivery as a forge would send it.
struct Delivery {
    forge: &'static str,
    service_id: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Delivery {
    /// A correctly signed push of `commit` to `git_ref` from `forge`, with delivery id `id`.
    fn push(forge: &'static str, svc: &Service, git_ref: &str, commit: &str, id: &str) -> Self {
        let body = json!({
            "ref": git_ref, "before": "0000000000000000000000000000000000000001", "after": commit,
            "checkout_sha": commit, "object_kind": "push", "repository": {"full_name": "acme/app"},
        })
        .to_string()
        .into_bytes();
        let mut d = Self { forge, service_id: svc.id.clone(), headers: Vec::new(), body };
        match forge {
            "github" => d.header("x-github-event", "push").header("x-github-delivery", id),
            "gitea" => d.header("x-gitea-event", "push").header("x-gitea-delivery", id),
            _ => d.header("x-gitlab-event", "Push Hook").header("x-gitlab-event-uuid", id),
        };
        d.sign(&svc.secret);
        d
    }

    fn header(&mut self, k: &str, v: &str) -> &mut Self {
        self.headers.retain(|(name, _)| name != k);
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }

    fn without(&mut self, k: &str) -> &mut Self {
        self.headers.retain(|(name, _)| name != k);
        self
    }

    /// (Re-)signs the body with `secret` the way the delivery's forge does.
    fn sign(&mut self, secret: &str) -> &mut Self {
        let mac = hmac_sha256_hex(secret.as_bytes(), &self.body);
        match self.forge {
            "github" => self.header("x-hub-signature-256", &format!("sha256={mac}")),
            "gitea" => self.header("x-gitea-signature", &mac),
            _ => self.header("x-gitlab-token", secret),
        }
    }

    fn request(&self) -> Request<Body> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(format!("/api/v1/webhooks/{}/{}", self.forge, self.service_id))
            .header("content-type", "application/json");
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        req.body(Body::from(self.body.clone())).unwrap()
    }
}

impl App {
    async fn new() -> Self {
        let db = TestDb::new().await;
        let store = Store::open(&db.url, &key()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let setup = SetupToken::prepare(&store, dir.path()).await.unwrap();
        let state = AppState::new(store.clone(), setup, "https://servos.example/".into());
        let router = servos_api::router(state.clone());
        let mut app = Self { router, state, store, _dir: dir, _db: db, token: String::new(), seen: Default::default() };
        let setup_token = std::fs::read_to_string(app._dir.path().join("setup_token")).unwrap().trim().to_owned();
        let (s, v) = app
            .call(Method::POST, "/api/v1/setup", json!({"token": setup_token, "username": "admin", "password": "a long enough password"}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        app.token = v["token"].as_str().unwrap().to_owned();
        let (s, v) = app.call(Method::POST, "/api/v1/servers", json!({"name": "web-1", "host": "10.0.0.1"})).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let (s, v) = app.call(Method::POST, "/api/v1/builders", json!({"name": "build-1", "host": "10.0.0.2"})).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        app
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24).await.unwrap();
        let text = String::from_utf8_lossy(&bytes).to_string();
        self.seen.lock().unwrap().push_str(&text);
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn call(&self, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path).header("content-type", "application/json");
        if !self.token.is_empty() {
            req = req.header("authorization", format!("Bearer {}", self.token));
        }
        let body = if body.is_null() { Body::empty() } else { Body::from(body.to_string()) };
        self.send(req.body(body).unwrap()).await
    }

    async fn deliver(&self, d: &Delivery) -> (StatusCode, Value) {
        self.send(d.request()).await
    }

    /// A service built from branch `main` of a git repository.
    async fn git_service(&self, name: &str) -> Service {
        let (s, v) = self
            .call(
                Method::POST,
                "/api/v1/services",
                json!({"name": name, "git": {"repository": "https://git.example/acme/app.git", "branch": "main"}, "builder": "build-1", "servers": ["web-1"], "port": 8080}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        Service { id: v["id"].as_str().unwrap().to_owned(), secret: v["webhook_secret"].as_str().unwrap().to_owned() }
    }

    async fn deployments(&self, svc: &Service) -> Vec<servos_store::deployments::DeploymentRecord> {
        self.store.list_deployments(&svc.id, 100).await.unwrap()
    }

    async fn audit(&self, action: &str) -> Vec<servos_store::audit::AuditRecord> {
        self.store.audit_list(1000, None).await.unwrap().into_iter().filter(|e| e.action == action).collect()
    }

    /// Sum of `count` over the `webhook.rejected` events for `object_id`.
    async fn rejected_count(&self, object_id: &str) -> u64 {
        self.audit("webhook.rejected")
            .await
            .iter()
            .filter(|e| e.object_id == object_id)
            .map(|e| detail(e)["count"].as_u64().unwrap())
            .sum()
    }
}

fn detail(e: &servos_store::audit::AuditRecord) -> Value {
    serde_json::from_str(&e.detail).unwrap()
}

#[tokio::test]
async fn signed_push_to_the_branch_queues_a_build_of_the_commit_for_each_forge() {
    let app = App::new().await;
    let svc = app.git_service("app").await;
    let commits = [("github", COMMIT.to_owned()), ("gitlab", "a".repeat(40)), ("gitea", "b".repeat(40))];
    for (i, (forge, commit)) in commits.iter().enumerate() {
        let d = Delivery::push(forge, &svc, "refs/heads/main", commit, &format!("delivery-{i}"));
        let (s, v) = app.deliver(&d).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{forge}: {v}");
        assert_eq!(v["status"], "queued");
        let dep = app.store.get_deployment(v["deployment_id"].as_str().unwrap()).await.unwrap();
        assert_eq!(dep.service_id, svc.id);
        assert_eq!(dep.git_ref.as_deref(), Some(commit.as_str()), "{forge}");
        assert_eq!(dep.triggered_by, format!("webhook:{forge}"));
    }
    assert_eq!(app.deployments(&svc).await.len(), 3);
    let accepted = app.audit("webhook.accepted").await;
    assert_eq!(accepted.len(), 3);
    assert_eq!(detail(&accepted[0])["delivery_id"], "delivery-2", "newest first");
    assert!(app.audit("webhook.rejected").await.is_empty());
}

#[tokio::test]
async fn gitlab_uses_checkout_sha_and_forgejo_headers_are_understood() {
    let app = App::new().await;
    let svc = app.git_service("app").await;
    let mut d = Delivery::push("gitlab", &svc, "refs/heads/main", COMMIT, "gl-1");
    let body = json!({"object_kind": "push", "ref": "refs/heads/main", "after": "c".repeat(40), "checkout_sha": COMMIT});
    d.body = body.to_string().into_bytes();
    let (s, v) = app.deliver(&d).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(app.store.get_deployment(v["deployment_id"].as_str().unwrap()).await.unwrap().git_ref.as_deref(), Some(COMMIT));

    let mut d = Delivery::push("gitea", &svc, "refs/heads/main", &"d".repeat(40), "x");
    let mac = hmac_sha256_hex(svc.secret.as_bytes(), &d.body);
    d.without("x-gitea-signature").without("x-gitea-delivery").without("x-gitea-event");
    d.header("x-forgejo-signature", &mac).header("x-forgejo-delivery", "fj-1").header("x-forgejo-event", "push");
    let (s, v) = app.deliver(&d).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
}

#[tokio::test]
async fn forged_unsigned_misaddressed_and_unknown_deliveries_get_the_same_401_and_are_audited() {
    let app = App::new().await;
    app.state.webhooks().set_audit_window(Duration::from_millis(400));
    let svc = app.git_service("app").await;
    let other = app.git_service("other").await;

    let mut bad = Delivery::push("github", &svc, "refs/heads/main", COMMIT, "f-1");
    bad.sign("whsec_not-the-secret");
    let mut missing = Delivery::push("gitea", &svc, "refs/heads/main", COMMIT, "f-2");
    missing.without("x-gitea-signature");
    // GitHub's header sent to the GitLab receiver: GitLab's token header is missing.
    let mut wrong_forge = Delivery::push("github", &svc, "refs/heads/main", COMMIT, "f-3");
    wrong_forge.forge = "gitlab";
    wrong_forge.without("x-gitlab-event").header("x-gitlab-event", "Push Hook");
    // Signed with another service's secret.
    let mut cross = Delivery::push("github", &other, "refs/heads/main", COMMIT, "f-4");
    cross.service_id = svc.id.clone();
    // A well-formed id of no service, signed with a real secret; and a malformed one.
    let mut unknown = Delivery::push("github", &svc, "refs/heads/main", COMMIT, "f-5");
    unknown.service_id = uuid::Uuid::new_v4().to_string();
    let mut by_name = Delivery::push("github", &svc, "refs/heads/main", COMMIT, "f-6");
    by_name.service_id = "app".into();
    // A valid signature over a different body.
    let mut tampered = Delivery::push("github", &svc, "refs/heads/main", COMMIT, "f-7");
    tampered.body = tampered.body.iter().map(|&b| if b == b'6' { b'7' } else { b }).collect();

    let mut github_bodies = Vec::new();
    for d in [&bad, &missing, &wrong_forge, &cross, &unknown, &by_name, &tampered] {
        let (s, v) = app.deliver(d).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{}: {v}", d.forge);
        assert_eq!(v["error"]["code"], "invalid_signature");
        if d.forge == "github" {
            github_bodies.push(v);
        }
    }
    assert!(github_bodies.windows(2).all(|w| w[0] == w[1]), "unknown service and bad signature must look alike: {github_bodies:?}");
    assert!(app.deployments(&svc).await.is_empty() && app.deployments(&other).await.is_empty(), "nothing was queued");

    // The first rejection per service is audited at once, the rest when the window ends.
    let now = app.audit("webhook.rejected").await;
    assert!(now.iter().any(|e| e.object_id == svc.id && detail(e)["reasons"]["bad_signature"] == 1), "{now:?}");
    assert!(now.iter().any(|e| e.object_id == "unknown"));
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(app.rejected_count(&svc.id).await, 5, "bad, missing, wrong forge, cross-service, tampered");
    assert_eq!(app.rejected_count("unknown").await, 2);
    let all = app.audit("webhook.rejected").await;
    let reasons: Vec<Value> = all.iter().filter(|e| e.object_id == svc.id).map(|e| detail(e)["reasons"].clone()).collect();
    assert!(reasons.iter().any(|r| r["missing_signature"] == 2), "gitea without signature and github header to gitlab: {reasons:?}");
    assert!(all.iter().all(|e| e.actor.starts_with("webhook:")));
}

#[tokio::test]
async fn a_flood_of_forged_deliveries_writes_two_audit_events_per_window() {
    let app = App::new().await;
    app.state.webhooks().set_audit_window(Duration::from_millis(1500));
    let svc = app.git_service("app").await;
    let mut forged = Delivery::push("github", &svc, "refs/heads/main", COMMIT, "flood");
    forged.sign("whsec_guess");
    let sends = (0..200).map(|_| app.deliver(&forged));
    let statuses: Vec<StatusCode> = futures::future::join_all(sends).await.into_iter().map(|(s, _)| s).collect();
    assert!(statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED));
    assert_eq!(app.audit("webhook.rejected").await.len(), 1, "one event at once, the rest coalesced");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let events = app.audit("webhook.rejected").await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(detail(&events[0])["count"], 199);
    assert_eq!(app.rejected_count(&svc.id).await, 200);
    assert!(app.deployments(&svc).await.is_empty());
    assert!(app.store.audit_verify().await.is_ok(), "the chain stays intact");
}

#[tokio::test]
async fn a_delivery_id_deploys_once_even_when_sent_ten_times_at_once() {
    let app = App::new().await;
    let svc = app.git_service("app").await;
    let d = Delivery::push("github", &svc, "refs/heads/main", COMMIT, "same-delivery");
    let answers = futures::future::join_all((0..10).map(|_| app.deliver(&d))).await;
    let queued: Vec<&Value> = answers.iter().filter(|(s, _)| *s == StatusCode::ACCEPTED).map(|(_, v)| v).collect();
    assert_eq!(queued.len(), 1, "{answers:?}");
    let id = queued[0]["deployment_id"].clone();
    for (s, v) in answers.iter().filter(|(s, _)| *s != StatusCode::ACCEPTED) {
        assert_eq!(*s, StatusCode::OK);
        assert_eq!(v["status"], "duplicate");
        assert_eq!(v["deployment_id"], id, "a duplicate names the deployment the first delivery queued");
    }
    let (s, v) = app.deliver(&d).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("duplicate")));
    assert_eq!(app.deployments(&svc).await.len(), 1);

    // The same id from another forge, or for another service, is another delivery.
    let other = app.git_service("other").await;
    let (s, _) = app.deliver(&Delivery::push("github", &other, "refs/heads/main", COMMIT, "same-delivery")).await;
    assert_eq!(s, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn pings_other_branches_tags_deletions_and_image_services_are_acknowledged_and_ignored() {
    let app = App::new().await;
    let svc = app.git_service("app").await;
    let mut cases = Vec::new();
    let mut ping = Delivery::push("github", &svc, "refs/heads/main", COMMIT, "p-1");
    ping.header("x-github-event", "ping");
    ping.body = json!({"zen": "Keep it logically awesome.", "hook_id": 1}).to_string().into_bytes();
    ping.sign(&svc.secret);
    cases.push(("ping", ping));
    cases.push(("branch", Delivery::push("github", &svc, "refs/heads/feature", COMMIT, "p-2")));
    cases.push(("not a branch", Delivery::push("gitea", &svc, "refs/tags/v1.0", COMMIT, "p-3")));
    cases.push(("deleted", Delivery::push("github", &svc, "refs/heads/main", &"0".repeat(40), "p-4")));
    let mut tag = Delivery::push("gitlab", &svc, "refs/tags/v1.0", COMMIT, "p-5");
    tag.header("x-gitlab-event", "Tag Push Hook");
    cases.push(("not a push", tag));
    let mut issue = Delivery::push("github", &svc, "refs/heads/main", COMMIT, "p-6");
    issue.header("x-github-event", "issues");
    cases.push(("not a push", issue));

    let (s, v) = app.call(Method::POST, "/api/v1/services", json!({"name": "img", "image": "busybox:1.36", "servers": ["web-1"]})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let img = Service { id: v["id"].as_str().unwrap().into(), secret: v["webhook_secret"].as_str().unwrap().into() };
    cases.push(("not built from git", Delivery::push("github", &img, "refs/heads/main", COMMIT, "p-7")));

    for (why, d) in &cases {
        let (s, v) = app.deliver(d).await;
        assert_eq!(s, StatusCode::OK, "{why}: {v}");
        assert_eq!(v["status"], "ignored", "{why}");
        assert!(v["reason"].as_str().unwrap().contains(why), "{why}: {v}");
    }
    assert!(app.deployments(&svc).await.is_empty() && app.deployments(&img).await.is_empty());
    assert!(app.audit("webhook.accepted").await.is_empty());
}

#[tokio::test]
async fn oversize_bodies_are_refused_with_413_before_anything_else() {
    let app = App::new().await;
    let svc = app.git_service("app").await;
    let mut big = Delivery::push("github", &svc, "refs/heads/main", COMMIT, "big");
    big.body = vec![b' '; 1024 * 1024 + 1];
    big.sign(&svc.secret);
    let (s, v) = app.deliver(&big).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")));
    // Declared small but streamed without a length: cut off while reading.
    let chunks = (0..20).map(|_| Ok::<_, std::io::Error>(vec![b' '; 64 * 1024]));
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v1/webhooks/github/{}", svc.id))
        .header("x-hub-signature-256", "sha256=00")
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    let (s, _) = app.send(req).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(app.deployments(&svc).await.is_empty());
}

#[tokio::test]
async fn authentic_deliveries_without_a_usable_delivery_id_or_payload_are_bad_requests() {
    let app = App::new().await;
    let svc = app.git_service("app").await;
    let mut no_id = Delivery::push("github", &svc, "refs/heads/main", COMMIT, "x");
    no_id.without("x-github-delivery");
    let (s, v) = app.deliver(&no_id).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("missing_delivery_id")));
    let bad_id = Delivery::push("github", &svc, "refs/heads/main", COMMIT, "a b");
    let (s, v) = app.deliver(&bad_id).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_delivery_id")));
    let mut form = Delivery::push("github", &svc, "refs/heads/main", COMMIT, "form");
    form.body = b"payload=%7B%7D".to_vec();
    form.sign(&svc.secret);
    let (s, v) = app.deliver(&form).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_payload")));
    let (s, v) = app.deliver(&Delivery::push("github", &svc, "refs/heads/main", "not-a-sha;rm -rf /", "y")).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_payload")));
    let (s, v) = app.deliver(&Delivery { forge: "bitbucket", ..Delivery::push("github", &svc, "refs/heads/main", COMMIT, "z") }).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    assert!(app.deployments(&svc).await.is_empty());
}

#[tokio::test]
async fn rotation_and_deletion_take_effect_at_once() {
    let app = App::new().await;
    let svc = app.git_service("app").await;
    let (s, _) = app.deliver(&Delivery::push("github", &svc, "refs/heads/main", COMMIT, "r-1")).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, v) = app.call(Method::POST, &format!("/api/v1/services/{}/webhook-secret/rotate", svc.id), Value::Null).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let rotated = Service { id: svc.id.clone(), secret: v["webhook_secret"].as_str().unwrap().into() };
    let (s, _) = app.deliver(&Delivery::push("github", &svc, "refs/heads/main", COMMIT, "r-2")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "the old secret stops working at once");
    let (s, _) = app.deliver(&Delivery::push("github", &rotated, "refs/heads/main", COMMIT, "r-3")).await;
    assert_eq!(s, StatusCode::ACCEPTED);

    let (s, _) = app.call(Method::DELETE, &format!("/api/v1/services/{}", svc.id), Value::Null).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = app.deliver(&Delivery::push("github", &rotated, "refs/heads/main", COMMIT, "r-4")).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_signature")));
}

#[tokio::test]
async fn webhook_settings_list_each_forge_and_never_the_secret() {
    let app = App::new().await;
    let svc = app.git_service("app").await;
    let (s, v) = app.call(Method::GET, &format!("/api/v1/services/{}/webhooks", svc.id), Value::Null).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["branch"], "main");
    let urls: Vec<(&str, &str, &str)> = v["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["forge"].as_str().unwrap(), e["url"].as_str().unwrap(), e["secret_header"].as_str().unwrap()))
        .collect();
    let id = &svc.id;
    assert_eq!(
        urls,
        [
            ("github", format!("https://servos.example/api/v1/webhooks/github/{id}").as_str(), "X-Hub-Signature-256"),
            ("gitlab", format!("https://servos.example/api/v1/webhooks/gitlab/{id}").as_str(), "X-Gitlab-Token"),
            ("gitea", format!("https://servos.example/api/v1/webhooks/gitea/{id}").as_str(), "X-Gitea-Signature"),
        ]
    );
    let (s, _) = app.call(Method::GET, "/api/v1/services/app/webhooks", Value::Null).await;
    assert_eq!(s, StatusCode::OK, "by name too");
    let saved = std::mem::take(&mut *app.seen.lock().unwrap());
    let (s, _) = app.send(Request::get(format!("/api/v1/services/{id}/webhooks")).body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "needs a bearer token");

    for d in [
        Delivery::push("github", &svc, "refs/heads/main", COMMIT, "s-1"),
        Delivery::push("gitlab", &svc, "refs/heads/other", COMMIT, "s-2"),
        Delivery::push("github", &svc, "refs/heads/main", COMMIT, "s-1"),
    ] {
        app.deliver(&d).await;
    }
    let mut wrong = Delivery::push("gitlab", &svc, "refs/heads/main", COMMIT, "s-3");
    wrong.header("x-gitlab-token", &format!("{}x", svc.secret));
    app.deliver(&wrong).await;
    for path in ["/api/v1/audit?limit=1000", &format!("/api/v1/services/{id}"), "/api/v1/openapi.json"] {
        let (s, _) = app.call(Method::GET, path, Value::Null).await;
        assert_eq!(s, StatusCode::OK);
    }
    let seen = app.seen.lock().unwrap().clone();
    assert!(seen.contains("/api/v1/webhooks/{forge}/{service_id}"), "listed in the OpenAPI document");
    assert!(!seen.contains(&svc.secret), "the secret never comes back");
    assert_eq!(saved.matches(&svc.secret).count(), 1, "only the creation answer holds the secret");
}
