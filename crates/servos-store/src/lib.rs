//! ServOS persistence: one schema and one set of queries for SQLite and PostgreSQL.
//!
//! Architecture invariants:
//! - This is the only crate that speaks SQL, and the only place where ciphertext and
//!   plaintext of a stored secret meet: every `_enc` column is written and read through
//!   the [`Vault`] held by [`Store`], with associated data naming table, column and row.
//! - Every change to user-visible state appends an audit event in the same transaction
//!   (see [`audit`]); there is no write path that skips it.
//! - Queries are `&'static str` literals with bind parameters; nothing is interpolated.
//! - It knows nothing about HTTP or SSH.

pub mod agents;
pub mod audit;
pub mod builds;
pub mod deployments;
pub mod domains;
mod error;
pub mod hosts;
pub mod mesh_services;
pub mod migrate;
pub mod records;
pub mod secrets;
pub mod services;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls_state;
pub mod users;
pub mod webhooks;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use servos_core::{MasterKey, Vault};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

pub use audit::Actor;
pub use error::StoreError;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which database engine a URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::BadUrl(redact_url(url)))
        }
    }
}

/// The database, with the vault that opens its encrypted columns.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    vault: Arc<Vault>,
    /// Serialises writers of this process. SQLite has one writer anyway, and the audit
    /// chain needs "read the last hash, append the next" to be atomic on both engines.
    write_lock: Arc<Mutex<()>>,
    /// Bumped by every committed write transaction of this process; readers use it to
    /// know whether a cached answer is still current.
    generation: Arc<AtomicU64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend).finish_non_exhaustive()
    }
}

/// A write transaction holding the process-wide write lock.
pub struct WriteTx {
    pub(crate) tx: Transaction<'static, Any>,
    generation: Arc<AtomicU64>,
    _guard: OwnedMutexGuard<()>,
}

impl std::fmt::Debug for WriteTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteTx")
    }
}

impl WriteTx {
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await.map_err(StoreError::Database)?;
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }
}

impl Store {
    /// Connects, applies migrations and checks that `key` opens the data already stored
    /// (the canary). A wrong key is refused here, before anything is served.
    pub async fn open(url: &str, key: &MasterKey) -> Result<Self> {
        let store = Self::connect(url, key).await?;
        migrate::run(&store.pool).await?;
        secrets::check_or_create_canary(&store).await?;
        Ok(store)
    }

    async fn connect(url: &str, key: &MasterKey) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        let url = match backend {
            Backend::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url)
            .map_err(|e| StoreError::Connect(redact_url(&url), e))?;
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        use sqlx::Executor as _;
                        conn.execute("PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL;")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Connect(redact_url(&url), e))?;
        Ok(Self {
            pool,
            backend,
            vault: Arc::new(Vault::new(key)),
            write_lock: Arc::new(Mutex::new(())),
            generation: Arc::new(AtomicU64::new(0)),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Begins a write transaction. Hold it briefly: it blocks other writers.
    pub async fn write(&self) -> Result<WriteTx> {
        let guard = Arc::clone(&self.write_lock).lock_owned().await;
        let tx = self.pool.begin().await.map_err(StoreError::Database)?;
        Ok(WriteTx { tx, generation: Arc::clone(&self.generation), _guard: guard })
    }

    /// A counter that changes after every write this process commits. Only this
    /// process's writes count: ServOS runs one control plane per database.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The current time in the stored text form, e.g. `2026-11-28T23:30:00.123456Z`.
pub fn now() -> String {
    format_time(time::OffsetDateTime::now_utc())
}

pub fn format_time(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// A new random id (UUID v4 text).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A database URL with any password removed, safe for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:[redacted]{}", &url[..scheme_end + 3], user, &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(
            redact_url("postgres://servos:s3cret@db:5432/servos"),
            "postgres://servos:[redacted]@db:5432/servos"
        );
        assert_eq!(redact_url("sqlite:///var/lib/servos/servos.db"), "sqlite:///var/lib/servos/servos.db");
    }

    #[test]
    fn times_sort_as_text() {
        let a = format_time(time::macros::datetime!(2026-01-02 03:04:05.000006 UTC));
        assert_eq!(a, "2026-01-02T03:04:05.000006Z");
        let b = format_time(time::macros::datetime!(2026-01-02 03:04:05.1 UTC));
        assert!(a < b);
    }
}
