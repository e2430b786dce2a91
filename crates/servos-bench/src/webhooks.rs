//! `webhooks`: starts the release `servos serve` as a child on 127.0.0.1 with one service
//! built from git, then measures
//! - webhook received → deployment queued: the response latency of signed GitHub push
//!   deliveries sent 100 at a time (distinct delivery ids), p50/p99, and checks that each
//!   delivery queued exactly one deployment;
//! - how fast forged deliveries (bad signatures, and signatures for a service that does
//!   not exist) are rejected, against `GET /healthz` as the yardstick, interleaved in the
//!   same run, with the audit events the flood cost.
//!
//! The service's builder points at a closed port on 127.0.0.1, so the queued builds fail
//! at once; the runner is left on, as in production.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use serde_json::{Value, json};
use servos_core::webhook::hmac_sha256_hex;

use crate::control_plane::process::{ServerProcess, cpu_seconds};
use crate::control_plane::{post, setup_admin};
use crate::report::{self, Goal, Table};
use crate::stats::{Latencies, ms};

/// A forged delivery should cost no more than a health check, within a factor of 2.
const FORGED_RATIO_GOAL: Goal = Goal::AtLeast(0.5);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The `servos` binary to start (default: next to this one, i.e. target/release/servos).
    #[arg(long, default_value_os_t = crate::default_servos_bin())]
    servos_bin: PathBuf,
    /// Deliveries sent at once per round.
    #[arg(long, default_value_t = 100)]
    concurrent: usize,
    /// Measured rounds of concurrent deliveries (after one warm-up round).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Keep-alive connections for the forged-delivery and healthz load.
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Measured seconds per load kind, split over two interleaved rounds.
    #[arg(long, default_value_t = 4.0)]
    seconds: f64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    ensure!(args.concurrent > 0 && args.rounds > 0 && args.connections > 0, "counts must be at least 1");
    ensure!(args.seconds > 0.0, "--seconds must be positive");
    crate::runtime()?.block_on(bench(&args))
}

async fn bench(args: &Args) -> anyhow::Result<()> {
    println!("webhooks: starting {} serve on 127.0.0.1", args.servos_bin.display());
    let mut server = ServerProcess::start(&args.servos_bin).await?;
    let result = measure(args, &mut server).await;
    server.stop().await;
    result
}

/// A push payload of realistic size (GitHub's are a few KiB: repository, pusher, commits).
fn push_body(commit: &str, filler: usize) -> String {
    json!({
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000001",
        "after": commit,
        "repository": { "full_name": "acme/app", "description": "x".repeat(filler) },
        "commits": [{ "id": commit, "message": "bench" }],
    })
    .to_string()
}

struct Service {
    id: String,
    secret: String,
}

async fn create_service(http: &reqwest::Client, base: &str, token: &str) -> anyhow::Result<Service> {
    post(http, base, "/api/v1/servers", Some(token), &json!({ "name": "bench-server", "host": "127.0.0.1", "port": 1 })).await?;
    post(http, base, "/api/v1/builders", Some(token), &json!({ "name": "bench-builder", "host": "127.0.0.1", "port": 1 })).await?;
    let svc = post(
        http,
        base,
        "/api/v1/services",
        Some(token),
        &json!({
            "name": "bench-app",
            "git": { "repository": "https://git.example/acme/app.git", "branch": "main" },
            "builder": "bench-builder",
            "servers": ["bench-server"],
            "port": 8080,
        }),
    )
    .await?;
    Ok(Service {
        id: svc["id"].as_str().context("POST /api/v1/services: no id")?.to_owned(),
        secret: svc["webhook_secret"].as_str().context("POST /api/v1/services: no webhook_secret")?.to_owned(),
    })
}

