//! The CLI client commands: each builds one API request and prints the answer.

use std::collections::BTreeMap;
use std::io::{BufRead as _, IsTerminal as _, Read as _};
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::client::{Client, ClientConfig, seg};
use crate::output;

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Control plane URL, e.g. https://servos.example.com
    #[arg(long, env = "SERVOS_URL")]
    pub url: String,
    #[arg(long)]
    pub username: String,
    /// Read the password from standard input instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct SetupArgs {
    #[arg(long, env = "SERVOS_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    #[arg(long)]
    pub username: String,
    /// File holding the setup token (default: $SERVOS_DATA_DIR/setup_token).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    #[arg(long, env = "SERVOS_DATA_DIR", default_value = "/var/lib/servos")]
    pub data_dir: PathBuf,
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Subcommand)]
pub enum HostCmd {
    /// Add a machine; without --key-file ServOS generates an Ed25519 key and prints the public key to install.
    Add {
        name: String,
        #[arg(long)]
        host: String,
        #[arg(long, default_value_t = 22)]
        port: u16,
        #[arg(long, default_value = "root")]
        user: String,
        /// Private key file (OpenSSH or PEM, Ed25519 or RSA); its content is sent, never stored on disk by ServOS.
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// Read the key's passphrase from standard input.
        #[arg(long)]
        passphrase_stdin: bool,
        /// Expected host key fingerprint (SHA256:…), enforced from the first connection.
        #[arg(long)]
        fingerprint: Option<String>,
        /// Reverse proxy (servers only): traefik, caddy or none.
        #[arg(long)]
        proxy: Option<String>,
    },
    List,
    Show { name: String },
    Rm { name: String },
    /// Connect now: commission on first use (pins the host key), report facts.
    Check { name: String },
    /// Forget the pinned host key; the next check pins again.
    ResetFingerprint { name: String },
}

// Parsed once per run: the size of the `create` variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum ServiceCmd {
    Create {
        name: String,
        #[arg(long, conflicts_with = "git")]
        image: Option<String>,
        #[arg(long)]
        registry: Option<String>,
        /// Git clone URL (https).
        #[arg(long, requires = "branch")]
        git: Option<String>,
        #[arg(long)]
        branch: Option<String>,
        /// Git credential (name or id) for a private repository.
        #[arg(long, requires = "git")]
        credential: Option<String>,
        /// Builder (name or id) for a git service; default: the first ready builder.
        #[arg(long)]
        builder: Option<String>,
        /// Dockerfile path inside the repository (default: `Dockerfile` in the context).
        #[arg(long, requires = "git")]
        dockerfile: Option<String>,
        /// Build context directory inside the repository (default: its root).
        #[arg(long, requires = "git")]
        context: Option<String>,
        /// Server id or name (repeat for several).
        #[arg(long = "server", required = true)]
        servers: Vec<String>,
        #[arg(long)]
        port: Option<u16>,
        #[arg(long = "domain")]
        domains: Vec<String>,
        #[arg(long)]
        tls: Option<String>,
        #[arg(long)]
        health_path: Option<String>,
        /// `proxy` (default) or `mesh`: bind --port on each server's mesh address only,
        /// reachable by the services granted (`servos mesh grant`).
        #[arg(long)]
        publish: Option<String>,
        /// Container command after `--`.
        #[arg(last = true)]
        command: Vec<String>,
    },
    List,
    Show { name: String },
    /// Remove the service: its containers on every server, then its record.
    Rm { name: String },
    /// Stop its containers.
    Stop { name: String },
    /// Start its stopped containers.
    Start { name: String },
    /// Restart its containers.
    Restart { name: String },
}

