//! Filesystem confinement after the privilege drop: a Landlock ruleset that lets the agent
//! read the filesystem (configuration, /proc, /sys for its health figures) but write,
//! create, remove, rename or execute nothing outside its state directory. User `servos`
//! alone could still write wherever the world can (/tmp, /var/tmp, /dev/shm); Landlock
//! closes that, and a compromised agent cannot exec a helper either.
//!
//! Applied while the process is still single-threaded (by `privdrop`), so every thread
//! started afterwards inherits it. It needs no privilege and cannot be lifted.

use std::{fmt, path::Path};

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, LandlockStatus, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
};

use crate::error::AgentError;

/// The newest Landlock ABI whose rights the agent asks for: v6 adds the scopes (signals
/// and abstract UNIX sockets). Later ABIs' ResolveUnix would block the resolver's sockets.
const TARGET: ABI = ABI::V6;

/// What the kernel enforced; reported in the status file and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Confinement {
    /// Every requested restriction is in force.
    Enforced,
    /// The kernel's Landlock is older than [`TARGET`]: the file restrictions it knows are
    /// in force, newer ones (e.g. scopes) are not.
    Partial,
    /// The kernel has no Landlock (or it is disabled): only the uid limits writes.
    Unsupported,
}

impl fmt::Display for Confinement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Confinement::Enforced => "enforced",
            Confinement::Partial => "partially enforced (older Landlock ABI)",
            Confinement::Unsupported => "NOT enforced: this kernel has no Landlock",
        })
    }
}

/// Restricts the calling thread (and every thread it starts later) to: read anywhere, no
/// execution, writes only beneath `state_dir`; no signals to, or abstract sockets of,
/// processes outside the sandbox.
pub fn confine(state_dir: &Path) -> Result<Confinement, AgentError> {
    let fail = |e: &dyn fmt::Display| AgentError::Landlock(e.to_string());
    let handled = AccessFs::from_all(TARGET);
    let read_only = AccessFs::ReadFile | AccessFs::ReadDir;
    let in_state_dir = handled & !AccessFs::Execute;
    let root = PathFd::new("/").map_err(|e| fail(&e))?;
    let state = PathFd::new(state_dir).map_err(|e| fail(&e))?;
    let status = Ruleset::default()
        // Best effort: on an older kernel, the rights it knows are still enforced.
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(handled)
        .map_err(|e| fail(&e))?
        .scope(Scope::from_all(TARGET))
        .map_err(|e| fail(&e))?
        .create()
        .map_err(|e| fail(&e))?
        .add_rule(PathBeneath::new(root, read_only))
        .map_err(|e| fail(&e))?
        .add_rule(PathBeneath::new(state, in_state_dir))
        .map_err(|e| fail(&e))?
        .restrict_self()
        .map_err(|e| fail(&e))?;
    let confinement = match status.ruleset {
        RulesetStatus::FullyEnforced => Confinement::Enforced,
        RulesetStatus::PartiallyEnforced => Confinement::Partial,
        RulesetStatus::NotEnforced => Confinement::Unsupported,
    };
    match (confinement, status.landlock) {
        (Confinement::Unsupported, landlock) => tracing::warn!(
            "Landlock is not available on this kernel ({}): the agent's writes are limited only by user servos's permissions, so world-writable places such as /tmp stay writable",
            describe(landlock)
        ),
        (c, landlock) => tracing::info!(
            state_dir = %state_dir.display(),
            "Landlock {c} ({}): writes only in the state directory",
            describe(landlock)
        ),
    }
    Ok(confinement)
}

fn describe(status: LandlockStatus) -> String {
    match status {
        LandlockStatus::NotEnabled => "built in but not enabled at boot (lsm=)".to_owned(),
        LandlockStatus::NotImplemented => "not built into the kernel".to_owned(),
        LandlockStatus::Available { effective_abi, .. } => {
            format!("kernel ABI {effective_abi:?}")
        }
    }
}
