//! Mesh-only services: how `<mesh address>:<port>` of a server leads to the service's
//! current container, with the machinery of [`crate::upstream`] (one per-service nftables
//! table replaced in one transaction, a state file per pointer, one watcher for both).
//!
//! Docker does not publish the port. The pointer of a mesh-only service is its table
//! `ip servos-_mesh-<service>` (a service name starts with a letter or digit, so this never
//! names a Caddy pointer, `servos-<service>`: a domain added by mistake to a mesh-only
//! service cannot replace or remove it) with one DNAT rule in the `prerouting` nat hook
//! (traffic from the other servers, arriving on the mesh interface) and the same rule in
//! `output` (the server itself):
//!
//! ```text
//! table ip servos-_mesh-b {
//!     chain prerouting {
//!         type nat hook prerouting priority -110; policy accept;
//!         ip daddr 10.77.0.2 tcp dport 7000 dnat to 172.18.0.3:7000
//!     }
//!     chain output {
//!         type nat hook output priority -110; policy accept;
//!         ip daddr 10.77.0.2 tcp dport 7000 dnat to 172.18.0.3:7000
//!     }
//! }
//! ```
//!
//! Why this fixes what `docker run --publish <mesh address>:<port>` got wrong:
//! - a DNAT rule does not need the address to exist on an interface, so it does not matter
//!   whether Docker starts the container before the agent creates `servos0` at boot;
//! - nothing binds a host port, so the new container starts next to the old one and the
//!   deploy switches the rule atomically once the new one is healthy; established
//!   connections stay on the old container (conntrack) through the drain: no gap;
//! - a new mesh address is one more switch of the rule (see `servos-deploy`'s
//!   `mesh_publish`), not a new container.
//!
//! The state file is `[upstream::STATE_DIR]/servos-_mesh-<service>` =
//! `<mesh address> <port> <container> mesh`: the fourth field names the pointer's kind,
//! and the watcher applies it with `point_mesh` instead of `point` (at boot, and when
//! Docker restarts the container with a new IP). The container's address is read on the
//! service's network, `servos-<service>`.
//!
//! Two per-server iptables chains go with the rules, (re)installed atomically with
//! `iptables-restore --noflush` by every `point_mesh` (so by the watcher at boot too):
//! - `raw SERVOS-MESH` (jumped to from raw `PREROUTING`): a packet for the mesh address
//!   must come in through the mesh interface, where the agent's eBPF classifier enforces
//!   the policy, or from the loopback or a local Docker bridge; anything else is dropped
//!   before connection tracking and before the DNAT. Linux accepts a packet for any local
//!   address on any interface, so without it a neighbour on the public network routing the
//!   mesh address to this server would get around the classifier.
//! - `filter SERVOS-MESH-FORWARD` (jumped to from `DOCKER-USER`): Docker 28 drops forwarded
//!   traffic to container ports it did not publish, coming from any interface but the
//!   container's bridge. This admits exactly the connections the mesh DNAT made (conntrack
//!   state DNAT, original destination the mesh address) from the mesh interface and the
//!   local bridges, to a Docker bridge, and their replies (which Docker's isolation between
//!   bridges would drop on their way back to a container on another local bridge). It
//!   needs IP forwarding on, which Docker turns on.
//!
//! When the last mesh-only service leaves the server, both chains go with its table.
//!
//! IPv4 only.

use std::net::SocketAddrV4;

use servos_ssh::RemoteCommand;

use crate::upstream::{self, STATE_DIR};
use crate::{HostIo, ProxyError};

/// The agent's mesh interface (its default name; installation does not change it).
pub const MESH_INTERFACE: &str = "servos0";

/// The state file's fourth field for a mesh pointer.
pub const KIND: &str = "mesh";

/// The nftables table and state file of a service's mesh pointer: `servos-_mesh-<service>`.
pub fn table(service: &str) -> String {
    format!("servos-_mesh-{service}")
}

