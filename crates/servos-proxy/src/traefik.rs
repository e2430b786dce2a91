//! The Traefik driver (the default): Traefik v3 runs as a container on each server, with
//! entry points `web` (:80) and `websecure` (:443), an ACME HTTP-01 resolver using the
//! admin's email, and the file provider watching [`DYNAMIC_DIR`] (mounted at
//! `/etc/traefik/dynamic`). Each service gets one dynamic file, `servos-<service>.yml`,
//! written atomically (temporary file, then rename: Traefik only loads `*.yml`, never the
//! `.servos-<service>.yml.tmp` being written). The files hold JSON, which is YAML.
//!
//! Routers: `<key>-https` on `websecure` (TLS: the ACME resolver for `acme`; Traefik's own
//! default certificate for `internal`) and `<key>-http` on `web`, redirecting to HTTPS
//! through the `<key>-redirect` middleware; with TLS `off` only `<key>-http`, serving.
//! Upstreams are container names on the service network, which Traefik joins.

use serde_json::{Value, json};
use servos_core::model::TlsMode;
use servos_ssh::RemoteCommand;

use crate::{HostIo, ProxyError, ProxyStatus, Route, RouteStatus, write_file_atomically};

/// Everything Traefik-related on a server lives here.
pub const BASE_DIR: &str = "/var/lib/servos/proxy/traefik";
/// The directory the file provider watches.
pub const DYNAMIC_DIR: &str = "/var/lib/servos/proxy/traefik/dynamic";
/// The container's name.
pub const CONTAINER: &str = "servos-traefik";
/// The ACME resolver's name.
pub const RESOLVER: &str = "servos-acme";
/// The image used unless configured otherwise.
pub const DEFAULT_IMAGE: &str = "traefik:v3.3";

/// How Traefik is installed on a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraefikSettings {
    /// Image and version, e.g. `traefik:v3.3`.
    pub image: String,
    /// The ACME account email (the admin's; Let's Encrypt accepts none, but then sends no
    /// expiry warnings).
    pub acme_email: Option<String>,
}

/// The dynamic configuration file of a route.
pub fn file_path(route: &Route) -> String {
    format!("{DYNAMIC_DIR}/{}.yml", route.key())
}

fn rule(route: &Route) -> String {
    let hosts: Vec<String> = route
        .domains
        .iter()
        .map(|d| match d.strip_prefix("*.") {
            Some(rest) => format!("HostRegexp(`^[a-z0-9-]+\\.{}$`)", rest.replace('.', "\\.")),
            None => format!("Host(`{d}`)"),
        })
        .collect();
    let hosts = if hosts.len() > 1 {
        format!("({})", hosts.join(" || "))
    } else {
        hosts.join("")
    };
    match &route.path_prefix {
        Some(p) => format!("{hosts} && PathPrefix(`{p}`)"),
        None => hosts,
    }
}

/// The dynamic configuration of one route (the content of [`file_path`]).
pub fn dynamic_config(route: &Route) -> Value {
    let key = route.key();
    let rule = rule(route);
    let servers: Vec<Value> = route
        .upstreams
        .iter()
        .map(|u| json!({ "url": format!("http://{}", u.dial()) }))
        .collect();
    let mut routers = serde_json::Map::new();
    let mut middlewares = serde_json::Map::new();
    if route.https() {
        let tls = match route.tls {
            TlsMode::Acme => json!({ "certResolver": RESOLVER }),
            _ => json!({}),
        };
        routers.insert(
            format!("{key}-https"),
            json!({ "rule": rule, "entryPoints": ["websecure"], "service": key, "tls": tls }),
        );
        routers.insert(
            format!("{key}-http"),
            json!({
                "rule": rule, "entryPoints": ["web"], "service": key,
                "middlewares": [format!("{key}-redirect")],
            }),
        );
        middlewares.insert(
            format!("{key}-redirect"),
            json!({ "redirectScheme": { "scheme": "https", "permanent": true } }),
        );
    } else {
        routers.insert(
            format!("{key}-http"),
            json!({ "rule": rule, "entryPoints": ["web"], "service": key }),
        );
    }
    let mut http = serde_json::Map::new();
    http.insert("routers".into(), Value::Object(routers));
    if !middlewares.is_empty() {
        http.insert("middlewares".into(), Value::Object(middlewares));
    }
    http.insert(
        "services".into(),
        json!({ key: { "loadBalancer": { "servers": servers, "passHostHeader": true } } }),
    );
    json!({ "http": Value::Object(http) })
}

/// Traefik's static configuration (`/etc/traefik/traefik.yml` in the container).
pub fn static_config(settings: &TraefikSettings) -> Value {
    let mut acme = json!({
        "storage": "/etc/traefik/acme/acme.json",
        "httpChallenge": { "entryPoint": "web" },
    });
    if let Some(email) = &settings.acme_email {
        acme["email"] = json!(email);
    }
    json!({
        "entryPoints": {
            "web": { "address": ":80" },
            "websecure": { "address": ":443" },
        },
        "certificatesResolvers": {
            RESOLVER: { "acme": acme }
        },
        "providers": {
            "file": { "directory": "/etc/traefik/dynamic", "watch": true }
        },
        "log": { "level": "INFO" },
    })
}

/// Writes the static configuration (content on stdin) and starts Traefik unless its
/// container runs. ACME state lives in `acme/` (mode 0700: it holds the account key).
pub fn install(settings: &TraefikSettings) -> RemoteCommand {
    RemoteCommand::new("mkdir")
        .args(["-p", "--", DYNAMIC_DIR])
        .and_then(RemoteCommand::new("install").args(["-d", "-m", "0700", "--", &format!("{BASE_DIR}/acme")]))
        .and_then(write_file_atomically(&format!("{BASE_DIR}/traefik.yml")))
        .and_then(RemoteCommand::new("sh").args([
            "-c",
            START_TRAEFIK,
            "servos",
            CONTAINER,
            &settings.image,
            BASE_DIR,
        ]))
        .timeout(std::time::Duration::from_secs(15 * 60))
}

