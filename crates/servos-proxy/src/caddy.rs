//! The Caddy driver: Caddy from the distribution package runs on the server (in the host's
//! network namespace, so it reaches each service at its stable address on the service
//! network, see [`crate::upstream`]), its
//! admin API bound to `127.0.0.1:2019` and reached through an SSH `direct-tcpip` channel.
//!
//! Configuration, owned by ServOS: two HTTP servers, `servos_https` (:443, automatic
//! HTTPS, HTTP on :80 redirected by Caddy) and `servos_http` (:80, routes with TLS `off`,
//! and Caddy's redirects). Each service has one route `@id` = `servos-<service>` and, with
//! HTTPS, one TLS automation policy `@id` = `servos-<service>-tls` naming its domains and
//! issuer: ACME (with the admin's email) for `acme`, Caddy's local CA for `internal`.
//! Changing a route is one `PATCH /id/...`, but every such change is a full graceful
//! reload that closes clients' idle keep-alive connections, so it happens only when the
//! route itself changes (domains, port, TLS, path). A deploy does not change it: the route
//! dials the service's stable address and the deploy re-points that (nftables DNAT).
//!
//! Running Caddy ([`start_command`]): with systemd, a `servos-caddy.service` unit (the
//! package's own `caddy.service`, which serves `/etc/caddy/Caddyfile`, is disabled); without
//! systemd (containers, the test hosts) a supervisor loop in its own session restarts Caddy
//! if it exits, its pid in [`SUPERVISOR_PID`]. Either way Caddy runs `--resume`: the last
//! config it was given (autosaved under [`BASE_DIR`]) survives restarts. And either way it
//! runs as the unprivileged [`CADDY_USER`] with only `CAP_NET_BIND_SERVICE` (systemd's
//! `User=` and `AmbientCapabilities=`, or `setpriv` in the supervisor loop), owning only
//! its `data` and `config` directories.

use std::time::Duration;

use serde_json::{Value, json};
use servos_core::model::TlsMode;
use servos_ssh::{LocalHttpRequest, LocalHttpResponse, RemoteCommand};

use crate::{HostIo, ProxyError, ProxyStatus, Route, RouteStatus, write_file_atomically};

/// Caddy's state (config, autosave, certificates, the local CA) on the server.
pub const BASE_DIR: &str = "/var/lib/servos/proxy/caddy";
/// The config Caddy starts with when it has no autosaved one.
pub const BASE_CONFIG: &str = "/var/lib/servos/proxy/caddy/base.json";
/// The supervisor's pid (hosts without systemd).
pub const SUPERVISOR_PID: &str = "/var/lib/servos/proxy/caddy/supervisor.pid";
/// Caddy's log (hosts without systemd).
pub const LOG_FILE: &str = "/var/lib/servos/proxy/caddy/caddy.log";
/// The root certificate of Caddy's internal CA (TLS `internal`).
pub const INTERNAL_ROOT_CERT: &str = "/var/lib/servos/proxy/caddy/data/caddy/pki/authorities/local/root.crt";
/// The admin API's port, on 127.0.0.1 only.
pub const ADMIN_PORT: u16 = 2019;
/// The HTTPS server's name in Caddy's config.
pub const HTTPS_SERVER: &str = "servos_https";
/// The plain HTTP server's name.
pub const HTTP_SERVER: &str = "servos_http";
/// The unprivileged user Caddy runs as (created by Debian's `caddy` package), with only
/// `CAP_NET_BIND_SERVICE` (to bind :80 and :443).
pub const CADDY_USER: &str = "caddy";

/// How Caddy is run on a server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CaddySettings {
    /// The ACME account email (the admin's); routes with TLS `acme` use it.
    pub acme_email: Option<String>,
}

/// Caddy's initial configuration: the admin API on loopback, both servers without routes,
/// and the local CA never installed into the system trust store.
pub fn base_config() -> Value {
    json!({
        "admin": { "listen": format!("127.0.0.1:{ADMIN_PORT}") },
        "apps": {
            "http": {
                "http_port": 80,
                "https_port": 443,
                "grace_period": "10s",
                "servers": {
                    HTTPS_SERVER: { "listen": [":443"], "routes": [] },
                    HTTP_SERVER: { "listen": [":80"], "routes": [] },
                }
            },
            "tls": { "automation": { "policies": [] } },
            "pki": { "certificate_authorities": { "local": { "install_trust": false } } },
        }
    })
}

