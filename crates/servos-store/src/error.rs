//! The store's one error type.

use servos_core::VaultError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "SERVOS_DATABASE_URL {0:?} is not supported: use sqlite://PATH or postgres://USER@HOST/DB"
    )]
    BadUrl(String),
    #[error("cannot open database {0}: {1}")]
    Connect(String, sqlx::Error),
    #[error("cannot apply database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("{kind} {key} not found")]
    NotFound { kind: &'static str, key: String },
    #[error("{kind} with {field} {value:?} already exists")]
    Conflict { kind: &'static str, field: &'static str, value: String },
    #[error("{kind} {key} is still used by {used_by}")]
    InUse { kind: &'static str, key: String, used_by: String },
    #[error(
        "SERVOS_MASTER_KEY does not open this database: it is not the key the data was encrypted with"
    )]
    WrongMasterKey,
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Maps a unique-constraint violation to [`StoreError::Conflict`], anything else to
    /// [`StoreError::Database`].
    pub(crate) fn on_insert(kind: &'static str, field: &'static str, value: &str) -> impl FnOnce(sqlx::Error) -> StoreError {
        let value = value.to_owned();
        move |e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict { kind, field, value }
            }
            _ => StoreError::Database(e),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(e)
    }
}
