//! Webhooks through the real `servos` binary: `servos webhooks show` prints the URL for
//! each forge, a signed push to the running control plane queues a build of the pushed
//! commit, a forged one is refused, and the secret is never printed again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Env, keygen};
use serde_json::{Value, json};
use servos_core::webhook::hmac_sha256_hex;

const COMMIT: &str = "0f3c9d52a1b7e4f6a8c0d2e4f6a8b0c2d4e6f8a0";

#[tokio::test]
async fn cli_shows_webhook_urls_and_a_signed_push_to_the_binary_queues_a_build() {
    let env = Env::new().await;
    let server = env.serve(&keygen());
    env.setup_admin();
    env.ok(&["servers", "add", "web-1", "--host", "10.250.9.9"], "");
    env.ok(&["builders", "add", "build-1", "--host", "10.250.9.10"], "");
    let created: Value = serde_json::from_str(&env.ok(
        &["--json", "services", "create", "app", "--git", "https://git.example/acme/app.git", "--branch", "main", "--builder", "build-1", "--server", "web-1", "--port", "8080"],
        "",
    ))
    .unwrap();
    let id = created["id"].as_str().unwrap();
    let secret = created["webhook_secret"].as_str().unwrap();

    let shown = env.ok(&["webhooks", "show", "app"], "");
    let base = env.url();
    for (forge, header) in [("github", "X-Hub-Signature-256"), ("gitlab", "X-Gitlab-Token"), ("gitea", "X-Gitea-Signature")] {
        let line = shown.lines().find(|l| l.starts_with(forge)).unwrap_or_else(|| panic!("no {forge} line in:\n{shown}"));
        assert!(line.contains(&format!("{base}/api/v1/webhooks/{forge}/{id}")) && line.ends_with(header), "{line}");
    }
    assert!(shown.contains("Pushes to branch main of app"), "{shown}");
    let as_json: Value = serde_json::from_str(&env.ok(&["--json", "webhooks", "show", "app"], "")).unwrap();
    assert_eq!(as_json["endpoints"].as_array().unwrap().len(), 3);
    assert!(!shown.contains(secret) && !as_json.to_string().contains(secret));

    let body = json!({"ref": "refs/heads/main", "after": COMMIT, "repository": {"full_name": "acme/app"}}).to_string();
    let http = reqwest::Client::new();
    let send = |signature: String, delivery: &'static str| {
        http.post(format!("{base}/api/v1/webhooks/github/{id}"))
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", signature)
            .body(body.clone())
            .send()
    };
    let forged = send(format!("sha256={}", hmac_sha256_hex(b"whsec_guess", body.as_bytes())), "d-0").await.unwrap();
    assert_eq!(forged.status(), 401);
    let resp = send(format!("sha256={}", hmac_sha256_hex(secret.as_bytes(), body.as_bytes())), "d-1").await.unwrap();
    assert_eq!(resp.status(), 202);
    let answer: Value = resp.json().await.unwrap();
    let deployment = answer["deployment_id"].as_str().unwrap();
    let again = send(format!("sha256={}", hmac_sha256_hex(secret.as_bytes(), body.as_bytes())), "d-1").await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap()["status"], "duplicate");

    let deployments: Value = serde_json::from_str(&env.ok(&["--json", "deployments", "list", "app"], "")).unwrap();
    let ids: Vec<&str> = deployments.as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [deployment], "exactly one deployment, the webhook's");
    let audit: Value = serde_json::from_str(&env.ok(&["--json", "audit", "list", "--limit", "200"], "")).unwrap();
    let events = audit.as_array().unwrap();
    let accepted = events.iter().find(|e| e["action"] == "webhook.accepted").expect("an accepted delivery is audited");
    assert_eq!(accepted["detail"]["commit"], COMMIT);
    assert_eq!(accepted["detail"]["deployment"], deployment);
    assert!(events.iter().any(|e| e["action"] == "webhook.rejected" && e["object_id"] == id), "the forged delivery is audited");
    let queued = events.iter().find(|e| e["action"] == "deployment.queued").unwrap();
    assert_eq!(queued["detail"]["git_ref"], COMMIT);
    assert_eq!(queued["actor"], "webhook:github");
    assert!(!server.log_text().contains(secret), "the secret never reaches the log");
}
