//! One test host: a network namespace plus a private mount namespace, running its own
//! sshd (and optionally its own dockerd).
//!
//! Inside the host, `/run` (so `/var/run`), `/tmp` and `/var/lib/servos` are private to it;
//! the rest of the file system is the test machine's. The host's state directory is
//! mounted at `/run/testhost` inside it. Its sshd offers exactly one host key, Ed25519, so
//! [`TestHost::host_key_fingerprint`] is the fingerprint every client sees.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cmd::{self, run};
use crate::{TestkitError, names};

/// Where the host's state directory appears inside its mount namespace.
const INSIDE_DIR: &str = "/run/testhost";
const HOST_KEY: &str = "ssh_host_ed25519_key";
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A test host. Built by [`crate::TestNet`]; torn down when the net is dropped.
#[derive(Debug)]
pub struct TestHost {
    slot: u8,
    index: usize,
    name: String,
    dir: PathBuf,
    sshd: Mutex<Option<Child>>,
    dockerd: Mutex<Option<Child>>,
}

impl TestHost {
    /// Creates the namespaces, the veth into the bridge and the private mounts, then
    /// starts sshd (and dockerd if asked) and waits until they answer.
    pub(crate) fn create(slot: u8, index: usize, docker: bool) -> Result<Self, TestkitError> {
        let host = Self {
            slot,
            index,
            name: names::host(slot, index),
            dir: names::host_dir(slot, index),
            sshd: Mutex::new(None),
            dockerd: Mutex::new(None),
        };
        host.prepare_dir()?;
        host.create_network()?;
        host.create_mount_namespace()?;
        host.start()?;
        if docker {
            host.start_dockerd()?;
        }
        Ok(host)
    }

    /// The namespace name, e.g. `svt3h0`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host's address on the test bridge; the test process reaches it directly.
    pub fn addr(&self) -> Ipv4Addr {
        names::host_addr(self.slot, self.index)
    }

    /// The port sshd listens on.
    pub fn ssh_port(&self) -> u16 {
        22
    }

    /// `addr():ssh_port()`.
    pub fn ssh_addr(&self) -> SocketAddr {
        SocketAddr::from((self.addr(), self.ssh_port()))
    }

    /// The host's state directory on the test machine (sshd config, keys, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds a public key line to root's authorized keys on this host.
    pub fn authorize(&self, public_line: &str) -> Result<(), TestkitError> {
        let path = self.dir.join("authorized_keys");
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(TestkitError::io(format!("open {}", path.display())))?;
        writeln!(f, "{}", public_line.trim())
            .map_err(TestkitError::io(format!("write {}", path.display())))
    }

    /// The SHA256 fingerprint of the host key, as `ssh-keygen -lf` prints it.
    pub fn host_key_fingerprint(&self) -> Result<String, TestkitError> {
        let public = self.dir.join(format!("{HOST_KEY}.pub"));
        let out = run("ssh-keygen", &["-lf", &path_str(&public)?])?;
        // "256 SHA256:abc… comment (ED25519)"
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .nth(1)
            .map(str::to_owned)
            .ok_or_else(|| TestkitError::Command {
                command: format!("ssh-keygen -lf {}", public.display()),
                status: "unexpected output".to_owned(),
                stderr: text.into_owned(),
            })
    }