/// The route of a service (`@id` = `servos-<service>`).
pub fn route_json(route: &Route) -> Value {
    let mut matcher = serde_json::Map::new();
    matcher.insert("host".into(), json!(route.domains));
    if let Some(p) = &route.path_prefix {
        matcher.insert("path".into(), json!([p, format!("{p}/*")]));
    }
    let upstreams: Vec<Value> = route.upstreams.iter().map(|u| json!({ "dial": u.dial() })).collect();
    json!({
        "@id": route.key(),
        "match": [Value::Object(matcher)],
        "handle": [{
            "handler": "reverse_proxy",
            "upstreams": upstreams,
            // No pooled connections to the upstream: each request opens one to the stable
            // address, so after a switch no new request reaches the old container (see
            // `upstream`). The cost is one local TCP handshake per request.
            "transport": { "protocol": "http", "keep_alive": { "enabled": false } },
            "load_balancing": { "try_duration": "5s", "try_interval": "100ms" },
        }],
        "terminal": true,
    })
}

/// The TLS automation policy of a route with HTTPS (`@id` = `servos-<service>-tls`).
pub fn policy_json(route: &Route, settings: &CaddySettings) -> Option<Value> {
    let issuer = match route.tls {
        TlsMode::Off => return None,
        TlsMode::Internal => json!({ "module": "internal" }),
        TlsMode::Acme => match &settings.acme_email {
            Some(email) => json!({ "module": "acme", "email": email }),
            None => json!({ "module": "acme" }),
        },
    };
    Some(json!({
        "@id": policy_id(&route.key()),
        "subjects": route.domains,
        "issuers": [issuer],
    }))
}

fn policy_id(key: &str) -> String {
    format!("{key}-tls")
}

const START_CADDY: &str = r#"set -e
base="$1"; unit="$2"; user="$3"
if ! id -u "$user" >/dev/null 2>&1; then
  echo "the user $user does not exist (Debian's caddy package creates it): install the caddy package" >&2
  exit 1
fi
mkdir -p -- "$base/data" "$base/config"
# Caddy runs as $user: it may traverse down to its state (not list /var/lib/servos) and
# owns only its data and config directories.
chmod go+x -- "$base" "${base%/*}" "${base%/*/*}"
chown -R -- "$user:$user" "$base/data" "$base/config"
chmod 700 -- "$base/data" "$base/config"
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now caddy.service >/dev/null 2>&1 || true
  cat > /etc/systemd/system/servos-caddy.service.tmp
  mv -f -- /etc/systemd/system/servos-caddy.service.tmp /etc/systemd/system/servos-caddy.service
  systemctl daemon-reload
  systemctl enable servos-caddy.service >/dev/null 2>&1
  systemctl restart servos-caddy.service
  echo started=systemd
  exit 0
fi
cat >/dev/null
if [ -f "$base/supervisor.pid" ] && kill -0 "$(cat -- "$base/supervisor.pid")" 2>/dev/null; then
  echo started=already-supervised
  exit 0
fi
XDG_DATA_HOME="$base/data" XDG_CONFIG_HOME="$base/config" HOME="$base" \
  setsid sh -c 'while :; do setpriv --reuid="$2" --regid="$2" --clear-groups --inh-caps=-all,+net_bind_service --ambient-caps=-all,+net_bind_service --bounding-set=-all,+net_bind_service --no-new-privs -- caddy run --resume --config "$1"; sleep 1; done' caddy-supervisor "$base/base.json" "$user" \
  >>"$base/caddy.log" 2>&1 </dev/null &
echo $! > "$base/supervisor.pid"
echo started=supervisor
"#;

/// The systemd unit ServOS installs for Caddy.
pub fn systemd_unit() -> String {
    format!(
        "[Unit]\nDescription=Caddy, the reverse proxy of ServOS\nAfter=network-online.target\nWants=network-online.target\n\n\
         [Service]\nUser={CADDY_USER}\nGroup={CADDY_USER}\nAmbientCapabilities=CAP_NET_BIND_SERVICE\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\n\
         Environment=XDG_DATA_HOME={BASE_DIR}/data XDG_CONFIG_HOME={BASE_DIR}/config HOME={BASE_DIR}\n\
         ExecStart=/usr/bin/caddy run --resume --config {BASE_CONFIG}\nRestart=always\nRestartSec=1\n\
         LimitNOFILE=1048576\nNoNewPrivileges=true\nPrivateTmp=true\nProtectSystem=full\n\n\
         [Install]\nWantedBy=multi-user.target\n"
    )
}

