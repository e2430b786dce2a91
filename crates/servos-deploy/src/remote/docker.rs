//! The commands a deploy sends to a server, built as data by pure functions, and the pure
//! parsers of their output. Values reach scripts only as positional parameters (`"$1"`) of
//! constant script text, or as words quoted by `shell_quote`: nothing is interpolated.
//! Secrets (env values, registry passwords) never appear here: they go through stdin.

use std::time::Duration;

use servos_ssh::RemoteCommand;

use super::SECRETS_DIR;

/// How long a pull may take (large images on slow links).
pub const PULL_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How long `docker run -d` may take (it returns once the container has started).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// Seconds a probe may take before it counts as failed.
pub const PROBE_SECONDS: u32 = 5;
/// Seconds `docker stop` gives a container to exit before killing it.
pub const STOP_SECONDS: u32 = 10;
/// Lines of `docker logs` quoted when a new container fails its health check.
pub const LOG_TAIL_LINES: u32 = 20;

/// The container label holding the service id.
pub const SERVICE_LABEL: &str = "servos.service";
/// The container label holding the deployment id.
pub const DEPLOYMENT_LABEL: &str = "servos.deployment";

/// The service's own Docker network: services sharing a server cannot reach each other.
pub fn network_name(service_name: &str) -> String {
    format!("servos-{service_name}")
}

/// `servos-<service>-<first 8 characters of the deployment id>`.
pub fn container_name(service_name: &str, deployment_id: &str) -> String {
    let short: String = deployment_id
        .chars()
        .filter(|c| *c != '-')
        .take(8)
        .collect();
    format!("servos-{service_name}-{short}")
}

/// Where the env file of one container start lives on the server.
pub fn env_file_path(file_id: &str) -> String {
    format!("{SECRETS_DIR}/{file_id}.env")
}

/// Writes stdin to `path`, created with mode 0600 (umask 077): the content never appears
/// on a command line.
pub fn write_env_file(path: &str) -> RemoteCommand {
    RemoteCommand::new("umask")
        .arg("077")
        .and_then(RemoteCommand::new("cat").stdout_to(path))
        .timeout(Duration::from_secs(30))
}

/// Deletes files (missing ones are fine).
pub fn remove_files(paths: &[&str]) -> RemoteCommand {
    RemoteCommand::new("rm")
        .args(["-f", "--"])
        .args(paths.iter().copied())
}

const ENSURE_IMAGE: &str =
    "docker image inspect -- \"$1\" >/dev/null 2>&1 || docker pull -- \"$1\"";

/// Pulls a public image unless the server already has it (pull policy "if not present";
/// a rollback names an image by digest, so a present image is the right one).
pub fn ensure_image(image: &str) -> RemoteCommand {
    RemoteCommand::new("sh")
        .args(["-c", ENSURE_IMAGE, "servos", image])
        .timeout(PULL_TIMEOUT)
}

/// Logs in with the password read from stdin into a fresh `DOCKER_CONFIG` directory made
/// only for this pull, pulls, and removes the directory on every exit (success, failure,
/// HUP/INT/TERM). The directory lives in the root-only secrets directory.
const LOGIN_AND_PULL: &str = "set -e
d=$(mktemp -d /var/lib/servos/secrets/login.XXXXXXXX)
trap 'rm -rf \"$d\"' EXIT
trap 'exit 129' HUP INT TERM
DOCKER_CONFIG=\"$d\" docker login --username=\"$1\" --password-stdin -- \"$2\"
DOCKER_CONFIG=\"$d\" docker pull -- \"$3\" </dev/null";

/// `docker login --password-stdin` + `docker pull` with a temporary `DOCKER_CONFIG`; send
/// the registry password (and nothing else) on stdin.
pub fn login_and_pull(registry: &str, username: &str, image: &str) -> RemoteCommand {
    RemoteCommand::new("sh")
        .args(["-c", LOGIN_AND_PULL, "servos", username, registry, image])
        .timeout(PULL_TIMEOUT)
}

/// Prints `<image id>|<repo digests, comma-separated>`.
pub fn image_identity(image: &str) -> RemoteCommand {
    RemoteCommand::new("docker").args([
        "image",
        "inspect",
        "--format",
        "{{.Id}}|{{range .RepoDigests}}{{.}},{{end}}",
        "--",
        image,
    ])
}

