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
use servos_proxy::{caddy, upstream};
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
        let _ = self.0.exec(&upstream::stop_watcher_command().to_shell());
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

/// Caddy's whole running configuration, read on the host (its admin API is on loopback).
fn caddy_config(host: &TestHost) -> String {
    let out = host.exec("curl -sS --fail http://127.0.0.1:2019/config/").unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The IPv4 address of a container on its network.
fn container_ip(host: &TestHost, container: &str) -> String {
    docker(host, &["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container])
}

/// The service network's gateway: the stable address Caddy dials.
fn gateway(host: &TestHost, service: &str) -> String {
    docker(host, &["network", "inspect", "-f", "{{range .IPAM.Config}}{{.Gateway}}{{end}}", &format!("servos-{service}")])
}

/// Creates the service `web` on a Caddy server and deploys it once; returns the HTTPS
/// client once the domain answers.
async fn routed_service(store: &Store, engine: &Engine, host: &TestHost) -> (String, ServiceRecord, reqwest::Client) {
    let server = caddy_server(store, host).await;
    let svc = store.create_service(&actor(), new_service("web", &server, &[DOMAIN])).await.unwrap();
    // First deploy: ServOS starts Caddy (no systemd here: its supervisor) and routes.
    let first = run_deploy(engine, &svc, None).await;
    assert_eq!(first.status, "succeeded", "{:?}", first.error);
    let (https, body) = first_answer(host).await;
    assert_eq!(body, running_container_id(host, &svc), "the domain must reach the deployed container");
    (server, svc, https)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn caddy_routes_the_domain_switches_on_redeploy_with_no_failed_http1_or_http2_request_and_unroutes_removed_domains() {
    let net = TestNet::builder().hosts(1).with_docker().build().unwrap();
    let host = net.host(0);
    let _caddy = CaddyGuard(host);
    host.import_busybox_image(IMAGE).unwrap();
    let db = TestDb::new().await;
    let store = Store::open(&db.url, &MasterKey::generate().unwrap()).await.unwrap();
    let engine = engine(&store);
    let (server, svc, https) = routed_service(&store, &engine, host).await;
    let v1 = running_container_id(host, &svc);

    // HTTP is redirected to HTTPS.
    let http = reqwest::Client::builder()
        .resolve(DOMAIN, SocketAddr::from((host.addr(), 80)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = http.get(format!("http://{DOMAIN}/")).send().await.unwrap();
    assert!(resp.status().is_redirection(), "{}", resp.status());
    assert_eq!(resp.headers()["location"], format!("https://{DOMAIN}/"));

    // Redeploy under a steady stream of requests from HTTP/2 clients and HTTP/1.1
    // keep-alive clients: none fails, it ends on the new container, and Caddy's
    // configuration is not touched (a change would be a reload that closes idle
    // keep-alive connections): the deploy re-points the stable address's DNAT rule.
    assert_eq!(https.get(format!("https://{DOMAIN}/")).send().await.unwrap().version(), reqwest::Version::HTTP_2);
    let config_before = caddy_config(host);
    let load = start_load(&https, 2);
    let load1 = start_load(&client_with(host, true), 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = run_deploy(&engine, &svc, None).await;
    assert_eq!(second.status, "succeeded", "{:?}", second.error);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, failed, errors) = load.finish().await;
    let (ok1, failed1, errors1) = load1.finish().await;
    eprintln!("during the redeploy: HTTP/2 {ok} answered 200, {failed} failed; HTTP/1.1 keep-alive {ok1} answered 200, {failed1} failed");
    assert_eq!(failed, 0, "{failed} of {} HTTP/2 requests failed during the redeploy: {errors:?}", ok + failed);
    assert_eq!(failed1, 0, "{failed1} of {} HTTP/1.1 keep-alive requests failed during the redeploy: {errors1:?}", ok1 + failed1);
    assert!(ok > 50 && ok1 > 50, "only {ok} + {ok1} requests were made during the redeploy");
    assert_eq!(caddy_config(host), config_before, "the redeploy changed Caddy's configuration");
    let v2 = running_container_id(host, &svc);
    assert_ne!(v1, v2);
    assert_eq!(get(&https, &format!("https://{DOMAIN}/")).await.unwrap(), (200, v2.clone()));

    // The proxy's own view: the route, its domain, the stable address it dials and the
    // new container that address leads to.
    let status = engine.proxy_status("s0").await.unwrap();
    assert!(status.running, "{status:?}");
    assert_eq!(status.routes.len(), 1, "{status:?}");
    assert_eq!(status.routes[0].domains, [DOMAIN]);
    assert_eq!(status.routes[0].upstreams, [format!("{}:8080", gateway(host, "web"))]);
    assert_eq!(status.routes[0].targets, [format!("{}:8080", container_ip(host, &v2))]);

    // Connections to the stable address leave conntrack's TIME_WAIT after 1 s instead of
    // 120 s, so none is left for Docker's purge to misfire on at the next retire (see
    // `servos_proxy::upstream`): the entry of a request just answered says so.
    let gw = gateway(host, "web");
    assert_eq!(get(&https, &format!("https://{DOMAIN}/")).await.unwrap().0, 200);
    let table = host.exec("cat /proc/net/nf_conntrack").unwrap();
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    let lingering: Vec<&str> = table
        .lines()
        .filter(|l| {
            let orig_dst = l.split_whitespace().find_map(|f| f.strip_prefix("dst="));
            orig_dst == Some(gw.as_str()) && l.contains(" TIME_WAIT ")
        })
        .collect();
    assert!(!lingering.is_empty(), "no TIME_WAIT entry for {gw} in {table}");
    for l in &lingering {
        let secs: u64 = l.split_whitespace().nth(4).unwrap().parse().unwrap();
        assert!(secs <= 1, "a stable-address entry lingers {secs} s in TIME_WAIT: {l}");
    }

    // A second service cannot claim the domain.
    let e = store.create_service(&actor(), new_service("other", &server, &[DOMAIN])).await.unwrap_err();
    assert!(matches!(e, StoreError::InUse { .. }), "{e:?}");

    // The domain removed: the route goes, the domain no longer reaches the container.
    store.remove_domains(&actor(), "web", &[DOMAIN.to_owned()]).await.unwrap();
    let done = engine.sync_routes("web").await.unwrap();
    assert_eq!(done, ["server s0: route of web removed"]);
    let fresh = client(host);
    // Either no certificate for it any more (the TLS handshake fails) or another answer.
    if let Ok((_, body)) = get(&fresh, &format!("https://{DOMAIN}/")).await {
        assert_ne!(body, v2, "the removed domain still reaches the container");
    }
    assert!(engine.proxy_status("s0").await.unwrap().routes.is_empty());
    let nft = host.exec("nft list tables").unwrap();
    assert!(!String::from_utf8_lossy(&nft.stdout).contains("servos-web"), "the DNAT rule outlived the route");
    let set = host.exec("nft list set ip servos-conntrack stable").unwrap();
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    assert!(!String::from_utf8_lossy(&set.stdout).contains(&gw), "the stable address outlived the route in the conntrack set");
}

/// The `/proc/<pid>/status` of the Caddy that ServOS's supervisor runs on the host.
fn caddy_process_status(host: &TestHost) -> String {
    let script = format!("cat /proc/$(pgrep -P \"$(cat {})\" -x caddy)/status", caddy::SUPERVISOR_PID);
    let out = host.exec(&script).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status_field<'a>(status: &'a str, field: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|rest| rest.strip_prefix(':')))
        .unwrap_or_else(|| panic!("no {field} in {status}"))
        .trim()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn caddy_runs_unprivileged_and_its_route_follows_the_container_through_stop_start_and_restart() {
    let net = TestNet::builder().hosts(1).with_docker().build().unwrap();
    let host = net.host(0);
    let _caddy = CaddyGuard(host);
    host.import_busybox_image(IMAGE).unwrap();
    let db = TestDb::new().await;
    let store = Store::open(&db.url, &MasterKey::generate().unwrap()).await.unwrap();
    let engine = engine(&store);
    let (_server, svc, https) = routed_service(&store, &engine, host).await;

    // Caddy (started by the first deploy) runs as the `caddy` user with CAP_NET_BIND_SERVICE only.
    let status = caddy_process_status(host);
    let uid = String::from_utf8_lossy(&host.exec("id -u caddy").unwrap().stdout).trim().to_owned();
    let gid = String::from_utf8_lossy(&host.exec("id -g caddy").unwrap().stdout).trim().to_owned();
    assert_ne!(uid, "0");
    assert_eq!(status_field(&status, "Uid"), format!("{uid}\t{uid}\t{uid}\t{uid}"));
    assert_eq!(status_field(&status, "Gid"), format!("{gid}\t{gid}\t{gid}\t{gid}"));
    assert_eq!(status_field(&status, "Groups"), "");
    // CAP_NET_BIND_SERVICE is capability 10: 0x400, and nothing else, even after execve.
    for set in ["CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(&status, set), "0000000000000400", "{set} in {status}");
    }
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    // It owns its own state only.
    let modes = host.exec(&format!("stat -c '%a %U' {dir}/data {dir}/config", dir = caddy::BASE_DIR)).unwrap();
    assert_eq!(String::from_utf8_lossy(&modes.stdout), "700 caddy\n700 caddy\n");

    let container = running_container_id(host, &svc);
    let first_ip = container_ip(host, &container);

    // Stopped, another container takes the next address on the service network, started
    // again: Docker gives the container a new IP, and the route follows it.
    engine.stop(&actor(), &svc.id).await.unwrap();
    let squatter = docker(host, &["run", "-d", "--network", "servos-web", IMAGE, "sleep", "600"]);
    engine.start(&actor(), &svc.id).await.unwrap();
    let ip = container_ip(host, &container);
    assert_ne!(ip, first_ip, "the test needs the restarted container on a new IP");
    let target = |s: servos_proxy::ProxyStatus| s.routes[0].targets.clone();
    assert_eq!(target(engine.proxy_status("s0").await.unwrap()), [format!("{ip}:8080")]);
    assert_eq!(get(&https, &format!("https://{DOMAIN}/")).await.unwrap(), (200, container.clone()));

    // Restarted (the squatter gone, so the freed addresses are reused in turn).
    docker(host, &["rm", "-f", &squatter]);
    engine.restart(&actor(), &svc.id).await.unwrap();
    let ip = container_ip(host, &container);
    assert_eq!(target(engine.proxy_status("s0").await.unwrap()), [format!("{ip}:8080")]);
    assert_eq!(get(&https, &format!("https://{DOMAIN}/")).await.unwrap(), (200, container.clone()));
    let events = store.audit_list(10, None).await.unwrap();
    let restarted = events.iter().find(|e| e.action == "service.restarted").expect("no service.restarted event");
    assert!(restarted.detail.contains(&format!("{ip}:8080")), "{}", restarted.detail);

    // Restarted outside ServOS (as Docker's restart policy does after a crash), on a new
    // IP: the watcher on the server re-points the stable address.
    docker(host, &["stop", "-t", "1", &container]);
    let squatter = docker(host, &["run", "-d", "--network", "servos-web", IMAGE, "sleep", "600"]);
    docker(host, &["start", &container]);
    let moved = container_ip(host, &container);
    assert_ne!(moved, ip, "the test needs the restarted container on a new IP");
    wait_for_target(&engine, &format!("{moved}:8080")).await;
    assert_eq!(get(&https, &format!("https://{DOMAIN}/")).await.unwrap(), (200, container.clone()));

    // A reboot empties the kernel's rules and restarts the containers: the watcher, started
    // at boot, puts the rule back from its state file.
    docker(host, &["rm", "-f", &squatter]);
    host.exec(&upstream::stop_watcher_command().to_shell()).unwrap();
    assert!(host.exec("nft delete table ip servos-web").unwrap().status.success());
    docker(host, &["restart", "-t", "1", &container]);
    let after_boot = container_ip(host, &container);
    assert!(host.exec(&upstream::ensure_watcher_command().to_shell()).unwrap().status.success());
    wait_for_target(&engine, &format!("{after_boot}:8080")).await;
    assert_eq!(get(&https, &format!("https://{DOMAIN}/")).await.unwrap(), (200, container.clone()));
}

/// Waits (10 s at most) until the route's stable address leads to `want`.
async fn wait_for_target(engine: &Engine, want: &str) {
    let start = Instant::now();
    loop {
        let targets = engine.proxy_status("s0").await.unwrap().routes[0].targets.clone();
        if targets == [want] {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the stable address leads to {targets:?}, not {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
