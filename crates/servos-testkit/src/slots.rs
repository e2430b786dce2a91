//! Slot allocation under a file lock, and removal of what killed test runs left behind.
//!
//! A test process killed by a timeout (or SIGKILL) cannot run its `Drop`; the next
//! `TestNet` build sweeps: any slot whose owner process is gone, and any `svt*` namespace,
//! interface, mount handle or directory without a live slot, is torn down.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::time::{Duration, Instant};

use crate::TestkitError;
use crate::cmd::{self, quietly};
use crate::names;

/// Holds the global allocation lock while alive.
pub(crate) struct Lock(File);

impl Lock {
    pub(crate) fn acquire() -> Result<Self, TestkitError> {
        fs::create_dir_all(names::slots_dir())
            .map_err(TestkitError::io("create /run/servos-testkit"))?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(names::lock_file())
            .map_err(TestkitError::io("open /run/servos-testkit/lock"))?;
        file.lock()
            .map_err(TestkitError::io("lock /run/servos-testkit/lock"))?;
        Ok(Self(file))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Claims the first free slot for this process. Call with the lock held.
pub(crate) fn claim(_lock: &Lock) -> Result<u8, TestkitError> {
    // Start at a per-process offset so a freed slot is not reused at once by the next
    // run, which keeps logs of consecutive runs apart.
    let start = std::process::id() % 255;
    for n in 0..255u32 {
        let slot = ((start + n) % 255) as u8;
        let path = names::slot_file(slot);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                let me = std::process::id();
                let start = start_time(me).unwrap_or_default();
                f.write_all(format!("{me} {start}\n").as_bytes())
                    .map_err(TestkitError::io(format!("write {}", path.display())))?;
                return Ok(slot);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(TestkitError::io(format!("create {}", path.display()))(e)),
        }
    }
    Err(TestkitError::NoFreeSlot)
}

/// Frees a slot after its resources are gone.
pub(crate) fn release(slot: u8) {
    let _ = fs::remove_file(names::slot_file(slot));
}

/// Tears down every slot whose owner died and every orphaned `svt*` resource. Call with
/// the lock held.
pub(crate) fn sweep(_lock: &Lock) {
    let mut live = BTreeSet::new();
    for slot in 0..=254u8 {
        match fs::read_to_string(names::slot_file(slot)) {
            Ok(content) if owner_alive(&content) => {
                live.insert(slot);
            }
            Ok(_) => {
                teardown_slot(slot);
                release(slot);
            }
            Err(_) => {}
        }
    }
    for slot in referenced_slots() {
        if !live.contains(&slot) {
            teardown_slot(slot);
        }
    }
}

/// Every slot number that some namespace, interface, mount handle or directory refers to.
fn referenced_slots() -> BTreeSet<u8> {
    let mut slots = BTreeSet::new();
    for name in netns_names()
        .iter()
        .chain(link_names().iter())
        .chain(dir_names(&names::mnt_dir()).iter())
    {
        if let Some((slot, _)) = names::parse_host(name) {
            slots.insert(slot);
        }
        if let Some(slot) = names::parse_bridge(name) {
            slots.insert(slot);
        }
    }
    for name in dir_names(std::path::Path::new(names::DISK_DIR)) {
        if let Ok(slot) = name.parse() {
            slots.insert(slot);
        }
    }
    slots
}

/// Removes everything of one slot: processes, mount namespaces, network namespaces,
/// interfaces, cgroups and directories. Safe to call on a half-built or already-removed slot.
pub(crate) fn teardown_slot(slot: u8) {
    let hosts: BTreeSet<String> = netns_names()
        .into_iter()
        .chain(link_names())
        .chain(dir_names(&names::mnt_dir()))
        .filter(|n| names::parse_host(n).is_some_and(|(s, _)| s == slot))
        .collect();
    for host in &hosts {
        teardown_host(host);
    }
    quietly("ip", &["link", "del", &names::bridge(slot)]);
    let _ = fs::remove_dir_all(names::slot_disk_dir(slot));
}

/// Kills every process of a host (those in its network namespace and its containers),
/// then removes its mount handle, namespace, veth and cgroups.
pub(crate) fn teardown_host(name: &str) {
    kill_host_processes(name);
    let mnt = names::mnt_file(name);
    if let Some(m) = mnt.to_str() {
        quietly("umount", &["--lazy", m]);
    }
    let _ = fs::remove_file(&mnt);
    quietly("ip", &["netns", "del", name]);
    quietly("ip", &["link", "del", name]);
    remove_cgroups(name);
}

fn kill_host_processes(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut pids = netns_pids(name);
        pids.extend(cgroup_pids(name));
        if pids.is_empty() || Instant::now() > deadline {
            return;
        }
        let mut args = vec!["-9".to_owned()];
        args.extend(pids.iter().map(u32::to_string));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        quietly("kill", &args);
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn netns_pids(name: &str) -> BTreeSet<u32> {
    match cmd::output("ip", &["netns", "pids", name]) {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// Directories named like the host's docker `--cgroup-parent` in every cgroup hierarchy.
fn cgroup_dirs(name: &str) -> Vec<std::path::PathBuf> {
    let parent = names::cgroup_parent(name);
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else {
        return Vec::new();
    };
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, point, kind) = (f.next()?, f.next()?, f.next()?);
            matches!(kind, "cgroup" | "cgroup2")
                .then(|| std::path::PathBuf::from(format!("{point}{parent}")))
        })
        .filter(|p| p.is_dir())
        .collect()
}

fn cgroup_pids(name: &str) -> BTreeSet<u32> {
    let mut pids = BTreeSet::new();
    for dir in cgroup_dirs(name) {
        walk(&dir, &mut |d| {
            if let Ok(procs) = fs::read_to_string(d.join("cgroup.procs")) {
                pids.extend(
                    procs
                        .split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        });
    }
    pids
}

fn remove_cgroups(name: &str) {
    for dir in cgroup_dirs(name) {
        let mut all = Vec::new();
        walk(&dir, &mut |d| all.push(d.to_path_buf()));
        // Deepest first: a cgroup directory can only be removed once it has no children.
        all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for d in all {
            let _ = fs::remove_dir(d);
        }
    }
}

fn walk(dir: &std::path::Path, f: &mut dyn FnMut(&std::path::Path)) {
    f(dir);
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), f);
            }
        }
    }
}

