//! Stable upstream addresses: how a deploy moves a Caddy route to a new container without
//! changing Caddy's configuration.
//!
//! Every change through Caddy's admin API is a full graceful reload, and a reload closes
//! the idle keep-alive connections of clients: an HTTP/1.1 client that writes a request
//! onto one at that instant loses it. So Caddy's route never names a container. It dials
//! the service's *stable address*, the gateway IP of the service's own Docker network
//! (local to the server, one network per service, so unique per service on a server) and
//! the service's port, and an nftables DNAT rule in the `output` nat hook of the server
//! sends connections to that address on to the current container:
//!
//! ```text
//! table ip servos-web {
//!     chain output {
//!         type nat hook output priority -110; policy accept;
//!         ip daddr 172.18.0.1 tcp dport 8080 dnat to 172.18.0.3:8080
//!     }
//! }
//! ```
//!
//! One table per service, replaced in one `nft -f` transaction (`add table` + `delete
//! table` + the new table: idempotent and atomic, no window without a rule, no state to
//! read first). Connection tracking keeps each established connection on the container it
//! was opened to, so requests in flight finish on the old container during the drain while
//! every new connection reaches the new one. Caddy's route therefore disables keep-alive
//! towards the upstream (see [`crate::caddy::route_json`]): a pooled connection would
//! otherwise keep sending new requests to the old container until it is stopped.
//!
//! The rule must follow the container when it gets a new IP outside a deploy (Docker's
//! restart policy after a crash, `docker restart`, a server reboot, which also empties the
//! kernel's rules). So each pointer is also a state file on the server,
//! `[STATE_DIR]/servos-<service>` = `<stable ip> <port> <container>`, and a small watcher
//! there ([`WATCH_SCRIPT`], under systemd `servos-upstreams.service`, else a supervisor
//! loop) re-applies every pointer when it starts (boot) and again whenever Docker starts
//! the container a pointer names (`docker events`). A new container starting during a
//! deploy is not named by any pointer yet, so it gets no traffic before it is healthy.
//! The rule text exists once, in [`POINT_FN`], shared by the deploy and the watcher.
//!
//! Retiring the old container must not break a connection to the new one, and there is a
//! trap: when Docker removes a container it purges the conntrack entries that involve its
//! IP, by dumping the table and then deleting each match *by its original tuple*. Every
//! connection to a stable address has the same original tuple shape (`gateway:ephemeral →
//! gateway:port`) whichever container it leads to, and Caddy reuses an ephemeral port as
//! soon as its socket is closed while the conntrack entry still lingers in TIME_WAIT. A
//! port reused between Docker's dump and its delete reopens the tuple towards the new
//! container, and Docker's delete then kills that live entry: its answer comes back
//! un-NATed, is reset, and Caddy waits on a response that never comes (measured: 1–2 hung
//! requests per 10 redeploys). Two measures close it:
//! - connections to stable addresses leave TIME_WAIT/CLOSE in conntrack after 1 s (an
//!   nftables `ct timeout` policy in the persistent table `ip servos-conntrack`, applied
//!   to the addresses in its set `stable`; the sockets' own TIME_WAIT is untouched);
//! - before the retire the deploy waits ([`settle_command`]) until no conntrack entry for
//!   the stable address leads anywhere but the new container, so Docker's dump finds none
//!   of them (new connections all lead to the new container, so none can appear after).
//!
//! IPv4 only.

use std::net::{Ipv4Addr, SocketAddrV4};

use servos_ssh::RemoteCommand;

use crate::{HostIo, ProxyError};

/// Where the pointers' state files, the watcher script, its pid and log live.
pub const STATE_DIR: &str = "/var/lib/servos/proxy/upstreams";
/// The watcher's pid (hosts without systemd).
pub const WATCHER_PID: &str = "/var/lib/servos/proxy/upstreams/watcher.pid";

/// Where a service's stable address must lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    /// The service's name (validated: ASCII letters, digits, `.`, `-`, `_`).
    pub service: String,
    /// The address Caddy dials: the service network's gateway and the service's port.
    pub stable: SocketAddrV4,
    /// The container it leads to (its IP on the service network is read on the server).
    pub container: String,
}

/// The nftables table of a service's stable address, which is also the name of the
/// service's Docker network and of its state file: `servos-<service>`.
pub fn table(service: &str) -> String {
    format!("servos-{service}")
}

