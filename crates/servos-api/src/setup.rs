//! The setup token: while no admin exists, a single-use random token is printed to the
//! log and written to `$SERVOS_DATA_DIR/setup_token` (mode 0600). Creating the first
//! admin consumes it and deletes the file.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use servos_core::Secret;
use servos_store::Store;

/// Why the setup token could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot write the setup token to {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("cannot generate a setup token: {0}")]
    Random(String),
    #[error(transparent)]
    Store(#[from] servos_store::StoreError),
}

#[derive(Debug)]
pub struct SetupToken {
    path: PathBuf,
    token: Mutex<Option<Secret<String>>>,
}

/// What a presented setup token is worth.
#[derive(Debug, PartialEq, Eq)]
pub enum SetupCheck {
    Valid,
    Invalid,
    AlreadyDone,
}

impl SetupToken {
    /// Makes a fresh token if no admin exists (a restart replaces an unused one), or
    /// removes a stale file if setup is done.
    pub async fn prepare(store: &Store, data_dir: &Path) -> Result<Self, SetupError> {
        let path = data_dir.join("setup_token");
        if store.admin_exists().await? {
            let _ = std::fs::remove_file(&path);
            return Ok(Self { path, token: Mutex::new(None) });
        }
        let token = servos_core::random::token("setup_").map_err(|e| SetupError::Random(e.to_string()))?;
        write_private(&path, token.expose()).map_err(|e| SetupError::Write(path.clone(), e))?;
        tracing::warn!(
            "no admin exists yet: setup token {} (single use, also in {}); run `servos setup` or POST /api/v1/setup",
            token.expose(),
            path.display()
        );
        Ok(Self { path, token: Mutex::new(Some(token)) })
    }

    /// A token holder with no token (tests, or setup already done).
    pub fn none(data_dir: &Path) -> Self {
        Self { path: data_dir.join("setup_token"), token: Mutex::new(None) }
    }

    /// Compares in constant time.
    pub fn check(&self, presented: &str) -> SetupCheck {
        let guard = self.token.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            None => SetupCheck::AlreadyDone,
            Some(t) if servos_core::random::ct_eq(t.expose().as_bytes(), presented.as_bytes()) => SetupCheck::Valid,
            Some(_) => SetupCheck::Invalid,
        }
    }

    /// Forgets the token and deletes its file.
    pub fn consume(&self) {
        self.token.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("cannot delete {}: {e}", self.path.display());
        }
    }
}

/// Writes `content` to a new file readable only by its owner (0600 from creation, so
/// there is no window in which it is world-readable).
pub fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(content.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}
