//! The commands of a build from git on a builder, and of moving its image to servers,
//! built as data by pure functions. Values reach the scripts only as positional
//! parameters of constant script text. The git token never appears here: the build
//! script reads the `Authorization` header value from its stdin and puts it only into the
//! environment of `git` (`GIT_CONFIG_VALUE_0`), never into argv, a URL or `.git/config`.

use std::time::Duration;

use servos_ssh::RemoteCommand;

use super::SERVOS_DIR;

/// Where builds get their work directories: `/var/lib/servos/builds/<deployment id>`.
pub const BUILDS_DIR: &str = "/var/lib/servos/builds";

/// Marks a line the build script prints for the control plane (not build output).
pub const MARK: &str = "@@servos:";

/// Extra time the SSH command gets beyond the build's own limit: the script stops itself
/// (and removes its work directory) first; this is only the backstop.
pub const BACKSTOP: Duration = Duration::from_secs(60);

/// How long `docker save | docker load` of one image may take.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// What to check out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    /// A branch or tag: `git clone --depth 1 --branch REF`.
    Branch,
    /// A full commit SHA: `git init` + `git fetch --depth 1 URL SHA`.
    Commit,
}

impl RefKind {
    /// A 40- (SHA-1) or 64-character (SHA-256) hex string is a commit; anything else a
    /// branch or tag.
    pub fn of(git_ref: &str) -> Self {
        let hex = git_ref.chars().all(|c| c.is_ascii_hexdigit());
        if hex && matches!(git_ref.len(), 40 | 64) {
            RefKind::Commit
        } else {
            RefKind::Branch
        }
    }

    fn word(self) -> &'static str {
        match self {
            RefKind::Branch => "branch",
            RefKind::Commit => "commit",
        }
    }
}

/// Everything one build needs, but the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSpec<'a> {
    /// `BUILDS_DIR/<deployment id>`.
    pub work_dir: &'a str,
    pub repository: &'a str,
    pub git_ref: &'a str,
    /// Relative to the repository root; empty: `Dockerfile` in the context.
    pub dockerfile: &'a str,
    /// Relative to the repository root.
    pub context: &'a str,
    /// The image name without tag; the commit SHA becomes the tag.
    pub image_repository: &'a str,
    pub limit: Duration,
}

/// The build, one script: read the auth header from stdin, make a fresh private work
/// directory (sweeping work directories older than the time limit plus an hour, which only
/// a killed build leaves), shallow clone (or fetch one commit), print the commit, `docker build`, print
/// the image; every step bounded by what is left of the time limit; the work directory is
/// removed on every exit (success, failure, timeout, HUP/INT/TERM). Lines starting with
/// [`MARK`] are for the control plane; everything else is build output.
const BUILD_SCRIPT: &str = r#"exec 2>&1
dir=$1 url=$2 kind=$3 ref=$4 dockerfile=$5 context=$6 repo=$7 limit=$8
IFS= read -r auth || auth=
trap 'cd / && rm -rf -- "$dir"' EXIT
trap 'exit 129' HUP INT TERM
deadline=$(( $(date +%s) + limit ))
left() { l=$(( deadline - $(date +%s) )); [ "$l" -gt 0 ] || l=1; echo "$l"; }
failed() { rc=$?; if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then echo "@@servos:timeout $1"; exit 124; fi; echo "@@servos:failed $1"; exit 1; }
git_auth() {
  if [ -n "$auth" ]; then
    GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=http.extraHeader GIT_CONFIG_VALUE_0="Authorization: $auth" timeout -k 5 "$(left)" git "$@"
  else
    timeout -k 5 "$(left)" git "$@"
  fi
}
export GIT_TERMINAL_PROMPT=0
umask 077
mkdir -p /var/lib/servos/builds && rm -rf -- "$dir" && mkdir -- "$dir" && cd -- "$dir" || failed 'preparing the work directory'
find /var/lib/servos/builds -mindepth 1 -maxdepth 1 -type d -mmin +$(( limit / 60 + 60 )) -exec rm -rf -- {} + 2>/dev/null
if [ "$kind" = commit ]; then
  git init -q src && cd src && git_auth fetch -q --depth 1 -- "$url" "$ref" && git checkout -q FETCH_HEAD || failed 'fetching the commit'
else
  git_auth clone -q --depth 1 --branch "$ref" -- "$url" src && cd src || failed 'cloning'