async fn measure(args: &Args, server: &mut ServerProcess) -> anyhow::Result<()> {
    let base = server.base_url();
    let http = reqwest::Client::builder().tcp_nodelay(true).timeout(Duration::from_secs(30)).build()?;
    let token = setup_admin(&http, &base, server).await?;
    let svc = create_service(&http, &base, &token).await?;
    let url = format!("{base}/api/v1/webhooks/github/{}", svc.id);
    println!("service bench-app (git, branch main) created; deliveries go to {url}");

    // Warm-up round (connections opened, caches filled), then measured rounds, each
    // followed by the same number of `POST /api/v1/services/{id}/deployments` (bearer): the
    // same queueing primitive without the webhook, as the yardstick.
    let api_url = format!("{base}/api/v1/services/{}/deployments", svc.id);
    let mut samples = Vec::new();
    let mut api_samples = Vec::new();
    let mut queued = 0usize;
    let started = Instant::now();
    for round in 0..=args.rounds {
        let (latencies, ok) = delivery_round(&http, &url, &svc, round, args.concurrent).await?;
        let api = api_round(&http, &api_url, &token, args.concurrent).await?;
        if round > 0 {
            samples.extend(latencies);
            api_samples.extend(api);
        }
        queued += ok;
    }
    let wall = started.elapsed();
    let expected = (args.rounds + 1) * args.concurrent;
    ensure!(queued == expected, "{queued} of {expected} signed deliveries were queued (202)");
    let by_webhook = count_audit(&http, &base, &token, "webhook.accepted", Some(&svc.id)).await?;
    ensure!(by_webhook == expected, "{by_webhook} deliveries recorded for {expected} distinct deliveries");
    let deployments = count_deployments(&http, &base, &token).await?;
    ensure!(deployments == 2 * expected, "{deployments} deployments exist, expected {expected} by webhook + {expected} by the API");
    let replay = send_signed(&http, &url, &svc, 0, 0).await?;
    ensure!(replay.0 == 200, "a replayed delivery answered {}", replay.0);
    let queued_latency = Latencies::new(samples);
    let api_latency = Latencies::new(api_samples);
    let p50_ratio = queued_latency.p50().as_secs_f64() / api_latency.p50().as_secs_f64().max(1e-9);

    report::heading(&format!("signed push deliveries, {} at once, {} measured rounds (interleaved with the API yardstick)", args.concurrent, args.rounds));
    let mut table = Table::new(["what", "requests", "p50", "p99", "max", "mean"]);
    for (label, lat) in [
        ("webhook received → deployment queued (202)", &queued_latency),
        ("POST /services/{id}/deployments (Bearer) → queued (202)", &api_latency),
    ] {
        table.row([label.to_owned(), lat.count().to_string(), ms(lat.p50()), ms(lat.p99()), ms(lat.max()), ms(lat.mean())]);
    }
    table.print();
    println!(
        "{expected} deliveries + {expected} API deployments (incl. warm-up) in {:.2} s → {} deployments, exactly one per delivery id; \
         a replayed delivery id answered 200 duplicate. webhook/API p50 = {p50_ratio:.2}×",
        wall.as_secs_f64(),
        deployments
    );
    println!(
        "every queueing is one write transaction and writers are serialised, so under {} at once the latency is the \
         queue behind the write lock (the runner's failing builds write too)",
        args.concurrent
    );

    // Forged deliveries against the health check, interleaved.
    let forged_body = push_body("6113728f27ae82c7b1a177c8d03f9e96e0adf246", 4096);
    let forged_sig = format!("sha256={}", hmac_sha256_hex(b"whsec_a-guess", forged_body.as_bytes()));
    let unknown_url = format!("{base}/api/v1/webhooks/github/{}", "0b9f1f5e-3c1a-4c8e-9d55-1f2a3b4c5d6e");
    let kinds = [
        Kind { label: "GET /healthz".into(), url: format!("{base}/healthz"), body: None, want: 200 },
        Kind { label: "forged delivery (bad signature)".into(), url: url.clone(), body: Some((forged_body.clone(), forged_sig.clone())), want: 401 },
        Kind { label: "forged delivery (no such service)".into(), url: unknown_url, body: Some((forged_body.clone(), forged_sig)), want: 401 },
    ];
    let audit_before = count_rejections(&http, &base, &token).await?;
    let clients = (0..args.connections)
        .map(|_| reqwest::Client::builder().pool_max_idle_per_host(1).tcp_nodelay(true).timeout(Duration::from_secs(10)).build())
        .collect::<Result<Vec<_>, _>>()?;
    for kind in &kinds {
        load(&clients, kind, 0.5, server.pid()).await; // warm-up
    }
    let mut totals: Vec<Phase> = kinds.iter().map(|_| Phase::default()).collect();
    for _round in 0..2 {
        for (i, kind) in kinds.iter().enumerate() {
            let phase = load(&clients, kind, args.seconds / 2.0, server.pid()).await;
            totals[i].absorb(phase);
        }
    }
    server.ensure_running()?;
    let audit_after = count_rejections(&http, &base, &token).await?;
    let still = count_deployments(&http, &base, &token).await?;
    ensure!(still == deployments, "forged deliveries queued {} deployments", still - deployments);

    report::heading(&format!("forged deliveries against GET /healthz, {} connections, {:.1} s each, interleaved", args.connections, args.seconds));
    println!("forged body: {} bytes (a push payload of realistic size), HMAC over all of it", forged_body.len());
    let mut table = Table::new(["load", "requests", "req/s", "p50", "p99", "errors", "server CPU/req", "vs healthz"]);
    let rates: Vec<f64> = totals.iter().map(|p| p.ok as f64 / p.elapsed.as_secs_f64()).collect();
    for (i, kind) in kinds.iter().enumerate() {
        let lat = Latencies::new(totals[i].latencies.clone());
        let ratio = rates[i] / rates[0];
        table.row([
            kind.label.clone(),
            totals[i].ok.to_string(),
            format!("{:.0}", rates[i]),
            ms(lat.p50()),
            ms(lat.p99()),
            totals[i].errors.to_string(),
            format!("{:.0} µs", totals[i].server_cpu / (totals[i].ok.max(1) as f64) * 1e6),
            if i == 0 { "1".to_owned() } else { format!("{ratio:.3}× [{}]", FORGED_RATIO_GOAL.verdict(ratio, "×")) },
        ]);
    }
    table.print();
    for (kind, phase) in kinds.iter().zip(&totals) {
        if let Some(e) = &phase.first_error {
            println!("first error ({}): {e}", kind.label);
        }
    }
    let forged_total: u64 = totals[1..].iter().map(|p| p.ok).sum();
    // Pending counts are written when their window ends (60 s); the immediate ones are here.
    println!(
        "{forged_total} forged deliveries (incl. warm-up not counted) wrote {} webhook.rejected audit events so far \
         (one at the first rejection per service and window; the window's count follows when it ends); nothing was queued",
        audit_after - audit_before
    );
    println!("load average after the load {}", report::load_average());

    report::summary(format!(
        "webhooks: {} concurrent signed deliveries → queued p50 {} p99 {} (n={}); API deploy same load p50 {} p99 {}; webhook/API p50 {p50_ratio:.2}×",
        args.concurrent,
        ms(queued_latency.p50()),
        ms(queued_latency.p99()),
        queued_latency.count(),
        ms(api_latency.p50()),
        ms(api_latency.p99()),
    ));
    report::summary(format!(
        "webhooks: forged rejected {:.0} req/s (bad signature) / {:.0} req/s (no such service) vs healthz {:.0} req/s; ratio {:.3} [{}]",
        rates[1],
        rates[2],
        rates[0],
        rates[1] / rates[0],
        FORGED_RATIO_GOAL.verdict(rates[1] / rates[0], "×")
    ));
    Ok(())
}

