//! `transfer` (issue 5): moving a built image from a builder to a server without a
//! registry. ServOS streams `docker save` on the builder through the control plane into
//! `docker load` on the server (`servos_deploy::build::pipe_image`, two SSH hops, nothing
//! written to the control plane's disk) against the same by hand, builder straight to
//! server: `docker save IMAGE | ssh root@server docker load` run on the builder (one hop).
//! Same image (a random, incompressible layer), same hosts, interleaved rounds, the image
//! removed from the server before every round; median and ratio.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use servos_core::Secret;
use servos_ssh::{HostKeyPolicy, Session, Target, Timeouts};
use servos_testkit::{TestHost, TestNet};

use crate::report::{self, Goal, Table};
use crate::stats::median;

/// Issue 5: through the control plane at most 1.2× builder → server by hand.
const RATIO_GOAL: Goal = Goal::AtMost(1.2);
const BASE: &str = "servos-bench/busybox:1";
const IMAGE: &str = "servos-bench/transfer:1";
/// Where the manual method's private key lives, as seen inside the builder host.
const KEY_INSIDE: &str = "/run/testhost/bench_transfer_key";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Size of the image's random layer, in MiB.
    #[arg(long, default_value_t = 80)]
    mib: u64,
    /// Measured interleaved rounds, after one warm-up per method.
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    /// Leave the machine's /root/.bashrc visible on the test hosts (see the `ssh` benchmark).
    #[arg(long)]
    keep_root_bashrc: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    ensure!(
        args.rounds > 0 && args.mib > 0,
        "rounds and mib must be at least 1"
    );
    let started = Instant::now();
    let net =
        TestNet::builder().hosts(2).with_docker().build().context(
            "build the test hosts with dockerd (run scripts/install-test-deps.sh as root)",
        )?;
    let (builder, server) = (net.host(0), net.host(1));
    for h in net.hosts() {
        if !args.keep_root_bashrc {
            crate::ssh::hide_root_bashrc(h)?;
        }
    }
    builder.import_busybox_image(BASE)?;
    make_image(builder, args.mib)?;
    let size = image_size(builder)?;
    println!(
        "transfer: builder {} and server {} with dockerd, image {IMAGE} ({:.1} MiB as saved) ready in {:.1} s; load average {}",
        builder.addr(),
        server.addr(),
        size as f64 / (1024.0 * 1024.0),
        started.elapsed().as_secs_f64(),
        report::load_average()
    );
    let pair = servos_ssh::keys::generate_ed25519("servos-bench-transfer")?;
    builder.authorize(&pair.public_line)?;
    server.authorize(&pair.public_line)?;
    install_manual_key(builder, &pair.private_openssh)?;

    let rt = crate::runtime()?;
    rt.block_on(async {
        let source = connect(builder, &pair.private_openssh).await?;
        let target = Arc::new(connect(server, &pair.private_openssh).await?);
        let targets = vec![("server".to_owned(), Arc::clone(&target))];
        let mut servos = Vec::new();
        let mut manual = Vec::new();
        for round in 0..=args.rounds {
            remove_image(server)?;
            let t = Instant::now();
            let moved = servos_deploy::build::pipe_image("builder", &source, IMAGE, &targets)
                .await
                .map_err(|(host, reason)| {
                    anyhow::anyhow!("ServOS transfer failed on {host}: {reason}")
                })?;
            let servos_time = t.elapsed();
            check_loaded(server)?;
            remove_image(server)?;
            let t = Instant::now();
            manual_transfer(builder, server)?;
            let manual_time = t.elapsed();
            check_loaded(server)?;
            if round == 0 {
                println!(
                    "warm-up: ServOS {:.2} s ({moved} bytes), by hand {:.2} s",
                    servos_time.as_secs_f64(),
                    manual_time.as_secs_f64()
                );
                continue;
            }
            servos.push(servos_time);
            manual.push(manual_time);
        }
        source.close().await;
        target.close().await;
        print_results(args, size, &servos, &manual);
        Ok(())
    })
}

