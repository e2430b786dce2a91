//! Trust on first use and pinning: the fingerprint is the one `ssh-keygen -lf` prints, and
//! a changed host key is refused inside the handshake, before anything can run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{connect, exists_on, setup};
use servos_ssh::{HostKeyPolicy, RemoteCommand, SshError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_connection_reports_the_fingerprint_ssh_keygen_prints() {
    let s = setup(1);
    let host = s.net.host(0);
    let session = connect(host, &s.key.private_openssh, HostKeyPolicy::TrustOnFirstUse)
        .await
        .unwrap();
    assert_eq!(
        session.host_key_fingerprint(),
        host.host_key_fingerprint().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_fingerprint_connects_and_runs_commands() {
    let s = setup(1);
    let host = s.net.host(0);
    let pin = HostKeyPolicy::Pin(host.host_key_fingerprint().unwrap());
    let session = connect(host, &s.key.private_openssh, pin).await.unwrap();
    let out = session
        .exec(&RemoteCommand::new("echo").arg("pinned"))
        .await
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout_lossy(), "pinned\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_host_key_is_refused_before_authentication_and_nothing_runs() {
    let s = setup(1);
    let host = s.net.host(0);
    let old = host.host_key_fingerprint().unwrap();
    let new = host.replace_host_key().unwrap();
    let accepted_before = accepted_logins(host);

    // What a deploy does: connect with the pinned key, then run its command.
    let marker = RemoteCommand::new("touch").arg("/tmp/marker");
    let result = match connect(
        host,
        &s.key.private_openssh,
        HostKeyPolicy::Pin(old.clone()),
    )
    .await
    {
        Ok(session) => session.exec(&marker).await.map(drop),
        Err(e) => Err(e),
    };

    let err = result.unwrap_err();
    match &err {
        SshError::HostKeyMismatch {
            expected,
            presented,
            ..
        } => {
            assert_eq!(expected, &old);
            assert_eq!(presented, &new);
        }
        other => panic!("expected HostKeyMismatch, got {other}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("servos servers reset-fingerprint NAME"),
        "{message}"
    );
    assert!(
        message.contains("POST /api/v1/servers/{id}/fingerprint/reset"),
        "{message}"
    );
    assert!(message.contains("nothing ran on the host"), "{message}");
    assert!(
        !exists_on(host, "/tmp/marker"),
        "the marker command ran despite the host key mismatch"
    );
    assert_eq!(
        accepted_logins(host),
        accepted_before,
        "sshd accepted a login despite the mismatch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_on_first_use_after_a_key_change_sees_the_new_fingerprint() {
    let s = setup(1);
    let host = s.net.host(0);
    let new = host.replace_host_key().unwrap();
    let session = connect(host, &s.key.private_openssh, HostKeyPolicy::TrustOnFirstUse)
        .await
        .unwrap();
    assert_eq!(session.host_key_fingerprint(), new);
}

/// Lines of the host's sshd log that record a successful login.
fn accepted_logins(host: &servos_testkit::TestHost) -> usize {
    let log = std::fs::read_to_string(host.dir().join("sshd.log")).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("Accepted publickey"))
        .count()
}