/// `point TABLE STABLE_IP PORT CONTAINER`: replaces the table (= network name) with one DNAT
/// rule from STABLE_IP:PORT to the container's IP on that network, in one `nft` transaction
/// (`add table` + `delete table` + the new table: idempotent, atomic, no window without a
/// rule), and prints `target=IP:PORT`. The same transaction puts STABLE_IP:PORT in the set of
/// the 1 s TIME_WAIT/CLOSE conntrack policy (`stable_ct ADDR PORT`, which mesh pointers use
/// too: see the module's documentation).
pub const POINT_FN: &str = r#"stable_ct() {
  printf 'add table ip servos-conntrack\nadd ct timeout ip servos-conntrack closed { protocol tcp; l3proto ip; policy = { time_wait: 1, close: 1 }; }\nadd set ip servos-conntrack stable { type ipv4_addr . inet_service; }\nadd chain ip servos-conntrack output { type filter hook output priority -150; policy accept; }\nadd chain ip servos-conntrack prerouting { type filter hook prerouting priority -150; policy accept; }\nflush chain ip servos-conntrack output\nflush chain ip servos-conntrack prerouting\nadd rule ip servos-conntrack output ip daddr . tcp dport @stable ct timeout set "closed"\nadd rule ip servos-conntrack prerouting ip daddr . tcp dport @stable ct timeout set "closed"\nadd element ip servos-conntrack stable { %s . %s }\n' "$1" "$2"
}
point() {
  ip=$(docker inspect -f "{{with index .NetworkSettings.Networks \"$1\"}}{{.IPAddress}}{{end}}" -- "$4" 2>/dev/null) || ip=
  if [ -z "$ip" ]; then echo "container $4 has no address on network $1" >&2; return 1; fi
  { printf 'add table ip %s\ndelete table ip %s\ntable ip %s {\n\tchain output {\n\t\ttype nat hook output priority -110; policy accept;\n\t\tip daddr %s tcp dport %s dnat to %s:%s\n\t}\n}\n' \
    "$1" "$1" "$1" "$2" "$3" "$ip" "$3"; stable_ct "$2" "$3"; } | nft -f - || return 1
  echo "target=$ip:$3"
}
"#;

/// The watcher (`sh watch.sh STATE_DIR`): re-applies every pointer, then follows Docker's
/// `start` events of ServOS containers and re-applies the pointers naming the container.
/// Events since just before the first pass are replayed, so none is missed in between.
/// A state file's optional fourth field names the pointer's kind, applied by
/// `point_<kind>` instead of `point` (`mesh`: [`crate::mesh`]).
/// Each pass holds `DIR/.lock`, as the deploy's switch does: a watcher that read a
/// pointer cannot re-apply it after a deploy replaced it.
pub const WATCH_SCRIPT: &str = r#"dir="$1"
since=$(date +%s)
exec 9>"$dir/.lock"
flock 9
for f in "$dir"/servos-*; do
  [ -f "$f" ] || continue
  read -r stable port container kind < "$f" && point${kind:+_$kind} "${f##*/}" "$stable" "$port" "$container" || true
done
flock -u 9
docker events --since "$since" --filter type=container --filter event=start --filter label=servos.service --format '{{.Actor.Attributes.name}}' |
while read -r name; do
  flock 9
  for f in "$dir"/servos-*; do
    [ -f "$f" ] || continue
    read -r stable port container kind < "$f" || continue
    if [ "$container" = "$name" ]; then
      point${kind:+_$kind} "${f##*/}" "$stable" "$port" "$container" && echo "${f##*/} follows $name" || true
    fi
  done
  flock -u 9
done
"#;

/// Starts the watcher unless it runs: a systemd unit where systemd runs, else a
/// supervisor loop in its own session whose pid is in [`WATCHER_PID`]. The supervisor holds
/// `DIR/.watcher.lock` for its whole life (its children inherit the descriptor) and writes
/// its own pid only once it has the lock, so two concurrent starts leave one watcher, and
/// the pid file always names the one that runs.
const ENSURE_WATCHER: &str = r#"if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  if ! systemctl is-active --quiet servos-upstreams.service; then
    printf '[Unit]\nDescription=ServOS: stable upstream addresses follow restarted containers\nAfter=docker.service\nWants=docker.service\n\n[Service]\nExecStart=/bin/sh %s/watch.sh %s\nRestart=always\nRestartSec=1\n\n[Install]\nWantedBy=multi-user.target\n' "$dir" "$dir" > /etc/systemd/system/servos-upstreams.service
    systemctl daemon-reload
    systemctl enable --now servos-upstreams.service >/dev/null 2>&1
  fi
