//! What a check learns about a host, and the pure parser of the facts script's output
//! (see [`crate::remote::facts_script`]).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::remote::{DOCKER_ANSWER_SECONDS, SECTION_MARK, SERVOS_DIR};

/// Facts about a host as of its last successful check; stored as JSON in the host record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    /// `PRETTY_NAME` from `/etc/os-release`, e.g. `Debian GNU/Linux 12 (bookworm)`.
    pub os: String,
    /// `uname -r`.
    pub kernel: String,
    /// `uname -m`, e.g. `x86_64`, `aarch64`.
    pub arch: String,
    /// The Docker server version, when a daemon answered.
    pub docker: Option<String>,
    /// `running`, `not installed`, or `installed but daemon not reachable: …`.
    pub docker_status: String,
    /// Free space for ServOS under `/var/lib/servos`.
    pub disk_free_bytes: u64,
    /// Round trip of a trivial command over the established connection.
    pub latency_ms: f64,
    /// Env files older than the stale limit, left by a crash, deleted by this check.
    pub stale_secret_files_removed: u32,
    /// When the check ran (store time format).
    pub checked_at: String,
}

/// What the engine measured itself, around the facts script.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    pub latency_ms: f64,
    pub stale_secret_files_removed: u32,
    pub checked_at: String,
}

pub const DOCKER_RUNNING: &str = "running";
pub const DOCKER_NOT_INSTALLED: &str = "not installed";
const DOCKER_UNREACHABLE: &str = "installed but daemon not reachable";
/// Daemon error messages are cut to this many characters.
const MAX_DOCKER_MESSAGE: usize = 300;

/// Parses the output of the facts script. The error says what was missing or unreadable.
pub fn parse(output: &str, measured: Measured) -> Result<Facts, String> {
    let sections = sections(output);
    let (docker, docker_status) = docker(&sections)?;
    Ok(Facts {
        os: os_name(section(&sections, "os-release")),
        kernel: first_line(&sections, "kernel", "uname -r")?,
        arch: first_line(&sections, "arch", "uname -m")?,
        docker,
        docker_status,
        disk_free_bytes: disk_free(section(&sections, "disk"))?,
        latency_ms: measured.latency_ms,
        stale_secret_files_removed: measured.stale_secret_files_removed,
        checked_at: measured.checked_at,
    })
}

/// Splits the output at section markers; text before the first marker is ignored.
fn sections(output: &str) -> HashMap<&str, Vec<&str>> {
    let mut map: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut current: Option<&str> = None;
    for line in output.lines() {
        if let Some(name) = line.strip_prefix(SECTION_MARK) {
            current = Some(name.trim());
            map.entry(name.trim()).or_default();
        } else if let Some(name) = current {
            map.entry(name).or_default().push(line);
        }
    }
    map
}

fn section<'a>(sections: &'a HashMap<&str, Vec<&'a str>>, name: &str) -> &'a [&'a str] {
    sections.get(name).map(Vec::as_slice).unwrap_or(&[])
}

fn first_line(
    sections: &HashMap<&str, Vec<&str>>,
    name: &str,
    what: &str,
) -> Result<String, String> {
    section(sections, name)
        .iter()
        .map(|l| l.trim())
        .find(|l| !l.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| format!("`{what}` printed nothing"))
}

/// `PRETTY_NAME`, else `NAME VERSION`, else a note that the file is missing.
fn os_name(lines: &[&str]) -> String {
    let field = |key: &str| {
        lines
            .iter()
            .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
            .map(unquote)
            .filter(|v| !v.is_empty())
    };
    match (field("PRETTY_NAME"), field("NAME"), field("VERSION")) {
        (Some(pretty), _, _) => pretty,
        (None, Some(name), Some(version)) => format!("{name} {version}"),
        (None, Some(name), None) => name,
        (None, None, _) => "unknown (no /etc/os-release)".to_owned(),
    }
}