/// Starts Caddy under systemd or a supervisor loop; the unit text arrives on stdin.
pub fn start_command() -> RemoteCommand {
    RemoteCommand::new("sh")
        .args(["-c", START_CADDY, "servos", BASE_DIR, "servos-caddy.service", CADDY_USER])
        .timeout(Duration::from_secs(60))
}

/// Stops a supervised Caddy (hosts without systemd): the supervisor's whole session.
pub fn stop_supervised_command() -> RemoteCommand {
    RemoteCommand::new("sh").args([
        "-c",
        "[ -f \"$1\" ] || exit 0; kill -s TERM -- -\"$(cat -- \"$1\")\" 2>/dev/null; rm -f -- \"$1\"",
        "servos",
        SUPERVISOR_PID,
    ])
}

fn get(path: String) -> LocalHttpRequest {
    LocalHttpRequest { port: ADMIN_PORT, method: "GET", path, body: None }
}

fn with_body(method: &'static str, path: String, body: &Value) -> LocalHttpRequest {
    LocalHttpRequest { port: ADMIN_PORT, method, path, body: Some(body.to_string().into_bytes()) }
}

fn delete(path: String) -> LocalHttpRequest {
    LocalHttpRequest { port: ADMIN_PORT, method: "DELETE", path, body: None }
}

struct Admin<'a, H: HostIo> {
    io: &'a H,
}

impl<H: HostIo> Admin<'_, H> {
    fn fail(&self, step: &'static str, detail: String) -> ProxyError {
        ProxyError::Host { server: self.io.server().to_owned(), step, detail }
    }

    async fn call(&self, step: &'static str, req: LocalHttpRequest) -> Result<LocalHttpResponse, ProxyError> {
        self.io.local_http(&req).await.map_err(|e| self.fail(step, e))
    }

    /// A call whose answer must be 2xx (or 404 when `missing_ok`).
    async fn expect(&self, step: &'static str, req: LocalHttpRequest, missing_ok: bool) -> Result<LocalHttpResponse, ProxyError> {
        let what = format!("{} {}", req.method, req.path);
        let resp = self.call(step, req).await?;
        if (200..300).contains(&resp.status) || (missing_ok && resp.status == 404) {
            return Ok(resp);
        }
        Err(self.fail(step, format!("{what} answered {}: {}", resp.status, resp.body_text().trim())))
    }

    async fn get_json(&self, step: &'static str, path: String) -> Result<Option<Value>, ProxyError> {
        let resp = self.expect(step, get(path), true).await?;
        if resp.status == 404 {
            return Ok(None);
        }
        serde_json::from_slice(&resp.body).map(Some).map_err(|e| self.fail(step, format!("the answer is not JSON: {e}")))
    }

    /// Creates or replaces the object `@id` = `id`, appended to `parent` when new; no
    /// request at all when it is already as wanted.
    async fn upsert(&self, step: &'static str, id: &str, parent: String, want: &Value) -> Result<(), ProxyError> {
        match self.get_json(step, format!("/id/{id}")).await? {
            Some(current) if &current == want => Ok(()),
            Some(_) => self.expect(step, with_body("PATCH", format!("/id/{id}"), want), false).await.map(drop),
            None => self.expect(step, with_body("POST", parent, want), false).await.map(drop),
        }
    }
}

/// Whether Caddy's admin API answers with ServOS's servers in its config.
async fn configured<H: HostIo>(admin: &Admin<'_, H>) -> Result<bool, String> {
    let resp = admin.io.local_http(&get(format!("/config/apps/http/servers/{HTTPS_SERVER}"))).await?;
    Ok(resp.status == 200 && resp.body_text().trim() != "null")
}

