//! Services across servers, on three real test hosts with their own dockerd and real agents
//! enrolled through `servos serve`, all driven through the real CLI: service `b` is published
//! on the mesh only on node1 (node1's mesh address leads to its container through an
//! nftables DNAT rule; nothing is published by Docker); service `a` on node0 reaches it once
//! granted; node2 (not granted) is dropped and counted; revoking the grant stops `a` without
//! restarting the agent. The agents' heartbeats list the containers ServOS runs (from
//! cgroups), named by the control plane. Then, on the same hosts: a redeploy under a steady
//! stream of connections loses none, a simulated reboot is repaired by the watcher alone, a
//! stop and start re-point b at its container's new IP without the watcher, a
//! new mesh address of node1 is followed without a redeploy, and removing the last mesh
//! service removes its table and the guard chains.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod agent_common;
mod common;

use agent_common::*;
use common::Env;
use serde_json::Value;
use servos_proxy::upstream;

const IMAGE: &str = "servos-test/busybox:1";

/// Stops the pointers' watcher on a host when the test ends, even on panic (the test kit
/// only knows the daemons it started itself).
struct WatcherGuard<'a>(&'a servos_testkit::TestHost);

impl Drop for WatcherGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.exec(&upstream::stop_watcher_command().to_shell());
    }
}

