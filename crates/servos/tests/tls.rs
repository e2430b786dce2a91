//! `servos serve` terminating TLS itself: from certificate files (checked, reloaded on
//! SIGHUP) and by ACME against a real ACME server (Pebble, Let's Encrypt's test CA, from
//! Debian's `pebble` package) that validates the TLS-ALPN-01 challenge on our listener.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Env, files_contain, keygen, stderr_line};

struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        Self { issuer: rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap() }
    }

    /// A leaf for `names`: (certificate PEM, key PEM).
    fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }
}

fn client(root_pem: &str, resolve: Option<(&str, SocketAddr)>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(root_pem.as_bytes()).unwrap())
        .tls_info(true)
        .timeout(Duration::from_secs(10));
    if let Some((name, addr)) = resolve {
        b = b.resolve(name, addr);
    }
    b.build().unwrap()
}

/// The DER of the certificate the server presented.
async fn served_certificate(client: &reqwest::Client, url: &str) -> (reqwest::Response, Vec<u8>) {
    let resp = client.get(url).send().await.unwrap();
    let der = resp.extensions().get::<reqwest::tls::TlsInfo>().unwrap().peer_certificate().unwrap().to_vec();
    (resp, der)
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject as _;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
}

#[tokio::test]
async fn serve_terminates_tls_from_files_sends_hsts_and_reloads_on_sighup() {
    let env = Env::new().await;
    let key = keygen();
    let ca = Ca::new("servos test CA");
    let dir = env.dir.path();
    let (cert1, key1) = ca.leaf(&["127.0.0.1", "localhost"]);
    std::fs::write(dir.join("cert.pem"), &cert1).unwrap();
    std::fs::write(dir.join("key.pem"), &key1).unwrap();
    let cert_file = dir.join("cert.pem").display().to_string();
    let key_file = dir.join("key.pem").display().to_string();

    let server = env.serve_with(&key, &[("SERVOS_TLS_CERT_FILE", &cert_file), ("SERVOS_TLS_KEY_FILE", &key_file)]);
    let https = format!("https://127.0.0.1:{}/healthz", env.port);
    let c = client(&ca.pem(), None);
    let (resp, der) = served_certificate(&c, &https).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["strict-transport-security"], "max-age=31536000");
    assert_eq!(der, pem_to_der(&cert1));
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = reqwest::Client::new().get(env.url() + "/healthz").timeout(Duration::from_secs(5)).send().await;
    assert!(plain.is_err(), "plain HTTP must not be served: {plain:?}");
    // The log announces the https public URL.
    assert!(server.log_text().contains(&format!("https://127.0.0.1:{}", env.port)), "{}", server.log_text());

    // The CLI talks to it over HTTPS, trusting the private CA through SERVOS_CA_FILE.
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let ca_file = dir.join("ca.pem").display().to_string();
    let setup = env
        .cmd(None)
        .env("SERVOS_URL", format!("https://localhost:{}", env.port))
        .env("SERVOS_CA_FILE", &ca_file)
        .args(["setup", "--username", "admin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut setup = setup;
        setup.stdin.take().unwrap().write_all(b"correct horse battery staple\n").unwrap();
        let out = setup.wait_with_output().unwrap();
        assert!(out.status.success(), "setup over https: {}", stderr_line(&out));
    }
    let out = env.cmd(None).env("SERVOS_URL", format!("https://localhost:{}", env.port)).args(["servers", "list"]).output().unwrap();
    assert!(!out.status.success(), "without the CA the CLI must refuse the certificate");
    let err = stderr_line(&out);
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    let out = env
        .cmd(None)
        .env("SERVOS_URL", format!("https://localhost:{}", env.port))
        .env("SERVOS_CA_FILE", &ca_file)
        .args(["servers", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_line(&out));

    // A broken replacement is refused and the old certificate keeps being served.
    std::fs::write(dir.join("cert.pem"), "garbage").unwrap();
    sighup(&server.child);
    wait_for_log(&server, "reload failed");
    let (_, der) = served_certificate(&client(&ca.pem(), None), &https).await;
    assert_eq!(der, pem_to_der(&cert1));

    // A renewed certificate is served after SIGHUP, without a restart.
    let (cert2, key2) = ca.leaf(&["127.0.0.1", "localhost"]);
    std::fs::write(dir.join("cert.pem"), &cert2).unwrap();
    std::fs::write(dir.join("key.pem"), &key2).unwrap();
    sighup(&server.child);
    wait_for_log(&server, "TLS certificate reloaded");
    let (resp, der) = served_certificate(&client(&ca.pem(), None), &https).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(der, pem_to_der(&cert2));
    assert_ne!(cert1, cert2);
}

#[tokio::test]
async fn serve_refuses_bad_tls_settings_naming_the_file_or_variable() {
    let env = Env::new().await;
    let key = keygen();
    let ca = Ca::new("servos test CA");
    let dir = env.dir.path();
    let (cert, _) = ca.leaf(&["localhost"]);
    let (_, other_key) = ca.leaf(&["localhost"]);
    std::fs::write(dir.join("cert.pem"), &cert).unwrap();
    std::fs::write(dir.join("other.pem"), &other_key).unwrap();
    let cert_file = dir.join("cert.pem").display().to_string();
    let other_file = dir.join("other.pem").display().to_string();

    let run = |extra: &[(&str, &str)]| {
        let out = env.cmd(Some(&key)).envs(extra.iter().copied()).arg("serve").output().unwrap();
        assert!(!out.status.success(), "serve must refuse {extra:?}");
        stderr_line(&out)
    };
    let err = run(&[("SERVOS_TLS_CERT_FILE", &cert_file), ("SERVOS_TLS_KEY_FILE", &other_file)]);
    assert!(err.contains("does not belong") && err.contains("other.pem"), "{err}");
    let err = run(&[("SERVOS_TLS_CERT_FILE", &cert_file)]);
    assert!(err.contains("SERVOS_TLS_KEY_FILE"), "{err}");
    let err = run(&[("SERVOS_TLS_CERT_FILE", "/nonexistent/cert.pem"), ("SERVOS_TLS_KEY_FILE", &other_file)]);
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    let err = run(&[("SERVOS_ACME_DOMAINS", "bad$(name)")]);
    assert!(err.contains("SERVOS_ACME_DOMAINS"), "{err}");
    // Nothing was bound: the port is still free.
    assert!(TcpListener::bind(("127.0.0.1", env.port)).is_ok());
}

#[tokio::test]
async fn serve_gets_its_certificate_by_acme_from_a_real_acme_server_and_keeps_it_encrypted() {
    assert!(
        Path::new("/usr/bin/pebble").exists(),
        "this test needs Debian's pebble (ACME test server): run scripts/install-test-deps.sh"
    );
    let env = Env::new().await;
    let key = keygen();
    let dir = env.dir.path();
    let ca = Ca::new("pebble https CA");
    let (pebble_cert, pebble_key) = ca.leaf(&["127.0.0.1", "localhost"]);
    std::fs::write(dir.join("pebble-ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("pebble-cert.pem"), pebble_cert).unwrap();
    std::fs::write(dir.join("pebble-key.pem"), pebble_key).unwrap();
    let (acme_port, mgmt_port, dns_port, chall_mgmt) = (free_tcp(), free_tcp(), free_udp(), free_tcp());
    std::fs::write(
        dir.join("pebble.json"),
        serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
            "certificate": dir.join("pebble-cert.pem"),
            "privateKey": dir.join("pebble-key.pem"),
            "httpPort": 5002,
            "tlsPort": env.port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }})
        .to_string(),
    )
    .unwrap();
    // A DNS server that answers every A query with 127.0.0.1, so the CA reaches us.
    let _dns = Daemon::spawn(
        Command::new("pebble-challtestsrv").args([
            "-defaultIPv4",
            "127.0.0.1",
            "-defaultIPv6",
            "",
            "-dns01",
            &format!("127.0.0.1:{dns_port}"),
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            &format!("127.0.0.1:{chall_mgmt}"),
        ]),
        dir.join("challtestsrv.log"),
    );
    let _pebble = Daemon::spawn(
        Command::new("pebble")
            .args(["-config", &dir.join("pebble.json").display().to_string(), "-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0"),
        dir.join("pebble.log"),
    );
    wait_port(acme_port);

    let domain = "cp.servos.test";
    let acme_env = [
        ("SERVOS_ACME_DOMAINS", domain.to_owned()),
        ("SERVOS_ACME_EMAIL", "ops@servos.test".to_owned()),
        ("SERVOS_ACME_DIRECTORY", format!("https://127.0.0.1:{acme_port}/dir")),
        ("SERVOS_ACME_CA_FILE", dir.join("pebble-ca.pem").display().to_string()),
    ];
    let acme_env: Vec<(&str, &str)> = acme_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = env.serve_with(&key, &acme_env);
    wait_for_log(&server, "ACME certificate issued");

    // Pebble's issuing root, from its management interface.
    let root = client(&ca.pem(), None)
        .get(format!("https://127.0.0.1:{mgmt_port}/roots/0"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", env.port).parse().unwrap();
    let c = client(&root, Some((domain, addr)));
    let url = format!("https://{domain}:{}/healthz", env.port);
    let (resp, issued) = served_certificate(&c, &url).await;
    assert_eq!(resp.status(), 200);
    assert!(server.log_text().contains(&format!("https://{domain}")), "public URL follows the ACME name");

    // The key is stored encrypted: no PEM private key anywhere in the data dir.
    assert!(files_contain(&env.data_dir(), "PRIVATE KEY").is_empty());
    assert!(files_contain(&env.data_dir(), "BEGIN CERTIFICATE").is_empty());
    drop(server);

    // A restart serves the stored certificate at once and orders nothing new.
    let server = env.serve_with(&key, &acme_env);
    wait_for_log(&server, "serving the stored ACME certificate");
    let (resp, again) = served_certificate(&client(&root, Some((domain, addr))), &url).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(issued, again);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!server.log_text().contains("ordering a certificate"), "{}", server.log_text());
}

struct Daemon(Child);

impl Daemon {
    fn spawn(cmd: &mut Command, log: std::path::PathBuf) -> Self {
        let out = std::fs::File::create(log).unwrap();
        let child = cmd.stdout(out.try_clone().unwrap()).stderr(out).stdin(Stdio::null()).spawn().unwrap();
        Self(child)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_tcp() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn free_udp() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for_log(server: &common::Server, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !server.log_text().contains(needle) {
        assert!(Instant::now() < deadline, "never logged {needle:?}:\n{}", server.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sighup(child: &Child) {
    let status = Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}
