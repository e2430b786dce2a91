//! Services across servers, on three real test hosts with their own dockerd and real agents
//! enrolled through `servos serve`, all driven through the real CLI: service `b` is published
//! on the mesh only on node1 (its port bound on node1's mesh address, not on its public
//! one); service `a` on node0 reaches it once granted; node2 (not granted) is dropped and
//! counted; revoking the grant stops `a` without restarting the agent. The agents' heartbeats
//! list the containers ServOS runs (from cgroups), named by the control plane.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod agent_common;
mod common;

use agent_common::*;
use common::Env;
use serde_json::Value;

const IMAGE: &str = "servos-test/busybox:1";

fn json(env: &Env, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let text = env.ok(&all, "");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("servos {args:?}: {e}: {text}"))
}

/// The name of the one running container of a service on a host.
fn container_of(host: &servos_testkit::TestHost, service_id: &str) -> String {
    let out = host
        .docker_cli(&[
            "ps",
            "--filter",
            &format!("label=servos.service={service_id}"),
            "--format",
            "{{.Names}}",
        ])
        .unwrap();
    let names = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        !names.is_empty() && !names.contains('\n'),
        "one container expected: {names:?}"
    );
    names
}

/// From inside service a's container: connect to b's mesh endpoint; the reply, or None.
fn from_container(
    host: &servos_testkit::TestHost,
    container: &str,
    target: &str,
) -> Option<String> {
    let (ip, port) = target.split_once(':').unwrap();
    let out = host
        .docker_cli(&["exec", container, "timeout", "5", "nc", "-w", "3", ip, port])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mesh_only_service_is_reached_by_granted_services_only_and_heartbeats_list_containers() {
    ensure_servos_user();
    let net = servos_testkit::TestNet::builder()
        .hosts(3)
        .with_docker()
        .build()
        .unwrap();
    let env = Env::new().await;
    let key = common::keygen();
    let listen = format!("0.0.0.0:{}", env.port);
    let _server = env.serve_with(&key, &[("SERVOS_LISTEN", &listen)]);
    env.setup_admin();
    let control_plane = format!("http://{}:{}", net.gateway(), env.port);

    // Commission the three hosts and enrol their agents through the CLI.
    let mut enrolled = Vec::new();
    for (i, host) in net.hosts().iter().enumerate() {
        let name = format!("node{i}");
        env.commission(&name, host);
        let e = json(&env, &["servers", "agent-enrol", &name]);
        let token = e["token"].as_str().unwrap();
        let out = host
            .exec(&format!("mkdir -p {STATE_DIR} && umask 077 && printf '%s' '{token}' > {STATE_DIR}/enrol.token"))
            .unwrap();
        assert!(out.status.success());
        enrolled.push((
            e["server_id"].as_str().unwrap().to_owned(),
            e["mesh_address"].as_str().unwrap().to_owned(),
        ));
    }
    let agents = Agents::start_args(&net, |i| {
        format!(
            "--address {}/16 --control-plane {control_plane} --server-id {} --enrol-token-file {STATE_DIR}/enrol.token --interval 2",
            enrolled[i].1, enrolled[i].0
        )
    });
    agents.public_keys(&net);
    for i in 0..3 {
        wait_for(&format!("node{i} online"), || {
            json(&env, &["servers", "agent", &format!("node{i}")])["status"] == "online"
        });
    }
    let table = env.ok(&["servers", "agent", "node1"], "");
    assert!(
        table.contains("status          online") && table.contains("mesh address    10.77.0.2"),
        "{table}"
    );

    // Mesh publishing needs a port, and grants go only to mesh services: clear errors.
    let out = env.run(
        None,
        &[
            "services",
            "create",
            "x",
            "--image",
            IMAGE,
            "--server",
            "node1",
            "--publish",
            "mesh",
        ],
        "",
    );
    assert!(!out.status.success());
    assert!(
        common::stderr_line(&out).contains("a service published on the mesh needs a port"),
        "{}",
        common::stderr_line(&out)
    );

    // b: published on the mesh only, on node1. a: a plain service on node0.
    net.host(0).import_busybox_image(IMAGE).unwrap();
    net.host(1).import_busybox_image(IMAGE).unwrap();
    let b = json(
        &env,
        &[
            "services",
            "create",
            "b",
            "--image",
            IMAGE,
            "--server",
            "node1",
            "--port",
            "7000",
            "--publish",
            "mesh",
            "--",
            "nc",
            "-ll",
            "-p",
            "7000",
            "-e",
            "/bin/echo",
            "mesh-b",
        ],
    );
    assert_eq!(b["publish"], "mesh");
    assert_eq!(
        b["mesh"]["endpoints"],
        serde_json::json!([{ "server": "node1", "address": "10.77.0.2:7000" }])
    );
    let a = json(
        &env,
        &[
            "services", "create", "a", "--image", IMAGE, "--server", "node0", "--", "sleep",
            "100000",
        ],
    );
    let out = env.run(None, &["mesh", "grant", "b", "a"], "");
    assert!(
        common::stderr_line(&out).contains("service \"a\" is not published on the mesh"),
        "{}",
        common::stderr_line(&out)
    );
    let deployed = env.ok(&["deploy", "b", "--follow"], "");
    assert!(
        deployed.contains("published on the mesh only"),
        "{deployed}"
    );
    env.ok(&["deploy", "a", "--follow"], "");

    // b's port is bound on node1's mesh address only.
    let b_container = container_of(net.host(1), b["id"].as_str().unwrap());
    let port = net.host(1).docker_cli(&["port", &b_container]).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&port.stdout).trim(),
        "7000/tcp -> 10.77.0.2:7000"
    );
    let public = net
        .host(0)
        .exec(&format!(
            "timeout 4 busybox nc -w 3 {} 7000 </dev/null",
            net.host(1).addr()
        ))
        .unwrap();
    assert!(
        String::from_utf8_lossy(&public.stdout).trim().is_empty(),
        "b answered on node1's public address"
    );

    // A neighbour routing node1's mesh address over the public network (around the
    // WireGuard interface and its classifier) is dropped by the deploy's raw-table guard;
    // without the guard it would get through.
    let sh = |i: usize, cmd: &str| {
        let out = net.host(i).exec(cmd).unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh(
        2,
        &format!("ip route add 10.77.0.2/32 via {}", net.host(1).addr()),
    );
    assert_eq!(
        tcp(&net, 2, 1, 7000),
        None,
        "the mesh address was reached around the mesh"
    );
    sh(
        1,
        "iptables -w -t raw -D PREROUTING -d 10.77.0.2 -j SERVOS-MESH",
    );
    let unguarded = tcp(&net, 2, 1, 7000);
    sh(
        1,
        "iptables -w -t raw -I PREROUTING -d 10.77.0.2 -j SERVOS-MESH",
    );
    sh(2, "ip route del 10.77.0.2/32");
    assert_eq!(
        unguarded.as_deref(),
        Some("mesh-b"),
        "without the guard the bypass is real (the test would prove nothing)"
    );

    // Not granted yet: a's container is dropped by node1's classifier.
    let a_container = container_of(net.host(0), a["id"].as_str().unwrap());
    wait_for_handshake(&net, 0, 1);
    assert_eq!(
        from_container(net.host(0), &a_container, "10.77.0.2:7000"),
        None,
        "a reached b before any grant"
    );

    // Grant a → b: applied live (the agent's pid does not change).
    let pid = agents.pid(1);
    env.ok(&["mesh", "grant", "a", "b"], "");
    let policy = env.ok(&["mesh", "policy", "list"], "");
    assert!(
        policy.lines().any(|l| l
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .starts_with("node0 node1 7000 tcp a -> b")),
        "{policy}"
    );
    wait_for("a reaches b over the mesh", || {
        from_container(net.host(0), &a_container, "10.77.0.2:7000").as_deref() == Some("mesh-b")
    });
    assert_eq!(
        json(&env, &["services", "show", "b"])["mesh"]["allowed_from"],
        serde_json::json!(["a"])
    );

    // node2 is not granted: dropped, and node1's drop counter shows it (status file and API).
    let dropped = |env: &Env| {
        json(env, &["servers", "agent", "node1"])["heartbeat"]["counters"]["dropped"]
            .as_u64()
            .unwrap()
    };
    let before = dropped(&env);
    wait_for_handshake(&net, 2, 1);
    assert_eq!(tcp(&net, 2, 1, 7000), None, "node2 is not granted");
    wait_for("node1 reports the drop", || dropped(&env) > before);

    // Server-level rules by name through the CLI: allow node2 → node1:7000, then deny it.
    // A rule derived from a grant is not deleted by hand: the error says which grant to revoke.
    let out = env.run(
        None,
        &[
            "mesh", "policy", "deny", "node0", "--to", "node1", "--port", "7000",
        ],
        "",
    );
    assert!(
        common::stderr_line(&out).contains(
            "comes from the service grant a -> b: revoke it with `servos mesh revoke a b`"
        ),
        "{}",
        common::stderr_line(&out)
    );
    env.ok(
        &[
            "mesh", "policy", "allow", "node2", "--to", "node1", "--port", "7000",
        ],
        "",
    );
    wait_for("node2 allowed by hand", || {
        tcp(&net, 2, 1, 7000).as_deref() == Some("mesh-b")
    });
    env.ok(
        &[
            "mesh", "policy", "deny", "node2", "--to", "node1", "--port", "7000",
        ],
        "",
    );
    wait_for("node2 denied again", || tcp(&net, 2, 1, 7000).is_none());
    let out = env.run(None, &["mesh", "publish", "a", "mesh"], "");
    assert!(
        common::stderr_line(&out).contains("a service published on the mesh needs a port"),
        "{}",
        common::stderr_line(&out)
    );

    // The heartbeat lists the containers ServOS runs on node1, named from its placements.
    let b_id = String::from_utf8_lossy(
        &net.host(1)
            .docker_cli(&["inspect", "--format", "{{.Id}}", &b_container])
            .unwrap()
            .stdout,
    )
    .trim()
    .to_owned();
    let mut view = Value::Null;
    wait_for("node1's heartbeat lists b's container", || {
        view = json(&env, &["servers", "agent", "node1"]);
        view["containers"].as_array().is_some_and(|c| c.len() == 1)
    });
    let c = &view["containers"][0];
    assert_eq!(c["id"], b_id.as_str());
    assert_eq!(c["service"], "b");
    assert_eq!(c["name"], b_container.as_str());
    assert_eq!(c["placement"], "running");
    assert!(c["memory_bytes"].as_u64().unwrap() > 0, "{view}");
    assert!(c["pids"].as_u64().unwrap() >= 1, "{view}");
    let table = env.ok(&["servers", "agent", "node1"], "");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("b ") && l.contains(&b_container) && l.contains("running")),
        "{table}"
    );

    // Revoke: a is dropped again, without restarting node1's agent.
    env.ok(&["mesh", "revoke", "a", "b"], "");
    wait_for("a is dropped again", || {
        from_container(net.host(0), &a_container, "10.77.0.2:7000").is_none()
    });
    assert_eq!(agents.pid(1), pid);
    assert!(
        alive(pid),
        "node1's agent must still run: {}",
        log(net.host(1))
    );
    assert_eq!(json(&env, &["mesh", "grants"]), serde_json::json!([]));
    drop(agents);
}
