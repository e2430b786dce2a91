//! A deploy through the real binary and CLI onto a real host with its own dockerd:
//! progress is streamed, the container gets exactly the secret env, and no secret is
//! left on the host, in the stored log or in the control plane's log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{CANARY, Env, keygen};
use serde_json::Value;
use servos_testkit::TestNet;

#[tokio::test]
async fn cli_deploy_follows_progress_and_injects_secrets_ephemerally() {
    let net = TestNet::builder().hosts(1).with_docker().build().unwrap();
    let host = net.host(0);
    host.import_busybox_image("servos-test/busybox:1").unwrap();
    let env = Env::new().await;
    let server = env.serve(&keygen());
    env.setup_admin();
    env.commission("web-1", host);
    env.ok(
        &["services", "create", "app", "--image", "servos-test/busybox:1", "--server", "web-1", "--port", "8080", "--", "httpd", "-f", "-p", "8080", "-h", "/tmp"],
        "",
    );
    let quoted = format!("it's \"{CANARY}\" = é ✓");
    env.ok(&["env", "set", "app"], &format!("API_KEY={CANARY}\nQUOTED={quoted}\n"));

    let out = env.ok(&["deploy", "app", "--follow"], "");
    assert!(out.contains("==> "), "steps are streamed: {out}");
    assert!(!out.contains(CANARY), "a secret reached the deploy log: {out}");

    let ps = host.docker_cli(&["ps", "--filter", "label=servos.service", "--format", "{{.Names}} {{.Labels}}"]).unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout).into_owned();
    let deployments: Value = serde_json::from_str(&env.ok(&["--json", "deployments", "list", "app"], "")).unwrap();
    let dep_id = deployments[0]["id"].as_str().unwrap();
    assert_eq!(deployments[0]["status"], "succeeded");
    assert!(ps.contains(&format!("servos.deployment={dep_id}")), "{ps}");
    let name = ps.split_whitespace().next().unwrap();
    let envs = host.docker_cli(&["exec", name, "env"]).unwrap();
    let envs = String::from_utf8_lossy(&envs.stdout).into_owned();
    assert!(envs.lines().any(|l| l == format!("API_KEY={CANARY}")), "{envs}");
    assert!(envs.lines().any(|l| l == format!("QUOTED={quoted}")), "{envs}");
    let left = host.exec("ls -A /var/lib/servos/secrets").unwrap();
    assert_eq!(String::from_utf8_lossy(&left.stdout).trim(), "", "secret env files left on the host");

    let stored = env.ok(&["deployments", "logs", dep_id], "");
    assert!(!stored.contains(CANARY), "{stored}");
    assert!(!server.log_text().contains(CANARY), "a secret reached the control plane log");
}