#[derive(Debug, Subcommand)]
pub enum EnvCmd {
    /// Set variables. Values never go on the command line: give NAMEs and type each
    /// value at the prompt, or pipe `NAME=VALUE` lines (a .env file) on standard input.
    Set { service: String, names: Vec<String> },
    Unset {
        service: String,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Names only: values are write-only.
    List { service: String },
}

#[derive(Debug, Subcommand)]
pub enum CredentialCmd {
    /// Add one; the password/token is read from standard input (or prompted).
    Add {
        name: String,
        /// Registry address, or forge host for git credentials.
        #[arg(long)]
        at: String,
        #[arg(long)]
        username: Option<String>,
    },
    List,
    Show { name: String },
    Rm { name: String },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    List,
    Create {
        name: String,
        #[arg(long)]
        expires_days: Option<u32>,
    },
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    List {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Check the hash chain; prints the head to record elsewhere.
    Verify,
}

#[derive(Debug, Subcommand)]
pub enum WebhookCmd {
    /// Rotate the secret; prints the new one once with the URL to paste into the forge.
    Rotate { service: String },
    /// The webhook URL to paste into each forge, and the header each one signs with.
    Show { service: String },
}

fn read_secret(prompt: &str, from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("cannot read standard input")?;
        let s = s.strip_suffix('\n').unwrap_or(&s);
        let s = s.strip_suffix('\r').unwrap_or(s);
        return Ok(s.to_owned());
    }
    rpassword::prompt_password(prompt).context("cannot read from the terminal")
}

fn print(v: &Value, as_json: bool, columns: &[&str]) {
    if as_json {
        output::json(v);
    } else if v.is_array() {
        output::table(v, columns);
    } else {
        output::record(v);
    }
}

pub async fn login(args: LoginArgs, as_json: bool) -> anyhow::Result<()> {
    let password = read_secret("Password: ", args.password_stdin)?;
    let client = Client::new(&args.url, None)?;
    let v = client.post("/api/v1/auth/login", json!({ "username": args.username, "password": password })).await?;
    save_session(&args.url, &v, as_json)
}

fn save_session(url: &str, v: &Value, as_json: bool) -> anyhow::Result<()> {
    let token = v.get("token").and_then(Value::as_str).context("the answer has no token")?;
    let path = ClientConfig { url: Some(url.to_owned()), token: Some(token.to_owned()) }.save()?;
    if as_json {
        output::json(&json!({ "username": v.get("username"), "expires_at": v.get("expires_at"), "saved_to": path }));
    } else {
        eprintln!("logged in; token saved to {} (mode 0600)", path.display());
    }
    Ok(())
}

pub async fn setup(args: SetupArgs, as_json: bool) -> anyhow::Result<()> {
    let token_file = args.token_file.unwrap_or_else(|| args.data_dir.join("setup_token"));
    let token = std::fs::read_to_string(&token_file)
        .with_context(|| format!("cannot read the setup token from {} (use --token-file, or copy it from the control plane log)", token_file.display()))?;
    let password = if args.password_stdin || !std::io::stdin().is_terminal() {
        read_secret("", true)?
    } else {
        let a = read_secret("New admin password (12+ characters): ", false)?;
        let b = read_secret("Again: ", false)?;
        if a != b {
            bail!("the passwords differ");
        }
        a
    };
    let client = Client::new(&args.url, None)?;
    let v = client
        .post("/api/v1/setup", json!({ "token": token.trim(), "username": args.username, "password": password }))
        .await?;
    save_session(&args.url, &v, as_json)
}

pub async fn hosts(kind: &str, cmd: HostCmd, as_json: bool) -> anyhow::Result<()> {
    let c = Client::from_config()?;
    let base = format!("/api/v1/{kind}");
    let cols = ["name", "host", "port", "user", "status", "host_key_fingerprint", "status_reason"];
    match cmd {
        HostCmd::Add { name, host, port, user, key_file, passphrase_stdin, fingerprint, proxy } => {
            let mut body = json!({ "name": name, "host": host, "port": port, "user": user });
            if let Some(path) = key_file {
                let key = std::fs::read_to_string(&path).with_context(|| format!("cannot read key file {}", path.display()))?;
                body["private_key"] = json!(key);
                if passphrase_stdin {
                    body["passphrase"] = json!(read_secret("", true)?);
                }
            }
            if let Some(fp) = fingerprint {
                body["host_key_fingerprint"] = json!(fp);
            }
            if let Some(p) = proxy {
                body["proxy"] = json!(p);
            }
            let v = c.post(&base, body).await?;
            print(&v, as_json, &cols);
            if !as_json {
                eprintln!(
                    "\nInstall this public key on the machine (~{user}/.ssh/authorized_keys), then run `servos {kind} check {}`:\n{}",
                    v["name"].as_str().unwrap_or(""),
                    v["public_key"].as_str().unwrap_or("")
                );
            }
        }
        HostCmd::List => print(&c.get(&base).await?, as_json, &cols),
        HostCmd::Show { name } => print(&c.get(&format!("{base}/{}", seg(&name))).await?, as_json, &cols),
        HostCmd::Rm { name } => {
            c.delete(&format!("{base}/{}", seg(&name))).await?;
            eprintln!("removed {name}");
        }
        HostCmd::Check { name } => {
            let v = c.post(&format!("{base}/{}/check", seg(&name)), json!({})).await?;
            print(&v, as_json, &cols);
            if v["status"] != "ready" {
                bail!("{name} is {}: {}", output::cell(&v["status"]), output::cell(&v["status_reason"]));
            }
        }
        HostCmd::ResetFingerprint { name } => {
            let v = c.post(&format!("{base}/{}/fingerprint/reset", seg(&name)), json!({})).await?;
            print(&v, as_json, &cols);
        }
    }
    Ok(())
}

pub async fn services(cmd: ServiceCmd, as_json: bool) -> anyhow::Result<()> {
    let c = Client::from_config()?;
    let cols = ["name", "image", "servers", "port", "domains", "id"];
    match cmd {
        ServiceCmd::Create { name, image, registry, git, branch, credential, builder, dockerfile, context, servers, port, domains, tls, health_path, publish, command } => {
            let mut body = json!({ "name": name, "servers": servers, "domains": domains });
            if let Some(i) = image {
                body["image"] = json!(i);
            }
            if let Some(r) = registry {
                body["registry"] = json!(r);
            }
            if let Some(g) = git {
                body["git"] = json!({ "repository": g, "branch": branch, "credential_id": credential, "dockerfile": dockerfile, "context": context });
            }
            if let Some(b) = builder {
                body["builder"] = json!(b);
            }
            if let Some(p) = port {
                body["port"] = json!(p);
            }
            if let Some(t) = tls {
                body["tls"] = json!(t);
            }
            if let Some(h) = health_path {
                body["healthcheck"] = json!({ "path": h });
            }
            if !command.is_empty() {
                body["command"] = json!(command);
            }
            if let Some(p) = publish {
                body["publish"] = json!(p);
            }
            let v = c.post("/api/v1/services", body).await?;
            print(&v, as_json, &cols);
            if !as_json {
                eprintln!("\nThe webhook secret above is shown once; store it in your forge's webhook settings.");
            }
        }
        ServiceCmd::List => print(&c.get("/api/v1/services").await?, as_json, &cols),
        ServiceCmd::Show { name } => print(&c.get(&format!("/api/v1/services/{}", seg(&name))).await?, as_json, &cols),
        ServiceCmd::Rm { name } => {
            c.delete(&format!("/api/v1/services/{}", seg(&name))).await?;
            eprintln!("removed {name}");
        }
        ServiceCmd::Stop { name } => lifecycle("stop", &name).await?,
        ServiceCmd::Start { name } => lifecycle("start", &name).await?,
        ServiceCmd::Restart { name } => lifecycle("restart", &name).await?,
    }
    Ok(())
}

/// Parses `NAME=VALUE` lines; blank lines and `#` comments are skipped.
pub fn parse_dotenv(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut vars = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, value)) = line.split_once('=') else {
            bail!("standard input line {}: expected NAME=VALUE", i + 1);
        };
        vars.insert(name.trim().to_owned(), value.to_owned());
    }
    Ok(vars)
}

