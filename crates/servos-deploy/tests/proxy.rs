//! Domains through Caddy on a real test host (its own network namespace, sshd and dockerd;
//! Caddy from the Debian package, started by ServOS under its supervisor loop since the
//! host has no systemd, configured through its admin API over an SSH direct-tcpip
//! channel). Requests are real HTTPS requests from this process to the host's :443, the
//! domain resolved to the host's address, trusting Caddy's internal CA (TLS `internal`).
//! The service is busybox `httpd` answering with its container's hostname (its id).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use servos_core::model::{ProxyKind, TlsMode};
use servos_core::{MasterKey, Secret};
use servos_deploy::{Engine, RoutingSettings};
use servos_proxy::caddy;
use servos_ssh::keys;
use servos_store::hosts::{HostKind, NewHost};
use servos_store::services::{NewService, ServiceRecord};
use servos_store::testing::TestDb;
use servos_store::{Store, StoreError};
use servos_testkit::{TestHost, TestNet};

mod common;
use common::{actor, docker, run_deploy, test_engine};

const IMAGE: &str = "svt-proxy:1";
const DOMAIN: &str = "web.servos.test";

/// Stops the supervised Caddy when the test ends, even on panic (the test kit only knows
/// the daemons it started itself).
struct CaddyGuard<'a>(&'a TestHost);

impl Drop for CaddyGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.exec(&caddy::stop_supervised_command().to_shell());
    }
}

fn answer_with_hostname() -> Vec<String> {
    ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        .map(String::from)
        .to_vec()
}

async fn caddy_server(store: &Store, host: &TestHost) -> String {
    let key = keys::generate_ed25519("servos-test").unwrap();
    host.authorize(&key.public_line).unwrap();
    let new = NewHost {
        name: "s0".into(),
        host: host.addr().to_string(),
        port: host.ssh_port(),
        user: "root".into(),
        private_key: key.private_openssh.clone(),
        passphrase: None,
        public_key: key.public_line.clone(),
        host_key_fingerprint: None,
        proxy: ProxyKind::Caddy,
    };
    store.create_host(HostKind::Server, &actor(), new).await.unwrap().id
}

fn new_service(name: &str, server: &str, domains: &[&str]) -> NewService {
    NewService {
        name: name.into(),
        image: Some(IMAGE.into()),
        registry_id: None,
        git: None,
        builder_id: None,
        servers: vec![server.to_owned()],
        command: Some(answer_with_hostname()),
        port: Some(8080),
        domains: domains.iter().map(|d| (*d).to_owned()).collect(),
        tls: TlsMode::Internal,
        healthcheck_path: None,
        healthcheck_port: None,
        webhook_secret: Secret::new("whsec-test-value".into()),
    }
}

/// An HTTPS client that sends `DOMAIN` to the host and trusts Caddy's internal root
/// (HTTP/2 by ALPN, as browsers do).
fn client(host: &TestHost) -> reqwest::Client {
    client_with(host, false)
}

fn client_with(host: &TestHost, http1_only: bool) -> reqwest::Client {
    let out = host.exec(&format!("cat {}", caddy::INTERNAL_ROOT_CERT)).unwrap();
    assert!(out.status.success(), "no internal root certificate: {}", String::from_utf8_lossy(&out.stderr));
    let root = reqwest::Certificate::from_pem(&out.stdout).unwrap();
    let mut b = reqwest::Client::builder()
        .add_root_certificate(root)
        .resolve(DOMAIN, SocketAddr::from((host.addr(), 443)))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5));
    if http1_only {
        b = b.http1_only();
    }
    b.build().unwrap()
}

/// The short id (= hostname) of the service's running container.
fn running_container_id(host: &TestHost, svc: &ServiceRecord) -> String {
    let filter = format!("label=servos.service={}", svc.id);
    let ids = docker(host, &["ps", "-q", "--filter", &filter]);
    let ids: Vec<&str> = ids.lines().collect();
    assert_eq!(ids.len(), 1, "expected one running container, got {ids:?}");
    ids[0].to_owned()
}

async fn get(client: &reqwest::Client, url: &str) -> Result<(u16, String), String> {
    let resp = client.get(url).send().await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let body = resp.text().await.map_err(|e| format!("{e:?}"))?;
    Ok((status, body.trim().to_owned()))
}

/// Waits until the internal certificate is issued and the domain answers 200.
async fn first_answer(host: &TestHost) -> (reqwest::Client, String) {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(20) {
        if host.exec(&format!("test -s {}", caddy::INTERNAL_ROOT_CERT)).unwrap().status.success() {
            let c = client(host);
            match get(&c, &format!("https://{DOMAIN}/")).await {
                Ok((200, body)) => return (c, body),
                Ok(other) => last = format!("{other:?}"),
                Err(e) => last = e,
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{DOMAIN} did not answer through Caddy: {last}");
}

struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

/// `workers` loops of back-to-back requests on one keep-alive client.
fn start_load(client: &reqwest::Client, workers: usize) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let tasks = (0..workers)
        .map(|_| {
            let (client, stop, ok, failed) = (client.clone(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                let mut errors = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match get(&client, &format!("https://{DOMAIN}/")).await {
                        Ok((200, _)) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            errors.push(format!("{other:?}"));
                        }
                    }
                }
                errors
            })
        })
        .collect();
    Load { stop, ok, failed, tasks }
}