/// Makes sure Caddy runs with ServOS's base configuration: writes [`BASE_CONFIG`], starts
/// Caddy if its admin API does not answer and waits (up to `wait`) until it does, and
/// loads the base configuration into a Caddy that answers without it.
pub async fn ensure_running(io: &impl HostIo, wait: Duration) -> Result<(), ProxyError> {
    let admin = Admin { io };
    if let Ok(true) = configured(&admin).await {
        return Ok(());
    }
    let base = serde_json::to_vec_pretty(&base_config()).map_err(|e| admin.fail("encoding Caddy's base configuration", e.to_string()))?;
    io.run(&write_file_atomically(BASE_CONFIG), Some(&base))
        .await
        .map_err(|e| admin.fail("writing Caddy's base configuration", e))?;
    let mut last = match configured(&admin).await {
        Ok(false) => {
            // A Caddy without ServOS's servers (e.g. the package's own): ServOS owns it now.
            admin.expect("loading Caddy's base configuration", with_body("POST", "/load".into(), &base_config()), false).await?;
            return Ok(());
        }
        Ok(true) => return Ok(()),
        Err(e) => e,
    };
    io.run(&start_command(), Some(systemd_unit().as_bytes()))
        .await
        .map_err(|e| admin.fail("starting Caddy", e))?;
    let deadline = std::time::Instant::now() + wait;
    while std::time::Instant::now() < deadline {
        match configured(&admin).await {
            Ok(true) => return Ok(()),
            Ok(false) => {
                admin.expect("loading Caddy's base configuration", with_body("POST", "/load".into(), &base_config()), false).await?;
                return Ok(());
            }
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(admin.fail("waiting for Caddy's admin API", format!("no answer within {wait:?} (see {LOG_FILE} or `journalctl -u servos-caddy`): {last}")))
}

/// Creates or updates a route (and its TLS policy). The policy goes first, so a new
/// domain's certificate comes from the right issuer; the route is one request.
pub async fn apply(io: &impl HostIo, settings: &CaddySettings, route: &Route, wait: Duration) -> Result<(), ProxyError> {
    ensure_running(io, wait).await?;
    let admin = Admin { io };
    let key = route.key();
    let policy_id = policy_id(&key);
    match policy_json(route, settings) {
        Some(policy) => {
            admin.upsert("setting the TLS policy", &policy_id, "/config/apps/tls/automation/policies".into(), &policy).await?;
        }
        None => {
            admin.expect("removing the TLS policy", delete(format!("/id/{policy_id}")), true).await?;
        }
    }
    let (server, other) = if route.https() { (HTTPS_SERVER, HTTP_SERVER) } else { (HTTP_SERVER, HTTPS_SERVER) };
    // A route that changed between HTTP and HTTPS moves from one server to the other.
    let in_other = admin
        .get_json("reading the routes", format!("/config/apps/http/servers/{other}/routes"))
        .await?
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .any(|r| r["@id"].as_str() == Some(&key));
    if in_other {
        admin.expect("moving the route", delete(format!("/id/{key}")), true).await?;
    }
    admin
        .upsert("setting the route", &key, format!("/config/apps/http/servers/{server}/routes"), &route_json(route))
        .await
}

/// Removes the route and TLS policy of `service` (absent ones are fine).
pub async fn remove(io: &impl HostIo, service: &str, wait: Duration) -> Result<(), ProxyError> {
    ensure_running(io, wait).await?;
    let admin = Admin { io };
    let key = format!("servos-{service}");
    admin.expect("removing the route", delete(format!("/id/{key}")), true).await?;
    admin.expect("removing the TLS policy", delete(format!("/id/{}", policy_id(&key))), true).await?;
    Ok(())
}

/// Reads back whether Caddy answers and the ServOS routes it serves.
pub async fn status(io: &impl HostIo) -> ProxyStatus {
    let resp = io.local_http(&get("/config/apps/http/servers".into())).await;
    match resp {
        Err(e) => ProxyStatus { driver: "caddy".into(), running: false, detail: format!("the admin API does not answer: {e}"), routes: vec![] },
        Ok(r) if r.status != 200 => ProxyStatus {
            driver: "caddy".into(),
            running: true,
            detail: format!("the admin API answered {}: {}", r.status, r.body_text().trim()),
            routes: vec![],
        },
        Ok(r) => {
            let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            let mut routes = parse_routes(&v);
            for route in &mut routes {
                route.targets = match crate::upstream::target(io, &route.service).await {
                    Ok(Some(t)) => vec![t.to_string()],
                    Ok(None) => vec!["none (no DNAT rule)".into()],
                    Err(e) => vec![format!("unknown: {e}")],
                };
            }
            ProxyStatus { driver: "caddy".into(), running: true, detail: "the admin API answers on 127.0.0.1:2019".into(), routes }
        }
    }
}

/// The ServOS routes in Caddy's `apps.http.servers` config.
pub fn parse_routes(servers: &Value) -> Vec<RouteStatus> {
    let mut out = Vec::new();
    for name in [HTTPS_SERVER, HTTP_SERVER] {
        for r in servers[name]["routes"].as_array().into_iter().flatten() {
            let Some(service) = r["@id"].as_str().and_then(|id| id.strip_prefix("servos-")) else { continue };
            let domains = r["match"][0]["host"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|h| h.as_str().map(str::to_owned))
                .collect();
            let upstreams = r["handle"][0]["upstreams"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|u| u["dial"].as_str().map(str::to_owned))
                .collect();
            out.push(RouteStatus { service: service.to_owned(), domains, upstreams, targets: vec![] });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Upstream;

    fn route(tls: TlsMode) -> Route {
        Route {
            service: "web".into(),
            domains: vec!["app.example.com".into()],
            port: 8080,
            path_prefix: Some("/api".into()),
            tls,
            networks: vec!["servos-web".into()],
            upstreams: vec![Upstream { host: "172.18.0.2".into(), port: 8080 }],
        }
    }

    #[test]
    fn routes_have_a_stable_id_host_and_path_match_and_upstreams() {
        assert_eq!(
            route_json(&route(TlsMode::Acme)),
            json!({
                "@id": "servos-web",
                "match": [{ "host": ["app.example.com"], "path": ["/api", "/api/*"] }],
                "handle": [{
                    "handler": "reverse_proxy",
                    "upstreams": [{ "dial": "172.18.0.2:8080" }],
                    "transport": { "protocol": "http", "keep_alive": { "enabled": false } },
                    "load_balancing": { "try_duration": "5s", "try_interval": "100ms" },
                }],
                "terminal": true,
            })
        );
    }

    #[test]
    fn policies_pick_the_issuer_from_the_tls_mode() {
        let s = CaddySettings { acme_email: Some("admin@example.com".into()) };
        assert_eq!(
            policy_json(&route(TlsMode::Acme), &s),
            Some(json!({ "@id": "servos-web-tls", "subjects": ["app.example.com"], "issuers": [{ "module": "acme", "email": "admin@example.com" }] }))
        );
        assert_eq!(policy_json(&route(TlsMode::Internal), &s).unwrap()["issuers"], json!([{ "module": "internal" }]));
        assert_eq!(policy_json(&route(TlsMode::Off), &s), None);
    }

    #[test]
    fn start_and_stop_commands_are_exact() {
        assert!(start_command().to_shell().starts_with("sh -c 'set -e\nbase=\"$1\"; unit=\"$2\"; user=\"$3\""));
        assert!(start_command().to_shell().ends_with("' servos /var/lib/servos/proxy/caddy servos-caddy.service caddy"));
        assert!(start_command().to_shell().contains(
            "setpriv --reuid=\"$2\" --regid=\"$2\" --clear-groups --inh-caps=-all,+net_bind_service \
             --ambient-caps=-all,+net_bind_service --bounding-set=-all,+net_bind_service --no-new-privs -- caddy run"
        ));
        assert_eq!(
            stop_supervised_command().to_shell(),
            "sh -c '[ -f \"$1\" ] || exit 0; kill -s TERM -- -\"$(cat -- \"$1\")\" 2>/dev/null; rm -f -- \"$1\"' servos /var/lib/servos/proxy/caddy/supervisor.pid"
        );
        assert!(systemd_unit().contains("ExecStart=/usr/bin/caddy run --resume --config /var/lib/servos/proxy/caddy/base.json\n"));
        assert!(systemd_unit().contains(
            "User=caddy\nGroup=caddy\nAmbientCapabilities=CAP_NET_BIND_SERVICE\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\n"
        ));
    }

    #[test]
    fn routes_are_read_back_from_the_config() {
        let servers = json!({
            HTTPS_SERVER: { "routes": [route_json(&route(TlsMode::Acme)), { "handle": [] }] },
            HTTP_SERVER: { "routes": [] },
        });
        assert_eq!(
            parse_routes(&servers),
            [RouteStatus { service: "web".into(), domains: vec!["app.example.com".into()], upstreams: vec!["172.18.0.2:8080".into()], targets: vec![] }]
        );
    }
}
