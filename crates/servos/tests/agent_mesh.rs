//! The node agent on three real test hosts (network namespaces): the mesh comes up, the
//! eBPF policy lets one pair through and drops (and counts) another, a policy change
//! applies without a restart, the running agent holds exactly uid/gid `servos` and
//! CAP_NET_ADMIN|CAP_IPC_LOCK|CAP_BPF, it cannot write outside its state directory (not
//! even /tmp: Landlock), and it
//! refuses to start when it cannot create its interface. These machines have no kernel
//! WireGuard module: the agents run the default `--wireguard auto`, which says so in its
//! log and falls back to userspace WireGuard (boringtun's data path on two hosts, gotatun
//! on the third); `--wireguard kernel` refuses to start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_common;

use agent_common::*;

#[test]
fn mesh_allows_the_policy_pair_drops_the_other_and_applies_changes_live() {
    ensure_servos_user();
    let net = servos_testkit::TestNet::new(3).unwrap();
    // Hosts 0 and 1 run the default userspace engine (boringtun's data path); host 2 runs
    // the other one (gotatun): both engines stay exercised, and they interoperate.
    let agents = Agents::start_args(&net, |i| {
        let engine = if i == 2 { " --userspace-engine gotatun" } else { "" };
        format!(
            "--address {}/16 --mesh-config {STATE_DIR}/mesh.json --listen-port {PORT}{engine}",
            mesh_ip(i)
        )
    });
    let keys = agents.public_keys(&net);
    // Host 0 may reach host 1 on TCP 7000; host 2 may not (yet).
    let allow_0_to_1 = vec![rule(0, 1, 7000)];
    agents.write_static_configs(&net, &keys, &allow_0_to_1);
    net.host(1)
        .exec("busybox nc -ll -p 7000 -e /bin/echo mesh-ok >/dev/null 2>&1 &")
        .unwrap();
    wait_for_handshake(&net, 0, 1);
    // `--wireguard auto` (the default) on a kernel without WireGuard: one log line that
    // says why and that userspace is used, and the status file names the backend.
    for i in 0..3 {
        let out = net
            .host(i)
            .exec("grep 'kernel WireGuard not available' /tmp/servos-agent.log")
            .unwrap();
        let line = String::from_utf8_lossy(&out.stdout);
        assert_eq!(line.lines().count(), 1, "host {i}: {}", log(net.host(i)));
        assert!(
            line.contains(
                "kernel WireGuard not available (EOPNOTSUPP: Operation not supported (os error 95): this kernel has no WireGuard module); using userspace WireGuard on /dev/net/tun"
            ),
            "host {i}: {line}"
        );
        assert_eq!(status(&net, i)["wireguard"], "userspace");
        let engine = if i == 2 { "gotatun" } else { "boringtun" };
        assert!(
            log(net.host(i)).contains(&format!("WireGuard started data_path=\"{engine}\"")),
            "host {i}: {}",
            log(net.host(i))
        );
    }

    assert_eq!(
        tcp(&net, 0, 1, 7000),
        Some("mesh-ok".to_owned()),
        "allowed pair must connect"
    );
    let dropped_before = status(&net, 1)["counters"]["dropped"].as_u64().unwrap();
    assert_eq!(tcp(&net, 2, 1, 7000), None, "host 2 is not in the policy");
    wait_for("drop counted", || {
        status(&net, 1)["counters"]["dropped"].as_u64().unwrap() > dropped_before
    });

    // Policy change on the running agents: host 2 allowed now, no restart.
    let pid_before = agents.pid(1);
    let both = vec![rule(0, 1, 7000), rule(2, 1, 7000)];
    agents.write_static_configs(&net, &keys, &both);
    wait_for("policy applied", || {
        status(&net, 1)["policy_rules"].as_u64() == Some(2)
    });
    assert_eq!(
        tcp(&net, 2, 1, 7000),
        Some("mesh-ok".to_owned()),
        "host 2 allowed after the change"
    );
    assert_eq!(agents.pid(1), pid_before, "the agent was not restarted");

    // And revoked again.
    agents.write_static_configs(&net, &keys, &allow_0_to_1);
    wait_for("policy applied", || {
        status(&net, 1)["policy_rules"].as_u64() == Some(1)
    });
    assert_eq!(tcp(&net, 2, 1, 7000), None, "host 2 revoked");
    assert_eq!(tcp(&net, 0, 1, 7000), Some("mesh-ok".to_owned()));
}