/// The shell functions of mesh pointers, shared by the deploy and the watcher:
/// `mesh_guard MESH_IP` installs the two chains (idempotent, atomic per table),
/// `mesh_unguard` removes them, `point_mesh TABLE MESH_IP PORT CONTAINER` installs the
/// guard then replaces the table in one `nft` transaction and prints `target=IP:PORT`.
pub const MESH_FNS: &str = r#"mesh_guard() {
  printf '*raw\n:SERVOS-MESH - [0:0]\n-A SERVOS-MESH ! -d %s/32 -j RETURN\n-A SERVOS-MESH -i servos0 -j RETURN\n-A SERVOS-MESH -i lo -j RETURN\n-A SERVOS-MESH -i docker0 -j RETURN\n-A SERVOS-MESH -i br-+ -j RETURN\n-A SERVOS-MESH -j DROP\nCOMMIT\n*filter\n:SERVOS-MESH-FORWARD - [0:0]\n-A SERVOS-MESH-FORWARD -i servos0 -o br-+ -m conntrack --ctstate DNAT --ctorigdst %s/32 -j ACCEPT\n-A SERVOS-MESH-FORWARD -i docker0 -o br-+ -m conntrack --ctstate DNAT --ctorigdst %s/32 -j ACCEPT\n-A SERVOS-MESH-FORWARD -i br-+ -o br-+ -m conntrack --ctstate DNAT --ctorigdst %s/32 -j ACCEPT\n-A SERVOS-MESH-FORWARD -i br-+ -m conntrack --ctdir REPLY --ctstate DNAT --ctorigdst %s/32 -j ACCEPT\nCOMMIT\n' "$1" "$1" "$1" "$1" "$1" | iptables-restore -w --noflush || return 1
  iptables -w -t raw -C PREROUTING -j SERVOS-MESH 2>/dev/null || iptables -w -t raw -I PREROUTING -j SERVOS-MESH || return 1
  iptables -w -N DOCKER-USER 2>/dev/null || true
  iptables -w -C DOCKER-USER -j SERVOS-MESH-FORWARD 2>/dev/null || iptables -w -I DOCKER-USER -j SERVOS-MESH-FORWARD || return 1
  mesh_old_jumps
}
mesh_old_jumps() {
  iptables -w -t raw -S PREROUTING | sed -n 's/^-A PREROUTING \(-d [0-9./]* -j SERVOS-MESH\)$/\1/p' | while read -r rule; do
    iptables -w -t raw -D PREROUTING $rule || true
  done
}
mesh_unguard() {
  while iptables -w -t raw -D PREROUTING -j SERVOS-MESH 2>/dev/null; do :; done
  mesh_old_jumps
  iptables -w -t raw -F SERVOS-MESH 2>/dev/null && iptables -w -t raw -X SERVOS-MESH
  while iptables -w -D DOCKER-USER -j SERVOS-MESH-FORWARD 2>/dev/null; do :; done
  iptables -w -F SERVOS-MESH-FORWARD 2>/dev/null && iptables -w -X SERVOS-MESH-FORWARD
  return 0
}
point_mesh() {
  net="servos-${1#servos-_mesh-}"
  ip=$(docker inspect -f "{{with index .NetworkSettings.Networks \"$net\"}}{{.IPAddress}}{{end}}" -- "$4" 2>/dev/null) || ip=
  if [ -z "$ip" ]; then echo "container $4 has no address on network $net" >&2; return 1; fi
  mesh_guard "$2" || return 1
  { printf 'add table ip %s\ndelete table ip %s\ntable ip %s {\n\tchain prerouting {\n\t\ttype nat hook prerouting priority -110; policy accept;\n\t\tip daddr %s tcp dport %s dnat to %s:%s\n\t}\n\tchain output {\n\t\ttype nat hook output priority -110; policy accept;\n\t\tip daddr %s tcp dport %s dnat to %s:%s\n\t}\n}\n' \
    "$1" "$1" "$1" "$2" "$3" "$ip" "$3" "$2" "$3" "$ip" "$3"; stable_ct "$2" "$3"; } | nft -f - || return 1
  echo "target=$ip:$3"
}
"#;

