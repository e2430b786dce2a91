//! `proxy` (issue 7): the cost of Caddy in front of a service, and requests lost while
//! ServOS redeploys it, on one real test host (its own netns, sshd and dockerd; Caddy from
//! the Debian package, started and configured by the ServOS engine exactly as a deploy
//! does; TLS from Caddy's internal CA).
//!
//! (a) Same run, same service image, same load (N keep-alive clients for T seconds each):
//!     direct to a container of the service (a twin published on host port 18080),
//!     through Caddy over HTTP (a `tls off` route) and through Caddy over HTTPS.
//!     Requests per second and p50/p99 latency, ratios against direct.
//! (b) 10 consecutive ServOS redeploys of the HTTPS service under load, half the clients on
//!     HTTP/2 and half on HTTP/1.1 keep-alive: failed requests per protocol (goal 0)
//!     with the switch, drain and retire of every deploy.
//! (c) The cost of the route's upstream keep-alive being off (one TCP connection from
//!     Caddy to the upstream per request, so a switch leaves no pooled connection on the
//!     old container). busybox `httpd` closes every connection itself, so the service
//!     cannot show it: two extra routes (added here through the admin API, not by ServOS)
//!     proxy to `caddy respond`, a keep-alive upstream on the host's loopback, with
//!     keep-alive on and off.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use servos_core::model::{ProxyKind, TlsMode};
use servos_core::{MasterKey, Secret};
use servos_deploy::{DeploySettings, Engine, RoutingSettings, Runner, Timeouts};
use servos_proxy::caddy;
use servos_store::hosts::{HostKind, NewHost};
use servos_store::services::{NewService, ServiceRecord};
use servos_store::{Actor, Store};
use servos_testkit::{TestHost, TestNet};

use crate::report::{self, Goal, Table};
use crate::stats::{Latencies, ms};

const IMAGE: &str = "servos-bench/busybox:proxy";
const HTTPS_DOMAIN: &str = "bench.servos.test";
const HTTP_DOMAIN: &str = "plain.servos.test";
const DIRECT_PORT: u16 = 18080;
/// `caddy respond` (a keep-alive upstream) on the host's loopback, for part (c).
const KEEPALIVE_UPSTREAM_PORT: u16 = 18090;
const KEEPALIVE_ON_DOMAIN: &str = "ka-on.servos.test";
const KEEPALIVE_OFF_DOMAIN: &str = "ka-off.servos.test";
/// Answers with the container's hostname (its short id), exits on SIGTERM.
const COMMAND: [&str; 3] = [
    "sh",
    "-c",
    "mkdir -p /www && hostname > /www/index.html && trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait",
];
/// Failed requests allowed during the redeploys.
const FAILED_GOAL: Goal = Goal::AtMost(0.0);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Concurrent keep-alive clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds of load per method in part (a).
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Consecutive redeploys under load in part (b).
    #[arg(long, default_value_t = 10)]
    redeploys: usize,
    /// Drain time of each switch (old container kept this long after the route moved).
    #[arg(long, default_value_t = 1)]
    drain_secs: u64,
    #[arg(long)]
    keep_root_bashrc: bool,
}

fn actor() -> Actor {
    Actor::user("bench", "127.0.0.1")
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    ensure!(args.clients > 0 && args.seconds > 0, "counts must be at least 1");
    let started = Instant::now();
    let net = TestNet::builder()
        .hosts(1)
        .with_docker()
        .build()
        .context("build the test host with dockerd (run scripts/install-test-deps.sh as root)")?;
    let host = net.host(0);
    host.import_busybox_image(IMAGE)?;
    if !args.keep_root_bashrc {
        crate::ssh::hide_root_bashrc(host)?;
    }
    println!(
        "proxy: test host with dockerd ready in {:.2} s; load average {}",
        started.elapsed().as_secs_f64(),
        report::load_average()
    );
    let result = crate::runtime()?.block_on(bench(args, host));
    // Caddy and the stable-address watcher run under supervisor loops inside the host:
    // stop them with the host.
    let _ = host.exec(&caddy::stop_supervised_command().to_shell());
    let _ = host.exec(&servos_proxy::upstream::stop_watcher_command().to_shell());
    drop(net);
    result
}

