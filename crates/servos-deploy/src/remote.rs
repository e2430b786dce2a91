//! The commands commissioning sends to a host ([`docker`]: those of deploys), built as data by pure functions so that
//! their exact text is tested without SSH. Every path goes through `shell_quote`.

use std::time::Duration;

use servos_ssh::{RemoteCommand, shell_quote};

pub mod build;
pub mod docker;

/// ServOS's state directory on every host.
pub const SERVOS_DIR: &str = "/var/lib/servos";

/// Where env files of deploys live for the seconds between `docker run --env-file` and
/// their deletion.
pub const SECRETS_DIR: &str = "/var/lib/servos/secrets";

/// An env file older than this was left behind by a crash: a deploy deletes its own as
/// soon as the container has started.
pub const STALE_SECRET_MINUTES: u32 = 10;

/// How long `docker version` may take before the daemon counts as not answering.
pub const DOCKER_ANSWER_SECONDS: u32 = 15;

/// The marker that starts each section of the facts script's output.
pub(crate) const SECTION_MARK: &str = "@@servos:";

/// A command that does nothing: its round trip is the host's latency.
pub fn probe() -> RemoteCommand {
    RemoteCommand::new("true").timeout(Duration::from_secs(10))
}

/// Creates the state directory (0711: other users may traverse it to a subdirectory they
/// own, the agent's `agent/` (user `servos`) or Caddy's state, but not list it) and the
/// secrets directory (0700), root:root, also when they exist with other modes, then
/// deletes stale env files, printing each deleted path.
pub fn prepare_dirs() -> RemoteCommand {
    let dir = |mode: &str, path: &str| {
        RemoteCommand::new("install").args(["-d", "-m", mode, "-o", "root", "-g", "root", path])
    };
    dir("0711", SERVOS_DIR)
        .and_then(dir("0700", SECRETS_DIR))
        .and_then(
            RemoteCommand::new("find")
                .args([
                    SECRETS_DIR,
                    "-maxdepth",
                    "1",
                    "-type",
                    "f",
                    "-name",
                    "*.env",
                ])
                .args(["-mmin".to_owned(), format!("+{STALE_SECRET_MINUTES}")])
                .args(["-print", "-delete"]),
        )
}

/// How many files [`prepare_dirs`] deleted, from its output (one path a line).
pub fn count_swept(stdout: &str) -> u32 {
    let n = stdout.lines().filter(|l| !l.trim().is_empty()).count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// One round trip that prints everything [`crate::facts::parse`] reads, section by
/// section. It always exits 0: a missing tool shows up in its section, not as a failure.
pub fn gather_facts() -> RemoteCommand {
    RemoteCommand::new("sh").arg("-c").arg(facts_script())
}

/// The script run by [`gather_facts`]. Constant but for the quoted paths; each section
/// header starts on a line of its own even when the previous output lacks a newline.
pub fn facts_script() -> String {
    let dir = shell_quote(SERVOS_DIR);
    let mark = SECTION_MARK;
    let wait = DOCKER_ANSWER_SECONDS;
    format!(
        "section() {{ printf '\\n{mark}%s\\n' \"$1\"; }}\n\
         section os-release\n\
         cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null\n\
         section kernel\n\
         uname -r\n\
         section arch\n\
         uname -m\n\
         section disk\n\
         df -Pk {dir} 2>&1\n\
         section docker\n\
         if command -v docker >/dev/null 2>&1; then\n\
         \x20 if command -v timeout >/dev/null 2>&1; then t='timeout {wait}'; else t=''; fi\n\
         \x20 $t docker version --format '{{{{.Server.Version}}}}' 2>&1\n\
         \x20 rc=$?\n\
         else\n\
         \x20 rc=absent\n\
         fi\n\
         section docker-exit\n\
         echo \"$rc\"\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_is_a_bare_true() {
        assert_eq!(probe().to_shell(), "true");
        assert_eq!(probe().timeout_override(), Some(Duration::from_secs(10)));
    }

    #[test]
    fn preparing_creates_a_traversable_state_dir_a_root_only_secrets_dir_and_sweeps_old_env_files() {
        assert_eq!(
            prepare_dirs().to_shell(),
            "install -d -m 0711 -o root -g root /var/lib/servos \
             && install -d -m 0700 -o root -g root /var/lib/servos/secrets \
             && find /var/lib/servos/secrets -maxdepth 1 -type f -name '*.env' -mmin +10 -print -delete"
        );
    }

    #[test]
    fn swept_files_are_counted_by_line() {
        assert_eq!(count_swept(""), 0);
        assert_eq!(count_swept("\n"), 0);
        assert_eq!(
            count_swept("/var/lib/servos/secrets/a.env\n/var/lib/servos/secrets/b.env\n"),
            2
        );
    }

    #[test]
    fn the_facts_script_is_exactly_this() {
        assert_eq!(
            facts_script(),
            r#"section() { printf '\n@@servos:%s\n' "$1"; }
section os-release
cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null
section kernel
uname -r
section arch
uname -m
section disk
df -Pk /var/lib/servos 2>&1
section docker
if command -v docker >/dev/null 2>&1; then
  if command -v timeout >/dev/null 2>&1; then t='timeout 15'; else t=''; fi
  $t docker version --format '{{.Server.Version}}' 2>&1
  rc=$?
else
  rc=absent
fi
section docker-exit
echo "$rc"
"#
        );
    }

    #[test]
    fn the_facts_command_passes_the_script_as_one_quoted_word() {
        let text = gather_facts().to_shell();
        assert!(
            text.starts_with("sh -c 'section() { printf '\\''\\n@@servos:%s\\n'\\'' \"$1\"; }\n"),
            "{text}"
        );
        assert_eq!(text, format!("sh -c {}", shell_quote(&facts_script())));
    }
}
