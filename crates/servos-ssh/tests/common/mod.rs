//! Shared helpers for the SSH integration tests: a test net with a generated client key
//! authorized on every host.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::time::Duration;

use servos_core::Secret;
use servos_ssh::keys::{self, KeyPair};
use servos_ssh::{HostKeyPolicy, Session, SshError, Target, Timeouts};
use servos_testkit::{TestHost, TestNet};

pub struct Setup {
    pub net: TestNet,
    pub key: KeyPair,
}

pub fn setup(hosts: usize) -> Setup {
    let net = TestNet::new(hosts).unwrap();
    let key = keys::generate_ed25519("servos-test").unwrap();
    for host in net.hosts() {
        host.authorize(&key.public_line).unwrap();
    }
    Setup { net, key }
}

pub fn target(host: &TestHost) -> Target {
    Target {
        host: host.addr().to_string(),
        port: host.ssh_port(),
        user: "root".to_owned(),
    }
}

/// Short limits so failure tests finish quickly.
pub fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(3),
        command: Duration::from_secs(10),
        keepalive_interval: Duration::from_secs(1),
        keepalive_max: 3,
    }
}

pub async fn connect(
    host: &TestHost,
    key: &Secret<String>,
    policy: HostKeyPolicy,
) -> Result<Session, SshError> {
    Session::connect(&target(host), key, None, policy, timeouts()).await
}

/// Whether `path` exists inside the host.
pub fn exists_on(host: &TestHost, path: &str) -> bool {
    host.exec(&format!("test -e '{path}'"))
        .unwrap()
        .status
        .success()
}