fi
commit=$(git rev-parse HEAD) || failed 'reading the commit'
echo "@@servos:commit $commit"
if [ -n "$dockerfile" ]; then set -- -f "$dockerfile"; else set --; fi
timeout -k 10 "$(left)" docker build "$@" -t "$repo:$commit" -- "$context" </dev/null || failed 'docker build'
echo "@@servos:image $repo:$commit""#;

/// `sh -c BUILD_SCRIPT`; send `<auth header value or nothing>\n` on stdin.
pub fn build(spec: &BuildSpec<'_>) -> RemoteCommand {
    RemoteCommand::new("sh")
        .args(["-c", BUILD_SCRIPT, "servos"])
        .args([
            spec.work_dir,
            spec.repository,
            RefKind::of(spec.git_ref).word(),
            spec.git_ref,
            spec.dockerfile,
            spec.context,
            spec.image_repository,
        ])
        .arg(spec.limit.as_secs().max(1).to_string())
        .timeout(spec.limit + BACKSTOP)
}

/// The work directory of a deployment's build.
pub fn work_dir(deployment_id: &str) -> String {
    format!("{BUILDS_DIR}/{deployment_id}")
}

/// Removes a build's work directory (the script does it itself; this is for a build whose
/// script was killed) and any older than a day.
pub fn remove_work_dir(path: &str) -> RemoteCommand {
    RemoteCommand::new("rm").args(["-rf", "--", path])
}

/// A control line of the build script's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mark {
    Commit(String),
    Image(String),
    Failed(String),
    Timeout(String),
}

/// Reads a [`MARK`] line; `None` for build output.
pub fn parse_mark(line: &str) -> Option<Mark> {
    let rest = line.trim_end().strip_prefix(MARK)?;
    let (word, value) = rest.split_once(' ').unwrap_or((rest, ""));
    let value = value.to_owned();
    match word {
        "commit" => Some(Mark::Commit(value)),
        "image" => Some(Mark::Image(value)),
        "failed" => Some(Mark::Failed(value)),
        "timeout" => Some(Mark::Timeout(value)),
        _ => None,
    }
}

/// `docker save` of one image to stdout (a tar stream).
pub fn save(image: &str) -> RemoteCommand {
    RemoteCommand::new("docker")
        .args(["save", "--", image])
        .timeout(TRANSFER_TIMEOUT)
}

/// `docker load` from stdin.
pub fn load() -> RemoteCommand {
    RemoteCommand::new("docker")
        .args(["load", "--quiet"])
        .timeout(TRANSFER_TIMEOUT)
}

/// The image id (`sha256:…`), or a failure if the host does not have the image.
pub fn image_id(image: &str) -> RemoteCommand {
    RemoteCommand::new("docker").args(["image", "inspect", "--format", "{{.Id}}", "--", image])
}

/// Logs in with the password read from stdin into a throw-away `DOCKER_CONFIG`, tags the
/// built image with its registry name, pushes it, and removes the directory on every exit.
const LOGIN_AND_PUSH: &str = "set -e
d=$(mktemp -d /var/lib/servos/secrets/login.XXXXXXXX)
trap 'rm -rf \"$d\"' EXIT
trap 'exit 129' HUP INT TERM
DOCKER_CONFIG=\"$d\" docker login --username=\"$1\" --password-stdin -- \"$2\"
docker tag \"$3\" \"$4\"
DOCKER_CONFIG=\"$d\" docker push -- \"$4\" </dev/null";

/// Pushes `local` as `remote` to a private registry; send the password on stdin.
pub fn login_and_push(registry: &str, username: &str, local: &str, remote: &str) -> RemoteCommand {
    RemoteCommand::new("install")
        .args(["-d", "-m", "0700", &format!("{SERVOS_DIR}/secrets")])
        .and_then(RemoteCommand::new("sh").args([
            "-c",
            LOGIN_AND_PUSH,
            "servos",
            username,
            registry,
            local,
            remote,
        ]))
        .timeout(TRANSFER_TIMEOUT)
}

/// The name a built image gets in a registry: `<registry host>/servos/<service>:<commit>`
/// (the registry's URL without scheme or trailing slash).
pub fn registry_image(registry_url: &str, service: &str, commit: &str) -> String {
    let host = registry_url
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    format!("{host}/servos/{service}:{commit}")
}