pub async fn env(cmd: EnvCmd, as_json: bool) -> anyhow::Result<()> {
    let c = Client::from_config()?;
    match cmd {
        EnvCmd::Set { service, names } => {
            let set = if names.is_empty() {
                let mut text = String::new();
                std::io::stdin().lock().read_to_string(&mut text).context("cannot read standard input")?;
                parse_dotenv(&text)?
            } else if !std::io::stdin().is_terminal() && names.len() == 1 {
                let mut v = String::new();
                std::io::stdin().lock().read_line(&mut v).context("cannot read standard input")?;
                BTreeMap::from([(names[0].clone(), v.trim_end_matches(['\n', '\r']).to_owned())])
            } else {
                let mut m = BTreeMap::new();
                for n in names {
                    let v = rpassword::prompt_password(format!("{n}: ")).context("cannot read from the terminal")?;
                    m.insert(n, v);
                }
                m
            };
            let v = c.call(reqwest::Method::PATCH, &format!("/api/v1/services/{}/env", seg(&service)), Some(json!({ "set": set }))).await?;
            if as_json { output::json(&v) } else { eprintln!("set {} variable(s)", set.len()) }
        }
        EnvCmd::Unset { service, names } => {
            let v = c.call(reqwest::Method::PATCH, &format!("/api/v1/services/{}/env", seg(&service)), Some(json!({ "unset": names }))).await?;
            if as_json { output::json(&v) } else { eprintln!("unset {}", names.join(", ")) }
        }
        EnvCmd::List { service } => {
            let v = c.get(&format!("/api/v1/services/{}/env", seg(&service))).await?;
            if as_json {
                output::json(&v);
            } else {
                for n in v["names"].as_array().into_iter().flatten() {
                    println!("{}", output::cell(n));
                }
            }
        }
    }
    Ok(())
}

