//! Domains through the server's reverse proxy. The routing model and the drivers live in
//! `servos-proxy`; this module decides what a service's route is on one server and when
//! it changes:
//!
//! - during a deploy ([`Engine::switch_route`]), once the new container is healthy and
//!   before the old ones are retired: the route's only upstream becomes the new container,
//!   then the deploy waits [`RoutingSettings::drain`] so requests already sent to the old
//!   container finish before it is stopped;
//! - when a service's domains change ([`Engine::sync_routes`]): the route is rewritten with
//!   the running container as upstream, or removed when no domain is left.
//!
//! A service without domains, or a server whose proxy is `none`, is left as before.
//! Upstreams: Caddy runs in the server's network namespace and dials the service's stable
//! address (the service network's gateway and the service's port), which an nftables DNAT
//! rule points at the current container (`servos_proxy::upstream`): a deploy, `start` or
//! `restart` re-points that rule and leaves Caddy's configuration, and so its clients'
//! keep-alive connections, alone. Traefik runs in a container attached to the service
//! network and dials the container by name; its file provider hot-reloads without closing
//! client connections, so writing the new container's name is already a clean switch.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Mutex;
use std::time::Duration;

use servos_core::model::{ProxyKind, TlsMode};
use servos_proxy::caddy::{self, CaddySettings};
use servos_proxy::traefik::{self, TraefikSettings};
use servos_proxy::upstream::{self, Pointer};
use servos_proxy::{ProxyError, ProxyStatus, Route, SshHost, Upstream};
use servos_ssh::Session;
use servos_store::Actor;
use servos_store::hosts::{HostKind, HostRecord};
use servos_store::services::ServiceRecord;

use crate::Engine;
use crate::error::DeployError;
use crate::logs::DeployLog;
use crate::remote::docker;

/// After the drain, how long a deploy waits at most for the old container's last
/// connections (through the stable address) to close before retiring it.
const SETTLE_MAX: Duration = Duration::from_secs(10);

/// How routes are switched and proxies installed.
#[derive(Debug, Clone)]
pub struct RoutingSettings {
    /// After the switch, how long old containers keep running for requests in flight.
    pub drain: Duration,
    /// The ACME account email (the admin's), for Let's Encrypt's expiry notices.
    pub acme_email: Option<String>,
    /// Traefik's image and version.
    pub traefik_image: String,
    /// How long a freshly started Caddy may take to answer on its admin API.
    pub proxy_start_wait: Duration,
}

impl RoutingSettings {
    /// The defaults, with `SERVOS_ACME_EMAIL` (the admin's email for ACME accounts),
    /// `SERVOS_TRAEFIK_IMAGE` and `SERVOS_PROXY_DRAIN_SECS` applied when set.
    pub fn from_env() -> Self {
        let mut s = Self::default();
        if let Some(email) = std::env::var("SERVOS_ACME_EMAIL").ok().filter(|e| !e.trim().is_empty()) {
            s.acme_email = Some(email.trim().to_owned());
        }
        if let Some(image) = std::env::var("SERVOS_TRAEFIK_IMAGE").ok().filter(|e| !e.trim().is_empty()) {
            s.traefik_image = image.trim().to_owned();
        }
        if let Some(secs) = std::env::var("SERVOS_PROXY_DRAIN_SECS").ok().and_then(|v| v.trim().parse::<u64>().ok()) {
            s.drain = Duration::from_secs(secs);
        }
        s
    }
}

impl Default for RoutingSettings {
    fn default() -> Self {
        Self {
            drain: Duration::from_secs(5),
            acme_email: None,
            traefik_image: traefik::DEFAULT_IMAGE.to_owned(),
            proxy_start_wait: Duration::from_secs(15),
        }
    }
}

/// The engine's routing settings, replaceable at run time (`servos serve` sets the email).
#[derive(Debug, Default)]
pub(crate) struct RoutingState {
    settings: Mutex<Option<RoutingSettings>>,
}

impl RoutingState {
    fn get(&self) -> RoutingSettings {
        self.settings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .unwrap_or_else(RoutingSettings::from_env)
    }
}