/// The reference that pins `image` as inspected: the repo digest of the same repository
/// (`repo@sha256:…`, pullable anywhere) if there is one, else the first repo digest, else
/// the local image id (`sha256:…`, which `docker run` accepts on this server).
pub fn parse_image_identity(stdout: &str, image: &str) -> Option<String> {
    let line = stdout.lines().find(|l| !l.trim().is_empty())?.trim();
    let (id, digests) = line.split_once('|')?;
    let repo = repository_of(image);
    let digests: Vec<&str> = digests
        .split(',')
        .map(str::trim)
        .filter(|d| d.contains("@sha256:"))
        .collect();
    let same_repo = digests
        .iter()
        .find(|d| d.split_once('@').is_some_and(|(r, _)| r == repo));
    match same_repo.or(digests.first()) {
        Some(d) => Some((*d).to_owned()),
        None if id.starts_with("sha256:") => Some(id.to_owned()),
        None => None,
    }
}

/// `registry:5000/team/app:1.2@sha256:…` → `registry:5000/team/app`.
fn repository_of(image: &str) -> &str {
    let no_digest = image.split_once('@').map_or(image, |(r, _)| r);
    match no_digest.rfind(':') {
        // A colon after the last slash is a tag; before it, a registry port.
        Some(colon) if !no_digest[colon..].contains('/') => &no_digest[..colon],
        _ => no_digest,
    }
}

const ENSURE_NETWORK: &str = "docker network inspect -- \"$1\" >/dev/null 2>&1 || docker network create --label \"servos.service=$2\" -- \"$1\" >/dev/null";

/// Creates the service's network if missing.
pub fn ensure_network(network: &str, service_id: &str) -> RemoteCommand {
    RemoteCommand::new("sh").args(["-c", ENSURE_NETWORK, "servos", network, service_id])
}

/// Everything `docker run` needs to start one container of a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec<'a> {
    pub container: &'a str,
    pub service_id: &'a str,
    pub service_name: &'a str,
    pub deployment_id: &'a str,
    pub network: &'a str,
    pub env_file: &'a str,
    pub image: &'a str,
    /// The port the service listens on inside its network (a label for the proxy; not
    /// published on the host, where old and new containers would collide).
    pub port: Option<u16>,
    pub command: &'a [String],
}

/// `docker run -d` of a new container: labelled, on the service network (reachable there
/// by the service name), env from the env file, restarted unless stopped.
pub fn run_container(spec: &RunSpec<'_>) -> RemoteCommand {
    let mut cmd = RemoteCommand::new("docker")
        .args(["run", "-d", "--name", spec.container])
        .args([
            "--label".to_owned(),
            format!("{SERVICE_LABEL}={}", spec.service_id),
        ])
        .args([
            "--label".to_owned(),
            format!("{DEPLOYMENT_LABEL}={}", spec.deployment_id),
        ]);
    if let Some(port) = spec.port {
        cmd = cmd.args(["--label".to_owned(), format!("servos.port={port}")]);
    }
    cmd.args([
        "--network",
        spec.network,
        "--network-alias",
        spec.service_name,
    ])
    .args([
        "--env-file",
        spec.env_file,
        "--restart",
        "unless-stopped",
        "--",
        spec.image,
    ])
    .args(spec.command.iter().cloned())
    .timeout(RUN_TIMEOUT)
}

const STATE_FORMAT: &str = "{{.State.Status}}|{{.State.ExitCode}}|{{.RestartCount}}|{{if .State.Health}}{{.State.Health.Status}}{{end}}|{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}";

/// Prints `<status>|<exit code>|<restart count>|<health status or empty>|<IP addresses>`.
pub fn inspect_state(container: &str) -> RemoteCommand {
    RemoteCommand::new("docker").args([
        "inspect",
        "--type",
        "container",
        "--format",
        STATE_FORMAT,
        "--",
        container,
    ])
}

/// A container's state as [`inspect_state`] prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    /// `created`, `running`, `restarting`, `exited`, …
    pub status: String,
    /// The exit code of the last run (also after a restart).
    pub exit_code: i64,
    /// How often Docker restarted it: a new container that restarted has crashed.
    pub restarts: i64,
    /// The Docker HEALTHCHECK status (`starting`, `healthy`, `unhealthy`), if the image has one.
    pub health: Option<String>,
    pub ips: Vec<String>,
}