/// Undoes os-release quoting: `"…"` with `\"`, `\\`, `\$`, `` \` `` escapes, or `'…'`.
fn unquote(value: &str) -> String {
    let v = value.trim();
    if let Some(inner) = v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        return inner.to_owned();
    }
    let Some(inner) = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
        return v.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some(next @ ('"' | '\\' | '$' | '`'))) => {
                out.push(next);
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

/// The `Available` column (KiB) of POSIX `df -Pk` output, in bytes. Read as the field
/// before the `Capacity` one (`NN%`), so a file system name with spaces does not shift it.
fn disk_free(lines: &[&str]) -> Result<u64, String> {
    let unreadable = || {
        let text: Vec<&str> = lines
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .collect();
        format!(
            "cannot read the free space of {SERVOS_DIR} from `df -Pk`: {:?}",
            text.join(" / ")
        )
    };
    let row = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .nth(1)
        .ok_or_else(unreadable)?;
    let fields: Vec<&str> = row.split_whitespace().collect();
    let capacity = fields
        .iter()
        .skip(1)
        .position(|f| f.ends_with('%'))
        .ok_or_else(unreadable)?
        + 1;
    let available = fields.get(capacity - 1).ok_or_else(unreadable)?;
    let kib: u64 = available.parse().map_err(|_| unreadable())?;
    Ok(kib.saturating_mul(1024))
}

/// The Docker version (if the daemon answered) and a sentence saying how things stand.
fn docker(sections: &HashMap<&str, Vec<&str>>) -> Result<(Option<String>, String), String> {
    let exit = first_line(sections, "docker-exit", "the docker probe").map_err(|_| {
        "the facts output ends before the docker section: the script was cut short".to_owned()
    })?;
    let said: Vec<&str> = section(sections, "docker")
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    let outcome = match exit.as_str() {
        "absent" => (None, DOCKER_NOT_INSTALLED.to_owned()),
        "0" => match said.first() {
            Some(version) => (Some((*version).to_owned()), DOCKER_RUNNING.to_owned()),
            None => (
                None,
                format!("{DOCKER_UNREACHABLE}: `docker version` reported no server version"),
            ),
        },
        "124" => (
            None,
            format!(
                "{DOCKER_UNREACHABLE}: `docker version` did not answer within {DOCKER_ANSWER_SECONDS}s"
            ),
        ),
        code if said.is_empty() => (
            None,
            format!("{DOCKER_UNREACHABLE}: `docker version` exited with status {code}"),
        ),
        _ => (
            None,
            format!("{DOCKER_UNREACHABLE}: {}", shorten(&said.join(" "))),
        ),
    };
    Ok(outcome)
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= MAX_DOCKER_MESSAGE {
        return text.to_owned();
    }
    let cut: String = text.chars().take(MAX_DOCKER_MESSAGE).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn measured() -> Measured {
        Measured {
            latency_ms: 1.25,
            stale_secret_files_removed: 2,
            checked_at: "2026-01-02T03:04:05.000000Z".into(),
        }
    }

    const DEBIAN_WITH_DOCKER: &str = "
@@servos:os-release
PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"
NAME=\"Debian GNU/Linux\"
VERSION_ID=\"12\"

@@servos:kernel
6.1.0-18-amd64

@@servos:arch
x86_64

@@servos:disk
Filesystem     1024-blocks     Used Available Capacity Mounted on
/dev/vda         264212084 14770188  80515700      16% /

@@servos:docker
28.2.2

@@servos:docker-exit
0
";

    #[test]
    fn a_debian_host_with_docker_running() {
        let facts = parse(DEBIAN_WITH_DOCKER, measured()).unwrap();
        assert_eq!(
            facts,
            Facts {
                os: "Debian GNU/Linux 12 (bookworm)".into(),
                kernel: "6.1.0-18-amd64".into(),
                arch: "x86_64".into(),
                docker: Some("28.2.2".into()),
                docker_status: "running".into(),
                disk_free_bytes: 80_515_700 * 1024,
                latency_ms: 1.25,
                stale_secret_files_removed: 2,
                checked_at: "2026-01-02T03:04:05.000000Z".into(),
            }
        );
    }

    #[test]
    fn docker_absent_says_not_installed() {
        let out = "\n@@servos:os-release\nPRETTY_NAME='Alpine Linux v3.20'\n\n@@servos:kernel\n6.6.1\n\n\
                   @@servos:arch\naarch64\n\n@@servos:disk\nFilesystem 1024-blocks Used Available Capacity Mounted on\n\
                   overlay 100 40 60 40% /\n\n@@servos:docker\n\n@@servos:docker-exit\nabsent\n";
        let facts = parse(out, measured()).unwrap();
        assert_eq!(facts.os, "Alpine Linux v3.20");
        assert_eq!(facts.arch, "aarch64");
        assert_eq!(facts.docker, None);
        assert_eq!(facts.docker_status, "not installed");
        assert_eq!(facts.disk_free_bytes, 60 * 1024);
    }

    #[test]
    fn docker_installed_without_a_daemon_says_why() {
        let out = DEBIAN_WITH_DOCKER.replace(
            "28.2.2\n\n@@servos:docker-exit\n0",
            "\nCannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?\n\n@@servos:docker-exit\n1",
        );
        let facts = parse(&out, measured()).unwrap();
        assert_eq!(facts.docker, None);
        assert_eq!(
            facts.docker_status,
            "installed but daemon not reachable: Cannot connect to the Docker daemon at \
             unix:///var/run/docker.sock. Is the docker daemon running?"
        );
    }

    #[test]
    fn a_docker_daemon_that_hangs_is_reported_with_the_wait() {
        let out = DEBIAN_WITH_DOCKER.replace(
            "28.2.2\n\n@@servos:docker-exit\n0",
            "\n@@servos:docker-exit\n124",
        );
        assert_eq!(
            parse(&out, measured()).unwrap().docker_status,
            "installed but daemon not reachable: `docker version` did not answer within 15s"
        );
        let silent = DEBIAN_WITH_DOCKER.replace(
            "28.2.2\n\n@@servos:docker-exit\n0",
            "\n@@servos:docker-exit\n7",
        );
        assert_eq!(
            parse(&silent, measured()).unwrap().docker_status,
            "installed but daemon not reachable: `docker version` exited with status 7"
        );
    }

    #[test]
    fn a_long_daemon_error_is_shortened() {
        let long = "x".repeat(1000);
        let out = DEBIAN_WITH_DOCKER.replace(
            "28.2.2\n\n@@servos:docker-exit\n0",
            &format!("{long}\n@@servos:docker-exit\n1"),
        );
        let status = parse(&out, measured()).unwrap().docker_status;
        assert_eq!(
            status,
            format!("installed but daemon not reachable: {}…", "x".repeat(300))
        );
    }

    #[test]
    fn os_release_quoting_is_undone() {
        assert_eq!(
            unquote(r#""Say \"hi\" for \$5 \\ \`x\`""#),
            r#"Say "hi" for $5 \ `x`"#
        );
        assert_eq!(unquote("'single $x'"), "single $x");
        assert_eq!(unquote("bare"), "bare");
        assert_eq!(unquote(r#""a\nb""#), r"a\nb");
    }

    #[test]
    fn os_falls_back_to_name_and_version_then_to_unknown() {
        assert_eq!(os_name(&["NAME=Foo", "VERSION=\"1 (x)\""]), "Foo 1 (x)");
        assert_eq!(os_name(&["NAME=Foo"]), "Foo");
        assert_eq!(os_name(&[]), "unknown (no /etc/os-release)");
    }

    #[test]
    fn df_with_spaces_in_the_file_system_name_still_reads_available() {
        let lines = [
            "Filesystem 1024-blocks Used Available Capacity Mounted on",
            "my disk 1000 400 600 40% /var/lib/servos",
        ];
        assert_eq!(disk_free(&lines).unwrap(), 600 * 1024);
    }

    #[test]
    fn unreadable_df_output_is_an_error_quoting_it() {
        assert_eq!(
            disk_free(&["df: /var/lib/servos: No such file or directory"]).unwrap_err(),
            "cannot read the free space of /var/lib/servos from `df -Pk`: \"df: /var/lib/servos: No such file or directory\""
        );
    }

    #[test]
    fn output_cut_short_is_an_error() {
        let cut = &DEBIAN_WITH_DOCKER[..DEBIAN_WITH_DOCKER.find("@@servos:docker").unwrap()];
        assert_eq!(
            parse(cut, measured()).unwrap_err(),
            "the facts output ends before the docker section: the script was cut short"
        );
        let no_kernel = DEBIAN_WITH_DOCKER.replace("6.1.0-18-amd64", "");
        assert_eq!(
            parse(&no_kernel, measured()).unwrap_err(),
            "`uname -r` printed nothing"
        );
    }

    #[test]
    fn facts_round_trip_through_json() {
        let facts = parse(DEBIAN_WITH_DOCKER, measured()).unwrap();
        let json = serde_json::to_string(&facts).unwrap();
        assert_eq!(serde_json::from_str::<Facts>(&json).unwrap(), facts);
    }
}
