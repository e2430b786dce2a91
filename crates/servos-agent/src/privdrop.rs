//! Start-up as root and the privilege drop: the one function, [`setup_as_root_then_drop`],
//! that runs before the async runtime starts and before any input is read from the network.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use caps::{CapSet, Capability, CapsHashSet};
use nix::{
    sys::{prctl, resource},
    unistd::{self, Gid, Uid, User},
};

use crate::{classifier::Classifier, error::AgentError};

/// The only capabilities the agent keeps: configure its interface (CAP_NET_ADMIN), update
/// its BPF maps (CAP_BPF) and lock memory for them (CAP_IPC_LOCK).
pub const KEPT: [Capability; 3] = [
    Capability::CAP_NET_ADMIN,
    Capability::CAP_BPF,
    Capability::CAP_IPC_LOCK,
];

/// The kept set as the kernel prints it in /proc/<pid>/status (bits 12, 14 and 39).
pub const KEPT_MASK: u64 = (1 << 12) | (1 << 14) | (1 << 39);

/// What the root-only phase needs to know.
#[derive(Debug, Clone)]
pub struct RootPlan {
    pub user: String,
    pub state_dir: PathBuf,
    pub interface: String,
    pub address: std::net::Ipv4Addr,
    pub prefix: u8,
    /// Kernel or userspace WireGuard (`--wireguard`).
    pub wireguard: crate::tunnel::WireguardMode,
    /// A BPF object to load instead of the built-in one (tests of the refusal path).
    pub classifier_object: Option<PathBuf>,
}

/// What survives the drop: the interface (kernel WireGuard link or open TUN device) and the
/// attached classifier.
pub struct Dropped {
    pub device: crate::tunnel::MeshDevice,
    pub classifier: Classifier,
    pub uid: Uid,
    pub gid: Gid,
    /// Whether the kernel confines the agent's writes to its state directory (Landlock).
    pub confinement: crate::sandbox::Confinement,
}

impl std::fmt::Debug for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dropped")
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("wireguard", &self.device.backend())
            .finish_non_exhaustive()
    }
}

/// Does the root-only work and drops to `plan.user`, in this order and nowhere else:
///
/// 1. refuse unless root and single-threaded (capability sets are per thread: threads
///    started before the drop would keep root's);
/// 2. close every inherited descriptor above stderr and clear the environment, so nothing
///    from the parent leaks into a process that keeps network capabilities;
/// 3. root-only work: the state directory (0700, owned by the user), RLIMIT_MEMLOCK, the
///    mesh interface with its address (a kernel WireGuard link, or a TUN device when the
///    kernel has no WireGuard or `--wireguard userspace` asks: [`crate::tunnel::create_device`]),
///    the eBPF classifier loaded and attached (a program that does pointer arithmetic needs
///    CAP_PERFMON unless loaded as root). A kernel link made before a later step fails is
///    deleted again (as root, before the drop) when the error drops it;
/// 4. the drop, attempted even when step 3 failed, so no exit path keeps root: bounding
///    set down to [`KEPT`], keep-caps, groups/gid/uid, permitted/effective/inheritable to
///    exactly [`KEPT`], ambient cleared, no_new_privs;
/// 5. read back every set and the ids and refuse to go on if one differs;
/// 6. confine the filesystem with Landlock ([`crate::sandbox`]): read anywhere, write only
///    in the state directory, execute nothing. A kernel without Landlock is logged loudly
///    and reported in the status file; an error setting it up stops the agent.
pub fn setup_as_root_then_drop(plan: &RootPlan) -> Result<Dropped, AgentError> {
    // 1. Preconditions.
    let euid = unistd::geteuid();
    if !euid.is_root() {
        return Err(AgentError::NotRoot(euid.as_raw()));
    }
    let threads = thread_count();
    if threads != 1 {
        return Err(AgentError::Threaded(threads));
    }
    let user = match User::from_name(&plan.user) {
        Ok(Some(u)) => u,
        Ok(None) => return Err(AgentError::NoUser(plan.user.clone())),
        Err(source) => {
            return Err(AgentError::UserLookup {
                user: plan.user.clone(),
                source,
            });
        }
    };

    // 2. Inherited descriptors and environment.
    close_inherited_fds()?;
    clear_environment();

    // 3. Root-only work; its result is looked at only after the drop.
    let root_work = root_only_work(plan, &user);

    // 4. The drop.
    drop_to(&user)?;

    // 5. Verify, then hand over what the root phase built.
    verify_dropped(&user)?;
    let (device, classifier) = root_work?;

    // 6. Filesystem confinement, still single-threaded so every later thread inherits it.
    let confinement = crate::sandbox::confine(&plan.state_dir)?;
    release_freed_heap();
    Ok(Dropped {
        device,
        classifier,
        uid: user.uid,
        gid: user.gid,
        confinement,
    })
}

