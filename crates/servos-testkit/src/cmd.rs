//! Running the system tools (`ip`, `nsenter`, `ssh-keygen`…) with errors that show the
//! command line and its stderr.

use std::process::{Command, Output};

use crate::TestkitError;

/// Runs `program args…`, returning its output if it exited 0.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<Output, TestkitError> {
    let out = output(program, args)?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(TestkitError::Command {
            command: command_line(program, args),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Runs `program args…` whatever its exit status; fails only if it cannot be started.
pub(crate) fn output(program: &str, args: &[&str]) -> Result<Output, TestkitError> {
    Command::new(program)
        .args(args)
        .output()
        .map_err(TestkitError::io(format!(
            "cannot run `{}`",
            command_line(program, args)
        )))
}

/// Runs a command for cleanup, ignoring failures (the thing may already be gone).
pub(crate) fn quietly(program: &str, args: &[&str]) {
    let _ = output(program, args);
}

pub(crate) fn command_line(program: &str, args: &[&str]) -> String {
    std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Finds a program on PATH or in the sbin directories (root's PATH may lack them).
pub(crate) fn find_program(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|dir| std::path::Path::new(dir).join(name))
        .find(|p| p.is_file())
}