pub fn parse_state(stdout: &str) -> Option<ContainerState> {
    let line = stdout.lines().find(|l| !l.trim().is_empty())?.trim();
    let mut parts = line.splitn(5, '|');
    let status = parts.next()?.to_owned();
    let exit_code = parts.next()?.trim().parse().ok()?;
    let restarts = parts.next()?.trim().parse().ok()?;
    let health = parts
        .next()
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_owned);
    let ips = parts
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    Some(ContainerState {
        status,
        exit_code,
        restarts,
        health,
        ips,
    })
}

const PROBE_TCP: &str = "exec 3<>\"/dev/tcp/$1/$2\"";
const PROBE_HTTP: &str = "exec 3<>\"/dev/tcp/$1/$2\" && printf 'GET %s HTTP/1.0\\r\\nHost: %s\\r\\nConnection: close\\r\\n\\r\\n' \"$3\" \"$1\" >&3 && head -n 1 <&3";

/// Connects from the server to the container's address (bash's `/dev/tcp`, bounded by
/// `timeout`): needs nothing inside the image.
pub fn probe_tcp(ip: &str, port: u16) -> RemoteCommand {
    RemoteCommand::new("timeout")
        .args([
            PROBE_SECONDS.to_string(),
            "bash".into(),
            "-c".into(),
            PROBE_TCP.into(),
            "servos".into(),
        ])
        .args([ip.to_owned(), port.to_string()])
}

/// `GET path HTTP/1.0` to the container's address; prints the status line.
pub fn probe_http(ip: &str, port: u16, path: &str) -> RemoteCommand {
    RemoteCommand::new("timeout")
        .args([
            PROBE_SECONDS.to_string(),
            "bash".into(),
            "-c".into(),
            PROBE_HTTP.into(),
            "servos".into(),
        ])
        .args([ip.to_owned(), port.to_string(), path.to_owned()])
}

/// The status code of an HTTP status line (`HTTP/1.1 200 OK` → 200).
pub fn parse_http_status(stdout: &str) -> Option<u16> {
    let line = stdout.lines().next()?;
    let mut words = line.split_whitespace();
    if !words.next()?.starts_with("HTTP/") {
        return None;
    }
    words.next()?.parse().ok()
}

/// A health check path must be an absolute path of visible ASCII (it goes into a request
/// line: no spaces or control characters that could add headers).
pub fn valid_health_path(path: &str) -> bool {
    path.starts_with('/') && path.len() <= 1024 && path.chars().all(|c| c.is_ascii_graphic())
}

/// The last lines a container wrote (stdout and stderr).
pub fn container_logs(container: &str) -> RemoteCommand {
    RemoteCommand::new("docker").args([
        "logs".to_owned(),
        "--tail".to_owned(),
        LOG_TAIL_LINES.to_string(),
        "--".to_owned(),
        container.to_owned(),
    ])
}

/// The most lines `servos logs --tail` may ask for, per container.
pub const MAX_LOG_TAIL: u32 = 100_000;
/// How long `docker logs` without `--follow` may take.
pub const LOGS_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a followed `docker logs --follow` may run: a day, then the follower reconnects.
/// Long before that, a client that goes away ends it (the SSH session kills the command
/// when its future is dropped).
pub const FOLLOW_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// A container's log for `servos logs`: the last `tail` lines, each prefixed with Docker's
/// RFC 3339 timestamp, then (with `follow`) new lines as they come.
pub fn read_logs(container: &str, tail: u32, follow: bool) -> RemoteCommand {
    let mut cmd = RemoteCommand::new("docker").args([
        "logs".to_owned(),
        "--tail".to_owned(),
        tail.to_string(),
    ]);
    if follow {
        cmd = cmd.arg("--follow");
    }
    cmd.args(["--timestamps", "--", container])
        .timeout(if follow { FOLLOW_TIMEOUT } else { LOGS_TIMEOUT })
}

