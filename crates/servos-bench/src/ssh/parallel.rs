//! Part (b) of `ssh`: 100 commands spread over 5 hosts at once, wall time per method,
//! in interleaved rounds: ServOS with open sessions and from cold, OpenSSH with
//! ControlMaster sockets and with a full handshake per command.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use servos_core::Secret;
use servos_ssh::Session;
use servos_ssh::session::MAX_CONCURRENT_CHANNELS;

use super::{Args, GOAL, Host, connect, exec_true, join_all};
use crate::openssh::{Mux, OpenSsh};
use crate::report::{self, Table};
use crate::stats::{median, ms};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    ServosWarm,
    ServosCold,
    OpensshMaster,
    OpensshDirect,
}

impl Method {
    const ALL: [Method; 4] = [
        Method::ServosWarm,
        Method::OpensshMaster,
        Method::ServosCold,
        Method::OpensshDirect,
    ];

    fn label(self) -> &'static str {
        match self {
            Method::ServosWarm => "ServOS, one open session per host",
            Method::OpensshMaster => "OpenSSH, ControlMaster per host (masters up)",
            Method::ServosCold => "ServOS, connecting the sessions included",
            Method::OpensshDirect => "OpenSSH, no ControlMaster (full handshakes)",
        }
    }
}

pub(super) async fn run(
    args: &Args,
    hosts: &[Host],
    key: &Secret<String>,
    sessions: &[Arc<Session>],
    openssh: &OpenSsh,
) -> anyhow::Result<()> {
    let per_host = args.parallel.div_ceil(hosts.len());
    report::heading(&format!(
        "(b) {} × `true` at once over {} hosts (~{per_host} per host), {} interleaved rounds",
        args.parallel,
        hosts.len(),
        args.rounds
    ));
    println!(
        "ServOS runs at most {MAX_CONCURRENT_CHANNELS} commands at once per connection \
         (servos_ssh::session::MAX_CONCURRENT_CHANNELS); the rest wait for a channel"
    );
    println!(
        "OpenSSH without master: {}",
        openssh.describe(hosts[0].addr, Mux::Direct, "true")
    );
    let key = Arc::new(Secret::new(key.expose().clone()));
    let mut walls: [Vec<Duration>; 4] = Default::default();
    for round in 0..args.rounds {
        for k in 0..Method::ALL.len() {
            let i = (round + k) % Method::ALL.len();
            let wall = match Method::ALL[i] {
                Method::ServosWarm => servos_round(args.parallel, sessions).await?,
                Method::ServosCold => servos_cold_round(args.parallel, hosts, &key).await?,
                Method::OpensshMaster => {
                    openssh_round(args.parallel, hosts, openssh, Mux::ControlMaster).await?
                }
                Method::OpensshDirect => {
                    openssh_round(args.parallel, hosts, openssh, Mux::Direct).await?
                }
            };
            walls[i].push(wall);
        }
    }
    print_results(args.parallel, hosts.len(), &walls);
    Ok(())
}

/// Command `i` goes to host `i mod hosts`, on the open sessions.
async fn servos_round(parallel: usize, sessions: &[Arc<Session>]) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let tasks = (0..parallel)
        .map(|i| {
            let s = Arc::clone(&sessions[i % sessions.len()]);
            tokio::spawn(async move { exec_true(&s).await })
        })
        .collect();
    join_all(tasks).await?;
    Ok(t.elapsed())
}

/// Connects one session per host in parallel, then runs the commands; both are timed.
async fn servos_cold_round(
    parallel: usize,
    hosts: &[Host],
    key: &Arc<Secret<String>>,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let connecting: Vec<_> = hosts
        .iter()
        .map(|h| {
            let (h, key) = (h.clone(), Arc::clone(key));
            tokio::spawn(async move { connect(&h, &key).await })
        })
        .collect();
    let mut sessions = Vec::with_capacity(hosts.len());
    for c in connecting {
        sessions.push(Arc::new(c.await.context("connect task")??));
    }
    servos_round(parallel, &sessions).await?;
    let wall = t.elapsed();
    for s in &sessions {
        s.close().await;
    }
    Ok(wall)
}

/// Starts `parallel` ssh processes at once (host `i mod hosts`) and waits for all.
async fn openssh_round(
    parallel: usize,
    hosts: &[Host],
    openssh: &OpenSsh,
    mux: Mux,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let tasks = (0..parallel)
        .map(|i| {
            let addr = hosts[i % hosts.len()].addr;
            let mut cmd = tokio::process::Command::from(openssh.command(addr, mux, "true"));
            cmd.stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            tokio::spawn(async move {
                let out = cmd.output().await.context("run ssh")?;
                ensure!(
                    out.status.success(),
                    "ssh to {addr} failed: {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                Ok(())
            })
        })
        .collect();
    join_all(tasks).await?;
    Ok(t.elapsed())
}

fn print_results(parallel: usize, hosts: usize, walls: &[Vec<Duration>; 4]) {
    let secs = |i: usize| -> Vec<f64> { walls[i].iter().map(Duration::as_secs_f64).collect() };
    let med = |i: usize| median(&secs(i));
    let mut table = Table::new(["method", "median wall", "per command", "all rounds"]);
    for (i, m) in Method::ALL.iter().enumerate() {
        let all: Vec<String> = walls[i].iter().map(|d| ms(*d)).collect();
        table.row([
            m.label().to_owned(),
            ms(Duration::from_secs_f64(med(i))),
            ms(Duration::from_secs_f64(med(i) / parallel as f64)),
            all.join(", "),
        ]);
    }
    table.print();
    let warm = med(0) / med(1);
    let cold = med(2) / med(3);
    println!(
        "ratio ServOS open sessions / OpenSSH ControlMaster = {warm:.3}× ({}, issue 3 goal applied)",
        GOAL.verdict(warm, "×")
    );
    println!(
        "ratio ServOS incl. connect / OpenSSH full handshakes = {cold:.3}× ({}, issue 3 goal applied)",
        GOAL.verdict(cold, "×")
    );
    report::summary(format!(
        "ssh (b): {parallel} commands over {hosts} hosts, median wall: ServOS {} vs OpenSSH ControlMaster {} \
         = {warm:.3}× [{}]; ServOS incl. connect {} vs OpenSSH full handshakes {} = {cold:.3}× [{}]",
        ms(Duration::from_secs_f64(med(0))),
        ms(Duration::from_secs_f64(med(1))),
        GOAL.verdict(warm, "×"),
        ms(Duration::from_secs_f64(med(2))),
        ms(Duration::from_secs_f64(med(3))),
        GOAL.verdict(cold, "×"),
    ));
}