    /// The host key as a public key line (`ssh-ed25519 AAAA…`), e.g. for a known_hosts file.
    pub fn host_key_public_line(&self) -> Result<String, TestkitError> {
        let public = self.dir.join(format!("{HOST_KEY}.pub"));
        let line = fs::read_to_string(&public)
            .map_err(TestkitError::io(format!("read {}", public.display())))?;
        Ok(line
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" "))
    }

    /// Starts sshd if it is not running and waits until it accepts TCP connections.
    pub fn start(&self) -> Result<(), TestkitError> {
        let mut sshd = lock(&self.sshd);
        if sshd
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
        {
            return Ok(());
        }
        let config = format!("{INSIDE_DIR}/sshd_config");
        let log = self.log_file("sshd.log")?;
        let child = self
            .command_inside("/usr/sbin/sshd", &["-D", "-e", "-f", &config])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(TestkitError::io(format!("start sshd on {}", self.name)))?;
        *sshd = Some(child);
        self.wait_ready("sshd", "sshd.log", sshd.as_mut(), || {
            TcpStream::connect_timeout(&self.ssh_addr(), Duration::from_millis(200)).is_ok()
        })
    }

    /// Stops the sshd listener: new connections are refused. Established sessions live
    /// on, as with a real `systemctl stop ssh`.
    pub fn stop(&self) -> Result<(), TestkitError> {
        if let Some(mut child) = lock(&self.sshd).take() {
            let _ = child.kill();
            child
                .wait()
                .map_err(TestkitError::io(format!("wait for sshd on {}", self.name)))?;
        }
        Ok(())
    }

    /// Kills every established SSH session on the host (the listener stays up), as when a
    /// server drops connections: clients see their connection closed.
    pub fn kill_ssh_sessions(&self) -> Result<(), TestkitError> {
        let listener = lock(&self.sshd).as_ref().map(Child::id);
        let out = run("ip", &["netns", "pids", &self.name])?;
        let sessions: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .filter(|pid| Some(*pid) != listener)
            .filter(|pid| {
                fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"sshd: "))
            })
            .map(|pid| pid.to_string())
            .collect();
        if sessions.is_empty() {
            return Ok(());
        }
        let mut args = vec!["-9"];
        args.extend(sessions.iter().map(String::as_str));
        run("kill", &args).map(drop)
    }

    /// Takes the host off the network: its link goes down, packets to it are dropped
    /// silently (no ARP failure, no RST), so clients see timeouts, as with a dead host.
    pub fn cut_off(&self) -> Result<(), TestkitError> {
        run("ip", &["link", "set", &self.name, "down"]).map(drop)
    }

    /// Undoes [`TestHost::cut_off`].
    pub fn restore(&self) -> Result<(), TestkitError> {
        run("ip", &["link", "set", &self.name, "up"]).map(drop)
    }

    /// Generates a new host key and restarts sshd with it; returns the new fingerprint.
    pub fn replace_host_key(&self) -> Result<String, TestkitError> {
        self.stop()?;
        self.generate_host_key()?;
        self.start()?;
        self.host_key_fingerprint()
    }

    /// Runs `sh -c script` inside the host's namespaces, as root, and returns its output
    /// whatever the exit status.
    pub fn exec(&self, script: &str) -> Result<Output, TestkitError> {
        self.command_inside("sh", &["-c", script])
            .stdin(Stdio::null())
            .output()
            .map_err(TestkitError::io(format!("run `{script}` on {}", self.name)))
    }

    /// Runs the docker CLI against this host's dockerd and returns its output.
    pub fn docker_cli(&self, args: &[&str]) -> Result<Output, TestkitError> {
        if lock(&self.dockerd).is_none() {
            return Err(TestkitError::NoDocker {
                host: self.name.clone(),
            });
        }
        self.command_inside("docker", args)
            .stdin(Stdio::null())
            .output()
            .map_err(TestkitError::io(format!(
                "run docker {args:?} on {}",
                self.name
            )))
    }

    /// Imports an image `tag` whose root file system holds Debian's static busybox
    /// (`/bin/sh`, `nc`, `httpd`, …). No registry is reachable from tests; this is how a
    /// test gets an image. Busybox's `wget` crashes on these machines: use `nc`/`httpd`.
    pub fn import_busybox_image(&self, tag: &str) -> Result<(), TestkitError> {
        let rootfs = self.dir.join("busybox-rootfs");
        let bin = rootfs.join("bin");
        fs::create_dir_all(&bin).map_err(TestkitError::io(format!("create {}", bin.display())))?;
        let busybox = cmd::find_program("busybox").ok_or_else(|| TestkitError::MissingTool {
            tool: "busybox".to_owned(),
            purpose: "test images".to_owned(),
        })?;
        fs::copy(&busybox, bin.join("busybox")).map_err(TestkitError::io("copy busybox"))?;
        let script = format!(
            "cd {inside}/busybox-rootfs && for a in $(bin/busybox --list); do \
             [ -e bin/$a ] || ln -s busybox bin/$a; done && mkdir -p tmp etc && \
             tar -c . | docker import - {tag}",
            inside = INSIDE_DIR,
            tag = tag,
        );
        let out = self.exec(&script)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(TestkitError::Command {
                command: script,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        }
    }

    /// Kills the host's daemons (the rest goes with the namespace teardown).
    pub(crate) fn kill_daemons(&self) {
        for daemon in [&self.dockerd, &self.sshd] {
            if let Some(mut child) = lock(daemon).take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// A command that runs `program args…` inside the host's mount and network namespaces.
    fn command_inside(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--mount={}", names::mnt_file(&self.name).display()))
            .arg(format!("--net={}", names::netns_path(&self.name)))
            .arg("--")
            .arg(program)
            .args(args);
        c
    }

    fn prepare_dir(&self) -> Result<(), TestkitError> {
        let var_lib = self.dir.join("var-lib-servos");
        fs::create_dir_all(&var_lib)
            .map_err(TestkitError::io(format!("create {}", var_lib.display())))?;
        let keys = self.dir.join("authorized_keys");
        fs::write(&keys, "").map_err(TestkitError::io(format!("create {}", keys.display())))?;
        self.generate_host_key()?;
        let config = sshd_config(self.addr(), self.ssh_port());
        let path = self.dir.join("sshd_config");
        fs::write(&path, config).map_err(TestkitError::io(format!("write {}", path.display())))
    }

    fn generate_host_key(&self) -> Result<(), TestkitError> {
        let key = self.dir.join(HOST_KEY);
        let _ = fs::remove_file(&key);
        let _ = fs::remove_file(key.with_extension("pub"));
        let comment = format!("root@{}", self.name);
        run(
            "ssh-keygen",
            &[
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                &comment,
                "-f",
                &path_str(&key)?,
            ],
        )
        .map(drop)
    }

    fn create_network(&self) -> Result<(), TestkitError> {
        let (name, bridge) = (&self.name, names::bridge(self.slot));
        let mac = names::host_mac(self.slot, self.index);
        let cidr = format!("{}/24", self.addr());
        let gateway = names::gateway(self.slot).to_string();
        run("ip", &["netns", "add", name])?;
        run(
            "ip",
            &[
                "link", "add", name, "type", "veth", "peer", "name", "eth0", "address", &mac,
                "netns", name,
            ],
        )?;
        run("ip", &["link", "set", name, "master", &bridge, "up"])?;
        run("ip", &["-n", name, "addr", "add", &cidr, "dev", "eth0"])?;
        run("ip", &["-n", name, "link", "set", "eth0", "up"])?;
        run("ip", &["-n", name, "link", "set", "lo", "up"])?;
        run(
            "ip",
            &["-n", name, "route", "add", "default", "via", &gateway],
        )?;
        // A permanent neighbour entry: with the link cut, packets are dropped silently and
        // connections time out, instead of failing fast on ARP with "no route to host".
        run(
            "ip",
            &[
                "neigh",
                "replace",
                &self.addr().to_string(),
                "lladdr",
                &mac,
                "dev",
                &bridge,
                "nud",
                "permanent",
            ],
        )
        .map(drop)
    }

    /// Creates the host's persistent mount namespace (a bind mount of its ns file under
    /// /run/servos-testkit/mnt) with private /run, /tmp and /var/lib/servos.
    fn create_mount_namespace(&self) -> Result<(), TestkitError> {
        let handle = names::mnt_file(&self.name);
        fs::write(&handle, "").map_err(TestkitError::io(format!("create {}", handle.display())))?;
        fs::create_dir_all("/var/lib/servos")
            .map_err(TestkitError::io("create /var/lib/servos"))?;
        let dir = path_str(&self.dir)?;
        // Order matters: bind the state dir before /var/tmp/servos-testkit is hidden.
        let script = format!(
            "set -e; \
             mount -t tmpfs -o mode=755 tmpfs /run; \
             mkdir -p /run/sshd {INSIDE_DIR}; \
             mount --bind {dir} {INSIDE_DIR}; \
             mount -t tmpfs -o mode=1777 tmpfs /tmp; \
             mount --bind {dir}/var-lib-servos /var/lib/servos; \
             mount -t tmpfs -o mode=700 tmpfs {disk}",
            disk = names::DISK_DIR,
        );
        let mount_arg = format!("--mount={}", handle.display());
        let net_arg = format!("--net={}", names::netns_path(&self.name));
        run(
            "nsenter",
            &[
                &net_arg,
                "--",
                "unshare",
                &mount_arg,
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
            ],
        )
        .map(drop)
    }

    fn start_dockerd(&self) -> Result<(), TestkitError> {
        let mut dockerd = lock(&self.dockerd);
        let log = self.log_file("dockerd.log")?;
        let data_root = format!("{INSIDE_DIR}/docker");
        let parent = names::cgroup_parent(&self.name);
        let child = self
            .command_inside(
                "dockerd",
                &[
                    "--data-root",
                    &data_root,
                    "--exec-root",
                    "/run/docker",
                    "--pidfile",
                    "/run/docker.pid",
                    "-H",
                    "unix:///run/docker.sock",
                    "--exec-opt",
                    "native.cgroupdriver=cgroupfs",
                    "--cgroup-parent",
                    &parent,
                ],
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(TestkitError::io(format!("start dockerd on {}", self.name)))?;
        *dockerd = Some(child);
        self.wait_ready("dockerd", "dockerd.log", dockerd.as_mut(), || {
            self.command_inside("docker", &["version"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    }

    fn log_file(&self, name: &str) -> Result<fs::File, TestkitError> {
        let path = self.dir.join(name);
        OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(TestkitError::io(format!("open {}", path.display())))
    }

    /// Polls `ready` until it holds, failing early with the daemon's log if it exited.
    fn wait_ready(
        &self,
        daemon: &str,
        log: &str,
        mut child: Option<&mut Child>,
        ready: impl Fn() -> bool,
    ) -> Result<(), TestkitError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if ready() {
                return Ok(());
            }
            let exited = child
                .as_mut()
                .is_some_and(|c| !matches!(c.try_wait(), Ok(None)));
            if exited || Instant::now() > deadline {
                return Err(TestkitError::NotReady {
                    daemon: daemon.to_owned(),
                    host: self.name.clone(),
                    seconds: READY_TIMEOUT.as_secs(),
                    log: fs::read_to_string(self.dir.join(log)).unwrap_or_default(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The sshd configuration: key-only root login, one Ed25519 host key, no DNS, generous
/// session limits so tests can open many channels on one connection.
fn sshd_config(addr: Ipv4Addr, port: u16) -> String {
    format!(
        "ListenAddress {addr}:{port}\n\
         HostKey {INSIDE_DIR}/{HOST_KEY}\n\
         HostKeyAlgorithms ssh-ed25519\n\
         PermitRootLogin prohibit-password\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n\
         AuthorizedKeysFile {INSIDE_DIR}/authorized_keys\n\
         StrictModes no\n\
         PidFile none\n\
         MaxSessions 100\n\
         MaxStartups 100:30:200\n\
         UseDNS no\n\
         LogLevel VERBOSE\n\
         Subsystem sftp internal-sftp\n"
    )
}

fn path_str(path: &Path) -> Result<String, TestkitError> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| TestkitError::Io {
            what: format!("path {} is not UTF-8", path.display()),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
