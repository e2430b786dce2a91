//! `deploy` (issue 4): ServOS deploys on real test hosts with their own dockerd, against
//! the same steps done by hand with `ssh` + `docker`, in the same run.
//!
//! (a) One deploy of a small service (busybox `httpd`, two env vars): ServOS end to end
//! (`POST /api/v1/services/{id}/deployments`, then `GET /api/v1/deployments/{id}` until it
//! has finished) against a hand-written sequence of `ssh` commands through an OpenSSH
//! ControlMaster on the same host. Interleaved rounds, each replacing the method's previous
//! container; median and ratio.
//!
//! (b) 30 services over 3 hosts queued at once through the API: wall time until all have
//! succeeded, and the control plane's peak (VmHWM) and final (VmRSS) resident memory.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};
use servos_testkit::TestNet;

use crate::control_plane::process::{Memory, ServerProcess};
use crate::control_plane::{post, setup_admin};
use crate::openssh::{Mux, OpenSsh};
use crate::report::{self, Goal, Table};
use crate::stats::median;

/// Issue 4: a ServOS deploy takes at most 1.3× the same steps by hand.
const RATIO_GOAL: Goal = Goal::AtMost(1.3);
const IMAGE: &str = "servos-bench/busybox:1";
/// The service: busybox `httpd` under a `sh` that exits on SIGTERM, as a real service does.
/// Plain `httpd -f` as PID 1 ignores SIGTERM, so `docker stop` would wait its full timeout
/// on both sides (`--plain-httpd` measures that case).
const COMMAND: [&str; 3] = ["sh", "-c", "trap 'exit 0' TERM; httpd -f -p 8080 -h /tmp & wait"];
const PLAIN_COMMAND: [&str; 6] = ["httpd", "-f", "-p", "8080", "-h", "/tmp"];
/// servos-deploy's `DeploySettings::default()`: without a Docker health check (busybox has
/// none) and without a probe, a new container must have been running this long, seen by
/// `docker inspect` polls this far apart. The manual baseline waits the same way.
const MIN_UPTIME: Duration = Duration::from_secs(3);
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// servos-deploy's `STOP_SECONDS`: old containers are retired with `docker stop --time 10`.
const STOP_SECONDS: u32 = 10;
/// servos-deploy's `runner::DEFAULT_CONCURRENCY` (jobs run at once), for the report.
const RUNNER_CONCURRENCY: usize = 8;
const ENV_FILE: &str = "API_KEY=bench-secret-value-1\nGREETING=hello world\n";
const MANUAL_NETWORK: &str = "bench-manual";
const MANUAL_DIR: &str = "/var/lib/servos-bench-manual";
/// How often the benchmark polls `GET /api/v1/deployments/{id}`.
const API_POLL: Duration = Duration::from_millis(25);
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The `servos` binary to start (default: next to this one, i.e. target/release/servos).
    #[arg(long, default_value_os_t = crate::default_servos_bin())]
    servos_bin: PathBuf,
    /// Measured interleaved rounds of part (a), after one warm-up deploy per method.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Services deployed at once in part (b).
    #[arg(long, default_value_t = 30)]
    services: usize,
    /// Test hosts (each with its own dockerd); part (a) uses the first.
    #[arg(long, default_value_t = 3)]
    hosts: usize,
    /// Leave the machine's /root/.bashrc visible on the test hosts (see the `ssh` benchmark).
    #[arg(long)]
    keep_root_bashrc: bool,
    /// Run plain `httpd -f` as the container's PID 1: it ignores SIGTERM, so retiring the
    /// old container waits docker stop's full 10 s timeout in both methods.
    #[arg(long)]
    plain_httpd: bool,
}

impl Args {
    fn command(&self) -> &'static [&'static str] {
        if self.plain_httpd { &PLAIN_COMMAND } else { &COMMAND }
    }
}

