//! The `servos serve` child: a throwaway master key, a temporary data dir, a free port on
//! 127.0.0.1, its log in the temp dir, and what /proc says about its memory and CPU.

use std::fs::File;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use tempfile::TempDir;
use tokio::process::{Child, Command};

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `servos serve`; killed when dropped (and by [`ServerProcess::stop`]).
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    pid: u32,
    port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    /// Holds the data dir and the log; removed on drop.
    _dir: TempDir,
}

/// Resident memory from /proc/<pid>/status, in KiB.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

impl ServerProcess {
    pub async fn start(bin: &Path) -> anyhow::Result<Self> {
        ensure!(
            bin.is_file(),
            "{} not found: build it first with `cargo build --release -p servos`",
            bin.display()
        );
        let key = keygen(bin).await?;
        let dir = tempfile::Builder::new()
            .prefix("servos-bench-")
            .tempdir()
            .context("create a temp dir")?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 0700 {}", dir.path().display()))?;
        let data_dir = dir.path().join("data");
        let log = dir.path().join("serve.log");
        let log_file = File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let port = free_port()?;
        let child = Command::new(bin)
            .arg("serve")
            .env_remove("SERVOS_MASTER_KEY_FILE")
            .env_remove("SERVOS_DATABASE_URL")
            .env_remove("SERVOS_PUBLIC_URL")
            .env("SERVOS_MASTER_KEY", key)
            .env("SERVOS_DATA_DIR", &data_dir)
            .env("SERVOS_LISTEN", format!("127.0.0.1:{port}"))
            .env("SERVOS_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(
                log_file
                    .try_clone()
                    .context("duplicate the log file handle")?,
            )
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {} serve", bin.display()))?;
        let pid = child.id().context("servos serve exited at once")?;
        let mut server = Self {
            child,
            pid,
            port,
            data_dir,
            log,
            _dir: dir,
        };
        server.wait_healthy().await?;
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The single-use token the server wrote to `$SERVOS_DATA_DIR/setup_token`.
    pub fn setup_token(&self) -> anyhow::Result<String> {
        let path = self.data_dir.join("setup_token");
        let token =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        Ok(token.trim().to_owned())
    }

    /// Fails with the exit status and the server's log if the server is gone.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait().context("wait for servos serve")? {
            bail!(
                "servos serve exited ({status}) during the benchmark; its log:\n{}",
                self.log_text()
            );
        }
        Ok(())
    }

    pub fn memory(&mut self) -> anyhow::Result<Memory> {
        self.ensure_running()?;
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{path}: no {name} line"))
        };
        Ok(Memory {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
        })
    }

    pub async fn stop(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }

    /// Polls `GET /healthz` until it answers 200, failing with the server's log if the
    /// process exits or [`READY_TIMEOUT`] passes.
    async fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(500))
            .build()
            .context("build HTTP client")?;
        let url = format!("{}/healthz", self.base_url());
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().context("wait for servos serve")? {
                bail!(
                    "servos serve exited ({status}) before it was healthy; its log:\n{}",
                    self.log_text()
                );
            }
            if http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "servos serve did not answer {url} within {} s; its log:\n{}",
                    READY_TIMEOUT.as_secs(),
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A fresh master key from `servos keygen`: this benchmark's own, thrown away after.
async fn keygen(bin: &Path) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .arg("keygen")
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("run {} keygen", bin.display()))?;
    ensure!(
        out.status.success(),
        "{} keygen: {}: {}",
        bin.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let key = String::from_utf8(out.stdout).context("servos keygen printed non-UTF-8")?;
    Ok(key.trim().to_owned())
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .context("bind 127.0.0.1:0 to find a free port")?;
    Ok(listener.local_addr().context("local address")?.port())
}

/// User + system CPU seconds of a process (all its threads), from /proc/<pid>/stat;
/// 0 if it cannot be read.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the `(comm)`, which may contain spaces: state is field 3, utime 14.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ticks / clock_ticks()
}

/// `getconf CLK_TCK` (100 on Linux unless configured otherwise).
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t: &f64| *t > 0.0)
            .unwrap_or(100.0)
    })
}
