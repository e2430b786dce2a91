//! `servos logs` through the real binary and CLI against a real host with its own dockerd:
//! the container's lines arrive labelled by server, secret env values are redacted, and a
//! followed log whose client goes away leaves no `docker logs` running on the host.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{CANARY, Env, keygen};
use serde_json::Value;
use servos_testkit::TestNet;

/// Processes whose argv is `docker logs … <container>` (the test shares the host's pid
/// namespace: the testkit hosts are network namespaces).
fn docker_logs_processes(container: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let argv: Vec<String> = raw.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let is_docker = argv.first().is_some_and(|a| a == "docker" || a.ends_with("/docker"));
        if is_docker && argv.get(1).is_some_and(|a| a == "logs") && argv.iter().any(|a| a == container) {
            found.push(argv.join(" "));
        }
    }
    found
}

#[tokio::test]
async fn cli_logs_prints_redacted_lines_and_a_dropped_follow_leaves_nothing_running() {
    let net = TestNet::builder().hosts(1).with_docker().build().unwrap();
    let host = net.host(0);
    host.import_busybox_image("servos-test/busybox:1").unwrap();
    let env = Env::new().await;
    let server = env.serve(&keygen());
    env.setup_admin();
    env.commission("web-1", host);
    env.ok(
        &[
            "services", "create", "app", "--image", "servos-test/busybox:1", "--server", "web-1", "--", "sh", "-c",
            "echo start-marker; echo \"key=$API_KEY\"; sleep 1000",
        ],
        "",
    );
    env.ok(&["env", "set", "app"], &format!("API_KEY={CANARY}\n"));
    env.ok(&["deploy", "app", "--follow"], "");

    // The container really printed the secret: what `servos logs` shows is redacted.
    let ps = host.docker_cli(&["ps", "--filter", "label=servos.service", "--format", "{{.Names}}"]).unwrap();
    let container = String::from_utf8_lossy(&ps.stdout).trim().to_owned();
    assert!(container.starts_with("servos-app-"), "{container}");
    let raw = host.docker_cli(&["logs", &container]).unwrap();
    assert!(String::from_utf8_lossy(&raw.stdout).contains(CANARY), "the container did not print the secret");

    let out = env.ok(&["logs", "app"], "");
    let marker = out.lines().find(|l| l.contains("start-marker")).unwrap_or_else(|| panic!("no marker: {out}"));
    assert!(marker.starts_with("web-1 | "), "{marker}");
    assert!(!out.contains(CANARY), "a secret reached `servos logs`: {out}");
    assert!(out.contains("key=[redacted]"), "{out}");

    let json = env.ok(&["--json", "logs", "app", "--tail", "1"], "");
    let lines: Vec<Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "{json}");
    assert_eq!(lines[0]["server"], "web-1");
    assert_eq!(lines[0]["stream"], "stdout");
    assert!(lines[0]["line"].as_str().unwrap().ends_with("key=[redacted]"), "{json}");

    // Follow: the marker arrives, then the client is killed; the remote `docker logs
    // --follow` must not outlive it.
    let mut child = env.cmd(None).args(["logs", "app", "-f"]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("start-marker")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("no marker from `servos logs -f` within 30s: {seen:?}"),
        }
    }
    assert!(!seen.iter().any(|l| l.contains(CANARY)), "{seen:?}");
    assert!(!docker_logs_processes(&container).is_empty(), "the follow is not running on the host");
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !docker_logs_processes(&container).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(docker_logs_processes(&container), Vec::<String>::new(), "`docker logs --follow` outlived its client");

    assert!(!server.log_text().contains(CANARY), "a secret reached the control plane log");
}
