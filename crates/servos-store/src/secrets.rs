//! The registry of encrypted columns, the wrong-key canary and master-key rotation.
//!
//! [`ENCRYPTED_COLUMNS`] is the one list of every place a secret is stored. Rotation walks
//! it; a test checks that the database file holds no plaintext after writing through it.

use servos_core::{Aad, MasterKey, Secret, Vault};
use sqlx::{AssertSqlSafe, Row as _};

use crate::{Result, Store, StoreError, WriteTx};

/// One encrypted column. `row_id` is the expression that gives the associated-data row id.
#[derive(Debug)]
pub struct EncryptedColumn {
    pub table: &'static str,
    pub column: &'static str,
    pub row_id: &'static str,
}

/// Every encrypted column in the schema.
pub const ENCRYPTED_COLUMNS: &[EncryptedColumn] = &[
    EncryptedColumn { table: "meta", column: "value", row_id: "key" },
    EncryptedColumn { table: "servers", column: "private_key_enc", row_id: "id" },
    EncryptedColumn { table: "servers", column: "passphrase_enc", row_id: "id" },
    EncryptedColumn { table: "builders", column: "private_key_enc", row_id: "id" },
    EncryptedColumn { table: "builders", column: "passphrase_enc", row_id: "id" },
    EncryptedColumn { table: "registries", column: "password_enc", row_id: "id" },
    EncryptedColumn { table: "git_credentials", column: "token_enc", row_id: "id" },
    EncryptedColumn { table: "services", column: "webhook_secret_enc", row_id: "id" },
    EncryptedColumn { table: "env_vars", column: "value_enc", row_id: "service_id || '/' || name" },
    EncryptedColumn { table: "tls_state", column: "value_enc", row_id: "name" },
];

const CANARY_KEY: &str = "canary";
const CANARY_PLAINTEXT: &[u8] = b"servos-canary-v1";

fn canary_aad() -> Aad<'static> {
    Aad::new("meta", "value", CANARY_KEY)
}

/// On first start, stores an encrypted canary; on every later start, proves the key
/// opens it. A wrong key stops start-up before anything is served.
pub(crate) async fn check_or_create_canary(store: &Store) -> Result<()> {
    let row = sqlx::query("SELECT value FROM meta WHERE key = $1")
        .bind(CANARY_KEY)
        .fetch_optional(&store.pool)
        .await?;
    match row {
        Some(row) => {
            let stored: String = row.try_get(0)?;
            match store.vault.decrypt(&stored, &canary_aad()) {
                Ok(plain) if plain.expose() == CANARY_PLAINTEXT => Ok(()),
                _ => Err(StoreError::WrongMasterKey),
            }
        }
        None => {
            let mut tx = store.write().await?;
            let enc = store.vault.encrypt(CANARY_PLAINTEXT, &canary_aad())?;
            sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2)")
                .bind(CANARY_KEY)
                .bind(enc)
                .execute(&mut *tx.tx)
                .await?;
            tx.commit().await
        }
    }
}

fn select_sql(c: &EncryptedColumn) -> AssertSqlSafe<String> {
    // Identifiers come from the constant table above, never from input.
    let filter = if c.table == "meta" { " AND key = 'canary'" } else { "" };
    AssertSqlSafe(format!(
        "SELECT {row} AS row_id, {col} AS value FROM {t} WHERE {col} IS NOT NULL{filter}",
        row = c.row_id,
        col = c.column,
        t = c.table
    ))
}

fn update_sql(c: &EncryptedColumn) -> AssertSqlSafe<String> {
    AssertSqlSafe(format!("UPDATE {t} SET {col} = $1 WHERE {row} = $2", t = c.table, col = c.column, row = c.row_id))
}

async fn read_column(tx: &mut WriteTx, c: &EncryptedColumn) -> Result<Vec<(String, String)>> {
    let rows = sqlx::query(select_sql(c)).fetch_all(&mut *tx.tx).await?;
    rows.iter().map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?))).collect()
}

/// What a rotation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationReport {
    pub values: usize,
    pub audit_events: i64,
}

/// Re-encrypts every secret from `old` to `new` in one transaction, re-keys the audit
/// chain, verifies everything opens under the new key, and only then commits. Any failure
/// leaves the database exactly as it was.
pub async fn rotate(url: &str, old: &MasterKey, new: &MasterKey) -> Result<RotationReport> {
    let store = Store::open(url, old).await?;
    let new_vault = Vault::new(new);
    let mut tx = store.write().await?;
    let mut values = 0;
    for c in ENCRYPTED_COLUMNS {
        for (row_id, stored) in read_column(&mut tx, c).await? {
            let aad = Aad::new(c.table, c.column, &row_id);
            let plain: Secret<Vec<u8>> = store.vault.decrypt(&stored, &aad)?;
            let fresh = new_vault.encrypt(plain.expose(), &aad)?;
            sqlx::query(update_sql(c)).bind(fresh).bind(&row_id).execute(&mut *tx.tx).await?;
            values += 1;
        }
    }
    let audit_events = crate::audit::rechain(&mut tx, &store.vault, &new_vault).await?;
    // Verify inside the transaction, under the new key only.
    for c in ENCRYPTED_COLUMNS {
        for (row_id, stored) in read_column(&mut tx, c).await? {
            new_vault.decrypt(&stored, &Aad::new(c.table, c.column, &row_id))?;
        }
    }
    let audit_rows = sqlx::query_as::<_, crate::audit::AuditRecord>(
        "SELECT seq, at, actor, source, action, object_type, object_id, detail, prev_hash, hash
         FROM audit_events ORDER BY seq",
    )
    .fetch_all(&mut *tx.tx)
    .await?;
    crate::audit::verify_rows(&new_vault, &audit_rows)?;
    tx.commit().await?;
    store.close().await;
    Ok(RotationReport { values, audit_events })
}
