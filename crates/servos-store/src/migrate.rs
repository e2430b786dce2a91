//! Schema migrations, embedded in the binary, the same files for both engines.

use std::borrow::Cow;

use sqlx::AnyPool;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use crate::Result;

/// Every migration, in order. Append; never edit one that has shipped.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (2, "deployment_servers", include_str!("../migrations/0002_deployment_servers.sql")),
    (3, "git_builds", include_str!("../migrations/0003_git_builds.sql")),
    (4, "webhook_delivery_deployment", include_str!("../migrations/0004_webhook_delivery_deployment.sql")),
    (5, "agent_mesh", include_str!("../migrations/0005_agent_mesh.sql")),
    (6, "service_domains", include_str!("../migrations/0006_service_domains.sql")),
    (7, "tls_state", include_str!("../migrations/0007_tls_state.sql")),
    (9, "mesh_services", include_str!("../migrations/0009_mesh_services.sql")),
];

fn migrator() -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|(version, name, sql)| {
                Migration::new(*version, Cow::Borrowed(*name), MigrationType::Simple, sqlx::SqlSafeStr::into_sql_str(*sql), false)
            })
            .collect(),
    )
}

pub async fn run(pool: &AnyPool) -> Result<()> {
    migrator().run(pool).await?;
    Ok(())
}
