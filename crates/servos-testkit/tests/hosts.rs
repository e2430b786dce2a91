//! Behaviour of the test hosts themselves, checked with the real OpenSSH client.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use servos_testkit::{TestHost, TestNet};

/// A client key made with ssh-keygen: (private key path, public line).
fn client_key(dir: &Path) -> (PathBuf, String) {
    let path = dir.join("id_ed25519");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    (path, public.trim().to_owned())
}

/// Runs `command` on the host with the OpenSSH client, checking the host key strictly
/// against `known_host_line`.
fn ssh(dir: &Path, key: &Path, host: &TestHost, known_host_line: &str, command: &str) -> Output {
    let known = dir.join(format!("known_hosts_{}", host.name()));
    std::fs::write(&known, format!("{} {known_host_line}\n", host.addr())).unwrap();
    Command::new("ssh")
        .arg("-i")
        .arg(key)
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known.display()))
        .args(["-p", &host.ssh_port().to_string()])
        .arg(format!("root@{}", host.addr()))
        .arg(command)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn two_hosts_come_up_and_accept_openssh_with_their_own_host_keys() {
    let started = Instant::now();
    let net = TestNet::new(2).unwrap();
    let setup = started.elapsed();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = client_key(dir.path());
    assert_ne!(
        net.host(0).host_key_fingerprint().unwrap(),
        net.host(1).host_key_fingerprint().unwrap()
    );
    for host in net.hosts() {
        host.authorize(&public).unwrap();
        let out = ssh(
            dir.path(),
            &key,
            host,
            &host.host_key_public_line().unwrap(),
            "ip -4 -o addr show eth0",
        );
        assert!(
            out.status.success(),
            "ssh to {}: {}",
            host.name(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout(&out).contains(&format!("inet {}/24", host.addr())),
            "{}",
            stdout(&out)
        );
    }
    assert!(
        setup < Duration::from_secs(3),
        "two hosts took {setup:?} to start"
    );
}

#[test]
fn a_host_refuses_a_key_it_has_not_authorized() {
    let net = TestNet::new(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = client_key(dir.path());
    let host = net.host(0);
    let out = ssh(
        dir.path(),
        &key,
        host,
        &host.host_key_public_line().unwrap(),
        "true",
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn hosts_have_private_tmp_run_and_var_lib_servos() {
    let net = TestNet::new(2).unwrap();
    let marker = format!("svt-private-{}", std::process::id());
    let (a, b) = (net.host(0), net.host(1));
    let write = a
        .exec(&format!(
            "touch /tmp/{marker} /run/{marker} /var/lib/servos/{marker}"
        ))
        .unwrap();
    assert!(
        write.status.success(),
        "{}",
        String::from_utf8_lossy(&write.stderr)
    );
    let seen_by_a = a
        .exec(&format!(
            "ls /tmp/{marker} /run/{marker} /var/lib/servos/{marker}"
        ))
        .unwrap();
    assert!(seen_by_a.status.success());
    for place in ["/tmp", "/run", "/var/lib/servos"] {
        let path = format!("{place}/{marker}");
        assert!(
            !b.exec(&format!("test -e {path}")).unwrap().status.success(),
            "{path} leaked to the other host"
        );
        assert!(
            !Path::new(&path).exists(),
            "{path} leaked to the test machine"
        );
    }
}

#[test]
fn cut_off_makes_tcp_connect_time_out_and_restore_brings_the_host_back() {
    let net = TestNet::new(1).unwrap();
    let host = net.host(0);
    let addr: SocketAddr = host.ssh_addr();
    host.cut_off().unwrap();
    let started = Instant::now();
    let err = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    host.restore().unwrap();
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
}

#[test]
fn stop_refuses_connections_and_start_accepts_them_again() {
    let net = TestNet::new(1).unwrap();
    let host = net.host(0);
    host.stop().unwrap();
    let err = TcpStream::connect_timeout(&host.ssh_addr(), Duration::from_secs(2)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    host.start().unwrap();
    TcpStream::connect_timeout(&host.ssh_addr(), Duration::from_secs(2)).unwrap();
}

#[test]
fn replace_host_key_changes_the_fingerprint_clients_see() {
    let net = TestNet::new(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = client_key(dir.path());
    let host = net.host(0);
    host.authorize(&public).unwrap();
    let old_line = host.host_key_public_line().unwrap();
    let old = host.host_key_fingerprint().unwrap();
    assert!(old.starts_with("SHA256:") && old.len() == 50, "{old}");
    let new = host.replace_host_key().unwrap();
    assert_ne!(old, new);
    assert_eq!(host.host_key_fingerprint().unwrap(), new);
    let with_old = ssh(dir.path(), &key, host, &old_line, "true");
    assert!(
        !with_old.status.success(),
        "the old host key was still accepted"
    );
    assert!(String::from_utf8_lossy(&with_old.stderr).contains("HOST IDENTIFICATION HAS CHANGED"));
    let with_new = ssh(
        dir.path(),
        &key,
        host,
        &host.host_key_public_line().unwrap(),
        "true",
    );
    assert!(
        with_new.status.success(),
        "{}",
        String::from_utf8_lossy(&with_new.stderr)
    );
}

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

#[test]
fn drop_removes_namespaces_interfaces_processes_and_directories() {
    let net = TestNet::new(2).unwrap();
    let names: Vec<String> = net.hosts().iter().map(|h| h.name().to_owned()).collect();
    let dirs: Vec<PathBuf> = net.hosts().iter().map(|h| h.dir().to_owned()).collect();
    let bridge = net.bridge();
    net.host(0)
        .exec("nohup sleep 1000 >/dev/null 2>&1 &")
        .unwrap();
    assert!(names.iter().all(|n| netns_exists(n) && link_exists(n)) && link_exists(&bridge));
    drop(net);
    for n in &names {
        assert!(!netns_exists(n), "namespace {n} is left");
        assert!(!link_exists(n), "veth {n} is left");
    }
    assert!(!link_exists(&bridge), "bridge {bridge} is left");
    assert!(
        dirs.iter().all(|d| !d.exists()),
        "host directories are left"
    );
}

#[test]
fn drop_cleans_up_when_a_test_panics() {
    let mut names = Vec::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let net = TestNet::new(1).unwrap();
        names.push(net.host(0).name().to_owned());
        names.push(net.bridge());
        panic!("test failure inside a TestNet");
    }));
    assert!(result.is_err());
    assert!(!netns_exists(&names[0]) && !link_exists(&names[0]) && !link_exists(&names[1]));
}

/// Whether a namespace of that name exists and holds the `deadmark` interface.
fn has_dead_mark(name: &str) -> bool {
    Command::new("ip")
        .args(["-n", name, "link", "show", "deadmark"])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn a_new_net_removes_the_leftovers_of_a_killed_run() {
    let net = TestNet::new(1).unwrap();
    let name = net.host(0).name().to_owned();
    let mark = Command::new("ip")
        .args([
            "-n",
            &name,
            "link",
            "add",
            "deadmark",
            "type",
            "veth",
            "peer",
            "name",
            "deadmark2",
        ])
        .status()
        .unwrap();
    assert!(mark.success() && has_dead_mark(&name));
    let marker = net.host(0).dir().join("var-lib-servos/left-by-a-dead-run");
    std::fs::write(&marker, "x").unwrap();
    let slot = net.bridge().trim_start_matches("svtbr").to_owned();
    // Simulate a run killed before its Drop: forget the net and make its owner look dead.
    std::mem::forget(net);
    std::fs::write(format!("/run/servos-testkit/slots/{slot}"), "1 0\n").unwrap();
    let _other = TestNet::new(1).unwrap();
    assert!(!marker.exists(), "the dead run's host directory is left");
    // Another net (this one or another test process's) may reuse the slot and its names,
    // so look for the mark rather than the name.
    assert!(
        !has_dead_mark(&name),
        "namespace {name} of the dead run is left"
    );
}
