//! The OpenSSH baseline: `ssh` command lines with and without a ControlMaster socket,
//! using the benchmark's own throwaway key, written 0600 into a private temp dir that is
//! deleted afterwards (together with the control sockets).

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::{Context as _, ensure};
use servos_core::Secret;
use tempfile::TempDir;

/// How an `ssh` invocation connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mux {
    /// `ControlMaster=auto` with a per-host socket and `ControlPersist=60`: the first
    /// call becomes the master, later calls open a channel on it.
    ControlMaster,
    /// `ControlMaster=no`, `ControlPath=none`: a full TCP + SSH handshake every time.
    Direct,
}

/// The key file, the control sockets, and the masters to stop at the end.
#[derive(Debug)]
pub struct OpenSsh {
    /// The private temp dir; `None` once [`OpenSsh::cleanup`] deleted it.
    dir: Option<TempDir>,
    root: PathBuf,
    key: PathBuf,
    masters: Mutex<Vec<Ipv4Addr>>,
}

impl OpenSsh {
    /// Writes `private` (the benchmark's throwaway key) to `<tempdir>/id_ed25519`,
    /// mode 0600 from creation; the temp dir itself is 0700.
    pub fn new(private: &Secret<String>) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("servos-bench-ssh-")
            .tempdir()
            .context("create a temp dir for the OpenSSH key")?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 0700 {}", dir.path().display()))?;
        let key = dir.path().join("id_ed25519");
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key)
            .with_context(|| format!("create {}", key.display()))?;
        f.write_all(private.expose().as_bytes())
            .and_then(|()| f.write_all(b"\n"))
            .with_context(|| format!("write {}", key.display()))?;
        Ok(Self {
            root: dir.path().to_owned(),
            dir: Some(dir),
            key,
            masters: Mutex::new(Vec::new()),
        })
    }

    /// `ssh … root@host <remote>`, stdin from /dev/null.
    pub fn command(&self, host: Ipv4Addr, mux: Mux, remote: &str) -> Command {
        let mut c = Command::new("ssh");
        c.args(self.args(host, mux))
            .arg(format!("root@{host}"))
            .arg(remote);
        c.stdin(Stdio::null());
        c
    }

    /// The command line as text, for the report.
    pub fn describe(&self, host: Ipv4Addr, mux: Mux, remote: &str) -> String {
        let mut words = vec!["ssh".to_owned()];
        words.extend(self.args(host, mux));
        words.push(format!("root@{host}"));
        words.push(remote.to_owned());
        words.join(" ")
    }

    /// Runs the first `ControlMaster` call to `host`, which starts the master. Its stderr
    /// goes to a file: the backgrounded master must not hold a pipe of ours open.
    pub fn start_master(&self, host: Ipv4Addr) -> anyhow::Result<()> {
        let log_path = self.root.join(format!("master-{host}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("create {}", log_path.display()))?;
        let status = self
            .command(host, Mux::ControlMaster, "true")
            .stdout(Stdio::null())
            .stderr(log)
            .status()
            .context("run ssh (is openssh-client installed?)")?;
        ensure!(
            status.success(),
            "ssh to {host} (starting the ControlMaster) failed: {status}: {}",
            std::fs::read_to_string(&log_path)
                .unwrap_or_default()
                .trim()
        );
        lock(&self.masters).push(host);
        Ok(())
    }

    /// Runs `ssh … true` and fails with its stderr unless it exits 0.
    pub fn run_true(&self, host: Ipv4Addr, mux: Mux) -> anyhow::Result<()> {
        let out = self
            .command(host, mux, "true")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .context("run ssh")?;
        ensure!(
            out.status.success(),
            "ssh to {host} failed: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }

    /// Stops the masters, deletes the key file and the temp dir, and says so.
    pub fn cleanup(mut self) -> anyhow::Result<()> {
        let masters = std::mem::take(&mut *lock(&self.masters));
        for host in masters {
            self.exit_master(host);
        }
        std::fs::remove_file(&self.key)
            .with_context(|| format!("delete {}", self.key.display()))?;
        let shown = self.root.display().to_string();
        if let Some(dir) = self.dir.take() {
            dir.close().with_context(|| format!("delete {shown}"))?;
        }
        println!("OpenSSH masters stopped; throwaway key file and {shown} deleted");
        Ok(())
    }

    fn exit_master(&self, host: Ipv4Addr) {
        let _ = Command::new("ssh")
            .args(["-F", "/dev/null", "-o"])
            .arg(format!("ControlPath={}", self.control_path(host).display()))
            .args(["-O", "exit"])
            .arg(format!("root@{host}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    fn control_path(&self, host: Ipv4Addr) -> PathBuf {
        self.root.join(format!("cm-{host}"))
    }

    fn args(&self, host: Ipv4Addr, mux: Mux) -> Vec<String> {
        let mut args: Vec<String> = [
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=10",
        ]
        .map(str::to_owned)
        .to_vec();
        match mux {
            Mux::ControlMaster => args.extend([
                "-o".to_owned(),
                "ControlMaster=auto".to_owned(),
                "-o".to_owned(),
                format!("ControlPath={}", self.control_path(host).display()),
                "-o".to_owned(),
                "ControlPersist=60".to_owned(),
            ]),
            Mux::Direct => {
                args.extend(["-o", "ControlMaster=no", "-o", "ControlPath=none"].map(str::to_owned))
            }
        }
        args.extend([
            "-i".to_owned(),
            self.key.display().to_string(),
            "-o".to_owned(),
            "StrictHostKeyChecking=no".to_owned(),
            "-o".to_owned(),
            "UserKnownHostsFile=/dev/null".to_owned(),
        ]);
        args
    }
}

impl Drop for OpenSsh {
    /// On an early error the masters are stopped too (ControlPersist would end them
    /// after 60 idle seconds anyway).
    fn drop(&mut self) {
        let masters = std::mem::take(&mut *lock(&self.masters));
        for host in masters {
            self.exit_master(host);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