fn print_results(args: &Args, size: u64, servos: &[Duration], manual: &[Duration]) {
    let mib = size as f64 / (1024.0 * 1024.0);
    let secs = |v: &[Duration]| v.iter().map(Duration::as_secs_f64).collect::<Vec<_>>();
    let (s, m) = (
        Duration::from_secs_f64(median(&secs(servos))),
        Duration::from_secs_f64(median(&secs(manual))),
    );
    report::heading(&format!(
        "image transfer builder → server, {mib:.1} MiB, {} interleaved rounds",
        args.rounds
    ));
    let mut table = Table::new(["method", "median", "throughput", "rounds (s)"]);
    for (name, d, all) in [
        ("ServOS: builder → control plane → server", s, servos),
        (
            "by hand: docker save | ssh server docker load (on the builder)",
            m,
            manual,
        ),
    ] {
        table.row([
            name.to_owned(),
            format!("{:.2} s", d.as_secs_f64()),
            format!("{:.0} MiB/s", mib / d.as_secs_f64().max(1e-9)),
            all.iter()
                .map(|d| format!("{:.2}", d.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(" "),
        ]);
    }
    table.print();
    let ratio = s.as_secs_f64() / m.as_secs_f64().max(1e-9);
    println!(
        "  ratio ServOS / by hand: {ratio:.2}×  ({})",
        RATIO_GOAL.verdict(ratio, "×")
    );
    println!(
        "  fairness: same image and hosts; the image is removed from the server before every round; \
         ServOS sessions are opened once (as the control plane's pool keeps them), the manual ssh \
         opens its connection inside its timed run; ServOS goes through two SSH hops (builder → \
         control plane → server), by hand one"
    );
    report::summary(format!(
        "transfer: {mib:.0} MiB image builder → server, ServOS {:.2} s vs by hand {:.2} s, ratio {ratio:.2}× ({})",
        s.as_secs_f64(),
        m.as_secs_f64(),
        RATIO_GOAL.verdict(ratio, "×")
    ));
}

async fn connect(host: &TestHost, key: &Secret<String>) -> anyhow::Result<Session> {
    let target = Target {
        host: host.addr().to_string(),
        port: host.ssh_port(),
        user: "root".to_owned(),
    };
    Session::connect(
        &target,
        key,
        None,
        HostKeyPolicy::Pin(host.host_key_fingerprint()?),
        Timeouts {
            command: Duration::from_secs(300),
            ..Timeouts::default()
        },
    )
    .await
    .with_context(|| format!("ServOS connect to {target}"))
}

/// An image with one layer of `mib` MiB of random bytes on top of busybox.
fn make_image(builder: &TestHost, mib: u64) -> anyhow::Result<()> {
    let script = format!(
        "docker rm -f mk >/dev/null 2>&1; docker run --name mk {BASE} sh -c 'head -c {bytes} /dev/urandom > /blob' && \
         docker commit mk {IMAGE} >/dev/null && docker rm mk >/dev/null",
        bytes = mib * 1024 * 1024
    );
    let out = builder.exec(&script)?;
    if !out.status.success() {
        bail!("making {IMAGE}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn image_size(builder: &TestHost) -> anyhow::Result<u64> {
    let out = builder.exec(&format!("docker save {IMAGE} | wc -c"))?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("size of the saved image")
}

fn install_manual_key(builder: &TestHost, key: &Secret<String>) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = builder.dir().join("bench_transfer_key");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("write {}", path.display()))?;
    f.write_all(key.expose().as_bytes())?;
    Ok(())
}

fn manual_transfer(builder: &TestHost, server: &TestHost) -> anyhow::Result<()> {
    let script = format!(
        "docker save {IMAGE} | ssh -i {KEY_INSIDE} -o BatchMode=yes \
         -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
         root@{} docker load --quiet",
        server.addr()
    );
    let out = builder.exec(&script)?;
    if !out.status.success() {
        bail!(
            "manual transfer failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn remove_image(server: &TestHost) -> anyhow::Result<()> {
    let _ = server.docker_cli(&["rmi", "-f", IMAGE])?;
    Ok(())
}

fn check_loaded(server: &TestHost) -> anyhow::Result<()> {
    let out = server.docker_cli(&["image", "inspect", "--format", "{{.Size}}", IMAGE])?;
    if !out.status.success() {
        bail!("the server does not have {IMAGE} after a transfer");
    }
    Ok(())
}
