//! The node agent on three real test hosts (network namespaces): the mesh comes up, the
//! eBPF policy lets one pair through and drops (and counts) another, a policy change
//! applies without a restart, the running agent holds exactly uid/gid `servos` and
//! CAP_NET_ADMIN|CAP_IPC_LOCK|CAP_BPF, it cannot write outside its state directory (not
//! even /tmp: Landlock), and it
//! refuses to start when it cannot create its interface.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_common;

use agent_common::*;

#[test]
fn mesh_allows_the_policy_pair_drops_the_other_and_applies_changes_live() {
    ensure_servos_user();
    let net = servos_testkit::TestNet::new(3).unwrap();
    let agents = Agents::start_static(&net);
    let keys = agents.public_keys(&net);
    // Host 0 may reach host 1 on TCP 7000; host 2 may not (yet).
    let allow_0_to_1 = vec![rule(0, 1, 7000)];
    agents.write_static_configs(&net, &keys, &allow_0_to_1);
    net.host(1)
        .exec("busybox nc -ll -p 7000 -e /bin/echo mesh-ok >/dev/null 2>&1 &")
        .unwrap();
    wait_for_handshake(&net, 0, 1);

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
    let status = std::fs::read_to_string(format!("/proc/{}/status", agents.pid(0))).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap()
    };
    let (uid, gid) = servos_ids();
    assert_eq!(field("Uid"), format!("{uid} {uid} {uid} {uid}"));
    assert_eq!(field("Gid"), format!("{gid} {gid} {gid} {gid}"));
    assert_eq!(field("Groups"), gid.to_string());
    // CAP_NET_ADMIN (12) | CAP_IPC_LOCK (14) | CAP_BPF (39).
    assert_eq!(1u64 << 12 | 1 << 14 | 1 << 39, 0x80_0000_5000);
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd"] {
        assert_eq!(field(set), "0000008000005000", "{set}");
    }
    assert_eq!(field("CapAmb"), "0000000000000000");
    assert_eq!(field("NoNewPrivs"), "1");
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
             {bin} agent --interface probe0 --address 10.77.9.1/16 --mesh-config /nonexistent \
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

#[test]
fn agent_refuses_to_start_when_it_cannot_create_the_interface() {
    ensure_servos_user();
    let net = servos_testkit::TestNet::new(1).unwrap();
    let host = net.host(0);
    // A name the kernel rejects (longer than IFNAMSIZ-1): creation fails.
    let out = host
        .exec(&format!(
            "{} agent --interface this-name-is-far-too-long --address 10.77.9.1/16 --mesh-config /x 2>&1; echo exit=$?",
            servos_bin()
        ))
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "error: servos agent: cannot create the mesh interface \"this-name-is-far-too-long\""
        ),
        "{text}"
    );
    assert!(text.contains("exit=2"), "{text}");
}

#[test]
fn agent_refuses_to_start_when_it_cannot_load_the_classifier() {
    ensure_servos_user();
    let net = servos_testkit::TestNet::new(1).unwrap();
    let host = net.host(0);
    // Not a BPF object: loading fails; the process still drops before it exits.
    let out = host
        .exec(&format!(
            "echo 'not an ELF object' > /tmp/bad.o; {} agent --interface badbpf0 --address 10.77.9.1/16 \
             --mesh-config /x --classifier-object /tmp/bad.o 2>&1; echo exit=$?",
            servos_bin()
        ))
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "error: servos agent: cannot load the mesh eBPF classifier onto badbpf0: load object:"
        ),
        "{text}"
    );
    assert!(text.contains("exit=2"), "{text}");
    assert!(!text.contains("privileges dropped"), "{text}");
}
