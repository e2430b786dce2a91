//! `servos servers agent|agent-install|agent-enrol SERVER` (a server's node agent) and
//! `servos mesh …` (the mesh policy by names, service grants, publish modes).

use anyhow::bail;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::cli::{self, HostCmd};
use crate::client::{Client, seg};
use crate::output;

#[derive(Debug, Subcommand)]
pub enum ServersCmd {
    #[command(flatten)]
    Host(HostCmd),
    /// The server's agent: online/offline, mesh address, peers and handshakes, drops, containers.
    Agent { name: String },
    /// Install (or reinstall) the agent over SSH with a fresh enrolment; it enrols itself.
    AgentInstall { name: String },
    /// Issue a one-time enrolment token for an agent you start yourself (printed once; give
    /// it to the agent in a 0600 file, never on its command line). Revokes the current credential.
    AgentEnrol { name: String },
    /// Move the server to another mesh address (in 10.77.0.0/16). The running agent
    /// re-addresses its interface at its next poll; redeploy the server's mesh-only services
    /// so their ports are bound on the new address.
    MeshAddress { name: String, address: String },
}

#[derive(Debug, Subcommand)]
pub enum MeshCmd {
    /// Server-level rules: those added by hand and those derived from service grants.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Let service FROM reach the mesh-published service TO (its servers → TO's servers, TO's port).
    Grant { from: String, to: String },
    /// Revoke a grant; the agents drop the traffic at their next poll, without a restart.
    Revoke { from: String, to: String },
    /// Every service grant.
    Grants,
    /// Publish a service through the proxy (`proxy`) or on its servers' mesh addresses only
    /// (`mesh`); applies at its next deploy.
    Publish { service: String, mode: String },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    List,
    /// Allow server SRC to reach server --to (every server without it) on --port.
    Allow {
        src: String,
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        port: u16,
        #[arg(long, default_value = "tcp")]
        proto: String,
    },
    /// Remove the hand-added rule(s) SRC → --to on --port.
    Deny {
        src: String,
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        port: u16,
        #[arg(long, default_value = "tcp")]
        proto: String,
    },
}

/// `mm:ss`-style age of a handshake, or `never`.
fn handshake(p: &Value) -> String {
    match p["last_handshake_secs"].as_u64() {
        Some(s) => format!("{s}s ago"),
        None => "never".into(),
    }
}

fn print_agent(v: &Value, as_json: bool) {
    if as_json {
        output::json(v);
        return;
    }
    let hb = &v["heartbeat"];
    println!("server          {}", output::cell(&v["server"]));
    println!("status          {}", output::cell(&v["status"]));
    println!("mesh address    {}", output::cell(&v["mesh_address"]));
    println!("public key      {}", output::cell(&v["public_key"]));
    println!("last heartbeat  {}", output::cell(&v["last_heartbeat_at"]));
    if !hb.is_null() {
        if !hb["wireguard"].is_null() {
            println!("wireguard       {}", output::cell(&hb["wireguard"]));
        }
        println!("load            {}", output::cell(&hb["load1"]));
        let mib = |k: u64| k / 1024;
        println!(
            "memory          {} MiB available of {} MiB",
            mib(hb["mem_available_kib"].as_u64().unwrap_or(0)),
            mib(hb["mem_total_kib"].as_u64().unwrap_or(0))
        );
        let gib = |b: u64| b / (1 << 30);
        println!(
            "disk            {} GiB free of {} GiB",
            gib(hb["disk_free_bytes"].as_u64().unwrap_or(0)),
            gib(hb["disk_total_bytes"].as_u64().unwrap_or(0))
        );
        println!(
            "mesh traffic    {} passed, {} dropped by the policy",
            output::cell(&hb["counters"]["passed"]),
            output::cell(&hb["counters"]["dropped"])
        );
        let peers: Vec<Value> = hb["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                json!({
                    "peer": p["mesh_address"], "endpoint": p["endpoint"], "handshake": handshake(p),
                    "rx_bytes": p["rx_bytes"], "tx_bytes": p["tx_bytes"],
                })
            })
            .collect();
        println!();
        output::table(
            &Value::Array(peers),
            &["peer", "endpoint", "handshake", "rx_bytes", "tx_bytes"],
        );
    }
    let containers: Vec<Value> = v["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            json!({
                "service": c["service"], "container": c["name"], "id": c["id"].as_str().map(|s| &s[..s.len().min(12)]),
                "placement": c["placement"],
                "memory_mib": c["memory_bytes"].as_u64().map(|b| format!("{:.1}", b as f64 / 1048576.0)),
                "cpu_s": c["cpu_usec"].as_u64().map(|u| format!("{:.2}", u as f64 / 1e6)), "pids": c["pids"],
            })
        })
        .collect();
    println!();
    output::table(
        &Value::Array(containers),
        &[
            "service",
            "container",
            "id",
            "placement",
            "memory_mib",
            "cpu_s",
            "pids",
        ],
    );
    if let Some(n) = v["other_containers"].as_u64().filter(|n| *n > 0) {
        println!("(and {n} container(s) ServOS did not start)");
    }
}

