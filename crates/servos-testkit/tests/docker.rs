//! Test hosts with their own dockerd: containers run, stay per host, and the test
//! machine's firewall is left alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use servos_testkit::TestNet;

fn forward_policy() -> String {
    let out = Command::new("iptables")
        .args(["-S", "FORWARD"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn each_host_runs_its_own_dockerd_serving_published_ports() {
    let before = forward_policy();
    let net = TestNet::builder().hosts(2).with_docker().build().unwrap();
    let (a, b) = (net.host(0), net.host(1));
    a.import_busybox_image("svt-busybox:1").unwrap();
    let run = a
        .docker_cli(&[
            "run",
            "-d",
            "--name",
            "web",
            "-p",
            "8080:80",
            "svt-busybox:1",
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/etc",
        ])
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let mut response = String::new();
    for _ in 0..50 {
        if let Ok(mut s) =
            TcpStream::connect_timeout(&(a.addr(), 8080).into(), Duration::from_secs(1))
        {
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            s.read_to_string(&mut response).unwrap();
            if !response.is_empty() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(response.starts_with("HTTP/1."), "{response:?}");
    let ps_b = b
        .docker_cli(&["ps", "-a", "--format", "{{.Names}}"])
        .unwrap();
    assert!(ps_b.status.success());
    assert!(
        !String::from_utf8_lossy(&ps_b.stdout).contains("web"),
        "host b sees host a's container"
    );
    let over_ssh_socket = a.exec("docker ps --format '{{.Names}}'").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&over_ssh_socket.stdout).trim(),
        "web"
    );
    assert_eq!(
        forward_policy(),
        before,
        "the test machine's FORWARD policy changed"
    );
}

#[test]
fn docker_cli_on_a_host_without_docker_says_how_to_get_one() {
    let net = TestNet::new(1).unwrap();
    let err = net.host(0).docker_cli(&["ps"]).unwrap_err();
    assert!(err.to_string().contains(".with_docker()"), "{err}");
}
