//! `servos serve`: open the store with the master key, prepare the setup token, serve.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;

use axum::serve::ListenerExt as _;

use anyhow::Context as _;
use servos_api::{AppState, SetupToken};
use servos_core::MasterKey;
use servos_store::Store;

use crate::config::{self, Settings};
use crate::tls::{self, CertResolver, TlsListener, TlsMode};

/// HSTS on every response when the control plane serves HTTPS itself.
async fn strict_transport_security(mut response: axum::response::Response) -> axum::response::Response {
    response.headers_mut().insert(
        axum::http::header::STRICT_TRANSPORT_SECURITY,
        axum::http::HeaderValue::from_static("max-age=31536000"),
    );
    response
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub settings: config::SettingsArgs,
    /// Local trial: without SERVOS_MASTER_KEY(_FILE), use (or create) a key file at
    /// ~/.config/servos/master.key — outside the data dir — and say so loudly.
    #[arg(long)]
    pub trial: bool,
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let key = if args.trial { trial_key()? } else { config::master_key()? };
    let tls_mode = args.tls.resolve()?;
    let https = !matches!(tls_mode, TlsMode::Off);
    let public_url_given = args.settings.public_url.as_deref().is_some_and(|u| !u.is_empty());
    let mut settings = args.settings.resolve();
    if https && !public_url_given {
        settings.public_url = match &tls_mode {
            TlsMode::Acme(acme) => format!("https://{}", acme.domains.first().map_or(settings.listen.as_str(), String::as_str)),
            _ => format!("https://{}", settings.listen),
        };
    }
    prepare_data_dir(&settings.data_dir)?;
    let store = open_store(&settings, &key).await?;
    drop(key);
    restrict_sqlite_files(&settings);
    let setup = SetupToken::prepare(&store, &settings.data_dir).await?;
    let state = AppState::new(store.clone(), setup, settings.public_url.clone());
    if let Some(limit) = build_timeout()? {
        state.engine().set_build_timeout(limit);
    }
    // The job runner: first finishes what a crash left running (cleanup of secret files
    // and half-started containers), then takes queued deploys.
    let runner = servos_deploy::Runner::new(state.engine().clone()).spawn();
    let agent_monitor = servos_api::routes::agent::spawn_offline_monitor(state.clone());
    let mut app = servos_api::router(state);
    // With TLS configured, prepare the certificate before binding, so a bad certificate
    // stops start-up instead of serving handshake errors.
    let resolver = Arc::new(CertResolver::default());
    match &tls_mode {
        TlsMode::Off => {}
        TlsMode::Files { cert, key } => {
            resolver.set_current(tls::load_pem_files(cert, key)?);
            tls::reload_on_sighup(resolver.clone(), cert.clone(), key.clone());
        }
        TlsMode::Acme(acme) => {
            let current = crate::acme::install_stored(&store, &resolver, acme).await?;
            if current.is_none() {
                tracing::warn!(domains = %acme.domains.join(","), "no certificate yet: ordering one by ACME; HTTPS clients fail until it is issued");
            }
            crate::acme::spawn(store.clone(), resolver.clone(), acme.clone(), current);
        }
    }
    if https {
        app = app.layer(axum::middleware::map_response(strict_transport_security));
    }
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("SERVOS_LISTEN={}: cannot listen", settings.listen))?;
    tracing::info!(
        listen = %settings.listen,
        https,
        database = %servos_store::redact_url(&settings.database_url),
        public_url = %settings.public_url,
        "servos control plane ready"
    );
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    if https {
        let listener = TlsListener::spawn(listener, tls::server_config(resolver))?;
        axum::serve(listener.tap_io(|_| {}), service).with_graceful_shutdown(shutdown_signal()).await
    } else {
        axum::serve(listener, service).with_graceful_shutdown(shutdown_signal()).await
    }
    .context("server failed")?;
    runner.abort();
    agent_monitor.abort();
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

pub async fn open_store(settings: &Settings, key: &MasterKey) -> anyhow::Result<Store> {
    Store::open(&settings.database_url, key).await.map_err(|e| anyhow::anyhow!("{e}"))
}

/// The data dir holds the database and the setup token: owner-only.
pub fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("SERVOS_DATA_DIR={}: cannot create", dir.display()))?;
    let perms = std::fs::metadata(dir).with_context(|| format!("SERVOS_DATA_DIR={}", dir.display()))?.permissions();
    if perms.mode() & 0o777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("SERVOS_DATA_DIR={}: cannot set mode 0700", dir.display()))?;
    }
    Ok(())
}

fn restrict_sqlite_files(settings: &Settings) {
    let Some(path) = settings.database_url.strip_prefix("sqlite://") else { return };
    let path = path.split('?').next().unwrap_or(path);
    for suffix in ["", "-wal", "-shm"] {
        let p = format!("{path}{suffix}");
        if Path::new(&p).exists() {
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
        }
    }
}

fn trial_key() -> anyhow::Result<MasterKey> {
    if std::env::var_os(config::KEY_VAR).is_some() || std::env::var_os(config::KEY_FILE_VAR).is_some() {
        return Ok(config::master_key()?);
    }
    let home = std::env::var_os("HOME").context("--trial needs HOME to place the key file")?;
    let path = Path::new(&home).join(".config/servos/master.key");
    if !path.exists() {
        let dir = path.parent().context("key path has no parent")?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let key = MasterKey::generate()?;
        servos_api::setup::write_private(&path, key.to_base64().expose())
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!(
            "\n!!! TRIAL MODE: generated a new master key in {p}\n!!! Back it up NOW (password manager). Without it every secret in the database is lost.\n!!! For production pass it in SERVOS_MASTER_KEY or SERVOS_MASTER_KEY_FILE instead.\n",
            p = path.display()
        );
    } else {
        eprintln!("TRIAL MODE: using the master key in {} — keep a backup of it", path.display());
    }
    Ok(config::key_from_file(&path)?)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

/// `SERVOS_BUILD_TIMEOUT`: seconds a build from git may take (default 1800).
fn build_timeout() -> anyhow::Result<Option<std::time::Duration>> {
    let Some(text) = std::env::var("SERVOS_BUILD_TIMEOUT").ok().filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    match text.trim().parse::<u64>() {
        Ok(secs) if secs > 0 => Ok(Some(std::time::Duration::from_secs(secs))),
        _ => anyhow::bail!("SERVOS_BUILD_TIMEOUT={}: not a positive number of seconds", servos_core::validate::show(&text)),
    }
}