impl Engine {
    /// Replaces the routing settings (drain time, ACME email, Traefik image).
    pub fn set_routing(&self, settings: RoutingSettings) {
        *self
            .deploy_state()
            .routing
            .settings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(settings);
    }

    /// The routing settings in force.
    pub fn routing(&self) -> RoutingSettings {
        self.deploy_state().routing.get()
    }

    /// Points the service's route on `server` at `container` (healthy, just started), then
    /// waits the drain time. No-op without domains or without a proxy.
    pub(crate) async fn switch_route(
        &self,
        session: &Session,
        service: &ServiceRecord,
        server: &HostRecord,
        container: &str,
        log: &DeployLog,
    ) -> Result<(), DeployError> {
        let proxy = proxy_of(server);
        if service.domains.is_empty() || proxy == ProxyKind::None {
            return Ok(());
        }
        let (route, pointer) = self
            .route_for(session, service, server, proxy, container)
            .await?;
        log.step(&format!(
            "server {}: {} routes {} to {}",
            server.name,
            proxy.as_str(),
            route.domains.join(", "),
            describe(&route, pointer.as_ref(), container, None)
        ))
        .await;
        let target = self.apply_route(session, server, proxy, &route, pointer.as_ref()).await?;
        if target.is_some() {
            log.step(&format!(
                "server {}: switched: {}",
                server.name,
                describe(&route, pointer.as_ref(), container, target)
            ))
            .await;
        }
        let settle = pointer.as_ref().zip(target).map(|(p, t)| (p.stable, *t.ip()));
        self.drain_and_settle(session, service, server, settle, log).await
    }

    /// After a switch: waits the drain time, then, for a switch of a stable address (a Caddy
    /// stable address or a mesh address) `settle = (stable, target)`, up to [`SETTLE_MAX`]
    /// more until every tracked connection to `stable` leads to `target`, so Docker's
    /// conntrack purge at the retire finds none of them (see `servos_proxy::upstream`).
    /// Says in the deploy log when it gave up.
    pub(crate) async fn drain_and_settle(
        &self,
        session: &Session,
        service: &ServiceRecord,
        server: &HostRecord,
        settle: Option<(SocketAddrV4, Ipv4Addr)>,
        log: &DeployLog,
    ) -> Result<(), DeployError> {
        let drain = self.routing().drain;
        log.step(&format!(
            "server {}: draining the old container(s) for {drain:?}",
            server.name
        ))
        .await;
        tokio::time::sleep(drain).await;
        let Some((stable, target)) = settle else { return Ok(()) };
        let io = SshHost { name: &server.name, session };
        let left = upstream::settle(&io, stable, target, SETTLE_MAX)
            .await
            .map_err(|source| DeployError::Proxy { service: service.name.clone(), source })?;
        let note = match left {
            Some(0) => return Ok(()),
            Some(n) => format!(
                "{n} connection(s) to {stable} still on the old container after {SETTLE_MAX:?} more; retiring it anyway"
            ),
            None => "cannot read the connection tracking table; retiring without waiting for connections to close".to_owned(),
        };
        log.step(&format!("server {}: {note}", server.name)).await;
        Ok(())
    }

    /// Rewrites the service's route on each of its servers with a proxy: the running
    /// container as upstream, or no route when the service has no domain left (or no
    /// running container). Returns one line per server saying what was done.
    pub async fn sync_routes(&self, service: &str) -> Result<Vec<String>, DeployError> {
        let service = self.store().get_service(service).await?;
        let _lock = self.lock_service(&service.id).await;
        let mut done = Vec::new();
        for server_id in &service.servers {
            let server = self.store().get_host(HostKind::Server, server_id).await?;
            let proxy = proxy_of(&server);
            if proxy == ProxyKind::None {
                done.push(format!("server {}: no proxy", server.name));
                continue;
            }
            let session = self
                .session(HostKind::Server, &server.id, &Actor::system())
                .await?;
            let running = Engine::exec_checked(&session, &docker::list_containers(&service.id, false))
                .await
                .map(|o| docker::parse_names(&o.stdout_lossy()))
                .map_err(|detail| proxy_error(&service, &server, "listing the running containers", detail))?;
            match running.first() {
                Some(container) if !service.domains.is_empty() => {
                    let (route, pointer) = self
                        .route_for(&session, &service, &server, proxy, container)
                        .await?;
                    self.apply_route(&session, &server, proxy, &route, pointer.as_ref()).await?;
                    done.push(format!(
                        "server {}: {} routes {} to {container}",
                        server.name,
                        proxy.as_str(),
                        route.domains.join(", ")
                    ));
                }
                _ => {
                    self.remove_route(&session, &server, proxy, &service.name)
                        .await
                        .map_err(|source| DeployError::Proxy { service: service.name.clone(), source })?;
                    done.push(format!("server {}: route of {} removed", server.name, service.name));
                }
            }
        }
        Ok(done)
    }