pub async fn servers(cmd: ServersCmd, as_json: bool) -> anyhow::Result<()> {
    let c = match cmd {
        ServersCmd::Host(h) => return cli::hosts("servers", h, as_json).await,
        _ => Client::from_config()?,
    };
    match cmd {
        ServersCmd::Host(_) => Ok(()),
        ServersCmd::Agent { name } => {
            print_agent(
                &c.get(&format!("/api/v1/servers/{}/agent", seg(&name)))
                    .await?,
                as_json,
            );
            Ok(())
        }
        ServersCmd::AgentInstall { name } => {
            eprintln!(
                "installing the agent on {name} over SSH (upload, checksum, user servos, service start)…"
            );
            let v = c
                .post(
                    &format!("/api/v1/servers/{}/agent/install", seg(&name)),
                    json!({}),
                )
                .await?;
            print_agent(&v, as_json);
            Ok(())
        }
        ServersCmd::AgentEnrol { name } => {
            let v = c
                .post(
                    &format!("/api/v1/servers/{}/agent/enrolment", seg(&name)),
                    json!({}),
                )
                .await?;
            if as_json {
                output::json(&v);
            } else {
                println!("{}", output::cell(&v["token"]));
                eprintln!(
                    "one-time enrolment token for {name} above (mesh address {}/{}, server id {}): write it to a 0600 file \
                     and start `servos agent --control-plane URL --server-id {} --address {}/{} --enrol-token-file FILE`",
                    output::cell(&v["mesh_address"]),
                    output::cell(&v["mesh_prefix"]),
                    output::cell(&v["server_id"]),
                    output::cell(&v["server_id"]),
                    output::cell(&v["mesh_address"]),
                    output::cell(&v["mesh_prefix"]),
                );
            }
            Ok(())
        }
        ServersCmd::MeshAddress { name, address } => {
            let v = c
                .put(
                    &format!("/api/v1/servers/{}/agent/mesh-address", seg(&name)),
                    json!({ "mesh_address": address }),
                )
                .await?;
            if as_json {
                output::json(&v);
            } else {
                println!(
                    "{name} now has mesh address {}; its agent re-addresses servos0 at its next poll, \
                     and any mesh-only services there now answer on the new address.",
                    output::cell(&v["mesh_address"])
                );
            }
            Ok(())
        }
    }
}

const POLICY_COLUMNS: [&str; 6] = ["src", "dst", "port", "proto", "grant", "id"];

