//! Master key rotation: re-wraps every stored secret and connection credential under the
//! keyring's current version, while engines and workers keep running.
//!
//! Each sealed row holds a data key wrapped by one master key version ([`crate::vault`]).
//! [`rotate`] walks `secrets` and the sealed rows of `connections` in primary-key order, a
//! batch per transaction, and replaces each old-version wrap with one by the current version
//! ([`Keyring::rewrap`]): the ciphertext is untouched and no plaintext is ever formed. Each
//! update compares the row's old `key_version` and `wrapped_key`, so a row the API re-sealed
//! (or another rotation moved) after the batch read it is left as it now is and counted as
//! skipped. Engines and workers configured with both versions open a row whichever side of
//! its update they read it on.
//!
//! ```no_run
//! # async fn example(db: &sea_orm::DatabaseConnection) -> Result<(), engine::keys::KeyError> {
//! let keyring = engine::vault::Keyring::parse("v1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=,v2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=")
//!     .expect("key spec");
//! let done = engine::keys::rotate(db, &keyring, 100).await?;
//! assert_eq!(done.remaining, 0, "nothing left under v1: it can leave the keyring");
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fmt;

use schemas::db::entities::{connection, secret};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use serde_json::json;
use uuid::Uuid;

use crate::vault::{Aad, Keyring, Sealed, VaultError};

/// The principal audit records of a rotation name.
pub const PRINCIPAL: &str = "admin-cli";

/// A table holding sealed values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// `secrets`.
    Secrets,
    /// `connections`.
    Connections,
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Table::Secrets => "secrets",
            Table::Connections => "connections",
        })
    }
}

/// Why a rotation stopped. Rows re-wrapped in earlier batches stay re-wrapped (and recorded).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The database said no.
    #[error("database: {0}")]
    Db(#[from] DbErr),
    /// A row's data key cannot be unwrapped: its version is not in the keyring, or it does
    /// not authenticate (tampered, or copied from another row). Names the row, never a key.
    #[error("{table} row {id} cannot be re-wrapped: {source}")]
    Vault {
        /// The row's table.
        table: Table,
        /// The row's id.
        id: Uuid,
        /// What the vault said.
        #[source]
        source: VaultError,
    },
}

/// What a rotation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rotated {
    /// The version rows were re-wrapped under: the keyring's current one.
    pub to_version: u32,
    /// Secrets re-wrapped.
    pub secrets: u64,
    /// Connections re-wrapped.
    pub connections: u64,
    /// Rows left alone because they changed between being read and being updated (the API
    /// re-sealed them, or another rotation moved them).
    pub skipped: u64,
    /// Rows still under another version once the pass ended: written meanwhile by a process
    /// whose keyring lacks the current version. Run again after fixing its configuration.
    pub remaining: u64,
    /// Workspaces with at least one row re-wrapped (each got one audit record).
    pub workspaces: u64,
}

impl Rotated {
    /// Whether the run found nothing to re-wrap.
    pub fn nothing_to_rotate(&self) -> bool {
        self.secrets == 0 && self.connections == 0 && self.skipped == 0
    }
}

/// Rows re-wrapped per workspace: (secrets, connections).
type Tally = BTreeMap<Uuid, (u64, u64)>;

/// Re-wraps every row of `secrets`, and every connection with sealed credentials, whose
/// `key_version` is not `keyring`'s current version, `batch` rows per transaction (0 is taken
/// as 1). Appends one `keys.rotated` audit record to each workspace it touched, also when it
/// stops on an error part way.
///
/// One pass over each table in primary-key order, so it ends even while rows keep changing;
/// [`Rotated::remaining`] says whether any row is still under an old version afterwards.
pub async fn rotate(
    db: &DatabaseConnection,
    keyring: &Keyring,
    batch: u64,
) -> Result<Rotated, KeyError> {
    let batch = batch.max(1);
    let mut done = Rotated {
        to_version: keyring.current_version(),
        ..Rotated::default()
    };
    let mut tally = Tally::new();
    let walked = async {
        rotate_secrets(db, keyring, batch, &mut done, &mut tally).await?;
        rotate_connections(db, keyring, batch, &mut done, &mut tally).await
    }
    .await;
    // The records go in a transaction of their own after the last batch, rather than in it:
    // they sum up many committed transactions that no record could be atomic with anyway;
    // they need the final counts, known only once a batch comes back empty; and appending
    // locks every touched workspace's chain head, which inside a batch would hold up every
    // audited change in those workspaces while rows are re-wrapped. The cost is a window in
    // which a crash leaves re-wrapped rows without a record; a re-wrap changes no value and
    // no access, and running again reports what is left.
    let recorded = record(db, done.to_version, &tally).await;
    walked?;
    recorded?;
    done.workspaces = tally.len() as u64;
    done.remaining = remaining(db, done.to_version).await?;
    Ok(done)
}

/// The version a row's `key_version` column names; a value no version can have becomes 0,
/// which no keyring holds, so the row fails to re-wrap, naming itself.
fn version(column: i32) -> u32 {
    u32::try_from(column).unwrap_or(0)
}

/// The column value of a version.
fn column(version: u32) -> i32 {
    i32::try_from(version).unwrap_or(i32::MAX)
}