/// Names of the service's containers on a server (`all`: stopped ones too).
pub fn list_containers(service_id: &str, all: bool) -> RemoteCommand {
    let mut cmd = RemoteCommand::new("docker").arg("ps");
    if all {
        cmd = cmd.arg("-a");
    }
    cmd.args([
        "--filter".to_owned(),
        format!("label={SERVICE_LABEL}={service_id}"),
    ])
    .args(["--format", "{{.Names}}"])
}

/// Container names from [`list_containers`] output.
pub fn parse_names(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `docker stop` (graceful, then killed after [`STOP_SECONDS`]).
pub fn stop_containers(names: &[String]) -> RemoteCommand {
    RemoteCommand::new("docker")
        .args([
            "stop".to_owned(),
            "--time".to_owned(),
            STOP_SECONDS.to_string(),
            "--".to_owned(),
        ])
        .args(names.iter().cloned())
        .timeout(Duration::from_secs(u64::from(STOP_SECONDS) + 60))
}

pub fn start_containers(names: &[String]) -> RemoteCommand {
    RemoteCommand::new("docker")
        .args(["start", "--"])
        .args(names.iter().cloned())
}

pub fn restart_containers(names: &[String]) -> RemoteCommand {
    RemoteCommand::new("docker")
        .args([
            "restart".to_owned(),
            "--time".to_owned(),
            STOP_SECONDS.to_string(),
            "--".to_owned(),
        ])
        .args(names.iter().cloned())
        .timeout(Duration::from_secs(u64::from(STOP_SECONDS) + 60))
}

/// Removes containers, stopping them first if needed.
pub fn remove_containers(names: &[String]) -> RemoteCommand {
    RemoteCommand::new("docker")
        .args(["rm", "-f", "--"])
        .args(names.iter().cloned())
}

/// Removes the service's network (after its containers).
pub fn remove_network(network: &str) -> RemoteCommand {
    RemoteCommand::new("docker").args(["network", "rm", "--", network])
}

const ROUTE_TO: &str = "ip -4 -o route get \"$1\" 2>&1 | head -n 1; ip -4 neigh show to \"$1\" 2>&1 | head -n 1";

/// How the server would reach `ip` (the route, and the neighbour entry if any): said when
/// a container's probes got no answer at all, so the user sees where the path ends.
pub fn route_to(ip: &str) -> RemoteCommand {
    RemoteCommand::new("sh").args(["-c", ROUTE_TO, "servos", ip])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_check_is_a_constant_script() {
        assert_eq!(
            route_to("172.18.0.2").to_shell(),
            "sh -c 'ip -4 -o route get \"$1\" 2>&1 | head -n 1; ip -4 neigh show to \"$1\" 2>&1 | head -n 1' servos 172.18.0.2"
        );
    }

    const HOSTILE: &str = "x'; touch /tmp/pwned; echo '$(id)\n";

    #[test]
    fn names_are_derived_from_service_and_deployment() {
        assert_eq!(network_name("web"), "servos-web");
        assert_eq!(
            container_name("web", "1b2c3d4e-5f60-4718-9abc-def012345678"),
            "servos-web-1b2c3d4e"
        );
        assert_eq!(env_file_path("7f0e"), "/var/lib/servos/secrets/7f0e.env");
    }

    #[test]
    fn the_env_file_is_written_from_stdin_with_a_private_umask() {
        assert_eq!(
            write_env_file("/var/lib/servos/secrets/7f0e.env").to_shell(),
            "umask 077 && cat > /var/lib/servos/secrets/7f0e.env"
        );
        assert_eq!(
            remove_files(&["/var/lib/servos/secrets/7f0e.env"]).to_shell(),
            "rm -f -- /var/lib/servos/secrets/7f0e.env"
        );
    }

    #[test]
    fn login_and_pull_is_a_constant_script_with_quoted_arguments() {
        let cmd = login_and_pull(
            "registry.example:5000",
            "ci bot",
            "registry.example:5000/team/app:1.2",
        );
        assert_eq!(
            cmd.to_shell(),
            "sh -c 'set -e\n\
             d=$(mktemp -d /var/lib/servos/secrets/login.XXXXXXXX)\n\
             trap '\\''rm -rf \"$d\"'\\'' EXIT\n\
             trap '\\''exit 129'\\'' HUP INT TERM\n\
             DOCKER_CONFIG=\"$d\" docker login --username=\"$1\" --password-stdin -- \"$2\"\n\
             DOCKER_CONFIG=\"$d\" docker pull -- \"$3\" </dev/null' \
             servos 'ci bot' registry.example:5000 registry.example:5000/team/app:1.2"
        );
        assert_eq!(cmd.timeout_override(), Some(PULL_TIMEOUT));
    }

    #[test]
    fn hostile_registry_values_stay_positional_parameters() {
        let text = login_and_pull(HOSTILE, HOSTILE, "app").to_shell();
        let quoted = "'x'\\''; touch /tmp/pwned; echo '\\''$(id)\n'";
        assert!(
            text.ends_with(&format!("servos {quoted} {quoted} app")),
            "{text}"
        );
    }

    #[test]
    fn public_images_are_pulled_only_when_missing() {
        assert_eq!(
            ensure_image("busybox:1.36").to_shell(),
            "sh -c 'docker image inspect -- \"$1\" >/dev/null 2>&1 || docker pull -- \"$1\"' servos busybox:1.36"
        );
    }

    #[test]
    fn the_image_identity_prefers_the_repo_digest_of_the_same_repository() {
        let id = "sha256:aaaa";
        assert_eq!(
            parse_image_identity(
                &format!("{id}|other/x@sha256:bbbb,registry:5000/team/app@sha256:cccc\n"),
                "registry:5000/team/app:1.2"
            ),
            Some("registry:5000/team/app@sha256:cccc".into())
        );
        assert_eq!(
            parse_image_identity(&format!("{id}|other/x@sha256:bbbb,\n"), "app:1"),
            Some("other/x@sha256:bbbb".into())
        );
        assert_eq!(
            parse_image_identity(&format!("{id}|\n"), "local:1"),
            Some(id.into())
        );
        assert_eq!(parse_image_identity("garbage", "local:1"), None);
        assert_eq!(repository_of("registry:5000/app"), "registry:5000/app");
        assert_eq!(repository_of("app@sha256:ff"), "app");
        assert_eq!(
            image_identity("app:1").to_shell(),
            "docker image inspect --format '{{.Id}}|{{range .RepoDigests}}{{.}},{{end}}' -- app:1"
        );
    }

    #[test]
    fn the_network_is_created_only_when_missing() {
        assert_eq!(
            ensure_network("servos-web", "id-1").to_shell(),
            "sh -c 'docker network inspect -- \"$1\" >/dev/null 2>&1 || docker network create --label \"servos.service=$2\" -- \"$1\" >/dev/null' servos servos-web id-1"
        );
    }

    #[test]
    fn docker_run_has_labels_network_env_file_and_the_command_after_the_image() {
        let command = vec!["httpd".to_owned(), "-f".to_owned(), HOSTILE.to_owned()];
        let spec = RunSpec {
            container: "servos-web-1b2c3d4e",
            service_id: "svc-1",
            service_name: "web",
            deployment_id: "dep-1",
            network: "servos-web",
            env_file: "/var/lib/servos/secrets/f.env",
            image: "app@sha256:ff",
            port: Some(8080),
            command: &command,
        };
        assert_eq!(
            run_container(&spec).to_shell(),
            "docker run -d --name servos-web-1b2c3d4e --label 'servos.service=svc-1' --label 'servos.deployment=dep-1' \
             --label 'servos.port=8080' --network servos-web --network-alias web \
             --env-file /var/lib/servos/secrets/f.env --restart unless-stopped -- app@sha256:ff \
             httpd -f 'x'\\''; touch /tmp/pwned; echo '\\''$(id)\n'"
        );
        let bare = RunSpec {
            port: None,
            command: &[],
            ..spec
        };
        assert!(
            run_container(&bare)
                .to_shell()
                .ends_with("--restart unless-stopped -- app@sha256:ff")
        );
    }

    #[test]
    fn container_state_is_parsed_with_and_without_a_healthcheck() {
        assert_eq!(
            parse_state("running|0|0||172.18.0.2 \n"),
            Some(ContainerState {
                status: "running".into(),
                exit_code: 0,
                restarts: 0,
                health: None,
                ips: vec!["172.18.0.2".into()]
            })
        );
        assert_eq!(
            parse_state("exited|3|2|unhealthy|"),
            Some(ContainerState {
                status: "exited".into(),
                exit_code: 3,
                restarts: 2,
                health: Some("unhealthy".into()),
                ips: vec![]
            })
        );
        assert_eq!(parse_state(""), None);
        assert_eq!(
            inspect_state("c").to_shell(),
            "docker inspect --type container --format '{{.State.Status}}|{{.State.ExitCode}}|{{.RestartCount}}|{{if .State.Health}}{{.State.Health.Status}}{{end}}|{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' -- c"
        );
    }

    #[test]
    fn probes_pass_address_port_and_path_as_parameters() {
        assert_eq!(
            probe_tcp("172.18.0.2", 80).to_shell(),
            "timeout 5 bash -c 'exec 3<>\"/dev/tcp/$1/$2\"' servos 172.18.0.2 80"
        );
        assert_eq!(
            probe_http("172.18.0.2", 80, "/health?x=$(id)").to_shell(),
            "timeout 5 bash -c 'exec 3<>\"/dev/tcp/$1/$2\" && printf '\\''GET %s HTTP/1.0\\r\\nHost: %s\\r\\nConnection: close\\r\\n\\r\\n'\\'' \"$3\" \"$1\" >&3 && head -n 1 <&3' servos 172.18.0.2 80 '/health?x=$(id)'"
        );
        assert_eq!(parse_http_status("HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_http_status("SSH-2.0"), None);
        assert!(valid_health_path("/healthz?full=1"));
        assert!(!valid_health_path("/a b"));
        assert!(!valid_health_path("/a\r\nX-Evil: 1"));
        assert!(!valid_health_path("healthz"));
    }

    #[test]
    fn lifecycle_commands_name_containers_after_a_double_dash() {
        let names = vec!["servos-web-1".to_owned(), "servos-web-2".to_owned()];
        assert_eq!(
            list_containers("svc-1", true).to_shell(),
            "docker ps -a --filter 'label=servos.service=svc-1' --format '{{.Names}}'"
        );
        assert_eq!(
            list_containers("svc-1", false).to_shell(),
            "docker ps --filter 'label=servos.service=svc-1' --format '{{.Names}}'"
        );
        assert_eq!(
            parse_names("a\n\nb\n"),
            vec!["a".to_owned(), "b".to_owned()]
        );
        assert_eq!(
            stop_containers(&names).to_shell(),
            "docker stop --time 10 -- servos-web-1 servos-web-2"
        );
        assert_eq!(
            start_containers(&names).to_shell(),
            "docker start -- servos-web-1 servos-web-2"
        );
        assert_eq!(
            restart_containers(&names).to_shell(),
            "docker restart --time 10 -- servos-web-1 servos-web-2"
        );
        assert_eq!(
            remove_containers(&names).to_shell(),
            "docker rm -f -- servos-web-1 servos-web-2"
        );
        assert_eq!(
            remove_network("servos-web").to_shell(),
            "docker network rm -- servos-web"
        );
        assert_eq!(container_logs("c").to_shell(), "docker logs --tail 20 -- c");
    }

    #[test]
    fn read_logs_names_the_container_after_a_double_dash_and_follows_on_request() {
        let cmd = read_logs("servos-web-1b2c3d4e", 200, false);
        assert_eq!(
            cmd.to_shell(),
            "docker logs --tail 200 --timestamps -- servos-web-1b2c3d4e"
        );
        assert_eq!(cmd.timeout_override(), Some(LOGS_TIMEOUT));
        let cmd = read_logs("servos-web-1b2c3d4e", 0, true);
        assert_eq!(
            cmd.to_shell(),
            "docker logs --tail 0 --follow --timestamps -- servos-web-1b2c3d4e"
        );
        assert_eq!(cmd.timeout_override(), Some(FOLLOW_TIMEOUT));
        assert_eq!(
            read_logs(HOSTILE, MAX_LOG_TAIL, true).to_shell(),
            "docker logs --tail 100000 --follow --timestamps -- 'x'\\''; touch /tmp/pwned; echo '\\''$(id)\n'"
        );
        assert_eq!(
            read_logs("--help", 1, false).to_shell(),
            "docker logs --tail 1 --timestamps -- --help"
        );
    }
}