pub async fn mesh(cmd: MeshCmd, as_json: bool) -> anyhow::Result<()> {
    let c = Client::from_config()?;
    match cmd {
        MeshCmd::Policy(PolicyCmd::List) => {
            let mut v = c.get("/api/v1/mesh/policy").await?;
            if !as_json {
                for r in v.as_array_mut().into_iter().flatten() {
                    if r["dst"].is_null() {
                        r["dst"] = json!("(every server)");
                    }
                }
            }
            print_rows(&v, as_json, &POLICY_COLUMNS);
        }
        MeshCmd::Policy(PolicyCmd::Allow {
            src,
            to,
            port,
            proto,
        }) => {
            let v = c
                .post(
                    "/api/v1/mesh/policy",
                    json!({ "src": src, "dst": to, "port": port, "proto": proto }),
                )
                .await?;
            if as_json {
                output::json(&v);
            } else {
                println!(
                    "allowed {src} → {} on {port}/{proto} (rule {})",
                    to.as_deref().unwrap_or("every server"),
                    output::cell(&v["id"])
                );
            }
        }
        MeshCmd::Policy(PolicyCmd::Deny {
            src,
            to,
            port,
            proto,
        }) => {
            let rules = c.get("/api/v1/mesh/policy").await?;
            let matching: Vec<&Value> = rules
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| {
                    r["src"] == src.as_str()
                        && r["dst"].as_str() == to.as_deref()
                        && r["port"].as_u64() == Some(u64::from(port))
                        && r["proto"] == proto.as_str()
                })
                .collect();
            let manual: Vec<&str> = matching.iter().filter_map(|r| r["id"].as_str()).collect();
            if manual.is_empty() {
                if let Some(g) = matching.iter().find_map(|r| r["grant"].as_str()) {
                    let (from, to) = g.split_once(" -> ").unwrap_or((g, ""));
                    bail!(
                        "that rule comes from the service grant {g}: revoke it with `servos mesh revoke {from} {to}`"
                    );
                }
                bail!(
                    "no rule lets {src} reach {} on {port}/{proto} (see `servos mesh policy list`)",
                    to.as_deref().unwrap_or("every server")
                );
            }
            for id in &manual {
                c.delete(&format!("/api/v1/mesh/policy/{}", seg(id)))
                    .await?;
            }
            eprintln!(
                "removed {} rule(s); the agents apply it at their next poll",
                manual.len()
            );
        }
        MeshCmd::Grant { from, to } => {
            let v = c
                .post(
                    &format!("/api/v1/services/{}/grants", seg(&to)),
                    json!({ "from": from }),
                )
                .await?;
            if as_json {
                output::json(&v);
            } else {
                println!(
                    "{from} may now reach {to} over the mesh (every container on {from}'s servers; see `servos mesh policy list`)"
                );
            }
        }
        MeshCmd::Revoke { from, to } => {
            c.delete(&format!(
                "/api/v1/services/{}/grants/{}",
                seg(&to),
                seg(&from)
            ))
            .await?;
            eprintln!("revoked: {from} can no longer reach {to}");
        }
        MeshCmd::Grants => print_rows(
            &c.get("/api/v1/mesh/grants").await?,
            as_json,
            &["from", "to", "created_at"],
        ),
        MeshCmd::Publish { service, mode } => {
            let v = c
                .put(
                    &format!("/api/v1/services/{}/publish", seg(&service)),
                    json!({ "publish": mode }),
                )
                .await?;
            if as_json {
                output::json(&v);
            } else {
                println!(
                    "{service} is published through {}; redeploy it to apply (`servos deploy {service}`)",
                    output::cell(&v["publish"])
                );
                for e in v["mesh"]["endpoints"].as_array().into_iter().flatten() {
                    println!(
                        "  on {}: {}",
                        output::cell(&e["server"]),
                        output::cell(&e["address"])
                    );
                }
            }
        }
    }
    Ok(())
}

fn print_rows(v: &Value, as_json: bool, columns: &[&str]) {
    if as_json {
        output::json(v)
    } else {
        output::table(v, columns)
    }
}