/// `'a' 'b c'`: each word single-quoted for the remote shell.
fn shell_words(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| format!("'{}'", w.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    ensure!(
        args.rounds > 0 && args.services > 0 && args.hosts > 0,
        "counts must be at least 1"
    );
    let started = Instant::now();
    let net = TestNet::builder()
        .hosts(args.hosts)
        .with_docker()
        .build()
        .context("build the test hosts with dockerd (run scripts/install-test-deps.sh as root)")?;
    let mut hidden = false;
    for h in net.hosts() {
        h.import_busybox_image(IMAGE)?;
        if !args.keep_root_bashrc {
            hidden |= crate::ssh::hide_root_bashrc(h)?;
        }
    }
    println!(
        "deploy: {} test hosts with dockerd and image {IMAGE} ready in {:.2} s; load average {}",
        args.hosts,
        started.elapsed().as_secs_f64(),
        report::load_average()
    );
    if hidden {
        println!(
            "note: /root/.bashrc (pyenv init, shared with this machine) is hidden inside the test \
             hosts' mount namespaces, as in the `ssh` benchmark; both methods run the same shell"
        );
    }
    let pair = servos_ssh::keys::generate_ed25519("servos-bench-manual")?;
    net.host(0).authorize(&pair.public_line)?;
    let openssh = OpenSsh::new(&pair.private_openssh)?;
    let result = crate::runtime()?.block_on(bench(args, &net, &openssh));
    let cleaned = openssh.cleanup();
    drop(net);
    result.and(cleaned)
}

async fn bench(args: &Args, net: &TestNet, openssh: &OpenSsh) -> anyhow::Result<()> {
    println!(
        "deploy: starting {} serve on 127.0.0.1",
        args.servos_bin.display()
    );
    let mut server = ServerProcess::start(&args.servos_bin).await?;
    let result = measure(args, net, openssh, &mut server).await;
    server.stop().await;
    result
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        post(&self.http, &self.base, path, Some(&self.token), body).await
    }

    async fn send(&self, request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
        let reply = request
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| what.to_owned())?;
        let status = reply.status();
        let text = reply.text().await.with_context(|| format!("{what}: body"))?;
        ensure!(status.is_success(), "{what}: {status}: {text}");
        serde_json::from_str(&text).with_context(|| format!("{what}: not JSON: {text}"))
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)), &format!("GET {path}"))
            .await
    }

    async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let req = self.http.put(format!("{}{path}", self.base)).json(body);
        self.send(req, &format!("PUT {path}")).await
    }

    /// Queues a deploy of the service; returns the deployment id.
    async fn queue_deploy(&self, service_id: &str) -> anyhow::Result<String> {
        let dep = self
            .post(&format!("/api/v1/services/{service_id}/deployments"), &json!({}))
            .await?;
        id_of(&dep, "POST deployments")
    }

    /// The deployment's status once it has finished (or `None` while queued/running).
    async fn finished(&self, deployment: &str) -> anyhow::Result<Option<Value>> {
        let d = self.get(&format!("/api/v1/deployments/{deployment}")).await?;
        let status = d["status"].as_str().unwrap_or_default();
        Ok(matches!(status, "succeeded" | "failed" | "cancelled").then_some(d))
    }
}

fn id_of(v: &Value, what: &str) -> anyhow::Result<String> {
    v["id"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("{what}: no `id` in {v}"))
}

async fn measure(
    args: &Args,
    net: &TestNet,
    openssh: &OpenSsh,
    server: &mut ServerProcess,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("build HTTP client")?;
    let base = server.base_url();
    let token = setup_admin(&http, &base, server).await?;
    let api = Api { http, base, token };

    // Servers: host key pinned to what the testkit generated, ServOS's key authorized,
    // commissioned with a check (`servos servers check`).
    let t = Instant::now();
    let mut server_ids = Vec::new();
    for (i, h) in net.hosts().iter().enumerate() {
        let created = api
            .post(
                "/api/v1/servers",
                &json!({
                    "name": format!("bench-host-{i}"),
                    "host": h.addr().to_string(),
                    "host_key_fingerprint": h.host_key_fingerprint()?,
                }),
            )
            .await?;
        let id = id_of(&created, "POST /api/v1/servers")?;
        h.authorize(
            created["public_key"]
                .as_str()
                .context("POST /api/v1/servers: no public_key")?,
        )?;
        let checked = api
            .post(&format!("/api/v1/servers/{id}/check"), &json!({}))
            .await?;
        ensure!(
            checked["status"] == "ready",
            "server {} is not ready after its check: {checked}",
            h.addr()
        );
        server_ids.push(id);
    }
    println!(
        "{} servers added and checked (ready) through the API in {:.2} s",
        server_ids.len(),
        t.elapsed().as_secs_f64()
    );

    single(args, net, openssh, &api, &server_ids[0]).await?;
    server.ensure_running()?;
    let before = server.memory()?;
    many(args, net, &api, &server_ids, server, before).await
}