    /// After `start` or `restart` on `server`: points the route at the running container
    /// again (a restarted container may have a new IP). For Caddy only the DNAT rule moves;
    /// the route itself is rewritten only if it differs. Nothing without domains, without
    /// a proxy, or without a running container. Returns what was done, for the audit.
    pub(crate) async fn reroute_running(
        &self,
        session: &Session,
        service: &ServiceRecord,
        server: &HostRecord,
    ) -> Result<Option<String>, DeployError> {
        let proxy = proxy_of(server);
        if service.domains.is_empty() || proxy == ProxyKind::None {
            return Ok(None);
        }
        let running = Engine::exec_checked(session, &docker::list_containers(&service.id, false))
            .await
            .map(|o| docker::parse_names(&o.stdout_lossy()))
            .map_err(|detail| proxy_error(service, server, "listing the running containers", detail))?;
        let Some(container) = running.first() else { return Ok(None) };
        let (route, pointer) = self.route_for(session, service, server, proxy, container).await?;
        let target = self.apply_route(session, server, proxy, &route, pointer.as_ref()).await?;
        Ok(Some(describe(&route, pointer.as_ref(), container, target)))
    }

    /// Removes the service's route from the proxy of each of its servers (before the
    /// service is deleted).
    pub async fn unroute(&self, service: &str) -> Result<(), DeployError> {
        let service = self.store().get_service(service).await?;
        if service.domains.is_empty() {
            return Ok(());
        }
        let _lock = self.lock_service(&service.id).await;
        for server_id in &service.servers {
            let server = self.store().get_host(HostKind::Server, server_id).await?;
            let proxy = proxy_of(&server);
            if proxy == ProxyKind::None {
                continue;
            }
            let session = self
                .session(HostKind::Server, &server.id, &Actor::system())
                .await?;
            self.remove_route(&session, &server, proxy, &service.name)
                .await
                .map_err(|source| DeployError::Proxy { service: service.name.clone(), source })?;
        }
        Ok(())
    }

    /// What the proxy of a server runs and routes, read from the proxy itself.
    pub async fn proxy_status(&self, server: &str) -> Result<ProxyStatus, DeployError> {
        let server = self.store().get_host(HostKind::Server, server).await?;
        let proxy = proxy_of(&server);
        if proxy == ProxyKind::None {
            return Ok(ProxyStatus {
                driver: "none".into(),
                running: false,
                detail: "this server has no proxy".into(),
                routes: vec![],
            });
        }
        let session = self
            .session(HostKind::Server, &server.id, &Actor::system())
            .await?;
        let io = SshHost { name: &server.name, session: &session };
        let status = match proxy {
            ProxyKind::Caddy => caddy::status(&io).await,
            _ => traefik::status(&io).await.map_err(|source| DeployError::Proxy {
                service: String::new(),
                source,
            })?,
        };
        Ok(status)
    }