async fn rotate_secrets(
    db: &DatabaseConnection,
    keyring: &Keyring,
    batch: u64,
    done: &mut Rotated,
    tally: &mut Tally,
) -> Result<(), KeyError> {
    let current = column(keyring.current_version());
    let mut after: Option<Uuid> = None;
    loop {
        let tx = db.begin().await?;
        let mut query = secret::Entity::find().filter(secret::Column::KeyVersion.ne(current));
        if let Some(id) = after {
            query = query.filter(secret::Column::Id.gt(id));
        }
        let rows = query
            .order_by_asc(secret::Column::Id)
            .limit(batch)
            .all(&tx)
            .await?;
        let Some(last) = rows.last() else {
            tx.commit().await?;
            return Ok(());
        };
        after = Some(last.id);
        let mut moved = Vec::new();
        for row in &rows {
            let sealed = Sealed {
                key_version: version(row.key_version),
                wrapped_key: row.wrapped_key.clone(),
                ciphertext: row.ciphertext.clone(),
            };
            let aad = Aad::new(row.workspace_id, crate::secrets::KIND, &row.name);
            let fresh = keyring
                .rewrap(&aad, &sealed)
                .map_err(|source| KeyError::Vault {
                    table: Table::Secrets,
                    id: row.id,
                    source,
                })?;
            // Neither `updated_at` nor anything else changes: the value was not replaced.
            let updated = secret::Entity::update_many()
                .col_expr(secret::Column::KeyVersion, Expr::value(current))
                .col_expr(secret::Column::WrappedKey, Expr::value(fresh.wrapped_key))
                .filter(secret::Column::Id.eq(row.id))
                .filter(secret::Column::KeyVersion.eq(row.key_version))
                .filter(secret::Column::WrappedKey.eq(row.wrapped_key.clone()))
                .exec(&tx)
                .await?;
            moved.push((row.workspace_id, updated.rows_affected > 0));
        }
        tx.commit().await?;
        // Counted once committed, so the records never claim a batch that rolled back.
        for (workspace_id, rewrapped) in moved {
            if rewrapped {
                done.secrets += 1;
                tally.entry(workspace_id).or_default().0 += 1;
            } else {
                done.skipped += 1;
            }
        }
    }
}

async fn rotate_connections(
    db: &DatabaseConnection,
    keyring: &Keyring,
    batch: u64,
    done: &mut Rotated,
    tally: &mut Tally,
) -> Result<(), KeyError> {
    let current = column(keyring.current_version());
    let mut after: Option<Uuid> = None;
    loop {
        let tx = db.begin().await?;
        // A revoked connection's columns are NULL: there is nothing to re-wrap.
        let mut query = connection::Entity::find()
            .filter(connection::Column::KeyVersion.is_not_null())
            .filter(connection::Column::KeyVersion.ne(current))
            .filter(connection::Column::WrappedKey.is_not_null())
            .filter(connection::Column::Ciphertext.is_not_null());
        if let Some(id) = after {
            query = query.filter(connection::Column::Id.gt(id));
        }
        let rows = query
            .order_by_asc(connection::Column::Id)
            .limit(batch)
            .all(&tx)
            .await?;
        let Some(last) = rows.last() else {
            tx.commit().await?;
            return Ok(());
        };
        after = Some(last.id);
        let mut moved = Vec::new();
        for row in &rows {
            let (Some(old_version), Some(old_wrap), Some(ciphertext)) =
                (row.key_version, &row.wrapped_key, &row.ciphertext)
            else {
                continue;
            };
            let sealed = Sealed {
                key_version: version(old_version),
                wrapped_key: old_wrap.clone(),
                ciphertext: ciphertext.clone(),
            };
            let aad = workers::connection_aad(row.workspace_id, row.id);
            let fresh = keyring
                .rewrap(&aad, &sealed)
                .map_err(|source| KeyError::Vault {
                    table: Table::Connections,
                    id: row.id,
                    source,
                })?;
            // `updated_at` says when the credentials last changed; they did not.
            let updated = connection::Entity::update_many()
                .col_expr(connection::Column::KeyVersion, Expr::value(Some(current)))
                .col_expr(
                    connection::Column::WrappedKey,
                    Expr::value(Some(fresh.wrapped_key)),
                )
                .filter(connection::Column::Id.eq(row.id))
                .filter(connection::Column::KeyVersion.eq(old_version))
                .filter(connection::Column::WrappedKey.eq(old_wrap.clone()))
                .exec(&tx)
                .await?;
            moved.push((row.workspace_id, updated.rows_affected > 0));
        }
        tx.commit().await?;
        for (workspace_id, rewrapped) in moved {
            if rewrapped {
                done.connections += 1;
                tally.entry(workspace_id).or_default().1 += 1;
            } else {
                done.skipped += 1;
            }
        }
    }
}

/// One `keys.rotated` record per workspace touched, in one transaction.
async fn record(db: &DatabaseConnection, to_version: u32, tally: &Tally) -> Result<(), DbErr> {
    if tally.is_empty() {
        return Ok(());
    }
    let entries = tally
        .iter()
        .map(|(workspace_id, (secrets, connections))| {
            let entry = crate::audit::Entry::admin(
                "keys.rotated",
                PRINCIPAL,
                json!({ "to_version": to_version, "secrets": secrets, "connections": connections }),
            );
            // Made by an administrative command with database access, not through the API.
            let entry = crate::audit::Entry {
                via: "cli",
                ..entry
            };
            (*workspace_id, entry)
        })
        .collect();
    let tx = db.begin().await?;
    crate::audit::append(&tx, entries).await?;
    tx.commit().await
}

/// Rows under any version other than `to_version`.
async fn remaining<C: ConnectionTrait>(db: &C, to_version: u32) -> Result<u64, DbErr> {
    let current = column(to_version);
    let secrets = secret::Entity::find()
        .filter(secret::Column::KeyVersion.ne(current))
        .count(db)
        .await?;
    let connections = connection::Entity::find()
        .filter(connection::Column::KeyVersion.is_not_null())
        .filter(connection::Column::KeyVersion.ne(current))
        .count(db)
        .await?;
    Ok(secrets + connections)
}