/// The local name of a service's built images (the commit SHA is the tag).
pub fn local_repository(service: &str) -> String {
    format!("servos/{service}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "x'; touch /tmp/pwned; echo '$(id)\n";

    #[test]
    fn refs_of_forty_or_sixty_four_hex_digits_are_commits() {
        assert_eq!(RefKind::of(&"a".repeat(40)), RefKind::Commit);
        assert_eq!(RefKind::of(&"0f".repeat(32)), RefKind::Commit);
        assert_eq!(RefKind::of("main"), RefKind::Branch);
        assert_eq!(RefKind::of("v1.2.3"), RefKind::Branch);
        assert_eq!(RefKind::of(&"a".repeat(39)), RefKind::Branch);
        assert_eq!(RefKind::of("deadbeef"), RefKind::Branch);
    }

    #[test]
    fn the_build_passes_every_value_as_a_parameter_and_never_a_secret() {
        let spec = BuildSpec {
            work_dir: "/var/lib/servos/builds/dep-1",
            repository: "https://git.example/team/app.git",
            git_ref: HOSTILE,
            dockerfile: "docker/Dockerfile",
            context: ".",
            image_repository: "servos/web",
            limit: Duration::from_secs(1800),
        };
        let cmd = build(&spec);
        let text = cmd.to_shell();
        assert!(
            text.ends_with(
                "servos /var/lib/servos/builds/dep-1 https://git.example/team/app.git branch \
                 'x'\\''; touch /tmp/pwned; echo '\\''$(id)\n' docker/Dockerfile . servos/web 1800"
            ),
            "{text}"
        );
        assert!(text.starts_with("sh -c 'exec 2>&1\n"), "{text}");
        assert_eq!(cmd.timeout_override(), Some(Duration::from_secs(1860)));
        // The token only ever travels in the environment of git, read from stdin.
        assert!(BUILD_SCRIPT.contains("IFS= read -r auth"));
        assert!(BUILD_SCRIPT.contains(
            "GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=http.extraHeader GIT_CONFIG_VALUE_0=\"Authorization: $auth\" timeout"
        ));
        assert_eq!(BUILD_SCRIPT.matches("$auth").count(), 2);
        let commit = build(&BuildSpec {
            git_ref: &"ab".repeat(20),
            dockerfile: "",
            ..spec
        })
        .to_shell();
        assert!(
            commit.ends_with(&format!(" commit {} '' . servos/web 1800", "ab".repeat(20))),
            "{commit}"
        );
    }

    #[test]
    fn marks_are_told_from_build_output() {
        assert_eq!(
            parse_mark("@@servos:commit 0123abcd\n"),
            Some(Mark::Commit("0123abcd".into()))
        );
        assert_eq!(
            parse_mark("@@servos:image servos/web:0123"),
            Some(Mark::Image("servos/web:0123".into()))
        );
        assert_eq!(
            parse_mark("@@servos:failed docker build"),
            Some(Mark::Failed("docker build".into()))
        );
        assert_eq!(
            parse_mark("@@servos:timeout cloning"),
            Some(Mark::Timeout("cloning".into()))
        );
        assert_eq!(parse_mark("Step 1/3 : FROM busybox"), None);
        assert_eq!(parse_mark("@@servos:other x"), None);
    }

    #[test]
    fn transfer_and_registry_commands_are_exactly_these() {
        assert_eq!(
            save("servos/web:abc").to_shell(),
            "docker save -- servos/web:abc"
        );
        assert_eq!(load().to_shell(), "docker load --quiet");
        assert_eq!(
            image_id("servos/web:abc").to_shell(),
            "docker image inspect --format '{{.Id}}' -- servos/web:abc"
        );
        assert_eq!(work_dir("dep-1"), "/var/lib/servos/builds/dep-1");
        assert_eq!(
            remove_work_dir(&work_dir("dep-1")).to_shell(),
            "rm -rf -- /var/lib/servos/builds/dep-1"
        );
        assert_eq!(
            registry_image("https://registry.example:5000/", "web", "abc"),
            "registry.example:5000/servos/web:abc"
        );
        assert_eq!(local_repository("web"), "servos/web");
        let push = login_and_push(
            "registry.example:5000",
            HOSTILE,
            "servos/web:abc",
            "registry.example:5000/servos/web:abc",
        )
        .to_shell();
        assert!(
            push.starts_with("install -d -m 0700 /var/lib/servos/secrets && sh -c 'set -e\n"),
            "{push}"
        );
        assert!(
            push.ends_with(
                "servos 'x'\\''; touch /tmp/pwned; echo '\\''$(id)\n' registry.example:5000 servos/web:abc registry.example:5000/servos/web:abc"
            ),
            "{push}"
        );
    }
}
