//! `TestNet`: a bridge on `10.250.X.0/24` with the root namespace at `.1`, and its hosts.
//! Dropping it removes everything it made, also when a test panics.

use std::fs;

use crate::cmd::{self, run};
use crate::host::TestHost;
use crate::slots::{self, Lock};
use crate::{TestkitError, names};

/// A set of test hosts on one private bridge. Build it with [`TestNet::new`] or
/// [`TestNet::builder`]; drop it to tear everything down.
#[derive(Debug)]
pub struct TestNet {
    slot: u8,
    hosts: Vec<TestHost>,
}

/// Options for a [`TestNet`].
#[derive(Debug, Clone)]
pub struct TestNetBuilder {
    hosts: usize,
    docker: bool,
}

impl TestNet {
    /// `n` hosts running sshd, no dockerd.
    pub fn new(hosts: usize) -> Result<Self, TestkitError> {
        Self::builder().hosts(hosts).build()
    }

    pub fn builder() -> TestNetBuilder {
        TestNetBuilder {
            hosts: 1,
            docker: false,
        }
    }

    /// Host `i` (0-based). Panics if out of range, like slice indexing.
    pub fn host(&self, i: usize) -> &TestHost {
        &self.hosts[i]
    }

    pub fn hosts(&self) -> &[TestHost] {
        &self.hosts
    }

    /// The root namespace's address on the bridge: where hosts see the test process.
    pub fn gateway(&self) -> std::net::Ipv4Addr {
        names::gateway(self.slot)
    }

    /// The bridge interface name, e.g. `svtbr3`.
    pub fn bridge(&self) -> String {
        names::bridge(self.slot)
    }
}

impl TestNetBuilder {
    /// Number of hosts (at most 250).
    pub fn hosts(mut self, n: usize) -> Self {
        self.hosts = n;
        self
    }

    /// Also start a private dockerd on every host.
    pub fn with_docker(mut self) -> Self {
        self.docker = true;
        self
    }

    pub fn build(self) -> Result<TestNet, TestkitError> {
        check_prerequisites(self.docker)?;
        let hosts = self.hosts.min(names::MAX_HOSTS);
        let slot = {
            let lock = Lock::acquire()?;
            slots::sweep(&lock);
            ensure_private_mnt_dir()?;
            slots::claim(&lock)?
        };
        // From here on, Drop cleans up whatever part of the net exists.
        let mut net = TestNet {
            slot,
            hosts: Vec::with_capacity(hosts),
        };
        net.create_bridge()?;
        for i in 0..hosts {
            net.hosts.push(TestHost::create(slot, i, self.docker)?);
        }
        Ok(net)
    }
}

impl TestNet {
    fn create_bridge(&self) -> Result<(), TestkitError> {
        let bridge = names::bridge(self.slot);
        let cidr = format!("{}/24", names::gateway(self.slot));
        fs::create_dir_all(names::slot_disk_dir(self.slot)).map_err(TestkitError::io(format!(
            "create {}",
            names::slot_disk_dir(self.slot).display()
        )))?;
        run(
            "ip",
            &[
                "link",
                "add",
                &bridge,
                "type",
                "bridge",
                "forward_delay",
                "0",
            ],
        )?;
        run("ip", &["addr", "add", &cidr, "dev", &bridge])?;
        run("ip", &["link", "set", &bridge, "up"]).map(drop)
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for host in &self.hosts {
            host.kill_daemons();
        }
        slots::teardown_slot(self.slot);
        slots::release(self.slot);
    }
}

/// Root and the tools, or a message saying what to install.
fn check_prerequisites(docker: bool) -> Result<(), TestkitError> {
    let uid = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Uid:")
                    .map(|u| u.split_whitespace().next().unwrap_or("").to_owned())
            })
        })
        .unwrap_or_default();
    if uid != "0" {
        return Err(TestkitError::NotRoot { uid });
    }
    let mut tools = vec![
        ("ip", "network namespaces (iproute2)"),
        ("sshd", "test hosts' SSH servers (openssh-server)"),
        ("ssh-keygen", "host keys (openssh-client)"),
        ("nsenter", "entering test hosts (util-linux)"),
        ("unshare", "private mount namespaces (util-linux)"),
    ];
    if docker {
        tools.extend([
            ("dockerd", "test hosts' docker daemons (docker.io)"),
            ("docker", "the docker CLI (docker.io)"),
        ]);
    }
    for (tool, purpose) in tools {
        if cmd::find_program(tool).is_none() {
            return Err(TestkitError::MissingTool {
                tool: tool.to_owned(),
                purpose: purpose.to_owned(),
            });
        }
    }
    Ok(())
}

/// Mount namespace handles can only be bind-mounted onto a private mount: make
/// /run/servos-testkit/mnt one (once per boot).
fn ensure_private_mnt_dir() -> Result<(), TestkitError> {
    let dir = names::mnt_dir();
    fs::create_dir_all(&dir).map_err(TestkitError::io(format!("create {}", dir.display())))?;
    let dir_str = dir.to_string_lossy().into_owned();
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(TestkitError::io("read /proc/self/mountinfo"))?;
    let mounted = mountinfo
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(dir_str.as_str()));
    if !mounted {
        run("mount", &["--bind", &dir_str, &dir_str])?;
    }
    run("mount", &["--make-private", &dir_str]).map(drop)
}