/// Sends `n` signed deliveries of distinct commits and delivery ids at once; returns
/// their latencies and how many were queued (202).
async fn delivery_round(http: &reqwest::Client, url: &str, svc: &Service, round: usize, n: usize) -> anyhow::Result<(Vec<Duration>, usize)> {
    let sends = (0..n).map(|i| send_signed(http, url, svc, round, i));
    let mut latencies = Vec::with_capacity(n);
    let mut queued = 0;
    for result in futures_join(sends).await {
        let (status, took) = result?;
        ensure!(status == 202, "a signed delivery answered HTTP {status}");
        queued += 1;
        latencies.push(took);
    }
    Ok((latencies, queued))
}

/// Queues `n` deployments through the API at once; returns their latencies.
async fn api_round(http: &reqwest::Client, url: &str, token: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    let sends = (0..n).map(|_| {
        let request = http.post(url).bearer_auth(token).header("content-type", "application/json").body("{}");
        async move {
            let sent = Instant::now();
            let reply = request.send().await.context("POST deployments")?;
            let status = reply.status().as_u16();
            reply.bytes().await.context("deployments reply body")?;
            anyhow::Ok((status, sent.elapsed()))
        }
    });
    let mut latencies = Vec::with_capacity(n);
    for result in futures_join(sends).await {
        let (status, took) = result?;
        ensure!(status == 202, "POST /deployments answered HTTP {status}");
        latencies.push(took);
    }
    ensure!(latencies.len() == n, "{} of {n} API deployments completed", latencies.len());
    Ok(latencies)
}

/// Runs every future as its own task (truly concurrent requests) and collects the outputs.
async fn futures_join<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

fn send_signed(http: &reqwest::Client, url: &str, svc: &Service, round: usize, i: usize) -> impl std::future::Future<Output = anyhow::Result<(u16, Duration)>> + Send + 'static {
    let commit = format!("{:040x}", ((round as u128) << 32) | (i as u128) | (1 << 100));
    let body = push_body(&commit, 4096);
    let signature = format!("sha256={}", hmac_sha256_hex(svc.secret.as_bytes(), body.as_bytes()));
    let request = http
        .post(url)
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", format!("bench-{round}-{i}"))
        .header("x-hub-signature-256", signature)
        .body(body);
    async move {
        let sent = Instant::now();
        let reply = request.send().await.context("POST webhook")?;
        let status = reply.status().as_u16();
        reply.bytes().await.context("webhook reply body")?;
        Ok((status, sent.elapsed()))
    }
}

