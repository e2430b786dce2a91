//! `control-plane`: starts the release `servos serve` as a child on 127.0.0.1, sets it up
//! through the API with 1 server and 100 services, then measures idle resident memory and
//! HTTP throughput of `GET /healthz` against authenticated `GET /api/v1/services`,
//! interleaved in the same run.

pub(crate) mod process;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};

use crate::report::{self, Goal, Table};
use crate::stats::{Latencies, ms};
use process::{Memory, ServerProcess, cpu_seconds};

/// Issue 2 goals.
const RSS_GOAL_MIB: Goal = Goal::AtMost(25.0);
const RATIO_GOAL: Goal = Goal::AtLeast(0.5);
const P99_GOAL_MS: Goal = Goal::Below(10.0);
const PASSWORD: &str = "benchmark password 1";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The `servos` binary to start (default: next to this one, i.e. target/release/servos).
    #[arg(long, default_value_os_t = crate::default_servos_bin())]
    servos_bin: PathBuf,
    /// Services created before measuring.
    #[arg(long, default_value_t = 100)]
    services: usize,
    /// Concurrent keep-alive connections (one tokio task and one client each).
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Measured seconds per endpoint, split over two interleaved rounds.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Warm-up seconds per endpoint, not measured.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds of idleness before reading resident memory.
    #[arg(long, default_value_t = 3.0)]
    idle: f64,
}

/// An endpoint under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Healthz,
    Services,
}

impl Endpoint {
    const BOTH: [Endpoint; 2] = [Endpoint::Healthz, Endpoint::Services];

    fn path(self) -> &'static str {
        match self {
            Endpoint::Healthz => "/healthz",
            Endpoint::Services => "/api/v1/services",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Endpoint::Healthz => "GET /healthz",
            Endpoint::Services => "GET /api/v1/services (Bearer)",
        }
    }
}

/// What one load phase measured.
#[derive(Debug, Default)]
struct Phase {
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    server_cpu: f64,
    bench_cpu: f64,
}

impl Phase {
    fn absorb(&mut self, other: Phase) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.elapsed += other.elapsed;
        self.server_cpu += other.server_cpu;
        self.bench_cpu += other.bench_cpu;
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    ensure!(args.connections > 0, "--connections must be at least 1");
    ensure!(
        args.seconds > 0.0 && args.warmup >= 0.0 && args.idle >= 0.0,
        "durations must be positive"
    );
    crate::runtime()?.block_on(bench(&args))
}

async fn bench(args: &Args) -> anyhow::Result<()> {
    println!(
        "control-plane: starting {} serve on 127.0.0.1",
        args.servos_bin.display()
    );
    let mut server = ServerProcess::start(&args.servos_bin).await?;
    let result = measure(args, &mut server).await;
    server.stop().await;
    result
}

async fn measure(args: &Args, server: &mut ServerProcess) -> anyhow::Result<()> {
    let base = server.base_url();
    let http = reqwest::Client::new();
    let fresh = server.memory()?;
    let token = setup_admin(&http, &base, server).await?;
    let after_setup = server.memory()?;
    let started = Instant::now();
    populate(&http, &base, &token, args.services).await?;
    println!(
        "created 1 server and {} services through the API in {:.2} s (pid {}, {})",
        args.services,
        started.elapsed().as_secs_f64(),
        server.pid(),
        base
    );
    check_listing(&http, &base, &token, args.services).await?;

    tokio::time::sleep(Duration::from_secs_f64(args.idle)).await;
    let idle = server.memory()?;

    let (totals, round_rates) = load(args, server.pid(), &base, &token).await?;
    server.ensure_running()?;
    let after = server.memory()?;
    print_results(
        &totals,
        &round_rates,
        &[fresh, after_setup, idle, after],
        args,
    );
    Ok(())
}

