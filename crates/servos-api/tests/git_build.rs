//! End to end through the HTTP API, on real hosts (a builder and a separate server: network
//! namespaces with their own sshd and dockerd), a real git server demanding a token, and a
//! real store: a deploy of a git ref and a signed GitHub push webhook each end with the
//! built commit running on the server, without a registry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use servos_api::{AppState, SetupToken};
use servos_core::webhook::hmac_sha256_hex;
use servos_core::{MasterKey, Secret};
use servos_deploy::Runner;
use servos_deploy::build::auth_header;
use servos_store::Store;
use servos_store::testing::TestDb;
use servos_testkit::{GitHttpServer, TestNet, create_repository};
use tower::ServiceExt as _;

const TOKEN: &str = "glpat-svtApiTokenNeverLogged-42";
const BASE_IMAGE: &str = "svt-base:1";

fn dockerfile(text: &str) -> String {
    format!(
        "FROM {BASE_IMAGE}\nRUN mkdir -p /www && echo '{text}' > /www/index.html\n\
         CMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    )
}

struct App {
    router: axum::Router,
    state: AppState,
    store: Store,
    token: String,
    _dir: tempfile::TempDir,
    _db: TestDb,
}

impl App {
    async fn new() -> Self {
        let db = TestDb::new().await;
        let store = Store::open(&db.url, &MasterKey::generate().unwrap())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let setup = SetupToken::prepare(&store, dir.path()).await.unwrap();
        let state = AppState::new(store.clone(), setup, "http://127.0.0.1:8080".into());
        let router = servos_api::router(state.clone());
        let mut app = Self {
            router,
            state,
            store,
            token: String::new(),
            _dir: dir,
            _db: db,
        };
        let setup_token = std::fs::read_to_string(app._dir.path().join("setup_token"))
            .unwrap()
            .trim()
            .to_owned();
        let v = app
            .ok(
                Method::POST,
                "/api/v1/setup",
                json!({"token": setup_token, "username": "admin", "password": "a long enough password"}),
            )
            .await;
        app.token = v["token"].as_str().unwrap().to_owned();
        app
    }

    async fn call(&self, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json");
        if !self.token.is_empty() {
            req = req.header("authorization", format!("Bearer {}", self.token));
        }
        let body = if body.is_null() {
            Body::empty()
        } else {
            Body::from(body.to_string())
        };
        self.send(req.body(body).unwrap()).await
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).to_string();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// A call that must succeed (2xx); returns the body.
    async fn ok(&self, method: Method, path: &str, body: Value) -> Value {
        let (s, v) = self.call(method, path, body).await;
        assert!(s.is_success(), "{path}: {s} {v}");
        v
    }

    /// Runs the queued deployment `id` to its end and returns it as the API shows it.
    async fn run(&self, id: &str) -> Value {
        let done = Runner::new(self.state.engine().clone())
            .run_next()
            .await
            .unwrap()
            .unwrap();
        assert_eq!(done.id, id);
        self.ok(
            Method::GET,
            &format!("/api/v1/deployments/{id}"),
            Value::Null,
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_of_a_ref_and_a_signed_github_push_each_end_with_the_commit_running() {
    let net = TestNet::builder().hosts(2).with_docker().build().unwrap();
    let (builder, server) = (net.host(0), net.host(1));
    builder.import_busybox_image(BASE_IMAGE).unwrap();
    let repos = tempfile::tempdir().unwrap();
    let first = create_repository(
        repos.path(),
        "app",
        &[("deploy/Dockerfile", &dockerfile("first"))],
    )
    .unwrap();
    let header = auth_header("", &Secret::new(TOKEN.to_owned()));
    let git = GitHttpServer::start(net.gateway(), repos.path(), Some(header.expose())).unwrap();
    let app = App::new().await;

    let key = servos_ssh::keys::generate_ed25519("servos-test").unwrap();
    for (kind, name, host) in [("builders", "b1", builder), ("servers", "s1", server)] {
        host.authorize(&key.public_line).unwrap();
        app.ok(
            Method::POST,
            &format!("/api/v1/{kind}"),
            json!({"name": name, "host": host.addr().to_string(), "private_key": key.private_openssh.expose(), "proxy": if kind == "servers" { json!("none") } else { Value::Null }}),
        )
        .await;
    }
    app.ok(
        Method::POST,
        "/api/v1/git-credentials",
        json!({"name": "forge", "host": git.addr().ip().to_string(), "token": TOKEN}),
    )
    .await;
    let svc = app
        .ok(
            Method::POST,
            "/api/v1/services",
            json!({"name": "app", "git": {"repository": git.url("app.git"), "branch": "main", "credential_id": "forge", "dockerfile": "deploy/Dockerfile"},
                   "servers": ["s1"], "port": 8080}),
        )
        .await;
    let (svc_id, secret) = (
        svc["id"].as_str().unwrap().to_owned(),
        svc["webhook_secret"].as_str().unwrap().to_owned(),
    );
    assert_eq!(svc["git"]["dockerfile"], "deploy/Dockerfile");

    // A ref that is not a ref is refused before anything is queued.
    let (s, v) = app
        .call(
            Method::POST,
            &format!("/api/v1/services/{svc_id}/deployments"),
            json!({"ref": "--upload-pack=touch /tmp/x"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["code"], "invalid_input");

    // Deploy the branch by name (no builder on the service: the only builder is used).
    let queued = app
        .ok(
            Method::POST,
            &format!("/api/v1/services/{svc_id}/deployments"),
            json!({"ref": "main"}),
        )
        .await;
    let done = app.run(queued["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["git_ref"], first.as_str());
    let served = |image: &str| {
        let out = server
            .docker_cli(&[
                "run",
                "--rm",
                "--entrypoint",
                "cat",
                image,
                "/www/index.html",
            ])
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let running = || {
        let out = server
            .docker_cli(&[
                "ps",
                "--filter",
                &format!("label=servos.service={svc_id}"),
                "--format",
                "{{.Image}}",
            ])
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(running(), format!("servos/app:{first}"));
    assert_eq!(served(&running()), "first");

    // A new commit is pushed; GitHub delivers a signed push event; it is built and runs.
    let second = create_repository(
        repos.path(),
        "app",
        &[("deploy/Dockerfile", &dockerfile("second"))],
    )
    .unwrap();
    let body = json!({"ref": "refs/heads/main", "before": first, "after": second, "repository": {"full_name": "acme/app"}})
        .to_string();
    let signature = format!(
        "sha256={}",
        hmac_sha256_hex(secret.as_bytes(), body.as_bytes())
    );
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v1/webhooks/github/{svc_id}"))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", "delivery-e2e-1")
        .header("x-hub-signature-256", signature)
        .body(Body::from(body))
        .unwrap();
    let (s, v) = app.send(request).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let done = app.run(v["deployment_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["git_ref"], second.as_str());
    assert_eq!(running(), format!("servos/app:{second}"));
    assert_eq!(served(&running()), "second");

    // The token is in no stored log line and no audit event.
    for id in [
        queued["id"].as_str().unwrap(),
        v["deployment_id"].as_str().unwrap(),
    ] {
        for line in app.store.deployment_logs(id, 0).await.unwrap() {
            assert!(!line.line.contains(TOKEN), "{}", line.line);
        }
    }
    let audit = app.store.audit_list(1000, None).await.unwrap();
    assert!(audit.iter().all(|e| !e.detail.contains(TOKEN)));
    assert!(
        !builder
            .dir()
            .join("var-lib-servos/builds")
            .read_dir()
            .unwrap()
            .any(|_| true),
        "a work dir is left on the builder"
    );
}