#[test]
fn running_agent_is_user_servos_with_exactly_three_capabilities() {
    ensure_servos_user();
    let net = servos_testkit::TestNet::new(1).unwrap();
    let agents = Agents::start_static(&net);
    agents.public_keys(&net);
    // Every thread, the WireGuard event loop started after the drop included.
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{}/task", agents.pid(0)))
        .unwrap()
        .map(|t| t.unwrap().path())
        .collect();
    assert!(tasks.len() >= 2, "runtime and WireGuard threads: {tasks:?}");
    for task in tasks {
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}:")))
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap()
        };
        let (uid, gid) = servos_ids();
        assert_eq!(field("Uid"), format!("{uid} {uid} {uid} {uid}"), "{task:?}");
        assert_eq!(field("Gid"), format!("{gid} {gid} {gid} {gid}"), "{task:?}");
        assert_eq!(field("Groups"), gid.to_string(), "{task:?}");
        // CAP_NET_ADMIN (12) | CAP_IPC_LOCK (14) | CAP_BPF (39).
        assert_eq!(1u64 << 12 | 1 << 14 | 1 << 39, 0x80_0000_5000);
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd"] {
            assert_eq!(field(set), "0000008000005000", "{set} of {task:?}");
        }
        assert_eq!(field("CapAmb"), "0000000000000000", "{task:?}");
        assert_eq!(field("NoNewPrivs"), "1", "{task:?}");
    }
}

#[test]
fn dropped_agent_cannot_write_outside_its_state_directory() {
    ensure_servos_user();
    let net = servos_testkit::TestNet::new(1).unwrap();
    let host = net.host(0);
    // The probe goes through the same start-up and drop as the agent, then tries to write.
    let out = host
        .exec(&format!(
            "rm -f /tmp/servos-probe /var/tmp/servos-probe /dev/shm/servos-probe; \
             {bin} agent --wireguard userspace --interface probe0 --address 10.77.9.1/16 --mesh-config /nonexistent \
             --probe-write /var/lib/servos/agent/ok --probe-write /etc/servos-probe \
             --probe-write /var/lib/servos/outside --probe-write /root/servos-probe \
             --probe-write /usr/local/bin/servos-probe --probe-write /tmp/servos-probe \
             --probe-write /var/tmp/servos-probe --probe-write /dev/shm/servos-probe 2>&1",
            bin = servos_bin()
        ))
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("/var/lib/servos/agent/ok: written"), "{text}");
    // `--wireguard userspace` goes straight to the TUN device: no kernel attempt.
    assert!(text.contains("wireguard=userspace"), "{text}");
    assert!(!text.contains("kernel WireGuard not available"), "{text}");
    // World-writable places are closed by Landlock (this kernel has it: ABI ≥ 1), not by
    // the uid: the agent says so in its log.
    assert!(
        text.contains("Landlock enforced"),
        "the agent must confine itself with Landlock: {text}"
    );
    for path in [
        "/etc/servos-probe",
        "/var/lib/servos/outside",
        "/root/servos-probe",
        "/usr/local/bin/servos-probe",
        "/tmp/servos-probe",
        "/var/tmp/servos-probe",
        "/dev/shm/servos-probe",
    ] {
        assert!(
            text.contains(&format!("{path}: Permission denied")),
            "{path} must be refused: {text}"
        );
        assert!(!std::path::Path::new(path).exists() || path.starts_with("/var/lib/servos"));
    }
    for path in [
        "/var/lib/servos/outside",
        "/etc/servos-probe",
        "/tmp/servos-probe",
        "/var/tmp/servos-probe",
        "/dev/shm/servos-probe",
    ] {
        let leftover = host.exec(&format!("test -e {path}")).unwrap();
        assert!(!leftover.status.success(), "{path} was created");
    }
}

