//! Control-plane configuration from the environment (CLI flags mirror it), and the
//! master key rules: present, valid base64, exactly 32 bytes, never written by ServOS.

use std::path::{Path, PathBuf};

use servos_core::MasterKey;

pub const KEY_VAR: &str = "SERVOS_MASTER_KEY";
pub const KEY_FILE_VAR: &str = "SERVOS_MASTER_KEY_FILE";
pub const NEW_KEY_VAR: &str = "SERVOS_NEW_MASTER_KEY";

/// Where the control plane keeps its state and how it is reached.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub database_url: String,
    pub listen: String,
    pub public_url: String,
}

#[derive(Debug, clap::Args)]
pub struct SettingsArgs {
    /// State directory (SQLite file, setup_token).
    #[arg(long, env = "SERVOS_DATA_DIR", default_value = "/var/lib/servos")]
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://USER@HOST/DB`; default: SQLite in the data dir.
    #[arg(long, env = "SERVOS_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// API and UI address.
    #[arg(long, env = "SERVOS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Address agents and forges use to reach the control plane.
    #[arg(long, env = "SERVOS_PUBLIC_URL")]
    pub public_url: Option<String>,
}

impl SettingsArgs {
    pub fn resolve(self) -> Settings {
        let database_url = self
            .database_url
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("servos.db").display()));
        let public_url = self.public_url.filter(|u| !u.is_empty()).unwrap_or_else(|| format!("http://{}", self.listen));
        Settings { data_dir: self.data_dir, database_url, listen: self.listen, public_url }
    }
}

/// A master-key problem, always naming the variable it came from.
#[derive(Debug, thiserror::Error)]
pub enum KeyLoadError {
    #[error("{KEY_VAR} is not set: generate one with `servos keygen`, keep it in your password manager, and pass it in {KEY_VAR} or {KEY_FILE_VAR}")]
    Missing,
    #[error("{var} {problem}")]
    Invalid { var: String, problem: servos_core::KeyError },
    #[error("{KEY_FILE_VAR}={path}: cannot read the key file: {source}")]
    File { path: String, source: std::io::Error },
    #[error("set only one of {KEY_VAR} and {KEY_FILE_VAR}")]
    Both,
}

/// Loads the master key from `SERVOS_MASTER_KEY` or the file named by
/// `SERVOS_MASTER_KEY_FILE`.
pub fn master_key() -> Result<MasterKey, KeyLoadError> {
    let direct = std::env::var(KEY_VAR).ok().filter(|v| !v.is_empty());
    let file = std::env::var(KEY_FILE_VAR).ok().filter(|v| !v.is_empty());
    match (direct, file) {
        (Some(_), Some(_)) => Err(KeyLoadError::Both),
        (Some(text), None) => parse(KEY_VAR, &text),
        (None, Some(path)) => key_from_file(Path::new(&path)),
        (None, None) => Err(KeyLoadError::Missing),
    }
}

pub fn key_from_file(path: &Path) -> Result<MasterKey, KeyLoadError> {
    let text = servos_core::Secret::new(
        std::fs::read_to_string(path).map_err(|source| KeyLoadError::File { path: path.display().to_string(), source })?,
    );
    parse(&format!("{KEY_FILE_VAR} ({})", path.display()), text.expose())
}

/// The key `servos rotate-key` re-encrypts to.
pub fn new_master_key() -> Result<MasterKey, KeyLoadError> {
    match std::env::var(NEW_KEY_VAR).ok().filter(|v| !v.is_empty()) {
        Some(text) => parse(NEW_KEY_VAR, &text),
        None => Err(KeyLoadError::Invalid { var: NEW_KEY_VAR.into(), problem: servos_core::KeyError::Empty }),
    }
}

fn parse(var: &str, text: &str) -> Result<MasterKey, KeyLoadError> {
    MasterKey::from_base64(text).map_err(|problem| KeyLoadError::Invalid { var: var.into(), problem })
}