// ---------------------------------------------------------------- (a) one deploy

#[derive(Debug, Default, Clone, Copy)]
struct ManualTimes {
    start: Duration,
    healthy: Duration,
    retire: Duration,
}

impl ManualTimes {
    fn total(&self) -> Duration {
        self.start + self.healthy + self.retire
    }
}

async fn single(
    args: &Args,
    net: &TestNet,
    openssh: &OpenSsh,
    api: &Api,
    server_id: &str,
) -> anyhow::Result<()> {
    let host = net.host(0);
    let addr = host.addr();
    report::heading(&format!(
        "(a) one deploy of a busybox httpd service with 2 env vars on {addr}: ServOS against ssh + docker by hand, {} interleaved rounds",
        args.rounds
    ));
    let svc = api
        .post(
            "/api/v1/services",
            &json!({
                "name": "bench-single",
                "image": IMAGE,
                "servers": [server_id],
                "command": args.command(),
            }),
        )
        .await?;
    let svc_id = id_of(&svc, "POST /api/v1/services")?;
    api.put(
        &format!("/api/v1/services/{svc_id}/env"),
        &json!({ "vars": { "API_KEY": "bench-secret-value-1", "GREETING": "hello world" } }),
    )
    .await?;

    tokio::task::block_in_place(|| openssh.start_master(addr))?;
    ssh_run(
        openssh,
        addr,
        &format!(
            "docker network create {MANUAL_NETWORK} >/dev/null && mkdir -p -m 0700 {MANUAL_DIR}"
        ),
        None,
    )
    .await?;
    println!(
        "ServOS: POST /api/v1/services/{{id}}/deployments, then GET /api/v1/deployments/{{id}} every {} ms until succeeded \
         (service without a port: its health check is \"running for min_uptime\", no probe)",
        API_POLL.as_millis()
    );
    println!(
        "by hand: {}",
        openssh.describe(addr, Mux::ControlMaster, "<each step>")
    );
    println!(
        "  1. `umask 077 && cat > {MANUAL_DIR}/<uuid>.env` (env through stdin)  2. `docker run -d --name … --network {MANUAL_NETWORK} \
         --env-file … --restart unless-stopped -- {IMAGE} {}`  3. `rm -f` the env file",
        shell_words(args.command())
    );
    println!(
        "  4. `docker inspect --format {{{{.State.Status}}}}` every {} ms until it has been running {} s  \
         5. `docker stop --time {STOP_SECONDS}` + `docker rm -f` the previous container",
        POLL_INTERVAL.as_millis(),
        MIN_UPTIME.as_secs()
    );
    println!(
        "fairness: same image, command and env in both; the wait in step 4 is servos-deploy's DeploySettings::default() (min_uptime {} s, poll_interval {} ms), \
         and step 5 is the same retirement ServOS does (docker stop --time {STOP_SECONDS}, then rm -f); ServOS additionally \
         inspects the image, ensures its network and lists old containers, each over SSH, and records every step in its database",
        MIN_UPTIME.as_secs(),
        POLL_INTERVAL.as_millis()
    );

    // Warm-up: one deploy per method, so that every measured round replaces a container.
    let mut manual_prev: Option<String> = None;
    let mut n = 0usize;
    let w_servos = servos_deploy(api, &svc_id).await?;
    let (w_manual, name) = manual_deploy(openssh, addr, args.command(), n, manual_prev.take()).await?;
    manual_prev = Some(name);
    n += 1;
    println!(
        "warm-up (first deploys, no previous container; not counted): ServOS {:.2} s, by hand {:.2} s",
        w_servos.as_secs_f64(),
        w_manual.total().as_secs_f64()
    );

    let mut servos = Vec::new();
    let mut manual: Vec<ManualTimes> = Vec::new();
    for round in 0..args.rounds {
        let servos_first = round % 2 == 0;
        for step in 0..2 {
            if (step == 0) == servos_first {
                servos.push(servos_deploy(api, &svc_id).await?);
            } else {
                let (times, name) = manual_deploy(openssh, addr, args.command(), n, manual_prev.take()).await?;
                manual_prev = Some(name);
                n += 1;
                manual.push(times);
            }
        }
        println!(
            "round {}: ServOS {:.3} s, by hand {:.3} s (start {:.3} s, healthy wait {:.3} s, retire {:.3} s)",
            round + 1,
            servos[round].as_secs_f64(),
            manual[round].total().as_secs_f64(),
            manual[round].start.as_secs_f64(),
            manual[round].healthy.as_secs_f64(),
            manual[round].retire.as_secs_f64(),
        );
    }
    let running = host.docker_cli(&["ps", "--format", "{{.Names}}"])?;
    let running = String::from_utf8_lossy(&running.stdout).into_owned();
    ensure!(
        running.lines().filter(|l| l.starts_with("servos-bench-single-")).count() == 1
            && running.lines().filter(|l| l.starts_with("bench-manual-")).count() == 1,
        "expected exactly one container per method after the rounds, docker ps shows:\n{running}"
    );
    let left = host.exec("ls -A /var/lib/servos/secrets; ls -A /var/lib/servos-bench-manual")?;
    ensure!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "env files left on the host: {}",
        String::from_utf8_lossy(&left.stdout)
    );
    println!("checked: one container per method running, no env file left on the host");

    let secs = |v: &[Duration]| v.iter().map(Duration::as_secs_f64).collect::<Vec<_>>();
    let s = secs(&servos);
    let m = secs(&manual.iter().map(ManualTimes::total).collect::<Vec<_>>());
    let (ms_, mm) = (median(&s), median(&m));
    let ratio = ms_ / mm;
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.3}"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let mut table = Table::new(["method", "median", "rounds (s)", "min", "max"]);
    for (label, v, med) in [
        ("ServOS (API, queued job, until succeeded)", &s, ms_),
        ("ssh + docker by hand (ControlMaster)", &m, mm),
    ] {
        table.row([
            label.to_owned(),
            format!("{med:.3} s"),
            fmt(v),
            format!("{:.3} s", v.iter().copied().fold(f64::INFINITY, f64::min)),
            format!("{:.3} s", v.iter().copied().fold(0.0, f64::max)),
        ]);
    }
    println!();
    table.print();
    let hand_start = median(&secs(&manual.iter().map(|t| t.start).collect::<Vec<_>>()));
    let hand_wait = median(&secs(&manual.iter().map(|t| t.healthy).collect::<Vec<_>>()));
    let hand_retire = median(&secs(&manual.iter().map(|t| t.retire).collect::<Vec<_>>()));
    println!(
        "by hand, medians per part: start (env file, docker run, rm) {hand_start:.3} s, healthy wait {hand_wait:.3} s, \
         retire {hand_retire:.3} s; ServOS overhead over by hand {:.3} s",
        ms_ - mm
    );
    println!(
        "ratio ServOS / by hand = {ratio:.3}  ({})",
        RATIO_GOAL.verdict(ratio, "×")
    );
    report::summary(format!(
        "deploy (a): one deploy{}, median of {}: ServOS {ms_:.3} s, by hand {mm:.3} s; ratio {ratio:.3} [{}]",
        if args.plain_httpd { " (plain httpd as PID 1: docker stop waits 10 s)" } else { "" },
        args.rounds,
        RATIO_GOAL.verdict(ratio, "×")
    ));
    Ok(())
}

