//! `servos domains add|rm|list SERVICE` and `servos proxy status SERVER`.

use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::{Client, seg};
use crate::output;

#[derive(Debug, Subcommand)]
pub enum DomainsCmd {
    /// Add domains to a service and route them on its servers' proxies.
    Add {
        service: String,
        #[arg(required = true)]
        domains: Vec<String>,
        /// Route only paths under this prefix (e.g. /api); `/` routes every path.
        #[arg(long)]
        path_prefix: Option<String>,
    },
    /// Remove a domain from a service; its proxies stop routing it.
    Rm { service: String, domain: String },
    /// A service's domains.
    List { service: String },
}

#[derive(Debug, Subcommand)]
pub enum ProxyCmd {
    /// The proxy of a server: driver, whether it runs, the routes it serves.
    Status { server: String },
}

fn print_domains(v: &Value, as_json: bool) {
    if as_json {
        output::json(v);
        return;
    }
    let rows: Vec<Value> = v["domains"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| json!({ "domain": d, "path_prefix": v["path_prefix"], "tls": v["tls"] }))
        .collect();
    output::table(&Value::Array(rows), &["domain", "path_prefix", "tls"]);
    for line in v["routing"].as_array().into_iter().flatten() {
        eprintln!("{}", output::cell(line));
    }
    if let Some(e) = v["routing_error"].as_str() {
        eprintln!("warning: the domains are stored but the proxy was not reconfigured: {e}");
    }
}

pub async fn domains(cmd: DomainsCmd, as_json: bool) -> anyhow::Result<()> {
    let c = Client::from_config()?;
    let v = match cmd {
        DomainsCmd::Add { service, domains, path_prefix } => {
            let mut body = json!({ "domains": domains });
            if let Some(p) = path_prefix {
                body["path_prefix"] = json!(p);
            }
            c.post(&format!("/api/v1/services/{}/domains", seg(&service)), body).await?
        }
        DomainsCmd::Rm { service, domain } => {
            c.delete(&format!("/api/v1/services/{}/domains/{}", seg(&service), seg(&domain))).await?
        }
        DomainsCmd::List { service } => c.get(&format!("/api/v1/services/{}/domains", seg(&service))).await?,
    };
    print_domains(&v, as_json);
    Ok(())
}

pub async fn proxy(cmd: ProxyCmd, as_json: bool) -> anyhow::Result<()> {
    let c = Client::from_config()?;
    let ProxyCmd::Status { server } = cmd;
    let v = c.get(&format!("/api/v1/servers/{}/proxy", seg(&server))).await?;
    if as_json {
        output::json(&v);
        return Ok(());
    }
    println!(
        "server {}: {} {} ({})",
        output::cell(&v["server"]),
        output::cell(&v["driver"]),
        if v["running"].as_bool() == Some(true) { "running" } else { "not running" },
        output::cell(&v["detail"])
    );
    output::table(&v["routes"], &["service", "domains", "upstreams", "targets"]);
    Ok(())
}
