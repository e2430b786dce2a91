//! The containers running on this server, read from cgroups: the agent has no Docker socket
//! (access to it is root-equivalent), but every container has a cgroup named after its id,
//! and cgroup files are world-readable. The agent reports ids and usage; the control plane
//! names them from the placements it recorded (it knows which containers it started).
//!
//! Where Docker puts them: `system.slice/docker-<id>.scope` with the systemd cgroup driver,
//! `docker/<id>` with cgroupfs, or `<parent>/<id>` with `--cgroup-parent` (the test hosts'
//! dockerd). Under cgroup v2 everything is in one tree; under v1 ids are found in the memory
//! hierarchy and usage read from memory, cpuacct and pids.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use serde::Serialize;

/// The cgroup filesystem root.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// How deep below a hierarchy's root container cgroups are looked for.
const MAX_DEPTH: usize = 3;
/// An upper bound on directories visited per sample (a heartbeat must stay cheap).
const MAX_DIRS: usize = 20_000;

/// One container's usage, as reported in heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerUsage {
    /// Docker's container id (64 lowercase hex digits).
    pub id: String,
    pub memory_bytes: Option<u64>,
    /// CPU time used since the container started, in microseconds.
    pub cpu_usec: Option<u64>,
    pub pids: Option<u64>,
}

/// The container id a cgroup directory is named after, if it is a container's.
pub fn container_id(dir_name: &str) -> Option<&str> {
    let id = dir_name
        .strip_prefix("docker-")
        .and_then(|s| s.strip_suffix(".scope"))
        .unwrap_or(dir_name);
    (id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(id)
}

/// `usage_usec` from a cgroup v2 `cpu.stat`.
pub fn cpu_stat_usage_usec(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Container cgroups under `root` (relative paths, by id), breadth-first to [`MAX_DEPTH`].
fn find(root: &Path) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    let mut level = vec![PathBuf::new()];
    let mut visited = 0;
    for _ in 0..MAX_DEPTH {
        let mut next = Vec::new();
        for rel in level {
            let Ok(entries) = fs::read_dir(root.join(&rel)) else {
                continue;
            };
            for entry in entries.flatten() {
                visited += 1;
                if visited > MAX_DIRS {
                    return found;
                }
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                let path = rel.join(name);
                match container_id(name) {
                    Some(id) => {
                        found.entry(id.to_owned()).or_insert(path);
                    }
                    None => next.push(path),
                }
            }
        }
        level = next;
    }
    found
}

/// The containers under the cgroup filesystem at `root` (normally [`CGROUP_ROOT`]).
pub fn sample_at(root: &Path) -> Vec<ContainerUsage> {
    if root.join("cgroup.controllers").exists() {
        // cgroup v2: one tree.
        return find(root)
            .into_iter()
            .map(|(id, rel)| {
                let dir = root.join(rel);
                ContainerUsage {
                    id,
                    memory_bytes: read_u64(&dir.join("memory.current")),
                    cpu_usec: fs::read_to_string(dir.join("cpu.stat"))
                        .ok()
                        .as_deref()
                        .and_then(cpu_stat_usage_usec),
                    pids: read_u64(&dir.join("pids.current")),
                }
            })
            .collect();
    }
    // cgroup v1: one hierarchy per controller, the same relative path in each.
    let cpuacct = ["cpuacct", "cpu,cpuacct"]
        .into_iter()
        .map(|d| root.join(d))
        .find(|d| d.is_dir());
    find(&root.join("memory"))
        .into_iter()
        .map(|(id, rel)| ContainerUsage {
            memory_bytes: read_u64(&root.join("memory").join(&rel).join("memory.usage_in_bytes")),
            cpu_usec: cpuacct
                .as_ref()
                .and_then(|d| read_u64(&d.join(&rel).join("cpuacct.usage")))
                .map(|ns| ns / 1000),
            pids: read_u64(&root.join("pids").join(&rel).join("pids.current")),
            id,
        })
        .collect()
}

/// The containers on this server.
pub fn sample() -> Vec<ContainerUsage> {
    sample_at(Path::new(CGROUP_ROOT))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn container_cgroups_are_named_by_id_or_docker_scope() {
        assert_eq!(container_id(ID), Some(ID));
        assert_eq!(container_id(&format!("docker-{ID}.scope")), Some(ID));
        assert_eq!(container_id("system.slice"), None);
        assert_eq!(container_id(&ID.to_uppercase()), None);
        assert_eq!(container_id(&ID[1..]), None);
        assert_eq!(
            cpu_stat_usage_usec("usage_usec 1234\nuser_usec 1000\n"),
            Some(1234)
        );
    }

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    #[test]
    fn v2_systemd_scopes_are_found_with_their_usage() {
        let root = tempfile::tempdir().unwrap();
        let scope = root.path().join(format!("system.slice/docker-{ID}.scope"));
        write(&root.path().join("cgroup.controllers"), "cpu memory pids\n");
        write(&scope.join("memory.current"), "4096\n");
        write(&scope.join("cpu.stat"), "usage_usec 77\n");
        write(&scope.join("pids.current"), "3\n");
        write(
            &root
                .path()
                .join("user.slice/user-0.slice/session-1.scope/memory.current"),
            "1\n",
        );
        assert_eq!(
            sample_at(root.path()),
            vec![ContainerUsage {
                id: ID.into(),
                memory_bytes: Some(4096),
                cpu_usec: Some(77),
                pids: Some(3)
            }]
        );
    }

    #[test]
    fn v1_cgroupfs_containers_read_each_controller() {
        let root = tempfile::tempdir().unwrap();
        write(
            &root
                .path()
                .join(format!("memory/docker/{ID}/memory.usage_in_bytes")),
            "8192\n",
        );
        write(
            &root
                .path()
                .join(format!("cpuacct/docker/{ID}/cpuacct.usage")),
            "5000000\n",
        );
        write(
            &root.path().join(format!("pids/docker/{ID}/pids.current")),
            "2\n",
        );
        assert_eq!(
            sample_at(root.path()),
            vec![ContainerUsage {
                id: ID.into(),
                memory_bytes: Some(8192),
                cpu_usec: Some(5000),
                pids: Some(2)
            }]
        );
    }
}