/// One ServOS deploy through the API, from the POST until the job reads `succeeded`.
async fn servos_deploy(api: &Api, service_id: &str) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let dep = api.queue_deploy(service_id).await?;
    let deadline = t + DEPLOY_TIMEOUT;
    loop {
        if let Some(d) = api.finished(&dep).await? {
            let elapsed = t.elapsed();
            ensure!(
                d["status"] == "succeeded",
                "ServOS deployment {dep} ended {}: {}",
                d["status"],
                d["error"]
            );
            return Ok(elapsed);
        }
        if Instant::now() > deadline {
            bail!("ServOS deployment {dep} did not finish within {DEPLOY_TIMEOUT:?}");
        }
        tokio::time::sleep(API_POLL).await;
    }
}

/// The same deploy by hand: one `ssh` command per step through the ControlMaster.
async fn manual_deploy(
    openssh: &OpenSsh,
    addr: Ipv4Addr,
    command: &[&str],
    n: usize,
    previous: Option<String>,
) -> anyhow::Result<(ManualTimes, String)> {
    let name = format!("bench-manual-{n}");
    let mut id = [0u8; 8];
    servos_core::random::fill(&mut id).map_err(|e| anyhow::anyhow!("random: {e}"))?;
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let env_file = format!("{MANUAL_DIR}/{id}.env");
    let mut times = ManualTimes::default();
    let t = Instant::now();
    ssh_run(
        openssh,
        addr,
        &format!("umask 077 && cat > {env_file}"),
        Some(ENV_FILE),
    )
    .await?;
    let ran = ssh_run(
        openssh,
        addr,
        &format!(
            "docker run -d --name {name} --network {MANUAL_NETWORK} --env-file {env_file} \
             --restart unless-stopped -- {IMAGE} {}",
            shell_words(command)
        ),
        None,
    )
    .await;
    let removed = ssh_run(openssh, addr, &format!("rm -f -- {env_file}"), None).await;
    ran?;
    removed?;
    times.start = t.elapsed();

    let t = Instant::now();
    let deadline = t + DEPLOY_TIMEOUT;
    let mut since: Option<Instant> = None;
    loop {
        let state = ssh_run(
            openssh,
            addr,
            &format!("docker inspect --type container --format '{{{{.State.Status}}}}' -- {name}"),
            None,
        )
        .await?;
        match state.trim() {
            "running" => {
                if since.get_or_insert_with(Instant::now).elapsed() >= MIN_UPTIME {
                    break;
                }
            }
            "created" => {}
            other => bail!("by hand: {name} is {other}"),
        }
        ensure!(Instant::now() < deadline, "by hand: {name} never became healthy");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    times.healthy = t.elapsed();

    let t = Instant::now();
    if let Some(old) = previous {
        ssh_run(
            openssh,
            addr,
            &format!("docker stop --time {STOP_SECONDS} -- {old} >/dev/null"),
            None,
        )
        .await?;
        ssh_run(openssh, addr, &format!("docker rm -f -- {old} >/dev/null"), None).await?;
    }
    times.retire = t.elapsed();
    Ok((times, name))
}

/// Runs `remote` on `addr` through the ControlMaster, `stdin` fed to it; returns stdout.
async fn ssh_run(
    openssh: &OpenSsh,
    addr: Ipv4Addr,
    remote: &str,
    stdin: Option<&str>,
) -> anyhow::Result<String> {
    let mut cmd = tokio::process::Command::from(openssh.command(addr, Mux::ControlMaster, remote));
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let mut child = cmd.spawn().context("run ssh")?;
    if let Some(input) = stdin {
        use tokio::io::AsyncWriteExt as _;
        let mut pipe = child.stdin.take().context("ssh stdin")?;
        pipe.write_all(input.as_bytes()).await.context("write to ssh stdin")?;
        drop(pipe);
    }
    let out = tokio::time::timeout(DEPLOY_TIMEOUT, child.wait_with_output())
        .await
        .context("ssh command timed out")?
        .context("wait for ssh")?;
    ensure!(
        out.status.success(),
        "ssh {addr} `{remote}`: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// ---------------------------------------------------------------- (b) many at once

async fn many(
    args: &Args,
    net: &TestNet,
    api: &Api,
    server_ids: &[String],
    server: &mut ServerProcess,
    before: Memory,
) -> anyhow::Result<()> {
    report::heading(&format!(
        "(b) {} services over {} hosts, all queued at once through the API",
        args.services,
        server_ids.len()
    ));
    let mut services = Vec::new();
    for i in 0..args.services {
        let svc = api
            .post(
                "/api/v1/services",
                &json!({
                    "name": format!("bench-many-{i:02}"),
                    "image": IMAGE,
                    "servers": [server_ids[i % server_ids.len()]],
                    "command": args.command(),
                }),
            )
            .await?;
        let id = id_of(&svc, "POST /api/v1/services")?;
        api.put(
            &format!("/api/v1/services/{id}/env"),
            &json!({ "vars": { "API_KEY": format!("bench-secret-{i}"), "GREETING": "hello" } }),
        )
        .await?;
        services.push(id);
    }
    let created = server.memory()?;
    println!(
        "{} services created (with env); memory before queueing: VmRSS {}, VmHWM {} (VmHWM so far includes part (a))",
        services.len(),
        mib(created.rss_kib),
        mib(created.hwm_kib)
    );

    // Reset VmHWM to the current RSS (Linux clear_refs 5), so the peak below is (b)'s own.
    let reset = std::fs::write(format!("/proc/{}/clear_refs", server.pid()), "5");
    let reset_hwm = reset.is_ok();
    if let Err(e) = reset {
        println!("note: cannot reset VmHWM ({e}); the peak below includes setup and part (a)");
    }
    let t = Instant::now();
    let mut pending = Vec::new();
    for id in &services {
        pending.push(api.queue_deploy(id).await?);
    }
    let queued = t.elapsed();
    let deadline = t + Duration::from_secs(180);
    let mut done: Vec<Duration> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    let mut max_rss = 0u64;
    while !pending.is_empty() {
        let mut still = Vec::new();
        for dep in pending {
            match api.finished(&dep).await? {
                Some(d) if d["status"] == "succeeded" => done.push(t.elapsed()),
                Some(d) => failed.push(format!("{dep}: {} {}", d["status"], d["error"])),
                None => still.push(dep),
            }
        }
        pending = still;
        max_rss = max_rss.max(server.memory()?.rss_kib);
        if pending.is_empty() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{} deployments still unfinished after 180 s",
            pending.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = t.elapsed();
    let end = server.memory()?;
    let mut running = 0;
    for h in net.hosts() {
        let out = h.docker_cli(&["ps", "--format", "{{.Names}}"])?;
        running += String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("servos-bench-many-"))
            .count();
    }
    done.sort();
    let first = done.first().copied().unwrap_or_default();
    println!(
        "queued {} deployments in {:.3} s; first succeeded after {:.3} s, last after {:.3} s; {} succeeded, {} failed; \
         {running} bench-many containers running on the hosts",
        services.len(),
        queued.as_secs_f64(),
        first.as_secs_f64(),
        total.as_secs_f64(),
        done.len(),
        failed.len()
    );
    for f in failed.iter().take(5) {
        println!("failed: {f}");
    }
    let mut mem = Table::new(["memory (servos serve)", "VmRSS", "VmHWM"]);
    mem.row(["after part (a)".to_owned(), mib(before.rss_kib), mib(before.hwm_kib)]);
    mem.row(["30 services created, before queueing".to_owned(), mib(created.rss_kib), mib(created.hwm_kib)]);
    mem.row([
        if reset_hwm {
            "all deployments finished (VmHWM reset before queueing: peak during (b))".to_owned()
        } else {
            "all deployments finished".to_owned()
        },
        mib(end.rss_kib),
        mib(end.hwm_kib),
    ]);
    mem.row(["max VmRSS sampled every ~100 ms during (b)".to_owned(), mib(max_rss), String::new()]);
    println!();
    mem.print();
    println!(
        "note: each deploy waits at least min_uptime = {} s for health, and the runner runs at most {} jobs at once \
         (servos-deploy's DEFAULT_CONCURRENCY), so {} jobs take about {} waves; the lifetime VmHWM before (b) comes from \
         setup and part (a)",
        MIN_UPTIME.as_secs(),
        RUNNER_CONCURRENCY,
        services.len(),
        services.len().div_ceil(RUNNER_CONCURRENCY)
    );
    report::summary(format!(
        "deploy (b): {} services on {} hosts: all done in {:.2} s ({} succeeded, {} failed); serve peak VmHWM during (b) {}, lifetime VmHWM before (b) {}, VmRSS at end {}",
        services.len(),
        server_ids.len(),
        total.as_secs_f64(),
        done.len(),
        failed.len(),
        mib(end.hwm_kib),
        mib(created.hwm_kib),
        mib(end.rss_kib)
    ));
    ensure!(failed.is_empty(), "{} deployments failed", failed.len());
    Ok(())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