/// Step 3: everything that needs root.
fn root_only_work(
    plan: &RootPlan,
    user: &User,
) -> Result<(crate::tunnel::MeshDevice, Classifier), AgentError> {
    make_state_dir(&plan.state_dir, user)?;
    // BPF map memory counts against RLIMIT_MEMLOCK on kernels before 5.11 (newer ones
    // charge the memory cgroup). Raising it needs CAP_SYS_RESOURCE, which a container may
    // not grant: then the limit stays, and an old kernel reports the load failure below.
    let _ = resource::setrlimit(
        resource::Resource::RLIMIT_MEMLOCK,
        resource::RLIM_INFINITY,
        resource::RLIM_INFINITY,
    );
    let device =
        crate::tunnel::create_device(plan.wireguard, &plan.interface, plan.address, plan.prefix)?;
    let classifier = match &plan.classifier_object {
        Some(path) => {
            let bytes = fs::read(path).map_err(AgentError::io("read", path))?;
            Classifier::load_object_and_attach(&bytes, &plan.interface)?
        }
        None => Classifier::load_and_attach(&plan.interface)?,
    };
    Ok((device, classifier))
}

/// Step 4, in the order that leaves all five sets at [`KEPT_MASK`] (checked with /proc).
fn drop_to(user: &User) -> Result<(), AgentError> {
    let keep: CapsHashSet = KEPT.into_iter().collect();
    // Bounding set first, while CAP_SETPCAP is still held.
    for cap in caps::all() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| AgentError::drop_step("bounding set")(e.to_string()))?;
        }
    }
    // Keep the permitted set across the uid change (cleared again by execve).
    prctl::set_keepcaps(true)
        .map_err(|e| AgentError::drop_step("PR_SET_KEEPCAPS")(e.to_string()))?;
    unistd::setgroups(&[user.gid])
        .map_err(|e| AgentError::drop_step("setgroups")(e.to_string()))?;
    unistd::setresgid(user.gid, user.gid, user.gid)
        .map_err(|e| AgentError::drop_step("setresgid")(e.to_string()))?;
    unistd::setresuid(user.uid, user.uid, user.uid)
        .map_err(|e| AgentError::drop_step("setresuid")(e.to_string()))?;
    // Permitted shrinks first; effective and inheritable must stay within it.
    caps::set(None, CapSet::Permitted, &keep)
        .map_err(|e| AgentError::drop_step("permitted set")(e.to_string()))?;
    caps::set(None, CapSet::Effective, &keep)
        .map_err(|e| AgentError::drop_step("effective set")(e.to_string()))?;
    caps::set(None, CapSet::Inheritable, &keep)
        .map_err(|e| AgentError::drop_step("inheritable set")(e.to_string()))?;
    caps::clear(None, CapSet::Ambient)
        .map_err(|e| AgentError::drop_step("ambient set")(e.to_string()))?;
    prctl::set_keepcaps(false)
        .map_err(|e| AgentError::drop_step("PR_SET_KEEPCAPS off")(e.to_string()))?;
    prctl::set_no_new_privs().map_err(|e| AgentError::drop_step("no_new_privs")(e.to_string()))?;
    Ok(())
}

