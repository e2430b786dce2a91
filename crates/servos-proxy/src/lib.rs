//! ServOS routing model and its reverse-proxy drivers.
//!
//! - [`Route`]: what one service asks of the proxy on one server: its domains, an optional
//!   path prefix, HTTPS (on by default, HTTP redirected) and its upstreams.
//! - [`traefik`]: the default driver. Pure generation of the v3 file-provider dynamic
//!   configuration (one file per service), the static configuration and the `docker run`
//!   that installs Traefik, and the data commands that write files atomically.
//! - [`caddy`]: Caddy from the distribution package, run by ServOS (systemd unit, or a
//!   supervisor loop where there is no systemd), configured through its admin API bound to
//!   `127.0.0.1:2019` on the server, one stable `@id` per service.
//! - [`upstream`]: the stable per-service upstream address Caddy dials, pointed at the
//!   current container by an nftables DNAT rule, so a deploy never changes Caddy's config.
//!
//! Architecture invariant: this crate does no IO of its own. A driver reaches the server
//! only through [`HostIo`] (commands as data, and HTTP to a loopback port), implemented for
//! [`servos_ssh::Session`] here and by nothing else.

#![forbid(unsafe_code)]

pub mod caddy;
pub mod mesh;
pub mod traefik;
pub mod upstream;

use serde::Serialize;
use servos_core::model::{ProxyKind, TlsMode};
use servos_core::validate::{self, ValidationError};
use servos_ssh::{LocalHttpRequest, LocalHttpResponse, Output, RemoteCommand, Session, SshError};

/// Errors of the routing model and the drivers.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),

    /// The server's proxy is `none`: nothing routes domains there.
    #[error("server {server} has no proxy (proxy is \"none\"): set its proxy to traefik or caddy to route domains")]
    NoProxy { server: String },

    /// A command or admin request on the server failed.
    #[error("{step} on {server} failed: {detail}")]
    Host {
        server: String,
        step: &'static str,
        detail: String,
    },
}

/// One backend of a route: a container address reachable from the proxy, and its port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Upstream {
    /// An IP address (Caddy, which runs in the host's network namespace) or a container
    /// name resolved by Docker's DNS on the service network (Traefik, a container there).
    pub host: String,
    pub port: u16,
}

impl Upstream {
    pub fn dial(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// What one service asks of the proxy on one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    /// The service's name (unique): it names the route's `@id`, file and routers.
    pub service: String,
    /// Validated, lower-case, without duplicates.
    pub domains: Vec<String>,
    /// The container port the upstreams listen on.
    pub port: u16,
    /// Only requests whose path starts with this prefix are routed (not stripped).
    pub path_prefix: Option<String>,
    pub tls: TlsMode,
    /// Docker networks the proxy must be attached to (Traefik only).
    pub networks: Vec<String>,
    pub upstreams: Vec<Upstream>,
}

impl Route {
    /// The name used for everything the route creates in a proxy: `servos-<service>`.
    pub fn key(&self) -> String {
        format!("servos-{}", self.service)
    }

    /// Whether HTTPS is served (and HTTP redirected to it).
    pub fn https(&self) -> bool {
        self.tls != TlsMode::Off
    }
}

/// Whether a driver can route `*.example.com`. Both drivers obtain certificates with
/// ACME HTTP-01, which cannot issue wildcard certificates; Caddy's internal issuer can.
pub fn supports_wildcards(proxy: ProxyKind, tls: TlsMode) -> bool {
    match proxy {
        ProxyKind::Caddy => tls != TlsMode::Acme,
        ProxyKind::Traefik => tls == TlsMode::Off,
        ProxyKind::None => false,
    }
}

/// Validates and normalises a service's domains: lower-case hostnames, each at most once,
/// wildcards only when `allow_wildcards`. An error names the bad domain.
pub fn normalize_domains(
    domains: &[String],
    allow_wildcards: bool,
) -> Result<Vec<String>, ValidationError> {
    let mut out: Vec<String> = Vec::with_capacity(domains.len());
    for d in domains {
        let lower = d.trim_end_matches('.').to_ascii_lowercase();
        validate::hostname("domains", &lower, allow_wildcards).map_err(|e| {
            ValidationError::new("domains", format!("{} ({})", show_domain(d), e.message))
        })?;
        if lower.parse::<std::net::IpAddr>().is_ok() || !lower.contains('.') {
            return Err(ValidationError::new(
                "domains",
                format!("{} is not a fully qualified domain name", show_domain(d)),
            ));
        }
        if !out.contains(&lower) {
            out.push(lower);
        }
    }
    Ok(out)
}

fn show_domain(d: &str) -> String {
    validate::show(d)
}

/// A path prefix: absolute, of URL-safe visible ASCII, no `..`, no trailing `/` (except
/// `/` itself, which means no prefix and is returned as `None`).
pub fn normalize_path_prefix(prefix: Option<&str>) -> Result<Option<String>, ValidationError> {
    let Some(p) = prefix else { return Ok(None) };
    let bad = |why: &str| {
        Err(ValidationError::new(
            "path_prefix",
            format!("{} {why}", validate::show(p)),
        ))
    };
    if !p.starts_with('/') {
        return bad("must start with '/'");
    }
    if p.len() > 200 {
        return bad("is longer than 200 characters");
    }
    if !p
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.' | '~'))
    {
        return bad("may contain only ASCII letters, digits and / - _ . ~");
    }
    if p.split('/').any(|seg| seg == ".." || seg == ".") {
        return bad("must not contain '.' or '..' segments");
    }
    let trimmed = p.trim_end_matches('/');
    Ok((!trimmed.is_empty()).then(|| trimmed.to_owned()))
}

/// What a driver needs from a server: commands as data, and HTTP to a loopback port.
#[allow(async_fn_in_trait)]
pub trait HostIo {
    /// The server's name, for errors.
    fn server(&self) -> &str;
    /// Runs `cmd` (with `stdin` if given); a non-zero exit is an error.
    async fn run(&self, cmd: &RemoteCommand, stdin: Option<&[u8]>) -> Result<Output, String>;
    /// HTTP to `127.0.0.1:port` on the server.
    async fn local_http(&self, req: &LocalHttpRequest) -> Result<LocalHttpResponse, String>;
}

/// [`HostIo`] over an SSH session to a server named `name`.
#[derive(Debug)]
pub struct SshHost<'a> {
    pub name: &'a str,
    pub session: &'a Session,
}

