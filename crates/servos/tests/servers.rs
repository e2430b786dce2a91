//! Servers over SSH through the real binary and CLI, on real test hosts: commissioning
//! pins the host key `ssh-keygen -lf` shows, a replaced key is refused until reset.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Env, keygen, stderr_line};
use serde_json::Value;
use servos_testkit::TestNet;

#[tokio::test]
async fn cli_commissions_a_server_and_refuses_a_changed_host_key_until_reset() {
    let net = TestNet::new(1).unwrap();
    let host = net.host(0);
    let env = Env::new().await;
    let _server = env.serve(&keygen());
    env.ok(&["setup", "--username", "admin"], "correct horse battery staple\n");

    let added: Value = serde_json::from_str(&env.ok(&["--json", "servers", "add", "web-1", "--host", &host.addr().to_string()], "")).unwrap();
    assert_eq!(added["status"], "pending");
    host.authorize(added["public_key"].as_str().unwrap()).unwrap();

    let checked: Value = serde_json::from_str(&env.ok(&["--json", "servers", "check", "web-1"], "")).unwrap();
    assert_eq!(checked["status"], "ready", "{checked}");
    let pinned = host.host_key_fingerprint().unwrap();
    assert_eq!(checked["host_key_fingerprint"], pinned.as_str());
    assert!(checked["facts"]["os"].as_str().unwrap().contains("Debian"), "{checked}");
    assert!(checked["facts"]["arch"].as_str().is_some());

    let fresh = host.replace_host_key().unwrap();
    assert_ne!(fresh, pinned);
    let out = env.run(None, &["servers", "check", "web-1"], "");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_line(&out);
    assert!(err.contains("web-1 is host_key_mismatch"), "{err}");
    assert!(err.contains("servos servers reset-fingerprint web-1"), "{err}");
    let shown: Value = serde_json::from_str(&env.ok(&["--json", "servers", "show", "web-1"], "")).unwrap();
    assert_eq!(shown["host_key_fingerprint"], pinned.as_str(), "the pin does not move on a mismatch");
    let events = env.ok(&["--json", "audit", "list"], "");
    assert!(events.contains("server.host_key_mismatch") && events.contains(&fresh), "{events}");

    env.ok(&["servers", "reset-fingerprint", "web-1"], "");
    let again: Value = serde_json::from_str(&env.ok(&["--json", "servers", "check", "web-1"], "")).unwrap();
    assert_eq!(again["status"], "ready");
    assert_eq!(again["host_key_fingerprint"], fresh.as_str());
}

#[tokio::test]
async fn cli_moves_a_server_to_another_mesh_address_and_refuses_bad_or_taken_ones() {
    let env = Env::new().await;
    let _server = env.serve(&keygen());
    env.ok(&["setup", "--username", "admin"], "correct horse battery staple\n");
    // Recording servers needs no connection: the addresses are documentation ones.
    env.ok(&["servers", "add", "web-1", "--host", "192.0.2.10"], "");
    env.ok(&["servers", "add", "web-2", "--host", "192.0.2.11"], "");

    let moved: Value = serde_json::from_str(&env.ok(&["--json", "servers", "mesh-address", "web-1", "10.77.0.9"], "")).unwrap();
    assert_eq!(moved["mesh_address"], "10.77.0.9", "{moved}");
    let shown: Value = serde_json::from_str(&env.ok(&["--json", "servers", "agent", "web-1"], "")).unwrap();
    assert_eq!(shown["mesh_address"], "10.77.0.9", "{shown}");
    let table = env.ok(&["servers", "mesh-address", "web-1", "10.77.0.10"], "");
    assert!(table.contains("web-1 now has mesh address 10.77.0.10"), "{table}");

    for (bad, says) in [("10.78.0.1", "10.78.0.1"), ("not-an-ip", "not-an-ip"), ("10.77.0.0", "10.77.0.0")] {
        let out = env.run(None, &["servers", "mesh-address", "web-2", bad], "");
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = stderr_line(&out);
        assert!(err.contains(says) && err.contains("10.77.0.0/16"), "{bad}: {err}");
    }
    let out = env.run(None, &["servers", "mesh-address", "web-2", "10.77.0.10"], "");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_line(&out);
    assert!(err.contains("10.77.0.10"), "{err}");
    // Nothing was lost: web-1 keeps its address, and the move is audited.
    let shown: Value = serde_json::from_str(&env.ok(&["--json", "servers", "agent", "web-1"], "")).unwrap();
    assert_eq!(shown["mesh_address"], "10.77.0.10", "{shown}");
    let events = env.ok(&["--json", "audit", "list"], "");
    assert!(events.contains("server.mesh_address_changed"), "{events}");
}