/// Runs `servos agent ARGS` on `host` after the shell text `setup`; it must refuse to
/// start (exit code 2). What it printed (stdout and stderr).
fn refused_start(host: &servos_testkit::TestHost, setup: &str, args: &str) -> String {
    let out = host
        .exec(&format!("{setup}{} agent {args} 2>&1; echo exit=$?", servos_bin()))
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("exit=2"), "{text}");
    text
}

#[test]
fn agent_refuses_to_start_when_it_cannot_create_the_interface() {
    ensure_servos_user();
    let net = servos_testkit::TestNet::new(1).unwrap();
    let host = net.host(0);
    // A name the kernel rejects (longer than IFNAMSIZ-1): creation fails.
    let text = refused_start(
        host,
        "",
        "--interface this-name-is-far-too-long --address 10.77.9.1/16 --mesh-config /x",
    );
    assert!(
        text.contains(
            "error: servos agent: cannot create the mesh interface \"this-name-is-far-too-long\""
        ),
        "{text}"
    );
}

#[test]
fn agent_refuses_to_start_when_it_cannot_load_the_classifier() {
    ensure_servos_user();
    let net = servos_testkit::TestNet::new(1).unwrap();
    let host = net.host(0);
    // Not a BPF object: loading fails; the process still drops before it exits.
    let text = refused_start(
        host,
        "echo 'not an ELF object' > /tmp/bad.o; ",
        "--interface badbpf0 --address 10.77.9.1/16 --mesh-config /x --classifier-object /tmp/bad.o",
    );
    assert!(
        text.contains(
            "error: servos agent: cannot load the mesh eBPF classifier onto badbpf0: load object:"
        ),
        "{text}"
    );
    assert!(!text.contains("privileges dropped"), "{text}");
}

/// `--wireguard kernel` on a kernel without WireGuard: RTM_NEWLINK of kind wireguard fails
/// (EOPNOTSUPP), and the agent refuses to start with an error naming the interface and the
/// errno, drops privileges on the way out (no "privileges dropped" line: it never got that
/// far), leaves no process and no half-made link. Where the kernel does have WireGuard, the
/// same command must start the kernel backend instead; that branch never ran here.
#[test]
fn agent_with_wireguard_kernel_refuses_to_start_kernel_wireguard_not_available_here() {
    ensure_servos_user();
    let net = servos_testkit::TestNet::new(1).unwrap();
    let host = net.host(0);
    let probe = host
        .exec("ip link add kwgprobe type wireguard 2>&1 && ip link del kwgprobe")
        .unwrap();
    let kernel_has_wireguard = probe.status.success();
    if kernel_has_wireguard {
        let agents = Agents::start_args(&net, |_| {
            format!("--wireguard kernel --interface kwg0 --address 10.77.9.1/16 --mesh-config {STATE_DIR}/mesh.json")
        });
        agents.public_keys(&net);
        assert_eq!(status(&net, 0)["wireguard"], "kernel");
        let link = host.exec("ip -d link show kwg0").unwrap();
        assert!(String::from_utf8_lossy(&link.stdout).contains("wireguard"));
        return;
    }
    assert!(
        String::from_utf8_lossy(&probe.stdout).contains("Unknown device type"),
        "{}",
        String::from_utf8_lossy(&probe.stdout)
    );
    let text = refused_start(
        host,
        "",
        "--wireguard kernel --interface kwg0 --address 10.77.9.1/16 --mesh-config /x",
    );
    assert!(
        text.contains(
            "error: servos agent: cannot create the kernel WireGuard interface \"kwg0\" (--wireguard kernel): create: EOPNOTSUPP: Operation not supported (os error 95): this kernel has no WireGuard module"
        ),
        "{text}"
    );
    assert!(!text.contains("privileges dropped"), "{text}");
    assert!(!text.contains("using userspace"), "{text}");
    let left = host
        .exec("pgrep -f 'agent --wireguard kernel --interface [k]wg0'; ip link show kwg0 2>&1")
        .unwrap();
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(
        left.contains("does not exist") && !left.lines().any(|l| l.trim().parse::<u32>().is_ok()),
        "a process or link was left: {left}"
    );
}