const NEED_IPTABLES: &str = "command -v iptables-restore >/dev/null 2>&1 || { echo 'iptables-restore not found: install the iptables package on this server' >&2; exit 127; }\n";


/// The deploy's switch: `sh -c SCRIPT servos DIR TABLE MESH_IP PORT CONTAINER`, the watcher
/// file on stdin. As [`upstream::point_script`], with `point_mesh` and the kind recorded;
/// restarts the watcher if its script changed. Prints `target=IP:PORT`.
pub fn point_script() -> String {
    upstream::switch_script(NEED_IPTABLES, MESH_FNS, Some(KIND))
}

/// Points `mesh` (the server's mesh address and the service's port) at `container`.
pub fn point_command(service: &str, mesh: SocketAddrV4, container: &str) -> RemoteCommand {
    RemoteCommand::new("sh").args([
        "-c".to_owned(),
        point_script(),
        "servos".to_owned(),
        STATE_DIR.to_owned(),
        table(service),
        mesh.ip().to_string(),
        mesh.port().to_string(),
        container.to_owned(),
    ])
}

/// `sh -c SCRIPT servos DIR TABLE WAS_MESH`: when the service's pointer is a mesh pointer,
/// forgets it and removes its table; then, if it was a mesh pointer or `WAS_MESH` is `mesh`
/// (the control plane knows the service was published on the mesh) and no mesh pointer is
/// left on the server, removes the guard chains. Prints what it removed.
pub fn unpublish_script() -> String {
    format!(
        "dir=\"$1\"; t=\"$2\"\n{MESH_FNS}\
         kind=; [ -f \"$dir/$t\" ] && read -r x1 x2 x3 kind < \"$dir/$t\"\n\
         [ \"$kind\" = {KIND} ] || [ \"$3\" = {KIND} ] || exit 0\n\
         mkdir -p -- \"$dir\"\nexec 9>\"$dir/.lock\"\nflock 9\n\
         if [ \"$kind\" = {KIND} ]; then\n\
         \x20 nft delete element ip servos-conntrack stable \"{{ $x1 . $x2 }}\" </dev/null 2>/dev/null || true\n\
         \x20 rm -f -- \"$dir/$t\"\n\
         \x20 printf 'add table ip %s\\ndelete table ip %s\\n' \"$t\" \"$t\" | nft -f - || exit 1\n\
         \x20 echo \"removed=table\"\nfi\n\
         for f in \"$dir\"/servos-*; do\n\
         \x20 [ -f \"$f\" ] || continue\n\
         \x20 k=; read -r x1 x2 x3 k < \"$f\" || true\n\
         \x20 [ \"$k\" = {KIND} ] && exit 0\n\
         done\n\
         command -v iptables >/dev/null 2>&1 || exit 0\n\
         mesh_unguard\necho \"removed=guard\"\n"
    )
}

/// See [`unpublish_script`].
pub fn unpublish_command(service: &str, was_mesh: bool) -> RemoteCommand {
    RemoteCommand::new("sh").args([
        "-c".to_owned(),
        unpublish_script(),
        "servos".to_owned(),
        STATE_DIR.to_owned(),
        table(service),
        if was_mesh { KIND } else { "-" }.to_owned(),
    ])
}

/// What [`unpublish_command`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unpublished {
    /// The service's table and state file.
    pub table: bool,
    /// The server's guard chains (the last mesh-only service left).
    pub guard: bool,
}

/// Parses the `removed=…` lines of [`unpublish_command`].
pub fn parse_unpublished(stdout: &str) -> Unpublished {
    let mut u = Unpublished::default();
    for l in stdout.lines() {
        match l.trim() {
            "removed=table" => u.table = true,
            "removed=guard" => u.guard = true,
            _ => {}
        }
    }
    u
}