fn netns_names() -> Vec<String> {
    dir_names(std::path::Path::new("/run/netns"))
        .into_iter()
        .filter(|n| n.starts_with(names::PREFIX))
        .collect()
}

fn link_names() -> Vec<String> {
    dir_names(std::path::Path::new("/sys/class/net"))
        .into_iter()
        .filter(|n| n.starts_with(names::PREFIX))
        .collect()
}

fn dir_names(dir: &std::path::Path) -> Vec<String> {
    match fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Whether the process recorded as `"<pid> <start time>"` still runs (and is the same
/// process, not a reuse of its pid). A killed process whose parent has not reaped it yet
/// is a zombie: dead for our purposes.
fn owner_alive(content: &str) -> bool {
    let mut parts = content.split_whitespace();
    let (Some(pid), Some(start)) = (parts.next(), parts.next()) else {
        return false;
    };
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
        return false;
    };
    match stat_fields(pid) {
        Some((state, started)) => started == start && !matches!(state, 'Z' | 'X' | 'x'),
        None => false,
    }
}

fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid).map(|(_, started)| started)
}

/// Fields 3 (state) and 22 (start time in clock ticks since boot) of `/proc/PID/stat`.
fn stat_fields(pid: u32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it follow the last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let started = fields.nth(18)?.parse().ok()?;
    Some((state, started))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_a_dead_record_is_not() {
        let me = std::process::id();
        let start = start_time(me).unwrap_or_default();
        assert!(owner_alive(&format!("{me} {start}")));
        assert!(!owner_alive(&format!("{me} {}", start + 1)));
        assert!(!owner_alive("garbage"));
    }
}