pub async fn credentials(kind: &str, cmd: CredentialCmd, as_json: bool) -> anyhow::Result<()> {
    let c = Client::from_config()?;
    let base = format!("/api/v1/{kind}");
    let (at_field, secret_field) = if kind == "registries" { ("url", "password") } else { ("host", "token") };
    match cmd {
        CredentialCmd::Add { name, at, username } => {
            let secret = read_secret(&format!("{secret_field}: "), false)?;
            let mut body = json!({ "name": name, at_field: at, secret_field: secret });
            if let Some(u) = username {
                body["username"] = json!(u);
            } else if kind == "registries" {
                bail!("--username is required for a registry");
            }
            print(&c.post(&base, body).await?, as_json, &[]);
        }
        CredentialCmd::List => print(&c.get(&base).await?, as_json, &["name", at_field, "username", "id"]),
        CredentialCmd::Show { name } => print(&c.get(&format!("{base}/{}", seg(&name))).await?, as_json, &[]),
        CredentialCmd::Rm { name } => {
            c.delete(&format!("{base}/{}", seg(&name))).await?;
            eprintln!("removed {name}");
        }
    }
    Ok(())
}

pub async fn tokens(cmd: TokenCmd, as_json: bool) -> anyhow::Result<()> {
    let c = Client::from_config()?;
    match cmd {
        TokenCmd::List => print(&c.get("/api/v1/tokens").await?, as_json, &["id", "name", "created_at", "expires_at", "revoked_at"]),
        TokenCmd::Create { name, expires_days } => {
            let v = c.post("/api/v1/tokens", json!({ "name": name, "expires_in_days": expires_days })).await?;
            print(&v, as_json, &[]);
            if !as_json {
                eprintln!("\nThe token is shown once; ServOS keeps only its hash.");
            }
        }
        TokenCmd::Revoke { id } => {
            c.delete(&format!("/api/v1/tokens/{}", seg(&id))).await?;
            eprintln!("revoked {id}");
        }
    }
    Ok(())
}