elif ! { [ -f "$dir/watcher.pid" ] && kill -0 "$(cat -- "$dir/watcher.pid")" 2>/dev/null; }; then
  setsid sh -c 'exec 8>"$1/.watcher.lock"; flock -n 8 || exit 0; echo $$ > "$1/watcher.pid"; while :; do sh "$1/watch.sh" "$1"; sleep 1; done' servos-upstreams "$dir" >>"$dir/watcher.log" 2>&1 </dev/null &
fi
"#;

const NEED_NFT: &str = "command -v nft >/dev/null 2>&1 || { echo 'nft not found: install the nftables package on this server' >&2; exit 127; }\n";

/// Stops a supervised watcher (`dir` set): TERM to its session (recorded in `watcher.pid`),
/// then waits up to 5 s for its lock. A process that still holds the lock after that (one
/// the pid file does not lead to) is named on stderr and killed, found by the lock file
/// it holds open; the stop fails only if the lock is still held after that.
const STOP_WATCHER: &str = r#"if [ -f "$dir/watcher.pid" ]; then
  kill -s TERM -- -"$(cat -- "$dir/watcher.pid")" 2>/dev/null || true
  rm -f -- "$dir/watcher.pid"
fi
if [ -e "$dir/.watcher.lock" ] && ! flock -w 5 "$dir/.watcher.lock" true 2>/dev/null; then
  for fd in /proc/[0-9]*/fd/*; do
    [ "$fd" -ef "$dir/.watcher.lock" ] 2>/dev/null && { p=${fd#/proc/}; echo "${p%%/*}"; }
  done | sort -u | while read -r p; do
    echo "servos: killing watcher process $p left behind: $(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null)" >&2
    kill -KILL "$p" 2>/dev/null || true
  done
  flock -w 5 "$dir/.watcher.lock" true
fi
"#;

/// Restarts a running watcher whose script just changed (a running `sh` keeps the script
/// it started with): `changed` is set by [`point_script`] (and the mesh one).
fn restart_if_changed() -> String {
    format!(
        "if [ -n \"$changed\" ]; then\n\
         if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then\n\
         systemctl try-restart servos-upstreams.service >/dev/null 2>&1 || true\n\
         else\n{{\n{STOP_WATCHER}}} || echo 'servos: the old watcher could not be stopped: it keeps its old script until it is' >&2\n\
         fi\nfi\n"
    )
}

/// The deploy's switch: `sh -c SCRIPT servos DIR TABLE STABLE_IP PORT CONTAINER`, the
/// watcher file on stdin. Installs the watcher file, points the table at the container,
/// then records the pointer (only once applied, so a failed switch leaves the old one in
/// force) and makes sure the watcher runs. Prints `target=IP:PORT`.
pub fn point_script() -> String {
    switch_script("", "", None)
}

/// The switch of either kind of pointer: `extra_needs` and `extra_fns` go before and after
/// [`POINT_FN`], and the pointer is applied by `point` (`kind` None) or `point_<kind>`, whose
/// name is also the state file's fourth field.
pub(crate) fn switch_script(extra_needs: &str, extra_fns: &str, kind: Option<&str>) -> String {
    let (apply, field) = match kind {
        Some(k) => (format!("point_{k}"), format!(" {k}")),
        None => ("point".to_owned(), String::new()),
    };
    format!(
        "set -e\ndir=\"$1\"; t=\"$2\"; stable=\"$3\"; port=\"$4\"; container=\"$5\"\n{NEED_NFT}{extra_needs}{POINT_FN}{extra_fns}\
         mkdir -p -- \"$dir\"\numask 022\n\
         cat > \"$dir/.watch.sh.tmp\"\n\
         changed=; cmp -s -- \"$dir/.watch.sh.tmp\" \"$dir/watch.sh\" 2>/dev/null || changed=1\n\
         mv -f -- \"$dir/.watch.sh.tmp\" \"$dir/watch.sh\"\n\
         exec 9>\"$dir/.lock\"\nflock 9\n\
         {apply} \"$t\" \"$stable\" \"$port\" \"$container\"\n\
         printf '%s %s %s{field}\\n' \"$stable\" \"$port\" \"$container\" > \"$dir/.$t.tmp\"\n\
         mv -f -- \"$dir/.$t.tmp\" \"$dir/$t\"\nexec 9>&-\n{restart}{ENSURE_WATCHER}",
        restart = restart_if_changed()
    )
}

/// The watcher file written on the server (`watch.sh`): [`POINT_FN`], the mesh pointers'
/// functions ([`crate::mesh::MESH_FNS`]), then [`WATCH_SCRIPT`].
pub fn watcher_file() -> String {
    format!("# ServOS: keeps stable upstream addresses pointed at their containers (rewritten by each deploy)\n{POINT_FN}{}{WATCH_SCRIPT}", crate::mesh::MESH_FNS)
}

/// See [`point_script`]; stdin is [`watcher_file`].
pub fn point_command(p: &Pointer) -> RemoteCommand {
    RemoteCommand::new("sh").args([
        "-c".to_owned(),
        point_script(),
        "servos".to_owned(),
        STATE_DIR.to_owned(),
        table(&p.service),
        p.stable.ip().to_string(),
        p.stable.port().to_string(),
        p.container.clone(),
    ])
}

const REMOVE: &str = "command -v nft >/dev/null 2>&1 || { rm -f -- \"$1/$2\"; exit 0; }\n\
if [ -f \"$1/$2\" ] && read -r stable port _ < \"$1/$2\"; then nft delete element ip servos-conntrack stable \"{ $stable . $port }\" 2>/dev/null || true; fi\n\
rm -f -- \"$1/$2\"\nprintf 'add table ip %s\\ndelete table ip %s\\n' \"$2\" \"$2\" | nft -f -";

/// Forgets the service's pointer, its address in the conntrack timeout set, and removes
/// its table (absent ones are fine).
pub fn remove_command(service: &str) -> RemoteCommand {
    RemoteCommand::new("sh").args(["-c", REMOVE, "servos", STATE_DIR, &table(service)])
}

/// Starts the watcher unless it runs (what the boot does through systemd; each
/// [`point_command`] does it too).
pub fn ensure_watcher_command() -> RemoteCommand {
    RemoteCommand::new("sh").args(["-c".to_owned(), format!("dir=\"$1\"\n{ENSURE_WATCHER}"), "servos".to_owned(), STATE_DIR.to_owned()])
}

/// Stops a supervised watcher (hosts without systemd) and returns once its lock is free:
/// see [`STOP_WATCHER`]. Fails, naming what it killed, when the lock stays held.
pub fn stop_watcher_command() -> RemoteCommand {
    RemoteCommand::new("sh").args([
        "-c".to_owned(),
        format!("dir=\"$1\"\n{STOP_WATCHER}"),
        "servos".to_owned(),
        STATE_DIR.to_owned(),
    ])
}

/// `settle STABLE_IP PORT TARGET_IP SECONDS TABLE`: waits, up to SECONDS seconds (by the clock,
/// however slow each pass over a large table is), until no
/// TCP conntrack entry whose original destination is the stable address leads anywhere but
/// TARGET_IP (the new container) in TABLE (`/proc/net/nf_conntrack`), then prints `left=N` (N > 0 when the wait ran out: long
/// connections still on the old container) or `left=unknown` without a readable table.
const SETTLE: &str = r#"[ -r "$5" ] || { echo left=unknown; exit 0; }
end=$(($(date +%s) + $4))
while :; do
  left=$(awk -v ip="$1" -v port="$2" -v target="$3" '$3 == "tcp" {
    s = 0; d = 0; q = 0; od = ""; op = ""; rs = ""
    for (i = 1; i <= NF; i++) {
      if ($i ~ /^src=/) { s++; if (s == 2) rs = substr($i, 5) }
      else if ($i ~ /^dst=/) { d++; if (d == 1) od = substr($i, 5) }
      else if ($i ~ /^dport=/) { q++; if (q == 1) op = substr($i, 7) }
    }
    if (od == ip && op == port && rs != target) n++
  } END { print n + 0 }' "$5")
  if [ "$left" = 0 ] || [ "$(date +%s)" -ge "$end" ]; then echo "left=$left"; exit 0; fi
  sleep 0.1
done
"#;

/// The kernel's connection tracking table of the server (its network namespace).
pub const CONNTRACK_TABLE: &str = "/proc/net/nf_conntrack";

/// See [`SETTLE`].
pub fn settle_command(stable: SocketAddrV4, target: Ipv4Addr, max: std::time::Duration) -> RemoteCommand {
    let secs = max.as_millis().div_ceil(1000);
    RemoteCommand::new("sh").args([
        "-c".to_owned(),
        SETTLE.to_owned(),
        "servos".to_owned(),
        stable.ip().to_string(),
        stable.port().to_string(),
        target.to_string(),
        secs.to_string(),
        CONNTRACK_TABLE.to_owned(),
    ])
}

/// The `left=N` line [`settle_command`] prints (`None` when unknown).
pub fn parse_settled(stdout: &str) -> Option<usize> {
    stdout.lines().find_map(|l| l.strip_prefix("left=")).and_then(|n| n.trim().parse().ok())
}

/// Waits (up to `max`) until every tracked connection to the stable address leads to
/// `target`; returns how many still lead elsewhere (`None`: the server does not say).
pub async fn settle(io: &impl HostIo, stable: SocketAddrV4, target: Ipv4Addr, max: std::time::Duration) -> Result<Option<usize>, ProxyError> {
    let out = io
        .run(&settle_command(stable, target, max), None)
        .await
        .map_err(|e| host_error(io, "waiting for connections to the old container to close", e))?;
    Ok(parse_settled(&out.stdout_lossy()))
}

/// Prints the service's table, or nothing when it does not exist.
pub fn read_command(service: &str) -> RemoteCommand {
    RemoteCommand::new("sh").args([
        "-c",
        "nft list table ip \"$1\" 2>/dev/null || true",
        "servos",
        &table(service),
    ])
}

/// The DNAT target in a listing of a service's table.
pub fn parse_target(listing: &str) -> Option<SocketAddrV4> {
    listing
        .split_once("dnat to ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|t| t.parse().ok())
}

/// The `target=IP:PORT` line [`point_command`] prints.
pub fn parse_pointed(stdout: &str) -> Option<SocketAddrV4> {
    stdout.lines().find_map(|l| l.strip_prefix("target=")).and_then(|t| t.trim().parse().ok())
}

/// Prints the gateways of a Docker network, space-separated.
pub fn gateway_command(network: &str) -> RemoteCommand {
    RemoteCommand::new("docker").args([
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Gateway}} {{end}}",
        "--",
        network,
    ])
}

/// The first IPv4 gateway in the output of [`gateway_command`].
pub fn parse_gateway(stdout: &str) -> Option<Ipv4Addr> {
    stdout.split_whitespace().find_map(|g| g.parse().ok())
}

fn host_error(io: &impl HostIo, step: &'static str, detail: String) -> ProxyError {
    ProxyError::Host { server: io.server().to_owned(), step, detail }
}

/// The stable address of the service on `network`, port `port`.
pub async fn stable_address(io: &impl HostIo, network: &str, port: u16) -> Result<SocketAddrV4, ProxyError> {
    let step = "reading the service network's gateway";
    let out = io.run(&gateway_command(network), None).await.map_err(|e| host_error(io, step, e))?;
    let text = out.stdout_lossy();
    parse_gateway(&text)
        .map(|ip| SocketAddrV4::new(ip, port))
        .ok_or_else(|| host_error(io, step, format!("network {network} has no IPv4 gateway (docker said {})", servos_core::validate::show(text.trim()))))
}

/// Points the service's stable address at `p.container` (one atomic transaction) and
/// records it for the watcher; returns the container's address it now leads to.
pub async fn point(io: &impl HostIo, p: &Pointer) -> Result<SocketAddrV4, ProxyError> {
    let step = "pointing the stable address at the container";
    let out = io
        .run(&point_command(p), Some(watcher_file().as_bytes()))
        .await
        .map_err(|e| host_error(io, step, e))?;
    let text = out.stdout_lossy();
    parse_pointed(&text).ok_or_else(|| host_error(io, step, format!("no target in {}", servos_core::validate::show(text.trim()))))
}

/// Removes the service's stable address.
pub async fn remove(io: &impl HostIo, service: &str) -> Result<(), ProxyError> {
    io.run(&remove_command(service), None)
        .await
        .map(drop)
        .map_err(|e| host_error(io, "removing the stable address", e))
}

/// Where the service's stable address leads now, if anywhere.
pub async fn target(io: &impl HostIo, service: &str) -> Result<Option<SocketAddrV4>, ProxyError> {
    let out = io
        .run(&read_command(service), None)
        .await
        .map_err(|e| host_error(io, "reading the stable address", e))?;
    Ok(parse_target(&out.stdout_lossy()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The conntrack part of every switch's transaction, for `addr . port`.
    pub(crate) fn stable_ct_text(addr: &str, port: &str) -> String {
        format!(
            "add table ip servos-conntrack\n\
             add ct timeout ip servos-conntrack closed {{ protocol tcp; l3proto ip; policy = {{ time_wait: 1, close: 1 }}; }}\n\
             add set ip servos-conntrack stable {{ type ipv4_addr . inet_service; }}\n\
             add chain ip servos-conntrack output {{ type filter hook output priority -150; policy accept; }}\n\
             add chain ip servos-conntrack prerouting {{ type filter hook prerouting priority -150; policy accept; }}\n\
             flush chain ip servos-conntrack output\n\
             flush chain ip servos-conntrack prerouting\n\
             add rule ip servos-conntrack output ip daddr . tcp dport @stable ct timeout set \"closed\"\n\
             add rule ip servos-conntrack prerouting ip daddr . tcp dport @stable ct timeout set \"closed\"\n\
             add element ip servos-conntrack stable {{ {addr} . {port} }}\n"
        )
    }

    fn pointer() -> Pointer {
        Pointer {
            service: "web.app_1".into(),
            stable: "172.18.0.1:8080".parse().unwrap(),
            container: "servos-web.app_1-1a2b3c4d".into(),
        }
    }

    #[test]
    fn commands_are_exact() {
        assert_eq!(
            point_command(&pointer()).to_shell(),
            format!(
                "sh -c {} servos /var/lib/servos/proxy/upstreams servos-web.app_1 172.18.0.1 8080 servos-web.app_1-1a2b3c4d",
                servos_ssh::shell_quote(&point_script())
            )
        );
        assert!(point_script().starts_with(
            "set -e\ndir=\"$1\"; t=\"$2\"; stable=\"$3\"; port=\"$4\"; container=\"$5\"\n\
             command -v nft >/dev/null 2>&1 || { echo 'nft not found: install the nftables package on this server' >&2; exit 127; }\n\
             stable_ct() {\n"
        ));
        assert!(point_script().contains(
            "exec 9>\"$dir/.lock\"\nflock 9\n\
             point \"$t\" \"$stable\" \"$port\" \"$container\"\n\
             printf '%s %s %s\\n' \"$stable\" \"$port\" \"$container\" > \"$dir/.$t.tmp\"\n\
             mv -f -- \"$dir/.$t.tmp\" \"$dir/$t\"\nexec 9>&-\n\
             if [ -n \"$changed\" ]; then\n"
        ));
        assert_eq!(
            remove_command("web").to_shell(),
            "sh -c 'command -v nft >/dev/null 2>&1 || { rm -f -- \"$1/$2\"; exit 0; }\n\
             if [ -f \"$1/$2\" ] && read -r stable port _ < \"$1/$2\"; then \
             nft delete element ip servos-conntrack stable \"{ $stable . $port }\" 2>/dev/null || true; fi\n\
             rm -f -- \"$1/$2\"\n\
             printf '\\''add table ip %s\\ndelete table ip %s\\n'\\'' \"$2\" \"$2\" | nft -f -' \
             servos /var/lib/servos/proxy/upstreams servos-web"
        );
        assert_eq!(
            settle_command("172.18.0.1:8080".parse().unwrap(), Ipv4Addr::new(172, 18, 0, 3), std::time::Duration::from_millis(10_050)).to_shell(),
            format!(
                "sh -c {} servos 172.18.0.1 8080 172.18.0.3 11 /proc/net/nf_conntrack",
                servos_ssh::shell_quote(SETTLE)
            )
        );
        assert_eq!(
            stop_watcher_command().to_shell(),
            format!(
                "sh -c {} servos /var/lib/servos/proxy/upstreams",
                servos_ssh::shell_quote(&format!("dir=\"$1\"\n{STOP_WATCHER}"))
            )
        );
        assert_eq!(
            read_command("web").to_shell(),
            "sh -c 'nft list table ip \"$1\" 2>/dev/null || true' servos servos-web"
        );
        assert_eq!(
            gateway_command("servos-web").to_shell(),
            "docker network inspect -f '{{range .IPAM.Config}}{{.Gateway}} {{end}}' -- servos-web"
        );
    }

    /// Runs `script` with fake `docker` (answers `ip`) and `nft` (records its stdin) first
    /// on PATH; returns (stdout, what nft read, status).
    fn run_with_fakes(script: &str, ip: &str) -> (String, String, bool) {
        let dir = std::env::temp_dir().join(format!("servos-upstream-test-{}-{ip}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = |name: &str, body: &str| {
            let path = dir.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::process::Command::new("chmod").arg("755").arg(&path).status().unwrap();
        };
        fake("docker", &format!("echo '{ip}'"));
        fake("nft", &format!("cat > {}/nft.in", dir.display()));
        let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
        let out = std::process::Command::new("sh").arg("-c").arg(script).env("PATH", path).output().unwrap();
        let nft = std::fs::read_to_string(dir.join("nft.in")).unwrap_or_default();
        std::fs::remove_dir_all(&dir).unwrap();
        (String::from_utf8_lossy(&out.stdout).into_owned(), nft, out.status.success())
    }

    #[test]
    fn point_replaces_the_table_in_one_transaction_with_one_dnat_rule() {
        let script = format!("{POINT_FN}point servos-web.app_1 172.18.0.1 8080 servos-web.app_1-1a2b3c4d");
        let (stdout, nft, ok) = run_with_fakes(&script, "172.18.0.3");
        assert!(ok);
        assert_eq!(stdout, "target=172.18.0.3:8080\n");
        assert_eq!(
            nft,
            "add table ip servos-web.app_1\n\
             delete table ip servos-web.app_1\n\
             table ip servos-web.app_1 {\n\
             \tchain output {\n\
             \t\ttype nat hook output priority -110; policy accept;\n\
             \t\tip daddr 172.18.0.1 tcp dport 8080 dnat to 172.18.0.3:8080\n\
             \t}\n\
             }\n"
            .to_owned()
                + &stable_ct_text("172.18.0.1", "8080")
        );
        assert_eq!(parse_pointed(&stdout), Some("172.18.0.3:8080".parse().unwrap()));
        assert_eq!(parse_target(&nft), Some("172.18.0.3:8080".parse().unwrap()));
    }

    #[test]
    fn point_refuses_a_container_without_an_address_and_writes_no_rule() {
        let script = format!("{POINT_FN}point servos-web 172.18.0.1 8080 gone");
        let (stdout, nft, ok) = run_with_fakes(&script, "");
        assert!(!ok);
        assert_eq!((stdout.as_str(), nft.as_str()), ("", ""));
    }

    /// Lines as the kernel writes them: to the stable address (led to the new container
    /// .3, and to the old one .2 in TIME_WAIT), another service's, and a direct one.
    const CONNTRACK: &str = "\
ipv4     2 tcp      6 431999 ESTABLISHED src=172.18.0.1 dst=172.18.0.1 sport=40000 dport=8080 src=172.18.0.3 dst=172.18.0.1 sport=8080 dport=40000 [ASSURED] mark=0 zone=0 use=2
ipv4     2 tcp      6 1 TIME_WAIT src=172.18.0.1 dst=172.18.0.1 sport=40002 dport=8080 src=172.18.0.2 dst=172.18.0.1 sport=8080 dport=40002 [ASSURED] mark=0 zone=0 use=2
ipv4     2 tcp      6 119 TIME_WAIT src=172.19.0.1 dst=172.19.0.1 sport=40004 dport=8080 src=172.19.0.2 dst=172.19.0.1 sport=8080 dport=40004 [ASSURED] mark=0 zone=0 use=2
ipv4     2 tcp      6 119 TIME_WAIT src=172.18.0.1 dst=172.18.0.2 sport=40006 dport=8080 src=172.18.0.2 dst=172.18.0.1 sport=8080 dport=40006 [ASSURED] mark=0 zone=0 use=2
ipv4     2 tcp      6 119 SYN_SENT src=172.18.0.1 dst=172.18.0.1 sport=40008 dport=9090 [UNREPLIED] src=172.18.0.2 dst=172.18.0.1 sport=9090 dport=40008 mark=0 zone=0 use=2
ipv4     2 udp      17 29 src=172.18.0.1 dst=172.18.0.1 sport=40010 dport=8080 [UNREPLIED] src=172.18.0.2 dst=172.18.0.1 sport=8080 dport=40010 mark=0 zone=0 use=2
";

    fn settle_on(table: Option<&str>, target: &str, secs: u32) -> String {
        let dir = tempfile_dir("settle");
        let path = dir.join("nf_conntrack");
        if let Some(t) = table {
            std::fs::write(&path, t).unwrap();
        }
        let out = std::process::Command::new("sh")
            .args(["-c", SETTLE, "servos", "172.18.0.1", "8080", target, &secs.to_string()])
            .arg(&path)
            .output()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn tempfile_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("servos-upstream-test-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn settle_counts_only_tcp_entries_of_the_stable_address_that_lead_elsewhere() {
        // .3 is the new container: the TIME_WAIT entry to the old .2 is the one left.
        assert_eq!(settle_on(Some(CONNTRACK), "172.18.0.3", 0), "left=1\n");
        // Were .2 the target, the established entry to .3 would be the one left.
        assert_eq!(settle_on(Some(CONNTRACK), "172.18.0.2", 0), "left=1\n");
        // Nothing else is counted, and an empty table is settled at once.
        assert_eq!(settle_on(Some(""), "172.18.0.3", 30), "left=0\n");
        assert_eq!(settle_on(None, "172.18.0.3", 30), "left=unknown\n");
        assert_eq!(parse_settled("left=1\n"), Some(1));
        assert_eq!(parse_settled("left=unknown\n"), None);
    }

    #[test]
    fn settle_waits_then_gives_up_with_the_count() {
        let started = std::time::Instant::now();
        assert_eq!(settle_on(Some(CONNTRACK), "172.18.0.3", 2), "left=1\n");
        // Until the clock passed the deadline: more than one second (a lower bound only;
        // no upper bound is asserted).
        assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    }

    #[test]
    fn listings_and_gateways_are_parsed() {
        assert_eq!(parse_target(""), None);
        assert_eq!(parse_pointed("target=nonsense\n"), None);
        assert_eq!(parse_gateway("fd00::1 172.19.0.1 \n"), Some(Ipv4Addr::new(172, 19, 0, 1)));
        assert_eq!(parse_gateway(" \n"), None);
    }

    /// Runs the stop script on `dir`; (stdout+stderr, success).
    fn stop_in(dir: &std::path::Path) -> (String, bool) {
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("dir=\"$1\"\n{STOP_WATCHER}"), "servos"])
            .arg(dir)
            .output()
            .unwrap();
        (String::from_utf8_lossy(&out.stderr).into_owned(), out.status.success())
    }

    fn alive(pid: u32) -> bool {
        // A killed child stays a zombie until reaped: count those as gone.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
    }

    #[test]
    fn the_stop_ends_the_recorded_session_quietly_and_kills_any_other_lock_holder_by_name() {
        let dir = std::env::temp_dir().join(format!("servos-stop-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lock = dir.join(".watcher.lock");
        // A supervisor as ENSURE_WATCHER starts one: own session, lock held, pid recorded.
        let mut supervisor = std::process::Command::new("setsid")
            .args(["sh", "-c", "exec 8>\"$1/.watcher.lock\"; flock -n 8 || exit 1; echo $$ > \"$1/watcher.pid\"; sleep 100 & wait", "x"])
            .arg(&dir)
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !dir.join("watcher.pid").exists() {
            assert!(std::time::Instant::now() < deadline, "the supervisor did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let (err, ok) = stop_in(&dir);
        assert!(ok && err.is_empty(), "{err}");
        assert!(supervisor.wait().is_ok());
        assert!(!dir.join("watcher.pid").exists());

        // A lock holder the pid file does not lead to (no pid file at all): named and killed.
        let mut stray = std::process::Command::new("flock")
            .arg(&lock)
            .args(["sleep", "100"])
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::process::Command::new("flock").args(["-n"]).arg(&lock).arg("true").status().unwrap().success() {
            assert!(std::time::Instant::now() < deadline, "the stray did not take the lock");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let (err, ok) = stop_in(&dir);
        assert!(ok, "{err}");
        assert!(
            err.contains(&format!("killing watcher process {} left behind: flock ", stray.id())),
            "{err}"
        );
        stray.wait().unwrap();
        assert!(!alive(stray.id()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