async fn get_json(http: &reqwest::Client, base: &str, token: &str, path: &str) -> anyhow::Result<Value> {
    let reply = http.get(format!("{base}{path}")).bearer_auth(token).send().await.with_context(|| format!("GET {path}"))?;
    ensure!(reply.status().is_success(), "GET {path}: {}", reply.status());
    reply.json().await.with_context(|| format!("GET {path}: not JSON"))
}

/// How many audit events of `action` exist (`object_id` given: about that object),
/// paging through the whole log.
async fn count_audit(http: &reqwest::Client, base: &str, token: &str, action: &str, object_id: Option<&str>) -> anyhow::Result<usize> {
    let mut count = 0;
    let mut before: Option<i64> = None;
    loop {
        let path = match before {
            Some(seq) => format!("/api/v1/audit?limit=1000&before={seq}"),
            None => "/api/v1/audit?limit=1000".to_owned(),
        };
        let page = get_json(http, base, token, &path).await?;
        let rows = page.as_array().map(Vec::as_slice).unwrap_or_default();
        count += rows.iter().filter(|e| e["action"] == action && object_id.is_none_or(|id| e["object_id"] == id)).count();
        match rows.last().and_then(|e| e["seq"].as_i64()) {
            Some(seq) if rows.len() == 1000 => before = Some(seq),
            _ => return Ok(count),
        }
    }
}

/// Deployments queued (the bench has one service), from the audit log: the deployment
/// listing is capped at 200.
async fn count_deployments(http: &reqwest::Client, base: &str, token: &str) -> anyhow::Result<usize> {
    count_audit(http, base, token, "deployment.queued", None).await
}

async fn count_rejections(http: &reqwest::Client, base: &str, token: &str) -> anyhow::Result<usize> {
    count_audit(http, base, token, "webhook.rejected", None).await
}

/// One kind of request under load.
struct Kind {
    label: String,
    url: String,
    /// Body and signature header for a POST; `None` for a GET.
    body: Option<(String, String)>,
    want: u16,
}

#[derive(Debug, Default)]
struct Phase {
    ok: u64,
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    server_cpu: f64,
}

impl Phase {
    fn absorb(&mut self, other: Phase) {
        self.ok += other.ok;
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.elapsed += other.elapsed;
        self.server_cpu += other.server_cpu;
    }
}

/// Every client sends `kind` back to back for `seconds`; answers with the wanted status
/// count, anything else is an error.
async fn load(clients: &[reqwest::Client], kind: &Kind, seconds: f64, server_pid: u32) -> Phase {
    let cpu0 = cpu_seconds(server_pid);
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(n, c)| tokio::spawn(worker(c.clone(), kind.url.clone(), kind.body.clone(), kind.want, n, deadline)))
        .collect();
    let mut phase = Phase::default();
    for task in tasks {
        match task.await {
            Ok(part) => phase.absorb(part),
            Err(e) => {
                phase.errors += 1;
                phase.first_error.get_or_insert_with(|| format!("load task failed: {e}"));
            }
        }
    }
    phase.elapsed = start.elapsed();
    phase.server_cpu = cpu_seconds(server_pid) - cpu0;
    phase
}

async fn worker(client: reqwest::Client, url: String, body: Option<(String, String)>, want: u16, n: usize, deadline: tokio::time::Instant) -> Phase {
    let mut phase = Phase::default();
    let mut seq = 0u64;
    while tokio::time::Instant::now() < deadline {
        seq += 1;
        let request = match &body {
            Some((text, signature)) => client
                .post(&url)
                .header("content-type", "application/json")
                .header("x-github-event", "push")
                .header("x-github-delivery", format!("forged-{n}-{seq}"))
                .header("x-hub-signature-256", signature)
                .body(text.clone()),
            None => client.get(&url),
        };
        let sent = Instant::now();
        let outcome = match request.send().await {
            Ok(reply) if reply.status().as_u16() == want => reply.bytes().await.map(drop).map_err(|e| e.to_string()),
            Ok(reply) => Err(format!("HTTP {}", reply.status())),
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(()) => {
                phase.ok += 1;
                phase.latencies.push(sent.elapsed());
            }
            Err(e) => {
                phase.errors += 1;
                phase.first_error.get_or_insert(e);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    phase
}
