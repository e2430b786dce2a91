//! Test support: a fresh, empty database per test, on the engine the test run selects.
//! (Test support panics on purpose: a test cannot run without its database.)
#![allow(clippy::panic)]
//!
//! `SERVOS_TEST_DATABASE_URL` unset → a new SQLite file in a temporary directory.
//! Set to `postgres://USER@HOST:PORT/DB` → a new database `servos_t_<random>` is created
//! on that server for each call, so tests stay independent and can run in parallel.

use sqlx::{AssertSqlSafe, Connection as _};

/// A database for one test. Holds the temporary directory of a SQLite file alive.
#[derive(Debug)]
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

pub const TEST_DATABASE_VAR: &str = "SERVOS_TEST_DATABASE_URL";

/// Which engine this test run uses, for test names and messages.
pub fn engine() -> &'static str {
    match std::env::var(TEST_DATABASE_VAR) {
        Ok(url) if !url.is_empty() => "postgres",
        _ => "sqlite",
    }
}

impl TestDb {
    pub async fn new() -> Self {
        match std::env::var(TEST_DATABASE_VAR) {
            Ok(admin_url) if !admin_url.is_empty() => Self::postgres(&admin_url).await,
            _ => Self::sqlite(),
        }
    }

    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        let url = format!("sqlite://{}/servos.db", dir.path().display());
        Self { url, _dir: Some(dir) }
    }

    async fn postgres(admin_url: &str) -> Self {
        sqlx::any::install_default_drivers();
        let name = format!("servos_t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::AnyConnection::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {}: {e}", crate::redact_url(admin_url)));
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let base = admin_url.rsplit_once('/').map(|(b, _)| b).unwrap_or(admin_url);
        Self { url: format!("{base}/{name}"), _dir: None }
    }
}
