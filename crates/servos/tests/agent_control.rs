//! Three agents enrolled through a real control plane (`servos serve`) form the mesh from
//! the peers and policy it distributes; cutting one host off marks it offline (with an
//! audit alert) while the other two keep talking; restoring it brings the mesh back; a
//! mesh address changed through the API applies to the running agent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod agent_common;
mod common;

use std::time::{Duration, Instant};

use agent_common::*;
use common::Env;

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    /// The API as the admin that `Env::setup_admin` saved in the CLI config.
    fn of(env: &Env) -> Self {
        let client: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(env.dir.path().join("config/servos/client.json")).unwrap(),
        )
        .unwrap();
        Self { http: reqwest::Client::new(), base: env.url(), token: client["token"].as_str().unwrap().to_owned() }
    }
}

impl Api {
    async fn post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(status.is_success(), "POST {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    async fn get(&self, path: &str) -> serde_json::Value {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    async fn wait_status(&self, server: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let agent = self.get(&format!("/api/v1/servers/{server}/agent")).await;
            if agent["status"] == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{server} never became {want}: {agent}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn enrolled_agents_form_the_mesh_and_a_cut_off_server_goes_offline_and_back() {
    ensure_servos_user();
    let net = servos_testkit::TestNet::new(3).unwrap();
    let env = Env::new().await;
    let key = common::keygen();
    // Listen on every address so the hosts reach the control plane over the test bridge.
    let listen = format!("0.0.0.0:{}", env.port);
    let _server = env.serve_with(&key, &[("SERVOS_LISTEN", &listen)]);
    env.setup_admin();
    let api = Api::of(&env);
    let control_plane = format!("http://{}:{}", net.gateway(), env.port);

    // Enrol: the control plane allocates mesh addresses; each token goes to its host in a
    // 0600 file in the agent's state directory (never in argv).
    let mut addresses = Vec::new();
    for (i, host) in net.hosts().iter().enumerate() {
        let name = format!("node{i}");
        api.post(
            "/api/v1/servers",
            serde_json::json!({ "name": name, "host": host.addr().to_string() }),
        )
        .await;
        let enrolment = api
            .post(
                &format!("/api/v1/servers/{name}/agent/enrolment"),
                serde_json::json!({}),
            )
            .await;
        let token = enrolment["token"].as_str().unwrap();
        let out = host
            .exec(&format!(
                "mkdir -p {STATE_DIR} && umask 077 && printf '%s' '{token}' > {STATE_DIR}/enrol.token"
            ))
            .unwrap();
        assert!(out.status.success());
        addresses.push((
            enrolment["server_id"].as_str().unwrap().to_owned(),
            enrolment["mesh_address"].as_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(
        addresses
            .iter()
            .map(|(_, a)| a.as_str())
            .collect::<Vec<_>>(),
        ["10.77.0.1", "10.77.0.2", "10.77.0.3"]
    );
    // node0 and node2 may reach node1 on TCP 7000; ICMP everywhere (for the handshakes).
    api.post(
        "/api/v1/mesh/policy",
        serde_json::json!({ "src": "node0", "dst": "node1", "port": 7000, "proto": "tcp" }),
    )
    .await;
    api.post(
        "/api/v1/mesh/policy",
        serde_json::json!({ "src": "node2", "dst": "node1", "port": 7000, "proto": "tcp" }),
    )
    .await;

    let agents = Agents::start_args(&net, |i| {
        format!(
            "--address {}/16 --control-plane {control_plane} --server-id {} --enrol-token-file {STATE_DIR}/enrol.token --interval 2",
            addresses[i].1, addresses[i].0
        )
    });
    agents.public_keys(&net);
    for i in 0..3 {
        api.wait_status(&format!("node{i}"), "online").await;
        // The token was used up and removed; the credential is 0600, owned by servos.
        let out = net.host(i).exec(&format!("ls {STATE_DIR}/enrol.token; stat -c '%a %U' {STATE_DIR}/credential {STATE_DIR}/private.key")).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text.trim(),
            "600 servos\n600 servos",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    net.host(1)
        .exec("busybox nc -ll -p 7000 -e /bin/echo mesh-ok >/dev/null 2>&1 &")
        .unwrap();
    wait_for("0→1 over the mesh", || {
        tcp(&net, 0, 1, 7000).as_deref() == Some("mesh-ok")
    });
    wait_for("2→1 over the mesh", || {
        tcp(&net, 2, 1, 7000).as_deref() == Some("mesh-ok")
    });

    // The heartbeat carries the mesh state.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let agent = api.get("/api/v1/servers/node1/agent").await;
        assert_eq!(agent["mesh_address"], "10.77.0.2");
        let peers = agent["heartbeat"]["peers"].as_array().unwrap();
        if peers.len() == 2 && peers.iter().all(|p| p["last_handshake_secs"].is_number()) {
            assert!(agent["heartbeat"]["mem_total_kib"].as_u64().unwrap() > 0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "heartbeat never showed both peers: {agent}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Cut node2 off: it goes offline (audited), node0 and node1 keep talking.
    net.host(2).cut_off().unwrap();
    api.wait_status("node2", "offline").await;
    assert_eq!(tcp(&net, 0, 1, 7000).as_deref(), Some("mesh-ok"));
    let audit = api.get("/api/v1/audit?limit=100").await;
    assert!(
        audit.to_string().contains("agent.offline"),
        "no offline alert in the audit log: {audit}"
    );

    // Restore: back online, and its traffic flows again.
    net.host(2).restore().unwrap();
    api.wait_status("node2", "online").await;
    wait_for("2→1 after restore", || {
        tcp(&net, 2, 1, 7000).as_deref() == Some("mesh-ok")
    });

    // A new mesh address for node1 through the API: its running agent re-addresses its
    // interface over netlink (same pid, no reinstall) and the others follow.
    let pid_before = agents.pid(1);
    let r = api
        .http
        .put(format!(
            "{}/api/v1/servers/node1/agent/mesh-address",
            api.base
        ))
        .bearer_auth(&api.token)
        .json(&serde_json::json!({ "mesh_address": "10.77.0.9" }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "set mesh address: {}", r.status());
    let view: serde_json::Value = r.json().await.unwrap();
    assert_eq!(view["mesh_address"], "10.77.0.9");
    wait_for("node1 re-addressed", || {
        status(&net, 1)["address"] == "10.77.0.9/16"
    });
    let out = net.host(1).exec("ip -4 -o addr show dev servos0").unwrap();
    let addrs = String::from_utf8_lossy(&out.stdout);
    assert!(
        addrs.contains("10.77.0.9/16") && !addrs.contains("10.77.0.2/"),
        "{addrs}"
    );
    let tcp_to = |from: usize, addr: &str| {
        let out = net
            .host(from)
            .exec(&format!("timeout 4 busybox nc -w 3 {addr} 7000 </dev/null"))
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    wait_for("0→1 on the new address", || {
        tcp_to(0, "10.77.0.9") == "mesh-ok"
    });
    wait_for("2→1 on the new address", || {
        tcp_to(2, "10.77.0.9") == "mesh-ok"
    });
    assert_eq!(agents.pid(1), pid_before, "the agent was not restarted");
    // A bad address is refused, naming it.
    let r = api
        .http
        .put(format!(
            "{}/api/v1/servers/node1/agent/mesh-address",
            api.base
        ))
        .bearer_auth(&api.token)
        .json(&serde_json::json!({ "mesh_address": "192.168.1.9" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("192.168.1.9"));

    // Removing a server revokes its agent's credential.
    let r = api
        .http
        .delete(format!("{}/api/v1/servers/node2", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "delete node2: {}", r.status());
    wait_for("node2's credential revoked", || {
        status(&net, 2)["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown or revoked agent credential"))
    });
    drop(agents);
}

#[tokio::test(flavor = "multi_thread")]
async fn commissioning_installs_the_agent_over_ssh_and_it_enrols_itself() {
    ensure_servos_user();
    let net = servos_testkit::TestNet::new(1).unwrap();
    let env = Env::new().await;
    let key = common::keygen();
    let listen = format!("0.0.0.0:{}", env.port);
    let public_url = format!("http://{}:{}", net.gateway(), env.port);
    let _server = env.serve_with(&key, &[("SERVOS_LISTEN", &listen), ("SERVOS_PUBLIC_URL", &public_url)]);
    env.setup_admin();
    env.commission("node0", net.host(0));
    let api = Api::of(&env);

    // Through the real CLI (`servos servers agent-install`), which calls the install endpoint.
    let installed: serde_json::Value =
        serde_json::from_str(&env.ok(&["--json", "servers", "agent-install", "node0"], "")).unwrap();
    assert_eq!(installed["mesh_address"], "10.77.0.1");
    // The supervisor loop runs the agent; kill it (and the agent) when the test ends.
    struct Kill<'a>(&'a servos_testkit::TestHost);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.exec(
                "for p in $(pgrep -f 'while true; do /var/lib/servos/bin/servos agent'); do kill $p; done; sleep 0.2; \
                 for p in $(pgrep -f '^/var/lib/servos/bin/servos agent'); do kill $p; done",
            );
        }
    }
    let _kill = Kill(net.host(0));
    api.wait_status("node0", "online").await;
    let host = net.host(0);
    // Checksum-verified binary in place, token used up, no secret on the command line.
    let out = host.exec("stat -c '%a %U' /var/lib/servos/bin/servos; ls /var/lib/servos/agent/enrol.token 2>&1; cat /proc/$(pgrep -f '^/var/lib/servos/bin/servos agent' | head -1)/cmdline | tr '\\0' ' '").unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("755 root\n"), "{text}");
    assert!(
        text.contains("No such file"),
        "token file must be gone: {text}"
    );
    assert!(
        text.contains("--enrol-token-file /var/lib/servos/agent/enrol.token"),
        "{text}"
    );
    assert!(
        !text.contains("servos_enrol_"),
        "the token must not be in argv: {text}"
    );
    // Installation passes no --wireguard: the default `auto` runs, and on this kernel
    // (no WireGuard module) falls back to userspace, which the heartbeat reports.
    assert!(!text.contains("--wireguard"), "{text}");
    let agent = api.get("/api/v1/servers/node0/agent").await;
    assert_eq!(agent["heartbeat"]["wireguard"], "userspace", "{agent}");
}