impl Load {
    async fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut errors = Vec::new();
        for t in self.tasks {
            errors.extend(t.await.unwrap());
        }
        (self.ok.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed), errors)
    }
}

fn engine(store: &Store) -> Engine {
    let engine = test_engine(store);
    engine.set_routing(RoutingSettings { drain: Duration::from_secs(1), ..RoutingSettings::default() });
    engine
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn caddy_routes_the_domain_switches_on_redeploy_with_no_failed_http2_request_and_unroutes_removed_domains() {
    let net = TestNet::builder().hosts(1).with_docker().build().unwrap();
    let host = net.host(0);
    let _caddy = CaddyGuard(host);
    host.import_busybox_image(IMAGE).unwrap();
    let db = TestDb::new().await;
    let store = Store::open(&db.url, &MasterKey::generate().unwrap()).await.unwrap();
    let engine = engine(&store);
    let server = caddy_server(&store, host).await;
    let svc = store.create_service(&actor(), new_service("web", &server, &[DOMAIN])).await.unwrap();

    // First deploy: ServOS starts Caddy (no systemd here: its supervisor) and routes.
    let first = run_deploy(&engine, &svc, None).await;
    assert_eq!(first.status, "succeeded", "{:?}", first.error);
    let (https, body) = first_answer(host).await;
    let v1 = running_container_id(host, &svc);
    assert_eq!(body, v1, "the domain must reach the deployed container");

    // HTTP is redirected to HTTPS.
    let http = reqwest::Client::builder()
        .resolve(DOMAIN, SocketAddr::from((host.addr(), 80)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = http.get(format!("http://{DOMAIN}/")).send().await.unwrap();
    assert!(resp.status().is_redirection(), "{}", resp.status());
    assert_eq!(resp.headers()["location"], format!("https://{DOMAIN}/"));

    // Redeploy under a steady stream of requests: over HTTP/2 none fails, and it ends on
    // the new container. HTTP/1.1 keep-alive clients run alongside: Caddy closes idle
    // keep-alive connections when its config changes, so such a client can lose a request
    // it wrote onto a connection being closed; no request may ever get an error status.
    assert_eq!(https.get(format!("https://{DOMAIN}/")).send().await.unwrap().version(), reqwest::Version::HTTP_2);
    let load = start_load(&https, 2);
    let load1 = start_load(&client_with(host, true), 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = run_deploy(&engine, &svc, None).await;
    assert_eq!(second.status, "succeeded", "{:?}", second.error);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, failed, errors) = load.finish().await;
    let (ok1, failed1, errors1) = load1.finish().await;
    eprintln!("during the redeploy: HTTP/2 {ok} answered 200, {failed} failed; HTTP/1.1 {ok1} answered 200, {failed1} failed {errors1:?}");
    assert_eq!(failed, 0, "{failed} of {} HTTP/2 requests failed during the redeploy: {errors:?}", ok + failed);
    assert!(ok > 50 && ok1 > 50, "only {ok} + {ok1} requests were made during the redeploy");
    for e in &errors1 {
        assert!(e.starts_with("Err(") && (e.contains("IncompleteMessage") || e.contains("connection closed")), "HTTP/1.1 failure other than a closed keep-alive connection: {e}");
    }
    let v2 = running_container_id(host, &svc);
    assert_ne!(v1, v2);
    assert_eq!(get(&https, &format!("https://{DOMAIN}/")).await.unwrap(), (200, v2.clone()));

    // The proxy's own view: the route, its domain and the new container's address.
    let status = engine.proxy_status("s0").await.unwrap();
    assert!(status.running, "{status:?}");
    assert_eq!(status.routes.len(), 1, "{status:?}");
    assert_eq!(status.routes[0].domains, [DOMAIN]);
    let ip = docker(host, &["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", &v2]);
    assert_eq!(status.routes[0].upstreams, [format!("{ip}:8080")]);

    // A second service cannot claim the domain.
    let e = store.create_service(&actor(), new_service("other", &server, &[DOMAIN])).await.unwrap_err();
    assert!(matches!(e, StoreError::InUse { .. }), "{e:?}");

    // The domain removed: the route goes, the domain no longer reaches the container.
    store.remove_domains(&actor(), "web", &[DOMAIN.to_owned()]).await.unwrap();
    let done = engine.sync_routes("web").await.unwrap();
    assert_eq!(done, ["server s0: route of web removed"]);
    let fresh = client(host);
    match get(&fresh, &format!("https://{DOMAIN}/")).await {
        Ok((_, body)) => assert_ne!(body, v2, "the removed domain still reaches the container"),
        Err(_) => {} // no certificate for it any more: the TLS handshake fails
    }
    assert!(engine.proxy_status("s0").await.unwrap().routes.is_empty());
}