fn host_error(io: &impl HostIo, step: &'static str, detail: String) -> ProxyError {
    ProxyError::Host {
        server: io.server().to_owned(),
        step,
        detail,
    }
}

/// Points `mesh` at `container` (one atomic transaction), installs the guard and records
/// the pointer for the watcher; returns the container's address it now leads to.
pub async fn point(
    io: &impl HostIo,
    service: &str,
    mesh: SocketAddrV4,
    container: &str,
) -> Result<SocketAddrV4, ProxyError> {
    let step = "pointing the mesh address at the container";
    let out = io
        .run(
            &point_command(service, mesh, container),
            Some(upstream::watcher_file().as_bytes()),
        )
        .await
        .map_err(|e| host_error(io, step, e))?;
    let text = out.stdout_lossy();
    upstream::parse_pointed(&text).ok_or_else(|| {
        host_error(
            io,
            step,
            format!("no target in {}", servos_core::validate::show(text.trim())),
        )
    })
}

/// Removes the service's mesh pointer, and the guard if it was the last one.
pub async fn unpublish(
    io: &impl HostIo,
    service: &str,
    was_mesh: bool,
) -> Result<Unpublished, ProxyError> {
    let out = io
        .run(&unpublish_command(service, was_mesh), None)
        .await
        .map_err(|e| host_error(io, "removing the mesh address's pointer", e))?;
    Ok(parse_unpublished(&out.stdout_lossy()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::POINT_FN;

    #[test]
    fn commands_are_exact() {
        assert_eq!(
            point_command("b", "10.77.0.2:7000".parse().unwrap(), "servos-b-1a2b3c4d").to_shell(),
            format!(
                "sh -c {} servos /var/lib/servos/proxy/upstreams servos-_mesh-b 10.77.0.2 7000 servos-b-1a2b3c4d",
                servos_ssh::shell_quote(&point_script())
            )
        );
        assert!(point_script().starts_with(
            "set -e\ndir=\"$1\"; t=\"$2\"; stable=\"$3\"; port=\"$4\"; container=\"$5\"\n\
             command -v nft >/dev/null 2>&1 || { echo 'nft not found: install the nftables package on this server' >&2; exit 127; }\n\
             command -v iptables-restore >/dev/null 2>&1 || { echo 'iptables-restore not found: install the iptables package on this server' >&2; exit 127; }\n\
             stable_ct() {\n"
        ));
        assert!(point_script().contains(
            "cat > \"$dir/.watch.sh.tmp\"\n\
             changed=; cmp -s -- \"$dir/.watch.sh.tmp\" \"$dir/watch.sh\" 2>/dev/null || changed=1\n\
             mv -f -- \"$dir/.watch.sh.tmp\" \"$dir/watch.sh\"\n\
             exec 9>\"$dir/.lock\"\nflock 9\n\
             point_mesh \"$t\" \"$stable\" \"$port\" \"$container\"\n\
             printf '%s %s %s mesh\\n' \"$stable\" \"$port\" \"$container\" > \"$dir/.$t.tmp\"\n\
             mv -f -- \"$dir/.$t.tmp\" \"$dir/$t\"\nexec 9>&-\n\
             if [ -n \"$changed\" ]; then\n"
        ));
        assert_eq!(
            unpublish_command("b", true).to_shell(),
            format!(
                "sh -c {} servos /var/lib/servos/proxy/upstreams servos-_mesh-b mesh",
                servos_ssh::shell_quote(&unpublish_script())
            )
        );
        assert!(
            unpublish_command("b", false)
                .to_shell()
                .ends_with(" servos-_mesh-b -")
        );
        assert!(unpublish_script().ends_with(
            "kind=; [ -f \"$dir/$t\" ] && read -r x1 x2 x3 kind < \"$dir/$t\"\n\
             [ \"$kind\" = mesh ] || [ \"$3\" = mesh ] || exit 0\n\
             mkdir -p -- \"$dir\"\nexec 9>\"$dir/.lock\"\nflock 9\n\
             if [ \"$kind\" = mesh ]; then\n\
             \x20 nft delete element ip servos-conntrack stable \"{ $x1 . $x2 }\" </dev/null 2>/dev/null || true\n\
             \x20 rm -f -- \"$dir/$t\"\n\
             \x20 printf 'add table ip %s\\ndelete table ip %s\\n' \"$t\" \"$t\" | nft -f - || exit 1\n\
             \x20 echo \"removed=table\"\nfi\n\
             for f in \"$dir\"/servos-*; do\n  [ -f \"$f\" ] || continue\n\
             \x20 k=; read -r x1 x2 x3 k < \"$f\" || true\n  [ \"$k\" = mesh ] && exit 0\ndone\n\
             command -v iptables >/dev/null 2>&1 || exit 0\nmesh_unguard\necho \"removed=guard\"\n"
        ));
        // The watcher knows both kinds of pointer.
        assert!(upstream::watcher_file().contains(MESH_FNS));
    }

    /// A scratch directory with fake `docker` (answers `ip`), `nft` and `iptables-restore`
    /// (record their stdin) and `iptables` (records its arguments, one call a line;
    /// `-C` and `-D` fail, as for absent rules).
    struct Fakes {
        dir: std::path::PathBuf,
    }

    impl Fakes {
        fn new(tag: &str, ip: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("servos-mesh-test-{}-{tag}", std::process::id()));
            std::fs::create_dir_all(dir.join("state")).unwrap();
            let fake = |name: &str, body: &str| {
                let path = dir.join(name);
                std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
                std::process::Command::new("chmod")
                    .arg("755")
                    .arg(&path)
                    .status()
                    .unwrap();
            };
            let d = dir.display();
            fake(
                "docker",
                &format!("echo \"$*\" >> {d}/docker.args; echo '{ip}'"),
            );
            fake(
                "nft",
                &format!("[ \"$1\" = -f ] || echo \"$*\" >> {d}/nft.args\ncat >> {d}/nft.in"),
            );
            fake(
                "iptables-restore",
                &format!("echo \"$*\" >> {d}/restore.args; cat >> {d}/restore.in"),
            );
            fake(
                "iptables",
                &format!(
                    "echo \"$*\" >> {d}/iptables.args\ncase \"$*\" in *' -C '*|*' -D '*) exit 1;; *' -S '*) echo '-A PREROUTING -d 10.77.0.9/32 -j SERVOS-MESH';; esac\nexit 0"
                ),
            );
            Self { dir }
        }

        fn run(&self, script: &str, args: &[&str]) -> (String, bool) {
            let path = format!("{}:{}", self.dir.display(), std::env::var("PATH").unwrap());
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .arg("servos")
                .args(args)
                .env("PATH", path)
                .output()
                .unwrap();
            (
                String::from_utf8_lossy(&out.stdout).into_owned(),
                out.status.success(),
            )
        }

        fn read(&self, name: &str) -> String {
            std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
        }

        fn state(&self) -> String {
            self.dir.join("state").display().to_string()
        }
    }

    impl Drop for Fakes {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn point_mesh_guards_then_replaces_the_table_with_prerouting_and_output_dnat() {
        let f = Fakes::new("point", "172.18.0.3");
        let (stdout, ok) = f.run(
            &format!("{POINT_FN}{MESH_FNS}point_mesh servos-_mesh-b 10.77.0.2 7000 servos-b-1a2b3c4d"),
            &[],
        );
        assert!(ok);
        assert_eq!(stdout, "target=172.18.0.3:7000\n");
        // The container's address on the service's network.
        assert_eq!(
            f.read("docker.args"),
            "inspect -f {{with index .NetworkSettings.Networks \"servos-b\"}}{{.IPAddress}}{{end}} -- servos-b-1a2b3c4d\n"
        );
        assert_eq!(
            f.read("nft.in"),
            "add table ip servos-_mesh-b\n\
             delete table ip servos-_mesh-b\n\
             table ip servos-_mesh-b {\n\
             \tchain prerouting {\n\
             \t\ttype nat hook prerouting priority -110; policy accept;\n\
             \t\tip daddr 10.77.0.2 tcp dport 7000 dnat to 172.18.0.3:7000\n\
             \t}\n\
             \tchain output {\n\
             \t\ttype nat hook output priority -110; policy accept;\n\
             \t\tip daddr 10.77.0.2 tcp dport 7000 dnat to 172.18.0.3:7000\n\
             \t}\n\
             }\n"
            .to_owned()
                + &upstream::tests::stable_ct_text("10.77.0.2", "7000")
        );
        assert_eq!(f.read("restore.args"), "-w --noflush\n");
        assert_eq!(
            f.read("restore.in"),
            "*raw\n\
             :SERVOS-MESH - [0:0]\n\
             -A SERVOS-MESH ! -d 10.77.0.2/32 -j RETURN\n\
             -A SERVOS-MESH -i servos0 -j RETURN\n\
             -A SERVOS-MESH -i lo -j RETURN\n\
             -A SERVOS-MESH -i docker0 -j RETURN\n\
             -A SERVOS-MESH -i br-+ -j RETURN\n\
             -A SERVOS-MESH -j DROP\n\
             COMMIT\n\
             *filter\n\
             :SERVOS-MESH-FORWARD - [0:0]\n\
             -A SERVOS-MESH-FORWARD -i servos0 -o br-+ -m conntrack --ctstate DNAT --ctorigdst 10.77.0.2/32 -j ACCEPT\n\
             -A SERVOS-MESH-FORWARD -i docker0 -o br-+ -m conntrack --ctstate DNAT --ctorigdst 10.77.0.2/32 -j ACCEPT\n\
             -A SERVOS-MESH-FORWARD -i br-+ -o br-+ -m conntrack --ctstate DNAT --ctorigdst 10.77.0.2/32 -j ACCEPT\n\
             -A SERVOS-MESH-FORWARD -i br-+ -m conntrack --ctdir REPLY --ctstate DNAT --ctorigdst 10.77.0.2/32 -j ACCEPT\n\
             COMMIT\n"
        );
        // Jumps added when absent (the fake `-C` says absent); a jump of the old design
        // (`-d ADDR -j SERVOS-MESH`) is removed.
        assert_eq!(
            f.read("iptables.args"),
            "-w -t raw -C PREROUTING -j SERVOS-MESH\n\
             -w -t raw -I PREROUTING -j SERVOS-MESH\n\
             -w -N DOCKER-USER\n\
             -w -C DOCKER-USER -j SERVOS-MESH-FORWARD\n\
             -w -I DOCKER-USER -j SERVOS-MESH-FORWARD\n\
             -w -t raw -S PREROUTING\n\
             -w -t raw -D PREROUTING -d 10.77.0.9/32 -j SERVOS-MESH\n"
        );
    }

    #[test]
    fn the_watcher_applies_each_pointer_by_its_kind() {
        let f = Fakes::new("watch", "172.18.0.3");
        let state = f.state();
        std::fs::write(
            format!("{state}/servos-web"),
            "172.19.0.1 8080 servos-web-1\n",
        )
        .unwrap();
        std::fs::write(
            format!("{state}/servos-_mesh-b"),
            "10.77.0.2 7000 servos-b-1 mesh\n",
        )
        .unwrap();
        // The fake `docker events` prints one line and ends, so the watcher ends too.
        let (_, ok) = f.run(&upstream::watcher_file(), &[&state]);
        assert!(ok);
        let nft = f.read("nft.in");
        let web = "table ip servos-web {\n\tchain output {\n\t\ttype nat hook output priority -110; policy accept;\n\t\tip daddr 172.19.0.1 tcp dport 8080 dnat to 172.18.0.3:8080\n\t}\n}\n";
        let b = "table ip servos-_mesh-b {\n\tchain prerouting {\n\t\ttype nat hook prerouting priority -110; policy accept;\n\t\tip daddr 10.77.0.2 tcp dport 7000 dnat to 172.18.0.3:7000\n\t}\n\tchain output {";
        assert!(nft.contains(web) && nft.contains(b), "{nft}");
        // Only the mesh pointer installs the guard.
        assert_eq!(f.read("restore.in").matches("COMMIT").count(), 2);
    }

    #[test]
    fn point_mesh_refuses_a_container_without_an_address_and_changes_nothing() {
        let f = Fakes::new("noip", "");
        let (stdout, ok) = f.run(
            &format!("{POINT_FN}{MESH_FNS}point_mesh servos-_mesh-b 10.77.0.2 7000 gone"),
            &[],
        );
        assert!(!ok);
        assert_eq!(stdout, "");
        assert_eq!(
            (
                f.read("nft.in"),
                f.read("restore.in"),
                f.read("iptables.args")
            ),
            (String::new(), String::new(), String::new())
        );
    }

    #[test]
    fn unpublish_removes_the_guard_only_with_the_last_mesh_pointer() {
        let f = Fakes::new("unpublish", "172.18.0.3");
        let state = f.state();
        std::fs::write(
            format!("{state}/servos-_mesh-b"),
            "10.77.0.2 7000 servos-b-1 mesh\n",
        )
        .unwrap();
        std::fs::write(
            format!("{state}/servos-_mesh-c"),
            "10.77.0.2 7001 servos-c-1 mesh\n",
        )
        .unwrap();
        std::fs::write(
            format!("{state}/servos-web"),
            "172.19.0.1 8080 servos-web-1\n",
        )
        .unwrap();
        // b goes; c is still a mesh pointer: the guard stays.
        let (stdout, ok) = f.run(&unpublish_script(), &[&state, "servos-_mesh-b", "mesh"]);
        assert!(ok);
        assert_eq!(
            parse_unpublished(&stdout),
            Unpublished {
                table: true,
                guard: false
            }
        );
        assert!(!std::path::Path::new(&format!("{state}/servos-_mesh-b")).exists());
        assert_eq!(
            f.read("nft.in"),
            "add table ip servos-_mesh-b\ndelete table ip servos-_mesh-b\n"
        );
        // Its address leaves the set of the conntrack timeout policy.
        assert_eq!(
            f.read("nft.args"),
            "delete element ip servos-conntrack stable { 10.77.0.2 . 7000 }\n"
        );
        assert_eq!(f.read("iptables.args"), "");
        // A Caddy pointer (no kind) is not touched, and nothing happens for a service
        // that was not on the mesh.
        let (stdout, ok) = f.run(&unpublish_script(), &[&state, "servos-web", "-"]);
        assert!(ok);
        assert_eq!(parse_unpublished(&stdout), Unpublished::default());
        assert!(std::path::Path::new(&format!("{state}/servos-web")).exists());
        // c goes: it was the last one, the guard goes too.
        let (stdout, ok) = f.run(&unpublish_script(), &[&state, "servos-_mesh-c", "-"]);
        assert!(ok);
        assert_eq!(
            parse_unpublished(&stdout),
            Unpublished {
                table: true,
                guard: true
            }
        );
        assert_eq!(
            f.read("iptables.args"),
            "-w -t raw -D PREROUTING -j SERVOS-MESH\n\
             -w -t raw -S PREROUTING\n\
             -w -t raw -D PREROUTING -d 10.77.0.9/32 -j SERVOS-MESH\n\
             -w -t raw -F SERVOS-MESH\n\
             -w -t raw -X SERVOS-MESH\n\
             -w -D DOCKER-USER -j SERVOS-MESH-FORWARD\n\
             -w -F SERVOS-MESH-FORWARD\n\
             -w -X SERVOS-MESH-FORWARD\n"
        );
        assert!(std::path::Path::new(&format!("{state}/servos-web")).exists());
    }
}