async fn bench(args: &Args, host: &TestHost) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}/servos.db", dir.path().display());
    let store = Store::open(&url, &MasterKey::generate()?).await?;
    let timeouts = Timeouts {
        connect: Duration::from_secs(5),
        command: Duration::from_secs(60),
        keepalive_interval: Duration::from_secs(5),
        keepalive_max: 3,
    };
    let settings = DeploySettings {
        health_timeout: Duration::from_secs(20),
        min_uptime: Duration::from_secs(1),
        poll_interval: Duration::from_millis(200),
    };
    let engine = Engine::with_settings(store.clone(), timeouts, settings);
    engine.set_routing(RoutingSettings {
        drain: Duration::from_secs(args.drain_secs),
        ..RoutingSettings::default()
    });
    let key = servos_ssh::keys::generate_ed25519("servos-bench")?;
    host.authorize(&key.public_line)?;
    let server = store
        .create_host(
            HostKind::Server,
            &actor(),
            NewHost {
                name: "bench".into(),
                host: host.addr().to_string(),
                port: host.ssh_port(),
                user: "root".into(),
                private_key: key.private_openssh.clone(),
                passphrase: None,
                public_key: key.public_line.clone(),
                host_key_fingerprint: None,
                proxy: ProxyKind::Caddy,
            },
        )
        .await?
        .id;
    let https_svc = service(&store, "bench", &server, HTTPS_DOMAIN, TlsMode::Internal).await?;
    let http_svc = service(&store, "plain", &server, HTTP_DOMAIN, TlsMode::Off).await?;
    for svc in [&https_svc, &http_svc] {
        deploy(&engine, svc).await?;
    }
    // The baseline: the same image and command, published on the host.
    docker(host, &["rm", "-f", "bench-direct"]).ok();
    let mut run = vec!["run", "-d", "--name", "bench-direct", "-p"];
    let publish = format!("{DIRECT_PORT}:8080");
    run.push(&publish);
    run.push(IMAGE);
    run.extend(COMMAND);
    docker(host, &run)?;

    let root = wait_for_root_cert(host).await?;
    let addr = host.addr();
    let https_client = |http1: bool| -> anyhow::Result<reqwest::Client> {
        let mut b = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&root)?)
            .resolve(HTTPS_DOMAIN, SocketAddr::from((addr, 443)))
            .timeout(Duration::from_secs(10));
        if http1 {
            b = b.http1_only();
        }
        Ok(b.build()?)
    };
    // HTTP/2 is what Caddy negotiates (ALPN) with browsers; HTTP/1.1 keep-alive for others.
    let https = https_client(false)?;
    let https1 = https_client(true)?;
    let plain = reqwest::Client::builder()
        .resolve(HTTP_DOMAIN, SocketAddr::from((addr, 80)))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()?;
    let https_url = format!("https://{HTTPS_DOMAIN}/");
    let http_url = format!("http://{HTTP_DOMAIN}/");
    let direct_url = format!("http://{addr}:{DIRECT_PORT}/");
    wait_ok(&https, &https_url).await?;
    wait_ok(&plain, &http_url).await?;
    wait_ok(&plain, &direct_url).await?;

    report::heading(&format!(
        "(a) {} keep-alive clients, {} s per method, same host, same image",
        args.clients, args.seconds
    ));
    let duration = Duration::from_secs(args.seconds);
    let direct = load(&plain, &direct_url, args.clients, duration, None).await;
    let via_http = load(&plain, &http_url, args.clients, duration, None).await;
    let via_https1 = load(&https1, &https_url, args.clients, duration, None).await;
    let via_https = load(&https, &https_url, args.clients, duration, None).await;
    let mut t = Table::new(["method", "requests", "failed", "req/s", "p50", "p99", "req/s vs direct"]);
    for (name, r) in [
        ("direct to the container (published port)", &direct),
        ("through Caddy, HTTP (tls off)", &via_http),
        ("through Caddy, HTTPS HTTP/1.1 (internal CA)", &via_https1),
        ("through Caddy, HTTPS HTTP/2 (internal CA)", &via_https),
    ] {
        t.row([
            name.to_owned(),
            r.latencies.count().to_string(),
            r.failed.to_string(),
            format!("{:.0}", r.rps()),
            ms(r.latencies.p50()),
            ms(r.latencies.p99()),
            format!("{:.2}×", r.rps() / direct.rps().max(f64::MIN_POSITIVE)),
        ]);
    }
    t.print();
    report::summary(format!(
        "proxy: direct {:.0} req/s p99 {}; Caddy HTTP {:.0} req/s p99 {} ({:.2}× direct); Caddy HTTPS/1.1 {:.0} req/s p99 {} ({:.2}× direct); Caddy HTTPS/2 {:.0} req/s p99 {} ({:.2}× direct)",
        direct.rps(),
        ms(direct.latencies.p99()),
        via_http.rps(),
        ms(via_http.latencies.p99()),
        via_http.rps() / direct.rps().max(f64::MIN_POSITIVE),
        via_https1.rps(),
        ms(via_https1.latencies.p99()),
        via_https1.rps() / direct.rps().max(f64::MIN_POSITIVE),
        via_https.rps(),
        ms(via_https.latencies.p99()),
        via_https.rps() / direct.rps().max(f64::MIN_POSITIVE),
    ));

    upstream_keepalive_cost(args, host).await?;

    report::heading(&format!(
        "(b) {} consecutive ServOS redeploys of {HTTPS_DOMAIN} under load ({} clients, HTTPS through Caddy)",
        args.redeploys, args.clients
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let half = args.clients.div_ceil(2);
    let base = Instant::now();
    let spawn_load = |client: &reqwest::Client| {
        let (client, url, stop) = (client.clone(), https_url.clone(), stop.clone());
        tokio::spawn(async move { load_since(&client, &url, half, Duration::from_secs(3600), Some(stop), base).await })
    };
    let under_load2 = spawn_load(&https);
    let under_load1 = spawn_load(&https1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut deploy_times = Vec::new();
    let mut before = answer(&https, &https_url).await.unwrap_or_default();
    let mut switched = 0;
    let mut windows = Vec::new();
    for _ in 0..args.redeploys {
        let t0 = Instant::now();
        deploy(&engine, &https_svc).await?;
        deploy_times.push(t0.elapsed().as_secs_f64());
        windows.push(format!("{:.2}–{:.2} s", t0.duration_since(base).as_secs_f64(), base.elapsed().as_secs_f64()));
        let now = answer(&https, &https_url).await.unwrap_or_default();
        if now != before {
            switched += 1;
        }
        before = now;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let r2 = under_load2.await?;
    let r1 = under_load1.await?;
    let mut t = Table::new(["clients", "redeploys", "answer changed", "requests", "failed", "req/s", "p99", "deploy time (mean)"]);
    for (name, r) in [(format!("{half} HTTP/2"), &r2), (format!("{half} HTTP/1.1 keep-alive"), &r1)] {
        t.row([
            name,
            args.redeploys.to_string(),
            format!("{switched}/{}", args.redeploys),
            (r.latencies.count() + r.failed).to_string(),
            r.failed.to_string(),
            format!("{:.0}", r.rps()),
            ms(r.latencies.p99()),
            format!("{:.2} s", deploy_times.iter().sum::<f64>() / deploy_times.len().max(1) as f64),
        ]);
    }
    t.print();
    for e in r1.errors.iter().chain(&r2.errors).take(6) {
        println!("  failure: {e}");
    }
    if r1.failed + r2.failed > 0 {
        println!("  redeploys (queued → finished, after the {} s drain and the retire): {}", args.drain_secs, windows.join(", "));
    }
    for (proto, r) in [("HTTP/2", &r2), ("HTTP/1.1 keep-alive", &r1)] {
        report::summary(format!(
            "proxy: {proto}: {} failed of {} requests during {} redeploys through Caddy ({}); the served container changed {switched}/{} times",
            r.failed,
            r.latencies.count() + r.failed,
            args.redeploys,
            FAILED_GOAL.verdict(r.failed as f64, ""),
            args.redeploys
        ));
    }
    if switched != args.redeploys {
        bail!("the route did not follow every redeploy ({switched}/{})", args.redeploys);
    }
    Ok(())
}

/// Part (c): Caddy to a keep-alive upstream with the route's upstream keep-alive on and off.
async fn upstream_keepalive_cost(args: &Args, host: &TestHost) -> anyhow::Result<()> {
    let started = host.exec(&format!(
        "mkdir -p /tmp/servos-bench-respond && XDG_DATA_HOME=/tmp/servos-bench-respond XDG_CONFIG_HOME=/tmp/servos-bench-respond \
         setsid caddy respond --listen 127.0.0.1:{KEEPALIVE_UPSTREAM_PORT} --body ok >/dev/null 2>&1 </dev/null & echo $!"
    ))?;
    let pid = String::from_utf8_lossy(&started.stdout).trim().to_owned();
    ensure!(started.status.success() && !pid.is_empty(), "caddy respond did not start");
    let result = async {
        for (domain, keep_alive) in [(KEEPALIVE_ON_DOMAIN, true), (KEEPALIVE_OFF_DOMAIN, false)] {
            let route = serde_json::json!({
                "match": [{ "host": [domain] }],
                "handle": [{
                    "handler": "reverse_proxy",
                    "upstreams": [{ "dial": format!("127.0.0.1:{KEEPALIVE_UPSTREAM_PORT}") }],
                    "transport": { "protocol": "http", "keep_alive": { "enabled": keep_alive } },
                }],
                "terminal": true,
            });
            let out = host.exec(&format!(
                "curl -sS --fail -X POST -H 'Content-Type: application/json' -d {} http://127.0.0.1:{}/config/apps/http/servers/{}/routes",
                servos_ssh::shell_quote(&route.to_string()),
                caddy::ADMIN_PORT,
                caddy::HTTP_SERVER
            ))?;
            ensure!(out.status.success(), "adding the {domain} route: {}", String::from_utf8_lossy(&out.stderr));
        }
        let addr = host.addr();
        let client = reqwest::Client::builder()
            .resolve(KEEPALIVE_ON_DOMAIN, SocketAddr::from((addr, 80)))
            .resolve(KEEPALIVE_OFF_DOMAIN, SocketAddr::from((addr, 80)))
            .timeout(Duration::from_secs(10))
            .build()?;
        let on_url = format!("http://{KEEPALIVE_ON_DOMAIN}/");
        let off_url = format!("http://{KEEPALIVE_OFF_DOMAIN}/");
        wait_ok(&client, &on_url).await?;
        wait_ok(&client, &off_url).await?;
        report::heading(&format!(
            "(c) upstream keep-alive: Caddy HTTP to `caddy respond` on loopback, {} clients, {} s each",
            args.clients, args.seconds
        ));
        let duration = Duration::from_secs(args.seconds);
        let on = load(&client, &on_url, args.clients, duration, None).await;
        let off = load(&client, &off_url, args.clients, duration, None).await;
        let mut t = Table::new(["upstream keep-alive", "requests", "failed", "req/s", "p50", "p99", "req/s vs on"]);
        for (name, r) in [("on (Caddy's default)", &on), ("off (ServOS routes)", &off)] {
            t.row([
                name.to_owned(),
                r.latencies.count().to_string(),
                r.failed.to_string(),
                format!("{:.0}", r.rps()),
                ms(r.latencies.p50()),
                ms(r.latencies.p99()),
                format!("{:.2}×", r.rps() / on.rps().max(f64::MIN_POSITIVE)),
            ]);
        }
        t.print();
        report::summary(format!(
            "proxy: upstream keep-alive off costs {:.0} → {:.0} req/s ({:.2}×), p99 {} → {} (Caddy to a keep-alive upstream on loopback)",
            on.rps(),
            off.rps(),
            off.rps() / on.rps().max(f64::MIN_POSITIVE),
            ms(on.latencies.p99()),
            ms(off.latencies.p99()),
        ));
        Ok(())
    }
    .await;
    let _ = host.exec(&format!("kill {pid}"));
    result
}

async fn service(store: &Store, name: &str, server: &str, domain: &str, tls: TlsMode) -> anyhow::Result<ServiceRecord> {
    Ok(store
        .create_service(
            &actor(),
            NewService {
                name: name.into(),
                image: Some(IMAGE.into()),
                registry_id: None,
                git: None,
                builder_id: None,
                servers: vec![server.to_owned()],
                command: Some(COMMAND.map(String::from).to_vec()),
                port: Some(8080),
                domains: vec![domain.to_owned()],
                tls,
                healthcheck_path: None,
                healthcheck_port: None,
                webhook_secret: Secret::new("whsec-bench".into()),
            },
        )
        .await?)
}

async fn deploy(engine: &Engine, svc: &ServiceRecord) -> anyhow::Result<()> {
    engine.queue_deployment(&actor(), &svc.id, None).await?;
    let done = Runner::new(engine.clone())
        .run_next()
        .await?
        .context("no queued deployment")?;
    if done.status != "succeeded" {
        bail!("deploy of {} failed: {}", svc.name, done.error.unwrap_or_default());
    }
    Ok(())
}

fn docker(host: &TestHost, args: &[&str]) -> anyhow::Result<String> {
    let out = host.docker_cli(args)?;
    if !out.status.success() {
        bail!("docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

async fn wait_for_root_cert(host: &TestHost) -> anyhow::Result<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let out = host.exec(&format!("cat {}", caddy::INTERNAL_ROOT_CERT))?;
        if out.status.success() && !out.stdout.is_empty() {
            return Ok(out.stdout);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("Caddy's internal CA did not appear at {}", caddy::INTERNAL_ROOT_CERT)
}

async fn answer(client: &reqwest::Client, url: &str) -> Option<String> {
    let r = client.get(url).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.text().await.ok().map(|t| t.trim().to_owned())
}

async fn wait_ok(client: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if answer(client, url).await.is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("{url} did not answer 200 within 20 s")
}

struct LoadResult {
    latencies: Latencies,
    failed: usize,
    elapsed: Duration,
    errors: Vec<String>,
}

impl LoadResult {
    fn rps(&self) -> f64 {
        self.latencies.count() as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// `clients` loops of back-to-back GETs until `duration` passes or `stop` is set.
async fn load(client: &reqwest::Client, url: &str, clients: usize, duration: Duration, stop: Option<Arc<AtomicBool>>) -> LoadResult {
    load_since(client, url, clients, duration, stop, Instant::now()).await
}

/// [`load`], failures labelled with the second (since `base`) their request started.
async fn load_since(
    client: &reqwest::Client,
    url: &str,
    clients: usize,
    duration: Duration,
    stop: Option<Arc<AtomicBool>>,
    base: Instant,
) -> LoadResult {
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, url, stop) = (client.clone(), url.to_owned(), stop.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = Vec::new();
                while Instant::now() < deadline && !stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
                    let t0 = Instant::now();
                    let result = match client.get(&url).send().await {
                        Ok(r) if r.status().is_success() => r.bytes().await.map(drop).map_err(|e| format!("{e:?}")),
                        Ok(r) => Err(format!("status {}", r.status())),
                        Err(e) => Err(format!("{e:?}")),
                    };
                    match result {
                        Ok(()) => lat.push(t0.elapsed()),
                        Err(e) => errors.push(format!("request started at {:.2} s: {e}", t0.duration_since(base).as_secs_f64())),
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = Vec::new();
    for t in tasks {
        if let Ok((lat, errs)) = t.await {
            all.extend(lat);
            errors.extend(errs);
        }
    }
    LoadResult { latencies: Latencies::new(all), failed: errors.len(), elapsed: start.elapsed(), errors }
}