fn ssh_detail(e: &SshError) -> String {
    e.to_string()
}

impl HostIo for SshHost<'_> {
    fn server(&self) -> &str {
        self.name
    }

    async fn run(&self, cmd: &RemoteCommand, stdin: Option<&[u8]>) -> Result<Output, String> {
        let addr = self.session.target().addr();
        let out = match stdin {
            Some(bytes) => self.session.exec_with_stdin(cmd, bytes).await,
            None => self.session.exec(cmd).await,
        };
        out.and_then(|o| o.checked(&addr, cmd))
            .map_err(|e| ssh_detail(&e))
    }

    async fn local_http(&self, req: &LocalHttpRequest) -> Result<LocalHttpResponse, String> {
        self.session.local_http(req).await.map_err(|e| ssh_detail(&e))
    }
}

/// What `servos proxy status` shows for one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyStatus {
    pub driver: String,
    pub running: bool,
    /// A short description of the state (e.g. why it is not running).
    pub detail: String,
    pub routes: Vec<RouteStatus>,
}

/// One route the proxy serves, as read back from the proxy itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteStatus {
    pub service: String,
    pub domains: Vec<String>,
    pub upstreams: Vec<String>,
    /// Where each upstream leads when it is a stable address (Caddy: the container the
    /// DNAT rule points at); empty when the upstreams are the containers themselves.
    pub targets: Vec<String>,
}

/// Writes `content` to `path` atomically: a temporary file in the same directory (created
/// mode 0644, content from stdin), then `mv -f` over the target.
pub fn write_file_atomically(path: &str) -> RemoteCommand {
    let (dir, file) = path.rsplit_once('/').unwrap_or((".", path));
    let tmp = format!("{dir}/.{file}.tmp");
    RemoteCommand::new("mkdir")
        .args(["-p", "--", dir])
        .and_then(RemoteCommand::new("umask").arg("022"))
        .and_then(RemoteCommand::new("cat").stdout_to(tmp.clone()))
        .and_then(RemoteCommand::new("mv").args(["-f", "--", &tmp, path]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_lowercased_deduplicated_and_validated() {
        let d = vec!["App.Example.com".to_owned(), "app.example.com.".to_owned(), "b.example.org".to_owned()];
        assert_eq!(normalize_domains(&d, false).unwrap(), ["app.example.com", "b.example.org"]);
        let e = normalize_domains(&["*.example.com".to_owned()], false).unwrap_err();
        assert!(e.to_string().contains("\"*.example.com\""), "{e}");
        assert!(normalize_domains(&["*.example.com".to_owned()], true).is_ok());
        let e = normalize_domains(&["bad domain.com\n".to_owned()], false).unwrap_err();
        assert!(e.to_string().contains("\\n"), "{e}");
        assert!(normalize_domains(&["localhost".to_owned()], false).is_err());
        assert!(normalize_domains(&["10.0.0.1".to_owned()], false).is_err());
    }

    #[test]
    fn wildcards_follow_the_certificate_issuer() {
        assert!(!supports_wildcards(ProxyKind::Caddy, TlsMode::Acme));
        assert!(supports_wildcards(ProxyKind::Caddy, TlsMode::Internal));
        assert!(!supports_wildcards(ProxyKind::Traefik, TlsMode::Acme));
        assert!(!supports_wildcards(ProxyKind::None, TlsMode::Off));
    }

    #[test]
    fn path_prefixes_are_absolute_and_plain() {
        assert_eq!(normalize_path_prefix(Some("/api/")).unwrap().as_deref(), Some("/api"));
        assert_eq!(normalize_path_prefix(Some("/")).unwrap(), None);
        assert_eq!(normalize_path_prefix(None).unwrap(), None);
        assert!(normalize_path_prefix(Some("api")).is_err());
        assert!(normalize_path_prefix(Some("/a/../b")).is_err());
        assert!(normalize_path_prefix(Some("/a`b")).is_err());
    }

    #[test]
    fn files_are_written_through_a_temporary_and_renamed() {
        assert_eq!(
            write_file_atomically("/var/lib/servos/proxy/traefik/dynamic/servos-web.yml").to_shell(),
            "mkdir -p -- /var/lib/servos/proxy/traefik/dynamic && umask 022 && \
             cat > /var/lib/servos/proxy/traefik/dynamic/.servos-web.yml.tmp && \
             mv -f -- /var/lib/servos/proxy/traefik/dynamic/.servos-web.yml.tmp \
             /var/lib/servos/proxy/traefik/dynamic/servos-web.yml"
        );
    }
}
