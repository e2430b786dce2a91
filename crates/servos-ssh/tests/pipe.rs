//! Piping one host's stdout into another host's stdin through this process
//! (`exec_stdout_to` → bounded channel → `exec_stdin_from`), on real sshd test hosts:
//! the bytes arrive intact, and a reader that goes away stops the writer on its host.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{connect, setup};
use servos_ssh::{ExitStatus, HostKeyPolicy, RemoteCommand, SshError};
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_of_one_host_reaches_stdin_of_another_intact() {
    let s = setup(2);
    let key = &s.key.private_openssh;
    let a = connect(s.net.host(0), key, HostKeyPolicy::TrustOnFirstUse)
        .await
        .unwrap();
    let b = connect(s.net.host(1), key, HostKeyPolicy::TrustOnFirstUse)
        .await
        .unwrap();
    let make = RemoteCommand::new("sh")
        .arg("-c")
        .arg("head -c 20000000 /dev/urandom > /tmp/blob && sha256sum < /tmp/blob");
    let expected = a.exec(&make).await.unwrap().stdout_lossy();
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let (cat, sum) = (
        RemoteCommand::new("cat").arg("/tmp/blob"),
        RemoteCommand::new("sha256sum"),
    );
    let send = a.exec_stdout_to(&cat, tx, |_| {});
    let mut got = Vec::new();
    let receive = b.exec_stdin_from(&sum, rx, |_, d| got.extend_from_slice(d));
    let (sent, received) = tokio::join!(send, receive);
    assert_eq!(sent.unwrap(), ExitStatus::Code(0));
    assert_eq!(received.unwrap(), ExitStatus::Code(0));
    assert_eq!(String::from_utf8_lossy(&got), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_goes_away_stops_the_remote_writer() {
    let s = setup(1);
    let host = s.net.host(0);
    let session = connect(host, &s.key.private_openssh, HostKeyPolicy::TrustOnFirstUse)
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::channel::<Bytes>(2);
    let writer = RemoteCommand::new("sh")
        .arg("-c")
        .arg("cat /dev/zero; : servos-pipe-test");
    let reader = async move {
        rx.recv().await.unwrap();
        drop(rx);
    };
    let started = Instant::now();
    let (result, ()) = tokio::join!(session.exec_stdout_to(&writer, tx, |_| {}), reader);
    match result {
        Err(SshError::Command { reason, .. }) => assert!(reason.contains("went away"), "{reason}"),
        other => panic!("expected the pipe to fail, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    // The remote `cat` is killed, not left blocked on a full channel.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = host.exec("pgrep -f 'servos-pipe-tes[t]' || true").unwrap();
        if String::from_utf8_lossy(&out.stdout).trim().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the writer still runs");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