    /// The service's route on `server` and, for Caddy, where its stable address must lead
    /// (`container`'s IP on the service network).
    async fn route_for(
        &self,
        session: &Session,
        service: &ServiceRecord,
        server: &HostRecord,
        proxy: ProxyKind,
        container: &str,
    ) -> Result<(Route, Option<Pointer>), DeployError> {
        let fail = |detail: String| proxy_error(service, server, "building the route", detail);
        let port = service
            .port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| fail("the service has domains but no port: set its port".into()))?;
        let tls = TlsMode::parse(&service.tls).unwrap_or(TlsMode::Acme);
        let domains = servos_proxy::normalize_domains(
            &service.domains,
            servos_proxy::supports_wildcards(proxy, tls),
        )
        .map_err(|e| fail(e.to_string()))?;
        let path_prefix = self.store().service_path_prefix(&service.id).await?;
        let network = docker::network_name(&service.name);
        let (host, pointer) = match proxy {
            ProxyKind::Caddy => {
                let io = SshHost { name: &server.name, session };
                let stable = upstream::stable_address(&io, &network, port)
                    .await
                    .map_err(|source| DeployError::Proxy { service: service.name.clone(), source })?;
                let pointer = Pointer { service: service.name.clone(), stable, container: container.to_owned() };
                (stable.ip().to_string(), Some(pointer))
            }
            _ => (container.to_owned(), None),
        };
        let route = Route {
            service: service.name.clone(),
            domains,
            port,
            path_prefix,
            tls,
            networks: vec![network],
            upstreams: vec![Upstream { host, port }],
        };
        Ok((route, pointer))
    }

    async fn apply_route(
        &self,
        session: &Session,
        server: &HostRecord,
        proxy: ProxyKind,
        route: &Route,
        pointer: Option<&Pointer>,
    ) -> Result<Option<SocketAddrV4>, DeployError> {
        let settings = self.routing();
        let io = SshHost { name: &server.name, session };
        let mut target = None;
        let result = match proxy {
            ProxyKind::Caddy => {
                // The stable address first: this is the switch itself. The route after it
                // is unchanged on a redeploy, and then Caddy is not even asked to change.
                if let Some(p) = pointer {
                    target = Some(
                        upstream::point(&io, p)
                            .await
                            .map_err(|source| DeployError::Proxy { service: route.service.clone(), source })?,
                    );
                }
                let caddy = CaddySettings { acme_email: settings.acme_email.clone() };
                caddy::apply(&io, &caddy, route, settings.proxy_start_wait).await
            }
            ProxyKind::Traefik => {
                let t = TraefikSettings { image: settings.traefik_image.clone(), acme_email: settings.acme_email.clone() };
                traefik::apply(&io, &t, route).await
            }
            ProxyKind::None => Ok(()),
        };
        result.map_err(|source| DeployError::Proxy { service: route.service.clone(), source })?;
        Ok(target)
    }

    async fn remove_route(
        &self,
        session: &Session,
        server: &HostRecord,
        proxy: ProxyKind,
        service: &str,
    ) -> Result<(), ProxyError> {
        let io = SshHost { name: &server.name, session };
        match proxy {
            ProxyKind::Caddy => {
                caddy::remove(&io, service, self.routing().proxy_start_wait).await?;
                upstream::remove(&io, service).await
            }
            ProxyKind::Traefik => traefik::remove(&io, service).await,
            ProxyKind::None => Ok(()),
        }
    }
}

/// `172.18.0.1:8080 → servos-web-1a2b3c4d (172.18.0.3:8080)` for Caddy (the container's
/// address once known), the upstreams for Traefik.
fn describe(route: &Route, pointer: Option<&Pointer>, container: &str, target: Option<SocketAddrV4>) -> String {
    match (pointer, target) {
        (Some(p), Some(t)) => format!("{} → {container} ({t})", p.stable),
        (Some(p), None) => format!("{} → {container}", p.stable),
        (None, _) => route.upstreams.iter().map(Upstream::dial).collect::<Vec<_>>().join(", "),
    }
}

fn proxy_of(server: &HostRecord) -> ProxyKind {
    ProxyKind::parse(&server.proxy).unwrap_or(ProxyKind::None)
}

fn proxy_error(service: &ServiceRecord, server: &HostRecord, step: &'static str, detail: String) -> DeployError {
    DeployError::Proxy {
        service: service.name.clone(),
        source: ProxyError::Host { server: server.name.clone(), step, detail },
    }
}
