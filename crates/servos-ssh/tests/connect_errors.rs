//! Connection failures are quick, bounded in time, and say what went wrong.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{connect, setup, target, timeouts};
use servos_core::Secret;
use servos_ssh::keys;
use servos_ssh::{HostKeyPolicy, RemoteCommand, Session, SshError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_host_does_not_know_is_rejected() {
    let s = setup(1);
    let stranger = keys::generate_ed25519("stranger").unwrap();
    let err = connect(
        s.net.host(0),
        &stranger.private_openssh,
        HostKeyPolicy::TrustOnFirstUse,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SshError::AuthRejected { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "root@{}:22 rejected the public key authentication: is the key in authorized_keys",
            s.net.host(0).addr()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_is_refused_quickly() {
    let s = setup(1);
    let host = s.net.host(0);
    host.stop().unwrap();
    let started = Instant::now();
    let err = connect(host, &s.key.private_openssh, HostKeyPolicy::TrustOnFirstUse)
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::ConnectionRefused { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_host_times_out_within_the_connect_timeout() {
    let s = setup(1);
    let host = s.net.host(0);
    host.cut_off().unwrap();
    let started = Instant::now();
    let err = connect(host, &s.key.private_openssh, HostKeyPolicy::TrustOnFirstUse)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, SshError::ConnectTimeout { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("connecting to {}:22 timed out after 3s", host.addr())
    );
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(5),
        "took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_on_a_cut_off_session_fails_within_its_command_timeout() {
    let s = setup(1);
    let host = s.net.host(0);
    let session = connect(host, &s.key.private_openssh, HostKeyPolicy::TrustOnFirstUse)
        .await
        .unwrap();
    host.cut_off().unwrap();
    let started = Instant::now();
    let cmd = RemoteCommand::new("echo")
        .arg("hello")
        .timeout(Duration::from_secs(2));
    let err = session.exec(&cmd).await.unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(
            err,
            SshError::CommandTimeout { .. } | SshError::Disconnected { .. }
        ),
        "{err}"
    );
    assert!(took < Duration::from_secs(4), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_streaming_command_is_killed_on_the_host() {
    let s = setup(1);
    let session = connect(
        s.net.host(0),
        &s.key.private_openssh,
        HostKeyPolicy::TrustOnFirstUse,
    )
    .await
    .unwrap();
    // Quiet after its first line, like `docker logs -f` of an idle container: closing
    // the channel alone would leave it running (it never writes again).
    let secs = format!("31.{}", std::process::id());
    let cmd = RemoteCommand::new("sh")
        .arg("-c")
        .arg(format!("echo ready; sleep {secs}"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut tx = Some(tx);
    let run = session.exec_streaming(&cmd, None, move |_, _| {
        if let Some(tx) = tx.take() {
            let _ = tx.send(());
        }
    });
    tokio::select! {
        r = run => panic!("the command ended early: {r:?}"),
        _ = rx => {}
    }
    // The future is dropped here, mid-command. `sh` prints "ready" before it forks `sleep`,
    // so first give the sleep a moment to appear (unless the kill beat it), then wait for it
    // to go: checking only for its absence could look before it ever started.
    let appear = Instant::now() + Duration::from_secs(1);
    while !sleep_is_running(&secs) && Instant::now() < appear {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while sleep_is_running(&secs) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !sleep_is_running(&secs),
        "the abandoned command still runs on the host"
    );
    let out = session
        .exec(&RemoteCommand::new("echo").arg("still here"))
        .await
        .unwrap();
    assert_eq!(out.stdout_lossy(), "still here\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_command_is_abandoned_at_its_timeout() {
    let s = setup(1);
    let session = connect(
        s.net.host(0),
        &s.key.private_openssh,
        HostKeyPolicy::TrustOnFirstUse,
    )
    .await
    .unwrap();
    let started = Instant::now();
    // A duration unique to this test process, so that its `sleep` is recognisable.
    let secs = format!("29.{}", std::process::id());
    let cmd = RemoteCommand::new("sleep")
        .arg(&secs)
        .timeout(Duration::from_secs(1));
    let err = session.exec(&cmd).await.unwrap_err();
    assert!(matches!(err, SshError::CommandTimeout { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "command `sleep {secs}` on {}:22 did not finish within 1s",
            s.net.host(0).addr()
        )
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    // The abandoned command is killed, not left running on the host.
    let deadline = Instant::now() + Duration::from_secs(3);
    while sleep_is_running(&secs) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !sleep_is_running(&secs),
        "the timed-out command still runs on the host"
    );
    // The connection stays usable for the next command.
    let out = session
        .exec(&RemoteCommand::new("echo").arg("still here"))
        .await
        .unwrap();
    assert_eq!(out.stdout_lossy(), "still here\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_reported_as_closed() {
    let s = setup(1);
    let host = s.net.host(0);
    let session = connect(host, &s.key.private_openssh, HostKeyPolicy::TrustOnFirstUse)
        .await
        .unwrap();
    host.kill_ssh_sessions().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !session.is_closed() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(session.is_closed());
    let err = session.exec(&RemoteCommand::new("true")).await.unwrap_err();
    assert!(matches!(err, SshError::Disconnected { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_passphrase_is_reported_before_connecting() {
    let s = setup(1);
    let dir = tempfile::tempdir().unwrap();
    let (private, _) = ssh_keygen_key(dir.path(), "ed25519", "right");
    let err = Session::connect(
        &target(s.net.host(0)),
        &private,
        Some(&Secret::new("wrong".to_owned())),
        HostKeyPolicy::TrustOnFirstUse,
        timeouts(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SshError::WrongPassphrase), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passphrase_protected_ed25519_and_rsa_keys_authenticate() {
    let s = setup(1);
    let host = s.net.host(0);
    let dir = tempfile::tempdir().unwrap();
    let passphrase = Secret::new("s3cret 'pass'".to_owned());
    for kind in ["ed25519", "rsa"] {
        let (private, public) = ssh_keygen_key(dir.path(), kind, passphrase.expose());
        host.authorize(&public).unwrap();
        let session = Session::connect(
            &target(host),
            &private,
            Some(&passphrase),
            HostKeyPolicy::TrustOnFirstUse,
            timeouts(),
        )
        .await
        .unwrap_or_else(|e| panic!("{kind}: {e}"));
        let out = session
            .exec(&RemoteCommand::new("echo").arg(kind))
            .await
            .unwrap();
        assert_eq!(out.stdout_lossy(), format!("{kind}\n"));
    }
}

fn sleep_is_running(secs: &str) -> bool {
    let pattern = format!("^sleep {}$", secs.replace('.', "[.]"));
    std::process::Command::new("pgrep")
        .args(["-f", &pattern])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// A passphrase-protected key made by ssh-keygen: (private key, public line).
fn ssh_keygen_key(dir: &std::path::Path, kind: &str, passphrase: &str) -> (Secret<String>, String) {
    let path = dir.join(format!("id_{kind}"));
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", passphrase, "-f"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    let private = Secret::new(std::fs::read_to_string(&path).unwrap());
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    (private, public)
}