/// Runs `cmd` on host `i`; it must succeed. Its stdout.
fn sh(net: &servos_testkit::TestNet, i: usize, cmd: &str) -> String {
    let out = net.host(i).exec(cmd).unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// From host `from` itself: connect to `target` (`ip:port`); the reply, or None.
fn tcp_at(net: &servos_testkit::TestNet, from: usize, target: &str) -> Option<String> {
    let (ip, port) = target.split_once(':').unwrap();
    let out = net
        .host(from)
        .exec(&format!("timeout 4 busybox nc -w 3 {ip} {port} </dev/null"))
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// b answers `mesh-b <its container's hostname>`.
fn is_b(reply: Option<&str>) -> bool {
    reply.is_some_and(|r| r.starts_with("mesh-b "))
}

/// A container's hostname (what b answers) and its IP on the service network of b.
fn hostname_and_ip(host: &servos_testkit::TestHost, container: &str) -> (String, String) {
    let out = host
        .docker_cli(&[
            "inspect",
            "-f",
            "{{.Config.Hostname}} {{with index .NetworkSettings.Networks \"servos-b\"}}{{.IPAddress}}{{end}}",
            container,
        ])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (h, ip) = text.split_once(' ').unwrap_or_else(|| panic!("{text:?}"));
    (h.to_owned(), ip.to_owned())
}

/// Where b's mesh table on node1 leads, if it exists.
fn mesh_target(net: &servos_testkit::TestNet) -> Option<String> {
    let listing = sh(
        net,
        1,
        "nft list table ip servos-_mesh-b 2>/dev/null || true",
    );
    servos_proxy::upstream::parse_target(&listing).map(|t| t.to_string())
}

/// The packets the guard of node1 dropped so far.
fn guard_drops(net: &servos_testkit::TestNet) -> u64 {
    let listing = sh(net, 1, "iptables -w -t raw -L SERVOS-MESH -v -x -n");
    listing
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some("DROP"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no DROP rule in {listing}"))
}

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
    // A short drain: the test's connections last milliseconds.
    let _server = env.serve_with(
        &key,
        &[("SERVOS_LISTEN", &listen), ("SERVOS_PROXY_DRAIN_SECS", "1")],
    );
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
        table.contains("status          online")
            && table.contains("mesh address    10.77.0.2")
            // No kernel WireGuard module here: `--wireguard auto` fell back, and says so.
            && table.contains("wireguard       userspace"),
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
            "/bin/sh",
            "-c",
            "echo mesh-b $HOSTNAME",
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
    let _watcher = WatcherGuard(net.host(1));
    let deployed = env.ok(&["deploy", "b", "--follow"], "");
    assert!(
        deployed.contains("published on the mesh only: pointing 10.77.0.2:7000 at"),
        "{deployed}"
    );
    env.ok(&["deploy", "a", "--follow"], "");

    // Docker publishes nothing: node1's mesh address leads to b's container through b's
    // nftables table, recorded for the watcher.
    let b_container = container_of(net.host(1), b["id"].as_str().unwrap());
    let port = net.host(1).docker_cli(&["port", &b_container]).unwrap();
    assert_eq!(String::from_utf8_lossy(&port.stdout).trim(), "");
    let (_, b_ip) = hostname_and_ip(net.host(1), &b_container);
    assert_eq!(mesh_target(&net), Some(format!("{b_ip}:7000")));
    assert_eq!(
        sh(
            &net,
            1,
            "cat /var/lib/servos/proxy/upstreams/servos-_mesh-b"
        ),
        format!("10.77.0.2 7000 {b_container} mesh\n")
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
    // WireGuard interface and its classifier) is dropped by the raw-table guard, which
    // counts it. Without the guard, the forward rule (which admits DNAT'ed mesh traffic
    // from the mesh interface and local bridges only) still leaves it to Docker's drop.
    sh(
        &net,
        2,
        &format!("ip route add 10.77.0.2/32 via {}", net.host(1).addr()),
    );
    let drops = guard_drops(&net);
    assert_eq!(
        tcp(&net, 2, 1, 7000),
        None,
        "the mesh address was reached around the mesh"
    );
    assert!(
        guard_drops(&net) > drops,
        "the guard did not see the bypass"
    );
    sh(&net, 1, "iptables -w -t raw -D PREROUTING -j SERVOS-MESH");
    let unguarded = tcp(&net, 2, 1, 7000);
    sh(&net, 1, "iptables -w -t raw -I PREROUTING -j SERVOS-MESH");
    sh(&net, 2, "ip route del 10.77.0.2/32");
    assert_eq!(
        unguarded, None,
        "without the guard the forward filter must still stop the bypass"
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
        is_b(from_container(net.host(0), &a_container, "10.77.0.2:7000").as_deref())
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
        is_b(tcp(&net, 2, 1, 7000).as_deref())
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

    // Docker 28 drops forwarded traffic to ports it did not publish: the forward rule that
    // admits the DNAT'ed mesh traffic is what lets the granted peer in.
    assert!(is_b(tcp_at(&net, 0, "10.77.0.2:7000").as_deref()));
    sh(&net, 1, "iptables -w -D DOCKER-USER -j SERVOS-MESH-FORWARD");
    let unforwarded = tcp_at(&net, 0, "10.77.0.2:7000");
    sh(&net, 1, "iptables -w -I DOCKER-USER -j SERVOS-MESH-FORWARD");
    assert_eq!(
        unforwarded, None,
        "without the forward rule Docker must drop it (else the rule would prove nothing)"
    );
    assert!(is_b(tcp_at(&net, 0, "10.77.0.2:7000").as_deref()));

    // A redeploy under a steady stream of connections from node0 (granted): none fails,
    // and the stream ends on the new container.
    let b_service = b["id"].as_str().unwrap();
    let stop = "/tmp/servos-mesh-stream.stop";
    let (stream, deployed) = std::thread::scope(|s| {
        let t = s.spawn(|| {
            sh(
                &net,
                0,
                &format!(
                    "rm -f {stop}; ok=0; fail=0; last=; while [ ! -f {stop} ]; do \
                     r=$(timeout 4 busybox nc -w 3 10.77.0.2 7000 </dev/null); \
                     case \"$r\" in 'mesh-b '*) ok=$((ok+1)); last=\"$r\";; *) fail=$((fail+1));; esac; \
                     done; echo \"$ok $fail $last\""
                ),
            )
        });
        std::thread::sleep(std::time::Duration::from_secs(1));
        let deployed = env.ok(&["deploy", "b", "--follow"], "");
        std::thread::sleep(std::time::Duration::from_secs(1));
        sh(&net, 0, &format!("touch {stop}"));
        (t.join().unwrap(), deployed)
    });
    let new_b = container_of(net.host(1), b_service);
    assert_ne!(new_b, b_container);
    let (new_host, new_ip) = hostname_and_ip(net.host(1), &new_b);
    let fields: Vec<&str> = stream.split_whitespace().collect();
    let (ok, failed): (u64, u64) = (fields[0].parse().unwrap(), fields[1].parse().unwrap());
    eprintln!("redeploy under load: {ok} connection(s) answered, {failed} failed");
    assert_eq!(
        failed, 0,
        "connections failed during the redeploy: {stream}"
    );
    assert!(ok >= 10, "too few connections to mean anything: {stream}");
    assert_eq!(fields.get(3), Some(&new_host.as_str()), "{stream}");
    assert!(
        deployed.contains(&format!(
            "switched: 10.77.0.2:7000 → {new_b} ({new_ip}:7000)"
        )),
        "{deployed}"
    );
    assert_eq!(mesh_target(&net), Some(format!("{new_ip}:7000")));
    // Connections to the mesh address leave conntrack's TIME_WAIT after 1 s, as those to a
    // Caddy stable address do (nothing left for Docker's purge to misfire on at the next
    // retire): the entry of a connection just closed says so.
    assert!(is_b(tcp_at(&net, 0, "10.77.0.2:7000").as_deref()));
    let table = sh(&net, 1, "cat /proc/net/nf_conntrack");
    let lingering: Vec<&str> = table
        .lines()
        .filter(|l| {
            let mut dst = l.split_whitespace().filter_map(|f| f.strip_prefix("dst="));
            let mut dport = l.split_whitespace().filter_map(|f| f.strip_prefix("dport="));
            dst.next() == Some("10.77.0.2") && dport.next() == Some("7000") && l.contains(" TIME_WAIT ")
        })
        .collect();
    assert!(!lingering.is_empty(), "no TIME_WAIT entry for 10.77.0.2:7000 in {table}");
    for l in &lingering {
        let secs: u64 = l.split_whitespace().nth(4).unwrap().parse().unwrap();
        assert!(secs <= 1, "a mesh-address entry lingers {secs} s in TIME_WAIT: {l}");
    }

    // A reboot empties the kernel's rules (b's table, the guard chains) and Docker restarts
    // the container, here on a new IP (another container took the old one); the watcher,
    // started at boot, restores everything from its state file with no ServOS command.
    // The stop leaves no watcher process behind (it names and kills any the pid file did
    // not lead to, and fails if one survives).
    let stop = net
        .host(1)
        .exec(&upstream::stop_watcher_command().to_shell())
        .unwrap();
    let stop_err = String::from_utf8_lossy(&stop.stderr);
    assert!(stop.status.success() && stop_err.is_empty(), "stopping the watcher: {stop_err}");
    sh(
        &net,
        1,
        "nft delete table ip servos-_mesh-b && iptables -w -t raw -D PREROUTING -j SERVOS-MESH && \
         iptables -w -t raw -F SERVOS-MESH && iptables -w -t raw -X SERVOS-MESH && \
         iptables -w -D DOCKER-USER -j SERVOS-MESH-FORWARD && iptables -w -F SERVOS-MESH-FORWARD && \
         iptables -w -X SERVOS-MESH-FORWARD",
    );
    let docker = |args: &[&str]| {
        let out = net.host(1).docker_cli(args).unwrap();
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    docker(&["stop", "-t", "1", &new_b]);
    // Docker gives the lowest free address: squat until b's is taken.
    let mut squatters = Vec::new();
    for i in 0..4 {
        let name = format!("squatter{i}");
        docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "servos-b",
            IMAGE,
            "sleep",
            "100000",
        ]);
        let (_, ip) = hostname_and_ip(net.host(1), &name);
        squatters.push(name);
        if ip == new_ip {
            break;
        }
    }
    docker(&["start", &new_b]);
    let (_, moved_ip) = hostname_and_ip(net.host(1), &new_b);
    assert_ne!(
        moved_ip, new_ip,
        "the test needs the restarted container on a new IP"
    );
    assert_eq!(
        tcp_at(&net, 0, "10.77.0.2:7000"),
        None,
        "nothing leads to b yet"
    );
    assert!(
        net.host(1)
            .exec(&upstream::ensure_watcher_command().to_shell())
            .unwrap()
            .status
            .success()
    );
    wait_for("the watcher restores b's mesh address", || {
        is_b(tcp_at(&net, 0, "10.77.0.2:7000").as_deref())
    });
    assert_eq!(mesh_target(&net), Some(format!("{moved_ip}:7000")));
    assert!(sh(&net, 1, "iptables -w -t raw -S").contains("-A PREROUTING -j SERVOS-MESH"));

    // `servos services stop` then `start`, with the watcher stopped: the start itself
    // re-points b, whose container comes back on a new IP (another container took its old
    // one while it was stopped).
    let stop = net
        .host(1)
        .exec(&upstream::stop_watcher_command().to_shell())
        .unwrap();
    assert!(stop.status.success(), "{}", String::from_utf8_lossy(&stop.stderr));
    env.ok(&["services", "stop", "b"], "");
    for i in 4..8 {
        let name = format!("squatter{i}");
        docker(&[
            "run", "-d", "--name", &name, "--network", "servos-b", IMAGE, "sleep", "100000",
        ]);
        let (_, ip) = hostname_and_ip(net.host(1), &name);
        squatters.push(name);
        if ip == moved_ip {
            break;
        }
    }
    env.ok(&["services", "start", "b"], "");
    let (_, started_ip) = hostname_and_ip(net.host(1), &new_b);
    assert_ne!(started_ip, moved_ip, "the test needs the started container on a new IP");
    assert_eq!(mesh_target(&net), Some(format!("{started_ip}:7000")));
    assert!(is_b(tcp_at(&net, 0, "10.77.0.2:7000").as_deref()), "b after its start");
    for name in &squatters {
        docker(&["rm", "-f", name]);
    }
    // A container on another bridge of node1 (Docker's default one) reaches b through the
    // mesh address too: local bridges pass the guard and the forward rule.
    let local = net
        .host(1)
        .docker_cli(&[
            "run",
            "--rm",
            IMAGE,
            "timeout",
            "5",
            "nc",
            "-w",
            "3",
            "10.77.0.2",
            "7000",
        ])
        .unwrap();
    assert!(
        is_b(Some(String::from_utf8_lossy(&local.stdout).trim())),
        "{}",
        String::from_utf8_lossy(&local.stderr)
    );

    // node1 gets a new mesh address: b follows it without a redeploy (audited), on the new
    // address only; its mesh endpoint says so.
    env.ok(&["servers", "mesh-address", "node1", "10.77.0.12"], "");
    assert_eq!(
        sh(
            &net,
            1,
            "cat /var/lib/servos/proxy/upstreams/servos-_mesh-b"
        ),
        format!("10.77.0.12 7000 {new_b} mesh\n")
    );
    wait_for("b is reached on node1's new mesh address", || {
        is_b(tcp_at(&net, 0, "10.77.0.12:7000").as_deref())
    });
    assert_eq!(tcp_at(&net, 0, "10.77.0.2:7000"), None);
    assert_eq!(container_of(net.host(1), b_service), new_b, "no redeploy");
    assert!(
        sh(&net, 1, "iptables -w -t raw -S SERVOS-MESH").contains("! -d 10.77.0.12/32 -j RETURN")
    );
    assert_eq!(
        json(&env, &["services", "show", "b"])["mesh"]["endpoints"],
        serde_json::json!([{ "server": "node1", "address": "10.77.0.12:7000" }])
    );
    let audit = env.ok(&["--json", "audit", "list"], "");
    assert!(audit.contains("server.mesh_services_repointed"), "{audit}");

    // Revoke: a is dropped again, without restarting node1's agent.
    env.ok(&["mesh", "revoke", "a", "b"], "");
    wait_for("a is dropped again", || {
        from_container(net.host(0), &a_container, "10.77.0.12:7000").is_none()
    });
    assert_eq!(agents.pid(1), pid);
    assert!(
        alive(pid),
        "node1's agent must still run: {}",
        log(net.host(1))
    );
    assert_eq!(json(&env, &["mesh", "grants"]), serde_json::json!([]));

    // Published through the proxy again, b's next deploy removes its mesh pointer and, b
    // being the last mesh-only service of node1, the guard chains; back on the mesh, the
    // next deploy puts them back.
    env.ok(&["mesh", "publish", "b", "proxy"], "");
    let deployed = env.ok(&["deploy", "b", "--follow"], "");
    assert!(
        deployed.contains(
            "no longer published on the mesh: its mesh pointer was removed, and the mesh guard with it"
        ),
        "{deployed}"
    );
    assert_eq!(mesh_target(&net), None);
    assert!(!sh(&net, 1, "iptables -w -t raw -S").contains("SERVOS-MESH"));
    env.ok(&["mesh", "publish", "b", "mesh"], "");
    env.ok(&["deploy", "b", "--follow"], "");
    let back = container_of(net.host(1), b_service);
    let (_, back_ip) = hostname_and_ip(net.host(1), &back);
    assert_eq!(mesh_target(&net), Some(format!("{back_ip}:7000")));
    assert!(sh(&net, 1, "iptables -w -t raw -S").contains("-A PREROUTING -j SERVOS-MESH"));

    // Removing b, the last mesh-only service of node1, removes its table, its state file
    // and the guard chains.
    env.ok(&["services", "rm", "b"], "");
    assert_eq!(mesh_target(&net), None);
    assert!(!sh(&net, 1, "iptables -w -t raw -S").contains("SERVOS-MESH"));
    assert!(!sh(&net, 1, "iptables -w -S").contains("SERVOS-MESH"));
    assert_eq!(
        sh(
            &net,
            1,
            "test -e /var/lib/servos/proxy/upstreams/servos-_mesh-b && echo kept || echo gone"
        ),
        "gone\n"
    );
    drop(agents);
}