/// Warm-up on both endpoints, then two interleaved rounds of each; returns the merged
/// phases and each round's req/s, per endpoint.
async fn load(
    args: &Args,
    server_pid: u32,
    base: &str,
    token: &str,
) -> anyhow::Result<([Phase; 2], [Vec<f64>; 2])> {
    let clients = (0..args.connections)
        .map(|_| client())
        .collect::<anyhow::Result<Vec<_>>>()?;
    println!(
        "load: {} keep-alive connections, warm-up {:.1} s, then {:.1} s per endpoint in 2 interleaved rounds; \
         load average before {}",
        args.connections,
        args.warmup,
        args.seconds,
        report::load_average()
    );
    println!(
        "note: the load generator (this process) runs on the same {} cores as the server, \
         so req/s is a lower bound for the server alone; its CPU use is shown below",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    for endpoint in Endpoint::BOTH {
        run_phase(&clients, base, token, endpoint, args.warmup, server_pid).await;
    }
    let mut totals = [Phase::default(), Phase::default()];
    let mut round_rates: [Vec<f64>; 2] = Default::default();
    for _round in 0..2 {
        for (i, endpoint) in Endpoint::BOTH.into_iter().enumerate() {
            let phase = run_phase(
                &clients,
                base,
                token,
                endpoint,
                args.seconds / 2.0,
                server_pid,
            )
            .await;
            round_rates[i].push(phase.latencies.len() as f64 / phase.elapsed.as_secs_f64());
            totals[i].absorb(phase);
        }
    }
    Ok((totals, round_rates))
}

/// `POST /api/v1/setup` with the token the server wrote to its data dir; returns the
/// admin's bearer token.
pub(crate) async fn setup_admin(
    http: &reqwest::Client,
    base: &str,
    server: &ServerProcess,
) -> anyhow::Result<String> {
    let setup_token = server.setup_token()?;
    let body = json!({ "token": setup_token, "username": "admin", "password": PASSWORD });
    let reply = post(http, base, "/api/v1/setup", None, &body).await?;
    reply["token"]
        .as_str()
        .map(str::to_owned)
        .context("POST /api/v1/setup: no `token` in the reply")
}

async fn populate(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    services: usize,
) -> anyhow::Result<()> {
    let server = post(
        http,
        base,
        "/api/v1/servers",
        Some(token),
        &json!({ "name": "bench-server", "host": "10.0.0.1" }),
    )
    .await?;
    let server_id = server["id"]
        .as_str()
        .context("POST /api/v1/servers: no `id` in the reply")?
        .to_owned();
    for i in 0..services {
        let body = json!({
            "name": format!("bench-svc-{i:03}"),
            "image": "busybox:latest",
            "servers": [server_id],
            "port": 8080,
        });
        post(http, base, "/api/v1/services", Some(token), &body).await?;
    }
    Ok(())
}

/// The listing really holds every service: the benchmark measures what it says.
async fn check_listing(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    expected: usize,
) -> anyhow::Result<()> {
    let reply = http
        .get(format!("{base}/api/v1/services"))
        .bearer_auth(token)
        .send()
        .await
        .context("GET /api/v1/services")?;
    let status = reply.status();
    let bytes = reply.bytes().await.context("GET /api/v1/services: body")?;
    ensure!(status.is_success(), "GET /api/v1/services: {status}");
    let list: Value = serde_json::from_slice(&bytes).context("GET /api/v1/services: not JSON")?;
    let n = list.as_array().map_or(0, Vec::len);
    ensure!(
        n == expected,
        "GET /api/v1/services listed {n} services, expected {expected}"
    );
    println!(
        "GET /api/v1/services returns {n} services, {} bytes of JSON",
        bytes.len()
    );
    Ok(())
}

pub(crate) async fn post(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> anyhow::Result<Value> {
    let mut request = http.post(format!("{base}{path}")).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let reply = request
        .send()
        .await
        .with_context(|| format!("POST {path}"))?;
    let status = reply.status();
    let text = reply
        .text()
        .await
        .with_context(|| format!("POST {path}: body"))?;
    if !status.is_success() {
        bail!("POST {path}: {status}: {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("POST {path}: reply is not JSON: {text}"))
}

/// One client per connection: each keeps exactly one keep-alive connection.
fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10))
        .build()
        .context("build HTTP client")
}

/// Every client sends requests back to back for `seconds`; latencies of 200 replies
/// (body read in full) are kept, anything else counts as an error.
async fn run_phase(
    clients: &[reqwest::Client],
    base: &str,
    token: &str,
    endpoint: Endpoint,
    seconds: f64,
    server_pid: u32,
) -> Phase {
    let url = format!("{base}{}", endpoint.path());
    let auth = (endpoint == Endpoint::Services).then(|| format!("Bearer {token}"));
    let (server_cpu0, bench_cpu0) = (cpu_seconds(server_pid), cpu_seconds(std::process::id()));
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = clients
        .iter()
        .map(|c| tokio::spawn(worker(c.clone(), url.clone(), auth.clone(), deadline)))
        .collect();
    let mut phase = Phase::default();
    for task in tasks {
        match task.await {
            Ok(part) => phase.absorb(part),
            Err(e) => {
                phase.errors += 1;
                phase
                    .first_error
                    .get_or_insert_with(|| format!("load task failed: {e}"));
            }
        }
    }
    phase.elapsed = start.elapsed();
    phase.server_cpu = cpu_seconds(server_pid) - server_cpu0;
    phase.bench_cpu = cpu_seconds(std::process::id()) - bench_cpu0;
    phase
}

async fn worker(
    client: reqwest::Client,
    url: String,
    auth: Option<String>,
    deadline: tokio::time::Instant,
) -> Phase {
    let mut phase = Phase::default();
    while tokio::time::Instant::now() < deadline {
        let mut request = client.get(&url);
        if let Some(auth) = &auth {
            request = request.header(reqwest::header::AUTHORIZATION, auth);
        }
        let sent = Instant::now();
        let outcome = match request.send().await {
            Ok(reply) if reply.status().is_success() => {
                reply.bytes().await.map(drop).map_err(|e| e.to_string())
            }
            Ok(reply) => Err(format!("HTTP {}", reply.status())),
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(()) => phase.latencies.push(sent.elapsed()),
            Err(e) => {
                phase.errors += 1;
                phase.first_error.get_or_insert(e);
                // An error may be instant (connection refused): do not spin on it.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    phase
}

fn print_results(
    phases: &[Phase; 2],
    round_rates: &[Vec<f64>; 2],
    memory: &[Memory; 4],
    args: &Args,
) {
    let rates: Vec<f64> = phases
        .iter()
        .map(|p| p.latencies.len() as f64 / p.elapsed.as_secs_f64())
        .collect();
    let stats: Vec<Latencies> = phases
        .iter()
        .map(|p| Latencies::new(p.latencies.clone()))
        .collect();
    print_throughput(phases, round_rates, &rates, &stats);
    print_memory(memory, args);

    let [_, _, idle, after] = memory;
    let ratio = rates[1] / rates[0];
    let worst_p99 = stats
        .iter()
        .map(|s| s.p99().as_secs_f64() * 1000.0)
        .fold(0.0, f64::max);
    report::summary(format!(
        "control-plane: idle RSS {} [{}], RSS after load {}",
        mib(idle.rss_kib),
        RSS_GOAL_MIB.verdict(kib_to_mib(idle.rss_kib), " MiB"),
        mib(after.rss_kib),
    ));
    report::summary(format!(
        "control-plane: healthz {:.0} req/s p50 {} p99 {}; services {:.0} req/s p50 {} p99 {}; \
         ratio {ratio:.3} [{}]; worst p99 [{}]",
        rates[0],
        ms(stats[0].p50()),
        ms(stats[0].p99()),
        rates[1],
        ms(stats[1].p50()),
        ms(stats[1].p99()),
        RATIO_GOAL.verdict(ratio, ""),
        P99_GOAL_MS.verdict(worst_p99, " ms"),
    ));
}

fn print_throughput(
    phases: &[Phase; 2],
    round_rates: &[Vec<f64>; 2],
    rates: &[f64],
    stats: &[Latencies],
) {
    let mut table = Table::new([
        "endpoint",
        "requests",
        "req/s",
        "per round",
        "p50",
        "p99",
        "max",
        "errors",
        "server CPU/req",
        "bench CPU/req",
        "p99 goal",
    ]);
    for (i, endpoint) in Endpoint::BOTH.into_iter().enumerate() {
        let count = stats[i].count().max(1) as f64;
        table.row([
            endpoint.label().to_owned(),
            stats[i].count().to_string(),
            format!("{:.0}", rates[i]),
            round_rates[i]
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(" / "),
            ms(stats[i].p50()),
            ms(stats[i].p99()),
            ms(stats[i].max()),
            phases[i].errors.to_string(),
            format!("{:.0} µs", phases[i].server_cpu / count * 1e6),
            format!("{:.0} µs", phases[i].bench_cpu / count * 1e6),
            P99_GOAL_MS.verdict(stats[i].p99().as_secs_f64() * 1000.0, " ms"),
        ]);
    }
    table.print();
    for phase in phases {
        if let Some(e) = &phase.first_error {
            println!("first error: {e}");
        }
    }
    let ratio = rates[1] / rates[0];
    println!(
        "throughput ratio services/healthz = {ratio:.3}  ({})",
        RATIO_GOAL.verdict(ratio, "")
    );
    println!("CPU per request is user+system time from /proc/<pid>/stat over the measured phases.");
    println!("load average after the load {}", report::load_average());
}

fn print_memory(memory: &[Memory; 4], args: &Args) {
    let [fresh, after_setup, idle, after] = memory;
    let reported = || "(reported)".to_owned();
    let mut mem = Table::new(["memory (servos serve)", "VmRSS", "VmHWM", "goal"]);
    mem.row([
        "started, healthy, before setup".to_owned(),
        mib(fresh.rss_kib),
        mib(fresh.hwm_kib),
        reported(),
    ]);
    mem.row([
        "right after POST /api/v1/setup (password hash)".to_owned(),
        mib(after_setup.rss_kib),
        mib(after_setup.hwm_kib),
        reported(),
    ]);
    mem.row([
        format!(
            "idle {:.0} s after setup + {} services",
            args.idle, args.services
        ),
        mib(idle.rss_kib),
        mib(idle.hwm_kib),
        RSS_GOAL_MIB.verdict(kib_to_mib(idle.rss_kib), " MiB"),
    ]);
    mem.row([
        "after the load".to_owned(),
        mib(after.rss_kib),
        mib(after.hwm_kib),
        reported(),
    ]);
    println!();
    mem.print();
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib_to_mib(kib))
}