pub async fn audit(cmd: AuditCmd, as_json: bool) -> anyhow::Result<()> {
    let c = Client::from_config()?;
    match cmd {
        AuditCmd::List { limit } => print(
            &c.get(&format!("/api/v1/audit?limit={limit}")).await?,
            as_json,
            &["seq", "at", "actor", "source", "action", "object_type", "object_id"],
        ),
        AuditCmd::Verify => {
            let v = c.get("/api/v1/audit/verify").await?;
            if as_json {
                output::json(&v);
            } else {
                println!("audit chain intact: {} events, head {} {}", v["rows"], v["head_seq"], output::cell(&v["head_hash"]));
            }
        }
    }
    Ok(())
}

pub async fn webhooks(cmd: WebhookCmd, as_json: bool) -> anyhow::Result<()> {
    let c = Client::from_config()?;
    match cmd {
        WebhookCmd::Rotate { service } => {
            let v = c.post(&format!("/api/v1/services/{}/webhook-secret/rotate", seg(&service)), json!({})).await?;
            print(&v, as_json, &[]);
        }
        WebhookCmd::Show { service } => {
            let v = c.get(&format!("/api/v1/services/{}/webhooks", seg(&service))).await?;
            if as_json {
                output::json(&v);
            } else {
                match v["branch"].as_str() {
                    Some(branch) => println!("Pushes to branch {branch} of {} build and deploy the pushed commit.\n", output::cell(&v["service_name"])),
                    None => println!("{} is not built from git: its webhooks are acknowledged and ignored.\n", output::cell(&v["service_name"])),
                }
                output::table(&v["endpoints"], &["forge", "url", "secret_header"]);
                println!("\nSecret: the service's webhook secret, shown once at creation (new one: servos webhooks rotate {service}).");
                println!("Content type: application/json. Events: push. Gitea settings also work for Forgejo.");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_keeps_values_exactly() {
        let v = parse_dotenv("# c\nA=1\n\nexport B=x=y 'q' \"z\"\r\nC=\n").unwrap();
        assert_eq!(v["A"], "1");
        assert_eq!(v["B"], "x=y 'q' \"z\"");
        assert_eq!(v["C"], "");
        assert!(parse_dotenv("NOPE").unwrap_err().to_string().contains("line 1"));
    }
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    pub service: String,
    /// Deploy this image instead of the service's configured one.
    #[arg(long, conflicts_with = "git_ref")]
    pub image: Option<String>,
    /// Git services: build this branch, tag or commit SHA (default: the service's branch).
    #[arg(long = "ref")]
    pub git_ref: Option<String>,
    /// Stream the deploy's steps and output until it ends; exit non-zero if it fails.
    #[arg(long, short)]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    pub service: String,
    /// The succeeded deployment to return to (default: the one before the current image).
    #[arg(long)]
    pub to: Option<String>,
    #[arg(long, short)]
    pub follow: bool,
}

#[derive(Debug, Subcommand)]
pub enum DeploymentCmd {
    /// Newest first.
    List {
        service: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    Show { id: String },
    /// Print (or follow) a deployment's log.
    Logs {
        id: String,
        #[arg(long, short)]
        follow: bool,
    },
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub service: String,
    /// Keep printing new lines until interrupted.
    #[arg(long, short)]
    pub follow: bool,
    /// Lines from before now, per container.
    #[arg(long, default_value_t = 200)]
    pub tail: u32,
}

/// `servos logs`: every container of the service, each line as `server | line` (redacted
/// by the control plane). Lines ServOS itself reports (a server it cannot read) go to
/// stderr, and make the command fail once the stream ends.
pub async fn logs(args: LogsArgs, as_json: bool) -> anyhow::Result<()> {
    let c = Client::from_config()?;
    let path = format!("/api/v1/services/{}/logs?follow={}&tail={}", seg(&args.service), args.follow, args.tail);
    let mut failed = 0usize;
    c.sse(&path, |event, data| {
        if event != "log" {
            return;
        }
        let v: Value = serde_json::from_str(data).unwrap_or(Value::String(data.to_owned()));
        let stream = v["stream"].as_str().unwrap_or("");
        if stream == "error" {
            failed += 1;
        }
        if as_json {
            println!("{v}");
            return;
        }
        let line = format!("{} | {}", v["server"].as_str().unwrap_or("?"), v["line"].as_str().unwrap_or(""));
        if stream == "error" {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    })
    .await?;
    if failed > 0 {
        bail!("{failed} server log(s) of {} could not be read completely (see above)", args.service);
    }
    Ok(())
}

const DEPLOY_COLS: [&str; 6] = ["id", "status", "image", "triggered_by", "created_at", "error"];

pub async fn deploy(args: DeployArgs, as_json: bool) -> anyhow::Result<()> {
    let c = Client::from_config()?;
    let body = match (args.image, args.git_ref) {
        (Some(i), _) => json!({ "image": i }),
        (None, Some(r)) => json!({ "ref": r }),
        (None, None) => json!({}),
    };
    let v = c.post(&format!("/api/v1/services/{}/deployments", seg(&args.service)), body).await?;
    finish_queued(&c, v, args.follow, as_json).await
}

pub async fn rollback(args: RollbackArgs, as_json: bool) -> anyhow::Result<()> {
    let c = Client::from_config()?;
    let v = c.post(&format!("/api/v1/services/{}/rollback", seg(&args.service)), json!({ "deployment_id": args.to })).await?;
    finish_queued(&c, v, args.follow, as_json).await
}

async fn finish_queued(c: &Client, v: Value, follow: bool, as_json: bool) -> anyhow::Result<()> {
    let id = v["id"].as_str().context("the answer has no deployment id")?.to_owned();
    if !follow {
        print(&v, as_json, &DEPLOY_COLS);
        return Ok(());
    }
    eprintln!("deployment {id} queued");
    follow_logs(c, &id, as_json).await
}

/// Follows `/deployments/{id}/logs` (server-sent events) and returns an error if the
/// deployment did not succeed.
async fn follow_logs(c: &Client, id: &str, as_json: bool) -> anyhow::Result<()> {
    let mut status: Option<Value> = None;
    c.sse(&format!("/api/v1/deployments/{}/logs", seg(id)), |event, data| {
        let v: Value = serde_json::from_str(data).unwrap_or(Value::String(data.to_owned()));
        match event {
            "log" if as_json => println!("{v}"),
            "log" => {
                let stream = v["stream"].as_str().unwrap_or("");
                let line = v["line"].as_str().unwrap_or("");
                match stream {
                    "step" => println!("==> {line}"),
                    "error" => println!("!!! {line}"),
                    _ => println!("    {line}"),
                }
            }
            "status" => status = Some(v),
            "error" => eprintln!("log stream error: {data}"),
            _ => {}
        }
    })
    .await?;
    let Some(status) = status else { bail!("the log stream ended before the deployment finished; run `servos deployments show {id}`") };
    if as_json {
        output::json(&status);
    }
    match status["status"].as_str() {
        Some("succeeded") => {
            eprintln!("deployment {id} succeeded");
            Ok(())
        }
        other => bail!("deployment {id} {}: {}", other.unwrap_or("ended"), output::cell(&status["error"])),
    }
}

pub async fn deployments(cmd: DeploymentCmd, as_json: bool) -> anyhow::Result<()> {
    let c = Client::from_config()?;
    match cmd {
        DeploymentCmd::List { service, limit } => {
            print(&c.get(&format!("/api/v1/services/{}/deployments?limit={limit}", seg(&service))).await?, as_json, &DEPLOY_COLS)
        }
        DeploymentCmd::Show { id } => print(&c.get(&format!("/api/v1/deployments/{}", seg(&id))).await?, as_json, &DEPLOY_COLS),
        DeploymentCmd::Logs { id, follow: _ } => return follow_logs(&c, &id, as_json).await,
    }
    Ok(())
}

pub async fn lifecycle(action: &str, service: &str) -> anyhow::Result<()> {
    let c = Client::from_config()?;
    c.post(&format!("/api/v1/services/{}/{action}", seg(service)), json!({})).await?;
    eprintln!("{service}: {action} done");
    Ok(())
}