const START_TRAEFIK: &str = "if [ \"$(docker inspect -f '{{.State.Running}}' -- \"$1\" 2>/dev/null)\" = true ]; then exit 0; fi
docker rm -f -- \"$1\" >/dev/null 2>&1 || true
docker image inspect -- \"$2\" >/dev/null 2>&1 || docker pull -- \"$2\"
docker run -d --name \"$1\" --restart unless-stopped --label servos.proxy=traefik \
  -p 80:80 -p 443:443 -v \"$3\":/etc/traefik -- \"$2\" --configFile=/etc/traefik/traefik.yml";

/// Attaches the Traefik container to a service network (already attached is fine).
pub fn connect_network(network: &str) -> RemoteCommand {
    RemoteCommand::new("sh").args([
        "-c",
        "docker network connect -- \"$1\" \"$2\" 2>/dev/null || docker inspect -f '{{json .NetworkSettings.Networks}}' -- \"$2\" | grep -q -- \"\\\"$1\\\"\"",
        "servos",
        network,
        CONTAINER,
    ])
}

/// Removes a route's file (missing is fine).
pub fn remove_file(route_key: &str) -> RemoteCommand {
    RemoteCommand::new("rm").args(["-f", "--", &format!("{DYNAMIC_DIR}/{route_key}.yml")])
}

/// Whether Traefik runs, and the dynamic files present.
pub fn status_command() -> RemoteCommand {
    RemoteCommand::new("sh").args([
        "-c",
        "printf 'running=%s\\n' \"$(docker inspect -f '{{.State.Running}}' -- \"$1\" 2>/dev/null)\"; for f in \"$2\"/servos-*.yml; do [ -f \"$f\" ] && { printf 'file=%s\\n' \"$f\"; cat -- \"$f\"; printf '\\n'; }; done; true",
        "servos",
        CONTAINER,
        DYNAMIC_DIR,
    ])
}

/// Installs Traefik if needed, attaches it to the route's networks and writes the route.
pub async fn apply(io: &impl HostIo, settings: &TraefikSettings, route: &Route) -> Result<(), ProxyError> {
    let fail = |step, detail| ProxyError::Host { server: io.server().to_owned(), step, detail };
    let config = serde_json::to_vec_pretty(&static_config(settings)).map_err(|e| fail("encoding the Traefik configuration", e.to_string()))?;
    io.run(&install(settings), Some(&config)).await.map_err(|e| fail("installing Traefik", e))?;
    for network in &route.networks {
        io.run(&connect_network(network), None).await.map_err(|e| fail("attaching Traefik to the service network", e))?;
    }
    let dynamic = serde_json::to_vec_pretty(&dynamic_config(route)).map_err(|e| fail("encoding the route", e.to_string()))?;
    io.run(&write_file_atomically(&file_path(route)), Some(&dynamic))
        .await
        .map_err(|e| fail("writing the route file", e))?;
    Ok(())
}

/// Removes the route of `service`.
pub async fn remove(io: &impl HostIo, service: &str) -> Result<(), ProxyError> {
    io.run(&remove_file(&format!("servos-{service}")), None).await.map_err(|detail| ProxyError::Host {
        server: io.server().to_owned(),
        step: "removing the route file",
        detail,
    })?;
    Ok(())
}

/// Reads back whether Traefik runs and the routes its files define.
pub async fn status(io: &impl HostIo) -> Result<ProxyStatus, ProxyError> {
    let out = io.run(&status_command(), None).await.map_err(|detail| ProxyError::Host {
        server: io.server().to_owned(),
        step: "reading the Traefik state",
        detail,
    })?;
    Ok(parse_status(&out.stdout_lossy()))
}

/// Parses [`status_command`]'s output.
pub fn parse_status(stdout: &str) -> ProxyStatus {
    let running = stdout.lines().next() == Some("running=true");
    let mut routes = Vec::new();
    for chunk in stdout.split("file=").skip(1) {
        let Some((path, body)) = chunk.split_once('\n') else { continue };
        let service = path
            .rsplit('/')
            .next()
            .and_then(|f| f.strip_prefix("servos-"))
            .and_then(|f| f.strip_suffix(".yml"))
            .unwrap_or_default()
            .to_owned();
        let Ok(v) = serde_json::from_str::<Value>(body.trim()) else { continue };
        let mut domains = Vec::new();
        if let Some(routers) = v["http"]["routers"].as_object() {
            for r in routers.values() {
                for part in r["rule"].as_str().unwrap_or_default().split("Host(`").skip(1) {
                    if let Some((d, _)) = part.split_once('`')
                        && !domains.iter().any(|x: &String| x == d)
                    {
                        domains.push(d.to_owned());
                    }
                }
            }
        }
        let upstreams = v["http"]["services"]
            .as_object()
            .into_iter()
            .flat_map(|s| s.values())
            .flat_map(|s| s["loadBalancer"]["servers"].as_array().cloned().unwrap_or_default())
            .filter_map(|s| s["url"].as_str().map(str::to_owned))
            .collect();
        routes.push(RouteStatus { service, domains, upstreams, targets: vec![] });
    }
    ProxyStatus {
        driver: "traefik".into(),
        running,
        detail: if running { "container servos-traefik is running".into() } else { "container servos-traefik is not running".into() },
        routes,
    }
}