/// Step 5: the ids and every capability set are exactly what [`drop_to`] meant.
fn verify_dropped(user: &User) -> Result<(), AgentError> {
    let (ruid, euid, suid) = (unistd::getuid(), unistd::geteuid(), uid_saved());
    if ruid != user.uid || euid != user.uid || suid != Some(user.uid) {
        return Err(AgentError::DropVerify(format!(
            "uid is {ruid}/{euid}/{suid:?}, want {}",
            user.uid
        )));
    }
    if unistd::getgid() != user.gid || unistd::getegid() != user.gid {
        return Err(AgentError::DropVerify(format!(
            "gid is {}, want {}",
            unistd::getgid(),
            user.gid
        )));
    }
    let keep: CapsHashSet = KEPT.into_iter().collect();
    for set in [
        CapSet::Bounding,
        CapSet::Permitted,
        CapSet::Effective,
        CapSet::Inheritable,
    ] {
        let have = caps::read(None, set).map_err(|e| AgentError::DropVerify(e.to_string()))?;
        if have != keep {
            return Err(AgentError::DropVerify(format!("{set:?} set is {have:?}")));
        }
    }
    let ambient =
        caps::read(None, CapSet::Ambient).map_err(|e| AgentError::DropVerify(e.to_string()))?;
    if !ambient.is_empty() {
        return Err(AgentError::DropVerify(format!(
            "ambient set is {ambient:?}"
        )));
    }
    Ok(())
}

fn uid_saved() -> Option<Uid> {
    unistd::getresuid().ok().map(|ids| ids.saved)
}

/// The state directory: created by root, owned by the agent's user, mode 0700.
fn make_state_dir(dir: &Path, user: &User) -> Result<(), AgentError> {
    fs::create_dir_all(dir).map_err(AgentError::io("create", dir))?;
    unistd::chown(dir, Some(user.uid), Some(user.gid))
        .map_err(|e| AgentError::io("chown", dir)(std::io::Error::from(e)))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(AgentError::io("chmod", dir))
}

fn thread_count() -> usize {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Gives the heap freed after start-up back to the kernel. Loading the classifier makes aya
/// parse the kernel's BTF (/sys/kernel/btf/vmlinux, several MiB, into many small
/// allocations) to relocate the program; glibc keeps such freed memory in its arena, so
/// without this it stayed resident for the agent's whole life: measured at idle with 10
/// peers, the heap went from 16.1 MiB to 1.0 MiB resident (RSS 27.5 → 12.5 MiB).
#[cfg(target_env = "gnu")]
#[allow(unsafe_code)]
fn release_freed_heap() {
    // SAFETY: malloc_trim takes the allocator's own locks and only returns pages that
    // hold no live allocation; it has no preconditions on the caller.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(target_env = "gnu"))]
fn release_freed_heap() {}

/// Closes every descriptor above stderr in one syscall.
#[allow(unsafe_code)]
fn close_inherited_fds() -> Result<(), AgentError> {
    // SAFETY: close_range only closes descriptors; the process is single-threaded (checked
    // above) and nothing in it holds a descriptor above 2 at this point (std opens none).
    let rc = unsafe { libc::close_range(3, libc::c_uint::MAX, 0) };
    if rc != 0 {
        return Err(AgentError::drop_step("close inherited descriptors")(
            std::io::Error::last_os_error().to_string(),
        ));
    }
    Ok(())
}

/// Removes every environment variable.
#[allow(unsafe_code)]
fn clear_environment() {
    let names: Vec<_> = std::env::vars_os().map(|(name, _)| name).collect();
    for name in names {
        // SAFETY: the process is single-threaded here (checked above), so no other thread
        // can read the environment while it changes.
        unsafe { std::env::remove_var(name) };
    }
}
