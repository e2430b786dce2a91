//! Traefik cannot be pulled on these machines, so its driver is checked by what it writes:
//! every generated dynamic file matches a golden file and validates against Traefik v3's
//! published JSON schema for the file provider (a copy in `tests/fixtures`), and the
//! static configuration and install command match golden text.
//!
//! Regenerate the golden files with `SERVOS_UPDATE_GOLDEN=1` (and review the diff).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use serde_json::Value;
use servos_core::model::TlsMode;
use servos_proxy::traefik::{self, TraefikSettings};
use servos_proxy::{Route, Upstream};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn schema_check(instance: &Value) -> Result<(), String> {
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler.set_default_draft(boon::Draft::V7);
    let path = fixtures().join("traefik-v3-file-provider.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    compiler.add_resource("traefik-v3-file-provider.json", schema).unwrap();
    let index = compiler.compile("traefik-v3-file-provider.json", &mut schemas).unwrap();
    schemas.validate(instance, index).map_err(|e| format!("{e:#}"))
}

fn validate(instance: &Value) {
    if let Err(e) = schema_check(instance) {
        panic!("generated Traefik configuration does not validate: {e}\n{instance:#}");
    }
}

#[test]
fn traefik_not_runnable_here_the_schema_check_rejects_malformed_files() {
    let bad = serde_json::json!({ "http": { "routers": { "r": { "rule": "Host(`a.example`)", "entryPoints": "web" } } } });
    assert!(schema_check(&bad).is_err());
    let bad = serde_json::json!({ "http": { "services": { "s": { "loadBalancer": { "servers": [{ "url": 8080 }] } } } } });
    assert!(schema_check(&bad).is_err());
}

/// Compares `text` with the golden file `name` (or rewrites it when asked).
fn golden(name: &str, text: &str) {
    let path = fixtures().join("traefik").join(name);
    if std::env::var_os("SERVOS_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with SERVOS_UPDATE_GOLDEN=1 to create it)", path.display()));
    assert_eq!(text, want, "{} differs from the generated configuration", path.display());
}

fn route(domains: &[&str], tls: TlsMode, upstream: &str) -> Route {
    Route {
        service: "web".into(),
        domains: domains.iter().map(|d| (*d).to_owned()).collect(),
        port: 8080,
        path_prefix: None,
        tls,
        networks: vec!["servos-web".into()],
        upstreams: vec![Upstream { host: upstream.into(), port: 8080 }],
    }
}

/// Generates, validates against the schema and compares with the golden file.
fn check(name: &str, route: &Route) -> Value {
    let config = traefik::dynamic_config(route);
    validate(&config);
    golden(name, &(serde_json::to_string_pretty(&config).unwrap() + "\n"));
    config
}

#[test]
fn traefik_not_runnable_here_one_domain_https_with_redirect() {
    let c = check("one-domain.yml", &route(&["app.example.com"], TlsMode::Acme, "servos-web-aaaa1111"));
    assert_eq!(c["http"]["routers"]["servos-web-https"]["tls"]["certResolver"], "servos-acme");
    assert_eq!(c["http"]["routers"]["servos-web-http"]["middlewares"][0], "servos-web-redirect");
    assert_eq!(
        traefik::file_path(&route(&["app.example.com"], TlsMode::Acme, "x")),
        "/var/lib/servos/proxy/traefik/dynamic/servos-web.yml"
    );
}

#[test]
fn traefik_not_runnable_here_several_domains() {
    let c = check(
        "several-domains.yml",
        &route(&["app.example.com", "www.example.com", "example.org"], TlsMode::Acme, "servos-web-aaaa1111"),
    );
    assert_eq!(
        c["http"]["routers"]["servos-web-https"]["rule"],
        "(Host(`app.example.com`) || Host(`www.example.com`) || Host(`example.org`))"
    );
}

#[test]
fn traefik_not_runnable_here_path_prefix() {
    let mut r = route(&["app.example.com"], TlsMode::Acme, "servos-web-aaaa1111");
    r.path_prefix = Some("/api".into());
    let c = check("path-prefix.yml", &r);
    assert_eq!(c["http"]["routers"]["servos-web-https"]["rule"], "Host(`app.example.com`) && PathPrefix(`/api`)");
}

#[test]
fn traefik_not_runnable_here_tls_off_serves_plain_http_only() {
    let c = check("tls-off.yml", &route(&["app.example.com"], TlsMode::Off, "servos-web-aaaa1111"));
    assert!(c["http"]["routers"].get("servos-web-https").is_none());
    assert!(c["http"].get("middlewares").is_none());
}

#[test]
fn traefik_not_runnable_here_tls_internal_uses_the_default_certificate() {
    let c = check("tls-internal.yml", &route(&["app.example.com"], TlsMode::Internal, "servos-web-aaaa1111"));
    assert_eq!(c["http"]["routers"]["servos-web-https"]["tls"], serde_json::json!({}));
}

#[test]
fn traefik_not_runnable_here_after_redeploy_points_at_the_new_container() {
    let before = check("one-domain.yml", &route(&["app.example.com"], TlsMode::Acme, "servos-web-aaaa1111"));
    let after = check("after-redeploy.yml", &route(&["app.example.com"], TlsMode::Acme, "servos-web-bbbb2222"));
    assert_eq!(after["http"]["routers"], before["http"]["routers"]);
    assert_eq!(
        after["http"]["services"]["servos-web"]["loadBalancer"]["servers"],
        serde_json::json!([{ "url": "http://servos-web-bbbb2222:8080" }])
    );
}

#[test]
fn traefik_not_runnable_here_domain_removed_rewrites_or_deletes_the_file() {
    let c = check("domain-removed.yml", &route(&["www.example.com"], TlsMode::Acme, "servos-web-aaaa1111"));
    assert!(!c.to_string().contains("app.example.com"));
    // The last domain removed: the file goes.
    assert_eq!(
        traefik::remove_file("servos-web").to_shell(),
        "rm -f -- /var/lib/servos/proxy/traefik/dynamic/servos-web.yml"
    );
}

#[test]
fn traefik_not_runnable_here_static_config_and_install_command() {
    let settings = TraefikSettings { image: "traefik:v3.3".into(), acme_email: Some("admin@example.com".into()) };
    golden("static.yml", &(serde_json::to_string_pretty(&traefik::static_config(&settings)).unwrap() + "\n"));
    golden("install.sh", &(traefik::install(&settings).to_shell() + "\n"));
    golden("connect-network.sh", &(traefik::connect_network("servos-web").to_shell() + "\n"));
}

#[test]
fn traefik_not_runnable_here_status_reads_back_the_files() {
    let file = serde_json::to_string_pretty(&traefik::dynamic_config(&route(
        &["app.example.com", "www.example.com"],
        TlsMode::Acme,
        "servos-web-aaaa1111",
    )))
    .unwrap();
    let out = format!("running=true\nfile=/var/lib/servos/proxy/traefik/dynamic/servos-web.yml\n{file}\n");
    let s = traefik::parse_status(&out);
    assert!(s.running);
    assert_eq!(s.routes.len(), 1);
    assert_eq!(s.routes[0].service, "web");
    assert_eq!(s.routes[0].domains, ["app.example.com", "www.example.com"]);
    assert_eq!(s.routes[0].upstreams, ["http://servos-web-aaaa1111:8080"]);
    assert!(!traefik::parse_status("running=\n").running);
}
