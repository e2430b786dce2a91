//! Running commands: exact output, exit status, stdin, streaming, hostile arguments,
//! concurrency over one connection, and the connection pool.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{connect, exists_on, setup};
use servos_ssh::{ExitStatus, HostKeyPolicy, RemoteCommand, SshError, SshPool, Stream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_arguments_are_passed_literally() {
    let s = setup(1);
    let host = s.net.host(0);
    let session = connect(host, &s.key.private_openssh, HostKeyPolicy::TrustOnFirstUse)
        .await
        .unwrap();
    let hostile = [
        "$(touch /tmp/pwned)",
        "`touch /tmp/pwned2`",
        "; touch /tmp/pwned3",
        "it's",
        "a\nb",
        "",
        "$HOME",
    ];
    let cmd = RemoteCommand::new("printf").arg("[%s]").args(hostile);
    let out = session.exec(&cmd).await.unwrap();
    assert!(out.status.success(), "{}", out.stderr_lossy());
    assert_eq!(
        out.stdout_lossy(),
        "[$(touch /tmp/pwned)][`touch /tmp/pwned2`][; touch /tmp/pwned3][it's][a\nb][][$HOME]"
    );
    for path in ["/tmp/pwned", "/tmp/pwned2", "/tmp/pwned3"] {
        assert!(
            !exists_on(host, path),
            "{path} was created: an argument was interpreted by the shell"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_status_and_stderr_are_reported() {
    let s = setup(1);
    let session = connect(
        s.net.host(0),
        &s.key.private_openssh,
        HostKeyPolicy::TrustOnFirstUse,
    )
    .await
    .unwrap();
    let cmd = RemoteCommand::new("sh")
        .arg("-c")
        .arg("echo out; echo err >&2; exit 3");
    let out = session.exec(&cmd).await.unwrap();
    assert_eq!(out.status, ExitStatus::Code(3));
    assert_eq!(out.stdout_lossy(), "out\n");
    assert_eq!(out.stderr_lossy(), "err\n");
    let err = out.checked(&session.target().addr(), &cmd).unwrap_err();
    assert!(matches!(err, SshError::CommandFailed { .. }), "{err}");
    assert!(
        err.to_string().ends_with("failed with exit code 3: err"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_is_written_to_a_private_file_without_touching_argv() {
    let s = setup(1);
    let host = s.net.host(0);
    let session = connect(host, &s.key.private_openssh, HostKeyPolicy::TrustOnFirstUse)
        .await
        .unwrap();
    host.exec("mkdir -p /var/lib/servos/secrets").unwrap();
    let path = "/var/lib/servos/secrets/test.env";
    let cmd = RemoteCommand::new("umask")
        .arg("077")
        .and_then(RemoteCommand::new("cat").stdout_to(path));
    // Larger than the channel window, to exercise flow control.
    let secret: Vec<u8> = (0..3_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let out = session.exec_with_stdin(&cmd, &secret).await.unwrap();
    assert!(out.status.success(), "{}", out.stderr_lossy());
    let check = host
        .exec(&format!("stat -c %a {path}; wc -c < {path}"))
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&check.stdout), "600\n3000000\n");
    let hash = |data: &[u8]| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hasher::write(&mut h, data);
        std::hash::Hasher::finish(&h)
    };
    let back = session
        .exec(&RemoteCommand::new("cat").arg(path))
        .await
        .unwrap();
    assert_eq!(hash(&back.stdout), hash(&secret));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_delivers_output_as_it_is_produced() {
    let s = setup(1);
    let session = connect(
        s.net.host(0),
        &s.key.private_openssh,
        HostKeyPolicy::TrustOnFirstUse,
    )
    .await
    .unwrap();
    let chunks = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&chunks);
    let started = Instant::now();
    let cmd = RemoteCommand::new("sh")
        .arg("-c")
        .arg("echo one; sleep 1; echo two >&2; sleep 1; echo three");
    let status = session
        .exec_streaming(&cmd, None, move |stream, data| {
            seen.lock().unwrap().push((
                stream,
                String::from_utf8_lossy(data).into_owned(),
                started.elapsed(),
            ));
        })
        .await
        .unwrap();
    assert!(status.success());
    let chunks = chunks.lock().unwrap();
    let texts: Vec<(Stream, &str)> = chunks.iter().map(|(s, t, _)| (*s, t.as_str())).collect();
    assert_eq!(
        texts,
        [
            (Stream::Stdout, "one\n"),
            (Stream::Stderr, "two\n"),
            (Stream::Stdout, "three\n")
        ]
    );
    assert!(
        chunks[0].2 < Duration::from_millis(900),
        "the first line came only after {:?}",
        chunks[0].2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_commands_share_one_connection() {
    let s = setup(1);
    let session = Arc::new(
        connect(
            s.net.host(0),
            &s.key.private_openssh,
            HostKeyPolicy::TrustOnFirstUse,
        )
        .await
        .unwrap(),
    );
    let started = Instant::now();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let session = Arc::clone(&session);
            tokio::spawn(async move {
                let cmd = RemoteCommand::new("sh")
                    .arg("-c")
                    .arg(format!("sleep 0.5; echo {i}"));
                (i, session.exec(&cmd).await)
            })
        })
        .collect();
    for task in tasks {
        let (i, out) = task.await.unwrap();
        let out = out.unwrap_or_else(|e| panic!("command {i}: {e}"));
        assert_eq!(out.stdout_lossy(), format!("{i}\n"));
    }
    // Ten channels at a time: about two rounds of 0.5s, far less than 20 × 0.5s in a row.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_reuses_a_connection_and_reconnects_when_it_died() {
    let s = setup(1);
    let host = s.net.host(0);
    let pool: SshPool<u32> = SshPool::new();
    let connects = Arc::new(Mutex::new(0));
    let get = || {
        let connects = Arc::clone(&connects);
        let key = &s.key.private_openssh;
        pool.get(&7, move || async move {
            *connects.lock().unwrap() += 1;
            connect(host, key, HostKeyPolicy::TrustOnFirstUse).await
        })
    };
    let first = get().await.unwrap();
    let again = get().await.unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    assert_eq!(*connects.lock().unwrap(), 1);

    host.kill_ssh_sessions().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !first.is_closed() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fresh = get().await.unwrap();
    assert!(!Arc::ptr_eq(&first, &fresh));
    assert_eq!(*connects.lock().unwrap(), 2);
    let out = fresh
        .exec(&RemoteCommand::new("echo").arg("back"))
        .await
        .unwrap();
    assert_eq!(out.stdout_lossy(), "back\n");
}
