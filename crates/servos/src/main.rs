//! `servos`: the one ServOS binary — control plane, key tools and CLI client.

mod acme;
mod cli;
mod client;
mod config;
mod mesh_cli;
mod output;
mod proxy_cli;
mod serve;
mod tls;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "servos", version, about = "ServOS: a small, security-first self-hosted PaaS")]
struct Cli {
    /// Print JSON instead of tables (client commands).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a fresh master key (base64 of 32 random bytes).
    Keygen,
    /// Run the control plane: HTTP API, webhooks, job runner.
    Serve(serve::ServeArgs),
    /// Run the node agent (WireGuard mesh, eBPF, heartbeats).
    Agent(servos_agent::AgentArgs),
    /// Re-encrypt every secret from SERVOS_MASTER_KEY to SERVOS_NEW_MASTER_KEY, in one transaction.
    RotateKey {
        #[command(flatten)]
        settings: config::SettingsArgs,
    },
    /// Create the first admin with the setup token.
    Setup(cli::SetupArgs),
    /// Log in and save a token for the other commands.
    Login(cli::LoginArgs),
    /// Servers that run services.
    #[command(subcommand)]
    Servers(mesh_cli::ServersCmd),
    /// Builder machines for git services.
    #[command(subcommand)]
    Builders(cli::HostCmd),
    #[command(subcommand)]
    Services(cli::ServiceCmd),
    /// A service's domains (routed by the servers' reverse proxies).
    #[command(subcommand)]
    Domains(proxy_cli::DomainsCmd),
    /// The reverse proxy of a server.
    #[command(subcommand)]
    Proxy(proxy_cli::ProxyCmd),
    /// A service's environment (values are write-only).
    #[command(subcommand)]
    Env(cli::EnvCmd),
    /// Private container registries.
    #[command(subcommand)]
    Registries(cli::CredentialCmd),
    /// Tokens for private git repositories.
    #[command(subcommand, name = "git-credentials")]
    GitCredentials(cli::CredentialCmd),
    /// Your API tokens.
    #[command(subcommand)]
    Tokens(cli::TokenCmd),
    /// The WireGuard mesh: policy, service grants, publishing services on the mesh.
    #[command(subcommand)]
    Mesh(mesh_cli::MeshCmd),
    /// The hash-chained audit log.
    #[command(subcommand)]
    Audit(cli::AuditCmd),
    /// Webhook secrets of services.
    #[command(subcommand)]
    Webhooks(cli::WebhookCmd),
    /// Deploy a service (queues a job; --follow streams its progress).
    Deploy(cli::DeployArgs),
    /// Redeploy the image (by digest) of an earlier successful deployment.
    Rollback(cli::RollbackArgs),
    /// Print (or follow, -f) the logs of a service's containers on all its servers.
    Logs(cli::LogsArgs),
    /// A service's deployments and their logs.
    #[command(subcommand)]
    Deployments(cli::DeploymentCmd),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The agent drops privileges before any thread starts, so it runs before the runtime.
    if let Command::Agent(args) = cli.command {
        init_agent_logging();
        return servos_agent::main(args);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SERVOS_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line: the chain of causes, outermost first.
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            std::process::ExitCode::from(2)
        }
    }
}

/// Plain stderr logging for the agent (its environment is cleared right after).
fn init_agent_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SERVOS_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let json = cli.json;
    match cli.command {
        Command::Keygen => {
            let key = servos_core::MasterKey::generate()?;
            println!("{}", key.to_base64().expose());
            Ok(())
        }
        Command::Serve(args) => serve::run(args).await,
        Command::Agent(_) => anyhow::bail!("the agent runs before the async runtime starts"),
        Command::RotateKey { settings } => rotate_key(settings.resolve()).await,
        Command::Setup(a) => cli::setup(a, json).await,
        Command::Login(a) => cli::login(a, json).await,
        Command::Servers(c) => mesh_cli::servers(c, json).await,
        Command::Mesh(c) => mesh_cli::mesh(c, json).await,
        Command::Builders(c) => cli::hosts("builders", c, json).await,
        Command::Services(c) => cli::services(c, json).await,
        Command::Domains(c) => proxy_cli::domains(c, json).await,
        Command::Proxy(c) => proxy_cli::proxy(c, json).await,
        Command::Env(c) => cli::env(c, json).await,
        Command::Registries(c) => cli::credentials("registries", c, json).await,
        Command::GitCredentials(c) => cli::credentials("git-credentials", c, json).await,
        Command::Tokens(c) => cli::tokens(c, json).await,
        Command::Audit(c) => cli::audit(c, json).await,
        Command::Webhooks(c) => cli::webhooks(c, json).await,
        Command::Deploy(a) => cli::deploy(a, json).await,
        Command::Rollback(a) => cli::rollback(a, json).await,
        Command::Deployments(c) => cli::deployments(c, json).await,
        Command::Logs(a) => cli::logs(a, json).await,
    }
}

async fn rotate_key(settings: config::Settings) -> anyhow::Result<()> {
    let old = config::master_key()?;
    let new = config::new_master_key()?;
    let report = servos_store::secrets::rotate(&settings.database_url, &old, &new).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = servos_store::Store::open(&settings.database_url, &new).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    store
        .audit_now(
            &servos_store::Actor::system(),
            servos_store::audit::Event::new("master_key.rotated", "database", "servos")
                .detail(serde_json::json!({ "values": report.values, "audit_events": report.audit_events })),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    store.close().await;
    eprintln!(
        "re-encrypted {} values and re-keyed {} audit events; start the control plane with the new key now (the old one no longer opens this database)",
        report.values, report.audit_events
    );
    Ok(())
}
